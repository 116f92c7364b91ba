//! PD's HTTP API (`/pd/api/v1`): the JSON shapes this plugin reads, and the decoding rules
//! that real PD versions need (omitted zero values, size strings with or without a space,
//! Go duration strings, errors as JSON strings, `null` where a list is expected).

use crate::transport::{FetchError, Method, Reply, Transport, join};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

pub const PREFIX: &str = "/pd/api/v1";

/// Why a PD route gave no usable answer.
#[derive(Debug, Clone, PartialEq)]
pub enum PdError {
    /// Nothing answered on any configured PD URL.
    Transport(FetchError),
    /// 500 `ErrNotBootstrapped`: PD runs, but no TiKV has joined yet.
    NotBootstrapped(String),
    /// 404, or 200 with `null` (how v7.5 says "no such region").
    NotFound(String),
    /// Any other non-2xx, with PD's error code when the body carried one.
    Status {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// A 2xx whose body is not the JSON shape expected.
    Malformed(String),
}

impl fmt::Display for PdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PdError::Transport(e) => write!(f, "{e}"),
            PdError::NotBootstrapped(m) => write!(f, "cluster not bootstrapped: {m}"),
            PdError::NotFound(m) => write!(f, "not found: {m}"),
            PdError::Status {
                status,
                code: Some(code),
                message,
            } => {
                write!(f, "HTTP {status} [{code}] {message}")
            }
            PdError::Status {
                status,
                code: None,
                message,
            } => write!(f, "HTTP {status}: {message}"),
            PdError::Malformed(m) => write!(f, "malformed JSON: {m}"),
        }
    }
}

/// Splits PD's error body: a JSON string (or, from some handlers, bare text) of the form
/// `[PD:<component>:<Name>]message`. Returns (code, message).
pub fn error_body(body: &[u8]) -> (Option<String>, String) {
    let text = match serde_json::from_slice::<String>(body) {
        Ok(s) => s,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let clipped: String = text.chars().take(300).collect();
    if let Some(rest) = clipped.strip_prefix('[')
        && let Some((code, message)) = rest.split_once(']')
        && code.starts_with("PD:")
    {
        return (Some(code.to_string()), message.trim().to_string());
    }
    (None, clipped)
}

/// Turns one PD answer into `T`, classifying errors the way PD reports them.
pub fn decode<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, PdError> {
    if !(200..300).contains(&reply.status) {
        let (code, message) = error_body(&reply.body);
        return Err(match (reply.status, code.as_deref()) {
            (_, Some(c)) if c.ends_with("ErrNotBootstrapped") => PdError::NotBootstrapped(message),
            (404, _) => PdError::NotFound(message),
            (status, _) => PdError::Status {
                status,
                code,
                message,
            },
        });
    }
    let trimmed = reply.body.trim_ascii();
    if trimmed == b"null" {
        return Err(PdError::NotFound("PD answered `null`".into()));
    }
    serde_json::from_slice(trimmed).map_err(|e| PdError::Malformed(e.to_string()))
}

/// Parses a PD size: `"465.6GiB"`, `"39 GiB"` (older PD), `"0B"`, `"1.5 TB"`, or a bare
/// number of bytes.
pub fn parse_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        "pib" => 1024f64.powi(5),
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "pb" | "p" => 1e15,
        _ => return None,
    };
    Some(value * mult)
}

/// Parses a Go duration string (`"30m0s"`, `"1h0m0s"`, `"1m10.12s"`, `"500ms"`) into seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    if s == "0" {
        return Some(0.0);
    }
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// A size field: a string with a unit, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Size(pub Option<f64>);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => parse_size(&s)
                .map(|v| Size(Some(v)))
                .ok_or_else(|| de::Error::custom(format!("bad size `{s}`"))),
            serde_json::Value::Number(n) => Ok(Size(n.as_f64())),
            serde_json::Value::Null => Ok(Size(None)),
            other => Err(de::Error::custom(format!("bad size {other}"))),
        }
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
pub struct Stores {
    #[serde(default)]
    pub count: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub stores: Vec<StoreEntry>,
}

#[derive(Debug, Deserialize)]
pub struct StoreEntry {
    pub store: StoreMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: StoreStatus,
}

