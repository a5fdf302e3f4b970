//! End to end, on real software: the `cluster-slurm` binary runs the real
//! guest component, which drives a real OpenSSH server and a real
//! single-node SLURM (munge, slurmctld, two slurmd, slurmdbd + MariaDB)
//! brought up by `tests/testbed/up.sh`.
//!
//! Expected: a workload with uploaded inputs runs as a SLURM job and its
//! status, logs and outputs come back; GPU work is routed to the GPU
//! partition; a failing job reports its exit code; unknown or changed host
//! keys are refused with typed errors; paths outside the roots are refused;
//! the component imports no filesystem, sockets or http.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cluster_slurm_e2e::{Workspace, testbed_value};
use serde_json::{Value, json};
use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(180);

const ANALYSE: &str = r#"
import csv, json, os
values = [float(r["value"]) for r in csv.DictReader(open("data/numbers.csv"))]
json.dump({"sum": sum(values), "job": os.environ["SLURM_JOB_ID"], "partition": os.environ["SLURM_JOB_PARTITION"]},
          open("out/result.json", "w"))
print("summarised", len(values), "values")
"#;

#[test]
fn workload_runs_and_status_logs_outputs_come_back() {
    let ws = Workspace::new();
    ws.write("analyse.py", ANALYSE);
    ws.write("data/numbers.csv", "name,value\na,1\nb,2.5\nc,4\n");
    let run = ws.call(
        "run_workload",
        json!({"prefix": "e2e", "commands": ["mkdir -p out", "python3 analyse.py"], "localPaths": ["analyse.py", "data"]}),
    );
    assert_eq!(run["cluster"], "local-cpu");
    let run_id = run["runId"].as_str().unwrap();
    let job_id = run["jobId"].as_str().unwrap();
    assert!(job_id.parse::<u64>().is_ok(), "{run}");

    let status = ws.wait_done(run_id, JOB_TIMEOUT);
    assert_eq!(status["state"], "COMPLETED", "{status}");
    assert_eq!(status["exitCode"], 0, "{status}");

    let logs = ws.call("fetch_workload_logs", json!({"runId": run_id}));
    assert_eq!(logs["missing"], false, "{logs}");
    assert!(
        logs["log"]
            .as_str()
            .unwrap()
            .contains("summarised 3 values"),
        "{logs}"
    );

    let dl = ws.call(
        "download_workload_outputs",
        json!({"runId": run_id, "remoteFile": "out/result.json"}),
    );
    let local = dl["localPath"].as_str().unwrap();
    assert_eq!(local, format!("downloads/{run_id}/result.json"));
    let result: Value = serde_json::from_str(&ws.read(local)).unwrap();
    assert_eq!(
        result,
        json!({"sum": 7.5, "job": job_id, "partition": "cpu"})
    );

    // The ledger knows the run and its job, in the reference's format.
    let ledger: Value = serde_json::from_str(&ws.read(".openclaw/cluster-runs/runs.json")).unwrap();
    assert_eq!(ledger["runs"][run_id]["lastJobId"], job_id);
    assert_eq!(ledger["runs"][run_id]["jobs"].as_array().unwrap().len(), 1);
    assert!(
        ws.read(&format!(".openclaw/cluster-runs/{run_id}/job.slurm"))
            .contains("#SBATCH --partition=cpu")
    );
}

#[test]
fn gpu_workload_is_routed_to_the_gpu_partition() {
    let ws = Workspace::new();
    let run = ws.call(
        "run_workload",
        json!({"workload": "fine-tune with torch.cuda", "command": "echo \"gpus=$CUDA_VISIBLE_DEVICES partition=$SLURM_JOB_PARTITION\""}),
    );
    assert_eq!(run["cluster"], "local-gpu");
    assert_eq!(run["clusterSelection"]["matchedIndicator"], "torch.cuda");
    let status = ws.wait_done(run["runId"].as_str().unwrap(), JOB_TIMEOUT);
    assert_eq!(status["state"], "COMPLETED", "{status}");
    let logs = ws.call("fetch_workload_logs", json!({"runId": run["runId"]}));
    assert!(
        logs["log"]
            .as_str()
            .unwrap()
            .contains("gpus=0 partition=gpu"),
        "{logs}"
    );
}

#[test]
fn failing_job_reports_failed_with_its_exit_code() {
    let ws = Workspace::new();
    let run = ws.call(
        "run_workload",
        json!({"command": "echo about to fail >&2; exit 3"}),
    );
    let status = ws.wait_done(run["runId"].as_str().unwrap(), JOB_TIMEOUT);
    assert_eq!(
        (status["state"].as_str(), status["exitCode"].as_i64()),
        (Some("FAILED"), Some(3)),
        "{status}"
    );
    let logs = ws.call("fetch_workload_logs", json!({"runId": run["runId"]}));
    assert_eq!(logs["logs"]["stderr"]["log"], "about to fail\n", "{logs}");
}

