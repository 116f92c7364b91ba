//! One node's state and its decision logic: Redis first, then the configured policy.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::chaos::Chaos;
use crate::config::{Config, Policy};
use crate::fallback::LocalCounters;
use crate::metrics::Metrics;
use crate::script::{DEFAULT_FIELD, Outcome};
use crate::store::{Limit, Store, StoreError};

/// How often Redis is probed with PING.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often limits and blocked keys are cached for the local fallback.
pub const CACHE_REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    FailOpen,
    FailClosed,
    LocalOnly,
    Draining,
}

impl Mode {
    /// Name used in JSON responses and the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::FailOpen => "fail-open",
            Mode::FailClosed => "fail-closed",
            Mode::LocalOnly => "local-only",
            Mode::Draining => "draining",
        }
    }

    /// Value of the `mode` label of `ratelimiter_mode`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::FailOpen => "fail_open",
            Mode::FailClosed => "fail_closed",
            Mode::LocalOnly => "local_only",
            Mode::Draining => "draining",
        }
    }
}

/// What `/v1/check` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Decided {
        outcome: Outcome,
        limit: u64,
        mode: Mode,
        degraded: bool,
    },
    FailedClosed,
    Draining,
}

/// Last known limits and blocked keys, for deciding without Redis.
#[derive(Debug, Default)]
struct Cache {
    limits: HashMap<String, Limit>,
    default: Option<Limit>,
    blocked: HashSet<String>,
}

pub struct Node {
    pub cfg: Config,
    /// Address this node serves on, as published in the registry.
    pub addr: String,
    pub store: Store,
    pub local: LocalCounters,
    pub metrics: Metrics,
    pub chaos: Chaos,
    draining: AtomicBool,
    redis_up: AtomicBool,
    redis_status: Mutex<String>,
    cache: RwLock<Cache>,
    /// Redis time of the first successful heartbeat (0 until then).
    pub started_ms: AtomicU64,
    /// Wakes the heartbeat task early after a mode change.
    pub heartbeat_now: Notify,
}

