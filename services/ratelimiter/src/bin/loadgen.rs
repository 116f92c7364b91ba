//! Open-loop load generator for the rate limiter: a fixed request rate spread round-robin over
//! the nodes, Zipf key popularity, an optional hot key and periodic bursts. It counts what the
//! nodes answered, per key and per node, so the allowed total can be compared with the limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Open-loop load generator for ratelimiter nodes"
)]
struct Args {
    /// Node base URLs, comma separated (e.g. http://127.0.0.1:8081,http://127.0.0.1:8082).
    #[arg(long, value_delimiter = ',', required = true)]
    target: Vec<String>,
    /// Requests per second (open loop: sent on schedule whatever the response time).
    #[arg(long)]
    rate: f64,
    /// How long to send, e.g. 10s or 500ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100)]
    keys: u64,
    /// Zipf exponent of key popularity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// KEY:SHARE — this exact key gets SHARE (0..1) of all requests.
    #[arg(long)]
    hot_key: Option<String>,
    /// RATE:DURATION:EVERY — every EVERY, for DURATION, send at RATE req/s instead of --rate
    /// (first burst at t = EVERY).
    #[arg(long)]
    burst: Option<String>,
    /// Maximum requests in flight; a request due while all are busy is counted as dropped.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Keys are named {prefix}{i} for i in 1..=keys.
    #[arg(long, default_value = "key-")]
    key_prefix: String,
    /// Cost sent with each request.
    #[arg(long, default_value_t = 1)]
    cost: u64,
    /// Per-request timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    timeout: Duration,
    /// RNG seed, for reproducible key sequences.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    rate: f64,
    duration: f64,
    every: f64,
}

fn parse_burst(s: &str) -> anyhow::Result<Burst> {
    let parts: Vec<&str> = s.split(':').collect();
    let [rate, dur, every] = parts.as_slice() else {
        bail!("--burst must be RATE:DURATION:EVERY, got {s:?}");
    };
    let b = Burst {
        rate: rate
            .parse()
            .with_context(|| format!("burst rate {rate:?}"))?,
        duration: humantime::parse_duration(dur)
            .with_context(|| format!("burst duration {dur:?}"))?
            .as_secs_f64(),
        every: humantime::parse_duration(every)
            .with_context(|| format!("burst period {every:?}"))?
            .as_secs_f64(),
    };
    if b.rate < 0.0 || b.every <= 0.0 || b.duration > b.every {
        bail!("burst needs RATE >= 0 and 0 < DURATION <= EVERY");
    }
    Ok(b)
}

fn parse_hot(s: &str) -> anyhow::Result<(String, f64)> {
    let (key, share) = s
        .rsplit_once(':')
        .with_context(|| format!("--hot-key must be KEY:SHARE, got {s:?}"))?;
    let share: f64 = share
        .parse()
        .with_context(|| format!("hot key share {share:?}"))?;
    if key.is_empty() || !(0.0..=1.0).contains(&share) {
        bail!("hot key needs a non-empty key and a share in 0..=1");
    }
    Ok((key.to_string(), share))
}

/// Requests due by time `t` (seconds): the base rate, replaced by the burst rate inside bursts.
fn due(t: f64, base: f64, burst: Option<Burst>) -> f64 {
    let mut n = base * t;
    if let Some(b) = burst {
        let mut k = 1.0;
        while k * b.every < t {
            let start = k * b.every;
            let inside = (t - start).min(b.duration);
            n += (b.rate - base) * inside;
            k += 1.0;
        }
    }
    n
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Allowed,
    Denied,
    Error,
}

