// Nothing a job plants in its run directory makes a transfer of the
// OpenClaw host read or write outside the profile's remoteRoot on the
// cluster (issue 12; the twin of host/tests/remote_escapes.rs). A job can
// make any symlink, FIFO or sparse file there: each test plants those on the
// real testbed (tests/testbed/up.sh; over ssh, as the cluster user), moves
// through them the way a tool call does (lib/host.js over the system
// OpenSSH client, grants and all), and checks that nothing outside the root
// was read (its contents are not in the local copy) or written (the outside
// directory is unchanged), that the call returned promptly, and that a
// refusal is `denied` with a message naming what was found.
//
// Each test notes its negative control: the guard (in lib/remote-transfer.js
// unless said) that was removed once, and what was seen then.

import test from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { quoteWord } from "../lib/grants.js";
import { callHost } from "../lib/host.js";
import { SshClient } from "../lib/ssh.js";
import { assertRefusal, grantsFor, tempDir } from "./helpers.js";

const CONFIG = process.env.CLUSTER_SLURM_TESTBED_CONFIG;
const skip = !CONFIG && "CLUSTER_SLURM_TESTBED_CONFIG is not set (tests/testbed/up.sh)";

/** No call here should take long: a stall (a FIFO opened, /dev/zero read) shows as a call over this. */
const PROMPT_MS = 15_000;
const VICTIM = "VICTIM-UNTOUCHED";
const PASSWD = "root:x:0:0";

/**
 * A job's run directory below the root (`~/cluster-runs/jx-TAG`, the
 * profile's remoteRoot in its home form) and a directory outside the root
 * (`~/jx-outside-TAG`) holding a victim file, made and removed as the
 * cluster user; a workspace; the host of one tool call.
 */
function planted(t, { maxDownloadBytes } = {}) {
  const config = JSON.parse(fs.readFileSync(CONFIG, "utf8"));
  const { sshTarget } = Object.values(config.clusters)[0];
  const client = new SshClient({ sshConfig: config.host?.sshConfig });
  const tag = crypto.randomBytes(6).toString("hex");
  const run = `jx-${tag}`;
  const outside = `jx-outside-${tag}`;
  const sh = async (command) => {
    const r = await client.exec(sshTarget, `cd && { ${command}; }`, { timeoutMs: 60_000 });
    const text = (b) => new TextDecoder().decode(b);
    assert.equal(r.exitCode, 0, `${command}: ${text(r.stderr)}`);
    return text(r.stdout);
  };
  t.after(() => sh(`rm -rf -- cluster-runs/${run} ${outside}`));
  const ws = tempDir(t);
  fs.writeFileSync(path.join(ws, "input.txt"), "MINE");
  const grants = grantsFor(ws, { clusters: { tb: { sshTarget, remoteRoot: "~/cluster-runs" } } });
  const host = callHost(grants, client, undefined, path.join(ws, "no-approvals.jsonl"), { maxDownloadBytes });
  return {
    ws,
    host,
    sh,
    run,
    /** Prepare the run and outside directories (plus `then`, run in the run directory). */
    setup: (then = "true") => sh(`mkdir -p cluster-runs/${run} ${outside} && printf ${VICTIM} > ${outside}/victim && cd cluster-runs/${run} && { ${then}; }`),
    /** A path of the run directory as the agent names it (below the root). */
    remote: (rel) => `${run}/${rel}`,
    outsideDir: outside,
    /** `name:contents` of every file outside: the victim alone, untouched, means nothing was written there. */
    outsideState: () => sh(`cd ${outside} && find . -type f | sort | while read -r f; do printf '%s:' "$f"; cat "$f"; echo; done`),
  };
}

/** What `promise` rejected with (failing if it resolved), and how long it took. */
async function refusedIn(promise) {
  const start = Date.now();
  try {
    await promise;
  } catch (e) {
    return { e, ms: Date.now() - start };
  }
  assert.fail("expected a refusal");
}

/** Every file's contents below a local directory, joined (empty when there is none). */
function localContents(dir) {
  if (!fs.existsSync(dir)) return "";
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) return fs.readFileSync(dir, "utf8");
  return fs.readdirSync(dir).map((n) => localContents(path.join(dir, n))).join("\n");
}

