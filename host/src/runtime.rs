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

use crate::bindings::ClusterSlurm;
use crate::bindings::exports::openclaw::cluster_slurm::tool::{ToolDescription, ToolError};
use crate::exec::ExecCtx;
use crate::grants::Grants;
use crate::run_store::RunStoreCtx;
use crate::transfer::TransferCtx;
use crate::transport::SharedTransport;
use anyhow::{Result, bail};
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

pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    exec: ExecCtx,
    transfer: TransferCtx,
    store: RunStoreCtx,
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
        let engine = wt(Engine::new(&Config::new()), "creating the wasm engine")?;
        let component = wt(
            Component::new(&engine, wasm),
            "compiling the guest component",
        )?;
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
        Ok(Runtime {
            engine,
            component,
            linker,
            grants,
            transport,
        })
    }

    pub fn interfaces(&self) -> Interfaces {
        interfaces(&self.engine, &self.component)
    }

    async fn instance(&self) -> Result<(Store<State>, ClusterSlurm)> {
        let state = State {
            wasi: WasiCtxBuilder::new().inherit_stderr().build(),
            table: ResourceTable::new(),
            exec: ExecCtx::new(self.grants.clone(), self.transport.clone()),
            transfer: TransferCtx::new(self.grants.clone(), self.transport.clone()),
            store: RunStoreCtx::new(self.grants.clone()),
        };
        let mut store = Store::new(&self.engine, state);
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
        wt(
            guest
                .openclaw_cluster_slurm_tool()
                .call_invoke(&mut store, config, request)
                .await,
            "guest invoke",
        )
    }
}
