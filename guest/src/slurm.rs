//! Reading what SLURM prints: `sbatch --parsable`, `squeue`, `sacct`; job
//! states; log file patterns; hints for missing Python packages.

use serde::Serialize;

/// The squeue format the status check asks for: id, state, elapsed, limit,
/// nodes, reason.
pub const SQUEUE_FORMAT: &str = "%i|%T|%M|%l|%D|%R";
/// `JobID` rather than the reference's `JobIDRaw`: array tasks then read
/// `12_3` instead of an internal number.
pub const SACCT_FIELDS: &str = "JobID,State,ExitCode,Elapsed,MaxRSS,NodeList";

/// States after which a job never changes again.
pub const TERMINAL_STATES: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
    "SPECIAL_EXIT",
];

pub fn is_terminal(state: &str) -> bool {
    TERMINAL_STATES.contains(&state)
}

/// `sbatch --parsable` prints `<id>` or `<id>;<cluster>`.
pub fn parse_parsable_job_id(stdout: &str) -> Option<String> {
    let line = stdout.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let id = line.split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_string())
}

/// Job ids as the agent may pass them: digits, or array forms `123_4`.
pub fn check_job_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    // `^\d{1,12}(_\d{1,9})?$`, checked by hand: a status call may carry
    // 1,000 ids, and a regex per id was a tenth of its time.
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match id.split_once('_') {
        Some((job, task)) => digits(job, 12) && digits(task, 9),
        None => digits(id, 12),
    };
    if ok {
        Ok(id.to_string())
    } else {
        Err(format!(
            "jobId {id:?} is not a SLURM job id (digits, or <array>_<task>)"
        ))
    }
}

/// A job id exactly as it will be passed to SLURM (no trimming): the same
/// grammar as [`check_job_id`]. Every id the guest puts on a `squeue`,
/// `sacct` or `scancel` command line passes this, whichever source it came
/// from (a request, the ledger the agent can edit, a remote listing), so
/// none can be read as an option (`--me`) or a list (`1,2`).
pub fn is_job_id(id: &str) -> bool {
    check_job_id(id).is_ok_and(|checked| checked == id)
}

/// Every id of a command line, checked by [`is_job_id`].
pub fn check_job_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    match ids.into_iter().find(|id| !is_job_id(id)) {
        Some(bad) => Err(format!(
            "job id {bad:?} is not a SLURM job id (digits, or <array>_<task>); nothing was sent to SLURM"
        )),
        None => Ok(()),
    }
}

