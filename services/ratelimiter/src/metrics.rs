//! Prometheus metrics, plus the bounded per-key tally that feeds both the top-keys metric and
//! the `/v1/counters` views.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Sub-millisecond resolution: a decision is ~0.1–1 ms when healthy.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Keys kept in memory for tallies; past this the least-used are evicted in a batch.
pub const MAX_TRACKED_KEYS: usize = 1000;
const EVICT_BATCH: usize = 100;
/// Keys exported individually in `ratelimiter_key_decisions_total`.
pub const TOP_KEYS: usize = 20;
/// Label value that sums every key outside the top.
pub const OTHER_KEY: &str = "_other";

/// Every value of the `mode` label, exported one-hot.
pub const MODES: &[&str] = &[
    "normal",
    "fail_open",
    "fail_closed",
    "local_only",
    "draining",
];

pub struct Metrics {
    registry: Registry,
    pub allowed: IntCounter,
    pub denied: IntCounter,
    pub failed_open: IntCounter,
    pub failed_closed: IntCounter,
    pub fallback_allowed: IntCounter,
    pub fallback_denied: IntCounter,
    pub decision_duration: Histogram,
    pub redis_errors: IntCounterVec,
    pub redis_duration: Histogram,
    pub redis_up: IntGauge,
    mode: IntGaugeVec,
    pub keys: Arc<KeyTracker>,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "ratelimiter_decisions_total",
                "Decisions by result: allowed/denied via Redis, failed_open (decided locally \
                 without Redis), failed_closed (refused without Redis)",
            ),
            &["result"],
        )?;
        let fallback = IntCounterVec::new(
            Opts::new(
                "ratelimiter_fallback_decisions_total",
                "Decisions taken locally without Redis, by outcome",
            ),
            &["outcome"],
        )?;
        let decision_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ratelimiter_decision_duration_seconds",
                "Time to decide one /v1/check, including Redis and any injected latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let redis_errors = IntCounterVec::new(
            Opts::new(
                "ratelimiter_redis_errors_total",
                "Failed Redis calls by kind",
            ),
            &["kind"],
        )?;
        let redis_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ratelimiter_redis_duration_seconds",
                "Duration of Redis calls made by this node",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let redis_up = IntGauge::new(
            "ratelimiter_redis_up",
            "1 when the last Redis probe succeeded",
        )?;
        let mode = IntGaugeVec::new(
            Opts::new("ratelimiter_mode", "Current node mode (one-hot)"),
            &["mode"],
        )?;
        let keys = Arc::new(KeyTracker::new()?);
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(fallback.clone()))?;
        registry.register(Box::new(decision_duration.clone()))?;
        registry.register(Box::new(redis_errors.clone()))?;
        registry.register(Box::new(redis_duration.clone()))?;
        registry.register(Box::new(redis_up.clone()))?;
        registry.register(Box::new(mode.clone()))?;
        registry.register(Box::new(KeyCollector(keys.clone())))?;
        for m in MODES {
            mode.with_label_values(&[*m]).set(0);
        }
        for k in ["timeout", "connection", "io", "server", "response", "other"] {
            redis_errors.with_label_values(&[k]);
        }
        Ok(Metrics {
            allowed: decisions.with_label_values(&["allowed"]),
            denied: decisions.with_label_values(&["denied"]),
            failed_open: decisions.with_label_values(&["failed_open"]),
            failed_closed: decisions.with_label_values(&["failed_closed"]),
            fallback_allowed: fallback.with_label_values(&["allowed"]),
            fallback_denied: fallback.with_label_values(&["denied"]),
            registry,
            decision_duration,
            redis_errors,
            redis_duration,
            redis_up,
            mode,
            keys,
        })
    }

    /// Set the one-hot mode gauge (`mode` is one of [`MODES`]).
    pub fn set_mode(&self, current: &str) {
        for m in MODES {
            self.mode
                .with_label_values(&[*m])
                .set(i64::from(*m == current));
        }
    }

    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::with_capacity(8192);
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Tallies for one key: lifetime totals plus the decisions in the last two windows.
#[derive(Debug, Clone, Default)]
pub struct KeyStats {
    pub allowed_total: u64,
    pub denied_total: u64,
    window_ms: u64,
    cur_index: u64,
    cur: (u64, u64),
    prev_index: u64,
    prev: (u64, u64),
}

