//! Loading the guest component and calling it.
//!
//! Every call gets a fresh instance (instantiation costs well under a
//! millisecond), so no state leaks between tool calls; the ledger is the only
//! memory the tool has, and it lives in the run store.
//!
//! The guest gets WASI with nothing in it: no preopened directories, no
//! environment, no arguments, no network. On top of that, a component that
//! even *imports* anything beyond our interfaces and `wasi:io`, `wasi:cli`,
//! `wasi:clocks`, `wasi:random` is refused at load time.

use crate::approvals::{ApprovalBook, ApprovalsCtx};
use crate::audit::AuditLog;
use crate::bindings::ClusterSlurm;
use crate::bindings::exports::openclaw::cluster_slurm::tool::{ToolDescription, ToolError};
use crate::exec::ExecCtx;
use crate::grants::Grants;
use crate::run_store::RunStoreCtx;
use crate::transfer::TransferCtx;
use crate::transport::SharedTransport;
use anyhow::{Result, bail};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Import namespaces a guest may use; everything else is refused at load.
pub const ALLOWED_IMPORT_PREFIXES: &[&str] = &[
    "openclaw:cluster-slurm/",
    "wasi:io/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
];

/// wasmtime 48 has its own error type; keep its full chain when moving to anyhow.
fn wt<T>(result: wasmtime::Result<T>, what: &str) -> Result<T> {
    result.map_err(|e| anyhow::anyhow!("{what}: {e:?}"))
}

/// Where compiled components are kept: `$CLUSTER_SLURM_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/cluster-slurm`, else `~/.cache/cluster-slurm`.
fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("CLUSTER_SLURM_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("cluster-slurm")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/cluster-slurm")))
}

/// Only files we wrote are loaded: owned like their directory (which we
/// created) and writable by nobody else.
fn trusted(dir: &Path, file: &Path) -> bool {
    match (std::fs::metadata(dir), std::fs::symlink_metadata(file)) {
        (Ok(d), Ok(f)) => {
            f.is_file() && f.uid() == d.uid() && f.mode() & 0o022 == 0 && d.mode() & 0o022 == 0
        }
        _ => false,
    }
}

