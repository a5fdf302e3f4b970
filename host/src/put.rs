//! An upload's writes, made on the cluster by one command that decides
//! where it writes in the act of writing.
//!
//! SFTP opens by name and follows links, and has no `openat` and no
//! `O_NOFOLLOW`: checking a path before (and after) its open leaves an
//! instant in which a job racing the transfer can swap a directory for a
//! link out of the root, and the write lands there. So the bytes go over
//! exec instead, to a command that, for the file: walks from the resolved
//! root down the file's directory one component at a time with `cd -P`
//! (making what is missing with `mkdir` of one name in the directory it is
//! in), checking after each step that `/bin/pwd -P` is inside the root; the
//! shell's working directory is then that real directory, whatever is
//! swapped above it. There it looks at `./NAME` (a link, a directory or a
//! device is refused), makes a new file with `dd conv=excl
//! oflag=nofollow` (a name is replaced by unlinking it first, so a hard
//! link's other names are never written), opens it as descriptor 4 and
//! checks the descriptor is the file at `./NAME` with one link and the
//! expected size (`stat` of both): from then on every write and the mode
//! go through the descriptor (`/proc/self/fd/4`), and nothing a job does to
//! names can redirect them. A resumed file is checked the same way before
//! its tail is written.
//!
//! Needs GNU coreutils (`dd`, `stat`) and Linux's `/proc/self/fd` on the
//! login node; another system fails the upload with its own message.

use crate::ssh::{Connection, SshError, quote_word};
use std::time::Duration;

/// How long an upload may go without the channel taking more of it.
const IDLE: Duration = Duration::from_secs(120);

/// The exit code of a command that found remoteRoot passing through a
/// replaceable link.
pub(crate) const ROOT_REFUSED: i32 = 97;
/// The exit code of a command that could not make or enter remoteRoot.
pub(crate) const ROOT_MISSING: i32 = 96;

/// The shell functions `w` (walk to a directory), `p` (put a file) and `f`
/// (check names), with their statuses: one file for both hosts
/// (`openclaw/lib/remote-write.sh`, which documents them; its `#` lines are
/// left out, see [`functions`]).
const FUNCTIONS_FILE: &str = include_str!("../../openclaw/lib/remote-write.sh");

/// [`FUNCTIONS_FILE`] without its comments, on one line (with a test's
/// shell hooks in place of its `: NAME;` points, in a test build).
fn functions() -> String {
    let text: Vec<&str> = FUNCTIONS_FILE
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    crate::hooks::shell(&text.join(" ")).into_owned()
}

