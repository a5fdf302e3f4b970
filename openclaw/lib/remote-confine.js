// Remote confinement by what paths are, not how they read: the JavaScript
// twin of host/src/remote_confine.rs (the same script file,
// remote-confine.sh, which the Rust host compiles in; same shapes, same
// messages). The command line decides on the cluster, in the
// command that uses the path: the root and the working directory resolved
// physically (`cd -P`), the one path operand walked under the root with no
// symlink as its last component, regular files only for tail/head/sha256sum
// (read through a checked descriptor), every read capped with `head -c` and
// timed with coreutils `timeout` when present. A refusal on the cluster exits
// REFUSED_EXIT with a MARKER line; refusal() turns it into the denial text.

import { readFileSync } from "node:fs";
import { denied } from "./host-error.js";
import { quoteCommand, quoteWord, shellPath, show } from "./grants.js";

export const REFUSED_EXIT = 90;
export const MARKER = "cluster-slurm-confine: ";
/** The exec output cap of ssh.js and host/src/exec.rs. */
export const OUTPUT_CAP = 1 << 20;
export const READ_BOUND_S = 30;
export const HASH_BOUND_S = 600;

/** The cluster-side script, one file for both hosts (host/src/remote_confine.rs explains it). */
export const SCRIPT = readFileSync(new URL("./remote-confine.sh", import.meta.url), "utf8");

/**
 * `cs_root_ok PATH` (remote_confine.rs ROOT_CHECK, the same file): no
 * component of PATH is a symlink in a directory the cluster user can write,
 * so a job cannot swap the root itself for `ln -s / cluster-runs`.
 */
export const ROOT_CHECK = readFileSync(new URL("./remote-root.sh", import.meta.url), "utf8").trimEnd();

/** ROOT_CHECK, then the check of the shell word `root`, failing with `fail`. */
export function rootCheck(root, fail) {
  return `${ROOT_CHECK}; cs_root_ok ${root} || { ${fail}; };`;
}

/** The refusal when remoteRoot passes through a link a job could replace (remote_confine.rs). */
export function rootLinkRefusal(root) {
  return `remoteRoot ${root} passes through a symbolic link in a directory the cluster user can write: a job could point it anywhere, so nothing was done there. Set remoteRoot to the real path it resolves to (or replace the link by the directory)`;
}

const ALLOWED = {
  tail: "-n N, -c N or -c +N",
  head: "-n N, -c N",
  ls: "-1AabdFhilnprStU flags, --time-style=..., --quoting-style=...",
  stat: "-c FORMAT, --format=..., --printf=..., -t",
  sha256sum: "-b, -t, --tag, -z",
  mkdir: "-p",
};

const isCount = (v, plus) => /^[0-9]{1,18}$/.test(plus && v.startsWith("+") ? v.slice(1) : v);

/** The kind word for the script, or null for a program with only the cwd check. */
function shape(program, options) {
  if (!(program in ALLOWED)) return null;
  const bad = (opt) => denied(`${program} option ${show(opt)} is not allowed here (allowed: ${ALLOWED[program]}; the one path operand goes after --)`);
  let kind = { tail: "file", head: "file", sha256sum: "file", ls: "list", stat: "entry", mkdir: "mkdir" }[program];
  for (let i = 0; i < options.length; i++) {
    const opt = options[i];
    let ok = false;
    if ((program === "tail" || program === "head") && (opt === "-n" || opt === "-c")) {
      const value = options[++i];
      if (value === undefined) throw bad(opt);
      if (!isCount(value, program === "tail")) throw bad(`${opt} ${value}`);
      ok = true;
    } else if (program === "stat" && opt === "-c") {
      ok = options[++i] !== undefined;
    } else if (program === "stat") {
      ok = opt === "-t" || opt.startsWith("--format=") || opt.startsWith("--printf=");
    } else if (program === "sha256sum") {
      ok = ["-b", "-t", "--tag", "-z"].includes(opt);
    } else if (program === "ls") {
      ok = opt.startsWith("--time-style=") || opt.startsWith("--quoting-style=") || /^-[1AabdFhilnprStU]+$/.test(opt);
    } else if (program === "mkdir" && opt === "-p") {
      kind = "mkdirp";
      ok = true;
    }
    if (!ok) throw bad(opt);
  }
  return kind;
}

