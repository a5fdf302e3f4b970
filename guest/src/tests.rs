//! The guest's action flow against a fake host: what it asks the host to do,
//! in which order, and what it reports back. Real SSH and SLURM are covered
//! by the end-to-end tests in `tests/`.

use crate::actions::invoke;
use crate::host::{ExecOutput, ExecRequest, Host, HostError, ToolError, TransferStats};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Default)]
struct FakeHost {
    files: BTreeMap<String, Vec<u8>>,
    calls: Vec<String>,
    execs: Vec<ExecRequest>,
    /// Answers by program name, used in order; the last one repeats.
    answers: BTreeMap<String, Vec<ExecOutput>>,
    upload_error: Option<HostError>,
    clock: u64,
}

fn ok(stdout: &str) -> ExecOutput {
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
    fn answer(&mut self, program: &str, outputs: Vec<ExecOutput>) {
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
        self.files.insert(path.to_string(), contents.to_vec());
        Ok(())
    }
    fn store_location(&mut self) -> String {
        ".openclaw/cluster-runs".to_string()
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

fn call(host: &mut FakeHost, request: Value) -> Result<Value, ToolError> {
    invoke(host, &config(), &request.to_string()).map(|s| serde_json::from_str(&s).unwrap())
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
    // Inputs keep their workspace-relative layout; the script goes last.
    assert_eq!(
        host.calls,
        vec![
            format!("upload cpu analyse.py -> {dir}/analyse.py"),
            format!("upload cpu data/in.csv -> {dir}/data/in.csv"),
            format!("upload cpu .openclaw/cluster-runs/{run_id}/job.slurm -> {dir}/job.slurm"),
            "exec sbatch --parsable job.slurm".to_string(),
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
