//! The scheduler: binds every pod without `spec.nodeName` (not being
//! deleted, not finished) to a node through the pod's `binding`
//! subresource, as kube-scheduler does for the article's cluster.
//!
//! [`choose`] is the pure core. A node is feasible when its `Ready`
//! condition is `True`, it is not `spec.unschedulable` (unless the pod
//! tolerates `node.kubernetes.io/unschedulable`), the pod tolerates each of
//! its `NoSchedule` and `NoExecute` taints, its labels match the pod's
//! `nodeSelector`, and none of the pod's host ports is taken (same port and
//! protocol, same or wildcard host IP) by a pod already on it — checked in
//! that order, the first failure being the node's reason, as
//! kube-scheduler's filter plugins do. Among the feasible nodes the one
//! with the fewest `PreferNoSchedule` taints the pod does not tolerate
//! wins, then the one with the fewest pods of the pod's controller, then
//! the one with the fewest pods, then the first by name. When none is
//! feasible, the reasons make kube's message (`0/3 nodes are available:
//! ... preemption: ...`), which goes to the pod's `PodScheduled=False`
//! (`Unschedulable`) condition and a `FailedScheduling` event.
//!
//! [`run`] reflects Nodes and reads pods from the shared [`crate::pods`]
//! cache, which keeps a pod's whole spec only while it is pending; pending
//! pods are queued on their own changes, all of them on node events and
//! every few seconds. An attempt looks only at the pods bound to the
//! nodes it considers (the cache's node index). Pods bound but not yet
//! seen bound in the cache are counted where they were sent ("assumed", as
//! kube-scheduler's cache does), so a burst spreads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::cache;
use crate::events::{self, Note};
use crate::pods::{self, HostPort, PodSummary, Pods};
use crate::queue::{Key, Queue};

/// The scheduler's name, as Events' source component.
pub const COMPONENT: &str = "default-scheduler";
/// How long a failed bind waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How often pending pods are tried again.
const RESYNC: Duration = Duration::from_secs(5);
/// How long before a pod that keeps failing the same way is told so again.
const RESAY: Duration = Duration::from_secs(300);

/// The field manager of the scheduler's status writes.
pub const MANAGER: &str = "default-scheduler";
/// The taint a cordoned node is treated as having (kube-scheduler's
/// NodeUnschedulable plugin): a pod tolerating it may still go there.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Why a node cannot take a pod, in kube-scheduler's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unfit {
    NotReady,
    Unschedulable,
    /// A `NoSchedule` or `NoExecute` taint the pod does not tolerate.
    Taint,
    Selector,
    HostPorts,
}

impl Unfit {
    fn says(self) -> &'static str {
        match self {
            Unfit::NotReady => "node(s) were not ready",
            Unfit::Unschedulable => "node(s) were unschedulable",
            // Since Kubernetes 1.34.2 the message no longer names the taint
            // (keys and values may be sensitive); the scheduler logs it.
            Unfit::Taint => "node(s) had untolerated taint(s)",
            Unfit::Selector => "node(s) didn't match Pod's node affinity/selector",
            Unfit::HostPorts => "node(s) didn't have free ports for the requested pod ports",
        }
    }

    /// What kube's default preemption says about such a node: evicting
    /// pods cannot fix anything but a port conflict, and knit does not
    /// preempt (every pod has priority 0), so there never is a victim.
    fn preemption(self) -> &'static str {
        match self {
            Unfit::HostPorts => "No preemption victims found for incoming pod",
            _ => "Preemption is not helpful for scheduling",
        }
    }
}

/// No node can take the pod: how many there are and why each cannot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", message(*.nodes, .reasons, *.never_preempts))]
pub struct NoFit {
    pub nodes: usize,
    pub reasons: BTreeMap<Unfit, usize>,
    /// The pod's `preemptionPolicy` is `Never`.
    pub never_preempts: bool,
}

