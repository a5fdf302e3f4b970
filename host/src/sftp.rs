//! File and directory transfers over one SFTP session.
//!
//! * Only regular files and directories are copied. Symbolic links (and devices,
//!   sockets, ...) *inside* a directory tree are skipped, never followed, and
//!   counted in [`TransferStats::skipped`]. The top-level source path itself may
//!   be a symlink (the caller named it explicitly).
//! * Uploads stream through a bounded buffer (russh-sftp pipelines up to 16 write
//!   requests) and close each remote file with `shutdown`, which waits for every
//!   write acknowledgement and the CLOSE reply. Missing remote parent directories
//!   are created (`mkdir -p`). New remote files get the local permission bits
//!   (subject to the server's umask); if the local file is executable the bits are
//!   also set explicitly on an existing remote file.
//! * Downloads write to a hidden temporary file in the destination directory and
//!   rename it into place, so a failed download never leaves a partial file under
//!   the final name. The local destination (and every directory created inside
//!   it) is never followed if it is a symlink: that is refused with
//!   `SshError::LocalIo`. File names sent by the server are validated (no `/`,
//!   no `.`/`..`, no NUL) so a hostile server cannot write outside the target.
//! * Downloaded files are not fsync'ed.
//! * Callers do the path policy checks; this module only moves bytes safely.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, FileType, OpenFlags, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ssh::SshError;
use sha2::{Digest, Sha256};

/// Buffer size for one read/write step.
const CHUNK: usize = 256 * 1024;

/// What a transfer moved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferStats {
    /// Regular files copied.
    pub files: u32,
    /// Bytes of file content copied.
    pub bytes: u64,
    /// Entries inside a directory tree that were skipped (symlinks, devices, ...).
    pub skipped: u32,
    /// For an upload, each file sent: its remote path and the SHA-256 (hex)
    /// of the bytes read while sending it, for [`crate::verify`].
    pub sent: Vec<(String, String)>,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn remote_err(op: &str, path: &str, e: SftpError) -> SshError {
    match e {
        SftpError::Status(st) => match st.status_code {
            StatusCode::NoSuchFile => {
                SshError::Remote(format!("{op} {path}: no such file or directory"))
            }
            StatusCode::PermissionDenied => {
                SshError::Remote(format!("{op} {path}: permission denied"))
            }
            code => {
                let msg = if st.error_message.is_empty() {
                    code.to_string()
                } else {
                    st.error_message
                };
                SshError::Remote(format!("{op} {path}: {msg}"))
            }
        },
        SftpError::Timeout => {
            SshError::Timeout(format!("sftp {op} {path}: the server did not reply"))
        }
        SftpError::IO(m) => SshError::Connection(format!("sftp {op} {path}: {m}")),
        other => SshError::Remote(format!("sftp {op} {path}: {other}")),
    }
}

fn remote_io_err(op: &str, path: &str, e: std::io::Error) -> SshError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        SshError::Timeout(format!("sftp {op} {path}: the server did not reply"))
    } else {
        SshError::Remote(format!("{op} {path}: {e}"))
    }
}

fn local_err(op: &str, path: &Path, e: std::io::Error) -> SshError {
    SshError::LocalIo(format!("{op} {}: {e}", path.display()))
}

fn is_no_such_file(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(st) if st.status_code == StatusCode::NoSuchFile)
}

fn remote_join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else if base.ends_with('/') {
        format!("{base}{name}")
    } else {
        format!("{base}/{name}")
    }
}

/// Parent of a POSIX path: `"a/b"` → `"a"`, `"/a"` → `"/"`, `"a"` → `""`.
fn remote_parent(path: &str) -> String {
    let p = path.trim_end_matches('/');
    match p.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => p.get(..i).unwrap_or_default().to_string(),
        None => String::new(),
    }
}

fn utf8_name(path: &Path) -> Result<&str, SshError> {
    path.to_str().ok_or_else(|| {
        SshError::LocalIo(format!("{}: file name is not valid UTF-8", path.display()))
    })
}

