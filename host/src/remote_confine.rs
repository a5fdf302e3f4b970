//! Remote confinement by what paths *are*, not how they read.
//!
//! [`Grants::exec_command`](crate::grants::Grants::exec_command) checks a
//! remote path's text; but a job can plant `ln -s /etc/passwd p`, `ln -s ~/.ssh
//! s`, `ln -s /dev/zero z` or a FIFO in its run directory, and `tail`, `ls`,
//! `cd` follow them. So the command line this module builds decides on the
//! cluster, in the same command that uses the path (no swap can come between
//! a separate check and the use):
//!
//! - the profile's root is resolved physically (`cd -P`), and so is the
//!   working directory, which must be the root or below it;
//! - a path-reading program (`tail`, `head`, `ls`, `stat`, `sha256sum`) and
//!   `mkdir` take exactly one path operand, after `--`, and only the options
//!   listed in [`shape`]. The operand is walked one component at a time with
//!   `cd -P`, each step checked to be under the root; its last component must
//!   not be a symlink; `tail`, `head` and `sha256sum` read regular files only,
//!   opened once by the shell and checked to be the same file (`-ef`) as the
//!   name it opened, then read from that descriptor;
//! - every such read is bounded on the cluster: its output passes through
//!   `head -c` ([`OUTPUT_CAP`] + 1, so the host still sees the cut), and it
//!   runs under coreutils `timeout` when the login node has it.
//!
//! A refusal on the cluster prints `cluster-slurm-confine: REASON` on stderr
//! and exits [`REFUSED_EXIT`]; [`refusal`] turns that into the host's
//! `denied` message naming the path and why. Every other program only gets
//! the working-directory check.
//!
//! The root's own path is trusted as the operator wrote it (it may well pass
//! through a site's symlinks, e.g. `/scratch -> /lustre/scratch`).

use crate::exec::{MAX_TIMEOUT, OUTPUT_CAP};
use crate::grants::{ProfileGrant, Refusal, shell_path};
use crate::ssh::{quote_command, quote_word};
use std::time::Duration;

/// The exit status of a refusal on the cluster. None of the wrapped programs
/// (coreutils: 0, 1, 2), `timeout` (124-127) or the shell (126, 127, 128+n)
/// uses it; [`refusal`] also requires the marker line, so a program's own
/// status can never be taken for a refusal by itself.
pub const REFUSED_EXIT: i32 = 90;

/// The line a refusal prints on stderr, followed by one reason word.
pub const MARKER: &str = "cluster-slurm-confine: ";

/// Cluster-side time bound of one read (`timeout`). A tail, head, listing or
/// stat of a checked regular file or directory needs milliseconds; this only
/// stops what should never happen from living on the login node. Hashing may
/// read a large file, so it gets the host's longest exec timeout.
pub const READ_BOUND: Duration = Duration::from_secs(30);

/// How the program uses its one operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reads the file's bytes: a regular file, read through a checked descriptor.
    File,
    /// `ls`: a directory is entered (and checked) and listed as `.`.
    List,
    /// `stat`: describes the entry itself, never its target.
    Entry,
    /// `mkdir`, creating missing parents when `parents`.
    Mkdir { parents: bool },
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::List => "list",
            Kind::Entry => "entry",
            Kind::Mkdir { parents: false } => "mkdir",
            Kind::Mkdir { parents: true } => "mkdirp",
        }
    }
}

/// One confined program call, as the cluster-side script takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    kind: Kind,
    options: Vec<String>,
    /// The operand is relative to the root (it was written absolute), not to
    /// the working directory.
    from_root: bool,
    /// The operand's components, without empty and `.` segments; none means
    /// the starting directory itself.
    parts: Vec<String>,
    bound: Duration,
}

/// The cluster-side script: POSIX sh, run as `/bin/sh -c SCRIPT cs ROOT PROG
/// KIND CAP START N PART... OPTION...`, started in the checked working
/// directory. Constant text: every variable part arrives as an argument.
const SCRIPT: &str = include_str!("../../openclaw/lib/remote-confine.sh");

/// `cs_root_ok PATH`: no component of the absolute `PATH` is a symlink in a
/// directory the cluster user can write or owns (an owner can make it
/// writable again at any time). The user owns the root's parent
/// (their home, for `~/cluster-runs`), so a job could otherwise rename the
/// root and put `ln -s / cluster-runs` in its place: every check that
/// resolves the root (`cd -P`, SFTP realpath) would then take `/` for it.
/// A site's own links (`/scratch -> /gpfs/scratch`, in directories only
/// root can write) pass. The same line defines `cs_root_real PATH`, which
/// prints the root as it resolves, walked from `/` one component at a time
/// under the same rule (status 2 on a link a job could replace), so that a
/// command uses the root it checked, not one a job exchanged for a link
/// after the check ([`enter_root`]). One line of POSIX sh, shared by both
/// hosts and by every command that resolves the root.
pub const ROOT_CHECK: &str = include_str!("../../openclaw/lib/remote-root.sh");

