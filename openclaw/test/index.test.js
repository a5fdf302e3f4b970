// index.js: the `host` section of the plugin config (as host/src/operator.rs
// reads it, except that a plugin has no config file for relative paths),
// guest errors as tool results (as host/src/mcp.rs reports them), and whole
// tool calls through the guest that must not reach SSH.

import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { errorResult, runTool, splitConfig } from "../index.js";
import { GrantError } from "../lib/grants.js";
import { tempDir, thrown, atRoot } from "./helpers.js";
import { SCRIPT } from "../lib/remote-confine.js";
import { quoteWord } from "../lib/grants.js";

const PROFILE = { clusters: { c: { sshTarget: "login.invalid", remoteRoot: "/scratch/u/runs" } } };

/** The GrantError message splitConfig gives for `raw`. */
function splitError(raw) {
  const e = thrown(() => splitConfig(raw));
  assert.ok(e instanceof GrantError, `expected a GrantError for ${JSON.stringify(raw)}, got ${e}`);
  return e.message;
}

// ---------------------------------------------------------------------------
// splitConfig
// ---------------------------------------------------------------------------

test("splitConfig: the host section is removed from what the guest sees", () => {
  assert.deepEqual(splitConfig({ ...PROFILE, defaultCluster: "c" }), {
    plugin: { ...PROFILE, defaultCluster: "c" }, sshConfig: undefined, workspace: undefined, approvals: undefined, maxDownloadBytes: undefined,
  });
  const split = splitConfig({ host: { sshConfig: "/etc/ssh/alt_config", workspace: " /srv/ws " }, ...PROFILE });
  assert.deepEqual(split, { plugin: PROFILE, sshConfig: "/etc/ssh/alt_config", workspace: "/srv/ws", approvals: undefined, maxDownloadBytes: undefined });
  // The native host's own settings are checked and accepted; approvals is used.
  const native = splitConfig({ host: { auditLog: false, connectionsPerMinute: 5, approvals: "/var/lib/cs/approvals.jsonl" } });
  assert.equal(native.approvals, "/var/lib/cs/approvals.jsonl");
  assert.equal(splitError({ host: { connectionsPerMinute: 0 } }), "host.connectionsPerMinute must be a whole number from 1 to 1000");
  // host.maxDownloadBytes as operator.rs reads it (rxfer): a whole number of bytes, at least 1.
  assert.equal(splitConfig({ host: { maxDownloadBytes: 1024 } }).maxDownloadBytes, 1024);
  for (const bad of [0, -1, 1.5, "10", true, 2 ** 60]) {
    assert.equal(splitError({ host: { maxDownloadBytes: bad } }), "host.maxDownloadBytes must be a whole number of bytes, at least 1 (the default is 21474836480)", JSON.stringify(bad));
  }
  assert.equal(splitError({ host: { auditLog: "rel.jsonl" } }), 'host.auditLog "rel.jsonl" must be an absolute path (or ~/...)');
  // Null values are absent; so is a missing config.
  assert.deepEqual(splitConfig({ host: { sshConfig: null } }), { plugin: {}, sshConfig: undefined, workspace: undefined, approvals: undefined, maxDownloadBytes: undefined });
  assert.deepEqual(splitConfig(undefined), { plugin: {}, sshConfig: undefined, workspace: undefined, approvals: undefined, maxDownloadBytes: undefined });
  assert.deepEqual(splitConfig(null), { plugin: {}, sshConfig: undefined, workspace: undefined, approvals: undefined, maxDownloadBytes: undefined });
});

test("splitConfig: ~ expands to the home directory, and only the caller's", () => {
  const home = os.homedir();
  assert.equal(splitConfig({ host: { workspace: "~" } }).workspace, home);
  assert.equal(splitConfig({ host: { workspace: "~/x" } }).workspace, path.join(home, "x"));
  assert.equal(splitConfig({ host: { sshConfig: "~/.ssh/cluster_config" } }).sshConfig, path.join(home, ".ssh/cluster_config"));
  assert.equal(splitError({ host: { workspace: "~user/x" } }), 'host.workspace "~user/x" must be an absolute path (or ~/...)');
  assert.equal(splitError({ host: { workspace: "~x" } }), 'host.workspace "~x" must be an absolute path (or ~/...)');
});

test("splitConfig: relative paths, non-paths and unknown keys are refused", () => {
  // A plugin config has no file to be relative to.
  assert.equal(splitError({ host: { sshConfig: "ssh_config" } }), 'host.sshConfig "ssh_config" must be an absolute path (or ~/...)');
  assert.equal(splitError({ host: { workspace: "./ws" } }), 'host.workspace "./ws" must be an absolute path (or ~/...)');
  for (const bad of ["", "   ", 3, true, {}, []]) {
    assert.equal(splitError({ host: { workspace: bad } }), "host.workspace must be a path", JSON.stringify(bad));
  }
  assert.equal(splitError({ host: { bogus: 1 } }), "host.bogus: unknown key (allowed: sshConfig, workspace, auditLog, connectionsPerMinute, approvals, maxDownloadBytes)");
  assert.equal(splitError({ host: { workspace: "/w", sshconfig: "/x" } }), "host.sshconfig: unknown key (allowed: sshConfig, workspace, auditLog, connectionsPerMinute, approvals, maxDownloadBytes)");
});

