//! Lookups over observations, for `check-invariants` (which gets the latest few, oldest
//! first) and for plugins that build observations from scrapes.

use crate::prometheus::Histogram;
use crate::{Component, Labels, Observation, Sample};

/// `a == b`, eight bytes at a time. The guest's libc compares strings a byte at a time,
/// and the lookups here compare the same long metric names and label keys over and over:
/// in perf of the rate limiter's checks, byte-wise `memcmp` was the guest's costliest
/// function, most of it from these lookups.
pub(crate) fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("chunks of eight"));
    (&mut wa).zip(&mut wb).all(|(x, y)| word(x) == word(y)) && wa.remainder() == wb.remainder()
}

fn labels_match(labels: Labels<'_>, filter: &[(&str, &str)]) -> bool {
    filter
        .iter()
        .all(|(k, v)| labels.iter().any(|l| same(l.key, k) && same(l.value, v)))
}

/// The histogram `name` from `series` (samples whose names start with it) that match
/// `filter`.
fn histogram_of<'a>(
    series: impl Iterator<Item = Sample<'a>>,
    name: &str,
    filter: &[(&str, &str)],
) -> Option<Histogram> {
    Histogram::fold(
        series
            .filter(|s| labels_match(s.labels, filter))
            .map(|s| (s.name, s.labels.pairs(), s.value)),
        name,
        &[],
    )
}

/// Queries over one observation's metrics and components.
pub trait Samples {
    /// Samples named `name` whose labels include all of `filter`.
    fn samples<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> Box<dyn Iterator<Item = Sample<'a>> + 'a>;

    /// The sum of matching samples, or None when there are none.
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        let mut it = self.samples(name, filter).peekable();
        it.peek()?;
        Some(it.map(|s| s.value).sum())
    }

    /// The histogram `name` over matching samples.
    fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Option<Histogram>;

    fn component(&self, id: &str) -> Option<&Component>;
}

impl Samples for Observation {
    fn samples<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> Box<dyn Iterator<Item = Sample<'a>> + 'a> {
        Box::new(
            self.metrics
                .iter()
                .filter(move |s| same(s.name, name) && labels_match(s.labels, filter)),
        )
    }

    fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Option<Histogram> {
        histogram_of(
            self.metrics.iter().filter(|s| s.name.starts_with(name)),
            name,
            filter,
        )
    }

    fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }
}

/// An observation with its samples indexed by name, for checks that look many series up:
/// each lookup reads only the samples of one name instead of scanning them all. Derefs to
/// the observation.
///
/// ```ignore
/// let cur = Indexed::new(history.last()?);
/// let errors = cur.sum("http_errors_total", &[("node", "a")]);
/// ```
pub struct Indexed<'a> {
    obs: &'a Observation,
    /// Each name's samples, in name order.
    by_name: Vec<(&'a str, Vec<Sample<'a>>)>,
}

/// Up to this many names, a name is found by a scan; past it (a subject with many names)
/// by a binary search, so the cost cannot grow with the square of the subject's size.
const SCAN_NAMES: usize = 64;

impl<'a> Indexed<'a> {
    pub fn new(obs: &'a Observation) -> Indexed<'a> {
        // A sample's name is an index into its observation's table, so samples are grouped
        // by that number, with no string compared: slot `name_id` holds where the name's
        // group is in `by_name`.
        let mut slot: Vec<u32> = Vec::new();
        let mut by_name: Vec<(&'a str, Vec<Sample<'a>>)> = Vec::new();
        for m in obs.metrics.iter() {
            let id = m.name_id as usize;
            if id >= slot.len() {
                slot.resize(id + 1, u32::MAX);
            }
            if slot[id] == u32::MAX {
                slot[id] = by_name.len() as u32;
                by_name.push((m.name, Vec::new()));
            }
            by_name[slot[id] as usize].1.push(m);
        }
        // Names are distinct, so an unstable sort loses nothing; each name's samples keep
        // the observation's order.
        by_name.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Indexed { obs, by_name }
    }

    /// The observation itself.
    pub fn observation(&self) -> &'a Observation {
        self.obs
    }

    /// Every sample named `name`.
    pub fn named(&self, name: &str) -> &[Sample<'a>] {
        let found = if self.by_name.len() <= SCAN_NAMES {
            self.by_name.iter().find(|(n, _)| same(n, name))
        } else {
            self.by_name
                .binary_search_by(|(n, _)| (*n).cmp(name))
                .ok()
                .map(|i| &self.by_name[i])
        };
        found.map_or(&[], |(_, v)| v.as_slice())
    }
}

impl std::ops::Deref for Indexed<'_> {
    type Target = Observation;
    fn deref(&self) -> &Observation {
        self.obs
    }
}

