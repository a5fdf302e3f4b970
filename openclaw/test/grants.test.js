// lib/grants.js against host/src/grants.rs: every case of the Rust unit
// tests (`mod tests`) with the same inputs and outcomes, the quoting tests of
// host/src/ssh.rs, the refusal texts of grants.rs's format strings, and edge
// cases whose Rust answers were taken from grants.rs itself. The last section
// holds the former disagreements (Unicode control and white space, message
// quoting), found by running both on random input.

import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {
  ALLOWED_PROGRAMS, GrantError, Grants, quoteCommand, quoteWord, sftpPath, shellPath,
} from "../lib/grants.js";
import { assertRefusal, grantsFor, tempDir, thrown, atRoot, inDir, withRootCheck } from "./helpers.js";
import { enterRoot } from "../lib/remote-confine.js";

const ALLOWLIST = "sbatch, squeue, sacct, scancel, scontrol, sinfo, mkdir, tail, head, ls, stat, sha256sum";

/** A one-profile config, for the bad-config cases. */
const one = (profile) => ({ clusters: { c: profile } });

/** The GrantError message for `config`, failing if it was accepted. */
function grantError(config, workspace) {
  const e = thrown(() => new Grants(config, workspace));
  assert.ok(e instanceof GrantError, `expected a GrantError, got ${e}`);
  return e.message;
}

// ---------------------------------------------------------------------------
// host/src/grants.rs `mod tests`, case by case
// ---------------------------------------------------------------------------

test("rs unknown_profile_and_bad_config", (t) => {
  const ws = tempDir(t);
  const g = grantsFor(ws);
  assertRefusal(thrown(() => g.profile("x")), "unknown-cluster", 'no cluster profile named "x" is configured on this host');
  for (const bad of [
    one({ sshTarget: "-oProxyCommand=x", remoteRoot: "/r" }),
    one({ sshTarget: "h", remoteRoot: "~other/runs" }),
    one({ sshTarget: "h", remoteRoot: "runs" }),
    one({ sshTarget: "h", remoteRoot: "/" }),
    one({ sshTarget: "h", remoteRoot: "/a/../b" }),
    one({ remoteRoot: "/r" }),
    { localRunsDir: "../x" },
  ]) {
    assert.throws(() => new Grants(bad, ws), GrantError, JSON.stringify(bad));
  }
});

test("rs remote_paths_are_confined", (t) => {
  const g = grantsFor(tempDir(t));
  const p = g.profile("c");
  assert.equal(g.remotePath(p, "r1/job.slurm"), "/scratch/u/runs/r1/job.slurm");
  assert.equal(g.remotePath(p, "/scratch/u/runs//r1/"), "/scratch/u/runs/r1");
  for (const bad of ["/etc/passwd", "/scratch/u/runs2", "r1/../../x", "~/x", "/scratch/u/runs/./x", "a\nb"]) {
    assertRefusal(thrown(() => g.remotePath(p, bad)), "denied");
  }
});

test("rs home_roots_expand_on_the_remote_side", (t) => {
  const g = grantsFor(tempDir(t), { clusters: { h: { sshTarget: "login", remoteRoot: "~/runs" } } });
  const p = g.profile("h");
  assert.equal(g.remotePath(p, "r1/x"), "~/runs/r1/x");
  assert.equal(g.remotePath(p, "~/runs/r1"), "~/runs/r1");
  for (const bad of ["~/other", "~root/runs", "/home/u/runs", "~/runs/../x"]) {
    assertRefusal(thrown(() => g.remotePath(p, bad)), "denied");
  }
  assert.equal(sftpPath("~/runs/r1/x"), "runs/r1/x");
  assert.equal(sftpPath("/abs/x"), "/abs/x");
  const tail = g.execCommand(p, "tail", ["-n", "5", "--", "x.out"], "~/runs/r1");
  assert.ok(tail.startsWith(`${withRootCheck('"$HOME"/runs')} ${enterRoot('"$HOME"/runs')} cd -P -- "$HOME"/runs/r1 && `), tail);
  assert.ok(tail.endsWith(` cs "$cs_r" tail file 1048577 . 1 x.out -n 5;; *) printf '%s\\n' 'cluster-slurm-confine: cwd' >&2; exit 90;; esac`), tail);
  const cmd = g.execCommand(p, "squeue", [], undefined);
  assert.ok(cmd.startsWith(`${withRootCheck('"$HOME"/runs')} ${enterRoot('"$HOME"/runs')} cd -P -- "$cs_r/" && `), cmd);
});

test("rs exec_commands_are_checked_and_quoted", (t) => {
  const g = grantsFor(tempDir(t));
  const p = g.profile("c");
  assert.equal(
    g.execCommand(p, "sbatch", ["--parsable", "--job-name=a b", "--", "job.slurm"], "r1"),
    inDir("/scratch/u/runs", "/scratch/u/runs/r1", "exec sbatch --parsable '--job-name=a b' -- job.slurm"),
  );
  const cmd = g.execCommand(p, "squeue", ["-o", "%i|%T"], undefined);
  assert.ok(cmd.includes("exec squeue -o '%i|%T';; "), cmd);
  for (const [prog, args] of [
    ["bash", ["-c", "id"]],
    ["tail", ["/etc/passwd"]],
    ["tail", ["../../.ssh/id_rsa"]],
    ["tail", ["~/.ssh/id_rsa"]],
    ["sbatch", ["--output=/tmp/x", "job.slurm"]],
    ["sbatch", ["-o/tmp/x", "job.slurm"]],
    ["sbatch", ["--chdir=/home/u", "job.slurm"]],
    ["sbatch", ["a\nb"]],
  ]) {
    assertRefusal(thrown(() => g.execCommand(p, prog, args, undefined)), "denied");
  }
  assertRefusal(thrown(() => g.execCommand(p, "tail", [], "/etc")), "denied");
});

