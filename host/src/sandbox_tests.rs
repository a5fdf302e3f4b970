//! The sandbox around the guest, against a deliberately hostile guest
//! (`tests/hostile-guest`, built by `just guest`): an endless loop runs out
//! of fuel, a memory bomb hits the memory cap, an oversized result is
//! refused, requests outside the grants are refused without reaching the
//! transport — and after each, the same host process keeps serving.

use crate::audit::AuditLog;
use crate::capability_tests::Recording;
use crate::grants::Grants;
use crate::runtime::{MAX_RESULT, MEMORY_PER_CALL, Runtime};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

fn hostile_wasm() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/guest/hostile_guest.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `just guest` first)", path.display()))
}

fn hostile(ws: &Path) -> (Runtime, Arc<Recording>) {
    let config =
        json!({"clusters": {"c": {"sshTarget": "login", "remoteRoot": "/scratch/u/runs"}}});
    let grants = Arc::new(Grants::from_config(&config, ws).unwrap());
    let transport = Arc::new(Recording::default());
    let runtime = Runtime::new(&hostile_wasm(), grants, transport.clone()).unwrap();
    (runtime, transport)
}

fn audited(ws: &Path, log: &Path) -> (Runtime, Arc<Recording>) {
    let (runtime, transport) = hostile(ws);
    (runtime.with_audit(Arc::new(AuditLog::at(log))), transport)
}

async fn still_serving(runtime: &Runtime) {
    let answer = runtime.invoke("{}", "ok").await.unwrap();
    assert_eq!(answer.unwrap(), r#"{"ok":true}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_stopped_by_its_work_budget() {
    let ws = tempfile::tempdir().unwrap();
    let (runtime, _) = hostile(ws.path());
    let e = runtime.invoke("{}", "spin").await.unwrap_err();
    assert!(e.to_string().contains("work budget"), "{e:#}");
    still_serving(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_is_stopped_at_the_memory_cap() {
    let ws = tempfile::tempdir().unwrap();
    let (runtime, _) = hostile(ws.path());
    let e = runtime.invoke("{}", "balloon").await.unwrap_err();
    let cap = format!("{} MiB of memory", MEMORY_PER_CALL >> 20);
    assert!(e.to_string().contains(&cap), "{e:#}");
    still_serving(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_result_is_refused() {
    let ws = tempfile::tempdir().unwrap();
    let (runtime, _) = hostile(ws.path());
    let e = runtime.invoke("{}", "flood").await.unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("more than the {MAX_RESULT}")),
        "{e:#}"
    );
    still_serving(&runtime).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_outside_the_grants_is_refused_before_the_transport() {
    let ws = tempfile::tempdir().unwrap();
    let inside = ws.path().join("inside");
    std::fs::create_dir(&inside).unwrap();
    let log = tempfile::tempdir().unwrap();
    let log = log.path().join("audit.jsonl");
    let (runtime, transport) = audited(&inside, &log);
    let report = runtime.invoke("{}", "escape").await.unwrap().unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 15, "{report}");
    for line in &lines {
        let (name, answer) = line.split_once('=').unwrap();
        let expected = if name == "unconfigured profile" {
            "unknown-cluster"
        } else {
            "denied"
        };
        assert_eq!(answer, expected, "{name}: {report}");
    }
    assert_eq!(
        transport.calls(),
        Vec::<String>::new(),
        "a refused request reached the transport"
    );
    // Nothing was written outside the workspace (or in it).
    let mut written: Vec<_> = std::fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    written.sort();
    assert_eq!(written, ["inside"]);
    // Each attempt is on record, with what it asked and why it was refused.
    let logged: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), 15);
    assert!(
        logged
            .iter()
            .all(|e| e["outcome"] != "ok" && e["message"].is_string()),
        "{logged:?}"
    );
    assert!(
        logged
            .iter()
            .any(|e| e["program"] == "rm" && e["args"] == json!(["-rf", "/"]))
    );
    still_serving(&runtime).await;
}
