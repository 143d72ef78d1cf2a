//! Server-side apply and managedFields through the router: apply creates
//! and merges, conflicts and `force`, the required `fieldManager`, `Update`
//! entries of ordinary writes and of `scale`, dry run.

mod common;

use axum::body::Body;
use http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const APPLY: &str = "application/apply-patch+yaml";
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/web";

fn deploy_yaml(replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: {image}
        ports: [{{containerPort: 80}}]
"
    )
}

async fn send(
    api: &common::TestApi,
    method: Method,
    uri: &str,
    content_type: &str,
    agent: &str,
    body: String,
) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header("user-agent", agent)
        .body(Body::from(body))
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let code = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn apply(api: &common::TestApi, query: &str, yaml: String) -> (u16, Value) {
    send(
        api,
        Method::PATCH,
        &format!("{DEPLOY}?{query}"),
        APPLY,
        "test/1.0",
        yaml,
    )
    .await
}

fn managers(object: &Value) -> Vec<(String, String, Option<String>)> {
    object["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
                e["subresource"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn entry<'a>(object: &'a Value, manager: &str) -> &'a Value {
    object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager)
        .unwrap_or_else(|| panic!("no entry for {manager} in {object}"))
}

#[tokio::test]
async fn apply_creates_then_merges_and_records_the_applier() {
    let api = common::start().await;
    let (code, created) = apply(&api, "fieldManager=ssa", deploy_yaml(2, "nginx:1")).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["replicas"], 2);
    assert!(
        created["metadata"]["uid"].is_string(),
        "created like a POST"
    );
    assert_eq!(
        created["spec"]["progressDeadlineSeconds"], 600,
        "defaulted like a POST"
    );
    let ssa = entry(&created, "ssa");
    assert_eq!(ssa["operation"], "Apply");
    assert_eq!(ssa["apiVersion"], "apps/v1");
    assert_eq!(ssa["fieldsType"], "FieldsV1");
    assert_eq!(
        ssa["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:ports"],
        json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}})
    );
    assert!(
        ssa["fieldsV1"]["f:spec"]
            .get("f:progressDeadlineSeconds")
            .is_none(),
        "defaults belong to nobody"
    );

    // The same configuration again changes nothing.
    let (code, again) = apply(&api, "fieldManager=ssa", deploy_yaml(2, "nginx:1")).await;
    assert_eq!(code, 200);
    assert_eq!(
        again["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    // An edited configuration merges.
    let (code, edited) = apply(&api, "fieldManager=ssa", deploy_yaml(3, "nginx:2")).await;
    assert_eq!(code, 200);
    assert_eq!(edited["spec"]["replicas"], 3);
    assert_eq!(
        edited["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert_eq!(edited["metadata"]["generation"], 2);
}

#[tokio::test]
async fn apply_conflicts_with_another_manager_unless_forced() {
    let api = common::start().await;
    apply(&api, "fieldManager=first", deploy_yaml(2, "nginx:1")).await;

    let (code, status) = apply(&api, "fieldManager=second", deploy_yaml(5, "nginx:1")).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"first\": .spec.replicas"
    );
    assert_eq!(
        status["details"]["causes"],
        json!([{
            "reason": "FieldManagerConflict",
            "message": "conflict with \"first\"",
            "field": ".spec.replicas",
        }])
    );

    // Same values: shared ownership, no conflict.
    let (code, shared) = apply(&api, "fieldManager=second", deploy_yaml(2, "nginx:1")).await;
    assert_eq!(code, 200, "{shared}");
    assert_eq!(managers(&shared).len(), 2);

    // Forced: the value changes and `first` loses the field.
    let (code, forced) = apply(
        &api,
        "fieldManager=second&force=true",
        deploy_yaml(5, "nginx:1"),
    )
    .await;
    assert_eq!(code, 200, "{forced}");
    assert_eq!(forced["spec"]["replicas"], 5);
    assert!(
        entry(&forced, "first")["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    assert!(
        entry(&forced, "second")["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_some()
    );
}

#[tokio::test]
async fn apply_needs_a_field_manager_and_force_only_with_apply() {
    let api = common::start().await;
    let (code, status) = apply(&api, "", deploy_yaml(1, "x")).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["kind"], "PatchOptions");
    assert_eq!(status["details"]["causes"][0]["field"], "fieldManager");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "Required value: is required for apply patch"
    );

    apply(&api, "fieldManager=a", deploy_yaml(1, "x")).await;
    let (code, status) = send(
        &api,
        Method::PATCH,
        &format!("{DEPLOY}?force=true"),
        "application/merge-patch+json",
        "t",
        r#"{"spec":{"replicas":2}}"#.into(),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "force");

    let (code, status) = apply(
        &api,
        "fieldManager=a",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  managedFields: [{}]\n"
            .into(),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["message"], "metadata.managedFields must be nil");
}

#[tokio::test]
async fn apply_removes_fields_the_applier_dropped() {
    let api = common::start().await;
    let with_label = deploy_yaml(1, "x").replace(
        "labels: {app: web}\nspec",
        "labels: {app: web, tier: front}\nspec",
    );
    assert_ne!(with_label, deploy_yaml(1, "x"));
    apply(&api, "fieldManager=a", with_label).await;
    // Someone else labels it too.
    let (code, _) = send(
        &api,
        Method::PATCH,
        &format!("{DEPLOY}?fieldManager=kubectl-label"),
        "application/merge-patch+json",
        "kubectl/v1.35.2",
        r#"{"metadata":{"labels":{"owner":"ops"}}}"#.into(),
    )
    .await;
    assert_eq!(code, 200);
    let (code, out) = apply(&api, "fieldManager=a", deploy_yaml(1, "x")).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "owner": "ops"})
    );
}

