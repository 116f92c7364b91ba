//! Host implementations of the imports a subject plugin may call.

pub mod config;
pub mod http;
pub mod log;
pub mod logs;
pub mod redis;

use super::bindings::operator::subject::types;
use super::state::HostState;

impl types::Host for HostState {}

/// The largest body the host hands to a plugin.
pub const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Per-request timeout when the plugin gives none.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
