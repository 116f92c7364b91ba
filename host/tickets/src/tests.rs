use super::*;
use operator_model::{Observation, Severity, Violation};

mod kill;
mod lifecycle;
mod retention;
mod window;

/// Test-only hooks compiled into the store under `cfg(test)`.
pub(crate) mod hooks {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Microseconds to sleep inside every tick's write transaction, just before the
    /// heartbeat: lets the kill test land SIGKILLs inside open transactions.
    pub static PAUSE_IN_TICK_US: AtomicU64 = AtomicU64::new(0);

    pub fn inside_tick_transaction() {
        let us = PAUSE_IN_TICK_US.load(Ordering::Relaxed);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}

fn obs(ts: u64) -> Observation {
    Observation {
        timestamp_ms: ts,
        components: vec![],
        metrics: Default::default(),
        events: vec![],
        problems: vec![],
    }
}

fn v(key: &str, severity: Severity) -> Violation {
    Violation {
        invariant: "INV-1".into(),
        severity,
        component: "c".into(),
        summary: format!("{key} broke"),
        evidence: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        dedup_key: key.into(),
    }
}

fn tick(store: &mut TicketStore, n: i64, violations: &[Violation], policy: Policy) -> TickOutcome {
    tick_with(store, n, &obs(n as u64), violations, policy, None)
}

fn tick_with(
    store: &mut TicketStore,
    n: i64,
    observation: &Observation,
    violations: &[Violation],
    policy: Policy,
    fingerprint: Option<&str>,
) -> TickOutcome {
    let observation = std::sync::Arc::new(observation.clone());
    store
        .record_tick(
            &TickRecord {
                subject: "s",
                tick: n,
                at_ms: n * 1000,
                duration: Duration::from_millis(1),
                result: TickResult::Observed {
                    observation: &observation,
                    violations,
                },
                fingerprint,
            },
            policy,
        )
        .unwrap()
}

/// The ticks of the stored observations, in row order.
fn observation_ticks(s: &TicketStore) -> Vec<i64> {
    let mut stmt = s
        .conn
        .prepare("SELECT tick FROM observations ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The ticks of the observations ticket `id` links.
fn linked_ticks(s: &TicketStore, id: i64) -> Vec<i64> {
    s.detail(id)
        .unwrap()
        .observations
        .iter()
        .map(|o| o.tick)
        .collect()
}

/// Rows changed on this connection so far (to show that a step wrote nothing).
fn total_changes(store: &TicketStore) -> i64 {
    store
        .conn
        .query_row("SELECT total_changes()", [], |r| r.get(0))
        .unwrap()
}

fn store() -> (tempfile::TempDir, TicketStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = TicketStore::open(&dir.path().join("t.db")).unwrap();
    (dir, s)
}

#[test]
fn duplicates_within_a_tick_merge_and_the_worst_severity_wins() {
    let (_d, mut s) = store();
    let out = tick(
        &mut s,
        1,
        &[v("k", Severity::Warning), v("k", Severity::Critical)],
        Policy::default(),
    );
    assert_eq!(out.opened.len(), 1);
    assert_eq!(out.opened[0].severity, Severity::Critical);
    assert_eq!(out.opened[0].count, 1);
    let keys: Vec<&String> = out.opened[0].evidence.keys().collect();
    assert_eq!(keys, ["b", "a"], "evidence keeps the plugin's order");
}

#[test]
fn escalation_is_recorded() {
    let (_d, mut s) = store();
    tick(&mut s, 1, &[v("k", Severity::Warning)], Policy::default());
    let out = tick(&mut s, 2, &[v("k", Severity::Critical)], Policy::default());
    assert_eq!(out.escalated.len(), 1);
    let d = s.detail(out.escalated[0].id).unwrap();
    assert!(
        d.events
            .iter()
            .any(|e| e.kind == "escalated" && e.detail == "warning -> critical")
    );
}

#[test]
fn a_violation_seen_again_resets_the_clear_streak() {
    let (_d, mut s) = store();
    let p = Policy {
        resolve_after: 2,
        ..Policy::default()
    };
    tick(&mut s, 1, &[v("k", Severity::Warning)], p);
    tick(&mut s, 2, &[], p);
    tick(&mut s, 3, &[v("k", Severity::Warning)], p);
    let out = tick(&mut s, 4, &[], p);
    assert!(out.resolved.is_empty(), "the streak restarted at tick 3");
    let out = tick(&mut s, 5, &[], p);
    assert_eq!(out.resolved.len(), 1);
    assert_eq!(out.resolved[0].count, 2);
}

#[test]
fn manual_resolve_then_recurrence_opens_a_new_ticket() {
    let (_d, mut s) = store();
    let id = tick(&mut s, 1, &[v("k", Severity::Info)], Policy::default()).opened[0].id;
    let t = s.resolve(id, 5).unwrap();
    assert_eq!(
        (t.status, t.resolution),
        (Status::Resolved, Some(Resolution::Manual))
    );
    assert!(matches!(s.resolve(999, 5), Err(StoreError::NotFound(999))));
    let out = tick(&mut s, 2, &[v("k", Severity::Info)], Policy::default());
    assert_eq!(out.opened.len(), 1);
    assert_ne!(out.opened[0].id, id);
}

#[test]
fn failures_get_their_own_tickets_and_leave_others_alone() {
    let (_d, mut s) = store();
    let p = Policy {
        resolve_after: 1,
        ..Policy::default()
    };
    tick(&mut s, 1, &[v("k", Severity::Warning)], p);
    let rec = |n: i64, result| TickRecord {
        subject: "s",
        tick: n,
        at_ms: n,
        duration: Duration::ZERO,
        result,
        fingerprint: None,
    };
    let out = s
        .record_tick(
            &rec(
                2,
                TickResult::PluginFailed {
                    kind: "trap",
                    message: "boom",
                },
            ),
            p,
        )
        .unwrap();
    assert_eq!(out.opened[0].kind, "plugin-failure");
    assert!(
        out.resolved.is_empty(),
        "a failed tick says nothing about invariants"
    );
    let err = operator_model::ObserveError::Unreachable("no route".into());
    let out = s
        .record_tick(&rec(3, TickResult::ObserveFailed(&err)), p)
        .unwrap();
    assert_eq!(out.opened[0].invariant, "OBSERVE");
    let hb = &s.heartbeats().unwrap()[0];
    assert!(!hb.ok && hb.error.as_deref().unwrap().contains("no route"));
    // A clean tick resolves all three.
    let out = tick(&mut s, 4, &[], p);
    assert_eq!(out.resolved.len(), 3);
}

#[test]
fn unlinked_observations_are_pruned_to_the_history_window() {
    let (_d, mut s) = store();
    let p = Policy {
        history: 3,
        ..Policy::default()
    };
    for n in 1..=20 {
        tick(&mut s, n, &[], p);
    }
    let kept: i64 = s
        .conn
        .query_row("SELECT COUNT(*) FROM observations", [], |r| r.get(0))
        .unwrap();
    assert!(kept <= 6, "kept {kept}");
    let id = tick(&mut s, 21, &[v("k", Severity::Info)], p).opened[0].id;
    let d = s.detail(id).unwrap();
    let ticks: Vec<i64> = d.observations.iter().map(|o| o.tick).collect();
    assert_eq!(
        ticks,
        [18, 19, 20, 21],
        "history before the ticket plus its own"
    );
}

#[test]
fn linked_observations_are_capped_keeping_the_opening_context() {
    let (_d, mut s) = store();
    let p = Policy {
        history: 2,
        max_linked: 6,
        ..Policy::default()
    };
    tick(&mut s, 1, &[], p);
    tick(&mut s, 2, &[], p);
    let mut id = 0;
    for n in 3..=20 {
        let out = tick(&mut s, n, &[v("k", Severity::Info)], p);
        if let Some(t) = out.opened.first() {
            id = t.id;
        }
    }
    let ticks: Vec<i64> = s
        .detail(id)
        .unwrap()
        .observations
        .iter()
        .map(|o| o.tick)
        .collect();
    assert_eq!(ticks, [1, 2, 3, 18, 19, 20]);
}

#[test]
fn reopening_keeps_data_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        let mut s = TicketStore::open(&path).unwrap();
        tick(&mut s, 1, &[v("k", Severity::Info)], Policy::default());
    }
    let s = TicketStore::open(&path).unwrap();
    assert_eq!(s.list(None, None).unwrap().len(), 1);
    assert_eq!(s.next_tick("s").unwrap(), 2);
    drop(s);
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let err = TicketStore::open(&path).err().unwrap();
    assert!(
        err.to_string()
            .contains("newer than this operator supports"),
        "{err}"
    );
}

#[test]
fn json_keeps_the_field_names_and_strings_it_had() {
    let (_d, mut s) = store();
    let p = Policy {
        resolve_after: 1,
        ..Policy::default()
    };
    let id = tick(&mut s, 1, &[v("k", Severity::Warning)], p).opened[0].id;
    tick(&mut s, 2, &[], p);
    let json = serde_json::to_value(s.get(id).unwrap()).unwrap();
    for (field, want) in [
        ("kind", "invariant"),
        ("status", "resolved"),
        ("resolution", "auto"),
        ("severity", "warning"),
        ("invariant", "INV-1"),
        ("summary", "k broke"),
    ] {
        assert_eq!(json[field], want, "{field} in {json}");
    }
    for field in [
        "id",
        "subject",
        "component",
        "evidence",
        "count",
        "first_seen",
        "last_seen",
        "opened_tick",
        "last_tick",
        "clear_streak",
        "resolved_at",
        "diagnosis",
    ] {
        assert!(json.get(field).is_some(), "{field} missing from {json}");
    }
    let detail = serde_json::to_value(s.detail(id).unwrap()).unwrap();
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["opened", "resolved"]);
    let manual = tick(&mut s, 3, &[v("k", Severity::Info)], p).opened[0].id;
    let json = serde_json::to_value(s.resolve(manual, 4).unwrap()).unwrap();
    assert_eq!(json["resolution"], "manual");
    let fail = s
        .record_tick(
            &TickRecord {
                subject: "s",
                tick: 4,
                at_ms: 4,
                duration: Duration::ZERO,
                result: TickResult::PluginFailed {
                    kind: "trap",
                    message: "boom",
                },
                fingerprint: None,
            },
            p,
        )
        .unwrap();
    assert_eq!(
        serde_json::to_value(&fail.opened[0]).unwrap()["kind"],
        "plugin-failure"
    );
}

