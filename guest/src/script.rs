//! Rendering the SLURM batch script (minijinja).
//!
//! Layout, top to bottom: shebang; `#SBATCH` directives (validated values,
//! fixed order); `set -euo pipefail`; the exit-status marker (an EXIT trap
//! writing `.cluster-slurm/exit-<job id>` in the submit directory); `export`s; the `module` bootstrap (only
//! when something uses `module`); the profile's setup commands; the profile's
//! `module load`s; the workload commands.
//!
//! Setup commands deliberately come *before* the module loads (the reference
//! did the opposite): sites put `module --force purge` in setup, and a purge
//! after the loads silently unloaded the profile's modules.

use crate::config::DEFAULT_MODULE_INIT_SCRIPTS;
use crate::header::Header;
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior, context};

const TEMPLATE: &str = r#"{% if login_shell %}
#!/bin/bash -l
{% else %}
#!/bin/bash
{% endif %}
{% for d in directives %}
#SBATCH {{ d }}
{% endfor %}

set -euo pipefail

# The exit status, kept beside the job: the final state stays known after
# squeue has forgotten the job, even without accounting (sacct).
__cs_marks="${SLURM_SUBMIT_DIR:-.}/.cluster-slurm"
__cs_job="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-}}"
__cs_job="${__cs_job:-${SLURM_JOB_ID:-unknown}}"
# The job's own mark, as it starts: `reconcile` finds it after a crash
# between sbatch and the ledger, whatever squeue and sacct still know.
mkdir -p "$__cs_marks/job-${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-unknown}}" 2>/dev/null || true
trap 'echo "$?" > "$__cs_marks/exit-$__cs_job" 2>/dev/null || true' EXIT

{% if env %}
{% for pair in env %}
export {{ pair[0] }}={{ pair[1] | sq }}
{% endfor %}

{% endif %}
{% if module_bootstrap %}
# Ensure the module command is available for non-login job shells.
if ! type module >/dev/null 2>&1; then
  for __openclaw_mod_init in{% for s in init_scripts %} {{ s | sq }}{% endfor %}; do
    if [ -r "$__openclaw_mod_init" ]; then
      # shellcheck disable=SC1090
      . "$__openclaw_mod_init" >/dev/null 2>&1 || true
      if type module >/dev/null 2>&1; then
        break
      fi
    fi
  done
fi
if ! type module >/dev/null 2>&1; then
  echo 'openclaw: module command unavailable; configure moduleInitScripts or setupCommands for this profile.' >&2
  exit 127
fi

{% endif %}
{% for c in setup_commands %}
{{ c }}
{% endfor %}
{% for m in modules %}
module load {{ m }}
{% endfor %}
{% if setup_commands or modules %}

{% endif %}
{% for c in commands %}
{{ c }}
{% endfor %}
"#;

/// Everything a script is made of; all values already validated.
#[derive(Debug, Clone, Default)]
pub struct ScriptSpec {
    pub login_shell: bool,
    pub header: Header,
    pub env: Vec<(String, String)>,
    pub module_init_scripts: Vec<String>,
    pub setup_commands: Vec<String>,
    pub modules: Vec<String>,
    pub commands: Vec<String>,
}

/// POSIX single quoting: the value is taken literally by the shell.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r#"'"'"'"#))
}

/// A word for a shell command line: unchanged when it is plainly safe,
/// single-quoted otherwise.
pub fn shell_word(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./=:,%@+-".contains(c));
    if plain {
        value.to_string()
    } else {
        shell_quote(value)
    }
}

pub fn uses_module_command(line: &str) -> bool {
    crate::patterns::fixed(r"^\s*(module|ml)\b", true)
        .map(|re| line.lines().any(|l| re.is_match(l)))
        .unwrap_or(false)
}

pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = crate::patterns::fixed(r"^[A-Za-z_][A-Za-z0-9_]*$", false)
        .map(|re| re.is_match(name))
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!("Invalid environment variable name: {name:?}"))
    }
}

