//! Output caps: what a plugin returns is cut to [`OutputLimits`] before the host keeps it,
//! and every cut is reported (as a problem of the observation, or a warning for metadata),
//! never silently.

use super::limits::{OutputLimits, truncate};
use crate::model::{self, Observation, Problem, Violation};

/// Source name of the problems the host adds about a plugin's output.
pub const SOURCE: &str = "operator: plugin output";

fn cap_labels(labels: &mut model::Labels, l: &OutputLimits, cut: &mut usize) {
    if labels.len() > l.max_attributes {
        *cut += labels.len() - l.max_attributes;
        labels.truncate(l.max_attributes);
    }
    let oversized = labels
        .iter()
        .any(|(k, v)| k.len() > l.max_short_string || v.len() > l.max_long_string);
    if oversized {
        let old = std::mem::take(labels);
        for (mut k, mut v) in old {
            *cut += truncate(&mut k, l.max_short_string) as usize;
            *cut += truncate(&mut v, l.max_long_string) as usize;
            labels.insert(k, v);
        }
    }
}

fn cap_list<T>(list: &mut Vec<T>, max: usize, what: &str, notes: &mut Vec<String>) {
    if list.len() > max {
        notes.push(format!(
            "{} {what} beyond the cap of {max}",
            list.len() - max
        ));
        list.truncate(max);
    }
}

fn short(s: &mut String, l: &OutputLimits, cut: &mut usize) {
    *cut += truncate(s, l.max_short_string) as usize;
}

fn long(s: &mut String, l: &OutputLimits, cut: &mut usize) {
    *cut += truncate(s, l.max_long_string) as usize;
}

/// Cuts an observation to the caps; adds one problem saying what was cut.
/// Returns whether anything was cut (the observation then differs from what the plugin
/// returned, by the cut and by the note saying so).
pub fn observation(o: &mut Observation, l: &OutputLimits) -> bool {
    let mut notes = Vec::new();
    cap_list(
        &mut o.components,
        l.max_components,
        "components",
        &mut notes,
    );
    let metric_cuts = o.metrics.cap(
        &model::MetricCaps {
            max_samples: l.max_metric_samples,
            max_labels: l.max_attributes,
            max_short: l.max_short_string,
            max_long: l.max_long_string,
            max_text_bytes: l.max_metric_text_bytes,
        },
        truncate,
    );
    if metric_cuts.samples > 0 {
        notes.push(format!(
            "{} metric samples beyond the cap of {}",
            metric_cuts.samples, l.max_metric_samples
        ));
    }
    if metric_cuts.over_budget > 0 {
        notes.push(format!(
            "{} metric samples beyond the text budget of {} bytes (names and labels written out)",
            metric_cuts.over_budget, l.max_metric_text_bytes
        ));
    }
    cap_list(&mut o.events, l.max_events, "events", &mut notes);
    // One slot is kept for the host's own note.
    cap_list(
        &mut o.problems,
        l.max_problems.saturating_sub(1),
        "problems",
        &mut notes,
    );
    let mut cut = 0usize;
    for c in &mut o.components {
        short(&mut c.id, l, &mut cut);
        short(&mut c.kind, l, &mut cut);
        long(&mut c.address, l, &mut cut);
        cap_labels(&mut c.attributes, l, &mut cut);
    }
    cut += metric_cuts.strings;
    for e in &mut o.events {
        short(&mut e.component, l, &mut cut);
        long(&mut e.message, l, &mut cut);
        cap_labels(&mut e.attributes, l, &mut cut);
    }
    for p in &mut o.problems {
        long(&mut p.source, l, &mut cut);
        long(&mut p.message, l, &mut cut);
    }
    if cut > 0 {
        notes.push(format!(
            "{cut} strings or attributes over the length caps were cut"
        ));
    }
    if notes.is_empty() {
        return false;
    }
    o.problems.push(Problem {
        source: SOURCE.into(),
        message: format!("output over the host's caps: dropped {}", notes.join("; ")),
    });
    true
}

pub fn observe_error(e: &mut model::ObserveError, l: &OutputLimits) {
    match e {
        model::ObserveError::Unreachable(m)
        | model::ObserveError::BadData(m)
        | model::ObserveError::Config(m) => {
            truncate(m, l.max_long_string);
        }
    }
}

/// Cuts violations to the caps. The excess is returned as a problem to report.
pub fn violations(v: &mut Vec<Violation>, l: &OutputLimits) -> Option<Problem> {
    let mut notes = Vec::new();
    cap_list(v, l.max_violations, "violations", &mut notes);
    let mut cut = 0usize;
    for x in v.iter_mut() {
        short(&mut x.invariant, l, &mut cut);
        short(&mut x.component, l, &mut cut);
        long(&mut x.summary, l, &mut cut);
        long(&mut x.dedup_key, l, &mut cut);
        if x.evidence.len() > l.max_evidence {
            cut += x.evidence.len() - l.max_evidence;
            x.evidence.truncate(l.max_evidence);
        }
        for (k, val) in &mut x.evidence {
            short(k, l, &mut cut);
            long(val, l, &mut cut);
        }
    }
    if cut > 0 {
        notes.push(format!(
            "{cut} violation strings or evidence items over the caps were cut"
        ));
    }
    (!notes.is_empty()).then(|| Problem {
        source: SOURCE.into(),
        message: format!(
            "check-invariants over the host's caps: dropped {}",
            notes.join("; ")
        ),
    })
}

