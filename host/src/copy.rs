//! Transfers that resume, skip what is already there, and are checked end to
//! end: the decisions around the commands that move the bytes
//! ([`crate::put`] up, [`crate::fetch`] down; planned in [`crate::sftp`]).
//!
//! Upload (`upload_all`, several items at once): the local trees are walked
//! once. Files of up to 1 MiB travel in tar streams ([`crate::bundle`]) of
//! at most 1,000 files, each one command that, directory by directory,
//! enters the directory from the root, unpacks that directory's archive
//! there and hashes what it wrote ([`crate::put::unpack_command`]); four
//! streams are in flight at a time. A file that does not come back intact
//! goes again on its own. Larger files go one command each
//! ([`crate::put::put`]): when the destination exists, its sizes are listed
//! over SFTP and the cluster hashes the files that could be reused; a file
//! with the same size and hash is skipped, a shorter one whose hash equals
//! the hash of the local file's first bytes (an interrupted upload) is
//! resumed at its end, anything else is sent whole; then each is compared
//! with the cluster's hash ([`crate::verify::check_upload`]). Every write is
//! decided on the cluster in the command that makes it: see [`crate::put`].
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
use crate::ssh::{Connection, SshError};
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
/// Small files of every item travel together: one command makes their
/// directories, unpacks them and hashes them. Larger files go one command
/// each, skipped when unchanged and resumed when cut off, then checked.
/// Returns, per item, its figures and how many of its files were checked.
/// Every item is written only inside `root` (the profile's `remoteRoot`,
/// SFTP form) as the cluster resolves it, decided by the command that
/// writes: see [`crate::put`].
pub async fn upload_all(
    conn: &Connection,
    items: &[(Source, String)],
    root: &str,
) -> Result<Vec<(TransferStats, u32)>, SshError> {
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
        send_bundles(conn, root, &small, &mut stats, &mut checked)
            .await?
            .into_iter()
            .collect()
    };

    // The directories no bundle made (each bundle makes its own): empty
    // ones, and those of the files that go one by one. One command for all,
    // only when there are such.
    let dirs: Vec<&str> = plans
        .iter()
        .flat_map(|p| std::iter::once(p.base_dir.as_str()).chain(p.dirs.iter().map(String::as_str)))
        .collect();
    let bundled = small
        .iter()
        .filter(|(i, f)| !leftovers.contains(&(*i, f.remote.clone())))
        .map(|(_, f)| f.remote.as_str());
    let singles = leftovers.len()
        + plans
            .iter()
            .flat_map(|p| p.files.iter())
            .filter(|f| f.size > BUNDLE_FILE_MAX)
            .count();
    if singles > 0 || !made_by_bundles(root, bundled, &dirs) {
        crate::put::make_dirs(conn, root, &dirs).await?;
    }

    // The rest one by one: larger files, and small ones no bundle carried.
    let single_plans: Vec<UploadPlan> = plans
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
    if single_plans.iter().all(|p| p.files.is_empty()) {
        return Ok(stats.into_iter().zip(checked).collect());
    }
    // What the cluster holds already is listed over SFTP (a plan: the
    // writes decide for themselves). A root a job swapped for a link is
    // refused before SFTP would list through it.
    crate::confine::check_root(conn, root).await?;
    let session = conn.open_sftp().await?;
    let mut starts = Vec::with_capacity(single_plans.len());
    let listed = async {
        for plan in &single_plans {
            starts.push(if plan.files.is_empty() {
                Vec::new()
            } else {
                sftp_starts(conn, &session, plan).await?
            });
        }
        Ok::<_, SshError>(())
    }
    .await;
    let _ = session.close().await;
    listed?;
    let mut moved = Vec::with_capacity(single_plans.len());
    for (plan, starts) in single_plans.iter().zip(starts) {
        moved.push(sftp::upload_planned(conn, plan, starts, root).await?);
    }
    // One check for every file sent on its own, whatever item it belongs
    // to: it fails on the first difference, so when it passes each file
    // was checked.
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

