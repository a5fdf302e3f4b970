//! The guest's action flow against a fake host: what it asks the host to do,
//! in which order, and what it reports back. Real SSH and SLURM are covered
//! by the end-to-end tests in `tests/`.

use crate::actions::invoke;
use crate::host::{Decision, ExecOutput, ExecRequest, Host, HostError, ToolError, TransferStats};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Default)]
pub(crate) struct FakeHost {
    pub(crate) files: BTreeMap<String, Vec<u8>>,
    pub(crate) calls: Vec<String>,
    execs: Vec<ExecRequest>,
    /// Answers by program name, used in order; the last one repeats.
    answers: BTreeMap<String, Vec<ExecOutput>>,
    upload_error: Option<HostError>,
    clock: u64,
    /// Run-store locks held now; every ledger write must hold its lock.
    locked: std::collections::BTreeSet<String>,
    lock_error: Option<HostError>,
    /// The operator's decisions, by run id.
    decisions: BTreeMap<String, Decision>,
}

pub(crate) fn ok(stdout: &str) -> ExecOutput {
    ExecOutput {
        exit_code: Some(0),
        stdout: stdout.as_bytes().to_vec(),
        ..ExecOutput::default()
    }
}

fn fail(code: i32, stderr: &str) -> ExecOutput {
    ExecOutput {
        exit_code: Some(code),
        stderr: stderr.as_bytes().to_vec(),
        ..ExecOutput::default()
    }
}

impl FakeHost {
    pub(crate) fn answer(&mut self, program: &str, outputs: Vec<ExecOutput>) {
        self.answers.insert(program.to_string(), outputs);
    }
    fn ledger(&self) -> Value {
        serde_json::from_slice(self.files.get("runs.json").unwrap()).unwrap()
    }
}

impl Host for FakeHost {
    fn exec(&mut self, r: ExecRequest) -> Result<ExecOutput, HostError> {
        self.calls
            .push(format!("exec {} {}", r.program, r.args.join(" ")));
        self.execs.push(r.clone());
        let list = self
            .answers
            .get_mut(&r.program)
            .ok_or_else(|| HostError::Denied(format!("program {} not scripted", r.program)))?;
        if list.len() > 1 {
            Ok(list.remove(0))
        } else {
            list.first()
                .cloned()
                .ok_or_else(|| HostError::Remote("no answer".into()))
        }
    }
    fn upload(
        &mut self,
        cluster: &str,
        local: &str,
        remote: &str,
    ) -> Result<TransferStats, HostError> {
        self.calls
            .push(format!("upload {cluster} {local} -> {remote}"));
        match &self.upload_error {
            Some(e) => Err(e.clone()),
            None => Ok(TransferStats {
                files: 1,
                bytes: 10,
            }),
        }
    }
    fn upload_all(
        &mut self,
        cluster: &str,
        items: &[(String, String)],
    ) -> Result<Vec<TransferStats>, HostError> {
        self.calls
            .push(format!("upload-all {cluster} ({} items)", items.len()));
        items
            .iter()
            .map(|(local, remote)| self.upload(cluster, local, remote))
            .collect()
    }
    fn download(
        &mut self,
        cluster: &str,
        remote: &str,
        local: &str,
    ) -> Result<TransferStats, HostError> {
        self.calls
            .push(format!("download {cluster} {remote} -> {local}"));
        Ok(TransferStats {
            files: 1,
            bytes: 42,
        })
    }
    fn store_read(&mut self, path: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.files.get(path).cloned())
    }
    fn store_write(&mut self, path: &str, contents: &[u8]) -> Result<(), HostError> {
        assert!(
            path != "runs.json" || self.locked.contains(path),
            "the ledger was written without its lock"
        );
        self.files.insert(path.to_string(), contents.to_vec());
        Ok(())
    }
    fn store_lock(&mut self, path: &str) -> Result<(), HostError> {
        if let Some(e) = self.lock_error.clone() {
            return Err(e);
        }
        // A second lock from the same call would wait for itself.
        assert!(self.locked.insert(path.to_string()), "{path} locked twice");
        Ok(())
    }
    fn store_unlock(&mut self, path: &str) -> Result<(), HostError> {
        self.locked.remove(path);
        Ok(())
    }
    fn store_location(&mut self) -> String {
        ".openclaw/cluster-runs".to_string()
    }
    fn approval(&mut self, run_id: &str) -> Result<Option<Decision>, HostError> {
        self.calls.push(format!("approval {run_id}"));
        Ok(self.decisions.get(run_id).cloned())
    }
    fn now_ms(&mut self) -> u64 {
        self.clock += 1000;
        1_771_426_819_000 + self.clock
    }
    fn random_u64(&mut self) -> u64 {
        self.clock
    }
}

fn config() -> String {
    json!({
        "defaultCluster": "cpu",
        "routing": {"defaultProfile": "cpu", "gpuProfile": "gpu"},
        "clusters": {
            "cpu": {"sshTarget": "login", "remoteRoot": "/scratch/u/runs",
                    "slurmDefaults": {"partition": "cpu", "output": "slurm-%j.out", "error": "slurm-%j.err"}},
            "gpu": {"sshTarget": "login", "remoteRoot": "/scratch/u/runs",
                    "slurmDefaults": {"partition": "gpu", "gpusPerNode": 1}}
        }
    })
    .to_string()
}

pub(crate) fn call(host: &mut FakeHost, request: Value) -> Result<Value, ToolError> {
    call_with(host, &config(), request)
}

#[test]
fn natural_flow_run_check_logs_download() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("4242\n")]);
    let run = call(
        &mut host,
        json!({
            "action": "run_workload", "prefix": "demo", "command": "python3 analyse.py data/in.csv",
            "localPaths": ["analyse.py", "./data/in.csv"], "env": {"N": "3"}
        }),
    )
    .unwrap();
    assert_eq!(run["cluster"], "cpu");
    assert_eq!(run["clusterSelection"]["reason"], "configured_default");
    assert_eq!(run["jobId"], "4242");
    let run_id = run["runId"].as_str().unwrap().to_string();
    assert!(run_id.starts_with("demo-20260218-"), "{run_id}");
    let dir = format!("/scratch/u/runs/{run_id}");
    assert_eq!(run["remoteRunDir"], dir);
    // One transfer for inputs (their workspace-relative layout kept) and
    // the script, then sbatch: two round trips to the cluster in all.
    assert_eq!(
        host.calls,
        vec![
            "upload-all cpu (3 items)".to_string(),
            format!("upload cpu analyse.py -> {dir}/analyse.py"),
            format!("upload cpu data/in.csv -> {dir}/data/in.csv"),
            format!("upload cpu .openclaw/cluster-runs/{run_id}/job.slurm -> {dir}/job.slurm"),
            "exec sbatch --parsable -- job.slurm".to_string(),
        ]
    );
    assert_eq!(host.execs[0].cwd.as_deref(), Some(dir.as_str()));
    let script = String::from_utf8(host.files[&format!("{run_id}/job.slurm")].clone()).unwrap();
    assert!(script.contains("#SBATCH --partition=cpu\n"));
    assert!(script.contains("export N='3'\n"));
    let ledger = host.ledger();
    assert_eq!(ledger["runs"][&run_id]["lastJobId"], "4242");
    assert_eq!(
        ledger["runs"][&run_id]["jobs"][0]["outputPattern"],
        "slurm-%j.out"
    );

    host.calls.clear();
    host.answer("squeue", vec![ok("4242|RUNNING|0:05|10:00|1|c1\n")]);
    let status = call(
        &mut host,
        json!({"action": "check_workload", "runId": run_id}),
    )
    .unwrap();
    assert_eq!(
        (status["state"].as_str(), status["done"].as_bool()),
        (Some("RUNNING"), Some(false))
    );
    assert_eq!(
        host.calls,
        vec![format!(
            "exec squeue -h -t all -j 4242 -o {}",
            crate::slurm::SQUEUE_FORMAT
        )]
    );

    // Finished: squeue still lists it, sacct supplies the exit code.
    host.answer(
        "squeue",
        vec![ok("4242|FAILED|0:07|10:00|1|NonZeroExitCode\n")],
    );
    host.answer(
        "sacct",
        vec![ok(
            "4242|FAILED|3:0|00:00:07||c1\n4242.batch|FAILED|3:0|00:00:07|1024K|c1\n",
        )],
    );
    // The logs of a failed job are searched for GPU-required signatures.
    host.answer("tail", vec![ok("plain failure\n")]);
    host.calls.clear();
    let status = call(
        &mut host,
        json!({"action": "check_workload", "runId": run_id}),
    )
    .unwrap();
    assert_eq!(
        (
            status["state"].as_str(),
            status["done"].as_bool(),
            status["exitCode"].as_i64()
        ),
        (Some("FAILED"), Some(true), Some(3))
    );
    assert_eq!(status["status"]["source"], "sacct");
    assert!(
        status.get("gpuFallback").is_none(),
        "no signature, no fallback: {status}"
    );
    assert_eq!(
        host.calls,
        vec![
            format!(
                "exec squeue -h -t all -j 4242 -o {}",
                crate::slurm::SQUEUE_FORMAT
            ),
            format!("exec sacct -n -P -j 4242 -o {}", crate::slurm::SACCT_FIELDS),
            "exec tail -n 200 -- slurm-4242.out".to_string(),
            "exec tail -n 200 -- slurm-4242.err".to_string(),
        ]
    );

    host.calls.clear();
    host.answer(
        "tail",
        vec![
            ok("hello\n"),
            ok("ModuleNotFoundError: No module named 'yaml'\n"),
        ],
    );
    let logs = call(
        &mut host,
        json!({"action": "fetch_workload_logs", "runId": run_id, "tail": 5}),
    )
    .unwrap();
    // Each log is read in its own directory, with a relative name.
    assert_eq!(
        host.calls,
        vec![
            "exec tail -n 5 -- slurm-4242.out",
            "exec tail -n 5 -- slurm-4242.err"
        ]
    );
    assert_eq!(
        host.execs.last().unwrap().cwd.as_deref(),
        Some(dir.as_str())
    );
    assert_eq!(
        logs["log"],
        "hello\n\nModuleNotFoundError: No module named 'yaml'\n"
    );
    assert_eq!(logs["missingPackageHint"]["package"], "PyYAML");

    host.calls.clear();
    let dl = call(&mut host, json!({"action": "download_workload_outputs", "runId": run_id, "remoteFile": "out/result.json"})).unwrap();
    assert_eq!(
        host.calls,
        vec![format!(
            "download cpu {dir}/out/result.json -> downloads/{run_id}/result.json"
        )]
    );
    assert_eq!(dl["bytes"], 42);
}

