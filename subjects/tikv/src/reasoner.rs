//! The host's real offline reasoner (`operator-diagnosis`, evidence-v1) over each fixture
//! scenario: the plugin's observations and violations, converted to the host's model the
//! way the host converts them, become tickets and history, and the reasoner's top-1 must be
//! the scenario's failure mode.

use crate::fixture::{Fixture, NOW_MS};
use crate::{invariants, metadata, observe::observe, settings::Settings};
use operator_diagnosis::{Context, ContextInput, ObservationPoint, TicketFacts, offline};
use operator_model as m;
use operator_sdk as s;

fn labels(kvs: &[s::Kv]) -> m::Labels {
    kvs.iter()
        .map(|k| (k.key.clone(), k.value.clone()))
        .collect()
}

fn severity(v: s::Severity) -> m::Severity {
    match v {
        s::Severity::Info => m::Severity::Info,
        s::Severity::Warning => m::Severity::Warning,
        s::Severity::Critical => m::Severity::Critical,
    }
}

fn observation(o: &s::Observation) -> m::Observation {
    m::Observation {
        timestamp_ms: o.timestamp_ms,
        components: o
            .components
            .iter()
            .map(|c| m::Component {
                id: c.id.clone(),
                kind: c.kind.clone(),
                address: c.address.clone(),
                state: match c.state {
                    s::ComponentState::Up => m::ComponentState::Up,
                    s::ComponentState::Degraded => m::ComponentState::Degraded,
                    s::ComponentState::Down => m::ComponentState::Down,
                    s::ComponentState::Unknown => m::ComponentState::Unknown,
                },
                attributes: labels(&c.attributes),
            })
            .collect(),
        metrics: o
            .metrics
            .iter()
            .map(|x| m::MetricSample {
                name: x.name.to_owned(),
                labels: (x.labels.pairs())
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                value: x.value,
                timestamp_ms: x.timestamp_ms,
            })
            .collect(),
        events: o
            .events
            .iter()
            .map(|e| m::Event {
                timestamp_ms: e.timestamp_ms,
                component: e.component.clone(),
                severity: severity(e.severity),
                message: e.message.clone(),
                attributes: labels(&e.attributes),
            })
            .collect(),
        problems: o
            .problems
            .iter()
            .map(|p| m::Problem {
                source: p.source.clone(),
                message: p.message.clone(),
            })
            .collect(),
    }
}

fn check(c: &s::SignalCheck) -> m::SignalCheck {
    match c {
        s::SignalCheck::Invariant(id) => m::SignalCheck::Invariant { id: id.clone() },
        s::SignalCheck::Evidence(kv) => m::SignalCheck::Evidence {
            key: kv.key.clone(),
            value: kv.value.clone(),
        },
        s::SignalCheck::ComponentState(kv) => m::SignalCheck::ComponentState {
            kind: kv.key.clone(),
            state: kv.value.clone(),
        },
        s::SignalCheck::Attribute(kv) => m::SignalCheck::Attribute {
            key: kv.key.clone(),
            value: kv.value.clone(),
        },
        s::SignalCheck::Metric(x) => m::SignalCheck::Metric {
            name: x.name.clone(),
            labels: labels(&x.labels),
            comparison: match x.comparison {
                s::Comparison::Greater => m::Comparison::Greater,
                s::Comparison::Less => m::Comparison::Less,
                s::Comparison::Equal => m::Comparison::Equal,
            },
            threshold: x.threshold,
        },
        s::SignalCheck::Event(t) => m::SignalCheck::Event {
            contains: t.clone(),
        },
    }
}

fn signals(v: &[s::Signal]) -> Vec<m::Signal> {
    v.iter()
        .map(|x| m::Signal {
            description: x.description.clone(),
            check: check(&x.check),
            weight: x.weight,
        })
        .collect()
}

