//! The scheduler: binds every pod without `spec.nodeName` (not being
//! deleted, not finished) to a node through the pod's `binding`
//! subresource, as kube-scheduler does for the article's cluster.
//!
//! [`choose`] is the pure core. A node is feasible when its `Ready`
//! condition is `True`, it is not `spec.unschedulable`, its labels match
//! the pod's `nodeSelector`, and none of the pod's host ports is taken (same
//! port and protocol, same or wildcard host IP) by a pod already on it.
//! Among the feasible nodes the one with the fewest pods of the pod's
//! controller wins, then the one with the fewest pods, then the first by
//! name. When none is feasible, the reasons make kube's message (`0/3 nodes
//! are available: ...`).
//!
//! [`run`] reflects Nodes and Pods; pending pods are queued on their own
//! events, all of them on node events and every few seconds. Pods bound
//! but not yet seen bound in the cache are counted where they were sent
//! ("assumed", as kube-scheduler's cache does), so a burst spreads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::cache;
use crate::events::{self, Note};
use crate::queue::{Key, Queue};

/// The scheduler's name, as Events' source component.
pub const COMPONENT: &str = "default-scheduler";
/// How long a failed bind waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How often pending pods are tried again.
const RESYNC: Duration = Duration::from_secs(5);

/// Why a node cannot take a pod, in kube-scheduler's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unfit {
    NotReady,
    Unschedulable,
    Selector,
    HostPorts,
}

impl Unfit {
    fn says(self) -> &'static str {
        match self {
            Unfit::NotReady => "node(s) were not ready",
            Unfit::Unschedulable => "node(s) were unschedulable",
            Unfit::Selector => "node(s) didn't match Pod's node affinity/selector",
            Unfit::HostPorts => "node(s) didn't have free ports for the requested pod ports",
        }
    }
}

/// No node can take the pod: how many there are and why each cannot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", message(*.nodes, .reasons))]
pub struct NoFit {
    pub nodes: usize,
    pub reasons: BTreeMap<Unfit, usize>,
}

fn message(nodes: usize, reasons: &BTreeMap<Unfit, usize>) -> String {
    if nodes == 0 {
        return "0/0 nodes are available: no nodes available to schedule pods.".into();
    }
    // kube sorts the "COUNT reason" strings.
    let mut parts: Vec<String> = reasons
        .iter()
        .map(|(unfit, count)| format!("{count} {}", unfit.says()))
        .collect();
    parts.sort();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
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

/// `(hostPort, protocol, hostIP)` of every container port with a host port.
fn host_ports(pod: &Pod) -> Vec<(i32, String, String)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|&h| h > 0)?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let ip = p.host_ip.clone().unwrap_or_default();
            Some((port, protocol, ip))
        })
        .collect()
}

fn wildcard(ip: &str) -> bool {
    matches!(ip, "" | "0.0.0.0" | "::")
}

/// Whether two host ports collide: same port and protocol, and the same
/// host IP or either bound to all addresses.
fn collide(a: &(i32, String, String), b: &(i32, String, String)) -> bool {
    a.0 == b.0 && a.1 == b.1 && (a.2 == b.2 || wildcard(&a.2) || wildcard(&b.2))
}

/// The pod's controller (first owner reference with `controller: true`).
fn controller_of(pod: &Pod) -> Option<(String, String, String)> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone(), o.uid.clone()))
}

