// The approvals import of the OpenClaw entry (lib/approvals.js), against
// decisions in the format `cluster-slurm approve|reject` writes
// (host/src/approvals.rs), and the guard that keeps downloads off the file.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { lookup } from "../lib/approvals.js";
import { assertRefusal, grantsFor, tempDir, thrown } from "./helpers.js";

const line = (o) => `${JSON.stringify(o)}\n`;

test("a decision is found by workspace and run; the first one counts", (t) => {
  const dir = tempDir(t, "state");
  const file = path.join(dir, "approvals.jsonl");
  assert.equal(lookup(file, "/w/one", "r1"), undefined, "no file yet: pending");
  fs.writeFileSync(
    file,
    line({ workspace: "/w/two", runId: "r1", decision: "rejected", by: "ops", atMs: 1, note: "" }) +
      line({ workspace: "/w/one", runId: "r1", decision: "approved", by: "ops", atMs: 1771426900000, note: "ok", key: "k1" }) +
      line({ workspace: "/w/one", runId: "r1", decision: "rejected", by: "late", atMs: 2 }),
  );
  assert.deepEqual(lookup(file, "/w/one", "r1"), { approved: true, by: "ops", atMs: 1771426900000n, note: "ok", key: "k1" });
  assert.equal(lookup(file, "/w/two", "r1").approved, false);
  assert.equal(lookup(file, "/w/one", "r2"), undefined);
});

test("a damaged file and a bad run id are typed errors, not guesses", (t) => {
  const file = path.join(tempDir(t, "state"), "approvals.jsonl");
  fs.writeFileSync(file, '{"not": "a decision"}\n');
  assertRefusal(thrown(() => lookup(file, "/w", "r")), "local-io", /line 1: not a decision/);
  // A key of another type is damage too (the native host refuses it as well).
  fs.writeFileSync(file, JSON.stringify({ workspace: "/w", runId: "r", decision: "approved", by: "ops", atMs: 1, key: 7 }) + "\n");
  assertRefusal(thrown(() => lookup(file, "/w", "r")), "local-io", /line 1: not a decision/);
  // Missing note and key are empty, as there.
  fs.writeFileSync(file, JSON.stringify({ workspace: "/w", runId: "r", decision: "approved", by: "ops", atMs: 1 }) + "\n");
  assert.deepEqual(lookup(file, "/w", "r"), { approved: true, by: "ops", atMs: 1n, note: "", key: "" });
  assertRefusal(thrown(() => lookup(file, "/w", "")), "denied");
  assertRefusal(thrown(() => lookup(file, "/w", "x".repeat(300))), "denied");
});

test("downloads may not overwrite the decisions, even inside the workspace", (t) => {
  const ws = tempDir(t);
  const grants = grantsFor(ws);
  grants.protect(path.join(ws, "approvals.jsonl"));
  assertRefusal(thrown(() => grants.localDestination("approvals.jsonl")), "denied", /host's own records/);
  assert.ok(grants.localDestination("results.json").endsWith("results.json"));
  // Also where its directory does not exist yet.
  grants.protect(path.join(ws, "state", "approvals.jsonl"));
  assertRefusal(thrown(() => grants.localDestination("state/approvals.jsonl")), "denied", /host's own records/);
  assertRefusal(thrown(() => grants.localDestination("state")), "denied", /host's own records/);
});

test("downloads may not write into the run store", (t) => {
  const grants = grantsFor(tempDir(t));
  for (const into of [".openclaw/cluster-runs/runs.json", ".openclaw/cluster-runs", ".openclaw"]) {
    assertRefusal(thrown(() => grants.localDestination(into)), "denied", /run store/);
  }
});
