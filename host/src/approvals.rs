//! The `approvals` capability: operators' decisions on runs the guest held
//! for approval, read-only for the guest.
//!
//! Decisions live in the host's own JSON-lines file (by default
//! `$XDG_STATE_HOME/cluster-slurm/approvals.jsonl`, outside every
//! workspace; downloads may not overwrite it). Only `cluster-slurm
//! approve|reject` writes it; a run's first decision is final.
//!
//! ```json
//! {"workspace":"/home/u/project","runId":"20261121-120000-ab12cd","decision":"approved","by":"ops","atMs":1763726400000,"note":"ok","key":"5f0c3e9a1b2d4c6e"}
//! ```
//!
//! ```ignore
//! let ctx = ApprovalsCtx::new(book.clone(), grants.workspace.clone());
//! approvals::add_to_linker(&mut linker, |state: &mut State| state.approvals.view())?;
//! ```

use crate::audit::AuditLog;
use crate::bindings::HostError;
use crate::bindings::openclaw::cluster_slurm::approvals::{self, Decision};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Run ids are short; anything longer is not one.
const MAX_RUN_ID: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub workspace: String,
    pub run_id: String,
    /// "approved" or "rejected".
    pub decision: String,
    pub by: String,
    pub at_ms: u64,
    #[serde(default)]
    pub note: String,
    /// The digest of the request decided on (from `list_runs`).
    #[serde(default)]
    pub key: String,
}

impl Entry {
    fn to_decision(&self) -> Decision {
        Decision {
            approved: self.decision == "approved",
            by: self.by.clone(),
            at_ms: self.at_ms,
            note: self.note.clone(),
            key: self.key.clone(),
        }
    }
}

/// The file of decisions; `None` when approvals are not kept anywhere (every
/// held run then stays pending).
#[derive(Debug, Clone, Default)]
pub struct ApprovalBook {
    path: Option<PathBuf>,
}

/// `$XDG_STATE_HOME/cluster-slurm/approvals.jsonl` (else under `~/.local/state`).
pub fn default_path() -> Option<PathBuf> {
    crate::audit::state_file("approvals.jsonl")
}

fn io(path: &Path, what: &str, e: std::io::Error) -> HostError {
    HostError::LocalIo(format!("{what} {}: {e}", path.display()))
}

impl ApprovalBook {
    pub fn at(path: &Path) -> ApprovalBook {
        ApprovalBook {
            path: Some(path.to_path_buf()),
        }
    }

    pub fn none() -> ApprovalBook {
        ApprovalBook::default()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every decision, in the order they were made.
    pub fn entries(&self) -> Result<Vec<Entry>, HostError> {
        let Some(path) = &self.path else {
            return Ok(Vec::new());
        };
        let text = match read_decisions(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(path, "reading", e)),
        };
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(line).map_err(|e| {
                HostError::LocalIo(format!(
                    "{} line {}: not a decision ({e}); fix or remove that line",
                    path.display(),
                    n + 1
                ))
            })?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// The first decision on `run_id` of `workspace`.
    pub fn decision(&self, workspace: &Path, run_id: &str) -> Result<Option<Entry>, HostError> {
        let workspace = workspace.to_string_lossy();
        Ok(self
            .entries()?
            .into_iter()
            .find(|e| e.workspace == workspace && e.run_id == run_id))
    }

    /// Record a decision; refused when the run already has one. Holds an
    /// exclusive lock on the file while it checks and appends, so two
    /// operators deciding at once cannot both win.
    pub fn decide(
        &self,
        workspace: &Path,
        run_id: &str,
        key: &str,
        approved: bool,
        by: &str,
        note: &str,
    ) -> Result<Entry, HostError> {
        let Some(path) = &self.path else {
            return Err(HostError::Denied(
                "approvals are switched off (no approvals file)".to_string(),
            ));
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, "creating", e))?;
        }
        let mut file = open_decisions(path).map_err(|e| io(path, "opening", e))?;
        file.lock().map_err(|e| io(path, "locking", e))?;
        if let Some(earlier) = self.decision(workspace, run_id)? {
            return Err(HostError::Denied(format!(
                "run {run_id} was already {} by {} (decisions are final)",
                earlier.decision, earlier.by
            )));
        }
        let entry = Entry {
            workspace: workspace.to_string_lossy().into_owned(),
            run_id: run_id.to_string(),
            decision: if approved { "approved" } else { "rejected" }.to_string(),
            by: by.to_string(),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            note: note.to_string(),
            key: key.to_string(),
        };
        let mut line = serde_json::to_string(&entry)
            .map_err(|e| HostError::LocalIo(format!("encoding the decision: {e}")))?;
        line.push('\n');
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io(path, "writing", e))?;
        Ok(entry)
    }
}

