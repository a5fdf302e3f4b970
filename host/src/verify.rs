//! Checksums of both ends after an upload: each file is hashed (SHA-256)
//! from the very bytes the upload read while sending it, and on the cluster
//! by `openssl dgst -sha256` (or `sha256sum` where there is no openssl) over
//! the same shared connection; any difference fails the transfer. SFTP has
//! no end-to-end checksum of its own; this catches a file cut short or
//! changed on the way. A large file sent whole is hashed in ranges, which
//! the cluster hashes side by side ([`check_ranges`]): one SHA-256 of 1 GiB
//! took a third as long as the transfer.

use crate::sftp::RangeHash;
use crate::ssh::{Connection, SshError, quote_word};
use std::collections::HashMap;
use std::time::Duration;

/// Bytes of paths per hashing command: the whole command reaches the
/// remote shell as one argument of `sh -c`, and Linux caps one argument at
/// 128 KiB.
pub const COMMAND_BYTES: usize = 96 * 1024;
const HASH_TIMEOUT: Duration = Duration::from_secs(3600);
/// Output per command: 64 hex digits, two spaces and the path per line.
const OUTPUT_CAP: usize = 16 << 20;

/// `sha256sum` (or `openssl dgst -sha256 -r`) output as path → hash: 64 hex
/// digits, then `"  "` or `" *"`, then the name (which may itself hold
/// spaces). Names with a backslash or a line break come out escaped (a
/// leading `\`, and `\\`/`\n` in the name); they are unescaped here.
pub fn parse_sha256sum(stdout: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in stdout.lines() {
        let (escaped, line) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (Some(hash), Some(sep), Some(path)) =
            (line.get(..64), line.get(64..66), line.get(66..))
        else {
            continue;
        };
        if !hash.bytes().all(|b| b.is_ascii_hexdigit()) || !matches!(sep, "  " | " *") {
            continue;
        }
        let path = if escaped {
            unescape(path)
        } else {
            path.to_string()
        };
        out.insert(path, hash.to_ascii_lowercase());
    }
    out
}

/// sha256sum's escaping undone: `\\` is a backslash, `\n` a line break.
fn unescape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// `command` run from the home directory: a relative path means the same
/// as over SFTP (which starts there), whatever directory a login shell's rc
/// file moved to, and `cd` never searches `CDPATH`.
pub fn at_home(command: &str) -> String {
    format!("unset CDPATH; cd -- \"$HOME\" && {{ {command}; }}")
}

/// The list appears once (`set --`), so a command stays within the
/// 128 KiB a single argument may have.
pub fn hash_command(words: &[String], plain_names: bool) -> String {
    hash_command_with(words, plain_names, false)
}

/// [`hash_command`]; with `single_link`, files with more than one hard link
/// are left out too (see [`remote_hashes_for_reuse`]).
fn hash_command_with(words: &[String], plain_names: bool, single_link: bool) -> String {
    format!(
        "set -- {}; {}",
        words.join(" "),
        hash_args_with(plain_names, single_link)
    )
}

/// Hash the positional parameters (`"$@"`); `plain_names` when none holds
/// a line break or a backslash (which only `sha256sum` escapes).
///
/// Only regular files that are not links are hashed: a job can swap a
/// listed file for a FIFO (which would block the hash for ever, and the
/// hashing process outlive the call) or a link to `/dev/zero` (which would
/// burn a CPU on the login node for ever); such a name is left out, said
/// on stderr, and has no hash, which fails its check. Every hash runs
/// under coreutils `timeout` where the login node has it, so one swapped
/// in after that test still ends.
pub fn hash_args(plain_names: bool) -> String {
    hash_args_with(plain_names, false)
}

fn hash_args_with(plain_names: bool, single_link: bool) -> String {
    let links = if single_link {
        // POSIX find: the name itself (-prune), printed only with one link.
        " && [ -n \"$(find \"$n\" -prune -links 1 2>/dev/null)\" ]"
    } else {
        ""
    };
    let hash = if plain_names {
        // openssl only when it works here (a broken one on PATH must not
        // fail every check).
        "if openssl dgst -sha256 -r /dev/null >/dev/null 2>&1; then $t openssl dgst -sha256 -r \"$@\"; else $t sha256sum -- \"$@\"; fi"
    } else {
        "$t sha256sum -- \"$@\""
    };
    format!(
        "for n do shift; if [ -f \"$n\" ] && [ ! -L \"$n\" ]{links}; then set -- \"$@\" \"$n\"; else printf '%s: not a regular file, not hashed\\n' \"$n\" >&2; fi; done; [ $# -gt 0 ] || exit 1; t=; if command -v timeout >/dev/null 2>&1; then t='timeout -k 5 {}'; fi; {hash}",
        REMOTE_HASH_BOUND.as_secs()
    )
}