/// kube's histogram: the "COUNT reason" strings, sorted, joined.
fn histogram(counts: impl Iterator<Item = (usize, &'static str)>) -> String {
    let mut merged: BTreeMap<&str, usize> = BTreeMap::new();
    for (count, reason) in counts {
        *merged.entry(reason).or_default() += count;
    }
    let mut parts: Vec<String> = merged
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    parts.sort();
    parts.join(", ")
}

fn message(nodes: usize, reasons: &BTreeMap<Unfit, usize>, never_preempts: bool) -> String {
    if nodes == 0 {
        return "0/0 nodes are available: no nodes available to schedule pods.".into();
    }
    let filters = histogram(reasons.iter().map(|(unfit, count)| (*count, unfit.says())));
    let preemption = if never_preempts {
        "not eligible due to preemptionPolicy=Never.".to_string()
    } else {
        let why = histogram(
            reasons
                .iter()
                .map(|(unfit, count)| (*count, unfit.preemption())),
        );
        format!("0/{nodes} nodes are available: {why}.")
    };
    format!("0/{nodes} nodes are available: {filters}. preemption: {preemption}")
}

/// Whether `toleration` tolerates `taint` (Kubernetes' `ToleratesTaint`):
/// the effect matches or is left empty, the key matches or is left empty
/// (an empty key only with `Exists`, as validation demands), and the value
/// is equal (`Equal`, the default) or anything (`Exists`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

fn tolerations_of(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

fn taints_of(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// How many of the node's `PreferNoSchedule` taints the pod does not
/// tolerate (kube's TaintToleration score, fewer is better).
fn intolerable_preferences(pod: &Pod, node: &Node) -> usize {
    taints_of(node)
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(tolerations_of(pod), t))
        .count()
}

/// Whether the pod is finished (its node no longer counts it).
fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Whether the scheduler should place `pod`.
pub fn pending(pod: &Pod) -> bool {
    node_name(pod).is_none() && pod.metadata.deletion_timestamp.is_none() && !finished(pod)
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn wildcard(ip: &str) -> bool {
    matches!(ip, "" | "0.0.0.0" | "::")
}

/// Whether two host ports collide: same port and protocol, and the same
/// host IP or either bound to all addresses.
fn collide(a: &HostPort, b: &HostPort) -> bool {
    a.port == b.port
        && a.protocol == b.protocol
        && (a.ip == b.ip || wildcard(&a.ip) || wildcard(&b.ip))
}

/// The pod's controller (first owner reference with `controller: true`).
fn controller_of(pod: &Pod) -> Option<(&str, &str, &str)> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str(), o.uid.as_str()))
}

fn unfit(pod: &Pod, wanted: &[HostPort], node: &Node, on_node: &[&PodSummary]) -> Option<Unfit> {
    if !ready(node) {
        return Some(Unfit::NotReady);
    }
    let tolerations = tolerations_of(pod);
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        let cordon = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if !tolerated(tolerations, &cordon) {
            return Some(Unfit::Unschedulable);
        }
    }
    if taints_of(node).iter().any(|t| {
        matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerated(tolerations, t)
    }) {
        return Some(Unfit::Taint);
    }
    let labels = node.labels();
    let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
    if !selector
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return Some(Unfit::Selector);
    }
    if !wanted.is_empty() {
        let mut taken = on_node.iter().flat_map(|p| p.host_ports.iter());
        if taken.any(|t| wanted.iter().any(|w| collide(w, t))) {
            return Some(Unfit::HostPorts);
        }
    }
    None
}