test("rs local_paths_are_confined_by_realpath", (t) => {
  const ws = tempDir(t);
  const outside = tempDir(t, "outside");
  fs.writeFileSync(path.join(ws, "in.txt"), "x");
  fs.writeFileSync(path.join(outside, "secret"), "s");
  fs.symlinkSync(path.join(outside, "secret"), path.join(ws, "link"));
  fs.symlinkSync(outside, path.join(ws, "outdir"));
  const g = grantsFor(ws);
  assert.equal(g.localSource("in.txt"), path.join(fs.realpathSync(ws), "in.txt"));
  // A symlink out of the workspace must be refused.
  assertRefusal(thrown(() => g.localSource("link")), "denied");
  assertRefusal(thrown(() => g.localSource("../in.txt")), "denied");
  assertRefusal(thrown(() => g.localSource("/etc/passwd")), "denied");
  assert.equal(g.localDestination("downloads/r/result.json"), path.join(g.workspace, "downloads/r/result.json"));
  // Never write through a symlink.
  assertRefusal(thrown(() => g.localDestination("link")), "denied");
  assertRefusal(thrown(() => g.localDestination("outdir/x")), "denied");
  assert.equal(g.storePath("runs.json"), path.join(g.workspace, ".openclaw/cluster-runs/runs.json"));
  assertRefusal(thrown(() => g.storePath("../../x")), "denied");
});

// ---------------------------------------------------------------------------
// host/src/ssh.rs quoting tests (grants.js carries its own quote_word)
// ---------------------------------------------------------------------------

test("rs quoting_words", () => {
  assert.equal(quoteWord("abc-1.2_x/y=z:%@+,"), "abc-1.2_x/y=z:%@+,");
  assert.equal(quoteWord(""), "''");
  assert.equal(quoteWord("a b"), "'a b'");
  assert.equal(quoteWord("it's"), "'it'\"'\"'s'");
  assert.equal(quoteWord("$HOME"), "'$HOME'");
  assert.equal(quoteWord("a\nb"), "'a\nb'");
  assert.equal(quoteWord("~"), "'~'");
  assert.equal(quoteWord("*"), "'*'");
  assert.equal(quoteWord("`id`"), "'`id`'");
});

test("rs quoting_commands", () => {
  assert.equal(
    quoteCommand("sbatch", ["--name=x y", "", "$(rm -rf /)", "'"]),
    "sbatch '--name=x y' '' '$(rm -rf /)' ''\"'\"''",
  );
  // A bare `A=b` would be a variable assignment, not a program.
  assert.equal(quoteCommand("A=b", []), "'A=b'");
  assert.equal(quoteCommand("squeue", ["-u", "me"]), "squeue -u me");
});

test("rs quoting_round_trips_through_sh", () => {
  const args = [
    "plain", "", "with space", "single'quote", 'double"quote', "$HOME $(id) `id`", "new\nline",
    "tab\there", "glob*?[a]", "back\\slash", "~user", "semi;colon&amp|pipe>redir", "'", "''",
  ];
  const cmd = quoteCommand("printf", ["%s\\0", ...args]);
  const out = spawnSync("sh", ["-c", cmd], { encoding: "utf8" });
  assert.equal(out.status, 0, cmd);
  // Every argument arrives unchanged, then the trailing separator.
  assert.deepEqual(out.stdout.split("\0"), [...args, ""]);
});

// ---------------------------------------------------------------------------
// Refusal and config-error texts: grants.rs's format strings, verbatim
// ---------------------------------------------------------------------------