test("a host section that is not an object is read as operator.rs reads it", () => {
  // operator.rs: `host: null` is absent; any other non-object is "host must
  // be an object". index.js throws a TypeError for null (not a GrantError,
  // so runTool rethrows it), accepts [], and reports "x" as "host.0: unknown key".
  const answer = (raw) => {
    try {
      return { ok: splitConfig(raw) };
    } catch (e) {
      return { [e.name]: e.message };
    }
  };
  assert.deepEqual(
    [answer({ host: null, ...PROFILE }), answer({ host: [] }), answer({ host: "x" })],
    [
      { ok: { plugin: PROFILE, sshConfig: undefined, workspace: undefined, approvals: undefined, maxDownloadBytes: undefined } },
      { GrantError: "host must be an object" },
      { GrantError: "host must be an object" },
    ],
  );
});

// ---------------------------------------------------------------------------
// errorResult
// ---------------------------------------------------------------------------

test("errorResult reports guest errors as the native MCP server does", () => {
  const cases = [
    [{ tag: "policy", val: "profile \"c\" policy: no GPUs" }, "policy", 'refused by policy: profile "c" policy: no GPUs'],
    [{ tag: "invalid-config", val: "clusters must be an object" }, "invalid-config", "invalid config: clusters must be an object"],
    [{ tag: "invalid-request", val: "action: is required" }, "invalid-request", "invalid request: action: is required"],
    [{ tag: "remote-failed", val: "sbatch: exit 1" }, "remote-failed", "remote command failed: sbatch: exit 1"],
    // Host errors are reported by their own kind, as `kind: message`.
    [{ tag: "host", val: { tag: "denied", val: 'remote path "/etc" is outside' } }, "denied", 'denied: remote path "/etc" is outside'],
    [{ tag: "host", val: { tag: "unknown-cluster", val: "no cluster profile named \"x\"" } }, "unknown-cluster", 'unknown-cluster: no cluster profile named "x"'],
    [{ tag: "host", val: { tag: "local-io", val: "disk full" } }, "local-io", "local-io: disk full"],
    // A kind this host does not know yet still reads sensibly.
    [{ tag: "something-new", val: "x" }, "something-new", "something-new: x"],
  ];
  for (const [payload, kind, text] of cases) {
    assert.deepEqual(errorResult(payload), {
      content: [{ type: "text", text }],
      details: { status: "error", kind, error: text },
    });
  }
});

// ---------------------------------------------------------------------------
// runTool: whole calls through the guest, with ssh and sftp replaced by
// stand-ins that record any start (none of these calls may reach them)
// ---------------------------------------------------------------------------

/**
 * Put recording `ssh` and `sftp` first on PATH for the test. Each start
 * writes its program name and argv, NUL-separated, to a file of its own in
 * the returned directory (and exits 255, as ssh does when it cannot connect).
 */
function fakeSsh(t) {
  const bin = tempDir(t, "bin");
  const log = path.join(bin, "started");
  fs.mkdirSync(log);
  for (const name of ["ssh", "sftp"]) {
    const script = `#!/bin/sh\nprintf '%s\\0' ${name} "$@" > "$(mktemp '${log}/start.XXXXXX')"\nexit 255\n`;
    fs.writeFileSync(path.join(bin, name), script, { mode: 0o755 });
  }
  const saved = process.env.PATH;
  process.env.PATH = `${bin}:${saved}`;
  t.after(() => {
    process.env.PATH = saved;
  });
  return log;
}

/** Every argv the stand-ins recorded. */
const started = (log) => fs.readdirSync(log).map((f) => fs.readFileSync(path.join(log, f), "utf8").split("\0").slice(0, -1));

const assertNoSsh = (log) => assert.deepEqual(started(log), [], "ssh or sftp was started");

const LEDGER = {
  runs: {
    r1: {
      runId: "r1", clusterId: "c", localRunDir: ".openclaw/cluster-runs/r1", remoteRunDir: "/scratch/u/runs/r1",
      createdAt: "2026-01-01T00:00:00Z", updatedAt: "2026-01-01T00:00:00Z", jobs: [],
    },
  },
};

test("runTool: config errors are invalid-config results", async (t) => {
  const log = fakeSsh(t);
  const ws = tempDir(t);
  const cases = [
    [{ clusters: { c: { sshTarget: "-oProxyCommand=id", remoteRoot: "/r" } } }, 'invalid config: clusters.c.sshTarget "-oProxyCommand=id" is not a host name or alias'],
    [{ localRunsDir: "../x" }, 'invalid config: localRunsDir "../x" must be a relative path inside the workspace'],
    [{ host: { bogus: 1 } }, "invalid config: host.bogus: unknown key (allowed: sshConfig, workspace, auditLog, connectionsPerMinute, approvals, maxDownloadBytes)"],
    [{ host: { workspace: "rel" } }, 'invalid config: host.workspace "rel" must be an absolute path (or ~/...)'],
  ];
  for (const [config, text] of cases) {
    assert.deepEqual(await runTool(config, ws, { action: "list_runs" }), errorResult({ tag: "invalid-config", val: text.slice("invalid config: ".length) }));
  }
  const missing = await runTool({}, path.join(ws, "missing"), { action: "list_runs" });
  assert.equal(missing.details.kind, "invalid-config");
  assert.match(missing.details.error, /^invalid config: workspace .*missing: /);
  assertNoSsh(log);
});

