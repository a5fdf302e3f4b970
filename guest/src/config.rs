//! The plugin config (`plugins.entries.cluster-slurm.config`): parsing,
//! defaults and validation, with the reference extension's keys and defaults.
//!
//! Differences from the reference, all deliberate: unknown keys are refused
//! (the reference's manifest refused them too, its parser did not); counts
//! must be whole numbers; every header value is checked against its field's
//! grammar; `remoteRoot` is an absolute path or `~/dir` (expanded by the
//! host on the cluster); per-profile `policy` and top-level `presets` are ours.

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
    pub presets: Vec<Preset>,
}

/// What an agent may change per profile; refusals name the rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Header fields `headerOverrides` may set; None = all (the reference's behaviour).
    pub overridable_fields: Option<Vec<String>>,
    pub max_time_minutes: Option<u64>,
    pub max_nodes: Option<u64>,
    pub max_gpus: Option<u64>,
    pub max_array_size: u64,
    pub max_concurrent_jobs: Option<u64>,
    /// Extra `sbatch` arguments from calls; default: allowed unless another
    /// rule of this policy is set (they could bypass it).
    pub allow_submit_args: bool,
    /// Requests above these sizes wait for an operator's approval.
    pub approval: ApprovalRules,
}

/// `requireApprovalAbove`: a `run_workload` asking for more than any of
/// these is held as `PENDING_APPROVAL` until an operator decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalRules {
    pub gpus: Option<u64>,
    pub time_minutes: Option<u64>,
    pub array_tasks: Option<u64>,
    pub nodes: Option<u64>,
}

impl ApprovalRules {
    pub fn any(&self) -> bool {
        self.gpus.is_some()
            || self.time_minutes.is_some()
            || self.array_tasks.is_some()
            || self.nodes.is_some()
    }
}

impl Policy {
    /// True when any restricting rule is configured.
    pub fn restricts(&self) -> bool {
        self.overridable_fields.is_some()
            || self.max_time_minutes.is_some()
            || self.max_nodes.is_some()
            || self.max_gpus.is_some()
            || self.max_concurrent_jobs.is_some()
            || self.approval.any()
    }
}

/// SLURM's own default `MaxArraySize` is 1001; a larger array needs the
/// operator to say so.
pub const DEFAULT_MAX_ARRAY_SIZE: u64 = 1000;

/// An operator-defined workload: `run_workload` with `preset` runs it, and the
/// agent may fill only the declared parameters.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: String,
    pub description: Option<String>,
    pub cluster: Option<String>,
    /// "cpu" or "gpu": the routing default or `routing.gpuProfile`.
    pub role: Option<String>,
    pub commands: Vec<String>,
    pub local_paths: Vec<String>,
    pub env: Vec<(String, String)>,
    pub header: Header,
    pub parameters: Vec<PresetParameter>,
}

#[derive(Debug, Clone)]
pub struct PresetParameter {
    pub name: String,
    pub description: Option<String>,
    pub pattern: String,
    pub default: Option<String>,
}

/// Values a preset parameter may take unless the operator says otherwise:
/// no spaces, quotes or shell metacharacters.
pub const DEFAULT_PARAMETER_PATTERN: &str = r"^[A-Za-z0-9_.,:/+=@%-]{1,200}$";

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
    pub policy: Policy,
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

