//! The plugin config (`plugins.entries.cluster-slurm.config`): parsing,
//! defaults and validation, with the reference extension's keys and defaults.
//!
//! Differences from the reference, all deliberate: unknown keys are refused
//! (the reference's manifest refused them too, its parser did not); counts
//! must be whole numbers; every header value is checked against its field's
//! grammar; `remoteRoot` must be an absolute path.

use crate::fields::{Coercion, FieldError, FieldResult, Fields};
use crate::header::Header;
use crate::routing::{DEFAULT_GPU_INDICATORS, DEFAULT_GPU_REQUIRED_SIGNATURES, Indicator};
use serde_json::{Value, json};

pub const DEFAULT_LOCAL_RUNS_DIR: &str = ".openclaw/cluster-runs";

/// Used when a profile lists no `moduleInitScripts` but needs `module`.
pub const DEFAULT_MODULE_INIT_SCRIPTS: &[&str] = &[
    "/etc/profile",
    "/etc/profile.d/modules.sh",
    "/usr/share/lmod/lmod/init/bash",
    "/usr/share/Modules/init/bash",
];

#[derive(Debug, Clone)]
pub struct Config {
    pub default_cluster: Option<String>,
    pub local_runs_dir: String,
    /// In config order.
    pub clusters: Vec<Profile>,
    pub routing: Routing,
    pub allow_custom_env_override: bool,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub id: String,
    /// Kept only to show in `list_clusters`; the guest never connects by it.
    pub ssh_target: String,
    pub remote_root: String,
    pub login_shell: bool,
    pub python_command: String,
    pub submit_args: Vec<String>,
    pub setup_commands: Vec<String>,
    pub module_init_scripts: Vec<String>,
    pub slurm_defaults: Header,
}

#[derive(Debug, Clone)]
pub struct Routing {
    pub default_profile: Option<String>,
    pub gpu_profile: Option<String>,
    pub gpu_indicators: Vec<Indicator>,
    pub auto_fallback_to_gpu_on_signatures: bool,
    pub gpu_required_error_signatures: Vec<Indicator>,
}

fn err(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_string(),
        message: message.into(),
    }
}

fn indicators(
    f: &mut Fields<'_>,
    key: &'static str,
    defaults: &[&str],
) -> FieldResult<Vec<Indicator>> {
    let path = f.child_path(key);
    let listed = f.string_list(key, true)?;
    let sources: Vec<String> = if listed.is_empty() {
        defaults.iter().map(|s| s.to_string()).collect()
    } else {
        listed
    };
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| Indicator::parse(s).map_err(|m| err(&format!("{path}[{i}]"), m)))
        .collect()
}

