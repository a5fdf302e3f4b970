//! Our host, two ways: the `cluster-slurm` CLI, a process per tool call
//! (as an agent without a warm host would use it), and a warm host — one
//! process, one pooled SSH connection per profile, a fresh guest instance
//! per call — as the MCP server and the OpenClaw entry run it.

use anyhow::{Context, Result, bail};
use cluster_slurm_host::audit::AuditLog;
use cluster_slurm_host::grants::Grants;
use cluster_slurm_host::operator::OperatorConfig;
use cluster_slurm_host::runtime::Runtime;
use cluster_slurm_host::transport::SshTransport;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// A warm host in this process.
pub struct Warm {
    pub runtime: Runtime,
    pub plugin: String,
    /// Its requests (`SshTransport::requests`) count what reaches the cluster.
    pub transport: Arc<SshTransport>,
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
        let transport =
            Arc::new(SshTransport::new(op.ssh_config.clone()).with_connection_budget(1000));
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
        // The connection record of the bench's own, not the user's.
        .env("CLUSTER_SLURM_STATE_DIR", config.with_file_name("state"))
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
