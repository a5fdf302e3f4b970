//! End to end, action by action, on the real testbed (sshd + munge +
//! slurmctld + two slurmd + slurmdbd): every action with real jobs, and the
//! features that need a real scheduler to show they work.
//!
//! Scenarios and expected outcomes:
//! - low-level flow: `init_run` creates a run (again: `created` false, jobs
//!   kept); `upload` keeps workspace-relative paths; `render_job` writes the
//!   script under `.openclaw/cluster-runs/<runId>/`; `submit_job` returns a
//!   job id; `job_status` reaches COMPLETED; `job_logs`, `download`,
//!   `list_runs` and `list_files` return the job's real output;
//! - `cancel_job` on a running `sleep 300`: CANCELLED, done;
//! - `exit 3`: FAILED with exit code 3, its stderr comes back, no GPU fallback;
//! - `time` 1 minute with `sleep 600`: TIMEOUT;
//! - a 4-task array: one status with 4 COMPLETED tasks, per-task logs (with
//!   `%A_%a` patterns, and with the default `%j` pattern, where SLURM names
//!   each task's file after the task's own job id; a bare array id is refused);
//! - `dependency afterok:A`: B is PENDING (Dependency) while A runs, and
//!   starts only after A ended;
//! - dry runs: a feasible one is accepted with sbatch's "to start at" and
//!   leaves no run; an impossible one is refused with SLURM's reason;
//! - three jobs: one `job_status` / `check_workload` call answers all three;
//! - byte offsets: exactly `maxBytes` bytes from `offset`, `nextOffset`
//!   continues where the last read ended;
//! - GPU fallback after a failed CPU job: the signature is reported, the
//!   workload is resubmitted on the GPU profile once (and only once), and the
//!   two runs are linked;
//! - per-profile policy: overrides outside `overridableFields`, beyond
//!   `maxTime` or `maxArraySize` are refused by name; an allowed one runs;
//! - presets: parameters fill the command, a value outside the pattern or a
//!   `command` next to the preset is refused;
//! - a `~/...` remote root lands in the remote user's home, never in a
//!   directory literally named `~`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cluster_slurm_e2e::{Workspace, testbed_value};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Generous: jobs of parallel tests share two small nodes.
const JOB_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(500);

/// A run id no other test (or earlier test run) uses.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "e2ea-{tag}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

fn text(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// The job's log (stdout and stderr) of a run's last job.
fn run_log(ws: &Workspace, run_id: &str) -> Value {
    ws.call("fetch_workload_logs", json!({"runId": run_id}))
}

/// `job_status` for one job until `pred` holds on its status; returns it.
fn job_status_until(
    ws: &Workspace,
    job_id: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let s = ws.call("job_status", json!({"jobId": job_id}));
        assert_eq!(s["jobId"], job_id, "{s}");
        if pred(&s["status"]) {
            return s["status"].clone();
        }
        assert!(
            start.elapsed() < timeout,
            "job {job_id}: not {what} after {timeout:?}: {s}"
        );
        std::thread::sleep(POLL);
    }
}

fn wait_running(ws: &Workspace, job_id: &str) -> Value {
    job_status_until(ws, job_id, JOB_TIMEOUT, "RUNNING", |s| {
        let state = s["state"].as_str().unwrap_or("");
        assert!(
            matches!(state, "PENDING" | "CONFIGURING" | "RUNNING"),
            "job {job_id} ended before it was seen running: {s}"
        );
        state == "RUNNING"
    })
}

fn run_workload(ws: &Workspace, params: Value) -> (String, String, Value) {
    let run = ws.call("run_workload", params);
    let run_id = text(&run["runId"]).to_string();
    let job_id = text(&run["jobId"]).to_string();
    assert!(job_id.parse::<u64>().is_ok(), "job id: {run}");
    (run_id, job_id, run)
}

fn ledger_exists(ws: &Workspace) -> bool {
    ws.path().join(".openclaw/cluster-runs/runs.json").exists()
}

// ------------------------------------------------------------------------ 1

