use super::*;
use operator_model::{Observation, Severity, Violation};

mod kill;
mod lifecycle;
mod retention;

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
        metrics: vec![],
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
    let o = obs(n as u64);
    store
        .record_tick(
            &TickRecord {
                subject: "s",
                tick: n,
                at_ms: n * 1000,
                duration: Duration::from_millis(1),
                result: TickResult::Observed {
                    observation: &o,
                    violations,
                },
                fingerprint: None,
            },
            policy,
        )
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
