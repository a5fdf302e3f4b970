//! Random and hostile input for the whole guest — request parsing, config
//! validation, routing, policy, rendering, status parsing — through
//! `invoke`, against a fake host that says yes to everything. Properties:
//!
//! 1. no input panics (a panic fails the test; in wasm it would be a trap);
//! 2. every injection attempt in every header field, path and name is either
//!    refused with a message or rendered harmlessly: no directive line is
//!    added, no value escapes its quoting, and the script passes `bash -n`.
//!
//! `FUZZ_ITERATIONS` sets the number of random cases (default 50,000; `just
//! fuzz` runs 2,000,000). The generator is seeded, so a failure names the
//! case that reproduces it (`FUZZ_SEED`).

use crate::actions::invoke;
use crate::header::FIELDS;
use crate::host::ToolError;
use crate::request::ACTIONS;
use crate::script::tests::bash_n;
use crate::tests::{FakeHost, ok};
use serde_json::{Map, Value, json};

/// xorshift64*: small, seeded, good enough to spread inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What attackers and accidents put into strings.
const NASTY: &[&str] = &[
    "",
    " ",
    "x\n#SBATCH --wrap=rm -rf ~",
    "x\r\nmodule load evil",
    "$(rm -rf ~)",
    "`id`",
    "'; rm -rf ~; echo '",
    "\"; rm -rf ~; echo \"",
    "a;b|c&d>e<f",
    "../../../etc/passwd",
    "/etc/passwd",
    "~root/.ssh/id_rsa",
    "-oProxyCommand=sh",
    "--wrap=id",
    "%j%x%A%a%u",
    "{{ 7*7 }}",
    "{% for x in range(99999999) %}{% endfor %}",
    "\u{0}",
    "\u{7f}\u{85}\u{2028}",
    "é😀",
    "UNLIMITED",
    "0-99999999%1",
    "afterok:1:2:3",
    "4G",
    "00:10:00",
    "gpu",
    "python3 train.py --device cuda",
];

