//! Every hostile guest under tests/guests is contained with a clear error, and the host
//! keeps going. `foreach_guest!` makes a missing test a compile error.

use operator::monitor::{Monitor, MonitorConfig, TickStatus};
use operator::runtime::{Grants, Limits, Plugin, PluginError, Runtime};
use operator::tickets::{Policy, Status, TicketStore};
use operator_tests::guests;
use operator_tests::support::{CountingListener, JsonServer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
operator_tests::foreach_guest!(assert_test_exists);

fn load(path: &str, limits: Limits, settings: &[(&str, String)]) -> Result<Plugin, PluginError> {
    let runtime = Runtime::new(limits)?;
    let compiled = runtime.compile_file(Path::new(path))?;
    let grants = Grants {
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        allow: vec![],
    };
    Plugin::new(runtime, compiled, grants)
}

fn short_deadline() -> Limits {
    Limits {
        deadline: Duration::from_millis(300),
        ..Limits::default()
    }
}

#[test]
fn guest_spin() {
    let plugin = load(guests::GUEST_SPIN, short_deadline(), &[]).expect("metadata is fine");
    let err = plugin.session().unwrap().observe().unwrap_err();
    assert!(matches!(err, PluginError::Deadline { .. }), "{err}");
    assert!(
        err.to_string().contains("overran its deadline of 300ms"),
        "{err}"
    );

    // Through the monitor: every tick fails the same way, one ticket counts them, and the
    // loop keeps ticking.
    let dir = tempfile::tempdir().unwrap();
    let store = TicketStore::open(&dir.path().join("t.db")).unwrap();
    let config = MonitorConfig {
        interval: Duration::from_millis(10),
        once: false,
        policy: Policy::default(),
    };
    let mut monitor = Monitor::new(plugin, store, config);
    for _ in 0..3 {
        let report = monitor.tick().unwrap();
        assert!(matches!(
            report.status,
            TickStatus::PluginFailed(PluginError::Deadline { .. })
        ));
    }
    let store = TicketStore::open(&dir.path().join("t.db")).unwrap();
    let live = store.live("spin").unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].kind, "plugin-failure");
    assert_eq!(live[0].count, 3);
    assert_eq!(live[0].evidence["kind"], "deadline");
    assert_eq!(store.heartbeats().unwrap()[0].tick, 3);
}

#[test]
fn guest_hog() {
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let plugin = load(guests::GUEST_HOG, limits, &[]).unwrap();
    let err = plugin.session().unwrap().observe().unwrap_err();
    match &err {
        PluginError::Memory { limit, wanted, .. } => {
            assert_eq!(*limit, 32);
            assert!(*wanted > 32, "{err}");
        }
        other => panic!("expected a memory error, got {other}"),
    }
    // The next instance starts clean.
    assert_eq!(plugin.session().unwrap().metadata().unwrap().name, "hog");
}

#[test]
fn guest_panic() {
    let plugin = load(guests::GUEST_PANIC, Limits::default(), &[]).unwrap();
    let err = plugin.session().unwrap().observe().unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("guest invariant broken: expected at least one node"),
        "the guest's panic message is reported: {msg}"
    );
}