#[test]
fn squeue_error_still_falls_back_to_sacct() {
    let mut host = FakeHost::default();
    host.answer(
        "squeue",
        vec![fail(1, "slurm_load_jobs error: Invalid job id specified")],
    );
    host.answer("sacct", vec![ok("77|CANCELLED by 1001|0:0|00:00:01||c1\n")]);
    let s = call(
        &mut host,
        json!({"action": "check_workload", "jobId": "77"}),
    )
    .unwrap();
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("CANCELLED"), Some(true))
    );
    assert_eq!(s["cluster"], "cpu");
}

#[test]
fn unknown_job_is_not_done() {
    let mut host = FakeHost::default();
    host.answer("squeue", vec![ok("")]);
    host.answer("sacct", vec![ok("")]);
    let s = call(&mut host, json!({"action": "check_workload", "jobId": "9"})).unwrap();
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("NOT_FOUND"), Some(false))
    );
}

#[test]
fn gpu_words_route_to_gpu_profile() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("5\n")]);
    let r = call(&mut host, json!({"action": "run_workload", "command": "python3 train.py", "workload": "uses torch.cuda"})).unwrap();
    assert_eq!(r["cluster"], "gpu");
    assert_eq!(r["clusterSelection"]["matchedIndicator"], "torch.cuda");
}

#[test]
fn submit_error_with_gpu_signature_falls_back_once() {
    let mut host = FakeHost::default();
    host.answer(
        "sbatch",
        vec![
            fail(1, "sbatch: error: CUDA is required for this job"),
            ok("6\n"),
        ],
    );
    let r = call(
        &mut host,
        json!({"action": "run_workload", "prefix": "exp", "command": "python3 x.py"}),
    )
    .unwrap();
    assert_eq!(r["cluster"], "gpu");
    assert_eq!(r["fallback"]["triggered"], true);
    assert_eq!(r["fallback"]["matchedSignature"], "cuda is required");
    assert!(
        r["runId"]
            .as_str()
            .unwrap()
            .starts_with("exp-gpu-fallback-")
    );
    // Both runs are in the ledger: the first is not lost.
    assert_eq!(host.ledger()["runs"].as_object().unwrap().len(), 2);
}

#[test]
fn host_denial_is_carried_through_and_nothing_is_submitted() {
    let mut host = FakeHost {
        upload_error: Some(HostError::Denied(
            "local path x escapes the workspace".into(),
        )),
        ..FakeHost::default()
    };
    host.answer("sbatch", vec![ok("1\n")]);
    let e = call(
        &mut host,
        json!({"action": "run_workload", "command": "echo", "localPath": "x"}),
    )
    .unwrap_err();
    assert_eq!(
        e,
        ToolError::Host(HostError::Denied(
            "local path x escapes the workspace".into()
        ))
    );
    assert!(host.execs.is_empty());
}

#[test]
fn refusals_change_nothing() {
    for (request, needle) in [
        (
            json!({"action": "run_workload"}),
            "command or commands is required",
        ),
        (
            json!({"action": "run_workload", "command": "module load x"}),
            "inline module command",
        ),
        (
            json!({"action": "run_workload", "command": "x", "localPath": "../secret"}),
            "stay inside workspace",
        ),
        (
            json!({"action": "run_workload", "command": "x", "cluster": "nope"}),
            "Unknown cluster \"nope\"",
        ),
        (
            json!({"action": "run_workload", "command": "x", "scriptName": "../../.bashrc"}),
            "plain file name",
        ),
        (
            json!({"action": "run_workload", "command": "x", "remoteDir": "/etc"}),
            "outside the profile's remoteRoot",
        ),
        (
            json!({"action": "run_workload", "command": "x", "headerOverrides": {"time": "1h\n#SBATCH --x"}}),
            "headerOverrides.time",
        ),
        (
            json!({"action": "download_workload_outputs", "remotePath": "/home/u/.ssh/id_rsa"}),
            "outside the profile's remoteRoot",
        ),
        (
            json!({"action": "fetch_workload_logs", "remotePath": "../../etc/passwd"}),
            "'..'",
        ),
        (
            json!({"action": "check_workload", "jobId": "1; rm -rf ~"}),
            "not a SLURM job id",
        ),
        (
            json!({"action": "check_workload", "runId": "never-made"}),
            "Unknown runId",
        ),
    ] {
        let mut host = FakeHost::default();
        let e = call(&mut host, request.clone()).unwrap_err();
        assert!(e.to_string().contains(needle), "{request}: {e}");
        assert!(
            host.calls.is_empty() && host.files.is_empty(),
            "{request} touched the host: {:?}",
            host.calls
        );
    }
}

#[test]
fn corrupt_ledger_is_reported_and_kept() {
    let mut host = FakeHost::default();
    host.files.insert("runs.json".into(), b"{broken".to_vec());
    host.answer("sbatch", vec![ok("1\n")]);
    let e = call(
        &mut host,
        json!({"action": "run_workload", "command": "echo"}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("left untouched"), "{e}");
    assert_eq!(host.files["runs.json"], b"{broken".to_vec());
    assert!(host.execs.is_empty());
}

#[test]
fn list_clusters_makes_no_remote_calls() {
    let mut host = FakeHost::default();
    let r = call(&mut host, json!({"action": "list_clusters"})).unwrap();
    assert_eq!(r["clusters"].as_array().unwrap().len(), 2);
    assert_eq!(r["routing"]["gpuProfile"], "gpu");
    assert!(host.calls.is_empty());
}

#[test]
fn invalid_config_is_its_own_error() {
    let mut host = FakeHost::default();
    let e = invoke(
        &mut host,
        r#"{"clusters": {"a": {"remoteRoot": "/x"}}}"#,
        r#"{"action":"list_clusters"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(&e, ToolError::InvalidConfig(m) if m.contains("clusters.a.sshTarget")),
        "{e:?}"
    );
}

// ------------------------------------------------------------------ issue 3

pub(crate) fn config_with(extra: Value) -> String {
    let mut c: Value = serde_json::from_str(&config()).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        if k == "cpuPolicy" {
            c["clusters"]["cpu"]["policy"] = v.clone();
        } else {
            c[k] = v.clone();
        }
    }
    c.to_string()
}

pub(crate) fn call_with(
    host: &mut FakeHost,
    config: &str,
    request: Value,
) -> Result<Value, ToolError> {
    let answer = invoke(host, config, &request.to_string());
    assert!(
        host.locked.is_empty(),
        "a call ended holding {:?}",
        host.locked
    );
    answer.map(|s| serde_json::from_str(&s).unwrap())
}