/// `mkdir -p` over SFTP (follows existing symlinked directories, like mkdir -p).
async fn remote_mkdir_p(sftp: &SftpSession, path: &str) -> Result<(), SshError> {
    let mut missing = Vec::new();
    let mut cur = path.trim_end_matches('/').to_string();
    while !cur.is_empty() && cur != "/" && cur != "." {
        match sftp.metadata(cur.clone()).await {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(SshError::Remote(format!(
                    "{cur} exists and is not a directory"
                )));
            }
            Err(e) if is_no_such_file(&e) => {
                let parent = remote_parent(&cur);
                missing.push(cur);
                cur = parent;
            }
            Err(e) => return Err(remote_err("stat", &cur, e)),
        }
    }
    for dir in missing.iter().rev() {
        remote_mkdir_one(sftp, dir).await?;
    }
    Ok(())
}

/// Create one remote directory; an existing directory is fine.
async fn remote_mkdir_one(sftp: &SftpSession, dir: &str) -> Result<(), SshError> {
    if let Err(e) = sftp.create_dir(dir.to_string()).await {
        match sftp.metadata(dir.to_string()).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SshError::Remote(format!(
                    "{dir} exists and is not a directory"
                )));
            }
            Err(_) => return Err(remote_err("mkdir", dir, e)),
        }
    }
    Ok(())
}

/// Upload `local` (a file or a directory tree) to the remote path `remote`
/// (the destination path itself, not its parent).
pub async fn upload(
    sftp: &SftpSession,
    local: &Path,
    remote: &str,
) -> Result<TransferStats, SshError> {
    let meta = tokio::fs::metadata(local)
        .await
        .map_err(|e| local_err("stat", local, e))?;
    let mut stats = TransferStats::default();
    if meta.is_file() {
        let parent = remote_parent(remote);
        remote_mkdir_p(sftp, &parent).await?;
        let (bytes, sha256) = upload_file(sftp, local, remote, meta.permissions().mode()).await?;
        stats.bytes += bytes;
        stats.files += 1;
        stats.sent.push((remote.to_string(), sha256));
        return Ok(stats);
    }
    if !meta.is_dir() {
        return Err(SshError::LocalIo(format!(
            "{}: not a regular file or directory",
            local.display()
        )));
    }
    remote_mkdir_p(sftp, remote).await?;
    let mut stack: Vec<(PathBuf, String)> = vec![(local.to_path_buf(), remote.to_string())];
    while let Some((ldir, rdir)) = stack.pop() {
        let mut rd = tokio::fs::read_dir(&ldir)
            .await
            .map_err(|e| local_err("reading directory", &ldir, e))?;
        let mut entries = Vec::new();
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| local_err("reading directory", &ldir, e))?
        {
            entries.push(entry);
        }
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let lpath = entry.path();
            // DirEntry::file_type does not follow symlinks.
            let ft = entry
                .file_type()
                .await
                .map_err(|e| local_err("stat", &lpath, e))?;
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| {
                SshError::LocalIo(format!("{}: file name is not valid UTF-8", lpath.display()))
            })?;
            let rpath = remote_join(&rdir, name);
            if ft.is_dir() {
                remote_mkdir_one(sftp, &rpath).await?;
                stack.push((lpath, rpath));
            } else if ft.is_file() {
                let mode = tokio::fs::symlink_metadata(&lpath)
                    .await
                    .map_err(|e| local_err("stat", &lpath, e))?
                    .permissions()
                    .mode();
                let (bytes, sha256) = upload_file(sftp, &lpath, &rpath, mode).await?;
                stats.bytes += bytes;
                stats.files += 1;
                stats.sent.push((rpath, sha256));
            } else {
                stats.skipped += 1;
            }
        }
    }
    Ok(stats)
}

