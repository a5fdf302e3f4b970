//! Nothing a job plants in its run directory makes a transfer read or write
//! outside the profile's remoteRoot on the cluster. A job can make any
//! symlink, FIFO or sparse file there; each test plants those directly on
//! the testbed (over ssh, as the cluster user), transfers through them with
//! the production transport ([`SshTransport`], the path every CLI and MCP
//! call takes), and checks that nothing outside the root was read (its
//! contents are not in the local copy) or written (the outside target is
//! unchanged), that the call returned promptly, and that a refusal is
//! `denied` with a message naming what was found.
//!
//! Each test names its negative control: the guard whose removal makes it
//! fail, and what was seen when it was removed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::time::{Duration, Instant};

use cluster_slurm_host::bindings::HostError;
use cluster_slurm_host::grants::ProfileGrant;
use cluster_slurm_host::local_fs::{Source, Target};
use cluster_slurm_host::ssh::{Connection, SshError};
use cluster_slurm_host::transport::{Moved, SshTransport, Transport};

mod common;
use common::{connect, ssh_config as cfg};
/// No call here should take long: a stall (a FIFO opened, /dev/zero read)
/// shows as a call over this.
const PROMPT: Duration = Duration::from_secs(15);

fn profile() -> ProfileGrant {
    ProfileGrant {
        label: "tb".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: "~/cluster-runs".into(),
    }
}

fn transport() -> SshTransport {
    SshTransport::new(Some(cfg())).with_connection_budget(1000)
}

/// A job's run directory under the root (`~/cluster-runs/rx-TAG-PID`, as
/// the grants spell it) and a directory outside the root
/// (`~/rx-outside-TAG-PID`) holding a victim file, both made and removed as
/// the cluster user.
struct Planted {
    conn: Connection,
    /// Below the home: `cluster-runs/rx-...`.
    run: String,
    /// Below the home: `rx-outside-...`.
    outside: String,
}

const VICTIM: &str = "VICTIM-UNTOUCHED";

impl Planted {
    async fn new(tag: &str) -> Planted {
        let pid = std::process::id();
        let p = Planted {
            conn: connect().await,
            run: format!("cluster-runs/rx-{tag}-{pid}"),
            outside: format!("rx-outside-{tag}-{pid}"),
        };
        p.sh(&format!(
            "cd && rm -rf {r} {o} && mkdir -p {r} {o} && printf {VICTIM} > {o}/victim",
            r = p.run,
            o = p.outside
        ))
        .await;
        p
    }

    /// The run directory as a remote path of the profile.
    fn remote(&self, rel: &str) -> String {
        format!("~/{}/{rel}", self.run)
    }

    async fn sh(&self, command: &str) -> String {
        common::sh(&self.conn, command).await
    }

    /// In the run directory: `ln -s TARGET NAME` (a job's doing).
    async fn link(&self, target: &str, name: &str) {
        self.sh(&format!("ln -s {target} {}/{name}", self.run))
            .await;
    }

    /// Everything in the outside directory, `name:contents` per file: the
    /// victim alone, untouched, means nothing was written there.
    async fn outside_state(&self) -> String {
        self.sh(&format!(
            "cd {o} && find . -type f | sort | while read -r f; do printf '%s:' \"$f\"; cat \"$f\"; echo; done",
            o = self.outside
        ))
        .await
    }

    async fn assert_outside_untouched(&self, case: &str) {
        assert_eq!(
            self.outside_state().await,
            format!("./victim:{VICTIM}\n"),
            "{case}: something was written outside the root"
        );
    }

    /// The root `root` (in the home, made here with a file `victim` of
    /// its own) and a link to the outside directory beside it, exchanged
    /// with `renameat2(RENAME_EXCHANGE)` in a tight loop by a job process
    /// (python3 on the login node, same user) for up to 2 minutes.
    async fn start_root_exchange(&self, root: &str) {
        self.sh(&format!(
            "rm -rf {root} {root}.l && mkdir {root} && printf mine > {root}/victim && ln -s ~/{o} {root}.l && ( nohup timeout 120 python3 -c 'import ctypes,time,sys; l=ctypes.CDLL(None); e=time.time()+115; a=sys.argv[1].encode(); b=sys.argv[2].encode(); [l.renameat2(-100,a,-100,b,2) for _ in iter(lambda: time.time()<e, False)]' {root} {root}.l </dev/null >/dev/null 2>&1 & echo $! > {root}.pid )",
            o = self.outside
        ))
        .await;
    }

    async fn stop_root_exchange(&self, root: &str) {
        self.sh(&format!(
            "kill $(cat {root}.pid) 2>/dev/null; sleep 0.3; rm -rf {root} {root}.l {root}.pid"
        ))
        .await;
    }

    async fn remove(self) {
        self.sh(&format!("rm -rf {} {}", self.run, self.outside))
            .await;
    }
}

/// Every file below `dir` with its contents, for "not in the local copy".
fn local_contents(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push_str(&e.path().display().to_string());
                out.push('\n');
                if ft.is_file() {
                    out.push_str(&String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()));
                }
            }
        }
    }
    out
}

async fn download(
    t: &SshTransport,
    remote: &str,
    local: &Path,
) -> (Result<Moved, SshError>, Duration) {
    let started = Instant::now();
    let remote = cluster_slurm_host::grants::sftp_path(remote);
    let moved = t
        .download(&profile(), remote, Target::ambient(local).unwrap())
        .await;
    (moved, started.elapsed())
}

async fn upload(
    t: &SshTransport,
    local: &Path,
    remote: &str,
) -> (Result<Moved, SshError>, Duration) {
    let started = Instant::now();
    let remote = cluster_slurm_host::grants::sftp_path(remote);
    let moved = t
        .upload(&profile(), Source::ambient(local).unwrap(), remote)
        .await;
    (moved, started.elapsed())
}

/// The refusal as the guest sees it: `denied`, its message holding `needle`.
fn assert_denied(case: &str, got: Result<Moved, SshError>, took: Duration, needle: &str) {
    assert!(took < PROMPT, "{case}: took {took:?}");
    let e = got.expect_err(case);
    let HostError::Denied(m) = HostError::from(e.clone()) else {
        panic!("{case}: not denied: {e:?}")
    };
    assert!(m.contains(needle), "{case}: {m}");
    eprintln!("{case}: {m}");
}

/// Downloads through job-made links to outside files and directories are
/// refused: the source is resolved on the cluster and must lie in the
/// resolved root. A link inside a downloaded tree is skipped, never
/// followed, and named (what the audit log records). A link that stays
/// inside the root still works. Negative controls (done): with
/// `Confine::download_source` returning the resolved path without the
/// `holds` check, `p -> /etc/passwd` downloaded the testbed's passwd (the
/// test failed at "etc-passwd: not denied: Ok(Moved { files: 1, ...})");
/// with the tree walk taking a listed symlink as a file
/// (`FileType::Symlink` added to the `FileType::File` arm of
/// `plan_download`), the tree download brought `p` with `root:x:0:0` in it
/// (the "tree" assertion failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_never_follow_a_job_made_link_out_of_the_root() {
    let p = Planted::new("down").await;
    p.sh(&format!(
        "printf mine > {r}/mine.txt && mkdir {r}/real && printf in > {r}/real/in.txt",
        r = p.run
    ))
    .await;
    p.link("/etc/passwd", "p").await;
    p.link("~/.ssh", "s").await;
    p.link("/", "up").await;
    p.link(&format!("~/{}", p.outside), "out").await;
    p.link("real", "alias").await;
    let t = transport();
    let ws = tempfile::tempdir().unwrap();
    for (case, remote) in [
        ("etc-passwd", "p"),
        ("ssh-dir", "s"),
        ("ssh-key", "s/authorized_keys"),
        ("slash", "up"),
        ("slash-passwd", "up/etc/passwd"),
        ("outside-victim", "out/victim"),
    ] {
        let local = ws.path().join(case);
        let (got, took) = download(&t, &p.remote(remote), &local).await;
        assert_denied(case, got, took, "outside remoteRoot");
        assert!(!local.exists(), "{case}: {}", local_contents(ws.path()));
    }
    // The whole run directory: its own files come, the links are skipped
    // and named.
    let tree = ws.path().join("tree");
    let (got, took) = download(&t, &p.remote(""), &tree).await;
    assert!(took < PROMPT, "tree: took {took:?}");
    let moved = got.unwrap();
    let copied = local_contents(&tree);
    for leak in ["root:x:0:0", "ssh-ed25519", VICTIM] {
        assert!(!copied.contains(leak), "tree: {leak} in {copied}");
    }
    assert_eq!(moved.files, 2, "{moved:?}");
    assert_eq!(moved.skipped, 5, "{moved:?}");
    for name in ["/p", "/s", "/up", "/out", "/alias"] {
        assert!(
            moved.skipped_names.iter().any(|n| n.ends_with(name)),
            "{name} not named: {moved:?}"
        );
    }
    // A link that stays inside the root is fine, as a top-level source.
    let (got, _) = download(&t, &p.remote("alias"), &ws.path().join("alias")).await;
    assert_eq!(got.unwrap().files, 1);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("alias/in.txt")).unwrap(),
        "in"
    );
    p.assert_outside_untouched("downloads").await;
    p.remove().await;
}

