//! The `run-store` capability: the guest's ledger and rendered scripts, in
//! the workspace's `localRunsDir` and nowhere else.
//!
//! ```ignore
//! let ctx = RunStoreCtx::new(grants.clone());
//! run_store::add_to_linker(&mut linker, |state: &mut State| state.store.view())?;
//! ```

use crate::bindings::HostError;
use crate::bindings::openclaw::cluster_slurm::run_store;
use crate::grants::Grants;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Ledgers and job scripts are small; this only stops runaway writes.
pub const MAX_FILE: usize = 64 << 20;

pub struct RunStoreCtx {
    grants: Arc<Grants>,
}

pub struct RunStoreView<'a> {
    ctx: &'a RunStoreCtx,
}

fn io_error(path: &Path, e: std::io::Error) -> HostError {
    HostError::LocalIo(format!("{}: {e}", path.display()))
}

impl RunStoreCtx {
    pub fn new(grants: Arc<Grants>) -> RunStoreCtx {
        RunStoreCtx { grants }
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

    pub fn location(&self) -> String {
        self.grants.runs_dir_display.clone()
    }
}

impl run_store::Host for RunStoreView<'_> {
    async fn read(&mut self, path: String) -> Result<Option<Vec<u8>>, HostError> {
        self.ctx.read(&path)
    }

    async fn write(&mut self, path: String, contents: Vec<u8>) -> Result<(), HostError> {
        self.ctx.write(&path, &contents)
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
