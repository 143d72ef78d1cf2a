//! Deployments, ReplicaSets and garbage collection against a whole API
//! server in-process (a temporary SQLite file), through the real `kube`
//! client: a Deployment gets a `<deployment>-<hash>` ReplicaSet and its
//! pods, keeps their count through deletions and scaling, rolls to a new
//! template, and takes everything with it when deleted; the garbage
//! collector deletes only what has lost every owner, and confirms an owner
//! missing from its caches with a GET. No node agent runs
//! here, so pods are marked running and ready by hand through the status
//! subresource.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// How long the controllers may take to catch up.
const DEADLINE: Duration = Duration::from_secs(30);

async fn cluster() -> Cluster {
    let cluster = common::api_server().await;
    let client = cluster.client.clone();
    tokio::spawn(knit_controllers::deployment::run(client.clone()));
    tokio::spawn(knit_controllers::replicaset::run(client.clone()));
    tokio::spawn(knit_controllers::gc::run(client.clone()));
    cluster
}

/// Polls `check` until it holds, marking every pod ready meanwhile when
/// `ready` is set.
async fn eventually<F, Fut>(what: &str, pods: Option<&Api<Pod>>, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if let Some(pods) = pods {
            mark_ready(pods).await;
        }
        if check().await {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// What a node agent would report: every pod not yet ready becomes
/// Running with an address and `Ready=True`.
async fn mark_ready(pods: &Api<Pod>) {
    let list = pods.list(&ListParams::default()).await.unwrap();
    for (i, pod) in list.items.iter().enumerate() {
        if is_ready(pod) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let status = json!({"status": {"phase": "Running", "podIP": format!("10.0.1.{}", i + 2),
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}});
        // A pod deleted meanwhile is fine.
        let _ = pods
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await;
    }
}

fn deployment(replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "service-test"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "service_test_pod"}},
            "template": {"metadata": {"labels": {"app": "service_test_pod"}},
                "spec": {"containers": [{"name": "web", "image": image}]}},
        },
    }))
    .unwrap()
}

async fn live_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn controller(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String, String) {
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .expect("a controller reference");
    assert_eq!(owner.block_owner_deletion, Some(true));
    (owner.kind.clone(), owner.name.clone(), owner.uid.clone())
}

#[tokio::test]
async fn a_deployment_rolls_scales_heals_and_is_collected() {
    let cluster = cluster().await;
    let deployments: Api<Deployment> = Api::default_namespaced(cluster.client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    let created = deployments
        .create(&PostParams::default(), &deployment(2, "nginx:1.27"))
        .await
        .unwrap();
    let deployment_uid = created.uid().unwrap();

    // One ReplicaSet named <deployment>-<hash>, owned by the Deployment.
    eventually("a ReplicaSet", None, || async {
        !replicasets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    })
    .await;
    let first = replicasets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let rs_name = first.name_any();
    let hash = rs_name
        .strip_prefix("service-test-")
        .expect("named after the deployment");
    assert!(!hash.is_empty() && hash.len() <= 10, "{rs_name}");
    assert!(
        hash.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
        "{rs_name}"
    );
    assert_eq!(
        first.labels().get("pod-template-hash").map(String::as_str),
        Some(hash)
    );
    assert_eq!(
        controller(&first.metadata),
        (
            "Deployment".into(),
            "service-test".into(),
            deployment_uid.clone()
        )
    );
    let rs_uid = first.uid().unwrap();

    // Two pods named <rs>-xxxxx, owned by it.
    eventually("two pods", None, || async {
        live_pods(&pods).await.len() == 2
    })
    .await;
    for pod in live_pods(&pods).await {
        let suffix = pod
            .name_any()
            .strip_prefix(&format!("{rs_name}-"))
            .map(str::len);
        assert_eq!(suffix, Some(5), "{}", pod.name_any());
        assert_eq!(
            controller(&pod.metadata),
            ("ReplicaSet".into(), rs_name.clone(), rs_uid.clone())
        );
        assert_eq!(
            pod.labels().get("pod-template-hash").map(String::as_str),
            Some(hash)
        );
    }

    // A deleted pod is replaced.
    let victim = live_pods(&pods).await[0].name_any();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually("a replacement pod", None, || async {
        let live = live_pods(&pods).await;
        live.len() == 2 && live.iter().all(|p| p.name_any() != victim)
    })
    .await;

    // Scaling to three.
    deployments
        .patch(
            "service-test",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually("three pods", None, || async {
        live_pods(&pods).await.len() == 3
    })
    .await;

    // A new image: a new ReplicaSet, the old one at zero, the rollout done.
    deployments
        .patch(
            "service-test",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}})),
        )
        .await
        .unwrap();
    eventually("the rollout to finish", Some(&pods), || async {
        let d = deployments.get("service-test").await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        let old = replicasets.get(&rs_name).await.unwrap();
        let live = live_pods(&pods).await;
        s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.replicas == Some(3)
            && old.spec.unwrap().replicas == Some(0)
            && live.len() == 3
            && live.iter().all(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1.28")
            })
    })
    .await;
    let all = replicasets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 2);
    let new = all.iter().find(|rs| rs.name_any() != rs_name).unwrap();
    assert_eq!(
        new.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    let done = deployments
        .get("service-test")
        .await
        .unwrap()
        .status
        .unwrap();
    let progressing = done
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    deployments
        .delete("service-test", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ReplicaSets and pods to be collected", None, || async {
        replicasets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            && pods
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
    })
    .await;
}