/// Write everything `source` gives to `remote` (a path below `root`, the
/// profile's `remoteRoot`, both SFTP form), from byte `offset` on: 0 makes
/// a new file (replacing a regular file at the name), more resumes the
/// file there, which must be exactly `offset` bytes long. `mode` (its permission bits) is set on the
/// file; without execute bits the cluster's umask applies, as for a file
/// SFTP makes. Each piece read goes to `seen` before it is sent. Returns
/// the bytes sent.
pub async fn put(
    conn: &Connection,
    root: &str,
    remote: &str,
    offset: u64,
    mode: u32,
    source: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
    seen: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<u64, SshError> {
    let (dir, name) = split(root, remote)?;
    let nonce = crate::fetch::nonce();
    let mode_word = if mode & 0o111 != 0 {
        format!("{:o}", mode & 0o777)
    } else {
        format!("u{:o}", mode & 0o777)
    };
    let command = format!(
        "{} p {} {} {offset} {mode_word}",
        prelude(root, &nonce),
        quote_word(&dir),
        quote_word(name),
    );
    let mut sent = 0u64;
    let mut count = |piece: &[u8]| {
        sent += piece.len() as u64;
        seen(piece);
    };
    crate::hooks::at(crate::hooks::Point::BeforeRemoteOpen(remote));
    let out = conn
        .exec_from(&command, source, &mut count, IDLE, 64 << 10)
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = Said::read(&stderr, &nonce);
    let shown = crate::confine::shown(remote);
    let denied = |what: &str| {
        SshError::Denied(format!(
            "remote path {shown} {what}; nothing was written through it"
        ))
    };
    match out.exit_code {
        Some(0) => match said.wrote {
            Some(size) if size == offset + sent => Ok(sent),
            Some(size) => Err(SshError::Remote(format!(
                "uploading {shown}: the cluster holds {size} bytes after {sent} were sent from byte {offset} on"
            ))),
            None => Err(SshError::Remote(format!(
                "uploading {shown}: the cluster did not say what it wrote ({})",
                said.rest()
            ))),
        },
        Some(code @ (ROOT_REFUSED | ROOT_MISSING | 3 | 4 | 6)) => Err(walk_failed(
            code,
            root,
            &format!("the directory of {shown}"),
            &said,
        )),
        Some(5) => Err(denied(
            "is a symbolic link on the cluster; an upload never writes through one (remove it there, or upload elsewhere)",
        )),
        Some(10) => Err(SshError::Remote(format!(
            "{shown} exists on the cluster and is a directory"
        ))),
        Some(11) => Err(denied(
            "is not a regular file on the cluster (a device, FIFO or socket); an upload only replaces regular files",
        )),
        Some(12) if said.rest().contains("File exists") => Err(denied(
            "had something appear at its name on the cluster while the upload was writing it (a link or file a job planted?)",
        )),
        Some(12) => Err(SshError::Remote(format!(
            "uploading {shown}: the cluster could not create it ({})",
            said.rest()
        ))),
        Some(13) => Err(denied(
            "changed on the cluster between the look and the open (a link or a hard link swapped in, or the file resized?)",
        )),
        Some(14) => Err(SshError::Remote(format!(
            "uploading {shown}: writing it on the cluster failed (a full disk or quota?): {}",
            said.rest()
        ))),
        Some(15) => Err(SshError::Remote(format!(
            "uploading {shown}: its mode could not be set on the cluster: {}",
            said.rest()
        ))),
        Some(code) => Err(SshError::Remote(format!(
            "uploading {shown}: the command on the cluster failed (exit {code}): {}",
            said.rest()
        ))),
        None => Err(SshError::Remote(format!(
            "uploading {shown}: the command on the cluster ended without an exit status ({:?}): {}",
            out.exit_signal,
            said.rest()
        ))),
    }
}

/// Make every directory of `dirs` (paths below `root`, SFTP form, each
/// after its parent) inside the root, each reached as [`put`] reaches a
/// file's directory: nothing is made through a link that leads out. One
/// command for as many as fit in one.
pub async fn make_dirs(conn: &Connection, root: &str, dirs: &[&str]) -> Result<(), SshError> {
    let nonce = crate::fetch::nonce();
    let start = prelude(root, &nonce);
    let mut command = start.clone();
    let mut pending = false;
    for (i, dir) in dirs.iter().enumerate() {
        let call = format!(" ( w {} ) || exit $?;", quote_word(&relative(root, dir)?));
        command.push_str(&call);
        pending = true;
        let next_len = dirs.get(i + 1).map_or(0, |d| quote_word(d).len() + 24);
        if i + 1 == dirs.len() || command.len() + next_len > crate::verify::COMMAND_BYTES {
            run_dirs(conn, root, &nonce, &command).await?;
            command = start.clone();
            pending = false;
        }
    }
    if pending {
        run_dirs(conn, root, &nonce, &command).await?;
    }
    Ok(())
}

async fn run_dirs(
    conn: &Connection,
    root: &str,
    nonce: &str,
    command: &str,
) -> Result<(), SshError> {
    let out = conn
        .exec(command, None, Duration::from_secs(300), 64 << 10)
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = Said::read(&stderr, nonce);
    let shown = crate::confine::shown(root);
    match out.exit_code {
        Some(0) => Ok(()),
        Some(code @ (ROOT_REFUSED | ROOT_MISSING | 3 | 4 | 6)) => Err(walk_failed(
            code,
            root,
            &format!("an upload's directory below {shown}"),
            &said,
        )),
        code => Err(SshError::Remote(format!(
            "making an upload's directories below {shown} failed on the cluster ({code:?}): {}",
            said.rest()
        ))),
    }
}

/// One directory's part of a bundle: the plain names of its files (in
/// the archive, whose length it is, as in the command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Relative to the root (`""`: the root itself).
    pub dir: String,
    pub names: Vec<String>,
    /// The archive's bytes on stdin.
    pub len: usize,
}

