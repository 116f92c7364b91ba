//! The history window: observations are held in memory and stored only when a ticket
//! links them, and what a ticket links is exactly the window of this run.

use super::*;
use std::sync::Arc;

fn policy(history: usize) -> Policy {
    Policy {
        history,
        ..Policy::default()
    }
}

#[test]
fn a_healthy_tick_stores_no_observation() {
    let (_d, mut s) = store();
    let before = total_changes(&s);
    for n in 1..=50 {
        tick(&mut s, n, &[], policy(5));
    }
    assert_eq!(observation_ticks(&s), Vec::<i64>::new());
    // The heartbeat is the only row a healthy tick writes (one update per tick, after the
    // first tick's insert).
    assert_eq!(total_changes(&s) - before, 50);
}

#[test]
fn an_opening_ticket_stores_and_links_the_window_in_tick_order() {
    let (_d, mut s) = store();
    for n in 1..=10 {
        tick(&mut s, n, &[], policy(3));
    }
    let id = tick(&mut s, 11, &[v("k", Severity::Warning)], policy(3)).opened[0].id;
    assert_eq!(linked_ticks(&s, id), [8, 9, 10, 11]);
    assert_eq!(
        observation_ticks(&s),
        [8, 9, 10, 11],
        "rows in tick order, nothing else"
    );
    // Decoded, each row is that tick's observation.
    let d = s.detail(id).unwrap();
    assert!(
        d.observations
            .iter()
            .all(|o| o.observation.timestamp_ms == o.tick as u64)
    );
    // While the ticket lives, each tick's observation is linked; once it is gone and the
    // window has moved on, nothing unlinked stays behind.
    tick(&mut s, 12, &[v("k", Severity::Warning)], policy(3));
    for n in 13..=30 {
        tick(&mut s, n, &[], policy(3));
    }
    assert_eq!(observation_ticks(&s), [8, 9, 10, 11, 12]);
    let second = tick(&mut s, 31, &[v("other", Severity::Info)], policy(3)).opened[0].id;
    assert_eq!(linked_ticks(&s, second), [28, 29, 30, 31]);
}

#[test]
fn a_live_ticket_after_clean_ticks_keeps_rows_in_order() {
    let (_d, mut s) = store();
    let p = policy(3);
    tick(&mut s, 1, &[v("k", Severity::Warning)], p);
    // Clean ticks not yet enough to resolve: held in memory, not stored.
    tick(&mut s, 2, &[], p);
    tick(&mut s, 3, &[], p);
    assert_eq!(observation_ticks(&s), [1]);
    // The ticket fires again: the unstored window goes in before this tick's observation,
    // and a ticket opening in the same tick links all of it.
    let out = tick(
        &mut s,
        4,
        &[v("k", Severity::Warning), v("new", Severity::Info)],
        p,
    );
    assert_eq!(out.updated, 1);
    assert_eq!(observation_ticks(&s), [1, 2, 3, 4]);
    assert_eq!(linked_ticks(&s, out.opened[0].id), [1, 2, 3, 4]);
}

#[test]
fn after_a_restart_a_ticket_links_only_what_this_run_observed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut s = TicketStore::open(&db).unwrap();
    tick(&mut s, 1, &[v("old", Severity::Info)], policy(3));
    for n in 2..=5 {
        tick(&mut s, n, &[], policy(3));
    }
    drop(s);
    let mut s = TicketStore::open(&db).unwrap();
    tick(&mut s, 6, &[], policy(3));
    let id = tick(&mut s, 7, &[v("k", Severity::Info)], policy(3)).opened[0].id;
    assert_eq!(
        linked_ticks(&s, id),
        [6, 7],
        "tick 1, stored before the restart, is not this ticket's history"
    );
}

#[test]
fn a_rolled_back_tick_leaves_the_window_as_it_was() {
    let (_d, mut s) = store();
    let p = Policy {
        resolve_after: 100,
        ..policy(3)
    };
    tick(&mut s, 1, &[v("bad", Severity::Info)], p);
    for n in 2..=4 {
        tick(&mut s, n, &[], p);
    }
    // A live ticket the store cannot read: tick 5 opens "a" (storing the window and tick
    // 5's observation), then fails on "bad", and rolls back.
    s.conn
        .pragma_update(None, "ignore_check_constraints", true)
        .unwrap();
    s.conn
        .execute(
            "UPDATE tickets SET severity = 'bogus' WHERE dedup_key = 'bad'",
            [],
        )
        .unwrap();
    let five = Arc::new(obs(5));
    let err = s
        .record_tick(
            &TickRecord {
                subject: "s",
                tick: 5,
                at_ms: 5000,
                duration: Duration::from_millis(1),
                result: TickResult::Observed {
                    observation: &five,
                    violations: &[v("a", Severity::Critical), v("bad", Severity::Info)],
                },
                fingerprint: None,
            },
            p,
        )
        .expect_err("a corrupt live ticket fails the tick");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert_eq!(
        observation_ticks(&s),
        [1],
        "the rollback took the window's rows back"
    );
    s.conn
        .execute(
            "UPDATE tickets SET severity = 'info' WHERE dedup_key = 'bad'",
            [],
        )
        .unwrap();
    // SQLite gives the rolled-back row ids out again: a window that had kept them would
    // link these new rows under the old ticks.
    for n in 5..=6 {
        tick(&mut s, n, &[], p);
    }
    let id = tick(&mut s, 7, &[v("a", Severity::Critical)], p).opened[0].id;
    assert_eq!(linked_ticks(&s, id), [4, 5, 6, 7]);
}

#[test]
fn a_window_row_deleted_by_the_caps_is_skipped_when_linking() {
    let (_d, mut s) = store();
    let p = Policy {
        history: 3,
        max_observations: 2,
        ..Policy::default()
    };
    tick(&mut s, 1, &[v("k", Severity::Info)], p);
    tick(&mut s, 2, &[v("k", Severity::Info)], p);
    tick(&mut s, 3, &[v("k", Severity::Info)], p);
    // The count cap keeps the newest rows: ticks 1 and 2, still in the window, are gone.
    let stored = observation_ticks(&s);
    assert!(stored.len() <= 2 && stored.contains(&3), "{stored:?}");
    let id = tick(&mut s, 4, &[v("new", Severity::Info)], p).opened[0].id;
    let linked = linked_ticks(&s, id);
    assert!(linked.contains(&4), "{linked:?}");
    assert!(linked.iter().all(|t| (1..=4).contains(t)), "{linked:?}");
}

#[test]
fn subjects_have_their_own_windows() {
    let (_d, mut s) = store();
    let p = policy(2);
    let record = |s: &mut TicketStore, subject: &str, n: i64, violations: &[Violation]| {
        let o = Arc::new(obs(n as u64));
        s.record_tick(
            &TickRecord {
                subject,
                tick: n,
                at_ms: n * 1000,
                duration: Duration::from_millis(1),
                result: TickResult::Observed {
                    observation: &o,
                    violations,
                },
                fingerprint: None,
            },
            p,
        )
        .unwrap()
    };
    for n in 1..=3 {
        record(&mut s, "a", n, &[]);
        record(&mut s, "b", 100 + n, &[]);
    }
    let id = record(&mut s, "a", 4, &[v("k", Severity::Info)]).opened[0].id;
    assert_eq!(linked_ticks(&s, id), [2, 3, 4]);
}
