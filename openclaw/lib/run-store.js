// The run store (ledger and rendered scripts) inside the workspace's
// localRunsDir, as in host/src/run_store.rs: paths confined by the grants,
// then reached from the opened workspace one real directory at a time
// (lib/local-fs.js); every write an atomic replace (a fresh file under an
// unpredictable name, created exclusively, fsync, rename, fsync of the
// directory), so a link planted at any name is replaced, never written
// through; and an exclusive lock for read-modify-write shared with the
// native host.

import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { show } from "./grants.js";
import * as err from "./host-error.js";
import * as lfs from "./local-fs.js";

export const MAX_FILE = 64 << 20;

/** A checked run-store path as [workspace fd, parent names, file name, shown path]. */
function place(grants, raw) {
  const full = grants.storePath(raw);
  const names = lfs.parts(path.relative(grants.workspace, full));
  const name = names.pop();
  let base;
  try {
    base = lfs.openBase(grants.workspace);
  } catch (e) {
    throw err.asLocalIo(e, grants.workspace);
  }
  return { base, names, name, full };
}

export function read(grants, raw) {
  const { base, names, name, full } = place(grants, raw);
  try {
    let dir;
    try {
      dir = lfs.walk(base, names, false);
    } catch (e) {
      if (e.code === "ENOENT") return undefined;
      throw e;
    }
    try {
      const bytes = lfs.readRegular(dir, name, MAX_FILE, full);
      return bytes === undefined ? undefined : new Uint8Array(bytes);
    } finally {
      fs.closeSync(dir);
    }
  } catch (e) {
    throw err.asLocalIo(e, full);
  } finally {
    fs.closeSync(base);
  }
}

export function write(grants, raw, contents) {
  if (contents.length > MAX_FILE) {
    throw err.denied(`run store file ${show(raw)} larger than ${MAX_FILE} bytes`);
  }
  const { base, names, name, full } = place(grants, raw);
  try {
    lfs.inDir(base, names, true, (dir) => lfs.replace(dir, name, contents));
  } catch (e) {
    throw err.asLocalIo(e, full);
  } finally {
    fs.closeSync(base);
  }
}

/** How long `lock` waits for another holder before giving up. */
export const LOCK_WAIT_S = 15;
const CONFLICT = 75;

/**
 * The lock file, opened here (created if missing, never truncated or
 * written): without following a link, without blocking on a FIFO, a regular
 * file only. A planted hard link changes nothing: it is only locked.
 */
export function openLockFile(dir, name) {
  for (let i = 0; ; i++) {
    try {
      return lfs.openRegular(dir, name, false)[0];
    } catch (e) {
      if (e.code !== "ENOENT" || i > 3) throw e;
    }
    try {
      return lfs.createNew(dir, name, 0o644);
    } catch (e) {
      // Made by another caller meanwhile: open that one.
      if (e.code !== "EEXIST") throw e;
    }
  }
}

/**
 * The exclusive lock of a run-store file, the one the native host takes:
 * flock(2) on `<path>.lock`. Node has no flock, so util-linux `flock` takes
 * it on the file this process opened (passed as its fd 3: a flock lock
 * belongs to the open file, which this process keeps open after `flock`
 * exits). Closing the file — at `unlock`, at the end of the call, or when
 * this process dies — releases it.
 * @param {Map<string, number>} held this call's locks (the open lock files)
 */
export async function lock(grants, held, raw) {
  if (held.has(raw)) return;
  const { base, names, name, full: lockPath } = place(grants, `${raw}.lock`);
  let fd;
  try {
    fd = lfs.inDir(base, names, true, (dir) => openLockFile(dir, name));
  } catch (e) {
    throw err.asLocalIo(e, lockPath);
  } finally {
    fs.closeSync(base);
  }
  try {
    const holder = spawn("flock", ["-w", String(LOCK_WAIT_S), "-E", String(CONFLICT), "3"], {
      stdio: ["ignore", "ignore", "pipe", fd],
    });
    const stderr = [];
    holder.stderr.on("data", (c) => stderr.push(c));
    await new Promise((resolve, reject) => {
      holder.once("error", (e) => reject(err.localIo(`${lockPath}: cannot run flock: ${e.message}`)));
      holder.once("close", (code) => {
        if (code === 0) resolve();
        else if (code === CONFLICT) reject(err.timeout(`${raw} stayed locked by another call for ${LOCK_WAIT_S} s (${lockPath})`));
        else reject(err.localIo(`${lockPath}: flock failed (${code}): ${Buffer.concat(stderr).toString().trim()}`));
      });
    });
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  held.set(raw, fd);
}

export function unlock(held, raw) {
  const fd = held.get(raw);
  held.delete(raw);
  if (fd !== undefined) fs.closeSync(fd);
}

export function unlockAll(held) {
  for (const raw of [...held.keys()]) unlock(held, raw);
}
