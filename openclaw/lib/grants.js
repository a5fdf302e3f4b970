// What the operator grants, and the one checkpoint every guest request passes
// before any side effect: the JavaScript twin of host/src/grants.rs, with the
// same rules and the same messages, so one .wasm gets the same answers from
// both hosts.
//
// Deny by default, fail closed:
// - only profiles in the operator's config exist (anything else is
//   unknown-cluster; an empty config grants nothing);
// - remote paths are the profile's remoteRoot or below it, written without
//   `.`/`..` segments and without `~` (except as the root's own prefix);
// - remote commands are an allowlisted program plus arguments; an argument
//   that names a path obeys the remote path rule, and every command runs with
//   its working directory inside remoteRoot; SLURM programs' identifiers and
//   options are checked per program (slurm-args.js: job ids only, no option
//   that widens scancel, sbatch's script last, right after `--`); a value
//   glued to a short option (`-D..`, `-o../x`) counts as a path too;
// - local paths are workspace-relative and must resolve inside the workspace
//   by realpath; destinations are never written through a symlink; the run
//   store is confined to localRunsDir.
//
// The host reads sshTarget and remoteRoot from the config itself rather than
// trusting the guest's validation: policy code that is wrong or hostile still
// cannot widen what is granted here.

import fs from "node:fs";
import path from "node:path";
import util from "node:util";
import { denied, unknownCluster } from "./host-error.js";
import { checkSlurmArgs } from "./slurm-args.js";
import { neverWritten } from "./local-fs.js";
import { command as confinedCommand } from "./remote-confine.js";

export const ALLOWED_PROGRAMS = [
  "sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo",
  "mkdir", "tail", "head", "ls", "stat", "sha256sum",
];

// Rust's char::is_control (the Cc category) and char::is_whitespace (the
// White_Space property: NEL yes, BOM no) — not JS's `\s` and `trim()`.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const WHITESPACE = "\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
const HAS_WHITESPACE = new RegExp(`[${WHITESPACE}]`);
const EDGE_WHITESPACE = new RegExp(`^[${WHITESPACE}]+|[${WHITESPACE}]+$`, "g");
const trim = (s) => s.replace(EDGE_WHITESPACE, "");

/** A string quoted as Rust's `{:?}` does, so both hosts word refusals alike. */
export function show(s) {
  const escaped = Array.from(String(s), (c) => {
    switch (c) {
      case "\0": return "\\0";
      case "\t": return "\\t";
      case "\r": return "\\r";
      case "\n": return "\\n";
      case "\\": return "\\\\";
      case '"': return '\\"';
      default:
        return /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cn}]|(?! )\p{Zs}/u.test(c)
          ? `\\u{${c.codePointAt(0).toString(16)}}`
          : c;
    }
  });
  return `"${escaped.join("")}"`;
}

/** An OS error worded as Rust's io::Error shows it ("Not a directory (os error 20)"). */
function osError(e) {
  if (typeof e?.errno !== "number") return String(e?.message ?? e);
  const text = util.getSystemErrorMessage(e.errno);
  return `${text.charAt(0).toUpperCase()}${text.slice(1)} (os error ${Math.abs(e.errno)})`;
}

/** A config problem found when the grants are read (not a guest refusal). */
export class GrantError extends Error {
  constructor(message) {
    super(message);
    this.name = "GrantError";
  }
}

/** `raw` as clean relative segments (no `..`, not absolute), or null. */
function relativeClean(raw) {
  if (typeof raw !== "string" || raw.startsWith("/")) return null;
  const parts = [];
  for (const seg of raw.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") return null;
    parts.push(seg);
  }
  return parts.length ? parts.join("/") : null;
}

/** Path `p` equals `base` or lies below it (both absolute and normalised). */
function within(p, base) {
  return p === base || p.startsWith(base.endsWith("/") ? base : `${base}/`);
}

