//! The diagnosis lifecycle: claims, leases, completion, failure, re-diagnosis.

use super::*;
use serde_json::json;

const LEASE: Duration = Duration::from_secs(60);

fn one_open_ticket(fp: &str) -> (tempfile::TempDir, TicketStore, i64) {
    let (d, mut s) = store();
    let out = tick_with(
        &mut s,
        1,
        &obs(1),
        &[v("k", Severity::Warning)],
        Policy::default(),
        Some(fp),
    );
    let id = out.opened[0].id;
    (d, s, id)
}

#[test]
fn a_claim_is_a_compare_and_set_and_completion_needs_the_lease() {
    let (_d, mut s, id) = one_open_ticket("fp-a");
    let claim = s.claim_for_diagnosis(1000, LEASE, "w1").unwrap().unwrap();
    assert_eq!(claim.ticket.id, id);
    assert_eq!(claim.ticket.status, Status::Diagnosing);
    assert_eq!(
        (claim.fingerprint.as_deref(), claim.attempt),
        (Some("fp-a"), 1)
    );
    assert_eq!(
        claim.ticket.diagnosis_state.lease_until,
        Some(1000 + LEASE.as_millis() as i64)
    );
    assert!(
        s.claim_for_diagnosis(1000, LEASE, "w2").unwrap().is_none(),
        "held, and the lease has not expired"
    );
    let record = json!({"summary": "redis is down"});
    assert!(
        !s.complete_diagnosis(id, "w2", Some("fp-a"), &record, "offline", 1100)
            .unwrap(),
        "w2 holds no lease"
    );
    assert!(s.diagnoses(id).unwrap().is_empty(), "nothing stored for w2");
    assert!(
        s.complete_diagnosis(id, "w1", Some("fp-a"), &record, "offline", 1100)
            .unwrap()
    );
    let t = s.get(id).unwrap();
    assert_eq!(t.status, Status::Diagnosed);
    assert_eq!(t.diagnosis, Some(record.clone()));
    assert_eq!(
        t.diagnosis_state.diagnosed_fingerprint.as_deref(),
        Some("fp-a")
    );
    assert_eq!(t.diagnosis_state.lease_owner, None);
    assert!(
        !s.complete_diagnosis(id, "w1", Some("fp-a"), &record, "offline", 1200)
            .unwrap(),
        "the lease ended with the completion"
    );
    let rows = s.diagnoses(id).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].outcome, rows[0].backend.as_deref()),
        (DiagnosisOutcome::Ok, Some("offline"))
    );
    assert!(
        s.claim_for_diagnosis(2000, LEASE, "w1").unwrap().is_none(),
        "diagnosed for this evidence already"
    );
    assert!(matches!(
        s.complete_diagnosis(999, "w1", None, &record, "offline", 1),
        Err(StoreError::NotFound(999))
    ));
}

#[test]
fn changed_evidence_sends_a_diagnosed_ticket_back_and_unchanged_evidence_writes_nothing() {
    let (_d, mut s, id) = one_open_ticket("fp-a");
    let p = Policy::default();
    let c = s.claim_for_diagnosis(1000, LEASE, "w").unwrap().unwrap();
    s.complete_diagnosis(
        id,
        "w",
        c.fingerprint.as_deref(),
        &json!({}),
        "offline",
        1000,
    )
    .unwrap();

    // Same evidence: the fingerprint step writes nothing beyond a tick without one.
    let vs = [v("k", Severity::Warning)];
    let before = total_changes(&s);
    tick_with(&mut s, 2, &obs(2), &vs, p, None);
    let without = total_changes(&s) - before;
    let before = total_changes(&s);
    let out = tick_with(&mut s, 3, &obs(3), &vs, p, Some("fp-a"));
    assert_eq!(total_changes(&s) - before, without);
    assert!(out.rediagnose.is_empty());
    assert_eq!(s.get(id).unwrap().status, Status::Diagnosed);

    // New evidence: back to open, with an event, and claimable again.
    let out = tick_with(&mut s, 4, &obs(4), &vs, p, Some("fp-b"));
    assert_eq!(out.rediagnose, [id]);
    let t = s.get(id).unwrap();
    assert_eq!(t.status, Status::Open);
    assert_eq!(t.diagnosis_state.fingerprint.as_deref(), Some("fp-b"));
    assert!(
        s.detail(id)
            .unwrap()
            .events
            .iter()
            .any(|e| e.kind == EventKind::EvidenceChanged)
    );
    let c = s.claim_for_diagnosis(5000, LEASE, "w").unwrap().unwrap();
    assert_eq!(c.fingerprint.as_deref(), Some("fp-b"));

    // Evidence that flips back while nobody holds the ticket restores the diagnosis it
    // already has, instead of diagnosing the same evidence twice.
    s.fail_diagnosis(id, "w", "offline", "boom", 6000, 5001)
        .unwrap();
    tick_with(&mut s, 5, &obs(5), &vs, p, Some("fp-a"));
    assert_eq!(s.get(id).unwrap().status, Status::Diagnosed);
    assert!(s.claim_for_diagnosis(7000, LEASE, "w").unwrap().is_none());
}

