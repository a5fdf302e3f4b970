//! Host capabilities without wasm: every refused request comes back as a
//! typed error and never reaches the transport; allowed ones reach it exactly
//! as checked (quoted command, normalised paths).

use crate::bindings::HostError;
use crate::bindings::openclaw::cluster_slurm::ssh_exec::ExecRequest;
use crate::exec::ExecCtx;
use crate::grants::{Grants, ProfileGrant};
use crate::local_fs::{Source, Target};
use crate::run_store::RunStoreCtx;
use crate::ssh::{ExecResult, SshError};
use crate::transfer::TransferCtx;
use crate::transport::{BoxFuture, Moved, Transport};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Recording {
    calls: Mutex<Vec<String>>,
}

impl Recording {
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Transport for Recording {
    fn exec<'a>(
        &'a self,
        p: &'a ProfileGrant,
        command: String,
        _: Option<Vec<u8>>,
        _: Duration,
        _: usize,
    ) -> BoxFuture<'a, Result<ExecResult, SshError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("exec {} {command}", p.label));
        Box::pin(async {
            Ok(ExecResult {
                exit_code: Some(0),
                exit_signal: None,
                stdout: b"ok".to_vec(),
                stderr: vec![],
                stdout_truncated: false,
                stderr_truncated: false,
            })
        })
    }
    fn upload<'a>(
        &'a self,
        p: &'a ProfileGrant,
        local: Source,
        remote: String,
    ) -> BoxFuture<'a, Result<Moved, SshError>> {
        self.calls.lock().unwrap().push(format!(
            "upload {} {} {remote}",
            p.label,
            local.shown().display()
        ));
        Box::pin(async {
            Ok(Moved {
                files: 1,
                bytes: 1,
                ..Moved::default()
            })
        })
    }
    fn download<'a>(
        &'a self,
        p: &'a ProfileGrant,
        remote: String,
        local: Target,
    ) -> BoxFuture<'a, Result<Moved, SshError>> {
        self.calls.lock().unwrap().push(format!(
            "download {} {remote} {}",
            p.label,
            local.shown().display()
        ));
        Box::pin(async {
            Ok(Moved {
                files: 1,
                bytes: 1,
                ..Moved::default()
            })
        })
    }
    fn upload_all<'a>(
        &'a self,
        p: &'a ProfileGrant,
        items: Vec<(Source, String)>,
    ) -> BoxFuture<'a, Result<Vec<Moved>, SshError>> {
        let mut calls = self.calls.lock().unwrap();
        for (local, remote) in &items {
            calls.push(format!(
                "upload {} {} {remote}",
                p.label,
                local.shown().display()
            ));
        }
        let n = items.len();
        Box::pin(async move {
            Ok(vec![
                Moved {
                    files: 1,
                    bytes: 1,
                    ..Moved::default()
                };
                n
            ])
        })
    }
}

fn setup() -> (tempfile::TempDir, Arc<Grants>, Arc<Recording>) {
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("input.txt"), "data").unwrap();
    let grants = Grants::from_config(
        &json!({"clusters": {"c": {"sshTarget": "login", "remoteRoot": "/scratch/u/runs"}}}),
        ws.path(),
    )
    .unwrap();
    (ws, Arc::new(grants), Arc::new(Recording::default()))
}

fn request(cluster: &str, program: &str, args: &[&str], cwd: Option<&str>) -> ExecRequest {
    ExecRequest {
        cluster: cluster.into(),
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        cwd: cwd.map(String::from),
        stdin: None,
        timeout_ms: None,
    }
}

#[tokio::test]
async fn refused_execs_never_reach_the_transport() {
    let (_ws, grants, rec) = setup();
    let ctx = ExecCtx::new(grants, rec.clone());
    let cases = [
        (request("other", "squeue", &[], None), "unknown-cluster"),
        (request("c", "sh", &["-c", "id"], None), "denied"),
        (request("c", "tail", &["/etc/shadow"], None), "denied"),
        (
            request("c", "tail", &["../../.ssh/id_ed25519"], None),
            "denied",
        ),
        (
            request("c", "sbatch", &["--chdir=/home/u", "job.slurm"], None),
            "denied",
        ),
        (
            request("c", "sbatch", &["job.slurm"], Some("/tmp")),
            "denied",
        ),
        (request("c", "sbatch", &["a\nb"], None), "denied"),
    ];
    for (req, kind) in cases {
        let what = format!("{} {:?} cwd={:?}", req.program, req.args, req.cwd);
        let err = ctx.exec(req).await.unwrap_err();
        let got = match err {
            HostError::Denied(_) => "denied",
            HostError::UnknownCluster(_) => "unknown-cluster",
            other => panic!("{what}: unexpected {other:?}"),
        };
        assert_eq!(got, kind, "{what}");
    }
    assert!(
        rec.calls().is_empty(),
        "refused requests reached the transport: {:?}",
        rec.calls()
    );

    let out = ctx
        .exec(request(
            "c",
            "sbatch",
            &["--parsable", "--", "job.slurm"],
            Some("r1"),
        ))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"ok");
    assert_eq!(
        rec.calls(),
        vec![format!(
            "exec c {}",
            crate::remote_confine::with_root_check(
                "/scratch/u/runs",
                &(crate::remote_confine::enter_root("/scratch/u/runs")
                    + " cd -P -- /scratch/u/runs/r1 && cs_h=$(cs_pwd; printf x) && cs_h=${cs_h%?x} && case $cs_h in \"$cs_r\"|\"$cs_r\"/*) exec sbatch --parsable -- job.slurm;; *) printf '%s\\n' 'cluster-slurm-confine: cwd' >&2; exit 90;; esac")
            )
        )]
    );
}

