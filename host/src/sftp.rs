//! File and directory transfers: listings and uploads over one SFTP
//! session, downloads' bytes over exec ([`crate::fetch`]).
//!
//! * Only regular files and directories are copied. Symbolic links (and devices,
//!   sockets, ...) *inside* a directory tree are skipped, never followed,
//!   counted in [`TransferStats::skipped`] and named in
//!   [`TransferStats::skipped_names`]. Every remote path is held to the
//!   profile's root by what it resolves to on the cluster ([`crate::confine`]):
//!   a download lists the resolved source, which must be in the root, a
//!   regular file or a directory, and its bytes are read by a command that
//!   decides in the read itself that it reads the listed name inside the
//!   root ([`crate::fetch`]), at most the bytes listed; uploads write only
//!   into directories reached inside the root and never through a symlink.
//! * Uploads stream through a bounded buffer (russh-sftp pipelines up to 16 write
//!   requests) and close each remote file with `shutdown`, which waits for every
//!   write acknowledgement and the CLOSE reply. Missing remote parent directories
//!   are created, one checked component at a time. New remote files get the local permission bits
//!   (subject to the server's umask); if the local file is executable the bits are
//!   also set explicitly on an existing remote file.
//! * Local files are reached only through opened directory handles
//!   ([`crate::local_fs`]): an upload reads each file through the handle of
//!   the tree it was planned in, and it must still be the file the walk found;
//!   a download walks from the destination's base one real directory at a
//!   time for every file, so a directory swapped for a symlink after the plan
//!   is refused, never followed.
//! * Downloads write to a hidden partial file beside the destination
//!   (`.NAME.cluster-slurm-part`, see [`partial_path`]) and rename it into
//!   place, so a failed download never leaves a partial file under the final
//!   name, and the next download of the same file can resume it. The partial
//!   file is made with an exclusive create, or reused only when it is the
//!   directory's own regular file with a single link: a link planted at its
//!   name is never written through. A symlink at the destination is refused
//!   with `SshError::LocalIo`. File names sent by the server are validated (no `/`,
//!   no `.`/`..`, no NUL, none of [`crate::local_paths::NEVER_WRITTEN`]) so a
//!   hostile server cannot write outside the target or plant a git hook.
//! * Every transfer is planned first (the local walk or the remote listing),
//!   then carried out with one [`Start`] per file: fresh, unchanged (skipped)
//!   or resumed at an offset. [`crate::copy`] makes those decisions.
//! * Downloaded files are not fsync'ed.
//! * Callers do the path policy checks on the text ([`crate::grants`]); this
//!   module holds the paths to what they are on the cluster and moves bytes safely.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, FileType, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::confine::Confine;
use crate::local_fs::{self, Base, Create, LocalFile, Source, Target};
use crate::ssh::{Connection, SshError};
use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;

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
    /// Downloads only: the first [`SKIPPED_NAMES`] of them, as remote paths
    /// (for the audit log: a link a job made is named, never followed).
    pub skipped_names: Vec<String>,
    /// Files the destination already held unchanged (nothing sent).
    pub unchanged: u32,
    /// Uploads only: files that travelled in tar bundles (counted in `files` too).
    pub bundled: u32,
    /// Bytes not sent again because an interrupted transfer was resumed.
    pub resumed_bytes: u64,
    /// Downloads only: files whose hash was checked against the cluster's.
    pub verified: u32,
    /// Downloads only: files that changed on the cluster while they were
    /// read (a job still writing them); kept as read, not verifiable.
    pub changing: u32,
    /// For an upload, each file sent and hashed whole (all but the large
    /// files sent whole, which are in `ranged`): its remote path and the
    /// SHA-256 (hex) of the whole file as read while sending it, for
    /// [`crate::verify::check_upload`].
    pub sent: Vec<(String, String)>,
    /// For an upload, each large file sent whole: its remote path and the
    /// SHA-256 of each of its ranges ([`hash_ranges`]), which the cluster
    /// hashes side by side (see [`crate::verify::check_ranges`]).
    pub ranged: Vec<(String, Vec<RangeHash>)>,
}

/// How many skipped entries a download names.
pub const SKIPPED_NAMES: usize = 20;

/// Files at least this large, sent whole, are checked by ranges.
pub const RANGED_MIN: u64 = 32 << 20;
/// Ranges a large file is checked in: the cluster hashes them at once, on as
/// many cores (SHA-256 itself cannot be split; after a 1 GiB upload, one
/// `openssl` alone took about 0.9 s here, a third of the transfer).
const HASH_RANGES: u64 = 4;
const MIB: u64 = 1 << 20;

/// The SHA-256 of bytes `offset..offset + len` of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeHash {
    pub offset: u64,
    pub len: u64,
    pub sha256: String,
}

/// `(offset, len)` of the ranges a file of `size` bytes is checked in: up
/// to [`HASH_RANGES`], each a whole number of MiB except the last.
pub fn hash_ranges(size: u64) -> Vec<(u64, u64)> {
    let per = size.div_ceil(HASH_RANGES).div_ceil(MIB).max(1) * MIB;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < size {
        let len = per.min(size - offset);
        out.push((offset, len));
        offset += len;
    }
    out
}

/// Something bytes are hashed into as they stream past.
trait Absorb {
    fn absorb(&mut self, bytes: &[u8]);
}

impl Absorb for Sha256 {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// One SHA-256 per range of a stream; bytes past the last range's planned
/// end (a local file that grew while it was sent) belong to the last range,
/// as they do on the cluster, where the last range is read to the end.
struct RangeDigests {
    ranges: Vec<(u64, u64, Sha256)>,
    position: u64,
}

impl RangeDigests {
    fn new(size: u64) -> Self {
        RangeDigests {
            ranges: hash_ranges(size)
                .into_iter()
                .map(|(offset, len)| (offset, len, Sha256::new()))
                .collect(),
            position: 0,
        }
    }

