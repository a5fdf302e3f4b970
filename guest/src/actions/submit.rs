//! Creating runs, rendering scripts and submitting them.

mod retry;

use super::approval::{approval_reasons, gated_header};
use super::{QUERY_TIMEOUT_MS, Tool, invalid};
use crate::config::{Policy, Preset, Profile};
use crate::header::Header;
use crate::host::ToolError;
use crate::ledger::{
    JobRecord, LogPatterns, RunRecord, Submission, digest, iso_timestamp, new_run_id,
    run_timestamp, sanitize_run_id,
};
use crate::paths::{basename, file_name, remote_join, remote_under, workspace_relative};
use crate::request::Request;
use crate::routing::{Fallback, Selection, select_cluster, should_fallback_to_gpu};
use crate::script::{ScriptSpec, render};
use crate::slurm;
use serde_json::{Value, json};

const SBATCH_TIMEOUT_MS: u32 = 120_000;
pub(super) const DEFAULT_SCRIPT_NAME: &str = "job.slurm";

/// A workload as the agent (or a preset) described it: enough to render and
/// submit it, and to resubmit it elsewhere later.
#[derive(Debug, Clone, Default)]
pub(super) struct Workload {
    pub commands: Vec<String>,
    pub env: Vec<(String, String)>,
    pub local_paths: Vec<String>,
    pub overrides: Header,
    pub script_name: String,
    pub submit_args: Vec<String>,
    /// Overrides came from an operator preset, not the agent.
    pub from_preset: Option<String>,
    /// `remoteDir` of the call: where a new run lives instead of
    /// `<remoteRoot>/<runId>` (still under `remoteRoot`).
    pub remote_dir: Option<String>,
}

impl Workload {
    fn to_json(&self) -> Value {
        let env: serde_json::Map<String, Value> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "commands": self.commands,
            "env": env,
            "localPaths": self.local_paths,
            "headerOverrides": self.overrides,
            "remoteDir": self.remote_dir,
            "scriptName": self.script_name,
            "submitArgs": self.submit_args,
            "preset": self.from_preset,
        })
    }

    /// Rebuild from a ledger record (for the GPU resubmission).
    pub(super) fn from_json(v: &Value) -> Result<Workload, ToolError> {
        let mut request = serde_json::Map::new();
        request.insert("action".into(), json!("run_workload"));
        for key in [
            "commands",
            "env",
            "localPaths",
            "headerOverrides",
            "scriptName",
            "submitArgs",
        ] {
            if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
                request.insert(key.into(), x.clone());
            }
        }
        let req = Request::parse(&Value::Object(request))
            .map_err(|e| invalid(format!("stored workload is unreadable: {e}")))?;
        Ok(Workload {
            commands: req.all_commands(),
            env: req.env.clone(),
            local_paths: req.local_paths.clone(),
            overrides: req.header_overrides.clone().unwrap_or_default(),
            // The ledger is agent-writable: the stored name is checked
            // like a request's.
            script_name: file_name(
                "scriptName",
                req.script_name.as_deref().unwrap_or(DEFAULT_SCRIPT_NAME),
            )
            .map_err(invalid)?,
            submit_args: req.submit_args.clone(),
            from_preset: v.get("preset").and_then(Value::as_str).map(str::to_string),
            remote_dir: None,
        })
    }
}

/// The job works in its run directory: retries find an interrupted
/// submission by it, and logs are looked for there. `-D`/`--chdir` would
/// move it: refused, also abbreviated (`--chd=`) and bundled after flags
/// (`-vD`). (Appending `--chdir=.` instead would make SLURM record the
/// WorkDir as `<run>/.`, which retries would no longer recognise.)
pub(super) fn stays_in_run_dir(profile: &Profile, args: &[String]) -> Result<(), ToolError> {
    match args.iter().find(|a| moves_the_job(a)) {
        Some(arg) => Err(ToolError::Policy(format!(
            "sbatch argument {arg:?} would move the job out of its run directory; drop it (profile {:?} submitArgs or the call's)",
            profile.id
        ))),
        None => Ok(()),
    }
}

/// `--chdir` (or any abbreviation getopt accepts, `--ch...`), `-D`, or `-D`
/// after short flags that take no value (`-vD/tmp`).
fn moves_the_job(arg: &str) -> bool {
    if let Some(long) = arg.strip_prefix("--") {
        return long.starts_with("ch");
    }
    let Some(short) = arg.strip_prefix('-') else {
        return false;
    };
    for c in short.chars() {
        match c {
            'D' => return true,
            // sbatch's short flags without a value.
            'h' | 'H' | 'k' | 'O' | 'Q' | 's' | 'v' | 'V' | 'W' => {}
            _ => return false,
        }
    }
    false
}

