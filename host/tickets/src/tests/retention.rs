//! Retention: what is kept is bounded per subject, by count and bytes, and the file stays
//! flat under churn.

use super::*;
use std::time::Instant;

fn big_obs(n: i64, bytes: usize) -> Observation {
    let mut o = obs(n as u64);
    // Pseudo-random printable text, seeded by the tick: observations are stored deflated,
    // and these must stay about their size there, so the byte caps are what is tested.
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let text: String = (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            CHARS[(x % 64) as usize] as char
        })
        .collect();
    o.events.push(operator_model::Event {
        timestamp_ms: n as u64,
        component: "c".into(),
        severity: Severity::Info,
        message: text,
        attributes: Default::default(),
    });
    o
}

fn count(s: &TicketStore, sql: &str) -> i64 {
    s.conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_resolved_ticket_keeps_its_opening_context_once_the_rest_ages_out() {
    let (_d, mut s) = store();
    let p = Policy {
        history: 2,
        resolve_after: 2,
        resolved_keep: Duration::from_secs(10),
        prune_every: 1,
        ..Policy::default()
    };
    for n in 1..=3 {
        tick(&mut s, n, &[], p);
    }
    let mut id = 0;
    for n in 4..=10 {
        if let Some(t) = tick(&mut s, n, &[v("k", Severity::Warning)], p)
            .opened
            .first()
        {
            id = t.id;
        }
    }
    tick(&mut s, 11, &[], p);
    let resolved = tick(&mut s, 12, &[], p).resolved;
    assert_eq!(resolved[0].id, id);
    // Within `resolved_keep` (12 s + 10 s) everything it linked stays.
    tick(&mut s, 21, &[], p);
    assert_eq!(linked_ticks(&s, id), (2..=10).collect::<Vec<_>>());
    // After it, only the opening context: the history before it and its first tick.
    let out = tick(&mut s, 22, &[], p);
    assert_eq!(out.pruned.unwrap().trimmed_tickets, 1);
    assert_eq!(linked_ticks(&s, id), [2, 3, 4]);
    let kept = observation_ticks(&s);
    assert!(
        kept.iter().all(|t| !(5..=10).contains(t)),
        "the rest is gone from the table too: {kept:?}"
    );
}

#[test]
fn observations_are_capped_by_count_sparing_live_tickets_first() {
    let (_d, mut s) = store();
    let p = Policy {
        history: 0,
        resolve_after: 2,
        max_observations: 6,
        prune_every: 1,
        ..Policy::default()
    };
    // `old` opens at 1 and resolves at 6; `live` is seen from 5 on.
    for n in 1..=14 {
        let mut vs = vec![];
        if n <= 4 {
            vs.push(v("old", Severity::Info));
        }
        if n >= 5 {
            vs.push(v("live", Severity::Info));
        }
        tick(&mut s, n, &vs, p);
        if n == 8 {
            // 8 observations, 2 too many: the oldest that only a resolved ticket wants go.
            assert_eq!(observation_ticks(&s), (3..=8).collect::<Vec<_>>());
        }
    }
    // Then the cap holds even against a live ticket, keeping the newest.
    assert_eq!(observation_ticks(&s), (9..=14).collect::<Vec<_>>());
}

#[test]
fn observations_are_capped_by_bytes_and_the_newest_always_stays() {
    let (_d, mut s) = store();
    let p = Policy {
        history: 1,
        max_observation_bytes: 50_000,
        prune_every: 1,
        ..Policy::default()
    };
    for n in 1..=30 {
        tick_with(
            &mut s,
            n,
            &big_obs(n, 10_000),
            &[v("k", Severity::Info)],
            p,
            None,
        );
        let bytes = count(&s, "SELECT SUM(bytes) FROM observations");
        assert!(bytes <= 50_000, "tick {n}: {bytes} bytes kept");
    }
    // The newest survive, oldest first out (about 7.5 KB each once deflated).
    let kept = observation_ticks(&s);
    let first = kept[0];
    assert_eq!(kept, (first..=30).collect::<Vec<_>>());
    assert!(first > 20 && kept.len() >= 2, "{kept:?}");
    // One observation over the cap by itself is still kept: it is the current state.
    tick_with(
        &mut s,
        31,
        &big_obs(31, 80_000),
        &[v("k", Severity::Info)],
        p,
        None,
    );
    assert_eq!(observation_ticks(&s), [31]);
}

#[test]
fn the_oldest_resolved_tickets_beyond_the_cap_go_with_everything_they_own() {
    let (_d, mut s) = store();
    let p = Policy {
        resolve_after: 1,
        max_resolved_tickets: 5,
        prune_every: 1,
        ..Policy::default()
    };
    for n in 1..=20 {
        tick(&mut s, n, &[v(&format!("k{n}"), Severity::Info)], p);
    }
    let resolved = s.list(Some(Status::Resolved), None).unwrap();
    let keys: Vec<&str> = resolved.iter().map(|t| t.dedup_key.as_str()).collect();
    assert_eq!(keys, ["k15", "k16", "k17", "k18", "k19"], "the newest five");
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM ticket_events WHERE ticket_id NOT IN (SELECT id FROM tickets)"
        ),
        0
    );
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM ticket_observations WHERE ticket_id NOT IN (SELECT id FROM tickets)"
        ),
        0
    );
}

