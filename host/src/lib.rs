//! The native host for the `cluster_slurm` policy component: wasmtime with
//! one module per capability the guest imports, each checked against the
//! operator's grants before it touches the SSH transport.
//!
//! - [`grants`]: what the operator allows, and the one checkpoint ([`slurm_args`]: per SLURM program).
//! - [`remote_confine`]: remote paths decided on the cluster by what they are.
//! - [`exec`], [`transfer`], [`run_store`]: the WIT capabilities (ctx, view, `add_to_linker`).
//! - [`transport`]: the seam to the network; [`ssh`], [`sftp`], [`ssh_config`] implement it.
//! - [`budget`]: the connection budget shared by all processes of the user.
//! - [`runtime`]: loading and calling the component.
//! - [`audit`]: the log of every capability call the guest made.
//! - [`hooks`]: points where tests step in (test builds only).
//! - [`local_fs`]: local files opened relative to checked directory handles.
//! - [`mcp`]: the tool over MCP; [`mcp_stdio`] reads and writes its lines, [`mcp_request`] judges each one.
//! - [`cli`]: the `cluster-slurm` command line.
//!
//! Error rule: policy refusals, remote failures and timeouts are values
//! (`host-error` variants); a trap means a host bug.

pub mod approvals;
pub mod audit;
pub mod bindings;
pub mod budget;
pub mod bundle;
#[cfg(test)]
mod capability_tests;
pub mod cli;
pub mod confine;
pub mod copy;
pub mod exec;
pub mod fetch;
pub mod grants;
pub mod hooks;
pub mod local_fs;
pub mod local_paths;
pub mod mcp;
pub mod mcp_request;
pub mod mcp_stdio;
pub mod operator;
pub mod put;
pub mod remote_confine;
pub mod run_store;
pub mod runtime;
#[cfg(test)]
mod sandbox_tests;
pub mod sftp;
pub mod slurm_args;
pub mod ssh;
pub mod ssh_config;
pub mod transfer;
pub mod transport;
pub mod verify;
