//! HTTP over the host's `http` import, with JSON helpers.
//!
//! Every error names the URL, so a plugin can pass it straight into an observation problem.

use crate::Kv;
use crate::bindings::operator::subject::http as wit;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
pub use wit::{HttpError, Response};

/// Default per-request timeout; the host caps it further at the call's deadline.
pub const DEFAULT_TIMEOUT_MS: u32 = 2_000;

#[derive(Debug, Clone)]
pub enum Error {
    /// The host refused or the transport failed.
    Transport { url: String, error: HttpError },
    /// The server answered with a status outside 2xx.
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The body is not what was expected.
    Decode { url: String, message: String },
    /// The request body could not be serialized; nothing was sent.
    Encode { url: String, message: String },
}

impl Error {
    /// True when the host denied the request (origin not allowlisted, or a write in a
    /// read-only phase).
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                error: HttpError::Denied(_),
                ..
            }
        )
    }

    /// True when nothing answered (connect error or timeout).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                error: HttpError::Connect(_) | HttpError::Timeout,
                ..
            }
        )
    }

    pub fn url(&self) -> &str {
        match self {
            Error::Transport { url, .. }
            | Error::Status { url, .. }
            | Error::Decode { url, .. }
            | Error::Encode { url, .. } => url,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport { url, error } => write!(f, "{url}: {}", describe(error)),
            Error::Status { url, status, body } => {
                let body: String = body.chars().take(200).collect();
                write!(f, "{url}: HTTP {status}: {body}")
            }
            Error::Decode { url, message } => write!(f, "{url}: malformed response: {message}"),
            Error::Encode { url, message } => {
                write!(
                    f,
                    "{url}: request body not sent, it cannot be serialized: {message}"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

fn describe(e: &HttpError) -> String {
    match e {
        HttpError::Denied(m) => format!("denied by host: {m}"),
        HttpError::Timeout => "timed out".into(),
        HttpError::Connect(m) => format!("connection failed: {m}"),
        HttpError::Invalid(m) => format!("invalid request: {m}"),
        HttpError::TooLarge(n) => format!("response larger than the host's cap ({n} bytes)"),
        HttpError::Other(m) => m.clone(),
    }
}

/// A request builder.
pub struct Request {
    inner: wit::Request,
    encode_error: Option<String>,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            inner: wit::Request {
                method: method.to_string(),
                url: url.to_string(),
                headers: Vec::new(),
                body: None,
                timeout_ms: Some(DEFAULT_TIMEOUT_MS),
            },
            encode_error: None,
        }
    }

    pub fn header(mut self, key: &str, value: &str) -> Self {
        self.inner.headers.push(Kv {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.inner.body = Some(body);
        self
    }

    /// A JSON body. A value that cannot be serialized makes `send` fail with
    /// [`Error::Encode`] instead of sending an empty body.
    pub fn json<T: Serialize>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => self.header("content-type", "application/json").body(body),
            Err(e) => {
                self.encode_error = Some(e.to_string());
                self
            }
        }
    }

    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.inner.timeout_ms = Some(ms);
        self
    }

    /// Sends the request; any status is returned as a response.
    pub fn send(self) -> Result<Response, Error> {
        let url = self.inner.url.clone();
        if let Some(message) = self.encode_error {
            return Err(Error::Encode { url, message });
        }
        wit::send(&self.inner).map_err(|error| Error::Transport { url, error })
    }

    /// Sends the request and fails on a non-2xx status.
    pub fn send_ok(self) -> Result<Response, Error> {
        let url = self.inner.url.clone();
        ok(&url, self.send()?)
    }

    /// The URL this request goes to.
    pub fn url(&self) -> &str {
        &self.inner.url
    }
}

/// Sends the requests at the same time and answers in their order, any status as a
/// response; one failing does not stop the others. A subject reading N nodes waits for the
/// slowest of them instead of for all of them in turn. Each request is checked and capped by
/// the host exactly as [`Request::send`] is.
///
/// ```ignore
/// let urls = ["http://10.0.0.1:7001/metrics", "http://10.0.0.2:7001/metrics"];
/// let answers = http::send_all(urls.iter().map(|u| http::Request::new("GET", u)).collect());
/// for (url, answer) in urls.iter().zip(answers) {
///     let text = answer.and_then(|r| http::text(url, r));
/// }
/// ```
pub fn send_all(requests: Vec<Request>) -> Vec<Result<Response, Error>> {
    let mut out: Vec<Option<Result<Response, Error>>> = Vec::with_capacity(requests.len());
    let mut sent = Vec::with_capacity(requests.len());
    let mut urls = Vec::with_capacity(requests.len());
    for r in requests {
        let url = r.inner.url.clone();
        match r.encode_error {
            // Never sent: its place holds the reason.
            Some(message) => out.push(Some(Err(Error::Encode { url, message }))),
            None => {
                out.push(None);
                urls.push(url);
                sent.push(r.inner);
            }
        }
    }
    let mut answers = wit::send_all(&sent).into_iter().zip(urls);
    out.into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| match answers.next() {
                Some((answer, url)) => answer.map_err(|error| Error::Transport { url, error }),
                // The host answers every request it is given; a short answer is its bug,
                // reported as one rather than a panic in the plugin.
                None => Err(Error::Transport {
                    url: String::new(),
                    error: HttpError::Other("the host answered fewer requests than sent".into()),
                }),
            })
        })
        .collect()
}

/// `resp` if its status is 2xx, else [`Error::Status`] with the start of its body.
pub fn ok(url: &str, resp: Response) -> Result<Response, Error> {
    if (200..300).contains(&resp.status) {
        Ok(resp)
    } else {
        Err(Error::Status {
            url: url.to_string(),
            status: resp.status,
            body: String::from_utf8_lossy(&resp.body).into_owned(),
        })
    }
}

/// A 2xx response's body as text.
pub fn text(url: &str, resp: Response) -> Result<String, Error> {
    String::from_utf8(ok(url, resp)?.body).map_err(|_| Error::Decode {
        url: url.to_string(),
        message: "body is not UTF-8".into(),
    })
}

/// A 2xx response's body decoded as JSON.
pub fn json<T: DeserializeOwned>(url: &str, resp: Response) -> Result<T, Error> {
    decode_json(url, &ok(url, resp)?.body)
}

/// `GET url` with a 2xx status, body as text.
pub fn get_text(url: &str) -> Result<String, Error> {
    text(url, Request::new("GET", url).send()?)
}

/// `GET url` with a 2xx status, body decoded as JSON.
pub fn get_json<T: DeserializeOwned>(url: &str) -> Result<T, Error> {
    let resp = Request::new("GET", url).send_ok()?;
    decode_json(url, &resp.body)
}

/// `GET url` with any status, body decoded as JSON (for APIs that report health with 503
/// and a JSON body).
pub fn get_json_any_status<T: DeserializeOwned>(url: &str) -> Result<(u16, T), Error> {
    let resp = Request::new("GET", url).send()?;
    Ok((resp.status, decode_json(url, &resp.body)?))
}

/// `method url` with a JSON body; any 2xx is success and the body is returned as text.
pub fn send_json<T: Serialize>(method: &str, url: &str, body: &T) -> Result<String, Error> {
    let resp = Request::new(method, url).json(body).send_ok()?;
    Ok(String::from_utf8_lossy(&resp.body).into_owned())
}

/// Decodes a JSON body, naming the URL and the decoder's complaint on failure.
pub fn decode_json<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        url: url.to_string(),
        message: format!("invalid JSON: {e}"),
    })
}

/// Joins a base URL and a path without doubling or dropping the slash.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
