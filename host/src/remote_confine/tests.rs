//! The command builder, and the built command run by real local shells
//! (bash, and dash when present, as a login shell would run it) against a
//! planted run directory: the same text the host sends over SSH.

use super::*;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn profile(root: &str) -> ProfileGrant {
    ProfileGrant {
        label: "c".into(),
        ssh_target: "login".into(),
        remote_root: root.into(),
    }
}

#[test]
fn options_that_undo_the_confinement_are_refused() {
    let p = profile("/scratch/u/runs");
    for (prog, a) in [
        ("tail", vec!["-f", "--", "x.out"]),
        ("tail", vec!["-F", "--", "x.out"]),
        ("tail", vec!["--pid=1", "--", "x.out"]),
        ("tail", vec!["-n", "5; id", "--", "x.out"]),
        ("tail", vec!["-n", "5"]),
        ("tail", vec!["-n", "5", "x.out"]),
        ("tail", vec!["-n", "5", "--", "a", "b"]),
        ("head", vec!["-c", "+5", "--", "x"]),
        ("ls", vec!["-L", "--", "."]),
        ("ls", vec!["-lH", "--", "."]),
        ("ls", vec!["-R", "--", "."]),
        ("ls", vec!["--dereference", "--", "."]),
        ("ls", vec!["-1", "marker"]),
        ("stat", vec!["-L", "--", "x"]),
        ("sha256sum", vec!["-c", "--", "sums"]),
        ("sha256sum", vec!["--check", "--", "sums"]),
        ("mkdir", vec!["-m", "777", "--", "x"]),
        ("tail", vec!["--", "/etc/passwd"]),
        ("tail", vec!["--", "/scratch/u/runs2/x"]),
        ("tail", vec!["--", "a/../b"]),
    ] {
        assert!(command(&p, prog, &args(&a), None).is_err(), "{prog} {a:?}");
    }
    for (prog, a) in [
        ("tail", vec!["-n", "200", "--", "slurm-1.out"]),
        ("tail", vec!["-c", "+101", "--", "slurm-1.out"]),
        ("head", vec!["-c", "16", "--", ".cluster-slurm/exit-1"]),
        ("ls", vec!["-lnAb", "--time-style=+%s", "--", "."]),
        ("ls", vec!["-1Ab", "--", ".cluster-slurm"]),
        ("stat", vec!["-c", "%s", "--", "x"]),
        ("sha256sum", vec!["--", "/scratch/u/runs/r1/x"]),
        ("mkdir", vec!["-p", "--", "r1"]),
        ("sbatch", vec!["--parsable", "job.slurm"]),
    ] {
        assert!(command(&p, prog, &args(&a), None).is_ok(), "{prog} {a:?}");
    }
}

#[test]
fn the_command_resolves_on_the_cluster_and_slurm_commands_only_get_the_cwd_check() {
    let p = profile("/scratch/u/runs");
    let cmd = command(
        &p,
        "sbatch",
        &args(&["--parsable", "job.slurm"]),
        Some("/scratch/u/runs/r1"),
    )
    .unwrap();
    assert_eq!(
        cmd,
        super::with_root_check(
            "/scratch/u/runs",
            &(super::enter_root("/scratch/u/runs")
                + " cd -P -- /scratch/u/runs/r1 && cs_h=$(cs_pwd; printf x) && cs_h=${cs_h%?x} && case $cs_h in \"$cs_r\"|\"$cs_r\"/*) exec sbatch --parsable job.slurm;; *) printf '%s\\n' 'cluster-slurm-confine: cwd' >&2; exit 90;; esac")
        )
    );
    let cmd = command(&p, "tail", &args(&["-n", "5", "--", "x.out"]), None).unwrap();
    assert!(
        cmd.starts_with(&super::with_root_check(
            "/scratch/u/runs",
            &(super::enter_root("/scratch/u/runs") + " cd -P -- \"$cs_r/\" && ")
        )),
        "{cmd}"
    );
    assert!(cmd.contains("set -- timeout -k 5 30;"), "{cmd}");
    assert!(
        cmd.contains(" cs \"$cs_r\" tail file 1048577 . 1 x.out -n 5;; "),
        "{cmd}"
    );
    let cmd = command(
        &p,
        "head",
        &args(&["-c", "16", "--", "/scratch/u/runs/r1/.cluster-slurm/exit-1"]),
        None,
    )
    .unwrap();
    assert!(
        cmd.contains(" r 3 r1 .cluster-slurm exit-1 -c 16;; "),
        "{cmd}"
    );
    let home = profile("~/runs");
    let cmd = command(&home, "ls", &args(&["-1", "--", "."]), Some("~/runs/r1")).unwrap();
    assert!(
        cmd.starts_with(&super::with_root_check(
            "\"$HOME\"/runs",
            &(super::enter_root("\"$HOME\"/runs") + " cd -P -- \"$HOME\"/runs/r1 && ")
        )),
        "{cmd}"
    );
}