/// The node `pod` should go to, given every node and the pods bound to
/// them (those with a `nodeName` count on their node, finished ones do
/// not).
pub fn choose(pod: &Pod, nodes: &[Arc<Node>], pods: &[Arc<PodSummary>]) -> Result<String, NoFit> {
    let (name, namespace) = (pod.name_any(), pod.namespace().unwrap_or_default());
    let mut by_node: HashMap<&str, Vec<&PodSummary>> = HashMap::new();
    for other in pods {
        if other.finished || (*other.name == *name && *other.namespace == *namespace) {
            continue;
        }
        if let Some(node) = other.node.as_deref() {
            by_node.entry(node).or_default().push(other);
        }
    }
    let wanted = pods::host_ports(pod);
    let owner = controller_of(pod);
    let mut reasons = BTreeMap::new();
    let mut best: Option<((usize, usize, usize, String), String)> = None;
    for node in nodes {
        let name = node.name_any();
        let on_node = by_node.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(why) = unfit(pod, &wanted, node, on_node) {
            *reasons.entry(why).or_insert(0) += 1;
            continue;
        }
        let siblings = match &owner {
            Some((kind, name, uid)) => on_node
                .iter()
                .filter(|p| {
                    p.controller()
                        .is_some_and(|o| (&*o.kind, &*o.name, &*o.uid) == (*kind, *name, *uid))
                })
                .count(),
            None => 0,
        };
        let score = (
            intolerable_preferences(pod, node),
            siblings,
            on_node.len(),
            name.clone(),
        );
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((score, name));
        }
    }
    best.map(|(_, name)| name).ok_or(NoFit {
        nodes: nodes.len(),
        reasons,
        never_preempts: pod
            .spec
            .as_ref()
            .and_then(|s| s.preemption_policy.as_deref())
            == Some("Never"),
    })
}

/// Why a scheduling attempt failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    NoFit(#[from] NoFit),
}

/// What the scheduler shares.
pub struct Context {
    pub client: Client,
    pub nodes: Store<Node>,
    pub pods: Pods,
    /// Pods bound but not yet seen bound in the cache, and their node.
    pub assumed: Mutex<HashMap<Key, String>>,
    /// The last FailedScheduling message per pod and when it was said, so
    /// a retry that fails the same way says it again (one more `count` on
    /// the Event) only after [`RESAY`], as kube-scheduler retries
    /// unschedulable pods every five minutes.
    pub failures: Mutex<HashMap<Key, (String, Instant)>>,
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

impl Context {
    /// The pods bound to `nodes`, with the assumed bindings applied;
    /// assumptions the cache has caught up with (bound, or gone) are
    /// dropped.
    fn pods_view(&self, nodes: &[Arc<Node>]) -> Vec<Arc<PodSummary>> {
        let mut assumed = self.assumed.lock().unwrap_or_else(|e| e.into_inner());
        let pods = self.pods.read();
        let mut view: Vec<Arc<PodSummary>> = nodes
            .iter()
            .flat_map(|node| pods.on_node(&node.name_any()))
            .cloned()
            .collect();
        assumed.retain(|(namespace, name), node| {
            let Some(pod) = pods.get(namespace, name) else {
                return false;
            };
            if pod.node.is_some() {
                return false;
            }
            let mut bound = (**pod).clone();
            bound.node = Some(node.as_str().into());
            bound.pending = None;
            view.push(Arc::new(bound));
            true
        });
        view
    }
}

/// The pod's `PodScheduled=False` (`Unschedulable`) condition saying
/// `message`, or `None` when it already says exactly that. The transition
/// time moves only when the status does, as kube's condition updates do.
pub fn unschedulable_condition(pod: &Pod, message: &str, now: Timestamp) -> Option<PodCondition> {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    if let Some(c) = current
        && c.status == "False"
        && c.reason.as_deref() == Some("Unschedulable")
        && c.message.as_deref() == Some(message)
    {
        return None;
    }
    let since = match current {
        Some(c) if c.status == "False" => c.last_transition_time.clone(),
        _ => None,
    };
    Some(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.into()),
        last_transition_time: Some(since.unwrap_or(Time(now))),
        ..PodCondition::default()
    })
}

