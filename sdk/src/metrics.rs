//! An observation's metric samples, kept as the table they cross to the host in.
//!
//! A tick's samples are thousands of uses of a hundred or so strings: names, label keys,
//! label values. Built as [`MetricSample`]s, each use was its own `String`, allocated while
//! scraping, hashed to intern it when the observation was sent (contract 0.5 sends a
//! table), held for `check-retained`, and freed when the observation left the window. In
//! perf of `operator run` that was about a sixth of the process. [`Metrics`] interns each
//! string as the sample is pushed and keeps samples as indexes, so:
//! - pushing a sample whose strings were seen before allocates nothing;
//! - sending is copying the table; dropping it frees a few vectors;
//! - readers get [`Sample`]s whose strings borrow from the table.
//!
//! ```
//! use operator_sdk::Metrics;
//! let mut m = Metrics::new();
//! m.push("up", &[("node", "a")], 1.0, 7);
//! m.push("up", &[("node", "b")], 0.0, 7);
//! let down: Vec<&str> = m
//!     .iter()
//!     .filter(|s| s.name == "up" && s.value == 0.0)
//!     .filter_map(|s| s.label("node"))
//!     .collect();
//! assert_eq!(down, ["b"]);
//! ```

use crate::bindings::operator::subject::types as wire;
use crate::history::same;
use crate::{Kv, MetricSample};
use rustc_hash::FxHashMap;
use std::fmt;

/// One sample: its name, its labels' range in the table, its value and time.
#[derive(Clone, Copy, Debug)]
struct Row {
    name: u32,
    /// First label pair (pairs are two indexes each).
    first: u32,
    count: u32,
    value: f64,
    timestamp_ms: u64,
}

/// Label positions whose last key and value are remembered while pushing.
const RECENT: usize = 8;

/// What the last pushes used, tried before the map: neighbouring samples mostly repeat
/// each other's names and label keys, and a hit is one comparison instead of a hash, a
/// probe and a comparison.
#[derive(Clone, Default)]
struct Recent {
    name: Option<u32>,
    keys: [Option<u32>; RECENT],
    values: [Option<u32>; RECENT],
}

/// Where a string sits in a sample.
#[derive(Clone, Copy)]
enum Place {
    Name,
    Key(usize),
    Value(usize),
}

/// Metric samples as a table: each distinct string once, samples as indexes into it.
#[derive(Default)]
pub struct Metrics {
    strings: Vec<String>,
    rows: Vec<Row>,
    /// Label pairs, key then value, as indexes into `strings`.
    labels: Vec<u32>,
    /// String → index, for pushing. Not kept with held observations (see
    /// [`Metrics::seal`]), clones or tables the host sent, and built if one is pushed to.
    index: Option<FxHashMap<String, u32>>,
    recent: Recent,
}

