// Local escapes in the OpenClaw host (host/tests/local_escapes.rs is the
// native twin): links planted at every name the JS host writes or opens
// (run-store targets and temp names, the ledger, its lock, a download's
// partial file, the approvals file), a directory swapped for a link between
// a download's plan and a file's open, a file swapped mid-upload, `.git` in
// a result tree and a 255-byte name. Swaps are driven deterministically by
// transfer.js's test-only `beforeOpen` option (host.js never passes it).
//
// Each test names its negative control: the guard that was removed once
// (by editing lib/, running this file, restoring) and what was seen then.

import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { lookup } from "../lib/approvals.js";
import * as lfs from "../lib/local-fs.js";
import { lock, openLockFile, read, unlockAll, write } from "../lib/run-store.js";
import { download, openPartial, partialName, placeFile, upload } from "../lib/transfer.js";
import { assertRefusal, grantsFor, localSftp, recordingClient, sftpCalls, tempDir } from "./helpers.js";

const NO_CLUSTERS = {};

/** An outside directory holding `victim` with precious content. */
function outsideVictim(t) {
  const outside = tempDir(t, "outside");
  const victim = path.join(outside, "victim");
  fs.writeFileSync(victim, "precious");
  return { outside, victim };
}

const mkfifo = (p) => assert.equal(spawnSync("mkfifo", [p]).status, 0, "mkfifo");

/** The staged path of a `get -R -p REMOTE LANDED` batch (sftp's backslashes undone). */
const landedOf = (batch) => /^get -R -p \S+ (\S+)\n$/.exec(batch)[1].replace(/\\(.)/g, "$1");

/** A stand-in sftp that lands the tree `files` ({rel: content}) where the batch says. */
function landing(files) {
  return recordingClient({
    onSftp: (batch) => {
      const landed = landedOf(batch);
      for (const [rel, content] of Object.entries(files)) {
        const p = rel === "" ? landed : path.join(landed, rel);
        fs.mkdirSync(path.dirname(p), { recursive: true });
        fs.writeFileSync(p, content);
      }
      if (Object.keys(files).length > 0 && !("" in files)) fs.mkdirSync(landed, { recursive: true });
    },
  });
}

/** What `promise` rejected with (undefined if it resolved). */
async function outcome(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  return undefined;
}

/** A file's text, or undefined when there is none. */
const contentOf = (p) => (fs.existsSync(p) ? fs.readFileSync(p, "utf8") : undefined);

async function refusal(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail("expected a refusal");
}

// Negative control (seen): with the old write (`.NAME.tmp-PID-N` opened
// create+truncate, following links), the links planted at the predictable
// temp names got written through: the victim held "#!/bin/bash\n", not
// "precious". With `replace` writing the target in place (open "w" instead
// of the rename), the hard links at the targets overwrote it the same way.
test("planted links in the run store are replaced, never written through", (t) => {
  const ws = tempDir(t);
  const { outside, victim } = outsideVictim(t);
  const grants = grantsFor(ws, NO_CLUSTERS);
  const runs = path.join(ws, ".openclaw/cluster-runs");
  fs.mkdirSync(path.join(runs, "r1"), { recursive: true });
  // The old temp names (pid and counter are all an attacker needed to guess).
  for (let n = 0; n < 4; n++) {
    fs.symlinkSync(victim, path.join(runs, `.runs.json.tmp-${process.pid}-${n}`));
    fs.linkSync(victim, path.join(runs, `r1/.job.slurm.tmp-${process.pid}-${n}`));
  }
  // Hard links at the targets themselves.
  fs.linkSync(victim, path.join(runs, "runs.json"));
  fs.linkSync(victim, path.join(runs, "r1/job.slurm"));
  write(grants, "runs.json", new TextEncoder().encode("[]"));
  write(grants, "r1/job.slurm", new TextEncoder().encode("#!/bin/bash\n"));
  assert.equal(fs.readFileSync(victim, "utf8"), "precious");
  for (const f of ["runs.json", "r1/job.slurm"]) {
    const st = fs.lstatSync(path.join(runs, f));
    assert.ok(st.isFile() && st.nlink === 1, `${f} is not a fresh regular file`);
  }
  assert.equal(new TextDecoder().decode(read(grants, "runs.json")), "[]");
  // A symlink at the name itself is refused by the grants, with its name.
  fs.symlinkSync(victim, path.join(runs, "other.json"));
  assertRefusal(thrownOf(() => write(grants, "other.json", new Uint8Array(1))), "denied", /"other.json" is a symlink/);
  // Below the grants (a link swapped in after their check): replaced, not followed.
  const dir = lfs.openBase(runs);
  lfs.replace(dir, "other.json", Buffer.from("new"));
  fs.closeSync(dir);
  assert.equal(fs.readFileSync(path.join(runs, "other.json"), "utf8"), "new");
  assert.ok(!fs.lstatSync(path.join(runs, "other.json")).isSymbolicLink());
  assert.equal(fs.readFileSync(victim, "utf8"), "precious");
  assert.deepEqual(fs.readdirSync(outside), ["victim"]);
  // No temporary file of ours is left behind (only the planted ones).
  assert.equal(fs.readdirSync(runs).filter((n) => n.endsWith(".tmp")).length, 0);
});

