//! The ticket store (SQLite through rusqlite).
//!
//! Every tick is written in one transaction: the observation, ticket opens and updates,
//! auto-resolves and the heartbeat land together or not at all, so a host killed at any
//! point loses no ticket and duplicates none. A partial unique index makes the database
//! itself refuse a second live ticket for the same (subject, dedup key).

mod schema;

pub use schema::SCHEMA_VERSION;

use operator_model::{Observation, ObserveError, Severity, Violation};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ticket database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "ticket database has schema version {found}, newer than this operator supports ({supported}); upgrade operator"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("ticket #{0} does not exist")]
    NotFound(i64),
    #[error("ticket database holds malformed data: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Diagnosing,
    Diagnosed,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Diagnosing => "diagnosing",
            Status::Diagnosed => "diagnosed",
            Status::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "open" => Some(Status::Open),
            "diagnosing" => Some(Status::Diagnosing),
            "diagnosed" => Some(Status::Diagnosed),
            "resolved" => Some(Status::Resolved),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    pub id: i64,
    pub subject: String,
    pub kind: String,
    pub invariant: String,
    pub severity: Severity,
    pub component: String,
    pub summary: String,
    pub evidence: serde_json::Map<String, serde_json::Value>,
    pub status: Status,
    /// Ticks on which the violation was seen.
    pub count: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub opened_tick: i64,
    pub last_tick: i64,
    /// Consecutive ticks on which it held again.
    pub clear_streak: i64,
    pub resolved_at: Option<i64>,
    pub resolution: Option<String>,
    pub diagnosis: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketEvent {
    pub at: i64,
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredObservation {
    pub id: i64,
    pub tick: i64,
    pub taken_at: i64,
    pub observation: Observation,
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketDetail {
    #[serde(flatten)]
    pub ticket: Ticket,
    pub events: Vec<TicketEvent>,
    pub observations: Vec<StoredObservation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Heartbeat {
    pub subject: String,
    pub tick: i64,
    pub last_tick_at: i64,
    pub duration_ms: f64,
    pub ok: bool,
    pub error: Option<String>,
    pub pid: i64,
}

/// What one tick produced.
pub enum TickResult<'a> {
    Observed {
        observation: &'a Observation,
        violations: &'a [Violation],
    },
    /// The plugin ran but reports the subject could not be observed.
    ObserveFailed(&'a ObserveError),
    /// The plugin itself failed (trap, deadline, memory).
    PluginFailed { kind: &'a str, message: &'a str },
}

pub struct TickRecord<'a> {
    pub subject: &'a str,
    pub tick: i64,
    pub at_ms: i64,
    pub duration: Duration,
    pub result: TickResult<'a>,
}

/// Ticket policy knobs.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Consecutive clean ticks before a ticket auto-resolves.
    pub resolve_after: u32,
    /// Observations kept before a ticket opens (and linked to it as context).
    pub history: usize,
    /// Most observations linked to one ticket; beyond it the oldest after the opening
    /// context are dropped.
    pub max_linked: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            resolve_after: 3,
            history: 5,
            max_linked: 30,
        }
    }
}

#[derive(Debug, Default)]
pub struct TickOutcome {
    pub opened: Vec<Ticket>,
    pub updated: usize,
    pub escalated: Vec<Ticket>,
    pub resolved: Vec<Ticket>,
}

pub struct TicketStore {
    conn: Connection,
}

const TICKET_COLUMNS: &str = "id, subject, kind, invariant, severity, component, summary, evidence, status, count, \
     first_seen, last_seen, opened_tick, last_tick, clear_streak, resolved_at, resolution, diagnosis";

fn row_to_ticket(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ticket> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let severity: String = r.get(4)?;
    let evidence: String = r.get(7)?;
    let status: String = r.get(8)?;
    let diagnosis: Option<String> = r.get(17)?;
    Ok(Ticket {
        id: r.get(0)?,
        subject: r.get(1)?,
        kind: r.get(2)?,
        invariant: r.get(3)?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| bad(4, format!("severity `{severity}`")))?,
        component: r.get(5)?,
        summary: r.get(6)?,
        evidence: serde_json::from_str(&evidence).map_err(|e| bad(7, e.to_string()))?,
        status: Status::parse(&status).ok_or_else(|| bad(8, format!("status `{status}`")))?,
        count: r.get(9)?,
        first_seen: r.get(10)?,
        last_seen: r.get(11)?,
        opened_tick: r.get(12)?,
        last_tick: r.get(13)?,
        clear_streak: r.get(14)?,
        resolved_at: r.get(15)?,
        resolution: r.get(16)?,
        diagnosis: diagnosis
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| bad(17, e.to_string()))?,
    })
}

