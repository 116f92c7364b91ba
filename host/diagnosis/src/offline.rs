//! The deterministic default reasoner. It weighs each declared failure mode's signals
//! against the context, adds reasoning that holds for any subject (onset order, breadth,
//! co-movement, persistence), ranks the hypotheses, explains every runner-up, and says
//! `unknown` when nothing fits. It knows no subject: everything specific comes from the
//! plugin's metadata and the observed data.

use crate::context::{Change, Context, SignalKind, TicketFacts, fmt_num, metric_ref};
use crate::record::{
    Alternative, Answer, Diagnosis, EvidenceItem, EvidenceSource, OBSERVE, ProposedAction,
    Rejection, RootCause, RunInfo, UNKNOWN, clip, is_placeholder, validate,
};
use operator_model::{Comparison, FailureMode, Signal, SignalCheck};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;

/// Name of this reasoner in the record's `model` field.
pub const MODEL: &str = "evidence-v1";
/// Below this score no failure mode is said to fit.
const MIN_SCORE: f64 = 0.3;
/// Below this confidence the reasoner recommends watching rather than acting.
const ACT_CONFIDENCE: f64 = 0.5;
/// What a fact counts for when it was last seen before the incident's latest tick (a
/// ticket that stopped being reported, or the evidence a ticket opened with): it held
/// once, but a fresher observation may contradict it.
const STALE_WEIGHT: f64 = 0.5;

/// One declared signal that was found in the context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalMatch {
    pub description: String,
    pub weight: f64,
    pub reference: String,
    pub value: String,
    pub source: EvidenceSource,
    /// The ticket it was found in, if any.
    pub ticket: Option<i64>,
    /// Found only in evidence older than the incident's latest tick; `weight` is already
    /// reduced for it.
    pub stale: bool,
}

/// One failure mode, weighed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hypothesis {
    pub failure_mode: String,
    pub name: String,
    pub score: f64,
    /// Share of the declared signals-for weight that was found.
    pub coverage: f64,
    /// Matched weight from signals other than "this invariant fires": evidence values,
    /// states, metrics and events say how it broke, the invariant only that it did.
    /// Breaks ties between modes that explain the same symptom.
    pub specific: f64,
    pub matched_for: Vec<SignalMatch>,
    pub matched_against: Vec<SignalMatch>,
    /// Descriptions of signals-for that were expected but not found.
    pub missing_for: Vec<String>,
    /// The ticket most of its signals came from.
    pub anchor: Option<i64>,
    pub component: String,
    /// Generic adjustments and why.
    pub notes: Vec<String>,
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

fn source_of(value: &str) -> EvidenceSource {
    if value.trim().parse::<f64>().is_ok() {
        EvidenceSource::Metric
    } else {
        EvidenceSource::State
    }
}

/// Tickets in the order their evidence is consulted: the root first, then by onset.
fn ordered_tickets(ctx: &Context) -> Vec<&TicketFacts> {
    let root = ctx.root().map(|t| t.id);
    let mut ts: Vec<&TicketFacts> = ctx.tickets().iter().collect();
    ts.sort_by_key(|t| (Some(t.id) != root, t.opened_tick, t.id));
    ts
}

/// The tickets in consulting order, those still reported on the incident's latest tick
/// first: when a symptom moved from one ticket to another (a component-level violation
/// replaced by a cluster-level one), the one that still holds speaks for it.
fn fresh_first(ctx: &Context, latest: i64) -> Vec<&TicketFacts> {
    let mut ts = ordered_tickets(ctx);
    ts.sort_by_key(|t| t.last_tick < latest);
    ts
}