fn subject_metadata() -> m::SubjectMetadata {
    let md = metadata::metadata();
    let mut out = m::SubjectMetadata::named(&md.name);
    out.invariants = md
        .invariants
        .iter()
        .map(|i| m::InvariantInfo {
            id: i.id.clone(),
            name: i.name.clone(),
            description: i.description.clone(),
            severity: severity(i.severity),
        })
        .collect();
    out.failure_modes = md
        .failure_modes
        .iter()
        .map(|f| m::FailureMode {
            id: f.id.clone(),
            name: f.name.clone(),
            description: f.description.clone(),
            signals_for: signals(&f.signals_for),
            signals_against: signals(&f.signals_against),
            suggested_action: f.suggested_action.clone(),
            suggested_params: f
                .suggested_params
                .iter()
                .map(|k| (k.key.clone(), k.value.clone()))
                .collect(),
        })
        .collect();
    out
}

/// Observes `scenarios` in turn (ticks 1..n, 10 s apart), opens one ticket per violation of
/// the last tick, and asks the offline reasoner. Returns (top-1 failure mode name, score,
/// runner-up name, score).
pub fn diagnose(scenarios: &[&str]) -> (String, f64, String, f64) {
    let settings = Settings::from_pairs([
        ("pd", "http://pd1:2379,http://pd2:2379,http://pd3:2379"),
        ("prometheus", "http://prom:9090"),
        ("log.store-1", "file:/l1"),
        ("log.store-4", "file:/l4"),
        ("log.store-5", "file:/l5"),
    ])
    .unwrap();
    let n = scenarios.len();
    let history: Vec<s::Observation> = scenarios
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            observe(
                &Fixture::scenario(sc),
                &settings,
                NOW_MS - (n - 1 - i) as u64 * 10_000,
            )
            .unwrap()
        })
        .collect();
    let violations = invariants::check(&history, &settings.thresholds);
    let tick = n as i64;
    let tickets: Vec<TicketFacts> = violations
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ev: Vec<(String, String)> = v
                .evidence
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            TicketFacts {
                id: i as i64 + 1,
                kind: "invariant".into(),
                invariant: v.invariant.clone(),
                severity: severity(v.severity),
                component: v.component.clone(),
                summary: v.summary.clone(),
                opening_evidence: ev.clone(),
                evidence: ev,
                first_seen_ms: NOW_MS as i64,
                last_seen_ms: NOW_MS as i64,
                opened_tick: tick,
                last_tick: tick,
                count: 1,
                resolved: false,
            }
        })
        .collect();
    let points = history
        .iter()
        .enumerate()
        .map(|(i, o)| ObservationPoint {
            tick: i as i64 + 1,
            observation: observation(o),
        })
        .collect();
    let ctx = Context::build(
        ContextInput {
            subject: "tikv".into(),
            metadata: subject_metadata(),
            tickets,
            root: None,
            history: points,
        },
        200_000,
    );
    let ranked = offline::rank(&ctx);
    let answer = offline::answer(&ctx);
    let name = |id: &str| {
        ranked
            .iter()
            .find(|h| h.failure_mode == id)
            .map_or(id.to_string(), |h| h.name.clone())
    };
    let top = name(&answer.root_cause.failure_mode);
    let runner = ranked
        .iter()
        .find(|h| h.failure_mode != answer.root_cause.failure_mode);
    (
        top,
        ranked[0].score,
        runner.map_or(String::new(), |h| h.name.clone()),
        runner.map_or(0.0, |h| h.score),
    )
}

#[test]
fn the_offline_reasoner_names_each_scenarios_failure_mode() {
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for (scenarios, _, mode) in crate::scenarios::CASES {
        let (top, score, runner, runner_score) = diagnose(scenarios);
        let want = mode.unwrap_or("unknown");
        report.push(format!(
            "{:40} top-1 {top} ({score:.2}), runner-up {runner} ({runner_score:.2})",
            scenarios.join(" -> ")
        ));
        if top != want {
            wrong.push(format!(
                "{scenarios:?}: offline reasoner says {top}, want {want}"
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
