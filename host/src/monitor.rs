//! The monitor loop: on a fixed cadence, instantiate the plugin, observe, check the
//! invariants against recent history, and write the tick to the ticket store.
//!
//! Plugin work is async and bounded by the plugin's deadline, so the cadence holds
//! whatever the plugin does. A stop request (SIGTERM, Ctrl-C) lets the current tick finish
//! and commit if it can within [`MonitorConfig::grace`]; past that the plugin call is cut
//! off and nothing half-done is written. Ticket writes are one transaction each and are
//! never interrupted.

use crate::model::{Observation, ObserveError, Violation};
use crate::runtime::{Plugin, PluginError};
use crate::tickets::{Policy, StoreError, TickOutcome, TickRecord, TickResult, TicketStore};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy)]
pub struct MonitorConfig {
    pub interval: Duration,
    pub once: bool,
    pub policy: Policy,
    /// How long a stop request waits for the current tick to finish.
    pub grace: Duration,
}

impl MonitorConfig {
    pub fn new(interval: Duration, policy: Policy) -> MonitorConfig {
        MonitorConfig {
            interval,
            once: false,
            policy,
            grace: Duration::from_millis(900),
        }
    }
}

/// What the plugin produced in one tick.
#[derive(Debug)]
pub enum TickStatus {
    Observed {
        observation: Observation,
        violations: Vec<Violation>,
    },
    ObserveFailed(ObserveError),
    PluginFailed(PluginError),
}

/// One tick, reported to the caller (the CLI prints it).
#[derive(Debug)]
pub struct TickReport {
    pub tick: i64,
    pub duration: Duration,
    pub status: TickStatus,
    pub outcome: TickOutcome,
}

/// Runs the plugin's part of one tick: fresh instance, observe, check-invariants. What the
/// plugin returned beyond the output caps shows up as a problem of the observation.
pub async fn run_plugin_tick(plugin: &Plugin, history: &VecDeque<Observation>) -> TickStatus {
    let mut session = match plugin.session().await {
        Ok(s) => s,
        Err(e) => return TickStatus::PluginFailed(e),
    };
    let observation = match session.observe().await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return TickStatus::ObserveFailed(e),
        Err(e) => return TickStatus::PluginFailed(e),
    };
    // The past by reference: it is lowered into the guest, never copied here.
    let mut window: Vec<&Observation> = Vec::with_capacity(history.len() + 1);
    window.extend(history.iter());
    window.push(&observation);
    let checked = session.check_window(&window).await;
    drop(window);
    match checked {
        Ok(checked) => {
            let mut observation = observation;
            observation.problems.extend(checked.capped);
            TickStatus::Observed {
                observation,
                violations: checked.violations,
            }
        }
        Err(e) => TickStatus::PluginFailed(e),
    }
}

/// The subject's material evidence at this tick, condensed: which invariants are broken
/// and what state each component is in. A diagnosis is redone when this changes (a new
/// invariant joins, a component changes state), not on every tick's new numbers.
pub fn fingerprint(status: &TickStatus) -> Option<String> {
    let TickStatus::Observed {
        observation,
        violations,
    } = status
    else {
        return None;
    };
    let invariants: std::collections::BTreeSet<&str> =
        violations.iter().map(|v| v.invariant.as_str()).collect();
    let states: std::collections::BTreeSet<String> = observation
        .components
        .iter()
        .map(|c| format!("{}={}", c.id, c.state.as_str()))
        .collect();
    Some(format!(
        "invariants:{};components:{}",
        invariants.into_iter().collect::<Vec<_>>().join(","),
        states.into_iter().collect::<Vec<_>>().join(",")
    ))
}

/// Resolves when a stop is requested; never, if nobody can request one any more.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub struct Monitor {
    plugin: Plugin,
    store: TicketStore,
    config: MonitorConfig,
    history: VecDeque<Observation>,
}

