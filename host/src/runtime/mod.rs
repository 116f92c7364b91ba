//! The plugin runtime: one wasmtime engine per process with the component model, a linker
//! holding every supported contract version's host imports, and per-call sandbox limits.
//!
//! A plugin is assembled in one place, [`PluginBuilder`]: the CLI, the tests and the
//! benches all load plugins through it. Each call into a plugin runs on a fresh store
//! (see [`Plugin::session`]), so a trap or a leak in one tick cannot carry into the next.
//!
//! The guarantees, and how they are kept:
//! - **Every call ends within its deadline**, whatever the guest or a remote does. Calls are
//!   async (`call_async`, the async WASI linker) under a `tokio::time::timeout`, so a guest
//!   that sleeps or blocks on an import is cut off; epoch interruption, driven by the
//!   [`clock::DeadlineClock`] at the deadline itself, cuts off one that spins. Every
//!   import bounds its own I/O by what is left of the call's budget.
//! - **Memory is capped per instance**: the sum of every memory and table, plus low counts
//!   of instances, memories and tables ([`state::MemoryCap`]).
//! - **Every import has size, count and rate caps**, set in one place ([`Limits`]).
//! - **Results are not trusted**: observations, violations and metadata are cut to the
//!   output caps, and what was cut is reported as a problem, never silently dropped.
//! - **Writes need the user's permission**: an action the plugin declares as mutating runs
//!   only with an [`ActionPermission`], which only the user's `--allow-actions` creates.
//! - **Network grants are declared**: a plugin reaches the origins of settings it declares
//!   as origins, plus the user's `--allow`; nothing else.
//!
//! ```no_run
//! # async fn demo() -> Result<(), operator::runtime::PluginError> {
//! use operator::runtime::{PluginBuilder, PluginSource};
//! let plugin = PluginBuilder::new(PluginSource::file("my-subject.wasm"))
//!     .setting("url", "http://127.0.0.1:8080")
//!     .build()
//!     .await?;
//! let observation = plugin.session().await?.observe().await?;
//! # let _ = observation; Ok(()) }
//! ```

pub mod allowlist;
pub mod bindings;
pub mod cache;
mod caps;
pub mod clock;
pub mod imports;
pub mod limits;
pub mod state;
pub mod version;

pub use bindings::{ActionFailure, ContractVersion};
pub use limits::Limits;
pub use state::RecordedRequest;

use crate::model;
use allowlist::Allowlist;
use bindings::{Instance, Pre};
use cache::CompileCache;
use clock::{Armed, DeadlineClock, Deadlines};
use state::{
    CallCounters, HostState, HttpCapability, LogsCapability, Phase, PluginContext, RedisCapability,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, Trap, UpdateDeadline};

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no bundled subject `{name}` (bundled: {known})")]
    UnknownBundled { name: String, known: String },
    #[error("{what} is not a valid wasm component: {reason}")]
    InvalidComponent { what: String, reason: String },
    #[error(
        "{what} was built against operator:subject@{plugin}, but this host speaks operator:subject@{{{host}}}; rebuild it with a matching operator-sdk"
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
    #[error("`{call}` overran its deadline of {limit:?} and was cut off")]
    Deadline { call: String, limit: Duration },
    #[error(
        "`{call}` exceeded the memory cap of {limit} MiB (the instance asked for {wanted} MiB)"
    )]
    Memory {
        call: String,
        limit: usize,
        wanted: usize,
    },
    #[error("`{call}` trapped: {message}")]
    Trap { call: String, message: String },
    /// The plugin returned something the contract rules out (a metric table pointing
    /// outside itself).
    #[error("`{call}` broke the contract: {message}")]
    Contract { call: String, message: String },
    #[error("this plugin instance failed earlier and cannot be called again; start a new session")]
    Spent,
    #[error("`{action}` is not an action of {subject} (actions: {known})")]
    UnknownAction {
        action: String,
        subject: String,
        known: String,
    },
    #[error("{action}: {reason}")]
    BadParams { action: String, reason: String },
    #[error(
        "{action} changes the subject; the operator is observe-only unless you pass --allow-actions"
    )]
    NotPermitted { action: String },
}

