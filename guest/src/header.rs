//! The `#SBATCH` header: fields, per-field validation, merging, directives.
//!
//! Every value is checked against the grammar of its field before it can
//! reach a script, so no value can smuggle a newline (and with it a command,
//! or an early end of SLURM's directive parsing) into the header.

use crate::fields::{FieldError, FieldResult, Fields};
use serde::Serialize;

/// Header fields, in the order their directives are written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ntasks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ntasks_per_node: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus_per_task: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus_per_node: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `--array`, e.g. `0-9`, `1,3,5`, `0-99%4` (at most 4 at a time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array: Option<String>,
    /// `--dependency`, e.g. `afterok:123`, `afterany:1:2,singleton`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
}

/// Upper bound for counts; far above any real allocation, low enough that a
/// typo (an extra few zeros) is caught.
const MAX_COUNT: u64 = 100_000;

struct Grammar {
    pattern: &'static str,
    hint: &'static str,
}

const NAME: Grammar = Grammar {
    pattern: r"^[A-Za-z0-9_.+,-]{1,128}$",
    hint: "letters, digits and _ . + , - only (no spaces)",
};
const JOB_NAME: Grammar = Grammar {
    pattern: r"^[A-Za-z0-9_.+:@-]{1,128}$",
    hint: "letters, digits and _ . + : @ - only (no spaces)",
};
const CONSTRAINT: Grammar = Grammar {
    pattern: r"^[A-Za-z0-9_.,&|\[\]*()+:-]{1,256}$",
    hint: "feature names joined by & | , with optional [ ] ( ) * : counts",
};
const TIME: Grammar = Grammar {
    pattern: r"^(?:(?:\d{1,4}-)?\d{1,5}(?::\d{1,2}){0,2}|UNLIMITED|INFINITE)$",
    hint: "minutes, [days-]hours:minutes[:seconds], or UNLIMITED",
};
const MEM: Grammar = Grammar {
    pattern: r"^\d{1,9}[KMGTkmgt]?$",
    hint: "a size such as 512M, 16G or 4096",
};
const GRES: Grammar = Grammar {
    pattern: r"^[A-Za-z0-9_.:,+-]{1,256}$",
    hint: "such as gpu:1 or gpu:a100:2",
};
/// Log file patterns stay relative to the run directory (the job's working
/// directory), so logs can neither land nor be read outside it.
const LOG_PATTERN: Grammar = Grammar {
    pattern: r"^[A-Za-z0-9_.%-][A-Za-z0-9_.%/-]{0,255}$",
    hint: "a file name relative to the run directory using letters, digits, _ . - / and %j %x %A %a %u",
};
const ARRAY: Grammar = Grammar {
    pattern: r"^\d{1,7}(-\d{1,7}(:\d{1,7})?)?(,\d{1,7}(-\d{1,7}(:\d{1,7})?)?)*(%\d{1,5})?$",
    hint: "indices such as 0-9, 1,3,5, 0-99:2 or 0-99%4",
};
const DEPENDENCY: Grammar = Grammar {
    pattern: r"^((after|afterany|afterok|afternotok|aftercorr|afterburstbuffer)(:\d{1,12}(_\d{1,7})?(\+\d{1,6})?)+|singleton)([,?]((after|afterany|afterok|afternotok|aftercorr|afterburstbuffer)(:\d{1,12}(_\d{1,7})?(\+\d{1,6})?)+|singleton))*$",
    hint: "such as afterok:123, afterany:123:124 or singleton (joined by , for all or ? for any)",
};
const MODULE: Grammar = Grammar {
    pattern: r"^[A-Za-z0-9_.+/@:-]{1,200}$",
    hint: "a module name such as python/3.11",
};

/// SLURM time formats to minutes, rounded up: "M", "M:S", "H:M:S", "D-H",
/// "D-H:M", "D-H:M:S".
pub fn time_minutes(time: &str) -> Option<u64> {
    if time == "UNLIMITED" || time == "INFINITE" {
        return None;
    }
    let (days, rest) = match time.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, time),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let secs = match (days > 0 || time.contains('-'), parts.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (false, [h, m, s]) => h * 3600 + m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        (true, [h, m, s]) => h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some((days * 86_400 + secs).div_ceil(60))
}

fn check(grammar: &Grammar, path: String, value: String) -> FieldResult<String> {
    let re = crate::patterns::fixed(grammar.pattern, false).ok_or_else(|| FieldError {
        path: path.clone(),
        message: "internal grammar error".to_string(),
    })?;
    if re.is_match(&value) {
        Ok(value)
    } else {
        Err(FieldError {
            path,
            message: format!("{:?} is not allowed here: use {}", value, grammar.hint),
        })
    }
}

