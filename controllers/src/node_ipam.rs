//! The node IPAM controller (kube-controller-manager's range allocator):
//! every Node without `spec.podCIDR` gets the lowest free slice of the
//! cluster CIDR (`spec.podCIDR` and `spec.podCIDRs`), never one that
//! overlaps the service CIDR. `podCIDR` is immutable once set, so a Node
//! that has one keeps it; a deleted Node's slice is freed for the next.
//!
//! [`Cidrs`] is the pure core: the allocator plus which Node holds which
//! slice, rebuilt from the Nodes' recorded CIDRs once the node cache is
//! complete (so a restart never hands a slice out twice), and
//! [`Cidrs::decide`] says what one Node needs. [`run`] feeds a queue of
//! Node names from a reflector; [`reconcile`] patches the Node. When the
//! cluster CIDR is exhausted the Node gets a `CIDRNotAvailable` Warning
//! Event and a `NetworkUnavailable=True` (`NoCIDRAvailable`) condition,
//! and is tried again when a slice is freed and every few seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use knit_ipam::{Cidr, NodeCidrAllocator, NodeCidrConfig, PodCidr};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::ControllersConfig;
use crate::cache;
use crate::events::{self, Note};
use crate::queue::{Key, Queue};

/// The field manager of every write.
pub const MANAGER: &str = "node-ipam-controller.knit";
/// The Event reason and source component on exhaustion, as Kubernetes'.
pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
pub const COMPONENT: &str = "cidrAllocator";
/// The condition set on a Node no slice is left for, and its reason.
pub const NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";
pub const NO_CIDR_AVAILABLE: &str = "NoCIDRAvailable";
/// The reason the condition is cleared with once a slice is assigned.
pub const CIDR_ASSIGNED: &str = "CIDRAssigned";
/// How long a failed reconcile waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How often Nodes still without a slice are tried again.
const RESYNC: Duration = Duration::from_secs(5);

/// What one Node needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: it has its slice (or is gone and held none).
    Keep,
    /// Write this slice into its spec (newly allocated, or allocated before
    /// and not yet seen on the Node).
    Assign(PodCidr),
    /// It is gone and its slice was freed: Nodes waiting may now get it.
    Released(PodCidr),
    /// It needs a slice and none is left.
    Exhausted,
}

/// Why the controller cannot work or a reconcile failed (then retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node CIDR configuration: {0}")]
    Config(#[from] knit_ipam::Error),
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("no pod CIDR is available in the cluster CIDR {0}")]
    Exhausted(Cidr),
}

/// The allocator and which Node holds which slice.
#[derive(Debug, Clone)]
pub struct Cidrs {
    allocator: NodeCidrAllocator,
    held: HashMap<String, PodCidr>,
}

/// A Node's recorded slice, if it has a valid one.
pub fn recorded(node: &Node) -> Option<PodCidr> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .as_deref()
        .or_else(|| spec.pod_cidrs.as_ref()?.first().map(String::as_str))
        .filter(|c| !c.is_empty())?
        .parse()
        .ok()
}

impl Cidrs {
    /// The state recorded on `nodes` (in name order, so of two Nodes claiming
    /// one slice the first keeps it), with a warning per slice that could not
    /// be taken as-is (claimed twice, outside the cluster CIDR, overlapping
    /// the service CIDR).
    pub fn from_nodes(
        config: NodeCidrConfig,
        nodes: &[Arc<Node>],
    ) -> Result<(Self, Vec<String>), Error> {
        let mut cidrs = Self {
            allocator: NodeCidrAllocator::new(config)?,
            held: HashMap::new(),
        };
        let mut sorted: Vec<&Arc<Node>> = nodes.iter().collect();
        sorted.sort_by_key(|n| n.name_any());
        let mut warnings = Vec::new();
        for node in sorted {
            if let Some(cidr) = recorded(node)
                && let Err(warning) = cidrs.take(&node.name_any(), cidr)
            {
                warnings.push(warning);
            }
        }
        Ok((cidrs, warnings))
    }

