//! The command line: a thin layer. Each command lives in its own file, which parses its
//! flags, calls the library and renders the result; this module only dispatches.

pub mod action;
pub mod args;
pub mod diagnose;
pub mod observe;
pub mod output;
pub mod plugin;
pub mod run;
pub mod subject_help;
pub mod tickets;

use clap::{Parser, Subcommand};

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
    Run(run::RunArgs),
    /// Read and resolve tickets.
    #[command(subcommand)]
    Tickets(tickets::TicketsCommand),
    /// List, inspect and export plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run one of a subject's declared actions.
    Action(action::ActionArgs),
    /// Observe once and check the invariants, without touching the ticket database: what
    /// the plugin sees, for plugin authors and for a first look at a cluster. Invariants
    /// that compare two observations (rates, deltas) have nothing to compare here.
    Observe(observe::ObserveArgs),
    /// Diagnose a ticket's incident again (keeps the earlier records).
    Diagnose(diagnose::DiagnoseArgs),
}

/// Whether this process is the `operator` binary, which may run itself as a child (see
/// [`plugin::compile_in_child`]). A library user's process is not, so it is never re-run.
static SELF_EXEC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called by the `operator` binary's `main`, and by nothing else.
pub fn allow_self_exec() {
    SELF_EXEC.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn self_exec_allowed() -> bool {
    SELF_EXEC.load(std::sync::atomic::Ordering::Relaxed)
}

pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Tickets(cmd) => tickets::tickets(cmd),
        Command::Plugin(cmd) => plugin::plugin(cmd).await,
        Command::Action(args) => action::action(args).await,
        Command::Observe(args) => observe::observe(args).await,
        Command::Diagnose(args) => diagnose::diagnose(args).await,
    }
}
