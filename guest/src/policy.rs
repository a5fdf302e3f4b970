//! The reference's environment policy for `run_workload`: the job's
//! environment comes from the cluster profile, not from the call.
//!
//! These rules keep well-meaning agents on the profile's environment; they
//! are not a security boundary (a workload command is arbitrary shell by
//! design, and runs only inside the SLURM job).

use crate::request::Request;
use crate::script::uses_module_command;
use crate::shell::{SimpleCommand, Word};

/// What a command does to the job's environment, as far as can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finding {
    /// It creates or activates an environment: what the rule is about.
    Mutation(&'static str),
    /// Its program is only known when the job runs (`$c create`,
    /// `eval "$x"`): it could be anything, so it is refused with the rule.
    Unsure(String),
}

/// Programs that run the command given after their own options.
const WRAPPERS: &[&str] = &[
    "env",
    "command",
    "builtin",
    "exec",
    "nohup",
    "time",
    "nice",
    "sudo",
    "doas",
    "timeout",
    "stdbuf",
    "setsid",
    "ionice",
    "taskset",
    "numactl",
    "srun",
    "mpirun",
    "mpiexec",
    "xargs",
    "chrt",
    "flock",
    "unbuffer",
    "strace",
    "ltrace",
    "apptainer",
    "singularity",
    "parallel",
];

/// Shells that run a `-c` string or their stdin.
const SHELLS: &[&str] = &["bash", "sh", "zsh", "dash", "ksh", "ash"];

/// Words that start a compound command; the command follows them.
const RESERVED: &[&str] = &[
    "!", "{", "}", "if", "then", "elif", "else", "fi", "do", "done", "while", "until", "time",
];

/// The first environment change `text` makes, read the way the shell
/// reads it (quotes resolved, commands split, nested commands and `eval`
/// or `bash -c` strings followed). A spelling-based list of patterns was
/// bypassed by `python3 -mvenv` and `c=conda; $c create`.
fn env_mutation(text: &str) -> Option<Finding> {
    mutation_in(text, 0)
}

fn mutation_in(text: &str, depth: usize) -> Option<Finding> {
    if depth > crate::shell::MAX_DEPTH {
        return Some(Finding::Unsure("it nests eval/bash -c too deeply".into()));
    }
    let lexed = crate::shell::lex(text);
    let mut unsure = lexed
        .overflow
        .then(|| Finding::Unsure("it nests command substitutions too deeply".into()));
    for cmd in &lexed.commands {
        match command_mutation(cmd, depth) {
            Some(m @ Finding::Mutation(_)) => return Some(m),
            Some(u) => unsure = unsure.or(Some(u)),
            None => {}
        }
    }
    unsure
}

fn command_mutation(cmd: &SimpleCommand, depth: usize) -> Option<Finding> {
    let words: Vec<&Word> = cmd
        .words
        .iter()
        .skip_while(|w| w.assignment || w.literal().is_some_and(|t| RESERVED.contains(&t)))
        .collect();
    let first = words.first()?;
    if matches!(
        first.literal(),
        Some("for" | "select" | "case" | "function" | "esac")
    ) {
        return None;
    }
    let Some(name) = first.static_name() else {
        return Some(unknown_program(first));
    };
    let rest = words.get(1..).unwrap_or_default();
    if WRAPPERS.contains(&name) {
        // Their options differ (and some take values): every later word is
        // tried as the start of the wrapped command. An expansion is taken
        // for the wrapped program unless it follows an option that may take
        // it as its value (`srun -n "$N" python x` passes, `nohup $c create`
        // does not).
        let mut previous: &Word = first;
        for w in rest {
            let after_flag = !std::ptr::eq(previous, *first)
                && previous.text.starts_with('-')
                && !previous.text.contains('=');
            match w.static_name() {
                _ if after_flag => {}
                None => return Some(unknown_program(w)),
                Some(n) if !n.starts_with('-') => break,
                Some(_) => {}
            }
            previous = w;
        }
        return (0..rest.len()).find_map(|i| {
            rest.get(i..)
                .and_then(|tail| program_mutation(tail, &cmd.stdin_texts, depth))
                .filter(|f| matches!(f, Finding::Mutation(_)))
        });
    }
    program_mutation(&words, &cmd.stdin_texts, depth)
}