/// `ROOT_CHECK`, then the check of the shell word `root`, failing with
/// `fail` (a shell command list).
pub fn root_check(root: &str, fail: &str) -> String {
    format!(
        "{}; cs_root_ok {root} || {{ {fail}; }};",
        ROOT_CHECK.trim_end()
    )
}

fn denied(message: impl Into<String>) -> Refusal {
    Refusal::Denied(message.into())
}

fn is_count(value: &str, plus: bool) -> bool {
    let digits = if plus {
        value.strip_prefix('+').unwrap_or(value)
    } else {
        value
    };
    !digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The options each confined program accepts, and how it uses its operand.
/// Anything else is refused: `tail -f`, `ls -L`/`-H`/`-R`, `stat -L` and
/// `sha256sum -c` (which reads the files a list names) would each undo the
/// confinement.
fn shape(program: &str, options: &[String]) -> Result<Option<Kind>, Refusal> {
    let allowed = match program {
        "tail" => "-n N, -c N or -c +N",
        "head" => "-n N, -c N",
        "ls" => "-1AabdFhilnprStU flags, --time-style=..., --quoting-style=...",
        "stat" => "-c FORMAT, --format=..., --printf=..., -t",
        "sha256sum" => "-b, -t, --tag, -z",
        "mkdir" => "-p",
        _ => return Ok(None),
    };
    let bad = |opt: &str| {
        denied(format!(
            "{program} option {opt:?} is not allowed here (allowed: {allowed}; the one path operand goes after --)"
        ))
    };
    let mut kind = match program {
        "tail" | "head" | "sha256sum" => Kind::File,
        "ls" => Kind::List,
        "stat" => Kind::Entry,
        _ => Kind::Mkdir { parents: false },
    };
    let mut it = options.iter();
    while let Some(opt) = it.next() {
        let ok = match (program, opt.as_str()) {
            ("tail" | "head", "-n" | "-c") => {
                let value = it.next().ok_or_else(|| bad(opt))?;
                if !is_count(value, program == "tail") {
                    return Err(bad(&format!("{opt} {value}")));
                }
                true
            }
            ("stat", "-c") => it.next().is_some(),
            ("stat", o) => o == "-t" || o.starts_with("--format=") || o.starts_with("--printf="),
            ("sha256sum", o) => matches!(o, "-b" | "-t" | "--tag" | "-z"),
            ("ls", o) => {
                o.starts_with("--time-style=")
                    || o.starts_with("--quoting-style=")
                    || o.strip_prefix('-').is_some_and(|flags| {
                        !flags.is_empty() && flags.chars().all(|c| "1AabdFhilnprStU".contains(c))
                    })
            }
            ("mkdir", "-p") => {
                kind = Kind::Mkdir { parents: true };
                true
            }
            _ => false,
        };
        if !ok {
            return Err(bad(opt));
        }
    }
    Ok(Some(kind))
}

/// The plan for a confined program, or None for one that only needs the
/// working-directory check (the SLURM commands).
fn plan(profile: &ProfileGrant, program: &str, args: &[String]) -> Result<Option<Plan>, Refusal> {
    let split = args.iter().position(|a| a == "--");
    let options = split.map_or(args, |i| args.get(..i).unwrap_or_default());
    let Some(kind) = shape(program, options)? else {
        return Ok(None);
    };
    let operands = split.map_or(&[][..], |i| args.get(i + 1..).unwrap_or_default());
    let [operand] = operands else {
        return Err(denied(format!(
            "{program} takes exactly one path operand, after -- (got {})",
            operands.len()
        )));
    };
    let root = profile.remote_root.as_str();
    let (from_root, rest) = match operand.strip_prefix(root) {
        Some(rest) if operand.starts_with('/') && (rest.is_empty() || rest.starts_with('/')) => {
            (true, rest)
        }
        _ if operand.starts_with('/') || operand.starts_with('~') => {
            return Err(denied(format!(
                "remote path {operand:?} is outside remoteRoot {root} of profile {:?}",
                profile.label
            )));
        }
        _ => (false, operand.as_str()),
    };
    let mut parts = Vec::new();
    for seg in rest.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                return Err(denied(format!(
                    "argument {operand:?} may not contain '..' path segments"
                )));
            }
            s => parts.push(s.to_string()),
        }
    }
    let bound = if program == "sha256sum" {
        MAX_TIMEOUT
    } else {
        READ_BOUND
    };
    Ok(Some(Plan {
        kind,
        options: options.to_vec(),
        from_root,
        parts,
        bound,
    }))
}

/// The one command line for a checked request: `cwd` is the checked remote
/// working directory, or None for the root (created when missing, as on a
/// fresh account). Refuses a confined program's request of the wrong shape.
pub fn command(
    profile: &ProfileGrant,
    program: &str,
    args: &[String],
    cwd: Option<&str>,
) -> Result<String, Refusal> {
    let run = match plan(profile, program, args)? {
        None => format!("exec {}", quote_command(program, args)),
        Some(plan) => confined_run(program, &plan),
    };
    let root = shell_path(&profile.remote_root);
    let dir = match cwd {
        Some(dir) => shell_path(dir),
        None => "\"$cs_r/\"".to_string(),
    };
    Ok(format!(
        "{} {} cd -P -- {dir} && cs_h=$(cs_pwd; printf x) && cs_h=${{cs_h%?x}} && case $cs_h in \"$cs_r\"|\"$cs_r\"/*) {run};; *) printf '%s\\n' '{MARKER}cwd' >&2; exit {REFUSED_EXIT};; esac",
        exec_root_check(&root),
        enter_root(&root)
    ))
}

