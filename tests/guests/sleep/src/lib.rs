//! Test guest: sleeps (blocking, `std::thread::sleep`, which waits on a WASI clock
//! pollable) in the phase the `phase` setting names, for `sleep_ms` milliseconds.
//!
//! `phase` is one of `metadata`, `observe`, `check-invariants`, `execute`; when it is not
//! set at all the guest sleeps in `metadata`, so that `operator plugin inspect` (which
//! passes no settings) meets a plugin that hangs while describing itself. `sleep_ms`
//! defaults to an hour: only the host's deadline ends the call.

use operator_sdk::prelude::*;

struct Sleep;

const HOUR_MS: u64 = 3_600_000;

fn sleep_in(phase: &str) {
    let wanted = config::get("phase").unwrap_or_else(|| "metadata".into());
    if wanted == phase {
        let ms = config::parse_or("sleep_ms", HOUR_MS).unwrap_or(HOUR_MS);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

impl Subject for Sleep {
    fn metadata() -> Metadata {
        sleep_in("metadata");
        Metadata {
            name: "sleep".into(),
            version: "0.0.0".into(),
            description: "sleeps in the phase it is told to".into(),
            settings: vec![
                Setting::value(
                    "phase",
                    "metadata, observe, check-invariants or execute [default: metadata]",
                ),
                Setting::value("sleep_ms", "how long to sleep [default: an hour]"),
            ],
            invariants: vec![],
            actions: vec![ActionInfo {
                id: "SLEEP-A1".into(),
                name: "nap".into(),
                description: "sleeps if the phase is execute".into(),
                params: vec![],
                mutates: false,
                risk: Risk::Low,
            }],
            failure_modes: vec![],
        }
    }

    fn observe() -> Result<Observation, ObserveError> {
        sleep_in("observe");
        Ok(Observation {
            timestamp_ms: now_ms(),
            components: vec![],
            metrics: Default::default(),
            events: vec![],
            problems: vec![],
        })
    }

    fn check_invariants(_history: &[Observation]) -> Vec<Violation> {
        sleep_in("check-invariants");
        vec![]
    }

    fn execute(action: String, _params: Vec<Kv>) -> Result<String, ActionError> {
        sleep_in("execute");
        match action.as_str() {
            "SLEEP-A1" | "nap" => Ok("awake".into()),
            _ => Err(ActionError::UnknownAction(action)),
        }
    }
}

operator_sdk::export_subject!(Sleep);
