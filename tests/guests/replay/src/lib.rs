//! Test guest: makes a script of requests through the host's imports and does nothing
//! else, so what its `observe` costs is what the sandbox adds to the requests themselves.
//! The `tick_cost` bench hands it the requests a real subject's tick just made, and sets
//! its cost beside the same requests from plain host code (the floor) and the subject's
//! whole tick.
//!
//! The script arrives through `check-invariants` (the bench calls it before each measured
//! `observe`, outside the measurement): the newest observation's component `script`
//! carries it as its `steps` attribute. Steps are separated by `\u{1e}`, their fields by
//! `\u{1f}`: `H` and the URLs of one `send-all` of GETs, or `R`, a Redis URL and the
//! command's arguments. `observe` runs the steps in order and returns one component,
//! `replay`, with how many steps ran, how many failed and how many bytes came back. A
//! step the host refuses or that fails counts as failed; the rest still run.

use operator_sdk::prelude::*;
use std::cell::RefCell;

struct Replay;

thread_local! {
    static STEPS: RefCell<String> = const { RefCell::new(String::new()) };
}

const STEP: char = '\u{1e}';
const FIELD: char = '\u{1f}';

/// Runs every step of `script`: (steps, failed, bytes received).
fn run(script: &str) -> (usize, usize, usize) {
    let (mut steps, mut failed, mut bytes) = (0, 0, 0);
    for step in script.split(STEP).filter(|s| !s.is_empty()) {
        steps += 1;
        let mut fields = step.split(FIELD);
        match fields.next() {
            Some("H") => {
                let requests = fields.map(|url| http::Request::new("GET", url)).collect();
                for answer in http::send_all(requests) {
                    match answer {
                        Ok(r) => bytes += r.body.len(),
                        Err(_) => failed += 1,
                    }
                }
            }
            Some("R") => {
                let url = fields.next().unwrap_or_default();
                let args: Vec<&str> = fields.collect();
                match redis::command(url, &args) {
                    Ok(v) => bytes += reply_bytes(&v),
                    Err(_) => failed += 1,
                }
            }
            _ => failed += 1,
        }
    }
    (steps, failed, bytes)
}

fn reply_bytes(v: &redis::Value) -> usize {
    match v {
        redis::Value::Nil | redis::Value::Int(_) => 8,
        redis::Value::Status(s) => s.len(),
        redis::Value::Bulk(b) => b.len(),
        redis::Value::Array(items) => items.iter().map(reply_bytes).sum(),
    }
}

impl Subject for Replay {
    fn metadata() -> Metadata {
        Metadata::new("replay", "1.0.0")
            .describe("replays a script of requests through the host's imports, nothing else")
            .setting(Setting::origins(
                "nodes",
                "HTTP origins the script may read",
            ))
            .setting(Setting::origin("redis", "the Redis the script may read"))
    }

    fn observe() -> Result<Observation, ObserveError> {
        let (steps, failed, bytes) = STEPS.with_borrow(|s| run(s));
        Ok(Observation {
            timestamp_ms: now_ms(),
            components: vec![Component {
                id: "replay".into(),
                kind: "replay".into(),
                address: String::new(),
                state: if failed == 0 {
                    ComponentState::Up
                } else {
                    ComponentState::Degraded
                },
                attributes: vec![kv("bytes", bytes), kv("failed", failed), kv("steps", steps)],
            }],
            metrics: Default::default(),
            events: vec![],
            problems: vec![],
        })
    }

    fn check_invariants(history: &[Observation]) -> Vec<Violation> {
        let script = history
            .last()
            .and_then(|o| o.components.iter().find(|c| c.id == "script"))
            .and_then(|c| c.attr("steps"));
        if let Some(s) = script {
            STEPS.with_borrow_mut(|steps| s.clone_into(steps));
        }
        vec![]
    }
}

operator_sdk::export_subject!(Replay);