test("config errors carry grants.rs's messages", (t) => {
  const ws = tempDir(t);
  const root = "must be an absolute path or ~/dir, without '.', '..' or empty ('//') segments (and not / itself)";
  const cases = [
    [one({ sshTarget: "-oProxyCommand=x", remoteRoot: "/r" }), 'clusters.c.sshTarget "-oProxyCommand=x" is not a host name or alias'],
    [one({ sshTarget: "h o", remoteRoot: "/r" }), 'clusters.c.sshTarget "h o" is not a host name or alias'],
    [one({ sshTarget: "h", remoteRoot: "~other/runs" }), `clusters.c.remoteRoot "~other/runs" ${root}`],
    [one({ sshTarget: "h", remoteRoot: "runs" }), `clusters.c.remoteRoot "runs" ${root}`],
    [one({ sshTarget: "h", remoteRoot: "/" }), `clusters.c.remoteRoot "/" ${root}`],
    [one({ sshTarget: "h", remoteRoot: "//" }), `clusters.c.remoteRoot "//" ${root}`],
    [one({ sshTarget: "h", remoteRoot: "~~" }), `clusters.c.remoteRoot "~~" ${root}`],
    [one({ sshTarget: "h", remoteRoot: "/a/../b" }), `clusters.c.remoteRoot "/a/../b" ${root}`],
    [one({ sshTarget: "h", remoteRoot: "/a/./b" }), `clusters.c.remoteRoot "/a/./b" ${root}`],
    [one({ sshTarget: "h", remoteRoot: "/a//b" }), `clusters.c.remoteRoot "/a//b" ${root}`],
    [one({ sshTarget: "h", remoteRoot: "~/.." }), `clusters.c.remoteRoot "~/.." ${root}`],
    [one({ remoteRoot: "/r" }), "clusters.c.sshTarget is required and must be a string"],
    [one({ sshTarget: 1, remoteRoot: "/r" }), "clusters.c.sshTarget is required and must be a string"],
    [one({ sshTarget: "  ", remoteRoot: "/r" }), "clusters.c.sshTarget is required and must be a string"],
    [one({ sshTarget: "h" }), "clusters.c.remoteRoot is required and must be a string"],
    [one({ sshTarget: "h", remoteRoot: null }), "clusters.c.remoteRoot is required and must be a string"],
    [one("str"), "clusters.c.sshTarget is required and must be a string"],
    [{ clusters: [] }, "clusters must be an object"],
    [{ clusters: "x" }, "clusters must be an object"],
    [{ clusters: 1 }, "clusters must be an object"],
    [{ localRunsDir: "../x" }, 'localRunsDir "../x" must be a relative path inside the workspace'],
    [{ localRunsDir: "a/../b" }, 'localRunsDir "a/../b" must be a relative path inside the workspace'],
    [{ localRunsDir: "/abs" }, 'localRunsDir "/abs" must be a relative path inside the workspace'],
    [{ localRunsDir: "~/x" }, 'localRunsDir "~/x" must be a relative path inside the workspace'],
    [{ localRunsDir: "." }, 'localRunsDir "." must be a relative path inside the workspace'],
    [{ localRunsDir: "" }, 'localRunsDir "" must be a relative path inside the workspace'],
    [{ localRunsDir: 3 }, "localRunsDir must be a string"],
    [{ localRunsDir: false }, "localRunsDir must be a string"],
  ];
  for (const [config, message] of cases) assert.equal(grantError(config, ws), message, JSON.stringify(config));
  // DEL is refused too (its message text differs: see the todo section).
  assert.throws(() => new Grants(one({ sshTarget: "h\u007fo", remoteRoot: "/r" }), ws), GrantError);
  // Surrounding whitespace, a trailing newline included, is trimmed away.
  assert.equal(new Grants(one({ sshTarget: "h", remoteRoot: "/r\n" }), ws).profile("c").remoteRoot, "/r");
  // A workspace that does not exist is a config error too.
  assert.match(grantError({}, path.join(ws, "missing")), /^workspace .*missing: /);
});

test("accepted configs are read as grants.rs reads them", (t) => {
  const ws = tempDir(t);
  // Defaults: no profiles, the default run store.
  const empty = new Grants({}, ws);
  assert.equal(empty.profiles.size, 0);
  assert.equal(empty.runsDirDisplay, ".openclaw/cluster-runs");
  assert.equal(new Grants({ localRunsDir: null }, ws).runsDirDisplay, ".openclaw/cluster-runs");
  assert.deepEqual(empty.programs, ALLOWLIST.split(", "));
  assert.deepEqual(ALLOWED_PROGRAMS, ALLOWLIST.split(", "));
  // Labels, targets and roots are trimmed; the root loses trailing slashes.
  const g = new Grants({ clusters: { " c ": { sshTarget: " h ", remoteRoot: " ~/ " } }, localRunsDir: " ./x/ " }, ws);
  assert.deepEqual([...g.profiles.values()], [{ label: "c", sshTarget: "h", remoteRoot: "~" }]);
  assert.equal(g.runsDirDisplay, "./x/");
  assert.equal(path.resolve(g.runsDir()), path.join(g.workspace, "x"));
  // A blank label is skipped, even with a broken profile.
  assert.equal(new Grants({ clusters: { "  ": { sshTarget: "-x" } } }, ws).profiles.size, 0);
  // The workspace is canonical: reached through a symlink, it is the target.
  const alias = path.join(tempDir(t, "alias"), "ws");
  fs.symlinkSync(ws, alias);
  assert.equal(new Grants({}, alias).workspace, fs.realpathSync(ws));
});

