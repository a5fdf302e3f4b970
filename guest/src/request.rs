//! The tool's parameters: one flat object with a required `action`, the
//! reference's parameter names and types, and its JSON Schema.
//!
//! Hosts differ in how much they validate before calling us (OpenClaw's
//! `/tools/invoke` validates nothing), so every value is checked here.

use crate::fields::{Coercion, FieldResult, Fields};
use crate::header::Header;
use serde_json::{Value, json};

/// Actions this version implements, in the order the schema lists them.
pub const ACTIONS: &[&str] = &[
    "list_clusters",
    "init_run",
    "upload",
    "render_job",
    "submit_job",
    "job_status",
    "job_logs",
    "download",
    "cancel_job",
    "run_workload",
    "check_workload",
    "fetch_workload_logs",
    "download_workload_outputs",
    "list_runs",
    "list_files",
];

pub const MAX_TAIL_LINES: u64 = 20_000;
pub const DEFAULT_TAIL_LINES: u64 = 200;
/// Log bytes returned by one call unless `maxBytes` says otherwise.
pub const DEFAULT_LOG_BYTES: u64 = 64 * 1024;
pub const MAX_LOG_BYTES: u64 = 1024 * 1024;
pub const MAX_IDS: u64 = 1000;

#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The request as it came, kept for a run held for approval.
    pub raw: Value,
    pub action: String,
    pub cluster: Option<String>,
    pub run_id: Option<String>,
    pub prefix: Option<String>,
    pub local_path: Option<String>,
    pub local_paths: Vec<String>,
    pub remote_dir: Option<String>,
    pub remote_path: Option<String>,
    pub remote_file: Option<String>,
    pub script_path: Option<String>,
    pub script_name: Option<String>,
    pub command: Option<String>,
    pub commands: Vec<String>,
    pub workload: Option<String>,
    pub env: Vec<(String, String)>,
    pub setup_commands: Vec<String>,
    pub modules: Vec<String>,
    /// Present when the caller sent `headerOverrides` at all.
    pub header_overrides: Option<Header>,
    pub submit_args: Vec<String>,
    pub job_id: Option<String>,
    pub include_accounting: Option<bool>,
    pub auto_fallback_to_gpu: Option<bool>,
    pub allow_env_overrides: Option<bool>,
    pub tail: Option<u64>,
    pub job_ids: Vec<String>,
    pub run_ids: Vec<String>,
    pub offset: Option<u64>,
    pub max_bytes: Option<u64>,
    pub dry_run: Option<bool>,
    pub new_run: Option<bool>,
    pub preset: Option<String>,
    /// Present when the caller sent `presetParams` at all.
    pub preset_params: Option<Vec<(String, String)>>,
    pub limit: Option<u64>,
}

