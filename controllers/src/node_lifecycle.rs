//! The node lifecycle controller (kube-controller-manager's node lifecycle
//! controller, its health-monitoring part): a Node whose Lease in
//! `kube-node-lease` has not been renewed within the grace period — or that
//! has had no Lease for longer than the grace period since it was created —
//! gets `Ready=Unknown` (`NodeStatusUnknown`) through its status
//! subresource, a `NodeNotReady` Event, and every pod bound to it gets
//! `Ready=False` and `ContainersReady=False` (`NodeNotReady`), so the
//! endpoints controller moves their addresses out of Services' ready
//! endpoints.
//!
//! It never marks anything healthy again: once the Lease is renewed the node
//! agent reports its node and pods, as the kubelet does, and the controller
//! only stops setting `Unknown`.
//!
//! It also taints by condition, as Kubernetes' node lifecycle controller
//! does: a Node whose `Ready` is `Unknown` gets
//! `node.kubernetes.io/unreachable`, one whose `Ready` is `False`
//! `node.kubernetes.io/not-ready`, each with the effects `NoSchedule` and
//! `NoExecute` (the latter stamped with `timeAdded`); they go away when the
//! node is `Ready` again. Pressure and `NetworkUnavailable` conditions give
//! `NoSchedule` taints and a cordoned node `node.kubernetes.io/unschedulable`,
//! as Kubernetes' TaintNodesByCondition does. Then it does the taint eviction controller's
//! work: a pod on a Node with a `NoExecute` taint it does not tolerate is
//! deleted with a `TaintManagerEviction` event; one that tolerates every
//! such taint is deleted once the shortest `tolerationSeconds` among the
//! tolerations it uses has passed since the taints appeared (never, when
//! none of them has `tolerationSeconds`). Pods get 300 s tolerations for
//! both taints when they are created (the API server's
//! DefaultTolerationSeconds defaulting).
//!
//! [`decide`] is the pure core (what one Node's Lease says at a given
//! instant), [`unknown_conditions`], [`pods_to_mark`],
//! [`not_ready_conditions`] and [`desired_taints`] what is written, and
//! [`eviction`] when a pod goes; [`reconcile`] applies them to one Node and
//! [`run`] feeds a queue of Node names from reflectors of Nodes and Leases
//! and the shared [`crate::pods`] cache, requeueing each Node at its next
//! grace or eviction deadline. The cache's node index says whether a Node
//! has pods to mark or evict at all; only then are that Node's pods read
//! whole, with one LIST by `spec.nodeName`, so the work of a Node is in
//! proportion to its own pods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Node, NodeCondition, ObjectReference, Pod, PodCondition, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::ControllersConfig;
use crate::events::{self, Note};
use crate::pods::Pods;
use crate::queue::{Key, Queue};
use crate::scheduler::tolerates;

/// The field manager of every write.
pub const MANAGER: &str = "node-lifecycle-controller.knit";
/// The namespace of the nodes' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The reason and message of a Node's `Ready=Unknown`, as Kubernetes'.
pub const NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
pub const STATUS_UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
/// The reason of pods' `Ready=False` and of the Event on the Node.
pub const NODE_NOT_READY: &str = "NodeNotReady";
/// The Event source component, as Kubernetes'.
pub const COMPONENT: &str = "node-controller";
/// The taint of a Node whose `Ready` is `Unknown`.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The taint of a Node whose `Ready` is `False`.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The reason of the Event on an evicted pod, and its source component, as
/// Kubernetes' taint eviction controller's.
pub const TAINT_MANAGER_EVICTION: &str = "TaintManagerEviction";
pub const EVICTION_COMPONENT: &str = "taint-eviction-controller";
/// How long a failed reconcile waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a reconcile that lost a write race waits.
const CONFLICT_RETRY: Duration = Duration::from_millis(100);
/// Slack after a deadline before the Node is looked at again, so the
/// re-check falls after it.
const SLACK: Duration = Duration::from_millis(20);

/// What one Node's Lease says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The Lease was renewed within the grace period; look again at `recheck`.
    Healthy { recheck: Timestamp },
    /// No Lease yet, but the Node is younger than the grace period; look
    /// again at `recheck`.
    Wait { recheck: Timestamp },
    /// The Lease is stale, or missing for too long: the Node's status is
    /// unknown.
    Unknown,
}