test("refusals carry grants.rs's messages", (t) => {
  const ws = tempDir(t);
  const outside = tempDir(t, "outside");
  fs.writeFileSync(path.join(outside, "secret"), "s");
  fs.symlinkSync(path.join(outside, "secret"), path.join(ws, "link"));
  fs.symlinkSync(outside, path.join(ws, "outdir"));
  const g = grantsFor(ws);
  const real = g.workspace;
  const p = g.profile("c");
  const cases = [
    [() => g.profile(""), "unknown-cluster", 'no cluster profile named "" is configured on this host'],
    [() => g.remotePath(p, "/etc/passwd"), "denied", 'remote path "/etc/passwd" is outside remoteRoot /scratch/u/runs of profile "c"'],
    [() => g.remotePath(p, "/scratch/u/runs2"), "denied", 'remote path "/scratch/u/runs2" is outside remoteRoot /scratch/u/runs of profile "c"'],
    [() => g.remotePath(p, "r1/../../x"), "denied", "remote path \"r1/../../x\" may not contain '.' or '..' segments"],
    [() => g.remotePath(p, "/scratch/u/runs/./x"), "denied", "remote path \"/scratch/u/runs/./x\" may not contain '.' or '..' segments"],
    [() => g.remotePath(p, "~root/x"), "denied", 'remote path "~root/x": only ~/... (the login user\'s home) is understood'],
    [() => g.remotePath(p, "~/x"), "denied", 'remote path "~/x" is outside remoteRoot /scratch/u/runs of profile "c"'],
    [() => g.remotePath(p, "a\nb"), "denied", 'remote path "a\\nb" contains control characters'],
    [() => g.remotePath(p, "a\tb"), "denied", 'remote path "a\\tb" contains control characters'],
    [() => g.execCommand(p, "bash", ["-c", "id"]), "denied", `program "bash" is not on this host's allowlist (${ALLOWLIST})`],
    [() => g.execCommand(p, "A=b", []), "denied", `program "A=b" is not on this host's allowlist (${ALLOWLIST})`],
    [() => g.execCommand(p, "LS", []), "denied", `program "LS" is not on this host's allowlist (${ALLOWLIST})`],
    [() => g.execCommand(p, "sbatch", ["a\nb"]), "denied", 'argument "a\\nb" contains a line break or NUL'],
    [() => g.execCommand(p, "ls", ["a\rb"]), "denied", 'argument "a\\rb" contains a line break or NUL'],
    [() => g.execCommand(p, "tail", ["~/.ssh/id_rsa"]), "denied", "argument \"~/.ssh/id_rsa\": '~' paths are not allowed"],
    [() => g.execCommand(p, "ls", ["~"]), "denied", "argument \"~\": '~' paths are not allowed"],
    [() => g.execCommand(p, "ls", ["~user"]), "denied", "argument \"~user\": '~' paths are not allowed"],
    [() => g.execCommand(p, "ls", ["--x=~"]), "denied", "argument \"--x=~\": '~' paths are not allowed"],
    [() => g.execCommand(p, "tail", ["../../.ssh/id_rsa"]), "denied", "argument \"../../.ssh/id_rsa\" may not contain '..' path segments"],
    [() => g.execCommand(p, "ls", [".."]), "denied", "argument \"..\" may not contain '..' path segments"],
    [() => g.execCommand(p, "ls", ["--x=.."]), "denied", "argument \"--x=..\" may not contain '..' path segments"],
    [() => g.execCommand(p, "ls", ["a/../b"]), "denied", "argument \"a/../b\" may not contain '..' path segments"],
    [() => g.execCommand(p, "ls", ["-a/b/../c"]), "denied", "argument \"-a/b/../c\" may not contain '..' path segments"],
    [() => g.execCommand(p, "sbatch", ["--output=/etc/x"]), "denied", 'remote path "/etc/x" is outside remoteRoot /scratch/u/runs of profile "c"'],
    [() => g.execCommand(p, "sbatch", ["-o/etc/x"]), "denied", 'remote path "/etc/x" is outside remoteRoot /scratch/u/runs of profile "c"'],
    // A glued `-o~/x` is `-o`'s value `~/x` (grants.rs path_parts reads
    // glued short-option values first); from its first '/' it is outside too.
    [() => g.execCommand(p, "ls", ["-o~/x"]), "denied", `argument "-o~/x": '~' paths are not allowed`],
    [() => g.execCommand(p, "ls", ["-o/scratch/u/runs/./x"]), "denied", "remote path \"/scratch/u/runs/./x\" may not contain '.' or '..' segments"],
    [() => g.execCommand(p, "tail", [], "/etc"), "denied", 'remote path "/etc" is outside remoteRoot /scratch/u/runs of profile "c"'],
    [() => g.localSource("../in.txt"), "denied", 'local path "../in.txt" must be relative to the workspace, without \'..\''],
    [() => g.localSource("/etc/passwd"), "denied", 'local path "/etc/passwd" must be relative to the workspace, without \'..\''],
    [() => g.localSource(""), "denied", 'local path "" must be relative to the workspace, without \'..\''],
    [() => g.localSource("link"), "denied", `local path "link" resolves to ${fs.realpathSync(outside)}/secret outside the workspace ${real}`],
    [() => g.localSource("missing"), "denied", /^local path "missing": /],
    [() => g.localDestination("link"), "denied", 'local path "link" is a symlink; refusing to write through it'],
    [() => g.localDestination("outdir/x"), "denied", `local path "outdir/x" resolves outside ${real}`],
    [() => g.localDestination("../x"), "denied", 'local path "../x" must be a relative path without \'..\''],
    [() => g.storePath("../../x"), "denied", 'run store path "../../x" must be a relative path without \'..\''],
    [() => g.storePath("/etc/passwd"), "denied", 'run store path "/etc/passwd" must be a relative path without \'..\''],
    [() => g.storePath("r1/../../x"), "denied", 'run store path "r1/../../x" must be a relative path without \'..\''],
  ];
  for (const [call, tag, message] of cases) assertRefusal(thrown(call), tag, message);
});

// ---------------------------------------------------------------------------
// Further cases, answers as grants.rs gives them
// ---------------------------------------------------------------------------