#[test]
fn a_ticket_keeps_the_evidence_it_opened_with() {
    let (_d, mut s) = store();
    let p = Policy::default();
    let mut first = v("k", Severity::Warning);
    first.evidence = vec![("leader".into(), "node-1".into())];
    let id = tick(&mut s, 1, &[first], p).opened[0].id;
    let mut later = v("k", Severity::Warning);
    later.evidence = vec![("leader".into(), "node-3".into())];
    tick(&mut s, 2, &[later.clone()], p);
    tick(&mut s, 3, &[later], p);
    let t = s.get(id).unwrap();
    assert_eq!(t.evidence["leader"], "node-3");
    assert_eq!(t.opening_evidence.unwrap()["leader"], "node-1");
}

#[test]
fn live_tickets_are_capped_per_subject_and_the_excess_is_counted() {
    let (_d, mut s) = store();
    let p = Policy {
        max_live_tickets: 10,
        ..Policy::default()
    };
    let many: Vec<Violation> = (0..25)
        .map(|i| v(&format!("k{i:02}"), Severity::Info))
        .collect();
    let out = tick(&mut s, 1, &many, p);
    assert_eq!((out.opened.len(), out.over_live_cap), (10, 15));
    // The ten live ones keep updating; the rest are counted again, not stored.
    let out = tick(&mut s, 2, &many, p);
    assert_eq!(
        (out.opened.len(), out.updated, out.over_live_cap),
        (0, 10, 15)
    );
    assert_eq!(s.live("s").unwrap().len(), 10);
    // Host failure tickets are not subject to the cap.
    let err = operator_model::ObserveError::Unreachable("x".into());
    let out = s
        .record_tick(
            &TickRecord {
                subject: "s",
                tick: 3,
                at_ms: 3000,
                duration: Duration::ZERO,
                result: TickResult::ObserveFailed(&err),
                fingerprint: None,
            },
            p,
        )
        .unwrap();
    assert_eq!(out.opened.len(), 1);
    // Room frees up as tickets resolve; a tick resolves after it opens, so the room is
    // there from the next tick on.
    let p1 = Policy {
        resolve_after: 1,
        ..p
    };
    let out = tick(&mut s, 4, &many[10..], p1);
    assert_eq!(
        (out.resolved.len(), out.opened.len(), out.over_live_cap),
        (11, 0, 15)
    );
    let out = tick(&mut s, 5, &many[10..], p1);
    assert_eq!((out.opened.len(), out.over_live_cap), (10, 5));
}

