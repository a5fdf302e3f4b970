//! Remote confinement of SFTP transfers: a remote path is judged by what it
//! is on the cluster, not by how it reads. The grants check a path's text
//! against `remoteRoot`; a job, though, can make any symlink in its run
//! directory (`ln -s /etc/passwd p`, `ln -s ~/.ssh s`, `ln -s / up`), and
//! SFTP follows links. So every transfer first resolves the root on the
//! cluster (SFTP `realpath`), then:
//!
//! * a download's source is resolved (`realpath`) and must lie in the
//!   resolved root; the transfer then reads the resolved path, never the
//!   link. Inside a tree nothing is followed (the listing's types are the
//!   entries' own, `lstat`'s): links, devices, FIFOs and sockets are skipped
//!   and named ([`crate::sftp::DownloadPlan::skipped_names`]); a top-level
//!   source that is none of a regular file or a directory is refused;
//! * every directory an upload writes into is reached from the root one
//!   component at a time: a real directory is taken as it is (its parent was
//!   checked), a symlink only when it resolves to a directory in the root, a
//!   missing one is made by us (`mkdir` of one name in a checked directory);
//! * a file an upload writes is looked at with `lstat` first: a symlink is
//!   refused, never written through; a new file is made with an exclusive
//!   create, which fails on anything that appeared at its name meanwhile.
//!
//! What SFTP cannot give: there is no `openat`, so a job that swaps a
//! checked directory for a symlink in the instant between the check and
//! the write still wins that race (the bundles' shell command narrows it
//! the same way, see [`crate::copy`]). Jobs that plant links beforehand,
//! which is what an agent can arrange, are all caught.

use std::collections::HashSet;

use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, FileType};

use crate::sftp::{is_no_such_file, remote_err, remote_join};
use crate::ssh::{Connection, SshError, quote_word};
use std::time::Duration;

/// The default of `host.maxDownloadBytes`: one call may bring at most this
/// many bytes of file content (20 GiB).
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 20 << 30;

/// A profile's remote root as the cluster resolves it, for one transfer.
#[derive(Debug, Clone)]
pub struct Confine {
    /// `remoteRoot` as SFTP reads it (relative paths are below the home).
    given: String,
    /// What it resolves to on the cluster: absolute, no links.
    real: String,
    /// `host.maxDownloadBytes`.
    max_download_bytes: u64,
    /// Directories below the root already checked (or made) in this transfer.
    checked: HashSet<String>,
}

/// What is at a place an upload writes a file.
#[derive(Debug, Clone)]
pub enum FileAt {
    /// Nothing: the file is made with an exclusive create.
    Missing,
    /// A regular file with these attributes (as `lstat` showed them):
    /// overwritten (or resumed) only if the opened handle shows the same.
    Regular(FileAttributes),
}

impl Confine {
    /// Resolve `root` (SFTP form: see [`crate::grants::sftp_path`]) on the
    /// cluster. For an upload (`create`) a missing root is made first
    /// (`mkdir -p` of the operator's own path); a download needs it to exist.
    pub async fn resolve(
        sftp: &SftpSession,
        root: &str,
        max_download_bytes: u64,
        create: bool,
    ) -> Result<Confine, SshError> {
        if create {
            crate::sftp::remote_mkdir_p(sftp, root).await?;
        }
        let real = sftp
            .canonicalize(root.to_string())
            .await
            .map_err(|e| remote_err("resolving remoteRoot", root, e))?;
        if !real.starts_with('/') {
            return Err(SshError::Remote(format!(
                "the cluster resolved remoteRoot {root} to {real:?}, not an absolute path"
            )));
        }
        Ok(Confine {
            given: root.to_string(),
            real,
            max_download_bytes,
            checked: HashSet::new(),
        })
    }

    /// The root as the grants give it (SFTP form).
    pub fn given_root(&self) -> &str {
        &self.given
    }

    /// The root as the cluster resolved it.
    pub fn real_root(&self) -> &str {
        &self.real
    }

    pub fn max_download_bytes(&self) -> u64 {
        self.max_download_bytes
    }

    /// True when the resolved path `real` is the resolved root or below it.
    pub fn holds(&self, real: &str) -> bool {
        within(&self.real, real)
    }

    fn outside(&self, path: &str, real: &str) -> SshError {
        SshError::Denied(format!(
            "remote path {} resolves to {real} on the cluster, outside remoteRoot {} ({}): a symbolic link leads out of it; nothing was read or written there",
            shown(path),
            self.shown_root(),
            self.real
        ))
    }

    fn shown_root(&self) -> String {
        shown(&self.given)
    }

    /// A download's source, resolved on the cluster: the path the transfer
    /// reads instead of `remote`, refused when it lies outside the root.
    pub async fn download_source(
        &self,
        sftp: &SftpSession,
        remote: &str,
    ) -> Result<String, SshError> {
        let real = sftp
            .canonicalize(remote.to_string())
            .await
            .map_err(|e| remote_err("stat", remote, e))?;
        if !self.holds(&real) {
            return Err(self.outside(remote, &real));
        }
        Ok(real)
    }

