//! Bad input gets a clear `Status` with the right reason and the field at
//! fault, and stores nothing.

mod common;

use http::Method;
use serde_json::{Value, json};

const SERVICES: &str = "/api/v1/namespaces/default/services";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

async fn assert_nothing_stored(api: &common::TestApi, collection: &str) {
    let list = api.get(collection).await;
    assert_eq!(
        list.body["items"],
        json!([]),
        "nothing stored in {collection}"
    );
}

fn causes(reply: &common::Reply) -> Vec<(String, String)> {
    reply.body["details"]["causes"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or_default().to_string(),
                        c["reason"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_status(reply: &common::Reply, code: u16, reason: &str) {
    assert_eq!(reply.code, code, "{}", reply.text);
    assert_eq!(reply.body["kind"], "Status", "{}", reply.text);
    assert_eq!(reply.body["reason"], reason, "{}", reply.text);
    assert_eq!(reply.body["code"], code);
    assert!(
        !reply.body["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn malformed_bodies_are_bad_requests() {
    let api = common::start().await;
    for (content_type, body) in [
        ("application/json", "{\"metadata\": {\"name\": \"x\""),
        ("application/json", "[1, 2]"),
        ("application/yaml", "metadata: [unclosed"),
        ("application/json", "not json at all"),
    ] {
        let reply = api
            .request(Method::POST, CONFIGMAPS, content_type, body)
            .await;
        assert_status(&reply, 400, "BadRequest");
    }
    // A field of the wrong type.
    let wrong = json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": "eighty"}]}});
    let reply = api.post_json(SERVICES, &wrong).await;
    assert_status(&reply, 400, "BadRequest");
    // The wrong kind for the collection.
    let reply = api
        .post_json(
            CONFIGMAPS,
            &json!({"kind": "Secret", "metadata": {"name": "s"}}),
        )
        .await;
    assert_status(&reply, 400, "BadRequest");
    assert_nothing_stored(&api, CONFIGMAPS).await;
    assert_nothing_stored(&api, SERVICES).await;
}

#[tokio::test]
async fn yaml_bodies_are_accepted() {
    let api = common::start().await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n";
    let reply = api
        .request(Method::POST, CONFIGMAPS, "application/yaml", yaml)
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    assert_eq!(reply.body["data"]["a"], "b");
}

#[tokio::test]
async fn invalid_names_name_the_field() {
    let api = common::start().await;
    for name in ["Upper", "under_score", "-leading", &"x".repeat(254)] {
        let reply = api
            .post_json(CONFIGMAPS, &json!({"metadata": {"name": name}}))
            .await;
        assert_status(&reply, 422, "Invalid");
        assert_eq!(causes(&reply)[0].0, "metadata.name", "{}", reply.text);
    }
    // Services need a DNS label: no dots.
    let svc = json!({"metadata": {"name": "a.b"}, "spec": {"ports": [{"port": 80}]}});
    let reply = api.post_json(SERVICES, &svc).await;
    assert_status(&reply, 422, "Invalid");
    let reply = api.post_json(CONFIGMAPS, &json!({"metadata": {}})).await;
    assert_status(&reply, 422, "Invalid");
    assert_eq!(
        causes(&reply),
        [(
            "metadata.name".to_string(),
            "FieldValueRequired".to_string()
        )]
    );
    assert_nothing_stored(&api, CONFIGMAPS).await;
    assert_nothing_stored(&api, SERVICES).await;
}

#[tokio::test]
async fn ports_out_of_range_are_invalid() {
    let api = common::start().await;
    let svc = json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 70000}]}});
    let reply = api.post_json(SERVICES, &svc).await;
    assert_status(&reply, 422, "Invalid");
    assert!(
        causes(&reply).contains(&(
            "spec.ports[1].port".to_string(),
            "FieldValueInvalid".to_string()
        )),
        "{}",
        reply.text
    );
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Service \"svc\" is invalid"),
        "{}",
        reply.text
    );

    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 0}]}]}});
    let reply = api.post_json("/api/v1/namespaces/default/pods", &pod).await;
    assert_status(&reply, 422, "Invalid");
    assert_eq!(
        causes(&reply)[0].0,
        "spec.containers[0].ports[0].containerPort",
        "{}",
        reply.text
    );
    assert_nothing_stored(&api, SERVICES).await;
    assert_nothing_stored(&api, "/api/v1/namespaces/default/pods").await;
}

#[tokio::test]
async fn selectors_that_do_not_parse_are_bad_requests() {
    let api = common::start().await;
    for query in [
        "labelSelector=app%20in%20(web",
        "labelSelector=%3Dx",
        "labelSelector=a%3D%24%24",
        "fieldSelector=spec.nodeName",
        "fieldSelector=no.such.field%3Dx",
    ] {
        let reply = api
            .get(&format!("/api/v1/namespaces/default/pods?{query}"))
            .await;
        assert_status(&reply, 400, "BadRequest");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let api = common::start().await;
    let big = "x".repeat(3 * 1024 * 1024 + 1);
    let body =
        serde_json::to_vec(&json!({"metadata": {"name": "big"}, "data": {"k": big}})).unwrap();
    let reply = api
        .request(Method::POST, CONFIGMAPS, "application/json", body)
        .await;
    assert_status(&reply, 413, "RequestEntityTooLarge");
    assert_nothing_stored(&api, CONFIGMAPS).await;
}

#[tokio::test]
async fn unknown_media_types_and_resources() {
    let api = common::start().await;
    let reply = api
        .request(Method::POST, CONFIGMAPS, "text/plain", "hello")
        .await;
    assert_status(&reply, 415, "UnsupportedMediaType");
    let reply = api.get("/api/v1/namespaces/default/widgets").await;
    assert_status(&reply, 404, "NotFound");
    let reply = api
        .request(Method::PUT, CONFIGMAPS, "application/json", "{}")
        .await;
    assert_status(&reply, 405, "MethodNotAllowed");
    let reply = api.get(&format!("{CONFIGMAPS}?limit=ten")).await;
    assert_status(&reply, 400, "BadRequest");
    assert_nothing_stored(&api, CONFIGMAPS).await;
}

#[tokio::test]
async fn invalid_updates_change_nothing() {
    let api = common::start().await;
    let svc = json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}});
    let created = api.post_json(SERVICES, &svc).await;
    assert_eq!(created.code, 201, "{}", created.text);
    let rv = created.body["metadata"]["resourceVersion"].clone();
    let patch = json!({"spec": {"ports": [{"port": -1}]}});
    let reply = api
        .request(
            Method::PATCH,
            &format!("{SERVICES}/svc"),
            "application/merge-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        )
        .await;
    assert_status(&reply, 422, "Invalid");
    let now = api.get(&format!("{SERVICES}/svc")).await;
    assert_eq!(now.body["metadata"]["resourceVersion"], rv);
    assert_eq!(now.body["spec"]["ports"][0]["port"], 80);
    let mismatched: Value =
        json!({"metadata": {"name": "other"}, "spec": {"ports": [{"port": 81}]}});
    let reply = api
        .request(
            Method::PUT,
            &format!("{SERVICES}/svc"),
            "application/json",
            serde_json::to_vec(&mismatched).unwrap(),
        )
        .await;
    assert_status(&reply, 400, "BadRequest");
}
