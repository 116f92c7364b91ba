//! Management API, input validation, chaos switches, `Retry-After`, and what a clean
//! shutdown does to the registry.

mod common;

use std::time::Duration;

use common::*;
use ratelimiter::store::{NODE_PREFIX, NODE_TTL_MS};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_block_unblock_and_drain() {
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "mgmt-a", &[], true).await;
    let b = Node::start(&redis.url(), "mgmt-b", &[], true).await;
    let http = client();
    put(
        &http,
        &a.url,
        "/v1/limits/m",
        json!({"limit": 2, "window_ms": 60000}),
    )
    .await;
    assert_eq!(check(&http, &a.url, "m").await.0, 200);
    assert_eq!(check(&http, &b.url, "m").await.0, 200);
    let (s, v) = check(&http, &a.url, "m").await;
    assert_eq!(s, 429);
    assert_eq!(v["allowed"], false);

    // Reset through the other node clears the shared counter.
    let (s, v) = post(&http, &b.url, "/v1/counters/m/reset", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deleted"], 1);
    let (s, v) = check(&http, &a.url, "m").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["remaining"], 1);
    let (_, view) = get(&http, &a.url, "/v1/counters/m").await;
    assert_eq!(view["redis"]["current"], 1);

    // A blocked key is denied everywhere for a full window, whatever its count.
    let (s, v) = post(&http, &a.url, "/v1/keys/m/block", json!({})).await;
    assert_eq!((s, v["blocked"].clone()), (200, json!(true)));
    let (s, v) = check(&http, &b.url, "m").await;
    assert_eq!(s, 429);
    assert_eq!(v["retry_after_ms"], 60000);
    assert_eq!(v["remaining"], 0);
    let (_, view) = get(&http, &b.url, "/v1/counters/m").await;
    assert_eq!(view["blocked"], true);
    let (s, _) = post(&http, &b.url, "/v1/keys/m/unblock", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(check(&http, &a.url, "m").await.0, 200);

    // Draining node b: it refuses decisions and says so in healthz and the registry.
    let (s, v) = post(&http, &b.url, "/v1/drain", json!({})).await;
    assert_eq!((s, v["mode"].clone()), (200, json!("draining")));
    let (s, v) = check(&http, &b.url, "other").await;
    assert_eq!(s, 503);
    assert_eq!(v["error"], "draining");
    let (_, h) = get(&http, &b.url, "/healthz").await;
    assert_eq!(h["status"], "draining");
    wait_until(
        Duration::from_secs(5),
        "registry shows b draining",
        || async {
            let (_, v) = get(&http, &a.url, "/v1/nodes").await;
            v["nodes"].as_array().is_some_and(|ns| {
                ns.iter()
                    .any(|n| n["id"] == "mgmt-b" && n["mode"] == "draining")
            })
        },
    )
    .await;
    assert_eq!(check(&http, &a.url, "other").await.0, 200);
    let text = metrics_text(&http, &b.url).await;
    assert_eq!(metric(&text, "ratelimiter_mode{mode=\"draining\"}"), 1.0);
    assert_eq!(metric(&text, "ratelimiter_mode{mode=\"normal\"}"), 0.0);

    post(&http, &b.url, "/v1/undrain", json!({})).await;
    assert_eq!(check(&http, &b.url, "other").await.0, 200);
    let (_, v) = get(&http, &a.url, "/v1/nodes").await;
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    for n in nodes {
        for f in [
            "id",
            "addr",
            "mode",
            "policy",
            "last_heartbeat_ms",
            "age_ms",
            "started_ms",
        ] {
            assert!(!n[f].is_null(), "node entry lacks {f}: {n}");
        }
        // The entry exists, so its heartbeat is younger than the entry's TTL; a larger
        // age would mean last_heartbeat_ms is not on the Redis clock.
        let age = n["age_ms"].as_u64().expect("age_ms");
        assert!(
            age <= NODE_TTL_MS,
            "age_ms {age} above the {NODE_TTL_MS} ms TTL: {n}"
        );
        assert!(
            n["started_ms"].as_u64() <= n["last_heartbeat_ms"].as_u64(),
            "{n}"
        );
    }
}

