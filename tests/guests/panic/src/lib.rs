//! Test guest: panics in observe

use operator_sdk::prelude::*;

struct Guest;

impl Subject for Guest {
    fn metadata() -> Metadata {
        Metadata {
            name: "panic".into(),
            version: "0.0.0".into(),
            description: "panics in observe".into(),
            settings: vec![],
            invariants: vec![],
            actions: vec![],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let nodes: Vec<&str> = Vec::new();
        panic!(
            "guest invariant broken: expected at least one node, got {}",
            nodes.len()
        )
    }

    fn check_invariants(_history: &[Observation]) -> Vec<Violation> {
        vec![]
    }

    fn execute(action: String, _params: Vec<Kv>) -> Result<String, ActionError> {
        Err(ActionError::UnknownAction(action))
    }
}

operator_sdk::export_subject!(Guest);
