//! What one monitor tick costs, against the real workload, side by side with the floor.
//!
//! ```sh
//! cargo build --release --workspace            # the ratelimiter, loadgen and operator binaries
//! cargo bench --workspace --bench tick_cost    # about five minutes (--workspace: the same
//!                                              # features as the build, so nothing rebuilds)
//! TICK_COST_SOAK=3600 cargo bench --workspace --bench tick_cost   # plus a one-hour soak
//! ```
//!
//! 1. **Live subject.** A real redis-server, three `ratelimiter` nodes and `loadgen` at
//!    200 req/s. Every round, one second apart:
//!    - *floor*: the requests a tick of the bundled rate limiter plugin just made (recorded
//!      by the sandbox), replayed from plain host code: the same GETs through a reqwest client
//!      and the same Redis commands over one kept-alive connection. This is what the tick's I/O
//!      costs with no sandbox, no parsing and no store;
//!    - *same requests, sandboxed*: those requests made by `tests/guests/replay`, a guest
//!      that makes them through the host's imports and does nothing else, on a kept
//!      instance: what the sandbox adds to the I/O alone, before any parsing or storing;
//!    - *tick (kept instance)*: a full monitor tick as `operator run` does it, plugin and
//!      ticket store, on the instance kept from the last tick;
//!    - *tick (fresh instance)*: the same with a fresh instance every tick.
//!
//!    Per tick: process CPU (user + system, `getrusage`), wall time, heap allocations and
//!    bytes allocated (a counting global allocator), and the bytes the tick's observation
//!    takes when stored (the store writes it only once a ticket links it).
//! 2. **The binary.** `operator run` itself at a 1 s interval against the same cluster, CPU
//!    from its threads' `/proc/PID/task/*/schedstat` (ns) over 30 steady ticks and RSS
//!    after them: its first start (a child compiles the plugin into the cache), a start
//!    with the compiled plugin cached (every later one), and `--instance-per-tick`.
//! 3. **Scale** (runs first). `tests/guests/scale` (no I/O) at 10, 30 and 100 components × 1000 series,
//!    so the host's share (lowering, lifting, caps, storage) shows how it grows.
//! 4. **Soak** (`TICK_COST_SOAK=SECONDS`): `operator run` at 1 s against the live cluster;
//!    RSS and database size sampled every 30 s, reported with their least-squares slope.
//!
//! For finding where a tick's time goes, `TICK_COST_PROFILE=kept TICK_COST_ONLY=live` runs
//! the kept-instance tick alone (so `perf record` of the process is a profile of the tick),
//! taken apart into its steps (observe, check, fingerprint, store, history), each costed on
//! its own. `TICK_COST_AGAINST=plugin.wasm` adds that plugin's tick beside the bundled one,
//! the two alternating which goes first: a paired A/B of a guest change in one run.

use operator::monitor::{InstancePolicy, Monitor, MonitorConfig, TickStatus, tick_on};
use operator::runtime::imports::redis::ReplyReader;
use operator::runtime::{Limits, Plugin, PluginBuilder, PluginSource, RecordedRequest};
use operator::tickets::{Policy, TicketStore};
use operator_tests::guests;
use operator_tests::processes::{Node, Proc, Redis, http, loadgen, workspace_bin};
use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Counts every allocation the process makes (reallocations count as one), served by the
/// `operator` binary's own allocator so that the in-process rows cost what the binary does.
struct Counting;

static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { INNER.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Process CPU time so far, user + system.
fn cpu_now() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// What one measured piece of work cost.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    cpu: Duration,
    wall: Duration,
    allocs: u64,
    alloc_bytes: u64,
}

async fn costed<T>(work: impl std::future::Future<Output = T>) -> (Cost, T) {
    let (c0, a0, b0, t0) = (
        cpu_now(),
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
        Instant::now(),
    );
    let out = work.await;
    let cost = Cost {
        wall: t0.elapsed(),
        cpu: cpu_now() - c0,
        allocs: ALLOCS.load(Ordering::Relaxed) - a0,
        alloc_bytes: ALLOC_BYTES.load(Ordering::Relaxed) - b0,
    };
    (cost, out)
}

