//! The `operator` binary end to end: bad input gets a clear error and a non-zero exit,
//! the monitor loop stops cleanly on a signal, and SIGKILL mid-write loses nothing.

use operator::tickets::TicketStore;
use operator_tests::guests;
use operator_tests::support::{JsonServer, wait_for};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    assert_eq!(meta["wit_version"], "0.5.0");
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
        (!store.list(None, None).ok()?.is_empty()).then_some(())
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
    // Flap the components for as long as the test runs, so every tick opens, updates or
    // resolves something however slowly the operator starts.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flapper = {
        let s = std::sync::Arc::new(server);
        let s2 = s.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let comps: Vec<String> = (0..6)
                    .map(|c| {
                        format!(
                            r#"{{"id":"c{c}","healthy":{}}}"#,
                            (i / (c + 1)).is_multiple_of(2)
                        )
                    })
                    .collect();
                s2.set(200, &format!(r#"{{"components":[{}]}}"#, comps.join(",")));
                std::thread::sleep(Duration::from_millis(15));
                i = i.wrapping_add(1);
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
    done.store(true, std::sync::atomic::Ordering::Relaxed);
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

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// `plugin inspect` of a plugin that sleeps in `metadata` ends at the deadline (10s by
/// default) with an error naming the call, instead of hanging.
#[test]
fn inspect_of_a_guest_sleeping_in_metadata_ends_at_the_deadline() {
    // What starting the binary and compiling a guest of the same SDK costs here, measured
    // rather than assumed (a debug build under load takes seconds).
    let started = Instant::now();
    let o = run(&["plugin", "inspect", guests::GUEST_PROBE]);
    assert!(o.status.success(), "{}", stderr(&o));
    let baseline = started.elapsed();
    let started = Instant::now();
    let o = run(&["plugin", "inspect", guests::GUEST_SLEEP]);
    let elapsed = started.elapsed();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("`metadata` overran its deadline of 10s"),
        "{err}"
    );
    assert!(
        elapsed >= Duration::from_secs(10)
            && elapsed < baseline + Duration::from_secs(10) + Duration::from_secs(3),
        "{elapsed:?} (loading a plugin takes {baseline:?})"
    );
}

/// Spawns `operator run` on the sleep guest, asleep `sleep_ms` in every observe, and
/// returns once the monitor has started (its first tick begins right after), with the
/// rest of its log lines.
fn spawn_sleeping_run(db: &Path, sleep_ms: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_operator"))
        .args(["run", "--plugin", guests::GUEST_SLEEP])
        .args([
            "--set",
            "phase=observe",
            "--set",
            &format!("sleep_ms={sleep_ms}"),
        ])
        .args(["--timeout", "60s", "--interval", "1s"])
        .args(["--db", db.to_str().unwrap()])
        .env("OPERATOR_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("starting monitor") => return (child, rx),
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no `starting monitor` within 30s: {e}");
            }
        }
    }
}

/// `operator run` with a plugin asleep in `observe` (deadline a minute away) exits
/// cleanly within about a second of SIGTERM: the grace period, not the deadline; the
/// tick that was cut short writes nothing.
#[test]
fn sigterm_stops_a_run_whose_plugin_sleeps() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let (mut child, rx) = spawn_sleeping_run(&db, "3600000");
    // Well inside the sleeping observe.
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    sigterm(&child);
    let status = wait_for("exit", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    let took = started.elapsed();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(
        took < Duration::from_millis(1500),
        "exited {took:?} after SIGTERM"
    );
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("cut short by shutdown")),
        "{rest:?}"
    );
    let store = TicketStore::open(&db).unwrap();
    assert!(
        store.heartbeats().unwrap().is_empty(),
        "nothing half-done is written"
    );
}

/// A SIGTERM that lands mid-tick (about 200 ms into a 600 ms observe) lets that
/// tick finish and commit, then the process exits cleanly.
#[test]
fn sigterm_mid_tick_commits_that_tick() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let (mut child, _rx) = spawn_sleeping_run(&db, "600");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    sigterm(&child);
    let status = wait_for("exit", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    let store = TicketStore::open(&db).unwrap();
    let hb = store.heartbeats().unwrap();
    assert_eq!(hb.len(), 1, "{hb:?}");
    assert_eq!(hb[0].tick, 1, "the tick in flight was committed: {hb:?}");
    assert!(hb[0].ok, "{hb:?}");
}

