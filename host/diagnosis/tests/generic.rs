//! The host's prompt and the offline reasoner name no subject; the context trims the
//! least relevant and oldest first and never the tickets.

mod common;

use operator_diagnosis::backend::tools;
use operator_diagnosis::context::{Context, DEFAULT_BUDGET_TOKENS};
use operator_diagnosis::prompt;

const SUBJECT_NAMES: &[&str] = &[
    "ratelimiter",
    "rate limiter",
    "rate-limiter",
    "tikv",
    "redis",
    "pd",
];

/// Whole-word, case-insensitive (so `pd` does not match `update`).
fn names_a_subject(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    SUBJECT_NAMES.iter().copied().find(|name| {
        lower.match_indices(name).any(|(i, _)| {
            let before = lower[..i].chars().next_back();
            let after = lower[i + name.len()..].chars().next();
            before.is_none_or(|c| !c.is_ascii_alphanumeric())
                && after.is_none_or(|c| !c.is_ascii_alphanumeric())
        })
    })
}

#[test]
fn the_detector_detects() {
    assert_eq!(names_a_subject("talk to Redis"), Some("redis"));
    assert_eq!(names_a_subject("the PD leader"), Some("pd"));
    assert_eq!(names_a_subject("update the pdf"), None);
}

#[test]
fn prompt_and_offline_reasoner_name_no_subject() {
    let mut texts: Vec<(&str, String)> = vec![
        ("system prompt", prompt::system_prompt()),
        ("task", prompt::task("")),
        ("nudge", prompt::NUDGE.to_string()),
    ];
    for t in tools::definitions() {
        texts.push(("tool", format!("{} {} {}", t.name, t.description, t.schema)));
    }
    let sources = [
        ("src/offline.rs", include_str!("../src/offline.rs")),
        ("src/prompt.rs", include_str!("../src/prompt.rs")),
        (
            "src/backend/tools.rs",
            include_str!("../src/backend/tools.rs"),
        ),
        ("src/context.rs", include_str!("../src/context.rs")),
        ("src/incident.rs", include_str!("../src/incident.rs")),
        ("src/record.rs", include_str!("../src/record.rs")),
        (
            "src/backend/claude.rs",
            include_str!("../src/backend/claude.rs"),
        ),
        (
            "src/backend/openai.rs",
            include_str!("../src/backend/openai.rs"),
        ),
    ];
    for (name, text) in sources {
        texts.push((name, text.to_string()));
    }
    for (what, text) in texts {
        assert_eq!(names_a_subject(&text), None, "{what} names a subject");
    }
}

#[test]
fn trimming_keeps_tickets_and_drops_least_relevant_then_oldest_first() {
    for name in ["kill_node", "redis_down", "partition"] {
        let input = common::load(name).input();
        let n = input.tickets.len();
        let full = Context::build(input.clone(), 1_000_000);
        assert_eq!(full.trimmed(), (0, 0));
        // A budget three quarters of the untrimmed size forces trimming.
        let budget = full.estimated_tokens() * 3 / 4;
        let trimmed = Context::build(input.clone(), budget);
        assert!(trimmed.estimated_tokens() <= budget);
        assert!(
            Context::build(input.clone(), DEFAULT_BUDGET_TOKENS).estimated_tokens()
                <= DEFAULT_BUDGET_TOKENS
        );
        let kept: Vec<_> = trimmed
            .changes()
            .iter()
            .map(|c| (c.reference.clone(), c.relevance, c.onset_tick))
            .collect();
        let dropped: Vec<_> = full
            .changes()
            .iter()
            .filter(|c| !kept.iter().any(|k| k.0 == c.reference))
            .collect();
        assert_eq!(dropped.len(), trimmed.trimmed().0);
        assert!(!dropped.is_empty());
        let min_kept = kept.iter().map(|k| k.1).fold(f32::MAX, f32::min);
        for d in &dropped {
            assert!(
                d.relevance <= min_kept,
                "{name}: dropped {} ({}) over a kept one ({min_kept})",
                d.reference,
                d.relevance
            );
            if d.relevance == min_kept {
                let newest_kept_at_par = kept
                    .iter()
                    .filter(|k| k.1 == min_kept)
                    .map(|k| k.2)
                    .min()
                    .unwrap();
                assert!(
                    d.onset_tick <= newest_kept_at_par,
                    "{name}: dropped a newer one first"
                );
            }
        }
        // A budget far too small still keeps every ticket.
        let tiny = Context::build(input, 100);
        assert_eq!(
            tiny.data_json()["incident"]["tickets"]
                .as_array()
                .unwrap()
                .len(),
            n
        );
        assert!(tiny.changes().is_empty());
    }
}
