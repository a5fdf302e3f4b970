//! Files and runs: `upload`, `download`, `download_workload_outputs`,
//! `list_runs`, `list_files`. Listings are capped.

use super::{QUERY_TIMEOUT_MS, Tool, invalid, local_io};
use crate::host::ToolError;
use crate::ledger::RunRecord;
use crate::paths::{basename, remote_join, remote_under, workspace_relative};
use crate::request::Request;
use serde_json::{Value, json};

const DEFAULT_LIST_LIMIT: u64 = 200;
const DEFAULT_RUNS_LIMIT: u64 = 50;

/// A name as `ls -b` (`--quoting-style=escape`) prints it, decoded: every
/// byte of a name is written on one line (a newline as `\n`, a space as
/// `\ `, a backslash as `\\`, other unprintable bytes as octal `\NNN`).
/// Bytes that are not UTF-8 are shown as U+FFFD, and flagged by the caller.
fn unescape_ls(text: &str) -> (String, bool) {
    let mut bytes = Vec::with_capacity(text.len());
    let mut it = text.bytes().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        let Some(next) = it.next() else {
            bytes.push(b'\\');
            break;
        };
        let plain = match next {
            b'n' => Some(b'\n'),
            b't' => Some(b'\t'),
            b'r' => Some(b'\r'),
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'v' => Some(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                for _ in 0..2 {
                    match it.peek() {
                        Some(d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(*d - b'0');
                            it.next();
                        }
                        _ => break,
                    }
                }
                u8::try_from(value).ok()
            }
            _ => None,
        };
        match plain {
            Some(p) => bytes.push(p),
            // `\\`, `\ ` and any other escaped character stand for themselves.
            None => bytes.push(next),
        }
    }
    match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
    }
}

/// One entry of `ls -lnAb --time-style=+%s`: mode, links, uid, gid, size,
/// mtime, name (escaped by `-b`, so one line per entry whatever its bytes).
fn parse_ls_line(line: &str) -> Option<Value> {
    let mut rest = line.trim_start();
    let mut fields = Vec::new();
    for _ in 0..6 {
        let end = rest.find(char::is_whitespace)?;
        let (field, tail) = rest.split_at(end);
        fields.push(field);
        rest = tail.trim_start();
    }
    let (mode, size, mtime) = (fields.first()?, fields.get(4)?, fields.get(5)?);
    let kind = match mode.chars().next()? {
        'd' => "dir",
        'l' => "symlink",
        '-' => "file",
        _ => "other",
    };
    // `-b` writes a name's spaces as `\ `, so the first " -> " is the arrow.
    let name = if kind == "symlink" {
        rest.split(" -> ").next().unwrap_or(rest)
    } else {
        rest
    };
    let (name, lossy) = unescape_ls(name);
    let mut entry = json!({
        "name": name,
        "type": kind,
        "size": size.parse::<u64>().ok(),
        "modified": mtime.parse::<u64>().ok(),
    });
    if let (true, Value::Object(m)) = (lossy, &mut entry) {
        m.insert("nameNotUtf8".into(), json!(true));
    }
    Some(entry)
}

