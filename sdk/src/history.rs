//! Lookups over observations, for `check-invariants` (which gets the latest few, oldest
//! first) and for plugins that build observations from scrapes.

use crate::prometheus::Histogram;
use crate::{Component, Kv, MetricSample, Observation};

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

fn labels_match(labels: &[Kv], filter: &[(&str, &str)]) -> bool {
    filter
        .iter()
        .all(|(k, v)| labels.iter().any(|l| same(&l.key, k) && same(&l.value, v)))
}

/// The histogram `name` from `series` (samples whose names start with it) that match
/// `filter`.
fn histogram_of<'a>(
    series: impl Iterator<Item = &'a MetricSample>,
    name: &str,
    filter: &[(&str, &str)],
) -> Option<Histogram> {
    Histogram::fold(
        series
            .filter(|s| labels_match(&s.labels, filter))
            .map(|s| (s.name.as_str(), s.labels.as_slice(), s.value)),
        name,
        &[],
        |l: &'a Kv| (l.key.as_str(), l.value.as_str()),
    )
}

/// Queries over one observation's metrics and components.
pub trait Samples {
    /// Samples named `name` whose labels include all of `filter`.
    fn samples<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> Box<dyn Iterator<Item = &'a MetricSample> + 'a>;

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
    ) -> Box<dyn Iterator<Item = &'a MetricSample> + 'a> {
        Box::new(
            self.metrics
                .iter()
                .filter(move |s| same(&s.name, name) && labels_match(&s.labels, filter)),
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
    by_name: std::collections::BTreeMap<&'a str, Vec<&'a MetricSample>>,
}

impl<'a> Indexed<'a> {
    pub fn new(obs: &'a Observation) -> Indexed<'a> {
        let mut by_name: std::collections::BTreeMap<&str, Vec<&MetricSample>> =
            std::collections::BTreeMap::new();
        // Samples of one name usually come together: extend the current run without a
        // lookup, and look the name up only where a run starts.
        let mut run: Option<(&str, Vec<&MetricSample>)> = None;
        for m in &obs.metrics {
            match &mut run {
                Some((name, v)) if same(name, &m.name) => v.push(m),
                _ => {
                    if let Some((name, v)) = run.take() {
                        by_name.entry(name).or_default().extend(v);
                    }
                    run = Some((m.name.as_str(), vec![m]));
                }
            }
        }
        if let Some((name, v)) = run {
            by_name.entry(name).or_default().extend(v);
        }
        Indexed { obs, by_name }
    }

    /// The observation itself.
    pub fn observation(&self) -> &'a Observation {
        self.obs
    }

    /// Every sample named `name`.
    pub fn named(&self, name: &str) -> &[&'a MetricSample] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
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
    ) -> Box<dyn Iterator<Item = &'b MetricSample> + 'b> {
        Box::new(
            self.named(name)
                .iter()
                .copied()
                .filter(move |s| labels_match(&s.labels, filter)),
        )
    }

    fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Option<Histogram> {
        // The histogram's series are `name` and the names that extend it (`_bucket`, ...).
        let series = self
            .by_name
            .range(name..)
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

/// The value of label `key` on a sample.
pub fn label<'a>(sample: &'a MetricSample, key: &str) -> Option<&'a str> {
    sample
        .labels
        .iter()
        .find(|l| same(&l.key, key))
        .map(|l| l.value.as_str())
}

#[cfg(test)]
mod tests {
    use super::same;

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
