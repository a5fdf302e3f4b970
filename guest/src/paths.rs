//! Path rules the guest applies before asking the host for anything. The host
//! checks again (by realpath locally, against `remoteRoot` remotely); these
//! checks give the agent a precise message early.

/// A workspace-relative path, normalised: no absolute paths, no `~`, no `..`.
pub fn workspace_relative(field: &str, raw: &str) -> Result<String, String> {
    let p = raw.trim().replace('\\', "/");
    if p.starts_with('/') || p.starts_with('~') {
        return Err(format!("{field} {raw:?} must be relative to the workspace"));
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if parts.is_empty() {
        return Err(format!("{field} {raw:?} names no file"));
    }
    if parts.contains(&"..") {
        return Err(format!(
            "Path must stay inside workspace: {raw} ({field} may not contain '..')"
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(format!("{field} {raw:?} contains control characters"));
    }
    Ok(parts.join("/"))
}

/// A single file name (no directories), e.g. `scriptName`.
pub fn file_name(field: &str, raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && !raw.starts_with('.')
        // Nor `-`: sbatch gets `--` before it anyway, but a name like
        // `-t999` is never meant as a file (and other tools might read it
        // as an option).
        && !raw.starts_with('-')
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "{field} {raw:?} must be a plain file name (letters, digits, . _ -; no directories, not starting with '.' or '-')"
        ))
    }
}

/// Join remote path parts with single slashes.
pub fn remote_join(base: &str, rel: &str) -> String {
    let base = base.trim_end_matches('/');
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{rel}")
    }
}

/// A remote path for `field`: relative paths resolve against `base`; the
/// result must be `root` or inside it, with no `.`/`..` segments.
pub fn remote_under(field: &str, raw: &str, root: &str, base: &str) -> Result<String, String> {
    let p = raw.trim();
    if p.starts_with('~') && !root.starts_with('~') {
        return Err(format!(
            "{field} {raw:?}: '~' is not expanded; use a path under {root}"
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(format!("{field} {raw:?} contains control characters"));
    }
    let full = if p.starts_with('/') || p.starts_with('~') {
        p.to_string()
    } else {
        remote_join(base, p)
    };
    if full.split('/').any(|s| s == ".." || s == ".") {
        return Err(format!(
            "{field} {raw:?} may not contain '.' or '..' segments"
        ));
    }
    let full = full.trim_end_matches('/').to_string();
    let root = root.trim_end_matches('/');
    if full == root || full.starts_with(&format!("{root}/")) {
        Ok(full)
    } else {
        Err(format!(
            "{field} {raw:?} is outside the profile's remoteRoot {root}"
        ))
    }
}

/// The last path segment.
pub fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_paths() {
        assert_eq!(
            workspace_relative("localPath", "./data//in.json").unwrap(),
            "data/in.json"
        );
        assert!(workspace_relative("localPath", "../x").is_err());
        assert!(workspace_relative("localPath", "a/../../x").is_err());
        assert!(workspace_relative("localPath", "/etc/passwd").is_err());
        assert!(workspace_relative("localPath", "~/.ssh/id_rsa").is_err());
        assert!(workspace_relative("localPath", ".").is_err());
    }

    #[test]
    fn file_names() {
        assert!(file_name("scriptName", "job.slurm").is_ok());
        assert!(file_name("scriptName", "../../.bashrc").is_err());
        assert!(file_name("scriptName", ".bashrc").is_err());
        assert!(file_name("scriptName", "a/b").is_err());
        // Negative control: with the `-` rule removed, `-t999` was accepted
        // (this assertion failed) and reached sbatch as an option.
        assert!(file_name("scriptName", "-t999").is_err());
        assert!(file_name("scriptName", "--wrap=id").is_err());
        assert!(file_name("scriptName", "job-1.slurm").is_ok());
    }

    #[test]
    fn remote_paths() {
        let root = "/scratch/u/runs";
        let run = "/scratch/u/runs/r1";
        assert_eq!(
            remote_under("remoteFile", "out/result.json", root, run).unwrap(),
            "/scratch/u/runs/r1/out/result.json"
        );
        assert_eq!(
            remote_under("remotePath", "/scratch/u/runs/r2/x", root, run).unwrap(),
            "/scratch/u/runs/r2/x"
        );
        assert!(remote_under("remotePath", "/scratch/u/runs2/x", root, run).is_err());
        assert!(remote_under("remoteFile", "../../../.ssh/id_rsa", root, run).is_err());
        assert!(remote_under("remotePath", "/etc/passwd", root, run).is_err());
        assert!(remote_under("remotePath", "~/x", root, run).is_err());
        // A root in the login user's home: paths stay in ~ form for the host.
        assert_eq!(
            remote_under("remoteFile", "out.json", "~/runs", "~/runs/r1").unwrap(),
            "~/runs/r1/out.json"
        );
        assert_eq!(
            remote_under("remotePath", "~/runs/r2", "~/runs", "~/runs/r1").unwrap(),
            "~/runs/r2"
        );
        assert!(remote_under("remotePath", "~/.ssh/id_rsa", "~/runs", "~/runs/r1").is_err());
        assert!(remote_under("remotePath", "~root/runs/x", "~/runs", "~/runs/r1").is_err());
        assert_eq!(basename("/a/b/c.json"), "c.json");
    }
}
