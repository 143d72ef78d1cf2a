//! Service admission through the whole API: ClusterIPs and NodePorts are
//! taken as Services are written, given back when writes fail or Services
//! go, rebuilt from the store after a restart, and repaired when leaked.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use http::Method;
use knit_apiserver::services::{self, LEAK_CONFIRMATIONS, Suspects};
use knit_apiserver::{ApiConfig, AppState};
use serde_json::{Value, json};

const SERVICES: &str = "/api/v1/namespaces/default/services";

fn node_port_service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [{"port": 80}]}})
}

fn values(service: &Value) -> (String, u64) {
    (
        service["spec"]["clusterIP"].as_str().unwrap().to_string(),
        service["spec"]["ports"][0]["nodePort"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn two_hundred_concurrent_creates_get_distinct_ips_and_node_ports() {
    let api = Arc::new(common::start().await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let api = api.clone();
        tasks.spawn(async move {
            api.post_json(SERVICES, &node_port_service(&format!("s{i}")))
                .await
        });
    }
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.code, 201, "{}", reply.text);
        let (ip, port) = values(&reply.body);
        assert!(
            ip.starts_with("10.3.24") || ip.starts_with("10.3.25"),
            "{ip}"
        );
        assert!((30000..=32767).contains(&port), "{port}");
        ips.insert(ip);
        ports.insert(port);
    }
    assert_eq!((ips.len(), ports.len()), (200, 200));
}

#[tokio::test]
async fn a_taken_ip_or_port_is_refused_and_the_refused_write_holds_nothing() {
    let api = common::start().await;
    let first = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
        "spec": {"type": "NodePort", "clusterIP": "10.3.240.50", "ports": [{"port": 80, "nodePort": 30080}]}});
    assert_eq!(api.post_json(SERVICES, &first).await.code, 201);

    // Same IP, fresh port: refused, and the fresh port is not kept.
    let clash = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"},
        "spec": {"type": "NodePort", "clusterIP": "10.3.240.50", "ports": [{"port": 80, "nodePort": 30081}]}});
    let reply = api.post_json(SERVICES, &clash).await;
    assert_eq!(reply.code, 422, "{}", reply.text);
    assert_eq!(reply.body["reason"], "Invalid");
    assert_eq!(
        reply.body["details"]["causes"][0]["field"],
        "spec.clusterIPs"
    );
    assert!(
        reply.text.contains("provided IP is already allocated"),
        "{}",
        reply.text
    );
    assert!(!api.state.services.port_taken(30081));

    let port_clash = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
    let reply = api.post_json(SERVICES, &port_clash).await;
    assert_eq!(reply.code, 422, "{}", reply.text);
    assert_eq!(
        reply.body["details"]["causes"][0]["field"],
        "spec.ports[0].nodePort"
    );
    assert_eq!(api.get(&format!("{SERVICES}/c")).await.code, 404);

    // A write that fails for another reason (the name is taken) gives back
    // what admission took.
    let taken_name = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
        "spec": {"type": "NodePort", "clusterIP": "10.3.240.51", "ports": [{"port": 80, "nodePort": 30082}]}});
    assert_eq!(api.post_json(SERVICES, &taken_name).await.code, 409);
    assert!(!api.state.services.ip_taken("10.3.240.51".parse().unwrap()));
    assert!(!api.state.services.port_taken(30082));

    // Deleting frees both.
    let reply = api
        .request(
            Method::DELETE,
            &format!("{SERVICES}/a"),
            "application/json",
            "",
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert!(!api.state.services.ip_taken("10.3.240.50".parse().unwrap()));
    assert!(!api.state.services.port_taken(30080));
}

