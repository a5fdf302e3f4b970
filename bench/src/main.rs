//! `just bench`: our host against OpenSSH and the reference extension's way
//! of doing things, side by side in one run on the local testbed, several
//! repetitions each; writes `BENCHMARKS.md` (machine, versions, medians,
//! ratios, targets, raw numbers).
//!
//! ```text
//! cluster-slurm-bench [--config TESTBED.json] [--reps N] [--quick] [--out BENCHMARKS.md]
//! cluster-slurm-bench [--config TESTBED.json] --only guest|status|many|big
//! ```
//!
//! `--only` measures one part and prints its medians, for working on it
//! (status on loopback only); it writes no report.

mod openssh;
mod ours;
mod proxy;
mod report;
mod session;
mod stats;

use anyhow::{Context, Result, bail};
use cluster_slurm_host::grants::ProfileGrant;
use cluster_slurm_host::local_fs::{Source, Target};
use cluster_slurm_host::transport::{SshTransport, Transport};
use openssh::OpenSsh;
use ours::Warm;
use proxy::DelayProxy;
use serde_json::{Value, json};
use stats::{Samples, timed};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What every section needs.
pub struct Env {
    pub repo: PathBuf,
    pub tb: PathBuf,
    pub config: Value,
    pub config_path: PathBuf,
    pub bin: PathBuf,
    pub wasm: Vec<u8>,
    pub run_root: String,
    pub work: PathBuf,
    pub reps: usize,
    pub quick: bool,
}

/// A way to reach the testbed's sshd: directly, or through the delay proxy.
pub struct Net {
    pub name: &'static str,
    pub ssh_config: PathBuf,
    pub target: String,
    /// Our operator config for this way.
    pub config_path: PathBuf,
    pub config: Value,
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn setup() -> Result<Env> {
    let args: Vec<String> = std::env::args().collect();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let config_path = arg_value(&args, "--config")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CLUSTER_SLURM_TESTBED_CONFIG").map(PathBuf::from))
        .context("--config TESTBED.json (or CLUSTER_SLURM_TESTBED_CONFIG) is required")?;
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )?;
    let tb = config_path
        .parent()
        .context("the testbed config has no directory")?
        .to_path_buf();
    let run_root = config
        .pointer("/clusters/local-cpu/remoteRoot")
        .and_then(Value::as_str)
        .context("the testbed config has no local-cpu profile")?
        .to_string();
    let bin = std::env::var_os("CLUSTER_SLURM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/release/cluster-slurm"));
    let wasm_path = repo.join("target/wasm32-wasip2/guest/cluster_slurm_guest.wasm");
    let wasm = std::fs::read(&wasm_path)
        .with_context(|| format!("{} (run `just build`)", wasm_path.display()))?;
    let quick = args.iter().any(|a| a == "--quick");
    let reps = match arg_value(&args, "--reps") {
        Some(n) => n.parse().context("--reps N")?,
        None if quick => 3,
        None => 7,
    };
    let work = repo.join("target/bench-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    Ok(Env {
        repo,
        tb,
        config,
        config_path,
        bin,
        wasm,
        run_root,
        work,
        reps,
        quick,
    })
}

impl Env {
    fn loopback(&self) -> Net {
        Net {
            name: "loopback",
            ssh_config: self.tb.join("ssh/ssh_config"),
            target: "slurm-testbed".to_string(),
            config_path: self.config_path.clone(),
            config: self.config.clone(),
        }
    }