/// How long the cluster lets one hashing command run (a 20 GiB file at
/// 100 MB/s takes 200 s), under the host's own [`HASH_TIMEOUT`].
const REMOTE_HASH_BOUND: Duration = Duration::from_secs(1800);

/// A path as a command word that cannot be read as an option.
pub fn path_word(path: &str) -> String {
    quote_word(&printed_name(path))
}

/// How the hashing command names `path` in its output.
pub fn printed_name(path: &str) -> String {
    if path.starts_with('-') {
        format!("./{path}")
    } else {
        path.to_string()
    }
}

/// The cluster's SHA-256 of each path that it can read (path → hash), with
/// as few commands as the command-line limit allows; paths it cannot hash
/// are missing from the map, and the second value is what the hashing
/// command said about them.
pub async fn remote_hashes(
    conn: &Connection,
    paths: &[&str],
) -> Result<(HashMap<String, String>, String), SshError> {
    remote_hashes_with(conn, paths, false).await
}

/// [`remote_hashes`] of files an upload may keep or resume: only those with
/// a single hard link get a hash. A job can hard-link an outside file of
/// its user at an upload's name; a resumed upload opens the name as it is
/// and would append to that outside file (SFTP shows no link count), so a
/// file with another name elsewhere is never reused: it is sent whole, as
/// a new file.
pub async fn remote_hashes_for_reuse(
    conn: &Connection,
    paths: &[&str],
) -> Result<(HashMap<String, String>, String), SshError> {
    remote_hashes_with(conn, paths, true).await
}

async fn remote_hashes_with(
    conn: &Connection,
    paths: &[&str],
    single_link: bool,
) -> Result<(HashMap<String, String>, String), SshError> {
    let mut hashes = HashMap::new();
    let mut complaints = String::new();
    let mut rest = paths;
    while !rest.is_empty() {
        let mut words = Vec::new();
        let mut length = 0;
        for path in rest {
            let word = path_word(path);
            if !words.is_empty() && length + word.len() + 1 > COMMAND_BYTES {
                break;
            }
            length += word.len() + 1;
            words.push(word);
        }
        let (chunk, later) = rest.split_at(words.len().min(rest.len()));
        rest = later;
        let plain = chunk.iter().all(|p| !p.contains(['\n', '\\']));
        let out = conn
            .exec(
                &at_home(&hash_command_with(&words, plain, single_link)),
                None,
                HASH_TIMEOUT,
                OUTPUT_CAP,
            )
            .await?;
        let found = parse_sha256sum(&String::from_utf8_lossy(&out.stdout));
        for path in chunk {
            if let Some(hash) = found.get(&printed_name(path)) {
                hashes.insert(path.to_string(), hash.clone());
            }
        }
        let said = String::from_utf8_lossy(&out.stderr);
        if !said.trim().is_empty() {
            if !complaints.is_empty() {
                complaints.push_str("; ");
            }
            complaints.push_str(said.trim());
        }
    }
    Ok((hashes, complaints))
}

/// Compare each sent file's hash (`(remote path, sha256)`, as the upload
/// computed it) with the cluster's; the first difference, or a file the
/// cluster cannot hash, is an error. Returns how many files were checked.
pub async fn check_upload(conn: &Connection, sent: &[(String, String)]) -> Result<u32, SshError> {
    let paths: Vec<&str> = sent.iter().map(|(remote, _)| remote.as_str()).collect();
    let (theirs, complaints) = remote_hashes(conn, &paths).await?;
    let mut checked = 0;
    for (path, mine) in sent {
        match theirs.get(path) {
            Some(theirs) if theirs == mine => checked += 1,
            Some(theirs) => {
                return Err(SshError::Remote(format!(
                    "{path}: SHA-256 differs after upload (sent {mine}, cluster {theirs}); the file is damaged on the cluster, upload it again"
                )));
            }
            None => {
                return Err(SshError::Remote(format!(
                    "{path}: the cluster could not hash it after upload ({complaints})"
                )));
            }
        }
    }
    Ok(checked)
}

