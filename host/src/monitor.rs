//! The monitor loop: on a fixed cadence, instantiate the plugin, observe, check the
//! invariants against recent history, and write the tick to the ticket store.
//!
//! The loop runs on a blocking thread (wasm calls and SQLite are synchronous). A stop
//! request is honoured between ticks, so the current tick always finishes and commits.

use crate::model::{Observation, ObserveError, Violation};
use crate::runtime::{Plugin, PluginError};
use crate::tickets::{Policy, StoreError, TickOutcome, TickRecord, TickResult, TicketStore};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct MonitorConfig {
    pub interval: Duration,
    pub once: bool,
    pub policy: Policy,
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

/// Runs the plugin's part of one tick: fresh instance, observe, check-invariants.
pub fn run_plugin_tick(plugin: &Plugin, history: &VecDeque<Observation>) -> TickStatus {
    let mut session = match plugin.session() {
        Ok(s) => s,
        Err(e) => return TickStatus::PluginFailed(e),
    };
    let observation = match session.observe() {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return TickStatus::ObserveFailed(e),
        Err(e) => return TickStatus::PluginFailed(e),
    };
    let mut window: Vec<Observation> = history.iter().cloned().collect();
    window.push(observation);
    match session.check_invariants(&window) {
        Ok(violations) => TickStatus::Observed {
            observation: window.pop().expect("pushed above"),
            violations,
        },
        Err(e) => TickStatus::PluginFailed(e),
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

    /// One full tick: plugin work, then one transaction in the store.
    pub fn tick(&mut self) -> Result<TickReport, StoreError> {
        let subject = self.plugin.name().to_string();
        let tick = self.store.next_tick(&subject)?;
        let started = Instant::now();
        let status = run_plugin_tick(&self.plugin, &self.history);
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
        let outcome = self.store.record_tick(
            &TickRecord {
                subject: &subject,
                tick,
                at_ms,
                duration,
                result,
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
        match &status {
            TickStatus::Observed {
                violations,
                observation,
            } => tracing::info!(
                tick,
                duration_ms = duration.as_secs_f64() * 1000.0,
                violations = violations.len(),
                problems = observation.problems.len(),
                opened = outcome.opened.len(),
                resolved = outcome.resolved.len(),
                "tick"
            ),
            TickStatus::ObserveFailed(e) => {
                tracing::warn!(tick, duration_ms = duration.as_secs_f64() * 1000.0, error = %e, "tick: observe failed")
            }
            TickStatus::PluginFailed(e) => {
                tracing::error!(tick, duration_ms = duration.as_secs_f64() * 1000.0, error = %e, "tick: plugin failed")
            }
        }
        Ok(TickReport {
            tick,
            duration,
            status,
            outcome,
        })
    }

    /// Ticks on the configured cadence until `stop` receives (or is closed), or once.
    /// A tick that overruns the interval delays the next one rather than bunching them.
    pub fn run(
        &mut self,
        stop: &Receiver<()>,
        mut report: impl FnMut(&TickReport),
    ) -> Result<u64, StoreError> {
        let mut ticks = 0;
        let mut next = Instant::now();
        loop {
            let r = self.tick()?;
            ticks += 1;
            report(&r);
            if self.config.once {
                return Ok(ticks);
            }
            next += self.config.interval;
            let now = Instant::now();
            if next < now {
                next = now;
            }
            match stop.recv_timeout(next - now) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(ticks),
            }
        }
    }
}