/// Devices and FIFOs are never read: a link to /dev/zero resolves outside
/// the root; a FIFO in the run directory is refused as a source (not a
/// regular file) and skipped in a tree, and every call returns at once.
/// Negative control (done): with the top-level type check of
/// `plan_download` taking any non-directory as a file, the FIFO download
/// hung: the testbed's sftp-server blocked in open(2) waiting for a writer
/// and the call only ended with the SFTP request timeout ("fifo: took
/// 10.0s" — the assertion on PROMPT then failed once it was set below
/// that; at 15 s it failed on "not denied: Timeout").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_fifos_are_never_read() {
    let p = Planted::new("fifo").await;
    p.link("/dev/zero", "zero").await;
    p.sh(&format!(
        "mkfifo {r}/fifo && mkdir {r}/tree && mkfifo {r}/tree/fifo && ln -s /dev/zero {r}/tree/zero && printf ok > {r}/tree/ok.txt",
        r = p.run
    ))
    .await;
    let t = transport();
    let ws = tempfile::tempdir().unwrap();
    let (got, took) = download(&t, &p.remote("zero"), &ws.path().join("zero")).await;
    assert_denied("dev-zero", got, took, "outside remoteRoot");
    let (got, took) = download(&t, &p.remote("fifo"), &ws.path().join("fifo")).await;
    assert_denied("fifo", got, took, "not a regular file");
    let (got, took) = download(&t, &p.remote("tree"), &ws.path().join("tree")).await;
    assert!(took < PROMPT, "tree: took {took:?}");
    let moved = got.unwrap();
    assert_eq!((moved.files, moved.skipped), (1, 2), "{moved:?}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("tree/ok.txt")).unwrap(),
        "ok"
    );
    p.remove().await;
}

/// A 3 GB sparse file (`truncate -s 3G`, a job's work of an instant) is
/// refused under a low `host.maxDownloadBytes`, before any byte moves, with
/// the key and both sizes named; alone and inside a tree. Negative control
/// (done): without `Confine::check_download_size`, the single-file call
/// started bringing the 3 GiB (stopped by hand after the partial file
/// passed 1 GB; the test would have failed on "not denied").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_over_the_operators_cap_is_refused_before_it_starts() {
    let p = Planted::new("cap").await;
    p.sh(&format!(
        "mkdir {r}/tree && truncate -s 3G {r}/tree/sparse && printf small > {r}/tree/small.txt",
        r = p.run
    ))
    .await;
    let t = transport().with_download_cap(1 << 20);
    let ws = tempfile::tempdir().unwrap();
    for (case, remote) in [("file", "tree/sparse"), ("tree", "tree")] {
        let local = ws.path().join(case);
        let (got, took) = download(&t, &p.remote(remote), &local).await;
        assert_denied(case, got, took, "host.maxDownloadBytes (1048576 bytes)");
        assert!(!local.exists(), "{case}: {}", local_contents(ws.path()));
    }
    let (got, _) = download(&t, &p.remote("tree"), &ws.path().join("tree")).await;
    let HostError::Denied(m) = HostError::from(got.unwrap_err()) else {
        panic!()
    };
    assert!(m.contains("3221225477 bytes (2 file(s))"), "{m}");
    // Under the cap, the small file still comes.
    let (got, _) = download(&t, &p.remote("tree/small.txt"), &ws.path().join("s")).await;
    assert_eq!(got.unwrap().bytes, 5);
    p.remove().await;
}

/// Uploads through a job-made directory link to outside the root, or onto
/// a job-made link at the destination's own name, are refused and write
/// nothing outside: small files (which travel in tar bundles, checked by
/// the bundle command itself), a large one (over SFTP) and a single file.
/// A link that stays inside the root is written through as a directory
/// would be. Every directory is reached by the command that writes in it,
/// from the root with `cd -P`, `pwd -P` checked at each step
/// ([`put`](cluster_slurm_host::put)); a link at a file's name is refused
/// by the command that would write it. Negative control (run): with the
/// `case "$q/"` check taken out of `w` (`openclaw/lib/remote-write.sh`), the first case
/// ("tree-via-dir") failed with "not denied: Ok(..)", the tree written into
/// the outside directory. (Without the link checks at the names, the link
/// would be replaced by the new file, never written through: the refusal is
/// the friendly answer, the unlink and exclusive create the guarantee; see
/// `an_upload_never_writes_into_a_planted_hard_link`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_never_write_through_a_job_made_link() {
    let p = Planted::new("up").await;
    p.link(&format!("~/{}", p.outside), "out").await;
    p.link(&format!("~/{}/victim", p.outside), "victim-link")
        .await;
    p.sh(&format!(
        "mkdir -p {r}/existing {r}/inside && ln -s ~/{o} {r}/existing/sub && ln -s inside {r}/alias",
        r = p.run,
        o = p.outside
    ))
    .await;
    let ws = tempfile::tempdir().unwrap();
    let tree = ws.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), "a").unwrap();
    std::fs::write(tree.join("sub/c.txt"), "c").unwrap();
    let big_tree = ws.path().join("bigtree");
    std::fs::create_dir_all(big_tree.join("sub")).unwrap();
    std::fs::write(big_tree.join("sub/big.bin"), vec![b'B'; 3 << 20]).unwrap();
    let big = big_tree.join("sub/big.bin");
    let small = tree.join("a.txt");
    let t = transport();
    for (case, local, remote, needle) in [
        ("tree-via-dir", &tree, "out/tree", "outside"),
        ("big-via-dir", &big, "out/big.bin", "outside remoteRoot"),
        ("small-via-dir", &small, "out/a.txt", "outside"),
        ("small-onto-link", &small, "victim-link", "symbolic link"),
        ("big-onto-link", &big, "victim-link", "symbolic link"),
        // The existing destination tree holds a link where the upload has
        // a directory: refused (bundle, then SFTP).
        ("tree-into-link", &tree, "existing", "outside"),
        (
            "bigtree-into-link",
            &big_tree,
            "existing",
            "outside remoteRoot",
        ),
    ] {
        let (got, took) = upload(&t, local, &p.remote(remote)).await;
        assert_denied(case, got, took, needle);
        p.assert_outside_untouched(case).await;
    }
    // Inside the root, a link is a way to a directory like any other.
    let (got, _) = upload(&t, &tree, &p.remote("alias/t")).await;
    assert_eq!(got.unwrap().files, 2);
    let (got, _) = upload(&t, &big, &p.remote("alias/big.bin")).await;
    assert_eq!(got.unwrap().files, 1);
    let there = p
        .sh(&format!(
            "cat {r}/inside/t/a.txt {r}/inside/t/sub/c.txt; wc -c < {r}/inside/big.bin",
            r = p.run
        ))
        .await;
    assert_eq!(there.split_whitespace().collect::<String>(), "ac3145728");
    p.assert_outside_untouched("inside").await;
    p.remove().await;
}