/// Why a reconcile failed (then retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("encoding a patch: {0}")]
    Encode(#[from] serde_json::Error),
}

fn plus(at: Timestamp, grace: Duration) -> Timestamp {
    SignedDuration::try_from(grace)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// When the Lease was last renewed (else acquired, else created).
pub fn renewed(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref();
    spec.and_then(|s| s.renew_time.as_ref().map(|t| t.0))
        .or_else(|| spec.and_then(|s| s.acquire_time.as_ref().map(|t| t.0)))
        .or_else(|| lease.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// What `node`, whose Lease is `lease`, needs at `now` with `grace`.
pub fn decide(node: &Node, lease: Option<&Lease>, now: Timestamp, grace: Duration) -> Decision {
    match lease {
        Some(lease) => match renewed(lease) {
            Some(at) if now <= plus(at, grace) => Decision::Healthy {
                recheck: plus(at, grace),
            },
            _ => Decision::Unknown,
        },
        None => {
            // A Node without a creation time is taken as just created.
            let created = node
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(now, |t| t.0);
            let deadline = plus(created, grace);
            if now <= deadline {
                Decision::Wait { recheck: deadline }
            } else {
                Decision::Unknown
            }
        }
    }
}

/// The Node's conditions with `Ready=Unknown` (`NodeStatusUnknown`), the
/// others kept, or `None` when it already says so.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(ready)
            if ready.status == "Unknown"
                && ready.reason.as_deref() == Some(NODE_STATUS_UNKNOWN) =>
        {
            None
        }
        Some(ready) => {
            if ready.status != "Unknown" {
                ready.last_transition_time = Some(Time(now));
            }
            ready.status = "Unknown".into();
            ready.reason = Some(NODE_STATUS_UNKNOWN.into());
            ready.message = Some(STATUS_UNKNOWN_MESSAGE.into());
            Some(conditions)
        }
        None => {
            conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some(NODE_STATUS_UNKNOWN.into()),
                message: Some(STATUS_UNKNOWN_MESSAGE.into()),
                last_transition_time: Some(Time(now)),
                ..NodeCondition::default()
            });
            Some(conditions)
        }
    }
}

/// Whether `pod` says it (or its containers) is anything but not ready.
fn says_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status != "False"
            })
        })
}

/// The pods bound to `node` that still say they are ready.
pub fn pods_to_mark(node: &str, pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    pods.iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| says_ready(p))
        .cloned()
        .collect()
}

/// The pod's conditions with `Ready` and `ContainersReady` `False`
/// (`NodeNotReady`), the others kept.
pub fn not_ready_conditions(pod: &Pod, now: Timestamp) -> Vec<PodCondition> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in &mut conditions {
        if (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status != "False" {
            c.status = "False".into();
            c.reason = Some(NODE_NOT_READY.into());
            c.message = None;
            c.last_transition_time = Some(Time(now));
        }
    }
    conditions
}

/// The `NoSchedule` taints other conditions call for when `True`, and the
/// one a cordoned Node gets (Kubernetes' TaintNodesByCondition).
const NO_SCHEDULE_CONDITIONS: &[(&str, &str)] = &[
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "node.kubernetes.io/network-unavailable",
    ),
];
pub const UNSCHEDULABLE_TAINT: &str = crate::scheduler::UNSCHEDULABLE_TAINT;

/// Every `(key, effect)` this controller owns: the others are the user's.
fn managed(taint: &Taint) -> bool {
    let key = taint.key.as_str();
    let condition = key == UNREACHABLE_TAINT
        || key == NOT_READY_TAINT
        || key == UNSCHEDULABLE_TAINT
        || NO_SCHEDULE_CONDITIONS.iter().any(|(_, k)| *k == key);
    condition && matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
}