/// Compiling the component takes ~0.5 s of CPU per process start; a cached
/// native image loads in about a millisecond. The key covers the wasm bytes
/// and everything about the engine that affects compiled code, so a stale or
/// foreign image is never used. Any cache problem falls back to compiling.
fn load_component(engine: &Engine, wasm: &[u8], cache: Option<PathBuf>) -> Result<Component> {
    let Some(dir) = cache else {
        return wt(
            Component::new(engine, wasm),
            "compiling the guest component",
        );
    };
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut digest = Sha256::new();
    digest.update(wasm);
    digest.update(engine_hash.finish().to_le_bytes());
    let key: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join(format!("guest-{key}.cwasm"));
    if trusted(&dir, &path)
        && let Ok(component) = deserialize_own(engine, &path)
    {
        return Ok(component);
    }
    let component = wt(
        Component::new(engine, wasm),
        "compiling the guest component",
    )?;
    if let Ok(bytes) = component.serialize() {
        let tmp = dir.join(format!(".guest-{key}.{}.tmp", std::process::id()));
        let stored = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if stored.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(component)
}

/// Deserializing trusts the file to be what `serialize` wrote; `trusted`
/// checked that only this user can have written it, and the key ties it to
/// these exact wasm bytes and engine settings.
#[allow(unsafe_code)]
fn deserialize_own(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: see above; the file is ours and was produced by `Component::serialize`.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Work one guest call may do: about 40 times what a `run_workload` needs
/// with a 1,000-run ledger (2.3e8, measured; 1.5e7 with 30 runs), so an
/// endless loop is stopped after a few seconds of CPU. Fuel counts guest
/// instructions only, never the time a call waits for SSH.
pub const FUEL_PER_CALL: u64 = 10_000_000_000;
/// Linear memory one guest instance may grow to.
pub const MEMORY_PER_CALL: usize = 256 << 20;
/// The largest result a guest may hand back (results are bounded JSON).
pub const MAX_RESULT: usize = 16 << 20;

pub struct State {
    limits: wasmtime::StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
    exec: ExecCtx,
    transfer: TransferCtx,
    store: RunStoreCtx,
    approvals: ApprovalsCtx,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

pub struct Runtime {
    engine: Engine,
    component: Component,
    linker: Linker<State>,
    grants: Arc<Grants>,
    transport: SharedTransport,
    audit: Arc<AuditLog>,
    approvals: Arc<ApprovalBook>,
}

/// Names of a component's imports and exports.
pub struct Interfaces {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

pub fn interfaces(engine: &Engine, component: &Component) -> Interfaces {
    let ty = component.component_type();
    Interfaces {
        imports: ty
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect(),
        exports: ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect(),
    }
}

/// The imports outside [`ALLOWED_IMPORT_PREFIXES`].
pub fn forbidden_imports(imports: &[String]) -> Vec<String> {
    imports
        .iter()
        .filter(|name| !ALLOWED_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p)))
        .cloned()
        .collect()
}

impl Runtime {
    pub fn new(wasm: &[u8], grants: Arc<Grants>, transport: SharedTransport) -> Result<Runtime> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = wt(Engine::new(&config), "creating the wasm engine")?;
        let component = load_component(&engine, wasm, cache_dir())?;
        let found = interfaces(&engine, &component);
        let forbidden = forbidden_imports(&found.imports);
        if !forbidden.is_empty() {
            bail!(
                "refusing to load the guest: it imports {} (a cluster-slurm guest may only import our own interfaces and {})",
                forbidden.join(", "),
                ALLOWED_IMPORT_PREFIXES
                    .get(1..)
                    .unwrap_or_default()
                    .join(", ")
            );
        }
        let mut linker = Linker::new(&engine);
        wt(
            wasmtime_wasi::p2::add_to_linker_async(&mut linker),
            "linking WASI",
        )?;
        wt(
            crate::exec::add_to_linker(&mut linker, |s: &mut State| s.exec.view()),
            "linking ssh-exec",
        )?;
        wt(
            crate::transfer::add_to_linker(&mut linker, |s: &mut State| s.transfer.view()),
            "linking transfer",
        )?;
        wt(
            crate::run_store::add_to_linker(&mut linker, |s: &mut State| s.store.view()),
            "linking run-store",
        )?;
        wt(
            crate::approvals::add_to_linker(&mut linker, |s: &mut State| s.approvals.view()),
            "linking approvals",
        )?;
        Ok(Runtime {
            engine,
            component,
            linker,
            grants,
            transport,
            audit: Arc::new(AuditLog::off()),
            approvals: Arc::new(ApprovalBook::none()),
        })
    }

    /// Read operators' decisions on held runs from `book`.
    pub fn with_approvals(mut self, book: Arc<ApprovalBook>) -> Runtime {
        self.approvals = book;
        self
    }

    /// Record every capability call of the guest in `audit`.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> Runtime {
        self.audit = audit;
        self
    }

    pub fn interfaces(&self) -> Interfaces {
        interfaces(&self.engine, &self.component)
    }

    async fn instance(&self) -> Result<(Store<State>, ClusterSlurm)> {
        let state = State {
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(MEMORY_PER_CALL)
                .trap_on_grow_failure(true)
                .build(),
            wasi: WasiCtxBuilder::new().inherit_stderr().build(),
            table: ResourceTable::new(),
            exec: ExecCtx::new(self.grants.clone(), self.transport.clone())
                .audited(self.audit.clone()),
            transfer: TransferCtx::new(self.grants.clone(), self.transport.clone())
                .audited(self.audit.clone()),
            store: RunStoreCtx::new(self.grants.clone()).audited(self.audit.clone()),
            approvals: ApprovalsCtx::new(self.approvals.clone(), self.grants.workspace.clone())
                .audited(self.audit.clone()),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        wt(store.set_fuel(FUEL_PER_CALL), "setting the guest's fuel")?;
        let bindings = wt(
            ClusterSlurm::instantiate_async(&mut store, &self.component, &self.linker).await,
            "instantiating the guest component",
        )?;
        Ok((store, bindings))
    }

    pub async fn describe(&self) -> Result<ToolDescription> {
        let (mut store, guest) = self.instance().await?;
        wt(
            guest
                .openclaw_cluster_slurm_tool()
                .call_describe(&mut store)
                .await,
            "guest describe",
        )
    }

    pub async fn check_config(&self, config: &str) -> Result<Result<String, ToolError>> {
        let (mut store, guest) = self.instance().await?;
        wt(
            guest
                .openclaw_cluster_slurm_tool()
                .call_check_config(&mut store, config)
                .await,
            "guest check-config",
        )
    }

    /// Run one action. The outer error is a host bug or a guest trap; the
    /// inner one is the tool's own answer.
    pub async fn invoke(&self, config: &str, request: &str) -> Result<Result<String, ToolError>> {
        let (mut store, guest) = self.instance().await?;
        let answer = guest
            .openclaw_cluster_slurm_tool()
            .call_invoke(&mut store, config, request)
            .await
            .map_err(|e| guest_failure(e, &store))?;
        if let Ok(text) = &answer
            && text.len() > MAX_RESULT
        {
            bail!(
                "the guest returned {} bytes, more than the {MAX_RESULT} a result may have",
                text.len()
            );
        }
        Ok(answer)
    }
}

/// A trap, said plainly when it is one of the limits.
fn guest_failure(e: wasmtime::Error, store: &Store<State>) -> anyhow::Error {
    let text = format!("{e:?}");
    if store.get_fuel().is_ok_and(|f| f == 0) {
        anyhow::anyhow!(
            "the guest was stopped: it used up its work budget ({FUEL_PER_CALL} units of fuel) for one call\n{text}"
        )
    } else if text.contains("forcing trap when growing memory") || text.contains("memory") {
        anyhow::anyhow!(
            "the guest was stopped: it tried to use more than {} MiB of memory\n{text}",
            MEMORY_PER_CALL >> 20
        )
    } else {
        anyhow::anyhow!("guest invoke: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn guest_wasm() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm32-wasip2/guest/cluster_slurm_guest.wasm");
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `just guest` first)", path.display()))
    }

    fn cached_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn compiled_component_is_cached_and_tampering_is_ignored() {
        let engine = Engine::new(&Config::new()).unwrap();
        let wasm = guest_wasm();
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("c");
        load_component(&engine, &wasm, Some(dir.clone())).unwrap();
        let files = cached_files(&dir);
        assert_eq!(files.len(), 1, "{files:?}");
        let image = files[0].clone();
        let original = std::fs::read(&image).unwrap();
        assert!(deserialize_own(&engine, &image).is_ok());

        // A corrupt image is not loaded: the component is compiled again and
        // the image rewritten.
        std::fs::write(&image, b"not a compiled component").unwrap();
        let c = load_component(&engine, &wasm, Some(dir.clone())).unwrap();
        assert!(
            interfaces(&engine, &c)
                .exports
                .contains(&"openclaw:cluster-slurm/tool@0.4.0".to_string())
        );
        assert_eq!(std::fs::read(&image).unwrap(), original);

        // An image others could have written is never trusted.
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!trusted(&dir, &image));
        load_component(&engine, &wasm, Some(dir.clone())).unwrap();
        assert!(trusted(&dir, &image), "the rewritten image is ours again");
        assert_eq!(cached_files(&dir).len(), 1, "no temporary files left");
    }

    #[test]
    fn forbidden_imports_are_named() {
        let imports = vec![
            "openclaw:cluster-slurm/ssh-exec@0.4.0".to_string(),
            "wasi:cli/stdout@0.2.6".to_string(),
            "wasi:filesystem/types@0.2.6".to_string(),
            "wasi:sockets/tcp@0.2.6".to_string(),
        ];
        assert_eq!(
            forbidden_imports(&imports),
            vec!["wasi:filesystem/types@0.2.6", "wasi:sockets/tcp@0.2.6"]
        );
    }
}