/// Cuts metadata to the caps; returns what was cut, for a warning at load.
pub fn metadata(m: &mut model::SubjectMetadata, l: &OutputLimits) -> Vec<String> {
    // Metadata is read once per load, and the diagnosis puts it in prompts: the same
    // string caps, and list caps that no honest subject comes near.
    const MAX_ITEMS: usize = 500;
    const MAX_SIGNALS: usize = 64;
    let mut notes = Vec::new();
    cap_list(&mut m.settings, MAX_ITEMS, "settings", &mut notes);
    cap_list(&mut m.invariants, MAX_ITEMS, "invariants", &mut notes);
    cap_list(&mut m.actions, MAX_ITEMS, "actions", &mut notes);
    cap_list(&mut m.failure_modes, MAX_ITEMS, "failure modes", &mut notes);
    let mut cut = 0usize;
    short(&mut m.name, l, &mut cut);
    short(&mut m.version, l, &mut cut);
    long(&mut m.description, l, &mut cut);
    for s in &mut m.settings {
        short(&mut s.name, l, &mut cut);
        long(&mut s.description, l, &mut cut);
    }
    for i in &mut m.invariants {
        short(&mut i.id, l, &mut cut);
        short(&mut i.name, l, &mut cut);
        long(&mut i.description, l, &mut cut);
    }
    for a in &mut m.actions {
        short(&mut a.id, l, &mut cut);
        short(&mut a.name, l, &mut cut);
        long(&mut a.description, l, &mut cut);
        cap_list(&mut a.params, MAX_SIGNALS, "action parameters", &mut notes);
    }
    for f in &mut m.failure_modes {
        short(&mut f.id, l, &mut cut);
        short(&mut f.name, l, &mut cut);
        long(&mut f.description, l, &mut cut);
        cap_list(&mut f.signals_for, MAX_SIGNALS, "signals", &mut notes);
        cap_list(&mut f.signals_against, MAX_SIGNALS, "signals", &mut notes);
        for s in f.signals_for.iter_mut().chain(f.signals_against.iter_mut()) {
            long(&mut s.description, l, &mut cut);
        }
    }
    if cut > 0 {
        notes.push(format!(
            "{cut} metadata strings over the length caps were cut"
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::limits::Limits;

    #[test]
    fn a_flood_is_cut_and_reported() {
        let l = Limits::default().output;
        let mut o = Observation {
            timestamp_ms: 1,
            components: vec![],
            metrics: (0..l.max_metric_samples + 10)
                .map(|i| model::MetricSample {
                    name: format!("m{i}"),
                    labels: Default::default(),
                    value: 1.0,
                    timestamp_ms: 1,
                })
                .collect(),
            events: vec![],
            problems: vec![Problem {
                source: "x".into(),
                message: "y".repeat(10 * 1024 * 1024),
            }],
        };
        observation(&mut o, &l);
        assert_eq!(o.metrics.len(), l.max_metric_samples);
        assert!(o.problems[0].message.len() <= l.max_long_string);
        let note = &o.problems.last().unwrap().message;
        assert!(note.contains("10 metric samples"), "{note}");
        assert!(note.contains("cut"), "{note}");

        let mut v: Vec<Violation> = (0..l.max_violations + 5)
            .map(|i| Violation {
                invariant: "X".into(),
                severity: model::Severity::Warning,
                component: String::new(),
                summary: String::new(),
                evidence: vec![],
                dedup_key: format!("k{i}"),
            })
            .collect();
        let p = violations(&mut v, &l).expect("reported");
        assert_eq!(v.len(), l.max_violations);
        assert!(p.message.contains("5 violations"), "{}", p.message);
    }

    #[test]
    fn too_many_labels_keep_the_first_in_key_order() {
        let l = Limits::default().output;
        let labels: model::Labels = (0..l.max_attributes + 3)
            .rev()
            .map(|i| (format!("k{i:04}"), "v".repeat(l.max_long_string + 1)))
            .collect();
        let mut o = Observation {
            timestamp_ms: 1,
            components: vec![],
            metrics: vec![model::MetricSample {
                name: "m".into(),
                labels,
                value: 1.0,
                timestamp_ms: 1,
            }]
            .into(),
            events: vec![],
            problems: vec![],
        };
        assert!(observation(&mut o, &l));
        let kept = o.metrics.get(0).unwrap().labels();
        assert_eq!(kept.len(), l.max_attributes);
        let want: Vec<String> = (0..l.max_attributes).map(|i| format!("k{i:04}")).collect();
        assert_eq!(kept.iter().map(|(k, _)| k).collect::<Vec<_>>(), want);
        assert!(kept.values().all(|v| v.len() <= l.max_long_string));
        let note = &o.problems.last().unwrap().message;
        assert!(note.contains("cut"), "{note}");
    }

    #[test]
    fn honest_output_is_untouched() {
        let l = Limits::default().output;
        let mut o = Observation {
            timestamp_ms: 1,
            components: vec![],
            metrics: Default::default(),
            events: vec![],
            problems: vec![],
        };
        observation(&mut o, &l);
        assert!(o.problems.is_empty());
        assert!(violations(&mut vec![], &l).is_none());
    }
}
