//! Reading rows into records, by column name, and the one way events are written.

use crate::StoreError;
use crate::types::{
    DiagnosisOutcome, DiagnosisRow, DiagnosisState, EventKind, IncidentRef, Resolution, Role,
    Status, Ticket, TicketEvent, TicketKind,
};
use operator_model::Severity;
use rusqlite::{Connection, OptionalExtension, Row, params};

macro_rules! ticket_columns {
    () => {
        "id, subject, dedup_key, kind, invariant, severity, component, \
     summary, evidence, opening_evidence, status, count, first_seen, last_seen, opened_tick, \
     last_tick, clear_streak, resolved_at, resolution, diagnosis, fingerprint, \
     diagnosed_fingerprint, diagnosed_at, diagnosis_attempts, next_attempt_at, last_error, \
     lease_owner, lease_until, incident_id, incident_role, incident_reason"
    };
}

pub const TICKET_COLUMNS: &str = ticket_columns!();

/// Runs a statement through the connection's statement cache: a tick runs the same few
/// dozen statements every time, and parsing them anew was a third of its cost.
pub fn exec<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache.
pub fn query_one<T, P, F>(conn: &Connection, sql: &str, params: P, f: F) -> rusqlite::Result<T>
where
    P: rusqlite::Params,
    F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
{
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// Events kept per ticket: the first (`opened`) and the newest up to this many. Some kinds
/// repeat without bound over a long-lived ticket (severity flapping, re-diagnosis).
pub const MAX_EVENTS_PER_TICKET: i64 = 200;

fn bad(column: &str, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("column {column}: {what}").into(),
    )
}

/// Parses a text column into one of the closed sets.
fn text<T>(r: &Row<'_>, column: &str, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = r.get(column)?;
    parse(&s).ok_or_else(|| bad(column, format!("unknown value `{s}`")))
}

fn opt_text<T>(
    r: &Row<'_>,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = r.get(column)?;
    s.map(|s| parse(&s).ok_or_else(|| bad(column, format!("unknown value `{s}`"))))
        .transpose()
}

fn json<T: serde::de::DeserializeOwned>(r: &Row<'_>, column: &str) -> rusqlite::Result<Option<T>> {
    let s: Option<String> = r.get(column)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| bad(column, e.to_string())))
        .transpose()
}

pub fn ticket(r: &Row<'_>) -> rusqlite::Result<Ticket> {
    let incident_id: Option<i64> = r.get("incident_id")?;
    let incident = match incident_id {
        Some(id) => Some(IncidentRef {
            id,
            role: opt_text(r, "incident_role", Role::parse)?
                .ok_or_else(|| bad("incident_role", "missing".into()))?,
            reason: r
                .get::<_, Option<String>>("incident_reason")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Ticket {
        id: r.get("id")?,
        subject: r.get("subject")?,
        dedup_key: r.get("dedup_key")?,
        kind: text(r, "kind", TicketKind::parse)?,
        invariant: r.get("invariant")?,
        severity: text(r, "severity", Severity::parse)?,
        component: r.get("component")?,
        summary: r.get("summary")?,
        evidence: json(r, "evidence")?.ok_or_else(|| bad("evidence", "missing".into()))?,
        opening_evidence: json(r, "opening_evidence")?,
        status: text(r, "status", Status::parse)?,
        count: r.get("count")?,
        first_seen: r.get("first_seen")?,
        last_seen: r.get("last_seen")?,
        opened_tick: r.get("opened_tick")?,
        last_tick: r.get("last_tick")?,
        clear_streak: r.get("clear_streak")?,
        resolved_at: r.get("resolved_at")?,
        resolution: opt_text(r, "resolution", Resolution::parse)?,
        diagnosis: json(r, "diagnosis")?,
        diagnosis_state: DiagnosisState {
            fingerprint: r.get("fingerprint")?,
            diagnosed_fingerprint: r.get("diagnosed_fingerprint")?,
            diagnosed_at: r.get("diagnosed_at")?,
            attempts: r.get("diagnosis_attempts")?,
            next_attempt_at: r.get("next_attempt_at")?,
            last_error: r.get("last_error")?,
            lease_owner: r.get("lease_owner")?,
            lease_until: r.get("lease_until")?,
        },
        incident,
    })
}

pub fn get_ticket(conn: &Connection, id: i64) -> Result<Ticket, StoreError> {
    query_one(
        conn,
        concat!("SELECT ", ticket_columns!(), " FROM tickets WHERE id = ?1"),
        [id],
        ticket,
    )
    .optional()?
    .ok_or(StoreError::NotFound(id))
}

pub fn event(r: &Row<'_>) -> rusqlite::Result<TicketEvent> {
    Ok(TicketEvent {
        at: r.get("at")?,
        kind: text(r, "kind", EventKind::parse)?,
        detail: r.get("detail")?,
    })
}

pub fn diagnosis(r: &Row<'_>) -> rusqlite::Result<DiagnosisRow> {
    Ok(DiagnosisRow {
        id: r.get("id")?,
        ticket_id: r.get("ticket_id")?,
        at: r.get("at")?,
        outcome: text(r, "outcome", DiagnosisOutcome::parse)?,
        backend: r.get("backend")?,
        fingerprint: r.get("fingerprint")?,
        record: json(r, "record")?,
        error: r.get("error")?,
    })
}

/// Appends an event; for the kinds that can repeat, drops the oldest beyond
/// [`MAX_EVENTS_PER_TICKET`] (never the first, which says how the ticket opened).
pub fn insert_event(
    conn: &Connection,
    ticket: i64,
    at: i64,
    kind: EventKind,
    detail: &str,
) -> rusqlite::Result<()> {
    exec(
        conn,
        "INSERT INTO ticket_events (ticket_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![ticket, at, kind.as_str(), detail],
    )?;
    if matches!(kind, EventKind::Opened) {
        return Ok(());
    }
    exec(
        conn,
        "DELETE FROM ticket_events WHERE id IN ( \
           SELECT id FROM ticket_events WHERE ticket_id = ?1 ORDER BY id DESC \
           LIMIT -1 OFFSET ?2) \
         AND id != (SELECT MIN(id) FROM ticket_events WHERE ticket_id = ?1)",
        params![ticket, MAX_EVENTS_PER_TICKET - 1],
    )?;
    Ok(())
}