    /// The directory an upload writes `path` into must resolve inside the
    /// root: asked right before each file is opened, and again after it was
    /// written (a directory swapped for a link while earlier files were
    /// sent is caught before the next write; one swapped during this very
    /// write is reported).
    pub async fn parent_inside(
        &self,
        sftp: &SftpSession,
        path: &str,
        written: bool,
    ) -> Result<(), SshError> {
        let parent = crate::sftp::remote_parent(path);
        let real = sftp
            .canonicalize(parent.clone())
            .await
            .map_err(|e| remote_err("resolving", &parent, e))?;
        if self.holds(&real) {
            return Ok(());
        }
        let outcome = if written {
            format!("the file may have been written at {real}; nothing more was sent")
        } else {
            "nothing was written there".to_string()
        };
        Err(SshError::Denied(format!(
            "remote directory {} resolves to {real} on the cluster, outside remoteRoot {} ({}): it was swapped for a link during the upload; {outcome}",
            shown(&parent),
            self.shown_root(),
            self.real
        )))
    }

    /// Refuse a download of `bytes` bytes in `files` files over the cap.
    pub fn check_download_size(
        &self,
        remote: &str,
        bytes: u64,
        files: usize,
    ) -> Result<(), SshError> {
        if bytes > self.max_download_bytes {
            return Err(SshError::Denied(format!(
                "download of {} is {bytes} bytes ({files} file(s)), over host.maxDownloadBytes ({} bytes); nothing was transferred. Download a part of it, or the operator raises host.maxDownloadBytes",
                shown(remote),
                self.max_download_bytes
            )));
        }
        Ok(())
    }

    /// The components of `path` below the root, or None when its text is
    /// not below the root (the grants make sure it is).
    fn below_root<'a>(&self, path: &'a str) -> Option<Vec<&'a str>> {
        let path = path.trim_end_matches('/');
        let root = self.given.trim_end_matches('/');
        let rest = if root == "." {
            Some(path)
        } else if root.is_empty() {
            path.strip_prefix('/')
        } else if path == root {
            Some("")
        } else {
            path.strip_prefix(root).and_then(|r| r.strip_prefix('/'))
        }?;
        Some(rest.split('/').filter(|c| !c.is_empty()).collect())
    }

    /// Make sure the directory `path` (below the root) is a directory in the
    /// resolved root, reached without leaving it; missing components are
    /// made when `create`, else the walk stops at the first missing one
    /// (nothing below it exists yet).
    pub async fn write_dir(
        &mut self,
        sftp: &SftpSession,
        path: &str,
        create: bool,
    ) -> Result<(), SshError> {
        let Some(parts) = self.below_root(path) else {
            return Err(SshError::Denied(format!(
                "remote path {path} is not below remoteRoot {}",
                self.shown_root()
            )));
        };
        let mut at = self.given.trim_end_matches('/').to_string();
        if at.is_empty() {
            at = "/".to_string();
        }
        for part in parts {
            at = remote_join(&at, part);
            if self.checked.contains(&at) {
                continue;
            }
            match sftp.symlink_metadata(at.clone()).await {
                Ok(m) if m.file_type() == FileType::Dir => {}
                Ok(m) if m.file_type() == FileType::Symlink => {
                    let real = sftp
                        .canonicalize(at.clone())
                        .await
                        .map_err(|e| remote_err("resolving", &at, e))?;
                    if !self.holds(&real) {
                        return Err(self.outside(&at, &real));
                    }
                    let target = sftp
                        .metadata(real.clone())
                        .await
                        .map_err(|e| remote_err("stat", &real, e))?;
                    if target.file_type() != FileType::Dir {
                        return Err(SshError::Remote(format!(
                            "{at} exists and is not a directory"
                        )));
                    }
                }
                Ok(_) => {
                    return Err(SshError::Remote(format!(
                        "{at} exists and is not a directory"
                    )));
                }
                Err(e) if is_no_such_file(&e) && !create => return Ok(()),
                Err(e) if is_no_such_file(&e) => {
                    // One name in a checked directory: made there, whatever
                    // a link elsewhere says (mkdir never follows its last
                    // component). Someone else making it meanwhile is fine
                    // if it is a real directory.
                    let made = sftp.create_dir(at.clone()).await;
                    match sftp.symlink_metadata(at.clone()).await {
                        Ok(m) if m.file_type() == FileType::Dir => {}
                        Ok(_) => {
                            return Err(SshError::Denied(format!(
                                "{at} appeared on the cluster while it was being made, and is not a directory; nothing was written there"
                            )));
                        }
                        Err(e) => {
                            return Err(match made {
                                Err(made) => remote_err("mkdir", &at, made),
                                Ok(()) => remote_err("stat", &at, e),
                            });
                        }
                    }
                }
                Err(e) => return Err(remote_err("stat", &at, e)),
            }
            self.checked.insert(at.clone());
        }
        Ok(())
    }

    /// What is at `path`, a file an upload writes (its directory already
    /// checked by [`Confine::write_dir`]): a symlink, a directory or any
    /// other kind of file is refused.
    pub async fn write_file(&self, sftp: &SftpSession, path: &str) -> Result<FileAt, SshError> {
        match sftp.symlink_metadata(path.to_string()).await {
            Ok(m) => match m.file_type() {
                FileType::File => Ok(FileAt::Regular(m)),
                FileType::Symlink => Err(SshError::Denied(format!(
                    "remote path {} is a symbolic link on the cluster; an upload never writes through one (remove it there, or upload elsewhere)",
                    shown(path)
                ))),
                FileType::Dir => Err(SshError::Remote(format!(
                    "{path} exists and is a directory"
                ))),
                FileType::Other => Err(SshError::Denied(format!(
                    "remote path {} is not a regular file (a device, FIFO or socket); an upload only replaces regular files",
                    shown(path)
                ))),
            },
            Err(e) if is_no_such_file(&e) => Ok(FileAt::Missing),
            Err(e) => Err(remote_err("stat", path, e)),
        }
    }
}