impl KeyStats {
    fn add(&mut self, allowed: bool, window_ms: u64, index: u64) {
        if allowed {
            self.allowed_total += 1;
        } else {
            self.denied_total += 1;
        }
        if self.window_ms != window_ms {
            self.window_ms = window_ms;
            self.cur_index = index;
            self.cur = (0, 0);
            self.prev = (0, 0);
            self.prev_index = index.wrapping_sub(1);
        } else if index > self.cur_index {
            self.prev = if index == self.cur_index + 1 {
                self.cur
            } else {
                (0, 0)
            };
            self.prev_index = index - 1;
            self.cur_index = index;
            self.cur = (0, 0);
        }
        // Decisions made on the node clock may land in an older window than the last
        // Redis-clock decision; count them there if it is still tracked.
        let slot = if index == self.cur_index {
            Some(&mut self.cur)
        } else if index == self.prev_index {
            Some(&mut self.prev)
        } else {
            None
        };
        if let Some(s) = slot {
            if allowed {
                s.0 += 1;
            } else {
                s.1 += 1;
            }
        }
    }

    /// (allowed, denied) for a window index, zeros if it is not one of the last two.
    pub fn in_window(&self, index: u64) -> (u64, u64) {
        if self.window_ms == 0 {
            (0, 0)
        } else if index == self.cur_index {
            self.cur
        } else if index == self.prev_index {
            self.prev
        } else {
            (0, 0)
        }
    }

    fn total(&self) -> u64 {
        self.allowed_total + self.denied_total
    }
}

#[derive(Default)]
struct TrackerInner {
    keys: HashMap<String, KeyStats>,
    allowed_total: u64,
    denied_total: u64,
}

/// Bounded map of per-key tallies. Keys beyond [`MAX_TRACKED_KEYS`] evict the least-used ones,
/// so memory and metric cardinality stay bounded whatever keys clients send.
pub struct KeyTracker {
    inner: Mutex<TrackerInner>,
    desc: Desc,
}