/// Run `transfer` with a hook that, the first time it is about to open a
/// remote path ending in `name`, runs `swap` on the cluster (over the
/// system ssh, synchronously: the transfer waits for it); the hook is gone
/// afterwards, and it must have fired.
async fn with_swap<T>(name: &'static str, swap: String, transfer: impl Future<Output = T>) -> T {
    let fired = swap_before_remote_open(name, swap);
    let out = transfer.await;
    cluster_slurm_host::hooks::clear();
    assert!(
        fired.load(std::sync::atomic::Ordering::SeqCst),
        "{name}: no swap"
    );
    out
}

fn swap_before_remote_open(
    name: &'static str,
    swap: String,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use cluster_slurm_host::hooks::{self, Point};
    use std::sync::atomic::{AtomicBool, Ordering};
    let fired = std::sync::Arc::new(AtomicBool::new(false));
    let seen = fired.clone();
    let cfg = cfg();
    hooks::install(move |point| {
        if let Point::BeforeRemoteOpen(path) = point
            && path.ends_with(name)
            && !seen.swap(true, Ordering::SeqCst)
        {
            let out = std::process::Command::new("ssh")
                .arg("-F")
                .arg(&cfg)
                .arg("slurm-testbed")
                .arg(format!("cd && {{ {swap}; }}"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{swap}: {out:?}");
        }
    });
    fired
}

/// A listed file swapped for a link between the listing and the read
/// (driven by the `BeforeRemoteOpen` hook, no timing) is refused, whoever
/// owns what the link leads to: root's `/etc/passwd`, or the cluster user's
/// own file outside the root (which an owner check of an SFTP handle could
/// not tell from the listed file). The command that reads decides it in the
/// read: `dd iflag=nofollow` of `./NAME` in the directory it entered with
/// `cd -P`. Nothing lands in the workspace. Negative control (run): with
/// `[ ! -L "./$2" ]` and `nofollow` taken out of `fetch::FETCH_FN`, the
/// first download "succeeded" (as a file that changed while read) and the
/// local file held the passwd (`root:x:0:0:root:/root:/bin/bash`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_swapped_for_a_link_mid_download_is_refused() {
    let p = Planted::new("dswap").await;
    let t = transport();
    let ws = tempfile::tempdir().unwrap();
    for (case, target, secret) in [
        ("root-owned", "/etc/passwd".to_string(), "root:x:0:0"),
        ("same-owner", format!("~/{}/victim", p.outside), VICTIM),
    ] {
        // Longer than either target, so all of it would fit the listed size.
        p.sh(&format!(
            "rm -f {r}/data.bin && head -c 8192 /dev/urandom > {r}/data.bin",
            r = p.run
        ))
        .await;
        let local = ws.path().join(case);
        let (got, took) = with_swap(
            "/data.bin",
            format!("ln -sfn {target} {}/data.bin", p.run),
            download(&t, &p.remote("data.bin"), &local),
        )
        .await;
        let copied = local_contents(ws.path());
        assert!(!copied.contains(secret), "{case}: downloaded: {copied}");
        assert_denied(case, got, took, "no longer a regular file");
        assert!(!local.exists(), "{case}: {copied}");
    }
    p.remove().await;
}

/// An existing destination file swapped for a link to a file outside the
/// root after the plan, right before the command that writes it runs
/// (`BeforeRemoteOpen`): the command looks at the name itself and refuses
/// the link; it never writes through one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_swapped_for_a_link_mid_upload_is_never_written() {
    let p = Planted::new("uswap").await;
    p.sh(&format!("printf old > {}/target.bin", p.run)).await;
    let ws = tempfile::tempdir().unwrap();
    // Large enough to go on its own (small files travel in tar bundles).
    let big = ws.path().join("big.bin");
    std::fs::write(&big, vec![b'B'; 3 << 20]).unwrap();
    let t = transport();
    let (got, took) = with_swap(
        "/target.bin",
        format!("ln -sfn ~/{}/victim {}/target.bin", p.outside, p.run),
        upload(&t, &big, &p.remote("target.bin")),
    )
    .await;
    p.assert_outside_untouched("upload-swap").await;
    assert_denied("upload-swap", got, took, "symbolic link");
    p.remove().await;
}

/// Swaps inside the very command that writes, between two of its steps
/// (the `: after-create;`, `: after-check;` and `: before-tar;` points of
/// `put`, run as shell hooks in this test build, no timing): whatever is
/// swapped, nothing outside the root is written.
///
/// * `after-create`: the new file is replaced by a link to an empty
///   outside file before the command opens it: the opened file is not the
///   one at the name (`stat` of both), so nothing is written (denied).
///   Negative control (run): with the `[ "$s" = "$t" ]` comparison taken
///   out of `p` (`openclaw/lib/remote-write.sh`), the outside file held the upload's 3 MiB.
/// * `after-check`: the checked file is moved away and a link to the
///   victim put at its name: the bytes go through the descriptor to the
///   moved file; the call then fails on the cluster's hash of the name.
///   Negative control (run): with `dd of="./$2"` instead of
///   `of=/proc/self/fd/4`, the victim held the 3 MiB.
/// * `before-tar`: in a bundle, a directory is swapped for a link to the
///   outside directory after the command entered it, and a link to the
///   victim is planted at a member's name: `tar` works in the directory the
///   command is in (the real one, moved away) and replaces the planted link
///   by the member. Negative control (run): with the segment unpacked by
///   `tar -C DIR` from the root instead of in the directory `w` entered,
///   `c.txt` landed in the outside directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_between_the_steps_of_the_writing_command_write_nothing_outside() {
    use cluster_slurm_host::hooks;
    let p = Planted::new("ustep").await;
    let ws = tempfile::tempdir().unwrap();
    let big = ws.path().join("big.bin");
    std::fs::write(&big, vec![b'B'; 3 << 20]).unwrap();
    let victim = format!("\"$HOME\"/{}/victim", p.outside);
    let t = transport();

    // An empty outside file: as long as the new file, so only the
    // comparison of the two tells them apart.
    p.sh(&format!(": > {}/empty", p.outside)).await;
    hooks::install_shell(
        "after-create",
        &format!(
            "rm -f \"./$2\" && ln -s \"$HOME\"/{}/empty \"./$2\"",
            p.outside
        ),
    );
    let (got, took) = upload(&t, &big, &p.remote("created.bin")).await;
    hooks::clear();
    assert_eq!(
        p.outside_state().await,
        format!("./empty:\n./victim:{VICTIM}\n"),
        "after-create: something was written outside the root"
    );
    assert_denied("after-create", got, took, "changed on the cluster");
    p.sh(&format!("rm {}/empty", p.outside)).await;

    hooks::install_shell(
        "after-check",
        &format!("mv \"./$2\" ./moved.bin && ln -s {victim} \"./$2\""),
    );
    let (got, _) = upload(&t, &big, &p.remote("checked.bin")).await;
    hooks::clear();
    p.assert_outside_untouched("after-check").await;
    assert!(got.is_err(), "after-check: the name is a link now: {got:?}");
    let moved = p.sh(&format!("wc -c < {}/moved.bin", p.run)).await;
    assert_eq!(
        moved.trim(),
        "3145728",
        "after-check: the bytes went to the checked file"
    );

    let tree = ws.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), "a").unwrap();
    std::fs::write(tree.join("sub/c.txt"), "c").unwrap();
    p.sh(&format!("cp {o}/victim {o}/c.txt", o = p.outside))
        .await;
    hooks::install_shell(
        "before-tar",
        &format!(
            "if [ \"$1\" = c.txt ]; then d=$(pwd -P); mv \"$d\" \"$d.orig\" && ln -s \"$HOME\"/{o} \"$d\"; else ln -s {victim} ./a.txt; fi",
            o = p.outside
        ),
    );
    let (got, _) = upload(&t, &tree, &p.remote("t")).await;
    hooks::clear();
    eprintln!("before-tar: {got:?}");
    let outside = p.outside_state().await;
    assert_eq!(
        outside,
        format!("./c.txt:{VICTIM}\n./victim:{VICTIM}\n"),
        "before-tar: something was written outside the root"
    );
    let inside = p
        .sh(&format!(
            "cd {}/t && cat a.txt sub.orig/c.txt && [ ! -L a.txt ] && echo regular",
            p.run
        ))
        .await;
    assert_eq!(inside.trim(), "acregular", "before-tar");
    p.remove().await;
}

