// What the SLURM programs may be told: the JavaScript twin of
// host/src/slurm_args.rs, with the same rules and the same messages.
//
// The guest takes job ids from the ledger, a file the agent can edit; an id
// of `--me` would make `scancel` cancel every job of the account. So scancel
// takes job ids and only options that act on the named jobs (an allowlist:
// --me, --user, --account, --partition, --state, --name, ... are refused),
// squeue/sacct `-j` lists are job ids, sbatch always gets `--` before its one
// script, and scontrol may only `show`.

import { show } from "./grants.js";

const showList = (list) => `[${list.map(show).join(", ")}]`;

/** Digits, optionally `_<task>`, optionally `.<step>` (all digits). */
export function isJobId(id) {
  return /^[0-9]{1,12}(_[0-9]{1,9})?(\.[0-9]{1,9})?$/.test(id);
}

const isJobList = (list) => list.split(",").every(isJobId);

/** Throws a message string when `args` are refused for `program`. */
export function checkSlurmArgs(program, args) {
  switch (program) {
    case "scancel": return scancel(args);
    case "squeue": case "sacct": return jobLists(program, args);
    case "sbatch": return sbatch(args);
    case "scontrol": return scontrol(args);
    default: return null;
  }
}

const SCANCEL_FLAGS = ["--batch", "-b", "--full", "-f", "--quiet", "-Q"];

function checkSignal(signal) {
  if (!/^[A-Za-z0-9]{1,16}$/.test(signal)) return `scancel signal ${show(signal)} is not a signal name or number`;
  return null;
}

function scancel(args) {
  let ids = 0;
  let optionsDone = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    let bad = null;
    if (optionsDone || !arg.startsWith("-")) {
      if (!isJobId(arg)) return `scancel argument ${show(arg)} is not a SLURM job id (digits, optionally _<task> and .<step>)`;
      ids++;
    } else if (arg === "--") {
      optionsDone = true;
    } else if (SCANCEL_FLAGS.includes(arg)) {
      // acts on the named jobs only
    } else if (arg.startsWith("--signal=")) {
      bad = checkSignal(arg.slice("--signal=".length));
    } else if (arg === "-s" || arg === "--signal") {
      i++;
      bad = checkSignal(i < args.length ? args[i] : "");
    } else if (arg.startsWith("-s")) {
      bad = checkSignal(arg.slice(2));
    } else {
      return `scancel option ${show(arg)} is not allowed: only job ids, --signal, --batch, --full and --quiet are (options such as --me, --user, --account, --partition, --state or --name would cancel jobs nobody named)`;
    }
    if (bad !== null) return bad;
  }
  if (ids === 0) return "scancel needs at least one job id";
  return null;
}

function jobLists(program, args) {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") break;
    let list = null;
    // getopt_long takes any unambiguous prefix of a long option, so `--jo`
    // is `--jobs` too (slurm_args.rs is_jobs_prefix).
    const eq = arg.indexOf("=");
    const longName = arg.startsWith("--") ? arg.slice(2, eq < 0 ? undefined : eq) : null;
    const jobsLong = longName !== null && longName !== "" && "jobs".startsWith(longName);
    if (arg === "-j" || (jobsLong && eq < 0)) {
      i++;
      list = i < args.length ? args[i] : "";
    } else if (jobsLong) {
      list = arg.slice(eq + 1);
    } else if (arg.startsWith("-j")) {
      list = arg.slice(2);
    } else if (!arg.startsWith("--") && arg.startsWith("-") && arg.includes("j")) {
      return `${program} argument ${show(arg)}: give -j on its own, followed by the job ids`;
    }
    if (list !== null && !isJobList(list)) {
      return `${program} job list ${show(list)} is not a list of SLURM job ids (digits, optionally _<task> and .<step>, separated by commas)`;
    }
  }
  return null;
}

function sbatch(args) {
  const i = args.indexOf("--");
  if (i < 0) return 'sbatch needs "--" before the script name (so the name is never read as an option)';
  if (args.length - i > 2) return `sbatch takes one script after "--", not ${showList(args.slice(i + 1))}`;
  return null;
}

function scontrol(args) {
  let k = 0;
  while (k < args.length && ["-o", "--oneliner", "-d", "--details"].includes(args[k])) k++;
  const words = args.slice(k);
  const plain = (w) => w.length > 0 && !w.startsWith("-") && /^[A-Za-z0-9_.-]+$/.test(w);
  const ok = words[0] === "show" && words.length >= 2 && words.length <= 3
    && plain(words[1]) && (words.length === 2 || plain(words[2]) || isJobId(words[2]));
  if (ok) return null;
  return `scontrol ${showList(args)} is not allowed: only \`scontrol [-o] [-d] show ENTITY [NAME]\``;
}
