//! The operator's config file for the native host: the plugin config the
//! guest validates (`defaultCluster`, `clusters`, `routing`, ...) plus an
//! optional `host` section that only the host reads:
//!
//! ```json
//! { "host": { "sshConfig": "ssh_config", "workspace": "/path/to/workspace",
//!            "auditLog": "audit.jsonl", "connectionsPerMinute": 10, "approvals": "approvals.jsonl",
//!            "maxDownloadBytes": 21474836480 },
//!   "defaultCluster": "local-cpu", "clusters": { "local-cpu": { ... } } }
//! ```
//!
//! Relative paths in `host` are relative to the config file's directory.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The keys of the `host` section.
const KEYS: [&str; 6] = [
    "sshConfig",
    "workspace",
    "auditLog",
    "connectionsPerMinute",
    "approvals",
    "maxDownloadBytes",
];

#[derive(Debug, Clone, Default)]
pub struct OperatorConfig {
    /// The plugin config, `host` removed, as the guest receives it.
    pub plugin: Value,
    /// ssh_config file to resolve `sshTarget` aliases with (None = ~/.ssh/config).
    pub ssh_config: Option<PathBuf>,
    pub workspace: Option<PathBuf>,
    /// Where the audit log goes: None = the default place, Some(None) = off.
    pub audit_log: Option<Option<PathBuf>>,
    /// New SSH connections per profile and minute (None: the default).
    pub connections_per_minute: Option<u32>,
    /// The operators' approval decisions (None: the default place).
    pub approvals: Option<PathBuf>,
    /// File content one download call may bring (None: the default,
    /// [`crate::confine::DEFAULT_MAX_DOWNLOAD_BYTES`]).
    pub max_download_bytes: Option<u64>,
}

impl OperatorConfig {
    pub fn load(path: &Path) -> Result<OperatorConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("config {} is not valid JSON", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_value(value, &base).with_context(|| format!("config {}", path.display()))
    }

    pub fn from_value(value: Value, base: &Path) -> Result<OperatorConfig> {
        let Value::Object(mut map) = value else {
            bail!("the config must be a JSON object");
        };
        let host = match map.remove("host") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(h)) => h,
            Some(_) => bail!("host must be an object"),
        };
        let path_of = |key: &str| -> Result<Option<PathBuf>> {
            match host.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(base.join(s.trim()))),
                Some(_) => bail!("host.{key} must be a path"),
            }
        };
        if let Some(unknown) = host.keys().find(|k| !KEYS.contains(&k.as_str())) {
            bail!("host.{unknown}: unknown key (allowed: {})", KEYS.join(", "));
        }
        let connections_per_minute = match host.get("connectionsPerMinute") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().filter(|n| (1..=1000).contains(n)) {
                Some(n) => u32::try_from(n).ok(),
                None => bail!("host.connectionsPerMinute must be a whole number from 1 to 1000"),
            },
        };
        let max_download_bytes = match host.get("maxDownloadBytes") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().filter(|n| *n >= 1) {
                Some(n) => Some(n),
                None => bail!(
                    "host.maxDownloadBytes must be a whole number of bytes, at least 1 (the default is {})",
                    crate::confine::DEFAULT_MAX_DOWNLOAD_BYTES
                ),
            },
        };
        let audit_log = match host.get("auditLog") {
            Some(Value::Bool(false)) => Some(None),
            Some(Value::Bool(true)) => None,
            _ => path_of("auditLog")
                .map_err(|_| anyhow::anyhow!("host.auditLog must be a path, or false"))?
                .map(Some),
        };
        Ok(OperatorConfig {
            approvals: path_of("approvals")?,
            audit_log,
            connections_per_minute,
            max_download_bytes,
            ssh_config: path_of("sshConfig")?,
            workspace: path_of("workspace")?,
            plugin: Value::Object(map),
        })
    }
}