/// "CANCELLED by 1001" → "CANCELLED"; "completed" → "COMPLETED";
/// "RUNNING+" (sacct marks requeued) → "RUNNING".
pub fn normalize_state(raw: &str) -> String {
    raw.split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches('+')
        .to_ascii_uppercase()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqueueRow {
    pub job_id: String,
    pub state: String,
    pub elapsed: String,
    pub time_limit: String,
    pub nodes: String,
    pub reason: String,
    pub raw: String,
}

impl SqueueRow {
    /// The row as the JSON fields of a status (camelCase names): building
    /// the object from these costs half of going through
    /// `serde_json::to_value`, and a status call does it per job.
    pub fn fields(&self) -> [(&'static str, &str); 7] {
        [
            ("jobId", &self.job_id),
            ("state", &self.state),
            ("elapsed", &self.elapsed),
            ("timeLimit", &self.time_limit),
            ("nodes", &self.nodes),
            ("reason", &self.reason),
            ("raw", &self.raw),
        ]
    }
}

/// The row for `job_id` in `squeue -h -o SQUEUE_FORMAT` output.
pub fn parse_squeue(stdout: &str, job_id: &str) -> Option<SqueueRow> {
    parse_squeue_rows(stdout)
        .into_iter()
        .find(|r| r.job_id == job_id)
}

/// Every row of `squeue -h -o SQUEUE_FORMAT` output.
pub fn parse_squeue_rows(stdout: &str) -> Vec<SqueueRow> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(6, '|');
            let id = parts.next()?.trim();
            if id.is_empty() {
                return None;
            }
            Some(SqueueRow {
                job_id: id.to_string(),
                state: normalize_state(parts.next()?),
                elapsed: parts.next()?.to_string(),
                time_limit: parts.next()?.to_string(),
                nodes: parts.next()?.to_string(),
                reason: parts.next().unwrap_or("").to_string(),
                raw: line.trim().to_string(),
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SacctRow {
    pub job_id: String,
    pub state: String,
    pub exit_code: String,
    pub elapsed: String,
    pub max_rss: String,
    pub node_list: String,
    pub raw: String,
}

impl SacctRow {
    /// The row as the JSON fields of a status (see [`SqueueRow::fields`]).
    pub fn fields(&self) -> [(&'static str, &str); 7] {
        [
            ("jobId", &self.job_id),
            ("state", &self.state),
            ("exitCode", &self.exit_code),
            ("elapsed", &self.elapsed),
            ("maxRss", &self.max_rss),
            ("nodeList", &self.node_list),
            ("raw", &self.raw),
        ]
    }
}

/// The allocation row for `job_id` in `sacct -n -P -o SACCT_FIELDS` output.
pub fn parse_sacct(stdout: &str, job_id: &str) -> Option<SacctRow> {
    parse_sacct_rows(stdout)
        .into_iter()
        .find(|r| r.job_id == job_id)
}

/// Every allocation row (not steps) of `sacct -n -P -o SACCT_FIELDS`
/// output. MaxRSS lives on the step rows (`<id>.batch`, `<id>.0`), so the
/// largest step value is reported with its allocation.
pub fn parse_sacct_rows(stdout: &str) -> Vec<SacctRow> {
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.trim().split('|').collect::<Vec<_>>())
        .filter(|cols| cols.len() >= 6)
        .collect();
    rows.iter()
        .filter(|c| {
            c.first()
                .is_some_and(|id| !id.contains('.') && !id.is_empty())
        })
        .filter_map(|main| sacct_row(&rows, main))
        .collect()
}

fn sacct_row(rows: &[Vec<&str>], main: &[&str]) -> Option<SacctRow> {
    let field = |cols: &[&str], i: usize| cols.get(i).map(|s| s.to_string()).unwrap_or_default();
    let job_id = main.first()?.to_string();
    let step_prefix = format!("{job_id}.");
    let max_rss = rows
        .iter()
        .filter(|c| c.first().is_some_and(|id| id.starts_with(&step_prefix)))
        .filter_map(|c| c.get(4).copied())
        .filter(|v| !v.is_empty())
        .max_by_key(|v| rss_bytes(v))
        .map(str::to_string)
        .unwrap_or_else(|| field(main, 4));
    Some(SacctRow {
        job_id: job_id.clone(),
        state: normalize_state(&field(main, 1)),
        exit_code: field(main, 2),
        elapsed: field(main, 3),
        max_rss,
        node_list: field(main, 5),
        raw: main.join("|"),
    })
}

fn rss_bytes(v: &str) -> u64 {
    let (digits, unit) = v.split_at(
        v.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(v.len()),
    );
    let n: f64 = digits.parse().unwrap_or(0.0);
    let mult = match unit.to_ascii_uppercase().as_str() {
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => 1.0,
    };
    (n * mult) as u64
}

/// The state a set of array tasks (or jobs) amounts to: still going if any
/// is, COMPLETED only if all are, else the first other final state.
pub fn aggregate_state<'a>(states: impl IntoIterator<Item = &'a str>) -> String {
    let states: Vec<&str> = states.into_iter().collect();
    if states.is_empty() {
        return "NOT_FOUND".to_string();
    }
    if let Some(live) = states.iter().find(|s| !is_terminal(s)) {
        return if states.contains(&"RUNNING") {
            "RUNNING".to_string()
        } else {
            live.to_string()
        };
    }
    states
        .iter()
        .find(|s| **s != "COMPLETED")
        .map(|s| s.to_string())
        .unwrap_or_else(|| "COMPLETED".to_string())
}

/// `ExitCode` "3:0" → 3 (the signal part is reported separately by SLURM).
pub fn exit_status(exit_code: &str) -> Option<i64> {
    exit_code.split(':').next()?.trim().parse().ok()
}

/// Resolve a `--output`/`--error` pattern for a job or an array task
/// (`job_id` `12_3`). For a task, `%j` is the task's own job id, which only
/// SLURM knows: pass it as `raw_id`. `%u` must be replaced beforehand; any
/// other placeholder gives None, so callers can say so instead of guessing.
pub fn resolve_log_pattern(
    pattern: &str,
    job_id: &str,
    raw_id: Option<&str>,
    job_name: &str,
) -> Option<String> {
    let (base, task) = match job_id.split_once('_') {
        Some((b, t)) => (b, t),
        None => (job_id, ""),
    };
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Optional zero-padding width, e.g. %5j.
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(*d);
            chars.next();
        }
        let pad = |s: &str| {
            let w: usize = width.parse().unwrap_or(0);
            format!("{s:0>w$}")
        };
        match chars.next()? {
            '%' => out.push('%'),
            'j' => out.push_str(&pad(raw_id.unwrap_or(job_id))),
            'A' => out.push_str(&pad(base)),
            'a' => out.push_str(&pad(task)),
            'x' => out.push_str(job_name),
            _ => return None,
        }
    }
    Some(out)
}

/// Suggestion shown when a log says a Python module is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingPackageHint {
    pub module: String,
    pub package: String,
    pub strategy: &'static str,
    pub note: String,
    pub suggested_commands: Vec<String>,
}

