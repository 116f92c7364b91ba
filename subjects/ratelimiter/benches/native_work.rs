//! The rate limiter subject's own work, compiled natively: what one tick costs at the least,
//! whoever runs it and however.
//!
//! ```sh
//! cargo build --release --workspace              # the ratelimiter and loadgen binaries
//! cargo bench --workspace --bench native_work    # about 45 s
//! ```
//!
//! `host/benches/tick_cost.rs` sets the subject's sandboxed tick beside its *floor*: the same
//! requests from plain host code. This bench answers the other half of "what should a tick
//! cost": the work between the requests (decoding the answers, building the observation,
//! checking the invariants) with no sandbox at all. It starts the cluster `tick_cost` uses
//! (a real redis-server, three `ratelimiter` nodes, `loadgen` at 200 req/s), and every
//! second:
//! 1. reads what a tick reads: each node's `/healthz`, `/metrics` and `/v1/counters`, the
//!    registry (`/v1/nodes`) and Redis `INFO`. This is not timed;
//! 2. builds the observation from those bytes through the same `Snapshot` methods the
//!    plugin's `observe` uses, JSON decoding included, and times it on this thread's CPU
//!    clock: once cold (as a tick meets it, once a second) and then 50 times warm;
//! 3. checks the invariants over the last five observations (the monitor's window), timed
//!    the same way.
//!
//! It leaves out work the plugin does, so it is a lower bound: the Redis `EXISTS`, `TIME`
//! and `MGET` replies are not decoded (the counts come from the views' own Redis figures),
//! and the registry is read from `/v1/nodes` instead of Redis.

use ratelimiter_wire::{CounterList, Health, NodeList, routes};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use subject_ratelimiter::invariants::{self, Thresholds};
use subject_ratelimiter::observe::{Snapshot, ViewKeys, node_component_id};
use testkit::Redis;
use testkit::http::http;
use testkit::ratelimiter::{Node, loadgen};

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn cpu_of<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t0 = thread_cpu();
    let out = std::hint::black_box(f());
    (thread_cpu() - t0, out)
}

/// What one tick read, as bytes.
struct Reads {
    nodes: Vec<(String, String, String, String)>,
    registry: String,
    info: String,
}

fn get(url: &str) -> String {
    let (status, body) = http("GET", url, "").unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(status < 300, "GET {url}: {status} {body}");
    body
}

/// Redis `INFO` over a kept connection: the bulk string's text.
fn info(conn: &mut BufReader<TcpStream>) -> String {
    conn.get_mut()
        .write_all(b"*1\r\n$4\r\nINFO\r\n")
        .expect("sending INFO");
    let mut head = String::new();
    conn.read_line(&mut head).expect("reading INFO's length");
    let len: usize = head
        .trim_end()
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("INFO answered {head:?}"));
    let mut body = vec![0; len + 2];
    conn.read_exact(&mut body).expect("reading INFO");
    body.truncate(len);
    String::from_utf8(body).expect("INFO is text")
}

fn read_all(urls: &[String], redis: &mut BufReader<TcpStream>) -> Reads {
    Reads {
        nodes: urls
            .iter()
            .map(|u| {
                (
                    u.clone(),
                    get(&format!("{u}{}", routes::HEALTHZ)),
                    get(&format!("{u}{}", routes::METRICS)),
                    get(&format!("{u}{}", routes::COUNTERS)),
                )
            })
            .collect(),
        registry: get(&format!("{}{}", urls[0], routes::NODES)),
        info: info(redis),
    }
}

