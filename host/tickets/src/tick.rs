//! Writing one tick: the steps `record` runs inside the tick's transaction.
//!
//! 1. each finding (a merged violation, or the host's own failure finding) updates its live
//!    ticket or opens one, within the per-subject live-ticket cap, and links the
//!    observation. The observation is stored only then: the first time a ticket links it,
//!    the window's observations not yet stored go in first (oldest first), then this one;
//!    a tick nobody links stores no observation;
//! 2. live tickets not seen this tick count a clean tick, and resolve after enough of them;
//! 3. the subject's evidence fingerprint is stored, and diagnosed tickets whose evidence
//!    changed go back to `open` for re-diagnosis;
//! 4. retention: the observation that left the history window (if it was stored and no
//!    ticket links it) every tick, and a full sweep every `prune_every` ticks;
//! 5. the heartbeat.

use crate::StoreError;
use crate::limits::{self, MAX_DEDUP_KEY, MAX_ERROR, MAX_NAME, MAX_SUMMARY};
use crate::retention::{self, PruneStats};
use crate::row;
use crate::types::{EventKind, Resolution, Ticket, TicketKind};
use operator_model::{Observation, ObserveError, Severity, Violation};
use rusqlite::{Connection, OptionalExtension, params};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// What one tick produced.
pub enum TickResult<'a> {
    Observed {
        /// Shared, so that the store can hold it in the subject's window without a copy.
        observation: &'a Arc<Observation>,
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
    /// The subject's material evidence at this tick, as the host condenses it (live
    /// invariants, component states). `None` leaves the stored fingerprints alone.
    pub fingerprint: Option<&'a str>,
}

/// Ticket policy knobs.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Consecutive clean ticks before a ticket auto-resolves.
    pub resolve_after: u32,
    /// Observations kept before a ticket opens (and linked to it as context). The store
    /// holds them in memory and writes them only when a ticket opens on them, so that a
    /// healthy tick stores no observation.
    pub history: usize,
    /// Most observations linked to one ticket; beyond it the oldest after the opening
    /// context are dropped.
    pub max_linked: usize,
    /// Most live tickets per subject. Violations that would open more are counted in
    /// `TickOutcome::over_live_cap`, not stored.
    pub max_live_tickets: usize,
    /// Most observations kept per subject, linked or not.
    pub max_observations: usize,
    /// Most observation bytes (as stored) kept per subject. The newest observation is
    /// always kept, so one observation larger than this is the most it is exceeded by.
    pub max_observation_bytes: u64,
    /// How long a resolved ticket keeps every observation linked to it; after that only its
    /// opening context (the observations up to and including its opening one) stays.
    pub resolved_keep: Duration,
    /// Most resolved tickets kept per subject; the oldest beyond it are deleted with their
    /// events, links and diagnoses.
    pub max_resolved_tickets: usize,
    /// The full retention sweep runs on ticks whose number is a multiple of this (0: never).
    pub prune_every: u32,
    /// Most distinct violations (after merging by dedup key) written per tick; the most
    /// severe go first, the rest are counted in `TickOutcome::over_violation_cap`.
    pub max_violations_per_tick: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            resolve_after: 3,
            history: 5,
            max_linked: 30,
            max_live_tickets: 1000,
            max_observations: 2000,
            max_observation_bytes: 256 * 1024 * 1024,
            resolved_keep: Duration::from_secs(24 * 3600),
            max_resolved_tickets: 10_000,
            prune_every: 32,
            max_violations_per_tick: 5000,
        }
    }
}

#[derive(Debug, Default)]
pub struct TickOutcome {
    pub opened: Vec<Ticket>,
    pub updated: usize,
    pub escalated: Vec<Ticket>,
    pub resolved: Vec<Ticket>,
    /// Distinct violations that would have opened a ticket beyond `max_live_tickets`.
    /// They are not stored: the host reports them as a plugin problem.
    pub over_live_cap: usize,
    /// Distinct violations beyond `max_violations_per_tick`, not written this tick (their
    /// live tickets are not counted clean either). The host reports them too.
    pub over_violation_cap: usize,
    /// Strings from the plugin cut to their maximum length (see `limits`).
    pub truncated: usize,
    /// Diagnosed tickets sent back to `open` because the evidence changed.
    pub rediagnose: Vec<i64>,
    /// What retention removed, on the ticks it removed anything or the sweep ran.
    pub pruned: Option<PruneStats>,
}

