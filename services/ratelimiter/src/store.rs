//! Redis access: one multiplexed connection (auto-pipelined across concurrent requests), short
//! timeouts so an outage is noticed quickly, and metrics around every call.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounterVec};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Script};
use serde::{Deserialize, Serialize};

use crate::script::{self, BLOCKED_KEY, LIMITS_KEY};

/// Prefix of every node registry key; each is written with a TTL.
pub const NODE_PREFIX: &str = "rl:node:";
/// TTL of a registry entry; heartbeats come every second.
pub const NODE_TTL_MS: u64 = 5000;

/// A limit as stored in `rl:limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub limit: u64,
    pub window_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis call timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis error: {0}")]
    Redis(#[from] RedisError),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

impl StoreError {
    /// Label for `ratelimiter_redis_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout(_) => "timeout",
            StoreError::Reply(_) => "response",
            StoreError::Redis(e) if e.is_timeout() => "timeout",
            StoreError::Redis(e) if e.is_connection_refusal() || e.is_connection_dropped() => {
                "connection"
            }
            StoreError::Redis(e) if e.is_io_error() => "io",
            StoreError::Redis(e) => match e.kind() {
                // Redis answered with an error. `Extension` is an error code the client
                // library has no name for, such as WRONGTYPE raised inside a script: Redis
                // is reachable, so the node must not degrade for it.
                redis::ErrorKind::Server(_) | redis::ErrorKind::Extension => "server",
                redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => "response",
                _ => "other",
            },
        }
    }

    /// Whether the error means Redis cannot be reached (as opposed to Redis answering with an
    /// error, e.g. a wrong type), which flips the node into its degraded mode.
    pub fn is_outage(&self) -> bool {
        matches!(self.kind(), "timeout" | "connection" | "io" | "other")
    }
}

/// One decision as computed by the Lua script (on the Redis clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisDecision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub retry_after_ms: u64,
    pub window_ms: u64,
    pub window_start_ms: u64,
    /// Current window count after this decision.
    pub current: u64,
    pub previous: u64,
    pub now_ms: u64,
    pub blocked: bool,
}

/// Read-only view of a key's counters (on the Redis clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek {
    pub limit: u64,
    pub window_ms: u64,
    pub window_start_ms: u64,
    pub now_ms: u64,
    pub current: u64,
    pub previous: u64,
    pub blocked: bool,
}