impl KeyTracker {
    fn new() -> Result<KeyTracker, prometheus::Error> {
        Ok(KeyTracker {
            inner: Mutex::new(TrackerInner::default()),
            desc: Desc::new(
                "ratelimiter_key_decisions_total".into(),
                format!(
                    "Decisions per key for the top {TOP_KEYS} keys by decisions on this node; \
                     all others summed under key=\"{OTHER_KEY}\""
                ),
                vec!["key".into(), "result".into()],
                HashMap::new(),
            )?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record one decision for `key` in window `index` (of `window_ms`).
    pub fn record(&self, key: &str, allowed: bool, window_ms: u64, index: u64) {
        let mut inner = self.lock();
        if allowed {
            inner.allowed_total += 1;
        } else {
            inner.denied_total += 1;
        }
        if !inner.keys.contains_key(key) {
            if inner.keys.len() >= MAX_TRACKED_KEYS {
                evict(&mut inner.keys);
            }
            inner.keys.insert(key.to_owned(), KeyStats::default());
        }
        if let Some(stats) = inner.keys.get_mut(key) {
            stats.add(allowed, window_ms, index);
        }
    }

    pub fn get(&self, key: &str) -> Option<KeyStats> {
        self.lock().keys.get(key).cloned()
    }

    /// Up to `n` keys with the most decisions in their current or previous window at `now_ms`.
    pub fn top_recent(&self, n: usize, now_ms: u64) -> Vec<String> {
        let inner = self.lock();
        let mut recent: Vec<(u64, &String)> = inner
            .keys
            .iter()
            .filter_map(|(k, s)| {
                let w = s.window_ms.max(1);
                let idx = now_ms / w;
                let (a1, d1) = s.in_window(idx);
                let (a0, d0) = s.in_window(idx.wrapping_sub(1));
                let sum = a1 + d1 + a0 + d0;
                (sum > 0).then_some((sum, k))
            })
            .collect();
        recent.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        recent.into_iter().take(n).map(|(_, k)| k.clone()).collect()
    }

    /// Top keys by lifetime decisions with their (allowed, denied), plus the rest summed.
    fn snapshot(&self) -> (Vec<KeyTotals>, (u64, u64)) {
        let inner = self.lock();
        let mut all: Vec<(&String, &KeyStats)> = inner.keys.iter().collect();
        all.sort_unstable_by(|a, b| b.1.total().cmp(&a.1.total()).then_with(|| a.0.cmp(b.0)));
        let top: Vec<KeyTotals> = all
            .into_iter()
            .take(TOP_KEYS)
            .map(|(k, s)| (k.clone(), s.allowed_total, s.denied_total))
            .collect();
        let shown_a: u64 = top.iter().map(|t| t.1).sum();
        let shown_d: u64 = top.iter().map(|t| t.2).sum();
        let other = (
            inner.allowed_total.saturating_sub(shown_a),
            inner.denied_total.saturating_sub(shown_d),
        );
        (top, other)
    }
}

/// Drop the least-used batch of keys (a full scan once per [`EVICT_BATCH`] new keys).
fn evict(keys: &mut HashMap<String, KeyStats>) {
    let mut totals: Vec<(u64, String)> = keys.iter().map(|(k, s)| (s.total(), k.clone())).collect();
    let cut = EVICT_BATCH.min(totals.len());
    if cut == 0 {
        return;
    }
    totals.select_nth_unstable_by(cut - 1, |a, b| a.0.cmp(&b.0));
    for (_, k) in totals.into_iter().take(cut) {
        keys.remove(&k);
    }
}

/// (key, allowed, denied) over the node's lifetime.
type KeyTotals = (String, u64, u64);

struct KeyCollector(Arc<KeyTracker>);

fn counter_metric(key: &str, result: &str, value: u64) -> Metric {
    let mut k = LabelPair::default();
    k.set_name("key".into());
    k.set_value(key.into());
    let mut r = LabelPair::default();
    r.set_name("result".into());
    r.set_value(result.into());
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::default();
    m.set_label(vec![k, r]);
    m.set_counter(c);
    m
}

impl Collector for KeyCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (top, other) = self.0.snapshot();
        let mut metrics = Vec::with_capacity(top.len() * 2 + 2);
        for (key, a, d) in &top {
            metrics.push(counter_metric(key, "allowed", *a));
            metrics.push(counter_metric(key, "denied", *d));
        }
        metrics.push(counter_metric(OTHER_KEY, "allowed", other.0));
        metrics.push(counter_metric(OTHER_KEY, "denied", other.1));
        let mut mf = MetricFamily::default();
        mf.set_name(self.0.desc.fq_name.clone());
        mf.set_help(self.0.desc.help.clone());
        mf.set_field_type(MetricType::COUNTER);
        mf.set_metric(metrics);
        vec![mf]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_roll_with_windows() {
        let t = KeyTracker::new().unwrap();
        t.record("a", true, 1000, 5);
        t.record("a", false, 1000, 5);
        t.record("a", true, 1000, 6);
        let s = t.get("a").unwrap();
        assert_eq!(s.in_window(5), (1, 1));
        assert_eq!(s.in_window(6), (1, 0));
        assert_eq!(s.in_window(7), (0, 0));
        assert_eq!(t.top_recent(5, 6500), vec!["a".to_string()]);
        assert!(t.top_recent(5, 9000).is_empty());
    }

    #[test]
    fn cardinality_is_bounded_and_rest_goes_to_other() {
        let m = Metrics::new().unwrap();
        for i in 0..(MAX_TRACKED_KEYS + 500) {
            let key = format!("k{i}");
            for _ in 0..(1 + i % 3) {
                m.keys.record(&key, true, 1000, 1);
            }
        }
        m.keys.record("hot", false, 1000, 1);
        assert!(m.keys.lock().keys.len() <= MAX_TRACKED_KEYS);
        let text = m.render().unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ratelimiter_key_decisions_total{"))
            .collect();
        assert_eq!(series.len(), 2 * (TOP_KEYS + 1));
        // Every decision is accounted for: top keys plus _other add up to the total.
        let sum: f64 = series
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let expected: usize = (0..(MAX_TRACKED_KEYS + 500))
            .map(|i| 1 + i % 3)
            .sum::<usize>()
            + 1;
        assert_eq!(sum as usize, expected);
        assert!(text.contains("key=\"_other\",result=\"allowed\""));
    }
}
