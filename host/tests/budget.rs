//! The connection budget (`host.connectionsPerMinute`) holds for the user
//! across processes, not per process: pools and real `cluster-slurm call`
//! processes that share one record (a temp state directory, never the
//! user's) dial a login node at most the budget's times a minute, all
//! together; the rest are refused with the budget message. The record
//! survives garbage, size bombs, planted symlinks, hard links and FIFOs,
//! and a lock held by a stopped or dead process. No testbed needed: the
//! "login node" is a local listener that counts connections and closes them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster_slurm_host::budget::{SharedBudget, Verdict, endpoint};
use cluster_slurm_host::ssh::{ConnectOptions, Pool, SshError};
use cluster_slurm_host::ssh_config::resolve;

/// A "login node" that accepts every TCP connection, counts it and closes it
/// at once (so every SSH attempt fails fast, after it reached the node).
struct Node {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Node {
    fn start() -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                // Counted before the close: a client fails only after it.
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Node { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn opts() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

/// Six gets through two pools (as two processes would hold) sharing one
/// record, budget 2: exactly two connections reach the node, four gets are
/// refused by the budget, naming it and the wait.
///
/// Negative control (done): with `Pool::take_shared` returning `Ok(())` at
/// once (the shared record disabled), each pool counts only its own attempts
/// and four connections reach the node: `accepted == 2` fails (left 4). The
/// contrast at the end shows the same without touching the code.
#[tokio::test]
async fn two_pools_sharing_a_record_dial_the_budget_together() {
    let node = Node::start();
    let state = tempfile::tempdir().unwrap();
    let params = resolve(&format!("nobody@127.0.0.1:{}", node.port), None).unwrap();
    // Backoff off: every get may dial as far as the per-process logic goes,
    // so only the shared budget can stop them.
    let pool = || {
        Pool::with_budget(2)
            .with_backoff(Duration::ZERO)
            .shared_with(SharedBudget::in_state_dir(state.path()))
    };
    let (a, b) = (pool(), pool());
    let mut refused = Vec::new();
    for i in 0..6 {
        let p = if i % 2 == 0 { &a } else { &b };
        match p.get("hpc", &params, None, &opts()).await {
            Err(SshError::Connection(m)) if m.contains("budget") => refused.push(m),
            Err(_) => {}
            Ok(_) => panic!("an SSH session with a node that closes at once"),
        }
    }
    assert_eq!(node.accepted(), 2, "connections that reached the node");
    assert_eq!(a.attempts() + b.attempts(), 2, "attempts the pools made");
    assert_eq!(refused.len(), 4, "{refused:#?}");
    for m in &refused {
        assert!(
            m.contains("2 new SSH connections")
                && m.contains("all cluster-slurm processes")
                && m.contains("Retry in about"),
            "{m}"
        );
    }

    // Contrast: the same without a shared record: each pool has its own
    // budget of 2, and the node sees 4 connections.
    let before = node.accepted();
    let (c, d) = (
        Pool::with_budget(2).with_backoff(Duration::ZERO),
        Pool::with_budget(2).with_backoff(Duration::ZERO),
    );
    for i in 0..6 {
        let p = if i % 2 == 0 { &c } else { &d };
        let _ = p.get("hpc", &params, None, &opts()).await;
    }
    assert_eq!(node.accepted() - before, 4);
}

/// Two labels (or two configs) that reach the same node share its budget;
/// the same label for another node does not.
#[tokio::test]
async fn the_record_is_kept_per_node_not_per_label() {
    let (one, two) = (Node::start(), Node::start());
    let state = tempfile::tempdir().unwrap();
    let record = SharedBudget::in_state_dir(state.path());
    let p1 = resolve(&format!("a@127.0.0.1:{}", one.port), None).unwrap();
    let p2 = resolve(&format!("b@127.0.0.1:{}", two.port), None).unwrap();
    let pool = Pool::with_budget(1)
        .with_backoff(Duration::ZERO)
        .shared_with(record.clone());
    let other = Pool::with_budget(1)
        .with_backoff(Duration::ZERO)
        .shared_with(record);
    let _ = pool.get("cpu", &p1, None, &opts()).await;
    let e = other.get("gpu", &p1, None, &opts()).await.err().unwrap();
    assert!(e.to_string().contains("budget"), "{e}");
    let _ = other.get("cpu", &p2, None, &opts()).await;
    assert_eq!((one.accepted(), two.accepted()), (1, 1));
}

/// A temp area for real processes: a config whose profile reaches `node`
/// through an ssh config, budget `per_minute`, and a state dir.
struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new(node: &Node, per_minute: u32) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let ssh_config = dir.path().join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host budget-node\n  HostName 127.0.0.1\n  Port {}\n  User nobody\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n",
                node.port,
                dir.path().join("no_key").display(),
                dir.path().join("known_hosts").display()
            ),
        )
        .unwrap();
        let config = serde_json::json!({
            "host": {"sshConfig": ssh_config, "connectionsPerMinute": per_minute, "auditLog": false},
            "defaultCluster": "tb",
            "clusters": {"tb": {"sshTarget": "budget-node",
                                "remoteRoot": "/var/tmp/cluster-slurm-budget-test/runs"}}
        });
        std::fs::write(
            dir.path().join("cluster-slurm.json"),
            serde_json::to_vec(&config).unwrap(),
        )
        .unwrap();
        Cli { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `n` concurrent `cluster-slurm call check_workload` processes (each
    /// needs the cluster: squeue), with `state_dir` as the state directory;
    /// their stderr, after all ended (each must fail: the node closes).
    fn run_concurrently(&self, n: usize, state_dir: &Path) -> Vec<String> {
        let bin = std::env::var_os("CLUSTER_SLURM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/cluster-slurm")
            });
        let children: Vec<_> = (0..n)
            .map(|i| {
                let ws = self.dir.path().join(format!("ws{i}"));
                std::fs::create_dir_all(&ws).unwrap();
                Command::new(&bin)
                    .arg("--config")
                    .arg(self.dir.path().join("cluster-slurm.json"))
                    .arg("--workspace")
                    .arg(&ws)
                    .args(["call", "check_workload", r#"{"jobId": "1"}"#])
                    .env("CLUSTER_SLURM_STATE_DIR", state_dir)
                    .env(
                        "CLUSTER_SLURM_APPROVALS",
                        self.dir.path().join("approvals.jsonl"),
                    )
                    .env("CLUSTER_SLURM_AUDIT_LOG", "off")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
            })
            .collect();
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                assert!(!out.status.success(), "a call succeeded: {err}");
                err
            })
            .collect()
    }
}

