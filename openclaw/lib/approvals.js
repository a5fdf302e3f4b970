// The `approvals` import: operators' decisions on runs the guest held for
// approval, read from the native host's decisions file (written only by
// `cluster-slurm approve|reject`), the twin of host/src/approvals.rs.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as err from "./host-error.js";
import { readAll } from "./local-fs.js";

const MAX_RUN_ID = 256;
/** Decisions are a line each; a file this large is not ours (approvals.rs). */
const MAX_DECISIONS = 64 << 20;
const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;

/**
 * The decisions, read without following a symlink (a link planted there
 * could make any file's lines look like decisions) and without blocking on
 * a FIFO; a regular file only. Undefined while there is none.
 */
function readDecisions(file) {
  let fd;
  try {
    fd = fs.openSync(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (e) {
    if (e.code === "ENOENT") return undefined;
    if (e.code === "ELOOP") throw err.localIo(`reading ${file}: it is a symbolic link; the decisions are never read through one`);
    throw err.localIo(`reading ${file}: ${e.message}`);
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw err.localIo(`reading ${file}: not a regular file`);
    return readAll(fd, MAX_DECISIONS, file).toString("utf8");
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * `CLUSTER_SLURM_APPROVALS` if set, else `$XDG_STATE_HOME/cluster-slurm/approvals.jsonl`,
 * else under ~/.local/state (as the native host).
 */
export function defaultPath() {
  if (process.env.CLUSTER_SLURM_APPROVALS) return path.resolve(process.env.CLUSTER_SLURM_APPROVALS);
  const state = process.env.XDG_STATE_HOME || path.join(process.env.HOME || os.homedir(), ".local/state");
  return path.join(state, "cluster-slurm", "approvals.jsonl");
}

/**
 * The first decision on `runId` of `workspace` in the file at `file`, as the
 * WIT `decision` record, or undefined while there is none.
 */
export function lookup(file, workspace, runId) {
  if (typeof runId !== "string" || runId.length === 0 || Buffer.byteLength(runId) > MAX_RUN_ID) {
    throw err.denied(`${JSON.stringify(runId)} is not a run id (1 to ${MAX_RUN_ID} bytes)`);
  }
  const text = readDecisions(file);
  if (text === undefined) return undefined;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    let entry;
    try {
      entry = JSON.parse(lines[i]);
    } catch (e) {
      entry = undefined;
    }
    const valid =
      entry && typeof entry.workspace === "string" && typeof entry.runId === "string" &&
      typeof entry.decision === "string" && typeof entry.by === "string" && Number.isSafeInteger(entry.atMs) &&
      // As the native host: note and key may be missing, not of another type.
      ["note", "key"].every((k) => entry[k] === undefined || typeof entry[k] === "string");
    if (!valid) throw err.localIo(`${file} line ${i + 1}: not a decision; fix or remove that line`);
    if (entry.workspace === workspace && entry.runId === runId) {
      return {
        approved: entry.decision === "approved",
        by: entry.by,
        atMs: BigInt(entry.atMs),
        note: entry.note ?? "",
        key: entry.key ?? "",
      };
    }
  }
  return undefined;
}