// Negative control (seen): with `openRegular` opening without
// O_NOFOLLOW|O_NONBLOCK, the read of the FIFO hung the test until it was
// killed (20 s); without O_NOFOLLOW alone, the symlink below the grants was
// read through ("Missing expected exception").
test("the run store reads regular files only, never through a link, never blocking", (t) => {
  const ws = tempDir(t);
  const { victim } = outsideVictim(t);
  const grants = grantsFor(ws, NO_CLUSTERS);
  const runs = path.join(ws, ".openclaw/cluster-runs");
  fs.mkdirSync(runs, { recursive: true });
  fs.symlinkSync(victim, path.join(runs, "runs.json"));
  mkfifo(path.join(runs, "fifo.json"));
  assertRefusal(thrownOf(() => read(grants, "runs.json")), "denied", /symlink/);
  assertRefusal(thrownOf(() => read(grants, "fifo.json")), "local-io", /not a regular file/);
  assert.equal(read(grants, "missing.json"), undefined);
  // Below the grants (swapped in after their check).
  const dir = lfs.openBase(runs);
  t.after(() => fs.closeSync(dir));
  assert.throws(() => lfs.readRegular(dir, "runs.json", 100, "runs.json"), /symbolic link/);
});

function thrownOf(fn) {
  try {
    fn();
  } catch (e) {
    return e;
  }
  assert.fail("expected a refusal");
}

// Negative control (seen): with the old holder (`flock FILE ...`, which
// opens FILE by path with O_CREAT, following links and blocking on a
// FIFO), the lock on the FIFO never answered (the test hit its 20 s
// timeout); with O_NOFOLLOW dropped from `openRegular`, `openLockFile`
// opened the symlink's outside target ("Missing expected exception").
test("the lock file is never opened through a link and never written", { timeout: 20_000 }, async (t) => {
  const ws = tempDir(t);
  const { outside, victim } = outsideVictim(t);
  const grants = grantsFor(ws, NO_CLUSTERS);
  const runs = path.join(ws, ".openclaw/cluster-runs");
  fs.mkdirSync(runs, { recursive: true });
  const held = new Map();
  t.after(() => unlockAll(held));
  fs.symlinkSync(victim, path.join(runs, "runs.json.lock"));
  assertRefusal(await refusal(lock(grants, held, "runs.json")), "denied", /symlink/);
  mkfifo(path.join(runs, "fifo.lock"));
  assertRefusal(await refusal(lock(grants, held, "fifo")), "local-io", /not a regular file/);
  // A hard link is only locked (never truncated or written).
  fs.linkSync(victim, path.join(runs, "ledger.json.lock"));
  await lock(grants, held, "ledger.json");
  unlockAll(held);
  // Below the grants (a link swapped in after their check): refused.
  const dir = lfs.openBase(runs);
  t.after(() => fs.closeSync(dir));
  assert.throws(() => openLockFile(dir, "runs.json.lock"), /symbolic link/);
  assert.equal(fs.readFileSync(victim, "utf8"), "precious");
  assert.deepEqual(fs.readdirSync(outside), ["victim"]);
});