#[tokio::test]
async fn scale_takes_replicas_and_reapply_conflicts() {
    let api = common::start().await;
    apply(&api, "fieldManager=kubectl", deploy_yaml(2, "nginx")).await;
    let (code, _) = send(
        &api,
        Method::PATCH,
        &format!("{DEPLOY}/scale"),
        "application/merge-patch+json",
        "kubectl/v1.35.2 (linux/amd64) kubernetes/fdc9d74",
        r#"{"spec":{"replicas":7}}"#.into(),
    )
    .await;
    assert_eq!(code, 200);
    let got = api.get(DEPLOY).await.body;
    assert!(managers(&got).contains(&("kubectl".into(), "Update".into(), Some("scale".into()))));
    let (code, status) = apply(&api, "fieldManager=kubectl", deploy_yaml(2, "nginx")).await;
    assert_eq!(code, 409);
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
    );
}

#[tokio::test]
async fn ordinary_writes_record_update_entries() {
    let api = common::start().await;
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c"}, "data": {"a": "1"},
    });
    let (code, created) = send(
        &api,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        "python/3.12 OpenAPI-Generator",
        cm.to_string(),
    )
    .await;
    assert_eq!(code, 201);
    let e = entry(&created, "python");
    assert_eq!(e["operation"], "Update");
    assert_eq!(e["fieldsV1"], json!({"f:data": {".": {}, "f:a": {}}}));

    // A PUT by another manager that changes `a` takes it; the creator keeps
    // the map itself (`.`), as in Kubernetes.
    let mut edited = created.clone();
    edited["data"]["a"] = json!("2");
    let (code, replaced) = send(
        &api,
        Method::PUT,
        "/api/v1/namespaces/default/configmaps/c?fieldManager=kubectl-edit",
        "application/json",
        "kubectl/v1.35.2",
        edited.to_string(),
    )
    .await;
    assert_eq!(code, 200, "{replaced}");
    assert_eq!(
        entry(&replaced, "python")["fieldsV1"],
        json!({"f:data": {}})
    );
    assert_eq!(
        entry(&replaced, "kubectl-edit")["fieldsV1"],
        json!({"f:data": {"f:a": {}}})
    );

    // `managedFields: [{}]` clears them.
    let (code, cleared) = send(
        &api,
        Method::PATCH,
        "/api/v1/namespaces/default/configmaps/c",
        "application/merge-patch+json",
        "kubectl/v1.35.2",
        r#"{"metadata":{"managedFields":[{}]}}"#.into(),
    )
    .await;
    assert_eq!(code, 200);
    assert!(cleared["metadata"].get("managedFields").is_none());
}

#[tokio::test]
async fn status_writes_record_the_status_subresource() {
    let api = common::start().await;
    apply(&api, "fieldManager=ssa", deploy_yaml(1, "nginx")).await;
    let (code, out) = send(
        &api,
        Method::PATCH,
        &format!("{DEPLOY}/status?fieldManager=controller"),
        "application/merge-patch+json",
        "t",
        r#"{"status":{"replicas":1}}"#.into(),
    )
    .await;
    assert_eq!(code, 200, "{out}");
    let e = entry(&out, "controller");
    assert_eq!(e["subresource"], "status");
    assert_eq!(e["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
}

#[tokio::test]
async fn apply_dry_run_stores_nothing() {
    let api = common::start().await;
    let (code, out) = apply(&api, "fieldManager=a&dryRun=All", deploy_yaml(1, "x")).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(api.get(DEPLOY).await.code, 404);
    apply(&api, "fieldManager=a", deploy_yaml(1, "x")).await;
    let (code, out) = apply(&api, "fieldManager=a&dryRun=All", deploy_yaml(4, "x")).await;
    assert_eq!(code, 200);
    assert_eq!(out["spec"]["replicas"], 4);
    assert_eq!(api.get(DEPLOY).await.body["spec"]["replicas"], 1);
}

/// A configuration that leaves out a defaulted field (an Endpoints port's
/// `protocol`) applied again later changes nothing, not even the entry's time.
#[tokio::test]
async fn reapplying_a_config_without_defaulted_fields_is_a_no_op() {
    let api = common::start().await;
    let endpoints = "apiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets:\n- addresses: [{ip: 10.0.1.2}]\n  ports: [{port: 8080}]\n";
    let path = "/api/v1/namespaces/default/endpoints/web";
    let (code, first) = send(
        &api,
        Method::PATCH,
        &format!("{path}?fieldManager=knit"),
        APPLY,
        "test/1.0",
        endpoints.to_string(),
    )
    .await;
    assert_eq!(code, 201, "{first}");
    assert_eq!(first["subsets"][0]["ports"][0]["protocol"], "TCP");
    // managedFields times have a resolution of one second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, second) = send(
        &api,
        Method::PATCH,
        &format!("{path}?fieldManager=knit"),
        APPLY,
        "test/1.0",
        endpoints.to_string(),
    )
    .await;
    assert_eq!(code, 200, "{second}");
    assert_eq!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    assert_eq!(
        second["metadata"]["managedFields"],
        first["metadata"]["managedFields"]
    );
}