#[test]
fn a_ledger_that_cannot_be_locked_is_reported_and_left_alone() {
    let mut host = FakeHost::default();
    host.answer("mkdir", vec![ok("")]);
    host.lock_error = Some(HostError::Timeout(
        "runs.json is locked by another call".into(),
    ));
    let e = call(&mut host, json!({"action": "init_run", "cluster": "cpu"})).unwrap_err();
    assert!(
        matches!(&e, ToolError::Host(HostError::Timeout(m)) if m.contains("locked")),
        "{e:?}"
    );
    assert!(!host.files.contains_key("runs.json"));
}

#[test]
fn reference_example_configs_load_unchanged() {
    let gautschi = include_str!("../../examples/configs/gautschi.json");
    let checked: Value = serde_json::from_str(&crate::check_config(gautschi).unwrap()).unwrap();
    assert_eq!(checked["defaultCluster"], "gautschi-cpu");
    assert_eq!(
        checked["clusters"]["gautschi-gpu"]["slurmDefaults"]["gpusPerNode"],
        1
    );
    assert_eq!(checked["routing"]["gpuProfile"], "gautschi-gpu");
}

#[test]
fn init_run_creates_once_and_never_resets() {
    let mut host = FakeHost::default();
    host.answer("mkdir", vec![ok("")]);
    host.answer("sbatch", vec![ok("7\n")]);
    let r = call(&mut host, json!({"action": "init_run", "runId": "Exp 1"})).unwrap();
    assert_eq!(
        (r["created"].as_bool(), r["run"]["runId"].as_str()),
        (Some(true), Some("exp-1"))
    );
    assert_eq!(host.calls, vec!["exec mkdir -p -- exp-1"]);
    assert_eq!(host.execs[0].cwd, None, "mkdir runs in remoteRoot");
    call(
        &mut host,
        json!({"action": "run_workload", "runId": "exp-1", "command": "echo"}),
    )
    .unwrap();
    host.calls.clear();
    let again = call(&mut host, json!({"action": "init_run", "runId": "exp-1"})).unwrap();
    assert_eq!(again["created"], false);
    assert_eq!(
        again["run"]["jobs"].as_array().unwrap().len(),
        1,
        "jobs kept: {again}"
    );
    assert!(host.calls.is_empty());
}

#[test]
fn render_then_submit_records_log_patterns() {
    let mut host = FakeHost::default();
    host.answer("mkdir", vec![ok("")]);
    host.answer("sbatch", vec![ok("31;testbed\n")]);
    call(&mut host, json!({"action": "init_run", "runId": "r"})).unwrap();
    let rendered = call(
        &mut host,
        json!({"action": "render_job", "runId": "r", "command": "echo hi",
        "headerOverrides": {"jobName": "demo", "output": "logs/%x-%j.out"}}),
    )
    .unwrap();
    assert_eq!(
        rendered["localScriptPath"],
        ".openclaw/cluster-runs/r/job.slurm"
    );
    assert!(
        rendered["script"]
            .as_str()
            .unwrap()
            .contains("#SBATCH --output=logs/%x-%j.out\n")
    );
    host.calls.clear();
    let sub = call(&mut host, json!({"action": "submit_job", "runId": "r"})).unwrap();
    assert_eq!(sub["jobId"], "31");
    assert_eq!(
        host.calls,
        vec![
            "upload cpu .openclaw/cluster-runs/r/job.slurm -> /scratch/u/runs/r/job.slurm"
                .to_string(),
            "exec sbatch --parsable -- job.slurm".to_string(),
        ]
    );
    let job = &host.ledger()["runs"]["r"]["jobs"][0];
    assert_eq!(
        (job["outputPattern"].as_str(), job["jobName"].as_str()),
        (Some("logs/%x-%j.out"), Some("demo"))
    );
    // Logs then come from that pattern, in its own directory.
    host.answer("tail", vec![ok("hi\n")]);
    host.calls.clear();
    let logs = call(
        &mut host,
        json!({"action": "job_logs", "runId": "r", "jobId": "31"}),
    )
    .unwrap();
    assert_eq!(logs["remotePath"], "/scratch/u/runs/r/logs/demo-31.out");
    assert_eq!(
        host.execs.last().unwrap().cwd.as_deref(),
        Some("/scratch/u/runs/r/logs")
    );
}

#[test]
fn render_job_never_writes_over_workspace_files_and_gates_env() {
    let mut host = FakeHost::default();
    let e = call(
        &mut host,
        json!({"action": "render_job", "command": "x", "scriptPath": "src/main.rs"}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("never over a workspace file"), "{e}");
    let e = call(
        &mut host,
        json!({"action": "render_job", "command": "x", "allowEnvOverrides": true}),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("execution.allowCustomEnvOverride=false"),
        "{e}"
    );
    let allowing = config_with(json!({"execution": {"allowCustomEnvOverride": true}}));
    let r = call_with(&mut host, &allowing, json!({"action": "render_job", "command": "python x.py",
        "allowEnvOverrides": true, "setupCommands": ["conda activate base"], "modules": ["cuda/12"]})).unwrap();
    let script = r["script"].as_str().unwrap();
    assert!(
        script.contains("conda activate base\nmodule load cuda/12\n"),
        "{script}"
    );
    // With overrides allowed, headerOverrides.modules replace the profile's.
    let r2 = call_with(
        &mut host,
        &allowing,
        json!({"action": "render_job", "command": "x",
        "allowEnvOverrides": true, "headerOverrides": {"modules": ["gcc/13"]}}),
    )
    .unwrap();
    assert!(
        r2["script"]
            .as_str()
            .unwrap()
            .contains("module load gcc/13\n"),
        "{r2}"
    );
    assert!(
        r["localScriptPath"]
            .as_str()
            .unwrap()
            .starts_with(".openclaw/cluster-runs/adhoc-")
    );
}

#[test]
fn profile_policy_refuses_with_the_rule_named() {
    let cfg = config_with(
        json!({"cpuPolicy": {"overridableFields": ["time", "array"], "maxTime": "01:00:00", "maxArraySize": 4, "maxGpus": 0}}),
    );
    for (overrides, rule) in [
        (
            json!({"partition": "gpu"}),
            "headerOverrides.partition may not be changed",
        ),
        (json!({"time": "02:00:00"}), "exceeds maxTime"),
        (json!({"time": "UNLIMITED"}), "exceeds maxTime"),
        (json!({"array": "0-9"}), "maxArraySize is 4"),
    ] {
        let mut host = FakeHost::default();
        let e = call_with(&mut host, &cfg, json!({"action": "run_workload", "cluster": "cpu", "command": "x", "headerOverrides": overrides})).unwrap_err();
        assert!(
            matches!(&e, ToolError::Policy(m) if m.contains(rule) && m.contains("profile \"cpu\"")),
            "{overrides}: {e:?}"
        );
        assert!(host.calls.is_empty());
    }
    let mut host = FakeHost::default();
    let e = call_with(&mut host, &cfg, json!({"action": "run_workload", "cluster": "cpu", "command": "x", "submitArgs": ["--time=9-0"]})).unwrap_err();
    assert!(e.to_string().contains("submitArgs are not allowed"), "{e}");
    // Within the limits it runs, and a missing time gets the policy's maximum.
    host.answer("sbatch", vec![ok("3\n")]);
    call_with(&mut host, &cfg, json!({"action": "run_workload", "cluster": "cpu", "command": "x", "headerOverrides": {"array": "0-3"}})).unwrap();
    let run_id = host.ledger()["runs"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let script = String::from_utf8(host.files[&format!("{run_id}/job.slurm")].clone()).unwrap();
    assert!(
        script.contains("#SBATCH --time=0-01:00:00\n") && script.contains("#SBATCH --array=0-3\n"),
        "{script}"
    );
}

#[test]
fn concurrent_job_limit_is_checked_before_submitting() {
    let cfg = config_with(json!({"cpuPolicy": {"maxConcurrentJobs": 2}}));
    let mut host = FakeHost::default();
    host.answer("squeue", vec![ok("11\n12\n")]);
    host.answer("sbatch", vec![ok("13\n")]);
    let e = call_with(
        &mut host,
        &cfg,
        json!({"action": "run_workload", "cluster": "cpu", "command": "x"}),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("at most 2 concurrent jobs, 2 are queued or running"),
        "{e}"
    );
    assert!(
        !host.calls.iter().any(|c| c.starts_with("exec sbatch")),
        "{:?}",
        host.calls
    );
}

#[test]
fn presets_take_only_declared_parameters() {
    let cfg = config_with(
        json!({"presets": {"exp42": {"description": "lr sweep", "role": "gpu",
        "commands": ["python3 train.py --lr {{ lr }} --tag {{ tag }}"], "localPaths": ["train.py"],
        "parameters": {"lr": {"pattern": "^[0-9.]+$"}, "tag": {"pattern": "^[a-z ]+$", "default": "a b"}}}}}),
    );
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("8\n")]);
    let r = call_with(
        &mut host,
        &cfg,
        json!({"action": "run_workload", "preset": "exp42", "presetParams": {"lr": 0.5}}),
    )
    .unwrap();
    assert_eq!(
        (r["cluster"].as_str(), r["preset"].as_str()),
        (Some("gpu"), Some("exp42"))
    );
    let run_id = r["runId"].as_str().unwrap();
    let script = String::from_utf8(host.files[&format!("{run_id}/job.slurm")].clone()).unwrap();
    assert!(
        script.contains("python3 train.py --lr 0.5 --tag 'a b'\n"),
        "{script}"
    );
    assert!(
        host.calls
            .iter()
            .any(|c| c.starts_with("upload gpu train.py"))
    );
    for (request, needle) in [
        (
            json!({"action": "run_workload", "preset": "exp42", "presetParams": {"lr": "1; rm -rf ~"}}),
            "does not match",
        ),
        (
            json!({"action": "run_workload", "preset": "exp42", "presetParams": {"lr": "1", "gpu": "8"}}),
            "has no parameter \"gpu\"",
        ),
        (
            json!({"action": "run_workload", "preset": "exp42"}),
            "needs presetParams.lr",
        ),
        (
            json!({"action": "run_workload", "preset": "exp42", "presetParams": {"lr": "1"}, "command": "id"}),
            "command/commands may not be given",
        ),
        (
            json!({"action": "run_workload", "preset": "nope"}),
            "unknown preset",
        ),
    ] {
        let mut host = FakeHost::default();
        let e = call_with(&mut host, &cfg, request.clone()).unwrap_err();
        assert!(e.to_string().contains(needle), "{request}: {e}");
        assert!(host.calls.is_empty());
    }
}

