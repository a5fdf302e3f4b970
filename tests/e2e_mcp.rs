//! `cluster-slurm mcp` against an MCP client we did not write: the official
//! Python SDK (`mcp` on PyPI, installed by `just mcp-client`) runs
//! `tests/mcp_client.py` over stdio, against the real testbed.
//!
//! Expected: one tool `cluster_slurm` whose input schema is the guest's;
//! results as both a JSON text block and the same `structuredContent`; a
//! workload submitted, followed to COMPLETED, its log and output fetched, all
//! in one server process; tool refusals are MCP tool errors (`isError`) with
//! the guest's message and kind. Malformed lines (invalid UTF-8, garbage, a
//! batch, 100,000 `[`, a missing method, 20 and 100 MB lines) each get a
//! JSON-RPC error and the server goes on answering.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cluster_slurm_e2e::{Workspace, binary, repo_root};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// The real binary on pipes, fed lines no client should send. Each must get
/// a JSON-RPC error (the issue: no reply at all, the client waited forever),
/// stdout must carry nothing but JSON objects, and `tools/list` must still be
/// answered afterwards.
///
/// Negative control: the same binary built with rmcp's own stdio transport
/// (`serve_lines` serving `(read, write)`, the code before this fix) gives
/// no reply to the first line, invalid UTF-8: the test fails with "no reply
/// within 60 s" (seen, at the invalid UTF-8 line).
#[test]
fn malformed_lines_get_json_rpc_errors_and_the_server_keeps_serving() {
    let ws = Workspace::new();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&ws.config)
        .arg("--workspace")
        .arg(ws.path())
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, replies) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> Value {
        let line = replies
            .recv_timeout(Duration::from_secs(60))
            .expect("no reply within 60 s");
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line:.200}"));
        assert!(value.is_object(), "{line:.200}");
        value
    };

    stdin
        .write_all(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"0"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
"#)
        .unwrap();
    let init = next();
    assert_eq!(
        init["result"]["serverInfo"]["name"], "cluster-slurm",
        "{init}"
    );

    let mut deep = vec![b'['; 100_000];
    deep.push(b'\n');
    let cases: Vec<(&str, Vec<u8>, i64, Value)> = vec![
        (
            "invalid UTF-8",
            b"\xff\xfe{}\n".to_vec(),
            -32700,
            Value::Null,
        ),
        (
            "garbage",
            b"not json at all\n".to_vec(),
            -32700,
            Value::Null,
        ),
        (
            "a batch",
            b"[{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/list\"}]\n".to_vec(),
            -32600,
            Value::Null,
        ),
        ("100,000 [", deep, -32600, Value::Null),
        (
            "no method",
            b"{\"jsonrpc\":\"2.0\",\"id\":42}\n".to_vec(),
            -32600,
            json!(42),
        ),
    ];
    for (what, line, code, id) in cases {
        stdin.write_all(&line).unwrap();
        let r = next();
        assert_eq!(r["error"]["code"], code, "{what}: {r}");
        assert_eq!(r["id"], id, "{what}: {r}");
    }
    for megabytes in [20, 100] {
        // Streamed in 1 MB pieces; the server must not wait for the end of
        // input, and must answer once the newline arrives.
        let piece = vec![b'a'; 1_000_000];
        for _ in 0..megabytes {
            stdin.write_all(&piece).unwrap();
        }
        stdin.write_all(b"\n").unwrap();
        let r = next();
        assert_eq!(r["error"]["code"], -32600, "{megabytes} MB: {r}");
        assert_eq!(r["id"], Value::Null, "{megabytes} MB: {r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.contains("16 MiB"), "{megabytes} MB: {message}");
    }

    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}\n")
        .unwrap();
    let tools = next();
    assert_eq!(tools["id"], 2, "{tools}");
    assert_eq!(
        tools["result"]["tools"][0]["name"], "cluster_slurm",
        "{tools}"
    );

    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
