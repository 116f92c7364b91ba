//! Contract 0.1.0 (`wit/since_v0.1.0`), frozen. Its imports forward to the newest
//! implementation by converting their (structurally identical) records; its metadata has
//! no declared settings.

use super::latest;
use crate::model;
use crate::runtime::state::HostState;

wasmtime::component::bindgen!({
    world: "subject",
    path: "../wit/since_v0.1.0",
    imports: { default: async },
    exports: { default: async },
});

pub use self::operator::subject::types as wit;
use self::operator::subject::{config, http, log, logs, redis};

super::convert::common_conversions!();
super::convert::sample_list_conversions!();
super::forward::forward_imports!();

impl From<wit::SubjectMetadata> for model::SubjectMetadata {
    fn from(m: wit::SubjectMetadata) -> Self {
        model::SubjectMetadata {
            name: m.name,
            version: m.version,
            description: m.description,
            settings: vec![],
            invariants: invariants(m.invariants),
            actions: actions(m.actions),
            failure_modes: failure_modes(m.failure_modes),
        }
    }
}
