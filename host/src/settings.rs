//! Run settings: a TOML config file, overridden by command-line flags.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config file. Every key is optional; flags win over it.
///
/// ```toml
/// subject = "my-subject"         # or plugin = "path/to/plugin.wasm"
/// name = "prod-east"             # the name tickets are filed under
/// interval = "5s"
/// db = "operator.db"
/// allow = ["http://127.0.0.1:9090"]
/// timeout = "10s"
/// memory = "128MiB"
/// resolve_after = 3
/// history = 5
///
/// [settings]                      # handed to the plugin, like --set
/// nodes = ["http://127.0.0.1:7001", "http://127.0.0.1:7002"]
/// ```
///
/// `allow_actions` is refused here: only the `--allow-actions` flag, typed by a person for
/// one command, may let the operator change the subject.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub subject: Option<String>,
    pub plugin: Option<PathBuf>,
    pub name: Option<String>,
    pub interval: Option<String>,
    pub db: Option<PathBuf>,
    #[serde(default)]
    pub allow: Vec<String>,
    pub timeout: Option<String>,
    pub memory: Option<String>,
    pub resolve_after: Option<u32>,
    pub history: Option<usize>,
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is malformed: {message}")]
    Parse { path: String, message: String },
    #[error("{what} `{value}` is not valid: {reason}")]
    Value {
        what: String,
        value: String,
        reason: String,
    },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let parsed: toml::Table = toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if parsed.contains_key("allow_actions") {
            return Err(SettingsError::Parse {
                path: path.display().to_string(),
                message: "`allow_actions` cannot be set in a config file; pass --allow-actions to the one command that should change the subject".into(),
            });
        }
        toml::from_str(&text).map_err(|e| SettingsError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Plugin settings as strings; arrays become comma-separated lists.
    pub fn plugin_settings(&self) -> Result<BTreeMap<String, String>, SettingsError> {
        self.settings
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| match i {
                            toml::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    other => {
                        return Err(SettingsError::Value {
                            what: format!("setting {k}"),
                            value: other.to_string(),
                            reason: "expected a string, number, boolean or list".into(),
                        });
                    }
                };
                Ok((k.clone(), s))
            })
            .collect()
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// Parses a duration like `5s`, `500ms`, `1m`.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration, SettingsError> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| SettingsError::Value {
        what: what.into(),
        value: s.into(),
        reason: format!("{e} (use e.g. 5s, 500ms, 1m)"),
    })?;
    if d.is_zero() {
        return Err(SettingsError::Value {
            what: what.into(),
            value: s.into(),
            reason: "must be greater than zero".into(),
        });
    }
    Ok(d)
}

/// Parses a size like `128MiB`, `64MB`, `1GiB` or plain bytes.
pub fn parse_size(what: &str, s: &str) -> Result<usize, SettingsError> {
    let v: bytesize::ByteSize = s.trim().parse().map_err(|e: String| SettingsError::Value {
        what: what.into(),
        value: s.into(),
        reason: format!("{e} (use e.g. 128MiB)"),
    })?;
    if v.as_u64() < 1024 * 1024 {
        return Err(SettingsError::Value {
            what: what.into(),
            value: s.into(),
            reason: "must be at least 1MiB".into(),
        });
    }
    Ok(v.as_u64() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_names_bad_ones() {
        assert_eq!(
            parse_duration("--interval", "1s").unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            parse_duration("--interval", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        let e = parse_duration("--interval", "soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--interval") && e.contains("soon"), "{e}");
        assert!(parse_duration("--interval", "0s").is_err());
        assert_eq!(parse_size("--memory", "128MiB").unwrap(), 128 << 20);
        assert!(parse_size("--memory", "12 potatoes").is_err());
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert!(parse_key_value("novalue").is_err());
    }

    #[test]
    fn config_file_lists_become_comma_separated() {
        let c: FileConfig = toml::from_str(
            "subject = \"x\"\n[settings]\nnodes = [\"http://a:1\", \"http://b:2\"]\nport = 5\n",
        )
        .unwrap();
        let s = c.plugin_settings().unwrap();
        assert_eq!(s["nodes"], "http://a:1,http://b:2");
        assert_eq!(s["port"], "5");
        assert!(
            toml::from_str::<FileConfig>("bogus = 1").is_err(),
            "unknown keys are refused"
        );
    }
}
