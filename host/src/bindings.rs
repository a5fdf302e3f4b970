//! Host-side bindings generated from `wit/`, the same files the guest uses.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "cluster-slurm",
    imports: { default: async },
    exports: { default: async },
});

pub use openclaw::cluster_slurm::types::HostError;

use crate::grants::Refusal;
use crate::ssh::SshError;

impl From<Refusal> for HostError {
    fn from(r: Refusal) -> HostError {
        match r {
            Refusal::Denied(m) => HostError::Denied(m),
            Refusal::UnknownCluster(label) => HostError::UnknownCluster(label),
        }
    }
}

impl From<SshError> for HostError {
    fn from(e: SshError) -> HostError {
        let text = e.to_string();
        match e {
            SshError::HostKeyUnknown { .. } => HostError::HostKeyUnknown(text),
            SshError::HostKeyMismatch { .. } | SshError::HostKeyRevoked { .. } => {
                HostError::HostKeyMismatch(text)
            }
            SshError::AuthFailed(_) => HostError::AuthFailed(text),
            SshError::Timeout(_) => HostError::Timeout(text),
            SshError::Connection(_) | SshError::Config(_) => HostError::Connection(text),
            SshError::Remote(_) => HostError::Remote(text),
            SshError::LocalIo(_) => HostError::LocalIo(text),
            SshError::Denied(_) => HostError::Denied(text),
        }
    }
}

/// The variant's WIT name and its message.
pub fn host_error_parts(e: &HostError) -> (&'static str, &str) {
    match e {
        HostError::Denied(m) => ("denied", m),
        HostError::UnknownCluster(m) => ("unknown-cluster", m),
        HostError::AuthFailed(m) => ("auth-failed", m),
        HostError::HostKeyMismatch(m) => ("host-key-mismatch", m),
        HostError::HostKeyUnknown(m) => ("host-key-unknown", m),
        HostError::Timeout(m) => ("timeout", m),
        HostError::Connection(m) => ("connection", m),
        HostError::Remote(m) => ("remote", m),
        HostError::LocalIo(m) => ("local-io", m),
    }
}

/// `kind: message`, for people reading a CLI error or a log line.
pub fn host_error_text(e: &HostError) -> String {
    let (kind, text) = host_error_parts(e);
    format!("{kind}: {text}")
}
