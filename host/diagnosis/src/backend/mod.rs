//! Backends: the offline reasoner, Claude (Anthropic Messages API) and any
//! OpenAI-compatible chat completions server, behind one closed enum.

pub mod claude;
pub mod openai;
pub mod tools;

pub use claude::ClaudeConfig;
pub use openai::OpenAiConfig;

use crate::context::Context;
use crate::offline;
use crate::record::{Diagnosis, Rejection};
use serde_json::Value;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Which reasoner diagnoses.
#[derive(Debug, Clone)]
pub enum Backend {
    Offline,
    Claude(ClaudeConfig),
    OpenAi(OpenAiConfig),
}

impl Backend {
    /// `offline`, `claude` or `openai`: what the record's `backend` field says.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Offline => "offline",
            Backend::Claude(_) => "claude",
            Backend::OpenAi(_) => "openai",
        }
    }

    /// The model in use.
    pub fn model(&self) -> &str {
        match self {
            Backend::Offline => offline::MODEL,
            Backend::Claude(c) => &c.model,
            Backend::OpenAi(c) => &c.model,
        }
    }

    /// Diagnoses one incident. Never panics on a bad answer: every failure is a
    /// [`DiagnoseError`] the host can record and retry.
    pub async fn diagnose(&self, ctx: &Context) -> Result<Diagnosis, DiagnoseError> {
        match self {
            Backend::Offline => {
                offline::diagnose(ctx).map_err(|rejection| DiagnoseError::Rejected {
                    rejection,
                    raw: String::new(),
                })
            }
            Backend::Claude(c) => claude::diagnose(c, ctx).await,
            Backend::OpenAi(c) => openai::diagnose(c, ctx).await,
        }
    }
}

/// Why a diagnosis failed.
#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error("backend configuration: {0}")]
    Config(String),
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    #[error("rate limited by the backend (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    #[error("backend overloaded: {0}")]
    Overloaded(String),
    #[error("backend server error {status}: {message}")]
    Server { status: u16, message: String },
    #[error("backend refused the request ({status}): {message}")]
    Request { status: u16, message: String },
    #[error("backend timed out after {0:?}")]
    Timeout(Duration),
    #[error("the model refused to answer: {0}")]
    Refusal(String),
    #[error("the model ran out of output tokens (max_tokens) before answering")]
    MaxTokens,
    #[error("malformed answer: {reason}")]
    Malformed { reason: String, raw: String },
    #[error("{rejection}")]
    Rejected { rejection: Rejection, raw: String },
    #[error("no answer within {0} steps")]
    StepCap(usize),
}

impl DiagnoseError {
    /// Whether trying again later may succeed (the host backs off and retries these). A
    /// rejected model answer may be right next time; a rejected offline answer will not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DiagnoseError::Unreachable(_)
                | DiagnoseError::RateLimited { .. }
                | DiagnoseError::Overloaded(_)
                | DiagnoseError::Server { .. }
                | DiagnoseError::Timeout(_)
                | DiagnoseError::Malformed { .. }
                | DiagnoseError::StepCap(_)
                | DiagnoseError::MaxTokens
        ) || matches!(self, DiagnoseError::Rejected { raw, .. } if !raw.is_empty())
    }

    /// The delay the backend asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DiagnoseError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The raw answer kept for the record, when there was one.
    pub fn raw_answer(&self) -> Option<&str> {
        match self {
            DiagnoseError::Malformed { raw, .. } | DiagnoseError::Rejected { raw, .. } => Some(raw),
            _ => None,
        }
    }
}

/// Retries of one HTTP request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (the official SDKs retry twice).
    pub max_retries: u32,
    /// First backoff for 529 / 5xx; doubles each time, with ±50% jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A `retry-after` longer than this is not waited out: the error goes to the host.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        // Jitter from the std hasher's random keys: no rand crate for one number.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(attempt);
        let r = (h.finish() % 1000) as f64 / 1000.0; // 0..1
        exp.mul_f64(0.5 + r)
    }
}

fn install_crypto() {
    // Ignored: it fails only when a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, DiagnoseError> {
    install_crypto();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| DiagnoseError::Config(format!("building the HTTP client: {e}")))
}

/// `retry-after` as seconds (the only form the APIs send); HTTP dates are ignored.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The error message of an API error body (`{error:{message}}` in both APIs).
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or(v["error"].as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| crate::record::clip(body, 300))
}

/// POSTs a JSON body with the retry policy; returns the parsed 2xx body.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
    timeout: Duration,
    retry: &RetryPolicy,
) -> Result<Value, DiagnoseError> {
    let mut attempt = 0;
    loop {
        // reqwest's `json` feature is off in this workspace: serialise by hand.
        let mut req = client.post(url).body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(DiagnoseError::Timeout(timeout)),
            Err(e) if e.is_connect() => {
                return Err(DiagnoseError::Unreachable(format!(
                    "{url}: {}",
                    error_chain(&e)
                )));
            }
            Err(e) => {
                return Err(DiagnoseError::Unreachable(format!(
                    "{url}: {}",
                    error_chain(&e)
                )));
            }
        };
        let status = resp.status().as_u16();
        let wait = retry_after(&resp);
        let text = match resp.bytes().await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.is_timeout() => return Err(DiagnoseError::Timeout(timeout)),
            Err(e) => {
                return Err(DiagnoseError::Unreachable(format!(
                    "{url}: reading the body: {e}"
                )));
            }
        };
        let err = match status {
            200..=299 => {
                return serde_json::from_str(&text).map_err(|e| DiagnoseError::Malformed {
                    reason: format!("the response is not JSON: {e}"),
                    raw: crate::record::clip(&text, 2000),
                });
            }
            429 => DiagnoseError::RateLimited { retry_after: wait },
            529 => DiagnoseError::Overloaded(error_message(&text)),
            500..=599 => DiagnoseError::Server {
                status,
                message: error_message(&text),
            },
            _ => {
                return Err(DiagnoseError::Request {
                    status,
                    message: error_message(&text),
                });
            }
        };
        if attempt >= retry.max_retries {
            return Err(err);
        }
        let delay = match &err {
            DiagnoseError::RateLimited {
                retry_after: Some(d),
            } => {
                if *d > retry.max_retry_after {
                    return Err(err);
                }
                *d
            }
            _ => retry.backoff(attempt),
        };
        tracing::warn!(
            status,
            attempt,
            delay_ms = delay.as_millis() as u64,
            "diagnosis backend: retrying"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Parses and validates a `submit_diagnosis` input.
pub(crate) fn finish(
    input: &Value,
    ctx: &Context,
    run: crate::record::RunInfo,
) -> Result<Diagnosis, DiagnoseError> {
    let raw = crate::record::clip(&input.to_string(), 8000);
    let answer: crate::record::Answer =
        serde_json::from_value(input.clone()).map_err(|e| DiagnoseError::Malformed {
            reason: format!("submit_diagnosis input does not fit the record: {e}"),
            raw: raw.clone(),
        })?;
    crate::record::validate(&answer, ctx, run)
        .map_err(|rejection| DiagnoseError::Rejected { rejection, raw })
}
