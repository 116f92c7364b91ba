//! The plugin runtime: a wasmtime engine with the component model, a linker with the host
//! imports, and per-call sandbox limits (epoch deadline, memory cap, read-only phase).
//!
//! Each plugin is compiled once into an `InstancePre`; every tick instantiates a fresh
//! store, so a trap or a leak in one tick cannot carry over into the next.

pub mod allowlist;
pub mod bindings;
pub mod imports;
pub mod state;
pub mod version;

use crate::model;
use allowlist::Allowlist;
use bindings::{SubjectPre, wit};
use state::{HostState, IoRuntime, Phase, PluginContext};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, Trap};

/// How often the epoch advances; the deadline's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Per-call sandbox limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock budget of one call into the plugin (guest code and host imports).
    pub deadline: Duration,
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(10),
            memory_bytes: 128 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not a valid wasm component: {reason}")]
    InvalidComponent { what: String, reason: String },
    #[error(
        "{what} was built against operator:subject@{plugin}, but this host speaks operator:subject@{host}; rebuild it with a matching operator-sdk"
    )]
    IncompatibleVersion {
        what: String,
        plugin: String,
        host: String,
    },
    #[error("{what} is not an operator subject plugin: {reason}")]
    NotASubject { what: String, reason: String },
    #[error("{what} cannot be linked: {reason}")]
    Link { what: String, reason: String },
    #[error("plugin setup failed: {0}")]
    Setup(String),
    #[error("`{call}` overran its deadline of {limit:?} and was interrupted")]
    Deadline { call: String, limit: Duration },
    #[error("`{call}` exceeded the memory cap of {limit} MiB (asked for {wanted} MiB)")]
    Memory {
        call: String,
        limit: usize,
        wanted: usize,
    },
    #[error("`{call}` trapped: {message}")]
    Trap { call: String, message: String },
}

impl PluginError {
    /// A short machine-friendly kind, used in ticket dedup keys.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Deadline { .. } => "deadline",
            PluginError::Memory { .. } => "memory",
            PluginError::Trap { .. } => "trap",
            _ => "load",
        }
    }
}

/// Starts the thread that advances the engine's epoch; it stops when the engine is
/// dropped by its last owner.
fn start_epoch_ticker(engine: &Engine) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let weak = engine.weak();
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
    stop
}

/// The engine and linker shared by every plugin of this process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(limits: Limits) -> Result<Arc<Runtime>, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Setup(e.to_string()))?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Setup(format!("linking WASI: {e}")))?;
        bindings::Subject::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Setup(format!("linking host imports: {e}")))?;
        let ticker_stop = start_epoch_ticker(&engine);
        Ok(Arc::new(Runtime {
            engine,
            linker,
            limits,
            ticker_stop,
        }))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles a component and checks it is a subject plugin of a compatible WIT version.
    /// `what` names it in errors (a path, or `bundled subject X`).
    pub fn compile(&self, what: &str, bytes: &[u8]) -> Result<CompiledPlugin, PluginError> {
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PluginError::InvalidComponent {
                what: what.to_string(),
                reason: format!("{e:#}"),
            })?;
        let wit_version = version::check(&self.engine, &component, what)?;
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| PluginError::Link {
                    what: what.to_string(),
                    reason: format!("{e:#}"),
                })?;
        let pre = SubjectPre::new(instance_pre).map_err(|e| PluginError::NotASubject {
            what: what.to_string(),
            reason: format!("{e:#}"),
        })?;
        Ok(CompiledPlugin {
            what: what.to_string(),
            wit_version,
            pre,
        })
    }

    /// Reads and compiles a component file.
    pub fn compile_file(&self, path: &std::path::Path) -> Result<CompiledPlugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.compile(&path.display().to_string(), &bytes)
    }
}

/// A compiled, version-checked plugin, ready to be given capabilities.
pub struct CompiledPlugin {
    pub what: String,
    pub wit_version: String,
    pre: SubjectPre<HostState>,
}

/// What the user grants a plugin.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub settings: BTreeMap<String, String>,
    /// Explicit `--allow` origins, on top of those found in the settings.
    pub allow: Vec<String>,
}

/// A plugin with its capabilities: the thing the monitor drives.
pub struct Plugin {
    runtime: Arc<Runtime>,
    compiled: CompiledPlugin,
    ctx: Arc<PluginContext>,
    metadata: model::SubjectMetadata,
}

impl Plugin {
    /// Grants the capabilities and asks the plugin for its metadata, which also proves it
    /// instantiates. The subject name it reports is the one tickets are filed under.
    pub fn new(
        runtime: Arc<Runtime>,
        compiled: CompiledPlugin,
        grants: Grants,
    ) -> Result<Plugin, PluginError> {
        let mut allowlist = Allowlist::default();
        for value in grants.settings.values() {
            allowlist.allow_urls_in(value);
        }
        for entry in &grants.allow {
            allowlist
                .allow(entry)
                .map_err(|e| PluginError::Setup(e.to_string()))?;
        }
        let log_sources =
            imports::logs::sources_from_settings(&grants.settings).map_err(PluginError::Setup)?;
        let http = imports::http::client(allowlist.clone())
            .map_err(|e| PluginError::Setup(format!("HTTP client: {e}")))?;
        let io = IoRuntime::new().map_err(|e| PluginError::Setup(format!("I/O runtime: {e}")))?;
        let ctx = Arc::new(PluginContext {
            name: compiled.what.clone(),
            settings: grants.settings,
            allowlist,
            log_sources,
            io,
            http,
            redis: Mutex::new(Default::default()),
            docker: OnceLock::new(),
        });
        let mut plugin = Plugin {
            runtime,
            compiled,
            ctx,
            metadata: model::SubjectMetadata {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                invariants: vec![],
                actions: vec![],
                failure_modes: vec![],
            },
        };
        plugin.metadata = plugin.session()?.metadata()?;
        if plugin.metadata.name.trim().is_empty() {
            return Err(PluginError::NotASubject {
                what: plugin.compiled.what.clone(),
                reason: "its metadata has an empty name".into(),
            });
        }
        // The session is gone, so the context has one owner again.
        if let Some(ctx) = Arc::get_mut(&mut plugin.ctx) {
            ctx.name = plugin.metadata.name.clone();
        }
        Ok(plugin)
    }

