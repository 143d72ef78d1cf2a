//! Deployments, ReplicaSets and garbage collection against a whole API
//! server in-process (a temporary SQLite file), through the real `kube`
//! client: a Deployment gets a `<deployment>-<hash>` ReplicaSet and its
//! pods, keeps their count through deletions and scaling, rolls to a new
//! template, and takes everything with it when deleted; the garbage
//! collector deletes only what has lost every owner, and confirms an owner
//! missing from its caches with a GET. What a careful kubectl user relies
//! on is here too: `minReadySeconds`, `kubectl rollout pause/resume`,
//! `revisionHistoryLimit`, `progressDeadlineSeconds`, proportional scaling
//! mid-rollout, and `kubectl rollout undo` (done here as kubectl v1.35 does
//! it, client-side) and `rollout restart`. No node agent runs here, so pods
//! are marked running and ready by hand through the status subresource.

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

/// Marks ready, with a `Ready` transition time of now, the live pods not
/// yet ready whose template hash `pick` accepts; returns the transition time
/// written when it marked any.
async fn mark_ready_where(pods: &Api<Pod>, pick: impl Fn(&str) -> bool) -> Option<jiff::Timestamp> {
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap();
    let mut marked = None;
    for pod in live_pods(pods).await {
        let hash = pod
            .labels()
            .get("pod-template-hash")
            .cloned()
            .unwrap_or_default();
        if is_ready(&pod) || !pick(&hash) {
            continue;
        }
        let status = json!({"status": {"phase": "Running", "podIP": "10.0.1.9",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now.to_string()},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now.to_string()}]}});
        if pods
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
            .is_ok()
        {
            marked = Some(now);
        }
    }
    marked
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn progressing_reason(d: &Deployment) -> String {
    condition(d, "Progressing").map(|c| c.1).unwrap_or_default()
}

fn annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1)
}

async fn replicaset_list(api: &Api<ReplicaSet>) -> Vec<ReplicaSet> {
    let mut list = api.list(&ListParams::default()).await.unwrap().items;
    list.sort_by_key(|rs| {
        annotation(&rs.metadata, "deployment.kubernetes.io/revision")
            .and_then(|r| r.parse::<u64>().ok())
    });
    list
}

/// Whether the Deployment's rollout is done as `kubectl rollout status`
/// sees it, with every replica available.
async fn rolled_out(deployments: &Api<Deployment>, replicas: i32) -> bool {
    let d = deployments.get("service-test").await.unwrap();
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation == d.metadata.generation
        && s.updated_replicas == Some(replicas)
        && s.replicas == Some(replicas)
        && s.available_replicas == Some(replicas)
        && progressing_reason(&d) == "NewReplicaSetAvailable"
}

async fn set_image(deployments: &Api<Deployment>, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}});
    deployments
        .patch(
            "service-test",
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .unwrap();
}

