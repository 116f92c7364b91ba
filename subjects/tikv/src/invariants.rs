//! TIKV-03: the invariants, as a table of `{id, name, description, severity, check}`.
//! Every check is a pure function of the recent observations (oldest first) and carries
//! the numbers that broke it as evidence. Dedup keys name the store, region or member,
//! never a number that moves.

use crate::keys as k;
use crate::settings::Thresholds;
use operator_sdk::history::label;
use operator_sdk::{Component, Kv, Observation, Sample, Severity, Violation, kv};
use std::collections::{BTreeMap, BTreeSet};

/// What a check sees.
pub struct Ctx<'a> {
    pub history: &'a [Observation],
    pub cur: &'a Observation,
    pub prev: Option<&'a Observation>,
    pub t: &'a Thresholds,
}

pub struct Invariant {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub severity: Severity,
    pub check: fn(&Ctx, &mut Vec<Violation>),
}

pub const STORE_NOT_UP: &str = "TIKV-INV-01";
pub const PD_UNHEALTHY: &str = "TIKV-INV-02";
pub const REPLICATION_DEGRADED: &str = "TIKV-INV-03";
pub const LOW_SPACE: &str = "TIKV-INV-04";
pub const HIGH_LATENCY: &str = "TIKV-INV-05";
pub const RAFT_SLOW: &str = "TIKV-INV-06";
pub const HOTSPOT: &str = "TIKV-INV-07";
pub const LEADER_IMBALANCE: &str = "TIKV-INV-08";
pub const LEADER_CHURN: &str = "TIKV-INV-09";
pub const SNAPSHOT_STORM: &str = "TIKV-INV-10";
pub const SCHEDULER_BUSY: &str = "TIKV-INV-11";
pub const NOT_BOOTSTRAPPED: &str = "TIKV-INV-12";

pub const INVARIANTS: &[Invariant] = &[
    Invariant {
        id: STORE_NOT_UP,
        name: "store not up",
        description: "Every store PD knows is Up (not Disconnected or Down), and its status address answers Prometheus's scrape (up{} = 1)",
        severity: Severity::Critical,
        check: store_not_up,
    },
    Invariant {
        id: PD_UNHEALTHY,
        name: "pd unhealthy",
        description: "PD has a leader, the leader did not change since the last tick, and every member reports healthy",
        severity: Severity::Critical,
        check: pd_unhealthy,
    },
    Invariant {
        id: REPLICATION_DEGRADED,
        name: "replication degraded",
        description: "No region misses a peer, has a down or offline peer, and pending-peer regions stay under pending_peer_regions",
        severity: Severity::Critical,
        check: replication_degraded,
    },
    Invariant {
        id: LOW_SPACE,
        name: "low space",
        description: "Every store keeps at least low_space_ratio (20%) of its capacity available",
        severity: Severity::Warning,
        check: low_space,
    },
    Invariant {
        id: HIGH_LATENCY,
        name: "high latency",
        description: "Each store's gRPC p99 per request type stays under latency_p99_ms",
        severity: Severity::Warning,
        check: high_latency,
    },
    Invariant {
        id: RAFT_SLOW,
        name: "raft slow",
        description: "Raft append/commit/apply p99 stay under raft_p99_s (1 s), log lag p99 under log_lag (5000), and PD's slow score under slow_score",
        severity: Severity::Warning,
        check: raft_slow,
    },
    Invariant {
        id: HOTSPOT,
        name: "hotspot",
        description: "No region takes hot_region_share of the cluster's hot read or write flow, and no store carries hot_store_ratio times the mean store's",
        severity: Severity::Warning,
        check: hotspot,
    },
    Invariant {
        id: LEADER_IMBALANCE,
        name: "leader imbalance",
        description: "No Up store holds more than mean × (1 + leader_imbalance) leaders (and leader_imbalance_min above the mean)",
        severity: Severity::Warning,
        check: leader_imbalance,
    },
    Invariant {
        id: LEADER_CHURN,
        name: "leader churn",
        description: "Fewer than leader_changes leader elections within churn_window_s (logs), and no store loses more than leader_drop leaders in 30 s",
        severity: Severity::Warning,
        check: leader_churn,
    },
    Invariant {
        id: SNAPSHOT_STORM,
        name: "snapshot storm",
        description: "No store has snapshots_in_flight snapshots sending or receiving, or snapshot_events snapshot log events within churn_window_s",
        severity: Severity::Warning,
        check: snapshot_storm,
    },
    Invariant {
        id: SCHEDULER_BUSY,
        name: "scheduler busy",
        description: "No store's transaction scheduler holds more than scheduler_pending commands or rejects any as too busy",
        severity: Severity::Warning,
        check: scheduler_busy,
    },
    Invariant {
        id: NOT_BOOTSTRAPPED,
        name: "cluster not bootstrapped",
        description: "PD reports the cluster bootstrapped (some TiKV has joined)",
        severity: Severity::Warning,
        check: not_bootstrapped,
    },
];

