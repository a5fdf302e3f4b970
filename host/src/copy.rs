//! Transfers that resume, skip what is already there, and are checked end to
//! end: the decisions around [`crate::sftp`]'s byte moving.
//!
//! Upload (`upload_all`, several items at once): the local trees are walked
//! once. Files of up to 1 MiB travel in tar streams ([`crate::bundle`]) of
//! at most 1,000 files, each one command that makes every directory
//! (`mkdir -p`), unpacks the stream (files only) and hashes what it wrote
//! (by names relative to the stream's base); four streams are in flight at
//! a time. A file that does not come back intact goes again over SFTP.
//! Larger files go over one SFTP session: when the destination exists, its
//! sizes are listed and the cluster hashes the files that could be reused;
//! a file with the same size and hash is skipped, a shorter one whose hash
//! equals the hash of the local file's first bytes (an interrupted upload)
//! is resumed at its end, anything else is sent whole; then each is
//! compared with the cluster's hash ([`crate::verify::check_upload`]).
//!
//! Download: the remote tree is listed. Files that a local file of the same
//! size may already be are hashed on the cluster first, and skipped when the
//! hashes agree; the others are hashed on the cluster while they are fetched
//! (both only read the file). The partial file an interrupted download left
//! behind is resumed (its bytes are trusted only until the final hash: a
//! mismatch fetches the file again whole); every file is hashed while it
//! arrives and compared before it replaces anything.

use crate::bundle::Bundle;
use crate::confine::Confine;
use crate::local_fs::{self, Base, Create, LocalFile, Source, Target};
use crate::sftp::{self, FileJob, Start, TransferStats, UploadPlan};
use crate::ssh::{Connection, SshError, quote_word};
use crate::verify;
use russh_sftp::client::SftpSession;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Upload `local` to `remote` over `conn`, then check it on the cluster.
/// Returns the transfer's figures and how many files were checked.
pub async fn upload(
    conn: &Connection,
    local: &Source,
    remote: &str,
    root: &str,
) -> Result<(TransferStats, u32), SshError> {
    let mut all = upload_all(conn, &[(local.clone(), remote.to_string())], root).await?;
    all.pop()
        .ok_or_else(|| SshError::LocalIo("nothing was uploaded".to_string()))
}

