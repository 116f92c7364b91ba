//! The plugin's settings, parsed from the user's `--set key=value` pairs. Pure, so the
//! native tests and the bench build them the same way the plugin does.

use operator_sdk::{SettingInfo, SettingKind};

/// Thresholds with their defaults. Each is a setting of the same name.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Low space below this share of capacity available.
    pub low_space_ratio: f64,
    /// gRPC request p99 above this many milliseconds.
    pub latency_p99_ms: f64,
    /// Raft append/commit/apply p99 above this many seconds.
    pub raft_p99_s: f64,
    /// Raft log lag p99 above this many entries.
    pub log_lag: f64,
    /// PD's slow score at or above this marks a slow store.
    pub slow_score: f64,
    /// Pending-peer regions above this count degrade replication.
    pub pending_peer_regions: f64,
    /// A hot region takes at least this share of the cluster's hot flow of its kind.
    pub hot_region_share: f64,
    /// A hot region or store moves at least this many bytes/s.
    pub hot_min_bytes: f64,
    /// A hot store carries at least this multiple of the mean store's hot flow.
    pub hot_store_ratio: f64,
    /// Leader imbalance: the busiest Up store holds more than mean × (1 + this).
    pub leader_imbalance: f64,
    /// ... and at least this many leaders above the mean.
    pub leader_imbalance_min: f64,
    /// Leader elections won (per the logs) within `churn_window_s` that make churn.
    pub leader_changes: f64,
    pub churn_window_s: f64,
    /// A store's leader count falling by more than this in 30 s (the official alert).
    pub leader_drop: f64,
    /// In-flight snapshots (sending + receiving) on a store that make a storm.
    pub snapshots_in_flight: f64,
    /// Snapshot log events within `churn_window_s` that make a storm.
    pub snapshot_events: f64,
    /// Scheduler pending commands (`tikv_scheduler_contex_total`) on a store.
    pub scheduler_pending: f64,
    /// Load counts as rising when the current QPS is this multiple of the recent baseline.
    pub load_rise: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            low_space_ratio: 0.2,
            latency_p99_ms: 500.0,
            raft_p99_s: 1.0,
            log_lag: 5000.0,
            slow_score: 80.0,
            pending_peer_regions: 100.0,
            hot_region_share: 0.5,
            hot_min_bytes: 1_048_576.0,
            hot_store_ratio: 2.0,
            leader_imbalance: 0.5,
            leader_imbalance_min: 10.0,
            leader_changes: 20.0,
            churn_window_s: 120.0,
            leader_drop: 10.0,
            snapshots_in_flight: 10.0,
            snapshot_events: 30.0,
            scheduler_pending: 2000.0,
            load_rise: 1.5,
        }
    }
}

/// Every threshold setting: name, description, and a view into [`Thresholds`].
type Field = fn(&mut Thresholds) -> &mut f64;
pub const THRESHOLDS: &[(&str, &str, Field)] = &[
    (
        "low_space_ratio",
        "low space below this share of capacity available",
        |t| &mut t.low_space_ratio,
    ),
    (
        "latency_p99_ms",
        "gRPC request p99 threshold per store and type (ms)",
        |t| &mut t.latency_p99_ms,
    ),
    (
        "raft_p99_s",
        "Raft append/commit/apply p99 threshold (s)",
        |t| &mut t.raft_p99_s,
    ),
    ("log_lag", "Raft log lag p99 threshold (entries)", |t| {
        &mut t.log_lag
    }),
    ("slow_score", "PD slow score that marks a slow store", |t| {
        &mut t.slow_score
    }),
    (
        "pending_peer_regions",
        "pending-peer regions that degrade replication",
        |t| &mut t.pending_peer_regions,
    ),
    (
        "hot_region_share",
        "share of the cluster's hot flow one region may take",
        |t| &mut t.hot_region_share,
    ),
    (
        "hot_min_bytes",
        "bytes/s below which nothing counts as hot",
        |t| &mut t.hot_min_bytes,
    ),
    (
        "hot_store_ratio",
        "hot flow of one store over the mean store's",
        |t| &mut t.hot_store_ratio,
    ),
    (
        "leader_imbalance",
        "tolerated excess of the busiest store's leaders over the mean (ratio)",
        |t| &mut t.leader_imbalance,
    ),
    (
        "leader_imbalance_min",
        "minimum leaders above the mean before imbalance counts",
        |t| &mut t.leader_imbalance_min,
    ),
    (
        "leader_changes",
        "elections won within churn_window_s that make churn",
        |t| &mut t.leader_changes,
    ),
    ("churn_window_s", "window for log-event counts (s)", |t| {
        &mut t.churn_window_s
    }),
    (
        "leader_drop",
        "leaders lost by one store within 30 s",
        |t| &mut t.leader_drop,
    ),
    (
        "snapshots_in_flight",
        "sending + receiving snapshots on one store",
        |t| &mut t.snapshots_in_flight,
    ),
    (
        "snapshot_events",
        "snapshot log events within churn_window_s",
        |t| &mut t.snapshot_events,
    ),
    (
        "scheduler_pending",
        "scheduler pending commands on one store",
        |t| &mut t.scheduler_pending,
    ),
    (
        "load_rise",
        "current QPS over the 10-minute baseline that counts as rising load",
        |t| &mut t.load_rise,
    ),
];