fn nonneg(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub struct Store {
    conn: ConnectionManager,
    timeout: Duration,
    decide: Script,
    peek: Script,
    reset: Script,
    default: Limit,
    duration: Histogram,
    errors: IntCounterVec,
}

impl Store {
    /// Create the (lazy) connection; it connects on first use and reconnects by itself, so a
    /// node can start while Redis is down.
    pub fn new(
        url: &str,
        timeout: Duration,
        default: Limit,
        duration: Histogram,
        errors: IntCounterVec,
    ) -> anyhow::Result<Store> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("invalid redis url {url:?}: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Few, quick reconnect attempts: the 500 ms probe keeps retrying anyway, and a
            // request must not wait through a long backoff.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("creating redis connection manager: {e}"))?;
        Ok(Store {
            conn,
            timeout,
            decide: Script::new(&script::decide_script()),
            peek: Script::new(&script::peek_script()),
            reset: Script::new(&script::reset_script()),
            default,
            duration,
            errors,
        })
    }

    /// Time, bound and account one Redis round trip.
    async fn call<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
        let start = Instant::now();
        // The outer bound also covers waiting for a reconnect, which the response timeout
        // does not.
        let res = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        self.duration.observe(start.elapsed().as_secs_f64());
        if let Err(e) = &res {
            self.errors.with_label_values(&[e.kind()]).inc();
        }
        res
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// SCRIPT LOAD all scripts (after startup and after Redis comes back; EVALSHA also falls
    /// back on NOSCRIPT by itself).
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        for s in [&self.decide, &self.peek, &self.reset] {
            let mut c = self.conn();
            let sha: String = self.call(s.prepare_invoke().load_async(&mut c)).await?;
            if sha != s.get_hash() {
                return Err(StoreError::Reply(format!("SCRIPT LOAD returned sha {sha}")));
            }
        }
        Ok(())
    }

    pub fn decide_sha(&self) -> &str {
        self.decide.get_hash()
    }

    fn invocation<'a>(&self, script: &'a Script, key: &str) -> redis::ScriptInvocation<'a> {
        let mut inv = script.key(BLOCKED_KEY);
        inv.key(LIMITS_KEY)
            .arg(key)
            .arg(self.default.limit)
            .arg(self.default.window_ms);
        inv
    }

    /// `delay` (the chaos switch `redis_latency_ms`) is spent inside the timed round trip,
    /// as network latency to Redis would be, so `ratelimiter_redis_duration_seconds` and
    /// the Redis timeout both see it.
    pub async fn decide(
        &self,
        key: &str,
        cost: u64,
        delay: Option<std::time::Duration>,
    ) -> Result<RedisDecision, StoreError> {
        let mut inv = self.invocation(&self.decide, key);
        inv.arg(cost);
        let mut c = self.conn();
        let v: Vec<i64> = self
            .call(async {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                inv.invoke_async(&mut c).await
            })
            .await?;
        let [
            allowed,
            limit,
            remaining,
            retry,
            window,
            start,
            cur,
            prev,
            now,
            blocked,
        ] = v.as_slice()
        else {
            return Err(StoreError::Reply(format!("decision script returned {v:?}")));
        };
        Ok(RedisDecision {
            allowed: *allowed == 1,
            limit: nonneg(*limit),
            remaining: nonneg(*remaining),
            retry_after_ms: nonneg(*retry),
            window_ms: nonneg(*window).max(1),
            window_start_ms: nonneg(*start),
            current: nonneg(*cur),
            previous: nonneg(*prev),
            now_ms: nonneg(*now),
            blocked: *blocked == 1,
        })
    }

    pub async fn peek(&self, key: &str) -> Result<Peek, StoreError> {
        let inv = self.invocation(&self.peek, key);
        let mut c = self.conn();
        let v: Vec<i64> = self.call(inv.invoke_async(&mut c)).await?;
        let [limit, window, start, now, cur, prev, blocked] = v.as_slice() else {
            return Err(StoreError::Reply(format!("peek script returned {v:?}")));
        };
        Ok(Peek {
            limit: nonneg(*limit),
            window_ms: nonneg(*window).max(1),
            window_start_ms: nonneg(*start),
            now_ms: nonneg(*now),
            current: nonneg(*cur),
            previous: nonneg(*prev),
            blocked: *blocked == 1,
        })
    }

    /// Delete the key's live window counters; returns how many existed.
    pub async fn reset(&self, key: &str) -> Result<u64, StoreError> {
        let inv = self.invocation(&self.reset, key);
        let mut c = self.conn();
        self.call(inv.invoke_async(&mut c)).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn();
        let pong: String = self.call(redis::cmd("PING").query_async(&mut c)).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Reply(format!("PING answered {pong:?}")))
        }
    }

    /// Redis server time in milliseconds since the epoch.
    pub async fn time_ms(&self) -> Result<u64, StoreError> {
        let mut c = self.conn();
        let (s, us): (u64, u64) = self.call(redis::cmd("TIME").query_async(&mut c)).await?;
        Ok(s * 1000 + us / 1000)
    }

    /// All stored limits (raw JSON by field, `_default` included).
    pub async fn limits(&self) -> Result<HashMap<String, String>, StoreError> {
        let mut c = self.conn();
        self.call(redis::cmd("HGETALL").arg(LIMITS_KEY).query_async(&mut c))
            .await
    }

    pub async fn set_limit(&self, field: &str, limit: Limit) -> Result<(), StoreError> {
        let json = serde_json::to_string(&limit).map_err(|e| StoreError::Reply(e.to_string()))?;
        let mut c = self.conn();
        self.call(
            redis::cmd("HSET")
                .arg(LIMITS_KEY)
                .arg(field)
                .arg(json)
                .exec_async(&mut c),
        )
        .await
    }

    pub async fn blocked_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn();
        self.call(redis::cmd("SMEMBERS").arg(BLOCKED_KEY).query_async(&mut c))
            .await
    }

    /// SADD or SREM `rl:blocked`; returns whether the set changed.
    pub async fn set_blocked(&self, key: &str, blocked: bool) -> Result<bool, StoreError> {
        let mut c = self.conn();
        let op = if blocked { "SADD" } else { "SREM" };
        let n: u64 = self
            .call(redis::cmd(op).arg(BLOCKED_KEY).arg(key).query_async(&mut c))
            .await?;
        Ok(n > 0)
    }

    /// Write this node's registry entry with its TTL.
    pub async fn put_node(&self, id: &str, json: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        self.call(
            redis::cmd("SET")
                .arg(format!("{NODE_PREFIX}{id}"))
                .arg(json)
                .arg("PX")
                .arg(NODE_TTL_MS)
                .exec_async(&mut c),
        )
        .await
    }

    pub async fn delete_node(&self, id: &str) -> Result<(), StoreError> {
        let mut c = self.conn();
        self.call(
            redis::cmd("DEL")
                .arg(format!("{NODE_PREFIX}{id}"))
                .exec_async(&mut c),
        )
        .await
    }

    /// Raw registry entries (SCAN of `rl:node:*` then MGET).
    pub async fn node_entries(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut c = self.conn();
            let (next, batch): (u64, Vec<String>) = self
                .call(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{NODE_PREFIX}*"))
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut c),
                )
                .await?;
            names.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        names.sort();
        names.dedup();
        let mut c = self.conn();
        let values: Vec<Option<String>> = self
            .call(redis::cmd("MGET").arg(&names).query_async(&mut c))
            .await?;
        // An entry can expire between SCAN and MGET.
        Ok(values.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_redis_answers_with_is_a_server_error_not_an_outage() {
        for e in [
            redis::make_extension_error(
                "WRONGTYPE".into(),
                Some("Operation against a key holding the wrong kind of value".into()),
            ),
            RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                "ERR",
            )),
        ] {
            let e = StoreError::Redis(e);
            assert_eq!(e.kind(), "server", "{e}");
            assert!(!e.is_outage(), "{e}");
        }
    }

    #[test]
    fn a_timeout_is_an_outage() {
        let e = StoreError::Timeout(Duration::from_millis(400));
        assert_eq!(e.kind(), "timeout");
        assert!(e.is_outage());
    }
}