impl PluginError {
    /// A short machine-friendly kind, used in ticket dedup keys.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Deadline { .. } => "deadline",
            PluginError::Memory { .. } => "memory",
            PluginError::Trap { .. } | PluginError::Spent => "trap",
            PluginError::Contract { .. } => "contract",
            _ => "load",
        }
    }
}

/// The user's permission to run actions that change the subject.
///
/// Only the user's `--allow-actions` flag creates one ([`ActionPermission::from_user_flag`],
/// called by the CLI's argument handling); the runtime demands it for every action the
/// plugin's metadata declares as mutating, whoever the caller is (the CLI, the diagnosis,
/// a demo). Nothing else can put a plugin in the phase that lets writes through.
#[derive(Debug)]
pub struct ActionPermission(());

impl ActionPermission {
    /// The permission, if the user passed `--allow-actions`.
    pub fn from_user_flag(allow_actions: bool) -> Option<ActionPermission> {
        allow_actions.then_some(ActionPermission(()))
    }
}

/// The engine and linker shared by every plugin of this process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    /// Cuts off a spinning guest at its call's deadline.
    clock: DeadlineClock,
    /// Where compiled plugins are kept between runs (`OPERATOR_CACHE_DIR`).
    cache: Option<CompileCache>,
}

impl Runtime {
    /// The process's runtime, made on first use: one engine (and one compilation cache)
    /// for every plugin this process loads.
    pub fn shared() -> Result<Arc<Runtime>, PluginError> {
        static SHARED: OnceLock<Arc<Runtime>> = OnceLock::new();
        if let Some(r) = SHARED.get() {
            return Ok(r.clone());
        }
        let runtime = Arc::new(Runtime::new()?);
        Ok(SHARED.get_or_init(|| runtime).clone())
    }

    fn new() -> Result<Runtime, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // For plugin authors profiling their guest with `perf`: names the JIT code in
        // /tmp/perf-PID.map.
        if std::env::var_os("OPERATOR_WASM_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Setup(e.to_string()))?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Setup(format!("linking WASI: {e}")))?;
        bindings::add_to_linker(&mut linker)
            .map_err(|e| PluginError::Setup(format!("linking host imports: {e}")))?;
        let clock = DeadlineClock::start(&engine)
            .map_err(|e| PluginError::Setup(format!("starting the deadline clock: {e}")))?;
        Ok(Runtime {
            engine,
            linker,
            clock,
            cache: CompileCache::from_env(),
        })
    }

    /// The engine every plugin of this process is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled-plugin cache [`Runtime::compile`] uses, unless it is off.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// Compiles a component, or loads it from the user's compiled-plugin cache, and checks
    /// it is a subject plugin of a supported contract version. `what` names it in errors
    /// (a path, or `bundled subject X`).
    pub fn compile(&self, what: &str, bytes: &[u8]) -> Result<CompiledPlugin, PluginError> {
        self.compile_with(self.cache.as_ref(), what, bytes)
    }

    /// [`Runtime::compile`] with this cache (or none) instead of the user's.
    pub fn compile_with(
        &self,
        cache: Option<&CompileCache>,
        what: &str,
        bytes: &[u8],
    ) -> Result<CompiledPlugin, PluginError> {
        let cached = cache.and_then(|c| c.load(&self.engine, bytes));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, bytes).map_err(|e| {
                    PluginError::InvalidComponent {
                        what: what.to_string(),
                        reason: format!("{e:#}"),
                    }
                })?;
                if let Some(cache) = cache {
                    cache.store(&self.engine, bytes, &c);
                }
                c
            }
        };
        let (wit_version, contract) = version::check(&self.engine, &component, what)?;
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| PluginError::Link {
                    what: what.to_string(),
                    reason: format!("{e:#}"),
                })?;
        let pre = Pre::new(contract, instance_pre).map_err(|e| PluginError::NotASubject {
            what: what.to_string(),
            reason: format!("{e:#}"),
        })?;
        Ok(CompiledPlugin {
            what: what.to_string(),
            wit_version,
            contract,
            digest: digest(bytes),
            from_cache,
            pre,
        })
    }
}

