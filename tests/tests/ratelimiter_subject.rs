//! The bundled rate limiter subject through the real host: quiet on a healthy cluster under
//! load (denials included), malformed node answers become observation problems rather than
//! traps, the registry is read through the nodes when Redis is not given, and actions run
//! only when allowed.

mod common;

use common::Cluster;
use operator_tests::processes::{http, violated, workspace_bin};
use operator_tests::support::JsonServer;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The sum of a counter over every series whose line starts with `series`.
fn metric_sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Ticks of a healthy run. A count, not a duration: how many ticks fit in a minute depends
/// on how loaded the machine is, and cadence is the monitor's property, tested with a
/// sleeping guest. The latency and heartbeat thresholds are set above what CPU starvation
/// of a shared 2-core machine produces, so the test judges the subject's logic (denials
/// are not faults, counts agree, TTLs are set), not the machine.
const HEALTHY_TICKS: usize = 40;

#[test]
fn a_healthy_cluster_under_load_opens_no_ticket() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let run = cluster.operator_with(
        dir.path().join("healthy.db"),
        &[
            "--set",
            "latency_p99_ms=1000",
            "--set",
            "heartbeat_stale_ms=10000",
        ],
    );
    let mut ticks = 0;
    while ticks < HEALTHY_TICKS {
        let t = run.next_tick("healthy ticks", Duration::from_secs(30));
        assert_eq!(t["status"], "ok", "every tick observes the cluster: {t}");
        assert!(violated(&t).is_empty(), "no violation when healthy: {t}");
        assert_eq!(t["problems"], Value::Array(vec![]), "{t}");
        ticks += 1;
    }
    assert!(run.tickets().is_empty(), "no ticket: {:?}", run.tickets());
    // The load really hit the limit: denials are normal and must not count as faults.
    let mut denied = 0.0;
    let mut allowed = 0.0;
    for url in cluster.urls() {
        let (status, text) = http("GET", &format!("{url}/metrics"), "").unwrap();
        assert_eq!(status, 200);
        denied += metric_sum(&text, "ratelimiter_decisions_total{result=\"denied\"}");
        allowed += metric_sum(&text, "ratelimiter_decisions_total{result=\"allowed\"}");
    }
    println!("healthy run: {ticks} ticks, {allowed} allowed, {denied} denied, no ticket");
    // The tight key gets 60 req/s against a limit of 20/s: about 40 denials a second.
    let floor = 10.0 * ticks as f64;
    assert!(
        denied > floor,
        "the tight key was held at its limit ({denied} denied, expected over {floor})"
    );
}

