//! [`Metrics`]: an observation's samples as a table of strings and samples that index it.
//!
//! A tick's samples are hundreds of names, label keys and label values, nearly all of them
//! repeats of a few dozen strings. Kept one `String` per use, every sample cost a handful
//! of allocations to lift from the plugin, to hold in the history window and to free, while
//! a healthy tick never reads them past the output caps. Here each distinct string is held
//! once and a sample is a few numbers; readers borrow names and labels from the table.
//!
//! Contract 0.5 plugins send this table as it is (checked by [`Metrics::from_table`]);
//! older ones send a list of samples, which [`MetricsBuilder`] interns. Serialised as the
//! list of samples it replaced, in JSON and in postcard alike, so stored rows and JSON
//! output are byte for byte what they were.

use crate::{Labels, MetricSample};
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::fmt;

/// One sample of a [`Metrics`] table: indexes into its strings and labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Packed {
    /// Index of the name in the table's strings.
    pub name: u32,
    /// The sample's label pairs are `labels[2 * first_label ..][.. 2 * label_count]`.
    pub first_label: u32,
    pub label_count: u32,
    pub value: f64,
    pub timestamp_ms: u64,
}

/// An observation's metric samples. Every index is inside the table, and each sample's
/// label keys are sorted and distinct (as [`Labels`] keeps them).
#[derive(Clone, Default)]
pub struct Metrics {
    strings: Vec<String>,
    samples: Vec<Packed>,
    /// Label pairs of every sample: key index, value index, ...
    labels: Vec<u32>,
}

/// Why a table a plugin sent cannot be read: it names strings or labels it does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError(String);

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed metric table: {}", self.0)
    }
}

impl std::error::Error for TableError {}

/// What [`Metrics::cap`] cut, for the note the host adds to the observation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricCuts {
    /// Samples past the sample cap.
    pub samples: usize,
    /// Samples past the text budget (what the samples would take written out as text).
    pub over_budget: usize,
    /// Names, keys and values cut to their length caps, and label pairs past the cap.
    pub strings: usize,
}

/// The caps [`Metrics::cap`] applies.
#[derive(Debug, Clone, Copy)]
pub struct MetricCaps {
    pub max_samples: usize,
    pub max_labels: usize,
    /// Names and label keys.
    pub max_short: usize,
    /// Label values.
    pub max_long: usize,
    /// Most bytes the kept samples may take with every name, key and value written out
    /// (a table of a few long strings, each used many times, stands for far more text
    /// than it takes).
    pub max_text_bytes: usize,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The table a contract 0.5 plugin sent, checked: every index inside it. Samples whose
    /// keys are out of order or repeated are put in order, the last of a repeated key kept.
    pub fn from_table(
        strings: Vec<String>,
        samples: Vec<Packed>,
        labels: Vec<u32>,
    ) -> Result<Metrics, TableError> {
        if !labels.len().is_multiple_of(2) {
            return Err(TableError(format!(
                "{} label indexes, not key/value pairs",
                labels.len()
            )));
        }
        let n = strings.len();
        if let Some((i, s)) = labels.iter().enumerate().find(|(_, s)| **s as usize >= n) {
            return Err(TableError(format!(
                "label index {i} names string {s} of {n}"
            )));
        }
        let pairs = labels.len() / 2;
        for (i, s) in samples.iter().enumerate() {
            if s.name as usize >= n {
                return Err(TableError(format!(
                    "sample {i} is named by string {} of {n}",
                    s.name
                )));
            }
            let end = s.first_label as u64 + s.label_count as u64;
            if end > pairs as u64 {
                return Err(TableError(format!(
                    "sample {i} has label pairs {}..{end} of {pairs}",
                    s.first_label
                )));
            }
        }
        let mut m = Metrics {
            strings,
            samples,
            labels,
        };
        m.normalize();
        Ok(m)
    }

