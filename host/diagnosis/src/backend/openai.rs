//! Any OpenAI-compatible chat completions server (Ollama, vLLM, the llama.cpp server):
//! the same loop with function tools.

use super::tools::{self, SUBMIT};
use super::{DiagnoseError, RetryPolicy, client, finish, post_json};
use crate::context::Context;
use crate::prompt;
use crate::record::{Diagnosis, RunInfo};
use serde_json::{Value, json};
use std::fmt;
use std::time::{Duration, Instant};

pub const KEY_ENV: &str = "OPENAI_API_KEY";
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:11434/v1";

/// Settings of the OpenAI-compatible backend. `Debug` redacts the key.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// e.g. `http://127.0.0.1:11434/v1`; `/chat/completions` is appended.
    pub base_url: String,
    api_key: Option<String>,
    pub model: String,
    pub max_tokens: u32,
    pub max_steps: usize,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// How many times a rejected or malformed final answer is sent back to the model,
    /// with the reasons, for another try (within `max_steps`).
    pub max_corrections: u32,
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("max_steps", &self.max_steps)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("max_corrections", &self.max_corrections)
            .finish()
    }
}

impl OpenAiConfig {
    /// The given server and model, with the optional bearer key from `OPENAI_API_KEY`.
    pub fn from_env(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiConfig {
        let key = std::env::var(KEY_ENV).ok().filter(|k| !k.trim().is_empty());
        OpenAiConfig::new(base_url, model, key)
    }

    pub fn new(
        base_url: impl Into<String>,
        model: impl Into<String>,
        api_key: Option<String>,
    ) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.into(),
            api_key,
            model: model.into(),
            max_tokens: 4096,
            max_steps: 8,
            timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            max_corrections: 1,
        }
    }
}

fn tool_list() -> Vec<Value> {
    tools::definitions()
        .into_iter()
        .map(|t| {
            json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.schema}})
        })
        .collect()
}

pub(super) async fn diagnose(
    cfg: &OpenAiConfig,
    ctx: &Context,
) -> Result<Diagnosis, DiagnoseError> {
    let started = Instant::now();
    let http = client(cfg.timeout)?;
    let url = format!("{}/chat/completions", cfg.base_url.trim_end_matches('/'));
    let bearer = cfg.api_key.as_ref().map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let mut messages = vec![
        json!({"role": "system", "content": format!("{}\n\n{}", prompt::system_prompt(), ctx.render_metadata())}),
        json!({"role": "user", "content": prompt::task(&ctx.render_data())}),
    ];
    let (mut tokens_in, mut tokens_out) = (0u64, 0u64);
    let mut corrections = 0;
    for step in 0..cfg.max_steps {
        let body = json!({
            "model": cfg.model,
            "max_tokens": cfg.max_tokens,
            "messages": messages,
            "tools": tool_list(),
            "tool_choice": "auto",
        });
        let resp = post_json(&http, &url, &headers, &body, cfg.timeout, &cfg.retry).await?;
        tokens_in += resp["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        tokens_out += resp["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        let choice = &resp["choices"][0];
        let message = &choice["message"];
        if !message.is_object() {
            return Err(DiagnoseError::Malformed {
                reason: "no choices[0].message in the response".into(),
                raw: crate::record::clip(&resp.to_string(), 2000),
            });
        }
        let finish_reason = choice["finish_reason"].as_str().unwrap_or("");
        tracing::debug!(step, finish_reason, "openai-compatible answered");
        if let Some(r) = message["refusal"].as_str() {
            return Err(DiagnoseError::Refusal(crate::record::clip(r, 500)));
        }
        match finish_reason {
            "content_filter" => {
                return Err(DiagnoseError::Refusal(
                    "stopped by the server's content filter".into(),
                ));
            }
            "length" => return Err(DiagnoseError::MaxTokens),
            _ => {}
        }
        let run = || RunInfo {
            backend: "openai".into(),
            model: resp["model"].as_str().unwrap_or(&cfg.model).to_string(),
            tokens_in,
            tokens_out,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let calls = message["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut correction = None;
        if let Some(submit) = calls.iter().find(|c| c["function"]["name"] == SUBMIT) {
            let args = &submit["function"]["arguments"];
            // `arguments` is a JSON string; some servers send the object itself.
            let outcome = match args {
                Value::String(s) => serde_json::from_str(s)
                    .map_err(|e| DiagnoseError::Malformed {
                        reason: format!("submit_diagnosis arguments are not JSON: {e}"),
                        raw: crate::record::clip(s, 8000),
                    })
                    .and_then(|input| finish(&input, ctx, run())),
                other => finish(other, ctx, run()),
            };
            match outcome {
                Err(e @ (DiagnoseError::Rejected { .. } | DiagnoseError::Malformed { .. }))
                    if corrections < cfg.max_corrections =>
                {
                    corrections += 1;
                    tracing::info!(step, error = %e, "openai-compatible: final answer refused, asking again");
                    correction = Some(e.to_string());
                }
                other => return other,
            }
        }
        if calls.is_empty() {
            // Some local models answer in text: accept a bare JSON record.
            if let Some(text) = message["content"].as_str()
                && let Some(v) = json_in(text)
            {
                return finish(&v, ctx, run());
            }
            messages.push(json!({"role": "assistant", "content": message["content"]}));
            messages.push(json!({"role": "user", "content": prompt::NUDGE}));
            continue;
        }
        messages
            .push(json!({"role": "assistant", "content": message["content"], "tool_calls": calls}));
        for c in &calls {
            let name = c["function"]["name"].as_str().unwrap_or("");
            let input: Value = match &c["function"]["arguments"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                other => other.clone(),
            };
            let (text, is_error) = if let (Some(why), true) = (&correction, name == SUBMIT) {
                (
                    format!("{why}. Fix these and call submit_diagnosis again."),
                    true,
                )
            } else if input.is_object() || input.is_null() {
                tools::run(ctx, name, &input)
            } else {
                ("arguments must be a JSON object".to_string(), true)
            };
            tracing::debug!(step, tool = name, is_error, "openai-compatible tool call");
            messages.push(json!({"role": "tool", "tool_call_id": c["id"], "content": text}));
        }
    }
    Err(DiagnoseError::StepCap(cfg.max_steps))
}

/// A JSON object in a text answer (possibly fenced).
fn json_in(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let v: Value = serde_json::from_str(text.get(start..=end)?).ok()?;
    v.get("root_cause").is_some().then_some(v)
}
