//! TiKV's and PD's unified log format:
//! `[2026/11/25 13:52:01.123 +00:00] [INFO] [raft.rs:1550] ["became leader at term 7"] [term=7] [raft_id=5] [region_id=3] [thread_id=12]`.
//! A message, key or value is JSON-quoted only when it needs to be; since v7.5 every line
//! ends with `[thread_id=N]`. Lines that do not fit are counted, never fatal.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_uppercase().as_str() {
            "TRACE" => Level::Trace,
            "DEBUG" => Level::Debug,
            "INFO" => Level::Info,
            "WARN" | "WARNING" => Level::Warn,
            "ERROR" => Level::Error,
            "FATAL" | "CRITICAL" | "PANIC" => Level::Fatal,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Unix milliseconds, from the line's own timestamp.
    pub timestamp_ms: u64,
    pub level: Level,
    /// `raft.rs:1550`, `cluster.go:123`, or `<unknown>`.
    pub source: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_spaces(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// A JSON string starting at the cursor (which is on the opening quote).
    fn quoted(&mut self) -> Result<String, ParseError> {
        let rest = self.rest();
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    let lit = &rest[..=i];
                    let s: String = serde_json::from_str(lit)
                        .map_err(|e| ParseError(format!("bad quoted text: {e}")))?;
                    self.pos += i + 1;
                    return Ok(s);
                }
                _ => {}
            }
        }
        Err(ParseError("unterminated quoted text".into()))
    }

    /// Bare text up to (not including) one of `stops`.
    fn bare(&mut self, stops: &[char]) -> &'a str {
        let rest = self.rest();
        let end = rest.find(|c| stops.contains(&c)).unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }

    /// `[...]` holding bare or quoted text.
    fn token(&mut self) -> Result<String, ParseError> {
        self.skip_spaces();
        if !self.eat('[') {
            return Err(ParseError(format!("expected `[` at byte {}", self.pos)));
        }
        let v = if self.rest().starts_with('"') {
            self.quoted()?
        } else {
            self.bare(&[']']).to_string()
        };
        if !self.eat(']') {
            return Err(ParseError(format!("expected `]` at byte {}", self.pos)));
        }
        Ok(v)
    }

    /// `[key=value]` with key and value each bare or quoted.
    fn field(&mut self) -> Result<(String, String), ParseError> {
        self.skip_spaces();
        if !self.eat('[') {
            return Err(ParseError(format!("expected `[` at byte {}", self.pos)));
        }
        let key = if self.rest().starts_with('"') {
            self.quoted()?
        } else {
            self.bare(&['=', ']']).to_string()
        };
        if !self.eat('=') {
            return Err(ParseError(format!("field `{key}` without `=`")));
        }
        let value = if self.rest().starts_with('"') {
            self.quoted()?
        } else {
            self.bare(&[']']).to_string()
        };
        if !self.eat(']') {
            return Err(ParseError(format!("field `{key}` not closed")));
        }
        Ok((key, value))
    }
}

/// Parses one line of the unified format.
pub fn parse_line(line: &str) -> Result<LogLine, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut c = Cursor { s: line, pos: 0 };
    let ts = c.token()?;
    let timestamp_ms =
        parse_timestamp(&ts).ok_or_else(|| ParseError(format!("bad timestamp `{ts}`")))?;
    let level_text = c.token()?;
    let level =
        Level::parse(&level_text).ok_or_else(|| ParseError(format!("bad level `{level_text}`")))?;
    let source = c.token()?;
    let message = c.token()?;
    let mut fields = Vec::new();
    loop {
        c.skip_spaces();
        if c.rest().is_empty() {
            break;
        }
        fields.push(c.field()?);
    }
    Ok(LogLine {
        timestamp_ms,
        level,
        source,
        message,
        fields,
    })
}

