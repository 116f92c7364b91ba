//! The diagnosis lifecycle, store side.
//!
//! ```text
//!   open --claim--> diagnosing --complete--> diagnosed --evidence changed--> open
//!     ^                 |  \--fail (backoff)--> open
//!     |                 \--lease expired: claimed again by the next worker
//! ```
//!
//! Every transition is a compare-and-set inside an IMMEDIATE transaction: a claim moves
//! only a ticket that is still `open` (or `diagnosing` with an expired lease), and a
//! completion or failure lands only if the caller still holds the lease. So a ticket is
//! never lost (an expired lease is claimed again), never stuck (every failure returns it
//! to `open` with a retry time), and never diagnosed twice for the same evidence (a claim
//! needs a fingerprint other than the one last diagnosed). A resolved ticket is never
//! claimed; a worker whose ticket resolved mid-diagnosis may still complete it, so the
//! record is kept.
//!
//! Owners must be unique per worker instance (e.g. host, pid and a start time).

use crate::limits::{self, MAX_ERROR};
use crate::row;
use crate::types::{Claim, DiagnosisOutcome, DiagnosisRow, EventKind, Status, Ticket};
use crate::{StoreError, TicketStore};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::time::Duration;

/// Failed attempts kept per ticket in `diagnoses`; successful records are all kept.
pub const MAX_FAILED_DIAGNOSES_PER_TICKET: i64 = 50;

impl TicketStore {
    /// Hands one ticket to `owner` for diagnosis until `now_ms + lease`, or `None` when no
    /// ticket is due. A ticket whose lease expired (its worker crashed) comes first; that
    /// attempt is recorded as failed.
    pub fn claim_for_diagnosis(
        &mut self,
        now_ms: i64,
        lease: Duration,
        owner: &str,
    ) -> Result<Option<Claim>, StoreError> {
        let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claimed = match reclaim_expired(&tx, now_ms, until, owner)? {
            Some(id) => Some(id),
            None => claim_open(&tx, now_ms, until, owner)?,
        };
        let claim = match claimed {
            Some(id) => {
                let ticket = row::get_ticket(&tx, id)?;
                Some(Claim {
                    fingerprint: ticket.diagnosis_state.fingerprint.clone(),
                    attempt: ticket.diagnosis_state.attempts + 1,
                    ticket,
                })
            }
            None => None,
        };
        tx.commit()?;
        Ok(claim)
    }