#[test]
fn dry_run_asks_sbatch_test_only_and_changes_nothing() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![fail(1, "sbatch: error: Batch job submission failed: Requested node configuration is not available")]);
    let r = call(&mut host, json!({"action": "run_workload", "command": "echo", "dryRun": true, "headerOverrides": {"gres": "gpu:1"}})).unwrap();
    assert_eq!(r["accepted"], false);
    assert!(
        r["sbatchTestOutput"]
            .as_str()
            .unwrap()
            .contains("Requested node configuration")
    );
    assert!(
        r["script"]
            .as_str()
            .unwrap()
            .contains("#SBATCH --gres=gpu:1")
    );
    assert_eq!(host.calls, vec!["exec sbatch --test-only --"]);
    assert!(
        host.execs[0]
            .stdin
            .as_ref()
            .unwrap()
            .starts_with(b"#!/bin/bash\n"),
        "script goes on stdin"
    );
    assert!(host.files.is_empty(), "no ledger, no script written");
}

/// The status objects keep the reference's field names (camelCase), for
/// both sources.
#[test]
fn statuses_name_their_fields_like_the_reference() {
    let mut host = FakeHost::default();
    host.answer("squeue", vec![ok("1|RUNNING|0:01|10:00|1|c1\n")]);
    host.answer("sacct", vec![ok("2|COMPLETED|0:0|00:00:03|1024K|c2\n")]);
    let r = call(
        &mut host,
        json!({"action": "job_status", "jobIds": ["1", "2"]}),
    )
    .unwrap();
    let keys = |i: usize| -> Vec<String> {
        r["statuses"][i]["status"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        keys(0),
        [
            "jobId",
            "state",
            "elapsed",
            "timeLimit",
            "nodes",
            "reason",
            "raw",
            "source"
        ]
    );
    assert_eq!(
        keys(1),
        [
            "jobId", "state", "exitCode", "elapsed", "maxRss", "nodeList", "raw", "source"
        ]
    );
    assert_eq!(r["statuses"][1]["status"]["maxRss"], "1024K");
    assert_eq!(r["statuses"][0]["status"]["timeLimit"], "10:00");
}

#[test]
fn many_jobs_cost_one_squeue_and_one_sacct() {
    let mut host = FakeHost::default();
    host.answer(
        "squeue",
        vec![ok(
            "1|RUNNING|0:01|10:00|1|c1\n2|COMPLETED|0:03|10:00|1|c1\n",
        )],
    );
    host.answer(
        "sacct",
        vec![ok(
            "2|COMPLETED|0:0|00:00:03||c1\n3|FAILED|2:0|00:00:01||c1\n",
        )],
    );
    let r = call(
        &mut host,
        json!({"action": "job_status", "jobIds": ["1", "2", "3"]}),
    )
    .unwrap();
    let states: Vec<&str> = r["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["RUNNING", "COMPLETED", "FAILED"]);
    assert_eq!(
        host.calls,
        vec![
            format!(
                "exec squeue -h -t all -j 1,2,3 -o {}",
                crate::slurm::SQUEUE_FORMAT
            ),
            format!("exec sacct -n -P -j 2,3 -o {}", crate::slurm::SACCT_FIELDS),
        ]
    );
}

#[test]
fn logs_from_a_byte_offset_are_capped() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("5\n")]);
    let run = call(
        &mut host,
        json!({"action": "run_workload", "command": "echo"}),
    )
    .unwrap();
    host.answer("tail", vec![ok("0123456789")]);
    host.calls.clear();
    let r = call(
        &mut host,
        json!({"action": "fetch_workload_logs", "runId": run["runId"], "offset": 5, "maxBytes": 3}),
    )
    .unwrap();
    assert_eq!(host.calls[0], "exec tail -c +6 -- slurm-5.out");
    let out = &r["logs"]["stdout"];
    assert_eq!(
        (
            out["log"].as_str(),
            out["nextOffset"].as_u64(),
            out["more"].as_bool()
        ),
        (Some("012"), Some(8), Some(true))
    );
}

#[test]
fn gpu_fallback_after_a_failed_job_resubmits_once_and_links_runs() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("40\n"), ok("41\n")]);
    let run = call(&mut host, json!({"action": "run_workload", "cluster": "cpu", "command": "python3 train.py", "env": {"A": "1"}})).unwrap();
    let run_id = run["runId"].as_str().unwrap().to_string();
    host.answer(
        "squeue",
        vec![ok("40|FAILED|0:01|10:00|1|NonZeroExitCode\n")],
    );
    host.answer("sacct", vec![ok("40|FAILED|1:0|00:00:01||c1\n")]);
    host.answer("tail", vec![ok(""), ok("RuntimeError: CUDA is required\n")]);
    let seen = call(
        &mut host,
        json!({"action": "check_workload", "runId": run_id}),
    )
    .unwrap();
    assert_eq!(seen["gpuFallback"]["matchedSignature"], "cuda is required");
    assert!(
        seen["gpuFallback"]["resubmitted"].is_null(),
        "opt-in only: {seen}"
    );
    host.answer("tail", vec![ok(""), ok("RuntimeError: CUDA is required\n")]);
    let done = call(
        &mut host,
        json!({"action": "check_workload", "runId": run_id, "autoFallbackToGpu": true}),
    )
    .unwrap();
    let new_run = done["gpuFallback"]["resubmitted"]["runId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(done["gpuFallback"]["resubmitted"]["jobId"], "41");
    let ledger = host.ledger();
    assert_eq!(ledger["runs"][&run_id]["fallbackRunId"], new_run.as_str());
    assert_eq!(
        ledger["runs"][&new_run]["fallbackFromRunId"],
        run_id.as_str()
    );
    assert_eq!(ledger["runs"][&new_run]["clusterId"], "gpu");
    let script = String::from_utf8(host.files[&format!("{new_run}/job.slurm")].clone()).unwrap();
    assert!(
        script.contains("export A='1'")
            && script.contains("python3 train.py")
            && script.contains("--gpus-per-node=1"),
        "{script}"
    );
    // Asking again does not submit a second time.
    host.answer("tail", vec![ok(""), ok("RuntimeError: CUDA is required\n")]);
    host.calls.clear();
    let again = call(
        &mut host,
        json!({"action": "check_workload", "runId": run_id, "autoFallbackToGpu": true}),
    )
    .unwrap();
    assert_eq!(again["gpuFallback"]["resubmitted"]["alreadyDone"], true);
    assert!(!host.calls.iter().any(|c| c.starts_with("exec sbatch")));
}

