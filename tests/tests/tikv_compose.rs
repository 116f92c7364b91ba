//! compose/tikv cannot run here (no TiKV or PD images), so it is validated the way a user's
//! CI would: `docker-compose config`, `promtool check rules` and `check config`, and every
//! PromQL expression the tikv plugin sends checked by promtool and found on the dashboard.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn compose_dir() -> PathBuf {
    repo().join("compose/tikv")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (docker-compose and promtool come from Debian: docker-compose, prometheus)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The plugin's PromQL table from subjects/tikv/README.md (kept in sync with the code by the
/// subject's own test): (query id, expression).
fn plugin_queries() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo().join("subjects/tikv/README.md")).unwrap();
    readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            if cells.len() != 4 {
                return None;
            }
            let id = cells[0].trim_matches('`');
            let expr = cells[2].strip_prefix('`')?.strip_suffix('`')?;
            // The settings table also starts with backticks; only query rows name a metric.
            (cells[1].starts_with("`tikv_") || cells[1].starts_with("`pd_") || cells[1] == "`up`")
                .then(|| (id.to_string(), expr.to_string()))
        })
        .collect()
}

#[test]
fn the_environment_validates_with_docker_compose_and_promtool() {
    let out = run(Command::new("sh").arg(compose_dir().join("check.sh")));
    assert!(
        out.contains("SUCCESS: prometheus.yml is valid")
            || out.contains("is valid prometheus config file syntax"),
        "{out}"
    );
    assert!(out.contains("SUCCESS: 14 rules found"), "{out}");
}

#[test]
fn three_pd_and_three_tikv_advertise_what_prometheus_scrapes() {
    let config = run(Command::new("docker-compose")
        .current_dir(compose_dir())
        .args(["config"]));
    for pd in ["pd1", "pd2", "pd3"] {
        assert!(
            config.contains(&format!("--advertise-client-urls=http://{pd}:2379")),
            "{pd}"
        );
    }
    assert!(
        config.contains(
            "--initial-cluster=pd1=http://pd1:2380,pd2=http://pd2:2380,pd3=http://pd3:2380"
        )
    );
    let prom = std::fs::read_to_string(compose_dir().join("prometheus.yml")).unwrap();
    for tikv in ["tikv1", "tikv2", "tikv3"] {
        assert!(
            config.contains(&format!("--advertise-status-addr={tikv}:20180")),
            "{tikv}"
        );
        assert!(
            prom.contains(&format!("\"{tikv}:20180\"")),
            "Prometheus scrapes {tikv} at its advertised status address"
        );
        assert!(
            config.contains(&format!(
                "--set=log.{tikv}:20160=file:/logs/{tikv}/tikv.log"
            )),
            "the operator reads {tikv}'s log"
        );
    }
    for service in ["prometheus:", "grafana:", "ycsb:", "operator:"] {
        assert!(config.contains(service), "{service}");
    }
    assert!(config.contains("--set=prometheus=http://prometheus:9090"));
}

#[test]
fn every_query_the_plugin_sends_is_valid_promql_and_on_the_dashboard() {
    let queries = plugin_queries();
    assert_eq!(
        queries.len(),
        19,
        "17 instant and 2 range queries: {queries:#?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: tikv-subject\n    rules:\n");
    for (id, expr) in &queries {
        rules.push_str(&format!(
            "      - record: tikv_subject:{id}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let file = dir.path().join("plugin-queries.yml");
    std::fs::write(&file, rules).unwrap();
    let out = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file));
    assert!(out.contains("SUCCESS: 19 rules found"), "{out}");

    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(compose_dir().join("grafana/dashboards/tikv.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for (id, expr) in &queries {
        assert!(
            exprs.contains(&expr.as_str()),
            "the dashboard lacks the plugin's `{id}` query"
        );
    }
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(
            p["datasource"]["uid"], "prometheus",
            "every panel uses the provisioned datasource"
        );
    }
}