/// Looks for one signal in the context.
fn find(ctx: &Context, signal: &Signal) -> Option<SignalMatch> {
    let m = |reference: String, value: String, source, ticket| SignalMatch {
        description: signal.description.clone(),
        weight: f64::from(signal.weight),
        reference,
        value,
        source,
        ticket,
        stale: false,
    };
    // The incident's latest tick: a fact last seen before it may no longer hold.
    let latest = ctx.tickets().iter().map(|t| t.last_tick).max().unwrap_or(0);
    match &signal.check {
        SignalCheck::Invariant { id } => fresh_first(ctx, latest)
            .into_iter()
            .find(|t| t.invariant.eq_ignore_ascii_case(id))
            .map(|t| {
                m(
                    format!("ticket:{}.invariant", t.id),
                    t.invariant.clone(),
                    EvidenceSource::State,
                    Some(t.id),
                )
            }),
        SignalCheck::Evidence { key, value } => {
            let hit = |t: &TicketFacts, items: &[(String, String)], part: &str| {
                items
                    .iter()
                    .find(|(k, v)| k == key && norm(v) == norm(value))
                    .map(|(k, v)| {
                        m(
                            format!("ticket:{}.{part}.{k}", t.id),
                            v.clone(),
                            source_of(v),
                            Some(t.id),
                        )
                    })
            };
            // A value seen on the latest tick first; else one that held earlier (a
            // ticket no longer reported, or the onset), at reduced weight.
            let tickets = fresh_first(ctx, latest);
            tickets
                .iter()
                .filter(|t| t.last_tick >= latest)
                .find_map(|t| {
                    hit(t, &t.evidence, "evidence").or_else(|| {
                        (t.opened_tick >= latest)
                            .then(|| hit(t, &t.opening_evidence, "opening"))
                            .flatten()
                    })
                })
                .or_else(|| {
                    tickets
                        .iter()
                        .find_map(|t| {
                            hit(t, &t.evidence, "evidence")
                                .or_else(|| hit(t, &t.opening_evidence, "opening"))
                        })
                        .map(|mut s| {
                            s.weight *= STALE_WEIGHT;
                            s.stale = true;
                            s
                        })
                })
        }
        SignalCheck::ComponentState { kind, state } => {
            let cur = ctx.current()?;
            cur.observation
                .components
                .iter()
                .find(|c| c.kind == *kind && c.state.as_str().eq_ignore_ascii_case(state))
                .map(|c| {
                    m(
                        format!("component:{}.state", c.id),
                        c.state.as_str().into(),
                        EvidenceSource::State,
                        None,
                    )
                })
        }
        SignalCheck::Attribute { key, value } => {
            let cur = ctx.current()?;
            cur.observation.components.iter().find_map(|c| {
                let v = c.attributes.get(key)?;
                (norm(v) == norm(value)).then(|| {
                    m(
                        format!("component:{}.attr.{key}", c.id),
                        v.clone(),
                        EvidenceSource::State,
                        None,
                    )
                })
            })
        }
        SignalCheck::Metric {
            name,
            labels,
            comparison,
            threshold,
        } => {
            let cur = ctx.current()?;
            cur.observation
                .metrics
                .iter()
                .filter(|s| s.name() == name)
                .filter(|s| {
                    labels
                        .iter()
                        .all(|(k, v)| s.labels().get(k) == Some(v.as_str()))
                })
                .find(|s| match comparison {
                    Comparison::Greater => s.value() > *threshold,
                    Comparison::Less => s.value() < *threshold,
                    Comparison::Equal => (s.value() - threshold).abs() < 1e-9,
                })
                .map(|s| {
                    m(
                        metric_ref(s.name(), s.labels()),
                        fmt_num(s.value()),
                        EvidenceSource::Metric,
                        None,
                    )
                })
        }
        SignalCheck::Event { contains } => {
            let needle = norm(contains);
            let start = ctx.baseline().map(|b| b.tick);
            ctx.history()
                .iter()
                .rev()
                .filter(|p| start.is_none_or(|s| p.tick > s))
                .find_map(|p| {
                    p.observation
                        .events
                        .iter()
                        .enumerate()
                        .find(|(_, e)| norm(&e.message).contains(&needle))
                        .map(|(j, e)| {
                            m(
                                format!("event:{}.{j}", p.tick),
                                clip(&e.message, 120),
                                EvidenceSource::Event,
                                None,
                            )
                        })
                })
        }
    }
}

