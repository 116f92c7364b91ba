//! The TiKV subject: watches a TiKV cluster through PD's HTTP API.
//!
//! This is the first slice (store states); the full subject is on the roadmap.

use operator_sdk::prelude::*;
use serde::Deserialize;

struct Tikv;

#[derive(Deserialize)]
struct Stores {
    #[serde(default)]
    stores: Vec<StoreEntry>,
}

#[derive(Deserialize)]
struct StoreEntry {
    store: StoreInfo,
}

#[derive(Deserialize)]
struct StoreInfo {
    id: u64,
    #[serde(default)]
    address: String,
    /// Derived by PD: Up, Disconnected, Down, Offline, Tombstone.
    #[serde(default)]
    state_name: String,
}

fn pd() -> Result<String, ObserveError> {
    config::require("pd").map_err(ObserveError::Config)
}

impl Subject for Tikv {
    fn metadata() -> Metadata {
        Metadata {
            name: "tikv".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TiKV cluster via PD (setting: pd=http://pd:2379)".into(),
            invariants: vec![InvariantInfo {
                id: "TIKV-01".into(),
                name: "store not up".into(),
                description: "Every store PD knows (except tombstones) is Up".into(),
                severity: Severity::Critical,
            }],
            actions: vec![],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let url = http::join(&pd()?, "/pd/api/v1/stores");
        let stores: Stores = http::get_json(&url).map_err(|e| {
            if e.is_unreachable() {
                ObserveError::Unreachable(e.to_string())
            } else {
                ObserveError::BadData(e.to_string())
            }
        })?;
        let components = stores
            .stores
            .into_iter()
            .map(|s| Component {
                id: format!("store-{}", s.store.id),
                kind: "tikv".into(),
                address: s.store.address,
                state: match s.store.state_name.as_str() {
                    "Up" => ComponentState::Up,
                    "Disconnected" | "Offline" => ComponentState::Degraded,
                    "Down" => ComponentState::Down,
                    _ => ComponentState::Unknown,
                },
                attributes: vec![kv("state_name", s.store.state_name)],
            })
            .collect();
        Ok(Observation {
            timestamp_ms: now_ms(),
            components,
            metrics: vec![],
            events: vec![],
            problems: vec![],
        })
    }

    fn check_invariants(history: Vec<Observation>) -> Vec<Violation> {
        let Some(now) = history.last() else {
            return vec![];
        };
        now.components
            .iter()
            .filter(|c| c.kind == "tikv")
            .filter(|c| !matches!(c.attr("state_name"), Some("Up") | Some("Tombstone")))
            .map(|c| Violation {
                invariant: "TIKV-01".into(),
                severity: Severity::Critical,
                component: c.id.clone(),
                summary: format!("{} is {}", c.id, c.attr("state_name").unwrap_or("unknown")),
                evidence: vec![
                    kv("state_name", c.attr("state_name").unwrap_or("")),
                    kv("address", &c.address),
                ],
                dedup_key: format!("TIKV-01:{}", c.id),
            })
            .collect()
    }

    fn execute(action: String, _params: Vec<Kv>) -> Result<String, ActionError> {
        Err(ActionError::UnknownAction(action))
    }
}

operator_sdk::export_subject!(Tikv);
