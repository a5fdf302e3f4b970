//! A download's bytes, read on the cluster by one command that decides what
//! it reads in the act of reading it.
//!
//! SFTP opens by name and follows links, and has no `openat`: checking a
//! path before (and after) its open leaves an instant in which a job racing
//! the transfer can swap a directory or the file itself for a link out of
//! the root. So the bytes come over exec instead, from a command that, for
//! each file: enters its directory with `cd -P` (the shell's working
//! directory is then that real directory, whatever is swapped above it),
//! checks `/bin/pwd -P` is inside the resolved root, and reads `./NAME` with
//! `dd iflag=nofollow,nonblock` (a link at the name fails the open itself;
//! a FIFO swapped in gives no bytes at once instead of blocking), at most
//! the listed size. Nothing a job does after that `cd` can redirect the
//! read, and no check happens anywhere but in the command that reads.
//!
//! One command carries many files (one login, one shell start, whatever
//! the site's rc files cost): stdout holds each file's bytes padded to its
//! listed size, so the host always knows where the next one starts, and
//! stderr says per file what was read (`dd`'s own count) or why nothing
//! was. Whatever a login shell prints before the command runs is skipped:
//! the bytes start after a random marker line.
//!
//! Needs GNU `dd` on the login node (coreutils 8.16+, 2012); another `dd`
//! fails the download with its own message.

use crate::confine::Confine;
use crate::ssh::{Connection, SshError, quote_word};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::Duration;

/// One file to read: its resolved remote path, and the bytes wanted from
/// it (`count` from `skip` on; `skip + count` is its listed size).
#[derive(Debug, Clone)]
pub struct Want<'a> {
    pub remote: &'a str,
    pub skip: u64,
    pub count: u64,
}

/// Where one file's bytes go, hashed on the way.
pub struct Slot {
    pub file: std::fs::File,
    pub digest: Sha256,
}

/// Files read by one command at most: each holds an open partial file.
pub const FETCH_FILES: usize = 256;

/// How long a fetch may stay silent (a cluster file system stalling).
const IDLE: Duration = Duration::from_secs(120);

/// What a login shell may print before the command's own output.
const BANNER_MAX: usize = 64 << 10;

/// The exit code of a command that found remoteRoot passing through a
/// replaceable link.
const ROOT_REFUSED: i32 = crate::put::ROOT_REFUSED;

/// `g DIR NAME SKIP COUNT`: COUNT bytes on stdout, always (the file's, then
/// zeros), and on stderr `$m fetch`, what `dd` said, `$m status CODE`
/// (`$m`: the command's marker, so nothing a login shell prints to stderr
/// counts as a status; `dd` quotes the names in its messages, and the one
/// path the function prints has its newlines replaced).
/// Codes: 0 read (dd's count says how much), 3 the directory cannot be
/// entered, 4 it resolves outside `$r` (`$m outside PATH` first), 5 the
/// name is not a regular file; anything else is `dd`'s.
const FETCH_FN: &str = r#"g() { printf '%s fetch\n' "$m" >&2; { ( cd -P -- "$1" 2>/dev/null || exit 3; p=$(cs_pwd; printf x); p=${p%?x}; case "$p/" in "$r"/*) ;; *) printf '%s outside %s\n' "$m" "$(printf '%s' "$p" | tr '\n' '?')" >&2; exit 4;; esac; [ -f "./$2" ] && [ ! -L "./$2" ] || exit 5; exec dd if="./$2" iflag=nofollow,nonblock,skip_bytes,count_bytes skip="$3" count="$4" bs=262144 ); printf '%s status %s\n' "$m" "$?" >&2; head -c "$4" /dev/zero; } | head -c "$4"; };"#;

