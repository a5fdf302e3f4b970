//! What the operator grants, and the one checkpoint every guest request
//! passes before any side effect.
//!
//! Semantics (deny by default, fail closed):
//! - Only profiles in the operator's config exist; any other label is
//!   `unknown-cluster`, and an empty config grants nothing.
//! - Remote paths must be the profile's `remoteRoot` or below it, written
//!   without `.`/`..` segments and without `~`.
//! - Remote commands are a program from [`ALLOWED_PROGRAMS`] plus arguments;
//!   an argument that names a path (contains `/`, starts with `~`, is `..`,
//!   or is one glued to a short option: `-D..`, `-o../x`) obeys the remote
//!   path rule, and every command runs with its working directory inside
//!   `remoteRoot`, so relative paths resolve there too. SLURM commands'
//!   identifiers and options are checked per program ([`crate::slurm_args`]):
//!   job ids only, no option that widens `scancel`, `sbatch`'s script last,
//!   right after `--`.
//! - Local paths are relative to the workspace and must resolve inside it by
//!   realpath (symlinks followed for sources; never written through for
//!   destinations). The run store is confined to `localRunsDir`.
//!
//! The host reads `sshTarget` and `remoteRoot` from the config itself rather
//! than trusting the guest's validation: policy code that is wrong or hostile
//! still cannot widen what is granted here.

