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
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
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
        let full = self.grants.store_path(path)?;
        match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&full, e)),
        }
    }

    /// Temp file in the same directory, fsync, rename, fsync the directory:
    /// a crash leaves the old or the new file, never a torn one.
    pub fn write(&self, path: &str, contents: &[u8]) -> Result<(), HostError> {
        if contents.len() > MAX_FILE {
            return Err(HostError::Denied(format!(
                "run store file {path:?} larger than {MAX_FILE} bytes"
            )));
        }
        let full = self.grants.store_path(path)?;
        let dir = full
            .parent()
            .ok_or_else(|| HostError::Denied(format!("run store path {path:?} has no parent")))?;
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        // Re-check now that the directories exist: a symlink planted in the
        // path while we created them must not redirect the write.
        let full = self.grants.store_path(path)?;
        let name = full
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &full)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_error(&full, e)
        })
    }

    /// flock(2) on `<path>.lock`, the same lock the OpenClaw entry takes with
    /// util-linux `flock`, so both hosts can share one workspace.
    pub async fn lock(&self, path: &str) -> Result<(), HostError> {
        if self.held_locks()?.contains_key(path) {
            return Ok(());
        }
        let lock_path = self.grants.store_path(&format!("{path}.lock"))?;
        if let Some(dir) = lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
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