impl Clone for Metrics {
    fn clone(&self) -> Metrics {
        // The copy rebuilds its index if it is ever pushed to.
        Metrics {
            strings: self.strings.clone(),
            rows: self.rows.clone(),
            labels: self.labels.clone(),
            index: None,
            recent: Recent::default(),
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Room for about `samples` samples.
    pub fn with_capacity(samples: usize) -> Metrics {
        Metrics {
            strings: Vec::with_capacity(samples.min(256)),
            rows: Vec::with_capacity(samples),
            labels: Vec::with_capacity(samples.saturating_mul(6)),
            index: Some(FxHashMap::with_capacity_and_hasher(
                samples.min(256),
                Default::default(),
            )),
            recent: Recent::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a sample; returns its position (for [`Metrics::value_mut`]).
    pub fn push(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        timestamp_ms: u64,
    ) -> usize {
        self.push_iter(name, labels.iter().copied(), value, timestamp_ms)
    }

    /// [`Metrics::push`] with the labels from an iterator.
    pub fn push_iter<'s>(
        &mut self,
        name: &str,
        labels: impl IntoIterator<Item = (&'s str, &'s str)>,
        value: f64,
        timestamp_ms: u64,
    ) -> usize {
        let name = self.intern_at(name, Place::Name);
        let first = (self.labels.len() / 2) as u32;
        let mut count = 0;
        for (k, v) in labels {
            let p = count as usize;
            let (k, v) = if p < RECENT {
                (
                    self.intern_at(k, Place::Key(p)),
                    self.intern_at(v, Place::Value(p)),
                )
            } else {
                (self.intern(k), self.intern(v))
            };
            self.labels.push(k);
            self.labels.push(v);
            count += 1;
        }
        self.rows.push(Row {
            name,
            first,
            count,
            value,
            timestamp_ms,
        });
        self.rows.len() - 1
    }

    /// Adds an owned sample.
    pub fn push_sample(&mut self, s: &MetricSample) -> usize {
        self.push_iter(
            &s.name,
            s.labels.iter().map(|l| (l.key.as_str(), l.value.as_str())),
            s.value,
            s.timestamp_ms,
        )
    }

    /// The sample at `i`.
    pub fn get(&self, i: usize) -> Option<Sample<'_>> {
        self.rows.get(i).map(|r| self.sample(r))
    }

    /// The value of the sample at `i`, to change it.
    pub fn value_mut(&mut self, i: usize) -> Option<&mut f64> {
        self.rows.get_mut(i).map(|r| &mut r.value)
    }

    /// Every sample, in the order pushed.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Sample<'_>> + ExactSizeIterator {
        self.rows.iter().map(|r| self.sample(r))
    }

    /// Keeps the samples `keep` says yes to, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(Sample<'_>) -> bool) {
        let rows = std::mem::take(&mut self.rows);
        let keeps: Vec<bool> = rows.iter().map(|r| keep(self.sample(r))).collect();
        self.rows = rows
            .into_iter()
            .zip(keeps)
            .filter_map(|(r, k)| k.then_some(r))
            .collect();
    }

    /// Each sample written out with its own strings.
    pub fn to_samples(&self) -> Vec<MetricSample> {
        self.iter().map(|s| s.to_owned()).collect()
    }

    fn sample<'a>(&'a self, r: &'a Row) -> Sample<'a> {
        let from = 2 * r.first as usize;
        Sample {
            name: &self.strings[r.name as usize],
            labels: Labels {
                strings: &self.strings,
                pairs: &self.labels[from..from + 2 * r.count as usize],
            },
            value: r.value,
            timestamp_ms: r.timestamp_ms,
            name_id: r.name,
        }
    }

