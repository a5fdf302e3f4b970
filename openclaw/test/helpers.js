// Shared fixtures for the host tests: temporary workspaces, the grants the
// Rust tests use, a recording stand-in for the SSH client, and the check that
// a refusal is a typed host-error value rather than a JS exception.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Grants } from "../lib/grants.js";
import { isHostError } from "../lib/host-error.js";
import { enterRoot, rootCheck } from "../lib/remote-confine.js";
import { WRITE_FUNCTIONS } from "../lib/remote-transfer.js";

/** The command line of remote-confine.js for a SLURM-like program: run in
 * `dir` (shell words), checked physically to be under `root`. */
export const inDir = (root, dir, run) =>
  `${withRootCheck(root)} ${enterRoot(root)} cd -P -- ${dir} && cs_h=$(cs_pwd; printf x) && cs_h=\${cs_h%?x} && case $cs_h in "$cs_r"|"$cs_r"/*) ${run};; *) printf '%s\\n' 'cluster-slurm-confine: cwd' >&2; exit 90;; esac`;
/** The same, at the root (created when missing). */
export const atRoot = (root, run) => inDir(root, '"$cs_r/"', run);

/** The root check every command line starts with (remote-confine.js). */
export const withRootCheck = (root) => rootCheck(root, "printf '%s\\n' 'cluster-slurm-confine: rootlink' >&2; exit 90");

/** The profile of host/src/grants.rs `fn grants` (trailing slash on purpose). */
export const RUST_GRANTS = { clusters: { c: { sshTarget: "login", remoteRoot: "/scratch/u/runs/" } } };

/**
 * A fresh directory, removed when the test ends. `t` is the node:test
 * context, whose `after` hook runs even when the test fails.
 */
