//! One snapshot: every node's health, metrics and counter views, and Redis read directly.

use operator_sdk::prelude::*;
use operator_sdk::redis::Value;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Counter keys and registry entries; every key under these prefixes must carry a TTL.
pub const COUNTER_PREFIX: &str = "rl:w:";
pub const NODE_PREFIX: &str = "rl:node:";
/// Configuration keys, persistent by design.
const CONFIG_KEYS: [&str; 2] = ["rl:limits", "rl:blocked"];

#[derive(Deserialize)]
struct Health {
    node: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    redis: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    policy: String,
}

#[derive(Deserialize)]
struct TopKeys {
    #[serde(default)]
    keys: Vec<CounterView>,
}

#[derive(Deserialize)]
struct RedisView {
    current: f64,
}

#[derive(Deserialize)]
struct LocalView {
    window_index: i64,
    current: f64,
    #[serde(default)]
    previous: f64,
}

#[derive(Deserialize)]
struct CounterView {
    key: String,
    limit: f64,
    window_ms: f64,
    window_index: i64,
    redis: Option<RedisView>,
    local: LocalView,
    allowed_in_window: f64,
    denied_in_window: f64,
    /// Tallies of the window before `window_of_tallies`, complete by now.
    #[serde(default)]
    allowed_in_previous_window: f64,
    #[serde(default)]
    denied_in_previous_window: f64,
    window_of_tallies: i64,
}

#[derive(Deserialize)]
struct RegistryEntry {
    id: String,
    #[serde(default)]
    addr: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    last_heartbeat_ms: u64,
}

/// Builds the observation as it goes.
struct Snapshot {
    now: u64,
    components: Vec<Component>,
    metrics: Vec<MetricSample>,
    events: Vec<Event>,
    problems: Vec<Problem>,
}

impl Snapshot {
    fn metric(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.metrics.push(MetricSample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| kv(*k, v)).collect(),
            value,
            timestamp_ms: self.now,
        });
    }

    fn problem(&mut self, source: &str, message: String) {
        log::warn(format!("{source}: {message}"));
        self.problems.push(Problem {
            source: source.into(),
            message,
        });
    }

    fn event(&mut self, component: &str, severity: Severity, message: String, attributes: Vec<Kv>) {
        self.events.push(Event {
            timestamp_ms: self.now,
            component: component.into(),
            severity,
            message,
            attributes,
        });
    }
}

/// A stable component id for a node URL: its host:port (the node's own id can only be
/// learned while it answers, and dedup keys must not change when it stops).
pub fn node_component_id(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

fn error_kind(e: &http::Error) -> &'static str {
    match e {
        http::Error::Transport {
            error: http::HttpError::Timeout,
            ..
        } => "timeout",
        http::Error::Transport {
            error: http::HttpError::Connect(_),
            ..
        } => "connect",
        http::Error::Transport {
            error: http::HttpError::Denied(_),
            ..
        } => "denied",
        http::Error::Transport { .. } => "transport",
        http::Error::Status { .. } => "http-status",
        http::Error::Decode { .. } => "bad-data",
        http::Error::Encode { .. } => "encode",
    }
}

pub fn observe() -> Result<Observation, ObserveError> {
    let nodes = config::list("nodes");
    if nodes.is_empty() {
        return Err(ObserveError::Config(
            "missing setting `nodes` (e.g. --set nodes=http://127.0.0.1:7001,http://127.0.0.1:7002)".into(),
        ));
    }
    let mut snap = Snapshot {
        now: now_ms(),
        components: Vec::new(),
        metrics: Vec::new(),
        events: Vec::new(),
        problems: Vec::new(),
    };
    let mut view_keys: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for url in &nodes {
        observe_node(&mut snap, url, &mut view_keys);
    }
    let redis_read = match config::get("redis") {
        Some(redis_url) => observe_redis(&mut snap, &redis_url, &view_keys),
        None => {
            snap.event(
                "",
                Severity::Info,
                "no `redis` setting: authoritative counts and TTLs are not checked".into(),
                vec![],
            );
            false
        }
    };
    if !redis_read {
        // The nodes may still reach Redis when the operator cannot: take the registry
        // from their management API instead.
        observe_registry_via_nodes(&mut snap, &nodes);
    }
    if let Some(prom) = config::get("prometheus") {
        observe_prometheus(&mut snap, &prom);
    }
    observe_logs(&mut snap);
    Ok(Observation {
        timestamp_ms: snap.now,
        components: snap.components,
        metrics: snap.metrics,
        events: snap.events,
        problems: snap.problems,
    })
}

