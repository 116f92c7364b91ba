//! MON-01..07 as one table: each row declares an invariant (id, name, description,
//! severity) and the check that emits its violations. `metadata()` lists the rows, so an id
//! and its severity are written once. Every check is a pure function of the recent
//! observations (oldest first) and the thresholds.

use crate::evidence::{self, ERROR_KIND, KEY, LIMIT, MODE, NODE, REACHABLE, REDIS_REACHABLE};
use crate::observe::KEY_DECISIONS;
use operator_sdk::history::{Indexed, label};
use operator_sdk::prelude::*;
use ratelimiter_wire::{Mode, keys};
use std::collections::BTreeMap;

#[cfg(test)]
mod tests;

/// The invariant ids, for the failure modes that cite them.
pub mod id {
    pub const NODE_UNREACHABLE: &str = "MON-01";
    pub const REDIS_DISCONNECTED: &str = "MON-02";
    pub const HIGH_LATENCY: &str = "MON-03";
    pub const COUNTER_DRIFT: &str = "MON-04";
    pub const GHOST_ALLOWING: &str = "MON-05";
    pub const STUCK_KEYS: &str = "MON-06";
    pub const HOT_KEY: &str = "MON-07";
}

/// One row of the table.
pub struct InvariantDef {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub severity: Severity,
    /// Pushes this invariant's violations for the latest observation.
    pub check: fn(&InvariantDef, &Ticks, &mut Vec<Violation>),
}

impl InvariantDef {
    /// What `metadata()` declares for this row.
    pub fn info(&self) -> InvariantInfo {
        Invariant::new(self.id, self.name, self.severity).describe(self.description)
    }

    /// A violation of this invariant with dedup key `{id}:{key}`.
    fn violation(&self, key: &str) -> Violation {
        Violation::new(self.id, self.severity, key)
    }
}

pub const INVARIANTS: &[InvariantDef] = &[
    InvariantDef {
        id: id::NODE_UNREACHABLE,
        name: "node unreachable",
        description: "Every configured or registered node answers /healthz and heartbeats into the Redis registry",
        severity: Severity::Critical,
        check: node_unreachable,
    },
    InvariantDef {
        id: id::REDIS_DISCONNECTED,
        name: "redis disconnected",
        description: "Redis answers the operator, and no node reports Redis errors or decides in fail-open/local-only mode",
        severity: Severity::Critical,
        check: redis_disconnected,
    },
    InvariantDef {
        id: id::HIGH_LATENCY,
        name: "high latency",
        description: "Each node's p99 decision latency since the last tick stays under latency_p99_ms",
        severity: Severity::Warning,
        check: high_latency,
    },
    InvariantDef {
        id: id::COUNTER_DRIFT,
        name: "counter drift",
        description: "Nodes agree on a key's count, and no node counts decisions locally that Redis never saw",
        severity: Severity::Warning,
        check: counter_drift,
    },
    InvariantDef {
        id: id::GHOST_ALLOWING,
        name: "ghost allowing",
        description: "For each key, the decisions allowed across all nodes in one window stay within its limit",
        severity: Severity::Critical,
        check: ghost_allowing,
    },
    InvariantDef {
        id: id::STUCK_KEYS,
        name: "stuck keys",
        description: "Every counter and registry key in the rl: namespace carries a TTL",
        severity: Severity::Warning,
        check: stuck_keys,
    },
    InvariantDef {
        id: id::HOT_KEY,
        name: "hot key",
        description: "No single key takes more than hot_key_share of all decisions",
        severity: Severity::Warning,
        check: hot_key,
    },
];

#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub latency_p99_ms: f64,
    pub latency_min_samples: f64,
    pub heartbeat_stale_ms: f64,
    pub drift_tolerance: f64,
    pub hot_key_share: f64,
    pub hot_key_min_decisions: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            latency_p99_ms: 100.0,
            latency_min_samples: 20.0,
            heartbeat_stale_ms: 3000.0,
            drift_tolerance: 0.1,
            hot_key_share: 0.5,
            hot_key_min_decisions: 200.0,
        }
    }
}

