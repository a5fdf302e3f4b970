//! The connection budget shared by every cluster-slurm process of a user.
//!
//! `host.connectionsPerMinute` exists to spare login nodes (and to stay clear
//! of fail2ban-style bans), so it has to hold across processes: a CLI call is
//! one process, and several `mcp` servers may run at once. Each process
//! therefore records every connection attempt in a small file per login node
//! in the host's state directory, and counts the attempts all processes made
//! in the last minute before it dials.
//!
//! One file per endpoint (the node a profile reaches, see [`endpoint`]):
//! `<state dir>/connections/<hash>`, where the state directory is
//! `$CLUSTER_SLURM_STATE_DIR`, else `$XDG_STATE_HOME/cluster-slurm`, else
//! `~/.local/state/cluster-slurm`. The file holds a header line naming the
//! endpoint and one Unix time in milliseconds per attempt.
//!
//! Each attempt is one transaction under an exclusive `flock` on that file
//! (waited for at most [`LOCK_WAIT`]; a process that dies releases it): read,
//! drop what is older than a minute, refuse if the budget is used up, else
//! append now and write back. The write goes over the old content and then
//! cuts the file to length, so a process killed half-way leaves a longer or
//! garbled file, never a shorter valid one. A record that is garbled, too big
//! or not ours is reset with a warning: it can never refuse forever. The file
//! is opened without following symlinks and a planted symlink, hard link or
//! special file at its name is replaced, not written through.
//!
//! If the record cannot be used at all (no home, read-only state directory,
//! a lock that stays held), the caller falls back to counting its own
//! process's attempts, and says so once on stderr.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ssh_config::HostParams;

/// Overrides the host's state directory (an absolute path); the record lives
/// in its `connections/` subdirectory.
pub const STATE_DIR_ENV: &str = "CLUSTER_SLURM_STATE_DIR";

/// How far back attempts count.
const WINDOW_MS: u64 = 60_000;

/// The most attempts kept: the largest budget an operator may configure
/// (`host.connectionsPerMinute` is 1..=1000), so no budget ever needs more.
const MAX_ENTRIES: usize = 1000;

/// A record longer than this is not ours (1000 entries take ~14 KB).
const MAX_BYTES: u64 = 64 * 1024;

/// How long to wait for another process's lock. A transaction takes well
/// under a millisecond; a lock held this long belongs to a stopped process.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// What one attempt at taking a connection from the budget came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded: go ahead and connect.
    Granted,
    /// `used` attempts in the last minute (over all processes) already; the
    /// next one is allowed in about `retry_in_secs`.
    Refused { used: usize, retry_in_secs: u64 },
}

/// A verdict and what went wrong with the record on the way (each a line
/// for stderr: a reset record, a replaced symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub warnings: Vec<String>,
}

/// The record could not be used at all; the reason names the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable(pub String);

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The endpoint a profile's connections load: the first thing dialled
/// (ProxyJump hops, in order) and the final `host:port`. The remote user is
/// left out on purpose: a login node (and fail2ban on it) counts connections
/// per source, whichever account they log in to. The label is left out too:
/// two profiles on one login node share its budget, and one label that means
/// different nodes in two configs does not.
pub fn endpoint(params: &HostParams) -> String {
    let node = format!("{}:{}", params.hostname.to_ascii_lowercase(), params.port);
    if params.proxy_jump.is_empty() {
        node
    } else {
        format!("{node} via {}", params.proxy_jump.join(","))
    }
}

/// The shared record: a directory of one file per endpoint.
#[derive(Debug, Clone)]
pub struct SharedBudget {
    dir: PathBuf,
}

impl SharedBudget {
    /// The record under `state_dir` (its `connections/` subdirectory).
    pub fn in_state_dir(state_dir: &Path) -> SharedBudget {
        SharedBudget {
            dir: state_dir.join("connections"),
        }
    }

