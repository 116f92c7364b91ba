//! Every sandbox limit in one place: the call deadline, the instance's memory and counts,
//! and each host import's size, count and rate caps. The README's sandbox section lists
//! these defaults; a test keeps the two in step.

use std::time::Duration;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Sandbox limits of one plugin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Wall-clock budget of one call into the plugin (instantiation, `metadata`, `observe`,
    /// `check-invariants`, `execute`), guest code and host imports together.
    pub deadline: Duration,
    /// The whole instance: the sum of all its linear memories and tables, in bytes.
    pub memory_bytes: usize,
    /// Core instances, memories and tables one component may create.
    pub max_instances: usize,
    pub max_memories: usize,
    pub max_tables: usize,
    pub http: HttpLimits,
    pub redis: RedisLimits,
    pub logs: LogsLimits,
    pub log: PluginLogLimits,
    pub output: OutputLimits,
}

/// The `http` import.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLimits {
    /// Per-request timeout when the plugin gives none (always capped by the deadline).
    pub default_timeout: Duration,
    /// Largest response body handed to the plugin.
    pub max_body_bytes: usize,
    pub max_redirects: usize,
    /// Requests one call may make.
    pub max_requests_per_call: usize,
    /// Requests of one `send-all` in flight at once; the rest wait their turn.
    pub max_in_flight: usize,
    /// Request body a plugin may send (mutating actions only).
    pub max_request_body_bytes: usize,
}

/// The `redis` import.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RedisLimits {
    /// Per-command timeout, covering the whole reply (always capped by the deadline).
    pub command_timeout: Duration,
    /// Largest reply, counted while it is read, before it is kept.
    pub max_reply_bytes: usize,
    /// Most elements in one reply (nested arrays included).
    pub max_reply_elements: usize,
    /// Open connections per plugin, across all origins.
    pub max_connections: usize,
    /// Largest `COUNT` a SCAN-family command may ask for.
    pub max_scan_count: u64,
    /// Commands one call may send.
    pub max_commands_per_call: usize,
}

/// The `logs` import.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogsLimits {
    pub max_lines: usize,
    /// A longer line is cut, with a marker.
    pub max_line_bytes: usize,
    /// Bytes read from a source per tail.
    pub max_bytes: usize,
    /// Tails one call may ask for.
    pub max_tails_per_call: usize,
}

/// The `log` import (the plugin's own logging).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PluginLogLimits {
    pub max_message_bytes: usize,
    /// Lines one call may log; the rest are counted and summarised once.
    pub max_lines_per_call: usize,
}

/// What a plugin may return from one call. The excess is dropped, counted, and reported
/// as a problem of the observation, never silently.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputLimits {
    pub max_components: usize,
    pub max_metric_samples: usize,
    pub max_events: usize,
    pub max_problems: usize,
    pub max_attributes: usize,
    pub max_violations: usize,
    pub max_evidence: usize,
    /// Ids, names, kinds, keys, label names and values.
    pub max_short_string: usize,
    /// Summaries, messages, descriptions, evidence values.
    pub max_long_string: usize,
    /// Most bytes an observation's metric samples may take written out (names, keys and
    /// values at every use). Since contract 0.5 a plugin sends each string once and the
    /// samples as indexes, so a few long strings can stand for far more text than the
    /// plugin's memory held; this keeps what the store writes and the diagnosis reads to
    /// what a list of strings in that memory could have been.
    pub max_metric_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(10),
            memory_bytes: 128 * MIB,
            // A Rust wasm32-wasip2 component has a handful of core instances (the program,
            // the WASI adapter and shims) and one or two memories.
            max_instances: 16,
            max_memories: 4,
            max_tables: 16,
            http: HttpLimits {
                default_timeout: Duration::from_secs(5),
                max_body_bytes: 16 * MIB,
                max_redirects: 5,
                max_requests_per_call: 512,
                max_in_flight: 16,
                max_request_body_bytes: MIB,
            },
            redis: RedisLimits {
                command_timeout: Duration::from_secs(3),
                max_reply_bytes: 16 * MIB,
                max_reply_elements: 100_000,
                max_connections: 4,
                max_scan_count: 1000,
                max_commands_per_call: 10_000,
            },
            logs: LogsLimits {
                max_lines: 1000,
                max_line_bytes: 16 * KIB,
                max_bytes: 4 * MIB,
                max_tails_per_call: 64,
            },
            log: PluginLogLimits {
                max_message_bytes: 4 * KIB,
                max_lines_per_call: 200,
            },
            output: OutputLimits {
                max_components: 1000,
                max_metric_samples: 50_000,
                max_events: 1000,
                max_problems: 200,
                max_attributes: 64,
                max_violations: 500,
                max_evidence: 64,
                max_short_string: 256,
                max_long_string: 4 * KIB,
                max_metric_text_bytes: 64 * MIB,
            },
        }
    }
}

impl Limits {
    /// Defaults with the user's deadline and memory cap.
    pub fn with(deadline: Duration, memory_bytes: usize) -> Limits {
        Limits {
            deadline,
            memory_bytes,
            ..Limits::default()
        }
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary, marking the cut.
pub fn truncate(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    const MARK: &str = "…[cut]";
    let mut end = max.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries_and_marks_the_cut() {
        let mut s = "é".repeat(100);
        assert!(truncate(&mut s, 21));
        assert!(s.len() <= 21 && s.ends_with("[cut]"), "{s}");
        let mut short = "abc".to_string();
        assert!(!truncate(&mut short, 10));
        assert_eq!(short, "abc");
    }

    /// The README's sandbox table states these numbers; keep them in step.
    #[test]
    fn readme_states_the_default_limits() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let l = Limits::default();
        for needle in [
            format!("| call deadline | {}s", l.deadline.as_secs()),
            format!("| instance memory | {} MiB", l.memory_bytes / MIB),
            format!("| HTTP body | {} MiB", l.http.max_body_bytes / MIB),
            format!(
                "`send-all` keeps at most {} in flight",
                l.http.max_in_flight
            ),
            format!("| Redis reply | {} MiB", l.redis.max_reply_bytes / MIB),
            format!("| Redis connections | {}", l.redis.max_connections),
            format!("| SCAN COUNT | {}", l.redis.max_scan_count),
            format!("| log line | {} KiB", l.logs.max_line_bytes / KIB),
            format!("| metric samples | {}", l.output.max_metric_samples),
            format!("| violations per tick | {}", l.output.max_violations),
            format!("| plugin log lines per call | {}", l.log.max_lines_per_call),
        ] {
            assert!(readme.contains(&needle), "README lacks `{needle}`");
        }
    }
}