// Negative control (seen): with `openPartial` reusing any regular file
// (the `nlink === 1` check removed), the hard link planted at the partial
// name had the victim overwritten with "remote"; with its first open
// following links (plain "r+" instead of `openRegular`), the symlink did
// the same. (The exclusive create alone changed as "w" showed nothing: the
// planted symlink is removed before it, as not ours.)
test("a link planted at a download's partial file is never written through", (t) => {
  const ws = tempDir(t);
  const { outside, victim } = outsideVictim(t);
  const staging = tempDir(t, "staging");
  for (const kind of ["symlink", "hardlink"]) {
    const name = `f-${kind}`;
    const staged = path.join(staging, name);
    fs.writeFileSync(staged, "remote");
    const partial = path.join(ws, partialName(name));
    if (kind === "symlink") fs.symlinkSync(victim, partial);
    else fs.linkSync(victim, partial);
    const dir = lfs.openBase(ws);
    try {
      // The copy path, as across file systems (where a rename cannot move the staged file).
      placeFile(dir, name, staged, fs.statSync(staged), path.join(ws, name), { forceCopy: true });
    } finally {
      fs.closeSync(dir);
    }
    assert.equal(fs.readFileSync(path.join(ws, name), "utf8"), "remote", kind);
    assert.equal(fs.readFileSync(victim, "utf8"), "precious", kind);
    assert.ok(!fs.existsSync(partial), `${kind}: the partial file is left`);
  }
  assert.deepEqual(fs.readdirSync(outside), ["victim"]);
  // The directory's own single-link partial is reused (emptied first).
  fs.writeFileSync(path.join(ws, ".g.cluster-slurm-part"), "stale");
  const ino = fs.statSync(path.join(ws, ".g.cluster-slurm-part")).ino;
  const dir = lfs.openBase(ws);
  const fd = openPartial(dir, ".g.cluster-slurm-part", "g");
  assert.equal(fs.fstatSync(fd).ino, ino);
  assert.equal(fs.fstatSync(fd).size, 0);
  fs.closeSync(fd);
  fs.closeSync(dir);
});

// Negative control (seen): with the per-file walk replaced by what the
// host did before (mkdir -p and rename by path), the file landed in the
// outside directory (readdirSync(outside) was ["f"]).
test("a directory swapped for a link between a download's plan and a file's open is refused", async (t) => {
  const ws = tempDir(t);
  const outside = tempDir(t, "outside");
  const staging = tempDir(t, "staging");
  const client = landing({ "sub/f": "remote", "a": "first" });
  const swapAt = path.join(ws, "out/sub/f");
  const beforeOpen = (shown) => {
    if (shown !== swapAt) return;
    fs.renameSync(path.join(ws, "out/sub"), path.join(ws, "out/sub.moved"));
    fs.symlinkSync(outside, path.join(ws, "out/sub"));
  };
  const e = await outcome(download(client, "login", "/r/tree", { base: ws, rel: "out" }, { root: "/r", beforeOpen, stagingRoot: staging }));
  assert.deepEqual(fs.readdirSync(outside), [], "written outside the workspace");
  assertRefusal(e, "denied", /sub is a symbolic link/);
  assert.deepEqual(fs.readdirSync(staging), [], "the staging directory is left");
  // The staging directory was outside the workspace.
  assert.ok(!landedOf(sftpCalls(client)[0].batch).startsWith(ws));
});

