//! The `cluster_slurm` policy component.
//!
//! All decisions live here: config validation, CPU/GPU routing, request
//! validation, SLURM script rendering, status parsing and run bookkeeping.
//! The outside world is reached only through the [`host::Host`] trait, which
//! the wasm build implements with the WIT imports (`component.rs`) and the
//! tests implement with a fake.

pub mod actions;
pub mod config;
pub mod fields;
pub mod header;
pub mod host;
pub mod ledger;
pub mod paths;
pub mod patterns;
pub mod policy;
pub mod request;
pub mod routing;
pub mod script;
pub mod shell;
pub mod slurm;
pub mod template;

// wit-bindgen's generated glue (exports, canonical ABI) is `unsafe`; it is
// confined to this one module.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod injection_tests;
#[cfg(test)]
mod tests;

pub const TOOL_NAME: &str = "cluster_slurm";

pub struct Description {
    pub name: String,
    pub label: String,
    pub description: String,
    pub parameters_schema: String,
}

pub fn describe() -> Description {
    Description {
        name: TOOL_NAME.to_string(),
        label: "Cluster SLURM".to_string(),
        description: "Cluster orchestration over SSH for SLURM: submit asynchronous workloads, inspect status/logs (including missing-package hints), and retrieve artifacts using profile-driven routing.".to_string(),
        parameters_schema: request::parameters_schema().to_string(),
    }
}

/// Validate a config; returns it normalised, with every default filled in.
pub fn check_config(config_json: &str) -> Result<String, host::ToolError> {
    let config = actions::parse_config(config_json)?;
    serde_json::to_string_pretty(&config.to_json())
        .map_err(|e| host::ToolError::InvalidConfig(format!("cannot encode config: {e}")))
}