impl Request {
    pub fn parse(value: &Value) -> FieldResult<Request> {
        let mut f = Fields::new(value, "", Coercion::Lenient)?;
        let action = f.string("action")?.ok_or_else(|| {
            f.error(
                "action",
                format!("is required (one of: {})", ACTIONS.join(", ")),
            )
        })?;
        if !ACTIONS.contains(&action.as_str()) {
            return Err(f.error(
                "action",
                format!(
                    "unknown action {action:?} (available: {})",
                    ACTIONS.join(", ")
                ),
            ));
        }
        let mut env = Vec::new();
        for (k, v) in f.entries("env")? {
            match v {
                Value::String(s) => env.push((k, s.clone())),
                Value::Number(n) => env.push((k, n.to_string())),
                Value::Bool(b) => env.push((k, b.to_string())),
                other => {
                    return Err(f.error(
                        "env",
                        format!(
                            "value of {k:?} must be a string, got {}",
                            crate::fields::describe(other)
                        ),
                    ));
                }
            }
        }
        let preset_params = match f.raw("presetParams") {
            None => None,
            Some(_) => {
                let mut out = Vec::new();
                for (k, v) in f.entries("presetParams")? {
                    match v {
                        Value::String(s) => out.push((k, s.clone())),
                        Value::Number(n) => out.push((k, n.to_string())),
                        Value::Bool(b) => out.push((k, b.to_string())),
                        other => {
                            return Err(f.error(
                                "presetParams",
                                format!(
                                    "value of {k:?} must be a string or number, got {}",
                                    crate::fields::describe(other)
                                ),
                            ));
                        }
                    }
                }
                Some(out)
            }
        };
        let header_overrides = match f.object("headerOverrides")? {
            Some(h) => Some(Header::read(h)?),
            None => None,
        };
        let request = Request {
            action,
            cluster: f.string("cluster")?,
            run_id: f.string("runId")?,
            prefix: f.string("prefix")?,
            local_path: f.string("localPath")?,
            local_paths: f.string_list("localPaths", true)?,
            remote_dir: f.string("remoteDir")?,
            remote_path: f.string("remotePath")?,
            remote_file: f.string("remoteFile")?,
            script_path: f.string("scriptPath")?,
            script_name: f.string("scriptName")?,
            command: f.string_verbatim("command")?,
            commands: f.string_list("commands", false)?,
            workload: f.string("workload")?,
            env,
            setup_commands: f.string_list("setupCommands", false)?,
            modules: f.string_list("modules", true)?,
            header_overrides,
            submit_args: f.string_list("submitArgs", false)?,
            job_id: f.string("jobId")?,
            include_accounting: f.bool("includeAccounting")?,
            auto_fallback_to_gpu: f.bool("autoFallbackToGpu")?,
            allow_env_overrides: f.bool("allowEnvOverrides")?,
            tail: f.uint("tail", 1, MAX_TAIL_LINES)?,
            job_ids: f.string_list("jobIds", true)?,
            run_ids: f.string_list("runIds", true)?,
            offset: f.uint("offset", 0, u64::MAX / 2)?,
            max_bytes: f.uint("maxBytes", 1, MAX_LOG_BYTES)?,
            dry_run: f.bool("dryRun")?,
            new_run: f.bool("newRun")?,
            preset: f.string("preset")?,
            preset_params,
            limit: f.uint("limit", 1, 1000)?,
            raw: value.clone(),
        };
        if request.job_ids.len() as u64 > MAX_IDS || request.run_ids.len() as u64 > MAX_IDS {
            return Err(crate::fields::FieldError {
                path: "jobIds".into(),
                message: format!("at most {MAX_IDS} ids per call"),
            });
        }
        f.finish()?;
        Ok(request)
    }

    /// `command` followed by the non-blank `commands`.
    pub fn all_commands(&self) -> Vec<String> {
        self.command
            .iter()
            .cloned()
            .chain(self.commands.iter().cloned())
            .filter(|c| !c.trim().is_empty())
            .collect()
    }

    /// `localPath` followed by `localPaths`, without repeats.
    pub fn all_local_paths(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.local_path.iter().chain(self.local_paths.iter()) {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

fn header_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    let n = |d: &str| json!({"type": "integer", "minimum": 1, "description": d});
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "SLURM header fields overriding the profile's slurmDefaults for this job",
        "properties": {
            "jobName": s("--job-name"), "partition": s("--partition"), "account": s("--account"),
            "qos": s("--qos"), "constraint": s("--constraint"),
            "time": s("--time, e.g. 01:30:00 or 2-00:00:00"), "mem": s("--mem, e.g. 16G"),
            "gres": s("--gres, e.g. gpu:1"),
            "output": s("--output pattern relative to the run directory, e.g. slurm-%j.out"),
            "error": s("--error pattern relative to the run directory, e.g. slurm-%j.err"),
            "nodes": n("--nodes"), "ntasks": n("--ntasks"), "ntasksPerNode": n("--ntasks-per-node"),
            "cpusPerTask": n("--cpus-per-task"), "gpus": n("--gpus"), "gpusPerNode": n("--gpus-per-node"),
            "array": s("--array job array indices, e.g. 0-9 or 0-99%4 (capped per profile)"),
            "dependency": s("--dependency, e.g. afterok:123 or afterany:123:124"),
            "modules": {"type": "array", "items": {"type": "string"}, "description": "Refused by run_workload: modules come from the profile"}
        }
    })
}