pub fn check(history: &[Observation], t: &Thresholds) -> Vec<Violation> {
    let Some(cur) = history.last() else {
        return vec![];
    };
    let prev = history.len().checked_sub(2).map(|i| &history[i]);
    let ctx = Ctx {
        history,
        cur,
        prev,
        t,
    };
    let mut out = Vec::new();
    for inv in INVARIANTS {
        (inv.check)(&ctx, &mut out);
    }
    out
}

fn violation(
    id: &str,
    severity: Severity,
    component: &str,
    dedup: &str,
    summary: String,
    evidence: Vec<Kv>,
) -> Violation {
    Violation {
        invariant: id.into(),
        severity,
        component: component.into(),
        summary,
        evidence,
        dedup_key: format!("{id}:{dedup}"),
    }
}

fn attr<'a>(c: &'a Component, key: &str) -> Option<&'a str> {
    c.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| a.value.as_str())
}

fn attr_f(c: &Component, key: &str) -> Option<f64> {
    attr(c, key)?.parse().ok()
}

fn stores(o: &Observation) -> impl Iterator<Item = &Component> {
    o.components.iter().filter(|c| c.kind == "tikv")
}

fn cluster(o: &Observation) -> Option<&Component> {
    o.components.iter().find(|c| c.kind == "cluster")
}

fn metrics<'a>(o: &'a Observation, name: &'a str) -> impl Iterator<Item = Sample<'a>> + 'a {
    o.metrics.iter().filter(move |m| m.name == name)
}

/// The component a Prometheus sample is about: its store when PD named the status address,
/// else the instance.
fn who(m: Sample) -> String {
    match label(m, "store") {
        Some(s) => format!("store-{s}"),
        None => label(m, "instance").unwrap_or("").to_string(),
    }
}

fn store_num(id: &str) -> &str {
    id.strip_prefix("store-").unwrap_or(id)
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// How many of the stores with data are affected.
pub fn scope(affected: usize, with_data: usize) -> &'static str {
    if with_data < 2 || affected == 0 {
        "unknown"
    } else if affected == with_data {
        "cluster-wide"
    } else if affected == 1 {
        "single-store"
    } else {
        "multi-store"
    }
}

/// Current total QPS over the range query's earlier half: rising, steady, or unknown.
pub fn load_trend(o: &Observation, t: &Thresholds) -> (&'static str, Option<f64>) {
    let mut points: Vec<(u64, f64)> = metrics(o, "tikv_qps_total_history")
        .map(|m| (m.timestamp_ms, m.value))
        .collect();
    points.sort_by_key(|p| p.0);
    if points.len() < 4 {
        return ("unknown", None);
    }
    let half = &points[..points.len() / 2];
    let baseline = half.iter().map(|p| p.1).sum::<f64>() / half.len() as f64;
    let now = points.last().map_or(0.0, |p| p.1);
    if baseline <= 0.0 {
        return (if now > 0.0 { "rising" } else { "unknown" }, None);
    }
    let ratio = now / baseline;
    (
        if ratio >= t.load_rise {
            "rising"
        } else {
            "steady"
        },
        Some(ratio),
    )
}

