//! The `pods/eviction` subresource (what `kubectl drain` posts): a policy/v1
//! Eviction deletes the pod, honouring its `deleteOptions`, and answers 201
//! with a Success Status; a missing pod is a 404; discovery lists it with
//! policy/v1's `Eviction` kind, where kubectl looks for it.

mod common;

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams, PostParams};
use serde_json::json;

async fn pod(api: &common::TestApi, name: &str) -> Pod {
    let pods: Api<Pod> = Api::default_namespaced(api.client.clone());
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap()
}

/// POSTs an Eviction naming `name` (with `delete_options` unless null) to
/// the `eviction` subresource of the pod `web`.
async fn evict(
    api: &common::TestApi,
    name: &str,
    delete_options: serde_json::Value,
) -> common::Reply {
    let mut body = json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": name, "namespace": "default"},
    });
    if !delete_options.is_null() {
        body["deleteOptions"] = delete_options;
    }
    api.request(
        Method::POST,
        &format!("{PODS}/web/eviction"),
        "application/json",
        body.to_string(),
    )
    .await
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn an_eviction_deletes_the_pod_and_answers_201_success() {
    let api = common::start().await;
    pod(&api, "web").await;
    let reply = evict(&api, "web", serde_json::Value::Null).await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    assert_eq!(reply.body["kind"], "Status");
    assert_eq!(reply.body["status"], "Success");
    assert_eq!(reply.body["code"], 201);
    let pods: Api<Pod> = Api::default_namespaced(api.client.clone());
    assert!(pods.get_opt("web").await.unwrap().is_none());

    // Gone now: a second eviction is a 404 NotFound about the pod.
    let again = evict(&api, "web", serde_json::Value::Null).await;
    assert_eq!(again.code, 404, "{}", again.text);
    assert_eq!(again.body["reason"], "NotFound");
    assert_eq!(again.body["details"]["name"], "web");
    assert_eq!(again.body["details"]["kind"], "pods");
}

#[tokio::test]
async fn the_kube_client_evicts_through_policy_v1() {
    let api = common::start().await;
    pod(&api, "web").await;
    let pods: Api<Pod> = Api::default_namespaced(api.client.clone());
    let status = pods.evict("web", &EvictParams::default()).await.unwrap();
    assert!(status.is_success(), "{status:?}");
    assert!(pods.get_opt("web").await.unwrap().is_none());
}

#[tokio::test]
async fn delete_options_in_the_eviction_are_honoured() {
    let api = common::start().await;
    let created = pod(&api, "web").await;
    let pods: Api<Pod> = Api::default_namespaced(api.client.clone());

    // Dry run: answered as done, nothing deleted.
    let dry = evict(&api, "web", json!({"dryRun": ["All"]})).await;
    assert_eq!(dry.code, 201, "{}", dry.text);
    assert!(pods.get_opt("web").await.unwrap().is_some());

    // A uid precondition that does not hold: 409, nothing deleted.
    let wrong = evict(
        &api,
        "web",
        json!({"preconditions": {"uid": "not-the-uid"}}),
    )
    .await;
    assert_eq!(wrong.code, 409, "{}", wrong.text);
    assert!(pods.get_opt("web").await.unwrap().is_some());

    // The right uid: deleted.
    let uid = created.metadata.uid.unwrap();
    let right = evict(
        &api,
        "web",
        json!({"preconditions": {"uid": uid}, "gracePeriodSeconds": 0}),
    )
    .await;
    assert_eq!(right.code, 201, "{}", right.text);
    assert!(pods.get_opt("web").await.unwrap().is_none());
}

#[tokio::test]
async fn an_eviction_naming_another_pod_is_a_bad_request() {
    let api = common::start().await;
    pod(&api, "web").await;
    let reply = evict(&api, "other", serde_json::Value::Null).await;
    assert_eq!(reply.code, 400, "{}", reply.text);
    assert_eq!(
        reply.body["message"],
        "name in URL does not match name in Eviction object"
    );
    let pods: Api<Pod> = Api::default_namespaced(api.client.clone());
    assert!(pods.get_opt("web").await.unwrap().is_some());
}

#[tokio::test]
async fn discovery_lists_pods_eviction_as_policy_v1() {
    let api = common::start().await;
    // The legacy list, which kubectl drain's CheckEvictionSupport reads.
    let legacy = api
        .request(Method::GET, "/api/v1", "application/json", "")
        .await;
    let entry = legacy.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .expect("pods/eviction listed")
        .clone();
    assert_eq!(entry["kind"], "Eviction");
    assert_eq!(entry["group"], "policy");
    assert_eq!(entry["version"], "v1");
    assert_eq!(entry["verbs"], json!(["create"]));
    assert_eq!(entry["namespaced"], true);
}
