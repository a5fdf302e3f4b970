//! Faults on a real OpenSSH server: a transfer whose SSH session is killed
//! half-way resumes on the next call and arrives intact; a server whose host
//! key changes between two calls of one process is refused.
//!
//! Each test starts its own `sshd` (the testbed's config on a free loopback
//! port, its own host key), so killing its sessions or restarting it cannot
//! disturb the other tests that share the testbed's sshd. The files land in
//! the testbed user's run root, which is on this machine, so the tests watch
//! a transfer's progress and read what arrived directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_slurm_host::bindings::{HostError, host_error_parts};
use cluster_slurm_host::grants::ProfileGrant;
use cluster_slurm_host::local_fs::{Source, Target};
use cluster_slurm_host::sftp::partial_path;
use cluster_slurm_host::ssh::{ExecResult, SshError};
use cluster_slurm_host::transport::{SshTransport, Transport};
use sha2::{Digest, Sha256};

/// A test's own file or tree as an upload source.
fn src(path: &Path) -> Source {
    Source::ambient(path).unwrap()
}

/// A test's own path as a download destination.
fn dst(path: &Path) -> Target {
    Target::ambient(path).unwrap()
}

const TB: &str = "/var/tmp/cluster-slurm-testbed";
const RUN_ROOT: &str = "/var/tmp/cluster-slurm-testbed/home/slurmtest/cluster-runs";
const BIG: usize = 256 << 20;
/// Every fault test dials its own sshd many times; not the budget under test.
const TESTBED_BUDGET: u32 = 1000;
/// Cut the session once this much has arrived.
const CUT_AT: u64 = 48 << 20;

/// An sshd of our own, serving the testbed user on a free loopback port.
struct PrivateSshd {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<Child>,
}

