//! Incidents: the host decides which tickets share one cause; the store keeps its decision
//! on each ticket (`incident_id` = the root ticket's id, the role, the reason).

use crate::limits::{self, MAX_SUMMARY};
use crate::row;
use crate::types::{EventKind, Role, Ticket};
use crate::{StoreError, TicketStore};
use rusqlite::{Connection, TransactionBehavior, params};

impl TicketStore {
    /// Records that `root` is the root ticket of an incident and `members` its tickets,
    /// each with its role and the reason for it. `members` may list the root itself (with
    /// `Role::Root`, to give its reason); any other member must be a `Symptom`. Only what
    /// changed is written, with an `incident` event on each ticket that moved, so the host
    /// may call this on every tick. Members not listed are left as they are.
    pub fn assign_incident(
        &mut self,
        root: i64,
        members: &[(i64, Role, String)],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        for (id, role, _) in members {
            match (*id == root, role) {
                (true, Role::Symptom) => {
                    return Err(StoreError::Invalid(format!(
                        "ticket #{id} cannot be a symptom of itself"
                    )));
                }
                (false, Role::Root) => {
                    return Err(StoreError::Invalid(format!(
                        "ticket #{id} is listed as a root of incident #{root}"
                    )));
                }
                _ => {}
            }
        }
        let root_reason = members
            .iter()
            .find(|(id, _, _)| *id == root)
            .map(|(_, _, reason)| reason.as_str())
            .unwrap_or("");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        set_membership(&tx, root, Some((root, Role::Root, root_reason)), at_ms)?;
        for (id, role, reason) in members.iter().filter(|(id, _, _)| *id != root) {
            set_membership(&tx, *id, Some((root, *role, reason)), at_ms)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Takes a ticket out of its incident.
    pub fn clear_incident(&mut self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        set_membership(&tx, id, None, at_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// The tickets of the incident whose root is `root`, root first.
    pub fn incident(&self, root: i64) -> Result<Vec<Ticket>, StoreError> {
        let sql = format!(
            "SELECT {} FROM tickets WHERE incident_id = ?1 ORDER BY id != ?1, id",
            row::TICKET_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([root], row::ticket)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn set_membership(
    conn: &Connection,
    id: i64,
    membership: Option<(i64, Role, &str)>,
    at_ms: i64,
) -> Result<(), StoreError> {
    let (incident, role, reason) = match membership {
        Some((root, role, reason)) => (
            Some(root),
            Some(role.as_str()),
            Some(limits::truncate(reason, MAX_SUMMARY).into_owned()),
        ),
        None => (None, None, None),
    };
    let changed = row::exec(
        conn,
        "UPDATE tickets SET incident_id = ?2, incident_role = ?3, incident_reason = ?4 \
         WHERE id = ?1 AND (incident_id IS NOT ?2 OR incident_role IS NOT ?3 OR incident_reason IS NOT ?4)",
        params![id, incident, role, reason],
    )?;
    if changed == 0 {
        // Unchanged, or no such ticket.
        row::get_ticket(conn, id)?;
        return Ok(());
    }
    let detail = match membership {
        Some((root, Role::Root, _)) => {
            format!("root of incident #{root}: {}", reason.unwrap_or_default())
        }
        Some((root, Role::Symptom, _)) => {
            format!("symptom of #{root}: {}", reason.unwrap_or_default())
        }
        None => "no longer part of an incident".to_string(),
    };
    row::insert_event(conn, id, at_ms, EventKind::Incident, &detail)?;
    Ok(())
}