    /// The table as it is held: strings, samples, label pairs.
    pub fn table(&self) -> (&[String], &[Packed], &[u32]) {
        (&self.strings, &self.samples, &self.labels)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<Sample<'_>> {
        self.samples.get(i).map(|packed| Sample {
            metrics: self,
            packed,
        })
    }

    /// The samples in the order they came.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Sample<'_>> + Clone {
        self.samples.iter().map(move |packed| Sample {
            metrics: self,
            packed,
        })
    }

    /// Each sample as an owned [`MetricSample`] (what older contracts are sent).
    pub fn to_samples(&self) -> Vec<MetricSample> {
        self.iter().map(|s| s.to_owned()).collect()
    }

    /// Keeps the first `len` samples.
    pub fn truncate(&mut self, len: usize) {
        self.samples.truncate(len);
    }

    /// The bytes the samples take written out: names, keys and values.
    pub fn text_bytes(&self) -> usize {
        self.iter().map(|s| s.text_bytes()).sum()
    }

    fn pairs_of(&self, p: &Packed) -> &[u32] {
        let from = 2 * p.first_label as usize;
        &self.labels[from..from + 2 * p.label_count as usize]
    }

    /// Puts every sample's keys in order, keeping the last value of a repeated key. A
    /// sample already in order (what plugins send) is left where it is; the label list is
    /// rebuilt only when one is not.
    fn normalize(&mut self) {
        let strings = &self.strings;
        let in_order = |pairs: &[u32]| {
            pairs
                .chunks_exact(2)
                .zip(pairs.chunks_exact(2).skip(1))
                .all(|(a, b)| strings[a[0] as usize] < strings[b[0] as usize])
        };
        if self.samples.iter().all(|p| in_order(self.pairs_of(p))) {
            return;
        }
        let mut labels = Vec::with_capacity(self.labels.len());
        for p in &mut self.samples {
            let from = 2 * p.first_label as usize;
            let pairs = &self.labels[from..from + 2 * p.label_count as usize];
            let mut sorted: Vec<(u32, u32)> = pairs.chunks_exact(2).map(|c| (c[0], c[1])).collect();
            if !in_order(pairs) {
                // Stable, so among equal keys the later pair stays later and is the one kept.
                sorted.sort_by(|a, b| strings[a.0 as usize].cmp(&strings[b.0 as usize]));
                let mut kept: Vec<(u32, u32)> = Vec::with_capacity(sorted.len());
                for pair in sorted {
                    match kept.last_mut() {
                        Some(last) if strings[last.0 as usize] == strings[pair.0 as usize] => {
                            *last = pair
                        }
                        _ => kept.push(pair),
                    }
                }
                sorted = kept;
            }
            p.first_label = (labels.len() / 2) as u32;
            p.label_count = sorted.len() as u32;
            for (k, v) in sorted {
                labels.extend([k, v]);
            }
        }
        self.labels = labels;
    }

    /// Cuts the samples to `caps`, with `truncate` cutting one string to a length (and
    /// saying whether it did). Names and keys get the short cap and values the long one;
    /// a string used in both roles is cut once for each.
    pub fn cap(
        &mut self,
        caps: &MetricCaps,
        truncate: impl Fn(&mut String, usize) -> bool,
    ) -> MetricCuts {
        let mut cuts = MetricCuts::default();
        if self.samples.len() > caps.max_samples {
            cuts.samples = self.samples.len() - caps.max_samples;
            self.samples.truncate(caps.max_samples);
        }
        for p in &mut self.samples {
            if p.label_count as usize > caps.max_labels {
                cuts.strings += p.label_count as usize - caps.max_labels;
                p.label_count = caps.max_labels as u32;
            }
        }
        // Nearly always nothing is long: then no string needs a look at how it is used.
        let longest = self.strings.iter().map(String::len).max().unwrap_or(0);
        if longest > caps.max_short.min(caps.max_long) {
            self.cap_strings(caps, &truncate, &mut cuts);
        }
        let mut text = 0usize;
        let within = self
            .samples
            .iter()
            .position(|p| {
                text = text.saturating_add(self.sample_text_bytes(p));
                text > caps.max_text_bytes
            })
            .unwrap_or(self.samples.len());
        cuts.over_budget = self.samples.len() - within;
        self.samples.truncate(within);
        cuts
    }

    fn cap_strings(
        &mut self,
        caps: &MetricCaps,
        truncate: &impl Fn(&mut String, usize) -> bool,
        cuts: &mut MetricCuts,
    ) {
        // How often each string is used as a name or key (short) and as a value (long).
        let mut short_uses = vec![0usize; self.strings.len()];
        let mut long_uses = vec![0usize; self.strings.len()];
        for p in &self.samples {
            short_uses[p.name as usize] += 1;
            for pair in self.pairs_of(p).chunks_exact(2) {
                short_uses[pair[0] as usize] += 1;
                long_uses[pair[1] as usize] += 1;
            }
        }
        let over_short: Vec<usize> = (0..self.strings.len())
            .filter(|&i| short_uses[i] > 0 && self.strings[i].len() > caps.max_short)
            .collect();
        let over_long: Vec<usize> = (0..self.strings.len())
            .filter(|&i| long_uses[i] > 0 && self.strings[i].len() > caps.max_long)
            .collect();
        let mut changed = false;
        // Values first: a string that is also a name or key is then cut shorter from it.
        for i in over_long {
            truncate(&mut self.strings[i], caps.max_long);
            cuts.strings += long_uses[i];
            changed = true;
        }
        if !over_short.is_empty() {
            // Names and keys point at a shortened copy; values keep the longer cut.
            let mut short_of: HashMap<u32, u32> = HashMap::new();
            for i in over_short {
                let mut s = self.strings[i].clone();
                if truncate(&mut s, caps.max_short) {
                    cuts.strings += short_uses[i];
                    short_of.insert(i as u32, self.strings.len() as u32);
                    self.strings.push(s);
                }
            }
            let short = |i: &mut u32| {
                if let Some(s) = short_of.get(i) {
                    *i = *s;
                }
            };
            for p in &mut self.samples {
                short(&mut p.name);
            }
            for pair in self.labels.chunks_exact_mut(2) {
                short(&mut pair[0]);
            }
            changed = true;
        }
        if changed {
            // Cut keys can collide or change order.
            self.normalize();
        }
    }

    fn sample_text_bytes(&self, p: &Packed) -> usize {
        self.pairs_of(p)
            .iter()
            .map(|s| self.strings[*s as usize].len())
            .sum::<usize>()
            + self.strings[p.name as usize].len()
    }
}

