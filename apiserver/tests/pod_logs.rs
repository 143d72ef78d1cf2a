//! `pods/log` proxies to the node's agent at its InternalIP and kubelet
//! port (`/containerLogs/{ns}/{pod}/{container}`), streaming for `follow`,
//! with kube-apiserver's errors. The agent here is a fake HTTP server on
//! loopback that answers with what it was asked.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;
use tower::ServiceExt;

/// The fake agent: echoes the path and query; `follow=true` on container
/// `stream` sends one line, then one more per message on `lines`; the
/// container `waiting` answers kubelet's 400.
async fn fake_agent(lines: Option<mpsc::Receiver<String>>) -> u16 {
    let lines = std::sync::Arc::new(tokio::sync::Mutex::new(lines));
    let app = Router::new().route(
        "/containerLogs/{ns}/{pod}/{container}",
        get(
            move |Path((ns, pod, container)): Path<(String, String, String)>,
                  RawQuery(query): RawQuery| {
                let lines = lines.clone();
                async move {
                    if container == "waiting" {
                        return (
                            StatusCode::BAD_REQUEST,
                            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"),
                        )
                            .into_response();
                    }
                    let echo = format!("{ns}/{pod}/{container}?{}\n", query.unwrap_or_default());
                    if container != "stream" {
                        return echo.into_response();
                    }
                    let rx = lines.lock().await.take().expect("one follow request");
                    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(echo) });
                    let rest = futures::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|line| (Ok(line), rx))
                    });
                    let stream = futures::StreamExt::chain(first, rest);
                    Response::new(Body::from_stream(stream))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

async fn node(api: &common::TestApi, name: &str, port: u16) {
    let nodes: Api<Node> = Api::all(api.client.clone());
    let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "addresses": [
                    {"type": "Hostname", "address": name},
                    {"type": "InternalIP", "address": "127.0.0.1"}
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}
            }})),
        )
        .await
        .unwrap();
}

async fn pod(api: &common::TestApi, name: &str, node: Option<&str>, containers: &[&str]) {
    let pods: Api<Pod> = Api::default_namespaced(api.client.clone());
    let containers: Vec<_> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox"}))
        .collect();
    let mut spec = json!({"containers": containers});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    let pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn logs_are_proxied_to_the_nodes_agent_with_their_options() {
    let api = common::start().await;
    let port = fake_agent(None).await;
    node(&api, "node-1", port).await;
    pod(&api, "web", Some("node-1"), &["app"]).await;

    let reply = api
        .get(&format!(
            "{PODS}/web/log?tailLines=2&timestamps=true&sinceSeconds=60&previous=false&limitBytes=100&pretty=true"
        ))
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(
        reply.text,
        "default/web/app?tailLines=2&timestamps=true&sinceSeconds=60&previous=false&limitBytes=100\n"
    );
    // A named container, and the kube client's own call.
    let reply = api.get(&format!("{PODS}/web/log?container=app")).await;
    assert_eq!(reply.text, "default/web/app?\n");
    let pods: Api<Pod> = Api::default_namespaced(api.client.clone());
    let text = pods.logs("web", &Default::default()).await.unwrap();
    assert_eq!(text, "default/web/app?\n");
}

#[tokio::test]
async fn errors_are_kube_apiservers() {
    let api = common::start().await;
    let port = fake_agent(None).await;
    node(&api, "node-1", port).await;
    pod(&api, "duo", Some("node-1"), &["a", "b"]).await;
    pod(&api, "pending", None, &["app"]).await;
    pod(&api, "starting", Some("node-1"), &["waiting"]).await;

    let reply = api.get(&format!("{PODS}/duo/log")).await;
    assert_eq!(reply.code, 400, "{}", reply.text);
    assert_eq!(reply.body["reason"], "BadRequest");
    assert_eq!(
        reply.body["message"],
        "a container name must be specified for pod duo, choose one of: [a b]"
    );
    let reply = api.get(&format!("{PODS}/duo/log?container=c")).await;
    assert_eq!(reply.code, 400);
    assert_eq!(
        reply.body["message"],
        "container c is not valid for pod duo"
    );
    let reply = api.get(&format!("{PODS}/duo/log?container=b")).await;
    assert_eq!((reply.code, reply.text.as_str()), (200, "default/duo/b?\n"));

    let reply = api.get(&format!("{PODS}/pending/log")).await;
    assert_eq!(reply.code, 400, "{}", reply.text);
    assert_eq!(
        reply.body["message"],
        "pod pending does not have a host assigned"
    );

    let reply = api.get(&format!("{PODS}/missing/log")).await;
    assert_eq!(reply.code, 404, "{}", reply.text);

    let reply = api.get(&format!("{PODS}/starting/log")).await;
    assert_eq!(
        reply.code, 400,
        "the agent's answer is passed on: {}",
        reply.text
    );
    assert_eq!(
        reply.body["message"],
        "container \"waiting\" in pod \"starting\" is waiting to start: ContainerCreating"
    );

    let reply = api
        .get(&format!("{PODS}/duo/log?container=a&tailLines=-1"))
        .await;
    assert_eq!(reply.code, 422, "{}", reply.text);
    assert_eq!(reply.body["details"]["kind"], "PodLogOptions");
    assert_eq!(reply.body["details"]["causes"][0]["field"], "tailLines");
}

#[tokio::test]
async fn an_unreachable_node_is_a_500_status() {
    let api = common::start().await;
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    node(&api, "gone", port).await;
    pod(&api, "web", Some("gone"), &["app"]).await;
    let reply = api.get(&format!("{PODS}/web/log")).await;
    assert_eq!(reply.code, 500, "{}", reply.text);
    assert_eq!(reply.body["kind"], "Status");
    assert_eq!(reply.body["reason"], "InternalError");
    let message = reply.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "Get \"http://127.0.0.1:{port}/containerLogs/default/web/app\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn follow_streams_lines_as_the_agent_sends_them() {
    let api = common::start().await;
    let (tx, rx) = mpsc::channel(4);
    let port = fake_agent(Some(rx)).await;
    node(&api, "node-1", port).await;
    pod(&api, "tail", Some("node-1"), &["stream"]).await;

    let request = Request::builder()
        .uri(format!("{PODS}/tail/log?follow=true"))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain");
    let mut body = response.into_body();
    // The first line arrives while the agent still holds the stream open.
    assert_eq!(
        next(&mut body).await.as_deref(),
        Some("default/tail/stream?follow=true\n")
    );
    tx.send("second line\n".into()).await.unwrap();
    assert_eq!(next(&mut body).await.as_deref(), Some("second line\n"));
    drop(tx);
    assert_eq!(next(&mut body).await, None, "the agent ended the stream");
}

/// The next chunk of a streamed body, within 5 s.
async fn next(body: &mut Body) -> Option<String> {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a frame in time");
    frame.map(|f| String::from_utf8(f.unwrap().into_data().unwrap().to_vec()).unwrap())
}
