//! Loads the rate limiter fixtures (see fixtures/gen.py for how they mirror the subject).
#![allow(dead_code)]

use operator_diagnosis::context::{ContextInput, ObservationPoint, TicketFacts};
use operator_diagnosis::incident;
use operator_model::SubjectMetadata;
use serde_json::Value;
use std::path::PathBuf;

pub const FAULTS: &[&str] = &[
    "kill_node",
    "pause_node",
    "redis_down",
    "redis_latency",
    "partition",
    "stuck_key",
    "hot_key",
    "limit_zero",
    "no_match",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn metadata() -> SubjectMetadata {
    let text = std::fs::read_to_string(dir().join("metadata.json")).expect("metadata fixture");
    serde_json::from_str(&text).expect("metadata parses as the host model")
}

pub struct Fixture {
    pub name: String,
    pub fault: String,
    pub expect: Value,
    pub tickets: Vec<TicketFacts>,
    pub history: Vec<ObservationPoint>,
}

pub fn load(name: &str) -> Fixture {
    let text = std::fs::read_to_string(dir().join(format!("{name}.json"))).expect("fixture");
    let mut v: Value = serde_json::from_str(&text).expect("fixture JSON");
    Fixture {
        name: name.to_string(),
        fault: v["fault"].as_str().unwrap_or_default().to_string(),
        expect: v["expect"].take(),
        tickets: serde_json::from_value(v["tickets"].take()).expect("tickets"),
        history: serde_json::from_value(v["history"].take()).expect("history"),
    }
}

impl Fixture {
    /// The input the host would pass: the incident the grouping finds, with its root.
    pub fn input(&self) -> ContextInput {
        let incidents = incident::group(&self.tickets, &self.history);
        let first = incidents.first().expect("one incident at least");
        ContextInput {
            subject: "ratelimiter".into(),
            metadata: metadata(),
            tickets: self
                .tickets
                .iter()
                .filter(|t| first.tickets().any(|id| id == t.id))
                .cloned()
                .collect(),
            root: Some(first.root),
            history: self.history.clone(),
        }
    }
}