export function tempDir(t, tag = "ws") {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cluster-slurm-${tag}-`));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Grants over `workspace` (the Rust tests' profile unless told otherwise). */
export function grantsFor(workspace, config = RUST_GRANTS) {
  return new Grants(config, workspace);
}

/**
 * What a well-behaved cluster answers to the transfer checks of
 * lib/remote-transfer.js: the download source resolves to itself inside
 * the root, a `kind` ("d" or "f") of `bytes` bytes in `files` files; every
 * upload's directories are made and its files written whole. Null for any
 * other command.
 */
export function transferCheckAnswer(command, stdin, { kind = "d", bytes = 0, files = 0 } = {}, opts = undefined) {
  const ok = (stdout) => ({
    exitCode: 0, exitSignal: undefined, stdout: new TextEncoder().encode(stdout), stderr: new Uint8Array(),
    stdoutTruncated: false, stderrTruncated: false,
  });
  if (command.includes("# cluster-slurm download check")) {
    const [root, src] = Buffer.from(stdin).toString("utf8").split("\n");
    return ok(`${root}\0${src}\0${kind}\n${bytes} ${files}\n`);
  }
  // An upload's writing commands (remote-transfer.js makeDirs and putFile):
  // done, and for a file, as many bytes as its open file holds.
  const m = /; m=(cs-bytes-[0-9a-f]+); /.exec(command);
  if (m && / p \S+ \S+ 0 u?[0-7]+$/.test(command)) {
    const size = opts?.stdinFd === undefined ? 0 : fs.fstatSync(opts.stdinFd).size;
    return { ...ok(""), stderr: new TextEncoder().encode(`${m[1]} wrote ${size}\n`) };
  }
  if (m && command.endsWith(") || exit $?;")) return ok("");
  return null;
}

/** Only the sftp calls a client recorded (the transfer checks left out). */
export const sftpCalls = (client) => client.calls.filter((c) => c.kind === "sftp");

/**
 * A recorded upload command (remote-transfer.js makeDirs or putFile) as
 * `[root word, what it does after the shell functions]`, e.g.
 * `["/scratch/u/runs", "p r1 input.txt 0 u644"]`; null for another command.
 */
export function writeCall(command) {
  const at = command.indexOf(WRITE_FUNCTIONS);
  const root = / r=\$\(cs_root_real (.*?)\); case \$\? in /.exec(command);
  if (at < 0 || root === null) return null;
  return [root[1], command.slice(at + WRITE_FUNCTIONS.length).trim()];
}

/** The upload commands a client recorded, as writeCall gives them. */
export const writeCalls = (client) => client.calls.map((c) => (c.command ? writeCall(c.command) : null)).filter((w) => w !== null);

/**
 * A stand-in for lib/ssh.js's SshClient that records every call and never
 * spawns anything. `onSftp` may act out a transfer (e.g. land a download);
 * the transfer checks get a well-behaved cluster's answer (`remote`, see
 * transferCheckAnswer).
 */
export function recordingClient({ onSftp, remote } = {}) {
  const calls = [];
  return {
    calls,
    async exec(target, command, opts) {
      calls.push({ kind: "exec", target, command, opts });
      const answer = transferCheckAnswer(command, opts?.stdin ?? "", remote, opts);
      if (answer) return answer;
      return {
        exitCode: 0, exitSignal: undefined, stdout: new TextEncoder().encode("ok"), stderr: new Uint8Array(),
        stdoutTruncated: false, stderrTruncated: false,
      };
    },
    async sftp(target, batch, opts) {
      calls.push({ kind: "sftp", target, batch, opts });
      onSftp?.(batch);
    },
  };
}

/**
 * Assert that `e` is a host-error `{tag, val}` plain object with `tag` (the
 * shape jco turns into `result::err`; an Error would trap the guest), and,
 * when `message` is given, that its text is exactly that (or matches it).
 */
export function assertRefusal(e, tag, message) {
  assert.ok(!(e instanceof Error), `expected a plain {tag, val} object, got ${e?.stack ?? e}`);
  assert.ok(isHostError(e), `not a host-error value: ${JSON.stringify(e)}`);
  assert.equal(e.tag, tag, `wrong refusal kind: ${JSON.stringify(e)}`);
  if (message instanceof RegExp) assert.match(e.val, message);
  else if (message !== undefined) assert.equal(e.val, message);
  return true;
}

/** Run `fn` synchronously and return what it threw (failing if it did not). */
export function thrown(fn) {
  let value;
  try {
    value = fn();
  } catch (e) {
    return e;
  }
  assert.fail(`expected a refusal, got ${JSON.stringify(value)}`);
}

/** OpenSSH's sftp-server, for a local round trip through `sftp -D`. */
const SFTP_SERVER = ["/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server"]
  .find((p) => fs.existsSync(p));
export const HAVE_SFTP = SFTP_SERVER !== undefined && spawnSync("sftp", ["-h"]).error === undefined;

/**
 * A client whose sftp talks to a local sftp-server: the real batch parser
 * and globbing, and the host's open files as its fd 3, 4, ... as ssh.js
 * passes them.
 */
export const localSftp = HAVE_SFTP ? {
  // The transfer checks run for real, by a local shell, on local paths.
  async exec(_target, command, { stdin, stdinFd } = {}) {
    const r = stdinFd === undefined
      ? spawnSync("bash", ["-c", command], { input: stdin ?? "", timeout: 60_000 })
      : spawnSync("bash", ["-c", command], { stdio: [stdinFd, "pipe", "pipe"], timeout: 60_000 });
    return {
      exitCode: r.status ?? undefined, exitSignal: r.signal ?? undefined, stdout: new Uint8Array(r.stdout), stderr: new Uint8Array(r.stderr),
      stdoutTruncated: false, stderrTruncated: false,
    };
  },
  async sftp(_target, batch, { fds = [] } = {}) {
    const r = spawnSync("sftp", ["-q", "-D", SFTP_SERVER, "-b", "-"], { input: batch, encoding: "utf8", stdio: ["pipe", "pipe", "pipe", ...fds] });
    if (r.status !== 0) throw new Error(`sftp exit ${r.status}: ${r.stderr}\n${batch}`);
  },
} : undefined;
