//! The tikv plugin's Prometheus path against Debian's real Prometheus: three fixture TiKV
//! status servers expose TiKV's metric names (one store slow on disk), Prometheus scrapes
//! them, and the plugin's own PromQL, run by the real host, finds the slow store; then one
//! status server dies and `up{}` marks its store unreachable while PD still calls it Up.

mod tikv;

use operator_tests::processes::{Proc, free_port, http, wait_for};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tikv::{Server, evidence, fired, fixture_handler, observe};

const BOUNDS: [&str; 13] = [
    "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
    "1.024", "2.048", "+Inf",
];

/// A cumulative histogram with `count` observations, all at or under bound index `at`.
fn histogram(out: &mut String, name: &str, labels: &str, count: u64, at: usize, sum_each: f64) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, le) in BOUNDS.iter().enumerate() {
        let c = if i >= at { count } else { 0 };
        out.push_str(&format!("{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}\n"));
    }
    out.push_str(&format!(
        "{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {count}\n",
        count as f64 * sum_each
    ));
}

/// TiKV's exposition at scrape `n`; a slow store's disk puts Raft appends and requests
/// in the 1–2 s bucket.
fn tikv_metrics(n: u64, slow: bool) -> String {
    let c = n * 50;
    let (req_at, append_at) = if slow { (11, 11) } else { (1, 2) };
    let mut o = String::from(
        "# HELP tikv_grpc_msg_duration_seconds Bucketed histogram of grpc server messages\n# TYPE tikv_grpc_msg_duration_seconds histogram\n",
    );
    for ty in ["kv_get", "kv_prewrite", "kv_commit"] {
        histogram(
            &mut o,
            "tikv_grpc_msg_duration_seconds",
            &format!("type=\"{ty}\""),
            c,
            req_at,
            0.001,
        );
    }
    o.push_str("# TYPE tikv_raftstore_append_log_duration_seconds histogram\n");
    histogram(
        &mut o,
        "tikv_raftstore_append_log_duration_seconds",
        "",
        c,
        append_at,
        0.002,
    );
    histogram(
        &mut o,
        "tikv_raftstore_commit_log_duration_seconds",
        "",
        c,
        append_at + 1,
        0.004,
    );
    histogram(
        &mut o,
        "tikv_raftstore_apply_log_duration_seconds",
        "",
        c,
        2,
        0.002,
    );
    histogram(&mut o, "tikv_raftstore_log_lag", "", c, 4, 3.0);
    o.push_str(&format!(
        "tikv_grpc_msg_fail_total{{type=\"kv_get\"}} 0\n\
         tikv_store_size_bytes{{type=\"capacity\"}} 107374182400\n\
         tikv_store_size_bytes{{type=\"available\"}} 86436216832\n\
         tikv_store_size_bytes{{type=\"used\"}} 13207024435\n\
         tikv_thread_cpu_seconds_total{{name=\"raftstore-1-0\"}} {}\n\
         tikv_thread_cpu_seconds_total{{name=\"apply-0\"}} {}\n\
         tikv_scheduler_contex_total 4\n\
         tikv_scheduler_too_busy_total{{stage=\"prewrite\"}} 0\n\
         tikv_raftstore_region_count{{type=\"region\"}} 100\n\
         tikv_raftstore_region_count{{type=\"leader\"}} 33\n\
         tikv_raftstore_snapshot_traffic_total{{type=\"sending\"}} 0\n\
         tikv_raftstore_snapshot_traffic_total{{type=\"receiving\"}} 0\n",
        n as f64 * 0.3,
        n as f64 * 0.2
    ));
    o
}