    pub fn metadata(&self) -> &model::SubjectMetadata {
        &self.metadata
    }

    pub fn name(&self) -> &str {
        &self.ctx.name
    }

    pub fn wit_version(&self) -> &str {
        &self.compiled.wit_version
    }

    /// The origins this plugin may reach.
    pub fn allowed_origins(&self) -> Vec<String> {
        self.ctx.allowlist.describe()
    }

    /// A fresh instance for one tick (or one command).
    pub fn session(&self) -> Result<Session, PluginError> {
        let limits = self.runtime.limits;
        let mut store = Store::new(
            &self.runtime.engine,
            HostState::new(self.ctx.clone(), limits.memory_bytes),
        );
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_trap();
        // Instantiation runs guest start code, so it gets a deadline too.
        store.data_mut().deadline = Instant::now() + limits.deadline;
        store.set_epoch_deadline(ticks(limits.deadline));
        let bindings = self
            .compiled
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify("instantiate", e, store.data(), limits))?;
        Ok(Session {
            store,
            bindings,
            limits,
        })
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

fn classify(call: &str, err: wasmtime::Error, state: &HostState, limits: Limits) -> PluginError {
    const MIB: usize = 1024 * 1024;
    if let Some(wanted) = state.memory.refused {
        return PluginError::Memory {
            call: call.to_string(),
            limit: limits.memory_bytes / MIB,
            wanted: wanted.div_ceil(MIB),
        };
    }
    if let Some(Trap::Interrupt) = err.downcast_ref::<Trap>() {
        return PluginError::Deadline {
            call: call.to_string(),
            limit: limits.deadline,
        };
    }
    let stderr = state.stderr_text();
    let mut message = match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    if !stderr.is_empty() {
        // The guest's own words (a panic message) say more than the trap code.
        let tail: String = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        message = format!("{message}; guest stderr: {tail}");
    }
    PluginError::Trap {
        call: call.to_string(),
        message,
    }
}

/// One instantiated plugin. After any error the instance is spent: start a new session.
pub struct Session {
    store: Store<HostState>,
    bindings: bindings::Subject,
    limits: Limits,
}

impl Session {
    fn begin(&mut self, phase: Phase) {
        let data = self.store.data_mut();
        data.phase = phase;
        data.deadline = Instant::now() + self.limits.deadline;
        self.store.set_epoch_deadline(ticks(self.limits.deadline));
    }

    fn fail(&self, call: &str, err: wasmtime::Error) -> PluginError {
        classify(call, err, self.store.data(), self.limits)
    }

    pub fn metadata(&mut self) -> Result<model::SubjectMetadata, PluginError> {
        self.begin(Phase::ReadOnly);
        let plugin = self.bindings.operator_subject_plugin();
        let result = plugin.call_metadata(&mut self.store);
        result.map(Into::into).map_err(|e| self.fail("metadata", e))
    }

    /// Outer error: the plugin failed. Inner error: the plugin reports the subject could
    /// not be observed.
    pub fn observe(
        &mut self,
    ) -> Result<Result<model::Observation, model::ObserveError>, PluginError> {
        self.begin(Phase::ReadOnly);
        let plugin = self.bindings.operator_subject_plugin();
        let result = plugin.call_observe(&mut self.store);
        result
            .map(|r| r.map(Into::into).map_err(Into::into))
            .map_err(|e| self.fail("observe", e))
    }

    pub fn check_invariants(
        &mut self,
        history: &[model::Observation],
    ) -> Result<Vec<model::Violation>, PluginError> {
        self.begin(Phase::ReadOnly);
        let history: Vec<wit::Observation> = history.iter().map(Into::into).collect();
        let plugin = self.bindings.operator_subject_plugin();
        let result = plugin.call_check_invariants(&mut self.store, &history);
        result
            .map(|v| v.into_iter().map(Into::into).collect())
            .map_err(|e| self.fail("check-invariants", e))
    }

    /// Runs an action. `mutating` must come from the user's explicit permission; it is what
    /// lets the plugin send writes through the host's imports.
    pub fn execute(
        &mut self,
        action: &str,
        params: &[(String, String)],
        mutating: bool,
    ) -> Result<Result<String, String>, PluginError> {
        self.begin(if mutating {
            Phase::Mutating
        } else {
            Phase::ReadOnly
        });
        let params: Vec<wit::Kv> = params
            .iter()
            .map(|(k, v)| wit::Kv {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        let plugin = self.bindings.operator_subject_plugin();
        let result = plugin.call_execute(&mut self.store, action, &params);
        result
            .map(|r| {
                r.map_err(|e| match e {
                    wit::ActionError::UnknownAction(m) => format!("unknown action: {m}"),
                    wit::ActionError::BadParams(m) => format!("bad parameters: {m}"),
                    wit::ActionError::Failed(m) => format!("action failed: {m}"),
                })
            })
            .map_err(|e| self.fail("execute", e))
    }
}
