//! `operator run`: watch a subject on a cadence and keep tickets.

use super::args::{GrantArgs, Output, RunConfig, RunFlags, SourceArgs, file_config};
use super::output::format_time;
use crate::model::{Problem, Violation};
use crate::monitor::{InstancePolicy, Monitor, MonitorConfig, TickReport, TickStatus};
use crate::tickets::TicketStore;
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub grants: GrantArgs,
    #[command(flatten)]
    pub flags: RunFlags,
    /// Print tick reports as JSON lines.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// Diagnose each ticket that opens: auto (claude when ANTHROPIC_API_KEY is set, else
    /// offline), offline, claude, openai, or off.
    #[arg(long, value_enum, default_value_t)]
    pub diagnose: crate::diagnosis::Mode,
}

/// One line of `run --output json`.
#[derive(Debug, Serialize)]
pub struct TickLine<'a> {
    pub tick: i64,
    pub duration_ms: f64,
    /// `ok`, `observe-failed` or `plugin-failed`.
    pub status: &'static str,
    pub error: Option<String>,
    pub violations: Option<&'a [Violation]>,
    pub problems: Option<&'a [Problem]>,
    pub opened: Vec<i64>,
    pub resolved: Vec<i64>,
}

impl<'a> TickLine<'a> {
    pub fn of(r: &'a TickReport) -> TickLine<'a> {
        let (status, violations, problems, error) = match &r.status {
            TickStatus::Observed {
                violations,
                observation,
            } => (
                "ok",
                Some(violations.as_slice()),
                Some(observation.problems.as_slice()),
                None,
            ),
            TickStatus::ObserveFailed(e) => ("observe-failed", None, None, Some(e.to_string())),
            TickStatus::PluginFailed(e) => ("plugin-failed", None, None, Some(e.to_string())),
        };
        TickLine {
            tick: r.tick,
            duration_ms: r.duration.as_secs_f64() * 1000.0,
            status,
            error,
            violations,
            problems,
            opened: r.outcome.opened.iter().map(|t| t.id).collect(),
            resolved: r.outcome.resolved.iter().map(|t| t.id).collect(),
        }
    }
}

pub async fn run(args: RunArgs) -> Result<()> {
    let file = file_config(&args.grants)?;
    let config = RunConfig::resolve(&file, &args.source, &args.grants, &args.flags)?;
    let store = TicketStore::open(&config.db)
        .with_context(|| format!("opening ticket database {}", config.db.display()))?;
    super::plugin::compile_in_child(&config.plugin.source).await;
    let plugin = config.plugin.builder().build().await?;
    tracing::info!(
        subject = %plugin.name(),
        plugin = %plugin.metadata().name,
        wit = plugin.wit_version(),
        allow = ?plugin.allowed_origins(),
        interval = ?config.interval,
        db = %config.db.display(),
        "starting monitor"
    );
    let mut store = store;
    store.save_subject(
        plugin.name(),
        &serde_json::to_value(plugin.metadata())?,
        crate::now_ms(),
    )?;
    let worker = match crate::diagnosis::backend(args.diagnose)? {
        Some(backend) => {
            tracing::info!(
                backend = backend.name(),
                model = backend.model(),
                "diagnosis on"
            );
            let store = TicketStore::open(&config.db)
                .with_context(|| format!("opening ticket database {}", config.db.display()))?;
            Some(crate::diagnosis::Worker::new(store, backend))
        }
        None => {
            tracing::info!("diagnosis off");
            None
        }
    };
    let mut monitor_config = MonitorConfig::new(config.interval, config.policy);
    monitor_config.once = config.once;
    if config.instance_per_tick {
        monitor_config.instance = InstancePolicy::fresh_every_tick();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "stopping: the current tick may finish within a second (signal again to abort)"
        );
        let _ = stop_tx.send(true);
        wait_for_signal().await;
        std::process::exit(130);
    });
    let output = args.output;
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let diagnosing = worker.map(|w| spawn_worker(w, wake.clone(), stop_rx.clone(), config.once));
    let mut monitor = Monitor::new(plugin, store, monitor_config);
    let ticks = monitor
        .run(stop_rx, |r| {
            print_report(r, output);
            if !r.outcome.opened.is_empty() || !r.outcome.rediagnose.is_empty() {
                wake.notify_one();
            }
        })
        .await?;
    tracing::info!(ticks, "monitor stopped");
    if let Some(handle) = diagnosing {
        wake.notify_one();
        if config.once {
            // One tick: its tickets are diagnosed before the command returns.
            handle.await?;
        } else {
            handle.abort();
        }
    }
    Ok(())
}

/// The diagnosis worker: woken after a tick that opened tickets, and every few seconds for
/// retries. With `once`, it drains once and ends.
fn spawn_worker(
    mut worker: crate::diagnosis::Worker,
    wake: std::sync::Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    once: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match worker.drain().await {
                Ok(passes) => {
                    for p in passes {
                        tracing::debug!(?p, "diagnosis pass");
                    }
                }
                Err(e) => tracing::error!("diagnosis worker: {e:#}"),
            }
            if once {
                return;
            }
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); Ctrl-C still stops");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn print_report(r: &TickReport, output: Output) {
    match output {
        Output::Json => match serde_json::to_string(&TickLine::of(r)) {
            Ok(line) => println!("{line}"),
            Err(e) => tracing::error!("cannot render tick {} as JSON: {e}", r.tick),
        },
        Output::Text => {
            let stamp = format_time(crate::now_ms());
            for t in &r.outcome.opened {
                println!(
                    "{stamp} OPEN     #{} {} {} {}",
                    t.id, t.severity, t.invariant, t.summary
                );
            }
            for t in &r.outcome.escalated {
                println!(
                    "{stamp} ESCALATE #{} {} {} {}",
                    t.id, t.severity, t.invariant, t.summary
                );
            }
            for t in &r.outcome.resolved {
                println!("{stamp} RESOLVED #{} {} ({})", t.id, t.invariant, t.summary);
            }
            if let TickStatus::Observed { observation, .. } = &r.status {
                for p in &observation.problems {
                    println!("{stamp} PROBLEM  {}: {}", p.source, p.message);
                }
            }
        }
    }
}
