//! `invariants::check` on fixture observations, on the host target.
//!
//! A small simulation of the cluster (`Sim`: three nodes, one Redis, a steady load) stands
//! in for the live one. Each tick it renders what the real processes answer (the wire
//! types as JSON, `/metrics` in the exposition format the `prometheus` crate writes, Redis
//! `INFO` text) and feeds it through the same `Snapshot` methods `observe` uses, so the
//! observations carry the real component ids, attributes, metric names and labels.
//!
//! Each MON invariant is checked three ways: quiet while healthy, fires on its fault (with
//! its dedup key and the evidence diagnosis reads), and clears once the fault is gone.

use super::*;
use crate::evidence::{ErrorKind, REDIS_SLOW};
use crate::observe::{self, Snapshot, ViewKeys};
use operator_sdk::http::{self, HttpError};
use operator_sdk::redis::{self as sdk_redis, RedisError};
use ratelimiter_wire::{
    Chaos, Clock, CounterList, CounterView, Health, HealthStatus, LocalCount, NodeRecord, Policy,
    RedisCount,
};
use std::collections::{BTreeSet, VecDeque};

/// The service's histogram bounds (seconds), as `services/ratelimiter/src/metrics.rs`.
const BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const WINDOW_MS: u64 = 1000;
const DEFAULT_LIMIT: u64 = 100;
/// Registry entries expire after this long without a heartbeat (the service's TTL).
const REGISTRY_TTL_MS: u64 = 5000;
/// Observations the host hands to `check_invariants`.
const HISTORY: usize = 5;
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const REDIS_DOWN: &str = "redis error: Connection refused (os error 111)";

/// A histogram as the node keeps it: per-bucket counts (the last is +Inf) and the sum.
#[derive(Clone, Default)]
struct Hist {
    counts: [u64; 14],
    sum: f64,
}

impl Hist {
    fn record(&mut self, secs: f64, n: u64) {
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(13);
        self.counts[i] += n;
        self.sum += secs * n as f64;
    }

    /// The exposition lines, cumulative, as the `prometheus` crate writes them.
    fn render(&self, name: &str, out: &mut String) {
        out.push_str(&format!(
            "# HELP {name} a histogram\n# TYPE {name} histogram\n"
        ));
        let mut total = 0;
        for (i, n) in self.counts.iter().enumerate() {
            total += n;
            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {total}\n"));
        }
        out.push_str(&format!("{name}_sum {}\n{name}_count {total}\n", self.sum));
    }
}

/// What is wrong with a node's process, from outside.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Run {
    Up,
    /// SIGKILL: the port refuses connections.
    Killed,
    /// SIGSTOP: connections time out.
    Paused,
}

#[derive(Clone)]
struct SimNode {
    id: String,
    port: u16,
    run: Run,
    /// chaos `local_only`.
    local_only: bool,
    /// Answers, but its heartbeat task writes nothing.
    heartbeat_stuck: bool,
    /// Latency each decision takes at the node, and each Redis call takes.
    decision_secs: f64,
    redis_secs: f64,
    /// Cumulative counters, by `result` and by (key, result).
    decisions: BTreeMap<&'static str, u64>,
    key_decisions: BTreeMap<(String, &'static str), u64>,
    decision_hist: Hist,
    redis_hist: Hist,
    redis_errors: u64,
    /// This node's decisions per (key, window): (allowed, denied).
    tallies: BTreeMap<(String, u64), (u64, u64)>,
    /// The local fallback counter per (key, window).
    local: BTreeMap<(String, u64), u64>,
    last_heartbeat_ms: Option<u64>,
    started_ms: u64,
}

impl SimNode {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    fn mode(&self, redis_up: bool) -> Mode {
        if self.local_only {
            Mode::LocalOnly
        } else if !redis_up {
            Mode::FailOpen
        } else {
            Mode::Normal
        }
    }
}

#[derive(Clone)]
struct Sim {
    now: u64,
    nodes: Vec<SimNode>,
    redis_up: bool,
    limits: BTreeMap<String, u64>,
    /// Redis's counter keys: (key, window) → allowed cost.
    counts: BTreeMap<(String, u64), u64>,
    /// Keys written into the namespace without a TTL, with their values.
    stuck: Vec<(String, String)>,
    /// (node index, key, requests) sent every tick.
    load: Vec<(usize, String, u64)>,
    history: VecDeque<Observation>,
    t: Thresholds,
}

impl Sim {
    /// Three healthy nodes under steady load: three keys, one of them held at its limit.
    fn healthy() -> Sim {
        let nodes = (0..3)
            .map(|i| SimNode {
                id: format!("node-{}", i + 1),
                port: 7001 + i as u16,
                run: Run::Up,
                local_only: false,
                heartbeat_stuck: false,
                decision_secs: 0.0008,
                redis_secs: 0.0004,
                decisions: BTreeMap::new(),
                key_decisions: BTreeMap::new(),
                decision_hist: Hist::default(),
                redis_hist: Hist::default(),
                redis_errors: 0,
                tallies: BTreeMap::new(),
                local: BTreeMap::new(),
                last_heartbeat_ms: None,
                started_ms: 0,
            })
            .collect();
        let mut load = Vec::new();
        for n in 0..3 {
            load.push((n, "user-1".to_string(), 40));
            load.push((n, "user-2".to_string(), 30));
            // 3 × 20 a window against a limit of 30: denials are normal, not a fault.
            load.push((n, "tight".to_string(), 20));
        }
        let mut sim = Sim {
            now: 1_795_616_704_500,
            nodes,
            redis_up: true,
            limits: [("tight".to_string(), 30)].into(),
            counts: BTreeMap::new(),
            stuck: Vec::new(),
            load,
            history: VecDeque::new(),
            t: Thresholds::default(),
        };
        for n in &mut sim.nodes {
            n.started_ms = sim.now - 60_000;
            n.last_heartbeat_ms = Some(sim.now - 200);
        }
        sim
    }

