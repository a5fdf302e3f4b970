//! The `ssh-exec` capability: run an allowlisted program on a profile's login
//! node, after [`Grants::exec_command`] has checked and quoted it.
//!
//! ```ignore
//! let ctx = ExecCtx::new(grants.clone(), transport.clone());
//! exec::add_to_linker(&mut linker, |state: &mut State| state.exec.view())?;
//! ```

use crate::audit::AuditLog;
use crate::bindings::HostError;
use crate::bindings::openclaw::cluster_slurm::ssh_exec::{self, ExecOutput, ExecRequest};
use crate::grants::Grants;
use crate::transport::SharedTransport;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasData, Linker};

/// Per-stream cap on what a command may return to the guest.
pub const OUTPUT_CAP: usize = 1 << 20;
pub const MAX_STDIN: usize = 16 << 20;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

pub struct ExecCtx {
    grants: Arc<Grants>,
    transport: SharedTransport,
    audit: Arc<AuditLog>,
}

pub struct ExecView<'a> {
    ctx: &'a ExecCtx,
}

impl ExecCtx {
    pub fn new(grants: Arc<Grants>, transport: SharedTransport) -> ExecCtx {
        ExecCtx {
            grants,
            transport,
            audit: Arc::new(AuditLog::off()),
        }
    }

    /// Record every call in `audit`.
    pub fn audited(mut self, audit: Arc<AuditLog>) -> ExecCtx {
        self.audit = audit;
        self
    }

    pub fn view(&self) -> ExecView<'_> {
        ExecView { ctx: self }
    }

    /// Check, then run. Everything before `transport.exec` is side-effect free.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecOutput, HostError> {
        let profile = self.grants.profile(&request.cluster)?;
        let command = self.grants.exec_command(
            profile,
            &request.program,
            &request.args,
            request.cwd.as_deref(),
        )?;
        if request.stdin.as_ref().is_some_and(|s| s.len() > MAX_STDIN) {
            return Err(HostError::Denied(format!(
                "stdin larger than {MAX_STDIN} bytes"
            )));
        }
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(DEFAULT_TIMEOUT)
            .min(MAX_TIMEOUT);
        let out = self
            .transport
            .exec(profile, command, request.stdin, timeout, OUTPUT_CAP)
            .await?;
        // The cluster-side half of the checkpoint (remote_confine) refused.
        if let Some(why) = crate::remote_confine::refusal(
            profile,
            &request.program,
            &request.args,
            request.cwd.as_deref(),
            out.exit_code,
            &out.stderr,
        ) {
            return Err(HostError::Denied(why));
        }
        Ok(ExecOutput {
            exit_code: out.exit_code,
            exit_signal: out.exit_signal,
            stdout: out.stdout,
            stderr: out.stderr,
            stdout_truncated: out.stdout_truncated,
            stderr_truncated: out.stderr_truncated,
        })
    }
}

impl ssh_exec::Host for ExecView<'_> {
    async fn exec(&mut self, request: ExecRequest) -> Result<ExecOutput, HostError> {
        let call = self.ctx.audit.call(
            "exec",
            [
                ("cluster", json!(request.cluster)),
                ("program", json!(request.program)),
                ("args", json!(request.args)),
                ("cwd", json!(request.cwd)),
                ("stdinBytes", json!(request.stdin.as_ref().map(Vec::len))),
            ],
        );
        let answer = self.ctx.exec(request).await;
        call.end(&answer, |out| {
            [
                ("exitCode", json!(out.exit_code)),
                ("stdoutBytes", json!(out.stdout.len())),
            ]
        });
        answer
    }
}

struct HasExec;

impl HasData for HasExec {
    type Data<'a> = ExecView<'a>;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ExecView<'_>,
) -> wasmtime::Result<()> {
    ssh_exec::add_to_linker::<T, HasExec>(linker, get)
}
