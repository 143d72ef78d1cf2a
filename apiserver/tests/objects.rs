//! The generic object path through the real `kube` client: CRUD, selectors,
//! pagination, optimistic concurrency, status, finalizers, namespaces.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::Status;
use serde_json::json;

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

fn pod(name: &str, node: Option<&str>, labels: &[(&str, &str)]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]},
    }))
    .unwrap()
}

fn api_error(err: kube::Error) -> Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_get_replace_delete_round_trip() {
    let api = common::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");

    let created = maps
        .create(&PostParams::default(), &config_map("one", &[]))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_ref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(
        meta.generation, None,
        "ConfigMaps have no generation, as in Kubernetes"
    );
    let rv: u64 = meta.resource_version.as_ref().unwrap().parse().unwrap();

    let again = api_error(
        maps.create(&PostParams::default(), &config_map("one", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let mut edited = maps.get("one").await.unwrap();
    edited.data = Some(BTreeMap::from([("k".to_string(), "w".to_string())]));
    let replaced = maps
        .replace("one", &PostParams::default(), &edited)
        .await
        .unwrap();
    let rv2: u64 = replaced
        .metadata
        .resource_version
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv);
    assert_eq!(
        replaced.metadata.uid, created.metadata.uid,
        "uid survives updates"
    );
    assert_eq!(maps.get("one").await.unwrap().data.unwrap()["k"], "w");

    // A replace carrying the old resourceVersion is stale.
    let stale = api_error(
        maps.replace("one", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale.message.contains("the object has been modified"),
        "{}",
        stale.message
    );

    maps.delete("one", &DeleteParams::default()).await.unwrap();
    let gone = api_error(maps.get("one").await.unwrap_err());
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
    let gone = api_error(
        maps.delete("one", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(gone.code, 404);
}

#[tokio::test]
async fn generate_name_makes_unique_names() {
    let api = common::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    let mut template = config_map("", &[]);
    template.metadata.name = None;
    template.metadata.generate_name = Some("gen-".into());
    let a = maps
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    let b = maps
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    let (a, b) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(a.starts_with("gen-") && a.len() == 9, "{a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn set_based_label_selectors_filter_lists() {
    let api = common::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    for (name, labels) in [
        ("a", vec![("app", "web"), ("tier", "x")]),
        ("b", vec![("app", "web"), ("tier", "y"), ("g", "1")]),
        ("c", vec![("app", "db"), ("tier", "x"), ("h", "1")]),
        ("d", vec![("tier", "z"), ("g", "1")]),
    ] {
        maps.create(&PostParams::default(), &config_map(name, &labels))
            .await
            .unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|m| m.metadata.name.unwrap())
            .collect()
    };
    let select = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        names(maps.list(&select("app=web")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(maps.list(&select("app!=web")).await.unwrap()),
        ["c", "d"]
    );
    assert_eq!(
        names(maps.list(&select("tier in (x,z)")).await.unwrap()),
        ["a", "c", "d"]
    );
    assert_eq!(
        names(maps.list(&select("tier notin (x)")).await.unwrap()),
        ["b", "d"]
    );
    assert_eq!(names(maps.list(&select("g")).await.unwrap()), ["b", "d"]);
    assert_eq!(
        names(maps.list(&select("!h")).await.unwrap()),
        ["a", "b", "d"]
    );
    assert_eq!(
        names(
            maps.list(&select("a=b,c!=d,app in (web),tier notin (y),!h"))
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            maps.list(&select("app=web,tier notin (y),!h"))
                .await
                .unwrap()
        ),
        ["a"]
    );
    let bad = api_error(maps.list(&select("app in (web")).await.unwrap_err());
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn field_selectors_use_per_kind_fields() {
    let api = common::start().await;
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("p1", Some("n1"), &[]))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("p2", Some("n2"), &[]))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("p3", None, &[]))
        .await
        .unwrap();
    let names = |list: kube::core::ObjectList<Pod>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    let fields = |s: &str| ListParams::default().fields(s);
    assert_eq!(
        names(pods.list(&fields("spec.nodeName=n1")).await.unwrap()),
        ["p1"]
    );
    assert_eq!(
        names(pods.list(&fields("spec.nodeName=")).await.unwrap()),
        ["p3"]
    );
    assert_eq!(
        names(
            pods.list(&fields("spec.nodeName!=n1,metadata.name!=p3"))
                .await
                .unwrap()
        ),
        ["p2"]
    );
    // New pods start Pending, as in Kubernetes.
    assert_eq!(
        names(pods.list(&fields("status.phase=Pending")).await.unwrap()).len(),
        3
    );
    assert_eq!(
        names(pods.list(&fields("status.phase=Running")).await.unwrap()).len(),
        0
    );
    assert_eq!(
        names(
            pods.list(&fields("metadata.namespace=default"))
                .await
                .unwrap()
        )
        .len(),
        3
    );

    // All namespaces at once.
    let everywhere: Api<Pod> = Api::all(api.client.clone());
    assert_eq!(
        names(everywhere.list(&fields("spec.nodeName=n2")).await.unwrap()),
        ["p2"]
    );

    let bad = api_error(pods.list(&fields("spec.bogus=1")).await.unwrap_err());
    assert_eq!(bad.code, 400);
    assert!(bad.message.contains("spec.bogus"), "{}", bad.message);
}

#[tokio::test]
async fn pages_share_one_resource_version() {
    let api = common::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    for i in 0..25 {
        maps.create(
            &PostParams::default(),
            &config_map(&format!("cm-{i:02}"), &[]),
        )
        .await
        .unwrap();
    }
    let first = maps.list(&ListParams::default().limit(10)).await.unwrap();
    assert_eq!(first.items.len(), 10);
    let rv = first.metadata.resource_version.clone().unwrap();
    let token = first.metadata.continue_.clone().unwrap();

    // Changes after the first page do not show in later pages.
    maps.create(&PostParams::default(), &config_map("cm-99", &[]))
        .await
        .unwrap();
    maps.delete("cm-20", &DeleteParams::default())
        .await
        .unwrap();
    let mut edited = maps.get("cm-15").await.unwrap();
    edited.data = Some(BTreeMap::from([("k".to_string(), "changed".to_string())]));
    maps.replace("cm-15", &PostParams::default(), &edited)
        .await
        .unwrap();

    let second = maps
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        second.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    let third = maps
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(second.metadata.continue_.as_ref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        third.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    assert!(
        third
            .metadata
            .continue_
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    );

    let all: Vec<ConfigMap> = first
        .items
        .into_iter()
        .chain(second.items)
        .chain(third.items)
        .collect();
    let names: Vec<String> = all
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    let expected: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(names, expected, "the snapshot of the first page, in order");
    let cm15 = all
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some("cm-15"))
        .unwrap();
    assert_eq!(cm15.data.as_ref().unwrap()["k"], "v", "cm-15 as it was");

    let now = maps.list(&ListParams::default()).await.unwrap();
    assert_eq!(now.items.len(), 25, "24 old + cm-99");
}

#[tokio::test]
async fn empty_lists_serialise_items_as_an_array() {
    let api = common::start().await;
    let reply = api.get("/api/v1/namespaces/default/secrets").await;
    assert_eq!(reply.code, 200);
    assert_eq!(reply.body["items"], json!([]));
    assert_eq!(reply.body["kind"], "SecretList");
}

#[tokio::test]
async fn status_is_kept_apart_from_the_main_resource() {
    let api = common::start().await;
    let nodes: Api<Node> = Api::all(api.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.1.0.1"}]}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    // A write of the main resource cannot change status...
    let mut changed = nodes.get("n1").await.unwrap();
    changed.metadata.labels = Some(BTreeMap::from([("role".to_string(), "edge".to_string())]));
    changed.status.as_mut().unwrap().addresses.as_mut().unwrap()[0].address = "10.9.9.9".into();
    let stored = nodes
        .replace("n1", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(
        stored.status.unwrap().addresses.unwrap()[0].address,
        "10.1.0.1"
    );
    assert_eq!(stored.metadata.labels.unwrap()["role"], "edge");

    // ...and a write of status changes nothing else.
    let patch = json!({"metadata": {"labels": {"role": "core"}}, "status": {"addresses": [{"type": "InternalIP", "address": "10.1.0.2"}]}});
    let stored = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        stored.status.unwrap().addresses.unwrap()[0].address,
        "10.1.0.2"
    );
    assert_eq!(stored.metadata.labels.unwrap()["role"], "edge");
}

#[tokio::test]
async fn finalizers_hold_an_object_until_removed() {
    let api = common::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    let mut held = config_map("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    maps.create(&PostParams::default(), &held).await.unwrap();

    maps.delete("held", &DeleteParams::default()).await.unwrap();
    let still = maps.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());

    // No new finalizers while deleting.
    let add = json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}});
    let refused = api_error(
        maps.patch("held", &PatchParams::default(), &Patch::Merge(&add))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 422);

    let clear = json!({"metadata": {"finalizers": null}});
    maps.patch("held", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .unwrap();
    assert!(maps.get_opt("held").await.unwrap().is_none());
}

#[tokio::test]
async fn deleting_a_namespace_removes_what_is_in_it() {
    let api = common::start().await;
    let namespaces: Api<Namespace> = Api::all(api.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let maps: Api<ConfigMap> = Api::namespaced(api.client.clone(), "doomed");
    for i in 0..3 {
        maps.create(&PostParams::default(), &config_map(&format!("m{i}"), &[]))
            .await
            .unwrap();
    }
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let refused = api_error(
        maps.create(&PostParams::default(), &config_map("late", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403, "{}", refused.message);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while namespaces.get_opt("doomed").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace never went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = api.get("/api/v1/namespaces/doomed/configmaps").await;
    assert_eq!(left.body["items"], json!([]));

    let protected = api_error(
        namespaces
            .delete("default", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(protected.code, 403);
    // Missing namespace: creating in it is a 404 on the namespace.
    let missing: Api<ConfigMap> = Api::namespaced(api.client.clone(), "nowhere");
    let err = api_error(
        missing
            .create(&PostParams::default(), &config_map("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    assert!(
        err.message.contains("namespaces \"nowhere\" not found"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn scale_and_binding_subresources() {
    let api = common::start().await;
    let deployments: Api<Deployment> = Api::namespaced(api.client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let scale = deployments.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    let patch = json!({"spec": {"replicas": 5}});
    deployments
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let stored = deployments.get("web").await.unwrap();
    assert_eq!(stored.spec.unwrap().replicas, Some(5));
    assert_eq!(stored.metadata.generation, Some(2));

    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("unbound", None, &[]))
        .await
        .unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "unbound"}, "target": {"kind": "Node", "name": "n7"}});
    let reply = api
        .post_json("/api/v1/namespaces/default/pods/unbound/binding", &binding)
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let bound = pods.get("unbound").await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("n7"));
    let again = api
        .post_json("/api/v1/namespaces/default/pods/unbound/binding", &binding)
        .await;
    assert_eq!(again.code, 409, "{}", again.text);
}

#[tokio::test]
async fn delete_preconditions_and_collections() {
    let api = common::start().await;
    let maps: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    for (name, tier) in [("x1", "a"), ("x2", "a"), ("x3", "b")] {
        maps.create(&PostParams::default(), &config_map(name, &[("tier", tier)]))
            .await
            .unwrap();
    }
    let wrong_uid = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let refused = api_error(maps.delete("x1", &wrong_uid).await.unwrap_err());
    assert_eq!(refused.code, 409);
    assert!(maps.get_opt("x1").await.unwrap().is_some());

    maps.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=a"),
    )
    .await
    .unwrap();
    let left: Vec<String> = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["x3"]);
}

#[tokio::test]
async fn strategic_merge_patches_merge_lists_by_key() {
    let api = common::start().await;
    let deployments: Api<Deployment> = Api::namespaced(api.client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "app", "image": "nginx:1.25", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "busybox"}
            ]}}
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    // What `kubectl set image` and `kubectl label` send: only what changes.
    let patch = json!({
        "metadata": {"labels": {"tier": "front"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:1.27", "env": [{"name": "B", "value": "2"}]}
        ]}}}
    });
    let patched = deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let labels = patched.metadata.labels.unwrap();
    assert_eq!(
        (labels["app"].as_str(), labels["tier"].as_str()),
        ("web", "front")
    );
    let containers = patched.spec.unwrap().template.spec.unwrap().containers;
    let summary: Vec<(String, String)> = containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        summary,
        [
            ("app".to_string(), "nginx:1.27".to_string()),
            ("sidecar".to_string(), "busybox".to_string())
        ],
        "containers merged by name, in their order"
    );
    let env: Vec<String> = containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env, ["A", "B"], "env merged by name");
    assert_eq!(patched.metadata.generation, Some(2));

    let delete_sidecar = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
    let patched = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(&delete_sidecar),
        )
        .await
        .unwrap();
    let names: Vec<String> = patched
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["app"]);
}
