//! The tool's actions. Everything here talks to the outside world only
//! through [`Host`], so it runs unchanged natively (tests, fake host) and in
//! wasm (WIT imports).

use crate::config::{Config, Profile};
use crate::header::Header;
use crate::host::{ExecOutput, ExecRequest, Host, HostError, ToolError};
use crate::ledger::{
    JobRecord, LEDGER_FILE, Ledger, RunRecord, iso_timestamp, new_run_id, sanitize_run_id,
};
use crate::paths::{basename, file_name, remote_join, remote_under, workspace_relative};
use crate::request::{DEFAULT_TAIL_LINES, Request};
use crate::routing::{Fallback, select_cluster, should_fallback_to_gpu};
use crate::script::{ScriptSpec, render};
use crate::slurm;
use serde::Serialize;
use serde_json::{Map, Value, json};

const SBATCH_TIMEOUT_MS: u32 = 120_000;
const QUERY_TIMEOUT_MS: u32 = 60_000;
const DEFAULT_SCRIPT_NAME: &str = "job.slurm";
/// SLURM's own default when a job sets no `--output`.
const SLURM_DEFAULT_OUTPUT: &str = "slurm-%j.out";

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
        "run_workload" => tool.run_workload(&request),
        "check_workload" => tool.check_workload(&request),
        "fetch_workload_logs" => tool.fetch_workload_logs(&request),
        "download_workload_outputs" => tool.download_workload_outputs(&request),
        other => Err(ToolError::InvalidRequest(format!(
            "unknown action {other:?}"
        ))),
    }?;
    serde_json::to_string_pretty(&result)
        .map_err(|e| ToolError::InvalidRequest(format!("cannot encode result: {e}")))
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

/// A status object: the parsed row, where it came from, and any notes.
fn tagged(row: &impl Serialize, source: &str, notes: Map<String, Value>) -> Value {
    let mut fields = match serde_json::to_value(row) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    fields.insert("source".into(), json!(source));
    fields.extend(notes);
    Value::Object(fields)
}

fn is_missing(log: &Value) -> bool {
    log.get("missing").and_then(Value::as_bool).unwrap_or(true)
}

struct Tool<'h> {
    config: Config,
    host: &'h mut dyn Host,
}

fn invalid(message: impl Into<String>) -> ToolError {
    ToolError::InvalidRequest(message.into())
}

/// What one submission produced.
struct Submitted {
    run: RunRecord,
    job_id: String,
    remote_dir: String,
    local_script_path: String,
    submit_output: String,
    uploaded: Vec<Value>,
}

