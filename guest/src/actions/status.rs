//! Job state: `job_status`, `check_workload`, `cancel_job`. Any number of jobs
//! on a cluster costs one `squeue` and at most one `sacct`.

use super::submit::Workload;
use super::{QUERY_TIMEOUT_MS, Tool, invalid, object, tagged};
use crate::config::Profile;
use crate::host::{HostError, ToolError};
use crate::ledger::{RunRecord, iso_timestamp};
use crate::paths::remote_join;
use crate::request::Request;
use crate::routing::first_match;
use crate::slurm::{self, SacctRow, SqueueRow};
use serde_json::{Map, Value, json};

/// Array tasks listed per job; the rest are counted.
const MAX_TASKS_LISTED: usize = 50;
/// Log lines searched for GPU-required signatures after a failure.
const SIGNATURE_TAIL_LINES: u64 = 200;

/// Whether `row_id` (e.g. `12`, `12_3`, `12_[4-7]`) belongs to job `id`.
fn belongs(row_id: &str, id: &str) -> bool {
    row_id == id
        || (!id.contains('_')
            && row_id
                .strip_prefix(id)
                .is_some_and(|rest| rest.starts_with('_')))
}

/// The status of one job (or array) from the rows both tools returned.
/// Rows by the job id before any `_task` suffix, so each job finds its own
/// rows without scanning every row (a status call may ask for 1,000 jobs).
struct Rows<'a, R> {
    by_base: std::collections::HashMap<&'a str, Vec<&'a R>>,
    id_of: fn(&R) -> &str,
}

