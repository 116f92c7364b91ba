//! Measures what one plugin tick costs and how much memory an idle host holds.
//!
//! `cargo bench -p operator --bench tick_cost` prints:
//! - compile time of a plugin (once per process),
//! - instantiate alone, and instantiate + observe + check-invariants for the trivial
//!   plugin (tests/guests/good, one loopback HTTP GET per observe) and for the bundled
//!   rate limiter subject pointed at a closed port (the plugin's error path),
//! - the idle RSS of `operator run` between ticks.
//!
//! Figures are medians and p99 over many iterations in one run, side by side.

use operator::monitor::{TickStatus, run_plugin_tick};
use operator::runtime::{Plugin, PluginBuilder, PluginSource, Runtime};
use operator_tests::guests;
use operator_tests::support::JsonServer;
use std::collections::VecDeque;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn plugin(
    rt: &tokio::runtime::Runtime,
    runtime: &std::sync::Arc<Runtime>,
    bytes: &[u8],
    settings: &[(&str, String)],
) -> Plugin {
    let compiled = runtime.compile("bench plugin", bytes).expect("compile");
    let mut builder = PluginBuilder::new(PluginSource::Bytes {
        what: "bench plugin".into(),
        bytes: bytes.to_vec(),
    });
    for (k, v) in settings {
        builder = builder.setting(*k, v.clone());
    }
    rt.block_on(builder.build_compiled(runtime.clone(), compiled))
        .expect("plugin")
}

fn measure(label: &str, n: usize, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    let (p50, p99) = stats(samples);
    println!(
        "{label:<58} p50 {:>9.1} µs   p99 {:>9.1} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
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

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let runtime = Runtime::shared().unwrap();
    let good = std::fs::read(guests::GUEST_GOOD).unwrap();
    let rl = operator::bundled::find("ratelimiter").unwrap().wasm;

    let t = Instant::now();
    runtime.compile("good", &good).unwrap();
    let compile_good = t.elapsed();
    let t = Instant::now();
    runtime.compile("ratelimiter", rl).unwrap();
    let compile_rl = t.elapsed();
    println!(
        "compile (once per process): good {:.1} ms, ratelimiter {:.1} ms",
        compile_good.as_secs_f64() * 1e3,
        compile_rl.as_secs_f64() * 1e3
    );

    let server = JsonServer::start(
        r#"{"components":[{"id":"a","healthy":true},{"id":"b","healthy":false}]}"#,
    );
    let good_plugin = plugin(&rt, &runtime, &good, &[("target", server.url())]);
    let rl_plugin = plugin(&rt, &runtime, rl, &[("nodes", "http://127.0.0.1:1".into())]);
    let history = VecDeque::new();
    let n = 2000;

    measure("instantiate only (good)", n, || {
        rt.block_on(good_plugin.session()).unwrap();
    });
    measure("instantiate + metadata (good)", n, || {
        rt.block_on(async { good_plugin.session().await?.metadata().await })
            .unwrap();
    });
    measure(
        "tick: instantiate + observe + check (good, 1 HTTP GET)",
        n,
        || {
            let s = rt.block_on(run_plugin_tick(&good_plugin, &history));
            assert!(matches!(s, TickStatus::Observed { .. }));
        },
    );
    measure(
        "tick: instantiate + observe + check (ratelimiter, refused)",
        n,
        || {
            rt.block_on(run_plugin_tick(&rl_plugin, &history));
        },
    );
    // The same HTTP GET made by the host directly, to separate sandbox cost from I/O.
    let url = format!("{}/state", server.url());
    measure("baseline: the same GET from the host, no wasm", n, || {
        let mut s = std::net::TcpStream::connect(
            url.trim_start_matches("http://").split('/').next().unwrap(),
        )
        .unwrap();
        std::io::Write::write_all(&mut s, b"GET /state HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut buf).unwrap();
    });

    // Idle RSS of the real binary between ticks.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_operator"))
        .args([
            "run",
            "--plugin",
            guests::GUEST_GOOD,
            "--set",
            &format!("target={}", server.url()),
        ])
        .args(["--interval", "1s", "--db", db.to_str().unwrap()])
        .env("OPERATOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let bin_size = std::fs::metadata(Path::new(env!("CARGO_BIN_EXE_operator")))
        .map(|m| m.len())
        .unwrap_or(0);
    match rss {
        Some(kib) => println!(
            "idle RSS of `operator run` after 4 ticks: {:.1} MiB (binary {:.1} MiB)",
            kib as f64 / 1024.0,
            bin_size as f64 / 1048576.0
        ),
        None => println!("idle RSS: could not read /proc"),
    }
}