/// Import names whose pip package is named differently.
const PIP_NAMES: &[(&str, &str)] = &[
    ("cv2", "opencv-python"),
    ("sklearn", "scikit-learn"),
    ("skimage", "scikit-image"),
    ("yaml", "PyYAML"),
    ("PIL", "Pillow"),
    ("bs4", "beautifulsoup4"),
    ("Crypto", "pycryptodome"),
    ("dateutil", "python-dateutil"),
    ("dotenv", "python-dotenv"),
    ("attr", "attrs"),
    ("google.protobuf", "protobuf"),
    ("jwt", "PyJWT"),
    ("serial", "pyserial"),
    ("magic", "python-magic"),
    ("docx", "python-docx"),
    ("pptx", "python-pptx"),
    ("faiss", "faiss-cpu"),
    ("OpenGL", "PyOpenGL"),
    ("wx", "wxPython"),
    ("MySQLdb", "mysqlclient"),
    ("psycopg2", "psycopg2-binary"),
    ("tensorflow_datasets", "tensorflow-datasets"),
];

pub fn missing_package_hint(log: &str, cluster: &str, python: &str) -> Option<MissingPackageHint> {
    let patterns = [
        r#"ModuleNotFoundError:\s+No module named ['"]([^'"]+)['"]"#,
        r#"ImportError:\s+No module named ['"]?([A-Za-z0-9_.-]+)['"]?"#,
    ];
    let safe = crate::patterns::fixed(
        r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        false,
    )?;
    let module = patterns.iter().find_map(|p| {
        let re = crate::patterns::fixed(p, false)?;
        let name = re.captures(log)?.get(1)?.as_str().to_string();
        // Remote log text is untrusted: only a plain dotted identifier may
        // end up inside a suggested shell command.
        safe.is_match(&name).then_some(name)
    })?;
    let package = PIP_NAMES
        .iter()
        .find(|(import, _)| *import == module)
        .map(|(_, pip)| pip.to_string())
        .unwrap_or_else(|| {
            let top = module.split('.').next().unwrap_or(&module);
            PIP_NAMES
                .iter()
                .find(|(import, _)| *import == top)
                .map(|(_, pip)| pip.to_string())
                .unwrap_or_else(|| top.replace('_', "-"))
        });
    let top = module.split('.').next().unwrap_or(&module).to_string();
    Some(MissingPackageHint {
        strategy: "install-into-profile-env",
        note: format!(
            "Install with run_workload on cluster profile {cluster:?}. The profile setupCommands already load the target environment."
        ),
        suggested_commands: vec![
            format!("{python} -m pip install {package}"),
            format!("{python} -c \"import {top}; print(getattr({top}, '__version__', 'ok'))\""),
        ],
        module,
        package,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_digits_with_an_optional_array_task() {
        for good in ["1", " 42 ", "123456789012", "12_3", "12_123456789"] {
            assert_eq!(check_job_id(good), Ok(good.trim().to_string()), "{good:?}");
        }
        for bad in [
            "",
            "_",
            "12_",
            "_3",
            "1_2_3",
            "1234567890123",
            "12_1234567890",
            "12a",
            "-1",
            "１２",
            "12 3",
            "12;rm",
            "12,13",
        ] {
            assert!(check_job_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parsable_ids() {
        assert_eq!(parse_parsable_job_id("42\n").as_deref(), Some("42"));
        assert_eq!(
            parse_parsable_job_id("12345;clusterA").as_deref(),
            Some("12345")
        );
        assert_eq!(parse_parsable_job_id("sbatch: error: x"), None);
        assert_eq!(parse_parsable_job_id(""), None);
    }

    #[test]
    fn states_normalised() {
        assert_eq!(normalize_state("CANCELLED by 1001"), "CANCELLED");
        assert_eq!(normalize_state("completed"), "COMPLETED");
        assert!(is_terminal(&normalize_state("NODE_FAIL")));
        assert!(!is_terminal("PENDING"));
    }

    #[test]
    fn squeue_row_for_the_right_job() {
        let out = "7|RUNNING|0:01|10:00|1|c1\n71|PENDING|0:00|10:00|1|(Priority)\n";
        let row = parse_squeue(out, "71").unwrap();
        assert_eq!(
            (row.state.as_str(), row.reason.as_str()),
            ("PENDING", "(Priority)")
        );
        assert!(parse_squeue(out, "8").is_none());
    }

    #[test]
    fn sacct_allocation_with_step_rss() {
        let out = "55|CANCELLED by 1001|0:0|00:00:03||c1\n55.batch|CANCELLED|0:15|00:00:03|1024K|c1\n55.0|COMPLETED|0:0|00:00:01|2M|c1\n";
        let row = parse_sacct(out, "55").unwrap();
        assert_eq!(row.state, "CANCELLED");
        assert_eq!(row.max_rss, "2M");
        assert_eq!(exit_status("3:0"), Some(3));
    }

    #[test]
    fn many_rows_and_arrays() {
        let out = "12_0|COMPLETED|0:0|00:00:01||c1\n12_0.batch|COMPLETED|0:0|00:00:01|900K|c1\n12_1|FAILED|2:0|00:00:01||c1\n13|RUNNING|0:0|00:00:05||c1\n";
        let rows = parse_sacct_rows(out);
        assert_eq!(
            rows.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(),
            vec!["12_0", "12_1", "13"]
        );
        assert_eq!(rows[0].max_rss, "900K");
        assert_eq!(aggregate_state(["COMPLETED", "FAILED"]), "FAILED");
        assert_eq!(
            aggregate_state(["COMPLETED", "PENDING", "RUNNING"]),
            "RUNNING"
        );
        assert_eq!(aggregate_state(["COMPLETED", "COMPLETED"]), "COMPLETED");
        assert_eq!(
            parse_squeue_rows("5_1|RUNNING|0:01|1:00|1|c1\n5_[2-3]|PENDING|0:00|1:00|1|(None)\n")
                .len(),
            2
        );
    }

    #[test]
    fn log_patterns() {
        assert_eq!(
            resolve_log_pattern("slurm-%j.out", "12", None, "x").as_deref(),
            Some("slurm-12.out")
        );
        assert_eq!(
            resolve_log_pattern("%x-%A_%a.err", "12_3", None, "job").as_deref(),
            Some("job-12_3.err")
        );
        assert_eq!(
            resolve_log_pattern("out-%5j", "12", None, "x").as_deref(),
            Some("out-00012")
        );
        assert_eq!(
            resolve_log_pattern("100%%-%j", "12", None, "x").as_deref(),
            Some("100%-12")
        );
        assert_eq!(resolve_log_pattern("%u-%j", "12", None, "x"), None);
        // An array task's %j is its own job id.
        assert_eq!(
            resolve_log_pattern("slurm-%j.out", "56_1", Some("58"), "x").as_deref(),
            Some("slurm-58.out")
        );
    }

    #[test]
    fn package_hints_are_safe_and_mapped() {
        let h = missing_package_hint("ModuleNotFoundError: No module named 'cv2'", "c", "python3")
            .unwrap();
        assert_eq!(h.package, "opencv-python");
        assert_eq!(
            h.suggested_commands.first().map(String::as_str),
            Some("python3 -m pip install opencv-python")
        );
        let h = missing_package_hint(
            "ModuleNotFoundError: No module named 'sklearn.linear_model'",
            "c",
            "python3",
        )
        .unwrap();
        assert_eq!(h.package, "scikit-learn");
        assert!(
            missing_package_hint(
                "ModuleNotFoundError: No module named 'x; rm -rf ~'",
                "c",
                "python3"
            )
            .is_none()
        );
    }
}
