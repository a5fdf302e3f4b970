//! Checksums of both ends after an upload: every file sent is hashed
//! locally (SHA-256) and on the cluster (`sha256sum`, over the same shared
//! connection), and any difference fails the transfer. SFTP has no
//! end-to-end checksum of its own; this catches a file cut short or
//! changed on the way.

use crate::ssh::{Connection, SshError, quote_word};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Paths per `sha256sum` command, well below any command-line limit.
const PATHS_PER_COMMAND: usize = 200;
const HASH_TIMEOUT: Duration = Duration::from_secs(600);

/// The files an upload of `local` to `remote` sends, as the upload walks
/// them: the file itself, or every regular file below the directory
/// (symlinks inside are skipped, never followed).
pub fn sent_files(local: &Path, remote: &str) -> std::io::Result<Vec<(PathBuf, String)>> {
    let meta = std::fs::metadata(local)?;
    if meta.is_file() {
        return Ok(vec![(local.to_path_buf(), remote.to_string())]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(
        local.to_path_buf(),
        remote.trim_end_matches('/').to_string(),
    )];
    while let Some((dir, rdir)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let rpath = format!("{rdir}/{name}");
            if ft.is_dir() {
                stack.push((entry.path(), rpath));
            } else if ft.is_file() {
                out.push((entry.path(), rpath));
            }
        }
    }
    Ok(out)
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `sha256sum` output as path → hash. Names with a backslash or a line
/// break come out escaped (a leading `\`); they are unescaped here.
pub fn parse_sha256sum(stdout: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in stdout.lines() {
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((hash, path)) = line.split_once("  ").or_else(|| line.split_once(" *")) else {
            continue;
        };
        let path = if escaped {
            path.replace("\\n", "\n").replace("\\\\", "\\")
        } else {
            path.to_string()
        };
        out.insert(path, hash.to_ascii_lowercase());
    }
    out
}

/// Compare the local and remote hashes of `files`; the first difference,
/// or a file the cluster cannot hash, is an error.
pub async fn check_upload(conn: &Connection, files: &[(PathBuf, String)]) -> Result<(), SshError> {
    for chunk in files.chunks(PATHS_PER_COMMAND) {
        let mut command = "sha256sum --".to_string();
        for (_, remote) in chunk {
            command.push(' ');
            command.push_str(&quote_word(remote));
        }
        let out = conn.exec(&command, None, HASH_TIMEOUT, 16 << 20).await?;
        let remote = parse_sha256sum(&String::from_utf8_lossy(&out.stdout));
        for (local, path) in chunk {
            let mine = sha256_file(local)
                .map_err(|e| SshError::LocalIo(format!("hashing {}: {e}", local.display())))?;
            match remote.get(path) {
                Some(theirs) if *theirs == mine => {}
                Some(theirs) => {
                    return Err(SshError::Remote(format!(
                        "{path}: SHA-256 differs after upload (local {mine}, cluster {theirs}); the file is damaged on the cluster, upload it again"
                    )));
                }
                None => {
                    return Err(SshError::Remote(format!(
                        "{path}: the cluster could not hash it after upload ({})",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256sum_output_is_read_back_including_escaped_names() {
        let out = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  runs/a b.txt\n\
                   \\5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  runs/x\\ny\\\\z\n";
        let m = parse_sha256sum(out);
        assert_eq!(
            m.get("runs/a b.txt").map(String::as_str),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert!(m.contains_key("runs/x\ny\\z"), "{m:?}");
    }

    #[test]
    fn local_hash_and_sent_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        assert_eq!(
            sha256_file(&dir.path().join("a")).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut sent: Vec<String> = sent_files(dir.path(), "r/")
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        sent.sort();
        assert_eq!(sent, ["r/a", "r/d/b"], "symlinks are not sent");
    }
}