test("remote paths: edge cases", (t) => {
  const g = grantsFor(tempDir(t), {
    clusters: {
      c: { sshTarget: "login", remoteRoot: "/scratch/u/runs/" },
      t: { sshTarget: "login", remoteRoot: "~" },
    },
  });
  const c = g.profile("c");
  const home = g.profile("t");
  const ok = [
    [c, "", "/scratch/u/runs"],
    [c, "/scratch/u/runs", "/scratch/u/runs"],
    [c, "r1//x//", "/scratch/u/runs/r1/x"],
    // Names that only look like dot segments are names.
    [c, "r1/...", "/scratch/u/runs/r1/..."],
    [c, "r1/..x", "/scratch/u/runs/r1/..x"],
    // `~` is special only at the start.
    [c, "/scratch/u/runs/~x", "/scratch/u/runs/~x"],
    [home, "~", "~"],
    [home, "~/", "~"],
    [home, "x", "~/x"],
  ];
  for (const [p, raw, want] of ok) assert.equal(g.remotePath(p, raw), want, raw);
  for (const [p, raw] of [[c, "."], [c, ".."], [c, "./r1"], [c, "r1/."], [c, "/"], [c, "~"], [c, "a\rb"], [c, "a\0b"], [home, "~root"], [home, "/home/u"]]) {
    assertRefusal(thrown(() => g.remotePath(p, raw)), "denied");
  }
  // Profile labels are looked up exactly: no trimming, no case folding, no
  // inherited object keys.
  for (const label of [" c", "C", "x", "__proto__", "constructor", "toString"]) {
    assertRefusal(thrown(() => g.profile(label)), "unknown-cluster");
  }
});

test("exec commands: argument and cwd edge cases", (t) => {
  const g = grantsFor(tempDir(t), {
    clusters: {
      c: { sshTarget: "login", remoteRoot: "/scratch/u/runs/" },
      h: { sshTarget: "login", remoteRoot: "~/runs" },
      t: { sshTarget: "login", remoteRoot: "~" },
    },
  });
  const [c, h, home] = ["c", "h", "t"].map((l) => g.profile(l));
  const atC = (run) => atRoot("/scratch/u/runs", run);
  // (sinfo: the path checks of the text apply to every program; tail, ls and
  // the other readers also take their one operand only after --, remote-confine.test.js.)
  // Paths inside the root pass, as whole words, `=values` and glued options.
  assert.equal(
    g.execCommand(c, "sinfo", ["/scratch/u/runs/x", "--o=/scratch/u/runs/y", "./z", "-"]),
    atC(`exec sinfo /scratch/u/runs/x --o=/scratch/u/runs/y ./z -`),
  );
  // Only the first '=' splits: `b=/etc` is relative, so it resolves in the root.
  assert.equal(g.execCommand(c, "sinfo", ["--a=b=/etc"]), atC(`exec sinfo --a=b=/etc`));
  // A glued short option's value is a path too: `-x~` is `-x ~` (before the
  // attack review of issue 12 it passed as "no '/', no path").
  assertRefusal(thrown(() => g.execCommand(c, "sinfo", ["-x~"])), "denied", `argument "-x~": '~' paths are not allowed`);
  // Shell metacharacters arrive as data.
  assert.equal(
    g.execCommand(c, "sinfo", ["$HOME", "`id`", "a'b", "", "*"]),
    atC(`exec sinfo '$HOME' '\`id\`' 'a'"'"'b' '' '*'`),
  );
  // cwd: "" is the root itself; others are quoted; ~ roots become "$HOME".
  assert.equal(g.execCommand(c, "sinfo", [], ""), inDir("/scratch/u/runs", "/scratch/u/runs", "exec sinfo"));
  assert.equal(g.execCommand(c, "sinfo", [], null), atC(`exec sinfo`));
  assert.equal(g.execCommand(c, "sinfo", [], "r 1/it's"), inDir("/scratch/u/runs", `'/scratch/u/runs/r 1/it'"'"'s'`, "exec sinfo"));
  assert.equal(g.execCommand(h, "sinfo", [], "~/runs/a b"), inDir('"$HOME"/runs', `"$HOME"/'runs/a b'`, "exec sinfo"));
  assert.equal(g.execCommand(home, "sinfo", [], "~"), inDir('"$HOME"', '"$HOME"', "exec sinfo"));
  assert.equal(
    g.execCommand(home, "sinfo", []),
    atRoot('"$HOME"', "exec sinfo"),
  );
  // Every program on the list is allowed, and nothing else (exact match).
  // (Those with per-program rules get arguments they accept: slurm-args.js.)
  const minimal = { sbatch: ["--"], scancel: ["12"], scontrol: ["show", "config"] };
  const readers = ["mkdir", "tail", "head", "ls", "stat", "sha256sum"];
  for (const prog of ALLOWED_PROGRAMS) {
    const args = minimal[prog] ?? [];
    if (readers.includes(prog)) assert.ok(g.execCommand(c, prog, ["--", "x"]).includes(` cs "$cs_r" ${prog} `), prog);
    else assert.ok(g.execCommand(c, prog, args).includes(`exec ${[prog, ...args].join(" ")};; `), prog);
  }
  for (const prog of ["", "ls ", "/bin/ls", "./ls", "sh", "env", "ssh", "scp", "rm", "sbatch;id"]) {
    assertRefusal(thrown(() => g.execCommand(c, prog, [])), "denied");
  }
  assertRefusal(thrown(() => g.execCommand(c, "sinfo", ["a\0b"])), "denied");
});

