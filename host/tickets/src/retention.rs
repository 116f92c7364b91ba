//! What the store keeps, bounded per subject by count and by bytes.
//!
//! Only observations a ticket links are stored (see `tick`). Every tick, the observation
//! that just left the history window is dropped if it was stored and no ticket links it. Every
//! `Policy::prune_every` ticks a sweep, still inside the tick's transaction:
//! 1. trims resolved tickets older than `resolved_keep` to their opening context (the
//!    observations up to and including the one they opened on);
//! 2. deletes the oldest resolved tickets beyond `max_resolved_tickets`;
//! 3. drops observations nobody links any more;
//!
//! The count and byte caps (`max_observations`, `max_observation_bytes`) are checked on
//! every tick against per-subject totals that triggers keep (one lookup). Past a cap, the
//! oldest observations that no live ticket links go first, then the oldest of the rest,
//! down to 90% of the cap; the newest observation always stays. So after every committed
//! tick the subject is within its caps (or holds just the one newest observation).
//!
//! Deleted pages go to SQLite's free list and are reused by later ticks, so the file stops
//! growing once the caps are reached; `TicketStore::vacuum` hands them back to the OS.

use crate::row;
use crate::tick::Policy;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// What one retention sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    /// Resolved tickets trimmed to their opening context.
    pub trimmed_tickets: usize,
    /// Resolved tickets deleted beyond `max_resolved_tickets`.
    pub deleted_tickets: usize,
    /// Observations no ticket linked any more.
    pub unlinked_observations: usize,
    /// Observations deleted to fit `max_observations` / `max_observation_bytes`.
    pub capped_observations: usize,
}

/// The per-tick step: an observation that just left the history window goes unless a
/// ticket links it. (Only observations a ticket linked are stored, but the window's older
/// ones go in with them and are linked only if a ticket opened then.)
pub fn drop_if_unlinked(tx: &Connection, id: i64) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "DELETE FROM observations WHERE id = ?1 \
         AND NOT EXISTS (SELECT 1 FROM ticket_observations t WHERE t.observation_id = ?1)",
    )?
    .execute([id])
}

/// `window_from`: the oldest row the subject's history window still holds (`i64::MAX` if it
/// holds none). The window's rows are the subject's newest, and stay while a ticket opening
/// may link them.
pub fn sweep(
    tx: &Connection,
    subject: &str,
    now_ms: i64,
    policy: &Policy,
    window_from: i64,
) -> rusqlite::Result<PruneStats> {
    let keep_ms = i64::try_from(policy.resolved_keep.as_millis()).unwrap_or(i64::MAX);
    Ok(PruneStats {
        trimmed_tickets: trim_resolved(tx, subject, now_ms.saturating_sub(keep_ms))?,
        deleted_tickets: delete_old_resolved(tx, subject, policy.max_resolved_tickets)?,
        unlinked_observations: drop_unlinked(tx, subject, window_from)?,
        capped_observations: 0,
    })
}

/// The caps, checked every tick with one lookup. Once a cap is passed, observations are
/// deleted down to 90% of it, so the scan that picks them runs once per tenth of the cap's
/// worth of ticks, not on every tick at the cap. Returns how many were deleted.
pub fn enforce_caps(tx: &Connection, subject: &str, policy: &Policy) -> rusqlite::Result<usize> {
    let usage: Option<(i64, i64)> = row::query_one(
        tx,
        "SELECT observations, bytes FROM observation_usage WHERE subject = ?1",
        [subject],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    let Some((count, bytes)) = usage else {
        return Ok(0);
    };
    let (count, bytes) = (count.max(0) as usize, bytes.max(0) as u64);
    if count <= policy.max_observations && bytes <= policy.max_observation_bytes {
        return Ok(0);
    }
    let target = Caps {
        observations: policy.max_observations - policy.max_observations / 10,
        bytes: policy.max_observation_bytes - policy.max_observation_bytes / 10,
    };
    delete_oldest(tx, subject, count, bytes, target)
}

#[derive(Clone, Copy)]
struct Caps {
    observations: usize,
    bytes: u64,
}

fn trim_resolved(tx: &Connection, subject: &str, resolved_before: i64) -> rusqlite::Result<usize> {
    let due: Vec<(i64, Option<i64>)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, opening_observation_id FROM tickets \
             WHERE subject = ?1 AND status = 'resolved' AND context_trimmed = 0 AND resolved_at <= ?2",
        )?;
        stmt.query_map(params![subject, resolved_before], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?
    };
    for (id, opening) in &due {
        // A ticket with no opening observation (a failure ticket) links none.
        row::exec(
            tx,
            "DELETE FROM ticket_observations WHERE ticket_id = ?1 AND observation_id > ?2",
            params![id, opening.unwrap_or(i64::MIN)],
        )?;
        row::exec(
            tx,
            "UPDATE tickets SET context_trimmed = 1 WHERE id = ?1",
            [id],
        )?;
    }
    Ok(due.len())
}