fn observe_node(snap: &mut Snapshot, url: &str, view_keys: &mut BTreeMap<String, BTreeSet<i64>>) {
    let id = node_component_id(url);
    let mut attrs = vec![kv("configured", "true")];
    let health_url = http::join(url, "/healthz");
    // /healthz answers 503 with a JSON body when the node cannot use Redis.
    let state = match http::get_json_any_status::<Health>(&health_url) {
        Ok((status, h)) => {
            attrs.extend([
                kv("reachable", "true"),
                kv("node_id", &h.node),
                kv("status", &h.status),
                kv("redis", &h.redis),
                kv("mode", &h.mode),
                kv("policy", &h.policy),
                kv("http_status", status),
            ]);
            match (status, h.status.as_str()) {
                (200, "ok") => ComponentState::Up,
                _ => ComponentState::Degraded,
            }
        }
        Err(e) => {
            let kind = error_kind(&e);
            // An answer we cannot read is still an answer: the node is up but misbehaving.
            let reachable = matches!(kind, "http-status" | "bad-data");
            attrs.extend([
                kv("reachable", reachable),
                kv("error_kind", kind),
                kv("error", e.to_string()),
            ]);
            if reachable {
                snap.problem(&id, format!("malformed /healthz: {e}"));
                ComponentState::Unknown
            } else {
                ComponentState::Down
            }
        }
    };
    let answering = state != ComponentState::Down;
    snap.components.push(Component {
        id: id.clone(),
        kind: "node".into(),
        address: url.into(),
        state,
        attributes: attrs,
    });
    if !answering {
        return;
    }
    match http::get_text(&http::join(url, "/metrics")) {
        Ok(text) => match prometheus::parse(&text) {
            Ok(samples) => {
                for s in samples
                    .into_iter()
                    .filter(|s| s.name.starts_with("ratelimiter_"))
                {
                    let mut m = s.into_metric(snap.now);
                    m.labels.push(kv("node", &id));
                    snap.metrics.push(m);
                }
            }
            Err(e) => snap.problem(&id, format!("malformed /metrics: {e}")),
        },
        Err(e) => snap.problem(&id, format!("cannot read /metrics: {e}")),
    }
    match http::get_json::<TopKeys>(&http::join(url, "/v1/counters")) {
        Ok(top) => {
            for v in top.keys {
                record_view(snap, &id, &v);
                let windows = view_keys.entry(v.key.clone()).or_default();
                windows.insert(v.window_index);
                windows.insert(v.window_of_tallies);
                windows.insert(v.window_of_tallies - 1);
            }
        }
        // 503 while the node cannot reach Redis is expected, not a data problem.
        Err(http::Error::Status { status: 503, .. }) => {}
        Err(e) => snap.problem(&id, format!("cannot read /v1/counters: {e}")),
    }
}