/// The observation, built the way the plugin's `observe` builds it from the same answers.
fn build(now: u64, reads: &Reads, redis_url: &str) -> operator_sdk::Observation {
    let mut snap = Snapshot::new(now);
    let mut view_keys = ViewKeys::new();
    for (url, health, metrics, counters) in &reads.nodes {
        let id = node_component_id(url);
        let health: Health = serde_json::from_str(health).expect("/healthz decodes");
        snap.node_health(url, Ok((200, health)));
        snap.node_metrics(&id, metrics);
        let list: CounterList = serde_json::from_str(counters).expect("/v1/counters decodes");
        snap.node_counters(&id, &list, &mut view_keys);
        for v in &list.keys {
            if let Some(r) = &v.redis {
                snap.redis_count(&v.key, v.window_index, r.current as i64);
            }
        }
    }
    snap.redis_info(redis_url, &reads.info, 1);
    let list: NodeList = serde_json::from_str(&reads.registry).expect("/v1/nodes decodes");
    snap.registry(
        list.nodes.iter().map(|n| (n.record(), n.age_ms)).collect(),
        "redis",
    );
    snap.no_keys_without_ttl();
    snap.finish()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (mean, p50) in ms.
fn summary(v: &[Duration]) -> (f64, f64) {
    let mut sorted: Vec<f64> = v.iter().copied().map(ms).collect();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / sorted.len().max(1) as f64;
    (
        mean,
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
    )
}

fn main() {
    let rounds: usize = std::env::var("NATIVE_WORK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let warmup = 6;
    let warm_repeats = 50;
    let redis = Redis::start();
    let nodes: Vec<Node> = (1..=3)
        .map(|i| {
            Node::start(
                &redis.url(),
                &format!("node-{i}"),
                &["--policy", "fail-open"],
            )
        })
        .collect();
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let (status, body) = http(
        "PUT",
        &format!("{}/v1/limits/_default", urls[0]),
        r#"{"limit":50,"window_ms":1000}"#,
    )
    .expect("setting the default limit");
    assert!(status < 300, "setting the default limit: {status} {body}");
    let _load = loadgen(&urls, 200, "2h", &["--keys", "200", "--zipf", "1.0"]);
    let url = redis.url();
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut conn = BufReader::new(TcpStream::connect(addr).expect("connecting to Redis"));
    let thresholds = Thresholds::default();
    let mut window: Vec<operator_sdk::Observation> = Vec::new();
    let (mut cold, mut warm, mut check, mut check_warm) = (vec![], vec![], vec![], vec![]);
    let (mut samples, mut violations) = (0, 0);
    for round in 0..warmup + rounds {
        let started = Instant::now();
        let reads = read_all(&urls, &mut conn);
        let now = operator_sdk::now_ms();
        let (built, observation) = cpu_of(|| build(now, &reads, &redis.url()));
        let (built_warm, ()) = cpu_of(|| {
            for _ in 0..warm_repeats {
                std::hint::black_box(build(now, &reads, &redis.url()));
            }
        });
        // What is costed must be a healthy tick's work, as `tick_cost` measures it.
        assert!(
            observation.problems.is_empty(),
            "the observation has problems: {:?}",
            observation.problems
        );
        let up = observation
            .components
            .iter()
            .filter(|c| c.kind == "node" && c.state == operator_sdk::ComponentState::Up)
            .count();
        assert_eq!(up, 3, "every node is up: {:?}", observation.components);
        samples = observation.metrics.len();
        window.push(observation);
        if window.len() > 5 {
            window.remove(0);
        }
        let (checked, found) = cpu_of(|| invariants::check(&window, &thresholds));
        let (checked_warm, ()) = cpu_of(|| {
            for _ in 0..warm_repeats {
                std::hint::black_box(invariants::check(&window, &thresholds));
            }
        });
        violations = found.len();
        if round >= warmup {
            cold.push(built);
            warm.push(built_warm / warm_repeats);
            check.push(checked);
            check_warm.push(checked_warm / warm_repeats);
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    }
    println!(
        "\n## the rate limiter subject's work, native (no sandbox): 3 nodes, redis-server, 200 req/s; {rounds} rounds"
    );
    println!(
        "an observation holds {samples} samples; the last check found {violations} violations"
    );
    println!(
        "{:<34} {:>8} {:>8}",
        "per tick, this thread's CPU", "mean ms", "p50 ms"
    );
    let total: Vec<Duration> = cold.iter().zip(&check).map(|(a, b)| *a + *b).collect();
    for (label, v) in [
        ("build the observation, cold", &cold),
        ("build the observation, warm", &warm),
        ("check the window, cold", &check),
        ("check the window, warm", &check_warm),
        ("build + check, cold", &total),
    ] {
        let (mean, p50) = summary(v);
        println!("{label:<34} {mean:>8.3} {p50:>8.3}");
    }
    println!(
        "set beside tick_cost's floor and kept tick from the same hour: the sandboxed tick's CPU \
         beyond the floor, less this, is what the sandbox and the store add"
    );
}
