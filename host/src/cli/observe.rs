//! `operator observe`: one observation and its violations, without the ticket database.

use super::args::{GrantArgs, Output, PluginConfig, SourceArgs, file_config};
use super::output::print_json;
use crate::model::{Observation, Violation};
use crate::monitor::{TickStatus, run_plugin_tick};
use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub grants: GrantArgs,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `observe --output json`.
#[derive(Debug, Serialize)]
pub struct Observed<'a> {
    pub observation: &'a Observation,
    pub violations: &'a [Violation],
}

pub async fn observe(args: ObserveArgs) -> Result<()> {
    let file = file_config(&args.grants)?;
    let config = PluginConfig::resolve(&file, &args.source, &args.grants)?;
    let plugin = config.builder().build().await?;
    let status = run_plugin_tick(&plugin, &Default::default()).await;
    let (observation, violations) = match status {
        TickStatus::Observed {
            observation,
            violations,
        } => (observation, violations),
        TickStatus::ObserveFailed(e) => bail!("the plugin could not observe the subject: {e}"),
        TickStatus::PluginFailed(e) => bail!("the plugin failed: {e}"),
    };
    if let Output::Json = args.output {
        return print_json(&Observed {
            observation: observation.as_ref(),
            violations: &violations,
        });
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
    let names: std::collections::BTreeSet<&str> =
        observation.metrics.iter().map(|m| m.name()).collect();
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