/// Copy `src` to `dst` in `CHUNK` pieces; the caller labels read and write
/// errors with the side and path they concern.
async fn pump<R, W>(
    src: &mut R,
    dst: &mut W,
    mut digest: Option<&mut Sha256>,
    read_err: impl Fn(std::io::Error) -> SshError,
    write_err: impl Fn(std::io::Error) -> SshError,
) -> Result<u64, SshError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = src.read(&mut buf).await.map_err(&read_err)?;
        if n == 0 {
            return Ok(total);
        }
        let chunk = buf.get(..n).unwrap_or_default();
        if let Some(d) = digest.as_deref_mut() {
            d.update(chunk);
        }
        dst.write_all(chunk).await.map_err(&write_err)?;
        total += n as u64;
    }
}

async fn upload_file(
    sftp: &SftpSession,
    local: &Path,
    remote: &str,
    mode: u32,
) -> Result<(u64, String), SshError> {
    utf8_name(local)?;
    let mut src = tokio::fs::File::open(local)
        .await
        .map_err(|e| local_err("opening", local, e))?;
    let attrs = FileAttributes {
        permissions: Some(mode & 0o777),
        ..FileAttributes::empty()
    };
    let mut dst = sftp
        .open_with_flags_and_attributes(
            remote.to_string(),
            OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
            attrs,
        )
        .await
        .map_err(|e| remote_err("creating", remote, e))?;
    let mut digest = Sha256::new();
    let total = pump(
        &mut src,
        &mut dst,
        Some(&mut digest),
        |e| local_err("reading", local, e),
        |e| remote_io_err("writing", remote, e),
    )
    .await?;
    // Waits for all outstanding write acks, then CLOSE and its reply.
    dst.shutdown()
        .await
        .map_err(|e| remote_io_err("closing", remote, e))?;
    if mode & 0o111 != 0 {
        let attrs = FileAttributes {
            permissions: Some(mode & 0o777),
            ..FileAttributes::empty()
        };
        sftp.set_metadata(remote.to_string(), attrs)
            .await
            .map_err(|e| remote_err("chmod", remote, e))?;
    }
    Ok((total, hex(&digest.finalize())))
}

/// Refuse when `path` exists as a symlink.
async fn refuse_local_symlink(path: &Path) -> Result<Option<std::fs::Metadata>, SshError> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.file_type().is_symlink() => Err(SshError::LocalIo(format!(
            "{} is a symbolic link; refusing to write through it",
            path.display()
        ))),
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(local_err("stat", path, e)),
    }
}

/// Create one local directory; an existing real directory is fine, a symlink is refused.
async fn local_mkdir_one(path: &Path) -> Result<(), SshError> {
    match refuse_local_symlink(path).await? {
        Some(m) if m.is_dir() => Ok(()),
        Some(_) => Err(SshError::LocalIo(format!(
            "{} exists and is not a directory",
            path.display()
        ))),
        None => match tokio::fs::create_dir(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match refuse_local_symlink(path).await? {
                    Some(m) if m.is_dir() => Ok(()),
                    _ => Err(SshError::LocalIo(format!(
                        "{} exists and is not a directory",
                        path.display()
                    ))),
                }
            }
            Err(e) => Err(local_err("creating directory", path, e)),
        },
    }
}

async fn local_create_parents(local: &Path) -> Result<(), SshError> {
    if let Some(parent) = local.parent()
        && !parent.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| local_err("creating directory", parent, e))?;
    }
    Ok(())
}

/// A file name from the server must be a single, ordinary path component.
fn check_remote_name(dir: &str, name: &str) -> Result<(), SshError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(SshError::Remote(format!(
            "server listed an unsafe file name {name:?} in {dir}"
        )));
    }
    Ok(())
}