#[tokio::test]
async fn changing_type_allocates_and_frees_and_a_put_keeps_the_values() {
    let api = common::start().await;
    let created = api
        .post_json(SERVICES, &node_port_service("web"))
        .await
        .body;
    let (ip, port) = values(&created);

    // A PUT that leaves clusterIP and nodePort out keeps both.
    let mut put = node_port_service("web");
    put["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    let reply = api
        .request(
            Method::PUT,
            &format!("{SERVICES}/web"),
            "application/json",
            serde_json::to_vec(&put).unwrap(),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(values(&reply.body), (ip.clone(), port));

    // To ClusterIP: the node port is dropped and freed.
    let patch = json!({"spec": {"type": "ClusterIP"}});
    let reply = api
        .request(
            Method::PATCH,
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert!(
        reply.body["spec"]["ports"][0].get("nodePort").is_none(),
        "{}",
        reply.text
    );
    assert!(!api.state.services.port_taken(port as u16));
    assert_eq!(reply.body["spec"]["clusterIP"], ip);

    // To ExternalName: the address goes too.
    let patch = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com", "selector": null}});
    let reply = api
        .request(
            Method::PATCH,
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert!(
        reply.body["spec"].get("clusterIP").is_none(),
        "{}",
        reply.text
    );
    assert!(!api.state.services.ip_taken(ip.parse().unwrap()));
}

#[tokio::test]
async fn a_restart_rebuilds_exactly_what_was_stored_and_repair_frees_leaks() {
    let api = common::start().await;
    let mut held = Vec::new();
    for name in ["a", "b", "c"] {
        held.push(values(
            &api.post_json(SERVICES, &node_port_service(name)).await.body,
        ));
    }
    // A second server state on the same store, as after a crash: it holds
    // exactly the stored values and nothing a lost write had taken.
    let (restarted, _stop) =
        AppState::new(Arc::new(api.store.clone()), ApiConfig::default()).unwrap();
    services::rebuild_from_store(&restarted).await.unwrap();
    // The kubernetes Service a restart finds is left as it is.
    services::ensure_kubernetes_service(&restarted, 6443)
        .await
        .unwrap();
    services::ensure_kubernetes_service(&restarted, 6443)
        .await
        .unwrap();
    for (ip, port) in &held {
        assert!(restarted.services.ip_taken(ip.parse().unwrap()));
        assert!(restarted.services.port_taken(*port as u16));
    }

    // A leak (a value taken with no Service to hold it) is freed only after
    // it was seen on LEAK_CONFIRMATIONS passes in a row.
    let resource = knit_api::registry::lookup("", "v1", "services").unwrap();
    let mut orphan = node_port_service("ghost");
    restarted
        .services
        .admit(resource, None, &mut orphan)
        .unwrap()
        .unwrap()
        .commit();
    let (ip, port) = values(&orphan);
    let mut suspects = Suspects::default();
    for _ in 1..LEAK_CONFIRMATIONS {
        assert_eq!(
            services::repair_once(&restarted, &mut suspects)
                .await
                .unwrap(),
            0
        );
        assert!(restarted.services.ip_taken(ip.parse().unwrap()));
    }
    assert_eq!(
        services::repair_once(&restarted, &mut suspects)
            .await
            .unwrap(),
        2
    );
    assert!(!restarted.services.ip_taken(ip.parse().unwrap()));
    assert!(!restarted.services.port_taken(port as u16));
    for (ip, _) in &held {
        assert!(restarted.services.ip_taken(ip.parse().unwrap()));
    }
}

#[tokio::test]
async fn the_kubernetes_service_leads_to_the_api_itself() {
    let api = common::start().await;
    services::ensure_kubernetes_service(&api.state, 6443)
        .await
        .unwrap();
    let service = api.get(&format!("{SERVICES}/kubernetes")).await.body;
    assert_eq!(service["spec"]["clusterIP"], "10.3.240.1");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 6443);

    // On loopback there is no address a pod could reach: no endpoints.
    services::ensure_kubernetes_endpoints(&api.state, "127.0.0.1:6443".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        api.get("/api/v1/namespaces/default/endpoints/kubernetes")
            .await
            .code,
        404
    );

    for address in ["10.100.0.2", "10.100.0.9"] {
        let listen = format!("{address}:6443").parse().unwrap();
        services::ensure_kubernetes_endpoints(&api.state, listen)
            .await
            .unwrap();
        let endpoints = api
            .get("/api/v1/namespaces/default/endpoints/kubernetes")
            .await
            .body;
        assert_eq!(
            endpoints["subsets"][0]["addresses"],
            json!([{"ip": address}])
        );
        assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], 6443);
        let slice = api
            .get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes")
            .await
            .body;
        assert_eq!(slice["endpoints"][0]["addresses"], json!([address]));
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "kubernetes"
        );
    }
}