// Negative control (seen): with the `case $s in "$r"|"$r"/*) ... no outside`
// line of DOWNLOAD_CHECK made a no-op, this test failed at `p` ("expected a
// refusal"); by hand, the same downloads then brought got/p =
// "root:x:0:0:root:/root:/bin/bash|daemon:...", got/s/victim = the outside
// victim and got/ssh/authorized_keys = the cluster user's key.
test("a download through a job-made link to a file or a directory outside the root is refused", { skip }, async (t) => {
  const p = planted(t);
  await p.setup(`ln -s /etc/passwd p && ln -s ../../${p.outsideDir} s && ln -s ~/.ssh ssh && ln -s / up && mkdir -p sub && ln -s /etc sub/etc`);
  for (const [name, real] of [["p", "/etc/passwd"], ["s", p.outsideDir], ["ssh", "/.ssh"], ["up", "/"], ["sub/etc", "/etc"]]) {
    const { e, ms } = await refusedIn(p.host.download("tb", p.remote(name), `got/${name}`));
    assertRefusal(e, "denied");
    assert.match(e.val, new RegExp(`^remote path ~/cluster-runs/${p.run}/${name} resolves to \\S*${real.replace(/[.]/g, "\\.")} on the cluster, outside remoteRoot ~/cluster-runs \\(/\\S+/cluster-runs\\): a symbolic link leads out of it; nothing was read or written there$`), name);
    assert.ok(ms < PROMPT_MS, `${name}: ${ms} ms`);
    assert.equal(fs.existsSync(path.join(p.ws, "got", name)), false, `${name}: something arrived`);
  }
  assert.equal(await p.outsideState(), `./victim:${VICTIM}\n`);
});

// Negative control (seen): with `else no notregular` of DOWNLOAD_CHECK
// turned into a plain-file branch, the test failed: the FIFO reached sftp,
// "wrong refusal kind: remote: sftp slurm-testbed: download .../f: not a
// regular file"; with the outside check off as well, `z` gave "download
// /dev/zero: not a regular file" the same way. So OpenSSH 9.2's sftp stats
// a top-level source first and does not open a FIFO it sees; the host
// refuses before sftp runs, and does not rely on that (nor on the race).
test("a download of /dev/zero through a link, or of a FIFO, is refused without opening it, promptly", { skip }, async (t) => {
  const p = planted(t);
  await p.setup("ln -s /dev/zero z && mkfifo f && ln -s f fl");
  const cases = [
    ["z", /resolves to \/dev\/zero on the cluster, outside remoteRoot/],
    ["f", /^remote path ~\/cluster-runs\/jx-\w+\/f is not a regular file or directory \(a device, FIFO or socket\): downloads read regular files only$/],
    ["fl", /\/fl is not a regular file or directory/],
  ];
  for (const [name, message] of cases) {
    const { e, ms } = await refusedIn(p.host.download("tb", p.remote(name), `got/${name}`));
    assertRefusal(e, "denied", message);
    assert.ok(ms < PROMPT_MS, `${name}: ${ms} ms`);
    assert.equal(fs.existsSync(path.join(p.ws, "got", name)), false);
  }
});

// Negative control (seen): with `if (bytes > maxBytes) throw overCap(...)`
// taken out of checkDownload, the message check failed: transfer.js's size
// watchdog stopped sftp instead ("download of ~/cluster-runs/jx-.../tree/big
// grew past 24545280 bytes while it was transferred (3221225472 bytes in
// 1 file(s) when checked) ..."), so even then only ~24 MB were read, not 3 GB.
test("a 3 GB sparse file (alone or in a tree) over a low host.maxDownloadBytes is refused before anything moves", { skip }, async (t) => {
  const cap = 1 << 20;
  const p = planted(t, { maxDownloadBytes: cap });
  await p.setup("mkdir tree && truncate -s 3G tree/big && echo small > tree/small && ln -s tree/big big");
  for (const [name, files] of [["tree/big", 1], ["tree", 2], ["big", 1]]) {
    const { e, ms } = await refusedIn(p.host.download("tb", p.remote(name), `got/${name}`));
    assertRefusal(e, "denied");
    const bytes = 3 * 2 ** 30 + (files === 2 ? 6 : 0);
    assert.equal(e.val, `download of ~/cluster-runs/${p.run}/${name} is ${bytes} bytes (${files} file(s)), over host.maxDownloadBytes (${cap} bytes); nothing was transferred. Download a part of it, or the operator raises host.maxDownloadBytes`);
    assert.ok(ms < PROMPT_MS, `${name}: ${ms} ms`);
    assert.equal(fs.existsSync(path.join(p.ws, "got")), false);
  }
  // Under the cap, the small file comes.
  assert.deepEqual(await p.host.download("tb", p.remote("tree/small"), "got/small"), { files: 1, bytes: 6n });
});

