//! The SSH transport against the testbed's real OpenSSH server (127.0.0.1:2222,
//! from `tests/testbed/up.sh`): exec (exit codes, caps, timeouts, signals),
//! strict host keys (unknown, changed, revoked, hashed, wildcard), key file
//! and agent authentication, ProxyJump chains, connect timeouts, SFTP trees
//! verified by SHA-256, and one pooled connection shared by concurrent calls.
//! The testbed is only read; everything written lives in temp dirs. A missing
//! testbed fails these tests: bring it up with `just testbed-up`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cluster_slurm_host::confine::{Confine, DEFAULT_MAX_DOWNLOAD_BYTES};
use cluster_slurm_host::local_fs::{Source, Target};
use cluster_slurm_host::sftp;
use cluster_slurm_host::ssh::{ConnectOptions, Connection, Pool, SshError, quote_command};
use cluster_slurm_host::ssh_config::resolve;
use sha2::{Digest, Sha256};

/// A test's own file or tree as an upload source.
fn src_of(path: &Path) -> Source {
    Source::ambient(path).unwrap()
}

/// A test's own path as a download destination.
fn dst_of(path: &Path) -> Target {
    Target::ambient(path).unwrap()
}

const TB: &str = "/var/tmp/cluster-slurm-testbed/ssh";
/// The testbed is one loopback login node shared by the whole test run:
/// the per-minute budget of a real one would throttle the suite.
const TESTBED_BUDGET: u32 = 1000;

fn testbed() -> PathBuf {
    let cfg = PathBuf::from(TB).join("ssh_config");
    let text = std::fs::read_to_string(&cfg).unwrap_or_else(|e| {
        panic!(
            "testbed ssh_config {} missing ({e}): run `just testbed-up`",
            cfg.display()
        )
    });
    assert!(
        text.contains("Port 2222"),
        "these tests expect the testbed's sshd on port 2222:\n{text}"
    );
    assert!(
        std::net::TcpStream::connect("127.0.0.1:2222").is_ok(),
        "testbed sshd not answering on 127.0.0.1:2222: run `just testbed-up`"
    );
    cfg
}

fn key() -> String {
    format!("{TB}/id_ed25519")
}

/// A config with the testbed stanza plus extra text.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let base = std::fs::read_to_string(PathBuf::from(TB).join("ssh_config")).unwrap();
    let p = dir.join("ssh_config");
    std::fs::write(&p, format!("{base}\n{extra}")).unwrap();
    p
}

fn opts() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

async fn connect_tb(cfg: &Path) -> Connection {
    let params = resolve("slurm-testbed", Some(cfg)).unwrap();
    Connection::connect(&params, Some(cfg), &opts())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_basics() {
    let cfg = testbed();
    let c = connect_tb(&cfg).await;
    let t = Duration::from_secs(20);

    let r = c.exec("echo hi", None, t, 1024).await.unwrap();
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.stdout, b"hi\n");
    assert!(r.stderr.is_empty() && !r.stdout_truncated && !r.stderr_truncated);

    let r = c
        .exec("echo out; echo oops >&2; exit 3", None, t, 1024)
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"oops\n");

    // Output cap: 200 kB on each stream, keep 1000 bytes, and the command still completes.
    let r = c
        .exec("head -c 200000 /dev/zero | tr '\\0' a; head -c 200000 /dev/zero | tr '\\0' b >&2; exit 7", None, t, 1000)
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(7));
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.stdout.iter().all(|b| *b == b'a'));
    assert!(r.stdout_truncated);
    assert_eq!(r.stderr.len(), 1000);
    assert!(r.stderr_truncated);

    // stdin: 3 MB echoed back while we are still writing (no deadlock).
    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = c.exec("cat", Some(&input), t, 10_000_000).await.unwrap();
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.stdout.len(), input.len());
    assert!(r.stdout == input);
    // Without stdin, EOF is sent so `cat` ends.
    let r = c.exec("cat; echo done", None, t, 100).await.unwrap();
    assert_eq!(r.stdout, b"done\n");

    // Quoting round trip through the remote shell.
    let args: Vec<String> = vec![
        "a b".into(),
        "it's".into(),
        "$HOME".into(),
        "x\ny".into(),
        "".into(),
    ];
    let cmd = quote_command(
        "printf",
        &std::iter::once("[%s]".to_string())
            .chain(args)
            .collect::<Vec<_>>(),
    );
    let r = c.exec(&cmd, None, t, 1000).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "[a b][it's][$HOME][x\ny][]"
    );

    // Exit by signal.
    let r = c.exec("kill -TERM $$", None, t, 100).await.unwrap();
    assert_eq!(r.exit_code, None);
    assert_eq!(r.exit_signal.as_deref(), Some("TERM"));

    // Timeout: returns quickly, and the connection stays usable.
    let start = Instant::now();
    let e = c
        .exec("sleep 30", None, Duration::from_millis(800), 100)
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::Timeout(_)), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    eprintln!("timeout message: {e}");
    let r = c.exec("echo still-alive", None, t, 100).await.unwrap();
    assert_eq!(r.stdout, b"still-alive\n");
    assert!(!c.is_closed());
    c.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.is_closed());
    let e = c.exec("true", None, t, 100).await.unwrap_err();
    assert!(matches!(e, SshError::Connection(_)), "{e}");
}

fn host_pub_key() -> String {
    std::fs::read_to_string(format!("{TB}/ssh_host_ed25519_key.pub")).unwrap()
}

