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

/// `o` in the host's form.
pub fn host_form(o: &Observation) -> Observation {
    let mut o = o.clone();
    for c in &mut o.components {
        normalize(&mut c.attributes);
    }
    for m in &mut o.metrics {
        normalize(&mut m.labels);
    }
    for e in &mut o.events {
        normalize(&mut e.attributes);
    }
    o
}

/// After a successful `observe`: hold what was returned.
#[doc(hidden)]
pub fn observed(o: &Observation) {
    let held = host_form(o);
    HELD.with_borrow_mut(|h| {
        h.window.push_back(held);
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
    use crate::kv;

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
            metrics: vec![],
            events: vec![],
            problems: vec![],
        }
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
        observed(&obs(1));
        observed(&obs(2));
        assert_eq!(stamps(2), Some(vec![1, 2]));
        assert_eq!(stamps(3), None, "holds too few");
        given(&[obs(7), obs(8), obs(9)]);
        assert_eq!(stamps(2), Some(vec![8, 9]));
        for t in 10..30 {
            observed(&obs(t));
        }
        assert_eq!(stamps(8), Some((22..30).collect()), "keeps at least 8");
    }
}
