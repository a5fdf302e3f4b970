//! Nothing escapes remoteRoot on the real testbed, whatever a job plants in
//! its run directory (issue 12). A job submitted through the real CLI
//! (`run_workload`) makes, next to its outputs: `p -> /etc/passwd`,
//! `s -> ~/.ssh`, `z -> /dev/zero`, a FIFO `f`, `slash -> /`, files with
//! odd names, and at its end replaces its own log files by symlinks to
//! /etc/passwd. Then every action that reads or lists them must refuse (or
//! skip) with a `denied` naming the path, never return /etc/passwd's
//! contents, and never hang: each call must return within [`BOUND`] (a
//! correctness bound, not a benchmark).
//!
//! Negative control (run once): with the cluster-side checks removed from
//! host/src/remote_confine.rs (`inr` a no-op, no symlink / regular-file /
//! `-ef` checks, no `head -c` stage, no cwd `case`), both tests failed; each
//! test's note says what leaked.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cluster_slurm_e2e::{Workspace, testbed_value};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(20);
const JOB_TIMEOUT: Duration = Duration::from_secs(300);
/// A line every /etc/passwd has.
const PASSWD: &str = "root:x:0:0";

const PLANT: &str = r#"ln -s /etc/passwd p; ln -s ~/.ssh s; ln -s /dev/zero z; mkfifo f; ln -s / slash
echo fine > real.out
printf 'x' > "$(printf 'odd\nname')"; : > 'a b'; : > "q'\""; : > 'bs\x'; : > 'é'; : > 'a -> b'
echo planted
for log in slurm-*.out slurm-*.err *.log; do [ -f "$log" ] && ln -sf /etc/passwd "$log"; done; true"#;

/// A finished run whose job planted everything above.
fn planted(ws: &Workspace) -> String {
    let run = ws.call("run_workload", json!({"prefix": "e2ec", "command": PLANT}));
    let run_id = run["runId"].as_str().unwrap().to_string();
    let done = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(done["state"], "COMPLETED", "{done}");
    run_id
}

/// A call that must be refused, quickly, without /etc/passwd in its answer.
fn refused(ws: &Workspace, action: &str, params: Value, why: &str) -> String {
    let started = Instant::now();
    let err = ws.call_err(action, params.clone());
    assert!(
        started.elapsed() < BOUND,
        "{action} {params} took {:?}",
        started.elapsed()
    );
    assert!(
        !err.contains(PASSWD),
        "{action} {params} leaked /etc/passwd: {err}"
    );
    assert!(err.contains(why), "{action} {params}: {err}");
    err
}

/// Negative control (run once on the testbed): without the checks, the
/// first refusal already failed: `job_logs` of `p` returned /etc/passwd
/// (`root:x:0:0:root:/root:/bin/bash ...`) as the log.
#[test]
fn logs_never_follow_planted_links_devices_or_fifos() {
    let ws = Workspace::new();
    let run_id = planted(&ws);
    let ok = ws.call(
        "job_logs",
        json!({"runId": run_id, "remotePath": "real.out"}),
    );
    assert_eq!(ok["log"], "fine\n", "{ok}");
    for (path, why) in [
        ("p", "is a symlink"),
        ("z", "is a symlink"),
        ("f", "is not a regular file"),
        ("s/authorized_keys", "resolves outside remoteRoot"),
        ("slash/etc/passwd", "resolves outside remoteRoot"),
    ] {
        refused(
            &ws,
            "job_logs",
            json!({"runId": run_id, "remotePath": path}),
            why,
        );
        refused(
            &ws,
            "job_logs",
            json!({"runId": run_id, "remotePath": path, "offset": 0}),
            why,
        );
        refused(
            &ws,
            "fetch_workload_logs",
            json!({"runId": run_id, "remotePath": path}),
            why,
        );
    }
    // The job's own logs, replaced by links to /etc/passwd.
    refused(
        &ws,
        "fetch_workload_logs",
        json!({"runId": run_id}),
        "is a symlink",
    );
    // check_workload still answers (a refused log is no GPU signature).
    let started = Instant::now();
    let status = ws.call("check_workload", json!({"runId": run_id}));
    assert!(started.elapsed() < BOUND);
    assert!(!status.to_string().contains(PASSWD), "{status}");
}

