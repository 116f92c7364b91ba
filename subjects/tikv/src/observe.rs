//! One snapshot of the cluster (TIKV-01/02/04): PD's view (stores, members, health, cluster
//! status and config, region-check counts, hotspots), Prometheus's (latency, Raft, disk,
//! CPU, scheduler, PD's own status gauges, `up{}`), and the configured logs. Pure over a
//! [`Transport`], so the fixture tests and the bench run exactly this code.

use crate::logparse::{self, EventKind, Level};
use crate::pd::Client as Pd;
use crate::pd::{self, PdError};
use crate::prom;
use crate::settings::Settings;
use crate::transport::{FetchError, Transport};
use operator_sdk::{
    Component, ComponentState, Event, Kv, Metrics, Observation, ObserveError, Problem, Severity, kv,
};
use std::collections::BTreeMap;

/// Events kept per log per tick (newest), and hot regions kept per direction.
pub const MAX_LOG_EVENTS: usize = 200;
pub const MAX_HOT_REGIONS: usize = 20;

struct Snapshot {
    now: u64,
    components: Vec<Component>,
    metrics: Metrics,
    events: Vec<Event>,
    problems: Vec<Problem>,
}

impl Snapshot {
    fn metric(&mut self, name: &str, labels: Vec<Kv>, value: f64) {
        self.metric_at(name, labels, value, self.now);
    }

    fn metric_at(&mut self, name: &str, labels: Vec<Kv>, value: f64, timestamp_ms: u64) {
        if value.is_finite() {
            let pairs = labels.iter().map(|l| (l.key.as_str(), l.value.as_str()));
            self.metrics.push_iter(name, pairs, value, timestamp_ms);
        }
    }

    fn problem(&mut self, source: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            source: source.into(),
            message: message.into(),
        });
    }
}

/// The component id of a store.
pub fn store_id(id: u64) -> String {
    format!("store-{id}")
}

/// The component id of a PD member.
pub fn pd_id(name: &str) -> String {
    format!("pd-{name}")
}