pub fn render(spec: &ScriptSpec) -> Result<String, String> {
    for (k, _) in &spec.env {
        check_env_name(k)?;
    }
    let trimmed = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let setup_commands = trimmed(&spec.setup_commands);
    let commands = trimmed(&spec.commands);
    let mut modules: Vec<String> = Vec::new();
    for m in trimmed(&spec.modules) {
        if !modules.contains(&m) {
            modules.push(m);
        }
    }
    let module_bootstrap = !modules.is_empty()
        || setup_commands
            .iter()
            .chain(commands.iter())
            .any(|c| uses_module_command(c));
    // An empty list in the config must not produce an empty `for` loop (a
    // bash syntax error in the reference): fall back to the usual locations.
    let init_scripts: Vec<String> = if spec.module_init_scripts.is_empty() {
        DEFAULT_MODULE_INIT_SCRIPTS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        spec.module_init_scripts.clone()
    };

    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| format!("script template error: {e}"))?,
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("sq", |v: String| shell_quote(&v));
    env.add_template("job.slurm", TEMPLATE)
        .map_err(|e| format!("script template error: {e}"))?;
    let template = env
        .get_template("job.slurm")
        .map_err(|e| format!("script template error: {e}"))?;
    let pairs: Vec<Vec<String>> = spec
        .env
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    let rendered = template
        .render(context! {
            login_shell => spec.login_shell,
            directives => spec.header.directives(),
            env => pairs,
            module_bootstrap => module_bootstrap,
            init_scripts => init_scripts,
            setup_commands => setup_commands,
            modules => modules,
            commands => commands,
        })
        .map_err(|e| format!("script rendering failed: {e}"))?;
    Ok(rendered)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    pub(crate) fn bash_n(script: &str) -> (bool, String) {
        let mut child = Command::new("bash")
            .arg("-n")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn gpu_spec() -> ScriptSpec {
        ScriptSpec {
            login_shell: true,
            header: Header {
                job_name: Some("demo".into()),
                partition: Some("ai".into()),
                time: Some("04:00:00".into()),
                gpus_per_node: Some(1),
                output: Some("slurm-%j.out".into()),
                ..Header::default()
            },
            env: vec![
                ("OMP_NUM_THREADS".into(), "2".into()),
                ("MSG".into(), "it's $HOME".into()),
            ],
            module_init_scripts: vec![],
            setup_commands: vec!["module --force purge".into(), "  ".into()],
            modules: vec!["modtree/gpu".into(), "modtree/gpu".into()],
            commands: vec!["python3 train.py --device cuda".into()],
        }
    }

    #[test]
    fn renders_in_documented_order_and_passes_bash_n() {
        let s = render(&gpu_spec()).unwrap();
        let (ok, err) = bash_n(&s);
        assert!(ok, "bash -n failed: {err}\n{s}");
        assert!(s.starts_with("#!/bin/bash -l\n#SBATCH --job-name=demo\n#SBATCH --partition=ai\n"));
        assert!(s.contains("export MSG='it'\"'\"'s $HOME'\n"));
        let purge = s.find("module --force purge").unwrap();
        let load = s.find("module load modtree/gpu").unwrap();
        assert!(purge < load, "setup must run before module loads:\n{s}");
        assert_eq!(s.matches("module load modtree/gpu").count(), 1);
        assert!(s.ends_with("python3 train.py --device cuda\n"));
    }

    #[test]
    fn empty_init_scripts_fall_back_to_defaults() {
        // The reference produced `then` + `fi` with nothing between: a syntax error.
        let s = render(&gpu_spec()).unwrap();
        assert!(s.contains("'/usr/share/lmod/lmod/init/bash'"), "{s}");
    }

    #[test]
    fn no_bootstrap_without_module_use() {
        let s = render(&ScriptSpec {
            commands: vec!["echo hi".into()],
            ..ScriptSpec::default()
        })
        .unwrap();
        assert!(!s.contains("module"), "{s}");
        assert!(bash_n(&s).0);
        assert!(s.starts_with("#!/bin/bash\n\nset -euo pipefail\n"));
    }

    #[test]
    fn bad_env_name_refused() {
        let mut spec = gpu_spec();
        spec.env = vec![("A;B".into(), "x".into())];
        assert!(
            render(&spec)
                .unwrap_err()
                .contains("Invalid environment variable name")
        );
    }

    #[test]
    fn multiline_commands_survive() {
        let s = render(&ScriptSpec {
            commands: vec!["for i in 1 2; do\n  echo $i\ndone".into()],
            ..ScriptSpec::default()
        })
        .unwrap();
        assert!(bash_n(&s).0, "{s}");
        assert!(s.contains("for i in 1 2; do\n  echo $i\ndone\n"));
    }
}
