//! What the guest needs from its host, as a trait, so that all policy code can
//! run natively in tests against a fake, and in wasm against the WIT imports
//! (see `component.rs`, the only place that touches them).

use std::fmt;

/// Mirror of the WIT `host-error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    Denied(String),
    UnknownCluster(String),
    AuthFailed(String),
    HostKeyMismatch(String),
    HostKeyUnknown(String),
    Timeout(String),
    Connection(String),
    Remote(String),
    LocalIo(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Denied(m) => write!(f, "denied by host policy: {m}"),
            HostError::UnknownCluster(c) => write!(f, "unknown cluster profile {c:?} on this host"),
            HostError::AuthFailed(m) => write!(f, "ssh authentication failed: {m}"),
            HostError::HostKeyMismatch(m) => write!(f, "host key mismatch: {m}"),
            HostError::HostKeyUnknown(m) => write!(f, "unknown host key: {m}"),
            HostError::Timeout(m) => write!(f, "timed out: {m}"),
            HostError::Connection(m) => write!(f, "connection failed: {m}"),
            HostError::Remote(m) => write!(f, "remote error: {m}"),
            HostError::LocalIo(m) => write!(f, "local file error: {m}"),
        }
    }
}

/// Mirror of the WIT `tool-error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    InvalidConfig(String),
    InvalidRequest(String),
    Policy(String),
    Host(HostError),
    RemoteFailed(String),
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::InvalidConfig(m) => write!(f, "invalid cluster-slurm config: {m}"),
            ToolError::InvalidRequest(m) => write!(f, "{m}"),
            ToolError::Policy(m) => write!(f, "{m}"),
            ToolError::Host(e) => write!(f, "{e}"),
            ToolError::RemoteFailed(m) => write!(f, "{m}"),
        }
    }
}

impl From<HostError> for ToolError {
    fn from(e: HostError) -> Self {
        ToolError::Host(e)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cluster: String,
    pub program: String,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    pub stdin: Option<Vec<u8>>,
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: Option<i32>,
    pub exit_signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// A one-line account of a failure: the program's own error text first.
    pub fn failure_text(&self) -> String {
        let err = self.stderr_text();
        let out = self.stdout_text();
        let detail = [err.trim(), out.trim()]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("");
        let status = match (&self.exit_code, &self.exit_signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "no exit status".to_string(),
        };
        if detail.is_empty() {
            status
        } else {
            format!("{detail} ({status})")
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    pub files: u32,
    pub bytes: u64,
}

/// An operator's decision on a run held for approval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub approved: bool,
    pub by: String,
    pub at_ms: u64,
    pub note: String,
    /// The request digest the decision covers.
    pub key: String,
}

pub trait Host {
    fn exec(&mut self, request: ExecRequest) -> Result<ExecOutput, HostError>;
    fn upload(
        &mut self,
        cluster: &str,
        local_path: &str,
        remote_path: &str,
    ) -> Result<TransferStats, HostError>;
    /// Several uploads in one go (`(local, remote)` pairs); stats per item.
    fn upload_all(
        &mut self,
        cluster: &str,
        items: &[(String, String)],
    ) -> Result<Vec<TransferStats>, HostError>;
    fn download(
        &mut self,
        cluster: &str,
        remote_path: &str,
        local_path: &str,
    ) -> Result<TransferStats, HostError>;
    fn store_read(&mut self, path: &str) -> Result<Option<Vec<u8>>, HostError>;
    fn store_write(&mut self, path: &str, contents: &[u8]) -> Result<(), HostError>;
    /// Exclusive lock for one read-modify-write of a run-store file.
    fn store_lock(&mut self, path: &str) -> Result<(), HostError>;
    fn store_unlock(&mut self, path: &str) -> Result<(), HostError>;
    fn store_location(&mut self) -> String;
    /// The operator's decision on a run held for approval (None: pending).
    fn approval(&mut self, run_id: &str) -> Result<Option<Decision>, HostError>;
    /// Wall-clock time, milliseconds since the Unix epoch.
    fn now_ms(&mut self) -> u64;
    fn random_u64(&mut self) -> u64;
}