/// Runs `operator ARGS --subject ratelimiter --set SETTING... --output json` and returns what
/// it printed; the command must succeed.
fn operator_json(args: &[&str], settings: &[String]) -> Value {
    let mut cmd = Command::new(workspace_bin("operator"));
    cmd.args(args).args([
        "--subject",
        "ratelimiter",
        "--output",
        "json",
        "--log",
        "error",
    ]);
    for s in settings {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "operator {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("operator prints JSON")
}

/// One tick (`operator run --once`) with `nodes` as the only setting.
fn one_tick(nodes: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    operator_json(
        &["run", "--once", "--db", db.to_str().unwrap()],
        &[format!("nodes={nodes}")],
    )
}

/// One tick against a fake node answering every path with `body`.
fn once_against(body: &str) -> Value {
    let node = JsonServer::start(body);
    one_tick(&node.url())
}

#[test]
fn malformed_node_answers_are_observation_problems_not_traps() {
    // Garbage everywhere: /healthz cannot be read, the node is up but misbehaving.
    let t = once_against("{not json");
    assert_eq!(t["status"], "ok", "{t}");
    let problems = t["problems"].to_string();
    assert!(problems.contains("malformed /healthz"), "{t}");
    // A good /healthz, but the same JSON served as /metrics is not Prometheus text.
    let t = once_against(
        r#"{"node":"n1","status":"ok","redis":"ok","mode":"normal","policy":"fail-open"}"#,
    );
    assert_eq!(t["status"], "ok", "{t}");
    let problems = t["problems"].to_string();
    assert!(problems.contains("malformed /metrics"), "{t}");
    assert!(t["error"].is_null(), "no plugin failure: {t}");
}

/// `operator action` against real nodes: observe-only unless `--allow-actions`, and then the
/// change really lands (through the management API, in Redis, for every node).
#[test]
fn actions_run_through_the_host_only_when_allowed() {
    use operator_tests::processes::{Node, Redis};
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a", &[]);
    let b = Node::start(&redis.url(), "node-b", &[]);
    let nodes = format!("nodes={},{}", a.url(), b.url());
    let action = |args: &[&str]| {
        Command::new(workspace_bin("operator"))
            .args(["action"])
            .args(args)
            .args([
                "--subject",
                "ratelimiter",
                "--set",
                &nodes,
                "--log",
                "error",
            ])
            .output()
            .unwrap()
    };
    let check = |node: &Node| {
        http(
            "POST",
            &format!("{}/v1/check", node.url()),
            r#"{"key":"abuser"}"#,
        )
        .unwrap()
        .0
    };
    assert_eq!(check(&b), 200);

    let refused = action(&["ACT-03", "--param", "key=abuser"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--allow-actions"), "{err}");
    assert_eq!(check(&b), 200, "nothing changed without permission");

    let done = action(&["block-key", "--param", "key=abuser", "--allow-actions"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(check(&b), 429, "blocked on the other node too");

    let done = action(&[
        "ACT-02",
        "--param",
        "key=_default",
        "--param",
        "limit=7",
        "--param",
        "window_ms=60000",
        "--allow-actions",
        "--output",
        "json",
    ]);
    assert!(done.status.success());
    let out: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(out["ok"], true, "{out}");
    let (_, limits) = http("GET", &format!("{}/v1/limits", b.url()), "").unwrap();
    let limits: Value = serde_json::from_str(&limits).unwrap();
    assert_eq!(limits["default"]["limit"], 7, "{limits}");

    let bad = action(&[
        "ACT-02",
        "--param",
        "key=x",
        "--param",
        "limit=lots",
        "--param",
        "window_ms=1000",
        "--allow-actions",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("must be a whole number"), "{err}");
}

/// Without a `redis` setting the plugin reads the registry through a node's `/v1/nodes`; a
/// registered node with a heartbeat long gone still trips MON-01.
#[test]
fn without_redis_access_the_registry_comes_from_the_nodes() {
    use operator_tests::processes::{Node, Redis};
    let redis = Redis::start();
    let a = Node::start(&redis.url(), "node-a", &[]);
    // A node that registered once and died without its entry expiring yet.
    let ghost = r#"{"id":"ghost","addr":"127.0.0.1:9","mode":"normal","last_heartbeat_ms":1000,"started_ms":1000,"policy":"fail-open"}"#;
    assert_eq!(
        redis
            .command(&["SET", "rl:node:ghost", ghost, "EX", "120"])
            .unwrap(),
        "+OK"
    );
    let tick = one_tick(&a.url());
    let violations = tick["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "only the ghost: {tick}");
    let v = &violations[0];
    assert_eq!(v["invariant"], "MON-01");
    assert_eq!(v["component"], "127.0.0.1:9");
    let evidence: Vec<(String, String)> = serde_json::from_value(v["evidence"].clone()).unwrap();
    let get = |k: &str| {
        evidence
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        get("registry_source"),
        Some(format!("127.0.0.1:{}", a.port).as_str())
    );
    assert!(get("heartbeat_age_ms").unwrap().parse::<u64>().unwrap() > 1_000_000);
}

/// With a `prometheus` setting the plugin also asks a real Prometheus (scraping the node)
/// for the cluster's decision rate; a URL that is not a Prometheus is a named problem.
#[test]
fn prometheus_is_queried_when_configured() {
    use operator_tests::processes::{Node, Proc, Redis, loadgen, wait_for};
    use operator_tests::support::{PortAttempt, with_fresh_port};
    use std::process::Stdio;
    let redis = Redis::start();
    let node = Node::start(&redis.url(), "node-a", &[]);
    let _load = loadgen(&[node.url()], 50, "3m", &["--keys", "5"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ratelimiter\n    \
             static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            node.port
        ),
    )
    .unwrap();
    // Prometheus cannot bind port 0: try fresh ports until one is ours.
    let (port, _prometheus) = with_fresh_port("prometheus", 5, |port| {
        let log = dir.path().join(format!("prometheus-{port}.log"));
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join(format!("data-{port}")).display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(PortAttempt::Failed)?)
            .spawn()
            .map_err(PortAttempt::Failed)?;
        std::thread::sleep(Duration::from_millis(1500));
        if child.try_wait().ok().flatten().is_some() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return if text.contains("address already in use") {
                Err(PortAttempt::InUse)
            } else {
                Err(PortAttempt::Failed(std::io::Error::other(text)))
            };
        }
        Ok((port, Proc { child }))
    });
    let prom = format!("http://127.0.0.1:{port}");
    // rate() needs two scrapes of the counter.
    let query =
        format!("{prom}/api/v1/query?query=sum%28rate%28ratelimiter_decisions_total%5B1m%5D%29%29");
    wait_for(
        "Prometheus to have a decision rate",
        Duration::from_secs(60),
        || {
            let (status, body) = http("GET", &query, "").ok()?;
            (status == 200 && body.contains("\"value\"")).then_some(())
        },
    );
    let observe = |prometheus: &str| {
        operator_json(
            &["observe"],
            &[
                format!("nodes={}", node.url()),
                format!("prometheus={prometheus}"),
            ],
        )
    };

    let v = observe(&prom);
    let obs = &v["observation"];
    assert_eq!(obs["problems"], Value::Array(vec![]), "{}", obs["problems"]);
    let rate: f64 = obs["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "prom_decision_rate")
        .filter_map(|m| m["value"].as_f64())
        .sum();
    // Over a [1m] range holding only seconds of samples the rate is small, but it is there.
    assert!(
        rate > 0.0,
        "Prometheus reports the load's decision rate ({rate}/s)"
    );

    let v = observe(&node.url());
    let problems = v["observation"]["problems"].as_array().unwrap().clone();
    assert!(
        problems
            .iter()
            .any(|p| p["source"] == "prometheus" && p["message"].as_str().unwrap().contains("404")),
        "{problems:?}"
    );
}