/// The decisions file, opened for appending: never through a symlink, never
/// a FIFO or device.
fn open_decisions(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// The decisions, read without following a symlink (a link planted there
/// could make any file's lines look like decisions).
fn read_decisions(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_DECISIONS + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_DECISIONS {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_DECISIONS} bytes; archive old decisions"
        )));
    }
    Ok(text)
}

/// Decisions are a line each; a file this large is not ours.
const MAX_DECISIONS: u64 = 64 << 20;

pub struct ApprovalsCtx {
    book: Arc<ApprovalBook>,
    /// The workspace whose runs this guest may ask about.
    workspace: PathBuf,
    audit: Arc<AuditLog>,
}

pub struct ApprovalsView<'a> {
    ctx: &'a ApprovalsCtx,
}

impl ApprovalsCtx {
    pub fn new(book: Arc<ApprovalBook>, workspace: PathBuf) -> ApprovalsCtx {
        ApprovalsCtx {
            book,
            workspace,
            audit: Arc::new(AuditLog::off()),
        }
    }

    /// Record every call in `audit`.
    pub fn audited(mut self, audit: Arc<AuditLog>) -> ApprovalsCtx {
        self.audit = audit;
        self
    }

    pub fn view(&self) -> ApprovalsView<'_> {
        ApprovalsView { ctx: self }
    }

    pub fn decision(&self, run_id: &str) -> Result<Option<Decision>, HostError> {
        if run_id.is_empty() || run_id.len() > MAX_RUN_ID {
            return Err(HostError::Denied(format!(
                "{run_id:?} is not a run id (1 to {MAX_RUN_ID} bytes)"
            )));
        }
        Ok(self
            .book
            .decision(&self.workspace, run_id)?
            .map(|e| e.to_decision()))
    }
}

impl approvals::Host for ApprovalsView<'_> {
    async fn lookup(&mut self, run_id: String) -> Result<Option<Decision>, HostError> {
        let call = self.ctx.audit.call("approval", [("runId", json!(run_id))]);
        let answer = self.ctx.decision(&run_id);
        call.end(&answer, |d| {
            [(
                "decision",
                json!(
                    d.as_ref()
                        .map(|d| if d.approved { "approved" } else { "rejected" })
                ),
            )]
        });
        answer
    }
}

struct HasApprovals;

impl HasData for HasApprovals {
    type Data<'a> = ApprovalsView<'a>;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ApprovalsView<'_>,
) -> wasmtime::Result<()> {
    approvals::add_to_linker::<T, HasApprovals>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_is_found_by_workspace_and_run_and_is_final() {
        let d = tempfile::tempdir().unwrap();
        let book = ApprovalBook::at(&d.path().join("state/approvals.jsonl"));
        let (ws, other) = (Path::new("/w/one"), Path::new("/w/two"));
        assert_eq!(book.decision(ws, "r1").unwrap(), None);
        let e = book.decide(ws, "r1", "k1", true, "ops", "fine").unwrap();
        assert_eq!(e.decision, "approved");
        assert_eq!(book.decision(ws, "r1").unwrap(), Some(e));
        // Another workspace's run of the same name is not decided.
        assert_eq!(book.decision(other, "r1").unwrap(), None);
        let again = book
            .decide(ws, "r1", "k1", false, "someone", "")
            .unwrap_err();
        assert!(
            matches!(&again, HostError::Denied(m) if m.contains("already approved by ops")),
            "{again:?}"
        );
        book.decide(other, "r1", "k9", false, "ops", "").unwrap();
        assert_eq!(book.entries().unwrap().len(), 2);

        let ctx = ApprovalsCtx::new(Arc::new(book), ws.to_path_buf());
        let seen = ctx.decision("r1").unwrap().unwrap();
        assert!(seen.approved && seen.by == "ops" && seen.note == "fine" && seen.key == "k1");
        assert!(ctx.decision("r2").unwrap().is_none());
        assert!(matches!(ctx.decision(""), Err(HostError::Denied(_))));
        assert!(matches!(
            ctx.decision(&"x".repeat(300)),
            Err(HostError::Denied(_))
        ));
    }

    #[test]
    fn a_damaged_book_is_reported_not_guessed() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("approvals.jsonl");
        std::fs::write(&path, "{\"not\": \"a decision\"}\n").unwrap();
        let e = ApprovalBook::at(&path)
            .decision(Path::new("/w"), "r")
            .unwrap_err();
        assert!(
            matches!(&e, HostError::LocalIo(m) if m.contains("line 1")),
            "{e:?}"
        );
        // Without a book nothing is ever decided, and nothing can be.
        let none = ApprovalBook::none();
        assert_eq!(none.decision(Path::new("/w"), "r").unwrap(), None);
        assert!(
            none.decide(Path::new("/w"), "r", "k", true, "ops", "")
                .is_err()
        );
    }
}