/// A copy of the testbed config whose ssh_config points at `known_hosts`.
fn with_known_hosts(known_hosts: &str) -> Workspace {
    let mut cfg = testbed_value();
    let ssh_config = std::fs::read_to_string(cfg["host"]["sshConfig"].as_str().unwrap()).unwrap();
    let ws = Workspace::with_config(cfg.clone());
    let kh = ws.path().join("known_hosts");
    std::fs::write(&kh, known_hosts).unwrap();
    let rewritten: String = ssh_config
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("UserKnownHostsFile") {
                format!("  UserKnownHostsFile {}", kh.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg_path = ws.path().join("ssh_config");
    std::fs::write(&cfg_path, rewritten).unwrap();
    cfg["host"]["sshConfig"] = json!(cfg_path);
    std::fs::write(&ws.config, serde_json::to_vec(&cfg).unwrap()).unwrap();
    ws
}

#[test]
fn unknown_host_key_is_refused() {
    let ws = with_known_hosts("");
    let err = ws.call_err("check_workload", json!({"jobId": "1"}));
    assert!(err.contains("host-key-unknown"), "{err}");
    assert!(err.contains("never accepted automatically"), "{err}");
}

#[test]
fn changed_host_key_is_refused() {
    let port = {
        let cfg = testbed_value();
        let ssh_config =
            std::fs::read_to_string(cfg["host"]["sshConfig"].as_str().unwrap()).unwrap();
        ssh_config
            .lines()
            .find_map(|l| l.trim().strip_prefix("Port ").map(|p| p.trim().to_string()))
            .unwrap()
    };
    // A valid ed25519 key that is not the server's.
    let other = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let ws = with_known_hosts(&format!("[127.0.0.1]:{port} ssh-ed25519 {other}\n"));
    let err = ws.call_err("check_workload", json!({"jobId": "1"}));
    assert!(err.contains("host-key-mismatch"), "{err}");
}

#[test]
fn paths_outside_the_roots_are_refused_and_nothing_happens() {
    let ws = Workspace::new();
    let err = ws.call_err(
        "download_workload_outputs",
        json!({"remotePath": "/etc/passwd", "localPath": "stolen"}),
    );
    assert!(err.contains("outside the profile's remoteRoot"), "{err}");
    let err = ws.call_err(
        "run_workload",
        json!({"command": "true", "localPath": "../../etc/passwd"}),
    );
    assert!(err.contains("stay inside workspace"), "{err}");
    let err = ws.call_err(
        "fetch_workload_logs",
        json!({"remotePath": "../../.ssh/authorized_keys"}),
    );
    assert!(err.contains("'..'"), "{err}");
    // Refusals leave no trace: no ledger, no download.
    assert!(!ws.path().join(".openclaw").exists());
    assert!(!ws.path().join("stolen").exists());
}

#[test]
fn component_imports_nothing_but_our_interfaces_and_basic_wasi() {
    let ws = Workspace::new();
    let out = ws.run(&["audit", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    let imports: Vec<&str> = audit["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for ours in [
        "openclaw:cluster-slurm/ssh-exec@0.4.0",
        "openclaw:cluster-slurm/transfer@0.4.0",
        "openclaw:cluster-slurm/run-store@0.4.0",
    ] {
        assert!(imports.contains(&ours), "{imports:?}");
    }
    for i in &imports {
        assert!(
            [
                "openclaw:cluster-slurm/",
                "wasi:io/",
                "wasi:cli/",
                "wasi:clocks/",
                "wasi:random/"
            ]
            .iter()
            .any(|p| i.starts_with(p)),
            "unexpected import {i}"
        );
        assert!(
            !i.starts_with("wasi:filesystem")
                && !i.starts_with("wasi:sockets")
                && !i.starts_with("wasi:http"),
            "{i}"
        );
    }
    assert_eq!(
        audit["exports"],
        json!(["openclaw:cluster-slurm/tool@0.4.0"])
    );
    assert_eq!(audit["forbiddenImports"], json!([]));
    // Per profile: what the host grants and what the guest's policy allows.
    let cpu = audit["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "local-cpu")
        .unwrap();
    assert_eq!(cpu["sshTarget"], "slurm-testbed");
    assert!(
        cpu["remoteRoot"]
            .as_str()
            .unwrap()
            .ends_with("/cluster-runs")
    );
    assert_eq!(cpu["policy"]["maxArraySize"], 1000);
    assert_eq!(cpu["policy"]["allowSubmitArgs"], true);
    assert!(
        audit["programs"]
            .as_array()
            .unwrap()
            .contains(&json!("sbatch"))
    );
    assert!(
        !audit["programs"]
            .as_array()
            .unwrap()
            .contains(&json!("bash"))
    );
    assert!(audit["limits"]["fuelPerCall"].as_u64().unwrap() > 0);
    assert_eq!(audit["limits"]["memoryBytes"], 256 << 20);
    assert!(audit["auditLog"].is_string(), "{audit}");
}

/// `audit GUEST.wasm` inspects another component: the hostile test guest
/// imports only what ours does, so it would load; what it may do is bounded
/// by the same grants.
#[test]
fn audit_inspects_any_guest_file() {
    let ws = Workspace::new();
    let hostile =
        cluster_slurm_e2e::repo_root().join("target/wasm32-wasip2/guest/hostile_guest.wasm");
    let out = ws.run(&["audit", hostile.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(audit["guest"], hostile.to_str().unwrap());
    assert_eq!(audit["forbiddenImports"], json!([]));
    assert_eq!(
        audit["exports"],
        json!(["openclaw:cluster-slurm/tool@0.4.0"])
    );
}

#[test]
fn invalid_config_is_rejected_with_the_key_named() {
    let mut cfg = testbed_value();
    cfg["clusters"]["local-cpu"]["slurmDefaults"]["time"] = json!("ten minutes");
    let ws = Workspace::with_config(cfg);
    let err = ws.call_err("list_clusters", json!({}));
    assert!(
        err.contains("clusters.local-cpu.slurmDefaults.time"),
        "{err}"
    );
}