/// The digest that tells requests apart: the profile, the prefix and the
/// workload as asked for (retries and approvals are matched by it).
pub(super) fn request_key(primary: &str, prefix: Option<&str>, workload: &Workload) -> String {
    digest(&format!(
        "{primary}\n{}\n{}",
        prefix.unwrap_or(""),
        workload.to_json()
    ))
}

/// What one submission produced.
pub(super) struct Submitted {
    pub run: RunRecord,
    pub job_id: String,
    pub remote_dir: String,
    pub local_script_path: String,
    pub submit_output: String,
    pub uploaded: Vec<Value>,
}

/// The GPUs a header asks for in total, as far as it can be told.
pub(super) fn gpus_requested(h: &Header) -> u64 {
    let from_gres = h.gres.as_deref().map_or(0, |g| {
        g.split(',')
            .filter(|part| part.starts_with("gpu"))
            .map(|part| {
                part.rsplit(':')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(1)
            })
            .sum()
    });
    let nodes = h.nodes.unwrap_or(1);
    h.gpus.unwrap_or(0) + h.gpus_per_node.unwrap_or(0) * nodes + from_gres * nodes
}

pub(super) fn minutes_text(m: u64) -> String {
    format!("{}-{:02}:{:02}:00", m / 1440, m % 1440 / 60, m % 60)
}