/// Upload each `(local, remote)` item over `conn`, checked on the cluster.
/// Small files of every item travel together: one command makes the
/// directories, unpacks them and hashes them. Larger files go over one SFTP
/// session, skipped when unchanged and resumed when cut off, then checked.
/// Returns, per item, its figures and how many of its files were checked.
/// Every item is written only inside `root` (the profile's `remoteRoot`,
/// SFTP form) as the cluster resolves it: see [`crate::confine`], and
/// [`send_bundles`] for the bundles' own check.
pub async fn upload_all(
    conn: &Connection,
    items: &[(Source, String)],
    root: &str,
) -> Result<Vec<(TransferStats, u32)>, SshError> {
    crate::confine::check_root(conn, root).await?;
    let mut plans = Vec::with_capacity(items.len());
    for (local, remote) in items {
        plans.push(sftp::plan_upload(local, remote).await?);
    }
    let mut stats: Vec<TransferStats> = plans
        .iter()
        .map(|p| TransferStats {
            skipped: p.skipped,
            ..TransferStats::default()
        })
        .collect();
    let mut checked = vec![0u32; plans.len()];

    // Small files: bundled, whatever is on the cluster (asking first would
    // cost more than sending them).
    let small: Vec<(usize, &FileJob<LocalFile>)> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.files.iter().map(move |f| (i, f)))
        .filter(|(_, f)| f.size <= BUNDLE_FILE_MAX)
        .collect();
    let leftovers: std::collections::HashSet<(usize, String)> = if small.is_empty() {
        Default::default()
    } else {
        send_bundles(conn, root, &plans, &small, &mut stats, &mut checked)
            .await?
            .into_iter()
            .collect()
    };
    // The bundles' command made every directory, if one of them arrived.
    let dirs_made = stats.iter().any(|s| s.bundled > 0);

    // The rest over SFTP: larger files, small ones no bundle could carry,
    // and (when no bundle went) the directories.
    let sftp_plans: Vec<UploadPlan> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| UploadPlan {
            files: p
                .files
                .iter()
                .filter(|f| f.size > BUNDLE_FILE_MAX || leftovers.contains(&(i, f.remote.clone())))
                .cloned()
                .collect(),
            skipped: 0,
            ..p.clone()
        })
        .collect();
    let needs_sftp = |p: &UploadPlan| !p.files.is_empty() || !dirs_made;
    if !sftp_plans.iter().any(needs_sftp) {
        return Ok(stats.into_iter().zip(checked).collect());
    }
    let session = conn.open_sftp().await?;
    let moved = async {
        let mut confine = Confine::resolve(&session, root, 0, true).await?;
        let mut moved = Vec::with_capacity(sftp_plans.len());
        for plan in &sftp_plans {
            if !needs_sftp(plan) {
                moved.push(TransferStats::default());
                continue;
            }
            // Directories checked before the cluster is asked about (or
            // hashes) any file in them.
            sftp::prepare_upload(&session, plan, &mut confine).await?;
            let starts = sftp_starts(conn, &session, plan).await?;
            moved.push(sftp::upload_planned(&session, plan, starts, &mut confine).await?);
        }
        Ok::<_, SshError>(moved)
    }
    .await;
    let _ = session.close().await;
    let moved = moved?;
    // One check for every file SFTP sent, whatever item it belongs to: it
    // fails on the first difference, so when it passes each file was checked.
    let sent: Vec<(String, String)> = moved.iter().flat_map(|m| m.sent.iter().cloned()).collect();
    verify::check_upload(conn, &sent).await?;
    let ranged: Vec<_> = moved
        .iter()
        .flat_map(|m| m.ranged.iter().cloned())
        .collect();
    verify::check_ranges(conn, &ranged).await?;
    for (i, m) in moved.into_iter().enumerate() {
        let verified = (m.sent.len() + m.ranged.len()) as u32 + m.unchanged;
        if let (Some(s), Some(c)) = (stats.get_mut(i), checked.get_mut(i)) {
            s.files += m.files;
            s.bytes += m.bytes;
            s.unchanged += m.unchanged;
            s.resumed_bytes += m.resumed_bytes;
            s.sent.extend(m.sent);
            s.ranged.extend(m.ranged);
            *c += verified;
        }
    }
    Ok(stats.into_iter().zip(checked).collect())
}

/// How to send each file of `plan`: skip what the cluster already holds,
/// resume what an interrupted upload left, else whole.
async fn sftp_starts(
    conn: &Connection,
    session: &SftpSession,
    plan: &UploadPlan,
) -> Result<Vec<Start>, SshError> {
    let there = sftp::remote_sizes(session, plan).await?;
    let reusable: Vec<&str> = plan
        .files
        .iter()
        .filter(|f| there.get(&f.remote).is_some_and(|&r| may_reuse(r, f.size)))
        .map(|f| f.remote.as_str())
        .collect();
    let theirs = if reusable.is_empty() {
        HashMap::new()
    } else {
        verify::remote_hashes_for_reuse(conn, &reusable).await?.0
    };
    let mut starts = Vec::with_capacity(plan.files.len());
    for job in &plan.files {
        let held = there.get(&job.remote).copied();
        let start = match (held, theirs.get(&job.remote)) {
            (Some(len), Some(hash)) => reuse(&job.local, job.size, len, hash).await?,
            _ => Start::Fresh,
        };
        starts.push(start);
    }
    Ok(starts)
}

