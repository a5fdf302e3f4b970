// lib/host.js (the guest's imports) against host/src/capability_tests.rs:
// every refused request comes back as a typed {tag, val} value and never
// reaches the SSH client; allowed ones reach it exactly as checked. Plus a
// hostile guest trying everything out of policy, and the run store.

import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { callHost } from "../lib/host.js";
import { MAX_FILE } from "../lib/run-store.js";
import { DEFAULT_TIMEOUT_MS, MAX_STDIN, MAX_TIMEOUT_MS } from "../lib/ssh.js";
import { assertRefusal, grantsFor, recordingClient, sftpCalls, tempDir, atRoot, inDir, writeCalls } from "./helpers.js";
import { command as confined } from "../lib/remote-confine.js";

/** capability_tests.rs `setup`: a workspace with input.txt and profile c. */
function setup(t, clientOptions) {
  const ws = tempDir(t);
  fs.writeFileSync(path.join(ws, "input.txt"), "data");
  const grants = grantsFor(ws, { clusters: { c: { sshTarget: "login", remoteRoot: "/scratch/u/runs" } } });
  const client = recordingClient(clientOptions);
  return { ws, grants, client, host: callHost(grants, client, undefined) };
}

/** capability_tests.rs `request`. */
const request = (cluster, program, args, cwd) => ({ cluster, program, args, cwd, stdin: undefined, timeoutMs: undefined });

/** Await `promise`, which must reject with a host-error of kind `tag`. */
async function refused(promise, tag, message) {
  await assert.rejects(promise, (e) => assertRefusal(e, tag, message));
}

/**
 * The two commands that upload `input.txt` (mode 644) to `rel` below the
 * root word `root` (lib/remote-transfer.js, as writeCall shows them): its
 * directory made inside the root, then the file written by the command
 * that checks where it writes.
 */
function uploadCalls(root, rel) {
  const parts = rel.split("/");
  const name = parts.pop();
  return [[root, `( w ${parts.join("/") || "''"} ) || exit $?;`], [root, `p ${parts.join("/") || "''"} ${name} 0 u644`]];
}

test("rs refused_execs_never_reach_the_transport", async (t) => {
  const { host, client } = setup(t);
  const cases = [
    [request("other", "squeue", [], undefined), "unknown-cluster"],
    [request("c", "sh", ["-c", "id"], undefined), "denied"],
    [request("c", "tail", ["/etc/shadow"], undefined), "denied"],
    [request("c", "tail", ["../../.ssh/id_ed25519"], undefined), "denied"],
    [request("c", "sbatch", ["--chdir=/home/u", "job.slurm"], undefined), "denied"],
    [request("c", "sbatch", ["job.slurm"], "/tmp"), "denied"],
    [request("c", "sbatch", ["a\nb"], undefined), "denied"],
  ];
  for (const [req, kind] of cases) await refused(host.exec(req), kind);
  assert.deepEqual(client.calls, [], "refused requests reached the transport");

  const out = await host.exec(request("c", "sbatch", ["--parsable", "--", "job.slurm"], "r1"));
  assert.equal(new TextDecoder().decode(out.stdout), "ok");
  assert.deepEqual(
    client.calls.map((c) => [c.kind, c.target, c.command]),
    [["exec", "login", inDir("/scratch/u/runs", "/scratch/u/runs/r1", "exec sbatch --parsable -- job.slurm")]],
  );
});