async fn patch_spec(deployments: &Api<Deployment>, spec: serde_json::Value) {
    deployments
        .patch(
            "service-test",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .unwrap();
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

    // A graph that holds the dependent but not (yet) its owner.
    let graph = gc::Graph::new([gc::Item::new(
        gc::Kind::named("Endpoints"),
        &dependent.metadata,
    )]);
    let key = ("default".to_string(), "endpoints/web".to_string());
    gc::reconcile_in(&graph, &key, &client).await.unwrap();
    assert!(
        endpoints.get_opt("web").await.unwrap().is_some(),
        "the GET found the owner"
    );

    // Once the owner is really gone, the same call collects it.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    gc::reconcile_in(&graph, &key, &client).await.unwrap();
    assert!(endpoints.get_opt("web").await.unwrap().is_none());
}

struct Workloads {
    _cluster: Cluster,
    deployments: Api<Deployment>,
    replicasets: Api<ReplicaSet>,
    pods: Api<Pod>,
}

/// A cluster with the workload controllers and `service-test` created with
/// `spec` merged into [`deployment`]'s.
async fn with_deployment(replicas: i32, spec: serde_json::Value) -> Workloads {
    let cluster = cluster().await;
    let deployments: Api<Deployment> = Api::default_namespaced(cluster.client.clone());
    let mut object = serde_json::to_value(deployment(replicas, "nginx:1")).unwrap();
    for (key, value) in spec.as_object().unwrap() {
        object["spec"][key] = value.clone();
    }
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap();
    Workloads {
        replicasets: Api::default_namespaced(cluster.client.clone()),
        pods: Api::default_namespaced(cluster.client.clone()),
        deployments,
        _cluster: cluster,
    }
}

#[tokio::test]
async fn a_pod_is_available_only_after_min_ready_seconds() {
    let w = with_deployment(1, json!({"minReadySeconds": 3})).await;
    eventually("a pod", None, || async {
        live_pods(&w.pods).await.len() == 1
    })
    .await;
    let since = mark_ready_where(&w.pods, |_| true).await.expect("marked");
    let min_ready = jiff::SignedDuration::from_secs(3);

    // Ready at once, available not yet.
    eventually("the ReplicaSet to see a ready pod", None, || async {
        let rs = replicaset_list(&w.replicasets).await.remove(0);
        rs.status.is_some_and(|s| s.ready_replicas == Some(1))
    })
    .await;
    let rs = replicaset_list(&w.replicasets).await.remove(0);
    assert_eq!(rs.spec.as_ref().unwrap().min_ready_seconds, Some(3));
    if jiff::Timestamp::now() < since + min_ready {
        assert_eq!(rs.status.unwrap().available_replicas, Some(0));
        let d = w.deployments.get("service-test").await.unwrap();
        assert_ne!(d.status.unwrap().available_replicas, Some(1));
    }

    // Available once ready for longer than minReadySeconds, with no other
    // change to the pod: the controller looks again at that moment.
    eventually("the pod to turn available", None, || async {
        let d = w.deployments.get("service-test").await.unwrap();
        d.status.is_some_and(|s| s.available_replicas == Some(1))
    })
    .await;
    assert!(jiff::Timestamp::now() > since + min_ready);
    let rs = replicaset_list(&w.replicasets).await.remove(0);
    assert_eq!(rs.status.unwrap().available_replicas, Some(1));
    eventually("the rollout to complete", None, || {
        rolled_out(&w.deployments, 1)
    })
    .await;
}

#[tokio::test]
async fn a_paused_deployment_scales_but_rolls_only_once_resumed() {
    let w = with_deployment(2, json!({})).await;
    eventually("the first rollout", Some(&w.pods), || {
        rolled_out(&w.deployments, 2)
    })
    .await;
    let first = replicaset_list(&w.replicasets).await.remove(0).name_any();

    patch_spec(&w.deployments, json!({"paused": true})).await;
    eventually("Progressing to say paused", None, || async {
        let d = w.deployments.get("service-test").await.unwrap();
        condition(&d, "Progressing")
            == Some((
                "Unknown".into(),
                "DeploymentPaused".into(),
                "Deployment is paused".into(),
            ))
    })
    .await;

    // A new template while paused: observed, not rolled out.
    set_image(&w.deployments, "nginx:2").await;
    eventually("the change to be observed", None, || async {
        let d = w.deployments.get("service-test").await.unwrap();
        d.status.unwrap().observed_generation == d.metadata.generation
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sets = replicaset_list(&w.replicasets).await;
    assert_eq!(sets.len(), 1, "no new ReplicaSet while paused");

    // Scaling still works.
    patch_spec(&w.deployments, json!({"replicas": 3})).await;
    eventually("the paused Deployment to scale", Some(&w.pods), || async {
        let rs = w.replicasets.get(&first).await.unwrap();
        let d = w.deployments.get("service-test").await.unwrap();
        spec_replicas(&rs) == 3
            && live_pods(&w.pods).await.len() == 3
            && d.status.unwrap().available_replicas == Some(3)
    })
    .await;
    assert_eq!(replicaset_list(&w.replicasets).await.len(), 1);

    // Resumed: the new template rolls out.
    patch_spec(&w.deployments, json!({"paused": false})).await;
    eventually("the rollout after resuming", Some(&w.pods), || async {
        rolled_out(&w.deployments, 3).await
            && spec_replicas(&w.replicasets.get(&first).await.unwrap()) == 0
    })
    .await;
    let sets = replicaset_list(&w.replicasets).await;
    assert_eq!(sets.len(), 2);
    assert_eq!(
        annotation(&sets[1].metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn old_replicasets_beyond_the_history_limit_are_deleted_oldest_first() {
    let w = with_deployment(1, json!({"revisionHistoryLimit": 1})).await;
    eventually("revision 1", Some(&w.pods), || {
        rolled_out(&w.deployments, 1)
    })
    .await;
    let names = |sets: Vec<ReplicaSet>| sets.iter().map(ResourceExt::name_any).collect::<Vec<_>>();
    let one = names(replicaset_list(&w.replicasets).await);
    set_image(&w.deployments, "nginx:2").await;
    eventually("revision 2", Some(&w.pods), || {
        rolled_out(&w.deployments, 1)
    })
    .await;
    let two = names(replicaset_list(&w.replicasets).await);
    assert_eq!(two.len(), 2, "one old ReplicaSet is within the limit");
    set_image(&w.deployments, "nginx:3").await;
    eventually(
        "revision 3 and the oldest deleted",
        Some(&w.pods),
        || async {
            rolled_out(&w.deployments, 1).await && replicaset_list(&w.replicasets).await.len() == 2
        },
    )
    .await;
    let three = replicaset_list(&w.replicasets).await;
    let revisions: Vec<String> = three
        .iter()
        .map(|rs| annotation(&rs.metadata, "deployment.kubernetes.io/revision").unwrap())
        .collect();
    assert_eq!(revisions, vec!["2", "3"]);
    assert!(!names(three).contains(&one[0]), "revision 1 is gone");
    // Stays so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replicaset_list(&w.replicasets).await.len(), 2);
}

#[tokio::test]
async fn a_rollout_without_progress_exceeds_its_deadline_and_recovers() {
    let w = with_deployment(1, json!({"progressDeadlineSeconds": 2})).await;
    eventually("a pod", None, || async {
        live_pods(&w.pods).await.len() == 1
    })
    .await;
    // Nothing becomes ready: past the deadline, with no other event.
    eventually("the deadline to be exceeded", None, || async {
        let d = w.deployments.get("service-test").await.unwrap();
        condition(&d, "Progressing").is_some_and(|c| c.0 == "False")
    })
    .await;
    let d = w.deployments.get("service-test").await.unwrap();
    let rs = replicaset_list(&w.replicasets).await.remove(0).name_any();
    assert_eq!(
        condition(&d, "Progressing"),
        Some((
            "False".into(),
            "ProgressDeadlineExceeded".into(),
            format!("ReplicaSet \"{rs}\" has timed out progressing.")
        ))
    );
    // Ready at last: complete.
    eventually("the rollout to complete", Some(&w.pods), || {
        rolled_out(&w.deployments, 1)
    })
    .await;
    let d = w.deployments.get("service-test").await.unwrap();
    assert_eq!(
        condition(&d, "Progressing"),
        Some((
            "True".into(),
            "NewReplicaSetAvailable".into(),
            format!("ReplicaSet \"{rs}\" has successfully progressed.")
        ))
    );
}

#[tokio::test]
async fn resizing_mid_rollout_spreads_over_the_replicasets() {
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    let w = with_deployment(10, json!({"strategy": strategy})).await;
    eventually("the first rollout", Some(&w.pods), || {
        rolled_out(&w.deployments, 10)
    })
    .await;
    let old = replicaset_list(&w.replicasets).await.remove(0).name_any();
    let old_hash = old.trim_start_matches("service-test-").to_string();

    // A new image whose pods never get ready: the rollout stops at 8 old
    // (10 - maxUnavailable) and 5 new (10 + maxSurge in all).
    set_image(&w.deployments, "nginx:broken").await;
    let sizes = || async {
        let sets = replicaset_list(&w.replicasets).await;
        let old_rs = sets.iter().find(|rs| rs.name_any() == old).cloned();
        let new_rs = sets.iter().find(|rs| rs.name_any() != old).cloned();
        (old_rs, new_rs)
    };
    let started = Instant::now();
    loop {
        mark_ready_where(&w.pods, |hash| hash == old_hash).await;
        if let (Some(o), Some(n)) = sizes().await
            && spec_replicas(&o) == 8
            && spec_replicas(&n) == 5
        {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the rollout to get stuck at 8 + 5"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Scaled to 15 (18 with surge): 8*18/13 ≈ 11 old, 5*18/13 ≈ 7 new.
    patch_spec(&w.deployments, json!({"replicas": 15})).await;
    eventually("proportional scaling", None, || async {
        let (Some(o), Some(n)) = sizes().await else {
            return false;
        };
        let annotations = |rs: &ReplicaSet| {
            (
                annotation(&rs.metadata, "deployment.kubernetes.io/desired-replicas"),
                annotation(&rs.metadata, "deployment.kubernetes.io/max-replicas"),
            )
        };
        let want = (Some("15".to_string()), Some("18".to_string()));
        spec_replicas(&o) == 11
            && spec_replicas(&n) == 7
            && annotations(&o) == want
            && annotations(&n) == want
    })
    .await;
    // And it stays there: no room to surge, not enough available to shrink.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (o, n) = sizes().await;
    assert_eq!(
        (spec_replicas(&o.unwrap()), spec_replicas(&n.unwrap())),
        (11, 7)
    );
}

#[tokio::test]
async fn undo_reuses_the_old_replicaset_and_restart_rolls() {
    let w = with_deployment(1, json!({})).await;
    let annotate = |c: &'static str| {
        let deployments = w.deployments.clone();
        async move {
            let patch = json!({"metadata": {"annotations": {"kubernetes.io/change-cause": c}}});
            deployments
                .patch(
                    "service-test",
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .unwrap();
        }
    };
    annotate("first").await;
    eventually("revision 1", Some(&w.pods), || {
        rolled_out(&w.deployments, 1)
    })
    .await;
    set_image(&w.deployments, "nginx:2").await;
    annotate("second").await;
    eventually("revision 2", Some(&w.pods), || {
        rolled_out(&w.deployments, 1)
    })
    .await;
    let sets = replicaset_list(&w.replicasets).await;
    assert_eq!(sets.len(), 2);
    let (one, two) = (sets[0].clone(), sets[1].clone());
    let revision = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        annotation(meta, "deployment.kubernetes.io/revision")
    };
    assert_eq!(revision(&two.metadata).as_deref(), Some("2"));
    assert_eq!(
        annotation(&two.metadata, "kubernetes.io/change-cause").as_deref(),
        Some("second"),
        "the Deployment's annotations are copied to its new ReplicaSet"
    );
    let d = w.deployments.get("service-test").await.unwrap();
    assert_eq!(revision(&d.metadata).as_deref(), Some("2"));

    // `kubectl rollout undo`, as kubectl v1.35 does it: revision 1's
    // template without the hash label, and the Deployment's annotations
    // from that ReplicaSet's, in one JSON patch.
    let skipped = [
        "kubectl.kubernetes.io/last-applied-configuration",
        "deployment.kubernetes.io/revision",
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    ];
    let mut template = one.spec.clone().unwrap().template.unwrap();
    template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .remove("pod-template-hash");
    let mut annotations = serde_json::Map::new();
    for (k, v) in d.annotations() {
        if skipped.contains(&k.as_str()) {
            annotations.insert(k.clone(), json!(v));
        }
    }
    for (k, v) in one.annotations() {
        if !skipped.contains(&k.as_str()) {
            annotations.insert(k.clone(), json!(v));
        }
    }
    let undo = json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    w.deployments
        .patch(
            "service-test",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(undo).unwrap()),
        )
        .await
        .unwrap();
    eventually("the rollback", Some(&w.pods), || async {
        let back = w.replicasets.get(&one.name_any()).await.unwrap();
        rolled_out(&w.deployments, 1).await
            && revision(&back.metadata).as_deref() == Some("3")
            && spec_replicas(&back) == 1
    })
    .await;
    let sets = replicaset_list(&w.replicasets).await;
    assert_eq!(
        sets.len(),
        2,
        "no new ReplicaSet for a template rolled back to"
    );
    let back = &sets[1];
    assert_eq!(back.name_any(), one.name_any());
    assert_eq!(
        annotation(&back.metadata, "deployment.kubernetes.io/revision-history").as_deref(),
        Some("1")
    );
    assert_eq!(spec_replicas(&sets[0]), 0);
    let d = w.deployments.get("service-test").await.unwrap();
    assert_eq!(revision(&d.metadata).as_deref(), Some("3"));
    assert_eq!(
        annotation(&d.metadata, "kubernetes.io/change-cause").as_deref(),
        Some("first")
    );
    assert!(
        live_pods(&w.pods).await.iter().all(|p| {
            p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1")
        })
    );

    // `kubectl rollout restart`: a template annotation, so a new rollout.
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
    w.deployments
        .patch(
            "service-test",
            &PatchParams::default(),
            &Patch::Strategic(restart),
        )
        .await
        .unwrap();
    eventually("the restart", Some(&w.pods), || async {
        let sets = replicaset_list(&w.replicasets).await;
        rolled_out(&w.deployments, 1).await
            && sets.len() == 3
            && revision(&sets[2].metadata).as_deref() == Some("4")
            && spec_replicas(&sets[2]) == 1
    })
    .await;
}
