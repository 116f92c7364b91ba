//! Claude over the Anthropic Messages API: a tool-use loop that ends in a
//! `submit_diagnosis` tool call.

use super::tools::{self, SUBMIT};
use super::{DiagnoseError, RetryPolicy, client, finish, post_json};
use crate::context::Context;
use crate::prompt;
use crate::record::{Diagnosis, RunInfo};
use serde_json::{Value, json};
use std::fmt;
use std::time::{Duration, Instant};

pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
pub const DEFAULT_VERSION: &str = "2023-06-01";
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const KEY_ENV: &str = "ANTHROPIC_API_KEY";

/// Settings of the Claude backend. The key is private, read only from the environment
/// (or given by the host), and never printed: `Debug` redacts it.
#[derive(Clone)]
pub struct ClaudeConfig {
    pub base_url: String,
    api_key: String,
    pub model: String,
    pub anthropic_version: String,
    pub max_tokens: u32,
    /// Requests per diagnosis, at most.
    pub max_steps: usize,
    /// Per-request deadline.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// How many times a rejected or malformed final answer is sent back to the model,
    /// with the reasons, for another try (within `max_steps`).
    pub max_corrections: u32,
}

impl fmt::Debug for ClaudeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaudeConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("anthropic_version", &self.anthropic_version)
            .field("max_tokens", &self.max_tokens)
            .field("max_steps", &self.max_steps)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("max_corrections", &self.max_corrections)
            .finish()
    }
}

impl ClaudeConfig {
    /// Defaults with the key from `ANTHROPIC_API_KEY`.
    pub fn from_env() -> Result<ClaudeConfig, DiagnoseError> {
        match std::env::var(KEY_ENV) {
            Ok(k) if !k.trim().is_empty() => Ok(ClaudeConfig::with_key(k.trim())),
            _ => Err(DiagnoseError::Config(format!("{KEY_ENV} is not set"))),
        }
    }

    /// Defaults with the given key (tests, or a host that read the environment itself).
    pub fn with_key(api_key: impl Into<String>) -> ClaudeConfig {
        ClaudeConfig {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: api_key.into(),
            model: DEFAULT_MODEL.into(),
            anthropic_version: DEFAULT_VERSION.into(),
            max_tokens: 4096,
            max_steps: 8,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            max_corrections: 1,
        }
    }
}

fn tool_list() -> Vec<Value> {
    tools::definitions()
        .into_iter()
        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.schema}))
        .collect()
}

pub(super) async fn diagnose(
    cfg: &ClaudeConfig,
    ctx: &Context,
) -> Result<Diagnosis, DiagnoseError> {
    let started = Instant::now();
    let http = client(cfg.timeout)?;
    let url = format!("{}/v1/messages", cfg.base_url.trim_end_matches('/'));
    // The static prefix (tools, then system: role and subject metadata) is cached; the
    // incident data comes last.
    let system = json!([
        {"type": "text", "text": prompt::system_prompt()},
        {"type": "text", "text": ctx.render_metadata(), "cache_control": {"type": "ephemeral"}}
    ]);
    let mut messages = vec![json!({
        "role": "user",
        "content": [{"type": "text", "text": prompt::task(&ctx.render_data())}]
    })];
    let headers = [
        ("x-api-key", cfg.api_key.as_str()),
        ("anthropic-version", cfg.anthropic_version.as_str()),
        ("content-type", "application/json"),
    ];
    let (mut tokens_in, mut tokens_out) = (0u64, 0u64);
    let mut corrections = 0;
    for step in 0..cfg.max_steps {
        let body = json!({
            "model": cfg.model,
            "max_tokens": cfg.max_tokens,
            "system": system,
            "tools": tool_list(),
            "tool_choice": {"type": "any"},
            "messages": messages,
        });
        let resp = post_json(&http, &url, &headers, &body, cfg.timeout, &cfg.retry).await?;
        let usage = &resp["usage"];
        tokens_in += [
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ]
        .iter()
        .filter_map(|k| usage[*k].as_u64())
        .sum::<u64>();
        tokens_out += usage["output_tokens"].as_u64().unwrap_or(0);
        let stop = resp["stop_reason"].as_str().unwrap_or("");
        let content = resp["content"].as_array().cloned().unwrap_or_default();
        tracing::debug!(step, stop, blocks = content.len(), "claude answered");
        match stop {
            "refusal" => {
                let text: Vec<&str> = content.iter().filter_map(|b| b["text"].as_str()).collect();
                return Err(DiagnoseError::Refusal(crate::record::clip(
                    &text.join(" "),
                    500,
                )));
            }
            "max_tokens" => return Err(DiagnoseError::MaxTokens),
            _ => {}
        }
        if resp["type"].as_str() != Some("message") || resp["content"].as_array().is_none() {
            return Err(DiagnoseError::Malformed {
                reason: "the response is not a message with content".into(),
                raw: crate::record::clip(&resp.to_string(), 2000),
            });
        }
        let uses: Vec<&Value> = content.iter().filter(|b| b["type"] == "tool_use").collect();
        let mut correction = None;
        if let Some(submit) = uses.iter().find(|b| b["name"] == SUBMIT) {
            let run = RunInfo {
                backend: "claude".into(),
                model: resp["model"].as_str().unwrap_or(&cfg.model).to_string(),
                tokens_in,
                tokens_out,
                duration_ms: started.elapsed().as_millis() as u64,
            };
            match finish(&submit["input"], ctx, run) {
                Err(e @ (DiagnoseError::Rejected { .. } | DiagnoseError::Malformed { .. }))
                    if corrections < cfg.max_corrections =>
                {
                    corrections += 1;
                    tracing::info!(step, error = %e, "claude: final answer refused, asking again");
                    correction = Some(e.to_string());
                }
                other => return other,
            }
        }
        messages.push(json!({"role": "assistant", "content": content}));
        if uses.is_empty() {
            messages.push(
                json!({"role": "user", "content": [{"type": "text", "text": prompt::NUDGE}]}),
            );
            continue;
        }
        let results: Vec<Value> = uses
            .iter()
            .map(|u| {
                let name = u["name"].as_str().unwrap_or("");
                let (text, is_error) = match (&correction, name == SUBMIT) {
                    (Some(why), true) => (
                        format!("{why}. Fix these and call submit_diagnosis again."),
                        true,
                    ),
                    _ => tools::run(ctx, name, &u["input"]),
                };
                tracing::debug!(step, tool = name, is_error, "claude tool call");
                let mut r = json!({"type": "tool_result", "tool_use_id": u["id"], "content": text});
                if is_error {
                    r["is_error"] = json!(true);
                }
                r
            })
            .collect();
        messages.push(json!({"role": "user", "content": results}));
    }
    Err(DiagnoseError::StepCap(cfg.max_steps))
}
