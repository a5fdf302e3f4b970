// The JS host's transfers over the real OpenSSH client to the testbed
// (tests/testbed/up.sh; run when CLUSTER_SLURM_TESTBED_CONFIG names its
// config, as `./dev test` does): ssh reads uploads from the files the host
// opened and checked, a file swapped mid-upload is never sent, swaps inside
// the command that writes write nothing outside, and a tree with a 255-byte
// name comes back.

import test from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { quoteWord } from "../lib/grants.js";
import { SshClient } from "../lib/ssh.js";
import { WRITE_FUNCTIONS } from "../lib/remote-transfer.js";
import { download, upload } from "../lib/transfer.js";
import { assertRefusal, tempDir } from "./helpers.js";

const CONFIG = process.env.CLUSTER_SLURM_TESTBED_CONFIG;
const skip = !CONFIG && "CLUSTER_SLURM_TESTBED_CONFIG is not set (tests/testbed/up.sh)";

function testbed(t) {
  const config = JSON.parse(fs.readFileSync(CONFIG, "utf8"));
  const profile = Object.values(config.clusters)[0];
  const client = new SshClient({ sshConfig: config.host?.sshConfig });
  const dir = `${profile.remoteRoot}/js-local-fs-${crypto.randomBytes(6).toString("hex")}`;
  const sh = async (command) => {
    const r = await client.exec(profile.sshTarget, command, { timeoutMs: 60_000 });
    return { code: r.exitCode, out: new TextDecoder().decode(r.stdout).trim() };
  };
  t.after(() => sh(`rm -rf -- ${quoteWord(dir)}`));
  return { client, target: profile.sshTarget, dir, sh, root: profile.remoteRoot, opts: { ...opts, root: profile.remoteRoot } };
}

const opts = { timeoutMs: 120_000 };

test("a tree goes up from the checked files and comes back, a 255-byte name included", { skip }, async (t) => {
  const { client, target, dir, opts } = testbed(t);
  const ws = tempDir(t);
  const long = "L".repeat(255);
  fs.mkdirSync(path.join(ws, "src/sub"), { recursive: true });
  fs.writeFileSync(path.join(ws, "src/a.txt"), "alpha");
  fs.writeFileSync(path.join(ws, "src/sub", long), "long");
  fs.writeFileSync(path.join(ws, "src/run.sh"), "#!/bin/sh\n", { mode: 0o755 });
  assert.deepEqual(await upload(client, target, { base: ws, rel: "src" }, `${dir}/up`, opts), { files: 3, bytes: 19n });
  assert.deepEqual(await download(client, target, `${dir}/up`, { base: ws, rel: "back" }, opts), { files: 3, bytes: 19n });
  assert.equal(fs.readFileSync(path.join(ws, "back/a.txt"), "utf8"), "alpha");
  assert.equal(fs.readFileSync(path.join(ws, "back/sub", long), "utf8"), "long");
  assert.equal(fs.statSync(path.join(ws, "back/run.sh")).mode & 0o777, 0o755, "the mode travels both ways (-p)");
  // Nothing but the tree itself arrived (no staging or partial left in the workspace).
  assert.deepEqual(fs.readdirSync(ws).sort(), ["back", "src"]);
});

// Negative control (seen): with the dev/ino comparison in `openPlanned`
// removed, the cluster's a.txt held "secret" (actual 'secret', expected 'none').
test("over ssh, a file swapped mid-upload is never sent", { skip }, async (t) => {
  const { client, target, dir, sh, opts } = testbed(t);
  const ws = tempDir(t);
  const outside = tempDir(t, "outside");
  fs.writeFileSync(path.join(outside, "secret"), "secret");
  fs.mkdirSync(path.join(ws, "src"));
  fs.writeFileSync(path.join(ws, "src/a.txt"), "mine");
  const victim = path.join(ws, "src/a.txt");
  const beforeOpen = (shown) => {
    if (shown !== victim) return;
    fs.rmSync(victim);
    fs.linkSync(path.join(outside, "secret"), victim);
  };
  let e;
  try {
    await upload(client, target, { base: ws, rel: "src" }, `${dir}/up`, { ...opts, beforeOpen });
  } catch (x) {
    e = x;
  }
  const sent = await sh(`cat -- ${quoteWord(`${dir}/up/a.txt`)} 2>/dev/null || echo none`);
  assert.equal(sent.out, "none", "the outside file reached the cluster");
  assertRefusal(e, "local-io", /was replaced by another file/);
});

/** WRITE_FUNCTIONS with `commands` run at the no-op `: point;` (a test's shell hook). */
const hooked = (point, commands) => {
  assert.ok(WRITE_FUNCTIONS.includes(`: ${point};`), point);
  return WRITE_FUNCTIONS.replace(`: ${point};`, `{ ${commands}; };`);
};

// Swaps inside the very command that writes, between two of its steps (the
// shell functions' `: after-create;` and `: after-check;` points, given
// hooks through `opts.writeFunctions`, which only tests pass): nothing
// outside the root is written. Negative controls (run): with the
// `[ "$s" = "$t" ]` comparison taken out of `p` (remote-write.sh), the
// empty outside file held "mine" after after-create; with `dd of="./$2"`
// instead of the descriptor, the outside victim did after after-check.
test("over ssh, swaps between the steps of the writing command write nothing outside", { skip }, async (t) => {
  const { client, target, dir, sh, opts } = testbed(t);
  const outside = `js-outside-${crypto.randomBytes(6).toString("hex")}`;
  t.after(() => sh(`rm -rf -- ~/${outside}`));
  await sh(`mkdir -p ~/${outside} && printf victim > ~/${outside}/victim && : > ~/${outside}/empty`);
  const state = async () => (await sh(`cd ~/${outside} && for f in *; do printf '%s:' "$f"; cat "$f"; echo; done`)).out;
  const before = await state();
  const ws = tempDir(t);
  fs.writeFileSync(path.join(ws, "a.txt"), "mine");
  const cases = [
    ["after-create", `rm -f "./$2" && ln -s "$HOME"/${outside}/empty "./$2"`, /changed on the cluster between the look and the open/],
    ["after-check", `mv "./$2" ./moved && ln -s "$HOME"/${outside}/victim "./$2"`, null],
  ];
  for (const [point, commands, refusal] of cases) {
    let e;
    try {
      await upload(client, target, { base: ws, rel: "a.txt" }, `${dir}/${point}/a.txt`, { ...opts, writeFunctions: hooked(point, commands) });
    } catch (x) {
      e = x;
    }
    assert.equal(await state(), before, `${point}: written outside`);
    if (refusal) assertRefusal(e, "denied", refusal);
    else assert.equal(e, undefined, `${point}: ${JSON.stringify(e)}`);
  }
  // after-check: the bytes went through the descriptor to the checked file.
  assert.equal((await sh(`cat -- ${quoteWord(`${dir}/after-check/moved`)}`)).out, "mine");
});
