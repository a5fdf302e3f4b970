//! BENCHMARKS.md: what was measured, the medians and ratios, the targets
//! and whether this run met them, and every raw number.

use crate::Env;
use crate::stats::{Samples, Verdict};
use std::fmt::Write as _;
use std::time::Duration;

pub struct Report {
    sections: String,
    verdicts: Vec<Verdict>,
    reps: usize,
    quick: bool,
}

fn table(samples: &[Samples], base: Option<&Samples>, unit: &str) -> String {
    let mut t =
        format!("| | median ({unit}) | vs. first row | raw ({unit}) |\n|---|---:|---:|---|\n");
    for s in samples {
        let ratio = base.map_or(String::new(), |b| {
            format!("{:.2}×", s.median() / b.median())
        });
        let _ = writeln!(
            t,
            "| {} | {:.1} | {ratio} | {} |",
            s.label,
            s.median(),
            s.raw()
        );
    }
    t
}

fn at(samples: &[Samples], i: usize) -> Samples {
    samples.get(i).cloned().unwrap_or_default()
}

impl Report {
    pub fn new(env: &Env) -> Report {
        Report {
            sections: String::new(),
            verdicts: Vec::new(),
            reps: env.reps,
            quick: env.quick,
        }
    }

    fn verdict(&mut self, target: String, measured: String, met: bool) {
        self.verdicts.push(Verdict {
            target,
            measured,
            met,
        });
    }

    pub fn run_workload(&mut self, net: &str, s: &[Samples], breakdown: &[(String, f64, f64)]) {
        let (reference, master, cli, warm) = (at(s, 0), at(s, 1), at(s, 2), at(s, 3));
        let _ = writeln!(
            self.sections,
            "## run_workload, {net}\n\nA new run with a small script and a 1 KiB input: render, upload, submit. \
             The reference's sequence is 4 `ssh` and 2 `scp` (mkdir, mkdir, scp inputs, mkdir, scp script, sbatch); \
             ours is one tool call. {} repetitions, interleaved.\n\n{}",
            self.reps,
            table(s, Some(&reference), "ms")
        );
        let _ = writeln!(
            self.sections,
            "Where the warm host's time goes (capability calls per `run_workload`, from its audit log; the rest is the guest and local files):\n\n| call | per run | ms per run |\n|---|---:|---:|"
        );
        for (call, n, ms) in breakdown {
            let _ = writeln!(self.sections, "| {call} | {n:.1} | {ms:.1} |");
        }
        self.sections.push('\n');
        let fifth = reference.median() / 5.0;
        for (who, s) in [("warm host", &warm), ("CLI process per call", &cli)] {
            self.verdict(
                format!("run_workload ({net}), {who}: ≤ 1/5 of the reference ({fifth:.1} ms)"),
                format!(
                    "{:.1} ms ({:.2}×)",
                    s.median(),
                    s.median() / reference.median()
                ),
                s.median() <= fifth,
            );
        }
        if net == "loopback" {
            self.verdict(
                format!(
                    "run_workload ({net}), warm host: no slower than the ControlMaster sequence ({:.1} ms)",
                    master.median()
                ),
                format!("{:.1} ms", warm.median()),
                warm.median() <= master.median(),
            );
        }
    }

    pub fn transfers(
        &mut self,
        big: u64,
        up: &[Samples],
        down: &[Samples],
        small_n: u64,
        many: &[Samples],
    ) {
        let mib = big as f64 / f64::from(1u32 << 20);
        let rate = |s: &Samples| mib / (s.median() / 1000.0);
        let _ = writeln!(
            self.sections,
            "## Transfers, loopback\n\nOne file of {mib:.0} MiB (pseudo-random), each contestant with its own new connection.\n\n### Up\n\n{}\n### Down\n\n{}",
            table(up, Some(&at(up, 0)), "ms"),
            table(down, Some(&at(down, 0)), "ms")
        );
        for (dir, s) in [("up", up), ("down", down)] {
            let (ours, scp) = (at(s, 0), at(s, 1));
            let _ = writeln!(
                self.sections,
                "Throughput {dir}: ours {:.0} MiB/s, scp {:.0} MiB/s, sftp {:.0} MiB/s.\n",
                rate(&ours),
                rate(&scp),
                rate(&at(s, 2))
            );
            self.verdict(
                format!("{mib:.0} MiB {dir}: ≥ 0.9× scp's throughput"),
                format!(
                    "{:.2}× ({:.0} vs {:.0} MiB/s)",
                    scp.median() / ours.median(),
                    rate(&ours),
                    rate(&scp)
                ),
                scp.median() / ours.median() >= 0.9,
            );
        }
        let _ = writeln!(
            self.sections,
            "### {small_n} files of 1 KiB, up\n\n{}",
            table(many, Some(&at(many, 0)), "ms")
        );
        let (ours, scp) = (at(many, 0), at(many, 1));
        self.verdict(
            format!("{small_n} files of 1 KiB: ≥ 10× faster than scp -r"),
            format!(
                "{:.1}× ({:.0} vs {:.0} ms)",
                scp.median() / ours.median(),
                ours.median(),
                scp.median()
            ),
            scp.median() / ours.median() >= 10.0,
        );
    }