/// Places the pod at `key` if it is pending.
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<(), Error> {
    let (namespace, name) = key;
    // Only a pending pod keeps its whole spec in the cache.
    let Some(pod) = ctx
        .pods
        .get(namespace, name)
        .and_then(|p| p.pending.clone())
    else {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        return Ok(());
    };
    let nodes = ctx.nodes.state();
    let pods = ctx.pods_view(&nodes);
    let assumed = ctx
        .assumed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(key);
    if !pending(&pod) || assumed {
        return Ok(());
    }
    let node = match choose(&pod, &nodes, &pods) {
        Ok(node) => node,
        Err(no_fit) => {
            let message = no_fit.to_string();
            if let Some(condition) = unschedulable_condition(&pod, &message, Timestamp::now()) {
                let patch = json!({"status": {"conditions": [condition]}});
                let params = PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..PatchParams::default()
                };
                let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
                crate::unless_gone(
                    api.patch_status(name, &params, &Patch::Strategic(patch))
                        .await,
                )?;
            }
            let said = ctx
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(key)
                .cloned();
            let again = match said {
                Some((said, at)) => said != message || at.elapsed() >= RESAY,
                None => true,
            };
            if again {
                ctx.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone(), (message.clone(), Instant::now()));
                let note = Note {
                    type_: "Warning",
                    reason: "FailedScheduling",
                    message,
                    component: COMPONENT,
                };
                if let Err(err) = events::record(&ctx.client, pod_ref(&pod), &note).await {
                    ctx.failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(key);
                    return Err(err.into());
                }
            }
            return Err(no_fit.into());
        }
    };
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {}
        // Bound already (by another scheduler) or gone: nothing to do.
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    }
    ctx.assumed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone(), node.clone());
    ctx.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(key);
    tracing::info!(pod = %format!("{namespace}/{name}"), %node, "scheduled");
    let note = Note {
        type_: "Normal",
        reason: "Scheduled",
        message: format!("Successfully assigned {namespace}/{name} to {node}"),
        component: COMPONENT,
    };
    if let Err(err) = events::record(&ctx.client, pod_ref(&pod), &note).await {
        tracing::warn!(error = %err, "recording the Scheduled event");
    }
    Ok(())
}

/// Runs the scheduler until dropped, with its own pod watch.
pub async fn run(client: Client) {
    crate::pods::standalone(client.clone(), |pods| run_with(client, pods)).await;
}

