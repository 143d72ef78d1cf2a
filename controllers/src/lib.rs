//! knit's controllers: the reconcilers between what users ask for and what
//! the nodes program. Each module owns one reconciler in kube-runtime's
//! shape — a pure `desired(...)` that computes what should exist, a
//! level-triggered `reconcile` that makes the API match it (so a restart is
//! just another reconcile), fed by watchers and reflector caches — and talks
//! to the API server only through the Kubernetes API, whether in-process
//! (`knit server`) or over the network (`knit controllers --kubeconfig`).
//!
//! - [`endpoints`]: Endpoints and EndpointSlices for every Service with a
//!   selector, from the pods it selects and their readiness.

pub mod endpoints;
mod queue;

use kube::Client;

/// Runs every controller until the future is dropped.
pub async fn run(client: Client) {
    endpoints::run(client).await;
}
