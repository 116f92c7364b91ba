//! Test support: a real redis-server and real `ratelimiter` processes (from `testkit`, the
//! workspace's harness), killed on drop, and an async HTTP client. Every wait is bounded.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use testkit::Redis;

/// Async access to the test Redis, for the checks that read it directly.
pub trait RedisExt {
    fn conn(&self) -> impl std::future::Future<Output = redis::aio::MultiplexedConnection>;
    fn time_ms(&self) -> impl std::future::Future<Output = u64>;
}

impl RedisExt for Redis {
    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }

    async fn time_ms(&self) -> u64 {
        let mut c = self.conn().await;
        let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.expect("TIME");
        s * 1000 + us / 1000
    }
}

/// A `ratelimiter` node child process (the harness's node, with its URL at hand).
pub struct Node {
    inner: testkit::ratelimiter::Node,
    pub id: String,
    pub url: String,
}

impl Node {
    /// Start a node on a port of its choosing (`--listen 127.0.0.1:0`) and wait until it
    /// reports its address. With `wait_healthy`, also wait for /healthz to answer 200.
    pub async fn start(redis_url: &str, id: &str, extra: &[&str], wait_healthy: bool) -> Node {
        let (redis_url, node_id) = (redis_url.to_string(), id.to_string());
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // Spawning waits (bounded) for the node's first line: keep it off the runtime.
        let inner = tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            testkit::ratelimiter::Node::spawn(
                Path::new(env!("CARGO_BIN_EXE_ratelimiter")),
                &redis_url,
                &node_id,
                &extra,
            )
        })
        .await
        .expect("spawning the node panicked");
        let node = Node {
            url: inner.url(),
            id: id.to_string(),
            inner,
        };
        if wait_healthy {
            let http = client();
            wait_until(
                Duration::from_secs(10),
                &format!("{id} healthy"),
                || async { get(&http, &node.url, "/healthz").await.0 == 200 },
            )
            .await;
        }
        node
    }

    pub fn kill(&mut self) {
        self.inner.kill();
    }

    /// Starts the node again on the port it had, retrying while that port is taken, and
    /// waits until /healthz answers 200.
    pub async fn restart(self) -> Node {
        let Node { mut inner, id, url } = self;
        let inner = tokio::task::spawn_blocking(move || {
            inner.restart();
            inner
        })
        .await
        .expect("restarting the node panicked");
        Node { inner, id, url }
    }

    /// The port the node listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// SIGTERM, then wait (bounded) for the node to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.inner.terminate(Duration::from_secs(10)))
            .await
            .expect("terminating the node panicked")
    }

    /// What the node has logged so far.
    pub fn logs(&self) -> String {
        self.inner.logs()
    }
}

pub fn client() -> reqwest::Client {
    ratelimiter::http_client()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(256)
        .build()
        .expect("http client")
}

async fn to_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("response body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

pub async fn get(http: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    to_json(http.get(format!("{base}{path}")).send().await.expect("GET")).await
}

pub async fn send(
    http: &reqwest::Client,
    method: &str,
    base: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let resp = http
        .request(m, format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    to_json(resp).await
}

pub async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> (u16, Value) {
    send(http, "POST", base, path, &body.to_string()).await
}

pub async fn put(http: &reqwest::Client, base: &str, path: &str, body: Value) -> (u16, Value) {
    send(http, "PUT", base, path, &body.to_string()).await
}

pub async fn check(http: &reqwest::Client, base: &str, key: &str) -> (u16, Value) {
    post(http, base, "/v1/check", serde_json::json!({ "key": key })).await
}

pub async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Value of one sample line, e.g. `ratelimiter_decisions_total{result="allowed"}`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("metric {series} not found in:\n{text}"))
}

/// Poll `f` every 50 ms until it returns true; panic after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /v1/check` for `key`, with the `Retry-After` header of the answer.
pub async fn check_with_retry_after(
    http: &reqwest::Client,
    base: &str,
    key: &str,
) -> (u16, Option<String>, Value) {
    let resp = http
        .post(format!("{base}/v1/check"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "key": key }).to_string())
        .send()
        .await
        .expect("POST /v1/check");
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().expect("Retry-After is ASCII").to_string());
    let (status, body) = to_json(resp).await;
    (status, retry_after, body)
}

/// One Redis command on the test's own connection.
pub async fn redis_cmd<T: redis::FromRedisValue>(redis: &Redis, args: &[&str]) -> T {
    let mut c = redis.conn().await;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c)
        .await
        .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
}