/// One sample, borrowed from its table.
#[derive(Clone, Copy)]
pub struct Sample<'a> {
    metrics: &'a Metrics,
    packed: &'a Packed,
}

impl<'a> Sample<'a> {
    pub fn name(&self) -> &'a str {
        &self.metrics.strings[self.packed.name as usize]
    }

    pub fn labels(&self) -> SampleLabels<'a> {
        SampleLabels {
            strings: &self.metrics.strings,
            pairs: self.metrics.pairs_of(self.packed),
        }
    }

    pub fn value(&self) -> f64 {
        self.packed.value
    }

    pub fn timestamp_ms(&self) -> u64 {
        self.packed.timestamp_ms
    }

    pub fn to_owned(&self) -> MetricSample {
        MetricSample {
            name: self.name().to_owned(),
            labels: Labels::from_pairs(
                self.labels()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            value: self.value(),
            timestamp_ms: self.timestamp_ms(),
        }
    }

    fn text_bytes(&self) -> usize {
        self.metrics.sample_text_bytes(self.packed)
    }
}

impl fmt::Debug for Sample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricSample")
            .field("name", &self.name())
            .field("labels", &self.labels())
            .field("value", &self.value())
            .field("timestamp_ms", &self.timestamp_ms())
            .finish()
    }
}

