//! `cluster-slurm-test-host`: the `cluster-slurm` command line with the
//! durability tests' crash switch. It exists only in test builds (the
//! `test-hooks` feature); the `cluster-slurm` binary has no such switch.
//!
//! `CLUSTER_SLURM_TEST_KILL_AFTER_CALL=N` aborts the process (no destructors,
//! no flushing: as close to SIGKILL as a process can do to itself) right
//! after the N-th capability call of the guest has taken effect, before the
//! guest sees its answer.

use cluster_slurm_host::hooks::{self, Point};
use std::sync::atomic::{AtomicU64, Ordering};

fn main() -> std::process::ExitCode {
    let limit = std::env::var("CLUSTER_SLURM_TEST_KILL_AFTER_CALL")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(limit) = limit {
        let calls = AtomicU64::new(0);
        hooks::install(move |point| {
            if matches!(point, Point::CallEnded)
                && calls.fetch_add(1, Ordering::SeqCst) + 1 == limit
            {
                std::process::abort();
            }
        });
    }
    cluster_slurm_host::cli::main()
}