fn budget_refusals(stderr: &[String]) -> usize {
    stderr
        .iter()
        .filter(|e| e.contains("budget") && e.contains("Retry in about"))
        .count()
}

/// Eight real `cluster-slurm call` processes at once, `connectionsPerMinute:
/// 2`: exactly two connections reach the node; the six others fail with the
/// budget message on stderr, without dialling.
///
/// Negative control (done): with the shared record disabled
/// (`Pool::take_shared` returning `Ok(())` at once) all eight processes
/// connected: `accepted == 2` fails (left 8). The next test shows the same
/// through the per-process fallback.
#[test]
fn eight_cli_processes_share_a_budget_of_two() {
    let node = Node::start();
    let cli = Cli::new(&node, 2);
    let stderr = cli.run_concurrently(8, &cli.state());
    assert_eq!(node.accepted(), 2, "connections that reached the node");
    assert_eq!(budget_refusals(&stderr), 6, "{stderr:#?}");
    // The record is in the state dir given, private, and holds two attempts.
    let record = SharedBudget::in_state_dir(&cli.state());
    let dir_mode = std::fs::metadata(record.dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let params = resolve(&format!("nobody@127.0.0.1:{}", node.port), None).unwrap();
    let path = record.record_path(&endpoint(&params));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "header and two attempts:\n{text}");
}

