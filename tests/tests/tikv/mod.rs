//! Shared by the tikv end-to-end tests: a small HTTP server on std's TcpListener that serves
//! the subject's fixture files by route (PD and Prometheus, the layout of
//! subjects/tikv/fixtures), log files re-timed to now, and `operator observe`.

#![allow(dead_code)]

use operator_tests::processes::workspace_bin;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// 2026-11-25T14:00:00Z: what every fixture's timestamps are written against.
pub const FIXTURE_NOW_MS: i64 = 1_795_615_200_000;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixtures() -> PathBuf {
    repo().join("subjects/tikv/fixtures")
}

pub type Handler = dyn Fn(&str, &str, &str) -> (u16, Vec<u8>) + Send + Sync;

/// An HTTP/1.1 server answering one request per connection.
pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(handler: Box<Handler>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = serve_one(conn, &*handler);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes the listener: later connections are refused.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_one(mut conn: std::net::TcpStream, handler: &Handler) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("GET");
    let target = parts.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = handler(method, path, query);
    write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(&body)
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The plugin's PromQL table from subjects/tikv/README.md: (query id, expression).
pub fn plugin_queries() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo().join("subjects/tikv/README.md")).unwrap();
    readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            if cells.len() != 4
                || !(cells[1].starts_with("`tikv_")
                    || cells[1].starts_with("`pd_")
                    || cells[1] == "`up`")
            {
                return None;
            }
            let expr = cells[2].strip_prefix('`')?.strip_suffix('`')?;
            Some((cells[0].trim_matches('`').to_string(), expr.to_string()))
        })
        .collect()
}

/// The first of `dirs` holding `rel`.
fn find(dirs: &[PathBuf], rel: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(rel)).find(|p| p.exists())
}

/// Serves a fixture scenario (falling back to `healthy`) the way PD and Prometheus would.
pub fn fixture_handler(scenario: &str) -> Box<Handler> {
    let dirs = vec![fixtures().join(scenario), fixtures().join("healthy")];
    let queries = plugin_queries();
    Box::new(move |method, path, query| {
        if let Some(route) = path.strip_prefix("/pd/api/v1/") {
            let name = route.trim_matches('/').replace('/', "_");
            let name = if method == "GET" {
                name
            } else {
                format!("{}_{name}", method.to_ascii_lowercase())
            };
            for dir in &dirs {
                let pd = dir.join("pd");
                if let Ok(b) = std::fs::read(pd.join(format!("{name}.json"))) {
                    return (200, b);
                }
                for e in std::fs::read_dir(&pd).into_iter().flatten().flatten() {
                    let f = e.file_name().to_string_lossy().into_owned();
                    if let Some(code) = f
                        .strip_prefix(&format!("{name}."))
                        .and_then(|r| r.strip_suffix(".json"))
                        .and_then(|c| c.parse().ok())
                    {
                        return (code, std::fs::read(e.path()).unwrap());
                    }
                }
            }
            return (404, b"404 page not found".to_vec());
        }
        if path.starts_with("/api/v1/query") {
            let get = |k: &str| {
                query
                    .split('&')
                    .find_map(|p| p.strip_prefix(&format!("{k}=")))
                    .map(percent_decode)
            };
            let expr = get("query").unwrap_or_default();
            let Some((id, _)) = queries.iter().find(|(_, e)| *e == expr) else {
                return (
                    400,
                    br#"{"status":"error","errorType":"bad_data","error":"unknown query"}"#
                        .to_vec(),
                );
            };
            let range = path.ends_with("query_range");
            let end: f64 = get("end").and_then(|e| e.parse().ok()).unwrap_or(0.0);
            let text = find(&dirs, "prometheus.txt")
                .map(|p| std::fs::read_to_string(p).unwrap())
                .unwrap_or_default();
            let mut result = Vec::new();
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let mut parts = line.split_whitespace();
                if parts.next() != Some(id.as_str()) {
                    continue;
                }
                let labels: serde_json::Map<String, Value> = match parts.next() {
                    Some("-") | None => serde_json::Map::new(),
                    Some(l) => l
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), Value::String(v.into())))
                        .collect(),
                };
                let values: Vec<&str> = parts.collect();
                if range {
                    let n = values.len();
                    let pts: Vec<Value> = values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| serde_json::json!([end - ((n - 1 - i) * 30) as f64, v]))
                        .collect();
                    result.push(serde_json::json!({"metric": labels, "values": pts}));
                } else if let Some(v) = values.first() {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64();
                    result.push(serde_json::json!({"metric": labels, "value": [now, v]}));
                }
            }
            let kind = if range { "matrix" } else { "vector" };
            return (200, serde_json::json!({"status": "success", "data": {"resultType": kind, "result": result}}).to_string().into_bytes());
        }
        (404, b"404 page not found".to_vec())
    })
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A log line's `[YYYY/MM/DD HH:MM:SS.mmm +00:00]` moved by `delta_ms` (UTC fixtures only).
pub fn shift_line(line: &str, delta_ms: i64) -> String {
    let parse = || -> Option<(i64, usize)> {
        let s = line.get(1..24)?;
        if !line.starts_with('[') || line.get(24..32)? != " +00:00]" {
            return None;
        }
        let n = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
        let days = days_from_civil(n(0, 4)?, n(5, 7)?, n(8, 10)?);
        Some((
            ((days * 24 + n(11, 13)?) * 60 + n(14, 16)?) * 60_000 + n(17, 19)? * 1000 + n(20, 23)?,
            32,
        ))
    };
    let Some((ms, end)) = parse() else {
        return line.to_string();
    };
    let t = ms + delta_ms;
    let (y, m, d) = civil_from_days(t.div_euclid(86_400_000));
    let r = t.rem_euclid(86_400_000);
    format!(
        "[{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}.{:03} +00:00]{}",
        r / 3_600_000,
        r / 60_000 % 60,
        r / 1000 % 60,
        r % 1000,
        &line[end..]
    )
}

