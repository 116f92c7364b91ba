//! The observation a plugin builds, and the form it crosses to the host in.
//!
//! Plugins build an [`Observation`] with a list of [`MetricSample`]s, each with its own
//! strings, as before. Since contract 0.5 the samples cross as a metric table: every
//! distinct name, label key and label value once, the samples as indexes into it. A tick's
//! samples are thousands of uses of a few dozen strings, and each string the guest returns
//! costs the host an allocation to lift and a free to drop, and the guest a free after the
//! call. [`export_subject!`](crate::export_subject) converts at the boundary; plugins never
//! see the table.

use crate::bindings::operator::subject::types as wire;
use crate::history::same;
use crate::{Component, Event, Kv, Problem};
use rustc_hash::FxHashMap;

/// One metric sample, Prometheus-style.
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
    pub metrics: Vec<MetricSample>,
    pub events: Vec<Event>,
    pub problems: Vec<Problem>,
}

/// A string as a map key, compared eight bytes at a time: the guest's `memcmp`, which
/// `str`'s equality calls, compares a byte at a time (see [`same`]).
#[derive(Clone, Copy)]
struct Key<'a>(&'a str);

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        same(self.0, other.0)
    }
}

impl Eq for Key<'_> {}

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write(self.0.as_bytes());
    }
}

/// Label positions whose last string is remembered.
const RECENT: usize = 8;

