//! Local file operations that cannot be led out of the directory they start
//! from: every path is walked one component at a time from an already opened
//! directory handle (cap-std, openat-style), never re-resolved from the top
//! after a check, and no symbolic link is followed on the way.
//!
//! What it guarantees, whatever an agent plants in its workspace or swaps
//! in while the host works:
//! - [`Base::walk`] reaches a directory only through real directories (a
//!   symlink at any component is refused), so what a path says is where it is.
//! - [`create_new`] never opens an existing name: `O_CREAT|O_EXCL` fails on
//!   a planted file, hard link or symlink alike.
//! - [`replace`] writes a fresh file under an unpredictable name, syncs it
//!   and renames it over the target: a rename replaces a directory entry
//!   (a planted symlink or hard link is replaced, never written through).
//! - [`open_regular`] opens without following a final symlink and without
//!   blocking on a FIFO, and hands back the file only when it is a regular
//!   file.
//!
//! ```ignore
//! let base = Base::open(workspace)?;
//! let store = base.walk(Path::new(".openclaw/cluster-runs"), Create::Yes)?;
//! local_fs::replace(&store, OsStr::new("runs.json"), b"{}")?;
//! ```

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// An opened directory every other path is relative to, and how to show it.
#[derive(Debug)]
pub struct Base {
    dir: Dir,
    shown: PathBuf,
}

/// Whether [`Base::walk`] makes missing directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Yes,
    No,
}

impl Base {
    /// Open `path` (the operator's directory: followed if it is a symlink).
    pub fn open(path: &Path) -> io::Result<Base> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(Base {
            dir,
            shown: path.to_path_buf(),
        })
    }

    /// A handle on this base itself.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Where this base is, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `rel` shown under this base.
    pub fn show(&self, rel: &Path) -> PathBuf {
        self.shown.join(rel)
    }

    /// The directory `rel` below this base, reached only through real
    /// directories; with [`Create::Yes`], missing ones are made.
    pub fn walk(&self, rel: &Path, create: Create) -> io::Result<Dir> {
        walk(&self.dir, rel, create).map_err(|e| self.explain(rel, e))
    }

    fn explain(&self, rel: &Path, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.show(rel).display()))
    }

    /// Another handle on the same base.
    pub fn try_clone(&self) -> io::Result<Base> {
        Ok(Base {
            dir: self.dir.try_clone()?,
            shown: self.shown.clone(),
        })
    }
}

/// The normal components of a relative path; `.` is skipped, anything else
/// (`..`, a root, a prefix) is refused.
pub fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", rel.display()),
                ));
            }
        }
    }
    Ok(out)
}

/// `rel` below `from`, one real directory at a time.
pub fn walk(from: &Dir, rel: &Path, create: Create) -> io::Result<Dir> {
    let mut at = from.try_clone()?;
    for name in components(rel)? {
        at = match at.open_dir_nofollow(name) {
            Ok(next) => next,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create == Create::Yes => {
                match at.create_dir(name) {
                    Ok(()) => {}
                    // Made by someone else meanwhile: fine if it is a directory.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                at.open_dir_nofollow(name)
                    .map_err(|e| not_a_dir(&at, name, e))?
            }
            Err(e) => return Err(not_a_dir(&at, name, e)),
        };
    }
    Ok(at)
}

/// Say why `name` could not be entered: a symlink or a file says so.
fn not_a_dir(dir: &Dir, name: &OsStr, e: io::Error) -> io::Error {
    match dir.symlink_metadata(name) {
        Ok(m) if m.file_type().is_symlink() => io::Error::other(format!(
            "{} is a symbolic link; the host never follows links here",
            Path::new(name).display()
        )),
        Ok(m) if !m.is_dir() => io::Error::other(format!(
            "{} exists and is not a directory",
            Path::new(name).display()
        )),
        _ => e,
    }
}

/// Split `rel` into its parent (possibly empty) and its final name.
pub fn split(rel: &Path) -> io::Result<(PathBuf, OsString)> {
    let parts = components(rel)?;
    let Some((name, parent)) = parts.split_last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an empty path names no file",
        ));
    };
    Ok((parent.iter().collect(), name.to_os_string()))
}