#[test]
fn low_level_flow_init_upload_render_submit_status_logs_download_list() {
    let ws = Workspace::new();
    let run_id = unique("lowlevel");
    ws.write("input.txt", "alpha\n");
    ws.write("data/sub/nested.txt", "beta\n");
    ws.write("data/top.csv", "k,v\na,1\n");

    // init_run: a new run.
    let init = ws.call("init_run", json!({"runId": run_id}));
    assert_eq!(init["created"], true, "{init}");
    assert_eq!(init["run"]["runId"], run_id.as_str(), "{init}");
    assert_eq!(init["run"]["clusterId"], "local-cpu", "{init}");
    let remote_dir = text(&init["run"]["remoteRunDir"]).to_string();
    assert!(
        remote_dir.ends_with(&format!("/cluster-runs/{run_id}")),
        "{init}"
    );

    // upload: a file and a directory, keeping workspace-relative paths.
    let up = ws.call(
        "upload",
        json!({"runId": run_id, "localPaths": ["input.txt", "data"]}),
    );
    assert_eq!(up["remoteDir"], remote_dir.as_str(), "{up}");
    let uploaded = up["uploaded"].as_array().unwrap();
    assert_eq!(uploaded.len(), 2, "{up}");
    assert_eq!(
        uploaded[0]["remotePath"],
        format!("{remote_dir}/input.txt"),
        "{up}"
    );
    assert_eq!(
        (uploaded[0]["files"].as_u64(), uploaded[0]["bytes"].as_u64()),
        (Some(1), Some(6)),
        "{up}"
    );
    assert_eq!(
        uploaded[1]["remotePath"],
        format!("{remote_dir}/data"),
        "{up}"
    );
    assert_eq!(
        (uploaded[1]["files"].as_u64(), uploaded[1]["bytes"].as_u64()),
        (Some(2), Some(13)),
        "{up}"
    );
    let nested = ws.call(
        "list_files",
        json!({"runId": run_id, "remotePath": "data/sub"}),
    );
    let names: Vec<&str> = nested["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| text(&e["name"]))
        .collect();
    assert_eq!(names, ["nested.txt"], "{nested}");
    assert_eq!(nested["entries"][0]["size"], 5, "{nested}");
    assert_eq!(nested["entries"][0]["type"], "file", "{nested}");

    // render_job: the header and the commands, written into the run store.
    let render = ws.call(
        "render_job",
        json!({"runId": run_id, "commands": [
            "mkdir -p out",
            "cat input.txt data/sub/nested.txt > out/joined.txt",
            "echo \"rendered job $SLURM_JOB_ID on $SLURM_JOB_PARTITION\""
        ]}),
    );
    let script = text(&render["script"]);
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    for line in [
        "#SBATCH --partition=cpu",
        "#SBATCH --time=00:10:00",
        "#SBATCH --output=slurm-%j.out",
        "cat input.txt data/sub/nested.txt > out/joined.txt",
    ] {
        assert!(script.contains(line), "missing {line:?} in:\n{script}");
    }
    let script_rel = format!(".openclaw/cluster-runs/{run_id}/job.slurm");
    assert_eq!(render["localScriptPath"], script_rel.as_str(), "{render}");
    assert_eq!(ws.read(&script_rel), script);

    // submit_job: the rendered script.
    let submit = ws.call("submit_job", json!({"runId": run_id}));
    let job_id = text(&submit["jobId"]).to_string();
    assert!(job_id.parse::<u64>().is_ok(), "{submit}");
    assert_eq!(
        submit["remoteScriptPath"],
        format!("{remote_dir}/job.slurm"),
        "{submit}"
    );

    // init_run again: not reset, the job is still there.
    let again = ws.call("init_run", json!({"runId": run_id}));
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(again["run"]["lastJobId"], job_id.as_str(), "{again}");
    assert_eq!(again["run"]["jobs"].as_array().unwrap().len(), 1, "{again}");
    assert_eq!(again["run"]["jobs"][0]["jobId"], job_id.as_str(), "{again}");

    // job_status until terminal.
    let status = job_status_until(&ws, &job_id, JOB_TIMEOUT, "terminal", |s| {
        !matches!(
            s["state"].as_str(),
            Some("PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING")
        )
    });
    assert_eq!(status["state"], "COMPLETED", "{status}");
    assert_eq!(status["exitCode"], "0:0", "{status}");
    assert_eq!(status["source"], "sacct", "{status}");

    // job_logs: the job's stdout.
    let logs = ws.call("job_logs", json!({"runId": run_id, "jobId": job_id}));
    assert_eq!(
        logs["remotePath"],
        format!("{remote_dir}/slurm-{job_id}.out"),
        "{logs}"
    );
    assert_eq!(logs["missing"], false, "{logs}");
    assert_eq!(
        logs["log"],
        format!("rendered job {job_id} on cpu\n"),
        "{logs}"
    );

    // download: a file the job wrote, byte for byte.
    let dl = ws.call(
        "download",
        json!({"runId": run_id, "remotePath": "out/joined.txt", "localPath": "fetched/joined.txt"}),
    );
    assert_eq!(
        dl["remotePath"],
        format!("{remote_dir}/out/joined.txt"),
        "{dl}"
    );
    assert_eq!(dl["bytes"], 11, "{dl}");
    assert_eq!(ws.read("fetched/joined.txt"), "alpha\nbeta\n");

    // list_runs: the run with its job.
    let runs = ws.call("list_runs", json!({}));
    let listed = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["runId"] == run_id.as_str())
        .unwrap_or_else(|| panic!("run {run_id} not listed: {runs}"));
    assert_eq!(listed["jobIds"], json!([job_id]), "{runs}");
    assert_eq!(listed["clusterId"], "local-cpu", "{runs}");
    assert_eq!(listed["remoteRunDir"], remote_dir.as_str(), "{runs}");

    // list_files: everything in the run directory, with sizes.
    let files = ws.call("list_files", json!({"runId": run_id}));
    assert_eq!(files["remoteDir"], remote_dir.as_str(), "{files}");
    let entries = files["entries"].as_array().unwrap();
    let entry = |name: &str| {
        entries
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {files}"))
    };
    assert_eq!(entry("input.txt")["size"], 6, "{files}");
    assert_eq!(entry("input.txt")["type"], "file", "{files}");
    assert_eq!(entry("data")["type"], "dir", "{files}");
    assert_eq!(entry("out")["type"], "dir", "{files}");
    assert_eq!(entry("job.slurm")["size"], script.len(), "{files}");
    assert_eq!(
        entry(&format!("slurm-{job_id}.out"))["size"],
        format!("rendered job {job_id} on cpu\n").len(),
        "{files}"
    );
    let out = ws.call("list_files", json!({"runId": run_id, "remotePath": "out"}));
    assert_eq!(out["entries"][0]["name"], "joined.txt", "{out}");
    assert_eq!(out["entries"][0]["size"], 11, "{out}");
}

