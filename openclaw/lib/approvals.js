// The `approvals` import: operators' decisions on runs the guest held for
// approval, read from the native host's decisions file (written only by
// `cluster-slurm approve|reject`), the twin of host/src/approvals.rs.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as err from "./host-error.js";

const MAX_RUN_ID = 256;

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
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if (e.code === "ENOENT") return undefined;
    throw err.localIo(`reading ${file}: ${e.message}`);
  }
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
