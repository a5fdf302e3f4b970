// The system OpenSSH client as the transport of the in-process host: `ssh`
// for commands and `sftp` for files, one multiplexed master connection per
// target (ControlMaster), strict host keys, never a prompt.
//
// The operator's ssh setup applies unchanged (~/.ssh/config, agent, keys,
// certificates, ProxyJump), or the ssh_config file named in the plugin
// config's `host.sshConfig`.

import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as err from "./host-error.js";

export const OUTPUT_CAP = 1 << 20;
export const MAX_STDIN = 16 << 20;
export const DEFAULT_TIMEOUT_MS = 60_000;
export const MAX_TIMEOUT_MS = 600_000;
/** How long an idle master connection stays up for the next call. */
const CONTROL_PERSIST_S = 600;

/**
 * A private directory for the control sockets. Unix socket paths are short
 * (108 bytes), so a long TMPDIR falls back to /tmp.
 */
function controlDir() {
  const uid = typeof process.getuid === "function" ? process.getuid() : 0;
  const name = `cluster-slurm-ssh-${uid}`;
  let dir = path.join(process.env.XDG_RUNTIME_DIR || os.tmpdir(), name);
  if (dir.length + 42 > 100) dir = path.join("/tmp", name);
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if (e.code !== "EEXIST") throw err.localIo(`control socket directory ${dir}: ${e.message}`);
  }
  const st = fs.lstatSync(dir);
  // Anyone who can write here could stand in for our master connection.
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) {
    throw err.denied(`control socket directory ${dir} is not a private directory of uid ${uid}`);
  }
  return dir;
}

