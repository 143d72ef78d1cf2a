//! knit's shared API model, with no I/O: the registry of resources knit
//! serves, label and field selectors, per-kind validation and defaulting,
//! and the Kubernetes `Status` errors every layer returns.

pub mod apply;
pub mod defaults;
pub mod patch;
pub mod registry;
pub mod selector;
pub mod status;
pub mod validation;

pub use status::{ApiError, Cause, Result};