/// Download `remote` to `local` over `conn`, each file checked against the
/// cluster's hash before it replaces anything. `remote` must resolve inside
/// `root` (the profile's `remoteRoot`, SFTP form) on the cluster, and its
/// files together be at most `max_bytes` (`host.maxDownloadBytes`).
pub async fn download(
    conn: &Connection,
    remote: &str,
    target: &Target,
    root: &str,
    max_bytes: u64,
) -> Result<TransferStats, SshError> {
    crate::confine::check_root(conn, root).await?;
    let session = conn.open_sftp().await?;
    let moved = async {
        let confine = Confine::resolve(&session, root, max_bytes, false).await?;
        let plan = sftp::plan_download(&session, remote, target, &confine).await?;
        let base = target.base();
        // Hashed before anything moves: the files a local file of the same
        // size may already be (skipped when the hashes agree).
        let mut maybe_there = Vec::new();
        for job in &plan.files {
            if regular_len(base, &job.local) == Some(job.size) {
                maybe_there.push(job.remote.as_str());
            }
        }
        let known = if maybe_there.is_empty() {
            HashMap::new()
        } else {
            verify::remote_hashes(conn, &maybe_there).await?.0
        };
        let mut starts = Vec::with_capacity(plan.files.len());
        for job in &plan.files {
            starts.push(download_start(base, job, known.get(&job.remote)).await?);
        }
        // The others are hashed on the cluster while they are fetched.
        let later: Vec<String> = plan
            .files
            .iter()
            .zip(&starts)
            .filter(|(job, start)| {
                !matches!(start, Start::Unchanged) && !known.contains_key(&job.remote)
            })
            .map(|(job, _)| job.remote.clone())
            .collect();
        let pending = (!later.is_empty()).then(|| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let paths: Vec<&str> = later.iter().map(String::as_str).collect();
                Ok(verify::remote_hashes(&conn, &paths).await?.0)
            })
        });
        let mut expected = sftp::Expected::new(known, pending);
        sftp::download_planned(conn, &session, &plan, starts, Some(&mut expected), &confine).await
    }
    .await;
    let _ = session.close().await;
    moved
}