#[test]
fn cancel_reports_the_state_afterwards() {
    let mut host = FakeHost::default();
    host.answer("scancel", vec![ok("")]);
    host.answer("squeue", vec![ok("9|CANCELLED|0:02|10:00|1|c1\n")]);
    let r = call(&mut host, json!({"action": "cancel_job", "jobId": "9"})).unwrap();
    assert_eq!(
        (r["cancelled"].as_bool(), r["states"][0]["state"].as_str()),
        (Some(true), Some("CANCELLED"))
    );
    assert_eq!(host.calls[0], "exec scancel -- 9");
}

#[test]
fn a_reference_ledger_is_readable() {
    let mut host = FakeHost::default();
    host.files.insert("runs.json".into(), br#"{"runs": {"20260218-150019": {"runId": "20260218-150019", "clusterId": "cpu",
        "localRunDir": "/abs/ws/.openclaw/cluster-runs/20260218-150019", "remoteRunDir": "/scratch/u/runs/20260218-150019",
        "createdAt": "2026-02-18T15:00:19.000Z", "updatedAt": "2026-02-18T15:00:20.000Z",
        "latestScriptPath": "/abs/ws/.openclaw/cluster-runs/20260218-150019/job.slurm", "lastJobId": "12345",
        "jobs": [{"jobId": "12345", "remoteScriptPath": "/scratch/u/runs/20260218-150019/job.slurm",
                  "localScriptPath": "/abs/ws/x", "submittedAt": "t", "submitOutput": "Submitted batch job 12345"}]}}}"#.to_vec());
    let runs = call(&mut host, json!({"action": "list_runs"})).unwrap();
    assert_eq!(runs["runs"][0]["lastJobId"], "12345");
    host.answer("squeue", vec![ok("")]);
    host.answer("sacct", vec![ok("12345|COMPLETED|0:0|00:01:00||c1\n")]);
    let s = call(
        &mut host,
        json!({"action": "check_workload", "runId": "20260218-150019"}),
    )
    .unwrap();
    assert_eq!(
        (s["state"].as_str(), s["cluster"].as_str()),
        (Some("COMPLETED"), Some("cpu"))
    );
    host.answer("tail", vec![ok("done\n")]);
    let logs = call(
        &mut host,
        json!({"action": "fetch_workload_logs", "runId": "20260218-150019"}),
    )
    .unwrap();
    // No recorded patterns: the profile's (slurm-%j.out / .err) are used.
    assert_eq!(
        logs["logs"]["stdout"]["remotePath"],
        "/scratch/u/runs/20260218-150019/slurm-12345.out"
    );
}

#[test]
fn user_in_log_patterns_is_asked_of_slurm() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("77\n")]);
    let run = call(
        &mut host,
        json!({"action": "run_workload", "command": "echo",
        "headerOverrides": {"output": "%u/%j.out", "error": "%u/%j.err"}}),
    )
    .unwrap();
    host.answer("squeue", vec![ok("alice\n")]);
    host.answer("tail", vec![ok("out\n"), ok("")]);
    host.calls.clear();
    let logs = call(
        &mut host,
        json!({"action": "fetch_workload_logs", "runId": run["runId"]}),
    )
    .unwrap();
    assert_eq!(host.calls[0], "exec squeue -h -t all -j 77 -o %u");
    let dir = run["remoteRunDir"].as_str().unwrap();
    assert_eq!(
        logs["logs"]["stdout"]["remotePath"],
        format!("{dir}/alice/77.out")
    );
    assert_eq!(
        logs["logs"]["stderr"]["remotePath"],
        format!("{dir}/alice/77.err")
    );
}

#[test]
fn submission_fallback_links_both_runs() {
    let mut host = FakeHost::default();
    host.answer(
        "sbatch",
        vec![fail(1, "sbatch: error: CUDA is required"), ok("6\n")],
    );
    let r = call(
        &mut host,
        json!({"action": "run_workload", "prefix": "exp", "command": "python3 x.py"}),
    )
    .unwrap();
    let ledger = host.ledger();
    let new_run = r["runId"].as_str().unwrap();
    let first = ledger["runs"][new_run]["fallbackFromRunId"]
        .as_str()
        .unwrap();
    assert!(first.starts_with("exp-2026"), "{first}");
    assert_eq!(ledger["runs"][first]["fallbackRunId"], new_run);
}

#[test]
fn an_existing_run_decides_the_profile_and_says_so() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("1\n"), ok("2\n")]);
    call(
        &mut host,
        json!({"action": "run_workload", "runId": "keep", "cluster": "gpu", "command": "echo"}),
    )
    .unwrap();
    let again = call(
        &mut host,
        json!({"action": "run_workload", "runId": "keep", "command": "echo"}),
    )
    .unwrap();
    assert_eq!(
        (
            again["cluster"].as_str(),
            again["clusterSelection"]["reason"].as_str()
        ),
        (Some("gpu"), Some("existing_run"))
    );
}

#[test]
fn array_logs_without_output_use_slurms_array_default() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("5\n")]);
    // The gpu profile sets no --output.
    let run = call(
        &mut host,
        json!({"action": "run_workload", "cluster": "gpu", "command": "echo",
        "headerOverrides": {"array": "0-3"}}),
    )
    .unwrap();
    host.answer("tail", vec![ok("x\n")]);
    let logs = call(
        &mut host,
        json!({"action": "fetch_workload_logs", "runId": run["runId"], "jobId": "5_1"}),
    )
    .unwrap();
    let dir = run["remoteRunDir"].as_str().unwrap();
    assert_eq!(
        logs["logs"]["stdout"]["remotePath"],
        format!("{dir}/slurm-5_1.out")
    );
    let e = call(
        &mut host,
        json!({"action": "fetch_workload_logs", "runId": run["runId"]}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("is an array (0-3)"), "{e}");
}

#[test]
fn a_reference_runs_script_is_found_in_the_run_store() {
    let mut host = FakeHost::default();
    host.files.insert("runs.json".into(), br#"{"runs": {"r": {"runId": "r", "clusterId": "cpu",
        "localRunDir": "/abs/ws/.openclaw/cluster-runs/r", "remoteRunDir": "/scratch/u/runs/r",
        "createdAt": "t", "updatedAt": "t", "latestScriptPath": "/abs/ws/.openclaw/cluster-runs/r/job.slurm", "jobs": []}}}"#.to_vec());
    host.answer("sbatch", vec![ok("9\n")]);
    let sub = call(&mut host, json!({"action": "submit_job", "runId": "r"})).unwrap();
    assert_eq!(sub["jobId"], "9");
    assert_eq!(
        host.calls[0],
        "upload cpu .openclaw/cluster-runs/r/job.slurm -> /scratch/u/runs/r/job.slurm"
    );
}

#[test]
fn failed_jobs_are_not_inspected_when_fallback_is_switched_off() {
    let cfg = config_with(
        json!({"routing": {"defaultProfile": "cpu", "gpuProfile": "gpu", "autoFallbackToGpuOnSignatures": false}}),
    );
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("4\n")]);
    let run = call_with(
        &mut host,
        &cfg,
        json!({"action": "run_workload", "command": "x"}),
    )
    .unwrap();
    host.answer(
        "squeue",
        vec![ok("4|FAILED|0:01|10:00|1|NonZeroExitCode\n")],
    );
    host.answer("sacct", vec![ok("4|FAILED|1:0|00:00:01||c1\n")]);
    host.calls.clear();
    let s = call_with(
        &mut host,
        &cfg,
        json!({"action": "check_workload", "runId": run["runId"]}),
    )
    .unwrap();
    assert!(s.get("gpuFallback").is_none());
    assert!(
        !host.calls.iter().any(|c| c.starts_with("exec tail")),
        "{:?}",
        host.calls
    );
}

#[test]
fn remote_dir_is_where_the_whole_run_lives() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("3\n")]);
    let r = call(
        &mut host,
        json!({"action": "run_workload", "command": "python3 a.py", "localPath": "a.py",
        "remoteDir": "projects/p1"}),
    )
    .unwrap();
    assert_eq!(r["remoteRunDir"], "/scratch/u/runs/projects/p1");
    let run_id = r["runId"].as_str().unwrap();
    assert_eq!(
        host.calls,
        vec![
            "upload-all cpu (2 items)".to_string(),
            "upload cpu a.py -> /scratch/u/runs/projects/p1/a.py".to_string(),
            format!(
                "upload cpu .openclaw/cluster-runs/{run_id}/job.slurm -> /scratch/u/runs/projects/p1/job.slurm"
            ),
            "exec sbatch --parsable -- job.slurm".to_string(),
        ]
    );
    assert_eq!(
        host.execs[0].cwd.as_deref(),
        Some("/scratch/u/runs/projects/p1"),
        "sbatch runs where the inputs are"
    );
    assert_eq!(
        host.ledger()["runs"][run_id]["remoteRunDir"],
        "/scratch/u/runs/projects/p1"
    );
}