#[test]
fn guest_escape() {
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
    .unwrap();
    let obs = plugin.session().unwrap().observe().unwrap().unwrap();
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
    assert!(
        outcome("cloud-metadata").contains("origin http://169.254.169.254:80 is not allowlisted")
    );
    assert!(outcome("loopback-listener").contains("is not allowlisted"));
    assert!(outcome("post-in-read-only-phase").contains("read-only"));
    assert!(
        outcome("redirect-to-listener").contains("redirect denied"),
        "{}",
        outcome("redirect-to-listener")
    );
    assert!(outcome("redis-write").contains("not a read-only command"));
    assert!(outcome("redis-unlisted-origin").contains("not allowlisted"));
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

#[test]
fn guest_oldwit() {
    let err = load(guests::GUEST_OLDWIT, Limits::default(), &[])
        .err()
        .expect("must be refused");
    match &err {
        PluginError::IncompatibleVersion { plugin, host, .. } => {
            assert_eq!(plugin, "0.9.0");
            assert_eq!(host, "0.1.0");
        }
        other => panic!("expected a version error, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("operator:subject@0.9.0") && msg.contains("operator:subject@0.1.0"),
        "{msg}"
    );
}

/// The well-behaved guest, through the real monitor loop: open, dedup, auto-resolve.
#[test]
fn guest_good() {
    let server = JsonServer::start(
        r#"{"components":[{"id":"a","healthy":true},{"id":"b","healthy":true}]}"#,
    );
    let plugin = load(
        guests::GUEST_GOOD,
        Limits::default(),
        &[("target", server.url())],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let policy = Policy {
        resolve_after: 2,
        history: 3,
        max_linked: 30,
    };
    let config = MonitorConfig {
        interval: Duration::from_millis(10),
        once: false,
        policy,
    };
    let mut monitor = Monitor::new(plugin, TicketStore::open(&db).unwrap(), config);
    let reader = TicketStore::open(&db).unwrap();

    for _ in 0..2 {
        let r = monitor.tick().unwrap();
        assert!(
            matches!(&r.status, TickStatus::Observed { violations, .. } if violations.is_empty())
        );
    }
    assert!(
        reader.list(None, None).unwrap().is_empty(),
        "healthy: no ticket"
    );

    server.set(
        200,
        r#"{"components":[{"id":"a","healthy":true},{"id":"b","healthy":false}]}"#,
    );
    let r = monitor.tick().unwrap();
    assert_eq!(r.outcome.opened.len(), 1);
    let id = r.outcome.opened[0].id;
    for _ in 0..3 {
        let r = monitor.tick().unwrap();
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
    assert!(
        detail.observations.len() >= 4,
        "the ticket keeps the observations around it"
    );

    server.set(
        200,
        r#"{"components":[{"id":"a","healthy":true},{"id":"b","healthy":true}]}"#,
    );
    let r = monitor.tick().unwrap();
    assert!(
        r.outcome.resolved.is_empty(),
        "one clean tick is not enough"
    );
    let r = monitor.tick().unwrap();
    assert_eq!(r.outcome.resolved.len(), 1);
    let t = reader.get(id).unwrap();
    assert_eq!(
        (t.status, t.resolution.as_deref()),
        (Status::Resolved, Some("auto"))
    );

    // Broken again: a new ticket, the old one stays resolved.
    server.set(200, r#"{"components":[{"id":"b","healthy":false}]}"#);
    let r = monitor.tick().unwrap();
    assert_eq!(r.outcome.opened.len(), 1);
    assert_ne!(r.outcome.opened[0].id, id);

    // The subject vanishing is an observe failure with its own ticket, not a trap.
    server.set(200, "not json");
    let r = monitor.tick().unwrap();
    match &r.status {
        TickStatus::ObserveFailed(e) => assert!(e.to_string().contains("invalid JSON"), "{e}"),
        other => panic!("expected an observe failure, got {other:?}"),
    }
    assert!(
        reader
            .live("good")
            .unwrap()
            .iter()
            .any(|t| t.kind == "observe-failure")
    );
}

/// The `logs` import, from both kinds of source the user can name: a file, and a real
/// container's log through the Docker engine. Only configured components have a log.
#[test]
fn guest_good_reads_logs_from_a_file_and_from_docker() {
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
    .unwrap();
    let obs = plugin.session().unwrap().observe().unwrap().unwrap();
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
    let obs = plugin.session().unwrap().observe().unwrap().unwrap();
    assert_eq!(obs.problems.len(), 1, "{:?}", obs.problems);
    assert_eq!(obs.problems[0].source, "b");
    assert!(
        obs.problems[0].message.contains(&name),
        "{}",
        obs.problems[0].message
    );
}