struct Sample {
    key: usize,
    node: usize,
    answer: Answer,
    latency_us: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Counts {
    allowed: u64,
    denied: u64,
    errors: u64,
}

impl Counts {
    fn add(&mut self, a: Answer) {
        match a {
            Answer::Allowed => self.allowed += 1,
            Answer::Denied => self.denied += 1,
            Answer::Error => self.errors += 1,
        }
    }
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    sent: u64,
    allowed: u64,
    denied: u64,
    errors: u64,
    /// Due while `--concurrency` requests were already in flight: never sent.
    dropped: u64,
    duration_s: f64,
    achieved_rps: f64,
    per_key: BTreeMap<String, Counts>,
    per_node: BTreeMap<String, Counts>,
    latency_ms: Latency,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

async fn run(args: Args) -> anyhow::Result<Summary> {
    if args.rate.is_nan() || args.rate <= 0.0 || args.keys == 0 || args.concurrency == 0 {
        bail!("--rate, --keys and --concurrency must be > 0");
    }
    let burst = args.burst.as_deref().map(parse_burst).transpose()?;
    let hot = args.hot_key.as_deref().map(parse_hot).transpose()?;
    let zipf = Zipf::new(args.keys as f64, args.zipf).map_err(|e| anyhow::anyhow!("zipf: {e}"))?;
    let targets: Vec<String> = args
        .target
        .iter()
        .map(|t| format!("{}/v1/check", t.trim_end_matches('/')))
        .collect();
    let mut names: Vec<String> = (1..=args.keys)
        .map(|i| format!("{}{i}", args.key_prefix))
        .collect();
    let hot_index = hot.as_ref().map(|(k, _)| {
        names.push(k.clone());
        names.len() - 1
    });
    // Bodies are built once per key; serde_json escapes any odd characters in key names.
    let bodies: Arc<Vec<String>> = Arc::new(
        names
            .iter()
            .map(|k| serde_json::json!({ "key": k, "cost": args.cost }).to_string())
            .collect(),
    );
    let client = ratelimiter::http_client()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(args.timeout)
        .build()
        .context("building HTTP client")?;
    let sem = Arc::new(Semaphore::new(args.concurrency));
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let collector = tokio::spawn(async move {
        let mut samples = Vec::new();
        while let Some(s) = rx.recv().await {
            samples.push(s);
        }
        samples
    });

    let mut rng = StdRng::seed_from_u64(args.seed);
    let start = Instant::now();
    let total = args.duration.as_secs_f64();
    let (mut issued, mut dropped) = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let t = start.elapsed().as_secs_f64().min(total);
        let target_n = due(t, args.rate, burst).floor() as u64;
        while issued < target_n {
            let key = match (&hot, hot_index) {
                (Some((_, share)), Some(h)) if rng.random::<f64>() < *share => h,
                _ => (zipf.sample(&mut rng) as usize).clamp(1, args.keys as usize) - 1,
            };
            let node = (issued % targets.len() as u64) as usize;
            issued += 1;
            let Ok(permit) = sem.clone().try_acquire_owned() else {
                dropped += 1;
                continue;
            };
            let (client, url, bodies, tx) = (
                client.clone(),
                targets[node].clone(),
                bodies.clone(),
                tx.clone(),
            );
            tokio::spawn(async move {
                let sent = Instant::now();
                let answer = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bodies[key].clone())
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        // Drain the body so the connection is reused.
                        let _ = resp.bytes().await;
                        match status {
                            200 => Answer::Allowed,
                            429 => Answer::Denied,
                            _ => Answer::Error,
                        }
                    }
                    Err(_) => Answer::Error,
                };
                let _ = tx.send(Sample {
                    key,
                    node,
                    answer,
                    latency_us: sent.elapsed().as_micros() as u64,
                });
                drop(permit);
            });
        }
        if t >= total {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Wait for requests still in flight (each bounded by --timeout).
    let _ = tokio::time::timeout(
        args.timeout + Duration::from_secs(1),
        sem.acquire_many(args.concurrency as u32),
    )
    .await;
    drop(tx);
    let samples = collector.await.context("collector task")?;

    let mut per_key: BTreeMap<String, Counts> = BTreeMap::new();
    let mut per_node: BTreeMap<String, Counts> = BTreeMap::new();
    let mut all = Counts::default();
    let mut lat: Vec<u64> = Vec::with_capacity(samples.len());
    for s in &samples {
        all.add(s.answer);
        per_key
            .entry(names[s.key].clone())
            .or_default()
            .add(s.answer);
        per_node
            .entry(args.target[s.node].clone())
            .or_default()
            .add(s.answer);
        if s.answer != Answer::Error {
            lat.push(s.latency_us);
        }
    }
    lat.sort_unstable();
    Ok(Summary {
        sent: issued - dropped,
        allowed: all.allowed,
        denied: all.denied,
        errors: all.errors,
        dropped,
        duration_s: elapsed,
        achieved_rps: (issued - dropped) as f64 / elapsed.max(1e-9),
        per_key,
        per_node,
        latency_ms: Latency {
            p50: percentile(&lat, 0.50),
            p99: percentile(&lat, 0.99),
            max: lat.last().map(|v| *v as f64 / 1000.0).unwrap_or(0.0),
        },
    })
}