/// The change that moved first among those of one component.
fn first_change<'a>(ctx: &'a Context, component: &str) -> Option<&'a Change> {
    ctx.changes()
        .iter()
        .filter(|c| c.component.as_deref() == Some(component))
        .min_by(|a, b| {
            a.onset_tick
                .cmp(&b.onset_tick)
                .then(b.relevance.total_cmp(&a.relevance))
        })
}

fn weigh(ctx: &Context, fm: &FailureMode) -> Hypothesis {
    let mut matched_for = Vec::new();
    let mut missing_for = Vec::new();
    let mut specific = 0.0;
    // The ticket of the heaviest "this invariant fires" sign the mode declares.
    let mut by_invariant: Option<(f64, i64)> = None;
    for s in &fm.signals_for {
        match find(ctx, s) {
            Some(hit) => {
                if matches!(s.check, SignalCheck::Invariant { .. }) {
                    if let Some(t) = hit.ticket
                        && by_invariant.is_none_or(|(w, _)| hit.weight > w)
                    {
                        by_invariant = Some((hit.weight, t));
                    }
                } else {
                    specific += hit.weight;
                }
                matched_for.push(hit);
            }
            None => missing_for.push(s.description.clone()),
        }
    }
    let matched_against: Vec<SignalMatch> = fm
        .signals_against
        .iter()
        .filter_map(|s| find(ctx, s))
        .collect();
    let total: f64 = fm.signals_for.iter().map(|s| f64::from(s.weight)).sum();
    let got: f64 = matched_for.iter().map(|s| s.weight).sum();
    let against: f64 = matched_against.iter().map(|s| s.weight).sum();
    let coverage = if total > 0.0 { got / total } else { 0.0 };

    // A mode whose every sign is present outranks one with the same weight half-present.
    let mut score = got * (0.5 + 0.5 * coverage) - against;
    // The anchor: the ticket of the invariant the mode says fires, when it declares one
    // (its other signs may sit in symptom tickets about no component, e.g. a key);
    // else the ticket that carries most of the matched weight, the root on a tie.
    let mut per_ticket: BTreeMap<i64, f64> = BTreeMap::new();
    for s in &matched_for {
        if let Some(t) = s.ticket {
            *per_ticket.entry(t).or_default() += s.weight;
        }
    }
    let order = ordered_tickets(ctx);
    let anchor = by_invariant
        .and_then(|(_, id)| order.iter().find(|t| t.id == id))
        .or_else(|| {
            order
                .iter()
                .filter(|t| per_ticket.contains_key(&t.id))
                .max_by(|a, b| {
                    per_ticket[&a.id]
                        .total_cmp(&per_ticket[&b.id])
                        // max_by keeps the last of equals: prefer the earlier in `order`.
                        .then(std::cmp::Ordering::Greater)
                })
        })
        .copied();
    let component = anchor
        .map(|t| t.subject_label())
        .or_else(|| {
            matched_for.iter().find_map(|s| {
                s.reference
                    .strip_prefix("component:")
                    .and_then(|r| r.split_once('.'))
                    .map(|(id, _)| id.to_string())
            })
        })
        .unwrap_or_default();
    let mut notes = Vec::new();
    // Onset order: a cause moves before its effects.
    if got > 0.0 && !component.is_empty() {
        let earliest = ctx.changes().iter().map(|c| c.onset_tick).min();
        if let (Some(first), Some(e)) = (first_change(ctx, &component), earliest) {
            if first.onset_tick == e {
                score += 0.1;
                notes.push(format!(
                    "{component} moved first ({} at tick {})",
                    first.reference, first.onset_tick
                ));
            } else {
                notes.push(format!(
                    "{component} moved at tick {}, after the first change at tick {e}",
                    first.onset_tick
                ));
            }
        }
    }
    Hypothesis {
        failure_mode: fm.id.clone(),
        name: fm.name.clone(),
        score,
        coverage,
        specific,
        matched_for,
        matched_against,
        missing_for,
        anchor: anchor.map(|t| t.id),
        component,
        notes,
    }
}

