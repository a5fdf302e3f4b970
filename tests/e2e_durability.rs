//! Nothing lost, nothing duplicated, on the real testbed.
//!
//! The host process is killed (abort, no cleanup) right after each of the
//! guest's capability calls in a `run_workload` in turn — every crash point
//! from the first ledger read to the last ledger write — and the same request
//! is then made again. Each time, the cluster ends with exactly one job for
//! the request, and the ledger knows that job.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cluster_slurm_e2e::{Workspace, binary, test_host_binary, testbed_config};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

/// Every job SLURM knows (queued, running or finished) whose working
/// directory is a run whose id starts with `prefix`, asked as root on the
/// testbed itself: squeue and sacct, by working directory.
fn cluster_jobs(prefix: &str) -> BTreeSet<String> {
    let env = testbed_config().parent().unwrap().join("env.sh");
    let script = format!(
        ". '{}'; squeue -h -t all -o '%i|%Z'; sacct -n -P -X -a -S now-1hours -o JobID,WorkDir",
        env.display()
    );
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('|'))
        .filter(|(_, dir)| {
            dir.trim_end_matches('/')
                .rsplit('/')
                .next()
                .is_some_and(|run| run.starts_with(prefix))
        })
        .map(|(id, _)| id.split(['_', '.']).next().unwrap().to_string())
        .collect()
}

#[test]
fn run_workload_killed_at_every_crash_point_then_retried_submits_exactly_one_job() {
    let mut outcomes = Vec::new();
    // Jobs of earlier test runs stay in sacct: this run's prefixes are its own.
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 100_000_000;
    for n in 1..=60u32 {
        let ws = Workspace::new();
        ws.write("a.py", "print('hello')\n");
        // A prefix of its own per crash point, to count its jobs apart.
        let prefix = format!("kill{n}t{tag}x");
        let params = json!({"prefix": prefix, "command": "python3 a.py", "localPaths": ["a.py"]});
        let killed = Command::new(test_host_binary())
            .arg("--config")
            .arg(&ws.config)
            .arg("--workspace")
            .arg(ws.path())
            .args(["call", "run_workload", &params.to_string()])
            .env("CLUSTER_SLURM_TEST_KILL_AFTER_CALL", n.to_string())
            .output()
            .unwrap();
        if killed.status.success() {
            // n is past the last capability call: every crash point is done.
            assert!(n > 10, "a run_workload makes more than {n} host calls");
            break;
        }
        assert_eq!(
            killed.status.signal(),
            Some(6),
            "crash point {n}: not killed but {}:\n{}",
            killed.status,
            String::from_utf8_lossy(&killed.stderr)
        );

        let again = ws.call("run_workload", params.clone());
        let run_id = again["runId"].as_str().unwrap().to_string();
        let job_id = again["jobId"].as_str().unwrap().to_string();
        let jobs = cluster_jobs(&prefix);
        assert_eq!(
            jobs,
            BTreeSet::from([job_id.clone()]),
            "crash point {n}: the cluster has {jobs:?} for one request (retry said {again})"
        );
        let ledger: Value =
            serde_json::from_str(&ws.read(".openclaw/cluster-runs/runs.json")).unwrap();
        let recorded: Vec<&Value> = ledger["runs"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|r| r["jobs"].as_array().unwrap())
            .collect();
        assert_eq!(
            recorded.len(),
            1,
            "crash point {n}: ledger jobs {recorded:?}"
        );
        assert_eq!(recorded[0]["jobId"], job_id.as_str());
        assert_eq!(ledger["runs"][&run_id]["lastJobId"], job_id.as_str());
        let how = ["reused", "recovered"]
            .into_iter()
            .find(|k| again[*k] == true)
            .unwrap_or("submitted");
        outcomes.push(format!("{n}:{how}"));
    }
    assert!(outcomes.len() > 10, "too few crash points: {outcomes:?}");
    // Every kind of outcome was exercised: before the job existed, after it
    // existed but before the ledger knew, and after the ledger knew.
    for how in ["submitted", "recovered", "reused"] {
        assert!(
            outcomes.iter().any(|o| o.ends_with(how)),
            "no '{how}' among {outcomes:?}"
        );
    }
    eprintln!("crash points: {}", outcomes.join(" "));
}