    fn window(&self) -> u64 {
        self.now / WINDOW_MS
    }

    fn limit(&self, key: &str) -> u64 {
        self.limits.get(key).copied().unwrap_or(DEFAULT_LIMIT)
    }

    /// One tick: a window of traffic, heartbeats, then an observation and the check.
    fn tick(&mut self) -> Vec<Violation> {
        self.now += WINDOW_MS;
        let window = self.window();
        for (i, key, requests) in self.load.clone() {
            for _ in 0..requests {
                self.decide(i, &key, window);
            }
        }
        let redis_up = self.redis_up;
        for n in &mut self.nodes {
            if n.run == Run::Up && redis_up && !n.local_only && !n.heartbeat_stuck {
                n.last_heartbeat_ms = Some(self.now - 300);
            }
        }
        let obs = self.observe();
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(obs);
        check(self.history.make_contiguous(), &self.t)
    }

    fn ticks(&mut self, n: usize) -> Vec<Violation> {
        (0..n).map(|_| self.tick()).last().unwrap_or_default()
    }

    /// One request at node `i`, decided the way the node does: through Redis when it can
    /// reach it, else on its local counter (fail-open).
    fn decide(&mut self, i: usize, key: &str, window: u64) {
        let limit = self.limit(key);
        let redis_up = self.redis_up;
        let node = &self.nodes[i];
        if node.run != Run::Up {
            return;
        }
        let through_redis = redis_up && !node.local_only;
        let allowed = if through_redis {
            let c = self.counts.entry((key.to_string(), window)).or_default();
            let ok = *c < limit;
            if ok {
                *c += 1;
            }
            ok
        } else {
            let c = self.nodes[i]
                .local
                .entry((key.to_string(), window))
                .or_default();
            let ok = *c < limit;
            if ok {
                *c += 1;
            }
            ok
        };
        let node = &mut self.nodes[i];
        let result = match (through_redis, allowed) {
            (true, true) => "allowed",
            (true, false) => "denied",
            (false, _) => "failed_open",
        };
        *node.decisions.entry(result).or_default() += 1;
        let outcome = if allowed { "allowed" } else { "denied" };
        *node
            .key_decisions
            .entry((key.to_string(), outcome))
            .or_default() += 1;
        let tally = node.tallies.entry((key.to_string(), window)).or_default();
        if allowed {
            tally.0 += 1;
        } else {
            tally.1 += 1;
        }
        node.decision_hist.record(node.decision_secs, 1);
        if through_redis {
            node.redis_hist.record(node.redis_secs, 1);
        } else if !node.local_only {
            node.redis_errors += 1;
        }
    }

