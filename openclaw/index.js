// OpenClaw entry of the cluster-slurm plugin: the same guest .wasm as the
// native host (`cluster-slurm`), inside OpenClaw's Node process. The guest
// holds all policy; this file and lib/ are the host: the operator's grants,
// the system OpenSSH client, the run store.
//
// OpenClaw require()s this module and calls register() synchronously, so
// nothing here awaits at the top level: the guest is instantiated
// synchronously (jco -I sync) and describes the tool; each call then runs in
// a fresh instance whose SSH imports suspend it (JSPI) without blocking the
// gateway's event loop.

import os from "node:os";
import path from "node:path";
import { defaultPath as approvalsPath } from "./lib/approvals.js";
import { Grants, GrantError } from "./lib/grants.js";
import { checkConfig, describe, newGuest } from "./lib/guest.js";
import { callHost } from "./lib/host.js";
import { DEFAULT_MAX_DOWNLOAD_BYTES } from "./lib/remote-transfer.js";
import { sshClient } from "./lib/ssh.js";

const TOOL = "cluster_slurm";

/**
 * Split the plugin config into what the guest validates and the `host`
 * section only a host reads (as in the native host's config file).
 */
const HOST_KEYS = ["sshConfig", "workspace", "auditLog", "connectionsPerMinute", "approvals", "maxDownloadBytes"];

export function splitConfig(raw) {
  const { host: section, ...plugin } = raw ?? {};
  if (section !== undefined && section !== null && (typeof section !== "object" || Array.isArray(section))) {
    throw new GrantError("host must be an object");
  }
  const host = section ?? {};
  const expand = (key) => {
    const v = host[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string" || !v.trim()) throw new GrantError(`host.${key} must be a path`);
    const p = v.trim().replace(/^~(?=$|\/)/, os.homedir());
    if (!path.isAbsolute(p)) throw new GrantError(`host.${key} ${JSON.stringify(v)} must be an absolute path (or ~/...)`);
    return p;
  };
  const unknown = Object.keys(host).find((k) => !HOST_KEYS.includes(k));
  if (unknown) throw new GrantError(`host.${unknown}: unknown key (allowed: ${HOST_KEYS.join(", ")})`);
  // auditLog and connectionsPerMinute are the native host's (`cluster-slurm
  // mcp`): this entry keeps no audit log yet, and OpenSSH's ControlMaster
  // already holds one connection per target. Checked, so a typo is caught.
  const audit = host.auditLog;
  if (audit !== undefined && audit !== null && audit !== false && audit !== true) expand("auditLog");
  const perMinute = host.connectionsPerMinute;
  if (perMinute !== undefined && perMinute !== null && !(Number.isInteger(perMinute) && perMinute >= 1 && perMinute <= 1000)) {
    throw new GrantError("host.connectionsPerMinute must be a whole number from 1 to 1000");
  }
  // File content one download call may bring (host/src/operator.rs, confine.rs).
  const maxBytes = host.maxDownloadBytes;
  if (maxBytes !== undefined && maxBytes !== null && !(Number.isSafeInteger(maxBytes) && maxBytes >= 1)) {
    throw new GrantError(`host.maxDownloadBytes must be a whole number of bytes, at least 1 (the default is ${DEFAULT_MAX_DOWNLOAD_BYTES})`);
  }
  return {
    plugin,
    sshConfig: expand("sshConfig"),
    workspace: expand("workspace"),
    approvals: expand("approvals"),
    // Unset: remote-transfer.js's default.
    maxDownloadBytes: maxBytes ?? undefined,
  };
}

const KIND_TEXT = {
  "invalid-config": "invalid config",
  "invalid-request": "invalid request",
  policy: "refused by policy",
  "remote-failed": "remote command failed",
};

/** The guest's typed error as the native MCP server reports it. */
export function errorResult(payload) {
  const { tag, val } = payload;
  const kind = tag === "host" ? val.tag : tag;
  const message = tag === "host" ? `${val.tag}: ${val.val}` : `${KIND_TEXT[tag] ?? tag}: ${val}`;
  return {
    content: [{ type: "text", text: message }],
    details: { status: "error", kind, error: message },
  };
}

/** Run one request through a fresh guest; every outcome is a tool result. */
export async function runTool(rawConfig, workspaceDir, params, signal) {
  let grants;
  let split;
  try {
    split = splitConfig(rawConfig);
    grants = new Grants(split.plugin, split.workspace ?? workspaceDir);
  } catch (e) {
    if (e instanceof GrantError) return errorResult({ tag: "invalid-config", val: e.message });
    throw e;
  }
  // As the native host: CLUSTER_SLURM_APPROVALS overrides the config.
  const approvals = process.env.CLUSTER_SLURM_APPROVALS
    ? approvalsPath()
    : (split.approvals ?? approvalsPath());
  grants.protect(approvals);
  const host = callHost(grants, sshClient(split.sshConfig), signal, approvals, { maxDownloadBytes: split.maxDownloadBytes });
  const guest = newGuest(host);
  try {
    const text = await guest.invoke(JSON.stringify(split.plugin), JSON.stringify(params ?? {}));
    return { content: [{ type: "text", text }], details: JSON.parse(text) };
  } catch (e) {
    // A typed tool-error; anything else is a host bug and stays an exception.
    if (e && typeof e === "object" && "payload" in e && e.payload?.tag) return errorResult(e.payload);
    throw e;
  } finally {
    host.releaseAll();
  }
}

export default {
  id: "cluster-slurm",
  name: "Cluster SLURM",
  description: "Run reproducible SLURM jobs on configured clusters over SSH; all policy in a sandboxed WebAssembly component.",
  register(api) {
    const tool = describe();
    const parameters = JSON.parse(tool.parametersSchema);
    const rawConfig = api.pluginConfig ?? {};
    // register() cannot wait: report a bad config in the log now; every
    // call reports it again as an invalid-config result.
    let split = null;
    try {
      split = splitConfig(rawConfig);
    } catch (e) {
      api.logger?.error?.(`cluster-slurm: ${e.message}`);
    }
    if (split) {
      checkConfig(split.plugin).catch((e) => {
        const p = e?.payload;
        api.logger?.error?.(`cluster-slurm: ${p ? errorResult(p).details.error : e}`);
      });
    }
    api.registerTool(
      (ctx) => ({
        name: tool.name,
        label: tool.label,
        description: tool.description,
        parameters,
        execute: (_toolCallId, params, signal) =>
          runTool(rawConfig, ctx?.workspaceDir ?? api.config?.agents?.defaults?.workspace ?? process.cwd(), params, signal),
      }),
      { name: TOOL, optional: true },
    );
  },
};
