//! Issue 8's promises, each shown against a real guest and a real server on loopback:
//! every call ends within its deadline whatever the guest does, the monitor keeps its
//! cadence meanwhile, the memory cap is the sum of an instance's memories, the Redis import
//! is bounded in time, size and connections, and writes need the user's permission.
//!
//! The tests of this file run one at a time (`SERIAL`): one reads the process's peak RSS,
//! and the timing assertions should not compete with each other for the CPU.

use operator::monitor::{Monitor, MonitorConfig, TickStatus};
use operator::runtime::{
    ActionPermission, Limits, PluginBuilder, PluginError, PluginSource, Runtime,
    instantiate_raw_for_tests,
};
use operator::tickets::{Policy, TicketStore};
use operator_tests::guests;
use operator_tests::support::JsonServer;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// How far past its deadline a call may end: scheduling, not guest work.
const MARGIN: Duration = Duration::from_secs(1);
const MIB: usize = 1024 * 1024;

fn with_deadline(deadline: Duration) -> Limits {
    Limits {
        deadline,
        ..Limits::default()
    }
}

mod common;
use common::load as build;

fn assert_deadline(err: &PluginError, call: &str, limit: Duration) {
    match err {
        PluginError::Deadline { call: c, limit: l } => {
            assert_eq!((c.as_str(), *l), (call, limit), "{err}");
        }
        other => panic!("expected `{call}` to overrun its deadline, got: {other}"),
    }
}

fn assert_cut_off(elapsed: Duration, deadline: Duration) {
    assert!(
        elapsed < deadline + MARGIN,
        "cut off after {elapsed:?}, deadline {deadline:?}"
    );
    // It really was the deadline that ended it, not an early failure.
    assert!(
        elapsed + Duration::from_millis(50) >= deadline,
        "ended after {elapsed:?}, before the deadline of {deadline:?}"
    );
}

/// A guest sleeping (blocked on a WASI clock, not spinning) is cut off at the deadline
/// in every phase, and the error names the call.
#[tokio::test(flavor = "multi_thread")]
async fn a_sleeping_guest_is_cut_off_in_every_phase() {
    let _serial = SERIAL.lock().await;
    let deadline = Duration::from_millis(500);
    let limits = with_deadline(deadline);

    // metadata: the build itself fails. Compile first so only the call is timed.
    let runtime = Runtime::shared().unwrap();
    let bytes = std::fs::read(guests::GUEST_SLEEP).unwrap();
    let compiled = runtime.compile("sleep", &bytes).unwrap();
    let started = Instant::now();
    let err = PluginBuilder::new(PluginSource::file(guests::GUEST_SLEEP))
        .setting("phase", "metadata")
        .limits(limits)
        .build_compiled(runtime, compiled)
        .await
        .err()
        .expect("a guest sleeping in metadata cannot be built");
    assert_cut_off(started.elapsed(), deadline);
    assert_deadline(&err, "metadata", deadline);

    // observe
    let plugin = build(guests::GUEST_SLEEP, limits, &[("phase", "observe".into())])
        .await
        .unwrap();
    let started = Instant::now();
    let err = plugin.session().await.unwrap().observe().await.unwrap_err();
    assert_cut_off(started.elapsed(), deadline);
    assert_deadline(&err, "observe", deadline);

    // check-invariants
    let plugin = build(
        guests::GUEST_SLEEP,
        limits,
        &[("phase", "check-invariants".into())],
    )
    .await
    .unwrap();
    let mut session = plugin.session().await.unwrap();
    let obs = session.observe().await.unwrap().unwrap();
    let started = Instant::now();
    let err = session.check_invariants(&[obs]).await.unwrap_err();
    assert_cut_off(started.elapsed(), deadline);
    assert_deadline(&err, "check-invariants", deadline);

    // execute (a read-only action: no permission needed)
    let plugin = build(guests::GUEST_SLEEP, limits, &[("phase", "execute".into())])
        .await
        .unwrap();
    let started = Instant::now();
    let err = plugin.execute("nap", &[], None).await.unwrap_err();
    // Instantiation is part of an execute call and has its own deadline.
    assert!(
        started.elapsed() < 2 * deadline + MARGIN,
        "{:?}",
        started.elapsed()
    );
    assert_deadline(&err, "execute", deadline);

    // The control: a short nap inside the deadline is no failure.
    let plugin = build(
        guests::GUEST_SLEEP,
        limits,
        &[("phase", "observe".into()), ("sleep_ms", "50".into())],
    )
    .await
    .unwrap();
    let started = Instant::now();
    plugin
        .session()
        .await
        .unwrap()
        .observe()
        .await
        .expect("a 50 ms nap fits a 500 ms deadline")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
}

