//! Shared by the host's integration tests.

use operator::runtime::{Limits, Plugin, PluginBuilder, PluginError, PluginSource};

/// Builds a plugin from a component file with these limits and settings, as the CLI does.
pub async fn load(
    path: &str,
    limits: Limits,
    settings: &[(&str, String)],
) -> Result<Plugin, PluginError> {
    let mut builder = PluginBuilder::new(PluginSource::file(path)).limits(limits);
    for (k, v) in settings {
        builder = builder.setting(*k, v.clone());
    }
    builder.build().await
}
