//! `operator:subject/redis`: read-only Redis commands, behind the same allowlist as HTTP.
//!
//! The host speaks RESP2 itself rather than through a client library, so that every reply
//! is counted while it is read: a reply over the byte or element cap is refused before it
//! is kept, and a server that trickles one byte a second cannot hold a command past its
//! timeout (the whole exchange, not each socket read, is bounded). Connections are pooled
//! per origin (host, port, database, user) with a cap on the total; a broken or timed-out
//! connection is dropped, never reused.

use crate::runtime::bindings::latest::operator::subject::redis::{Host, RedisError, RedisValue};
use crate::runtime::limits::RedisLimits;
use crate::runtime::state::{HostState, RecordedRequest};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use url::Url;

/// Commands that cannot change data, with the subcommands allowed for container commands.
/// `SELECT` is absent: a plugin reads the database its URL names. `CONFIG GET` is limited
/// to named, non-secret parameters (no patterns, no passwords).
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
    ("CLIENT", &["INFO"]),
    ("CONFIG", &["GET"]),
    ("SLOWLOG", &["GET", "LEN"]),
    ("LATENCY", &["LATEST", "HISTORY"]),
];

/// `CONFIG GET` parameters a subject may read.
const CONFIG_READABLE: &[&str] = &[
    "maxmemory",
    "maxmemory-policy",
    "maxclients",
    "timeout",
    "databases",
    "appendonly",
    "save",
    "hz",
    "lfu-log-factor",
    "lfu-decay-time",
];

/// Most arguments in one command.
const MAX_ARGS: usize = 1024;
/// Most entries `SLOWLOG GET` may ask for.
const MAX_SLOWLOG: u64 = 128;

