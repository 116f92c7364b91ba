//! Contract 0.3.0 (`wit/since_v0.3.0`), frozen. Its imports forward to the newest
//! implementation by converting their (structurally identical) records; it has
//! `check-retained` but not `http.send-all`.

use super::latest;
use crate::model;
use crate::runtime::state::HostState;

wasmtime::component::bindgen!({
    world: "subject",
    path: "../wit/since_v0.3.0",
    imports: { default: async },
    exports: { default: async },
});

pub use self::operator::subject::types as wit;
use self::operator::subject::{config, http, log, logs, redis};

super::convert::common_conversions!();
super::convert::sample_list_conversions!();
super::forward::forward_imports!();

super::convert::settings_conversions!();