    fn intern(&mut self, s: &str) -> u32 {
        let strings = &self.strings;
        // A table pushed to for the first time, or again after it was sealed, cloned or
        // sent: index what it holds (of repeated strings, the first).
        let index = self.index.get_or_insert_with(|| {
            let mut index = FxHashMap::with_capacity_and_hasher(strings.len(), Default::default());
            for (i, s) in strings.iter().enumerate() {
                index.entry(s.clone()).or_insert(i as u32);
            }
            index
        });
        if let Some(&i) = index.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.to_owned());
        index.insert(s.to_owned(), i);
        i
    }

    fn intern_at(&mut self, s: &str, place: Place) -> u32 {
        let slot = match place {
            Place::Name => &mut self.recent.name,
            Place::Key(p) => &mut self.recent.keys[p],
            Place::Value(p) => &mut self.recent.values[p],
        };
        if let Some(i) = *slot
            && same(&self.strings[i as usize], s)
        {
            return i;
        }
        let i = self.intern(s);
        match place {
            Place::Name => self.recent.name = Some(i),
            Place::Key(p) => self.recent.keys[p] = Some(i),
            Place::Value(p) => self.recent.values[p] = Some(i),
        }
        i
    }

    /// Drops what only pushing needs, for an observation that is kept and only read.
    pub(crate) fn seal(&mut self) {
        self.index = None;
        self.recent = Recent::default();
    }

    /// Puts each sample's labels in the host's form: sorted by key, the last of equal keys
    /// kept. Nothing moves when they already are, which is how samples are usually built.
    pub(crate) fn normalize(&mut self) {
        let key = |i: u32| self.strings[i as usize].as_str();
        let sorted = self.rows.iter().all(|r| {
            let from = 2 * r.first as usize;
            let pairs = &self.labels[from..from + 2 * r.count as usize];
            pairs
                .chunks_exact(2)
                .zip(pairs.chunks_exact(2).skip(1))
                .all(|(a, b)| key(a[0]) < key(b[0]))
        });
        if sorted {
            return;
        }
        let mut labels = Vec::with_capacity(self.labels.len());
        for r in &mut self.rows {
            let from = 2 * r.first as usize;
            let mut pairs: Vec<[u32; 2]> = self.labels[from..from + 2 * r.count as usize]
                .chunks_exact(2)
                .map(|p| [p[0], p[1]])
                .collect();
            // Stable: of equal keys the later stays later, and is the one kept.
            pairs.sort_by(|a, b| self.strings[a[0] as usize].cmp(&self.strings[b[0] as usize]));
            let mut kept: Vec<[u32; 2]> = Vec::with_capacity(pairs.len());
            for p in pairs {
                match kept.last_mut() {
                    Some(last) if self.strings[last[0] as usize] == self.strings[p[0] as usize] => {
                        *last = p
                    }
                    _ => kept.push(p),
                }
            }
            r.first = (labels.len() / 2) as u32;
            r.count = kept.len() as u32;
            labels.extend(kept.iter().flatten());
        }
        self.labels = labels;
    }

    /// The table as it crosses to the host.
    pub(crate) fn to_wire(&self) -> wire::MetricTable {
        wire::MetricTable {
            strings: self.strings.clone(),
            samples: (self.rows.iter())
                .map(|r| wire::TableSample {
                    name: r.name,
                    first_label: r.first,
                    label_count: r.count,
                    value: r.value,
                    timestamp_ms: r.timestamp_ms,
                })
                .collect(),
            labels: self.labels.clone(),
        }
    }

    /// A table the host sent. It checks tables before it sends them; here an index outside
    /// this one reads as an empty string and a label range outside it as no labels, rather
    /// than failing the check.
    pub(crate) fn from_wire(table: wire::MetricTable) -> Metrics {
        let wire::MetricTable {
            mut strings,
            samples,
            mut labels,
        } = table;
        // The host interns what it sends, but a cut string can equal another: each string
        // is used at its first index, so that samples of one name share one index (what
        // `Indexed` groups by) and equal keys are found equal.
        let n = strings.len() as u32;
        let (remap, mut empty) = {
            let mut first = FxHashMap::with_capacity_and_hasher(strings.len(), Default::default());
            let remap: Vec<u32> = (strings.iter().enumerate())
                .map(|(i, s)| *first.entry(s.as_str()).or_insert(i as u32))
                .collect();
            (remap, first.get("").copied())
        };
        let mut fix = |i: u32, strings: &mut Vec<String>| match remap.get(i as usize) {
            Some(&j) => j,
            None => *empty.get_or_insert_with(|| {
                strings.push(String::new());
                n
            }),
        };
        for l in &mut labels {
            *l = fix(*l, &mut strings);
        }
        let pairs = labels.len() / 2;
        labels.truncate(2 * pairs);
        let rows = samples
            .into_iter()
            .map(|s| {
                let fits = (s.first_label as usize)
                    .checked_add(s.label_count as usize)
                    .is_some_and(|end| end <= pairs);
                Row {
                    name: fix(s.name, &mut strings),
                    first: if fits { s.first_label } else { 0 },
                    count: if fits { s.label_count } else { 0 },
                    value: s.value,
                    timestamp_ms: s.timestamp_ms,
                }
            })
            .collect();
        Metrics {
            strings,
            rows,
            labels,
            index: None,
            recent: Recent::default(),
        }
    }

    /// The distinct strings the table holds (for tests of what crosses).
    #[cfg(test)]
    pub(crate) fn strings(&self) -> &[String] {
        &self.strings
    }
}

impl From<Vec<MetricSample>> for Metrics {
    fn from(samples: Vec<MetricSample>) -> Metrics {
        samples.iter().collect()
    }
}

impl<'s> FromIterator<&'s MetricSample> for Metrics {
    fn from_iter<I: IntoIterator<Item = &'s MetricSample>>(iter: I) -> Metrics {
        let mut m = Metrics::new();
        m.extend(iter);
        m
    }
}

impl FromIterator<MetricSample> for Metrics {
    fn from_iter<I: IntoIterator<Item = MetricSample>>(iter: I) -> Metrics {
        let mut m = Metrics::new();
        for s in iter {
            m.push_sample(&s);
        }
        m
    }
}

