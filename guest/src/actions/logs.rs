//! Reading job logs: the last lines (`tail`), or everything after a byte
//! offset so an agent can follow a log cheaply. Results are capped.

use super::{QUERY_TIMEOUT_MS, Tool, invalid, split_remote};
use crate::config::Profile;
use crate::host::ToolError;
use crate::ledger::RunRecord;
use crate::paths::{remote_join, remote_under};
use crate::request::{DEFAULT_LOG_BYTES, DEFAULT_TAIL_LINES, Request};
use crate::slurm;
use serde_json::{Map, Value, json};

pub(super) const DEFAULT_BYTES: u64 = DEFAULT_LOG_BYTES;
/// SLURM's own defaults when a job sets no `--output` (sbatch(1)).
const SLURM_DEFAULT_OUTPUT: &str = "slurm-%j.out";
const SLURM_DEFAULT_ARRAY_OUTPUT: &str = "slurm-%A_%a.out";

/// The last `max` bytes of `bytes` (a tail keeps its end), or the first `max`
/// (an offset read keeps its start). Returns the kept bytes and whether any
/// were dropped.
fn cap(bytes: &[u8], max: usize, keep_end: bool) -> (&[u8], bool) {
    if bytes.len() <= max {
        return (bytes, false);
    }
    let kept = if keep_end {
        bytes.get(bytes.len() - max..)
    } else {
        bytes.get(..max)
    };
    (kept.unwrap_or(bytes), true)
}