/// Read `wants` into `slots` (one each, in order) in one command. The
/// outer error is the whole command's (the connection, the root); each
/// file's own outcome is its entry: the bytes it gave (fewer than asked
/// when it shrank since the listing: its slot then also holds zeros after
/// them, which the caller cuts), or why nothing of it may be kept.
pub async fn fetch(
    conn: &Connection,
    confine: &Confine,
    wants: &[Want<'_>],
    slots: &mut [Slot],
) -> Result<Vec<Result<u64, SshError>>, SshError> {
    if wants.len() != slots.len() {
        return Err(SshError::LocalIo(format!(
            "{} files to fetch but {} places for them",
            wants.len(),
            slots.len()
        )));
    }
    if wants.is_empty() {
        return Ok(Vec::new());
    }
    let nonce = nonce();
    let command = command(confine, &nonce, wants);
    let mut demux = Demux::new(&nonce, wants, slots);
    let out = conn
        .exec_to(&command, IDLE, &mut |data| demux.feed(data), 1 << 20)
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.exit_code == Some(ROOT_REFUSED) {
        return Err(SshError::Denied(crate::remote_confine::root_link_refusal(
            &crate::confine::shown(confine.given_root()),
        )));
    }
    if out.exit_code == Some(crate::put::ROOT_MISSING) && !demux.started() {
        return Err(SshError::Remote(format!(
            "remoteRoot {} cannot be entered on the cluster: {}",
            crate::confine::shown(confine.given_root()),
            tail(&stderr)
        )));
    }
    let said = statuses(&stderr, &nonce);
    if said.len() < wants.len() || !demux.done() {
        return Err(SshError::Remote(format!(
            "reading files on the cluster ended after {} of {} (exit {:?}): {}",
            said.len().min(wants.len()),
            wants.len(),
            out.exit_code,
            tail(&stderr)
        )));
    }
    Ok(wants
        .iter()
        .zip(said)
        .map(|(want, status)| outcome(confine, want, status))
        .collect())
}

/// The command that reads `wants`.
fn command(confine: &Confine, nonce: &str, wants: &[Want<'_>]) -> String {
    // The root resolved in this command, not taken from SFTP's `realpath`:
    // a job could have swapped it for a link since (every listed path then
    // resolves outside this `$r`, and nothing is read).
    let mut cmd = format!(
        "printf '\\n' >&2; LC_ALL=C; export LC_ALL; unset CDPATH; {} m={nonce}; {FETCH_FN} printf '%s\\n' \"$m\";",
        crate::put::resolve_root(confine.given_root()),
    );
    for want in wants {
        let (dir, name) = split(want.remote);
        cmd.push_str(&format!(
            " g {} {} {} {};",
            quote_word(dir),
            quote_word(name),
            want.skip,
            want.count
        ));
    }
    cmd
}

/// The length of the call [`command`] adds for `remote`: batches end before
/// their command would pass [`crate::verify::COMMAND_BYTES`].
pub fn call_len(remote: &str) -> usize {
    let (dir, name) = split(remote);
    quote_word(dir).len() + quote_word(name).len() + 48
}

/// The room for calls in one command.
pub fn room(confine: &Confine) -> usize {
    crate::verify::COMMAND_BYTES.saturating_sub(command(confine, &nonce(), &[]).len() + 64)
}

/// `/a/b/name` as (`/a/b`, `name`); `/name` as (`/`, `name`).
fn split(remote: &str) -> (&str, &str) {
    match remote.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => (".", remote),
    }
}

/// What the command said about one file.
#[derive(Debug, Default, PartialEq, Eq)]
struct Status {
    code: Option<i32>,
    /// `dd`'s count of the bytes it copied.
    bytes: Option<u64>,
    outside: Option<String>,
    /// Anything else it printed (`dd`'s errors).
    said: Vec<String>,
}

/// The per-file statuses in stderr, in order: the lines after each
/// `NONCE fetch`, until the next.
fn statuses(stderr: &str, nonce: &str) -> Vec<Status> {
    let mut out: Vec<Status> = Vec::new();
    for line in stderr.lines() {
        // Anywhere in the line: a process of the user's can write into
        // stderr, and what it wrote last may still be on the line.
        let ours = line
            .split_once(nonce)
            .and_then(|(_, rest)| rest.strip_prefix(' '));
        if ours == Some("fetch") {
            out.push(Status::default());
            continue;
        }
        let Some(status) = out.last_mut() else {
            continue;
        };
        if let Some(code) = ours.and_then(|o| o.strip_prefix("status ")) {
            status.code = code.trim().parse().ok();
        } else if let Some(path) = ours.and_then(|o| o.strip_prefix("outside ")) {
            status.outside = Some(path.to_string());
        } else if let Some(n) = line
            // `1 byte copied`, `0 bytes copied`, `5 bytes (5 B) copied`.
            .split_once(" byte")
            .and_then(|(n, _)| n.parse::<u64>().ok())
        {
            status.bytes = Some(n);
        } else if !line.ends_with("records in") && !line.ends_with("records out") {
            status.said.push(line.to_string());
        }
    }
    out
}

/// One file's outcome from its status.
fn outcome(confine: &Confine, want: &Want<'_>, status: Status) -> Result<u64, SshError> {
    let remote = want.remote;
    let not_regular = || {
        SshError::Denied(format!(
            "remote path {remote} is no longer a regular file on the cluster (a link, FIFO or something else took its name after the listing); nothing was read from it"
        ))
    };
    match status.code {
        Some(0) => match status.bytes {
            Some(n) if n <= want.count => Ok(n),
            Some(n) => Err(SshError::Remote(format!(
                "reading {remote} on the cluster: dd reported {n} bytes for {} asked",
                want.count
            ))),
            None => Err(SshError::Remote(format!(
                "reading {remote} on the cluster: dd said nothing of how much it read ({}); is `dd` GNU coreutils?",
                status.said.join("; ")
            ))),
        },
        Some(3) => Err(SshError::Remote(format!(
            "remote path {remote}: its directory can no longer be entered on the cluster (removed, or replaced, after the listing); nothing was read from it"
        ))),
        Some(4) => Err(SshError::Denied(format!(
            "remote path {remote}: its directory resolves to {} on the cluster now, outside remoteRoot {} ({}): it, or one on the way, was swapped for a link during the transfer; nothing was read from it",
            status.outside.as_deref().unwrap_or("?"),
            crate::confine::shown(confine.given_root()),
            confine.real_root()
        ))),
        Some(5) => Err(not_regular()),
        _ if status
            .said
            .iter()
            .any(|l| l.contains("Too many levels of symbolic links")) =>
        {
            Err(not_regular())
        }
        _ if status.said.iter().any(|l| l.contains("Permission denied")) => {
            Err(SshError::Remote(format!(
                "reading {remote} on the cluster: permission denied ({})",
                status.said.join("; ")
            )))
        }
        code => Err(SshError::Remote(format!(
            "reading {remote} on the cluster failed (exit {code:?}): {}",
            status.said.join("; ")
        ))),
    }
}

/// The last lines of `text`, for a message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(5);
    lines.get(from..).unwrap_or_default().join("; ")
}

