//! Fixture scenarios through the real observe and check code, natively: each invariant fires
//! on its scenario and stays quiet on the healthy one, malformed bodies become problems, and
//! the declared failure modes rank the right one first.

use crate::fixture::{Fixture, NOW_MS};
use crate::invariants::{self as inv, INVARIANTS};
use crate::metadata;
use crate::observe::observe;
use crate::settings::Settings;
use operator_sdk::{ComponentState, FailureMode, Observation, SignalCheck, Violation};
use std::collections::{BTreeMap, BTreeSet};

fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut pairs = vec![
        ("pd", "http://pd1:2379,http://pd2:2379,http://pd3:2379"),
        ("prometheus", "http://prom:9090"),
        ("log.store-1", "file:/logs/tikv1.log"),
        ("log.store-4", "file:/logs/tikv2.log"),
        ("log.store-5", "file:/logs/tikv3.log"),
    ];
    pairs.extend_from_slice(extra);
    Settings::from_pairs(pairs).unwrap()
}

fn observe_at(scenario: &str, now: u64, s: &Settings) -> Observation {
    observe(&Fixture::scenario(scenario), s, now).unwrap_or_else(|e| panic!("{scenario}: {e:?}"))
}

/// Observes each scenario in turn (10 s apart) and checks the history after the last.
fn run(scenarios: &[&str]) -> (Vec<Observation>, Vec<Violation>) {
    let s = settings(&[]);
    let n = scenarios.len() as u64;
    let history: Vec<Observation> = scenarios
        .iter()
        .enumerate()
        .map(|(i, sc)| observe_at(sc, NOW_MS - (n - 1 - i as u64) * 10_000, &s))
        .collect();
    let v = inv::check(&history, &s.thresholds);
    (history, v)
}

fn fired(v: &[Violation]) -> BTreeSet<&str> {
    v.iter().map(|v| v.invariant.as_str()).collect()
}

fn evidence<'a>(v: &'a Violation, key: &str) -> &'a str {
    v.evidence
        .iter()
        .find(|e| e.key == key)
        .map_or("", |e| e.value.as_str())
}

fn state_str(s: ComponentState) -> &'static str {
    match s {
        ComponentState::Up => "up",
        ComponentState::Degraded => "degraded",
        ComponentState::Down => "down",
        ComponentState::Unknown => "unknown",
    }
}

/// Whether one signal holds, with the WIT's semantics for each check.
fn holds(check: &SignalCheck, history: &[Observation], v: &[Violation]) -> bool {
    let cur = history.last().unwrap();
    match check {
        SignalCheck::Invariant(id) => v.iter().any(|x| &x.invariant == id),
        SignalCheck::Evidence(kv) => v.iter().any(|x| {
            x.evidence
                .iter()
                .any(|e| e.key == kv.key && e.value.eq_ignore_ascii_case(&kv.value))
        }),
        SignalCheck::ComponentState(kv) => cur
            .components
            .iter()
            .any(|c| c.kind == kv.key && state_str(c.state) == kv.value),
        SignalCheck::Attribute(kv) => cur.components.iter().any(|c| {
            c.attributes
                .iter()
                .any(|a| a.key == kv.key && a.value == kv.value)
        }),
        SignalCheck::Metric(m) => cur.metrics.iter().any(|s| {
            s.name == m.name
                && m.labels.iter().all(|l| {
                    s.labels
                        .iter()
                        .any(|x| x.key == l.key && x.value == l.value)
                })
                && match m.comparison {
                    operator_sdk::Comparison::Greater => s.value > m.threshold,
                    operator_sdk::Comparison::Less => s.value < m.threshold,
                    operator_sdk::Comparison::Equal => (s.value - m.threshold).abs() < 1e-9,
                }
        }),
        SignalCheck::Event(text) => {
            let t = text.to_ascii_lowercase();
            history.iter().any(|o| {
                o.events
                    .iter()
                    .any(|e| e.message.to_ascii_lowercase().contains(&t))
            })
        }
    }
}