/// Files up to this size travel in bundles.
const BUNDLE_FILE_MAX: u64 = 1 << 20;
/// The most a bundle holds in memory before it is sent (4 in flight).
const BUNDLE_BYTES: usize = 8 << 20;
const BUNDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The deepest directory that holds every file of `files` and is or holds
/// every directory of `dirs` (`/`-separated; absolute paths keep their
/// leading `/`).
fn common_dir<'a>(
    files: impl Iterator<Item = &'a str>,
    dirs: impl Iterator<Item = &'a str>,
) -> String {
    let components = |path: &'a str, is_dir: bool| -> Vec<&'a str> {
        let mut parts: Vec<&str> = path.split('/').collect();
        // A file's own name, or the empty part after a directory's final `/`.
        if !is_dir || (parts.len() > 1 && parts.last() == Some(&"")) {
            parts.pop();
        }
        parts
    };
    let mut common: Option<Vec<&str>> = None;
    let all = files
        .map(|f| components(f, false))
        .chain(dirs.map(|d| components(d, true)));
    for dir in all {
        common = Some(match common {
            None => dir,
            Some(c) => c
                .iter()
                .zip(&dir)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    let parts = common.unwrap_or_default();
    match parts.as_slice() {
        [] => ".".to_string(),
        [""] => "/".to_string(),
        _ => parts.join("/"),
    }
}

/// `path` relative to the directory `base` (which holds it).
fn relative_to<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    match base {
        "." => Some(path),
        "/" => path.strip_prefix('/'),
        _ => path
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('/')),
    }
}

/// Send the `small` files of `plans` as tar streams: each is one command
/// that checks and makes the directories inside `root`, unpacks the stream
/// and hashes what it wrote (names relative to the common base); a link
/// out of the root fails the whole upload with `SshError::Denied`. Four streams are in flight at a
/// time: the next is read from disk while others unpack, and the cluster
/// creates files side by side. Files whose hash comes back equal are done
/// (added to `stats` and `checked`); the others — tar missing or failing, a
/// name no stream can carry — are returned as `(item, remote path)` for
/// SFTP.
async fn send_bundles(
    conn: &Connection,
    root: &str,
    plans: &[UploadPlan],
    small: &[(usize, &FileJob<LocalFile>)],
    stats: &mut [TransferStats],
    checked: &mut [u32],
) -> Result<Vec<(usize, String)>, SshError> {
    // Every directory the items need, and every small file, under one base.
    let dirs: Vec<&str> = plans
        .iter()
        .flat_map(|p| std::iter::once(p.base_dir.as_str()).chain(p.dirs.iter().map(String::as_str)))
        .filter(|d| !d.is_empty())
        .collect();
    let base = common_dir(
        small.iter().map(|(_, f)| f.remote.as_str()),
        dirs.iter().copied(),
    );
    // GNU tar (1.34, seen here) resolves a member's path through the file
    // system: a member `a/f` whose `a` a job made a symlink to somewhere
    // else is written there (it replaces a symlink at the member's own name,
    // though). `mkdir -p` follows links too. So the command itself, before
    // tar reads a byte, walks from the root (`cd -P`, resolved by `pwd -P`)
    // down every directory the streams use, one component at a time, parents
    // first ([`DIR_CHECK`]): a real directory is fine (its parent was
    // checked), a symlink only when `cd -P` into it lands inside the root, a
    // missing one is made (`mkdir` of one name). The files' own names are
    // looked at too: a symlink or a device there is refused ([`FILE_CHECK`]).
    // Done in the same command that unpacks, so only a job racing this very
    // instant could swap a directory in between (SFTP has the same window).
    // The stream holds files only, so tar never replaces or re-permissions a
    // directory. Every stream repeats the checks (several run at once); each
    // costs a few builtins per directory.
    let Some(base_rel) = below(&base, root) else {
        // Not below the root by its text: cannot happen after the grants;
        // SFTP, which checks every path on its own, then carries them.
        return Ok(small.iter().map(|(i, f)| (*i, f.remote.clone())).collect());
    };
    let chain = dir_chain(dirs.iter().filter_map(|d| below(d, root)));
    let mut make_dirs = format!(
        "{} {DIR_CHECK} {FILE_CHECK} mkdir -p -- {root} && cd -P -- {root} && r=$(pwd -P; printf x) && r=${{r%?x}}",
        crate::remote_confine::root_check(
            &crate::confine::root_word(root),
            &format!(
                "printf '{DENIED_MARK}remoteRoot passes through a symbolic link a job could replace\\n' >&2; exit {DENIED_EXIT}"
            )
        ),
        root = quote_word(root)
    );
    for dir in &chain {
        make_dirs.push_str(" && d ");
        make_dirs.push_str(&verify::path_word(dir));
    }
    make_dirs.push_str(" && cd -- ");
    make_dirs.push_str(&if base_rel.is_empty() {
        ".".to_string()
    } else {
        verify::path_word(&base_rel)
    });
    let Some(room) = verify::COMMAND_BYTES.checked_sub(make_dirs.len() + 400) else {
        // Too many to name in one command: made over SFTP, one by one.
        return Ok(small.iter().map(|(i, f)| (*i, f.remote.clone())).collect());
    };
    let jobs: std::sync::Arc<Vec<(usize, FileJob<LocalFile>)>> =
        std::sync::Arc::new(small.iter().map(|(i, f)| (*i, (*f).clone())).collect());
    let mut leftovers = Vec::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        if next < jobs.len() && in_flight.len() < BUNDLES_IN_FLIGHT {
            let (jobs_now, base_now) = (jobs.clone(), base.clone());
            let batch =
                tokio::task::spawn_blocking(move || build_batch(&jobs_now, next, &base_now, room))
                    .await
                    .map_err(|e| SshError::LocalIo(format!("building a bundle stopped: {e}")))??;
            next = batch.end;
            leftovers.extend(batch.leftovers);
            if batch.carried.is_empty() {
                continue;
            }
            let plain = batch.carried.iter().all(|c| !c.name.contains(['\n', '\\']));
            let words: Vec<String> = batch
                .carried
                .iter()
                .map(|c| verify::path_word(&c.name))
                .collect();
            let command = verify::at_home(&format!(
                "{make_dirs} && set -- {} && f \"$@\" && tar -x --no-overwrite-dir -f - && {{ {}; }}",
                words.join(" "),
                verify::hash_args(plain),
            ));
            let conn = conn.clone();
            in_flight.spawn(async move {
                let out = conn
                    .exec(&command, Some(&batch.bytes), BUNDLE_TIMEOUT, 16 << 20)
                    .await;
                (out, batch.carried)
            });
            continue;
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        let (out, carried) =
            done.map_err(|e| SshError::LocalIo(format!("sending a bundle stopped: {e}")))?;
        let out = out?;
        if out.exit_code == Some(DENIED_EXIT) {
            return Err(bundle_denied(root, &out.stderr));
        }
        let theirs = verify::parse_sha256sum(&String::from_utf8_lossy(&out.stdout));
        for c in carried {
            match theirs.get(&verify::printed_name(&c.name)) {
                Some(hash) if *hash == c.sha256 => {
                    if let (Some(s), Some(n)) = (stats.get_mut(c.item), checked.get_mut(c.item)) {
                        s.files += 1;
                        s.bundled += 1;
                        s.bytes += c.bytes;
                        s.sent.push((c.remote, c.sha256));
                        *n += 1;
                    }
                }
                // Not there, or not intact: sent again over SFTP (and checked there).
                _ => leftovers.push((c.item, c.remote)),
            }
        }
    }
    Ok(leftovers)
}

/// The exit code of a bundle command that found a link leading out.
const DENIED_EXIT: i32 = 97;
/// What a bundle command's stderr starts a refusal with.
const DENIED_MARK: &str = "cluster-slurm-denied: ";

/// `d DIR`: DIR (relative to the resolved root `$r`, the current directory,
/// its parent already checked) is a directory inside the root, made if
/// missing; a symlink counts only when it resolves inside `$r`. Exit 97 on
/// a link out, 98 when it is something else (the files then go over SFTP,
/// which reports it).
const DIR_CHECK: &str = r#"d() { if [ -L "$1" ]; then t=$(cd -P -- "$1" 2>/dev/null && pwd -P && printf x) || { printf 'cluster-slurm-denied: %s/%s is a symbolic link to no directory\n' "$r" "$1" >&2; exit 97; }; t=${t%?x}; case "$t/" in "${r%/}"/*) ;; *) printf 'cluster-slurm-denied: %s/%s is a symbolic link that resolves to %s, outside %s\n' "$r" "$1" "$t" "$r" >&2; exit 97;; esac; elif [ -d "$1" ]; then :; elif [ -e "$1" ]; then printf '%s exists and is not a directory\n' "$1" >&2; exit 98; else mkdir -- "$1" 2>/dev/null || { [ -d "$1" ] && [ ! -L "$1" ]; } || { printf 'cannot make %s\n' "$1" >&2; exit 98; }; fi; };"#;

/// `f NAME...`: no NAME (relative to the current directory) is a symlink,
/// a device, a FIFO or a socket.
const FILE_CHECK: &str = r#"f() { for n do if [ -L "$n" ]; then printf 'cluster-slurm-denied: %s/%s is a symbolic link; an upload never writes through one\n' "$(pwd -P)" "$n" >&2; exit 97; elif [ -e "$n" ] && [ ! -f "$n" ] && [ ! -d "$n" ]; then printf 'cluster-slurm-denied: %s/%s is not a regular file\n' "$(pwd -P)" "$n" >&2; exit 97; fi; done; };"#;

/// The refusal a bundle command printed, as an error naming the root.
fn bundle_denied(root: &str, stderr: &[u8]) -> SshError {
    let said = String::from_utf8_lossy(stderr);
    let what: Vec<&str> = said
        .lines()
        .filter_map(|l| l.strip_prefix(DENIED_MARK))
        .collect();
    let what = if what.is_empty() {
        "a path leads out of it".to_string()
    } else {
        what.join("; ")
    };
    SshError::Denied(format!(
        "upload below remoteRoot {}: {what}; nothing was written through it",
        crate::confine::shown(root)
    ))
}

/// `path` relative to the root `root` (both SFTP form): `""` for the root
/// itself; None when it is not below it.
fn below(path: &str, root: &str) -> Option<String> {
    let root = match root.trim_end_matches('/') {
        "" => "/",
        r => r,
    };
    let path = match path.trim_end_matches('/') {
        "" if path.starts_with('/') => "/",
        p => p,
    };
    if path == root {
        return Some(String::new());
    }
    relative_to(path, root).map(str::to_string)
}

/// Every directory of `rels` (relative paths) and each of its ancestors,
/// once, each after its parent.
fn dir_chain(rels: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for rel in rels {
        let mut at = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if seen.insert(at.clone()) {
                out.push(at.clone());
            }
        }
    }
    out
}