    fn health(&self, n: &SimNode) -> (u16, Health) {
        let mode = n.mode(self.redis_up);
        let available = mode == Mode::Normal;
        let redis = if n.local_only {
            "unreachable: cut off by chaos local_only".to_string()
        } else if self.redis_up {
            "ok".to_string()
        } else {
            REDIS_DOWN.to_string()
        };
        let h = Health {
            node: n.id.clone(),
            status: if available {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            redis,
            mode,
            policy: Policy::FailOpen,
            chaos: Some(Chaos {
                redis_latency_ms: 0,
                local_only: n.local_only,
            }),
        };
        (if available { 200 } else { 503 }, h)
    }

    fn metrics_text(&self, n: &SimNode) -> String {
        let mut out = String::new();
        n.decision_hist
            .render("ratelimiter_decision_duration_seconds", &mut out);
        out.push_str("# TYPE ratelimiter_decisions_total counter\n");
        for result in ["allowed", "denied", "failed_closed", "failed_open"] {
            let v = n.decisions.get(result).copied().unwrap_or(0);
            out.push_str(&format!(
                "ratelimiter_decisions_total{{result=\"{result}\"}} {v}\n"
            ));
        }
        out.push_str("# TYPE ratelimiter_key_decisions_total counter\n");
        for result in ["allowed", "denied"] {
            out.push_str(&format!(
                "ratelimiter_key_decisions_total{{key=\"_other\",result=\"{result}\"}} 0\n"
            ));
        }
        for ((key, result), v) in &n.key_decisions {
            out.push_str(&format!(
                "ratelimiter_key_decisions_total{{key=\"{key}\",result=\"{result}\"}} {v}\n"
            ));
        }
        out.push_str("# TYPE ratelimiter_mode gauge\n");
        let mode = n.mode(self.redis_up);
        for (label, m) in [
            ("draining", Mode::Draining),
            ("fail_closed", Mode::FailClosed),
            ("fail_open", Mode::FailOpen),
            ("local_only", Mode::LocalOnly),
            ("normal", Mode::Normal),
        ] {
            let v = u8::from(m == mode);
            out.push_str(&format!("ratelimiter_mode{{mode=\"{label}\"}} {v}\n"));
        }
        n.redis_hist
            .render("ratelimiter_redis_duration_seconds", &mut out);
        out.push_str("# TYPE ratelimiter_redis_errors_total counter\n");
        for kind in ["connection", "io", "other", "response", "server", "timeout"] {
            let v = if kind == "connection" {
                n.redis_errors
            } else {
                0
            };
            out.push_str(&format!(
                "ratelimiter_redis_errors_total{{kind=\"{kind}\"}} {v}\n"
            ));
        }
        let up = u8::from(self.redis_up && !n.local_only);
        out.push_str(&format!(
            "# TYPE ratelimiter_redis_up gauge\nratelimiter_redis_up {up}\n"
        ));
        out
    }

    /// `GET /v1/counters`: the node's view of every key it decided on in this or the last
    /// window.
    fn counters(&self, n: &SimNode) -> CounterList {
        let w = self.window();
        let keys: BTreeSet<&String> = n
            .tallies
            .keys()
            .filter(|(_, win)| *win + 1 >= w)
            .map(|(k, _)| k)
            .collect();
        let via_redis = self.redis_up && !n.local_only;
        let start = w * WINDOW_MS;
        let keys = keys
            .into_iter()
            .map(|key| {
                let tally = |win: u64| {
                    n.tallies
                        .get(&(key.clone(), win))
                        .copied()
                        .unwrap_or_default()
                };
                let count = |win: u64| self.counts.get(&(key.clone(), win)).copied();
                let local = |win: u64| n.local.get(&(key.clone(), win)).copied().unwrap_or(0);
                let ((allowed, denied), (prev_allowed, prev_denied)) = (tally(w), tally(w - 1));
                CounterView {
                    key: key.clone(),
                    node: n.id.clone(),
                    limit: self.limit(key),
                    window_ms: WINDOW_MS,
                    window_index: w,
                    window_start_ms: start,
                    now_ms: self.now,
                    elapsed_ms: self.now - start,
                    clock: if via_redis {
                        Clock::Redis
                    } else {
                        Clock::Local
                    },
                    blocked: via_redis.then_some(false),
                    redis: via_redis.then(|| RedisCount {
                        current: count(w).unwrap_or(0),
                        previous: count(w - 1).unwrap_or(0),
                        estimate: count(w).unwrap_or(0) as f64
                            + count(w - 1).unwrap_or(0) as f64 * 0.5,
                    }),
                    local: LocalCount {
                        window_index: w,
                        current: local(w),
                        previous: local(w - 1),
                        estimate: local(w) as f64 + local(w - 1) as f64 * 0.5,
                    },
                    allowed_in_window: allowed,
                    denied_in_window: denied,
                    allowed_in_previous_window: prev_allowed,
                    denied_in_previous_window: prev_denied,
                    window_of_tallies: w,
                }
            })
            .collect();
        CounterList {
            node: n.id.clone(),
            keys,
        }
    }

    /// Registry entries still alive (not expired), with their age.
    fn registry(&self) -> Vec<(NodeRecord, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let beat = n.last_heartbeat_ms?;
                let age = self.now - beat;
                (age <= REGISTRY_TTL_MS).then(|| {
                    let record = NodeRecord {
                        id: n.id.clone(),
                        addr: n.addr(),
                        mode: n.mode(self.redis_up),
                        last_heartbeat_ms: beat,
                        started_ms: n.started_ms,
                        policy: Policy::FailOpen,
                    };
                    (record, age)
                })
            })
            .collect()
    }

    fn redis_info(&self) -> String {
        let expiring = self.counts.len() + self.registry().len();
        let keys = expiring + self.stuck.len() + 1; // + rl:limits
        format!(
            "# Server\r\nredis_version:7.0.15\r\n# Clients\r\nconnected_clients:9\r\n\
             # Memory\r\nused_memory:1048576\r\n# Stats\r\ninstantaneous_ops_per_sec:2500\r\n\
             # Keyspace\r\ndb0:keys={keys},expires={expiring},avg_ttl=1500\r\n"
        )
    }

