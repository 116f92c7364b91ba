//! Guest SDK for `operator` subject plugins.
//!
//! A subject plugin is a `wasm32-wasip2` component built against the `operator:subject` WIT
//! package. This crate owns the generated bindings and the helpers most subjects need:
//! HTTP and JSON over the host's `http` import, a Prometheus text parser and HTTP API
//! client, read-only Redis access, component logs, config lookup and logging.
//!
//! A plugin implements the hand-written [`Subject`] trait: `metadata` and `observe` are
//! required, `check_invariants` (no violations) and `execute` (unknown action) have
//! defaults. The raw bindgen interface stays hidden behind [`export_subject!`], so a new
//! WIT version changes this crate, not every plugin. Records are best made with the
//! builders in [`build`], which fill fields added by later versions with defaults.
//!
//! ```ignore
//! use operator_sdk::prelude::*;
//!
//! struct Web;
//! impl Subject for Web {
//!     fn metadata() -> Metadata {
//!         Metadata::new("web", env!("CARGO_PKG_VERSION"))
//!             .describe("a web service behind /health")
//!             .setting(Setting::origin("url", "the service's base URL").required())
//!             .invariant(Invariant::new("WEB-01", "healthy", Severity::Critical))
//!     }
//!     fn observe() -> Result<Observation, ObserveError> { /* ... */ }
//! }
//! operator_sdk::export_subject!(Web);
//! ```

// Lets the generated code name this crate by its public path, from inside and outside.
extern crate self as operator_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The raw bindings generated from `wit/subject.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        world: "subject",
        path: "../wit/since_v0.5.0",
        pub_export_macro: true,
        default_bindings_module: "operator_sdk::bindings",
        runtime_path: "operator_sdk::__wit_bindgen::rt",
    });
}

pub mod build;
pub mod config;
pub mod history;
pub mod http;
pub mod log;
pub mod logs;
pub mod metrics;
mod observation;
pub mod prometheus;
pub mod redis;
#[doc(hidden)]
pub mod retained;
pub mod small_alloc;

pub use bindings::operator::subject::types::{
    ActionError, ActionInfo, Comparison, Component, ComponentState, Event, FailureMode,
    InvariantInfo, Kv, MetricCheck, ObserveError, ParamInfo, Problem, Risk, SettingInfo,
    SettingKind, Severity, Signal, SignalCheck, SubjectMetadata as Metadata, Violation,
};
pub use metrics::{Label, Labels, Metrics, Sample};
pub use observation::{MetricSample, Observation};

/// What [`export_subject!`] needs from this crate; not for plugins.
#[doc(hidden)]
pub mod __export {
    pub use crate::bindings::operator::subject::types::Observation as Wire;
    pub use crate::observation::{from_wire, to_wire};
}

/// The WIT package version this SDK builds plugins against: the newest `wit/since_v*`
/// folder. A host test checks that it, the folder and the host agree.
pub const WIT_VERSION: &str = "0.5.0";

/// What a subject plugin implements. Only `metadata` and `observe` are required.
pub trait Subject {
    /// Static description: settings, invariants, actions, failure modes.
    fn metadata() -> Metadata;

    /// One snapshot of the subject. Reads only.
    fn observe() -> Result<Observation, ObserveError>;

    /// Checks the invariants against recent observations, oldest first; the last one is
    /// this tick's. Reads only. By default there is nothing to check.
    ///
    /// The same instance may be asked again over observations it already holds (contract
    /// 0.3's `check-retained`, wired in by [`export_subject!`]), so the answer must depend
    /// only on `history`, not on earlier calls.
    fn check_invariants(history: &[Observation]) -> Vec<Violation> {
        let _ = history;
        Vec::new()
    }

    /// Runs a declared action. By default the subject declares none.
    fn execute(action: String, params: Vec<Kv>) -> Result<String, ActionError> {
        let _ = params;
        Err(ActionError::UnknownAction(action))
    }
}

/// Registers `$ty` (which implements [`Subject`]) as the plugin's exports.
#[macro_export]
macro_rules! export_subject {
    ($ty:ty) => {
        #[doc(hidden)]
        struct __OperatorSubjectExports;

        impl $crate::bindings::exports::operator::subject::plugin::Guest
            for __OperatorSubjectExports
        {
            fn metadata() -> $crate::Metadata {
                <$ty as $crate::Subject>::metadata()
            }
            fn observe(
            ) -> ::core::result::Result<$crate::__export::Wire, $crate::ObserveError> {
                // Sent as a table; held as built, for `check-retained`.
                let o = <$ty as $crate::Subject>::observe()?;
                let wire = $crate::__export::to_wire(&o);
                $crate::retained::observed(o);
                ::core::result::Result::Ok(wire)
            }
            fn check_invariants(
                history: ::std::vec::Vec<$crate::__export::Wire>,
            ) -> ::std::vec::Vec<$crate::Violation> {
                let history: ::std::vec::Vec<$crate::Observation> = history
                    .into_iter()
                    .map($crate::__export::from_wire)
                    .collect();
                $crate::retained::given(&history);
                <$ty as $crate::Subject>::check_invariants(&history)
            }
            fn check_retained(
                count: u32,
            ) -> ::core::option::Option<::std::vec::Vec<$crate::Violation>> {
                $crate::retained::check(count, |w| <$ty as $crate::Subject>::check_invariants(w))
            }
            fn execute(
                action: ::std::string::String,
                params: ::std::vec::Vec<$crate::Kv>,
            ) -> ::core::result::Result<::std::string::String, $crate::ActionError> {
                <$ty as $crate::Subject>::execute(action, params)
            }
        }

        $crate::bindings::export!(__OperatorSubjectExports with_types_in $crate::bindings);
    };
}

/// Everything a plugin usually imports.
pub mod prelude {
    pub use crate::build::{Action, Check, Invariant, Setting};
    pub use crate::history::Samples;
    pub use crate::prometheus::Histogram;
    pub use crate::{
        ActionError, ActionInfo, Comparison, Component, ComponentState, Event, FailureMode,
        InvariantInfo, Kv, Metadata, MetricCheck, MetricSample, Metrics, Observation, ObserveError,
        ParamInfo, Problem, Risk, SettingInfo, SettingKind, Severity, Signal, SignalCheck, Subject,
        Violation, kv, now_ms,
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

/// The guest's allocator (feature `allocator`, on by default). A tick allocates and frees
/// thousands of small strings in the guest, and the standard library's dlmalloc was a
/// tenth of a live tick in perf; with talc the rate limiter's observe step takes about 5%
/// less CPU (paired A/B). Blocks of up to 256 bytes, nearly all of a tick's, come from
/// [`small_alloc`]'s free lists in front of talc. Linear memory still grows only through
/// `memory.grow`, so the host's memory cap bounds it as before.
#[cfg(all(
    feature = "allocator",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: small_alloc::SmallFirst<talc::wasm::WasmDynamicTalc> =
    small_alloc::SmallFirst::new(talc::wasm::new_wasm_dynamic_allocator());