/// A row of the report: many samples of one kind of work.
#[derive(Default)]
struct Row {
    costs: Vec<Cost>,
    stored: Vec<u64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Row {
    fn cpu_mean(&self) -> f64 {
        self.costs.iter().map(|c| ms(c.cpu)).sum::<f64>() / self.costs.len().max(1) as f64
    }

    fn print(&self, label: &str) {
        let n = self.costs.len().max(1) as f64;
        let col = |f: &dyn Fn(&Cost) -> f64| median(self.costs.iter().map(f).collect());
        println!(
            "{label:<28} {:>8.2} {:>8.2} {:>8.2} {:>9.0} {:>10.1} {:>9}",
            self.cpu_mean(),
            col(&|c| ms(c.cpu)),
            col(&|c| ms(c.wall)),
            self.costs.iter().map(|c| c.allocs).sum::<u64>() as f64 / n,
            self.costs.iter().map(|c| c.alloc_bytes).sum::<u64>() as f64 / n / 1024.0,
            if self.stored.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{:.0}",
                    median(self.stored.iter().map(|&b| b as f64).collect())
                )
            },
        );
    }
}

fn header() {
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>9} {:>10} {:>9}",
        "per tick", "cpu ms", "cpu p50", "wall p50", "allocs", "alloc KiB", "stored B"
    );
}

/// The cluster: redis-server, three nodes, load.
struct Cluster {
    redis: Redis,
    nodes: Vec<Node>,
    _load: Proc,
}

impl Cluster {
    fn start() -> Cluster {
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
        let load = loadgen(&urls, 200, "2h", &["--keys", "200", "--zipf", "1.0"]);
        Cluster {
            redis,
            nodes,
            _load: load,
        }
    }

    fn nodes_setting(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        vec![("nodes", self.nodes_setting()), ("redis", self.redis.url())]
    }
}

async fn build_plugin(source: PluginSource, settings: &[(&str, String)], limits: Limits) -> Plugin {
    let mut b = PluginBuilder::new(source).limits(limits);
    for (k, v) in settings {
        b = b.setting(*k, v.clone());
    }
    b.build().await.expect("the plugin loads")
}

/// Replays recorded requests from plain host code: reqwest for HTTP, one kept-alive
/// connection per Redis origin with the host's own reply reader.
struct Floor {
    http: reqwest::Client,
    redis: BTreeMap<String, BufReader<TcpStream>>,
    limits: Limits,
}

impl Floor {
    fn new() -> Floor {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Floor {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            redis: BTreeMap::new(),
            limits: Limits::default(),
        }
    }

    async fn replay(&mut self, requests: &[RecordedRequest]) {
        let mut i = 0;
        while i < requests.len() {
            match &requests[i] {
                RecordedRequest::Http { batch, .. } => {
                    // The requests of one `send-all` went out together; so do they here.
                    let together = requests[i..]
                        .iter()
                        .take_while(|r| {
                            batch.is_some()
                                && matches!(r, RecordedRequest::Http { batch: b, .. } if b == batch)
                        })
                        .count()
                        .max(1);
                    let sends = requests[i..i + together].iter().map(|r| {
                        let RecordedRequest::Http { method, url, .. } = r else {
                            unreachable!("taken only while they are HTTP")
                        };
                        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                        let send = self.http.request(method, url).send();
                        async move {
                            if let Ok(resp) = send.await {
                                let _ = resp.bytes().await;
                            }
                        }
                    });
                    futures_util::future::join_all(sends).await;
                    i += together;
                }
                RecordedRequest::Redis { url, args } => {
                    i += 1;
                    let parsed = url::Url::parse(url).unwrap();
                    let addr = format!(
                        "{}:{}",
                        parsed.host_str().unwrap(),
                        parsed.port().unwrap_or(6379)
                    );
                    if !self.redis.contains_key(&addr) {
                        let s = TcpStream::connect(&addr).await.unwrap();
                        s.set_nodelay(true).unwrap();
                        self.redis.insert(addr.clone(), BufReader::new(s));
                    }
                    let conn = self.redis.get_mut(&addr).unwrap();
                    let mut wire = format!("*{}\r\n", args.len()).into_bytes();
                    for a in args {
                        wire.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
                    }
                    conn.get_mut().write_all(&wire).await.unwrap();
                    let mut out = Vec::new();
                    // An error reply is still a whole reply; the connection stays in step.
                    let _ = ReplyReader::new(&self.limits.redis)
                        .read(conn, &mut out)
                        .await;
                }
            }
        }
    }
}

fn monitor(plugin: Plugin, db: &Path, instance: InstancePolicy) -> Monitor {
    let store = TicketStore::open(db).unwrap();
    let mut config = MonitorConfig::new(Duration::from_secs(1), Policy::default());
    config.instance = instance;
    Monitor::new(plugin, store, config)
}