    /// Records that `name` holds `cidr`, unless it cannot.
    fn take(&mut self, name: &str, cidr: PodCidr) -> Result<(), String> {
        match self.allocator.occupy(cidr) {
            Ok(true) => {
                self.held.insert(name.to_string(), cidr);
                Ok(())
            }
            Ok(false) => Err(format!(
                "node {name}'s pod CIDR {cidr} is another node's too"
            )),
            Err(err) => Err(format!("node {name}'s pod CIDR {cidr}: {err}")),
        }
    }

    /// The slice `name` holds.
    pub fn held(&self, name: &str) -> Option<PodCidr> {
        self.held.get(name).copied()
    }

    /// How many slices are handed out.
    pub fn used_count(&self) -> usize {
        self.allocator.used_count()
    }

    /// What the Node called `name` needs, `node` being what the cache holds
    /// for it (`None`: gone), updating the state as if it were done.
    pub fn decide(&mut self, name: &str, node: Option<&Node>) -> Decision {
        let held = self.held(name);
        match (node, held) {
            (None, None) => Decision::Keep,
            (None, Some(cidr)) => {
                self.held.remove(name);
                let _ = self.allocator.release(cidr);
                Decision::Released(cidr)
            }
            (Some(node), held) => match (recorded(node), held) {
                (Some(cidr), Some(h)) if cidr == h => Decision::Keep,
                (Some(cidr), held) => {
                    // Set by someone else (or changed): follow the Node.
                    if let Some(h) = held {
                        self.held.remove(name);
                        let _ = self.allocator.release(h);
                    }
                    if let Err(warning) = self.take(name, cidr) {
                        tracing::warn!("{warning}");
                    }
                    Decision::Keep
                }
                (None, Some(h)) => Decision::Assign(h),
                (None, None) => match self.allocator.allocate() {
                    Ok(cidr) => {
                        self.held.insert(name.to_string(), cidr);
                        Decision::Assign(cidr)
                    }
                    Err(_) => Decision::Exhausted,
                },
            },
        }
    }
}

/// What the reconciler shares.
pub struct Context {
    pub client: Client,
    pub nodes: Store<Node>,
    pub cidrs: Mutex<Cidrs>,
    pub cluster: Cidr,
}

fn node_ref(node: &Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.name_any()),
        uid: node.uid(),
        ..ObjectReference::default()
    }
}

/// The Node's `NetworkUnavailable` condition's reason, if it has one.
fn unavailable_reason(node: &Node) -> Option<(String, Option<String>)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == NETWORK_UNAVAILABLE)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn set_unavailable(
    api: &Api<Node>,
    name: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string();
    let patch = json!({"status": {"conditions": [{
        "type": NETWORK_UNAVAILABLE, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now, "lastHeartbeatTime": now,
    }]}});
    api.patch_status(
        name,
        &PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Strategic(patch),
    )
    .await?;
    Ok(())
}

