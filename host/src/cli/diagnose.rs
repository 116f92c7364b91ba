//! `operator diagnose ID`: diagnose a ticket's incident again, on demand, keeping the
//! earlier records.

use super::args::{DEFAULT_DB, Output};
use super::output::print_json;
use crate::diagnosis::{self, Mode};
use crate::tickets::TicketStore;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// The ticket to diagnose (its whole incident is considered).
    pub id: i64,
    /// auto (claude when ANTHROPIC_API_KEY is set, else offline), offline, claude, openai.
    #[arg(long, value_enum, default_value_t)]
    pub backend: Mode,
    #[arg(long, default_value = DEFAULT_DB)]
    pub db: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

pub async fn diagnose(args: DiagnoseArgs) -> Result<()> {
    if !args.db.exists() {
        bail!(
            "no ticket database at {} (run `operator run` first, or pass --db)",
            args.db.display()
        );
    }
    let mut store = TicketStore::open(&args.db)
        .with_context(|| format!("opening ticket database {}", args.db.display()))?;
    let Some(backend) = diagnosis::backend(args.backend)? else {
        bail!("--backend off diagnoses nothing; pick offline, claude, openai or auto");
    };
    let ticket = store.get(args.id)?;
    let prepared = diagnosis::prepare(&mut store, &ticket)?;
    let d = match diagnosis::run_backend(&backend, &prepared).await {
        Ok(d) => d,
        Err(e) => bail!("{} could not diagnose #{}: {e:#}", backend.name(), args.id),
    };
    store.add_diagnosis(
        args.id,
        &serde_json::to_value(&d)?,
        backend.name(),
        crate::now_ms(),
    )?;
    match args.output {
        Output::Json => print_json(&d),
        Output::Text => {
            let ticket = store.get(args.id)?;
            print!(
                "{}",
                super::tickets::report(
                    &ticket,
                    &d,
                    prepared.incident_lines,
                    super::tickets::color()
                )
            );
            Ok(())
        }
    }
}
