//! Retrying `run_workload` without duplicate jobs.
//!
//! Before anything reaches the cluster, the run records the attempt (a digest
//! of the profile and the workload, and when it began); after `sbatch` the
//! ledger records the job. The job itself leaves its marks in
//! `<run dir>/.cluster-slurm/`: `job-<id>` as it starts, `exit-<id>` as it
//! ends (see the script). A later identical request:
//! - within [`RETRY_WINDOW_MS`] of an attempt whose job is known gets that run
//!   back (no new job) unless it says `newRun`;
//! - for an attempt whose outcome is unknown, first asks the cluster: the
//!   marks, then `squeue` and `sacct` for a job working in the run's
//!   directory. Found: the job is adopted. Certainly absent: the same run is
//!   submitted. Cannot tell: nothing is submitted, and the error says why.

use super::super::{QUERY_TIMEOUT_MS, Tool, local_io};
use super::Workload;
use crate::host::{ExecOutput, HostError, ToolError};
use crate::ledger::{JobRecord, RunRecord, iso_timestamp};
use crate::paths::{basename, remote_join};
use crate::routing::Selection;
use serde_json::{Value, json};

/// An identical request this soon after another is taken for its retry.
pub(in crate::actions) const RETRY_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Until then a submitted job is still listed by `squeue` (SLURM keeps
/// finished jobs for MinJobAge, 300 s by default), so `squeue` alone can rule
/// it out when `sacct` is unavailable.
const SQUEUE_REMEMBERS_MS: u64 = 2 * 60 * 1000;
const MARKER_DIR: &str = ".cluster-slurm";

/// `123`, `123_4`, `123_[0-3]`, `123.batch` → `123`.
fn base_job_id(id: &str) -> Option<&str> {
    let base = id.trim().split(['_', '.']).next()?;
    (!base.is_empty() && base.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

impl Tool<'_> {
    /// The newest run whose last attempt had this digest and began within
    /// the retry window.
    pub(in crate::actions) fn recent_submission(
        &mut self,
        key: &str,
    ) -> Result<Option<RunRecord>, ToolError> {
        let now = self.host.now_ms();
        let ledger = self.load_ledger()?;
        let mut newest: Option<(u64, RunRecord)> = None;
        for id in ledger.runs.keys() {
            let Some(run) = ledger.get(id).map_err(local_io)? else {
                continue;
            };
            let Some(started) = run
                .submission
                .as_ref()
                .filter(|s| s.key == key && now.saturating_sub(s.started_ms) <= RETRY_WINDOW_MS)
                .map(|s| s.started_ms)
            else {
                continue;
            };
            if newest.as_ref().is_none_or(|(t, _)| *t < started) {
                newest = Some((started, run));
            }
        }
        Ok(newest.map(|(_, run)| run))
    }

    /// The job an interrupted attempt of `run` submitted, if any.
    pub(in crate::actions) fn reconcile(
        &mut self,
        run: &RunRecord,
    ) -> Result<Option<String>, ToolError> {
        let cluster = run.cluster_id.clone();
        let known: Vec<String> = run.jobs.iter().map(|j| j.job_id.clone()).collect();
        let new_job = |id: &str| {
            base_job_id(id)
                .filter(|b| !known.iter().any(|k| k == b))
                .map(str::to_string)
        };
        let dir_name = format!("/{}", basename(&run.remote_run_dir));
        let in_run = |workdir: &str| workdir.trim().trim_end_matches('/').ends_with(&dir_name);

        let marker_dir = remote_join(&run.remote_run_dir, MARKER_DIR);
        // The host takes a path operand only after `--`, and refuses a
        // marker directory the job replaced by a symlink: then there is no
        // marker to trust, and squeue/sacct below decide.
        let listed = match self.exec(
            &cluster,
            "ls",
            vec!["-1A".into(), "--".into(), marker_dir],
            None,
            QUERY_TIMEOUT_MS,
        ) {
            Err(ToolError::Host(HostError::Denied(_))) => ExecOutput::default(),
            other => other?,
        };
        if listed.success()
            && let Some(id) = listed.stdout_text().lines().find_map(|l| {
                let l = l.trim();
                l.strip_prefix("job-")
                    .or_else(|| l.strip_prefix("exit-"))
                    .and_then(new_job)
            })
        {
            return Ok(Some(id));
        }

        let args = ["--me", "-h", "-t", "all", "-o", "%i|%Z"]
            .map(String::from)
            .to_vec();
        let queued = self.exec(&cluster, "squeue", args, None, QUERY_TIMEOUT_MS)?;
        let find = |text: String| {
            text.lines().find_map(|l| {
                let (id, workdir) = l.split_once('|')?;
                in_run(workdir).then(|| new_job(id)).flatten()
            })
        };
        if queued.success()
            && let Some(id) = find(queued.stdout_text())
        {
            return Ok(Some(id));
        }

        let started = run.submission.as_ref().map_or(0, |s| s.started_ms);
        // sacct lists jobs from midnight by default; a day earlier covers
        // any time zone of the cluster.
        let since = iso_timestamp(started.saturating_sub(24 * 3600 * 1000));
        let since = since.get(..10).unwrap_or("now-1days").to_string();
        let args = ["-n", "-P", "-X", "-S", &since, "-o", "JobID,WorkDir"]
            .map(String::from)
            .to_vec();
        let accounted = self.exec(&cluster, "sacct", args, None, QUERY_TIMEOUT_MS)?;
        if accounted.success()
            && let Some(id) = find(accounted.stdout_text())
        {
            return Ok(Some(id));
        }

        let recent = self.host.now_ms().saturating_sub(started) < SQUEUE_REMEMBERS_MS;
        if queued.success() && (accounted.success() || recent) {
            return Ok(None);
        }
        Err(ToolError::RemoteFailed(format!(
            "run {}: an earlier attempt of this request was interrupted and may have reached SLURM, but the cluster cannot tell now (squeue: {}, sacct: {}); nothing was submitted again. Retry in a moment, or look with list_files/job_status.",
            run.run_id,
            if queued.success() {
                "no such job".to_string()
            } else {
                queued.stderr_text().trim().to_string()
            },
            if accounted.success() {
                "no such job".to_string()
            } else {
                accounted.stderr_text().trim().to_string()
            },
        )))
    }

    /// Record a job found by `reconcile` as this run's submission.
    pub(in crate::actions) fn adopt(
        &mut self,
        mut run: RunRecord,
        job_id: &str,
        workload: &Workload,
    ) -> Result<RunRecord, ToolError> {
        let now = iso_timestamp(self.host.now_ms());
        run.jobs.push(JobRecord::submitted(
            job_id.to_string(),
            remote_join(&run.remote_run_dir, &workload.script_name),
            run.latest_script_path.clone().unwrap_or_default(),
            now.clone(),
            format!("{job_id} (found on the cluster after an interrupted submission)"),
            run.latest_script_logs.clone().unwrap_or_default(),
            Some(workload.to_json()),
        ));
        run.last_job_id = Some(job_id.to_string());
        if let Some(s) = run.submission.as_mut() {
            s.job_id = Some(job_id.to_string());
        }
        run.updated_at = now;
        self.save_run(&run)?;
        Ok(run)
    }

    /// `run_workload`'s answer for a run submitted by an earlier attempt.
    /// `how` is "reused" (the job was known) or "recovered" (found on the
    /// cluster after an interruption).
    pub(in crate::actions) fn earlier_answer(
        &self,
        run: &RunRecord,
        selection: &Selection,
        workload: &Workload,
        allow_env: bool,
        how: &str,
    ) -> Value {
        let note = if how == "reused" {
            "The same request was submitted moments ago: this is that run, and no new job was submitted. Pass newRun: true to submit it again."
        } else {
            "An earlier attempt of this request was interrupted after SLURM accepted the job: this is that job; nothing was submitted twice."
        };
        json!({
            "mode": "run_workload",
            "cluster": run.cluster_id,
            "clusterSelection": selection,
            "runId": run.run_id,
            "jobId": run.last_job_id,
            "remoteRunDir": run.remote_run_dir,
            "localScriptPath": run.latest_script_path,
            "submitOutput": run.jobs.last().map(|j| j.submit_output.clone()),
            "uploaded": [],
            "preset": workload.from_preset,
            "allowEnvOverrides": allow_env,
            "fallback": {"triggered": false},
            how: true,
            "note": note,
        })
    }
}
