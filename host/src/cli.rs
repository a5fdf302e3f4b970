//! The `cluster-slurm` command line: the native host for the
//! `cluster_slurm` policy component (`src/main.rs` is just [`main`]).
//!
//! ```text
//! cluster-slurm --config cluster-slurm.json call list_clusters
//! cluster-slurm --config cluster-slurm.json call run_workload '{"command": "python3 job.py", "localPath": "job.py"}'
//! ```

use crate::grants::Grants;
use crate::mcp::tool_error_text;
use crate::operator::OperatorConfig;
use crate::transport::SshTransport;
use crate::{approvals, audit, mcp, runtime};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Write a line to stdout; a reader that went away (`| head`) ends the
/// program quietly instead of panicking as `println!` would.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, $($arg)*).and_then(|()| stdout.flush()).is_err() {
            std::process::exit(0);
        }
    }};
}

static EMBEDDED_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.wasm"));

#[derive(Parser)]
#[command(
    name = "cluster-slurm",
    version,
    about = "Run SLURM jobs on configured clusters over SSH, with all policy in a sandboxed wasm component"
)]
struct Cli {
    /// Operator config: the plugin config plus an optional `host` section.
    #[arg(long, global = true, env = "CLUSTER_SLURM_CONFIG")]
    config: Option<PathBuf>,
    /// Workspace directory for local paths and the run ledger
    /// (default: the config's host.workspace, else the current directory).
    #[arg(long, global = true)]
    workspace: Option<PathBuf>,
    /// Guest component to load instead of the embedded one.
    #[arg(long, global = true, env = "CLUSTER_SLURM_GUEST")]
    guest: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one tool action through the guest and print its JSON result.
    Call {
        /// e.g. list_clusters, run_workload, check_workload
        action: String,
        /// The other parameters as a JSON object; "-" reads them from stdin.
        params: Option<String>,
    },
    /// Poll check_workload until the job is done, showing each state change
    /// on stderr; prints the final status JSON. Exit 0 only for COMPLETED.
    Wait {
        /// Run id from run_workload.
        run_id: String,
        /// Give up after this many seconds (exit 4).
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// Serve the tool over MCP on stdin/stdout (one warm process for a whole
    /// agent session).
    Mcp,
    /// Print the tool's name, description and parameter schema.
    Describe,
    /// Validate the config through the guest and print it with defaults filled in.
    CheckConfig,
    /// List the runs of this workspace that wait for an operator's approval.
    Approvals {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held run: the agent's next check_workload submits it.
    Approve {
        run_id: String,
        /// Why (kept with the decision, shown to the agent).
        #[arg(long, default_value = "")]
        note: String,
        /// The request's key as `approvals` listed it: refused if the held
        /// request changed since (the agent can edit its ledger).
        #[arg(long)]
        key: Option<String>,
    },
    /// Reject a held run: it is never submitted.
    Reject {
        run_id: String,
        #[arg(long, default_value = "")]
        note: String,
        /// As for approve.
        #[arg(long)]
        key: Option<String>,
    },
    /// Show what the guest imports and exports and what this host grants it.
    Audit {
        /// A guest component to audit instead of the embedded one (same as --guest).
        guest_file: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

struct Loaded {
    audit_path: Option<PathBuf>,
    approvals: Arc<approvals::ApprovalBook>,
    runtime: Arc<runtime::Runtime>,
    plugin_json: String,
    grants: Arc<Grants>,
    guest_source: String,
}

fn load(cli: &Cli) -> Result<Loaded> {
    let operator = match &cli.config {
        Some(path) => OperatorConfig::load(path)?,
        None => OperatorConfig::from_value(json!({}), &PathBuf::new())?,
    };
    let workspace = match (&cli.workspace, &operator.workspace) {
        (Some(w), _) | (None, Some(w)) => w.clone(),
        (None, None) => std::env::current_dir().context("current directory")?,
    };
    let audit_path = match std::env::var_os("CLUSTER_SLURM_AUDIT_LOG") {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => match &operator.audit_log {
            Some(choice) => choice.clone(),
            None => audit::default_path(),
        },
    };
    let approvals_path = match std::env::var_os("CLUSTER_SLURM_APPROVALS") {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => operator.approvals.clone().or_else(approvals::default_path),
    };
    let mut grants = Grants::from_config(&operator.plugin, &workspace).context("config")?;
    // A download must not be able to overwrite the record of what the guest
    // did, nor the operators' decisions.
    for path in audit_path.iter().chain(approvals_path.iter()) {
        grants.protect(path);
    }
    let grants = Arc::new(grants);
    let guest = match &cli.command {
        Command::Audit {
            guest_file: Some(path),
            ..
        } => Some(path),
        _ => cli.guest.as_ref(),
    };
    let (wasm, guest_source) = match guest {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("reading guest {}", path.display()))?,
            path.display().to_string(),
        ),
        None if EMBEDDED_GUEST.is_empty() => {
            bail!(
                "this binary was built without an embedded guest; build it with `just build`, or pass --guest PATH"
            )
        }
        None => (EMBEDDED_GUEST.to_vec(), "embedded".to_string()),
    };
    let mut transport = SshTransport::new(operator.ssh_config.clone());
    if let Some(n) = operator.connections_per_minute {
        transport = transport.with_connection_budget(n);
    }
    if let Some(bytes) = operator.max_download_bytes {
        transport = transport.with_download_cap(bytes);
    }
    let transport = Arc::new(transport);
    let audit = Arc::new(match &audit_path {
        Some(path) => audit::AuditLog::at(path),
        None => audit::AuditLog::off(),
    });
    let approvals = Arc::new(match &approvals_path {
        Some(path) => approvals::ApprovalBook::at(path),
        None => approvals::ApprovalBook::none(),
    });
    let runtime = Arc::new(
        runtime::Runtime::new(&wasm, grants.clone(), transport)?
            .with_audit(audit)
            .with_approvals(approvals.clone()),
    );
    Ok(Loaded {
        audit_path,
        approvals,
        runtime,
        plugin_json: operator.plugin.to_string(),
        grants,
        guest_source,
    })
}

fn request_json(action: &str, params: Option<&str>) -> Result<String> {
    let text = match params {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading parameters from stdin")?;
            s
        }
        Some(s) => s.to_string(),
        None => "{}".to_string(),
    };
    let mut value: Value =
        serde_json::from_str(&text).context("parameters must be a JSON object")?;
    let Value::Object(map) = &mut value else {
        bail!("parameters must be a JSON object, e.g. '{{\"runId\": \"...\"}}'");
    };
    if let Some(other) = map.get("action").and_then(Value::as_str)
        && other != action
    {
        bail!("parameters say action {other:?} but the command line says {action:?}");
    }
    map.insert("action".to_string(), json!(action));
    Ok(value.to_string())
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let loaded = load(&cli)?;
    match &cli.command {
        Command::Call { action, params } => {
            let request = request_json(action, params.as_deref())?;
            match loaded.runtime.invoke(&loaded.plugin_json, &request).await? {
                Ok(result) => {
                    out!("{result}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("cluster-slurm: {action} failed: {}", tool_error_text(&e));
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Wait { run_id, timeout } => {
            let request = json!({"action": "check_workload", "runId": run_id}).to_string();
            let started = std::time::Instant::now();
            let mut delay = std::time::Duration::from_millis(500);
            let mut last_state = String::new();
            loop {
                let status = match loaded.runtime.invoke(&loaded.plugin_json, &request).await? {
                    Ok(text) => serde_json::from_str::<Value>(&text)
                        .context("guest returned invalid JSON")?,
                    Err(e) => {
                        eprintln!("cluster-slurm: wait failed: {}", tool_error_text(&e));
                        return Ok(ExitCode::from(1));
                    }
                };
                let state = status
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN")
                    .to_string();
                if state != last_state {
                    let job = status.get("jobId").and_then(Value::as_str).unwrap_or("?");
                    let cluster = status.get("cluster").and_then(Value::as_str).unwrap_or("?");
                    eprintln!(
                        "[{:>5.1}s] job {job} on {cluster}: {state}",
                        started.elapsed().as_secs_f64()
                    );
                    last_state = state.clone();
                }
                if status.get("done").and_then(Value::as_bool) == Some(true) {
                    out!("{}", serde_json::to_string_pretty(&status)?);
                    return Ok(if state == "COMPLETED" {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    });
                }
                if started.elapsed() >= std::time::Duration::from_secs(*timeout) {
                    eprintln!("cluster-slurm: job not done after {timeout}s (last state {state})");
                    out!("{}", serde_json::to_string_pretty(&status)?);
                    return Ok(ExitCode::from(4));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 3 / 2).min(std::time::Duration::from_secs(10));
            }
        }
        Command::Mcp => {
            let server =
                mcp::McpServer::new(loaded.runtime.clone(), loaded.plugin_json.clone()).await?;
            server.serve_stdio().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Describe => {
            let d = loaded.runtime.describe().await?;
            let schema: Value = serde_json::from_str(&d.parameters_schema)
                .context("guest returned an invalid schema")?;
            let out = json!({"name": d.name, "label": d.label, "description": d.description, "parameters": schema});
            out!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => match loaded.runtime.check_config(&loaded.plugin_json).await? {
            Ok(normalised) => {
                out!("{normalised}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("cluster-slurm: {}", tool_error_text(&e));
                Ok(ExitCode::from(1))
            }
        },
        Command::Approvals { json: as_json } => {
            let pending = held_runs(&loaded, "pending").await?;
            if *as_json {
                out!("{}", serde_json::to_string_pretty(&pending)?);
            } else if pending.is_empty() {
                out!(
                    "no run waits for approval in {}",
                    loaded.grants.workspace.display()
                );
            } else {
                for run in &pending {
                    out!(
                        "{}  on {}  requested {}",
                        run.get("runId").and_then(Value::as_str).unwrap_or_default(),
                        run.get("clusterId")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                        run.pointer("/approval/requestedAt")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    );
                    for reason in run
                        .pointer("/approval/reasons")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        out!(
                            "    above the limit: {}",
                            reason.as_str().unwrap_or_default()
                        );
                    }
                    // Exactly what approving submits, and its key.
                    out!(
                        "    request: {}",
                        run.pointer("/approval/request")
                            .cloned()
                            .unwrap_or_default()
                    );
                    out!(
                        "    key: {}",
                        run.pointer("/approval/key")
                            .and_then(Value::as_str)
                            .unwrap_or("(unreadable)")
                    );
                }
                out!(
                    "decide with: cluster-slurm approve|reject RUN_ID --key KEY [--note TEXT] (the key makes sure the request is still the one shown)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve {
            run_id,
            note,
            key: seen,
        }
        | Command::Reject {
            run_id,
            note,
            key: seen,
        } => {
            let approve = matches!(cli.command, Command::Approve { .. });
            let pending = held_runs(&loaded, "pending").await?;
            let Some(run) = pending
                .iter()
                .find(|r| r.get("runId").and_then(Value::as_str) == Some(run_id.as_str()))
            else {
                bail!(
                    "run {run_id} does not wait for approval in {} (`cluster-slurm approvals` lists those that do)",
                    loaded.grants.workspace.display()
                );
            };
            let by = std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "operator".to_string());
            // The digest of the request as the guest reads it now: the
            // decision covers exactly what the listing showed.
            let key = run
                .pointer("/approval/key")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "run {run_id}: its held request is unreadable ({})",
                        run.pointer("/approval/unreadable")
                            .and_then(Value::as_str)
                            .unwrap_or("no digest")
                    )
                })?;
            if let Some(seen) = seen
                && seen != key
            {
                bail!(
                    "run {run_id}: the held request changed since it was listed (key {key}, you saw {seen}); list it again with `cluster-slurm approvals` and decide on what it holds now"
                );
            }
            let entry = loaded
                .approvals
                .decide(&loaded.grants.workspace, run_id, key, approve, &by, note)
                .map_err(|e| anyhow::anyhow!("{}", crate::bindings::host_error_parts(&e).1))?;
            out!(
                "{} run {run_id} on {} ({}). {}",
                entry.decision,
                run.get("clusterId")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                run.pointer("/approval/reasons")
                    .and_then(Value::as_array)
                    .map(|r| r
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; "))
                    .unwrap_or_default(),
                if approve {
                    "The agent's next check_workload of this run submits it."
                } else {
                    "It will not be submitted."
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { json: as_json, .. } => {
            let found = loaded.runtime.interfaces();
            let forbidden = runtime::forbidden_imports(&found.imports);
            // What the guest's policy adds per profile (fields agents may
            // override, limits), as the guest itself reads the config.
            let normalised: Value = match loaded.runtime.check_config(&loaded.plugin_json).await? {
                Ok(text) => serde_json::from_str(&text).context("guest returned invalid JSON")?,
                Err(e) => bail!("the config is invalid: {}", tool_error_text(&e)),
            };
            let profiles: Vec<Value> = loaded
                .grants
                .profiles
                .values()
                .map(|p| {
                    json!({
                        "profile": p.label, "sshTarget": p.ssh_target, "remoteRoot": p.remote_root,
                        "policy": normalised.pointer(&format!("/clusters/{}/policy", p.label.replace('~', "~0").replace('/', "~1"))),
                    })
                })
                .collect();
            let report = json!({
                "guest": loaded.guest_source,
                "imports": found.imports,
                "exports": found.exports,
                "forbiddenImports": forbidden,
                "allowedImportPrefixes": runtime::ALLOWED_IMPORT_PREFIXES,
                "workspace": loaded.grants.workspace,
                "runStore": loaded.grants.runs_dir_display,
                "programs": loaded.grants.programs,
                "profiles": profiles,
                "limits": {"fuelPerCall": runtime::FUEL_PER_CALL, "memoryBytes": runtime::MEMORY_PER_CALL, "resultBytes": runtime::MAX_RESULT},
                "auditLog": loaded.audit_path,
                "approvals": loaded.approvals.path(),
            });
            if *as_json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("guest: {}", loaded.guest_source);
                out!("imports:");
                for i in &found.imports {
                    out!("  {i}");
                }
                out!("exports:");
                for e in &found.exports {
                    out!("  {e}");
                }
                out!(
                    "filesystem/socket/http imports: none (only {} are accepted)",
                    runtime::ALLOWED_IMPORT_PREFIXES.join(" ")
                );
                out!(
                    "workspace: {} (run store: {})",
                    loaded.grants.workspace.display(),
                    loaded.grants.runs_dir_display
                );
                out!(
                    "programs allowed on login nodes: {}",
                    loaded.grants.programs.join(" ")
                );
                for p in &profiles {
                    out!(
                        "profile {}: ssh target {}, remote paths under {}",
                        p["profile"].as_str().unwrap_or_default(),
                        p["sshTarget"].as_str().unwrap_or_default(),
                        p["remoteRoot"].as_str().unwrap_or_default()
                    );
                    if let Some(policy) = p.get("policy").and_then(Value::as_object) {
                        let rules: Vec<String> = policy
                            .iter()
                            .map(|(k, v)| match v {
                                Value::Null => format!("{k}: any"),
                                other => format!("{k}: {other}"),
                            })
                            .collect();
                        out!("  policy: {}", rules.join(", "));
                    }
                }
                out!(
                    "per call: {} fuel, {} MiB memory, {} MiB result",
                    runtime::FUEL_PER_CALL,
                    runtime::MEMORY_PER_CALL >> 20,
                    runtime::MAX_RESULT >> 20
                );
                match &loaded.audit_path {
                    Some(path) => out!("audit log: {}", path.display()),
                    None => out!("audit log: off"),
                }
                match loaded.approvals.path() {
                    Some(path) => out!(
                        "approval decisions: {} (read-only for the guest)",
                        path.display()
                    ),
                    None => out!("approval decisions: none (held runs stay pending)"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The runs of the workspace whose approval is in `state`, as `list_runs`
/// (the guest's own reading of its ledger) reports them.
async fn held_runs(loaded: &Loaded, state: &str) -> Result<Vec<Value>> {
    let request = json!({"action": "list_runs", "limit": 1000}).to_string();
    let listed: Value = match loaded.runtime.invoke(&loaded.plugin_json, &request).await? {
        Ok(text) => serde_json::from_str(&text).context("guest returned invalid JSON")?,
        Err(e) => bail!("cannot list the runs: {}", tool_error_text(&e)),
    };
    Ok(listed
        .get("runs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.pointer("/approval/state").and_then(Value::as_str) == Some(state))
        .cloned()
        .collect())
}

/// Parse the command line, run it, and say how it ended.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster-slurm: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cluster-slurm: {e:#}");
            ExitCode::from(2)
        }
    }
}
