//! Deletion propagation on the API server alone (no garbage collector
//! runs here): `propagationPolicy` from the query or the DeleteOptions
//! body, and the deprecated `orphanDependents`, turn into the `orphan` and
//! `foregroundDeletion` finalizers on an object that then stays marked
//! with a `deletionTimestamp`; `Background` deletes at once; a dry run
//! changes nothing; a policy kube-apiserver does not know is a 422.

mod common;

use common::TestApi;
use http::Method;
use serde_json::{Value, json};

const MAPS: &str = "/api/v1/namespaces/default/configmaps";

async fn create_map(api: &TestApi, name: &str, extra: Value) -> Value {
    let mut body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "web"}}, "data": {"k": "v"}});
    json_patch::merge(&mut body, &extra);
    let reply = api.post_json(MAPS, &body).await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    reply.body
}

async fn delete(api: &TestApi, uri: &str, body: Option<Value>) -> common::Reply {
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    api.request(Method::DELETE, uri, "application/json", body)
        .await
}

async fn merge_patch(api: &TestApi, uri: &str, patch: Value) -> common::Reply {
    api.request(
        Method::PATCH,
        uri,
        "application/merge-patch+json",
        serde_json::to_vec(&patch).unwrap(),
    )
    .await
}

fn finalizers(object: &Value) -> Vec<&str> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn orphan_from_the_query_marks_the_object_and_keeps_it() {
    let api = common::start().await;
    create_map(&api, "web", json!({})).await;

    let reply = delete(&api, &format!("{MAPS}/web?propagationPolicy=Orphan"), None).await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(reply.body["kind"], "ConfigMap", "the object, not a Status");
    assert_eq!(finalizers(&reply.body), ["orphan"]);
    assert!(reply.body["metadata"]["deletionTimestamp"].is_string());

    let stored = api.get(&format!("{MAPS}/web")).await;
    assert_eq!(stored.code, 200, "the object stays");
    assert_eq!(finalizers(&stored.body), ["orphan"]);
    assert!(stored.body["metadata"]["deletionTimestamp"].is_string());

    // A second delete without options keeps the policy it was deleted with.
    let again = delete(&api, &format!("{MAPS}/web"), None).await;
    assert_eq!(again.code, 200, "{}", again.text);
    assert_eq!(finalizers(&again.body), ["orphan"]);

    // What the garbage collector does once the dependents are orphaned:
    // removing the finalizer lets the object go.
    let reply = merge_patch(
        &api,
        &format!("{MAPS}/web"),
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(api.get(&format!("{MAPS}/web")).await.code, 404);
}

#[tokio::test]
async fn foreground_from_the_body_then_switched_to_orphan_then_background() {
    let api = common::start().await;
    let created = create_map(&api, "web", json!({})).await;
    let uri = format!("{MAPS}/web");

    // kubectl's body for --cascade=foreground.
    let body =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"});
    let reply = delete(&api, &uri, Some(body)).await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(finalizers(&reply.body), ["foregroundDeletion"]);
    let marked_at = reply.body["metadata"]["deletionTimestamp"].clone();
    assert!(marked_at.is_string());
    assert_eq!(reply.body["metadata"]["uid"], created["metadata"]["uid"]);

    // Deleted again with another policy, the finalizer switches, as in kube.
    let body = json!({"propagationPolicy": "Orphan"});
    let reply = delete(&api, &uri, Some(body)).await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(finalizers(&reply.body), ["orphan"]);
    assert_eq!(reply.body["metadata"]["deletionTimestamp"], marked_at);

    // Background drops the propagation finalizer; nothing else holds it.
    let reply = delete(&api, &format!("{uri}?propagationPolicy=Background"), None).await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(reply.body["kind"], "Status");
    assert_eq!(reply.body["status"], "Success");
    assert_eq!(api.get(&uri).await.code, 404);
}

#[tokio::test]
async fn background_keeps_other_finalizers_and_orphan_dependents_is_honoured() {
    let api = common::start().await;
    create_map(
        &api,
        "held",
        json!({"metadata": {"finalizers": ["example.com/hold"]}}),
    )
    .await;
    let uri = format!("{MAPS}/held");

    let reply = delete(&api, &format!("{uri}?orphanDependents=true"), None).await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(finalizers(&reply.body), ["example.com/hold", "orphan"]);

    // orphanDependents=false is background: the orphan finalizer goes, the
    // other one keeps the object.
    let reply = delete(&api, &uri, Some(json!({"orphanDependents": false}))).await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let stored = api.get(&uri).await;
    assert_eq!(stored.code, 200);
    assert_eq!(finalizers(&stored.body), ["example.com/hold"]);
    assert!(stored.body["metadata"]["deletionTimestamp"].is_string());

    // No policy at all: an object without finalizers goes at once.
    create_map(&api, "plain", json!({})).await;
    let reply = delete(&api, &format!("{MAPS}/plain"), None).await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(api.get(&format!("{MAPS}/plain")).await.code, 404);
}

#[tokio::test]
async fn a_dry_run_changes_nothing() {
    let api = common::start().await;
    create_map(&api, "web", json!({})).await;
    let uri = format!("{MAPS}/web");
    let before = api.get(&uri).await.body;

    for query in [
        "?dryRun=All&propagationPolicy=Foreground",
        "?dryRun=All&propagationPolicy=Orphan",
        "?dryRun=All&propagationPolicy=Background",
    ] {
        let reply = delete(&api, &format!("{uri}{query}"), None).await;
        assert_eq!(reply.code, 200, "{query}: {}", reply.text);
    }
    let reply = delete(
        &api,
        &uri,
        Some(json!({"dryRun": ["All"], "propagationPolicy": "Foreground"})),
    )
    .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(
        finalizers(&reply.body),
        ["foregroundDeletion"],
        "what it would be"
    );

    let after = api.get(&uri).await;
    assert_eq!(after.code, 200);
    assert_eq!(after.body, before, "nothing stored");
}

#[tokio::test]
async fn bad_policies_are_refused_as_kube_apiserver_does() {
    let api = common::start().await;
    create_map(&api, "web", json!({})).await;
    let uri = format!("{MAPS}/web");

    let reply = delete(&api, &format!("{uri}?propagationPolicy=Sideways"), None).await;
    assert_eq!(reply.code, 422, "{}", reply.text);
    assert_eq!(reply.body["reason"], "Invalid");
    assert_eq!(reply.body["details"]["kind"], "DeleteOptions");
    assert_eq!(reply.body["details"]["group"], "meta.k8s.io");
    let cause = &reply.body["details"]["causes"][0];
    assert_eq!(cause["field"], "propagationPolicy");
    assert_eq!(cause["reason"], "FieldValueNotSupported");
    assert_eq!(
        cause["message"],
        "Unsupported value: \"Sideways\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
    );

    let reply = delete(
        &api,
        &uri,
        Some(json!({"propagationPolicy": "Orphan", "orphanDependents": true})),
    )
    .await;
    assert_eq!(reply.code, 422, "{}", reply.text);
    let cause = &reply.body["details"]["causes"][0];
    assert_eq!(cause["field"], "propagationPolicy");
    assert_eq!(
        cause["message"],
        "Invalid value: \"Orphan\": orphanDependents and deletionPropagation cannot be both set"
    );

    let reply = delete(&api, &format!("{uri}?orphanDependents=perhaps"), None).await;
    assert_eq!(reply.code, 400, "{}", reply.text);
    let reply = delete(&api, &uri, Some(json!({"propagationPolicy": 3}))).await;
    assert_eq!(reply.code, 400, "{}", reply.text);

    let stored = api.get(&uri).await;
    assert_eq!(stored.code, 200, "a refused delete keeps the object");
    assert!(stored.body["metadata"]["deletionTimestamp"].is_null());
    assert!(finalizers(&stored.body).is_empty());
}

#[tokio::test]
async fn collection_deletes_honour_the_policy() {
    let api = common::start().await;
    create_map(&api, "a", json!({})).await;
    create_map(&api, "b", json!({})).await;
    create_map(
        &api,
        "other",
        json!({"metadata": {"labels": {"app": "db"}}}),
    )
    .await;

    let reply = delete(
        &api,
        &format!("{MAPS}?labelSelector=app%3Dweb"),
        Some(json!({"propagationPolicy": "Foreground"})),
    )
    .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(reply.body["items"].as_array().map(Vec::len), Some(2));
    for name in ["a", "b"] {
        let stored = api.get(&format!("{MAPS}/{name}")).await;
        assert_eq!(stored.code, 200, "{name} stays");
        assert_eq!(finalizers(&stored.body), ["foregroundDeletion"]);
        assert!(stored.body["metadata"]["deletionTimestamp"].is_string());
    }
    let other = api.get(&format!("{MAPS}/other")).await;
    assert!(other.body["metadata"]["deletionTimestamp"].is_null());

    // Background through the query: every selected object goes.
    let reply = delete(
        &api,
        &format!("{MAPS}?labelSelector=app%3Dweb&propagationPolicy=Background"),
        None,
    )
    .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    for name in ["a", "b"] {
        assert_eq!(api.get(&format!("{MAPS}/{name}")).await.code, 404);
    }
}

#[tokio::test]
async fn a_deployment_deleted_in_foreground_counts_a_generation() {
    let api = common::start().await;
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}});
    let uri = "/apis/apps/v1/namespaces/default/deployments";
    let created = api.post_json(uri, &deployment).await;
    assert_eq!(created.code, 201, "{}", created.text);
    let generation = created.body["metadata"]["generation"].as_i64().unwrap();

    let reply = delete(
        &api,
        &format!("{uri}/web?propagationPolicy=Foreground"),
        None,
    )
    .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(reply.body["kind"], "Deployment");
    assert_eq!(finalizers(&reply.body), ["foregroundDeletion"]);
    assert_eq!(reply.body["metadata"]["generation"], generation + 1);
    assert_eq!(api.get(&format!("{uri}/web")).await.code, 200);
}
