// The run store (ledger and rendered scripts) inside the workspace's
// localRunsDir, as in host/src/run_store.rs: paths confined by the grants,
// every write an atomic replace (temporary file, fsync, rename).

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
