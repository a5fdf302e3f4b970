//! The tool's actions. Everything here talks to the outside world only
//! through [`Host`], so it runs unchanged natively (tests, fake host) and in
//! wasm (WIT imports).
//!
//! - `submit`: `init_run`, `render_job`, `submit_job`, `run_workload` (routing,
//!   presets, policy limits, dry runs, GPU fallback at submission).
//! - `status`: `job_status`, `check_workload` (many jobs per call, GPU fallback
//!   after a failure), `cancel_job`.
//! - `logs`: `job_logs`, `fetch_workload_logs` (tails or byte offsets).
//! - `files`: `upload`, `download`, `download_workload_outputs`, `list_runs`,
//!   `list_files`.

mod approval;
mod files;
mod logs;
mod status;
mod submit;

use crate::config::{Config, Profile};
use crate::host::{ExecOutput, ExecRequest, Host, HostError, ToolError};
use crate::ledger::{LEDGER_FILE, Ledger, RunRecord, sanitize_run_id};
use crate::request::Request;
use serde_json::{Map, Value, json};

const QUERY_TIMEOUT_MS: u32 = 60_000;

/// Parse config and request, run the action, return its result as JSON text.
pub fn invoke(
    host: &mut dyn Host,
    config_json: &str,
    request_json: &str,
) -> Result<String, ToolError> {
    let config = parse_config(config_json)?;
    let value: Value = serde_json::from_str(request_json)
        .map_err(|e| ToolError::InvalidRequest(format!("request is not valid JSON: {e}")))?;
    let request = Request::parse(&value).map_err(|e| ToolError::InvalidRequest(e.to_string()))?;
    let mut tool = Tool { config, host };
    let result = match request.action.as_str() {
        "list_clusters" => Ok(tool.list_clusters()),
        "init_run" => tool.init_run(&request),
        "upload" => tool.upload(&request),
        "render_job" => tool.render_job(&request),
        "submit_job" => tool.submit_job(&request),
        "job_status" => tool.job_status_action(&request),
        "job_logs" => tool.job_logs(&request),
        "download" => tool.download(&request),
        "cancel_job" => tool.cancel_job(&request),
        "run_workload" => tool.run_workload(&request),
        "check_workload" => tool.check_workload(&request),
        "fetch_workload_logs" => tool.fetch_workload_logs(&request),
        "download_workload_outputs" => tool.download_workload_outputs(&request),
        "list_runs" => tool.list_runs(&request),
        "list_files" => tool.list_files(&request),
        other => Err(invalid(format!("unknown action {other:?}"))),
    }?;
    serde_json::to_string_pretty(&result).map_err(|e| invalid(format!("cannot encode result: {e}")))
}

pub fn parse_config(config_json: &str) -> Result<Config, ToolError> {
    let value: Value = if config_json.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(config_json)
            .map_err(|e| ToolError::InvalidConfig(format!("config is not valid JSON: {e}")))?
    };
    Config::parse(&value).map_err(|e| ToolError::InvalidConfig(e.to_string()))
}

pub(crate) struct Tool<'h> {
    config: Config,
    host: &'h mut dyn Host,
}

pub(crate) fn invalid(message: impl Into<String>) -> ToolError {
    ToolError::InvalidRequest(message.into())
}

fn local_io(message: String) -> ToolError {
    ToolError::Host(HostError::LocalIo(message))
}

/// A JSON object from `(key, value)` pairs, moving the values: `json!`
/// copies a `Value` it is given by serializing it again, which for a status
/// call of 1,000 jobs was most of the guest's time.
pub(crate) fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect(),
    )
}

/// A status-like object: a parsed row given as its fields (see
/// `slurm::SqueueRow::fields`), where it came from, and notes.
fn tagged(fields: &[(&str, &str)], source: &str, notes: Map<String, Value>) -> Value {
    let mut map = Map::with_capacity(fields.len() + 1 + notes.len());
    for (key, value) in fields {
        map.insert((*key).to_string(), Value::String((*value).to_string()));
    }
    map.insert("source".into(), json!(source));
    map.extend(notes);
    Value::Object(map)
}

/// `(parent, name)` of a remote path, so commands can run in the file's own
/// directory with a relative argument (which also works for `~` roots, where
/// only the host can say what the absolute path is).
fn split_remote(path: &str) -> (String, String) {
    match path.rsplit_once('/') {
        Some((dir, name)) if !dir.is_empty() => (dir.to_string(), name.to_string()),
        _ => (path.to_string(), ".".to_string()),
    }
}