fn is_json_error(v: &Value, needle: &str) -> bool {
    v["error"].as_str().is_some_and(|e| e.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_4xx_naming_the_problem() {
    let redis = Redis::start();
    let n = Node::start(&redis.url(), "bad-1", &[], true).await;
    let http = client();
    let long = "k".repeat(257);
    let exact = "k".repeat(256);
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "POST",
            "/v1/check".into(),
            "{\"key\":".into(),
            400,
            "malformed JSON",
        ),
        ("POST", "/v1/check".into(), "".into(), 400, "malformed JSON"),
        (
            "POST",
            "/v1/check".into(),
            "[]".into(),
            400,
            "invalid request body",
        ),
        (
            "POST",
            "/v1/check".into(),
            "{}".into(),
            400,
            "missing field `key`",
        ),
        (
            "POST",
            "/v1/check".into(),
            "{\"key\":\"\"}".into(),
            400,
            "must not be empty",
        ),
        (
            "POST",
            "/v1/check".into(),
            json!({"key": long}).to_string(),
            400,
            "257 bytes",
        ),
        (
            "POST",
            "/v1/check".into(),
            "{\"key\":5}".into(),
            400,
            "invalid type",
        ),
        (
            "POST",
            "/v1/check".into(),
            "{\"key\":\"a\",\"cost\":0}".into(),
            400,
            "cost must be > 0",
        ),
        (
            "POST",
            "/v1/check".into(),
            "{\"key\":\"a\",\"cost\":-3}".into(),
            400,
            "cost must be > 0",
        ),
        (
            "POST",
            "/v1/check".into(),
            "{\"key\":\"a\",\"cost\":1.5}".into(),
            400,
            "cost must be an integer",
        ),
        (
            "POST",
            "/v1/check".into(),
            "{\"key\":\"a\",\"cost\":\"2\"}".into(),
            400,
            "invalid type",
        ),
        (
            "POST",
            "/v1/check".into(),
            format!("{{\"key\":\"{}\"}}", "x".repeat(70_000)),
            413,
            "body",
        ),
        (
            "GET",
            "/nope".into(),
            "".into(),
            404,
            "no route for GET /nope",
        ),
        ("DELETE", "/v1/check".into(), "".into(), 405, "not allowed"),
        ("GET", "/v1/check".into(), "".into(), 405, "not allowed"),
        ("POST", "/v1/chaos".into(), "{}".into(), 404, "no route"),
        (
            "GET",
            format!("/v1/counters/{long}"),
            "".into(),
            400,
            "257 bytes",
        ),
        (
            "PUT",
            "/v1/limits/x".into(),
            "{\"limit\":-1,\"window_ms\":1000}".into(),
            400,
            "limit must be >= 0",
        ),
        (
            "PUT",
            "/v1/limits/x".into(),
            "{\"limit\":5,\"window_ms\":0}".into(),
            400,
            "window_ms must be > 0",
        ),
        (
            "PUT",
            "/v1/limits/x".into(),
            "{\"window_ms\":1000}".into(),
            400,
            "missing field `limit`",
        ),
        (
            "PUT",
            "/v1/limits/x".into(),
            "{\"limit\":5,\"window_ms\":999999999999}".into(),
            400,
            "window_ms must be <=",
        ),
    ];
    for (method, path, body, status, needle) in &cases {
        let (s, v) = send(&http, method, &n.url, path, body).await;
        assert_eq!(s, *status, "{method} {path} {body:.60}: {v}");
        assert!(
            is_json_error(&v, needle),
            "{method} {path} {body:.60}: expected error naming {needle:?}, got {v}"
        );
    }
    // Boundaries that are valid.
    let (s, v) = post(&http, &n.url, "/v1/check", json!({"key": exact, "cost": 2})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["remaining"], 98);
    // Nothing above was counted as a decision.
    let text = metrics_text(&http, &n.url).await;
    assert_eq!(
        metric(&text, "ratelimiter_decisions_total{result=\"allowed\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "ratelimiter_decisions_total{result=\"denied\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_latency_and_local_only() {
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "chaos-a", &["--chaos"], true).await;
    let b = Node::start(&redis.url(), "chaos-b", &[], true).await;
    let http = client();
    let (s, _) = post(&http, &b.url, "/v1/chaos", json!({"local_only": true})).await;
    assert_eq!(s, 404, "chaos must be off without --chaos");

    // Injected Redis latency shows in the decision histogram.
    let (s, v) = post(&http, &a.url, "/v1/chaos", json!({"redis_latency_ms": 60})).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"redis_latency_ms": 60, "local_only": false}));
    let before = metrics_text(&http, &a.url).await;
    let slow0 = metric(&before, "ratelimiter_decision_duration_seconds_count")
        - metric(
            &before,
            "ratelimiter_decision_duration_seconds_bucket{le=\"0.05\"}",
        );
    for _ in 0..5 {
        let (s, v) = check(&http, &a.url, "lat").await;
        assert_eq!((s, v["mode"].clone()), (200, json!("normal")));
    }
    let after = metrics_text(&http, &a.url).await;
    let slow1 = metric(&after, "ratelimiter_decision_duration_seconds_count")
        - metric(
            &after,
            "ratelimiter_decision_duration_seconds_bucket{le=\"0.05\"}",
        );
    assert_eq!(slow1 - slow0, 5.0, "5 decisions above 50 ms");
    let (_, h) = get(&http, &a.url, "/healthz").await;
    assert_eq!(h["chaos"]["redis_latency_ms"], 60);

    // local_only: decide on local counts, stop heartbeating, show redis as unreachable.
    put(
        &http,
        &a.url,
        "/v1/limits/part",
        json!({"limit": 3, "window_ms": 60000}),
    )
    .await;
    let (_, v) = post(&http, &a.url, "/v1/chaos", json!({"local_only": true})).await;
    assert_eq!(v, json!({"redis_latency_ms": 0, "local_only": true}));
    let mut allowed = 0;
    for _ in 0..5 {
        let (s, v) = check(&http, &a.url, "part").await;
        assert_eq!(v["mode"], "local-only");
        assert_eq!(v["degraded"], true);
        assert_eq!(v["limit"], 3);
        if s == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
    let (_, view) = get(&http, &a.url, "/v1/counters/part").await;
    assert!(view["redis"].is_null(), "{view}");
    assert_eq!(view["local"]["current"], 3);
    assert_eq!(view["allowed_in_window"], 3);
    assert_eq!(view["denied_in_window"], 2);
    let (s, h) = get(&http, &a.url, "/healthz").await;
    assert_eq!(
        (s, h["status"].clone(), h["mode"].clone()),
        (503, json!("degraded"), json!("local-only"))
    );
    let text = metrics_text(&http, &a.url).await;
    assert_eq!(
        metric(&text, "ratelimiter_decisions_total{result=\"failed_open\"}"),
        5.0
    );
    assert_eq!(
        metric(
            &text,
            "ratelimiter_fallback_decisions_total{outcome=\"denied\"}"
        ),
        2.0
    );
    assert_eq!(metric(&text, "ratelimiter_mode{mode=\"local_only\"}"), 1.0);
    // The other node still sees the shared counter untouched by a's local decisions.
    let (_, view) = get(&http, &b.url, "/v1/counters/part").await;
    assert_eq!(view["redis"]["current"], 0);
    wait_until(
        Duration::from_secs(8),
        "a's heartbeat goes stale",
        || async {
            let (_, v) = get(&http, &b.url, "/v1/nodes").await;
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            match nodes.iter().find(|n| n["id"] == "chaos-a") {
                None => true,
                Some(n) => n["age_ms"].as_u64().is_some_and(|a| a > 2500),
            }
        },
    )
    .await;

    // Clearing chaos brings the node back without a restart.
    let (_, v) = post(&http, &a.url, "/v1/chaos", json!({})).await;
    assert_eq!(v, json!({"redis_latency_ms": 0, "local_only": false}));
    wait_until(Duration::from_secs(5), "a heartbeats again", || async {
        let (_, v) = get(&http, &b.url, "/v1/nodes").await;
        v["nodes"].as_array().is_some_and(|ns| {
            ns.iter()
                .any(|n| n["id"] == "chaos-a" && n["age_ms"].as_u64().is_some_and(|a| a < 1500))
        })
    })
    .await;
    let (s, v) = check(&http, &a.url, "part").await;
    assert_eq!((s, v["mode"].clone()), (200, json!("normal")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_sets_retry_after_in_whole_seconds_rounded_up() {
    let redis = Redis::start();
    let n = Node::start(&redis.url(), "retry-1", &[], true).await;
    let http = client();
    for (key, limit, window) in [
        ("counted", 2, 60_000),
        ("short", 10, 300),
        ("odd", 10, 2_200),
    ] {
        let (s, v) = put(
            &http,
            &n.url,
            &format!("/v1/limits/{key}"),
            json!({"limit": limit, "window_ms": window}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }

    // Allowed answers carry no Retry-After.
    for _ in 0..2 {
        let (s, retry, v) = check_with_retry_after(&http, &n.url, "counted").await;
        assert_eq!((s, retry), (200, None), "{v}");
    }
    // A denial by count: the header is retry_after_ms in seconds, rounded up.
    let (s, retry, v) = check_with_retry_after(&http, &n.url, "counted").await;
    assert_eq!(s, 429, "{v}");
    let ms = v["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(ms > 0, "{v}");
    assert_eq!(retry, Some(ms.div_ceil(1000).to_string()), "{v}");

    // A blocked key waits exactly one window, so the header is known in advance: 300 ms
    // rounds up to 1 s (never 0), 2200 ms to 3 s (not 2).
    for (key, window, header) in [("short", 300, "1"), ("odd", 2_200, "3")] {
        let (s, _) = post(&http, &n.url, &format!("/v1/keys/{key}/block"), json!({})).await;
        assert_eq!(s, 200);
        let (s, retry, v) = check_with_retry_after(&http, &n.url, key).await;
        assert_eq!(s, 429, "{v}");
        assert_eq!(v["retry_after_ms"], window, "{v}");
        assert_eq!(retry.as_deref(), Some(header), "{key}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_the_registry_entry_and_sigkill_leaves_it_to_expire() {
    let redis = Redis::start();
    let termed = Node::start(&redis.url(), "term-a", &[], true).await;
    let mut killed = Node::start(&redis.url(), "kill-b", &[], true).await;
    let survivor = Node::start(&redis.url(), "stay-c", &[], true).await;
    let http = client();
    let (http, survivor) = (&http, &survivor);
    let listed = move || async move {
        let (s, v) = get(http, &survivor.url, "/v1/nodes").await;
        assert_eq!(s, 200, "{v}");
        let mut ids: Vec<String> = v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["id"].as_str().map(String::from))
            .collect();
        ids.sort();
        ids
    };
    wait_until(Duration::from_secs(10), "all three registered", || async {
        listed().await.len() == 3
    })
    .await;

    // The entry's remaining TTL right before the signal: had the node not deleted it, it
    // would still exist for this long.
    let key = format!("{NODE_PREFIX}term-a");
    let ttl: i64 = redis_cmd(&redis, &["PTTL", &key]).await;
    assert!(ttl > 0, "{key} PTTL {ttl}");
    let signalled = std::time::Instant::now();
    let status = termed.terminate().await;
    let exited = signalled.elapsed();
    assert!(status.success(), "SIGTERM exit: {status}");
    let exists: i64 = redis_cmd(&redis, &["EXISTS", &key]).await;
    assert!(
        exited < Duration::from_millis(ttl as u64),
        "inconclusive: the node took {exited:?} to exit, longer than its entry's {ttl} ms TTL"
    );
    assert_eq!(exists, 0, "{key} still in Redis after a clean shutdown");

    // SIGKILL cannot clean up: the entry stays until its TTL runs out.
    killed.kill();
    let key = format!("{NODE_PREFIX}kill-b");
    let exists: i64 = redis_cmd(&redis, &["EXISTS", &key]).await;
    assert_eq!(exists, 1, "{key} vanished although nobody deleted it");
    assert_eq!(listed().await, ["kill-b", "stay-c"]);
    wait_until(
        Duration::from_millis(NODE_TTL_MS + 5000),
        "the killed node's entry to expire",
        || async { listed().await == ["stay-c"] },
    )
    .await;
}