#[derive(Debug, Deserialize, Default)]
pub struct Label {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// kvproto's `metapb.Store` as PD renders it. Zero values are omitted: an Up store has no
/// `state`, a Preparing store no `node_state`.
#[derive(Debug, Deserialize)]
pub struct StoreMeta {
    pub id: u64,
    #[serde(default)]
    pub address: String,
    /// 0 Up, 1 Offline, 2 Tombstone.
    #[serde(default)]
    pub state: i32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub status_address: String,
    /// Unix seconds.
    #[serde(default)]
    pub start_timestamp: i64,
    /// Unix nanoseconds.
    #[serde(default)]
    pub last_heartbeat: i64,
    /// 0 Preparing, 1 Serving, 2 Removing, 3 Removed.
    #[serde(default)]
    pub node_state: i32,
    /// Derived by PD: Up, Disconnected, Down, Offline, Tombstone.
    #[serde(default)]
    pub state_name: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct StoreStatus {
    #[serde(default)]
    pub capacity: Size,
    #[serde(default)]
    pub available: Size,
    #[serde(default)]
    pub used_size: Size,
    #[serde(default)]
    pub leader_count: u64,
    #[serde(default)]
    pub leader_weight: f64,
    #[serde(default)]
    pub region_count: u64,
    #[serde(default)]
    pub pending_peer_count: u64,
    #[serde(default)]
    pub slow_score: f64,
    #[serde(default)]
    pub sending_snap_count: u64,
    #[serde(default)]
    pub receiving_snap_count: u64,
    #[serde(default)]
    pub is_busy: bool,
    #[serde(default)]
    pub last_heartbeat_ts: Option<String>,
    #[serde(default)]
    pub uptime: Option<String>,
}

impl StoreMeta {
    /// The state name, derived from `state` when an old PD leaves it out.
    pub fn state_name(&self) -> &str {
        if !self.state_name.is_empty() {
            return &self.state_name;
        }
        match self.state {
            0 => "Up",
            1 => "Offline",
            2 => "Tombstone",
            _ => "Unknown",
        }
    }