/// Tar streams unpacking on the cluster at once, each of at most
/// `BUNDLE_FILES` files: creating files is what takes the time there (one
/// `tar -x` of 10,000 files of 1 KiB took 0.2–3 s on the testbed's disk),
/// and parallel file systems on clusters create files faster side by side.
/// On the testbed, 10,000 files took 1.1 s as 2 streams of 5,000 at once and
/// 0.45 s as 10 streams of 1,000, 4 at once.
const BUNDLES_IN_FLIGHT: usize = 4;
const BUNDLE_FILES: usize = 1000;

/// A file in a tar stream.
struct Carried {
    item: usize,
    remote: String,
    /// Its name in the stream: the path relative to the base.
    name: String,
    sha256: String,
    bytes: u64,
}

/// One tar stream, built from `jobs[start..end]`.
struct Batch {
    bytes: Vec<u8>,
    carried: Vec<Carried>,
    /// Files no stream can carry (a name tar cannot hold).
    leftovers: Vec<(usize, String)>,
    end: usize,
}

/// Read the files of `jobs` from `start` on into one tar stream, until it
/// holds `BUNDLE_BYTES` or `BUNDLE_FILES` files, or its names would not fit
/// `room` bytes of command (the cluster hashes each by name). Blocking: run
/// off the async threads.
fn build_batch(
    jobs: &[(usize, FileJob<LocalFile>)],
    start: usize,
    base: &str,
    room: usize,
) -> Result<Batch, SshError> {
    let mut bundle = Bundle::new();
    let mut batch = Batch {
        bytes: Vec::new(),
        carried: Vec::new(),
        leftovers: Vec::new(),
        end: start,
    };
    let mut names_len = 0;
    for (item, job) in jobs.iter().skip(start) {
        let word_len = |n: &str| verify::path_word(n).len() + 1;
        // A name too long for any command goes over SFTP; it ends no stream.
        let name = relative_to(&job.remote, base).filter(|n| word_len(n) <= room);
        let names_after = names_len + name.map_or(0, word_len);
        if !batch.carried.is_empty()
            && (bundle.len() + job.size as usize > BUNDLE_BYTES
                || names_after > room
                || batch.carried.len() >= BUNDLE_FILES)
        {
            break;
        }
        batch.end += 1;
        let Some(name) = name else {
            batch.leftovers.push((*item, job.remote.clone()));
            continue;
        };
        let read_err = |e: std::io::Error| {
            SshError::LocalIo(format!("reading {}: {e}", job.local.shown().display()))
        };
        let mut data = Vec::new();
        job.local
            .open()
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut data))
            .map_err(read_err)?;
        if bundle.add(name, job.mode, &data).is_err() {
            batch.leftovers.push((*item, job.remote.clone()));
            continue;
        }
        names_len = names_after;
        batch.carried.push(Carried {
            item: *item,
            remote: job.remote.clone(),
            name: name.to_string(),
            sha256: format!("{:x}", Sha256::digest(&data)),
            bytes: data.len() as u64,
        });
    }
    batch.bytes = bundle.finish();
    Ok(batch)
}

