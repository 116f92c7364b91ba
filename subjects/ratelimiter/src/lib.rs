//! The rate limiter subject: `services/ratelimiter` nodes sharing one Redis.
//!
//! Settings (`--set key=value`):
//! - `nodes` (required): the nodes' base URLs, comma-separated.
//! - `redis`: the shared Redis (`redis://host:port`), read directly and read-only.
//! - `prometheus`: optional; the nodes' own `/metrics` are enough.
//! - `log.<node-id>` or `log.<host:port>`: optional log source of a node (`file:/path` or
//!   `docker:<container>`); its warning and error lines become events.
//! - thresholds: `latency_p99_ms` (100), `latency_min_samples` (20), `heartbeat_stale_ms`
//!   (3000), `drift_tolerance` (0.1 of the limit, at least 2), `hot_key_share` (0.5),
//!   `hot_key_min_decisions` (200), `ttl_scan_limit` (1000).
//!
//! This crate is also the model for third-party subjects: `observe` turns every source
//! into components, metric samples and events; `check_invariants` is a pure function of
//! the recent observations; actions and failure modes are plain data in `metadata`.
//!
//! The invariants are one table (`invariants::INVARIANTS`: id, name, description,
//! severity, check) that `metadata` lists, and the evidence keys failure modes cite are
//! shared constants (`evidence`). The service's JSON shapes and Redis key names come from
//! `ratelimiter-wire`, the crate the service's own contract test checks against a real
//! node. `cargo test -p subject-ratelimiter` runs the invariants over fixture observations
//! built by the same code `observe` uses, on the host target.

mod actions;
mod evidence;
// Public for `benches/native_work.rs`, which costs the subject's own work (building the
// observation, checking the invariants) compiled natively, against the live cluster.
pub mod invariants;
mod metadata;
pub mod observe;

use operator_sdk::prelude::*;

struct RateLimiter;

impl Subject for RateLimiter {
    fn metadata() -> Metadata {
        metadata::metadata()
    }

    fn observe() -> Result<Observation, ObserveError> {
        observe::observe()
    }

    fn check_invariants(history: &[Observation]) -> Vec<Violation> {
        let thresholds = invariants::Thresholds::from_config();
        invariants::check(history, &thresholds)
    }

    fn execute(action: String, params: Vec<Kv>) -> Result<String, ActionError> {
        actions::execute(&action, &params)
    }
}

operator_sdk::export_subject!(RateLimiter);
