//! knit's controllers: the reconcilers between what users ask for and what
//! the nodes program. Each module owns one reconciler in kube-runtime's
//! shape — a pure `desired(...)` that computes what should exist, a
//! level-triggered `reconcile` that makes the API match it (so a restart is
//! just another reconcile), fed by watchers and reflector caches — and talks
//! to the API server only through the Kubernetes API, whether in-process
//! (`knit server`) or over the network (`knit controllers --kubeconfig`).
//!
//! - [`deployment`]: a ReplicaSet per Deployment template, rolled to by
//!   its strategy, and the Deployment's status.
//! - [`endpoints`]: Endpoints and EndpointSlices for every Service with a
//!   selector, from the pods it selects and their readiness.
//! - [`node_ipam`]: a `spec.podCIDR` slice of the cluster CIDR for every
//!   Node.
//! - [`node_lifecycle`]: `Ready=Unknown` for Nodes whose Lease is stale, and
//!   their pods not ready.
//! - [`replicaset`]: `spec.replicas` pods for every ReplicaSet, from its
//!   template.
//! - [`gc`]: the garbage collector, deleting objects whose owners are gone.
//! - [`scheduler`]: a node for every pod without one, through `binding`.

mod cache;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod node_ipam;
pub mod node_lifecycle;
mod queue;
pub mod replicaset;
pub mod scheduler;

use std::time::Duration;

use knit_ipam::{Cidr, NodeCidrConfig};
use kube::Client;

/// What the controllers are configured with (`knit server` and `knit
/// controllers` flags). [`Default`] is the article's: cluster CIDR
/// `10.0.0.0/14` in `/24` node slices, service CIDR `10.3.240.0/20`, and a
/// node monitor grace period of [`DEFAULT_NODE_MONITOR_GRACE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllersConfig {
    /// The range node pod CIDRs are sliced from.
    pub cluster_cidr: Cidr,
    /// The prefix length of each node's slice.
    pub node_mask: u8,
    /// The ClusterIP range; no node slice overlaps it.
    pub service_cidr: Cidr,
    /// How long a Node's Lease may go unrenewed before its status is
    /// unknown.
    pub node_monitor_grace: Duration,
}

/// The default node monitor grace period.
pub const DEFAULT_NODE_MONITOR_GRACE: Duration = Duration::from_secs(15);

impl Default for ControllersConfig {
    fn default() -> Self {
        let node = NodeCidrConfig::default();
        Self {
            cluster_cidr: node.cluster,
            node_mask: node.node_mask,
            service_cidr: knit_ipam::DEFAULT_SERVICE_CIDR
                .parse()
                .expect("valid default"),
            node_monitor_grace: DEFAULT_NODE_MONITOR_GRACE,
        }
    }
}

impl ControllersConfig {
    /// How node IPAM splits the cluster CIDR.
    pub fn node_cidrs(&self) -> NodeCidrConfig {
        NodeCidrConfig {
            cluster: self.cluster_cidr,
            node_mask: self.node_mask,
            service: Some(self.service_cidr),
        }
    }
}

/// A write's result with "the object is already gone" taken as done: a
/// reconcile that races a delete has nothing left to do.
pub(crate) fn unless_gone<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Runs every controller concurrently until the future is dropped.
pub async fn run(client: Client, config: ControllersConfig) {
    tokio::join!(
        deployment::run(client.clone()),
        endpoints::run(client.clone()),
        gc::run(client.clone()),
        replicaset::run(client.clone()),
        node_ipam::run(client.clone(), config),
        node_lifecycle::run(client.clone(), config),
        scheduler::run(client),
    );
}