    fn finish(self) -> Vec<RangeHash> {
        let end = self.position;
        let count = self.ranges.len();
        self.ranges
            .into_iter()
            .enumerate()
            .map(|(i, (offset, len, digest))| RangeHash {
                offset,
                len: if i + 1 == count {
                    end.saturating_sub(offset)
                } else {
                    len
                },
                sha256: hex(&digest.finalize()),
            })
            .collect()
    }
}

impl Absorb for RangeDigests {
    fn absorb(&mut self, mut bytes: &[u8]) {
        let last = self.ranges.len().saturating_sub(1);
        while !bytes.is_empty() {
            let position = self.position;
            let Some(i) = self.ranges.iter().rposition(|(o, _, _)| *o <= position) else {
                return;
            };
            let Some((offset, len, digest)) = self.ranges.get_mut(i) else {
                return;
            };
            let room = if i == last {
                bytes.len()
            } else {
                usize::try_from(*offset + *len - position)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len())
            };
            let (now, rest) = bytes.split_at(room);
            digest.update(now);
            self.position += now.len() as u64;
            bytes = rest;
        }
    }
}

/// How a sent file is checked: by the hash of all of it, or of its ranges.
enum SentHash {
    Whole(String),
    Ranges(Vec<RangeHash>),
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn remote_err(op: &str, path: &str, e: SftpError) -> SshError {
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
        other if connection_lost(&other.to_string()) => SshError::Connection(format!(
            "sftp {op} {path}: the connection was lost ({other})"
        )),
        other => SshError::Remote(format!("sftp {op} {path}: {other}")),
    }
}

/// russh-sftp reports a channel that went away as "session closed", or, for
/// a request in flight when it went, "sender dropped".
fn connection_lost(message: &str) -> bool {
    message.contains("session closed") || message.contains("sender dropped")
}

fn local_err(op: &str, path: &Path, e: std::io::Error) -> SshError {
    SshError::LocalIo(format!("{op} {}: {e}", path.display()))
}

pub(crate) fn is_no_such_file(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(st) if st.status_code == StatusCode::NoSuchFile)
}

pub(crate) fn remote_join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else if base.ends_with('/') {
        format!("{base}{name}")
    } else {
        format!("{base}/{name}")
    }
}

/// Parent of a POSIX path: `"a/b"` → `"a"`, `"/a"` → `"/"`, `"a"` → `""`.
pub(crate) fn remote_parent(path: &str) -> String {
    let p = path.trim_end_matches('/');
    match p.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => p.get(..i).unwrap_or_default().to_string(),
        None => String::new(),
    }
}