impl<'s> Extend<&'s MetricSample> for Metrics {
    fn extend<I: IntoIterator<Item = &'s MetricSample>>(&mut self, iter: I) {
        for s in iter {
            self.push_sample(s);
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Samples compare by what they say, not by how their table is laid out.
impl PartialEq for Metrics {
    fn eq(&self, other: &Metrics) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

/// One sample, its strings borrowed from the table.
#[derive(Clone, Copy)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Labels<'a>,
    pub value: f64,
    /// Unix milliseconds.
    pub timestamp_ms: u64,
    /// The name's index in its table: samples of one table have the same name exactly when
    /// these are equal (a table holds each string once, a host-sent one too).
    pub(crate) name_id: u32,
}

impl<'a> Sample<'a> {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels.get(key)
    }

    /// This sample with its own strings.
    pub fn to_owned(&self) -> MetricSample {
        MetricSample {
            name: self.name.to_owned(),
            labels: self.labels.to_kvs(),
            value: self.value,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

impl PartialEq for Sample<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.labels == other.labels
            && self.value.to_bits() == other.value.to_bits()
            && self.timestamp_ms == other.timestamp_ms
    }
}

impl fmt::Debug for Sample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricSample")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("value", &self.value)
            .field("timestamp_ms", &self.timestamp_ms)
            .finish()
    }
}

/// A sample's labels, in the order pushed.
#[derive(Clone, Copy)]
pub struct Labels<'a> {
    strings: &'a [String],
    pairs: &'a [u32],
}

/// One label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

impl<'a> Labels<'a> {
    pub fn len(&self) -> usize {
        self.pairs.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn iter(self) -> impl DoubleEndedIterator<Item = Label<'a>> + ExactSizeIterator + 'a {
        let strings = self.strings;
        self.pairs.chunks_exact(2).map(move |p| Label {
            key: &strings[p[0] as usize],
            value: &strings[p[1] as usize],
        })
    }

    /// The labels as `(key, value)` pairs.
    pub fn pairs(self) -> impl DoubleEndedIterator<Item = (&'a str, &'a str)> + Clone + 'a {
        let strings = self.strings;
        self.pairs
            .chunks_exact(2)
            .map(move |p| (&*strings[p[0] as usize], &*strings[p[1] as usize]))
    }

    /// The value of label `key` (the first, if it repeats).
    pub fn get(self, key: &str) -> Option<&'a str> {
        self.iter().find(|l| same(l.key, key)).map(|l| l.value)
    }

    /// The labels with their own strings.
    pub fn to_kvs(self) -> Vec<Kv> {
        self.iter()
            .map(|l| Kv {
                key: l.key.to_owned(),
                value: l.value.to_owned(),
            })
            .collect()
    }
}