test("shellPath and sftpPath", () => {
  assert.equal(shellPath("~"), '"$HOME"');
  assert.equal(shellPath("~/"), `"$HOME"/''`);
  assert.equal(shellPath("~/runs/a b"), `"$HOME"/'runs/a b'`);
  assert.equal(shellPath("/abs/it's"), `'/abs/it'"'"'s'`);
  assert.equal(shellPath("/scratch/u/runs"), "/scratch/u/runs");
  assert.equal(sftpPath("~"), ".");
  assert.equal(sftpPath("~/"), "");
  assert.equal(sftpPath("~//a"), "a");
  assert.equal(sftpPath("rel"), "rel");
});

test("local sources follow symlinks, but only inside the workspace", (t) => {
  const ws = tempDir(t);
  const outside = tempDir(t, "outside");
  fs.mkdirSync(path.join(ws, "d/e"), { recursive: true });
  fs.writeFileSync(path.join(ws, "in.txt"), "x");
  fs.writeFileSync(path.join(outside, "secret"), "s");
  fs.symlinkSync("d", path.join(ws, "indir"));
  fs.symlinkSync("in.txt", path.join(ws, "inlink"));
  fs.symlinkSync(outside, path.join(ws, "outdir"));
  fs.symlinkSync("/nonexistent/zz", path.join(ws, "dangling"));
  const g = grantsFor(ws);
  const real = (rel) => path.join(g.workspace, rel);
  for (const [raw, want] of [
    ["in.txt", "in.txt"], ["./in.txt", "in.txt"], ["in.txt/", "in.txt"], ["d//e", "d/e"], ["d/./e", "d/e"],
    ["inlink", "in.txt"], ["indir", "d"], ["indir/e", "d/e"],
  ]) {
    assert.equal(g.localSource(raw), real(want), raw);
  }
  for (const raw of ["outdir", "outdir/secret", "dangling", "missing", "d/../in.txt", ".", "~/x", "in.txt/x"]) {
    assertRefusal(thrown(() => g.localSource(raw)), "denied");
  }
});

test("destinations: never through a symlink, never outside", (t) => {
  const ws = tempDir(t);
  const outside = tempDir(t, "outside");
  fs.mkdirSync(path.join(ws, "d/e"), { recursive: true });
  fs.writeFileSync(path.join(ws, "in.txt"), "x");
  fs.symlinkSync("d", path.join(ws, "indir"));
  fs.symlinkSync("in.txt", path.join(ws, "inlink"));
  fs.symlinkSync(outside, path.join(ws, "outdir"));
  fs.symlinkSync(path.join(outside, "new"), path.join(ws, "dangling"));
  const g = grantsFor(ws);
  const at = (rel) => path.join(g.workspace, rel);
  // New files under existing or missing directories inside the workspace.
  for (const raw of ["in.txt", "new.txt", "d/e/f", "nope/deeper/x", "indir/new"]) {
    assert.equal(g.localDestination(raw), at(raw), raw);
  }
  // A symlink as the last component, even one pointing inside, or dangling.
  for (const raw of ["inlink", "indir", "indir/", "outdir", "dangling"]) {
    assertRefusal(thrown(() => g.localDestination(raw)), "denied", `local path ${JSON.stringify(raw)} is a symlink; refusing to write through it`);
  }
  // Under a symlinked directory that leaves the workspace.
  for (const raw of ["outdir/x", "outdir/a/b/c"]) {
    assertRefusal(thrown(() => g.localDestination(raw)), "denied", `local path ${JSON.stringify(raw)} resolves outside ${g.workspace}`);
  }
  for (const raw of ["", ".", "../x", "/tmp/x", "d/../../x"]) {
    assertRefusal(thrown(() => g.localDestination(raw)), "denied");
  }
  assert.deepEqual(fs.readdirSync(outside), [], "nothing was created outside");
});

test("the run store is confined to localRunsDir", (t) => {
  const ws = tempDir(t);
  const outside = tempDir(t, "outside");
  fs.mkdirSync(path.join(ws, "d"));
  fs.symlinkSync("d", path.join(ws, "indir"));
  fs.symlinkSync(outside, path.join(ws, "outdir"));
  // Each good path with the file it names (a trailing slash is dropped).
  const good = [["runs.json", "runs.json"], ["r1/job.slurm", "r1/job.slurm"], ["x/", "x"]];
  const bad = ["../../x", "/etc/passwd", "r1/../../x", "", ".", "../cluster-runs/x"];
  // A store that does not exist yet, one that exists, and one reached through
  // a symlink inside the workspace.
  for (const runs of ["fresh/runs", "d", "indir"]) {
    const g = grantsFor(ws, { localRunsDir: runs });
    for (const [raw, rel] of good) assert.equal(g.storePath(raw), path.join(g.workspace, runs, rel), `${runs} ${raw}`);
    for (const raw of bad) assertRefusal(thrown(() => g.storePath(raw)), "denied");
  }
  // A store that is a symlink out of the workspace grants nothing.
  const escaped = grantsFor(ws, { localRunsDir: "outdir" });
  for (const [raw] of good) {
    assertRefusal(thrown(() => escaped.storePath(raw)), "denied", `run store path ${JSON.stringify(raw)} resolves outside ${path.join(escaped.workspace, "outdir")}`);
  }
  // Inside the store, a symlinked entry is not written through either.
  fs.mkdirSync(path.join(ws, "d/r1"));
  fs.symlinkSync(outside, path.join(ws, "d/r1/out"));
  fs.symlinkSync(path.join(outside, "f"), path.join(ws, "d/runs.json"));
  const g = grantsFor(ws, { localRunsDir: "d" });
  assertRefusal(thrown(() => g.storePath("runs.json")), "denied", 'run store path "runs.json" is a symlink; refusing to write through it');
  assertRefusal(thrown(() => g.storePath("r1/out/x")), "denied", /resolves outside/);
});

