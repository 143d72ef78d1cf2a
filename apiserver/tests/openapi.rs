//! The OpenAPI v3 endpoints and `?fieldValidation=` on create, update and
//! patch, through the router.

mod common;

use axum::body::Body;
use http::{HeaderMap, Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Answer {
    code: u16,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Answer {
    fn warnings(&self) -> Vec<String> {
        self.headers
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

async fn send(
    api: &common::TestApi,
    method: Method,
    uri: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let code = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        code,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(api: &common::TestApi, uri: &str) -> Answer {
    send(api, Method::GET, uri, "application/json", Body::empty()).await
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
        },
    })
}

#[tokio::test]
async fn index_points_at_each_group_version_document() {
    let api = common::start().await;
    let index = get(&api, "/openapi/v3").await;
    assert_eq!(index.code, 200);
    assert_eq!(index.headers["content-type"], "application/json");
    let paths = index.body["paths"].as_object().expect("paths");
    for key in ["api/v1", "apis/apps/v1", "apis/networking.k8s.io/v1"] {
        let url = paths[key]["serverRelativeURL"].as_str().expect(key);
        assert!(
            url.starts_with(&format!("/openapi/v3/{key}?hash=")),
            "{url}"
        );
        let doc = get(&api, url).await;
        assert_eq!(doc.code, 200, "{url}");
        assert_eq!(doc.headers["cache-control"], "public, immutable");
        assert_eq!(doc.body["openapi"], "3.0.0");
        assert!(doc.body["components"]["schemas"].as_object().unwrap().len() > 10);
    }

    let plain = get(&api, "/openapi/v3/api/v1").await;
    assert_eq!(plain.code, 200);
    assert_ne!(plain.headers["cache-control"], "public, immutable");
    let pod = &plain.body["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(
        pod["x-kubernetes-group-version-kind"],
        json!([{"group": "", "version": "v1", "kind": "Pod"}])
    );

    let stale = get(&api, "/openapi/v3/apis/apps/v1?hash=0000").await;
    assert_eq!(stale.code, 301);
    let location = stale.headers["location"].to_str().unwrap();
    assert_eq!(location, paths["apis/apps/v1"]["serverRelativeURL"]);

    assert_eq!(get(&api, "/openapi/v3/apis/nope/v1").await.code, 404);
    assert_eq!(get(&api, "/openapi/v2").await.code, 404);
}

#[tokio::test]
async fn strict_create_rejects_unknown_and_duplicate_fields_and_stores_nothing() {
    let api = common::start().await;
    let mut body = deployment("strict");
    body["spec"]["foo"] = json!(1);
    body["spec"]["template"]["spec"]["containers"][0]["bar"] = json!("x");
    let answer = send(
        &api,
        Method::POST,
        &format!("{DEPLOYMENTS}?fieldValidation=Strict"),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(answer.code, 400, "{}", answer.text);
    assert_eq!(answer.body["reason"], "BadRequest");
    assert_eq!(
        answer.body["message"],
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: \
         unknown field \"spec.foo\", unknown field \"spec.template.spec.containers[0].bar\""
    );
    assert_eq!(get(&api, &format!("{DEPLOYMENTS}/strict")).await.code, 404);

    // A duplicate key, in JSON and in YAML.
    let json_dup =
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup", "name": "dup"}}"#;
    let answer = send(
        &api,
        Method::POST,
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/json",
        json_dup,
    )
    .await;
    assert_eq!(answer.code, 400, "{}", answer.text);
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .ends_with("strict decoding error: duplicate field \"metadata.name\""),
        "{}",
        answer.text
    );
    let yaml_dup =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dupy\ndata:\n  a: '1'\n  a: '2'\n";
    let answer = send(
        &api,
        Method::POST,
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/yaml",
        yaml_dup,
    )
    .await;
    assert_eq!(answer.code, 400, "{}", answer.text);
    assert!(
        answer.text.contains("duplicate field \\\"data.a\\\""),
        "{}",
        answer.text
    );
    assert_eq!(
        get(&api, "/api/v1/namespaces/default/configmaps/dupy")
            .await
            .code,
        404
    );
}

#[tokio::test]
async fn warn_is_the_default_and_drops_the_fields() {
    let api = common::start().await;
    let mut body = deployment("warned");
    body["spec"]["foo"] = json!(1);
    body["metadata"]["labels"] = json!({"free": "form"});
    let answer = send(
        &api,
        Method::POST,
        DEPLOYMENTS,
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(answer.code, 201, "{}", answer.text);
    assert_eq!(
        answer.warnings(),
        vec![r#"299 - "unknown field \"spec.foo\"""#]
    );
    assert!(answer.body["spec"].get("foo").is_none());
    let stored = get(&api, &format!("{DEPLOYMENTS}/warned")).await;
    assert!(stored.body["spec"].get("foo").is_none());
    assert_eq!(stored.body["metadata"]["labels"]["free"], "form");

    // Ignore: the same, silently.
    body["metadata"]["name"] = json!("ignored");
    body["spec"]["selector"]["matchLabels"]["app"] = json!("ignored");
    body["spec"]["template"]["metadata"]["labels"]["app"] = json!("ignored");
    let answer = send(
        &api,
        Method::POST,
        &format!("{DEPLOYMENTS}?fieldValidation=Ignore"),
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(answer.code, 201, "{}", answer.text);
    assert!(answer.warnings().is_empty());
    assert!(answer.body["spec"].get("foo").is_none());

    // A clean body has no warnings.
    let answer = send(
        &api,
        Method::POST,
        DEPLOYMENTS,
        "application/json",
        serde_json::to_vec(&deployment("clean")).unwrap(),
    )
    .await;
    assert_eq!(answer.code, 201);
    assert!(answer.warnings().is_empty());

    let bad = send(
        &api,
        Method::POST,
        &format!("{DEPLOYMENTS}?fieldValidation=Loose"),
        "application/json",
        serde_json::to_vec(&deployment("loose")).unwrap(),
    )
    .await;
    assert_eq!(bad.code, 400);
    assert!(
        bad.text.contains("fieldValidation: Unsupported value"),
        "{}",
        bad.text
    );
}

#[tokio::test]
async fn update_and_patch_check_fields_and_strict_changes_nothing() {
    let api = common::start().await;
    let created = send(
        &api,
        Method::POST,
        DEPLOYMENTS,
        "application/json",
        serde_json::to_vec(&deployment("upd")).unwrap(),
    )
    .await;
    assert_eq!(created.code, 201);
    let item = format!("{DEPLOYMENTS}/upd");
    let rv_before = created.body["metadata"]["resourceVersion"].clone();

    // PUT, Strict.
    let mut put = created.body.clone();
    put["spec"]["replicas"] = json!(3);
    put["spec"]["template"]["spec"]["containers"][0]["nope"] = json!(true);
    let answer = send(
        &api,
        Method::PUT,
        &format!("{item}?fieldValidation=Strict"),
        "application/json",
        serde_json::to_vec(&put).unwrap(),
    )
    .await;
    assert_eq!(answer.code, 400, "{}", answer.text);
    assert!(
        answer
            .text
            .contains("unknown field \\\"spec.template.spec.containers[0].nope\\\"")
    );
    let now = get(&api, &item).await;
    assert_eq!(now.body["metadata"]["resourceVersion"], rv_before);

    // Every patch type, Strict: rejected, nothing changes.
    let patches = [
        (
            "application/strategic-merge-patch+json",
            json!({"spec": {"replicas": 5, "bogus": 1}}),
        ),
        (
            "application/merge-patch+json",
            json!({"spec": {"replicas": 5, "bogus": 1}}),
        ),
        (
            "application/json-patch+json",
            json!([{"op": "add", "path": "/spec/bogus", "value": 1}]),
        ),
    ];
    for (content_type, patch) in &patches {
        let answer = send(
            &api,
            Method::PATCH,
            &format!("{item}?fieldValidation=Strict"),
            content_type,
            serde_json::to_vec(patch).unwrap(),
        )
        .await;
        assert_eq!(answer.code, 400, "{content_type}: {}", answer.text);
        assert!(
            answer.text.contains("unknown field \\\"spec.bogus\\\""),
            "{content_type}: {}",
            answer.text
        );
    }
    let now = get(&api, &item).await;
    assert_eq!(now.body["metadata"]["resourceVersion"], rv_before);
    assert!(now.body["spec"].get("replicas") != Some(&json!(5)));

    // Warn (the default): applied without the unknown field, with a warning.
    for (content_type, patch) in &patches[..2] {
        let answer = send(
            &api,
            Method::PATCH,
            &item,
            content_type,
            serde_json::to_vec(patch).unwrap(),
        )
        .await;
        assert_eq!(answer.code, 200, "{content_type}: {}", answer.text);
        assert_eq!(
            answer.warnings(),
            vec![r#"299 - "unknown field \"spec.bogus\"""#],
            "{content_type}"
        );
        assert_eq!(answer.body["spec"]["replicas"], 5);
        assert!(answer.body["spec"].get("bogus").is_none());
    }

    // A duplicate key in a patch body.
    let answer = send(
        &api,
        Method::PATCH,
        &format!("{item}?fieldValidation=Strict"),
        "application/merge-patch+json",
        r#"{"spec": {"replicas": 2, "replicas": 3}}"#,
    )
    .await;
    assert_eq!(answer.code, 400, "{}", answer.text);
    assert!(
        answer
            .text
            .contains("duplicate field \\\"spec.replicas\\\"")
    );

    // PUT with Warn.
    let mut put = get(&api, &item).await.body;
    put["spec"]["extra"] = json!({});
    let answer = send(
        &api,
        Method::PUT,
        &item,
        "application/json",
        serde_json::to_vec(&put).unwrap(),
    )
    .await;
    assert_eq!(answer.code, 200, "{}", answer.text);
    assert_eq!(
        answer.warnings(),
        vec![r#"299 - "unknown field \"spec.extra\"""#]
    );
}
