//! Redis outages: fail-open and fail-closed behaviour, recovery without a restart, a slow Redis
//! (`kind="timeout"`), a Redis that answers with an error (`kind="server"`, the node stays
//! normal), and the management routes' bounded 503 while Redis is gone.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use testkit::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_decides_locally_and_recovers_when_redis_returns() {
    let mut redis = Redis::start();
    let port = redis.port;
    let node = Node::start(&redis.url(), "fo-1", &["--policy", "fail-open"], true).await;
    let http = client();
    put(
        &http,
        &node.url,
        "/v1/limits/fo",
        json!({"limit": 3, "window_ms": 60000}),
    )
    .await;
    let (s, v) = check(&http, &node.url, "fo").await;
    assert_eq!(
        (s, v["mode"].clone(), v["degraded"].clone()),
        (200, json!("normal"), json!(false))
    );

    redis.kill();
    wait_until(
        Duration::from_secs(5),
        "healthz reports the outage",
        || async { get(&http, &node.url, "/healthz").await.0 == 503 },
    )
    .await;
    let (_, h) = get(&http, &node.url, "/healthz").await;
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["mode"], "fail-open");
    assert_ne!(h["redis"], "ok");

    // Local counting starts from zero against the cached limit: 3 more are allowed although
    // Redis already counted one. This is the drift the operator has to spot.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (s, v) = check(&http, &node.url, "fo").await;
        assert_eq!(v["mode"], "fail-open");
        assert_eq!(v["degraded"], true);
        assert_eq!(v["limit"], 3);
        statuses.push(s);
    }
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    let text = metrics_text(&http, &node.url).await;
    assert_eq!(
        metric(&text, "ratelimiter_decisions_total{result=\"failed_open\"}"),
        4.0
    );
    assert_eq!(
        metric(
            &text,
            "ratelimiter_fallback_decisions_total{outcome=\"allowed\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "ratelimiter_fallback_decisions_total{outcome=\"denied\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "ratelimiter_decisions_total{result=\"allowed\"}"),
        1.0
    );
    assert_eq!(metric(&text, "ratelimiter_mode{mode=\"fail_open\"}"), 1.0);
    assert_eq!(metric(&text, "ratelimiter_redis_up"), 0.0);
    let (s, view) = get(&http, &node.url, "/v1/counters/fo").await;
    assert_eq!(s, 200);
    assert!(view["redis"].is_null());
    assert_eq!(view["local"]["current"], 3);
    // Management calls that need Redis say so instead of hanging.
    let (s, v) = get(&http, &node.url, "/v1/nodes").await;
    assert_eq!(s, 503);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("redis unavailable"))
    );

    // Redis comes back on the same port (empty: no persistence): the node recovers by itself.
    let _redis = Redis::start_on(port);
    wait_until(Duration::from_secs(10), "node back to normal", || async {
        let (s, h) = get(&http, &node.url, "/healthz").await;
        s == 200 && h["mode"] == "normal"
    })
    .await;
    let (s, v) = check(&http, &node.url, "fo").await;
    assert_eq!(
        (s, v["mode"].clone(), v["degraded"].clone()),
        (200, json!("normal"), json!(false))
    );
    let text = metrics_text(&http, &node.url).await;
    assert_eq!(metric(&text, "ratelimiter_redis_up"), 1.0);
    assert_eq!(metric(&text, "ratelimiter_mode{mode=\"normal\"}"), 1.0);
    assert!(metric(&text, "ratelimiter_redis_errors_total{kind=\"connection\"}") >= 1.0);
    wait_until(Duration::from_secs(3), "node re-registered", || async {
        let (_, v) = get(&http, &node.url, "/v1/nodes").await;
        v["nodes"].as_array().is_some_and(|n| n.len() == 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_with_503_and_recovers() {
    let mut redis = Redis::start();
    let port = redis.port;
    let node = Node::start(&redis.url(), "fc-1", &["--policy", "fail-closed"], true).await;
    let http = client();
    assert_eq!(check(&http, &node.url, "fc").await.0, 200);
    redis.kill();
    wait_until(
        Duration::from_secs(5),
        "healthz reports the outage",
        || async { get(&http, &node.url, "/healthz").await.0 == 503 },
    )
    .await;
    for _ in 0..3 {
        let (s, v) = check(&http, &node.url, "fc").await;
        assert_eq!(s, 503);
        assert_eq!(
            v,
            json!({"error": "redis unavailable", "mode": "fail-closed"})
        );
    }
    let text = metrics_text(&http, &node.url).await;
    assert_eq!(
        metric(
            &text,
            "ratelimiter_decisions_total{result=\"failed_closed\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(&text, "ratelimiter_decisions_total{result=\"failed_open\"}"),
        0.0
    );
    assert_eq!(metric(&text, "ratelimiter_mode{mode=\"fail_closed\"}"), 1.0);
    let _redis = Redis::start_on(port);
    wait_until(Duration::from_secs(10), "node back to normal", || async {
        check(&http, &node.url, "fc").await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_without_redis_serves_degraded_then_recovers() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let node = Node::start(&url, "late-1", &[], false).await;
    let http = client();
    let (s, h) = get(&http, &node.url, "/healthz").await;
    assert_eq!((s, h["mode"].clone()), (503, json!("fail-open")));
    let (s, v) = check(&http, &node.url, "late").await;
    assert_eq!(
        (s, v["mode"].clone(), v["limit"].clone()),
        (200, json!("fail-open"), json!(100))
    );
    let _redis = Redis::start_on(port);
    wait_until(Duration::from_secs(10), "node healthy", || async {
        get(&http, &node.url, "/healthz").await.0 == 200
    })
    .await;
    let (s, v) = check(&http, &node.url, "late").await;
    assert_eq!((s, v["mode"].clone()), (200, json!("normal")));
}

/// The node's Redis timeout in the tests below: short, so a slow Redis is noticed quickly.
const REDIS_TIMEOUT_MS: &str = "200";
/// Longer than any answer may take when Redis is slow or gone: a request still open after
/// this counts as hung. It bounds a hang; it is not a speed requirement.
const HANG: Duration = Duration::from_secs(5);

/// `count - bucket{le}` of a histogram: the samples above `le` seconds.
fn above(text: &str, histogram: &str, le: &str) -> f64 {
    metric(text, &format!("{histogram}_count"))
        - metric(text, &format!("{histogram}_bucket{{le=\"{le}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_counts_as_timeout_and_the_node_degrades_until_a_probe_succeeds() {
    let redis = Redis::start();
    let node = Node::start(
        &redis.url(),
        "slow-1",
        &[
            "--policy",
            "fail-open",
            "--redis-timeout-ms",
            REDIS_TIMEOUT_MS,
        ],
        true,
    )
    .await;
    let http = client();
    let (s, v) = check(&http, &node.url, "slow").await;
    assert_eq!((s, v["mode"].clone()), (200, json!("normal")), "{v}");
    let before = metrics_text(&http, &node.url).await;
    let kind = |text: &str, k: &str| {
        metric(
            text,
            &format!("ratelimiter_redis_errors_total{{kind=\"{k}\"}}"),
        )
    };

    // Redis stops answering (SIGSTOP): connections stay open, replies never come, so every
    // call runs into the node's 200 ms timeout.
    redis.pause();
    let (s, v) = check(&http, &node.url, "slow").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["mode"].clone(), v["degraded"].clone()),
        (json!("fail-open"), json!(true)),
        "a decision while Redis is slow follows the policy: {v}"
    );
    wait_until(HANG, "healthz reports the slow Redis", || async {
        let (s, h) = get(&http, &node.url, "/healthz").await;
        s == 503 && h["mode"] == "fail-open"
    })
    .await;
    let during = metrics_text(&http, &node.url).await;
    assert!(
        kind(&during, "timeout") > kind(&before, "timeout"),
        "no kind=\"timeout\" counted:\n{during}"
    );
    for k in ["server", "response"] {
        assert_eq!(
            kind(&during, k),
            kind(&before, k),
            "kind={k} counted for a slow Redis"
        );
    }
    // The calls that timed out took at least the timeout, and the histogram shows them.
    let hist = "ratelimiter_redis_duration_seconds";
    assert!(
        above(&during, hist, "0.1") > above(&before, hist, "0.1"),
        "no Redis call above 100 ms in {hist}:\n{during}"
    );
    assert_eq!(metric(&during, "ratelimiter_mode{mode=\"fail_open\"}"), 1.0);
    assert_eq!(metric(&during, "ratelimiter_redis_up"), 0.0);

    // Redis answers again: a probe flips the node back without a restart.
    redis.resume();
    wait_until(HANG, "node back to normal", || async {
        let (s, h) = get(&http, &node.url, "/healthz").await;
        s == 200 && h["mode"] == "normal"
    })
    .await;
    let (s, v) = check(&http, &node.url, "slow").await;
    assert_eq!((s, v["mode"].clone()), (200, json!("normal")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_error_counts_as_server_and_the_node_stays_normal() {
    let redis = Redis::start();
    let open = Node::start(&redis.url(), "err-open", &["--policy", "fail-open"], true).await;
    let closed = Node::start(
        &redis.url(),
        "err-closed",
        &["--policy", "fail-closed"],
        true,
    )
    .await;
    let http = client();
    const W: u64 = 3_600_000;
    let (s, _) = put(
        &http,
        &open.url,
        "/v1/limits/wrongtype",
        json!({"limit": 10, "window_ms": W}),
    )
    .await;
    assert_eq!(s, 200);
    // Something else wrote a list where the counter of `wrongtype` goes (this window and
    // the next, in case the hour turns): INCRBY on it fails with WRONGTYPE.
    let index = redis.time_ms().await / W;
    for i in [index, index + 1] {
        let key = format!("rl:w:wrongtype:{i}");
        let _: i64 = redis_cmd(&redis, &["RPUSH", &key, "not-a-counter"]).await;
    }
    let server = |text: &str| metric(text, "ratelimiter_redis_errors_total{kind=\"server\"}");
    let before_open = metrics_text(&http, &open.url).await;
    let before_closed = metrics_text(&http, &closed.url).await;

    // The policy applies to the failing request: fail-open decides it locally...
    for _ in 0..3 {
        let (s, v) = check(&http, &open.url, "wrongtype").await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (v["mode"].clone(), v["degraded"].clone()),
            (json!("fail-open"), json!(true)),
            "{v}"
        );
    }
    // ...and fail-closed refuses it.
    let (s, v) = check(&http, &closed.url, "wrongtype").await;
    assert_eq!(
        (s, v),
        (
            503,
            json!({"error": "redis unavailable", "mode": "fail-closed"})
        )
    );

    // Each failed call counted once as kind="server", and neither node left normal mode.
    let after_open = metrics_text(&http, &open.url).await;
    let after_closed = metrics_text(&http, &closed.url).await;
    assert_eq!(
        server(&after_open) - server(&before_open),
        3.0,
        "{after_open}"
    );
    assert_eq!(
        server(&after_closed) - server(&before_closed),
        1.0,
        "{after_closed}"
    );
    for (node, text) in [(&open, &after_open), (&closed, &after_closed)] {
        assert_eq!(
            metric(text, "ratelimiter_mode{mode=\"normal\"}"),
            1.0,
            "{} left normal mode",
            node.id
        );
        assert_eq!(metric(text, "ratelimiter_redis_up"), 1.0, "{}", node.id);
        let (s, h) = get(&http, &node.url, "/healthz").await;
        assert_eq!(
            (s, h["status"].clone(), h["mode"].clone()),
            (200, json!("ok"), json!("normal")),
            "{}: {h}",
            node.id
        );
        // Other keys are still decided through Redis.
        let (s, v) = check(&http, &node.url, "another-key").await;
        assert_eq!(
            (s, v["mode"].clone(), v["degraded"].clone()),
            (200, json!("normal"), json!(false)),
            "{}: {v}",
            node.id
        );
    }
    assert_eq!(
        metric(
            &after_open,
            "ratelimiter_decisions_total{result=\"failed_open\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &after_closed,
            "ratelimiter_decisions_total{result=\"failed_closed\"}"
        ),
        1.0
    );
}

/// Every management route that needs Redis, with a body where it takes one.
const MANAGEMENT: &[(&str, &str, &str)] = &[
    ("GET", "/v1/nodes", ""),
    ("GET", "/v1/limits", ""),
    ("PUT", "/v1/limits/gone", r#"{"limit":5,"window_ms":1000}"#),
    ("POST", "/v1/counters/gone/reset", "{}"),
    ("POST", "/v1/keys/gone/block", "{}"),
    ("POST", "/v1/keys/gone/unblock", "{}"),
];

/// Sends every management route at once and checks each answers 503 `redis unavailable`
/// before [`HANG`].
async fn management_routes_refuse(http: &reqwest::Client, base: &str, when: &str) {
    let mut calls = Vec::new();
    for (method, path, body) in MANAGEMENT {
        let (http, url, when) = (http.clone(), format!("{base}{path}"), when.to_string());
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let sent = http
                .request(m, url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .timeout(HANG)
                .send()
                .await;
            let resp = sent.unwrap_or_else(|e| {
                panic!(
                    "{when}: {method} {path} did not answer within {HANG:?} ({:?}): {e}",
                    started.elapsed()
                )
            });
            let status = resp.status().as_u16();
            let v: serde_json::Value = resp.json().await.expect("JSON error body");
            assert_eq!(status, 503, "{when}: {method} {path}: {v}");
            assert!(
                v["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("redis unavailable")),
                "{when}: {method} {path}: {v}"
            );
        }));
    }
    for c in calls {
        if let Err(e) = c.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_routes_answer_503_without_hanging_when_redis_is_gone() {
    let mut redis = Redis::start();
    let node = Node::start(
        &redis.url(),
        "gone-1",
        &["--redis-timeout-ms", REDIS_TIMEOUT_MS],
        true,
    )
    .await;
    let http = client();
    for (method, path, body) in MANAGEMENT {
        let (s, v) = send(&http, method, &node.url, path, body).await;
        assert_eq!(s, 200, "{method} {path} with Redis up: {v}");
    }

    // Redis hangs: the node still believes it is up, so the routes reach Redis and must be
    // cut off by the node's own timeout.
    redis.pause();
    management_routes_refuse(&http, &node.url, "redis paused, first calls").await;
    // Once the probe has noticed, they refuse without trying.
    wait_until(HANG, "healthz reports the outage", || async {
        get(&http, &node.url, "/healthz").await.0 == 503
    })
    .await;
    management_routes_refuse(&http, &node.url, "redis paused, node degraded").await;
    redis.resume();
    wait_until(HANG, "node back to normal", || async {
        get(&http, &node.url, "/healthz").await.0 == 200
    })
    .await;
    let (s, v) = get(&http, &node.url, "/v1/limits").await;
    assert_eq!(s, 200, "{v}");

    // Redis is gone for good: connections are refused.
    redis.kill();
    management_routes_refuse(&http, &node.url, "redis killed").await;
}
