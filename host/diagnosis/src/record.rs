//! The diagnosis record: what a backend answers ([`Answer`]), what the host stores
//! ([`Diagnosis`]), the JSON Schema a model fills, and the validation that stands between
//! the two so that no backend can smuggle an action in.

use crate::context::Context;
use operator_model::{ActionInfo, Risk};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;

/// The failure mode id used when nothing declared fits.
pub const UNKNOWN: &str = "unknown";
/// The two actions every subject has implicitly: they change nothing.
pub const OBSERVE: &str = "observe";
pub const WAIT: &str = "wait";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceSource {
    Metric,
    State,
    Event,
    Log,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    /// A declared failure mode id, or `unknown`.
    pub failure_mode: String,
    pub component: String,
    pub mechanism: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceItem {
    pub source: EvidenceSource,
    /// A reference that exists in the [`Context`] (see [`Context::has_ref`]).
    pub reference: String,
    pub value: String,
    pub meaning: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub rank: u32,
    pub hypothesis: String,
    pub evidence_against: String,
    pub why_rejected: String,
}

/// What a backend proposes: only the action id, its params and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposedAction {
    pub action: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub rationale: String,
}

/// A backend's answer, before validation. This is exactly the `submit_diagnosis` tool input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub summary: String,
    pub root_cause: RootCause,
    pub evidence: Vec<EvidenceItem>,
    pub alternatives: Vec<Alternative>,
    pub recommended_action: ProposedAction,
    pub confidence: f64,
    pub what_would_change_my_mind: String,
}

/// Risk of the recommended action, taken from the plugin's declaration (`none` for
/// observe/wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionRisk {
    None,
    Low,
    Medium,
    High,
}

impl From<Risk> for ActionRisk {
    fn from(r: Risk) -> Self {
        match r {
            Risk::Low => ActionRisk::Low,
            Risk::Medium => ActionRisk::Medium,
            Risk::High => ActionRisk::High,
        }
    }
}

impl ActionRisk {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionRisk::None => "none",
            ActionRisk::Low => "low",
            ActionRisk::Medium => "medium",
            ActionRisk::High => "high",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendedAction {
    /// A declared action id, or `observe` / `wait`.
    pub action: String,
    pub params: BTreeMap<String, String>,
    pub rationale: String,
    /// From the declared action, never from the backend.
    pub risk: ActionRisk,
    /// From the declared action, never from the backend.
    pub mutates: bool,
}

impl RecommendedAction {
    pub fn is_passive(&self) -> bool {
        self.action == OBSERVE || self.action == WAIT
    }
}

/// The validated record the host stores as JSON and renders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub summary: String,
    pub root_cause: RootCause,
    pub evidence: Vec<EvidenceItem>,
    pub alternatives: Vec<Alternative>,
    pub recommended_action: RecommendedAction,
    pub confidence: f64,
    pub what_would_change_my_mind: String,
    pub backend: String,
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub duration_ms: u64,
}

/// Who produced an answer and what it cost; filled by the backend, not the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunInfo {
    pub backend: String,
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub duration_ms: u64,
}

/// Why an answer was refused. Every reason is kept, not just the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub reasons: Vec<String>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "answer rejected: {}", self.reasons.join("; "))
    }
}

impl std::error::Error for Rejection {}

/// Minimum number of alternatives the record must weigh.
pub const MIN_ALTERNATIVES: usize = 2;

/// Checks an answer against the context and turns it into the stored record.
///
/// Rejects: an action the plugin does not declare (other than observe/wait); parameters
/// that are unknown, missing when required, or unresolved placeholders; non-numeric
/// parameter values that name nothing observed in the context (so an action cannot be
/// aimed at something the operator never saw); evidence citing a reference that does not
/// exist; fewer than two alternatives; a confidence outside 0..=1; a failure mode that is
/// neither declared nor `unknown`. `risk` and `mutates` come from the declaration.
pub fn validate(answer: &Answer, ctx: &Context, run: RunInfo) -> Result<Diagnosis, Rejection> {
    let mut reasons = Vec::new();
    let meta = ctx.metadata();
    let fm = &answer.root_cause.failure_mode;
    if fm != UNKNOWN && !meta.failure_modes.iter().any(|m| &m.id == fm) {
        reasons.push(format!(
            "root_cause.failure_mode `{}` is not declared (nor `unknown`)",
            clip(fm, 80)
        ));
    }
    if answer.evidence.is_empty() {
        reasons.push("no evidence cited".into());
    }
    for (i, e) in answer.evidence.iter().enumerate() {
        if !ctx.has_ref(&e.reference) {
            reasons.push(format!(
                "evidence[{i}] cites `{}`, which is not in the context",
                clip(&e.reference, 120)
            ));
        }
    }
    if answer.alternatives.len() < MIN_ALTERNATIVES {
        reasons.push(format!(
            "{} alternative(s) weighed, at least {MIN_ALTERNATIVES} required",
            answer.alternatives.len()
        ));
    }
    if !(0.0..=1.0).contains(&answer.confidence) || answer.confidence.is_nan() {
        reasons.push(format!("confidence {} is outside 0..1", answer.confidence));
    }
    let proposed = &answer.recommended_action;
    let (risk, mutates, action_id) = if proposed.action == OBSERVE || proposed.action == WAIT {
        if !proposed.params.is_empty() {
            reasons.push(format!("`{}` takes no parameters", proposed.action));
        }
        (ActionRisk::None, false, proposed.action.clone())
    } else {
        match meta.action(&proposed.action) {
            None => {
                reasons.push(format!(
                    "action `{}` is not declared by the plugin",
                    clip(&proposed.action, 80)
                ));
                (ActionRisk::None, false, proposed.action.clone())
            }
            Some(decl) => {
                check_params(decl, &proposed.params, ctx, &mut reasons);
                (decl.risk.into(), decl.mutates, decl.id.clone())
            }
        }
    };
    if !reasons.is_empty() {
        return Err(Rejection { reasons });
    }
    Ok(Diagnosis {
        summary: answer.summary.clone(),
        root_cause: answer.root_cause.clone(),
        evidence: answer.evidence.clone(),
        alternatives: answer.alternatives.clone(),
        recommended_action: RecommendedAction {
            action: action_id,
            params: proposed.params.clone(),
            rationale: proposed.rationale.clone(),
            risk,
            mutates,
        },
        confidence: answer.confidence,
        what_would_change_my_mind: answer.what_would_change_my_mind.clone(),
        backend: run.backend,
        model: run.model,
        tokens_in: run.tokens_in,
        tokens_out: run.tokens_out,
        duration_ms: run.duration_ms,
    })
}