// ------------------------------------------------------------------------ 2

#[test]
fn cancel_job_cancels_a_running_job() {
    let ws = Workspace::new();
    let (run_id, job_id, _) = run_workload(
        &ws,
        json!({"runId": unique("cancel"), "command": "echo started; sleep 300"}),
    );
    wait_running(&ws, &job_id);
    let cancel = ws.call("cancel_job", json!({"runId": run_id}));
    assert_eq!(cancel["cancelled"], true, "{cancel}");
    assert_eq!(cancel["jobIds"], json!([job_id]), "{cancel}");
    let started = Instant::now();
    let status = ws.wait_done(&run_id, Duration::from_secs(120));
    assert_eq!(status["state"], "CANCELLED", "{status}");
    assert_eq!(status["done"], true, "{status}");
    assert_eq!(status["jobId"], job_id.as_str(), "{status}");
    // Long before the 300 s sleep would have ended.
    assert!(started.elapsed() < Duration::from_secs(120), "{status}");
}

// ------------------------------------------------------------------------ 3

#[test]
fn failing_job_reports_failed_exit_code_3_and_no_gpu_fallback() {
    let ws = Workspace::new();
    let (run_id, _, _) = run_workload(
        &ws,
        json!({"prefix": "e2ea-fail", "command": "echo partial output; echo broken input >&2; exit 3"}),
    );
    let status = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(status["state"], "FAILED", "{status}");
    assert_eq!(status["exitCode"], 3, "{status}");
    assert_eq!(status["status"]["exitCode"], "3:0", "{status}");
    // No GPU-required signature in the logs: nothing to suggest.
    assert!(status.get("gpuFallback").is_none(), "{status}");
    let logs = run_log(&ws, &run_id);
    assert_eq!(logs["logs"]["stdout"]["log"], "partial output\n", "{logs}");
    assert_eq!(logs["logs"]["stderr"]["log"], "broken input\n", "{logs}");
}

// ------------------------------------------------------------------------ 4