impl Tool<'_> {
    pub(super) fn upload(&mut self, req: &Request) -> Result<Value, ToolError> {
        let run = self.find_run(req.run_id.as_deref())?;
        let profile = self.profile_for(req.cluster.as_deref(), run.as_ref())?;
        let locals = req.all_local_paths();
        if locals.is_empty() {
            return Err(invalid("localPath or localPaths is required for upload"));
        }
        let locals = locals
            .iter()
            .map(|p| workspace_relative("localPath", p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let remote_dir = self.remote_dir_for(req, run.as_ref(), &profile, "default")?;
        // Inputs keep their workspace-relative layout (the reference
        // flattened them to basenames, so equal names overwrote each other).
        let items: Vec<(String, String)> = locals
            .iter()
            .map(|local| (local.clone(), remote_join(&remote_dir, local)))
            .collect();
        let stats = self.host.upload_all(&profile.id, &items)?;
        let uploaded: Vec<Value> = items
            .iter()
            .zip(stats)
            .map(|((local, remote), s)| json!({"localPath": local, "remotePath": remote, "files": s.files, "bytes": s.bytes}))
            .collect();
        Ok(json!({
            "cluster": profile.id,
            "runId": run.map(|r| r.run_id),
            "remoteDir": remote_dir,
            "uploaded": uploaded,
        }))
    }

    pub(super) fn download(&mut self, req: &Request) -> Result<Value, ToolError> {
        let run = self.find_run(req.run_id.as_deref())?;
        let profile = self.profile_for(req.cluster.as_deref(), run.as_ref())?;
        let raw = req
            .remote_path
            .as_deref()
            .ok_or_else(|| invalid("remotePath is required for download"))?;
        let local = req
            .local_path
            .as_deref()
            .ok_or_else(|| invalid("localPath is required for download"))?;
        let base = run
            .as_ref()
            .map(|r| r.remote_run_dir.clone())
            .unwrap_or_else(|| profile.remote_root.clone());
        let remote =
            remote_under("remotePath", raw, &profile.remote_root, &base).map_err(invalid)?;
        let local = workspace_relative("localPath", local).map_err(invalid)?;
        let stats = self.host.download(&profile.id, &remote, &local)?;
        Ok(
            json!({"cluster": profile.id, "remotePath": remote, "localPath": local, "files": stats.files, "bytes": stats.bytes}),
        )
    }

    pub(super) fn download_workload_outputs(&mut self, req: &Request) -> Result<Value, ToolError> {
        let run = self.find_run(req.run_id.as_deref())?;
        if let (Some(raw), None, None) = (&req.run_id, &run, &req.remote_path) {
            return Err(invalid(format!(
                "Unknown runId: {raw} (list_runs shows the runs this workspace knows)"
            )));
        }
        let profile = self.profile_for(req.cluster.as_deref(), run.as_ref())?;
        let remote_path = match (&req.remote_path, &run) {
            (Some(raw), _) => {
                let base = run
                    .as_ref()
                    .map(|r| r.remote_run_dir.clone())
                    .unwrap_or_else(|| profile.remote_root.clone());
                remote_under("remotePath", raw, &profile.remote_root, &base).map_err(invalid)?
            }
            (None, Some(r)) => {
                let file = req.remote_file.as_deref().unwrap_or("result.json");
                remote_under(
                    "remoteFile",
                    file.trim_start_matches('/'),
                    &profile.remote_root,
                    &r.remote_run_dir,
                )
                .map_err(invalid)?
            }
            (None, None) => {
                return Err(invalid(
                    "remotePath is required (or provide runId to resolve from run directory)",
                ));
            }
        };
        let local_path = match &req.local_path {
            Some(p) => workspace_relative("localPath", p).map_err(invalid)?,
            None => {
                let folder = run
                    .as_ref()
                    .map(|r| r.run_id.as_str())
                    .unwrap_or("cluster-run");
                format!("downloads/{folder}/{}", basename(&remote_path))
            }
        };
        let stats = self.host.download(&profile.id, &remote_path, &local_path)?;
        Ok(json!({
            "mode": "download_workload_outputs",
            "runId": run.map(|r| r.run_id),
            "cluster": profile.id,
            "remotePath": remote_path,
            "localPath": local_path,
            "files": stats.files,
            "bytes": stats.bytes,
        }))
    }

    pub(super) fn list_runs(&mut self, req: &Request) -> Result<Value, ToolError> {
        let ledger = self.load_ledger()?;
        let cluster = req
            .cluster
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        let mut runs: Vec<RunRecord> = Vec::new();
        for id in ledger.runs.keys() {
            let run = ledger
                .get(id)
                .map_err(local_io)?
                .ok_or_else(|| local_io(format!("run {id} vanished")))?;
            if cluster.is_none_or(|c| run.cluster_id == c) {
                runs.push(run);
            }
        }
        runs.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
        let limit = usize::try_from(req.limit.unwrap_or(DEFAULT_RUNS_LIMIT)).unwrap_or(usize::MAX);
        let listed: Vec<Value> = runs
            .iter()
            .take(limit)
            .map(|r| {
                let approval = r.approval.as_ref().map(|a| self.approval_listing(r, a));
                json!({
                    "runId": r.run_id,
                    "clusterId": r.cluster_id,
                    "createdAt": r.created_at,
                    "updatedAt": r.updated_at,
                    "lastJobId": r.last_job_id,
                    "jobIds": r.jobs.iter().map(|j| j.job_id.clone()).collect::<Vec<_>>(),
                    "remoteRunDir": r.remote_run_dir,
                    "fallbackRunId": r.fallback_run_id,
                    "fallbackFromRunId": r.fallback_from_run_id,
                    "approval": approval,
                })
            })
            .collect();
        Ok(json!({"total": runs.len(), "truncated": runs.len() > listed.len(), "runs": listed}))
    }

    pub(super) fn list_files(&mut self, req: &Request) -> Result<Value, ToolError> {
        let run = self.find_run(req.run_id.as_deref())?;
        if let (Some(raw), None) = (&req.run_id, &run) {
            return Err(invalid(format!(
                "Unknown runId: {raw} (list_runs shows the runs this workspace knows)"
            )));
        }
        let profile = self.profile_for(req.cluster.as_deref(), run.as_ref())?;
        let base = run
            .as_ref()
            .map(|r| r.remote_run_dir.clone())
            .unwrap_or_else(|| profile.remote_root.clone());
        let dir = match &req.remote_path {
            Some(p) => {
                remote_under("remotePath", p, &profile.remote_root, &base).map_err(invalid)?
            }
            None => base,
        };
        let args = ["-lnAb", "--time-style=+%s", "--", "."]
            .map(String::from)
            .to_vec();
        let out = self.exec_ok(
            &profile.id,
            "ls",
            args,
            Some(dir.clone()),
            QUERY_TIMEOUT_MS,
            &format!("listing {dir} failed"),
        )?;
        let mut entries: Vec<Value> = out
            .stdout_text()
            .lines()
            .filter(|l| !l.starts_with("total "))
            .filter_map(parse_ls_line)
            .collect();
        entries.sort_by(|a, b| {
            a.get("name")
                .and_then(Value::as_str)
                .cmp(&b.get("name").and_then(Value::as_str))
        });
        let total = entries.len();
        let limit = usize::try_from(req.limit.unwrap_or(DEFAULT_LIST_LIMIT)).unwrap_or(usize::MAX);
        entries.truncate(limit);
        Ok(json!({
            "cluster": profile.id,
            "runId": run.map(|r| r.run_id),
            "remoteDir": dir,
            "total": total,
            "truncated": total > entries.len() || out.stdout_truncated,
            "entries": entries,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_ls_line, unescape_ls};

    #[test]
    fn ls_lines() {
        let e = parse_ls_line("-rw-r--r-- 1 1001 1001   123 1763700000 result  file.json").unwrap();
        assert_eq!(e["name"], "result  file.json");
        assert_eq!(e["size"], 123);
        assert_eq!(e["type"], "file");
        let d = parse_ls_line("drwxr-xr-x 2 1001 1001 4096 1763700000 data").unwrap();
        assert_eq!(d["type"], "dir");
        let l = parse_ls_line("lrwxrwxrwx 1 1001 1001 4 1763700000 latest -> data").unwrap();
        assert_eq!(l["name"], "latest");
        assert!(parse_ls_line("garbage").is_none());
    }

    /// Names as GNU `ls -lnAb` printed them on the testbed (coreutils 9.1),
    /// for files named with a newline, spaces, quotes, a backslash, an arrow,
    /// non-ASCII (C locale: octal) and a byte that is not UTF-8.
    #[test]
    fn escaped_names_decode_exactly() {
        for (escaped, name) in [
            ("n\\nl", "n\nl"),
            ("a\\ b", "a b"),
            ("q'\"", "q'\""),
            ("bs\\\\x", "bs\\x"),
            ("a\\ ->\\ b", "a -> b"),
            ("\\303\\251", "é"),
            ("é", "é"),
            ("t\\tx", "t\tx"),
            ("c\\001d", "c\u{1}d"),
        ] {
            let line = format!("-rw-r--r-- 1 1001 1001 0 1763700000 {escaped}");
            let e = parse_ls_line(&line).unwrap();
            assert_eq!(e["name"], name, "{escaped}");
            assert!(e.get("nameNotUtf8").is_none());
        }
        let l = parse_ls_line("lrwxrwxrwx 1 1 1 4 1763700000 li\\ nk\\ ->\\ x -> a\\ b").unwrap();
        assert_eq!(l["name"], "li nk -> x");
        assert_eq!(unescape_ls("\\377x"), ("\u{FFFD}x".to_string(), true));
        let bad = parse_ls_line("-rw-r--r-- 1 1 1 0 1 \\377\\376").unwrap();
        assert_eq!(bad["nameNotUtf8"], true);
    }
}