fn store_not_up(c: &Ctx, out: &mut Vec<Violation>) {
    let down_after = cluster(c.cur)
        .and_then(|cl| attr(cl, "max_store_down_time_s"))
        .unwrap_or("unknown");
    for s in stores(c.cur) {
        let state = attr(s, "state_name").unwrap_or("Unknown");
        let status_up = attr(s, "status_up").unwrap_or("unknown");
        let pd_state_bad = matches!(state, "Disconnected" | "Down");
        if !pd_state_bad && status_up != "false" {
            continue;
        }
        if state == "Tombstone" || state == "Offline" {
            continue;
        }
        // Whether the store's own log (if configured) shows it failing to reach PD: a live
        // process cut off from the cluster, rather than a dead one.
        let logged = c
            .cur
            .events
            .iter()
            .filter(|e| e.component == s.id)
            .collect::<Vec<_>>();
        let pd_errors = if logged.is_empty()
            && !c
                .cur
                .metrics
                .iter()
                .any(|m| m.name == "tikv_log_lines" && label(m, "component") == Some(&s.id))
        {
            "unknown"
        } else if logged.iter().any(|e| {
            e.attributes
                .iter()
                .any(|a| a.key == "kind" && a.value == "heartbeat")
        }) {
            "true"
        } else {
            "false"
        };
        let severity = if state == "Down" {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let age = attr(s, "heartbeat_age_s").unwrap_or("unknown");
        let summary = match (state, status_up) {
            ("Up", _) => format!(
                "{} is Up in PD but its status address does not answer scrapes",
                s.id
            ),
            (_, "true") => format!(
                "{} is {state} in PD (no heartbeat for {age} s) while its process still answers scrapes",
                s.id
            ),
            _ => format!("{} is {state} (no heartbeat for {age} s)", s.id),
        };
        out.push(violation(
            STORE_NOT_UP,
            severity,
            &s.id,
            &s.id,
            summary,
            vec![
                kv(k::STORE_ID, store_num(&s.id)),
                kv(k::STORE_STATE, state),
                kv(k::STATUS_UP, status_up),
                kv(k::HEARTBEAT_AGE_S, age),
                kv(k::MAX_STORE_DOWN_TIME_S, down_after),
                kv(k::PD_ERRORS_LOGGED, pd_errors),
                kv(k::ADDRESS, &s.address),
            ],
        ));
    }
}

fn pd_unhealthy(c: &Ctx, out: &mut Vec<Violation>) {
    let members: Vec<&Component> = c.cur.components.iter().filter(|x| x.kind == "pd").collect();
    let healthy = members
        .iter()
        .filter(|m| attr(m, "health") == Some("true"))
        .count();
    let leader = cluster(c.cur)
        .and_then(|cl| attr(cl, "pd_leader"))
        .unwrap_or("unknown");
    let common = |problem: &str| {
        vec![
            kv(k::PD_PROBLEM, problem),
            kv(k::PD_LEADER, leader),
            kv(k::HEALTHY_MEMBERS, healthy),
            kv(k::MEMBERS, members.len()),
        ]
    };
    if leader == "none" {
        out.push(violation(
            PD_UNHEALTHY,
            Severity::Critical,
            "cluster",
            "no-leader",
            format!(
                "PD has no leader ({healthy} of {} members healthy)",
                members.len()
            ),
            common("no-leader"),
        ));
    } else if let Some(prev) = c
        .prev
        .and_then(|p| cluster(p))
        .and_then(|cl| attr(cl, "pd_leader"))
        && prev != leader
        && !matches!(prev, "none" | "unknown")
        && leader != "unknown"
    {
        let mut ev = common("leader-changed");
        ev.push(kv(k::PREVIOUS_PD_LEADER, prev));
        out.push(violation(
            PD_UNHEALTHY,
            Severity::Warning,
            "cluster",
            "leader-changed",
            format!("PD leader moved from {prev} to {leader} since the last tick"),
            ev,
        ));
    }
    for m in &members {
        if attr(m, "health") == Some("false") {
            let name = attr(m, "name").unwrap_or(&m.id);
            let mut ev = common("member-unhealthy");
            ev.push(kv(k::MEMBER, name));
            out.push(violation(
                PD_UNHEALTHY,
                if attr(m, "leader") == Some("true") {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                &m.id,
                &m.id,
                format!(
                    "PD member {name} is unhealthy ({healthy} of {} healthy)",
                    members.len()
                ),
                ev,
            ));
        }
    }
}

fn replication_degraded(c: &Ctx, out: &mut Vec<Violation>) {
    let Some(cl) = cluster(c.cur) else { return };
    // PD's region checks; PD's own gauge (via Prometheus) when a check did not answer.
    let count = |state: &str, gauge: &str| -> f64 {
        attr_f(cl, &format!("{state}_regions")).unwrap_or_else(|| {
            metrics(c.cur, "pd_regions_status")
                .filter(|m| label(m, "type") == Some(gauge))
                .map(|m| m.value)
                .sum()
        })
    };
    let miss = count("miss-peer", "miss-peer-region-count");
    let down = count("down-peer", "down-peer-region-count");
    let pending = count("pending-peer", "pending-peer-region-count");
    let offline = count("offline-peer", "offline-peer-region-count");
    let kind = if down > 0.0 {
        "down-peer"
    } else if miss > 0.0 {
        "miss-peer"
    } else if offline > 0.0 {
        "offline-peer"
    } else if pending > c.t.pending_peer_regions {
        "pending-peer"
    } else {
        return;
    };
    let sample = ["down-peer", "miss-peer", "offline-peer", "pending-peer"]
        .iter()
        .find_map(|s| attr(cl, &format!("{s}_sample")))
        .unwrap_or("");
    let not_up = stores(c.cur)
        .filter(|s| attr(s, "state_name") != Some("Up"))
        .count();
    let severity = if down > 0.0 || miss > 100.0 {
        Severity::Critical
    } else {
        Severity::Warning
    };
    out.push(violation(
        REPLICATION_DEGRADED,
        severity,
        "cluster",
        "cluster",
        format!("replication degraded: {} miss-peer, {} down-peer, {} offline-peer, {} pending-peer regions", fmt(miss), fmt(down), fmt(offline), fmt(pending)),
        vec![
            kv(k::DEGRADED_KIND, kind),
            kv(k::MISS_PEER_REGIONS, fmt(miss)),
            kv(k::DOWN_PEER_REGIONS, fmt(down)),
            kv(k::PENDING_PEER_REGIONS, fmt(pending)),
            kv(k::OFFLINE_PEER_REGIONS, fmt(offline)),
            kv(k::SAMPLE_REGION_IDS, sample),
            kv(k::STORES_NOT_UP, not_up),
        ],
    ));
}

fn low_space(c: &Ctx, out: &mut Vec<Violation>) {
    let low: Vec<(&Component, f64)> = stores(c.cur)
        .filter(|s| attr(s, "state_name") != Some("Tombstone"))
        .filter_map(|s| Some((s, attr_f(s, "available_ratio")?)))
        .filter(|(_, r)| *r < c.t.low_space_ratio)
        .collect();
    let n = low.len();
    for (s, ratio) in low {
        out.push(violation(
            LOW_SPACE,
            if ratio < c.t.low_space_ratio / 2.0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            &s.id,
            &s.id,
            format!(
                "{} has {:.1}% of its capacity available",
                s.id,
                ratio * 100.0
            ),
            vec![
                kv(k::STORE_ID, store_num(&s.id)),
                kv(k::AVAILABLE_RATIO, format!("{ratio:.4}")),
                kv(k::AVAILABLE_BYTES, attr(s, "available_bytes").unwrap_or("")),
                kv(k::CAPACITY_BYTES, attr(s, "capacity_bytes").unwrap_or("")),
                kv(k::LOW_SPACE_STORES, n),
            ],
        ));
    }
}

fn high_latency(c: &Ctx, out: &mut Vec<Violation>) {
    let limit = c.t.latency_p99_ms / 1000.0;
    let mut worst: BTreeMap<String, (f64, String, String)> = BTreeMap::new();
    for m in metrics(c.cur, "tikv_request_p99_seconds") {
        let e = worst
            .entry(who(m))
            .or_insert((f64::MIN, String::new(), String::new()));
        if m.value > e.0 {
            *e = (
                m.value,
                label(m, "type").unwrap_or("").to_string(),
                label(m, "instance").unwrap_or("").to_string(),
            );
        }
    }
    let affected: Vec<(&String, &(f64, String, String))> = worst
        .iter()
        .filter(|(_, (p99, _, _))| *p99 > limit)
        .collect();
    let scope = scope(affected.len(), worst.len());
    let (trend, ratio) = load_trend(c.cur, c.t);
    for (id, (p99, ty, instance)) in &affected {
        let qps: f64 = metrics(c.cur, "tikv_qps")
            .filter(|m| &who(*m) == *id)
            .map(|m| m.value)
            .sum();
        out.push(violation(
            HIGH_LATENCY,
            Severity::Warning,
            id,
            id,
            format!(
                "{id}: {ty} p99 {:.0} ms over {:.0} ms ({scope}, load {trend})",
                p99 * 1000.0,
                c.t.latency_p99_ms
            ),
            vec![
                kv(k::STORE_ID, store_num(id)),
                kv(k::INSTANCE, instance),
                kv(k::REQUEST_TYPE, ty),
                kv(k::P99_MS, format!("{:.1}", p99 * 1000.0)),
                kv(k::THRESHOLD, c.t.latency_p99_ms),
                kv(k::SCOPE, scope),
                kv(k::AFFECTED_STORES, affected.len()),
                kv(k::STORES_WITH_DATA, worst.len()),
                kv(k::LOAD_TREND, trend),
                kv(
                    k::QPS_RATIO,
                    ratio.map_or("unknown".into(), |r| format!("{r:.2}")),
                ),
                kv("qps", format!("{qps:.1}")),
            ],
        ));
    }
}

#[derive(Default)]
struct Raft {
    append: Option<f64>,
    commit: Option<f64>,
    apply: Option<f64>,
    lag: Option<f64>,
    slow_score: Option<f64>,
    raftstore_cpu: Option<f64>,
}

fn raft_slow(c: &Ctx, out: &mut Vec<Violation>) {
    let mut by: BTreeMap<String, Raft> = BTreeMap::new();
    for (name, slot) in [
        ("tikv_raft_append_p99_seconds", 0),
        ("tikv_raft_commit_p99_seconds", 1),
        ("tikv_raft_apply_p99_seconds", 2),
        ("tikv_raft_log_lag_p99", 3),
    ] {
        for m in metrics(c.cur, name) {
            let r = by.entry(who(m)).or_default();
            let f = match slot {
                0 => &mut r.append,
                1 => &mut r.commit,
                2 => &mut r.apply,
                _ => &mut r.lag,
            };
            *f = Some(f.map_or(m.value, |v: f64| v.max(m.value)));
        }
    }
    for s in stores(c.cur).filter(|s| attr(s, "state_name") == Some("Up")) {
        // PD leaves slow_score out until a store reports one.
        if let Some(score) = attr_f(s, "slow_score").filter(|v| *v > 0.0) {
            by.entry(s.id.clone()).or_default().slow_score = Some(score);
        }
    }
    for m in
        metrics(c.cur, "tikv_thread_cpu_cores").filter(|m| label(m, "group") == Some("raftstore"))
    {
        if let Some(r) = by.get_mut(&who(m)) {
            r.raftstore_cpu = Some(m.value);
        }
    }
    let t = c.t;
    let trigger = |r: &Raft| -> Option<&'static str> {
        if r.append.is_some_and(|v| v > t.raft_p99_s) {
            Some("append")
        } else if r.apply.is_some_and(|v| v > t.raft_p99_s) {
            Some("apply")
        } else if r.commit.is_some_and(|v| v > t.raft_p99_s) {
            Some("commit")
        } else if r.lag.is_some_and(|v| v > t.log_lag) {
            Some("log-lag")
        } else if r.slow_score.is_some_and(|v| v >= t.slow_score) {
            Some("slow-score")
        } else {
            None
        }
    };
    let affected: Vec<(&String, &Raft, &str)> = by
        .iter()
        .filter_map(|(id, r)| Some((id, r, trigger(r)?)))
        .collect();
    let scope = scope(affected.len(), by.len());
    let opt = |v: Option<f64>| v.map_or("unknown".to_string(), |v| format!("{v:.3}"));
    for (id, r, trig) in &affected {
        out.push(violation(
            RAFT_SLOW,
            Severity::Warning,
            id,
            id,
            format!("{id}: Raft {trig} is slow ({scope})"),
            vec![
                kv(k::STORE_ID, store_num(id)),
                kv(k::TRIGGER, *trig),
                kv(k::APPEND_P99_S, opt(r.append)),
                kv(k::COMMIT_P99_S, opt(r.commit)),
                kv(k::APPLY_P99_S, opt(r.apply)),
                kv(k::LOG_LAG_P99, opt(r.lag)),
                kv(k::SLOW_SCORE, opt(r.slow_score)),
                kv(k::RAFTSTORE_CPU, opt(r.raftstore_cpu)),
                kv(k::SCOPE, scope),
                kv(k::AFFECTED_STORES, affected.len()),
                kv(k::STORES_WITH_DATA, by.len()),
            ],
        ));
    }
}

fn hotspot(c: &Ctx, out: &mut Vec<Violation>) {
    let t = c.t;
    let up_stores = stores(c.cur)
        .filter(|s| attr(s, "state_name") == Some("Up"))
        .count()
        .max(1);
    for kind in ["write", "read"] {
        let flows = |role: &'static str| {
            metrics(c.cur, "pd_hot_store_flow_bytes")
                .filter(move |m| label(m, "kind") == Some(kind) && label(m, "role") == Some(role))
                .map(|m| (label(m, "store").unwrap_or("").to_string(), m.value))
        };
        let total: f64 = flows("leader").map(|(_, v)| v).sum();
        let mut region_stores = BTreeSet::new();
        for m in
            metrics(c.cur, "pd_hot_region_flow_bytes").filter(|m| label(m, "kind") == Some(kind))
        {
            let share = if total > 0.0 { m.value / total } else { 0.0 };
            if m.value < t.hot_min_bytes || share < t.hot_region_share {
                continue;
            }
            let region = label(m, "region_id").unwrap_or("");
            let store = label(m, "store").unwrap_or("");
            region_stores.insert(store.to_string());
            let degree = metrics(c.cur, "pd_hot_region_degree")
                .find(|d| label(d, "kind") == Some(kind) && label(d, "region_id") == Some(region))
                .map_or(0.0, |d| d.value);
            out.push(violation(
                HOTSPOT,
                Severity::Warning,
                &format!("store-{store}"),
                &format!("region:{kind}:{region}"),
                format!("region {region} takes {:.0}% of the cluster's hot {kind} flow ({:.1} MiB/s, leader on store {store})", share * 100.0, m.value / 1_048_576.0),
                vec![
                    kv(k::HOT_KIND, kind),
                    kv(k::HOT_SCOPE, "region"),
                    kv(k::REGION_ID, region),
                    kv(k::STORE_ID, store),
                    kv(k::FLOW_BYTES, fmt(m.value)),
                    kv(k::SHARE, format!("{share:.3}")),
                    kv(k::HOT_DEGREE, fmt(degree)),
                ],
            ));
        }
        // Write flow lands on every replica: peers. Read flow is served by leaders.
        let role = if kind == "write" { "peer" } else { "leader" };
        let per_store: Vec<(String, f64)> = flows(role).collect();
        let mean = per_store.iter().map(|(_, v)| v).sum::<f64>() / up_stores as f64;
        for (store, flow) in &per_store {
            if region_stores.contains(store)
                || mean <= 0.0
                || *flow < t.hot_min_bytes
                || flow / mean < t.hot_store_ratio
            {
                continue;
            }
            out.push(violation(
                HOTSPOT,
                Severity::Warning,
                &format!("store-{store}"),
                &format!("store:{kind}:{store}"),
                format!(
                    "store {store} carries {:.1}× the mean store's hot {kind} flow",
                    flow / mean
                ),
                vec![
                    kv(k::HOT_KIND, kind),
                    kv(k::HOT_SCOPE, "store"),
                    kv(k::STORE_ID, store),
                    kv(k::FLOW_BYTES, fmt(*flow)),
                    kv(k::MEAN_FLOW_BYTES, fmt(mean)),
                    kv(k::RATIO, format!("{:.2}", flow / mean)),
                ],
            ));
        }
    }
}

