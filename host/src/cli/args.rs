//! Flag groups shared by several commands, and their resolution (config file, then flags)
//! into typed values.

use crate::runtime::{Limits, PluginBuilder, PluginSource};
use crate::settings::{self, FileConfig};
use crate::tickets::Policy;
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where tickets live unless `--db` or the config file says otherwise.
pub const DEFAULT_DB: &str = "operator.db";
/// Tick cadence unless `--interval` or the config file says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
pub struct SourceArgs {
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
    /// The name tickets are filed under [default: the bundled subject's name, or the
    /// plugin file's name with a digest of its content].
    #[arg(long)]
    pub name: Option<String>,
    /// A plugin setting, KEY=VALUE (repeatable). Settings the plugin declares as origins
    /// are allowlisted.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = settings::parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Also allow this origin, scheme://host:port (repeatable).
    #[arg(long = "allow", value_name = "ORIGIN")]
    pub allow: Vec<String>,
    /// Per-call deadline for the plugin [default: 10s].
    #[arg(long)]
    pub timeout: Option<String>,
    /// Memory cap for the whole plugin instance [default: 128MiB].
    #[arg(long)]
    pub memory: Option<String>,
}

/// Everything needed to build a plugin, resolved.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub source: PluginSource,
    pub name: Option<String>,
    pub settings: BTreeMap<String, String>,
    pub allow: Vec<String>,
    pub limits: Limits,
}

impl PluginConfig {
    /// Merges the config file (if any) with the flags; flags win.
    pub fn resolve(file: &FileConfig, source: &SourceArgs, grants: &GrantArgs) -> Result<Self> {
        let subject = source.subject.clone().or_else(|| {
            source
                .plugin
                .is_none()
                .then(|| file.subject.clone())
                .flatten()
        });
        let plugin = source
            .plugin
            .clone()
            .or_else(|| subject.is_none().then(|| file.plugin.clone()).flatten());
        let source = match (subject, plugin) {
            (Some(name), _) => PluginSource::Bundled(name),
            (None, Some(path)) => PluginSource::File(path),
            (None, None) => bail!(
                "no plugin given: pass --subject NAME (one of: {}) or --plugin FILE.wasm",
                crate::bundled::names().join(", ")
            ),
        };
        let mut settings = file.plugin_settings()?;
        settings.extend(grants.set.iter().cloned());
        let mut allow = file.allow.clone();
        allow.extend(grants.allow.iter().cloned());
        let mut limits = Limits::default();
        if let Some(t) = grants.timeout.as_ref().or(file.timeout.as_ref()) {
            limits.deadline = settings::parse_duration("--timeout", t)?;
        }
        if let Some(m) = grants.memory.as_ref().or(file.memory.as_ref()) {
            limits.memory_bytes = settings::parse_size("--memory", m)?;
        }
        Ok(PluginConfig {
            source,
            name: grants.name.clone().or(file.name.clone()),
            settings,
            allow,
            limits,
        })
    }

    pub fn builder(&self) -> PluginBuilder {
        let mut b = PluginBuilder::new(self.source.clone())
            .settings(self.settings.clone())
            .limits(self.limits);
        if let Some(n) = &self.name {
            b = b.name(n.clone());
        }
        for a in &self.allow {
            b = b.allow(a.clone());
        }
        b
    }
}

/// Loads the config file a command names, or an empty one.
pub fn file_config(grants: &GrantArgs) -> Result<FileConfig> {
    Ok(match &grants.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    })
}

/// `operator run`'s own flags.
#[derive(Debug, Clone, Args)]
pub struct RunFlags {
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
    /// Start a fresh plugin instance for every tick instead of keeping one across ticks
    /// (costs more; for comparison, or to rule out state a plugin keeps).
    #[arg(long)]
    pub instance_per_tick: bool,
}

/// `operator run`'s configuration, typed.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub plugin: PluginConfig,
    pub interval: Duration,
    pub once: bool,
    pub db: PathBuf,
    pub policy: Policy,
    pub instance_per_tick: bool,
}

impl RunConfig {
    pub fn resolve(
        file: &FileConfig,
        source: &SourceArgs,
        grants: &GrantArgs,
        flags: &RunFlags,
    ) -> Result<RunConfig> {
        let plugin = PluginConfig::resolve(file, source, grants)?;
        let interval = match flags.interval.as_ref().or(file.interval.as_ref()) {
            Some(i) => settings::parse_duration("--interval", i)?,
            None => DEFAULT_INTERVAL,
        };
        let mut policy = Policy::default();
        if let Some(n) = flags.resolve_after.or(file.resolve_after) {
            if n == 0 {
                bail!("--resolve-after must be at least 1");
            }
            policy.resolve_after = n;
        }
        if let Some(n) = flags.history.or(file.history) {
            policy.history = n.clamp(1, 100);
        }
        Ok(RunConfig {
            plugin,
            interval,
            once: flags.once,
            db: db_path(flags.db.as_ref().or(file.db.as_ref())),
            policy,
            instance_per_tick: flags.instance_per_tick,
        })
    }
}

/// The ticket database: the given path or the default.
pub fn db_path(given: Option<&PathBuf>) -> PathBuf {
    given.cloned().unwrap_or_else(|| PathBuf::from(DEFAULT_DB))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(set: &[(&str, &str)]) -> GrantArgs {
        GrantArgs {
            config: None,
            name: None,
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            allow: vec![],
            timeout: Some("2s".into()),
            memory: None,
        }
    }

    #[test]
    fn flags_win_over_the_file_and_values_are_typed() {
        let file: FileConfig = toml::from_str(
            "subject = \"web\"\ninterval = \"9s\"\ntimeout = \"7s\"\nmemory = \"64MiB\"\ndb = \"f.db\"\n[settings]\nurl = \"http://a:1\"\nn = 3\n",
        )
        .unwrap();
        let source = SourceArgs {
            subject: None,
            plugin: None,
        };
        let flags = RunFlags {
            interval: Some("1s".into()),
            once: false,
            db: None,
            resolve_after: None,
            history: None,
            instance_per_tick: false,
        };
        let c = RunConfig::resolve(&file, &source, &grants(&[("n", "4")]), &flags).unwrap();
        assert!(matches!(&c.plugin.source, PluginSource::Bundled(n) if n == "web"));
        assert_eq!(c.interval, Duration::from_secs(1), "flag wins");
        assert_eq!(
            c.plugin.limits.deadline,
            Duration::from_secs(2),
            "flag wins"
        );
        assert_eq!(c.plugin.limits.memory_bytes, 64 << 20, "file value used");
        assert_eq!(c.db, PathBuf::from("f.db"));
        assert_eq!(c.plugin.settings["n"], "4");
        assert_eq!(c.plugin.settings["url"], "http://a:1");
        let none = FileConfig::default();
        let c = RunConfig::resolve(
            &none,
            &SourceArgs {
                subject: Some("web".into()),
                plugin: None,
            },
            &grants(&[]),
            &RunFlags {
                interval: None,
                once: true,
                db: None,
                resolve_after: None,
                history: None,
                instance_per_tick: false,
            },
        )
        .unwrap();
        assert_eq!(c.db, PathBuf::from(DEFAULT_DB));
        assert_eq!(c.interval, DEFAULT_INTERVAL);
    }
}
