//! The OpenClaw manifest's `configSchema` and the guest agree: configs the
//! guest accepts, the schema accepts, and configs the guest refuses for a
//! bad key or value, the schema refuses — judged by an independent validator
//! (python-jsonschema, Draft 7, the dialect OpenClaw's AJV uses).
//!
//! Rules across keys (a default naming a configured profile, a limit above
//! the profile's own defaults) cannot be written in JSON Schema; the guest
//! alone refuses those, and the last case says so explicitly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cluster_slurm_e2e::{binary, repo_root};
use serde_json::{Value, json};
use std::process::Command;

fn base() -> Value {
    json!({
        "defaultCluster": "cpu",
        "routing": {"defaultProfile": "cpu", "gpuProfile": "gpu"},
        "clusters": {
            "cpu": {"sshTarget": "login", "remoteRoot": "/scratch/u/runs",
                    "slurmDefaults": {"partition": "cpu", "time": "01:00:00", "output": "slurm-%j.out"}},
            "gpu": {"sshTarget": "login", "remoteRoot": "~/runs", "slurmDefaults": {"partition": "gpu", "gpusPerNode": 1}}
        }
    })
}

fn with(path: &[&str], value: Value) -> Value {
    let mut v = base();
    let mut slot = &mut v;
    for key in path {
        slot = &mut slot[*key];
    }
    *slot = value;
    v
}

fn cases() -> Vec<(&'static str, Value, bool)> {
    let gautschi: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("examples/configs/gautschi.json")).unwrap(),
    )
    .unwrap();
    let rich = {
        let mut v = base();
        v["execution"] = json!({"allowCustomEnvOverride": true});
        v["localRunsDir"] = json!("runs/ledger");
        v["clusters"]["gpu"]["policy"] = json!({"overridableFields": ["time", "array"], "maxTime": "08:00:00", "maxGpus": 2, "maxConcurrentJobs": 4});
        v["clusters"]["cpu"]["slurmDefaults"]["jobName"] = json!("agent");
        v["clusters"]["cpu"]["slurmDefaults"]["array"] = json!("0-9%2");
        v["presets"] = json!({"exp42": {"description": "sweep", "role": "gpu", "commands": ["python3 t.py --lr {{ lr }}"],
            "parameters": {"lr": {"pattern": "^[0-9.]+$", "default": "0.1"}}}});
        v
    };
    vec![
        ("the reference's Gautschi example", gautschi, true),
        ("two profiles, one under ~", base(), true),
        ("policy, presets, execution, jobName, array", rich, true),
        ("empty config", json!({}), true),
        (
            "a host section (read by the hosts, not the guest)",
            with(
                &["host"],
                json!({"sshConfig": "/etc/cluster-slurm/ssh_config", "workspace": "/srv/ws"}),
            ),
            true,
        ),
        (
            "unknown host key",
            with(&["host"], json!({"knownHosts": "/tmp/kh"})),
            false,
        ),
        (
            "unknown top-level key",
            with(&["clustrs"], json!({})),
            false,
        ),
        (
            "unknown profile key",
            with(&["clusters", "cpu", "sshTraget"], json!("x")),
            false,
        ),
        (
            "time in words",
            with(
                &["clusters", "cpu", "slurmDefaults", "time"],
                json!("2 hours"),
            ),
            false,
        ),
        (
            "fractional nodes",
            with(&["clusters", "cpu", "slurmDefaults", "nodes"], json!(1.5)),
            false,
        ),
        (
            "zero cpus",
            with(
                &["clusters", "cpu", "slurmDefaults", "cpusPerTask"],
                json!(0),
            ),
            false,
        ),
        (
            "newline in a header value",
            with(
                &["clusters", "cpu", "slurmDefaults", "partition"],
                json!("cpu\nmodule load evil"),
            ),
            false,
        ),
        (
            "relative remoteRoot",
            with(&["clusters", "cpu", "remoteRoot"], json!("runs")),
            false,
        ),
        (
            "another user's home",
            with(&["clusters", "cpu", "remoteRoot"], json!("~other/runs")),
            false,
        ),
        (
            "remoteRoot with ..",
            with(&["clusters", "cpu", "remoteRoot"], json!("/scratch/../etc")),
            false,
        ),
        (
            "other scheduler",
            with(&["clusters", "cpu", "scheduler"], json!("pbs")),
            false,
        ),
        (
            "gpus and gpusPerNode",
            with(&["clusters", "gpu", "slurmDefaults", "gpus"], json!(2)),
            false,
        ),
        (
            "log outside the run dir",
            with(
                &["clusters", "cpu", "slurmDefaults", "output"],
                json!("../x.out"),
            ),
            false,
        ),
        (
            "no sshTarget",
            json!({"clusters": {"a": {"remoteRoot": "/r"}}}),
            false,
        ),
        (
            "unknown overridable field",
            with(
                &["clusters", "cpu", "policy"],
                json!({"overridableFields": ["walltime"]}),
            ),
            false,
        ),
        (
            "flag as a string",
            with(&["routing", "autoFallbackToGpuOnSignatures"], json!("yes")),
            false,
        ),
        (
            "preset with an unknown role",
            with(&["presets"], json!({"p": {"role": "tpu", "command": "x"}})),
            false,
        ),
        (
            "preset without commands",
            with(
                &["presets"],
                json!({"p": {"description": "nothing to run"}}),
            ),
            false,
        ),
        (
            "runs dir outside the workspace",
            with(&["localRunsDir"], json!("../elsewhere")),
            false,
        ),
        (
            "quote in an init script",
            with(
                &["clusters", "cpu", "moduleInitScripts"],
                json!(["/etc/it's"]),
            ),
            false,
        ),
        (
            "env override flag as a string",
            with(&["execution"], json!({"allowCustomEnvOverride": "true"})),
            false,
        ),
    ]
}

fn guest_accepts(dir: &std::path::Path, config: &std::path::Path) -> bool {
    let out = Command::new(binary())
        .arg("--config")
        .arg(config)
        .arg("--workspace")
        .arg(dir)
        .arg("check-config")
        .output()
        .unwrap();
    out.status.success()
}

fn schema_accepts(files: &[std::path::PathBuf]) -> Vec<bool> {
    let python = repo_root().join("target/mcp-client/bin/python");
    assert!(
        python.exists(),
        "{} missing: run `just mcp-client`",
        python.display()
    );
    let out = Command::new(python)
        .arg(repo_root().join("tests/schema_check.py"))
        .arg(repo_root().join("openclaw/openclaw.plugin.json"))
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn manifest_schema_and_guest_agree_on_good_and_bad_configs() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let files: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, v, _))| {
            let p = dir.path().join(format!("case{i}.json"));
            std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
            p
        })
        .collect();
    let by_schema = schema_accepts(&files);
    for (((name, _, expected), file), schema) in cases.iter().zip(&files).zip(by_schema) {
        let guest = guest_accepts(dir.path(), file);
        assert_eq!(
            (guest, schema),
            (*expected, *expected),
            "{name}: guest accepts {guest}, schema accepts {schema}"
        );
    }

    // Across keys: only the guest can tell.
    let dangling = dir.path().join("dangling.json");
    std::fs::write(
        &dangling,
        serde_json::to_vec(&with(&["defaultCluster"], json!("nope"))).unwrap(),
    )
    .unwrap();
    assert!(!guest_accepts(dir.path(), &dangling));
    assert_eq!(
        schema_accepts(&[dangling]),
        vec![true],
        "JSON Schema cannot check that defaultCluster names a profile"
    );
}
