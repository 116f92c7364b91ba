//! Test support: a real redis-server and real `ratelimiter` processes on free loopback ports,
//! killed on drop. Every wait is bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
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

/// A `ratelimiter` node child process.
pub struct Node {
    child: Child,
    pub id: String,
    pub url: String,
}

impl Node {
    /// Start a node on an ephemeral port and wait until it reports its address. With
    /// `wait_healthy`, also wait for /healthz to answer 200.
    pub async fn start(redis_url: &str, id: &str, extra: &[&str], wait_healthy: bool) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ratelimiter"));
        for var in [
            "RL_LISTEN",
            "RL_REDIS",
            "RL_NODE_ID",
            "RL_POLICY",
            "RL_CHAOS",
            "RL_CONFIG",
            "RL_DEFAULT_LIMIT",
            "RL_DEFAULT_WINDOW_MS",
            "RL_REDIS_TIMEOUT_MS",
        ] {
            cmd.env_remove(var);
        }
        let logs = std::env::var_os("RL_TEST_LOGS").is_some();
        let mut child = cmd
            .args([
                "--listen",
                "127.0.0.1:0",
                "--redis",
                redis_url,
                "--node-id",
                id,
            ])
            .args(extra)
            .env("RUST_LOG", if logs { "info" } else { "warn" })
            .stdout(Stdio::piped())
            .stderr(if logs {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn ratelimiter");
        let stdout = child.stdout.take().expect("node stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} did not report its address");
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from node {id}: {line:?}"))
            .to_string();
        let node = Node {
            child,
            id: id.to_string(),
            url: format!("http://{addr}"),
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
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
