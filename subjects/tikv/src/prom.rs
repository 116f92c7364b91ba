//! What the plugin asks Prometheus (TIKV-02), in TiKV's and PD's real metric names, and how
//! the answers become observation samples. The query text is the contract a simulator must
//! answer: `README.md` lists the same table.

use operator_sdk::prometheus::{Series, parse_query_response};
use std::collections::BTreeMap;

/// One instant query: its id, the observation metric it becomes, the PromQL, and the result
/// labels kept on the samples.
pub struct Query {
    pub id: &'static str,
    pub metric: &'static str,
    pub expr: &'static str,
    pub labels: &'static [&'static str],
}

pub const INSTANT: &[Query] = &[
    Query {
        id: "qps",
        metric: "tikv_qps",
        expr: r#"sum(rate(tikv_grpc_msg_duration_seconds_count{type!="kv_gc"}[1m])) by (instance, type)"#,
        labels: &["instance", "type"],
    },
    Query {
        id: "request_p99",
        metric: "tikv_request_p99_seconds",
        expr: r#"histogram_quantile(0.99, sum(rate(tikv_grpc_msg_duration_seconds_bucket{type!="kv_gc"}[1m])) by (le, instance, type))"#,
        labels: &["instance", "type"],
    },
    Query {
        id: "request_errors",
        metric: "tikv_request_errors_per_s",
        expr: "sum(rate(tikv_grpc_msg_fail_total[1m])) by (instance, type)",
        labels: &["instance", "type"],
    },
    Query {
        id: "append_p99",
        metric: "tikv_raft_append_p99_seconds",
        expr: "histogram_quantile(0.99, sum(rate(tikv_raftstore_append_log_duration_seconds_bucket[1m])) by (le, instance))",
        labels: &["instance"],
    },
    Query {
        id: "commit_p99",
        metric: "tikv_raft_commit_p99_seconds",
        expr: "histogram_quantile(0.99, sum(rate(tikv_raftstore_commit_log_duration_seconds_bucket[1m])) by (le, instance))",
        labels: &["instance"],
    },
    Query {
        id: "apply_p99",
        metric: "tikv_raft_apply_p99_seconds",
        expr: "histogram_quantile(0.99, sum(rate(tikv_raftstore_apply_log_duration_seconds_bucket[1m])) by (le, instance))",
        labels: &["instance"],
    },
    Query {
        id: "log_lag_p99",
        metric: "tikv_raft_log_lag_p99",
        expr: "histogram_quantile(0.99, sum(rate(tikv_raftstore_log_lag_bucket[1m])) by (le, instance))",
        labels: &["instance"],
    },
    Query {
        id: "store_size",
        metric: "tikv_store_size_bytes",
        expr: "sum(tikv_store_size_bytes) by (instance, type)",
        labels: &["instance", "type"],
    },
    Query {
        id: "thread_cpu",
        metric: "tikv_thread_cpu_cores",
        expr: "sum(rate(tikv_thread_cpu_seconds_total[1m])) by (instance, name)",
        labels: &["instance", "name"],
    },
    Query {
        id: "scheduler_pending",
        metric: "tikv_scheduler_pending",
        expr: "sum(tikv_scheduler_contex_total) by (instance)",
        labels: &["instance"],
    },
    Query {
        id: "scheduler_busy",
        metric: "tikv_scheduler_too_busy_per_s",
        expr: "sum(rate(tikv_scheduler_too_busy_total[1m])) by (instance)",
        labels: &["instance"],
    },
    Query {
        id: "leaders",
        metric: "tikv_leader_count",
        expr: r#"sum(tikv_raftstore_region_count{type="leader"}) by (instance)"#,
        labels: &["instance"],
    },
    Query {
        id: "leader_delta",
        metric: "tikv_leader_delta_30s",
        expr: r#"sum(delta(tikv_raftstore_region_count{type="leader"}[30s])) by (instance)"#,
        labels: &["instance"],
    },
    Query {
        id: "snapshots",
        metric: "tikv_snapshot_in_flight",
        expr: "sum(tikv_raftstore_snapshot_traffic_total) by (instance, type)",
        labels: &["instance", "type"],
    },
    Query {
        id: "pd_cluster_status",
        metric: "pd_cluster_status",
        expr: "sum by (type) (pd_cluster_status)",
        labels: &["type"],
    },
    Query {
        id: "pd_regions_status",
        metric: "pd_regions_status",
        expr: "sum by (type) (pd_regions_status)",
        labels: &["type"],
    },
    Query {
        id: "up",
        metric: "up",
        expr: "up",
        labels: &["instance", "job"],
    },
];

/// Range queries: the last `RANGE_S` seconds at `STEP_S`, for the load trend.
pub const RANGE: &[Query] = &[
    Query {
        id: "qps_total_range",
        metric: "tikv_qps_total_history",
        expr: r#"sum(rate(tikv_grpc_msg_duration_seconds_count{type!="kv_gc"}[1m]))"#,
        labels: &[],
    },
    Query {
        id: "request_p99_range",
        metric: "tikv_request_p99_history_seconds",
        expr: r#"histogram_quantile(0.99, sum(rate(tikv_grpc_msg_duration_seconds_bucket{type!="kv_gc"}[1m])) by (le))"#,
        labels: &[],
    },
];
pub const RANGE_S: u64 = 600;
pub const STEP_S: u64 = 30;

