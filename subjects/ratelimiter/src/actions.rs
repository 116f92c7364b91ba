//! ACT-01..06, run through the nodes' management API. The host lets these send writes only
//! when the user allowed actions.

use operator_sdk::prelude::*;
use ratelimiter_wire::{Health, Limit, routes};

/// The action ids, for `metadata()` and the failure modes that suggest them.
pub mod id {
    pub const RESET_COUNTER: &str = "ACT-01";
    pub const UPDATE_LIMIT: &str = "ACT-02";
    pub const BLOCK_KEY: &str = "ACT-03";
    pub const UNBLOCK_KEY: &str = "ACT-04";
    pub const DRAIN_NODE: &str = "ACT-05";
    pub const UNDRAIN_NODE: &str = "ACT-06";
}

fn param<'a>(params: &'a [Kv], name: &str) -> Result<&'a str, ActionError> {
    params
        .iter()
        .find(|p| p.key == name)
        .map(|p| p.value.trim())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ActionError::BadParams(format!("missing parameter `{name}`")))
}

fn number(params: &[Kv], name: &str) -> Result<u64, ActionError> {
    let v = param(params, name)?;
    v.parse().map_err(|_| {
        ActionError::BadParams(format!(
            "parameter `{name}` must be a whole number, got `{v}`"
        ))
    })
}

fn nodes() -> Result<Vec<String>, ActionError> {
    let n = config::list("nodes");
    if n.is_empty() {
        return Err(ActionError::BadParams("missing setting `nodes`".into()));
    }
    Ok(n)
}

/// Sends to the first node that answers; key-level changes live in Redis, so any node will do.
fn any_node(method: &str, path: &str, body: Option<Limit>) -> Result<String, ActionError> {
    let mut errors = Vec::new();
    for base in nodes()? {
        let mut req = http::Request::new(method, &http::join(&base, path));
        if let Some(b) = &body {
            req = req.json(b);
        }
        match req.send_ok() {
            Ok(resp) => return Ok(format!("{base}: {}", String::from_utf8_lossy(&resp.body))),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(ActionError::Failed(format!(
        "no node accepted it: {}",
        errors.join("; ")
    )))
}

/// Finds a node's URL from an id, host:port or URL.
fn resolve_node(spec: &str) -> Result<String, ActionError> {
    let nodes = nodes()?;
    let spec = spec.trim_end_matches('/');
    if let Some(u) = nodes
        .iter()
        .find(|u| u.trim_end_matches('/') == spec || crate::observe::node_component_id(u) == spec)
    {
        return Ok(u.clone());
    }
    for u in &nodes {
        if let Ok((_, health)) =
            http::get_json_any_status::<Health>(&http::join(u, routes::HEALTHZ))
            && health.node == spec
        {
            return Ok(u.clone());
        }
    }
    Err(ActionError::BadParams(format!(
        "no configured node matches `{spec}` (nodes: {})",
        nodes.join(", ")
    )))
}

fn key_path(key: &str) -> String {
    http::encode(key)
}

pub fn execute(action: &str, params: &[Kv]) -> Result<String, ActionError> {
    let meta = crate::metadata::metadata();
    let action_id = meta
        .actions
        .iter()
        .find(|a| a.id == action || a.name == action)
        .map(|a| a.id.as_str())
        .ok_or_else(|| ActionError::UnknownAction(action.into()))?;
    match action_id {
        id::RESET_COUNTER => {
            // Every node: Redis counters go once, but each node has its own fallback counts.
            let key = param(params, "key")?;
            let mut done = Vec::new();
            for base in nodes()? {
                let url = http::join(&base, &routes::counter_reset(&key_path(key)));
                match http::Request::new("POST", &url).send_ok() {
                    Ok(r) => done.push(format!("{base}: {}", String::from_utf8_lossy(&r.body))),
                    Err(e) => done.push(format!("{base}: failed: {e}")),
                }
            }
            Ok(done.join("\n"))
        }
        id::UPDATE_LIMIT => {
            let key = param(params, "key")?;
            let body = Limit {
                limit: number(params, "limit")?,
                window_ms: number(params, "window_ms")?,
            };
            any_node("PUT", &routes::limit(&key_path(key)), Some(body))
        }
        id::BLOCK_KEY => any_node(
            "POST",
            &routes::block(&key_path(param(params, "key")?)),
            None,
        ),
        id::UNBLOCK_KEY => any_node(
            "POST",
            &routes::unblock(&key_path(param(params, "key")?)),
            None,
        ),
        id::DRAIN_NODE | id::UNDRAIN_NODE => {
            let url = resolve_node(param(params, "node")?)?;
            let path = if action_id == id::DRAIN_NODE {
                routes::DRAIN
            } else {
                routes::UNDRAIN
            };
            http::Request::new("POST", &http::join(&url, path))
                .send_ok()
                .map(|r| format!("{url}: {}", String::from_utf8_lossy(&r.body)))
                .map_err(|e| ActionError::Failed(e.to_string()))
        }
        other => Err(ActionError::UnknownAction(other.into())),
    }
}
