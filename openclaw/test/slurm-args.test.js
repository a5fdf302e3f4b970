// lib/slurm-args.js and grants.js's path parts against their Rust twins:
// the cases of host/src/slurm_args/sbatch.rs's tests, the `--` cases of
// slurm_args.rs's job_lists_are_job_ids, and grants.rs's glued short-option
// values, with the same outcomes (and, through execCommand, the same
// messages).

import test from "node:test";
import assert from "node:assert/strict";
import { checkSlurmArgs, sbatchAfterOption } from "../lib/slurm-args.js";
import { assertRefusal, grantsFor, tempDir, thrown } from "./helpers.js";

const sbatch = (args) => checkSlurmArgs("sbatch", args);

test("rs what_the_guest_sends_passes", () => {
  for (const good of [
    ["--parsable", "--", "job.slurm"],
    ["--test-only", "--", "job.slurm"],
    ["--test-only", "--"],
    ["--test-only", "-p", "cpu", "--time=5", "--"],
    ["--parsable", "-p", "cpu", "--qos", "high", "--", "job.slurm"],
    ["--parsable", "--partition", "gpu", "-G", "1", "--", "job.slurm"],
    ["--parsable", "--exclusive", "--export=NONE", "--", "job.slurm"],
    ["--parsable", "-JD", "--comment=chdir", "--", "job.slurm"],
    ["--parsable", "-vHp", "cpu", "--", "job.slurm"],
    ["--parsable", "-t", "10", "-N2", "--", "job.slurm"],
    ["-J", "--", "job.slurm"],
    ["--parsable", "-J", "--"],
    ["-J", "--", "--", "job.slurm"],
  ]) {
    assert.equal(sbatch(good), null, JSON.stringify(good));
  }
});

// Negative control (run once): with the script-name test reduced to
// `last === ""`, this test failed at its first case, `-J -- --wrap=id`
// (accepted).
test("rs the_script_is_last_after_the_end_of_options", () => {
  for (const [bad, says] of [
    [["-J", "--", "--wrap=id"], "starts with '-'"],
    [["--parsable", "-J", "--", "--wrap=id"], "starts with '-'"],
    [["--parsable", "--", "-t999"], "starts with '-'"],
    [["--", "-"], "starts with '-'"],
    [["--", ""], "starts with '-'"],
    [["--parsable", "-t999"], 'needs "--"'],
    [["--parsable", "job.slurm"], 'needs "--"'],
    [[], 'needs "--"'],
    [["--", "job.slurm", "x"], "one script"],
    [["--", "job.slurm", "--me"], "one script"],
    [["-J", "--", "job.slurm", "x"], "one script"],
  ]) {
    const m = sbatch(bad);
    assert.ok(m !== null && m.includes(says), `${JSON.stringify(bad)}: ${m}`);
  }
});

// Negative controls (each run once): with the bare-word refusal disabled,
// this test failed at its first case, `--parsable foo -- job.slurm`
// (accepted); with unknown long options read only as taking a value, at
// `--part cpu`; only as flags, at `--qo -p foo`.
test("rs no_word_before_the_end_of_options_can_be_the_script", () => {
  for (const bad of [
    ["--parsable", "foo", "--", "job.slurm"],
    ["foo", "--", "job.slurm"],
    ["-", "--", "job.slurm"],
    [":", "--", "job.slurm"],
    ["--exclusive", "user", "--", "job.slurm"],
    ["--nice", "5", "--", "job.slurm"],
    ["-k", "x", "--", "job.slurm"],
    ["-H", "x", "--", "job.slurm"],
    ["-J", "-p", "foo", "--", "job.slurm"],
    ["--part", "cpu", "--", "job.slurm"],
    ["--qo", "-p", "foo", "--", "job.slurm"],
    ["--brand-new", "foo", "--", "job.slurm"],
    ["-Z", "-p", "foo", "--", "job.slurm"],
    ["--", "foo", "--", "job.slurm"],
    ["--parsable", "--", "--"],
  ]) {
    assert.notEqual(sbatch(bad), null, `${JSON.stringify(bad)} accepted`);
  }
});

test("rs option_words_are_read_as_getopt_does", () => {
  const is = (opt, free, value) => assert.deepEqual(sbatchAfterOption(opt), { free, value }, opt);
  is("-p", false, true);
  is("-pcpu", true, false);
  is("-vH", true, false);
  is("-vHp", false, true);
  is("-kx", true, false);
  is("-Z", true, true);
  is("-Zp", true, true);
  is("--partition", false, true);
  is("--partition=cpu", true, false);
  is("--parsable", true, false);
  is("--part", true, true);
});

// Negative control (run once): with `if (arg === "--") break;` restored in
// jobLists, this test failed at its first case (accepted).
test("rs job_lists_are_job_ids: no word ends the check", () => {
  for (const bad of [
    ["-o", "--", "-j", "1,--me"],
    ["-h", "--", "--jobs=--me"],
    ["--", "-j--me"],
  ]) {
    assert.notEqual(checkSlurmArgs("sacct", bad), null, JSON.stringify(bad));
    assert.notEqual(checkSlurmArgs("squeue", bad), null, JSON.stringify(bad));
  }
});

// Negative control (run once): with the short-option suffixes removed from
// pathParts, this test failed at its first case (`-D..` was built into a
// command line).
test("rs exec_commands_are_checked_and_quoted: glued short-option values", (t) => {
  const g = grantsFor(tempDir(t));
  const p = g.profile("c");
  for (const [args, message] of [
    [["-D..", "--", "job.slurm"], `argument "-D.." may not contain '..' path segments`],
    [["-D~", "--", "job.slurm"], `argument "-D~": '~' paths are not allowed`],
    [["-D~/x", "--", "job.slurm"], `argument "-D~/x": '~' paths are not allowed`],
    [["-o../x", "--", "job.slurm"], `argument "-o../x" may not contain '..' path segments`],
    [["-o..", "--", "job.slurm"], `argument "-o.." may not contain '..' path segments`],
    [["-hD..", "--", "job.slurm"], `argument "-hD.." may not contain '..' path segments`],
    [["-D/etc", "--", "job.slurm"], 'remote path "/etc" is outside remoteRoot /scratch/u/runs of profile "c"'],
    [["-D", "..", "--", "job.slurm"], `argument ".." may not contain '..' path segments`],
    [["--chdir", "~", "--", "job.slurm"], `argument "~": '~' paths are not allowed`],
  ]) {
    assertRefusal(thrown(() => g.execCommand(p, "sbatch", args, "r1")), "denied", message);
  }
  for (const [prog, args] of [
    ["sbatch", ["--parsable", "-D/scratch/u/runs/r1", "--", "job.slurm"]],
    ["sbatch", ["--parsable", "-D", "r1/sub", "--", "job.slurm"]],
    ["squeue", ["-h", "-t", "all", "-j", "12", "-o", "%i|%T|%M"]],
    ["squeue", ["--format=%i", "-o%i|%Z"]],
    ["sacct", ["-n", "-P", "-X", "-S", "2026-12-02", "-o", "JobID,WorkDir"]],
    ["ls", ["-lnAb", "--time-style=+%s", "--", "."]],
    ["tail", ["-n", "200", "--", "slurm-1.out"]],
  ]) {
    g.execCommand(p, prog, args, "r1");
  }
});
