//! The bundled tikv plugin through the real host (`operator observe`), against a fixture
//! HTTP server that answers PD's and Prometheus's routes with the subject's fixture files:
//! each scenario fires its invariants in the sandbox exactly as in the subject's native
//! tests, malformed bodies are problems, and a dead PD URL is skipped.

mod tikv;

use std::collections::BTreeSet;
use tikv::{Server, evidence, fired, fixture_handler, observe, retimed_logs};

fn run(scenario: &str, extra: &[String]) -> serde_json::Value {
    let server = Server::start(fixture_handler(scenario));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = vec![
        format!("pd={}", server.url()),
        format!("prometheus={}", server.url()),
    ];
    settings.extend(retimed_logs(scenario, dir.path()));
    settings.extend_from_slice(extra);
    observe(&settings)
}

/// (scenario, invariants that fire on one observation of it)
const CASES: &[(&str, &[&str])] = &[
    ("healthy", &[]),
    ("store_disconnected", &["TIKV-INV-01", "TIKV-INV-09"]),
    ("store_down", &["TIKV-INV-01", "TIKV-INV-03"]),
    ("store_isolated", &["TIKV-INV-01"]),
    ("low_space", &["TIKV-INV-04"]),
    ("hot_write", &["TIKV-INV-07"]),
    ("hot_read", &["TIKV-INV-07"]),
    ("slow_store", &["TIKV-INV-05", "TIKV-INV-06"]),
    ("pd_member_unhealthy", &["TIKV-INV-02"]),
    ("leader_churn", &["TIKV-INV-09"]),
    ("snapshot_storm", &["TIKV-INV-03", "TIKV-INV-10"]),
    ("cluster_slowness", &["TIKV-INV-05", "TIKV-INV-11"]),
    ("leader_imbalance", &["TIKV-INV-08"]),
    ("not_bootstrapped", &["TIKV-INV-12"]),
];

#[test]
fn every_fixture_scenario_fires_its_invariants_through_the_host() {
    let mut failures = Vec::new();
    for (scenario, want) in CASES {
        let v = run(scenario, &[]);
        let got = fired(&v);
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        println!("{scenario:22} fired {got:?}");
        if got != want {
            failures.push(format!(
                "{scenario}: fired {got:?}, want {want:?}: {}",
                v["violations"]
            ));
        }
        let problems = v["observation"]["problems"].as_array().unwrap();
        if *scenario != "not_bootstrapped" && !problems.is_empty() {
            failures.push(format!("{scenario}: problems {problems:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn evidence_survives_the_sandbox() {
    let v = run("store_isolated", &[]);
    let x = &v["violations"][0];
    assert_eq!(x["dedup_key"], "TIKV-INV-01:store-5");
    assert_eq!(evidence(x, "status_up"), Some("true"));
    assert_eq!(
        evidence(x, "pd_errors_logged"),
        Some("true"),
        "the re-timed store log reached the plugin"
    );
    let v = run("hot_write", &[]);
    assert_eq!(evidence(&v["violations"][0], "region_id"), Some("120"));
    let v = run("healthy", &[]);
    let comps: Vec<&str> = v["observation"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        comps,
        [
            "cluster", "pd-pd1", "pd-pd2", "pd-pd3", "store-1", "store-4", "store-5"
        ]
    );
    let metrics = v["observation"]["metrics"].as_array().unwrap();
    assert!(
        metrics
            .iter()
            .any(|m| m["name"] == "tikv_request_p99_seconds"),
        "PromQL answers reached the plugin"
    );
}

#[test]
fn malformed_bodies_are_problems_and_a_dead_pd_url_is_skipped() {
    let v = run("malformed", &[]);
    let problems: Vec<String> = v["observation"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["source"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "pd /stores: malformed JSON",
        "pd /health: HTTP 503",
        "pd /regions/check/down-peer: HTTP 500 [PD:core:ErrRegionNotFound]",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "no `{want}` in {problems:#?}"
        );
    }
    assert_eq!(fired(&v), BTreeSet::new());

    let server = Server::start(fixture_handler("pd_leader_loss"));
    let mut dead = Server::start(fixture_handler("healthy"));
    let dead_url = dead.url();
    dead.stop();
    let v = observe(&[format!("pd={dead_url},{}", server.url())]);
    assert!(fired(&v).contains("TIKV-INV-02"), "{}", v["violations"]);
    let problems = v["observation"]["problems"].to_string();
    assert!(
        problems.contains(&dead_url) && problems.contains("ErrRedirectNoLeader"),
        "{problems}"
    );
}
