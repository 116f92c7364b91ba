//! One snapshot: every node's health, metrics and counter views, and Redis read directly.
//!
//! The reads (HTTP, Redis, logs) live in the functions at the bottom; what they read is
//! turned into components, samples and events by [`Snapshot`]'s methods, which are pure. The
//! unit tests build their fixture observations through those same methods, so the fixtures
//! have exactly the shape a live tick has.

use crate::evidence::{ErrorKind, REACHABLE};
use operator_sdk::prelude::*;
use operator_sdk::redis::Value;
use ratelimiter_wire::{CounterList, CounterView, Health, HealthStatus, NodeList, NodeRecord};
use ratelimiter_wire::{keys, routes};
use std::collections::{BTreeMap, BTreeSet};

/// The message of the event naming a key without a TTL.
pub const KEY_WITHOUT_TTL: &str = "key without TTL";
/// Default of the `ttl_scan_limit` setting: most keys scanned for a missing TTL per tick.
pub const TTL_SCAN_LIMIT: usize = 1000;
/// A node's decisions per key (its top keys, and `_other`), summed over results.
pub const KEY_DECISIONS: &str = "ratelimiter_key_decisions_total";
/// The node's mode as a one-hot gauge; only the series at 1 is kept.
const MODE_GAUGE: &str = "ratelimiter_mode";
/// Keys and windows Redis is asked about: key → window indexes.
pub type ViewKeys = BTreeMap<String, BTreeSet<u64>>;

/// Builds the observation as it goes.
pub struct Snapshot {
    now: u64,
    components: Vec<Component>,
    metrics: Metrics,
    events: Vec<Event>,
    problems: Vec<Problem>,
    /// Each key's limit and window as each node reported them: key → (node, limit,
    /// window_ms). Written out once per key by [`Snapshot::finish`].
    key_config: BTreeMap<String, Vec<(String, u64, u64)>>,
}

