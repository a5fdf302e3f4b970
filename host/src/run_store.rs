//! The `run-store` capability: the guest's ledger and rendered scripts, in
//! the workspace's `localRunsDir` and nowhere else.
//!
//! ```ignore
//! let ctx = RunStoreCtx::new(grants.clone());
//! run_store::add_to_linker(&mut linker, |state: &mut State| state.store.view())?;
//! ```

use crate::audit::AuditLog;
use crate::bindings::HostError;
use crate::bindings::openclaw::cluster_slurm::run_store;
use crate::grants::Grants;
use crate::local_fs::{self, Base, Create};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker};

/// Ledgers and job scripts are small; this only stops runaway writes.
pub const MAX_FILE: usize = 64 << 20;

pub struct RunStoreCtx {
    grants: Arc<Grants>,
    /// Locks this call holds, by run-store path: the open lock files (the
    /// kernel releases a lock when its file is closed, or its process dies).
    held: Mutex<HashMap<String, std::fs::File>>,
    audit: Arc<AuditLog>,
}

/// How long `lock` waits for another holder before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(15);

pub struct RunStoreView<'a> {
    ctx: &'a RunStoreCtx,
}

fn io_error(path: &Path, e: std::io::Error) -> HostError {
    HostError::LocalIo(format!("{}: {e}", path.display()))
}

impl RunStoreCtx {
    pub fn new(grants: Arc<Grants>) -> RunStoreCtx {
        RunStoreCtx {
            grants,
            held: Mutex::new(HashMap::new()),
            audit: Arc::new(AuditLog::off()),
        }
    }

    /// Record every call in `audit`.
    pub fn audited(mut self, audit: Arc<AuditLog>) -> RunStoreCtx {
        self.audit = audit;
        self
    }

    pub fn view(&self) -> RunStoreView<'_> {
        RunStoreView { ctx: self }
    }

    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, HostError> {
        let rel = self.grants.store_path(path)?;
        let shown = self.grants.base.show(&rel);
        let (parent, name) = local_fs::split(&rel).map_err(|e| io_error(&shown, e))?;
        let dir = match self.grants.base.walk(&parent, Create::No) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&shown, e)),
        };
        local_fs::read_regular(&dir, &name, MAX_FILE as u64).map_err(|e| io_error(&shown, e))
    }

    /// A fresh file under an unpredictable name (created exclusively, so
    /// nothing planted is ever opened), fsync, rename over the target, fsync
    /// the directory: a crash leaves the old or the new file, never a torn
    /// one, and a link planted at either name is replaced, not written
    /// through. The directories are walked from the opened workspace, one
    /// real directory at a time.
    pub fn write(&self, path: &str, contents: &[u8]) -> Result<(), HostError> {
        if contents.len() > MAX_FILE {
            return Err(HostError::Denied(format!(
                "run store file {path:?} larger than {MAX_FILE} bytes"
            )));
        }
        let rel = self.grants.store_path(path)?;
        let shown = self.grants.base.show(&rel);
        let (parent, name) = local_fs::split(&rel).map_err(|e| io_error(&shown, e))?;
        let dir = self
            .grants
            .base
            .walk(&parent, Create::Yes)
            .map_err(|e| io_error(&shown, e))?;
        local_fs::replace(&dir, &name, contents).map_err(|e| io_error(&shown, e))
    }

    /// flock(2) on `<path>.lock`, the same lock the OpenClaw entry takes with
    /// util-linux `flock`, so both hosts can share one workspace. The lock
    /// file is opened without following a link and never written: a planted
    /// link or FIFO is refused, a planted hard link changes nothing.
    pub async fn lock(&self, path: &str) -> Result<(), HostError> {
        if self.held_locks()?.contains_key(path) {
            return Ok(());
        }
        let rel = self.grants.store_path(&format!("{path}.lock"))?;
        let lock_path = self.grants.base.show(&rel);
        let file = open_lock_file(&self.grants.base, &rel).map_err(|e| io_error(&lock_path, e))?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(HostError::Timeout(format!(
                        "{path} stayed locked by another call for {} s ({})",
                        LOCK_WAIT.as_secs(),
                        lock_path.display()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path, e)),
            }
        }
        self.held_locks()?.insert(path.to_string(), file);
        Ok(())
    }

    pub fn unlock(&self, path: &str) -> Result<(), HostError> {
        // Closing the file releases the lock.
        self.held_locks()?.remove(path);
        Ok(())
    }

    fn held_locks(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<String, std::fs::File>>, HostError> {
        self.held
            .lock()
            .map_err(|_| HostError::LocalIo("run-store lock table poisoned".into()))
    }

    pub fn location(&self) -> String {
        self.grants.runs_dir_display.clone()
    }
}