/// `/api/v1/query?query=...`
pub fn instant_url(base: &str, expr: &str) -> String {
    format!(
        "{}?query={}",
        crate::transport::join(base, "/api/v1/query"),
        crate::transport::encode(expr)
    )
}

/// `/api/v1/query_range?query=...&start=...&end=...&step=...` ending at `now_ms`.
pub fn range_url(base: &str, expr: &str, now_ms: u64) -> String {
    let end = now_ms / 1000;
    format!(
        "{}?query={}&start={}&end={}&step={}",
        crate::transport::join(base, "/api/v1/query_range"),
        crate::transport::encode(expr),
        end.saturating_sub(RANGE_S),
        end,
        STEP_S
    )
}

/// An instant query's answer.
pub fn decode_instant(url: &str, body: &[u8]) -> Result<Vec<Series>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("{url}: malformed JSON: {e}"))?;
    parse_query_response(url, &v).map_err(|e| e.to_string())
}

/// One series of a range query: labels and `(unix ms, value)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(u64, f64)>,
}

/// A range query's answer (`resultType: matrix`). The SDK's client has instant queries
/// only.
pub fn decode_range(url: &str, body: &[u8]) -> Result<Vec<RangeSeries>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("{url}: malformed JSON: {e}"))?;
    if v["status"].as_str() != Some("success") {
        return Err(format!(
            "{url}: query failed: {}",
            v["error"].as_str().unwrap_or("no status")
        ));
    }
    if v["data"]["resultType"].as_str() != Some("matrix") {
        return Err(format!(
            "{url}: expected a matrix, got {}",
            v["data"]["resultType"]
        ));
    }
    let result = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("{url}: `result` is not a list"))?;
    let mut out = Vec::with_capacity(result.len());
    for item in result {
        let labels = item["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let values = item["values"]
            .as_array()
            .ok_or_else(|| format!("{url}: a series has no `values`"))?;
        let mut points = Vec::with_capacity(values.len());
        for p in values {
            let ts = p[0].as_f64();
            let val = p[1].as_str().and_then(|s| match s {
                "NaN" => Some(f64::NAN),
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                _ => s.parse().ok(),
            });
            match (ts, val) {
                (Some(t), Some(x)) => points.push(((t * 1000.0) as u64, x)),
                _ => return Err(format!("{url}: a point is not [time, \"value\"]")),
            }
        }
        out.push(RangeSeries { labels, points });
    }
    Ok(out)
}

/// The thread group of a TiKV thread name: `raftstore-1-0` → `raftstore`,
/// `sched-worker-pool-3` → `sched-worker-pool`, `rocksdb:high2` → `rocksdb:high`.
pub fn thread_group(name: &str) -> &str {
    let g = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '_');
    if g.is_empty() { name } else { g }
}

/// Sums thread CPU by (instance, group).
pub fn group_threads(series: &[Series]) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for s in series {
        let label = |k: &str| {
            s.labels
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        if s.value.is_finite() {
            *out.entry((
                label("instance").to_string(),
                thread_group(label("name")).to_string(),
            ))
            .or_insert(0.0) += s.value;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_groups() {
        assert_eq!(thread_group("raftstore-1-0"), "raftstore");
        assert_eq!(thread_group("apply_3"), "apply");
        assert_eq!(thread_group("sched-worker-pool-12"), "sched-worker-pool");
        assert_eq!(thread_group("rocksdb:high2"), "rocksdb:high");
        assert_eq!(thread_group("pd-worker"), "pd-worker");
        assert_eq!(thread_group("0"), "0");
    }

    #[test]
    fn range_answers_and_errors() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1764000000,"10"],[1764000030.5,"NaN"]]}]}}"#;
        let r = decode_range("u", body).unwrap();
        assert_eq!(r[0].points[0], (1_764_000_000_000, 10.0));
        assert!(r[0].points[1].1.is_nan());
        assert!(
            decode_range(
                "u",
                br#"{"status":"error","error":"bad_data: parse error"}"#
            )
            .unwrap_err()
            .contains("parse error")
        );
        assert!(
            decode_range(
                "u",
                br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#
            )
            .is_err()
        );
        assert!(
            decode_range("u", b"<html>")
                .unwrap_err()
                .contains("malformed")
        );
    }

    #[test]
    fn urls_encode_the_query() {
        let u = instant_url("http://p:9090/", "up{job=\"tikv\"}");
        assert_eq!(
            u,
            "http://p:9090/api/v1/query?query=up%7Bjob%3D%22tikv%22%7D"
        );
        let u = range_url("http://p:9090", "up", 1_764_000_000_123);
        assert!(
            u.ends_with("query=up&start=1763999400&end=1764000000&step=30"),
            "{u}"
        );
    }
}