#[test]
fn strings_from_the_plugin_are_capped() {
    let (_d, mut s) = store();
    let huge = "x".repeat(10 * 1024 * 1024);
    let bad = Violation {
        invariant: huge.clone(),
        severity: Severity::Critical,
        component: huge.clone(),
        summary: huge.clone(),
        evidence: (0..40)
            .map(|i| (format!("{i}{}", "k".repeat(500)), "v".repeat(50_000)))
            .collect(),
        dedup_key: huge.clone(),
    };
    let out = tick(&mut s, 1, std::slice::from_ref(&bad), Policy::default());
    assert_eq!(
        out.truncated, 5,
        "invariant, component, summary, key, evidence"
    );
    let t = &out.opened[0];
    assert!(t.summary.len() <= limits::MAX_SUMMARY && t.summary.ends_with(" bytes]"));
    assert!(t.invariant.len() <= limits::MAX_NAME && t.component.len() <= limits::MAX_NAME);
    assert!(t.dedup_key.len() <= limits::MAX_DEDUP_KEY);
    assert_eq!(t.evidence.len(), limits::MAX_EVIDENCE_ITEMS + 1);
    let row_bytes: i64 = s
        .conn
        .query_row(
            "SELECT length(summary) + length(evidence) + length(opening_evidence) + length(dedup_key) FROM tickets",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(row_bytes < 400_000, "{row_bytes}");
    // The same long key finds the same ticket again.
    let out = tick(&mut s, 2, &[bad], Policy::default());
    assert_eq!((out.opened.len(), out.updated), (0, 1));
}

#[test]
fn a_v1_database_migrates_to_v2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        // A database as the v1 operator left it: made with the v1 SQL, with rows in it.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            r#"
            INSERT INTO observations (id, subject, tick, taken_at, data) VALUES
              (1, 's', 1, 1000, '{"timestamp_ms":1000,"components":[],"metrics":[],"events":[],"problems":[]}'),
              (2, 's', 2, 2000, '{"timestamp_ms":2000,"components":[],"metrics":[],"events":[],"problems":[]}');
            INSERT INTO tickets (id, subject, dedup_key, kind, invariant, severity, component, summary,
              evidence, status, count, first_seen, last_seen, opened_tick, last_tick, clear_streak)
              VALUES (1, 's', 'k', 'invariant', 'INV-1', 'warning', 'c', 'k broke', '{"a":"1"}',
              'open', 2, 2000, 2000, 2, 2, 0);
            INSERT INTO ticket_observations VALUES (1, 1), (1, 2);
            INSERT INTO ticket_events (ticket_id, at, kind, detail) VALUES (1, 2000, 'opened', 'k broke');
            INSERT INTO heartbeat VALUES ('s', 2, 2000, 1.0, 1, NULL, 1);
            "#,
        )
        .unwrap();
    }
    let mut s = TicketStore::open(&path).unwrap();
    let version: i64 = s
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let t = s.get(1).unwrap();
    assert_eq!(
        (t.kind, t.status, t.count),
        (TicketKind::Invariant, Status::Open, 2)
    );
    assert_eq!(t.opening_evidence, None, "v1 did not keep it; no guess");
    assert_eq!(t.diagnosis_state, DiagnosisState::default());
    let (opening, bytes): (Option<i64>, i64) = s
        .conn
        .query_row(
            "SELECT opening_observation_id, (SELECT SUM(bytes) FROM observations) FROM tickets",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(opening, Some(2), "the observation of the tick it opened on");
    let one = r#"{"timestamp_ms":1000,"components":[],"metrics":[],"events":[],"problems":[]}"#;
    assert_eq!(bytes, 2 * one.len() as i64);
    // And it keeps working as a v2 store.
    assert_eq!(s.next_tick("s").unwrap(), 3);
    let out = tick(&mut s, 3, &[v("k", Severity::Critical)], Policy::default());
    assert_eq!((out.updated, out.escalated.len()), (1, 1));
    let claim = s
        .claim_for_diagnosis(3000, Duration::from_secs(60), "w")
        .unwrap()
        .unwrap();
    assert_eq!(claim.ticket.id, 1);
    assert!(
        s.complete_diagnosis(
            1,
            "w",
            None,
            &serde_json::json!({"summary": "x"}),
            "offline",
            3001
        )
        .unwrap()
    );
    assert_eq!(s.diagnoses(1).unwrap().len(), 1);
    assert_eq!(s.integrity_check().unwrap(), "ok");
}

