//! What the operator grants, and the one checkpoint every guest request
//! passes before any side effect.
//!
//! Semantics (deny by default, fail closed):
//! - Only profiles in the operator's config exist; any other label is
//!   `unknown-cluster`, and an empty config grants nothing.
//! - Remote paths must be the profile's `remoteRoot` or below it, written
//!   without `.`/`..` segments and without `~`.
//! - Remote commands are a program from [`ALLOWED_PROGRAMS`] plus arguments;
//!   an argument that names a path (contains `/`) obeys the remote path rule,
//!   and every command runs with its working directory inside `remoteRoot`,
//!   so relative paths resolve there too.
//! - Local paths are relative to the workspace and must resolve inside it by
//!   realpath (symlinks followed for sources; never written through for
//!   destinations). The run store is confined to `localRunsDir`.
//!
//! The host reads `sshTarget` and `remoteRoot` from the config itself rather
//! than trusting the guest's validation: policy code that is wrong or hostile
//! still cannot widen what is granted here.

use crate::ssh::{quote_command, quote_word};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Programs the guest may run on a login node. Workload commands never run
/// there: they only ever run inside a SLURM job, through `sbatch`.
pub const ALLOWED_PROGRAMS: &[&str] = &[
    "sbatch",
    "squeue",
    "sacct",
    "scancel",
    "scontrol",
    "sinfo",
    "mkdir",
    "tail",
    "head",
    "ls",
    "stat",
    "sha256sum",
];

/// Why a request was refused before it touched anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Denied(String),
    #[error("no cluster profile named {0:?} is configured on this host")]
    UnknownCluster(String),
}