/// A sample's labels: keys sorted and distinct.
#[derive(Clone, Copy)]
pub struct SampleLabels<'a> {
    strings: &'a [String],
    pairs: &'a [u32],
}

impl<'a> SampleLabels<'a> {
    pub fn len(&self) -> usize {
        self.pairs.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + Clone + use<'a> {
        let strings = self.strings;
        self.pairs.chunks_exact(2).map(move |p| {
            (
                strings[p[0] as usize].as_str(),
                strings[p[1] as usize].as_str(),
            )
        })
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &'a str> + Clone + use<'a> {
        self.iter().map(|(_, v)| v)
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl fmt::Debug for SampleLabels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for SampleLabels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for Sample<'_> {
    /// As the [`MetricSample`] it stands for, field for field.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("MetricSample", 4)?;
        st.serialize_field("name", self.name())?;
        st.serialize_field("labels", &self.labels())?;
        st.serialize_field("value", &self.value())?;
        st.serialize_field("timestamp_ms", &self.timestamp_ms())?;
        st.end()
    }
}

impl Serialize for Metrics {
    /// As the list of samples it replaced.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for sample in self.iter() {
            seq.serialize_element(&sample)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Metrics, D::Error> {
        Ok(Vec::<MetricSample>::deserialize(d)?.into_iter().collect())
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Metrics {
    /// Equal when they hold the same samples, however their tables are laid out.
    fn eq(&self, other: &Metrics) -> bool {
        self.len() == other.len()
            && self.iter().zip(other.iter()).all(|(a, b)| {
                a.name() == b.name()
                    && a.value() == b.value()
                    && a.timestamp_ms() == b.timestamp_ms()
                    && a.labels().len() == b.labels().len()
                    && a.labels().iter().eq(b.labels().iter())
            })
    }
}

/// Builds a [`Metrics`] from samples given one at a time, holding each distinct string once.
#[derive(Default)]
pub struct MetricsBuilder {
    metrics: Metrics,
    index: HashMap<String, u32>,
}

impl MetricsBuilder {
    pub fn new() -> MetricsBuilder {
        MetricsBuilder::default()
    }

    fn intern(&mut self, s: String) -> u32 {
        if let Some(i) = self.index.get(&s) {
            return *i;
        }
        let i = self.metrics.strings.len() as u32;
        self.metrics.strings.push(s.clone());
        self.index.insert(s, i);
        i
    }

    /// Adds one sample; its labels are put in key order as [`Labels`] would.
    pub fn push(&mut self, name: String, labels: Labels, value: f64, timestamp_ms: u64) {
        let name = self.intern(name);
        let first_label = (self.metrics.labels.len() / 2) as u32;
        let label_count = labels.len() as u32;
        for (k, v) in labels {
            let (k, v) = (self.intern(k), self.intern(v));
            self.metrics.labels.extend([k, v]);
        }
        self.metrics.samples.push(Packed {
            name,
            first_label,
            label_count,
            value,
            timestamp_ms,
        });
    }

    pub fn finish(self) -> Metrics {
        self.metrics
    }
}

impl FromIterator<MetricSample> for Metrics {
    fn from_iter<I: IntoIterator<Item = MetricSample>>(iter: I) -> Metrics {
        let mut b = MetricsBuilder::new();
        for m in iter {
            b.push(m.name, m.labels, m.value, m.timestamp_ms);
        }
        b.finish()
    }
}

impl From<Vec<MetricSample>> for Metrics {
    fn from(samples: Vec<MetricSample>) -> Metrics {
        samples.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> MetricSample {
        MetricSample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            timestamp_ms: 7,
        }
    }

    fn samples() -> Vec<MetricSample> {
        vec![
            sample("up", &[("node", "a")], 1.0),
            sample("up", &[("node", "b")], 0.0),
            sample("lat_bucket", &[("le", "0.5"), ("node", "a")], 3.0),
            sample("empty", &[], 2.5),
            sample("dup", &[("node", "node"), ("a", "node")], -1.0),
        ]
    }

    /// Stored rows are postcard and JSON output is JSON: both must be what the list of
    /// samples wrote, byte for byte, and read back to the same samples.
    #[test]
    fn serialises_as_the_list_it_replaced() {
        let list = samples();
        let m: Metrics = list.clone().into();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            serde_json::to_string(&list).unwrap()
        );
        let bytes = postcard::to_stdvec(&m).unwrap();
        assert_eq!(bytes, postcard::to_stdvec(&list).unwrap());
        assert_eq!(postcard::from_bytes::<Metrics>(&bytes).unwrap(), m);
        let back: Metrics = serde_json::from_str(&serde_json::to_string(&list).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.to_samples(), list);
    }

    #[test]
    fn holds_each_string_once_and_reads_by_reference() {
        let m: Metrics = samples().into();
        let (strings, packed, labels) = m.table();
        let mut distinct = strings.to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), strings.len(), "{strings:?}");
        assert_eq!(packed.len(), 5);
        assert_eq!(labels.len(), 2 * 6);
        let s = m.get(2).unwrap();
        assert_eq!(s.name(), "lat_bucket");
        assert_eq!(s.labels().get("le"), Some("0.5"));
        assert_eq!(s.labels().get("nope"), None);
        assert_eq!(s.labels().values().collect::<Vec<_>>(), ["0.5", "a"]);
        assert_eq!(
            m.get(4).unwrap().labels().iter().collect::<Vec<_>>(),
            [("a", "node"), ("node", "node")]
        );
        assert_eq!(
            m.text_bytes(),
            samples()
                .iter()
                .map(|s| {
                    s.name.len()
                        + s.labels
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>()
                })
                .sum::<usize>()
        );
    }

