//! Read-only Redis access through the host's `redis` import.

use crate::bindings::operator::subject::redis as wit;
use std::collections::BTreeMap;
use std::fmt;
pub use wit::RedisError;

/// A Redis reply, rebuilt from the host's flattened form.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Status(String),
    Int(i64),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bulk(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            Value::Status(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn as_string(&self) -> Option<String> {
        match self {
            Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Status(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// The reply as text, borrowed: a bulk string that is UTF-8, or a status.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bulk(b) => std::str::from_utf8(b).ok(),
            Value::Status(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    pub url: String,
    pub command: String,
    pub error: RedisError,
}

impl Error {
    pub fn is_unreachable(&self) -> bool {
        matches!(self.error, RedisError::Connect(_) | RedisError::Timeout)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.error {
            RedisError::Denied(m) => format!("denied by host: {m}"),
            RedisError::Connect(m) => format!("connection failed: {m}"),
            RedisError::Timeout => "timed out".into(),
            RedisError::Server(m) => format!("server error: {m}"),
            RedisError::Other(m) => m.clone(),
        };
        write!(f, "redis {} {}: {what}", self.url, self.command)
    }
}

impl std::error::Error for Error {}

/// Runs one read-only command.
pub fn command(url: &str, args: &[&str]) -> Result<Value, Error> {
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let flat = wit::command(url, &owned).map_err(|error| Error {
        url: url.to_string(),
        command: args.first().copied().unwrap_or("").to_uppercase(),
        error,
    })?;
    let mut it = flat.into_iter();
    Ok(unflatten(&mut it).unwrap_or(Value::Nil))
}

fn unflatten(it: &mut impl Iterator<Item = wit::RedisValue>) -> Option<Value> {
    Some(match it.next()? {
        wit::RedisValue::Nil => Value::Nil,
        wit::RedisValue::Status(s) => Value::Status(s),
        wit::RedisValue::Int(i) => Value::Int(i),
        wit::RedisValue::Bulk(b) => Value::Bulk(b),
        wit::RedisValue::Array(n) => {
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(unflatten(it)?);
            }
            Value::Array(items)
        }
    })
}

/// `INFO [section]` parsed into `section -> field -> value`.
pub fn info(url: &str, section: Option<&str>) -> Result<BTreeMap<String, String>, Error> {
    let mut args = vec!["INFO"];
    if let Some(s) = section {
        args.push(s);
    }
    let text = command(url, &args)?.as_string().unwrap_or_default();
    Ok(parse_info(&text))
}

/// Parses `INFO` output into a flat `field -> value` map (section headers dropped).
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    info_fields(text)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `INFO` output's `field:value` lines in order, borrowed (section headers dropped): a
/// plugin that reads a handful of the ~150 fields every tick need not copy them all.
pub fn info_fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
}

/// Parses an `INFO keyspace` value like `keys=12,expires=10,avg_ttl=0`.
pub fn parse_keyspace(value: &str) -> BTreeMap<String, i64> {
    value
        .split(',')
        .filter_map(|p| p.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// `SCAN` for keys matching `pattern`, stopping after `limit` keys.
pub fn scan(url: &str, pattern: &str, limit: usize) -> Result<Vec<String>, Error> {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    loop {
        let reply = command(url, &["SCAN", &cursor, "MATCH", pattern, "COUNT", "500"])?;
        let parts = reply.as_array().unwrap_or(&[]);
        cursor = parts.first().and_then(Value::as_string).unwrap_or_default();
        if let Some(batch) = parts.get(1).and_then(Value::as_array) {
            keys.extend(batch.iter().filter_map(Value::as_string));
        }
        if cursor == "0" || cursor.is_empty() || keys.len() >= limit {
            keys.truncate(limit);
            return Ok(keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_in_place() {
        let text = "# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\n";
        let fields: Vec<_> = info_fields(text).collect();
        assert_eq!(
            fields,
            [
                ("redis_version", "7.0.15"),
                ("db0", "keys=3,expires=1,avg_ttl=0")
            ]
        );
        assert_eq!(parse_info(text)["redis_version"], "7.0.15");
        assert_eq!(parse_keyspace(fields[1].1)["expires"], 1);
        assert_eq!(Value::Bulk(text.as_bytes().to_vec()).as_str(), Some(text));
        assert_eq!(Value::Bulk(vec![0xff]).as_str(), None);
        assert_eq!(Value::Int(1).as_str(), None);
    }
}
