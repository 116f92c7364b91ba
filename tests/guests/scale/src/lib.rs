//! Test guest: a synthetic subject of any size, and a window into its instance's life.
//!
//! `observe` makes `components` × `series` metric samples (settings, defaults 10 × 1000)
//! without any I/O, so what a tick costs is the host's share: lowering, lifting, caps,
//! storage. `check-invariants` walks every sample of the newest observation against the
//! one before, as a real subject's checks would, and always reports SCALE-02 with what the
//! window it saw held (its length, timestamps and label order).
//!
//! Every component carries `instance_observes`: how many times this instance has observed,
//! which tells a test whether the host kept the instance or started a fresh one. With a
//! `control` origin set, each observe first reads `GET {control}/state` and acts on its
//! `mode`: `trap` panics, `sleep` sleeps past any deadline, `grow` allocates without bound,
//! and anything else observes normally.

use operator_sdk::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

struct Scale;

static OBSERVES: AtomicU64 = AtomicU64::new(0);

/// Series that step up between two observations by more than this are violations.
const JUMP: f64 = 1e9;

impl Subject for Scale {
    fn metadata() -> Metadata {
        Metadata::new("scale", "1.0.0")
            .describe("a synthetic subject: components x series samples, no I/O")
            .setting(Setting::value("components", "how many components").default_value(10))
            .setting(Setting::value("series", "samples per component").default_value(1000))
            .setting(Setting::origin(
                "control",
                "a test server whose /state says how to misbehave",
            ))
            .invariant(
                Invariant::new("SCALE-01", "series steady", Severity::Warning)
                    .describe("no series jumps between two observations"),
            )
            .invariant(
                Invariant::new("SCALE-02", "window seen", Severity::Info)
                    .describe("always fires: says which window the check saw"),
            )
    }

    fn observe() -> Result<Observation, ObserveError> {
        if let Some(control) = config::get("control") {
            let state: serde_json::Value = http::get_json(&http::join(&control, "/state"))
                .map_err(|e| ObserveError::Unreachable(e.to_string()))?;
            match state["mode"].as_str() {
                Some("trap") => panic!("told to trap"),
                Some("sleep") => std::thread::sleep(std::time::Duration::from_secs(3600)),
                Some("grow") => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![0x5A; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                _ => {}
            }
        }
        let n = OBSERVES.fetch_add(1, Ordering::Relaxed) + 1;
        let components: usize = config::parse_or("components", 10).map_err(ObserveError::Config)?;
        let series: usize = config::parse_or("series", 1000).map_err(ObserveError::Config)?;
        let now = 1_700_000_000_000 + n * 1000;
        let mut obs = Observation {
            timestamp_ms: now,
            components: Vec::with_capacity(components),
            metrics: Metrics::with_capacity(components * series),
            events: vec![],
            problems: vec![],
        };
        for c in 0..components {
            let id = format!("c-{c}");
            for s in 0..series {
                // Not in key order on purpose: the host keeps labels sorted, and so must
                // what the instance holds for check-retained.
                obs.metrics.push(
                    &format!("synthetic_series_{}", s % 20),
                    &[("series", &s.to_string()), ("component", &id)],
                    (c * series + s) as f64 + n as f64,
                    now,
                );
            }
            obs.components.push(Component {
                id,
                kind: "synthetic".into(),
                address: String::new(),
                state: ComponentState::Up,
                attributes: vec![kv("instance_observes", n)],
            });
        }
        Ok(obs)
    }

    fn check_invariants(history: &[Observation]) -> Vec<Violation> {
        let Some((cur, past)) = history.split_last() else {
            return vec![];
        };
        // What the check saw, in a form a test can compare between a window held by the
        // instance and one sent by the host.
        let stamps: Vec<String> = history.iter().map(|o| o.timestamp_ms.to_string()).collect();
        let first_labels: Vec<String> = history
            .iter()
            .filter_map(|o| o.metrics.get(0))
            .map(|m| {
                let keys: Vec<&str> = m.labels.iter().map(|l| l.key).collect();
                keys.join("+")
            })
            .collect();
        let mut out = vec![
            Violation::new("SCALE-02", Severity::Info, "window")
                .summary(format!("saw {} observations", history.len()))
                .evidence("count", history.len())
                .evidence("stamps", stamps.join(","))
                .evidence("first_labels", first_labels.join(",")),
        ];
        let Some(prev) = past.last() else {
            return out;
        };
        for (a, b) in cur.metrics.iter().zip(prev.metrics.iter()) {
            let same_series = a.labels.len() == b.labels.len()
                && a.labels
                    .iter()
                    .zip(b.labels.iter())
                    .all(|(x, y)| x.key == y.key && x.value == y.value);
            if a.name == b.name && same_series && (a.value - b.value).abs() > JUMP {
                let component = a
                    .labels
                    .iter()
                    .find(|l| l.key == "component")
                    .map(|l| l.value.to_owned());
                out.push(
                    Violation::new("SCALE-01", Severity::Warning, a.name)
                        .component(component.unwrap_or_default())
                        .summary(format!("{} jumped", a.name)),
                );
            }
        }
        out
    }
}

operator_sdk::export_subject!(Scale);