fn record_view(snap: &mut Snapshot, node: &str, v: &CounterView) {
    let key = v.key.as_str();
    // The current window is still filling; the previous one is complete, which is what
    // makes a sum across nodes exact.
    for (window, allowed, denied) in [
        (v.window_of_tallies, v.allowed_in_window, v.denied_in_window),
        (
            v.window_of_tallies - 1,
            v.allowed_in_previous_window,
            v.denied_in_previous_window,
        ),
    ] {
        let window = window.to_string();
        let labels = [("node", node), ("key", key), ("window", window.as_str())];
        snap.metric("rl_view_allowed_in_window", &labels, allowed);
        snap.metric("rl_view_denied_in_window", &labels, denied);
    }
    snap.metric("rl_view_limit", &[("node", node), ("key", key)], v.limit);
    snap.metric(
        "rl_view_window_ms",
        &[("node", node), ("key", key)],
        v.window_ms,
    );
    if let Some(r) = &v.redis {
        snap.metric(
            "rl_view_redis_current",
            &[
                ("node", node),
                ("key", key),
                ("window", &v.window_index.to_string()),
            ],
            r.current,
        );
    }
    // Both local windows: a tick that always lands early in a window (the tick interval
    // equals the window) would otherwise only ever see a nearly empty current one.
    for (window, count) in [
        (v.local.window_index, v.local.current),
        (v.local.window_index - 1, v.local.previous),
    ] {
        snap.metric(
            "rl_view_local_count",
            &[
                ("node", node),
                ("key", key),
                ("window", &window.to_string()),
            ],
            count,
        );
    }
}

/// Reads Redis directly. Returns false when Redis could not be read at all.
fn observe_redis(
    snap: &mut Snapshot,
    url: &str,
    view_keys: &BTreeMap<String, BTreeSet<i64>>,
) -> bool {
    let mut attrs = Vec::new();
    let info = match redis::info(url, None) {
        Ok(info) => info,
        Err(e) => {
            let unreachable = e.is_unreachable();
            snap.components.push(Component {
                id: "redis".into(),
                kind: "redis".into(),
                address: url.into(),
                state: if unreachable {
                    ComponentState::Down
                } else {
                    ComponentState::Degraded
                },
                attributes: vec![kv("reachable", !unreachable), kv("error", e.to_string())],
            });
            if !unreachable {
                snap.problem("redis", e.to_string());
            }
            return false;
        }
    };
    attrs.push(kv("reachable", "true"));
    for field in [
        "redis_version",
        "connected_clients",
        "instantaneous_ops_per_sec",
        "used_memory",
    ] {
        if let Some(v) = info.get(field) {
            attrs.push(kv(field, v));
            if let Ok(n) = v.parse::<f64>() {
                snap.metric(&format!("redis_{field}"), &[], n);
            }
        }
    }
    let mut persistent = 0;
    for (field, value) in &info {
        if let Some(db) = field.strip_prefix("db") {
            let ks = redis::parse_keyspace(value);
            let (keys, expires) = (
                ks.get("keys").copied().unwrap_or(0),
                ks.get("expires").copied().unwrap_or(0),
            );
            snap.metric("redis_db_keys", &[("db", db)], keys as f64);
            snap.metric("redis_db_expires", &[("db", db)], expires as f64);
            if db == "0" {
                persistent = keys - expires;
            }
        }
    }
    let config_keys = redis::command(url, &["EXISTS", CONFIG_KEYS[0], CONFIG_KEYS[1]])
        .ok()
        .and_then(|v| v.as_int())
        .unwrap_or(0);
    attrs.push(kv("persistent_keys", persistent));
    attrs.push(kv("config_keys", config_keys));
    snap.components.push(Component {
        id: "redis".into(),
        kind: "redis".into(),
        address: url.into(),
        state: ComponentState::Up,
        attributes: attrs,
    });

    let redis_now = redis::command(url, &["TIME"])
        .ok()
        .and_then(|v| {
            let parts = v.as_array()?.to_vec();
            Some(parts.first()?.as_int()? as u64 * 1000 + parts.get(1)?.as_int()? as u64 / 1000)
        })
        .unwrap_or(snap.now);
    observe_registry(snap, url, redis_now);
    observe_counts(snap, url, view_keys);
    // INFO keyspace says whether anything beyond the config keys lacks a TTL; only then is
    // a per-key scan worth its cost.
    if persistent > config_keys {
        scan_ttls(snap, url);
    } else {
        snap.metric("rl_redis_keys_without_ttl", &[], 0.0);
    }
    true
}

