//! The scheduler against a whole API server in-process (a temporary SQLite
//! file), through the real `kube` client: pods are bound to Ready nodes,
//! spread by owner, and wait with a FailedScheduling event and a
//! `PodScheduled=False` condition until a node matching their selector and
//! taints appears, or they tolerate one. Node readiness is written by hand
//! through the status subresource (no agent runs here).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cluster, eventually};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// How long the scheduler may take to catch up.
const DEADLINE: Duration = Duration::from_secs(10);

async fn cluster() -> Cluster {
    let cluster = common::api_server().await;
    let client = cluster.client.clone();
    tokio::spawn(knit_controllers::scheduler::run(client.clone()));
    cluster
}

async fn add_node(nodes: &Api<Node>, name: &str, ready: bool, labels: serde_json::Value) {
    let node =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = if ready { "True" } else { "False" };
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [
                {"type": "Ready", "status": status, "reason": "KubeletReady"}]}})),
        )
        .await
        .unwrap();
}

async fn add_pod(pods: &Api<Pod>, name: &str, extra: serde_json::Value) {
    let mut pod = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "nginx", "image": "nginx"}]},
    });
    if let Some(owner) = extra.get("owner") {
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": owner, "uid": format!("{}-uid", owner.as_str().unwrap()), "controller": true}]);
    }
    if let Some(selector) = extra.get("nodeSelector") {
        pod["spec"]["nodeSelector"] = selector.clone();
    }
    let pod = serde_json::from_value(pod).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

async fn node_of(pods: &Api<Pod>, name: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(node) = pods.get(name).await.unwrap().spec.unwrap().node_name {
            return node;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{name} not bound within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn events_of(events: &Api<Event>, pod: &str, reason: &str) -> Vec<Event> {
    let about = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    events
        .list(&about)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test]
async fn a_pod_is_bound_to_the_only_ready_node_with_a_scheduled_event() {
    let cluster = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let events: Api<Event> = Api::default_namespaced(cluster.client.clone());
    add_node(&nodes, "node-1", false, json!({})).await;
    add_node(&nodes, "node-2", true, json!({})).await;
    add_pod(&pods, "nginx", json!({})).await;

    assert_eq!(node_of(&pods, "nginx").await, "node-2");
    let bound = pods.get("nginx").await.unwrap();
    let scheduled = bound
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled");
    assert_eq!(scheduled.map(|c| c.status).as_deref(), Some("True"));
    eventually(DEADLINE, "a Scheduled event", || async {
        events_of(&events, "nginx", "Scheduled")
            .await
            .iter()
            .any(|e| {
                e.message.as_deref() == Some("Successfully assigned default/nginx to node-2")
                    && e.type_.as_deref() == Some("Normal")
                    && e.source.as_ref().and_then(|s| s.component.as_deref())
                        == Some("default-scheduler")
            })
    })
    .await;
}

#[tokio::test]
async fn four_pods_of_one_owner_spread_two_and_two() {
    let cluster = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    add_node(&nodes, "node-1", true, json!({})).await;
    add_node(&nodes, "node-2", true, json!({})).await;
    add_node(&nodes, "node-3", false, json!({})).await;
    for i in 0..4 {
        add_pod(&pods, &format!("web-{i}"), json!({"owner": "web"})).await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        *per_node
            .entry(node_of(&pods, &format!("web-{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("node-1".into(), 2), ("node-2".into(), 2)])
    );
}

#[tokio::test]
async fn a_pod_no_node_matches_waits_until_one_does() {
    let cluster = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let events: Api<Event> = Api::default_namespaced(cluster.client.clone());
    add_node(&nodes, "node-1", true, json!({})).await;
    add_node(&nodes, "node-2", false, json!({"disk": "ssd"})).await;
    add_pod(&pods, "picky", json!({"nodeSelector": {"disk": "ssd"}})).await;

    eventually(DEADLINE, "a FailedScheduling event", || async {
        events_of(&events, "picky", "FailedScheduling")
            .await
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref()
                        == Some(
                            "0/2 nodes are available: 1 node(s) didn't match Pod's node \
                             affinity/selector, 1 node(s) were not ready. preemption: 0/2 nodes \
                             are available: 2 Preemption is not helpful for scheduling.",
                        )
            })
    })
    .await;
    let still = pods.get("picky").await.unwrap();
    assert!(still.spec.unwrap().node_name.is_none());

    add_node(&nodes, "node-3", true, json!({"disk": "ssd"})).await;
    assert_eq!(node_of(&pods, "picky").await, "node-3");
}

fn scheduled_condition(pod: &Pod) -> Option<(String, Option<String>, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn untolerated_taints_keep_pods_pending_until_tolerated_or_removed() {
    let cluster = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let events: Api<Event> = Api::default_namespaced(cluster.client.clone());
    add_node(&nodes, "node-1", true, json!({})).await;
    add_node(&nodes, "node-2", false, json!({})).await;
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [
                {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    add_pod(&pods, "db", json!({})).await;
    add_pod(&pods, "web", json!({})).await;

    let message = "0/2 nodes are available: 1 node(s) had untolerated taint(s), 1 node(s) were \
                   not ready. preemption: 0/2 nodes are available: 2 Preemption is not helpful \
                   for scheduling.";
    for name in ["db", "web"] {
        eventually(
            DEADLINE,
            &format!("{name} is PodScheduled=False"),
            || async {
                scheduled_condition(&pods.get(name).await.unwrap())
                    == Some((
                        "False".into(),
                        Some("Unschedulable".into()),
                        Some(message.into()),
                    ))
            },
        )
        .await;
        eventually(
            DEADLINE,
            &format!("a FailedScheduling event on {name}"),
            || async {
                events_of(&events, name, "FailedScheduling")
                    .await
                    .iter()
                    .any(|e| e.message.as_deref() == Some(message))
            },
        )
        .await;
    }

    // A toleration added to the pod (the one change Kubernetes allows) lets
    // it onto the tainted node.
    pods.patch(
        "db",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}})),
    )
    .await
    .unwrap();
    assert_eq!(node_of(&pods, "db").await, "node-1");
    assert_eq!(
        scheduled_condition(&pods.get("db").await.unwrap()).map(|c| c.0),
        Some("True".into())
    );
    assert!(
        pods.get("web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .is_none(),
        "web still does not tolerate the taint"
    );

    // Removing the taint is a node change: web is tried again and bound.
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .unwrap();
    assert_eq!(node_of(&pods, "web").await, "node-1");
    // One FailedScheduling event per message, not one per attempt.
    assert_eq!(events_of(&events, "web", "FailedScheduling").await.len(), 1);
}