/// Every declared failure mode, weighed and ranked best first.
pub fn rank(ctx: &Context) -> Vec<Hypothesis> {
    let mut hs: Vec<Hypothesis> = ctx
        .metadata()
        .failure_modes
        .iter()
        .map(|fm| weigh(ctx, fm))
        .collect();
    hs.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.specific.total_cmp(&a.specific))
            .then(b.coverage.total_cmp(&a.coverage))
            .then(a.failure_mode.cmp(&b.failure_mode))
    });
    hs
}

/// The ranking as a compact JSON value (the LLM backends' second-opinion tool).
pub fn ranking_json(ctx: &Context) -> Value {
    let hs = rank(ctx);
    let list: Vec<Value> = hs
        .iter()
        .filter(|h| !h.matched_for.is_empty() || !h.matched_against.is_empty())
        .map(|h| {
            json!({
                "failure_mode": h.failure_mode,
                "name": h.name,
                "score": (h.score * 100.0).round() / 100.0,
                "coverage": (h.coverage * 100.0).round() / 100.0,
                "component": clip(&h.component, 120),
                "signals_for_found": h.matched_for.iter().map(|s| format!("{} = {} ({})", s.reference, clip(&s.value, 80), s.description)).collect::<Vec<_>>(),
                "signals_against_found": h.matched_against.iter().map(|s| format!("{} = {} ({})", s.reference, clip(&s.value, 80), s.description)).collect::<Vec<_>>(),
                "signals_for_absent": h.missing_for,
                "notes": h.notes,
            })
        })
        .collect();
    json!({"ranking": list, "note": "weights from the subject's declared failure-mode signals; the higher score is the better fit"})
}

fn describe(s: &SignalMatch) -> String {
    format!(
        "{} = {} ({}{})",
        s.reference,
        clip(&s.value, 80),
        s.description,
        if s.stale {
            "; held earlier, not on the latest tick"
        } else {
            ""
        }
    )
}

/// Resolves `{evidence-key}` placeholders from the matched tickets' evidence, the anchor
/// and root first. Returns the first placeholder that could not be resolved.
fn resolve_params(
    ctx: &Context,
    h: &Hypothesis,
    template: &[(String, String)],
) -> Result<BTreeMap<String, String>, String> {
    let mut order: Vec<&TicketFacts> = Vec::new();
    let all = ordered_tickets(ctx);
    if let Some(a) = h.anchor.and_then(|id| all.iter().find(|t| t.id == id)) {
        order.push(a);
    }
    let matched: Vec<i64> = h.matched_for.iter().filter_map(|s| s.ticket).collect();
    for t in &all {
        if matched.contains(&t.id) && !order.iter().any(|o| o.id == t.id) {
            order.push(t);
        }
    }
    let mut out = BTreeMap::new();
    for (name, value) in template {
        let mut v = value.clone();
        while let Some(start) = v.find('{') {
            let Some(len) = v[start..].find('}') else {
                break;
            };
            let key = v[start + 1..start + len].to_string();
            let found = order
                .iter()
                .find_map(|t| t.evidence_value(&key))
                .filter(|x| !x.trim().is_empty() && !x.eq_ignore_ascii_case("unknown"));
            match found {
                Some(x) => v.replace_range(start..start + len + 1, x),
                None => return Err(key),
            }
        }
        if is_placeholder(&v) {
            return Err(v);
        }
        out.insert(name.clone(), v);
    }
    Ok(out)
}