impl<'a> IntoIterator for Labels<'a> {
    type Item = Label<'a>;
    type IntoIter = Box<dyn DoubleEndedIterator<Item = Label<'a>> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl PartialEq for Labels<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Labels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|l| Kv {
                key: l.key.to_owned(),
                value: l.value.to_owned(),
            }))
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kv;

    fn owned(name: &str, labels: &[(&str, &str)], value: f64) -> MetricSample {
        MetricSample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| kv(*k, v)).collect(),
            value,
            timestamp_ms: 3,
        }
    }

    /// Samples that repeat names, keys and values in other places, and one with none.
    pub(crate) fn mixed() -> Vec<MetricSample> {
        vec![
            owned("up", &[("node", "a")], 1.0),
            owned("up", &[("node", "b")], 0.0),
            owned("lat_bucket", &[("node", "a"), ("le", "0.5")], 2.0),
            owned("bare", &[], -1.0),
            owned("self", &[("self", "self")], 4.0),
        ]
    }

    /// The table's strings for [`mixed`], in the order first seen.
    pub(crate) const MIXED_STRINGS: [&str; 9] = [
        "up",
        "node",
        "a",
        "b",
        "lat_bucket",
        "le",
        "0.5",
        "bare",
        "self",
    ];

    fn row(name: u32, first_label: u32, label_count: u32) -> wire::TableSample {
        wire::TableSample {
            name,
            first_label,
            label_count,
            value: 1.0,
            timestamp_ms: 1,
        }
    }

    #[test]
    fn pushed_samples_read_back_as_pushed_with_each_string_once() {
        let samples = mixed();
        let m = Metrics::from(samples.clone());
        assert_eq!(m.to_samples().len(), 5);
        assert_eq!(format!("{:?}", m.to_samples()), format!("{samples:?}"));
        assert_eq!(m.strings(), MIXED_STRINGS);
        let s = m.get(2).unwrap();
        assert_eq!(
            (s.name, s.label("le"), s.label("x")),
            ("lat_bucket", Some("0.5"), None)
        );
        assert_eq!(
            format!("{m:?}"),
            format!("{samples:?}"),
            "reads as the list"
        );
    }

    #[test]
    fn strings_in_other_places_and_past_the_remembered_positions_are_interned_alike() {
        // Names, keys and values that trade places from sample to sample, and samples with
        // more labels than positions are remembered for.
        let words = ["a", "b", "node", "le", "0.5", "a_longer_name_than_eight"];
        let samples: Vec<MetricSample> = (0..200)
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
        let mut m = Metrics::from(samples.clone());
        let mut distinct = m.strings().to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), m.strings().len(), "each string once");
        assert_eq!(format!("{:?}", m.to_samples()), format!("{samples:?}"));
        // A clone pushed to again finds the strings it has.
        let before = m.strings().len();
        let mut c = m.clone();
        c.push_sample(&samples[3]);
        assert_eq!(c.strings().len(), before);
        m.seal();
        m.push_sample(&samples[4]);
        assert_eq!(m.strings().len(), before);
    }

    #[test]
    fn labels_take_the_host_form_and_values_change_in_place() {
        let mut m = Metrics::new();
        m.push(
            "m",
            &[("b", "1"), ("a", "1"), ("b", "2"), ("c", "0")],
            1.0,
            1,
        );
        let i = m.push("m", &[("a", "x"), ("b", "y")], 2.0, 1);
        *m.value_mut(i).unwrap() += 5.0;
        m.normalize();
        let got: Vec<Vec<(&str, &str)>> = m.iter().map(|s| s.labels.pairs().collect()).collect();
        assert_eq!(
            got,
            [
                vec![("a", "1"), ("b", "2"), ("c", "0")],
                vec![("a", "x"), ("b", "y")]
            ]
        );
        assert_eq!(m.get(1).unwrap().value, 7.0);
        m.retain(|s| s.value > 3.0);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(0).unwrap().label("b"), Some("y"));
    }

    #[test]
    fn a_sent_table_pushed_to_finds_its_strings_even_repeated() {
        let mut m = Metrics::from_wire(wire::MetricTable {
            strings: vec!["a".into(), "a".into(), "k".into()],
            samples: vec![],
            labels: vec![],
        });
        for _ in 0..3 {
            m.push("a", &[("k", "a")], 1.0, 1);
        }
        assert_eq!(m.strings().len(), 3, "nothing added: the first `a` is used");
        assert_eq!(m.rows[2].name, 0);
    }

    #[test]
    fn a_sent_table_repeating_a_string_uses_it_as_one() {
        // Two names cut to the same text, and a key repeated under two indexes, unsorted.
        let mut m = Metrics::from_wire(wire::MetricTable {
            strings: vec![
                "cut".into(),
                "cut".into(),
                "k".into(),
                "1".into(),
                "k".into(),
                "2".into(),
                "a".into(),
            ],
            samples: vec![row(0, 0, 3), row(1, 0, 0), row(9, 0, 0)],
            labels: vec![2, 3, 4, 5, 6, 3],
        });
        let ids: Vec<u32> = m.iter().map(|s| s.name_id).collect();
        assert_eq!(ids[0], ids[1], "one name, one index");
        assert_eq!(m.get(2).unwrap().name, "");
        m.normalize();
        let pairs: Vec<(&str, &str)> = m.get(0).unwrap().labels.pairs().collect();
        assert_eq!(
            pairs,
            [("a", "1"), ("k", "2")],
            "equal keys are one key, the last kept"
        );
    }

    #[test]
    fn a_table_pointing_outside_itself_reads_as_empty() {
        let m = Metrics::from_wire(wire::MetricTable {
            strings: vec!["n".into()],
            samples: vec![row(7, u32::MAX, u32::MAX), row(0, 0, 1)],
            labels: vec![0, 5, 9],
        });
        let s: Vec<_> = m.iter().collect();
        assert_eq!(s[0].name, "");
        assert!(s[0].labels.is_empty());
        assert_eq!(s[1].labels.pairs().collect::<Vec<_>>(), [("n", "")]);
    }
}
