//! Incidents: one cause, many symptoms. Tickets that open close together and share a
//! component or evidence form one incident; the root is the earliest onset, ties broken
//! by generic reasoning (what the others name, what is down, severity).

use crate::context::{ObservationPoint, TicketFacts};
use operator_model::ComponentState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Root,
    Symptom,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub ticket: i64,
    pub role: Role,
    /// Why this ticket is the root, or why it is a symptom of it.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub root: i64,
    /// The root first, then the symptoms in onset order.
    pub members: Vec<Member>,
}

impl Incident {
    pub fn tickets(&self) -> impl Iterator<Item = i64> + '_ {
        self.members.iter().map(|m| m.ticket)
    }
}

/// How close two openings must be to belong together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub ticks: i64,
    pub ms: i64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            ticks: 3,
            ms: 30_000,
        }
    }
}

/// Groups with the default window.
pub fn group(tickets: &[TicketFacts], history: &[ObservationPoint]) -> Vec<Incident> {
    group_within(tickets, history, Window::default())
}

/// Values too common to tie two tickets together.
fn trivial(v: &str) -> bool {
    let v = v.trim();
    v.len() < 3
        || v.parse::<f64>().is_ok()
        || matches!(
            v.to_ascii_lowercase().as_str(),
            "true" | "false" | "unknown" | "none" | "null" | "ok" | "yes" | "no" | "?"
        )
}

/// Whether `text` names `id` as a whole token (ids are compared inside lists like
/// `a=x,b=y`, so a bare substring test would let `node-1` match `node-10`).
fn names(text: &str, id: &str) -> bool {
    if id.len() < 3 {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '-' || c == '_' || c == '.' || c == ':';
    text.match_indices(id).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + id.len()..].chars().next();
        // `:` may join host and port inside an id, but must not glue another token on.
        before.is_none_or(|c| !is_word(c) || c == ':' && !id.contains(':'))
            && after.is_none_or(|c| !is_word(c) || c == ':' && !id.contains(':'))
    })
}

/// Why `a` and `b` belong together, if they do.
fn link(a: &TicketFacts, b: &TicketFacts) -> Option<String> {
    if !a.component.is_empty() && a.component == b.component {
        return Some(format!("same component {}", a.component));
    }
    for (x, y) in [(a, b), (b, a)] {
        if x.component.is_empty() {
            continue;
        }
        if let Some((k, _)) = y.all_evidence().find(|(_, v)| names(v, &x.component)) {
            return Some(format!(
                "ticket {}'s evidence `{k}` names {}",
                y.id, x.component
            ));
        }
    }
    for (k, v) in a.all_evidence() {
        if trivial(v) {
            continue;
        }
        if b.all_evidence().any(|(k2, v2)| k2 == k && v2 == v) {
            return Some(format!("shared evidence {k}={v}"));
        }
    }
    None
}

fn close(a: &TicketFacts, b: &TicketFacts, w: Window) -> bool {
    (a.opened_tick - b.opened_tick).abs() <= w.ticks
        || (a.first_seen_ms - b.first_seen_ms).abs() <= w.ms
}

