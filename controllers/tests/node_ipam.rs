//! The node IPAM controller against a whole API server in-process (a
//! temporary SQLite file), through the real `kube` client: Nodes get
//! distinct slices, a deleted Node's slice is reused, a restarted
//! controller keeps what is recorded, exhaustion is reported and resolved.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, eventually};
use k8s_openapi::api::core::v1::{Event, Node};
use knit_controllers::ControllersConfig;
use knit_ipam::{Cidr, PodCidr};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::task::JoinHandle;

/// How long the controller may take to catch up.
const DEADLINE: Duration = Duration::from_secs(10);

async fn cluster() -> Cluster {
    common::api_server().await
}

fn start(client: &Client, config: ControllersConfig) -> JoinHandle<()> {
    tokio::spawn(knit_controllers::node_ipam::run(client.clone(), config))
}

async fn create_node(nodes: &Api<Node>, name: &str) {
    let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

/// The Node's `spec.podCIDR` once it has one, checking `podCIDRs` agrees.
async fn cidr_of(nodes: &Api<Node>, name: &str) -> PodCidr {
    let started = Instant::now();
    loop {
        let spec = nodes.get(name).await.unwrap().spec.unwrap_or_default();
        if let Some(cidr) = spec.pod_cidr {
            assert_eq!(spec.pod_cidrs, Some(vec![cidr.clone()]));
            return cidr.parse().unwrap();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{name} has no pod CIDR within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn nodes_get_distinct_slices_and_a_deleted_nodes_slice_is_reused() {
    let cluster = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let _controller = start(&cluster.client, ControllersConfig::default());

    create_node(&nodes, "node-1").await;
    create_node(&nodes, "node-2").await;
    let one = cidr_of(&nodes, "node-1").await;
    let two = cidr_of(&nodes, "node-2").await;
    let cluster_cidr: Cidr = "10.0.0.0/14".parse().unwrap();
    assert_ne!(one, two);
    for cidr in [one, two] {
        assert_eq!(cidr.cidr().prefix_len(), 24);
        assert!(cluster_cidr.contains(cidr.cidr().network()), "{cidr}");
    }

    nodes
        .delete("node-1", &DeleteParams::default())
        .await
        .unwrap();
    // The freed slice is the lowest free one again (the deletion is
    // reconciled before the later creation: one watch, one queue).
    create_node(&nodes, "node-3").await;
    let three = cidr_of(&nodes, "node-3").await;
    assert_eq!(three, one);
    assert_eq!(cidr_of(&nodes, "node-2").await, two);
}

#[tokio::test]
async fn a_restarted_controller_keeps_the_recorded_slices() {
    let cluster = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let first = start(&cluster.client, ControllersConfig::default());
    create_node(&nodes, "node-a").await;
    let a = cidr_of(&nodes, "node-a").await;
    create_node(&nodes, "node-b").await;
    let b = cidr_of(&nodes, "node-b").await;
    first.abort();
    let _ = first.await;

    let _second = start(&cluster.client, ControllersConfig::default());
    create_node(&nodes, "node-c").await;
    let c = cidr_of(&nodes, "node-c").await;
    assert!(c != a && c != b, "{c} handed out twice");
    assert_eq!(cidr_of(&nodes, "node-a").await, a);
    assert_eq!(cidr_of(&nodes, "node-b").await, b);
}

#[tokio::test]
async fn an_exhausted_cluster_cidr_is_reported_until_a_slice_is_freed() {
    let cluster = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    // Two /24 slices in all.
    let config = ControllersConfig {
        cluster_cidr: "10.8.0.0/23".parse().unwrap(),
        ..ControllersConfig::default()
    };
    let _controller = start(&cluster.client, config);
    create_node(&nodes, "node-1").await;
    create_node(&nodes, "node-2").await;
    let one = cidr_of(&nodes, "node-1").await;
    cidr_of(&nodes, "node-2").await;
    create_node(&nodes, "node-3").await;

    let about = ListParams::default().fields("involvedObject.name=node-3");
    eventually(DEADLINE, "node-3 gets a CIDRNotAvailable event", || async {
        events.list(&about).await.unwrap().items.iter().any(|e| {
            e.reason.as_deref() == Some("CIDRNotAvailable")
                && e.type_.as_deref() == Some("Warning")
                && e.involved_object.kind.as_deref() == Some("Node")
                && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("cidrAllocator")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("10.8.0.0/23"))
        })
    })
    .await;
    let unavailable = |node: &Node| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "NetworkUnavailable")
            .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
    };
    eventually(DEADLINE, "node-3 is NetworkUnavailable", || async {
        unavailable(&nodes.get("node-3").await.unwrap())
            == Some(("True".into(), "NoCIDRAvailable".into()))
    })
    .await;
    assert!(
        nodes
            .get("node-3")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.pod_cidr)
            .is_none()
    );

    nodes
        .delete("node-1", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(cidr_of(&nodes, "node-3").await, one);
    eventually(DEADLINE, "node-3's condition is cleared", || async {
        unavailable(&nodes.get("node-3").await.unwrap()).is_some_and(|(s, _)| s == "False")
    })
    .await;
}