/// Test hook: instantiates any component (not necessarily a subject plugin) in a store set
/// up exactly as [`Plugin::session`] sets up a plugin's (same limiter, deadline and
/// linker), so tests can show the instance caps hold for shapes no SDK guest produces,
/// such as several core modules each with a large memory.
#[doc(hidden)]
pub async fn instantiate_raw_for_tests(bytes: &[u8], limits: Limits) -> Result<(), PluginError> {
    let runtime = Runtime::shared()?;
    let component =
        Component::new(&runtime.engine, bytes).map_err(|e| PluginError::InvalidComponent {
            what: "raw test component".into(),
            reason: format!("{e:#}"),
        })?;
    let ctx = context(
        "raw",
        BTreeMap::new(),
        Allowlist::default(),
        BTreeMap::new(),
        &limits,
    )?;
    let mut store = Store::new(&runtime.engine, HostState::new(Arc::new(ctx), &limits));
    store.limiter(|s| &mut s.memory);
    cut_off_at_deadline(&mut store);
    let _armed = start_deadline(&mut store, runtime.clock.deadlines(), limits.deadline);
    let instantiate = runtime.linker.instantiate_async(&mut store, &component);
    match tokio::time::timeout(limits.deadline, instantiate).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(classify("instantiate", e, store.data(), &limits)),
        Err(_) => Err(PluginError::Deadline {
            call: "instantiate".into(),
            limit: limits.deadline,
        }),
    }
}

/// FNV-1a over the component's bytes: a stable short identity for a plugin file.
fn digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A compiled, version-checked plugin, ready to be given capabilities.
pub struct CompiledPlugin {
    pub what: String,
    /// The contract version the plugin was built against, as it says.
    pub wit_version: String,
    /// The host version serving it.
    pub contract: ContractVersion,
    digest: u64,
    /// Loaded from the compiled-plugin cache rather than compiled.
    pub from_cache: bool,
    pre: Pre,
}

/// Where a plugin comes from.
#[derive(Debug, Clone)]
pub enum PluginSource {
    /// A subject compiled into this binary.
    Bundled(String),
    /// A component file.
    File(PathBuf),
    /// Component bytes already in memory (`what` names them in errors).
    Bytes { what: String, bytes: Vec<u8> },
}

impl PluginSource {
    pub fn bundled(name: &str) -> PluginSource {
        PluginSource::Bundled(name.to_string())
    }

    pub fn file(path: impl Into<PathBuf>) -> PluginSource {
        PluginSource::File(path.into())
    }

    /// A bundled name if there is one, else a file path.
    pub fn any(spec: &str) -> PluginSource {
        if crate::bundled::find(spec).is_some() {
            PluginSource::bundled(spec)
        } else {
            PluginSource::file(spec)
        }
    }

    /// The component's bytes, and the name errors give it.
    pub fn load(&self) -> Result<(String, Vec<u8>), PluginError> {
        match self {
            PluginSource::Bundled(name) => {
                let b = crate::bundled::find(name).ok_or_else(|| PluginError::UnknownBundled {
                    name: name.clone(),
                    known: crate::bundled::names().join(", "),
                })?;
                Ok((format!("bundled subject {name}"), b.wasm.to_vec()))
            }
            PluginSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok((path.display().to_string(), bytes))
            }
            PluginSource::Bytes { what, bytes } => Ok((what.clone(), bytes.clone())),
        }
    }

    /// The name tickets are filed under when the user gives none: a bundled subject's own
    /// name, or a file's stem with a digest of its content, so that two different plugins
    /// never share (and auto-resolve) each other's tickets, whatever they call themselves.
    fn default_name(&self, digest: u64) -> String {
        match self {
            PluginSource::Bundled(name) => name.clone(),
            PluginSource::File(path) => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "plugin".into());
                format!("{stem}@{:08x}", digest as u32)
            }
            PluginSource::Bytes { what, .. } => format!("{what}@{:08x}", digest as u32),
        }
    }
}

/// Assembles a plugin: loads and compiles it on the shared runtime, asks it for its
/// metadata (with no network), grants what it declared and the user allowed, and caps it.
pub struct PluginBuilder {
    source: PluginSource,
    name: Option<String>,
    settings: BTreeMap<String, String>,
    allow: Vec<String>,
    limits: Limits,
}