/// One monitor tick's cost, and the bytes its observation takes when stored. (A healthy
/// tick stores none: the store writes an observation only once a ticket links it.)
async fn monitor_tick(m: &mut Monitor, stop: &mut watch::Receiver<bool>) -> (Cost, u64) {
    let (cost, report) = costed(m.tick(stop)).await;
    let report = report.unwrap().unwrap();
    let observation = match &report.status {
        TickStatus::Observed { observation, .. } => observation,
        TickStatus::PluginFailed(e) => panic!("the plugin failed: {e}"),
        TickStatus::ObserveFailed(e) => panic!("the plugin could not observe: {e}"),
    };
    let stored = operator::tickets::stored_size(observation).unwrap() as u64;
    (cost, stored)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The monitor's tick taken apart, each step costed on its own (`TICK_COST_PROFILE=kept`):
/// the same steps, in the same order, as `Monitor::tick`.
struct Phases {
    session: operator::runtime::Session,
    store: TicketStore,
    history: VecDeque<std::sync::Arc<operator::model::Observation>>,
    tick: i64,
}

impl Phases {
    const LABELS: [&str; 5] = [
        "observe",
        "check (retained)",
        "fingerprint",
        "store",
        "history (drop oldest)",
    ];

    async fn tick(&mut self) -> [Cost; 5] {
        let (observe, observation) = costed(self.session.observe()).await;
        let observation = observation.unwrap().unwrap();
        let (check, checked) = costed(async {
            let mut window: Vec<&operator::model::Observation> =
                self.history.iter().map(|o| &**o).collect();
            window.push(&observation);
            self.session.check_latest(&window).await
        })
        .await;
        let violations = checked.unwrap().violations;
        let status = TickStatus::Observed {
            observation: std::sync::Arc::new(observation),
            violations,
        };
        let (print, fp) = costed(async { operator::monitor::fingerprint(&status) }).await;
        let TickStatus::Observed {
            observation,
            violations,
        } = status
        else {
            unreachable!()
        };
        self.tick += 1;
        let (store, _) = costed(async {
            self.store
                .record_tick(
                    &operator::tickets::TickRecord {
                        subject: "ratelimiter",
                        tick: self.tick,
                        at_ms: operator::now_ms(),
                        duration: Duration::from_millis(1),
                        result: operator::tickets::TickResult::Observed {
                            observation: &observation,
                            violations: &violations,
                        },
                        fingerprint: fp.as_deref(),
                    },
                    Policy::default(),
                )
                .unwrap()
        })
        .await;
        let (history, ()) = costed(async {
            self.history.push_back(observation);
            while self.history.len() >= Policy::default().history.max(1) {
                self.history.pop_front();
            }
        })
        .await;
        [observe, check, print, store, history]
    }
}

/// The requests a tick made, as the script `tests/guests/replay` runs: the requests of one
/// `send-all` as one step, each Redis command as one.
fn replay_script(requests: &[RecordedRequest]) -> operator::model::Observation {
    let mut steps: Vec<String> = Vec::new();
    let mut batch_open = None;
    for r in requests {
        match r {
            RecordedRequest::Http { url, batch, .. } => {
                match steps.last_mut() {
                    Some(step) if batch.is_some() && batch_open == Some(*batch) => {
                        step.push('\u{1f}');
                        step.push_str(url);
                    }
                    _ => steps.push(format!("H\u{1f}{url}")),
                }
                batch_open = Some(*batch);
            }
            RecordedRequest::Redis { url, args } => {
                batch_open = None;
                steps.push(format!("R\u{1f}{url}\u{1f}{}", args.join("\u{1f}")));
            }
        }
    }
    operator::model::Observation {
        timestamp_ms: 0,
        components: vec![operator::model::Component {
            id: "script".into(),
            kind: "script".into(),
            address: String::new(),
            state: operator::model::ComponentState::Up,
            attributes: [("steps".to_string(), steps.join("\u{1e}"))].into(),
        }],
        metrics: Default::default(),
        events: vec![],
        problems: vec![],
    }
}

/// Part 1: the live subject, floor and ticks side by side.
async fn live(cluster: &Cluster, dir: &Path) {
    let rounds = env_usize("TICK_COST_ROUNDS", 30);
    let settings = cluster.settings();
    let source = || PluginSource::bundled("ratelimiter");
    let recorder = build_plugin(source(), &settings, Limits::default()).await;
    let mut warm = monitor(
        build_plugin(source(), &settings, Limits::default()).await,
        &dir.join("warm.db"),
        InstancePolicy::default(),
    );
    let mut fresh = monitor(
        build_plugin(source(), &settings, Limits::default()).await,
        &dir.join("fresh.db"),
        InstancePolicy::fresh_every_tick(),
    );
    // The same requests through the sandbox: a guest that makes them and nothing else.
    let mut replay = build_plugin(
        PluginSource::file(guests::GUEST_REPLAY),
        &settings,
        Limits::default(),
    )
    .await
    .session()
    .await
    .unwrap();
    let (_stop_tx, mut stop) = watch::channel(false);
    let mut floor = Floor::new();
    let (mut floor_row, mut replay_row, mut warm_row, mut fresh_row) = (
        Row::default(),
        Row::default(),
        Row::default(),
        Row::default(),
    );
    let mut recording = recorder.session().await.unwrap();
    recording.record_requests(true);
    let mut requests_per_tick = (0, 0);
    let history = VecDeque::new();
    // Warm-up rounds fill the history window and every connection pool; they are not
    // counted.
    let warmup = 6;
    // TICK_COST_PROFILE=kept runs the kept-instance tick alone, so that a profile of the
    // process is a profile of that tick, and reports it by step instead of the rows below.
    let kept_only = std::env::var("TICK_COST_PROFILE").as_deref() == Ok("kept");
    // TICK_COST_AGAINST=plugin.wasm profiles that plugin too, side by side (a paired A/B).
    let mut sources = Vec::new();
    if kept_only {
        sources.push(("", source()));
    }
    if let Some(path) = std::env::var_os("TICK_COST_AGAINST").filter(|_| kept_only) {
        sources.push(("B: ", PluginSource::file(PathBuf::from(path))));
    }
    let mut phases = Vec::new();
    for (i, (label, source)) in sources.into_iter().enumerate() {
        phases.push((
            label,
            Phases {
                session: build_plugin(source, &settings, Limits::default())
                    .await
                    .session()
                    .await
                    .unwrap(),
                store: TicketStore::open(&dir.join(format!("phases-{i}.db"))).unwrap(),
                history: VecDeque::new(),
                tick: 0,
            },
            <[Row; 5]>::default(),
        ));
    }
    for round in 0..rounds + warmup {
        let started = Instant::now();
        if kept_only {
            // Whichever runs first after the idle second pays for cold caches: alternate.
            phases.rotate_left(1);
            for (_, phases, rows) in &mut phases {
                let costs = phases.tick().await;
                if round >= warmup {
                    for (row, cost) in rows.iter_mut().zip(costs) {
                        row.costs.push(cost);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
            continue;
        }
        let status = tick_on(&mut recording, &history).await;
        assert!(
            matches!(status, TickStatus::Observed { .. }),
            "the recording tick observed: {status:?}"
        );
        let requests = recording.take_requests();
        let (floor_cost, ()) = costed(floor.replay(&requests)).await;
        // Handing the guest its script is not part of what is measured.
        replay
            .check_invariants(&[replay_script(&requests)])
            .await
            .unwrap();
        let (replay_cost, replayed) = costed(replay.observe()).await;
        let replayed = replayed.unwrap().unwrap();
        let failed = &replayed.components[0].attributes["failed"];
        assert_eq!(
            failed, "0",
            "the replay guest made every request: {replayed:?}"
        );
        let (warm_cost, warm_stored) = monitor_tick(&mut warm, &mut stop).await;
        let (fresh_cost, fresh_stored) = monitor_tick(&mut fresh, &mut stop).await;
        if round >= warmup {
            requests_per_tick = (
                requests
                    .iter()
                    .filter(|r| matches!(r, RecordedRequest::Http { .. }))
                    .count(),
                requests
                    .iter()
                    .filter(|r| matches!(r, RecordedRequest::Redis { .. }))
                    .count(),
            );
            floor_row.costs.push(floor_cost);
            replay_row.costs.push(replay_cost);
            warm_row.costs.push(warm_cost);
            warm_row.stored.push(warm_stored);
            fresh_row.costs.push(fresh_cost);
            fresh_row.stored.push(fresh_stored);
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    }
    if kept_only {
        println!("\n## 1. the kept-instance tick by phase, {rounds} rounds");
        header();
        phases.sort_by_key(|(prefix, ..)| *prefix);
        for (prefix, phases, rows) in &phases {
            for (row, label) in rows.iter().zip(Phases::LABELS) {
                row.print(&format!("{prefix}{label}"));
            }
            let total: f64 = rows.iter().map(Row::cpu_mean).sum();
            println!(
                "{prefix}{:<25} {total:>8.2}    (instance memory after: {} KiB)",
                "whole tick",
                phases.session.memory_in_use() / 1024
            );
        }
        return;
    }
    println!(
        "\n## 1. live rate limiter subject: 3 nodes, redis-server, 200 req/s; {rounds} rounds side by side"
    );
    println!(
        "a tick makes {} HTTP requests and {} Redis commands (the floor replays exactly these)",
        requests_per_tick.0, requests_per_tick.1
    );
    header();
    floor_row.print("floor (bare requests)");
    replay_row.print("same requests, sandboxed");
    warm_row.print("tick, kept instance");
    fresh_row.print("tick, fresh instance");
    let floor_cpu = floor_row.cpu_mean();
    println!(
        "ratio to the floor (mean CPU): sandboxed requests {:.2}x, kept instance {:.2}x, fresh instance {:.2}x; instances started by the kept monitor: {}",
        replay_row.cpu_mean() / floor_cpu,
        warm_row.cpu_mean() / floor_cpu,
        fresh_row.cpu_mean() / floor_cpu,
        warm.instances_started()
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in seconds.
fn proc_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields count from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The CPU time of each live thread of a process, ns (`/proc/PID/task/*/schedstat`). Over
/// 30 ticks of a few ms, /proc/PID/stat's 10 ms clock ticks would be a tenth of the figure.
fn thread_cpu(pid: u32) -> Option<BTreeMap<u32, u64>> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that ended since the listing has no schedstat any more.
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat"))
            && let Some(ns) = stat.split_whitespace().next().and_then(|n| n.parse().ok())
        {
            out.insert(tid, ns);
        }
    }
    Some(out)
}

/// Seconds of CPU between two [`thread_cpu`] snapshots; a thread started in between counts
/// from zero (one that ended in between is missed: the operator keeps its two threads).
fn cpu_between(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> f64 {
    after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / 1e9
}

fn spawn_operator(cluster: &Cluster, db: &Path, cache: &Path, extra: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_operator"))
        .env(operator::runtime::cache::ENV, cache)
        .args(["run", "--subject", "ratelimiter"])
        .args(["--set", &format!("nodes={}", cluster.nodes_setting())])
        .args(["--set", &format!("redis={}", cluster.redis.url())])
        .args(["--interval", "1s", "--diagnose", "off", "--db"])
        .arg(db)
        .args(extra)
        .env("OPERATOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting operator run");
    Proc { child }
}

/// Part 2: the real binary, measured from outside as an operator would see it.
fn binary(cluster: &Cluster, dir: &Path) {
    let steady = env_usize("TICK_COST_BINARY_TICKS", 30);
    println!(
        "\n## 2. `operator run --interval 1s` against the same cluster, {steady} steady ticks"
    );
    println!(
        "{:<28} {:>10} {:>12}",
        "process", "cpu ms/tick", "RSS MiB after"
    );
    // A cache of its own: on the first start a child `operator plugin compile` fills it and
    // the operator loads from it; the later ones find it filled, as every start after an
    // operator's first does.
    let cache = dir.join("compiled");
    for (i, (label, extra)) in [
        ("kept, first start", &[][..]),
        ("kept instance (default)", &[][..]),
        ("--instance-per-tick", &["--instance-per-tick"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let db = dir.join(format!("bin-{i}.db"));
        let mut p = spawn_operator(cluster, &db, &cache, extra);
        let pid = p.child.id();
        std::thread::sleep(Duration::from_millis(6500));
        let c0 = thread_cpu(pid).unwrap();
        std::thread::sleep(Duration::from_secs(steady as u64));
        let c1 = thread_cpu(pid).unwrap();
        let rss = rss_kib(pid).unwrap_or(0);
        p.kill();
        println!(
            "{label:<28} {:>10.2} {:>12.1}",
            cpu_between(&c0, &c1) * 1e3 / steady as f64,
            rss as f64 / 1024.0
        );
    }
}

/// Part 3: the synthetic guest at growing sizes.
async fn scale(dir: &Path) {
    println!("\n## 3. scale: tests/guests/scale, N components x 1000 series, no I/O");
    header();
    let limits = Limits {
        memory_bytes: 1 << 30,
        output: operator::runtime::limits::OutputLimits {
            max_metric_samples: 200_000,
            ..Limits::default().output
        },
        ..Limits::default()
    };
    let (_stop_tx, mut stop) = watch::channel(false);
    for components in [10, 30, 100] {
        let settings = [
            ("components", components.to_string()),
            ("series", "1000".to_string()),
        ];
        let plugin = build_plugin(PluginSource::file(guests::GUEST_SCALE), &settings, limits).await;
        let db = dir.join(format!("scale-{components}.db"));
        let mut m = monitor(plugin, &db, InstancePolicy::default());
        let mut row = Row::default();
        for i in 0..12 {
            let (cost, stored) = monitor_tick(&mut m, &mut stop).await;
            if i >= 4 {
                row.costs.push(cost);
                row.stored.push(stored);
            }
        }
        row.print(&format!("{components} x 1000 series"));
    }
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}

fn file_bytes(db: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| {
            std::fs::metadata(PathBuf::from(format!("{}{s}", db.display())))
                .ok()
                .map(|m| m.len())
        })
        .sum()
}

/// Part 4: an hour (or what TICK_COST_SOAK says) of `operator run` at 1 s.
fn soak(cluster: &Cluster, dir: &Path, seconds: u64) {
    println!("\n## 4. soak: `operator run --interval 1s` for {seconds} s against the live cluster");
    let db = dir.join("soak.db");
    let mut p = spawn_operator(cluster, &db, &dir.join("compiled"), &[]);
    let pid = p.child.id();
    let started = Instant::now();
    let (mut t, mut rss, mut size) = (vec![], vec![], vec![]);
    let every = Duration::from_secs(30).min(Duration::from_secs(seconds.max(2) / 2));
    // The first minute is warm-up (history fills, pools open); the slope is taken after it.
    let settle = Duration::from_secs(60).min(Duration::from_secs(seconds / 4));
    std::thread::sleep(settle);
    let c0 = proc_cpu(pid).unwrap();
    let t0 = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(every);
        t.push(started.elapsed().as_secs_f64() / 3600.0);
        rss.push(rss_kib(pid).unwrap_or(0) as f64 / 1024.0);
        size.push(file_bytes(&db) as f64 / 1024.0);
    }
    let cpu = proc_cpu(pid).unwrap() - c0;
    let ticks = t0.elapsed().as_secs_f64();
    p.kill();
    let last = |v: &[f64]| v.last().copied().unwrap_or(0.0);
    println!(
        "RSS MiB: first {:.1}, last {:.1}, max {:.1}, slope {:+.2} MiB/h",
        rss[0],
        last(&rss),
        rss.iter().cloned().fold(0.0, f64::max),
        slope(&t, &rss)
    );
    // The WAL fills to its checkpoint size over the first part of a soak; the later half's
    // slope says whether it then stays flat.
    let half = t.len() / 2;
    println!(
        "DB KiB (file + WAL): first {:.0}, last {:.0}, max {:.0}, slope {:+.1} KiB/h; \
         later half: from {:.0}, slope {:+.1} KiB/h (RSS {:+.2} MiB/h)",
        size[0],
        last(&size),
        size.iter().cloned().fold(0.0, f64::max),
        slope(&t, &size),
        size[half],
        slope(&t[half..], &size[half..]),
        slope(&t[half..], &rss[half..])
    );
    println!(
        "CPU over the soak: {:.2} ms per tick ({} samples every {:?})",
        cpu * 1e3 / ticks,
        t.len(),
        every
    );
}

fn main() {
    // Fail early, with the command that fixes it, when the binaries are not built.
    let _ = workspace_bin("ratelimiter");
    let _ = workspace_bin("loadgen");
    // The runtime `operator` itself runs on (one thread); TICK_COST_RUNTIME=multi-thread
    // measures on tokio's default one instead.
    let rt = match std::env::var("TICK_COST_RUNTIME").as_deref() {
        Ok("multi-thread") => tokio::runtime::Runtime::new(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .expect("tokio runtime");
    let dir = tempfile::tempdir().unwrap();
    // TICK_COST_ONLY=live|binary|scale runs one part (for profiling it).
    let only = std::env::var("TICK_COST_ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if run("scale") {
        rt.block_on(scale(dir.path()));
    }
    if !(run("live") || run("binary") || std::env::var("TICK_COST_SOAK").is_ok()) {
        return;
    }
    let cluster = Cluster::start();
    std::thread::sleep(Duration::from_secs(3));
    if run("live") {
        rt.block_on(live(&cluster, dir.path()));
    }
    if run("binary") {
        binary(&cluster, dir.path());
    }
    if let Some(seconds) = std::env::var("TICK_COST_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        soak(&cluster, dir.path(), seconds);
    }
}