/// A directory of a downloaded tree swapped for a link to an outside
/// directory (same owner) after the listing, right before the command that
/// reads the tree's files runs (hooked at the first file, `t1`, or at the
/// file in that directory, `t2`): the command enters each file's directory
/// with `cd -P` and finds it outside the root, so nothing of that file is
/// read, and nothing from outside lands in the workspace. Negative control
/// (run): with the `case "$p/"` check taken out of `fetch::FETCH_FN`, both
/// downloads "succeeded" and their local `sub/secret` held the outside
/// file's first bytes (`VICT`, as many as the listed size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_a_link_mid_download_is_refused() {
    let p = Planted::new("ddir").await;
    // The outside directory holds a file of the same name as the tree's.
    p.sh(&format!(
        "cp {o}/victim {o}/secret && for t in t1 t2; do mkdir -p {r}/$t/sub && printf first > {r}/$t/first && printf mine > {r}/$t/sub/secret; done",
        r = p.run,
        o = p.outside
    ))
    .await;
    let t = transport();
    let ws = tempfile::tempdir().unwrap();
    for (tree, when) in [("t1", "/t1/first"), ("t2", "/t2/sub/secret")] {
        let local = ws.path().join(tree);
        let (got, took) = with_swap(
            when,
            format!(
                "mv {r}/{tree}/sub {r}/{tree}/sub.orig && ln -s ~/{o} {r}/{tree}/sub",
                r = p.run,
                o = p.outside
            ),
            download(&t, &p.remote(tree), &local),
        )
        .await;
        let copied = local_contents(ws.path());
        assert!(
            // Reads stop at the listed size: any prefix of the outside file.
            !copied.contains(&VICTIM[..4]),
            "{tree}: outside file downloaded: {copied}"
        );
        assert_denied(tree, got, took, "swapped for a link during the transfer");
    }
    p.remove().await;
}

/// A directory of an uploaded tree swapped for a link to an outside
/// directory after the plan: while an earlier file is sent (`u1`), or
/// right before the command that writes the file in it runs (`u2`). That
/// command walks from the root to the file's directory with `cd -P`,
/// checking `pwd -P` at each step, finds it outside the root and writes
/// nothing there. Negative control (run): with the `case "$q/"` check
/// taken out of `w` (`openclaw/lib/remote-write.sh`), both uploads wrote `second.bin` into the
/// outside directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_a_link_mid_upload_is_refused() {
    let p = Planted::new("udir").await;
    let ws = tempfile::tempdir().unwrap();
    let tree = ws.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    // Over SFTP (small files travel in tar bundles).
    std::fs::write(tree.join("first.bin"), vec![b'F'; 2 << 20]).unwrap();
    std::fs::write(tree.join("sub/second.bin"), vec![b'S'; 2 << 20]).unwrap();
    let t = transport();
    let swap = |dest: &str| {
        format!(
            "mv {r}/{dest}/sub {r}/{dest}/sub.orig && ln -s ~/{o} {r}/{dest}/sub",
            r = p.run,
            o = p.outside
        )
    };
    let (got, took) = with_swap(
        "/u1/first.bin",
        swap("u1"),
        upload(&t, &tree, &p.remote("u1")),
    )
    .await;
    p.assert_outside_untouched("u1").await;
    assert_denied("u1", got, took, "nothing was written there");
    let (got, took) = with_swap(
        "/u2/sub/second.bin",
        swap("u2"),
        upload(&t, &tree, &p.remote("u2")),
    )
    .await;
    p.assert_outside_untouched("u2").await;
    assert_denied("u2", got, took, "nothing was written there");
    p.remove().await;
}

/// An upload onto a name the job hard-linked to an outside file replaces
/// the name and never writes into the outside file: a file sent on its own
/// is always a new file (the old name unlinked, then an exclusive create),
/// and `tar` unlinks a member's name before it writes it. Negative control
/// (run): with the unlink and the exclusive create taken out of
/// `p` (the name opened as it is), the outside victim was
/// truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_never_writes_into_a_planted_hard_link() {
    let p = Planted::new("hard").await;
    p.sh(&format!(
        "ln {o}/victim {r}/hl && ln {o}/victim {r}/hl-small",
        r = p.run,
        o = p.outside
    ))
    .await;
    let ws = tempfile::tempdir().unwrap();
    let big = ws.path().join("big.bin");
    std::fs::write(&big, vec![b'B'; 3 << 20]).unwrap();
    let small = ws.path().join("small.txt");
    std::fs::write(&small, "mine").unwrap();
    let t = transport();
    for (case, local, name, size) in [
        ("on its own", &big, "hl", "3145728"),
        ("bundled", &small, "hl-small", "4"),
    ] {
        let (got, _) = upload(&t, local, &p.remote(name)).await;
        p.assert_outside_untouched(case).await;
        assert_eq!(got.unwrap().files, 1, "{case}");
        let there = p.sh(&format!("wc -c < {}/{name}", p.run)).await;
        assert_eq!(there.trim(), size, "{case}");
    }
    p.remove().await;
}

/// The cluster user owns their home, the root's parent, so a job can
/// rename the root and leave a link in its place (`ln -s / ROOT`, or a
/// link to an outside directory). SFTP would then take the link's target
/// for the root; every transfer refuses first, before SFTP resolves it.
/// Also a resumed upload never appends through a hard link a job planted
/// at its name (the cluster's hash of a multi-link file is not used for
/// resuming, and the command that writes refuses a file with more than one
/// link). Negative controls (run): without `confine::check_root` in
/// `copy::download`, the download of `ROOT/etc/passwd` brought the
/// testbed's passwd (1502 bytes); without the root check in every upload
/// command (`put::prelude`), the uploads through the swapped root were not
/// denied; with `remote_hashes_for_reuse` hashing multi-link files (before
/// the command's own link count), the outside victim grew by the appended
/// `PWNED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_swapped_for_a_link_or_a_resume_into_a_hard_link_is_refused() {
    let p = Planted::new("root").await;
    let pid = std::process::id();
    let root = format!("rx-root-{pid}");
    let prof = ProfileGrant {
        label: "swapped".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: format!("~/{root}"),
    };
    let t = transport();
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("small.txt"), "mine").unwrap();
    std::fs::write(ws.path().join("big.bin"), vec![b'B'; 2 << 20]).unwrap();
    for (case, target) in [
        ("slash", "/".to_string()),
        ("outside", format!("~/{}", p.outside)),
    ] {
        p.sh(&format!("rm -rf {root} && ln -s {target} {root}"))
            .await;
        let started = Instant::now();
        let got = t
            .download(
                &prof,
                format!("{root}/etc/passwd"),
                Target::ambient(&ws.path().join(case)).unwrap(),
            )
            .await;
        assert_denied(
            case,
            got,
            started.elapsed(),
            "passes through a symbolic link",
        );
        assert!(!ws.path().join(case).exists(), "{case}");
        for local in ["small.txt", "big.bin"] {
            let started = Instant::now();
            let got = t
                .upload(
                    &prof,
                    Source::ambient(&ws.path().join(local)).unwrap(),
                    format!("{root}/{local}"),
                )
                .await;
            assert_denied(
                case,
                got,
                started.elapsed(),
                "passes through a symbolic link",
            );
        }
        p.assert_outside_untouched(case).await;
    }
    p.sh(&format!("rm -f {root}")).await;
    // A resume: the cluster holds a prefix of the local file, hard-linked
    // to an outside file.
    p.sh(&format!(
        "yes abcdefg | head -c 2097152 > {o}/big && ln {o}/big {r}/hl.bin",
        o = p.outside,
        r = p.run
    ))
    .await;
    let mut local = b"abcdefg\n".repeat(262_144);
    local.extend_from_slice(b"PWNED\n");
    std::fs::write(ws.path().join("hl.bin"), &local).unwrap();
    let (got, _) = upload(&t, &ws.path().join("hl.bin"), &p.remote("hl.bin")).await;
    assert_eq!(got.unwrap().files, 1);
    let outside = p
        .sh(&format!(
            "wc -c < {o}/big; tail -c 6 {o}/big",
            o = p.outside
        ))
        .await;
    assert!(!outside.contains("PWNED"), "appended outside: {outside}");
    assert!(outside.starts_with("2097152"), "{outside}");
    let inside = p.sh(&format!("wc -c < {}/hl.bin", p.run)).await;
    assert_eq!(inside.trim(), "2097158");
    p.remove().await;
}