#[test]
fn a_failure_goes_back_to_open_with_backoff_and_is_kept_in_the_history() {
    let (_d, mut s, id) = one_open_ticket("fp-a");
    s.claim_for_diagnosis(1000, LEASE, "w").unwrap().unwrap();
    assert!(
        !s.fail_diagnosis(id, "other", "claude", "429", 5000, 1001)
            .unwrap()
    );
    assert!(
        s.fail_diagnosis(id, "w", "claude", "rate limited (429)", 5000, 1001)
            .unwrap()
    );
    let t = s.get(id).unwrap();
    assert_eq!(t.status, Status::Open);
    assert_eq!(t.diagnosis_state.attempts, 1);
    assert_eq!(t.diagnosis_state.next_attempt_at, 5000);
    assert_eq!(
        t.diagnosis_state.last_error.as_deref(),
        Some("rate limited (429)")
    );
    assert!(
        s.claim_for_diagnosis(4999, LEASE, "w").unwrap().is_none(),
        "not before its retry time"
    );
    let c = s.claim_for_diagnosis(5000, LEASE, "w").unwrap().unwrap();
    assert_eq!(c.attempt, 2);
    s.complete_diagnosis(
        id,
        "w",
        c.fingerprint.as_deref(),
        &json!({"ok": 1}),
        "claude",
        5100,
    )
    .unwrap();
    let t = s.get(id).unwrap();
    assert_eq!(
        (t.diagnosis_state.attempts, t.diagnosis_state.last_error),
        (0, None)
    );
    let rows = s.diagnoses(id).unwrap();
    let outcomes: Vec<_> = rows.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [DiagnosisOutcome::Failed, DiagnosisOutcome::Ok]);
    assert_eq!(rows[0].error.as_deref(), Some("rate limited (429)"));
}

#[test]
fn an_expired_lease_is_claimed_again_and_the_crashed_worker_cannot_complete() {
    let (_d, mut s, id) = one_open_ticket("fp-a");
    s.claim_for_diagnosis(1000, LEASE, "crashed")
        .unwrap()
        .unwrap();
    let expiry = 1000 + LEASE.as_millis() as i64;
    assert!(
        s.claim_for_diagnosis(expiry - 1, LEASE, "w2")
            .unwrap()
            .is_none()
    );
    let c = s.claim_for_diagnosis(expiry, LEASE, "w2").unwrap().unwrap();
    assert_eq!((c.ticket.id, c.attempt), (id, 2));
    assert_eq!(c.ticket.diagnosis_state.lease_owner.as_deref(), Some("w2"));
    assert!(
        !s.complete_diagnosis(id, "crashed", Some("fp-a"), &json!({}), "offline", expiry)
            .unwrap()
    );
    assert!(
        s.complete_diagnosis(id, "w2", Some("fp-a"), &json!({}), "offline", expiry)
            .unwrap()
    );
    let rows = s.diagnoses(id).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0]
            .error
            .as_deref()
            .unwrap()
            .contains("lease of crashed expired")
    );
    assert_eq!(rows[1].outcome, DiagnosisOutcome::Ok);
}