fn denied(message: impl Into<String>) -> Refusal {
    Refusal::Denied(message.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileGrant {
    pub label: String,
    pub ssh_target: String,
    pub remote_root: String,
}

#[derive(Debug, Clone)]
pub struct Grants {
    /// Canonical workspace directory.
    pub workspace: PathBuf,
    /// `localRunsDir` as written (workspace-relative), for display.
    pub runs_dir_display: String,
    pub profiles: BTreeMap<String, ProfileGrant>,
    pub programs: Vec<String>,
    /// Files no transfer may write (the audit log, when it is in reach).
    pub protected: Vec<PathBuf>,
}

/// Problems in the operator's own config, reported at load time.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GrantError(pub String);

fn relative_clean(raw: &str) -> Option<PathBuf> {
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
    /// Read the grants from the plugin config (the `host` section already
    /// removed) for a workspace directory.
    pub fn from_config(config: &Value, workspace: &Path) -> Result<Grants, GrantError> {
        let workspace = workspace
            .canonicalize()
            .map_err(|e| GrantError(format!("workspace {}: {e}", workspace.display())))?;
        let runs_dir_display = match config.get("localRunsDir") {
            None | Some(Value::Null) => ".openclaw/cluster-runs".to_string(),
            Some(Value::String(s)) => s.trim().to_string(),
            Some(_) => return Err(GrantError("localRunsDir must be a string".into())),
        };
        if relative_clean(&runs_dir_display).is_none() || runs_dir_display.starts_with('~') {
            return Err(GrantError(format!(
                "localRunsDir {runs_dir_display:?} must be a relative path inside the workspace"
            )));
        }
        let mut profiles = BTreeMap::new();
        if let Some(clusters) = config.get("clusters") {
            let Value::Object(map) = clusters else {
                return Err(GrantError("clusters must be an object".into()));
            };
            for (label, profile) in map {
                let label = label.trim();
                if label.is_empty() {
                    continue;
                }
                let text = |key: &str| -> Result<String, GrantError> {
                    match profile.get(key) {
                        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                        _ => Err(GrantError(format!(
                            "clusters.{label}.{key} is required and must be a string"
                        ))),
                    }
                };
                let ssh_target = text("sshTarget")?;
                if ssh_target.starts_with('-')
                    || ssh_target
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(GrantError(format!(
                        "clusters.{label}.sshTarget {ssh_target:?} is not a host name or alias"
                    )));
                }
                let remote_root = text("remoteRoot")?;
                let root = remote_root.trim_end_matches('/');
                let home_form = root == "~" || root.starts_with("~/");
                let ok = (remote_root.starts_with('/') || home_form)
                    && !root.is_empty()
                    && !root.split('/').any(|s| s == "." || s == "..")
                    && !root.chars().any(char::is_control);
                if !ok {
                    return Err(GrantError(format!(
                        "clusters.{label}.remoteRoot {remote_root:?} must be an absolute path or ~/dir, without '.' or '..' (and not / itself)"
                    )));
                }
                profiles.insert(
                    label.to_string(),
                    ProfileGrant {
                        label: label.to_string(),
                        ssh_target,
                        remote_root: root.to_string(),
                    },
                );
            }
        }
        Ok(Grants {
            workspace,
            runs_dir_display,
            profiles,
            programs: ALLOWED_PROGRAMS.iter().map(|s| s.to_string()).collect(),
            protected: Vec::new(),
        })
    }

    /// Never let a download write `path` (compared by resolved location).
    pub fn protect(&mut self, path: &Path) {
        self.protected.push(resolved_place(path));
    }

    pub fn profile(&self, label: &str) -> Result<&ProfileGrant, Refusal> {
        self.profiles
            .get(label)
            .ok_or_else(|| Refusal::UnknownCluster(label.to_string()))
    }

    /// A remote path, normalised, under the profile's root. Relative paths
    /// are relative to the root; `~` appears only as the root's own prefix.
    pub fn remote_path(&self, profile: &ProfileGrant, raw: &str) -> Result<String, Refusal> {
        let root = &profile.remote_root;
        if raw.starts_with('~') && !(raw == "~" || raw.starts_with("~/")) {
            return Err(denied(format!(
                "remote path {raw:?}: only ~/... (the login user's home) is understood"
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(denied(format!(
                "remote path {raw:?} contains control characters"
            )));
        }
        let full = if raw.starts_with('/') || raw.starts_with('~') {
            raw.to_string()
        } else {
            format!("{root}/{raw}")
        };
        let (prefix, rest) = match full.strip_prefix('~') {
            Some(rest) => ("~", rest),
            None => ("", full.as_str()),
        };
        let mut parts: Vec<&str> = Vec::new();
        for seg in rest.split('/') {
            match seg {
                "" => {}
                "." | ".." => {
                    return Err(denied(format!(
                        "remote path {raw:?} may not contain '.' or '..' segments"
                    )));
                }
                s => parts.push(s),
            }
        }
        let normalized = match (prefix, parts.is_empty()) {
            ("~", true) => "~".to_string(),
            _ => format!("{prefix}/{}", parts.join("/")),
        };
        if normalized == *root || normalized.starts_with(&format!("{root}/")) {
            Ok(normalized)
        } else {
            Err(denied(format!(
                "remote path {raw:?} is outside remoteRoot {root} of profile {:?}",
                profile.label
            )))
        }
    }

    /// Check an exec request and build the one command line sent over SSH.
    pub fn exec_command(
        &self,
        profile: &ProfileGrant,
        program: &str,
        args: &[String],
        cwd: Option<&str>,
    ) -> Result<String, Refusal> {
        if !self.programs.iter().any(|p| p == program) {
            return Err(denied(format!(
                "program {program:?} is not on this host's allowlist ({})",
                self.programs.join(", ")
            )));
        }
        for arg in args {
            if arg.contains(['\n', '\r', '\0']) {
                return Err(denied(format!(
                    "argument {arg:?} contains a line break or NUL"
                )));
            }
            if let Some(value) = path_part(arg) {
                if value.starts_with('~') {
                    return Err(denied(format!(
                        "argument {arg:?}: '~' paths are not allowed"
                    )));
                }
                if value.split('/').any(|s| s == "..") {
                    return Err(denied(format!(
                        "argument {arg:?} may not contain '..' path segments"
                    )));
                }
                if value.starts_with('/') {
                    self.remote_path(profile, value)?;
                }
            }
        }
        let run = format!("exec {}", quote_command(program, args));
        Ok(match cwd {
            Some(dir) => {
                let dir = self.remote_path(profile, dir)?;
                format!("cd -- {} && {run}", shell_path(&dir))
            }
            // The root may not exist yet on a fresh account: create it rather
            // than run with the login directory as the working directory.
            None => {
                let root = shell_path(&profile.remote_root);
                format!(
                    "{{ cd -- {root} 2>/dev/null || {{ mkdir -p -- {root} && cd -- {root}; }}; }} && {run}"
                )
            }
        })
    }

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

/// A checked remote path for the remote shell: `~` becomes `"$HOME"`, which
/// the shell expands (a quoted `~` would not be).
pub fn shell_path(path: &str) -> String {
    match path.strip_prefix('~') {
        Some("") => "\"$HOME\"".to_string(),
        Some(rest) => format!("\"$HOME\"/{}", quote_word(rest.trim_start_matches('/'))),
        None => quote_word(path),
    }
}

/// A checked remote path for SFTP, whose relative paths start at the login
/// user's home: `~/x` is `x`, `~` is `.`.
pub fn sftp_path(path: &str) -> String {
    match path.strip_prefix('~') {
        Some("") => ".".to_string(),
        Some(rest) => rest.trim_start_matches('/').to_string(),
        None => path.to_string(),
    }
}

/// The part of an argument that would be read as a path, if any: the whole
/// word, an option's `=value`, or a glued short option's value (`-o/x`).
fn path_part(arg: &str) -> Option<&str> {
    let value = if arg.starts_with('-') {
        match arg.split_once('=') {
            Some((_, v)) => v,
            None => arg.find('/').and_then(|i| arg.get(i..))?,
        }
    } else {
        arg
    };
    (value.contains('/') || value.starts_with('~') || value == "..").then_some(value)
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
    fn unknown_profile_and_bad_config() {
        let ws = tempfile::tempdir().unwrap();
        let g = grants(ws.path());
        assert_eq!(g.profile("x"), Err(Refusal::UnknownCluster("x".into())));
        for bad in [
            json!({"clusters": {"c": {"sshTarget": "-oProxyCommand=x", "remoteRoot": "/r"}}}),
            json!({"clusters": {"c": {"sshTarget": "h", "remoteRoot": "~other/runs"}}}),
            json!({"clusters": {"c": {"sshTarget": "h", "remoteRoot": "runs"}}}),
            json!({"clusters": {"c": {"sshTarget": "h", "remoteRoot": "/"}}}),
            json!({"clusters": {"c": {"sshTarget": "h", "remoteRoot": "/a/../b"}}}),
            json!({"clusters": {"c": {"remoteRoot": "/r"}}}),
            json!({"localRunsDir": "../x"}),
        ] {
            assert!(Grants::from_config(&bad, ws.path()).is_err(), "{bad}");
        }
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
    fn remote_paths_are_confined() {
        let ws = tempfile::tempdir().unwrap();
        let g = grants(ws.path());
        let p = g.profile("c").unwrap().clone();
        assert_eq!(
            g.remote_path(&p, "r1/job.slurm").unwrap(),
            "/scratch/u/runs/r1/job.slurm"
        );
        assert_eq!(
            g.remote_path(&p, "/scratch/u/runs//r1/").unwrap(),
            "/scratch/u/runs/r1"
        );
        for bad in [
            "/etc/passwd",
            "/scratch/u/runs2",
            "r1/../../x",
            "~/x",
            "/scratch/u/runs/./x",
            "a\nb",
        ] {
            assert!(g.remote_path(&p, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn home_roots_expand_on_the_remote_side() {
        let ws = tempfile::tempdir().unwrap();
        let g = Grants::from_config(
            &json!({"clusters": {"h": {"sshTarget": "login", "remoteRoot": "~/runs"}}}),
            ws.path(),
        )
        .unwrap();
        let p = g.profile("h").unwrap().clone();
        assert_eq!(g.remote_path(&p, "r1/x").unwrap(), "~/runs/r1/x");
        assert_eq!(g.remote_path(&p, "~/runs/r1").unwrap(), "~/runs/r1");
        for bad in ["~/other", "~root/runs", "/home/u/runs", "~/runs/../x"] {
            assert!(g.remote_path(&p, bad).is_err(), "{bad}");
        }
        assert_eq!(sftp_path("~/runs/r1/x"), "runs/r1/x");
        assert_eq!(sftp_path("/abs/x"), "/abs/x");
        let cmd = g
            .exec_command(
                &p,
                "tail",
                &["-n".into(), "5".into(), "--".into(), "x.out".into()],
                Some("~/runs/r1"),
            )
            .unwrap();
        assert_eq!(cmd, "cd -- \"$HOME\"/runs/r1 && exec tail -n 5 -- x.out");
        let cmd = g.exec_command(&p, "squeue", &[], None).unwrap();
        assert!(
            cmd.starts_with("{ cd -- \"$HOME\"/runs 2>/dev/null || { mkdir -p -- \"$HOME\"/runs"),
            "{cmd}"
        );
    }

    #[test]
    fn exec_commands_are_checked_and_quoted() {
        let ws = tempfile::tempdir().unwrap();
        let g = grants(ws.path());
        let p = g.profile("c").unwrap().clone();
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cmd = g
            .exec_command(
                &p,
                "sbatch",
                &args(&["--parsable", "--job-name=a b", "job.slurm"]),
                Some("r1"),
            )
            .unwrap();
        assert_eq!(
            cmd,
            "cd -- /scratch/u/runs/r1 && exec sbatch --parsable '--job-name=a b' job.slurm"
        );
        let cmd = g
            .exec_command(&p, "squeue", &args(&["-o", "%i|%T"]), None)
            .unwrap();
        assert!(cmd.ends_with("exec squeue -o '%i|%T'"), "{cmd}");
        for (prog, a) in [
            ("bash", vec!["-c", "id"]),
            ("tail", vec!["/etc/passwd"]),
            ("tail", vec!["../../.ssh/id_rsa"]),
            ("tail", vec!["~/.ssh/id_rsa"]),
            ("sbatch", vec!["--output=/tmp/x", "job.slurm"]),
            ("sbatch", vec!["-o/tmp/x", "job.slurm"]),
            ("sbatch", vec!["--chdir=/home/u", "job.slurm"]),
            ("sbatch", vec!["a\nb"]),
        ] {
            assert!(
                g.exec_command(&p, prog, &args(&a), None).is_err(),
                "{prog} {a:?}"
            );
        }
        assert!(g.exec_command(&p, "tail", &[], Some("/etc")).is_err());
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