/// The offline reasoner's weighing (evidence-v1 in operator-diagnosis), without its generic
/// onset bonus: found × (0.5 + 0.5 × coverage) − against.
fn score(fm: &FailureMode, history: &[Observation], v: &[Violation]) -> f64 {
    let total: f64 = fm.signals_for.iter().map(|s| f64::from(s.weight)).sum();
    let got: f64 = fm
        .signals_for
        .iter()
        .filter(|s| holds(&s.check, history, v))
        .map(|s| f64::from(s.weight))
        .sum();
    let against: f64 = fm
        .signals_against
        .iter()
        .filter(|s| holds(&s.check, history, v))
        .map(|s| f64::from(s.weight))
        .sum();
    let coverage = if total > 0.0 { got / total } else { 0.0 };
    got * (0.5 + 0.5 * coverage) - against
}

fn ranking(history: &[Observation], v: &[Violation]) -> Vec<(String, String, f64)> {
    let mut r: Vec<(String, String, f64)> = metadata::failure_modes()
        .iter()
        .map(|fm| (fm.id.clone(), fm.name.clone(), score(fm, history, v)))
        .collect();
    r.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    r
}

/// (scenario(s) observed in order, invariants that must fire exactly, failure mode ranked first)
pub(crate) const CASES: &[(&[&str], &[&str], Option<&str>)] = &[
    (&["healthy"], &[], None),
    (
        &["healthy", "store_disconnected"],
        &[inv::STORE_NOT_UP, inv::LEADER_CHURN],
        Some("store crashed"),
    ),
    (
        &["store_disconnected", "store_down"],
        &[inv::STORE_NOT_UP, inv::REPLICATION_DEGRADED],
        Some("store crashed"),
    ),
    (
        &["healthy", "store_isolated"],
        &[inv::STORE_NOT_UP],
        Some("store network-isolated"),
    ),
    (&["low_space"], &[inv::LOW_SPACE], Some("disk pressure")),
    (&["hot_write"], &[inv::HOTSPOT], Some("hot write region")),
    (&["hot_read"], &[inv::HOTSPOT], Some("hot read region")),
    (
        &["slow_store"],
        &[inv::HIGH_LATENCY, inv::RAFT_SLOW],
        Some("slow store"),
    ),
    (
        &["pd_member_unhealthy"],
        &[inv::PD_UNHEALTHY],
        Some("PD member down"),
    ),
    (
        &["healthy", "pd_leader_loss"],
        &[inv::PD_UNHEALTHY],
        Some("PD leader loss"),
    ),
    (
        &["healthy", "pd_leader_moved"],
        &[inv::PD_UNHEALTHY],
        Some("PD leader loss"),
    ),
    (
        &["leader_churn"],
        &[inv::LEADER_CHURN],
        Some("leader churn"),
    ),
    (
        &["snapshot_storm"],
        &[inv::REPLICATION_DEGRADED, inv::SNAPSHOT_STORM],
        Some("snapshot storm after recovery"),
    ),
    (
        &["not_bootstrapped"],
        &[inv::NOT_BOOTSTRAPPED],
        Some("cluster not bootstrapped"),
    ),
    (
        &["cluster_slowness"],
        &[inv::HIGH_LATENCY, inv::SCHEDULER_BUSY],
        Some("cluster-wide slowness from load"),
    ),
    (
        &["leader_imbalance"],
        &[inv::LEADER_IMBALANCE],
        Some("leader imbalance"),
    ),
];

