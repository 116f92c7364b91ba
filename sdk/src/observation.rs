//! The observation a plugin builds, and the form it crosses to the host in.
//!
//! Since contract 0.5 an observation's samples cross as a metric table: every distinct
//! name, label key and label value once, the samples as indexes into it. Plugins build
//! that table as they go ([`Metrics`]), so sending it is a copy.

use crate::bindings::operator::subject::types as wire;
use crate::{Component, Event, Kv, Metrics, Problem};

/// One metric sample, Prometheus-style, with its own strings: for building samples one at
/// a time ([`Metrics::push_sample`]) and for keeping one past its observation
/// ([`Sample::to_owned`](crate::metrics::Sample::to_owned)).
#[derive(Clone, Debug)]
pub struct MetricSample {
    pub name: String,
    pub labels: Vec<Kv>,
    pub value: f64,
    /// Unix milliseconds.
    pub timestamp_ms: u64,
}

/// One snapshot of the subject.
#[derive(Clone, Debug)]
pub struct Observation {
    /// Unix milliseconds when the snapshot was taken.
    pub timestamp_ms: u64,
    pub components: Vec<Component>,
    pub metrics: Metrics,
    pub events: Vec<Event>,
    pub problems: Vec<Problem>,
}

/// `o` as it is sent to the host: its samples are already the table.
pub fn to_wire(o: &Observation) -> wire::Observation {
    wire::Observation {
        timestamp_ms: o.timestamp_ms,
        components: o.components.clone(),
        metrics: o.metrics.to_wire(),
        events: o.events.clone(),
        problems: o.problems.clone(),
    }
}

/// An observation the host sent (`check-invariants`), its table kept as it came.
pub fn from_wire(w: wire::Observation) -> Observation {
    Observation {
        timestamp_ms: w.timestamp_ms,
        components: w.components,
        metrics: Metrics::from_wire(w.metrics),
        events: w.events,
        problems: w.problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{MIXED_STRINGS, mixed};

    #[test]
    fn each_string_crosses_once_and_comes_back_the_same() {
        let o = Observation {
            timestamp_ms: 9,
            components: vec![],
            metrics: mixed().into(),
            events: vec![],
            problems: vec![],
        };
        let w = to_wire(&o);
        let t = &w.metrics;
        assert_eq!(t.strings, MIXED_STRINGS);
        assert_eq!(t.samples.len(), 5);
        assert_eq!(t.labels.len(), 2 * 5);
        let back = from_wire(w);
        assert_eq!(back.metrics, o.metrics);
        assert_eq!(
            format!("{back:?}"),
            format!("{o:?}"),
            "labels keep their order"
        );
    }

    #[test]
    fn a_table_pointing_outside_itself_does_not_panic() {
        let w = wire::Observation {
            timestamp_ms: 1,
            components: vec![],
            metrics: wire::MetricTable {
                strings: vec!["n".into()],
                samples: vec![wire::TableSample {
                    name: 7,
                    first_label: u32::MAX,
                    label_count: u32::MAX,
                    value: 1.0,
                    timestamp_ms: 1,
                }],
                labels: vec![0, 5],
            },
            events: vec![],
            problems: vec![],
        };
        let o = from_wire(w);
        let s = o.metrics.get(0).unwrap();
        assert_eq!(s.name, "");
        assert!(s.labels.is_empty());
    }
}