/// A job that swaps files and directories of its run directory for links
/// out of the root in a tight loop, the whole time a tree is downloaded
/// again and again, never gets a byte from outside into the workspace:
/// whichever instant a swap lands in, the command that reads is inside the
/// directory it entered and opens the name itself without following. (A
/// race, so it shows that no window is left open often enough to find, not
/// that none exists: the deterministic tests above pin each case.) Each
/// download either arrives with the tree's own bytes, or fails naming what
/// it found. Negative control (run): with the `case "$p/"` check and the
/// `[ ! -L ]` test and `nofollow` taken out of `fetch::FETCH_FN`, the
/// victim's contents reached the workspace in the fifth round (files of
/// the swapped directory, placed before the call failed on another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_swapping_links_in_a_loop_never_gets_a_download_out() {
    let p = Planted::new("loop").await;
    // Outside: files named like the tree's, holding the victim's text.
    p.sh(&format!(
        "mkdir -p {r}/t/d && for i in 1 2 3 4 5 6 7 8; do printf {VICTIM} > {o}/f$i; printf mine-$i > {r}/t/d/f$i; printf top-$i > {r}/t/f$i; done",
        r = p.run,
        o = p.outside
    ))
    .await;
    // The job: for about a minute at most, swap a file and the directory
    // for links out and back, as fast as the shell goes.
    p.sh(&format!(
        "cd {r}/t || exit 1; nohup timeout 60 sh -c 'while :; do ln -sfn ~/{o}/f3 l && mv -T l f3; printf top-3 > n && mv -T n f3; mv -T d d.o && ln -sfn ~/{o} d; rm d && mv -T d.o d; done' </dev/null >/dev/null 2>&1 & echo $! > ~/{r}/loop.pid",
        r = p.run,
        o = p.outside
    ))
    .await;
    let t = transport();
    let ws = tempfile::tempdir().unwrap();
    let (mut arrived, mut refused) = (0, 0);
    for round in 0..24 {
        let local = ws.path().join(format!("r{round}"));
        let (got, _) = download(&t, &p.remote("t"), &local).await;
        let copied = local_contents(&local);
        assert!(
            !copied.contains(&VICTIM[..4]),
            "round {round}: outside bytes downloaded ({got:?}): {copied}"
        );
        match got {
            Ok(_) => arrived += 1,
            Err(e) => {
                let m = e.to_string().to_lowercase();
                assert!(
                    [
                        "regular file",
                        "outside remoteroot",
                        "can no longer be entered",
                        "sha-256",
                        "could not hash",
                        "no such file",
                        "not a directory",
                    ]
                    .iter()
                    .any(|n| m.contains(n)),
                    "round {round}: {m}"
                );
                refused += 1;
            }
        }
    }
    p.sh(&format!(
        "kill $(cat {r}/loop.pid) 2>/dev/null; sleep 0.2; true",
        r = p.run
    ))
    .await;
    eprintln!("{arrived} downloads arrived, {refused} refused");
    p.remove().await;
}

/// The same job loop against uploads: while a tree (small files in
/// bundles, a 2 MiB file on its own, in the root and in a directory) is
/// uploaded again and again, the job swaps a file of the destination and
/// its directory for links out of the root and back. Whichever instant a
/// swap lands in, every write is decided in the command that makes it,
/// in the directory that command entered: nothing outside changes (its
/// names and contents are compared with a snapshot after every round).
/// Each upload either arrives or fails; the test only asks that none
/// wrote outside. (A race: the deterministic tests above pin each step.)
/// Negative control (run): with the `case "$q/"` check taken out of
/// `w` (`openclaw/lib/remote-write.sh`), the sixth round wrote `big.bin` into the outside
/// directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_swapping_links_in_a_loop_never_gets_an_upload_out() {
    let p = Planted::new("uloop").await;
    p.sh(&format!(
        "mkdir -p {r}/t/d && for i in 1 2 3 4; do printf {VICTIM} > {o}/f$i; done",
        r = p.run,
        o = p.outside
    ))
    .await;
    let snapshot = format!(
        "cd {o} && find . | sort | tr '\\n' ' ' && cat victim f1 f2 f3 f4",
        o = p.outside
    );
    let before = p.sh(&snapshot).await;
    p.sh(&format!(
        "cd {r}/t || exit 1; nohup timeout 60 sh -c 'while :; do ln -sfn ~/{o}/f3 l && mv -T l f3; printf x > n && mv -T n f3; mv -T d d.o && ln -sfn ~/{o} d; rm d && mv -T d.o d; done' </dev/null >/dev/null 2>&1 & echo $! > ~/{r}/loop.pid",
        r = p.run,
        o = p.outside
    ))
    .await;
    let ws = tempfile::tempdir().unwrap();
    let tree = ws.path().join("t");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    for i in 1..=4 {
        std::fs::write(tree.join(format!("f{i}")), format!("top-{i}")).unwrap();
        std::fs::write(tree.join(format!("d/f{i}")), format!("mine-{i}")).unwrap();
    }
    std::fs::write(tree.join("d/big.bin"), vec![b'B'; 2 << 20]).unwrap();
    let t = transport();
    let (mut arrived, mut failed) = (0, 0);
    for round in 0..12 {
        let (got, _) = upload(&t, &tree, &p.remote("t")).await;
        let after = p.sh(&snapshot).await;
        assert_eq!(after, before, "round {round}: written outside ({got:?})");
        match got {
            Ok(_) => arrived += 1,
            Err(e) => {
                eprintln!("round {round}: {e}");
                failed += 1;
            }
        }
    }
    p.sh(&format!(
        "kill $(cat {r}/loop.pid) 2>/dev/null; sleep 0.2; true",
        r = p.run
    ))
    .await;
    eprintln!("{arrived} uploads arrived, {failed} failed");
    p.remove().await;
}

/// A name that is not UTF-8 (`x\377y`) is listed by SFTP with U+FFFD in
/// place of the byte, which is another name a job can make beside it
/// (`x\u{FFFD}y`, the bytes `EF BF BD`): both are skipped and named, never
/// fetched by a spelling that is not their own, and the rest of the tree
/// arrives. Negative control (run): without the U+FFFD skip in
/// `plan_download`, the listing held `x\u{FFFD}y` twice, both were
/// fetched by that one spelling into one partial file, and the call failed
/// with "x\u{FFFD}y: another download to this destination is in progress".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_utf8_are_skipped_and_named() {
    let p = Planted::new("utf8").await;
    p.sh(&format!(
        "mkdir -p {r}/t && printf bytes > {r}/t/x$(printf '\\377')y && printf other > {r}/t/x$(printf '\\357\\277\\275')y && printf plain > {r}/t/ok.txt",
        r = p.run
    ))
    .await;
    let t = transport();
    let ws = tempfile::tempdir().unwrap();
    let local = ws.path().join("t");
    let (got, _) = download(&t, &p.remote("t"), &local).await;
    let moved = got.unwrap();
    assert_eq!((moved.files, moved.skipped), (1, 2), "{moved:?}");
    assert_eq!(
        std::fs::read_to_string(local.join("ok.txt")).unwrap(),
        "plain"
    );
    assert_eq!(
        std::fs::read_dir(&local).unwrap().count(),
        1,
        "{}",
        local_contents(&local)
    );
    assert_eq!(
        moved
            .skipped_names
            .iter()
            .filter(|n| n.ends_with("/t/x\u{FFFD}y"))
            .count(),
        2,
        "{:?}",
        moved.skipped_names
    );
    p.remove().await;
}

/// Shell: `d` = `cluster-runs` and one to five newlines, the name of a
/// sibling of the root (below the home) that `$(pwd -P)` would read as the
/// root itself.
fn root_newline_sibling() -> String {
    let nl = 1 + (std::process::id() % 5) as usize;
    format!(
        "d=\"$(printf 'cluster-runs{}x')\"; d=\"${{d%x}}\"",
        "\\n".repeat(nl)
    )
}