/// `openclaw/openclaw.plugin.json` carries the config schema the guest
/// validates against; `UPDATE_MANIFEST=1 cargo test -p cluster-slurm-guest`
/// rewrites it after a config change.
#[test]
fn openclaw_manifest_schema_is_the_guests() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openclaw/openclaw.plugin.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let schema = crate::config::json_schema();
    if std::env::var_os("UPDATE_MANIFEST").is_some() {
        manifest["configSchema"] = schema.clone();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&manifest).unwrap() + "\n",
        )
        .unwrap();
    }
    assert_eq!(
        manifest["configSchema"], schema,
        "run UPDATE_MANIFEST=1 cargo test -p cluster-slurm-guest"
    );
    assert_eq!(manifest["id"], "cluster-slurm");
    assert_eq!(manifest["contracts"]["tools"], json!([crate::TOOL_NAME]));
}

// ------------------------------------------------- retries without duplicates

fn sbatches(host: &FakeHost) -> usize {
    host.calls
        .iter()
        .filter(|c| c.starts_with("exec sbatch --parsable"))
        .count()
}

fn workload() -> Value {
    json!({"action": "run_workload", "command": "python3 a.py", "localPaths": ["a.py"]})
}

/// The ledger as a crash between `sbatch` and the ledger write leaves it:
/// the attempt recorded, its job not.
fn forget_the_job(host: &mut FakeHost, run_id: &str) {
    let mut ledger = host.ledger();
    let run = &mut ledger["runs"][run_id];
    run["jobs"] = json!([]);
    run.as_object_mut().unwrap().remove("lastJobId");
    run["submission"].as_object_mut().unwrap().remove("jobId");
    host.files
        .insert("runs.json".into(), serde_json::to_vec(&ledger).unwrap());
}

#[test]
fn the_same_request_again_gets_the_same_run_not_a_second_job() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("11\n"), ok("12\n")]);
    let first = call(&mut host, workload()).unwrap();
    let again = call(&mut host, workload()).unwrap();
    assert_eq!(sbatches(&host), 1);
    assert_eq!(again["runId"], first["runId"]);
    assert_eq!(again["jobId"], "11");
    assert_eq!(again["reused"], true);
    assert!(again["note"].as_str().unwrap().contains("newRun"));
    // A different request is a different run.
    let other = call(
        &mut host,
        json!({"action": "run_workload", "command": "python3 b.py"}),
    )
    .unwrap();
    assert_ne!(other["runId"], first["runId"]);
    assert_eq!(sbatches(&host), 2);
}

#[test]
fn new_run_submits_the_same_request_again_on_purpose() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("11\n"), ok("12\n")]);
    let first = call(&mut host, workload()).unwrap();
    let mut request = workload();
    request["newRun"] = json!(true);
    let second = call(&mut host, request).unwrap();
    assert_eq!(sbatches(&host), 2);
    assert_ne!(second["runId"], first["runId"]);
    assert_eq!(second["jobId"], "12");
}

#[test]
fn an_interrupted_submission_is_found_on_the_cluster_and_adopted() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("11\n"), ok("99\n")]);
    let first = call(&mut host, workload()).unwrap();
    let run_id = first["runId"].as_str().unwrap().to_string();
    forget_the_job(&mut host, &run_id);
    host.answer("ls", vec![ok("job-11\n")]);
    let again = call(&mut host, workload()).unwrap();
    assert_eq!(sbatches(&host), 1, "submitted twice");
    assert_eq!(again["recovered"], true);
    assert_eq!(again["runId"], run_id.as_str());
    assert_eq!(again["jobId"], "11");
    let run = &host.ledger()["runs"][&run_id];
    assert_eq!(run["jobs"][0]["jobId"], "11");
    assert_eq!(run["submission"]["jobId"], "11");
}

#[test]
fn without_a_marker_squeue_finds_the_job_by_its_run_directory() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("11\n")]);
    let first = call(&mut host, workload()).unwrap();
    let run_id = first["runId"].as_str().unwrap().to_string();
    forget_the_job(&mut host, &run_id);
    host.answer(
        "ls",
        vec![fail(2, "ls: cannot access: No such file or directory")],
    );
    host.answer(
        "squeue",
        vec![ok(&format!(
            "7|/scratch/u/runs/other\n11_[0-3]|/scratch/u/runs/{run_id}\n"
        ))],
    );
    let again = call(&mut host, workload()).unwrap();
    assert_eq!(sbatches(&host), 1);
    assert_eq!(again["jobId"], "11");
    assert!(
        host.calls
            .contains(&"exec squeue --me -h -t all -o %i|%Z".to_string())
    );
}

#[test]
fn an_interrupted_attempt_that_never_reached_slurm_is_submitted_in_the_same_run() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("11\n"), ok("12\n")]);
    let first = call(&mut host, workload()).unwrap();
    let run_id = first["runId"].as_str().unwrap().to_string();
    forget_the_job(&mut host, &run_id);
    // As if sbatch had never answered: nothing anywhere (the fake's own job
    // 11 is not in this run's directory).
    host.answer("ls", vec![fail(2, "No such file or directory")]);
    host.answer("squeue", vec![ok("")]);
    host.answer("sacct", vec![ok("")]);
    let again = call(&mut host, workload()).unwrap();
    assert_eq!(sbatches(&host), 2);
    assert_eq!(
        again["runId"],
        run_id.as_str(),
        "a new run instead of the same one"
    );
    assert_eq!(again["jobId"], "12");
}

#[test]
fn when_the_cluster_cannot_tell_nothing_is_submitted_again() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("11\n")]);
    let first = call(&mut host, workload()).unwrap();
    let run_id = first["runId"].as_str().unwrap().to_string();
    forget_the_job(&mut host, &run_id);
    host.answer("ls", vec![fail(2, "No such file or directory")]);
    host.answer("squeue", vec![ok("")]);
    host.answer(
        "sacct",
        vec![fail(
            1,
            "sacct: error: Slurm accounting storage is disabled",
        )],
    );
    // Long enough that the job could have left squeue already.
    host.clock += 5 * 60 * 1000;
    let e = call(&mut host, workload()).unwrap_err();
    assert!(
        matches!(&e, ToolError::RemoteFailed(m) if m.contains("nothing was submitted again") && m.contains("accounting storage is disabled")),
        "{e:?}"
    );
    assert_eq!(sbatches(&host), 1);
}

#[test]
fn after_the_retry_window_the_same_request_is_a_new_run() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("11\n"), ok("12\n")]);
    let first = call(&mut host, workload()).unwrap();
    host.clock += 11 * 60 * 1000;
    let later = call(&mut host, workload()).unwrap();
    assert_ne!(later["runId"], first["runId"]);
    assert_eq!(sbatches(&host), 2);
}

// ------------------------------------------- the exit-status marker of a job

/// A run whose job squeue has forgotten, on a cluster whose sacct fails.
fn forgotten_job(marker: ExecOutput) -> (FakeHost, Value) {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("77\n")]);
    let run = call(&mut host, workload()).unwrap();
    host.answer("squeue", vec![ok("")]);
    host.answer(
        "sacct",
        vec![fail(1, "sacct: error: Problem talking to the database")],
    );
    host.answer("head", vec![marker]);
    // A failed job's logs are read for GPU-required signatures.
    host.answer("tail", vec![ok("")]);
    let status = call(
        &mut host,
        json!({"action": "check_workload", "runId": run["runId"]}),
    )
    .unwrap();
    (host, status)
}

#[test]
fn the_job_scripts_marker_settles_a_job_squeue_and_sacct_cannot() {
    let (host, s) = forgotten_job(ok("0\n"));
    assert_eq!(
        (
            s["state"].as_str(),
            s["done"].as_bool(),
            s["exitCode"].as_i64()
        ),
        (Some("COMPLETED"), Some(true), Some(0)),
        "{s}"
    );
    assert_eq!(s["status"]["source"], "marker");
    let run_dir = s["runId"]
        .as_str()
        .map(|r| format!("/scratch/u/runs/{r}"))
        .unwrap();
    assert!(
        host.calls.contains(&format!(
            "exec head -c 16 -- {run_dir}/.cluster-slurm/exit-77"
        )),
        "{:?}",
        host.calls
    );

    let (_, s) = forgotten_job(ok("3\n"));
    assert_eq!(
        (s["state"].as_str(), s["exitCode"].as_i64()),
        (Some("FAILED"), Some(3)),
        "{s}"
    );
}