/// True when every directory of `dirs` (below `root`) is the directory of
/// a `bundled` file or one of its ancestors: the bundles' commands made
/// them.
fn made_by_bundles<'a>(root: &str, bundled: impl Iterator<Item = &'a str>, dirs: &[&str]) -> bool {
    let mut made = std::collections::HashSet::new();
    for file in bundled {
        let Ok((dir, _)) = crate::put::split(root, file) else {
            continue;
        };
        let mut at = dir.as_str();
        loop {
            made.insert(at.to_string());
            match at.rsplit_once('/') {
                Some((parent, _)) => at = parent,
                None if !at.is_empty() => at = "",
                None => break,
            }
        }
    }
    dirs.iter().all(|d| {
        crate::put::below(d, root).is_some_and(|rel| {
            let rel: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
            made.contains(&rel.join("/"))
        })
    })
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

/// Send the `small` files of `plans` as tar streams, each one command
/// ([`crate::put::unpack_command`]): every directory's files are a
/// separate archive, unpacked in that directory after the command entered
/// it from the root without leaving it, then hashed there. A link out of
/// the root, or a link or device at a file's name, fails the whole upload
/// with `SshError::Denied`. Four streams are in flight at a time: the next
/// is read from disk while others unpack, and the cluster creates files
/// side by side. Files whose hash comes back equal are done (added to
/// `stats` and `checked`); the others (tar missing or failing, a name no
/// stream can carry) are returned as `(item, remote path)`, to go one by
/// one.
async fn send_bundles(
    conn: &Connection,
    root: &str,
    small: &[(usize, &FileJob<LocalFile>)],
    stats: &mut [TransferStats],
    checked: &mut [u32],
) -> Result<Vec<(usize, String)>, SshError> {
    let room = crate::put::unpack_room(root);
    let jobs: std::sync::Arc<Vec<(usize, FileJob<LocalFile>)>> =
        std::sync::Arc::new(small.iter().map(|(i, f)| (*i, (*f).clone())).collect());
    let mut leftovers = Vec::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        if next < jobs.len() && in_flight.len() < BUNDLES_IN_FLIGHT {
            let (jobs_now, root_now) = (jobs.clone(), root.to_string());
            let batch =
                tokio::task::spawn_blocking(move || build_batch(&jobs_now, next, &root_now, room))
                    .await
                    .map_err(|e| SshError::LocalIo(format!("building a bundle stopped: {e}")))??;
            next = batch.end;
            leftovers.extend(batch.leftovers);
            if batch.carried.is_empty() {
                continue;
            }
            let nonce = crate::fetch::nonce();
            let command = crate::put::unpack_command(root, &nonce, &batch.segments);
            let conn = conn.clone();
            in_flight.spawn(async move {
                let out = conn
                    .exec(&command, Some(&batch.bytes), BUNDLE_TIMEOUT, 16 << 20)
                    .await;
                (out, nonce, batch.carried)
            });
            continue;
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        let (out, nonce, carried) =
            done.map_err(|e| SshError::LocalIo(format!("sending a bundle stopped: {e}")))?;
        let theirs = crate::put::unpacked(root, &nonce, &out?)?;
        for c in carried {
            match theirs.get(&(c.segment, verify::printed_name(&c.name))) {
                Some(hash) if *hash == c.sha256 => {
                    if let (Some(s), Some(n)) = (stats.get_mut(c.item), checked.get_mut(c.item)) {
                        s.files += 1;
                        s.bundled += 1;
                        s.bytes += c.bytes;
                        s.sent.push((c.remote, c.sha256));
                        *n += 1;
                    }
                }
                // Not there, or not intact: sent again on its own (and checked).
                _ => leftovers.push((c.item, c.remote)),
            }
        }
    }
    Ok(leftovers)
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
    /// The segment (directory) of the stream it is in, and its plain name.
    segment: usize,
    name: String,
    sha256: String,
    bytes: u64,
}

/// One tar stream, built from `jobs[start..end]`: an archive per segment,
/// one after another.
struct Batch {
    bytes: Vec<u8>,
    segments: Vec<crate::put::Segment>,
    carried: Vec<Carried>,
    /// Files no stream can carry (a name tar cannot hold, or too long).
    leftovers: Vec<(usize, String)>,
    end: usize,
}

/// Read the files of `jobs` from `start` on into one tar stream, until it
/// holds `BUNDLE_BYTES` or `BUNDLE_FILES` files, or its command would not
/// fit `room` bytes. Consecutive files of one directory (below `root`)
/// share a segment. Blocking: run off the async threads.
fn build_batch(
    jobs: &[(usize, FileJob<LocalFile>)],
    start: usize,
    root: &str,
    room: usize,
) -> Result<Batch, SshError> {
    let mut batch = Batch {
        bytes: Vec::new(),
        segments: Vec::new(),
        carried: Vec::new(),
        leftovers: Vec::new(),
        end: start,
    };
    // The segment being filled: its directory, names and archive.
    let mut open: Option<(crate::put::Segment, Bundle)> = None;
    let mut used = 0;
    let close = |batch: &mut Batch, open: &mut Option<(crate::put::Segment, Bundle)>| {
        // A segment none of whose files went in is left out.
        if let Some((mut segment, bundle)) = open.take().filter(|(s, _)| !s.names.is_empty()) {
            let bytes = bundle.finish();
            segment.len = bytes.len();
            batch.bytes.extend_from_slice(&bytes);
            batch.segments.push(segment);
        }
    };
    for (item, job) in jobs.iter().skip(start) {
        let Ok((dir, name)) = crate::put::split(root, &job.remote) else {
            batch.end += 1;
            batch.leftovers.push((*item, job.remote.clone()));
            continue;
        };
        let same_dir = open.as_ref().is_some_and(|(s, _)| s.dir == dir);
        let word_len = verify::path_word(name).len() + 1;
        let cost = if same_dir {
            word_len
        } else {
            let empty = crate::put::Segment {
                dir: dir.clone(),
                names: Vec::new(),
                len: usize::MAX,
            };
            crate::put::segment_text(usize::MAX, &empty).len() + word_len
        };
        // A name too long for any command goes on its own; it ends no stream.
        let fits_alone = crate::put::segment_text(
            usize::MAX,
            &crate::put::Segment {
                dir: dir.clone(),
                names: vec![name.to_string()],
                len: usize::MAX,
            },
        )
        .len()
            <= room;
        let held = batch.bytes.len() + open.as_ref().map_or(0, |(_, b)| b.len());
        if !batch.carried.is_empty()
            && fits_alone
            && (held + job.size as usize > BUNDLE_BYTES
                || used + cost > room
                || batch.carried.len() >= BUNDLE_FILES)
        {
            break;
        }
        batch.end += 1;
        if !fits_alone {
            batch.leftovers.push((*item, job.remote.clone()));
            continue;
        }
        let read_err = |e: std::io::Error| {
            SshError::LocalIo(format!("reading {}: {e}", job.local.shown().display()))
        };
        // At most the planned size and one byte more: a file the agent
        // extends after the plan (to any size, sparse) is never read whole.
        let mut data = Vec::new();
        job.local
            .open()
            .and_then(|f| {
                std::io::Read::read_to_end(&mut std::io::Read::take(f, job.size + 1), &mut data)
            })
            .map_err(read_err)?;
        if data.len() as u64 != job.size {
            return Err(SshError::LocalIo(format!(
                "{} changed while it was being uploaded ({} bytes when planned, {} now); nothing of it was sent",
                job.local.shown().display(),
                job.size,
                if data.len() as u64 > job.size {
                    "more".to_string()
                } else {
                    data.len().to_string()
                }
            )));
        }
        if !same_dir {
            close(&mut batch, &mut open);
            open = Some((
                crate::put::Segment {
                    dir: dir.clone(),
                    names: Vec::new(),
                    len: 0,
                },
                Bundle::new(),
            ));
        }
        let Some((segment, bundle)) = open.as_mut() else {
            batch.leftovers.push((*item, job.remote.clone()));
            continue;
        };
        if bundle.add(name, job.mode, &data).is_err() {
            batch.leftovers.push((*item, job.remote.clone()));
            continue;
        }
        segment.names.push(name.to_string());
        used += cost;
        batch.carried.push(Carried {
            item: *item,
            remote: job.remote.clone(),
            segment: batch.segments.len(),
            name: name.to_string(),
            sha256: format!("{:x}", Sha256::digest(&data)),
            bytes: data.len() as u64,
        });
    }
    close(&mut batch, &mut open);
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
    fn directories_are_made_apart_only_where_no_bundle_made_them() {
        let files = ["r/up/a", "r/up/sub/deeper/b"];
        let made = |dirs: &[&str]| made_by_bundles("r", files.iter().copied(), dirs);
        assert!(made(&["r/up", "r/up/sub", "r/up/sub/deeper", "r/up/sub/"]));
        assert!(made(&["r"]));
        // An empty directory, or one outside the root's text.
        assert!(!made(&["r/up", "r/up/empty"]));
        assert!(!made(&["elsewhere"]));
        assert!(!made_by_bundles("r", std::iter::empty(), &["r/up"]));
    }

    #[test]
    fn bundles_end_where_their_command_would_not_fit_and_split_by_directory() {
        let d = tempfile::tempdir().unwrap();
        let job = |i: usize, remote: String| {
            let local = d.path().join(format!("f{i}"));
            std::fs::write(&local, format!("file {i}")).unwrap();
            FileJob {
                local: held(&local),
                remote,
                size: 6,
                mode: 0o644,
                mtime: None,
            }
        };
        let jobs: Vec<(usize, FileJob<LocalFile>)> = (0..5)
            .map(|i| {
                let name = if i == 3 {
                    "x".repeat(60)
                } else {
                    format!("f{i}")
                };
                (i % 2, job(i, format!("/r/base/{name}")))
            })
            .collect();
        // Room for one segment with two short names ("f0 f1 " is 6 bytes),
        // not for the long one.
        let segment = |dir: &str, names: &[&str]| crate::put::Segment {
            dir: dir.to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
            len: usize::MAX,
        };
        let room = crate::put::segment_text(usize::MAX, &segment("base", &[])).len() + 6;
        let first = build_batch(&jobs, 0, "/r", room).unwrap();
        let names: Vec<&str> = first.carried.iter().map(|c| c.name.as_str()).collect();
        assert_eq!((names, first.end), (vec!["f0", "f1"], 2));
        assert_eq!(
            first
                .carried
                .first()
                .map(|c| (c.item, c.remote.as_str(), c.segment, c.bytes)),
            Some((0, "/r/base/f0", 0, 6))
        );
        let sha = format!("{:x}", Sha256::digest(b"file 1"));
        assert_eq!(first.carried.get(1).map(|c| &c.sha256), Some(&sha));
        // One segment, in `base`, holding exactly those files: two
        // headers, two padded contents and the two zero blocks of the end.
        assert_eq!(first.segments.len(), 1);
        let only = first.segments.first().unwrap();
        assert_eq!(
            (only.dir.as_str(), only.names.clone()),
            ("base", vec!["f0".to_string(), "f1".to_string()])
        );
        assert_eq!(
            (only.len, first.bytes.len()),
            (4 * 512 + 1024, 4 * 512 + 1024)
        );
        assert!(first.bytes.windows(6).any(|w| w == b"file 1"));
        assert!(!first.bytes.windows(6).any(|w| w == b"file 2"));
        // The next stream starts at f2; the long name can never fit, so it
        // is left to go on its own instead of ending every stream.
        let second = build_batch(&jobs, first.end, "/r", room).unwrap();
        let names: Vec<&str> = second.carried.iter().map(|c| c.name.as_str()).collect();
        assert_eq!((names, second.end), (vec!["f2", "f4"], 5));
        assert_eq!(
            second.leftovers,
            vec![(1, format!("/r/base/{}", "x".repeat(60)))]
        );
        // A file outside the root cannot go either.
        let outside = vec![(0, job(9, "/elsewhere/f".into()))];
        let third = build_batch(&outside, 0, "/r", 100_000).unwrap();
        assert!(third.carried.is_empty());
        assert_eq!(third.leftovers, vec![(0, "/elsewhere/f".to_string())]);
        // Files of two directories: a segment (and an archive) each, in
        // order; tar only ever sees plain names.
        let two = vec![
            (0, job(5, "/r/a/f5".into())),
            (0, job(6, "/r/a/b/f6".into())),
            (0, job(7, "/r/f7".into())),
        ];
        let fourth = build_batch(&two, 0, "/r", 100_000).unwrap();
        let dirs: Vec<(&str, usize)> = fourth
            .segments
            .iter()
            .map(|s| (s.dir.as_str(), s.names.len()))
            .collect();
        assert_eq!(dirs, vec![("a", 1), ("a/b", 1), ("", 1)]);
        let segs: Vec<usize> = fourth.carried.iter().map(|c| c.segment).collect();
        assert_eq!(segs, vec![0, 1, 2]);
        assert_eq!(
            fourth.segments.iter().map(|s| s.len).sum::<usize>(),
            fourth.bytes.len()
        );
        assert!(!fourth.bytes.windows(5).any(|w| w == b"b/f6\0"));
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
