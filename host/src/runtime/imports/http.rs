//! `operator:subject/http`: outbound HTTP through reqwest, behind the allowlist, the
//! read-only phase and the call's remaining budget.
//!
//! In the read phases (metadata, observe, check-invariants, read-only actions) only GET and
//! HEAD pass, without a body. In every phase the host refuses headers that would make the
//! request mean something other than what the allowlist checked: `Host`, method-override
//! headers, hop-by-hop and framing headers. OPTIONS is refused too: no subject needs it to
//! read, and some servers act on it.
//!
//! `send-all` (contract 0.4) runs each request through the same checks as `send`, in order,
//! then sends the ones that passed at the same time, at most `max_in_flight` at once. The
//! batch shares one response-body budget, so it holds no more than a single `send` may.

use crate::runtime::bindings::latest::operator::subject::http::{
    Host, HttpError, Request, Response,
};
use crate::runtime::bindings::latest::wit::Kv;
use crate::runtime::limits::HttpLimits;
use crate::runtime::state::{HostState, Phase, RecordedRequest};
use futures_util::stream::{self, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use url::Url;

/// Builds the client a plugin uses. Redirects are followed only to allowlisted origins.
pub fn client(
    allowlist: crate::runtime::allowlist::Allowlist,
    limits: &HttpLimits,
) -> reqwest::Result<reqwest::Client> {
    let max_redirects = limits.max_redirects;
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= max_redirects {
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
        .pool_max_idle_per_host(4)
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

/// Methods allowed while the call may only read.
const READ_METHODS: &[&str] = &["GET", "HEAD"];

/// Headers a plugin may never set: they would change where the request goes, what method
/// the server runs, or how the body is framed, behind the allowlist's back.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "forwarded",
    "x-forwarded-host",
    "x-original-url",
    "x-rewrite-url",
];

/// The phase policy, separate from I/O so it is tested without a server.
pub fn check_request(phase: Phase, method: &str, req: &Request) -> Result<(), HttpError> {
    if phase == Phase::ReadOnly {
        if !READ_METHODS.contains(&method) {
            return Err(HttpError::Denied(format!(
                "{method} {} refused: this call is read-only; changes run only as actions the user allows",
                req.url
            )));
        }
        if req.body.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(HttpError::Denied(format!(
                "{method} {} with a body refused: a read carries no body",
                req.url
            )));
        }
    }
    for Kv { key, .. } in &req.headers {
        let name = key.trim().to_ascii_lowercase();
        if FORBIDDEN_HEADERS.contains(&name.as_str()) || name.starts_with("proxy-") {
            return Err(HttpError::Denied(format!(
                "header `{key}` refused: the host sets routing, method and framing itself"
            )));
        }
    }
    Ok(())
}

/// A request that passed every check, ready to go.
struct Prepared {
    builder: reqwest::RequestBuilder,
    /// When it must have finished: its own timeout from the moment it was checked, never
    /// past the call's deadline. Absolute, so a request queued behind others in a batch
    /// does not get a fresh timeout when it finally starts.
    deadline: tokio::time::Instant,
}

/// Response bytes a call may still hold. One `send` has the whole cap; the requests of one
/// `send-all` share it, so a batch holds no more than one request could.
struct BodyBudget(AtomicUsize);

impl BodyBudget {
    fn new(bytes: usize) -> BodyBudget {
        BodyBudget(AtomicUsize::new(bytes))
    }

    fn left(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes, or fails and takes nothing.
    fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

impl HostState {
    /// Everything checked before a connection is made: the per-call request cap, the URL
    /// and its scheme, the phase, the headers, the body size and the allowlist.
    fn prepare(&mut self, req: Request, batch: Option<usize>) -> Result<Prepared, HttpError> {
        let limits = self.ctx.http.limits;
        self.calls.http_requests += 1;
        if self.calls.http_requests > limits.max_requests_per_call {
            return Err(HttpError::Denied(format!(
                "request cap reached: at most {} HTTP requests per call",
                limits.max_requests_per_call
            )));
        }
        let url = Url::parse(&req.url)
            .map_err(|e| HttpError::Invalid(format!("bad URL `{}`: {e}", req.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::Invalid(format!(
                "scheme `{}` is not HTTP",
                url.scheme()
            )));
        }
        let method = req.method.to_ascii_uppercase();
        check_request(self.phase, &method, &req)?;
        if req
            .body
            .as_ref()
            .is_some_and(|b| b.len() > limits.max_request_body_bytes)
        {
            return Err(HttpError::Invalid(format!(
                "request body over the host's cap of {} bytes",
                limits.max_request_body_bytes
            )));
        }
        let origin = self
            .ctx
            .http
            .allowlist
            .check(&url)
            .map_err(HttpError::Denied)?;
        let remaining = self.remaining().ok_or(HttpError::Timeout)?;
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or(limits.default_timeout)
            .min(remaining);
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| HttpError::Invalid(format!("bad method `{}`", req.method)))?;
        self.record(|| RecordedRequest::Http {
            method: method.to_string(),
            url: url.to_string(),
            batch,
        });
        tracing::debug!(plugin = %self.ctx.name, %origin, url = %req.url, "http request");
        let mut builder = self.ctx.http.client.request(method, url).timeout(timeout);
        for Kv { key, value } in req.headers {
            builder = builder.header(key, value);
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        Ok(Prepared {
            builder,
            deadline: tokio::time::Instant::now() + timeout,
        })
    }
}

/// Sends one checked request and reads its answer, the body counted against `budget`.
async fn exchange(p: Prepared, budget: &BodyBudget) -> Result<Response, HttpError> {
    let exchange = async {
        let mut resp = p.builder.send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| Kv {
                key: k.to_string(),
                value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
            })
            .collect();
        if let Some(len) = resp.content_length().filter(|l| *l > budget.left() as u64) {
            return Err(HttpError::TooLarge(len));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if !budget.take(chunk.len()) {
                return Err(HttpError::TooLarge((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    };
    // reqwest's timeout covers the whole exchange, body included; this outer bound is the
    // request's own deadline, so a server trickling bytes cannot hold the call past it.
    tokio::time::timeout_at(p.deadline, exchange)
        .await
        .map_err(|_| HttpError::Timeout)?
}

impl Host for HostState {
    async fn send(&mut self, req: Request) -> Result<Response, HttpError> {
        let prepared = self.prepare(req, None)?;
        exchange(
            prepared,
            &BodyBudget::new(self.ctx.http.limits.max_body_bytes),
        )
        .await
    }

    async fn send_all(&mut self, reqs: Vec<Request>) -> Vec<Result<Response, HttpError>> {
        let limits = self.ctx.http.limits;
        self.calls.http_batches += 1;
        let batch = Some(self.calls.http_batches);
        // Checked in order, as that many `send`s would be: the cap counts them one by one.
        let prepared: Vec<Result<Prepared, HttpError>> =
            reqs.into_iter().map(|r| self.prepare(r, batch)).collect();
        let budget = BodyBudget::new(limits.max_body_bytes);
        let budget = &budget;
        stream::iter(prepared)
            .map(|p| async move { exchange(p?, budget).await })
            .buffered(limits.max_in_flight.max(1))
            .collect()
            .await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            url: "http://127.0.0.1:1/x".into(),
            headers: headers
                .iter()
                .map(|(k, v)| Kv {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            body: body.map(|b| b.to_vec()),
            timeout_ms: None,
        }
    }

    #[test]
    fn read_phase_refuses_smuggling() {
        let ro = Phase::ReadOnly;
        assert!(check_request(ro, "GET", &req("GET", None, &[("accept", "text/plain")])).is_ok());
        assert!(check_request(ro, "HEAD", &req("HEAD", Some(b""), &[])).is_ok());
        for (m, body, headers) in [
            ("POST", None, &[][..]),
            ("OPTIONS", None, &[]),
            ("GET", Some(&b"POST /x HTTP/1.1\r\n\r\n"[..]), &[]),
            ("GET", None, &[("Host", "other.internal")]),
            ("GET", None, &[("X-HTTP-Method-Override", "DELETE")]),
            ("GET", None, &[("Transfer-Encoding", "chunked")]),
            ("GET", None, &[("connection", "upgrade")]),
            ("GET", None, &[("Proxy-Foo", "x")]),
        ] {
            let r = check_request(ro, m, &req(m, body, headers));
            assert!(
                matches!(r, Err(HttpError::Denied(_))),
                "{m} {body:?} {headers:?} must be denied"
            );
        }
    }

    #[test]
    fn mutating_phase_allows_writes_but_not_rerouting() {
        let rw = Phase::Mutating;
        assert!(check_request(rw, "POST", &req("POST", Some(b"{}"), &[])).is_ok());
        assert!(matches!(
            check_request(rw, "POST", &req("POST", None, &[("host", "x")])),
            Err(HttpError::Denied(_))
        ));
    }
}
