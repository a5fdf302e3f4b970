//! The run ledger, `runs.json`, in the reference extension's format: a run per
//! id with its profile, directories and submitted jobs. Fields this version
//! does not know are kept as they are, so a newer or older writer's data
//! survives a rewrite.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const LEDGER_FILE: &str = "runs.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(default)]
    pub runs: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run_id: String,
    pub cluster_id: String,
    pub local_run_dir: String,
    pub remote_run_dir: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_script_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_id: Option<String>,
    #[serde(default)]
    pub jobs: Vec<JobRecord>,
    /// Log patterns and job name of `latestScriptPath`, so a later
    /// `submit_job` of it records where its logs go (not in the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_script_logs: Option<LogPatterns>,
    /// Run created on the GPU profile after this run's job failed with a
    /// GPU-required signature (not in the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from_run_id: Option<String>,
    /// The latest `run_workload` submission of this run, recorded before
    /// anything is written on the cluster (not in the reference): a retry of
    /// the same request finds it, and an attempt without `jobId` is
    /// reconciled with the cluster before anything is submitted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission: Option<Submission>,
    /// Set when the profile's `requireApprovalAbove` held this run for an
    /// operator's decision (not in the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RunRecord {
    /// The job ids this run records, each a SLURM job id: the ledger is a
    /// file the agent can edit, and an id like `--me` would otherwise reach
    /// `scancel` as an option.
    pub fn check_job_ids(&self) -> Result<(), String> {
        let recorded = self
            .last_job_id
            .iter()
            .chain(self.jobs.iter().map(|j| &j.job_id))
            .chain(self.submission.iter().filter_map(|s| s.job_id.as_ref()));
        for id in recorded {
            if !crate::slurm::is_job_id(id) {
                return Err(format!(
                    "run {:?} in {LEDGER_FILE} records job id {id:?}, which is not a SLURM job id (digits, or <array>_<task>); nothing was sent to SLURM. Correct or remove it in {LEDGER_FILE}",
                    self.run_id
                ));
            }
        }
        Ok(())
    }
}

pub const APPROVAL_PENDING: &str = "pending";
pub const APPROVAL_APPROVED: &str = "approved";
pub const APPROVAL_REJECTED: &str = "rejected";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// [`APPROVAL_PENDING`], [`APPROVAL_APPROVED`] or [`APPROVAL_REJECTED`].
    pub state: String,
    /// Which of the profile's limits the request is above.
    pub reasons: Vec<String>,
    pub requested_at: String,
    /// Digest of the request (as in [`Submission`]): asking again finds this run.
    pub key: String,
    /// The `run_workload` request as the agent made it, submitted once approved.
    pub request: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    /// Digest of the profile and the workload as asked for.
    pub key: String,
    /// Milliseconds since the Unix epoch when the attempt began.
    pub started_ms: u64,
    /// Set once the job id is known; absent means the outcome is uncertain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// FNV-1a, 64 bits, as hex: a stable digest for telling requests apart
/// (not a security boundary; nothing is trusted because of it).
pub fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogPatterns {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// `--array` spec, when the script starts an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub job_id: String,
    #[serde(default)]
    pub remote_script_path: String,
    #[serde(default)]
    pub local_script_path: String,
    #[serde(default)]
    pub submitted_at: String,
    #[serde(default)]
    pub submit_output: String,
    /// `--output`/`--error` patterns the job was submitted with, so its logs
    /// can be found later even if the profile changes (not in the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// `--array` spec of an array job (its logs are per task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<String>,
    /// What was asked for (commands, env, inputs, header), so the same
    /// workload can be resubmitted on the GPU profile after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LogPatterns {
    /// Where a script's job writes its logs, and the name `%x` stands for
    /// (SLURM uses the script's file name when no `--job-name` is set).
    pub fn of(header: &crate::header::Header, script_name: &str) -> LogPatterns {
        LogPatterns {
            output: header.output.clone(),
            error: header.error.clone(),
            job_name: Some(
                header
                    .job_name
                    .clone()
                    .unwrap_or_else(|| script_name.to_string()),
            ),
            array: header.array.clone(),
        }
    }
}

impl JobRecord {
    /// A job just submitted, with the log patterns of its script.
    pub fn submitted(
        job_id: String,
        remote_script_path: String,
        local_script_path: String,
        submitted_at: String,
        submit_output: String,
        logs: LogPatterns,
        workload: Option<Value>,
    ) -> JobRecord {
        JobRecord {
            job_id,
            remote_script_path,
            local_script_path,
            submitted_at,
            submit_output,
            output_pattern: logs.output,
            error_pattern: logs.error,
            job_name: logs.job_name,
            array: logs.array,
            workload,
            extra: Map::new(),
        }
    }
}

impl Ledger {
    /// Parse a ledger file. A file that exists but is not a ledger is an
    /// error, never an empty ledger: rewriting it would erase its history.
    pub fn parse(bytes: &[u8]) -> Result<Ledger, String> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("{LEDGER_FILE} is not valid JSON ({e}); it was left untouched"))?;
        match value.get("runs") {
            Some(Value::Object(_)) | None => {}
            Some(_) => {
                return Err(format!(
                    "{LEDGER_FILE}: \"runs\" is not an object; it was left untouched"
                ));
            }
        }
        serde_json::from_value(value)
            .map_err(|e| format!("{LEDGER_FILE} is not a run ledger ({e}); it was left untouched"))
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| format!("cannot encode {LEDGER_FILE}: {e}"))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    pub fn get(&self, run_id: &str) -> Result<Option<RunRecord>, String> {
        match self.runs.get(run_id) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("run {run_id:?} in {LEDGER_FILE} is malformed: {e}")),
        }
    }

    pub fn put(&mut self, run: &RunRecord) -> Result<(), String> {
        let value = serde_json::to_value(run)
            .map_err(|e| format!("cannot encode run {}: {e}", run.run_id))?;
        self.runs.insert(run.run_id.clone(), value);
        Ok(())
    }
}

