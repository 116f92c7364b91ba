//! Test guest: a well-behaved subject driven by a local HTTP server.
//!
//! `GET {target}/state` returns `{"components":[{"id":"a","healthy":true}, ...]}`;
//! invariant GOOD-01 says every component is healthy. A component with a configured log
//! source (`log.<id>`) adds its warning and error lines as events. `execute("poke")` POSTs to
//! `{target}/poke` (a mutating action), `execute("ping")` GETs (read-only).

use operator_sdk::prelude::*;
use serde_json::Value;

struct Good;

impl Subject for Good {
    fn metadata() -> Metadata {
        Metadata {
            name: "good".into(),
            version: "1.0.0".into(),
            description: "a well-behaved test subject".into(),
            settings: vec![Setting::origin("target", "the test server's base URL").required()],
            invariants: vec![InvariantInfo {
                id: "GOOD-01".into(),
                name: "component healthy".into(),
                description: "every component reports healthy".into(),
                severity: Severity::Warning,
            }],
            actions: vec![
                ActionInfo {
                    id: "ACT-01".into(),
                    name: "poke".into(),
                    description: "POST /poke".into(),
                    params: vec![],
                    mutates: true,
                    risk: Risk::Low,
                },
                ActionInfo {
                    id: "ACT-02".into(),
                    name: "ping".into(),
                    description: "GET /ping".into(),
                    params: vec![],
                    mutates: false,
                    risk: Risk::Low,
                },
            ],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let target = config::require("target").map_err(ObserveError::Config)?;
        let url = http::join(&target, "/state");
        let state: Value = http::get_json(&url).map_err(|e| {
            if e.is_unreachable() {
                ObserveError::Unreachable(e.to_string())
            } else {
                ObserveError::BadData(e.to_string())
            }
        })?;
        let components: Vec<Component> = state["components"]
            .as_array()
            .ok_or_else(|| ObserveError::BadData(format!("{url}: no `components` list")))?
            .iter()
            .map(|c| {
                let healthy = c["healthy"].as_bool().unwrap_or(false);
                Component {
                    id: c["id"].as_str().unwrap_or("?").to_string(),
                    kind: "thing".into(),
                    address: target.clone(),
                    state: if healthy {
                        ComponentState::Up
                    } else {
                        ComponentState::Down
                    },
                    attributes: vec![],
                }
            })
            .collect();
        // Components with a log source the user configured contribute their warnings.
        let mut events = Vec::new();
        let mut problems = Vec::new();
        for c in &components {
            if logs::configured(&c.id) {
                match logs::events(&c.id, 100, 10, now_ms()) {
                    Ok(e) => events.extend(e),
                    Err(message) => problems.push(Problem {
                        source: c.id.clone(),
                        message,
                    }),
                }
            }
        }
        Ok(Observation {
            timestamp_ms: now_ms(),
            components,
            metrics: Default::default(),
            events,
            problems,
        })
    }

    fn check_invariants(history: &[Observation]) -> Vec<Violation> {
        let Some(now) = history.last() else {
            return vec![];
        };
        now.components
            .iter()
            .filter(|c| c.state != ComponentState::Up)
            .map(|c| Violation {
                invariant: "GOOD-01".into(),
                severity: Severity::Warning,
                component: c.id.clone(),
                summary: format!("{} is unhealthy", c.id),
                evidence: vec![kv("history_len", history.len())],
                dedup_key: format!("GOOD-01:{}", c.id),
            })
            .collect()
    }

    fn execute(action: String, _params: Vec<Kv>) -> Result<String, ActionError> {
        let target = config::require("target").map_err(ActionError::BadParams)?;
        let method = match action.as_str() {
            "ACT-01" => "POST",
            "ACT-02" => "GET",
            other => return Err(ActionError::UnknownAction(other.into())),
        };
        let path = if method == "POST" { "/poke" } else { "/ping" };
        http::Request::new(method, &http::join(&target, path))
            .send_ok()
            .map(|r| format!("HTTP {}", r.status))
            .map_err(|e| ActionError::Failed(e.to_string()))
    }
}

operator_sdk::export_subject!(Good);
