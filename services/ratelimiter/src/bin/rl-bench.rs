//! Benchmark: the Redis ceiling (redis-benchmark running the decision script with EVALSHA)
//! against the service with 1 and 3 nodes, on this machine, in one run.
//!
//! Everything (redis-server, nodes, redis-benchmark and this client) shares the machine's
//! cores, so the figures are for the whole system, not for a node alone. The HTTP client is a
//! minimal keep-alive HTTP/1.1 client so that the load generator spends as little CPU as
//! possible; the nodes themselves are the normal `ratelimiter` binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(
    name = "rl-bench",
    about = "Measure the rate limiter against the Redis ceiling"
)]
struct Args {
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Keep-alive connections for the closed-loop (maximum throughput) phases.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections for the open-loop (latency at half load) phases.
    #[arg(long, default_value_t = 32)]
    latency_connections: usize,
    /// Distinct keys (a high default limit keeps every decision an allow + write).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// redis-benchmark parallel clients for the ceiling.
    #[arg(long, default_value_t = 50)]
    redis_clients: usize,
    /// Worker threads of the benchmark client.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Fraction of the measured maximum used for the latency phase.
    #[arg(long, default_value_t = 0.5)]
    load_fraction: f64,
    /// Tokio worker threads per node (default: the node's own default, one per core).
    #[arg(long)]
    node_threads: Option<usize>,
    /// Also measure plain HTTP on the same nodes (an unknown route, answered 404 without
    /// touching Redis), to separate HTTP and scheduling costs from the Redis path.
    #[arg(long)]
    http_baseline: bool,
    /// Path of the ratelimiter binary (default: next to this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Also print the results as JSON.
    #[arg(long)]
    json: bool,
}

const BENCH_LIMIT: u64 = 1_000_000_000;
const BENCH_WINDOW_MS: u64 = 1000;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds used so far by a process (utime + stime from /proc, USER_HZ = 100).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(l.local_addr()?.port())
}

async fn start_redis() -> anyhow::Result<(Proc, u16)> {
    for _ in 0..5 {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        let mut p = Proc(child);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        for _ in 0..100 {
            if let Ok(Some(_)) = p.0.try_wait() {
                break;
            }
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Ok((p, port));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = p.0.kill();
    }
    bail!("redis-server did not start")
}

fn start_node(
    bin: &Path,
    redis_port: u16,
    id: &str,
    threads: Option<usize>,
) -> anyhow::Result<(Proc, String)> {
    let mut cmd = Command::new(bin);
    if let Some(n) = threads {
        cmd.args(["--worker-threads", &n.to_string()]);
    }
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--node-id", id])
        .args(["--redis", &format!("redis://127.0.0.1:{redis_port}/")])
        .args(["--default-limit", &BENCH_LIMIT.to_string()])
        .args(["--default-window-ms", &BENCH_WINDOW_MS.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("node stdout")?;
    let p = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(l)) = lines.next() {
            let _ = tx.send(l);
        }
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(15))
        .context("node did not report its address")?;
    let addr = line
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected node output {line:?}"))?
        .to_string();
    Ok((p, addr))
}

/// One keep-alive HTTP/1.1 connection that posts /v1/check and reads the status.
struct Conn {
    stream: TcpStream,
    /// POST target: /v1/check, or an unknown route for the HTTP baseline.
    path: &'static str,
    buf: Vec<u8>,
    req: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str, path: &'static str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            path,
            buf: Vec::with_capacity(1024),
            req: Vec::with_capacity(256),
        })
    }

    /// Send one check and return the HTTP status.
    async fn check(&mut self, key: u64) -> anyhow::Result<u16> {
        let body = format!("{{\"key\":\"bench-{key}\",\"cost\":1}}");
        self.req.clear();
        self.req.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                self.path,
                body.len()
            )
            .as_bytes(),
        );
        self.stream.write_all(&self.req).await?;
        self.buf.clear();
        let mut tmp = [0u8; 2048];
        loop {
            let n = self.stream.read(&mut tmp).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&tmp[..n]);
            let Some(head_end) = find(&self.buf, b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&self.buf[..head_end]).context("response head")?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .context("response status")?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .context("content-length")?;
            if self.buf.len() >= head_end + 4 + len {
                return Ok(status);
            }
        }
    }
}

/// Cumulative decision-latency buckets (upper bound s, count) summed over the nodes.
async fn node_buckets(addrs: &[String]) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut sum: Vec<(f64, f64)> = Vec::new();
    for addr in addrs {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        let mut i = 0;
        for line in text.lines() {
            let Some(rest) =
                line.strip_prefix("ratelimiter_decision_duration_seconds_bucket{le=\"")
            else {
                continue;
            };
            let Some((le, count)) = rest.split_once("\"} ") else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            let count: f64 = count.trim().parse()?;
            if sum.len() <= i {
                sum.push((le, 0.0));
            }
            sum[i].1 += count;
            i += 1;
        }
    }
    Ok(sum)
}

