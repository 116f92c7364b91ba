//! What a plugin's store holds: its capabilities (shared across calls) and the per-call
//! sandbox state (phase, deadline, memory accounting, captured stderr).

use super::allowlist::Allowlist;
use super::imports::logs::LogSource;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What the plugin is allowed to do in the current call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// metadata, observe, check-invariants, and non-mutating actions: reads only.
    ReadOnly,
    /// A mutating action the user allowed.
    Mutating,
}

/// A small I/O runtime owned by the plugin, so host imports can block on async clients
/// from the synchronous wasm call without depending on the caller's runtime flavour.
pub struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    pub fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("plugin-io")
            .enable_all()
            .build()?;
        Ok(IoRuntime(Some(rt)))
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.0
            .as_ref()
            .expect("runtime present until drop")
            .block_on(f)
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // A blocking shutdown would panic when the last owner is dropped on an async task.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The capabilities a user granted one plugin. Shared by every call it makes.
pub struct PluginContext {
    pub name: String,
    pub settings: BTreeMap<String, String>,
    pub allowlist: Allowlist,
    pub log_sources: BTreeMap<String, LogSource>,
    pub io: IoRuntime,
    pub http: reqwest::Client,
    pub redis: Mutex<HashMap<String, redis::Connection>>,
    pub docker: OnceLock<Result<bollard::Docker, String>>,
}

/// The data of one plugin store (one instantiation).
pub struct HostState {
    pub ctx: std::sync::Arc<PluginContext>,
    pub phase: Phase,
    pub deadline: Instant,
    pub memory: MemoryCap,
    pub stderr: MemoryOutputPipe,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    pub fn new(ctx: std::sync::Arc<PluginContext>, memory_limit: usize) -> Self {
        let stderr = MemoryOutputPipe::new(64 * 1024);
        // No preopened directories, no environment, no arguments, no sockets: the plugin
        // reaches the world only through this host's imports.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        HostState {
            ctx,
            phase: Phase::ReadOnly,
            deadline: Instant::now(),
            memory: MemoryCap::new(memory_limit),
            stderr,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Time left before the current call's deadline; None when it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Captured guest stderr (a panic message, typically), trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_string()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and tables; remembers a refusal so the resulting trap can be
/// reported as "memory limit exceeded" rather than a bare `unreachable`.
pub struct MemoryCap {
    pub limit: usize,
    pub refused: Option<usize>,
}

impl MemoryCap {
    fn new(limit: usize) -> Self {
        MemoryCap {
            limit,
            refused: None,
        }
    }
}

const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            // Trap right here instead of letting the guest's allocator abort later.
            return Err(wasmtime::format_err!(
                "memory limit exceeded: wanted {desired} bytes, cap is {} bytes",
                self.limit
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
