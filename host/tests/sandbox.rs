//! Every hostile guest under tests/guests is contained with a clear error, and the host
//! keeps going. `foreach_guest!` makes a missing test a compile error.

use operator::monitor::{InstancePolicy, Monitor, MonitorConfig, TickReport, TickStatus};
use operator::runtime::{Limits, PluginBuilder, PluginError, PluginSource};
use operator::tickets::{Policy, Resolution, Status, TicketStore};
use operator_tests::guests;
use operator_tests::support::{CountingListener, JsonServer};
use std::time::Duration;
use tokio::sync::watch;

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
operator_tests::foreach_guest!(assert_test_exists);

mod common;
use common::load;

/// One monitor tick that must not be cut short (nobody requests a stop here).
async fn tick(monitor: &mut Monitor, stop: &mut watch::Receiver<bool>) -> TickReport {
    monitor
        .tick(stop)
        .await
        .expect("the store accepts the tick")
        .expect("no stop was requested, so the tick is not cut short")
}

fn short_deadline() -> Limits {
    Limits {
        deadline: Duration::from_millis(300),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_spin() {
    let plugin = load(guests::GUEST_SPIN, short_deadline(), &[])
        .await
        .expect("metadata is fine");
    let err = plugin.session().await.unwrap().observe().await.unwrap_err();
    assert!(matches!(err, PluginError::Deadline { .. }), "{err}");
    assert!(
        err.to_string().contains("overran its deadline of 300ms"),
        "{err}"
    );

    // Through the monitor: every tick fails the same way, one ticket counts them, and the
    // loop keeps ticking.
    let dir = tempfile::tempdir().unwrap();
    let store = TicketStore::open(&dir.path().join("t.db")).unwrap();
    let subject = plugin.name().to_string();
    let config = MonitorConfig::new(Duration::from_millis(10), Policy::default());
    let mut monitor = Monitor::new(plugin, store, config);
    let (_stop_tx, mut stop_rx) = watch::channel(false);
    for _ in 0..3 {
        let report = tick(&mut monitor, &mut stop_rx).await;
        assert!(matches!(
            report.status,
            TickStatus::PluginFailed(PluginError::Deadline { .. })
        ));
    }
    let store = TicketStore::open(&dir.path().join("t.db")).unwrap();
    let live = store.live(&subject).unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].kind, "plugin-failure");
    assert_eq!(live[0].count, 3);
    assert_eq!(live[0].evidence["kind"], "deadline");
    assert_eq!(store.heartbeats().unwrap()[0].tick, 3);
}

