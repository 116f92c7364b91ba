//! Diagnosis for the operator (placeholder docs, filled in below).

pub mod context;
pub mod incident;
pub mod offline;
pub mod record;