/// A directory outside the root named like the root plus newlines
/// (`~/cluster-runs\n`, a sibling the cluster user can make), reached
/// through a directory of the tree swapped for a link to it, is outside:
/// `$(pwd -P)` would drop the trailing newlines and make it read as the
/// root itself, so the fetch command keeps them (`printf x` sentinel).
/// Negative control (run, by the attack review that found it): with
/// `p=$(pwd -P)`, the call returned `Ok` and the local `t/sub/secret`
/// held the victim's contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sibling_named_like_the_root_plus_a_newline_is_outside_for_downloads() {
    let p = Planted::new("nlroot").await;
    // The sibling, which will hold `secret`.
    let sib = root_newline_sibling();
    p.sh(&format!(
        "cd && {sib} && mkdir -p \"$d\" && cp {o}/victim \"$d/secret\" && mkdir -p {r}/t/sub && printf first > {r}/t/first && printf mine-mine-mine-mine > {r}/t/sub/secret",
        r = p.run,
        o = p.outside
    ))
    .await;
    let t = transport();
    let ws = tempfile::tempdir().unwrap();
    let local = ws.path().join("t");
    let (got, took) = with_swap(
        "/t/first",
        format!(
            "{sib} && mv {r}/t/sub {r}/t/sub.orig && ln -s ~/\"$d\" {r}/t/sub",
            r = p.run
        ),
        download(&t, &p.remote("t"), &local),
    )
    .await;
    let copied = local_contents(ws.path());
    p.sh(&format!("cd && {sib} && rm -rf \"$d\"")).await;
    p.remove().await;
    eprintln!("got {got:?} in {took:?}; local: {copied}");
    assert!(
        !copied.contains(&VICTIM[..4]),
        "outside file downloaded through ~/cluster-runs<newline>: {copied}"
    );
}

/// The same sibling for uploads: a job-made link in the destination to
/// `~/cluster-runs\n` is outside the root for the bundle command's `d()`
/// check too, and nothing is written through it. Negative control (run, by
/// the attack review that found it): with `t=$(cd -P -- "$1" && pwd -P)`,
/// the bundle wrote `~/cluster-runs\n/pwned.txt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sibling_named_like_the_root_plus_a_newline_is_outside_for_uploads() {
    let p = Planted::new("nlup").await;
    let sib = root_newline_sibling();
    p.sh(&format!(
        "cd && {sib} && mkdir -p \"$d\" && mkdir -p {r}/dst && ln -s ~/\"$d\" {r}/dst/sub",
        r = p.run
    ))
    .await;
    let ws = tempfile::tempdir().unwrap();
    let tree = ws.path().join("dst");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/pwned.txt"), b"PWNED").unwrap();
    let t = transport();
    let (got, took) = upload(&t, &tree, &p.remote("dst")).await;
    let outside = p
        .sh(&format!(
            "cd && {sib} && cat \"$d/pwned.txt\" 2>/dev/null; rm -rf \"$d\""
        ))
        .await;
    p.remove().await;
    eprintln!("got {got:?} in {took:?}; outside: {outside:?}");
    assert!(
        !outside.contains("PWNED"),
        "written outside the root: {outside}"
    );
}

/// A job process on the login node (same user) that opens the fetch
/// shell's stderr through `/proc/PID/fd/2` and writes a byte every few
/// seconds does not hold the download: stderr is no progress, and once the
/// command has exited the channel gets `AFTER_EXIT` more. Negative control
/// (run, by the attack review that found it): with the channel's close
/// awaited and any message counted as activity, the download returned only
/// after 200 s, when the writer's own `timeout` ended it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_holding_the_fetch_commands_stderr_does_not_hold_the_download() {
    let p = Planted::new("trickle").await;
    p.sh(&format!("truncate -s 300M {}/f", p.run)).await;
    let pid = std::process::id();
    // The bracket keeps the watcher's own command line from matching.
    let watcher = format!(
        "( nohup timeout 200 sh -c 'while :; do q=$(pgrep -n -f \"cs-bytes-[0-9a-f].*[r]x-trickle-{pid}\") && break; sleep 0.05; done; exec 3>/proc/$q/fd/2 || exit 1; while printf . >&3; do sleep 5; done' </dev/null >/dev/null 2>&1 & )"
    );
    p.sh(&watcher).await;
    let t = transport();
    let ws = tempfile::tempdir().unwrap();
    let (got, took) = download(&t, &p.remote("f"), &ws.path().join("f")).await;
    p.remove().await;
    eprintln!("got {got:?} in {took:?}");
    assert!(took < Duration::from_secs(60), "download hung {took:?}");
    assert_eq!(got.unwrap().bytes, 300 << 20);
}

/// A job process that exchanges the root (a real directory) and a link to
/// an outside directory with `renameat2(RENAME_EXCHANGE)` in a tight loop
/// (python3 on the login node, same user), while trees are uploaded again
/// and again through that root: every writing command resolves the root
/// itself, walked from `/` one component at a time (`rr`, a link in a
/// directory the user can write refused), and `w` checks it is still `$r`
/// when it enters it, so no swap between the check and the use sends a
/// byte outside. Negative control (run by the attack review, before `rr`:
/// `cs_root_ok`, then `mkdir -p` and `cd -P ROOT && pwd -P`): in round 4,
/// `t4/small.txt` and `t4/sub/c.txt` landed outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_exchanged_for_a_link_in_a_loop_never_gets_an_upload_out() {
    let p = Planted::new("xroot").await;
    let pid = std::process::id();
    let root = format!("rx-xroot-{pid}");
    let prof = ProfileGrant {
        label: "xroot".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: format!("~/{root}"),
    };
    p.start_root_exchange(&root).await;
    let ws = tempfile::tempdir().unwrap();
    let tree = ws.path().join("t");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("small.txt"), "PWNED-small").unwrap();
    std::fs::write(tree.join("sub/c.txt"), "PWNED-c").unwrap();
    std::fs::write(tree.join("big.bin"), b"PWNED-big".repeat(200_000)).unwrap();
    let t = transport();
    let mut escaped = None;
    let (mut ok, mut failed) = (0, 0);
    for round in 0..40 {
        let got = t
            .upload(
                &prof,
                Source::ambient(&tree).unwrap(),
                format!("{root}/t{round}"),
            )
            .await;
        match &got {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
        let outside = p
            .sh(&format!(
                "cd {o} && find . -mindepth 1 | sort",
                o = p.outside
            ))
            .await;
        if outside.trim() != "./victim" {
            escaped = Some((round, outside, format!("{got:?}")));
            break;
        }
    }
    p.stop_root_exchange(&root).await;
    eprintln!("{ok} uploads arrived, {failed} failed");
    let state = p.outside_state().await;
    p.remove().await;
    if let Some((round, outside, got)) = escaped {
        panic!("round {round}: written outside the root: {outside}\nfiles: {state}\ncall: {got}");
    }
}

/// A job process (same user, on the login node) that opens the writing
/// command's stdout (`/proc/PID/fd/1`) and writes a byte every 2 s: an
/// upload's command is bounded by the input the channel takes, not by its
/// stdout, and once it has exited its channel gets 5 s. The `after-check`
/// shell hook (a 3 s sleep) only gives the watcher time to find the
/// process (the oldest with the command line: the command's own shell, not
/// one of its `$(...)` subshells, whose pipe held open stalls the command
/// until the idle bound instead: see docs/reliability.md). Negative control (run by the attack review, with stdout counted
/// as progress and re-arming the wait after the exit): the upload returned
/// after 100 s, when the watcher's own timeout ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_holding_the_upload_commands_stdout_does_not_hold_the_upload() {
    use cluster_slurm_host::hooks;
    let p = Planted::new("uhold").await;
    let pid = std::process::id();
    let watcher = format!(
        "( nohup timeout 100 sh -c 'while :; do q=$(pgrep -o -f \"[h]old-{pid}.bin\") && break; sleep 0.05; done; exec 3>/proc/$q/fd/1 || exit 1; while printf . >&3; do sleep 2; done' </dev/null >/dev/null 2>&1 & )"
    );
    p.sh(&watcher).await;
    let ws = tempfile::tempdir().unwrap();
    let big = ws.path().join("big.bin");
    std::fs::write(&big, vec![b'B'; 3 << 20]).unwrap();
    hooks::install_shell("after-check", "sleep 3");
    let t = transport();
    let (got, took) = upload(&t, &big, &p.remote(&format!("hold-{pid}.bin"))).await;
    hooks::clear();
    p.remove().await;
    eprintln!("got {got:?} in {took:?}");
    assert!(took < Duration::from_secs(20), "upload held {took:?}");
    assert_eq!(got.unwrap().files, 1);
}