    fn table(
        strings: &[&str],
        samples: &[(u32, u32, u32)],
        labels: &[u32],
    ) -> Result<Metrics, TableError> {
        Metrics::from_table(
            strings.iter().map(|s| s.to_string()).collect(),
            samples
                .iter()
                .map(|&(name, first_label, label_count)| Packed {
                    name,
                    first_label,
                    label_count,
                    value: 1.0,
                    timestamp_ms: 1,
                })
                .collect(),
            labels.to_vec(),
        )
    }

    /// A table names only what it holds; anything else is refused, naming the index.
    #[test]
    fn a_table_pointing_outside_itself_is_refused() {
        let e = table(&["n"], &[(1, 0, 0)], &[]).unwrap_err();
        assert!(
            e.to_string().contains("sample 0 is named by string 1 of 1"),
            "{e}"
        );
        let e = table(&["n", "k"], &[(0, 0, 1)], &[0, 9]).unwrap_err();
        assert!(
            e.to_string().contains("label index 1 names string 9 of 2"),
            "{e}"
        );
        let e = table(&["n", "k"], &[(0, 0, 2)], &[1, 1]).unwrap_err();
        assert!(
            e.to_string().contains("sample 0 has label pairs 0..2 of 1"),
            "{e}"
        );
        let e = table(&["n"], &[(0, u32::MAX, u32::MAX)], &[0, 0]).unwrap_err();
        assert!(e.to_string().contains("label pairs"), "{e}");
        let e = table(&["n"], &[], &[0]).unwrap_err();
        assert!(e.to_string().contains("not key/value pairs"), "{e}");
        // Samples may share label pairs; an empty table is fine.
        assert_eq!(
            table(&["n", "k"], &[(0, 0, 1), (0, 0, 1)], &[1, 0])
                .unwrap()
                .len(),
            2
        );
        assert!(table(&[], &[], &[]).unwrap().is_empty());
    }

