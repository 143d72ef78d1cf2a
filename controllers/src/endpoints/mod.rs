//! The endpoints controller: for every Service with a selector, an
//! Endpoints object and EndpointSlices listing the pods it selects — ready
//! ones in `addresses`, the others in `notReadyAddresses` (all in
//! `addresses` with `publishNotReadyAddresses`), target ports resolved per
//! pod (`targetPort: http` is the container port named `http`), slices of
//! at most [`MAX_SLICE_ENDPOINTS`] with `ready`/`serving`/`terminating`,
//! and the `last-change-trigger-time` annotation Kubernetes writes.
//!
//! - [`desired`]: the pure core, what should exist for one Service;
//! - [`index`]: which Services select which pods, kept incrementally (the
//!   pods themselves are the process's shared cache, [`crate::pods`]);
//! - [`sync`]: the loop that watches, plans and writes only what differs.
//!
//! A Service that is gone takes its Endpoints and slices with it.

pub mod desired;
pub mod index;
pub mod sync;

pub use desired::{Desired, desired};
pub use sync::{run, run_with};

/// Endpoints in one EndpointSlice at most, as Kubernetes' default.
pub const MAX_SLICE_ENDPOINTS: usize = 100;
/// The field manager of every write, and the slices' `managed-by` label.
pub const MANAGER: &str = "endpointslice-controller.knit";
/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// When the change an Endpoints object or slice reflects happened: for a
/// readiness change, the pod's Ready transition.
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
