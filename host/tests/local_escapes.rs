//! Nothing the agent plants in its workspace makes the native host write
//! outside it, and nothing swapped in while a transfer runs makes it read or
//! write elsewhere. Each test plants what an agent can plant (symlinks and
//! hard links at every name the host writes, FIFOs, `.git` in a result
//! tree) or swaps a file or directory for a symlink exactly between a
//! transfer's plan and its open (the `hooks::Point::BeforeOpen` hook, so no
//! timing race), and checks that the outside file is untouched and the call
//! failed (or succeeded) with a clear message. Transfers go to the testbed's
//! real sshd; everything local lives in temp dirs.
//!
//! Each test names its negative control: the guard whose removal makes it
//! fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cluster_slurm_host::approvals::ApprovalBook;
use cluster_slurm_host::audit::AuditLog;
use cluster_slurm_host::bindings::HostError;
use cluster_slurm_host::confine::DEFAULT_MAX_DOWNLOAD_BYTES;
use cluster_slurm_host::copy;
use cluster_slurm_host::grants::Grants;
use cluster_slurm_host::hooks::{self, Point};
use cluster_slurm_host::local_fs::{Source, Target};
use cluster_slurm_host::run_store::RunStoreCtx;
use cluster_slurm_host::sftp::partial_path;
use cluster_slurm_host::ssh::{Connection, SshError};
use serde_json::json;

mod common;
use common::connect;
/// The profile's remoteRoot, as SFTP reads it (below the testbed user's home).
const ROOT: &str = "cluster-runs";

/// A directory of its own under the testbed user's run root, made and
/// removed through the connection (as the cluster user).
struct RemoteDir<'a> {
    conn: &'a Connection,
    path: String,
}

