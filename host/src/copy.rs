//! Transfers that resume, skip what is already there, and are checked end to
//! end: the decisions around [`crate::sftp`]'s byte moving.
//!
//! Upload: the local tree is walked once; when the destination exists, the
//! sizes already there are listed over SFTP and the cluster hashes the files
//! that could be reused (one `sha256sum` per 96 KiB of paths). A file with
//! the same size and hash is skipped; a shorter one whose hash equals the
//! hash of the local file's first bytes (an interrupted upload) is resumed at
//! its end; anything else is sent whole. Afterwards every file sent is
//! compared with `sha256sum` on the cluster ([`crate::verify::check_upload`]).
//! A destination that does not exist yet costs one SFTP request and no command.
//! Small files sent whole travel together as tar streams ([`crate::bundle`],
//! unpacked by `tar -x` on the cluster): one round trip for many files.
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
use std::path::Path;
use std::time::Duration;

/// Upload `local` to `remote` over `conn`, then check it on the cluster.
/// Returns the transfer's figures and how many files were checked.
pub async fn upload(
    conn: &Connection,
    local: &Path,
    remote: &str,
) -> Result<(TransferStats, u32), SshError> {
    let plan = sftp::plan_upload(local, remote).await?;
    let session = conn.open_sftp().await?;
    let moved = async {
        let there = sftp::remote_sizes(&session, &plan).await?;
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
        let (starts, bundled) = pick_for_bundles(&plan, starts);
        let mut moved = sftp::upload_planned(&session, &plan, starts).await?;
        send_bundles(conn, &session, &plan.base_dir, &bundled, &mut moved).await?;
        Ok::<_, SshError>(moved)
    }
    .await;
    let _ = session.close().await;
    let moved = moved?;
    let checked = verify::check_upload(conn, &moved.sent).await? + moved.unchanged;
    Ok((moved, checked))
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

/// Files up to this size travel in bundles when there are several.
const BUNDLE_FILE_MAX: u64 = 1 << 20;
/// The most a bundle holds in memory before it is sent.
const BUNDLE_BYTES: usize = 16 << 20;
const BUNDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Mark the small files that are to be sent whole as bundled, when there
/// are at least two of them; returns them (with their names in the bundle).
fn pick_for_bundles(
    plan: &UploadPlan,
    mut starts: Vec<Start>,
) -> (Vec<Start>, Vec<(FileJob, String)>) {
    let prefix = format!("{}/", plan.base_dir.trim_end_matches('/'));
    let small: Vec<usize> = plan
        .files
        .iter()
        .zip(&starts)
        .enumerate()
        .filter(|(_, (job, start))| {
            matches!(start, Start::Fresh)
                && job.size <= BUNDLE_FILE_MAX
                && job.remote.starts_with(&prefix)
        })
        .map(|(i, _)| i)
        .collect();
    if plan.single_file || small.len() < 2 {
        return (starts, Vec::new());
    }
    let mut bundled = Vec::with_capacity(small.len());
    for i in small {
        if let (Some(job), Some(start)) = (plan.files.get(i), starts.get_mut(i))
            && let Some(name) = job.remote.strip_prefix(&prefix)
        {
            *start = Start::Bundled;
            bundled.push((job.clone(), name.to_string()));
        }
    }
    (starts, bundled)
}

/// Send `files` as tar streams unpacked by `tar -x` in `base_dir` (which
/// exists by now), adding them to `moved`. Where `tar` is missing or fails,
/// the same files go over SFTP instead.
async fn send_bundles(
    conn: &Connection,
    session: &SftpSession,
    base_dir: &str,
    files: &[(FileJob, String)],
    moved: &mut TransferStats,
) -> Result<(), SshError> {
    let mut rest = files;
    while !rest.is_empty() {
        let mut bundle = Bundle::new();
        let mut sent = Vec::new();
        let mut bytes = 0u64;
        let mut taken = 0;
        for (job, name) in rest {
            if !bundle.is_empty() && bundle.len() + job.size as usize > BUNDLE_BYTES {
                break;
            }
            let data = tokio::fs::read(&job.local)
                .await
                .map_err(|e| SshError::LocalIo(format!("reading {}: {e}", job.local.display())))?;
            bundle
                .add(name, job.mode, &data)
                .map_err(SshError::LocalIo)?;
            bytes += data.len() as u64;
            sent.push((job.remote.clone(), format!("{:x}", Sha256::digest(&data))));
            taken += 1;
        }
        let (chunk, later) = rest.split_at(taken.min(rest.len()));
        rest = later;
        let command = format!("tar -x -f - -C {}", quote_word(base_dir));
        let out = conn
            .exec(&command, Some(&bundle.finish()), BUNDLE_TIMEOUT, 64 << 10)
            .await?;
        match out.exit_code {
            Some(0) => {
                moved.files += sent.len() as u32;
                moved.bundled += sent.len() as u32;
                moved.bytes += bytes;
                moved.sent.extend(sent);
            }
            // No (usable) tar on this cluster: the same files one by one
            // (SFTP rewrites whatever tar left half done).
            _ => {
                let plan = UploadPlan {
                    base_dir: base_dir.to_string(),
                    files: chunk.iter().map(|(job, _)| job.clone()).collect(),
                    ..UploadPlan::default()
                };
                let starts = plan.files.iter().map(|_| Start::Fresh).collect();
                let one_by_one = sftp::upload_planned(session, &plan, starts).await?;
                moved.files += one_by_one.files;
                moved.bytes += one_by_one.bytes;
                moved.sent.extend(one_by_one.sent);
            }
        }
    }
    Ok(())
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
