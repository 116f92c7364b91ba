//! MON-01..07: pure functions of the recent observations (oldest first).

use operator_sdk::history::label;
use operator_sdk::prelude::*;
use std::collections::BTreeMap;

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

impl Thresholds {
    /// Reads overrides from the settings; a malformed one is logged and the default kept.
    pub fn from_config() -> Thresholds {
        let d = Thresholds::default();
        let get = |key: &str, default: f64| {
            config::parse_or(key, default).unwrap_or_else(|e| {
                log::warn(e);
                default
            })
        };
        Thresholds {
            latency_p99_ms: get("latency_p99_ms", d.latency_p99_ms),
            latency_min_samples: get("latency_min_samples", d.latency_min_samples),
            heartbeat_stale_ms: get("heartbeat_stale_ms", d.heartbeat_stale_ms),
            drift_tolerance: get("drift_tolerance", d.drift_tolerance),
            hot_key_share: get("hot_key_share", d.hot_key_share),
            hot_key_min_decisions: get("hot_key_min_decisions", d.hot_key_min_decisions),
        }
    }
}

fn violation(
    invariant: &str,
    severity: Severity,
    component: &str,
    dedup: &str,
    summary: String,
    evidence: Vec<Kv>,
) -> Violation {
    Violation {
        invariant: invariant.into(),
        severity,
        component: component.into(),
        summary,
        evidence,
        dedup_key: format!("{invariant}:{dedup}"),
    }
}