/// A stable component id for a node URL: its host:port (the node's own id can only be
/// learned while it answers, and dedup keys must not change when it stops).
pub fn node_component_id(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

pub fn error_kind(e: &http::Error) -> ErrorKind {
    match e {
        http::Error::Transport {
            error: http::HttpError::Timeout,
            ..
        } => ErrorKind::Timeout,
        http::Error::Transport {
            error: http::HttpError::Connect(_),
            ..
        } => ErrorKind::Connect,
        http::Error::Transport {
            error: http::HttpError::Denied(_),
            ..
        } => ErrorKind::Denied,
        http::Error::Transport { .. } => ErrorKind::Transport,
        http::Error::Status { .. } => ErrorKind::HttpStatus,
        http::Error::Decode { .. } => ErrorKind::BadData,
        http::Error::Encode { .. } => ErrorKind::Encode,
    }
}

impl Snapshot {
    pub fn new(now: u64) -> Snapshot {
        Snapshot {
            now,
            components: Vec::new(),
            metrics: Metrics::with_capacity(512),
            events: Vec::new(),
            problems: Vec::new(),
            key_config: BTreeMap::new(),
        }
    }

    pub fn finish(mut self) -> Observation {
        // A key's limit and window once, as the nodes agree on them; per node only when they
        // do not (a node with stale config). Per node always, they were a fifth of a tick's
        // samples for no extra information.
        for (key, per_node) in std::mem::take(&mut self.key_config) {
            let (_, limit, window_ms) = per_node[0];
            if per_node
                .iter()
                .all(|(_, l, w)| (*l, *w) == (limit, window_ms))
            {
                self.metric("rl_view_limit", &[("key", &key)], limit as f64);
                self.metric("rl_view_window_ms", &[("key", &key)], window_ms as f64);
                continue;
            }
            for (node, limit, window_ms) in &per_node {
                let labels = [("key", key.as_str()), ("node", node.as_str())];
                self.metric("rl_view_limit", &labels, *limit as f64);
                self.metric("rl_view_window_ms", &labels, *window_ms as f64);
            }
        }
        Observation {
            timestamp_ms: self.now,
            components: self.components,
            metrics: self.metrics,
            events: self.events,
            problems: self.problems,
        }
    }

    fn metric(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.metrics.push(name, labels, value, self.now);
    }

    pub fn problem(&mut self, source: &str, message: String) {
        self.problems.push(Problem {
            source: source.into(),
            message,
        });
    }

    pub fn event(
        &mut self,
        component: &str,
        severity: Severity,
        message: String,
        attributes: Vec<Kv>,
    ) {
        self.events.push(Event {
            timestamp_ms: self.now,
            component: component.into(),
            severity,
            message,
            attributes,
        });
    }

    /// Whether the node with this component id answered `/healthz` this tick.
    fn answered(&self, id: &str) -> bool {
        self.components
            .iter()
            .any(|c| c.id == id && c.attr(REACHABLE) == Some("true"))
    }

    /// The node at `url` from its `/healthz` answer (status and body) or the error that
    /// stood in for one. Returns whether the node answered at all.
    pub fn node_health(&mut self, url: &str, health: Result<(u16, Health), http::Error>) -> bool {
        let id = node_component_id(url);
        let mut attrs = vec![kv("configured", "true")];
        let state = match health {
            Ok((status, h)) => {
                attrs.extend([
                    kv(REACHABLE, "true"),
                    kv("node_id", &h.node),
                    kv("status", h.status.as_str()),
                    kv("redis", &h.redis),
                    kv(crate::evidence::MODE, h.mode.as_str()),
                    kv("policy", h.policy.as_str()),
                    kv("http_status", status),
                ]);
                match (status, h.status) {
                    (200, HealthStatus::Ok) => ComponentState::Up,
                    _ => ComponentState::Degraded,
                }
            }
            Err(e) => {
                let kind = error_kind(&e);
                // An answer we cannot read is still an answer: the node is up but misbehaving.
                let reachable = kind.answered();
                attrs.extend([
                    kv(REACHABLE, reachable),
                    kv(crate::evidence::ERROR_KIND, kind.as_str()),
                    kv("error", e.to_string()),
                ]);
                if reachable {
                    self.problem(&id, format!("malformed /healthz: {e}"));
                    ComponentState::Unknown
                } else {
                    ComponentState::Down
                }
            }
        };
        self.components.push(Component {
            id,
            kind: "node".into(),
            address: url.into(),
            state,
            attributes: attrs,
        });
        state != ComponentState::Down
    }

    /// A node's `/metrics` text: its `ratelimiter_*` samples, labelled with the node.
    ///
    /// Two series are cut to what they say, because every sample is paid for at each step
    /// of every tick (lifting, holding, checking, storing) and these were a quarter of the
    /// observation:
    /// - [`KEY_DECISIONS`] is summed over its `result` label: the hot-key check reads a
    ///   key's decisions whatever their result, and the per-result split doubled the series.
    /// - [`MODE_GAUGE`], one-hot, keeps only the series of the mode the node is
    ///   in; the zeros say nothing that one does not.
    pub fn node_metrics(&mut self, id: &str, text: &str) {
        let scrape = match prometheus::parse_borrowed(text) {
            Ok(scrape) => scrape,
            Err(e) => return self.problem(id, format!("malformed /metrics: {e}")),
        };
        // Each key's summed sample, by its index in `self.metrics`.
        let mut key_total: BTreeMap<&str, usize> = BTreeMap::new();
        let node = Some(("node", id));
        for s in scrape.iter().filter(|s| s.name.starts_with("ratelimiter_")) {
            if s.name == MODE_GAUGE && s.value == 0.0 {
                continue;
            }
            if s.name == KEY_DECISIONS {
                let Some(key) = s.label("key") else {
                    continue;
                };
                match key_total.get(key) {
                    Some(&i) => {
                        if let Some(v) = self.metrics.value_mut(i) {
                            *v += s.value;
                        }
                    }
                    None => {
                        let i = s.push_to(&mut self.metrics, self.now, node, &["result"]);
                        key_total.insert(key, i);
                    }
                }
                continue;
            }
            // Where it sorts, so the labels stay in the host's (key) order.
            s.push_to(&mut self.metrics, self.now, node, &[]);
        }
    }

    /// A node's `/v1/counters`: its views, and the windows Redis should be asked about.
    pub fn node_counters(&mut self, id: &str, list: &CounterList, view_keys: &mut ViewKeys) {
        for v in &list.keys {
            self.record_view(id, v);
            let windows = view_keys.entry(v.key.clone()).or_default();
            windows.insert(v.window_index);
            windows.insert(v.window_of_tallies);
            windows.insert(v.window_of_tallies.saturating_sub(1));
        }
    }

    fn record_view(&mut self, node: &str, v: &CounterView) {
        let key = v.key.as_str();
        // The current window is still filling; the previous one is complete, which is what
        // makes a sum across nodes exact.
        // Only what the invariants read: every sample costs at each step of every tick
        // (lifting, storing, checking), so the denied tallies, which no check reads, stay out.
        for (window, allowed) in [
            (v.window_of_tallies, v.allowed_in_window),
            (
                v.window_of_tallies.saturating_sub(1),
                v.allowed_in_previous_window,
            ),
        ] {
            let window = window.to_string();
            // Labels in key order, as the host keeps them: holding them needs no sort.
            let labels = [("key", key), ("node", node), ("window", window.as_str())];
            self.metric("rl_view_allowed_in_window", &labels, allowed as f64);
        }
        self.key_config.entry(key.to_string()).or_default().push((
            node.to_string(),
            v.limit,
            v.window_ms,
        ));
        if let Some(r) = &v.redis {
            self.metric(
                "rl_view_redis_current",
                &[
                    ("key", key),
                    ("node", node),
                    ("window", &v.window_index.to_string()),
                ],
                r.current as f64,
            );
        }
        // Both local windows: a tick that always lands early in a window (the tick interval
        // equals the window) would otherwise only ever see a nearly empty current one.
        // A node that uses Redis counts nothing locally; an absent local count is zero, and
        // leaving the zeros out keeps a healthy tick's observation small.
        for (window, count) in [
            (v.local.window_index, v.local.current),
            (v.local.window_index.saturating_sub(1), v.local.previous),
        ] {
            if count == 0 {
                continue;
            }
            self.metric(
                "rl_view_local_count",
                &[
                    ("key", key),
                    ("node", node),
                    ("window", &window.to_string()),
                ],
                count as f64,
            );
        }
    }

    /// Redis could not be read at all.
    pub fn redis_failed(&mut self, url: &str, e: &redis::Error) {
        let unreachable = e.is_unreachable();
        self.components.push(Component {
            id: "redis".into(),
            kind: "redis".into(),
            address: url.into(),
            state: if unreachable {
                ComponentState::Down
            } else {
                ComponentState::Degraded
            },
            attributes: vec![kv(REACHABLE, !unreachable), kv("error", e.to_string())],
        });
        if !unreachable {
            self.problem("redis", e.to_string());
        }
    }

    /// Redis from its `INFO` text and the number of config keys that exist. Returns how
    /// many keys of db 0 have no TTL.
    pub fn redis_info(&mut self, url: &str, info: &str, config_keys: i64) -> i64 {
        const FIELDS: [&str; 4] = [
            "redis_version",
            "connected_clients",
            "instantaneous_ops_per_sec",
            "used_memory",
        ];
        // One pass over the ~150 fields, keeping the few read here, without copying the rest.
        let mut wanted: [Option<&str>; 4] = [None; 4];
        let mut dbs = Vec::new();
        for (field, value) in redis::info_fields(info) {
            if let Some(i) = FIELDS.iter().position(|f| *f == field) {
                wanted[i] = Some(value);
            } else if let Some(db) = field.strip_prefix("db") {
                dbs.push((db, value));
            }
        }
        let mut attrs = vec![kv(REACHABLE, "true")];
        for (field, value) in FIELDS.iter().zip(wanted) {
            if let Some(v) = value {
                attrs.push(kv(*field, v));
                if let Ok(n) = v.parse::<f64>() {
                    self.metric(&format!("redis_{field}"), &[], n);
                }
            }
        }
        // In the order of the map this used to be, so observations keep their shape.
        dbs.sort_by_key(|(db, _)| *db);
        let mut persistent = 0;
        for (db, value) in dbs {
            let ks = redis::parse_keyspace(value);
            let (keys, expires) = (
                ks.get("keys").copied().unwrap_or(0),
                ks.get("expires").copied().unwrap_or(0),
            );
            self.metric("redis_db_keys", &[("db", db)], keys as f64);
            self.metric("redis_db_expires", &[("db", db)], expires as f64);
            if db == "0" {
                persistent = keys - expires;
            }
        }
        attrs.push(kv("persistent_keys", persistent));
        attrs.push(kv("config_keys", config_keys));
        self.components.push(Component {
            id: "redis".into(),
            kind: "redis".into(),
            address: url.into(),
            state: ComponentState::Up,
            attributes: attrs,
        });
        persistent
    }

    /// Attaches heartbeats (entry, age in ms on the Redis clock) to the configured nodes
    /// they belong to (by id or address), adds registered nodes nobody configured, and
    /// marks configured nodes missing from it. `source` says who read the registry:
    /// `redis`, or the node that served `/v1/nodes`.
    pub fn registry(&mut self, entries: Vec<(NodeRecord, u64)>, source: &str) {
        for (entry, age) in entries {
            self.metric(
                "rl_heartbeat_age_ms",
                &[("node_id", &entry.id), ("addr", &entry.addr)],
                age as f64,
            );
            let owner = self.components.iter_mut().find(|c| {
                c.kind == "node"
                    && (c.attr("node_id") == Some(entry.id.as_str()) || c.id == entry.addr)
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
                None => self.components.push(Component {
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
                        kv(crate::evidence::MODE, entry.mode.as_str()),
                        kv("heartbeat_age_ms", age),
                        kv("registry_source", source),
                    ],
                }),
            }
        }
        for c in self
            .components
            .iter_mut()
            .filter(|c| c.kind == "node" && c.attr("registered").is_none())
        {
            c.attributes.push(kv("registered", "false"));
            c.attributes.push(kv("registry_source", source));
        }
    }

    /// Redis's own count for a key in a window.
    pub fn redis_count(&mut self, key: &str, window: u64, count: i64) {
        self.metric(
            "rl_redis_count",
            &[("key", key), ("window", &window.to_string())],
            count as f64,
        );
    }

    /// The TTL scan's result: how many keys it looked at, how many have no TTL, and the
    /// first few of those by name, with their values.
    pub fn ttl_scan(&mut self, scanned: usize, without_ttl: usize, named: Vec<(String, String)>) {
        self.metric("rl_redis_keys_scanned", &[], scanned as f64);
        self.metric("rl_redis_keys_without_ttl", &[], without_ttl as f64);
        for (name, value) in named {
            self.event(
                "redis",
                Severity::Warning,
                KEY_WITHOUT_TTL.into(),
                vec![kv("key", name), kv("value", value)],
            );
        }
    }

    /// INFO keyspace showed nothing beyond the config keys without a TTL: no scan needed.
    pub fn no_keys_without_ttl(&mut self) {
        self.metric("rl_redis_keys_without_ttl", &[], 0.0);
    }
}

pub fn observe() -> Result<Observation, ObserveError> {
    let nodes = config::list("nodes");
    if nodes.is_empty() {
        return Err(ObserveError::Config(
            "missing setting `nodes` (e.g. --set nodes=http://127.0.0.1:7001,http://127.0.0.1:7002)".into(),
        ));
    }
    let mut snap = Snapshot::new(now_ms());
    let mut view_keys = ViewKeys::new();
    // Every node's three reads go out at once: the tick waits for the slowest node, not
    // for the sum of them. A node that is down fails all three quickly, as its /healthz
    // alone did; only its /healthz answer is used then.
    let requests = nodes
        .iter()
        .flat_map(|url| {
            [routes::HEALTHZ, routes::METRICS, routes::COUNTERS]
                .map(|route| http::Request::new("GET", &http::join(url, route)))
        })
        .collect();
    let mut answers = http::send_all(requests).into_iter();
    for url in &nodes {
        let mut next = || {
            answers.next().unwrap_or_else(|| {
                Err(http::Error::Transport {
                    url: url.clone(),
                    error: http::HttpError::Other("no answer".into()),
                })
            })
        };
        let reads = NodeReads {
            health: next(),
            metrics: next(),
            counters: next(),
        };
        observe_node(&mut snap, url, reads, &mut view_keys);
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
    let obs = snap.finish();
    for p in &obs.problems {
        log::warn(format!("{}: {}", p.source, p.message));
    }
    Ok(obs)
}

/// One node's answers to its three reads, in the order they were sent.
struct NodeReads {
    health: Result<http::Response, http::Error>,
    metrics: Result<http::Response, http::Error>,
    counters: Result<http::Response, http::Error>,
}

fn observe_node(snap: &mut Snapshot, url: &str, reads: NodeReads, view_keys: &mut ViewKeys) {
    let id = node_component_id(url);
    // /healthz answers 503 with a JSON body when the node cannot use Redis.
    let health_url = http::join(url, routes::HEALTHZ);
    let health = reads.health.and_then(|r| {
        let status = r.status;
        http::decode_json::<Health>(&health_url, &r.body).map(|h| (status, h))
    });
    if !snap.node_health(url, health) {
        return;
    }
    let metrics_url = http::join(url, routes::METRICS);
    match reads.metrics.and_then(|r| http::text(&metrics_url, r)) {
        Ok(text) => snap.node_metrics(&id, &text),
        Err(e) => snap.problem(&id, format!("cannot read /metrics: {e}")),
    }
    let counters_url = http::join(url, routes::COUNTERS);
    match reads
        .counters
        .and_then(|r| http::json::<CounterList>(&counters_url, r))
    {
        Ok(list) => snap.node_counters(&id, &list, view_keys),
        // 503 while the node cannot reach Redis is expected, not a data problem.
        Err(http::Error::Status { status: 503, .. }) => {}
        Err(e) => snap.problem(&id, format!("cannot read /v1/counters: {e}")),
    }
}

/// Reads Redis directly. Returns false when Redis could not be read at all.
fn observe_redis(snap: &mut Snapshot, url: &str, view_keys: &ViewKeys) -> bool {
    let info = match redis::command(url, &["INFO"]) {
        Ok(info) => info,
        Err(e) => {
            snap.redis_failed(url, &e);
            return false;
        }
    };
    let info = info.as_str().unwrap_or_default();
    let [limits, blocked] = keys::CONFIG_KEYS;
    let config_keys = redis::command(url, &["EXISTS", limits, blocked])
        .ok()
        .and_then(|v| v.as_int())
        .unwrap_or(0);
    let persistent = snap.redis_info(url, info, config_keys);
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
        snap.no_keys_without_ttl();
    }
    true
}

fn observe_registry(snap: &mut Snapshot, url: &str, redis_now: u64) {
    let names = match redis::scan(url, &format!("{}*", keys::NODE_PREFIX), 1000) {
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
            match serde_json::from_str::<NodeRecord>(&text) {
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
    snap.registry(entries, "redis");
}

/// The registry as the first answering node reads it (`GET /v1/nodes`).
fn observe_registry_via_nodes(snap: &mut Snapshot, nodes: &[String]) {
    for url in nodes {
        let id = node_component_id(url);
        if !snap.answered(&id) {
            continue;
        }
        match http::get_json::<NodeList>(&http::join(url, routes::NODES)) {
            Ok(list) => {
                // The age is measured by the node on the Redis clock.
                let entries = list.nodes.iter().map(|n| (n.record(), n.age_ms)).collect();
                return snap.registry(entries, &id);
            }
            // 503: this node cannot reach Redis either; another one may.
            Err(http::Error::Status { status: 503, .. }) => {}
            Err(e) => snap.problem(&id, format!("cannot read /v1/nodes: {e}")),
        }
    }
}

/// Redis's own count for every key and window the nodes reported on.
fn observe_counts(snap: &mut Snapshot, url: &str, view_keys: &ViewKeys) {
    let wanted: Vec<(&str, u64, String)> = view_keys
        .iter()
        .flat_map(|(k, ws)| {
            ws.iter()
                .map(move |w| (k.as_str(), *w, keys::counter(k, *w)))
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
                snap.redis_count(key, *window, v.as_int().unwrap_or(0));
            }
        }
        Ok(_) => {}
        Err(e) => snap.problem("redis", format!("reading counters: {e}")),
    }
}

fn scan_ttls(snap: &mut Snapshot, url: &str) {
    let limit = config::parse_or("ttl_scan_limit", TTL_SCAN_LIMIT).unwrap_or(TTL_SCAN_LIMIT);
    let mut scanned = 0;
    let mut stuck = Vec::new();
    for prefix in [keys::COUNTER_PREFIX, keys::NODE_PREFIX] {
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
    // Every one is counted; the first five are named, with their values.
    let named: Vec<(String, String)> = stuck
        .iter()
        .take(5)
        .map(|name| {
            let value = redis::command(url, &["GET", name])
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default();
            (name.clone(), value)
        })
        .collect();
    snap.ttl_scan(scanned, stuck.len(), named);
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
