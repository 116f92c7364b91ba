//! The tools both LLM backends offer, defined once and run locally against the context.

use crate::context::{Context, data_block, metadata_json};
use crate::offline;
use crate::record::answer_schema;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const SUBMIT: &str = "submit_diagnosis";

/// One tool: name, description, JSON Schema of its input.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: Value,
}

pub fn definitions() -> Vec<ToolDef> {
    vec![
        ToolDef {
            name: "read_observation",
            description: "Read one whole observation (components with state and attributes, gauge metrics, events, problems): the current one, or the one at a given tick.",
            schema: json!({"type": "object", "properties": {"tick": {"type": "integer", "description": "a tick of the history; omit for the current observation"}}, "additionalProperties": false}),
        },
        ToolDef {
            name: "metric_history",
            description: "One metric's values across the history, per series: gauges as sampled, counters as per-second rates (rate:), histograms as the mean of each interval (mean:). Filter by labels.",
            schema: json!({"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "description": "metric name, e.g. a histogram's base name or a counter's name"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "labels the series must have"}
            }, "additionalProperties": false}),
        },
        ToolDef {
            name: "component_events",
            description: "The latest events and log lines of one component, newest last.",
            schema: json!({"type": "object", "required": ["component"], "properties": {
                "component": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50}
            }, "additionalProperties": false}),
        },
        ToolDef {
            name: "list_catalog",
            description: "The subject's declared invariants, actions (with parameters, risk, whether they mutate) and failure modes (with signals for and against).",
            schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
        },
        ToolDef {
            name: "offline_ranking",
            description: "A second opinion: the deterministic offline reasoner's ranking of the declared failure modes, with the signals it found for and against each.",
            schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
        },
        ToolDef {
            name: SUBMIT,
            description: "Submit the final diagnosis record. Call it exactly once, at the end.",
            schema: answer_schema(),
        },
    ]
}

/// Runs a (non-submit) tool. Returns the content to send back and whether it is an error.
/// Results are cluster data, so they go back as a data block.
pub fn run(ctx: &Context, name: &str, input: &Value) -> (String, bool) {
    let result = match name {
        "read_observation" => {
            let tick = input.get("tick").and_then(Value::as_i64);
            ctx.observation_json(tick)
                .ok_or_else(|| format!("no observation at tick {tick:?}"))
        }
        "metric_history" => match input.get("name").and_then(Value::as_str) {
            None => Err("`name` is required".to_string()),
            Some(n) => {
                let labels: BTreeMap<String, String> = input
                    .get("labels")
                    .and_then(Value::as_object)
                    .map(|o| {
                        o.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(ctx.metric_history(n, &labels))
            }
        },
        "component_events" => match input.get("component").and_then(Value::as_str) {
            None => Err("`component` is required".to_string()),
            Some(c) => {
                let limit = input
                    .get("limit")
                    .and_then(Value::as_u64)
                    .unwrap_or(20)
                    .clamp(1, 50) as usize;
                Ok(ctx.component_events(c, limit))
            }
        },
        "list_catalog" => Ok(metadata_json(ctx.metadata())),
        "offline_ranking" => Ok(offline::ranking_json(ctx)),
        other => Err(format!("unknown tool `{}`", crate::record::clip(other, 60))),
    };
    match result {
        Ok(v) => (data_block(&format!("tool-result {name}"), &v), false),
        Err(e) => (e, true),
    }
}