#[test]
fn a_resolved_ticket_is_never_claimed_but_an_in_flight_diagnosis_is_kept() {
    let (_d, mut s, id) = one_open_ticket("fp-a");
    s.claim_for_diagnosis(1000, LEASE, "w").unwrap().unwrap();
    s.resolve(id, 1500).unwrap();
    assert!(
        s.complete_diagnosis(
            id,
            "w",
            Some("fp-a"),
            &json!({"late": true}),
            "offline",
            1600
        )
        .unwrap()
    );
    let t = s.get(id).unwrap();
    assert_eq!(t.status, Status::Resolved);
    assert_eq!(t.diagnosis, Some(json!({"late": true})));
    // Another resolved ticket, never claimed at all, even long after with a lease expired.
    let out = tick_with(
        &mut s,
        2,
        &obs(2),
        &[v("other", Severity::Info)],
        Policy::default(),
        Some("fp-x"),
    );
    let other = out.opened[0].id;
    s.claim_for_diagnosis(2000, LEASE, "w").unwrap().unwrap();
    s.resolve(other, 2001).unwrap();
    assert!(
        s.claim_for_diagnosis(i64::MAX / 2, LEASE, "w2")
            .unwrap()
            .is_none()
    );
}

#[test]
fn on_demand_diagnoses_keep_the_earlier_records() {
    let (_d, mut s, id) = one_open_ticket("fp-a");
    let t = s
        .add_diagnosis(id, &json!({"n": 1}), "offline", 10)
        .unwrap();
    assert_eq!(t.status, Status::Diagnosed);
    let t = s.add_diagnosis(id, &json!({"n": 2}), "claude", 20).unwrap();
    assert_eq!(t.diagnosis, Some(json!({"n": 2})));
    let records: Vec<_> = s
        .diagnoses(id)
        .unwrap()
        .into_iter()
        .map(|r| (r.backend.unwrap(), r.record.unwrap()["n"].clone()))
        .collect();
    assert_eq!(
        records,
        [
            ("offline".to_string(), json!(1)),
            ("claude".to_string(), json!(2))
        ]
    );
    assert_eq!(
        s.detail(id).unwrap().diagnoses.len(),
        2,
        "`tickets show` has them"
    );
    assert!(matches!(s.diagnoses(999), Err(StoreError::NotFound(999))));
    assert!(
        s.claim_for_diagnosis(100, LEASE, "w").unwrap().is_none(),
        "the on-demand diagnosis covers the current evidence"
    );
}

#[test]
fn concurrent_workers_claim_each_ticket_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut s = TicketStore::open(&path).unwrap();
    let vs: Vec<Violation> = (0..40)
        .map(|i| v(&format!("k{i}"), Severity::Warning))
        .collect();
    tick_with(&mut s, 1, &obs(1), &vs, Policy::default(), Some("fp"));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = TicketStore::open(&path).unwrap();
                let owner = format!("w{w}");
                let mut got = Vec::new();
                while let Some(c) = s.claim_for_diagnosis(1000, LEASE, &owner).unwrap() {
                    assert!(
                        s.complete_diagnosis(
                            c.ticket.id,
                            &owner,
                            c.fingerprint.as_deref(),
                            &json!({}),
                            "offline",
                            1001
                        )
                        .unwrap()
                    );
                    got.push(c.ticket.id);
                }
                got
            })
        })
        .collect();
    let mut all: Vec<i64> = workers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    let want: Vec<i64> = s.live("s").unwrap().iter().map(|t| t.id).collect();
    assert_eq!(all, want, "every ticket once, none twice");
    for id in want {
        assert_eq!(s.diagnoses(id).unwrap().len(), 1);
    }
}

#[test]
fn evidence_that_moves_during_a_diagnosis_is_diagnosed_again() {
    let (_d, mut s, id) = one_open_ticket("fp-a");
    let c = s.claim_for_diagnosis(1000, LEASE, "w").unwrap().unwrap();
    // A tick while the worker thinks: the ticket is held, its fingerprint moves on.
    let out = tick_with(
        &mut s,
        2,
        &obs(2),
        &[v("k", Severity::Warning)],
        Policy::default(),
        Some("fp-b"),
    );
    assert!(out.rediagnose.is_empty(), "held, not diagnosed yet");
    assert!(
        s.complete_diagnosis(
            id,
            "w",
            c.fingerprint.as_deref(),
            &json!({}),
            "offline",
            1100
        )
        .unwrap()
    );
    let t = s.get(id).unwrap();
    assert_eq!(
        t.status,
        Status::Open,
        "the diagnosis is for fp-a, the evidence is fp-b"
    );
    assert_eq!(t.diagnosis, Some(json!({})), "but it is kept");
    let again = s.claim_for_diagnosis(1200, LEASE, "w").unwrap().unwrap();
    assert_eq!(again.fingerprint.as_deref(), Some("fp-b"));
}