/// Makes the Node at `key` hold its slice; `Ok(true)` when a slice was
/// freed (Nodes waiting for one should be tried again).
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<bool, Error> {
    let name = &key.1;
    let node = ctx.nodes.get(&ObjectRef::new(name));
    let decision = ctx
        .cidrs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .decide(name, node.as_deref());
    let api: Api<Node> = Api::all(ctx.client.clone());
    match (decision, node) {
        (Decision::Released(cidr), _) => {
            tracing::info!(node = %name, %cidr, "released the pod CIDR of a deleted node");
            Ok(true)
        }
        (Decision::Assign(cidr), Some(node)) => {
            let patch =
                json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
            api.patch(
                name,
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(patch),
            )
            .await?;
            tracing::info!(node = %name, %cidr, "assigned a pod CIDR");
            if unavailable_reason(&node)
                .is_some_and(|(s, r)| s == "True" && r.as_deref() == Some(NO_CIDR_AVAILABLE))
            {
                let message = format!("pod CIDR {cidr} assigned");
                set_unavailable(&api, name, "False", CIDR_ASSIGNED, &message).await?;
            }
            Ok(false)
        }
        (Decision::Exhausted, Some(node)) => {
            let message = format!(
                "no pod CIDR is available in the cluster CIDR {} for node {name}",
                ctx.cluster
            );
            // Said once per exhaustion, not on every retry.
            let said = unavailable_reason(&node)
                .is_some_and(|(s, r)| s == "True" && r.as_deref() == Some(NO_CIDR_AVAILABLE));
            if !said {
                let note = Note {
                    type_: "Warning",
                    reason: CIDR_NOT_AVAILABLE,
                    message: message.clone(),
                    component: COMPONENT,
                };
                events::record(&ctx.client, node_ref(&node), &note).await?;
                set_unavailable(&api, name, "True", NO_CIDR_AVAILABLE, &message).await?;
            }
            Err(Error::Exhausted(ctx.cluster))
        }
        _ => Ok(false),
    }
}

fn node_key(node: &Node) -> Key {
    (String::new(), node.name_any())
}