/// Create `name` in `dir`, failing if anything at all is there already.
pub fn create_new(dir: &Dir, name: &OsStr, mode: u32) -> io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    // Readable too: a download hashes its partial file again through it.
    options
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .follow(FollowSymlinks::No);
    Ok(dir.open_with(name, &options)?.into_std())
}

/// Open an existing regular file `name` of `dir` for reading (and writing,
/// with `write`): a final symlink is not followed, a FIFO does not block, and
/// anything but a regular file is refused.
pub fn open_regular(dir: &Dir, name: &OsStr, write: bool) -> io::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .follow(FollowSymlinks::No);
    let file = dir
        .open_with(name, &options)
        .map_err(|e| match dir.symlink_metadata(name) {
            Ok(m) if m.file_type().is_symlink() => io::Error::other(format!(
                "{} is a symbolic link; the host never follows links here",
                Path::new(name).display()
            )),
            _ => e,
        })?;
    let file = file.into_std();
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            Path::new(name).display()
        )));
    }
    Ok(file)
}

/// Read a regular file of at most `max` bytes; None when it does not exist.
pub fn read_regular(dir: &Dir, name: &OsStr, max: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match open_regular(dir, name, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::other(format!(
            "{} is larger than {max} bytes",
            Path::new(name).display()
        )));
    }
    Ok(Some(bytes))
}

/// A name no one can have planted in advance: the process's random hasher
/// seed, the pid and a counter.
pub fn unpredictable_name(stem: &OsStr, suffix: &str) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let mut name = OsString::from(".");
    name.push(short(stem, 120));
    name.push(format!(".{:016x}{suffix}", h.finish()));
    name
}

/// At most `max` bytes of a name, cut at a character boundary where it is UTF-8.
fn short(name: &OsStr, max: usize) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    if let Some(text) = name.to_str() {
        let mut end = max.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        return OsString::from(text.get(..end).unwrap_or_default());
    }
    let bytes = name.as_bytes();
    OsStr::from_bytes(bytes.get(..max.min(bytes.len())).unwrap_or_default()).to_os_string()
}

/// Replace `name` in `dir` with `contents`, atomically: a fresh file under
/// an unpredictable name (created exclusively), synced, renamed over `name`,
/// then the directory synced. A crash leaves the old or the new content.
pub fn replace(dir: &Dir, name: &OsStr, contents: &[u8]) -> io::Result<()> {
    let mut attempts = 0;
    let (tmp, mut file) = loop {
        let tmp = unpredictable_name(name, ".tmp");
        match create_new(dir, &tmp, 0o644) {
            Ok(f) => break (tmp, f),
            // Something sits at that name: take another one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| dir.rename(&tmp, dir, name))
        .and_then(|()| sync_dir(dir));
    if written.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    written
}

/// fsync a directory, so a rename in it survives a crash. (A `Dir` is an
/// `O_PATH` handle, which cannot be synced: the directory is opened again
/// for reading through it.)
pub fn sync_dir(dir: &Dir) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.read(true);
    dir.open_with(".", &options)?.into_std().sync_all()
}

/// A checked upload source, already open: reading it later never resolves
/// its path again.
#[derive(Debug, Clone)]
pub struct Source {
    root: SourceRoot,
    shown: PathBuf,
}

#[derive(Debug, Clone)]
enum SourceRoot {
    File(Arc<std::fs::File>),
    Dir(Arc<Dir>),
}

impl Source {
    /// `rel` below `base` (a path without symlinks: the caller resolved it),
    /// opened through real directories only.
    pub fn open(base: &Base, rel: &Path) -> io::Result<Source> {
        let shown = base.show(rel);
        let (parent, name) = split(rel)?;
        let dir = base.walk(&parent, Create::No)?;
        let kind = dir
            .symlink_metadata(&name)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", shown.display())))?;
        let root = if kind.is_dir() {
            SourceRoot::Dir(Arc::new(dir.open_dir_nofollow(&name).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", shown.display()))
            })?))
        } else {
            SourceRoot::File(Arc::new(open_regular(&dir, &name, false).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", shown.display()))
            })?))
        };
        Ok(Source { root, shown })
    }

    /// `path` as it is on this machine (a test's or a tool's own file: its
    /// ancestors are trusted, a symlink at `path` itself is followed).
    pub fn ambient(path: &Path) -> io::Result<Source> {
        let shown = path.to_path_buf();
        let root = if std::fs::metadata(path)?.is_dir() {
            SourceRoot::Dir(Arc::new(Dir::open_ambient_dir(
                path,
                cap_std::ambient_authority(),
            )?))
        } else {
            let file = std::fs::File::open(path)?;
            if !file.metadata()?.is_file() {
                return Err(io::Error::other(format!(
                    "{}: not a regular file or directory",
                    path.display()
                )));
            }
            SourceRoot::File(Arc::new(file))
        };
        Ok(Source { root, shown })
    }

    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// The source when it is one file.
    pub fn as_file(&self) -> Option<LocalFile> {
        match &self.root {
            SourceRoot::File(file) => Some(LocalFile::Held {
                file: file.clone(),
                shown: self.shown.clone(),
            }),
            SourceRoot::Dir(_) => None,
        }
    }

    /// The source when it is a directory tree.
    pub fn as_dir(&self) -> Option<Arc<Dir>> {
        match &self.root {
            SourceRoot::Dir(dir) => Some(dir.clone()),
            SourceRoot::File(_) => None,
        }
    }
}