/// A violation-shaped record: a plugin's violation, or the host's own failure finding.
struct Finding<'a> {
    kind: TicketKind,
    invariant: Cow<'a, str>,
    severity: Severity,
    component: Cow<'a, str>,
    summary: Cow<'a, str>,
    evidence: String,
    dedup_key: Cow<'a, str>,
}

impl<'a> Finding<'a> {
    /// Caps every string the plugin sent; counts what was cut.
    fn from_violation(v: &'a Violation, truncated: &mut usize) -> Finding<'a> {
        let mut cut = |c: Cow<'a, str>| {
            if matches!(c, Cow::Owned(_)) {
                *truncated += 1;
            }
            c
        };
        let invariant = cut(limits::truncate(&v.invariant, MAX_NAME));
        let component = cut(limits::truncate(&v.component, MAX_NAME));
        let summary = cut(limits::truncate(&v.summary, MAX_SUMMARY));
        let dedup_key = cut(limits::truncate_key(&v.dedup_key, MAX_DEDUP_KEY));
        let (evidence, evidence_cut) = limits::cap_evidence(&v.evidence);
        *truncated += usize::from(evidence_cut);
        Finding {
            kind: TicketKind::Invariant,
            invariant,
            severity: v.severity,
            component,
            summary,
            evidence: evidence_json(&evidence),
            dedup_key,
        }
    }

    fn observe_failure(subject: &str, err: &ObserveError) -> Finding<'static> {
        let error = limits::truncate(&err.to_string(), MAX_ERROR).into_owned();
        Finding {
            kind: TicketKind::ObserveFailure,
            invariant: "OBSERVE".into(),
            severity: Severity::Critical,
            component: "".into(),
            summary: limits::truncate(&format!("cannot observe {subject}: {error}"), MAX_SUMMARY)
                .into_owned()
                .into(),
            evidence: serde_json::json!({ "error": error }).to_string(),
            dedup_key: "observe-failure".into(),
        }
    }

    fn plugin_failure(kind: &str, message: &str) -> Finding<'static> {
        let message = limits::truncate(message, MAX_ERROR);
        Finding {
            kind: TicketKind::PluginFailure,
            invariant: "PLUGIN".into(),
            severity: Severity::Warning,
            component: "".into(),
            summary: limits::truncate(&format!("plugin failure ({kind}): {message}"), MAX_SUMMARY)
                .into_owned()
                .into(),
            evidence: serde_json::json!({ "kind": kind, "error": message }).to_string(),
            dedup_key: "plugin-failure".into(),
        }
    }
}