fn host_fingerprint() -> String {
    let out = Command::new("ssh-keygen")
        .args(["-lf", &format!("{TB}/ssh_host_ed25519_key.pub")])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

fn other_pub_key(dir: &Path) -> String {
    let k = dir.join("other");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&k)
            .status()
            .unwrap()
            .success()
    );
    std::fs::read_to_string(k.with_extension("pub")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_checks() {
    testbed();
    let d = tempfile::tempdir().unwrap();
    let empty = d.path().join("empty_kh");
    std::fs::write(&empty, "").unwrap();
    let changed = d.path().join("changed_kh");
    let other = other_pub_key(d.path());
    let other_b64 = other.split_whitespace().nth(1).unwrap();
    std::fs::write(
        &changed,
        format!("# comment line\n[127.0.0.1]:2222 ssh-ed25519 {other_b64}\n"),
    )
    .unwrap();
    let good_b64 = host_pub_key()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let wildcard = d.path().join("wild_kh");
    std::fs::write(
        &wildcard,
        format!("[127.0.0.*]:2222,!nothing ssh-ed25519 {good_b64}\n"),
    )
    .unwrap();
    let hashed = d.path().join("hashed_kh");
    std::fs::write(
        &hashed,
        format!("[127.0.0.1]:2222 ssh-ed25519 {good_b64}\n"),
    )
    .unwrap();
    assert!(
        Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&hashed)
            .output()
            .unwrap()
            .status
            .success()
    );
    let revoked = d.path().join("revoked_kh");
    std::fs::write(
        &revoked,
        format!("@revoked * ssh-ed25519 {good_b64}\n[127.0.0.1]:2222 ssh-ed25519 {good_b64}\n"),
    )
    .unwrap();

    let stanza = |name: &str, kh: &Path| {
        format!(
            "Host {name}\n  HostName 127.0.0.1\n  Port 2222\n  User slurmtest\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
             IdentityAgent none\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile none\n",
            key(),
            kh.display()
        )
    };
    let cfg = d.path().join("cfg");
    std::fs::write(
        &cfg,
        [
            stanza("unknown", &empty),
            stanza("changed", &changed),
            stanza("wild", &wildcard),
            stanza("hashed", &hashed),
            stanza("revoked", &revoked),
            format!(
                "Host twofiles\n  HostName 127.0.0.1\n  Port 2222\n  User slurmtest\n  IdentityFile {}\n  \
                 UserKnownHostsFile {} {}/known_hosts\n  GlobalKnownHostsFile none\n",
                key(),
                empty.display(),
                TB
            ),
        ]
        .concat(),
    )
    .unwrap();

    let fp = host_fingerprint();
    let p = resolve("unknown", Some(&cfg)).unwrap();
    match Connection::connect(&p, Some(&cfg), &opts())
        .await
        .unwrap_err()
    {
        SshError::HostKeyUnknown {
            host,
            port,
            fingerprint,
            known_hosts,
        } => {
            assert_eq!((host.as_str(), port), ("127.0.0.1", 2222));
            assert!(fingerprint.contains(&fp), "{fingerprint} vs {fp}");
            assert!(known_hosts.contains("empty_kh"));
        }
        other => panic!("expected HostKeyUnknown, got {other:?}"),
    }
    let e = Connection::connect(&p, Some(&cfg), &opts())
        .await
        .unwrap_err();
    eprintln!("unknown message: {e}");

    let p = resolve("changed", Some(&cfg)).unwrap();
    match Connection::connect(&p, Some(&cfg), &opts())
        .await
        .unwrap_err()
    {
        e @ SshError::HostKeyMismatch { .. } => {
            eprintln!("mismatch message: {e}");
            let SshError::HostKeyMismatch {
                line,
                known_hosts,
                port,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(line, 2);
            assert_eq!(port, 2222);
            assert!(known_hosts.ends_with("changed_kh"));
        }
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }

    for ok in ["wild", "hashed", "twofiles"] {
        let p = resolve(ok, Some(&cfg)).unwrap();
        let c = Connection::connect(&p, Some(&cfg), &opts())
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
        let r = c
            .exec("echo ok", None, Duration::from_secs(10), 100)
            .await
            .unwrap();
        assert_eq!(r.stdout, b"ok\n");
    }
    let p = resolve("revoked", Some(&cfg)).unwrap();
    let e = Connection::connect(&p, Some(&cfg), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(e, SshError::HostKeyRevoked { line: 1, .. }),
        "{e:?}"
    );
}

struct Agent {
    pid: u32,
    sock: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let sock = dir.join("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-a")
            .arg(&sock)
            .arg("-s")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let pid: u32 = text
            .split(';')
            .find_map(|p| p.trim().strip_prefix("SSH_AGENT_PID="))
            .unwrap()
            .parse()
            .unwrap();
        Agent { pid, sock }
    }
    fn add(&self, key: &Path) {
        let st = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.sock)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication() {
    testbed();
    let d = tempfile::tempdir().unwrap();
    let agent = Agent::start(d.path());
    agent.add(Path::new(&key()));

    // Passphrase-protected copy of the testbed key (+ .pub for agent matching).
    let enc = d.path().join("enc_key");
    std::fs::copy(key(), &enc).unwrap();
    std::fs::copy(format!("{}.pub", key()), d.path().join("enc_key.pub")).unwrap();
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-p", "-P", "", "-N", "secret", "-f"])
            .arg(&enc)
            .status()
            .unwrap()
            .success()
    );
    // An unauthorised key.
    let stranger = d.path().join("stranger");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&stranger)
            .status()
            .unwrap()
            .success()
    );

    let common = format!(
        "  HostName 127.0.0.1\n  Port 2222\n  User slurmtest\n  UserKnownHostsFile {TB}/known_hosts\n  GlobalKnownHostsFile none\n"
    );
    let cfg = d.path().join("cfg");
    std::fs::write(
        &cfg,
        format!(
            "Host agent-only\n{common}  IdentityFile {nokey}\n  IdentityAgent {sock}\n\
             Host agent-restricted\n{common}  IdentityFile {stranger}\n  IdentitiesOnly yes\n  IdentityAgent {sock}\n\
             Host agent-encrypted\n{common}  IdentityFile {enc}\n  IdentitiesOnly yes\n  IdentityAgent {sock}\n\
             Host encrypted-no-agent\n{common}  IdentityFile {enc}\n  IdentityFile {stranger}\n  IdentityAgent none\n\
             Host keyfile\n{common}  IdentityFile {stranger}\n  IdentityFile {key}\n  IdentityAgent none\n",
            nokey = d.path().join("missing_key").display(),
            sock = agent.sock.display(),
            stranger = stranger.display(),
            enc = enc.display(),
            key = key(),
        ),
    )
    .unwrap();

    let ok = |name: &'static str| {
        let cfg = cfg.clone();
        async move {
            let p = resolve(name, Some(&cfg)).unwrap();
            let c = Connection::connect(&p, Some(&cfg), &opts())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let r = c
                .exec("whoami", None, Duration::from_secs(10), 100)
                .await
                .unwrap();
            assert_eq!(r.stdout, b"slurmtest\n", "{name}");
        }
    };
    ok("agent-only").await;
    ok("agent-encrypted").await;
    ok("keyfile").await;

    for (name, must_contain) in [
        (
            "agent-restricted",
            vec!["slurmtest@127.0.0.1:2222", "stranger", "IdentitiesOnly"],
        ),
        (
            "encrypted-no-agent",
            vec![
                "slurmtest@127.0.0.1:2222",
                "passphrase-protected",
                "stranger",
            ],
        ),
    ] {
        let p = resolve(name, Some(&cfg)).unwrap();
        let e = Connection::connect(&p, Some(&cfg), &opts())
            .await
            .unwrap_err();
        eprintln!("{name}: {e}");
        assert!(matches!(e, SshError::AuthFailed(_)), "{name}: {e:?}");
        let m = e.to_string();
        for s in must_contain {
            assert!(m.contains(s), "{name}: {m} lacks {s}");
        }
    }
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump() {
    testbed();
    let d = tempfile::tempdir().unwrap();
    let other = other_pub_key(d.path());
    let bad_kh = d.path().join("bad_kh");
    std::fs::write(
        &bad_kh,
        format!(
            "[127.0.0.1]:2222 {}\n",
            other
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    )
    .unwrap();
    let cfg = write_config(
        d.path(),
        &format!(
            "Host jumped\n  HostName 127.0.0.1\n  Port 2222\n  User slurmtest\n  IdentityFile {k}\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {TB}/known_hosts\n  ProxyJump slurm-testbed\n\
             Host jumped2\n  HostName 127.0.0.1\n  Port 2222\n  User slurmtest\n  IdentityFile {k}\n  \
             UserKnownHostsFile {TB}/known_hosts\n  ProxyJump slurm-testbed,jumped\n\
             Host jumped-badkey\n  HostName 127.0.0.1\n  Port 2222\n  User slurmtest\n  IdentityFile {k}\n  \
             UserKnownHostsFile {bad}\n  GlobalKnownHostsFile none\n  ProxyJump slurm-testbed\n\
             Host loop\n  HostName 127.0.0.1\n  Port 2222\n  ProxyJump loop\n\
             Host pc\n  ProxyCommand nc %h %p\n",
            k = key(),
            bad = bad_kh.display()
        ),
    );
    for name in ["jumped", "jumped2"] {
        let p = resolve(name, Some(&cfg)).unwrap();
        let c = Connection::connect(&p, Some(&cfg), &opts())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let r = c
            .exec("echo $SSH_CONNECTION", None, Duration::from_secs(10), 200)
            .await
            .unwrap();
        eprintln!(
            "{name}: {c:?} SSH_CONNECTION={}",
            String::from_utf8_lossy(&r.stdout).trim()
        );
        assert_eq!(r.exit_code, Some(0));
        // Tunnelled connections also work for SFTP.
        let s = c.open_sftp().await.unwrap();
        assert!(s.try_exists(".ssh").await.unwrap());
    }
    let p = resolve("jumped-badkey", Some(&cfg)).unwrap();
    let e = Connection::connect(&p, Some(&cfg), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(e, SshError::HostKeyMismatch { line: 1, .. }),
        "{e:?}"
    );
    let p = resolve("loop", Some(&cfg)).unwrap();
    let e = Connection::connect(&p, Some(&cfg), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::Config(_)), "{e:?}");
    eprintln!("loop: {e}");
    let p = resolve("pc", Some(&cfg)).unwrap();
    let e = Connection::connect(&p, Some(&cfg), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::Config(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout() {
    // A TCP server that accepts but never speaks SSH.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    std::fs::write(&cfg, format!("Host silent\n  HostName 127.0.0.1\n  Port {port}\n  ConnectTimeout 1\n  IdentityAgent none\n")).unwrap();
    let p = resolve("silent", Some(&cfg)).unwrap();
    let start = Instant::now();
    let e = Connection::connect(&p, Some(&cfg), &ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, SshError::Timeout(_)), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    // Nothing listening: a Connection error.
    drop(_server);
    let p = resolve(&format!("u@127.0.0.1:{}", 1), None).unwrap();
    let e = Connection::connect(&p, None, &opts()).await.unwrap_err();
    assert!(matches!(e, SshError::Connection(_)), "{e:?}");
    eprintln!("refused: {e}");
}

fn sha(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    format!("{:x}", Sha256::digest(&data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sftp_tree_round_trip() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = testbed();
    let c = connect_tb(&cfg).await;
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a.txt"), "hello\n").unwrap();
    std::fs::write(src.join("sub/zero.bin"), "").unwrap();
    std::fs::write(src.join("sub/deeper/run.sh"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::set_permissions(
        src.join("sub/deeper/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // 20 MB of pseudo-random bytes.
    let mut big = vec![0u8; 20 * 1024 * 1024];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link-to-a")).unwrap();
    std::os::unix::fs::symlink("/etc", src.join("sub/link-to-etc")).unwrap();

    let remote_root = format!("sshdev-test-{}", std::process::id());
    let remote = format!("{remote_root}/up/nested/tree");
    let s = c.open_sftp().await.unwrap();
    // The test's own remote root, resolved on the cluster (made if missing).
    let confine = Confine::resolve(&s, &remote_root, DEFAULT_MAX_DOWNLOAD_BYTES, true)
        .await
        .unwrap();
    let start = Instant::now();
    let up = sftp::upload(&c, &src_of(&src), &remote, &remote_root)
        .await
        .unwrap();
    eprintln!("upload: {up:?} in {:?}", start.elapsed());
    assert_eq!(up.files, 4);
    assert_eq!(up.bytes, 6 + 19 + big.len() as u64);
    assert_eq!(up.skipped, 2);

    // Remote check with sha256sum over exec.
    // Remote symlinks must be skipped by download, not followed.
    let r = c
        .exec(
            &format!("ln -s a.txt {remote}/remote-link && ln -s /etc {remote}/sub/etc-link"),
            None,
            Duration::from_secs(10),
            100,
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0));
    let r = c
        .exec(
            &format!(
                "cd {remote} && sha256sum sub/big.bin && stat -c %a sub/deeper/run.sh && ls -A"
            ),
            None,
            Duration::from_secs(20),
            10_000,
        )
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(out.contains(&sha(&src.join("sub/big.bin"))), "{out}");
    assert!(out.contains("755"), "{out}");
    assert!(!out.contains("link-to-a"), "{out}");

    let dst = d.path().join("down/x/y");
    let start = Instant::now();
    let down = sftp::download(&c, &s, &remote, &dst_of(&dst), &confine)
        .await
        .unwrap();
    eprintln!("download: {down:?} in {:?}", start.elapsed());
    assert_eq!(down.files, 4);
    assert_eq!(down.skipped, 2);
    assert!(!dst.join("remote-link").exists() && !dst.join("sub/etc-link").exists());
    assert_eq!(down.bytes, up.bytes);
    for f in ["a.txt", "sub/zero.bin", "sub/deeper/run.sh", "sub/big.bin"] {
        assert_eq!(sha(&src.join(f)), sha(&dst.join(f)), "{f}");
    }
    assert!(dst.join("empty").is_dir());
    let mode = std::fs::metadata(dst.join("sub/deeper/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o100 != 0, "{mode:o}");
    // No leftover temp files anywhere.
    let mut stack = vec![d.path().join("down")];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            assert!(
                !e.file_name()
                    .to_string_lossy()
                    .contains("cluster-slurm-part"),
                "{:?}",
                e.path()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }

    // Single files: upload to a new nested path, download over an existing file.
    let st = sftp::upload(
        &c,
        &src_of(&src.join("a.txt")),
        &format!("{remote_root}/single/dir/a.txt"),
        &remote_root,
    )
    .await
    .unwrap();
    assert_eq!((st.files, st.bytes), (1, 6));
    std::fs::write(d.path().join("existing"), "old contents that are longer").unwrap();
    let st = sftp::download(
        &c,
        &s,
        &format!("{remote_root}/single/dir/a.txt"),
        &dst_of(&d.path().join("existing")),
        &confine,
    )
    .await
    .unwrap();
    assert_eq!((st.files, st.bytes), (1, 6));
    assert_eq!(
        std::fs::read_to_string(d.path().join("existing")).unwrap(),
        "hello\n"
    );

    // Errors.
    let e = sftp::download(
        &c,
        &s,
        &format!("{remote_root}/nope.txt"),
        &dst_of(&d.path().join("nope")),
        &confine,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, SshError::Remote(m) if m.contains("nope.txt") && m.contains("no such file")),
        "{e:?}"
    );
    assert!(!d.path().join("nope").exists());
    std::os::unix::fs::symlink(d.path().join("target-of-link"), d.path().join("dest-link"))
        .unwrap();
    let e = sftp::download(
        &c,
        &s,
        &format!("{remote_root}/single/dir/a.txt"),
        &dst_of(&d.path().join("dest-link")),
        &confine,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SshError::LocalIo(_)), "{e:?}");
    assert!(!d.path().join("target-of-link").exists());
    // A missing local source cannot even be opened.
    assert!(Source::ambient(&d.path().join("missing-local")).is_err());
    // Uploading below a remote *file* fails cleanly.
    let e = sftp::upload(
        &c,
        &src_of(&src.join("a.txt")),
        &format!("{remote_root}/single/dir/a.txt/below"),
        &remote_root,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SshError::Remote(_)), "{e:?}");
    eprintln!("below-file: {e}");
    // A remote file we cannot read.
    c.exec(
        &format!("echo secret > {remote_root}/locked && chmod 000 {remote_root}/locked"),
        None,
        Duration::from_secs(10),
        100,
    )
    .await
    .unwrap();
    let e = sftp::download(
        &c,
        &s,
        &format!("{remote_root}/locked"),
        &dst_of(&d.path().join("locked")),
        &confine,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, SshError::Remote(m) if m.contains("permission denied")),
        "{e:?}"
    );
    assert!(std::fs::read_dir(d.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains("cluster-slurm-part")
    }));

    let _ = s.close().await;
    let r = c
        .exec(
            &format!("rm -rf {remote_root}"),
            None,
            Duration::from_secs(20),
            100,
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_shares_one_connection() {
    let cfg = testbed();
    let pool = std::sync::Arc::new(Pool::new());
    let params = resolve("slurm-testbed", Some(&cfg)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let pool = pool.clone();
        let params = params.clone();
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let c = pool.get("tb", &params, Some(&cfg), &opts()).await.unwrap();
            let r = c
                .exec(
                    &format!("sleep 0.3; echo {i} $SSH_CONNECTION"),
                    None,
                    Duration::from_secs(30),
                    1000,
                )
                .await
                .unwrap();
            (c.id(), String::from_utf8(r.stdout).unwrap())
        }));
    }
    let start = Instant::now();
    let mut ids = Vec::new();
    let mut client_ports = std::collections::BTreeSet::new();
    for t in tasks {
        let (id, out) = t.await.unwrap();
        ids.push(id);
        // "<i> <client ip> <client port> <server ip> <server port>"
        client_ports.insert(out.split_whitespace().nth(2).unwrap().to_string());
    }
    eprintln!(
        "20 pooled execs (sleep 0.3 each, max 8 concurrent) took {:?}",
        start.elapsed()
    );
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(client_ports.len(), 1, "{client_ports:?}");

    // A closed connection is replaced transparently.
    let c = pool.get("tb", &params, Some(&cfg), &opts()).await.unwrap();
    c.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.is_closed());
    let c2 = pool.get("tb", &params, Some(&cfg), &opts()).await.unwrap();
    assert_ne!(c.id(), c2.id());
    assert!(!c2.is_closed());
    assert_eq!(
        c2.exec("echo again", None, Duration::from_secs(10), 100)
            .await
            .unwrap()
            .stdout,
        b"again\n"
    );

    // Concurrent first callers of a failing label share one attempt's error.
    let mut bad = params.clone();
    bad.port = 1;
    let start = Instant::now();
    let o = opts();
    let (a, b) = tokio::join!(
        pool.get("bad", &bad, Some(&cfg), &o),
        pool.get("bad", &bad, Some(&cfg), &o)
    );
    assert!(a.is_err() && b.is_err());
    assert!(start.elapsed() < Duration::from_secs(5));
    pool.close_all().await;
}

/// A login node that refuses connections is not stormed: after the budget
/// of new connections for the minute, the pool refuses without dialling.
#[tokio::test]
async fn connection_budget_refuses_instead_of_storming() {
    // A port nothing listens on: every attempt fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let params = resolve(&format!("nobody@127.0.0.1:{port}"), None).unwrap();
    let pool = Pool::with_budget(3).with_backoff(Duration::ZERO);
    let mut refused_by_budget = 0;
    for _ in 0..6 {
        match pool.get("busy", &params, None, &opts()).await {
            Err(SshError::Connection(m)) if m.contains("budget") => refused_by_budget += 1,
            Err(_) => {}
            Ok(_) => panic!("connected to a closed port"),
        }
    }
    assert_eq!(pool.attempts(), 3, "the pool dialled past its budget");
    assert_eq!(refused_by_budget, 3);
}

/// After a failed connection attempt the next waits (1 s, then 2 s, ...):
/// calls in between get the last error and when the next try is allowed.
#[tokio::test]
async fn failed_connections_are_retried_with_backoff() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let params = resolve(&format!("nobody@127.0.0.1:{port}"), None).unwrap();
    let pool = Pool::with_budget(100).with_backoff(Duration::from_millis(500));
    let refused = |e: SshError| match e {
        SshError::Connection(m) => m,
        other => panic!("{other:?}"),
    };
    refused(pool.get("down", &params, None, &opts()).await.unwrap_err());
    assert_eq!(pool.attempts(), 1);
    // At once: not dialled again.
    let m = refused(pool.get("down", &params, None, &opts()).await.unwrap_err());
    assert!(m.contains("not retried yet: 1 failed attempt(s)"), "{m}");
    assert_eq!(pool.attempts(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    refused(pool.get("down", &params, None, &opts()).await.unwrap_err());
    assert_eq!(pool.attempts(), 2, "not retried after the backoff");
    // Now the wait has doubled: 400 ms is not enough, 1,100 ms is.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m = refused(pool.get("down", &params, None, &opts()).await.unwrap_err());
    assert!(m.contains("2 failed attempt(s)"), "{m}");
    assert_eq!(pool.attempts(), 2);
    tokio::time::sleep(Duration::from_millis(700)).await;
    refused(pool.get("down", &params, None, &opts()).await.unwrap_err());
    assert_eq!(pool.attempts(), 3);
}

/// 100 tool calls at once through one host process, against the testbed:
/// all answered, one SSH connection, and the ledger holds all 100 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_calls_share_one_connection_and_lose_nothing() {
    use cluster_slurm_host::grants::Grants;
    use cluster_slurm_host::runtime::Runtime;
    use cluster_slurm_host::transport::SshTransport;
    use std::sync::Arc;

    let cfg = testbed();
    let ws = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "defaultCluster": "tb",
        "clusters": {"tb": {"sshTarget": "slurm-testbed",
                            "remoteRoot": "/var/tmp/cluster-slurm-testbed/home/slurmtest/cluster-runs"}}
    });
    let grants = Arc::new(Grants::from_config(&config, ws.path()).unwrap());
    let transport = Arc::new(SshTransport::new(Some(cfg)).with_connection_budget(TESTBED_BUDGET));
    let wasm_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/guest/cluster_slurm_guest.wasm");
    let wasm = std::fs::read(&wasm_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `just guest`)", wasm_path.display()));
    let runtime = Arc::new(Runtime::new(&wasm, grants, transport.clone()).unwrap());
    let config = config.to_string();
    let started = Instant::now();
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let runtime = runtime.clone();
            let config = config.clone();
            tokio::spawn(async move {
                let request =
                    serde_json::json!({"action": "init_run", "prefix": format!("many{i}")});
                runtime.invoke(&config, &request.to_string()).await
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for call in calls {
        let answer = call.await.unwrap().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        ids.insert(v["run"]["runId"].as_str().unwrap().to_string());
    }
    eprintln!("100 concurrent init_run calls: {:?}", started.elapsed());
    assert_eq!(ids.len(), 100);
    assert_eq!(
        transport.connection_attempts(),
        1,
        "more than one SSH connection"
    );
    let ledger: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.path().join(".openclaw/cluster-runs/runs.json")).unwrap(),
    )
    .unwrap();
    let recorded: std::collections::BTreeSet<String> = ledger["runs"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(recorded, ids, "the ledger lost runs");
}

/// Uploads are checked end to end: after the SFTP transfer, every file's
/// SHA-256 on the cluster must equal the local one (awkward names included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_verified_by_sha256_on_both_ends() {
    use cluster_slurm_host::grants::ProfileGrant;
    use cluster_slurm_host::transport::{SshTransport, Transport};

    let cfg = testbed();
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub dir")).unwrap();
    for (name, body) in [
        ("plain.txt", "1"),
        ("it's \\ odd.txt", "22"),
        ("sub dir/line\nbreak", "333"),
    ] {
        std::fs::write(tree.join(name), body).unwrap();
    }
    std::fs::write(tree.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    let profile = ProfileGrant {
        label: "tb".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: "/var/tmp/cluster-slurm-testbed/home/slurmtest/cluster-runs".into(),
    };
    let remote = format!(
        "/var/tmp/cluster-slurm-testbed/home/slurmtest/cluster-runs/verify-{}",
        std::process::id()
    );
    let transport = SshTransport::new(Some(cfg)).with_connection_budget(TESTBED_BUDGET);
    let moved = transport
        .upload(&profile, src_of(&tree), remote.clone())
        .await
        .unwrap();
    assert_eq!(moved.files, 4);
    assert_eq!(moved.verified, 4, "not every file was checked on both ends");
    // What the check compared, read back independently.
    let on_disk = std::fs::read(format!("{remote}/sub dir/line\nbreak")).unwrap();
    assert_eq!(on_disk, b"333");
    let _ = std::fs::remove_dir_all(&remote);
}

/// The check itself: a file on the cluster that is not what was sent is a
/// transfer failure naming both hashes.
#[tokio::test]
async fn a_file_that_differs_on_the_cluster_fails_the_check() {
    let cfg = testbed();
    let conn = connect_tb(&cfg).await;
    let remote = format!(
        "/var/tmp/cluster-slurm-testbed/home/slurmtest/cluster-runs/verify-bad-{}",
        std::process::id()
    );
    std::fs::write(&remote, b"what arrived").unwrap();
    let sent_hash = format!("{:x}", Sha256::digest(b"what was sent"));
    let e = cluster_slurm_host::verify::check_upload(&conn, &[(remote.clone(), sent_hash.clone())])
        .await
        .unwrap_err();
    let arrived_hash = format!("{:x}", Sha256::digest(b"what arrived"));
    assert!(
        matches!(&e, SshError::Remote(m) if m.contains("differs") && m.contains(&sent_hash) && m.contains(&arrived_hash)),
        "{e:?}"
    );
    let missing =
        cluster_slurm_host::verify::check_upload(&conn, &[(format!("{remote}-gone"), sent_hash)])
            .await;
    assert!(matches!(missing, Err(SshError::Remote(m)) if m.contains("could not hash")));
    let _ = std::fs::remove_file(&remote);
}

/// A large file sent whole is checked by ranges, hashed side by side on the
/// cluster; a byte changed in one range afterwards is found, and the error
/// names that range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_is_checked_by_ranges_and_a_damaged_range_is_named() {
    use cluster_slurm_host::grants::ProfileGrant;
    use cluster_slurm_host::sftp::{RANGED_MIN, RangeHash, hash_ranges};
    use cluster_slurm_host::transport::{SshTransport, Transport};
    use std::io::{Seek, SeekFrom, Write};

    let cfg = testbed();
    let local = tempfile::tempdir().unwrap();
    let size = RANGED_MIN as usize + 12_345;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 255) as u8).collect();
    let file = local.path().join("large.bin");
    std::fs::write(&file, &data).unwrap();
    let root = "/var/tmp/cluster-slurm-testbed/home/slurmtest/cluster-runs";
    let profile = ProfileGrant {
        label: "tb".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: root.into(),
    };
    let remote = format!("{root}/ranged-{}.bin", std::process::id());
    let moved = SshTransport::new(Some(cfg.clone()))
        .with_connection_budget(TESTBED_BUDGET)
        .upload(&profile, src_of(&file), remote.clone())
        .await
        .unwrap();
    assert_eq!(
        (moved.files, moved.verified, moved.bytes),
        (1, 1, size as u64),
        "{moved:?}"
    );
    assert_eq!(std::fs::read(&remote).unwrap(), data);

    // The third range damaged on the cluster, one byte.
    let ranges: Vec<RangeHash> = hash_ranges(size as u64)
        .into_iter()
        .map(|(offset, len)| RangeHash {
            offset,
            len,
            sha256: format!(
                "{:x}",
                Sha256::digest(&data[offset as usize..(offset + len) as usize])
            ),
        })
        .collect();
    let conn = connect_tb(&cfg).await;
    assert_eq!(
        cluster_slurm_host::verify::check_ranges(&conn, &[(remote.clone(), ranges.clone())])
            .await
            .unwrap(),
        1
    );
    let third = &ranges[2];
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&remote)
        .unwrap();
    f.seek(SeekFrom::Start(third.offset + 7)).unwrap();
    f.write_all(&[data[third.offset as usize + 7] ^ 0xff])
        .unwrap();
    drop(f);
    let e = cluster_slurm_host::verify::check_ranges(&conn, &[(remote.clone(), ranges.clone())])
        .await
        .unwrap_err();
    let named = format!("bytes {}..{}", third.offset, third.offset + third.len);
    assert!(
        matches!(&e, SshError::Remote(m) if m.contains(&named) && m.contains("differs")),
        "{e:?}"
    );
    // Gone: said so, not "differs".
    std::fs::remove_file(&remote).unwrap();
    let e = cluster_slurm_host::verify::check_ranges(&conn, &[(remote.clone(), ranges)])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SshError::Remote(m) if m.contains("could not hash") && m.contains("cannot read")),
        "{e:?}"
    );
}