#[test]
fn incidents_are_kept_on_their_tickets() {
    let (_d, mut s) = store();
    let out = tick(
        &mut s,
        1,
        &[
            v("redis", Severity::Critical),
            v("drift-a", Severity::Warning),
            v("drift-b", Severity::Warning),
        ],
        Policy::default(),
    );
    let ids: Vec<i64> = out.opened.iter().map(|t| t.id).collect();
    let (a, b, root) = (ids[0], ids[1], ids[2]); // BTreeMap order: drift-a, drift-b, redis
    let members = [
        (
            root,
            Role::Root,
            "opened first; the others need it".to_string(),
        ),
        (a, Role::Symptom, "shares component c".to_string()),
        (b, Role::Symptom, "opened within 2 ticks".to_string()),
    ];
    s.assign_incident(root, &members, 5).unwrap();
    let t = s.get(a).unwrap();
    assert_eq!(
        t.incident,
        Some(IncidentRef {
            id: root,
            role: Role::Symptom,
            reason: "shares component c".into()
        })
    );
    let listed = s.list(None, None).unwrap();
    assert!(
        listed
            .iter()
            .all(|t| t.incident.as_ref().map(|i| i.id) == Some(root))
    );
    let json = serde_json::to_value(s.get(root).unwrap()).unwrap();
    assert_eq!(json["incident"]["role"], "root");
    assert_eq!(json["incident"]["id"], root);
    assert_eq!(
        s.incident(root)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        [root, a, b]
    );
    // Assigning the same grouping again writes nothing.
    let before = total_changes(&s);
    s.assign_incident(root, &members, 6).unwrap();
    assert_eq!(total_changes(&s), before);
    let events = s.detail(a).unwrap().events;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Incident)
            .count(),
        1
    );
    // Bad groupings are refused; unknown tickets are NotFound.
    assert!(matches!(
        s.assign_incident(root, &[(a, Role::Root, String::new())], 7),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.assign_incident(root, &[(999, Role::Symptom, String::new())], 7),
        Err(StoreError::NotFound(999))
    ));
    s.clear_incident(b, 8).unwrap();
    assert_eq!(s.get(b).unwrap().incident, None);
}