    /// An ssh alias through `proxy`, with its own known_hosts line, and our
    /// operator config using it.
    fn through(&self, proxy: &DelayProxy, name: &'static str) -> Result<Net> {
        let port = proxy.addr.port();
        let known = std::fs::read_to_string(self.tb.join("ssh/known_hosts"))?;
        let key = known
            .lines()
            .find_map(|l| l.split_once(' ').map(|(_, key)| key.to_string()))
            .context("testbed known_hosts is empty")?;
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {key}\n"),
        )?;
        let ssh_config = dir.join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host bench-{name}\n  HostName 127.0.0.1\n  Port {port}\n  User slurmtest\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n",
                self.tb.join("ssh/id_ed25519").display(),
                dir.join("known_hosts").display()
            ),
        )?;
        let mut config = self.config.clone();
        if let Some(clusters) = config.get_mut("clusters").and_then(Value::as_object_mut) {
            for profile in clusters.values_mut().filter_map(Value::as_object_mut) {
                profile.insert("sshTarget".into(), json!(format!("bench-{name}")));
            }
        }
        if let Some(top) = config.as_object_mut() {
            // One process per call opens a connection each time: the
            // loopback testbed has no login node to spare.
            top.insert(
                "host".into(),
                json!({"sshConfig": ssh_config, "connectionsPerMinute": 1000}),
            );
        }
        let config_path = dir.join("cluster-slurm.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        Ok(Net {
            name,
            ssh_config,
            target: format!("bench-{name}"),
            config_path,
            config,
        })
    }

    fn profile(&self) -> ProfileGrant {
        ProfileGrant {
            label: "tb".into(),
            ssh_target: "slurm-testbed".into(),
            remote_root: self.run_root.clone(),
        }
    }
}

/// A workspace with a small script and input, and the reference's job script.
fn workload_files(env: &Env) -> Result<(PathBuf, PathBuf)> {
    let ws = env.work.join("workspace");
    std::fs::create_dir_all(&ws)?;
    std::fs::write(
        ws.join("job.py"),
        "import sys\nrows = open(sys.argv[1]).read().split()\nprint(len(rows))\n",
    )?;
    let data: String = (0..200).map(|i| format!("{i},{}\n", i * i)).collect();
    std::fs::write(ws.join("data.csv"), &data[..data.len().min(1024)])?;
    let script = env.work.join("job.slurm");
    std::fs::write(
        &script,
        "#!/bin/bash\n#SBATCH --job-name=agent\n#SBATCH --partition=cpu\n#SBATCH --time=00:10:00\n#SBATCH --nodes=1\n#SBATCH --ntasks=1\n#SBATCH --cpus-per-task=1\n#SBATCH --mem=256M\n#SBATCH --output=slurm-%j.out\n#SBATCH --error=slurm-%j.err\nset -euo pipefail\npython3 job.py data.csv\n",
    )?;
    Ok((ws, script))
}

/// What `run_workload` costs four ways on `net`; the warm host's audit log
/// (for where its time goes) is written to `audit`.
async fn run_workload(env: &Env, net: &Net, audit: &Path) -> Result<Vec<Samples>> {
    let (ws, script) = workload_files(env)?;
    let inputs = [ws.join("job.py"), ws.join("data.csv")];
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let fresh = OpenSsh {
        config: net.ssh_config.clone(),
        target: net.target.clone(),
        control: None,
    };
    let multiplexed = OpenSsh {
        config: net.ssh_config.clone(),
        target: net.target.clone(),
        control: Some(env.work.join(format!("cm-{}", net.name))),
    };
    multiplexed.start_master()?;
    let warm = Warm::new(
        &net.config,
        net.config_path.parent().unwrap_or(Path::new("/")),
        &ws,
        &env.wasm,
        Some(audit),
    )?;
    let request = |tag: &str| {
        json!({"action": "run_workload", "prefix": tag, "command": "python3 job.py data.csv",
               "localPaths": ["job.py", "data.csv"], "newRun": true})
    };
    // Not timed: the warm host's first call opens its connection. Its audit
    // lines are left out of the breakdown.
    warm.call(&request("warmup")).await?;
    let skip = std::fs::read_to_string(audit).map_or(0, |t| t.lines().count());
    let mut reference = Samples::new("reference: a fresh ssh/scp process per step");
    let mut master = Samples::new("reference over an OpenSSH ControlMaster");
    let mut cli = Samples::new("ours: CLI, one process per call");
    let mut hot = Samples::new("ours: warm host (one process, as `cluster-slurm mcp`)");
    for rep in 0..env.reps {
        let dir = format!("{}/bench-ref-{}-{rep}", env.run_root, net.name);
        let (job, t) = timed(async { fresh.reference_run_workload(&dir, &inputs, &script) }).await;
        job?;
        reference.push(t);
        let dir = format!("{}/bench-cm-{}-{rep}", env.run_root, net.name);
        let (job, t) =
            timed(async { multiplexed.reference_run_workload(&dir, &inputs, &script) }).await;
        job?;
        master.push(t);
        let (out, t) =
            timed(async { ours::cli_call(&env.bin, &net.config_path, &ws, &request("benchcli")) })
                .await;
        out?;
        cli.push(t);
        let (out, t) = timed(warm.call(&request("benchwarm"))).await;
        out?;
        hot.push(t);
    }
    multiplexed.stop_master();
    let timed_lines: String = std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .skip(skip)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(audit, timed_lines)?;
    Ok(vec![reference, master, cli, hot])
}