#[tokio::test]
async fn refused_transfers_never_reach_the_transport() {
    let (ws, grants, rec) = setup();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("escape")).unwrap();
    let ctx = TransferCtx::new(grants, rec.clone());
    assert!(matches!(
        ctx.upload("c", "input.txt", "/etc/cron.d/x").await,
        Err(HostError::Denied(_))
    ));
    assert!(matches!(
        ctx.upload("c", "../x", "r1/x").await,
        Err(HostError::Denied(_))
    ));
    assert!(matches!(
        ctx.upload("c", "escape", "r1/x").await,
        Err(HostError::Denied(_))
    ));
    assert!(matches!(
        ctx.upload("nope", "input.txt", "r1/x").await,
        Err(HostError::UnknownCluster(_))
    ));
    assert!(matches!(
        ctx.download("c", "/home/u/.ssh/id_rsa", "k").await,
        Err(HostError::Denied(_))
    ));
    assert!(matches!(
        ctx.download("c", "r1/result.json", "escape/result.json")
            .await,
        Err(HostError::Denied(_))
    ));
    assert!(matches!(
        ctx.download("c", "r1/result.json", "/tmp/x").await,
        Err(HostError::Denied(_))
    ));
    // One bad item of several: refused before any of them moves.
    let items = [
        ("input.txt".to_string(), "r1/input.txt".to_string()),
        ("escape".to_string(), "r1/x".to_string()),
    ];
    assert!(matches!(
        ctx.upload_all("c", &items).await,
        Err(HostError::Denied(_))
    ));
    // Two items onto one place, or one inside another: refused.
    for clash in [
        [("input.txt", "r1/job.slurm"), ("input.txt", "r1/job.slurm")],
        [("input.txt", "r1/data"), ("input.txt", "r1/data/x")],
        [("input.txt", "r1/data/x"), ("input.txt", "r1/data")],
    ] {
        let items: Vec<(String, String)> = clash
            .iter()
            .map(|(l, r)| (l.to_string(), r.to_string()))
            .collect();
        assert!(
            matches!(ctx.upload_all("c", &items).await, Err(HostError::Denied(m)) if m.contains("two items")),
            "{items:?}"
        );
    }
    assert!(rec.calls().is_empty(), "{:?}", rec.calls());

    ctx.upload("c", "input.txt", "r1/input.txt").await.unwrap();
    let real = ws.path().canonicalize().unwrap();
    assert_eq!(
        rec.calls(),
        vec![format!(
            "upload c {}/input.txt /scratch/u/runs/r1/input.txt",
            real.display()
        )]
    );
    // Neighbours are not nested (data-2 is not inside data).
    let neighbours = [
        ("input.txt".to_string(), "r1/data".to_string()),
        ("input.txt".to_string(), "r1/data-2".to_string()),
    ];
    assert!(ctx.upload_all("c", &neighbours).await.is_ok());
    assert_eq!(rec.calls().len(), 3);
}

#[tokio::test]
async fn run_store_is_confined_and_atomic() {
    let (ws, grants, _rec) = setup();
    let store = RunStoreCtx::new(grants);
    assert_eq!(store.read("runs.json").unwrap(), None);
    store.write("runs.json", b"{\"runs\":{}}\n").unwrap();
    store.write("r1/job.slurm", b"#!/bin/bash\n").unwrap();
    assert_eq!(
        store.read("runs.json").unwrap().unwrap(),
        b"{\"runs\":{}}\n"
    );
    let on_disk = ws.path().join(".openclaw/cluster-runs/r1/job.slurm");
    assert_eq!(std::fs::read(on_disk).unwrap(), b"#!/bin/bash\n");
    for bad in ["../../x", "/etc/passwd", "r1/../../x"] {
        assert!(
            matches!(store.write(bad, b"x"), Err(HostError::Denied(_))),
            "{bad}"
        );
    }
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(ws.path().join(".openclaw/cluster-runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