/// `mkdir -p` over SFTP (follows existing symlinked directories, like
/// mkdir -p): only for the operator's own `remoteRoot`
/// ([`crate::confine::Confine::resolve`]); below it, directories are made
/// by [`crate::put::make_dirs`], which follows no link out.
pub(crate) async fn remote_mkdir_p(sftp: &SftpSession, path: &str) -> Result<(), SshError> {
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

/// Where a file's transfer starts, decided from what the destination already
/// holds (see [`crate::copy`]).
pub enum Start {
    /// Send the whole file.
    Fresh,
    /// The destination already holds exactly this content: send nothing.
    Unchanged,
    /// The destination holds the first `offset` bytes (their hash checked):
    /// send the rest; `prefix` is the SHA-256 state after those bytes, so the
    /// final hash still covers the whole file.
    Resume { offset: u64, prefix: Sha256 },
}

impl Start {
    /// Bytes the destination keeps from before, or None when the whole file
    /// is there already (nothing to send).
    fn kept(&self) -> Option<u64> {
        match self {
            Start::Unchanged => None,
            Start::Resume { offset, .. } => Some(*offset),
            Start::Fresh => Some(0),
        }
    }
}

/// One regular file of a transfer. `local` is how the local side is
/// reached: for an upload the file itself ([`LocalFile`], opened only by
/// handle), for a download its path relative to the destination's base.
#[derive(Debug, Clone)]
pub struct FileJob<L = PathBuf> {
    pub local: L,
    pub remote: String,
    pub size: u64,
    pub mode: u32,
    /// Modification time on the source side (seconds), when known.
    pub mtime: Option<u64>,
}

/// Everything an upload will create, found by walking the local source once.
#[derive(Debug, Default, Clone)]
pub struct UploadPlan {
    /// Created with `mkdir -p` first: the destination directory, or a single
    /// file's parent.
    pub base_dir: String,
    /// The source is one file (not a tree).
    pub single_file: bool,
    /// Directories inside the tree, each listed after its parent.
    pub dirs: Vec<String>,
    pub files: Vec<FileJob<LocalFile>>,
    /// Entries that are neither regular files nor directories (never followed).
    pub skipped: u32,
}

/// Walk `local` (a file or a directory tree, already open) and plan its
/// upload to `remote` (the destination path itself, not its parent). The
/// walk goes from directory handle to directory handle and never follows a
/// link; each file is later reopened the same way and must still be the file
/// found here. It runs as one blocking task: a tree of 10,000 files took
/// 0.2–0.5 s as 20,000 separate async file-system calls.
pub async fn plan_upload(local: &Source, remote: &str) -> Result<UploadPlan, SshError> {
    let (local, remote) = (local.clone(), remote.to_string());
    tokio::task::spawn_blocking(move || plan_upload_blocking(&local, &remote))
        .await
        .map_err(|e| SshError::LocalIo(format!("walking the upload's files stopped: {e}")))?
}

fn plan_upload_blocking(local: &Source, remote: &str) -> Result<UploadPlan, SshError> {
    let shown = local.shown().to_path_buf();
    if let Some(file) = local.as_file() {
        let meta = match &file {
            LocalFile::Held { file, .. } => file.metadata(),
            LocalFile::InTree { .. } => file.open().and_then(|f| f.metadata()),
        };
        let meta = meta.map_err(|e| local_err("stat", &shown, e))?;
        return Ok(UploadPlan {
            base_dir: remote_parent(remote),
            single_file: true,
            files: vec![FileJob {
                local: file,
                remote: remote.to_string(),
                size: meta.len(),
                mode: meta.permissions().mode(),
                mtime: None,
            }],
            ..UploadPlan::default()
        });
    }
    let Some(root) = local.as_dir() else {
        return Err(SshError::LocalIo(format!(
            "{}: not a regular file or directory",
            shown.display()
        )));
    };
    let mut plan = UploadPlan {
        base_dir: remote.to_string(),
        ..UploadPlan::default()
    };
    let top = root
        .try_clone()
        .map_err(|e| local_err("opening", &shown, e))?;
    let mut stack: Vec<(cap_std::fs::Dir, PathBuf, String)> =
        vec![(top, PathBuf::new(), remote.to_string())];
    while let Some((ldir, lrel, rdir)) = stack.pop() {
        let at = shown.join(&lrel);
        let mut entries = ldir
            .entries()
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
            .map_err(|e| local_err("reading directory", &at, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let lpath = at.join(&name);
            // The entry's own type: a symlink is a symlink, never its target.
            let ft = entry
                .file_type()
                .map_err(|e| local_err("stat", &lpath, e))?;
            let name = name.to_str().ok_or_else(|| {
                SshError::LocalIo(format!("{}: file name is not valid UTF-8", lpath.display()))
            })?;
            let rpath = remote_join(&rdir, name);
            let rel = lrel.join(name);
            if ft.is_dir() {
                let sub = ldir
                    .open_dir_nofollow(name)
                    .map_err(|e| local_err("opening", &lpath, e))?;
                plan.dirs.push(rpath.clone());
                stack.push((sub, rel, rpath));
            } else if ft.is_file() {
                let meta = entry.metadata().map_err(|e| local_err("stat", &lpath, e))?;
                use cap_std::fs::{MetadataExt, PermissionsExt as _};
                plan.files.push(FileJob {
                    local: LocalFile::InTree {
                        root: root.clone(),
                        rel,
                        id: (meta.dev(), meta.ino()),
                        shown: lpath,
                    },
                    remote: rpath,
                    size: meta.len(),
                    mode: meta.permissions().mode(),
                    mtime: None,
                });
            } else {
                plan.skipped += 1;
            }
        }
    }
    Ok(plan)
}

/// Sizes of the regular files already at the plan's destinations (remote
/// path → size). A destination that does not exist yet costs one request.
pub async fn remote_sizes(
    sftp: &SftpSession,
    plan: &UploadPlan,
) -> Result<HashMap<String, u64>, SshError> {
    let mut sizes = HashMap::new();
    if plan.single_file {
        for job in &plan.files {
            // The name's own type: a link there is never reused (nor hashed
            // through: the upload refuses it).
            match sftp.symlink_metadata(job.remote.clone()).await {
                Ok(m) if m.is_regular() => {
                    sizes.insert(job.remote.clone(), m.size.unwrap_or(0));
                }
                Ok(_) => {}
                Err(e) if is_no_such_file(&e) => {}
                Err(e) => return Err(remote_err("stat", &job.remote, e)),
            }
        }
        return Ok(sizes);
    }
    let wanted: std::collections::HashSet<&str> =
        plan.files.iter().map(|f| f.remote.as_str()).collect();
    for dir in std::iter::once(&plan.base_dir).chain(plan.dirs.iter()) {
        let listing = match sftp.read_dir(dir.clone()).await {
            Ok(listing) => listing,
            // Not there yet, or not a directory: nothing to skip or resume
            // below it (the upload reports a non-directory when it gets there).
            Err(e) if is_no_such_file(&e) => {
                if dir == &plan.base_dir {
                    break;
                }
                continue;
            }
            Err(e) => return Err(remote_err("listing", dir, e)),
        };
        for entry in listing {
            let path = remote_join(dir, &entry.file_name());
            if entry.file_type() == FileType::File && wanted.contains(path.as_str()) {
                sizes.insert(path, entry.metadata().size.unwrap_or(0));
            }
        }
    }
    Ok(sizes)
}

/// Upload `local` (a file or a directory tree) to the remote path `remote`
/// (the destination path itself, not its parent) in `root` (the profile's
/// `remoteRoot`, SFTP form), sending every file whole.
pub async fn upload(
    conn: &Connection,
    local: &Source,
    remote: &str,
    root: &str,
) -> Result<TransferStats, SshError> {
    let plan = plan_upload(local, remote).await?;
    prepare_upload(conn, &plan, root).await?;
    let starts = plan.files.iter().map(|_| Start::Fresh).collect();
    upload_planned(conn, &plan, starts, root).await
}

/// Make every directory of `plan` inside `root`, reached on the
/// cluster without leaving it ([`crate::put::make_dirs`]), before anything
/// is asked about or written to the files in them.
pub async fn prepare_upload(
    conn: &Connection,
    plan: &UploadPlan,
    root: &str,
) -> Result<(), SshError> {
    let dirs: Vec<&str> = std::iter::once(&plan.base_dir)
        .chain(plan.dirs.iter())
        .map(String::as_str)
        .collect();
    crate::put::make_dirs(conn, root, &dirs).await
}

/// Carry out `plan` (its directories made by [`prepare_upload`]); `starts`
/// holds one decision per file of the plan. Each file is written by one
/// command on the cluster that decides where it writes in the write
/// ([`crate::put`]).
pub async fn upload_planned(
    conn: &Connection,
    plan: &UploadPlan,
    starts: Vec<Start>,
    root: &str,
) -> Result<TransferStats, SshError> {
    let mut stats = TransferStats {
        skipped: plan.skipped,
        ..TransferStats::default()
    };
    for (job, start) in plan.files.iter().zip(starts) {
        let Some(resumed) = start.kept() else {
            stats.unchanged += 1;
            continue;
        };
        let (sent, hash) = upload_file(conn, root, job, start).await?;
        stats.bytes += sent;
        stats.resumed_bytes += resumed;
        stats.files += 1;
        match hash {
            SentHash::Whole(sha256) => stats.sent.push((job.remote.clone(), sha256)),
            SentHash::Ranges(ranges) => stats.ranged.push((job.remote.clone(), ranges)),
        }
    }
    Ok(stats)
}

/// Copy `src` to `dst` in `CHUNK` pieces; the caller labels read and write
/// errors with the side and path they concern.
async fn pump<R, W>(
    src: &mut R,
    dst: &mut W,
    digest: &mut impl Absorb,
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
        digest.absorb(chunk);
        dst.write_all(chunk).await.map_err(&write_err)?;
        total += n as u64;
    }
}

/// The SHA-256 state after the first `len` bytes of an opened local file
/// (fewer if the file is shorter), read from its start.
pub async fn hash_prefix(file: std::fs::File, shown: &Path, len: u64) -> Result<Sha256, SshError> {
    let mut file = tokio::fs::File::from_std(file);
    file.rewind()
        .await
        .map_err(|e| local_err("reading", shown, e))?;
    let mut digest = Sha256::new();
    pump(
        &mut file.take(len),
        &mut tokio::io::sink(),
        &mut digest,
        |e| local_err("reading", shown, e),
        |e| local_err("reading", shown, e),
    )
    .await?;
    Ok(digest)
}

/// Hex SHA-256 of a digest state, leaving the state usable.
pub fn hex_of(digest: &Sha256) -> String {
    hex(&digest.clone().finalize())
}

/// Send one file; returns the bytes sent and their hash: of the whole file,
/// or by ranges for a large file sent whole. A file sent whole is always a
/// new file; a resumed one must still be the file the hash of its kept
/// part was taken of (one link, that size): [`crate::put`] checks both on
/// the cluster in the command that writes.
async fn upload_file(
    conn: &Connection,
    root: &str,
    job: &FileJob<LocalFile>,
    start: Start,
) -> Result<(u64, SentHash), SshError> {
    let local = job.local.shown();
    let opened = job
        .local
        .open()
        .map_err(|e| local_err("opening", local, e))?;
    let mut src = tokio::fs::File::from_std(opened);
    let (offset, mut digest) = match start {
        Start::Resume { offset, prefix } => (offset, Hasher::Whole(prefix)),
        _ if job.size >= RANGED_MIN => (0, Hasher::Ranges(RangeDigests::new(job.size))),
        _ => (0, Hasher::Whole(Sha256::new())),
    };
    if offset > 0 {
        src.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| local_err("reading", local, e))?;
    }
    // The planned size, no more: a file the agent keeps extending cannot
    // keep the upload going (what was sent is what the hash covers).
    let mut src = src.take(job.size.saturating_sub(offset));
    let sent = crate::put::put(
        conn,
        root,
        &job.remote,
        offset,
        job.mode,
        &mut src,
        &mut |piece| digest.absorb(piece),
    )
    .await?;
    if offset + sent != job.size {
        return Err(SshError::LocalIo(format!(
            "{} shrank while it was being uploaded ({} bytes planned, {} sent); run the upload again",
            local.display(),
            job.size,
            offset + sent
        )));
    }
    Ok((sent, digest.finish()))
}

