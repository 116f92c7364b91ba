//! Component logs through the host's `logs` import. The user decides which components have
//! a log and where it lives (`--set log.<component>=file:/path` or `docker:<container>`);
//! a plugin only asks for a component's tail.

use crate::bindings::operator::subject::logs as wit;
use crate::{Event, Kv, Severity};

/// Whether the user configured a log source for `component`.
pub fn configured(component: &str) -> bool {
    crate::config::get(&format!("log.{component}")).is_some()
}

/// The last `lines` lines (the host caps it at 1000) of `component`'s log.
pub fn tail(component: &str, lines: u32) -> Result<Vec<String>, String> {
    wit::tail(component, lines)
}

/// The level of a log line in the usual formats (`WARN`, `level=error`, a Rust panic), if any.
pub fn level_of(line: &str) -> Option<Severity> {
    const ERROR: &[&str] = &["ERROR", "level=error", "FATAL", "PANIC", "panicked at"];
    const WARN: &[&str] = &["WARN", "level=warn", "level=warning"];
    if ERROR.iter().any(|m| line.contains(m)) {
        Some(Severity::Critical)
    } else if WARN.iter().any(|m| line.contains(m)) {
        Some(Severity::Warning)
    } else {
        None
    }
}

/// Warning and error lines of `component`'s recent log as events, newest last, at most
/// `max` of them. Lines without a level are skipped: they rarely explain a fault.
pub fn events(component: &str, lines: u32, max: usize, now_ms: u64) -> Result<Vec<Event>, String> {
    let tail = tail(component, lines)?;
    let mut out: Vec<Event> = tail
        .iter()
        .filter_map(|line| {
            let severity = level_of(line)?;
            Some(Event {
                timestamp_ms: now_ms,
                component: component.to_string(),
                severity,
                message: line.trim().to_string(),
                attributes: vec![Kv {
                    key: "source".into(),
                    value: "log".into(),
                }],
            })
        })
        .collect();
    let skip = out.len().saturating_sub(max);
    out.drain(..skip);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_in_common_formats() {
        assert!(matches!(
            level_of("2026-11-25T08:29:26Z  WARN ratelimiter::node: redis error"),
            Some(Severity::Warning)
        ));
        assert!(matches!(
            level_of("ts=1 level=error msg=\"boom\""),
            Some(Severity::Critical)
        ));
        assert!(matches!(
            level_of("thread 'main' panicked at src/x.rs:1:1"),
            Some(Severity::Critical)
        ));
        assert!(level_of("INFO listening on 127.0.0.1:7001").is_none());
    }
}
