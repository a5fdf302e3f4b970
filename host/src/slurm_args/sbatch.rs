//! `sbatch`'s command line: the script is the last word, right after `--`,
//! and nothing before that `--` can be read as the script.
//!
//! Why both halves are needed (seen on the testbed, SLURM 22.05):
//! - A value-taking option eats the `--`: `sbatch -J -- --wrap=id` names the
//!   job `--` and reads `--wrap=id` as an option (it submitted a job). So
//!   the script must be the *last* word and must not start with `-`: whether
//!   or not an option ate the `--` before it, a last word that is not an
//!   option is the first operand, the script.
//! - sbatch's getopt string starts with `+`: option parsing stops at the
//!   first word that is not an option or an option's value. In
//!   `sbatch --parsable foo -- job.slurm`, `foo` is the script (sbatch said
//!   "Unable to open file foo"). So a word not starting with `-` before the
//!   `--` is allowed only where it can only be an option's value.
//!
//! Which words take a value is decided from SLURM's own option table
//! (`src/common/slurm_opt.c`, the entries sbatch uses), keeping only
//! options whose arity is the same in 22.05 and 25.x. Every other option
//! (a newer SLURM's, an abbreviation such as `--part`, a char not in the
//! table) is read both ways, taking a value and not, and a bare word must be
//! a value in every reading. So `-p cpu` and `--partition cpu` pass,
//! `--part cpu` is refused (write `--part=cpu`), and no table error in the
//! unknown direction can make a word the script. (`--help`'s text is not
//! the table: it shows `--export[=names]` and `--wrap[=...]`, both of which
//! take the next word.)
//!
//! With `--` as the last word there is no script: sbatch reads it from
//! stdin (the guest's `--test-only` check), whether or not the `--` was
//! eaten as a value.

/// Long options that take the next word as their value when written
/// without `=` (`required_argument` in 22.05 and in 25.x).
const LONG_VALUE: &[&str] = &[
    "account",
    "acctg-freq",
    "array",
    "batch",
    "bb",
    "bbf",
    "begin",
    "chdir",
    "cluster",
    "cluster-constraint",
    "clusters",
    "comment",
    "constraint",
    "container",
    "context",
    "core-spec",
    "cores-per-socket",
    "cpu-freq",
    "cpus-per-gpu",
    "cpus-per-task",
    "deadline",
    "delay-boot",
    "dependency",
    "distribution",
    "error",
    "exclude",
    "export",
    "export-file",
    "extra-node-info",
    "gid",
    "gpu-bind",
    "gpu-freq",
    "gpus",
    "gpus-per-node",
    "gpus-per-socket",
    "gpus-per-task",
    "gres",
    "gres-flags",
    "hint",
    "input",
    "job-name",
    "kill-on-invalid-dep",
    "licenses",
    "mail-type",
    "mail-user",
    "mcs-label",
    "mem",
    "mem-bind",
    "mem-per-cpu",
    "mem-per-gpu",
    "mincpus",
    "network",
    "nodefile",
    "nodelist",
    "nodes",
    "ntasks",
    "ntasks-per-core",
    "ntasks-per-gpu",
    "ntasks-per-node",
    "ntasks-per-socket",
    "ntasks-per-tres",
    "open-mode",
    "output",
    "partition",
    "prefer",
    "priority",
    "profile",
    "qos",
    "reservation",
    "signal",
    "sockets-per-node",
    "switches",
    "tasks-per-node",
    "thread-spec",
    "threads-per-core",
    "time",
    "time-min",
    "tmp",
    "uid",
    "wait-all-nodes",
    "wckey",
    "wrap",
];

/// Long options that never take the next word (`no_argument`, or
/// `optional_argument`, whose value getopt_long only takes after `=`).
const LONG_FLAG: &[&str] = &[
    "contiguous",
    "exclusive",
    "get-user-env",
    "help",
    "hold",
    "ignore-pbs",
    "nice",
    "no-kill",
    "no-requeue",
    "overcommit",
    "oversubscribe",
    "parsable",
    "propagate",
    "quiet",
    "reboot",
    "requeue",
    "spread-job",
    "test-only",
    "usage",
    "use-min-nodes",
    "verbose",
    "version",
    "wait",
];

/// Short options with a required value (glued, or else the next word).
const SHORT_VALUE: &str = "AaBbCcDdeFGiJLMmNnopqStwx";
/// Short options without a value.
const SHORT_FLAG: &str = "hHOQsvVW";
/// Short options with an optional value: only a glued one (`-k` no-kill).
const SHORT_OPTIONAL: &str = "k";

