//! Input that must not reach the wrong place (issue 12): ids from an edited
//! ledger, option-like script names, preset parameters. Each test notes its
//! negative control (what was seen with the guard removed).

use crate::host::ToolError;
use crate::tests::{FakeHost, call, call_with, config_with, ok};
use serde_json::json;

/// A ledger with one run whose recorded job id is `id`.
fn ledger_with_job(host: &mut FakeHost, id: &str) {
    let ledger = json!({"runs": {"r1": {"runId": "r1", "clusterId": "cpu",
        "localRunDir": "/ws/.openclaw/cluster-runs/r1", "remoteRunDir": "/scratch/u/runs/r1",
        "createdAt": "t", "updatedAt": "t", "lastJobId": id,
        "jobs": [{"jobId": id}]}}});
    host.files
        .insert("runs.json".into(), serde_json::to_vec(&ledger).unwrap());
}

/// Negative control (run once): with the check in `find_run` removed,
/// cancel_job still failed, but from the second layer (the scancel check:
/// `job id "--me" is not a SLURM job id`) without naming the run, so the
/// message assertion failed; with that layer removed too, the fake host was
/// asked to run scancel (`program scancel not scripted`).
#[test]
fn ledger_job_ids_are_checked_before_any_slurm_call() {
    for bad in ["--me", "--version", "1,2", "12 13", "-1"] {
        for action in ["cancel_job", "check_workload", "fetch_workload_logs"] {
            let mut host = FakeHost::default();
            ledger_with_job(&mut host, bad);
            host.answer("squeue", vec![ok("")]);
            let e = call(&mut host, json!({"action": action, "runId": "r1"})).unwrap_err();
            let ToolError::InvalidRequest(m) = &e else {
                panic!("{action} {bad}: {e:?}")
            };
            assert!(
                m.contains("run \"r1\"") && m.contains(&format!("{bad:?}")),
                "{action} {bad}: {m}"
            );
            assert!(
                !host.calls.iter().any(|c| c.starts_with("exec")),
                "{action} {bad}: {:?}",
                host.calls
            );
        }
    }
    // A good id still works, with `--` before it.
    let mut host = FakeHost::default();
    ledger_with_job(&mut host, "12_3");
    host.answer("scancel", vec![ok("")]);
    host.answer("squeue", vec![ok("12_3|CANCELLED|0:01|10:00|1|c1\n")]);
    call(&mut host, json!({"action": "cancel_job", "runId": "r1"})).unwrap();
    assert_eq!(
        host.calls.first().map(String::as_str),
        Some("exec scancel -- 12_3")
    );
}

/// Negative control (run once): without the `-` rule in `paths::file_name`,
/// render_job was accepted and wrote `.openclaw/cluster-runs/adhoc-.../-t999`.
#[test]
fn option_like_script_names_are_refused() {
    for action in ["render_job", "run_workload"] {
        let mut host = FakeHost::default();
        host.answer("sbatch", vec![ok("5\n")]);
        let e = call(
            &mut host,
            json!({"action": action, "command": "echo hi", "scriptName": "-t999"}),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("scriptName \"-t999\""),
            "{action}: {e}"
        );
        assert!(host.calls.is_empty(), "{action}: {:?}", host.calls);
    }
}

/// Negative control (run once): with `check_placement` always Ok, the
/// config with `echo "{{ x }}"` loaded (the first assertion failed).
#[test]
fn preset_templates_cannot_put_parameters_inside_quotes() {
    for template in ["echo \"{{ x }}\"", "echo '{{ x }}'"] {
        let cfg = json!({"presets": {"p": {"command": template,
            "parameters": {"x": {"pattern": ".*"}}}}});
        let e = crate::actions::parse_config(&config_with(cfg)).unwrap_err();
        assert!(
            e.to_string().contains("presets.p.commands[0]") && e.to_string().contains("plain word"),
            "{template}: {e}"
        );
    }
    // Placed as a word, any value the pattern allows is one literal word.
    let cfg = config_with(json!({"presets": {"p": {"command": "echo {{ x }}",
        "parameters": {"x": {"pattern": ".*"}}}}}));
    for (value, quoted) in [
        ("\"; id; \"", "'\"; id; \"'"),
        ("'; id; '", "''\"'\"'; id; '\"'\"''"),
    ] {
        let mut host = FakeHost::default();
        host.answer("sbatch", vec![ok("8\n")]);
        let r = call_with(
            &mut host,
            &cfg,
            json!({"action": "run_workload", "preset": "p", "presetParams": {"x": value}}),
        )
        .unwrap();
        let run_id = r["runId"].as_str().unwrap();
        let script = String::from_utf8(host.files[&format!("{run_id}/job.slurm")].clone()).unwrap();
        assert!(script.contains(&format!("\necho {quoted}\n")), "{script}");
        let (ok, err) = crate::script::tests::bash_n(&script);
        assert!(ok, "{err}");
    }
    let mut host = FakeHost::default();
    let e = call_with(
        &mut host,
        &cfg,
        json!({"action": "run_workload", "preset": "p", "presetParams": {"x": "a\nid"}}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("control characters"), "{e}");
}