function plan(profile, program, args) {
  const split = args.indexOf("--");
  const options = split < 0 ? args : args.slice(0, split);
  const kind = shape(program, options);
  if (kind === null) return null;
  const operands = split < 0 ? [] : args.slice(split + 1);
  if (operands.length !== 1) throw denied(`${program} takes exactly one path operand, after -- (got ${operands.length})`);
  const [operand] = operands;
  const root = profile.remoteRoot;
  let fromRoot = false;
  let rest = operand;
  if (operand.startsWith("/") && operand.startsWith(root) && (operand.length === root.length || operand[root.length] === "/")) {
    fromRoot = true;
    rest = operand.slice(root.length);
  } else if (operand.startsWith("/") || operand.startsWith("~")) {
    throw denied(`remote path ${show(operand)} is outside remoteRoot ${root} of profile ${show(profile.label)}`);
  }
  const parts = [];
  for (const seg of rest.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") throw denied(`argument ${show(operand)} may not contain '..' path segments`);
    parts.push(seg);
  }
  return { kind, options, fromRoot, parts, bound: program === "sha256sum" ? HASH_BOUND_S : READ_BOUND_S };
}

/** The one command line for a checked request (cwd checked, or null for the root). */
export function command(profile, program, args, cwd) {
  const p = plan(profile, program, args);
  let run;
  if (p === null) run = `exec ${quoteCommand(program, args)}`;
  else {
    const words = [program, p.kind, String(OUTPUT_CAP + 1), p.fromRoot ? "r" : ".", String(p.parts.length), ...p.parts, ...p.options];
    run = `if command -v timeout >/dev/null 2>&1; then set -- timeout -k 5 ${p.bound}; else set --; fi; exec "$@" /bin/sh -c ${quoteWord(SCRIPT)} cs "$cs_r" ${words.map(quoteWord).join(" ")}`;
  }
  const root = shellPath(profile.remoteRoot);
  const check = rootCheck(root, `printf '%s\\n' '${MARKER}rootlink' >&2; exit ${REFUSED_EXIT}`);
  const dir = cwd !== null && cwd !== undefined ? shellPath(cwd) : '"$cs_r/"';
  return `${check} ${enterRoot(root)} cd -P -- ${dir} && cs_h=$(cs_pwd; printf x) && cs_h=\${cs_h%?x} && case $cs_h in "$cs_r"|"$cs_r"/*) ${run};; *) printf '%s\\n' '${MARKER}cwd' >&2; exit ${REFUSED_EXIT};; esac`;
}

/**
 * `$cs_r`: the root (its shell word) as it resolves, walked from `/` in this
 * very command (`cs_root_real` of remote-root.sh, made where missing;
 * remote_confine.rs `enter_root`): a root resolved with `cd -P` after its
 * check could be a link a job exchanged for it in between.
 */
export function enterRoot(root) {
  return `cs_r=$(cs_root_real ${root}) || { [ $? = 2 ] && { printf '%s\\n' '${MARKER}rootlink' >&2; exit ${REFUSED_EXIT}; }; printf '%s\\n' 'remoteRoot cannot be made or entered on the cluster' >&2; exit 1; }; cs_r=\${cs_r%?x}; cs_r=\${cs_r%/};`;
}

/** The denial text when the cluster refused (exit REFUSED_EXIT and a MARKER line), else null. */
export function refusal(profile, program, args, cwd, exitCode, stderr) {
  if (exitCode !== REFUSED_EXIT) return null;
  const line = Buffer.from(stderr ?? []).toString("utf8").split("\n").find((l) => l.startsWith(MARKER));
  if (line === undefined) return null;
  const reason = line.slice(MARKER.length).trim();
  const root = profile.remoteRoot;
  const at = args.indexOf("--");
  const operand = at >= 0 && at + 1 < args.length ? args[at + 1] : ".";
  let place = operand;
  if (!operand.startsWith("/")) place = cwd !== null && cwd !== undefined ? `${cwd}/${operand}` : `${root}/${operand}`;
  const q = show(place);
  switch (reason) {
    case "rootlink":
      return rootLinkRefusal(root);
    case "cwd":
      return `remote working directory ${show(cwd ?? root)} resolves outside remoteRoot ${root} on the cluster (a symlink on its way leads out of it)`;
    case "outside":
      return `remote path ${q} resolves outside remoteRoot ${root} on the cluster (a directory on its way is a symlink leading out of it)`;
    case "symlink":
      return `remote path ${q} is a symlink: ${program} never follows one on the cluster (it could lead outside remoteRoot ${root})`;
    case "notfile":
      return `remote path ${q} is not a regular file (a directory, device, FIFO or socket): ${program} reads regular files only`;
    case "changed":
      return `remote path ${q} was replaced while ${program} opened it (by a symlink or another file); nothing was read`;
    default:
      return `remote path ${q} refused on the cluster (${reason})`;
  }
}
