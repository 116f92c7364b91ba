//! The ticket store (SQLite through rusqlite).
//!
//! Every tick is written in one transaction: ticket opens and updates with the observations
//! they link, auto-resolves, retention and the heartbeat land together or not at all, so a
//! host killed at any point loses no ticket and duplicates none (`tests::kill` proves it by
//! SIGKILLing a writer process). A partial unique index makes the database itself refuse a
//! second live ticket for the same (subject, dedup key). Observations no ticket links are
//! held in memory, not written (see `tick`).
//!
//! Modules: `tick` writes ticks, `retention` bounds what is kept, `diagnosis` runs the
//! diagnosis lifecycle (claim under a lease, complete, fail, history), `incident` records
//! the host's grouping, `limits` caps the strings a plugin hands in.

mod codec;
mod diagnosis;
mod incident;
pub mod limits;
mod retention;
mod row;
mod schema;
mod tick;
mod types;

pub use retention::PruneStats;
pub use schema::SCHEMA_VERSION;
pub use tick::{Policy, TickOutcome, TickRecord, TickResult};
pub use types::*;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// A `BEGIN IMMEDIATE` .. `COMMIT` transaction through cached statements, for the write
/// made every tick: rusqlite's `Transaction` parses both statements anew each time, which
/// was a sixth of the store's share of a live tick (perf). Dropped without a commit (an
/// error, a failed commit) it rolls back, as `Transaction` does.
struct CachedImmediate<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> CachedImmediate<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<CachedImmediate<'c>> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(CachedImmediate { conn, open: true })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl Drop for CachedImmediate<'_> {
    fn drop(&mut self) {
        // A commit that failed (busy) leaves the transaction open; so does an error
        // before it. Nothing of this tick may linger into the next statement. A rollback
        // that fails leaves nothing to do: SQLite rolls back when the connection closes.
        if self.open && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

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
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// The bytes `observation` takes when a ticket links it and the store writes it (the
/// stored form: postcard, deflated).
pub fn stored_size(observation: &operator_model::Observation) -> Result<usize, StoreError> {
    codec::encode(observation).map(|data| data.len())
}

pub struct TicketStore {
    conn: Connection,
    /// Each subject's last `Policy::history` observations, which a ticket opening links
    /// (and only then stores). See `tick::Window`.
    windows: HashMap<String, tick::Window>,
}

impl TicketStore {
    pub fn open(path: &Path) -> Result<TicketStore, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Room for every statement a tick and the diagnosis lifecycle run.
        conn.set_prepared_statement_cache_capacity(96);
        // Plans that do not depend on bound values: otherwise SQLite marks statements with
        // a parameter in a LIMIT, OFFSET or comparison for re-preparing whenever the cache
        // clears their bindings, i.e. on every use (measured: 15% of a tick).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        // Takes effect only while the file has no tables (a new database), and otherwise
        // at the next full VACUUM: freed pages can then be handed back with
        // `incremental_vacuum` instead of rewriting the whole file.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        // WAL: readers (`tickets list`) never block the monitor's writes.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The WAL file is truncated back to this after a checkpoint instead of staying at
        // its largest size.
        conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
        schema::migrate(&mut conn)?;
        Ok(TicketStore {
            conn,
            windows: HashMap::new(),
        })
    }

    /// The tick number to use next for `subject` (continues across restarts).
    pub fn next_tick(&self, subject: &str) -> Result<i64, StoreError> {
        let last: Option<i64> = row::query_one(
            &self.conn,
            "SELECT tick FROM heartbeat WHERE subject = ?1",
            [subject],
            |r| r.get(0),
        )
        .optional()?;
        Ok(last.unwrap_or(0) + 1)
    }

    /// Writes one tick atomically. See [`tick`] for the steps.
    pub fn record_tick(
        &mut self,
        rec: &TickRecord<'_>,
        policy: Policy,
    ) -> Result<TickOutcome, StoreError> {
        if !self.windows.contains_key(rec.subject) {
            self.windows
                .insert(rec.subject.to_string(), tick::Window::new());
        }
        let window = self.windows.get_mut(rec.subject).expect("inserted above");
        // IMMEDIATE: take the write lock up front, so a diagnosis worker writing from
        // another connection makes this wait (busy timeout) instead of failing mid-way.
        let tx = CachedImmediate::begin(&self.conn)?;
        let (outcome, change) = tick::record(&self.conn, rec, policy, window)?;
        tx.commit()?;
        change.apply(window, policy.history);
        Ok(outcome)
    }

    pub fn list(
        &self,
        status: Option<Status>,
        subject: Option<&str>,
    ) -> Result<Vec<Ticket>, StoreError> {
        let sql = format!(
            "SELECT {} FROM tickets WHERE (?1 IS NULL OR status = ?1) \
             AND (?2 IS NULL OR subject = ?2) ORDER BY id",
            row::TICKET_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![status.map(Status::as_str), subject], row::ticket)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn live(&self, subject: &str) -> Result<Vec<Ticket>, StoreError> {
        let sql = format!(
            "SELECT {} FROM tickets WHERE status != 'resolved' AND subject = ?1 ORDER BY id",
            row::TICKET_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([subject], row::ticket)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get(&self, id: i64) -> Result<Ticket, StoreError> {
        row::get_ticket(&self.conn, id)
    }

    pub fn detail(&self, id: i64) -> Result<TicketDetail, StoreError> {
        let ticket = self.get(id)?;
        let mut stmt = self.conn.prepare(
            "SELECT at, kind, detail FROM ticket_events WHERE ticket_id = ?1 ORDER BY id",
        )?;
        let events = stmt
            .query_map([id], row::event)?
            .collect::<Result<_, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT o.id, o.tick, o.taken_at, o.data FROM observations o \
             JOIN ticket_observations t ON t.observation_id = o.id WHERE t.ticket_id = ?1 ORDER BY o.id",
        )?;
        let observations = stmt
            .query_map([id], |r| {
                let oid: i64 = r.get(0)?;
                Ok((oid, r.get(1)?, r.get(2)?, codec::decode(oid, r.get_ref(3)?)))
            })?
            .map(|row| {
                let (oid, tick, taken_at, observation) = row?;
                let observation = observation?;
                Ok(StoredObservation {
                    id: oid,
                    tick,
                    taken_at,
                    observation,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let diagnoses = self.diagnoses(id)?;
        Ok(TicketDetail {
            ticket,
            events,
            observations,
            diagnoses,
        })
    }

    /// Resolves a ticket by hand. Resolving a resolved ticket is a no-op.
    pub fn resolve(&mut self, id: i64, at_ms: i64) -> Result<Ticket, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE tickets SET status = 'resolved', resolved_at = ?2, resolution = ?3 \
             WHERE id = ?1 AND status != 'resolved'",
            params![id, at_ms, Resolution::Manual.as_str()],
        )?;
        if changed == 1 {
            row::insert_event(&tx, id, at_ms, EventKind::Resolved, "resolved by hand")?;
        }
        tx.commit()?;
        self.get(id)
    }

    /// Records what the subject's plugin declares (its metadata, as JSON), for diagnoses
    /// run later from the database alone.
    pub fn save_subject(
        &mut self,
        name: &str,
        metadata: &serde_json::Value,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO subjects (name, metadata, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT(name) DO UPDATE SET metadata = excluded.metadata, updated_at = excluded.updated_at",
            rusqlite::params![name, metadata.to_string(), at_ms],
        )?;
        Ok(())
    }

    /// The metadata last saved for `name`.
    pub fn subject_metadata(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT metadata FROM subjects WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("subject {name}: {e}")))
    }

    pub fn heartbeats(&self) -> Result<Vec<Heartbeat>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT subject, tick, last_tick_at, duration_ms, ok, error, pid FROM heartbeat ORDER BY subject",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Heartbeat {
                subject: r.get("subject")?,
                tick: r.get("tick")?,
                last_tick_at: r.get("last_tick_at")?,
                duration_ms: r.get("duration_ms")?,
                ok: r.get("ok")?,
                error: r.get("error")?,
                pid: r.get("pid")?,
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

    /// Hands the pages that retention freed back to the file system. A database created by
    /// this version uses incremental auto-vacuum (cheap); an older one gets one full
    /// `VACUUM`, which also switches it to incremental for next time. Then the WAL is
    /// checkpointed and truncated.
    pub fn vacuum(&mut self) -> Result<VacuumReport, StoreError> {
        let before_bytes = self.file_bytes()?;
        let mode: i64 = self
            .conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
        // 2 = INCREMENTAL (0 = NONE, 1 = FULL).
        let full = mode != 2;
        if full {
            self.conn
                .pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            self.conn.execute_batch("VACUUM")?;
        } else {
            // It frees one page per step: run it to the end.
            let mut stmt = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(VacuumReport {
            before_bytes,
            after_bytes: self.file_bytes()?,
            full,
        })
    }

    /// The main database file's size as SQLite sees it (pages times page size).
    fn file_bytes(&self) -> Result<u64, StoreError> {
        let pages: i64 = self
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))?;
        let size: i64 = self
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))?;
        Ok((pages * size).max(0) as u64)
    }
}

#[cfg(test)]
mod tests;