pub fn check(history: &[Observation], t: &Thresholds) -> Vec<Violation> {
    let Some(cur) = history.last() else {
        return vec![];
    };
    let prev = history.len().checked_sub(2).map(|i| &history[i]);
    let mut out = Vec::new();
    let redis_reachable = cur
        .component("redis")
        .map(|r| r.attr("reachable").unwrap_or("false").to_string())
        .unwrap_or_else(|| "unknown".into());
    node_unreachable(cur, history, t, &mut out);
    redis_disconnected(cur, prev, &redis_reachable, &mut out);
    if let Some(prev) = prev {
        high_latency(cur, prev, t, &mut out);
        hot_key(cur, prev, t, &mut out);
    }
    counter_drift(cur, t, &redis_reachable, &mut out);
    ghost_allowing(cur, &redis_reachable, &mut out);
    stuck_keys(cur, &mut out);
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

fn node_unreachable(
    cur: &Observation,
    history: &[Observation],
    t: &Thresholds,
    out: &mut Vec<Violation>,
) {
    for n in nodes(cur) {
        // Set only when someone (Redis directly, or a node's /v1/nodes) read the registry.
        let registry_readable = n.attr("registry_source").is_some();
        let name = node_name(&n.id, history);
        let age: Option<f64> = n.attr("heartbeat_age_ms").and_then(|a| a.parse().ok());
        let mut evidence = vec![
            kv("node", &n.id),
            kv("node_id", &name),
            kv("reachable", n.attr("reachable").unwrap_or("unknown")),
        ];
        for key in [
            "error_kind",
            "error",
            "mode",
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
        out.push(violation(
            "MON-01",
            Severity::Critical,
            &n.id,
            &n.id,
            summary,
            evidence,
        ));
    }
}

fn counter_delta(
    cur: &Observation,
    prev: &Observation,
    name: &str,
    filter: &[(&str, &str)],
) -> Option<f64> {
    let (c, p) = (cur.sum(name, filter)?, prev.sum(name, filter)?);
    // A counter going backwards means the node restarted; the delta is then unknown.
    (c >= p).then_some(c - p)
}

fn redis_disconnected(
    cur: &Observation,
    prev: Option<&Observation>,
    redis_reachable: &str,
    out: &mut Vec<Violation>,
) {
    let degraded: Vec<&Component> = nodes(cur)
        .filter(|n| n.attr("reachable") == Some("true"))
        .filter(|n| {
            n.attr("redis").is_some_and(|r| r != "ok")
                || matches!(
                    n.attr("mode"),
                    Some("fail-open") | Some("local-only") | Some("fail-closed")
                )
        })
        .collect();
    if redis_reachable == "false" {
        // One ticket for the shared cause, not one per node.
        let r = cur.component("redis");
        let error = r.and_then(|r| r.attr("error")).unwrap_or("unreachable");
        let modes: Vec<String> = degraded
            .iter()
            .map(|n| format!("{}={}", n.id, n.attr("mode").unwrap_or("?")))
            .collect();
        out.push(violation(
            "MON-02",
            Severity::Critical,
            "redis",
            "redis",
            format!(
                "Redis is unreachable ({error}); {} of the nodes report it too",
                degraded.len()
            ),
            vec![
                kv("redis_reachable", "false"),
                kv("error", error),
                kv("nodes_degraded", degraded.len()),
                kv("node_modes", modes.join(",")),
                kv(
                    "mode",
                    degraded
                        .first()
                        .and_then(|n| n.attr("mode"))
                        .unwrap_or("unknown"),
                ),
            ],
        ));
        return;
    }
    for n in degraded {
        let errors = prev.and_then(|p| {
            counter_delta(cur, p, "ratelimiter_redis_errors_total", &[("node", &n.id)])
        });
        let name = n.attr("node_id").unwrap_or(&n.id);
        let mode = n.attr("mode").unwrap_or("unknown");
        let mut evidence = vec![
            kv("node", &n.id),
            kv("node_id", name),
            kv("mode", mode),
            kv("redis_status", n.attr("redis").unwrap_or("unknown")),
            kv("redis_reachable", redis_reachable),
            kv("reachable", "true"),
        ];
        if let Some(e) = errors {
            evidence.push(kv("redis_errors_since_last_tick", e));
        }
        out.push(violation(
            "MON-02",
            Severity::Critical,
            &n.id,
            &n.id,
            format!(
                "node {name} cannot use Redis (mode {mode}, redis: {}) although Redis {}",
                n.attr("redis").unwrap_or("?"),
                if redis_reachable == "true" {
                    "answers the operator"
                } else {
                    "state is unknown"
                }
            ),
            evidence,
        ));
    }
}

fn high_latency(cur: &Observation, prev: &Observation, t: &Thresholds, out: &mut Vec<Violation>) {
    const DECISION: &str = "ratelimiter_decision_duration_seconds";
    const REDIS: &str = "ratelimiter_redis_duration_seconds";
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
        let mut evidence = vec![
            kv("node", &n.id),
            kv("node_id", name),
            kv("p99_ms", format!("{p99:.1}")),
            kv("threshold_ms", t.latency_p99_ms),
            kv("decisions", d.count),
            kv("mean_ms", format!("{:.2}", 1000.0 * d.sum / d.count)),
        ];
        if let Some(r) = redis_p99 {
            evidence.push(kv("redis_p99_ms", format!("{r:.1}")));
        }
        if let Some(s) = redis_slow {
            evidence.push(kv("redis_slow", s));
        }
        out.push(violation(
            "MON-03",
            Severity::Warning,
            &n.id,
            &n.id,
            format!(
                "node {name}: p99 decision latency {p99:.1} ms over {} decisions since the last tick (threshold {} ms)",
                d.count, t.latency_p99_ms
            ),
            evidence,
        ));
    }
}

/// Samples grouped by (key, window) → node → value.
fn by_key_window<'a>(
    obs: &'a Observation,
    name: &'a str,
) -> BTreeMap<(String, String), BTreeMap<String, f64>> {
    let mut m: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for s in obs.samples(name, &[]) {
        if let (Some(k), Some(w), Some(n)) = (label(s, "key"), label(s, "window"), label(s, "node"))
        {
            m.entry((k.to_string(), w.to_string()))
                .or_default()
                .insert(n.to_string(), s.value);
        }
    }
    m
}