/// The agent keeps growing the local file while it is uploaded: the
/// upload sends the planned size and no more, and the cluster's copy (and
/// its hash) is those bytes. Negative control (run by the attack review,
/// with the stream read to its end): 50 MiB were sent for a 2 MiB plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_file_growing_during_its_upload_sends_only_the_planned_bytes() {
    let p = Planted::new("ugrow").await;
    let ws = tempfile::tempdir().unwrap();
    let big = ws.path().join("grow.bin");
    std::fs::write(&big, vec![b'G'; 2 << 20]).unwrap();
    // The agent starts growing it after the plan, right before the open.
    let path = big.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let grower: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>> =
        Default::default();
    let slot = grower.clone();
    cluster_slurm_host::hooks::install(move |point| {
        let cluster_slurm_host::hooks::Point::BeforeOpen(at) = point else {
            return;
        };
        let mut slot = slot.lock().unwrap();
        if !at.ends_with("grow.bin") || slot.is_some() {
            return;
        }
        let (path, stop) = (path.clone(), stop2.clone());
        *slot = Some(std::thread::spawn(move || {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(40)
            {
                f.write_all(&vec![b'G'; 4 << 20]).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    });
    let t = transport();
    let (got, took) = upload(&t, &big, &p.remote("grow.bin")).await;
    cluster_slurm_host::hooks::clear();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let grower = grower
        .lock()
        .unwrap()
        .take()
        .expect("the agent never started");
    grower.join().unwrap();
    let there = p.sh(&format!("wc -c < {}/grow.bin", p.run)).await;
    p.remove().await;
    eprintln!(
        "got {got:?} in {took:?}; the cluster holds {} bytes (planned 2097152)",
        there.trim()
    );
    assert!(took < Duration::from_secs(30), "upload ran {took:?}");
    assert_eq!(got.unwrap().bytes, 2 << 20);
    assert_eq!(there.trim(), "2097152");
}

/// Awkward names, in bundles and on their own: line breaks, leading
/// dashes, glob characters, quotes, a command substitution, a backslash,
/// as file and as directory names: all arrive at their own names, and
/// nothing else is made (no `PWN`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_names_arrive_at_their_own_names() {
    let p = Planted::new("unames").await;
    let ws = tempfile::tempdir().unwrap();
    let tree = ws.path().join("t");
    let names = [
        "a\nb",
        "-x",
        "-",
        "--",
        "*",
        "?",
        " sp ",
        "back\\slash",
        "a'b",
        "$(touch PWN)",
        "x\n",
        "\n",
        "é",
        "-n",
        "-e",
    ];
    for (i, n) in names.iter().enumerate() {
        let d = tree.join(format!("d{i}{n}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(n), format!("s{i}")).unwrap();
        std::fs::write(tree.join(n), format!("t{i}")).unwrap();
    }
    std::fs::write(tree.join("-big\n"), vec![b'B'; 2 << 20]).unwrap();
    std::fs::create_dir_all(tree.join("-dir\n*")).unwrap();
    std::fs::write(tree.join("-dir\n*/-big2\\"), vec![b'C'; 2 << 20]).unwrap();
    let t = transport();
    let (got, _) = upload(&t, &tree, &p.remote("t")).await;
    let listing = p
        .sh(&format!("cd {}/t && find . -type f | LC_ALL=C sort | od -c | tail -3; find . | wc -l; {{ find ~ -maxdepth 3 -name PWN 2>/dev/null || true; }}", p.run))
        .await;
    eprintln!("{got:?}\n{listing}");
    let moved = got.unwrap();
    assert_eq!(moved.files as usize, 2 * names.len() + 2);
    // Every file at its own name.
    for (i, n) in names.iter().enumerate() {
        let (top, deep) = (
            cluster_slurm_host::ssh::quote_word(&format!("./{n}")),
            cluster_slurm_host::ssh::quote_word(&format!("./d{i}{n}/{n}")),
        );
        let there = p
            .sh(&format!(
                "cd {}/t && test -f {top} && test -f {deep} && cat {top} {deep}",
                p.run
            ))
            .await;
        assert_eq!(there, format!("t{i}s{i}"), "{n:?}");
    }
    assert!(!listing.contains("PWN"), "a name ran a command: {listing}");
    p.remove().await;
}

/// The same root exchange against downloads: the command that reads
/// resolves the root itself (`rr`), so a root SFTP resolved to the outside
/// directory a moment before gives paths outside this command's `$r`, and
/// nothing is read. Negative control (run by the attack review, with `$r`
/// taken from SFTP's `realpath`): in round 13 the outside victim was
/// downloaded into the workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_exchanged_for_a_link_in_a_loop_never_gets_a_download_out() {
    let p = Planted::new("xdown").await;
    let pid = std::process::id();
    let root = format!("rx-xdown-{pid}");
    let prof = ProfileGrant {
        label: "xdown".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: format!("~/{root}"),
    };
    p.start_root_exchange(&root).await;
    let ws = tempfile::tempdir().unwrap();
    let t = transport();
    let mut leaked = None;
    let (mut ok, mut failed) = (0, 0);
    for round in 0..60 {
        let local = ws.path().join(format!("r{round}"));
        let got = t
            .download(
                &prof,
                format!("{root}/victim"),
                Target::ambient(&local).unwrap(),
            )
            .await;
        match &got {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
        if std::fs::read(&local).is_ok_and(|b| b == VICTIM.as_bytes()) {
            leaked = Some(round);
            break;
        }
    }
    p.stop_root_exchange(&root).await;
    p.remove().await;
    eprintln!("{ok} downloads arrived, {failed} failed");
    assert!(
        leaked.is_none(),
        "round {leaked:?}: the outside victim was downloaded"
    );
}

/// The agent extends a small (bundled) file, sparse, to 1 GiB between the
/// plan and the read (`BeforeOpen`): the bundle reads at most the planned
/// size and one byte more, and the upload fails saying the file changed.
/// Negative control (run by the attack review, with `read_to_end`): peak
/// memory 2.1 GB, and the 1 GiB were "bundled".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_extended_after_the_plan_is_never_read_whole() {
    use cluster_slurm_host::hooks::{self, Point};
    let p = Planted::new("usparse").await;
    let ws = tempfile::tempdir().unwrap();
    let tree = ws.path().join("t");
    std::fs::create_dir_all(&tree).unwrap();
    let small = tree.join("small.txt");
    std::fs::write(&small, "mine").unwrap();
    let target = small.clone();
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = fired.clone();
    hooks::install(move |point| {
        if let Point::BeforeOpen(path) = point
            && path.ends_with("small.txt")
            && !seen.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            f.set_len(1 << 30).unwrap();
        }
    });
    let t = transport();
    let (got, took) = upload(&t, &tree, &p.remote("t")).await;
    hooks::clear();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap()
        .to_string();
    let there = p
        .sh(&format!(
            "wc -c < {}/t/small.txt 2>/dev/null || echo none",
            p.run
        ))
        .await;
    p.remove().await;
    eprintln!(
        "got {got:?} in {took:?}; {hwm}; cluster holds {} bytes",
        there.trim()
    );
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst));
    let kb: u64 = hwm.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        kb < 512 << 10,
        "peak memory {hwm} for a file planned at 4 bytes"
    );
    let e = got.unwrap_err().to_string();
    assert!(e.contains("changed while it was being uploaded"), "{e}");
}

