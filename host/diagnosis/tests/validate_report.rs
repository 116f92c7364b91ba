//! Validation rejects what must not pass; the report renders every section, the command,
//! and colour only on request.

mod common;

use operator_diagnosis::context::{Context, DEFAULT_BUDGET_TOKENS};
use operator_diagnosis::offline;
use operator_diagnosis::record::{self, Answer, RunInfo, answer_schema, validate};
use operator_diagnosis::report::{self, ReportInput};
use std::sync::OnceLock;

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| Context::build(common::load("pause_node").input(), DEFAULT_BUDGET_TOKENS))
}

fn good() -> Answer {
    offline::answer(ctx())
}

fn reasons(a: &Answer) -> Vec<String> {
    validate(a, ctx(), RunInfo::default()).unwrap_err().reasons
}

#[test]
fn the_offline_answer_validates_and_takes_risk_from_the_declaration() {
    let d = validate(&good(), ctx(), RunInfo::default()).unwrap();
    assert_eq!(d.recommended_action.action, "ACT-05");
    assert!(d.recommended_action.mutates);
    assert_eq!(d.recommended_action.risk.as_str(), "medium");
}

#[test]
fn each_defect_is_rejected_with_a_reason() {
    let mut a = good();
    a.recommended_action
        .params
        .insert("force".into(), "true".into());
    assert!(
        reasons(&a)
            .iter()
            .any(|r| r.contains("no parameter `force`"))
    );

    let mut a = good();
    a.recommended_action.params.clear();
    assert!(
        reasons(&a)
            .iter()
            .any(|r| r.contains("requires parameter `node`"))
    );

    let mut a = good();
    a.recommended_action
        .params
        .insert("node".into(), "10.9.9.9:1".into());
    assert!(
        reasons(&a)
            .iter()
            .any(|r| r.contains("names nothing observed"))
    );

    let mut a = good();
    a.evidence[0].reference = "ticket:12.evidence.nope".into();
    assert!(
        reasons(&a)
            .iter()
            .any(|r| r.contains("ticket:12.evidence.nope"))
    );

    let mut a = good();
    a.alternatives.truncate(1);
    assert!(reasons(&a).iter().any(|r| r.contains("alternative")));

    for c in [-0.1, 1.5, f64::NAN] {
        let mut a = good();
        a.confidence = c;
        assert!(reasons(&a).iter().any(|r| r.contains("confidence")), "{c}");
    }

    let mut a = good();
    a.root_cause.failure_mode = "FM-77".into();
    assert!(reasons(&a).iter().any(|r| r.contains("FM-77")));

    let mut a = good();
    a.recommended_action.action = "observe".into();
    assert!(
        reasons(&a)
            .iter()
            .any(|r| r.contains("takes no parameters"))
    );
    a.recommended_action.params.clear();
    let d = validate(&a, ctx(), RunInfo::default()).unwrap();
    assert!(!d.recommended_action.mutates);

    // Several defects at once: all are reported.
    let mut a = good();
    a.alternatives.clear();
    a.confidence = 2.0;
    a.recommended_action.action = "ACT-42".into();
    assert_eq!(reasons(&a).len(), 3);
}

#[test]
fn a_backend_cannot_claim_a_lower_risk() {
    // The answer has no risk/mutates fields at all: the schema forbids extra fields.
    let schema = answer_schema();
    let props = schema["properties"]["recommended_action"]["properties"]
        .as_object()
        .unwrap();
    assert!(!props.contains_key("risk") && !props.contains_key("mutates"));
    assert_eq!(
        schema["properties"]["recommended_action"]["additionalProperties"],
        false
    );
}

#[test]
fn report_has_every_section_and_the_exact_command() {
    let d = validate(
        &good(),
        ctx(),
        RunInfo {
            backend: "offline".into(),
            model: "evidence-v1".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let input = ReportInput {
        ticket_line: "#12 MON-01 critical 127.0.0.1:7002".into(),
        incident_lines: vec!["incident: root #12".into()],
        action_command_prefix:
            "operator action --subject ratelimiter --set nodes=http://127.0.0.1:7001".into(),
        when: "2026-11-25 14:00:00".into(),
    };
    let plain = report::render(&d, &input, false);
    for section in [
        "Observation",
        "Root cause",
        "Evidence",
        "Options considered",
        "Recommendation",
        "What would change my mind",
    ] {
        assert!(plain.contains(section), "{section} missing:\n{plain}");
    }
    assert!(plain.contains("operator action --subject ratelimiter --set nodes=http://127.0.0.1:7001 ACT-05 --param node=127.0.0.1:7002 --allow-actions"), "{plain}");
    assert!(plain.contains("why not:"));
    assert!(!plain.contains('\x1b'));
    let colored = report::render(&d, &input, true);
    assert!(colored.contains("\x1b["));

    // An observe recommendation prints no command; a shell-unsafe value gets quoted.
    let mut o = d.clone();
    o.recommended_action.action = record::OBSERVE.into();
    o.recommended_action.params.clear();
    assert!(report::action_command(&o, "operator action").is_none());
    let mut q = d.clone();
    q.recommended_action
        .params
        .insert("node".into(), "a b'c".into());
    assert_eq!(
        report::action_command(&q, "operator action").unwrap(),
        "operator action ACT-05 --param 'node=a b'\\''c' --allow-actions"
    );
    // Control characters from a backend cannot repaint the terminal.
    let mut evil = d;
    evil.summary = "fine\x1b[2Jgone".into();
    assert!(!report::render(&evil, &input, false).contains('\x1b'));
}

#[test]
fn raw_series_references_resolve_against_the_history() {
    assert!(ctx().has_ref(r#"metric:rl_view_limit{key="tight1",node="127.0.0.1:7001"}"#));
    assert!(
        ctx()
            .has_ref(r#"rate:ratelimiter_decisions_total{node="127.0.0.1:7001",result="allowed"}"#)
    );
    assert!(ctx().has_ref("component:127.0.0.1:7002.state"));
    assert!(!ctx().has_ref(r#"metric:rl_view_limit{key="nope",node="127.0.0.1:7001"}"#));
    assert!(!ctx().has_ref("component:127.0.0.1:9999.state"));
}
