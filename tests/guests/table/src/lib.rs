//! A contract 0.5 plugin built with wit-bindgen directly, so it can send metric tables the
//! SDK never would. Its `mode` setting picks one:
//! - `bad-name`: a sample named by a string the table does not have;
//! - `bad-labels`: a sample whose label pairs run past the table's;
//! - `bomb`: 50,000 samples, each with 64 labels whose values are one 4,000-byte string:
//!   a table of about 2 MB that stands for some 13 GB of text;
//! - anything else: two samples sharing their strings, one with its labels out of order.

wit_bindgen::generate!({ world: "subject", path: "../../../wit/since_v0.5.0" });

use exports::operator::subject::plugin::Guest;
use operator::subject::config;
use operator::subject::types::{
    ActionError, Kv, MetricTable, Observation, ObserveError, SettingInfo, SettingKind, Severity,
    SubjectMetadata, TableSample, Violation,
};

struct Table;

fn sample(name: u32, first_label: u32, label_count: u32) -> TableSample {
    TableSample {
        name,
        first_label,
        label_count,
        value: 1.0,
        timestamp_ms: 1,
    }
}

fn table(mode: &str) -> MetricTable {
    match mode {
        "bad-name" => MetricTable {
            strings: vec!["up".into(), "node".into()],
            samples: vec![sample(2, 0, 0)],
            labels: vec![],
        },
        "bad-labels" => MetricTable {
            strings: vec!["up".into(), "node".into(), "a".into()],
            samples: vec![sample(0, 0, 1), sample(0, 1, 1)],
            labels: vec![1, 2],
        },
        "bomb" => {
            let mut strings = vec!["bomb".to_string(), "v".repeat(4_000)];
            let mut labels = Vec::new();
            for k in 0..64u32 {
                strings.push(format!("k{k:02}"));
                labels.extend([k + 2, 1]);
            }
            MetricTable {
                strings,
                samples: (0..50_000).map(|_| sample(0, 0, 64)).collect(),
                labels,
            }
        }
        _ => MetricTable {
            strings: vec![
                "up".into(),
                "node".into(),
                "a".into(),
                "zone".into(),
                "z1".into(),
            ],
            samples: vec![sample(0, 0, 2), sample(0, 0, 1)],
            // zone=z1 before node=a: out of key order.
            labels: vec![3, 4, 1, 2],
        },
    }
}

impl Guest for Table {
    fn metadata() -> SubjectMetadata {
        SubjectMetadata {
            name: "table".into(),
            version: "0.5.0".into(),
            description: "sends hand-made metric tables".into(),
            settings: vec![SettingInfo {
                name: "mode".into(),
                description: "which table to send".into(),
                kind: SettingKind::Value,
                required: false,
                default_value: None,
            }],
            invariants: vec![],
            actions: vec![],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let mode = config::get("mode").unwrap_or_default();
        Ok(Observation {
            timestamp_ms: 1,
            components: vec![],
            metrics: table(&mode),
            events: vec![],
            problems: vec![],
        })
    }

    fn check_invariants(history: Vec<Observation>) -> Vec<Violation> {
        // Says what came back: the newest observation's samples as the plugin reads them.
        let Some(o) = history.last() else {
            return vec![];
        };
        let t = &o.metrics;
        let text = |i: u32| t.strings.get(i as usize).cloned().unwrap_or_default();
        let samples: Vec<String> = t
            .samples
            .iter()
            .map(|s| {
                let from = 2 * s.first_label as usize;
                let pairs = t
                    .labels
                    .get(from..from + 2 * s.label_count as usize)
                    .unwrap_or(&[]);
                let labels: Vec<String> = pairs
                    .chunks_exact(2)
                    .map(|p| format!("{}={}", text(p[0]), text(p[1])))
                    .collect();
                format!("{}{{{}}}", text(s.name), labels.join(","))
            })
            .collect();
        vec![Violation {
            invariant: "TABLE-01".into(),
            severity: Severity::Info,
            component: String::new(),
            summary: "what the host sent back".into(),
            evidence: vec![Kv {
                key: "samples".into(),
                value: samples.join(" "),
            }],
            dedup_key: "TABLE-01".into(),
        }]
    }

    fn check_retained(_count: u32) -> Option<Vec<Violation>> {
        None
    }

    fn execute(action: String, _params: Vec<Kv>) -> Result<String, ActionError> {
        Err(ActionError::UnknownAction(action))
    }
}

export!(Table);