/// A threshold the user may set: its setting name, what it means, and its field.
pub struct ThresholdSetting {
    pub name: &'static str,
    pub description: &'static str,
    pub field: fn(&mut Thresholds) -> &mut f64,
}

/// Every threshold setting, in the order `metadata()` declares them.
pub const THRESHOLD_SETTINGS: &[ThresholdSetting] = &[
    ThresholdSetting {
        name: "latency_p99_ms",
        description: "MON-03: p99 decision latency limit in ms",
        field: |t| &mut t.latency_p99_ms,
    },
    ThresholdSetting {
        name: "latency_min_samples",
        description: "MON-03: fewest decisions in a tick to judge p99",
        field: |t| &mut t.latency_min_samples,
    },
    ThresholdSetting {
        name: "heartbeat_stale_ms",
        description: "MON-01: registry heartbeat age that counts as stale",
        field: |t| &mut t.heartbeat_stale_ms,
    },
    ThresholdSetting {
        name: "drift_tolerance",
        description: "MON-04: allowed disagreement, as a share of the limit (at least 2)",
        field: |t| &mut t.drift_tolerance,
    },
    ThresholdSetting {
        name: "hot_key_share",
        description: "MON-07: share of all decisions one key may take",
        field: |t| &mut t.hot_key_share,
    },
    ThresholdSetting {
        name: "hot_key_min_decisions",
        description: "MON-07: fewest decisions in a tick to judge",
        field: |t| &mut t.hot_key_min_decisions,
    },
];

impl Thresholds {
    /// The defaults with each setting `lookup` knows replaced.
    pub fn with(mut lookup: impl FnMut(&str, f64) -> f64) -> Thresholds {
        let mut t = Thresholds::default();
        for s in THRESHOLD_SETTINGS {
            let slot = (s.field)(&mut t);
            *slot = lookup(s.name, *slot);
        }
        t
    }

    /// Reads overrides from the settings; a malformed one is logged and the default kept.
    pub fn from_config() -> Thresholds {
        Thresholds::with(|key, default| {
            config::parse_or(key, default).unwrap_or_else(|e| {
                log::warn(e);
                default
            })
        })
    }

    /// The default value of setting `name`.
    pub fn default_of(name: &str) -> Option<f64> {
        let mut t = Thresholds::default();
        THRESHOLD_SETTINGS
            .iter()
            .find(|s| s.name == name)
            .map(|s| *(s.field)(&mut t))
    }
}

/// What every check reads: the recent observations and the thresholds.
pub struct Ticks<'a> {
    /// Oldest first; the last one is `cur`.
    pub history: &'a [Observation],
    /// Indexed by sample name: the checks look up hundreds of series per tick.
    pub cur: &'a Indexed<'a>,
    /// The observation before `cur`, for deltas.
    pub prev: Option<&'a Indexed<'a>>,
    pub t: &'a Thresholds,
    /// `true`/`false` as the operator reached Redis this tick, `unknown` without a `redis`
    /// setting.
    pub redis_reachable: String,
    /// Each key's limit in `cur`.
    pub limits: BTreeMap<String, f64>,
}

impl Ticks<'_> {
    fn limit_of(&self, key: &str) -> Option<f64> {
        self.limits.get(key).copied()
    }
}

pub fn check(history: &[Observation], t: &Thresholds) -> Vec<Violation> {
    let Some(cur) = history.last() else {
        return vec![];
    };
    let cur = &Indexed::new(cur);
    let prev = history
        .len()
        .checked_sub(2)
        .map(|i| Indexed::new(&history[i]));
    let prev = prev.as_ref();
    let redis_reachable = cur
        .component("redis")
        .map(|r| r.attr(REACHABLE).unwrap_or("false").to_string())
        .unwrap_or_else(|| "unknown".into());
    let ticks = Ticks {
        history,
        cur,
        prev,
        t,
        redis_reachable,
        limits: limits(cur),
    };
    let mut out = Vec::new();
    for inv in INVARIANTS {
        (inv.check)(inv, &ticks, &mut out);
    }
    out
}

fn nodes(obs: &Observation) -> impl Iterator<Item = &Component> {
    obs.components.iter().filter(|c| c.kind == "node")
}