#[test]
fn each_scenario_fires_its_invariants_and_ranks_its_failure_mode_first() {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (scenarios, want, mode) in CASES {
        let (history, v) = run(scenarios);
        let got = fired(&v);
        let want: BTreeSet<&str> = want.iter().copied().collect();
        let rank = ranking(&history, &v);
        let top = rank.first().filter(|r| r.2 >= 0.3).map(|r| r.1.clone());
        report.push(format!(
            "{:45} fired {:?}  top-1 {:?} ({:.2}, runner-up {} {:.2})",
            scenarios.join(" -> "),
            got,
            top,
            rank[0].2,
            rank[1].1,
            rank[1].2
        ));
        if got != want {
            failures.push(format!(
                "{scenarios:?}: fired {got:?}, want {want:?}\n{v:#?}"
            ));
        }
        if top.as_deref() != *mode {
            failures.push(format!(
                "{scenarios:?}: top-1 {top:?}, want {mode:?}; ranking {rank:?}"
            ));
        }
        // Only where a PD is gone or nothing has joined do problems belong in the observation.
        if !matches!(
            scenarios.last(),
            Some(&"pd_leader_loss" | &"pd_leader_moved" | &"not_bootstrapped")
        ) {
            let problems = &history.last().unwrap().problems;
            assert!(
                problems.is_empty(),
                "{scenarios:?}: unexpected problems {problems:#?}"
            );
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_invariant_fires_in_some_scenario() {
    let covered: BTreeSet<&str> = CASES
        .iter()
        .flat_map(|(_, w, _)| w.iter().copied())
        .collect();
    for i in INVARIANTS {
        assert!(
            covered.contains(i.id),
            "{} ({}) has no fixture scenario",
            i.id,
            i.name
        );
    }
}

#[test]
fn dedup_keys_are_stable_across_ticks_and_unique_per_tick() {
    let (_, a) = run(&["healthy", "store_disconnected"]);
    let (_, b) = run(&["store_disconnected", "store_disconnected"]);
    let ka: BTreeSet<&str> = a.iter().map(|v| v.dedup_key.as_str()).collect();
    let kb: BTreeSet<&str> = b
        .iter()
        .filter(|v| v.invariant == inv::STORE_NOT_UP)
        .map(|v| v.dedup_key.as_str())
        .collect();
    assert!(kb.is_subset(&ka), "{kb:?} ⊄ {ka:?}");
    assert_eq!(ka.len(), a.len(), "one violation per dedup key");
    assert!(ka.contains("TIKV-INV-01:store-5"));
}

/// Every evidence signal of every failure mode names a key=value that some invariant emits
/// in some scenario; every invariant signal names a declared invariant.
#[test]
fn failure_mode_signals_name_emitted_evidence() {
    let mut emitted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (scenarios, _, _) in CASES {
        let (_, v) = run(scenarios);
        for x in &v {
            for e in &x.evidence {
                emitted
                    .entry(e.key.clone())
                    .or_default()
                    .insert(e.value.clone());
            }
        }
    }
    let ids: BTreeSet<&str> = INVARIANTS.iter().map(|i| i.id).collect();
    for fm in metadata::failure_modes() {
        for s in fm.signals_for.iter().chain(&fm.signals_against) {
            match &s.check {
                SignalCheck::Evidence(kv) => {
                    let values = emitted.get(&kv.key).unwrap_or_else(|| {
                        panic!("{}: no invariant emits evidence key `{}`", fm.id, kv.key)
                    });
                    assert!(
                        values.contains(&kv.value),
                        "{}: evidence {}={} never emitted (seen {values:?})",
                        fm.id,
                        kv.key,
                        kv.value
                    );
                }
                SignalCheck::Invariant(id) => assert!(
                    ids.contains(id.as_str()),
                    "{}: unknown invariant {id}",
                    fm.id
                ),
                _ => {}
            }
        }
        if let Some(a) = &fm.suggested_action {
            assert!(
                metadata::actions().iter().any(|x| &x.id == a),
                "{}: unknown action {a}",
                fm.id
            );
            for p in &fm.suggested_params {
                if let Some(key) = p.value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                    assert!(
                        emitted.contains_key(key),
                        "{}: parameter {} names evidence `{key}` no invariant emits",
                        fm.id,
                        p.key
                    );
                }
            }
        }
    }
}

#[test]
fn store_crash_and_isolation_are_told_apart_by_evidence() {
    let (_, crashed) = run(&["healthy", "store_disconnected"]);
    let v = crashed
        .iter()
        .find(|v| v.invariant == inv::STORE_NOT_UP)
        .unwrap();
    assert_eq!(evidence(v, "store_state"), "Disconnected");
    assert_eq!(evidence(v, "status_up"), "false");
    assert_eq!(evidence(v, "pd_errors_logged"), "false");
    assert_eq!(
        evidence(v, "heartbeat_age_s"),
        "44.9",
        "45 s minus the heartbeat's 0.123 s"
    );
    let (_, isolated) = run(&["healthy", "store_isolated"]);
    let v = isolated
        .iter()
        .find(|v| v.invariant == inv::STORE_NOT_UP)
        .unwrap();
    assert_eq!(evidence(v, "status_up"), "true");
    assert_eq!(evidence(v, "pd_errors_logged"), "true");
    let (_, down) = run(&["store_disconnected", "store_down"]);
    let v = down
        .iter()
        .find(|v| v.invariant == inv::STORE_NOT_UP)
        .unwrap();
    assert_eq!(evidence(v, "store_state"), "Down");
    assert_eq!(evidence(v, "max_store_down_time_s"), "1800");
    let r = down
        .iter()
        .find(|v| v.invariant == inv::REPLICATION_DEGRADED)
        .unwrap();
    assert_eq!(evidence(r, "down_peer_regions"), "33");
    assert_eq!(evidence(r, "miss_peer_regions"), "4");
    assert_eq!(evidence(r, "sample_region_ids"), "100,101,102,103,104");
}

#[test]
fn numbers_in_the_evidence() {
    let (_, v) = run(&["low_space"]);
    assert_eq!(v.len(), 1);
    assert_eq!(evidence(&v[0], "store_id"), "4");
    assert_eq!(
        evidence(&v[0], "available_ratio"),
        "0.0950",
        "9.5 GiB of 100 GiB, sizes with a space"
    );
    let (_, v) = run(&["hot_write"]);
    assert_eq!(evidence(&v[0], "region_id"), "120");
    assert_eq!(evidence(&v[0], "store_id"), "1");
    assert_eq!(evidence(&v[0], "hot_kind"), "write");
    let (_, v) = run(&["slow_store"]);
    assert!(
        v.iter()
            .all(|x| evidence(x, "store_id") == "4" && evidence(x, "scope") == "single-store"),
        "{v:#?}"
    );
    let raft = v.iter().find(|x| x.invariant == inv::RAFT_SLOW).unwrap();
    assert_eq!(evidence(raft, "trigger"), "append");
    assert_eq!(evidence(raft, "append_p99_s"), "1.740");
    assert_eq!(evidence(raft, "slow_score"), "87.000");
    let (_, v) = run(&["cluster_slowness"]);
    assert_eq!(
        v.iter()
            .filter(|x| x.invariant == inv::HIGH_LATENCY)
            .count(),
        3
    );
    assert!(
        v.iter().all(
            |x| evidence(x, "scope") == "cluster-wide" && evidence(x, "load_trend") == "rising"
        ),
        "{v:#?}"
    );
    let (_, v) = run(&["leader_churn"]);
    assert_eq!(evidence(&v[0], "elections"), "42");
    assert_eq!(evidence(&v[0], "trigger"), "log-elections");
}

#[test]
fn healthy_observation_is_complete() {
    let (h, _) = run(&["healthy"]);
    let o = &h[0];
    let ids: Vec<&str> = o.components.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "cluster", "pd-pd1", "pd-pd2", "pd-pd3", "store-1", "store-4", "store-5"
        ]
    );
    let cluster = &o.components[0];
    let attr = |c: &operator_sdk::Component, k: &str| {
        c.attributes
            .iter()
            .find(|a| a.key == k)
            .map(|a| a.value.clone())
            .unwrap_or_default()
    };
    assert_eq!(attr(cluster, "pd_leader"), "pd1");
    assert_eq!(attr(cluster, "max_replicas"), "3");
    assert_eq!(attr(cluster, "region_count"), "100");
    assert_eq!(attr(cluster, "bootstrapped"), "true");
    let s1 = &o.components[4];
    assert_eq!(attr(s1, "status_up"), "true");
    assert_eq!(attr(s1, "heartbeat_age_s"), "4.9");
    assert_eq!(attr(s1, "node_state"), "Serving");
    let names: BTreeSet<&str> = o.metrics.iter().map(|m| m.name).collect();
    for want in [
        "tikv_qps",
        "tikv_request_p99_seconds",
        "tikv_raft_apply_p99_seconds",
        "tikv_thread_cpu_cores",
        "pd_cluster_status",
        "pd_regions_status",
        "up",
        "tikv_qps_total_history",
        "pd_region_check_count",
        "pd_hot_region_flow_bytes",
        "tikv_log_unparsed_lines",
    ] {
        assert!(names.contains(want), "missing {want}");
    }
    let raft_cpu = o
        .metrics
        .iter()
        .find(|m| {
            m.name == "tikv_thread_cpu_cores" && m.labels.iter().any(|l| l.value == "raftstore")
        })
        .unwrap();
    assert!(
        (raft_cpu.value - 0.58).abs() < 1e-9,
        "raftstore-1-0 + raftstore-1-1"
    );
    assert_eq!(
        o.metrics
            .iter()
            .filter(|m| m.name == "tikv_qps_total_history")
            .count(),
        21
    );
    let garbage = o
        .metrics
        .iter()
        .find(|m| m.name == "tikv_log_unparsed_lines")
        .unwrap();
    assert_eq!(garbage.value, 1.0);
}