/// Copies a scenario's logs (with `healthy` fallback) into `dir`, re-timed so the fixture's
/// "now" is the real now. Returns `log.<component>=file:<path>` settings.
pub fn retimed_logs(scenario: &str, dir: &Path) -> Vec<String> {
    let delta = now_ms() - FIXTURE_NOW_MS;
    let mut out = Vec::new();
    for store in ["store-1", "store-4", "store-5"] {
        let rel = format!("logs/{store}.log");
        let Some(src) = find(
            &[fixtures().join(scenario), fixtures().join("healthy")],
            &rel,
        ) else {
            continue;
        };
        let text = std::fs::read_to_string(src).unwrap();
        let shifted: Vec<String> = text.lines().map(|l| shift_line(l, delta)).collect();
        let path = dir.join(format!("{store}.log"));
        std::fs::write(&path, shifted.join("\n") + "\n").unwrap();
        out.push(format!("log.{store}=file:{}", path.display()));
    }
    out
}

/// `operator observe --subject tikv --set ... --output json`, which must succeed.
pub fn observe(settings: &[String]) -> Value {
    let mut cmd = Command::new(workspace_bin("operator"));
    cmd.args(["observe", "--subject", "tikv", "--output", "json"]);
    for s in settings {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "operator observe {settings:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "operator printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn fired(v: &Value) -> std::collections::BTreeSet<String> {
    v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["invariant"].as_str().unwrap().to_string())
        .collect()
}

pub fn evidence<'a>(violation: &'a Value, key: &str) -> Option<&'a str> {
    violation["evidence"]
        .as_array()?
        .iter()
        .find(|e| e[0] == key)
        .and_then(|e| e[1].as_str())
}

#[test]
fn log_lines_move_to_now_and_back() {
    let line = "[2026/11/25 13:58:20.400 +00:00] [INFO] [raft.rs:1550] [\"became leader at term 8\"] [term=8]";
    let moved = shift_line(line, 86_400_000 + 3_600_000);
    assert_eq!(
        moved,
        "[2026/11/26 14:58:20.400 +00:00] [INFO] [raft.rs:1550] [\"became leader at term 8\"] [term=8]"
    );
    assert_eq!(shift_line(&moved, -(86_400_000 + 3_600_000)), line);
    assert_eq!(shift_line("garbage", 5), "garbage");
    assert_eq!(percent_decode("a%20b%7Bc%7D+d"), "a b{c} d");
}