impl<'a> RemoteDir<'a> {
    async fn new(conn: &'a Connection, tag: &str) -> RemoteDir<'a> {
        let path = format!("cluster-runs/escapes-{tag}-{}", std::process::id());
        let dir = RemoteDir { conn, path };
        dir.sh(&format!("rm -rf {p} && mkdir -p {p}", p = dir.path))
            .await;
        dir
    }

    async fn sh(&self, command: &str) -> String {
        common::sh(self.conn, command).await
    }

    async fn remove(self) {
        self.sh(&format!("rm -rf {}", self.path)).await;
    }
}

fn grants(ws: &Path) -> Arc<Grants> {
    Arc::new(
        Grants::from_config(
            &json!({"clusters": {"c": {"sshTarget": "slurm-testbed", "remoteRoot": "~/cluster-runs"}}}),
            ws,
        )
        .unwrap(),
    )
}

/// Everything below `dir`, as sorted relative names.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            out.push(
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Refused because a symlink is on the way (by the checkpoint, or by the
/// walk that does the write).
fn refused_as_link(e: &HostError) -> bool {
    matches!(e, HostError::Denied(m) | HostError::LocalIo(m) if m.contains("symbolic link"))
}

/// The run store's write used a fixed temp name (`.runs.json.tmp-PID`)
/// opened with create+truncate: a symlink planted there made the ledger land
/// outside. Now every name the store writes is planted — the target itself
/// as a symlink and as a hard link, the old temp names, the lock file — and
/// nothing outside changes. Negative control (done): `RunStoreCtx::write`
/// back to the old write (std::fs by full path, `.NAME.tmp-PID` opened with
/// create+truncate, renamed) writes "ledger" into `victim`.
#[tokio::test]
async fn planted_links_in_the_run_store_are_replaced_never_written_through() {
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let store = ws.path().join(".openclaw/cluster-runs");
    std::fs::create_dir_all(&store).unwrap();
    for name in [
        format!(".runs.json.tmp-{}", std::process::id()),
        ".runs.json.tmp".to_string(),
        "job.slurm".to_string(),
    ] {
        symlink(&victim, store.join(name)).unwrap();
    }
    std::fs::hard_link(&victim, store.join("runs.json")).unwrap();
    let ctx = RunStoreCtx::new(grants(ws.path()));
    ctx.write("runs.json", b"ledger").unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read(store.join("runs.json")).unwrap(), b"ledger");
    // A symlink at the name itself is refused with its name (the rename
    // would replace it harmlessly, but a link there is never ours).
    let e = ctx.write("job.slurm", b"#!/bin/bash\n").unwrap_err();
    assert!(
        matches!(&e, HostError::Denied(m) if m.contains("job.slurm") && m.contains("symbolic link")),
        "{e:?}"
    );
    // A symlinked ledger is not read through, and a FIFO does not hang.
    std::fs::remove_file(store.join("runs.json")).unwrap();
    symlink(&victim, store.join("runs.json")).unwrap();
    let e = ctx.read("runs.json").unwrap_err();
    assert!(refused_as_link(&e), "{e:?}");
    std::fs::remove_file(store.join("runs.json")).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(store.join("runs.json"))
            .status()
            .unwrap()
            .success()
    );
    let read = tokio::time::timeout(Duration::from_secs(5), async { ctx.read("runs.json") })
        .await
        .expect("reading a FIFO hung");
    assert!(
        matches!(&read, Err(HostError::LocalIo(m)) if m.contains("not a regular file")),
        "{read:?}"
    );
    // A lock file planted as a symlink is refused; the victim stays as it was.
    symlink(&victim, store.join("other.json.lock")).unwrap();
    let e = ctx.lock("other.json").await.unwrap_err();
    assert!(refused_as_link(&e), "{e:?}");
    // A symlinked run store directory is refused as a whole.
    let ws2 = tempfile::tempdir().unwrap();
    symlink(outside.path(), ws2.path().join(".openclaw")).unwrap();
    let e = RunStoreCtx::new(grants(ws2.path()))
        .write("runs.json", b"x")
        .unwrap_err();
    assert!(
        matches!(&e, HostError::Denied(m) if m.contains("symbolic link")),
        "{e:?}"
    );
    assert_eq!(listing(outside.path()), ["victim"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

/// A download's partial file used to be opened with O_NOFOLLOW but without
/// O_EXCL: a hard link planted at its name got an outside file truncated and
/// overwritten (how an approval decision was forged). Now a planted hard
/// link or symlink at the partial's name is let go of, never written.
/// Negative control (done): `open_partial` reusing any regular file it can
/// open (no single-link check) writes the result into `decisions`.
#[tokio::test]
async fn a_link_planted_at_a_partial_file_is_never_written_through() {
    let conn = connect().await;
    let remote = RemoteDir::new(&conn, "partial").await;
    remote
        .sh(&format!(
            "printf '%s' '{{\"decision\":\"approved\"}}' > {}/result.json",
            remote.path
        ))
        .await;
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let decisions = outside.path().join("approvals.jsonl");
    std::fs::write(&decisions, "").unwrap();
    let dest = ws.path().join("result.json");
    for plant in ["hard", "soft"] {
        let partial = partial_path(&dest).unwrap();
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&dest);
        match plant {
            "hard" => std::fs::hard_link(&decisions, &partial).unwrap(),
            _ => symlink(&decisions, &partial).unwrap(),
        }
        let moved = copy::download(
            &conn,
            &format!("{}/result.json", remote.path),
            &Target::ambient(&dest).unwrap(),
            ROOT,
            DEFAULT_MAX_DOWNLOAD_BYTES,
        )
        .await
        .unwrap();
        assert_eq!((moved.files, moved.verified), (1, 1), "{plant}: {moved:?}");
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap(),
            "{\"decision\":\"approved\"}"
        );
        assert_eq!(std::fs::read(&decisions).unwrap(), b"", "{plant}");
        assert!(!partial.exists(), "{plant}: partial left behind");
    }
    remote.remove().await;
}

/// A tree download made its directories first and opened its files by path
/// later: a directory swapped for a symlink in between wrote outside. Now
/// every file's directory is walked again from the destination's base,
/// one real directory at a time. The hook swaps `out/sub` for a link to an
/// outside directory right before its file is opened. Negative control
/// (done): `Base::walk` re-resolving by path (`Dir::open_ambient_dir` of
/// the joined path) downloads both files, one of them into `outside`.
#[tokio::test]
async fn a_directory_swapped_for_a_link_mid_download_is_refused() {
    let conn = connect().await;
    let remote = RemoteDir::new(&conn, "swapdown").await;
    remote
        .sh(&format!(
            "mkdir -p {p}/tree/sub && echo a > {p}/tree/a.txt && echo b > {p}/tree/sub/b.txt",
            p = remote.path
        ))
        .await;
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let out = ws.path().join("out");
    let (sub, away) = (out.join("sub"), outside.path().to_path_buf());
    let swapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    hooks::install({
        let (sub, away, swapped) = (sub.clone(), away.clone(), swapped.clone());
        move |point| {
            if let Point::BeforeOpen(path) = point
                && path.ends_with("sub/b.txt")
                && !swapped.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                std::fs::remove_dir_all(&sub).unwrap();
                symlink(&away, &sub).unwrap();
            }
        }
    });
    let e = copy::download(
        &conn,
        &format!("{}/tree", remote.path),
        &Target::ambient(&out).unwrap(),
        ROOT,
        DEFAULT_MAX_DOWNLOAD_BYTES,
    )
    .await
    .unwrap_err();
    hooks::clear();
    assert!(
        swapped.load(std::sync::atomic::Ordering::SeqCst),
        "the hook never ran"
    );
    assert!(
        matches!(&e, SshError::LocalIo(m) if m.contains("symbolic link")),
        "{e:?}"
    );
    assert!(
        listing(outside.path()).is_empty(),
        "{:?}",
        listing(outside.path())
    );
    remote.remove().await;
}