/// The node's own id, from this observation or, when it is down now, from an earlier one.
fn node_name(id: &str, history: &[Observation]) -> String {
    history
        .iter()
        .rev()
        .find_map(|o| o.component(id)?.attr("node_id").map(String::from))
        .unwrap_or_else(|| id.to_string())
}

fn node_unreachable(def: &InvariantDef, x: &Ticks, out: &mut Vec<Violation>) {
    let t = x.t;
    for n in nodes(x.cur) {
        // Set only when someone (Redis directly, or a node's /v1/nodes) read the registry.
        let registry_readable = n.attr("registry_source").is_some();
        let name = node_name(&n.id, x.history);
        let age: Option<f64> = n.attr("heartbeat_age_ms").and_then(|a| a.parse().ok());
        let mut evidence = vec![
            kv(NODE, &n.id),
            kv("node_id", &name),
            kv(REACHABLE, n.attr(REACHABLE).unwrap_or("unknown")),
        ];
        for key in [
            ERROR_KIND,
            "error",
            MODE,
            "registered",
            "heartbeat_age_ms",
            "registry_source",
        ] {
            if let Some(v) = n.attr(key) {
                evidence.push(kv(key, v));
            }
        }
        let summary = if n.state == ComponentState::Down {
            format!(
                "node {name} ({}) does not answer: {}",
                n.id,
                n.attr("error").unwrap_or("no answer")
            )
        } else if age.is_some_and(|a| a > t.heartbeat_stale_ms) {
            format!(
                "node {name} ({}) has a stale heartbeat: last one {:.1}s ago (limit {:.1}s)",
                n.id,
                age.unwrap_or(0.0) / 1000.0,
                t.heartbeat_stale_ms / 1000.0
            )
        } else if registry_readable
            && n.attr("configured") == Some("true")
            && n.attr("registered") == Some("false")
        {
            format!(
                "node {name} ({}) answers but is missing from the Redis registry (heartbeat expired)",
                n.id
            )
        } else {
            continue;
        };
        evidence.push(kv("stale_after_ms", t.heartbeat_stale_ms));
        out.push(
            def.violation(&n.id)
                .component(&n.id)
                .summary(summary)
                .evidence_all(evidence),
        );
    }
}

fn counter_delta(
    cur: &Indexed,
    prev: &Indexed,
    name: &str,
    filter: &[(&str, &str)],
) -> Option<f64> {
    let (c, p) = (cur.sum(name, filter)?, prev.sum(name, filter)?);
    // A counter going backwards means the node restarted; the delta is then unknown.
    (c >= p).then_some(c - p)
}

fn redis_disconnected(def: &InvariantDef, x: &Ticks, out: &mut Vec<Violation>) {
    let (cur, redis_reachable) = (x.cur, x.redis_reachable.as_str());
    let degraded: Vec<&Component> = nodes(cur)
        .filter(|n| n.attr(REACHABLE) == Some("true"))
        .filter(|n| {
            n.attr("redis").is_some_and(|r| r != "ok")
                || n.attr(MODE)
                    .and_then(Mode::parse)
                    .is_some_and(Mode::without_redis)
        })
        .collect();
    if redis_reachable == "false" {
        // One ticket for the shared cause, not one per node.
        let r = cur.component("redis");
        let error = r.and_then(|r| r.attr("error")).unwrap_or("unreachable");
        let modes: Vec<String> = degraded
            .iter()
            .map(|n| format!("{}={}", n.id, n.attr(MODE).unwrap_or("?")))
            .collect();
        out.push(
            def.violation("redis")
                .component("redis")
                .summary(format!(
                    "Redis is unreachable ({error}); {} of the nodes report it too",
                    degraded.len()
                ))
                .evidence(REDIS_REACHABLE, "false")
                .evidence("error", error)
                .evidence("nodes_degraded", degraded.len())
                .evidence("node_modes", modes.join(","))
                .evidence(
                    MODE,
                    degraded
                        .first()
                        .and_then(|n| n.attr(MODE))
                        .unwrap_or("unknown"),
                ),
        );
        return;
    }
    for n in degraded {
        let errors = x.prev.and_then(|p| {
            counter_delta(cur, p, "ratelimiter_redis_errors_total", &[("node", &n.id)])
        });
        let name = n.attr("node_id").unwrap_or(&n.id);
        let mode = n.attr(MODE).unwrap_or("unknown");
        let mut v = def
            .violation(&n.id)
            .component(&n.id)
            .summary(format!(
                "node {name} cannot use Redis (mode {mode}, redis: {}) although Redis {}",
                n.attr("redis").unwrap_or("?"),
                if redis_reachable == "true" {
                    "answers the operator"
                } else {
                    "state is unknown"
                }
            ))
            .evidence(NODE, &n.id)
            .evidence("node_id", name)
            .evidence(MODE, mode)
            .evidence("redis_status", n.attr("redis").unwrap_or("unknown"))
            .evidence(REDIS_REACHABLE, redis_reachable)
            .evidence(REACHABLE, "true");
        if let Some(e) = errors {
            v = v.evidence("redis_errors_since_last_tick", e);
        }
        out.push(v);
    }
}

