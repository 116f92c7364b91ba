//! Test guest: loops forever in observe

use operator_sdk::prelude::*;

struct Guest;

impl Subject for Guest {
    fn metadata() -> Metadata {
        Metadata {
            name: "spin".into(),
            version: "0.0.0".into(),
            description: "loops forever in observe".into(),
            settings: vec![],
            invariants: vec![],
            actions: vec![],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    // check_invariants and execute: the SDK's defaults. This guest is also the proof that
    // a subject implementing only `metadata` and `observe` builds and runs.
}

operator_sdk::export_subject!(Guest);
