//! `operator:subject/config`: the settings the user gave the plugin.

use crate::runtime::bindings::latest::operator::subject::config::Host;
use crate::runtime::bindings::latest::wit::Kv;
use crate::runtime::state::HostState;

impl Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.ctx.settings.get(&key).cloned()
    }

    async fn all(&mut self) -> Vec<Kv> {
        self.ctx
            .settings
            .iter()
            .map(|(k, v)| Kv {
                key: k.clone(),
                value: v.clone(),
            })
            .collect()
    }
}
