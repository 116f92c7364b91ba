//! The host's side of diagnosis: choosing the backend, building an incident's context from
//! the ticket store, and the worker that claims tickets, diagnoses them and records the
//! result. The reasoning itself lives in the `operator-diagnosis` crate, which links no
//! wasmtime and names no subject.
//!
//! Lifecycle: a worker claims a ticket (`open -> diagnosing`, compare-and-set, with a
//! lease), diagnoses the incident it belongs to, and completes it under its lease. A
//! failure (backend down, throttled by the API (429), malformed or rejected answer) goes back to `open`
//! with the error recorded and a retry time with backoff. A crashed worker's lease expires
//! and the ticket is claimed again; a record is stored only under a live lease, so one
//! evidence fingerprint is diagnosed once.

use crate::model::SubjectMetadata;
use crate::tickets::{self, Claim, Ticket, TicketStore};
use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;
use operator_diagnosis::{
    Backend, ClaudeConfig, Context, ContextInput, Diagnosis, ObservationPoint, OpenAiConfig,
    TicketFacts, incident,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// `--diagnose` / `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Mode {
    /// Claude when ANTHROPIC_API_KEY is set, else offline.
    #[default]
    Auto,
    /// The deterministic evidence reasoner.
    Offline,
    /// The Anthropic Messages API (key from ANTHROPIC_API_KEY).
    Claude,
    /// An OpenAI-compatible chat completions server (OPENAI_BASE_URL, OPENAI_MODEL).
    Openai,
    /// No diagnosis.
    Off,
}

/// The backend a mode stands for; `None` for off.
pub fn backend(mode: Mode) -> Result<Option<Backend>> {
    let claude = || -> Result<Backend> {
        Ok(Backend::Claude(ClaudeConfig::from_env().map_err(|e| {
            anyhow::anyhow!("--diagnose claude: {e} (export ANTHROPIC_API_KEY=...)")
        })?))
    };
    Ok(match mode {
        Mode::Off => None,
        Mode::Offline => Some(Backend::Offline),
        Mode::Claude => Some(claude()?),
        Mode::Auto => match std::env::var("ANTHROPIC_API_KEY") {
            Ok(k) if !k.trim().is_empty() => Some(claude()?),
            _ => Some(Backend::Offline),
        },
        Mode::Openai => {
            let base = std::env::var("OPENAI_BASE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:11434/v1".into());
            let model = std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "llama3.1".into());
            Some(Backend::OpenAi(OpenAiConfig::from_env(base, model)))
        }
    })
}

fn pairs(map: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            (k.clone(), v)
        })
        .collect()
}

/// What the reasoner needs of a stored ticket.
pub fn facts(t: &Ticket) -> TicketFacts {
    TicketFacts {
        id: t.id,
        kind: t.kind.to_string(),
        invariant: t.invariant.clone(),
        severity: t.severity,
        component: t.component.clone(),
        summary: t.summary.clone(),
        opening_evidence: t
            .opening_evidence
            .as_ref()
            .map(pairs)
            .unwrap_or_else(|| pairs(&t.evidence)),
        evidence: pairs(&t.evidence),
        first_seen_ms: t.first_seen,
        last_seen_ms: t.last_seen,
        opened_tick: t.opened_tick,
        last_tick: t.last_tick,
        count: t.count,
        resolved: t.status == tickets::Status::Resolved,
    }
}

/// An incident's context, ready for a backend, and what the report says of the incident.
pub struct Prepared {
    pub context: Context,
    pub incident: incident::Incident,
    pub incident_lines: Vec<String>,
}

/// Builds the context of the incident `ticket` belongs to, from the store alone, and
/// records the grouping in the store.
pub fn prepare(store: &mut TicketStore, ticket: &Ticket) -> Result<Prepared> {
    let metadata: SubjectMetadata = match store.subject_metadata(&ticket.subject)? {
        Some(v) => serde_json::from_value(v).context("stored subject metadata")?,
        None => bail!(
            "no metadata stored for subject `{}`; run `operator run` for it first",
            ticket.subject
        ),
    };
    let mut peers = store.live(&ticket.subject)?;
    if !peers.iter().any(|t| t.id == ticket.id) {
        peers.push(ticket.clone());
    }
    let all: Vec<TicketFacts> = peers.iter().map(facts).collect();
    let mut seen = BTreeMap::new();
    for t in &peers {
        for o in store.detail(t.id)?.observations {
            seen.entry(o.id).or_insert(ObservationPoint {
                tick: o.tick,
                observation: o.observation,
            });
        }
    }
    let mut history: Vec<ObservationPoint> = seen.into_values().collect();
    history.sort_by_key(|p| p.tick);
    let incident = incident::group(&all, &history)
        .into_iter()
        .find(|i| i.tickets().any(|id| id == ticket.id))
        .unwrap_or(incident::Incident {
            root: ticket.id,
            members: vec![incident::Member {
                ticket: ticket.id,
                role: incident::Role::Root,
                reason: "alone".into(),
            }],
        });
    if incident.members.len() > 1 {
        let members: Vec<(i64, tickets::Role, String)> = incident
            .members
            .iter()
            .map(|m| {
                let role = match m.role {
                    incident::Role::Root => tickets::Role::Root,
                    incident::Role::Symptom => tickets::Role::Symptom,
                };
                (m.ticket, role, m.reason.clone())
            })
            .collect();
        store.assign_incident(incident.root, &members, crate::now_ms())?;
    }
    let incident_lines = incident
        .members
        .iter()
        .map(|m| {
            let t = peers.iter().find(|t| t.id == m.ticket);
            let what = t
                .map(|t| format!("{} {}", t.invariant, t.component))
                .unwrap_or_default();
            let role = match m.role {
                incident::Role::Root => "root",
                incident::Role::Symptom => "symptom",
            };
            format!("#{} {role} ({what}): {}", m.ticket, m.reason)
        })
        .collect();
    let members: Vec<TicketFacts> = all
        .into_iter()
        .filter(|f| incident.tickets().any(|id| id == f.id))
        .collect();
    let context = Context::build(
        ContextInput {
            subject: ticket.subject.clone(),
            metadata,
            tickets: members,
            root: Some(incident.root),
            history,
        },
        operator_diagnosis::context::DEFAULT_BUDGET_TOKENS,
    );
    Ok(Prepared {
        context,
        incident,
        incident_lines,
    })
}

