//! `operator`: watches a distributed system through a sandboxed subject plugin, checks its
//! invariants every tick, and keeps tickets for what breaks.
//!
//! Rooms: [`runtime`] (engine, linker, sandbox limits, host imports), [`monitor`] (the
//! tick loop), [`tickets`] (the store), [`settings`] and [`cli`] (the edges).

pub mod bundled;
pub mod cli;
pub mod diagnosis;
pub use operator_model as model;
pub mod monitor;
pub mod runtime;
pub mod settings;
pub use operator_tickets as tickets;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