fn unknown_program(w: &Word) -> Finding {
    Finding::Unsure(format!(
        "its program {:?} is an expansion, known only when the job runs",
        w.shown
    ))
}

/// `words` starts with the program that runs.
fn program_mutation(words: &[&Word], stdin: &[String], depth: usize) -> Option<Finding> {
    let name = words.first()?.static_name()?;
    let args = words.get(1..).unwrap_or_default();
    // The first argument that is not an option: a subcommand.
    let sub = || args.iter().find(|w| w.dynamic || !w.text.starts_with('-'));
    let sub_is = |names: &[&'static str]| -> Option<Result<&'static str, Finding>> {
        let w = sub()?;
        if w.dynamic {
            return Some(Err(Finding::Unsure(format!(
                "its subcommand {:?} is an expansion",
                w.shown
            ))));
        }
        names.iter().find(|n| **n == w.text).map(|n| Ok(*n))
    };
    let verdict = |r: Option<Result<&'static str, Finding>>, label: &'static str| match r {
        Some(Ok(_)) => Some(Finding::Mutation(label)),
        Some(Err(u)) => Some(u),
        None => None,
    };
    match name {
        "conda" | "mamba" | "micromamba" => {
            let w = sub()?;
            if w.dynamic {
                return verdict(sub_is(&[]), "conda create");
            }
            match w.text.as_str() {
                "create" => Some(Finding::Mutation("conda create")),
                "activate" => Some(Finding::Mutation("conda activate")),
                "env" => {
                    let after: Vec<&Word> = args
                        .iter()
                        .skip_while(|a| !std::ptr::eq(**a, *w))
                        .skip(1)
                        .copied()
                        .collect();
                    let next = after.iter().find(|a| a.dynamic || !a.text.starts_with('-'));
                    match next {
                        Some(a) if a.dynamic => Some(Finding::Unsure(format!(
                            "its subcommand {:?} is an expansion",
                            a.shown
                        ))),
                        Some(a) if matches!(a.text.as_str(), "create" | "update") => {
                            Some(Finding::Mutation("conda env create"))
                        }
                        _ => None,
                    }
                }
                s if s.starts_with("shell.") => Some(Finding::Mutation("conda shell hook")),
                _ => None,
            }
        }
        "virtualenv" | "pyvenv" => Some(Finding::Mutation("virtualenv")),
        "uv" => verdict(sub_is(&["venv"]), "uv venv"),
        "source" | "." => {
            let file = args.first()?;
            let tail = file.static_name();
            if file.literal() == Some("activate")
                || tail == Some("activate") && file.text.contains("bin/")
            {
                Some(Finding::Mutation(if file.text.contains('/') {
                    "source .../bin/activate"
                } else {
                    "source activate"
                }))
            } else {
                None
            }
        }
        "eval" => {
            if let Some(w) = args.iter().find(|w| w.dynamic) {
                return Some(Finding::Unsure(format!(
                    "eval runs {:?}, known only when the job runs",
                    w.shown
                )));
            }
            let joined: Vec<&str> = args.iter().map(|w| w.text.as_str()).collect();
            mutation_in(&joined.join(" "), depth + 1)
        }
        n if SHELLS.contains(&n) => shell_mutation(args, stdin, depth),
        n if is_python(n) => python_module(args).and_then(|m| match m {
            Ok("venv" | "virtualenv") => Some(Finding::Mutation("python -m venv")),
            Ok(_) => None,
            Err(u) => Some(u),
        }),
        _ => None,
    }
}

/// `python`, `python3`, `python3.11`, `python2.7`.
fn is_python(name: &str) -> bool {
    name.strip_prefix("python").is_some_and(|v| {
        v.is_empty()
            || v.split('.').count() <= 2
                && v.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The module of `python [flags] -m MODULE` (`-mvenv`, `-Im venv` too).
fn python_module<'w>(args: &[&'w Word]) -> Option<Result<&'w str, Finding>> {
    let mut iter = args.iter();
    while let Some(w) = iter.next() {
        if w.dynamic {
            return Some(Err(Finding::Unsure(format!(
                "python's argument {:?} is an expansion (it could be -m venv)",
                w.shown
            ))));
        }
        let Some(flags) = w.text.strip_prefix('-') else {
            return None; // the script: python runs it, not a module
        };
        if flags.starts_with('-') || flags.is_empty() {
            if flags == "-" {
                return None;
            }
            continue;
        }
        for (i, c) in flags.char_indices() {
            let value = flags.get(i + c.len_utf8()..).unwrap_or("");
            match c {
                'm' => {
                    return match (value, iter.next()) {
                        ("", Some(next)) if next.dynamic => Some(Err(Finding::Unsure(format!(
                            "python -m {:?} is an expansion",
                            next.shown
                        )))),
                        ("", Some(next)) => Some(Ok(next.text.as_str())),
                        ("", None) => None,
                        (v, _) => Some(Ok(v)),
                    };
                }
                'c' => return None,
                'W' | 'X' => {
                    if value.is_empty() {
                        iter.next();
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    None
}

/// `bash -c STRING` runs STRING; `bash` with no script runs its stdin.
fn shell_mutation(args: &[&Word], stdin: &[String], depth: usize) -> Option<Finding> {
    let mut iter = args.iter();
    while let Some(w) = iter.next() {
        if w.dynamic {
            return Some(Finding::Unsure(format!(
                "the shell's argument {:?} is an expansion",
                w.shown
            )));
        }
        match w.text.strip_prefix('-') {
            Some(flags) if !flags.starts_with('-') && flags.contains('c') => {
                let script = iter.next()?;
                if script.dynamic {
                    return Some(Finding::Unsure(format!(
                        "the shell runs {:?}, known only when the job runs",
                        script.shown
                    )));
                }
                return mutation_in(&script.text, depth + 1);
            }
            Some(_) => {}
            // A script file: what it does cannot be seen from here.
            None => return None,
        }
    }
    stdin.iter().find_map(|body| mutation_in(body, depth + 1))
}

/// Check a `run_workload` request; `allow_config` is
/// `execution.allowCustomEnvOverride`. Returns whether overrides are in effect.
pub fn check_run_workload(
    req: &Request,
    commands: &[String],
    allow_config: bool,
) -> Result<bool, String> {
    check_env("run_workload", req, commands, allow_config)
}

/// Check a `render_job` request: like `run_workload`, except that with
/// overrides allowed the call may bring its own setup commands and modules.
pub fn check_render_job(
    req: &Request,
    commands: &[String],
    allow_config: bool,
) -> Result<bool, String> {
    check_env("render_job", req, commands, allow_config)
}

fn check_env(
    action: &str,
    req: &Request,
    commands: &[String],
    allow_config: bool,
) -> Result<bool, String> {
    let allow = req.allow_env_overrides == Some(true);
    if allow && !allow_config {
        return Err(format!(
            "{action} allowEnvOverrides is disabled by cluster-slurm config (execution.allowCustomEnvOverride=false)."
        ));
    }
    let header_modules = req
        .header_overrides
        .as_ref()
        .is_some_and(|h| !h.modules.is_empty());
    let call_level = !req.setup_commands.is_empty() || !req.modules.is_empty() || header_modules;
    if call_level && (action == "run_workload" || !allow) {
        let how = if action == "run_workload" {
            "Configure setupCommands/slurmDefaults.modules in the cluster profile instead."
        } else {
            "Configure them in the cluster profile, or set allowEnvOverrides=true with execution.allowCustomEnvOverride=true for explicit override."
        };
        return Err(format!(
            "{action} rejected call-level environment overrides (setupCommands, modules, headerOverrides.modules). {how}"
        ));
    }
    let keep = if action == "run_workload" {
        "Use profile setupCommands/moduleInitScripts in cluster config."
    } else {
        "Keep module/bootstrap in profile setupCommands."
    };
    for line in commands.iter().flat_map(|c| c.lines()).map(str::trim) {
        if uses_module_command(line) {
            return Err(format!(
                "{action} rejected inline module command ({line}). {keep}"
            ));
        }
    }
    for command in commands {
        // `module` run anywhere the shell runs a command (`a; \module load x`).
        if let Some(words) = runs_module(command) {
            return Err(format!(
                "{action} rejected inline module command ({words}). {keep}"
            ));
        }
        if allow {
            continue;
        }
        let shown = command.trim();
        match env_mutation(command) {
            Some(Finding::Mutation(label)) => {
                return Err(format!(
                    "{action} rejected custom environment mutation ({label}: {shown}). Use profile-managed env by default, or set allowEnvOverrides=true with execution.allowCustomEnvOverride=true for explicit override."
                ));
            }
            Some(Finding::Unsure(why)) => {
                return Err(format!(
                    "{action} rejected command {shown:?}: {why}, so it cannot be checked for environment creation (conda/mamba create or activate, python -m venv, virtualenv, uv venv). In commands, write the program's name (e.g. python3 ..., not $PY ...), or set allowEnvOverrides=true with execution.allowCustomEnvOverride=true for explicit override."
                ));
            }
            None => {}
        }
    }
    Ok(allow)
}

/// The simple command that runs `module`/`ml`, if any, as its words.
fn runs_module(text: &str) -> Option<String> {
    crate::shell::lex(text).commands.iter().find_map(|c| {
        let words: Vec<&Word> = c
            .words
            .iter()
            .skip_while(|w| w.assignment || w.literal().is_some_and(|t| RESERVED.contains(&t)))
            .collect();
        let name = words.first()?.static_name()?;
        matches!(name, "module" | "ml").then(|| {
            words
                .iter()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> Request {
        Request::parse(&v).unwrap()
    }

    #[test]
    fn call_level_env_refused() {
        for extra in [
            json!({"setupCommands": ["module load x"]}),
            json!({"modules": ["python/3.11"]}),
            json!({"headerOverrides": {"modules": ["x"]}}),
        ] {
            let mut v = json!({"action": "run_workload", "command": "echo"});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            let err = check_run_workload(&req(v), &["echo".into()], true).unwrap_err();
            assert!(err.contains("call-level environment overrides"), "{err}");
        }
    }

    #[test]
    fn render_job_allows_call_level_env_only_with_overrides() {
        let with = req(
            json!({"action": "render_job", "setupCommands": ["module load x"], "allowEnvOverrides": true}),
        );
        assert_eq!(
            check_render_job(&with, &["python x.py".into()], true),
            Ok(true)
        );
        let without = req(json!({"action": "render_job", "modules": ["x"]}));
        assert!(
            check_render_job(&without, &["x".into()], true)
                .unwrap_err()
                .contains("render_job rejected call-level")
        );
        let inline = check_render_job(&with, &["module load y".into()], true).unwrap_err();
        assert!(
            inline.contains("Keep module/bootstrap in profile setupCommands"),
            "{inline}"
        );
    }

    #[test]
    fn inline_module_and_mutations() {
        let r = req(json!({"action": "run_workload"}));
        let e = check_run_workload(&r, &["echo a\n  ml python".into()], false).unwrap_err();
        assert!(e.contains("inline module command (ml python)"), "{e}");
        let e = check_run_workload(&r, &["conda create -n x".into()], false).unwrap_err();
        assert!(e.contains("conda create"), "{e}");
        let allowed = req(json!({"action": "run_workload", "allowEnvOverrides": true}));
        assert_eq!(
            check_run_workload(&allowed, &["conda create -n x".into()], true),
            Ok(true)
        );
        let e = check_run_workload(&allowed, &["echo".into()], false).unwrap_err();
        assert!(e.contains("allowCustomEnvOverride=false"), "{e}");
    }
    /// Each bypass of the old spelling-based list (issue 12) and its
    /// relatives. Negative control: with `env_mutation` returning None
    /// (no lexer), the test failed at its first case, `python3 -mvenv v`
    /// (run once). The old regex list passed that one and `$c create`.
    #[test]
    fn env_creation_is_found_however_it_is_spelled() {
        let r = req(json!({"action": "run_workload"}));
        for (command, says) in [
            ("python3 -mvenv v", "python -m venv"),
            ("c=conda; $c create -n x", "\"$c\" is an expansion"),
            ("${c} create -n x", "is an expansion"),
            ("\"$c\" create", "is an expansion"),
            ("$(echo conda) create", "is an expansion"),
            ("eval \"$CMD\"", "eval runs"),
            ("eval conda create -n x", "conda create"),
            ("'con'da create -n x", "conda create"),
            ("\"conda\" create", "conda create"),
            ("\\conda create", "conda create"),
            ("$'\\x63onda' create", "conda create"),
            ("/opt/conda/bin/conda create -n x", "conda create"),
            ("echo ok && micromamba activate x", "conda activate"),
            ("echo ok; mamba env create -f e.yml", "conda env create"),
            ("python -m venv v", "python -m venv"),
            ("python3.11 -m virtualenv v", "python -m venv"),
            ("python3 -Im venv v", "python -m venv"),
            ("python3 -W ignore -m venv v", "python -m venv"),
            ("virtualenv v", "virtualenv"),
            ("uv venv", "uv venv"),
            ("uv --quiet venv .v", "uv venv"),
            ("source v/bin/activate", "source .../bin/activate"),
            (". v/bin/activate", "source .../bin/activate"),
            ("source activate x", "source activate"),
            ("A=1 env B=2 python3 -m venv v", "python -m venv"),
            ("nohup nice -n 5 python3 -m venv v &", "python -m venv"),
            ("srun -n 4 python -m venv v", "python -m venv"),
            ("time conda create -n x", "conda create"),
            ("x=$(conda create -n y)", "conda create"),
            ("echo `conda create -n y`", "conda create"),
            ("bash -c 'conda create -n y'", "conda create"),
            ("sh -c \"$X\"", "known only when the job runs"),
            ("bash <<EOF\nconda create -n y\nEOF", "conda create"),
            ("cat <<EOF\n$(conda create -n y)\nEOF", "conda create"),
            ("if true; then\n  conda create -n y\nfi", "conda create"),
            ("( cd d && virtualenv v )", "virtualenv"),
            ("eval \"$(conda shell.bash hook)\"", "conda shell hook"),
            ("conda $SUB -n x", "is an expansion"),
            ("python3 -m $M", "is an expansion"),
            ("nohup $c create", "is an expansion"),
        ] {
            let e = check_run_workload(&r, &[command.to_string()], false).expect_err(command);
            assert!(e.contains(says), "{command}: {e}");
            assert!(e.contains("allowEnvOverrides=true"), "{command}: {e}");
        }
    }

    /// Commands that create no environment still pass: words handed to
    /// another program (`echo conda create`) are data, not commands.
    #[test]
    fn benign_commands_pass() {
        let r = req(json!({"action": "run_workload"}));
        for command in [
            "python train.py",
            "python3 train.py --lr 0.1 --out \"$OUT\"",
            "echo conda create",
            "echo 'conda create -n x'",
            "grep -c venv log.txt",
            "python3 -m pip install --user numpy",
            "python3 -c 'import venv'",
            "srun -n \"$SLURM_NTASKS\" python3 train.py $ARGS",
            "\"$HOME/envs/x/bin/python\" train.py",
            "for i in 1 2; do python3 t.py $i; done",
            "cat <<'EOF' > notes.txt\nconda create -n x\nEOF",
            "x=1; echo $x",
            "bash run.sh",
            "case $m in a) python3 a.py ;; *) python3 b.py ;; esac",
            "printf '%s\\n' \"$(date)\"",
        ] {
            assert_eq!(
                check_run_workload(&r, &[command.to_string()], false),
                Ok(false),
                "{command}"
            );
        }
        // With overrides allowed, nothing of this is refused.
        let allowed = req(json!({"action": "run_workload", "allowEnvOverrides": true}));
        for command in ["python3 -mvenv v", "c=conda; $c create -n x"] {
            assert_eq!(
                check_run_workload(&allowed, &[command.to_string()], true),
                Ok(true),
                "{command}"
            );
        }
    }

    #[test]
    fn module_is_found_where_the_shell_runs_it() {
        let r = req(json!({"action": "run_workload"}));
        for command in ["echo a; module load x", "\\module load x", "true && ml gcc"] {
            let e = check_run_workload(&r, &[command.to_string()], false).unwrap_err();
            assert!(e.contains("inline module command"), "{command}: {e}");
        }
    }
}