/// The epoch advances when any call's deadline comes, and every running store sees it: a
/// spinning guest whose own deadline is later must keep running until that deadline, and
/// each is cut off at its own time, not rounded to a tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_spinners_are_each_cut_off_at_their_own_deadline() {
    let short = load(guests::GUEST_SPIN, short_deadline(), &[])
        .await
        .expect("metadata is fine");
    let long_limits = Limits {
        deadline: Duration::from_millis(1500),
        ..Limits::default()
    };
    let long = load(guests::GUEST_SPIN, long_limits, &[])
        .await
        .expect("metadata is fine");
    let spin = |plugin: operator::runtime::Plugin| async move {
        let mut session = plugin.session().await.unwrap();
        let start = std::time::Instant::now();
        let err = session.observe().await.unwrap_err();
        (start.elapsed(), err)
    };
    let (short, long) = tokio::join!(tokio::spawn(spin(short)), tokio::spawn(spin(long)));
    let ((short_took, short_err), (long_took, long_err)) = (short.unwrap(), long.unwrap());
    assert!(
        matches!(short_err, PluginError::Deadline { .. }),
        "{short_err}"
    );
    assert!(
        matches!(long_err, PluginError::Deadline { .. }),
        "{long_err}"
    );
    assert!(
        short_took >= Duration::from_millis(300) && short_took < Duration::from_millis(1000),
        "the short spinner ran {short_took:?}"
    );
    assert!(
        long_took >= Duration::from_millis(1500) && long_took < Duration::from_millis(2500),
        "the long spinner ran {long_took:?}: another call's deadline must not cut it off"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_hog() {
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let plugin = load(guests::GUEST_HOG, limits, &[]).await.unwrap();
    let err = plugin.session().await.unwrap().observe().await.unwrap_err();
    match &err {
        PluginError::Memory { limit, wanted, .. } => {
            assert_eq!(*limit, 32);
            assert!(*wanted > 32, "{err}");
        }
        other => panic!("expected a memory error, got {other}"),
    }
    // The next instance starts clean.
    assert_eq!(
        plugin
            .session()
            .await
            .unwrap()
            .metadata()
            .await
            .unwrap()
            .name,
        "hog"
    );
    // The hog implements only `metadata` and `observe`: the SDK's defaults answer the rest
    // (no violations; actions are refused by the host, as the plugin declares none).
    let empty = operator::model::Observation {
        timestamp_ms: 1,
        components: vec![],
        metrics: Default::default(),
        events: vec![],
        problems: vec![],
    };
    let checked = plugin
        .session()
        .await
        .unwrap()
        .check_invariants(&[empty])
        .await
        .unwrap();
    assert!(checked.violations.is_empty() && checked.capped.is_none());
    assert!(matches!(
        plugin.execute("anything", &[], None).await,
        Err(PluginError::UnknownAction { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_panic() {
    let plugin = load(guests::GUEST_PANIC, Limits::default(), &[])
        .await
        .unwrap();
    let err = plugin.session().await.unwrap().observe().await.unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("guest invariant broken: expected at least one node"),
        "the guest's panic message is reported: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_escape() {
    let listener = CountingListener::start();
    let allowed = JsonServer::start("{}");
    let redirector = JsonServer::start("");
    redirector.set(302, &format!("http://127.0.0.1:{}/", listener.port));
    let plugin = load(
        guests::GUEST_ESCAPE,
        Limits::default(),
        &[
            ("probe_port", listener.port.to_string()),
            ("allowed", allowed.url()),
            ("redirector", redirector.url()),
            ("redis_url", "redis://127.0.0.1:1".to_string()),
        ],
    )
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
    let outcome = |name: &str| -> String {
        let e = obs
            .events
            .iter()
            .find(|e| e.message == name)
            .unwrap_or_else(|| panic!("no attempt {name}"));
        e.attributes["outcome"].clone()
    };
    for e in &obs.events {
        assert!(
            e.attributes["outcome"].starts_with("blocked"),
            "{} escaped: {}",
            e.message,
            e.attributes["outcome"]
        );
    }
    assert_eq!(obs.events.len(), 9);
    // Each attempt through a host import is refused by the host's policy, for the reason
    // that applies to it: not a connection failure or any other error.
    for (attempt, reason) in [
        (
            "cloud-metadata",
            "origin http://169.254.169.254:80 is not allowlisted",
        ),
        ("loopback-listener", "is not allowlisted"),
        ("post-in-read-only-phase", "this call is read-only"),
        ("redirect-to-listener", "redirect denied"),
        ("redis-write", "not a read-only command"),
        ("redis-unlisted-origin", "not allowlisted"),
    ] {
        let o = outcome(attempt);
        assert!(
            o.contains("denied by host: ") && o.contains(reason),
            "{attempt}: expected a host denial ({reason}), got {o}"
        );
    }
    // The WASI side has no sockets, files or environment to give: those fail inside the
    // guest's own libraries, never reaching a host import.
    for attempt in ["raw-socket", "filesystem"] {
        let o = outcome(attempt);
        assert!(
            o.starts_with("blocked: ") && !o.contains("denied by host"),
            "{attempt}: {o}"
        );
    }
    assert_eq!(outcome("environment"), "blocked: no environment variables");
    // The redirect really was offered, and the POST never reached the allowed server.
    assert_eq!(
        redirector
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        allowed.requests.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        listener.accepted(),
        0,
        "the listener must see no connection at all"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_oldwit() {
    let err = load(guests::GUEST_OLDWIT, Limits::default(), &[])
        .await
        .err()
        .expect("must be refused");
    match &err {
        PluginError::IncompatibleVersion { plugin, host, .. } => {
            assert_eq!(plugin, "0.9.0");
            assert_eq!(host, "0.1.0, 0.2.0, 0.3.0, 0.4.0, 0.5.0");
        }
        other => panic!("expected a version error, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("operator:subject@0.9.0")
            && msg.contains("operator:subject@{0.1.0, 0.2.0, 0.3.0, 0.4.0, 0.5.0}"),
        "{msg}"
    );
}

/// The well-behaved guest, through the real monitor loop: open, dedup, auto-resolve.
#[tokio::test(flavor = "multi_thread")]
async fn guest_good() {
    let server = JsonServer::start(
        r#"{"components":[{"id":"a","healthy":true},{"id":"b","healthy":true}]}"#,
    );
    let plugin = load(
        guests::GUEST_GOOD,
        Limits::default(),
        &[("target", server.url())],
    )
    .await
    .unwrap();
    let subject = plugin.name().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let policy = Policy {
        resolve_after: 2,
        history: 3,
        max_linked: 30,
        ..Policy::default()
    };
    let config = MonitorConfig::new(Duration::from_millis(10), policy);
    let mut monitor = Monitor::new(plugin, TicketStore::open(&db).unwrap(), config);
    let (_stop_tx, mut stop) = watch::channel(false);
    let reader = TicketStore::open(&db).unwrap();

    for _ in 0..2 {
        let r = tick(&mut monitor, &mut stop).await;
        assert!(
            matches!(&r.status, TickStatus::Observed { violations, .. } if violations.is_empty())
        );
    }
    assert!(
        reader.list(None, None).unwrap().is_empty(),
        "healthy: no ticket"
    );
    let stored: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM observations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0, "a healthy tick stores no observation");

    server.set(
        200,
        r#"{"components":[{"id":"a","healthy":true},{"id":"b","healthy":false}]}"#,
    );
    let r = tick(&mut monitor, &mut stop).await;
    assert_eq!(r.outcome.opened.len(), 1);
    let id = r.outcome.opened[0].id;
    for _ in 0..3 {
        let r = tick(&mut monitor, &mut stop).await;
        assert!(
            r.outcome.opened.is_empty(),
            "a repeat updates, never reopens"
        );
    }
    let t = reader.get(id).unwrap();
    assert_eq!(
        (t.status, t.count, t.invariant.as_str()),
        (Status::Open, 4, "GOOD-01")
    );
    assert_eq!(
        t.evidence["history_len"], "3",
        "check-invariants sees the history window"
    );
    let detail = reader.detail(id).unwrap();
    let ticks: Vec<i64> = detail.observations.iter().map(|o| o.tick).collect();
    assert_eq!(
        ticks,
        (1..=6).collect::<Vec<_>>(),
        "the ticket keeps the observations around it: the two healthy ticks before it \
         (held by the store until it opened) and its own four"
    );

    server.set(
        200,
        r#"{"components":[{"id":"a","healthy":true},{"id":"b","healthy":true}]}"#,
    );
    let r = tick(&mut monitor, &mut stop).await;
    assert!(
        r.outcome.resolved.is_empty(),
        "one clean tick is not enough"
    );
    let r = tick(&mut monitor, &mut stop).await;
    assert_eq!(r.outcome.resolved.len(), 1);
    let t = reader.get(id).unwrap();
    assert_eq!(
        (t.status, t.resolution),
        (Status::Resolved, Some(Resolution::Auto))
    );

    // Broken again: a new ticket, the old one stays resolved.
    server.set(200, r#"{"components":[{"id":"b","healthy":false}]}"#);
    let r = tick(&mut monitor, &mut stop).await;
    assert_eq!(r.outcome.opened.len(), 1);
    assert_ne!(r.outcome.opened[0].id, id);

    // The subject vanishing is an observe failure with its own ticket, not a trap.
    server.set(200, "not json");
    let r = tick(&mut monitor, &mut stop).await;
    match &r.status {
        TickStatus::ObserveFailed(e) => assert!(e.to_string().contains("invalid JSON"), "{e}"),
        other => panic!("expected an observe failure, got {other:?}"),
    }
    assert!(
        reader
            .live(&subject)
            .unwrap()
            .iter()
            .any(|t| t.kind == "observe-failure")
    );
}

/// The `logs` import, from both kinds of source the user can name: a file, and a real
/// container's log through the Docker engine. Only configured components have a log.
#[tokio::test(flavor = "multi_thread")]
async fn guest_good_reads_logs_from_a_file_and_from_docker() {
    use operator_tests::docker::Container;
    let server = JsonServer::start(
        r#"{"components":[{"id":"a","healthy":true},{"id":"b","healthy":true},{"id":"c","healthy":true}]}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.log");
    std::fs::write(
        &file,
        "2026-11-25T08:00:00Z  INFO node: listening\n\
         2026-11-25T08:00:01Z  WARN node: redis call took 900ms\n\
         2026-11-25T08:00:02Z ERROR node: redis unreachable: connection refused\n",
    )
    .unwrap();
    let name = format!("operator-logs-test-{}", std::process::id());
    let container = Container::busybox(
        &name,
        "echo 'level=info msg=started'; echo 'level=error msg=\"disk full\"' >&2; sleep 60",
    );
    container.wait_for_log("disk full");
    let plugin = load(
        guests::GUEST_GOOD,
        Limits::default(),
        &[
            ("target", server.url()),
            ("log.a", format!("file:{}", file.display())),
            ("log.b", format!("docker:{name}")),
        ],
    )
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
    let lines: Vec<(&str, &str)> = obs
        .events
        .iter()
        .map(|e| (e.component.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(lines.len(), 3, "warnings and errors only: {lines:?}");
    assert!(
        lines[0]
            == (
                "a",
                "2026-11-25T08:00:01Z  WARN node: redis call took 900ms"
            )
    );
    assert!(lines[1].0 == "a" && lines[1].1.contains("redis unreachable"));
    assert!(
        lines[2].0 == "b" && lines[2].1.contains("disk full"),
        "stderr of the container: {lines:?}"
    );
    assert!(obs.problems.is_empty(), "{:?}", obs.problems);

    // A source that cannot be read is a problem of that component, not a failed tick.
    drop(container);
    let obs = plugin
        .session()
        .await
        .unwrap()
        .observe()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(obs.problems.len(), 1, "{:?}", obs.problems);
    assert_eq!(obs.problems[0].source, "b");
    assert!(
        obs.problems[0].message.contains(&name),
        "{}",
        obs.problems[0].message
    );
}

/// A guest blocked in a WASI sleep is cut off like a spinning one (the full per-phase
/// coverage is in promises.rs).
#[tokio::test(flavor = "multi_thread")]
async fn guest_sleep() {
    let plugin = load(
        guests::GUEST_SLEEP,
        short_deadline(),
        &[("phase", "observe".to_string())],
    )
    .await
    .expect("metadata does not sleep when the phase is observe");
    let started = std::time::Instant::now();
    let err = plugin.session().await.unwrap().observe().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&err, PluginError::Deadline { call, .. } if call == "observe"),
        "{err}"
    );
    assert_eq!(err.kind(), "deadline");
}

/// Ways to turn a read into something else are denied by the host, and the server hears
/// nothing; a URL given in a plain value setting grants nothing.
#[tokio::test(flavor = "multi_thread")]
async fn guest_probe() {
    let server = JsonServer::start(r#"{"components":[]}"#);
    let plugin = load(
        guests::GUEST_PROBE,
        Limits::default(),
        &[("mode", "smuggle".to_string()), ("target", server.url())],
    )
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
    let outcome = |name: &str| -> String {
        obs.events
            .iter()
            .find(|e| e.message == name)
            .unwrap_or_else(|| panic!("no attempt {name}"))
            .attributes["outcome"]
            .clone()
    };
    assert_eq!(obs.events.len(), 3);
    for (attempt, reason) in [
        ("get-with-body", "a read carries no body"),
        ("host-header", "header `Host` refused"),
        ("method-override", "header `X-HTTP-Method-Override` refused"),
    ] {
        let o = outcome(attempt);
        assert!(o.starts_with("denied: "), "{attempt}: {o}");
        assert!(o.contains(reason), "{attempt}: {o}");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the server received nothing"
    );

    // A URL in a value setting (`sneaky`) is not reachable, while the same server named in
    // an origin setting is.
    let hidden = CountingListener::start();
    let sneaky = format!("http://127.0.0.1:{}/", hidden.port);
    let plugin = load(
        guests::GUEST_PROBE,
        Limits::default(),
        &[
            ("mode", "sneaky".to_string()),
            ("sneaky", sneaky.clone()),
            ("target", server.url()),
        ],
    )
    .await
    .unwrap();
    assert!(
        !plugin
            .allowed_origins()
            .iter()
            .any(|o| o.contains(&hidden.port.to_string())),
        "{:?}",
        plugin.allowed_origins()
    );
    let obs = plugin
        .session()
        .await
        .unwrap()
        .observe()
        .await
        .unwrap()
        .unwrap();
    let o = obs.events[0].attributes["outcome"].clone();
    assert!(
        o.starts_with("denied: ") && o.contains("not allowlisted"),
        "{o}"
    );
    // The control: the same attempt succeeds once the user allows that origin, so the
    // denial above is the grant policy and not a broken attempt.
    let control = PluginBuilder::new(PluginSource::file(guests::GUEST_PROBE))
        .setting("mode", "sneaky")
        .setting("sneaky", server.url())
        .allow(server.url())
        .build()
        .await
        .unwrap();
    let obs = control
        .session()
        .await
        .unwrap()
        .observe()
        .await
        .unwrap()
        .unwrap();
    assert!(
        obs.events[0].attributes["outcome"].starts_with("ok: "),
        "{:?}",
        obs.events
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        hidden.accepted(),
        0,
        "the hidden listener saw no connection"
    );
}

/// A contract 0.1 component, built with wit-bindgen against wit/since_v0.1.0 and not the
/// SDK, still loads and observes through the host, and (0.1 declares no settings) its
/// URL-valued settings are granted as they always were.
#[tokio::test(flavor = "multi_thread")]
async fn guest_v010() {
    let server = JsonServer::start(r#"{"ok":true}"#);
    let plugin = load(
        guests::GUEST_V010,
        Limits::default(),
        &[("target", server.url())],
    )
    .await
    .unwrap();
    assert_eq!(plugin.wit_version(), "0.1.0");
    assert_eq!(plugin.metadata().name, "v010");
    assert!(plugin.metadata().settings.is_empty(), "0.1 declares none");
    assert!(
        plugin
            .allowed_origins()
            .iter()
            .any(|o| o.contains(&server.port.to_string())),
        "the URL setting is a grant under 0.1: {:?}",
        plugin.allowed_origins()
    );
    let mut session = plugin.session().await.unwrap();
    let obs = session.observe().await.unwrap().unwrap();
    assert_eq!(obs.components.len(), 1);
    assert_eq!(obs.components[0].id, "svc");
    assert_eq!(obs.components[0].attributes["status"], "200");
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        session
            .check_invariants(&[obs])
            .await
            .unwrap()
            .violations
            .is_empty()
    );

    // The subject failing shows as a 0.1 violation, converted like any other.
    server.set(503, "down");
    let mut session = plugin.session().await.unwrap();
    let obs = session.observe().await.unwrap().unwrap();
    let v = session.check_invariants(&[obs]).await.unwrap().violations;
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].invariant, "V010-01");

    // Its read-only action runs without permission.
    let (_, out) = plugin.execute("ping", &[], None).await.unwrap();
    assert_eq!(out.unwrap(), "HTTP 503");
}

/// How many times the instance that made this observation had observed.
fn instance_observes(report: &TickReport) -> u64 {
    let TickStatus::Observed { observation, .. } = &report.status else {
        panic!("expected an observation, got {:?}", report.status);
    };
    observation.components[0]
        .attributes
        .get("instance_observes")
        .and_then(|v| v.parse().ok())
        .expect("every component says how often its instance observed")
}

/// The monitor keeps one instance across ticks; a trap, an overrun deadline or the memory
/// cap discards it, and the tick after that runs on a fresh one.
#[tokio::test(flavor = "multi_thread")]
async fn guest_scale() {
    let control = JsonServer::start(r#"{"mode":"ok"}"#);
    let limits = Limits {
        deadline: Duration::from_millis(500),
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let settings = [
        ("components", "3".to_string()),
        ("series", "50".to_string()),
        ("control", control.url()),
    ];
    let plugin = load(guests::GUEST_SCALE, limits, &settings).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = TicketStore::open(&dir.path().join("t.db")).unwrap();
    let config = MonitorConfig::new(Duration::from_millis(10), Policy::default());
    let mut monitor = Monitor::new(plugin, store, config);
    let (_stop_tx, mut stop) = watch::channel(false);

    let mut seen = vec![];
    for _ in 0..3 {
        seen.push(instance_observes(&tick(&mut monitor, &mut stop).await));
    }
    assert_eq!(seen, [1, 2, 3], "one instance serves consecutive ticks");
    assert_eq!(monitor.instances_started(), 1);

    for (mode, kind) in [("trap", "trap"), ("sleep", "deadline"), ("grow", "memory")] {
        control.set(200, &format!(r#"{{"mode":"{mode}"}}"#));
        let failed = tick(&mut monitor, &mut stop).await;
        match &failed.status {
            TickStatus::PluginFailed(e) => assert_eq!(e.kind(), kind, "{mode}: {e}"),
            other => panic!("{mode}: expected the plugin to fail, got {other:?}"),
        }
        control.set(200, r#"{"mode":"ok"}"#);
        let next = tick(&mut monitor, &mut stop).await;
        assert_eq!(
            instance_observes(&next),
            1,
            "after a {mode}, the next tick starts on a fresh instance"
        );
    }
    assert_eq!(monitor.instances_started(), 4);

    // Asked to, the monitor instantiates every tick; and a kept instance is replaced after
    // `max_ticks`.
    for (policy, want) in [
        (InstancePolicy::fresh_every_tick(), [1, 1, 1, 1]),
        (
            InstancePolicy {
                max_ticks: 2,
                ..InstancePolicy::default()
            },
            [1, 2, 1, 2],
        ),
    ] {
        let plugin = load(guests::GUEST_SCALE, limits, &settings).await.unwrap();
        let store = TicketStore::open(&dir.path().join("u.db")).unwrap();
        let mut config = MonitorConfig::new(Duration::from_millis(10), Policy::default());
        config.instance = policy;
        let mut monitor = Monitor::new(plugin, store, config);
        let mut seen = vec![];
        for _ in 0..4 {
            seen.push(instance_observes(&tick(&mut monitor, &mut stop).await));
        }
        assert_eq!(seen, want, "{policy:?}");
    }
}

fn evidence<'a>(v: &'a operator::model::Violation, key: &str) -> &'a str {
    v.evidence
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no evidence `{key}` in {v:?}"))
}

/// A contract 0.2 plugin (no `check-retained`) is sent the whole history every tick, on
/// the instance the monitor keeps.
#[tokio::test(flavor = "multi_thread")]
async fn guest_v020() {
    let server = JsonServer::start(r#"{"ok":true}"#);
    let other = JsonServer::start(r#"{"ok":true}"#);
    let plugin = load(
        guests::GUEST_V020,
        Limits::default(),
        &[("target", server.url()), ("note", other.url())],
    )
    .await
    .unwrap();
    assert_eq!(plugin.wit_version(), "0.2.0");
    assert_eq!(plugin.metadata().settings.len(), 1, "0.2 declares settings");
    let origins = plugin.allowed_origins();
    assert!(
        origins.iter().any(|o| o.contains(&server.port.to_string()))
            && !origins.iter().any(|o| o.contains(&other.port.to_string())),
        "only the declared origin is a grant: {origins:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let store = TicketStore::open(&dir.path().join("t.db")).unwrap();
    let config = MonitorConfig::new(Duration::from_millis(10), Policy::default());
    let mut monitor = Monitor::new(plugin, store, config);
    let (_stop_tx, mut stop) = watch::channel(false);
    for _ in 0..3 {
        let r = tick(&mut monitor, &mut stop).await;
        assert!(
            matches!(&r.status, TickStatus::Observed { violations, .. } if violations.is_empty())
        );
    }
    server.set(503, "down");
    let r = tick(&mut monitor, &mut stop).await;
    let TickStatus::Observed { violations, .. } = &r.status else {
        panic!("{:?}", r.status);
    };
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].invariant, "V020-01");
    assert_eq!(
        evidence(&violations[0], "window"),
        "4",
        "three past observations and the current one"
    );
    assert_eq!(monitor.instances_started(), 1, "the instance is kept");
    let checks = monitor.instance_checks().unwrap();
    assert_eq!((checks.retained, checks.sent), (0, 4));
}

/// A contract 0.3 plugin (`check-retained`, no `send-all`) loads, its imports forward to
/// the newest implementation, and the monitor's kept instance checks the window it holds.
#[tokio::test(flavor = "multi_thread")]
async fn guest_v030() {
    let server = JsonServer::start(r#"{"ok":true}"#);
    let plugin = load(
        guests::GUEST_V030,
        Limits::default(),
        &[("target", server.url())],
    )
    .await
    .unwrap();
    assert_eq!(plugin.wit_version(), "0.3.0");
    let dir = tempfile::tempdir().unwrap();
    let store = TicketStore::open(&dir.path().join("t.db")).unwrap();
    let config = MonitorConfig::new(Duration::from_millis(10), Policy::default());
    let mut monitor = Monitor::new(plugin, store, config);
    let (_stop_tx, mut stop) = watch::channel(false);
    for _ in 0..3 {
        let r = tick(&mut monitor, &mut stop).await;
        assert!(
            matches!(&r.status, TickStatus::Observed { violations, .. } if violations.is_empty()),
            "{:?}",
            r.status
        );
    }
    server.set(503, "down");
    let r = tick(&mut monitor, &mut stop).await;
    let TickStatus::Observed { violations, .. } = &r.status else {
        panic!("{:?}", r.status);
    };
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].invariant, "V030-01");
    assert_eq!(evidence(&violations[0], "window"), "4");
    assert_eq!(
        evidence(&violations[0], "window_was"),
        "held",
        "a kept 0.3 instance checks what it holds"
    );
    assert!(server.requests.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    let checks = monitor.instance_checks().unwrap();
    assert!(checks.retained >= 1, "{checks:?}");
}

/// A contract 0.4 plugin (built without the SDK, which follows 0.5) loads, its
/// `http.send-all` forwards to the newest implementation, and the metric samples it sends
/// as a list reach the host's table (each string once, labels in key order) and go back to
/// it as a list when the host sends the window.
#[tokio::test(flavor = "multi_thread")]
async fn guest_v040() {
    let server = JsonServer::start(r#"{"ok":true}"#);
    let plugin = load(
        guests::GUEST_V040,
        Limits::default(),
        &[("target", server.url())],
    )
    .await
    .unwrap();
    assert_eq!(plugin.wit_version(), "0.4.0");
    let mut kept = plugin.session().await.unwrap();
    let up = kept.observe().await.unwrap().unwrap();
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "both requests of the send-all were made"
    );
    type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);
    let samples: Vec<Sample> = up
        .metrics
        .iter()
        .map(|m| (m.name(), m.labels().iter().collect(), m.value()))
        .collect();
    assert_eq!(
        samples,
        [
            ("svc_up", vec![("node", "svc")], 1.0),
            ("svc_status", vec![("code", "200"), ("node", "svc")], 1.0),
            ("svc_answers", vec![("node", "svc")], 2.0),
        ],
        "labels in key order"
    );
    assert_eq!(
        up.metrics.table().0.len(),
        7,
        "svc_up, node, svc, svc_status, code, 200, svc_answers: each held once"
    );
    server.set(503, "down");
    let down = kept.observe().await.unwrap().unwrap();
    let window = [&up, &down];
    let held = kept.check_latest(&window).await.unwrap();
    assert_eq!(
        kept.checks().retained,
        1,
        "the kept 0.4 instance checked what it holds"
    );
    assert_eq!(evidence(&held.violations[0], "window_was"), "held");
    assert_eq!(evidence(&held.violations[0], "samples"), "3");
    let sent = plugin
        .session()
        .await
        .unwrap()
        .check_window(&window)
        .await
        .unwrap();
    let v = &sent.violations[0];
    assert_eq!(v.invariant, "V040-01");
    assert_eq!(evidence(v, "window"), "2");
    assert_eq!(evidence(v, "window_was"), "sent");
    assert_eq!(evidence(v, "samples"), "3");
    assert_eq!(
        evidence(v, "status_labels"),
        "code=503,node=svc",
        "sent back as a list, in the host's form"
    );
}

/// A contract 0.5 plugin's metric table is checked as it arrives. One that points outside
/// itself breaks the contract: the call fails naming the index, and a new session works.
/// One whose few strings stand for far more text than they take is cut to the text budget
/// and says so. Labels out of key order are put in order, and the table goes back to the
/// plugin as the host holds it.
#[tokio::test(flavor = "multi_thread")]
async fn guest_table() {
    let mode = |m: &str| [("mode", m.to_string())];
    for (m, says) in [
        ("bad-name", "sample 0 is named by string 2 of 2"),
        ("bad-labels", "sample 1 has label pairs 1..2 of 1"),
    ] {
        let plugin = load(guests::GUEST_TABLE, Limits::default(), &mode(m))
            .await
            .unwrap();
        let mut session = plugin.session().await.unwrap();
        let err = session.observe().await.unwrap_err();
        assert_eq!(err.kind(), "contract", "{m}: {err}");
        assert!(err.to_string().contains(says), "{m}: {err}");
        assert!(
            matches!(session.observe().await, Err(PluginError::Spent)),
            "{m}: the instance is spent"
        );
        assert!(
            plugin.session().await.unwrap().metadata().await.is_ok(),
            "{m}: a new session works"
        );
    }

    let plugin = load(guests::GUEST_TABLE, Limits::default(), &mode("bomb"))
        .await
        .unwrap();
    let o = plugin
        .session()
        .await
        .unwrap()
        .observe()
        .await
        .unwrap()
        .unwrap();
    let budget = Limits::default().output.max_metric_text_bytes;
    let per_sample = 4 + 64 * (3 + 4_000);
    assert_eq!(o.metrics.len(), budget / per_sample, "cut to the budget");
    assert!(o.metrics.text_bytes() <= budget);
    let note = &o.problems.last().expect("the cut is reported").message;
    assert!(
        note.contains(&format!(
            "{} metric samples beyond the text budget",
            50_000 - o.metrics.len()
        )),
        "{note}"
    );

    let plugin = load(guests::GUEST_TABLE, Limits::default(), &[])
        .await
        .unwrap();
    let mut session = plugin.session().await.unwrap();
    let o = session.observe().await.unwrap().unwrap();
    let labels: Vec<Vec<(&str, &str)>> = o
        .metrics
        .iter()
        .map(|m| m.labels().iter().collect())
        .collect();
    assert_eq!(
        labels,
        [vec![("node", "a"), ("zone", "z1")], vec![("zone", "z1")]]
    );
    let checked = session.check_window(&[&o]).await.unwrap();
    assert_eq!(
        evidence(&checked.violations[0], "samples"),
        "up{node=a,zone=z1} up{zone=z1}",
        "sent back as the host holds it"
    );
}

/// What a 0.3 instance checks from the window it holds is what it would answer if the
/// host sent that window: same observations, same label order, same violations. The
/// scale guest returns its labels out of key order and reports the window it saw.
#[tokio::test(flavor = "multi_thread")]
async fn a_kept_instance_checks_the_window_it_holds_as_if_it_were_sent() {
    let settings = [("components", "3".to_string()), ("series", "4".to_string())];
    let plugin = load(guests::GUEST_SCALE, Limits::default(), &settings)
        .await
        .unwrap();
    let mut kept = plugin.session().await.unwrap();
    let mut window: Vec<operator::model::Observation> = vec![];
    for tick in 1..=7 {
        let o = kept.observe().await.unwrap().unwrap();
        window.push(o);
        if window.len() > 5 {
            window.remove(0);
        }
        let refs: Vec<&operator::model::Observation> = window.iter().collect();
        let held = kept.check_latest(&refs).await.unwrap();
        // A fresh instance that holds nothing is sent the same window.
        let sent = plugin
            .session()
            .await
            .unwrap()
            .check_window(&refs)
            .await
            .unwrap();
        assert_eq!(held.violations, sent.violations, "tick {tick}");
        let seen = &held.violations[0];
        assert_eq!(evidence(seen, "count"), window.len().to_string());
        assert!(
            evidence(seen, "first_labels")
                .split(',')
                .all(|l| l == "component+series"),
            "held in the host's label order: {seen:?}"
        );
    }
    assert_eq!(
        kept.checks().retained,
        7,
        "every check used the held window"
    );
    assert_eq!(kept.checks().sent, 0);

    // A window that does not end with what the instance returned is sent instead: here the
    // caller's history is longer than anything the instance saw.
    let o = kept.observe().await.unwrap().unwrap();
    let older = window.clone();
    let mut long: Vec<&operator::model::Observation> = older.iter().collect();
    long.extend(older.iter());
    long.push(&o);
    let before = kept.checks();
    let checked = kept.check_latest(&long).await.unwrap();
    assert_eq!(
        evidence(&checked.violations[0], "count"),
        long.len().to_string()
    );
    assert_eq!(kept.checks().sent, before.sent + 1);
}

/// The bench's sandboxed-I/O row rests on this guest: it makes exactly the script's
/// requests, in order and batched as told, and counts what came back; the host's policies
/// still apply to it (a write and an origin nobody granted fail, and the rest still run).
#[tokio::test(flavor = "multi_thread")]
async fn guest_replay() {
    use operator::model::{Component, ComponentState, Observation};
    use operator::runtime::RecordedRequest;
    use operator_tests::processes::Redis;

    let body = r#"{"replayed":true}"#;
    let server = JsonServer::start(body);
    let redis = Redis::start();
    let plugin = load(
        guests::GUEST_REPLAY,
        Limits::default(),
        &[("nodes", server.url()), ("redis", redis.url())],
    )
    .await
    .unwrap();
    let mut session = plugin.session().await.unwrap();
    let granted = format!("{}/metrics", server.url().trim_end_matches('/'));
    let steps = [
        format!("H\u{1f}{granted}\u{1f}http://127.0.0.1:1/never"),
        format!("R\u{1f}{}\u{1f}EXISTS\u{1f}nothing", redis.url()),
        format!("R\u{1f}{}\u{1f}SET\u{1f}k\u{1f}v", redis.url()),
    ]
    .join("\u{1e}");
    let script = Observation {
        timestamp_ms: 1,
        components: vec![Component {
            id: "script".into(),
            kind: "script".into(),
            address: String::new(),
            state: ComponentState::Up,
            attributes: [("steps".to_string(), steps)].into(),
        }],
        metrics: Default::default(),
        events: vec![],
        problems: vec![],
    };
    session.check_invariants(&[script]).await.unwrap();
    session.record_requests(true);
    let obs = session.observe().await.unwrap().unwrap();
    let replay = &obs.components[0].attributes;
    assert_eq!(replay["steps"], "3");
    assert_eq!(
        replay["failed"], "2",
        "the ungranted origin and the write: {replay:?}"
    );
    assert_eq!(
        replay["bytes"],
        (body.len() + 8).to_string(),
        "the body and one integer reply"
    );
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Only the requests the host let through are recorded, as the floor replays them.
    assert_eq!(
        session.take_requests(),
        [
            RecordedRequest::Http {
                method: "GET".into(),
                url: granted,
                batch: Some(1)
            },
            RecordedRequest::Redis {
                url: redis.url(),
                args: vec!["EXISTS".into(), "nothing".into()]
            },
        ]
    );
}