impl Tool<'_> {
    fn profile(&self, id: &str) -> Result<&Profile, ToolError> {
        self.config.resolve_cluster(Some(id)).map_err(invalid)
    }

    fn load_ledger(&mut self) -> Result<Ledger, ToolError> {
        match self.host.store_read(LEDGER_FILE)? {
            None => Ok(Ledger::default()),
            Some(bytes) => Ledger::parse(&bytes).map_err(local_io),
        }
    }

    /// Under the ledger's lock, re-read, change one run, write back: another
    /// call (here or in another process) updating another run waits, so
    /// neither update is lost.
    fn save_run(&mut self, run: &RunRecord) -> Result<(), ToolError> {
        self.host.store_lock(LEDGER_FILE)?;
        let saved = self.load_ledger().and_then(|mut ledger| {
            ledger.put(run).map_err(local_io)?;
            let bytes = ledger.to_bytes().map_err(local_io)?;
            Ok(self.host.store_write(LEDGER_FILE, &bytes)?)
        });
        let released = self.host.store_unlock(LEDGER_FILE);
        saved?;
        Ok(released?)
    }

    fn find_run(&mut self, run_id: Option<&str>) -> Result<Option<RunRecord>, ToolError> {
        let Some(raw) = run_id else { return Ok(None) };
        let id = sanitize_run_id(raw).map_err(invalid)?;
        let run = self.load_ledger()?.get(&id).map_err(local_io)?;
        if let Some(r) = &run {
            r.check_job_ids().map_err(invalid)?;
        }
        Ok(run)
    }

    /// The run named by `runId`, which must exist.
    fn existing_run(&mut self, run_id: &str) -> Result<RunRecord, ToolError> {
        self.find_run(Some(run_id))?.ok_or_else(|| {
            invalid(format!(
                "Unknown runId: {run_id} (list_runs shows the runs this workspace knows)"
            ))
        })
    }

    /// The profile for a call about `run`: the explicit `cluster` if any (which
    /// must match the run's), else the run's, else the default.
    fn profile_for(
        &self,
        requested: Option<&str>,
        run: Option<&RunRecord>,
    ) -> Result<Profile, ToolError> {
        let explicit = requested.map(str::trim).filter(|c| !c.is_empty());
        if let (Some(r), Some(c)) = (run, explicit)
            && r.cluster_id != c
        {
            return Err(invalid(format!(
                "runId {} belongs to cluster {:?} (requested {c:?})",
                r.run_id, r.cluster_id
            )));
        }
        let cluster = explicit.or(run.map(|r| r.cluster_id.as_str()));
        Ok(self
            .config
            .resolve_cluster(cluster)
            .map_err(invalid)?
            .clone())
    }

    fn exec(
        &mut self,
        cluster: &str,
        program: &str,
        args: Vec<String>,
        cwd: Option<String>,
        timeout_ms: u32,
    ) -> Result<ExecOutput, ToolError> {
        self.exec_with_stdin(cluster, program, args, cwd, None, timeout_ms)
    }

    fn exec_with_stdin(
        &mut self,
        cluster: &str,
        program: &str,
        args: Vec<String>,
        cwd: Option<String>,
        stdin: Option<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<ExecOutput, ToolError> {
        Ok(self.host.exec(ExecRequest {
            cluster: cluster.to_string(),
            program: program.to_string(),
            args,
            cwd,
            stdin,
            timeout_ms: Some(timeout_ms),
        })?)
    }

    /// Run a command that must succeed; a non-zero exit becomes
    /// `remote-failed` with `what` and the command's own error text.
    fn exec_ok(
        &mut self,
        cluster: &str,
        program: &str,
        args: Vec<String>,
        cwd: Option<String>,
        timeout_ms: u32,
        what: &str,
    ) -> Result<ExecOutput, ToolError> {
        let out = self.exec(cluster, program, args, cwd, timeout_ms)?;
        if out.success() {
            Ok(out)
        } else {
            Err(ToolError::RemoteFailed(format!(
                "{what}: {}",
                out.failure_text()
            )))
        }
    }

    /// `squeue -h -t all -j IDS -o FORMAT`: finished jobs too, while slurmctld remembers them.
    fn squeue(&mut self, cluster: &str, ids: &str, format: &str) -> Result<ExecOutput, ToolError> {
        crate::slurm::check_job_ids(ids.split(',')).map_err(invalid)?;
        let args = ["-h", "-t", "all", "-j", ids, "-o", format]
            .map(String::from)
            .to_vec();
        self.exec(cluster, "squeue", args, None, QUERY_TIMEOUT_MS)
    }

    /// `sacct -n -P [-X] -j IDS -o FIELDS`; `-X` keeps only allocations.
    fn sacct(
        &mut self,
        cluster: &str,
        ids: &str,
        fields: &str,
        allocations_only: bool,
    ) -> Result<ExecOutput, ToolError> {
        crate::slurm::check_job_ids(ids.split(',')).map_err(invalid)?;
        let mut args = vec!["-n".to_string(), "-P".to_string()];
        if allocations_only {
            args.push("-X".to_string());
        }
        args.extend(["-j", ids, "-o", fields].map(String::from));
        self.exec(cluster, "sacct", args, None, QUERY_TIMEOUT_MS)
    }

    /// Where files go on the cluster for `upload`/`submit_job`: `remoteDir`
    /// (under `remoteRoot`), else the run's directory, else
    /// `<remoteRoot>/<runId or fallback>`.
    fn remote_dir_for(
        &self,
        req: &Request,
        run: Option<&RunRecord>,
        profile: &Profile,
        fallback: &str,
    ) -> Result<String, ToolError> {
        Ok(match (&req.remote_dir, run) {
            (Some(d), _) => crate::paths::remote_under(
                "remoteDir",
                d,
                &profile.remote_root,
                &profile.remote_root,
            )
            .map_err(invalid)?,
            (None, Some(r)) => r.remote_run_dir.clone(),
            (None, None) => crate::paths::remote_join(
                &profile.remote_root,
                &sanitize_run_id(req.run_id.as_deref().unwrap_or(fallback)).map_err(invalid)?,
            ),
        })
    }

    fn list_clusters(&self) -> Value {
        let clusters: Vec<Value> = self
            .config
            .clusters
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "sshTarget": p.ssh_target,
                    "remoteRoot": p.remote_root,
                    "scheduler": "slurm",
                    "loginShell": p.login_shell,
                    "slurmDefaults": p.slurm_defaults,
                    "policy": p.policy_json(),
                })
            })
            .collect();
        json!({
            "defaultCluster": self.config.default_cluster,
            "routing": self.config.routing_json(),
            "clusters": clusters,
            "presets": self.config.presets_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split_remote;

    #[test]
    fn split_remote_paths() {
        assert_eq!(
            split_remote("/r/run1/slurm-1.out"),
            ("/r/run1".into(), "slurm-1.out".into())
        );
        assert_eq!(split_remote("~/runs/x"), ("~/runs".into(), "x".into()));
    }
}