fn limit_of(obs: &Observation, key: &str) -> Option<f64> {
    obs.samples("rl_view_limit", &[("key", key)])
        .map(|s| s.value)
        .reduce(f64::max)
}

fn window_ms_of(obs: &Observation, key: &str) -> Option<f64> {
    obs.samples("rl_view_window_ms", &[("key", key)])
        .map(|s| s.value)
        .reduce(f64::max)
}

fn counter_drift(
    cur: &Observation,
    t: &Thresholds,
    redis_reachable: &str,
    out: &mut Vec<Violation>,
) {
    let tolerance = |limit: f64| (t.drift_tolerance * limit).max(2.0);
    // A node counting locally: decisions Redis never saw. Worst key per node.
    let mut worst: BTreeMap<String, (String, String, f64, f64)> = BTreeMap::new();
    for ((key, window), per_node) in by_key_window(cur, "rl_view_local_count") {
        let limit = limit_of(cur, &key).unwrap_or(0.0);
        for (node, local) in per_node {
            if local > tolerance(limit) && worst.get(&node).is_none_or(|w| local > w.2) {
                worst.insert(node, (key.clone(), window.clone(), local, limit));
            }
        }
    }
    for (node, (key, window, local, limit)) in worst {
        let authoritative = cur
            .sum("rl_redis_count", &[("key", &key), ("window", &window)])
            .map_or("unknown".to_string(), |v| v.to_string());
        let name = cur
            .component(&node)
            .and_then(|c| c.attr("node_id"))
            .unwrap_or(&node)
            .to_string();
        out.push(violation(
            "MON-04",
            Severity::Warning,
            &node,
            &node,
            format!("node {name} counted {local} decisions on `{key}` locally that Redis never saw (Redis has {authoritative})"),
            vec![
                kv("node", &node),
                kv("node_id", &name),
                kv("key", &key),
                kv("window", &window),
                kv("local_count", local),
                kv("redis_count", &authoritative),
                kv("limit", limit),
                kv("tolerance", tolerance(limit)),
                kv("redis_reachable", redis_reachable),
                kv("reachable", "true"),
            ],
        ));
    }
    // Nodes reading different counts for the same key and window from the same Redis.
    for ((key, window), per_node) in by_key_window(cur, "rl_view_redis_current") {
        if per_node.len() < 2 {
            continue;
        }
        let limit = limit_of(cur, &key).unwrap_or(0.0);
        let (min, max) = per_node
            .values()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        if max - min <= tolerance(limit) {
            continue;
        }
        let views: Vec<String> = per_node.iter().map(|(n, v)| format!("{n}={v}")).collect();
        out.push(violation(
            "MON-04",
            Severity::Warning,
            "",
            &format!("key:{key}"),
            format!("nodes disagree on `{key}`: counts {min} to {max} for the same window (tolerance {})", tolerance(limit)),
            vec![
                kv("key", &key),
                kv("window", &window),
                kv("views", views.join(",")),
                kv("spread", max - min),
                kv("limit", limit),
                kv("redis_reachable", redis_reachable),
            ],
        ));
    }
}