fn print_table(s: &Summary, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "sent {}  allowed {}  denied {}  errors {}  dropped {}  in {:.2}s ({:.0} req/s)",
        s.sent, s.allowed, s.denied, s.errors, s.dropped, s.duration_s, s.achieved_rps
    );
    let _ = writeln!(
        out,
        "latency ms: p50 {:.3}  p99 {:.3}  max {:.3}",
        s.latency_ms.p50, s.latency_ms.p99, s.latency_ms.max
    );
    let _ = writeln!(
        out,
        "\n{:<40} {:>10} {:>10} {:>8}",
        "node", "allowed", "denied", "errors"
    );
    for (n, c) in &s.per_node {
        let _ = writeln!(
            out,
            "{n:<40} {:>10} {:>10} {:>8}",
            c.allowed, c.denied, c.errors
        );
    }
    let mut keys: Vec<(&String, &Counts)> = s.per_key.iter().collect();
    keys.sort_by(|a, b| {
        let (ta, tb) = (
            a.1.allowed + a.1.denied + a.1.errors,
            b.1.allowed + b.1.denied + b.1.errors,
        );
        tb.cmp(&ta).then_with(|| a.0.cmp(b.0))
    });
    let _ = writeln!(
        out,
        "\n{:<40} {:>10} {:>10} {:>8}   (top 20 of {} keys)",
        "key",
        "allowed",
        "denied",
        "errors",
        keys.len()
    );
    for (k, c) in keys.into_iter().take(20) {
        let _ = writeln!(
            out,
            "{k:<40} {:>10} {:>10} {:>8}",
            c.allowed, c.denied, c.errors
        );
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let json = args.json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(summary) => {
            if json {
                match serde_json::to_string(&summary) {
                    Ok(s) => {
                        let _ = std::io::Write::write_all(
                            &mut std::io::stdout(),
                            format!("{s}\n").as_bytes(),
                        );
                    }
                    Err(e) => {
                        eprintln!("loadgen: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            } else {
                let mut out = String::new();
                print_table(&summary, &mut out);
                // A closed pipe (e.g. `| head`) is not an error worth a panic.
                let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_schedule_replaces_the_base_rate() {
        let b = parse_burst("1000:1s:10s").unwrap();
        assert_eq!(due(5.0, 100.0, Some(b)), 500.0);
        // 10 s of base, then 0.5 s of burst.
        assert_eq!(due(10.5, 100.0, Some(b)), 1000.0 + 500.0);
        // After the burst: 1 s at 1000 replaced 1 s at 100.
        assert_eq!(due(12.0, 100.0, Some(b)), 1200.0 + 900.0);
        assert!(parse_burst("1:2s").is_err());
    }

    #[test]
    fn hot_key_parsing() {
        assert_eq!(
            parse_hot("tenant:42:0.5").unwrap(),
            ("tenant:42".to_string(), 0.5)
        );
        assert!(parse_hot("k:1.5").is_err());
    }
}