/// The `(key, effect)` taints the Node's conditions and `unschedulable`
/// call for. A Node that has not reported `Ready` yet gets none for it.
fn condition_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let status = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.as_str())
    };
    let mut wanted = Vec::new();
    let lost = match status("Ready") {
        Some("Unknown") => Some(UNREACHABLE_TAINT),
        Some("False") => Some(NOT_READY_TAINT),
        _ => None,
    };
    if let Some(key) = lost {
        wanted.extend([(key, "NoSchedule"), (key, "NoExecute")]);
    }
    for (type_, key) in NO_SCHEDULE_CONDITIONS {
        if status(type_) == Some("True") {
            wanted.push((*key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        wanted.push((UNSCHEDULABLE_TAINT, "NoSchedule"));
    }
    wanted
}

fn taints_of(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The Node's taints with those its conditions call for: `unreachable`
/// (`Ready=Unknown`) or `not-ready` (`Ready=False`) with the effects
/// `NoSchedule` and `NoExecute` (the latter with `timeAdded: now`), a
/// `NoSchedule` taint per pressure or `NetworkUnavailable` condition that
/// is `True`, and `unschedulable` for a cordoned Node. Those no longer
/// called for are removed and every other taint is kept; `None` when
/// nothing changes. Taints already there keep their `timeAdded`, so
/// eviction deadlines do not move.
pub fn desired_taints(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let wanted = condition_taints(node);
    let current = taints_of(node);
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !managed(t)
                || wanted
                    .iter()
                    .any(|(key, effect)| t.key == *key && t.effect == *effect)
        })
        .cloned()
        .collect();
    for (key, effect) in wanted {
        if !taints.iter().any(|t| t.key == key && t.effect == effect) {
            taints.push(Taint {
                key: key.into(),
                value: None,
                effect: effect.into(),
                time_added: (effect == "NoExecute").then_some(Time(now)),
            });
        }
    }
    (taints != current).then_some(taints)
}

/// When a pod on a Node with some `NoExecute` taints goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// It does not tolerate one of them (or only for 0 s): evict it now.
    Now,
    /// It tolerates them until then.
    At(Timestamp),
    /// It tolerates them for good (or there are none).
    Never,
}

/// When `pod` is evicted from a Node with `taints`, as Kubernetes' taint
/// eviction controller decides: now if a `NoExecute` taint is not
/// tolerated; else the shortest `tolerationSeconds` among the tolerations
/// that match one of them (none with seconds: never), counted from when
/// the first of the taints was added (`timeAdded`, else `seen`, when this
/// controller first saw them).
pub fn eviction(taints: &[Taint], pod: &Pod, seen: Timestamp) -> Eviction {
    let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_execute.is_empty() {
        return Eviction::Never;
    }
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut used: Vec<&Toleration> = Vec::new();
    for taint in &no_execute {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Eviction::Now;
        }
        used.extend(matching);
    }
    let Some(seconds) = used.iter().filter_map(|t| t.toleration_seconds).min() else {
        return Eviction::Never;
    };
    if seconds <= 0 {
        return Eviction::Now;
    }
    let since = no_execute
        .iter()
        .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
        .min()
        .map_or(seen, |added| added.min(seen));
    Eviction::At(plus(since, Duration::from_secs(seconds.unsigned_abs())))
}

/// What the reconciler shares.
pub struct Context {
    pub client: Client,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub pods: Pods,
    pub grace: Duration,
    /// When this controller first saw `NoExecute` taints on each Node (for
    /// taints without `timeAdded`); dropped when the Node has none.
    pub no_execute_seen: Mutex<HashMap<String, Timestamp>>,
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name_any()),
        namespace: pod.namespace(),
        uid: pod.uid(),
        ..ObjectReference::default()
    }
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

