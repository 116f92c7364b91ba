use clap::{CommandFactory, FromArgMatches};
use operator::cli::{self, Cli, subject_help};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let mut command = Cli::command();
    // CLI-01: `--help` next to a subject lists the settings that subject declares.
    if let Some((sub, source)) = subject_help::requested(&argv) {
        let extra = subject_help::help_for(source).await;
        command = command.mut_subcommand(sub, |c| c.after_help(extra));
    }
    let cli = match command
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("warning: bad --log filter `{}` ({e}); using info", cli.log);
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli::dispatch(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
