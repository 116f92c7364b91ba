//! Decision correctness against a real Redis and real node processes.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ratelimiter::store::{NODE_PREFIX, NODE_TTL_MS};
use serde_json::json;
use tokio::sync::Semaphore;

/// Wait until the Redis clock is at least `min_elapsed` ms into a window of `window` ms and
/// at most `max_elapsed`; returns the window start.
async fn align(redis: &Redis, window: u64, min_elapsed: u64, max_elapsed: u64) -> u64 {
    for _ in 0..4 {
        let now = redis.time_ms().await;
        let e = now % window;
        if (min_elapsed..max_elapsed).contains(&e) {
            return now - e;
        }
        let wait = if e < min_elapsed {
            min_elapsed - e
        } else {
            window - e + min_elapsed
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    panic!("could not align with the window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_the_limit_is_allowed_across_three_nodes() {
    let redis = Redis::start();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(Node::start(&redis.url(), &format!("exact-{i}"), &[], true).await);
    }
    let http = client();
    const LIMIT: u64 = 200;
    const WINDOW: u64 = 3_600_000;
    const REQUESTS: usize = 1500;
    let (s, v) = put(
        &http,
        &nodes[0].url,
        "/v1/limits/exact",
        json!({"limit": LIMIT, "window_ms": WINDOW}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Keep the burst inside one window so no previous-window weight is involved.
    align(&redis, WINDOW, 0, WINDOW - 20_000).await;

    let sem = Arc::new(Semaphore::new(150));
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let url = nodes[i % 3].url.clone();
        let http = http.clone();
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(async move {
            let r = check(&http, &url, "exact").await;
            drop(permit);
            r
        }));
    }
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        if status == 200 || status == 429 {
            assert_eq!(body["limit"], LIMIT);
            assert_eq!(body["mode"], "normal");
            assert_eq!(body["degraded"], false);
        }
        *by_status.entry(status).or_default() += 1;
    }
    assert_eq!(
        by_status.get(&200).copied().unwrap_or(0),
        LIMIT as usize,
        "{by_status:?}"
    );
    assert_eq!(
        by_status.get(&429).copied().unwrap_or(0),
        REQUESTS - LIMIT as usize,
        "{by_status:?}"
    );

    // Redis holds exactly the allowed cost, and the nodes' own tallies add up.
    let (mut allowed, mut denied) = (0, 0);
    for n in &nodes {
        let (s, v) = get(&http, &n.url, "/v1/counters/exact").await;
        assert_eq!(s, 200);
        assert_eq!(v["redis"]["current"], LIMIT, "{v}");
        assert_eq!(v["redis"]["previous"], 0);
        assert_eq!(v["window_of_tallies"], v["window_index"]);
        allowed += v["allowed_in_window"].as_u64().expect("allowed_in_window");
        denied += v["denied_in_window"].as_u64().expect("denied_in_window");
    }
    assert_eq!((allowed, denied), (LIMIT, REQUESTS as u64 - LIMIT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_window_estimate_matches_the_formula() {
    let redis = Redis::start();
    let node = Node::start(&redis.url(), "window-1", &[], true).await;
    let http = client();
    const L: u64 = 100;
    const W: u64 = 2000;
    let (s, _) = put(
        &http,
        &node.url,
        "/v1/limits/slide",
        json!({"limit": L, "window_ms": W}),
    )
    .await;
    assert_eq!(s, 200);

    // Fill window n with exactly L allowed, early in the window.
    let start0 = align(&redis, W, 20, 400).await;
    for i in 0..L {
        let (s, v) = check(&http, &node.url, "slide").await;
        assert_eq!(s, 200, "request {i}: {v}");
        assert_eq!(v["remaining"], L - i - 1);
    }
    let (s, v) = check(&http, &node.url, "slide").await;
    assert_eq!(s, 429, "{v}");
    let (_, view) = get(&http, &node.url, "/v1/counters/slide").await;
    assert_eq!(
        view["window_start_ms"], start0,
        "fill crossed a window boundary: {view}"
    );
    assert_eq!(view["redis"]["current"], L);

    // Window n+1, ~600 ms in: the previous L weigh L * (W - e) / W.
    let now = redis.time_ms().await;
    tokio::time::sleep(Duration::from_millis(
        (start0 + W + 600).saturating_sub(now),
    ))
    .await;
    let start1 = align(&redis, W, 600, 900).await;
    assert_eq!(start1, start0 + W, "test fell behind by a window");
    let t0 = redis.time_ms().await - start1;
    let (s, v) = check(&http, &node.url, "slide").await;
    let t1 = redis.time_ms().await - start1;
    assert_eq!(s, 200, "{v}");
    let expect = |e: u64| (L as f64 - L as f64 * (W - e) as f64 / W as f64 - 1.0).floor() as u64;
    let remaining = v["remaining"].as_u64().expect("remaining");
    assert!(
        (expect(t0)..=expect(t1)).contains(&remaining),
        "remaining {remaining} outside [{}, {}] for elapsed {t0}..{t1}",
        expect(t0),
        expect(t1)
    );

    // Keep asking until denied: the current-window total A must satisfy
    // L*(W-e)/W + A <= L at the last allow and > L - 1 at the denial.
    let mut allowed_now = 1u64;
    let (d0, d1, retry) = loop {
        let d0 = redis.time_ms().await - start1;
        let (s, v) = check(&http, &node.url, "slide").await;
        let d1 = redis.time_ms().await - start1;
        if s == 429 {
            break (
                d0,
                d1,
                v["retry_after_ms"].as_u64().expect("retry_after_ms"),
            );
        }
        assert_eq!(s, 200);
        allowed_now += 1;
        assert!(allowed_now <= L, "never denied");
    };
    let a = allowed_now as f64;
    assert!(
        a <= L as f64 * d1 as f64 / W as f64 + 1e-9,
        "A={a} too high at elapsed<={d1}"
    );
    assert!(
        a > L as f64 * d0 as f64 / W as f64 - 1.0,
        "A={a} too low at elapsed>={d0}"
    );
    // The denial waits until L*(W-e)/W <= L - 1 - A, i.e. e >= W - (L-1-A)*W/L.
    let pass_at = W as f64 - (L as f64 - 1.0 - a) * W as f64 / L as f64;
    let lo = ((pass_at - d1 as f64).ceil()).max(1.0) as u64;
    let hi = ((pass_at - d0 as f64).ceil()).max(1.0) as u64;
    assert!(
        (lo..=hi).contains(&retry),
        "retry_after_ms {retry} outside [{lo}, {hi}]"
    );

    // The node's view reports the same counts and the documented estimate.
    let (_, view) = get(&http, &node.url, "/v1/counters/slide").await;
    assert_eq!(view["window_start_ms"], start1, "{view}");
    assert_eq!(view["redis"]["previous"], L);
    assert_eq!(view["redis"]["current"], allowed_now);
    let e = view["elapsed_ms"].as_f64().expect("elapsed_ms");
    let est = view["redis"]["estimate"].as_f64().expect("estimate");
    let formula = L as f64 * (W as f64 - e) / W as f64 + allowed_now as f64;
    assert!(
        (est - formula).abs() < 1e-9,
        "estimate {est} != formula {formula}"
    );
    assert_eq!(view["allowed_in_window"], allowed_now);
    assert_eq!(view["denied_in_window"], 1);
}

/// The TTL the README promises for a counter key: two windows and a second.
fn counter_ttl_ms(window_ms: u64) -> u64 {
    2 * window_ms + 1000
}

/// The current-window counter keys of `key` (the highest window index first).
async fn counter_keys(redis: &Redis, key: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis_cmd(redis, &["KEYS", &format!("rl:w:{key}:*")]).await;
    keys.sort_by_key(|k| {
        std::cmp::Reverse(
            k.rsplit(':')
                .next()
                .and_then(|i| i.parse::<u64>().ok())
                .unwrap_or(0),
        )
    });
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_decision_sets_the_counter_ttl_to_two_windows_plus_a_second() {
    let redis = Redis::start();
    let node = Node::start(&redis.url(), "ttl-formula", &[], true).await;
    let http = client();
    // Windows chosen so that no other simple rule (a constant, W + 1000, 2W, 3W) fits all.
    for w in [1_000u64, 7_777, 60_000] {
        let key = format!("ttlw-{w}");
        let (s, _) = put(
            &http,
            &node.url,
            &format!("/v1/limits/{key}"),
            json!({"limit": 1000, "window_ms": w}),
        )
        .await;
        assert_eq!(s, 200);
        let want = counter_ttl_ms(w) as i64;
        // Two writes in a row: each allowed decision sets the TTL afresh.
        for write in 0..2 {
            // Bracket the write and the PTTL read with Redis's clock: the TTL read back is
            // 2W + 1000 minus the time between them. A bracket of a second or more could not
            // tell 2W + 1000 from 2W, so it is taken again.
            let (pttl, bracket) = 'measure: {
                for _ in 0..5 {
                    let t0 = redis.time_ms().await;
                    let (s, v) = check(&http, &node.url, &key).await;
                    assert_eq!(s, 200, "{v}");
                    let keys = counter_keys(&redis, &key).await;
                    let newest = keys
                        .first()
                        .expect("a counter key after an allowed decision");
                    let pttl: i64 = redis_cmd(&redis, &["PTTL", newest]).await;
                    let bracket = (redis.time_ms().await - t0) as i64;
                    if bracket < 500 {
                        break 'measure (pttl, bracket);
                    }
                }
                panic!("could not bracket one decision within 500 ms in 5 tries");
            };
            // PTTL rounds to the millisecond; TIME is read in microseconds and truncated.
            assert!(
                (want - bracket - 1..=want).contains(&pttl),
                "W={w}, write {write}: PTTL {pttl} outside [{}, {want}] (2W+1000 minus a {bracket} ms bracket)",
                want - bracket - 1
            );
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }
    // A denial writes nothing, so it does not extend the TTL either.
    let (s, _) = put(
        &http,
        &node.url,
        "/v1/limits/ttl-denied",
        json!({"limit": 1, "window_ms": 60_000}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(check(&http, &node.url, "ttl-denied").await.0, 200);
    let keys = counter_keys(&redis, "ttl-denied").await;
    let before: i64 = redis_cmd(&redis, &["PTTL", &keys[0]]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(check(&http, &node.url, "ttl-denied").await.0, 429);
    let after: i64 = redis_cmd(&redis, &["PTTL", &keys[0]]).await;
    assert!(
        after <= before - 500,
        "a denial refreshed the TTL: {before} ms, then {after} ms after 600 ms"
    );
    let current: String = redis_cmd(&redis, &["GET", &keys[0]]).await;
    assert_eq!(current, "1", "a denial was counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_the_service_writes_has_a_ttl_except_config() {
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "ttl-a", &[], true).await;
    let b = Node::start(&redis.url(), "ttl-b", &[], true).await;
    let http = client();
    put(
        &http,
        &a.url,
        "/v1/limits/ttl-long",
        json!({"limit": 5, "window_ms": 60000}),
    )
    .await;
    post(&http, &a.url, "/v1/keys/ttl-blocked/block", json!({})).await;
    for round in 0..3 {
        for k in 0..10 {
            let url = if k % 2 == 0 { &a.url } else { &b.url };
            check(&http, url, &format!("ttl-{k}")).await;
        }
        check(&http, &b.url, "ttl-long").await;
        check(&http, &a.url, "ttl-blocked").await;
        if round < 2 {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }
    let mut c = redis.conn().await;
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .expect("SCAN");
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let (mut windows, mut nodes) = (0, 0);
    for k in &keys {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut c)
            .await
            .expect("PTTL");
        if k.starts_with("rl:w:") {
            windows += 1;
            // Never more than the formula allows for the key's window (the exact value is
            // checked in the test above).
            let window = if k.starts_with("rl:w:ttl-long:") {
                60_000
            } else {
                1_000
            };
            let max = counter_ttl_ms(window) as i64;
            assert!(pttl > 0 && pttl <= max, "{k} PTTL {pttl}, want (0, {max}]");
        } else if k.starts_with(NODE_PREFIX) {
            nodes += 1;
            assert!(
                pttl > 0 && pttl <= NODE_TTL_MS as i64,
                "{k} PTTL {pttl}, want (0, {NODE_TTL_MS}]"
            );
        } else {
            assert!(k == "rl:limits" || k == "rl:blocked", "unexpected key {k}");
            assert_eq!(pttl, -1, "config key {k} should be persistent");
        }
    }
    assert!(
        windows >= 11,
        "expected counters for 11 keys, found {windows}: {keys:?}"
    );
    assert_eq!(nodes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_through_one_node_is_enforced_by_the_others() {
    let redis = Redis::start();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(Node::start(&redis.url(), &format!("lim-{i}"), &[], true).await);
    }
    let http = client();
    let (s, v) = put(
        &http,
        &nodes[0].url,
        "/v1/limits/shared",
        json!({"limit": 5, "window_ms": 60000}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"key": "shared", "limit": 5, "window_ms": 60000}));
    for n in &nodes[1..] {
        let (s, v) = get(&http, &n.url, "/v1/limits").await;
        assert_eq!(s, 200);
        assert_eq!(
            v["limits"]["shared"],
            json!({"limit": 5, "window_ms": 60000}),
            "{v}"
        );
        assert_eq!(v["default"], json!({"limit": 100, "window_ms": 1000}));
    }
    let mut allowed = 0;
    for i in 0..8 {
        let (s, v) = check(&http, &nodes[1 + i % 2].url, "shared").await;
        assert_eq!(v["limit"], 5);
        if s == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);

    // The cluster-wide default, set through node 3, applies to a fresh key on node 1.
    let (s, _) = put(
        &http,
        &nodes[2].url,
        "/v1/limits/_default",
        json!({"limit": 3, "window_ms": 60000}),
    )
    .await;
    assert_eq!(s, 200);
    let (_, v) = check(&http, &nodes[0].url, "fresh").await;
    assert_eq!(v["limit"], 3);
    assert_eq!(v["remaining"], 2);
    let (_, v) = get(&http, &nodes[0].url, "/v1/limits").await;
    assert_eq!(v["default"], json!({"limit": 3, "window_ms": 60000}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_counts_match_the_limit() {
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "lg-a", &[], true).await;
    let b = Node::start(&redis.url(), "lg-b", &[], true).await;
    let http = client();
    put(
        &http,
        &a.url,
        "/v1/limits/lg-hot",
        json!({"limit": 50, "window_ms": 3_600_000}),
    )
    .await;
    align(&redis, 3_600_000, 0, 3_600_000 - 20_000).await;
    let targets = format!("{},{}", a.url, b.url);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--target", &targets, "--rate", "400", "--duration", "1s"])
            .args(["--keys", "5", "--zipf", "1.0", "--key-prefix", "lg-"])
            .args(["--hot-key", "lg-hot:0.5", "--json"])
            // Room for every request in flight at once, and time for a slow answer, so none
            // is dropped or given up on however busy this machine is: the counts below do not
            // depend on its speed.
            .args(["--concurrency", "400", "--timeout", "60s"])
            .output()
    })
    .await
    .expect("join")
    .expect("run loadgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("loadgen JSON");
    let n = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_u64())
            .unwrap_or_else(|| panic!("{p} in {v}"))
    };
    assert_eq!(n("/errors"), 0, "{v}");
    // Open loop: 400 req/s for 1 s is 400 requests due, all of them sent.
    assert_eq!((n("/sent"), n("/dropped")), (400, 0), "{v}");
    assert_eq!(n("/sent"), n("/allowed") + n("/denied"));
    // The hot key got about half of the requests, and exactly its limit was allowed.
    let hot = n("/per_key/lg-hot/allowed") + n("/per_key/lg-hot/denied");
    assert!(hot > 100, "the hot key got {hot} of 400 requests: {v}");
    assert_eq!(n("/per_key/lg-hot/allowed"), 50, "{v}");
    assert_eq!(v["per_node"].as_object().map(|m| m.len()), Some(2));
    let (_, view) = get(&http, &a.url, "/v1/counters/lg-hot").await;
    assert_eq!(view["redis"]["current"], 50);
}