fn high_latency(def: &InvariantDef, x: &Ticks, out: &mut Vec<Violation>) {
    const DECISION: &str = "ratelimiter_decision_duration_seconds";
    const REDIS: &str = "ratelimiter_redis_duration_seconds";
    let (cur, t) = (x.cur, x.t);
    let Some(prev) = x.prev else { return };
    for n in nodes(cur) {
        let filter = [("node", n.id.as_str())];
        let (Some(c), Some(p)) = (
            cur.histogram(DECISION, &filter),
            prev.histogram(DECISION, &filter),
        ) else {
            continue;
        };
        let d = c.delta(&p);
        if d.count < t.latency_min_samples {
            continue;
        }
        let Some(p99) = d.quantile(0.99).map(|s| s * 1000.0) else {
            continue;
        };
        if p99 <= t.latency_p99_ms {
            continue;
        }
        let redis_p99 = match (
            cur.histogram(REDIS, &filter),
            prev.histogram(REDIS, &filter),
        ) {
            (Some(c), Some(p)) => c.delta(&p).quantile(0.99).map(|s| s * 1000.0),
            _ => None,
        };
        // Redis counts as the slow part when its calls take most of the decision time.
        let redis_slow = redis_p99.map(|r| r >= 0.5 * p99);
        let name = n.attr("node_id").unwrap_or(&n.id);
        let mut v = def
            .violation(&n.id)
            .component(&n.id)
            .summary(format!(
                "node {name}: p99 decision latency {p99:.1} ms over {} decisions since the last tick (threshold {} ms)",
                d.count, t.latency_p99_ms
            ))
            .evidence(NODE, &n.id)
            .evidence("node_id", name)
            .evidence("p99_ms", format!("{p99:.1}"))
            .evidence("threshold_ms", t.latency_p99_ms)
            .evidence("decisions", d.count)
            .evidence("mean_ms", format!("{:.2}", 1000.0 * d.sum / d.count));
        if let Some(r) = redis_p99 {
            v = v.evidence("redis_p99_ms", format!("{r:.1}"));
        }
        if let Some(s) = redis_slow {
            v = v.evidence(evidence::REDIS_SLOW, s);
        }
        out.push(v);
    }
}

/// Samples grouped by (key, window) → node → value, borrowed from the observation: the
/// checks group a few hundred samples this way every tick.
fn by_key_window<'a>(
    obs: &'a Indexed,
    name: &'a str,
) -> BTreeMap<(&'a str, &'a str), BTreeMap<&'a str, f64>> {
    let mut m: BTreeMap<(&str, &str), BTreeMap<&str, f64>> = BTreeMap::new();
    for s in obs.samples(name, &[]) {
        if let (Some(k), Some(w), Some(n)) = (label(s, "key"), label(s, "window"), label(s, "node"))
        {
            m.entry((k, w)).or_default().insert(n, s.value);
        }
    }
    m
}

/// Every key's limit (the highest any node reports), read once per check rather than
/// once per key and window.
fn limits(obs: &Indexed) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for s in obs.named("rl_view_limit") {
        if let Some(key) = label(s, "key") {
            let l = out.entry(key.to_string()).or_insert(s.value);
            *l = l.max(s.value);
        }
    }
    out
}