impl PluginBuilder {
    pub fn new(source: PluginSource) -> PluginBuilder {
        PluginBuilder {
            source,
            name: None,
            settings: BTreeMap::new(),
            allow: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// The name tickets are filed under (default: see [`PluginSource`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    pub fn settings(mut self, settings: BTreeMap<String, String>) -> Self {
        self.settings.extend(settings);
        self
    }

    /// One more origin, `scheme://host:port` (wildcards allowed, see [`allowlist`]).
    pub fn allow(mut self, origin: impl Into<String>) -> Self {
        self.allow.push(origin.into());
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub async fn build(self) -> Result<Plugin, PluginError> {
        let runtime = Runtime::shared()?;
        let (what, bytes) = self.source.load()?;
        let compiled = runtime.compile(&what, &bytes)?;
        tracing::debug!(plugin = %what, from_cache = compiled.from_cache, "plugin compiled");
        self.build_compiled(runtime, compiled).await
    }

    /// Like [`PluginBuilder::build`], for a component compiled already (benches compile
    /// once and build many plugins from it).
    pub async fn build_compiled(
        self,
        runtime: Arc<Runtime>,
        compiled: CompiledPlugin,
    ) -> Result<Plugin, PluginError> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| self.source.default_name(compiled.digest));
        let log_sources =
            imports::logs::sources_from_settings(&self.settings).map_err(PluginError::Setup)?;
        let mut explicit = Allowlist::default();
        for entry in &self.allow {
            explicit
                .allow(entry)
                .map_err(|e| PluginError::Setup(e.to_string()))?;
        }
        // Metadata first, with no network at all: it must not need any, and it says which
        // settings are origins.
        let probe = context(
            &name,
            self.settings.clone(),
            Allowlist::default(),
            BTreeMap::new(),
            &self.limits,
        )?;
        let mut plugin = Plugin {
            runtime,
            compiled,
            ctx: Arc::new(probe),
            metadata: model::SubjectMetadata::named(&name),
            limits: self.limits,
        };
        let mut metadata = plugin.session().await?.metadata().await?;
        if metadata.name.trim().is_empty() {
            return Err(PluginError::NotASubject {
                what: plugin.compiled.what.clone(),
                reason: "its metadata has an empty name".into(),
            });
        }
        for note in caps::metadata(&mut metadata, &self.limits.output) {
            tracing::warn!(plugin = %name, "{note}");
        }
        let allowlist = grants(
            plugin.compiled.contract,
            &metadata,
            &self.settings,
            explicit,
            &name,
        );
        plugin.ctx = Arc::new(context(
            &name,
            self.settings,
            allowlist,
            log_sources,
            &self.limits,
        )?);
        plugin.metadata = metadata;
        Ok(plugin)
    }
}

/// The network grants: the origins of settings the plugin declares as origins (for 0.1
/// plugins, which declare nothing, of every URL-valued setting), plus the user's `--allow`.
fn grants(
    contract: ContractVersion,
    metadata: &model::SubjectMetadata,
    settings: &BTreeMap<String, String>,
    mut allowlist: Allowlist,
    name: &str,
) -> Allowlist {
    for (key, value) in settings {
        if key.starts_with(imports::logs::SETTING_PREFIX) {
            continue;
        }
        if !contract.declares_settings() {
            allowlist.allow_urls_in(value);
            continue;
        }
        match metadata.setting(key) {
            Some(s) if s.kind.grants_origins() => {
                allowlist.allow_urls_in(value);
            }
            Some(_) => {}
            None => tracing::warn!(
                plugin = %name,
                setting = %key,
                "the plugin does not declare this setting; it is passed on but grants nothing"
            ),
        }
    }
    allowlist
}

