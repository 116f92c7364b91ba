//! The observations an instance holds for `check-retained` (contract 0.3).
//!
//! A host that keeps one instance across ticks asks it to check the window it already
//! holds instead of sending every observation again each tick. What is held must be exactly
//! what the host would send: the successful observations `observe` returned, replaced by
//! the history `check-invariants` was given, with labels and attributes in the host's form
//! (sorted by key, the last of equal keys kept). [`export_subject!`](crate::export_subject)
//! wires this in; plugins never call it.

use crate::{Kv, Observation};
use std::cell::RefCell;
use std::collections::VecDeque;

/// Held until a longer window is asked for.
const DEFAULT_KEEP: usize = 8;

struct Held {
    window: VecDeque<Observation>,
    keep: usize,
}

thread_local! {
    static HELD: RefCell<Held> = const {
        RefCell::new(Held { window: VecDeque::new(), keep: DEFAULT_KEEP })
    };
}

/// Sorts by key and keeps the last of equal keys, as the host's label maps do.
fn normalize(kvs: &mut Vec<Kv>) {
    if kvs.windows(2).all(|w| w[0].key < w[1].key) {
        return;
    }
    // Stable: among equal keys the original order stays, so the last one is the one kept:
    // `dedup_by` drops the later of two equal neighbours, after handing it its value.
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    kvs.dedup_by(|later, kept| {
        let same = later.key == kept.key;
        if same {
            std::mem::swap(&mut later.value, &mut kept.value);
        }
        same
    });
}

/// Puts `o` in the host's form, in place.
fn to_host_form(o: &mut Observation) {
    for c in &mut o.components {
        normalize(&mut c.attributes);
    }
    o.metrics.normalize();
    for e in &mut o.events {
        normalize(&mut e.attributes);
    }
}

/// `o` in the host's form.
pub fn host_form(o: &Observation) -> Observation {
    let mut held = o.clone();
    to_host_form(&mut held);
    held
}

/// After a successful `observe`: hold what was built (what was sent is its table, since
/// contract 0.5, so the observation itself is kept rather than a copy), dropping the
/// oldest held observation when the window is full.
#[doc(hidden)]
pub fn observed(mut o: Observation) {
    to_host_form(&mut o);
    o.metrics.seal();
    HELD.with_borrow_mut(|h| {
        h.window.push_back(o);
        while h.window.len() > h.keep {
            h.window.pop_front();
        }
    });
}

/// Before `check-invariants`: the history given replaces what is held.
#[doc(hidden)]
pub fn given(history: &[Observation]) {
    HELD.with_borrow_mut(|h| {
        h.keep = h.keep.max(history.len());
        h.window = history.iter().map(host_form).collect();
    });
}

