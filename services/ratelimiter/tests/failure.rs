//! Redis outages: fail-open and fail-closed behaviour, and recovery without a restart.

mod common;

use std::time::Duration;

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