/// Uploads checked a file, then opened it by path again: a file swapped for
/// a symlink mid-upload sent /etc/shadow to the cluster (and its hash check
/// passed). Now each file is read through the handle of the tree it was
/// planned in, and must still be the very file the walk found. The hook
/// swaps `tree/b.txt` for a symlink to an outside secret, then (second run)
/// `tree/sub` for a symlink to an outside directory, then (third run)
/// `tree/b.txt` for a hard link to the secret. Negative controls (done):
/// without the inode comparison in `LocalFile::open`, the hard link is sent;
/// without it and opening by full path (`std::fs::File::open(shown)`), the
/// symlinked secret is sent too. (The two guards overlap: the inode check
/// alone also catches the symlink.)
#[tokio::test]
async fn a_file_swapped_mid_upload_is_never_sent() {
    let conn = connect().await;
    let remote = RemoteDir::new(&conn, "swapup").await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "SECRET-CONTENT").unwrap();
    std::fs::create_dir(outside.path().join("dir")).unwrap();
    std::fs::write(outside.path().join("dir/c.txt"), "SECRET-CONTENT").unwrap();
    for (case, swapped_name) in [("link", "b.txt"), ("dir", "c.txt"), ("hard", "b.txt")] {
        let ws = tempfile::tempdir().unwrap();
        let tree = ws.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("a.txt"), "a").unwrap();
        std::fs::write(tree.join("b.txt"), "b").unwrap();
        std::fs::write(tree.join("sub/c.txt"), "c").unwrap();
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        hooks::install({
            let (tree, outside, fired) =
                (tree.clone(), outside.path().to_path_buf(), fired.clone());
            let case = case.to_string();
            move |point| {
                let Point::BeforeOpen(path) = point else {
                    return;
                };
                if !path.ends_with(swapped_name)
                    || fired.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    return;
                }
                match case.as_str() {
                    "link" => {
                        std::fs::remove_file(tree.join("b.txt")).unwrap();
                        symlink(outside.join("secret"), tree.join("b.txt")).unwrap();
                    }
                    "dir" => {
                        std::fs::remove_dir_all(tree.join("sub")).unwrap();
                        symlink(outside.join("dir"), tree.join("sub")).unwrap();
                    }
                    _ => {
                        std::fs::remove_file(tree.join("b.txt")).unwrap();
                        std::fs::hard_link(outside.join("secret"), tree.join("b.txt")).unwrap();
                    }
                }
            }
        });
        let grants = grants(ws.path());
        let source: Source = grants.local_source("tree").unwrap();
        let dest = format!("{}/{case}", remote.path);
        let e = copy::upload(&conn, &source, &dest, ROOT).await.unwrap_err();
        hooks::clear();
        assert!(
            fired.load(std::sync::atomic::Ordering::SeqCst),
            "{case}: the hook never ran"
        );
        assert!(
            matches!(&e, SshError::LocalIo(m) if m.contains("symbolic link") || m.contains("replaced")),
            "{case}: {e:?}"
        );
        let there = remote
            .sh(&format!(
                "cat {dest}/b.txt {dest}/sub/c.txt 2>/dev/null; true"
            ))
            .await;
        assert!(
            !there.contains("SECRET"),
            "{case}: the cluster got {there:?}"
        );
    }
    remote.remove().await;
}

