//! The rate limiter's wire contract, shared by the service (`services/ratelimiter`) and the
//! operator's subject plugin (`subjects/ratelimiter`), so that neither re-declares what the
//! other writes.
//!
//! - [`keys`]: the Redis key schema (`rl:w:{key}:{window}`, `rl:node:{id}`, ...).
//! - [`routes`]: the HTTP paths.
//! - The JSON bodies of the routes a reader depends on: [`Health`] (`GET /healthz`),
//!   [`CounterList`] and [`CounterView`] (`GET /v1/counters`), [`NodeList`]
//!   (`GET /v1/nodes`), [`NodeRecord`] (the value of `rl:node:{id}`) and [`Limit`]
//!   (`PUT /v1/limits/{key}`, and a field of `rl:limits`).
//!
//! `tests/service_answers.rs` starts a real Redis and a real node and checks that every
//! answer decodes into these types and encodes back to the same JSON, field for field.
//!
//! Closed sets (modes, policies, statuses) are enums whose wire spelling is the one the
//! service has always used (`fail-open`, ...): [`Mode::as_str`] is that spelling.

use serde::{Deserialize, Serialize};

/// The Redis key schema. Every key under [`COUNTER_PREFIX`] and [`NODE_PREFIX`] carries a
/// TTL; only [`LIMITS_KEY`] and [`BLOCKED_KEY`] are persistent.
pub mod keys {
    /// The limiter's whole namespace.
    pub const NAMESPACE: &str = "rl:";
    /// `rl:w:{key}:{window_index}`: the allowed cost of `key` in one window.
    pub const COUNTER_PREFIX: &str = "rl:w:";
    /// `rl:node:{id}`: a node's registry entry ([`crate::NodeRecord`] as JSON).
    pub const NODE_PREFIX: &str = "rl:node:";
    /// Hash: field `{key}` (or [`DEFAULT_FIELD`]) → [`crate::Limit`] as JSON.
    pub const LIMITS_KEY: &str = "rl:limits";
    /// Set of blocked keys.
    pub const BLOCKED_KEY: &str = "rl:blocked";
    /// The field of [`LIMITS_KEY`] holding the cluster-wide default.
    pub const DEFAULT_FIELD: &str = "_default";
    /// The persistent keys, configuration by design.
    pub const CONFIG_KEYS: [&str; 2] = [LIMITS_KEY, BLOCKED_KEY];

    /// The counter key of `key` in window `window_index`.
    pub fn counter(key: &str, window_index: u64) -> String {
        format!("{COUNTER_PREFIX}{key}:{window_index}")
    }

    /// The registry key of node `id`.
    pub fn node(id: &str) -> String {
        format!("{NODE_PREFIX}{id}")
    }

    /// The rate-limited key a counter key name belongs to (`rl:w:{key}:{window}` → `key`),
    /// or None when `name` is not under [`COUNTER_PREFIX`] or has no window part. The
    /// window part is not required to be a number: a foreign write into the namespace
    /// still names its key.
    pub fn counter_owner(name: &str) -> Option<&str> {
        name.strip_prefix(COUNTER_PREFIX)?
            .rsplit_once(':')
            .map(|(key, _)| key)
    }
}

/// The HTTP paths of a node.
pub mod routes {
    pub const HEALTHZ: &str = "/healthz";
    pub const METRICS: &str = "/metrics";
    pub const NODES: &str = "/v1/nodes";
    pub const COUNTERS: &str = "/v1/counters";
    pub const LIMITS: &str = "/v1/limits";
    pub const DRAIN: &str = "/v1/drain";
    pub const UNDRAIN: &str = "/v1/undrain";

    /// `GET /v1/counters/{key}`; `key` must already be percent-encoded.
    pub fn counter(key: &str) -> String {
        format!("{COUNTERS}/{key}")
    }

    /// `POST /v1/counters/{key}/reset`; `key` must already be percent-encoded.
    pub fn counter_reset(key: &str) -> String {
        format!("{COUNTERS}/{key}/reset")
    }

    /// `PUT /v1/limits/{key}`; `key` must already be percent-encoded.
    pub fn limit(key: &str) -> String {
        format!("{LIMITS}/{key}")
    }

    /// `POST /v1/keys/{key}/block`; `key` must already be percent-encoded.
    pub fn block(key: &str) -> String {
        format!("/v1/keys/{key}/block")
    }

    /// `POST /v1/keys/{key}/unblock`; `key` must already be percent-encoded.
    pub fn unblock(key: &str) -> String {
        format!("/v1/keys/{key}/unblock")
    }
}

/// How a node is deciding right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Through Redis.
    Normal,
    /// Redis unreachable, counting locally.
    FailOpen,
    /// Redis unreachable, refusing.
    FailClosed,
    /// Cut off from Redis by chaos, counting locally.
    LocalOnly,
    /// Taking no decisions.
    Draining,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::Normal,
        Mode::FailOpen,
        Mode::FailClosed,
        Mode::LocalOnly,
        Mode::Draining,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::FailOpen => "fail-open",
            Mode::FailClosed => "fail-closed",
            Mode::LocalOnly => "local-only",
            Mode::Draining => "draining",
        }
    }

    /// The mode spelled `s`, if any.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether the node decides without Redis (or refuses for lack of it).
    pub fn without_redis(self) -> bool {
        matches!(self, Mode::FailOpen | Mode::LocalOnly | Mode::FailClosed)
    }
}