    #[test]
    fn keys_out_of_order_or_repeated_are_put_as_labels_would() {
        // strings: 0 name, 1 "b", 2 "a", 3 "x", 4 "y"
        let m = table(
            &["name", "b", "a", "x", "y"],
            &[(0, 0, 3), (0, 3, 1)],
            &[1, 3, 2, 3, 1, 4, 2, 4],
        )
        .unwrap();
        let first: Vec<_> = m.get(0).unwrap().labels().iter().collect();
        assert_eq!(first, [("a", "x"), ("b", "y")], "sorted, the last `b` kept");
        assert_eq!(
            m.get(1).unwrap().labels().iter().collect::<Vec<_>>(),
            [("a", "y")]
        );
        let expected: Metrics = vec![
            sample("name", &[("b", "x"), ("a", "x"), ("b", "y")], 1.0),
            sample("name", &[("a", "y")], 1.0),
        ]
        .into_iter()
        .map(|mut s| {
            s.timestamp_ms = 1;
            s
        })
        .collect();
        assert_eq!(m, expected);
    }

    fn cut(s: &mut String, max: usize) -> bool {
        if s.len() <= max {
            return false;
        }
        s.truncate(max);
        true
    }

    const CAPS: MetricCaps = MetricCaps {
        max_samples: 100,
        max_labels: 2,
        max_short: 4,
        max_long: 6,
        max_text_bytes: usize::MAX,
    };

    #[test]
    fn caps_cut_names_and_keys_short_and_values_long() {
        let mut m: Metrics = vec![
            sample("longname", &[("k", "longvalue")], 1.0),
            // The same string as a key (short) and as a value (long).
            sample("n", &[("abcdefgh", "abcdefgh")], 1.0),
            sample("n", &[("a", "1"), ("b", "2"), ("c", "3")], 1.0),
        ]
        .into();
        let cuts = m.cap(&CAPS, cut);
        assert_eq!(cuts.samples, 0);
        assert_eq!(
            cuts.strings,
            1 + 1 + 2 + 1,
            "name, value, key and value, one pair"
        );
        let got = m.to_samples();
        assert_eq!(got[0].name, "long");
        assert_eq!(got[0].labels["k"], "longva");
        assert_eq!(got[1].labels["abcd"], "abcdef");
        assert_eq!(got[2].labels.len(), 2);
        assert_eq!(got[2].labels.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn keys_cut_to_the_same_prefix_stay_distinct() {
        let mut m: Metrics = vec![sample(
            "n",
            &[("keyA", "1"), ("keyB", "2"), ("keyCC", "3")],
            1.0,
        )]
        .into();
        let caps = MetricCaps {
            max_short: 3,
            max_labels: 9,
            ..CAPS
        };
        m.cap(&caps, cut);
        let got = m.to_samples();
        assert_eq!(got[0].labels.len(), 1, "{got:?}");
        assert_eq!(
            got[0].labels["key"], "3",
            "the last one kept, as a map would"
        );
    }

    /// A few long strings used many times stand for far more text than they take: the
    /// budget counts what they stand for and cuts the samples past it.
    #[test]
    fn the_text_budget_counts_strings_at_every_use() {
        let long = "v".repeat(1000);
        let strings = vec!["n".to_string(), "k".to_string(), long];
        let samples: Vec<Packed> = (0..10_000)
            .map(|_| Packed {
                name: 0,
                first_label: 0,
                label_count: 1,
                value: 0.0,
                timestamp_ms: 0,
            })
            .collect();
        let mut m = Metrics::from_table(strings, samples, vec![1, 2]).unwrap();
        assert_eq!(m.text_bytes(), 10_000 * 1002);
        let caps = MetricCaps {
            max_samples: usize::MAX,
            max_labels: 64,
            max_short: 256,
            max_long: 4096,
            max_text_bytes: 1_000_000,
        };
        let cuts = m.cap(&caps, cut);
        assert_eq!(m.len(), 998, "998 × 1002 bytes fit in a million");
        assert_eq!(cuts.over_budget, 10_000 - 998);
        assert!(m.text_bytes() <= 1_000_000);
    }
}
