//! Table output: kubectl's Accept header on list, get and watch gets
//! `meta.k8s.io/v1` Tables whose rows carry the objects' metadata;
//! `includeObject`, PartialObjectMetadata and the 406 of an unservable
//! Accept.

mod common;

use std::time::Duration;

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const KUBECTL: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// A GET with an Accept header: status, content type and JSON body.
async fn get(api: &common::TestApi, uri: &str, accept: &str) -> (u16, String, Value) {
    let request = Request::builder()
        .uri(uri)
        .header("accept", accept)
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let code = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        code,
        content_type,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "labels": {"app": name}},
           "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

fn column_names(table: &Value) -> Vec<&str> {
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn lists_come_back_as_tables_with_metadata_rows() {
    let api = common::start().await;
    for name in ["service-test", "web"] {
        assert_eq!(api.post_json(SERVICES, &service(name)).await.code, 201);
    }
    let mut fixed = service("fixed");
    fixed["spec"]["clusterIP"] = json!("10.3.241.152");
    fixed["spec"]["type"] = json!("NodePort");
    fixed["spec"]["ports"][0]["nodePort"] = json!(30080);
    assert_eq!(api.post_json(SERVICES, &fixed).await.code, 201);
    let (code, content_type, table) = get(&api, SERVICES, KUBECTL).await;
    assert_eq!(code, 200, "{table}");
    assert_eq!(content_type, "application/json;as=Table;v=v1;g=meta.k8s.io");
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert!(
        table["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
    );
    assert_eq!(
        column_names(&table),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    assert_eq!(table["columnDefinitions"][6]["priority"], 1);
    assert_eq!(table["columnDefinitions"][0]["format"], "name");
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let cells = &rows[1]["cells"];
    assert_eq!(cells[0], "service-test");
    assert_eq!(cells[1], "ClusterIP");
    assert_eq!(cells[3], "<none>");
    assert_eq!(cells[4], "80/TCP");
    assert_eq!(cells[6], "app=service-test");
    let fixed = &rows[0]["cells"];
    assert_eq!(
        fixed.as_array().unwrap()[1..5],
        ["NodePort", "10.3.241.152", "<none>", "80:30080/TCP"]
    );
    // The row's object is the metadata: kubectl's -A and --show-labels.
    let object = &rows[1]["object"];
    assert_eq!(object["kind"], "PartialObjectMetadata");
    assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(object["metadata"]["namespace"], "default");
    assert_eq!(object["metadata"]["labels"]["app"], "service-test");
    assert!(object.get("spec").is_none());
}

#[tokio::test]
async fn pages_carry_their_continue_token() {
    let api = common::start().await;
    for name in ["a", "b", "c"] {
        let cm = json!({"metadata": {"name": name}, "data": {"k": "v"}});
        assert_eq!(api.post_json(CONFIGMAPS, &cm).await.code, 201);
    }
    let (_, _, page) = get(&api, &format!("{CONFIGMAPS}?limit=2"), KUBECTL).await;
    assert_eq!(page["rows"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["rows"][0]["cells"],
        json!(["a", 1, page["rows"][0]["cells"][2]])
    );
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("continue token");
    let (_, _, rest) = get(
        &api,
        &format!("{CONFIGMAPS}?limit=2&continue={token}"),
        KUBECTL,
    )
    .await;
    assert_eq!(rest["rows"][0]["cells"][0], "c");
}

#[tokio::test]
async fn a_get_is_a_one_row_table() {
    let api = common::start().await;
    let created = api.post_json(SERVICES, &service("web")).await.body;
    let (code, _, table) = get(&api, &format!("{SERVICES}/web"), KUBECTL).await;
    assert_eq!(code, 200);
    assert_eq!(table["rows"].as_array().unwrap().len(), 1);
    assert_eq!(
        table["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    let (code, _, missing) = get(&api, &format!("{SERVICES}/nope"), KUBECTL).await;
    assert_eq!((code, missing["reason"].as_str()), (404, Some("NotFound")));
}

#[tokio::test]
async fn include_object_chooses_what_rows_carry() {
    let api = common::start().await;
    api.post_json(SERVICES, &service("web")).await;
    let (_, _, full) = get(&api, &format!("{SERVICES}?includeObject=Object"), KUBECTL).await;
    assert_eq!(full["rows"][0]["object"]["kind"], "Service");
    assert_eq!(full["rows"][0]["object"]["spec"]["ports"][0]["port"], 80);
    let (_, _, bare) = get(&api, &format!("{SERVICES}?includeObject=None"), KUBECTL).await;
    assert!(bare["rows"][0].get("object").is_none());
    let (code, _, status) = get(&api, &format!("{SERVICES}?includeObject=All"), KUBECTL).await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
}

#[tokio::test]
async fn other_accepts_and_partial_metadata() {
    let api = common::start().await;
    api.post_json(SERVICES, &service("web")).await;
    let (code, content_type, list) = get(&api, SERVICES, "application/json").await;
    assert_eq!((code, content_type.as_str()), (200, "application/json"));
    assert_eq!(list["kind"], "ServiceList");

    let (code, _, status) = get(
        &api,
        SERVICES,
        "application/json;as=Table;v=v1;g=example.com",
    )
    .await;
    assert_eq!(code, 406);
    assert_eq!(status["reason"], "NotAcceptable");

    let partial =
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let (_, content_type, list) = get(&api, SERVICES, partial).await;
    assert_eq!(
        content_type,
        "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
    );
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    let (_, _, one) = get(
        &api,
        &format!("{SERVICES}/web"),
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
    )
    .await;
    assert_eq!(one["kind"], "PartialObjectMetadata");
    assert!(one.get("spec").is_none());
}

#[tokio::test]
async fn watches_send_one_row_tables() {
    let api = common::start().await;
    api.post_json(SERVICES, &service("a")).await;
    let request = Request::builder()
        .uri(format!("{SERVICES}?watch=1"))
        .header("accept", KUBECTL)
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    );
    let writer = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.post_json(SERVICES, &service("b")).await;
    };
    let reader = async {
        let mut body = response.into_body();
        let mut buffer = Vec::new();
        let mut events: Vec<Value> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while events.len() < 2 {
            let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await else {
                break;
            };
            buffer.extend_from_slice(&frame.into_data().unwrap_or_default());
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                events.push(serde_json::from_slice(&line).unwrap());
            }
        }
        events
    };
    let (events, ()) = tokio::join!(reader, writer);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(column_names(&events[0]["object"])[0], "Name");
    assert_eq!(events[0]["object"]["rows"][0]["cells"][0], "a");
    // Later events leave the column definitions out, as kube-apiserver does.
    assert!(events[1]["object"]["columnDefinitions"].is_null());
    assert_eq!(events[1]["object"]["rows"][0]["cells"][0], "b");
    assert_eq!(
        events[1]["object"]["rows"][0]["object"]["metadata"]["name"],
        "b"
    );
}