/// The run root on the cluster: an absolute path, or one in the login
/// user's home written `~` or `~/dir` (the host expands it on the cluster,
/// never creating a literal `~` directory). No `.`/`..` segments.
pub fn check_remote_root(path: &str, value: &str) -> FieldResult<String> {
    let trimmed = value.trim_end_matches('/');
    let home_form = trimmed == "~" || value.starts_with("~/");
    if value.starts_with('~') && !home_form {
        return Err(err(
            path,
            format!(
                "{value:?}: only the login user's own home can be written with '~' (\"~/dir\"); use an absolute path otherwise"
            ),
        ));
    }
    if !(value.starts_with('/') || home_form) || trimmed.is_empty() {
        return Err(err(
            path,
            format!(
                "{value:?} must be an absolute path, such as /scratch/<user>/openclaw-runs, or ~/dir"
            ),
        ));
    }
    if trimmed.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(err(
            path,
            format!("{value:?} may not contain '.' or '..' segments"),
        ));
    }
    if trimmed.contains("//") {
        return Err(err(
            path,
            format!("{value:?} may not contain an empty segment ('//'); write each '/' once"),
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
    let policy_path = f.child_path("policy");
    let policy = match f.object("policy")? {
        Some(p) => read_policy(p)?,
        None => Policy {
            max_array_size: DEFAULT_MAX_ARRAY_SIZE,
            allow_submit_args: true,
            ..Policy::default()
        },
    };
    // A limit below the profile's own defaults would refuse every job with a
    // message that blames the agent: say so here instead.
    if let (Some(max), Some(m)) = (policy.max_time_minutes, slurm_defaults.time_minutes())
        && m > max
    {
        return Err(err(
            &format!("{policy_path}.maxTime"),
            format!(
                "is shorter than slurmDefaults.time {:?}",
                slurm_defaults.time.as_deref().unwrap_or("")
            ),
        ));
    }
    if policy.max_time_minutes.is_some()
        && slurm_defaults.time.is_some()
        && slurm_defaults.time_minutes().is_none()
    {
        return Err(err(
            &format!("{policy_path}.maxTime"),
            "is set, but slurmDefaults.time is UNLIMITED",
        ));
    }
    if let (Some(max), Some(n)) = (policy.max_nodes, slurm_defaults.nodes)
        && n > max
    {
        return Err(err(
            &format!("{policy_path}.maxNodes"),
            format!("is below slurmDefaults.nodes {n}"),
        ));
    }
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
        policy,
    })
}

fn read_policy(mut f: Fields<'_>) -> FieldResult<Policy> {
    let fields_path = f.child_path("overridableFields");
    let overridable_fields = match f.raw("overridableFields") {
        None => None,
        Some(_) => {
            let list = f.string_list("overridableFields", true)?;
            for (i, name) in list.iter().enumerate() {
                if !crate::header::FIELDS.contains(&name.as_str()) {
                    return Err(err(
                        &format!("{fields_path}[{i}]"),
                        format!(
                            "{name:?} is not a header field (one of: {})",
                            crate::header::FIELDS.join(", ")
                        ),
                    ));
                }
            }
            Some(list)
        }
    };
    let max_time_minutes = limited_time(&mut f, "maxTime")?;
    let max_nodes = f.uint("maxNodes", 1, 100_000)?;
    let max_gpus = f.uint("maxGpus", 0, 100_000)?;
    let max_array_size = f
        .uint("maxArraySize", 0, 10_000_000)?
        .unwrap_or(DEFAULT_MAX_ARRAY_SIZE);
    let max_concurrent_jobs = f.uint("maxConcurrentJobs", 1, 1_000_000)?;
    let approval = match f.object("requireApprovalAbove")? {
        Some(rules) => read_approval_rules(rules)?,
        None => ApprovalRules::default(),
    };
    let mut policy = Policy {
        overridable_fields,
        max_time_minutes,
        max_nodes,
        max_gpus,
        max_array_size,
        max_concurrent_jobs,
        allow_submit_args: true,
        approval,
    };
    policy.allow_submit_args = f.bool("allowSubmitArgs")?.unwrap_or(!policy.restricts());
    f.finish()?;
    Ok(policy)
}

/// A time limit in minutes (`UNLIMITED` is no limit, so it is refused).
fn limited_time(f: &mut Fields<'_>, key: &'static str) -> FieldResult<Option<u64>> {
    let path = f.child_path(key);
    match f.string(key)? {
        None => Ok(None),
        Some(t) => crate::header::time_minutes(&t).map(Some).ok_or_else(|| {
            err(
                &path,
                format!("{t:?} is not a limited SLURM time such as 04:00:00 or 2-00:00:00"),
            )
        }),
    }
}