/// Checks a command against the read-only policy and its bounds.
pub fn check_command(args: &[String], limits: &RedisLimits) -> Result<(), RedisError> {
    let name = args
        .first()
        .ok_or_else(|| RedisError::Other("empty command".into()))?
        .to_ascii_uppercase();
    if args.len() > MAX_ARGS {
        return Err(RedisError::Denied(format!(
            "{name} with {} arguments refused (at most {MAX_ARGS})",
            args.len()
        )));
    }
    let Some((_, subs)) = READ_ONLY.iter().find(|(n, _)| *n == name) else {
        return Err(RedisError::Denied(format!(
            "{name} is not a read-only command; the redis capability only reads"
        )));
    };
    let sub = args
        .get(1)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    if !subs.is_empty() && !subs.contains(&sub.as_str()) {
        return Err(RedisError::Denied(format!(
            "{name} {sub} is not allowed; only {name} {} are",
            subs.join("/")
        )));
    }
    match name.as_str() {
        "SCAN" | "HSCAN" | "SSCAN" | "ZSCAN" => {
            let mut it = args.iter().skip(1);
            while let Some(a) = it.next() {
                if a.eq_ignore_ascii_case("COUNT") {
                    let n: u64 = it.next().and_then(|c| c.parse().ok()).ok_or_else(|| {
                        RedisError::Other(format!("{name}: COUNT needs a number"))
                    })?;
                    if n > limits.max_scan_count {
                        return Err(RedisError::Denied(format!(
                            "{name} COUNT {n} refused: at most {} per call, it blocks the server",
                            limits.max_scan_count
                        )));
                    }
                }
            }
        }
        "CONFIG" => {
            for p in &args[2..] {
                if !CONFIG_READABLE.contains(&p.to_ascii_lowercase().as_str()) {
                    return Err(RedisError::Denied(format!(
                        "CONFIG GET {p} refused: only {} may be read",
                        CONFIG_READABLE.join(", ")
                    )));
                }
            }
        }
        "SLOWLOG" if sub == "GET" => {
            let n: u64 = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(10);
            if n > MAX_SLOWLOG {
                return Err(RedisError::Denied(format!(
                    "SLOWLOG GET {n} refused: at most {MAX_SLOWLOG}"
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Where a connection goes: the pool key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub user: Option<String>,
    password: Option<String>,
}

impl Target {
    pub fn parse(url: &Url) -> Result<Target, RedisError> {
        match url.scheme() {
            "redis" => {}
            "rediss" => {
                return Err(RedisError::Other(
                    "rediss:// (TLS) is not supported by the redis capability; use redis://".into(),
                ));
            }
            other => {
                return Err(RedisError::Other(format!(
                    "`{url}` is not a redis:// URL (scheme {other})"
                )));
            }
        }
        let host = url
            .host_str()
            .ok_or_else(|| RedisError::Other(format!("`{url}` has no host")))?
            .to_string();
        let db = match url.path().trim_matches('/') {
            "" => 0,
            p => p.parse().map_err(|_| {
                RedisError::Other(format!("`{url}`: database `{p}` is not a number"))
            })?,
        };
        let user = Some(url.username().to_string()).filter(|u| !u.is_empty());
        Ok(Target {
            host,
            port: url.port().unwrap_or(6379),
            db,
            user,
            password: url.password().map(String::from),
        })
    }
}

struct Conn {
    target: Target,
    stream: BufReader<TcpStream>,
}

/// Idle connections, oldest first, at most `max` of them across all targets.
pub struct RedisPool {
    idle: Mutex<VecDeque<Conn>>,
    max: usize,
}

impl RedisPool {
    pub fn new(max: usize) -> RedisPool {
        RedisPool {
            idle: Mutex::new(VecDeque::new()),
            max: max.max(1),
        }
    }

    fn take(&self, target: &Target) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let i = idle.iter().position(|c| &c.target == target)?;
        idle.remove(i)
    }

    /// Called before opening a new connection: while the pool is full, the oldest idle
    /// connection is closed first, so idle plus the one about to open stay within `max`.
    fn make_room(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            while idle.len() >= self.max {
                idle.pop_front();
            }
        }
    }

    fn put(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() >= self.max {
                // Bounded: the oldest idle connection goes first.
                idle.pop_front();
            }
            idle.push_back(conn);
        }
    }

    /// Idle connections now held, for tests.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

fn encode(args: &[String]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one RESP2 reply, flattened in pre-order, refusing it once it passes the caps.
pub struct ReplyReader {
    max_bytes: usize,
    max_elements: usize,
    bytes: usize,
    elements: usize,
}

#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    Protocol(String),
    TooLarge(String),
    Server(String),
}

impl ReplyReader {
    pub fn new(limits: &RedisLimits) -> ReplyReader {
        ReplyReader {
            max_bytes: limits.max_reply_bytes,
            max_elements: limits.max_reply_elements,
            bytes: 0,
            elements: 0,
        }
    }

    fn count(&mut self, bytes: usize) -> Result<(), ReadError> {
        self.bytes += bytes;
        self.elements += 1;
        if self.bytes > self.max_bytes {
            return Err(ReadError::TooLarge(format!(
                "reply over the host's cap of {} bytes",
                self.max_bytes
            )));
        }
        if self.elements > self.max_elements {
            return Err(ReadError::TooLarge(format!(
                "reply over the host's cap of {} elements",
                self.max_elements
            )));
        }
        Ok(())
    }

    async fn line<R: AsyncBufRead + Unpin>(&mut self, r: &mut R) -> Result<String, ReadError> {
        // A line header is short; a server that sends an endless one is cut at 64 KiB.
        let mut buf = Vec::new();
        let mut limited = r.take(64 * 1024);
        limited
            .read_until(b'\n', &mut buf)
            .await
            .map_err(ReadError::Io)?;
        if buf.is_empty() {
            // The server closed the connection (a restart, an idle timeout).
            return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if !buf.ends_with(b"\r\n") {
            return Err(ReadError::Protocol("unterminated reply line".into()));
        }
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).map_err(|_| ReadError::Protocol("reply line is not UTF-8".into()))
    }

    /// Reads a whole reply into `out`. Arrays are iterated, not recursed, so a deeply
    /// nested reply cannot exhaust the host's stack.
    pub async fn read<R: AsyncBufRead + Unpin>(
        &mut self,
        r: &mut R,
        out: &mut Vec<RedisValue>,
    ) -> Result<(), ReadError> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let line = self.line(r).await?;
            self.count(line.len() + 2)?;
            let (kind, rest) = line.split_at(line.len().min(1));
            let number = || -> Result<i64, ReadError> {
                rest.parse()
                    .map_err(|_| ReadError::Protocol(format!("bad number in `{line}`")))
            };
            match kind {
                "+" => out.push(RedisValue::Status(rest.to_string())),
                "-" => return Err(ReadError::Server(rest.to_string())),
                ":" => out.push(RedisValue::Int(number()?)),
                "$" => {
                    let n = number()?;
                    if n < 0 {
                        out.push(RedisValue::Nil);
                        continue;
                    }
                    let n = n as usize;
                    if self.bytes + n > self.max_bytes {
                        return Err(ReadError::TooLarge(format!(
                            "reply over the host's cap of {} bytes",
                            self.max_bytes
                        )));
                    }
                    let mut data = vec![0; n + 2];
                    r.read_exact(&mut data).await.map_err(ReadError::Io)?;
                    self.bytes += n;
                    data.truncate(n);
                    out.push(RedisValue::Bulk(data));
                }
                "*" => {
                    let n = number()?;
                    if n < 0 {
                        out.push(RedisValue::Nil);
                        continue;
                    }
                    if self.elements as u64 + n as u64 > self.max_elements as u64 {
                        return Err(ReadError::TooLarge(format!(
                            "reply over the host's cap of {} elements",
                            self.max_elements
                        )));
                    }
                    out.push(RedisValue::Array(n as u32));
                    pending += n as u64;
                }
                _ => return Err(ReadError::Protocol(format!("unknown reply type `{line}`"))),
            }
        }
        Ok(())
    }
}

fn io_error(e: ReadError) -> RedisError {
    match e {
        ReadError::Io(e) => RedisError::Connect(e.to_string()),
        ReadError::Protocol(m) => RedisError::Other(format!("protocol error: {m}")),
        ReadError::TooLarge(m) => RedisError::Other(m),
        ReadError::Server(m) => RedisError::Server(m),
    }
}

async fn exchange(
    conn: &mut Conn,
    args: &[String],
    limits: &RedisLimits,
) -> Result<Vec<RedisValue>, ReadError> {
    conn.stream
        .get_mut()
        .write_all(&encode(args))
        .await
        .map_err(ReadError::Io)?;
    let mut out = Vec::new();
    ReplyReader::new(limits)
        .read(&mut conn.stream, &mut out)
        .await?;
    Ok(out)
}

async fn connect(target: &Target, limits: &RedisLimits) -> Result<Conn, RedisError> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| RedisError::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        target: target.clone(),
        stream: BufReader::new(stream),
    };
    if let Some(password) = &target.password {
        let mut auth = vec!["AUTH".to_string()];
        auth.extend(target.user.clone());
        auth.push(password.clone());
        exchange(&mut conn, &auth, limits).await.map_err(io_error)?;
    }
    if target.db != 0 {
        let select = vec!["SELECT".to_string(), target.db.to_string()];
        exchange(&mut conn, &select, limits)
            .await
            .map_err(io_error)?;
    }
    Ok(conn)
}