    pub fn statuses(&mut self, rows: &[(usize, f64, f64, Samples)]) {
        let _ = writeln!(
            self.sections,
            "## Status of many jobs\n\n`job_status` with 1, 100 and 1,000 job ids (held jobs), warm host, on loopback and at 50 ms round trip.\n\n| jobs | remote calls per status call | median (ms) | of which in the remote calls (mean ms) | raw (ms) |\n|---|---:|---:|---:|---|"
        );
        for (_, calls, remote, s) in rows {
            let _ = writeln!(
                self.sections,
                "| {} | {calls:.1} | {:.1} | {remote:.1} | {} |",
                s.label,
                s.median(),
                s.raw()
            );
        }
        self.sections.push('\n');
        for net in ["loopback", "wan-status"] {
            let of = |n: usize| {
                rows.iter()
                    .find(|(k, _, _, s)| *k == n && s.label.ends_with(net))
                    .cloned()
            };
            let shown = if net == "loopback" {
                "loopback"
            } else {
                "50 ms RTT"
            };
            let (Some((_, c1, _, t1)), Some((_, c1000, _, t1000))) = (of(1), of(1000)) else {
                // A missing row is no evidence: both targets not met.
                for target in [
                    "a constant number of remote calls",
                    "under 3× the time of one",
                ] {
                    self.verdict(
                        format!("status of 1,000 jobs ({shown}): {target}"),
                        "no measurement".to_string(),
                        false,
                    );
                }
                continue;
            };
            self.verdict(
                format!("status of 1,000 jobs ({shown}): a constant number of remote calls"),
                format!("{c1:.1} calls for 1 job, {c1000:.1} for 1,000"),
                (c1 - c1000).abs() < f64::EPSILON,
            );
            self.verdict(
                format!("status of 1,000 jobs ({shown}): under 3× the time of one"),
                format!(
                    "{:.1} vs {:.1} ms ({:.2}×)",
                    t1000.median(),
                    t1.median(),
                    t1000.median() / t1.median()
                ),
                t1000.median() < 3.0 * t1.median(),
            );
        }
    }

    pub fn guest(
        &mut self,
        overhead: &[Samples],
        cached: &Samples,
        compiling: &Samples,
        rss_describe: i64,
        rss_run: i64,
    ) {
        let _ = writeln!(
            self.sections,
            "## Guest overhead, start-up and memory\n\nEach call instantiates the component afresh and invokes it (warm: compiled once per process); these actions make no cluster calls.\n\n{}\nThe host as a new process (`cluster-slurm describe`):\n\n{}\nPeak resident memory of the host process: `describe` {} MiB, `call run_workload` {} MiB.\n",
            table(overhead, None, "ms"),
            table(&[cached.clone(), compiling.clone()], None, "ms"),
            rss_describe / 1024,
            rss_run / 1024
        );
        // The guest's own time: rows without host file calls, and the
        // "guest's share" rows of those with them.
        let worst = overhead
            .iter()
            .filter(|s| {
                !overhead
                    .iter()
                    .any(|o| o.label != s.label && o.label.starts_with(&format!("{}:", s.label)))
            })
            .map(Samples::median)
            // No rows at all is no evidence: not met.
            .fold(f64::NAN, |a, b| {
                if b.is_nan() {
                    f64::INFINITY
                } else if a.is_nan() {
                    b
                } else {
                    a.max(b)
                }
            });
        self.verdict(
            "guest overhead under 1 ms per action (warm)".to_string(),
            format!("at most {worst:.2} ms (median per action, host file calls excluded)"),
            worst < 1.0,
        );
    }

    pub fn session(&mut self, connections: u64, reference: u64, took: Duration) {
        let _ = writeln!(
            self.sections,
            "## A 100-call agent session\n\n100 tool calls through one `cluster-slurm mcp` (10 `run_workload`, 80 `check_workload`, 10 `list_runs`), counted by a proxy in front of sshd: **{connections}** SSH connection(s) in {:.1} s. The reference opens one per remote step: {reference} for the same calls.\n",
            took.as_secs_f64()
        );
        self.verdict(
            "one SSH connection per profile for a whole session".to_string(),
            format!("{connections} for 100 calls (reference: {reference})"),
            connections == 1,
        );
    }

    pub fn finish(self, version: &dyn Fn(&str, &[&str]) -> String) -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default();
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string))
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let met = self.verdicts.iter().filter(|v| v.met).count();
        let mut out = format!(
            "# Benchmarks\n\nWritten by `just bench` ({}{} repetitions per comparison; 3 for the transfers (2 with --quick) and for the compile from an empty cache) on {}, commit `{}`. \
             Both sides of every comparison ran in the same run, interleaved, against the local testbed \
             (OpenSSH sshd and SLURM on 127.0.0.1; `tests/testbed/`). Medians; every raw number is in the tables.\n\n",
            if self.quick { "--quick, " } else { "" },
            self.reps,
            version("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            version("git", &["rev-parse", "--short", "HEAD"]),
        );
        let _ = writeln!(
            out,
            "## Machine and versions\n\n- CPU: {cpu}, {cores} cores; {mem}\n- kernel: {}\n- {}\n- OpenSSH: {}\n- SLURM: {}\n- cluster-slurm: {}\n",
            version("uname", &["-r"]),
            version("rustc", &["-V"]),
            version("ssh", &["-V"]),
            version("dpkg-query", &["-W", "-f=${Version}", "slurm-client"]),
            version("target/release/cluster-slurm", &["--version"]),
        );
        let _ = writeln!(
            out,
            "## Targets: {met} of {} met\n\n| target | this run | |\n|---|---|---|",
            self.verdicts.len()
        );
        for v in &self.verdicts {
            let _ = writeln!(out, "{}", v.row());
        }
        out.push('\n');
        out.push_str(&self.sections);
        out
    }
}