fn nasty_string(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => "x".repeat(rng.below(70_000)),
        1 => (0..rng.below(40))
            .map(|_| char::from_u32(rng.below(0x3000) as u32).unwrap_or('?'))
            .collect(),
        _ => rng.pick(NASTY).to_string(),
    }
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 2 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next() as i64),
        3 => json!(*rng.pick(&[0i64, 1, -1, 2, 1000, 100_000_000, i64::MAX, i64::MIN])),
        4 => json!(*rng.pick(&[0.5f64, -1.5, 1e300, 3.0])),
        5 => json!(nasty_string(rng)),
        6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                let key = if rng.below(2) == 0 {
                    rng.pick(FIELDS).to_string()
                } else {
                    nasty_string(rng)
                };
                m.insert(key, random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

const PARAMS: &[&str] = &[
    "cluster",
    "runId",
    "runIds",
    "jobId",
    "jobIds",
    "prefix",
    "command",
    "commands",
    "workload",
    "localPath",
    "localPaths",
    "remotePath",
    "remoteDir",
    "scriptName",
    "scriptPath",
    "env",
    "headerOverrides",
    "setupCommands",
    "modules",
    "allowEnvOverrides",
    "autoFallbackToGpu",
    "includeAccounting",
    "tail",
    "offset",
    "maxBytes",
    "dryRun",
    "newRun",
    "preset",
    "presetParams",
    "limit",
];

fn config() -> Value {
    json!({
        "defaultCluster": "cpu",
        "routing": {"defaultProfile": "cpu", "gpuProfile": "gpu"},
        "clusters": {
            "cpu": {"sshTarget": "login", "remoteRoot": "/scratch/u/runs",
                    "slurmDefaults": {"partition": "cpu", "time": "01:00:00", "output": "slurm-%j.out"},
                    "policy": {"maxArraySize": 100, "maxTime": "04:00:00"}},
            "gpu": {"sshTarget": "login", "remoteRoot": "~/runs",
                    "slurmDefaults": {"partition": "gpu", "gpusPerNode": 1}}
        },
        "presets": {"sweep": {"role": "gpu", "command": "python3 t.py --lr {{ lr }}",
                              "parameters": {"lr": {"pattern": "^[0-9.]+$", "default": "0.1"}}}}
    })
}

/// The guest tests' fake host, answering every allowlisted program with
/// output shaped like SLURM's (and still checking the ledger's locking).
fn yes() -> FakeHost {
    let mut host = FakeHost::default();
    for (program, stdout) in [
        ("sbatch", "4242\n"),
        ("squeue", "4242|RUNNING|1:00|10:00|1|c1\n"),
        (
            "sacct",
            "4242|FAILED|1:0|00:01:00|1K|c1\n4242.batch|FAILED|1:0|00:01:00|1K|c1\n",
        ),
        (
            "tail",
            "Traceback\nModuleNotFoundError: No module named 'cv2'\n",
        ),
        ("head", "0\n"),
        ("ls", "job-4242\n"),
        ("mkdir", ""),
        ("scancel", ""),
        ("scontrol", ""),
        ("sinfo", ""),
        ("stat", ""),
        ("sha256sum", ""),
    ] {
        host.answer(program, vec![ok(stdout)]);
    }
    host
}

fn iterations() -> u64 {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
}

/// A random request: a real action with random parameters, or (rarely)
/// anything at all.
fn random_request(rng: &mut Rng) -> Value {
    if rng.below(20) == 0 {
        return random_value(rng, 0);
    }
    let mut m = Map::new();
    m.insert("action".into(), json!(rng.pick(ACTIONS)));
    for _ in 0..rng.below(6) {
        m.insert(rng.pick(PARAMS).to_string(), random_value(rng, 1));
    }
    Value::Object(m)
}

/// A config with one random change somewhere.
fn random_config(rng: &mut Rng) -> Value {
    let mut c = config();
    let spots: &[&[&str]] = &[
        &["defaultCluster"],
        &["localRunsDir"],
        &["routing", "gpuIndicators"],
        &["routing", "gpuProfile"],
        &["clusters", "cpu", "remoteRoot"],
        &["clusters", "cpu", "sshTarget"],
        &["clusters", "cpu", "setupCommands"],
        &["clusters", "cpu", "moduleInitScripts"],
        &["clusters", "cpu", "policy"],
        &["clusters", "gpu", "slurmDefaults"],
        &["presets", "sweep", "parameters"],
        &["execution"],
    ];
    let path = rng.pick(spots);
    let mut slot = &mut c;
    for key in *path {
        slot = &mut slot[*key];
    }
    *slot = if rng.below(2) == 0 {
        random_value(rng, 1)
    } else {
        json!(nasty_string(rng))
    };
    c
}

#[test]
fn random_requests_and_configs_never_panic() {
    let mut rng = Rng(seed());
    let good = config().to_string();
    let mut answered = [0u64; 2];
    for i in 0..iterations() {
        let mut host = yes();
        let (cfg, request) = if i % 4 == 0 {
            (
                random_config(&mut rng).to_string(),
                json!({"action": "list_clusters"}),
            )
        } else {
            (good.clone(), random_request(&mut rng))
        };
        // Two calls on one host: the second sees the first one's ledger.
        for _ in 0..2 {
            let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                invoke(&mut host, &cfg, &request.to_string()).is_ok()
            }));
            let Ok(ok) = call else {
                panic!(
                    "case {i} (FUZZ_SEED={}) panicked:\nconfig {cfg}\nrequest {request}",
                    seed()
                );
            };
            answered[usize::from(ok)] += 1;
        }
    }
    // Both outcomes occur: the generator reaches past the first check.
    assert!(answered[0] > 0 && answered[1] > 0, "{answered:?}");
    eprintln!(
        "fuzz: {} calls, {} refused, {} answered",
        answered[0] + answered[1],
        answered[0],
        answered[1]
    );
}

