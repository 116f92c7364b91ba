//! `operator plugin`: list the bundled subjects, inspect a plugin, export one.

use super::args::Output;
use super::output::print_json;
use super::subject_help;
use crate::bundled;
use crate::model::{ActionInfo, FailureMode, InvariantInfo, SettingInfo, SubjectMetadata};
use crate::runtime::{PluginBuilder, PluginSource, Runtime, cache, version};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// The subjects bundled into this binary.
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Contract version, settings (and the grants they ask for), invariants, actions and
    /// failure modes of a plugin.
    Inspect {
        /// A bundled subject name or a component file.
        plugin: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Compile a plugin into the compiled-plugin cache, so that the next start loads it
    /// instead of compiling it (`run` does this by itself, in a child process, on a first
    /// start).
    Compile {
        /// A bundled subject name or a component file.
        plugin: String,
    },
    /// Write a bundled subject's component to a file.
    Export {
        name: String,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

/// One row of `plugin list --output json`.
#[derive(Debug, Serialize)]
pub struct BundledRow {
    pub name: &'static str,
    pub bytes: usize,
}

/// `plugin inspect --output json`.
#[derive(Debug, Serialize)]
pub struct Inspection<'a> {
    pub wit_version: &'a str,
    pub host_wit_version: &'static str,
    pub name: &'a str,
    pub version: &'a str,
    pub description: &'a str,
    pub settings: &'a [SettingInfo],
    /// Settings whose values the plugin may reach over the network.
    pub grants: Vec<&'a str>,
    pub invariants: &'a [InvariantInfo],
    pub actions: &'a [ActionInfo],
    pub failure_modes: &'a [FailureMode],
}

pub async fn plugin(cmd: PluginCommand) -> Result<()> {
    match cmd {
        PluginCommand::List { output } => {
            let rows: Vec<BundledRow> = bundled::BUNDLED
                .iter()
                .map(|b| BundledRow {
                    name: b.name,
                    bytes: b.wasm.len(),
                })
                .collect();
            match output {
                Output::Json => print_json(&rows)?,
                Output::Text => {
                    for r in &rows {
                        println!("{:<14} {:>8} KiB", r.name, r.bytes / 1024);
                    }
                }
            }
        }
        PluginCommand::Inspect { plugin, output } => {
            if bundled::find(&plugin).is_none() && !Path::new(&plugin).exists() {
                bail!(
                    "`{plugin}` is neither a bundled subject ({}) nor a file",
                    bundled::names().join(", ")
                );
            }
            let p = PluginBuilder::new(PluginSource::any(&plugin))
                .build()
                .await?;
            let meta = p.metadata();
            match output {
                Output::Json => print_json(&Inspection {
                    wit_version: p.wit_version(),
                    host_wit_version: version::HOST_WIT_VERSION,
                    name: &meta.name,
                    version: &meta.version,
                    description: &meta.description,
                    settings: &meta.settings,
                    grants: meta
                        .settings
                        .iter()
                        .filter(|s| s.kind.grants_origins())
                        .map(|s| s.name.as_str())
                        .collect(),
                    invariants: &meta.invariants,
                    actions: &meta.actions,
                    failure_modes: &meta.failure_modes,
                })?,
                Output::Text => print_metadata(p.wit_version(), meta),
            }
        }
        PluginCommand::Compile { plugin } => {
            if bundled::find(&plugin).is_none() && !Path::new(&plugin).exists() {
                bail!(
                    "`{plugin}` is neither a bundled subject ({}) nor a file",
                    bundled::names().join(", ")
                );
            }
            let runtime = Runtime::shared()?;
            let cache = runtime.cache().with_context(|| {
                format!(
                    "the compiled-plugin cache is off ({}={})",
                    cache::ENV,
                    cache::OFF
                )
            })?;
            let (what, bytes) = PluginSource::any(&plugin).load()?;
            let compiled = runtime.compile(&what, &bytes)?;
            let entry = cache.entry(runtime.engine(), &bytes);
            if !entry.exists() {
                bail!(
                    "compiled {what}, but could not keep it in {} (see --log debug)",
                    cache.dir().display()
                );
            }
            let how = if compiled.from_cache {
                "already cached"
            } else {
                "compiled"
            };
            println!("{what}: {how}: {}", entry.display());
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

/// On a first start, compiles the plugin in a child `operator plugin compile`, which
/// leaves it in the compiled-plugin cache for this process to load: the compiler's code and
/// heap then never become part of a process that runs all day (its RSS after 30 ticks of
/// the bench's live subject: 26 MiB instead of 48). Only when this process is the
/// `operator` binary (see [`super::allow_self_exec`]) and the cache is on; anything that
/// goes wrong just means this process compiles the plugin itself.
pub async fn compile_in_child(source: &PluginSource) {
    if !super::self_exec_allowed() {
        return;
    }
    let Ok(runtime) = Runtime::shared() else {
        return;
    };
    let Some(cache) = runtime.cache() else {
        return;
    };
    let spec = match source {
        PluginSource::Bundled(name) => name.clone(),
        // Absolute, so that the child never takes a file for a bundled name.
        PluginSource::File(path) => match std::path::absolute(path) {
            Ok(p) => p.display().to_string(),
            Err(_) => return,
        },
        PluginSource::Bytes { .. } => return,
    };
    let Ok((_, bytes)) = source.load() else {
        return;
    };
    if cache.entry(runtime.engine(), &bytes).exists() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let status = tokio::process::Command::new(exe)
        .args(["plugin", "compile", &spec])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
    tracing::debug!(plugin = %spec, ?status, "compiled in a child process");
}

fn print_metadata(wit: &str, m: &SubjectMetadata) {
    println!("{} {} (operator:subject@{wit})", m.name, m.version);
    println!("  {}", m.description);
    print!("{}", subject_help::render(m));
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
