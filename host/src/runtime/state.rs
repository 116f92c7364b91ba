//! What a plugin's store holds: its capabilities (granted once, shared across calls, each
//! with its own context and limits) and the per-call sandbox state (phase, deadline, call
//! counters, memory accounting, captured stderr).

use super::allowlist::Allowlist;
use super::imports::logs::LogSource;
use super::imports::redis::RedisPool;
use super::limits::{HttpLimits, Limits, LogsLimits, PluginLogLimits, RedisLimits};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
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
    /// A mutating action the user allowed (see [`super::ActionPermission`]).
    Mutating,
}

/// The `http` capability: the allowlist, a client whose redirects are checked against it,
/// and its caps.
pub struct HttpCapability {
    pub allowlist: Allowlist,
    pub client: reqwest::Client,
    pub limits: HttpLimits,
}

/// The `redis` capability: the same allowlist, a bounded pool keyed by origin.
pub struct RedisCapability {
    pub allowlist: Allowlist,
    pub pool: RedisPool,
    pub limits: RedisLimits,
}

/// The `logs` capability: only the sources the user named.
pub struct LogsCapability {
    pub sources: BTreeMap<String, LogSource>,
    pub docker: OnceLock<Result<bollard::Docker, String>>,
    pub limits: LogsLimits,
}

/// The capabilities a user granted one plugin. Shared by every call it makes.
pub struct PluginContext {
    /// The name the user gave the subject; plugin log lines carry it.
    pub name: String,
    /// `config`: the settings, as given.
    pub settings: BTreeMap<String, String>,
    pub http: HttpCapability,
    pub redis: RedisCapability,
    pub logs: LogsCapability,
    pub log: PluginLogLimits,
}

/// How much of each import the current call has used; reset at the start of every call.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallCounters {
    pub http_requests: usize,
    /// `send-all` calls so far.
    pub http_batches: usize,
    pub redis_commands: usize,
    pub log_tails: usize,
    pub log_lines: usize,
    pub log_lines_dropped: usize,
}

/// One request a plugin made through the host, as the host sent it. Recorded only when
/// asked ([`super::Session::record_requests`]): the tick-cost bench replays them from plain
/// host code to measure the floor a tick's I/O costs without the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedRequest {
    /// `batch` numbers the `send-all` the request was part of (within its call): the
    /// requests of one batch were in flight together.
    Http {
        method: String,
        url: String,
        batch: Option<usize>,
    },
    Redis {
        url: String,
        args: Vec<String>,
    },
}

/// The data of one plugin store (one instantiation).
pub struct HostState {
    pub ctx: Arc<PluginContext>,
    pub phase: Phase,
    pub deadline: Instant,
    pub calls: CallCounters,
    pub memory: MemoryCap,
    pub stderr: MemoryOutputPipe,
    /// Requests allowed through, when recording is on.
    pub recorded: Option<Vec<RecordedRequest>>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    pub fn new(ctx: Arc<PluginContext>, limits: &Limits) -> Self {
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
            calls: CallCounters::default(),
            memory: MemoryCap::new(limits),
            stderr,
            recorded: None,
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

    /// Notes a request the sandbox let through, if recording is on.
    pub fn record(&mut self, request: impl FnOnce() -> RecordedRequest) {
        if let Some(log) = &mut self.recorded {
            log.push(request());
        }
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

/// Caps the whole instance: the sum of every linear memory and table it creates (a
/// component can carry many core modules, each with its own memory), and how many
/// instances, memories and tables it may create. Remembers a refusal so the resulting
/// trap is reported as "memory limit exceeded" rather than a bare `unreachable`.
pub struct MemoryCap {
    pub limit: usize,
    /// Bytes in use across all memories and tables.
    pub used: usize,
    pub refused: Option<usize>,
    instances: usize,
    memories: usize,
    tables: usize,
}

/// Bytes a table element costs the host (a pointer-sized slot).
const TABLE_ELEMENT_BYTES: usize = 8;

impl MemoryCap {
    pub fn new(limits: &Limits) -> Self {
        MemoryCap {
            limit: limits.memory_bytes,
            used: 0,
            refused: None,
            instances: limits.max_instances,
            memories: limits.max_memories,
            tables: limits.max_tables,
        }
    }

    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = self.used - current.min(self.used) + desired;
        if total > self.limit {
            self.refused = Some(total);
            // Trap right here instead of letting the guest's allocator abort later.
            return Err(wasmtime::format_err!(
                "memory limit exceeded: the instance would use {total} bytes, cap is {} bytes",
                self.limit
            ));
        }
        self.used = total;
        Ok(true)
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.memories
    }

    fn tables(&self) -> usize {
        self.tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_the_sum_of_every_memory() {
        let limits = Limits {
            memory_bytes: 100,
            ..Limits::default()
        };
        let mut cap = MemoryCap::new(&limits);
        // Three memories of 40 each: the third would make 120 > 100.
        assert!(cap.memory_growing(0, 40, None).unwrap());
        assert!(cap.memory_growing(0, 40, None).unwrap());
        assert!(cap.memory_growing(0, 40, None).is_err());
        assert_eq!(cap.refused, Some(120));
        // Growing an existing memory counts only the difference.
        let mut cap = MemoryCap::new(&limits);
        assert!(cap.memory_growing(0, 50, None).unwrap());
        assert!(cap.memory_growing(50, 90, None).unwrap());
        assert_eq!(cap.used, 90);
    }
}
