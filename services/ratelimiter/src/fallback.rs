//! Local counting used when Redis cannot be used (fail-open policy or local-only chaos).
//!
//! Each node counts on its own clock against the last limit it knew, so N degraded nodes can
//! together admit up to N times the limit: the realistic way limits drift during an outage.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::script::{self, Outcome};

/// Above this many keys, entries whose windows are over are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_ms: u64,
    index: u64,
    current: u64,
    previous: u64,
}

impl Entry {
    /// Move the entry to `index`, shifting the current count into "previous" when adjacent.
    fn roll(&mut self, window_ms: u64, index: u64) {
        if self.window_ms != window_ms {
            *self = Entry {
                window_ms,
                index,
                current: 0,
                previous: 0,
            };
        } else if index == self.index + 1 {
            self.previous = self.current;
            self.current = 0;
            self.index = index;
        } else if index > self.index + 1 {
            self.previous = 0;
            self.current = 0;
            self.index = index;
        }
        // index < self.index: the node clock stepped back; keep counting in the newer window.
    }
}

/// This node's local view of one key, as served by `/v1/counters`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LocalView {
    pub window_index: u64,
    pub current: u64,
    pub previous: u64,
    pub estimate: f64,
}

#[derive(Debug, Default)]
pub struct LocalCounters {
    map: Mutex<HashMap<String, Entry>>,
}

impl LocalCounters {
    /// Decide locally with the sliding-window rule and count the cost if allowed.
    pub fn decide(
        &self,
        key: &str,
        cost: u64,
        limit: u64,
        window_ms: u64,
        blocked: bool,
        now_ms: u64,
    ) -> Outcome {
        let window_ms = window_ms.max(1);
        let index = now_ms / window_ms;
        let elapsed = now_ms - index * window_ms;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, e| e.index + 1 >= now_ms / e.window_ms.max(1));
        }
        let entry = map.entry(key.to_owned()).or_insert(Entry {
            window_ms,
            index,
            current: 0,
            previous: 0,
        });
        entry.roll(window_ms, index);
        let out = script::outcome(
            limit,
            window_ms,
            elapsed,
            entry.previous,
            entry.current,
            cost,
            blocked,
        );
        if out.allowed {
            entry.current += cost;
        }
        out
    }

    /// Current local counts for a key (zeros when the node never counted it locally).
    pub fn view(&self, key: &str, window_ms: u64, now_ms: u64) -> LocalView {
        let window_ms = window_ms.max(1);
        let index = now_ms / window_ms;
        let elapsed = now_ms - index * window_ms;
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut entry = map.get(key).copied().unwrap_or(Entry {
            window_ms,
            index,
            current: 0,
            previous: 0,
        });
        entry.roll(window_ms, index);
        LocalView {
            window_index: entry.index,
            current: entry.current,
            previous: entry.previous,
            estimate: script::estimate(entry.previous, entry.current, window_ms, elapsed),
        }
    }

    /// Forget the key's local counts. Returns whether there were any.
    pub fn reset(&self, key: &str) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_to_the_limit_then_slides() {
        let lc = LocalCounters::default();
        let t0 = 10_000; // window index 10 of 1000 ms
        let allowed = (0..15)
            .filter(|_| lc.decide("k", 1, 10, 1000, false, t0).allowed)
            .count();
        assert_eq!(allowed, 10);
        // Half way through the next window, 5 of the previous 10 still count.
        let v = lc.view("k", 1000, 11_500);
        assert_eq!((v.window_index, v.current, v.previous), (11, 0, 10));
        assert_eq!(v.estimate, 5.0);
        let allowed = (0..15)
            .filter(|_| lc.decide("k", 1, 10, 1000, false, 11_500).allowed)
            .count();
        assert_eq!(allowed, 5);
        assert!(lc.reset("k"));
        assert!(lc.decide("k", 1, 10, 1000, false, 11_500).allowed);
    }

    #[test]
    fn blocked_is_always_denied() {
        let lc = LocalCounters::default();
        let o = lc.decide("b", 1, 10, 1000, true, 5);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_ms, 1000);
    }
}
