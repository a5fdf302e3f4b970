// The WIT `host-error` variant as jco expects it from an import: a thrown
// plain `{tag, val}` object becomes `result::err`, so the guest sees a typed
// error and decides. A thrown `Error` is a trap, reserved for host bugs
// (docs/architecture.md, "Errors across the boundary").

const variant = (tag) => (message) => ({ tag, val: String(message) });

export const denied = variant("denied");
export const unknownCluster = variant("unknown-cluster");
export const authFailed = variant("auth-failed");
export const hostKeyMismatch = variant("host-key-mismatch");
export const hostKeyUnknown = variant("host-key-unknown");
export const timeout = variant("timeout");
export const connection = variant("connection");
export const remote = variant("remote");
export const localIo = variant("local-io");

const TAGS = new Set([
  "denied", "unknown-cluster", "auth-failed", "host-key-mismatch", "host-key-unknown",
  "timeout", "connection", "remote", "local-io",
]);

/** Whether `e` is a host-error value (as opposed to a JS exception). */
export function isHostError(e) {
  return e !== null && typeof e === "object" && !(e instanceof Error) && TAGS.has(e.tag)
    && typeof e.val === "string";
}

/** A local file-system failure as `local-io`, keeping host-errors as they are. */
export function asLocalIo(e, what) {
  if (isHostError(e)) return e;
  if (e && typeof e.code === "string") return localIo(`${what}: ${e.message}`);
  throw e;
}