/// Runs a backend on a prepared context.
pub async fn run_backend(backend: &Backend, prepared: &Prepared) -> Result<Diagnosis> {
    Ok(backend.diagnose(&prepared.context).await?)
}

/// Claims and diagnoses tickets from one store.
pub struct Worker {
    store: TicketStore,
    backend: Backend,
    owner: String,
    lease: Duration,
}

/// What one pass of the worker did.
#[derive(Debug)]
pub enum Pass {
    Idle,
    Diagnosed { ticket: i64, failure_mode: String },
    Failed { ticket: i64, error: String },
}

impl Worker {
    pub fn new(store: TicketStore, backend: Backend) -> Worker {
        let owner = format!(
            "{}:{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            crate::now_ms()
        );
        // The lease bounds how long a crashed worker's ticket waits to be claimed again:
        // short for the offline reasoner (milliseconds of work), long enough for a model's
        // tool-use loop otherwise.
        let lease = match backend {
            Backend::Offline => Duration::from_secs(15),
            _ => Duration::from_secs(300),
        };
        Worker {
            store,
            backend,
            owner,
            lease,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Claims one ticket, diagnoses it and records the outcome.
    pub async fn pass(&mut self) -> Result<Pass> {
        let now = crate::now_ms();
        let Some(Claim {
            ticket,
            fingerprint,
            attempt,
        }) = self
            .store
            .claim_for_diagnosis(now, self.lease, &self.owner)?
        else {
            return Ok(Pass::Idle);
        };
        let outcome = match prepare(&mut self.store, &ticket) {
            Ok(p) => self
                .backend
                .diagnose(&p.context)
                .await
                .map_err(|e| (e.retry_after(), e.to_string())),
            Err(e) => Err((None, format!("{e:#}"))),
        };
        let at = crate::now_ms();
        match outcome {
            Ok(d) => {
                let record = serde_json::to_value(&d)?;
                self.store.complete_diagnosis(
                    ticket.id,
                    &self.owner,
                    fingerprint.as_deref(),
                    &record,
                    self.backend.name(),
                    at,
                )?;
                tracing::info!(
                    ticket = ticket.id,
                    failure_mode = %d.root_cause.failure_mode,
                    confidence = d.confidence,
                    "diagnosed"
                );
                Ok(Pass::Diagnosed {
                    ticket: ticket.id,
                    failure_mode: d.root_cause.failure_mode.clone(),
                })
            }
            Err((retry_after, error)) => {
                let backoff = retry_after.unwrap_or_else(|| {
                    Duration::from_secs(5u64.saturating_mul(1 << attempt.clamp(0, 6)))
                        .min(Duration::from_secs(300))
                });
                let retry_at = at + backoff.as_millis() as i64;
                self.store.fail_diagnosis(
                    ticket.id,
                    &self.owner,
                    self.backend.name(),
                    &error,
                    retry_at,
                    at,
                )?;
                tracing::warn!(ticket = ticket.id, %error, ?backoff, "diagnosis failed; will retry");
                Ok(Pass::Failed {
                    ticket: ticket.id,
                    error,
                })
            }
        }
    }

    /// Diagnoses until nothing is left to claim.
    pub async fn drain(&mut self) -> Result<Vec<Pass>> {
        let mut done = Vec::new();
        loop {
            match self.pass().await? {
                Pass::Idle => return Ok(done),
                p => done.push(p),
            }
            // The monitor shares this thread, and the offline backend never waits: let a
            // tick that is due run between diagnoses rather than after all of them.
            tokio::task::yield_now().await;
        }
    }
}
