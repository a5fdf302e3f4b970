//! Remote confinement of transfers: a remote path is judged by what it is
//! on the cluster, not by how it reads. The grants check a path's text
//! against `remoteRoot`; a job, though, can make any symlink in its run
//! directory (`ln -s /etc/passwd p`, `ln -s ~/.ssh s`, `ln -s / up`), and
//! SFTP follows links. So every transfer first refuses a root that passes
//! through a link a job could replace ([`check_root`]) and resolves the
//! root on the cluster (SFTP `realpath`); then a download's source is
//! resolved (`realpath`) and must lie in the resolved root, and a tree's
//! listing takes the entries' own types (`lstat`'s): links, devices, FIFOs
//! and sockets are skipped and named
//! ([`crate::sftp::DownloadPlan::skipped_names`]); a top-level source that
//! is none of a regular file or a directory is refused.
//!
//! These checks plan; they never decide a read or a write on their own.
//! The bytes move over exec, in commands that decide in the act where they
//! read ([`crate::fetch`]) or write ([`crate::put`], and the bundles of
//! [`crate::copy`]): a job swapping a checked directory for a link after
//! the plan gains nothing.

use russh_sftp::client::SftpSession;

use crate::sftp::remote_err;
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
        }
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