/// A run directory as a hostile job leaves it, under `root`, and a secret
/// outside it.
fn plant(base: &Path) -> (String, String) {
    let root = base.join("runs");
    let run = root.join("r1");
    std::fs::create_dir_all(run.join("sub")).unwrap();
    std::fs::create_dir_all(base.join("outside")).unwrap();
    let secret = base.join("outside/secret");
    std::fs::write(&secret, "TOP-SECRET\n").unwrap();
    std::fs::write(run.join("x.out"), "line1\nline2\n").unwrap();
    std::fs::write(run.join("sub/y.out"), "inner\n").unwrap();
    symlink(&secret, run.join("p")).unwrap();
    symlink(base.join("outside"), run.join("s")).unwrap();
    symlink("/dev/zero", run.join("z")).unwrap();
    symlink("/", run.join("slash")).unwrap();
    symlink("sub", run.join("insub")).unwrap();
    let fifo = Command::new("mkfifo").arg(run.join("f")).status().unwrap();
    assert!(fifo.success());
    (
        root.to_string_lossy().into_owned(),
        secret.to_string_lossy().into_owned(),
    )
}

fn shells() -> Vec<&'static str> {
    ["bash", "dash"]
        .into_iter()
        .filter(|sh| {
            Command::new(sh)
                .arg("-c")
                .arg("true")
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect()
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    denied: Option<String>,
}

fn run(shell: &str, p: &ProfileGrant, prog: &str, a: &[&str], cwd: Option<&str>) -> Ran {
    let a = args(a);
    let cmd = command(p, prog, &a, cwd).unwrap();
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["20", shell, "-c", &cmd])
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{prog} {a:?} hung"
    );
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        denied: refusal(p, prog, &a, cwd, out.status.code(), &out.stderr),
    }
}

/// Negative control (run once): with the script's checks removed (`inr`
/// a no-op, no symlink/regular-file/`-ef` checks, `capped` a plain `exec`,
/// the login shell's cwd `case` running the command either way), this test
/// failed at its first case: `tail -n 5 -- p` returned the outside file's
/// TOP-SECRET line.
#[test]
fn planted_links_devices_and_fifos_are_refused_on_the_cluster() {
    let base = tempfile::tempdir().unwrap();
    let (root, _secret) = plant(base.path());
    let p = profile(&root);
    let r1 = format!("{root}/r1");
    for sh in shells() {
        let ok = run(sh, &p, "tail", &["-n", "1", "--", "x.out"], Some(&r1));
        assert_eq!((ok.code, ok.stdout.as_str()), (Some(0), "line2\n"), "{sh}");
        let ok = run(sh, &p, "head", &["-c", "5", "--", "insub/y.out"], Some(&r1));
        assert_eq!(
            ok.stdout, "inner",
            "{sh}: a symlinked directory inside the root is fine"
        );
        let missing = run(sh, &p, "tail", &["-n", "1", "--", "nope.out"], Some(&r1));
        assert_eq!(
            (missing.code, missing.denied),
            (Some(1), None),
            "{sh}: missing is not denied"
        );
        let cases: &[(&str, &[&str], Option<&str>, &str)] = &[
            ("tail", &["-n", "5", "--", "p"], Some(&r1), "is a symlink"),
            (
                "head",
                &["-c", "16", "--", &format!("{r1}/p")],
                None,
                "is a symlink",
            ),
            ("tail", &["-c", "+1", "--", "z"], Some(&r1), "is a symlink"),
            (
                "tail",
                &["-n", "5", "--", "f"],
                Some(&r1),
                "is not a regular file",
            ),
            (
                "tail",
                &["-n", "5", "--", "sub"],
                Some(&r1),
                "is not a regular file",
            ),
            (
                "tail",
                &["-n", "5", "--", "s/secret"],
                Some(&r1),
                "resolves outside remoteRoot",
            ),
            (
                "sha256sum",
                &["--", "s/secret"],
                Some(&r1),
                "resolves outside remoteRoot",
            ),
            ("ls", &["-1", "--", "s"], Some(&r1), "is a symlink"),
            (
                "ls",
                &["-1", "--", "slash/etc"],
                Some(&r1),
                "resolves outside remoteRoot",
            ),
            (
                "stat",
                &["-c", "%s", "--", "s/secret"],
                Some(&r1),
                "resolves outside remoteRoot",
            ),
            (
                "mkdir",
                &["-p", "--", "s/new"],
                Some(&r1),
                "resolves outside remoteRoot",
            ),
            ("mkdir", &["-p", "--", "s"], Some(&r1), "is a symlink"),
        ];
        for (prog, a, cwd, why) in cases {
            let got = run(sh, &p, prog, a, *cwd);
            assert!(
                !got.stdout.contains("TOP-SECRET"),
                "{sh} {prog} {a:?}: {}",
                got.stdout
            );
            let denied = got.denied.unwrap_or_default();
            assert!(
                denied.contains(why),
                "{sh} {prog} {a:?}: {denied:?} (exit {:?})",
                got.code
            );
        }
        for cwd in [format!("{r1}/s"), format!("{r1}/slash")] {
            let got = run(sh, &p, "ls", &["-1", "--", "."], Some(&cwd));
            let denied = got.denied.unwrap_or_default();
            assert!(
                denied.contains("remote working directory"),
                "{sh} {cwd}: {denied:?}"
            );
            let got = run(sh, &p, "squeue", &[], Some(&cwd));
            assert!(
                got.denied.is_some_and(|d| d.contains("resolves outside")),
                "{sh} {cwd}"
            );
        }
        assert!(!base.path().join("outside/new").exists());
    }
}

