//! What this subject declares: settings, invariants (from the table in `invariants`),
//! actions and the failure modes diagnosis uses.

use crate::actions::id as act;
use crate::evidence::{
    ERROR_KIND, ErrorKind, KEY, LIMIT, MODE, NODE, REACHABLE, REDIS_REACHABLE, REDIS_SLOW,
    WINDOW_MS, placeholder,
};
use crate::invariants::{INVARIANTS, THRESHOLD_SETTINGS, Thresholds, id as mon};
use operator_sdk::prelude::*;
use ratelimiter_wire::Mode;

pub fn metadata() -> Metadata {
    let mut meta = Metadata::new("ratelimiter", env!("CARGO_PKG_VERSION"))
        .describe(
            "Distributed sliding-window rate limiter: nodes sharing one Redis \
             (settings: nodes=URL,URL,... redis=redis://host:port)",
        )
        .setting(
            Setting::origins(
                "nodes",
                "the nodes' base URLs, comma-separated (http://127.0.0.1:7001,...)",
            )
            .required(),
        )
        .setting(Setting::origin(
            "redis",
            "the shared Redis, read directly and read-only (redis://host:port)",
        ))
        .setting(Setting::origin(
            "prometheus",
            "a Prometheus that scrapes the nodes (optional; their /metrics suffice)",
        ));
    for s in THRESHOLD_SETTINGS {
        let mut setting = Setting::value(s.name, s.description);
        if let Some(d) = Thresholds::default_of(s.name) {
            setting = setting.default_value(d);
        }
        meta = meta.setting(setting);
    }
    meta = meta.setting(
        Setting::value(
            "ttl_scan_limit",
            "MON-06: most keys scanned for a missing TTL per tick",
        )
        .default_value(crate::observe::TTL_SCAN_LIMIT),
    );
    for inv in INVARIANTS {
        meta = meta.invariant(inv.info());
    }
    let meta = actions().into_iter().fold(meta, Metadata::action);
    failure_modes()
        .into_iter()
        .fold(meta, Metadata::failure_mode)
}

fn actions() -> Vec<ActionInfo> {
    vec![
        Action::new(act::RESET_COUNTER, "reset-counter")
            .describe("Delete a key's live window counters (in Redis) and the nodes' local fallback counts")
            .param("key", "the rate-limited key")
            .mutating(Risk::Medium),
        Action::new(act::UPDATE_LIMIT, "update-limit")
            .describe("Set a key's limit (or `_default`) for every node")
            .param("key", "the key, or _default")
            .param("limit", "allowed cost per window")
            .param("window_ms", "window length in ms")
            .mutating(Risk::Medium),
        Action::new(act::BLOCK_KEY, "block-key")
            .describe("Deny every request for a key")
            .param("key", "the key to block")
            .mutating(Risk::High),
        Action::new(act::UNBLOCK_KEY, "unblock-key")
            .describe("Stop denying a blocked key")
            .param("key", "the key to unblock")
            .mutating(Risk::Low),
        Action::new(act::DRAIN_NODE, "drain-node")
            .describe("Make a node stop taking decisions (its clients fail over to the others)")
            .param("node", "node id, host:port or URL")
            .mutating(Risk::Medium),
        Action::new(act::UNDRAIN_NODE, "undrain-node")
            .describe("Let a drained node take decisions again")
            .param("node", "node id, host:port or URL")
            .mutating(Risk::Low),
    ]
}

