//! What the testbed tests of this package share: where the local testbed's
//! ssh config is, and a connection to its login node.
#![allow(clippy::unwrap_used, clippy::panic, dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use cluster_slurm_host::ssh::{ConnectOptions, Connection};
use cluster_slurm_host::ssh_config::resolve;

/// Where `tests/testbed/up.sh` keeps its state.
pub const TB: &str = "/var/tmp/cluster-slurm-testbed";

/// The testbed's ssh config (`slurm-testbed` is its login node).
pub fn ssh_config() -> PathBuf {
    let cfg = PathBuf::from(TB).join("ssh/ssh_config");
    assert!(
        cfg.exists(),
        "testbed missing ({}): run `just testbed-up`",
        cfg.display()
    );
    cfg
}

/// A fresh connection to the testbed's login node, as its user.
pub async fn connect() -> Connection {
    let cfg = ssh_config();
    let params = resolve("slurm-testbed", Some(&cfg)).unwrap();
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    Connection::connect(&params, Some(&cfg), &opts)
        .await
        .unwrap()
}

/// Run `command` on the login node as its user (from the home directory),
/// which must succeed; its stdout.
pub async fn sh(conn: &Connection, command: &str) -> String {
    let out = conn
        .exec(
            &format!("cd && {{ {command}; }}"),
            None,
            Duration::from_secs(60),
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(
        out.exit_code,
        Some(0),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