// Inside a tree, skipping links is sftp's own rule, which this test pins
// (OpenSSH 9.2's `get -R`; seen by hand before the change: a tree with
// p -> /etc/passwd and sub/e -> /etc came back without them, while a
// top-level link to /etc/ssh was followed). Negative control (seen): with
// the listing's `find -P` made `find -L`, the check followed `up` -> / and
// walked the whole file system until its time bound: the test failed with
// "timeout: checking ~/cluster-runs/jx-.../tree on the cluster took more
// than 120 s" (the bound held; no byte was read).
test("inside a tree, job-made links, devices and FIFOs are skipped, never followed, promptly", { skip }, async (t) => {
  const p = planted(t);
  await p.setup(`mkdir -p tree/sub && echo good > tree/sub/good && ln -s /etc/passwd tree/p && ln -s ../../../${p.outsideDir} tree/s && ln -s / tree/sub/up && ln -s /dev/zero tree/z && mkfifo tree/f`);
  const start = Date.now();
  const stats = await p.host.download("tb", p.remote("tree"), "got");
  assert.ok(Date.now() - start < PROMPT_MS, `${Date.now() - start} ms`);
  assert.deepEqual(stats, { files: 1, bytes: 5n });
  const all = localContents(path.join(p.ws, "got"));
  assert.equal(all, "good\n");
  assert.ok(!all.includes(PASSWD) && !all.includes(VICTIM));
  assert.deepEqual(fs.readdirSync(path.join(p.ws, "got")).sort(), ["sub"]);
  assert.deepEqual(fs.readdirSync(path.join(p.ws, "got/sub")), ["good"]);
});

// The command that writes walks from the root with `cd -P`, `pwd -P`
// checked at every step (`w` of lib/remote-write.sh, the native host's
// too). Negative control (run): with that `case "$q/"` check made a no-op,
// the test failed ("expected a refusal" at out/x).
test("an upload through a job-made directory link to an outside directory is refused, the outside unchanged", { skip }, async (t) => {
  const p = planted(t);
  await p.setup(`ln -s ../../${p.outsideDir} out && mkdir -p up && ln -s ../../../${p.outsideDir} up/sub && ln -s ~/.ssh ssh`);
  fs.mkdirSync(path.join(p.ws, "src/sub"), { recursive: true });
  fs.writeFileSync(path.join(p.ws, "src/sub/a"), "MINE");
  const cases = [
    ["upload", "input.txt", "out/x", "out"],
    ["upload", "input.txt", "out/new/x", "out"],
    ["upload", "src", "out", "out"],
    ["upload", "src", "up", "up/sub"],
    ["upload", "input.txt", "ssh/authorized_keys", "ssh"],
  ];
  for (const [, local, rel, at] of cases) {
    const { e, ms } = await refusedIn(p.host.upload("tb", local, p.remote(rel)));
    assertRefusal(e, "denied");
    assert.match(e.val, new RegExp(`^remote path ~/cluster-runs/${p.run}/${at} resolves to /\\S+ on the cluster, outside remoteRoot ~/cluster-runs \\(/\\S+\\): a symbolic link leads out of it; nothing was written there$`), rel);
    assert.ok(ms < PROMPT_MS, `${rel}: ${ms} ms`);
  }
  // uploadAll, the call run_workload makes: refused the same way.
  const { e } = await refusedIn(p.host.uploadAll("tb", [{ localPath: "input.txt", remotePath: p.remote("fine/x") }, { localPath: "input.txt", remotePath: p.remote("out/y") }]));
  assertRefusal(e, "denied", /out resolves to/);
  assert.equal(await p.outsideState(), `./victim:${VICTIM}\n`);
  assert.doesNotMatch(await p.sh("cat .ssh/authorized_keys"), /MINE/);
});