/// Commands that hash the ranges of each file of `files` on the cluster:
/// as many files per command as fit [`COMMAND_BYTES`], one file after the
/// other, the ranges of a file side by side (one `head -c` per range, from
/// an offset `dd` seeks to, then `wait`). Each range prints a line
/// `<file> <range> <hash> ...`, indexes into `files`; a file that cannot be
/// read is named on stderr.
pub fn range_hash_commands(files: &[(String, Vec<RangeHash>)]) -> Vec<String> {
    let preamble = "if openssl dgst -sha256 -r /dev/null >/dev/null 2>&1; then h() { openssl dgst -sha256 -r; }; else h() { sha256sum; }; fi";
    let mut commands = Vec::new();
    let mut command = String::new();
    for (j, (path, ranges)) in files.iter().enumerate() {
        let mut part = format!(
            "f={}; if test -f \"$f\" && test ! -L \"$f\" && test -r \"$f\"; then",
            path_word(path)
        );
        let last = ranges.len().saturating_sub(1);
        for (i, range) in ranges.iter().enumerate() {
            // dd only moves the shared offset (count=0); head then reads
            // exactly the range (no short reads counted as blocks). The last
            // range is read to the end, so bytes past what was sent show as
            // a difference.
            let read = if i == last {
                "cat".to_string()
            } else {
                format!("head -c {}", range.len)
            };
            let seek = if range.offset == 0 {
                String::new()
            } else {
                // One lseek of `offset` bytes (bs=1), nothing read.
                format!("dd bs=1 skip={} count=0 2>/dev/null; ", range.offset)
            };
            part.push_str(&format!(
                " {{ printf '%s\\n' \"{j} {i} $({{ {seek}{read}; }} < \"$f\" | h)\"; }} &"
            ));
        }
        part.push_str(" wait; else printf 'cannot read %s\\n' \"$f\" >&2; fi;");
        if !command.is_empty() && command.len() + part.len() > COMMAND_BYTES {
            commands.push(at_home(&format!("{preamble}; {command} true")));
            command.clear();
        }
        command.push(' ');
        command.push_str(&part);
    }
    if !command.is_empty() {
        commands.push(at_home(&format!("{preamble}; {command} true")));
    }
    commands
}

/// Output of [`range_hash_commands`] as (file, range) → hash.
pub fn parse_range_hashes(stdout: &str) -> HashMap<(usize, usize), String> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let file = words.next()?.parse().ok()?;
            let range = words.next()?.parse().ok()?;
            let hash = words.next()?;
            (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| ((file, range), hash.to_ascii_lowercase()))
        })
        .collect()
}