/// Upper bound (ms) of the bucket holding quantile `q` of the decisions between two scrapes.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .zip(before.iter().chain(std::iter::repeat(&(0.0, 0.0))))
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect();
    let total = delta.last()?.1;
    delta
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| le * 1000.0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Phase {
    name: String,
    rate: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Bucket bound of the nodes' own p99 decision time (Redis round trip included).
    node_p99_le_ms: Option<f64>,
    errors: u64,
    cpu: Vec<(String, f64)>,
}

fn pct(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i] as f64 / 1000.0)
}

/// Closed loop: every connection sends its next request as soon as the previous answers.
/// What the load hits: the decision route, or the HTTP-only baseline.
#[derive(Debug, Clone, Copy)]
enum Target {
    Check,
    HttpOnly,
}

impl Target {
    fn path(self) -> &'static str {
        match self {
            Target::Check => "/v1/check",
            Target::HttpOnly => "/v1/bench-unknown-route",
        }
    }
    fn ok(self, r: &anyhow::Result<u16>) -> bool {
        match self {
            Target::Check => matches!(r, Ok(200 | 429)),
            Target::HttpOnly => matches!(r, Ok(404)),
        }
    }
}

async fn max_throughput(
    target: Target,
    addrs: &[String],
    conns: usize,
    keys: u64,
    secs: f64,
) -> anyhow::Result<(f64, u64)> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..conns {
        let mut c = Conn::open(&addrs[i % addrs.len()], target.path()).await?;
        let (done, errors, measuring, stop) = (
            done.clone(),
            errors.clone(),
            measuring.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(i as u64);
            while !stop.load(Ordering::Relaxed) {
                let ok = target.ok(&c.check(rng.random_range(0..keys)).await);
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !ok {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok((
        done.load(Ordering::Relaxed) as f64 / elapsed,
        errors.load(Ordering::Relaxed),
    ))
}

/// Open loop at `rate`: when a connection falls behind its schedule because of a slow answer,
/// latency is measured from the scheduled send time, so stalls count against the tail (no
/// coordinated omission).
async fn latency_at(
    target: Target,
    addrs: &[String],
    conns: usize,
    keys: u64,
    rate: f64,
    secs: f64,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let total = (rate * secs) as u64;
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for w in 0..conns {
        let mut c = Conn::open(&addrs[w % addrs.len()], target.path()).await?;
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(1000 + w as u64);
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut k = w as u64;
            let mut prev_done = Instant::now();
            while k < total {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                // Late because the previous answer on this connection was late: count from
                // the schedule (the service's fault). Late only because the timer woke us
                // late (1 ms granularity): count from the actual send (the client's fault).
                let sent = if prev_done > due { due } else { Instant::now() };
                if target.ok(&c.check(rng.random_range(0..keys)).await) {
                    lat.push(sent.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
                prev_done = Instant::now();
                k += conns as u64;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::with_capacity(total as usize);
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.context("latency worker")?;
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    Ok((all, errors))
}

async fn ceiling(args: &Args, port: u16, sha: &str, redis_pid: u32) -> anyhow::Result<Phase> {
    let run = |n: u64| -> anyhow::Result<(f64, Option<f64>, Option<f64>)> {
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", &args.redis_clients.to_string(), "-n", &n.to_string()])
            .args(["-r", &args.keys.to_string(), "--csv"])
            .args([
                "EVALSHA",
                sha,
                "2",
                "rl:blocked",
                "rl:limits",
                "bench-__rand_int__",
            ])
            .args([&BENCH_LIMIT.to_string(), &BENCH_WINDOW_MS.to_string(), "1"])
            .output()
            .context("running redis-benchmark (apt-get install redis-tools)")?;
        if !out.status.success() {
            bail!(
                "redis-benchmark failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let row = text
            .lines()
            .last()
            .context("redis-benchmark printed nothing")?;
        let cols: Vec<f64> = row
            .split(',')
            .map(|c| c.trim_matches('"').parse::<f64>().unwrap_or(f64::NAN))
            .collect();
        let rps = *cols
            .get(1)
            .filter(|v| v.is_finite())
            .with_context(|| format!("cannot parse {row:?}"))?;
        Ok((rps, cols.get(4).copied(), cols.get(6).copied()))
    };
    let (probe, _, _) = run(20_000)?;
    let n = (probe * args.seconds).max(50_000.0) as u64;
    let cpu0 = cpu_seconds(redis_pid);
    let t0 = Instant::now();
    let (rps, p50, p99) = run(n)?;
    let wall = t0.elapsed().as_secs_f64();
    Ok(Phase {
        name: format!("redis-benchmark EVALSHA -c {}", args.redis_clients),
        rate: rps,
        p50_ms: p50,
        p99_ms: p99,
        node_p99_le_ms: None,
        errors: 0,
        cpu: vec![("redis".into(), (cpu_seconds(redis_pid) - cpu0) / wall)],
    })
}

async fn service_phases(
    target: Target,
    args: &Args,
    addrs: &[String],
    pids: &[(String, u32)],
    label: &str,
) -> anyhow::Result<(Phase, Phase)> {
    let cpu0: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let t0 = Instant::now();
    let (rate, errors) =
        max_throughput(target, addrs, args.connections, args.keys, args.seconds).await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = pids
        .iter()
        .zip(cpu0)
        .map(|((n, p), c0)| (n.clone(), (cpu_seconds(*p) - c0) / wall))
        .collect();
    let max = Phase {
        name: format!("{label}: max (closed loop, {} conns)", args.connections),
        rate,
        p50_ms: None,
        p99_ms: None,
        node_p99_le_ms: None,
        errors,
        cpu,
    };
    let half = rate * args.load_fraction;
    let before = node_buckets(addrs).await?;
    let (lat, errors) = latency_at(
        target,
        addrs,
        args.latency_connections,
        args.keys,
        half,
        args.seconds,
    )
    .await?;
    let after = node_buckets(addrs).await?;
    let at_half = Phase {
        name: format!(
            "{label}: at {:.0}% of max (open loop)",
            args.load_fraction * 100.0
        ),
        rate: lat.len() as f64 / args.seconds,
        p50_ms: pct(&lat, 0.50),
        p99_ms: pct(&lat, 0.99),
        node_p99_le_ms: bucket_quantile(&before, &after, 0.99),
        errors,
        cpu: Vec::new(),
    };
    Ok((max, at_half))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let node_bin = match &args.node_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("ratelimiter"),
    };
    if !node_bin.exists() {
        bail!(
            "{} not found: build it first with `cargo build --release -p ratelimiter`",
            node_bin.display()
        );
    }
    let (redis, port) = start_redis().await?;
    let redis_pid = redis.0.id();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(ratelimiter::script::decide_script())
        .query_async(&mut conn)
        .await
        .context("SCRIPT LOAD")?;
    eprintln!("rl-bench: redis on port {port}, decision script sha {sha}");

    eprintln!("rl-bench: measuring the ceiling with redis-benchmark…");
    let ceiling = ceiling(&args, port, &sha, redis_pid).await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;

    let mut phases = vec![ceiling.clone()];
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    let mut pids = vec![
        ("redis".to_string(), redis_pid),
        ("bench".to_string(), std::process::id()),
    ];
    for count in [1usize, 3] {
        while nodes.len() < count {
            let id = format!("bench-{}", nodes.len() + 1);
            let (p, addr) = start_node(&node_bin, port, &id, args.node_threads)?;
            pids.push((id, p.0.id()));
            nodes.push(p);
            addrs.push(addr);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!("rl-bench: measuring {count} node(s)…");
        let label = if count == 1 {
            "1 node".to_string()
        } else {
            format!("{count} nodes")
        };
        let (max, half) = service_phases(Target::Check, &args, &addrs, &pids, &label).await?;
        phases.push(max);
        phases.push(half);
        if args.http_baseline {
            let label = format!("{label}, HTTP only");
            let (max, half) =
                service_phases(Target::HttpOnly, &args, &addrs, &pids, &label).await?;
            phases.push(max);
            phases.push(half);
        }
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    }

    let fmt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
    println!(
        "\n{:<46} {:>12} {:>8} {:>9} {:>9} {:>10} {:>7}  cpu (cores)",
        "phase", "decisions/s", "vs ceil", "p50 ms", "p99 ms", "node p99<=", "errors"
    );
    for p in &phases {
        let cpu = p
            .cpu
            .iter()
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        // The ratio only means something for the maximum-throughput rows.
        let ratio = if p.name.starts_with("redis")
            || (p.p50_ms.is_none() && !p.name.contains("HTTP only"))
        {
            format!("{:.0}%", 100.0 * p.rate / ceiling.rate)
        } else {
            "-".into()
        };
        println!(
            "{:<46} {:>12.0} {:>8} {:>9} {:>9} {:>10} {:>7}  {}",
            p.name,
            p.rate,
            ratio,
            fmt(p.p50_ms),
            fmt(p.p99_ms),
            fmt(p.node_p99_le_ms),
            p.errors,
            cpu
        );
    }
    println!(
        "\ncores: {}; every process above shares them. Ceiling = redis-benchmark alone \
         against the same script. p50/p99 are client-side; node p99<= is the bucket bound of \
         the nodes' own decision time (Redis round trip included).",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if args.json {
        println!("{}", serde_json::to_string(&phases)?);
    }
    drop(nodes);
    drop(redis);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let threads = args.client_threads.max(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rl-bench: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rl-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