impl Tool<'_> {
    /// Read one log file: with `offset`, the bytes after it; otherwise the
    /// last `tail` lines. At most `max_bytes` come back.
    pub(super) fn read_log(
        &mut self,
        profile: &Profile,
        path: &str,
        tail: Option<u64>,
        offset: Option<u64>,
        max_bytes: u64,
    ) -> Result<Value, ToolError> {
        let (dir, name) = split_remote(path);
        let args = match offset {
            Some(o) => vec![
                "-c".into(),
                format!("+{}", o.saturating_add(1)),
                "--".into(),
                name,
            ],
            None => vec![
                "-n".into(),
                tail.unwrap_or(DEFAULT_TAIL_LINES).to_string(),
                "--".into(),
                name,
            ],
        };
        let out = self.exec(&profile.id, "tail", args, Some(dir), QUERY_TIMEOUT_MS)?;
        if !out.success() {
            let err = out.stderr_text();
            if err.contains("No such file") || err.contains("cannot open") {
                let mut missing = json!({"remotePath": path, "missing": true, "log": ""});
                if let (Some(o), Value::Object(m)) = (offset, &mut missing) {
                    m.insert("offset".into(), json!(o));
                    m.insert("nextOffset".into(), json!(o));
                }
                return Ok(missing);
            }
            return Err(ToolError::RemoteFailed(format!(
                "reading log {path} failed: {}",
                out.failure_text()
            )));
        }
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let (kept, cut) = cap(&out.stdout, max, offset.is_none());
        let truncated = cut || out.stdout_truncated;
        let mut entry = Map::new();
        entry.insert("remotePath".into(), json!(path));
        entry.insert("missing".into(), json!(false));
        entry.insert("log".into(), json!(String::from_utf8_lossy(kept)));
        entry.insert("truncated".into(), json!(truncated));
        if let Some(o) = offset {
            entry.insert("offset".into(), json!(o));
            entry.insert("nextOffset".into(), json!(o + kept.len() as u64));
            // More may follow when we cut; otherwise it is the end for now.
            entry.insert("more".into(), json!(truncated));
        }
        Ok(Value::Object(entry))
    }

    /// One field of a job as SLURM reports it: squeue's `squeue_format`
    /// while slurmctld still knows the job, else sacct's `sacct_field`.
    fn job_field(
        &mut self,
        profile: &Profile,
        job_id: &str,
        squeue_format: &str,
        sacct_field: &str,
    ) -> Result<Option<String>, ToolError> {
        let first_line = |out: &crate::host::ExecOutput| {
            out.stdout_text()
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
                .filter(|_| out.success())
        };
        let q = self.squeue(&profile.id, job_id, squeue_format)?;
        if let Some(v) = first_line(&q) {
            return Ok(Some(v));
        }
        let a = self.sacct(&profile.id, job_id, sacct_field, true)?;
        Ok(first_line(&a))
    }

    /// Where a run's job wrote stdout and (if separate) stderr, from the
    /// patterns it was submitted with.
    pub(super) fn log_paths(
        &mut self,
        run: &RunRecord,
        profile: &Profile,
        job_id: &str,
    ) -> Result<Vec<String>, ToolError> {
        let base = job_id.split('_').next().unwrap_or(job_id);
        let job = run
            .jobs
            .iter()
            .find(|j| j.job_id == job_id || j.job_id == base);
        let (out_pattern, err_pattern, job_name, array) = match job {
            Some(j) => (
                j.output_pattern.clone(),
                j.error_pattern.clone(),
                j.job_name.clone(),
                j.array.clone(),
            ),
            None => (
                profile.slurm_defaults.output.clone(),
                profile.slurm_defaults.error.clone(),
                profile.slurm_defaults.job_name.clone(),
                None,
            ),
        };
        let job_name = job_name.unwrap_or_else(|| super::submit::DEFAULT_SCRIPT_NAME.to_string());
        let is_array = array.is_some() || job_id.contains('_');
        let default_output = if is_array {
            SLURM_DEFAULT_ARRAY_OUTPUT
        } else {
            SLURM_DEFAULT_OUTPUT
        };
        let out_pattern = out_pattern.unwrap_or_else(|| default_output.to_string());
        let patterns: Vec<String> = std::iter::once(out_pattern).chain(err_pattern).collect();
        // Each task of an array writes its own log: a bare array id names none of them.
        if !job_id.contains('_') && (array.is_some() || patterns.iter().any(|p| p.contains("%a"))) {
            return Err(invalid(format!(
                "job {job_id} is an array{}: pass jobId {job_id}_<task> to read one task's log",
                array.map(|a| format!(" ({a})")).unwrap_or_default()
            )));
        }
        let user = if patterns.iter().any(|p| p.contains("%u")) {
            let user = self.job_field(profile, job_id, "%u", "User")?;
            Some(user.ok_or_else(|| invalid(format!("the log pattern uses %u, and neither squeue nor sacct knows job {job_id}'s user; pass remotePath")))?)
        } else {
            None
        };
        // An array task's %j is the job id SLURM gave that task.
        let raw_id = if job_id.contains('_') && patterns.iter().any(|p| p.contains("%j")) {
            let raw = self.job_field(profile, job_id, "%A", "JobIDRaw")?;
            Some(raw.ok_or_else(|| invalid(format!("neither squeue nor sacct knows array task {job_id} (its log name uses %j, the task's own job id); pass remotePath, list_files shows the run's files")))?)
        } else {
            None
        };
        let mut paths: Vec<String> = Vec::new();
        for p in &patterns {
            let expanded = match &user {
                Some(u) => p.replace("%u", u),
                None => p.clone(),
            };
            let rel = slurm::resolve_log_pattern(&expanded, job_id, raw_id.as_deref(), &job_name)
                .ok_or_else(|| {
                invalid(format!(
                    "log pattern {p:?} has a placeholder this tool cannot resolve; pass remotePath"
                ))
            })?;
            let full = remote_join(&run.remote_run_dir, &rel);
            if !paths.contains(&full) {
                paths.push(full);
            }
        }
        Ok(paths)
    }

    fn log_request_limits(req: &Request) -> (Option<u64>, Option<u64>, u64) {
        (req.tail, req.offset, req.max_bytes.unwrap_or(DEFAULT_BYTES))
    }

    pub(super) fn job_logs(&mut self, req: &Request) -> Result<Value, ToolError> {
        let run = match &req.run_id {
            Some(id) => Some(self.existing_run(id)?),
            None => None,
        };
        let profile = self.profile_for(req.cluster.as_deref(), run.as_ref())?;
        let (tail, offset, max) = Self::log_request_limits(req);
        let path = match (&req.remote_path, &run, &req.job_id) {
            (Some(p), _, _) => {
                let base = run
                    .as_ref()
                    .map(|r| r.remote_run_dir.clone())
                    .unwrap_or_else(|| profile.remote_root.clone());
                remote_under("remotePath", p, &profile.remote_root, &base).map_err(invalid)?
            }
            (None, Some(r), Some(j)) => {
                let id = slurm::check_job_id(j).map_err(invalid)?;
                self.log_paths(r, &profile, &id)?
                    .into_iter()
                    .next()
                    .unwrap_or_default()
            }
            _ => return Err(invalid("remotePath is required (or provide runId + jobId)")),
        };
        let entry = self.read_log(&profile, &path, tail, offset, max)?;
        let mut result = json!({"cluster": profile.id});
        if let (Value::Object(r), Value::Object(e)) = (&mut result, entry) {
            r.extend(e);
        }
        Ok(result)
    }

    pub(super) fn fetch_workload_logs(&mut self, req: &Request) -> Result<Value, ToolError> {
        let run = match &req.run_id {
            Some(id) => Some(self.existing_run(id)?),
            None => None,
        };
        let profile = self.profile_for(req.cluster.as_deref(), run.as_ref())?;
        let job_id = match req
            .job_id
            .clone()
            .or_else(|| run.as_ref().and_then(|r| r.last_job_id.clone()))
        {
            Some(id) => Some(slurm::check_job_id(&id).map_err(invalid)?),
            None => None,
        };
        let (tail, offset, max) = Self::log_request_limits(req);
        let python = profile.python_command.clone();
        let hint = |log: &str| slurm::missing_package_hint(log, &profile.id, &python);

        if let Some(raw) = &req.remote_path {
            let base = run
                .as_ref()
                .map(|r| r.remote_run_dir.clone())
                .unwrap_or_else(|| profile.remote_root.clone());
            let path =
                remote_under("remotePath", raw, &profile.remote_root, &base).map_err(invalid)?;
            let entry = self.read_log(&profile, &path, tail, offset, max)?;
            let log = entry
                .get("log")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut result = json!({
                "mode": "fetch_workload_logs",
                "runId": run.map(|r| r.run_id),
                "jobId": job_id,
                "cluster": profile.id,
                "missingPackageHint": hint(&log),
            });
            if let (Value::Object(r), Value::Object(e)) = (&mut result, entry) {
                r.extend(e);
            }
            return Ok(result);
        }
        let (Some(run), Some(job_id)) = (run, job_id) else {
            return Err(invalid(
                "jobId is required (or provide runId with a submitted job, or remotePath)",
            ));
        };
        let paths = self.log_paths(&run, &profile, &job_id)?;
        let mut entries = Vec::new();
        for p in &paths {
            entries.push(self.read_log(&profile, p, tail, offset, max)?);
        }
        let stdout = entries.first().cloned().unwrap_or(Value::Null);
        let stderr = match entries.get(1) {
            Some(e) => e.clone(),
            // Without --error SLURM writes stderr into the --output file.
            None => json!({"remotePath": paths.first(), "sameFileAsStdout": true}),
        };
        let text = |v: &Value| {
            v.get("log")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let log = entries
            .iter()
            .map(text)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let missing = entries
            .iter()
            .all(|e| e.get("missing").and_then(Value::as_bool).unwrap_or(true));
        Ok(json!({
            "mode": "fetch_workload_logs",
            "runId": run.run_id,
            "jobId": job_id,
            "cluster": profile.id,
            "missing": missing,
            "log": log,
            "logs": {"stdout": stdout, "stderr": stderr},
            "missingPackageHint": hint(&log),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::cap;

    #[test]
    fn caps_keep_the_right_end() {
        assert_eq!(cap(b"abcdef", 3, true), (&b"def"[..], true));
        assert_eq!(cap(b"abcdef", 3, false), (&b"abc"[..], true));
        assert_eq!(cap(b"ab", 3, true), (&b"ab"[..], false));
    }
}
