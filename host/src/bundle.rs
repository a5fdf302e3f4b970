//! Many small files in one stream: a POSIX tar archive (ustar, with a pax
//! `path` record for names that do not fit), unpacked on the cluster by
//! `tar -x` reading the exec channel's stdin. One round trip instead of an
//! SFTP open/write/close per file.
//!
//! Only regular files with relative, `..`-free names from our own plan go
//! in (no directory entries: the directories are made by `mkdir -p`), so
//! the archive cannot place anything outside its directory nor replace or
//! re-permission a directory.

const BLOCK: usize = 512;

/// A tar archive being built in memory.
#[derive(Default)]
pub struct Bundle {
    bytes: Vec<u8>,
    files: usize,
}

fn octal(field: &mut [u8], value: u64) {
    // Width minus the terminating NUL, zero-padded.
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    let text = text.as_bytes();
    let start = text.len().saturating_sub(digits);
    if let Some(dst) = field.get_mut(..digits) {
        dst.copy_from_slice(text.get(start..).unwrap_or_default());
    }
}

fn put(field: &mut [u8], text: &[u8]) {
    let n = text.len().min(field.len());
    if let (Some(dst), Some(src)) = (field.get_mut(..n), text.get(..n)) {
        dst.copy_from_slice(src);
    }
}

/// Split `name` into ustar's (prefix, name) at a `/`, if it fits.
fn ustar_split(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    name.char_indices()
        .filter(|(_, c)| *c == '/')
        .map(|(i, _)| i)
        .find(|&i| i <= 155 && name.len() - i - 1 <= 100 && i > 0)
        .and_then(|i| Some((name.get(..i)?, name.get(i + 1..)?)))
}

/// One pax record, `"<len> path=<name>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}")
}

/// Only relative names without `..` (nor empty parts) go in.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.starts_with('/')
        || name.contains('\0')
        || name.split('/').any(|part| part.is_empty() || part == "..")
    {
        return Err(format!("{name:?} cannot go into a bundle"));
    }
    Ok(())
}

impl Bundle {
    pub fn new() -> Bundle {
        Bundle::default()
    }

    /// Bytes so far (headers and contents).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files == 0
    }

    fn header(&mut self, name: &str, prefix: &str, mode: u32, size: u64, kind: u8) {
        let mut h = [0u8; BLOCK];
        let (name_f, rest) = h.split_at_mut(100);
        put(name_f, name.as_bytes());
        let (mode_f, rest) = rest.split_at_mut(8);
        // Permission bits only: never setuid, setgid or sticky.
        octal(mode_f, u64::from(mode & 0o777));
        let (uid_f, rest) = rest.split_at_mut(8);
        octal(uid_f, 0);
        let (gid_f, rest) = rest.split_at_mut(8);
        octal(gid_f, 0);
        let (size_f, rest) = rest.split_at_mut(12);
        octal(size_f, size);
        let (mtime_f, rest) = rest.split_at_mut(12);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        octal(mtime_f, now);
        let (sum_f, rest) = rest.split_at_mut(8);
        sum_f.fill(b' ');
        let (kind_f, rest) = rest.split_at_mut(1);
        kind_f.fill(kind);
        let (_link, rest) = rest.split_at_mut(100);
        let (magic, rest) = rest.split_at_mut(6);
        put(magic, b"ustar\0");
        let (version, rest) = rest.split_at_mut(2);
        put(version, b"00");
        // uname, gname, devmajor, devminor: left empty.
        let (_owners, rest) = rest.split_at_mut(32 + 32 + 8 + 8);
        put(rest, prefix.as_bytes());
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        // Six octal digits, NUL, space.
        if let Some(sum_f) = h.get_mut(148..156) {
            octal(sum_f.get_mut(..7).unwrap_or_default(), sum);
            if let Some(end) = sum_f.get_mut(6..8) {
                end.copy_from_slice(b"\0 ");
            }
        }
        self.bytes.extend_from_slice(&h);
    }

    fn data(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        self.bytes.resize(self.bytes.len() + pad, 0);
    }

    /// Add a regular file named `name` (relative, `/`-separated).
    pub fn add(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), String> {
        check_name(name)?;
        match ustar_split(name) {
            Some((prefix, short)) => self.header(short, prefix, mode, data.len() as u64, b'0'),
            None => {
                let record = pax_record("path", name);
                self.header("pax-header", "", 0o644, record.len() as u64, b'x');
                self.data(record.as_bytes());
                // GNU tar takes the name from the pax record; a tar without
                // pax support gets a harmless name in the current directory.
                self.header("cluster-slurm-long-name", "", mode, data.len() as u64, b'0');
            }
        }
        self.data(data);
        self.files += 1;
        Ok(())
    }

    /// The finished archive (two zero blocks end it).
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.resize(self.bytes.len() + 2 * BLOCK, 0);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn pax_records_count_their_own_length() {
        for name in ["a", &"x".repeat(95), &"y".repeat(200)] {
            let r = pax_record("path", name);
            let (len, _) = r.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "{r:?}");
        }
    }

    #[test]
    fn gnu_tar_unpacks_what_we_pack() {
        let d = tempfile::tempdir().unwrap();
        let long_dir = "d".repeat(120);
        let very_long = format!("{}/{}", "p".repeat(160), "n".repeat(120));
        let files: Vec<(String, Vec<u8>, u32)> = vec![
            ("a.txt".into(), b"alpha\n".to_vec(), 0o644),
            ("sub/run.sh".into(), b"#!/bin/sh\necho hi\n".to_vec(), 0o755),
            ("sub/empty".into(), Vec::new(), 0o600),
            (
                format!("{long_dir}/file with spaces & 'quotes'"),
                vec![7u8; 1000],
                0o644,
            ),
            (very_long.clone(), vec![1u8; 513], 0o644),
            ("line\nbreak".into(), b"x".to_vec(), 0o644),
        ];
        let mut b = Bundle::new();
        for (name, data, mode) in &files {
            b.add(name, *mode, data).unwrap();
        }
        assert!(!b.is_empty());
        let archive = d.path().join("a.tar");
        std::fs::write(&archive, b.finish()).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        for (name, data, mode) in &files {
            let p = out.join(name);
            assert_eq!(&std::fs::read(&p).unwrap(), data, "{name}");
            use std::os::unix::fs::PermissionsExt;
            let got = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            // The extracting user's umask may clear bits, never add them.
            assert_eq!(got & !mode, 0, "{name}: {got:o} vs {mode:o}");
        }
        assert!(out.join(&very_long).exists());
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        let mut b = Bundle::new();
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a\0b"] {
            assert!(b.add(bad, 0o644, b"x").is_err(), "{bad:?}");
        }
        assert!(b.is_empty());
    }
}