// Negative control (seen): with the dev/ino comparison in `openPlanned`
// removed, the hard-link swap sent the outside file ("hardlink: sent",
// 'secret'). The symlink swaps are refused twice over (O_NOFOLLOW, and a
// followed link is another inode): with both removed, "symlink: sent",
// 'secret'.
test("a file swapped mid-upload is never sent", { skip: !localSftp && "no sftp" }, async (t) => {
  for (const swap of ["symlink", "hardlink", "dir-symlink"]) {
    const ws = tempDir(t);
    const remote = tempDir(t, "remote");
    const outside = tempDir(t, "outside");
    fs.writeFileSync(path.join(outside, "secret"), "secret");
    fs.writeFileSync(path.join(outside, "a.txt"), "secret");
    fs.mkdirSync(path.join(ws, "src/sub"), { recursive: true });
    fs.writeFileSync(path.join(ws, "src/sub/a.txt"), "mine");
    const target = path.join(ws, "src/sub/a.txt");
    const beforeOpen = (shown) => {
      if (shown !== target) return;
      if (swap === "dir-symlink") {
        fs.renameSync(path.join(ws, "src/sub"), path.join(ws, "src/sub.moved"));
        fs.symlinkSync(outside, path.join(ws, "src/sub"));
        return;
      }
      fs.rmSync(target);
      if (swap === "symlink") fs.symlinkSync(path.join(outside, "secret"), target);
      else fs.linkSync(path.join(outside, "secret"), target);
    };
    const e = await outcome(upload(localSftp, "local", { base: ws, rel: "src" }, `${remote}/up`, { root: remote, beforeOpen }));
    assert.equal(contentOf(path.join(remote, "up/sub/a.txt")), undefined, `${swap}: sent`);
    assertRefusal(e, "local-io", swap === "hardlink" ? /was replaced by another file/ : /symbolic link/);
    // A single-file upload is checked the same way.
    if (swap !== "dir-symlink") {
      fs.rmSync(target);
      fs.writeFileSync(target, "mine");
      const single = await outcome(upload(localSftp, "local", { base: ws, rel: "src/sub/a.txt" }, `${remote}/one`, { root: remote, beforeOpen }));
      assert.equal(contentOf(path.join(remote, "one")), undefined, `${swap}: single file sent`);
      assertRefusal(single, "local-io");
    }
  }
});

// Negative control (seen): with the NEVER_WRITTEN check over the staged
// tree removed, the first tree was written whole ("written: a,
// .git/hooks/post-checkout"); with the grants' check removed,
// localDestination("proj/.git/config") was accepted ("expected a refusal").
test("vcs metadata and direnv files are never downloaded", async (t) => {
  const ws = tempDir(t);
  const staging = tempDir(t, "staging");
  for (const tree of [{ a: "x", ".git/hooks/post-checkout": "#!/bin/sh\ntouch /tmp/pwned\n" }, { a: "x", "deep/er/.envrc": "export X=1\n" }, { "z/.direnv/x": "" }]) {
    const client = landing(tree);
    const e = await outcome(download(client, "login", "/r/tree", { base: ws, rel: "out" }, { root: "/r", stagingRoot: staging }));
    assert.ok(!fs.existsSync(path.join(ws, "out")), `written: ${Object.keys(tree).join(", ")}`);
    assertRefusal(e, "local-io", /never writes version-control metadata or direnv files/);
  }
  // A repository by content rather than by name, and `.git` in another case
  // (case-insensitive file systems). Negative control (seen): with the
  // looksLikeGitDir check removed, the first tree was written whole
  // ("written: evil/HEAD, evil/refs/heads/.keep, ...").
  for (const tree of [
    { "evil/HEAD": "ref: refs/heads/main\n", "evil/refs/heads/.keep": "", "evil/objects/.keep": "", "evil/config": "[core]\n\tfsmonitor = touch /tmp/pwned\n" },
    { "HEAD": "ref: refs/heads/main\n", "commondir": "..\n" },
    { "x/.GIT/hooks/post-checkout": "#!/bin/sh\n" },
  ]) {
    const e = await outcome(download(landing(tree), "login", "/r/tree", { base: ws, rel: "out" }, { root: "/r", stagingRoot: staging }));
    assert.ok(!fs.existsSync(path.join(ws, "out")), `written: ${Object.keys(tree).join(", ")}`);
    assertRefusal(e, "local-io", /never writes version-control metadata/);
  }
  const grants = grantsFor(ws);
  for (const into of ["proj/.git/config", ".envrc", "a/.hg", ".jj/x", "x/.svn/y", ".bzr", ".direnv/z"]) {
    assertRefusal(thrownOf(() => grants.localDestination(into)), "denied", /never writes version-control metadata/);
  }
  // And not through the transfer either, whoever calls it.
  assertRefusal(await refusal(download(landing({ "": "x" }), "login", "/r/f", { base: ws, rel: "p/.git/config" }, { root: "/r", stagingRoot: staging })), "denied");
  assert.deepEqual(fs.readdirSync(ws), []);
  // A name that only looks alike is fine.
  await download(landing({ ".github/x": "ok", ".gitignore": "ok" }), "login", "/r/t", { base: ws, rel: "fine" }, { root: "/r", stagingRoot: staging });
  assert.deepEqual(fs.readdirSync(path.join(ws, "fine")).sort(), [".github", ".gitignore"]);
});