/// A root swapped for a link after the command resolved it, before a
/// segment whose directory is the root itself (two items in one bundle:
/// `a/c.txt`, then `b.txt`; the `before-tar` hook of the first swaps the
/// root): `w ''` checks that entering `$r` still lands at `$r`, and
/// refuses. Negative control (run by the attack review, without that
/// check): `b.txt` was written outside and the call returned `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_swapped_after_it_was_resolved_is_refused_for_files_in_the_root() {
    use cluster_slurm_host::hooks;
    let p = Planted::new("wroot").await;
    let pid = std::process::id();
    let root = format!("rx-wroot-{pid}");
    let prof = ProfileGrant {
        label: "wroot".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: format!("~/{root}"),
    };
    p.sh(&format!("rm -rf {root} {root}.real && mkdir {root}"))
        .await;
    let ws = tempfile::tempdir().unwrap();
    let tree = ws.path().join("a");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("c.txt"), "mine-c").unwrap();
    std::fs::write(ws.path().join("b.txt"), "PWNED-b").unwrap();
    hooks::install_shell(
        "before-tar",
        &format!(
            "if [ \"$1\" = c.txt ]; then mv \"$HOME\"/{root} \"$HOME\"/{root}.real && ln -s \"$HOME\"/{o} \"$HOME\"/{root}; fi",
            o = p.outside
        ),
    );
    let t = transport();
    let got = t
        .upload_all(
            &prof,
            vec![
                (Source::ambient(&tree).unwrap(), format!("{root}/a")),
                (
                    Source::ambient(&ws.path().join("b.txt")).unwrap(),
                    format!("{root}/b.txt"),
                ),
            ],
        )
        .await;
    hooks::clear();
    let state = p.outside_state().await;
    p.sh(&format!("rm -rf {root} {root}.real")).await;
    p.remove().await;
    eprintln!("got {got:?}; outside: {state}");
    assert!(
        !state.contains("PWNED"),
        "written outside the root: {state}"
    );
}

/// A directory of an existing destination swapped for a link to the
/// outside directory after the plan, when the host opens the local file to
/// bundle it (`BeforeOpen`): the segment's walk refuses it, and nothing of
/// the segment runs after a failed walk. Negative control (run by the
/// attack review, with the hook point written `&& : before-tar; head`,
/// whose `;` ended the `&&` chain): `x.txt` was unpacked outside and the
/// call returned `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_segment_whose_directory_was_swapped_writes_nothing() {
    use cluster_slurm_host::hooks::{self, Point};
    use std::sync::atomic::{AtomicBool, Ordering};
    let p = Planted::new("wsemi").await;
    let ws = tempfile::tempdir().unwrap();
    let tree = ws.path().join("dst");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/x.txt"), "PWNED-x").unwrap();
    p.sh(&format!("mkdir -p {}/dst/sub", p.run)).await;
    let fired = std::sync::Arc::new(AtomicBool::new(false));
    let seen = fired.clone();
    let swap = format!(
        "cd && mv {r}/dst/sub {r}/dst/sub.orig && ln -s ~/{o} {r}/dst/sub",
        r = p.run,
        o = p.outside
    );
    let cfg = cfg();
    hooks::install(move |point| {
        if let Point::BeforeOpen(path) = point
            && path.ends_with("sub/x.txt")
            && !seen.swap(true, Ordering::SeqCst)
        {
            let out = std::process::Command::new("ssh")
                .arg("-F")
                .arg(&cfg)
                .arg("slurm-testbed")
                .arg(&swap)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    });
    let t = transport();
    let (got, _) = upload(&t, &tree, &p.remote("dst")).await;
    hooks::clear();
    assert!(fired.load(Ordering::SeqCst));
    let state = p.outside_state().await;
    p.remove().await;
    eprintln!("got {got:?}; outside: {state}");
    assert!(
        !state.contains("PWNED"),
        "written outside the root: {state}"
    );
}

/// The same root exchange against the exec commands (`tail`/`head` of job
/// logs, the SLURM programs' working directory): each command line
/// resolves the root itself, walked from `/` (`remote_confine::enter_root`),
/// and then checks its working directory is below that, so a root a job
/// exchanged for a link at any instant never lets `head` read the outside
/// file. Negative control (run): with the root entered by `cd -P -- ROOT &&
/// cs_r=$PWD` after its check (the shape before), `head` returned the
/// outside victim in the third round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_exchanged_for_a_link_in_a_loop_never_lets_a_command_read_outside() {
    let p = Planted::new("xexec").await;
    let pid = std::process::id();
    let root = format!("rx-xexec-{pid}");
    let prof = ProfileGrant {
        label: "xexec".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: format!("~/{root}"),
    };
    p.start_root_exchange(&root).await;
    let args: Vec<String> = ["-c", "64", "--", "victim"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut leaked = None;
    let (mut read, mut refused) = (0, 0);
    for round in 0..150 {
        for cwd in [None, Some(format!("~/{root}"))] {
            let command =
                cluster_slurm_host::remote_confine::command(&prof, "head", &args, cwd.as_deref())
                    .unwrap();
            let out = p
                .conn
                .exec(&command, None, Duration::from_secs(30), 1 << 16)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains(VICTIM) {
                leaked = Some((round, cwd.clone()));
            }
            if text == "mine" {
                read += 1;
            } else {
                refused += 1;
            }
        }
        if leaked.is_some() {
            break;
        }
    }
    p.stop_root_exchange(&root).await;
    p.remove().await;
    eprintln!("{read} reads of the root's file, {refused} refused or failed");
    assert!(leaked.is_none(), "{leaked:?}: the outside victim was read");
}

/// The user owns the root's parent (and may own directories above it), so
/// a job can plant a link at the root's name and `chmod a-w` the directory
/// holding it: a directory the user owns counts as one a job could change,
/// like one the user can write, and the link is refused (`cs_root_ok`,
/// `cs_root_real`), for downloads, uploads and command lines alike. Here
/// `~/rx-chm-PID/par` (read-only) holds `root -> /`. Negative control (run
/// by the second attack review, with `[ -w ]` alone): the download read
/// the outside victim, the upload wrote `pwn.txt` outside and `head` read
/// the victim, all returning Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_in_a_directory_the_user_owns_but_made_read_only_is_refused_as_the_root() {
    let p = Planted::new("chm").await;
    let pid = std::process::id();
    let base = format!("rx-chm-{pid}");
    let home = p.sh("printf %s \"$HOME\"").await;
    let home_rel = home.trim_start_matches('/').to_string();
    p.sh(&format!(
        "rm -rf {base}; mkdir -p {base}/par && ln -s / {base}/par/root && chmod 555 {base}/par"
    ))
    .await;
    let prof = ProfileGrant {
        label: "chm".into(),
        ssh_target: "slurm-testbed".into(),
        remote_root: format!("~/{base}/par/root"),
    };
    let t = transport();
    let victim_via_root = format!("{base}/par/root/{home_rel}/{}/victim", p.outside);

    // 1. A download of the outside victim through the root.
    let ws = tempfile::tempdir().unwrap();
    let local = ws.path().join("got");
    let down = t
        .download(
            &prof,
            victim_via_root.clone(),
            Target::ambient(&local).unwrap(),
        )
        .await;
    let got_local = local_contents(ws.path());

    // 2. An upload into the outside directory through the root.
    let src = ws.path().join("pwn.txt");
    std::fs::write(&src, "PWNED-chm").unwrap();
    let up = t
        .upload(
            &prof,
            Source::ambient(&src).unwrap(),
            format!("{base}/par/root/{home_rel}/{}/pwn.txt", p.outside),
        )
        .await;
    let state = p.outside_state().await;

    // 3. A confined `head` of the victim, from the root.
    let args: Vec<String> = [
        "-c",
        "64",
        "--",
        &format!("{home_rel}/{}/victim", p.outside),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let command = cluster_slurm_host::remote_confine::command(&prof, "head", &args, None).unwrap();
    let out = p
        .conn
        .exec(&command, None, Duration::from_secs(30), 1 << 16)
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_string();

    p.sh(&format!("chmod 755 {base}/par; rm -rf {base}")).await;
    p.remove().await;
    eprintln!(
        "download: {down:?}\nlocal: {got_local}\nupload: {up:?}\noutside: {state}\nhead: {head:?} {:?}",
        out.exit_code
    );
    assert!(
        !got_local.contains(VICTIM),
        "download read outside the root: {got_local}"
    );
    assert!(
        !state.contains("PWNED"),
        "upload wrote outside the root: {state}"
    );
    assert!(!head.contains(VICTIM), "head read outside the root: {head}");
}
