//! Crash points for the durability tests, and nothing else:
//! `CLUSTER_SLURM_TEST_KILL_AFTER_CALL=N` makes the process abort (no
//! destructors, no flushing: as close to SIGKILL as a process can do to
//! itself) right after the N-th capability call of the guest has taken
//! effect, before the guest sees its answer. Unset, it costs one load per
//! call.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static CALLS: AtomicU64 = AtomicU64::new(0);
static KILL_AFTER: OnceLock<Option<u64>> = OnceLock::new();

/// Count one capability call; abort if it is the chosen one.
pub fn after_call() {
    let limit = KILL_AFTER.get_or_init(|| {
        std::env::var("CLUSTER_SLURM_TEST_KILL_AFTER_CALL")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    if let Some(limit) = *limit
        && CALLS.fetch_add(1, Ordering::SeqCst) + 1 == limit
    {
        std::process::abort();
    }
}