fn context(
    name: &str,
    settings: BTreeMap<String, String>,
    allowlist: Allowlist,
    log_sources: BTreeMap<String, imports::logs::LogSource>,
    limits: &Limits,
) -> Result<PluginContext, PluginError> {
    let client = imports::http::client(allowlist.clone(), &limits.http)
        .map_err(|e| PluginError::Setup(format!("HTTP client: {e}")))?;
    Ok(PluginContext {
        name: name.to_string(),
        settings,
        http: HttpCapability {
            allowlist: allowlist.clone(),
            client,
            limits: limits.http,
        },
        redis: RedisCapability {
            allowlist,
            pool: imports::redis::RedisPool::new(limits.redis.max_connections),
            limits: limits.redis,
        },
        logs: LogsCapability {
            sources: log_sources,
            docker: OnceLock::new(),
            limits: limits.logs,
        },
        log: limits.log,
    })
}

/// A plugin with its capabilities: the thing the monitor drives.
pub struct Plugin {
    runtime: Arc<Runtime>,
    compiled: CompiledPlugin,
    ctx: Arc<PluginContext>,
    metadata: model::SubjectMetadata,
    limits: Limits,
}

impl Plugin {
    pub fn metadata(&self) -> &model::SubjectMetadata {
        &self.metadata
    }

    /// The name tickets are filed under: the user's choice, not what the plugin calls
    /// itself.
    pub fn name(&self) -> &str {
        &self.ctx.name
    }

    pub fn wit_version(&self) -> &str {
        &self.compiled.wit_version
    }