/// The command that unpacks `segments`, whose archives follow one another
/// on its stdin: each in its own directory, entered by `w` (so `tar`,
/// which follows links in the directories of a member's path, only ever
/// sees plain names in a checked working directory), after `f` found no
/// link or device at its names; then each file is hashed there, after the
/// line `$m dir INDEX` on stdout. The first failure ends the command: its
/// status is the failing step's ([`unpacked`] reads it).
pub fn unpack_command(root: &str, nonce: &str, segments: &[Segment]) -> String {
    let mut command = prelude(root, nonce);
    for (i, segment) in segments.iter().enumerate() {
        command.push_str(&segment_text(i, segment));
    }
    command
}

/// The part of [`unpack_command`] one segment adds.
pub fn segment_text(index: usize, segment: &Segment) -> String {
    let words: Vec<String> = segment
        .names
        .iter()
        .map(|n| crate::verify::path_word(n))
        .collect();
    let plain = segment.names.iter().all(|n| !n.contains(['\n', '\\']));
    format!(
        " ( w {} && set -- {} && f \"$@\" && {{ {} }} && head -c {} | tar -x --no-overwrite-dir -f - && printf '%s dir %s\\n' \"$m\" {index} && {{ {}; }} ) || exit $?;",
        quote_word(&segment.dir),
        words.join(" "),
        crate::hooks::shell(": before-tar;"),
        segment.len,
        crate::verify::hash_args(plain)
    )
}

/// The room a bundle's segments have in one command.
pub fn unpack_room(root: &str) -> usize {
    crate::verify::COMMAND_BYTES.saturating_sub(prelude(root, &crate::fetch::nonce()).len() + 400)
}