    /// Stores a diagnosis made under `owner`'s lease for `fingerprint` (the claim's). Returns
    /// false, and stores nothing, when the lease is no longer the caller's.
    pub fn complete_diagnosis(
        &mut self,
        id: i64,
        owner: &str,
        fingerprint: Option<&str>,
        record: &serde_json::Value,
        backend: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !holds_lease(&tx, id, owner)? {
            return Ok(false);
        }
        let record = record.to_string();
        insert_diagnosis(
            &tx,
            id,
            at_ms,
            DiagnosisOutcome::Ok,
            Some(backend),
            fingerprint,
            Some(&record),
            None,
        )?;
        row::exec(
            &tx,
            "UPDATE tickets SET diagnosis = ?2, diagnosed_fingerprint = ?3, diagnosed_at = ?4, \
             diagnosis_attempts = 0, last_error = NULL, next_attempt_at = 0, \
             lease_owner = NULL, lease_until = NULL, \
             status = CASE WHEN status != 'diagnosing' THEN status \
                           WHEN fingerprint IS ?3 THEN 'diagnosed' ELSE 'open' END \
             WHERE id = ?1",
            params![id, record, fingerprint, at_ms],
        )?;
        row::insert_event(
            &tx,
            id,
            at_ms,
            EventKind::Diagnosed,
            &format!("by {backend}"),
        )?;
        // The evidence moved while it was being diagnosed (a tick ran meanwhile): the
        // ticket went back to `open` above, to be diagnosed again for what it is now.
        let status: String =
            row::query_one(&tx, "SELECT status FROM tickets WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
        if status == Status::Open.as_str() {
            row::insert_event(
                &tx,
                id,
                at_ms,
                EventKind::EvidenceChanged,
                "evidence changed during the diagnosis: diagnose again",
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Records a failed attempt under `owner`'s lease and puts the ticket back to `open`,
    /// not to be claimed before `retry_at_ms` (or to `diagnosed`, if an earlier diagnosis
    /// already covers its current evidence). Returns false when the lease is no longer the
    /// caller's.
    pub fn fail_diagnosis(
        &mut self,
        id: i64,
        owner: &str,
        backend: &str,
        error: &str,
        retry_at_ms: i64,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !holds_lease(&tx, id, owner)? {
            return Ok(false);
        }
        let error = limits::truncate(error, MAX_ERROR);
        let fingerprint: Option<String> = row::query_one(
            &tx,
            "SELECT fingerprint FROM tickets WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?;
        insert_diagnosis(
            &tx,
            id,
            at_ms,
            DiagnosisOutcome::Failed,
            Some(backend),
            fingerprint.as_deref(),
            None,
            Some(&error),
        )?;
        row::exec(
            &tx,
            "UPDATE tickets SET diagnosis_attempts = diagnosis_attempts + 1, last_error = ?2, \
             next_attempt_at = ?3, lease_owner = NULL, lease_until = NULL, \
             status = CASE WHEN status != 'diagnosing' THEN status \
                           WHEN diagnosed_at IS NOT NULL AND diagnosed_fingerprint IS fingerprint \
                           THEN 'diagnosed' ELSE 'open' END \
             WHERE id = ?1",
            params![id, error, retry_at_ms],
        )?;
        row::insert_event(
            &tx,
            id,
            at_ms,
            EventKind::DiagnosisFailed,
            &format!("{backend}: {error}"),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Stores an on-demand diagnosis (`operator diagnose ID`) beside the earlier ones. It is
    /// for the ticket's current fingerprint. An open ticket becomes `diagnosed`; a ticket a
    /// worker holds keeps its lease and status.
    pub fn add_diagnosis(
        &mut self,
        id: i64,
        record: &serde_json::Value,
        backend: &str,
        at_ms: i64,
    ) -> Result<Ticket, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ticket = row::get_ticket(&tx, id)?;
        let record = record.to_string();
        insert_diagnosis(
            &tx,
            id,
            at_ms,
            DiagnosisOutcome::Ok,
            Some(backend),
            ticket.diagnosis_state.fingerprint.as_deref(),
            Some(&record),
            None,
        )?;
        row::exec(
            &tx,
            "UPDATE tickets SET diagnosis = ?2, diagnosed_fingerprint = fingerprint, diagnosed_at = ?3, \
             diagnosis_attempts = CASE status WHEN 'open' THEN 0 ELSE diagnosis_attempts END, \
             last_error = CASE status WHEN 'open' THEN NULL ELSE last_error END, \
             status = CASE status WHEN 'open' THEN 'diagnosed' ELSE status END \
             WHERE id = ?1",
            params![id, record, at_ms],
        )?;
        row::insert_event(
            &tx,
            id,
            at_ms,
            EventKind::Diagnosed,
            &format!("on demand by {backend}"),
        )?;
        let ticket = row::get_ticket(&tx, id)?;
        tx.commit()?;
        Ok(ticket)
    }

    /// Every diagnosis attempt for a ticket, oldest first.
    pub fn diagnoses(&self, id: i64) -> Result<Vec<DiagnosisRow>, StoreError> {
        row::get_ticket(&self.conn, id)?;
        let mut stmt = self.conn.prepare(
            "SELECT id, ticket_id, at, outcome, backend, fingerprint, record, error \
             FROM diagnoses WHERE ticket_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], row::diagnosis)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A `diagnosing` ticket whose lease ran out goes to the new owner; the lost attempt is
/// recorded as a failure.
fn reclaim_expired(
    conn: &Connection,
    now_ms: i64,
    until: i64,
    owner: &str,
) -> Result<Option<i64>, StoreError> {
    let expired: Option<(i64, Option<String>, Option<String>)> = row::query_one(
        conn,
        "SELECT id, lease_owner, fingerprint FROM tickets \
             WHERE status = 'diagnosing' AND COALESCE(lease_until, 0) <= ?1 ORDER BY id LIMIT 1",
        [now_ms],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?;
    let Some((id, previous, fingerprint)) = expired else {
        return Ok(None);
    };
    let error = format!(
        "lease of {} expired before it finished",
        previous.as_deref().unwrap_or("an unknown worker")
    );
    insert_diagnosis(
        conn,
        id,
        now_ms,
        DiagnosisOutcome::Failed,
        None,
        fingerprint.as_deref(),
        None,
        Some(&error),
    )?;
    let changed = row::exec(
        conn,
        "UPDATE tickets SET diagnosis_attempts = diagnosis_attempts + 1, last_error = ?3, \
         lease_owner = ?4, lease_until = ?5 \
         WHERE id = ?1 AND status = 'diagnosing' AND lease_owner IS ?2",
        params![id, previous, error, owner, until],
    )?;
    if changed != 1 {
        return Err(StoreError::Corrupt(format!(
            "ticket {id}: lease changed inside a write transaction"
        )));
    }
    row::insert_event(conn, id, now_ms, EventKind::LeaseExpired, &error)?;
    Ok(Some(id))
}

/// The oldest `open` ticket that is due and whose evidence differs from what was last
/// diagnosed, moved to `diagnosing` under `owner`.
fn claim_open(
    conn: &Connection,
    now_ms: i64,
    until: i64,
    owner: &str,
) -> Result<Option<i64>, StoreError> {
    let id: Option<i64> = row::query_one(
        conn,
        "SELECT id FROM tickets WHERE status = 'open' AND next_attempt_at <= ?1 \
             AND (diagnosed_at IS NULL OR diagnosed_fingerprint IS NOT fingerprint) \
             ORDER BY id LIMIT 1",
        [now_ms],
        |r| r.get(0),
    )
    .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    let changed = row::exec(
        conn,
        "UPDATE tickets SET status = 'diagnosing', lease_owner = ?2, lease_until = ?3 \
         WHERE id = ?1 AND status = 'open'",
        params![id, owner, until],
    )?;
    Ok((changed == 1).then_some(id))
}

/// Whether `owner` holds the ticket's lease. A ticket resolved while being diagnosed keeps
/// the lease, so its diagnosis can still be stored. `NotFound` for no such ticket.
fn holds_lease(conn: &Connection, id: i64, owner: &str) -> Result<bool, StoreError> {
    let lease: Option<(Option<String>, String)> = row::query_one(
        conn,
        "SELECT lease_owner, status FROM tickets WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    let (lease_owner, status) = lease.ok_or(StoreError::NotFound(id))?;
    Ok(lease_owner.as_deref() == Some(owner) && (status == "diagnosing" || status == "resolved"))
}

#[allow(clippy::too_many_arguments)]
fn insert_diagnosis(
    conn: &Connection,
    ticket: i64,
    at: i64,
    outcome: DiagnosisOutcome,
    backend: Option<&str>,
    fingerprint: Option<&str>,
    record: Option<&str>,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    row::exec(
        conn,
        "INSERT INTO diagnoses (ticket_id, at, outcome, backend, fingerprint, record, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            ticket,
            at,
            outcome.as_str(),
            backend,
            fingerprint,
            record,
            error
        ],
    )?;
    if outcome == DiagnosisOutcome::Failed {
        row::exec(
            conn,
            "DELETE FROM diagnoses WHERE id IN ( \
               SELECT id FROM diagnoses WHERE ticket_id = ?1 AND outcome = 'failed' \
               ORDER BY id DESC LIMIT -1 OFFSET ?2)",
            params![ticket, MAX_FAILED_DIAGNOSES_PER_TICKET],
        )?;
    }
    Ok(())
}
