//! Support for the host's integration tests: paths of the built guest components, and
//! small real servers (an HTTP responder, a TCP listener that counts connections).

pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

pub mod processes;
pub mod support;
