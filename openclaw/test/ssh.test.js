// lib/ssh.js and the call path around it: OpenSSH's failures become typed
// host errors, a remote exit code stays the remote's, output is capped,
// timeouts and cancellation stop the running process, and while a call waits
// for ssh the guest is suspended without blocking Node's event loop (JSPI),
// so calls overlap.

import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { runTool } from "../index.js";
import { SshClient } from "../lib/ssh.js";
import { assertRefusal, tempDir } from "./helpers.js";

/** An `ssh` stand-in first on PATH that runs `body` (sh) for every start. */
function fakeSsh(t, body) {
  const bin = tempDir(t, "bin");
  fs.writeFileSync(path.join(bin, "ssh"), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  const saved = process.env.PATH;
  process.env.PATH = `${bin}:${saved}`;
  t.after(() => {
    process.env.PATH = saved;
  });
}

const rejection = async (promise) => {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail("expected a rejection");
};

const OPTS = { timeoutMs: 10_000 };

test("OpenSSH's own failures (exit 255) become typed host errors", async (t) => {
  const cases = [
    ["@@@@@@@@@@@\\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\\nHost key verification failed.", "host-key-mismatch"],
    ["No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\\nHost key verification failed.", "host-key-unknown"],
    ["user@host: Permission denied (publickey).", "auth-failed"],
    ["ssh: connect to host 10.0.0.1 port 22: Connection timed out", "timeout"],
    ["ssh: Could not resolve hostname nowhere: Name or service not known", "connection"],
    ["kex_exchange_identification: Connection closed by remote host", "connection"],
  ];
  for (const [stderr, kind] of cases) {
    fakeSsh(t, `printf '${stderr}\\n' >&2; exit 255`);
    const e = await rejection(new SshClient().exec("login", "exec squeue", OPTS));
    assertRefusal(e, kind, /^ssh login: /);
  }
});

test("a remote command's own exit status, even 255, is the guest's to judge", async (t) => {
  fakeSsh(t, "printf 'out'; printf 'squeue: error: something\\n' >&2; exit 255");
  const r = await new SshClient().exec("login", "exec squeue", OPTS);
  assert.equal(r.exitCode, 255);
  assert.equal(Buffer.from(r.stdout).toString(), "out");
  assert.match(Buffer.from(r.stderr).toString(), /squeue: error/);
  fakeSsh(t, "exit 3");
  assert.equal((await new SshClient().exec("login", "exec false", OPTS)).exitCode, 3);
});

test("ssh gets the checked command as one word after --, with strict, prompt-free options", async (t) => {
  const log = path.join(tempDir(t, "log"), "argv");
  fakeSsh(t, `printf '%s\\n' "$@" > '${log}'; cat`);
  const r = await new SshClient({ sshConfig: "/etc/alt_config" }).exec("login", "cd -- /r && exec ls 'a b'", { ...OPTS, stdin: new TextEncoder().encode("piped") });
  assert.equal(Buffer.from(r.stdout).toString(), "piped");
  const argv = fs.readFileSync(log, "utf8").trimEnd().split("\n");
  assert.deepEqual(argv.slice(-3), ["--", "login", "cd -- /r && exec ls 'a b'"]);
  assert.deepEqual(argv.slice(0, 2), ["-F", "/etc/alt_config"]);
  for (const opt of ["BatchMode=yes", "StrictHostKeyChecking=yes", "ControlMaster=auto"]) assert.ok(argv.includes(opt), opt);
});

test("output beyond the cap is dropped and flagged", async () => {
  const client = new SshClient();
  const r = await client.run("head", ["-c", String(3 << 20), "/dev/zero"], { timeoutMs: 10_000, cap: 1 << 20, what: "head" });
  assert.equal(r.stdout.bytes().length, 1 << 20);
  assert.equal(r.stdout.truncated, true);
});

test("a timeout stops the process and says so", async () => {
  const started = Date.now();
  const e = await rejection(new SshClient().run("sleep", ["30"], { timeoutMs: 300, what: "ssh login" }));
  // Generous: a process left running would hold the call for 30 s.
  assertRefusal(e, "timeout", "ssh login: no answer within 0.3 s");
  assert.ok(Date.now() - started < 5000, "the process was not stopped");
});

test("an aborted call stops its running process", async () => {
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 200);
  const started = Date.now();
  const e = await rejection(new SshClient().run("sleep", ["30"], { timeoutMs: 60_000, signal: abort.signal, what: "ssh login" }));
  assertRefusal(e, "connection", "ssh login: cancelled by the caller");
  assert.ok(Date.now() - started < 5000, "the process was not stopped");
  const again = await rejection(new SshClient().run("sleep", ["30"], { timeoutMs: 60_000, signal: abort.signal, what: "ssh login" }));
  assertRefusal(again, "connection", "ssh login: cancelled before it started");
});

test("while the guest waits for ssh, the event loop runs and calls overlap", async (t) => {
  // Every ssh start logs its start and end around 300 ms of waiting, and
  // answers like an empty squeue/sacct.
  const log = path.join(tempDir(t, "log"), "events");
  fakeSsh(t, `echo start >> '${log}'; sleep 0.3; echo end >> '${log}'`);
  const ws = tempDir(t);
  const config = { clusters: { c: { sshTarget: "login.invalid", remoteRoot: "/scratch/u/runs" } } };
  const status = (id) => runTool(config, ws, { action: "job_status", cluster: "c", jobId: id });

  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  const single = await status("1");
  clearInterval(timer);
  assert.notEqual(single.details.status, "error", JSON.stringify(single.details));
  // A guest blocking the loop for its two ssh runs would let no timer fire.
  assert.ok(ticks >= 5, `the event loop ticked only ${ticks} times during the call`);

  fs.rmSync(log);
  const results = await Promise.all([status("2"), status("3"), status("4")]);
  for (const r of results) assert.notEqual(r.details.status, "error", JSON.stringify(r.details));
  // Calls in one instance would run their ssh one at a time.
  let running = 0;
  let most = 0;
  for (const event of fs.readFileSync(log, "utf8").trim().split("\n")) {
    running += event === "start" ? 1 : -1;
    most = Math.max(most, running);
  }
  assert.ok(most >= 2, `at most ${most} ssh ran at once: the calls did not overlap`);
});