    pub fn contract(&self) -> ContractVersion {
        self.compiled.contract
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The origins this plugin may reach.
    pub fn allowed_origins(&self) -> Vec<String> {
        self.ctx.http.allowlist.describe()
    }

    /// Idle Redis connections the plugin holds now (bounded by the pool cap).
    pub fn redis_idle_connections(&self) -> usize {
        self.ctx.redis.pool.idle_count()
    }

    /// A fresh instance for one tick (or one command). Instantiation runs guest start
    /// code, so it gets the deadline too.
    pub async fn session(&self) -> Result<Session, PluginError> {
        let limits = self.limits;
        let mut store = Store::new(
            &self.runtime.engine,
            HostState::new(self.ctx.clone(), &limits),
        );
        store.limiter(|s| &mut s.memory);
        cut_off_at_deadline(&mut store);
        let deadlines = self.runtime.clock.deadlines().clone();
        let armed = start_deadline(&mut store, &deadlines, limits.deadline);
        let instance =
            match tokio::time::timeout(limits.deadline, self.compiled.pre.instantiate(&mut store))
                .await
            {
                Ok(Ok(i)) => i,
                Ok(Err(e)) => return Err(classify("instantiate", e, store.data(), &limits)),
                Err(_) => {
                    return Err(PluginError::Deadline {
                        call: "instantiate".into(),
                        limit: limits.deadline,
                    });
                }
            };
        drop(armed);
        Ok(Session {
            store,
            instance,
            limits,
            deadlines,
            armed: None,
            spent: false,
            retained: 0,
            checks: CheckCounts::default(),
        })
    }

    /// Runs a declared action on a fresh instance. The action is looked up in the
    /// plugin's own metadata: if it is declared as mutating, it runs only with the user's
    /// permission, whatever the caller believes.
    pub async fn execute(
        &self,
        action: &str,
        params: &[(String, String)],
        permission: Option<&ActionPermission>,
    ) -> Result<(model::ActionInfo, Result<String, ActionFailure>), PluginError> {
        let info =
            self.metadata
                .action(action)
                .cloned()
                .ok_or_else(|| PluginError::UnknownAction {
                    action: action.to_string(),
                    subject: self.name().to_string(),
                    known: self
                        .metadata
                        .actions
                        .iter()
                        .map(|a| format!("{} ({})", a.id, a.name))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        check_params(&info, params)?;
        let phase = match (info.mutates, permission) {
            (false, _) => Phase::ReadOnly,
            (true, Some(_)) => Phase::Mutating,
            (true, None) => {
                return Err(PluginError::NotPermitted {
                    action: format!("{} ({})", info.id, info.name),
                });
            }
        };
        let out = self
            .session()
            .await?
            .execute_in(&info.id, params, phase)
            .await?;
        Ok((info, out))
    }
}

/// Parameters must be declared ones, and every required one present.
fn check_params(info: &model::ActionInfo, params: &[(String, String)]) -> Result<(), PluginError> {
    let bad = |reason: String| PluginError::BadParams {
        action: format!("{} ({})", info.id, info.name),
        reason,
    };
    for (k, _) in params {
        if !info.params.iter().any(|p| &p.name == k) {
            let known: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
            return Err(bad(format!(
                "unknown parameter `{k}` (parameters: {})",
                known.join(", ")
            )));
        }
    }
    for p in info.params.iter().filter(|p| p.required) {
        if !params.iter().any(|(k, _)| *k == p.name) {
            return Err(bad(format!(
                "missing parameter `{}` ({}); pass --param {}=...",
                p.name, p.description, p.name
            )));
        }
    }
    Ok(())
}

/// Has `store` trap once its call's deadline (`HostState::deadline`) has passed. The
/// callback runs whenever the deadline clock advances the epoch, which it does only when
/// some call's deadline comes: a store whose call still has time goes on.
fn cut_off_at_deadline(store: &mut Store<HostState>) {
    store.epoch_deadline_callback(|ctx| {
        Ok(if Instant::now() >= ctx.data().deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(1)
        })
    });
}

/// Starts a call's deadline, `limit` from now: the store's callback checks against it at
/// the next epoch change, and the clock holds it armed until the returned guard drops.
fn start_deadline(store: &mut Store<HostState>, deadlines: &Deadlines, limit: Duration) -> Armed {
    let deadline = Instant::now() + limit;
    store.data_mut().deadline = deadline;
    store.set_epoch_deadline(1);
    deadlines.arm(deadline)
}

fn classify(call: &str, err: wasmtime::Error, state: &HostState, limits: &Limits) -> PluginError {
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
    if let Some(e) = err.downcast_ref::<model::TableError>() {
        let mut message = e.to_string();
        limits::truncate(&mut message, limits.output.max_long_string);
        return PluginError::Contract {
            call: call.to_string(),
            message,
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
            .map(imports::log::escape)
            .collect::<Vec<_>>()
            .join(" | ");
        message = format!("{message}; guest stderr: {tail}");
    }
    limits::truncate(&mut message, limits.output.max_long_string);
    PluginError::Trap {
        call: call.to_string(),
        message,
    }
}

/// What `check-invariants` returned, after the output caps.
#[derive(Debug, Clone)]
pub struct Checked {
    pub violations: Vec<model::Violation>,
    /// Set when violations were over the cap: what was dropped, as a problem to report.
    pub capped: Option<model::Problem>,
}

/// One instantiated plugin. After any error the instance is spent: start a new session.
pub struct Session {
    store: Store<HostState>,
    instance: Instance,
    limits: Limits,
    deadlines: Deadlines,
    /// The running call's deadline, armed on the clock until the call ends.
    armed: Option<Armed>,
    spent: bool,
    /// How many of the newest observations this session returned are held by the instance
    /// exactly as the host holds them (contract 0.3's `check-retained`).
    retained: usize,
    checks: CheckCounts,
}

/// How the checks of one session ran: over the window the instance held, or with the
/// window sent in full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckCounts {
    pub retained: u64,
    pub sent: u64,
}

impl Session {
    /// Whether an earlier call failed, which leaves the instance unusable.
    pub fn is_spent(&self) -> bool {
        self.spent
    }

    /// Bytes of linear memory and tables the instance holds now.
    pub fn memory_in_use(&self) -> usize {
        self.store.data().memory.used
    }

    /// Bytes the guest has written to stderr over the instance's life (the pipe keeps at
    /// most 64 KiB; a long-lived instance is replaced before it fills).
    pub fn stderr_bytes(&self) -> usize {
        self.store.data().stderr.contents().len()
    }

    /// Starts (or stops) recording the requests the sandbox lets through.
    pub fn record_requests(&mut self, on: bool) {
        self.store.data_mut().recorded = on.then(Vec::new);
    }

    /// The requests recorded since the last take, oldest first.
    pub fn take_requests(&mut self) -> Vec<RecordedRequest> {
        match &mut self.store.data_mut().recorded {
            Some(log) => std::mem::take(log),
            None => Vec::new(),
        }
    }

    fn begin(&mut self, phase: Phase) -> Result<(), PluginError> {
        if self.spent {
            return Err(PluginError::Spent);
        }
        let data = self.store.data_mut();
        data.phase = phase;
        data.calls = CallCounters::default();
        self.armed = Some(start_deadline(
            &mut self.store,
            &self.deadlines,
            self.limits.deadline,
        ));
        Ok(())
    }

    /// Maps the outcome of a timed call; any failure spends the instance.
    fn finish<T>(
        &mut self,
        call: &str,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, PluginError> {
        self.armed = None;
        let dropped = self.store.data().calls.log_lines_dropped;
        if dropped > 0 {
            tracing::warn!(
                target: "plugin",
                plugin = %self.store.data().ctx.name,
                dropped,
                "plugin log lines over the per-call cap of {} were dropped",
                self.limits.log.max_lines_per_call
            );
        }
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.spent = true;
                Err(classify(call, e, self.store.data(), &self.limits))
            }
            Err(_) => {
                self.spent = true;
                Err(PluginError::Deadline {
                    call: call.to_string(),
                    limit: self.limits.deadline,
                })
            }
        }
    }

    pub async fn metadata(&mut self) -> Result<model::SubjectMetadata, PluginError> {
        self.begin(Phase::ReadOnly)?;
        let out = tokio::time::timeout(
            self.limits.deadline,
            self.instance.metadata(&mut self.store),
        )
        .await;
        self.finish("metadata", out)
    }

    /// Outer error: the plugin failed. Inner error: the plugin reports the subject could
    /// not be observed. An observation over the output caps is cut, and says so in its
    /// problems.
    pub async fn observe(
        &mut self,
    ) -> Result<Result<model::Observation, model::ObserveError>, PluginError> {
        self.begin(Phase::ReadOnly)?;
        let out =
            tokio::time::timeout(self.limits.deadline, self.instance.observe(&mut self.store))
                .await;
        let out = self.finish("observe", out)?;
        Ok(out
            .map(|mut o| {
                if caps::observation(&mut o, &self.limits.output) {
                    // The instance holds the observation as it returned it, not as cut.
                    self.retained = 0;
                } else {
                    self.retained += 1;
                }
                o
            })
            .map_err(|mut e| {
                caps::observe_error(&mut e, &self.limits.output);
                e
            }))
    }

    pub async fn check_invariants(
        &mut self,
        history: &[model::Observation],
    ) -> Result<Checked, PluginError> {
        let refs: Vec<&model::Observation> = history.iter().collect();
        self.check_window(&refs).await
    }

    /// `check-invariants` over observations the caller keeps elsewhere (oldest first, the
    /// current one last), sending them all.
    pub async fn check_window(
        &mut self,
        history: &[&model::Observation],
    ) -> Result<Checked, PluginError> {
        self.begin(Phase::ReadOnly)?;
        let out = tokio::time::timeout(
            self.limits.deadline,
            self.instance.check_invariants(&mut self.store, history),
        )
        .await;
        let mut violations = self.finish("check-invariants", out)?;
        self.checks.sent += 1;
        // The instance now holds these, which may not be what the next window ends with.
        self.retained = 0;
        let capped = caps::violations(&mut violations, &self.limits.output);
        Ok(Checked { violations, capped })
    }

    /// The monitor's check: like [`Session::check_window`], but when the instance already
    /// holds the window (it returned these observations itself, on 0.3 and later), it checks
    /// them where they are instead of receiving them again.
    ///
    /// The window must end with the observations this session returned from `observe`, in
    /// order, as the session returned them, preceded by whatever the caller kept from
    /// before; the monitor's history is exactly that.
    pub async fn check_latest(
        &mut self,
        window: &[&model::Observation],
    ) -> Result<Checked, PluginError> {
        let count = window.len();
        let contract = self.instance.contract();
        if contract.retains_history() && count > 0 && self.retained >= count {
            self.begin(Phase::ReadOnly)?;
            let out = tokio::time::timeout(
                self.limits.deadline,
                self.instance
                    .check_retained(&mut self.store, count.min(u32::MAX as usize) as u32),
            )
            .await;
            if let Some(mut violations) = self.finish("check-retained", out)? {
                self.checks.retained += 1;
                let capped = caps::violations(&mut violations, &self.limits.output);
                if capped.is_some() {
                    // The host notes the cut in its copy of the observation.
                    self.retained = 0;
                }
                return Ok(Checked { violations, capped });
            }
        }
        let checked = self.check_window(window).await?;
        // Given the whole window, the instance now holds it as sent.
        self.retained = if checked.capped.is_some() { 0 } else { count };
        Ok(checked)
    }

    /// How this session's checks ran so far.
    pub fn checks(&self) -> CheckCounts {
        self.checks
    }

    async fn execute_in(
        &mut self,
        action: &str,
        params: &[(String, String)],
        phase: Phase,
    ) -> Result<Result<String, ActionFailure>, PluginError> {
        self.begin(phase)?;
        let out = tokio::time::timeout(
            self.limits.deadline,
            self.instance.execute(&mut self.store, action, params),
        )
        .await;
        let mut out = self.finish("execute", out)?;
        match &mut out {
            Ok(m)
            | Err(
                ActionFailure::UnknownAction(m)
                | ActionFailure::BadParams(m)
                | ActionFailure::Failed(m),
            ) => {
                limits::truncate(m, self.limits.output.max_long_string);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(mutates: bool) -> model::ActionInfo {
        model::ActionInfo {
            id: "A-1".into(),
            name: "poke".into(),
            description: String::new(),
            params: vec![
                model::ParamInfo {
                    name: "node".into(),
                    description: "which".into(),
                    required: true,
                },
                model::ParamInfo {
                    name: "why".into(),
                    description: "note".into(),
                    required: false,
                },
            ],
            mutates,
            risk: model::Risk::Low,
        }
    }

    #[test]
    fn params_must_be_declared_and_required_ones_present() {
        let a = action(true);
        let p = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(check_params(&a, &p(&[("node", "n1")])).is_ok());
        assert!(check_params(&a, &p(&[("node", "n1"), ("why", "x")])).is_ok());
        assert!(check_params(&a, &p(&[])).is_err());
        assert!(check_params(&a, &p(&[("node", "n1"), ("all", "true")])).is_err());
    }

    #[test]
    fn the_permission_exists_only_when_the_user_flag_is_set() {
        assert!(ActionPermission::from_user_flag(false).is_none());
        assert!(ActionPermission::from_user_flag(true).is_some());
    }

    #[test]
    fn declared_origins_grant_and_values_do_not() {
        let mut meta = model::SubjectMetadata::named("x");
        meta.settings = vec![
            model::SettingInfo {
                name: "url".into(),
                description: String::new(),
                kind: model::SettingKind::Origin,
                required: true,
                default_value: None,
            },
            model::SettingInfo {
                name: "note".into(),
                description: String::new(),
                kind: model::SettingKind::Value,
                required: false,
                default_value: None,
            },
        ];
        let settings: BTreeMap<String, String> = [
            ("url", "http://127.0.0.1:7001"),
            ("note", "http://127.0.0.1:7002"),
            ("undeclared", "http://127.0.0.1:7003"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let check = |a: &Allowlist, port: u16| {
            a.check(&url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap())
                .is_ok()
        };
        let a = grants(
            ContractVersion::V0_2,
            &meta,
            &settings,
            Allowlist::default(),
            "x",
        );
        assert!(check(&a, 7001));
        assert!(!check(&a, 7002), "a value setting is never a grant");
        assert!(!check(&a, 7003), "an undeclared setting is never a grant");
        // A 0.1 plugin declares nothing: every URL-valued setting grants, as it always did.
        let legacy = grants(
            ContractVersion::V0_1,
            &model::SubjectMetadata::named("x"),
            &settings,
            Allowlist::default(),
            "x",
        );
        assert!(check(&legacy, 7001) && check(&legacy, 7002) && check(&legacy, 7003));
    }

    #[test]
    fn file_plugins_are_named_by_content_not_by_what_they_say() {
        let a = PluginSource::file("/x/web.wasm").default_name(digest(b"one"));
        let b = PluginSource::file("/y/web.wasm").default_name(digest(b"two"));
        assert!(a.starts_with("web@") && b.starts_with("web@"));
        assert_ne!(a, b);
        assert_eq!(PluginSource::bundled("web").default_name(0), "web");
    }
}
