//! Where the guest's local paths may lead: upload sources, download
//! destinations and the run store, all inside the workspace.
//!
//! Rules (deny by default):
//! - Local paths are relative to the workspace. Upload sources must resolve
//!   inside it by realpath (symlinks inside it are followed) and are opened at
//!   the check, so what is read later is what was checked.
//! - Paths the host writes (download destinations, run store files) may not
//!   go through any symlink at all, and every write walks them again from the
//!   opened workspace, one real directory at a time ([`crate::local_fs`]).
//! - The run store is confined to `localRunsDir`; downloads may write neither
//!   it, nor the host's own records (the audit log, the approval decisions),
//!   nor any name in [`NEVER_WRITTEN`].

use crate::grants::{Grants, Refusal};
use crate::local_fs::{Base, Source, Target, components};
use cap_fs_ext::DirExt;
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

/// Names no download ever writes, at any depth: version-control metadata
/// (its hooks and config run code on the next `git` command) and direnv's
/// files (run by the shell on `cd`). A tree that holds one is refused whole,
/// so nothing is silently left out.
pub const NEVER_WRITTEN: &[&str] = &[".git", ".hg", ".svn", ".bzr", ".jj", ".envrc", ".direnv"];

/// The first component of `rel` that is a name no download writes. Compared
/// without regard to ASCII case: on a case-insensitive file system (macOS,
/// some network shares) `.GIT` is `.git` to git.
pub fn never_written(rel: &Path) -> Option<&'static str> {
    rel.components().find_map(|c| match c {
        Component::Normal(name) => {
            let name = name.to_str()?;
            NEVER_WRITTEN
                .iter()
                .copied()
                .find(|n| name.eq_ignore_ascii_case(n))
        }
        _ => None,
    })
}

/// Whether a directory holding these entries is a git repository to git,
/// whatever it is called: git takes any directory with `HEAD` and `refs`,
/// `objects` or `commondir` for one (and then runs its config's
/// `core.fsmonitor`, hooks and filters, e.g. from a shell prompt), so a
/// download may not create one under another name than `.git`.
pub fn looks_like_git_dir<'a>(names: impl IntoIterator<Item = &'a str>) -> bool {
    let (mut head, mut store) = (false, false);
    for name in names {
        head |= name.eq_ignore_ascii_case("HEAD");
        store |= ["refs", "objects", "commondir"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n));
    }
    head && store
}

impl Grants {
    /// An existing local file or directory to read (upload source): it must
    /// resolve inside the workspace (symlinks inside it are followed), and
    /// it is opened right away, through real directories along its resolved
    /// path, so that what is read later is what was checked here.
    pub fn local_source(&self, raw: &str) -> Result<Source, Refusal> {
        let rel = relative_clean(raw).ok_or_else(|| {
            denied(format!(
                "local path {raw:?} must be relative to the workspace, without '..'"
            ))
        })?;
        let joined = self.workspace.join(&rel);
        let real = joined
            .canonicalize()
            .map_err(|e| denied(format!("local path {raw:?}: {e}")))?;
        let inside = real.strip_prefix(&self.workspace).map_err(|_| {
            denied(format!(
                "local path {raw:?} resolves to {} outside the workspace {}",
                real.display(),
                self.workspace.display()
            ))
        })?;
        if inside.as_os_str().is_empty() {
            return Err(denied(format!(
                "local path {raw:?} is the workspace itself; name a file or directory in it"
            )));
        }
        // The resolved path has no symlinks: meeting one now means it was
        // swapped in since, and the open refuses it.
        Source::open(&self.base, inside).map_err(|e| denied(format!("local path {raw:?}: {e}")))
    }

    /// A path to write (a download's destination, or a run store file),
    /// relative to the workspace: no `..`, not one of the host's own records
    /// (or a directory holding one), and no symlink on the way — what it says
    /// is where it is, and every write walks it again the same way
    /// ([`crate::local_fs::Base::walk`]).
    fn writable(&self, rel: &Path, raw: &str, what: &str) -> Result<(), Refusal> {
        let target = self.workspace.join(rel);
        if self.protected.iter().any(|p| p.starts_with(&target)) {
            return Err(denied(format!(
                "{what} {raw:?} is one of the host's own records (the audit log or the approval decisions) or holds one; refusing to write it"
            )));
        }
        if let Some(link) = first_link(&self.base, rel) {
            return Err(denied(format!(
                "{what} {raw:?} goes through {}, a symbolic link; refusing to write through it",
                link.display()
            )));
        }
        Ok(())
    }