/// The pods bound to `node`, read whole from the API.
async fn pods_on(client: &Client, node: &str) -> Result<Vec<Arc<Pod>>, Error> {
    let list = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    Ok(list.items.into_iter().map(Arc::new).collect())
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Looks at the Node at `key`: marks it and its pods when its Lease is
/// stale, taints it by its `Ready` condition, and evicts the pods its
/// `NoExecute` taints call for. Returns when it should be looked at again,
/// if ever.
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<Option<Timestamp>, Error> {
    let name = &key.1;
    let Some(cached) = ctx.nodes.get(&ObjectRef::new(name)) else {
        ctx.no_execute_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        return Ok(None);
    };
    let mut node = (*cached).clone();
    let lease = ctx
        .leases
        .get(&ObjectRef::new(name).within(LEASE_NAMESPACE));
    let now = Timestamp::now();
    let api = Api::<Node>::all(ctx.client.clone());
    let mut next = None;
    match decide(&node, lease.as_deref(), now, ctx.grace) {
        Decision::Healthy { recheck } | Decision::Wait { recheck } => next = Some(recheck),
        Decision::Unknown => {
            if let Some(conditions) = unknown_conditions(&node, now) {
                let patch = json!({
                    "metadata": {"resourceVersion": node.resource_version()},
                    "status": {"conditions": serde_json::to_value(conditions)?},
                });
                node = api
                    .patch_status(name, &params(), &Patch::Merge(patch))
                    .await?;
                tracing::info!(node = %name, "node stopped renewing its lease; Ready=Unknown");
                let note = Note {
                    type_: "Normal",
                    reason: NODE_NOT_READY,
                    message: format!("Node {name} status is now: {NODE_NOT_READY}"),
                    component: COMPONENT,
                };
                events::record(&ctx.client, node_ref(&node), &note).await?;
            }
            let to_mark = ctx.pods.read().on_node(name).any(|p| p.says_ready);
            let pods = if to_mark {
                pods_on(&ctx.client, name).await?
            } else {
                Vec::new()
            };
            for pod in pods_to_mark(name, &pods) {
                let namespace = pod.namespace().unwrap_or_default();
                let patch = json!({
                    "metadata": {"resourceVersion": pod.resource_version()},
                    "status": {"conditions": serde_json::to_value(not_ready_conditions(&pod, now))?},
                });
                Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
                    .patch_status(&pod.name_any(), &params(), &Patch::Merge(patch))
                    .await?;
                tracing::info!(node = %name, pod = %pod.name_any(), %namespace, "marked pod not ready");
            }
        }
    }
    if let Some(taints) = desired_taints(&node, now) {
        // A merge patch replaces the whole list; the resourceVersion makes
        // it lose against a concurrent `kubectl taint` instead of undoing it.
        let list = if taints.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::to_value(&taints)?
        };
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": list},
        });
        node = api.patch(name, &params(), &Patch::Merge(patch)).await?;
        tracing::info!(node = %name, taints = ?taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "condition taints updated");
    }
    if let Some(at) = evict(ctx, &node, now).await? {
        next = Some(next.map_or(at, |n: Timestamp| n.min(at)));
    }
    Ok(next)
}

/// Deletes the pods on `node` whose time is up; returns the next deadline.
async fn evict(ctx: &Context, node: &Node, now: Timestamp) -> Result<Option<Timestamp>, Error> {
    let name = node.name_any();
    let taints = taints_of(node);
    let seen = {
        let mut seen = ctx
            .no_execute_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if taints.iter().any(|t| t.effect == "NoExecute") {
            *seen.entry(name.clone()).or_insert(now)
        } else {
            seen.remove(&name);
            return Ok(None);
        }
    };
    let mut next: Option<Timestamp> = None;
    if !ctx.pods.read().on_node(&name).any(|p| !p.deleting) {
        return Ok(None);
    }
    for pod in pods_on(&ctx.client, &name).await? {
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(name.as_str())
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        match eviction(taints, &pod, seen) {
            Eviction::Never => {}
            Eviction::At(at) if at > now => next = Some(next.map_or(at, |n| n.min(at))),
            Eviction::At(_) | Eviction::Now => {
                let namespace = pod.namespace().unwrap_or_default();
                let pod_name = pod.name_any();
                let note = Note {
                    type_: "Normal",
                    reason: TAINT_MANAGER_EVICTION,
                    message: format!("Marking for deletion Pod {namespace}/{pod_name}"),
                    component: EVICTION_COMPONENT,
                };
                events::record(&ctx.client, pod_ref(&pod), &note).await?;
                // Only this pod: a new one under the same name stays.
                let delete = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: pod.uid(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                crate::unless_gone(
                    Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
                        .delete(&pod_name, &delete)
                        .await,
                )?;
                tracing::info!(node = %name, pod = %pod_name, %namespace, "evicted pod for a NoExecute taint");
            }
        }
    }
    Ok(next)
}

fn node_key(name: String) -> Key {
    (String::new(), name)
}

/// Queues `key` again once `at` has passed.
fn requeue_at(queue: &Queue, key: Key, at: Timestamp) {
    let wait = Duration::try_from(Timestamp::now().duration_until(at)).unwrap_or(Duration::ZERO);
    queue.add_after(key, wait + SLACK);
}

/// Reflects `api` into a store, queueing the key `key_of` gives for every
/// touched object.
fn reflect<K>(
    api: Api<K>,
    queue: Queue,
    key_of: fn(&K) -> Option<Key>,
) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let feed = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .for_each(move |event| {
            if let Ok(object) = event
                && let Some(key) = key_of(&object)
            {
                queue.add(key);
            }
            futures::future::ready(())
        });
    (store, feed)
}