export class Grants {
  /**
   * @param {object} config the plugin config (the `host` section removed)
   * @param {string} workspaceDir the directory local paths are relative to
   */
  constructor(config, workspaceDir) {
    let workspace;
    try {
      workspace = fs.realpathSync(workspaceDir);
    } catch (e) {
      throw new GrantError(`workspace ${workspaceDir}: ${osError(e)}`);
    }
    const rawRuns = config.localRunsDir ?? ".openclaw/cluster-runs";
    if (typeof rawRuns !== "string") throw new GrantError("localRunsDir must be a string");
    const runsDir = trim(rawRuns);
    if (relativeClean(runsDir) === null || runsDir.startsWith("~")) {
      throw new GrantError(`localRunsDir ${show(runsDir)} must be a relative path inside the workspace`);
    }
    const profiles = new Map();
    const clusters = config.clusters === undefined ? {} : config.clusters;
    if (clusters === null || typeof clusters !== "object" || Array.isArray(clusters)) {
      throw new GrantError("clusters must be an object");
    }
    for (const [rawLabel, profile] of Object.entries(clusters)) {
      const label = trim(rawLabel);
      if (!label) continue;
      const text = (key) => {
        const v = profile?.[key];
        if (typeof v === "string" && trim(v)) return trim(v);
        throw new GrantError(`clusters.${label}.${key} is required and must be a string`);
      };
      const sshTarget = text("sshTarget");
      if (sshTarget.startsWith("-") || HAS_WHITESPACE.test(sshTarget) || CONTROL.test(sshTarget)) {
        throw new GrantError(`clusters.${label}.sshTarget ${show(sshTarget)} is not a host name or alias`);
      }
      const remoteRoot = text("remoteRoot");
      const root = remoteRoot.replace(/\/+$/, "");
      const homeForm = root === "~" || root.startsWith("~/");
      const ok = (remoteRoot.startsWith("/") || homeForm)
        && root !== ""
        && !root.split("/").some((s) => s === "." || s === "..")
        && !root.includes("//")
        && !CONTROL.test(root);
      if (!ok) {
        throw new GrantError(
          `clusters.${label}.remoteRoot ${show(remoteRoot)} must be an absolute path or ~/dir, without '.', '..' or empty ('//') segments (and not / itself)`,
        );
      }
      profiles.set(label, { label, sshTarget, remoteRoot: root });
    }
    this.workspace = workspace;
    /** @type {string[]} files downloads may not write (see protect) */
    this.protected = [];
    this.runsDirDisplay = runsDir;
    this.profiles = profiles;
    this.programs = [...ALLOWED_PROGRAMS];
  }

  profile(label) {
    const p = this.profiles.get(label);
    if (!p) throw unknownCluster(`no cluster profile named ${show(label)} is configured on this host`);
    return p;
  }

  /** A remote path, normalised, under the profile's root. */
  remotePath(profile, raw) {
    const root = profile.remoteRoot;
    if (raw.startsWith("~") && !(raw === "~" || raw.startsWith("~/"))) {
      throw denied(`remote path ${show(raw)}: only ~/... (the login user's home) is understood`);
    }
    if (CONTROL.test(raw)) throw denied(`remote path ${show(raw)} contains control characters`);
    const full = raw.startsWith("/") || raw.startsWith("~") ? raw : `${root}/${raw}`;
    const prefix = full.startsWith("~") ? "~" : "";
    const rest = prefix ? full.slice(1) : full;
    const parts = [];
    for (const seg of rest.split("/")) {
      if (seg === "") continue;
      if (seg === "." || seg === "..") {
        throw denied(`remote path ${show(raw)} may not contain '.' or '..' segments`);
      }
      parts.push(seg);
    }
    const normalized = prefix === "~" && parts.length === 0 ? "~" : `${prefix}/${parts.join("/")}`;
    if (normalized === root || normalized.startsWith(`${root}/`)) return normalized;
    throw denied(`remote path ${show(raw)} is outside remoteRoot ${root} of profile ${show(profile.label)}`);
  }

  /** Check an exec request and build the one command line sent over SSH. */
  execCommand(profile, program, args, cwd) {
    if (!this.programs.includes(program)) {
      throw denied(`program ${show(program)} is not on this host's allowlist (${this.programs.join(", ")})`);
    }
    for (const arg of args) {
      if (/[\n\r\0]/.test(arg)) throw denied(`argument ${show(arg)} contains a line break or NUL`);
      for (const value of pathParts(arg)) {
        if (value.startsWith("~")) throw denied(`argument ${show(arg)}: '~' paths are not allowed`);
        if (value.split("/").includes("..")) throw denied(`argument ${show(arg)} may not contain '..' path segments`);
        if (value.startsWith("/")) this.remotePath(profile, value);
      }
    }
    // Program-specific rules last, as in grants.rs (slurm-args.js).
    const refused = checkSlurmArgs(program, args);
    if (refused !== null) throw denied(refused);
    const dir = cwd !== undefined && cwd !== null ? this.remotePath(profile, cwd) : null;
    // The paths' text is checked above; what they are is decided on the cluster.
    return confinedCommand(profile, program, args, dir);
  }

  /** An existing local file or directory to read (an upload source). */
  localSource(raw) {
    const rel = relativeClean(raw);
    if (rel === null) throw denied(`local path ${show(raw)} must be relative to the workspace, without '..'`);
    let real;
    try {
      real = fs.realpathSync(path.join(this.workspace, rel));
    } catch (e) {
      throw denied(`local path ${show(raw)}: ${osError(e)}`);
    }
    if (!within(real, this.workspace)) {
      throw denied(`local path ${show(raw)} resolves to ${real} outside the workspace ${this.workspace}`);
    }
    return real;
  }