/// Each distinct string once, numbered in the order first seen. The keys borrow from the
/// observation being sent: only the table's own copies are allocated.
///
/// Neighbouring samples mostly repeat each other's strings (a scrape's series of one name
/// come together, and label keys keep their places), so the string last seen in the same
/// place is tried before the map: a hit is one comparison instead of a hash, a probe and a
/// comparison. In perf of `operator run`, interning was 5% of the process before this.
struct Interner<'a> {
    index: FxHashMap<Key<'a>, u32>,
    strings: Vec<String>,
    /// The last name, and the last key and value at each label position.
    name: Option<(&'a str, u32)>,
    keys: [Option<(&'a str, u32)>; RECENT],
    values: [Option<(&'a str, u32)>; RECENT],
}

impl<'a> Interner<'a> {
    fn with_capacity(n: usize) -> Interner<'a> {
        Interner {
            index: FxHashMap::with_capacity_and_hasher(n, Default::default()),
            strings: Vec::with_capacity(n),
            name: None,
            keys: [None; RECENT],
            values: [None; RECENT],
        }
    }

    fn intern(&mut self, s: &'a str) -> u32 {
        let next = self.strings.len() as u32;
        let i = *self.index.entry(Key(s)).or_insert(next);
        if i == next {
            self.strings.push(s.to_owned());
        }
        i
    }

    /// [`Interner::intern`], trying the string last seen in `recent` first.
    fn intern_at(&mut self, s: &'a str, recent: Recent) -> u32 {
        let slot = match recent {
            Recent::Name => &self.name,
            Recent::Key(p) => &self.keys[p],
            Recent::Value(p) => &self.values[p],
        };
        if let Some((last, i)) = *slot
            && same(last, s)
        {
            return i;
        }
        let i = self.intern(s);
        let slot = match recent {
            Recent::Name => &mut self.name,
            Recent::Key(p) => &mut self.keys[p],
            Recent::Value(p) => &mut self.values[p],
        };
        *slot = Some((s, i));
        i
    }
}

/// Where a string sits in a sample, for [`Interner::intern_at`].
#[derive(Clone, Copy)]
enum Recent {
    Name,
    Key(usize),
    Value(usize),
}

/// `o` as it is sent to the host: its samples as a table, each distinct string once.
pub fn to_wire(o: &Observation) -> wire::Observation {
    // A tick's samples use a few dozen to a few hundred distinct strings.
    let mut table = Interner::with_capacity(256);
    let mut samples = Vec::with_capacity(o.metrics.len());
    let mut labels = Vec::with_capacity(o.metrics.len() * 6);
    for m in &o.metrics {
        let name = table.intern_at(&m.name, Recent::Name);
        let first_label = (labels.len() / 2) as u32;
        for (p, kv) in m.labels.iter().enumerate() {
            if p < RECENT {
                labels.push(table.intern_at(&kv.key, Recent::Key(p)));
                labels.push(table.intern_at(&kv.value, Recent::Value(p)));
            } else {
                labels.push(table.intern(&kv.key));
                labels.push(table.intern(&kv.value));
            }
        }
        samples.push(wire::TableSample {
            name,
            first_label,
            label_count: m.labels.len() as u32,
            value: m.value,
            timestamp_ms: m.timestamp_ms,
        });
    }
    wire::Observation {
        timestamp_ms: o.timestamp_ms,
        components: o.components.clone(),
        metrics: wire::MetricTable {
            strings: table.strings,
            samples,
            labels,
        },
        events: o.events.clone(),
        problems: o.problems.clone(),
    }
}

/// An observation the host sent (`check-invariants`), with its samples written out. The
/// host sends only tables it checked; an index outside this one reads as an empty string
/// rather than failing the check.
pub fn from_wire(w: wire::Observation) -> Observation {
    let t = w.metrics;
    let text = |i: u32| t.strings.get(i as usize).cloned().unwrap_or_default();
    let metrics = t
        .samples
        .iter()
        .map(|s| {
            let from = 2 * s.first_label as usize;
            let to = from.saturating_add(2 * s.label_count as usize);
            let pairs = t.labels.get(from..to).unwrap_or(&[]);
            MetricSample {
                name: text(s.name),
                labels: pairs
                    .chunks_exact(2)
                    .map(|p| Kv {
                        key: text(p[0]),
                        value: text(p[1]),
                    })
                    .collect(),
                value: s.value,
                timestamp_ms: s.timestamp_ms,
            }
        })
        .collect();
    Observation {
        timestamp_ms: w.timestamp_ms,
        components: w.components,
        metrics,
        events: w.events,
        problems: w.problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> MetricSample {
        MetricSample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| kv(*k, v)).collect(),
            value,
            timestamp_ms: 3,
        }
    }

    #[test]
    fn each_string_crosses_once_and_comes_back_the_same() {
        let o = Observation {
            timestamp_ms: 9,
            components: vec![],
            metrics: vec![
                sample("up", &[("node", "a")], 1.0),
                sample("up", &[("node", "b")], 0.0),
                sample("lat_bucket", &[("node", "a"), ("le", "0.5")], 2.0),
                sample("bare", &[], -1.0),
                sample("self", &[("self", "self")], 4.0),
            ],
            events: vec![],
            problems: vec![],
        };
        let w = to_wire(&o);
        let t = &w.metrics;
        assert_eq!(
            t.strings,
            [
                "up",
                "node",
                "a",
                "b",
                "lat_bucket",
                "le",
                "0.5",
                "bare",
                "self"
            ]
        );
        assert_eq!(t.samples.len(), 5);
        assert_eq!(t.labels.len(), 2 * 5);
        let back = from_wire(w);
        assert_eq!(
            format!("{back:?}"),
            format!("{o:?}"),
            "labels keep their order"
        );
    }

    #[test]
    fn strings_seen_in_other_places_and_past_the_remembered_positions_cross_once() {
        // Names, keys and values that trade places from sample to sample, and samples with
        // more labels than the interner remembers positions for.
        let words = ["a", "b", "node", "le", "0.5", "a_longer_name_than_eight"];
        let metrics: Vec<MetricSample> = (0..200)
            .map(|i| {
                let w = |k: usize| words[(i * 7 + k * 3) % words.len()];
                let labels: Vec<(String, String)> = (0..(i % (RECENT + 3)))
                    .map(|p| (format!("k{}{}", p, w(p)), w(p + 1).to_string()))
                    .collect();
                MetricSample {
                    name: w(0).into(),
                    labels: labels.iter().map(|(k, v)| kv(k.as_str(), v)).collect(),
                    value: i as f64,
                    timestamp_ms: 1,
                }
            })
            .collect();
        let o = Observation {
            timestamp_ms: 1,
            components: vec![],
            metrics,
            events: vec![],
            problems: vec![],
        };
        let w = to_wire(&o);
        let mut distinct = w.metrics.strings.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), w.metrics.strings.len(), "each string once");
        assert_eq!(format!("{:?}", from_wire(w)), format!("{o:?}"));
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
        assert_eq!(o.metrics[0].name, "");
        assert!(o.metrics[0].labels.is_empty());
    }
}