impl Samples for Indexed<'_> {
    fn samples<'b>(
        &'b self,
        name: &'b str,
        filter: &'b [(&'b str, &'b str)],
    ) -> Box<dyn Iterator<Item = Sample<'b>> + 'b> {
        Box::new(
            self.named(name)
                .iter()
                .copied()
                .filter(move |s| labels_match(s.labels, filter)),
        )
    }

    fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Option<Histogram> {
        // The histogram's series are `name` and the names that extend it (`_bucket`, ...).
        let from = self.by_name.partition_point(|(n, _)| *n < name);
        let series = self.by_name[from..]
            .iter()
            .take_while(|(n, _)| n.starts_with(name))
            .flat_map(|(_, v)| v.iter().copied());
        histogram_of(series, name, filter)
    }

    fn component(&self, id: &str) -> Option<&Component> {
        self.obs.component(id)
    }
}

impl Component {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| same(&a.key, key))
            .map(|a| a.value.as_str())
    }
}

/// The value of label `key` on a sample (as [`Sample::label`]).
pub fn label<'a>(sample: impl std::borrow::Borrow<Sample<'a>>, key: &str) -> Option<&'a str> {
    sample.borrow().label(key)
}

#[cfg(test)]
mod tests {
    use super::{Indexed, Samples, same};
    use crate::{MetricSample, Observation, kv};

    fn only_metrics(metrics: Vec<MetricSample>) -> Observation {
        Observation {
            timestamp_ms: 1,
            components: vec![],
            metrics: metrics.into(),
            events: vec![],
            problems: vec![],
        }
    }

    #[test]
    fn the_index_answers_as_a_scan_of_the_observation_does() {
        let sample = |name: &str, labels: &[(&str, &str)], value: f64| MetricSample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| kv(*k, v)).collect(),
            value,
            timestamp_ms: 1,
        };
        // Names interleaved and coming back, as a subject's per-key views do; a histogram
        // whose series share a prefix with another name.
        let mut metrics = Vec::new();
        for (i, node) in ["a", "b"].iter().enumerate() {
            let base = i as f64 * 10.0;
            metrics.push(sample("views", &[("node", node)], base + 1.0));
            metrics.push(sample("views_local", &[("node", node)], base + 2.0));
            metrics.push(sample(
                "lat_bucket",
                &[("le", "0.1"), ("node", node)],
                base + 3.0,
            ));
            metrics.push(sample(
                "lat_bucket",
                &[("le", "+Inf"), ("node", node)],
                base + 4.0,
            ));
            metrics.push(sample("views", &[("node", node)], base + 5.0));
            metrics.push(sample("lat_sum", &[("node", node)], base + 0.5));
            metrics.push(sample("lat_count", &[("node", node)], base + 4.0));
            metrics.push(sample("latency_other", &[("node", node)], base + 6.0));
        }
        let obs = only_metrics(metrics);
        let idx = Indexed::new(&obs);
        let values = |it: Box<dyn Iterator<Item = crate::Sample<'_>> + '_>| {
            it.map(|s| s.value).collect::<Vec<_>>()
        };
        for name in [
            "views",
            "views_local",
            "lat_bucket",
            "lat_sum",
            "latency_other",
            "none",
        ] {
            for filter in [&[][..], &[("node", "b")][..]] {
                assert_eq!(
                    values(idx.samples(name, filter)),
                    values(obs.samples(name, filter)),
                    "{name} {filter:?}"
                );
            }
        }
        assert_eq!(values(idx.samples("views", &[])), [1.0, 5.0, 11.0, 15.0]);
        for node in ["a", "b"] {
            let h = idx.histogram("lat", &[("node", node)]);
            assert!(h.is_some(), "{node}");
            assert_eq!(h, obs.histogram("lat", &[("node", node)]), "{node}");
        }
        assert_eq!(idx.named("none").len(), 0);
    }

    #[test]
    fn many_names_interleaved_are_indexed_alike() {
        // More names than a scan is used for, each coming back three times.
        let names: Vec<String> = (0..3 * super::SCAN_NAMES)
            .map(|i| format!("m{i}"))
            .collect();
        let metrics: Vec<MetricSample> = (0..3)
            .flat_map(|round| {
                names.iter().map(move |n| MetricSample {
                    name: n.clone(),
                    labels: vec![],
                    value: round as f64,
                    timestamp_ms: 1,
                })
            })
            .collect();
        let obs = only_metrics(metrics);
        let idx = Indexed::new(&obs);
        for n in &names {
            let got: Vec<f64> = idx.named(n).iter().map(|s| s.value).collect();
            assert_eq!(got, [0.0, 1.0, 2.0], "{n}");
        }
        assert!(idx.named("m").is_empty());
    }

    #[test]
    fn same_agrees_with_eq_at_every_length_and_position() {
        let base: String = ('a'..='z').cycle().take(40).collect();
        for len in 0..=base.len() {
            let a = &base[..len];
            assert!(same(a, a), "{a}");
            assert!(!same(a, &base[..len.saturating_sub(1)]) || len == 0);
            // A difference at each position, in the words and in the remainder.
            for at in 0..len {
                let mut b = a.as_bytes().to_vec();
                b[at] = b'#';
                let b = String::from_utf8(b).unwrap();
                assert!(!same(a, &b), "{a} vs {b}");
            }
        }
        assert!(same("", ""));
        assert!(!same("ratelimiter_mode", "ratelimiter_modes"));
    }
}