fn ghost_allowing(cur: &Observation, redis_reachable: &str, out: &mut Vec<Violation>) {
    let mut worst: BTreeMap<String, (String, f64, f64, Vec<String>)> = BTreeMap::new();
    for ((key, window), per_node) in by_key_window(cur, "rl_view_allowed_in_window") {
        let Some(limit) = limit_of(cur, &key) else {
            continue;
        };
        let total: f64 = per_node.values().sum();
        if total <= limit || worst.get(&key).is_some_and(|w| w.1 >= total) {
            continue;
        }
        let parts = per_node.iter().map(|(n, v)| format!("{n}={v}")).collect();
        worst.insert(key, (window, total, limit, parts));
    }
    for (key, (window, total, limit, parts)) in worst {
        // The node that allowed the most is the likeliest culprit (it counted locally).
        let top_node = by_key_window(cur, "rl_view_allowed_in_window")
            .get(&(key.clone(), window.clone()))
            .and_then(|m| {
                m.iter()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(n, _)| n.clone())
            })
            .unwrap_or_default();
        out.push(violation(
            "MON-05",
            Severity::Critical,
            "",
            &key,
            format!(
                "`{key}`: {total} allowed across nodes in one window, limit {limit} ({:.0}% over)",
                100.0 * (total - limit) / limit.max(1.0)
            ),
            vec![
                kv("key", &key),
                kv("window", &window),
                kv("allowed_total", total),
                kv("limit", limit),
                kv("excess", total - limit),
                kv("per_node", parts.join(",")),
                kv("node", &top_node),
                kv("redis_reachable", redis_reachable),
            ],
        ));
    }
}

fn stuck_keys(cur: &Observation, out: &mut Vec<Violation>) {
    let count = cur.sum("rl_redis_keys_without_ttl", &[]).unwrap_or(0.0);
    if count <= 0.0 {
        return;
    }
    let samples: Vec<&str> = cur
        .events
        .iter()
        .filter(|e| e.message == "key without TTL")
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
        .and_then(|n| n.strip_prefix(crate::observe::COUNTER_PREFIX))
        .and_then(|rest| rest.rsplit_once(':').map(|(k, _)| k.to_string()))
        .unwrap_or_default();
    out.push(violation(
        "MON-06",
        Severity::Warning,
        "redis",
        "redis",
        format!(
            "{count} key(s) in the limiter's namespace have no TTL, e.g. {}",
            samples.first().unwrap_or(&"?")
        ),
        vec![
            kv("keys_without_ttl", count),
            kv("examples", samples.join(",")),
            kv("key", key),
            kv(
                "persistent_keys",
                redis.and_then(|r| r.attr("persistent_keys")).unwrap_or("?"),
            ),
            kv(
                "config_keys",
                redis.and_then(|r| r.attr("config_keys")).unwrap_or("?"),
            ),
            kv(
                "keys_scanned",
                cur.sum("rl_redis_keys_scanned", &[]).unwrap_or(0.0),
            ),
        ],
    ));
}

fn hot_key(cur: &Observation, prev: &Observation, t: &Thresholds, out: &mut Vec<Violation>) {
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
    let mut per_key: BTreeMap<String, f64> = BTreeMap::new();
    for s in cur.samples("ratelimiter_key_decisions_total", &[]) {
        let (Some(key), Some(node), Some(result)) =
            (label(s, "key"), label(s, "node"), label(s, "result"))
        else {
            continue;
        };
        if key == "_other" {
            continue;
        }
        let filter = [("key", key), ("node", node), ("result", result)];
        if let Some(before) = prev.sum("ratelimiter_key_decisions_total", &filter)
            && s.value >= before
        {
            *per_key.entry(key.to_string()).or_default() += s.value - before;
        }
    }
    for (key, n) in per_key {
        let share = n / total;
        if share <= t.hot_key_share {
            continue;
        }
        let limit = limit_of(cur, &key);
        let window_ms = window_ms_of(cur, &key);
        out.push(violation(
            "MON-07",
            Severity::Warning,
            "",
            &key,
            format!("hot key `{key}`: {:.0}% of {total} decisions since the last tick (threshold {:.0}%)", 100.0 * share, 100.0 * t.hot_key_share),
            vec![
                kv("key", &key),
                kv("share", format!("{share:.3}")),
                kv("decisions", n),
                kv("total_decisions", total),
                kv("threshold", t.hot_key_share),
                kv("limit", limit.map_or("unknown".into(), |l| l.to_string())),
                kv("window_ms", window_ms.map_or("unknown".into(), |w| w.to_string())),
            ],
        ));
    }
}
