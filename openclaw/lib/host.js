// One tool call's host: the guest's imports, each checked by the grants
// before any side effect (the checkpoint of host/src/exec.rs, transfer.rs,
// run_store.rs and approvals.rs), over the system OpenSSH client.

import path from "node:path";
import * as approvals from "./approvals.js";
import { sftpPath } from "./grants.js";
import * as err from "./host-error.js";
import { refusal } from "./remote-confine.js";
import * as runStore from "./run-store.js";
import { DEFAULT_TIMEOUT_MS, MAX_STDIN, MAX_TIMEOUT_MS } from "./ssh.js";
import * as transfer from "./transfer.js";

/** Long transfers get the longest exec timeout, not the default minute. */
const TRANSFER_TIMEOUT_MS = MAX_TIMEOUT_MS;

/**
 * A checked local path as transfer.js takes it: relative to the workspace,
 * which it opens and walks from (never the absolute path again).
 */
const inWorkspace = (grants, full) => ({ base: grants.workspace, rel: path.relative(grants.workspace, full) });

/**
 * @param {import("./grants.js").Grants} grants
 * @param {import("./ssh.js").SshClient} client
 * @param {AbortSignal | undefined} signal the tool call's, if the caller gave one
 * @param {string} approvalsFile where `cluster-slurm approve|reject` keeps decisions
 * @param {{maxDownloadBytes?: number}} hostConfig the config's `host` settings
 *   transfers need (host.maxDownloadBytes; default remote-transfer.js's)
 */
export function callHost(grants, client, signal, approvalsFile = approvals.defaultPath(), hostConfig = {}) {
  const held = new Map();
  // The remote side of every transfer is held to the profile's root as the
  // cluster resolves it (remote-transfer.js); the host sets these, never the guest.
  const transferOpts = (profile) => ({
    timeoutMs: TRANSFER_TIMEOUT_MS,
    signal,
    root: sftpPath(profile.remoteRoot),
    maxDownloadBytes: hostConfig.maxDownloadBytes,
  });
  return {
    /** Not an import: the end of the call releases what it still holds. */
    releaseAll() {
      runStore.unlockAll(held);
    },
    async exec(request) {
      const profile = grants.profile(request.cluster);
      const command = grants.execCommand(profile, request.program, request.args, request.cwd);
      if (request.stdin && request.stdin.length > MAX_STDIN) {
        throw err.denied(`stdin larger than ${MAX_STDIN} bytes`);
      }
      const timeoutMs = Math.min(request.timeoutMs ?? DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS);
      const out = await client.exec(profile.sshTarget, command, { stdin: request.stdin, timeoutMs, signal });
      // The cluster-side half of the checkpoint (remote-confine.js) refused.
      const why = refusal(profile, request.program, request.args, request.cwd, out.exitCode, out.stderr);
      if (why !== null) throw err.denied(why);
      return out;
    },
    async upload(cluster, localPath, remotePath) {
      const profile = grants.profile(cluster);
      const remote = sftpPath(grants.remotePath(profile, remotePath));
      const local = inWorkspace(grants, grants.localSource(localPath));
      return transfer.upload(client, profile.sshTarget, local, remote, transferOpts(profile));
    },
    async uploadAll(cluster, items) {
      const profile = grants.profile(cluster);
      // Every item is checked before anything moves.
      const checked = items.map(({ localPath, remotePath }) => ({
        local: inWorkspace(grants, grants.localSource(localPath)),
        remote: sftpPath(grants.remotePath(profile, remotePath)),
      }));
      // No two items onto one place, nor one inside another (transfer.rs).
      const seen = new Set();
      for (const { remote } of checked) {
        if (seen.has(remote)) throw err.denied(`two items of one upload would write ${remote} (also ${remote}); each needs a place of its own`);
        seen.add(remote);
      }
      for (const { remote } of checked) {
        for (let at = remote; at.includes("/"); ) {
          at = at.slice(0, at.lastIndexOf("/"));
          if (seen.has(at)) throw err.denied(`two items of one upload would write ${remote} (also ${at}); each needs a place of its own`);
        }
      }
      const stats = [];
      for (const { local, remote } of checked) {
        stats.push(await transfer.upload(client, profile.sshTarget, local, remote, transferOpts(profile)));
      }
      return stats;
    },
    async download(cluster, remotePath, localPath) {
      const profile = grants.profile(cluster);
      const remote = sftpPath(grants.remotePath(profile, remotePath));
      const local = inWorkspace(grants, grants.localDestination(localPath));
      return transfer.download(client, profile.sshTarget, remote, local, transferOpts(profile));
    },
    async read(path) {
      return runStore.read(grants, path);
    },
    async write(path, contents) {
      runStore.write(grants, path, contents);
    },
    async lock(path) {
      await runStore.lock(grants, held, path);
    },
    async unlock(path) {
      runStore.unlock(held, path);
    },
    location() {
      return grants.runsDirDisplay;
    },
    lookup(runId) {
      return approvals.lookup(approvalsFile, grants.workspace, runId);
    },
  };
}