/// A destination file of `held` bytes may be the source file of `size`
/// bytes, or a prefix of it.
fn may_reuse(held: u64, size: u64) -> bool {
    held <= size && (held > 0 || size == 0)
}

/// How to send `local` (`size` bytes) to a destination that holds `held`
/// bytes hashing to `held_hash`.
async fn reuse(
    local: &LocalFile,
    size: u64,
    held: u64,
    held_hash: &str,
) -> Result<Start, SshError> {
    if !may_reuse(held, size) {
        return Ok(Start::Fresh);
    }
    let shown = local.shown();
    let opened = local
        .open()
        .map_err(|e| SshError::LocalIo(format!("opening {}: {e}", shown.display())))?;
    let prefix = sftp::hash_prefix(opened, shown, held).await?;
    Ok(if sftp::hex_of(&prefix) != held_hash {
        Start::Fresh
    } else if held == size {
        Start::Unchanged
    } else {
        Start::Resume {
            offset: held,
            prefix,
        }
    })
}

/// Skip a local file that already is the remote one; resume a partial file
/// an interrupted download left (checked by the final hash). Both are read
/// below `base` without following any link.
async fn download_start(
    base: &Base,
    job: &FileJob,
    theirs: Option<&String>,
) -> Result<Start, SshError> {
    if let (Some(hash), Some(len)) = (theirs, regular_len(base, &job.local))
        && len == job.size
    {
        let mine = local_prefix(base, &job.local, len).await?;
        if &sftp::hex_of(&mine) == hash {
            return Ok(Start::Unchanged);
        }
    }
    let partial = sftp::partial_path(&job.local)?;
    match regular_len(base, &partial) {
        Some(len) if len > 0 && len < job.size => Ok(Start::Resume {
            offset: len,
            prefix: local_prefix(base, &partial, len).await?,
        }),
        _ => Ok(Start::Fresh),
    }
}