    /// What `observe::observe` builds from the same answers.
    fn observe(&self) -> Observation {
        let mut snap = Snapshot::new(self.now);
        let mut view_keys = ViewKeys::new();
        for n in &self.nodes {
            let url = n.url();
            let health = match n.run {
                Run::Up => {
                    let (status, h) = self.health(n);
                    let body = serde_json::to_vec(&h).unwrap();
                    http::decode_json::<Health>(&url, &body).map(|h| (status, h))
                }
                Run::Killed => Err(http::Error::Transport {
                    url: format!("{url}/healthz"),
                    error: HttpError::Connect("Connection refused (os error 111)".into()),
                }),
                Run::Paused => Err(http::Error::Transport {
                    url: format!("{url}/healthz"),
                    error: HttpError::Timeout,
                }),
            };
            if !snap.node_health(&url, health) {
                continue;
            }
            let id = observe::node_component_id(&url);
            snap.node_metrics(&id, &self.metrics_text(n));
            let body = serde_json::to_vec(&self.counters(n)).unwrap();
            let list = http::decode_json::<CounterList>(&url, &body).unwrap();
            snap.node_counters(&id, &list, &mut view_keys);
        }
        if self.redis_up {
            let persistent = snap.redis_info(REDIS_URL, &self.redis_info(), 1);
            snap.registry(self.registry(), "redis");
            for (key, windows) in &view_keys {
                for w in windows {
                    let c = self.counts.get(&(key.clone(), *w)).copied().unwrap_or(0);
                    snap.redis_count(key, *w, c as i64);
                }
            }
            if persistent > 1 {
                let scanned = self.counts.len() + self.registry().len() + self.stuck.len();
                let named = self.stuck.iter().take(5).cloned().collect();
                snap.ttl_scan(scanned, self.stuck.len(), named);
            } else {
                snap.no_keys_without_ttl();
            }
        } else {
            snap.redis_failed(
                REDIS_URL,
                &sdk_redis::Error {
                    url: REDIS_URL.into(),
                    command: "INFO".into(),
                    error: RedisError::Connect("Connection refused (os error 111)".into()),
                },
            );
            // `observe` then asks the nodes for the registry; they answer /v1/nodes with 503
            // as long as they cannot reach Redis either, so nothing is attached.
        }
        snap.finish()
    }
}

/// The violations of `invariant`, by dedup key.
fn of<'a>(vs: &'a [Violation], invariant: &str) -> Vec<&'a Violation> {
    vs.iter().filter(|v| v.invariant == invariant).collect()
}

fn ev<'a>(v: &'a Violation, key: &str) -> Option<&'a str> {
    v.evidence
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

/// A healthy cluster run until deltas exist (two ticks), where nothing fires. Built once
/// and cloned: every test starts from it.
fn settled() -> Sim {
    static SETTLED: std::sync::OnceLock<Sim> = std::sync::OnceLock::new();
    SETTLED
        .get_or_init(|| {
            let mut sim = Sim::healthy();
            let vs = sim.ticks(2);
            assert!(vs.is_empty(), "a healthy cluster violates nothing: {vs:#?}");
            sim
        })
        .clone()
}

/// After recovery, within a few ticks, nothing fires any more.
fn clears(sim: &mut Sim, invariant: &str) {
    let mut last = Vec::new();
    for _ in 0..4 {
        last = sim.tick();
        if last.is_empty() {
            return;
        }
    }
    panic!("{invariant} did not clear after recovery: {last:#?}");
}

#[test]
fn a_healthy_cluster_is_quiet_for_many_ticks() {
    let mut sim = settled();
    for _ in 0..8 {
        let vs = sim.tick();
        assert!(vs.is_empty(), "{vs:#?}");
    }
    // The load really hits the limit of `tight`: denials alone are not a fault.
    let denied: u64 = sim
        .nodes
        .iter()
        .filter_map(|n| n.decisions.get("denied"))
        .sum();
    assert!(denied > 0);
}