#[test]
fn without_sacct_or_marker_the_state_is_unknown_never_completed() {
    let (_, s) = forgotten_job(fail(1, "head: cannot open: No such file or directory"));
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("UNKNOWN"), Some(false)),
        "{s}"
    );
    assert!(
        s["status"]["sacctError"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{s}"
    );
    // A marker that is not a number says nothing either.
    let (_, s) = forgotten_job(ok("garbage"));
    assert_eq!(s["state"], "UNKNOWN");
}

/// check_workload of a submitted run, with these squeue and sacct answers.
fn status_with(squeue: ExecOutput, sacct: ExecOutput) -> Value {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("78\n")]);
    let run = call(&mut host, workload()).unwrap();
    host.answer("squeue", vec![squeue]);
    host.answer("sacct", vec![sacct]);
    host.answer("head", vec![fail(1, "head: cannot open: No such file")]);
    call(
        &mut host,
        json!({"action": "check_workload", "runId": run["runId"]}),
    )
    .unwrap()
}

#[test]
fn with_the_controller_down_status_comes_from_accounting_and_says_so() {
    let down = || {
        fail(
            1,
            "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
        )
    };
    let s = status_with(down(), ok("78|RUNNING|0:0|00:00:05||c1\n"));
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("RUNNING"), Some(false)),
        "{s}"
    );
    assert!(
        s["status"]["squeueError"]
            .as_str()
            .is_some_and(|e| e.contains("Unable to contact slurm controller")),
        "{s}"
    );
    // Neither knows it: it may well be running, so UNKNOWN, never NOT_FOUND.
    let s = status_with(down(), ok(""));
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("UNKNOWN"), Some(false)),
        "{s}"
    );
    // A purged job that squeue refuses and sacct does not know is NOT_FOUND.
    let s = status_with(
        fail(1, "slurm_load_jobs error: Invalid job id specified"),
        ok(""),
    );
    assert_eq!(s["state"], "NOT_FOUND", "{s}");
}

#[test]
fn with_accounting_down_a_finished_job_keeps_squeues_state_and_says_so() {
    let s = status_with(
        ok("78|COMPLETED|0:05|1:00:00|1|None\n"),
        fail(
            1,
            "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection to host:localhost:6819: Connection refused",
        ),
    );
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("COMPLETED"), Some(true)),
        "{s}"
    );
    assert!(
        s["status"]["sacctError"]
            .as_str()
            .is_some_and(|e| e.contains("6819")),
        "{s}"
    );
    // The exit code comes from the marker the script left (here: none).
    assert_eq!(s["exitCode"], Value::Null, "{s}");
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("79\n")]);
    let run = call(&mut host, workload()).unwrap();
    host.answer(
        "squeue",
        vec![ok("79|FAILED|0:05|1:00:00|1|(NonZeroExitCode)\n")],
    );
    host.answer(
        "sacct",
        vec![fail(1, "sacct: error: Problem talking to the database")],
    );
    host.answer("head", vec![ok("4\n")]);
    host.answer("tail", vec![ok("")]);
    let s = call(
        &mut host,
        json!({"action": "check_workload", "runId": run["runId"]}),
    )
    .unwrap();
    assert_eq!(
        (s["state"].as_str(), s["exitCode"].as_i64()),
        (Some("FAILED"), Some(4)),
        "{s}"
    );
    assert_eq!(s["status"]["exitCodeSource"], "marker", "{s}");
}

#[test]
fn every_script_leaves_its_exit_status_beside_the_job() {
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("5\n")]);
    let run = call(&mut host, workload()).unwrap();
    let script = String::from_utf8(
        host.files[&format!("{}/job.slurm", run["runId"].as_str().unwrap())].clone(),
    )
    .unwrap();
    assert!(
        script.contains("trap 'echo \"$?\" > \"$__cs_marks/exit-$__cs_job\""),
        "{script}"
    );
    assert!(
        script.contains("${SLURM_SUBMIT_DIR:-.}/.cluster-slurm"),
        "{script}"
    );
}

/// What touched the cluster: execs and transfers (not the run store).
fn cluster_calls(host: &FakeHost) -> Vec<&String> {
    host.calls
        .iter()
        .filter(|c| {
            c.starts_with("exec ") || c.starts_with("upload ") || c.starts_with("download ")
        })
        .collect()
}

/// The request digest `list_runs` shows for a held run (what the operator approves).
fn listed_key(host: &mut FakeHost, run_id: &str) -> String {
    let listed = call_with(host, &gated(), json!({"action": "list_runs"})).unwrap();
    let run = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["runId"] == run_id)
        .unwrap();
    run["approval"]["key"].as_str().unwrap().to_string()
}

fn gated() -> String {
    config_with(json!({"cpuPolicy": {"requireApprovalAbove": {"nodes": 2, "time": "04:00:00"}}}))
}

fn big_request() -> Value {
    json!({"action": "run_workload", "command": "python3 a.py", "localPaths": ["a.py"],
           "headerOverrides": {"nodes": 4, "time": "12:00:00"}})
}

#[test]
fn a_request_above_the_approval_limits_is_held_and_nothing_reaches_the_cluster() {
    let mut host = FakeHost::default();
    let held = call_with(&mut host, &gated(), big_request()).unwrap();
    assert_eq!(held["state"], "PENDING_APPROVAL", "{held}");
    assert_eq!(held["jobId"], Value::Null);
    let reasons = held["approval"]["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 2, "{held}");
    assert!(
        reasons[0].as_str().unwrap().starts_with("time 12:00:00"),
        "{held}"
    );
    assert!(
        reasons[1].as_str().unwrap().starts_with("4 nodes"),
        "{held}"
    );
    assert!(
        held["next"]
            .as_str()
            .unwrap()
            .contains("cluster-slurm approve")
    );
    assert!(cluster_calls(&host).is_empty(), "{:?}", host.calls);
    // The script is kept for the operator to read.
    let script = held["localScriptPath"].as_str().unwrap();
    let rel = script.strip_prefix(".openclaw/cluster-runs/").unwrap();
    let text = String::from_utf8(host.files[rel].clone()).unwrap();
    assert!(text.contains("#SBATCH --nodes=4"), "{text}");
    let run_id = held["runId"].as_str().unwrap().to_string();
    assert_eq!(
        host.ledger()["runs"][&run_id]["approval"]["state"],
        "pending"
    );

    // Asking again (a retry, or the agent insisting) queues nothing new.
    let again = call_with(&mut host, &gated(), big_request()).unwrap();
    assert_eq!(
        (again["runId"].as_str(), again["reused"].as_bool()),
        (Some(run_id.as_str()), Some(true))
    );
    let mut insist = big_request();
    insist["runId"] = json!(run_id);
    let insisted = call_with(&mut host, &gated(), insist).unwrap();
    assert_eq!(insisted["state"], "PENDING_APPROVAL");
    assert_eq!(host.ledger()["runs"].as_object().unwrap().len(), 1);
    assert!(cluster_calls(&host).is_empty(), "{:?}", host.calls);

    // A request within the limits is submitted as usual.
    host.answer("sbatch", vec![ok("11\n")]);
    let small = call_with(&mut host, &gated(), workload()).unwrap();
    assert_eq!(small["jobId"], "11", "{small}");
}

#[test]
fn check_workload_reports_the_operators_decision_and_submits_once_approved() {
    let mut host = FakeHost::default();
    let held = call_with(&mut host, &gated(), big_request()).unwrap();
    let run_id = held["runId"].as_str().unwrap().to_string();
    let check = |host: &mut FakeHost| {
        call_with(
            host,
            &gated(),
            json!({"action": "check_workload", "runId": run_id}),
        )
        .unwrap()
    };
    let s = check(&mut host);
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("PENDING_APPROVAL"), Some(false)),
        "{s}"
    );
    assert!(host.calls.contains(&format!("approval {run_id}")));
    assert!(cluster_calls(&host).is_empty(), "{:?}", host.calls);

    let key = listed_key(&mut host, &run_id);
    host.decisions.insert(
        run_id.clone(),
        Decision {
            approved: true,
            by: "ops".into(),
            at_ms: 1_771_426_900_000,
            note: "ok for the paper".into(),
            key,
        },
    );
    host.answer("sbatch", vec![ok("77\n")]);
    let s = check(&mut host);
    assert_eq!(
        (s["state"].as_str(), s["jobId"].as_str()),
        (Some("SUBMITTED"), Some("77")),
        "{s}"
    );
    assert_eq!(s["approval"]["decidedBy"], "ops");
    assert_eq!(s["approval"]["note"], "ok for the paper");
    assert!(
        host.calls.iter().any(|c| c.starts_with("exec sbatch")),
        "{:?}",
        host.calls
    );
    let run = &host.ledger()["runs"][&run_id];
    assert_eq!(
        (run["approval"]["state"].as_str(), run["lastJobId"].as_str()),
        (Some("approved"), Some("77"))
    );
    // From now on it is an ordinary run: status from squeue, no second job.
    host.answer("squeue", vec![ok("77|RUNNING|0:05|12:00:00|4|c[1-4]\n")]);
    let s = check(&mut host);
    assert_eq!(s["state"], "RUNNING", "{s}");
    assert_eq!(
        host.calls
            .iter()
            .filter(|c| c.starts_with("exec sbatch"))
            .count(),
        1
    );
    // The same request again is that run, not a new one.
    let again = call_with(&mut host, &gated(), big_request()).unwrap();
    assert_eq!(
        (again["runId"].as_str(), again["reused"].as_bool()),
        (Some(run_id.as_str()), Some(true)),
        "{again}"
    );
}

