//! Schema migrations, tracked with `PRAGMA user_version`. Pending steps run in one
//! transaction together with the version bump, so a crash mid-migration leaves the old
//! schema intact.

use rusqlite::{Connection, TransactionBehavior};

pub(crate) const MIGRATIONS: &[&str] = &[
    // v1
    r#"
    CREATE TABLE tickets (
        id            INTEGER PRIMARY KEY,
        subject       TEXT NOT NULL,
        dedup_key     TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('invariant', 'plugin-failure', 'observe-failure')),
        invariant     TEXT NOT NULL,
        severity      TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
        component     TEXT NOT NULL,
        summary       TEXT NOT NULL,
        evidence      TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('open', 'diagnosing', 'diagnosed', 'resolved')),
        count         INTEGER NOT NULL DEFAULT 1,
        first_seen    INTEGER NOT NULL,
        last_seen     INTEGER NOT NULL,
        opened_tick   INTEGER NOT NULL,
        last_tick     INTEGER NOT NULL,
        clear_streak  INTEGER NOT NULL DEFAULT 0,
        resolved_at   INTEGER,
        resolution    TEXT,
        diagnosis     TEXT
    );
    -- At most one live ticket per (subject, dedup key): the database itself refuses duplicates.
    CREATE UNIQUE INDEX tickets_live ON tickets(subject, dedup_key) WHERE status != 'resolved';
    CREATE INDEX tickets_by_status ON tickets(status, id);

    CREATE TABLE observations (
        id        INTEGER PRIMARY KEY,
        subject   TEXT NOT NULL,
        tick      INTEGER NOT NULL,
        taken_at  INTEGER NOT NULL,
        data      TEXT NOT NULL
    );
    CREATE INDEX observations_by_subject ON observations(subject, id);

    CREATE TABLE ticket_observations (
        ticket_id       INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
        observation_id  INTEGER NOT NULL REFERENCES observations(id) ON DELETE CASCADE,
        PRIMARY KEY (ticket_id, observation_id)
    ) WITHOUT ROWID;
    CREATE INDEX ticket_observations_by_obs ON ticket_observations(observation_id);

    CREATE TABLE ticket_events (
        id         INTEGER PRIMARY KEY,
        ticket_id  INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
        at         INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        detail     TEXT NOT NULL
    );
    CREATE INDEX ticket_events_by_ticket ON ticket_events(ticket_id, id);

    CREATE TABLE heartbeat (
        subject       TEXT PRIMARY KEY,
        tick          INTEGER NOT NULL,
        last_tick_at  INTEGER NOT NULL,
        duration_ms   REAL NOT NULL,
        ok            INTEGER NOT NULL,
        error         TEXT,
        pid           INTEGER NOT NULL
    );
    "#,
    // v2: opening evidence, the diagnosis lifecycle (lease, retries, fingerprints, history),
    // incidents, and what retention needs (observation sizes, the opening observation).
    r#"
    ALTER TABLE tickets ADD COLUMN opening_evidence TEXT;
    -- The observation of the tick the ticket opened on: a resolved ticket keeps the
    -- observations up to and including it.
    ALTER TABLE tickets ADD COLUMN opening_observation_id INTEGER;
    -- 1 once a resolved ticket's links past its opening context were dropped.
    ALTER TABLE tickets ADD COLUMN context_trimmed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tickets ADD COLUMN fingerprint TEXT;
    ALTER TABLE tickets ADD COLUMN diagnosed_fingerprint TEXT;
    ALTER TABLE tickets ADD COLUMN diagnosed_at INTEGER;
    ALTER TABLE tickets ADD COLUMN diagnosis_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tickets ADD COLUMN next_attempt_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tickets ADD COLUMN last_error TEXT;
    ALTER TABLE tickets ADD COLUMN lease_owner TEXT;
    ALTER TABLE tickets ADD COLUMN lease_until INTEGER;
    ALTER TABLE tickets ADD COLUMN incident_id INTEGER REFERENCES tickets(id) ON DELETE SET NULL;
    ALTER TABLE tickets ADD COLUMN incident_role TEXT CHECK (incident_role IN ('root', 'symptom'));
    ALTER TABLE tickets ADD COLUMN incident_reason TEXT;

    UPDATE tickets SET opening_observation_id = (
        SELECT o.id FROM observations o JOIN ticket_observations t ON t.observation_id = o.id
        WHERE t.ticket_id = tickets.id AND o.tick = tickets.opened_tick);

    CREATE INDEX tickets_by_incident ON tickets(incident_id) WHERE incident_id IS NOT NULL;
    -- Retention: resolved tickets whose context is still whole, and resolved tickets by age.
    CREATE INDEX tickets_untrimmed ON tickets(subject, resolved_at)
        WHERE status = 'resolved' AND context_trimmed = 0;
    CREATE INDEX tickets_resolved ON tickets(subject, id) WHERE status = 'resolved';

    ALTER TABLE observations ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE observations SET bytes = length(CAST(data AS BLOB));
    -- Sizes are read from this index: `bytes` sits after `data` in the row, so reading it
    -- from the table would walk every large observation's overflow pages.
    CREATE INDEX observations_sizes ON observations(subject, id, bytes);
    -- What each subject keeps, maintained by triggers, so that each tick can check the
    -- caps with one lookup.
    CREATE TABLE observation_usage (
        subject       TEXT PRIMARY KEY,
        observations  INTEGER NOT NULL,
        bytes         INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO observation_usage (subject, observations, bytes)
        SELECT subject, COUNT(*), SUM(bytes) FROM observations GROUP BY subject;
    CREATE TRIGGER observations_usage_insert AFTER INSERT ON observations BEGIN
        INSERT INTO observation_usage (subject, observations, bytes) VALUES (NEW.subject, 1, NEW.bytes)
            ON CONFLICT (subject) DO UPDATE SET observations = observations + 1, bytes = bytes + NEW.bytes;
    END;
    CREATE TRIGGER observations_usage_delete AFTER DELETE ON observations BEGIN
        UPDATE observation_usage SET observations = observations - 1, bytes = bytes - OLD.bytes
            WHERE subject = OLD.subject;
    END;

    -- Every diagnosis attempt, successes and failures: the ticket shows the latest success.
    CREATE TABLE diagnoses (
        id           INTEGER PRIMARY KEY,
        ticket_id    INTEGER NOT NULL REFERENCES tickets(id) ON DELETE CASCADE,
        at           INTEGER NOT NULL,
        outcome      TEXT NOT NULL CHECK (outcome IN ('ok', 'failed')),
        backend      TEXT,
        fingerprint  TEXT,
        record       TEXT,
        error        TEXT,
        CHECK ((outcome = 'ok') = (record IS NOT NULL))
    );
    CREATE INDEX diagnoses_by_ticket ON diagnoses(ticket_id, id);
    "#,
    // v3: what each subject's plugin declared, so a diagnosis run later (`operator
    // diagnose ID`) sees the same invariants, actions and failure modes.
    r#"
    CREATE TABLE subjects (
        name        TEXT PRIMARY KEY,
        metadata    TEXT NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    "#,
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`]. Refuses a database from a newer operator.
/// The version is read inside an immediate (write-locked) transaction, so two processes
/// opening a fresh database at once cannot both run the same migration.
pub fn migrate(conn: &mut Connection) -> Result<(), super::StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(super::StoreError::TooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for sql in MIGRATIONS.iter().skip(current as usize) {
        tx.execute_batch(sql)?;
    }
    if current < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}