/// What an unpack command did: the cluster's hash of each file it wrote,
/// by (segment index, name). A link out of the root, or a link or device
/// at a file's name, fails the upload (`SshError::Denied`); any other
/// failure only leaves the files it did not hash out (sent again one by
/// one, which reports what is wrong).
pub fn unpacked(
    root: &str,
    nonce: &str,
    out: &crate::ssh::ExecResult,
) -> Result<std::collections::HashMap<(usize, String), String>, SshError> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = Said::read(&stderr, nonce);
    let refused = |what: &str| {
        SshError::Denied(format!(
            "upload below remoteRoot {}: {} {what}; nothing was written through it",
            crate::confine::shown(root),
            said.name.as_deref().unwrap_or("a file's name")
        ))
    };
    match out.exit_code {
        Some(ROOT_REFUSED) => return Err(root_refused(root)),
        Some(4) => return Err(outside(root, "an upload's directory", &said)),
        Some(5) => {
            return Err(refused(
                "is a symbolic link on the cluster; an upload never writes through one",
            ));
        }
        Some(11) => {
            return Err(refused(
                "is not a regular file on the cluster (a device, FIFO or socket)",
            ));
        }
        _ => {}
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let marker = format!("{nonce} dir ");
    let mut hashes = std::collections::HashMap::new();
    let mut at: Option<usize> = None;
    let mut text = String::new();
    let mut flush = |at: Option<usize>, text: &mut String| {
        if let Some(i) = at {
            for (name, hash) in crate::verify::parse_sha256sum(text) {
                hashes.insert((i, name), hash);
            }
        }
        text.clear();
    };
    for line in stdout.lines() {
        if let Some(index) = line.strip_prefix(&marker) {
            flush(at, &mut text);
            at = index.trim().parse().ok();
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    flush(at, &mut text);
    Ok(hashes)
}

/// Why the root's resolution or `w`'s walk to `what` (a directory, as
/// the message names it) failed, from the command's status.
fn walk_failed(code: i32, root: &str, what: &str, said: &Said) -> SshError {
    match code {
        ROOT_REFUSED => root_refused(root),
        ROOT_MISSING => root_missing(root, said),
        4 => outside(root, what, said),
        3 => SshError::Remote(format!(
            "{what}: a component cannot be entered on the cluster ({})",
            said.rest()
        )),
        _ => SshError::Remote(format!(
            "{what}: a component exists on the cluster and is not a directory, or could not be made ({})",
            said.rest()
        )),
    }
}

/// remoteRoot passes through a link a job could replace.
pub(crate) fn root_refused(root: &str) -> SshError {
    SshError::Denied(crate::remote_confine::root_link_refusal(
        &crate::confine::shown(root),
    ))
}

fn root_missing(root: &str, said: &Said) -> SshError {
    SshError::Remote(format!(
        "remoteRoot {} cannot be made or entered on the cluster ({})",
        crate::confine::shown(root),
        said.rest()
    ))
}

/// `what` resolves outside the root (where `said` says; named by the part
/// of its path that leads out, when the command said it).
pub(crate) fn outside(root: &str, what: &str, said: &Said) -> SshError {
    let what = match &said.via {
        Some(via) => {
            let path = match root.trim_end_matches('/') {
                "" => format!("/{via}"),
                "." => via.clone(),
                r => format!("{r}/{via}"),
            };
            format!("remote path {}", crate::confine::shown(&path))
        }
        None => what.to_string(),
    };
    SshError::Denied(format!(
        "{what} resolves to {} on the cluster, outside remoteRoot {} ({}): a symbolic link leads out of it; nothing was written there",
        said.outside.as_deref().unwrap_or("another place"),
        crate::confine::shown(root),
        said.root.as_deref().unwrap_or("?"),
    ))
}

/// What every command starts with: a line break on stdout and stderr (so
/// that the command's own lines start a line whatever a login shell printed
/// first), the root's check, `$r` (the root resolved, and made where
/// missing, by [`resolve_root`]), `$m` (the marker) and the functions.
pub(crate) fn prelude(root: &str, nonce: &str) -> String {
    format!(
        "printf '\\n'; printf '\\n' >&2; LC_ALL=C; export LC_ALL; unset CDPATH; {} m={nonce}; {}",
        resolve_root(root),
        functions(),
    )
}

/// Shell text that checks the root (SFTP form) and sets `$r` to what it
/// resolves to, walked from `/` one component at a time in this very
/// command (`cs_root_real` of `openclaw/lib/remote-root.sh`): in a directory the
/// cluster user can write, each component must be a real directory (a job
/// could swap it for a link at any time), missing ones are made. Exits
/// [`ROOT_REFUSED`] when the root passes through a link a job could
/// replace, [`ROOT_MISSING`] when it cannot be made or entered. A root
/// resolved once by another command (SFTP `realpath`) could be a job's
/// link by the time this command runs.
pub(crate) fn resolve_root(root: &str) -> String {
    let word = crate::confine::root_word(root);
    format!(
        "{} r=$(cs_root_real {word}); case $? in 0) ;; 2) exit {ROOT_REFUSED};; *) exit {ROOT_MISSING};; esac; r=${{r%?x}}; r=${{r%/}};",
        crate::remote_confine::root_check(&word, &format!("exit {ROOT_REFUSED}")),
    )
}

/// `remote` (below `root`) as its directory relative to the root and its
/// name.
pub(crate) fn split<'a>(root: &str, remote: &'a str) -> Result<(String, &'a str), SshError> {
    let not_below = || {
        SshError::Denied(format!(
            "remote path {} is not a file below remoteRoot {}",
            crate::confine::shown(remote),
            crate::confine::shown(root)
        ))
    };
    let rel = below(remote, root).ok_or_else(not_below)?;
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Err(not_below());
    };
    Ok((dirs.join("/"), name))
}

/// `dir` (below `root`, or the root) relative to the root.
fn relative(root: &str, dir: &str) -> Result<String, SshError> {
    below(dir, root).map(str::to_string).ok_or_else(|| {
        SshError::Denied(format!(
            "remote path {} is not below remoteRoot {}",
            crate::confine::shown(dir),
            crate::confine::shown(root)
        ))
    })
}

