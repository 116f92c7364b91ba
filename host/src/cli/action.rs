//! `operator action`: run one of a subject's declared actions. A mutating one needs
//! `--allow-actions`; the runtime checks it against the plugin's own declaration.

use super::args::{GrantArgs, Output, PluginConfig, SourceArgs, file_config};
use super::output::print_json;
use crate::runtime::ActionPermission;
use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Action id or name (see `operator plugin inspect`).
    pub action: String,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// An action parameter, KEY=VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = crate::settings::parse_key_value)]
    pub params: Vec<(String, String)>,
    /// Allow actions that change the subject. Without it only read-only actions run.
    #[arg(long)]
    pub allow_actions: bool,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `action --output json`.
#[derive(Debug, Serialize)]
pub struct ActionResult<'a> {
    pub action: &'a str,
    pub ok: bool,
    pub result: &'a str,
}

pub async fn action(args: ActionArgs) -> Result<()> {
    let file = file_config(&args.grants)?;
    let config = PluginConfig::resolve(&file, &args.source, &args.grants)?;
    // The one place a permission is made: from the flag the user typed.
    let permission = ActionPermission::from_user_flag(args.allow_actions);
    let plugin = config.builder().build().await?;
    let (info, out) = plugin
        .execute(&args.action, &args.params, permission.as_ref())
        .await?;
    match out {
        Ok(message) => {
            match args.output {
                Output::Json => print_json(&ActionResult {
                    action: &info.id,
                    ok: true,
                    result: &message,
                })?,
                Output::Text => println!("{} ({}): {message}", info.id, info.name),
            }
            Ok(())
        }
        Err(failure) => bail!("{} ({}) failed: {failure}", info.id, info.name),
    }
}
