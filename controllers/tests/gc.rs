//! Deletion propagation end to end against a whole API server in-process,
//! through the real `kube` client, with the Deployment and ReplicaSet
//! controllers and the garbage collector running: `Orphan` leaves the
//! ReplicaSet and its pods without the Deployment's reference, `Foreground`
//! keeps the Deployment until its ReplicaSet and pods are gone,
//! `Background` still collects, owners of any kind knit serves are
//! handled, and a collector stopped halfway and started again finishes.

mod common;

use std::time::Duration;

use common::{Cluster, eventually};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// How long the controllers may take to catch up.
const DEADLINE: Duration = Duration::from_secs(30);

/// The API server with the Deployment and ReplicaSet controllers, and the
/// collector unless `gc` is false.
async fn cluster(gc: bool) -> Cluster {
    let cluster = common::api_server().await;
    let client = cluster.client.clone();
    tokio::spawn(knit_controllers::deployment::run(client.clone()));
    tokio::spawn(knit_controllers::replicaset::run(client.clone()));
    if gc {
        tokio::spawn(knit_controllers::gc::run(client.clone()));
    }
    cluster
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
        },
    }))
    .unwrap()
}

fn by_app(name: &str) -> ListParams {
    ListParams::default().labels(&format!("app={name}"))
}

fn references(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.uid == uid)
}

/// Creates a Deployment and waits for its ReplicaSet and `replicas` pods;
/// returns the Deployment's uid.
async fn rolled_out(cluster: &Cluster, name: &str, replicas: i32) -> String {
    let deployments: Api<Deployment> = Api::default_namespaced(cluster.client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let created = deployments
        .create(&PostParams::default(), &deployment(name, replicas))
        .await
        .unwrap();
    let uid = created.uid().unwrap();
    eventually(DEADLINE, "the ReplicaSet and its pods", || async {
        let sets = replicasets.list(&by_app(name)).await.unwrap().items;
        let count = pods.list(&by_app(name)).await.unwrap().items.len();
        sets.len() == 1 && references(&sets[0].metadata, &uid) && count == replicas as usize
    })
    .await;
    uid
}

#[tokio::test]
async fn orphan_leaves_the_replicaset_and_pods_without_the_deployment() {
    let cluster = cluster(true).await;
    let deployments: Api<Deployment> = Api::default_namespaced(cluster.client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let uid = rolled_out(&cluster, "web", 2).await;
    let rs = replicasets
        .list(&by_app("web"))
        .await
        .unwrap()
        .items
        .remove(0);

    deployments
        .delete("web", &DeleteParams::orphan())
        .await
        .unwrap();
    eventually(DEADLINE, "the orphaned Deployment to go", || async {
        deployments.get_opt("web").await.unwrap().is_none()
    })
    .await;

    // Given time to do wrong, nothing else goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sets = replicasets.list(&by_app("web")).await.unwrap().items;
    assert_eq!(sets.len(), 1, "the ReplicaSet stays");
    assert_eq!(sets[0].uid(), rs.uid(), "the same ReplicaSet");
    assert!(
        !references(&sets[0].metadata, &uid),
        "no reference to the Deployment: {:?}",
        sets[0].metadata.owner_references
    );
    let left = pods.list(&by_app("web")).await.unwrap().items;
    assert_eq!(left.len(), 2, "its pods stay");
    for pod in &left {
        assert!(pod.metadata.deletion_timestamp.is_none());
        assert!(!references(&pod.metadata, &uid));
        assert!(
            references(&pod.metadata, &rs.uid().unwrap()),
            "still the ReplicaSet's"
        );
    }
}

#[tokio::test]
async fn foreground_keeps_the_deployment_until_its_replicaset_and_pods_are_gone() {
    let cluster = cluster(true).await;
    let deployments: Api<Deployment> = Api::default_namespaced(cluster.client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    rolled_out(&cluster, "web", 2).await;
    let first_pods: Vec<String> = pods
        .list(&by_app("web"))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();

    deployments
        .delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    let marked = deployments.get_opt("web").await.unwrap();
    let marked = marked.expect("the Deployment stays while it has dependents");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.finalizers(), ["foregroundDeletion"]);

    // Each time the Deployment is seen gone, its ReplicaSet and the pods it
    // had are already gone (read after it, so whatever was there before is
    // seen).
    eventually(
        DEADLINE,
        "the Deployment to go after its dependents",
        || async {
            if deployments.get_opt("web").await.unwrap().is_some() {
                return false;
            }
            let sets = replicasets.list(&by_app("web")).await.unwrap().items;
            assert!(sets.is_empty(), "the ReplicaSet outlived its Deployment");
            let left = pods.list(&by_app("web")).await.unwrap().items;
            assert!(
                left.iter().all(|p| !first_pods.contains(&p.uid().unwrap())),
                "pods outlived their Deployment"
            );
            true
        },
    )
    .await;
    // Pods the ReplicaSet controller may still have made for its deleting
    // ReplicaSet have no owner left and are collected too.
    eventually(DEADLINE, "every pod to be gone", || async {
        pods.list(&by_app("web")).await.unwrap().items.is_empty()
    })
    .await;
}

#[tokio::test]
async fn background_still_collects() {
    let cluster = cluster(true).await;
    let deployments: Api<Deployment> = Api::default_namespaced(cluster.client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    rolled_out(&cluster, "web", 2).await;

    deployments
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    assert!(
        deployments.get_opt("web").await.unwrap().is_none(),
        "background deletes the owner at once"
    );
    eventually(
        DEADLINE,
        "the ReplicaSet and pods to be collected",
        || async {
            replicasets
                .list(&by_app("web"))
                .await
                .unwrap()
                .items
                .is_empty()
                && pods.list(&by_app("web")).await.unwrap().items.is_empty()
        },
    )
    .await;
}

fn config_map(name: &str, owners: &[(&ConfigMap, bool)]) -> ConfigMap {
    let owners: Vec<_> = owners
        .iter()
        .map(|(o, block)| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "name": o.name_any(), "uid": o.uid().unwrap(), "blockOwnerDeletion": block})
        })
        .collect();
    serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": owners}})).unwrap()
}