/// `path` relative to the root `root` (both SFTP form): `""` for the root
/// itself; None when it is not below it.
pub(crate) fn below<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let root = match root.trim_end_matches('/') {
        "" => "/",
        r => r,
    };
    let path = match path.trim_end_matches('/') {
        "" if path.starts_with('/') => "/",
        p => p,
    };
    if path == root {
        return Some("");
    }
    match root {
        "." => Some(path).filter(|p| !p.starts_with('/')),
        "/" => path.strip_prefix('/'),
        _ => path
            .strip_prefix(root)
            .and_then(|rest| rest.strip_prefix('/')),
    }
}

/// What a command said on stderr: its own lines (after the marker) and
/// everything else (the tools' messages).
#[derive(Debug, Default)]
pub(crate) struct Said {
    wrote: Option<u64>,
    outside: Option<String>,
    via: Option<String>,
    root: Option<String>,
    name: Option<String>,
    other: Vec<String>,
}

impl Said {
    pub(crate) fn read(stderr: &str, nonce: &str) -> Said {
        let mut said = Said::default();
        for line in stderr.lines() {
            // Anywhere in the line: a process of the user's can write into
            // stderr, and what it wrote last may still be on the line.
            let ours = line
                .split_once(nonce)
                .and_then(|(_, rest)| rest.strip_prefix(' '));
            if let Some(size) = ours.and_then(|o| o.strip_prefix("wrote ")) {
                said.wrote = size.trim().parse().ok();
            } else if let Some(path) = ours.and_then(|o| o.strip_prefix("outside ")) {
                said.outside = Some(path.to_string());
            } else if let Some(via) = ours.and_then(|o| o.strip_prefix("via ")) {
                said.via = Some(via.to_string());
            } else if let Some(root) = ours.and_then(|o| o.strip_prefix("root ")) {
                said.root = Some(root.to_string());
            } else if let Some(name) = ours.and_then(|o| o.strip_prefix("name ")) {
                said.name = Some(name.to_string());
            } else if !line.trim().is_empty() {
                said.other.push(line.to_string());
            }
        }
        said
    }

    /// The tools' messages, the last few.
    pub(crate) fn rest(&self) -> String {
        let from = self.other.len().saturating_sub(5);
        self.other.get(from..).unwrap_or_default().join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the two functions under the local `/bin/sh` in `dir` as the
    /// root, with `args` after the prelude's variables.
    fn sh(root: &std::path::Path, call: &str, stdin: &[u8]) -> (i32, String) {
        use std::io::Write as _;
        let script = format!(
            "{}; r={}; r=${{r%/}}; m=M; {} {call}",
            crate::remote_confine::ROOT_CHECK.trim_end(),
            quote_word(&root.display().to_string()),
            functions()
        );
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The functions on a planted tree: a new file through missing
    /// directories, a resume, a replaced file whose old name had a hard
    /// link outside, a link at the name, a directory link out of the root,
    /// one inside it, and the mode by the descriptor. Negative control
    /// (run): with the `case "$q/"` check taken out of `w`, "out/x"
    /// was written into the outside directory (status 0, not 4).
    #[test]
    fn the_shell_functions_write_only_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "victim").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink("inside", root.join("alias")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), root.join("link")).unwrap();
        std::fs::hard_link(outside.join("victim"), root.join("hard")).unwrap();

        let (code, said) = sh(&root, "p 'a/b' 'new file' 0 755", b"hello");
        assert_eq!(code, 0, "{said}");
        assert!(said.contains("M wrote 5"), "{said}");
        let made = root.join("a/b/new file");
        assert_eq!(std::fs::read(&made).unwrap(), b"hello");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        let (code, said) = sh(&root, "p 'a/b' 'new file' 5 u644", b" world");
        assert_eq!(code, 0, "{said}");
        assert_eq!(std::fs::read(&made).unwrap(), b"hello world");
        // A resume of the wrong length is refused.
        let (code, _) = sh(&root, "p 'a/b' 'new file' 3 u644", b"x");
        assert_eq!(code, 13);

