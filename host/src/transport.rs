//! The seam between policy checks and the network: capabilities check a
//! request against [`crate::grants::Grants`], then hand it to a [`Transport`].
//! Tests swap in a recording transport to prove that refused requests never
//! get here; production uses [`SshTransport`].

use crate::grants::{ProfileGrant, sftp_path};
use crate::local_fs::{Source, Target};
use crate::sftp;
use crate::ssh::{ConnectOptions, ExecResult, Pool, SshError};
use crate::ssh_config;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    pub files: u32,
    pub bytes: u64,
    /// Files whose SHA-256 was checked on both ends.
    pub verified: u32,
    /// Files the destination already held unchanged (nothing sent).
    pub unchanged: u32,
    /// Bytes not sent again because an interrupted transfer was resumed.
    pub resumed_bytes: u64,
    /// Downloaded files that changed on the cluster while being read.
    pub changing: u32,
    /// Uploaded files that travelled in tar bundles.
    pub bundled: u32,
    /// Entries of a tree that were not copied: symlinks (never followed),
    /// devices, FIFOs, sockets.
    pub skipped: u32,
    /// Downloads: the first of those, as remote paths (for the audit log).
    pub skipped_names: Vec<String>,
}

pub trait Transport: Send + Sync {
    /// Run an already checked and quoted command line.
    fn exec<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        command: String,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        output_cap: usize,
    ) -> BoxFuture<'a, Result<ExecResult, SshError>>;

    fn upload<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        local: Source,
        remote: String,
    ) -> BoxFuture<'a, Result<Moved, SshError>>;

    fn download<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        remote: String,
        local: Target,
    ) -> BoxFuture<'a, Result<Moved, SshError>>;

    /// Several uploads in one go; one `Moved` per item. No default: a
    /// wrapper that fell back to one upload per item would silently lose
    /// the single round trip this exists for.
    fn upload_all<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        items: Vec<(Source, String)>,
    ) -> BoxFuture<'a, Result<Vec<Moved>, SshError>>;
}

/// Transfers can be large; a stalled one is caught by SFTP's per-request
/// timeout well before this.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

/// SSH over russh: one connection per profile for the whole process, shared
/// by every exec channel and SFTP session.
pub struct SshTransport {
    pool: Pool,
    ssh_config: Option<PathBuf>,
    options: ConnectOptions,
    requests: AtomicU64,
    /// `host.maxDownloadBytes`: file content one download call may bring.
    max_download_bytes: u64,
}

impl SshTransport {
    pub fn new(ssh_config: Option<PathBuf>) -> SshTransport {
        SshTransport {
            // The user's shared record: the budget holds across every
            // cluster-slurm process (CLI calls, several MCP servers).
            pool: Pool::new().shared_per_user(),
            ssh_config,
            options: ConnectOptions::default(),
            requests: AtomicU64::new(0),
            max_download_bytes: crate::confine::DEFAULT_MAX_DOWNLOAD_BYTES,
        }
    }

    /// At most `bytes` bytes of file content per download call; a larger
    /// one is refused before anything moves (`host.maxDownloadBytes`).
    pub fn with_download_cap(mut self, bytes: u64) -> SshTransport {
        self.max_download_bytes = bytes;
        self
    }

    /// At most `per_minute` new connections per login node and minute, over
    /// every cluster-slurm process of the user (see [`crate::budget`]).
    pub fn with_connection_budget(mut self, per_minute: u32) -> SshTransport {
        self.pool = Pool::with_budget(per_minute).shared_per_user();
        self
    }

    /// Connection attempts so far (a whole session should need one per profile).
    pub fn connection_attempts(&self) -> u64 {
        self.pool.attempts()
    }

    /// Requests so far: every exec, upload, upload-all and download (each is
    /// one remote command or transfer, whatever it costs inside).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn connection(&self, profile: &ProfileGrant) -> Result<crate::ssh::Connection, SshError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let params = ssh_config::resolve(&profile.ssh_target, self.ssh_config.as_deref())?;
        self.pool
            .get(
                &profile.label,
                &params,
                self.ssh_config.as_deref(),
                &self.options,
            )
            .await
    }
}

impl Transport for SshTransport {
    fn exec<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        command: String,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        output_cap: usize,
    ) -> BoxFuture<'a, Result<ExecResult, SshError>> {
        Box::pin(async move {
            let conn = self.connection(profile).await?;
            conn.exec(&command, stdin.as_deref(), timeout, output_cap)
                .await
        })
    }

    fn upload<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        local: Source,
        remote: String,
    ) -> BoxFuture<'a, Result<Moved, SshError>> {
        Box::pin(self.copy(profile, Copy::Up { local, remote }))
    }

    fn download<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        remote: String,
        local: Target,
    ) -> BoxFuture<'a, Result<Moved, SshError>> {
        Box::pin(self.copy(profile, Copy::Down { remote, local }))
    }

    fn upload_all<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        items: Vec<(Source, String)>,
    ) -> BoxFuture<'a, Result<Vec<Moved>, SshError>> {
        Box::pin(async move {
            let conn = self.connection(profile).await?;
            let root = sftp_path(&profile.remote_root);
            let work = crate::copy::upload_all(&conn, &items, &root);
            let all = tokio::time::timeout(TRANSFER_TIMEOUT, work)
                .await
                .map_err(|_| {
                    SshError::Timeout(format!("upload of {} items did not finish", items.len()))
                })??;
            Ok(all
                .iter()
                .map(|(stats, verified)| Moved::of(stats, *verified))
                .collect())
        })
    }
}

enum Copy {
    Up { local: Source, remote: String },
    Down { remote: String, local: Target },
}

impl SshTransport {
    /// One SFTP session on the profile's shared connection per transfer.
    async fn copy(&self, profile: &ProfileGrant, copy: Copy) -> Result<Moved, SshError> {
        let conn = self.connection(profile).await?;
        // The root every path of the transfer must stay in, as the cluster
        // resolves it (see crate::confine).
        let root = sftp_path(&profile.remote_root);
        let work = async {
            match &copy {
                Copy::Up { local, remote } => {
                    let (stats, verified) =
                        crate::copy::upload(&conn, local, remote, &root).await?;
                    Ok::<_, SshError>(Moved::of(&stats, verified))
                }
                Copy::Down { remote, local } => {
                    let stats =
                        crate::copy::download(&conn, remote, local, &root, self.max_download_bytes)
                            .await?;
                    Ok(Moved::of(&stats, stats.verified + stats.unchanged))
                }
            }
        };
        tokio::time::timeout(TRANSFER_TIMEOUT, work)
            .await
            .map_err(|_| {
                SshError::Timeout(match &copy {
                    Copy::Up { local, .. } => {
                        format!("upload of {} did not finish", local.shown().display())
                    }
                    Copy::Down { remote, .. } => format!("download of {remote} did not finish"),
                })
            })?
    }
}

impl Moved {
    /// `files` counts every file now at the destination, whether it was sent,
    /// resumed or already there.
    fn of(stats: &sftp::TransferStats, verified: u32) -> Moved {
        Moved {
            files: stats.files + stats.unchanged,
            bytes: stats.bytes,
            verified,
            unchanged: stats.unchanged,
            resumed_bytes: stats.resumed_bytes,
            changing: stats.changing,
            bundled: stats.bundled,
            skipped: stats.skipped,
            skipped_names: stats.skipped_names.clone(),
        }
    }
}

/// Shared handle to whichever transport is in use.
pub type SharedTransport = Arc<dyn Transport>;