/// The hash an upload takes as it sends: of the whole file (small files, and
/// resumed ones, whose kept part was hashed whole), or by ranges.
enum Hasher {
    Whole(Sha256),
    Ranges(RangeDigests),
}

impl Absorb for Hasher {
    fn absorb(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Whole(d) => d.absorb(bytes),
            Hasher::Ranges(r) => r.absorb(bytes),
        }
    }
}

impl Hasher {
    fn finish(self) -> SentHash {
        match self {
            Hasher::Whole(d) => SentHash::Whole(hex(&d.finalize())),
            Hasher::Ranges(r) => SentHash::Ranges(r.finish()),
        }
    }
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

/// Everything a download will create, found by listing the remote source once.
#[derive(Debug)]
pub struct DownloadPlan {
    /// Where it goes: every path below is relative to `target.base()`.
    pub target: Target,
    /// The source is one file (not a tree).
    pub single_file: bool,
    /// The local destination directory of a tree, then every directory
    /// inside it, each after its parent.
    pub dirs: Vec<PathBuf>,
    pub files: Vec<FileJob>,
    /// Entries that are neither regular files nor directories (never followed).
    pub skipped: u32,
    /// The first [`SKIPPED_NAMES`] of them (remote paths).
    pub skipped_names: Vec<String>,
}

/// Resolve `remote` (a file or a directory tree) on the cluster, list it,
/// and plan its download to `target` (the destination path itself, not its
/// parent). The source must resolve inside `confine`'s root and its files
/// must fit `host.maxDownloadBytes`; every path of the plan is the resolved
/// one (see [`crate::confine`]).
pub async fn plan_download(
    sftp: &SftpSession,
    remote: &str,
    target: &Target,
    confine: &Confine,
) -> Result<DownloadPlan, SshError> {
    let shown = remote;
    let real = confine.download_source(sftp, remote).await?;
    let remote = real.as_str();
    // The resolved path's own type (it is no link, unless one was made
    // there this instant: then it is not followed either).
    let meta = sftp
        .symlink_metadata(remote.to_string())
        .await
        .map_err(|e| remote_err("stat", remote, e))?;
    let job = |remote: String, local: PathBuf, attrs: &FileAttributes| FileJob {
        local,
        remote,
        size: attrs.size.unwrap_or(0),
        mode: attrs.permissions.unwrap_or(0o644),
        mtime: attrs.mtime.map(u64::from),
    };
    let local = target.rel().to_path_buf();
    let mut plan = DownloadPlan {
        target: target.clone(),
        single_file: false,
        dirs: Vec::new(),
        files: Vec::new(),
        skipped: 0,
        skipped_names: Vec::new(),
    };
    match meta.file_type() {
        FileType::File => {
            plan.single_file = true;
            plan.files.push(job(remote.to_string(), local, &meta));
            confine.check_download_size(shown, meta.size.unwrap_or(0), 1)?;
            return Ok(plan);
        }
        FileType::Dir => {}
        _ => {
            return Err(SshError::Denied(format!(
                "remote path {} is not a regular file or directory (a device, FIFO or socket): downloads read regular files only",
                crate::confine::shown(shown)
            )));
        }
    }
    plan.dirs.push(local.clone());
    let mut stack: Vec<(String, PathBuf)> = vec![(remote.to_string(), local)];
    while let Some((rdir, ldir)) = stack.pop() {
        let rd = sftp
            .read_dir(rdir.clone())
            .await
            .map_err(|e| remote_err("listing", &rdir, e))?;
        let mut entries: Vec<_> = rd.collect();
        entries.sort_by_key(|e| e.file_name());
        let names: Vec<String> = entries.iter().map(|e| e.file_name()).collect();
        if crate::local_paths::looks_like_git_dir(names.iter().map(String::as_str)) {
            return Err(SshError::LocalIo(format!(
                "{remote} holds {rdir}, which git would take for a repository (HEAD with refs/objects): the host never writes version-control metadata (its config runs code); download the parts around it, or rename it on the cluster"
            )));
        }
        for entry in entries {
            let name = entry.file_name();
            if name.contains(char::REPLACEMENT_CHARACTER) {
                // russh-sftp decodes names lossily: `x\xffy` reads as
                // `x\u{FFFD}y`, which is another name the cluster may hold
                // too (a job can make both). Not fetched by a spelling that
                // is not its own: skipped and named, like a link.
                plan.skipped += 1;
                if plan.skipped_names.len() < SKIPPED_NAMES {
                    plan.skipped_names.push(remote_join(&rdir, &name));
                }
                continue;
            }
            check_remote_name(&rdir, &name)?;
            let rpath = remote_join(&rdir, &name);
            let lpath = ldir.join(&name);
            if let Some(never) = crate::local_paths::never_written(Path::new(&name)) {
                return Err(SshError::LocalIo(format!(
                    "{remote} holds {rpath} ({never}): the host never writes version-control metadata or direnv files (they run code); download the parts around it, or rename it on the cluster"
                )));
            }
            match entry.file_type() {
                FileType::Dir => {
                    plan.dirs.push(lpath.clone());
                    stack.push((rpath, lpath));
                }
                FileType::File => plan.files.push(job(rpath, lpath, &entry.metadata())),
                // The listing's types are the entries' own (lstat): a link
                // is a link, never what it points at. Not followed, named.
                _ => {
                    plan.skipped += 1;
                    if plan.skipped_names.len() < SKIPPED_NAMES {
                        plan.skipped_names.push(rpath);
                    }
                }
            }
        }
    }
    let bytes = plan
        .files
        .iter()
        .map(|f| f.size)
        .fold(0u64, u64::saturating_add);
    confine.check_download_size(shown, bytes, plan.files.len())?;
    // No file may land where another keeps its partial download.
    let destinations: std::collections::HashSet<&Path> =
        plan.files.iter().map(|f| f.local.as_path()).collect();
    for f in &plan.files {
        let partial = partial_path(&f.local)?;
        if destinations.contains(partial.as_path()) {
            return Err(SshError::Remote(format!(
                "{remote} holds both {} and a file named like its partial download ({}); rename one on the cluster",
                f.remote,
                partial.display()
            )));
        }
    }
    Ok(plan)
}

/// Download the remote path `remote` (a file or a directory tree) to
/// `target` (the destination path itself, not its parent), fetching every
/// file whole and unverified.
pub async fn download(
    conn: &Connection,
    sftp: &SftpSession,
    remote: &str,
    target: &Target,
    confine: &Confine,
) -> Result<TransferStats, SshError> {
    let plan = plan_download(sftp, remote, target, confine).await?;
    let starts = plan.files.iter().map(|_| Start::Fresh).collect();
    download_planned(conn, sftp, &plan, starts, None, confine).await
}

/// The longest file name most local file systems take.
const NAME_MAX: usize = 255;

/// The file a download of `local` is written to before it is renamed into
/// place: a hidden sibling, `.NAME.cluster-slurm-part`. Its name is fixed,
/// so an interrupted download can be resumed by the next one; for a name
/// too long to carry the decoration it is `.<SHA-256 of the name>.cluster-slurm-part`.
pub fn partial_path(local: &Path) -> Result<PathBuf, SshError> {
    use std::os::unix::ffi::OsStrExt;
    let name = local.file_name().ok_or_else(|| {
        SshError::LocalIo(format!("{}: destination has no file name", local.display()))
    })?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(".cluster-slurm-part");
    if partial.len() > NAME_MAX {
        let digest = hex(&Sha256::digest(name.as_bytes()));
        partial = format!(
            ".{}.cluster-slurm-part",
            digest.get(..40).unwrap_or(&digest)
        )
        .into();
    }
    Ok(local.with_file_name(partial))
}

/// The cluster's SHA-256 of the files of a download (remote path → hash),
/// some known before the download starts and the rest still being taken on
/// the cluster while the bytes move (both only read the files). The first
/// file that needs a hash not known yet waits for all of them: for one
/// large file the hash then costs nothing unless the cluster hashes slower
/// than the link carries; with many files only the first fetch overlaps. A
/// file the cluster cannot hash is reported after it was fetched (and not
/// placed).
#[derive(Default)]
pub struct Expected {
    known: HashMap<String, String>,
    pending: Option<tokio::task::JoinHandle<Result<HashMap<String, String>, SshError>>>,
}

impl Expected {
    pub fn new(
        known: HashMap<String, String>,
        pending: Option<tokio::task::JoinHandle<Result<HashMap<String, String>, SshError>>>,
    ) -> Self {
        Expected { known, pending }
    }

