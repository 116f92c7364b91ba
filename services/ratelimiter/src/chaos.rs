//! Fault switches that can only be injected from inside a node (enabled with `--chaos`).
//! Kills, pauses and partitions come from outside the process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bound for the injected latency, so a typo cannot wedge a node for hours.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// Requested or current chaos settings. Absent fields mean "off", so `{}` clears everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSettings {
    #[serde(default)]
    pub redis_latency_ms: u64,
    #[serde(default)]
    pub local_only: bool,
}

/// Lock-free chaos state read on every decision.
#[derive(Debug, Default)]
pub struct Chaos {
    latency_ms: AtomicU64,
    local_only: AtomicBool,
}

impl Chaos {
    pub fn set(&self, s: ChaosSettings) {
        self.latency_ms.store(s.redis_latency_ms, Ordering::Relaxed);
        self.local_only.store(s.local_only, Ordering::Relaxed);
    }

    pub fn get(&self) -> ChaosSettings {
        ChaosSettings {
            redis_latency_ms: self.latency_ms.load(Ordering::Relaxed),
            local_only: self.local_only.load(Ordering::Relaxed),
        }
    }

    /// Delay to add before each Redis call on the decision path.
    pub fn redis_latency(&self) -> Option<Duration> {
        match self.latency_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether the node must behave as if cut off from Redis.
    pub fn local_only(&self) -> bool {
        self.local_only.load(Ordering::Relaxed)
    }
}
