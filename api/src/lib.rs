//! knit's shared API model, with no I/O: the registry of resources knit
//! serves, label and field selectors, per-kind validation and defaulting,
//! the OpenAPI v3 documents of the served kinds, and the Kubernetes
//! `Status` errors every layer returns.

pub mod apply;
pub mod defaults;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod selector;
pub mod status;
pub mod table;
pub mod validation;

pub use status::{ApiError, Cause, Result};
