//! A plugin built directly against operator:subject@0.4.0 with wit-bindgen (not through
//! the SDK, which follows the newest contract): proves the host still loads a 0.4
//! component, forwards its imports (`http.send-all` included), takes the metric samples it
//! sends as a list into its own table, and sends them back the same way.
//!
//! `observe` GETs `{target}/state` and `{target}/ping` in one `send-all` and reports one
//! component, `svc`, up when `/state` answers 200, with three samples that share names and
//! label values (one with its labels out of key order). V040-01 is violated when `svc` is
//! not up; its evidence says how many samples the newest observation had and the labels of
//! its first, as the plugin received or held them.

wit_bindgen::generate!({ world: "subject", path: "../../../wit/since_v0.4.0" });

use std::cell::RefCell;

thread_local! {
    /// What `observe` returned, newest last; replaced by a history the host sends.
    static HELD: RefCell<Vec<Observation>> = const { RefCell::new(Vec::new()) };
}

use exports::operator::subject::plugin::Guest;
use operator::subject::types::{
    ActionError, Component, ComponentState, InvariantInfo, Kv, MetricSample, Observation,
    ObserveError, SettingInfo, SettingKind, Severity, SubjectMetadata, Violation,
};
use operator::subject::{config, http};

struct V040;

fn kv(key: &str, value: &str) -> Kv {
    Kv {
        key: key.into(),
        value: value.into(),
    }
}

fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> MetricSample {
    MetricSample {
        name: name.into(),
        labels: labels.iter().map(|(k, v)| kv(k, v)).collect(),
        value,
        timestamp_ms: 1,
    }
}

impl Guest for V040 {
    fn metadata() -> SubjectMetadata {
        SubjectMetadata {
            name: "v040".into(),
            version: "0.4.0".into(),
            description: "a contract 0.4 plugin built without the SDK".into(),
            settings: vec![SettingInfo {
                name: "target".into(),
                description: "the test server".into(),
                kind: SettingKind::Origin,
                required: true,
                default_value: None,
            }],
            invariants: vec![InvariantInfo {
                id: "V040-01".into(),
                name: "service up".into(),
                description: "GET /state answers 200".into(),
                severity: Severity::Critical,
            }],
            actions: vec![],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let target = config::get("target")
            .ok_or_else(|| ObserveError::Config("setting `target` is missing".into()))?;
        let request = |path: &str| http::Request {
            method: "GET".into(),
            url: format!("{}{path}", target.trim_end_matches('/')),
            headers: vec![],
            body: None,
            timeout_ms: Some(2_000),
        };
        let mut answers = http::send_all(&[request("/state"), request("/ping")]).into_iter();
        let state = match answers.next() {
            Some(Ok(r)) => r.status,
            Some(Err(e)) => return Err(ObserveError::Unreachable(format!("{e:?}"))),
            None => return Err(ObserveError::BadData("send-all answered nothing".into())),
        };
        let o = Observation {
            timestamp_ms: 1,
            components: vec![Component {
                id: "svc".into(),
                kind: "service".into(),
                address: target.clone(),
                state: if state == 200 {
                    ComponentState::Up
                } else {
                    ComponentState::Down
                },
                attributes: vec![kv("status", &state.to_string())],
            }],
            metrics: vec![
                sample("svc_up", &[("node", "svc")], f64::from(state == 200)),
                sample(
                    "svc_status",
                    &[("node", "svc"), ("code", &state.to_string())],
                    1.0,
                ),
                sample(
                    "svc_answers",
                    &[("node", "svc")],
                    answers.len() as f64 + 1.0,
                ),
            ],
            events: vec![],
            problems: vec![],
        };
        HELD.with_borrow_mut(|h| h.push(o.clone()));
        Ok(o)
    }

    fn check_invariants(history: Vec<Observation>) -> Vec<Violation> {
        let out = check(&history, "sent");
        HELD.with_borrow_mut(|h| *h = history);
        out
    }

    fn check_retained(count: u32) -> Option<Vec<Violation>> {
        HELD.with_borrow(|h| {
            let count = count as usize;
            (h.len() >= count).then(|| check(&h[h.len() - count..], "held"))
        })
    }

    fn execute(action: String, _params: Vec<Kv>) -> Result<String, ActionError> {
        Err(ActionError::UnknownAction(action))
    }
}

fn check(history: &[Observation], how: &str) -> Vec<Violation> {
    let Some(now) = history.last() else {
        return vec![];
    };
    let first_labels = now.metrics.get(1).map_or(String::new(), |m| {
        m.labels
            .iter()
            .map(|l| format!("{}={}", l.key, l.value))
            .collect::<Vec<_>>()
            .join(",")
    });
    now.components
        .iter()
        .filter(|c| c.state != ComponentState::Up)
        .map(|c| Violation {
            invariant: "V040-01".into(),
            severity: Severity::Critical,
            component: c.id.clone(),
            summary: format!("{} is not up", c.id),
            evidence: vec![
                kv("window", &history.len().to_string()),
                kv("window_was", how),
                kv("samples", &now.metrics.len().to_string()),
                kv("status_labels", &first_labels),
            ],
            dedup_key: format!("V040-01:{}", c.id),
        })
        .collect()
}

export!(V040);
