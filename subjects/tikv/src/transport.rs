//! The plugin's view of the outside world, behind a trait so that `observe` and the actions
//! run unchanged against the host's imports (in wasm) and against fixture files (in the
//! crate's native tests and the scale bench).

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why no answer arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchError {
    /// Nothing answered: connection refused, DNS, timeout.
    Unreachable(String),
    /// The host refused the request (origin not allowlisted, write in a read-only phase).
    Denied(String),
    /// The body exceeded the host's cap (bytes announced or read so far).
    TooLarge(u64),
    Other(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(m) => write!(f, "unreachable: {m}"),
            FetchError::Denied(m) => write!(f, "denied by host: {m}"),
            FetchError::TooLarge(n) => write!(f, "response larger than the host's cap ({n} bytes)"),
            FetchError::Other(m) => f.write_str(m),
        }
    }
}

/// HTTP methods the plugin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

pub trait Transport {
    /// Sends one request; any status is an answer.
    fn send(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Result<Reply, FetchError>;

    fn get(&self, url: &str) -> Result<Reply, FetchError> {
        self.send(Method::Get, url, None)
    }

    /// The last `lines` lines of a configured component log.
    fn tail(&self, component: &str, lines: u32) -> Result<Vec<String>, String>;
}

/// Joins a base URL and a path without doubling or dropping the slash.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
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

/// Decodes a percent-encoded query value (`+` is a space, as in forms).
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