/// What a node does when it cannot reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    FailOpen,
    FailClosed,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::FailOpen => "fail-open",
            Policy::FailClosed => "fail-closed",
        }
    }
}

/// `status` of `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Draining,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Draining => "draining",
        }
    }
}

/// The chaos switches (`GET`/`POST /v1/chaos`, and `chaos` in `/healthz`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chaos {
    #[serde(default)]
    pub redis_latency_ms: u64,
    #[serde(default)]
    pub local_only: bool,
}

/// `GET /healthz`: 200 when the node can use Redis, 503 (same body) when it cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The node's id.
    pub node: String,
    pub status: HealthStatus,
    /// `ok`, or the last Redis error.
    pub redis: String,
    pub mode: Mode,
    pub policy: Policy,
    /// The chaos state, or null when the node runs without `--chaos`.
    #[serde(default)]
    pub chaos: Option<Chaos>,
}

/// `GET /v1/counters`: this node's view of its top keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterList {
    pub node: String,
    #[serde(default)]
    pub keys: Vec<CounterView>,
}

/// Which clock a counter view's window comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Clock {
    Redis,
    Local,
}

/// One node's view of one key (`GET /v1/counters/{key}`, and each of `/v1/counters`'s
/// `keys`). Tallies count only this node's decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterView {
    pub key: String,
    pub node: String,
    pub limit: u64,
    pub window_ms: u64,
    pub window_index: u64,
    pub window_start_ms: u64,
    pub now_ms: u64,
    pub elapsed_ms: u64,
    pub clock: Clock,
    /// None when the node cannot reach Redis.
    pub blocked: Option<bool>,
    /// Redis's counts; None when the node cannot reach Redis.
    pub redis: Option<RedisCount>,
    /// The node's own fallback counter, on its own clock.
    pub local: LocalCount,
    /// Decisions this node made in window `window_of_tallies` (still filling).
    pub allowed_in_window: u64,
    pub denied_in_window: u64,
    /// Decisions this node made in window `window_of_tallies - 1` (complete).
    #[serde(default)]
    pub allowed_in_previous_window: u64,
    #[serde(default)]
    pub denied_in_previous_window: u64,
    pub window_of_tallies: u64,
}

/// Redis's counts for a key, as one node read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedisCount {
    pub current: u64,
    pub previous: u64,
    pub estimate: f64,
}

/// A node's local fallback counter for a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalCount {
    pub window_index: u64,
    pub current: u64,
    #[serde(default)]
    pub previous: u64,
    pub estimate: f64,
}

/// `GET /v1/nodes`: the registry as a node reads it from Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeList {
    pub nodes: Vec<NodeInfo>,
}

/// One entry of `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub addr: String,
    pub mode: Mode,
    pub policy: Policy,
    /// On the Redis clock.
    pub last_heartbeat_ms: u64,
    /// Heartbeat age, measured by the node on the Redis clock.
    pub age_ms: u64,
    pub started_ms: u64,
}

impl NodeInfo {
    /// The registry entry this was read from.
    pub fn record(&self) -> NodeRecord {
        NodeRecord {
            id: self.id.clone(),
            addr: self.addr.clone(),
            mode: self.mode,
            last_heartbeat_ms: self.last_heartbeat_ms,
            started_ms: self.started_ms,
            policy: self.policy,
        }
    }
}

/// The JSON value of `rl:node:{id}`, rewritten by the node every second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// host:port the node listens on.
    pub addr: String,
    pub mode: Mode,
    /// On the Redis clock.
    pub last_heartbeat_ms: u64,
    pub started_ms: u64,
    pub policy: Policy,
}

/// A key's limit: the body of `PUT /v1/limits/{key}`, and a value of `rl:limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub limit: u64,
    pub window_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_round_trip() {
        assert_eq!(keys::counter("user-42", 17), "rl:w:user-42:17");
        assert_eq!(keys::counter_owner("rl:w:user-42:17"), Some("user-42"));
        // Keys may contain colons; the window is the last part.
        assert_eq!(keys::counter_owner("rl:w:a:b:3"), Some("a:b"));
        assert_eq!(keys::counter_owner("rl:node:n1"), None);
        assert_eq!(keys::counter_owner("rl:w:nowindow"), None);
        assert_eq!(keys::node("n1"), "rl:node:n1");
        assert!(keys::COUNTER_PREFIX.starts_with(keys::NAMESPACE));
        assert!(keys::NODE_PREFIX.starts_with(keys::NAMESPACE));
    }

    #[test]
    fn modes_parse_their_own_spelling() {
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
            // serde's spelling is the same one.
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        for p in [Policy::FailOpen, Policy::FailClosed] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for s in [
            HealthStatus::Ok,
            HealthStatus::Degraded,
            HealthStatus::Draining,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(Mode::parse("fail_open"), None);
    }
}
