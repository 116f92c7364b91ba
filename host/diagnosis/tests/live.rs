//! The offline reasoner on contexts recorded from live faults of the rate limiter
//! (`tests/tests/ratelimiter_diagnosis.rs` against a real redis-server and real nodes):
//! the tickets as the store listed them and the last observations around the onset. Each
//! of these was diagnosed wrongly before the reasoner learned from it; the message of the
//! commit that added it says what the live data showed.

mod common;

use common::{load, metadata};
use operator_diagnosis::context::{Context, ContextInput, DEFAULT_BUDGET_TOKENS};
use operator_diagnosis::{incident, offline};

/// The context the host builds for the incident of the fixture's `expect.ticket`.
fn context(name: &str) -> (Context, serde_json::Value) {
    let fx = load(name);
    let ticket = fx.expect["ticket"].as_i64().expect("expect.ticket");
    let inc = incident::group(&fx.tickets, &fx.history)
        .into_iter()
        .find(|i| i.tickets().any(|id| id == ticket))
        .expect("the ticket is in an incident");
    let input = ContextInput {
        subject: "ratelimiter".into(),
        metadata: metadata(),
        tickets: fx
            .tickets
            .iter()
            .filter(|t| inc.tickets().any(|id| id == t.id))
            .cloned()
            .collect(),
        root: Some(inc.root),
        history: fx.history.clone(),
    };
    (Context::build(input, DEFAULT_BUDGET_TOKENS), fx.expect)
}

fn check(name: &str) {
    let (ctx, expect) = context(name);
    let d = offline::diagnose(&ctx).unwrap_or_else(|r| panic!("{name}: rejected: {r}"));
    assert_eq!(
        d.root_cause.failure_mode,
        expect["failure_mode"].as_str().unwrap(),
        "{name}: ranking {}",
        offline::ranking_json(&ctx)
    );
    assert_eq!(
        d.root_cause.component,
        expect["component"].as_str().unwrap(),
        "{name}"
    );
    let argued = d
        .alternatives
        .iter()
        .filter(|a| !a.evidence_against.contains("nothing contradicts it"))
        .count();
    assert!(argued >= 2, "{name}: {:?}", d.alternatives);
}

/// Redis killed mid-tick: the nodes' MON-02 tickets opened with `redis_reachable=true`
/// (the operator's own read still succeeded) and were never reported again; the fresh
/// evidence says Redis is unreachable.
#[test]
fn live_redis_down_trusts_the_latest_tick_over_the_frozen_onset() {
    check("live_redis_down");
}

/// A limit of 0 under load fires the hot-key invariant; the limit in force is the
/// specific evidence that separates a misconfiguration from traffic.
#[test]
fn live_limit_zero_is_a_misconfiguration_not_a_hot_key() {
    check("live_limit_zero");
}