  /**
   * A local path to write under `base` (the workspace or the run store): the
   * nearest existing ancestor must resolve inside `base`, and the final
   * component, if it exists, must not be a symlink.
   */
  destinationUnder(base, raw, what) {
    const rel = relativeClean(raw);
    if (rel === null) throw denied(`${what} ${show(raw)} must be a relative path without '..'`);
    const target = path.join(base, rel);
    const placed = resolvedPlace(target);
    if (this.protected.some((p) => within(p, placed))) {
      throw denied(`${what} ${show(raw)} is one of the host's own records (the audit log or the approval decisions) or holds one; refusing to write it`);
    }
    let meta = null;
    try {
      meta = fs.lstatSync(target);
    } catch {
      meta = null;
    }
    if (meta?.isSymbolicLink()) throw denied(`${what} ${show(raw)} is a symlink; refusing to write through it`);
    // While `base` does not exist yet (a fresh run store), its nearest
    // existing ancestor must still be inside the workspace.
    let bound;
    try {
      bound = fs.realpathSync(base);
    } catch {
      bound = this.workspace;
    }
    for (let a = path.dirname(target); ; a = path.dirname(a)) {
      if (fs.existsSync(a)) {
        let real;
        try {
          real = fs.realpathSync(a);
        } catch (e) {
          throw denied(`${what} ${show(raw)}: ${osError(e)}`);
        }
        if (!within(real, bound) || !within(real, this.workspace)) {
          throw denied(`${what} ${show(raw)} resolves outside ${base}`);
        }
        return target;
      }
      if (a === path.dirname(a)) break;
    }
    throw denied(`${what} ${show(raw)} has no existing parent directory`);
  }

  /** Never let a download write `file` (compared by resolved location). */
  protect(file) {
    this.protected.push(resolvedPlace(file));
  }

  /**
   * A download's destination: inside the workspace, never through a symlink,
   * and never in the run store (the ledger and the rendered scripts are the
   * guest's record, written only through `run-store`), never inside a name
   * from NEVER_WRITTEN (lib/local-fs.js).
   */
  localDestination(raw) {
    const never = typeof raw === "string" ? neverWritten(raw) : undefined;
    if (never) {
      throw denied(`local path ${show(raw)} is inside ${never}: the host never writes version-control metadata or direnv files (they run code); download elsewhere`);
    }
    const target = this.destinationUnder(this.workspace, raw, "local path");
    const store = resolvedPlace(this.runsDir());
    const placed = resolvedPlace(target);
    if (within(placed, store) || within(store, placed)) {
      throw denied(`local path ${show(raw)} is (or holds) the run store ${show(this.runsDirDisplay)}; download elsewhere`);
    }
    return target;
  }

  runsDir() {
    return path.join(this.workspace, this.runsDirDisplay);
  }

  storePath(raw) {
    return this.destinationUnder(this.runsDir(), raw, "run store path");
  }
}

/**
 * Where `file` is, made absolute and with its nearest existing ancestor
 * resolved (symlinks and all); the rest need not exist yet (grants.rs
 * `resolved_place`).
 */
function resolvedPlace(file) {
  const rest = [];
  let at = path.resolve(file);
  for (;;) {
    try {
      return path.join(fs.realpathSync(at), ...rest.reverse());
    } catch {
      const parent = path.dirname(at);
      if (parent === at) return path.resolve(file);
      rest.push(path.basename(at));
      at = parent;
    }
  }
}

/** One shell word: bare when it is safe, else single-quoted. */
export function quoteWord(word) {
  if (word !== "" && /^[A-Za-z0-9_./=:,%@+-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'"'"'`)}'`;
}

/** A command line with every word quoted; a program word with `=` is always
 * quoted (the shell would read it as an assignment). */
export function quoteCommand(program, args) {
  const head = program.includes("=") ? `'${program.replaceAll("'", `'"'"'`)}'` : quoteWord(program);
  return [head, ...args.map(quoteWord)].join(" ");
}

/** A checked remote path for the remote shell: `~` becomes "$HOME", which
 * the shell expands (a quoted `~` would not be). */
export function shellPath(p) {
  if (p === "~") return '"$HOME"';
  if (p.startsWith("~")) return `"$HOME"/${quoteWord(p.slice(1).replace(/^\/+/, ""))}`;
  return quoteWord(p);
}

/** A checked remote path for SFTP, whose relative paths start at the login
 * user's home: `~/x` is `x`, `~` is `.`. */
export function sftpPath(p) {
  if (p === "~") return ".";
  if (p.startsWith("~")) return p.slice(1).replace(/^\/+/, "");
  return p;
}

/** The parts of an argument that could be read as a path (grants.rs
 * path_parts): the whole word, an option's `=value` (else the text from its
 * first `/`: `-o/x`), and for a single-dash word every value a glued short option
 * could take: after `-` and a run of option letters, the rest (`-D..`,
 * `-o../x`, `-D~`, `-hD..`). */
export function pathParts(arg) {
  const values = [];
  if (arg.startsWith("-") && !arg.startsWith("--")) {
    const chars = Array.from(arg.slice(1));
    let at = 1;
    for (const c of chars) {
      if (!/^[A-Za-z0-9]$/.test(c)) break;
      at += c.length;
      values.push(arg.slice(at));
    }
  }
  if (arg.startsWith("-")) {
    const eq = arg.indexOf("=");
    const slash = arg.indexOf("/");
    if (eq >= 0) values.push(arg.slice(eq + 1));
    else if (slash >= 0) values.push(arg.slice(slash));
  } else values.push(arg);
  return values.filter((v) => v.includes("/") || v.startsWith("~") || v === "..");
}