/// `root` (SFTP form) as an absolute shell word: `"$HOME"/...` below the
/// home.
pub fn root_word(root: &str) -> String {
    if root.starts_with('/') {
        quote_word(root)
    } else if root == "." || root.is_empty() {
        "\"$HOME\"".to_string()
    } else {
        format!("\"$HOME\"/{}", quote_word(root))
    }
}

/// Refuse a transfer when `root` (SFTP form) passes through a symlink that
/// the cluster user could replace (see [`crate::remote_confine::ROOT_CHECK`]):
/// asked over exec before SFTP resolves the root, since SFTP would take
/// whatever the link points at for the root.
pub async fn check_root(conn: &Connection, root: &str) -> Result<(), SshError> {
    let command = format!(
        "{} exit 0",
        crate::remote_confine::root_check(&root_word(root), "exit 90")
    );
    let out = conn
        .exec(&command, None, Duration::from_secs(60), 64 << 10)
        .await?;
    match out.exit_code {
        Some(0) => Ok(()),
        Some(90) => Err(SshError::Denied(crate::remote_confine::root_link_refusal(
            &shown(root),
        ))),
        code => Err(SshError::Remote(format!(
            "checking remoteRoot {} on the cluster failed ({code:?}): {}",
            shown(root),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// A path in SFTP form (relative = below the home) as the agent wrote it:
/// `~/...` for one below the home.
pub fn shown(path: &str) -> String {
    if path == "." || path.is_empty() {
        "~".to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("~/{path}")
    }
}

/// True when the absolute, resolved `path` is `root` or below it.
pub fn within(root: &str, path: &str) -> bool {
    let root = root.trim_end_matches('/');
    root.is_empty()
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_compares_whole_components() {
        assert!(within("/home/u/runs", "/home/u/runs"));
        assert!(within("/home/u/runs", "/home/u/runs/r1/x"));
        assert!(within("/home/u/runs/", "/home/u/runs/r1"));
        assert!(!within("/home/u/runs", "/home/u/runs2"));
        assert!(!within("/home/u/runs", "/home/u"));
        assert!(!within("/home/u/runs", "/etc/passwd"));
        assert!(within("/", "/etc"));
    }

    fn confine(given: &str) -> Confine {
        Confine {
            given: given.to_string(),
            real: "/r".to_string(),
            max_download_bytes: 10,
            checked: HashSet::new(),
        }
    }

    #[test]
    fn components_below_the_root() {
        let c = confine("runs");
        assert_eq!(c.below_root("runs/a/b"), Some(vec!["a", "b"]));
        assert_eq!(c.below_root("runs"), Some(vec![]));
        assert_eq!(c.below_root("runs2/a"), None);
        let home = confine(".");
        assert_eq!(home.below_root("a/b"), Some(vec!["a", "b"]));
        let abs = confine("/scratch/u/");
        assert_eq!(abs.below_root("/scratch/u/r1/"), Some(vec!["r1"]));
        assert_eq!(abs.below_root("/scratch/uu"), None);
    }

    #[test]
    fn the_size_cap_names_the_key_and_both_sizes() {
        let c = confine("runs");
        assert!(c.check_download_size("runs/x", 10, 1).is_ok());
        let e = c.check_download_size("runs/x", 11, 2).unwrap_err();
        let SshError::Denied(m) = e else {
            panic!("{e:?}")
        };
        assert!(
            m.contains("host.maxDownloadBytes")
                && m.contains("11 bytes")
                && m.contains("(10 bytes)"),
            "{m}"
        );
    }
}