test("rs refused_transfers_never_reach_the_transport", async (t) => {
  const { ws, host, client } = setup(t);
  const outside = tempDir(t, "outside");
  fs.symlinkSync(outside, path.join(ws, "escape"));
  await refused(host.upload("c", "input.txt", "/etc/cron.d/x"), "denied");
  await refused(host.upload("c", "../x", "r1/x"), "denied");
  await refused(host.upload("c", "escape", "r1/x"), "denied");
  await refused(host.upload("nope", "input.txt", "r1/x"), "unknown-cluster");
  await refused(host.download("c", "/home/u/.ssh/id_rsa", "k"), "denied");
  await refused(host.download("c", "r1/result.json", "escape/result.json"), "denied");
  await refused(host.download("c", "r1/result.json", "/tmp/x"), "denied");
  // One bad item of several: refused before any of them moves.
  await refused(
    host.uploadAll("c", [
      { localPath: "input.txt", remotePath: "r1/input.txt" },
      { localPath: "input.txt", remotePath: "/etc/cron.d/x" },
    ]),
    "denied",
  );
  await refused(
    host.uploadAll("c", [
      { localPath: "input.txt", remotePath: "r1/data" },
      { localPath: "input.txt", remotePath: "r1/data/x" },
    ]),
    "denied",
  );
  assert.deepEqual(client.calls, []);

  const all = await host.uploadAll("c", [{ localPath: "input.txt", remotePath: "r1/copy.txt" }]);
  assert.equal(all.length, 1);
  assert.equal(writeCalls(client).filter(([, w]) => w.startsWith("p ")).length, 1);
  client.calls.length = 0;

  await host.upload("c", "input.txt", "r1/input.txt");
  // The checked local file (ssh reads it as stdin) and the normalised remote path.
  assert.deepEqual(writeCalls(client), uploadCalls("/scratch/u/runs", "r1/input.txt"));
  assert.ok(client.calls.every((c) => c.kind === "exec" && c.target === "login"));
  assert.equal(typeof client.calls[1].opts.stdinFd, "number");
  assert.deepEqual(fs.readdirSync(outside), []);
});

test("rs run_store_is_confined_and_atomic", async (t) => {
  const { ws, host } = setup(t);
  const enc = (s) => new TextEncoder().encode(s);
  assert.equal(await host.read("runs.json"), undefined);
  await host.write("runs.json", enc('{"runs":{}}\n'));
  await host.write("r1/job.slurm", enc("#!/bin/bash\n"));
  assert.deepEqual(await host.read("runs.json"), enc('{"runs":{}}\n'));
  assert.equal(fs.readFileSync(path.join(ws, ".openclaw/cluster-runs/r1/job.slurm"), "utf8"), "#!/bin/bash\n");
  for (const bad of ["../../x", "/etc/passwd", "r1/../../x"]) await refused(host.write(bad, enc("x")), "denied");
  // No temporary files are left behind.
  assert.deepEqual(fs.readdirSync(path.join(ws, ".openclaw/cluster-runs")).sort(), ["r1", "runs.json"]);
  assert.equal(host.location(), ".openclaw/cluster-runs");
});

// ---------------------------------------------------------------------------
// A hostile guest: everything out of policy, nothing reaches the client
// ---------------------------------------------------------------------------

