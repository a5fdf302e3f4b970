//! Transfers that resume, skip what is already there, and are checked end to
//! end: the decisions around [`crate::sftp`]'s byte moving.
//!
//! Upload (`upload_all`, several items at once): the local trees are walked
//! once. Files of up to 1 MiB travel in tar streams ([`crate::bundle`]),
//! each one command that makes every directory (`mkdir -p`), unpacks the
//! stream (files only) and hashes what it wrote; a file that does not come
//! back intact goes again over SFTP. Larger files go over one SFTP session:
//! when the destination exists, its sizes are listed and the cluster hashes
//! the files that could be reused; a file with the same size and hash is
//! skipped, a shorter one whose hash equals the hash of the local file's
//! first bytes (an interrupted upload) is resumed at its end, anything else
//! is sent whole; then each is compared with the cluster's hash
//! ([`crate::verify::check_upload`]).
//!
//! Download: the remote tree is listed and hashed on the cluster first. A local
//! file with the same size and hash is skipped; the partial file an
//! interrupted download left behind is resumed (its bytes are trusted only
//! until the final hash: a mismatch fetches the file again whole); every file
//! is hashed while it arrives and compared before it replaces anything.

use crate::bundle::Bundle;
use crate::sftp::{self, FileJob, Start, TransferStats, UploadPlan};
use crate::ssh::{Connection, SshError, quote_word};
use crate::verify;
use russh_sftp::client::SftpSession;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Upload `local` to `remote` over `conn`, then check it on the cluster.
/// Returns the transfer's figures and how many files were checked.
pub async fn upload(
    conn: &Connection,
    local: &Path,
    remote: &str,
) -> Result<(TransferStats, u32), SshError> {
    let mut all = upload_all(conn, &[(local.to_path_buf(), remote.to_string())]).await?;
    all.pop()
        .ok_or_else(|| SshError::LocalIo("nothing was uploaded".to_string()))
}