pub fn observe(t: &dyn Transport, s: &Settings, now: u64) -> Result<Observation, ObserveError> {
    let mut snap = Snapshot {
        now,
        components: Vec::new(),
        metrics: Metrics::new(),
        events: Vec::new(),
        problems: Vec::new(),
    };
    for w in &s.warnings {
        snap.problem("settings", w.clone());
    }
    let pd = Pd::new(t, &s.pd);
    let mut cluster = vec![];

    // Members first: it says whether any PD answers at all.
    let members = pd.json::<pd::Members>("/members");
    if let Err(PdError::Transport(FetchError::Unreachable(m))) = &members {
        return Err(ObserveError::Unreachable(format!(
            "no PD endpoint answers ({}): {m}",
            s.pd.join(", ")
        )));
    }
    if pd.current.get() > 0 {
        snap.problem(
            "pd",
            format!(
                "PD endpoint(s) not answering, using {}: {}",
                s.pd[pd.current.get()],
                s.pd[..pd.current.get()].join(", ")
            ),
        );
    }
    let health = observe_health(&pd, &mut snap);
    match members {
        Ok(m) => {
            let leader = m
                .leader
                .as_ref()
                .map(|l| l.name.clone())
                .unwrap_or_default();
            cluster.push(kv("cluster_id", m.header.cluster_id));
            cluster.push(kv(
                "pd_leader",
                if leader.is_empty() { "none" } else { &leader },
            ));
            cluster.push(kv("pd_members", m.members.len()));
            for member in &m.members {
                let healthy = health.as_ref().and_then(|h| h.get(&member.name).copied());
                snap.components.push(Component {
                    id: pd_id(&member.name),
                    kind: "pd".into(),
                    address: member.client_urls.first().cloned().unwrap_or_default(),
                    state: match healthy {
                        Some(true) => ComponentState::Up,
                        Some(false) => ComponentState::Down,
                        None => ComponentState::Unknown,
                    },
                    attributes: vec![
                        kv("name", &member.name),
                        kv("member_id", member.member_id),
                        kv("leader", !leader.is_empty() && member.name == leader),
                        kv(
                            "health",
                            healthy.map_or("unknown".to_string(), |h| h.to_string()),
                        ),
                        kv("binary_version", &member.binary_version),
                    ],
                });
            }
        }
        Err(e) => {
            snap.problem("pd /members", e.to_string());
            cluster.push(kv("pd_leader", "unknown"));
        }
    }
    if pd.exhausted() {
        return Err(ObserveError::Unreachable(format!(
            "no PD endpoint answers ({})",
            s.pd.join(", ")
        )));
    }

    let mut bootstrapped = None;
    match pd.json::<pd::ClusterStatus>("/cluster/status") {
        Ok(cs) => {
            bootstrapped = Some(cs.bootstrapped());
            cluster.push(kv("is_initialized", cs.is_initialized));
        }
        Err(PdError::NotBootstrapped(m)) => {
            bootstrapped = Some(false);
            snap.problem(
                "pd /cluster/status",
                format!("cluster not bootstrapped: {m}"),
            );
        }
        Err(e) => snap.problem("pd /cluster/status", e.to_string()),
    }
    match pd
        .get("/config")
        .and_then(|r| pd::decode::<serde_json::Value>(&r))
    {
        Ok(v) => {
            let c = pd::config_view(&v);
            if let Some(d) = c.max_store_down_time_s {
                cluster.push(kv("max_store_down_time_s", d));
            }
            if let Some(r) = c.max_replicas {
                cluster.push(kv("max_replicas", r));
            }
            cluster.push(kv("location_labels", c.location_labels));
        }
        Err(e) => snap.problem("pd /config", e.to_string()),
    }

    let mut status_addrs: BTreeMap<String, u64> = BTreeMap::new();
    // Asked even when /cluster/status says "not bootstrapped": its ErrNotBootstrapped
    // answer is the clearest thing to show the user.
    {
        match pd.json::<pd::Stores>("/stores") {
            Ok(stores) => {
                cluster.push(kv("store_count", stores.stores.len()));
                for e in &stores.stores {
                    if !e.store.status_address.is_empty() {
                        status_addrs.insert(e.store.status_address.clone(), e.store.id);
                    }
                    store_component(&mut snap, e);
                }
            }
            Err(PdError::NotBootstrapped(m)) => {
                bootstrapped = Some(false);
                snap.problem("pd /stores", format!("cluster not bootstrapped: {m}"));
            }
            Err(e) => snap.problem("pd /stores", e.to_string()),
        }
    }
    if bootstrapped != Some(false) {
        observe_regions(&pd, &mut snap, &mut cluster);
        for kind in ["write", "read"] {
            match pd.json::<pd::Hotspots>(&format!("/hotspot/regions/{kind}")) {
                Ok(h) => hotspots(&mut snap, kind, &h),
                Err(e) => snap.problem(&format!("pd /hotspot/regions/{kind}"), e.to_string()),
            }
        }
    }
    let bootstrapped = match bootstrapped {
        Some(b) => b.to_string(),
        None => "unknown".into(),
    };
    let leader_known = cluster
        .iter()
        .any(|c| c.key == "pd_leader" && c.value != "none" && c.value != "unknown");
    snap.components.insert(
        0,
        Component {
            id: "cluster".into(),
            kind: "cluster".into(),
            address: s.pd.join(","),
            state: match (bootstrapped.as_str(), leader_known) {
                ("true", true) => ComponentState::Up,
                ("unknown", _) => ComponentState::Unknown,
                _ => ComponentState::Degraded,
            },
            attributes: std::iter::once(kv("bootstrapped", bootstrapped))
                .chain(cluster)
                .collect(),
        },
    );

    if let Some(base) = &s.prometheus {
        observe_prometheus(t, base, &mut snap, &status_addrs);
    }
    for component in &s.logs {
        observe_log(t, component, s.log_lines, &mut snap);
    }
    Ok(Observation {
        timestamp_ms: snap.now,
        components: snap.components,
        metrics: snap.metrics,
        events: snap.events,
        problems: snap.problems,
    })
}