test("a hostile guest cannot make the host spawn anything outside policy", async (t) => {
  const { ws, grants, host, client } = setup(t);
  const outside = tempDir(t, "outside");
  fs.writeFileSync(path.join(outside, "secret"), "s");
  fs.symlinkSync(outside, path.join(ws, "escape"));
  fs.symlinkSync(path.join(outside, "secret"), path.join(ws, "secret-link"));
  fs.writeFileSync(path.join(ws, "result.json"), "mine");
  fs.symlinkSync(path.join(outside, "planted"), path.join(ws, "planted"));
  const runs = grants.runsDir();
  fs.mkdirSync(runs, { recursive: true });
  fs.symlinkSync(outside, path.join(runs, "evil"));
  fs.symlinkSync(path.join(outside, "secret"), path.join(runs, "ledger.json"));

  const execs = [
    // Not a profile (including names an object would inherit).
    [request("other", "squeue", [], undefined), "unknown-cluster"],
    [request("__proto__", "squeue", [], undefined), "unknown-cluster"],
    [request("constructor", "squeue", [], undefined), "unknown-cluster"],
    // Not an allowed program, however it is spelled.
    [request("c", "bash", ["-c", "id"], undefined), "denied"],
    [request("c", "/bin/sh", [], undefined), "denied"],
    [request("c", "squeue; id", [], undefined), "denied"],
    [request("c", "PATH=/tmp", ["ls"], undefined), "denied"],
    [request("c", "-oProxyCommand=id", [], undefined), "denied"],
    // Arguments that name paths outside the root, or smuggle lines.
    [request("c", "sbatch", ["--output=/etc/x", "job.slurm"], undefined), "denied"],
    [request("c", "sbatch", ["-o/etc/x", "job.slurm"], undefined), "denied"],
    [request("c", "tail", ["~/x"], undefined), "denied"],
    [request("c", "tail", ["~root/.ssh/id_rsa"], undefined), "denied"],
    [request("c", "tail", ["a/../b"], undefined), "denied"],
    [request("c", "tail", ["../../../etc/passwd"], undefined), "denied"],
    [request("c", "squeue", ["-u", "me\nid"], undefined), "denied"],
    [request("c", "squeue", ["x\r"], undefined), "denied"],
    [request("c", "squeue", ["x\0y"], undefined), "denied"],
    // A working directory outside the root.
    [request("c", "ls", [], "/"), "denied"],
    [request("c", "ls", [], "~"), "denied"],
    [request("c", "ls", [], "r1/../.."), "denied"],
    // More stdin than the host accepts.
    [{ ...request("c", "sbatch", ["job.slurm"], "r1"), stdin: new Uint8Array(MAX_STDIN + 1) }, "denied"],
  ];
  for (const [req, kind] of execs) await refused(host.exec(req), kind);

  const uploads = [
    ["nope", "input.txt", "r1/x", "unknown-cluster"],
    ["c", "input.txt", "/etc/cron.d/x", "denied"],
    ["c", "input.txt", "~/.ssh/authorized_keys", "denied"],
    ["c", "input.txt", "r1/../../x", "denied"],
    ["c", "input.txt", "r1/x\ny", "denied"],
    ["c", "/etc/passwd", "r1/x", "denied"],
    ["c", "../x", "r1/x", "denied"],
    ["c", "escape", "r1/x", "denied"],
    ["c", "escape/secret", "r1/x", "denied"],
    ["c", "secret-link", "r1/x", "denied"],
    ["c", "missing", "r1/x", "denied"],
  ];
  for (const [cluster, local, remote, kind] of uploads) await refused(host.upload(cluster, local, remote), kind);

  const downloads = [
    ["nope", "r1/x", "x", "unknown-cluster"],
    ["c", "/home/u/.ssh/id_rsa", "k", "denied"],
    ["c", "~root/x", "k", "denied"],
    ["c", "r1/../../x", "k", "denied"],
    ["c", "r1/x", "/tmp/x", "denied"],
    ["c", "r1/x", "../x", "denied"],
    ["c", "r1/x", "escape/x", "denied"],
    ["c", "r1/x", "secret-link", "denied"],
    ["c", "r1/x", "planted", "denied"],
  ];
  for (const [cluster, remote, local, kind] of downloads) await refused(host.download(cluster, remote, local), kind);

  const bytes = new TextEncoder().encode("x");
  for (const bad of ["../../x", "/etc/passwd", "r1/../../x", "", "evil/x", "ledger.json"]) {
    await refused(host.read(bad), "denied");
    await refused(host.write(bad, bytes), "denied");
  }
  await refused(host.write("big", new Uint8Array(MAX_FILE + 1)), "denied");

  assert.deepEqual(client.calls, [], "a refused request reached the SSH client");
  // Nothing was written outside, nor over the workspace's own files.
  assert.deepEqual(fs.readdirSync(outside), ["secret"]);
  assert.equal(fs.readFileSync(path.join(outside, "secret"), "utf8"), "s");
  assert.equal(fs.readFileSync(path.join(ws, "result.json"), "utf8"), "mine");
  assert.deepEqual(fs.readdirSync(runs).sort(), ["evil", "ledger.json"]);
});

