// The guest component (transpiled by jco into ../wasm, see ../build.sh) and
// the imports this host gives it: our four capabilities, checked by the
// grants, plus the WASI basics of ./wasi.js — no files, no sockets.

import fs from "node:fs";
import { instantiate } from "../wasm/cluster_slurm.js";
import { WASI_IMPORTS } from "./wasi.js";

const WASM_DIR = new URL("../wasm/", import.meta.url);
const compiled = new Map();

/** Compile each core module once per process; instances are per call. */
function coreModule(name) {
  if (!compiled.has(name)) compiled.set(name, new WebAssembly.Module(fs.readFileSync(new URL(name, WASM_DIR))));
  return compiled.get(name);
}

/**
 * A fresh guest instance (about 12 ms): jco serialises calls on one
 * instance, so concurrent tool calls each get their own.
 * @param {{exec: Function, upload: Function, download: Function, read: Function, write: Function, location: Function, lookup: Function}} host
 */
export function newGuest(host) {
  const imports = {
    ...WASI_IMPORTS,
    // jco's instantiation mode reads the import object under unversioned keys.
    "openclaw:cluster-slurm/types": {},
    "openclaw:cluster-slurm/ssh-exec": { exec: host.exec },
    "openclaw:cluster-slurm/transfer": { upload: host.upload, uploadAll: host.uploadAll, download: host.download },
    "openclaw:cluster-slurm/run-store": {
      read: host.read, write: host.write, lock: host.lock, unlock: host.unlock, location: host.location,
    },
    "openclaw:cluster-slurm/approvals": { lookup: host.lookup },
  };
  return instantiate(coreModule, imports).tool;
}

/** Imports for describe() and check-config, which never reach them. */
const NO_HOST = Object.fromEntries(
  ["exec", "upload", "uploadAll", "download", "read", "write", "lock", "unlock", "lookup"].map((f) => [f, async () => {
    throw { tag: "denied", val: `${f} is not available here` };
  }]),
);
NO_HOST.location = () => ".openclaw/cluster-runs";

export function describe() {
  return newGuest(NO_HOST).describe();
}

export async function checkConfig(config) {
  return newGuest(NO_HOST).checkConfig(JSON.stringify(config));
}