/// JSON Schema of the tool's parameters.
pub fn parameters_schema() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    let list = |d: &str| json!({"type": "array", "items": {"type": "string"}, "description": d});
    let b = |d: &str| json!({"type": "boolean", "description": d});
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["action"],
        "properties": {
            "action": {
                "type": "string",
                "enum": ACTIONS,
                "description": format!("Action to perform: {}", ACTIONS.join(", "))
            },
            "cluster": s("Configured cluster profile id"),
            "runId": s("Run id in local ledger"),
            "prefix": s("Optional prefix for generated run ids"),
            "localPath": s("Workspace-relative local file/directory"),
            "localPaths": list("Workspace-relative local files/directories"),
            "remoteDir": s("Remote run directory (under the profile's remoteRoot)"),
            "remotePath": s("Remote file/directory path (under the profile's remoteRoot)"),
            "remoteFile": s("Remote output filename relative to run directory (used by download_workload_outputs)"),
            "scriptPath": s("Workspace-relative job script path"),
            "scriptName": s("Generated job filename"),
            "command": s("Single shell command run inside the SLURM job"),
            "commands": list("Shell commands run inside the SLURM job, in order"),
            "workload": s("Natural-language task summary used for CPU/GPU profile selection in run_workload"),
            "env": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Environment variables exported in the job script"},
            "setupCommands": list("Call-level setup commands (refused by run_workload: setup comes from the profile)"),
            "modules": list("Call-level modules (refused by run_workload: modules come from the profile)"),
            "headerOverrides": header_schema(),
            "submitArgs": list("Extra sbatch arguments"),
            "jobId": s("SLURM job id"),
            "includeAccounting": b("Use sacct when squeue no longer knows the job (default true)"),
            "autoFallbackToGpu": b("Resubmit on the GPU profile when submission fails with a GPU-required signature"),
            "allowEnvOverrides": b("Allow explicit environment overrides (needs execution.allowCustomEnvOverride)"),
            "tail": {"type": "integer", "minimum": 1, "maximum": MAX_TAIL_LINES, "description": "Log lines to return (default 200)"},
            "jobIds": list("Several SLURM job ids: job_status/check_workload answer all with one squeue and one sacct; cancel_job cancels all"),
            "runIds": list("Several run ids for check_workload"),
            "offset": {"type": "integer", "minimum": 0, "description": "Read logs from this byte offset instead of tailing; the result's nextOffset continues"},
            "maxBytes": {"type": "integer", "minimum": 1, "maximum": MAX_LOG_BYTES, "description": "Most log bytes to return (default 65536)"},
            "dryRun": b("run_workload/submit_job: render, validate and ask sbatch --test-only, without submitting"),
            "newRun": b("run_workload: submit even when the same request was submitted in the last 10 minutes (by default such a retry gets that run back instead of a duplicate job)"),
            "preset": s("Name of an operator-defined workload (see list_clusters presets)"),
            "presetParams": {"type": "object", "additionalProperties": {"type": ["string", "number"]}, "description": "Values for the preset's declared parameters"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Most entries for list_runs/list_files"}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_types_like_the_reference_host() {
        let r = Request::parse(
            &json!({"action": "fetch_workload_logs", "tail": "50", "localPaths": "a.txt"}),
        )
        .unwrap();
        assert_eq!(r.tail, Some(50));
        assert_eq!(r.local_paths, vec!["a.txt"]);
    }

    #[test]
    fn clear_errors() {
        let e = Request::parse(&json!({"action": "launch"})).unwrap_err();
        assert!(e.to_string().contains("available: list_clusters"), "{e}");
        let e = Request::parse(&json!({})).unwrap_err();
        assert_eq!(e.path, "action");
        let e = Request::parse(&json!({"action": "run_workload", "tail": 0})).unwrap_err();
        assert_eq!(e.path, "tail");
        let e = Request::parse(&json!({"action": "run_workload", "comand": "x"})).unwrap_err();
        assert_eq!(e.path, "comand");
        let e = Request::parse(
            &json!({"action": "run_workload", "headerOverrides": {"partition": "a\nb"}}),
        )
        .unwrap_err();
        assert_eq!(e.path, "headerOverrides.partition");
    }

    #[test]
    fn schema_lists_every_parsed_key() {
        let schema = parameters_schema();
        let props = schema["properties"].as_object().unwrap();
        for key in props.keys() {
            let mut v = json!({"action": "list_clusters"});
            v[key] = match props[key]["type"].as_str().unwrap() {
                "string" => json!("x"),
                "boolean" => json!(true),
                "integer" => json!(5),
                "array" => json!(["x"]),
                _ => json!({}),
            };
            if key == "action" {
                continue;
            }
            Request::parse(&v).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }
}