/// With a guest that sleeps through every observe, ticks are recorded as plugin failures
/// of kind `deadline`, on the configured cadence, and a stop ends the loop promptly.
#[tokio::test(flavor = "multi_thread")]
async fn the_monitor_keeps_its_cadence_with_a_sleeping_guest() {
    let _serial = SERIAL.lock().await;
    let deadline = Duration::from_millis(300);
    let interval = Duration::from_millis(600);
    let plugin = build(
        guests::GUEST_SLEEP,
        with_deadline(deadline),
        &[("phase", "observe".into())],
    )
    .await
    .unwrap();
    let subject = plugin.name().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut monitor = Monitor::new(
        plugin,
        TicketStore::open(&db).unwrap(),
        MonitorConfig::new(interval, Policy::default()),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_after = Duration::from_millis(2550);
    tokio::spawn(async move {
        tokio::time::sleep(stop_after).await;
        let _ = stop_tx.send(true);
    });
    let started = Instant::now();
    let mut reports: Vec<(Duration, Duration, &'static str)> = Vec::new();
    let ticks = monitor
        .run(stop_rx, |r| {
            let kind = match &r.status {
                TickStatus::PluginFailed(e) => e.kind(),
                TickStatus::Observed { .. } => "observed",
                TickStatus::ObserveFailed(_) => "observe-failed",
            };
            reports.push((started.elapsed(), r.duration, kind));
        })
        .await
        .unwrap();
    let total = started.elapsed();
    // Ticks start at 0, 600, 1200, 1800 and 2400 ms; the last is still running at the
    // stop and finishes within the grace period.
    assert!(
        (4..=5).contains(&ticks),
        "{ticks} ticks in {total:?}: {reports:?}"
    );
    assert!(
        total < stop_after + deadline + MARGIN,
        "stopped after {total:?}"
    );
    for (_, duration, kind) in &reports {
        assert_eq!(*kind, "deadline", "{reports:?}");
        assert!(*duration < deadline + MARGIN, "{reports:?}");
    }
    for pair in reports.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= interval - Duration::from_millis(150)
                && gap <= interval + Duration::from_millis(400),
            "ticks {gap:?} apart, interval {interval:?}: {reports:?}"
        );
    }
    let store = TicketStore::open(&db).unwrap();
    let live = store.live(&subject).unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].kind, "plugin-failure");
    assert_eq!(live[0].count, ticks as i64);
    assert_eq!(live[0].evidence["kind"], "deadline");
}

/// A component of several core modules, each with its own memory: each fits the cap, the
/// sum does not, and the runtime refuses the sum.
#[tokio::test(flavor = "multi_thread")]
async fn the_memory_cap_is_the_sum_of_every_memory() {
    let _serial = SERIAL.lock().await;
    // 960 pages of 64 KiB: 60 MiB per memory.
    fn component(memories: usize) -> Vec<u8> {
        let mut text = String::from("(component\n");
        for i in 0..memories {
            text.push_str(&format!(
                "  (core module $m{i} (memory (export \"memory\") 960))\n  (core instance $i{i} (instantiate $m{i}))\n"
            ));
        }
        text.push(')');
        wat::parse_str(&text).expect("valid component text")
    }
    let limits = Limits {
        memory_bytes: 128 * MIB,
        ..Limits::default()
    };
    instantiate_raw_for_tests(&component(1), limits)
        .await
        .expect("one 60 MiB memory fits 128 MiB");
    instantiate_raw_for_tests(&component(2), limits)
        .await
        .expect("two make 120 MiB: still under 128 MiB");
    let err = instantiate_raw_for_tests(&component(3), limits)
        .await
        .expect_err("three make 180 MiB");
    match &err {
        PluginError::Memory {
            call,
            limit,
            wanted,
        } => {
            assert_eq!((call.as_str(), *limit), ("instantiate", 128), "{err}");
            assert_eq!(*wanted, 180, "{err}");
        }
        other => panic!("expected a memory error, got {other}"),
    }
}