/// A second upload or download of the same tree sends nothing; after one
/// file changes, only that file moves (and is checked again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_files_are_skipped_and_changed_ones_sent() {
    use cluster_slurm_host::grants::ProfileGrant;
    use cluster_slurm_host::transport::{SshTransport, Transport};

    let cfg = testbed();
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("inputs");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    for (name, body) in [("a.txt", "alpha"), ("empty", "")] {
        std::fs::write(tree.join(name), body).unwrap();
    }
    // Above the bundle limit: what the cluster already holds is not sent again.
    let big = vec![5u8; 2 << 20];
    std::fs::write(tree.join("sub/b.bin"), &big).unwrap();
    let root = "/var/tmp/cluster-slurm-testbed/home/slurmtest/cluster-runs";
    let profile = ProfileGrant {
        label: "tb".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: root.into(),
    };
    let remote = format!("{root}/skip-{}", std::process::id());
    let transport = SshTransport::new(Some(cfg)).with_connection_budget(TESTBED_BUDGET);

    let first = transport
        .upload(&profile, src_of(&tree), remote.clone())
        .await
        .unwrap();
    let big_len = big.len() as u64;
    assert_eq!(
        (first.files, first.unchanged, first.bytes),
        (3, 0, 5 + big_len)
    );
    let second = transport
        .upload(&profile, src_of(&tree), remote.clone())
        .await
        .unwrap();
    // The large file is skipped; small ones ride along in the bundle
    // (cheaper than asking the cluster about them first).
    assert_eq!(
        (second.files, second.unchanged, second.bundled, second.bytes),
        (3, 1, 2, 5),
        "{second:?}"
    );
    assert_eq!(second.verified, 3);
    // Same length, other content: found by its hash, sent again.
    let mut edited = big.clone();
    edited[1000] = 6;
    std::fs::write(tree.join("sub/b.bin"), &edited).unwrap();
    let third = transport
        .upload(&profile, src_of(&tree), remote.clone())
        .await
        .unwrap();
    assert_eq!(
        (third.unchanged, third.bytes),
        (0, 5 + big_len),
        "{third:?}"
    );
    assert_eq!(
        std::fs::read(format!("{remote}/sub/b.bin")).unwrap(),
        edited
    );

    let back = local.path().join("back");
    let down = transport
        .download(&profile, remote.clone(), dst_of(&back))
        .await
        .unwrap();
    assert_eq!((down.files, down.verified, down.unchanged), (3, 3, 0));
    let again = transport
        .download(&profile, remote.clone(), dst_of(&back))
        .await
        .unwrap();
    assert_eq!((again.unchanged, again.bytes), (3, 0), "{again:?}");
    std::fs::write(back.join("a.txt"), "local edit").unwrap();
    let restored = transport
        .download(&profile, remote.clone(), dst_of(&back))
        .await
        .unwrap();
    assert_eq!((restored.unchanged, restored.bytes), (2, 5), "{restored:?}");
    assert_eq!(
        std::fs::read_to_string(back.join("a.txt")).unwrap(),
        "alpha"
    );
    let _ = std::fs::remove_dir_all(&remote);
}