fn checked(
    f: &mut Fields<'_>,
    key: &'static str,
    grammar: &Grammar,
) -> FieldResult<Option<String>> {
    let path = f.child_path(key);
    match f.string(key)? {
        None => Ok(None),
        Some(v) => check(grammar, path, v).map(Some),
    }
}

fn log_pattern(f: &mut Fields<'_>, key: &'static str) -> FieldResult<Option<String>> {
    let Some(value) = checked(f, key, &LOG_PATTERN)? else {
        return Ok(None);
    };
    if value.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return Err(f.error(
            key,
            format!("{value:?} must stay inside the run directory (no '..' or empty segments)"),
        ));
    }
    Ok(Some(value))
}

/// A string field of the JSON Schema: the field's grammar, or blank (which,
/// as in the reference, means "not set").
fn string_schema(g: &Grammar, description: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "string",
        "description": format!("{description}: {}", g.hint),
        "anyOf": [{"pattern": r"^\s*$"}, {"pattern": g.pattern}],
    })
}

/// JSON Schema of a header object (`slurmDefaults`, `headerOverrides`,
/// a preset's `headerOverrides`): the same grammars the parser applies.
pub fn header_schema(description: &str) -> serde_json::Value {
    let count = |d: &str| serde_json::json!({"type": "integer", "minimum": 1, "maximum": MAX_COUNT, "description": d});
    let log = |d: &str| {
        serde_json::json!({
            "type": "string",
            "description": format!("{d}: {}", LOG_PATTERN.hint),
            "anyOf": [{"pattern": r"^\s*$"}, {"allOf": [
                {"pattern": LOG_PATTERN.pattern},
                {"not": {"pattern": r"(^|/)\.\.(/|$)|//|/$"}}
            ]}],
        })
    };
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "description": description,
        "properties": {
            "jobName": string_schema(&JOB_NAME, "--job-name"),
            "partition": string_schema(&NAME, "--partition"),
            "account": string_schema(&NAME, "--account"),
            "qos": string_schema(&NAME, "--qos"),
            "constraint": string_schema(&CONSTRAINT, "--constraint"),
            "time": string_schema(&TIME, "--time"),
            "nodes": count("--nodes"),
            "ntasks": count("--ntasks"),
            "ntasksPerNode": count("--ntasks-per-node"),
            "cpusPerTask": count("--cpus-per-task"),
            "mem": string_schema(&MEM, "--mem"),
            "gpus": count("--gpus (not together with gpusPerNode)"),
            "gpusPerNode": count("--gpus-per-node (not together with gpus)"),
            "gres": string_schema(&GRES, "--gres"),
            "output": log("--output, relative to the run directory"),
            "error": log("--error, relative to the run directory"),
            "array": string_schema(&ARRAY, "--array"),
            "dependency": string_schema(&DEPENDENCY, "--dependency"),
            "modules": {"type": "array", "items": {"type": "string", "anyOf": [{"pattern": r"^\s*$"}, {"pattern": MODULE.pattern}]},
                        "description": "module load lines"},
        },
        "not": {"required": ["gpus", "gpusPerNode"]},
    })
}

/// Every header field name, as written in config and requests.
pub const FIELDS: &[&str] = &[
    "jobName",
    "partition",
    "account",
    "qos",
    "constraint",
    "time",
    "nodes",
    "ntasks",
    "ntasksPerNode",
    "cpusPerTask",
    "mem",
    "gpus",
    "gpusPerNode",
    "gres",
    "output",
    "error",
    "array",
    "dependency",
    "modules",
];