    /// The user's record: under `$CLUSTER_SLURM_STATE_DIR` if set, else the
    /// host's state directory (`crate::audit::state_file`).
    pub fn for_user() -> Result<SharedBudget, Unusable> {
        match std::env::var_os(STATE_DIR_ENV).filter(|v| !v.is_empty()) {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    Ok(SharedBudget::in_state_dir(&dir))
                } else {
                    Err(Unusable(format!(
                        "{STATE_DIR_ENV}={} is not an absolute path",
                        dir.display()
                    )))
                }
            }
            None => crate::audit::state_file("connections")
                .map(|dir| SharedBudget { dir })
                .ok_or_else(|| {
                    Unusable(
                        "no state directory: neither XDG_STATE_HOME nor HOME is set".to_string(),
                    )
                }),
        }
    }

    /// The directory holding the record files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that records attempts on `endpoint`.
    pub fn record_path(&self, endpoint: &str) -> PathBuf {
        let digest = Sha256::digest(endpoint.as_bytes());
        let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    /// Take one connection attempt on `endpoint` from a budget of
    /// `per_minute`, counted over every process using this record.
    pub fn take(&self, endpoint: &str, per_minute: u32) -> Result<Outcome, Unusable> {
        self.take_at(endpoint, per_minute, now_ms())
    }

    /// [`take`](Self::take) at a given time (Unix ms), for tests.
    pub fn take_at(&self, endpoint: &str, per_minute: u32, now: u64) -> Result<Outcome, Unusable> {
        self.ensure_dir()?;
        let path = self.record_path(endpoint);
        let mut warnings = Vec::new();
        let mut file = lock_record(&path, &mut warnings)?;
        let header = header(endpoint);
        let (mut entries, rewrite) = match read_entries(&mut file, &header, now) {
            Ok((entries, clamped)) => (entries, clamped),
            Err(why) => {
                warnings.push(format!(
                    "warning: the connection record {} {why}; starting it afresh",
                    path.display()
                ));
                (Vec::new(), true)
            }
        };
        let stored = entries.len();
        entries.retain(|t| now.saturating_sub(*t) < WINDOW_MS);
        let pruned = rewrite || entries.len() != stored;
        let budget = per_minute.max(1) as usize;
        let verdict = if entries.len() >= budget {
            // The attempt that must expire before the next is allowed: with
            // `used` entries and room for `budget`, the (used - budget)th oldest.
            let oldest = entries.get(entries.len() - budget).copied().unwrap_or(now);
            let wait_ms = (oldest + WINDOW_MS).saturating_sub(now);
            Verdict::Refused {
                used: entries.len(),
                retry_in_secs: wait_ms.div_ceil(1000).max(1),
            }
        } else {
            entries.push(now);
            Verdict::Granted
        };
        if pruned || verdict == Verdict::Granted {
            let skip = entries.len().saturating_sub(MAX_ENTRIES);
            write_entries(&mut file, &header, entries.get(skip..).unwrap_or(&[]))
                .map_err(|e| Unusable(format!("cannot write {}: {e}", path.display())))?;
        }
        // Dropping `file` closes it, which releases the lock.
        Ok(Outcome { verdict, warnings })
    }

    /// Create the directory (0700) and check it is one we may trust: a real
    /// directory, not writable by anyone else.
    fn ensure_dir(&self) -> Result<(), Unusable> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Unusable(format!("cannot create {}: {e}", self.dir.display())))?;
        let meta = std::fs::symlink_metadata(&self.dir)
            .map_err(|e| Unusable(format!("cannot read {}: {e}", self.dir.display())))?;
        if !meta.is_dir() {
            return Err(Unusable(format!(
                "{} is not a directory (a symlink?)",
                self.dir.display()
            )));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(Unusable(format!(
                "{} is writable by other users (mode {:o}); make it 0700",
                self.dir.display(),
                meta.permissions().mode() & 0o7777
            )));
        }
        Ok(())
    }
}