/// Upload each `(local, remote)` item over `conn`, checked on the cluster.
/// Small files of every item travel together: one command makes the
/// directories, unpacks them and hashes them. Larger files go over one SFTP
/// session, skipped when unchanged and resumed when cut off, then checked.
/// Returns, per item, its figures and how many of its files were checked.
pub async fn upload_all(
    conn: &Connection,
    items: &[(PathBuf, String)],
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
    let small: Vec<(usize, &FileJob)> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.files.iter().map(move |f| (i, f)))
        .filter(|(_, f)| f.size <= BUNDLE_FILE_MAX)
        .collect();
    let leftovers: std::collections::HashSet<(usize, String)> = if small.is_empty() {
        Default::default()
    } else {
        send_bundles(conn, &plans, &small, &mut stats, &mut checked)
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
        let mut moved = Vec::with_capacity(sftp_plans.len());
        for plan in &sftp_plans {
            if !needs_sftp(plan) {
                moved.push(TransferStats::default());
                continue;
            }
            let starts = sftp_starts(conn, &session, plan).await?;
            moved.push(sftp::upload_planned(&session, plan, starts).await?);
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
    for (i, m) in moved.into_iter().enumerate() {
        let verified = m.sent.len() as u32 + m.unchanged;
        if let (Some(s), Some(c)) = (stats.get_mut(i), checked.get_mut(i)) {
            s.files += m.files;
            s.bytes += m.bytes;
            s.unchanged += m.unchanged;
            s.resumed_bytes += m.resumed_bytes;
            s.sent.extend(m.sent);
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
        verify::remote_hashes(conn, &reusable).await?.0
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
/// cluster's hash before it replaces anything.
pub async fn download(
    conn: &Connection,
    remote: &str,
    local: &Path,
) -> Result<TransferStats, SshError> {
    let session = conn.open_sftp().await?;
    let moved = async {
        let plan = sftp::plan_download(&session, remote, local).await?;
        let paths: Vec<&str> = plan.files.iter().map(|f| f.remote.as_str()).collect();
        let (theirs, _) = verify::remote_hashes(conn, &paths).await?;
        let mut starts = Vec::with_capacity(plan.files.len());
        for job in &plan.files {
            starts.push(download_start(job, theirs.get(&job.remote)).await?);
        }
        sftp::download_planned(&session, &plan, starts, Some(&theirs)).await
    }
    .await;
    let _ = session.close().await;
    moved
}

/// Files up to this size travel in bundles.
const BUNDLE_FILE_MAX: u64 = 1 << 20;
/// The most a bundle holds in memory before it is sent.
const BUNDLE_BYTES: usize = 16 << 20;
const BUNDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The deepest directory that holds every path in `paths` (`/`-separated;
/// absolute paths keep their leading `/`).
fn common_dir<'a>(paths: impl Iterator<Item = &'a str>) -> String {
    let mut common: Option<Vec<&str>> = None;
    for path in paths {
        let parts: Vec<&str> = path.split('/').collect();
        let dir = parts
            .get(..parts.len().saturating_sub(1))
            .unwrap_or_default();
        common = Some(match common {
            None => dir.to_vec(),
            Some(c) => c
                .iter()
                .zip(dir)
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
/// that makes the directories, unpacks the stream and hashes what it wrote.
/// Files whose hash comes back equal are done (added to `stats` and
/// `checked`); the others — tar missing or failing, a name no stream can
/// carry — are returned as `(item, remote path)` for SFTP.
async fn send_bundles(
    conn: &Connection,
    plans: &[UploadPlan],
    small: &[(usize, &FileJob)],
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
        small
            .iter()
            .map(|(_, f)| f.remote.as_str())
            .chain(dirs.iter().copied()),
    );
    // The directories are made by `mkdir -p` (which follows a symlinked
    // root and leaves existing directories as they are); the stream holds
    // files only, so tar never replaces or re-permissions a directory.
    let mut make_dirs = format!("mkdir -p -- {}", quote_word(&base));
    for dir in &dirs {
        make_dirs.push(' ');
        make_dirs.push_str(&verify::path_word(dir));
    }
    if make_dirs.len() > verify::COMMAND_BYTES {
        // Too many to name in one command: made over SFTP, one by one.
        return Ok(small.iter().map(|(i, f)| (*i, f.remote.clone())).collect());
    }
    let mut leftovers = Vec::new();
    let mut rest = small;
    while !rest.is_empty() {
        let mut bundle = Bundle::new();
        let mut carried: Vec<(usize, &FileJob, String, u64)> = Vec::new();
        let mut taken = 0;
        for (i, job) in rest {
            if !carried.is_empty() && bundle.len() + job.size as usize > BUNDLE_BYTES {
                break;
            }
            taken += 1;
            let Some(name) = relative_to(&job.remote, &base) else {
                leftovers.push((*i, job.remote.clone()));
                continue;
            };
            let data = tokio::fs::read(&job.local)
                .await
                .map_err(|e| SshError::LocalIo(format!("reading {}: {e}", job.local.display())))?;
            if bundle.add(name, job.mode, &data).is_err() {
                leftovers.push((*i, job.remote.clone()));
                continue;
            }
            carried.push((
                *i,
                job,
                format!("{:x}", Sha256::digest(&data)),
                data.len() as u64,
            ));
        }
        rest = rest.get(taken..).unwrap_or_default();
        let paths: Vec<&str> = carried
            .iter()
            .map(|(_, job, _, _)| job.remote.as_str())
            .collect();
        let words: Vec<String> = paths.iter().map(|p| verify::path_word(p)).collect();
        let hash_inline = make_dirs.len() + words.iter().map(|w| w.len() + 1).sum::<usize>()
            <= verify::COMMAND_BYTES;
        let mut command = format!(
            "{make_dirs} && tar -x --no-overwrite-dir -f - -C {}",
            quote_word(&base)
        );
        if hash_inline && !words.is_empty() {
            let plain = paths.iter().all(|p| !p.contains(['\n', '\\']));
            command.push_str(&format!(
                " && {{ {}; }}",
                verify::hash_command(&words, plain)
            ));
        }
        let out = conn
            .exec(&command, Some(&bundle.finish()), BUNDLE_TIMEOUT, 16 << 20)
            .await?;
        let theirs = if hash_inline {
            verify::parse_sha256sum(&String::from_utf8_lossy(&out.stdout))
        } else if out.exit_code == Some(0) {
            verify::remote_hashes(conn, &paths).await?.0
        } else {
            HashMap::new()
        };
        for (i, job, mine, bytes) in carried {
            let printed = verify::printed_name(&job.remote);
            match theirs.get(&printed).or_else(|| theirs.get(&job.remote)) {
                Some(hash) if *hash == mine => {
                    if let (Some(s), Some(c)) = (stats.get_mut(i), checked.get_mut(i)) {
                        s.files += 1;
                        s.bundled += 1;
                        s.bytes += bytes;
                        s.sent.push((job.remote.clone(), mine));
                        *c += 1;
                    }
                }
                // Not there, or not intact: sent again over SFTP (and checked there).
                _ => leftovers.push((i, job.remote.clone())),
            }
        }
    }
    Ok(leftovers)
}

/// A destination file of `held` bytes may be the source file of `size`
/// bytes, or a prefix of it.
fn may_reuse(held: u64, size: u64) -> bool {
    held <= size && (held > 0 || size == 0)
}

/// How to send `local` (`size` bytes) to a destination that holds `held`
/// bytes hashing to `held_hash`.
async fn reuse(local: &Path, size: u64, held: u64, held_hash: &str) -> Result<Start, SshError> {
    if !may_reuse(held, size) {
        return Ok(Start::Fresh);
    }
    let prefix = sftp::hash_prefix(local, held).await?;
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
/// an interrupted download left (checked by the final hash).
async fn download_start(job: &FileJob, theirs: Option<&String>) -> Result<Start, SshError> {
    if let (Some(hash), Some(len)) = (theirs, regular_len(&job.local).await)
        && len == job.size
    {
        let mine = sftp::hash_prefix(&job.local, len).await?;
        if &sftp::hex_of(&mine) == hash {
            return Ok(Start::Unchanged);
        }
    }
    let partial = sftp::partial_path(&job.local)?;
    match regular_len(&partial).await {
        Some(len) if len > 0 && len < job.size => Ok(Start::Resume {
            offset: len,
            prefix: sftp::hash_prefix(&partial, len).await?,
        }),
        _ => Ok(Start::Fresh),
    }
}

/// The length of a regular file that is not a symlink.
async fn regular_len(path: &Path) -> Option<u64> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.file_type().is_file() => Some(m.len()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            reuse(&f, 10, 10, &hash(b"0123456789")).await.unwrap(),
            Start::Unchanged
        ));
        assert!(matches!(
            reuse(&f, 10, 4, &hash(b"0123")).await.unwrap(),
            Start::Resume { offset: 4, .. }
        ));
        // Same length or a prefix length, other bytes: sent whole.
        assert!(matches!(
            reuse(&f, 10, 10, &hash(b"0123456780")).await.unwrap(),
            Start::Fresh
        ));
        assert!(matches!(
            reuse(&f, 10, 4, &hash(b"x123")).await.unwrap(),
            Start::Fresh
        ));
        // Longer at the destination, or empty while the source is not.
        assert!(matches!(reuse(&f, 10, 11, "").await.unwrap(), Start::Fresh));
        assert!(matches!(
            reuse(&f, 10, 0, &hash(b"")).await.unwrap(),
            Start::Fresh
        ));
        let empty = d.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            reuse(&empty, 0, 0, &hash(b"")).await.unwrap(),
            Start::Unchanged
        ));
    }

    #[tokio::test]
    async fn a_download_resumes_only_a_shorter_partial_and_skips_an_equal_file() {
        let d = tempfile::tempdir().unwrap();
        let local = d.path().join("out.bin");
        let job = FileJob {
            local: local.clone(),
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
            download_start(&job, Some(&full)).await.unwrap(),
            Start::Fresh
        ));
        std::fs::write(sftp::partial_path(&local).unwrap(), b"abc").unwrap();
        assert!(matches!(
            download_start(&job, Some(&full)).await.unwrap(),
            Start::Resume { offset: 3, .. }
        ));
        std::fs::write(&local, b"abcdef").unwrap();
        assert!(matches!(
            download_start(&job, Some(&full)).await.unwrap(),
            Start::Unchanged
        ));
        // Same size, other content: not skipped (the partial is resumed).
        std::fs::write(&local, b"abcdeX").unwrap();
        assert!(matches!(
            download_start(&job, Some(&full)).await.unwrap(),
            Start::Resume { offset: 3, .. }
        ));
        // A partial that is not shorter than the file is not a prefix.
        std::fs::write(sftp::partial_path(&local).unwrap(), b"abcdefgh").unwrap();
        assert!(matches!(
            download_start(&job, Some(&full)).await.unwrap(),
            Start::Fresh
        ));
    }
}
