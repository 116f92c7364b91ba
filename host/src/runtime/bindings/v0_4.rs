//! Contract 0.4.0 (`wit/since_v0.4.0`), frozen. Its imports forward to the newest
//! implementation by converting their (structurally identical) records, `http.send-all`
//! included; it sends its metric samples as a list, which the host interns.

use super::latest;
use crate::model;
use crate::runtime::state::HostState;

wasmtime::component::bindgen!({
    world: "subject",
    path: "../wit/since_v0.4.0",
    imports: { default: async },
    exports: { default: async },
});

pub use self::operator::subject::types as wit;
use self::operator::subject::{config, http, log, logs, redis};

super::convert::common_conversions!();
super::convert::sample_list_conversions!();
super::forward::forward_imports!(send_all);

super::convert::settings_conversions!();