// The refusals are the friendly answer: without them (`[ ! -L "./$2" ]`
// and the non-regular case of `p`, lib/remote-write.sh), the link or FIFO
// at the name would be unlinked and replaced by the new file, never
// written through or opened; the next test shows that guarantee.
test("an upload onto a job-made symlink at the file's name is refused, its target unchanged", { skip }, async (t) => {
  const p = planted(t);
  await p.setup(`ln -s ../../${p.outsideDir}/victim v && mkdir up && ln -s ../../../${p.outsideDir}/victim up/a && mkfifo ff`);
  fs.mkdirSync(path.join(p.ws, "src"));
  fs.writeFileSync(path.join(p.ws, "src/a"), "MINE");
  for (const [local, rel, at] of [["input.txt", "v", "v"], ["src", "up", "up/a"]]) {
    const { e, ms } = await refusedIn(p.host.upload("tb", local, p.remote(rel)));
    assertRefusal(e, "denied", `remote path ~/cluster-runs/${p.run}/${at} is a symbolic link on the cluster; an upload never writes through one (remove it there, or upload elsewhere); nothing was written through it`);
    assert.ok(ms < PROMPT_MS, `${rel}: ${ms} ms`);
  }
  // A FIFO at the name is not opened (sftp's put would block on it).
  const { e, ms } = await refusedIn(p.host.upload("tb", "input.txt", p.remote("ff")));
  assertRefusal(e, "denied", `remote path ~/cluster-runs/${p.run}/ff is not a regular file on the cluster (a device, FIFO or socket); an upload only replaces regular files; nothing was written through it`);
  assert.ok(ms < PROMPT_MS, `ff: ${ms} ms`);
  assert.equal(await p.outsideState(), `./victim:${VICTIM}\n`);
});

// A file is always written as a new file: the name unlinked, then an
// exclusive create (`p` of lib/remote-write.sh). Control (run): without the
// unlink and the exclusive create, the outside victim was truncated.
test("an upload onto a name a job hard-linked to an outside file replaces the name, the outside unchanged", { skip }, async (t) => {
  const p = planted(t);
  await p.setup(`ln ../../${p.outsideDir}/victim hl`);
  let e;
  try {
    await p.host.upload("tb", "input.txt", p.remote("hl"));
  } catch (x) {
    e = x;
  }
  assert.equal(await p.outsideState(), `./victim:${VICTIM}\n`);
  assert.equal(e, undefined, JSON.stringify(e));
  assert.equal(await p.sh(`cat cluster-runs/${p.run}/hl`), "MINE");
});

// Control (run): with the lossy `toString("utf8")` decoding of the check's
// output, sftp was given the U+FFFD spelling, a job's link out, and the
// download returned the outside victim.
test("a source resolving to a name that is not UTF-8 is refused, never read by another spelling", { skip }, async (t) => {
  const p = planted(t);
  await p.setup(`printf mine > "$(printf 'd\\377')" && ln -s "$(printf 'd\\377')" link && ln -s ../../${p.outsideDir}/victim "$(printf 'd\\357\\277\\275')"`);
  const { e, ms } = await refusedIn(p.host.download("tb", p.remote("link"), "got"));
  assertRefusal(e, "denied", "a remote path resolves to a name that is not UTF-8 on the cluster; this host transfers UTF-8 names only (rename it there)");
  assert.ok(ms < PROMPT_MS, `${ms} ms`);
  assert.ok(!localContents(p.ws).includes(VICTIM));
});