/// Download the remote path `remote` (a file or a directory tree) to `local`
/// (the destination path itself, not its parent).
pub async fn download(
    sftp: &SftpSession,
    remote: &str,
    local: &Path,
) -> Result<TransferStats, SshError> {
    let meta = sftp
        .metadata(remote.to_string())
        .await
        .map_err(|e| remote_err("stat", remote, e))?;
    let mut stats = TransferStats::default();
    match meta.file_type() {
        FileType::File => {
            local_create_parents(local).await?;
            stats.bytes += download_file(sftp, remote, local, meta.permissions).await?;
            stats.files += 1;
            return Ok(stats);
        }
        FileType::Dir => {}
        _ => {
            return Err(SshError::Remote(format!(
                "{remote}: not a regular file or directory"
            )));
        }
    }
    local_create_parents(local).await?;
    local_mkdir_one(local).await?;
    let mut stack: Vec<(String, PathBuf)> = vec![(remote.to_string(), local.to_path_buf())];
    while let Some((rdir, ldir)) = stack.pop() {
        let rd = sftp
            .read_dir(rdir.clone())
            .await
            .map_err(|e| remote_err("listing", &rdir, e))?;
        let mut entries: Vec<_> = rd.collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            check_remote_name(&rdir, &name)?;
            let rpath = remote_join(&rdir, &name);
            let lpath = ldir.join(&name);
            match entry.file_type() {
                FileType::Dir => {
                    local_mkdir_one(&lpath).await?;
                    stack.push((rpath, lpath));
                }
                FileType::File => {
                    stats.bytes +=
                        download_file(sftp, &rpath, &lpath, entry.metadata().permissions).await?;
                    stats.files += 1;
                }
                _ => stats.skipped += 1,
            }
        }
    }
    Ok(stats)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path_for(local: &Path) -> Result<PathBuf, SshError> {
    let name = local.file_name().ok_or_else(|| {
        SshError::LocalIo(format!("{}: destination has no file name", local.display()))
    })?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp_name = format!(
        ".{}.part-{}-{n}-{nanos:x}",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(local.with_file_name(tmp_name))
}

async fn download_file(
    sftp: &SftpSession,
    remote: &str,
    local: &Path,
    remote_mode: Option<u32>,
) -> Result<u64, SshError> {
    if let Some(m) = refuse_local_symlink(local).await?
        && m.is_dir()
    {
        return Err(SshError::LocalIo(format!(
            "{} exists and is a directory",
            local.display()
        )));
    }
    let mode = match remote_mode {
        Some(m) => (m & 0o777) | 0o600,
        None => 0o666,
    };
    let mut src = sftp
        .open(remote.to_string())
        .await
        .map_err(|e| remote_err("opening", remote, e))?;
    let tmp = temp_path_for(local)?;
    // create_new = O_CREAT|O_EXCL: never follows or reuses an existing path.
    let mut dst = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .await
        .map_err(|e| local_err("creating", &tmp, e))?;
    let result: Result<u64, SshError> = async {
        let total = pump(
            &mut src,
            &mut dst,
            None,
            |e| remote_io_err("reading", remote, e),
            |e| local_err("writing", &tmp, e),
        )
        .await?;
        dst.flush()
            .await
            .map_err(|e| local_err("writing", &tmp, e))?;
        // Re-check right before the rename: the destination must not have become a symlink.
        refuse_local_symlink(local).await?;
        tokio::fs::rename(&tmp, local)
            .await
            .map_err(|e| local_err("renaming into", local, e))?;
        Ok(total)
    }
    .await;
    let _ = src.shutdown().await;
    drop(dst);
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths() {
        assert_eq!(remote_parent("/a/b/c"), "/a/b");
        assert_eq!(remote_parent("/a"), "/");
        assert_eq!(remote_parent("a"), "");
        assert_eq!(remote_parent("a/b/"), "a");
        assert_eq!(remote_join("/a", "b"), "/a/b");
        assert_eq!(remote_join("/a/", "b"), "/a/b");
        assert_eq!(remote_join("", "b"), "b");
    }

    #[test]
    fn unsafe_remote_names() {
        assert!(check_remote_name("/d", "ok.txt").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "x\0y"] {
            assert!(check_remote_name("/d", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn temp_names_are_hidden_siblings() {
        let t = temp_path_for(Path::new("/x/y/out.dat")).unwrap();
        assert_eq!(t.parent(), Some(Path::new("/x/y")));
        assert!(
            t.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(".out.dat.part-")
        );
        assert_ne!(t, temp_path_for(Path::new("/x/y/out.dat")).unwrap());
    }
}