    pub fn node_state_name(&self) -> &'static str {
        match self.node_state {
            0 => "Preparing",
            1 => "Serving",
            2 => "Removing",
            3 => "Removed",
            _ => "Unknown",
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct Header {
    #[serde(default)]
    pub cluster_id: u64,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct Member {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub member_id: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_urls: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub peer_urls: Vec<String>,
    #[serde(default)]
    pub binary_version: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct Members {
    #[serde(default, deserialize_with = "null_as_default")]
    pub header: Header,
    #[serde(default, deserialize_with = "null_as_default")]
    pub members: Vec<Member>,
    #[serde(default)]
    pub leader: Option<Member>,
    #[serde(default)]
    pub etcd_leader: Option<Member>,
}

#[derive(Debug, Deserialize)]
pub struct Health {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub member_id: u64,
    #[serde(default)]
    pub health: bool,
}

#[derive(Debug, Deserialize)]
pub struct ClusterStatus {
    #[serde(default)]
    pub raft_bootstrap_time: Option<String>,
    #[serde(default)]
    pub is_initialized: bool,
}

impl ClusterStatus {
    /// PD renders an unset bootstrap time as Go's zero time.
    pub fn bootstrapped(&self) -> bool {
        self.raft_bootstrap_time
            .as_deref()
            .is_some_and(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
    }
}

/// The two `/config` values this plugin uses, read out of PD's kebab-case document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigView {
    pub max_store_down_time_s: Option<f64>,
    pub max_replicas: Option<u64>,
    pub location_labels: String,
}

pub fn config_view(v: &serde_json::Value) -> ConfigView {
    let schedule = &v["schedule"];
    let replication = &v["replication"];
    let max_replicas = match &replication["max-replicas"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let location_labels = match &replication["location-labels"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    ConfigView {
        max_store_down_time_s: schedule["max-store-down-time"]
            .as_str()
            .and_then(parse_duration),
        max_replicas,
        location_labels,
    }
}

/// `{count, regions}` where only the count and the first few region ids are kept: a check
/// after a store failure can list thousands of regions, and none of their bodies matter here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegionCheck {
    pub count: u64,
    pub sample_ids: Vec<u64>,
}

/// Region ids kept per check, for evidence and actions.
pub const SAMPLE_IDS: usize = 5;

impl<'de> Deserialize<'de> for RegionCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RegionCheck, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RegionCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("{count, regions}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RegionCheck, A::Error> {
                let mut count = None;
                let mut listed = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "count" => count = Some(map.next_value::<u64>()?),
                        "regions" => listed = Some(map.next_value::<RegionIds>()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let listed = listed.unwrap_or_default();
                Ok(RegionCheck {
                    count: count.unwrap_or(listed.len).max(listed.len),
                    sample_ids: listed.ids,
                })
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Default)]
struct RegionIds {
    len: u64,
    ids: Vec<u64>,
}

#[derive(Deserialize)]
struct RegionIdOnly {
    #[serde(default)]
    id: u64,
}

impl<'de> Deserialize<'de> for RegionIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RegionIds, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RegionIds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of regions or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RegionIds, E> {
                Ok(RegionIds::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<RegionIds, E> {
                Ok(RegionIds::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RegionIds, D::Error> {
                d.deserialize_seq(V)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RegionIds, A::Error> {
                let mut out = RegionIds::default();
                loop {
                    if out.ids.len() < SAMPLE_IDS {
                        match seq.next_element::<RegionIdOnly>()? {
                            Some(r) => out.ids.push(r.id),
                            None => break,
                        }
                    } else if seq.next_element::<IgnoredAny>()?.is_none() {
                        break;
                    }
                    out.len += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_option(V)
    }
}

/// `{count, regions: null}` from `/regions/count`.
#[derive(Debug, Deserialize)]
pub struct RegionCount {
    #[serde(default)]
    pub count: u64,
}

/// The region states asked of `/regions/check/{state}` every tick, with the observation
/// metric label each one gets.
pub const REGION_CHECKS: &[&str] = &[
    "miss-peer",
    "extra-peer",
    "down-peer",
    "pending-peer",
    "offline-peer",
    "oversized-region",
];

/// `/hotspot/regions/{read,write}`.
#[derive(Debug, Deserialize, Default)]
pub struct Hotspots {
    #[serde(default, deserialize_with = "null_as_default")]
    pub as_peer: BTreeMap<String, HotStore>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub as_leader: BTreeMap<String, HotStore>,
}

#[derive(Debug, Deserialize, Default)]
pub struct HotStore {
    #[serde(default)]
    pub total_flow_bytes: f64,
    #[serde(default)]
    pub total_flow_keys: f64,
    #[serde(default)]
    pub total_flow_query: f64,
    #[serde(default)]
    pub regions_count: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub statistics: Vec<HotRegion>,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct HotRegion {
    #[serde(default)]
    pub store_id: u64,
    #[serde(default)]
    pub region_id: u64,
    #[serde(default)]
    pub hot_degree: i64,
    #[serde(default)]
    pub flow_bytes: f64,
    #[serde(default)]
    pub flow_keys: f64,
    #[serde(default)]
    pub flow_query: f64,
    #[serde(default)]
    pub is_leader: bool,
}

/// `GET /operators/{region_id}`: the fields worth reporting.
#[derive(Debug, Deserialize)]
pub struct OperatorStatus {
    #[serde(default)]
    pub status: Option<serde_json::Value>,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub region_id: Option<u64>,
}

/// PD, tried URL by URL: a URL that does not answer is skipped for the rest of the tick.
pub struct Client<'a> {
    pub t: &'a dyn Transport,
    pub urls: &'a [String],
    pub current: Cell<usize>,
}

impl Client<'_> {
    pub fn get(&self, path: &str) -> Result<Reply, PdError> {
        let mut last = None;
        for i in self.current.get()..self.urls.len() {
            let url = join(&self.urls[i], &format!("{}{path}", PREFIX));
            match self.t.get(&url) {
                Ok(r) => {
                    self.current.set(i);
                    return Ok(r);
                }
                Err(FetchError::Unreachable(m)) => last = Some(format!("{url}: {m}")),
                Err(e) => return Err(PdError::Transport(e)),
            }
        }
        self.current.set(self.urls.len());
        Err(PdError::Transport(FetchError::Unreachable(
            last.unwrap_or_else(|| "no PD endpoint left to try".into()),
        )))
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, PdError> {
        decode(&self.get(path)?)
    }

    pub fn exhausted(&self) -> bool {
        self.current.get() >= self.urls.len()
    }

    /// Sends a write (or any method) to the first PD that answers.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, PdError> {
        let mut last = None;
        for base in self.urls {
            let url = join(base, &format!("{PREFIX}{path}"));
            match self.t.send(method, &url, body.clone()) {
                Ok(r) => return Ok(r),
                Err(FetchError::Unreachable(m)) => last = Some(format!("{url}: {m}")),
                Err(e) => return Err(PdError::Transport(e)),
            }
        }
        Err(PdError::Transport(FetchError::Unreachable(
            last.unwrap_or_else(|| "no PD endpoint configured".into()),
        )))
    }
}

impl<'a> Client<'a> {
    pub fn new(t: &'a dyn Transport, urls: &'a [String]) -> Client<'a> {
        Client {
            t,
            urls,
            current: Cell::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_a_space() {
        assert_eq!(parse_size("465.6GiB"), Some(465.6 * 1024f64.powi(3)));
        assert_eq!(parse_size("39 GiB"), Some(39.0 * 1024f64.powi(3)));
        assert_eq!(parse_size("0B"), Some(0.0));
        assert_eq!(parse_size("512MiB"), Some(512.0 * 1024f64.powi(2)));
        assert_eq!(parse_size("1.5 TB"), Some(1.5e12));
        assert_eq!(parse_size("100KiB"), Some(102400.0));
        assert_eq!(parse_size("12345"), Some(12345.0));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("3 parsecs"), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("30m0s"), Some(1800.0));
        assert_eq!(parse_duration("1h0m0s"), Some(3600.0));
        assert!((parse_duration("1m10.12s").unwrap() - 70.12).abs() < 1e-9);
        assert_eq!(parse_duration("500ms"), Some(0.5));
        assert_eq!(parse_duration("0"), Some(0.0));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn error_bodies_as_json_strings_or_text() {
        let body = br#""[PD:cluster:ErrNotBootstrapped]TiKV cluster not bootstrapped, please start TiKV first""#;
        let (code, msg) = error_body(body);
        assert_eq!(code.as_deref(), Some("PD:cluster:ErrNotBootstrapped"));
        assert!(msg.starts_with("TiKV cluster not bootstrapped"));
        let reply = Reply {
            status: 500,
            body: body.to_vec(),
        };
        assert!(matches!(
            decode::<Stores>(&reply),
            Err(PdError::NotBootstrapped(_))
        ));
        let (code, msg) = error_body(b"region has no voter in store 4");
        assert_eq!(code, None);
        assert_eq!(msg, "region has no voter in store 4");
        let reply = Reply {
            status: 200,
            body: b"null".to_vec(),
        };
        assert!(matches!(
            decode::<Stores>(&reply),
            Err(PdError::NotFound(_))
        ));
        let reply = Reply {
            status: 404,
            body: br#""[PD:core:ErrStoreNotFound]store 9 not found""#.to_vec(),
        };
        assert!(matches!(
            decode::<Stores>(&reply),
            Err(PdError::NotFound(_))
        ));
        let reply = Reply {
            status: 200,
            body: b"{\"count\": 3, \"stores\": [".to_vec(),
        };
        let err = decode::<Stores>(&reply).unwrap_err();
        assert!(matches!(err, PdError::Malformed(_)), "{err}");
    }

    #[test]
    fn region_check_keeps_count_and_a_sample() {
        let body = br#"{"count":7,"regions":[{"id":11,"peers":[{"id":12,"store_id":1}]},{"id":13},{"id":14},{"id":15},{"id":16},{"id":17},{"id":18}]}"#;
        let c: RegionCheck = serde_json::from_slice(body).unwrap();
        assert_eq!(c.count, 7);
        assert_eq!(c.sample_ids, vec![11, 13, 14, 15, 16]);
        let c: RegionCheck = serde_json::from_slice(br#"{"count":0,"regions":null}"#).unwrap();
        assert_eq!(c, RegionCheck::default());
        // No count (some versions): the list length.
        let c: RegionCheck = serde_json::from_slice(br#"{"regions":[{"id":1},{"id":2}]}"#).unwrap();
        assert_eq!(c.count, 2);
    }

    #[test]
    fn omitted_zero_values_mean_up_and_preparing() {
        let s: Stores = serde_json::from_str(
            r#"{"count":1,"stores":[{"store":{"id":1,"address":"tikv1:20160","last_heartbeat":1},"status":{"capacity":"10GiB","available":"1 GiB"}}]}"#,
        )
        .unwrap();
        let e = &s.stores[0];
        assert_eq!(e.store.state_name(), "Up");
        assert_eq!(e.store.node_state_name(), "Preparing");
        assert_eq!(e.status.leader_count, 0);
        assert_eq!(e.status.available.0, Some(1024f64.powi(3)));
    }
}
