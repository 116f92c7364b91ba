//! `operator run ... --output json`, its tick reports read line by line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Proc, workspace_bin};

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