/// Groups tickets into incidents. Every ticket is in exactly one incident; a ticket
/// related to nothing is an incident of its own.
pub fn group_within(
    tickets: &[TicketFacts],
    history: &[ObservationPoint],
    w: Window,
) -> Vec<Incident> {
    let n = tickets.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], i: usize) -> usize {
        let mut r = i;
        while p[r] != r {
            r = p[r];
        }
        let mut j = i;
        while p[j] != r {
            let next = p[j];
            p[j] = r;
            j = next;
        }
        r
    }
    for i in 0..n {
        for j in i + 1..n {
            if close(&tickets[i], &tickets[j], w) && link(&tickets[i], &tickets[j]).is_some() {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a] = b;
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    let latest = history.last().map(|p| &p.observation);
    let mut out: Vec<Incident> = groups
        .into_values()
        .map(|idx| {
            let members: Vec<&TicketFacts> = idx.iter().map(|&i| &tickets[i]).collect();
            build_incident(&members, latest)
        })
        .collect();
    out.sort_by_key(|i| i.root);
    out
}

/// Tie-break score of a root candidate, with the reasons that earned it.
fn root_score(
    t: &TicketFacts,
    members: &[&TicketFacts],
    latest: Option<&operator_model::Observation>,
) -> (i32, Vec<String>) {
    let mut score = 0;
    let mut why = Vec::new();
    if !t.component.is_empty() {
        // Symptoms often name their cause (the node that allowed the most, the store they
        // wait on); causes sometimes list their symptoms too, so this weighs little.
        let naming = members
            .iter()
            .filter(|o| o.id != t.id && o.all_evidence().any(|(_, v)| names(v, &t.component)))
            .count();
        if naming > 0 {
            score += naming.min(2) as i32;
            why.push(format!(
                "{naming} other ticket(s) name {} in their evidence",
                t.component
            ));
        }
    }
    let kind = latest
        .and_then(|o| o.components.iter().find(|c| c.id == t.component))
        .map(|c| c.kind.as_str());
    if let Some(c) = latest.and_then(|o| o.components.iter().find(|c| c.id == t.component))
        && !t.component.is_empty()
        && c.state == ComponentState::Down
    {
        score += 4;
        why.push(format!("{} ({}) is down", c.id, c.kind));
    }
    // `reachable=false` is about the ticket's own component; `<x>_reachable=false` is about
    // x: credit whichever member x is.
    let unreachable_here = members.iter().any(|o| {
        o.all_evidence().any(|(k, v)| {
            if v != "false" {
                return false;
            }
            let Some(target) = k.strip_suffix("reachable") else {
                return false;
            };
            let target = target.trim_end_matches(['_', '-', '.']);
            if target.is_empty() {
                o.id == t.id
            } else {
                !t.component.is_empty() && (target == t.component || Some(target) == kind)
            }
        })
    });
    if unreachable_here {
        score += 2;
        why.push(format!(
            "the evidence says {} is unreachable",
            t.subject_label()
        ));
    }
    score += match t.severity {
        operator_model::Severity::Critical => 2,
        operator_model::Severity::Warning => 1,
        operator_model::Severity::Info => 0,
    };
    (score, why)
}

fn build_incident(
    members: &[&TicketFacts],
    latest: Option<&operator_model::Observation>,
) -> Incident {
    let earliest = members.iter().map(|t| t.opened_tick).min().unwrap_or(0);
    let mut candidates: Vec<(&TicketFacts, i32, Vec<String>)> = members
        .iter()
        .filter(|t| t.opened_tick == earliest)
        .map(|t| {
            let (s, why) = root_score(t, members, latest);
            (*t, s, why)
        })
        .collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
    let (root, _, why) = &candidates[0];
    let tied = candidates.len() > 1;
    let mut reason = format!(
        "earliest onset in the incident (tick {}, {} on {})",
        root.opened_tick,
        root.invariant,
        root.subject_label()
    );
    if tied {
        reason.push_str(&format!(
            "; {} ticket(s) opened the same tick, and this one leads because {}",
            candidates.len(),
            if why.is_empty() {
                format!("it is the most severe ({})", root.severity)
            } else {
                why.join(", ")
            }
        ));
    }
    if members.len() == 1 {
        reason = "the only ticket of its incident".into();
    }
    let mut out = vec![Member {
        ticket: root.id,
        role: Role::Root,
        reason,
    }];
    let mut rest: Vec<&&TicketFacts> = members.iter().filter(|t| t.id != root.id).collect();
    rest.sort_by_key(|t| (t.opened_tick, t.id));
    for t in rest {
        // Say what ties it to the root, or else to whichever member brought it in.
        let tie = link(root, t).or_else(|| {
            members
                .iter()
                .filter(|o| o.id != t.id)
                .find_map(|o| link(o, t).map(|l| format!("{l} (via ticket {})", o.id)))
        });
        let lag = t.opened_tick - root.opened_tick;
        out.push(Member {
            ticket: t.id,
            role: Role::Symptom,
            reason: format!(
                "{} on {} opened {} after the root ticket {} ({}); {}",
                t.invariant,
                t.subject_label(),
                if lag == 0 {
                    "the same tick".to_string()
                } else {
                    format!("{lag} tick(s)")
                },
                root.id,
                root.invariant,
                tie.unwrap_or_else(|| "opened close to it".into())
            ),
        });
    }
    Incident {
        root: root.id,
        members: out,
    }
}

/// A digest of what an incident's diagnosis depends on: which invariants fire on which
/// components, and the state of those components in the latest observation. The host
/// diagnoses again when it changes (a new invariant joins, a component changes state),
/// not on every tick. Counts, timestamps and evidence values are left out on purpose:
/// they move every tick.
pub fn fingerprint(
    tickets: &[TicketFacts],
    latest: Option<&operator_model::Observation>,
) -> String {
    let mut parts: Vec<String> = tickets
        .iter()
        .filter(|t| !t.resolved)
        .map(|t| {
            let state = latest
                .and_then(|o| o.components.iter().find(|c| c.id == t.component))
                .map_or("-", |c| c.state.as_str());
            format!("{}@{}={state}", t.invariant, t.subject_label())
        })
        .collect();
    parts.sort();
    parts.dedup();
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_as_whole_tokens() {
        assert!(names(
            "127.0.0.1:7001=fail-open,127.0.0.1:7002=x",
            "127.0.0.1:7002"
        ));
        assert!(names("node-1", "node-1"));
        assert!(!names("node-10", "node-1"));
        assert!(!names("xnode-1", "node-1"));
        assert!(names("a=node-1,b", "node-1"));
    }
}