impl Tool<'_> {
    fn profile(&self, id: &str) -> Result<&Profile, ToolError> {
        self.config.resolve_cluster(Some(id)).map_err(invalid)
    }

    fn load_ledger(&mut self) -> Result<Ledger, ToolError> {
        match self.host.store_read(LEDGER_FILE)? {
            None => Ok(Ledger::default()),
            Some(bytes) => {
                Ledger::parse(&bytes).map_err(|m| ToolError::Host(HostError::LocalIo(m)))
            }
        }
    }

    /// Re-read, change one run, write back: keeps the window in which another
    /// writer's update could be lost as small as possible.
    fn save_run(&mut self, run: &RunRecord) -> Result<(), ToolError> {
        let mut ledger = self.load_ledger()?;
        ledger
            .put(run)
            .map_err(|m| ToolError::Host(HostError::LocalIo(m)))?;
        let bytes = ledger
            .to_bytes()
            .map_err(|m| ToolError::Host(HostError::LocalIo(m)))?;
        self.host.store_write(LEDGER_FILE, &bytes)?;
        Ok(())
    }

    fn find_run(&mut self, run_id: Option<&str>) -> Result<Option<RunRecord>, ToolError> {
        let Some(raw) = run_id else { return Ok(None) };
        let id = sanitize_run_id(raw).map_err(invalid)?;
        self.load_ledger()?
            .get(&id)
            .map_err(|m| ToolError::Host(HostError::LocalIo(m)))
    }

    fn exec(
        &mut self,
        cluster: &str,
        program: &str,
        args: Vec<String>,
        cwd: Option<String>,
        timeout_ms: u32,
    ) -> Result<ExecOutput, ToolError> {
        Ok(self.host.exec(ExecRequest {
            cluster: cluster.to_string(),
            program: program.to_string(),
            args,
            cwd,
            stdin: None,
            timeout_ms: Some(timeout_ms),
        })?)
    }

    // ----------------------------------------------------------- list_clusters

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
                })
            })
            .collect();
        json!({
            "defaultCluster": self.config.default_cluster,
            "routing": self.config.routing_json(),
            "clusters": clusters,
        })
    }

    // ------------------------------------------------------------ run_workload

    fn run_workload(&mut self, req: &Request) -> Result<Value, ToolError> {
        let commands = req.all_commands();
        if commands.is_empty() {
            return Err(invalid("command or commands is required"));
        }
        if req.script_path.is_some() {
            return Err(invalid(
                "run_workload renders its script into the run directory and does not write scriptPath; use scriptName to name the script",
            ));
        }
        let allow_env = crate::policy::check_run_workload(
            req,
            &commands,
            self.config.allow_custom_env_override,
        )
        .map_err(ToolError::Policy)?;
        let local_paths = req
            .all_local_paths()
            .iter()
            .map(|p| workspace_relative("localPath", p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let existing = self.find_run(req.run_id.as_deref())?;
        let explicit = req
            .cluster
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        if let (Some(run), Some(c)) = (&existing, explicit)
            && run.cluster_id != c
        {
            return Err(invalid(format!(
                "runId {} belongs to cluster {:?} (requested {c:?})",
                run.run_id, run.cluster_id
            )));
        }
        let mut signals: Vec<&str> = req.workload.iter().map(String::as_str).collect();
        signals.extend(commands.iter().map(String::as_str));
        let selection = select_cluster(&self.config, explicit, &signals).map_err(invalid)?;
        let primary = explicit
            .map(str::to_string)
            .or_else(|| existing.as_ref().map(|r| r.cluster_id.clone()))
            .unwrap_or_else(|| selection.cluster_id.clone());

        let first = self.submit(
            &primary,
            existing.clone(),
            req.run_id.as_deref(),
            req.prefix.as_deref(),
            req,
            &commands,
            &local_paths,
        );
        let (submitted, cluster, fallback) = match first {
            Ok(s) => (s, primary, json!({"triggered": false})),
            Err(error) => {
                let text = error.to_string();
                match should_fallback_to_gpu(
                    &self.config,
                    &primary,
                    &text,
                    req.auto_fallback_to_gpu,
                ) {
                    Fallback::No(_) => return Err(error),
                    Fallback::ToGpu {
                        to_cluster,
                        matched_signature,
                    } => {
                        if existing.is_some() && local_paths.is_empty() {
                            return Err(invalid(format!(
                                "Automatic GPU fallback requires localPath/localPaths when re-routing an existing run ({})",
                                existing.as_ref().map(|r| r.run_id.as_str()).unwrap_or("")
                            )));
                        }
                        let prefix =
                            format!("{}-gpu-fallback", req.prefix.as_deref().unwrap_or("run"));
                        let s = self.submit(
                            &to_cluster,
                            None,
                            None,
                            Some(&prefix),
                            req,
                            &commands,
                            &local_paths,
                        )?;
                        let fb = json!({
                            "triggered": true,
                            "fromCluster": primary,
                            "toCluster": to_cluster,
                            "matchedSignature": matched_signature,
                            "originalError": text,
                        });
                        (s, to_cluster, fb)
                    }
                }
            }
        };
        Ok(json!({
            "mode": "run_workload",
            "cluster": cluster,
            "clusterSelection": selection,
            "runId": submitted.run.run_id,
            "jobId": submitted.job_id,
            "remoteRunDir": submitted.remote_dir,
            "localScriptPath": submitted.local_script_path,
            "submitOutput": submitted.submit_output,
            "uploaded": submitted.uploaded,
            "allowEnvOverrides": allow_env,
            "fallback": fallback,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        cluster_id: &str,
        existing: Option<RunRecord>,
        run_id_seed: Option<&str>,
        prefix: Option<&str>,
        req: &Request,
        commands: &[String],
        local_paths: &[String],
    ) -> Result<Submitted, ToolError> {
        let profile = self.profile(cluster_id)?.clone();
        let now = self.host.now_ms();
        let store = self.host.store_location();
        let mut run = match existing {
            Some(run) => run,
            None => {
                let run_id = match run_id_seed {
                    Some(seed) => sanitize_run_id(seed).map_err(invalid)?,
                    None => new_run_id(prefix, now, self.host.random_u64()).map_err(invalid)?,
                };
                RunRecord {
                    local_run_dir: format!("{store}/{run_id}"),
                    remote_run_dir: remote_join(&profile.remote_root, &run_id),
                    run_id,
                    cluster_id: profile.id.clone(),
                    created_at: iso_timestamp(now),
                    updated_at: iso_timestamp(now),
                    latest_script_path: None,
                    last_job_id: None,
                    jobs: Vec::new(),
                    extra: Default::default(),
                }
            }
        };
        let remote_dir = match &req.remote_dir {
            Some(dir) => remote_under("remoteDir", dir, &profile.remote_root, &profile.remote_root)
                .map_err(invalid)?,
            None => remote_under(
                "remoteRunDir",
                &run.remote_run_dir,
                &profile.remote_root,
                &profile.remote_root,
            )
            .map_err(invalid)?,
        };
        let script_name = file_name(
            "scriptName",
            req.script_name.as_deref().unwrap_or(DEFAULT_SCRIPT_NAME),
        )
        .map_err(invalid)?;
        for arg in &req.submit_args {
            if arg.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "submitArgs {arg:?} contains control characters"
                )));
            }
        }

        let overrides = req.header_overrides.clone().unwrap_or_default();
        let header: Header = profile.slurm_defaults.merged_with(&overrides);
        let script = render(&ScriptSpec {
            login_shell: profile.login_shell,
            header: header.clone(),
            env: req.env.clone(),
            module_init_scripts: profile.module_init_scripts.clone(),
            setup_commands: profile.setup_commands.clone(),
            modules: profile.slurm_defaults.modules.clone(),
            commands: commands.to_vec(),
        })
        .map_err(invalid)?;

        // Local copy first: the run exists in the ledger (and its script on
        // disk) before anything remote happens, so nothing is orphaned.
        let script_rel = format!("{}/{script_name}", run.run_id);
        self.host.store_write(&script_rel, script.as_bytes())?;
        let local_script_path = format!("{store}/{script_rel}");
        run.updated_at = iso_timestamp(now);
        self.save_run(&run)?;

        let mut uploaded = Vec::new();
        for path in local_paths {
            let remote = remote_join(&remote_dir, path);
            let stats = self.host.upload(&profile.id, path, &remote)?;
            uploaded.push(json!({"localPath": path, "remotePath": remote, "files": stats.files, "bytes": stats.bytes}));
        }
        let remote_script = remote_join(&remote_dir, &script_name);
        self.host
            .upload(&profile.id, &local_script_path, &remote_script)?;

        let mut args = vec!["--parsable".to_string()];
        args.extend(profile.submit_args.iter().cloned());
        args.extend(req.submit_args.iter().cloned());
        args.push(script_name.clone());
        let out = self.exec(
            &profile.id,
            "sbatch",
            args,
            Some(remote_dir.clone()),
            SBATCH_TIMEOUT_MS,
        )?;
        if !out.success() {
            return Err(ToolError::RemoteFailed(format!(
                "sbatch failed on cluster {:?}: {}",
                profile.id,
                out.failure_text()
            )));
        }
        let submit_output = out.stdout_text().trim().to_string();
        let job_id = slurm::parse_parsable_job_id(&submit_output).ok_or_else(|| {
            ToolError::RemoteFailed(format!(
                "Unable to parse job id from sbatch output: {submit_output:?}"
            ))
        })?;

        let submitted_at = iso_timestamp(self.host.now_ms());
        run.jobs.push(JobRecord {
            job_id: job_id.clone(),
            remote_script_path: remote_script,
            local_script_path: local_script_path.clone(),
            submitted_at: submitted_at.clone(),
            submit_output: submit_output.clone(),
            output_pattern: header.output.clone(),
            error_pattern: header.error.clone(),
            job_name: Some(
                header
                    .job_name
                    .clone()
                    .unwrap_or_else(|| script_name.clone()),
            ),
            extra: Default::default(),
        });
        run.last_job_id = Some(job_id.clone());
        run.latest_script_path = Some(local_script_path.clone());
        run.updated_at = submitted_at;
        self.save_run(&run)?;
        Ok(Submitted {
            run,
            job_id,
            remote_dir,
            local_script_path,
            submit_output,
            uploaded,
        })
    }

    // ---------------------------------------------------------- check_workload

    /// The run (if any), its profile, and the job id a follow-up action is about.
    fn follow_up(
        &mut self,
        req: &Request,
        job_required: bool,
    ) -> Result<(Option<RunRecord>, Profile, Option<String>), ToolError> {
        let run = self.find_run(req.run_id.as_deref())?;
        if let (Some(raw), None) = (&req.run_id, &run)
            && req.job_id.is_none()
            && req.remote_path.is_none()
        {
            return Err(invalid(format!("Unknown runId: {raw}")));
        }
        let explicit = req
            .cluster
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        if let (Some(r), Some(c)) = (&run, explicit)
            && r.cluster_id != c
        {
            return Err(invalid(format!(
                "runId {} belongs to cluster {:?} (requested {c:?})",
                r.run_id, r.cluster_id
            )));
        }
        let cluster = explicit
            .map(str::to_string)
            .or_else(|| run.as_ref().map(|r| r.cluster_id.clone()));
        let profile = self
            .config
            .resolve_cluster(cluster.as_deref())
            .map_err(invalid)?
            .clone();
        let job_id = match req
            .job_id
            .clone()
            .or_else(|| run.as_ref().and_then(|r| r.last_job_id.clone()))
        {
            Some(id) => Some(slurm::check_job_id(&id).map_err(invalid)?),
            None if job_required => {
                return Err(invalid(
                    "jobId is required (or provide runId with a submitted job)",
                ));
            }
            None => None,
        };
        Ok((run, profile, job_id))
    }

    fn check_workload(&mut self, req: &Request) -> Result<Value, ToolError> {
        let (run, profile, job_id) = self.follow_up(req, true)?;
        let job_id = job_id.unwrap_or_default();
        let status = self.job_status(&profile, &job_id, req.include_accounting != Some(false))?;
        let state = status
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("NOT_FOUND")
            .to_string();
        let exit_code = status
            .get("exitCode")
            .and_then(Value::as_str)
            .and_then(slurm::exit_status);
        Ok(json!({
            "mode": "check_workload",
            "runId": run.map(|r| r.run_id),
            "cluster": profile.id,
            "jobId": job_id,
            "status": status,
            "state": state,
            "done": slurm::is_terminal(&state),
            "exitCode": exit_code,
        }))
    }

    /// squeue first (it knows live jobs); sacct for finished ones and for the
    /// exit code. A failing squeue (e.g. "Invalid job id" for a purged job)
    /// still falls through to sacct.
    fn job_status(
        &mut self,
        profile: &Profile,
        job_id: &str,
        accounting: bool,
    ) -> Result<Value, ToolError> {
        let squeue = self.exec(
            &profile.id,
            "squeue",
            vec![
                "-h".into(),
                "-t".into(),
                "all".into(),
                "-j".into(),
                job_id.into(),
                "-o".into(),
                slurm::SQUEUE_FORMAT.into(),
            ],
            None,
            QUERY_TIMEOUT_MS,
        )?;
        let row = if squeue.success() {
            slurm::parse_squeue(&squeue.stdout_text(), job_id)
        } else {
            None
        };
        if let Some(row) = &row
            && (!slurm::is_terminal(&row.state) || !accounting)
        {
            return Ok(tagged(row, "squeue", Map::new()));
        }
        let mut notes = Map::new();
        if !squeue.success() {
            notes.insert("squeueError".into(), json!(squeue.failure_text()));
        }
        if accounting {
            let sacct = self.exec(
                &profile.id,
                "sacct",
                vec![
                    "-n".into(),
                    "-P".into(),
                    "-j".into(),
                    job_id.into(),
                    "-o".into(),
                    slurm::SACCT_FIELDS.into(),
                ],
                None,
                QUERY_TIMEOUT_MS,
            )?;
            if sacct.success() {
                if let Some(acct) = slurm::parse_sacct(&sacct.stdout_text(), job_id) {
                    return Ok(tagged(&acct, "sacct", Map::new()));
                }
            } else {
                notes.insert("sacctError".into(), json!(sacct.failure_text()));
            }
        }
        Ok(match row {
            Some(row) => tagged(&row, "squeue", notes),
            None => tagged(
                &json!({"jobId": job_id, "state": "NOT_FOUND"}),
                "unknown",
                notes,
            ),
        })
    }

    // ----------------------------------------------------- fetch_workload_logs

    fn read_log(&mut self, profile: &Profile, path: &str, tail: u64) -> Result<Value, ToolError> {
        let out = self.exec(
            &profile.id,
            "tail",
            vec!["-n".into(), tail.to_string(), "--".into(), path.to_string()],
            None,
            QUERY_TIMEOUT_MS,
        )?;
        if out.success() {
            return Ok(json!({
                "remotePath": path,
                "missing": false,
                "log": out.stdout_text(),
                "truncated": out.stdout_truncated,
            }));
        }
        let err = out.stderr_text();
        if err.contains("No such file") || err.contains("cannot open") {
            return Ok(json!({"remotePath": path, "missing": true, "log": ""}));
        }
        Err(ToolError::RemoteFailed(format!(
            "reading log {path} failed: {}",
            out.failure_text()
        )))
    }

    fn fetch_workload_logs(&mut self, req: &Request) -> Result<Value, ToolError> {
        let (run, profile, job_id) = self.follow_up(req, req.remote_path.is_none())?;
        let tail = req.tail.unwrap_or(DEFAULT_TAIL_LINES);
        let run_dir = run
            .as_ref()
            .map(|r| r.remote_run_dir.clone())
            .unwrap_or_else(|| profile.remote_root.clone());
        let hint = |tool: &Tool<'_>, log: &str| {
            slurm::missing_package_hint(log, &profile.id, &tool.profile_python(&profile.id))
        };

        if let Some(raw) = &req.remote_path {
            let path =
                remote_under("remotePath", raw, &profile.remote_root, &run_dir).map_err(invalid)?;
            let entry = self.read_log(&profile, &path, tail)?;
            let log = entry
                .get("log")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Ok(json!({
                "mode": "fetch_workload_logs",
                "runId": run.map(|r| r.run_id),
                "jobId": job_id,
                "cluster": profile.id,
                "remotePath": path,
                "missing": entry.get("missing").cloned().unwrap_or(json!(true)),
                "log": log,
                "missingPackageHint": hint(self, &log),
            }));
        }
        let Some(run) = run else {
            return Err(invalid("remotePath is required (or provide runId + jobId)"));
        };
        let job_id = job_id.unwrap_or_default();
        let job = run
            .jobs
            .iter()
            .find(|j| j.job_id == job_id || job_id.starts_with(&format!("{}_", j.job_id)));
        let (out_pattern, err_pattern, job_name) = match job {
            Some(j) => (
                j.output_pattern.clone(),
                j.error_pattern.clone(),
                j.job_name.clone(),
            ),
            None => (
                profile.slurm_defaults.output.clone(),
                profile.slurm_defaults.error.clone(),
                profile.slurm_defaults.job_name.clone(),
            ),
        };
        let job_name = job_name.unwrap_or_else(|| DEFAULT_SCRIPT_NAME.to_string());
        let resolve = |pattern: &str| {
            slurm::resolve_log_pattern(pattern, &job_id, &job_name)
                .map(|rel| remote_join(&run.remote_run_dir, &rel))
                .ok_or_else(|| {
                    invalid(format!(
                        "log pattern {pattern:?} uses %u or an unknown placeholder; pass remotePath"
                    ))
                })
        };
        let out_path = resolve(out_pattern.as_deref().unwrap_or(SLURM_DEFAULT_OUTPUT))?;
        // Without --error SLURM writes stderr into the --output file.
        let err_path = match &err_pattern {
            Some(p) => Some(resolve(p)?).filter(|p| *p != out_path),
            None => None,
        };
        let stdout = self.read_log(&profile, &out_path, tail)?;
        let stderr = match &err_path {
            Some(p) => self.read_log(&profile, p, tail)?,
            None => {
                json!({"remotePath": out_path, "missing": is_missing(&stdout), "log": "", "sameFileAsStdout": true})
            }
        };
        let text = |v: &Value| {
            v.get("log")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let log = [text(&stdout), text(&stderr)]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let missing = is_missing(&stdout) && is_missing(&stderr);
        Ok(json!({
            "mode": "fetch_workload_logs",
            "runId": run.run_id,
            "jobId": job_id,
            "cluster": profile.id,
            "missing": missing,
            "log": log,
            "logs": {"stdout": stdout, "stderr": stderr},
            "missingPackageHint": hint(self, &log),
        }))
    }

    fn profile_python(&self, id: &str) -> String {
        self.config
            .profile(id)
            .map(|p| p.python_command.clone())
            .unwrap_or_else(|| "python3".to_string())
    }

    // ------------------------------------------------ download_workload_outputs

    fn download_workload_outputs(&mut self, req: &Request) -> Result<Value, ToolError> {
        let (run, profile, _) = self.follow_up(req, false)?;
        let remote_path = match (&req.remote_path, &run) {
            (Some(raw), _) => {
                let base = run
                    .as_ref()
                    .map(|r| r.remote_run_dir.clone())
                    .unwrap_or_else(|| profile.remote_root.clone());
                remote_under("remotePath", raw, &profile.remote_root, &base).map_err(invalid)?
            }
            (None, Some(r)) => {
                let file = req.remote_file.as_deref().unwrap_or("result.json");
                remote_under(
                    "remoteFile",
                    file.trim_start_matches('/'),
                    &profile.remote_root,
                    &r.remote_run_dir,
                )
                .map_err(invalid)?
            }
            (None, None) => {
                return Err(invalid(
                    "remotePath is required (or provide runId to resolve from run directory)",
                ));
            }
        };
        let local_path = match &req.local_path {
            Some(p) => workspace_relative("localPath", p).map_err(invalid)?,
            None => {
                let folder = run
                    .as_ref()
                    .map(|r| r.run_id.as_str())
                    .unwrap_or("cluster-run");
                format!("downloads/{folder}/{}", basename(&remote_path))
            }
        };
        let stats = self.host.download(&profile.id, &remote_path, &local_path)?;
        Ok(json!({
            "mode": "download_workload_outputs",
            "runId": run.map(|r| r.run_id),
            "cluster": profile.id,
            "remotePath": remote_path,
            "localPath": local_path,
            "files": stats.files,
            "bytes": stats.bytes,
        }))
    }
}
