// remote-confine.js: the same cluster-side script as host/src/remote_confine.rs
// (byte for byte), and the built command run by a real local shell against a
// run directory a hostile job planted (as in host/src/remote_confine/tests.rs).
//
// Negative control (run once): with `inr` made a no-op and the symlink check
// removed from SCRIPT (the parity test then fails too), `tail -- p` printed
// the outside file's TOP-SECRET line here.

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";
import { SCRIPT, command, refusal } from "../lib/remote-confine.js";
import { tempDir } from "./helpers.js";

const here = path.dirname(fileURLToPath(import.meta.url));

test("the cluster-side script is the file the Rust host compiles in", () => {
  const rs = fs.readFileSync(path.join(here, "../../host/src/remote_confine.rs"), "utf8");
  assert.ok(rs.includes('include_str!("../../openclaw/lib/remote-confine.sh")'));
  assert.equal(SCRIPT, fs.readFileSync(path.join(here, "../lib/remote-confine.sh"), "utf8"));
  assert.ok(SCRIPT.startsWith("r=$1 p=$2 k=$3 cap=$4 n=$6\n") && SCRIPT.endsWith("exit 1\n"));
});

test("options that undo the confinement are refused", () => {
  const p = { label: "c", remoteRoot: "/scratch/u/runs" };
  for (const [prog, args] of [
    ["tail", ["-f", "--", "x"]], ["tail", ["-n", "5", "x"]], ["ls", ["-L", "--", "."]], ["ls", ["-1", "d"]],
    ["stat", ["-L", "--", "x"]], ["sha256sum", ["-c", "--", "s"]], ["tail", ["--", "a", "b"]], ["tail", ["--", "/etc/passwd"]],
  ]) {
    assert.throws(() => command(p, prog, args, null), (e) => e.tag === "denied", `${prog} ${args}`);
  }
});

test("planted links, devices and FIFOs are refused on the cluster", (t) => {
  const base = fs.realpathSync(tempDir(t));
  const root = path.join(base, "runs");
  const r1 = path.join(root, "r1");
  fs.mkdirSync(r1, { recursive: true });
  fs.mkdirSync(path.join(base, "outside"));
  fs.writeFileSync(path.join(base, "outside/secret"), "TOP-SECRET\n");
  fs.writeFileSync(path.join(r1, "x.out"), "line1\nline2\n");
  fs.symlinkSync(path.join(base, "outside/secret"), path.join(r1, "p"));
  fs.symlinkSync(path.join(base, "outside"), path.join(r1, "s"));
  fs.symlinkSync("/dev/zero", path.join(r1, "z"));
  execFileSync("mkfifo", [path.join(r1, "f")]);
  const p = { label: "c", remoteRoot: root };
  const run = (prog, args, cwd) => {
    const r = spawnSync("timeout", ["20", "bash", "-c", command(p, prog, args, cwd)]);
    return { code: r.status, stdout: r.stdout.toString(), denied: refusal(p, prog, args, cwd, r.status, r.stderr) };
  };
  assert.equal(run("tail", ["-n", "1", "--", "x.out"], r1).stdout, "line2\n");
  for (const [prog, args, cwd, why] of [
    ["tail", ["-n", "5", "--", "p"], r1, "is a symlink"],
    ["tail", ["-c", "+1", "--", "z"], r1, "is a symlink"],
    ["tail", ["-n", "5", "--", "f"], r1, "is not a regular file"],
    ["tail", ["-n", "5", "--", "s/secret"], r1, "resolves outside remoteRoot"],
    ["ls", ["-1", "--", "."], path.join(r1, "s"), "remote working directory"],
  ]) {
    const got = run(prog, args, cwd);
    assert.ok(!got.stdout.includes("TOP-SECRET"), `${prog} ${args}: ${got.stdout}`);
    assert.ok((got.denied ?? "").includes(why), `${prog} ${args}: ${got.denied} (exit ${got.code})`);
  }
});