        let (code, said) = sh(&root, "p '' hard 0 u644", b"mine");
        assert_eq!(code, 0, "{said}");
        assert_eq!(std::fs::read(root.join("hard")).unwrap(), b"mine");
        // Resuming into a name with a hard link elsewhere is refused.
        std::fs::hard_link(root.join("hard"), outside.join("hard2")).unwrap();
        let (code, _) = sh(&root, "p '' hard 4 u644", b"more");
        assert_eq!(code, 13);
        assert_eq!(std::fs::read(outside.join("hard2")).unwrap(), b"mine");

        assert_eq!(sh(&root, "p '' link 0 u644", b"x").0, 5);
        assert_eq!(sh(&root, "p '' inside 0 u644", b"x").0, 10);
        let (code, said) = sh(&root, "p out x 0 u644", b"x");
        assert_eq!(code, 4, "{said}");
        assert!(
            said.contains(&format!("M outside {}", outside.display())),
            "{said}"
        );
        let (code, _) = sh(&root, "p out/deeper x 0 u644", b"x");
        assert_eq!(code, 4);
        assert!(!outside.join("x").exists() && !outside.join("deeper").exists());
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"victim");

        let (code, said) = sh(&root, "p alias/c y 0 u600", b"y");
        assert_eq!(code, 0, "{said}");
        assert_eq!(std::fs::read(root.join("inside/c/y")).unwrap(), b"y");
        // A file where a directory is wanted.
        assert_eq!(sh(&root, "p 'a/b/new file/z' z 0 u644", b"z").0, 6);
    }

    #[test]
    fn paths_below_the_root_by_their_components() {
        assert_eq!(below("runs/a/b", "runs"), Some("a/b"));
        assert_eq!(below("runs", "runs"), Some(""));
        assert_eq!(below("runs2/a", "runs"), None);
        assert_eq!(below("a/b", "."), Some("a/b"));
        assert_eq!(below("/a/b", "."), None);
        assert_eq!(below("/scratch/u/r1/", "/scratch/u/"), Some("r1"));
        assert_eq!(below("/scratch/uu", "/scratch/u"), None);
        assert_eq!(below("/etc/x", "/"), Some("etc/x"));
        let (dir, name) = split("runs", "runs/a//b/f").unwrap();
        assert_eq!((dir.as_str(), name), ("a/b", "f"));
        assert_eq!(split("runs", "runs/f").unwrap(), (String::new(), "f"));
        assert!(matches!(split("runs", "runs"), Err(SshError::Denied(_))));
        assert!(matches!(split("runs", "other/f"), Err(SshError::Denied(_))));
    }

    /// A bundle's segments under the local `sh` and GNU tar: each archive
    /// unpacked in its own directory, hashed there; a segment whose
    /// directory leads out of the root ends the command before its `tar`
    /// reads a byte, and nothing after it runs. Negative control (run):
    /// with the hook point written `&& : before-tar; head -c` (a `;` that
    /// ends the `&&` chain), `tar` ran in the outside directory the failed
    /// walk had entered and `x` landed there.
    #[test]
    fn a_bundle_segment_whose_directory_leads_out_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        let archive = |name: &str, data: &[u8]| {
            let mut b = crate::bundle::Bundle::new();
            b.add(name, 0o644, data).unwrap();
            b.finish()
        };
        let (a, x) = (archive("a", b"A"), archive("x", b"X"));
        let segment = |dir: &str, name: &str, len: usize| Segment {
            dir: dir.to_string(),
            names: vec![name.to_string()],
            len,
        };
        let call = format!(
            "{}{}",
            segment_text(0, &segment("in", "a", a.len())),
            segment_text(1, &segment("out", "x", x.len()))
        );
        let (code, said) = sh(&root, &call, &[a, x].concat());
        assert!(!outside.join("x").exists(), "written outside");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(code, 4, "{said}");
        assert_eq!(std::fs::read(root.join("in/a")).unwrap(), b"A");
    }

    #[test]
    fn what_the_command_says_is_read_from_its_own_lines_only() {
        let said = Said::read(
            "banner wrote 5\nM wrote 12\nM outside /x?y\ndd: error\n",
            "M",
        );
        assert_eq!(said.wrote, Some(12));
        assert_eq!(said.outside.as_deref(), Some("/x?y"));
        assert_eq!(said.rest(), "banner wrote 5; dd: error");
    }
}
