// What the SLURM programs may be told: the JavaScript twin of
// host/src/slurm_args.rs, with the same rules and the same messages.
//
// The guest takes job ids from the ledger, a file the agent can edit; an id
// of `--me` would make `scancel` cancel every job of the account. So scancel
// takes job ids and only options that act on the named jobs (an allowlist:
// --me, --user, --account, --partition, --state, --name, ... are refused),
// squeue/sacct `-j` lists are job ids wherever they stand (no word ends the
// check, not even `--`: in `squeue -o -- -j X` the `-o` eats it), sbatch's
// script is its last word, right after `--`, not starting with `-`, and no
// word before that `--` can be read as the script (see sbatch below), and
// scontrol may only `show`.

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
    // Every word, after a `--` too (slurm_args.rs job_lists).
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

// sbatch (host/src/slurm_args/sbatch.rs has the full reasoning):
// - an option can eat the `--` (`sbatch -J -- --wrap=id` submitted `id` on
//   the testbed), so the script is the last word, right after `--`, and does
//   not start with `-`: whether or not the `--` was eaten, it is then the
//   first operand;
// - sbatch's getopt string starts with `+`: parsing stops at the first word
//   that is neither an option nor an option's value, and that word becomes
//   the script (`sbatch --parsable foo -- job.slurm` ran `foo`). So a bare
//   word before the `--` must be an option's value in every reading. Arity
//   comes from SLURM's option table (src/common/slurm_opt.c, the options
//   whose arity is the same in 22.05 and 25.x); any other option (newer,
//   abbreviated, unknown char) is read both ways.
// With `--` last there is no script: sbatch reads it from stdin.

/** Long options that take the next word when written without `=`. */
const SBATCH_LONG_VALUE = new Set([
  "account", "acctg-freq", "array", "batch", "bb", "bbf", "begin", "chdir", "cluster",
  "cluster-constraint", "clusters", "comment", "constraint", "container", "context",
  "core-spec", "cores-per-socket", "cpu-freq", "cpus-per-gpu", "cpus-per-task", "deadline",
  "delay-boot", "dependency", "distribution", "error", "exclude", "export", "export-file",
  "extra-node-info", "gid", "gpu-bind", "gpu-freq", "gpus", "gpus-per-node",
  "gpus-per-socket", "gpus-per-task", "gres", "gres-flags", "hint", "input", "job-name",
  "kill-on-invalid-dep", "licenses", "mail-type", "mail-user", "mcs-label", "mem",
  "mem-bind", "mem-per-cpu", "mem-per-gpu", "mincpus", "network", "nodefile", "nodelist",
  "nodes", "ntasks", "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-node",
  "ntasks-per-socket", "ntasks-per-tres", "open-mode", "output", "partition", "prefer",
  "priority", "profile", "qos", "reservation", "signal", "sockets-per-node", "switches",
  "tasks-per-node", "thread-spec", "threads-per-core", "time", "time-min", "tmp", "uid",
  "wait-all-nodes", "wckey", "wrap",
]);
/** Long options that never take the next word (no or optional argument). */
const SBATCH_LONG_FLAG = new Set([
  "contiguous", "exclusive", "get-user-env", "help", "hold", "ignore-pbs", "nice", "no-kill",
  "no-requeue", "overcommit", "oversubscribe", "parsable", "propagate", "quiet", "reboot",
  "requeue", "spread-job", "test-only", "usage", "use-min-nodes", "verbose", "version", "wait",
]);
const SBATCH_SHORT_VALUE = "AaBbCcDdeFGiJLMmNnopqStwx";
const SBATCH_SHORT_FLAG = "hHOQsvVW";
const SBATCH_SHORT_OPTIONAL = "k";

// How a word may be read: as an option or operand (free), or as the previous
// option's value (value); both when an option of unknown arity came before.
const FREE = { free: true, value: false };
const VALUE = { free: false, value: true };
const BOTH = { free: true, value: true };
const NONE = { free: false, value: false };
const either = (a, b) => ({ free: a.free || b.free, value: a.value || b.value });

/** How the word after option word `opt` may be read (sbatch.rs after_option). */
export function sbatchAfterOption(opt) {
  if (opt.startsWith("--")) {
    const long = opt.slice(2);
    if (long.includes("=")) return FREE;
    if (SBATCH_LONG_VALUE.has(long)) return VALUE;
    if (SBATCH_LONG_FLAG.has(long)) return FREE;
    return BOTH;
  }
  let next = NONE;
  const chars = Array.from(opt.slice(1));
  for (let k = 0; k < chars.length; k++) {
    const c = chars[k];
    const takesRest = k === chars.length - 1 ? VALUE : FREE;
    if (SBATCH_SHORT_FLAG.includes(c)) continue;
    if (SBATCH_SHORT_OPTIONAL.includes(c)) return either(next, FREE);
    if (SBATCH_SHORT_VALUE.includes(c)) return either(next, takesRest);
    next = either(next, takesRest);
  }
  return either(next, FREE);
}

const SBATCH_NEEDS_END = 'sbatch needs "--" right before the script name, which comes last (so the name is never read as an option)';

function sbatch(args) {
  if (args.length === 0) return SBATCH_NEEDS_END;
  const last = args[args.length - 1];
  let options;
  if (last === "--") {
    options = args.slice(0, -1);
  } else if (args.length >= 2 && args[args.length - 2] === "--") {
    if (last === "" || last.startsWith("-")) {
      return `sbatch script name ${show(last)} starts with '-' (or is empty): if an option took the "--" before it as its value, sbatch would read the name as an option; rename the script`;
    }
    options = args.slice(0, -2);
  } else {
    const i = args.indexOf("--");
    if (i < 0) return SBATCH_NEEDS_END;
    return `sbatch takes one script after "--", as the last argument, not ${showList(args.slice(i + 1))}`;
  }
  let readings = FREE;
  for (const word of options) {
    let next = readings.value ? FREE : NONE;
    if (readings.free) {
      if (word === "--") {
        return 'sbatch takes one "--", right before the script: an earlier one would make the words after it the script and its arguments';
      }
      if (!word.startsWith("-") || word === "-") {
        return `sbatch argument ${show(word)} before "--" could be read as the script (it is not the value of an option known to take one); attach values to their options (--name=value, -Xvalue)`;
      }
      next = either(next, sbatchAfterOption(word));
    }
    readings = next;
  }
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