impl Header {
    /// The names of the fields this header sets.
    pub fn set_fields(&self) -> Vec<&'static str> {
        let set = [
            self.job_name.is_some(),
            self.partition.is_some(),
            self.account.is_some(),
            self.qos.is_some(),
            self.constraint.is_some(),
            self.time.is_some(),
            self.nodes.is_some(),
            self.ntasks.is_some(),
            self.ntasks_per_node.is_some(),
            self.cpus_per_task.is_some(),
            self.mem.is_some(),
            self.gpus.is_some(),
            self.gpus_per_node.is_some(),
            self.gres.is_some(),
            self.output.is_some(),
            self.error.is_some(),
            self.array.is_some(),
            self.dependency.is_some(),
            !self.modules.is_empty(),
        ];
        FIELDS
            .iter()
            .zip(set)
            .filter(|(_, s)| *s)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Number of tasks an `--array` spec starts (None when no array).
    pub fn array_size(&self) -> Option<u64> {
        let spec = self.array.as_deref()?;
        let spec = spec.split('%').next().unwrap_or(spec);
        let mut total: u64 = 0;
        for part in spec.split(',') {
            let (range, step) = match part.split_once(':') {
                Some((r, s)) => (r, s.parse::<u64>().unwrap_or(1).max(1)),
                None => (part, 1),
            };
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (a.parse::<u64>().unwrap_or(0), b.parse::<u64>().unwrap_or(0)),
                None => {
                    let v = range.parse::<u64>().unwrap_or(0);
                    (v, v)
                }
            };
            total = total.saturating_add(if b >= a { (b - a) / step + 1 } else { 0 });
        }
        Some(total)
    }

    /// Wall time in minutes (`UNLIMITED` = None).
    pub fn time_minutes(&self) -> Option<u64> {
        time_minutes(self.time.as_deref()?)
    }

    /// Read a header object (`slurmDefaults` or `headerOverrides`).
    pub fn read(mut f: Fields<'_>) -> FieldResult<Header> {
        let module_path = f.child_path("modules");
        let header = Header {
            job_name: checked(&mut f, "jobName", &JOB_NAME)?,
            partition: checked(&mut f, "partition", &NAME)?,
            account: checked(&mut f, "account", &NAME)?,
            qos: checked(&mut f, "qos", &NAME)?,
            constraint: checked(&mut f, "constraint", &CONSTRAINT)?,
            time: checked(&mut f, "time", &TIME)?,
            nodes: f.uint("nodes", 1, MAX_COUNT)?,
            ntasks: f.uint("ntasks", 1, MAX_COUNT)?,
            ntasks_per_node: f.uint("ntasksPerNode", 1, MAX_COUNT)?,
            cpus_per_task: f.uint("cpusPerTask", 1, MAX_COUNT)?,
            mem: checked(&mut f, "mem", &MEM)?,
            gpus: f.uint("gpus", 1, MAX_COUNT)?,
            gpus_per_node: f.uint("gpusPerNode", 1, MAX_COUNT)?,
            gres: checked(&mut f, "gres", &GRES)?,
            output: log_pattern(&mut f, "output")?,
            error: log_pattern(&mut f, "error")?,
            array: checked(&mut f, "array", &ARRAY)?,
            dependency: checked(&mut f, "dependency", &DEPENDENCY)?,
            modules: f
                .string_list("modules", true)?
                .into_iter()
                .enumerate()
                .map(|(i, m)| check(&MODULE, format!("{module_path}[{i}]"), m))
                .collect::<FieldResult<Vec<_>>>()?,
        };
        if header.gpus.is_some() && header.gpus_per_node.is_some() {
            return Err(FieldError {
                path: f.child_path("gpus"),
                message: "set either gpus or gpusPerNode, not both".to_string(),
            });
        }
        f.finish()?;
        Ok(header)
    }

    /// Field-by-field merge: a set override wins. Override modules replace
    /// the profile's (as in the reference); callers refuse or strip an agent's
    /// modules before merging wherever policy forbids them.
    pub fn merged_with(&self, overrides: &Header) -> Header {
        fn pick<T: Clone>(over: &Option<T>, base: &Option<T>) -> Option<T> {
            over.clone().or_else(|| base.clone())
        }
        Header {
            job_name: pick(&overrides.job_name, &self.job_name),
            partition: pick(&overrides.partition, &self.partition),
            account: pick(&overrides.account, &self.account),
            qos: pick(&overrides.qos, &self.qos),
            constraint: pick(&overrides.constraint, &self.constraint),
            time: pick(&overrides.time, &self.time),
            nodes: pick(&overrides.nodes, &self.nodes),
            ntasks: pick(&overrides.ntasks, &self.ntasks),
            ntasks_per_node: pick(&overrides.ntasks_per_node, &self.ntasks_per_node),
            cpus_per_task: pick(&overrides.cpus_per_task, &self.cpus_per_task),
            mem: pick(&overrides.mem, &self.mem),
            // A GPU override replaces the profile's GPU request whichever of the
            // two forms each side used, so the result never holds both.
            gpus: if overrides.gpus_per_node.is_some() {
                overrides.gpus
            } else {
                pick(&overrides.gpus, &self.gpus)
            },
            gpus_per_node: if overrides.gpus.is_some() {
                overrides.gpus_per_node
            } else {
                pick(&overrides.gpus_per_node, &self.gpus_per_node)
            },
            gres: pick(&overrides.gres, &self.gres),
            output: pick(&overrides.output, &self.output),
            error: pick(&overrides.error, &self.error),
            array: pick(&overrides.array, &self.array),
            dependency: pick(&overrides.dependency, &self.dependency),
            modules: if overrides.modules.is_empty() {
                self.modules.clone()
            } else {
                overrides.modules.clone()
            },
        }
    }

    /// `--flag=value` directives in the reference's fixed order.
    pub fn directives(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                out.push(format!("--{flag}={v}"));
            }
        };
        push("job-name", self.job_name.clone());
        push("partition", self.partition.clone());
        push("account", self.account.clone());
        push("qos", self.qos.clone());
        push("constraint", self.constraint.clone());
        push("time", self.time.clone());
        push("nodes", self.nodes.map(|n| n.to_string()));
        push("ntasks", self.ntasks.map(|n| n.to_string()));
        push(
            "ntasks-per-node",
            self.ntasks_per_node.map(|n| n.to_string()),
        );
        push("cpus-per-task", self.cpus_per_task.map(|n| n.to_string()));
        push("mem", self.mem.clone());
        push("gpus", self.gpus.map(|n| n.to_string()));
        push("gpus-per-node", self.gpus_per_node.map(|n| n.to_string()));
        push("gres", self.gres.clone());
        push("output", self.output.clone());
        push("error", self.error.clone());
        push("array", self.array.clone());
        push("dependency", self.dependency.clone());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::Coercion;
    use serde_json::json;

    fn read(v: serde_json::Value) -> FieldResult<Header> {
        Header::read(Fields::new(&v, "h", Coercion::Strict).unwrap())
    }

    #[test]
    fn newline_in_any_string_field_is_refused() {
        for key in [
            "jobName",
            "partition",
            "account",
            "qos",
            "constraint",
            "time",
            "mem",
            "gres",
            "output",
            "error",
        ] {
            let err = read(json!({ key: "cpu\nmodule load evil" })).unwrap_err();
            assert_eq!(err.path, format!("h.{key}"));
        }
    }

    #[test]
    fn grammar_accepts_real_values() {
        let h = read(json!({
            "jobName": "demo", "partition": "ai", "account": "lilly-ibil", "qos": "normal",
            "constraint": "a100|h100", "time": "1-04:00:00", "mem": "16G", "gres": "gpu:a100:2",
            "output": "logs/slurm-%x-%j.out", "error": "slurm-%j.err", "nodes": 1, "cpusPerTask": 14,
            "modules": ["python/3.11"]
        }))
        .unwrap();
        assert_eq!(
            h.directives().first().map(String::as_str),
            Some("--job-name=demo")
        );
        assert_eq!(h.directives().len(), 12);
    }

    #[test]
    fn log_patterns_stay_in_run_dir() {
        assert!(read(json!({"output": "/etc/passwd"})).is_err());
        assert!(read(json!({"output": "../x.out"})).is_err());
        assert!(read(json!({"error": "a/../../x"})).is_err());
    }

    #[test]
    fn sizes_and_minutes() {
        let h = read(json!({"array": "0-9,20-29:2%3", "time": "1-02:03:04"})).unwrap();
        assert_eq!(h.array_size(), Some(15));
        assert_eq!(h.time_minutes(), Some(1564));
        assert_eq!(time_minutes("90"), Some(90));
        assert_eq!(time_minutes("1:30"), Some(2));
        assert_eq!(time_minutes("2-0"), Some(2880));
        assert_eq!(time_minutes("UNLIMITED"), None);
    }

    #[test]
    fn counts_must_be_whole() {
        assert_eq!(read(json!({"nodes": 1.5})).unwrap_err().path, "h.nodes");
        assert_eq!(read(json!({"nodes": 0})).unwrap_err().path, "h.nodes");
        assert!(read(json!({"gpus": 1, "gpusPerNode": 1})).is_err());
    }

    #[test]
    fn arrays_and_dependencies() {
        let h =
            read(json!({"array": "0-99%4", "dependency": "afterok:12:13,afterany:7_2"})).unwrap();
        assert_eq!(
            h.directives(),
            vec!["--array=0-99%4", "--dependency=afterok:12:13,afterany:7_2"]
        );
        assert!(read(json!({"array": "0-9\n#SBATCH --x"})).is_err());
        assert!(read(json!({"dependency": "afterok:abc"})).is_err());
        assert!(read(json!({"dependency": "afterok"})).is_err());
        assert!(read(json!({"dependency": "singleton"})).is_ok());
    }

    #[test]
    fn gpu_override_replaces_other_form() {
        let base = read(json!({"gpusPerNode": 1})).unwrap();
        let over = read(json!({"gpus": 2})).unwrap();
        let m = base.merged_with(&over);
        assert_eq!((m.gpus, m.gpus_per_node), (Some(2), None));
    }
}