#[test]
fn job_over_its_time_limit_ends_in_timeout() {
    let ws = Workspace::new();
    let (run_id, job_id, run) = run_workload(
        &ws,
        json!({"runId": unique("timeout"), "command": "echo waiting; sleep 600", "headerOverrides": {"time": "1"}}),
    );
    let script = ws.read(&format!(".openclaw/cluster-runs/{run_id}/job.slurm"));
    assert!(script.contains("#SBATCH --time=1\n"), "{run}\n{script}");
    let running = wait_running(&ws, &job_id);
    assert_eq!(running["timeLimit"], "1:00", "{running}");
    // One minute, then SLURM's limit check (every ~30 s) and the kill.
    let status = ws.wait_done(&run_id, Duration::from_secs(200));
    assert_eq!(status["state"], "TIMEOUT", "{status}");
    let logs = run_log(&ws, &run_id);
    assert!(text(&logs["log"]).contains("waiting"), "{logs}");
}

// ------------------------------------------------------------------------ 5

#[test]
fn job_array_reports_every_task_and_per_task_logs() {
    let ws = Workspace::new();
    let (run_id, job_id, _) = run_workload(
        &ws,
        json!({
            "runId": unique("array"),
            "command": "echo \"task=$SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID\"",
            "headerOverrides": {"array": "0-3", "output": "arr-%A_%a.out", "error": "arr-%A_%a.err"}
        }),
    );
    let status = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(status["state"], "COMPLETED", "{status}");
    assert_eq!(status["status"]["array"], true, "{status}");
    assert_eq!(status["status"]["tasks"]["count"], 4, "{status}");
    assert_eq!(
        status["status"]["tasks"]["byState"],
        json!({"COMPLETED": 4}),
        "{status}"
    );
    let task_ids: Vec<&str> = status["status"]["tasks"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| text(&t["taskId"]))
        .collect();
    let expected: Vec<String> = (0..4).map(|i| format!("{job_id}_{i}")).collect();
    assert_eq!(task_ids, expected, "{status}");

    let logs = ws.call(
        "fetch_workload_logs",
        json!({"runId": run_id, "jobId": format!("{job_id}_2")}),
    );
    assert_eq!(
        logs["logs"]["stdout"]["log"],
        format!("task=2 of {job_id}\n"),
        "{logs}"
    );
    assert!(
        text(&logs["logs"]["stdout"]["remotePath"]).ends_with(&format!("/arr-{job_id}_2.out")),
        "{logs}"
    );
    // The whole array has no single log: the tool says which id to pass.
    let err = ws.call_err("fetch_workload_logs", json!({"runId": run_id}));
    assert!(
        err.contains(&format!("pass jobId {job_id}_<task>")),
        "{err}"
    );
    let files = ws.call("list_files", json!({"runId": run_id}));
    let outs = files["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| text(&e["name"]).ends_with(".out"))
        .count();
    assert_eq!(outs, 4, "{files}");
}

/// SLURM names an array task's `%j` file after the task's own job id (e.g.
/// 57 for `56_0`), not `<array id>_<task>`.
#[test]
fn array_task_logs_with_a_percent_j_pattern() {
    let ws = Workspace::new();
    let (run_id, job_id, _) = run_workload(
        &ws,
        json!({
            "runId": unique("array-j"),
            "command": "echo \"task=$SLURM_ARRAY_TASK_ID\"",
            "headerOverrides": {"array": "0-2"}
        }),
    );
    let status = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(status["state"], "COMPLETED", "{status}");
    for task in 0..3 {
        let logs = ws.call(
            "fetch_workload_logs",
            json!({"runId": run_id, "jobId": format!("{job_id}_{task}")}),
        );
        assert_eq!(logs["missing"], false, "{logs}");
        assert_eq!(
            logs["logs"]["stdout"]["log"],
            format!("task={task}\n"),
            "{logs}"
        );
    }
    // Without a task there is no single log to read: say so.
    let err = ws.call_err("fetch_workload_logs", json!({"runId": run_id}));
    assert!(err.contains("is an array"), "{err}");
}

// ------------------------------------------------------------------------ 6

/// The nanosecond timestamp after `label` in a log.
fn stamp(log: &str, label: &str) -> u128 {
    log.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("{label:?} not in log {log:?}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{label:?} in {log:?}: {e}"))
}