/// Generic alternatives that need no failure mode: a transient blip, an observer fault.
fn generic_alternatives(ctx: &Context) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let max_count = ctx.tickets().iter().map(|t| t.count).max().unwrap_or(0);
    let persistent = ctx.tickets().iter().max_by_key(|t| t.count);
    let span_s = ctx
        .tickets()
        .iter()
        .map(|t| (t.last_seen_ms - t.first_seen_ms) / 1000)
        .max()
        .unwrap_or(0);
    out.push(match persistent {
        Some(t) if max_count >= 2 => (
            "A transient blip that clears by itself".to_string(),
            format!(
                "ticket:{} has held on {} tick(s) over {span_s}s (ticks {}..{}); a blip would have cleared",
                t.id, t.count, t.opened_tick, t.last_tick
            ),
            "the violation persists across ticks".to_string(),
        ),
        _ => (
            "A transient blip that clears by itself".to_string(),
            "seen on a single tick so far: persistence cannot rule it out yet".to_string(),
            "not ruled out; it lowers the confidence, and the next ticks will tell".to_string(),
        ),
    });
    let answering: Vec<String> = ctx
        .current()
        .map(|p| {
            p.observation
                .components
                .iter()
                .filter(|c| c.state != operator_model::ComponentState::Down)
                .map(|c| c.id.clone())
                .collect()
        })
        .unwrap_or_default();
    let observer_tickets = ctx
        .tickets()
        .iter()
        .any(|t| t.kind == "plugin-failure" || t.kind == "observe-failure");
    out.push(if !answering.is_empty() && !observer_tickets {
        (
            "The operator's own view is wrong (plugin or network path of the observer)".to_string(),
            format!(
                "{} component(s) answered in the same observation (e.g. component:{}.state), so the observer reaches the subject",
                answering.len(),
                clip(&answering[0], 80)
            ),
            "other sources answered the same observer".to_string(),
        )
    } else {
        (
            "The operator's own view is wrong (plugin or network path of the observer)".to_string(),
            "no component answered, or the plugin itself failed: nothing contradicts it".to_string(),
            "not ruled out".to_string(),
        )
    });
    out
}

fn change_item(c: &Change, meaning: String) -> EvidenceItem {
    EvidenceItem {
        source: match c.kind {
            SignalKind::Metric => EvidenceSource::Metric,
            SignalKind::Event => EvidenceSource::Event,
            _ => EvidenceSource::State,
        },
        reference: c.reference.clone(),
        value: format!(
            "{} -> {}",
            c.before.as_deref().unwrap_or("absent"),
            c.after.as_deref().unwrap_or("absent")
        ),
        meaning,
    }
}