// ---------------------------------------------------------------------------
// Former disagreements with grants.rs, found by comparing both on random input.
// Each case's expectation is what grants.rs answers for the same input.
// ---------------------------------------------------------------------------

/** What a call answers, in one comparable word: its value, or the refusal. */
function outcome(call) {
  try {
    return { ok: call() };
  } catch (e) {
    if (e instanceof GrantError) return { grantError: e.message };
    if (e instanceof Error) throw e;
    return { [e.tag]: e.val };
  }
}

/** Compare a table of calls with grants.rs's answers, all cases at once. */
function assertAnswers(rows) {
  const got = rows.map(([what, call]) => [what, outcome(call)]);
  const want = rows.map(([what, , answer]) => [what, answer]);
  assert.deepEqual(got, want);
}

const DENIED = (val) => ({ denied: val });

test("as in grants.rs: C1 control characters (U+0080-U+009F) are refused by grants.rs", (t) => {
  // Rust's char::is_control is the whole Cc category; grants.js's CONTROL
  // regex stops at U+007F, so the JS host accepts these.
  const ws = tempDir(t);
  const g = grantsFor(ws);
  const p = g.profile("c");
  const root = "must be an absolute path or ~/dir, without '.', '..' or empty ('//') segments (and not / itself)";
  assertAnswers([
    ["remotePath r1/U+0085x", () => g.remotePath(p, "r1/\u0085x"), DENIED('remote path "r1/\\u{85}x" contains control characters')],
    ["remotePath r1/U+009Bx", () => g.remotePath(p, "r1/\u009bx"), DENIED('remote path "r1/\\u{9b}x" contains control characters')],
    ["exec ls /scratch/u/runs/U+0085", () => g.execCommand(p, "ls", ["/scratch/u/runs/\u0085"]), DENIED('remote path "/scratch/u/runs/\\u{85}" contains control characters')],
    ["sshTarget hU+009Bo", () => new Grants(one({ sshTarget: "h\u009bo", remoteRoot: "/r" }), ws).profiles.size, { grantError: 'clusters.c.sshTarget "h\\u{9b}o" is not a host name or alias' }],
    ["remoteRoot /r/U+0085x", () => new Grants(one({ sshTarget: "h", remoteRoot: "/r/\u0085x" }), ws).profiles.size, { grantError: `clusters.c.remoteRoot "/r/\\u{85}x" ${root}` }],
  ]);
});

test("as in grants.rs: whitespace is Unicode White_Space in grants.rs (U+0085 yes, U+FEFF no)", (t) => {
  // Rust's str::trim and char::is_whitespace use White_Space, which has NEL
  // (U+0085) and lacks the BOM (U+FEFF); JS's trim() and \s are the reverse.
  const ws = tempDir(t);
  const profile = (config) => () => [...new Grants(config, ws).profiles.values()];
  assertAnswers([
    ["sshTarget hU+0085o", profile(one({ sshTarget: "h\u0085o", remoteRoot: "/r" })), { grantError: 'clusters.c.sshTarget "h\\u{85}o" is not a host name or alias' }],
    ["sshTarget hU+0085 (trimmed)", profile(one({ sshTarget: "h\u0085", remoteRoot: "/r" })), { ok: [{ label: "c", sshTarget: "h", remoteRoot: "/r" }] }],
    ["remoteRoot U+0085/r (trimmed)", profile(one({ sshTarget: "h", remoteRoot: "\u0085/r" })), { ok: [{ label: "c", sshTarget: "h", remoteRoot: "/r" }] }],
    ["label U+0085 (blank, skipped)", profile({ clusters: { "\u0085": { sshTarget: "h" } } }), { ok: [] }],
    ["sshTarget hoU+FEFFst", profile(one({ sshTarget: "ho\ufeffst", remoteRoot: "/r" })), { ok: [{ label: "c", sshTarget: "ho\ufeffst", remoteRoot: "/r" }] }],
    ["sshTarget hU+FEFF (kept)", profile(one({ sshTarget: "h\ufeff", remoteRoot: "/r" })), { ok: [{ label: "c", sshTarget: "h\ufeff", remoteRoot: "/r" }] }],
    ["localRunsDir U+FEFFx (kept)", () => new Grants({ localRunsDir: "\ufeffx" }, ws).runsDirDisplay, { ok: "\ufeffx" }],
    ["label U+FEFF (not blank)", profile({ clusters: { "\ufeff": { sshTarget: "h" } } }), { grantError: "clusters.\ufeff.remoteRoot is required and must be a string" }],
  ]);
});

test("as in grants.rs: `clusters: null` is a config error in grants.rs", (t) => {
  // grants.rs: Some(Value::Null) is not an object; grants.js's `?? {}`
  // reads null as absent (no profiles).
  assert.equal(grantError({ clusters: null }, tempDir(t)), "clusters must be an object");
});