#[test]
fn dependent_job_waits_for_its_dependency() {
    let ws = Workspace::new();
    let (run_a, job_a, _) = run_workload(
        &ws,
        json!({"runId": unique("dep-a"), "commands": ["echo \"A start $(date +%s%N)\"", "sleep 8", "echo \"A end $(date +%s%N)\""]}),
    );
    let (run_b, job_b, _) = run_workload(
        &ws,
        json!({
            "runId": unique("dep-b"),
            "command": "echo \"B start $(date +%s%N)\"",
            "headerOverrides": {"dependency": format!("afterok:{job_a}")}
        }),
    );
    // One job_status call for both: a consistent snapshot while A runs.
    let start = Instant::now();
    let snapshot = loop {
        let s = ws.call("job_status", json!({"jobIds": [job_a, job_b]}));
        let statuses = s["statuses"].as_array().unwrap();
        assert_eq!(statuses.len(), 2, "{s}");
        let (a, b) = (&statuses[0]["status"], &statuses[1]["status"]);
        assert_eq!(statuses[0]["jobId"], job_a.as_str(), "{s}");
        assert_eq!(statuses[1]["jobId"], job_b.as_str(), "{s}");
        assert_ne!(b["state"], "RUNNING", "B runs before A ended: {s}");
        assert_ne!(
            b["state"], "COMPLETED",
            "B ended before A was seen running: {s}"
        );
        if a["state"] == "RUNNING" {
            break s;
        }
        assert!(
            a["state"] == "PENDING" || a["state"] == "CONFIGURING",
            "A: {s}"
        );
        assert!(start.elapsed() < JOB_TIMEOUT, "A never ran: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let b = &snapshot["statuses"][1]["status"];
    assert_eq!(b["state"], "PENDING", "{snapshot}");
    assert!(text(&b["reason"]).contains("Dependency"), "{snapshot}");

    let done_a = ws.wait_done(&run_a, JOB_TIMEOUT);
    let done_b = ws.wait_done(&run_b, JOB_TIMEOUT);
    assert_eq!(done_a["state"], "COMPLETED", "{done_a}");
    assert_eq!(done_b["state"], "COMPLETED", "{done_b}");
    let log_a = run_log(&ws, &run_a);
    let log_b = run_log(&ws, &run_b);
    let a_end = stamp(text(&log_a["log"]), "A end ");
    let b_start = stamp(text(&log_b["log"]), "B start ");
    assert!(
        b_start >= a_end,
        "B started at {b_start}, before A ended at {a_end}: {log_a} {log_b}"
    );
}

// ------------------------------------------------------------------------ 7

#[test]
fn dry_run_asks_sbatch_test_only_and_submits_nothing() {
    let ws = Workspace::new();
    let ok = ws.call(
        "run_workload",
        json!({"prefix": "e2ea-dry", "command": "echo never runs", "dryRun": true}),
    );
    assert_eq!(ok["dryRun"], true, "{ok}");
    assert_eq!(ok["accepted"], true, "{ok}");
    assert_eq!(ok["cluster"], "local-cpu", "{ok}");
    let out = text(&ok["sbatchTestOutput"]);
    assert!(out.contains("to start at"), "{ok}");
    assert!(out.contains("in partition cpu"), "{ok}");
    assert!(text(&ok["script"]).contains("echo never runs"), "{ok}");
    assert!(
        ok.get("runId").is_none() && ok.get("jobId").is_none(),
        "{ok}"
    );

    let bad = ws.call(
        "run_workload",
        json!({"command": "echo never runs", "dryRun": true, "headerOverrides": {"partition": "cpu", "gres": "gpu:1"}}),
    );
    assert_eq!(bad["accepted"], false, "{bad}");
    assert!(
        text(&bad["script"]).contains("#SBATCH --gres=gpu:1"),
        "{bad}"
    );
    assert!(
        text(&bad["sbatchTestOutput"]).contains("Requested node configuration is not available"),
        "{bad}"
    );

    // Neither left a run behind.
    assert!(!ledger_exists(&ws), "a dry run wrote the ledger");
    let runs = ws.call("list_runs", json!({}));
    assert_eq!(runs["total"], 0, "{runs}");
}

// ------------------------------------------------------------------------ 8

#[test]
fn several_jobs_are_answered_by_one_call() {
    let ws = Workspace::new();
    let mut runs = Vec::new();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let (run_id, job_id, _) = run_workload(
            &ws,
            json!({"runId": unique(&format!("many{i}")), "command": format!("echo job number {i}")}),
        );
        runs.push(run_id);
        jobs.push(job_id);
    }
    let st = ws.call("job_status", json!({"jobIds": jobs}));
    let statuses = st["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 3, "{st}");
    for (s, id) in statuses.iter().zip(&jobs) {
        assert_eq!(s["jobId"], id.as_str(), "{st}");
        assert_eq!(s["status"]["jobId"], id.as_str(), "{st}");
        assert_ne!(s["status"]["state"], "NOT_FOUND", "{st}");
    }

    let start = Instant::now();
    let all = loop {
        let c = ws.call("check_workload", json!({"runIds": runs}));
        let results = c["results"].as_array().unwrap();
        assert_eq!(results.len(), 3, "{c}");
        let each_done = results.iter().all(|r| r["done"] == true);
        assert_eq!(c["done"], each_done, "{c}");
        if each_done {
            break c;
        }
        assert!(start.elapsed() < JOB_TIMEOUT, "not done: {c}");
        std::thread::sleep(POLL);
    };
    for (i, r) in all["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(r["runId"], runs[i].as_str(), "{all}");
        assert_eq!(r["jobId"], jobs[i].as_str(), "{all}");
        assert_eq!(r["state"], "COMPLETED", "{all}");
        assert_eq!(r["exitCode"], 0, "{all}");
    }
    for (i, run_id) in runs.iter().enumerate() {
        let logs = run_log(&ws, run_id);
        assert_eq!(
            logs["logs"]["stdout"]["log"],
            format!("job number {i}\n"),
            "{logs}"
        );
    }
}

// ------------------------------------------------------------------------ 9

#[test]
fn logs_are_read_by_byte_offsets() {
    let ws = Workspace::new();
    let content = "first line\nsecond line\nthird line\n";
    let (run_id, job_id, _) = run_workload(
        &ws,
        json!({"runId": unique("offsets"), "command": "printf 'first line\\nsecond line\\nthird line\\n'"}),
    );
    let status = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(status["state"], "COMPLETED", "{status}");

    let first = ws.call(
        "fetch_workload_logs",
        json!({"runId": run_id, "offset": 0, "maxBytes": 10}),
    );
    let out = &first["logs"]["stdout"];
    assert_eq!(out["log"], &content[..10], "{first}");
    assert_eq!(out["offset"], 0, "{first}");
    assert_eq!(out["nextOffset"], 10, "{first}");
    assert_eq!(out["more"], true, "{first}");

    let second = ws.call(
        "fetch_workload_logs",
        json!({"runId": run_id, "offset": out["nextOffset"], "maxBytes": 10}),
    );
    let out = &second["logs"]["stdout"];
    assert_eq!(out["log"], &content[10..20], "{second}");
    assert_eq!(out["nextOffset"], 20, "{second}");

    // job_logs reads the same way; the rest, then nothing more.
    let rest = ws.call(
        "job_logs",
        json!({"runId": run_id, "jobId": job_id, "offset": 20}),
    );
    assert_eq!(rest["log"], &content[20..], "{rest}");
    assert_eq!(rest["nextOffset"], content.len(), "{rest}");
    assert_eq!(rest["more"], false, "{rest}");
    let end = ws.call(
        "job_logs",
        json!({"runId": run_id, "jobId": job_id, "offset": rest["nextOffset"]}),
    );
    assert_eq!(end["log"], "", "{end}");
    assert_eq!(end["nextOffset"], content.len(), "{end}");
}

// ------------------------------------------------------------------------ 10

#[test]
fn failed_cpu_job_with_gpu_signature_is_resubmitted_on_gpu_once() {
    let ws = Workspace::new();
    let command = "if [ -z \"${CUDA_VISIBLE_DEVICES:-}\" ]; then echo 'RuntimeError: CUDA is required' >&2; exit 1; fi; echo \"gpu ok on $SLURM_JOB_PARTITION\"";
    let (run_id, _, run) = run_workload(
        &ws,
        json!({"runId": unique("fallback"), "cluster": "local-cpu", "command": command}),
    );
    assert_eq!(run["cluster"], "local-cpu", "{run}");

    // Failed: the signature is reported, nothing is resubmitted yet.
    let failed = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert_eq!(failed["exitCode"], 1, "{failed}");
    let fb = &failed["gpuFallback"];
    assert_eq!(fb["matchedSignature"], "cuda is required", "{failed}");
    assert_eq!(fb["fromCluster"], "local-cpu", "{failed}");
    assert_eq!(fb["toCluster"], "local-gpu", "{failed}");
    assert!(fb["resubmitted"].is_null(), "{failed}");
    assert_eq!(ws.call("list_runs", json!({}))["total"], 1);

    // Asked to: the same workload as a new run on the GPU profile.
    let again = ws.call(
        "check_workload",
        json!({"runId": run_id, "autoFallbackToGpu": true}),
    );
    let resub = &again["gpuFallback"]["resubmitted"];
    assert_eq!(resub["cluster"], "local-gpu", "{again}");
    assert!(resub.get("alreadyDone").is_none(), "{again}");
    let gpu_run = text(&resub["runId"]).to_string();
    let gpu_job = text(&resub["jobId"]).to_string();
    assert_ne!(gpu_run, run_id);
    let done = ws.wait_done(&gpu_run, JOB_TIMEOUT);
    assert_eq!(done["cluster"], "local-gpu", "{done}");
    assert_eq!(done["jobId"], gpu_job.as_str(), "{done}");
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let logs = run_log(&ws, &gpu_run);
    assert_eq!(logs["logs"]["stdout"]["log"], "gpu ok on gpu\n", "{logs}");

    // Both runs are kept and linked.
    let runs = ws.call("list_runs", json!({}));
    let find = |id: &str| {
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["runId"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {runs}"))
            .clone()
    };
    let (orig, new) = (find(&run_id), find(&gpu_run));
    assert_eq!(runs["total"], 2, "{runs}");
    assert_eq!(orig["fallbackRunId"], gpu_run.as_str(), "{runs}");
    assert_eq!(new["fallbackFromRunId"], run_id.as_str(), "{runs}");
    assert_eq!(new["clusterId"], "local-gpu", "{runs}");

    // Asked again: the earlier resubmission, not a second one.
    let third = ws.call(
        "check_workload",
        json!({"runId": run_id, "autoFallbackToGpu": true}),
    );
    let resub = &third["gpuFallback"]["resubmitted"];
    assert_eq!(resub["alreadyDone"], true, "{third}");
    assert_eq!(resub["runId"], gpu_run.as_str(), "{third}");
    assert_eq!(ws.call("list_runs", json!({}))["total"], 2);
}

// ------------------------------------------------------------------------ 11

#[test]
fn profile_policy_refuses_overrides_by_rule_and_allows_the_rest() {
    let mut cfg = testbed_value();
    cfg["clusters"]["local-cpu"]["policy"] = json!({
        "overridableFields": ["time", "array"],
        "maxTime": "00:10:00",
        "maxArraySize": 2
    });
    // A limit below the profile's own default time is a config error, not a
    // refusal of every job that blames the agent.
    let mut too_tight = cfg.clone();
    too_tight["clusters"]["local-cpu"]["policy"]["maxTime"] = json!("00:05:00");
    let err = Workspace::with_config(too_tight).call_err("list_clusters", json!({}));
    assert!(err.contains("clusters.local-cpu.policy.maxTime"), "{err}");
    let ws = Workspace::with_config(cfg);
    let err = ws.call_err(
        "run_workload",
        json!({"command": "true", "headerOverrides": {"partition": "gpu"}}),
    );
    assert!(err.contains("profile \"local-cpu\" policy"), "{err}");
    assert!(err.contains("headerOverrides.partition"), "{err}");
    assert!(err.contains("overridableFields: time, array"), "{err}");
    let err = ws.call_err(
        "run_workload",
        json!({"command": "true", "headerOverrides": {"time": "00:30:00"}}),
    );
    assert!(err.contains("exceeds maxTime"), "{err}");
    assert!(err.contains("00:30:00"), "{err}");
    let err = ws.call_err(
        "run_workload",
        json!({"command": "true", "headerOverrides": {"time": "00:02:00", "array": "0-9"}}),
    );
    assert!(err.contains("maxArraySize is 2"), "{err}");
    assert!(err.contains("10 tasks"), "{err}");
    assert!(!ledger_exists(&ws), "a refused call wrote the ledger");

    let (run_id, _, _) = run_workload(
        &ws,
        json!({"runId": unique("policy"), "command": "echo within policy", "headerOverrides": {"time": "00:02:00"}}),
    );
    let script = ws.read(&format!(".openclaw/cluster-runs/{run_id}/job.slurm"));
    assert!(script.contains("#SBATCH --time=00:02:00\n"), "{script}");
    let status = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(status["state"], "COMPLETED", "{status}");
    assert_eq!(run_log(&ws, &run_id)["log"], "within policy\n");
}

// ------------------------------------------------------------------------ 12

#[test]
fn preset_runs_with_checked_parameters_only() {
    let mut cfg = testbed_value();
    cfg["presets"] = json!({"exp42": {
        "description": "learning-rate sweep point",
        "role": "cpu",
        "commands": ["echo lr={{ lr }}"],
        "parameters": {"lr": {"pattern": "^[0-9.]+$", "default": "0.01"}}
    }});
    let ws = Workspace::with_config(cfg);

    let listed = ws.call("list_clusters", json!({}));
    assert!(listed["presets"].to_string().contains("exp42"), "{listed}");

    let (run_id, _, run) = run_workload(
        &ws,
        json!({"runId": unique("preset"), "preset": "exp42", "presetParams": {"lr": "0.5"}}),
    );
    assert_eq!(run["preset"], "exp42", "{run}");
    assert_eq!(run["cluster"], "local-cpu", "{run}");
    let status = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(status["state"], "COMPLETED", "{status}");
    assert_eq!(run_log(&ws, &run_id)["log"], "lr=0.5\n");

    // The default fills an omitted parameter.
    let dry = ws.call("run_workload", json!({"preset": "exp42", "dryRun": true}));
    assert!(text(&dry["script"]).contains("\necho lr=0.01\n"), "{dry}");
    assert_eq!(dry["accepted"], true, "{dry}");

    let err = ws.call_err(
        "run_workload",
        json!({"preset": "exp42", "presetParams": {"lr": "1; rm -rf ~"}}),
    );
    assert!(err.contains("presetParams.lr"), "{err}");
    assert!(err.contains("pattern"), "{err}");
    let err = ws.call_err(
        "run_workload",
        json!({"preset": "exp42", "presetParams": {"lr": "0.5"}, "command": "echo mine"}),
    );
    assert!(err.contains("command/commands may not be given"), "{err}");
    let runs = ws.call("list_runs", json!({}));
    assert_eq!(runs["total"], 1, "refusals created runs: {runs}");
}

// ------------------------------------------------------------------------ 13

#[test]
fn tilde_remote_root_is_the_remote_users_home() {
    let mut cfg = testbed_value();
    let mut home_cpu = cfg["clusters"]["local-cpu"].clone();
    let cpu_root = PathBuf::from(text(&home_cpu["remoteRoot"]));
    let home = cpu_root.parent().unwrap().to_path_buf();
    home_cpu["remoteRoot"] = json!("~/e2e-tilde-runs");
    cfg["clusters"]["home-cpu"] = home_cpu;
    let ws = Workspace::with_config(cfg);
    ws.write("inputs/hello.txt", "hello from the workspace\n");

    let (run_id, _, run) = run_workload(
        &ws,
        json!({
            "runId": unique("tilde"),
            "cluster": "home-cpu",
            "commands": ["pwd", "cp inputs/hello.txt copied.txt"],
            "localPaths": ["inputs"]
        }),
    );
    assert_eq!(run["cluster"], "home-cpu", "{run}");
    let status = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(status["state"], "COMPLETED", "{status}");
    let expected_dir = home.join("e2e-tilde-runs").join(&run_id);
    let logs = run_log(&ws, &run_id);
    assert_eq!(
        logs["logs"]["stdout"]["log"],
        format!("{}\n", expected_dir.display()),
        "{logs}"
    );

    // The files are really there (the testbed's remote is this machine).
    assert_eq!(
        std::fs::read_to_string(expected_dir.join("copied.txt")).unwrap(),
        "hello from the workspace\n"
    );
    let files = ws.call("list_files", json!({"runId": run_id}));
    assert!(
        files["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "copied.txt"),
        "{files}"
    );
    let dl = ws.call(
        "download_workload_outputs",
        json!({"runId": run_id, "remoteFile": "copied.txt"}),
    );
    assert_eq!(
        ws.read(text(&dl["localPath"])),
        "hello from the workspace\n"
    );

    // No directory literally named "~", anywhere the paths could have gone.
    for base in [&home, &cpu_root, &expected_dir] {
        assert!(
            !base.join("~").exists(),
            "{} exists",
            base.join("~").display()
        );
    }
    assert!(!ws.path().join("~").exists());
}
