//! The workspace's one test harness, shared by the service's tests (`services/ratelimiter`),
//! the end-to-end tests (`tests/`) and the host's tests (through `operator-tests`):
//!
//! - [`redis_server`]: a real `redis-server` child on a loopback port;
//! - [`ratelimiter`]: real `ratelimiter` nodes and `loadgen`;
//! - [`operator`]: `operator run` with its JSON tick reports;
//! - [`process`]: children killed on drop, signals, the workspace's binaries, output capture;
//! - [`net`]: loopback servers (a JSON responder, a connection counter) and port helpers;
//! - [`http`]: a minimal blocking HTTP/1.1 client;
//! - [`docker`]: real containers from a locally imported busybox image;
//! - [`wait`]: bounded polling.
//!
//! Ports: whatever can bind port 0 does, and the harness reads the bound address back (the
//! loopback servers, and `ratelimiter --listen 127.0.0.1:0`, which prints
//! `listening on ADDR`). `redis-server` cannot listen on TCP port 0, so it is started on a
//! fresh port and started again on another one when its bind fails. A restart on a port
//! remembered from before (a killed node or Redis coming back where its clients expect it)
//! retries until the port is free again.
//!
//! Everything is blocking std code with bounded waits; a failure panics with a message that
//! names what was being waited for, which is how a test reports it.

pub mod docker;
pub mod http;
pub mod net;
pub mod operator;
pub mod process;
pub mod ratelimiter;
pub mod redis_server;
pub mod wait;

pub use net::free_port;
pub use redis_server::Redis;
pub use wait::wait_for;

/// Whether the children's own output should be echoed to the test's stderr (set
/// `RL_TEST_LOGS=1`). It is always captured, so a failure can quote it either way.
pub fn echo_logs() -> bool {
    std::env::var_os("RL_TEST_LOGS").is_some_and(|v| !v.is_empty() && v != "0")
}