    /// The cluster's hash of `remote`, waiting for the pending hashes when it
    /// is not known yet; None when the cluster could not hash it.
    async fn get(&mut self, remote: &str) -> Result<Option<&String>, SshError> {
        if !self.known.contains_key(remote)
            && let Some(pending) = self.pending.as_mut()
        {
            // Awaited in place: if this call is dropped meanwhile, the handle
            // is still here for `drop` to abort.
            let more = pending.await;
            self.pending = None;
            let more = more
                .map_err(|e| SshError::Remote(format!("hashing on the cluster stopped: {e}")))??;
            self.known.extend(more);
        }
        Ok(self.known.get(remote))
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        if let Some(pending) = &self.pending {
            pending.abort();
        }
    }
}

/// Carry out `plan`; `starts` holds one decision per file. With `expected`
/// (the cluster's SHA-256 of each remote path), each file's hash is checked
/// before it is renamed into place: a resumed file that does not match is
/// fetched again whole; a file that changed on the cluster meanwhile (a job
/// still writing it) is kept as read and counted in `changing`; any other
/// difference fails the download and leaves the old destination untouched.
///
/// Every directory is reached from the destination's base one real
/// directory at a time, again for every file ([`Base::walk`]): a directory
/// swapped for a symlink between the plan and a file's open is refused, not
/// followed.
pub async fn download_planned(
    conn: &Connection,
    sftp: &SftpSession,
    plan: &DownloadPlan,
    starts: Vec<Start>,
    mut expected: Option<&mut Expected>,
    confine: &Confine,
) -> Result<TransferStats, SshError> {
    let base = plan.target.base();
    for dir in &plan.dirs {
        crate::hooks::at(crate::hooks::Point::BeforeOpen(&base.show(dir)));
        walk_blocking(base, dir, Create::Yes).await?;
    }
    let mut stats = TransferStats {
        skipped: plan.skipped,
        skipped_names: plan.skipped_names.clone(),
        ..TransferStats::default()
    };
    let mut todo = Vec::new();
    for (job, start) in plan.files.iter().zip(starts) {
        if start.kept().is_none() {
            stats.unchanged += 1;
        } else {
            todo.push((job, start));
        }
    }
    // In as few commands as the command length allows: each costs a
    // login shell's start on the cluster.
    let room = crate::fetch::room(confine);
    let mut todo = todo.into_iter().peekable();
    while todo.peek().is_some() {
        let mut batch = Vec::new();
        let mut len = 0;
        while let Some((job, _)) = todo.peek() {
            let more = crate::fetch::call_len(&job.remote);
            if !batch.is_empty() && (batch.len() >= crate::fetch::FETCH_FILES || len + more > room)
            {
                break;
            }
            len += more;
            batch.extend(todo.next());
        }
        let fetched = fetch_files(conn, confine, base, &batch).await?;
        for ((job, _), fetched) in batch.iter().zip(fetched) {
            let mut fetched = fetched?;
            let want = match expected.as_deref_mut() {
                None => None,
                Some(e) => match e.get(&job.remote).await? {
                    Some(want) => Some(want.clone()),
                    None => {
                        fetched.discard();
                        return Err(SshError::Remote(format!(
                            "{}: the cluster could not hash it (unreadable, or gone), so it cannot be checked; nothing was replaced",
                            job.remote
                        )));
                    }
                },
            };
            if let Some(want) = want {
                if want != fetched.sha256 && fetched.resumed > 0 {
                    // The kept part was not a prefix of this file after all.
                    stats.bytes += fetched.bytes;
                    drop(fetched);
                    let again = fetch_files(conn, confine, base, &[(*job, Start::Fresh)]).await?;
                    fetched = again.into_iter().next().ok_or_else(|| {
                        SshError::Remote(format!("{}: fetched again, but nothing came", job.remote))
                    })??;
                }
                if want != fetched.sha256 {
                    if changed_since_listed(sftp, job).await {
                        stats.changing += 1;
                    } else {
                        fetched.discard();
                        return Err(SshError::Remote(format!(
                            "{}: SHA-256 differs after download (cluster {want}, received {}); nothing was replaced, download it again",
                            job.remote, fetched.sha256
                        )));
                    }
                } else {
                    stats.verified += 1;
                }
            }
            fetched.place()?;
            stats.bytes += fetched.bytes;
            stats.resumed_bytes += fetched.resumed;
            stats.files += 1;
        }
    }
    Ok(stats)
}

/// [`Base::walk`] off the async threads.
async fn walk_blocking(base: &Base, rel: &Path, create: Create) -> Result<Dir, SshError> {
    let (base, rel) = (
        base.try_clone()
            .map_err(|e| local_err("opening", base.shown(), e))?,
        rel.to_path_buf(),
    );
    tokio::task::spawn_blocking(move || {
        base.walk(&rel, create)
            .map_err(|e| SshError::LocalIo(e.to_string()))
    })
    .await
    .map_err(|e| SshError::LocalIo(format!("opening a directory stopped: {e}")))?
}

/// True when the remote file's size or modification time is no longer what
/// the listing said (or it cannot be read any more).
async fn changed_since_listed(sftp: &SftpSession, job: &FileJob) -> bool {
    match sftp.symlink_metadata(job.remote.clone()).await {
        Ok(m) => m.size != Some(job.size) || m.mtime.map(u64::from) != job.mtime,
        Err(_) => true,
    }
}

/// A file fetched into its partial file, not yet in place.
struct Fetched {
    /// The destination's directory, and the two names in it.
    dir: Dir,
    name: OsString,
    partial: OsString,
    shown: PathBuf,
    /// Bytes received in this call.
    bytes: u64,
    /// Bytes kept from an interrupted download (resumed after them).
    resumed: u64,
    /// SHA-256 of the whole partial file.
    sha256: String,
    /// Holds the partial file's lock until this is dropped (after the rename).
    _lock: std::fs::File,
}

impl Fetched {
    /// Rename the partial file over the destination (a rename replaces the
    /// directory entry: nothing is written through what was there).
    fn place(&self) -> Result<(), SshError> {
        let placed = match self.dir.symlink_metadata(&self.name) {
            Ok(m) if m.file_type().is_symlink() => Err(SshError::LocalIo(format!(
                "{} is a symbolic link; refusing to write through it",
                self.shown.display()
            ))),
            Ok(m) if m.is_dir() => Err(SshError::LocalIo(format!(
                "{} exists and is a directory",
                self.shown.display()
            ))),
            _ => self
                .dir
                .rename(&self.partial, &self.dir, &self.name)
                .map_err(|e| local_err("renaming into", &self.shown, e)),
        };
        if placed.is_err() {
            self.discard();
        }
        placed
    }