/// Each injection string in each header field, env value, command, module
/// and path of a dry-run `run_workload`: refused, or rendered harmlessly.
#[test]
fn injections_are_refused_or_rendered_harmlessly() {
    let cfg = json!({
        "defaultCluster": "cpu",
        "execution": {"allowCustomEnvOverride": true},
        "clusters": {"cpu": {"sshTarget": "login", "remoteRoot": "/scratch/u/runs",
                             "slurmDefaults": {"partition": "cpu"}}}
    })
    .to_string();
    let baseline = {
        let mut host = yes();
        let r = invoke(
            &mut host,
            &cfg,
            &json!({"action": "run_workload", "command": "true", "dryRun": true}).to_string(),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&r).unwrap();
        v["script"]
            .as_str()
            .unwrap()
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with('#'))
            .filter(|l| l.starts_with("#SBATCH"))
            .count()
    };
    let mut refused = 0;
    let mut rendered = 0;
    for nasty in NASTY.iter().copied().filter(|n| !n.is_empty()) {
        let mut cases: Vec<Value> = FIELDS
            .iter()
            .map(|f| json!({"command": "true", "headerOverrides": {*f: nasty}}))
            .collect();
        cases.push(json!({"command": nasty}));
        cases.push(json!({"command": "true", "env": {"X": nasty}}));
        cases.push(json!({"command": "true", "env": {nasty: "1"}}));
        cases.push(json!({"command": "true", "localPaths": [nasty]}));
        cases.push(json!({"command": "true", "scriptName": nasty}));
        cases.push(json!({"command": "true", "remoteDir": nasty}));
        cases.push(json!({"command": "true", "setupCommands": ["true"], "modules": [nasty], "allowEnvOverrides": true}));
        cases.push(json!({"command": "true", "submitArgs": [nasty]}));
        for mut case in cases {
            case["action"] = json!("run_workload");
            case["dryRun"] = json!(true);
            let mut host = yes();
            match invoke(&mut host, &cfg, &case.to_string()) {
                Err(
                    ToolError::InvalidRequest(m)
                    | ToolError::Policy(m)
                    | ToolError::InvalidConfig(m),
                ) => {
                    assert!(m.len() > 10, "{case}: refusal without a message");
                    refused += 1;
                }
                Err(e) => panic!("{case}: unexpected {e:?}"),
                Ok(text) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let script = v["script"].as_str().unwrap();
                    // sbatch reads directives up to the first command line;
                    // later `#SBATCH` lines are plain comments.
                    let directives: Vec<&str> = script
                        .lines()
                        .take_while(|l| l.is_empty() || l.starts_with('#'))
                        .filter(|l| l.starts_with("#SBATCH"))
                        .collect();
                    // A header value adds at most its own directive, never one of its making.
                    assert!(directives.len() <= baseline + 1, "{case}:\n{script}");
                    assert!(
                        !directives.iter().any(|d| d.contains("--wrap")),
                        "{case}:\n{script}"
                    );
                    // The command is the user's own shell code, valid or not;
                    // everything else the renderer quotes must stay valid.
                    if case["command"] == "true" {
                        let (ok, why) = bash_n(script);
                        assert!(ok, "{case}: bash -n fails ({why}):\n{script}");
                    }
                    // A value outside the command itself stays quoted.
                    if case.get("env").is_some() || case.get("modules").is_some() {
                        assert!(
                            !script.lines().any(|l| l.trim_start().starts_with("rm ")),
                            "{case}:\n{script}"
                        );
                    }
                    rendered += 1;
                }
            }
        }
    }
    assert!(
        refused > 100 && rendered > 10,
        "refused {refused}, rendered {rendered}"
    );
    eprintln!("injections: {refused} refused, {rendered} rendered harmlessly");
}