#[tokio::test]
async fn only_dependents_of_missing_owners_are_collected() {
    let cluster = cluster().await;
    let services: Api<Service> = Api::default_namespaced(cluster.client.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(cluster.client.clone());
    let service: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]}}))
    .unwrap();
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let owned_by = |name: &str, owner: &str, uid: &str| -> Endpoints {
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [
            {"apiVersion": "v1", "kind": "Service", "name": owner, "uid": uid}]}}))
        .unwrap()
    };
    let live_uid = service.uid().unwrap();
    endpoints
        .create(&PostParams::default(), &owned_by("web", "web", &live_uid))
        .await
        .unwrap();
    endpoints
        .create(
            &PostParams::default(),
            &owned_by("stale", "web", "an-old-uid"),
        )
        .await
        .unwrap();
    endpoints
        .create(&PostParams::default(), &owned_by("gone", "nothing", "x"))
        .await
        .unwrap();
    eventually("the orphans to be collected", None, || async {
        endpoints.get_opt("stale").await.unwrap().is_none()
            && endpoints.get_opt("gone").await.unwrap().is_none()
    })
    .await;
    assert!(endpoints.get_opt("web").await.unwrap().is_some());

    // Its owner deleted, the last one goes too.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the dependent of a deleted owner", None, || async {
        endpoints.get_opt("web").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn an_owner_missing_only_from_the_cache_keeps_its_dependents() {
    use knit_controllers::gc;
    use kube::runtime::{reflector, watcher};

    // The API server without any controller: the collector is driven by hand.
    let cluster = common::api_server().await;
    let client = cluster.client.clone();
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(client.clone());
    let service: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]}}))
    .unwrap();
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let dependent: Endpoints = serde_json::from_value(json!({"metadata": {"name": "web",
        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web",
            "uid": service.uid().unwrap()}]}}))
    .unwrap();
    let dependent = endpoints
        .create(&PostParams::default(), &dependent)
        .await
        .unwrap();

    // Caches that hold the dependent but not (yet) its owner.
    let (endpoint_cache, mut writer) = reflector::store::<Endpoints>();
    writer.apply_watcher_event(&watcher::Event::Apply(dependent));
    let ctx = gc::Context {
        client: client.clone(),
        deployments: reflector::store().0,
        replicasets: reflector::store().0,
        services: reflector::store().0,
        pods: reflector::store().0,
        nodes: reflector::store().0,
        endpoints: endpoint_cache,
        slices: reflector::store().0,
    };
    let key = ("default".to_string(), "endpoints/web".to_string());
    gc::reconcile(&key, &ctx).await.unwrap();
    assert!(
        endpoints.get_opt("web").await.unwrap().is_some(),
        "the GET found the owner"
    );

    // Once the owner is really gone, the same call collects it.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    gc::reconcile(&key, &ctx).await.unwrap();
    assert!(endpoints.get_opt("web").await.unwrap().is_none());
}
