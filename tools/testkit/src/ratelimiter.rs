//! Real `ratelimiter` nodes and `loadgen` (services/ratelimiter).
//!
//! A node starts with `--listen 127.0.0.1:0` and the harness reads the port it got from the
//! node's `listening on ADDR` line, so no other process can take the port in between. A
//! restart (after [`Node::kill`]) reuses that port, because the node's peers and the operator
//! were told about it; it retries while the port is still taken.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::http::http;
use crate::process::{Output, Proc, Signal, signal, wait_exit, workspace_bin};
use crate::wait::wait_for;

/// The node's machine-readable first line on stdout.
pub const LISTENING_PREFIX: &str = "listening on ";
/// Environment variables the node reads; cleared so the caller's shell cannot leak into a test.
const NODE_ENV: &[&str] = &[
    "RL_LISTEN",
    "RL_REDIS",
    "RL_NODE_ID",
    "RL_POLICY",
    "RL_CHAOS",
    "RL_CONFIG",
    "RL_DEFAULT_LIMIT",
    "RL_DEFAULT_WINDOW_MS",
    "RL_REDIS_TIMEOUT_MS",
    "RL_WORKER_THREADS",
];
/// How long a node may take to print its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a node may take to answer /healthz with 200 once listening.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a restart waits for its old port to be free.
const PORT_FREE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why one launch of a node failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0} is in use")]
    AddrInUse(String),
    #[error("cannot run {bin}: {err}")]
    Spawn { bin: String, err: std::io::Error },
    #[error("node {id} exited with {status} before it listened; its log:\n{log}")]
    Exited {
        id: String,
        status: ExitStatus,
        log: String,
    },
    #[error("node {id} printed no address within {LISTEN_TIMEOUT:?}; its log:\n{log}")]
    Silent { id: String, log: String },
    #[error("node {id} printed {line:?} instead of `{LISTENING_PREFIX}ADDR`")]
    BadLine { id: String, line: String },
}

/// A `ratelimiter` node, killed (SIGKILL) on drop.
pub struct Node {
    proc: Option<Proc>,
    log: Option<Output>,
    pub id: String,
    /// The port the node got on its first start, kept across restarts.
    pub port: u16,
    bin: PathBuf,
    redis: String,
    extra: Vec<String>,
}

impl Node {
    /// The workspace's `ratelimiter` on a port of its choosing; waits until /healthz answers
    /// 200 (so Redis must be up).
    pub fn start(redis_url: &str, id: &str, extra: &[&str]) -> Node {
        let node = Node::spawn(&workspace_bin("ratelimiter"), redis_url, id, extra);
        node.wait_healthy(HEALTHY_TIMEOUT);
        node
    }

    /// `bin` (e.g. `env!("CARGO_BIN_EXE_ratelimiter")`) on a port of its choosing; returns
    /// once it listens, healthy or not.
    pub fn spawn(bin: &Path, redis_url: &str, id: &str, extra: &[&str]) -> Node {
        let mut node = Node {
            proc: None,
            log: None,
            id: id.to_string(),
            port: 0,
            bin: bin.to_path_buf(),
            redis: redis_url.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        let addr = node
            .launch("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("could not start node {id}: {e}"));
        node.port = addr.port();
        node
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The node's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// SIGKILL: the node vanishes without deregistering.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the node to exit; returns its exit status.
    /// Panics if it does not exit in time (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut p = self
            .proc
            .take()
            .unwrap_or_else(|| panic!("terminate: node {} is not running", self.id));
        signal(&p.child, Signal::Term).expect("SIGTERM the node");
        match wait_exit(&mut p.child, timeout) {
            Some(status) => status,
            None => panic!(
                "node {} still running {timeout:?} after SIGTERM; its log:\n{}",
                self.id,
                self.logs()
            ),
        }
    }

    /// SIGSTOP / SIGCONT: a paused node keeps its port but answers nothing.
    pub fn signal(&self, sig: Signal) {
        let p = self
            .proc
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.id));
        signal(&p.child, sig).expect("signal the node");
    }

    /// (Re)starts the node on its port and waits until /healthz answers 200. The port is
    /// retried until it is free: the old process's socket, or whoever took the port while
    /// the node was down, may still hold it.
    pub fn restart(&mut self) {
        self.kill();
        let listen = format!("127.0.0.1:{}", self.port);
        wait_for(
            &format!("port {} to be free for node {}", self.port, self.id),
            PORT_FREE_TIMEOUT,
            || match self.launch(&listen) {
                Ok(_) => Some(()),
                Err(LaunchError::AddrInUse(_)) => None,
                Err(e) => panic!("could not restart node {}: {e}", self.id),
            },
        );
        self.wait_healthy(HEALTHY_TIMEOUT);
    }

    /// Waits until /healthz answers 200.
    pub fn wait_healthy(&self, timeout: Duration) {
        let url = format!("{}/healthz", self.url());
        wait_for(&format!("node {} to be healthy", self.id), timeout, || {
            matches!(http("GET", &url, ""), Ok((200, _))).then_some(())
        });
    }

    /// What the node has logged (stderr) so far, its last lines.
    pub fn logs(&self) -> String {
        self.log.as_ref().map(Output::text).unwrap_or_default()
    }

    /// One start listening on `listen`; on success the node runs and its address is returned.
    fn launch(&mut self, listen: &str) -> Result<SocketAddr, LaunchError> {
        let echo = crate::echo_logs();
        let mut cmd = Command::new(&self.bin);
        for var in NODE_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .args(["--listen", listen])
            .args(["--redis", &self.redis, "--node-id", &self.id])
            .args(&self.extra)
            .env("RUST_LOG", if echo { "info" } else { "warn" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| LaunchError::Spawn {
                bin: self.bin.display().to_string(),
                err,
            })?;
        let (tx, rx) = channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut first = true;
        // Stdout keeps being drained after the first line, so the node never blocks on it.
        Output::capture(stdout, self.id.clone(), echo, move |line| {
            if std::mem::take(&mut first) {
                let _ = tx.send(line.to_string());
            }
        });
        let mut log = Output::capture(stderr, self.id.clone(), echo, |_| {});
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let exited = match rx.recv_timeout(left.min(Duration::from_millis(20))) {
                Ok(line) => break line,
                // Stdout closed without a line: the node is exiting.
                Err(RecvTimeoutError::Disconnected) => wait_exit(&mut child, left),
                Err(RecvTimeoutError::Timeout) => wait_exit(&mut child, Duration::ZERO),
            };
            if let Some(status) = exited {
                let log = log.finish();
                return Err(if log.contains("Address already in use") {
                    LaunchError::AddrInUse(listen.to_string())
                } else {
                    LaunchError::Exited {
                        id: self.id.clone(),
                        status,
                        log,
                    }
                });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LaunchError::Silent {
                    id: self.id.clone(),
                    log: log.finish(),
                });
            }
        };
        let proc = Proc { child };
        let addr = line
            .strip_prefix(LISTENING_PREFIX)
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .ok_or_else(|| LaunchError::BadLine {
                id: self.id.clone(),
                line: line.clone(),
            })?;
        self.proc = Some(proc);
        self.log = Some(log);
        Ok(addr)
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