fn window_ms_of(obs: &Indexed, key: &str) -> Option<f64> {
    obs.samples("rl_view_window_ms", &[("key", key)])
        .map(|s| s.value)
        .reduce(f64::max)
}

fn counter_drift(def: &InvariantDef, x: &Ticks, out: &mut Vec<Violation>) {
    let (cur, t, redis_reachable) = (x.cur, x.t, x.redis_reachable.as_str());
    let tolerance = |limit: f64| (t.drift_tolerance * limit).max(2.0);
    // A node counting locally: decisions Redis never saw. Worst key per node.
    let mut worst: BTreeMap<&str, (&str, &str, f64, f64)> = BTreeMap::new();
    for ((key, window), per_node) in by_key_window(cur, "rl_view_local_count") {
        let limit = x.limit_of(key).unwrap_or(0.0);
        for (node, local) in per_node {
            if local > tolerance(limit) && worst.get(node).is_none_or(|w| local > w.2) {
                worst.insert(node, (key, window, local, limit));
            }
        }
    }
    for (node, (key, window, local, limit)) in worst {
        let authoritative = cur
            .sum("rl_redis_count", &[("key", key), ("window", window)])
            .map_or("unknown".to_string(), |v| v.to_string());
        let name = cur
            .component(node)
            .and_then(|c| c.attr("node_id"))
            .unwrap_or(node)
            .to_string();
        out.push(
            def.violation(node)
                .component(node)
                .summary(format!("node {name} counted {local} decisions on `{key}` locally that Redis never saw (Redis has {authoritative})"))
                .evidence(NODE, node)
                .evidence("node_id", &name)
                .evidence(KEY, key)
                .evidence("window", window)
                .evidence("local_count", local)
                .evidence("redis_count", &authoritative)
                .evidence(LIMIT, limit)
                .evidence("tolerance", tolerance(limit))
                .evidence(REDIS_REACHABLE, redis_reachable)
                .evidence(REACHABLE, "true"),
        );
    }
    // Nodes reading different counts for the same key and window from the same Redis.
    for ((key, window), per_node) in by_key_window(cur, "rl_view_redis_current") {
        if per_node.len() < 2 {
            continue;
        }
        let limit = x.limit_of(key).unwrap_or(0.0);
        let (min, max) = per_node
            .values()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        if max - min <= tolerance(limit) {
            continue;
        }
        let views: Vec<String> = per_node.iter().map(|(n, v)| format!("{n}={v}")).collect();
        out.push(
            def.violation(&format!("key:{key}"))
                .summary(format!("nodes disagree on `{key}`: counts {min} to {max} for the same window (tolerance {})", tolerance(limit)))
                .evidence(KEY, key)
                .evidence("window", window)
                .evidence("views", views.join(","))
                .evidence("spread", max - min)
                .evidence(LIMIT, limit)
                .evidence(REDIS_REACHABLE, redis_reachable),
        );
    }
}

fn ghost_allowing(def: &InvariantDef, x: &Ticks, out: &mut Vec<Violation>) {
    let cur = x.cur;
    let allowed = by_key_window(cur, "rl_view_allowed_in_window");
    let mut worst: BTreeMap<&str, (&str, f64, f64, Vec<String>)> = BTreeMap::new();
    for (&(key, window), per_node) in &allowed {
        let Some(limit) = x.limit_of(key) else {
            continue;
        };
        let total: f64 = per_node.values().sum();
        if total <= limit || worst.get(key).is_some_and(|w| w.1 >= total) {
            continue;
        }
        let parts = per_node.iter().map(|(n, v)| format!("{n}={v}")).collect();
        worst.insert(key, (window, total, limit, parts));
    }
    for (key, (window, total, limit, parts)) in worst {
        // The node that allowed the most is the likeliest culprit (it counted locally).
        let top_node = allowed
            .get(&(key, window))
            .and_then(|m| m.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(n, _)| *n))
            .unwrap_or_default();
        out.push(
            def.violation(key)
                .summary(format!(
                    "`{key}`: {total} allowed across nodes in one window, limit {limit} ({:.0}% over)",
                    100.0 * (total - limit) / limit.max(1.0)
                ))
                .evidence(KEY, key)
                .evidence("window", window)
                .evidence("allowed_total", total)
                .evidence(LIMIT, limit)
                .evidence("excess", total - limit)
                .evidence("per_node", parts.join(","))
                .evidence(NODE, top_node)
                .evidence(REDIS_REACHABLE, &x.redis_reachable),
        );
    }
}