/// `/health`: member name → healthy. PD answers 200, or 503 with the same list.
fn observe_health(pd: &Pd, snap: &mut Snapshot) -> Option<BTreeMap<String, bool>> {
    let reply = match pd.get("/health") {
        Ok(r) => r,
        Err(e) => {
            snap.problem("pd /health", e.to_string());
            return None;
        }
    };
    match serde_json::from_slice::<Vec<pd::Health>>(&reply.body) {
        Ok(list) => Some(list.into_iter().map(|h| (h.name, h.health)).collect()),
        Err(e) => {
            let (code, msg) = pd::error_body(&reply.body);
            snap.problem(
                "pd /health",
                format!(
                    "HTTP {}: not a member list ({e}): {}{msg}",
                    reply.status,
                    code.map(|c| format!("[{c}] ")).unwrap_or_default()
                ),
            );
            None
        }
    }
}

fn store_component(snap: &mut Snapshot, e: &pd::StoreEntry) {
    let (m, st) = (&e.store, &e.status);
    let id = store_id(m.id);
    let state_name = m.state_name().to_string();
    let mut attrs = vec![
        kv("store_id", m.id),
        kv("state_name", &state_name),
        kv("node_state", m.node_state_name()),
        kv("status_address", &m.status_address),
        kv("version", &m.version),
        kv("leader_count", st.leader_count),
        kv("leader_weight", st.leader_weight),
        kv("region_count", st.region_count),
        kv("pending_peer_count", st.pending_peer_count),
        kv("slow_score", st.slow_score),
        kv("sending_snap_count", st.sending_snap_count),
        kv("receiving_snap_count", st.receiving_snap_count),
        kv("is_busy", st.is_busy),
    ];
    if m.last_heartbeat > 0 {
        let age_ms = snap
            .now
            .saturating_sub((m.last_heartbeat / 1_000_000) as u64);
        attrs.push(kv(
            "heartbeat_age_s",
            format!("{:.1}", age_ms as f64 / 1000.0),
        ));
    }
    if let (Some(cap), Some(avail)) = (st.capacity.0, st.available.0) {
        attrs.push(kv("capacity_bytes", cap));
        attrs.push(kv("available_bytes", avail));
        if cap > 0.0 {
            let ratio = avail / cap;
            attrs.push(kv("available_ratio", format!("{ratio:.4}")));
            snap.metric("pd_store_available_ratio", vec![kv("store", m.id)], ratio);
        }
    }
    if let Some(used) = st.used_size.0 {
        attrs.push(kv("used_bytes", used));
    }
    if !m.labels.is_empty() {
        let labels: Vec<String> = m
            .labels
            .iter()
            .map(|l| format!("{}={}", l.key, l.value))
            .collect();
        attrs.push(kv("labels", labels.join(",")));
    }
    snap.metric(
        "pd_store_leader_count",
        vec![kv("store", m.id)],
        st.leader_count as f64,
    );
    snap.metric(
        "pd_store_region_count",
        vec![kv("store", m.id)],
        st.region_count as f64,
    );
    snap.components.push(Component {
        id,
        kind: "tikv".into(),
        address: m.address.clone(),
        state: match state_name.as_str() {
            "Up" => ComponentState::Up,
            "Disconnected" | "Offline" => ComponentState::Degraded,
            "Down" => ComponentState::Down,
            _ => ComponentState::Unknown,
        },
        attributes: attrs,
    });
}

