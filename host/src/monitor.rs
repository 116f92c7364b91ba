//! The monitor loop: on a fixed cadence, observe, check the invariants against recent
//! history, and write the tick to the ticket store.
//!
//! Plugin work is async and bounded by the plugin's deadline, so the cadence holds
//! whatever the plugin does. A stop request (SIGTERM, Ctrl-C) lets the current tick finish
//! and commit if it can within [`MonitorConfig::grace`]; past that the plugin call is cut
//! off and nothing half-done is written. Ticket writes are one transaction each and are
//! never interrupted.
//!
//! One plugin instance serves many ticks ([`InstancePolicy`]): a fresh instance every
//! second costs more than the tick itself (new linear memory, page faults, the guest's
//! start code and a cold heap). The sandbox promises stay per call (deadline, memory cap,
//! import caps, read-only phase), and any failure (trap, deadline, memory overrun) discards
//! the instance, so the next tick starts clean.

use crate::model::{Observation, ObserveError, Violation};
use crate::runtime::{Plugin, PluginError, Session};
use crate::tickets::{Policy, StoreError, TickOutcome, TickRecord, TickResult, TicketStore};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// When a long-lived plugin instance is replaced by a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstancePolicy {
    /// Keep the instance across ticks at all; `false` instantiates for every tick.
    pub reuse: bool,
    /// Ticks one instance serves before a fresh one replaces it, so that nothing a guest
    /// accumulates (heap fragmentation, caches) lives forever.
    pub max_ticks: u64,
    /// Replace the instance once its memory passes this share of the memory cap, leaving
    /// the next tick headroom instead of letting it hit the cap mid-call.
    pub max_memory_percent: usize,
    /// Replace the instance once the guest's stderr holds this much; the pipe is bounded,
    /// and its tail is what explains a trap.
    pub max_stderr_bytes: usize,
}

impl Default for InstancePolicy {
    fn default() -> Self {
        InstancePolicy {
            reuse: true,
            max_ticks: 3600,
            max_memory_percent: 50,
            max_stderr_bytes: 16 * 1024,
        }
    }
}

impl InstancePolicy {
    /// A fresh instance for every tick.
    pub fn fresh_every_tick() -> InstancePolicy {
        InstancePolicy {
            reuse: false,
            ..InstancePolicy::default()
        }
    }

    /// Whether `session`, having served `ticks`, may serve the next tick.
    fn keeps(&self, session: &Session, ticks: u64, memory_cap: usize) -> bool {
        self.reuse
            && !session.is_spent()
            && ticks < self.max_ticks
            && session.memory_in_use() <= memory_cap / 100 * self.max_memory_percent
            && session.stderr_bytes() < self.max_stderr_bytes
    }
}

#[derive(Debug, Clone, Copy)]
pub struct MonitorConfig {
    pub interval: Duration,
    pub once: bool,
    pub policy: Policy,
    /// How long a stop request waits for the current tick to finish.
    pub grace: Duration,
    pub instance: InstancePolicy,
}

impl MonitorConfig {
    pub fn new(interval: Duration, policy: Policy) -> MonitorConfig {
        MonitorConfig {
            interval,
            once: false,
            policy,
            grace: Duration::from_millis(900),
            instance: InstancePolicy::default(),
        }
    }
}