    fn discard(&self) {
        let _ = self.dir.remove_file(&self.partial);
    }
}

/// The partial file of a download, locked: reused when a resume keeps its
/// bytes and it is this directory's own file (regular, one link); else made
/// afresh under an exclusive create, so a link planted at its name is never
/// opened. The lock is taken before anything is cut: a second download to
/// the same destination is refused instead of clobbering it.
fn open_partial(
    dir: &Dir,
    partial: &OsStr,
    mode: u32,
    resume: bool,
    shown: &Path,
) -> Result<(std::fs::File, bool), SshError> {
    let busy = || {
        SshError::LocalIo(format!(
            "{}: another download to this destination is in progress",
            shown.display()
        ))
    };
    for _ in 0..4 {
        match local_fs::open_regular(dir, partial, true) {
            Ok(file) => {
                let lone = file.metadata().map(|m| m.nlink() == 1).unwrap_or(false);
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => return Err(busy()),
                    // A file system without locks: go on unguarded.
                    Err(std::fs::TryLockError::Error(_)) => {}
                }
                if lone {
                    if !resume {
                        file.set_len(0)
                            .map_err(|e| local_err("truncating", shown, e))?;
                    }
                    return Ok((file, resume));
                }
                // Another name shares this file (a planted hard link): let
                // go of it, never write it.
                drop(file);
                dir.remove_file(partial)
                    .map_err(|e| local_err("removing", shown, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A symlink, FIFO or anything else at the partial's name: not ours.
            Err(_) => {
                dir.remove_file(partial)
                    .map_err(|e| local_err("removing", shown, e))?;
            }
        }
        match local_fs::create_new(dir, partial, mode) {
            Ok(file) => {
                match file.try_lock() {
                    Ok(()) | Err(std::fs::TryLockError::Error(_)) => {}
                    Err(std::fs::TryLockError::WouldBlock) => return Err(busy()),
                }
                return Ok((file, false));
            }
            // Someone made it meanwhile: look again.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(local_err("creating", shown, e)),
        }
    }
    Err(busy())
}

/// A file's partial, opened and positioned, waiting for its bytes.
struct Waiting {
    dir: Dir,
    name: OsString,
    partial: OsString,
    shown: PathBuf,
    offset: u64,
    lock: std::fs::File,
}

/// Fetch `batch` into the files' partial files (each from its kept part on
/// when resuming) in one command ([`crate::fetch`]: the cluster decides in
/// the read itself that it reads the listed file inside the root). The
/// outer error is the command's; a file's own refusal is its entry, and
/// its partial file is gone then.
async fn fetch_files(
    conn: &Connection,
    confine: &Confine,
    base: &Base,
    batch: &[(&FileJob, Start)],
) -> Result<Vec<Result<Fetched, SshError>>, SshError> {
    use crate::fetch::{Slot, Want};
    let mut waiting = Vec::with_capacity(batch.len());
    let mut slots = Vec::with_capacity(batch.len());
    let mut wants = Vec::with_capacity(batch.len());
    for (job, start) in batch {
        let shown = base.show(&job.local);
        let (parent, name) =
            local_fs::split(&job.local).map_err(|e| local_err("placing", &shown, e))?;
        let partial = partial_path(&job.local)?
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_default();
        crate::hooks::at(crate::hooks::Point::BeforeOpen(&shown));
        let dir = walk_blocking(base, &parent, Create::Yes).await?;
        match dir.symlink_metadata(&name) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(SshError::LocalIo(format!(
                    "{} is a symbolic link; refusing to write through it",
                    shown.display()
                )));
            }
            Ok(m) if m.is_dir() => {
                return Err(SshError::LocalIo(format!(
                    "{} exists and is a directory",
                    shown.display()
                )));
            }
            _ => {}
        }
        let (offset, digest) = match start {
            Start::Resume { offset, prefix } => (*offset, prefix.clone()),
            _ => (0, Sha256::new()),
        };
        let mode = (job.mode & 0o777) | 0o600;
        let (mut file, kept) = open_partial(&dir, &partial, mode, offset > 0, &shown)?;
        // A partial that could not be kept starts from nothing.
        let (offset, digest) = if kept {
            (offset, digest)
        } else {
            (0, Sha256::new())
        };
        let lock = file
            .try_clone()
            .map_err(|e| local_err("opening", &shown, e))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))
            .map_err(|e| local_err("seeking in", &shown, e))?;
        slots.push(Slot { file, digest });
        wants.push(Want {
            remote: job.remote.as_str(),
            skip: offset,
            // At most the size listed (and checked against the cap): a
            // file that grew since is kept as listed and shows as `changing`.
            count: job.size.saturating_sub(offset),
        });
        waiting.push(Waiting {
            dir,
            name,
            partial,
            shown,
            offset,
            lock,
        });
    }
    for want in &wants {
        crate::hooks::at(crate::hooks::Point::BeforeRemoteOpen(want.remote));
    }
    let got = match crate::fetch::fetch(conn, confine, &wants, &mut slots).await {
        Ok(got) => got,
        Err(e) => {
            // What arrived stays for the next download to resume; a
            // partial that got nothing is not left behind.
            for w in &waiting {
                if w.lock.metadata().is_ok_and(|m| m.len() == 0) {
                    let _ = w.dir.remove_file(&w.partial);
                }
            }
            return Err(e);
        }
    };
    let mut out = Vec::with_capacity(got.len());
    for ((w, slot), (got, want)) in waiting
        .into_iter()
        .zip(slots)
        .zip(got.into_iter().zip(&wants))
    {
        let fetched = async {
            let n = got?;
            let mut sha256 = hex(&slot.digest.finalize());
            if n < want.count {
                // It shrank since the listing (or stopped being a regular
                // file): the zeros after its bytes go, the hash is of the rest.
                let len = w.offset + n;
                w.lock
                    .set_len(len)
                    .map_err(|e| local_err("truncating", &w.shown, e))?;
                let clone = w
                    .lock
                    .try_clone()
                    .map_err(|e| local_err("opening", &w.shown, e))?;
                sha256 = hex_of(&hash_prefix(clone, &w.shown, len).await?);
            }
            Ok::<_, SshError>((n, sha256))
        }
        .await;
        out.push(match fetched {
            Ok((bytes, sha256)) => Ok(Fetched {
                dir: w.dir,
                name: w.name,
                partial: w.partial,
                shown: w.shown,
                bytes,
                resumed: w.offset,
                sha256,
                _lock: w.lock,
            }),
            Err(e) => {
                // Nothing of a refused file is kept (its partial holds zeros).
                let _ = w.dir.remove_file(&w.partial);
                Err(e)
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_are_hashed_in_whole_mib_ranges() {
        assert_eq!(hash_ranges(0), vec![]);
        assert_eq!(hash_ranges(10), vec![(0, 10)]);
        assert_eq!(hash_ranges(MIB + 1), vec![(0, MIB), (MIB, 1)]);
        let gib = 1 << 30;
        assert_eq!(
            hash_ranges(gib),
            vec![
                (0, gib / 4),
                (gib / 4, gib / 4),
                (gib / 2, gib / 4),
                (3 * gib / 4, gib / 4)
            ]
        );
        // 33 MiB + 5 bytes: 9 MiB ranges, the last shorter.
        let size = 33 * MIB + 5;
        let ranges = hash_ranges(size);
        assert_eq!(ranges.len(), 4);
        assert!(ranges.iter().all(|(o, _)| o % MIB == 0));
        assert_eq!(ranges.last(), Some(&(27 * MIB, 6 * MIB + 5)));
        assert_eq!(ranges.iter().map(|(_, l)| l).sum::<u64>(), size);
    }

    #[test]
    fn range_digests_equal_the_hashes_of_the_slices_whatever_the_chunks() {
        let size = 3 * MIB + 100;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        // Chunks that straddle range ends; then 10 bytes more than planned
        // (the file grew while it was sent): they belong to the last range.
        let mut grown = data.clone();
        grown.extend_from_slice(b"0123456789");
        let mut r = RangeDigests::new(size);
        for chunk in grown.chunks(300_007) {
            r.absorb(chunk);
        }
        let got = r.finish();
        let planned = hash_ranges(size);
        assert_eq!(got.len(), planned.len());
        for (i, (h, (offset, len))) in got.iter().zip(&planned).enumerate() {
            let end = if i + 1 == planned.len() {
                grown.len() as u64
            } else {
                offset + len
            };
            let slice = &grown[*offset as usize..end as usize];
            assert_eq!((h.offset, h.len), (*offset, end - offset));
            assert_eq!(h.sha256, hex(&Sha256::digest(slice)), "range {i}");
        }
    }

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
    fn partial_files_are_hidden_siblings_with_a_fixed_name() {
        let t = partial_path(Path::new("/x/y/out.dat")).unwrap();
        assert_eq!(t, Path::new("/x/y/.out.dat.cluster-slurm-part"));
        assert_eq!(t, partial_path(Path::new("/x/y/out.dat")).unwrap());
        assert!(partial_path(Path::new("/")).is_err());
    }
}
