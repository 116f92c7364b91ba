//! Node configuration: command-line flags, `RL_*` environment variables and an optional TOML
//! file. Precedence is flag > env > file > built-in default (clap resolves flag over env; the
//! file only fills what neither set).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;

/// What a node does when it cannot use Redis for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Decide locally against an in-memory counter (flagged as degraded).
    FailOpen,
    /// Refuse to decide: 503.
    FailClosed,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::FailOpen => "fail-open",
            Policy::FailClosed => "fail-closed",
        }
    }
}

/// Raw command line / environment. Every field is optional so the TOML file can fill gaps.
#[derive(Debug, Parser)]
#[command(
    name = "ratelimiter",
    version,
    about = "Distributed sliding-window rate limiter node"
)]
pub struct Cli {
    /// Address to listen on (use port 0 for an ephemeral port; the bound address is printed).
    #[arg(long, env = "RL_LISTEN")]
    pub listen: Option<String>,
    /// Redis URL shared by all nodes.
    #[arg(long, env = "RL_REDIS")]
    pub redis: Option<String>,
    /// Unique node id, used in the registry and in responses.
    #[arg(long, env = "RL_NODE_ID")]
    pub node_id: Option<String>,
    /// Behaviour when Redis is unreachable.
    #[arg(long, env = "RL_POLICY", value_enum)]
    pub policy: Option<Policy>,
    /// Enable the fault-injection endpoint POST /v1/chaos.
    #[arg(long, env = "RL_CHAOS", num_args = 0..=1, default_missing_value = "true")]
    pub chaos: Option<bool>,
    /// TOML file with the same settings (snake_case names).
    #[arg(long, env = "RL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Limit used when Redis holds neither the key's limit nor `_default`.
    #[arg(long, env = "RL_DEFAULT_LIMIT")]
    pub default_limit: Option<u64>,
    /// Window used when Redis holds neither the key's limit nor `_default`.
    #[arg(long, env = "RL_DEFAULT_WINDOW_MS")]
    pub default_window_ms: Option<u64>,
    /// Connection and response timeout for Redis calls.
    #[arg(long, env = "RL_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Tokio worker threads (default: one per core).
    #[arg(long, env = "RL_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
}

/// The TOML file: same names as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub redis: Option<String>,
    pub node_id: Option<String>,
    pub policy: Option<Policy>,
    pub chaos: Option<bool>,
    pub default_limit: Option<u64>,
    pub default_window_ms: Option<u64>,
    pub redis_timeout_ms: Option<u64>,
    pub worker_threads: Option<usize>,
}

/// Largest limit or cost accepted: Lua numbers are doubles, exact only up to 2^53.
pub const MAX_LIMIT: u64 = 1_000_000_000_000_000;
/// Longest window accepted (one day).
pub const MAX_WINDOW_MS: u64 = 86_400_000;

/// Fully resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub redis: String,
    pub node_id: String,
    pub policy: Policy,
    pub chaos: bool,
    pub default_limit: u64,
    pub default_window_ms: u64,
    pub redis_timeout: Duration,
    /// None: one per core.
    pub worker_threads: Option<usize>,
}

impl Config {
    pub fn default_limit(&self) -> crate::store::Limit {
        crate::store::Limit {
            limit: self.default_limit,
            window_ms: self.default_window_ms,
        }
    }

    /// Merge flags/env with the optional file and validate.
    pub fn resolve(cli: Cli) -> anyhow::Result<Config> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let node_id = cli
            .node_id
            .or(file.node_id)
            .context("--node-id (or RL_NODE_ID, or node_id in the config file) is required")?;
        if node_id.is_empty() || node_id.len() > 128 {
            bail!("node id must be 1..=128 bytes");
        }
        let cfg = Config {
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            redis: cli
                .redis
                .or(file.redis)
                .unwrap_or_else(|| "redis://127.0.0.1:6379/".into()),
            node_id,
            policy: cli.policy.or(file.policy).unwrap_or(Policy::FailOpen),
            chaos: cli.chaos.or(file.chaos).unwrap_or(false),
            default_limit: cli.default_limit.or(file.default_limit).unwrap_or(100),
            default_window_ms: cli
                .default_window_ms
                .or(file.default_window_ms)
                .unwrap_or(1000),
            redis_timeout: Duration::from_millis(
                cli.redis_timeout_ms
                    .or(file.redis_timeout_ms)
                    .unwrap_or(400),
            ),
            worker_threads: cli.worker_threads.or(file.worker_threads),
        };
        if cfg.worker_threads == Some(0) {
            bail!("worker threads must be > 0");
        }
        if cfg.default_limit > MAX_LIMIT {
            bail!("default limit must be <= {MAX_LIMIT}");
        }
        if cfg.default_window_ms == 0 || cfg.default_window_ms > MAX_WINDOW_MS {
            bail!("default window must be 1..={MAX_WINDOW_MS} ms");
        }
        if cfg.redis_timeout.is_zero() {
            bail!("redis timeout must be > 0");
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_file_fills_gaps() {
        let dir = std::env::temp_dir().join(format!("rl-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "node_id = \"from-file\"\npolicy = \"fail-closed\"\ndefault_limit = 7\nchaos = true\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "ratelimiter",
            "--config",
            path.to_str().unwrap(),
            "--node-id",
            "from-flag",
        ]);
        let cfg = Config::resolve(cli).unwrap();
        assert_eq!(cfg.node_id, "from-flag");
        assert_eq!(cfg.policy, Policy::FailClosed);
        assert_eq!(cfg.default_limit, 7);
        assert_eq!(cfg.default_window_ms, 1000);
        assert!(cfg.chaos);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("nodeid = \"x\"").is_err());
    }

    #[test]
    fn chaos_flag_without_value_means_true() {
        let cli = Cli::parse_from(["ratelimiter", "--node-id", "a", "--chaos"]);
        assert_eq!(cli.chaos, Some(true));
        let cli = Cli::parse_from(["ratelimiter", "--node-id", "a", "--chaos=false"]);
        assert_eq!(cli.chaos, Some(false));
    }
}