// The well-behaved side: links inside the root stay usable for uploads, as
// in the native host (`w` of lib/remote-write.sh follows a link with
// `cd -P` and checks where it landed).
// With `realpath -e` replaced by the unresolved path in DOWNLOAD_CHECK, the
// download of `alias` failed ("... alias changed on the cluster while it was
// being checked"): sftp is given the resolved path, never the link.
test("well-behaved transfers still work, through links that stay inside the root", { skip }, async (t) => {
  const p = planted(t);
  await p.setup("mkdir real && echo inside > real/f && ln -s real alias && ln -s real/f flink");
  fs.mkdirSync(path.join(p.ws, "src/sub"), { recursive: true });
  fs.writeFileSync(path.join(p.ws, "src/sub/a"), "MINE");
  fs.writeFileSync(path.join(p.ws, "src/b"), "B");
  assert.deepEqual(await p.host.upload("tb", "src", p.remote("tree")), { files: 2, bytes: 5n });
  assert.deepEqual(await p.host.upload("tb", "input.txt", p.remote("alias/x")), { files: 1, bytes: 4n });
  assert.deepEqual(await p.host.upload("tb", "input.txt", p.remote("tree/sub/a")), { files: 1, bytes: 4n });
  assert.equal(await p.sh(`cat cluster-runs/${p.run}/real/x cluster-runs/${p.run}/tree/sub/a`), "MINEMINE");
  assert.deepEqual(await p.host.download("tb", p.remote("tree"), "back"), { files: 2, bytes: 5n });
  assert.equal(fs.readFileSync(path.join(p.ws, "back/sub/a"), "utf8"), "MINE");
  assert.deepEqual(await p.host.download("tb", p.remote("alias"), "alias"), { files: 2, bytes: 11n });
  assert.equal(fs.readFileSync(path.join(p.ws, "alias/f"), "utf8"), "inside\n");
  assert.deepEqual(await p.host.download("tb", p.remote("flink"), "flink"), { files: 1, bytes: 7n });
  assert.equal(fs.readFileSync(path.join(p.ws, "flink"), "utf8"), "inside\n");
});

// The cluster user owns their home, the root's parent: a job can rename the
// root and leave `ln -s / ROOT` (or a link to an outside directory) in its
// place. Every transfer and command line refuses before it resolves the
// root. Control (run): without `cs_root_ok` in DOWNLOAD_CHECK, the
// download of `etc/passwd` through `ROOT -> /` was not refused; the uploads'
// commands check it in their prelude (remote-transfer.js `writePrelude`,
// as host/src/put.rs does).
// (The command lines' own check is remote-confine.js `rootCheck`, the
// native host's `a_root_swapped_for_a_link_is_refused_before_anything_runs`.)
test("a root swapped for a link is refused by transfers and commands alike", { skip }, async (t) => {
  const p = planted(t);
  await p.setup();
  const config = JSON.parse(fs.readFileSync(CONFIG, "utf8"));
  const { sshTarget } = Object.values(config.clusters)[0];
  const root = `jx-root-${crypto.randomBytes(6).toString("hex")}`;
  t.after(() => p.sh(`rm -f ${root}`));
  const grants = grantsFor(p.ws, { clusters: { sw: { sshTarget, remoteRoot: `~/${root}` } } });
  const host = callHost(grants, new SshClient({ sshConfig: config.host?.sshConfig }), undefined, path.join(p.ws, "no-approvals.jsonl"));
  const why = `remoteRoot ~/${root} passes through a symbolic link in a directory the cluster user can write: a job could point it anywhere, so nothing was done there. Set remoteRoot to the real path it resolves to (or replace the link by the directory)`;
  for (const target of ["/", `$HOME/${p.outsideDir}`]) {
    await p.sh(`rm -f ${root} && ln -s "${target}" ${root}`);
    const down = await refusedIn(host.download("sw", "etc/passwd", "got"));
    assertRefusal(down.e, "denied", why);
    assert.ok(!fs.existsSync(path.join(p.ws, "got")));
    const up = await refusedIn(host.upload("sw", "input.txt", "x"));
    assertRefusal(up.e, "denied", why);
    assert.equal(await p.outsideState(), `./victim:${VICTIM}\n`);
    const head = await refusedIn(host.exec({ cluster: "sw", program: "head", args: ["-c", "5", "--", "etc/passwd"] }));
    assertRefusal(head.e, "denied", why);
  }
});