#[test]
fn a_cap_past_what_sqlite_counts_keeps_every_resolved_ticket() {
    let (_d, mut s) = store();
    let p = Policy {
        resolve_after: 1,
        max_resolved_tickets: usize::MAX,
        prune_every: 1,
        ..Policy::default()
    };
    for n in 1..=6 {
        tick(&mut s, n, &[v(&format!("k{n}"), Severity::Info)], p);
    }
    // Each tick's ticket is resolved by the next one, the last still open.
    assert_eq!(s.list(Some(Status::Resolved), None).unwrap().len(), 5);
}

#[test]
fn vacuum_hands_freed_pages_back_incrementally_or_with_one_full_vacuum_for_old_files() {
    let fill = |s: &mut TicketStore| {
        let p = Policy {
            history: 200,
            ..Policy::default()
        };
        // A ticket links each of them, so each is stored.
        for n in 1..=60 {
            tick_with(
                s,
                n,
                &big_obs(n, 20_000),
                &[v("k", Severity::Info)],
                p,
                None,
            );
        }
        // Retention with a small cap frees most of it.
        let small = Policy {
            history: 2,
            max_observations: 3,
            prune_every: 1,
            ..Policy::default()
        };
        tick(s, 61, &[], small);
    };
    // A database this version created: incremental.
    let (_d, mut s) = store();
    let mode: i64 = s
        .conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 2, "INCREMENTAL");
    fill(&mut s);
    let r = s.vacuum().unwrap();
    assert!(!r.full);
    assert!(
        r.after_bytes * 4 < r.before_bytes,
        "{} -> {}",
        r.before_bytes,
        r.after_bytes
    );

    // An older file without auto-vacuum: one full VACUUM, which also switches it over.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let mut s = TicketStore::open(&path).unwrap();
    fill(&mut s);
    let r = s.vacuum().unwrap();
    assert!(r.full);
    assert!(r.after_bytes * 4 < r.before_bytes, "{r:?}");
    let r = s.vacuum().unwrap();
    assert!(!r.full, "incremental from now on");
    assert_eq!(s.integrity_check().unwrap(), "ok");
}

/// The soak: big observations, a fresh dedup key every tick, tickets opening, flapping and
/// resolving, for 5000 ticks. Once the caps are reached, the file stops growing.
#[test]
fn the_file_stays_flat_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("soak.db");
    let mut s = TicketStore::open(&path).unwrap();
    // This test is about size, not durability: no fsync at checkpoints, so that a busy disk
    // does not decide how long it takes.
    s.conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let p = Policy {
        resolve_after: 2,
        history: 3,
        max_linked: 10,
        max_observations: 300,
        max_observation_bytes: 512 * 1024,
        resolved_keep: Duration::from_secs(30),
        max_resolved_tickets: 300,
        prune_every: 16,
        ..Policy::default()
    };
    let file_size = || std::fs::metadata(&path).unwrap().len();
    let started = Instant::now();
    let mut at_1k = 0;
    let mut peak_after_1k = 0;
    for n in 1..=5000 {
        let mut vs = vec![v(&format!("fresh-{n}"), Severity::Warning)];
        if n % 5 != 0 {
            vs.push(v(&format!("flap-{}", n % 7), Severity::Critical));
        }
        for x in &mut vs {
            x.evidence.push(("detail".into(), "e".repeat(1000)));
        }
        tick_with(
            &mut s,
            n,
            &big_obs(n, 8 * 1024),
            &vs,
            p,
            Some(&format!("fp-{}", n / 10)),
        );
        if n == 1000 {
            at_1k = file_size();
        }
        if n > 1000 {
            peak_after_1k = peak_after_1k.max(file_size());
        }
    }
    let elapsed = started.elapsed();
    let at_5k = file_size();
    eprintln!(
        "soak: 5000 ticks in {elapsed:?}; file {at_1k} B at tick 1000, {at_5k} B at 5000, peak {peak_after_1k} B"
    );
    // Everything the caps bound, bounded.
    assert!(count(&s, "SELECT COUNT(*) FROM observations") <= 300);
    assert!(count(&s, "SELECT SUM(bytes) FROM observations") <= 512 * 1024);
    assert!(count(&s, "SELECT COUNT(*) FROM tickets WHERE status = 'resolved'") <= 300 + 16 * 2);
    assert!(s.live("s").unwrap().len() <= 10);
    // Four times the ticks, and the file no bigger than at tick 1000 plus a little slack
    // for the free-list's shape.
    assert!(
        peak_after_1k <= at_1k + at_1k / 10,
        "grew from {at_1k} B at tick 1000 to a peak of {peak_after_1k} B"
    );
    assert_eq!(s.integrity_check().unwrap(), "ok");
}