fn observe_registry(snap: &mut Snapshot, url: &str, redis_now: u64) {
    let names = match redis::scan(url, &format!("{NODE_PREFIX}*"), 1000) {
        Ok(n) => n,
        Err(e) => return snap.problem("redis", format!("scanning the node registry: {e}")),
    };
    let mut entries = Vec::new();
    if !names.is_empty() {
        let mut args = vec!["MGET"];
        args.extend(names.iter().map(String::as_str));
        let values = match redis::command(url, &args) {
            Ok(Value::Array(v)) => v,
            Ok(_) => vec![],
            Err(e) => return snap.problem("redis", format!("reading the node registry: {e}")),
        };
        for (name, value) in names.iter().zip(values) {
            let Some(text) = value.as_string() else {
                continue;
            };
            match serde_json::from_str::<RegistryEntry>(&text) {
                Ok(e) => {
                    let age = redis_now.saturating_sub(e.last_heartbeat_ms);
                    entries.push((e, age));
                }
                Err(e) => snap.problem(
                    "redis",
                    format!("registry entry {name} is not valid JSON: {e}"),
                ),
            }
        }
    }
    attach_registry(snap, entries, "redis");
}

#[derive(Deserialize)]
struct NodeList {
    nodes: Vec<RegistryEntryAged>,
}

#[derive(Deserialize)]
struct RegistryEntryAged {
    #[serde(flatten)]
    entry: RegistryEntry,
    /// Measured by the node on the Redis clock.
    age_ms: u64,
}

/// The registry as the first answering node reads it (`GET /v1/nodes`).
fn observe_registry_via_nodes(snap: &mut Snapshot, nodes: &[String]) {
    for url in nodes {
        let id = node_component_id(url);
        let answering = snap
            .components
            .iter()
            .any(|c| c.id == id && c.attr("reachable") == Some("true"));
        if !answering {
            continue;
        }
        match http::get_json::<NodeList>(&http::join(url, "/v1/nodes")) {
            Ok(list) => {
                let entries = list
                    .nodes
                    .into_iter()
                    .map(|n| (n.entry, n.age_ms))
                    .collect();
                return attach_registry(snap, entries, &id);
            }
            // 503: this node cannot reach Redis either; another one may.
            Err(http::Error::Status { status: 503, .. }) => {}
            Err(e) => snap.problem(&id, format!("cannot read /v1/nodes: {e}")),
        }
    }
}

/// Attaches heartbeats to the configured nodes they belong to (by id or address), adds
/// registered nodes nobody configured, and marks configured nodes missing from it.
/// `source` says who read the registry: `redis`, or the node that served `/v1/nodes`.
fn attach_registry(snap: &mut Snapshot, entries: Vec<(RegistryEntry, u64)>, source: &str) {
    for (entry, age) in entries {
        snap.metric(
            "rl_heartbeat_age_ms",
            &[("node_id", &entry.id), ("addr", &entry.addr)],
            age as f64,
        );
        let owner = snap.components.iter_mut().find(|c| {
            c.kind == "node" && (c.attr("node_id") == Some(entry.id.as_str()) || c.id == entry.addr)
        });
        match owner {
            Some(c) => {
                c.attributes.push(kv("registered", "true"));
                c.attributes.push(kv("heartbeat_age_ms", age));
                c.attributes.push(kv("registry_source", source));
                if c.attr("node_id").is_none() {
                    c.attributes.push(kv("node_id", &entry.id));
                }
            }
            None => snap.components.push(Component {
                id: if entry.addr.is_empty() {
                    entry.id.clone()
                } else {
                    entry.addr.clone()
                },
                kind: "node".into(),
                address: entry.addr.clone(),
                state: ComponentState::Unknown,
                attributes: vec![
                    kv("configured", "false"),
                    kv("registered", "true"),
                    kv("node_id", &entry.id),
                    kv("mode", &entry.mode),
                    kv("heartbeat_age_ms", age),
                    kv("registry_source", source),
                ],
            }),
        }
    }
    for c in snap
        .components
        .iter_mut()
        .filter(|c| c.kind == "node" && c.attr("registered").is_none())
    {
        c.attributes.push(kv("registered", "false"));
        c.attributes.push(kv("registry_source", source));
    }
}