/** OpenSSH's own messages, most specific first. */
const SSH_FAILURES = [
  [/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed/i, err.hostKeyMismatch],
  [/No \S+ host key is known for|Host key verification failed/i, err.hostKeyUnknown],
  [/Permission denied \(|Too many authentication failures|no authentication methods/i, err.authFailed],
  [/Connection timed out|Operation timed out/i, err.timeout],
  [/Could not resolve hostname|Connection refused|Connection closed by|Connection reset|kex_exchange_identification|No route to host|Network is unreachable|mux_client|ControlSocket|Control socket|Bad configuration option|Can't open user config file|ssh_exchange_identification|Broken pipe|banner exchange/i, err.connection],
];

/** An ssh exit 255 with one of OpenSSH's failure messages, as a host-error. */
function sshFailure(target, stderr) {
  const text = stderr.toString("utf8");
  for (const [pattern, make] of SSH_FAILURES) {
    if (pattern.test(text)) {
      const lines = text.split("\n").map((l) => l.trim()).filter((l) => l && !/^@+$/.test(l));
      return make(`ssh ${target}: ${lines.slice(-3).join(" / ")}`);
    }
  }
  return null;
}

/** Bytes up to `cap`, remembering whether more arrived. */
class Capped {
  constructor(cap) {
    this.cap = cap;
    this.chunks = [];
    this.size = 0;
    this.truncated = false;
  }
  push(chunk) {
    const room = this.cap - this.size;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    if (part.length < chunk.length) this.truncated = true;
    this.chunks.push(part);
    this.size += part.length;
  }
  bytes() {
    return new Uint8Array(Buffer.concat(this.chunks));
  }
}

export class SshClient {
  /** @param {{sshConfig?: string}} options */
  constructor({ sshConfig } = {}) {
    this.sshConfig = sshConfig;
    this.dir = null;
  }

  /** Options shared by ssh and sftp. */
  options() {
    this.dir ??= controlDir();
    const o = [];
    if (this.sshConfig) o.push("-F", this.sshConfig);
    for (const opt of [
      "BatchMode=yes",
      "StrictHostKeyChecking=yes",
      "ConnectTimeout=20",
      "ServerAliveInterval=15",
      "ControlMaster=auto",
      `ControlPath=${this.dir}/%C`,
      `ControlPersist=${CONTROL_PERSIST_S}`,
    ]) o.push("-o", opt);
    return o;
  }

  /**
   * Run a program (ssh or sftp) to completion with bounded output.
   * @returns {Promise<{code: number|null, signal: string|null, stdout: Capped, stderr: Capped}>}
   */
  run(program, args, { input, inputFd, timeoutMs, cap = OUTPUT_CAP, signal, what, fds = [] }) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(err.connection(`${what}: cancelled before it started`));
        return;
      }
      // `fds`: open files the child gets as its fd 3, 4, ... (transfer.js
      // names local files by them, /proc/self/fd/N, so sftp reads and
      // writes exactly the files this process checked).
      // `inputFd`: an open file the child reads as its stdin, to its end
      // (an upload's bytes, streamed from the file this process checked).
      const child = spawn(program, args, { stdio: [inputFd ?? "pipe", "pipe", "pipe", ...fds] });
      const stdout = new Capped(cap);
      const stderr = new Capped(64 << 10);
      let outcome = null;
      const stop = (why) => {
        if (outcome) return;
        outcome = why;
        child.kill("SIGTERM");
        setTimeout(() => child.kill("SIGKILL"), 2000).unref();
      };
      const timer = setTimeout(() => stop("timeout"), timeoutMs);
      const onAbort = () => stop("cancelled");
      signal?.addEventListener("abort", onAbort, { once: true });
      child.stdout.on("data", (c) => stdout.push(c));
      child.stderr.on("data", (c) => stderr.push(c));
      if (child.stdin) {
        // A remote side that stops reading early is not our failure.
        child.stdin.on("error", () => {});
        child.stdin.end(input ? Buffer.from(input) : undefined);
      }
      child.on("error", (e) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        reject(err.connection(`${what}: cannot run ${program}: ${e.message}`));
      });
      child.on("close", (code, sig) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (outcome === "timeout") reject(err.timeout(`${what}: no answer within ${timeoutMs / 1000} s`));
        else if (outcome === "cancelled") reject(err.connection(`${what}: cancelled by the caller`));
        else resolve({ code, signal: sig, stdout, stderr });
      });
    });
  }

  /**
   * One command line (already checked and quoted by the grants) on a target.
   * Exit 255 with an OpenSSH failure message is a host-error; any other exit
   * is the remote command's own and belongs to the guest.
   */
  async exec(target, command, { stdin, stdinFd, timeoutMs, signal }) {
    const args = [...this.options(), "-T", "--", target, command];
    const r = await this.run("ssh", args, { input: stdin, inputFd: stdinFd, timeoutMs, signal, what: `ssh ${target}` });
    if (r.code === 255) {
      const failure = sshFailure(target, Buffer.concat(r.stderr.chunks));
      if (failure) throw failure;
    }
    return {
      exitCode: r.code ?? undefined,
      exitSignal: r.signal ?? undefined,
      stdout: r.stdout.bytes(),
      stderr: r.stderr.bytes(),
      stdoutTruncated: r.stdout.truncated,
      stderrTruncated: r.stderr.truncated,
    };
  }

  /**
   * An sftp batch (one command per line; see transfer.js for quoting), with
   * `fds` passed to sftp as its fd 3, 4, ...
   */
  async sftp(target, batch, { timeoutMs, signal, fds }) {
    const args = [...this.options(), "-q", "-b", "-", "--", target];
    const r = await this.run("sftp", args, { input: batch, timeoutMs, signal, fds, what: `sftp ${target}` });
    const stderr = Buffer.concat(r.stderr.chunks);
    if (r.code === 0) return;
    throw sshFailure(target, stderr)
      ?? err.remote(`sftp ${target}: ${stderr.toString("utf8").trim().split("\n").slice(-3).join(" / ") || `exit ${r.code}`}`);
  }
}

const clients = new Map();

/** One client per ssh_config file, shared by every call of this process. */
export function sshClient(sshConfig) {
  const key = sshConfig ?? "";
  if (!clients.has(key)) clients.set(key, new SshClient({ sshConfig }));
  return clients.get(key);
}
