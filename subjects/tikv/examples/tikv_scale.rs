//! The 100-store / 100,000-region scale case (issue 11).
//!
//! Builds a synthetic cluster in PD's and Prometheus's shapes (one store Down, so
//! `/regions/check/down-peer` lists every region that had a peer on it, 1% of regions with
//! a pending peer, hotspots on every store, 100 TiKV instances in every PromQL answer), then:
//! - `cargo run --release -p subject-tikv --features fixtures --example tikv-scale [REGIONS...]`: runs observe + check-invariants natively over an in-memory
//!   transport and prints time, peak heap and body sizes per region count;
//! - `tikv-scale --serve PORT REGIONS`: serves the same bodies over HTTP (PD and Prometheus
//!   routes on one port) so the real host can run the wasm plugin against it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use subject_tikv::fixture::{NOW_MS, split_url};
use subject_tikv::transport::{FetchError, Method, Reply, Transport, decode};
use subject_tikv::{invariants, observe, prom, settings::Settings};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

const STORES: u64 = 100;
const DOWN_STORE: u64 = 100;

fn region(
    id: u64,
    stores: [u64; 3],
    leader: u64,
    down: Option<u64>,
    pending: Option<u64>,
) -> serde_json::Value {
    let peers: Vec<serde_json::Value> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"id": id * 10 + i as u64, "store_id": s, "role_name": "Voter"}))
        .collect();
    let peer_on = |s: u64| {
        peers
            .iter()
            .find(|p| p["store_id"] == s)
            .cloned()
            .unwrap_or_default()
    };
    let mut r = serde_json::json!({
        "id": id,
        "start_key": format!("7480000000000000FF{:012X}5F728000000000FF", id),
        "end_key": format!("7480000000000000FF{:012X}5F728000000000FF", id + 1),
        "epoch": {"conf_ver": 5, "version": 60},
        "peers": peers,
        "leader": peer_on(leader),
        "written_bytes": 1024, "read_bytes": 0, "written_keys": 1, "read_keys": 0,
        "approximate_size": 84, "approximate_keys": 720000
    });
    if let Some(d) = down {
        r["down_peers"] = serde_json::json!([{"down_seconds": 1900, "peer": peer_on(d)}]);
    }
    if let Some(p) = pending {
        r["pending_peers"] = serde_json::json!([peer_on(p)]);
    }
    r
}

fn replicas(id: u64) -> [u64; 3] {
    let a = id % STORES + 1;
    [a, (a + 33) % STORES + 1, (a + 66) % STORES + 1]
}

/// Every route's body, keyed by path (PD) or by PromQL expression.
struct Cluster {
    pd: HashMap<String, Vec<u8>>,
    prom: HashMap<String, Vec<u8>>,
}