/// Runs the controller until dropped: reflects Nodes, rebuilds the
/// allocator from them once the cache is complete, then reconciles each
/// Node an event concerns. A configuration the allocator refuses is logged
/// and the controller does not run.
pub async fn run(client: Client, config: ControllersConfig) {
    if let Err(err) = NodeCidrAllocator::new(config.node_cidrs()) {
        tracing::error!(error = %err, "node IPAM is not running");
        return;
    }
    let queue = Queue::default();
    let (nodes, events) = cache::reflect::<Node>(&client);
    // Deletions come through too (touched_objects yields deleted objects).
    let feed_queue = queue.clone();
    let feed = events.for_each(move |event| {
        if let Ok(node) = event {
            feed_queue.add(node_key(&node));
        }
        futures::future::ready(())
    });

    let work = async {
        let _ = nodes.wait_until_ready().await;
        let (cidrs, warnings) = match Cidrs::from_nodes(config.node_cidrs(), &nodes.state()) {
            Ok(rebuilt) => rebuilt,
            Err(err) => {
                tracing::error!(error = %err, "node IPAM is not running");
                return futures::future::pending().await;
            }
        };
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        let ctx = Context {
            client,
            nodes: nodes.clone(),
            cidrs: Mutex::new(cidrs),
            cluster: config.cluster_cidr,
        };
        let waiting = || {
            for node in nodes.state() {
                if recorded(&node).is_none() {
                    queue.add(node_key(&node));
                }
            }
        };
        // Everything the cache held before the rebuild.
        for node in nodes.state() {
            queue.add(node_key(&node));
        }
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            let key = tokio::select! {
                key = queue.next() => key,
                _ = resync.tick() => { waiting(); continue; }
            };
            match reconcile(&key, &ctx).await {
                Ok(true) => waiting(),
                Ok(false) => {}
                Err(Error::Exhausted(_)) => {}
                Err(err) => {
                    tracing::warn!(node = %key.1, error = %err, "node IPAM reconcile failed; retrying");
                    queue.add_after(key, RETRY);
                }
            }
        }
    };
    tokio::select! {
        () = feed => {}
        () = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn node(name: &str, cidr: Option<&str>) -> Arc<Node> {
        let mut node = json!({"metadata": {"name": name}, "spec": {}});
        if let Some(cidr) = cidr {
            node["spec"] = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
        }
        Arc::new(serde_json::from_value(node).unwrap())
    }

    fn empty() -> Cidrs {
        Cidrs::from_nodes(NodeCidrConfig::default(), &[]).unwrap().0
    }

    fn assigned(decision: Decision) -> PodCidr {
        match decision {
            Decision::Assign(cidr) => cidr,
            other => panic!("expected an assignment, got {other:?}"),
        }
    }

    #[test]
    fn nodes_get_the_lowest_free_slices_in_order() {
        let mut cidrs = empty();
        let got: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|n| assigned(cidrs.decide(n, Some(&node(n, None)))).to_string())
            .collect();
        assert_eq!(got, ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]);
        // Until the Node shows it, the same slice is asked for again.
        assert_eq!(
            cidrs.decide("a", Some(&node("a", None))),
            Decision::Assign("10.0.1.0/24".parse().unwrap())
        );
        assert_eq!(
            cidrs.decide("a", Some(&node("a", Some("10.0.1.0/24")))),
            Decision::Keep
        );
    }

    #[test]
    fn every_slice_is_unique_inside_the_cluster_cidr_and_clear_of_services() {
        let config = NodeCidrConfig::default();
        let mut cidrs = empty();
        let mut seen = HashSet::new();
        let mut count = 0;
        loop {
            let name = format!("node-{count}");
            match cidrs.decide(&name, Some(&node(&name, None))) {
                Decision::Assign(cidr) => {
                    assert!(seen.insert(cidr), "{cidr} handed out twice");
                    assert!(config.cluster.overlaps(&cidr.cidr()));
                    assert_eq!(cidr.cidr().prefix_len(), 24);
                    assert!(!config.service.unwrap().overlaps(&cidr.cidr()), "{cidr}");
                    count += 1;
                }
                Decision::Exhausted => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        // A /14 has 1024 /24s; the /20 of services takes 16 of them.
        assert_eq!(count, 1024 - 16);
    }

    #[test]
    fn a_rebuild_keeps_recorded_slices_and_never_hands_them_out_again() {
        let nodes = [
            node("b", Some("10.0.1.0/24")),
            node("a", Some("10.0.0.0/24")),
            node("dup", Some("10.0.1.0/24")),
            node("stray", Some("192.168.0.0/24")),
        ];
        let (mut cidrs, warnings) = Cidrs::from_nodes(NodeCidrConfig::default(), &nodes).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(cidrs.used_count(), 2);
        assert_eq!(cidrs.held("a"), Some("10.0.0.0/24".parse().unwrap()));
        assert_eq!(cidrs.held("dup"), None);
        assert_eq!(
            assigned(cidrs.decide("c", Some(&node("c", None)))).to_string(),
            "10.0.2.0/24"
        );
    }

    #[test]
    fn a_deleted_nodes_slice_goes_to_the_next_node() {
        let mut cidrs = empty();
        let first = assigned(cidrs.decide("a", Some(&node("a", None))));
        assert_eq!(cidrs.decide("a", None), Decision::Released(first));
        assert_eq!(cidrs.decide("a", None), Decision::Keep);
        assert_eq!(assigned(cidrs.decide("b", Some(&node("b", None)))), first);
    }

    #[test]
    fn exhaustion_waits_for_a_freed_slice() {
        // A /22 in /24s is four slices.
        let config = NodeCidrConfig {
            cluster: "10.8.0.0/22".parse().unwrap(),
            node_mask: 24,
            service: Some(default_service()),
        };
        let (mut cidrs, _) = Cidrs::from_nodes(config, &[]).unwrap();
        for i in 0..4 {
            let name = format!("n{i}");
            assigned(cidrs.decide(&name, Some(&node(&name, None))));
        }
        assert_eq!(
            cidrs.decide("late", Some(&node("late", None))),
            Decision::Exhausted
        );
        let freed = match cidrs.decide("n2", None) {
            Decision::Released(cidr) => cidr,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            assigned(cidrs.decide("late", Some(&node("late", None)))),
            freed
        );
    }

    #[allow(non_snake_case)]
    fn default_service() -> Cidr {
        knit_ipam::DEFAULT_SERVICE_CIDR.parse().unwrap()
    }
}