/// Say once per process that the shared record is not used.
pub fn warn_unusable_once(why: &Unusable) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "warning: cannot use the shared connection record ({why}); counting this process's connections only, so host.connectionsPerMinute holds per process, not across processes"
        );
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn header(endpoint: &str) -> String {
    // Debug-escaped so no endpoint can end the line early.
    format!(
        "# cluster-slurm connection attempts to {:?}: one Unix time in ms per line, for 60 s",
        endpoint
    )
}

/// Open the record at `path` and lock it, replacing whatever is planted at
/// its name (symlink, hard link, special file) instead of writing through it.
/// After the lock is held, the name must still be the file we hold (another
/// process may have replaced a planted file meanwhile); else try again.
fn lock_record(path: &Path, warnings: &mut Vec<String>) -> Result<File, Unusable> {
    let mut replaced = 0;
    loop {
        let file = match open_no_follow(path) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) && replaced < 3 => {
                replaced += 1;
                replace(path, "is a symlink", warnings)?;
                continue;
            }
            Err(e) => return Err(Unusable(format!("cannot open {}: {e}", path.display()))),
        };
        let meta = file
            .metadata()
            .map_err(|e| Unusable(format!("cannot read {}: {e}", path.display())))?;
        if meta.nlink() == 0 && replaced < 3 {
            // Another process removed this name (replacing a planted file)
            // between our open and now: open what is there now.
            replaced += 1;
            continue;
        }
        if (!meta.is_file() || meta.nlink() != 1) && replaced < 3 {
            replaced += 1;
            let what = if meta.is_file() {
                "has other hard links"
            } else {
                "is not a regular file"
            };
            drop(file);
            replace(path, what, warnings)?;
            continue;
        }
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(Unusable(format!(
                "{} keeps being replaced by something not a plain file",
                path.display()
            )));
        }
        lock_bounded(&file, path)?;
        let still_ours = std::fs::symlink_metadata(path)
            .is_ok_and(|now| now.ino() == meta.ino() && now.dev() == meta.dev());
        if !still_ours {
            if replaced >= 3 {
                return Err(Unusable(format!("{} keeps changing", path.display())));
            }
            replaced += 1;
            continue;
        }
        if meta.permissions().mode() & 0o777 != 0o600 {
            // Created by an older or foreign process with other bits: ours is 0600.
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
        }
        return Ok(file);
    }
}

fn open_no_follow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // O_NONBLOCK: a FIFO planted at the name must not hang the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Remove what is at `path` (the name only: `remove_file` never follows a
/// symlink, and removing a hard link leaves the other names intact).
fn replace(path: &Path, what: &str, warnings: &mut Vec<String>) -> Result<(), Unusable> {
    warnings.push(format!(
        "warning: the connection record {} {what}; replacing it (nothing it pointed to was touched)",
        path.display()
    ));
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Unusable(format!("cannot remove {}: {e}", path.display()))),
    }
}

fn lock_bounded(file: &File, path: &Path) -> Result<(), Unusable> {
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Unusable(format!(
                    "{} stayed locked for {} s (a stopped cluster-slurm process holds it?)",
                    path.display(),
                    LOCK_WAIT.as_secs()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Unusable(format!("cannot lock {}: {e}", path.display())));
            }
        }
    }
}

/// The attempts recorded, oldest first, and whether any lay in the future
/// (the clock was set back): those count as now, and are stored so, so that
/// they expire within a minute. An error says what is wrong with the record.
fn read_entries(file: &mut File, header: &str, now: u64) -> Result<(Vec<u64>, bool), String> {
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.is_empty() {
        return Ok((Vec::new(), false));
    }
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("is larger than {MAX_BYTES} bytes"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| "is not text".to_string())?;
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return Err("does not start with its header".to_string());
    }
    let mut entries = Vec::new();
    let mut clamped = false;
    for line in lines {
        let t: u64 = line
            .parse()
            .map_err(|_| format!("has a line that is not a time: {:?}", truncate(line)))?;
        clamped |= t > now;
        entries.push(t.min(now));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(format!("holds more than {MAX_ENTRIES} attempts"));
    }
    entries.sort_unstable();
    Ok((entries, clamped))
}

