// The run store (ledger and rendered scripts) inside the workspace's
// localRunsDir, as in host/src/run_store.rs: paths confined by the grants,
// every write an atomic replace (temporary file, fsync, rename), and an
// exclusive lock for read-modify-write shared with the native host.

import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { show } from "./grants.js";
import * as err from "./host-error.js";

export const MAX_FILE = 64 << 20;
let counter = 0;

export function read(grants, raw) {
  const full = grants.storePath(raw);
  try {
    return new Uint8Array(fs.readFileSync(full));
  } catch (e) {
    if (e.code === "ENOENT") return undefined;
    throw err.asLocalIo(e, full);
  }
}

export function write(grants, raw, contents) {
  if (contents.length > MAX_FILE) {
    throw err.denied(`run store file ${show(raw)} larger than ${MAX_FILE} bytes`);
  }
  const dir = path.dirname(grants.storePath(raw));
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw err.asLocalIo(e, dir);
  }
  // Checked again now that the directories exist.
  const full = grants.storePath(raw);
  const tmp = path.join(dir, `.${path.basename(full)}.tmp-${process.pid}-${counter++}`);
  try {
    const fd = fs.openSync(tmp, "wx", 0o644);
    try {
      fs.writeFileSync(fd, contents);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, full);
    const dfd = fs.openSync(dir, "r");
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw err.asLocalIo(e, full);
  }
}

/** How long `lock` waits for another holder before giving up. */
export const LOCK_WAIT_S = 15;
const CONFLICT = 75;

/**
 * The exclusive lock of a run-store file, the one the native host takes:
 * flock(2) on `<path>.lock`. Node has no flock, so a small holder process
 * (util-linux `flock` running `cat`) keeps it until its stdin closes — at
 * `unlock`, at the end of the call, or when this process dies.
 * @param {Map<string, import("node:child_process").ChildProcess>} held this call's locks
 */
export async function lock(grants, held, raw) {
  if (held.has(raw)) return;
  const lockPath = grants.storePath(`${raw}.lock`);
  try {
    fs.mkdirSync(path.dirname(lockPath), { recursive: true });
  } catch (e) {
    throw err.asLocalIo(e, path.dirname(lockPath));
  }
  const holder = spawn("flock", ["-w", String(LOCK_WAIT_S), "-E", String(CONFLICT), lockPath, "sh", "-c", "echo locked; exec cat"], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  const stderr = [];
  holder.stderr.on("data", (c) => stderr.push(c));
  holder.stdin.on("error", () => {});
  await new Promise((resolve, reject) => {
    holder.stdout.once("data", resolve);
    holder.once("error", (e) => reject(err.localIo(`${lockPath}: cannot run flock: ${e.message}`)));
    holder.once("exit", (code) => reject(code === CONFLICT
      ? err.timeout(`${raw} stayed locked by another call for ${LOCK_WAIT_S} s (${lockPath})`)
      : err.localIo(`${lockPath}: flock failed (${code}): ${Buffer.concat(stderr).toString().trim()}`)));
  });
  held.set(raw, holder);
}

export function unlock(held, raw) {
  held.get(raw)?.stdin.end();
  held.delete(raw);
}

export function unlockAll(held) {
  for (const raw of [...held.keys()]) unlock(held, raw);
}