test("as in grants.rs: message texts escape unusual characters as Rust's {:?} does", (t) => {
  // Cosmetic: grants.rs quotes with Debug (\0, \u{7f}, \u{a0}), grants.js
  // with JSON.stringify (\u0000, raw DEL, raw NBSP).
  const ws = tempDir(t);
  const g = grantsFor(ws);
  const p = g.profile("c");
  assertAnswers([
    ["remotePath a NUL b", () => g.remotePath(p, "a\0b"), DENIED('remote path "a\\0b" contains control characters')],
    ["exec ls a NUL b", () => g.execCommand(p, "ls", ["a\0b"]), DENIED('argument "a\\0b" contains a line break or NUL')],
    ["remotePath r1/DEL x", () => g.remotePath(p, "r1/\u007fx"), DENIED('remote path "r1/\\u{7f}x" contains control characters')],
    ["sshTarget h NBSP o", () => new Grants(one({ sshTarget: "h\u00a0o", remoteRoot: "/r" }), ws), { grantError: 'clusters.c.sshTarget "h\\u{a0}o" is not a host name or alias' }],
  ]);
});

// The twin of grants.rs::slurm_identifiers_and_options_are_checked, with the
// same messages. Negative control (run once): with the checkSlurmArgs call
// removed from execCommand, this test failed at its first refusal
// (`scancel --me` was built into a command line).
test("rs slurm_identifiers_and_options_are_checked", (t) => {
  const g = grantsFor(tempDir(t));
  const p = g.profile("c");
  const ok = (prog, args) => g.execCommand(p, prog, args, "r1");
  assert.ok(ok("scancel", ["--", "12", "13_2"]).includes(") exec scancel -- 12 13_2;;"));
  ok("squeue", ["-h", "-t", "all", "-j", "12,13", "-o", "%i"]);
  ok("sacct", ["-n", "-P", "-X", "-j", "12", "-o", "JobID"]);
  ok("squeue", ["--me", "-h", "-o", "%i"]);
  ok("sbatch", ["--parsable", "--", "job.slurm"]);
  ok("sbatch", ["--test-only", "--"]);
  ok("scancel", ["--signal=TERM", "--batch", "-Q", "--", "12"]);
  ok("scontrol", ["show", "job", "12"]);
  const scancelOption = (o) => `scancel option "${o}" is not allowed: only job ids, --signal, --batch, --full and --quiet are (options such as --me, --user, --account, --partition, --state or --name would cancel jobs nobody named)`;
  for (const [prog, args, message] of [
    ["scancel", ["--me"], scancelOption("--me")],
    ["scancel", ["--version"], scancelOption("--version")],
    ["scancel", ["-u", "someone", "12"], scancelOption("-u")],
    ["scancel", ["--account=a", "12"], scancelOption("--account=a")],
    ["scancel", ["--", "--me"], 'scancel argument "--me" is not a SLURM job id (digits, optionally _<task> and .<step>)'],
    ["scancel", ["12;id"], 'scancel argument "12;id" is not a SLURM job id (digits, optionally _<task> and .<step>)'],
    ["scancel", ["-s", "--me", "12"], 'scancel signal "--me" is not a signal name or number'],
    ["scancel", [], "scancel needs at least one job id"],
    ["squeue", ["-j", "--me"], 'squeue job list "--me" is not a list of SLURM job ids (digits, optionally _<task> and .<step>, separated by commas)'],
    ["sacct", ["--jobs=1,x"], 'sacct job list "1,x" is not a list of SLURM job ids (digits, optionally _<task> and .<step>, separated by commas)'],
    ["sacct", ["-hj12"], 'sacct argument "-hj12": give -j on its own, followed by the job ids'],
    // getopt_long's abbreviations of --jobs (negative control, seen: without
    // the prefix rule both were accepted).
    ["squeue", ["--jo", "1,--me"], 'squeue job list "1,--me" is not a list of SLURM job ids (digits, optionally _<task> and .<step>, separated by commas)'],
    ["sacct", ["--j=--me"], 'sacct job list "--me" is not a list of SLURM job ids (digits, optionally _<task> and .<step>, separated by commas)'],
    ["sbatch", ["--parsable", "-t999"], 'sbatch needs "--" right before the script name, which comes last (so the name is never read as an option)'],
    ["sbatch", ["--parsable", "job.slurm"], 'sbatch needs "--" right before the script name, which comes last (so the name is never read as an option)'],
    ["sbatch", ["--", "job.slurm", "x"], 'sbatch takes one script after "--", as the last argument, not ["job.slurm", "x"]'],
    // The attack review's spellings (slurm-args.test.js has them all).
    ["sbatch", ["--parsable", "--", "-t999"], `sbatch script name "-t999" starts with '-' (or is empty): if an option took the "--" before it as its value, sbatch would read the name as an option; rename the script`],
    ["sbatch", ["-J", "--", "--wrap=id"], `sbatch script name "--wrap=id" starts with '-' (or is empty): if an option took the "--" before it as its value, sbatch would read the name as an option; rename the script`],
    ["sbatch", ["--parsable", "foo", "--", "job.slurm"], 'sbatch argument "foo" before "--" could be read as the script (it is not the value of an option known to take one); attach values to their options (--name=value, -Xvalue)'],
    ["squeue", ["-o", "--", "-j", "1,--me"], 'squeue job list "1,--me" is not a list of SLURM job ids (digits, optionally _<task> and .<step>, separated by commas)'],
    ["scontrol", ["update", "jobid=1"], 'scontrol ["update", "jobid=1"] is not allowed: only `scontrol [-o] [-d] show ENTITY [NAME]`'],
  ]) {
    assertRefusal(thrown(() => ok(prog, args)), "denied", message);
  }
});