/// `2026/11/25 13:52:01.123 +08:00` (or `-05:00`, or without milliseconds) to Unix ms.
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let mut parts = s.split_whitespace();
    let date = parts.next()?;
    let time = parts.next()?;
    let zone = parts.next().unwrap_or("+00:00");
    let mut d = date.split('/');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if h > 23 || mi > 59 || se > 60 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    let (sign, zone) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let (zh, zm) = zone.split_once(':')?;
    let offset_s = sign * (zh.parse::<i64>().ok()? * 3600 + zm.parse::<i64>().ok()? * 60);
    let days = days_from_civil(y, mo, da);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    u64::try_from(secs * 1000 + ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a line means for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// A Raft election step (raft-rs), or PD noticing a region's leader changed.
    Election,
    Snapshot,
    /// Work slower than TiKV's slow-log threshold (`takes=`), or a coprocessor slow-query.
    Slow,
    /// Store heartbeats or the PD connection failing.
    Heartbeat,
    /// PD reporting a store state change.
    StoreState,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Election => "election",
            EventKind::Snapshot => "snapshot",
            EventKind::Slow => "slow",
            EventKind::Heartbeat => "heartbeat",
            EventKind::StoreState => "store-state",
        }
    }
}

const ELECTION: &[&str] = &[
    "starting a new election",
    "became pre-candidate",
    "became candidate",
    "became leader",
    "became follower",
    "leader changed",
];
const HEARTBEAT: &[&str] = &[
    "store heartbeat failed",
    "try reconnect pd",
    "connect pd failed",
    "failed to connect to pd",
    "region heartbeat failed",
];

/// The kind of a parsed line, if it is one the subject cares about.
pub fn classify(l: &LogLine) -> Option<EventKind> {
    let m = l.message.as_str();
    if ELECTION.iter().any(|p| m.contains(p)) {
        return Some(EventKind::Election);
    }
    if HEARTBEAT.iter().any(|p| m.contains(p)) {
        return Some(EventKind::Heartbeat);
    }
    if m.contains("snapshot") || m.contains("send snap") {
        return Some(EventKind::Snapshot);
    }
    if m.contains("slow-query")
        || m.contains("slow query")
        || (l.level >= Level::Warn && l.field("takes").is_some())
    {
        return Some(EventKind::Slow);
    }
    if m.starts_with("store has been") || m.contains("store is disconnected") {
        return Some(EventKind::StoreState);
    }
    None
}

/// Milliseconds from a `takes` or `total_process_time` value: a bare number is ms, a
/// Rust/Go duration (`1.2s`, `350ms`, `15µs`) is converted.
pub fn millis(value: &str) -> Option<f64> {
    let v = value.trim();
    if let Ok(n) = v.parse::<f64>() {
        return Some(n);
    }
    // Rounded to the microsecond: `350ms` must read as 350, not 350.00000000000006.
    crate::pd::parse_duration(v).map(|s| (s * 1e6).round() / 1e3)
}

/// The fields worth carrying into an event; the rest (thread ids, peers) is noise.
pub const KEPT_FIELDS: &[&str] = &[
    "region_id",
    "region-id",
    "term",
    "raft_id",
    "peer_id",
    "store_id",
    "store-id",
    "to_store",
    "from",
    "to",
    "takes",
    "total_process_time",
    "size",
    "duration",
    "err",
    "error",
];

/// A whole tail: classified lines in order, and the count of lines that did not parse.
#[derive(Debug, Default)]
pub struct Parsed {
    pub lines: usize,
    pub garbage: usize,
    pub events: Vec<(EventKind, LogLine)>,
}

