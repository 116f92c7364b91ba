//! Support for the host's integration tests: paths of the built guest components, and
//! small real servers (an HTTP responder, a TCP listener that counts connections), real
//! processes (redis-server, the workspace's binaries) and real containers.

pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

pub mod docker;
pub mod processes;
pub mod support;
