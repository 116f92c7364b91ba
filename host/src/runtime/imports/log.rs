//! `operator:subject/log`: plugin logging into tracing, under the `plugin` target and
//! tagged with the subject's name, so a plugin line is never mistaken for the host's.
//!
//! Each message is cut to a length cap and its control characters are escaped (a CR or LF
//! cannot start a forged host line); each call may log a capped number of lines, and the
//! overflow is counted and reported once when the call ends.

use crate::runtime::bindings::latest::operator::subject::log::{Host, Level};
use crate::runtime::limits::truncate;
use crate::runtime::state::HostState;

/// Escapes control characters (CR, LF, ESC, ...) so one message is one line.
pub fn escape(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) {
        let limits = self.ctx.log;
        self.calls.log_lines += 1;
        if self.calls.log_lines > limits.max_lines_per_call {
            self.calls.log_lines_dropped += 1;
            return;
        }
        let mut message = escape(&message);
        truncate(&mut message, limits.max_message_bytes);
        let plugin = self.ctx.name.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn newlines_cannot_forge_host_lines() {
        let forged = "ok\n2026-01-01T00:00:00Z  INFO operator: tick ok\r\x1b[2J";
        let e = super::escape(forged);
        assert!(
            !e.contains('\n') && !e.contains('\r') && !e.contains('\x1b'),
            "{e}"
        );
        assert!(e.contains("\\n2026"), "{e}");
    }
}