pub fn parse_all<S: AsRef<str>>(lines: &[S]) -> Parsed {
    let mut out = Parsed::default();
    for raw in lines {
        let raw = raw.as_ref();
        if raw.trim().is_empty() {
            continue;
        }
        out.lines += 1;
        match parse_line(raw) {
            Ok(l) => {
                if let Some(kind) = classify(&l) {
                    out.events.push((kind, l));
                }
            }
            Err(_) => out.garbage += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_message_fields_and_thread_id() {
        let l = parse_line(r#"[2026/11/25 13:52:01.123 +00:00] [INFO] [raft.rs:1550] ["became leader at term 7"] [term=7] [raft_id=5] [region_id=3] [thread_id=12]"#).unwrap();
        assert_eq!(l.level, Level::Info);
        assert_eq!(l.source, "raft.rs:1550");
        assert_eq!(l.message, "became leader at term 7");
        assert_eq!(l.field("region_id"), Some("3"));
        assert_eq!(l.field("thread_id"), Some("12"));
        assert_eq!(l.timestamp_ms, 1_795_614_721_123);
        assert_eq!(classify(&l), Some(EventKind::Election));
    }

    #[test]
    fn bare_message_without_thread_id_and_a_zone_offset() {
        let l = parse_line("[2026/11/25 21:52:01.123 +08:00] [WARN] [store.rs:120] [slow-query] [region_id=9] [total_process_time=1.5s]").unwrap();
        assert_eq!(l.message, "slow-query");
        assert_eq!(
            l.timestamp_ms, 1_795_614_721_123,
            "+08:00 is 8 h ahead of UTC"
        );
        assert_eq!(classify(&l), Some(EventKind::Slow));
        assert_eq!(millis(l.field("total_process_time").unwrap()), Some(1500.0));
    }

    #[test]
    fn quoted_values_with_brackets_equals_and_escapes() {
        let l = parse_line(r#"[2026/11/25 13:52:01.123 -05:00] [ERROR] [util.rs:88] ["connect pd failed"] [endpoints=http://pd1:2379] [err="Grpc(RpcFailure(RpcStatus { code: 14-UNAVAILABLE, message: \"failed to connect [all] = \\\"x\\\"\" }))"] [thread_id=3]"#).unwrap();
        assert_eq!(l.level, Level::Error);
        assert!(
            l.field("err")
                .unwrap()
                .contains("failed to connect [all] = \\\"x\\\"")
        );
        assert_eq!(classify(&l), Some(EventKind::Heartbeat));
        let l =
            parse_line(r#"[2026/11/25 13:52:01 +00:00] [INFO] [x.rs:1] [msg] ["quoted key"=v]"#)
                .unwrap();
        assert_eq!(l.field("quoted key"), Some("v"));
        assert_eq!(l.timestamp_ms % 1000, 0);
    }

    #[test]
    fn slow_work_by_takes_and_pd_lines() {
        let l = parse_line(r#"[2026/11/25 13:52:01.123 +00:00] [WARN] [peer.rs:2000] ["[region 2] 3 handle ready 1200 committed entries"] [takes=1834] [thread_id=40]"#).unwrap();
        assert_eq!(classify(&l), Some(EventKind::Slow));
        assert_eq!(millis("1834"), Some(1834.0));
        assert_eq!(millis("350ms"), Some(350.0));
        let l = parse_line(r#"[2026/11/25 13:52:01.123 +00:00] [INFO] [region.go:512] ["leader changed"] [region-id=42] [from=1] [to=4]"#).unwrap();
        assert_eq!(classify(&l), Some(EventKind::Election));
        let l = parse_line(r#"[2026/11/25 13:52:01.123 +00:00] [WARN] [cluster.go:1450] ["store has been offline"] [store-id=4] [store-address=tikv4:20160]"#).unwrap();
        assert_eq!(classify(&l), Some(EventKind::StoreState));
        let l = parse_line(r#"[2026/11/25 13:52:01.123 +00:00] [INFO] [snap.rs:300] ["begin to apply snapshot"] [region_id=8] [thread_id=9]"#).unwrap();
        assert_eq!(classify(&l), Some(EventKind::Snapshot));
        let l = parse_line(
            r#"[2026/11/25 13:52:01.123 +00:00] [INFO] [server.rs:10] [Welcome] [version=8.5.0]"#,
        )
        .unwrap();
        assert_eq!(classify(&l), None);
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let lines = [
            "thread 'raftstore-1' panicked at 'oops', src/x.rs:1",
            "",
            "[2026/11/25 13:52:01.123 +00:00] [INFO] [raft.rs:1] [\"became follower at term 3\"",
            "[not a date] [INFO] [a.rs:1] [m]",
            "[2026/13/25 13:52:01.123 +00:00] [INFO] [a.rs:1] [m]",
            "[2026/11/25 13:52:01.123 +00:00] [NOTICE] [a.rs:1] [m]",
            "[2026/11/25 13:52:01.123 +00:00] [INFO] [a.rs:1] [m] [novalue]",
            "[2026/11/25 13:52:01.123 +00:00] [INFO] [a.rs:1] [\"unterminated] [x=1]",
            "\u{0}\u{1}binary junk ]]]][[[",
            "[2026/11/25 13:52:01.123 +00:00] [WARN] [pd.rs:77] [\"store heartbeat failed\"] [err=timeout] [thread_id=2]",
        ];
        let p = parse_all(&lines);
        assert_eq!(p.lines, 9);
        assert_eq!(p.garbage, 8);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].0, EventKind::Heartbeat);
    }
}