/// A config file cannot grant write permission: only the flag can.
#[test]
fn a_config_file_cannot_allow_actions() {
    let server = JsonServer::start(r#"{"components":[]}"#);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("operator.toml");
    std::fs::write(
        &config,
        format!(
            "plugin = {:?}\nallow_actions = true\n[settings]\ntarget = {:?}\n",
            guests::GUEST_GOOD,
            server.url()
        ),
    )
    .unwrap();
    let o = run(&["action", "poke", "--config", config.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("`allow_actions` cannot be set in a config file"),
        "{err}"
    );
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was sent"
    );
    // Without the key, the same file works with the flag.
    std::fs::write(
        &config,
        format!(
            "plugin = {:?}\n[settings]\ntarget = {:?}\n",
            guests::GUEST_GOOD,
            server.url()
        ),
    )
    .unwrap();
    let o = run(&[
        "action",
        "poke",
        "--config",
        config.to_str().unwrap(),
        "--allow-actions",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}

fn subjects_in(db: &Path) -> Vec<String> {
    let o = run(&[
        "tickets",
        "list",
        "--db",
        db.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut subjects: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["subject"].as_str().unwrap().to_string())
        .collect();
    subjects.sort();
    subjects
}

/// Two different plugin files that call themselves the same name (and even share a file
/// name) file their tickets under different subjects, so one can never resolve the
/// other's; `--name` puts them under one subject on purpose.
#[test]
fn plugins_that_share_a_name_get_different_subjects() {
    let server = JsonServer::start(r#"{"components":[{"id":"x","healthy":false}]}"#);
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(guests::GUEST_GOOD).unwrap();
    let a = dir.path().join("a/good.wasm");
    let b = dir.path().join("b/good.wasm");
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::write(&a, &good).unwrap();
    // The same component plus a custom section: a different file, the same plugin name.
    let mut other = good.clone();
    other.extend_from_slice(&[0x00, 0x08, 0x06]);
    other.extend_from_slice(b"x-testb");
    std::fs::write(&b, &other).unwrap();
    let target = format!("target={}", server.url());
    let once = |plugin: &Path, db: &Path, name: Option<&str>| {
        let mut args = vec![
            "run",
            "--plugin",
            plugin.to_str().unwrap(),
            "--set",
            &target,
            "--once",
            "--db",
            db.to_str().unwrap(),
        ];
        if let Some(n) = name {
            args.extend(["--name", n]);
        }
        let o = run(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    let db = dir.path().join("t.db");
    once(&a, &db, None);
    once(&b, &db, None);
    let subjects = subjects_in(&db);
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert_ne!(subjects[0], subjects[1]);
    assert!(
        subjects.iter().all(|s| s.starts_with("good@")),
        "{subjects:?}"
    );

    let shared = dir.path().join("shared.db");
    once(&a, &shared, Some("web"));
    once(&b, &shared, Some("web"));
    assert_eq!(
        subjects_in(&shared),
        ["web"],
        "--name overrides: one ticket"
    );
}

/// CLI-01: a subject's settings, as it declares them, in `run --help` and `plugin inspect`.
#[test]
fn a_subjects_settings_are_in_its_help_and_inspection() {
    let o = run(&["run", "--subject", "ratelimiter", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = |name: &str| -> String {
        help.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no `{name}` setting in:\n{help}"))
            .to_string()
    };
    assert!(help.contains("Settings of ratelimiter"), "{help}");
    assert!(line("nodes").contains("origin"), "{}", line("nodes"));
    assert!(line("redis").contains("origin"), "{}", line("redis"));
    assert!(
        line("latency_p99_ms").contains("[default: 100]"),
        "{}",
        line("latency_p99_ms")
    );

    let o = run(&["plugin", "inspect", "ratelimiter"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    for needle in ["nodes", "redis", "latency_p99_ms"] {
        assert!(text.contains(needle), "inspect lacks {needle}: {text}");
    }
    let o = run(&["plugin", "inspect", "ratelimiter", "--output", "json"]);
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p99 = meta["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "latency_p99_ms")
        .expect("latency_p99_ms in the JSON settings");
    assert_eq!(p99["default_value"], "100");
    let grants: Vec<&str> = meta["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(
        grants.contains(&"nodes") && grants.contains(&"redis"),
        "{grants:?}"
    );
}

/// A first `run` compiles the plugin in a child `operator plugin compile` and loads it
/// from the cache, so the compiler never runs in the long-lived process; `plugin compile`
/// fills the cache ahead of time and says when it already holds the plugin.
#[test]
fn a_first_run_compiles_in_a_child_and_loads_the_cached_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let server = JsonServer::start(r#"{"components":[{"id":"a","healthy":true}]}"#);
    let target = format!("target={}", server.url());
    let db = dir.path().join("t.db");
    let o = operator()
        .env("OPERATOR_CACHE_DIR", &cache)
        .env("OPERATOR_LOG", "operator=debug")
        .args([
            "run",
            "--plugin",
            guests::GUEST_GOOD,
            "--set",
            &target,
            "--once",
        ])
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("compiled in a child process"), "{log}");
    assert!(
        log.contains("from_cache=true"),
        "the run itself loaded what the child compiled: {log}"
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    let compile = |plugin: &str| {
        let o = operator()
            .env("OPERATOR_CACHE_DIR", &cache)
            .args(["plugin", "compile", plugin])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(compile(guests::GUEST_GOOD).contains(": already cached: "));
    assert!(compile("ratelimiter").contains("bundled subject ratelimiter: compiled: "));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);

    let off = operator()
        .env("OPERATOR_CACHE_DIR", "off")
        .args(["plugin", "compile", "ratelimiter"])
        .output()
        .unwrap();
    assert!(!off.status.success());
    assert!(stderr(&off).contains("cache is off"), "{}", stderr(&off));
}