fn read_approval_rules(mut f: Fields<'_>) -> FieldResult<ApprovalRules> {
    let rules = ApprovalRules {
        gpus: f.uint("gpus", 0, 100_000)?,
        time_minutes: limited_time(&mut f, "time")?,
        array_tasks: f.uint("arrayTasks", 0, 10_000_000)?,
        nodes: f.uint("nodes", 0, 100_000)?,
    };
    f.finish()?;
    Ok(rules)
}

fn read_preset(name: &str, value: &Value) -> FieldResult<Preset> {
    let path = format!("presets.{name}");
    let mut f = Fields::new(value, &path, Coercion::Strict)?;
    let description = f.string("description")?;
    let cluster = f.string("cluster")?;
    let role = f.string("role")?;
    if let Some(r) = &role
        && r != "cpu"
        && r != "gpu"
    {
        return Err(err(
            &format!("{path}.role"),
            format!("{r:?} must be \"cpu\" or \"gpu\""),
        ));
    }
    let mut commands: Vec<String> = f.string_verbatim("command")?.into_iter().collect();
    commands.extend(f.string_list("commands", false)?);
    if commands.is_empty() {
        return Err(err(
            &format!("{path}.commands"),
            "a preset needs command or commands",
        ));
    }
    let local_paths = f.string_list("localPaths", true)?;
    let mut env = Vec::new();
    for (k, v) in f.entries("env")? {
        match v {
            Value::String(s) => env.push((k, s.clone())),
            _ => return Err(err(&format!("{path}.env.{k}"), "must be a string")),
        }
    }
    let header = match f.object("headerOverrides")? {
        Some(h) => Header::read(h)?,
        None => Header::default(),
    };
    let mut parameters = Vec::new();
    for (pname, pvalue) in f.entries("parameters")? {
        let ppath = format!("{path}.parameters.{pname}");
        if !pname.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || pname.is_empty() {
            return Err(err(&ppath, "parameter names use letters, digits and _"));
        }
        let mut p = Fields::new(pvalue, &ppath, Coercion::Strict)?;
        let pattern = p
            .string("pattern")?
            .unwrap_or_else(|| DEFAULT_PARAMETER_PATTERN.to_string());
        let re = regex_lite::Regex::new(&pattern).map_err(|e| {
            err(
                &format!("{ppath}.pattern"),
                format!("not a valid regular expression: {e}"),
            )
        })?;
        let param = PresetParameter {
            name: pname.clone(),
            description: p.string("description")?,
            default: p.string("default")?,
            pattern,
        };
        if let Some(d) = param.default.as_ref().filter(|d| !re.is_match(d)) {
            return Err(err(
                &format!("{ppath}.default"),
                format!(
                    "{d:?} does not match the parameter's pattern {}",
                    param.pattern
                ),
            ));
        }
        p.finish()?;
        parameters.push(param);
    }
    // Placeholders only, each a plain word: see `template.rs` for why.
    let declared: Vec<&str> = parameters.iter().map(|p| p.name.as_str()).collect();
    for (i, command) in commands.iter().enumerate() {
        crate::template::Template::parse(command, &declared)
            .map_err(|e| err(&format!("{path}.commands[{i}]"), e))?;
    }
    f.finish()?;
    Ok(Preset {
        name: name.to_string(),
        description,
        cluster,
        role,
        commands,
        local_paths,
        env,
        header,
        parameters,
    })
}

