//! Diagnosis (being written).
