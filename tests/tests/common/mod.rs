//! A rate limiter cluster for the subject's end-to-end tests: a real redis-server, three
//! real `ratelimiter` nodes (chaos switches on, fail-open) and `loadgen` traffic.
#![allow(dead_code)]

use operator_tests::processes::{Node, OperatorRun, Proc, Redis, http, loadgen};
use std::time::Duration;

pub const RESOLVE_AFTER: i64 = 3;
/// Generous: ticks are 1 s apart, but the machine is shared with the load.
pub const WAIT: Duration = Duration::from_secs(45);

pub struct Cluster {
    pub redis: Redis,
    pub nodes: Vec<Node>,
    _load: Vec<Proc>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let redis = Redis::start();
        let nodes: Vec<Node> = (1..=3)
            .map(|i| {
                Node::start(
                    &redis.url(),
                    &format!("node-{i}"),
                    &["--chaos", "--policy", "fail-open"],
                )
            })
            .collect();
        let mut c = Cluster {
            redis,
            nodes,
            _load: vec![],
        };
        c.set_limits();
        let urls = c.urls();
        // Background traffic: Zipf keys well under their limit, and one key (`tight1`)
        // held at its limit, so denials are part of normal life.
        c._load = vec![
            loadgen(&urls, 150, "10m", &["--keys", "50", "--zipf", "1.0"]),
            loadgen(&urls, 60, "10m", &["--keys", "1", "--key-prefix", "tight"]),
        ];
        c
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    pub fn set_limits(&self) {
        let base = self.nodes[0].url();
        for (key, limit) in [("_default", 1000), ("tight1", 20)] {
            let (status, body) = http(
                "PUT",
                &format!("{base}/v1/limits/{key}"),
                &format!(r#"{{"limit":{limit},"window_ms":1000}}"#),
            )
            .expect("PUT limit");
            assert_eq!(status, 200, "PUT /v1/limits/{key}: {body}");
        }
    }

    pub fn chaos(&self, node: usize, body: &str) {
        let url = format!("{}/v1/chaos", self.nodes[node].url());
        let (status, text) = http("POST", &url, body).expect("POST chaos");
        assert_eq!(status, 200, "POST /v1/chaos {body}: {text}");
    }

    pub fn operator(&self, db: std::path::PathBuf) -> OperatorRun {
        self.operator_with(db, &[])
    }

    /// `operator run` on this cluster with extra flags.
    pub fn operator_with(&self, db: std::path::PathBuf, extra: &[&str]) -> OperatorRun {
        let nodes = format!("nodes={}", self.urls().join(","));
        let redis = format!("redis={}", self.redis.url());
        let resolve = RESOLVE_AFTER.to_string();
        let mut args = vec![
            "--subject",
            "ratelimiter",
            "--set",
            &nodes,
            "--set",
            &redis,
            "--interval",
            "1s",
            "--resolve-after",
            &resolve,
        ];
        args.extend_from_slice(extra);
        OperatorRun::start(db, &args)
    }
}
