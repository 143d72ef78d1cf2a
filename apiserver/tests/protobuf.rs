//! Protobuf request bodies, as kubectl's typed clients send them: decoded
//! into the JSON form on create, replace and the scale subresource, answered
//! in JSON; a wrong kind or garbage is a 400 and PATCH stays JSON-only.

mod common;

use std::collections::BTreeMap;

use axum::body::Body;
use http::{Method, Request};
use http_body_util::BodyExt;
use k8s_pb::api::{apps, autoscaling, core};
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};
use tower::ServiceExt;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn s(text: &str) -> Option<String> {
    Some(text.into())
}

/// ObjectMeta with the zero values gogo writes for a new object.
fn object_meta(name: &str, resource_version: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        resource_version: s(resource_version),
        creation_timestamp: Some(meta::Time {
            seconds: Some(0),
            nanos: Some(0),
        }),
        labels: [("app".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

/// What `kubectl create deployment web --image=nginx --replicas=2
/// --port=8080` sends.
fn deployment(name: &str, replicas: i32, resource_version: &str) -> apps::v1::Deployment {
    let labels: BTreeMap<String, String> = [("app".to_string(), name.to_string())].into();
    apps::v1::Deployment {
        metadata: Some(object_meta(name, resource_version)),
        spec: Some(apps::v1::DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(meta::LabelSelector {
                match_labels: labels.clone(),
                match_expressions: vec![],
            }),
            template: Some(core::v1::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    name: s(""),
                    labels: labels.clone(),
                    ..Default::default()
                }),
                spec: Some(core::v1::PodSpec {
                    containers: vec![core::v1::Container {
                        name: s("nginx"),
                        image: s("nginx"),
                        ports: vec![core::v1::ContainerPort {
                            name: s(""),
                            host_port: Some(0),
                            container_port: Some(8080),
                            protocol: s("TCP"),
                            host_ip: s(""),
                        }],
                        resources: Some(Default::default()),
                        stdin: Some(false),
                        tty: Some(false),
                        ..Default::default()
                    }],
                    host_network: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(Default::default()),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(Default::default()),
    }
}

struct Answer {
    code: u16,
    content_type: String,
    body: Value,
}

async fn send(
    api: &common::TestApi,
    method: Method,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header(
            "accept",
            "application/vnd.kubernetes.protobuf,application/json",
        )
        .body(Body::from(body))
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    let code = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        code,
        content_type,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

#[tokio::test]
async fn protobuf_deployment_is_created_and_reads_back_as_json() {
    let api = common::start().await;
    let created = send(
        &api,
        Method::POST,
        DEPLOYMENTS,
        PROTOBUF,
        envelope("apps/v1", "Deployment", &deployment("web", 2, "")),
    )
    .await;
    assert_eq!(created.code, 201, "{}", created.body);
    assert!(created.content_type.starts_with("application/json"));

    let got = api.get(&format!("{DEPLOYMENTS}/web")).await;
    assert_eq!(got.code, 200);
    let object = got.body;
    assert_eq!(object["kind"], "Deployment");
    assert_eq!(object["metadata"]["namespace"], "default");
    assert!(
        object["metadata"]["creationTimestamp"].is_string(),
        "set by the server"
    );
    assert!(object["metadata"].get("generateName").is_none());
    assert_eq!(object["spec"]["replicas"], 2);
    assert_eq!(
        object["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    let container = &object["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx");
    // No junk from gogo's zero values: no hostPort 0, no empty name.
    assert_eq!(
        container["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    assert!(container.get("stdin").is_none() && container.get("tty").is_none());
    assert!(
        object["spec"]["template"]["spec"]
            .get("hostNetwork")
            .is_none()
    );
}

#[tokio::test]
async fn protobuf_replace_and_scale() {
    let api = common::start().await;
    let created = send(
        &api,
        Method::POST,
        DEPLOYMENTS,
        PROTOBUF,
        envelope("apps/v1", "Deployment", &deployment("web", 2, "")),
    )
    .await;
    assert_eq!(created.code, 201, "{}", created.body);
    let rv = created.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let replaced = send(
        &api,
        Method::PUT,
        &format!("{DEPLOYMENTS}/web"),
        PROTOBUF,
        envelope("apps/v1", "Deployment", &deployment("web", 3, &rv)),
    )
    .await;
    assert_eq!(replaced.code, 200, "{}", replaced.body);
    assert_eq!(replaced.body["spec"]["replicas"], 3);

    // Scale to zero: ScaleSpec.replicas is a Go non-pointer, so zero is
    // left off the wire and means 0.
    let scale = autoscaling::v1::Scale {
        metadata: Some(object_meta("web", "")),
        spec: Some(autoscaling::v1::ScaleSpec { replicas: None }),
        status: None,
    };
    let scaled = send(
        &api,
        Method::PUT,
        &format!("{DEPLOYMENTS}/web/scale"),
        PROTOBUF,
        envelope("autoscaling/v1", "Scale", &scale),
    )
    .await;
    assert_eq!(scaled.code, 200, "{}", scaled.body);
    let got = api.get(&format!("{DEPLOYMENTS}/web")).await;
    assert_eq!(got.body["spec"]["replicas"], 0);
}

#[tokio::test]
async fn wrong_kind_garbage_and_protobuf_patches_are_refused() {
    let api = common::start().await;
    let config = core::v1::ConfigMap {
        metadata: Some(object_meta("c", "")),
        data: [("a".to_string(), "b".to_string())].into(),
        ..Default::default()
    };
    let wrong = send(
        &api,
        Method::POST,
        DEPLOYMENTS,
        PROTOBUF,
        envelope("v1", "ConfigMap", &config),
    )
    .await;
    assert_eq!(wrong.code, 400, "{}", wrong.body);
    assert_eq!(wrong.body["reason"], "BadRequest");

    for garbage in [
        b"k8s\0\xff\xff\xff".to_vec(),
        b"{\"kind\": \"Deployment\"}".to_vec(),
        Vec::new(),
    ] {
        let bad = send(&api, Method::POST, DEPLOYMENTS, PROTOBUF, garbage).await;
        assert_eq!(bad.code, 400, "{}", bad.body);
        assert_eq!(bad.body["kind"], "Status");
        assert_eq!(bad.body["reason"], "BadRequest");
        let message = bad.body["message"].as_str().unwrap();
        assert!(message.contains("protobuf"), "{message}");
    }
    let list = api.get(DEPLOYMENTS).await;
    assert_eq!(list.body["items"], json!([]), "nothing stored");

    let created = send(
        &api,
        Method::POST,
        DEPLOYMENTS,
        PROTOBUF,
        envelope("apps/v1", "Deployment", &deployment("web", 1, "")),
    )
    .await;
    assert_eq!(created.code, 201);
    let patch = send(
        &api,
        Method::PATCH,
        &format!("{DEPLOYMENTS}/web"),
        PROTOBUF,
        envelope("apps/v1", "Deployment", &deployment("web", 5, "")),
    )
    .await;
    assert_eq!(patch.code, 415, "{}", patch.body);
}

#[tokio::test]
async fn protobuf_service_keeps_its_target_port() {
    let api = common::start().await;
    let service = core::v1::Service {
        metadata: Some(object_meta("s1", "")),
        spec: Some(core::v1::ServiceSpec {
            ports: vec![core::v1::ServicePort {
                name: s("80-8080"),
                protocol: s("TCP"),
                port: Some(80),
                target_port: Some(IntOrString {
                    r#type: Some(0),
                    int_val: Some(8080),
                    str_val: s(""),
                }),
                node_port: Some(0),
                ..Default::default()
            }],
            selector: [("app".to_string(), "s1".to_string())].into(),
            cluster_ip: s(""),
            r#type: s("ClusterIP"),
            session_affinity: s(""),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let created = send(
        &api,
        Method::POST,
        "/api/v1/namespaces/default/services",
        PROTOBUF,
        envelope("v1", "Service", &service),
    )
    .await;
    assert_eq!(created.code, 201, "{}", created.body);
    let port = &created.body["spec"]["ports"][0];
    assert_eq!(port["targetPort"], 8080);
    assert!(port.get("nodePort").is_none());
    // The empty sessionAffinity on the wire was dropped, so it is defaulted.
    assert_eq!(created.body["spec"]["sessionAffinity"], "None");
}