#[tokio::test]
async fn owners_of_any_kind_and_shared_dependents() {
    let cluster = cluster(true).await;
    let maps: Api<ConfigMap> = Api::default_namespaced(cluster.client.clone());
    let create = |map: ConfigMap| {
        let maps = maps.clone();
        async move { maps.create(&PostParams::default(), &map).await.unwrap() }
    };
    let a = create(config_map("a", &[])).await;
    let b = create(config_map("b", &[])).await;
    let shared = create(config_map("shared", &[(&a, true), (&b, false)])).await;
    let leaf = create(config_map("leaf", &[(&shared, true)])).await;

    // A foreground owner does not wait for a dependent another owner keeps:
    // the dependent only loses the reference.
    maps.delete("a", &DeleteParams::foreground()).await.unwrap();
    eventually(DEADLINE, "a to go", || async {
        maps.get_opt("a").await.unwrap().is_none()
    })
    .await;
    let kept = maps.get("shared").await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert!(!references(&kept.metadata, &a.uid().unwrap()));
    assert!(
        references(&kept.metadata, &b.uid().unwrap()),
        "the other owner stays"
    );

    // Orphaning the last owner leaves the dependent with no owner at all.
    maps.delete("b", &DeleteParams::orphan()).await.unwrap();
    eventually(DEADLINE, "b to go", || async {
        maps.get_opt("b").await.unwrap().is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = maps.get("shared").await.unwrap();
    assert_eq!(kept.uid(), shared.uid());
    assert!(
        kept.owner_references().is_empty(),
        "{:?}",
        kept.owner_references()
    );

    // Foreground again: the dependent goes first, then the owner.
    maps.delete("shared", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(DEADLINE, "shared to go after leaf", || async {
        if maps.get_opt("shared").await.unwrap().is_some() {
            return false;
        }
        assert!(
            maps.get_opt("leaf").await.unwrap().is_none(),
            "leaf outlived its owner"
        );
        true
    })
    .await;
    assert!(leaf.uid().is_some());
}

#[tokio::test]
async fn a_collector_restarted_halfway_finishes_the_job() {
    // No collector at first: the deletes only mark the owners.
    let cluster = cluster(false).await;
    let deployments: Api<Deployment> = Api::default_namespaced(cluster.client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let kept_uid = rolled_out(&cluster, "kept", 2).await;
    rolled_out(&cluster, "gone", 2).await;
    deployments
        .delete("kept", &DeleteParams::orphan())
        .await
        .unwrap();
    deployments
        .delete("gone", &DeleteParams::foreground())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["kept", "gone"] {
        let marked = deployments.get(name).await.unwrap();
        assert!(
            marked.metadata.deletion_timestamp.is_some(),
            "{name} waits for a collector"
        );
    }

    // A collector runs until it has made some progress, and is stopped.
    let first = tokio::spawn(knit_controllers::gc::run(cluster.client.clone()));
    eventually(
        DEADLINE,
        "the first collector to start on the work",
        || async {
            let kept = replicasets.list(&by_app("kept")).await.unwrap().items;
            let gone = replicasets.list(&by_app("gone")).await.unwrap().items;
            kept.iter().any(|rs| !references(&rs.metadata, &kept_uid))
                || gone
                    .iter()
                    .all(|rs| rs.metadata.deletion_timestamp.is_some())
        },
    )
    .await;
    first.abort();
    let _ = first.await;

    // Another one finishes both.
    tokio::spawn(knit_controllers::gc::run(cluster.client.clone()));
    eventually(DEADLINE, "both deletions to finish", || async {
        deployments.get_opt("kept").await.unwrap().is_none()
            && deployments.get_opt("gone").await.unwrap().is_none()
    })
    .await;
    assert!(
        replicasets
            .list(&by_app("gone"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    eventually(
        DEADLINE,
        "the pods of the collected ReplicaSet to go",
        || async { pods.list(&by_app("gone")).await.unwrap().items.is_empty() },
    )
    .await;
    let kept = replicasets.list(&by_app("kept")).await.unwrap().items;
    assert_eq!(kept.len(), 1);
    assert!(!references(&kept[0].metadata, &kept_uid));
    assert_eq!(pods.list(&by_app("kept")).await.unwrap().items.len(), 2);
}