impl Monitor {
    pub fn new(plugin: Plugin, store: TicketStore, config: MonitorConfig) -> Monitor {
        Monitor {
            plugin,
            store,
            config,
            history: VecDeque::new(),
        }
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn store(&mut self) -> &mut TicketStore {
        &mut self.store
    }

    /// Runs the plugin's part of a tick, giving up `grace` after `stop` fires.
    async fn plugin_part(&self, stop: &mut watch::Receiver<bool>) -> Option<TickStatus> {
        let work = run_plugin_tick(&self.plugin, &self.history);
        tokio::pin!(work);
        tokio::select! {
            status = &mut work => Some(status),
            _ = stopped(stop) => {
                tokio::time::timeout(self.config.grace, &mut work).await.ok()
            }
        }
    }

    /// One full tick: plugin work, then one transaction in the store. `None` when a stop
    /// request cut the plugin work short (nothing is written then).
    pub async fn tick(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<TickReport>, StoreError> {
        let subject = self.plugin.name().to_string();
        let tick = self.store.next_tick(&subject)?;
        let started = Instant::now();
        let Some(status) = self.plugin_part(stop).await else {
            tracing::warn!(tick, "tick cut short by shutdown; nothing recorded for it");
            return Ok(None);
        };
        let duration = started.elapsed();
        let at_ms = crate::now_ms();
        let failure_message = match &status {
            TickStatus::PluginFailed(e) => e.to_string(),
            _ => String::new(),
        };
        let result = match &status {
            TickStatus::Observed {
                observation,
                violations,
            } => TickResult::Observed {
                observation,
                violations,
            },
            TickStatus::ObserveFailed(e) => TickResult::ObserveFailed(e),
            TickStatus::PluginFailed(e) => TickResult::PluginFailed {
                kind: e.kind(),
                message: &failure_message,
            },
        };
        let fingerprint = fingerprint(&status);
        let outcome = self.store.record_tick(
            &TickRecord {
                subject: &subject,
                tick,
                at_ms,
                duration,
                result,
                fingerprint: fingerprint.as_deref(),
            },
            self.config.policy,
        )?;
        if let TickStatus::Observed { observation, .. } = &status {
            self.history.push_back(observation.clone());
            // Past observations plus the next tick's make a window of `history`.
            while self.history.len() >= self.config.policy.history.max(1) {
                self.history.pop_front();
            }
        }
        let ms = duration.as_secs_f64() * 1000.0;
        match &status {
            TickStatus::Observed {
                violations,
                observation,
            } => tracing::info!(
                tick,
                duration_ms = ms,
                violations = violations.len(),
                problems = observation.problems.len(),
                opened = outcome.opened.len(),
                resolved = outcome.resolved.len(),
                "tick"
            ),
            TickStatus::ObserveFailed(e) => {
                tracing::warn!(tick, duration_ms = ms, error = %e, "tick: observe failed")
            }
            TickStatus::PluginFailed(e) => {
                tracing::error!(tick, duration_ms = ms, error = %e, "tick: plugin failed")
            }
        }
        Ok(Some(TickReport {
            tick,
            duration,
            status,
            outcome,
        }))
    }

    /// Ticks on the configured cadence until `stop` turns true (or its sender is gone),
    /// or once. A tick that overruns the interval delays the next one rather than
    /// bunching them.
    pub async fn run(
        &mut self,
        mut stop: watch::Receiver<bool>,
        mut report: impl FnMut(&TickReport),
    ) -> Result<u64, StoreError> {
        let mut ticks = 0;
        let mut next = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                return Ok(ticks);
            }
            match self.tick(&mut stop).await? {
                Some(r) => {
                    ticks += 1;
                    report(&r);
                }
                None => return Ok(ticks),
            }
            if self.config.once {
                return Ok(ticks);
            }
            next += self.config.interval;
            let now = tokio::time::Instant::now();
            if next < now {
                next = now;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stopped(&mut stop) => return Ok(ticks),
            }
        }
    }
}