/// The region count and one `/regions/check/{state}` per state. Each answer is reduced to a
/// count and a few ids while it is decoded.
fn observe_regions(pd: &Pd, snap: &mut Snapshot, cluster: &mut Vec<Kv>) {
    match pd.json::<pd::RegionCount>("/regions/count") {
        Ok(c) => {
            cluster.push(kv("region_count", c.count));
            snap.metric("pd_region_count", vec![], c.count as f64);
        }
        Err(e) => snap.problem("pd /regions/count", e.to_string()),
    }
    for state in pd::REGION_CHECKS {
        let route = format!("/regions/check/{state}");
        match pd.json::<pd::RegionCheck>(&route) {
            Ok(c) => {
                snap.metric(
                    "pd_region_check_count",
                    vec![kv("state", state)],
                    c.count as f64,
                );
                cluster.push(kv(format!("{state}_regions"), c.count));
                if !c.sample_ids.is_empty() {
                    let ids: Vec<String> = c.sample_ids.iter().map(u64::to_string).collect();
                    cluster.push(kv(format!("{state}_sample"), ids.join(",")));
                }
            }
            Err(PdError::Transport(FetchError::TooLarge(n))) => {
                // Thousands of regions in this state: the count is at least what fits.
                let lower = n / 600;
                snap.metric(
                    "pd_region_check_count",
                    vec![kv("state", state)],
                    lower as f64,
                );
                cluster.push(kv(format!("{state}_regions"), lower));
                snap.problem(&format!("pd {route}"), format!("answer over the host's body cap ({n} bytes); counting at least {lower} regions"));
            }
            Err(e) => snap.problem(&format!("pd {route}"), e.to_string()),
        }
    }
}

fn hotspots(snap: &mut Snapshot, kind: &str, h: &pd::Hotspots) {
    for (role, stores) in [("leader", &h.as_leader), ("peer", &h.as_peer)] {
        for (store, s) in stores {
            let labels = vec![kv("kind", kind), kv("role", role), kv("store", store)];
            snap.metric(
                "pd_hot_store_flow_bytes",
                labels.clone(),
                s.total_flow_bytes,
            );
            snap.metric("pd_hot_store_regions", labels, s.regions_count as f64);
        }
    }
    // Region flows from the leaders' view: each region once.
    let mut regions: Vec<&pd::HotRegion> = h
        .as_leader
        .values()
        .flat_map(|s| s.statistics.iter())
        .collect();
    if regions.is_empty() {
        regions = h
            .as_peer
            .values()
            .flat_map(|s| s.statistics.iter())
            .collect();
    }
    regions.sort_by(|a, b| {
        b.flow_bytes
            .total_cmp(&a.flow_bytes)
            .then(a.region_id.cmp(&b.region_id))
    });
    regions.dedup_by_key(|r| r.region_id);
    for r in regions.into_iter().take(MAX_HOT_REGIONS) {
        let labels = vec![
            kv("kind", kind),
            kv("region_id", r.region_id),
            kv("store", r.store_id),
        ];
        snap.metric("pd_hot_region_flow_bytes", labels.clone(), r.flow_bytes);
        snap.metric("pd_hot_region_flow_keys", labels.clone(), r.flow_keys);
        snap.metric("pd_hot_region_degree", labels, r.hot_degree as f64);
    }
}