test("an allowed exec reaches the client exactly as checked", async (t) => {
  const { grants, host, client } = setup(t);
  // A second host over the same grants and client, for a tool call's signal.
  const signal = new AbortController().signal;
  const withSignal = callHost(grants, client, signal);
  const stdin = new TextEncoder().encode("#!/bin/bash\necho hi\n");
  await host.exec({ ...request("c", "sbatch", ["--parsable", "--job-name=a b", "--", "job.slurm"], "r1"), stdin });
  await host.exec(request("c", "squeue", ["-o", "%i|%T"], undefined));
  await withSignal.exec({ ...request("c", "tail", ["-n", "5", "--", "x.out"], "r1"), timeoutMs: 5_000 });
  await host.exec({ ...request("c", "sacct", [], undefined), timeoutMs: 10 * MAX_TIMEOUT_MS });
  assert.deepEqual(client.calls.map((c) => [c.kind, c.target, c.command]), [
    ["exec", "login", inDir("/scratch/u/runs", "/scratch/u/runs/r1", "exec sbatch --parsable '--job-name=a b' -- job.slurm")],
    ["exec", "login", atRoot("/scratch/u/runs", "exec squeue -o '%i|%T'")],
    ["exec", "login", confined(grants.profile("c"), "tail", ["-n", "5", "--", "x.out"], "/scratch/u/runs/r1")],
    ["exec", "login", atRoot("/scratch/u/runs", "exec sacct")],
  ]);
  // stdin passes through; timeouts default, and are capped, as in exec.rs.
  assert.deepEqual(client.calls.map((c) => c.opts), [
    { stdin, timeoutMs: DEFAULT_TIMEOUT_MS, signal: undefined },
    { stdin: undefined, timeoutMs: DEFAULT_TIMEOUT_MS, signal: undefined },
    { stdin: undefined, timeoutMs: 5_000, signal },
    { stdin: undefined, timeoutMs: MAX_TIMEOUT_MS, signal: undefined },
  ]);
});

test("allowed transfers reach the client with checked paths", async (t) => {
  // The stand-in sftp lands downloads where the batch says.
  const land = (batch) => {
    const m = /^get -R -p (\S+) (\S+)\n$/.exec(batch);
    if (m) fs.writeFileSync(m[2], `remote ${m[1]}`);
  };
  const { ws, host, client } = setup(t, { onSftp: land });
  const stats = await host.upload("c", "input.txt", "/scratch/u/runs/r1//input.txt");
  assert.deepEqual(stats, { files: 1, bytes: 4n });
  const got = await host.download("c", "r1/result.json", "downloads/r1/result.json");
  assert.deepEqual(got, { files: 1, bytes: BigInt("remote /scratch/u/runs/r1/result.json".length) });
  assert.equal(fs.readFileSync(path.join(ws, "downloads/r1/result.json"), "utf8"), "remote /scratch/u/runs/r1/result.json");
  // The upload's two commands decide on the cluster (lib/remote-transfer.js);
  // the download is checked there first, then sftp reads.
  assert.deepEqual(client.calls.map((c) => c.kind), ["exec", "exec", "exec", "sftp"]);
  assert.deepEqual(writeCalls(client), uploadCalls("/scratch/u/runs", "r1/input.txt"));
  assert.equal(client.calls[2].opts.stdin, "/scratch/u/runs\n/scratch/u/runs/r1/result.json\n");
  const sftp = sftpCalls(client);
  // Staged outside the workspace (the host's state directory), then moved in.
  assert.match(sftp[0].batch, /^get -R -p \/scratch\/u\/runs\/r1\/result\.json \S+\/cluster-slurm-download-\w+\/x\n$/);
  assert.ok(!sftp[0].batch.includes(ws), "staged inside the workspace");
  assert.ok(client.calls.every((c) => c.target === "login"));
  // The staging directory is gone.
  assert.deepEqual(fs.readdirSync(path.join(ws, "downloads/r1")), ["result.json"]);
});

test("home roots: sftp paths are relative to the login home", async (t) => {
  const ws = tempDir(t);
  fs.writeFileSync(path.join(ws, "input.txt"), "data");
  const grants = grantsFor(ws, { clusters: { h: { sshTarget: "login", remoteRoot: "~/runs" } } });
  const client = recordingClient();
  const host = callHost(grants, client, undefined);
  await host.upload("h", "input.txt", "r1/input.txt");
  await host.exec(request("h", "squeue", [], "~/runs/r1"));
  await refused(host.upload("h", "input.txt", "~/other/x"), "denied");
  assert.deepEqual(writeCalls(client), uploadCalls('"$HOME"/runs', "r1/input.txt"));
  assert.deepEqual(client.calls.slice(2).map((c) => c.command), [inDir('"$HOME"/runs', '"$HOME"/runs/r1', "exec squeue")]);
  assert.equal(client.calls.length, 3);
});
