//! The audit log: one JSON line per capability call the guest made — when,
//! which call, which profile, program and arguments, paths, bytes, how it
//! ended — appended to a file the guest cannot reach (by default in the
//! user's state directory, outside every workspace).
//!
//! ```json
//! {"time":"2026-11-21T09:40:01.123Z","pid":4242,"call":"exec","cluster":"hpc","program":"sbatch","args":["--parsable","--","job.slurm"],"cwd":"/scratch/u/runs/r1","outcome":"ok","exitCode":0,"ms":183,"us":183402}
//! ```
//!
//! Each line is one `write` on a file opened for appending, under an
//! exclusive flock, so lines from concurrent processes do not interleave
//! (also on NFS homes, where O_APPEND alone is not atomic). The file is never
//! opened through a symlink. A log that cannot be written is reported once
//! on stderr and never stops a call.

use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct AuditLog {
    path: Option<PathBuf>,
    file: Mutex<Option<std::fs::File>>,
    warned: AtomicBool,
}

/// `$XDG_STATE_HOME/cluster-slurm/audit.jsonl`, else `~/.local/state/...`.
pub fn default_path() -> Option<PathBuf> {
    state_file("audit.jsonl")
}

/// `$XDG_STATE_HOME/cluster-slurm/NAME`, else `~/.local/state/cluster-slurm/NAME`:
/// the host's own files, outside every workspace.
pub fn state_file(name: &str) -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_STATE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".local/state")))
        .map(|d| d.join("cluster-slurm").join(name))
}

fn iso_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

impl AuditLog {
    /// No log at all.
    pub fn off() -> AuditLog {
        AuditLog::default()
    }

    pub fn at(path: &Path) -> AuditLog {
        AuditLog {
            path: Some(path.to_path_buf()),
            ..AuditLog::default()
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Append one entry: `fields` plus time, pid and the duration since `started`.
    fn record(&self, call: &str, started: Instant, mut fields: Map<String, Value>) {
        let Some(path) = &self.path else { return };
        let mut entry = Map::new();
        entry.insert("time".into(), json!(iso_now()));
        entry.insert("pid".into(), json!(std::process::id()));
        entry.insert("call".into(), json!(call));
        entry.append(&mut fields);
        let took = started.elapsed();
        entry.insert("ms".into(), json!(took.as_millis() as u64));
        entry.insert("us".into(), json!(took.as_micros() as u64));
        let mut line = Value::Object(entry).to_string();
        line.push('\n');
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        if guard.is_none() {
            match open_log(path) {
                Ok(f) => *guard = Some(f),
                Err(e) => return self.warn(path, &e),
            }
        }
        if let Some(f) = guard.as_mut() {
            // One line under an exclusive lock: O_APPEND alone does not keep
            // lines from several processes whole on NFS homes.
            let written = f.lock().and_then(|()| {
                let w = f.write_all(line.as_bytes());
                let _ = f.unlock();
                w
            });
            if let Err(e) = written {
                self.warn(path, &e);
            }
        }
    }

    fn warn(&self, path: &Path, e: &std::io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            eprintln!(
                "cluster-slurm: cannot write the audit log {}: {e}",
                path.display()
            );
        }
    }
}

/// Open the log for appending: never through a symlink (the log is the
/// record of what the guest did; a link planted at its name must not turn
/// it into a write elsewhere), never a FIFO or device, readable by its owner
/// only when new.
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// One capability call of the guest, from its start to its answer.
pub struct Call<'a> {
    log: &'a AuditLog,
    name: &'static str,
    started: Instant,
    fields: Map<String, Value>,
}

impl AuditLog {
    /// Begin recording a call named `name` with what it asked for.
    pub fn call<const N: usize>(&self, name: &'static str, asked: [(&str, Value); N]) -> Call<'_> {
        Call {
            log: self,
            name,
            started: Instant::now(),
            fields: asked.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }
}

impl Call<'_> {
    /// Log how the call ended, with `details` of a successful answer; then
    /// pass the tests' hook point ([`crate::hooks`]), which is
    /// "right after a capability call took effect" for every capability.
    pub fn end<T, const N: usize>(
        mut self,
        answer: &Result<T, crate::bindings::HostError>,
        details: impl FnOnce(&T) -> [(&'static str, Value); N],
    ) {
        match answer {
            Ok(value) => {
                self.fields.insert("outcome".into(), json!("ok"));
                for (k, v) in details(value) {
                    self.fields.insert(k.into(), v);
                }
            }
            Err(e) => {
                let (kind, text) = crate::bindings::host_error_parts(e);
                self.fields.insert("outcome".into(), json!(kind));
                self.fields.insert("message".into(), json!(text));
            }
        }
        self.log.record(self.name, self.started, self.fields);
        crate::hooks::at(crate::hooks::Point::CallEnded);
    }
}