/// A result tree may hold `.git` (a job can make anything in its run
/// directory); a download of it would plant an executable hook. Such a tree
/// is refused whole, with the file named; nothing is written. A file name
/// of 255 bytes (the most a file system takes) still downloads: its partial
/// file gets a hashed name. Negative controls: without the
/// `never_written` check in `plan_download`, `.git/hooks/post-checkout`
/// lands in the workspace; with the partial named `.NAME.cluster-slurm-part`
/// always, the 255-byte file fails with "File name too long" (both done).
#[tokio::test]
async fn vcs_metadata_is_never_downloaded_and_long_names_are() {
    let conn = connect().await;
    let remote = RemoteDir::new(&conn, "git").await;
    let long = "n".repeat(255);
    remote
        .sh(&format!(
            "mkdir -p {p}/tree/.git/hooks {p}/long && printf '#!/bin/sh\\nid\\n' > {p}/tree/.git/hooks/post-checkout && chmod +x {p}/tree/.git/hooks/post-checkout && echo ok > {p}/tree/result.txt && echo long > {p}/long/{long}",
            p = remote.path
        ))
        .await;
    let ws = tempfile::tempdir().unwrap();
    let e = copy::download(
        &conn,
        &format!("{}/tree", remote.path),
        &Target::ambient(&ws.path().join("out")).unwrap(),
        ROOT,
        DEFAULT_MAX_DOWNLOAD_BYTES,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, SshError::LocalIo(m) if m.contains(".git") && m.contains("never writes")),
        "{e:?}"
    );
    assert!(listing(ws.path()).is_empty(), "{:?}", listing(ws.path()));
    // A repository by content under another name (git takes `HEAD` with
    // `refs`/`objects` for one, and runs its config's core.fsmonitor), and
    // `.GIT` (a case-insensitive file system's `.git`). Negative control:
    // the release before the `looks_like_git_dir` check downloaded such a
    // tree whole (4 files; the attack review then ran its core.fsmonitor
    // with `git status`).
    remote
        .sh(&format!(
            "mkdir -p {p}/repo/evil/refs/heads {p}/repo/evil/objects {p}/upper/.GIT/hooks && printf 'ref: refs/heads/main\n' > {p}/repo/evil/HEAD && printf '[core]\n\tfsmonitor = touch /tmp/pwned\n' > {p}/repo/evil/config && touch {p}/repo/evil/refs/heads/.keep {p}/repo/evil/objects/.keep {p}/upper/.GIT/hooks/post-checkout",
            p = remote.path
        ))
        .await;
    for tree in ["repo", "upper"] {
        let e = copy::download(
            &conn,
            &format!("{}/{tree}", remote.path),
            &Target::ambient(&ws.path().join("out")).unwrap(),
            ROOT,
            DEFAULT_MAX_DOWNLOAD_BYTES,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, SshError::LocalIo(m) if m.contains("never writes version-control metadata")),
            "{tree}: {e:?}"
        );
        assert!(
            listing(ws.path()).is_empty(),
            "{tree}: {:?}",
            listing(ws.path())
        );
    }
    // The destination itself may not be one either (the checkpoint).
    let g = grants(ws.path());
    assert!(g.local_destination(".git/hooks/pre-commit").is_err());
    let moved = copy::download(
        &conn,
        &format!("{}/long", remote.path),
        &Target::ambient(&ws.path().join("long")).unwrap(),
        ROOT,
        DEFAULT_MAX_DOWNLOAD_BYTES,
    )
    .await
    .unwrap();
    assert_eq!((moved.files, moved.verified), (1, 1), "{moved:?}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("long").join(&long)).unwrap(),
        "long\n"
    );
    remote.remove().await;
}

/// The audit log was appended through a symlink planted at its name, and
/// the approvals file read through one (any file's lines could pass for
/// decisions). Neither follows a link now. Negative control (done): opening
/// either without `O_NOFOLLOW` appends to / reads `elsewhere`.
#[test]
fn the_hosts_own_records_are_never_opened_through_a_link() {
    let state = tempfile::tempdir().unwrap();
    let elsewhere = state.path().join("elsewhere");
    std::fs::write(
        &elsewhere,
        "{\"workspace\":\"/w\",\"runId\":\"r1\",\"decision\":\"approved\",\"by\":\"x\",\"atMs\":1}\n",
    )
    .unwrap();
    let before = std::fs::read(&elsewhere).unwrap();
    let log = state.path().join("audit.jsonl");
    symlink(&elsewhere, &log).unwrap();
    let audit = AuditLog::at(&log);
    let call = audit.call("exec", [("program", json!("sbatch"))]);
    call.end::<(), 0>(&Ok(()), |_| []);
    assert_eq!(std::fs::read(&elsewhere).unwrap(), before);

    let book_path = state.path().join("approvals.jsonl");
    symlink(&elsewhere, &book_path).unwrap();
    let book = ApprovalBook::at(&book_path);
    let e = book.decision(Path::new("/w"), "r1").unwrap_err();
    assert!(matches!(&e, HostError::LocalIo(_)), "{e:?}");
    let e = book
        .decide(Path::new("/w"), "r2", "k", true, "ops", "")
        .unwrap_err();
    assert!(matches!(&e, HostError::LocalIo(_)), "{e:?}");
    assert_eq!(std::fs::read(&elsewhere).unwrap(), before);
}