fn leader_imbalance(c: &Ctx, out: &mut Vec<Violation>) {
    let up: Vec<(&Component, f64)> = stores(c.cur)
        .filter(|s| attr(s, "state_name") == Some("Up") && attr(s, "status_up") != Some("false"))
        .filter_map(|s| Some((s, attr_f(s, "leader_count")?)))
        .collect();
    if up.len() < 2 {
        return;
    }
    let mean = up.iter().map(|(_, n)| n).sum::<f64>() / up.len() as f64;
    let (max_s, max) = up
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((up[0].0, 0.0));
    let (min_s, min) = up
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((up[0].0, 0.0));
    if mean <= 0.0
        || max <= mean * (1.0 + c.t.leader_imbalance)
        || max - mean < c.t.leader_imbalance_min
    {
        return;
    }
    out.push(violation(
        LEADER_IMBALANCE,
        Severity::Warning,
        &max_s.id,
        "cluster",
        format!(
            "{} holds {} leaders, {:.1}× the mean of {:.0} over {} Up stores ({} holds {})",
            max_s.id,
            fmt(max),
            max / mean,
            mean,
            up.len(),
            min_s.id,
            fmt(min)
        ),
        vec![
            kv(k::STORE_ID, store_num(&max_s.id)),
            kv(k::LEADER_COUNT, fmt(max)),
            kv(k::MEAN_LEADER_COUNT, format!("{mean:.1}")),
            kv(k::RATIO, format!("{:.2}", max / mean)),
            kv(k::MIN_STORE_ID, store_num(&min_s.id)),
            kv(k::MIN_LEADER_COUNT, fmt(min)),
            kv(k::TO_STORE_ID, store_num(&min_s.id)),
        ],
    ));
}

