//! Per-kind validation (being written).
