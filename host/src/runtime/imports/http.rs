//! `operator:subject/http`: outbound HTTP through reqwest, behind the allowlist and the
//! read-only phase.

use super::{DEFAULT_REQUEST_TIMEOUT, MAX_BODY_BYTES};
use crate::runtime::bindings::operator::subject::http::{Host, HttpError, Request, Response};
use crate::runtime::bindings::wit::Kv;
use crate::runtime::state::{HostState, Phase};
use std::time::Duration;
use url::Url;

/// Builds the client a plugin uses. Redirects are followed only to allowlisted origins.
pub fn client(allowlist: super::super::allowlist::Allowlist) -> reqwest::Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        match allowlist.check(attempt.url()) {
            Ok(_) => attempt.follow(),
            Err(reason) => attempt.error(DeniedRedirect(reason)),
        }
    });
    // reqwest is built without a default TLS crypto provider; ring it is. Installing twice
    // is harmless (the first one stays).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(policy)
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

#[derive(Debug)]
struct DeniedRedirect(String);

impl std::fmt::Display for DeniedRedirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirect denied: {}", self.0)
    }
}

impl std::error::Error for DeniedRedirect {}

fn denied_redirect(e: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(d) = s.downcast_ref::<DeniedRedirect>() {
            return Some(d.to_string());
        }
        source = s.source();
    }
    None
}

const READ_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS"];

impl Host for HostState {
    fn send(&mut self, req: Request) -> Result<Response, HttpError> {
        let url = Url::parse(&req.url)
            .map_err(|e| HttpError::Invalid(format!("bad URL `{}`: {e}", req.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::Invalid(format!(
                "scheme `{}` is not HTTP",
                url.scheme()
            )));
        }
        let method = req.method.to_ascii_uppercase();
        if self.phase == Phase::ReadOnly && !READ_METHODS.contains(&method.as_str()) {
            return Err(HttpError::Denied(format!(
                "{method} {} refused: this call is read-only; changes run only as actions the user allows",
                req.url
            )));
        }
        let origin = self.ctx.allowlist.check(&url).map_err(HttpError::Denied)?;
        let remaining = self.remaining().ok_or(HttpError::Timeout)?;
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT)
            .min(remaining);
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| HttpError::Invalid(format!("bad method `{}`", req.method)))?;
        let mut builder = self.ctx.http.request(method, url).timeout(timeout);
        for Kv { key, value } in req.headers {
            builder = builder.header(key, value);
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        tracing::debug!(plugin = %self.ctx.name, %origin, url = %req.url, "http request");
        self.ctx.io.block_on(async move {
            let mut resp = builder.send().await.map_err(classify)?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| Kv {
                    key: k.to_string(),
                    value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                })
                .collect();
            if let Some(len) = resp.content_length().filter(|l| *l > MAX_BODY_BYTES) {
                return Err(HttpError::TooLarge(len));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(classify)? {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > MAX_BODY_BYTES {
                    return Err(HttpError::TooLarge(body.len() as u64));
                }
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        })
    }
}

fn classify(e: reqwest::Error) -> HttpError {
    if let Some(reason) = denied_redirect(&e) {
        return HttpError::Denied(reason);
    }
    if e.is_timeout() {
        HttpError::Timeout
    } else if e.is_connect() {
        HttpError::Connect(root_cause(&e))
    } else if e.is_builder() {
        HttpError::Invalid(root_cause(&e))
    } else {
        HttpError::Other(root_cause(&e))
    }
}

/// The innermost cause, which is where "connection refused" lives.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}
