#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Helpers for the end-to-end tests: the real `cluster-slurm` binary with the
//! real guest component, against the real sshd + SLURM testbed.
//!
//! `CLUSTER_SLURM_BIN` names the binary (default: target/release/cluster-slurm;
//! `cluster-slurm-test-host` beside it has the crash switch)
//! and `CLUSTER_SLURM_TESTBED_CONFIG` the testbed's config; without it the
//! testbed is brought up with `tests/testbed/up.sh`. A missing testbed is a
//! test failure, never a skip.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn binary() -> PathBuf {
    std::env::var_os("CLUSTER_SLURM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/cluster-slurm"))
}

/// The same command line with the durability tests' crash switch
/// (`CLUSTER_SLURM_TEST_KILL_AFTER_CALL`): `cluster-slurm-test-host`, built
/// beside the binary only in test builds.
pub fn test_host_binary() -> PathBuf {
    let bin = binary();
    bin.with_file_name("cluster-slurm-test-host")
}

/// The testbed's config file (brought up once per test process).
pub fn testbed_config() -> PathBuf {
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("CLUSTER_SLURM_TESTBED_CONFIG") {
                return PathBuf::from(p);
            }
            let out = Command::new("bash")
                .arg(repo_root().join("tests/testbed/up.sh"))
                .output()
                .unwrap_or_else(|e| panic!("cannot run tests/testbed/up.sh: {e}"));
            assert!(
                out.status.success(),
                "testbed bring-up failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
        })
        .clone()
}

pub fn testbed_value() -> Value {
    serde_json::from_str(&std::fs::read_to_string(testbed_config()).unwrap()).unwrap()
}

/// A scratch workspace with the files an agent would have written.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Workspace {
    pub fn new() -> Workspace {
        Self::with_config(testbed_value())
    }

    pub fn with_config(config: Value) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster-slurm.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        Workspace { dir, config: path }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .arg("--workspace")
            .arg(self.path())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()))
    }

    /// `call ACTION PARAMS`, which must succeed; returns the result JSON.
    pub fn call(&self, action: &str, params: Value) -> Value {
        let out = self.run(&["call", action, &params.to_string()]);
        assert!(
            out.status.success(),
            "{action} {params} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{action}: bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `call ACTION PARAMS`, which must fail; returns stderr.
    pub fn call_err(&self, action: &str, params: Value) -> String {
        let out = self.run(&["call", action, &params.to_string()]);
        assert!(
            !out.status.success(),
            "{action} {params} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "a failed call must print no result");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Poll check_workload until done; returns the last status.
    pub fn wait_done(&self, run_id: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let s = self.call("check_workload", serde_json::json!({"runId": run_id}));
            if s["done"] == true {
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "run {run_id} not done after {timeout:?}: {s}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}
