//! The `transfer` capability: SFTP copies between the workspace and a
//! profile's remote root, both ends checked before any byte moves.
//!
//! ```ignore
//! let ctx = TransferCtx::new(grants.clone(), transport.clone());
//! transfer::add_to_linker(&mut linker, |state: &mut State| state.transfer.view())?;
//! ```

use crate::audit::AuditLog;
use crate::bindings::HostError;
use crate::bindings::openclaw::cluster_slurm::transfer::{self, TransferStats, UploadItem};
use crate::grants::{Grants, sftp_path};
use crate::transport::{Moved, SharedTransport};
use serde_json::json;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

pub struct TransferCtx {
    grants: Arc<Grants>,
    transport: SharedTransport,
    audit: Arc<AuditLog>,
}

pub struct TransferView<'a> {
    ctx: &'a TransferCtx,
}

impl TransferCtx {
    pub fn new(grants: Arc<Grants>, transport: SharedTransport) -> TransferCtx {
        TransferCtx {
            grants,
            transport,
            audit: Arc::new(AuditLog::off()),
        }
    }

    /// Record every call in `audit`.
    pub fn audited(mut self, audit: Arc<AuditLog>) -> TransferCtx {
        self.audit = audit;
        self
    }

    pub fn view(&self) -> TransferView<'_> {
        TransferView { ctx: self }
    }

    pub async fn upload(
        &self,
        cluster: &str,
        local: &str,
        remote: &str,
    ) -> Result<Moved, HostError> {
        let profile = self.grants.profile(cluster)?;
        let remote = sftp_path(&self.grants.remote_path(profile, remote)?);
        let local = self.grants.local_source(local)?;
        Ok(self.transport.upload(profile, local, remote).await?)
    }

    /// Every item is checked before anything moves.
    pub async fn upload_all(
        &self,
        cluster: &str,
        items: &[(String, String)],
    ) -> Result<Vec<Moved>, HostError> {
        let profile = self.grants.profile(cluster)?;
        let mut checked = Vec::with_capacity(items.len());
        for (local, remote) in items {
            checked.push((
                self.grants.local_source(local)?,
                sftp_path(&self.grants.remote_path(profile, remote)?),
            ));
        }
        distinct_destinations(checked.iter().map(|(_, r)| r.as_str()))?;
        Ok(self.transport.upload_all(profile, checked).await?)
    }

    pub async fn download(
        &self,
        cluster: &str,
        remote: &str,
        local: &str,
    ) -> Result<Moved, HostError> {
        let profile = self.grants.profile(cluster)?;
        let remote = sftp_path(&self.grants.remote_path(profile, remote)?);
        let local = self.grants.local_destination(local)?;
        Ok(self.transport.download(profile, remote, local).await?)
    }
}

impl transfer::Host for TransferView<'_> {
    async fn upload(
        &mut self,
        cluster: String,
        local_path: String,
        remote_path: String,
    ) -> Result<TransferStats, HostError> {
        let call = self.ctx.audit.call(
            "upload",
            [
                ("cluster", json!(cluster)),
                ("local", json!(local_path)),
                ("remote", json!(remote_path)),
            ],
        );
        let answer = self.ctx.upload(&cluster, &local_path, &remote_path).await;
        call.end(&answer, moved_details);
        answer.map(|moved| TransferStats {
            files: moved.files,
            bytes: moved.bytes,
        })
    }

    async fn upload_all(
        &mut self,
        cluster: String,
        items: Vec<UploadItem>,
    ) -> Result<Vec<TransferStats>, HostError> {
        let pairs: Vec<(String, String)> = items
            .into_iter()
            .map(|i| (i.local_path, i.remote_path))
            .collect();
        let call = self.ctx.audit.call(
            "upload-all",
            [
                ("cluster", json!(cluster)),
                (
                    "items",
                    json!(
                        pairs
                            .iter()
                            .map(|(l, r)| json!({"local": l, "remote": r}))
                            .collect::<Vec<_>>()
                    ),
                ),
            ],
        );
        let answer = self.ctx.upload_all(&cluster, &pairs).await;
        let total = answer.as_ref().map(|all| {
            all.iter().fold(Moved::default(), |acc, m| Moved {
                files: acc.files + m.files,
                bytes: acc.bytes + m.bytes,
                verified: acc.verified + m.verified,
                unchanged: acc.unchanged + m.unchanged,
                resumed_bytes: acc.resumed_bytes + m.resumed_bytes,
                changing: acc.changing + m.changing,
                bundled: acc.bundled + m.bundled,
                skipped: acc.skipped + m.skipped,
                skipped_names: acc
                    .skipped_names
                    .iter()
                    .chain(&m.skipped_names)
                    .cloned()
                    .collect(),
            })
        });
        call.end(&total.map_err(Clone::clone), moved_details);
        answer.map(|all| {
            all.into_iter()
                .map(|m| TransferStats {
                    files: m.files,
                    bytes: m.bytes,
                })
                .collect()
        })
    }

    async fn download(
        &mut self,
        cluster: String,
        remote_path: String,
        local_path: String,
    ) -> Result<TransferStats, HostError> {
        let call = self.ctx.audit.call(
            "download",
            [
                ("cluster", json!(cluster)),
                ("local", json!(local_path)),
                ("remote", json!(remote_path)),
            ],
        );
        let answer = self.ctx.download(&cluster, &remote_path, &local_path).await;
        call.end(&answer, moved_details);
        answer.map(|moved| TransferStats {
            files: moved.files,
            bytes: moved.bytes,
        })
    }
}

/// No two items of one transfer may write the same place, nor one inside
/// another's: which would win is an accident of how they travel (an input
/// could take the job script's place).
fn distinct_destinations<'a>(remotes: impl Iterator<Item = &'a str>) -> Result<(), HostError> {
    let all: Vec<&str> = remotes.collect();
    let mut seen = std::collections::HashSet::new();
    for remote in &all {
        if !seen.insert(*remote) {
            return Err(clash(remote, remote));
        }
    }
    for remote in &all {
        // Every ancestor of this destination: none may be another item's.
        let mut at = *remote;
        while let Some((parent, _)) = at.rsplit_once('/') {
            if seen.contains(parent) {
                return Err(clash(remote, parent));
            }
            at = parent;
        }
    }
    Ok(())
}

fn clash(a: &str, b: &str) -> HostError {
    HostError::Denied(format!(
        "two items of one upload would write {a} (also {b}); each needs a place of its own"
    ))
}

/// What the audit log records about a finished transfer.
fn moved_details(moved: &Moved) -> [(&'static str, serde_json::Value); 9] {
    [
        ("files", json!(moved.files)),
        ("bytes", json!(moved.bytes)),
        ("verified", json!(moved.verified)),
        ("unchanged", json!(moved.unchanged)),
        ("resumedBytes", json!(moved.resumed_bytes)),
        ("changing", json!(moved.changing)),
        ("bundled", json!(moved.bundled)),
        // Links a job made in a tree are named here, never followed.
        ("skipped", json!(moved.skipped)),
        ("skippedNames", json!(moved.skipped_names)),
    ]
}

struct HasTransfer;

impl HasData for HasTransfer {
    type Data<'a> = TransferView<'a>;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> TransferView<'_>,
) -> wasmtime::Result<()> {
    transfer::add_to_linker::<T, HasTransfer>(linker, get)
}
