//! What this subject declares: invariants, actions and the failure modes diagnosis uses.

use operator_sdk::prelude::*;

fn inv(id: &str, name: &str, description: &str, severity: Severity) -> InvariantInfo {
    InvariantInfo {
        id: id.into(),
        name: name.into(),
        description: description.into(),
        severity,
    }
}

fn param(name: &str, description: &str) -> ParamInfo {
    ParamInfo {
        name: name.into(),
        description: description.into(),
        required: true,
    }
}

fn action(
    id: &str,
    name: &str,
    description: &str,
    params: Vec<ParamInfo>,
    risk: Risk,
) -> ActionInfo {
    ActionInfo {
        id: id.into(),
        name: name.into(),
        description: description.into(),
        params,
        mutates: true,
        risk,
    }
}

fn sig(description: &str, check: SignalCheck, weight: f32) -> Signal {
    Signal {
        description: description.into(),
        check,
        weight,
    }
}

fn on(id: &str) -> SignalCheck {
    SignalCheck::Invariant(id.into())
}

fn ev(key: &str, value: &str) -> SignalCheck {
    SignalCheck::Evidence(kv(key, value))
}

#[allow(clippy::too_many_arguments)]
fn mode(
    id: &str,
    name: &str,
    description: &str,
    signals_for: Vec<Signal>,
    signals_against: Vec<Signal>,
    suggested_action: Option<&str>,
    suggested_params: Vec<Kv>,
) -> FailureMode {
    FailureMode {
        id: id.into(),
        name: name.into(),
        description: description.into(),
        signals_for,
        signals_against,
        suggested_action: suggested_action.map(String::from),
        suggested_params,
    }
}