fn stuck_keys(def: &InvariantDef, x: &Ticks, out: &mut Vec<Violation>) {
    let cur = x.cur;
    let count = cur.sum("rl_redis_keys_without_ttl", &[]).unwrap_or(0.0);
    if count <= 0.0 {
        return;
    }
    let samples: Vec<&str> = cur
        .events
        .iter()
        .filter(|e| e.message == crate::observe::KEY_WITHOUT_TTL)
        .filter_map(|e| {
            e.attributes
                .iter()
                .find(|a| a.key == "key")
                .map(|a| a.value.as_str())
        })
        .collect();
    let redis = cur.component("redis");
    // `rl:w:{key}:{window}` names the rate-limited key, which the reset action takes.
    let key = samples
        .first()
        .and_then(|n| keys::counter_owner(n))
        .unwrap_or_default();
    out.push(
        def.violation("redis")
            .component("redis")
            .summary(format!(
                "{count} key(s) in the limiter's namespace have no TTL, e.g. {}",
                samples.first().unwrap_or(&"?")
            ))
            .evidence("keys_without_ttl", count)
            .evidence("examples", samples.join(","))
            .evidence(KEY, key)
            .evidence(
                "persistent_keys",
                redis.and_then(|r| r.attr("persistent_keys")).unwrap_or("?"),
            )
            .evidence(
                "config_keys",
                redis.and_then(|r| r.attr("config_keys")).unwrap_or("?"),
            )
            .evidence(
                "keys_scanned",
                cur.sum("rl_redis_keys_scanned", &[]).unwrap_or(0.0),
            ),
    );
}

fn hot_key(def: &InvariantDef, x: &Ticks, out: &mut Vec<Violation>) {
    let (cur, t) = (x.cur, x.t);
    let Some(prev) = x.prev else { return };
    let mut total = 0.0;
    for n in nodes(cur) {
        total += counter_delta(cur, prev, "ratelimiter_decisions_total", &[("node", &n.id)])
            .unwrap_or(0.0);
    }
    if total < t.hot_key_min_decisions {
        return;
    }
    // Per-key deltas, only where the node exported the key on both ticks: a key entering
    // the top 20 would otherwise count its whole history as this tick's traffic.
    // The previous tick's series by (key, node), read once rather than per sample. The
    // observation holds them summed over results already (see `Snapshot::node_metrics`).
    let mut before_of: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for s in prev.samples(KEY_DECISIONS, &[]) {
        if let (Some(key), Some(node)) = (label(s, "key"), label(s, "node")) {
            *before_of.entry((key, node)).or_default() += s.value;
        }
    }
    let mut per_key: BTreeMap<&str, f64> = BTreeMap::new();
    for s in cur.samples(KEY_DECISIONS, &[]) {
        let (Some(key), Some(node)) = (label(s, "key"), label(s, "node")) else {
            continue;
        };
        if key == "_other" {
            continue;
        }
        if let Some(&before) = before_of.get(&(key, node))
            && s.value >= before
        {
            *per_key.entry(key).or_default() += s.value - before;
        }
    }
    for (key, n) in per_key {
        let share = n / total;
        if share <= t.hot_key_share {
            continue;
        }
        let limit = x.limit_of(key);
        let window_ms = window_ms_of(cur, key);
        out.push(
            def.violation(key)
                .summary(format!("hot key `{key}`: {:.0}% of {total} decisions since the last tick (threshold {:.0}%)", 100.0 * share, 100.0 * t.hot_key_share))
                .evidence(KEY, key)
                .evidence("share", format!("{share:.3}"))
                .evidence("decisions", n)
                .evidence("total_decisions", total)
                .evidence("threshold", t.hot_key_share)
                .evidence(LIMIT, limit.map_or("unknown".into(), |l| l.to_string()))
                .evidence(
                    evidence::WINDOW_MS,
                    window_ms.map_or("unknown".into(), |w| w.to_string()),
                ),
        );
    }
}