#[test]
fn a_rejected_request_is_done_and_never_submitted() {
    let mut host = FakeHost::default();
    let held = call_with(&mut host, &gated(), big_request()).unwrap();
    let run_id = held["runId"].as_str().unwrap().to_string();
    host.decisions.insert(
        run_id.clone(),
        Decision {
            approved: false,
            by: "ops".into(),
            at_ms: 1_771_426_900_000,
            note: String::new(),
            key: String::new(),
        },
    );
    for _ in 0..2 {
        let s = call_with(
            &mut host,
            &gated(),
            json!({"action": "check_workload", "runId": run_id}),
        )
        .unwrap();
        assert_eq!(
            (s["state"].as_str(), s["done"].as_bool()),
            (Some("REJECTED"), Some(true)),
            "{s}"
        );
        assert_eq!(s["approval"]["note"], Value::Null);
    }
    // The decision was read once and kept in the ledger.
    assert_eq!(
        host.calls
            .iter()
            .filter(|c| c.starts_with("approval "))
            .count(),
        1
    );
    assert_eq!(
        host.ledger()["runs"][&run_id]["approval"]["state"],
        "rejected"
    );
    assert!(cluster_calls(&host).is_empty(), "{:?}", host.calls);
    let listed = call_with(&mut host, &gated(), json!({"action": "list_runs"})).unwrap();
    assert_eq!(
        listed["runs"][0]["approval"]["state"], "rejected",
        "{listed}"
    );
}

#[test]
fn the_gate_cannot_be_skipped_by_the_agent() {
    let mut host = FakeHost::default();
    // No parameter approves anything.
    let mut sneaky = big_request();
    sneaky["approved"] = json!(true);
    assert!(matches!(
        call_with(&mut host, &gated(), sneaky),
        Err(ToolError::InvalidRequest(_))
    ));
    // A script of its own could ask for anything: refused on gated profiles.
    let e = call_with(
        &mut host,
        &gated(),
        json!({"action": "submit_job", "scriptPath": "job.slurm"}),
    )
    .unwrap_err();
    assert!(matches!(e, ToolError::Policy(_)), "{e:?}");
    assert!(cluster_calls(&host).is_empty(), "{:?}", host.calls);
}

#[test]
fn an_approval_covers_its_request_only() {
    let mut host = FakeHost::default();
    let held = call_with(&mut host, &gated(), big_request()).unwrap();
    let run_id = held["runId"].as_str().unwrap().to_string();
    let listed = call_with(&mut host, &gated(), json!({"action": "list_runs"})).unwrap();
    assert_eq!(
        listed["runs"][0]["approval"]["request"]["headerOverrides"]["nodes"], 4,
        "{listed}"
    );
    let key = listed_key(&mut host, &run_id);
    host.decisions.insert(
        run_id.clone(),
        Decision {
            approved: true,
            by: "ops".into(),
            at_ms: 1,
            note: String::new(),
            key,
        },
    );
    // Before the agent's next check, the held request is swapped in the
    // ledger (the agent can write the workspace): the decision does not cover it.
    let mut ledger = host.ledger();
    ledger["runs"][&run_id]["approval"]["request"]["headerOverrides"]["nodes"] = json!(64);
    host.files
        .insert("runs.json".into(), serde_json::to_vec(&ledger).unwrap());
    let s = call_with(
        &mut host,
        &gated(),
        json!({"action": "check_workload", "runId": run_id}),
    )
    .unwrap();
    assert_eq!(
        (s["state"].as_str(), s["done"].as_bool()),
        (Some("REJECTED"), Some(true)),
        "{s}"
    );
    assert!(
        s["approval"]["note"]
            .as_str()
            .unwrap()
            .contains("another request"),
        "{s}"
    );
    assert!(cluster_calls(&host).is_empty(), "{:?}", host.calls);
    // Nor does an approved run take another request.
    let mut bigger = big_request();
    bigger["runId"] = json!(run_id);
    bigger["headerOverrides"]["nodes"] = json!(8);
    let e = call_with(&mut host, &gated(), bigger).unwrap_err();
    assert!(
        matches!(&e, ToolError::InvalidRequest(m) if m.contains("new run")),
        "{e:?}"
    );
    assert!(cluster_calls(&host).is_empty(), "{:?}", host.calls);
}

#[test]
fn a_ledger_that_claims_approval_is_not_believed() {
    let mut host = FakeHost::default();
    let held = call_with(&mut host, &gated(), big_request()).unwrap();
    let run_id = held["runId"].as_str().unwrap().to_string();
    // The ledger says "approved"; the operator said nothing.
    let mut ledger = host.ledger();
    ledger["runs"][&run_id]["approval"]["state"] = json!("approved");
    host.files
        .insert("runs.json".into(), serde_json::to_vec(&ledger).unwrap());
    let s = call_with(
        &mut host,
        &gated(),
        json!({"action": "check_workload", "runId": run_id}),
    )
    .unwrap();
    assert_eq!(s["state"], "PENDING_APPROVAL", "{s}");
    let mut again = big_request();
    again["runId"] = json!(run_id);
    let e = call_with(&mut host, &gated(), again);
    assert!(
        matches!(&e, Err(ToolError::InvalidRequest(m))
            if m.contains("already holds this request") && m.contains("approved")),
        "{e:?}"
    );
    assert!(cluster_calls(&host).is_empty(), "{:?}", host.calls);
}

#[test]
fn an_input_may_not_take_the_job_scripts_place() {
    let mut host = FakeHost::default();
    let e = call(
        &mut host,
        json!({"action": "run_workload", "command": "bash job.slurm", "localPaths": ["job.slurm"]}),
    )
    .unwrap_err();
    assert!(
        matches!(&e, ToolError::InvalidRequest(m) if m.contains("job script")),
        "{e:?}"
    );
    assert!(cluster_calls(&host).is_empty(), "{:?}", host.calls);
    // Refused before anything was recorded: no run, nothing to reconcile.
    assert!(
        !host.files.contains_key("runs.json")
            || host.ledger()["runs"]
                .as_object()
                .is_none_or(|r| r.is_empty()),
        "{}",
        host.ledger()
    );
}

#[test]
fn submit_arguments_may_not_move_the_job_out_of_its_run_directory() {
    for moved in [
        "--chdir=/tmp",
        "-D",
        "-D/tmp",
        "--chdir",
        "--chd=/tmp",
        "-vD/tmp",
        "-HvD",
    ] {
        let mut host = FakeHost::default();
        let mut args = vec![moved.to_string()];
        if moved == "-D" || moved == "--chdir" || moved == "-HvD" {
            args.push("/tmp".to_string());
        }
        let e = call(
            &mut host,
            json!({"action": "run_workload", "command": "true", "submitArgs": args}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ToolError::Policy(m) if m.contains("run directory")),
            "{moved}: {e:?}"
        );
        assert!(
            !host.calls.iter().any(|c| c.starts_with("exec sbatch")),
            "{:?}",
            host.calls
        );
    }
    // A value that merely contains D or "ch" moves nothing.
    let mut host = FakeHost::default();
    host.answer("sbatch", vec![ok("77\n")]);
    let r = call(
        &mut host,
        json!({"action": "run_workload", "command": "true", "submitArgs": ["-JD", "--comment=chdir"]}),
    )
    .unwrap();
    assert_eq!(r["jobId"], "77", "{r}");
}
