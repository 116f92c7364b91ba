//! A plugin built directly against operator:subject@0.3.0 with wit-bindgen (not through
//! the SDK, which follows the newest contract): proves the host still loads a 0.3
//! component (which has `check-retained` but not `http.send-all`), forwards its imports,
//! and lets a kept instance check the observations it holds.
//!
//! `observe` GETs `{target}/state` and reports one component, `svc`, up when the answer
//! is 200; V030-01 is violated when it is not up, with the length of the window it checked
//! and whether it was held or sent as evidence.

wit_bindgen::generate!({ world: "subject", path: "../../../wit/since_v0.3.0" });

use std::cell::RefCell;

thread_local! {
    /// What `observe` returned, newest last; replaced by a history the host sends.
    static HELD: RefCell<Vec<Observation>> = const { RefCell::new(Vec::new()) };
}

use exports::operator::subject::plugin::Guest;
use operator::subject::types::{
    ActionError, ActionInfo, Component, ComponentState, InvariantInfo, Kv, Observation,
    ObserveError, Risk, SettingInfo, SettingKind, Severity, SubjectMetadata, Violation,
};
use operator::subject::{config, http};

struct V030;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn get(path: &str) -> Result<http::Response, String> {
    let target = config::get("target").ok_or("setting `target` is missing")?;
    let url = format!("{}{path}", target.trim_end_matches('/'));
    http::send(&http::Request {
        method: "GET".into(),
        url: url.clone(),
        headers: vec![],
        body: None,
        timeout_ms: Some(2_000),
    })
    .map_err(|e| format!("{url}: {e:?}"))
}

impl Guest for V030 {
    fn metadata() -> SubjectMetadata {
        SubjectMetadata {
            name: "v030".into(),
            version: "0.3.0".into(),
            description: "a contract 0.3 plugin built without the SDK".into(),
            settings: vec![SettingInfo {
                name: "target".into(),
                description: "the test server".into(),
                kind: SettingKind::Origin,
                required: true,
                default_value: None,
            }],
            invariants: vec![InvariantInfo {
                id: "V030-01".into(),
                name: "service up".into(),
                description: "GET /state answers 200".into(),
                severity: Severity::Critical,
            }],
            actions: vec![ActionInfo {
                id: "V030-A1".into(),
                name: "ping".into(),
                description: "GET /ping".into(),
                params: vec![],
                mutates: false,
                risk: Risk::Low,
            }],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let resp = get("/state").map_err(ObserveError::Unreachable)?;
        let o = Observation {
            timestamp_ms: now_ms(),
            components: vec![Component {
                id: "svc".into(),
                kind: "service".into(),
                address: config::get("target").unwrap_or_default(),
                state: if resp.status == 200 {
                    ComponentState::Up
                } else {
                    ComponentState::Down
                },
                attributes: vec![
                    Kv {
                        key: "status".into(),
                        value: resp.status.to_string(),
                    },
                    Kv {
                        key: "body_bytes".into(),
                        value: resp.body.len().to_string(),
                    },
                ],
            }],
            metrics: vec![],
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
        match action.as_str() {
            "V030-A1" => get("/ping")
                .map(|r| format!("HTTP {}", r.status))
                .map_err(ActionError::Failed),
            _ => Err(ActionError::UnknownAction(action)),
        }
    }
}

fn check(history: &[Observation], how: &str) -> Vec<Violation> {
    let Some(now) = history.last() else {
        return vec![];
    };
    now.components
        .iter()
        .filter(|c| c.state != ComponentState::Up)
        .map(|c| Violation {
            invariant: "V030-01".into(),
            severity: Severity::Critical,
            component: c.id.clone(),
            summary: format!("{} is not up", c.id),
            evidence: vec![
                Kv {
                    key: "window".into(),
                    value: history.len().to_string(),
                },
                Kv {
                    key: "window_was".into(),
                    value: how.into(),
                },
            ],
            dedup_key: format!("V030-01:{}", c.id),
        })
        .collect()
}

export!(V030);
