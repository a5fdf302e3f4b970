//! The thin wasm adapter: WIT imports behind the [`Host`] trait, and the WIT
//! `tool` export forwarding to [`crate::actions`]. Nothing here decides
//! anything.

use crate::host::{Decision, ExecOutput, ExecRequest, Host, HostError, ToolError, TransferStats};

wit_bindgen::generate!({
    path: "../wit",
    world: "cluster-slurm",
});

use exports::openclaw::cluster_slurm::tool::{self as wit_tool, Guest};
use openclaw::cluster_slurm::{approvals, run_store, ssh_exec, transfer, types};

fn from_wit(e: types::HostError) -> HostError {
    use types::HostError as W;
    match e {
        W::Denied(m) => HostError::Denied(m),
        W::UnknownCluster(m) => HostError::UnknownCluster(m),
        W::AuthFailed(m) => HostError::AuthFailed(m),
        W::HostKeyMismatch(m) => HostError::HostKeyMismatch(m),
        W::HostKeyUnknown(m) => HostError::HostKeyUnknown(m),
        W::Timeout(m) => HostError::Timeout(m),
        W::Connection(m) => HostError::Connection(m),
        W::Remote(m) => HostError::Remote(m),
        W::LocalIo(m) => HostError::LocalIo(m),
    }
}

fn to_wit_host(e: HostError) -> types::HostError {
    use types::HostError as W;
    match e {
        HostError::Denied(m) => W::Denied(m),
        HostError::UnknownCluster(m) => W::UnknownCluster(m),
        HostError::AuthFailed(m) => W::AuthFailed(m),
        HostError::HostKeyMismatch(m) => W::HostKeyMismatch(m),
        HostError::HostKeyUnknown(m) => W::HostKeyUnknown(m),
        HostError::Timeout(m) => W::Timeout(m),
        HostError::Connection(m) => W::Connection(m),
        HostError::Remote(m) => W::Remote(m),
        HostError::LocalIo(m) => W::LocalIo(m),
    }
}

fn to_wit_tool(e: ToolError) -> wit_tool::ToolError {
    match e {
        ToolError::InvalidConfig(m) => wit_tool::ToolError::InvalidConfig(m),
        ToolError::InvalidRequest(m) => wit_tool::ToolError::InvalidRequest(m),
        ToolError::Policy(m) => wit_tool::ToolError::Policy(m),
        ToolError::Host(h) => wit_tool::ToolError::Host(to_wit_host(h)),
        ToolError::RemoteFailed(m) => wit_tool::ToolError::RemoteFailed(m),
    }
}

/// [`Host`] over the WIT imports. Time and randomness come from WASI clocks
/// and random, the only WASI the component uses.
struct WitHost;

impl Host for WitHost {
    fn exec(&mut self, r: ExecRequest) -> Result<ExecOutput, HostError> {
        let out = ssh_exec::exec(&ssh_exec::ExecRequest {
            cluster: r.cluster,
            program: r.program,
            args: r.args,
            cwd: r.cwd,
            stdin: r.stdin,
            timeout_ms: r.timeout_ms,
        })
        .map_err(from_wit)?;
        Ok(ExecOutput {
            exit_code: out.exit_code,
            exit_signal: out.exit_signal,
            stdout: out.stdout,
            stderr: out.stderr,
            stdout_truncated: out.stdout_truncated,
            stderr_truncated: out.stderr_truncated,
        })
    }

    fn upload(
        &mut self,
        cluster: &str,
        local_path: &str,
        remote_path: &str,
    ) -> Result<TransferStats, HostError> {
        let s = transfer::upload(cluster, local_path, remote_path).map_err(from_wit)?;
        Ok(TransferStats {
            files: s.files,
            bytes: s.bytes,
        })
    }

    fn upload_all(
        &mut self,
        cluster: &str,
        items: &[(String, String)],
    ) -> Result<Vec<TransferStats>, HostError> {
        let items: Vec<transfer::UploadItem> = items
            .iter()
            .map(|(local, remote)| transfer::UploadItem {
                local_path: local.clone(),
                remote_path: remote.clone(),
            })
            .collect();
        let stats = transfer::upload_all(cluster, &items).map_err(from_wit)?;
        Ok(stats
            .into_iter()
            .map(|s| TransferStats {
                files: s.files,
                bytes: s.bytes,
            })
            .collect())
    }

    fn download(
        &mut self,
        cluster: &str,
        remote_path: &str,
        local_path: &str,
    ) -> Result<TransferStats, HostError> {
        let s = transfer::download(cluster, remote_path, local_path).map_err(from_wit)?;
        Ok(TransferStats {
            files: s.files,
            bytes: s.bytes,
        })
    }

    fn store_read(&mut self, path: &str) -> Result<Option<Vec<u8>>, HostError> {
        run_store::read(path).map_err(from_wit)
    }

    fn store_write(&mut self, path: &str, contents: &[u8]) -> Result<(), HostError> {
        run_store::write(path, contents).map_err(from_wit)
    }

    fn store_lock(&mut self, path: &str) -> Result<(), HostError> {
        run_store::lock(path).map_err(from_wit)
    }

    fn store_unlock(&mut self, path: &str) -> Result<(), HostError> {
        run_store::unlock(path).map_err(from_wit)
    }

    fn store_location(&mut self) -> String {
        run_store::location()
    }

    fn approval(&mut self, run_id: &str) -> Result<Option<Decision>, HostError> {
        let decision = approvals::lookup(run_id).map_err(from_wit)?;
        Ok(decision.map(|d| Decision {
            approved: d.approved,
            by: d.by,
            at_ms: d.at_ms,
            note: d.note,
            key: d.key,
        }))
    }

    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn random_u64(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        // Without randomness the run id still carries its timestamp; a clash
        // is then refused by the ledger, not silently merged.
        let _ = getrandom::fill(&mut buf);
        u64::from_le_bytes(buf)
    }
}

struct Component;

impl Guest for Component {
    fn describe() -> wit_tool::ToolDescription {
        let d = crate::describe();
        wit_tool::ToolDescription {
            name: d.name,
            label: d.label,
            description: d.description,
            parameters_schema: d.parameters_schema,
        }
    }

    fn check_config(config: String) -> Result<String, wit_tool::ToolError> {
        crate::check_config(&config).map_err(to_wit_tool)
    }

    fn invoke(config: String, request: String) -> Result<String, wit_tool::ToolError> {
        crate::actions::invoke(&mut WitHost, &config, &request).map_err(to_wit_tool)
    }
}

export!(Component);