/// Many small files travel as tar bundles (one command each, not an SFTP
/// open/write/close per file); large ones over SFTP; all are checked — with
/// more names than one command line could hash at once (so several
/// streams, two at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_travel_in_bundles() {
    use cluster_slurm_host::grants::ProfileGrant;
    use cluster_slurm_host::transport::{SshTransport, Transport};
    use std::os::unix::fs::PermissionsExt;

    let cfg = testbed();
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("inputs");
    // 1,500 names of 70+ bytes: more than one command's worth.
    let name = |i: usize| format!("part{}/f{i}-{}.txt", i % 7, "n".repeat(60));
    for i in 0..1500 {
        let dir = tree.join(format!("part{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(tree.join(name(i)), format!("file {i}\n").repeat(i % 13)).unwrap();
    }
    std::fs::write(tree.join("run.sh"), "#!/bin/sh\necho ok\n").unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(tree.join("big.bin"), vec![3u8; 3 << 20]).unwrap();
    std::fs::create_dir_all(tree.join("empty/inside")).unwrap();
    // 20 MiB of files at the size limit: more than one bundle.
    std::fs::create_dir_all(tree.join("limit")).unwrap();
    for i in 0..20u8 {
        std::fs::write(tree.join(format!("limit/m{i}")), vec![i; 1 << 20]).unwrap();
    }
    let root = "/var/tmp/cluster-slurm-testbed/home/slurmtest/cluster-runs";
    let profile = ProfileGrant {
        label: "tb".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: root.into(),
    };
    let remote = format!("{root}/bundle-{}", std::process::id());
    let transport = SshTransport::new(Some(cfg)).with_connection_budget(TESTBED_BUDGET);
    let moved = transport
        .upload(&profile, src_of(&tree), remote.clone())
        .await
        .unwrap();
    assert_eq!(
        (moved.files, moved.bundled, moved.verified),
        (1522, 1521, 1522),
        "{moved:?}"
    );
    for i in [0, 1, 150, 1499] {
        let rel = name(i);
        assert_eq!(
            std::fs::read(format!("{remote}/{rel}")).unwrap(),
            std::fs::read(tree.join(&rel)).unwrap(),
            "{rel}"
        );
    }
    assert_eq!(
        std::fs::read(format!("{remote}/limit/m19")).unwrap(),
        vec![19u8; 1 << 20]
    );
    assert!(std::path::Path::new(&format!("{remote}/empty/inside")).is_dir());
    let mode = std::fs::metadata(format!("{remote}/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o100 != 0, "{mode:o}");
    let again = transport
        .upload(&profile, src_of(&tree), remote.clone())
        .await
        .unwrap();
    // Again: the large file is not sent; the small ones ride in bundles.
    assert_eq!(
        (again.unchanged, again.bundled, again.verified),
        (1, 1521, 1522),
        "{again:?}"
    );
    let _ = std::fs::remove_dir_all(&remote);
}

/// The partial file of a download: a foreign one that is not a prefix is
/// replaced by a whole fetch; one another download holds is left alone; a
/// tree that has a file named like another's partial is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_partials_are_guarded() {
    use cluster_slurm_host::grants::ProfileGrant;
    use cluster_slurm_host::sftp::partial_path;
    use cluster_slurm_host::transport::{SshTransport, Transport};

    let cfg = testbed();
    let root = "/var/tmp/cluster-slurm-testbed/home/slurmtest/cluster-runs";
    let profile = ProfileGrant {
        label: "tb".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: root.into(),
    };
    let remote = format!("{root}/partials-{}", std::process::id());
    std::fs::create_dir_all(&remote).unwrap();
    std::fs::write(format!("{remote}/data.txt"), "the real contents\n").unwrap();
    let local = tempfile::tempdir().unwrap();
    let dest = local.path().join("data.txt");
    let partial = partial_path(&dest).unwrap();
    let transport = SshTransport::new(Some(cfg)).with_connection_budget(TESTBED_BUDGET);
    let file = format!("{remote}/data.txt");

    // Not a prefix: resumed, found wrong by the hash, fetched again whole.
    std::fs::write(&partial, "WRONG").unwrap();
    let moved = transport
        .download(&profile, file.clone(), dst_of(&dest))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "the real contents\n"
    );
    assert_eq!((moved.verified, moved.resumed_bytes), (1, 0), "{moved:?}");
    assert!(!partial.exists());

    // Another download holds the partial file: refused, its bytes untouched.
    std::fs::remove_file(&dest).unwrap();
    std::fs::write(&partial, "the real").unwrap();
    let holder = std::fs::File::open(&partial).unwrap();
    holder.lock().unwrap();
    let e = transport
        .download(&profile, file.clone(), dst_of(&dest))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SshError::LocalIo(m) if m.contains("in progress")),
        "{e:?}"
    );
    assert_eq!(std::fs::read_to_string(&partial).unwrap(), "the real");
    drop(holder);
    let moved = transport
        .download(&profile, file.clone(), dst_of(&dest))
        .await
        .unwrap();
    assert_eq!(moved.resumed_bytes, 8, "{moved:?}");
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "the real contents\n"
    );

    // A tree with a file named like another file's partial: refused.
    std::fs::write(format!("{remote}/.data.txt.cluster-slurm-part"), "x").unwrap();
    let e = transport
        .download(&profile, remote.clone(), dst_of(&local.path().join("tree")))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SshError::Remote(m) if m.contains("partial download")),
        "{e:?}"
    );
    let _ = std::fs::remove_dir_all(&remote);
}
