//! `operator:subject/log`: plugin logging into tracing, tagged with the plugin's name.

use crate::runtime::bindings::operator::subject::log::{Host, Level};
use crate::runtime::state::HostState;

/// Longest message kept, so a chatty or hostile plugin cannot flood the host's logs.
const MAX_MESSAGE: usize = 4096;

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let message: String = message.chars().take(MAX_MESSAGE).collect();
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