/// How the word being read may be taken: as an option or operand (`free`),
/// or as the previous option's value (`value`). Both may hold when an
/// option of unknown arity came before.
#[derive(Clone, Copy, Default)]
struct Readings {
    free: bool,
    value: bool,
}

impl Readings {
    fn or(self, other: Readings) -> Readings {
        Readings {
            free: self.free || other.free,
            value: self.value || other.value,
        }
    }
}

const FREE: Readings = Readings {
    free: true,
    value: false,
};
const VALUE: Readings = Readings {
    free: false,
    value: true,
};
const BOTH: Readings = Readings {
    free: true,
    value: true,
};

/// How the word after `opt` (an option word, read as one) may be taken.
fn after_option(opt: &str) -> Readings {
    if let Some(long) = opt.strip_prefix("--") {
        return if long.contains('=') {
            FREE
        } else if LONG_VALUE.contains(&long) {
            VALUE
        } else if LONG_FLAG.contains(&long) {
            FREE
        } else {
            BOTH
        };
    }
    // A bundle: flags, then at most one option that takes the rest (or,
    // with nothing left, the next word). An unknown char may be either.
    let mut next = Readings::default();
    for (i, c) in opt.char_indices().skip(1) {
        let rest_empty = opt.len() == i + c.len_utf8();
        let takes_rest = if rest_empty { VALUE } else { FREE };
        if SHORT_FLAG.contains(c) {
            continue;
        }
        if SHORT_OPTIONAL.contains(c) {
            return next.or(FREE);
        }
        if SHORT_VALUE.contains(c) {
            return next.or(takes_rest);
        }
        next = next.or(takes_rest);
    }
    next.or(FREE)
}

/// Check sbatch's arguments (see the module doc).
pub(super) fn check(args: &[String]) -> Result<(), String> {
    let Some((last, before)) = args.split_last() else {
        return Err(needs_end_of_options());
    };
    let options = if last == "--" {
        before
    } else {
        match before.split_last() {
            Some((end, options)) if end == "--" => {
                if last.is_empty() || last.starts_with('-') {
                    return Err(format!(
                        "sbatch script name {last:?} starts with '-' (or is empty): if an option took the \"--\" before it as its value, sbatch would read the name as an option; rename the script"
                    ));
                }
                options
            }
            _ => {
                return Err(match args.iter().position(|a| a == "--") {
                    Some(i) => format!(
                        "sbatch takes one script after \"--\", as the last argument, not {:?}",
                        args.get(i + 1..).unwrap_or_default()
                    ),
                    None => needs_end_of_options(),
                });
            }
        }
    };
    let mut readings = FREE;
    for word in options {
        let mut next = Readings::default();
        if readings.value {
            next = next.or(FREE);
        }
        if readings.free {
            if word == "--" {
                return Err(
                    "sbatch takes one \"--\", right before the script: an earlier one would make the words after it the script and its arguments".to_string(),
                );
            }
            if !word.starts_with('-') || word == "-" {
                return Err(format!(
                    "sbatch argument {word:?} before \"--\" could be read as the script (it is not the value of an option known to take one); attach values to their options (--name=value, -Xvalue)"
                ));
            }
            next = next.or(after_option(word));
        }
        readings = next;
    }
    Ok(())
}

