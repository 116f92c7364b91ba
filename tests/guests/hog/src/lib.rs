//! Test guest: allocates without bound in observe

use operator_sdk::prelude::*;

struct Guest;

impl Subject for Guest {
    fn metadata() -> Metadata {
        Metadata {
            name: "hog".into(),
            version: "0.0.0".into(),
            description: "allocates without bound in observe".into(),
            settings: vec![],
            invariants: vec![],
            actions: vec![],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really used, not just reserved.
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }

    // check_invariants and execute: the SDK's defaults. This guest is also the proof that
    // a subject implementing only `metadata` and `observe` builds and runs.
}

operator_sdk::export_subject!(Guest);
