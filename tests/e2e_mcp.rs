//! `cluster-slurm mcp` against an MCP client we did not write: the official
//! Python SDK (`mcp` on PyPI, installed by `just mcp-client`) runs
//! `tests/mcp_client.py` over stdio, against the real testbed.
//!
//! Expected: one tool `cluster_slurm` whose input schema is the guest's;
//! results as both a JSON text block and the same `structuredContent`; a
//! workload submitted, followed to COMPLETED, its log and output fetched, all
//! in one server process; tool refusals are MCP tool errors (`isError`) with
//! the guest's message and kind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cluster_slurm_e2e::{Workspace, binary, repo_root};
use serde_json::Value;
use std::process::Command;

fn python() -> std::path::PathBuf {
    let p = std::env::var_os("CLUSTER_SLURM_MCP_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join("target/mcp-client/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run `just mcp-client` (the Python MCP SDK used as the client)",
        p.display()
    );
    p
}

#[test]
fn python_sdk_client_runs_a_workload_through_the_mcp_server() {
    let ws = Workspace::new();
    ws.write("job.py", "text = open('data/in.txt').read()\nopen('out.txt', 'w').write(text.upper())\nprint('converted', len(text), 'chars')\n");
    ws.write("data/in.txt", "hello over mcp\n");
    let out = Command::new(python())
        .arg(repo_root().join("tests/mcp_client.py"))
        .arg(binary())
        .arg(&ws.config)
        .arg(ws.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(r["serverName"], "cluster-slurm");
    assert_eq!(r["hasToolsCapability"], true);
    let tools = r["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{r}");
    assert_eq!(tools[0]["name"], "cluster_slurm");
    assert_eq!(
        tools[0]["inputSchema"]["required"],
        serde_json::json!(["action"])
    );
    let actions = tools[0]["inputSchema"]["properties"]["action"]["enum"]
        .as_array()
        .unwrap();
    assert!(
        actions.iter().any(|a| a == "run_workload") && actions.len() == 15,
        "{actions:?}"
    );
    assert_eq!(tools[0]["outputSchema"]["type"], "object");

    // Text block and structured content carry the same result.
    let lc = &r["listClusters"];
    assert_eq!(lc["isError"], false);
    let from_text: Value = serde_json::from_str(lc["text"][0].as_str().unwrap()).unwrap();
    assert_eq!(from_text, lc["structured"]);
    let ids: Vec<&str> = lc["structured"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["local-cpu", "local-gpu"]);

    assert_eq!(r["run"]["isError"], false, "{}", r["run"]);
    assert_eq!(
        r["status"]["structured"]["state"], "COMPLETED",
        "{}",
        r["status"]
    );
    assert_eq!(r["status"]["structured"]["exitCode"], 0);
    assert!(
        r["logs"]["structured"]["log"]
            .as_str()
            .unwrap()
            .contains("converted 15 chars"),
        "{}",
        r["logs"]
    );
    let local = r["download"]["structured"]["localPath"].as_str().unwrap();
    assert_eq!(ws.read(local), "HELLO OVER MCP\n");

    // Refusals are tool errors with the guest's words and kind.
    assert_eq!(r["invalid"]["isError"], true);
    assert_eq!(r["invalid"]["structured"]["kind"], "invalid-request");
    assert!(
        r["invalid"]["text"][0]
            .as_str()
            .unwrap()
            .contains("unknown action \"launch_rockets\""),
        "{}",
        r["invalid"]
    );
    assert_eq!(r["policy"]["isError"], true);
    assert_eq!(r["policy"]["structured"]["kind"], "policy");
    assert!(
        r["policy"]["text"][0]
            .as_str()
            .unwrap()
            .contains("inline module command"),
        "{}",
        r["policy"]
    );
}