/// A state directory that cannot be used at all (here: its parent is a
/// file): each process falls back to its own budget, says so once on
/// stderr, and still runs. So all eight connect — which is also what the
/// shared record exists to prevent.
#[test]
fn an_unusable_state_dir_falls_back_to_the_per_process_budget() {
    let node = Node::start();
    let cli = Cli::new(&node, 2);
    let blocker = cli.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a file").unwrap();
    let stderr = cli.run_concurrently(8, &blocker.join("state"));
    assert_eq!(node.accepted(), 8);
    assert_eq!(budget_refusals(&stderr), 0, "{stderr:#?}");
    for e in &stderr {
        assert_eq!(
            e.matches("cannot use the shared connection record").count(),
            1,
            "{e}"
        );
        assert!(e.contains("per process"), "{e}");
    }
}

/// A garbled record left in the state dir: the next process resets it,
/// warns on stderr, and the budget holds from there.
#[test]
fn a_cli_process_resets_a_garbled_record_with_a_warning() {
    let node = Node::start();
    let cli = Cli::new(&node, 1);
    let record = SharedBudget::in_state_dir(&cli.state());
    let params = resolve(&format!("nobody@127.0.0.1:{}", node.port), None).unwrap();
    let path = record.record_path(&endpoint(&params));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"\x00\xffnot a record\n").unwrap();
    let first = cli.run_concurrently(1, &cli.state());
    assert!(first[0].contains("starting it afresh"), "{}", first[0]);
    let second = cli.run_concurrently(1, &cli.state());
    assert_eq!(node.accepted(), 1);
    assert_eq!(budget_refusals(&second), 1, "{second:#?}");
}

const T0: u64 = 1_800_000_000_000;

fn granted(record: &SharedBudget, node: &str, now: u64) -> Vec<String> {
    let o = record.take_at(node, 2, now).unwrap();
    assert_eq!(o.verdict, Verdict::Granted, "{o:?}");
    o.warnings
}

/// Garbage, text that is not ours and a size bomb are each reset with a
/// warning (never a panic, never a refusal that lasts), and the budget
/// counts afresh from there.
///
/// Negative control (done): counting a garbled record as full (1000 attempts
/// now) instead of resetting it: the first take after the garbage is
/// `Refused { used: 1000 }` and this test (and the CLI one above) fail.
#[test]
fn garbage_and_huge_records_are_reset_with_a_warning() {
    let state = tempfile::tempdir().unwrap();
    let record = SharedBudget::in_state_dir(state.path());
    let path = record.record_path("n:22");
    assert!(granted(&record, "n:22", T0).is_empty());
    let junk: [&[u8]; 5] = [
        b"\xff\xfe\x00garbage",
        b"# some other header\n1\n",
        b"",
        &[b'9'; 200_000],
        b"# cluster-slurm connection attempts to \"n:22\": one Unix time in ms per line, for 60 s\n12x\n",
    ];
    for (i, bytes) in junk.iter().enumerate() {
        std::fs::write(&path, bytes).unwrap();
        let warnings = granted(&record, "n:22", T0 + i as u64);
        // An empty file is a fresh record, not damage.
        assert_eq!(
            warnings.len(),
            usize::from(!bytes.is_empty()),
            "{warnings:?}"
        );
        if let Some(w) = warnings.first() {
            assert!(w.contains("starting it afresh"), "{w}");
        }
        // Counted afresh: one more attempt fits, the next is refused.
        let _ = granted(&record, "n:22", T0 + i as u64);
        let o = record.take_at("n:22", 2, T0 + i as u64).unwrap();
        assert!(
            matches!(o.verdict, Verdict::Refused { used: 2, .. }),
            "{o:?}"
        );
    }
    // Many endpoints' records that all overflowed never grew the file.
    assert!(std::fs::metadata(&path).unwrap().len() < 1024);
}

