//! `operator:subject/redis`: read-only Redis commands, behind the same allowlist as HTTP.
//! Connections are cached per URL across calls and dropped on any I/O error.

use crate::runtime::bindings::operator::subject::redis::{Host, RedisError, RedisValue};
use crate::runtime::state::HostState;
use std::time::Duration;
use url::Url;

/// Commands that cannot change data. Container commands list the subcommands allowed.
const READ_ONLY: &[(&str, &[&str])] = &[
    ("PING", &[]),
    ("TIME", &[]),
    ("INFO", &[]),
    ("DBSIZE", &[]),
    ("GET", &[]),
    ("MGET", &[]),
    ("STRLEN", &[]),
    ("EXISTS", &[]),
    ("TYPE", &[]),
    ("TTL", &[]),
    ("PTTL", &[]),
    ("SCAN", &[]),
    ("HGET", &[]),
    ("HMGET", &[]),
    ("HGETALL", &[]),
    ("HLEN", &[]),
    ("HKEYS", &[]),
    ("HSCAN", &[]),
    ("SMEMBERS", &[]),
    ("SISMEMBER", &[]),
    ("SCARD", &[]),
    ("SSCAN", &[]),
    ("ZRANGE", &[]),
    ("ZCARD", &[]),
    ("ZSCORE", &[]),
    ("ZSCAN", &[]),
    ("LRANGE", &[]),
    ("LLEN", &[]),
    ("MEMORY", &["USAGE", "STATS"]),
    ("OBJECT", &["ENCODING", "FREQ", "IDLETIME", "REFCOUNT"]),
    ("CLIENT", &["LIST", "INFO"]),
    ("CONFIG", &["GET"]),
    ("SLOWLOG", &["GET", "LEN"]),
    ("LATENCY", &["LATEST", "HISTORY"]),
];

fn check_read_only(args: &[String]) -> Result<(), RedisError> {
    let name = args
        .first()
        .ok_or_else(|| RedisError::Other("empty command".into()))?
        .to_ascii_uppercase();
    let Some((_, subs)) = READ_ONLY.iter().find(|(n, _)| *n == name) else {
        return Err(RedisError::Denied(format!(
            "{name} is not a read-only command; the redis capability only reads"
        )));
    };
    if !subs.is_empty() {
        let sub = args
            .get(1)
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default();
        if !subs.contains(&sub.as_str()) {
            return Err(RedisError::Denied(format!(
                "{name} {sub} is not allowed; only {name} {} are",
                subs.join("/")
            )));
        }
    }
    Ok(())
}

fn flatten(v: redis::Value, out: &mut Vec<RedisValue>) {
    use redis::Value as V;
    match v {
        V::Nil => out.push(RedisValue::Nil),
        V::Int(i) => out.push(RedisValue::Int(i)),
        V::BulkString(b) => out.push(RedisValue::Bulk(b)),
        V::SimpleString(s) => out.push(RedisValue::Status(s)),
        V::Okay => out.push(RedisValue::Status("OK".into())),
        V::Double(d) => out.push(RedisValue::Bulk(d.to_string().into_bytes())),
        V::Boolean(b) => out.push(RedisValue::Int(b as i64)),
        V::VerbatimString { text, .. } => out.push(RedisValue::Bulk(text.into_bytes())),
        V::Array(items) | V::Set(items) => {
            out.push(RedisValue::Array(items.len() as u32));
            items.into_iter().for_each(|i| flatten(i, out));
        }
        V::Map(pairs) => {
            out.push(RedisValue::Array(2 * pairs.len() as u32));
            for (k, v) in pairs {
                flatten(k, out);
                flatten(v, out);
            }
        }
        V::Attribute { data, .. } => flatten(*data, out),
        V::Push { data, .. } => {
            out.push(RedisValue::Array(data.len() as u32));
            data.into_iter().for_each(|i| flatten(i, out));
        }
        other => out.push(RedisValue::Bulk(format!("{other:?}").into_bytes())),
    }
}

fn classify(e: redis::RedisError) -> RedisError {
    if e.is_timeout() {
        RedisError::Timeout
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        RedisError::Connect(e.to_string())
    } else if e.kind() == redis::ErrorKind::InvalidClientConfig {
        RedisError::Other(e.to_string())
    } else {
        RedisError::Server(e.to_string())
    }
}

impl Host for HostState {
    fn command(&mut self, url: String, args: Vec<String>) -> Result<Vec<RedisValue>, RedisError> {
        check_read_only(&args)?;
        let parsed =
            Url::parse(&url).map_err(|e| RedisError::Other(format!("bad URL `{url}`: {e}")))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(RedisError::Other(format!("`{url}` is not a redis:// URL")));
        }
        self.ctx
            .allowlist
            .check(&parsed)
            .map_err(RedisError::Denied)?;
        let remaining = self.remaining().ok_or(RedisError::Timeout)?;
        let timeout = remaining.min(Duration::from_secs(3));

        let mut pool = self
            .ctx
            .redis
            .lock()
            .map_err(|_| RedisError::Other("redis pool poisoned".into()))?;
        let conn = match pool.entry(url.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let client = redis::Client::open(url.as_str()).map_err(classify)?;
                let conn = client
                    .get_connection_with_timeout(timeout)
                    .map_err(classify)?;
                v.insert(conn)
            }
        };
        let _ = conn.set_read_timeout(Some(timeout));
        let _ = conn.set_write_timeout(Some(timeout));
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        match cmd.query::<redis::Value>(conn) {
            Ok(v) => {
                let mut out = Vec::new();
                flatten(v, &mut out);
                Ok(out)
            }
            Err(e) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    // A broken connection must not poison later calls.
                    pool.remove(&url);
                }
                Err(classify(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_reads_pass() {
        assert!(check_read_only(&args(&["get", "k"])).is_ok());
        assert!(check_read_only(&args(&["SCAN", "0"])).is_ok());
        assert!(check_read_only(&args(&["config", "get", "maxmemory"])).is_ok());
        for bad in [
            &["SET", "k", "v"][..],
            &["DEL", "k"],
            &["FLUSHALL"],
            &["CONFIG", "SET", "x", "y"],
            &["CLIENT", "KILL", "x"],
            &["EVAL", "return 1", "0"],
        ] {
            assert!(
                matches!(check_read_only(&args(bad)), Err(RedisError::Denied(_))),
                "{bad:?} must be denied"
            );
        }
    }
}
