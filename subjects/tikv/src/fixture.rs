//! A [`Transport`] that serves fixture files by route, for the native tests and the bench.
//!
//! Layout of a scenario directory (any file missing falls back to the next directory,
//! normally `fixtures/healthy`):
//! - `pd/<route>.json`: the body of `GET /pd/api/v1/<route>`, with `/` in the route written
//!   as `_` (`regions/check/miss-peer` → `pd/regions_check_miss-peer.json`), status 200.
//!   `pd/<route>.<status>.json` answers with that status instead.
//! - `prometheus.txt`: one line per series, `<query id> <k=v,k=v or -> <value>`; for a range
//!   query, `<query id> - <v1> <v2> ...` (points every `STEP_S`, the last at `end`). Query
//!   ids are those of `prom::INSTANT` and `prom::RANGE`.
//! - `logs/<component>.log`: what `tail(component)` returns.
//! - `unreachable`: hosts (`host:port`), one per line, that refuse connections.

use crate::prom;
use crate::transport::{FetchError, Method, Reply, Transport, decode};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// 2026-11-25T14:00:00Z: the "now" every fixture's timestamps are written against.
pub const NOW_MS: u64 = 1_795_615_200_000;

pub struct Fixture {
    pub dirs: Vec<PathBuf>,
    /// Writes received: (method, path, body).
    pub writes: RefCell<Vec<(Method, String, String)>>,
}

/// The crate's fixture directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

impl Fixture {
    /// `scenario`, falling back to `healthy`.
    pub fn scenario(name: &str) -> Fixture {
        let mut dirs = vec![root().join(name)];
        if name != "healthy" {
            dirs.push(root().join("healthy"));
        }
        Fixture {
            dirs,
            writes: RefCell::new(Vec::new()),
        }
    }

    fn find(&self, rel: &str) -> Option<PathBuf> {
        self.dirs.iter().map(|d| d.join(rel)).find(|p| p.exists())
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.find(rel)?).ok()
    }

    fn pd(&self, route: &str) -> Reply {
        let name = route.trim_matches('/').replace('/', "_");
        for dir in &self.dirs {
            let pd = dir.join("pd");
            if let Ok(body) = std::fs::read(pd.join(format!("{name}.json"))) {
                return Reply { status: 200, body };
            }
            if let Ok(entries) = std::fs::read_dir(&pd) {
                for e in entries.flatten() {
                    let file = e.file_name().to_string_lossy().into_owned();
                    if let Some(status) = file
                        .strip_prefix(&format!("{name}."))
                        .and_then(|r| r.strip_suffix(".json"))
                        .and_then(|s| s.parse::<u16>().ok())
                    {
                        return Reply {
                            status,
                            body: std::fs::read(e.path()).unwrap_or_default(),
                        };
                    }
                }
            }
        }
        Reply {
            status: 404,
            body: b"404 page not found".to_vec(),
        }
    }

    fn prometheus(&self, path: &str, query: &str) -> Reply {
        let params: Vec<(String, String)> = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect();
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let expr = get("query").unwrap_or("");
        let range = path.ends_with("query_range");
        let table = if range { prom::RANGE } else { prom::INSTANT };
        let Some(q) = table.iter().find(|q| q.expr == expr) else {
            let body = serde_json::json!({"status": "error", "errorType": "bad_data", "error": format!("fixture has no query `{expr}`")});
            return Reply {
                status: 400,
                body: body.to_string().into_bytes(),
            };
        };
        let text = self.read("prometheus.txt").unwrap_or_default();
        let end: f64 = get("end")
            .and_then(|e| e.parse().ok())
            .unwrap_or((NOW_MS / 1000) as f64);
        let mut result = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut parts = line.split_whitespace();
            if parts.next() != Some(q.id) {
                continue;
            }
            let labels: serde_json::Map<String, serde_json::Value> = match parts.next() {
                Some("-") | None => serde_json::Map::new(),
                Some(l) => l
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
                    .collect(),
            };
            let values: Vec<&str> = parts.collect();
            if range {
                let n = values.len();
                let points: Vec<serde_json::Value> = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        serde_json::json!([end - ((n - 1 - i) as u64 * prom::STEP_S) as f64, v])
                    })
                    .collect();
                result.push(serde_json::json!({"metric": labels, "values": points}));
            } else if let Some(v) = values.first() {
                result.push(serde_json::json!({"metric": labels, "value": [end, v]}));
            }
        }
        let kind = if range { "matrix" } else { "vector" };
        let body = serde_json::json!({"status": "success", "data": {"resultType": kind, "result": result}});
        Reply {
            status: 200,
            body: body.to_string().into_bytes(),
        }
    }
}

/// Splits `http://host:port/path?query` into (host:port, path, query).
pub fn split_url(url: &str) -> (&str, &str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (host, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    (host, path, query)
}

impl Transport for Fixture {
    fn send(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Result<Reply, FetchError> {
        let (host, path, query) = split_url(url);
        if self
            .read("unreachable")
            .is_some_and(|t| t.lines().any(|l| l.trim() == host))
        {
            return Err(FetchError::Unreachable(format!(
                "{host}: connection refused"
            )));
        }
        if method != Method::Get {
            self.writes.borrow_mut().push((
                method,
                path.to_string(),
                String::from_utf8_lossy(&body.unwrap_or_default()).into_owned(),
            ));
            let route = path.trim_start_matches(crate::pd::PREFIX);
            let name = format!(
                "{}_{}",
                method.as_str().to_ascii_lowercase(),
                route.trim_matches('/').replace('/', "_")
            );
            let mut reply = self.pd(&name);
            if reply.status == 404 {
                reply = Reply {
                    status: 200,
                    body: br#""The operator is created.""#.to_vec(),
                };
            }
            return Ok(reply);
        }
        if let Some(route) = path.strip_prefix(crate::pd::PREFIX) {
            return Ok(self.pd(route));
        }
        if path.starts_with("/api/v1/query") {
            return Ok(self.prometheus(path, query));
        }
        Ok(Reply {
            status: 404,
            body: b"404 page not found".to_vec(),
        })
    }

    fn tail(&self, component: &str, lines: u32) -> Result<Vec<String>, String> {
        let text = self
            .read(&format!("logs/{component}.log"))
            .ok_or_else(|| format!("no log source configured for `{component}`"))?;
        let all: Vec<String> = text.lines().map(String::from).collect();
        let skip = all.len().saturating_sub(lines as usize);
        Ok(all.into_iter().skip(skip).collect())
    }
}
