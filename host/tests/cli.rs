//! The `operator` binary end to end: bad input gets a clear error and a non-zero exit,
//! the monitor loop stops cleanly on a signal, and SIGKILL mid-write loses nothing.

use operator::tickets::TicketStore;
use operator_tests::guests;
use operator_tests::support::{JsonServer, wait_for};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn operator() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_operator"));
    c.env("OPERATOR_LOG", "warn");
    c
}

fn run(args: &[&str]) -> Output {
    operator().args(args).output().expect("running operator")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn garbage_and_truncated_wasm_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not webassembly at all").unwrap();
    let real = std::fs::read(guests::GUEST_GOOD).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();

    for file in [&garbage, &truncated] {
        let path = file.to_str().unwrap();
        for args in [
            vec!["plugin", "inspect", path],
            vec![
                "run",
                "--plugin",
                path,
                "--once",
                "--db",
                dir.path().join("x.db").to_str().unwrap(),
            ],
        ] {
            let o = run(&args);
            assert!(!o.status.success(), "{args:?} must fail");
            let err = stderr(&o);
            assert!(
                err.contains("is not a valid wasm component"),
                "{args:?}: {err}"
            );
            assert!(err.contains(path), "the error names the file: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let o = run(&[
        "plugin",
        "inspect",
        dir.path().join("missing.wasm").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("neither a bundled subject"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_flags_name_what_is_wrong() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "run",
                "--subject",
                "ratelimiter",
                "--interval",
                "soon",
                "--once",
            ],
            "--interval `soon` is not valid",
        ),
        (
            &["run", "--subject", "nosuch", "--once"],
            "no bundled subject `nosuch` (bundled: ratelimiter, tikv)",
        ),
        (
            &[
                "run",
                "--subject",
                "ratelimiter",
                "--allow",
                "not-an-origin",
                "--once",
            ],
            "invalid allow entry `not-an-origin`",
        ),
        (
            &[
                "run",
                "--subject",
                "ratelimiter",
                "--memory",
                "lots",
                "--once",
            ],
            "--memory `lots`",
        ),
        (
            &["tickets", "list", "--db", "/nonexistent/dir/t.db"],
            "no ticket database at /nonexistent/dir/t.db",
        ),
        (
            &["tickets", "list", "--status", "weird"],
            "unknown status `weird`",
        ),
    ];
    for (args, expected) in cases {
        let o = run(args);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(
            stderr(&o).contains(expected),
            "{args:?}: expected `{expected}` in: {}",
            stderr(&o)
        );
    }
}

#[test]
fn inspect_list_and_export_bundled_subjects() {
    let o = run(&["plugin", "list", "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ratelimiter", "tikv"]);

    let o = run(&["plugin", "inspect", "ratelimiter", "--output", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(meta["wit_version"], "0.1.0");
    assert_eq!(meta["name"], "ratelimiter");
    assert!(!meta["invariants"].as_array().unwrap().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rl.wasm");
    let o = run(&[
        "plugin",
        "export",
        "ratelimiter",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "plugin",
        "inspect",
        out.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again, meta, "the exported file is the bundled plugin");
}

#[test]
fn mutating_actions_need_explicit_permission() {
    let server = JsonServer::start(r#"{"components":[]}"#);
    let base = ["--plugin", guests::GUEST_GOOD, "--set"];
    let target = format!("target={}", server.url());

    let mut args = vec!["action", "poke"];
    args.extend(base);
    args.push(&target);
    let o = run(&args);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("observe-only unless you pass --allow-actions"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was sent"
    );

    let mut allowed = args.clone();
    allowed.push("--allow-actions");
    let o = run(&allowed);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("HTTP 200"));
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Read-only actions need no permission.
    let mut ping = vec!["action", "ping"];
    ping.extend(base);
    ping.push(&target);
    let o = run(&ping);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn spawn_run(db: &str, target: &str, interval: &str) -> Child {
    operator()
        .args([
            "run",
            "--plugin",
            guests::GUEST_GOOD,
            "--set",
            &format!("target={target}"),
            "--interval",
            interval,
            "--db",
            db,
            "--resolve-after",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning operator run")
}

#[test]
fn sigterm_finishes_the_tick_and_exits_cleanly() {
    let server = JsonServer::start(r#"{"components":[{"id":"x","healthy":false}]}"#);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db_s = db.to_str().unwrap().to_string();
    let mut child = spawn_run(&db_s, &server.url(), "100ms");
    wait_for("a ticket", Duration::from_secs(20), || {
        let store = TicketStore::open(&db).ok()?;
        (!store.live("good").ok()?.is_empty()).then_some(())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_for("exit", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(
        out.contains("OPEN     #1 warning GOOD-01 x is unhealthy"),
        "{out}"
    );
    let store = TicketStore::open(&db).unwrap();
    let hb = &store.heartbeats().unwrap()[0];
    assert!(hb.tick >= 1 && hb.ok);
}

/// SIGKILL at arbitrary points during a stream of ticket writes, then restart: the DB is
/// consistent, no live ticket is duplicated, every ticket has its opening event, and tick
/// numbering continues.
#[test]
fn sigkill_mid_write_leaves_a_consistent_db() {
    let server = JsonServer::start(r#"{"components":[]}"#);
    // Flap the components so every tick opens, updates or resolves something.
    let flapper = {
        let s = std::sync::Arc::new(server);
        let s2 = s.clone();
        std::thread::spawn(move || {
            for i in 0..400u32 {
                let comps: Vec<String> = (0..6)
                    .map(|c| format!(r#"{{"id":"c{c}","healthy":{}}}"#, (i / (c + 1)) % 2 == 0))
                    .collect();
                s2.set(200, &format!(r#"{{"components":[{}]}}"#, comps.join(",")));
                std::thread::sleep(Duration::from_millis(15));
            }
        });
        s
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let db_s = db.to_str().unwrap().to_string();
    let mut last_tick = 0;
    for round in 0..5u64 {
        let mut child = spawn_run(&db_s, &flapper.url(), "10ms");
        // Wait for some ticks of this round, then kill at a varying moment.
        wait_for("ticks", Duration::from_secs(30), || {
            let store = TicketStore::open(&db).ok()?;
            let hb = store.heartbeats().ok()?;
            (hb.first()?.tick > last_tick + 3).then_some(())
        });
        std::thread::sleep(Duration::from_millis(37 * round + 11));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let store = TicketStore::open(&db).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok");
        let tick = store.heartbeats().unwrap()[0].tick;
        assert!(tick > last_tick, "tick numbering continues across restarts");
        last_tick = tick;
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let dupes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT dedup_key FROM tickets WHERE status != 'resolved' \
             GROUP BY subject, dedup_key HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dupes, 0);
    let without_open: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM tickets t WHERE NOT EXISTS \
             (SELECT 1 FROM ticket_events e WHERE e.ticket_id = t.id AND e.kind = 'opened')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        without_open, 0,
        "a ticket and its opening event commit together"
    );
    let tickets: i64 = conn
        .query_row("SELECT COUNT(*) FROM tickets", [], |r| r.get(0))
        .unwrap();
    assert!(
        tickets > 5,
        "the run produced real churn ({tickets} tickets)"
    );
    let fk: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
}