fn evidence_json(evidence: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = evidence
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
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

/// The live ticket a finding updates.
struct Live {
    id: i64,
    severity: Severity,
    opening_observation: Option<i64>,
}

/// One of a subject's last `Policy::history` observations: what a ticket opening on the
/// next tick links as the history that led up to it.
pub(crate) struct Slot {
    tick: i64,
    observation: Arc<Observation>,
    /// Its row, once a ticket needed it stored.
    id: Option<i64>,
}

/// A subject's window, oldest first. Storing an observation stores every one before it in
/// the window first, so the observations not yet stored are always the newest ones (a
/// suffix), and rows keep the order of ticks.
///
/// The window lives in memory and starts empty: after a restart a ticket links only what
/// this run observed before it, as the plugin's own checks see only that history. What a
/// host killed mid-run loses is the window's unstored observations, which no ticket links.
pub(crate) type Window = VecDeque<Slot>;

/// What a tick changes in its subject's window. It is applied only once the tick's
/// transaction committed: after a rollback SQLite hands the same row ids out again, and a
/// window holding them would link a later tick's rows.
pub(crate) struct WindowChange {
    /// Rows given to the window's unstored observations, oldest first.
    stored: Vec<i64>,
    /// This tick's observation, with its row if a ticket linked it.
    pushed: Option<Slot>,
}

impl WindowChange {
    pub(crate) fn apply(self, window: &mut Window, history: usize) {
        let unstored = window.iter_mut().filter(|s| s.id.is_none());
        for (slot, id) in unstored.zip(self.stored) {
            slot.id = Some(id);
        }
        if let Some(slot) = self.pushed {
            window.push_back(slot);
            while window.len() > history {
                window.pop_front();
            }
        }
    }
}

/// The state of one tick's write.
struct TickWriter<'t, 'a> {
    tx: &'t Connection,
    rec: &'t TickRecord<'a>,
    policy: Policy,
    outcome: TickOutcome,
    /// Live tickets of the subject, counted on first need and kept current.
    live_count: Option<usize>,
    window: &'t Window,
    /// Rows this tick gave the window's unstored observations, oldest first.
    stored: Vec<i64>,
    /// This tick's observation's row, once a ticket needed it.
    current: Option<i64>,
}

/// Writes one tick inside `tx` (the caller commits, then applies the window change).
pub(crate) fn record(
    tx: &Connection,
    rec: &TickRecord<'_>,
    policy: Policy,
    window: &Window,
) -> Result<(TickOutcome, WindowChange), StoreError> {
    let mut w = TickWriter {
        tx,
        rec,
        policy,
        outcome: TickOutcome::default(),
        live_count: None,
        window,
        stored: Vec::new(),
        current: None,
    };
    let (ok, error) = match &rec.result {
        TickResult::Observed { violations, .. } => {
            w.observed(violations)?;
            (true, None)
        }
        TickResult::ObserveFailed(err) => {
            w.upsert(&Finding::observe_failure(rec.subject, err), false)?;
            (false, Some(err.to_string()))
        }
        TickResult::PluginFailed { kind, message } => {
            w.upsert(&Finding::plugin_failure(kind, message), false)?;
            (false, Some(message.to_string()))
        }
    };
    if let Some(fp) = rec.fingerprint {
        w.apply_fingerprint(fp)?;
    }
    w.retain()?;
    #[cfg(test)]
    crate::tests::hooks::inside_tick_transaction();
    write_heartbeat(tx, rec, ok, error.as_deref())?;
    let pushed = match &rec.result {
        TickResult::Observed { observation, .. } => Some(Slot {
            tick: rec.tick,
            observation: Arc::clone(observation),
            id: w.current,
        }),
        _ => None,
    };
    let change = WindowChange {
        stored: w.stored,
        pushed,
    };
    Ok((w.outcome, change))
}

impl TickWriter<'_, '_> {
    fn observed(&mut self, violations: &[Violation]) -> Result<(), StoreError> {
        let mut seen = HashSet::new();
        let mut merged = merge(violations);
        // Past the per-tick cap, the most severe are written. The rest still count as seen,
        // so that their tickets do not count a clean tick they did not have.
        merged.sort_by_key(|v| std::cmp::Reverse(v.severity));
        let cap = self.policy.max_violations_per_tick.min(merged.len());
        for v in merged.drain(cap..) {
            seen.insert(limits::truncate_key(&v.dedup_key, MAX_DEDUP_KEY).into_owned());
            self.outcome.over_violation_cap += 1;
        }
        for v in merged {
            let finding = Finding::from_violation(v, &mut self.outcome.truncated);
            seen.insert(finding.dedup_key.to_string());
            self.upsert(&finding, true)?;
        }
        self.count_clean_ticks(&seen)?;
        // The observations this tick pushes out of the window: their rows, if they have
        // any, go unless a ticket links them.
        for id in self
            .window_rows()
            .into_iter()
            .take(self.leaving())
            .flatten()
        {
            retention::drop_if_unlinked(self.tx, id)?;
        }
        Ok(())
    }

    /// The observations this tick pushes out of the window (their count from its front).
    fn leaving(&self) -> usize {
        match self.rec.result {
            TickResult::Observed { .. } => {
                (self.window.len() + 1).saturating_sub(self.policy.history)
            }
            _ => 0,
        }
    }

    /// The stored rows the window holds after this tick, this tick's own included.
    fn rows_kept(&self) -> impl Iterator<Item = i64> {
        let leaving = self.leaving();
        self.window_rows()
            .into_iter()
            .skip(leaving)
            .flatten()
            .chain(self.current)
    }

    /// The row of each observation in the window, oldest first (`None`: not stored).
    fn window_rows(&self) -> Vec<Option<i64>> {
        let mut stored = self.stored.iter().copied();
        self.window
            .iter()
            .map(|s| s.id.or_else(|| stored.next()))
            .collect()
    }

    /// This tick's observation's row, storing it (after the window's unstored ones) the
    /// first time a ticket needs it.
    fn observation_id(&mut self) -> Result<i64, StoreError> {
        if let Some(id) = self.current {
            return Ok(id);
        }
        let TickResult::Observed { observation, .. } = &self.rec.result else {
            return Err(StoreError::Invalid(
                "a finding linked an observation on a tick without one".into(),
            ));
        };
        // Unstored slots are the window's newest: oldest first keeps rows in tick order.
        let window = self.window;
        for slot in window.iter().filter(|s| s.id.is_none()) {
            let id = self.insert_observation(slot.tick, &slot.observation)?;
            self.stored.push(id);
        }
        let id = self.insert_observation(self.rec.tick, observation)?;
        self.current = Some(id);
        Ok(id)
    }

    /// Retention: the full sweep on every `prune_every`-th tick, the caps on every tick.
    fn retain(&mut self) -> Result<(), StoreError> {
        let (tx, rec, policy) = (self.tx, self.rec, &self.policy);
        let mut stats = None;
        if policy.prune_every > 0 && rec.tick % i64::from(policy.prune_every) == 0 {
            let window_from = self.rows_kept().min().unwrap_or(i64::MAX);
            stats = Some(retention::sweep(
                tx,
                rec.subject,
                rec.at_ms,
                policy,
                window_from,
            )?);
        }
        let capped = retention::enforce_caps(tx, rec.subject, policy)?;
        if capped > 0 {
            stats
                .get_or_insert_with(PruneStats::default)
                .capped_observations = capped;
        }
        self.outcome.pruned = stats;
        Ok(())
    }

    fn insert_observation(&self, tick: i64, observation: &Observation) -> Result<i64, StoreError> {
        let data = crate::codec::encode(observation)?;
        row::exec(
            self.tx,
            "INSERT INTO observations (subject, tick, taken_at, data, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                self.rec.subject,
                tick,
                observation.timestamp_ms as i64,
                data,
                data.len() as i64
            ],
        )?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Updates the finding's live ticket, or opens one if the cap leaves room. `links`:
    /// the ticket links this tick's observation (a violation's; the host's failure findings
    /// come from ticks without one).
    fn upsert(&mut self, f: &Finding<'_>, links: bool) -> Result<(), StoreError> {
        let (id, opening_observation) = match self.find_live(&f.dedup_key)? {
            Some(live) => {
                self.update_live(&live, f)?;
                (live.id, live.opening_observation)
            }
            None => {
                if !self.room_for(f)? {
                    self.outcome.over_live_cap += 1;
                    return Ok(());
                }
                let obs_id = if links {
                    Some(self.observation_id()?)
                } else {
                    None
                };
                (self.open(f, obs_id)?, obs_id)
            }
        };
        if links {
            let obs_id = self.observation_id()?;
            self.link_observation(id, obs_id, opening_observation)?;
        }
        Ok(())
    }

    fn find_live(&self, dedup_key: &str) -> Result<Option<Live>, StoreError> {
        let live = row::query_one(
            self.tx,
            "SELECT id, severity, opening_observation_id FROM tickets \
             WHERE subject = ?1 AND dedup_key = ?2 AND status != 'resolved'",
            params![self.rec.subject, dedup_key],
            |r| {
                Ok((
                    r.get::<_, i64>("id")?,
                    r.get::<_, String>("severity")?,
                    r.get::<_, Option<i64>>("opening_observation_id")?,
                ))
            },
        )
        .optional()?;
        live.map(|(id, severity, opening_observation)| {
            Ok(Live {
                id,
                severity: Severity::parse(&severity).ok_or_else(|| {
                    StoreError::Corrupt(format!("ticket {id}: severity `{severity}`"))
                })?,
                opening_observation,
            })
        })
        .transpose()
    }

    /// Whether a new ticket for `f` fits under the live-ticket cap. The host's own failure
    /// findings always fit: there are at most two of them.
    fn room_for(&mut self, f: &Finding<'_>) -> Result<bool, StoreError> {
        if f.kind != TicketKind::Invariant {
            return Ok(true);
        }
        let live = match self.live_count {
            Some(n) => n,
            None => {
                let n: i64 = row::query_one(
                    self.tx,
                    "SELECT COUNT(*) FROM tickets WHERE subject = ?1 AND status != 'resolved'",
                    [self.rec.subject],
                    |r| r.get(0),
                )?;
                n as usize
            }
        };
        self.live_count = Some(live);
        Ok(live < self.policy.max_live_tickets)
    }

    fn update_live(&mut self, live: &Live, f: &Finding<'_>) -> Result<(), StoreError> {
        let rec = self.rec;
        row::exec(
            self.tx,
            "UPDATE tickets SET last_seen = ?2, last_tick = ?3, count = count + 1, clear_streak = 0, \
             summary = ?4, evidence = ?5, severity = ?6, component = ?7 WHERE id = ?1",
            params![
                live.id,
                rec.at_ms,
                rec.tick,
                f.summary,
                f.evidence,
                f.severity.as_str(),
                f.component
            ],
        )?;
        self.outcome.updated += 1;
        if f.severity > live.severity {
            row::insert_event(
                self.tx,
                live.id,
                rec.at_ms,
                EventKind::Escalated,
                &format!("{} -> {}", live.severity, f.severity),
            )?;
            self.outcome
                .escalated
                .push(row::get_ticket(self.tx, live.id)?);
        }
        Ok(())
    }

    /// Opens a ticket, keeping the evidence it opened with and linking the history that led
    /// up to it, so that diagnosis sees the before as well.
    fn open(&mut self, f: &Finding<'_>, obs_id: Option<i64>) -> Result<i64, StoreError> {
        let rec = self.rec;
        row::exec(
            self.tx,
            "INSERT INTO tickets (subject, dedup_key, kind, invariant, severity, component, summary, \
             evidence, opening_evidence, opening_observation_id, status, count, first_seen, last_seen, \
             opened_tick, last_tick, clear_streak) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, 'open', 1, ?10, ?10, ?11, ?11, 0)",
            params![
                rec.subject,
                f.dedup_key,
                f.kind.as_str(),
                f.invariant,
                f.severity.as_str(),
                f.component,
                f.summary,
                f.evidence,
                obs_id,
                rec.at_ms,
                rec.tick
            ],
        )?;
        let id = self.tx.last_insert_rowid();
        row::insert_event(self.tx, id, rec.at_ms, EventKind::Opened, &f.summary)?;
        if obs_id.is_some() {
            // The window, stored by now. A row the caps deleted since is skipped, not an
            // error: the `SELECT` finds nothing for it.
            let mut link = self.tx.prepare_cached(
                "INSERT OR IGNORE INTO ticket_observations (ticket_id, observation_id) \
                 SELECT ?1, id FROM observations WHERE id = ?2",
            )?;
            for row in self.window_rows().into_iter().flatten() {
                link.execute(params![id, row])?;
            }
        }
        if let Some(n) = self.live_count.as_mut() {
            *n += 1;
        }
        self.outcome.opened.push(row::get_ticket(self.tx, id)?);
        Ok(id)
    }

    /// Links this tick's observation; beyond `max_linked`, drops the oldest links after the
    /// opening context.
    fn link_observation(
        &self,
        id: i64,
        obs_id: i64,
        opening_observation: Option<i64>,
    ) -> Result<(), StoreError> {
        row::exec(
            self.tx,
            "INSERT OR IGNORE INTO ticket_observations (ticket_id, observation_id) VALUES (?1, ?2)",
            params![id, obs_id],
        )?;
        let linked: i64 = row::query_one(
            self.tx,
            "SELECT COUNT(*) FROM ticket_observations WHERE ticket_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        let excess = linked - self.policy.max_linked as i64;
        if excess > 0 {
            row::exec(
                self.tx,
                "DELETE FROM ticket_observations WHERE ticket_id = ?1 AND observation_id IN ( \
                   SELECT observation_id FROM ticket_observations \
                   WHERE ticket_id = ?1 AND observation_id > ?2 AND observation_id != ?3 \
                   ORDER BY observation_id LIMIT ?4)",
                params![id, opening_observation.unwrap_or(i64::MIN), obs_id, excess],
            )?;
        }
        Ok(())
    }

    /// Live tickets not seen this tick count one more clean tick; enough of them resolve it.
    fn count_clean_ticks(&mut self, seen: &HashSet<String>) -> Result<(), StoreError> {
        let rec = self.rec;
        let live: Vec<(i64, String, i64)> = {
            let mut stmt = self.tx.prepare_cached(
                "SELECT id, dedup_key, clear_streak FROM tickets WHERE subject = ?1 AND status != 'resolved'",
            )?;
            stmt.query_map([rec.subject], |r| {
                Ok((r.get("id")?, r.get("dedup_key")?, r.get("clear_streak")?))
            })?
            .collect::<Result<_, _>>()?
        };
        for (id, key, streak) in live {
            if seen.contains(&key) {
                continue;
            }
            let streak = streak + 1;
            if streak >= i64::from(self.policy.resolve_after) {
                self.auto_resolve(id, streak)?;
            } else {
                row::exec(
                    self.tx,
                    "UPDATE tickets SET clear_streak = ?2 WHERE id = ?1",
                    params![id, streak],
                )?;
            }
        }
        Ok(())
    }

    fn auto_resolve(&mut self, id: i64, streak: i64) -> Result<(), StoreError> {
        let at = self.rec.at_ms;
        row::exec(
            self.tx,
            "UPDATE tickets SET status = 'resolved', clear_streak = ?2, resolved_at = ?3, resolution = ?4 \
             WHERE id = ?1",
            params![id, streak, at, Resolution::Auto.as_str()],
        )?;
        row::insert_event(
            self.tx,
            id,
            at,
            EventKind::Resolved,
            &format!("held for {streak} consecutive ticks"),
        )?;
        if let Some(n) = self.live_count.as_mut() {
            *n = n.saturating_sub(1);
        }
        self.outcome.resolved.push(row::get_ticket(self.tx, id)?);
        Ok(())
    }

    /// Stores the subject's fingerprint on its live tickets (a write only where it
    /// changed). A diagnosed ticket whose evidence moved away from what its diagnosis saw
    /// goes back to `open`; an open one whose evidence came back to it is diagnosed again.
    fn apply_fingerprint(&mut self, fp: &str) -> Result<(), StoreError> {
        let (subject, at) = (self.rec.subject, self.rec.at_ms);
        let changed = row::exec(
            self.tx,
            "UPDATE tickets SET fingerprint = ?2 \
             WHERE subject = ?1 AND status != 'resolved' AND fingerprint IS NOT ?2",
            params![subject, fp],
        )?;
        if changed == 0 {
            return Ok(());
        }
        let moved: Vec<i64> = {
            let mut stmt = self.tx.prepare_cached(
                "SELECT id FROM tickets WHERE subject = ?1 AND status != 'resolved' \
                 AND status = 'diagnosed' AND diagnosed_fingerprint IS NOT fingerprint",
            )?;
            stmt.query_map([subject], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for id in moved {
            row::exec(
                self.tx,
                "UPDATE tickets SET status = 'open' WHERE id = ?1 AND status = 'diagnosed'",
                [id],
            )?;
            row::insert_event(
                self.tx,
                id,
                at,
                EventKind::EvidenceChanged,
                "evidence changed since the diagnosis: diagnose again",
            )?;
            self.outcome.rediagnose.push(id);
        }
        let back: Vec<i64> = {
            let mut stmt = self.tx.prepare_cached(
                "SELECT id FROM tickets WHERE subject = ?1 AND status != 'resolved' \
                 AND status = 'open' AND diagnosed_at IS NOT NULL AND diagnosed_fingerprint IS fingerprint",
            )?;
            stmt.query_map([subject], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for id in back {
            row::exec(
                self.tx,
                "UPDATE tickets SET status = 'diagnosed' WHERE id = ?1 AND status = 'open'",
                [id],
            )?;
            row::insert_event(
                self.tx,
                id,
                at,
                EventKind::EvidenceChanged,
                "evidence is back to what the diagnosis saw",
            )?;
        }
        Ok(())
    }
}

fn write_heartbeat(
    tx: &Connection,
    rec: &TickRecord<'_>,
    ok: bool,
    error: Option<&str>,
) -> Result<(), StoreError> {
    row::exec(
        tx,
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
            error.map(|e| limits::truncate(e, MAX_ERROR)),
            std::process::id()
        ],
    )?;
    Ok(())
}
