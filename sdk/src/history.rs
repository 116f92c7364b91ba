//! Lookups over observations, for `check-invariants` (which gets the latest few, oldest
//! first) and for plugins that build observations from scrapes.

use crate::prometheus::{Histogram, Sample};
use crate::{Component, Kv, MetricSample, Observation};

fn labels_match(labels: &[Kv], filter: &[(&str, &str)]) -> bool {
    filter
        .iter()
        .all(|(k, v)| labels.iter().any(|l| l.key == *k && l.value == *v))
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
                .filter(move |s| s.name == name && labels_match(&s.labels, filter)),
        )
    }

    fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Option<Histogram> {
        let samples: Vec<Sample> = self
            .metrics
            .iter()
            .filter(|s| s.name.starts_with(name) && labels_match(&s.labels, filter))
            .map(|s| Sample {
                name: s.name.clone(),
                labels: s
                    .labels
                    .iter()
                    .map(|l| (l.key.clone(), l.value.clone()))
                    .collect(),
                value: s.value,
            })
            .collect();
        Histogram::from_samples(
            samples
                .iter()
                .map(|s| (s.name.as_str(), s.labels.as_slice(), s.value)),
            name,
            &[],
        )
    }

    fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }
}

impl Component {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.value.as_str())
    }
}

/// The value of label `key` on a sample.
pub fn label<'a>(sample: &'a MetricSample, key: &str) -> Option<&'a str> {
    sample
        .labels
        .iter()
        .find(|l| l.key == key)
        .map(|l| l.value.as_str())
}