// Negative control (seen): with `partialName` never hashing, the copied
// download failed: local-io "ENAMETOOLONG: name too long" on the partial of
// the 254-byte "é…" name (its partial name is 274 bytes).
test("255-byte names download, renamed or copied (their partial names are hashed)", async (t) => {
  const ws = tempDir(t);
  const staging = tempDir(t, "staging");
  const long = "n".repeat(251) + ".out";
  assert.equal(Buffer.byteLength(long), 255);
  const longUtf8 = "é".repeat(127);
  for (const forceCopy of [false, true]) {
    const rel = forceCopy ? "copied" : "renamed";
    await download(landing({ [long]: "long", [`d/${longUtf8}`]: "utf8" }), "login", "/r/t", { base: ws, rel }, { root: "/r", stagingRoot: staging, forceCopy });
    assert.equal(fs.readFileSync(path.join(ws, rel, long), "utf8"), "long");
    assert.equal(fs.readFileSync(path.join(ws, rel, "d", longUtf8), "utf8"), "utf8");
    assert.deepEqual(fs.readdirSync(path.join(ws, rel)).sort(), [long, "d"].sort(), "a partial file is left");
  }
  assert.ok(Buffer.byteLength(partialName(long)) <= 255);
  assert.equal(partialName("f"), ".f.cluster-slurm-part");
});

// Negative control (seen): with the decisions read by `fs.readFileSync`
// (following links), the symlink to a job-written result.json made its
// forged line an approval: lookup returned {approved: true, by: "agent"}.
test("the approvals file is never read through a link or from a FIFO", (t) => {
  const ws = tempDir(t);
  const state = tempDir(t, "state");
  const forged = path.join(ws, "result.json");
  fs.writeFileSync(forged, `${JSON.stringify({ workspace: ws, runId: "r1", decision: "approved", by: "agent", atMs: 1 })}\n`);
  const file = path.join(state, "approvals.jsonl");
  fs.symlinkSync(forged, file);
  assertRefusal(thrownOf(() => lookup(file, ws, "r1")), "local-io", /symbolic link/);
  fs.rmSync(file);
  mkfifo(file);
  assertRefusal(thrownOf(() => lookup(file, ws, "r1")), "local-io", /not a regular file/);
});

test("a walk goes through real directories only", (t) => {
  const ws = tempDir(t);
  const outside = tempDir(t, "outside");
  const base = lfs.openBase(ws);
  t.after(() => fs.closeSync(base));
  fs.closeSync(lfs.walk(base, ["a", "b", "c"], true));
  assert.ok(fs.statSync(path.join(ws, "a/b/c")).isDirectory());
  fs.symlinkSync(outside, path.join(ws, "out"));
  fs.symlinkSync(path.join(ws, "a"), path.join(ws, "inner"));
  for (const names of [["out"], ["out", "x"], ["inner", "b"]]) {
    assert.throws(() => lfs.walk(base, names, true), /symbolic link/, names.join("/"));
  }
  assert.deepEqual(fs.readdirSync(outside), []);
  fs.writeFileSync(path.join(ws, "file"), "x");
  assert.throws(() => lfs.walk(base, ["file", "x"], true), /not a directory/);
  assert.throws(() => lfs.walk(base, ["missing"], false), (e) => e.code === "ENOENT");
});
