//! CLI-01: `operator run --subject NAME --help` (and `observe`, `action`) show that
//! subject's settings as the plugin declares them. Clap renders the help before any
//! command runs, so the plugin is loaded first, when both a subject and `--help` are on
//! the command line.

use crate::model::SubjectMetadata;
use crate::runtime::{PluginBuilder, PluginSource};
use std::fmt::Write;

/// The plugin named on a `--help` command line of run, observe or action, if any.
pub fn requested(args: &[String]) -> Option<(String, PluginSource)> {
    let command = args.get(1)?.clone();
    if !matches!(command.as_str(), "run" | "observe" | "action") {
        return None;
    }
    if !args.iter().any(|a| a == "--help" || a == "-h") {
        return None;
    }
    let value = |flag: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{flag}="))
                .map(String::from)
                .or_else(|| (a == flag).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    if let Some(name) = value("--subject") {
        return Some((command, PluginSource::Bundled(name)));
    }
    value("--plugin").map(|p| (command, PluginSource::File(p.into())))
}

/// The settings section appended to the command's help.
pub fn render(meta: &SubjectMetadata) -> String {
    let mut out = format!(
        "Settings of {} {} (--set KEY=VALUE):\n",
        meta.name, meta.version
    );
    if meta.settings.is_empty() {
        out.push_str("  (the plugin declares none; it was built against contract 0.1)\n");
    }
    for s in &meta.settings {
        let mut line = format!("  {:<24} {}", s.name, s.description);
        if s.required {
            line.push_str(" [required]");
        }
        if let Some(d) = &s.default_value {
            let _ = write!(line, " [default: {d}]");
        }
        if s.kind.grants_origins() {
            let _ = write!(line, " [{}: its origin is allowlisted]", s.kind.as_str());
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("  log.<component>          a log source: file:/path or docker:<container>\n");
    out
}

/// Loads the plugin's metadata for help; a plugin that fails to load says why instead.
pub async fn help_for(source: PluginSource) -> String {
    match PluginBuilder::new(source).build().await {
        Ok(p) => render(p.metadata()),
        Err(e) => format!("(cannot list the subject's settings: {e})\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn finds_the_subject_only_with_help() {
        assert!(matches!(
            requested(&a("operator run --subject web --help")),
            Some((c, PluginSource::Bundled(n))) if c == "run" && n == "web"
        ));
        assert!(matches!(
            requested(&a("operator observe --plugin=x.wasm -h")),
            Some((_, PluginSource::File(_)))
        ));
        assert!(requested(&a("operator run --subject web --once")).is_none());
        assert!(requested(&a("operator tickets list --help")).is_none());
    }
}