/// `$cs_r`: the root (its shell word `root`) as it resolves, walked from
/// `/` in this very command (`cs_root_real`, made where missing): a root
/// resolved with `cd -P` after its check could be a link a job exchanged
/// for it in between. A link in a directory the user can write or owns is this
/// module's refusal; a root that cannot be made or entered exits 1.
pub fn enter_root(root: &str) -> String {
    format!(
        "cs_r=$(cs_root_real {root}) || {{ [ $? = 2 ] && {{ printf '%s\\n' '{MARKER}rootlink' >&2; exit {REFUSED_EXIT}; }}; printf '%s\\n' 'remoteRoot cannot be made or entered on the cluster' >&2; exit 1; }}; cs_r=${{cs_r%?x}}; cs_r=${{cs_r%/}};"
    )
}

/// The root check every exec command line starts with (`root`: the root's
/// shell word): a refusal is this module's exit code and marker.
pub fn exec_root_check(root: &str) -> String {
    root_check(
        root,
        &format!("printf '%s\\n' '{MARKER}rootlink' >&2; exit {REFUSED_EXIT}"),
    )
}

/// Tests: `rest` as the command line starts it, after the root check.
#[cfg(test)]
pub fn with_root_check(root: &str, rest: &str) -> String {
    format!("{} {rest}", exec_root_check(root))
}

/// The refusal when `remoteRoot` passes through a link a job could replace.
pub fn root_link_refusal(root: &str) -> String {
    format!(
        "remoteRoot {root} passes through a symbolic link in a directory the cluster user can write: a job could point it anywhere, so nothing was done there. Set remoteRoot to the real path it resolves to (or replace the link by the directory)"
    )
}

fn confined_run(program: &str, plan: &Plan) -> String {
    let secs = plan.bound.as_secs().max(1);
    let mut words = vec![
        "cs".to_string(),
        program.to_string(),
        plan.kind.word().to_string(),
        (OUTPUT_CAP + 1).to_string(),
        if plan.from_root { "r" } else { "." }.to_string(),
        plan.parts.len().to_string(),
    ];
    words.extend(plan.parts.iter().cloned());
    words.extend(plan.options.iter().cloned());
    let tail: Vec<String> = words.iter().map(|w| quote_word(w)).collect();
    let (first, rest) = tail
        .split_first()
        .map_or(("cs", &[][..]), |(f, r)| (f.as_str(), r));
    format!(
        "if command -v timeout >/dev/null 2>&1; then set -- timeout -k 5 {secs}; else set --; fi; exec \"$@\" /bin/sh -c {} {first} \"$cs_r\" {}",
        quote_word(SCRIPT),
        rest.join(" ")
    )
}

/// The host's refusal for a command's answer, when the cluster refused it:
/// exit [`REFUSED_EXIT`] and a [`MARKER`] line on stderr.
pub fn refusal(
    profile: &ProfileGrant,
    program: &str,
    args: &[String],
    cwd: Option<&str>,
    exit_code: Option<i32>,
    stderr: &[u8],
) -> Option<String> {
    if exit_code != Some(REFUSED_EXIT) {
        return None;
    }
    let text = String::from_utf8_lossy(stderr);
    let reason = text.lines().find_map(|l| l.strip_prefix(MARKER))?.trim();
    let root = &profile.remote_root;
    let operand = args
        .iter()
        .position(|a| a == "--")
        .and_then(|i| args.get(i + 1))
        .map_or(".", String::as_str);
    let place = match cwd {
        Some(dir) if !operand.starts_with('/') => format!("{dir}/{operand}"),
        _ if !operand.starts_with('/') => format!("{root}/{operand}"),
        _ => operand.to_string(),
    };
    Some(match reason {
        "rootlink" => root_link_refusal(root),
        "cwd" => format!(
            "remote working directory {:?} resolves outside remoteRoot {root} on the cluster (a symlink on its way leads out of it)",
            cwd.unwrap_or(root)
        ),
        "outside" => format!(
            "remote path {place:?} resolves outside remoteRoot {root} on the cluster (a directory on its way is a symlink leading out of it)"
        ),
        "symlink" => format!(
            "remote path {place:?} is a symlink: {program} never follows one on the cluster (it could lead outside remoteRoot {root})"
        ),
        "notfile" => format!(
            "remote path {place:?} is not a regular file (a directory, device, FIFO or socket): {program} reads regular files only"
        ),
        "changed" => format!(
            "remote path {place:?} was replaced while {program} opened it (by a symlink or another file); nothing was read"
        ),
        other => format!("remote path {place:?} refused on the cluster ({other})"),
    })
}

#[cfg(test)]
mod tests;