pub fn metadata() -> Metadata {
    Metadata {
        name: "ratelimiter".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: "Distributed sliding-window rate limiter: nodes sharing one Redis \
                      (settings: nodes=URL,URL,... redis=redis://host:port)"
            .into(),
        settings: vec![
            Setting::origins(
                "nodes",
                "the nodes' base URLs, comma-separated (http://127.0.0.1:7001,...)",
            )
            .required(),
            Setting::origin("redis", "the shared Redis, read directly and read-only (redis://host:port)"),
            Setting::origin("prometheus", "a Prometheus that scrapes the nodes (optional; their /metrics suffice)"),
            Setting::value("latency_p99_ms", "MON-03: p99 decision latency limit in ms").default_value(100),
            Setting::value("latency_min_samples", "MON-03: fewest decisions in a tick to judge p99").default_value(20),
            Setting::value("heartbeat_stale_ms", "MON-01: registry heartbeat age that counts as stale").default_value(3000),
            Setting::value("drift_tolerance", "MON-04: allowed disagreement, as a share of the limit (at least 2)").default_value(0.1),
            Setting::value("hot_key_share", "MON-07: share of all decisions one key may take").default_value(0.5),
            Setting::value("hot_key_min_decisions", "MON-07: fewest decisions in a tick to judge").default_value(200),
            Setting::value("ttl_scan_limit", "MON-06: most keys scanned for a missing TTL per tick").default_value(1000),
        ],
        invariants: vec![
            inv(
                "MON-01",
                "node unreachable",
                "Every configured or registered node answers /healthz and heartbeats into the Redis registry",
                Severity::Critical,
            ),
            inv(
                "MON-02",
                "redis disconnected",
                "Redis answers the operator, and no node reports Redis errors or decides in fail-open/local-only mode",
                Severity::Critical,
            ),
            inv(
                "MON-03",
                "high latency",
                "Each node's p99 decision latency since the last tick stays under latency_p99_ms",
                Severity::Warning,
            ),
            inv(
                "MON-04",
                "counter drift",
                "Nodes agree on a key's count, and no node counts decisions locally that Redis never saw",
                Severity::Warning,
            ),
            inv(
                "MON-05",
                "ghost allowing",
                "For each key, the decisions allowed across all nodes in one window stay within its limit",
                Severity::Critical,
            ),
            inv(
                "MON-06",
                "stuck keys",
                "Every counter and registry key in the rl: namespace carries a TTL",
                Severity::Warning,
            ),
            inv(
                "MON-07",
                "hot key",
                "No single key takes more than hot_key_share of all decisions",
                Severity::Warning,
            ),
        ],
        actions: vec![
            action(
                "ACT-01",
                "reset-counter",
                "Delete a key's live window counters (in Redis) and the nodes' local fallback counts",
                vec![param("key", "the rate-limited key")],
                Risk::Medium,
            ),
            action(
                "ACT-02",
                "update-limit",
                "Set a key's limit (or `_default`) for every node",
                vec![
                    param("key", "the key, or _default"),
                    param("limit", "allowed cost per window"),
                    param("window_ms", "window length in ms"),
                ],
                Risk::Medium,
            ),
            action(
                "ACT-03",
                "block-key",
                "Deny every request for a key",
                vec![param("key", "the key to block")],
                Risk::High,
            ),
            action(
                "ACT-04",
                "unblock-key",
                "Stop denying a blocked key",
                vec![param("key", "the key to unblock")],
                Risk::Low,
            ),
            action(
                "ACT-05",
                "drain-node",
                "Make a node stop taking decisions (its clients fail over to the others)",
                vec![param("node", "node id, host:port or URL")],
                Risk::Medium,
            ),
            action(
                "ACT-06",
                "undrain-node",
                "Let a drained node take decisions again",
                vec![param("node", "node id, host:port or URL")],
                Risk::Low,
            ),
        ],
        failure_modes: vec![
            mode(
                "FM-01",
                "node crashed",
                "The node process is gone: nothing listens on its port and its registry entry has expired. The other nodes carry the load; restart the node.",
                vec![
                    sig("MON-01 fires for the node", on("MON-01"), 0.5),
                    sig(
                        "its port refuses connections",
                        ev("reachable", "false"),
                        0.4,
                    ),
                    sig(
                        "connection refused rather than a timeout",
                        ev("error_kind", "connect"),
                        0.3,
                    ),
                ],
                vec![
                    sig("the node still answers HTTP", ev("reachable", "true"), 0.8),
                    sig(
                        "the request timed out instead of being refused",
                        ev("error_kind", "timeout"),
                        0.4,
                    ),
                ],
                None,
                vec![],
            ),
            mode(
                "FM-02",
                "node hung",
                "The node's process exists but does not answer (paused, deadlocked, or CPU-starved): connections are accepted or time out.",
                vec![
                    sig("MON-01 fires for the node", on("MON-01"), 0.4),
                    sig("requests to it time out", ev("error_kind", "timeout"), 0.6),
                ],
                vec![
                    sig(
                        "connections are refused (process gone)",
                        ev("error_kind", "connect"),
                        0.6,
                    ),
                    sig("it answers HTTP", ev("reachable", "true"), 0.7),
                ],
                Some("ACT-05"),
                vec![kv("node", "{node}")],
            ),
            mode(
                "FM-03",
                "redis down",
                "The shared Redis is unreachable from everyone: every node fails open (or closed) and limits are no longer enforced cluster-wide.",
                vec![
                    sig(
                        "the operator cannot reach Redis",
                        ev("redis_reachable", "false"),
                        0.7,
                    ),
                    sig("MON-02 fires", on("MON-02"), 0.3),
                    sig(
                        "nodes decide in fail-open mode",
                        ev("mode", "fail-open"),
                        0.2,
                    ),
                ],
                vec![sig(
                    "the operator reaches Redis fine",
                    ev("redis_reachable", "true"),
                    0.8,
                )],
                None,
                vec![],
            ),
            mode(
                "FM-04",
                "node partitioned from redis",
                "One node cannot reach Redis while the operator and the other nodes can: it counts locally (fail-open), its heartbeat goes stale, and together with the others it admits more than the limit.",
                vec![
                    sig(
                        "a node reports Redis errors or local-only/fail-open mode",
                        on("MON-02"),
                        0.3,
                    ),
                    sig(
                        "Redis itself answers the operator",
                        ev("redis_reachable", "true"),
                        0.4,
                    ),
                    sig(
                        "the node counts decisions Redis never saw",
                        on("MON-04"),
                        0.3,
                    ),
                    sig(
                        "more than the limit allowed in one window",
                        on("MON-05"),
                        0.3,
                    ),
                    sig(
                        "the node answers HTTP but its heartbeat is stale",
                        ev("reachable", "true"),
                        0.2,
                    ),
                ],
                vec![sig(
                    "Redis is unreachable from the operator too",
                    ev("redis_reachable", "false"),
                    0.8,
                )],
                Some("ACT-05"),
                vec![kv("node", "{node}")],
            ),
            mode(
                "FM-05",
                "redis latency",
                "The path between nodes and Redis is slow (network latency, an overloaded or swapping Redis): every decision waits on it and p99 rises.",
                vec![
                    sig("p99 decision latency above threshold", on("MON-03"), 0.4),
                    sig(
                        "Redis calls themselves are slow",
                        ev("redis_slow", "true"),
                        0.6,
                    ),
                ],
                vec![sig(
                    "Redis calls are fast while decisions are slow",
                    ev("redis_slow", "false"),
                    0.6,
                )],
                None,
                vec![],
            ),
            mode(
                "FM-06",
                "node overload",
                "The node itself is the bottleneck (CPU, too many connections): decisions are slow while Redis answers quickly.",
                vec![
                    sig("p99 decision latency above threshold", on("MON-03"), 0.4),
                    sig("Redis calls are fast", ev("redis_slow", "false"), 0.5),
                ],
                vec![sig(
                    "Redis calls are slow too",
                    ev("redis_slow", "true"),
                    0.6,
                )],
                Some("ACT-05"),
                vec![kv("node", "{node}")],
            ),
            mode(
                "FM-07",
                "stuck key",
                "A counter key has no TTL (a write path that set the value without PEXPIRE, or a manual write): it never expires and its count leaks into every later window it matches.",
                vec![sig("MON-06 fires", on("MON-06"), 0.8)],
                vec![],
                Some("ACT-01"),
                vec![kv("key", "{key}")],
            ),
            mode(
                "FM-08",
                "hot key",
                "One key dominates the traffic (a misbehaving client, a retry storm, an attack). It is correctly limited, but it loads every node and Redis.",
                vec![sig("MON-07 fires", on("MON-07"), 0.8)],
                vec![sig(
                    "decisions are slow everywhere (overload, not one key)",
                    on("MON-03"),
                    0.2,
                )],
                Some("ACT-02"),
                vec![
                    kv("key", "{key}"),
                    kv("limit", "{limit}"),
                    kv("window_ms", "{window_ms}"),
                ],
            ),
            mode(
                "FM-09",
                "limit misconfiguration",
                "A key's limit is set to 0 or to a value far from its real traffic: everything is denied, or nothing is.",
                vec![sig("the limit in force is 0", ev("limit", "0"), 0.8)],
                vec![],
                Some("ACT-02"),
                vec![kv("key", "{key}")],
            ),
        ],
    }
}