/// A mutating action runs only with the user's permission, whoever calls the runtime.
#[tokio::test(flavor = "multi_thread")]
async fn mutating_actions_need_the_users_permission() {
    let _serial = SERIAL.lock().await;
    let server = JsonServer::start(r#"{"components":[]}"#);
    let plugin = build(
        guests::GUEST_GOOD,
        Limits::default(),
        &[("target", server.url())],
    )
    .await
    .unwrap();
    let err = plugin.execute("poke", &[], None).await.unwrap_err();
    assert!(matches!(err, PluginError::NotPermitted { .. }), "{err}");
    let no_flag = ActionPermission::from_user_flag(false);
    let err = plugin
        .execute("poke", &[], no_flag.as_ref())
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::NotPermitted { .. }), "{err}");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        0,
        "nothing was sent"
    );

    let permission = ActionPermission::from_user_flag(true);
    let (info, out) = plugin
        .execute("poke", &[], permission.as_ref())
        .await
        .unwrap();
    assert!(info.mutates);
    assert_eq!(out.unwrap(), "HTTP 200");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "the POST went out"
    );
}

/// What a fake Redis does with a `GET`.
#[derive(Clone, Copy)]
enum GetReply {
    /// `$2 hi`, at once.
    Short,
    /// A 5-byte bulk, one byte a second.
    Trickle,
    /// A bulk of this many bytes, as fast as the client reads.
    Huge(usize),
}

/// A RESP server on loopback that counts connections: accepted in all, and the most open
/// at once.
struct FakeRedis {
    port: u16,
    accepted: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
}

impl FakeRedis {
    fn start(reply: GetReply) -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let (a, m) = (accepted.clone(), max_open.clone());
        std::thread::spawn(move || {
            // Every accepted socket, to count which the client still holds open at each
            // new accept (asked of the kernel, not of the serving threads, which notice a
            // close only when they are next scheduled).
            let mut live: Vec<TcpStream> = Vec::new();
            for conn in listener.incoming().flatten() {
                a.fetch_add(1, Ordering::SeqCst);
                live.retain(|s| !peer_closed(s));
                if let Ok(c) = conn.try_clone() {
                    live.push(c);
                }
                m.fetch_max(live.len(), Ordering::SeqCst);
                std::thread::spawn(move || serve_resp(conn, reply));
            }
        });
        FakeRedis {
            port,
            accepted,
            max_open,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// True once the client has closed (or reset) the connection: a non-blocking peek sees
/// end of stream. Pending data means it is open.
fn peer_closed(s: &TcpStream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    match recv(
        s.as_raw_fd(),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => true,
        Ok(_) => false,
        Err(nix::errno::Errno::EAGAIN) => false,
        Err(_) => true,
    }
}

/// Reads one RESP command (an array of bulk strings); None when the client is gone.
fn read_command(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    r.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let n: usize = line.trim().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        r.read_line(&mut line).ok()?;
        let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0; len + 2];
        r.read_exact(&mut buf).ok()?;
        buf.truncate(len);
        args.push(String::from_utf8_lossy(&buf).into_owned());
    }
    Some(args)
}

fn serve_resp(conn: TcpStream, reply: GetReply) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    while let Some(args) = read_command(&mut r) {
        let name = args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        let ok = match (name.as_str(), reply) {
            ("GET", GetReply::Short) => w.write_all(b"$2\r\nhi\r\n").is_ok(),
            ("GET", GetReply::Trickle) => b"$5\r\nhello\r\n".iter().all(|b| {
                std::thread::sleep(Duration::from_secs(1));
                w.write_all(&[*b]).is_ok()
            }),
            ("GET", GetReply::Huge(n)) => {
                // Written in chunks of one buffer: this server itself stays small.
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = n;
                let mut ok = w.write_all(format!("${n}\r\n").as_bytes()).is_ok();
                while ok && left > 0 {
                    let k = left.min(chunk.len());
                    ok = w.write_all(&chunk[..k]).is_ok();
                    left -= k;
                }
                ok && w.write_all(b"\r\n").is_ok()
            }
            ("PING", _) => w.write_all(b"+PONG\r\n").is_ok(),
            _ => w.write_all(b"+OK\r\n").is_ok(),
        };
        if !ok {
            return;
        }
    }
}