/// A symlink planted at the record's name is never followed: the file it
/// points to keeps its content (and a dangling one creates nothing); the
/// name is replaced by a private record, with a warning. The same for a
/// hard link to another file and a FIFO (which would hang a plain open).
///
/// Negative controls (done): without `O_NOFOLLOW` (`open_no_follow`) and the
/// check in `lock_record` that the name is still the file locked, the record
/// was written through the symlink (the outside file held the record);
/// without `O_NOFOLLOW` alone that check still caught it and the take failed
/// closed. Without the hard-link (`nlink`) check, the record was written
/// through the hard link.
#[test]
fn a_planted_symlink_hard_link_or_fifo_is_replaced_not_followed() {
    let state = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let record = SharedBudget::in_state_dir(state.path());
    std::fs::create_dir_all(record.dir()).unwrap();
    let path = record.record_path("n:22");
    let precious = outside.path().join("precious");
    std::fs::write(&precious, "keep me\n").unwrap();

    std::os::unix::fs::symlink(&precious, &path).unwrap();
    let w = granted(&record, "n:22", T0);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert!(w.iter().any(|w| w.contains("is a symlink")), "{w:?}");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let dangling = outside.path().join("created-through-link");
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&dangling, &path).unwrap();
    granted(&record, "n:22", T0);
    assert!(!dangling.exists(), "the open followed a dangling symlink");

    std::fs::remove_file(&path).unwrap();
    std::fs::hard_link(&precious, &path).unwrap();
    let w = granted(&record, "n:22", T0 + 60_000);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert!(w.iter().any(|w| w.contains("hard links")), "{w:?}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    std::fs::remove_file(&path).unwrap();
    let st = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(st.success());
    let w = granted(&record, "n:22", T0 + 120_000);
    assert!(w.iter().any(|w| w.contains("not a regular file")), "{w:?}");
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_file()
    );
}

/// A record directory that is a symlink (or writable by others) is not
/// used at all: the take says why (the caller falls back to its own count)
/// and nothing is created where the link points.
///
/// Negative controls (done): without the `is_dir` check (on
/// `symlink_metadata`) in `SharedBudget::ensure_dir`, the mode check still
/// refused the link (a symlink's own mode is 0777) and the message
/// assertion failed; without both, the record was created in the linked
/// directory and the `read_dir` assertion failed (left 1).
#[test]
fn a_symlinked_or_shared_record_directory_is_not_used() {
    let state = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let record = SharedBudget::in_state_dir(state.path());
    std::os::unix::fs::symlink(outside.path(), record.dir()).unwrap();
    let taken = record.take_at("n:22", 2, T0);
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let e = taken.unwrap_err();
    assert!(e.0.contains("not a directory"), "{e}");

    std::fs::remove_file(record.dir()).unwrap();
    std::fs::create_dir(record.dir()).unwrap();
    std::fs::set_permissions(record.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = record.take_at("n:22", 2, T0).unwrap_err();
    assert!(e.0.contains("writable by other users"), "{e}");
}

/// A lock that stays held (a stopped process) makes the take give up within
/// its bounded wait (the caller falls back to its own count); a process that
/// dies holding the lock releases it.
///
/// Negative control (done): with a blocking `File::lock` instead of the
/// bounded `try_lock` loop, the take waited the holder's full 60 s.
#[test]
fn a_held_lock_is_waited_for_boundedly_and_dies_with_its_holder() {
    let state = tempfile::tempdir().unwrap();
    let record = SharedBudget::in_state_dir(state.path());
    granted(&record, "n:22", T0);
    let path = record.record_path("n:22");
    // --no-fork: `sleep` itself holds the lock, so killing it releases it.
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(&path)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    // Wait until the holder has the lock.
    let probe = std::fs::File::open(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.try_lock().is_ok() {
        probe.unlock().unwrap();
        assert!(Instant::now() < deadline, "flock(1) never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    let e = record.take_at("n:22", 2, T0).unwrap_err();
    assert!(e.0.contains("stayed locked"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match record.take_at("n:22", 2, T0 + 1) {
            Ok(o) => {
                assert_eq!(o.verdict, Verdict::Granted);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never released: {e}"),
        }
    }
}