impl PrivateSshd {
    fn start() -> PrivateSshd {
        let base = format!("{TB}/ssh/sshd_config");
        assert!(
            Path::new(&base).exists(),
            "testbed sshd_config {base} missing: run `just testbed-up`"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut sshd = PrivateSshd {
            dir: tempfile::tempdir().unwrap(),
            port,
            server: None,
        };
        sshd.new_host_key();
        sshd.launch();
        sshd.trust_current_key();
        sshd
    }

    fn host_key(&self) -> PathBuf {
        self.dir.path().join("host_key")
    }

    fn new_host_key(&self) {
        let key = self.host_key();
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen failed");
    }

    fn launch(&mut self) {
        let base = std::fs::read_to_string(format!("{TB}/ssh/sshd_config")).unwrap();
        let config: String = base
            .lines()
            .filter(|l| !l.starts_with("Port ") && !l.starts_with("HostKey "))
            .filter(|l| !l.starts_with("PidFile "))
            .map(|l| format!("{l}\n"))
            .collect();
        let cfg = self.dir.path().join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {}\nHostKey {}\nPidFile {}/sshd.pid\n{config}",
                self.port,
                self.host_key().display(),
                self.dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private sshd did not come up: {}",
                std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client's ssh_config and known_hosts, naming the current key.
    fn trust_current_key(&self) {
        let public = std::fs::read_to_string(self.host_key().with_extension("pub")).unwrap();
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        let known = self.dir.path().join("known_hosts");
        std::fs::write(&known, format!("[127.0.0.1]:{} {kind} {key}\n", self.port)).unwrap();
        std::fs::write(
            self.client_config(),
            format!(
                "Host faulty\n  HostName 127.0.0.1\n  Port {}\n  User slurmtest\n  IdentityFile {TB}/ssh/id_ed25519\n  IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile {}\n",
                self.port,
                known.display()
            ),
        )
        .unwrap();
    }

    fn client_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    fn transport(&self) -> SshTransport {
        SshTransport::new(Some(self.client_config())).with_connection_budget(TESTBED_BUDGET)
    }

    /// Kill every session process (as if the connection were cut); the
    /// listener stays up.
    fn kill_sessions(&self) -> usize {
        let Some(server) = &self.server else {
            return 0;
        };
        // Each session is a monitor process and its unprivileged child, which
        // holds the connection too: kill the whole tree below the listener.
        let mut sessions = children_of(server.id());
        let mut i = 0;
        while let Some(&pid) = sessions.get(i) {
            sessions.extend(children_of(pid));
            i += 1;
        }
        for pid in &sessions {
            // A child may already be gone with its parent.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        sessions.len()
    }

    fn stop(&mut self) {
        self.kill_sessions();
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for PrivateSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let mut fields = after.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && state != "Z" {
            out.push(pid);
        }
    }
    out
}

fn profile() -> ProfileGrant {
    ProfileGrant {
        label: "faulty".into(),
        ssh_target: "faulty".into(),
        remote_root: RUN_ROOT.into(),
    }
}

/// Write `len` pseudo-random bytes (xorshift, different for each seed) to
/// `path`, a block at a time.
fn write_noise(path: &Path, len: usize, seed: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut block = Vec::with_capacity(1 << 20);
    let mut left = len;
    while left > 0 {
        block.clear();
        while block.len() < (1 << 20).min(left) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            block.extend_from_slice(&x.to_le_bytes());
        }
        block.truncate((1 << 20).min(left));
        file.write_all(&block).unwrap();
        left -= block.len();
    }
    file.flush().unwrap();
}

fn sha_of(path: &Path) -> String {
    let mut digest = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut digest).unwrap();
    format!("{:x}", digest.finalize())
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Wait until `path` holds at least `len` bytes, then kill the sessions.
fn cut_when(sshd: &PrivateSshd, path: &Path, len: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while size_of(path) < len {
        assert!(
            Instant::now() < deadline,
            "{} never reached {len} bytes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sshd.kill_sessions() > 0, "no session to kill");
}

struct RemoteDir(PathBuf);

impl Drop for RemoteDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_mid_transfer_resumes_and_arrives_intact() {
    let sshd = Arc::new(PrivateSshd::start());
    let transport = sshd.transport();
    let local = tempfile::tempdir().unwrap();
    let big = local.path().join("big.bin");
    write_noise(&big, BIG, 0x5eed);
    let dir = format!("{RUN_ROOT}/faults-up-{}", std::process::id());
    let _cleanup = RemoteDir(PathBuf::from(&dir));
    let remote = format!("{dir}/big.bin");

    let grant = profile();
    let upload = transport.upload(&grant, src(&big), remote.clone());
    let watch = tokio::task::spawn_blocking({
        let (sshd, remote) = (sshd.clone(), PathBuf::from(&remote));
        move || cut_when(&sshd, &remote, CUT_AT)
    });
    let first = upload.await;
    watch.await.unwrap();
    let e = first.expect_err("the upload survived its session being killed");
    eprintln!("cut off: {e}");
    assert!(matches!(e, SshError::Connection(_)), "{e:?}");
    let kept = size_of(Path::new(&remote));
    assert!(
        (CUT_AT..BIG as u64).contains(&kept),
        "{kept} bytes on the cluster"
    );

    // The next call reconnects and sends only the rest.
    let again = transport
        .upload(&profile(), src(&big), remote.clone())
        .await
        .unwrap();
    eprintln!("resumed: {again:?}");
    assert!(again.resumed_bytes >= CUT_AT, "{again:?}");
    assert_eq!(again.resumed_bytes + again.bytes, BIG as u64, "{again:?}");
    assert_eq!((again.files, again.verified), (1, 1), "{again:?}");
    assert_eq!(sha_of(Path::new(&remote)), sha_of(&big));

    // And a third call finds it complete: nothing sent.
    let third = transport
        .upload(&profile(), src(&big), remote)
        .await
        .unwrap();
    assert_eq!((third.unchanged, third.bytes), (1, 0), "{third:?}");
    assert_eq!(transport.connection_attempts(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_off_mid_transfer_resumes_and_arrives_intact() {
    let sshd = Arc::new(PrivateSshd::start());
    let transport = sshd.transport();
    let dir = format!("{RUN_ROOT}/faults-down-{}", std::process::id());
    let _cleanup = RemoteDir(PathBuf::from(&dir));
    std::fs::create_dir_all(&dir).unwrap();
    let remote = format!("{dir}/big.bin");
    write_noise(Path::new(&remote), BIG, 0xd0e);
    let local = tempfile::tempdir().unwrap();
    let dest = local.path().join("results/big.bin");
    let partial = partial_path(&dest).unwrap();

    let grant = profile();
    let download = transport.download(&grant, remote.clone(), dst(&dest));
    let watch = tokio::task::spawn_blocking({
        let (sshd, partial) = (sshd.clone(), partial.clone());
        move || cut_when(&sshd, &partial, CUT_AT)
    });
    let first = download.await;
    watch.await.unwrap();
    let e = first.expect_err("the download survived its session being killed");
    eprintln!("cut off: {e}");
    assert!(matches!(e, SshError::Connection(_)), "{e:?}");
    assert!(!dest.exists(), "a partial file was put in place");
    let kept = size_of(&partial);
    assert!((CUT_AT..BIG as u64).contains(&kept), "{kept} bytes kept");

    let again = transport
        .download(&profile(), remote.clone(), dst(&dest))
        .await
        .unwrap();
    eprintln!("resumed: {again:?}");
    assert_eq!(again.resumed_bytes, kept, "{again:?}");
    assert_eq!(again.resumed_bytes + again.bytes, BIG as u64, "{again:?}");
    assert_eq!((again.files, again.verified), (1, 1), "{again:?}");
    assert_eq!(sha_of(&dest), sha_of(Path::new(&remote)));
    assert!(!partial.exists(), "the partial file was left behind");

    let third = transport
        .download(&profile(), remote, dst(&dest))
        .await
        .unwrap();
    assert_eq!((third.unchanged, third.bytes), (1, 0), "{third:?}");
}

async fn run_true(transport: &SshTransport) -> Result<ExecResult, SshError> {
    transport
        .exec(
            &profile(),
            "true".into(),
            None,
            Duration::from_secs(20),
            1024,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_that_changes_between_calls_is_refused() {
    let mut sshd = PrivateSshd::start();
    let transport = sshd.transport();
    assert_eq!(run_true(&transport).await.unwrap().exit_code, Some(0));

    // Same address, same port, another key: as if the server were replaced.
    sshd.stop();
    sshd.new_host_key();
    sshd.launch();
    // The pooled connection may not have noticed yet that the old server
    // went away: that call fails as a lost connection; the next one dials.
    let mut refused = None;
    for _ in 0..3 {
        match run_true(&transport).await {
            Err(e @ SshError::HostKeyMismatch { .. }) => {
                refused = Some(e);
                break;
            }
            Err(SshError::Connection(_) | SshError::Timeout(_)) => {
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
            other => panic!("the changed server was trusted: {other:?}"),
        }
    }
    let e = refused.expect("never refused with host-key-mismatch");
    let (kind, message) = {
        let e = HostError::from(e);
        let (kind, message) = host_error_parts(&e);
        (kind, message.to_string())
    };
    assert_eq!(kind, "host-key-mismatch");
    assert!(message.contains("127.0.0.1"), "{message}");
    eprintln!("refused: {message}");
    // Dialled again after the backoff: still refused, never trusted.
    let dialled = transport.connection_attempts();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = run_true(&transport).await.unwrap_err();
    assert!(matches!(e, SshError::HostKeyMismatch { .. }), "{e:?}");
    assert_eq!(
        transport.connection_attempts(),
        dialled + 1,
        "not dialled again"
    );
}