fn truncate(line: &str) -> &str {
    match line.char_indices().nth(40) {
        Some((i, _)) => line.get(..i).unwrap_or(line),
        None => line,
    }
}

fn write_entries(file: &mut File, header: &str, entries: &[u64]) -> std::io::Result<()> {
    let mut text = String::with_capacity(header.len() + 1 + entries.len() * 14);
    text.push_str(header);
    text.push('\n');
    for t in entries {
        text.push_str(&t.to_string());
        text.push('\n');
    }
    // Over the old content, then cut: a crash half-way leaves extra or
    // garbled lines (counted, or reset with a warning), never lost ones.
    file.seek(SeekFrom::Start(0))?;
    file.write_all(text.as_bytes())?;
    file.set_len(text.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(host: &str, port: u16, user: &str, jumps: &[&str]) -> HostParams {
        let mut p = crate::ssh_config::resolve(&format!("{user}@{host}:{port}"), None).unwrap();
        p.proxy_jump = jumps.iter().map(|s| s.to_string()).collect();
        p
    }

    /// The key names the node, not the account or label: same host and port
    /// share, another port or a jump path does not.
    #[test]
    fn endpoints_name_the_node() {
        assert_eq!(
            endpoint(&params("Login.Example", 22, "a", &[])),
            endpoint(&params("login.example", 22, "b", &[]))
        );
        assert_ne!(
            endpoint(&params("login.example", 22, "a", &[])),
            endpoint(&params("login.example", 2222, "a", &[]))
        );
        assert_eq!(
            endpoint(&params("login.example", 22, "a", &["gw"])),
            "login.example:22 via gw"
        );
    }

    /// Attempts expire after 60 s; the wait named is until the oldest that
    /// blocks expires; times from the future count as now.
    #[test]
    fn a_minute_window_and_the_wait_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let b = SharedBudget::in_state_dir(dir.path());
        let t0 = 1_000_000_000_000;
        assert_eq!(b.take_at("n:22", 2, t0).unwrap().verdict, Verdict::Granted);
        assert_eq!(
            b.take_at("n:22", 2, t0 + 10_000).unwrap().verdict,
            Verdict::Granted
        );
        assert_eq!(
            b.take_at("n:22", 2, t0 + 20_000).unwrap().verdict,
            Verdict::Refused {
                used: 2,
                retry_in_secs: 40
            }
        );
        // Another process with a smaller budget: the wait is for the second oldest.
        assert_eq!(
            b.take_at("n:22", 1, t0 + 20_000).unwrap().verdict,
            Verdict::Refused {
                used: 2,
                retry_in_secs: 50
            }
        );
        assert_eq!(
            b.take_at("n:22", 2, t0 + 60_000).unwrap().verdict,
            Verdict::Granted
        );
        // Another endpoint has its own record.
        assert_eq!(
            b.take_at("m:22", 2, t0 + 20_000).unwrap().verdict,
            Verdict::Granted
        );
        // The clock went back an hour: the stored times count as now, not as
        // an hour-long block.
        let back = t0 - 3_600_000;
        assert_eq!(
            b.take_at("n:22", 2, back).unwrap().verdict,
            Verdict::Refused {
                used: 2,
                retry_in_secs: 60
            }
        );
        assert_eq!(
            b.take_at("n:22", 2, back + 60_000).unwrap().verdict,
            Verdict::Granted
        );
    }

    /// The record never grows past the largest budget, however many
    /// processes with large budgets write to it.
    #[test]
    fn the_record_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let b = SharedBudget::in_state_dir(dir.path());
        let t0 = 1_000_000_000_000;
        for i in 0..1500 {
            b.take_at("n:22", 5000, t0 + i).unwrap();
        }
        let text = std::fs::read_to_string(b.record_path("n:22")).unwrap();
        assert_eq!(text.lines().count(), 1 + MAX_ENTRIES);
        assert!(text.len() < MAX_BYTES as usize / 2, "{}", text.len());
    }
}