    /// A download's destination: inside the workspace, never through a
    /// symlink, never in the run store (the ledger and the rendered scripts
    /// are the guest's record, written only through `run-store`), never a
    /// name from [`NEVER_WRITTEN`].
    pub fn local_destination(&self, raw: &str) -> Result<Target, Refusal> {
        let rel = relative_clean(raw).ok_or_else(|| {
            denied(format!(
                "local path {raw:?} must be a relative path without '..'"
            ))
        })?;
        let store = self.runs_rel();
        if rel.starts_with(&store) || store.starts_with(&rel) {
            return Err(denied(format!(
                "local path {raw:?} is (or holds) the run store {:?}; download elsewhere",
                self.runs_dir_display
            )));
        }
        if let Some(name) = never_written(&rel) {
            return Err(denied(format!(
                "local path {raw:?} is inside {name}: the host never writes version-control metadata or direnv files (they run code); download elsewhere"
            )));
        }
        self.writable(&rel, raw, "local path")?;
        Target::new(self.base.clone(), rel).map_err(|e| denied(format!("local path {raw:?}: {e}")))
    }

    /// `localRunsDir`, relative to the workspace.
    pub fn runs_rel(&self) -> PathBuf {
        relative_clean(&self.runs_dir_display).unwrap_or_default()
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.workspace.join(self.runs_rel())
    }

    /// A run store file, as a path relative to the workspace (inside
    /// `localRunsDir`), to be reached through [`Grants::base`].
    pub fn store_path(&self, raw: &str) -> Result<PathBuf, Refusal> {
        let rel = relative_clean(raw).ok_or_else(|| {
            denied(format!(
                "run store path {raw:?} must be a relative path without '..'"
            ))
        })?;
        let rel = self.runs_rel().join(rel);
        self.writable(&rel, raw, "run store path")?;
        Ok(rel)
    }
}

/// The first existing component of `rel` below `base` that is a symlink
/// (as a path relative to `base`), if any.
fn first_link(base: &Base, rel: &Path) -> Option<PathBuf> {
    let mut dir = base.dir().try_clone().ok()?;
    let mut walked = PathBuf::new();
    for name in components(rel).ok()? {
        walked.push(name);
        let meta = dir.symlink_metadata(name).ok()?;
        if meta.file_type().is_symlink() {
            return Some(walked);
        }
        dir = dir.open_dir_nofollow(name).ok()?;
    }
    None
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

    #[test]
    fn repositories_are_recognised_by_content_and_names_by_any_case() {
        assert!(looks_like_git_dir(["HEAD", "config", "objects", "refs"]));
        assert!(looks_like_git_dir(["HEAD", "commondir"]));
        assert!(looks_like_git_dir(["head", "REFS"]));
        assert!(!looks_like_git_dir(["HEAD", "notes.txt"]));
        assert!(!looks_like_git_dir(["refs", "objects", "config"]));
        assert_eq!(never_written(Path::new("a/.GIT/hooks")), Some(".git"));
        assert_eq!(never_written(Path::new("a/.Envrc")), Some(".envrc"));
        assert_eq!(never_written(Path::new("a/git/x")), None);
    }

    /// Negative control: without the `never_written` check the first loop
    /// accepts `.git/hooks/post-checkout`; without `first_link`, `inner/x`
    /// is accepted (and a download would write through the link).
    #[test]
    fn downloads_never_write_vcs_metadata_nor_through_any_link() {
        let ws = tempfile::tempdir().unwrap();
        let g = grants(ws.path());
        for into in [
            ".git/hooks/post-checkout",
            "results/.git",
            "deep/er/.envrc",
            ".hg/hgrc",
            ".direnv/x",
        ] {
            let e = g.local_destination(into).unwrap_err();
            assert!(
                matches!(&e, Refusal::Denied(m) if m.contains("never writes")),
                "{into}: {e:?}"
            );
        }
        assert!(g.local_destination("git/x").is_ok());
        assert!(g.local_destination("x.git").is_ok());
        // A link that stays inside the workspace is refused too: on a write
        // path no link is followed at all.
        std::fs::create_dir(ws.path().join("real")).unwrap();
        std::os::unix::fs::symlink(ws.path().join("real"), ws.path().join("inner")).unwrap();
        let e = g.local_destination("inner/x").unwrap_err();
        assert!(
            matches!(&e, Refusal::Denied(m) if m.contains("inner") && m.contains("symbolic link")),
            "{e:?}"
        );
        std::os::unix::fs::symlink(ws.path().join("real"), ws.path().join(".openclaw")).unwrap();
        let e = g.store_path("runs.json").unwrap_err();
        assert!(
            matches!(&e, Refusal::Denied(m) if m.contains(".openclaw") && m.contains("symbolic link")),
            "{e:?}"
        );
    }
}