fn evidence_json(evidence: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = evidence
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// A violation-shaped record for host-level tickets (plugin and observe failures).
struct Finding<'a> {
    kind: &'a str,
    invariant: &'a str,
    severity: Severity,
    component: &'a str,
    summary: String,
    evidence: String,
    dedup_key: String,
}

impl TicketStore {
    pub fn open(path: &Path) -> Result<TicketStore, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers (`tickets list`) never block the monitor's writes.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut conn)?;
        Ok(TicketStore { conn })
    }

    /// The tick number to use next for `subject` (continues across restarts).
    pub fn next_tick(&self, subject: &str) -> Result<i64, StoreError> {
        let last: Option<i64> = self
            .conn
            .query_row(
                "SELECT tick FROM heartbeat WHERE subject = ?1",
                [subject],
                |r| r.get(0),
            )
            .optional()?;
        Ok(last.unwrap_or(0) + 1)
    }

    /// Writes one tick atomically.
    pub fn record_tick(
        &mut self,
        rec: &TickRecord<'_>,
        policy: Policy,
    ) -> Result<TickOutcome, StoreError> {
        let tx = self.conn.transaction()?;
        let mut outcome = TickOutcome::default();
        let (ok, error) = match &rec.result {
            TickResult::Observed {
                observation,
                violations,
            } => {
                let obs_json = serde_json::to_string(observation)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                tx.execute(
                    "INSERT INTO observations (subject, tick, taken_at, data) VALUES (?1, ?2, ?3, ?4)",
                    params![rec.subject, rec.tick, observation.timestamp_ms as i64, obs_json],
                )?;
                let obs_id = tx.last_insert_rowid();
                let mut seen = HashSet::new();
                for v in merge(violations) {
                    seen.insert(v.dedup_key.clone());
                    let finding = Finding {
                        kind: "invariant",
                        invariant: &v.invariant,
                        severity: v.severity,
                        component: &v.component,
                        summary: v.summary.clone(),
                        evidence: evidence_json(&v.evidence),
                        dedup_key: v.dedup_key.clone(),
                    };
                    upsert(&tx, rec, &finding, Some(obs_id), policy, &mut outcome)?;
                }
                auto_resolve(&tx, rec, &seen, policy, &mut outcome)?;
                // Observations nobody links to are kept only as the rolling history
                // that a newly opened ticket will link.
                tx.execute(
                    "DELETE FROM observations WHERE subject = ?1 AND id <= ?2 \
                     AND NOT EXISTS (SELECT 1 FROM ticket_observations t WHERE t.observation_id = observations.id)",
                    params![rec.subject, obs_id - policy.history as i64 - 2],
                )?;
                (true, None)
            }
            TickResult::ObserveFailed(err) => {
                let finding = Finding {
                    kind: "observe-failure",
                    invariant: "OBSERVE",
                    severity: Severity::Critical,
                    component: "",
                    summary: format!("cannot observe {}: {err}", rec.subject),
                    evidence: serde_json::json!({ "error": err.to_string() }).to_string(),
                    dedup_key: "observe-failure".into(),
                };
                upsert(&tx, rec, &finding, None, policy, &mut outcome)?;
                (false, Some(err.to_string()))
            }
            TickResult::PluginFailed { kind, message } => {
                let finding = Finding {
                    kind: "plugin-failure",
                    invariant: "PLUGIN",
                    severity: Severity::Warning,
                    component: "",
                    summary: format!("plugin failure ({kind}): {message}"),
                    evidence: serde_json::json!({ "kind": kind, "error": message }).to_string(),
                    dedup_key: "plugin-failure".into(),
                };
                upsert(&tx, rec, &finding, None, policy, &mut outcome)?;
                (false, Some(message.to_string()))
            }
        };
        tx.execute(
            "INSERT INTO heartbeat (subject, tick, last_tick_at, duration_ms, ok, error, pid) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT(subject) DO UPDATE SET tick = excluded.tick, last_tick_at = excluded.last_tick_at, \
             duration_ms = excluded.duration_ms, ok = excluded.ok, error = excluded.error, pid = excluded.pid",
            params![
                rec.subject,
                rec.tick,
                rec.at_ms,
                rec.duration.as_secs_f64() * 1000.0,
                ok,
                error,
                std::process::id()
            ],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    pub fn list(
        &self,
        status: Option<Status>,
        subject: Option<&str>,
    ) -> Result<Vec<Ticket>, StoreError> {
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE (?1 IS NULL OR status = ?1) \
             AND (?2 IS NULL OR subject = ?2) ORDER BY id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![status.map(Status::as_str), subject], row_to_ticket)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn live(&self, subject: &str) -> Result<Vec<Ticket>, StoreError> {
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE status != 'resolved' AND subject = ?1 ORDER BY id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([subject], row_to_ticket)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get(&self, id: i64) -> Result<Ticket, StoreError> {
        let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = ?1");
        self.conn
            .query_row(&sql, [id], row_to_ticket)
            .optional()?
            .ok_or(StoreError::NotFound(id))
    }

    pub fn detail(&self, id: i64) -> Result<TicketDetail, StoreError> {
        let ticket = self.get(id)?;
        let mut stmt = self.conn.prepare(
            "SELECT at, kind, detail FROM ticket_events WHERE ticket_id = ?1 ORDER BY id",
        )?;
        let events = stmt
            .query_map([id], |r| {
                Ok(TicketEvent {
                    at: r.get(0)?,
                    kind: r.get(1)?,
                    detail: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT o.id, o.tick, o.taken_at, o.data FROM observations o \
             JOIN ticket_observations t ON t.observation_id = o.id WHERE t.ticket_id = ?1 ORDER BY o.id",
        )?;
        let observations = stmt
            .query_map([id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
            })?
            .map(|row| {
                let (oid, tick, taken_at, data) = row?;
                let observation = serde_json::from_str(&data)
                    .map_err(|e| StoreError::Corrupt(format!("observation {oid}: {e}")))?;
                Ok(StoredObservation {
                    id: oid,
                    tick,
                    taken_at,
                    observation,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(TicketDetail {
            ticket,
            events,
            observations,
        })
    }

    /// Resolves a ticket by hand. Resolving a resolved ticket is a no-op.
    pub fn resolve(&mut self, id: i64, at_ms: i64) -> Result<Ticket, StoreError> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE tickets SET status = 'resolved', resolved_at = ?2, resolution = 'manual' \
             WHERE id = ?1 AND status != 'resolved'",
            params![id, at_ms],
        )?;
        if changed == 1 {
            tx.execute(
                "INSERT INTO ticket_events (ticket_id, at, kind, detail) VALUES (?1, ?2, 'resolved', 'resolved by hand')",
                params![id, at_ms],
            )?;
        }
        tx.commit()?;
        self.get(id)
    }

    pub fn heartbeats(&self) -> Result<Vec<Heartbeat>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT subject, tick, last_tick_at, duration_ms, ok, error, pid FROM heartbeat ORDER BY subject",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Heartbeat {
                subject: r.get(0)?,
                tick: r.get(1)?,
                last_tick_at: r.get(2)?,
                duration_ms: r.get(3)?,
                ok: r.get(4)?,
                error: r.get(5)?,
                pid: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs SQLite's own consistency check; "ok" when sound.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

/// One violation per dedup key per tick: the most severe wins.
fn merge(violations: &[Violation]) -> Vec<&Violation> {
    let mut by_key: BTreeMap<&str, &Violation> = BTreeMap::new();
    for v in violations {
        by_key
            .entry(v.dedup_key.as_str())
            .and_modify(|cur| {
                if v.severity > cur.severity {
                    *cur = v;
                }
            })
            .or_insert(v);
    }
    by_key.into_values().collect()
}

fn event(
    tx: &Transaction<'_>,
    ticket: i64,
    at: i64,
    kind: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO ticket_events (ticket_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![ticket, at, kind, detail],
    )?;
    Ok(())
}

fn upsert(
    tx: &Transaction<'_>,
    rec: &TickRecord<'_>,
    f: &Finding<'_>,
    obs_id: Option<i64>,
    policy: Policy,
    outcome: &mut TickOutcome,
) -> Result<(), StoreError> {
    let live: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, severity FROM tickets WHERE subject = ?1 AND dedup_key = ?2 AND status != 'resolved'",
            params![rec.subject, f.dedup_key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let id = match live {
        Some((id, old_severity)) => {
            tx.execute(
                "UPDATE tickets SET last_seen = ?2, last_tick = ?3, count = count + 1, clear_streak = 0, \
                 summary = ?4, evidence = ?5, severity = ?6, component = ?7 WHERE id = ?1",
                params![
                    id,
                    rec.at_ms,
                    rec.tick,
                    f.summary,
                    f.evidence,
                    f.severity.as_str(),
                    f.component
                ],
            )?;
            outcome.updated += 1;
            if Severity::parse(&old_severity).is_some_and(|old| f.severity > old) {
                event(
                    tx,
                    id,
                    rec.at_ms,
                    "escalated",
                    &format!("{old_severity} -> {}", f.severity),
                )?;
                outcome.escalated.push(get_in(tx, id)?);
            }
            id
        }
        None => {
            tx.execute(
                "INSERT INTO tickets (subject, dedup_key, kind, invariant, severity, component, summary, evidence, \
                 status, count, first_seen, last_seen, opened_tick, last_tick, clear_streak) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'open', 1, ?9, ?9, ?10, ?10, 0)",
                params![
                    rec.subject,
                    f.dedup_key,
                    f.kind,
                    f.invariant,
                    f.severity.as_str(),
                    f.component,
                    f.summary,
                    f.evidence,
                    rec.at_ms,
                    rec.tick
                ],
            )?;
            let id = tx.last_insert_rowid();
            event(tx, id, rec.at_ms, "opened", &f.summary)?;
            // The history that led up to it, so diagnosis sees the before as well.
            if let Some(obs_id) = obs_id {
                tx.execute(
                    "INSERT OR IGNORE INTO ticket_observations (ticket_id, observation_id) \
                     SELECT ?1, id FROM observations WHERE subject = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4",
                    params![id, rec.subject, obs_id, policy.history as i64],
                )?;
            }
            outcome.opened.push(get_in(tx, id)?);
            id
        }
    };
    if let Some(obs_id) = obs_id {
        tx.execute(
            "INSERT OR IGNORE INTO ticket_observations (ticket_id, observation_id) VALUES (?1, ?2)",
            params![id, obs_id],
        )?;
        // Keep the opening context and the latest; drop the oldest in between.
        tx.execute(
            "DELETE FROM ticket_observations WHERE ticket_id = ?1 AND observation_id IN ( \
               SELECT observation_id FROM ticket_observations WHERE ticket_id = ?1 \
               ORDER BY observation_id LIMIT ( \
                 SELECT MAX(COUNT(*) - ?2, 0) FROM ticket_observations WHERE ticket_id = ?1) \
               OFFSET ?3)",
            params![id, policy.max_linked as i64, (policy.history + 1) as i64],
        )?;
    }
    Ok(())
}

fn auto_resolve(
    tx: &Transaction<'_>,
    rec: &TickRecord<'_>,
    seen: &HashSet<String>,
    policy: Policy,
    outcome: &mut TickOutcome,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare(
        "SELECT id, dedup_key, clear_streak FROM tickets WHERE subject = ?1 AND status != 'resolved'",
    )?;
    let live: Vec<(i64, String, i64)> = stmt
        .query_map([rec.subject], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, key, streak) in live {
        if seen.contains(&key) {
            continue;
        }
        let streak = streak + 1;
        if streak >= policy.resolve_after as i64 {
            tx.execute(
                "UPDATE tickets SET status = 'resolved', clear_streak = ?2, resolved_at = ?3, resolution = 'auto' WHERE id = ?1",
                params![id, streak, rec.at_ms],
            )?;
            event(
                tx,
                id,
                rec.at_ms,
                "resolved",
                &format!("held for {streak} consecutive ticks"),
            )?;
            outcome.resolved.push(get_in(tx, id)?);
        } else {
            tx.execute(
                "UPDATE tickets SET clear_streak = ?2 WHERE id = ?1",
                params![id, streak],
            )?;
        }
    }
    Ok(())
}

fn get_in(tx: &Transaction<'_>, id: i64) -> Result<Ticket, StoreError> {
    let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = ?1");
    Ok(tx.query_row(&sql, [id], row_to_ticket)?)
}

#[cfg(test)]
mod tests;
