//! The store's public records and the closed sets they use. Every enum serializes to, and
//! is stored in SQLite as, the same string (`as_str`), so JSON output and the database
//! agree and stay what they were before these were enums.

use operator_model::{Observation, Severity};
use serde::Serialize;
use std::fmt;

/// Declares a closed set stored as text: `as_str`, `parse`, `Display`, and comparison with
/// a plain string (so callers may still write `ticket.kind == "invariant"`).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

text_enum! {
    /// Where a ticket's finding came from.
    TicketKind {
        /// A plugin reported an invariant violation.
        Invariant => "invariant",
        /// The plugin itself failed (trap, deadline, memory).
        PluginFailure => "plugin-failure",
        /// The plugin ran but could not observe the subject.
        ObserveFailure => "observe-failure",
    }
}

text_enum! {
    /// A ticket's lifecycle state. `diagnosing` is held under a lease by one worker.
    Status {
        Open => "open",
        Diagnosing => "diagnosing",
        Diagnosed => "diagnosed",
        Resolved => "resolved",
    }
}

text_enum! {
    /// How a ticket was resolved.
    Resolution {
        /// The invariant held for `resolve_after` consecutive ticks.
        Auto => "auto",
        /// Resolved by hand (`operator tickets resolve`).
        Manual => "manual",
    }
}

text_enum! {
    /// What a ticket event records.
    EventKind {
        Opened => "opened",
        Escalated => "escalated",
        Resolved => "resolved",
        /// The subject's material evidence changed after a diagnosis: diagnose again.
        EvidenceChanged => "evidence-changed",
        Diagnosed => "diagnosed",
        DiagnosisFailed => "diagnosis-failed",
        /// A worker's lease ran out (it crashed or hung); the ticket was claimed again.
        LeaseExpired => "lease-expired",
        /// The ticket joined, or changed its place in, an incident.
        Incident => "incident",
    }
}

text_enum! {
    /// A ticket's place in an incident.
    Role {
        Root => "root",
        Symptom => "symptom",
    }
}

text_enum! {
    /// Whether a diagnosis attempt produced a record.
    DiagnosisOutcome {
        Ok => "ok",
        Failed => "failed",
    }
}

/// The incident a ticket belongs to: `id` is the root ticket's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncidentRef {
    pub id: i64,
    pub role: Role,
    pub reason: String,
}

/// Where a ticket is in the diagnosis lifecycle (besides `status`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DiagnosisState {
    /// The subject's material-evidence fingerprint as of the ticket's last tick.
    pub fingerprint: Option<String>,
    /// The fingerprint the current `diagnosis` was made for.
    pub diagnosed_fingerprint: Option<String>,
    pub diagnosed_at: Option<i64>,
    /// Failed attempts (errors and expired leases) since the last successful diagnosis.
    pub attempts: i64,
    /// Not claimed before this time (ms): the retry backoff.
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
}

pub type EvidenceMap = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    pub id: i64,
    pub subject: String,
    /// The plugin's dedup key (possibly shortened, see `limits`).
    pub dedup_key: String,
    pub kind: TicketKind,
    pub invariant: String,
    pub severity: Severity,
    pub component: String,
    pub summary: String,
    /// The latest evidence.
    pub evidence: EvidenceMap,
    /// The evidence the ticket opened with. `None` for tickets opened before schema v2,
    /// which did not keep it.
    pub opening_evidence: Option<EvidenceMap>,
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
    pub resolution: Option<Resolution>,
    /// The latest successful diagnosis record (history: `TicketStore::diagnoses`).
    pub diagnosis: Option<serde_json::Value>,
    pub diagnosis_state: DiagnosisState,
    pub incident: Option<IncidentRef>,
}

impl Ticket {
    pub fn is_live(&self) -> bool {
        self.status != Status::Resolved
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketEvent {
    pub at: i64,
    pub kind: EventKind,
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
    /// Every diagnosis attempt, oldest first (the latest success is `ticket.diagnosis`).
    pub diagnoses: Vec<DiagnosisRow>,
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

/// One diagnosis attempt, kept as history: successes and failures alike.
#[derive(Debug, Clone, Serialize)]
pub struct DiagnosisRow {
    pub id: i64,
    pub ticket_id: i64,
    pub at: i64,
    pub outcome: DiagnosisOutcome,
    /// The backend that ran it; `None` for an expired lease (the worker never said).
    pub backend: Option<String>,
    pub fingerprint: Option<String>,
    pub record: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// A ticket handed to one diagnosis worker under a lease.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    pub ticket: Ticket,
    /// The evidence fingerprint this diagnosis is for: pass it back to `complete_diagnosis`.
    pub fingerprint: Option<String>,
    /// 1 for the first attempt since the last success, 2 for the first retry, ...
    pub attempt: i64,
}

/// What `vacuum` did.
#[derive(Debug, Clone, Serialize)]
pub struct VacuumReport {
    pub before_bytes: u64,
    pub after_bytes: u64,
    /// A full `VACUUM` ran (a database made before incremental auto-vacuum was set).
    pub full: bool,
}