fn build(regions: u64) -> Cluster {
    let mut pd = HashMap::new();
    let now_s = NOW_MS / 1000;
    let per_store = regions * 3 / STORES;
    let stores: Vec<serde_json::Value> = (1..=STORES)
        .map(|id| {
            let down = id == DOWN_STORE;
            serde_json::json!({
                "store": {"id": id, "address": format!("tikv{id}:20160"), "version": "8.5.0",
                          "status_address": format!("tikv{id}:20180"), "start_timestamp": now_s - 15000,
                          "last_heartbeat": (now_s - if down { 1900 } else { 5 }) * 1_000_000_000, "node_state": 1,
                          "state_name": if down { "Down" } else { "Up" }},
                "status": {"capacity": "1.8TiB", "available": "1.1TiB", "used_size": "600GiB",
                           "leader_count": per_store / 3, "leader_weight": 1, "region_count": per_store, "region_weight": 1,
                           "slow_score": 1, "uptime": "4h9m55s"}
            })
        })
        .collect();
    let body = |v: serde_json::Value| serde_json::to_vec_pretty(&v).unwrap();
    pd.insert(
        "/stores".into(),
        body(serde_json::json!({"count": STORES, "stores": stores})),
    );
    let members: Vec<serde_json::Value> = (1..=3)
        .map(|i| serde_json::json!({"name": format!("pd{i}"), "member_id": i, "client_urls": [format!("http://pd{i}:2379")], "peer_urls": [format!("http://pd{i}:2380")]}))
        .collect();
    pd.insert("/members".into(), body(serde_json::json!({"header": {"cluster_id": 1}, "members": members.clone(), "leader": members[0]})));
    pd.insert("/health".into(), body(serde_json::json!((1..=3).map(|i| serde_json::json!({"name": format!("pd{i}"), "member_id": i, "health": true})).collect::<Vec<_>>())));
    pd.insert("/cluster/status".into(), body(serde_json::json!({"raft_bootstrap_time": "2026-11-25T09:50:01Z", "is_initialized": true})));
    pd.insert("/config".into(), body(serde_json::json!({"schedule": {"max-store-down-time": "30m0s"}, "replication": {"max-replicas": 3, "location-labels": ""}})));
    pd.insert(
        "/regions/count".into(),
        body(serde_json::json!({"count": regions, "regions": null})),
    );
    let down: Vec<serde_json::Value> = (1..=regions)
        .filter(|id| replicas(*id).contains(&DOWN_STORE))
        .map(|id| {
            let r = replicas(id);
            let leader = *r.iter().find(|s| **s != DOWN_STORE).unwrap();
            region(id, r, leader, Some(DOWN_STORE), None)
        })
        .collect();
    let pending: Vec<serde_json::Value> = (1..=regions)
        .filter(|id| id % 100 == 7)
        .map(|id| {
            let r = replicas(id);
            region(id, r, r[0], None, Some(r[1]))
        })
        .collect();
    for state in subject_tikv::pd::REGION_CHECKS {
        let list = match *state {
            "down-peer" => down.clone(),
            "pending-peer" => pending.clone(),
            _ => vec![],
        };
        pd.insert(
            format!("/regions/check/{state}"),
            body(serde_json::json!({"count": list.len(), "regions": list})),
        );
    }
    for kind in ["read", "write"] {
        let stat = |s: u64, k: u64, leader: bool| serde_json::json!({"store_id": s, "stores": [s], "is_leader": leader, "region_id": s * 1000 + k, "hot_degree": 5, "flow_bytes": 1.5e6 + k as f64, "flow_keys": 1500.0, "flow_query": 700.0, "anti_count": 2});
        let side = |leader: bool| -> serde_json::Value {
            (1..STORES)
                .map(|s| {
                    let stats: Vec<serde_json::Value> = (0..10).map(|k| stat(s, k, leader)).collect();
                    (s.to_string(), serde_json::json!({"total_flow_bytes": 1.5e7, "total_flow_keys": 15000.0, "total_flow_query": 7000.0, "regions_count": 10, "statistics": stats}))
                })
                .collect::<serde_json::Map<String, serde_json::Value>>()
                .into()
        };
        pd.insert(
            format!("/hotspot/regions/{kind}"),
            body(serde_json::json!({"as_leader": side(true), "as_peer": side(false)})),
        );
    }
    let mut prom_bodies = HashMap::new();
    for q in prom::INSTANT {
        let mut result = Vec::new();
        for s in 1..STORES {
            let inst = format!("tikv{s}:20180");
            let mut add = |extra: Vec<(&str, &str)>, v: f64| {
                let mut m = serde_json::Map::new();
                m.insert("instance".into(), inst.clone().into());
                for (k, val) in extra {
                    m.insert(k.into(), val.into());
                }
                result.push(
                    serde_json::json!({"metric": m, "value": [NOW_MS / 1000, v.to_string()]}),
                );
            };
            match q.id {
                "qps" | "request_p99" | "request_errors" => {
                    for t in [
                        "kv_get",
                        "kv_prewrite",
                        "kv_commit",
                        "kv_scan",
                        "kv_batch_get",
                        "coprocessor",
                    ] {
                        add(vec![("type", t)], 0.004);
                    }
                }
                "thread_cpu" => {
                    for n in [
                        "raftstore-1-0",
                        "raftstore-1-1",
                        "apply-0",
                        "apply-1",
                        "grpc-server-0",
                        "grpc-server-1",
                        "sched-worker-pool-0",
                        "unified-read-po-0",
                        "rocksdb:high0",
                        "pd-worker",
                    ] {
                        add(vec![("name", n)], 0.2);
                    }
                }
                "store_size" | "snapshots" => {
                    for t in ["capacity", "available", "used", "sending", "receiving"] {
                        add(vec![("type", t)], 1.0);
                    }
                }
                "pd_cluster_status" | "pd_regions_status" => {}
                "up" => add(vec![("job", "tikv")], 1.0),
                "scheduler_busy" | "leader_delta" => add(vec![], 0.0),
                _ => add(vec![], 0.01),
            }
        }
        let body = serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}});
        prom_bodies.insert(q.expr.to_string(), serde_json::to_vec(&body).unwrap());
    }
    for q in prom::RANGE {
        let values: Vec<serde_json::Value> = (0..=20)
            .map(|i| serde_json::json!([NOW_MS / 1000 - 600 + i * 30, "1500"]))
            .collect();
        let body = serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": values}]}});
        prom_bodies.insert(q.expr.to_string(), serde_json::to_vec(&body).unwrap());
    }
    Cluster {
        pd,
        prom: prom_bodies,
    }
}