/// One file to read for an upload, opened again only by handle.
#[derive(Debug, Clone)]
pub enum LocalFile {
    /// A single-file upload: the file opened when the source was checked.
    Held {
        file: Arc<std::fs::File>,
        shown: PathBuf,
    },
    /// A file of a tree: `rel` below the tree's opened directory, reached
    /// through real directories only, and still the very file the walk
    /// found (same device and inode).
    InTree {
        root: Arc<Dir>,
        rel: PathBuf,
        id: (u64, u64),
        shown: PathBuf,
    },
}

impl LocalFile {
    pub fn shown(&self) -> &Path {
        match self {
            LocalFile::Held { shown, .. } | LocalFile::InTree { shown, .. } => shown,
        }
    }

    /// The file, positioned at its start. Readers take turns (one transfer
    /// reads one file at a time), so a held file's shared offset is safe.
    pub fn open(&self) -> io::Result<std::fs::File> {
        use std::io::Seek;
        crate::hooks::at(crate::hooks::Point::BeforeOpen(self.shown()));
        let mut file = match self {
            LocalFile::Held { file, .. } => file.try_clone()?,
            LocalFile::InTree {
                root,
                rel,
                id,
                shown,
            } => {
                let (parent, name) = split(rel)?;
                let file = walk(root, &parent, Create::No)
                    .and_then(|dir| open_regular(&dir, &name, false))
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "{}: {e} (it changed while it was being uploaded)",
                                shown.display()
                            ),
                        )
                    })?;
                let m = file.metadata()?;
                if (m.dev(), m.ino()) != *id {
                    return Err(io::Error::other(format!(
                        "{} was replaced by another file while it was being uploaded; nothing of it was sent",
                        shown.display()
                    )));
                }
                file
            }
        };
        file.rewind()?;
        Ok(file)
    }
}

/// A checked download destination: a path below an opened base, written
/// only through real directories.
#[derive(Debug, Clone)]
pub struct Target {
    base: Arc<Base>,
    rel: PathBuf,
}

impl Target {
    pub fn new(base: Arc<Base>, rel: PathBuf) -> io::Result<Target> {
        split(&rel)?;
        Ok(Target { base, rel })
    }