#[test]
fn malformed_bodies_become_problems_not_traps() {
    let s = settings(&[]);
    let o = observe_at("malformed", NOW_MS, &s);
    let by_source: BTreeMap<&str, &str> = o
        .problems
        .iter()
        .map(|p| (p.source.as_str(), p.message.as_str()))
        .collect();
    assert!(
        by_source["pd /stores"].starts_with("malformed JSON: EOF while parsing"),
        "{by_source:#?}"
    );
    assert!(
        by_source["pd /health"].contains("HTTP 503")
            && by_source["pd /health"].contains("ErrServerNotStarted"),
        "{by_source:#?}"
    );
    assert!(
        by_source["pd /hotspot/regions/write"].contains("malformed JSON"),
        "{by_source:#?}"
    );
    assert_eq!(
        by_source["pd /regions/check/down-peer"],
        "HTTP 500 [PD:core:ErrRegionNotFound] region not found"
    );
    assert!(
        by_source["pd /regions/count"].contains("malformed JSON: invalid type"),
        "{by_source:#?}"
    );
    // What did decode is still there; NaN quantiles are dropped, not recorded.
    assert!(
        o.components
            .iter()
            .any(|c| c.id == "pd-pd1" && c.state == ComponentState::Unknown)
    );
    assert!(!o.metrics.iter().any(|m| !m.value.is_finite()));
    let unparsed = o
        .metrics
        .iter()
        .find(|m| {
            m.name == "tikv_log_unparsed_lines" && m.labels.iter().any(|l| l.value == "store-1")
        })
        .unwrap();
    assert_eq!(unparsed.value, 40.0);
    let v = inv::check(std::slice::from_ref(&o), &s.thresholds);
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn not_bootstrapped_and_leaderless_pd_say_so() {
    let s = Settings::from_pairs([("pd", "http://pd1:2379")]).unwrap();
    let o = observe_at("not_bootstrapped", NOW_MS, &s);
    assert_eq!(o.problems.len(), 1, "{:#?}", o.problems);
    assert!(
        o.problems[0]
            .message
            .starts_with("cluster not bootstrapped: TiKV cluster not bootstrapped"),
        "{:#?}",
        o.problems
    );
    let (h, _) = run(&["healthy", "pd_leader_loss"]);
    let o = h.last().unwrap();
    assert!(
        o.problems[0].message.contains("pd1:2379")
            && o.problems[0].message.contains("using http://pd2:2379"),
        "{:#?}",
        o.problems
    );
    assert!(
        o.problems.iter().any(|p| p.source == "pd /stores"
            && p.message == "HTTP 503 [PD:apiutil:ErrRedirectNoLeader] redirect finds no leader"),
        "{:#?}",
        o.problems
    );
}

#[test]
fn no_pd_answering_is_an_observe_error() {
    let s = Settings::from_pairs([("pd", "http://pd1:2379")]).unwrap();
    let err = observe(&Fixture::scenario("pd_leader_loss"), &s, NOW_MS).unwrap_err();
    match err {
        operator_sdk::ObserveError::Unreachable(m) => assert!(m.contains("pd1:2379"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn thresholds_from_settings_change_the_verdict() {
    let s = settings(&[("low_space_ratio", "0.05")]);
    let o = observe_at("low_space", NOW_MS, &s);
    assert!(
        inv::check(&[o], &s.thresholds).is_empty(),
        "9.5% is fine when the floor is 5%"
    );
    let s = settings(&[("latency_p99_ms", "1")]);
    let o = observe_at("healthy", NOW_MS, &s);
    let v = inv::check(&[o], &s.thresholds);
    assert_eq!(v.len(), 3, "a 1 ms threshold flags every store: {v:#?}");
}

/// The README is the contract a simulator serves: it must name every route, query,
/// setting, invariant, action and failure mode the code uses.
#[test]
fn readme_documents_the_whole_http_surface() {
    let readme = include_str!("../README.md");
    let mut missing = Vec::new();
    let mut need = |what: String| {
        if !readme.contains(&what) {
            missing.push(what);
        }
    };
    for q in crate::prom::INSTANT.iter().chain(crate::prom::RANGE) {
        need(format!("`{}` | `{}` | `{}`", q.id, q.metric, q.expr));
    }
    for route in [
        "/members",
        "/health",
        "/cluster/status",
        "/config",
        "/stores",
        "/regions/count",
        "/hotspot/regions/write",
        "/hotspot/regions/read",
        "/region/id/{region_id}",
        "POST /operators",
        "GET /operators/{region_id}",
        "POST /schedulers",
        "DELETE /schedulers/evict-leader-scheduler-{store_id}",
    ] {
        need(route.to_string());
    }
    for state in crate::pd::REGION_CHECKS {
        need(format!("`/regions/check/{state}`"));
    }
    for s in crate::settings::declared() {
        need(format!("| `{}` |", s.name));
    }
    for i in INVARIANTS {
        need(format!("| {} | {} |", i.id, i.name));
    }
    for a in metadata::actions() {
        need(format!("`{}` {}", a.id, a.name));
    }
    for fm in metadata::failure_modes() {
        need(format!("| {} | {} |", fm.id, fm.name));
    }
    assert!(missing.is_empty(), "README.md lacks: {missing:#?}");
}

#[test]
fn prometheus_down_is_one_problem_and_no_verdict() {
    let s = settings(&[]);
    let o = observe_at("prometheus_down", NOW_MS, &s);
    assert_eq!(o.problems.len(), 1, "{:#?}", o.problems);
    assert!(
        o.problems[0]
            .message
            .starts_with("http://prom:9090: unreachable"),
        "{:#?}",
        o.problems
    );
    assert!(
        !o.metrics
            .iter()
            .any(|m| m.name == "up" || m.name.starts_with("tikv_qps"))
    );
    let v = inv::check(std::slice::from_ref(&o), &s.thresholds);
    assert!(
        v.is_empty(),
        "no Prometheus is no evidence of a fault: {v:#?}"
    );
}