fn event_kind(e: &operator_sdk::Event) -> &str {
    e.attributes
        .iter()
        .find(|a| a.key == "kind")
        .map_or("", |a| a.value.as_str())
}

fn in_window<'a>(c: &'a Ctx) -> impl Iterator<Item = &'a operator_sdk::Event> + 'a {
    let from = c
        .cur
        .timestamp_ms
        .saturating_sub((c.t.churn_window_s * 1000.0) as u64);
    c.cur.events.iter().filter(move |e| e.timestamp_ms >= from)
}

fn leader_churn(c: &Ctx, out: &mut Vec<Violation>) {
    let won: Vec<&operator_sdk::Event> = in_window(c)
        .filter(|e| {
            event_kind(e) == "election"
                && (e.message.contains("became leader") || e.message.contains("leader changed"))
        })
        .collect();
    let regions: BTreeSet<&str> = won
        .iter()
        .filter_map(|e| {
            e.attributes
                .iter()
                .find(|a| a.key == "region_id" || a.key == "region-id")
                .map(|a| a.value.as_str())
        })
        .collect();
    // Leaders lost fast: Prometheus's 30 s delta, or PD's count between close ticks.
    let mut drop: f64 = metrics(c.cur, "tikv_leader_delta_30s")
        .map(|m| -m.value)
        .fold(0.0, f64::max);
    if let Some(prev) = c
        .prev
        .filter(|p| c.cur.timestamp_ms.saturating_sub(p.timestamp_ms) <= 30_000)
    {
        for s in stores(c.cur).filter(|s| attr(s, "state_name") == Some("Up")) {
            if let (Some(now), Some(before)) = (
                attr_f(s, "leader_count"),
                prev.components
                    .iter()
                    .find(|p| p.id == s.id)
                    .and_then(|p| attr_f(p, "leader_count")),
            ) {
                drop = drop.max(before - now);
            }
        }
    }
    let trigger = if won.len() as f64 >= c.t.leader_changes {
        "log-elections"
    } else if drop > c.t.leader_drop {
        "leader-drop"
    } else {
        return;
    };
    out.push(violation(
        LEADER_CHURN,
        Severity::Warning,
        "cluster",
        "cluster",
        format!(
            "{} leader elections over {} regions within {:.0} s; largest leader drop {}",
            won.len(),
            regions.len(),
            c.t.churn_window_s,
            fmt(drop)
        ),
        vec![
            kv(k::TRIGGER, trigger),
            kv(k::ELECTIONS, won.len()),
            kv(k::WINDOW_S, fmt(c.t.churn_window_s)),
            kv(k::REGIONS_AFFECTED, regions.len()),
            kv(k::LEADER_DROP, fmt(drop)),
        ],
    ));
}