/// The length of the regular file `rel` below `base`, reached through real
/// directories only; None for anything else (a link, a directory, nothing).
fn regular_len(base: &Base, rel: &Path) -> Option<u64> {
    let (parent, name) = local_fs::split(rel).ok()?;
    let dir = base.walk(&parent, Create::No).ok()?;
    let meta = dir.symlink_metadata(&name).ok()?;
    meta.is_file().then(|| meta.len())
}

/// The SHA-256 state after the first `len` bytes of the regular file `rel`
/// below `base`.
async fn local_prefix(base: &Base, rel: &Path, len: u64) -> Result<Sha256, SshError> {
    let shown = base.show(rel);
    let opened = local_fs::split(rel)
        .and_then(|(parent, name)| {
            let dir = base.walk(&parent, Create::No)?;
            local_fs::open_regular(&dir, &name, false)
        })
        .map_err(|e| SshError::LocalIo(format!("opening {}: {e}", shown.display())))?;
    sftp::hash_prefix(opened, &shown, len).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// A test's own file, held open as a single-file upload holds it.
    fn held(path: &Path) -> LocalFile {
        LocalFile::Held {
            file: Arc::new(std::fs::File::open(path).unwrap()),
            shown: path.to_path_buf(),
        }
    }

    #[tokio::test]
    async fn reuse_skips_equal_files_resumes_prefixes_and_resends_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("data");
        std::fs::write(&f, b"0123456789").unwrap();
        let hash = |b: &[u8]| {
            use sha2::{Digest, Sha256};
            format!("{:x}", Sha256::digest(b))
        };
        assert!(matches!(
            reuse(&held(&f), 10, 10, &hash(b"0123456789"))
                .await
                .unwrap(),
            Start::Unchanged
        ));
        assert!(matches!(
            reuse(&held(&f), 10, 4, &hash(b"0123")).await.unwrap(),
            Start::Resume { offset: 4, .. }
        ));
        // Same length or a prefix length, other bytes: sent whole.
        assert!(matches!(
            reuse(&held(&f), 10, 10, &hash(b"0123456780"))
                .await
                .unwrap(),
            Start::Fresh
        ));
        assert!(matches!(
            reuse(&held(&f), 10, 4, &hash(b"x123")).await.unwrap(),
            Start::Fresh
        ));
        // Longer at the destination, or empty while the source is not.
        assert!(matches!(
            reuse(&held(&f), 10, 11, "").await.unwrap(),
            Start::Fresh
        ));
        assert!(matches!(
            reuse(&held(&f), 10, 0, &hash(b"")).await.unwrap(),
            Start::Fresh
        ));
        let empty = d.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            reuse(&held(&empty), 0, 0, &hash(b"")).await.unwrap(),
            Start::Unchanged
        ));
    }

    #[test]
    fn a_bundle_is_based_in_the_deepest_directory_holding_everything() {
        let base =
            |files: &[&str], dirs: &[&str]| common_dir(files.iter().copied(), dirs.iter().copied());
        // The upload's own directory, not its parent: names stay short.
        assert_eq!(
            base(
                &["/r/up/d0/f0", "/r/up/d1/f1"],
                &["/r/up", "/r/up/d0", "/r/up/d1"]
            ),
            "/r/up"
        );
        assert_eq!(base(&["/r/up/f"], &["/r/up/"]), "/r/up");
        // A run: inputs and the script beside them.
        assert_eq!(
            base(
                &["/r/run/inputs/a", "/r/run/job.sh"],
                &["/r/run/inputs", "/r/run"]
            ),
            "/r/run"
        );
        assert_eq!(base(&["/a/f", "/b/g"], &[]), "/");
        assert_eq!(base(&["runs/x/f", "runs/y/g"], &["runs/x"]), "runs");
        assert_eq!(base(&["f"], &[]), ".");
        for (path, base, rel) in [
            ("/r/up/d0/f0", "/r/up", Some("d0/f0")),
            ("/a/f", "/", Some("a/f")),
            ("f", ".", Some("f")),
            ("/r/upx/f", "/r/up", None),
        ] {
            assert_eq!(relative_to(path, base), rel, "{path} in {base}");
        }
    }

    #[test]
    fn bundles_end_where_their_names_would_not_fit_one_command() {
        let d = tempfile::tempdir().unwrap();
        let jobs: Vec<(usize, FileJob<LocalFile>)> = (0..5)
            .map(|i| {
                let local = d.path().join(format!("f{i}"));
                std::fs::write(&local, format!("file {i}")).unwrap();
                let name = if i == 3 {
                    "x".repeat(60)
                } else {
                    format!("f{i}")
                };
                let job = FileJob {
                    local: held(&local),
                    remote: format!("/r/base/{name}"),
                    size: 6,
                    mode: 0o644,
                    mtime: None,
                };
                (i % 2, job)
            })
            .collect();
        // Room for two short names ("f0 f1 " is 6 bytes), not for the long one.
        let first = build_batch(&jobs, 0, "/r/base", 6).unwrap();
        let names: Vec<&str> = first.carried.iter().map(|c| c.name.as_str()).collect();
        assert_eq!((names, first.end), (vec!["f0", "f1"], 2));
        assert_eq!(
            first
                .carried
                .first()
                .map(|c| (c.item, c.remote.as_str(), c.bytes)),
            Some((0, "/r/base/f0", 6))
        );
        let sha = format!("{:x}", Sha256::digest(b"file 1"));
        assert_eq!(first.carried.get(1).map(|c| &c.sha256), Some(&sha));
        // The stream holds exactly those files: two headers, two padded
        // contents and the two zero blocks of the end.
        assert_eq!(first.bytes.len() % 512, 0);
        assert!(first.bytes.windows(6).any(|w| w == b"file 1"));
        assert!(!first.bytes.windows(6).any(|w| w == b"file 2"));
        // The next stream starts at f2; the long name can never fit, so it
        // is left for SFTP instead of ending every stream.
        let second = build_batch(&jobs, first.end, "/r/base", 6).unwrap();
        let names: Vec<&str> = second.carried.iter().map(|c| c.name.as_str()).collect();
        assert_eq!((names, second.end), (vec!["f2", "f4"], 5));
        assert_eq!(
            second.leftovers,
            vec![(1, format!("/r/base/{}", "x".repeat(60)))]
        );
        // A file outside the base cannot go either.
        let outside = vec![(
            0,
            FileJob {
                remote: "/elsewhere/f".into(),
                ..jobs[0].1.clone()
            },
        )];
        let third = build_batch(&outside, 0, "/r/base", 100).unwrap();
        assert!(third.carried.is_empty());
        assert_eq!(third.leftovers, vec![(0, "/elsewhere/f".to_string())]);
    }

    #[tokio::test]
    async fn a_download_resumes_only_a_shorter_partial_and_skips_an_equal_file() {
        let d = tempfile::tempdir().unwrap();
        let local = d.path().join("out.bin");
        let base = Base::open(d.path()).unwrap();
        let job = FileJob {
            local: PathBuf::from("out.bin"),
            remote: "r/out.bin".into(),
            size: 6,
            mode: 0o644,
            mtime: None,
        };
        let full = {
            use sha2::{Digest, Sha256};
            format!("{:x}", Sha256::digest(b"abcdef"))
        };
        assert!(matches!(
            download_start(&base, &job, Some(&full)).await.unwrap(),
            Start::Fresh
        ));
        std::fs::write(sftp::partial_path(&local).unwrap(), b"abc").unwrap();
        assert!(matches!(
            download_start(&base, &job, Some(&full)).await.unwrap(),
            Start::Resume { offset: 3, .. }
        ));
        std::fs::write(&local, b"abcdef").unwrap();
        assert!(matches!(
            download_start(&base, &job, Some(&full)).await.unwrap(),
            Start::Unchanged
        ));
        // Same size, other content: not skipped (the partial is resumed).
        std::fs::write(&local, b"abcdeX").unwrap();
        assert!(matches!(
            download_start(&base, &job, Some(&full)).await.unwrap(),
            Start::Resume { offset: 3, .. }
        ));
        // A partial that is not shorter than the file is not a prefix.
        std::fs::write(sftp::partial_path(&local).unwrap(), b"abcdefgh").unwrap();
        assert!(matches!(
            download_start(&base, &job, Some(&full)).await.unwrap(),
            Start::Fresh
        ));
    }
}
