//! The wire types against the service's real answers: a real `redis-server` and real
//! `ratelimiter` nodes (the workspace's binary), driven through normal, fail-open,
//! fail-closed, local-only and draining states. Every answer must decode into its wire
//! type and encode back to the same JSON, so a field the service adds, drops, renames or
//! retypes fails here (unknown fields would be dropped on the way back, missing ones fail
//! the decode). The Redis key schema is checked against what the nodes really write.
//!
//! Needs `redis-server` and the `ratelimiter` binary in the same target profile:
//! `cargo test --workspace`, or `cargo build -p ratelimiter` before
//! `cargo test -p ratelimiter-wire`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ratelimiter_wire::{
    Clock, CounterList, CounterView, Health, HealthStatus, Limit, Mode, NodeList, NodeRecord,
    Policy, keys, routes,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use testkit::http::http;
use testkit::ratelimiter::Node;
use testkit::{Redis, wait_for};

const WAIT: Duration = Duration::from_secs(15);

/// Decodes `body` (the answer of `what`) as `T` and checks that `T` encodes back to the
/// same JSON value, field for field.
fn same_shape<T: DeserializeOwned + Serialize>(what: &str, body: &str) -> T {
    let raw: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    let decoded: T = serde_json::from_str(body).unwrap_or_else(|e| {
        panic!(
            "{what}: does not decode as {} ({e}): {body}",
            std::any::type_name::<T>()
        )
    });
    let back = serde_json::to_value(&decoded).expect("wire types encode");
    assert_eq!(
        back,
        raw,
        "{what}: {} loses or changes fields (left: what it encodes, right: the answer)",
        std::any::type_name::<T>()
    );
    decoded
}

/// GET `path` on `node`, expecting `status`.
fn get(node: &Node, path: &str, status: u16) -> String {
    let (got, body) = http("GET", &format!("{}{path}", node.url()), "")
        .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", node.id));
    assert_eq!(got, status, "GET {path} on {}: {body}", node.id);
    body
}

fn send(node: &Node, method: &str, path: &str, body: &str) -> (u16, String) {
    http(method, &format!("{}{path}", node.url()), body)
        .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", node.id))
}

/// One Redis command's reply: a bulk string's content, an integer or status as text, or
/// None for nil. (testkit's `Redis::command` returns only the first reply line.)
fn redis(redis: &Redis, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", redis.port)).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let line = line.trim_end();
    match line.split_at(1) {
        ("$", "-1") => None,
        ("$", len) => {
            let len: usize = len.parse().expect("bulk length");
            let mut buf = vec![0; len + 2];
            r.read_exact(&mut buf).unwrap();
            buf.truncate(len);
            Some(String::from_utf8(buf).expect("utf-8 value"))
        }
        (":" | "+", rest) => Some(rest.to_string()),
        _ => panic!("redis {args:?}: {line}"),
    }
}

