//! Where the guest's local paths may lead: upload sources, download
//! destinations and the run store, all inside the workspace.
//!
//! Rules (deny by default):
//! - Local paths are relative to the workspace and must resolve inside it by
//!   realpath (symlinks followed for sources; never written through for
//!   destinations).
//! - The run store is confined to `localRunsDir`; downloads may write neither
//!   it nor the host's own records (the audit log, the approval decisions).

use crate::grants::{Grants, Refusal};
use std::path::{Component, Path, PathBuf};

fn denied(message: impl Into<String>) -> Refusal {
    Refusal::Denied(message.into())
}

pub(crate) fn relative_clean(raw: &str) -> Option<PathBuf> {
    let p = Path::new(raw);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

impl Grants {
    /// An existing local file or directory to read (upload source).
    pub fn local_source(&self, raw: &str) -> Result<PathBuf, Refusal> {
        let rel = relative_clean(raw).ok_or_else(|| {
            denied(format!(
                "local path {raw:?} must be relative to the workspace, without '..'"
            ))
        })?;
        let joined = self.workspace.join(&rel);
        let real = joined
            .canonicalize()
            .map_err(|e| denied(format!("local path {raw:?}: {e}")))?;
        if !real.starts_with(&self.workspace) {
            return Err(denied(format!(
                "local path {raw:?} resolves to {} outside the workspace {}",
                real.display(),
                self.workspace.display()
            )));
        }
        Ok(real)
    }

    /// A local path to write under `base` (the workspace or the run store):
    /// the nearest existing ancestor must resolve inside `base`, and the final
    /// component, if it exists, must not be a symlink.
    fn destination_under(&self, base: &Path, raw: &str, what: &str) -> Result<PathBuf, Refusal> {
        let rel = relative_clean(raw).ok_or_else(|| {
            denied(format!(
                "{what} {raw:?} must be a relative path without '..'"
            ))
        })?;
        let target = base.join(&rel);
        let placed = resolved_place(&target);
        if self.protected.iter().any(|p| p.starts_with(&placed)) {
            return Err(denied(format!(
                "{what} {raw:?} is one of the host's own records (the audit log or the approval decisions) or holds one; refusing to write it"
            )));
        }
        if let Ok(meta) = std::fs::symlink_metadata(&target)
            && meta.file_type().is_symlink()
        {
            return Err(denied(format!(
                "{what} {raw:?} is a symlink; refusing to write through it"
            )));
        }
        // While `base` does not exist yet (a fresh run store), its nearest
        // existing ancestor must still be inside the workspace.
        let bound = match base.canonicalize() {
            Ok(real) => real,
            Err(_) => self.workspace.clone(),
        };
        let mut ancestor = target.parent();
        while let Some(a) = ancestor {
            if a.exists() {
                let real = a
                    .canonicalize()
                    .map_err(|e| denied(format!("{what} {raw:?}: {e}")))?;
                if !real.starts_with(&bound) || !real.starts_with(&self.workspace) {
                    return Err(denied(format!(
                        "{what} {raw:?} resolves outside {}",
                        base.display()
                    )));
                }
                return Ok(target);
            }
            ancestor = a.parent();
        }
        Err(denied(format!(
            "{what} {raw:?} has no existing parent directory"
        )))
    }

    /// A download's destination: inside the workspace, never through a
    /// symlink, and never in the run store (the ledger and the rendered
    /// scripts are the guest's record, written only through `run-store`).
    pub fn local_destination(&self, raw: &str) -> Result<PathBuf, Refusal> {
        let target = self.destination_under(&self.workspace, raw, "local path")?;
        let store = resolved_place(&self.runs_dir());
        let placed = resolved_place(&target);
        if placed.starts_with(&store) || store.starts_with(&placed) {
            return Err(denied(format!(
                "local path {raw:?} is (or holds) the run store {:?}; download elsewhere",
                self.runs_dir_display
            )));
        }
        Ok(target)
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.workspace.join(&self.runs_dir_display)
    }

    pub fn store_path(&self, raw: &str) -> Result<PathBuf, Refusal> {
        self.destination_under(&self.runs_dir(), raw, "run store path")
    }
}

/// Where `path` is, made absolute and with its nearest existing ancestor
/// resolved (symlinks and all); the rest need not exist yet.
pub fn resolved_place(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut at = path.as_path();
    loop {
        if let Ok(real) = at.canonicalize() {
            return rest.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grants(ws: &Path) -> Grants {
        Grants::from_config(
            &json!({"clusters": {"c": {"sshTarget": "login", "remoteRoot": "/scratch/u/runs/"}}}),
            ws,
        )
        .unwrap()
    }

    #[test]
    fn downloads_never_write_the_run_store_or_the_hosts_records() {
        let ws = tempfile::tempdir().unwrap();
        let mut g = grants(ws.path());
        for into in [
            ".openclaw/cluster-runs/runs.json",
            ".openclaw/cluster-runs",
            ".openclaw",
        ] {
            let e = g.local_destination(into).unwrap_err();
            assert!(
                matches!(&e, Refusal::Denied(m) if m.contains("run store")),
                "{into}: {e:?}"
            );
        }
        // A protected file whose directory does not exist yet.
        g.protect(&ws.path().join("state/approvals.jsonl"));
        for into in ["state/approvals.jsonl", "state"] {
            let e = g.local_destination(into).unwrap_err();
            assert!(
                matches!(&e, Refusal::Denied(m) if m.contains("host's own records")),
                "{into}: {e:?}"
            );
        }
        assert!(g.local_destination("state-other/x").is_ok());
        assert!(
            g.store_path("runs.json").is_ok(),
            "the run store itself may write it"
        );
        // Relative names are placed from the current directory.
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(
            resolved_place(Path::new("no-such-dir-here/x")),
            cwd.join("no-such-dir-here/x")
        );
    }

    #[test]
    fn local_paths_are_confined_by_realpath() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(ws.path().join("in.txt"), "x").unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), ws.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("outdir")).unwrap();
        let g = grants(ws.path());
        assert!(g.local_source("in.txt").is_ok());
        assert!(
            g.local_source("link").is_err(),
            "symlink out of the workspace must be refused"
        );
        assert!(g.local_source("../in.txt").is_err());
        assert!(g.local_source("/etc/passwd").is_err());
        assert!(g.local_destination("downloads/r/result.json").is_ok());
        assert!(
            g.local_destination("link").is_err(),
            "never write through a symlink"
        );
        assert!(g.local_destination("outdir/x").is_err());
        assert!(g.store_path("runs.json").is_ok());
        assert!(g.store_path("../../x").is_err());
    }
}