/// Milliseconds per capability call of the warm host's timed runs, by kind.
fn where_the_time_goes(audit: &Path, runs: usize) -> Vec<(String, f64, f64)> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let mut totals: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let call = e.get("call").and_then(Value::as_str).unwrap_or("?");
        let name = match e.get("program").and_then(Value::as_str) {
            Some(p) => format!("{call} {p}"),
            None => call.to_string(),
        };
        let ms = e.get("us").and_then(Value::as_f64).unwrap_or(0.0) / 1000.0;
        let slot = totals.entry(name).or_default();
        slot.0 += 1.0;
        slot.1 += ms;
    }
    let runs = runs.max(1) as f64;
    totals
        .into_iter()
        .map(|(k, (n, ms))| (k, n / runs, ms / runs))
        .collect()
}

fn noise_file(path: &Path, len: usize) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            for (b, v) in chunk.iter_mut().zip(bytes) {
                *b = v;
            }
        }
        let n = left.min(block.len());
        f.write_all(block.get(..n).unwrap_or_default())?;
        left -= n;
    }
    f.flush()?;
    Ok(())
}

/// Which transfers to measure.
#[derive(Clone, Copy, PartialEq)]
enum Transfers {
    All,
    Big,
    Many,
}

/// One large file up and down, and many small files up: ours against scp
/// and sftp (loopback; every contestant opens its own connection).
async fn transfers(
    env: &Env,
    which: Transfers,
) -> Result<(u64, Vec<Samples>, Vec<Samples>, u64, Vec<Samples>)> {
    let big_len: usize = if env.quick { 64 << 20 } else { 1 << 30 };
    let (small_n, small_len) = if env.quick {
        (1000, 1024)
    } else {
        (10_000, 1024)
    };
    let big = env.work.join("big.bin");
    noise_file(&big, big_len)?;
    let tree = env.work.join("small");
    for i in 0..small_n {
        let dir = tree.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(
            dir.join(format!("f{i:05}")),
            vec![(i % 251) as u8; small_len],
        )?;
    }
    let ssh = OpenSsh {
        config: env.tb.join("ssh/ssh_config"),
        target: "slurm-testbed".into(),
        control: None,
    };
    let profile = env.profile();
    let remote_big = format!("{}/bench-big.bin", env.run_root);
    let remote_tree = format!("{}/bench-small", env.run_root);
    let reps = if env.quick { 2 } else { 3 };
    let clean_remote = || {
        let _ = std::fs::remove_file(&remote_big);
        let _ = std::fs::remove_dir_all(&remote_tree);
    };
    clean_remote();
    // Before each large-file contestant: no dirty pages left by the one
    // before. Cluster and client share this machine's disk, and the kernel
    // writing back the previous gibibyte slowed whoever came next (seen: our
    // download, right after three uploads, 3.8-4.3 s in a full run and
    // 2.6-2.8 s alone).
    let settle = || {
        let _ = std::process::Command::new("sync").status();
    };

    let mut up = vec![
        Samples::new("ours (SFTP, SHA-256 checked on both ends)"),
        Samples::new("scp"),
        Samples::new("sftp -b (put)"),
    ];
    let mut down = vec![
        Samples::new("ours (SFTP, SHA-256 checked on both ends)"),
        Samples::new("scp"),
        Samples::new("sftp -b (get)"),
    ];
    let mut many = vec![
        Samples::new("ours (tar bundles, SHA-256 checked)"),
        Samples::new("scp -r"),
    ];
    let local_down = env.work.join("down.bin");
    for _ in 0..reps {
        if which == Transfers::Many {
            break;
        }
        // Up.
        settle();
        let transport =
            SshTransport::new(Some(env.tb.join("ssh/ssh_config"))).with_connection_budget(1000);
        let (moved, t) =
            timed(transport.upload(&profile, Source::ambient(&big)?, remote_big.clone())).await;
        let moved = moved?;
        if moved.verified != 1 || moved.bytes != big_len as u64 {
            bail!("our upload did not send and check the file: {moved:?}");
        }
        up.get_mut(0).context("slot")?.push(t);
        clean_remote();
        settle();
        let (r, t) = timed(async { ssh.scp_up(&[&big], &remote_big, false) }).await;
        r?;
        up.get_mut(1).context("slot")?.push(t);
        clean_remote();
        settle();
        let (r, t) = timed(async {
            ssh.sftp_batch(&format!("put {} {remote_big}\n", big.display()), &env.work)
        })
        .await;
        r?;
        up.get_mut(2).context("slot")?.push(t);
        // Down (the file sftp left there).
        let _ = std::fs::remove_file(&local_down);
        settle();
        let transport =
            SshTransport::new(Some(env.tb.join("ssh/ssh_config"))).with_connection_budget(1000);
        let (moved, t) =
            timed(transport.download(&profile, remote_big.clone(), Target::ambient(&local_down)?))
                .await;
        let moved = moved?;
        if moved.verified != 1 {
            bail!("our download was not checked: {moved:?}");
        }
        down.get_mut(0).context("slot")?.push(t);
        let _ = std::fs::remove_file(&local_down);
        settle();
        let (r, t) = timed(async { ssh.scp_down(&remote_big, &local_down, false) }).await;
        r?;
        down.get_mut(1).context("slot")?.push(t);
        let _ = std::fs::remove_file(&local_down);
        settle();
        let (r, t) = timed(async {
            ssh.sftp_batch(
                &format!("get {remote_big} {}\n", local_down.display()),
                &env.work,
            )
        })
        .await;
        r?;
        down.get_mut(2).context("slot")?.push(t);
        let _ = std::fs::remove_file(&local_down);
        clean_remote();
    }
    // Each small-files contestant writes a new directory, and all are
    // removed at the end: removing 10,000 files keeps this machine's disk
    // busy for seconds (seen: `tar -x` of them 0.24 s on a quiet disk, 2.85 s
    // right after a removal), and whoever ran next would pay for it.
    let fresh_tree = |who: &str, rep: usize| format!("{remote_tree}-{who}-{rep}");
    for rep in 0..reps {
        if which == Transfers::Big {
            break;
        }
        // Many small files up.
        let transport =
            SshTransport::new(Some(env.tb.join("ssh/ssh_config"))).with_connection_budget(1000);
        let (moved, t) =
            timed(transport.upload(&profile, Source::ambient(&tree)?, fresh_tree("ours", rep)))
                .await;
        let moved = moved?;
        if moved.verified != small_n as u32 {
            bail!("our upload of the tree was not checked: {moved:?}");
        }
        many.get_mut(0).context("slot")?.push(t);
        let (r, t) = timed(async { ssh.scp_up(&[&tree], &fresh_tree("scp", rep), true) }).await;
        r?;
        many.get_mut(1).context("slot")?.push(t);
    }
    for rep in 0..reps {
        for who in ["ours", "scp"] {
            let _ = std::fs::remove_dir_all(fresh_tree(who, rep));
        }
    }
    Ok((big_len as u64, up, down, small_n as u64, many))
}