/// Builds the offline answer (before validation).
pub fn answer(ctx: &Context) -> Answer {
    let ranked = rank(ctx);
    let best = ranked
        .first()
        .filter(|h| h.score >= MIN_SCORE && !h.matched_for.is_empty());
    let root = ctx
        .root()
        .or_else(|| ordered_tickets(ctx).into_iter().next());
    let persist = ctx.tickets().iter().map(|t| t.count).max().unwrap_or(0);

    // Evidence: the winner's signals, then how the incident unfolded.
    let mut evidence: Vec<EvidenceItem> = Vec::new();
    if let Some(h) = best {
        for s in &h.matched_for {
            evidence.push(EvidenceItem {
                source: s.source,
                reference: s.reference.clone(),
                value: clip(&s.value, 120),
                meaning: format!("for {}: {}", h.failure_mode, s.description),
            });
        }
    } else if let Some(t) = root {
        evidence.push(EvidenceItem {
            source: EvidenceSource::State,
            reference: format!("ticket:{}.summary", t.id),
            value: clip(&t.summary, 160),
            meaning: format!(
                "{} is violated; no declared failure mode matches its evidence",
                t.invariant
            ),
        });
    }
    let focus = best.map(|h| h.component.clone()).unwrap_or_default();
    let first = ctx.changes().iter().min_by(|a, b| {
        a.onset_tick
            .cmp(&b.onset_tick)
            .then(b.relevance.total_cmp(&a.relevance))
    });
    if let Some(c) = first {
        evidence.push(change_item(
            c,
            format!("moved first (tick {}, {})", c.onset_tick, c.breadth),
        ));
    }
    if let Some(c) = first_change(ctx, &focus)
        .filter(|c| Some(c.reference.as_str()) != first.map(|f| f.reference.as_str()))
    {
        evidence.push(change_item(
            c,
            format!(
                "{focus} moved at tick {} ({}), together with {}",
                c.onset_tick,
                c.breadth,
                if c.moved_with.is_empty() {
                    "nothing else".into()
                } else {
                    c.moved_with
                        .iter()
                        .take(3)
                        .map(|r| clip(r, 80))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ));
    }
    if let Some(t) = ctx.tickets().iter().max_by_key(|t| t.count)
        && t.count >= 2
    {
        evidence.push(EvidenceItem {
            source: EvidenceSource::State,
            reference: format!("ticket:{}", t.id),
            value: format!("{} ticks", t.count),
            meaning: format!(
                "persistent: {} held from tick {} to {}",
                t.invariant, t.opened_tick, t.last_tick
            ),
        });
    }

    // Alternatives: the other modes that found any sign, then generic ones.
    let mut alternatives = Vec::new();
    let others: Vec<&Hypothesis> = ranked
        .iter()
        .filter(|h| best.is_none_or(|b| b.failure_mode != h.failure_mode))
        .filter(|h| !h.matched_for.is_empty())
        .collect();
    for h in others.iter().take(4) {
        let mut against: Vec<String> = h.matched_against.iter().map(describe).collect();
        if !h.missing_for.is_empty() {
            against.push(format!("expected but absent: {}", h.missing_for.join("; ")));
        }
        if against.is_empty() {
            against.push("nothing contradicts it directly".into());
        }
        let why = match best {
            Some(b) => format!(
                "scores {:.2} (found {:.0}% of its signs) against {:.2} for {}{}",
                h.score,
                100.0 * h.coverage,
                b.score,
                b.failure_mode,
                if !h.matched_against.is_empty() {
                    "; signs against it are present".to_string()
                } else if (b.score - h.score).abs() < 1e-9 && b.specific > h.specific {
                    format!(
                        "; on a tie, {} wins because specific evidence (not only the invariant firing) backs it",
                        b.failure_mode
                    )
                } else {
                    String::new()
                }
            ),
            None => format!(
                "too weak to name: score {:.2}, {:.0}% of its signs found",
                h.score,
                100.0 * h.coverage
            ),
        };
        alternatives.push((
            format!(
                "{} {}: {}",
                h.failure_mode,
                h.name,
                clip(&description_of(ctx, &h.failure_mode), 160)
            ),
            against.join("; "),
            why,
        ));
    }
    // A runner-up nothing speaks against does not show why the winner won. Until two
    // alternatives carry evidence against them, weigh the declared modes none of whose
    // signs was found: first those the evidence contradicts, then the rest in rank order.
    let argued = others
        .iter()
        .take(4)
        .filter(|h| !h.matched_against.is_empty() || !h.missing_for.is_empty())
        .count();
    let mut unsupported: Vec<&Hypothesis> = ranked
        .iter()
        .filter(|h| best.is_none_or(|b| b.failure_mode != h.failure_mode))
        .filter(|h| h.matched_for.is_empty() && !h.missing_for.is_empty())
        .collect();
    // Stable: within each group the ranking's order is kept.
    unsupported.sort_by_key(|h| h.matched_against.is_empty());
    for h in unsupported.into_iter().take(2usize.saturating_sub(argued)) {
        let mut against: Vec<String> = h.matched_against.iter().map(describe).collect();
        against.push(format!(
            "none of its signs is present (expected: {})",
            h.missing_for.join("; ")
        ));
        let why = if h.matched_against.is_empty() {
            "nothing in the incident points to it".to_string()
        } else {
            "the evidence contradicts it and nothing supports it".to_string()
        };
        alternatives.push((
            format!(
                "{} {}: {}",
                h.failure_mode,
                h.name,
                clip(&description_of(ctx, &h.failure_mode), 160)
            ),
            against.join("; "),
            why,
        ));
    }
    if alternatives.len() < 2 {
        alternatives.extend(generic_alternatives(ctx));
    }
    let alternatives: Vec<Alternative> = alternatives
        .into_iter()
        .enumerate()
        .map(
            |(i, (hypothesis, evidence_against, why_rejected))| Alternative {
                rank: i as u32 + 2,
                hypothesis,
                evidence_against,
                why_rejected,
            },
        )
        .collect();

    // Confidence: how complete the winner is, its margin, and how long it has held.
    let confidence = match best {
        Some(b) => {
            let second = others.first().map_or(0.0, |h| h.score.max(0.0));
            let margin = ((b.score - second) / b.score.max(1e-9)).clamp(0.0, 1.0);
            let persistence = (persist as f64 / 3.0).min(1.0);
            (0.2 + 0.4 * b.coverage + 0.25 * margin + 0.15 * persistence).clamp(0.05, 0.95)
        }
        None => 0.15,
    };
    let confidence = (confidence * 100.0).round() / 100.0;

    // Recommendation.
    let (action, params, rationale) = match best {
        None => (
            OBSERVE.to_string(),
            BTreeMap::new(),
            "no declared failure mode fits the evidence: watch, and read the tickets' evidence and the events before acting".to_string(),
        ),
        Some(b) => recommend(ctx, b, confidence),
    };

    let summary = summarize(ctx, best);
    let root_cause = match best {
        Some(b) => RootCause {
            failure_mode: b.failure_mode.clone(),
            component: b.component.clone(),
            mechanism: mechanism(ctx, b),
        },
        None => RootCause {
            failure_mode: UNKNOWN.into(),
            component: root.map(|t| t.subject_label()).unwrap_or_default(),
            mechanism: "none of the subject's declared failure modes matches the evidence".into(),
        },
    };
    let what_would_change_my_mind = match best {
        Some(b) => {
            let mut w: Vec<String> = Vec::new();
            if let Some(fm) = ctx.metadata().failure_modes.iter().find(|f| f.id == b.failure_mode) {
                w.extend(fm.signals_against.iter().map(|s| format!("seeing that {}", s.description)));
            }
            if let Some(h) = others.first()
                && !h.missing_for.is_empty()
            {
                w.push(format!(
                    "{}'s missing signs appearing ({})",
                    h.failure_mode,
                    h.missing_for.join("; ")
                ));
            }
            if persist < 2 {
                w.push("the violation clearing on the next tick (a blip)".into());
            }
            if w.is_empty() {
                w.push("a different component moving first in the next observations".into());
            }
            w.join("; ")
        }
        None => "a declared failure mode's signals appearing, or the plugin declaring one for this invariant".into(),
    };
    Answer {
        summary,
        root_cause,
        evidence,
        alternatives,
        recommended_action: ProposedAction {
            action,
            params,
            rationale,
        },
        confidence,
        what_would_change_my_mind,
    }
}

fn description_of(ctx: &Context, id: &str) -> String {
    ctx.metadata()
        .failure_modes
        .iter()
        .find(|f| f.id == id)
        .map(|f| f.description.clone())
        .unwrap_or_default()
}

fn recommend(
    ctx: &Context,
    b: &Hypothesis,
    confidence: f64,
) -> (String, BTreeMap<String, String>, String) {
    let Some(fm) = ctx
        .metadata()
        .failure_modes
        .iter()
        .find(|f| f.id == b.failure_mode)
    else {
        return (
            OBSERVE.into(),
            BTreeMap::new(),
            "internal: failure mode vanished".into(),
        );
    };
    let Some(action_id) = &fm.suggested_action else {
        return (
            OBSERVE.into(),
            BTreeMap::new(),
            format!(
                "{} declares no action the operator can take: fix {} by hand (see the mechanism) and watch the tickets clear",
                fm.id, b.component
            ),
        );
    };
    let Some(decl) = ctx.metadata().action(action_id) else {
        return (
            OBSERVE.into(),
            BTreeMap::new(),
            format!(
                "{} suggests {action_id}, which the plugin does not declare",
                fm.id
            ),
        );
    };
    let params = match resolve_params(ctx, b, &fm.suggested_params) {
        Ok(p) => p,
        Err(key) => {
            return (
                OBSERVE.into(),
                BTreeMap::new(),
                format!(
                    "{} would fit ({}), but its parameter `{{{key}}}` is not in the evidence, so it cannot be aimed; watch instead",
                    decl.id, decl.name
                ),
            );
        }
    };
    let missing: Vec<&str> = decl
        .params
        .iter()
        .filter(|p| p.required && !params.contains_key(&p.name))
        .map(|p| p.name.as_str())
        .collect();
    let command = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    if !missing.is_empty() {
        return (
            OBSERVE.into(),
            BTreeMap::new(),
            format!(
                "{} ({}) would fit with {command}, but it also requires {} which {} does not suggest: choose the value(s) and run it by hand",
                decl.id,
                decl.name,
                missing.join(", "),
                fm.id
            ),
        );
    }
    if confidence < ACT_CONFIDENCE {
        return (
            OBSERVE.into(),
            BTreeMap::new(),
            format!(
                "confidence {confidence:.2} is too low to act; if it firms up, {} ({}) with {command} is the suggested remedy",
                decl.id, decl.name
            ),
        );
    }
    let rationale = format!(
        "{} suggests {} ({}: {}) for {}{}",
        fm.id,
        decl.id,
        decl.name,
        clip(&decl.description, 120),
        b.component,
        if decl.mutates {
            "; it changes the subject, so it runs only when you allow it"
        } else {
            ""
        }
    );
    (decl.id.clone(), params, rationale)
}

fn summarize(ctx: &Context, best: Option<&Hypothesis>) -> String {
    let tickets = ordered_tickets(ctx);
    let Some(root) = tickets.first() else {
        return "no tickets".into();
    };
    let mut s = clip(&root.summary, 200);
    if tickets.len() > 1 {
        let others: Vec<String> = tickets[1..]
            .iter()
            .take(5)
            .map(|t| format!("{} on {}", t.invariant, clip(&t.subject_label(), 60)))
            .collect();
        s.push_str(&format!(
            "; with {} related ticket(s): {}",
            tickets.len() - 1,
            others.join(", ")
        ));
    }
    match best {
        Some(b) => s.push_str(&format!(
            ". Most likely {} ({}) at {}.",
            b.failure_mode, b.name, b.component
        )),
        None => s.push_str(". No declared failure mode explains it."),
    }
    s
}

fn mechanism(ctx: &Context, b: &Hypothesis) -> String {
    let mut m = clip(&description_of(ctx, &b.failure_mode), 300);
    if let Some(c) = first_change(ctx, &b.component) {
        m.push_str(&format!(
            " Breadth: {} changed ({}).",
            c.breadth,
            clip(&c.reference, 100)
        ));
        if !c.moved_with.is_empty() {
            m.push_str(&format!(
                " It moved together with {}.",
                c.moved_with
                    .iter()
                    .take(3)
                    .map(|r| clip(r, 80))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for n in &b.notes {
        m.push_str(&format!(" Onset: {n}."));
    }
    m
}

/// Diagnoses with the offline reasoner. Runs in well under a millisecond per incident.
pub fn diagnose(ctx: &Context) -> Result<Diagnosis, Rejection> {
    let start = Instant::now();
    let a = answer(ctx);
    let run = RunInfo {
        backend: "offline".into(),
        model: MODEL.into(),
        tokens_in: 0,
        tokens_out: 0,
        duration_ms: start.elapsed().as_millis() as u64,
    };
    validate(&a, ctx, run)
}