/// Paths on the cluster that the guest builds commands with: absolute, no
/// `..`, no characters that would need a shell to interpret them.
pub fn check_remote_root(path: &str, value: &str) -> FieldResult<String> {
    let trimmed = value.trim_end_matches('/');
    if value.starts_with('~') {
        return Err(err(
            path,
            format!(
                "{value:?}: use an absolute path (a '~' is not expanded; write /home/<user>/... instead)"
            ),
        ));
    }
    if !value.starts_with('/') || trimmed.is_empty() {
        return Err(err(
            path,
            format!(
                "{value:?} must be an absolute path below /, such as /scratch/<user>/openclaw-runs"
            ),
        ));
    }
    if trimmed.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(err(
            path,
            format!("{value:?} may not contain '.' or '..' segments"),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(err(path, "may not contain control characters"));
    }
    Ok(trimmed.to_string())
}

fn profile(id: &str, value: &Value) -> FieldResult<Profile> {
    let path = format!("clusters.{id}");
    let mut f = Fields::new(value, &path, Coercion::Strict)?;
    let ssh_target = f.string("sshTarget")?.ok_or_else(|| {
        err(
            &format!("{path}.sshTarget"),
            "is required (an ssh Host alias or user@host)",
        )
    })?;
    let remote_root_raw = f.string("remoteRoot")?.ok_or_else(|| {
        err(
            &format!("{path}.remoteRoot"),
            "is required (the base directory for runs on the cluster)",
        )
    })?;
    let remote_root = check_remote_root(&format!("{path}.remoteRoot"), &remote_root_raw)?;
    if let Some(s) = f.string("scheduler")?
        && s != "slurm"
    {
        return Err(err(
            &format!("{path}.scheduler"),
            format!("{s:?} is not supported (only \"slurm\")"),
        ));
    }
    let login_shell = f.bool("loginShell")?.unwrap_or(false);
    let python_command = f
        .string("pythonCommand")?
        .unwrap_or_else(|| "python3".to_string());
    let submit_args = f.string_list("submitArgs", true)?;
    let setup_commands = f.string_list("setupCommands", false)?;
    let module_init_scripts = f.string_list("moduleInitScripts", true)?;
    for (i, s) in module_init_scripts.iter().enumerate() {
        if s.contains('\'') || s.chars().any(char::is_control) {
            return Err(err(
                &format!("{path}.moduleInitScripts[{i}]"),
                "may not contain quotes or control characters",
            ));
        }
    }
    let slurm_defaults = match f.object("slurmDefaults")? {
        Some(h) => Header::read(h)?,
        None => Header::default(),
    };
    f.finish()?;
    Ok(Profile {
        id: id.to_string(),
        ssh_target,
        remote_root,
        login_shell,
        python_command,
        submit_args,
        setup_commands,
        module_init_scripts,
        slurm_defaults,
    })
}

impl Config {
    pub fn parse(value: &Value) -> FieldResult<Config> {
        let empty = json!({});
        let value = if value.is_null() { &empty } else { value };
        let mut f = Fields::new(value, "", Coercion::Strict)?;
        let default_cluster = f.string("defaultCluster")?;
        let local_runs_dir = f
            .string("localRunsDir")?
            .unwrap_or_else(|| DEFAULT_LOCAL_RUNS_DIR.to_string());
        if local_runs_dir.starts_with('/')
            || local_runs_dir.starts_with('~')
            || local_runs_dir.split(['/', '\\']).any(|s| s == "..")
        {
            return Err(err(
                "localRunsDir",
                format!("{local_runs_dir:?} must be a path inside the workspace"),
            ));
        }
        let mut clusters = Vec::new();
        for (raw_id, v) in f.entries("clusters")? {
            let id = raw_id.trim();
            if id.is_empty() {
                continue;
            }
            if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(err(
                    &format!("clusters.{id}"),
                    "profile ids may not contain spaces or control characters",
                ));
            }
            clusters.push(profile(id, v)?);
        }
        let routing_value = f.raw("routing").unwrap_or(&empty);
        let mut r = Fields::new(routing_value, "routing", Coercion::Strict)?;
        let routing = Routing {
            default_profile: r.string("defaultProfile")?,
            gpu_profile: r.string("gpuProfile")?,
            gpu_indicators: indicators(&mut r, "gpuIndicators", DEFAULT_GPU_INDICATORS)?,
            auto_fallback_to_gpu_on_signatures: r
                .bool("autoFallbackToGpuOnSignatures")?
                .unwrap_or(true),
            gpu_required_error_signatures: indicators(
                &mut r,
                "gpuRequiredErrorSignatures",
                DEFAULT_GPU_REQUIRED_SIGNATURES,
            )?,
        };
        r.finish()?;
        let allow_custom_env_override = match f.object("execution")? {
            Some(mut e) => {
                let allow = e.bool("allowCustomEnvOverride")?.unwrap_or(false);
                e.finish()?;
                allow
            }
            None => false,
        };
        f.finish()?;
        let config = Config {
            default_cluster,
            local_runs_dir,
            clusters,
            routing,
            allow_custom_env_override,
        };
        config.check_references()?;
        Ok(config)
    }

    fn check_references(&self) -> FieldResult<()> {
        let known = |id: &str| self.profile(id).is_some();
        let available = self.cluster_ids().join(", ");
        if let Some(d) = &self.default_cluster
            && !known(d)
        {
            return Err(err(
                "defaultCluster",
                format!("{d:?} is not a configured cluster (available: {available})"),
            ));
        }
        if let (Some(d), Some(p)) = (&self.default_cluster, &self.routing.default_profile)
            && d != p
        {
            return Err(err(
                "routing.defaultProfile",
                format!("{p:?} must equal defaultCluster {d:?} when both are set"),
            ));
        }
        if let Some(p) = &self.routing.default_profile
            && !known(p)
        {
            return Err(err(
                "routing.defaultProfile",
                format!("{p:?} is not a configured cluster (available: {available})"),
            ));
        }
        if let Some(g) = &self.routing.gpu_profile
            && !known(g)
        {
            return Err(err(
                "routing.gpuProfile",
                format!("{g:?} is not a configured cluster (available: {available})"),
            ));
        }
        Ok(())
    }

    pub fn profile(&self, id: &str) -> Option<&Profile> {
        self.clusters.iter().find(|c| c.id == id)
    }

    pub fn cluster_ids(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.id.as_str()).collect()
    }

    /// `routing.defaultProfile`, else `defaultCluster`.
    pub fn effective_default(&self) -> Option<&str> {
        self.routing
            .default_profile
            .as_deref()
            .or(self.default_cluster.as_deref())
    }

    /// Resolve a cluster id for the low-level family of actions: the given
    /// id, else the default, else the only profile.
    pub fn resolve_cluster(&self, requested: Option<&str>) -> Result<&Profile, String> {
        let id = match requested.map(str::trim).filter(|s| !s.is_empty()) {
            Some(id) => id,
            None => match (self.effective_default(), self.clusters.as_slice()) {
                (Some(d), _) => d,
                (None, [only]) => only.id.as_str(),
                (None, _) => {
                    return Err("cluster is required (no defaultCluster configured)".to_string());
                }
            },
        };
        self.profile(id).ok_or_else(|| {
            format!(
                "Unknown cluster {id:?}. Available: {}",
                self.cluster_ids().join(", ")
            )
        })
    }

    /// The normalised config with every default filled in.
    pub fn to_json(&self) -> Value {
        let clusters: serde_json::Map<String, Value> = self
            .clusters
            .iter()
            .map(|p| {
                (
                    p.id.clone(),
                    json!({
                        "sshTarget": p.ssh_target,
                        "remoteRoot": p.remote_root,
                        "scheduler": "slurm",
                        "loginShell": p.login_shell,
                        "pythonCommand": p.python_command,
                        "submitArgs": p.submit_args,
                        "setupCommands": p.setup_commands,
                        "moduleInitScripts": p.module_init_scripts,
                        "slurmDefaults": p.slurm_defaults,
                    }),
                )
            })
            .collect();
        json!({
            "defaultCluster": self.default_cluster,
            "localRunsDir": self.local_runs_dir,
            "routing": self.routing_json(),
            "execution": { "allowCustomEnvOverride": self.allow_custom_env_override },
            "clusters": clusters,
        })
    }

    pub fn routing_json(&self) -> Value {
        let sources = |l: &[Indicator]| l.iter().map(|i| i.source.clone()).collect::<Vec<_>>();
        json!({
            "defaultProfile": self.effective_default(),
            "gpuProfile": self.routing.gpu_profile,
            "gpuIndicators": sources(&self.routing.gpu_indicators),
            "autoFallbackToGpuOnSignatures": self.routing.auto_fallback_to_gpu_on_signatures,
            "gpuRequiredErrorSignatures": sources(&self.routing.gpu_required_error_signatures),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gautschi() -> Value {
        json!({
          "defaultCluster": "gautschi-cpu",
          "routing": {
            "defaultProfile": "gautschi-cpu",
            "gpuProfile": "gautschi-gpu",
            "gpuIndicators": ["torch.cuda", "--device cuda", "jax[cuda]", "tensorflow-gpu"],
            "autoFallbackToGpuOnSignatures": true
          },
          "localRunsDir": ".openclaw/cluster-runs",
          "clusters": {
            "gautschi-cpu": {
              "sshTarget": "gautschi",
              "remoteRoot": "/scratch/gautschi/someone/openclaw-runs",
              "scheduler": "slurm",
              "loginShell": true,
              "moduleInitScripts": ["/etc/profile", "/etc/profile.d/modules.sh", "/usr/share/lmod/lmod/init/bash"],
              "setupCommands": ["module --force purge", "module load rcac"],
              "slurmDefaults": {
                "partition": "cpu", "account": "lilly-agentic-cpu", "time": "02:00:00", "nodes": 1,
                "ntasksPerNode": 1, "cpusPerTask": 4, "mem": "8G", "output": "slurm-%j.out",
                "error": "slurm-%j.err", "modules": ["python/3.11"]
              }
            },
            "gautschi-gpu": {
              "sshTarget": "gautschi",
              "remoteRoot": "/scratch/gautschi/someone/openclaw-runs",
              "scheduler": "slurm",
              "loginShell": true,
              "setupCommands": ["module --force purge", "module load modtree/gpu"],
              "slurmDefaults": {
                "partition": "ai", "account": "lilly-ibil", "qos": "normal", "time": "04:00:00",
                "nodes": 1, "ntasks": 1, "cpusPerTask": 14, "gpusPerNode": 1, "mem": "16G",
                "output": "slurm-%j.out", "error": "slurm-%j.err", "modules": ["modtree/gpu"]
              }
            }
          }
        })
    }

    #[test]
    fn reference_example_loads() {
        let c = Config::parse(&gautschi()).unwrap();
        assert_eq!(c.cluster_ids(), vec!["gautschi-cpu", "gautschi-gpu"]);
        assert_eq!(c.routing.gpu_indicators.len(), 4);
        assert_eq!(
            c.routing.gpu_required_error_signatures.len(),
            DEFAULT_GPU_REQUIRED_SIGNATURES.len()
        );
        assert_eq!(
            c.profile("gautschi-gpu")
                .unwrap()
                .slurm_defaults
                .gpus_per_node,
            Some(1)
        );
        assert!(!c.allow_custom_env_override);
    }

    #[test]
    fn empty_config_gets_defaults() {
        let c = Config::parse(&Value::Null).unwrap();
        assert_eq!(c.local_runs_dir, DEFAULT_LOCAL_RUNS_DIR);
        assert!(c.clusters.is_empty());
        assert!(c.routing.auto_fallback_to_gpu_on_signatures);
        assert_eq!(c.routing.gpu_indicators.len(), DEFAULT_GPU_INDICATORS.len());
    }

    #[test]
    fn errors_name_the_key() {
        let mut v = gautschi();
        v["clusters"]["gautschi-cpu"]["slurmDefaults"]["time"] = json!("2 hours");
        let e = Config::parse(&v).unwrap_err();
        assert_eq!(e.path, "clusters.gautschi-cpu.slurmDefaults.time");

        let mut v = gautschi();
        v["clusters"]["gautschi-cpu"]["remoteRoot"] = json!("~/runs");
        assert_eq!(
            Config::parse(&v).unwrap_err().path,
            "clusters.gautschi-cpu.remoteRoot"
        );

        let mut v = gautschi();
        v["routing"]["gpuProfile"] = json!("nope");
        let e = Config::parse(&v).unwrap_err();
        assert_eq!(e.path, "routing.gpuProfile");
        assert!(
            e.message.contains("gautschi-cpu, gautschi-gpu"),
            "{}",
            e.message
        );

        let mut v = gautschi();
        v["clusters"]["gautschi-cpu"]["sshTraget"] = json!("x");
        assert_eq!(
            Config::parse(&v).unwrap_err().path,
            "clusters.gautschi-cpu.sshTraget"
        );

        let mut v = gautschi();
        v["localRunsDir"] = json!("../outside");
        assert_eq!(Config::parse(&v).unwrap_err().path, "localRunsDir");
    }

    #[test]
    fn execution_and_job_name_are_accepted() {
        let mut v = gautschi();
        v["execution"] = json!({"allowCustomEnvOverride": true});
        v["clusters"]["gautschi-cpu"]["slurmDefaults"]["jobName"] = json!("agent");
        let c = Config::parse(&v).unwrap();
        assert!(c.allow_custom_env_override);
        assert_eq!(
            c.profile("gautschi-cpu")
                .unwrap()
                .slurm_defaults
                .job_name
                .as_deref(),
            Some("agent")
        );
    }

    #[test]
    fn resolve_cluster_rules() {
        let c = Config::parse(&gautschi()).unwrap();
        assert_eq!(c.resolve_cluster(None).unwrap().id, "gautschi-cpu");
        assert!(
            c.resolve_cluster(Some("x"))
                .unwrap_err()
                .contains("Available: gautschi-cpu, gautschi-gpu")
        );
    }
}