impl Profile {
    pub fn policy_json(&self) -> Value {
        let p = &self.policy;
        json!({
            "overridableFields": p.overridable_fields,
            "maxTimeMinutes": p.max_time_minutes,
            "maxNodes": p.max_nodes,
            "maxGpus": p.max_gpus,
            "maxArraySize": p.max_array_size,
            "maxConcurrentJobs": p.max_concurrent_jobs,
            "allowSubmitArgs": p.allow_submit_args,
            "requireApprovalAbove": p.approval.any().then(|| json!({
                "gpus": p.approval.gpus,
                "timeMinutes": p.approval.time_minutes,
                "arrayTasks": p.approval.array_tasks,
                "nodes": p.approval.nodes,
            })),
        })
    }
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
        let mut presets = Vec::new();
        for (name, v) in f.entries("presets")? {
            presets.push(read_preset(name.trim(), v)?);
        }
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
            presets,
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
        for p in &self.presets {
            if let Some(c) = &p.cluster
                && !known(c)
            {
                return Err(err(
                    &format!("presets.{}.cluster", p.name),
                    format!("{c:?} is not a configured cluster (available: {available})"),
                ));
            }
            if p.role.as_deref() == Some("gpu") && self.routing.gpu_profile.is_none() {
                return Err(err(
                    &format!("presets.{}.role", p.name),
                    "role \"gpu\" needs routing.gpuProfile",
                ));
            }
        }
        Ok(())
    }

    pub fn preset(&self, name: &str) -> Option<&Preset> {
        self.presets.iter().find(|p| p.name == name)
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
                        "policy": p.policy_json(),
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

    pub fn presets_json(&self) -> Value {
        Value::Array(
            self.presets
                .iter()
                .map(|p| {
                    let params: Vec<Value> = p
                        .parameters
                        .iter()
                        .map(|q| json!({"name": q.name, "description": q.description, "pattern": q.pattern, "default": q.default}))
                        .collect();
                    json!({"name": p.name, "description": p.description, "cluster": p.cluster, "role": p.role, "parameters": params})
                })
                .collect(),
        )
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

/// JSON Schema (draft-07 keywords, as OpenClaw's AJV validates) of the plugin
/// config: every key the parser reads, with the same value grammars, and
/// `additionalProperties: false` everywhere the parser refuses unknown keys.
/// Rules across keys (a default naming a configured profile, a limit above the
/// profile's own defaults) are checked by the parser only.
pub fn json_schema() -> Value {
    let strings = |d: &str| json!({"type": "array", "items": {"type": "string"}, "description": d});
    let text = |d: &str| json!({"type": "string", "description": d});
    let flag = |d: &str| json!({"type": "boolean", "description": d});
    let blank = json!({"pattern": r"^\s*$"});
    let remote_root = json!({
        "type": "string",
        "description": "Directory for runs on the cluster: an absolute path, or ~/dir in the login user's home",
        "allOf": [
            {"pattern": r"^(/|~/|~$)"},
            {"not": {"pattern": r"(^|/)\.{1,2}(/|$)|^/+$|[\x00-\x1f]"}}
        ],
    });
    let policy = json!({
        "type": "object",
        "additionalProperties": false,
        "description": "What agents may change on this profile; refusals name the rule",
        "properties": {
            "overridableFields": {"type": "array", "items": {"enum": crate::header::FIELDS}, "description": "Header fields headerOverrides may set (default: all)"},
            "maxTime": {"type": "string", "description": "Longest --time, e.g. 04:00:00", "anyOf": [blank, {"allOf": [{"pattern": r"^(?:\d{1,4}-)?\d{1,5}(?::\d{1,2}){0,2}$"}]}]},
            "maxNodes": {"type": "integer", "minimum": 1, "maximum": 100_000},
            "maxGpus": {"type": "integer", "minimum": 0, "maximum": 100_000},
            "maxArraySize": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
            "maxConcurrentJobs": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            "allowSubmitArgs": flag("Allow extra sbatch arguments from calls (default: only when no other rule is set)"),
            "requireApprovalAbove": {
                "type": "object",
                "additionalProperties": false,
                "description": "A run_workload asking for more than any of these waits as PENDING_APPROVAL until an operator runs `cluster-slurm approve|reject RUN`",
                "properties": {
                    "gpus": {"type": "integer", "minimum": 0, "maximum": 100_000, "description": "GPUs in total"},
                    "time": {"type": "string", "description": "Time limit, e.g. 24:00:00", "anyOf": [blank, {"allOf": [{"pattern": r"^(?:\d{1,4}-)?\d{1,5}(?::\d{1,2}){0,2}$"}]}]},
                    "arrayTasks": {"type": "integer", "minimum": 0, "maximum": 10_000_000, "description": "Tasks of a job array"},
                    "nodes": {"type": "integer", "minimum": 0, "maximum": 100_000},
                },
            },
        },
    });
    let cluster = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["sshTarget", "remoteRoot"],
        "properties": {
            "sshTarget": {"type": "string", "pattern": r"\S", "description": "ssh Host alias or user@host"},
            "remoteRoot": remote_root,
            "scheduler": {"type": "string", "anyOf": [blank, {"const": "slurm"}]},
            "loginShell": flag("Use #!/bin/bash -l"),
            "pythonCommand": text("Python used in missing-package hints (default python3)"),
            "submitArgs": strings("Extra sbatch arguments"),
            "setupCommands": strings("Lines run in the job before the module loads"),
            "moduleInitScripts": {"type": "array", "items": {"type": "string", "pattern": r"^[^'\x00-\x1f]*$"}, "description": "Scripts sourced to get the module command"},
            "slurmDefaults": crate::header::header_schema("Default job header"),
            "policy": policy,
        },
    });
    let preset = json!({
        "type": "object",
        "additionalProperties": false,
        "anyOf": [{"required": ["command"]}, {"required": ["commands"], "properties": {"commands": {"minItems": 1}}}],
        "properties": {
            "description": text("Shown to agents in list_clusters"),
            "cluster": text("Profile to run on"),
            "role": {"type": "string", "anyOf": [blank, {"enum": ["cpu", "gpu"]}]},
            "command": text("Command template: shell text where {{ name }} (as a plain word, not inside quotes) inserts a parameter, shell-quoted"),
            "commands": strings("Command templates"),
            "localPaths": strings("Workspace files to upload"),
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "headerOverrides": crate::header::header_schema("Job header of the preset"),
            "parameters": {
                "type": "object",
                "propertyNames": {"pattern": "^[A-Za-z0-9_]+$"},
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {"description": text("For the agent"), "pattern": text("Regex a value must match"), "default": text("Value when none is given")},
                },
            },
        },
    });
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "defaultCluster": text("Profile used when a call names none"),
            "localRunsDir": {"type": "string", "description": "Run store inside the workspace (default .openclaw/cluster-runs)",
                             "not": {"pattern": r"^\s*[/~]|(^|[/\\])\.\.([/\\]|$)"}},
            "routing": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "defaultProfile": text("Default profile for run_workload (must equal defaultCluster when both are set)"),
                    "gpuProfile": text("Profile for GPU work"),
                    "gpuIndicators": strings("Substrings or /regex/flags that route a workload to gpuProfile"),
                    "autoFallbackToGpuOnSignatures": flag("Retry on gpuProfile when a failure matches a signature (default true)"),
                    "gpuRequiredErrorSignatures": strings("Substrings or /regex/flags of GPU-required failures"),
                },
            },
            "execution": {
                "type": "object",
                "additionalProperties": false,
                "properties": {"allowCustomEnvOverride": flag("Allow calls with allowEnvOverrides (default false)")},
            },
            "clusters": {"type": "object", "propertyNames": {"pattern": r"^[^\s\x00-\x1f\x7f]*$"}, "additionalProperties": cluster},
            "presets": {"type": "object", "additionalProperties": preset},
            // Not the guest's: both hosts take this section out of the config
            // before the guest sees it (hosts, keys and local directories are
            // theirs). It is here so one schema describes the whole file.
            "host": {
                "type": "object",
                "additionalProperties": false,
                "description": "Read by the host only, never passed to the policy component",
                "properties": {
                    "sshConfig": text("ssh_config file that defines the sshTarget aliases (default: the user's ~/.ssh/config)"),
                    "workspace": text("Directory for local paths and the run store (default: the agent's workspace)"),
                    "auditLog": {"anyOf": [{"type": "string"}, {"const": false}], "description": "JSON-lines log of every host call the guest makes, or false (default: $XDG_STATE_HOME/cluster-slurm/audit.jsonl)"},
                    "connectionsPerMinute": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "New SSH connections per profile and minute (default 10)"},
                    "approvals": text("Where operators' approve/reject decisions are kept (default: $XDG_STATE_HOME/cluster-slurm/approvals.jsonl)"),
                    "maxDownloadBytes": {"type": "integer", "minimum": 1, "description": "File content one download call may bring, in bytes (default 21474836480, 20 GiB)"},
                },
            },
        },
    })
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
        v["clusters"]["gautschi-cpu"]["remoteRoot"] = json!("~other/runs");
        assert_eq!(
            Config::parse(&v).unwrap_err().path,
            "clusters.gautschi-cpu.remoteRoot"
        );
        v["clusters"]["gautschi-cpu"]["remoteRoot"] = json!("runs");
        assert_eq!(
            Config::parse(&v).unwrap_err().path,
            "clusters.gautschi-cpu.remoteRoot"
        );
        v["clusters"]["gautschi-cpu"]["remoteRoot"] = json!("/scratch//runs");
        let e = Config::parse(&v).unwrap_err();
        assert_eq!(e.path, "clusters.gautschi-cpu.remoteRoot");
        assert!(e.message.contains("'//'"), "{}", e.message);
        v["clusters"]["gautschi-cpu"]["remoteRoot"] = json!("~/runs/");
        assert_eq!(
            Config::parse(&v)
                .unwrap()
                .profile("gautschi-cpu")
                .unwrap()
                .remote_root,
            "~/runs"
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
    fn policy_and_presets() {
        let mut v = gautschi();
        v["clusters"]["gautschi-gpu"]["policy"] =
            json!({"overridableFields": ["time", "mem"], "maxTime": "08:00:00", "maxGpus": 2});
        v["presets"] = json!({"exp42": {"role": "gpu", "commands": ["python3 train.py --lr {{ lr }}"],
            "parameters": {"lr": {"pattern": "^[0-9.]+$", "default": "0.01"}}}});
        let c = Config::parse(&v).unwrap();
        let p = &c.profile("gautschi-gpu").unwrap().policy;
        assert_eq!(p.max_time_minutes, Some(480));
        assert!(
            !p.allow_submit_args,
            "submitArgs could bypass the limits, so they default to refused"
        );
        assert!(c.profile("gautschi-cpu").unwrap().policy.allow_submit_args);
        assert_eq!(c.preset("exp42").unwrap().parameters.len(), 1);

        v["clusters"]["gautschi-gpu"]["policy"] = json!({"overridableFields": ["walltime"]});
        assert_eq!(
            Config::parse(&v).unwrap_err().path,
            "clusters.gautschi-gpu.policy.overridableFields[0]"
        );
        v["clusters"]["gautschi-gpu"]["policy"] = json!({"maxTime": "01:00:00"});
        let e = Config::parse(&v).unwrap_err();
        assert_eq!(
            e.path, "clusters.gautschi-gpu.policy.maxTime",
            "slurmDefaults.time is 04:00:00"
        );
        v["clusters"]["gautschi-gpu"]["policy"] = json!({"maxTime": "UNLIMITED"});
        assert_eq!(
            Config::parse(&v).unwrap_err().path,
            "clusters.gautschi-gpu.policy.maxTime"
        );
        v["clusters"]["gautschi-gpu"]["policy"] = json!({});
        v["presets"] = json!({"p": {"command": "x", "parameters": {"n": {"pattern": "^[0-9]+$", "default": "ten"}}}});
        assert_eq!(
            Config::parse(&v).unwrap_err().path,
            "presets.p.parameters.n.default"
        );
        v["presets"] = json!({"bad": {"cluster": "nope", "command": "x"}});
        assert_eq!(Config::parse(&v).unwrap_err().path, "presets.bad.cluster");
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