/// The crash switch exists only in the test build of the command line: the
/// `cluster-slurm` binary runs a call to its end with the variable set, while
/// `cluster-slurm-test-host` (the control) aborts right after the first
/// capability call.
#[test]
fn only_the_test_host_has_the_crash_switch() {
    let ws = Workspace::new();
    for (bin, aborts) in [(binary(), false), (test_host_binary(), true)] {
        let out = Command::new(&bin)
            .arg("--config")
            .arg(&ws.config)
            .arg("--workspace")
            .arg(ws.path())
            .args(["call", "list_runs", "{}"])
            .env("CLUSTER_SLURM_TEST_KILL_AFTER_CALL", "1")
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal() == Some(6),
            aborts,
            "{}: {} {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if !aborts {
            let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(listed["runs"].is_array(), "{listed}");
        }
    }
}

/// On the real cluster, every job leaves its exit status beside it — the
/// record `check_workload` falls back on when squeue has forgotten the job
/// and sacct cannot answer.
#[test]
fn real_jobs_leave_their_exit_status_in_the_run_directory() {
    let ws = Workspace::new();
    let mut seen = Vec::new();
    for (command, code) in [("true", "0"), ("exit 3", "3")] {
        let run = ws.call("run_workload", json!({"command": command, "newRun": true}));
        let run_id = run["runId"].as_str().unwrap();
        let job_id = run["jobId"].as_str().unwrap();
        let done = ws.wait_done(run_id, std::time::Duration::from_secs(120));
        assert_eq!(done["exitCode"], code.parse::<i64>().unwrap(), "{done}");
        let marker = std::path::Path::new(run["remoteRunDir"].as_str().unwrap())
            .join(format!(".cluster-slurm/exit-{job_id}"));
        let text = std::fs::read_to_string(&marker)
            .unwrap_or_else(|e| panic!("{}: {e}", marker.display()));
        assert_eq!(text.trim(), code);
        seen.push(text.trim().to_string());
    }
    assert_eq!(seen, ["0", "3"]);
}