/// The reference's run id rules: lower-case, runs of other characters become
/// `-`, no leading/trailing `-`, at most 80 characters.
pub fn sanitize_run_id(raw: &str) -> Result<String, String> {
    let mut out = String::new();
    for c in raw.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut collapsed = String::new();
    for c in out.chars() {
        if !(c == '-' && collapsed.ends_with('-')) {
            collapsed.push(c);
        }
    }
    let trimmed: String = collapsed.trim_matches('-').chars().take(80).collect();
    let trimmed = trimmed.trim_end_matches('-').to_string();
    // "." and ".." are valid by the character rules but name no directory of their own.
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '.') {
        return Err("runId cannot be empty after sanitization".to_string());
    }
    Ok(trimmed)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
    ms: u64,
}

fn parts(unix_ms: u64) -> Parts {
    let secs = unix_ms / 1000;
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Parts {
        y,
        mo,
        d,
        h: rem / 3600,
        mi: rem % 3600 / 60,
        s: rem % 60,
        ms: unix_ms % 1000,
    }
}

/// `2026-02-18T15:00:19.123Z`, as JavaScript's `toISOString`.
pub fn iso_timestamp(unix_ms: u64) -> String {
    let p = parts(unix_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    )
}

/// `20260218-150019`, the reference's run id timestamp (UTC).
pub fn run_timestamp(unix_ms: u64) -> String {
    let p = parts(unix_ms);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        p.y, p.mo, p.d, p.h, p.mi, p.s
    )
}

/// A new run id: `[prefix-]YYYYMMDD-HHMMSS-xxxxxx`. The random suffix keeps two
/// runs started in the same second (the reference's collision) apart.
pub fn new_run_id(prefix: Option<&str>, unix_ms: u64, random: u64) -> Result<String, String> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut suffix = String::new();
    let mut r = random;
    for _ in 0..6 {
        let idx = (r % 36) as usize;
        suffix.push(ALPHABET.get(idx).map(|b| *b as char).unwrap_or('0'));
        r /= 36;
    }
    let stamp = run_timestamp(unix_ms);
    let raw = match prefix.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) => {
            // Leave room for the stamp and suffix inside the 80-character limit.
            let p = sanitize_run_id(p)?;
            let p: String = p
                .chars()
                .take(80 - stamp.len() - suffix.len() - 2)
                .collect();
            format!("{p}-{stamp}-{suffix}")
        }
        None => format!("{stamp}-{suffix}"),
    };
    sanitize_run_id(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_like_reference() {
        assert_eq!(sanitize_run_id("  My Run!!  #2 ").unwrap(), "my-run-2");
        assert_eq!(sanitize_run_id("a/../b").unwrap(), "a-..-b");
        assert!(sanitize_run_id("!!!").is_err());
        assert!(sanitize_run_id("..").is_err());
        assert_eq!(sanitize_run_id(&"x".repeat(100)).unwrap().len(), 80);
    }

    #[test]
    fn timestamps() {
        // 2026-02-18T15:00:19.123Z
        let ms = 1_771_426_819_123;
        assert_eq!(iso_timestamp(ms), "2026-02-18T15:00:19.123Z");
        assert_eq!(run_timestamp(ms), "20260218-150019");
        assert_eq!(iso_timestamp(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn run_ids_differ_within_one_second() {
        let a = new_run_id(Some("exp"), 1_771_426_819_000, 1).unwrap();
        let b = new_run_id(Some("exp"), 1_771_426_819_000, 2).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("exp-20260218-150019-"));
    }

    #[test]
    fn reference_ledger_round_trips_with_unknown_fields() {
        let text = br#"{"runs":{"r1":{"runId":"r1","clusterId":"c","localRunDir":"/w/.openclaw/cluster-runs/r1",
            "remoteRunDir":"/s/r1","createdAt":"t","updatedAt":"t","lastJobId":"5","futureField":1,
            "jobs":[{"jobId":"5","remoteScriptPath":"/s/r1/job.slurm","localScriptPath":"/w/x","submittedAt":"t","submitOutput":"Submitted batch job 5"}]}}}"#;
        let mut l = Ledger::parse(text).unwrap();
        let mut run = l.get("r1").unwrap().unwrap();
        assert_eq!(run.jobs.len(), 1);
        run.updated_at = "t2".into();
        l.put(&run).unwrap();
        let out = String::from_utf8(l.to_bytes().unwrap()).unwrap();
        assert!(out.contains("\"futureField\": 1"));
        assert!(out.contains("\"updatedAt\": \"t2\""));
    }

    #[test]
    fn corrupt_ledger_is_an_error() {
        assert!(
            Ledger::parse(b"{not json")
                .unwrap_err()
                .contains("left untouched")
        );
        assert!(Ledger::parse(br#"{"runs": []}"#).is_err());
    }
}