fn observe_prometheus(
    t: &dyn Transport,
    base: &str,
    snap: &mut Snapshot,
    status_addrs: &BTreeMap<String, u64>,
) {
    let store_of = |instance: &str| status_addrs.get(instance).copied();
    let mut up_by_store: BTreeMap<u64, bool> = BTreeMap::new();
    for q in prom::INSTANT {
        let url = prom::instant_url(base, q.expr);
        let series = match t.get(&url) {
            Ok(r) if (200..300).contains(&r.status) || r.status == 400 || r.status == 422 => {
                prom::decode_instant(&url, &r.body)
            }
            Ok(r) => Err(format!(
                "{url}: HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
            Err(e @ FetchError::Unreachable(_)) | Err(e @ FetchError::Denied(_)) => {
                // Every other query would fail the same way.
                snap.problem("prometheus", format!("{base}: {e}"));
                return;
            }
            Err(e) => Err(format!("{url}: {e}")),
        };
        let series = match series {
            Ok(s) => s,
            Err(e) => {
                snap.problem("prometheus", format!("query `{}`: {e}", q.id));
                continue;
            }
        };
        if q.id == "thread_cpu" {
            for ((instance, group), cores) in prom::group_threads(&series) {
                let mut labels = vec![kv("instance", &instance), kv("group", group)];
                if let Some(s) = store_of(&instance) {
                    labels.push(kv("store", s));
                }
                snap.metric(q.metric, labels, cores);
            }
            continue;
        }
        for s in series {
            let get = |k: &str| {
                s.labels
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.as_str())
            };
            let mut labels: Vec<Kv> = q
                .labels
                .iter()
                .filter_map(|k| get(k).map(|v| kv(*k, v)))
                .collect();
            if let Some(store) = get("instance").and_then(store_of) {
                labels.push(kv("store", store));
                if q.id == "up" {
                    up_by_store.insert(store, s.value >= 1.0);
                }
            }
            snap.metric(q.metric, labels, s.value);
        }
    }
    for (id, up) in up_by_store {
        if let Some(c) = snap.components.iter_mut().find(|c| c.id == store_id(id)) {
            c.attributes.push(kv("status_up", up));
            if !up && c.state == ComponentState::Up {
                c.state = ComponentState::Degraded;
            }
        }
    }
    for q in prom::RANGE {
        let url = prom::range_url(base, q.expr, snap.now);
        let result = match t.get(&url) {
            Ok(r) => prom::decode_range(&url, &r.body),
            Err(e) => Err(format!("{url}: {e}")),
        };
        match result {
            Ok(series) => {
                for s in series {
                    for (ts, v) in s.points {
                        snap.metric_at(q.metric, vec![], v, ts);
                    }
                }
            }
            Err(e) => snap.problem("prometheus", format!("range query `{}`: {e}", q.id)),
        }
    }
}

/// The component a log belongs to: a store or PD member by id, by `store-<n>`/`pd-<name>`,
/// or by address; otherwise the name the user gave.
fn log_owner(snap: &Snapshot, name: &str) -> String {
    let hit = snap.components.iter().find(|c| {
        c.id == name
            || (c.kind == "pd" && c.attr_is("name", name))
            || (!c.address.is_empty()
                && (c.address == name || c.address.split("://").last() == Some(name)))
            || c.attr_is("status_address", name)
    });
    hit.map_or_else(|| name.to_string(), |c| c.id.clone())
}

trait AttrIs {
    fn attr_is(&self, key: &str, value: &str) -> bool;
}

impl AttrIs for Component {
    fn attr_is(&self, key: &str, value: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.key == key && a.value == value)
    }
}

fn observe_log(t: &dyn Transport, name: &str, lines: u32, snap: &mut Snapshot) {
    let owner = log_owner(snap, name);
    let tail = match t.tail(name, lines) {
        Ok(l) => l,
        Err(e) => return snap.problem(&owner, format!("reading log `{name}`: {e}")),
    };
    let parsed = logparse::parse_all(&tail);
    snap.metric(
        "tikv_log_lines",
        vec![kv("component", &owner)],
        parsed.lines as f64,
    );
    snap.metric(
        "tikv_log_unparsed_lines",
        vec![kv("component", &owner)],
        parsed.garbage as f64,
    );
    let mut counts: BTreeMap<EventKind, usize> = BTreeMap::new();
    for (k, _) in &parsed.events {
        *counts.entry(*k).or_default() += 1;
    }
    for (k, n) in counts {
        snap.metric(
            "tikv_log_events",
            vec![kv("component", &owner), kv("kind", k.as_str())],
            n as f64,
        );
    }
    let skip = parsed.events.len().saturating_sub(MAX_LOG_EVENTS);
    for (kind, line) in parsed.events.into_iter().skip(skip) {
        let mut attributes = vec![
            kv("kind", kind.as_str()),
            kv("level", line.level.as_str()),
            kv("source", "log"),
            kv("file", &line.source),
        ];
        for (k, v) in &line.fields {
            if logparse::KEPT_FIELDS.contains(&k.as_str()) {
                attributes.push(kv(k, v.chars().take(200).collect::<String>()));
            }
        }
        if let Some(ms) = line
            .field("takes")
            .or(line.field("total_process_time"))
            .and_then(logparse::millis)
        {
            attributes.push(kv("takes_ms", ms));
        }
        snap.events.push(Event {
            timestamp_ms: line.timestamp_ms,
            component: owner.clone(),
            severity: match line.level {
                Level::Error | Level::Fatal => Severity::Critical,
                Level::Warn => Severity::Warning,
                _ => Severity::Info,
            },
            message: line.message,
            attributes,
        });
    }
}
