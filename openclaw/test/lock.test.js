// The run store's lock (lib/run-store.js): flock(2) on `<path>.lock`, taken
// by util-linux `flock` on the file Node opened and held by that open file,
// as the native host holds it (host/src/run_store.rs).

import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { lock, unlock, unlockAll } from "../lib/run-store.js";
import { assertRefusal, grantsFor, tempDir } from "./helpers.js";

const NO_CLUSTERS = {};

/** Whether another process could take the lock now (flock -n). */
function freeForOthers(file) {
  return spawnSync("flock", ["-n", file, "true"]).status === 0;
}

test("a held lock blocks every other holder until it is released", async (t) => {
  const ws = tempDir(t);
  const grants = grantsFor(ws, NO_CLUSTERS);
  const first = new Map();
  const second = new Map();
  await lock(grants, first, "runs.json");
  await lock(grants, first, "runs.json"); // held by this call already: no self-deadlock
  const file = path.join(ws, ".openclaw/cluster-runs/runs.json.lock");
  assert.equal(freeForOthers(file), false, "another process got the lock");

  let acquired = false;
  const waiting = lock(grants, second, "runs.json").then(() => {
    acquired = true;
  });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(acquired, false, "the lock was taken twice");
  unlock(first, "runs.json");
  await waiting;
  assert.equal(acquired, true);
  unlockAll(second);
  // Closing the lock file releases the lock.
  for (let i = 0; i < 50 && !freeForOthers(file); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(freeForOthers(file), true, "the lock outlived unlockAll");
});

test("lock paths are confined like every run-store path", async (t) => {
  const ws = tempDir(t);
  const grants = grantsFor(ws, NO_CLUSTERS);
  for (const bad of ["../x", "/etc/passwd", "a/../../x"]) {
    let refusal;
    try {
      await lock(grants, new Map(), bad);
    } catch (e) {
      refusal = e;
    }
    assertRefusal(refusal, "denied");
  }
  assert.deepEqual(fs.readdirSync(ws), [], "a refused lock created something");
});
