//! Real processes for end-to-end tests: redis-server, the workspace's own binaries
//! (`operator`, `ratelimiter`, `loadgen`) and a minimal HTTP/1.1 and RESP client to poke
//! them. Every child is killed on drop and every wait is bounded.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};
pub use testkit::{Redis, free_port, wait_for};

/// A binary of this workspace, from the target directory the tests were built into.
/// `cargo test --workspace` builds every package's binaries before running tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or build it with `cargo build -p ...` in the same profile first)",
        bin.display()
    );
    bin
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request over a fresh connection; returns the status and the body.
pub fn http(method: &str, url: &str, body: &str) -> std::io::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other(format!("not an http:// URL: {url}")))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// A `ratelimiter` node on a fixed loopback port, so it can be restarted at the same
/// address the operator was told about.
pub struct Node {
    proc: Option<Proc>,
    pub id: String,
    pub port: u16,
    redis: String,
    extra: Vec<String>,
}

impl Node {
    pub fn start(redis_url: &str, id: &str, extra: &[&str]) -> Node {
        let mut node = Node {
            proc: None,
            id: id.to_string(),
            port: free_port(),
            redis: redis_url.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.restart();
        node
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// (Re)starts the node on its port and waits until /healthz answers 200.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(workspace_bin("ratelimiter"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--redis", &self.redis, "--node-id", &self.id])
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ratelimiter");
        self.proc = Some(Proc { child });
        let url = format!("{}/healthz", self.url());
        wait_for(
            &format!("node {} to be healthy", self.id),
            Duration::from_secs(15),
            || matches!(http("GET", &url, ""), Ok((200, _))).then_some(()),
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `loadgen` running in the background for up to `duration`.
pub fn loadgen(targets: &[String], rate: u32, duration: &str, extra: &[&str]) -> Proc {
    let child = Command::new(workspace_bin("loadgen"))
        .args(["--target", &targets.join(",")])
        .args(["--rate", &rate.to_string(), "--duration", duration])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn loadgen");
    Proc { child }
}

/// `operator run ... --output json`, its tick reports read line by line.
pub struct OperatorRun {
    pub proc: Proc,
    lines: Receiver<Value>,
    pub db: PathBuf,
}

impl OperatorRun {
    pub fn start(db: PathBuf, args: &[&str]) -> OperatorRun {
        let mut child = Command::new(workspace_bin("operator"))
            .arg("run")
            .args(args)
            .arg("--db")
            .arg(&db)
            .args(["--output", "json", "--log", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn operator");
        let stdout = child.stdout.take().expect("operator stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Err(e) => panic!("operator printed a line that is not JSON ({e}): {line}"),
                }
            }
        });
        OperatorRun {
            proc: Proc { child },
            lines: rx,
            db,
        }
    }

    /// The next tick report, or a panic naming `what` after `timeout`.
    pub fn next_tick(&self, what: &str, timeout: Duration) -> Value {
        match self.lines.recv_timeout(timeout) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => panic!("no tick within {timeout:?} ({what})"),
            Err(RecvTimeoutError::Disconnected) => panic!("operator exited ({what})"),
        }
    }

    /// Reads ticks until `f` accepts one; returns it. Panics after `timeout`.
    pub fn until(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("timed out after {timeout:?} waiting for {what}; the last tick: {last}");
            }
            let Ok(tick) = self.lines.recv_timeout(left) else {
                panic!("no tick within {timeout:?} waiting for {what}; the last tick: {last}");
            };
            if f(&tick) {
                return tick;
            }
            last = tick;
        }
    }

    /// `operator tickets list --output json` against this run's database.
    pub fn tickets(&self) -> Vec<Value> {
        let out = Command::new(workspace_bin("operator"))
            .args(["tickets", "list", "--output", "json", "--db"])
            .arg(&self.db)
            .output()
            .expect("run operator tickets list");
        assert!(
            out.status.success(),
            "tickets list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        match serde_json::from_slice(&out.stdout).expect("tickets list prints JSON") {
            Value::Array(a) => a,
            other => panic!("tickets list printed {other}"),
        }
    }
}

/// The invariant ids among a tick report's violations.
pub fn violated(tick: &Value) -> Vec<String> {
    tick["violations"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v["invariant"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