/// The observation holds a key's decisions summed over their results, and only the mode
/// the node is in; everything else from `/metrics` passes as scraped.
#[test]
fn key_decisions_are_summed_over_results_and_only_the_current_mode_is_kept() {
    let text = "\
# TYPE ratelimiter_key_decisions_total counter
ratelimiter_key_decisions_total{key=\"a\",result=\"allowed\"} 7
ratelimiter_key_decisions_total{key=\"a\",result=\"denied\"} 3
ratelimiter_key_decisions_total{key=\"b\",result=\"allowed\"} 2
ratelimiter_key_decisions_total{key=\"b\",result=\"denied\"} 0
# TYPE ratelimiter_mode gauge
ratelimiter_mode{mode=\"fail_open\"} 1
ratelimiter_mode{mode=\"normal\"} 0
# TYPE ratelimiter_redis_errors_total counter
ratelimiter_redis_errors_total{kind=\"io\"} 0
# TYPE other_total counter
other_total 5
";
    let mut snap = Snapshot::new(1);
    snap.node_metrics("n:1", text);
    let obs = snap.finish();
    type Flat = (String, Vec<(String, String)>, f64);
    let got: Vec<Flat> = obs
        .metrics
        .iter()
        .map(|m| {
            let labels = m
                .labels
                .iter()
                .map(|l| (l.key.to_owned(), l.value.to_owned()));
            (m.name.to_owned(), labels.collect(), m.value)
        })
        .collect();
    let sample = |name: &str, labels: &[(&str, &str)], value: f64| {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        (name.to_string(), labels.collect::<Vec<_>>(), value)
    };
    assert_eq!(
        got,
        [
            sample(KEY_DECISIONS, &[("key", "a"), ("node", "n:1")], 10.0),
            sample(KEY_DECISIONS, &[("key", "b"), ("node", "n:1")], 2.0),
            sample(
                "ratelimiter_mode",
                &[("mode", "fail_open"), ("node", "n:1")],
                1.0
            ),
            sample(
                "ratelimiter_redis_errors_total",
                &[("kind", "io"), ("node", "n:1")],
                0.0
            ),
        ]
    );
}

#[test]
fn nothing_to_check_without_observations() {
    assert!(check(&[], &Thresholds::default()).is_empty());
}

#[test]
fn mon01_fires_for_a_killed_node_and_clears_after_restart() {
    let mut sim = settled();
    sim.nodes[2].run = Run::Killed;
    let vs = sim.tick();
    let mon01 = of(&vs, id::NODE_UNREACHABLE);
    assert_eq!(mon01.len(), 1, "{vs:#?}");
    let v = mon01[0];
    assert_eq!(v.dedup_key, "MON-01:127.0.0.1:7003");
    assert_eq!(v.component, "127.0.0.1:7003");
    assert!(matches!(v.severity, Severity::Critical));
    assert!(
        v.summary
            .starts_with("node node-3 (127.0.0.1:7003) does not answer"),
        "{}",
        v.summary
    );
    assert_eq!(ev(v, REACHABLE), Some("false"));
    assert_eq!(ev(v, ERROR_KIND), Some(ErrorKind::Connect.as_str()));
    // Still registered, the heartbeat ageing: the registry names the node.
    assert_eq!(ev(v, "registered"), Some("true"));
    assert_eq!(ev(v, "node_id"), Some("node-3"));
    // The entry expires; the same ticket (same dedup key) stays open.
    let vs = sim.ticks(6);
    let v = of(&vs, id::NODE_UNREACHABLE)[0];
    assert_eq!(v.dedup_key, "MON-01:127.0.0.1:7003");
    assert_eq!(ev(v, "registered"), Some("false"));
    assert_eq!(ev(v, "node_id"), Some("node-3"), "named from history");
    sim.nodes[2].run = Run::Up;
    clears(&mut sim, id::NODE_UNREACHABLE);
}

#[test]
fn mon01_fires_for_a_paused_node_by_timeout_and_a_stale_heartbeat() {
    let mut sim = settled();
    sim.nodes[1].run = Run::Paused;
    let vs = sim.tick();
    let v = of(&vs, id::NODE_UNREACHABLE)[0];
    assert_eq!(ev(v, ERROR_KIND), Some(ErrorKind::Timeout.as_str()));
    sim.nodes[1].run = Run::Up;
    clears(&mut sim, id::NODE_UNREACHABLE);
}

#[test]
fn mon01_fires_for_a_node_that_answers_but_stopped_heartbeating() {
    let mut sim = settled();
    sim.nodes[0].heartbeat_stuck = true;
    // 2.3 s, then 3.3 s without a heartbeat: stale past 3 s.
    assert!(sim.ticks(2).is_empty());
    let vs = sim.tick();
    let v = of(&vs, id::NODE_UNREACHABLE)[0];
    assert_eq!(v.dedup_key, "MON-01:127.0.0.1:7001");
    assert_eq!(ev(v, REACHABLE), Some("true"));
    assert!(
        v.summary.contains(
            "node node-1 (127.0.0.1:7001) has a stale heartbeat: last one 3.3s ago (limit 3.0s)"
        ),
        "{}",
        v.summary
    );
    // Then the entry expires while the node still answers.
    let vs = sim.ticks(3);
    let v = of(&vs, id::NODE_UNREACHABLE)[0];
    assert_eq!(v.dedup_key, "MON-01:127.0.0.1:7001");
    assert!(
        v.summary.contains("missing from the Redis registry"),
        "{}",
        v.summary
    );
    assert_eq!(ev(v, "registered"), Some("false"));
    sim.nodes[0].heartbeat_stuck = false;
    clears(&mut sim, id::NODE_UNREACHABLE);
}

#[test]
fn mon02_fires_once_for_redis_down_and_clears_when_it_is_back() {
    let mut sim = settled();
    sim.redis_up = false;
    let vs = sim.tick();
    let mon02 = of(&vs, id::REDIS_DISCONNECTED);
    assert_eq!(mon02.len(), 1, "one ticket for the shared cause: {vs:#?}");
    let v = mon02[0];
    assert_eq!(v.dedup_key, "MON-02:redis");
    assert_eq!(v.component, "redis");
    assert_eq!(ev(v, REDIS_REACHABLE), Some("false"));
    assert_eq!(ev(v, "nodes_degraded"), Some("3"));
    assert_eq!(ev(v, MODE), Some(Mode::FailOpen.as_str()));
    assert!(
        v.summary.starts_with("Redis is unreachable ("),
        "{}",
        v.summary
    );
    sim.redis_up = true;
    // Local counts from the outage stay visible for a window, then age out.
    clears(&mut sim, id::REDIS_DISCONNECTED);
}

#[test]
fn mon02_fires_per_node_when_only_that_node_is_cut_off() {
    let mut sim = settled();
    sim.nodes[1].local_only = true;
    let vs = sim.tick();
    let mon02 = of(&vs, id::REDIS_DISCONNECTED);
    assert_eq!(mon02.len(), 1, "{vs:#?}");
    let v = mon02[0];
    assert_eq!(v.dedup_key, "MON-02:127.0.0.1:7002");
    assert_eq!(ev(v, REDIS_REACHABLE), Some("true"));
    assert_eq!(ev(v, MODE), Some(Mode::LocalOnly.as_str()));
    assert_eq!(ev(v, REACHABLE), Some("true"));
    assert!(v.summary.contains("answers the operator"), "{}", v.summary);
    sim.nodes[1].local_only = false;
    clears(&mut sim, id::REDIS_DISCONNECTED);
}

#[test]
fn mon03_fires_on_slow_decisions_and_says_whether_redis_is_the_slow_part() {
    // Slow Redis: the decision waits on it.
    let mut sim = settled();
    sim.nodes[0].decision_secs = 0.15;
    sim.nodes[0].redis_secs = 0.15;
    let vs = sim.tick();
    let mon03 = of(&vs, id::HIGH_LATENCY);
    assert_eq!(mon03.len(), 1, "{vs:#?}");
    let v = mon03[0];
    assert_eq!(v.dedup_key, "MON-03:127.0.0.1:7001");
    assert!(matches!(v.severity, Severity::Warning));
    assert_eq!(ev(v, REDIS_SLOW), Some("true"));
    let p99: f64 = ev(v, "p99_ms").unwrap().parse().unwrap();
    assert!(p99 > 100.0 && p99 <= 250.0, "{p99}");
    sim.nodes[0].decision_secs = 0.0008;
    sim.nodes[0].redis_secs = 0.0004;
    clears(&mut sim, id::HIGH_LATENCY);

    // Slow node, fast Redis.
    sim.nodes[2].decision_secs = 0.3;
    let vs = sim.tick();
    let v = of(&vs, id::HIGH_LATENCY)[0];
    assert_eq!(v.dedup_key, "MON-03:127.0.0.1:7003");
    assert_eq!(ev(v, REDIS_SLOW), Some("false"));
    sim.nodes[2].decision_secs = 0.0008;
    clears(&mut sim, id::HIGH_LATENCY);
}

#[test]
fn mon03_needs_enough_decisions() {
    let mut sim = settled();
    sim.load.retain(|(n, _, _)| *n != 0);
    sim.load.push((0, "user-1".into(), 10));
    sim.nodes[0].decision_secs = 0.3;
    let vs = sim.tick();
    assert!(
        of(&vs, id::HIGH_LATENCY).is_empty(),
        "10 < 20 samples: {vs:#?}"
    );
}

#[test]
fn mon04_and_mon05_fire_for_a_node_counting_locally_and_clear() {
    let mut sim = settled();
    sim.nodes[1].local_only = true;
    let vs = sim.tick();
    let mon04 = of(&vs, id::COUNTER_DRIFT);
    assert_eq!(mon04.len(), 1, "{vs:#?}");
    let v = mon04[0];
    assert_eq!(v.dedup_key, "MON-04:127.0.0.1:7002");
    assert_eq!(ev(v, "node_id"), Some("node-2"));
    assert_eq!(
        ev(v, KEY),
        Some("user-1"),
        "the worst key: most local decisions"
    );
    assert_eq!(ev(v, "local_count"), Some("40"));
    assert!(
        v.summary
            .contains("counted 40 decisions on `user-1` locally"),
        "{}",
        v.summary
    );
    // `tight` (limit 30): two nodes through Redis took all 30, node-2 allowed 20 more;
    // `user-1` (limit 100): 80 through Redis and 40 locally. `user-2` stays within 100.
    let mon05 = of(&vs, id::GHOST_ALLOWING);
    let keys: Vec<&str> = mon05.iter().map(|v| v.dedup_key.as_str()).collect();
    assert_eq!(keys, ["MON-05:tight", "MON-05:user-1"], "{vs:#?}");
    let v = mon05[0];
    assert_eq!(v.dedup_key, "MON-05:tight");
    assert_eq!(v.component, "");
    assert_eq!(ev(v, "allowed_total"), Some("50"));
    assert_eq!(ev(v, LIMIT), Some("30"));
    assert_eq!(ev(v, "excess"), Some("20"));
    assert!(
        v.summary
            .starts_with("`tight`: 50 allowed across nodes in one window, limit 30"),
        "{}",
        v.summary
    );
    sim.nodes[1].local_only = false;
    clears(&mut sim, id::GHOST_ALLOWING);
}

#[test]
fn mon04_fires_when_nodes_read_different_counts_from_redis() {
    let mut sim = settled();
    sim.tick();
    let mut obs = sim.observe();
    // node-3 read `user-1` in the same window as 25 more than the others did.
    let drifted: Vec<usize> = (obs.metrics.iter().enumerate())
        .filter(|(_, m)| {
            let is = |k: &str, v: &str| m.labels.iter().any(|l| l.key == k && l.value == v);
            m.name == "rl_view_redis_current" && is("node", "127.0.0.1:7003") && is("key", "user-1")
        })
        .map(|(i, _)| i)
        .collect();
    for i in drifted {
        *obs.metrics.value_mut(i).unwrap() += 25.0;
    }
    let vs = check(&[obs], &sim.t);
    let v = of(&vs, id::COUNTER_DRIFT)[0];
    assert_eq!(v.dedup_key, "MON-04:key:user-1");
    assert_eq!(ev(v, "spread"), Some("25"));
    // The next real tick agrees again.
    let vs = sim.tick();
    assert!(vs.is_empty(), "{vs:#?}");
}

#[test]
fn mon06_fires_for_a_key_without_ttl_and_clears_when_it_is_gone() {
    let mut sim = settled();
    sim.stuck.push(("rl:w:stuck:1".into(), "5".into()));
    let vs = sim.tick();
    let mon06 = of(&vs, id::STUCK_KEYS);
    assert_eq!(mon06.len(), 1, "{vs:#?}");
    let v = mon06[0];
    assert_eq!(v.dedup_key, "MON-06:redis");
    assert_eq!(
        ev(v, KEY),
        Some("stuck"),
        "the rate-limited key, for ACT-01"
    );
    assert_eq!(ev(v, "examples"), Some("rl:w:stuck:1"));
    assert_eq!(ev(v, "keys_without_ttl"), Some("1"));
    assert!(
        v.summary
            .starts_with("1 key(s) in the limiter's namespace have no TTL, e.g. rl:w:stuck:1"),
        "{}",
        v.summary
    );
    sim.stuck.clear();
    clears(&mut sim, id::STUCK_KEYS);
}

#[test]
fn mon07_fires_for_a_hot_key_and_clears_when_the_load_stops() {
    let mut sim = settled();
    for n in 0..3 {
        sim.load.push((n, "hot1".into(), 170));
    }
    let vs = sim.tick();
    let mon07 = of(&vs, id::HOT_KEY);
    // The first tick a key appears it has no earlier sample to take a delta from.
    assert!(mon07.is_empty(), "{vs:#?}");
    let vs = sim.tick();
    let mon07 = of(&vs, id::HOT_KEY);
    assert_eq!(mon07.len(), 1, "{vs:#?}");
    let v = mon07[0];
    assert_eq!(v.dedup_key, "MON-07:hot1");
    assert_eq!(ev(v, KEY), Some("hot1"));
    assert_eq!(ev(v, LIMIT), Some("100"));
    assert_eq!(ev(v, evidence::WINDOW_MS), Some("1000"));
    assert_eq!(ev(v, "total_decisions"), Some("780"));
    assert!(
        v.summary
            .starts_with("hot key `hot1`: 65% of 780 decisions"),
        "{}",
        v.summary
    );
    sim.load.retain(|(_, k, _)| k != "hot1");
    clears(&mut sim, id::HOT_KEY);
}

#[test]
fn mon07_reports_a_zero_limit() {
    let mut sim = settled();
    sim.limits.insert("hot1".into(), 0);
    for n in 0..3 {
        sim.load.push((n, "hot1".into(), 170));
    }
    let vs = sim.ticks(2);
    let v = of(&vs, id::HOT_KEY)[0];
    assert_eq!(ev(v, LIMIT), Some("0"));
}

#[test]
fn thresholds_come_from_settings_and_defaults_are_declared() {
    let t = Thresholds::with(|name, d| if name == "latency_p99_ms" { 5.0 } else { d });
    assert_eq!(t.latency_p99_ms, 5.0);
    assert_eq!(t.hot_key_share, Thresholds::default().hot_key_share);
    let meta = crate::metadata::metadata();
    for s in THRESHOLD_SETTINGS {
        let declared = meta.settings.iter().find(|d| d.name == s.name).unwrap();
        let default: f64 = declared.default_value.as_deref().unwrap().parse().unwrap();
        assert_eq!(Some(default), Thresholds::default_of(s.name));
    }
    // A lower threshold makes a healthy cluster's latency a violation.
    let mut sim = settled();
    sim.t.latency_p99_ms = 0.5;
    let vs = sim.tick();
    assert_eq!(of(&vs, id::HIGH_LATENCY).len(), 3, "{vs:#?}");
}

/// Every scenario above, run once more to collect what the invariants emit: the ids, the
/// evidence keys, and the (key, value) pairs. Computed once, shared by the tests.
fn emitted() -> &'static [Violation] {
    static ALL: std::sync::OnceLock<Vec<Violation>> = std::sync::OnceLock::new();
    ALL.get_or_init(run_scenarios)
}

fn run_scenarios() -> Vec<Violation> {
    let mut all = Vec::new();
    let mut run = |setup: &dyn Fn(&mut Sim), ticks: usize| {
        let mut sim = settled();
        setup(&mut sim);
        for _ in 0..ticks {
            all.extend(sim.tick());
        }
    };
    run(&|s| s.nodes[2].run = Run::Killed, 7);
    run(&|s| s.nodes[1].run = Run::Paused, 2);
    run(&|s| s.redis_up = false, 2);
    run(&|s| s.nodes[1].local_only = true, 2);
    run(
        &|s| {
            s.nodes[0].decision_secs = 0.15;
            s.nodes[0].redis_secs = 0.15;
        },
        2,
    );
    run(&|s| s.nodes[2].decision_secs = 0.3, 2);
    run(&|s| s.stuck.push(("rl:w:stuck:1".into(), "5".into())), 1);
    run(
        &|s| {
            s.limits.insert("hot1".into(), 0);
            for n in 0..3 {
                s.load.push((n, "hot1".into(), 170));
            }
        },
        2,
    );
    all
}

#[test]
fn every_signal_cites_what_some_invariant_emits() {
    let all = emitted();
    assert!(!all.is_empty());
    let ids: BTreeSet<&str> = all.iter().map(|v| v.invariant.as_str()).collect();
    let table: BTreeSet<&str> = INVARIANTS.iter().map(|d| d.id).collect();
    assert_eq!(ids, table, "every invariant fires in some scenario");
    let keys: BTreeSet<&str> = all
        .iter()
        .flat_map(|v| v.evidence.iter().map(|e| e.key.as_str()))
        .collect();
    let pairs: BTreeSet<(&str, &str)> = all
        .iter()
        .flat_map(|v| {
            v.evidence
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
        })
        .collect();
    let meta = crate::metadata::metadata();
    let actions: BTreeSet<&str> = meta.actions.iter().map(|a| a.id.as_str()).collect();
    for mode in &meta.failure_modes {
        for s in mode.signals_for.iter().chain(&mode.signals_against) {
            match &s.check {
                SignalCheck::Invariant(id) => assert!(
                    ids.contains(id.as_str()),
                    "{}: signal {:?} cites invariant {id}, which never fires",
                    mode.id,
                    s.description
                ),
                SignalCheck::Evidence(e) => {
                    assert!(
                        keys.contains(e.key.as_str()),
                        "{}: signal {:?} cites evidence key {:?}, which no invariant emits",
                        mode.id,
                        s.description,
                        e.key
                    );
                    assert!(
                        pairs.contains(&(e.key.as_str(), e.value.as_str())),
                        "{}: signal {:?} waits for {}={}, a value no invariant emits",
                        mode.id,
                        s.description,
                        e.key,
                        e.value
                    );
                }
                other => panic!("{}: unexpected signal kind {other:?}", mode.id),
            }
        }
        if let Some(action) = &mode.suggested_action {
            assert!(actions.contains(action.as_str()), "{}: {action}", mode.id);
        }
        // `{key}` parameters are filled from evidence: the key must exist.
        for p in &mode.suggested_params {
            if let Some(name) = p.value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                assert!(
                    keys.contains(name),
                    "{}: parameter {} takes evidence {name:?}, which no invariant emits",
                    mode.id,
                    p.key
                );
            }
        }
    }
}

#[test]
fn metadata_lists_the_table() {
    let meta = crate::metadata::metadata();
    let declared: Vec<(&str, &str)> = meta
        .invariants
        .iter()
        .map(|i| (i.id.as_str(), i.name.as_str()))
        .collect();
    let table: Vec<(&str, &str)> = INVARIANTS.iter().map(|d| (d.id, d.name)).collect();
    assert_eq!(declared, table);
    assert!(
        meta.actions.iter().all(|a| a.mutates),
        "every action changes the subject"
    );
}

#[test]
fn every_violation_carries_its_rows_severity() {
    for v in emitted().iter() {
        let row = INVARIANTS.iter().find(|d| d.id == v.invariant).unwrap();
        assert_eq!(format!("{:?}", v.severity), format!("{:?}", row.severity));
        assert!(v.dedup_key.starts_with(&format!("{}:", row.id)));
        assert!(!v.summary.is_empty() && !v.evidence.is_empty(), "{v:?}");
    }
}
