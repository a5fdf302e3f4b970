//! The reference's way: the system OpenSSH client, a process per step,
//! exactly the sequence the TypeScript extension runs for `run_workload`
//! (4 `ssh` and 2 `scp`, each a fresh connection), and the same sequence
//! over an OpenSSH ControlMaster connection.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct OpenSsh {
    pub config: PathBuf,
    pub target: String,
    /// ControlPath of a persistent master connection, when multiplexing.
    pub control: Option<PathBuf>,
}

fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl OpenSsh {
    fn options(&self) -> Vec<String> {
        let mut o = vec![
            "-F".to_string(),
            self.config.display().to_string(),
            "-o".to_string(),
            "BatchMode=yes".to_string(),
        ];
        if let Some(path) = &self.control {
            o.extend([
                "-o".to_string(),
                "ControlMaster=auto".to_string(),
                "-o".to_string(),
                format!("ControlPath={}", path.display()),
                "-o".to_string(),
                "ControlPersist=300".to_string(),
            ]);
        }
        o
    }

    pub fn ssh(&self, command: &str) -> Result<String> {
        let mut cmd = Command::new("ssh");
        cmd.args(self.options()).arg(&self.target).arg(command);
        run(cmd, "ssh")
    }

    /// `scp [-r] LOCAL... TARGET:REMOTE`
    pub fn scp_up(&self, locals: &[&Path], remote: &str, recursive: bool) -> Result<()> {
        let mut cmd = Command::new("scp");
        cmd.args(self.options());
        if recursive {
            cmd.arg("-r");
        }
        cmd.args(locals).arg(format!("{}:{remote}", self.target));
        run(cmd, "scp").map(|_| ())
    }

    /// `scp [-r] TARGET:REMOTE LOCAL`
    pub fn scp_down(&self, remote: &str, local: &Path, recursive: bool) -> Result<()> {
        let mut cmd = Command::new("scp");
        cmd.args(self.options());
        if recursive {
            cmd.arg("-r");
        }
        cmd.arg(format!("{}:{remote}", self.target)).arg(local);
        run(cmd, "scp").map(|_| ())
    }

    /// One `sftp -b` batch (e.g. `put a b` or `get a b`).
    pub fn sftp_batch(&self, batch: &str, dir: &Path) -> Result<()> {
        let file = dir.join("sftp-batch");
        std::fs::write(&file, batch)?;
        let mut cmd = Command::new("sftp");
        cmd.args(self.options())
            .arg("-b")
            .arg(&file)
            .arg(&self.target);
        run(cmd, "sftp").map(|_| ())
    }

    /// Open the master connection (not timed).
    pub fn start_master(&self) -> Result<()> {
        self.ssh("true").map(|_| ())
    }

    pub fn stop_master(&self) {
        if let Some(path) = &self.control {
            let _ = Command::new("ssh")
                .args(["-F"])
                .arg(&self.config)
                .arg("-o")
                .arg(format!("ControlPath={}", path.display()))
                .args(["-O", "exit"])
                .arg(&self.target)
                .output();
        }
    }

    /// The reference's `run_workload` for a new run with inputs: `ssh mkdir`
    /// (init_run), `ssh mkdir` + `scp -r inputs` (upload), `ssh mkdir` +
    /// `scp job.slurm` + `ssh sbatch` (submit). Returns the job id.
    pub fn reference_run_workload(
        &self,
        run_dir: &str,
        inputs: &[&Path],
        script: &Path,
    ) -> Result<String> {
        let mkdir = format!("mkdir -p '{run_dir}'");
        self.ssh(&mkdir)?;
        self.ssh(&mkdir)?;
        self.scp_up(inputs, run_dir, true)?;
        self.ssh(&mkdir)?;
        self.scp_up(&[script], &format!("{run_dir}/"), true)?;
        let name = script
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = self.ssh(&format!(
            "set -euo pipefail\ncd '{run_dir}'\nsbatch '{name}'"
        ))?;
        out.split_whitespace()
            .last()
            .map(str::to_string)
            .context("sbatch printed no job id")
    }
}