/// Compare each large file's range hashes (as the upload computed them)
/// with the cluster's; the first difference, or a range the cluster cannot
/// hash, is an error. Returns how many files were checked.
pub async fn check_ranges(
    conn: &Connection,
    files: &[(String, Vec<RangeHash>)],
) -> Result<u32, SshError> {
    let mut theirs = HashMap::new();
    let mut complaints = String::new();
    for command in range_hash_commands(files) {
        let out = conn.exec(&command, None, HASH_TIMEOUT, OUTPUT_CAP).await?;
        theirs.extend(parse_range_hashes(&String::from_utf8_lossy(&out.stdout)));
        let said = String::from_utf8_lossy(&out.stderr);
        if !said.trim().is_empty() {
            if !complaints.is_empty() {
                complaints.push_str("; ");
            }
            complaints.push_str(said.trim());
        }
    }
    for (j, (path, ranges)) in files.iter().enumerate() {
        for (i, range) in ranges.iter().enumerate() {
            let end = range.offset + range.len;
            match theirs.get(&(j, i)) {
                Some(h) if *h == range.sha256 => {}
                Some(h) => {
                    return Err(SshError::Remote(format!(
                        "{path}: SHA-256 of bytes {}..{end} differs after upload (sent {}, cluster {h}); the file is damaged on the cluster, upload it again",
                        range.offset, range.sha256
                    )));
                }
                None => {
                    return Err(SshError::Remote(format!(
                        "{path}: the cluster could not hash bytes {}..{end} after upload ({complaints})",
                        range.offset
                    )));
                }
            }
        }
    }
    Ok(files.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands themselves, run by the local shell (from `$HOME`, as on
    /// the cluster) on real files: every range's line comes back with its
    /// file and range index, equal to the slice's hash, also for a range
    /// that does not start at a whole MiB; a missing file is named on
    /// stderr and prints no hash; many files split into several commands.
    #[test]
    fn range_hashes_are_taken_side_by_side_by_a_real_shell() {
        use sha2::{Digest, Sha256};
        let d = tempfile::tempdir().unwrap();
        let slices = |data: &[u8], bounds: Vec<(u64, u64)>| -> Vec<RangeHash> {
            bounds
                .into_iter()
                .map(|(offset, len)| RangeHash {
                    offset,
                    len,
                    sha256: format!(
                        "{:x}",
                        Sha256::digest(&data[offset as usize..(offset + len) as usize])
                    ),
                })
                .collect()
        };
        let big = d.path().join("it's big");
        let size = 5 * (1 << 20) + 3;
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        std::fs::write(&big, &data).unwrap();
        let odd = d.path().join("-odd");
        std::fs::write(&odd, b"0123456789abcdef").unwrap();
        let files = vec![
            (
                big.to_str().unwrap().to_string(),
                slices(&data, crate::sftp::hash_ranges(size as u64)),
            ),
            (
                odd.to_str().unwrap().to_string(),
                slices(b"0123456789abcdef", vec![(0, 3), (3, 10), (13, 3)]),
            ),
            (
                d.path().join("gone").to_str().unwrap().to_string(),
                slices(b"x", vec![(0, 1)]),
            ),
        ];
        let run = |command: &str| {
            std::process::Command::new("sh")
                .args(["-c", command])
                .env("HOME", d.path())
                .env("CDPATH", "/nowhere")
                .output()
                .unwrap()
        };
        let commands = range_hash_commands(&files);
        assert_eq!(commands.len(), 1);
        let out = run(&commands[0]);
        let theirs = parse_range_hashes(&String::from_utf8_lossy(&out.stdout));
        let expected = files[0].1.len() + files[1].1.len();
        assert_eq!(theirs.len(), expected, "{out:?}");
        for (j, (_, ranges)) in files.iter().take(2).enumerate() {
            for (i, r) in ranges.iter().enumerate() {
                assert_eq!(theirs.get(&(j, i)), Some(&r.sha256), "file {j} range {i}");
            }
        }
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("gone"));
        // Relative names are relative to $HOME.
        let relative = vec![("-odd".to_string(), files[1].1.clone())];
        let out = run(&range_hash_commands(&relative)[0]);
        assert_eq!(
            parse_range_hashes(&String::from_utf8_lossy(&out.stdout)).len(),
            3,
            "{out:?}"
        );
        // Far more files than one command holds: several commands.
        let many: Vec<_> = (0..2000).map(|_| files[1].clone()).collect();
        let commands = range_hash_commands(&many);
        assert!(commands.len() > 1);
        assert!(commands.iter().all(|c| c.len() <= COMMAND_BYTES + 300));
    }

    #[test]
    fn hashing_prefers_openssl_and_keeps_awkward_names_for_sha256sum() {
        let words = vec![path_word("a b"), path_word("-x")];
        assert_eq!(words, ["'a b'", "./-x"]);
        let c = hash_command(&words, true);
        assert!(c.starts_with("set -- 'a b' ./-x;"), "{c}");
        assert!(c.contains("then $t openssl dgst -sha256 -r \"$@\""), "{c}");
        assert!(c.contains("else $t sha256sum -- \"$@\""), "{c}");
        assert_eq!(c.matches("./-x").count(), 1, "the list is there once: {c}");
        let plain = hash_command(&words, false);
        assert!(plain.starts_with("set -- 'a b' ./-x;"), "{plain}");
        assert!(plain.ends_with("$t sha256sum -- \"$@\""), "{plain}");
        // openssl's -r output is read like sha256sum's binary mode.
        let m = parse_sha256sum(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 *./-x\n",
        );
        assert!(m.contains_key("./-x"), "{m:?}");
    }

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
        // Two spaces inside a name (openssl's ` *` form too), and a
        // backslash followed by an `n` in a name.
        let m = parse_sha256sum(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 *a  b\n\\e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  c\\\\nd\n",
        );
        assert!(m.contains_key("a  b"), "{m:?}");
        assert!(m.contains_key("c\\nd"), "{m:?}");
    }

    /// A job can swap a listed file for a FIFO or a link to /dev/zero: the
    /// hashing command leaves such names out (said on stderr) and returns
    /// at once, hashing the regular files. Run by bash and dash, as login
    /// nodes do. Negative control (run): with the `[ -f ] && [ ! -L ]`
    /// filter removed, the command blocked on the FIFO (the test's 10 s
    /// bound fired).
    #[test]
    fn fifos_devices_and_links_are_never_hashed() {
        use std::process::{Command, Stdio};
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ok"), "ok").unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("zero")).unwrap();
        std::os::unix::fs::symlink("ok", d.path().join("link")).unwrap();
        let fifo = d.path().join("fifo");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let words: Vec<String> = ["ok", "zero", "link", "fifo"]
            .iter()
            .map(|n| path_word(n))
            .collect();
        for shell in ["bash", "dash"] {
            for plain in [true, false] {
                let mut child = Command::new(shell)
                    .arg("-c")
                    .arg(hash_command(&words, plain))
                    .current_dir(d.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let started = std::time::Instant::now();
                while child.try_wait().unwrap().is_none() {
                    if started.elapsed() > Duration::from_secs(10) {
                        let _ = child.kill();
                        panic!("{shell}: the hash command blocked");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let out = child.wait_with_output().unwrap();
                let hashes = parse_sha256sum(&String::from_utf8_lossy(&out.stdout));
                assert_eq!(hashes.keys().collect::<Vec<_>>(), ["ok"], "{shell} {out:?}");
                let said = String::from_utf8_lossy(&out.stderr);
                for name in ["zero", "link", "fifo"] {
                    assert!(
                        said.contains(&format!("{name}: not a regular file")),
                        "{shell}: {said}"
                    );
                }
            }
        }
    }
}
