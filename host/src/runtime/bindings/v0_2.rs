//! Contract 0.2.0 (`wit/since_v0.2.0`), frozen. Its imports forward to the newest
//! implementation by converting their (structurally identical) records; it has no
//! `check-retained`, so the host always sends it the whole history.

use super::latest;
use crate::model;
use crate::runtime::state::HostState;

wasmtime::component::bindgen!({
    world: "subject",
    path: "../wit/since_v0.2.0",
    imports: { default: async },
    exports: { default: async },
});

pub use self::operator::subject::types as wit;
use self::operator::subject::{config, http, log, logs, redis};

super::convert::common_conversions!();
super::forward::forward_imports!();

impl From<wit::SettingKind> for model::SettingKind {
    fn from(k: wit::SettingKind) -> Self {
        match k {
            wit::SettingKind::Origin => model::SettingKind::Origin,
            wit::SettingKind::OriginList => model::SettingKind::OriginList,
            wit::SettingKind::Value => model::SettingKind::Value,
        }
    }
}

impl From<wit::SubjectMetadata> for model::SubjectMetadata {
    fn from(m: wit::SubjectMetadata) -> Self {
        model::SubjectMetadata {
            name: m.name,
            version: m.version,
            description: m.description,
            settings: m
                .settings
                .into_iter()
                .map(|s| model::SettingInfo {
                    name: s.name,
                    description: s.description,
                    kind: s.kind.into(),
                    required: s.required,
                    default_value: s.default_value,
                })
                .collect(),
            invariants: invariants(m.invariants),
            actions: actions(m.actions),
            failure_modes: failure_modes(m.failure_modes),
        }
    }
}