/// Every capability call lands in the audit log, one JSON line each, with
/// its arguments and outcome; the log is out of the guest's reach even when
/// the operator puts it inside the workspace.
#[test]
fn every_host_call_is_in_the_audit_log() {
    let ws = Workspace::new();
    ws.write("a.py", "print('audited')\n");
    let log = ws.path().join("audit.jsonl");
    let run = |args: &[&str]| {
        Command::new(binary())
            .arg("--config")
            .arg(&ws.config)
            .arg("--workspace")
            .arg(ws.path())
            .args(args)
            .env("CLUSTER_SLURM_AUDIT_LOG", &log)
            .output()
            .unwrap()
    };
    let out = run(&[
        "call",
        "run_workload",
        &json!({"command": "python3 a.py", "localPaths": ["a.py"]}).to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let submitted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for e in &entries {
        assert!(
            e["time"].as_str().unwrap().ends_with('Z') && e["pid"].is_u64() && e["ms"].is_u64(),
            "{e}"
        );
        assert_eq!(e["outcome"], "ok", "{e}");
    }
    let sbatch = entries.iter().find(|e| e["program"] == "sbatch").unwrap();
    assert_eq!(sbatch["args"], json!(["--parsable", "--", "job.slurm"]));
    assert_eq!(sbatch["cwd"], submitted["remoteRunDir"]);
    assert_eq!(sbatch["exitCode"], 0);
    // Inputs and script went up in one call, each item named.
    let upload = entries.iter().find(|e| e["call"] == "upload-all").unwrap();
    assert_eq!(upload["items"][0]["local"], "a.py", "{upload}");
    assert_eq!(upload["files"], 2, "{upload}");
    assert_eq!(upload["verified"], 2, "{upload}");
    assert_eq!(upload["cluster"], "local-cpu");
    assert!(
        entries
            .iter()
            .any(|e| e["call"] == "store-write" && e["path"] == "runs.json")
    );

    // A download aimed at the log is refused by the host, and logged.
    let out = run(&[
        "call",
        "download",
        &json!({"runId": submitted["runId"], "remotePath": "a.py", "localPath": "audit.jsonl"})
            .to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit log"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (last["call"].as_str(), last["outcome"].as_str()),
        (Some("download"), Some("denied")),
        "{last}"
    );
}

/// The approval gate end to end: a request above the profile's limit is
/// held (nothing reaches SLURM), the operator sees it with `approvals`,
/// approves it with `approve`, and the agent's next `check_workload`
/// submits it to the real cluster; a rejected one is never submitted.
#[test]
fn a_held_request_runs_only_after_an_operator_approves_it() {
    let state = tempfile::tempdir().unwrap();
    let book = state.path().join("approvals.jsonl");
    let mut config = cluster_slurm_e2e::testbed_value();
    config["clusters"]["local-cpu"]["policy"] =
        json!({"requireApprovalAbove": {"time": "00:15:00"}});
    config["host"]["approvals"] = json!(book);
    let ws = Workspace::with_config(config);
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    let prefix = format!("gate{tag}x");
    let request = json!({"prefix": prefix, "command": "echo approved-run",
                         "headerOverrides": {"time": "00:20:00"}});

    let held = ws.call("run_workload", request.clone());
    assert_eq!(held["state"], "PENDING_APPROVAL", "{held}");
    let run_id = held["runId"].as_str().unwrap().to_string();
    assert!(
        held["approval"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("time 00:20:00"),
        "{held}"
    );
    let s = ws.call("check_workload", json!({"runId": run_id}));
    assert_eq!(s["state"], "PENDING_APPROVAL", "{s}");
    assert!(
        cluster_jobs(&prefix).is_empty(),
        "a held request reached SLURM"
    );

    // The operator's view and decision.
    let listed = ws.run(&["approvals"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && text.contains(&run_id) && text.contains("time 00:20:00"),
        "{text}"
    );
    let key = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("key: "))
        .expect("the listing shows the request's key")
        .to_string();
    // A key that is not the held request's decides nothing.
    let stale = ws.run(&["approve", &run_id, "--key", "0000000000000000"]);
    assert!(!stale.status.success(), "a stale key approved");
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("changed since it was listed"),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
    let approve = ws.run(&["approve", &run_id, "--key", &key, "--note", "for the paper"]);
    assert!(
        approve.status.success(),
        "{}",
        String::from_utf8_lossy(&approve.stderr)
    );
    assert!(
        String::from_utf8_lossy(&approve.stdout).starts_with(&format!("approved run {run_id}"))
    );
    let twice = ws.run(&["reject", &run_id]);
    assert!(!twice.status.success(), "a decision was changed");
    assert!(
        String::from_utf8_lossy(&twice.stderr).contains("already approved"),
        "{}",
        String::from_utf8_lossy(&twice.stderr)
    );

    // The agent's next check submits it; it runs like any other job.
    let s = ws.call("check_workload", json!({"runId": run_id}));
    assert_eq!(s["state"], "SUBMITTED", "{s}");
    assert_eq!(s["approval"]["note"], "for the paper");
    let job = s["jobId"].as_str().unwrap().to_string();
    let done = ws.wait_done(&run_id, std::time::Duration::from_secs(120));
    assert_eq!(
        (done["state"].as_str(), done["jobId"].as_str()),
        (Some("COMPLETED"), Some(job.as_str())),
        "{done}"
    );
    assert_eq!(cluster_jobs(&prefix), BTreeSet::from([job]));
    let after = ws.run(&["approvals", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&after.stdout).unwrap(),
        json!([])
    );

    // A rejected request is done and never submitted.
    let other = format!("gate{tag}y");
    let held = ws.call(
        "run_workload",
        json!({"prefix": other, "command": "echo never", "headerOverrides": {"time": "01:00:00"}}),
    );
    let rejected_id = held["runId"].as_str().unwrap();
    let reject = ws.run(&["reject", rejected_id]);
    assert!(
        reject.status.success(),
        "{}",
        String::from_utf8_lossy(&reject.stderr)
    );
    let s = ws.call("check_workload", json!({"runId": rejected_id}));
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("REJECTED"), Some(true)),
        "{s}"
    );
    assert!(cluster_jobs(&other).is_empty());
    // Deciding on a run that does not wait for a decision is refused.
    let unknown = ws.run(&["approve", "no-such-run"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("does not wait for approval"));
}