impl Host for HostState {
    async fn command(
        &mut self,
        url: String,
        args: Vec<String>,
    ) -> Result<Vec<RedisValue>, RedisError> {
        let limits = self.ctx.redis.limits;
        self.calls.redis_commands += 1;
        if self.calls.redis_commands > limits.max_commands_per_call {
            return Err(RedisError::Denied(format!(
                "command cap reached: at most {} Redis commands per call",
                limits.max_commands_per_call
            )));
        }
        check_command(&args, &limits)?;
        let parsed =
            Url::parse(&url).map_err(|e| RedisError::Other(format!("bad URL `{url}`: {e}")))?;
        let target = Target::parse(&parsed)?;
        self.ctx
            .redis
            .allowlist
            .check(&parsed)
            .map_err(RedisError::Denied)?;
        self.record(|| RecordedRequest::Redis {
            url: url.clone(),
            args: args.clone(),
        });
        let remaining = self.remaining().ok_or(RedisError::Timeout)?;
        let budget = remaining.min(limits.command_timeout);
        let ctx = self.ctx.clone();
        let run = async move {
            let mut conn = match ctx.redis.pool.take(&target) {
                Some(c) => c,
                None => {
                    ctx.redis.pool.make_room();
                    connect(&target, &limits).await?
                }
            };
            match exchange(&mut conn, &args, &limits).await {
                Ok(v) => {
                    ctx.redis.pool.put(conn);
                    Ok(v)
                }
                // An error reply leaves the connection in step: keep it.
                Err(ReadError::Server(m)) => {
                    ctx.redis.pool.put(conn);
                    Err(RedisError::Server(m))
                }
                // Anything else may leave unread bytes behind: drop it.
                Err(e) => Err(io_error(e)),
            }
        };
        match tokio::time::timeout(budget, run).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::limits::Limits;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn limits() -> RedisLimits {
        Limits::default().redis
    }

    #[test]
    fn only_bounded_reads_pass() {
        let l = limits();
        for ok in [
            &["get", "k"][..],
            &["SCAN", "0"],
            &["SCAN", "0", "MATCH", "rl:*", "COUNT", "1000"],
            &["config", "get", "maxmemory"],
            &["SLOWLOG", "GET", "10"],
        ] {
            assert!(check_command(&args(ok), &l).is_ok(), "{ok:?} must pass");
        }
        for bad in [
            &["SET", "k", "v"][..],
            &["DEL", "k"],
            &["FLUSHALL"],
            &["CONFIG", "SET", "x", "y"],
            &["CONFIG", "GET", "*"],
            &["CONFIG", "GET", "requirepass"],
            &["CLIENT", "KILL", "x"],
            &["CLIENT", "LIST"],
            &["EVAL", "return 1", "0"],
            &["SELECT", "1"],
            &["SCAN", "0", "COUNT", "1000000000"],
            &["SLOWLOG", "GET", "100000"],
        ] {
            assert!(
                matches!(check_command(&args(bad), &l), Err(RedisError::Denied(_))),
                "{bad:?} must be denied"
            );
        }
    }

    #[test]
    fn targets_key_the_pool_and_refuse_tls() {
        let t = Target::parse(&Url::parse("redis://u:p@127.0.0.1:7000/2").unwrap()).unwrap();
        assert_eq!((t.port, t.db, t.user.as_deref()), (7000, 2, Some("u")));
        let d = Target::parse(&Url::parse("redis://127.0.0.1").unwrap()).unwrap();
        assert_eq!(d.port, 6379, "the allowlist's default too");
        assert!(Target::parse(&Url::parse("rediss://127.0.0.1").unwrap()).is_err());
    }

    async fn parse(bytes: &[u8], l: &RedisLimits) -> Result<Vec<RedisValue>, ReadError> {
        let mut r = BufReader::new(bytes);
        let mut out = Vec::new();
        ReplyReader::new(l)
            .read(&mut r, &mut out)
            .await
            .map(|_| out)
    }

    #[tokio::test]
    async fn replies_are_flattened_and_capped_while_read() {
        let l = limits();
        let v = parse(b"*3\r\n$3\r\nabc\r\n:5\r\n*1\r\n$-1\r\n", &l)
            .await
            .unwrap();
        assert_eq!(v.len(), 5);
        assert!(matches!(v[0], RedisValue::Array(3)));
        assert!(matches!(&v[1], RedisValue::Bulk(b) if b == b"abc"));
        assert!(matches!(v[4], RedisValue::Nil));
        // A bulk announced over the cap is refused before any of it is read.
        let huge = format!("${}\r\n", 512 * 1024 * 1024);
        assert!(matches!(
            parse(huge.as_bytes(), &l).await,
            Err(ReadError::TooLarge(_))
        ));
        // So is an array announcing more elements than the cap.
        assert!(matches!(
            parse(b"*100000000\r\n", &l).await,
            Err(ReadError::TooLarge(_))
        ));
        assert!(matches!(
            parse(b"-ERR nope\r\n", &l).await,
            Err(ReadError::Server(m)) if m == "ERR nope"
        ));
    }
}
