//! Faults of the cluster itself, on the real testbed: slurmctld restarted
//! while a job runs (status keeps answering from accounting and recovers),
//! slurmdbd stopped (status says accounting is down, nothing is marked
//! failed, and jobs can still be submitted and followed).
//!
//! These stop daemons every other end-to-end test needs, so nextest runs
//! them alone (`.config/nextest.toml`); the testbed is brought back with
//! `tests/testbed/up.sh` even when a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cluster_slurm_e2e::{Workspace, repo_root};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

/// The tests stop daemons the other needs: one at a time even under plain
/// `cargo test` (nextest runs them alone anyway, `.config/nextest.toml`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops a testbed daemon; brings the whole testbed back when dropped.
struct Stopped(&'static str);

impl Stopped {
    fn daemon(name: &'static str) -> Stopped {
        let out = Command::new("bash")
            .arg(repo_root().join("tests/testbed/daemon.sh"))
            .args(["stop", name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stopping {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Stopped(name)
    }

    fn restart(self) {
        drop(self);
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(repo_root().join("tests/testbed/up.sh"))
            .output()
            .unwrap();
        if !std::thread::panicking() {
            assert!(
                out.status.success(),
                "bringing {} back: {}",
                self.0,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn poll(ws: &Workspace, run_id: &str, timeout: Duration, until: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = ws.call("check_workload", json!({"runId": run_id}));
        if until(&s) {
            return s;
        }
        assert!(start.elapsed() < timeout, "run {run_id}: {s}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn status_recovers_after_slurmctld_restarts_while_a_job_runs() {
    let _alone = alone();
    let ws = Workspace::new();
    let run = ws.call(
        "run_workload",
        json!({"command": "sleep 15; echo survived > survived.txt", "newRun": true}),
    );
    let run_id = run["runId"].as_str().unwrap();
    poll(&ws, run_id, Duration::from_secs(60), |s| {
        s["state"] == "RUNNING"
    });

    let ctld = Stopped::daemon("slurmctld");
    // squeue cannot answer; accounting still knows the job, though its
    // record may lag (PENDING for a job that runs): not finished, not failed.
    let s = ws.call("check_workload", json!({"runId": run_id}));
    eprintln!("controller down: {s}");
    assert!(
        matches!(s["state"].as_str(), Some("RUNNING" | "PENDING")) && s["done"] == false,
        "{s}"
    );
    assert!(
        s["status"]["squeueError"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "the status does not say squeue failed: {s}"
    );
    ctld.restart();

    // The restarted controller recovered the job; it ends normally.
    let done = poll(&ws, run_id, Duration::from_secs(120), |s| s["done"] == true);
    eprintln!("after restart: {done}");
    assert_eq!(
        (done["state"].as_str(), done["exitCode"].as_i64()),
        (Some("COMPLETED"), Some(0)),
        "{done}"
    );
    assert!(done["status"].get("squeueError").is_none(), "{done}");
    let dir = std::path::Path::new(run["remoteRunDir"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("survived.txt")).unwrap(),
        "survived\n"
    );
}

#[test]
fn with_slurmdbd_stopped_status_says_so_and_nothing_is_marked_failed() {
    let _alone = alone();
    let ws = Workspace::new();
    let finished = ws.call("run_workload", json!({"command": "true", "newRun": true}));
    let finished_id = finished["runId"].as_str().unwrap();
    ws.wait_done(finished_id, Duration::from_secs(120));

    let dbd = Stopped::daemon("slurmdbd");
    // A finished job: squeue still holds it (MinJobAge), sacct cannot
    // answer; the exit code comes from the marker its script left.
    let s = ws.call("check_workload", json!({"runId": finished_id}));
    eprintln!("accounting down, finished job: {s}");
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("COMPLETED"), Some(true)),
        "{s}"
    );
    assert!(
        s["status"]["sacctError"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "the status does not say sacct failed: {s}"
    );
    assert_eq!(s["exitCode"], 0, "{s}");
    // Submitting and following a new job still works without accounting.
    let run = ws.call("run_workload", json!({"command": "exit 4", "newRun": true}));
    let run_id = run["runId"].as_str().unwrap();
    let done = poll(&ws, run_id, Duration::from_secs(120), |s| s["done"] == true);
    eprintln!("accounting down, new job: {done}");
    assert_eq!(
        (done["state"].as_str(), done["exitCode"].as_i64()),
        (Some("FAILED"), Some(4)),
        "{done}"
    );
    assert_eq!(done["status"]["exitCodeSource"], "marker", "{done}");
    // The first job was not touched by any of this.
    let again = ws.call("check_workload", json!({"runId": finished_id}));
    assert_eq!(again["state"], "COMPLETED", "{again}");
    let listed = ws.call("list_runs", json!({}));
    eprintln!("runs: {listed}");
    dbd.restart();

    // Accounting back: the finished job has its exit code from sacct again.
    let s = poll(&ws, finished_id, Duration::from_secs(60), |s| {
        s["status"]["source"] == "sacct"
    });
    assert_eq!(
        (s["state"].as_str(), s["exitCode"].as_i64()),
        (Some("COMPLETED"), Some(0)),
        "{s}"
    );
}