/// Negative control (run once on the testbed): without the checks,
/// `list_files` of `s` listed the login user's ~/.ssh (`authorized_keys`).
/// (The odd names are `ls -b`'s, independent of those checks; the parser's
/// own test is `guest/src/actions/files.rs::escaped_names_decode_exactly`.)
#[test]
fn listings_stay_inside_and_odd_names_come_back_exactly() {
    let ws = Workspace::new();
    let run_id = planted(&ws);
    let started = Instant::now();
    let list = ws.call("list_files", json!({"runId": run_id}));
    assert!(started.elapsed() < BOUND);
    let names: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in [
        "p",
        "s",
        "z",
        "f",
        "slash",
        "odd\nname",
        "a b",
        "q'\"",
        "bs\\x",
        "é",
        "a -> b",
    ] {
        assert!(names.contains(&name), "{name:?} missing from {names:?}");
    }
    assert!(
        !names.contains(&"odd") && !names.contains(&"name"),
        "{names:?}"
    );
    let kind = |n: &str| {
        list["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .map(|e| e["type"].clone())
    };
    assert_eq!(kind("s"), Some(json!("symlink")));
    assert_eq!(kind("f"), Some(json!("other")));
    for (path, why) in [
        ("s", "resolves outside remoteRoot"),
        ("slash", "resolves outside remoteRoot"),
        ("slash/etc", "resolves outside remoteRoot"),
    ] {
        refused(
            &ws,
            "list_files",
            json!({"runId": run_id, "remotePath": path}),
            why,
        );
    }
}

/// Transfers through the real CLI: `download` of a planted link, device or
/// FIFO is refused; a download of the whole run directory brings the job's
/// own files and skips every link (never following one); an upload whose
/// layout runs into the planted `s -> ~/.ssh` is refused and writes
/// nothing into `~/.ssh`. Negative control (run): with the binary of the
/// commit before the transfer confinement (`host/src/confine.rs`, the
/// bundle command's checks in `host/src/copy.rs`) the first download, of
/// `p -> /etc/passwd`, succeeded; each guard's own control is noted in
/// `host/tests/remote_escapes.rs`.
#[test]
fn transfers_never_follow_planted_links_devices_or_fifos() {
    let ws = Workspace::new();
    let run_id = planted(&ws);
    for (path, why) in [
        ("p", "outside remoteRoot"),
        ("z", "outside remoteRoot"),
        ("s", "outside remoteRoot"),
        ("s/authorized_keys", "outside remoteRoot"),
        ("slash/etc/passwd", "outside remoteRoot"),
        ("f", "not a regular file"),
    ] {
        refused(
            &ws,
            "download",
            json!({"runId": run_id, "remotePath": path, "localPath": format!("got/{path}")}),
            why,
        );
        assert!(!ws.path().join("got").join(path).exists(), "{path}");
    }
    refused(
        &ws,
        "download_workload_outputs",
        json!({"runId": run_id, "remoteFile": "p"}),
        "outside remoteRoot",
    );
    // The whole run directory, by its absolute path.
    let run_dir = ws.call("list_files", json!({"runId": run_id}))["remoteDir"].clone();
    let started = Instant::now();
    let all = ws.call(
        "download",
        json!({"runId": run_id, "remotePath": run_dir, "localPath": "all"}),
    );
    assert!(started.elapsed() < BOUND, "{all}");
    assert_eq!(ws.read("all/real.out"), "fine\n");
    let mut stack = vec![ws.path().join("all")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            assert!(!kind.is_symlink(), "{:?}", entry.path());
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                let text = std::fs::read(entry.path()).unwrap();
                assert!(
                    !String::from_utf8_lossy(&text).contains(PASSWD),
                    "{:?} holds /etc/passwd",
                    entry.path()
                );
            }
        }
    }
    for name in ["p", "s", "z", "f", "slash"] {
        assert!(!ws.path().join("all").join(name).exists(), "{name}: {all}");
    }
    // Uploads keep their workspace layout: a local `s/` lands on the
    // planted `s -> ~/.ssh` (small files in a bundle, a large one over SFTP).
    ws.write("s/planted-by-upload", "x");
    std::fs::write(ws.path().join("s/planted-big.bin"), vec![b'B'; 2 << 20]).unwrap();
    refused(
        &ws,
        "upload",
        json!({"runId": run_id, "localPaths": ["s"]}),
        "outside",
    );
    // The testbed's login home is on this machine: the remote root's parent.
    let root = testbed_value()["clusters"]["local-cpu"]["remoteRoot"]
        .as_str()
        .unwrap()
        .to_string();
    let ssh_dir = std::path::Path::new(&root).parent().unwrap().join(".ssh");
    let listed: Vec<String> = std::fs::read_dir(&ssh_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!listed.is_empty(), "{}", ssh_dir.display());
    assert!(
        !listed.iter().any(|n| n.starts_with("planted")),
        "written into ~/.ssh: {listed:?}"
    );
}

/// A submitArg that sbatch would take as the script is refused by the host
/// (attack review of issue 12): sbatch stops reading options at the first
/// word that is neither an option nor a value, so `submitArgs: ["evil"]`
/// made `sbatch --parsable evil -- job.slurm` submit `evil`, a file the
/// job wrote in its run directory, in place of the rendered (and approved)
/// script. Unit tests of every spelling: host/src/slurm_args/sbatch.rs.
/// Negative control (run once on the testbed): with the bare-word refusal
/// in host/src/slurm_args/sbatch.rs disabled, `submit_job` succeeded (job
/// 614); sacct named the job `evil`, and its slurm-614.out held `id`'s
/// output (`uid=1001(slurmtest) ...`): the job-written file ran instead of
/// job.slurm.
#[test]
fn a_submit_arg_never_becomes_the_script() {
    let ws = Workspace::new();
    let run = ws.call(
        "run_workload",
        json!({"prefix": "e2es", "command": "printf '#!/bin/sh\\nid\\n' > evil"}),
    );
    let run_id = run["runId"].as_str().unwrap().to_string();
    let done = ws.wait_done(&run_id, JOB_TIMEOUT);
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let err = refused(
        &ws,
        "submit_job",
        json!({"runId": run_id, "submitArgs": ["evil"]}),
        "could be read as the script",
    );
    assert!(err.contains("\"evil\""), "{err}");
}