use crate::local_fs::Base;
use crate::local_paths::{relative_clean, resolved_place};
use crate::ssh::quote_word;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// The workspace, opened once: every local read and write for the guest
    /// starts from this handle ([`crate::local_fs`]).
    pub base: Arc<Base>,
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
                    // `a//b` is `a/b` to the cluster but not to a text
                    // comparison with what it resolves to.
                    && !root.contains("//")
                    && !root.chars().any(char::is_control);
                if !ok {
                    return Err(GrantError(format!(
                        "clusters.{label}.remoteRoot {remote_root:?} must be an absolute path or ~/dir, without '.', '..' or empty ('//') segments (and not / itself)"
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
        let base = Base::open(&workspace)
            .map_err(|e| GrantError(format!("workspace {}: {e}", workspace.display())))?;
        Ok(Grants {
            base: Arc::new(base),
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
            for value in path_parts(arg) {
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
        // Program-specific rules last, so a path outside the root is
        // reported as such whatever the program.
        crate::slurm_args::check(program, args).map_err(Refusal::Denied)?;
        let cwd = cwd.map(|dir| self.remote_path(profile, dir)).transpose()?;
        // The paths' text is checked above; what they are is decided on the cluster.
        crate::remote_confine::command(profile, program, args, cwd.as_deref())
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

/// The parts of an argument that could be read as a path: the whole word,
/// an option's `=value` (else the text from its first `/`: `-o/x`), and, for a
/// single-dash word, every value a glued short option could take: after
/// `-` and a run of option letters, the rest (`-D..`, `-o../x`, `-D~`, and
/// `-hD..`, where `-h` may be a flag). Long options (`--x`) take values only
/// after `=` or as the next word, which is checked as a word of its own.
fn path_parts(arg: &str) -> Vec<&str> {
    let mut values = Vec::new();
    if let Some(short) = arg.strip_prefix('-').filter(|s| !s.starts_with('-')) {
        for (i, c) in short.char_indices() {
            if !c.is_ascii_alphanumeric() {
                break;
            }
            values.extend(short.get(i + c.len_utf8()..));
        }
    }
    if arg.starts_with('-') {
        values.extend(match arg.split_once('=') {
            Some((_, v)) => Some(v),
            None => arg.find('/').and_then(|i| arg.get(i..)),
        });
    } else {
        values.push(arg);
    }
    values.retain(|v| v.contains('/') || v.starts_with('~') || *v == "..");
    values
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
            json!({"clusters": {"c": {"sshTarget": "h", "remoteRoot": "/a//b"}}}),
            json!({"clusters": {"c": {"remoteRoot": "/r"}}}),
            json!({"localRunsDir": "../x"}),
        ] {
            assert!(Grants::from_config(&bad, ws.path()).is_err(), "{bad}");
        }
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
        assert!(
            cmd.starts_with(&crate::remote_confine::with_root_check(
                "\"$HOME\"/runs",
                &(crate::remote_confine::enter_root("\"$HOME\"/runs")
                    + " cd -P -- \"$HOME\"/runs/r1 && ")
            )),
            "{cmd}"
        );
        assert!(cmd.ends_with(" cs \"$cs_r\" tail file 1048577 . 1 x.out -n 5;; *) printf '%s\\n' 'cluster-slurm-confine: cwd' >&2; exit 90;; esac"), "{cmd}");
        let cmd = g.exec_command(&p, "squeue", &[], None).unwrap();
        assert!(
            cmd.starts_with(&crate::remote_confine::with_root_check(
                "\"$HOME\"/runs",
                &(crate::remote_confine::enter_root("\"$HOME\"/runs") + " cd -P -- \"$cs_r/\" && ")
            )),
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
                &args(&["--parsable", "--job-name=a b", "--", "job.slurm"]),
                Some("r1"),
            )
            .unwrap();
        assert_eq!(
            cmd,
            crate::remote_confine::with_root_check(
                "/scratch/u/runs",
                &(crate::remote_confine::enter_root("/scratch/u/runs")
                    + " cd -P -- /scratch/u/runs/r1 && cs_h=$(cs_pwd; printf x) && cs_h=${cs_h%?x} && case $cs_h in \"$cs_r\"|\"$cs_r\"/*) exec sbatch --parsable '--job-name=a b' -- job.slurm;; *) printf '%s\\n' 'cluster-slurm-confine: cwd' >&2; exit 90;; esac")
            )
        );
        let cmd = g
            .exec_command(&p, "squeue", &args(&["-o", "%i|%T"]), None)
            .unwrap();
        assert!(cmd.contains(" cd -P -- \"$cs_r/\" && cs_h=$(cs_pwd; printf x) && cs_h=${cs_h%?x} && case $cs_h in \"$cs_r\"|\"$cs_r\"/*) exec squeue -o '%i|%T';; "), "{cmd}");
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
        // Glued short-option values (attack review of issue 12): `-D..`
        // was read by the path rule as no path at all.
        // Negative control (run once): with the short-option suffixes
        // removed from `path_parts`, the test failed at its first case:
        // `exec sbatch -D.. -- job.slurm` was built for the transport.
        for (a, says) in [
            (&["-D..", "--", "job.slurm"][..], "'..' path segments"),
            (&["-D~", "--", "job.slurm"], "'~' paths"),
            (&["-D~/x", "--", "job.slurm"], "'~' paths"),
            (&["-o../x", "--", "job.slurm"], "'..' path segments"),
            (&["-o..", "--", "job.slurm"], "'..' path segments"),
            (&["-hD..", "--", "job.slurm"], "'..' path segments"),
            (&["-D/etc", "--", "job.slurm"], "outside remoteRoot"),
            (&["-D", "..", "--", "job.slurm"], "'..' path segments"),
            (&["--chdir", "~", "--", "job.slurm"], "'~' paths"),
            (&["-o~/x", "--", "job.slurm"], "'~' paths"),
            (&["-x~", "--", "job.slurm"], "'~' paths"),
        ] {
            match g.exec_command(&p, "sbatch", &args(a), Some("r1")) {
                Err(Refusal::Denied(m)) => assert!(m.contains(says), "{a:?}: {m}"),
                other => panic!("{a:?}: {other:?}"),
            }
        }
        for (prog, a) in [
            (
                "sbatch",
                &["--parsable", "-D/scratch/u/runs/r1", "--", "job.slurm"][..],
            ),
            ("sbatch", &["--parsable", "-D", "r1/sub", "--", "job.slurm"]),
            ("squeue", &["-h", "-t", "all", "-j", "12", "-o", "%i|%T|%M"]),
            ("squeue", &["--format=%i", "-o%i|%Z"]),
            (
                "sacct",
                &["-n", "-P", "-X", "-S", "2026-12-02", "-o", "JobID,WorkDir"],
            ),
            ("ls", &["-lnAb", "--time-style=+%s", "--", "."]),
            ("tail", &["-n", "200", "--", "slurm-1.out"]),
            // Only the first '=' splits: `b=/etc` is relative.
            ("sinfo", &["--a=b=/etc"]),
        ] {
            assert!(
                g.exec_command(&p, prog, &args(a), Some("r1")).is_ok(),
                "{prog} {a:?}"
            );
        }
        assert!(g.exec_command(&p, "tail", &[], Some("/etc")).is_err());
    }

    /// Identifiers and options the guest passes to SLURM, checked here
    /// whatever the guest did: what an edited ledger or scriptName produced
    /// before (issue 12) is refused with a message naming it.
    #[test]
    fn slurm_identifiers_and_options_are_checked() {
        let ws = tempfile::tempdir().unwrap();
        let g = grants(ws.path());
        let p = g.profile("c").unwrap().clone();
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = |prog: &str, a: &[&str]| g.exec_command(&p, prog, &args(a), Some("r1"));
        let cmd = ok("scancel", &["--", "12", "13_2"]).unwrap();
        assert!(cmd.contains(") exec scancel -- 12 13_2;;"), "{cmd}");
        assert!(ok("squeue", &["-h", "-t", "all", "-j", "12,13", "-o", "%i"]).is_ok());
        assert!(ok("sacct", &["-n", "-P", "-X", "-j", "12", "-o", "JobID"]).is_ok());
        assert!(ok("squeue", &["--me", "-h", "-o", "%i"]).is_ok());
        assert!(ok("sbatch", &["--parsable", "--", "job.slurm"]).is_ok());
        assert!(ok("sbatch", &["--test-only", "--"]).is_ok());
        // Negative control (run once): with the `slurm_args::check` call
        // removed from `exec_command`, the test failed at the first case:
        // `exec scancel --me` was built for the transport.
        for (prog, a, says) in [
            ("scancel", &["--me"][..], "\"--me\" is not allowed"),
            ("scancel", &["--version"], "\"--version\" is not allowed"),
            ("scancel", &["-u", "someone", "12"], "\"-u\" is not allowed"),
            ("scancel", &["--account=a", "12"], "is not allowed"),
            ("scancel", &["--", "--me"], "\"--me\" is not a SLURM job id"),
            ("scancel", &["12;id"], "is not a SLURM job id"),
            ("squeue", &["-j", "--me"], "is not a list of SLURM job ids"),
            ("sacct", &["--jobs=1,x"], "is not a list of SLURM job ids"),
            ("sbatch", &["--parsable", "-t999"], "needs \"--\""),
            ("sbatch", &["--parsable", "job.slurm"], "needs \"--\""),
            ("sbatch", &["--", "job.slurm", "x"], "one script"),
            ("sbatch", &["--parsable", "--", "-t999"], "starts with '-'"),
            ("sbatch", &["-J", "--", "--wrap=id"], "starts with '-'"),
            (
                "sbatch",
                &["--parsable", "foo", "--", "job.slurm"],
                "could be read as the script",
            ),
            (
                "squeue",
                &["-o", "--", "-j", "1,--me"],
                "is not a list of SLURM job ids",
            ),
            ("scontrol", &["update", "jobid=1"], "only `scontrol"),
        ] {
            match ok(prog, a) {
                Err(Refusal::Denied(m)) => assert!(m.contains(says), "{prog} {a:?}: {m}"),
                other => panic!("{prog} {a:?}: {other:?}"),
            }
        }
    }
}
