//! Our host, two ways: the `cluster-slurm` CLI, a process per tool call
//! (as an agent without a warm host would use it), and a warm host — one
//! process, one pooled SSH connection per profile, a fresh guest instance
//! per call — as the MCP server and the OpenClaw entry run it.

use anyhow::{Context, Result, bail};
use cluster_slurm_host::audit::AuditLog;
use cluster_slurm_host::grants::{Grants, ProfileGrant};
use cluster_slurm_host::operator::OperatorConfig;
use cluster_slurm_host::runtime::Runtime;
use cluster_slurm_host::ssh::{ExecResult, SshError};
use cluster_slurm_host::transport::{BoxFuture, Moved, SshTransport, Transport};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts what reaches the cluster.
pub struct Counting {
    inner: SshTransport,
    pub execs: AtomicU64,
    pub transfers: AtomicU64,
}

impl Counting {
    pub fn calls(&self) -> u64 {
        self.execs.load(Ordering::Relaxed) + self.transfers.load(Ordering::Relaxed)
    }
}

impl Transport for Counting {
    fn exec<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        command: String,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        output_cap: usize,
    ) -> BoxFuture<'a, Result<ExecResult, SshError>> {
        self.execs.fetch_add(1, Ordering::Relaxed);
        self.inner
            .exec(profile, command, stdin, timeout, output_cap)
    }

    fn upload<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        local: PathBuf,
        remote: String,
    ) -> BoxFuture<'a, Result<Moved, SshError>> {
        self.transfers.fetch_add(1, Ordering::Relaxed);
        self.inner.upload(profile, local, remote)
    }

    fn download<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        remote: String,
        local: PathBuf,
    ) -> BoxFuture<'a, Result<Moved, SshError>> {
        self.transfers.fetch_add(1, Ordering::Relaxed);
        self.inner.download(profile, remote, local)
    }

    fn upload_all<'a>(
        &'a self,
        profile: &'a ProfileGrant,
        items: Vec<(PathBuf, String)>,
    ) -> BoxFuture<'a, Result<Vec<Moved>, SshError>> {
        self.transfers.fetch_add(1, Ordering::Relaxed);
        self.inner.upload_all(profile, items)
    }
}

/// A warm host in this process.
pub struct Warm {
    pub runtime: Runtime,
    pub plugin: String,
    pub transport: Arc<Counting>,
}

impl Warm {
    pub fn new(
        config: &Value,
        base: &Path,
        workspace: &Path,
        wasm: &[u8],
        audit: Option<&Path>,
    ) -> Result<Warm> {
        let op = OperatorConfig::from_value(config.clone(), base)?;
        let grants = Arc::new(Grants::from_config(&op.plugin, workspace)?);
        let transport = Arc::new(Counting {
            inner: SshTransport::new(op.ssh_config.clone()).with_connection_budget(1000),
            execs: AtomicU64::new(0),
            transfers: AtomicU64::new(0),
        });
        let mut runtime = Runtime::new(wasm, grants, transport.clone())?;
        if let Some(path) = audit {
            runtime = runtime.with_audit(Arc::new(AuditLog::at(path)));
        }
        Ok(Warm {
            runtime,
            plugin: op.plugin.to_string(),
            transport,
        })
    }

    pub async fn call(&self, request: &Value) -> Result<Value> {
        match self
            .runtime
            .invoke(&self.plugin, &request.to_string())
            .await?
        {
            Ok(text) => Ok(serde_json::from_str(&text)?),
            Err(e) => bail!("{request}: {e:?}"),
        }
    }
}

/// `cluster-slurm --config C --workspace W call ACTION JSON`; the result.
pub fn cli_call(bin: &Path, config: &Path, workspace: &Path, request: &Value) -> Result<Value> {
    let action = request
        .get("action")
        .and_then(Value::as_str)
        .context("request without action")?;
    let out = Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("--workspace")
        .arg(workspace)
        .args(["call", action, &request.to_string()])
        .env("CLUSTER_SLURM_AUDIT_LOG", "off")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{action} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Run `bin ARGS` to the end; its peak resident set (KiB), from wait4
/// (std's `Child::wait` does not report resource usage).
#[allow(unsafe_code)]
pub fn peak_rss_kib(bin: &Path, args: &[&str]) -> Result<i64> {
    let child = Command::new(bin)
        .args(args)
        .env("CLUSTER_SLURM_AUDIT_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for; the pointers are
    // to live locals of the right types.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if waited != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{} {args:?} failed (status {status})", bin.display());
    }
    Ok(usage.ru_maxrss)
}