fn outcomes(obs: &operator::model::Observation) -> Vec<String> {
    obs.events
        .iter()
        .map(|e| e.attributes["outcome"].clone())
        .collect()
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// A Redis that answers one byte a second cannot hold a call past its deadline: the
/// command times out inside the budget, or the call is cut off at the deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_redis_is_cut_off_within_the_deadline() {
    let _serial = SERIAL.lock().await;
    let redis = FakeRedis::start(GetReply::Trickle);
    // The command timeout inside the deadline: the guest gets a timeout and carries on.
    let limits = Limits {
        deadline: Duration::from_secs(3),
        redis: operator::runtime::limits::RedisLimits {
            command_timeout: Duration::from_millis(1000),
            ..Limits::default().redis
        },
        ..Limits::default()
    };
    let settings = [("mode", "redis-get".to_string()), ("redis", redis.url())];
    let plugin = build(guests::GUEST_PROBE, limits, &settings).await.unwrap();
    let started = Instant::now();
    let obs = plugin
        .session()
        .await
        .unwrap()
        .observe()
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1000) + MARGIN,
        "{elapsed:?}"
    );
    let out = outcomes(&obs);
    assert!(out[0].starts_with("timeout:"), "{out:?}");

    // The deadline shorter than the command timeout: the deadline wins.
    let deadline = Duration::from_millis(1500);
    let plugin = build(guests::GUEST_PROBE, with_deadline(deadline), &settings)
        .await
        .unwrap();
    let started = Instant::now();
    let result = plugin.session().await.unwrap().observe().await;
    let elapsed = started.elapsed();
    assert!(elapsed < deadline + MARGIN, "{elapsed:?}");
    match result {
        // The import used what was left of the budget and said so.
        Ok(Ok(obs)) => assert!(outcomes(&obs)[0].starts_with("timeout:"), "{obs:?}"),
        Err(e) => assert_deadline(&e, "observe", deadline),
        Ok(Err(e)) => panic!("unexpected observe error {e:?}"),
    }
    assert!(
        redis.accepted.load(Ordering::SeqCst) >= 1,
        "the server was asked"
    );
}

/// A 64 MiB reply is refused by the 16 MiB reply cap, before the host keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_redis_reply_is_refused_by_the_cap() {
    let _serial = SERIAL.lock().await;
    let redis = FakeRedis::start(GetReply::Huge(64 * MIB));
    let settings = [("mode", "redis-get".to_string()), ("redis", redis.url())];
    let plugin = build(guests::GUEST_PROBE, Limits::default(), &settings)
        .await
        .unwrap();
    assert_eq!(plugin.limits().redis.max_reply_bytes, 16 * MIB);
    let before = vm_hwm_kib();
    let obs = plugin
        .session()
        .await
        .unwrap()
        .observe()
        .await
        .unwrap()
        .unwrap();
    let after = vm_hwm_kib();
    let out = outcomes(&obs);
    assert!(
        out[0].starts_with("error:") && out[0].contains("over the host's cap of 16777216 bytes"),
        "{out:?}"
    );
    // A sanity check, not a benchmark: the peak did not grow by anything like the reply.
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(grown_mib < 32, "peak RSS grew by {grown_mib} MiB");
}

/// Many URL strings for one server share the pool, and the connections open at once never
/// exceed the pool cap, whether the URLs differ in a query string or in the database.
#[tokio::test(flavor = "multi_thread")]
async fn redis_connections_stay_within_the_pool_cap() {
    let _serial = SERIAL.lock().await;
    let cap = Limits::default().redis.max_connections;
    for (vary, count) in [("query", 50), ("db", 32)] {
        let redis = FakeRedis::start(GetReply::Short);
        let settings = [
            ("mode", "redis-many".to_string()),
            ("redis", redis.url()),
            ("vary", vary.to_string()),
            ("count", count.to_string()),
        ];
        let plugin = build(guests::GUEST_PROBE, Limits::default(), &settings)
            .await
            .unwrap();
        let obs = plugin
            .session()
            .await
            .unwrap()
            .observe()
            .await
            .unwrap()
            .unwrap();
        let out = outcomes(&obs);
        assert_eq!(out.len(), count);
        assert!(
            out.iter().all(|o| o.starts_with("ok:")),
            "vary={vary}: {out:?}"
        );
        let accepted = redis.accepted.load(Ordering::SeqCst);
        let max_open = redis.max_open.load(Ordering::SeqCst);
        assert!(
            max_open <= cap,
            "vary={vary}: {max_open} connections open at once, cap {cap} ({accepted} accepted)"
        );
        assert!(plugin.redis_idle_connections() <= cap);
        if vary == "query" {
            assert_eq!(accepted, 1, "one origin, one connection, reused");
        }
    }
}