fn snapshot_storm(c: &Ctx, out: &mut Vec<Violation>) {
    let pending = cluster(c.cur)
        .and_then(|cl| attr(cl, "pending-peer_regions"))
        .unwrap_or("unknown")
        .to_string();
    let mut events: BTreeMap<&str, usize> = BTreeMap::new();
    for e in in_window(c).filter(|e| event_kind(e) == "snapshot") {
        *events.entry(e.component.as_str()).or_default() += 1;
    }
    for s in stores(c.cur) {
        let mut sending = attr_f(s, "sending_snap_count").unwrap_or(0.0);
        let mut receiving = attr_f(s, "receiving_snap_count").unwrap_or(0.0);
        for m in metrics(c.cur, "tikv_snapshot_in_flight").filter(|m| who(*m) == s.id) {
            match label(m, "type") {
                Some("sending") => sending = sending.max(m.value),
                Some("receiving") => receiving = receiving.max(m.value),
                _ => {}
            }
        }
        let logged = events.get(s.id.as_str()).copied().unwrap_or(0);
        if sending + receiving < c.t.snapshots_in_flight && (logged as f64) < c.t.snapshot_events {
            continue;
        }
        out.push(violation(
            SNAPSHOT_STORM,
            Severity::Warning,
            &s.id,
            &s.id,
            format!("{}: {} snapshots sending, {} receiving, {logged} snapshot log events; {pending} pending-peer regions", s.id, fmt(sending), fmt(receiving)),
            vec![
                kv(k::STORE_ID, store_num(&s.id)),
                kv(k::SENDING_SNAPS, fmt(sending)),
                kv(k::RECEIVING_SNAPS, fmt(receiving)),
                kv(k::SNAPSHOT_EVENTS, logged),
                kv(k::PENDING_PEER_REGIONS, &pending),
            ],
        ));
    }
}

