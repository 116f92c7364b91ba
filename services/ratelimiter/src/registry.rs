//! Node registry in Redis: each node writes `rl:node:{id}` every second with a 5 s TTL, so the
//! node list is whatever has heartbeated recently, on the Redis clock.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::node::Node;
use crate::store::StoreError;

pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The JSON stored at `rl:node:{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub addr: String,
    pub mode: String,
    pub last_heartbeat_ms: u64,
    pub started_ms: u64,
    pub policy: String,
}

/// An entry of `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub addr: String,
    pub mode: String,
    pub policy: String,
    pub last_heartbeat_ms: u64,
    pub age_ms: u64,
    pub started_ms: u64,
}

/// Write one heartbeat (skipped while cut off from Redis, as a real partition would).
pub async fn beat(node: &Node) -> Result<(), StoreError> {
    if !node.redis_available() {
        return Ok(());
    }
    let now = node.store.time_ms().await?;
    let started =
        match node
            .started_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => now,
            Err(existing) => existing,
        };
    let record = NodeRecord {
        id: node.cfg.node_id.clone(),
        addr: node.addr.clone(),
        mode: node.mode().as_str().into(),
        last_heartbeat_ms: now,
        started_ms: started,
        policy: node.cfg.policy.as_str().into(),
    };
    let json = serde_json::to_string(&record).map_err(|e| StoreError::Reply(e.to_string()))?;
    node.store.put_node(&node.cfg.node_id, &json).await
}

pub async fn heartbeat_loop(node: Arc<Node>) {
    loop {
        if let Err(e) = beat(&node).await {
            debug!(error = %e, "heartbeat failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = node.heartbeat_now.notified() => {}
        }
    }
}

/// All registered nodes, with heartbeat age on the Redis clock, sorted by id.
pub async fn list(node: &Node) -> Result<Vec<NodeInfo>, StoreError> {
    let entries = node.store.node_entries().await?;
    let now = node.store.time_ms().await?;
    let mut out: Vec<NodeInfo> = entries
        .iter()
        .filter_map(|raw| match serde_json::from_str::<NodeRecord>(raw) {
            Ok(r) => Some(NodeInfo {
                age_ms: now.saturating_sub(r.last_heartbeat_ms),
                id: r.id,
                addr: r.addr,
                mode: r.mode,
                policy: r.policy,
                last_heartbeat_ms: r.last_heartbeat_ms,
                started_ms: r.started_ms,
            }),
            Err(e) => {
                warn!(error = %e, raw, "ignoring malformed registry entry");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}