impl<'a, R> Rows<'a, R> {
    fn index(rows: &'a [R], id_of: fn(&R) -> &str) -> Rows<'a, R> {
        let mut by_base: std::collections::HashMap<&'a str, Vec<&'a R>> =
            std::collections::HashMap::new();
        for row in rows {
            let id = id_of(row);
            let base = id.split_once('_').map_or(id, |(b, _)| b);
            by_base.entry(base).or_default().push(row);
        }
        Rows { by_base, id_of }
    }

    /// The rows that belong to `id` (the job, or all tasks of an array).
    fn of(&self, id: &str) -> Vec<&'a R> {
        let base = id.split_once('_').map_or(id, |(b, _)| b);
        self.by_base
            .get(base)
            .map(|rows| {
                rows.iter()
                    .copied()
                    .filter(|r| belongs((self.id_of)(r), id))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn squeue_id(r: &SqueueRow) -> &str {
    &r.job_id
}

fn sacct_id(r: &SacctRow) -> &str {
    &r.job_id
}

fn status_of(
    id: &str,
    squeue: &Rows<'_, SqueueRow>,
    sacct: &Rows<'_, SacctRow>,
    notes: &Map<String, Value>,
) -> Value {
    let q: Vec<&SqueueRow> = squeue.of(id);
    let a: Vec<&SacctRow> = sacct.of(id);
    let is_array = q.iter().any(|r| r.job_id != id) || a.iter().any(|r| r.job_id != id);
    let (q, a) = if is_array {
        // Right after an array ends, sacct may show one placeholder row under
        // the bare array id before the task records arrive: it is not a task.
        (
            q.into_iter().filter(|r| r.job_id != id).collect::<Vec<_>>(),
            a.into_iter().filter(|r| r.job_id != id).collect::<Vec<_>>(),
        )
    } else {
        (q, a)
    };
    if !is_array {
        // A live job is best described by squeue; a finished one by sacct,
        // which also has the exit code. When either tool could not answer
        // (controller or accounting down), the status says which and why.
        let outages = outages(notes);
        let live = q.first().filter(|r| !slurm::is_terminal(&r.state));
        return match (live, a.first(), q.first()) {
            (Some(r), _, _) => tagged(&r.fields(), "squeue", outages),
            (None, Some(r), _) => tagged(&r.fields(), "sacct", outages),
            (None, None, Some(r)) => tagged(&r.fields(), "squeue", notes.clone()),
            // Without sacct, a job squeue has forgotten may have ended either
            // way; without squeue, it may be running: that is UNKNOWN, not
            // NOT_FOUND (and never COMPLETED).
            (None, None, None) if !outages.is_empty() => tagged(
                &[("jobId", id), ("state", "UNKNOWN")],
                "unknown",
                notes.clone(),
            ),
            (None, None, None) => tagged(
                &[("jobId", id), ("state", "NOT_FOUND")],
                "unknown",
                notes.clone(),
            ),
        };
    }
    // An array: per task, sacct when it knows the task, else squeue.
    let mut tasks: Vec<(String, String, Option<String>)> = a
        .iter()
        .map(|r| (r.job_id.clone(), r.state.clone(), Some(r.exit_code.clone())))
        .collect();
    for r in &q {
        if !tasks.iter().any(|(t, _, _)| t == &r.job_id) {
            tasks.push((r.job_id.clone(), r.state.clone(), None));
        }
    }
    tasks.sort();
    let state = slurm::aggregate_state(tasks.iter().map(|(_, s, _)| s.as_str()));
    let mut by_state = Map::new();
    for (_, s, _) in &tasks {
        let n = by_state.get(s).and_then(Value::as_u64).unwrap_or(0);
        by_state.insert(s.clone(), json!(n + 1));
    }
    let worst_exit = tasks
        .iter()
        .filter_map(|(_, _, e)| e.as_deref().and_then(slurm::exit_status))
        .max();
    let listed: Vec<Value> = tasks
        .iter()
        .take(MAX_TASKS_LISTED)
        .map(|(t, s, e)| json!({"taskId": t, "state": s, "exitCode": e}))
        .collect();
    json!({
        "source": if a.is_empty() { "squeue" } else { "sacct" },
        "jobId": id,
        "array": true,
        "state": state,
        "exitCode": worst_exit.map(|c| format!("{c}:0")),
        "tasks": {"count": tasks.len(), "byState": by_state, "listed": listed},
    })
}

/// The notes that say a tool could not answer at all. squeue refusing a job
/// id it has purged ("Invalid job id specified") is an answer, not an outage.
fn outages(notes: &Map<String, Value>) -> Map<String, Value> {
    notes
        .iter()
        .filter(|(key, text)| {
            key.as_str() != "squeueError"
                || !text
                    .as_str()
                    .is_some_and(|t| t.contains("Invalid job id specified"))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Neither squeue nor sacct could say how a (non-array) job ended.
fn unresolved(status: &Value) -> bool {
    matches!(
        status.get("state").and_then(Value::as_str),
        Some("NOT_FOUND" | "UNKNOWN")
    ) && status.get("array").is_none()
}

/// A (non-array) job squeue saw end, with sacct unavailable: the state is
/// known but not the exit code.
fn ended_without_exit_code(status: &Value) -> bool {
    status.get("source").and_then(Value::as_str) == Some("squeue")
        && status.get("exitCode").is_none()
        && status
            .get("state")
            .and_then(Value::as_str)
            .is_some_and(slurm::is_terminal)
}

/// Take the exit code from the job script's marker, if it left one.
fn with_exit_code_from(mut status: Value, marker: Option<Value>) -> Value {
    if let Some(code) = marker.as_ref().and_then(|m| m.get("exitCode")) {
        put(&mut status, "exitCode", code.clone());
        put(&mut status, "exitCodeSource", json!("marker"));
    }
    status
}

fn put(report: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = report {
        map.insert(key.to_string(), value);
    }
}

fn summary(run_id: Option<&str>, cluster: &str, job_id: &str, status: Value) -> Value {
    let state = status
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("NOT_FOUND")
        .to_string();
    let exit_code = status
        .get("exitCode")
        .and_then(Value::as_str)
        .and_then(slurm::exit_status);
    let done = slurm::is_terminal(&state);
    object([
        ("runId", json!(run_id)),
        ("cluster", json!(cluster)),
        ("jobId", json!(job_id)),
        ("status", status),
        ("state", Value::String(state)),
        ("done", Value::Bool(done)),
        ("exitCode", json!(exit_code)),
    ])
}

impl Tool<'_> {
    /// Statuses of `ids` on one cluster: one squeue for all of them, and one
    /// sacct for those squeue does not show as still going (finished jobs
    /// need sacct for their exit code; purged ones are only there).
    pub(super) fn statuses(
        &mut self,
        profile: &Profile,
        ids: &[String],
        accounting: bool,
    ) -> Result<Vec<Value>, ToolError> {
        let list = ids.join(",");
        let squeue = self.squeue(&profile.id, &list, slurm::SQUEUE_FORMAT)?;
        let mut notes = Map::new();
        let q_rows = if squeue.success() {
            slurm::parse_squeue_rows(&squeue.stdout_text())
        } else {
            // e.g. "Invalid job id specified" for a purged job: sacct still knows.
            notes.insert("squeueError".into(), json!(squeue.failure_text()));
            Vec::new()
        };
        let queued = Rows::index(&q_rows, squeue_id);
        let need_sacct: Vec<String> = ids
            .iter()
            .filter(|id| {
                let rows: Vec<&SqueueRow> = queued.of(id);
                rows.is_empty() || rows.iter().all(|r| slurm::is_terminal(&r.state))
            })
            .cloned()
            .collect();
        let mut a_rows = Vec::new();
        if accounting && !need_sacct.is_empty() {
            let sacct = self.sacct(
                &profile.id,
                &need_sacct.join(","),
                slurm::SACCT_FIELDS,
                false,
            )?;
            if sacct.success() {
                a_rows = slurm::parse_sacct_rows(&sacct.stdout_text());
            } else {
                notes.insert("sacctError".into(), json!(sacct.failure_text()));
            }
        }
        let accounted = Rows::index(&a_rows, sacct_id);
        Ok(ids
            .iter()
            .map(|id| status_of(id, &queued, &accounted, &notes))
            .collect())
    }

    /// The exit status the job script left in its run directory
    /// (`.cluster-slurm/exit-<id>`), as a final status; None when there is
    /// none (the job never ran its script to the end, or was killed).
    fn exit_marker(
        &mut self,
        profile: &Profile,
        run: &RunRecord,
        job_id: &str,
    ) -> Result<Option<Value>, ToolError> {
        let marker = remote_join(
            &remote_join(&run.remote_run_dir, ".cluster-slurm"),
            &format!("exit-{job_id}"),
        );
        let args = vec!["-c".to_string(), "16".to_string(), "--".to_string(), marker];
        let out = match self.exec(&profile.id, "head", args, None, QUERY_TIMEOUT_MS) {
            // The host refuses a marker the job replaced by a symlink, FIFO
            // or device (remote_confine): that is no marker, not a failed check.
            Err(ToolError::Host(HostError::Denied(_))) => return Ok(None),
            other => other?,
        };
        let code = out
            .success()
            .then(|| out.stdout_text().trim().parse::<i32>().ok())
            .flatten();
        Ok(code.map(|code| {
            json!({
                "jobId": job_id,
                "state": if code == 0 { "COMPLETED" } else { "FAILED" },
                "exitCode": format!("{code}:0"),
                "source": "marker",
                "note": "squeue and sacct no longer know this job; its exit status comes from the marker its script left in the run directory",
            })
        }))
    }

    fn job_ids_of(req: &Request) -> Result<Vec<String>, ToolError> {
        let mut ids: Vec<String> = Vec::new();
        // A set beside the list: a status call may name 1,000 jobs.
        let mut seen = std::collections::HashSet::new();
        for raw in req.job_id.iter().chain(req.job_ids.iter()) {
            let id = slurm::check_job_id(raw).map_err(invalid)?;
            if seen.insert(id.clone()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    pub(super) fn job_status_action(&mut self, req: &Request) -> Result<Value, ToolError> {
        let ids = Self::job_ids_of(req)?;
        if ids.is_empty() {
            return Err(invalid("jobId (or jobIds) is required"));
        }
        let profile = self
            .config
            .resolve_cluster(req.cluster.as_deref())
            .map_err(invalid)?
            .clone();
        let statuses = self.statuses(&profile, &ids, req.include_accounting != Some(false))?;
        if let ([id], [status]) = (ids.as_slice(), statuses.as_slice()) {
            return Ok(object([
                ("cluster", json!(profile.id)),
                ("jobId", json!(id)),
                ("status", status.clone()),
            ]));
        }
        let items: Vec<Value> = ids
            .iter()
            .zip(statuses)
            .map(|(id, s)| object([("jobId", json!(id)), ("status", s)]))
            .collect();
        Ok(object([
            ("cluster", json!(profile.id)),
            ("statuses", Value::Array(items)),
        ]))
    }

    pub(super) fn check_workload(&mut self, req: &Request) -> Result<Value, ToolError> {
        // Each target: (run, profile, job id).
        let mut targets: Vec<(Option<RunRecord>, Profile, String)> = Vec::new();
        let run_ids: Vec<String> = req
            .run_id
            .iter()
            .chain(req.run_ids.iter())
            .cloned()
            .collect();
        let explicit_ids = Self::job_ids_of(req)?;
        // Runs held for approval answer with the decision (and are submitted
        // once approved), not with a job status.
        let mut held: Vec<Value> = Vec::new();
        for raw in &run_ids {
            let run = self.existing_run(raw)?;
            if Self::awaits_decision(&run) {
                held.push(self.approval_status(run)?);
                continue;
            }
            let profile = self.profile_for(req.cluster.as_deref(), Some(&run))?;
            // With one run and one jobId, the id picks a job of that run.
            let job = match (run_ids.len(), explicit_ids.as_slice()) {
                (1, [one]) => Some(one.clone()),
                _ => run.last_job_id.clone(),
            };
            let job = job.ok_or_else(|| {
                invalid(format!(
                    "run {} has no submitted job yet (run_workload or submit_job first)",
                    run.run_id
                ))
            })?;
            targets.push((Some(run), profile, job));
        }
        if run_ids.is_empty() {
            let profile = self
                .config
                .resolve_cluster(req.cluster.as_deref())
                .map_err(invalid)?
                .clone();
            for id in &explicit_ids {
                targets.push((None, profile.clone(), id.clone()));
            }
        }
        if targets.is_empty() && held.is_empty() {
            return Err(invalid(
                "jobId is required (or provide runId with a submitted job)",
            ));
        }
        // One squeue (+ sacct) per cluster, whatever the number of jobs.
        let mut results: Vec<Option<Value>> = vec![None; targets.len()];
        let mut clusters: Vec<String> = targets.iter().map(|(_, p, _)| p.id.clone()).collect();
        clusters.dedup();
        clusters.sort();
        clusters.dedup();
        for cluster in clusters {
            let idx: Vec<usize> = (0..targets.len())
                .filter(|i| targets.get(*i).is_some_and(|t| t.1.id == cluster))
                .collect();
            let Some(profile) = idx
                .first()
                .and_then(|i| targets.get(*i))
                .map(|t| t.1.clone())
            else {
                continue;
            };
            let ids: Vec<String> = idx
                .iter()
                .filter_map(|i| targets.get(*i))
                .map(|t| t.2.clone())
                .collect();
            let statuses = self.statuses(&profile, &ids, req.include_accounting != Some(false))?;
            for (i, status) in idx.iter().zip(statuses) {
                let status = match targets.get(*i) {
                    Some((Some(run), p, job)) if unresolved(&status) => {
                        self.exit_marker(p, run, job)?.unwrap_or(status)
                    }
                    Some((Some(run), p, job)) if ended_without_exit_code(&status) => {
                        let marker = self.exit_marker(p, run, job)?;
                        with_exit_code_from(status, marker)
                    }
                    _ => status,
                };
                if let (Some(slot), Some((run, p, job))) = (results.get_mut(*i), targets.get(*i)) {
                    *slot = Some(summary(
                        run.as_ref().map(|r| r.run_id.as_str()),
                        &p.id,
                        job,
                        status,
                    ));
                }
            }
        }
        let mut results: Vec<Value> = results.into_iter().flatten().collect();
        if results.is_empty()
            && let [one] = held.as_slice()
        {
            return Ok(one.clone());
        }
        results.extend(held);
        if let ([one], [(Some(run), profile, job)]) = (results.as_mut_slice(), targets.as_slice()) {
            // The routing switch (or the call's own flag) decides whether failed
            // jobs are inspected at all; resubmitting always needs the flag.
            let inspect = req
                .auto_fallback_to_gpu
                .unwrap_or(self.config.routing.auto_fallback_to_gpu_on_signatures);
            let fallback = if inspect {
                self.gpu_fallback_after_failure(
                    one,
                    run,
                    profile,
                    job,
                    req.auto_fallback_to_gpu == Some(true),
                )?
            } else {
                None
            };
            if let (Some(fb), Value::Object(map)) = (fallback, &mut *one) {
                map.insert("gpuFallback".into(), fb);
            }
        }
        if let [one] = results.as_slice() {
            let mut single = one.clone();
            if let Value::Object(map) = &mut single {
                map.insert("mode".into(), json!("check_workload"));
            }
            return Ok(single);
        }
        let done = results
            .iter()
            .all(|r| r.get("done").and_then(Value::as_bool) == Some(true));
        Ok(object([
            ("mode", json!("check_workload")),
            ("done", Value::Bool(done)),
            ("results", Value::Array(results)),
        ]))
    }

    /// After a job failed on a non-GPU profile, look for a GPU-required
    /// signature in its logs; report it, and with `resubmit` run the same
    /// workload as a new run on the GPU profile (once; the first run is kept
    /// and linked, never orphaned).
    fn gpu_fallback_after_failure(
        &mut self,
        result: &Value,
        run: &RunRecord,
        profile: &Profile,
        job_id: &str,
        resubmit: bool,
    ) -> Result<Option<Value>, ToolError> {
        let Some(gpu) = self.config.routing.gpu_profile.clone() else {
            return Ok(None);
        };
        let state = result.get("state").and_then(Value::as_str).unwrap_or("");
        if gpu == profile.id || !matches!(state, "FAILED" | "NODE_FAIL" | "BOOT_FAIL") {
            return Ok(None);
        }
        let mut text = String::new();
        for path in self.log_paths(run, profile, job_id)? {
            let entry = match self.read_log(
                profile,
                &path,
                Some(SIGNATURE_TAIL_LINES),
                None,
                super::logs::DEFAULT_BYTES,
            ) {
                // A log the host refuses to read (a planted symlink, FIFO or
                // device) has no signature to find.
                Err(ToolError::Host(HostError::Denied(_))) => continue,
                other => other?,
            };
            text.push_str(entry.get("log").and_then(Value::as_str).unwrap_or(""));
            text.push('\n');
        }
        let Some(signature) =
            first_match(&self.config.routing.gpu_required_error_signatures, &text)
                .map(|s| s.source.clone())
        else {
            return Ok(None);
        };
        let mut report = json!({
            "matchedSignature": signature,
            "fromCluster": profile.id,
            "toCluster": gpu,
            "resubmitted": null,
        });
        if let Some(existing) = &run.fallback_run_id {
            put(
                &mut report,
                "resubmitted",
                json!({"runId": existing, "alreadyDone": true}),
            );
            return Ok(Some(report));
        }
        if !resubmit {
            put(
                &mut report,
                "next",
                json!(
                    "call check_workload again with autoFallbackToGpu: true to resubmit this workload on the GPU profile"
                ),
            );
            return Ok(Some(report));
        }
        let workload = run
            .jobs
            .iter()
            .find(|j| j.job_id == job_id)
            .and_then(|j| j.workload.as_ref())
            .ok_or_else(|| invalid(format!("job {job_id} was not submitted by run_workload, so its workload cannot be resubmitted; use run_workload with cluster {gpu:?}")))
            .and_then(Workload::from_json)?;
        let prefix = format!("{}-gpu", run.run_id);
        let mut submitted =
            self.submit_workload(&gpu, None, None, Some(&prefix), &workload, None)?;
        submitted.run.fallback_from_run_id = Some(run.run_id.clone());
        self.save_run(&submitted.run)?;
        let mut original = run.clone();
        original.fallback_run_id = Some(submitted.run.run_id.clone());
        original.updated_at = iso_timestamp(self.host.now_ms());
        self.save_run(&original)?;
        put(
            &mut report,
            "resubmitted",
            json!({"runId": submitted.run.run_id, "jobId": submitted.job_id, "cluster": gpu}),
        );
        Ok(Some(report))
    }

    pub(super) fn cancel_job(&mut self, req: &Request) -> Result<Value, ToolError> {
        let run = match &req.run_id {
            Some(id) => Some(self.existing_run(id)?),
            None => None,
        };
        let mut ids = Self::job_ids_of(req)?;
        if ids.is_empty()
            && let Some(last) = run.as_ref().and_then(|r| r.last_job_id.clone())
        {
            ids.push(last);
        }
        if ids.is_empty() {
            return Err(invalid(
                "jobId (or jobIds, or runId with a submitted job) is required",
            ));
        }
        let profile = self.profile_for(req.cluster.as_deref(), run.as_ref())?;
        // Checked again here, whatever their source: `scancel --me` would
        // cancel every job of the account. `--` ends scancel's options.
        slurm::check_job_ids(ids.iter().map(String::as_str)).map_err(invalid)?;
        let what = format!("scancel failed on cluster {:?}", profile.id);
        let mut args = vec!["--".to_string()];
        args.extend(ids.iter().cloned());
        let out = self.exec_ok(&profile.id, "scancel", args, None, QUERY_TIMEOUT_MS, &what)?;
        // scancel says nothing (and exits 0) for jobs that already ended:
        // report what squeue says now so the agent is not misled.
        let after = self.statuses(&profile, &ids, false)?;
        let states: Vec<Value> = ids
            .iter()
            .zip(&after)
            .map(|(id, s)| json!({"jobId": id, "state": s.get("state")}))
            .collect();
        let output = [out.stdout_text(), out.stderr_text()]
            .join("\n")
            .trim()
            .to_string();
        Ok(json!({
            "cluster": profile.id,
            "jobId": ids.first(),
            "jobIds": ids,
            "output": output,
            "cancelled": true,
            "states": states,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{Rows, belongs, sacct_id, squeue_id, status_of};
    use crate::slurm::{parse_sacct_rows, parse_squeue_rows};

    #[test]
    fn an_array_placeholder_row_is_not_a_task() {
        // Seen on the testbed: squeue lists the four tasks, sacct only a
        // placeholder under the array id.
        let q = parse_squeue_rows(
            "131_0|COMPLETED|0:01|10:00|1|c1\n131_1|COMPLETED|0:01|10:00|1|c1\n131_2|COMPLETED|0:01|10:00|1|c1\n131_3|COMPLETED|0:01|10:00|1|c1\n",
        );
        let a = parse_sacct_rows("131|COMPLETED|0:0|00:00:01||c1\n");
        let s = status_of(
            "131",
            &Rows::index(&q, squeue_id),
            &Rows::index(&a, sacct_id),
            &serde_json::Map::new(),
        );
        assert_eq!(s["tasks"]["count"], 4, "{s}");
        assert_eq!(s["state"], "COMPLETED");
    }

    #[test]
    fn array_rows_belong_to_their_job() {
        assert!(belongs("12", "12"));
        assert!(belongs("12_3", "12"));
        assert!(belongs("12_[4-7]", "12"));
        assert!(!belongs("123", "12"));
        assert!(!belongs("12_3", "12_4"));
        assert!(belongs("12_3", "12_3"));
    }
}