impl run_store::Host for RunStoreView<'_> {
    async fn read(&mut self, path: String) -> Result<Option<Vec<u8>>, HostError> {
        let call = self.ctx.audit.call("store-read", [("path", json!(path))]);
        let answer = self.ctx.read(&path);
        call.end(&answer, |bytes| {
            [("bytes", json!(bytes.as_ref().map(Vec::len)))]
        });
        answer
    }

    async fn write(&mut self, path: String, contents: Vec<u8>) -> Result<(), HostError> {
        let call = self.ctx.audit.call(
            "store-write",
            [("path", json!(path)), ("bytes", json!(contents.len()))],
        );
        let answer = self.ctx.write(&path, &contents);
        call.end(&answer, |_| []);
        answer
    }

    async fn lock(&mut self, path: String) -> Result<(), HostError> {
        let call = self.ctx.audit.call("store-lock", [("path", json!(path))]);
        let answer = self.ctx.lock(&path).await;
        call.end(&answer, |_| []);
        answer
    }

    async fn unlock(&mut self, path: String) -> Result<(), HostError> {
        let call = self.ctx.audit.call("store-unlock", [("path", json!(path))]);
        let answer = self.ctx.unlock(&path);
        call.end(&answer, |_| []);
        answer
    }

    async fn location(&mut self) -> String {
        self.ctx.location()
    }
}

/// The lock file `rel` (created if missing, never truncated or written).
fn open_lock_file(base: &Base, rel: &Path) -> std::io::Result<std::fs::File> {
    let (parent, name) = local_fs::split(rel)?;
    let dir = base.walk(&parent, Create::Yes)?;
    match local_fs::open_regular(&dir, &name, false) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match local_fs::create_new(&dir, &name, 0o644) {
                Ok(file) => Ok(file),
                // Made by another caller meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    local_fs::open_regular(&dir, &name, false)
                }
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

struct HasRunStore;

impl HasData for HasRunStore {
    type Data<'a> = RunStoreView<'a>;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> RunStoreView<'_>,
) -> wasmtime::Result<()> {
    run_store::add_to_linker::<T, HasRunStore>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(ws: &Path) -> RunStoreCtx {
        RunStoreCtx::new(Arc::new(Grants::from_config(&json!({}), ws).unwrap()))
    }

    /// Two calls (two contexts, as two tool calls or two processes have):
    /// the second lock waits until the first is released.
    #[tokio::test]
    async fn a_held_lock_makes_the_next_holder_wait() {
        let ws = tempfile::tempdir().unwrap();
        let first = ctx(ws.path());
        let second = Arc::new(ctx(ws.path()));
        first.lock("runs.json").await.unwrap();
        first.lock("runs.json").await.unwrap(); // already held by this call: no self-deadlock
        let waiter = {
            let second = second.clone();
            tokio::spawn(async move {
                second.lock("runs.json").await.unwrap();
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "the lock was taken twice");
        let released = Instant::now();
        first.unlock("runs.json").unwrap();
        let acquired = waiter.await.unwrap();
        assert!(acquired >= released);
        assert!(
            ws.path()
                .join(".openclaw/cluster-runs/runs.json.lock")
                .exists()
        );
    }

    #[tokio::test]
    async fn dropping_a_call_releases_its_locks() {
        let ws = tempfile::tempdir().unwrap();
        let first = ctx(ws.path());
        first.lock("runs.json").await.unwrap();
        drop(first);
        tokio::time::timeout(Duration::from_secs(2), ctx(ws.path()).lock("runs.json"))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn lock_paths_are_confined_like_every_run_store_path() {
        let ws = tempfile::tempdir().unwrap();
        let c = ctx(ws.path());
        for bad in ["../x", "/etc/passwd", "a/../../x"] {
            assert!(
                matches!(c.lock(bad).await, Err(HostError::Denied(_))),
                "{bad}"
            );
        }
    }
}