test("runTool: the guest's own refusals come back as results", async (t) => {
  const log = fakeSsh(t);
  const ws = tempDir(t);
  const bogus = await runTool(PROFILE, ws, { action: "bogus" });
  assert.equal(bogus.details.kind, "invalid-request");
  assert.match(bogus.content[0].text, /^invalid request: action: unknown action "bogus"/);
  const outside = await runTool(PROFILE, ws, { action: "list_files", cluster: "c", remotePath: "/etc" });
  assert.deepEqual(outside.details, {
    status: "error", kind: "invalid-request",
    error: 'invalid request: remotePath "/etc" is outside the profile\'s remoteRoot /scratch/u/runs',
  });
  const upload = await runTool(PROFILE, ws, { action: "upload", cluster: "c", runId: "r1", localPath: "../x" });
  assert.equal(upload.details.kind, "invalid-request");
  assertNoSsh(log);
});

test("runTool: list_runs reads the run store of host.workspace", async (t) => {
  const log = fakeSsh(t);
  const ws = tempDir(t);
  const elsewhere = tempDir(t, "cwd");
  fs.mkdirSync(path.join(ws, ".openclaw/cluster-runs"), { recursive: true });
  fs.writeFileSync(path.join(ws, ".openclaw/cluster-runs/runs.json"), JSON.stringify(LEDGER));
  const result = await runTool({ ...PROFILE, host: { workspace: ws } }, elsewhere, { action: "list_runs" });
  assert.equal(result.details.total, 1);
  assert.deepEqual(result.details.runs.map((r) => [r.runId, r.clusterId, r.remoteRunDir]), [["r1", "c", "/scratch/u/runs/r1"]]);
  assert.deepEqual(JSON.parse(result.content[0].text), result.details);
  // The workspace the caller passed is not the one used.
  const empty = await runTool(PROFILE, elsewhere, { action: "list_runs" });
  assert.equal(empty.details.total, 0);
  assertNoSsh(log);
});

test("runTool: a run store symlinked out of the workspace is denied by the host", async (t) => {
  const log = fakeSsh(t);
  const ws = tempDir(t);
  const outside = tempDir(t, "outside");
  fs.writeFileSync(path.join(outside, "runs.json"), JSON.stringify(LEDGER));
  fs.mkdirSync(path.join(ws, ".openclaw"));
  fs.symlinkSync(outside, path.join(ws, ".openclaw/cluster-runs"));
  const result = await runTool(PROFILE, ws, { action: "list_runs" });
  const real = fs.realpathSync(ws);
  assert.deepEqual(result, errorResult({
    tag: "host",
    val: { tag: "denied", val: `run store path "runs.json" resolves outside ${real}/.openclaw/cluster-runs` },
  }));
  assertNoSsh(log);
});

test("runTool: an allowed request reaches ssh only as the grants built it", async (t) => {
  // The positive control for the tests above: the stand-in does see starts.
  const log = fakeSsh(t);
  const ws = tempDir(t);
  // A private control-socket directory, and an ssh_config path of its own so
  // the cached client of another test is not reused.
  const run = tempDir(t, "run");
  const sshConfig = path.join(run, "ssh_config");
  fs.writeFileSync(sshConfig, "");
  const saved = process.env.XDG_RUNTIME_DIR;
  process.env.XDG_RUNTIME_DIR = run;
  t.after(() => {
    if (saved === undefined) delete process.env.XDG_RUNTIME_DIR;
    else process.env.XDG_RUNTIME_DIR = saved;
  });
  const result = await runTool({ ...PROFILE, host: { sshConfig } }, ws, { action: "init_run", cluster: "c", runId: "r1" });
  assert.equal(result.details.kind, "remote-failed");
  const runs = started(log);
  assert.equal(runs.length, 1, JSON.stringify(runs));
  const argv = runs[0];
  assert.deepEqual(argv.slice(0, 3), ["ssh", "-F", sshConfig]);
  assert.ok(argv.includes("BatchMode=yes") && argv.includes("StrictHostKeyChecking=yes"), argv.join(" "));
  // The target after `--`, then the one checked and quoted command line.
  assert.deepEqual(argv.slice(-3), [
    "--", "login.invalid",
    atRoot("/scratch/u/runs", 'if command -v timeout >/dev/null 2>&1; then set -- timeout -k 5 30; else set --; fi; exec "$@" /bin/sh -c ' + quoteWord(SCRIPT) + ' cs "$cs_r" mkdir mkdirp 1048577 . 1 r1 -p'),
  ]);
});