fn check(node: &Node, key: &str, times: usize) {
    for _ in 0..times {
        let (status, body) = send(node, "POST", "/v1/check", &format!(r#"{{"key":"{key}"}}"#));
        assert!(status == 200 || status == 429, "check: {status} {body}");
    }
}

fn health(node: &Node, status: u16) -> Health {
    same_shape(
        &format!("{} on {}", routes::HEALTHZ, node.id),
        &get(node, routes::HEALTHZ, status),
    )
}

#[test]
fn every_answer_a_reader_uses_decodes_into_the_wire_types_and_back() {
    let mut redis_server = Redis::start();
    let a = Node::start(&redis_server.url(), "node-a", &["--chaos"]);
    let b = Node::start(&redis_server.url(), "node-b", &["--policy", "fail-closed"]);

    // Limits: the body readers send is the wire type, and it lands in `rl:limits`.
    let limit = Limit {
        limit: 5,
        window_ms: 60_000,
    };
    let body = serde_json::to_string(&limit).unwrap();
    let (status, answer) = send(&a, "PUT", &routes::limit("user-42"), &body);
    assert_eq!(status, 200, "{answer}");
    let stored = redis(&redis_server, &["HGET", keys::LIMITS_KEY, "user-42"]).expect("stored");
    assert_eq!(same_shape::<Limit>("rl:limits user-42", &stored), limit);
    let (status, answer) = send(&a, "PUT", &routes::limit(keys::DEFAULT_FIELD), &body);
    assert_eq!(status, 200, "{answer}");
    assert!(
        redis(
            &redis_server,
            &["HGET", keys::LIMITS_KEY, keys::DEFAULT_FIELD]
        )
        .is_some()
    );
    let (status, answer) = send(&a, "POST", &routes::block("blocked-1"), "");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        redis(
            &redis_server,
            &["SISMEMBER", keys::BLOCKED_KEY, "blocked-1"]
        )
        .as_deref(),
        Some("1")
    );

    check(&a, "user-42", 7);
    check(&b, "user-42", 2);

    // Healthy: with and without chaos switches.
    let h = health(&a, 200);
    assert_eq!(
        (h.status, h.mode, h.policy),
        (HealthStatus::Ok, Mode::Normal, Policy::FailOpen)
    );
    assert!(h.chaos.is_some(), "node-a runs with --chaos");
    let h = health(&b, 200);
    assert_eq!(h.policy, Policy::FailClosed);
    assert!(h.chaos.is_none());

    // Counter views, listed and single, and the counter key they describe.
    let list: CounterList = same_shape("/v1/counters", &get(&a, routes::COUNTERS, 200));
    assert_eq!(list.node, "node-a");
    let view = list
        .keys
        .iter()
        .find(|v| v.key == "user-42")
        .unwrap_or_else(|| panic!("user-42 in node-a's top keys: {list:?}"));
    assert_eq!((view.limit, view.window_ms), (5, 60_000));
    assert_eq!(view.clock, Clock::Redis);
    assert_eq!(view.blocked, Some(false));
    let counted = view.redis.as_ref().expect("a view through Redis").current;
    // No decision since the view: the window's key still holds what the view read, even
    // if the window has turned over meanwhile.
    let in_redis = redis(
        &redis_server,
        &["GET", &keys::counter("user-42", view.window_index)],
    );
    assert_eq!(
        in_redis.as_deref().unwrap_or("0"),
        counted.to_string(),
        "{} holds the view's count",
        keys::counter("user-42", view.window_index)
    );
    let pttl = redis(
        &redis_server,
        &["PTTL", &keys::counter("user-42", view.window_index)],
    );
    if counted > 0 {
        let ttl: i64 = pttl.unwrap().parse().unwrap();
        assert!(ttl > 0, "counter keys carry a TTL ({ttl})");
    }
    assert_eq!(
        keys::counter_owner(&keys::counter("user-42", view.window_index)),
        Some("user-42")
    );
    let single: CounterView = same_shape(
        "/v1/counters/{key}",
        &get(&a, &routes::counter("user-42"), 200),
    );
    assert_eq!(single.key, "user-42");

    // The registry, through a node and in Redis.
    let nodes: NodeList = same_shape("/v1/nodes", &get(&a, routes::NODES, 200));
    let ids: Vec<&str> = nodes.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["node-a", "node-b"]);
    for n in &nodes.nodes {
        let raw = redis(&redis_server, &["GET", &keys::node(&n.id)])
            .unwrap_or_else(|| panic!("{} exists", keys::node(&n.id)));
        let record: NodeRecord = same_shape(&keys::node(&n.id), &raw);
        assert_eq!(record.id, n.id);
        assert_eq!(
            record.addr,
            format!(
                "127.0.0.1:{}",
                if n.id == "node-a" { a.port } else { b.port }
            )
        );
        let ttl: i64 = redis(&redis_server, &["PTTL", &keys::node(&n.id)])
            .unwrap()
            .parse()
            .unwrap();
        assert!(ttl > 0, "registry entries carry a TTL ({ttl})");
    }

    // Local-only chaos on node-a: its views come from its own clock.
    let (status, answer) = send(&a, "POST", "/v1/chaos", r#"{"local_only":true}"#);
    assert_eq!(status, 200, "{answer}");
    let h = health(&a, 503);
    assert_eq!(
        (h.status, h.mode),
        (HealthStatus::Degraded, Mode::LocalOnly)
    );
    check(&a, "user-42", 3);
    let list: CounterList =
        same_shape("/v1/counters (local-only)", &get(&a, routes::COUNTERS, 200));
    let view = list.keys.iter().find(|v| v.key == "user-42").unwrap();
    assert_eq!((view.clock, view.blocked), (Clock::Local, None));
    assert!(view.redis.is_none());
    assert!(view.local.current > 0, "{view:?}");
    let (status, _) = send(&a, "POST", "/v1/chaos", "{}");
    assert_eq!(status, 200);

    // Draining.
    let (status, answer) = send(&b, "POST", routes::DRAIN, "");
    assert_eq!(status, 200, "{answer}");
    let h = health(&b, 200);
    assert_eq!((h.status, h.mode), (HealthStatus::Draining, Mode::Draining));
    let (status, _) = send(&b, "POST", routes::UNDRAIN, "");
    assert_eq!(status, 200);

    // Redis gone: fail-open and fail-closed, as /healthz and the views say it.
    redis_server.kill();
    let h = wait_for("node-a to notice Redis is gone", WAIT, || {
        let (status, body) = send(&a, "GET", routes::HEALTHZ, "");
        (status == 503).then(|| same_shape::<Health>("/healthz (fail-open)", &body))
    });
    assert_eq!((h.status, h.mode), (HealthStatus::Degraded, Mode::FailOpen));
    assert_ne!(h.redis, "ok");
    let h = wait_for("node-b to notice Redis is gone", WAIT, || {
        let (status, body) = send(&b, "GET", routes::HEALTHZ, "");
        (status == 503).then(|| same_shape::<Health>("/healthz (fail-closed)", &body))
    });
    assert_eq!(h.mode, Mode::FailClosed);
    check(&a, "user-42", 2);
    let list: CounterList = same_shape("/v1/counters (fail-open)", &get(&a, routes::COUNTERS, 200));
    assert!(list.keys.iter().all(|v| v.redis.is_none()), "{list:?}");
    // The registry needs Redis: 503, which readers treat as "ask another node".
    get(&a, routes::NODES, 503);
}