/// `check-retained`: runs `check` over the newest `count` held observations, or says it
/// holds too few (and keeps more from now on).
#[doc(hidden)]
pub fn check<T>(count: u32, check: impl FnOnce(&[Observation]) -> T) -> Option<T> {
    let count = count as usize;
    // Taken out while the check runs, so a check that observes again cannot alias it.
    let mut window = HELD.with_borrow_mut(|h| {
        h.keep = h.keep.max(count);
        std::mem::take(&mut h.window)
    });
    let out = (window.len() >= count).then(|| {
        let slice = window.make_contiguous();
        check(&slice[slice.len() - count..])
    });
    HELD.with_borrow_mut(|h| {
        if h.window.is_empty() {
            h.window = window;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Component, Event, MetricSample, Problem, kv};

    #[test]
    fn labels_take_the_host_form() {
        let mut l = vec![kv("b", 1), kv("a", 1), kv("b", 2), kv("c", 0)];
        normalize(&mut l);
        let got: Vec<(String, String)> = l.into_iter().map(|k| (k.key, k.value)).collect();
        assert_eq!(
            got,
            [("a", "1"), ("b", "2"), ("c", "0")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    fn obs(t: u64) -> Observation {
        Observation {
            timestamp_ms: t,
            components: vec![],
            metrics: Default::default(),
            events: vec![],
            problems: vec![],
        }
    }

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> MetricSample {
        MetricSample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| kv(*k, v)).collect(),
            value,
            timestamp_ms: 1,
        }
    }

    fn rich(t: u64, samples: usize, unsorted: bool) -> Observation {
        let mut o = obs(t);
        o.components.push(Component {
            id: format!("c{t}"),
            kind: "node".into(),
            address: String::new(),
            state: crate::ComponentState::Up,
            attributes: vec![kv("z", t), kv("a", "x")],
        });
        o.metrics = (0..samples)
            .map(|i| {
                let i = i.to_string();
                if unsorted {
                    sample(
                        "m",
                        &[("node", "n1"), ("key", &i), ("node", "n2")],
                        t as f64,
                    )
                } else {
                    sample("m", &[("key", &i), ("node", "n1")], t as f64)
                }
            })
            .collect::<Vec<_>>()
            .into();
        o.events.push(Event {
            timestamp_ms: t,
            component: "c".into(),
            severity: crate::Severity::Info,
            message: format!("event {t}"),
            attributes: vec![kv("b", 1), kv("a", 2)],
        });
        o.problems.push(Problem {
            source: "s".into(),
            message: format!("problem {t}"),
        });
        o
    }

    /// The host form made the plain way, from a fresh clone.
    fn cloned_host_form(o: &Observation) -> Observation {
        let mut o = o.clone();
        o.components
            .iter_mut()
            .for_each(|c| normalize(&mut c.attributes));
        o.metrics = o
            .metrics
            .to_samples()
            .into_iter()
            .map(|mut m| {
                normalize(&mut m.labels);
                m
            })
            .collect();
        o.events
            .iter_mut()
            .for_each(|e| normalize(&mut e.attributes));
        o
    }

    #[test]
    fn what_is_held_is_the_host_form_whatever_shape_it_had() {
        given(&[]);
        // Shapes that grow, shrink, change order and carry repeated keys, each copied into a
        // held observation of another shape.
        let shapes = [(40, false), (3, true), (60, true), (0, false), (25, false)];
        for round in 0..3 {
            for (i, (samples, unsorted)) in shapes.iter().enumerate() {
                let o = rich((round * 10 + i) as u64, *samples, *unsorted);
                observed(o.clone());
                let last = check(1, |w| w[0].clone()).expect("one held");
                assert_eq!(
                    format!("{last:?}"),
                    format!("{:?}", cloned_host_form(&o)),
                    "round {round}, shape {i}"
                );
                if *unsorted {
                    let first = last.metrics.get(0).unwrap();
                    assert_eq!(first.labels.len(), 2, "repeated key kept once");
                    assert_eq!(first.label("node"), Some("n2"), "the last one kept");
                }
            }
        }
        let held = check(DEFAULT_KEEP as u32, |w| w.len());
        assert_eq!(held, Some(DEFAULT_KEEP), "the window keeps its length");
    }

    #[test]
    fn what_observe_built_is_held_not_a_copy() {
        given(&[]);
        for t in 0..DEFAULT_KEEP as u64 {
            observed(rich(t, 10, false));
        }
        let o = rich(100, 10, false);
        let key = |o: &Observation| {
            o.metrics
                .get(5)
                .unwrap()
                .labels
                .iter()
                .next()
                .unwrap()
                .key
                .as_ptr()
        };
        let built = key(&o);
        observed(o);
        let held = check(1, |w| key(&w[0])).expect("held");
        assert_eq!(
            built, held,
            "the held observation owns the strings observe built"
        );
        assert_eq!(
            check(DEFAULT_KEEP as u32 + 1, |w| w.len()),
            None,
            "the oldest made room"
        );
    }

    #[test]
    fn the_window_is_what_was_observed_or_given() {
        let stamps = |count| {
            check(count, |w| {
                w.iter().map(|o| o.timestamp_ms).collect::<Vec<_>>()
            })
        };
        given(&[]);
        assert_eq!(stamps(1), None);
        observed(obs(1));
        observed(obs(2));
        assert_eq!(stamps(2), Some(vec![1, 2]));
        assert_eq!(stamps(3), None, "holds too few");
        given(&[obs(7), obs(8), obs(9)]);
        assert_eq!(stamps(2), Some(vec![8, 9]));
        for t in 10..30 {
            observed(obs(t));
        }
        assert_eq!(stamps(8), Some((22..30).collect()), "keeps at least 8");
    }
}