/// Runs the controller until dropped, with its own pod watch.
pub async fn run(client: Client, config: ControllersConfig) {
    crate::pods::standalone(client.clone(), |pods| run_with(client, config, pods)).await;
}

/// Runs the controller until dropped: reflects Nodes and their Leases,
/// follows the pods in `pods`, and reconciles each Node an event concerns,
/// again when its grace deadline passes, and after a failure.
pub async fn run_with(client: Client, config: ControllersConfig, pods: Pods) {
    let queue = Queue::default();
    let (nodes, node_feed) = reflect(Api::<Node>::all(client.clone()), queue.clone(), |n| {
        Some(node_key(n.name_any()))
    });
    let (leases, lease_feed) = reflect(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        queue.clone(),
        |l| Some(node_key(l.name_any())),
    );
    // A pod bound to a Node whose status is unknown is marked too.
    let mut changes = pods.subscribe();
    let pod_feed = {
        let queue = queue.clone();
        async move {
            while let Some(change) = changes.recv().await {
                for node in change.sides().filter_map(|p| p.node.as_deref()) {
                    queue.add(node_key(node.to_string()));
                }
            }
        }
    };
    let work = async {
        let _ = nodes.wait_until_ready().await;
        let _ = leases.wait_until_ready().await;
        pods.wait_until_ready().await;
        let ctx = Context {
            client,
            nodes: nodes.clone(),
            leases: leases.clone(),
            pods: pods.clone(),
            grace: config.node_monitor_grace,
            no_execute_seen: Mutex::default(),
        };
        for node in nodes.state() {
            queue.add(node_key(node.name_any()));
        }
        loop {
            let key = queue.next().await;
            match reconcile(&key, &ctx).await {
                Ok(Some(at)) => requeue_at(&queue, key, at),
                Ok(None) => {}
                // The cache was behind a write (say `kubectl uncordon`):
                // the watch brings the new Node; look again shortly.
                Err(Error::Api(kube::Error::Api(status))) if status.code == 409 => {
                    tracing::debug!(node = %key.1, "node changed under the reconcile; retrying");
                    queue.add_after(key, CONFLICT_RETRY);
                }
                Err(err) => {
                    tracing::warn!(node = %key.1, error = %err, "node lifecycle reconcile failed; retrying");
                    queue.add_after(key, RETRY);
                }
            }
        }
    };
    tokio::select! {
        () = node_feed => {}
        () = lease_feed => {}
        () = pod_feed => {}
        () = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(15);

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn node(created: &str, ready: Option<&str>) -> Node {
        let mut node = json!({"metadata": {"name": "node-1", "creationTimestamp": created},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}]}});
        if let Some(ready) = ready {
            node["status"]["conditions"].as_array_mut().unwrap().push(
                json!({"type": "Ready", "status": ready, "reason": "KubeletReady",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}),
            );
        }
        serde_json::from_value(node).unwrap()
    }

    fn lease(renewed: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "node-1", "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": "node-1", "renewTime": renewed},
        }))
        .unwrap()
    }

    fn pod(name: &str, node: &str, ready: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
                "status": {"conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "ContainersReady", "status": ready},
                    {"type": "Ready", "status": ready},
                ]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_fresh_lease_is_healthy_until_its_deadline() {
        let n = node("2026-01-01T00:00:00Z", Some("True"));
        let l = lease("2026-01-01T00:10:00Z");
        assert_eq!(
            decide(&n, Some(&l), at("2026-01-01T00:10:10Z"), GRACE),
            Decision::Healthy {
                recheck: at("2026-01-01T00:10:15Z")
            }
        );
        assert_eq!(
            decide(&n, Some(&l), at("2026-01-01T00:10:15Z"), GRACE),
            Decision::Healthy {
                recheck: at("2026-01-01T00:10:15Z")
            }
        );
    }

    #[test]
    fn a_stale_lease_makes_the_node_unknown() {
        let n = node("2026-01-01T00:00:00Z", Some("True"));
        let l = lease("2026-01-01T00:10:00Z");
        assert_eq!(
            decide(&n, Some(&l), at("2026-01-01T00:10:16Z"), GRACE),
            Decision::Unknown
        );
    }

    #[test]
    fn no_lease_on_a_young_node_waits_for_the_grace_period() {
        let n = node("2026-01-01T00:00:00Z", None);
        assert_eq!(
            decide(&n, None, at("2026-01-01T00:00:05Z"), GRACE),
            Decision::Wait {
                recheck: at("2026-01-01T00:00:15Z")
            }
        );
    }

    #[test]
    fn no_lease_on_an_old_node_makes_it_unknown() {
        let n = node("2026-01-01T00:00:00Z", Some("False"));
        assert_eq!(
            decide(&n, None, at("2026-01-01T00:00:16Z"), GRACE),
            Decision::Unknown
        );
    }

    #[test]
    fn unknown_keeps_other_conditions_and_sets_the_transition_time() {
        let now = at("2026-01-01T01:00:00Z");
        let n = node("2026-01-01T00:00:00Z", Some("True"));
        let conditions = unknown_conditions(&n, now).unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].type_, "MemoryPressure");
        let ready = &conditions[1];
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(NODE_STATUS_UNKNOWN));
        assert_eq!(ready.message.as_deref(), Some(STATUS_UNKNOWN_MESSAGE));
        assert_eq!(ready.last_transition_time, Some(Time(now)));

        // Already said: nothing to write.
        let mut marked = n.clone();
        marked.status.as_mut().unwrap().conditions = Some(conditions);
        assert_eq!(unknown_conditions(&marked, now), None);

        // No Ready condition at all: one is added.
        let bare = node("2026-01-01T00:00:00Z", None);
        let conditions = unknown_conditions(&bare, now).unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[1].status, "Unknown");
    }

    fn with_taints(mut node: Node, taints: serde_json::Value) -> Node {
        node.spec = Some(serde_json::from_value(json!({"taints": taints})).unwrap());
        node
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn the_ready_condition_picks_the_condition_taints() {
        let now = at("2026-01-01T01:00:00Z");
        let user = json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        // Unknown: unreachable, both effects, timeAdded only on NoExecute;
        // the user's taint is kept first.
        let lost = with_taints(node("2026-01-01T00:00:00Z", Some("Unknown")), user.clone());
        let taints = desired_taints(&lost, now).unwrap();
        assert_eq!(
            keys(&taints),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert_eq!(taints[1].time_added, None);
        assert_eq!(taints[2].time_added, Some(Time(now)));
        // Already there: nothing to write, and timeAdded is not moved.
        let mut tainted = lost.clone();
        tainted.spec.as_mut().unwrap().taints = Some(taints.clone());
        assert_eq!(desired_taints(&tainted, at("2026-01-01T02:00:00Z")), None);
        // Unknown turning False swaps unreachable for not-ready.
        let mut not_ready = tainted.clone();
        not_ready
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[1]
            .status = "False".into();
        assert_eq!(
            keys(&desired_taints(&not_ready, now).unwrap()),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );
        // Ready again: only the user's taint is left.
        let mut back = tainted.clone();
        back.status.as_mut().unwrap().conditions.as_mut().unwrap()[1].status = "True".into();
        assert_eq!(
            keys(&desired_taints(&back, now).unwrap()),
            ["dedicated:NoSchedule"]
        );
        // Not reported yet, or Ready and untainted: nothing to do.
        assert_eq!(
            desired_taints(&node("2026-01-01T00:00:00Z", None), now),
            None
        );
        assert_eq!(
            desired_taints(
                &with_taints(node("2026-01-01T00:00:00Z", Some("True")), user),
                now
            ),
            None
        );
    }

    #[test]
    fn pressure_and_cordons_give_no_schedule_taints() {
        let now = at("2026-01-01T01:00:00Z");
        let mut n = node("2026-01-01T00:00:00Z", Some("True"));
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        n.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
        let taints = desired_taints(&n, now).unwrap();
        assert_eq!(
            keys(&taints),
            [
                "node.kubernetes.io/memory-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule"
            ]
        );
        assert!(taints.iter().all(|t| t.time_added.is_none()));
        // Uncordoned, pressure gone: both go, a user's taint on the same key
        // with another effect stays.
        let mut fine = node("2026-01-01T00:00:00Z", Some("True"));
        let mut with = taints.clone();
        with.push(Taint {
            effect: "PreferNoSchedule".into(),
            ..taints[1].clone()
        });
        fine.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            taints: Some(with),
            ..Default::default()
        });
        assert_eq!(
            keys(&desired_taints(&fine, now).unwrap()),
            ["node.kubernetes.io/unschedulable:PreferNoSchedule"]
        );
    }

    fn tolerating(tolerations: serde_json::Value) -> Pod {
        let mut p = (*pod("p", "node-1", "True")).clone();
        p.spec.as_mut().unwrap().tolerations = Some(serde_json::from_value(tolerations).unwrap());
        p
    }

    fn no_execute(key: &str, added: Option<&str>) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: added.map(|a| Time(at(a))),
        }
    }

    #[test]
    fn pods_are_evicted_when_a_no_execute_taint_is_not_tolerated_or_for_too_long() {
        let seen = at("2026-01-01T00:00:30Z");
        let unreachable = no_execute(UNREACHABLE_TAINT, Some("2026-01-01T00:00:00Z"));
        let soft = Taint {
            effect: "NoSchedule".into(),
            ..no_execute("dedicated", None)
        };
        // No NoExecute taint: never.
        assert_eq!(
            eviction(std::slice::from_ref(&soft), &tolerating(json!([])), seen),
            Eviction::Never
        );
        // Not tolerated: now.
        assert_eq!(
            eviction(
                std::slice::from_ref(&unreachable),
                &tolerating(json!([])),
                seen
            ),
            Eviction::Now
        );
        let other = json!([{"key": "other", "operator": "Exists", "effect": "NoExecute"}]);
        assert_eq!(
            eviction(std::slice::from_ref(&unreachable), &tolerating(other), seen),
            Eviction::Now
        );
        // Tolerated for 300 s from timeAdded.
        let default = json!([{"key": UNREACHABLE_TAINT, "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 300}]);
        assert_eq!(
            eviction(
                &[unreachable.clone(), soft],
                &tolerating(default.clone()),
                seen
            ),
            Eviction::At(at("2026-01-01T00:05:00Z"))
        );
        // Without timeAdded, from when it was first seen.
        let unstamped = no_execute(UNREACHABLE_TAINT, None);
        assert_eq!(
            eviction(&[unstamped], &tolerating(default), seen),
            Eviction::At(at("2026-01-01T00:05:30Z"))
        );
        // Forever, and the shortest of the tolerations used wins.
        let forever = json!([{"operator": "Exists"}]);
        assert_eq!(
            eviction(
                std::slice::from_ref(&unreachable),
                &tolerating(forever),
                seen
            ),
            Eviction::Never
        );
        let both = json!([
            {"operator": "Exists"},
            {"key": UNREACHABLE_TAINT, "operator": "Exists", "tolerationSeconds": 10},
        ]);
        assert_eq!(
            eviction(std::slice::from_ref(&unreachable), &tolerating(both), seen),
            Eviction::At(at("2026-01-01T00:00:10Z"))
        );
        // Zero seconds: now. One of two taints untolerated: now.
        let zero =
            json!([{"key": UNREACHABLE_TAINT, "operator": "Exists", "tolerationSeconds": 0}]);
        assert_eq!(
            eviction(std::slice::from_ref(&unreachable), &tolerating(zero), seen),
            Eviction::Now
        );
        let one = json!([{"key": UNREACHABLE_TAINT, "operator": "Exists"}]);
        assert_eq!(
            eviction(
                &[unreachable, no_execute("dedicated", None)],
                &tolerating(one),
                seen
            ),
            Eviction::Now
        );
    }

    #[test]
    fn only_ready_pods_on_the_node_are_marked_not_ready() {
        let pods = vec![
            pod("a", "node-1", "True"),
            pod("b", "node-2", "True"),
            pod("c", "node-1", "False"),
        ];
        let marked = pods_to_mark("node-1", &pods);
        assert_eq!(
            marked.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ["a"]
        );
        let now = at("2026-01-01T01:00:00Z");
        let conditions = not_ready_conditions(&marked[0], now);
        assert_eq!(conditions[0].status, "True", "PodScheduled kept");
        for c in &conditions[1..] {
            assert_eq!(c.status, "False");
            assert_eq!(c.reason.as_deref(), Some(NODE_NOT_READY));
            assert_eq!(c.last_transition_time, Some(Time(now)));
        }
    }
}
