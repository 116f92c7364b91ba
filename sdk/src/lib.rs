//! Guest SDK for `operator` subject plugins.
//!
//! A subject plugin is a `wasm32-wasip2` component built against the `operator:subject` WIT
//! package. This crate owns the generated bindings and the helpers most subjects need:
//! HTTP and JSON over the host's `http` import, a Prometheus text parser and HTTP API
//! client, read-only Redis access, component logs, config lookup and logging.
//!
//! ```ignore
//! use operator_sdk::prelude::*;
//!
//! struct MySubject;
//! impl Subject for MySubject {
//!     fn metadata() -> Metadata { /* ... */ }
//!     fn observe() -> Result<Observation, ObserveError> { /* ... */ }
//!     fn check_invariants(history: Vec<Observation>) -> Vec<Violation> { /* ... */ }
//!     fn execute(action: String, params: Vec<Kv>) -> Result<String, ActionError> { /* ... */ }
//! }
//! operator_sdk::export_subject!(MySubject);
//! ```

// Lets the generated code name this crate by its public path, from inside and outside.
extern crate self as operator_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The raw bindings generated from `wit/subject.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        world: "subject",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "operator_sdk::bindings",
        runtime_path: "operator_sdk::__wit_bindgen::rt",
    });
}

pub mod config;
pub mod history;
pub mod http;
pub mod log;
pub mod logs;
pub mod prometheus;
pub mod redis;

pub use bindings::exports::operator::subject::plugin::Guest as Subject;
pub use bindings::operator::subject::types::{
    ActionError, ActionInfo, Comparison, Component, ComponentState, Event, FailureMode,
    InvariantInfo, Kv, MetricCheck, MetricSample, Observation, ObserveError, ParamInfo, Problem,
    Risk, Severity, Signal, SignalCheck, SubjectMetadata as Metadata, Violation,
};

/// The WIT package version this SDK builds plugins against.
pub const WIT_VERSION: &str = "0.1.0";

/// Registers `$ty` (which implements [`Subject`]) as the plugin's exports.
#[macro_export]
macro_rules! export_subject {
    ($ty:ident) => {
        $crate::bindings::export!($ty with_types_in $crate::bindings);
    };
}

/// Everything a plugin usually imports.
pub mod prelude {
    pub use crate::history::Samples;
    pub use crate::prometheus::Histogram;
    pub use crate::{
        ActionError, ActionInfo, Comparison, Component, ComponentState, Event, FailureMode,
        InvariantInfo, Kv, Metadata, MetricCheck, MetricSample, Observation, ObserveError,
        ParamInfo, Problem, Risk, Severity, Signal, SignalCheck, Subject, Violation, kv, now_ms,
    };
    pub use crate::{config, http, log, logs, prometheus, redis};
}

/// Builds a [`Kv`].
pub fn kv(key: impl Into<String>, value: impl ToString) -> Kv {
    Kv {
        key: key.into(),
        value: value.to_string(),
    }
}

/// Wall-clock time in Unix milliseconds (WASI's wall clock, provided by the host).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
