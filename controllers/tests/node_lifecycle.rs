//! The node lifecycle controller against a whole API server in-process (a
//! temporary SQLite file), with every controller running as `knit server`
//! runs them and a 1 s grace period: a node that stops renewing its Lease
//! goes `Ready=Unknown`, its pods not ready and out of the Service's ready
//! endpoints; a node whose Lease keeps being renewed stays as it is. The
//! lost node is tainted `unreachable`; a pod tolerating that for 1 s is
//! evicted after it, one with the default 300 s stays, and the taints go
//! when the node is Ready again. A `NoExecute` taint put on by hand evicts
//! the pods that do not tolerate it at once.

mod common;

use std::time::Duration;

use common::{Cluster, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod, Service, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use knit_controllers::ControllersConfig;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// How long the controllers may take to catch up.
const DEADLINE: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(1);

async fn cluster() -> Cluster {
    common::api_server().await
}

async fn ready_node(nodes: &Api<Node>, name: &str) {
    let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = json!({"status": {"conditions": [
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
        {"type": "Ready", "status": "True", "reason": "KubeletReady"},
    ]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// Every controller, with the test's short grace period.
fn start_controllers(client: &kube::Client) -> tokio::task::JoinHandle<()> {
    let config = ControllersConfig {
        node_monitor_grace: GRACE,
        ..ControllersConfig::default()
    };
    tokio::spawn(knit_controllers::run(client.clone(), config))
}

/// Renews the Lease of node `name` every 200 ms (for at most 40 s), as
/// a live agent does.
fn keep_renewing(leases: &Api<Lease>, name: &'static str) -> tokio::task::JoinHandle<()> {
    let leases = leases.clone();
    tokio::spawn(async move {
        for _ in 0..200 {
            renew(&leases, name).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn renew(leases: &Api<Lease>, name: &str) {
    let now = MicroTime(jiff::Timestamp::now());
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 1, "renewTime": now},
    });
    leases
        .patch(
            name,
            &PatchParams::apply("test-kubelet").force(),
            &Patch::Apply(lease),
        )
        .await
        .unwrap();
}

async fn ready_pod(pods: &Api<Pod>, name: &str, ip: &str, node: &str) {
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx",
                 "ports": [{"containerPort": 80}]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "podIP": ip, "conditions": [
        {"type": "ContainersReady", "status": "True"},
        {"type": "Ready", "status": "True"},
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

fn condition(node: &Node, type_: &str) -> Option<(String, Option<String>)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn pod_condition(pod: &Pod, type_: &str) -> Option<(String, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn addresses(endpoints: &Endpoints, not_ready: bool) -> Vec<String> {
    let mut ips: Vec<String> = endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| {
            if not_ready {
                &s.not_ready_addresses
            } else {
                &s.addresses
            }
        })
        .flatten()
        .map(|a| a.ip.clone())
        .collect();
    ips.sort();
    ips
}

#[tokio::test]
async fn a_node_that_stops_renewing_its_lease_goes_unknown_and_its_pods_not_ready() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(client.clone());

    for name in ["dying", "alive"] {
        ready_node(&nodes, name).await;
        renew(&leases, name).await;
    }
    ready_pod(&pods, "web-1", "10.0.1.2", "dying").await;
    ready_pod(&pods, "web-2", "10.0.1.3", "dying").await;
    ready_pod(&pods, "web-3", "10.0.2.2", "alive").await;
    let service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    let _controllers = start_controllers(&client);

    // "alive" keeps renewing its lease every 200 ms.
    let renewer = keep_renewing(&leases, "alive");

    // Until the endpoints are in place "dying" renews too (so a slow start
    // cannot make it stale early); from then on it stops.
    eventually(DEADLINE, "all three pods are ready endpoints", || async {
        renew(&leases, "dying").await;
        endpoints
            .get_opt("web")
            .await
            .unwrap()
            .is_some_and(|e| addresses(&e, false).len() == 3)
    })
    .await;

    eventually(DEADLINE, "dying is Ready=Unknown", || async {
        condition(&nodes.get("dying").await.unwrap(), "Ready")
            == Some(("Unknown".into(), Some("NodeStatusUnknown".into())))
    })
    .await;
    let dying = nodes.get("dying").await.unwrap();
    assert_eq!(
        condition(&dying, "MemoryPressure"),
        Some(("False".into(), Some("KubeletHasSufficientMemory".into()))),
        "other conditions kept"
    );
    let ready = dying
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    assert!(ready.last_transition_time.is_some());

    for name in ["web-1", "web-2"] {
        eventually(DEADLINE, &format!("{name} is not ready"), || async {
            let pod = pods.get(name).await.unwrap();
            pod_condition(&pod, "Ready") == Some(("False".into(), Some("NodeNotReady".into())))
                && pod_condition(&pod, "ContainersReady")
                    == Some(("False".into(), Some("NodeNotReady".into())))
        })
        .await;
    }
    eventually(
        DEADLINE,
        "the dying node's pods are only not-ready endpoints",
        || async {
            let e = endpoints.get("web").await.unwrap();
            addresses(&e, false) == ["10.0.2.2"] && addresses(&e, true) == ["10.0.1.2", "10.0.1.3"]
        },
    )
    .await;

    let events: Api<Event> = Api::default_namespaced(client.clone());
    eventually(DEADLINE, "a NodeNotReady event on dying", || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("NodeNotReady")
                    && e.involved_object.name.as_deref() == Some("dying")
            })
    })
    .await;

    // Well past the grace period, the renewed node and its pod are untouched.
    tokio::time::sleep(GRACE * 2).await;
    assert_eq!(
        condition(&nodes.get("alive").await.unwrap(), "Ready"),
        Some(("True".into(), Some("KubeletReady".into())))
    );
    assert_eq!(
        pod_condition(&pods.get("web-3").await.unwrap(), "Ready"),
        Some(("True".into(), None))
    );
    renewer.abort();
}

async fn pod_on(pods: &Api<Pod>, name: &str, node: &str, tolerations: serde_json::Value) {
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": tolerations,
                 "containers": [{"name": "app", "image": "nginx"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

fn taint_keys(node: &Node) -> Vec<String> {
    taints(node)
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

async fn gone(pods: &Api<Pod>, name: &str) -> bool {
    pods.get_opt(name).await.unwrap().is_none()
}

async fn evicted_event(events: &Api<Event>, pod: &str) -> bool {
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| {
            e.reason.as_deref() == Some("TaintManagerEviction")
                && e.message.as_deref() == Some(&format!("Marking for deletion Pod default/{pod}"))
                && e.source.as_ref().and_then(|s| s.component.as_deref())
                    == Some("taint-eviction-controller")
        })
}

#[tokio::test]
async fn a_lost_node_is_tainted_and_its_pods_evicted_as_their_tolerations_say() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let events: Api<Event> = Api::default_namespaced(client.clone());

    for name in ["lost", "kept"] {
        ready_node(&nodes, name).await;
        renew(&leases, name).await;
    }
    // 1 s instead of the default 300 s, so the test stays fast.
    pod_on(
        &pods,
        "quick",
        "lost",
        json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 1}]),
    )
    .await;
    pod_on(&pods, "patient", "lost", json!([])).await;
    let patient = pods.get("patient").await.unwrap();
    assert!(
        patient
            .spec
            .unwrap()
            .tolerations
            .unwrap_or_default()
            .iter()
            .any(
                |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
                    && t.toleration_seconds == Some(300)
            ),
        "the default toleration is there"
    );
    pod_on(&pods, "intolerant", "kept", json!([])).await;
    pod_on(
        &pods,
        "tolerant",
        "kept",
        json!([{"key": "maintenance", "operator": "Exists", "effect": "NoExecute"}]),
    )
    .await;

    let _controllers = start_controllers(&client);
    let renewer = keep_renewing(&leases, "kept");

    // "lost" stops renewing: unreachable, tainted with both effects.
    eventually(DEADLINE, "lost is tainted unreachable", || async {
        taint_keys(&nodes.get("lost").await.unwrap())
            == [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute",
            ]
    })
    .await;
    let lost = nodes.get("lost").await.unwrap();
    assert_eq!(
        condition(&lost, "Ready").map(|c| c.0).as_deref(),
        Some("Unknown")
    );
    let no_execute = &taints(&lost)[1];
    assert!(no_execute.time_added.is_some(), "NoExecute is stamped");
    let tainted_at = no_execute.time_added.as_ref().unwrap().0;

    eventually(DEADLINE, "quick is evicted after its 1 s", || {
        gone(&pods, "quick")
    })
    .await;
    let waited = jiff::Timestamp::now().duration_since(tainted_at);
    assert!(
        waited >= jiff::SignedDuration::from_secs(1),
        "evicted only after tolerationSeconds, not at once ({waited:?})"
    );
    eventually(DEADLINE, "a TaintManagerEviction event on quick", || {
        evicted_event(&events, "quick")
    })
    .await;
    assert!(
        !gone(&pods, "patient").await,
        "300 s of toleration are not over"
    );

    // A NoExecute taint put on by hand, as `kubectl taint` does.
    nodes
        .patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"taints": [{"key": "maintenance", "value": "true",
                "effect": "NoExecute", "timeAdded": MicroTime(jiff::Timestamp::now()).0}]}}),
            ),
        )
        .await
        .unwrap();
    eventually(DEADLINE, "intolerant is evicted at once", || {
        gone(&pods, "intolerant")
    })
    .await;
    eventually(
        DEADLINE,
        "a TaintManagerEviction event on intolerant",
        || evicted_event(&events, "intolerant"),
    )
    .await;
    assert!(!gone(&pods, "tolerant").await, "tolerated for good");
    assert_eq!(
        taint_keys(&nodes.get("kept").await.unwrap()),
        ["maintenance:NoExecute"],
        "a Ready node gets no condition taints"
    );

    // "lost" comes back: its agent renews and reports Ready; the taints go.
    renew(&leases, "lost").await;
    let back = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    nodes
        .patch_status("lost", &PatchParams::default(), &Patch::Strategic(back))
        .await
        .unwrap();
    let lost_renewer = keep_renewing(&leases, "lost");
    eventually(DEADLINE, "lost is untainted", || async {
        taints(&nodes.get("lost").await.unwrap()).is_empty()
    })
    .await;
    assert!(!gone(&pods, "patient").await);
    renewer.abort();
    lost_renewer.abort();
}