/// Negative control (run once, same broken script): without the `head -c`
/// stage the 3 MiB read came back whole (the length assertion failed).
#[test]
fn reads_are_bounded_in_bytes_on_the_cluster() {
    let base = tempfile::tempdir().unwrap();
    let (root, _) = plant(base.path());
    std::fs::write(format!("{root}/r1/big"), vec![b'y'; 3 << 20]).unwrap();
    let p = profile(&root);
    for sh in shells() {
        let got = run(
            sh,
            &p,
            "tail",
            &["-c", "+1", "--", "big"],
            Some(&format!("{root}/r1")),
        );
        assert_eq!(got.code, Some(0), "{sh}: a cut read is not a failure");
        assert_eq!(got.stdout.len(), OUTPUT_CAP + 1, "{sh}");
    }
}

#[test]
fn names_with_any_byte_are_reached_exactly() {
    let base = tempfile::tempdir().unwrap();
    let (root, _) = plant(base.path());
    let odd = "a b\n'q\"\\é $(id)";
    std::fs::write(format!("{root}/r1/{odd}"), "odd\n").unwrap();
    let p = profile(&root);
    for sh in shells() {
        let got = run(
            sh,
            &p,
            "tail",
            &["-n", "1", "--", odd],
            Some(&format!("{root}/r1")),
        );
        assert_eq!(got.stdout, "odd\n", "{sh}");
        let got = run(
            sh,
            &p,
            "ls",
            &["-1Ab", "--", "."],
            Some(&format!("{root}/r1")),
        );
        assert!(
            got.stdout.contains("a\\ b\\n'q\"\\\\é\\ $(id)"),
            "{sh}: {}",
            got.stdout
        );
        let got = run(
            sh,
            &p,
            "mkdir",
            &["-p", "--", "new/deeper"],
            Some(&format!("{root}/r1")),
        );
        assert_eq!(got.code, Some(0), "{sh}");
        assert!(Path::new(&format!("{root}/r1/new/deeper")).is_dir());
    }
}

/// The cluster user owns the root's parent (their home), so a job can
/// rename the root and put a link in its place: `ln -s / cluster-runs`.
/// Every command line then refuses before it resolves the root
/// (`rootlink`), for SLURM programs and confined readers alike, in bash
/// and dash. (The tests run as root, for whom every directory is writable,
/// so a site's link in a directory the user cannot write is not shown
/// here.) Negative control (run): with the `cs_root_ok` call removed from
/// `command`, the commands ran through the swapped root (the test failed
/// at its first case, `tail -- etc/passwd`, exit 0 instead of 90).
#[test]
fn a_root_swapped_for_a_link_is_refused_before_anything_runs() {
    let base = tempfile::tempdir().unwrap();
    let (root, _secret) = plant(base.path());
    let moved = format!("{root}.old");
    std::fs::rename(&root, &moved).unwrap();
    symlink("/", &root).unwrap();
    let p = profile(&root);
    let why = root_link_refusal(&root);
    for sh in shells() {
        for (prog, a, cwd) in [
            ("head", vec!["-c", "5", "--", "etc/passwd"], None),
            ("squeue", vec!["-h"], None),
            ("ls", vec!["-1Ab", "--", "etc"], Some(format!("{root}/etc"))),
        ] {
            let ran = run(sh, &p, prog, &a, cwd.as_deref());
            assert!(!ran.stdout.contains("root:"), "{sh} {prog}: {}", ran.stdout);
            assert_eq!(ran.code, Some(REFUSED_EXIT), "{sh} {prog}");
            assert_eq!(ran.denied.as_deref(), Some(why.as_str()), "{sh} {prog}");
        }
    }
}