/// Apply a profile's policy to the overrides an agent asked for and to the
/// resulting header. Every refusal names the profile and the rule.
pub(super) fn apply_policy(
    profile: &Profile,
    overrides: &Header,
    from_preset: bool,
    submit_args: &[String],
) -> Result<Header, ToolError> {
    let policy: &Policy = &profile.policy;
    let refuse =
        |rule: String| ToolError::Policy(format!("profile {:?} policy: {rule}", profile.id));
    if let Some(allowed) = &policy.overridable_fields
        && !from_preset
    {
        for field in overrides.set_fields() {
            if !allowed.iter().any(|a| a == field) {
                return Err(refuse(format!(
                    "headerOverrides.{field} may not be changed (overridableFields: {})",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
        }
    }
    if !submit_args.is_empty() && !policy.allow_submit_args {
        return Err(refuse(
            "submitArgs are not allowed here (they could bypass the profile's limits; set policy.allowSubmitArgs to permit them)".to_string(),
        ));
    }
    let mut header = profile.slurm_defaults.merged_with(overrides);
    if let Some(max) = policy.max_time_minutes {
        match (header.time.is_some(), header.time_minutes()) {
            (false, _) => header.time = Some(minutes_text(max)),
            (true, None) => {
                return Err(refuse(format!(
                    "time UNLIMITED exceeds maxTime ({})",
                    minutes_text(max)
                )));
            }
            (true, Some(m)) if m > max => {
                return Err(refuse(format!(
                    "time {} exceeds maxTime {}",
                    header.time.as_deref().unwrap_or(""),
                    minutes_text(max)
                )));
            }
            _ => {}
        }
    }
    if let (Some(max), Some(n)) = (policy.max_nodes, header.nodes)
        && n > max
    {
        return Err(refuse(format!("nodes {n} exceeds maxNodes {max}")));
    }
    if let Some(max) = policy.max_gpus {
        let n = gpus_requested(&header);
        if n > max {
            return Err(refuse(format!("{n} GPUs requested, maxGpus is {max}")));
        }
    }
    if let Some(size) = header.array_size()
        && size > policy.max_array_size
    {
        return Err(refuse(format!(
            "array {} has {size} tasks, maxArraySize is {}",
            header.array.as_deref().unwrap_or(""),
            policy.max_array_size
        )));
    }
    Ok(header)
}

/// Fill a preset's commands from `presetParams`: every value must be a
/// declared parameter matching its pattern, and goes in as one shell-quoted
/// word (the templates were checked when the config was read).
fn preset_commands(preset: &Preset, given: &[(String, String)]) -> Result<Vec<String>, ToolError> {
    for (name, _) in given {
        if !preset.parameters.iter().any(|p| &p.name == name) {
            let declared: Vec<&str> = preset.parameters.iter().map(|p| p.name.as_str()).collect();
            return Err(invalid(format!(
                "preset {:?} has no parameter {name:?} (declared: {})",
                preset.name,
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            )));
        }
    }
    let mut values: Vec<(&str, String)> = Vec::new();
    for p in &preset.parameters {
        let value = given
            .iter()
            .find(|(n, _)| n == &p.name)
            .map(|(_, v)| v.clone())
            .or_else(|| p.default.clone())
            .ok_or_else(|| {
                invalid(format!(
                    "preset {:?} needs presetParams.{}",
                    preset.name, p.name
                ))
            })?;
        let ok = regex_lite::Regex::new(&p.pattern)
            .map(|re| re.is_match(&value))
            .unwrap_or(false);
        if !ok {
            return Err(ToolError::Policy(format!(
                "presetParams.{} {value:?} does not match the preset's pattern {}",
                p.name, p.pattern
            )));
        }
        // Whatever the pattern allows: a line break would end a comment or
        // a here-document line of the script, and no parameter needs one.
        if value.chars().any(char::is_control) {
            return Err(ToolError::Policy(format!(
                "presetParams.{} {value:?} contains control characters",
                p.name
            )));
        }
        values.push((p.name.as_str(), value));
    }
    let declared: Vec<&str> = preset.parameters.iter().map(|p| p.name.as_str()).collect();
    preset
        .commands
        .iter()
        .map(|c| {
            crate::template::Template::parse(c, &declared)
                .and_then(|t| {
                    t.render(|name| {
                        values
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map(|(_, v)| v.clone())
                    })
                })
                .map_err(|e| invalid(format!("preset {:?} command template: {e}", preset.name)))
        })
        .collect()
}

impl Tool<'_> {
    /// `runId`, else a fresh `[prefix-]timestamp-random` id.
    pub(super) fn choose_run_id(
        &mut self,
        run_id: Option<&str>,
        prefix: Option<&str>,
    ) -> Result<String, ToolError> {
        match run_id {
            Some(seed) => sanitize_run_id(seed).map_err(invalid),
            None => {
                let now = self.host.now_ms();
                let random = self.host.random_u64();
                new_run_id(prefix, now, random).map_err(invalid)
            }
        }
    }

    pub(super) fn new_run(&mut self, profile: &Profile, run_id: String) -> RunRecord {
        let now = iso_timestamp(self.host.now_ms());
        let store = self.host.store_location();
        RunRecord {
            local_run_dir: format!("{store}/{run_id}"),
            remote_run_dir: remote_join(&profile.remote_root, &run_id),
            run_id,
            cluster_id: profile.id.clone(),
            created_at: now.clone(),
            updated_at: now,
            latest_script_path: None,
            last_job_id: None,
            jobs: Vec::new(),
            latest_script_logs: None,
            fallback_run_id: None,
            fallback_from_run_id: None,
            submission: None,
            approval: None,
            extra: Default::default(),
        }
    }

    /// Keep a rendered script in the run store; its workspace-relative path.
    pub(super) fn store_script(&mut self, rel: &str, script: &str) -> Result<String, ToolError> {
        self.host.store_write(rel, script.as_bytes())?;
        Ok(format!("{}/{rel}", self.host.store_location()))
    }

    /// A script path from the ledger, as a workspace-relative path. The
    /// reference recorded absolute paths; one inside the run store maps back.
    fn store_relative(&mut self, path: &str) -> Result<String, ToolError> {
        if !path.starts_with('/') {
            return Ok(path.to_string());
        }
        let store = self.host.store_location();
        let marker = format!("/{store}/");
        match path.find(&marker) {
            Some(i) => Ok(format!(
                "{store}/{}",
                path.get(i + marker.len()..).unwrap_or_default()
            )),
            None => Err(invalid(format!(
                "the run's script {path} is outside the run store; render it again with render_job, then submit_job"
            ))),
        }
    }

    // ------------------------------------------------------------------ init_run

    pub(super) fn init_run(&mut self, req: &Request) -> Result<Value, ToolError> {
        let explicit = req.cluster.clone();
        let run_id = self.choose_run_id(req.run_id.as_deref(), req.prefix.as_deref())?;
        if let Some(existing) = self.find_run(Some(&run_id))? {
            // Never reset an existing run (the reference erased its jobs).
            self.profile_for(explicit.as_deref(), Some(&existing))?;
            return Ok(json!({"run": existing, "created": false}));
        }
        let profile = self
            .config
            .resolve_cluster(explicit.as_deref())
            .map_err(invalid)?
            .clone();
        let run = self.new_run(&profile, run_id);
        let what = format!("mkdir {} failed", run.remote_run_dir);
        self.exec_ok(
            &profile.id,
            "mkdir",
            vec!["-p".into(), "--".into(), run.run_id.clone()],
            None,
            QUERY_TIMEOUT_MS,
            &what,
        )?;
        self.save_run(&run)?;
        Ok(json!({"run": run, "created": true}))
    }

    // ---------------------------------------------------------------- render_job

    pub(super) fn render_for(
        &self,
        profile: &Profile,
        header: &Header,
        workload: &Workload,
        call_env: Option<(&[String], &[String])>,
    ) -> Result<String, ToolError> {
        let (extra_setup, extra_modules) = call_env.unwrap_or((&[], &[]));
        let mut setup = profile.setup_commands.clone();
        setup.extend(extra_setup.iter().cloned());
        let mut modules = header.modules.clone();
        modules.extend(extra_modules.iter().cloned());
        render(&ScriptSpec {
            login_shell: profile.login_shell,
            header: header.clone(),
            env: workload.env.clone(),
            module_init_scripts: profile.module_init_scripts.clone(),
            setup_commands: setup,
            modules,
            commands: workload.commands.clone(),
        })
        .map_err(invalid)
    }

    pub(super) fn render_job(&mut self, req: &Request) -> Result<Value, ToolError> {
        let commands = req.all_commands();
        if commands.is_empty() {
            return Err(invalid("command or commands is required"));
        }
        let allow =
            crate::policy::check_render_job(req, &commands, self.config.allow_custom_env_override)
                .map_err(ToolError::Policy)?;
        if req.script_path.is_some() {
            return Err(invalid(
                "render_job writes the script into the run store (localRunsDir/<runId>/<scriptName>), never over a workspace file; drop scriptPath and use scriptName",
            ));
        }
        let run = match &req.run_id {
            Some(id) => Some(self.existing_run(id)?),
            None => None,
        };
        let profile = self.profile_for(req.cluster.as_deref(), run.as_ref())?;
        let mut overrides = req.header_overrides.clone().unwrap_or_default();
        let call_modules: Vec<String> = if allow {
            req.modules.clone()
        } else {
            Vec::new()
        };
        if !allow {
            overrides.modules.clear();
        }
        let header = apply_policy(&profile, &overrides, false, &[])?;
        let workload = Workload {
            commands,
            env: req.env.clone(),
            script_name: file_name(
                "scriptName",
                req.script_name.as_deref().unwrap_or(DEFAULT_SCRIPT_NAME),
            )
            .map_err(invalid)?,
            ..Workload::default()
        };
        let call_setup: Vec<String> = if allow {
            req.setup_commands.clone()
        } else {
            Vec::new()
        };
        let script = self.render_for(
            &profile,
            &header,
            &workload,
            Some((&call_setup, &call_modules)),
        )?;
        let folder = match &run {
            Some(r) => r.run_id.clone(),
            None => format!("adhoc-{}", run_timestamp(self.host.now_ms())),
        };
        let rel = format!("{folder}/{}", workload.script_name);
        let local_script_path = self.store_script(&rel, &script)?;
        if let Some(mut run) = run.clone() {
            run.latest_script_path = Some(local_script_path.clone());
            run.latest_script_logs = Some(LogPatterns::of(&header, &workload.script_name));
            run.updated_at = iso_timestamp(self.host.now_ms());
            self.save_run(&run)?;
        }
        Ok(json!({
            "cluster": profile.id,
            "runId": run.map(|r| r.run_id),
            "localScriptPath": local_script_path,
            "script": script,
        }))
    }

    // ---------------------------------------------------------------- submit_job

    /// `sbatch --parsable` in `remote_dir`; the job id or a clear failure.
    fn sbatch(
        &mut self,
        profile: &Profile,
        remote_dir: &str,
        script_name: &str,
        submit_args: &[String],
    ) -> Result<(String, String), ToolError> {
        let mut args = vec!["--parsable".to_string()];
        args.extend(profile.submit_args.iter().cloned());
        args.extend(submit_args.iter().cloned());
        stays_in_run_dir(profile, &args)?;
        // `--` ends sbatch's options: the script name is never read as one
        // (a workspace script named `-t999` stays a file name).
        args.push("--".to_string());
        args.push(script_name.to_string());
        let what = format!(
            "sbatch failed on cluster {:?} (check the header values and partition, or try dryRun: true to see why without submitting)",
            profile.id
        );
        let out = self.exec_ok(
            &profile.id,
            "sbatch",
            args,
            Some(remote_dir.to_string()),
            SBATCH_TIMEOUT_MS,
            &what,
        )?;
        let submit_output = out.stdout_text().trim().to_string();
        let job_id = slurm::parse_parsable_job_id(&submit_output).ok_or_else(|| {
            ToolError::RemoteFailed(format!(
                "Unable to parse job id from sbatch output: {submit_output:?}"
            ))
        })?;
        Ok((job_id, submit_output))
    }

    /// `sbatch --test-only`: what SLURM would do, without a job. The script
    /// goes on stdin, so nothing is written on the cluster.
    fn test_only(
        &mut self,
        profile: &Profile,
        script: &str,
        submit_args: &[String],
    ) -> Result<Value, ToolError> {
        let mut args = vec!["--test-only".to_string()];
        args.extend(profile.submit_args.iter().cloned());
        args.extend(submit_args.iter().cloned());
        // Options end here too; with no script after `--`, sbatch reads it
        // from stdin (the host wants `--` on every sbatch).
        args.push("--".to_string());
        let out = self.exec_with_stdin(
            &profile.id,
            "sbatch",
            args,
            None,
            Some(script.as_bytes().to_vec()),
            SBATCH_TIMEOUT_MS,
        )?;
        let text = [out.stderr_text(), out.stdout_text()]
            .join("\n")
            .trim()
            .to_string();
        Ok(json!({"accepted": out.success(), "sbatchTestOutput": text}))
    }

    /// Refuse when the profile's concurrent-job limit is reached.
    fn check_concurrency(&mut self, profile: &Profile) -> Result<(), ToolError> {
        let Some(max) = profile.policy.max_concurrent_jobs else {
            return Ok(());
        };
        let args = ["-h", "--me", "-o", "%i"].map(String::from).to_vec();
        let out = self.exec_ok(
            &profile.id,
            "squeue",
            args,
            None,
            QUERY_TIMEOUT_MS,
            "cannot count running jobs",
        )?;
        let count = out
            .stdout_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as u64;
        if count >= max {
            return Err(ToolError::Policy(format!(
                "profile {:?} policy: at most {max} concurrent jobs, {count} are queued or running; wait for them (check_workload) or cancel some (cancel_job)",
                profile.id
            )));
        }
        Ok(())
    }

    pub(super) fn submit_job(&mut self, req: &Request) -> Result<Value, ToolError> {
        let run = match &req.run_id {
            Some(id) => Some(self.existing_run(id)?),
            None => None,
        };
        let profile = self.profile_for(req.cluster.as_deref(), run.as_ref())?;
        if !req.submit_args.is_empty() && !profile.policy.allow_submit_args {
            apply_policy(&profile, &Header::default(), false, &req.submit_args)?;
        }
        let (local_script, logs) = match (&req.script_path, &run) {
            (Some(p), _) => {
                if profile.policy.restricts() {
                    return Err(ToolError::Policy(format!(
                        "profile {:?} policy limits what jobs may ask for, so only scripts rendered by render_job or run_workload can be submitted; drop scriptPath",
                        profile.id
                    )));
                }
                (workspace_relative("scriptPath", p).map_err(invalid)?, None)
            }
            (None, Some(r)) => match &r.latest_script_path {
                Some(p) => (self.store_relative(p)?, r.latest_script_logs.clone()),
                None => {
                    return Err(invalid(
                        "scriptPath is required (or render_job must be called first for this run)",
                    ));
                }
            },
            (None, None) => {
                return Err(invalid(
                    "scriptPath is required (or render_job must be called first for this run)",
                ));
            }
        };
        let remote_dir = self.remote_dir_for(req, run.as_ref(), &profile, "adhoc")?;
        let script_name = basename(&local_script).to_string();
        let remote_script = remote_join(&remote_dir, &script_name);
        self.host
            .upload(&profile.id, &local_script, &remote_script)?;
        if req.dry_run == Some(true) {
            let out = self.exec(
                &profile.id,
                "sbatch",
                vec!["--test-only".into(), "--".into(), script_name.clone()],
                Some(remote_dir.clone()),
                SBATCH_TIMEOUT_MS,
            )?;
            let text = [out.stderr_text(), out.stdout_text()]
                .join("\n")
                .trim()
                .to_string();
            return Ok(json!({
                "cluster": profile.id, "runId": run.map(|r| r.run_id), "dryRun": true,
                "remoteScriptPath": remote_script, "accepted": out.success(), "sbatchTestOutput": text,
            }));
        }
        self.check_concurrency(&profile)?;
        let (job_id, submit_output) =
            self.sbatch(&profile, &remote_dir, &script_name, &req.submit_args)?;
        if let Some(mut run) = run.clone() {
            let now = iso_timestamp(self.host.now_ms());
            run.jobs.push(JobRecord::submitted(
                job_id.clone(),
                remote_script.clone(),
                local_script.clone(),
                now.clone(),
                submit_output.clone(),
                logs.unwrap_or_default(),
                None,
            ));
            run.last_job_id = Some(job_id.clone());
            run.latest_script_path = Some(local_script);
            run.updated_at = now;
            self.save_run(&run)?;
        }
        Ok(json!({
            "cluster": profile.id,
            "runId": run.map(|r| r.run_id),
            "jobId": job_id,
            "remoteScriptPath": remote_script,
            "submitOutput": submit_output,
        }))
    }

    // -------------------------------------------------------------- run_workload

    /// The workload of a `run_workload` call: from a preset, or from the
    /// call's own parameters.
    pub(super) fn workload_of(
        &self,
        req: &Request,
    ) -> Result<(Workload, Option<Preset>), ToolError> {
        if let Some(name) = &req.preset {
            let preset = self.config.preset(name).cloned().ok_or_else(|| {
                let names: Vec<&str> = self
                    .config
                    .presets
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                invalid(format!(
                    "unknown preset {name:?} (configured: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })?;
            let mut given = Vec::new();
            if req.command.is_some() || !req.commands.is_empty() {
                given.push("command/commands")
            }
            if req.local_path.is_some() || !req.local_paths.is_empty() {
                given.push("localPath(s)")
            }
            if req.header_overrides.is_some() {
                given.push("headerOverrides")
            }
            if !req.env.is_empty() {
                given.push("env")
            }
            if !req.submit_args.is_empty() {
                given.push("submitArgs")
            }
            if req.cluster.is_some() {
                given.push("cluster")
            }
            if req.workload.is_some() {
                given.push("workload")
            }
            if req.script_name.is_some() {
                given.push("scriptName")
            }
            if req.allow_env_overrides.is_some() {
                given.push("allowEnvOverrides")
            }
            if req.remote_dir.is_some() {
                given.push("remoteDir")
            }
            if let Some(first) = given.first() {
                return Err(ToolError::Policy(format!(
                    "preset {name:?} defines the workload: {first} may not be given with it (only presetParams, runId, prefix and dryRun)"
                )));
            }
            let workload = Workload {
                commands: preset_commands(&preset, req.preset_params.as_deref().unwrap_or(&[]))?,
                env: preset.env.clone(),
                local_paths: preset
                    .local_paths
                    .iter()
                    .map(|p| workspace_relative("localPath", p))
                    .collect::<Result<_, _>>()
                    .map_err(invalid)?,
                overrides: preset.header.clone(),
                script_name: DEFAULT_SCRIPT_NAME.to_string(),
                submit_args: Vec::new(),
                from_preset: Some(preset.name.clone()),
                remote_dir: None,
            };
            return Ok((workload, Some(preset)));
        }
        if req.preset_params.is_some() {
            return Err(invalid("presetParams needs preset"));
        }
        let commands = req.all_commands();
        if commands.is_empty() {
            return Err(invalid(
                "command or commands is required (or a preset; list_clusters shows the configured presets)",
            ));
        }
        if req.script_path.is_some() {
            return Err(invalid(
                "run_workload renders its script into the run directory and does not write scriptPath; use scriptName to name it",
            ));
        }
        crate::policy::check_run_workload(req, &commands, self.config.allow_custom_env_override)
            .map_err(ToolError::Policy)?;
        for arg in &req.submit_args {
            if arg.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "submitArgs {arg:?} contains control characters"
                )));
            }
        }
        let workload = Workload {
            commands,
            env: req.env.clone(),
            local_paths: req
                .all_local_paths()
                .iter()
                .map(|p| workspace_relative("localPath", p))
                .collect::<Result<_, _>>()
                .map_err(invalid)?,
            overrides: req.header_overrides.clone().unwrap_or_default(),
            script_name: file_name(
                "scriptName",
                req.script_name.as_deref().unwrap_or(DEFAULT_SCRIPT_NAME),
            )
            .map_err(invalid)?,
            submit_args: req.submit_args.clone(),
            from_preset: None,
            remote_dir: req.remote_dir.clone(),
        };
        Ok((workload, None))
    }

    pub(super) fn run_workload(&mut self, req: &Request) -> Result<Value, ToolError> {
        let (workload, preset) = self.workload_of(req)?;
        // Inputs land in the run directory under their own relative names,
        // beside the script (a plain file name): refused before anything is
        // recorded. The host also refuses two items on one place.
        if let Some(path) = workload
            .local_paths
            .iter()
            .find(|p| **p == workload.script_name)
        {
            return Err(invalid(format!(
                "localPaths entry {path:?} would land on the job script {}; rename it, or set scriptName",
                workload.script_name
            )));
        }
        let existing = self.find_run(req.run_id.as_deref())?;
        let explicit = match &preset {
            Some(p) => p.cluster.clone().or_else(|| match p.role.as_deref() {
                Some("gpu") => self.config.routing.gpu_profile.clone(),
                Some(_) => self.config.effective_default().map(str::to_string),
                None => None,
            }),
            None => req
                .cluster
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        };
        if let (Some(run), Some(c)) = (&existing, &explicit)
            && &run.cluster_id != c
        {
            return Err(invalid(format!(
                "runId {} belongs to cluster {:?} (requested {c:?})",
                run.run_id, run.cluster_id
            )));
        }
        let mut signals: Vec<&str> = req.workload.iter().map(String::as_str).collect();
        signals.extend(workload.commands.iter().map(String::as_str));
        let selection: Selection =
            select_cluster(&self.config, explicit.as_deref(), &signals).map_err(invalid)?;
        let primary = explicit
            .or_else(|| existing.as_ref().map(|r| r.cluster_id.clone()))
            .unwrap_or_else(|| selection.cluster_id.clone());
        // Report what actually decided the profile.
        let selection = match &existing {
            Some(run) if selection.reason != "explicit_cluster" => Selection {
                cluster_id: run.cluster_id.clone(),
                reason: "existing_run",
                matched_indicator: None,
            },
            _ => selection,
        };
        let allow_env = req.allow_env_overrides == Some(true);

        if req.dry_run == Some(true) {
            let profile = self.profile(&primary)?.clone();
            let header = apply_policy(
                &profile,
                &workload.overrides,
                workload.from_preset.is_some(),
                &workload.submit_args,
            )?;
            let script = self.render_for(&profile, &header, &workload, None)?;
            let test = self.test_only(&profile, &script, &workload.submit_args)?;
            return Ok(json!({
                "mode": "run_workload", "dryRun": true, "cluster": primary, "clusterSelection": selection,
                "preset": workload.from_preset, "script": script,
                "accepted": test.get("accepted"), "sbatchTestOutput": test.get("sbatchTestOutput"),
                "localPaths": workload.local_paths,
            }));
        }

        // A retry of a request submitted moments ago (the agent got no
        // answer: a timeout, a dropped connection, a crash) gets that run
        // back; an attempt whose outcome is unknown is settled with the
        // cluster before anything is submitted again.
        let key = request_key(&primary, req.prefix.as_deref(), &workload);
        let previous = match &existing {
            Some(run) => run
                .submission
                .as_ref()
                .filter(|s| s.key == key && s.job_id.is_none())
                .map(|_| run.clone()),
            None => self.recent_submission(&key)?,
        };
        let existing = match previous {
            Some(run) => {
                let uncertain = run.submission.as_ref().is_some_and(|s| s.job_id.is_none());
                if uncertain {
                    if let Some(job_id) = self.reconcile(&run)? {
                        let run = self.adopt(run, &job_id, &workload)?;
                        return Ok(self.earlier_answer(
                            &run,
                            &selection,
                            &workload,
                            allow_env,
                            "recovered",
                        ));
                    }
                    Some(run)
                } else if req.new_run == Some(true) {
                    existing
                } else {
                    return Ok(
                        self.earlier_answer(&run, &selection, &workload, allow_env, "reused")
                    );
                }
            }
            None => existing,
        };

        // Above the profile's approval limits: held for an operator, unless
        // an operator approved exactly this request for this run.
        let profile = self.profile(&primary)?.clone();
        if profile.policy.approval.any() {
            let header = gated_header(&profile, &workload)?;
            let reasons = approval_reasons(&profile.policy.approval, &header);
            if !reasons.is_empty() && !self.operator_approved(existing.as_ref(), &key)? {
                return self.hold_for_approval(
                    req, &profile, &header, &workload, existing, &key, reasons, &selection,
                );
            }
        }

        // The first attempt's run id is fixed here so a fallback can link to it.
        let first_id = match &existing {
            Some(run) => run.run_id.clone(),
            None => self.choose_run_id(req.run_id.as_deref(), req.prefix.as_deref())?,
        };
        let first = self.submit_workload(
            &primary,
            existing.clone(),
            Some(&first_id),
            None,
            &workload,
            Some(&key),
        );
        let (submitted, cluster, fallback) = match first {
            Ok(s) => (s, primary, json!({"triggered": false})),
            Err(error) => {
                let text = error.to_string();
                // Refusals are final: only a failure on the cluster may be a GPU signal.
                let eligible = matches!(error, ToolError::RemoteFailed(_) | ToolError::Host(_));
                match should_fallback_to_gpu(
                    &self.config,
                    &primary,
                    &text,
                    req.auto_fallback_to_gpu,
                ) {
                    Fallback::ToGpu {
                        to_cluster,
                        matched_signature,
                    } if eligible => {
                        if existing.is_some() && workload.local_paths.is_empty() {
                            return Err(invalid(format!(
                                "Automatic GPU fallback requires localPath/localPaths when re-routing an existing run ({})",
                                existing.as_ref().map(|r| r.run_id.as_str()).unwrap_or("")
                            )));
                        }
                        let prefix =
                            format!("{}-gpu-fallback", req.prefix.as_deref().unwrap_or("run"));
                        let mut s = self.submit_workload(
                            &to_cluster,
                            None,
                            None,
                            Some(&prefix),
                            &workload,
                            None,
                        )?;
                        // Link both ways, so the failed attempt is not an orphan.
                        s.run.fallback_from_run_id = Some(first_id.clone());
                        self.save_run(&s.run)?;
                        if let Some(mut original) = self.find_run(Some(&first_id))? {
                            original.fallback_run_id = Some(s.run.run_id.clone());
                            original.updated_at = iso_timestamp(self.host.now_ms());
                            self.save_run(&original)?;
                        }
                        let fb = json!({
                            "triggered": true,
                            "fromCluster": primary,
                            "toCluster": to_cluster,
                            "matchedSignature": matched_signature,
                            "originalError": text,
                        });
                        (s, to_cluster, fb)
                    }
                    _ => return Err(error),
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
            "preset": workload.from_preset,
            "allowEnvOverrides": allow_env,
            "fallback": fallback,
        }))
    }

    /// Create (or reuse) the run, render, upload inputs and script, submit,
    /// record. The run and its script are in the ledger before anything is
    /// written on the cluster (only the concurrency check's `squeue` comes
    /// first), so nothing is orphaned.
    pub(super) fn submit_workload(
        &mut self,
        cluster_id: &str,
        existing: Option<RunRecord>,
        run_id_seed: Option<&str>,
        prefix: Option<&str>,
        workload: &Workload,
        key: Option<&str>,
    ) -> Result<Submitted, ToolError> {
        let profile = self.profile(cluster_id)?.clone();
        let header = apply_policy(
            &profile,
            &workload.overrides,
            workload.from_preset.is_some(),
            &workload.submit_args,
        )?;
        // The GPU fallback comes here directly: it may not skip the gate.
        let reasons = approval_reasons(&profile.policy.approval, &header);
        let approved = match key {
            Some(k) if !reasons.is_empty() => self.operator_approved(existing.as_ref(), k)?,
            _ => false,
        };
        if !reasons.is_empty() && !approved {
            return Err(ToolError::Policy(format!(
                "profile {:?} needs an operator's approval for this request ({}); ask for it with run_workload and cluster {:?}",
                profile.id,
                reasons.join("; "),
                profile.id
            )));
        }
        let mut submit_args = profile.submit_args.clone();
        submit_args.extend(workload.submit_args.iter().cloned());
        stays_in_run_dir(&profile, &submit_args)?;
        let script = self.render_for(&profile, &header, workload, None)?;
        let wanted_dir = match &workload.remote_dir {
            Some(d) => Some(
                remote_under("remoteDir", d, &profile.remote_root, &profile.remote_root)
                    .map_err(invalid)?,
            ),
            None => None,
        };
        let mut run = match existing {
            Some(run) => {
                if let Some(d) = wanted_dir.as_ref().filter(|d| **d != run.remote_run_dir) {
                    return Err(invalid(format!(
                        "run {} lives in {}; remoteDir {d} would split it (omit remoteDir, or start a new run)",
                        run.run_id, run.remote_run_dir
                    )));
                }
                run
            }
            None => {
                let id = self.choose_run_id(run_id_seed, prefix)?;
                let mut run = self.new_run(&profile, id);
                if let Some(d) = wanted_dir {
                    run.remote_run_dir = d;
                }
                run
            }
        };
        let remote_dir = remote_under(
            "remoteRunDir",
            &run.remote_run_dir,
            &profile.remote_root,
            &profile.remote_root,
        )
        .map_err(invalid)?;
        self.check_concurrency(&profile)?;

        let script_rel = format!("{}/{}", run.run_id, workload.script_name);
        let local_script_path = self.store_script(&script_rel, &script)?;
        let logs = LogPatterns::of(&header, &workload.script_name);
        run.latest_script_path = Some(local_script_path.clone());
        run.latest_script_logs = Some(logs.clone());
        let now = self.host.now_ms();
        run.updated_at = iso_timestamp(now);
        // The intent, before anything reaches the cluster.
        if let Some(key) = key {
            run.submission = Some(Submission {
                key: key.to_string(),
                started_ms: now,
                job_id: None,
            });
        }
        self.save_run(&run)?;

        // Inputs and the script in one transfer: one round trip for small files.
        let remote_script = remote_join(&remote_dir, &workload.script_name);
        let mut items: Vec<(String, String)> = workload
            .local_paths
            .iter()
            .map(|path| (path.clone(), remote_join(&remote_dir, path)))
            .collect();
        items.push((local_script_path.clone(), remote_script.clone()));
        let stats = self.host.upload_all(&profile.id, &items)?;
        let uploaded: Vec<Value> = items
            .iter()
            .zip(stats)
            .take(workload.local_paths.len())
            .map(|((local, remote), s)| json!({"localPath": local, "remotePath": remote, "files": s.files, "bytes": s.bytes}))
            .collect();
        let (job_id, submit_output) = self.sbatch(
            &profile,
            &remote_dir,
            &workload.script_name,
            &workload.submit_args,
        )?;

        if let Some(sub) = run.submission.as_mut().filter(|_| key.is_some()) {
            sub.job_id = Some(job_id.clone());
        }
        let submitted_at = iso_timestamp(self.host.now_ms());
        run.jobs.push(JobRecord::submitted(
            job_id.clone(),
            remote_script,
            local_script_path.clone(),
            submitted_at.clone(),
            submit_output.clone(),
            logs,
            Some(workload.to_json()),
        ));
        run.last_job_id = Some(job_id.clone());
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
}