pub fn local_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    pub fn new(cfg: Config, addr: String) -> anyhow::Result<Node> {
        let metrics = Metrics::new()?;
        let store = Store::new(
            &cfg.redis,
            cfg.redis_timeout,
            cfg.default_limit(),
            metrics.redis_duration.clone(),
            metrics.redis_errors.clone(),
        )?;
        Ok(Node {
            cfg,
            addr,
            store,
            local: LocalCounters::default(),
            metrics,
            chaos: Chaos::default(),
            draining: AtomicBool::new(false),
            redis_up: AtomicBool::new(false),
            redis_status: Mutex::new("not probed yet".into()),
            cache: RwLock::new(Cache::default()),
            started_ms: AtomicU64::new(0),
            heartbeat_now: Notify::new(),
        })
    }

    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Whether Redis may be used: reachable and not cut off by local-only chaos.
    pub fn redis_available(&self) -> bool {
        self.redis_up() && !self.chaos.local_only()
    }

    /// "ok" or the last Redis error, as this node sees it.
    pub fn redis_status(&self) -> String {
        if self.chaos.local_only() {
            return "unreachable: cut off by chaos local_only".into();
        }
        self.redis_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, on: bool) {
        if self.draining.swap(on, Ordering::Relaxed) != on {
            info!(draining = on, "drain state changed");
        }
        self.refresh_mode();
        self.heartbeat_now.notify_one();
    }

    pub fn mode(&self) -> Mode {
        if self.draining() {
            Mode::Draining
        } else if self.chaos.local_only() {
            Mode::LocalOnly
        } else if !self.redis_up() {
            match self.cfg.policy {
                Policy::FailOpen => Mode::FailOpen,
                Policy::FailClosed => Mode::FailClosed,
            }
        } else {
            Mode::Normal
        }
    }

    pub fn refresh_mode(&self) {
        self.metrics.set_mode(self.mode().metric_label());
        self.metrics.redis_up.set(i64::from(self.redis_up()));
    }

    fn mark_down(&self, err: &StoreError) {
        *self.redis_status.lock().unwrap_or_else(|p| p.into_inner()) = err.to_string();
        if self.redis_up.swap(false, Ordering::Relaxed) {
            warn!(error = %err, policy = self.cfg.policy.as_str(), "redis unreachable; degrading");
        }
        self.refresh_mode();
    }

    fn mark_up(&self) -> bool {
        *self.redis_status.lock().unwrap_or_else(|p| p.into_inner()) = "ok".into();
        let was_up = self.redis_up.swap(true, Ordering::Relaxed);
        self.refresh_mode();
        !was_up
    }

    /// Decide one request.
    pub async fn check(&self, key: &str, cost: u64) -> CheckResult {
        if self.draining() {
            return CheckResult::Draining;
        }
        let start = Instant::now();
        let result = if self.chaos.local_only() {
            self.decide_locally(key, cost, Mode::LocalOnly)
        } else if self.redis_up() {
            match self
                .store
                .decide(key, cost, self.chaos.redis_latency())
                .await
            {
                Ok(d) => {
                    if d.allowed {
                        self.metrics.allowed.inc();
                    } else {
                        self.metrics.denied.inc();
                    }
                    self.metrics.keys.record(
                        key,
                        d.allowed,
                        d.window_ms,
                        d.window_start_ms / d.window_ms,
                    );
                    self.remember_limit(
                        key,
                        Limit {
                            limit: d.limit,
                            window_ms: d.window_ms,
                        },
                    );
                    CheckResult::Decided {
                        outcome: Outcome {
                            allowed: d.allowed,
                            remaining: d.remaining,
                            retry_after_ms: d.retry_after_ms,
                        },
                        limit: d.limit,
                        mode: Mode::Normal,
                        degraded: false,
                    }
                }
                Err(e) => {
                    if e.is_outage() {
                        self.mark_down(&e);
                    } else {
                        debug!(error = %e, key, "redis answered with an error; applying policy");
                    }
                    self.apply_policy(key, cost)
                }
            }
        } else {
            self.apply_policy(key, cost)
        };
        self.metrics
            .decision_duration
            .observe(start.elapsed().as_secs_f64());
        result
    }

    fn apply_policy(&self, key: &str, cost: u64) -> CheckResult {
        match self.cfg.policy {
            Policy::FailOpen => self.decide_locally(key, cost, Mode::FailOpen),
            Policy::FailClosed => {
                self.metrics.failed_closed.inc();
                CheckResult::FailedClosed
            }
        }
    }

    /// The limit the local fallback uses: last known for the key, else the last known
    /// `_default`, else the node's configured default.
    pub fn cached_limit(&self, key: &str) -> Limit {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .limits
            .get(key)
            .copied()
            .or(cache.default)
            .unwrap_or(self.cfg.default_limit())
    }

    fn remember_limit(&self, key: &str, limit: Limit) {
        let known = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            cache.limits.get(key).copied()
        };
        if known != Some(limit) {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            // Bounded like the key tallies: limits for unseen keys come from `_default`.
            if cache.limits.len() < 10_000 || cache.limits.contains_key(key) {
                cache.limits.insert(key.to_owned(), limit);
            }
        }
    }

    fn decide_locally(&self, key: &str, cost: u64, mode: Mode) -> CheckResult {
        let limit = self.cached_limit(key);
        let blocked = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .blocked
            .contains(key);
        let now = local_now_ms();
        let outcome = self
            .local
            .decide(key, cost, limit.limit, limit.window_ms, blocked, now);
        self.metrics.failed_open.inc();
        if outcome.allowed {
            self.metrics.fallback_allowed.inc();
        } else {
            self.metrics.fallback_denied.inc();
        }
        let window = limit.window_ms.max(1);
        self.metrics
            .keys
            .record(key, outcome.allowed, window, now / window);
        CheckResult::Decided {
            outcome,
            limit: limit.limit,
            mode,
            degraded: true,
        }
    }

    /// Probe Redis once and update the mode; reload scripts and caches after a recovery.
    pub async fn probe(&self) {
        match self.store.ping().await {
            Ok(()) => {
                if self.mark_up() {
                    info!("redis reachable; normal decisions");
                    if let Err(e) = self.store.load_scripts().await {
                        warn!(error = %e, "SCRIPT LOAD failed; EVALSHA will retry the load");
                    }
                    self.refresh_cache().await;
                    self.heartbeat_now.notify_one();
                }
            }
            Err(e) => self.mark_down(&e),
        }
    }

    /// Re-read limits and blocked keys for the local fallback.
    pub async fn refresh_cache(&self) {
        if !self.redis_available() {
            return;
        }
        let limits = match self.store.limits().await {
            Ok(l) => l,
            Err(e) => {
                debug!(error = %e, "limit cache refresh failed");
                return;
            }
        };
        let blocked = match self.store.blocked_keys().await {
            Ok(b) => b,
            Err(e) => {
                debug!(error = %e, "blocked-key cache refresh failed");
                return;
            }
        };
        let mut parsed = HashMap::with_capacity(limits.len());
        let mut default = None;
        for (field, raw) in limits {
            match serde_json::from_str::<Limit>(&raw) {
                Ok(l) if l.window_ms > 0 => {
                    if field == DEFAULT_FIELD {
                        default = Some(l);
                    } else {
                        parsed.insert(field, l);
                    }
                }
                _ => warn!(field, raw, "ignoring malformed limit in rl:limits"),
            }
        }
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.limits = parsed;
        cache.default = default;
        cache.blocked = blocked.into_iter().collect();
    }

    /// Background loops: Redis probe and cache refresh. Both run until the process exits.
    pub fn spawn_background(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                node.probe().await;
            }
        });
        let node = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CACHE_REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                node.refresh_cache().await;
            }
        });
        let node = self.clone();
        tokio::spawn(crate::registry::heartbeat_loop(node));
    }
}