/// Runs the scheduler until dropped, reading pods from `pods`.
pub async fn run_with(client: Client, pods: Pods) {
    let queue = Queue::default();
    let (nodes, node_events) = cache::reflect::<Node>(&client);

    let all_pending = {
        let pods = pods.clone();
        let queue = queue.clone();
        move || {
            let pending: Vec<Key> = pods
                .read()
                .all()
                .filter(|p| p.pending.is_some())
                .map(|p| p.key())
                .collect();
            for key in pending {
                queue.add(key);
            }
        }
    };
    let on_node = all_pending.clone();
    let feed_nodes = node_events.for_each(move |event| {
        if event.is_ok() {
            on_node();
        }
        futures::future::ready(())
    });
    let mut changes = pods.subscribe();
    let feed_pods = {
        let queue = queue.clone();
        async move {
            while let Some(change) = changes.recv().await {
                if let Some(pod) = change.after
                    && pod.pending.is_some()
                {
                    queue.add(pod.key());
                }
            }
        }
    };

    let ctx = Context {
        client,
        nodes: nodes.clone(),
        pods: pods.clone(),
        assumed: Mutex::default(),
        failures: Mutex::default(),
    };
    let work = async {
        let _ = nodes.wait_until_ready().await;
        pods.wait_until_ready().await;
        all_pending();
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            let key = tokio::select! {
                key = queue.next() => key,
                _ = resync.tick() => { all_pending(); continue; }
            };
            match reconcile(&key, &ctx).await {
                Ok(()) | Err(Error::NoFit(_)) => {}
                Err(err) => {
                    tracing::warn!(pod = %format!("{}/{}", key.0, key.1), error = %err, "scheduling failed; retrying");
                    queue.add_after(key, RETRY);
                }
            }
        }
    };
    tokio::select! {
        () = feed_nodes => {}
        () = feed_pods => {}
        () = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, labels: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: Option<&str>, owner: Option<&str>) -> Pod {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        });
        if let Some(node) = node {
            pod["spec"]["nodeName"] = json!(node);
        }
        if let Some(owner) = owner {
            pod["metadata"]["ownerReferences"] = json!([
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other", "uid": "x", "controller": false},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": format!("{owner}-uid"), "controller": true},
            ]);
        }
        serde_json::from_value(pod).unwrap()
    }

    fn summary(pod: Pod) -> Arc<PodSummary> {
        Arc::new(PodSummary::from(&pod))
    }

    fn with_host_port(mut pod: Pod, port: i32, protocol: &str, ip: Option<&str>) -> Pod {
        let mut p = json!({"containerPort": 80, "hostPort": port, "protocol": protocol});
        if let Some(ip) = ip {
            p["hostIP"] = json!(ip);
        }
        pod.spec.as_mut().unwrap().containers[0].ports =
            Some(vec![serde_json::from_value(p).unwrap()]);
        pod
    }

    #[test]
    fn only_ready_schedulable_nodes_are_chosen() {
        let mut cordoned = (*node("a-cordoned", true, json!({}))).clone();
        cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
        let nodes = [
            node("a-not-ready", false, json!({})),
            Arc::new(cordoned),
            node("z-ready", true, json!({})),
        ];
        assert_eq!(
            choose(&pod("p", None, None), &nodes, &[]).unwrap(),
            "z-ready"
        );
    }

    #[test]
    fn pods_of_one_owner_spread_then_fewest_pods_then_name() {
        let nodes = [
            node("node-1", true, json!({})),
            node("node-2", true, json!({})),
        ];
        // node-1 has one sibling, node-2 two unrelated pods: the sibling count wins.
        let pods = [
            summary(pod("s1", Some("node-1"), Some("web"))),
            summary(pod("o1", Some("node-2"), None)),
            summary(pod("o2", Some("node-2"), Some("db"))),
        ];
        assert_eq!(
            choose(&pod("new", None, Some("web")), &nodes, &pods).unwrap(),
            "node-2"
        );
        // Without an owner only the totals count.
        assert_eq!(
            choose(&pod("lone", None, None), &nodes, &pods).unwrap(),
            "node-1"
        );
        // All equal: name order.
        assert_eq!(
            choose(&pod("first", None, Some("web")), &nodes, &[]).unwrap(),
            "node-1"
        );
        // Finished pods do not count.
        let mut done = pod("done", Some("node-1"), Some("web"));
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        let pods = [summary(done), summary(pod("o1", Some("node-2"), None))];
        assert_eq!(
            choose(&pod("new", None, Some("web")), &nodes, &pods).unwrap(),
            "node-1"
        );
    }

    #[test]
    fn the_node_selector_must_match_the_node_labels() {
        let nodes = [
            node("plain", true, json!({})),
            node("ssd", true, json!({"disk": "ssd", "zone": "a"})),
        ];
        let mut picky = pod("p", None, None);
        picky.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("disk".into(), "ssd".into())]));
        assert_eq!(choose(&picky, &nodes, &[]).unwrap(), "ssd");
        picky.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("disk".into(), "nvme".into())]));
        let no_fit = choose(&picky, &nodes, &[]).unwrap_err();
        assert_eq!(no_fit.reasons, BTreeMap::from([(Unfit::Selector, 2)]));
    }

    #[test]
    fn host_ports_in_use_on_a_node_rule_it_out() {
        let nodes = [
            node("node-1", true, json!({})),
            node("node-2", true, json!({})),
        ];
        let on_1 = summary(with_host_port(
            pod("a", Some("node-1"), None),
            8080,
            "TCP",
            None,
        ));
        let want = with_host_port(pod("b", None, None), 8080, "TCP", Some("10.0.0.1"));
        // node-2 holds more pods, so only the port sends the pod there.
        let busy = [
            on_1.clone(),
            summary(pod("x", Some("node-2"), None)),
            summary(pod("y", Some("node-2"), None)),
        ];
        assert_eq!(choose(&want, &nodes, &busy).unwrap(), "node-2");
        // Another protocol, or two distinct host IPs, do not collide.
        let udp = with_host_port(pod("c", None, None), 8080, "UDP", None);
        assert_eq!(
            choose(&udp, &nodes[..1], std::slice::from_ref(&on_1)).unwrap(),
            "node-1"
        );
        let on_1_ip = summary(with_host_port(
            pod("d", Some("node-1"), None),
            9090,
            "TCP",
            Some("10.0.0.2"),
        ));
        let other_ip = with_host_port(pod("e", None, None), 9090, "TCP", Some("10.0.0.3"));
        assert_eq!(
            choose(&other_ip, &[nodes[0].clone()], &[on_1_ip]).unwrap(),
            "node-1"
        );
        // Taken on both: no fit.
        let on_2 = summary(with_host_port(
            pod("f", Some("node-2"), None),
            8080,
            "TCP",
            None,
        ));
        let no_fit = choose(&want, &nodes, &[on_1, on_2]).unwrap_err();
        assert_eq!(
            no_fit.to_string(),
            "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod \
             ports. preemption: 0/2 nodes are available: 2 No preemption victims found for \
             incoming pod."
        );
    }

    #[test]
    fn the_failed_scheduling_message_reads_like_kubes() {
        let nodes = [
            node("a", false, json!({})),
            node("b", false, json!({})),
            node("c", true, json!({})),
        ];
        let mut picky = pod("p", None, None);
        picky.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("disk".into(), "ssd".into())]));
        assert_eq!(
            choose(&picky, &nodes, &[]).unwrap_err().to_string(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             2 node(s) were not ready. preemption: 0/3 nodes are available: \
             3 Preemption is not helpful for scheduling."
        );
        // A tainted node joins in; a pod that never preempts says so.
        let tainted = tainted(
            node("d", true, json!({"disk": "ssd"})),
            "dedicated",
            "db",
            "NoSchedule",
        );
        let nodes = [
            nodes[0].clone(),
            nodes[1].clone(),
            nodes[2].clone(),
            tainted,
        ];
        picky.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert_eq!(
            choose(&picky, &nodes, &[]).unwrap_err().to_string(),
            "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint(s), 2 node(s) were not ready. \
             preemption: not eligible due to preemptionPolicy=Never."
        );
        assert_eq!(
            choose(&picky, &[], &[]).unwrap_err().to_string(),
            "0/0 nodes are available: no nodes available to schedule pods."
        );
    }

    fn tainted(node: Arc<Node>, key: &str, value: &str, effect: &str) -> Arc<Node> {
        let mut node = (*node).clone();
        let spec = node.spec.get_or_insert_default();
        let mut taint = json!({"key": key, "effect": effect});
        if !value.is_empty() {
            taint["value"] = json!(value);
        }
        spec.taints
            .get_or_insert_default()
            .push(serde_json::from_value(taint).unwrap());
        Arc::new(node)
    }

    fn tolerating(mut pod: Pod, toleration: serde_json::Value) -> Pod {
        pod.spec
            .as_mut()
            .unwrap()
            .tolerations
            .get_or_insert_default()
            .push(serde_json::from_value(toleration).unwrap());
        pod
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tolerations_match_taints_by_key_value_operator_and_effect() {
        let t = taint("dedicated", "db", "NoSchedule");
        let yes = [
            json!({"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}),
            json!({"key": "dedicated", "value": "db"}),
            json!({"key": "dedicated", "operator": "Exists"}),
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}),
            json!({"operator": "Exists"}),
            json!({"operator": "Exists", "effect": "NoSchedule"}),
        ];
        for v in yes {
            assert!(tolerates(&toleration(v.clone()), &t), "{v} should tolerate");
        }
        let no = [
            json!({"key": "dedicated", "value": "web"}),
            json!({"key": "dedicated", "operator": "Equal"}),
            json!({"key": "other", "operator": "Exists"}),
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
            json!({"operator": "Exists", "effect": "PreferNoSchedule"}),
            json!({"key": "dedicated", "operator": "Lt", "value": "db"}),
        ];
        for v in no {
            assert!(
                !tolerates(&toleration(v.clone()), &t),
                "{v} should not tolerate"
            );
        }
        // A taint without a value is matched by Equal with no value.
        let bare = taint("node.kubernetes.io/not-ready", "", "NoExecute");
        assert!(tolerates(
            &toleration(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"})),
            &bare
        ));
    }

    #[test]
    fn no_schedule_and_no_execute_taints_filter_unless_tolerated() {
        for effect in ["NoSchedule", "NoExecute"] {
            let nodes = [
                tainted(
                    node("a-tainted", true, json!({})),
                    "dedicated",
                    "db",
                    effect,
                ),
                node("b-plain", true, json!({})),
            ];
            // Even with more pods on b, a is out for a pod without the toleration.
            let pods = [summary(pod("x", Some("b-plain"), None))];
            assert_eq!(
                choose(&pod("p", None, None), &nodes, &pods).unwrap(),
                "b-plain"
            );
            let db = tolerating(
                pod("p", None, None),
                json!({"key": "dedicated", "operator": "Equal", "value": "db", "effect": effect}),
            );
            assert_eq!(choose(&db, &nodes, &pods).unwrap(), "a-tainted");
            let no_fit = choose(&pod("p", None, None), &nodes[..1], &[]).unwrap_err();
            assert_eq!(no_fit.reasons, BTreeMap::from([(Unfit::Taint, 1)]));
        }
        // An empty key with Exists tolerates everything.
        let all = tolerating(pod("p", None, None), json!({"operator": "Exists"}));
        let only = [tainted(node("n", true, json!({})), "a", "b", "NoExecute")];
        assert_eq!(choose(&all, &only, &[]).unwrap(), "n");
    }

    #[test]
    fn prefer_no_schedule_taints_only_lower_the_score() {
        let nodes = [
            tainted(
                node("a-preferred-not", true, json!({})),
                "spot",
                "",
                "PreferNoSchedule",
            ),
            node("b-plain", true, json!({})),
        ];
        // b has more pods, yet a's untolerated soft taint sends the pod to b.
        let pods = [
            summary(pod("x", Some("b-plain"), None)),
            summary(pod("y", Some("b-plain"), None)),
        ];
        assert_eq!(
            choose(&pod("p", None, None), &nodes, &pods).unwrap(),
            "b-plain"
        );
        // Tolerated, it no longer counts; and alone, the node still takes pods.
        let spot = tolerating(
            pod("p", None, None),
            json!({"key": "spot", "operator": "Exists"}),
        );
        assert_eq!(choose(&spot, &nodes, &pods).unwrap(), "a-preferred-not");
        assert_eq!(
            choose(&pod("p", None, None), &nodes[..1], &[]).unwrap(),
            "a-preferred-not"
        );
    }

    #[test]
    fn a_cordoned_node_takes_only_pods_tolerating_unschedulable() {
        let mut cordoned = (*node("c", true, json!({}))).clone();
        cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
        let nodes = [Arc::new(cordoned)];
        let no_fit = choose(&pod("p", None, None), &nodes, &[]).unwrap_err();
        assert_eq!(no_fit.reasons, BTreeMap::from([(Unfit::Unschedulable, 1)]));
        let daemon = tolerating(
            pod("p", None, None),
            json!({"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}),
        );
        assert_eq!(choose(&daemon, &nodes, &[]).unwrap(), "c");
    }

    #[test]
    fn the_unschedulable_condition_is_written_once_per_message() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut p = pod("p", None, None);
        let c = unschedulable_condition(&p, "0/1 nodes", now).unwrap();
        assert_eq!(
            (
                c.type_.as_str(),
                c.status.as_str(),
                c.reason.as_deref(),
                c.message.as_deref()
            ),
            (
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some("0/1 nodes")
            )
        );
        assert_eq!(c.last_transition_time, Some(Time(now)));
        p.status = Some(serde_json::from_value(json!({"conditions": [c]})).unwrap());
        assert_eq!(unschedulable_condition(&p, "0/1 nodes", now), None);
        // A new message keeps the transition time: the status did not change.
        let later: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let c2 = unschedulable_condition(&p, "0/2 nodes", later).unwrap();
        assert_eq!(c2.message.as_deref(), Some("0/2 nodes"));
        assert_eq!(c2.last_transition_time, Some(Time(now)));
    }

    #[test]
    fn bound_deleting_and_finished_pods_are_not_pending() {
        assert!(pending(&pod("p", None, None)));
        assert!(!pending(&pod("p", Some("n"), None)));
        let mut deleting = pod("p", None, None);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(!pending(&deleting));
        let mut failed = pod("p", None, None);
        failed.status = Some(serde_json::from_value(json!({"phase": "Failed"})).unwrap());
        assert!(!pending(&failed));
    }
}
