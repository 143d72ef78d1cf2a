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
//!
//! [`pods`] is the one compact pod cache (one watch) that every controller
//! but the endpoints controller reads when they run together.

mod cache;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod pods;
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
    /// Which controllers run.
    pub enabled: Selection,
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
            enabled: Selection::ALL,
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

/// The controllers by the names `--controllers` takes.
pub const NAMES: [&str; 7] = [
    "deployment",
    "endpoints",
    "garbage-collector",
    "node-ipam",
    "node-lifecycle",
    "replicaset",
    "scheduler",
];

/// A set of controllers, parsed from a list like kube-controller-manager's
/// `--controllers`: `*` is every controller, `name` adds one, `-name`
/// removes one (`*,-scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection(u8);

impl Selection {
    /// Every controller.
    pub const ALL: Selection = Selection((1 << NAMES.len()) - 1);

    /// Whether the controller called `name` runs.
    pub fn has(self, name: &str) -> bool {
        NAMES
            .iter()
            .position(|n| *n == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    /// The names of the controllers that run.
    pub fn names(self) -> Vec<&'static str> {
        NAMES.into_iter().filter(|n| self.has(n)).collect()
    }
}

impl std::str::FromStr for Selection {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut bits = 0u8;
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                bits = Selection::ALL.0;
                continue;
            }
            let (remove, name) = match item.strip_prefix('-') {
                Some(name) => (true, name),
                None => (false, item),
            };
            let Some(i) = NAMES.iter().position(|n| *n == name) else {
                return Err(format!(
                    "unknown controller {name:?}; known: {}",
                    NAMES.join(", ")
                ));
            };
            if remove {
                bits &= !(1 << i);
            } else {
                bits |= 1 << i;
            }
        }
        if bits == 0 {
            return Err(format!(
                "{list:?} selects no controller; known: *, {}",
                NAMES.join(", ")
            ));
        }
        Ok(Selection(bits))
    }
}

/// Runs the selected controllers concurrently until the future is dropped.
/// The ReplicaSet controller, the scheduler, node lifecycle and the
/// garbage collector share one pod cache, fed by one watch.
pub async fn run(client: Client, config: ControllersConfig) {
    let on = |name| config.enabled.has(name);
    let pods = pods::Pods::default();
    let shared = [
        "endpoints",
        "garbage-collector",
        "replicaset",
        "node-lifecycle",
        "scheduler",
    ]
    .into_iter()
    .any(on);
    tokio::join!(
        only(shared, pods.clone().feed(client.clone())),
        only(on("deployment"), deployment::run(client.clone())),
        only(
            on("endpoints"),
            endpoints::run_with(client.clone(), pods.clone())
        ),
        only(
            on("garbage-collector"),
            gc::run_with(client.clone(), pods.clone())
        ),
        only(
            on("replicaset"),
            replicaset::run_with(client.clone(), pods.clone())
        ),
        only(on("node-ipam"), node_ipam::run(client.clone(), config)),
        only(
            on("node-lifecycle"),
            node_lifecycle::run_with(client.clone(), config, pods.clone())
        ),
        only(on("scheduler"), scheduler::run_with(client, pods.clone())),
    );
}

/// Runs `controller` if it is `enabled` (futures do nothing until polled).
async fn only(enabled: bool, controller: impl Future<Output = ()>) {
    if enabled {
        controller.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_read_like_kube_controller_managers_flag() {
        let all: Selection = "*".parse().unwrap();
        assert_eq!(all, Selection::ALL);
        let some: Selection = "*,-scheduler,-node-ipam".parse().unwrap();
        assert!(some.has("endpoints") && !some.has("scheduler") && !some.has("node-ipam"));
        let one: Selection = "endpoints".parse().unwrap();
        assert_eq!(one.names(), ["endpoints"]);
        assert!(
            "endpoint"
                .parse::<Selection>()
                .unwrap_err()
                .contains("unknown controller")
        );
        assert!("*,-endpoints,-deployment,-garbage-collector,-node-ipam,-node-lifecycle,-replicaset,-scheduler"
            .parse::<Selection>()
            .unwrap_err()
            .contains("selects no controller"));
    }
}