fn scheduler_busy(c: &Ctx, out: &mut Vec<Violation>) {
    let mut by: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for m in metrics(c.cur, "tikv_scheduler_pending") {
        by.entry(who(m)).or_default().0 += m.value;
    }
    for m in metrics(c.cur, "tikv_scheduler_too_busy_per_s") {
        by.entry(who(m)).or_default().1 += m.value;
    }
    let affected: Vec<(&String, &(f64, f64))> = by
        .iter()
        .filter(|(_, (p, b))| *p > c.t.scheduler_pending || *b > 0.0)
        .collect();
    let scope = scope(affected.len(), by.len());
    let (trend, _) = load_trend(c.cur, c.t);
    for (id, (pending, busy)) in &affected {
        out.push(violation(
            SCHEDULER_BUSY,
            Severity::Warning,
            id,
            id,
            format!(
                "{id}: scheduler holds {} commands, {busy:.1}/s rejected as too busy ({scope})",
                fmt(*pending)
            ),
            vec![
                kv(k::STORE_ID, store_num(id)),
                kv(k::SCHEDULER_PENDING, fmt(*pending)),
                kv(k::TOO_BUSY_PER_S, format!("{busy:.2}")),
                kv(k::SCOPE, scope),
                kv(k::LOAD_TREND, trend),
            ],
        ));
    }
}

fn not_bootstrapped(c: &Ctx, out: &mut Vec<Violation>) {
    let Some(cl) = cluster(c.cur) else { return };
    if attr(cl, "bootstrapped") != Some("false") {
        return;
    }
    out.push(violation(
        NOT_BOOTSTRAPPED,
        Severity::Warning,
        "cluster",
        "cluster",
        "PD runs but the cluster is not bootstrapped: no TiKV store has joined".into(),
        vec![
            kv(k::BOOTSTRAPPED, "false"),
            kv(k::MEMBERS, attr(cl, "pd_members").unwrap_or("unknown")),
        ],
    ));
}