fn check_params(
    decl: &ActionInfo,
    params: &BTreeMap<String, String>,
    ctx: &Context,
    reasons: &mut Vec<String>,
) {
    for (name, value) in params {
        if !decl.params.iter().any(|p| &p.name == name) {
            reasons.push(format!("{} has no parameter `{}`", decl.id, clip(name, 60)));
            continue;
        }
        if is_placeholder(value) {
            reasons.push(format!(
                "{} parameter `{name}` is an unresolved placeholder `{}`",
                decl.id,
                clip(value, 60)
            ));
        } else if value.trim().is_empty() {
            reasons.push(format!("{} parameter `{name}` is empty", decl.id));
        } else if value.parse::<f64>().is_err() && !ctx.mentions(value) {
            reasons.push(format!(
                "{} parameter `{name}={}` names nothing observed in the context",
                decl.id,
                clip(value, 60)
            ));
        }
    }
    for p in decl.params.iter().filter(|p| p.required) {
        if !params.contains_key(&p.name) {
            reasons.push(format!(
                "{} requires parameter `{}`, which is missing",
                decl.id, p.name
            ));
        }
    }
}

/// `{name}`: a failure mode's suggested parameter that was never filled in.
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    v.len() > 2 && v.starts_with('{') && v.ends_with('}') && !v[1..v.len() - 1].contains(['{', '}'])
}

pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// JSON Schema of [`Answer`]: the `input_schema` of the `submit_diagnosis` tool.
pub fn answer_schema() -> Value {
    let text = |d: &str| json!({"type": "string", "description": d});
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["summary", "root_cause", "evidence", "alternatives",
                     "recommended_action", "confidence", "what_would_change_my_mind"],
        "properties": {
            "summary": text("What is observed, in plain words."),
            "root_cause": {
                "type": "object",
                "additionalProperties": false,
                "required": ["failure_mode", "component", "mechanism"],
                "properties": {
                    "failure_mode": text("A failure mode id declared in the subject metadata, or \"unknown\"."),
                    "component": text("The component id at fault."),
                    "mechanism": text("How the cause produces the symptoms, in one or two sentences.")
                }
            },
            "evidence": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["source", "reference", "value", "meaning"],
                    "properties": {
                        "source": {"type": "string", "enum": ["metric", "state", "event", "log"]},
                        "reference": text("A `ref` string exactly as it appears in the data (e.g. ticket:12.evidence.error_kind)."),
                        "value": text("The value at that reference."),
                        "meaning": text("What this value tells.")
                    }
                }
            },
            "alternatives": {
                "type": "array",
                "minItems": MIN_ALTERNATIVES,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["rank", "hypothesis", "evidence_against", "why_rejected"],
                    "properties": {
                        "rank": {"type": "integer", "minimum": 2},
                        "hypothesis": text("Another explanation, e.g. another failure mode id and name."),
                        "evidence_against": text("Observed facts (with refs) that contradict it, or expected facts that are absent."),
                        "why_rejected": text("Why it ranks below the root cause.")
                    }
                }
            },
            "recommended_action": {
                "type": "object",
                "additionalProperties": false,
                "required": ["action", "params", "rationale"],
                "properties": {
                    "action": text("A declared action id, or \"observe\" or \"wait\"."),
                    "params": {
                        "type": "object",
                        "description": "The action's declared parameters, every value resolved from observed data.",
                        "additionalProperties": {"type": "string"}
                    },
                    "rationale": text("Why this action, and why now.")
                }
            },
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "what_would_change_my_mind": text("Observations that would overturn this diagnosis.")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised() {
        assert!(is_placeholder("{node}"));
        assert!(is_placeholder(" {window_ms} "));
        assert!(!is_placeholder("{}"));
        assert!(!is_placeholder("node-1"));
        assert!(!is_placeholder("{a}{b}"));
    }

    #[test]
    fn the_schema_requires_every_answer_field() {
        let s = answer_schema();
        let required: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let sample = serde_json::to_value(Answer {
            summary: String::new(),
            root_cause: RootCause {
                failure_mode: UNKNOWN.into(),
                component: String::new(),
                mechanism: String::new(),
            },
            evidence: vec![],
            alternatives: vec![],
            recommended_action: ProposedAction {
                action: OBSERVE.into(),
                params: BTreeMap::new(),
                rationale: String::new(),
            },
            confidence: 0.0,
            what_would_change_my_mind: String::new(),
        })
        .unwrap();
        let fields: Vec<&String> = sample.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), required.len());
        for f in fields {
            assert!(required.contains(&f.as_str()), "{f} missing from schema");
        }
    }
}