/// The settings that are not thresholds: (name, description, kind, required, default).
pub const SETTINGS: &[(&str, &str, SettingKind, bool, &str)] = &[
    (
        "pd",
        "PD base URL(s), comma-separated (http://pd1:2379,http://pd2:2379); tried in order",
        SettingKind::OriginList,
        true,
        "",
    ),
    (
        "prometheus",
        "Prometheus scraping PD and TiKV (latency, Raft, disk, CPU, scheduler, up{})",
        SettingKind::Origin,
        false,
        "",
    ),
    (
        "log.<component>",
        "log source of a component (store-<id>, pd-<name>, or any name): file:/path or docker:<container>",
        SettingKind::Value,
        false,
        "",
    ),
    (
        "log_lines",
        "lines tailed from each configured log per tick",
        SettingKind::Value,
        false,
        "500",
    ),
];

/// Every setting, as the metadata declares it.
pub fn declared() -> Vec<SettingInfo> {
    let defaults = Thresholds::default();
    let mut out: Vec<SettingInfo> = SETTINGS
        .iter()
        .map(|(name, description, kind, required, default)| SettingInfo {
            name: name.to_string(),
            description: description.to_string(),
            kind: *kind,
            required: *required,
            default_value: (!default.is_empty()).then(|| default.to_string()),
        })
        .collect();
    for (name, description, field) in THRESHOLDS {
        let mut d = defaults.clone();
        out.push(SettingInfo {
            name: name.to_string(),
            description: description.to_string(),
            kind: SettingKind::Value,
            required: false,
            default_value: Some(field(&mut d).to_string()),
        });
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub pd: Vec<String>,
    pub prometheus: Option<String>,
    /// Component names with a configured log source, in the order given.
    pub logs: Vec<String>,
    pub log_lines: u32,
    pub thresholds: Thresholds,
    /// Malformed values (kept at their defaults), for the observation's problems.
    pub warnings: Vec<String>,
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Settings {
    /// Parses the user's settings. Only a missing `pd` is an error; a malformed threshold
    /// keeps its default and is reported.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Settings, String> {
        let mut s = Settings {
            pd: Vec::new(),
            prometheus: None,
            logs: Vec::new(),
            log_lines: 500,
            thresholds: Thresholds::default(),
            warnings: Vec::new(),
        };
        for (key, value) in pairs {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if key == "pd" {
                s.pd = split_list(value);
            } else if key == "prometheus" {
                s.prometheus = Some(value.to_string());
            } else if let Some(component) = key.strip_prefix("log.") {
                if !component.is_empty() && !s.logs.iter().any(|c| c == component) {
                    s.logs.push(component.to_string());
                }
            } else if key == "log_lines" {
                match value.parse::<u32>() {
                    Ok(n) => s.log_lines = n.clamp(1, 1000),
                    Err(_) => s.warnings.push(format!(
                        "setting `log_lines` has a malformed value `{value}`"
                    )),
                }
            } else if let Some((_, _, field)) = THRESHOLDS.iter().find(|(n, _, _)| *n == key) {
                match value.parse::<f64>() {
                    Ok(v) if v.is_finite() => *field(&mut s.thresholds) = v,
                    _ => s.warnings.push(format!(
                        "setting `{key}` has a malformed value `{value}`; using the default"
                    )),
                }
            }
        }
        for url in &s.pd {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!(
                    "setting `pd`: `{url}` is not an http(s) URL (e.g. http://pd:2379)"
                ));
            }
        }
        if s.pd.is_empty() {
            return Err("missing setting `pd` (pass --set pd=http://pd:2379)".into());
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_thresholds_and_logs() {
        let s = Settings::from_pairs([
            ("pd", "http://a:2379, http://b:2379,"),
            ("prometheus", "http://prom:9090"),
            ("log.store-1", "file:/var/log/tikv.log"),
            ("latency_p99_ms", "250"),
            ("low_space_ratio", "abc"),
        ])
        .unwrap();
        assert_eq!(s.pd, vec!["http://a:2379", "http://b:2379"]);
        assert_eq!(s.logs, vec!["store-1"]);
        assert_eq!(s.thresholds.latency_p99_ms, 250.0);
        assert_eq!(s.thresholds.low_space_ratio, 0.2);
        assert_eq!(s.warnings.len(), 1);
        assert!(
            Settings::from_pairs([("prometheus", "http://p")])
                .unwrap_err()
                .contains("pd")
        );
        assert!(Settings::from_pairs([("pd", "pd:2379")]).is_err());
    }
}