impl Cluster {
    fn answer(&self, path: &str, query: &str) -> Reply {
        if let Some(route) = path.strip_prefix(subject_tikv::pd::PREFIX)
            && let Some(b) = self.pd.get(route)
        {
            return Reply {
                status: 200,
                body: b.clone(),
            };
        }
        if path.starts_with("/api/v1/query") {
            let expr = query
                .split('&')
                .find_map(|p| p.strip_prefix("query="))
                .map(decode)
                .unwrap_or_default();
            if let Some(b) = self.prom.get(&expr) {
                return Reply {
                    status: 200,
                    body: b.clone(),
                };
            }
        }
        Reply {
            status: 404,
            body: b"404 page not found".to_vec(),
        }
    }

    fn bytes(&self) -> usize {
        self.pd
            .values()
            .chain(self.prom.values())
            .map(Vec::len)
            .sum()
    }
}

impl Transport for Cluster {
    fn send(&self, _: Method, url: &str, _: Option<Vec<u8>>) -> Result<Reply, FetchError> {
        let (_, path, query) = split_url(url);
        Ok(self.answer(path, query))
    }
    fn tail(&self, component: &str, _: u32) -> Result<Vec<String>, String> {
        Err(format!("no log for {component}"))
    }
}

fn serve(port: u16, cluster: Cluster) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    println!(
        "serving on http://127.0.0.1:{}",
        listener.local_addr()?.port()
    );
    for conn in listener.incoming() {
        let mut conn = conn?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
        }
        let target = first.split_whitespace().nth(1).unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let r = cluster.answer(path, query);
        write!(
            conn,
            "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            r.status,
            r.body.len()
        )?;
        conn.write_all(&r.body)?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        let port = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let regions = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(100_000);
        if let Err(e) = serve(port, build(regions)) {
            eprintln!("serve: {e}");
            std::process::exit(1);
        }
        return;
    }
    let counts: Vec<u64> = if args.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let settings = Settings::from_pairs([
        ("pd", "http://pd1:2379"),
        ("prometheus", "http://prom:9090"),
    ])
    .expect("settings");
    println!("regions   bodies_MiB  down-peer  observe_ms  check_ms  peak_heap_MiB  violations");
    for regions in counts {
        let cluster = build(regions);
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t0 = Instant::now();
        let obs = observe::observe(&cluster, &settings, NOW_MS).expect("observe");
        let t1 = Instant::now();
        let v = invariants::check(std::slice::from_ref(&obs), &settings.thresholds);
        let t2 = Instant::now();
        let down = obs
            .metrics
            .iter()
            .find(|m| {
                m.name == "pd_region_check_count" && m.labels.iter().any(|l| l.value == "down-peer")
            })
            .map_or(0.0, |m| m.value);
        let mut fired: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for x in &v {
            *fired.entry(x.invariant.as_str()).or_default() += 1;
        }
        println!(
            "{regions:>7}  {:>10.1}  {down:>9}  {:>10.1}  {:>8.2}  {:>13.1}  {fired:?}",
            cluster.bytes() as f64 / 1048576.0,
            (t1 - t0).as_secs_f64() * 1000.0,
            (t2 - t1).as_secs_f64() * 1000.0,
            (PEAK.load(Ordering::Relaxed) - base) as f64 / 1048576.0,
        );
    }
}