fn delete_old_resolved(tx: &Connection, subject: &str, keep: usize) -> rusqlite::Result<usize> {
    // Events, links and diagnoses go with them (ON DELETE CASCADE); incidents that named
    // one as root lose the reference (ON DELETE SET NULL).
    row::exec(
        tx,
        "DELETE FROM tickets WHERE id IN ( \
           SELECT id FROM tickets WHERE subject = ?1 AND status = 'resolved' \
           ORDER BY id DESC LIMIT -1 OFFSET ?2)",
        // A keep past i64::MAX keeps everything; `as` would wrap it to a negative OFFSET,
        // which SQLite reads as none, deleting every resolved ticket.
        params![subject, i64::try_from(keep).unwrap_or(i64::MAX)],
    )
}

/// Unlinked observations older than the window: left by trimmed or deleted tickets, or
/// stored by an earlier run (whose window this run does not link).
fn drop_unlinked(tx: &Connection, subject: &str, window_from: i64) -> rusqlite::Result<usize> {
    row::exec(
        tx,
        "DELETE FROM observations WHERE subject = ?1 AND id < ?2 \
         AND NOT EXISTS (SELECT 1 FROM ticket_observations t WHERE t.observation_id = observations.id)",
        params![subject, window_from],
    )
}

/// Deletes the oldest observations until the subject is within `target`: first those no
/// live ticket links, then the rest. The newest observation always stays.
fn delete_oldest(
    tx: &Connection,
    subject: &str,
    mut count: usize,
    mut bytes: u64,
    target: Caps,
) -> rusqlite::Result<usize> {
    // (id, bytes, linked by a live ticket), oldest first; sizes come from the index.
    let rows: Vec<(i64, i64, bool)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT o.id, o.bytes, EXISTS ( \
               SELECT 1 FROM ticket_observations t JOIN tickets k ON k.id = t.ticket_id \
               WHERE t.observation_id = o.id AND k.status != 'resolved') \
             FROM observations o INDEXED BY observations_sizes WHERE o.subject = ?1 ORDER BY o.id",
        )?;
        stmt.query_map([subject], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?
    };
    let over = |count: usize, bytes: u64| count > target.observations || bytes > target.bytes;
    let Some((_, candidates)) = rows.split_last() else {
        return Ok(0);
    };
    let mut doomed = Vec::new();
    let mut taken = vec![false; candidates.len()];
    // First what only resolved tickets (or nobody) still want, then the rest.
    for spare_live in [true, false] {
        for (i, (id, size, live)) in candidates.iter().enumerate() {
            if !over(count, bytes) {
                break;
            }
            if taken[i] || (spare_live && *live) {
                continue;
            }
            taken[i] = true;
            doomed.push(*id);
            count -= 1;
            bytes = bytes.saturating_sub((*size).max(0) as u64);
        }
    }
    let mut stmt = tx.prepare_cached("DELETE FROM observations WHERE id = ?1")?;
    for id in &doomed {
        stmt.execute([id])?;
    }
    Ok(doomed.len())
}