fn needs_end_of_options() -> String {
    "sbatch needs \"--\" right before the script name, which comes last (so the name is never read as an option)".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// What the guest sends (submit_job, run_workload, dryRun, the
    /// `--test-only` check with the script on stdin), and submitArgs as an
    /// operator writes them, pass.
    #[test]
    fn what_the_guest_sends_passes() {
        for good in [
            &["--parsable", "--", "job.slurm"][..],
            &["--test-only", "--", "job.slurm"],
            &["--test-only", "--"],
            &["--test-only", "-p", "cpu", "--time=5", "--"],
            &[
                "--parsable",
                "-p",
                "cpu",
                "--qos",
                "high",
                "--",
                "job.slurm",
            ],
            &[
                "--parsable",
                "--partition",
                "gpu",
                "-G",
                "1",
                "--",
                "job.slurm",
            ],
            &[
                "--parsable",
                "--exclusive",
                "--export=NONE",
                "--",
                "job.slurm",
            ],
            &["--parsable", "-JD", "--comment=chdir", "--", "job.slurm"],
            &["--parsable", "-vHp", "cpu", "--", "job.slurm"],
            &["--parsable", "-t", "10", "-N2", "--", "job.slurm"],
            // An option that eats the `--` leaves the script the first
            // operand: sbatch names the job `--` and submits job.slurm.
            &["-J", "--", "job.slurm"],
            &["--parsable", "-J", "--"],
            // Only a value can be a `--` here.
            &["-J", "--", "--", "job.slurm"],
        ] {
            assert_eq!(check(&args(good)), Ok(()), "{good:?}");
        }
    }

    /// The script is the last word, right after `--`, not an option.
    /// Negative control (run once): with the script-name test reduced to
    /// `last.is_empty()`, the test failed at its first case, `-J --
    /// --wrap=id` (accepted); on the testbed `sbatch -J -- --wrap=id`
    /// submitted a job running `id`.
    #[test]
    fn the_script_is_last_after_the_end_of_options() {
        for (bad, says) in [
            (&["-J", "--", "--wrap=id"][..], "starts with '-'"),
            (&["--parsable", "-J", "--", "--wrap=id"], "starts with '-'"),
            (&["--parsable", "--", "-t999"], "starts with '-'"),
            (&["--", "-"], "starts with '-'"),
            (&["--", ""], "starts with '-'"),
            (&["--parsable", "-t999"], "needs \"--\""),
            (&["--parsable", "job.slurm"], "needs \"--\""),
            (&[], "needs \"--\""),
            (&["--", "job.slurm", "x"], "one script"),
            (&["--", "job.slurm", "--me"], "one script"),
            (&["-J", "--", "job.slurm", "x"], "one script"),
        ] {
            match check(&args(bad)) {
                Err(m) => assert!(m.contains(says), "{bad:?}: {m}"),
                Ok(()) => panic!("{bad:?} accepted"),
            }
        }
    }

    /// A bare word before `--` that sbatch could read as its first operand
    /// (getopt `+`: parsing stops there, and it becomes the script).
    /// Negative controls (each run once): with the bare-word refusal in
    /// `check` disabled, the test failed at its first case, `--parsable foo
    /// -- job.slurm` (accepted; on the testbed sbatch said "Unable to open
    /// file foo": foo was the script). With `after_option` reading an
    /// unknown long option only as taking a value, it failed at `--part
    /// cpu`; only as a flag, at `--qo -p foo` (both accepted).
    #[test]
    fn no_word_before_the_end_of_options_can_be_the_script() {
        for bad in [
            &["--parsable", "foo", "--", "job.slurm"][..],
            &["foo", "--", "job.slurm"],
            &["-", "--", "job.slurm"],
            &[":", "--", "job.slurm"],
            // `--exclusive`'s and `--nice`'s values come only after `=`.
            &["--exclusive", "user", "--", "job.slurm"],
            &["--nice", "5", "--", "job.slurm"],
            &["-k", "x", "--", "job.slurm"],
            &["-H", "x", "--", "job.slurm"],
            // `-J` takes `-p`, so `foo` is an operand.
            &["-J", "-p", "foo", "--", "job.slurm"],
            // Unknown arity (abbreviation, a newer SLURM's option, a char
            // not in the table): read both ways, and in one `foo` is free.
            &["--part", "cpu", "--", "job.slurm"],
            &["--qo", "-p", "foo", "--", "job.slurm"],
            &["--brand-new", "foo", "--", "job.slurm"],
            &["-Z", "-p", "foo", "--", "job.slurm"],
            // A second `--` ends options early.
            &["--", "foo", "--", "job.slurm"],
            &["--parsable", "--", "--"],
        ] {
            assert!(check(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn option_words_are_read_as_getopt_does() {
        assert!(after_option("-p").value && !after_option("-p").free);
        assert!(after_option("-pcpu").free && !after_option("-pcpu").value);
        assert!(after_option("-vH").free && !after_option("-vH").value);
        assert!(after_option("-vHp").value && !after_option("-vHp").free);
        assert!(after_option("-kx").free && !after_option("-kx").value);
        let unknown = after_option("-Z");
        assert!(unknown.free && unknown.value);
        let unknown_then_value = after_option("-Zp");
        assert!(unknown_then_value.free && unknown_then_value.value);
        assert!(after_option("--partition").value && !after_option("--partition").free);
        assert!(after_option("--partition=cpu").free && !after_option("--partition=cpu").value);
        assert!(after_option("--parsable").free && !after_option("--parsable").value);
        let abbrev = after_option("--part");
        assert!(abbrev.free && abbrev.value);
    }
}