#[test]
fn the_plugin_queries_a_real_prometheus_and_up_notices_a_dead_store_in_seconds() {
    // Stores 1, 4, 5 (the fixture's ids); store 4 is the slow one.
    let mut status: Vec<Server> = [false, true, false]
        .iter()
        .map(|slow| {
            let scrapes = Arc::new(AtomicU64::new(0));
            let slow = *slow;
            Server::start(Box::new(move |_, path, _| {
                if path == "/metrics" {
                    let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
                    (200, tikv_metrics(n, slow).into_bytes())
                } else {
                    (404, Vec::new())
                }
            }))
        })
        .collect();
    let addrs: Vec<String> = status
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    // PD: the healthy fixture, with each store's status address pointing at its server.
    let fixture = fixture_handler("healthy");
    let stores = std::fs::read_to_string(tikv::fixtures().join("healthy/pd/stores.json")).unwrap();
    let stores = stores
        .replace("tikv1:20180", &addrs[0])
        .replace("tikv2:20180", &addrs[1])
        .replace("tikv3:20180", &addrs[2]);
    let pd = Server::start(Box::new(move |m, path, q| {
        if path == "/pd/api/v1/stores" {
            (200, stores.clone().into_bytes())
        } else {
            fixture(m, path, q)
        }
    }));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let targets: Vec<String> = addrs.iter().map(|a| format!("'{a}'")).collect();
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tikv\n    static_configs:\n      - targets: [{}]\n", targets.join(", ")),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = Proc {
        child: Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (Debian: apt-get install prometheus)"),
    };
    let prom = format!("http://127.0.0.1:{port}");
    let rate = format!(
        "{prom}/api/v1/query?query=sum%20by%20(instance)%20(rate(tikv_grpc_msg_duration_seconds_count%5B1m%5D))"
    );
    wait_for(
        "Prometheus to have a request rate for all three stores",
        Duration::from_secs(60),
        || {
            let (status, body) = http("GET", &rate, "").ok()?;
            (status == 200 && body.matches("\"instance\"").count() == 3).then_some(())
        },
    );
    let settings = vec![format!("pd={}", pd.url()), format!("prometheus={prom}")];

    let v = observe(&settings);
    let obs = &v["observation"];
    assert_eq!(
        obs["problems"],
        serde_json::json!([]),
        "{}",
        obs["problems"]
    );
    let metrics = obs["metrics"].as_array().unwrap();
    let qps_stores: std::collections::BTreeSet<&str> = metrics
        .iter()
        .filter(|m| m["name"] == "tikv_qps")
        // Metric labels are a JSON object in the host's model.
        .filter_map(|m| m["labels"]["store"].as_str())
        .collect();
    assert_eq!(
        qps_stores.into_iter().collect::<Vec<_>>(),
        ["1", "4", "5"],
        "instances map to stores through status_address"
    );
    let got = fired(&v);
    assert_eq!(
        got.iter().map(String::as_str).collect::<Vec<_>>(),
        ["TIKV-INV-05", "TIKV-INV-06"],
        "{}",
        v["violations"]
    );
    for x in v["violations"].as_array().unwrap() {
        assert_eq!(evidence(x, "store_id"), Some("4"), "{x}");
        assert_eq!(evidence(x, "scope"), Some("single-store"), "{x}");
    }
    let raft = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["invariant"] == "TIKV-INV-06")
        .unwrap();
    let append: f64 = evidence(raft, "append_p99_s").unwrap().parse().unwrap();
    assert!(
        append > 1.0 && append <= 2.048,
        "Prometheus's histogram_quantile of the 1-2 s bucket: {append}"
    );

    // Store 5's process dies. PD (the fixture) still says Up; Prometheus's next scrapes fail.
    let killed = Instant::now();
    status[2].stop();
    let up = format!(
        "{prom}/api/v1/query?query=up%7Binstance%3D%22{}%22%7D",
        addrs[2]
    );
    wait_for(
        "Prometheus to mark store 5's target down",
        Duration::from_secs(30),
        || {
            let (_, body) = http("GET", &up, "").ok()?;
            body.contains("\"0\"]").then_some(())
        },
    );
    let v = observe(&settings);
    let noticed = killed.elapsed();
    let x = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["invariant"] == "TIKV-INV-01")
        .unwrap_or_else(|| panic!("{}", v["violations"]));
    assert_eq!(x["dedup_key"], "TIKV-INV-01:store-5");
    assert_eq!(
        evidence(x, "store_state"),
        Some("Up"),
        "PD has not noticed yet"
    );
    assert_eq!(evidence(x, "status_up"), Some("false"));
    println!(
        "a dead store's status address was ticketable {:.1} s after it died (PD's Disconnected takes 20 s)",
        noticed.as_secs_f64()
    );
    assert!(noticed < Duration::from_secs(20));
}
