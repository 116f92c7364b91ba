//! Host implementations of the imports a subject plugin may call, for the newest contract
//! version (older versions forward to these, see `bindings`). Each import reads its caps
//! from its own capability in [`super::state::PluginContext`]; all caps are set in
//! [`super::limits::Limits`].

pub mod config;
pub mod http;
pub mod log;
pub mod logs;
pub mod redis;

use super::bindings::latest::operator::subject::types;
use super::state::HostState;

impl types::Host for HostState {}