/// What the plugin produced in one tick.
#[derive(Debug)]
pub enum TickStatus {
    Observed {
        /// Shared with the monitor's history, which keeps it for the next ticks' checks.
        observation: Arc<Observation>,
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

/// Runs the plugin's part of one tick on a fresh instance. What the plugin returned beyond
/// the output caps shows up as a problem of the observation.
pub async fn run_plugin_tick(plugin: &Plugin, history: &VecDeque<Arc<Observation>>) -> TickStatus {
    match plugin.session().await {
        Ok(mut session) => tick_on(&mut session, history).await,
        Err(e) => TickStatus::PluginFailed(e),
    }
}

/// The plugin's part of one tick on an instance that may have served earlier ticks:
/// observe, then check-invariants over the history plus the new observation.
pub async fn tick_on(session: &mut Session, history: &VecDeque<Arc<Observation>>) -> TickStatus {
    let observation = match session.observe().await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return TickStatus::ObserveFailed(e),
        Err(e) => return TickStatus::PluginFailed(e),
    };
    // The past by reference, never copied here; an instance that already holds it (it
    // returned those observations on earlier ticks) is not sent it again.
    let mut window: Vec<&Observation> = Vec::with_capacity(history.len() + 1);
    window.extend(history.iter().map(|o| &**o));
    window.push(&observation);
    let checked = session.check_latest(&window).await;
    drop(window);
    match checked {
        Ok(checked) => {
            let mut observation = observation;
            observation.problems.extend(checked.capped);
            TickStatus::Observed {
                observation: Arc::new(observation),
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
    history: VecDeque<Arc<Observation>>,
    /// The instance kept from the last tick, and how many ticks it has served.
    instance: Option<(Session, u64)>,
    instances_started: u64,
    /// The number the next tick takes, once this monitor has recorded one: reading it back
    /// from the store each tick was a read transaction of its own (locks, a statement,
    /// several syscalls) for a number the monitor just wrote. `None` until the first tick
    /// is recorded, and again after a failed one, when it is read from the store.
    next_tick: Option<i64>,
}

impl Monitor {
    pub fn new(plugin: Plugin, store: TicketStore, config: MonitorConfig) -> Monitor {
        Monitor {
            plugin,
            store,
            config,
            history: VecDeque::new(),
            instance: None,
            instances_started: 0,
            next_tick: None,
        }
    }

    /// How many plugin instances this monitor has started so far.
    pub fn instances_started(&self) -> u64 {
        self.instances_started
    }

    /// How the kept instance's checks ran, if one is kept.
    pub fn instance_checks(&self) -> Option<crate::runtime::CheckCounts> {
        self.instance.as_ref().map(|(s, _)| s.checks())
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn store(&mut self) -> &mut TicketStore {
        &mut self.store
    }

    /// Runs the plugin's part of a tick, giving up `grace` after `stop` fires. The instance
    /// travels with the work: if the work is cut off, the instance goes with it.
    async fn plugin_part(&mut self, stop: &mut watch::Receiver<bool>) -> Option<TickStatus> {
        let kept = self.instance.take();
        let fresh = kept.is_none();
        let (plugin, history) = (&self.plugin, &self.history);
        let work = async move {
            let (mut session, served) = match kept {
                Some(kept) => kept,
                None => match plugin.session().await {
                    Ok(s) => (s, 0),
                    Err(e) => return (TickStatus::PluginFailed(e), None),
                },
            };
            let status = tick_on(&mut session, history).await;
            (status, Some((session, served + 1)))
        };
        tokio::pin!(work);
        let done = tokio::select! {
            done = &mut work => Some(done),
            _ = stopped(stop) => {
                tokio::time::timeout(self.config.grace, &mut work).await.ok()
            }
        };
        let (status, session) = done?;
        if fresh && session.is_some() {
            self.instances_started += 1;
        }
        let cap = self.plugin.limits().memory_bytes;
        self.instance = session.filter(|(s, served)| self.config.instance.keeps(s, *served, cap));
        Some(status)
    }

    /// One full tick: plugin work, then one transaction in the store. `None` when a stop
    /// request cut the plugin work short (nothing is written then).
    pub async fn tick(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<TickReport>, StoreError> {
        let subject = self.plugin.name().to_string();
        let tick = match self.next_tick {
            Some(tick) => tick,
            None => self.store.next_tick(&subject)?,
        };
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
        let recorded = self.store.record_tick(
            &TickRecord {
                subject: &subject,
                tick,
                at_ms,
                duration,
                result,
                fingerprint: fingerprint.as_deref(),
            },
            self.config.policy,
        );
        let outcome = match recorded {
            Ok(o) => o,
            Err(e) => {
                // The history will not take this observation, but the instance holds it:
                // start the next tick on a fresh one.
                self.instance = None;
                self.next_tick = None;
                return Err(e);
            }
        };
        self.next_tick = Some(tick + 1);
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
