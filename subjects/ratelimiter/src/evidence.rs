//! Evidence keys and values that failure-mode signals cite, shared by the invariants that
//! emit them and the failure modes that read them, so the two cannot drift apart. A unit
//! test runs the invariants over fixture observations and fails when a signal cites a key
//! (or a key and value) that no invariant emits.

/// `true`/`false`/`unknown`: the node answered HTTP (any answer, even a malformed one).
pub const REACHABLE: &str = "reachable";
/// Why a node did not answer: one of [`ErrorKind`]'s spellings.
pub const ERROR_KIND: &str = "error_kind";
/// `true`/`false`/`unknown`: the operator itself reached Redis this tick.
pub const REDIS_REACHABLE: &str = "redis_reachable";
/// The node's mode, as the node spells it (`ratelimiter_wire::Mode::as_str`).
pub const MODE: &str = "mode";
/// `true` when Redis calls take at least half of a slow decision's p99.
pub const REDIS_SLOW: &str = "redis_slow";
/// The limit in force for [`KEY`].
pub const LIMIT: &str = "limit";
/// The node's component id (host:port); suggested actions take it as `{node}`.
pub const NODE: &str = "node";
/// The rate-limited key; suggested actions take it as `{key}`.
pub const KEY: &str = "key";
/// The key's window in ms; suggested actions take it as `{window_ms}`.
pub const WINDOW_MS: &str = "window_ms";

/// Why a node's `/healthz` could not be read (evidence [`ERROR_KIND`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Nothing answered in time.
    Timeout,
    /// The connection was refused or reset: nothing listens.
    Connect,
    /// The host refused the request (not allowlisted).
    Denied,
    /// Another transport failure.
    Transport,
    /// An answer outside 2xx without a readable body.
    HttpStatus,
    /// An answer that is not the expected JSON.
    BadData,
    /// The request could not be built.
    Encode,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Denied => "denied",
            ErrorKind::Transport => "transport",
            ErrorKind::HttpStatus => "http-status",
            ErrorKind::BadData => "bad-data",
            ErrorKind::Encode => "encode",
        }
    }

    /// Something answered, even if what it said could not be read.
    pub fn answered(self) -> bool {
        matches!(self, ErrorKind::HttpStatus | ErrorKind::BadData)
    }
}

/// `{key}`: a suggested action's parameter taken from the violation's evidence.
pub fn placeholder(key: &str) -> String {
    format!("{{{key}}}")
}