fn failure_modes() -> Vec<FailureMode> {
    let on = Check::invariant;
    fn ev(key: &str, value: impl ToString) -> SignalCheck {
        Check::evidence(key, value)
    }
    let node = placeholder(NODE);
    let key = placeholder(KEY);
    let (connect, timeout) = (ErrorKind::Connect.as_str(), ErrorKind::Timeout.as_str());
    vec![
        FailureMode::new("FM-01", "node crashed")
            .describe("The node process is gone: nothing listens on its port and its registry entry has expired. The other nodes carry the load; restart the node.")
            .signal_for("MON-01 fires for the node", on(mon::NODE_UNREACHABLE), 0.5)
            .signal_for("its port refuses connections", ev(REACHABLE, false), 0.4)
            .signal_for("connection refused rather than a timeout", ev(ERROR_KIND, connect), 0.3)
            .signal_against("the node still answers HTTP", ev(REACHABLE, true), 0.8)
            .signal_against("the request timed out instead of being refused", ev(ERROR_KIND, timeout), 0.4),
        FailureMode::new("FM-02", "node hung")
            .describe("The node's process exists but does not answer (paused, deadlocked, or CPU-starved): connections are accepted or time out.")
            .signal_for("MON-01 fires for the node", on(mon::NODE_UNREACHABLE), 0.4)
            .signal_for("requests to it time out", ev(ERROR_KIND, timeout), 0.6)
            .signal_against("connections are refused (process gone)", ev(ERROR_KIND, connect), 0.6)
            .signal_against("it answers HTTP", ev(REACHABLE, true), 0.7)
            .suggests(act::DRAIN_NODE, &[("node", &node)]),
        FailureMode::new("FM-03", "redis down")
            .describe("The shared Redis is unreachable from everyone: every node fails open (or closed) and limits are no longer enforced cluster-wide.")
            .signal_for("the operator cannot reach Redis", ev(REDIS_REACHABLE, false), 0.7)
            .signal_for("MON-02 fires", on(mon::REDIS_DISCONNECTED), 0.3)
            .signal_for("nodes decide in fail-open mode", ev(MODE, Mode::FailOpen.as_str()), 0.2)
            .signal_against("the operator reaches Redis fine", ev(REDIS_REACHABLE, true), 0.8),
        FailureMode::new("FM-04", "node partitioned from redis")
            .describe("One node cannot reach Redis while the operator and the other nodes can: it counts locally (fail-open), its heartbeat goes stale, and together with the others it admits more than the limit.")
            .signal_for("a node reports Redis errors or local-only/fail-open mode", on(mon::REDIS_DISCONNECTED), 0.3)
            .signal_for("Redis itself answers the operator", ev(REDIS_REACHABLE, true), 0.4)
            .signal_for("the node counts decisions Redis never saw", on(mon::COUNTER_DRIFT), 0.3)
            .signal_for("more than the limit allowed in one window", on(mon::GHOST_ALLOWING), 0.3)
            .signal_for("the node answers HTTP but its heartbeat is stale", ev(REACHABLE, true), 0.2)
            .signal_against("Redis is unreachable from the operator too", ev(REDIS_REACHABLE, false), 0.8)
            .suggests(act::DRAIN_NODE, &[("node", &node)]),
        FailureMode::new("FM-05", "redis latency")
            .describe("The path between nodes and Redis is slow (network latency, an overloaded or swapping Redis): every decision waits on it and p99 rises.")
            .signal_for("p99 decision latency above threshold", on(mon::HIGH_LATENCY), 0.4)
            .signal_for("Redis calls themselves are slow", ev(REDIS_SLOW, true), 0.6)
            .signal_against("Redis calls are fast while decisions are slow", ev(REDIS_SLOW, false), 0.6),
        FailureMode::new("FM-06", "node overload")
            .describe("The node itself is the bottleneck (CPU, too many connections): decisions are slow while Redis answers quickly.")
            .signal_for("p99 decision latency above threshold", on(mon::HIGH_LATENCY), 0.4)
            .signal_for("Redis calls are fast", ev(REDIS_SLOW, false), 0.5)
            .signal_against("Redis calls are slow too", ev(REDIS_SLOW, true), 0.6)
            .suggests(act::DRAIN_NODE, &[("node", &node)]),
        FailureMode::new("FM-07", "stuck key")
            .describe("A counter key has no TTL (a write path that set the value without PEXPIRE, or a manual write): it never expires and its count leaks into every later window it matches.")
            .signal_for("MON-06 fires", on(mon::STUCK_KEYS), 0.8)
            .suggests(act::RESET_COUNTER, &[("key", &key)]),
        FailureMode::new("FM-08", "hot key")
            .describe("One key dominates the traffic (a misbehaving client, a retry storm, an attack). It is correctly limited, but it loads every node and Redis.")
            .signal_for("MON-07 fires", on(mon::HOT_KEY), 0.8)
            .signal_against("decisions are slow everywhere (overload, not one key)", on(mon::HIGH_LATENCY), 0.2)
            .suggests(
                act::UPDATE_LIMIT,
                &[
                    ("key", &key),
                    ("limit", &placeholder(LIMIT)),
                    ("window_ms", &placeholder(WINDOW_MS)),
                ],
            ),
        FailureMode::new("FM-09", "limit misconfiguration")
            .describe("A key's limit is set to 0 or to a value far from its real traffic: everything is denied, or nothing is.")
            .signal_for("the limit in force is 0", ev(LIMIT, 0), 0.8)
            .suggests(act::UPDATE_LIMIT, &[("key", &key)]),
    ]
}
