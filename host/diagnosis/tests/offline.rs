//! The offline reasoner on the rate limiter's faults, as the subject emits them.

mod common;

use common::{FAULTS, load};
use operator_diagnosis::context::{Context, DEFAULT_BUDGET_TOKENS};
use operator_diagnosis::incident::{self, Role};
use operator_diagnosis::offline;
use operator_diagnosis::record::{OBSERVE, UNKNOWN};

#[test]
fn each_fault_gets_the_right_failure_mode_component_and_a_sound_record() {
    let mut failures = Vec::new();
    for name in FAULTS {
        let fx = load(name);
        let ctx = Context::build(fx.input(), DEFAULT_BUDGET_TOKENS);
        let d = offline::diagnose(&ctx)
            .unwrap_or_else(|r| panic!("{name}: offline answer rejected: {r}"));
        let want_fm = fx.expect["failure_mode"].as_str().unwrap();
        if d.root_cause.failure_mode != want_fm {
            failures.push(format!(
                "{name}: failure mode {} (want {want_fm}); ranking {}",
                d.root_cause.failure_mode,
                offline::ranking_json(&ctx)
            ));
        }
        if let Some(c) = fx.expect["component"].as_str()
            && d.root_cause.component != c
        {
            failures.push(format!(
                "{name}: component {} (want {c})",
                d.root_cause.component
            ));
        }
        let want_action = fx.expect["action"].as_str().unwrap();
        if d.recommended_action.action != want_action {
            failures.push(format!(
                "{name}: action {} (want {want_action}): {}",
                d.recommended_action.action, d.recommended_action.rationale
            ));
        }
        if let Some(params) = fx.expect["params"].as_object() {
            for (k, v) in params {
                if d.recommended_action.params.get(k).map(String::as_str) != v.as_str() {
                    failures.push(format!(
                        "{name}: param {k}={:?} (want {v})",
                        d.recommended_action.params.get(k)
                    ));
                }
            }
        }
        assert!(d.alternatives.len() >= 2, "{name}: {:?}", d.alternatives);
        for a in &d.alternatives {
            assert!(
                !a.evidence_against.trim().is_empty() && !a.why_rejected.trim().is_empty(),
                "{name}: {a:?}"
            );
        }
        assert!((0.0..=1.0).contains(&d.confidence));
        for e in &d.evidence {
            assert!(ctx.has_ref(&e.reference), "{name}: {}", e.reference);
        }
        if d.recommended_action.action != OBSERVE {
            let decl = ctx
                .metadata()
                .action(&d.recommended_action.action)
                .expect("declared");
            assert_eq!(d.recommended_action.mutates, decl.mutates);
        }
        assert_eq!(d.backend, "offline");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn redis_down_is_one_incident_rooted_at_mon02_with_mon04_and_mon05_as_symptoms() {
    let fx = load("redis_down");
    let incidents = incident::group(&fx.tickets, &fx.history);
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let inc = &incidents[0];
    let inv = |id: i64| {
        fx.tickets
            .iter()
            .find(|t| t.id == id)
            .unwrap()
            .invariant
            .clone()
    };
    assert_eq!(inv(inc.root), "MON-02");
    let symptoms: Vec<String> = inc
        .members
        .iter()
        .filter(|m| m.role == Role::Symptom)
        .map(|m| inv(m.ticket))
        .collect();
    assert_eq!(
        symptoms.iter().filter(|s| *s == "MON-04").count(),
        3,
        "{symptoms:?}"
    );
    assert!(symptoms.contains(&"MON-05".to_string()), "{symptoms:?}");
    for m in &inc.members {
        assert!(!m.reason.is_empty());
    }
}

#[test]
fn partition_is_one_incident_rooted_at_the_nodes_mon02() {
    let fx = load("partition");
    let incidents = incident::group(&fx.tickets, &fx.history);
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].root, fx.expect["root"].as_i64().unwrap());
    assert_eq!(incidents[0].members.len(), 4);
}

#[test]
fn no_match_says_unknown_and_observes() {
    let fx = load("no_match");
    let ctx = Context::build(fx.input(), DEFAULT_BUDGET_TOKENS);
    let d = offline::diagnose(&ctx).unwrap();
    assert_eq!(d.root_cause.failure_mode, UNKNOWN);
    assert_eq!(d.recommended_action.action, OBSERVE);
    assert!(d.confidence < 0.5);
}

#[test]
fn unrelated_tickets_far_apart_are_separate_incidents() {
    let a = load("stuck_key").tickets;
    let mut b = load("kill_node").tickets;
    for t in &mut b {
        t.opened_tick += 50;
        t.first_seen_ms += 100_000;
    }
    let all: Vec<_> = a.into_iter().chain(b).collect();
    assert_eq!(incident::group(&all, &[]).len(), 2);
}

#[test]
fn fingerprint_moves_with_material_changes_only() {
    let fx = load("partition");
    let latest = fx.history.last().map(|p| &p.observation);
    let all = incident::fingerprint(&fx.tickets, latest);
    // Counts and evidence values moving do not change it.
    let mut later = fx.tickets.clone();
    for t in &mut later {
        t.count += 5;
        t.last_tick += 5;
        t.evidence.push(("local_count".into(), "99".into()));
    }
    assert_eq!(incident::fingerprint(&later, latest), all);
    // A new invariant joining does.
    let fewer = &fx.tickets[..2];
    assert_ne!(incident::fingerprint(fewer, latest), all);
    // A component changing state does.
    let mut obs = latest.unwrap().clone();
    for c in &mut obs.components {
        c.state = operator_model::ComponentState::Down;
    }
    assert_ne!(incident::fingerprint(&fx.tickets, Some(&obs)), all);
}
