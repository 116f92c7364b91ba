//! The TiKV subject: watches a TiKV cluster through PD's HTTP API, Prometheus and the
//! stores' logs, checks TIKV-INV-01..12, and acts through PD's operator and scheduler API.
//!
//! Settings (`--set key=value`, see `settings.rs` and README.md):
//! - `pd` (required): PD base URL(s), comma-separated, tried in order.
//! - `prometheus`: a Prometheus scraping PD and TiKV.
//! - `log.<component>`: a log source (`file:/path` or `docker:<container>`) for a store
//!   (`store-<id>`), a PD member (`pd-<name>`) or any name.
//! - thresholds, each with a default (`latency_p99_ms`, `low_space_ratio`, ...).
//!
//! Everything but the glue below is pure over [`transport::Transport`], so the native tests
//! run the same observe, check and action code against fixture files.

pub mod actions;
pub mod invariants;
pub mod keys;
pub mod logparse;
pub mod metadata;
pub mod observe;
pub mod pd;
pub mod prom;
pub mod settings;
pub mod transport;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixture;
#[cfg(test)]
mod reasoner;
#[cfg(test)]
mod scenarios;

// The exports exist only in the wasm component: a native cdylib cannot carry WIT export
// names, and the native build exists for the tests and the bench.
#[cfg(target_arch = "wasm32")]
mod guest {
    use crate::settings::Settings;
    use crate::transport::{FetchError, Method, Reply, Transport};
    use crate::{actions, invariants, metadata, observe};
    use operator_sdk::prelude::*;

    /// The host's imports as a [`Transport`].
    struct Host;

    impl Transport for Host {
        fn send(
            &self,
            method: Method,
            url: &str,
            body: Option<Vec<u8>>,
        ) -> Result<Reply, FetchError> {
            let mut req = http::Request::new(method.as_str(), url);
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b);
            }
            match req.send() {
                Ok(r) => Ok(Reply {
                    status: r.status,
                    body: r.body,
                }),
                Err(http::Error::Transport { url, error }) => Err(match error {
                    http::HttpError::Timeout => {
                        FetchError::Unreachable(format!("{url}: timed out"))
                    }
                    http::HttpError::Connect(m) => FetchError::Unreachable(format!("{url}: {m}")),
                    http::HttpError::Denied(m) => FetchError::Denied(format!("{url}: {m}")),
                    http::HttpError::TooLarge(n) => FetchError::TooLarge(n),
                    http::HttpError::Invalid(m) | http::HttpError::Other(m) => {
                        FetchError::Other(format!("{url}: {m}"))
                    }
                }),
                Err(e) => Err(FetchError::Other(e.to_string())),
            }
        }

        fn tail(&self, component: &str, lines: u32) -> Result<Vec<String>, String> {
            logs::tail(component, lines)
        }
    }

    fn settings() -> Result<Settings, String> {
        let all = config::all();
        Settings::from_pairs(all.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    struct Tikv;

    impl Subject for Tikv {
        fn metadata() -> Metadata {
            metadata::metadata()
        }

        fn observe() -> Result<Observation, ObserveError> {
            let s = settings().map_err(ObserveError::Config)?;
            for w in &s.warnings {
                log::warn(w.clone());
            }
            observe::observe(&Host, &s, now_ms())
        }

        fn check_invariants(history: &[Observation]) -> Vec<Violation> {
            let thresholds = settings().map(|s| s.thresholds).unwrap_or_default();
            invariants::check(history, &thresholds)
        }

        fn execute(action: String, params: Vec<Kv>) -> Result<String, ActionError> {
            let s = settings().map_err(ActionError::BadParams)?;
            actions::execute(&Host, &s, &action, &params)
        }
    }

    operator_sdk::export_subject!(Tikv);
}