#[test]
fn violations_per_tick_are_capped_most_severe_first_without_resolving_the_rest() {
    let (_d, mut s) = store();
    let p = Policy {
        max_violations_per_tick: 3,
        resolve_after: 1,
        ..Policy::default()
    };
    let mut vs: Vec<Violation> = (0..5)
        .map(|i| v(&format!("info-{i}"), Severity::Info))
        .collect();
    vs.push(v("crit", Severity::Critical));
    let out = tick(&mut s, 1, &vs, p);
    assert_eq!(out.over_violation_cap, 3);
    let opened: Vec<&str> = out.opened.iter().map(|t| t.dedup_key.as_str()).collect();
    assert_eq!(opened, ["crit", "info-0", "info-1"]);
    // Two more critical ones push info-0 and info-1 past the cap: counted, and their
    // tickets are not resolved for it (resolve_after is 1).
    vs.push(v("crit-2", Severity::Critical));
    vs.push(v("crit-3", Severity::Critical));
    let out = tick(&mut s, 2, &vs, p);
    assert_eq!((out.over_violation_cap, out.resolved.len()), (5, 0));
    assert_eq!(s.live("s").unwrap().len(), 5);
}

#[test]
fn events_per_ticket_are_capped_keeping_the_first() {
    let (_d, mut s) = store();
    let p = Policy::default();
    for n in 1..=500 {
        let severity = if n % 2 == 0 {
            Severity::Critical
        } else {
            Severity::Info
        };
        tick(&mut s, n, &[v("k", severity)], p);
    }
    let events = s.detail(1).unwrap().events;
    assert_eq!(events.len() as i64, row::MAX_EVENTS_PER_TICKET);
    assert_eq!(events[0].kind, EventKind::Opened);
    assert_eq!(events.last().unwrap().at, 500_000, "the newest stay");
}

#[test]
fn a_tick_transaction_dropped_without_commit_rolls_back_and_the_next_one_works() {
    let (_dir, s) = store();
    let count = |s: &TicketStore| -> i64 {
        s.conn
            .query_row("SELECT COUNT(*) FROM heartbeat", [], |r| r.get(0))
            .unwrap()
    };
    let insert = |s: &TicketStore, subject: &str| {
        s.conn
            .execute(
                "INSERT INTO heartbeat (subject, tick, last_tick_at, duration_ms, ok, pid) \
                 VALUES (?1, 1, 0, 0, 1, 0)",
                [subject],
            )
            .unwrap();
    };
    {
        let _tx = CachedImmediate::begin(&s.conn).unwrap();
        insert(&s, "dropped");
        assert!(!s.conn.is_autocommit());
    }
    assert!(s.conn.is_autocommit(), "the drop ended the transaction");
    assert_eq!(count(&s), 0, "what the dropped transaction wrote is gone");
    // The cached statements run again, and a commit keeps what was written.
    for subject in ["a", "b"] {
        let tx = CachedImmediate::begin(&s.conn).unwrap();
        insert(&s, subject);
        tx.commit().unwrap();
    }
    assert_eq!(count(&s), 2);
    assert!(s.conn.is_autocommit());
}