/// A marker no login shell prints by chance, and no one knows before the
/// command runs (a process of the user's on the login node can read it in
/// the command line then: see docs/reliability.md).
pub(crate) fn nonce() -> String {
    let mut seed = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .is_ok();
    let mut h = Sha256::new();
    h.update(seed);
    if !random {
        // No /dev/urandom: the time and process, still unknown beforehand.
        h.update(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("cs-bytes-{hex}")
}

/// Splits the command's stdout into the files' slots.
struct Demux<'s> {
    /// The marker line the bytes start after.
    marker: Vec<u8>,
    /// What came before the marker, while it has not come.
    before: Option<Vec<u8>>,
    slots: &'s mut [Slot],
    counts: Vec<u64>,
    at: usize,
}

impl<'s> Demux<'s> {
    fn new(nonce: &str, wants: &[Want<'_>], slots: &'s mut [Slot]) -> Demux<'s> {
        Demux {
            marker: format!("{nonce}\n").into_bytes(),
            before: Some(Vec::new()),
            slots,
            counts: wants.iter().map(|w| w.count).collect(),
            at: 0,
        }
    }

    /// Every file got all its bytes.
    /// The marker came: the command got past its root.
    fn started(&self) -> bool {
        self.before.is_none()
    }

    fn done(&self) -> bool {
        self.before.is_none() && self.counts.iter().skip(self.at).all(|&c| c == 0)
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), SshError> {
        let Some(before) = &mut self.before else {
            return self.write(data);
        };
        before.extend_from_slice(data);
        let found = before
            .windows(self.marker.len())
            .position(|w| w == self.marker.as_slice());
        match found {
            Some(i) => {
                let rest = before.split_off(i + self.marker.len());
                self.before = None;
                self.write(&rest)
            }
            None if before.len() > BANNER_MAX => Err(SshError::Remote(format!(
                "the login shell printed over {} KiB before the command's output began (an rc file's banner?): {}",
                BANNER_MAX >> 10,
                String::from_utf8_lossy(before.get(..200).unwrap_or_default())
            ))),
            None => Ok(()),
        }
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), SshError> {
        while !data.is_empty() {
            let (Some(left), Some(slot)) =
                (self.counts.get_mut(self.at), self.slots.get_mut(self.at))
            else {
                return Err(SshError::Remote(
                    "the cluster sent more bytes than the files asked for: something on the login node wrote into the command's output after it began (an rc file's exit trap, or a process of the user's); nothing of the extra was kept".to_string(),
                ));
            };
            if *left == 0 {
                self.at += 1;
                continue;
            }
            let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
            let Some((now, later)) = data.split_at_checked(n) else {
                break;
            };
            // A plain write: the bytes go to the page cache, microseconds
            // for a channel packet, and the order must stay the stream's.
            slot.file
                .write_all(now)
                .map_err(|e| SshError::LocalIo(format!("writing a downloaded file: {e}")))?;
            slot.digest.update(now);
            *left -= n as u64;
            data = later;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_per_file_whatever_dd_prints() {
        // `.`: what a process writing into stderr left on the line.
        // Negative control (run): with the marker required at the start of
        // the line, that first file's status was lost (4 statuses for 5).
        let stderr = "banner\ncs-fetch\n.N fetch\n0+1 records in\n0+1 records out\n5 bytes copied, 0.0001 s, 31.6 kB/s\ncs-status 9\nN status 0\n\
N fetch\nN outside /home/u\nN status 4\nN fetch\ndd: failed to open './p': Too many levels of symbolic links\nN status 1\n\
N fetch\n3 bytes (3 B) copied, 1 s, 3 B/s\nN status 0\nN fetch\n1 byte copied, 1 s, 1 B/s\nN status 0\n";
        let s = statuses(stderr, "N");
        assert_eq!(s.len(), 5, "{s:?}");
        // A status line without the marker (a shell's, a file name's) is not one.
        assert_eq!((s[0].code, s[0].bytes), (Some(0), Some(5)));
        assert_eq!(s[1].outside.as_deref(), Some("/home/u"));
        assert_eq!(s[2].code, Some(1));
        assert!(s[2].said[0].contains("Too many levels"));
        assert_eq!(s[3].bytes, Some(3));
        assert_eq!(s[4].bytes, Some(1));
    }

    /// The function itself, run by the local `sh` on a planted tree: a
    /// directory link out of the root whose target's name holds a line
    /// that looks like a new file and its status reads as refused (4), not
    /// as read, and shifts no other file's status; a file
    /// link is refused (5); a real file gives its bytes. Negative control
    /// (run): with the outside path printed raw (no `tr`), the planted
    /// `N fetch` line counted as a file: four statuses for three files,
    /// the first without a code and every later one shifted.
    #[test]
    fn the_fetch_function_refuses_links_and_no_name_passes_for_a_status() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, out) = (
            tmp.path().join("root"),
            tmp.path().join("out\nN fetch\nN status 0"),
        );
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("f"), "OUTSIDE").unwrap();
        std::fs::write(root.join("f"), "inside").unwrap();
        std::os::unix::fs::symlink(&out, root.join("d")).unwrap();
        std::os::unix::fs::symlink(out.join("f"), root.join("l")).unwrap();
        let root_s = root.to_str().unwrap();
        let script = format!(
            "{}; r={}; m=N; {FETCH_FN} g {} f 0 7; g {} l 0 7; g {} f 0 6",
            crate::remote_confine::ROOT_CHECK.trim_end(),
            quote_word(root_s),
            quote_word(&format!("{root_s}/d")),
            quote_word(root_s),
            quote_word(root_s)
        );
        let run = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert_eq!(run.stdout, b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0inside");
        let s = statuses(&String::from_utf8_lossy(&run.stderr), "N");
        assert_eq!(
            s.iter().map(|s| s.code).collect::<Vec<_>>(),
            [Some(4), Some(5), Some(0)],
            "{s:?}"
        );
        assert_eq!(s[2].bytes, Some(6));
    }

    #[test]
    fn remote_paths_split_into_directory_and_name() {
        assert_eq!(split("/a/b/c"), ("/a/b", "c"));
        assert_eq!(split("/c"), ("/", "c"));
        assert_eq!(split("c"), (".", "c"));
    }

    fn slot() -> (tempfile::NamedTempFile, Slot) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let slot = Slot {
            file: f.reopen().unwrap(),
            digest: Sha256::new(),
        };
        (f, slot)
    }

    #[test]
    fn the_stream_is_split_after_the_marker_by_the_listed_sizes() {
        let (fa, a) = slot();
        let (fb, b) = slot();
        let (fc, c) = slot();
        let mut slots = vec![a, b, c];
        let wants = [
            Want {
                remote: "/r/a",
                skip: 0,
                count: 3,
            },
            Want {
                remote: "/r/b",
                skip: 0,
                count: 0,
            },
            Want {
                remote: "/r/c",
                skip: 2,
                count: 4,
            },
        ];
        let mut d = Demux::new("cs-bytes-x", &wants, &mut slots);
        // A banner, the marker split over two packets, then the bytes in
        // pieces that straddle the files.
        d.feed(b"Welcome!\ncs-by").unwrap();
        assert!(!d.done());
        d.feed(b"tes-x\nab").unwrap();
        d.feed(b"cWXYZ").unwrap();
        assert!(d.done());
        assert!(d.feed(b"!").is_err(), "more than asked");
        drop(d);
        assert_eq!(std::fs::read(fa.path()).unwrap(), b"abc");
        assert_eq!(std::fs::read(fb.path()).unwrap(), b"");
        assert_eq!(std::fs::read(fc.path()).unwrap(), b"WXYZ");
        assert_eq!(
            format!("{:x}", slots[0].digest.clone().finalize()),
            format!("{:x}", Sha256::digest(b"abc"))
        );
    }

    #[test]
    fn a_banner_without_an_end_is_an_error_not_data() {
        let (_f, a) = slot();
        let mut slots = vec![a];
        let wants = [Want {
            remote: "/r/a",
            skip: 0,
            count: 1,
        }];
        let mut d = Demux::new("cs-bytes-x", &wants, &mut slots);
        let e = d.feed(&vec![b'x'; BANNER_MAX + 1]).unwrap_err();
        assert!(e.to_string().contains("before the command's output"), "{e}");
    }
}
