//! The reference's environment policy for `run_workload`: the job's
//! environment comes from the cluster profile, not from the call.
//!
//! These rules keep well-meaning agents on the profile's environment; they
//! are not a security boundary (a workload command is arbitrary shell by
//! design, and runs only inside the SLURM job).

use crate::request::Request;
use crate::script::uses_module_command;

const CUSTOM_ENV_MUTATIONS: &[(&str, &str)] = &[
    ("source activate", r"^\s*source\s+activate\b"),
    (
        "conda activate",
        r"^\s*(?:conda|mamba|micromamba)\s+activate\b",
    ),
    ("conda create", r"^\s*(?:conda|mamba|micromamba)\s+create\b"),
    (
        "python -m venv",
        r"^\s*(?:python(?:\d+(?:\.\d+)?)?)\s+-m\s+venv\b",
    ),
    ("uv venv", r"^\s*uv\s+venv\b"),
    ("virtualenv", r"^\s*virtualenv\b"),
    (
        "source .../bin/activate",
        r"^\s*source\s+.+/bin/activate(?:\s|$)",
    ),
    (
        "conda shell hook",
        r#"^\s*eval\s+["']?\$\(\s*conda\s+shell\."#,
    ),
];

fn env_mutation(line: &str) -> Option<&'static str> {
    CUSTOM_ENV_MUTATIONS.iter().find_map(|(label, pattern)| {
        crate::patterns::fixed(pattern, true)
            .filter(|re| re.is_match(line))
            .map(|_| *label)
    })
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
        if !allow && let Some(label) = env_mutation(line) {
            return Err(format!(
                "{action} rejected custom environment mutation ({label}: {line}). Use profile-managed env by default, or set allowEnvOverrides=true with execution.allowCustomEnvOverride=true for explicit override."
            ));
        }
    }
    Ok(allow)
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
}
