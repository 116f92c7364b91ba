//! The command line: argument definitions and the commands behind them.

use crate::bundled;
use crate::model::SubjectMetadata;
use crate::monitor::{Monitor, MonitorConfig, TickReport, TickStatus, run_plugin_tick};
use crate::runtime::{CompiledPlugin, Grants, Limits, Plugin, Runtime, version};
use crate::settings::{self, FileConfig};
use crate::tickets::{Policy, Status, Ticket, TicketStore};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "operator",
    version,
    about = "An AI operator for distributed systems"
)]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info`, `operator=debug,plugin=trace`.
    #[arg(long, global = true, env = "OPERATOR_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch a subject: observe, check invariants, keep tickets.
    Run(RunArgs),
    /// Read and resolve tickets.
    #[command(subcommand)]
    Tickets(TicketsCommand),
    /// List, inspect and export plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run one of a subject's declared actions.
    Action(ActionArgs),
    /// Observe once and check the invariants, without touching the ticket database: what
    /// the plugin sees, for plugin authors and for a first look at a cluster. Invariants
    /// that compare two observations (rates, deltas) have nothing to compare here.
    Observe(ObserveArgs),
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
pub struct PluginSource {
    /// A subject bundled into this binary (see `operator plugin list`).
    #[arg(long)]
    pub subject: Option<String>,
    /// A subject plugin component file (wasm32-wasip2).
    #[arg(long)]
    pub plugin: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct GrantArgs {
    /// TOML config file; flags win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A plugin setting, KEY=VALUE (repeatable). URL values are allowlisted.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = settings::parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Also allow this origin, scheme://host:port (repeatable).
    #[arg(long = "allow", value_name = "ORIGIN")]
    pub allow: Vec<String>,
    /// Per-call deadline for the plugin [default: 10s].
    #[arg(long)]
    pub timeout: Option<String>,
    /// Memory cap per plugin instance [default: 128MiB].
    #[arg(long)]
    pub memory: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: PluginSource,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// Tick interval [default: 5s].
    #[arg(long)]
    pub interval: Option<String>,
    /// Run one tick and exit.
    #[arg(long)]
    pub once: bool,
    /// Ticket database [default: operator.db].
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Clean ticks before a ticket auto-resolves [default: 3].
    #[arg(long)]
    pub resolve_after: Option<u32>,
    /// Observations of history handed to check-invariants [default: 5].
    #[arg(long)]
    pub history: Option<usize>,
    /// Print tick reports as JSON lines.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum TicketsCommand {
    /// List tickets.
    List {
        #[arg(long, value_parser = parse_status)]
        status: Option<Status>,
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, default_value = "operator.db")]
        db: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one ticket with its history and observations.
    Show {
        id: i64,
        #[arg(long, default_value = "operator.db")]
        db: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Resolve a ticket by hand.
    Resolve {
        id: i64,
        #[arg(long, default_value = "operator.db")]
        db: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// The subjects bundled into this binary.
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// WIT version, invariants, actions and failure modes of a plugin.
    Inspect {
        /// A bundled subject name or a component file.
        plugin: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Write a bundled subject's component to a file.
    Export {
        name: String,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Action id or name (see `operator plugin inspect`).
    pub action: String,
    #[command(flatten)]
    pub source: PluginSource,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// An action parameter, KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = settings::parse_key_value)]
    pub params: Vec<(String, String)>,
    /// Allow actions that change the subject. Without it only read-only actions run.
    #[arg(long)]
    pub allow_actions: bool,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub source: PluginSource,
    #[command(flatten)]
    pub grants: GrantArgs,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s).ok_or_else(|| {
        format!("unknown status `{s}` (expected open, diagnosing, diagnosed or resolved)")
    })
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn format_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Everything `run` and `action` need to build a plugin, with file config merged in.
struct Resolved {
    source: (String, Vec<u8>),
    grants: Grants,
    limits: Limits,
    file: FileConfig,
}

fn resolve(source: &PluginSource, grants: &GrantArgs) -> Result<Resolved> {
    let file = match &grants.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let subject = source.subject.clone().or_else(|| {
        if source.plugin.is_none() {
            file.subject.clone()
        } else {
            None
        }
    });
    let plugin = source.plugin.clone().or_else(|| {
        if subject.is_none() {
            file.plugin.clone()
        } else {
            None
        }
    });
    let source = match (subject, plugin) {
        (Some(name), _) => load_bundled(&name)?,
        (None, Some(path)) => load_file(&path)?,
        (None, None) => bail!(
            "no plugin given: pass --subject NAME (one of: {}) or --plugin FILE.wasm",
            bundled::names().join(", ")
        ),
    };
    let mut settings_map = file.plugin_settings()?;
    settings_map.extend(grants.set.iter().cloned());
    let mut allow = file.allow.clone();
    allow.extend(grants.allow.iter().cloned());
    let mut limits = Limits::default();
    if let Some(t) = grants.timeout.as_ref().or(file.timeout.as_ref()) {
        limits.deadline = settings::parse_duration("--timeout", t)?;
    }
    if let Some(m) = grants.memory.as_ref().or(file.memory.as_ref()) {
        limits.memory_bytes = settings::parse_size("--memory", m)?;
    }
    Ok(Resolved {
        source,
        grants: Grants {
            settings: settings_map,
            allow,
        },
        limits,
        file,
    })
}

fn load_bundled(name: &str) -> Result<(String, Vec<u8>)> {
    let b = bundled::find(name).with_context(|| {
        format!(
            "no bundled subject `{name}` (bundled: {})",
            bundled::names().join(", ")
        )
    })?;
    Ok((format!("bundled subject {name}"), b.wasm.to_vec()))
}

fn load_file(path: &Path) -> Result<(String, Vec<u8>)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read plugin {}", path.display()))?;
    Ok((path.display().to_string(), bytes))
}

/// A bundled name, else a file path.
fn load_any(spec: &str) -> Result<(String, Vec<u8>)> {
    if bundled::find(spec).is_some() {
        return load_bundled(spec);
    }
    let path = Path::new(spec);
    if path.exists() {
        return load_file(path);
    }
    bail!(
        "`{spec}` is neither a bundled subject ({}) nor a file",
        bundled::names().join(", ")
    )
}

fn compile(runtime: &Runtime, source: &(String, Vec<u8>)) -> Result<CompiledPlugin> {
    Ok(runtime.compile(&source.0, &source.1)?)
}

fn build_plugin(r: &Resolved) -> Result<(Plugin, SubjectMetadata)> {
    let runtime = Runtime::new(r.limits)?;
    let plugin = Plugin::new(
        runtime.clone(),
        compile(&runtime, &r.source)?,
        r.grants.clone(),
    )?;
    let meta = plugin.metadata().clone();
    Ok((plugin, meta))
}

pub async fn run(args: RunArgs) -> Result<()> {
    let r = resolve(&args.source, &args.grants)?;
    let interval = match args.interval.as_ref().or(r.file.interval.as_ref()) {
        Some(i) => settings::parse_duration("--interval", i)?,
        None => std::time::Duration::from_secs(5),
    };
    let db = args
        .db
        .clone()
        .or(r.file.db.clone())
        .unwrap_or_else(|| PathBuf::from("operator.db"));
    let mut policy = Policy::default();
    if let Some(n) = args.resolve_after.or(r.file.resolve_after) {
        if n == 0 {
            bail!("--resolve-after must be at least 1");
        }
        policy.resolve_after = n;
    }
    if let Some(n) = args.history.or(r.file.history) {
        policy.history = n.clamp(1, 100);
    }
    let store = TicketStore::open(&db)
        .with_context(|| format!("opening ticket database {}", db.display()))?;
    let build = tokio::task::spawn_blocking(move || build_plugin(&r));
    let (plugin, meta) = build.await??;
    tracing::info!(
        subject = %meta.name,
        wit = plugin.wit_version(),
        allow = ?plugin.allowed_origins(),
        interval = ?interval,
        db = %db.display(),
        "starting monitor"
    );
    let config = MonitorConfig {
        interval,
        once: args.once,
        policy,
    };
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping after the current tick (signal again to abort)");
        let _ = stop_tx.send(());
        wait_for_signal().await;
        std::process::exit(130);
    });
    let output = args.output;
    let meta = Arc::new(meta);
    let ticks = tokio::task::spawn_blocking(move || {
        let mut monitor = Monitor::new(plugin, store, config);
        monitor.run(&stop_rx, |r| print_report(r, output, &meta))
    })
    .await??;
    tracing::info!(ticks, "monitor stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn print_report(r: &TickReport, output: Output, _meta: &SubjectMetadata) {
    match output {
        Output::Json => {
            let (status, violations, problems, error) = match &r.status {
                TickStatus::Observed {
                    violations,
                    observation,
                } => ("ok", Some(violations), Some(&observation.problems), None),
                TickStatus::ObserveFailed(e) => ("observe-failed", None, None, Some(e.to_string())),
                TickStatus::PluginFailed(e) => ("plugin-failed", None, None, Some(e.to_string())),
            };
            let line = serde_json::json!({
                "tick": r.tick,
                "duration_ms": r.duration.as_secs_f64() * 1000.0,
                "status": status,
                "error": error,
                "violations": violations,
                "problems": problems,
                "opened": r.outcome.opened.iter().map(|t| t.id).collect::<Vec<_>>(),
                "resolved": r.outcome.resolved.iter().map(|t| t.id).collect::<Vec<_>>(),
            });
            println!("{line}");
        }
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

pub fn tickets(cmd: TicketsCommand) -> Result<()> {
    let open = |db: &Path| {
        if !db.exists() {
            bail!(
                "no ticket database at {} (run `operator run` first, or pass --db)",
                db.display()
            );
        }
        TicketStore::open(db).with_context(|| format!("opening ticket database {}", db.display()))
    };
    match cmd {
        TicketsCommand::List {
            status,
            subject,
            db,
            output,
        } => {
            let list = open(&db)?.list(status, subject.as_deref())?;
            match output {
                Output::Json => print_json(&list)?,
                Output::Text => print_ticket_table(&list),
            }
        }
        TicketsCommand::Show { id, db, output } => {
            let d = open(&db)?.detail(id)?;
            match output {
                Output::Json => print_json(&d)?,
                Output::Text => {
                    let t = &d.ticket;
                    println!(
                        "#{} [{}] {} {} on {}",
                        t.id,
                        t.status.as_str(),
                        t.severity,
                        t.invariant,
                        t.subject
                    );
                    println!("  {}", t.summary);
                    if !t.component.is_empty() {
                        println!("  component: {}", t.component);
                    }
                    println!(
                        "  seen {} times, first {} last {}",
                        t.count,
                        format_time(t.first_seen),
                        format_time(t.last_seen)
                    );
                    println!("  evidence:");
                    for (k, v) in &t.evidence {
                        println!(
                            "    {k} = {}",
                            v.as_str()
                                .map(String::from)
                                .unwrap_or_else(|| v.to_string())
                        );
                    }
                    println!("  history:");
                    for e in &d.events {
                        println!("    {} {} {}", format_time(e.at), e.kind, e.detail);
                    }
                    println!("  observations kept: {}", d.observations.len());
                }
            }
        }
        TicketsCommand::Resolve { id, db, output } => {
            let t = open(&db)?.resolve(id, crate::now_ms())?;
            match output {
                Output::Json => print_json(&t)?,
                Output::Text => println!("#{} resolved", t.id),
            }
        }
    }
    Ok(())
}

fn print_ticket_table(list: &[Ticket]) {
    if list.is_empty() {
        println!("no tickets");
        return;
    }
    println!(
        "{:>5}  {:<10} {:<8} {:<9} {:>5}  {:<20} SUMMARY",
        "ID", "STATUS", "SEVERITY", "INVARIANT", "COUNT", "LAST SEEN"
    );
    for t in list {
        println!(
            "{:>5}  {:<10} {:<8} {:<9} {:>5}  {:<20} {}",
            t.id,
            t.status.as_str(),
            t.severity.as_str(),
            t.invariant,
            t.count,
            format_time(t.last_seen),
            t.summary
        );
    }
}

pub async fn plugin(cmd: PluginCommand) -> Result<()> {
    match cmd {
        PluginCommand::List { output } => {
            let rows: Vec<serde_json::Value> = bundled::BUNDLED
                .iter()
                .map(|b| serde_json::json!({ "name": b.name, "bytes": b.wasm.len() }))
                .collect();
            match output {
                Output::Json => print_json(&rows)?,
                Output::Text => {
                    for b in bundled::BUNDLED {
                        println!("{:<14} {:>8} KiB", b.name, b.wasm.len() / 1024);
                    }
                }
            }
        }
        PluginCommand::Inspect { plugin, output } => {
            let source = load_any(&plugin)?;
            let (wit, meta) = tokio::task::spawn_blocking(move || -> Result<_> {
                let runtime = Runtime::new(Limits::default())?;
                let compiled = compile(&runtime, &source)?;
                let wit = compiled.wit_version.clone();
                let plugin = Plugin::new(runtime, compiled, Grants::default())?;
                Ok((wit, plugin.metadata().clone()))
            })
            .await??;
            match output {
                Output::Json => print_json(&serde_json::json!({
                    "wit_version": wit,
                    "host_wit_version": version::HOST_WIT_VERSION,
                    "name": meta.name,
                    "version": meta.version,
                    "description": meta.description,
                    "invariants": meta.invariants,
                    "actions": meta.actions,
                    "failure_modes": meta.failure_modes,
                }))?,
                Output::Text => print_metadata(&wit, &meta),
            }
        }
        PluginCommand::Export { name, output } => {
            let b = bundled::find(&name).with_context(|| {
                format!(
                    "no bundled subject `{name}` (bundled: {})",
                    bundled::names().join(", ")
                )
            })?;
            std::fs::write(&output, b.wasm)
                .with_context(|| format!("writing {}", output.display()))?;
            println!("wrote {} ({} bytes)", output.display(), b.wasm.len());
        }
    }
    Ok(())
}

fn print_metadata(wit: &str, m: &SubjectMetadata) {
    println!("{} {} (operator:subject@{wit})", m.name, m.version);
    println!("  {}", m.description);
    println!("invariants:");
    for i in &m.invariants {
        println!(
            "  {:<8} {:<8} {}: {}",
            i.id,
            i.severity.as_str(),
            i.name,
            i.description
        );
    }
    println!("actions:");
    for a in &m.actions {
        let params: Vec<String> = a
            .params
            .iter()
            .map(|p| {
                if p.required {
                    p.name.clone()
                } else {
                    format!("[{}]", p.name)
                }
            })
            .collect();
        println!(
            "  {:<8} {:<16} {} risk={}{} ({})",
            a.id,
            a.name,
            params.join(" "),
            serde_json::to_value(a.risk)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            if a.mutates { " mutates" } else { "" },
            a.description
        );
    }
    println!("failure modes:");
    for f in &m.failure_modes {
        println!("  {:<8} {}: {}", f.id, f.name, f.description);
        for s in &f.signals_for {
            println!("      + {}", s.description);
        }
        for s in &f.signals_against {
            println!("      - {}", s.description);
        }
        if let Some(a) = &f.suggested_action {
            println!("      -> {a}");
        }
    }
}

pub async fn action(args: ActionArgs) -> Result<()> {
    let r = resolve(&args.source, &args.grants)?;
    let action = args.action.clone();
    let params = args.params.clone();
    let allow = args.allow_actions;
    let result = tokio::task::spawn_blocking(move || -> Result<_> {
        let (plugin, meta) = build_plugin(&r)?;
        let info = meta.action(&action).cloned().with_context(|| {
            let ids: Vec<String> = meta.actions.iter().map(|a| format!("{} ({})", a.id, a.name)).collect();
            format!("`{action}` is not an action of {} (actions: {})", meta.name, ids.join(", "))
        })?;
        if info.mutates && !allow {
            bail!(
                "{} ({}) changes the subject; the operator is observe-only unless you pass --allow-actions",
                info.id,
                info.name
            );
        }
        let out = plugin.session()?.execute(&info.id, &params, info.mutates)?;
        Ok((info, out))
    })
    .await??;
    let (info, out) = result;
    match out {
        Ok(message) => {
            match args.output {
                Output::Json => print_json(
                    &serde_json::json!({"action": info.id, "ok": true, "result": message}),
                )?,
                Output::Text => println!("{} ({}): {message}", info.id, info.name),
            }
            Ok(())
        }
        Err(message) => bail!("{} ({}) failed: {message}", info.id, info.name),
    }
}

pub async fn observe(args: ObserveArgs) -> Result<()> {
    let r = resolve(&args.source, &args.grants)?;
    let status = tokio::task::spawn_blocking(move || -> Result<_> {
        let (plugin, _) = build_plugin(&r)?;
        Ok(run_plugin_tick(&plugin, &Default::default()))
    })
    .await??;
    let (observation, violations) = match status {
        TickStatus::Observed {
            observation,
            violations,
        } => (observation, violations),
        TickStatus::ObserveFailed(e) => bail!("the plugin could not observe the subject: {e}"),
        TickStatus::PluginFailed(e) => bail!("the plugin failed: {e}"),
    };
    if let Output::Json = args.output {
        return print_json(&serde_json::json!({
            "observation": observation,
            "violations": violations,
        }));
    }
    println!("components:");
    for c in &observation.components {
        let attrs: Vec<String> = c
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "  {:<22} {:<8} {:<8} {}",
            c.id,
            c.kind,
            c.state.as_str(),
            attrs.join(" ")
        );
    }
    let names: std::collections::BTreeSet<&str> = observation
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    println!(
        "metrics: {} samples of {} names",
        observation.metrics.len(),
        names.len()
    );
    for e in &observation.events {
        println!(
            "event    {} {}: {}",
            e.severity.as_str(),
            e.component,
            e.message
        );
    }
    for p in &observation.problems {
        println!("problem  {}: {}", p.source, p.message);
    }
    if violations.is_empty() {
        println!("no violations");
    }
    for v in &violations {
        println!(
            "VIOLATED {} {} {}",
            v.severity.as_str(),
            v.invariant,
            v.summary
        );
    }
    Ok(())
}