fn unfit(pod: &Pod, node: &Node, on_node: &[&Pod]) -> Option<Unfit> {
    if !ready(node) {
        return Some(Unfit::NotReady);
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        return Some(Unfit::Unschedulable);
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
    let wanted = host_ports(pod);
    if !wanted.is_empty() {
        let taken: Vec<_> = on_node.iter().flat_map(|p| host_ports(p)).collect();
        if wanted.iter().any(|w| taken.iter().any(|t| collide(w, t))) {
            return Some(Unfit::HostPorts);
        }
    }
    None
}

/// The node `pod` should go to, given every node and every pod (those
/// with a `nodeName` count on their node, finished ones do not).
pub fn choose(pod: &Pod, nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> Result<String, NoFit> {
    let mut by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for other in pods {
        if finished(other)
            || (other.name_any() == pod.name_any() && other.namespace() == pod.namespace())
        {
            continue;
        }
        if let Some(node) = node_name(other) {
            by_node.entry(node).or_default().push(other);
        }
    }
    let owner = controller_of(pod);
    let mut reasons = BTreeMap::new();
    let mut best: Option<((usize, usize, String), String)> = None;
    for node in nodes {
        let name = node.name_any();
        let on_node = by_node.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        if let Some(why) = unfit(pod, node, on_node) {
            *reasons.entry(why).or_insert(0) += 1;
            continue;
        }
        let siblings = match &owner {
            Some(owner) => on_node
                .iter()
                .filter(|p| controller_of(p).as_ref() == Some(owner))
                .count(),
            None => 0,
        };
        let score = (siblings, on_node.len(), name.clone());
        if best.as_ref().is_none_or(|(b, _)| score < *b) {
            best = Some((score, name));
        }
    }
    best.map(|(_, name)| name).ok_or(NoFit {
        nodes: nodes.len(),
        reasons,
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
    pub pods: Store<Pod>,
    /// Pods bound but not yet seen bound in the cache, and their node.
    pub assumed: Mutex<HashMap<Key, String>>,
    /// The last FailedScheduling message per pod, so a retry that fails the
    /// same way does not say it again.
    pub failures: Mutex<HashMap<Key, String>>,
}

fn pod_key(pod: &Pod) -> Key {
    (pod.namespace().unwrap_or_default(), pod.name_any())
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
    /// The cached pods with the assumed bindings applied; assumptions the
    /// cache has caught up with (bound, or gone) are dropped.
    fn pods_view(&self) -> Vec<Arc<Pod>> {
        let mut assumed = self.assumed.lock().unwrap_or_else(|e| e.into_inner());
        let pods = self.pods.state();
        let mut live = HashMap::new();
        let view = pods
            .into_iter()
            .map(|pod| {
                let key = pod_key(&pod);
                match assumed.get(&key) {
                    Some(node) if node_name(&pod).is_none() => {
                        live.insert(key, node.clone());
                        let mut bound = (*pod).clone();
                        bound.spec.get_or_insert_default().node_name = Some(node.clone());
                        Arc::new(bound)
                    }
                    _ => pod,
                }
            })
            .collect();
        *assumed = live;
        view
    }
}

/// Places the pod at `key` if it is pending.
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<(), Error> {
    let (namespace, name) = key;
    let Some(pod) = ctx.pods.get(&ObjectRef::new(name).within(namespace)) else {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        return Ok(());
    };
    let pods = ctx.pods_view();
    let assumed = ctx
        .assumed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(key);
    if !pending(&pod) || assumed {
        return Ok(());
    }
    let node = match choose(&pod, &ctx.nodes.state(), &pods) {
        Ok(node) => node,
        Err(no_fit) => {
            let message = no_fit.to_string();
            let said = ctx
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), message.clone());
            if said.as_deref() != Some(message.as_str()) {
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

/// Runs the scheduler until dropped.
pub async fn run(client: Client) {
    let queue = Queue::default();
    let (nodes, node_events) = cache::reflect::<Node>(&client);
    let (pods, pod_events) = cache::reflect::<Pod>(&client);

    let all_pending = {
        let pods = pods.clone();
        let queue = queue.clone();
        move || {
            for pod in pods.state() {
                if pending(&pod) {
                    queue.add(pod_key(&pod));
                }
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
    let pod_queue = queue.clone();
    let feed_pods = pod_events.for_each(move |event| {
        if let Ok(pod) = event
            && pending(&pod)
        {
            pod_queue.add(pod_key(&pod));
        }
        futures::future::ready(())
    });

    let ctx = Context {
        client,
        nodes: nodes.clone(),
        pods: pods.clone(),
        assumed: Mutex::default(),
        failures: Mutex::default(),
    };
    let work = async {
        let _ = nodes.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
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
            Arc::new(pod("s1", Some("node-1"), Some("web"))),
            Arc::new(pod("o1", Some("node-2"), None)),
            Arc::new(pod("o2", Some("node-2"), Some("db"))),
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
        let pods = [Arc::new(done), Arc::new(pod("o1", Some("node-2"), None))];
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
        let on_1 = Arc::new(with_host_port(
            pod("a", Some("node-1"), None),
            8080,
            "TCP",
            None,
        ));
        let want = with_host_port(pod("b", None, None), 8080, "TCP", Some("10.0.0.1"));
        // node-2 holds more pods, so only the port sends the pod there.
        let busy = [
            on_1.clone(),
            Arc::new(pod("x", Some("node-2"), None)),
            Arc::new(pod("y", Some("node-2"), None)),
        ];
        assert_eq!(choose(&want, &nodes, &busy).unwrap(), "node-2");
        // Another protocol, or two distinct host IPs, do not collide.
        let udp = with_host_port(pod("c", None, None), 8080, "UDP", None);
        assert_eq!(
            choose(&udp, &nodes[..1], std::slice::from_ref(&on_1)).unwrap(),
            "node-1"
        );
        let on_1_ip = Arc::new(with_host_port(
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
        let on_2 = Arc::new(with_host_port(
            pod("f", Some("node-2"), None),
            8080,
            "TCP",
            None,
        ));
        let no_fit = choose(&want, &nodes, &[on_1, on_2]).unwrap_err();
        assert_eq!(
            no_fit.to_string(),
            "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
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
             2 node(s) were not ready."
        );
        assert_eq!(
            choose(&picky, &[], &[]).unwrap_err().to_string(),
            "0/0 nodes are available: no nodes available to schedule pods."
        );
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
