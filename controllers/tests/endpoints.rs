//! The endpoints controller against a whole API server in-process (a
//! temporary SQLite file), through the real `kube` client: Endpoints and
//! slices follow pods' addresses and readiness, and leave with their Service.

mod common;

use std::time::Duration;

use common::{Cluster, eventually};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// How long the controller may take to catch up.
const DEADLINE: Duration = Duration::from_secs(10);

async fn cluster() -> Cluster {
    let cluster = common::api_server().await;
    let client = cluster.client.clone();
    tokio::spawn(knit_controllers::endpoints::run(client.clone()));
    cluster
}

async fn start_pod(pods: &Api<Pod>, name: &str, ip: &str, node: &str) {
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "service_test_pod"}},
        "spec": {"nodeName": node, "containers": [{"name": "simple-http", "image": "python:2.7",
                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    set_ready(pods, name, Some(ip), true).await;
}

async fn set_ready(pods: &Api<Pod>, name: &str, ip: Option<&str>, ready: bool) {
    let mut status = json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]});
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
}

fn addresses(endpoints: &Endpoints, not_ready: bool) -> Vec<String> {
    endpoints
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
        .collect()
}

#[tokio::test]
async fn endpoints_follow_pods_and_readiness_and_leave_with_the_service() {
    let cluster = cluster().await;
    let services: Api<Service> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(cluster.client.clone());
    let slices: Api<EndpointSlice> = Api::default_namespaced(cluster.client.clone());

    start_pod(&pods, "service-test-a", "10.0.1.2", "node-1").await;
    let service = serde_json::from_value(json!({
        "metadata": {"name": "service-test"},
        "spec": {"selector": {"app": "service_test_pod"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    start_pod(&pods, "service-test-b", "10.0.2.2", "node-2").await;

    eventually(DEADLINE, "both pods are endpoints on port 8080", || async {
        let Ok(Some(ep)) = endpoints.get_opt("service-test").await else {
            return false;
        };
        let port = ep
            .subsets
            .as_ref()
            .and_then(|s| s[0].ports.as_ref())
            .map(|p| p[0].port);
        addresses(&ep, false) == ["10.0.1.2", "10.0.2.2"] && port == Some(8080)
    })
    .await;
    let ep = endpoints.get("service-test").await.unwrap();
    assert!(
        ep.metadata
            .annotations
            .unwrap()
            .contains_key(knit_controllers::endpoints::TRIGGER_TIME)
    );

    // Readiness lost: the address moves to notReadyAddresses, the slice says so.
    set_ready(&pods, "service-test-b", None, false).await;
    eventually(DEADLINE, "b is not ready", || async {
        let ep = endpoints.get("service-test").await.unwrap();
        addresses(&ep, false) == ["10.0.1.2"] && addresses(&ep, true) == ["10.0.2.2"]
    })
    .await;
    let selector = ListParams::default().labels("kubernetes.io/service-name=service-test");
    // The slices are written after the Endpoints: wait for them to say so too.
    eventually(DEADLINE, "b's slice endpoint is not ready", || async {
        let listed = slices.list(&selector).await.unwrap().items;
        listed.iter().flat_map(|s| &s.endpoints).any(|e| {
            e.addresses == ["10.0.2.2"]
                && e.conditions.as_ref().and_then(|c| c.ready) == Some(false)
        })
    })
    .await;
    let listed = slices.list(&selector).await.unwrap().items;
    assert_eq!(listed.len(), 1);
    let b = listed[0]
        .endpoints
        .iter()
        .find(|e| e.addresses == ["10.0.2.2"])
        .unwrap();
    assert_eq!(b.conditions.as_ref().unwrap().ready, Some(false));
    assert_eq!(b.node_name.as_deref(), Some("node-2"));

    // A deleted pod leaves; a deleted service takes everything with it.
    pods.delete("service-test-a", &DeleteParams::default())
        .await
        .unwrap();
    eventually(DEADLINE, "a is gone", || async {
        let ep = endpoints.get("service-test").await.unwrap();
        addresses(&ep, false).is_empty() && addresses(&ep, true) == ["10.0.2.2"]
    })
    .await;
    services
        .delete("service-test", &DeleteParams::default())
        .await
        .unwrap();
    eventually(DEADLINE, "endpoints and slices are gone", || async {
        endpoints.get_opt("service-test").await.unwrap().is_none()
            && slices.list(&selector).await.unwrap().items.is_empty()
    })
    .await;
}

#[tokio::test]
async fn endpoints_written_by_hand_for_a_service_without_selector_are_left_alone() {
    let cluster = cluster().await;
    let services: Api<Service> = Api::default_namespaced(cluster.client.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(cluster.client.clone());
    let service = serde_json::from_value(json!({
        "metadata": {"name": "external-db"}, "spec": {"ports": [{"port": 5432}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let manual = serde_json::from_value(json!({
        "metadata": {"name": "external-db"},
        "subsets": [{"addresses": [{"ip": "192.168.1.50"}], "ports": [{"port": 5432}]}],
    }))
    .unwrap();
    endpoints
        .create(&PostParams::default(), &manual)
        .await
        .unwrap();
    // Give the controller time to (wrongly) act, then check it did not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = endpoints.get("external-db").await.unwrap();
    assert_eq!(addresses(&kept, false), ["192.168.1.50"]);
}