    /// `path` on this machine (a test's or a tool's own destination): its
    /// nearest existing ancestor is the base.
    pub fn ambient(path: &Path) -> io::Result<Target> {
        let path = std::path::absolute(path)?;
        let mut base = path.parent();
        while let Some(b) = base {
            if b.is_dir() {
                let rel = path
                    .strip_prefix(b)
                    .map_err(io::Error::other)?
                    .to_path_buf();
                return Target::new(Arc::new(Base::open(b)?), rel);
            }
            base = b.parent();
        }
        Err(io::Error::other(format!(
            "{}: no existing directory above it",
            path.display()
        )))
    }

    pub fn base(&self) -> &Base {
        &self.base
    }

    pub fn rel(&self) -> &Path {
        &self.rel
    }

    pub fn shown(&self) -> PathBuf {
        self.base.show(&self.rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_walk_goes_through_real_directories_only() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let base = Base::open(ws.path()).unwrap();
        base.walk(Path::new("a/b/c"), Create::Yes).unwrap();
        assert!(ws.path().join("a/b/c").is_dir());
        // A symlink at any component is refused, whether it points outside
        // or inside the base.
        symlink(outside.path(), ws.path().join("out")).unwrap();
        symlink(ws.path().join("a"), ws.path().join("inner")).unwrap();
        for rel in ["out", "out/x", "inner/b", "a/../out"] {
            let e = base.walk(Path::new(rel), Create::Yes).unwrap_err();
            assert!(
                e.to_string().contains("symbolic link") || e.to_string().contains("plain relative"),
                "{rel}: {e}"
            );
        }
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        std::fs::write(ws.path().join("file"), "x").unwrap();
        let e = base.walk(Path::new("file/x"), Create::Yes).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert_eq!(
            base.walk(Path::new("missing"), Create::No)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    /// Negative control: with `create_new` opening with create+truncate
    /// (what the run store did), the planted link's target is overwritten.
    #[test]
    fn replace_never_writes_through_a_planted_link() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let base = Base::open(ws.path()).unwrap();
        let dir = base.walk(Path::new(""), Create::No).unwrap();
        // A symlink and a hard link at the target name itself: replaced.
        symlink(&victim, ws.path().join("runs.json")).unwrap();
        replace(&dir, OsStr::new("runs.json"), b"new").unwrap();
        assert_eq!(std::fs::read(ws.path().join("runs.json")).unwrap(), b"new");
        assert!(!ws.path().join("runs.json").is_symlink());
        std::fs::remove_file(ws.path().join("runs.json")).unwrap();
        std::fs::hard_link(&victim, ws.path().join("runs.json")).unwrap();
        replace(&dir, OsStr::new("runs.json"), b"newer").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A planted name is never opened by create_new.
        symlink(&victim, ws.path().join("planted")).unwrap();
        assert_eq!(
            create_new(&dir, OsStr::new("planted"), 0o600)
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(ws.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn only_regular_files_are_read_and_never_through_a_link() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = Base::open(ws.path())
            .unwrap()
            .walk(Path::new(""), Create::No)
            .unwrap();
        std::fs::write(ws.path().join("ok"), "fine").unwrap();
        assert_eq!(
            read_regular(&dir, OsStr::new("ok"), 10).unwrap(),
            Some(b"fine".to_vec())
        );
        assert_eq!(read_regular(&dir, OsStr::new("missing"), 10).unwrap(), None);
        assert!(
            read_regular(&dir, OsStr::new("ok"), 3).is_err(),
            "over the cap"
        );
        symlink(outside.path().join("secret"), ws.path().join("link")).unwrap();
        let e = read_regular(&dir, OsStr::new("link"), 10).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A FIFO neither blocks nor is read.
        let fifo = ws.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let e = read_regular(&dir, OsStr::new("fifo"), 10).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn unpredictable_names_differ_and_stay_short() {
        let a = unpredictable_name(OsStr::new("runs.json"), ".tmp");
        let b = unpredictable_name(OsStr::new("runs.json"), ".tmp");
        assert_ne!(a, b);
        let long = "é".repeat(200);
        let n = unpredictable_name(OsStr::new(&long), ".tmp");
        assert!(n.len() <= 255, "{}", n.len());
        assert!(n.to_str().is_some(), "cut inside a character");
    }
}