/// Redis's own count for every key and window the nodes reported on.
fn observe_counts(snap: &mut Snapshot, url: &str, view_keys: &BTreeMap<String, BTreeSet<i64>>) {
    let wanted: Vec<(String, i64, String)> = view_keys
        .iter()
        .flat_map(|(k, ws)| {
            ws.iter()
                .map(move |w| (k.clone(), *w, format!("{COUNTER_PREFIX}{k}:{w}")))
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    let mut args = vec!["MGET"];
    args.extend(wanted.iter().map(|(_, _, name)| name.as_str()));
    match redis::command(url, &args) {
        Ok(Value::Array(values)) => {
            for ((key, window, _), v) in wanted.iter().zip(values) {
                let count = v.as_int().unwrap_or(0) as f64;
                snap.metric(
                    "rl_redis_count",
                    &[("key", key), ("window", &window.to_string())],
                    count,
                );
            }
        }
        Ok(_) => {}
        Err(e) => snap.problem("redis", format!("reading counters: {e}")),
    }
}

fn scan_ttls(snap: &mut Snapshot, url: &str) {
    let limit = config::parse_or("ttl_scan_limit", 1000usize).unwrap_or(1000);
    let mut scanned = 0;
    let mut stuck = Vec::new();
    for prefix in [COUNTER_PREFIX, NODE_PREFIX] {
        let names = match redis::scan(url, &format!("{prefix}*"), limit) {
            Ok(n) => n,
            Err(e) => return snap.problem("redis", format!("scanning {prefix}*: {e}")),
        };
        for name in names {
            scanned += 1;
            if let Ok(Value::Int(-1)) = redis::command(url, &["PTTL", &name]) {
                stuck.push(name);
            }
        }
    }
    snap.metric("rl_redis_keys_scanned", &[], scanned as f64);
    snap.metric("rl_redis_keys_without_ttl", &[], stuck.len() as f64);
    for name in stuck.iter().take(5) {
        let value = redis::command(url, &["GET", name])
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        snap.event(
            "redis",
            Severity::Warning,
            "key without TTL".into(),
            vec![kv("key", name), kv("value", value)],
        );
    }
}

/// Warning and error lines from the logs of nodes the user gave a log source for, as
/// `log.<node-id>` or `log.<host:port>`. Runs after the registry, which names down nodes.
fn observe_logs(snap: &mut Snapshot) {
    let nodes: Vec<(String, Option<String>)> = snap
        .components
        .iter()
        .filter(|c| c.kind == "node")
        .map(|c| (c.id.clone(), c.attr("node_id").map(String::from)))
        .collect();
    for (id, node_id) in nodes {
        let Some(source) = node_id
            .into_iter()
            .chain([id.clone()])
            .find(|k| logs::configured(k))
        else {
            continue;
        };
        match logs::events(&source, 200, 10, snap.now) {
            Ok(events) => snap.events.extend(events.into_iter().map(|mut e| {
                e.component = id.clone();
                e
            })),
            Err(e) => snap.problem(&id, format!("reading the log of {source}: {e}")),
        }
    }
}

fn observe_prometheus(snap: &mut Snapshot, base: &str) {
    let expr = "sum by (result) (rate(ratelimiter_decisions_total[1m]))";
    match prometheus::query(base, expr) {
        Ok(series) => {
            for s in series {
                let result = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "result")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                snap.metric("prom_decision_rate", &[("result", &result)], s.value);
            }
        }
        Err(e) => snap.problem("prometheus", e.to_string()),
    }
}
