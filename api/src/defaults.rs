//! Per-kind defaulting (being written).