/// Submit `n` held jobs (they never run); their ids.
fn held_jobs(n: usize, ssh: &OpenSsh) -> Result<Vec<String>> {
    let out = ssh.ssh(&format!(
        "for i in $(seq {n}); do sbatch --parsable --hold -p cpu -t 1 -o /dev/null --wrap true || exit 1; done"
    ))?;
    let ids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    if ids.len() != n {
        bail!("submitted {} held jobs, wanted {n}", ids.len());
    }
    Ok(ids)
}

/// Status of 1, 100 and 1,000 jobs through the warm host: remote calls and time.
/// Per row: jobs asked for, remote calls per status call, the mean time of
/// those remote calls per status call (ms, from the audit log), the samples.
async fn statuses(env: &Env, nets: &[&Net]) -> Result<Vec<(usize, f64, f64, Samples)>> {
    let ssh = OpenSsh {
        config: env.tb.join("ssh/ssh_config"),
        target: "slurm-testbed".into(),
        control: None,
    };
    let ids = held_jobs(1000, &ssh)?;
    let (ws, _) = workload_files(env)?;
    let mut rows = Vec::new();
    let result = async {
        for net in nets {
            let audit = env.work.join(format!("audit-status-{}.jsonl", net.name));
            let _ = std::fs::remove_file(&audit);
            let warm = Warm::new(
                &net.config,
                net.config_path.parent().unwrap_or(Path::new("/")),
                &ws,
                &env.wasm,
                Some(&audit),
            )?;
            warm.call(&json!({"action": "list_clusters", "cluster": "local-cpu"}))
                .await?;
            warm.call(&json!({"action": "job_status", "jobId": ids.first()}))
                .await?;
            for n in [1usize, 100, 1000] {
                let mut samples = Samples::new(format!("{n} jobs, {}", net.name));
                let before = warm.transport.requests();
                let (logged, _) = host_us(&audit, 0);
                for _ in 0..env.reps {
                    let request =
                        json!({"action": "job_status", "jobIds": ids.get(..n).unwrap_or_default()});
                    let (out, t) = timed(warm.call(&request)).await;
                    let out = out?;
                    // One id answers with `status`, several with `statuses`.
                    let known = match out.get("statuses").and_then(Value::as_array) {
                        Some(all) => all.len(),
                        None => usize::from(out.get("status").is_some_and(Value::is_object)),
                    };
                    if known != n {
                        bail!("asked for {n} statuses, got {known}");
                    }
                    samples.push(t);
                }
                let calls = (warm.transport.requests() - before) as f64 / env.reps as f64;
                let (_, us) = host_us(&audit, logged);
                rows.push((n, calls, us / 1000.0 / env.reps as f64, samples));
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    for chunk in ids.chunks(250) {
        let _ = ssh.ssh(&format!("scancel {}", chunk.join(" ")));
    }
    result?;
    Ok(rows)
}

/// Microseconds the host spent in the guest's capability calls, per audit
/// line after the first `skip` lines.
fn host_us(audit: &Path, skip: usize) -> (usize, f64) {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let us = lines
        .iter()
        .skip(skip)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e.get("us").and_then(Value::as_f64))
        .sum();
    (lines.len(), us)
}

/// Per action, warm: instantiate the guest and invoke it (no cluster
/// calls). Rows with local files also give the time the host spent on them
/// (from the audit log), and the guest's own share.
async fn guest_overhead(env: &Env) -> Result<Vec<Samples>> {
    // A workspace of its own, with an empty ledger, not the dozens of runs
    // the other sections leave (reading the ledger grows with it).
    let ws = env.work.join("overhead");
    std::fs::create_dir_all(&ws)?;
    let audit = env.work.join("audit-guest.jsonl");
    let warm = Warm::new(
        &env.config,
        env.config_path.parent().unwrap_or(Path::new("/")),
        &ws,
        &env.wasm,
        Some(&audit),
    )?;
    let n = if env.quick { 50 } else { 300 };
    let mut out = Vec::new();
    for (label, request) in [
        ("list_clusters", json!({"action": "list_clusters"})),
        (
            "list_runs (reads the ledger)",
            json!({"action": "list_runs"}),
        ),
        (
            "render_job (renders the script and writes it, fsync'ed)",
            json!({"action": "render_job", "command": "python3 job.py"}),
        ),
    ] {
        warm.call(&request).await?;
        let (before, _) = host_us(&audit, 0);
        let mut s = Samples::new(label);
        for _ in 0..n {
            let (r, t) = timed(warm.call(&request)).await;
            r?;
            s.push(t);
        }
        let (_, us) = host_us(&audit, before);
        let host_ms = us / 1000.0 / n as f64;
        let mut guest = Samples::new(format!(
            "{label}: the guest's share (less {host_ms:.2} ms of host file calls)"
        ));
        guest.ms = s.ms.iter().map(|m| (m - host_ms).max(0.0)).collect();
        out.push(s);
        if host_ms > 0.0 {
            out.push(guest);
        }
    }
    let mut describe = Samples::new("describe (instantiate only)");
    for _ in 0..n {
        let (r, t) = timed(warm.runtime.describe()).await;
        r?;
        describe.push(t);
    }
    out.push(describe);
    let mut check = Samples::new("check-config (instantiate + read the config)");
    for _ in 0..n {
        let (r, t) = timed(warm.runtime.check_config(&warm.plugin)).await;
        r??;
        check.push(t);
    }
    out.push(check);
    Ok(out)
}

/// The host binary from a cold process: with the compiled component cached,
/// and with an empty cache (compiling it).
fn cold_start(env: &Env) -> Result<(Samples, Samples)> {
    let mut cached = Samples::new("cold process, compiled component cached");
    let mut compiling = Samples::new("cold process, empty cache (compiles the component)");
    let run = |cache: Option<&Path>| -> Result<Duration> {
        let mut cmd = std::process::Command::new(&env.bin);
        cmd.arg("--config").arg(&env.config_path).arg("describe");
        if let Some(c) = cache {
            cmd.env("CLUSTER_SLURM_CACHE_DIR", c);
        }
        let start = Instant::now();
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("describe failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(start.elapsed())
    };
    run(None)?;
    for _ in 0..env.reps {
        cached.push(run(None)?);
    }
    for i in 0..3 {
        let dir = env.work.join(format!("cache-{i}"));
        compiling.push(run(Some(&dir))?);
    }
    Ok((cached, compiling))
}

/// 100 tool calls through one `cluster-slurm mcp`: the SSH connections it
/// opened (counted by a proxy) and what the reference would have opened.
async fn session(env: &Env) -> Result<(u64, u64, Duration)> {
    let counter = DelayProxy::start("127.0.0.1:2222".parse()?, Duration::ZERO).await?;
    let net = env.through(&counter, "count")?;
    let (ws, _) = workload_files(env)?;
    let mut mcp = session::McpSession::start(&env.bin, &net.config_path, &ws).await?;
    let start = Instant::now();
    let mut runs = Vec::new();
    let mut reference = 0u64;
    for i in 0..100 {
        let arguments = if i % 10 == 0 {
            reference += 6; // 4 ssh + 2 scp
            json!({"action": "run_workload", "prefix": format!("session{i}"), "command": "python3 job.py data.csv",
                   "localPaths": ["job.py", "data.csv"], "newRun": true})
        } else if i % 10 == 5 {
            json!({"action": "list_runs", "limit": 5})
        } else {
            reference += 2; // ssh squeue, ssh sacct
            let run: &Value = runs.last().context("no run yet")?;
            json!({"action": "check_workload", "runId": run})
        };
        let out = mcp.tool(arguments).await?;
        if let Some(run) = out.get("runId").filter(|_| i % 10 == 0) {
            runs.push(run.clone());
        }
    }
    let took = start.elapsed();
    mcp.stop().await;
    Ok((counter.connections(), reference, took))
}

fn version(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|e| format!("({e})"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let env = setup()?;
    let out_path = arg_value(&std::env::args().collect::<Vec<_>>(), "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| env.repo.join("BENCHMARKS.md"));
    let say = |s: &str| eprintln!("[bench] {s}");
    let mut report = report::Report::new(&env);

    // `--only SECTION`: one section, printed, for working on it.
    if let Some(only) = arg_value(&std::env::args().collect::<Vec<_>>(), "--only") {
        let rows: Vec<Samples> = match only.as_str() {
            "guest" => guest_overhead(&env).await?,
            "status" => statuses(&env, &[&env.loopback()])
                .await?
                .into_iter()
                .map(|(n, calls, remote, mut s)| {
                    s.label = format!("{n} jobs, {calls:.1} remote calls, {remote:.1} ms in them");
                    s
                })
                .collect(),
            "many" => transfers(&env, Transfers::Many).await?.4,
            "big" => {
                let (_, up, down, _, _) = transfers(&env, Transfers::Big).await?;
                up.into_iter().chain(down).collect()
            }
            other => bail!("--only {other}: one of guest, status, many, big"),
        };
        for s in rows {
            println!("{:70} {:.3} ms", s.label, s.median());
        }
        return Ok(());
    }
    say("1/6 run_workload on loopback");
    let audit_lan = env.work.join("audit-loopback.jsonl");
    let lan = run_workload(&env, &env.loopback(), &audit_lan).await?;
    report.run_workload("loopback", &lan, &where_the_time_goes(&audit_lan, env.reps));

    say("2/6 run_workload at 50 ms round trip (delay proxy)");
    let wan_proxy = DelayProxy::start("127.0.0.1:2222".parse()?, Duration::from_millis(25)).await?;
    let wan = env.through(&wan_proxy, "wan")?;
    let audit_wan = env.work.join("audit-wan.jsonl");
    let far = run_workload(&env, &wan, &audit_wan).await?;
    report.run_workload(
        "50 ms RTT",
        &far,
        &where_the_time_goes(&audit_wan, env.reps),
    );
    drop(wan_proxy);

    say("3/6 transfers");
    let (big_len, up, down, small_n, many) = transfers(&env, Transfers::All).await?;
    report.transfers(big_len, &up, &down, small_n, &many);

    say("4/6 status of 1, 100, 1000 jobs");
    let wan_proxy = DelayProxy::start("127.0.0.1:2222".parse()?, Duration::from_millis(25)).await?;
    let wan = env.through(&wan_proxy, "wan-status")?;
    let rows = statuses(&env, &[&env.loopback(), &wan]).await?;
    report.statuses(&rows);
    drop(wan_proxy);

    say("5/6 guest overhead, cold start, memory");
    let overhead = guest_overhead(&env).await?;
    let (cached, compiling) = cold_start(&env)?;
    let (ws, _) = workload_files(&env)?;
    let rss_describe = ours::peak_rss_kib(
        &env.bin,
        &[
            "--config",
            &env.config_path.display().to_string(),
            "describe",
        ],
    )?;
    let rss_run = ours::peak_rss_kib(
        &env.bin,
        &[
            "--config",
            &env.config_path.display().to_string(),
            "--workspace",
            &ws.display().to_string(),
            "call",
            "run_workload",
            &json!({"command": "python3 job.py data.csv", "localPaths": ["job.py", "data.csv"], "newRun": true}).to_string(),
        ],
    )?;
    report.guest(&overhead, &cached, &compiling, rss_describe, rss_run);

    say("6/6 a 100-call agent session");
    let (connections, reference, took) = session(&env).await?;
    report.session(connections, reference, took);

    std::fs::write(&out_path, report.finish(&version))?;
    say(&format!("wrote {}", out_path.display()));
    Ok(())
}
