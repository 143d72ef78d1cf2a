//! The protobuf decoder against real encodings: objects built with k8s-pb's
//! prost types (the same messages kubectl's typed clients send), with the
//! zero values gogo writes for Go non-pointer fields set explicitly, must
//! decode to the JSON kubectl would have sent, and that JSON must round-trip
//! unchanged through k8s-openapi's typed structs.

use std::collections::BTreeMap;

use k8s_pb::api::{apps, coordination, core, networking};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use knit_api::protobuf::{DecodeError, decode_object};
use proptest::prelude::*;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// `k8s\0` + `runtime.Unknown{typeMeta, raw}`, as kubectl sends it.
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

/// The decoded JSON must survive k8s-openapi's typed form unchanged: every
/// key is a real field of the kind, with the right JSON type.
fn assert_round_trips<T: DeserializeOwned + Serialize>(decoded: &Value) {
    let typed: T = serde_json::from_value(decoded.clone()).expect("decodes into k8s-openapi");
    assert_eq!(&serde_json::to_value(typed).unwrap(), decoded);
}

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn zero_time() -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(0),
        nanos: Some(0),
    })
}

/// ObjectMeta as gogo writes it for a new object: empty strings and a zero
/// creationTimestamp on the wire.
fn object_meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(namespace),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: zero_time(),
        labels,
        ..Default::default()
    }
}

#[test]
fn deployment_decodes_like_kubectl_json() {
    let app = labels(&[("app", "web")]);
    let container = core::v1::Container {
        name: s("nginx"),
        image: s("nginx"),
        ports: vec![core::v1::ContainerPort {
            name: s(""),
            host_port: Some(0),
            container_port: Some(8080),
            protocol: s("TCP"),
            host_ip: s(""),
        }],
        env: vec![core::v1::EnvVar {
            name: s("MODE"),
            value: s("fast"),
            value_from: None,
        }],
        resources: Some(core::v1::ResourceRequirements {
            limits: [
                ("cpu".to_string(), Quantity { string: s("500m") }),
                ("memory".to_string(), Quantity { string: s("128Mi") }),
            ]
            .into(),
            ..Default::default()
        }),
        termination_message_path: s(""),
        image_pull_policy: s(""),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        ..Default::default()
    };
    let deployment = apps::v1::Deployment {
        metadata: Some(object_meta("web", "", app.clone())),
        spec: Some(apps::v1::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: app.clone(),
                match_expressions: vec![],
            }),
            template: Some(core::v1::PodTemplateSpec {
                metadata: Some(object_meta("", "", app.clone())),
                spec: Some(core::v1::PodSpec {
                    containers: vec![container],
                    restart_policy: s(""),
                    dns_policy: s(""),
                    host_network: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::v1::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::v1::RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(0),
                        str_val: s(""),
                    }),
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("25%"),
                    }),
                }),
            }),
            min_ready_seconds: Some(0),
            revision_history_limit: Some(0),
            paused: Some(false),
            progress_deadline_seconds: None,
        }),
        status: Some(apps::v1::DeploymentStatus {
            observed_generation: Some(0),
            replicas: Some(0),
            ..Default::default()
        }),
    };
    let decoded = decode_object(&envelope("apps/v1", "Deployment", &deployment)).unwrap();
    let expected = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "env": [{"name": "MODE", "value": "fast"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                    }],
                },
            },
            "strategy": {
                "type": "RollingUpdate",
                // A pointer IntOrString: an explicit 0 is kept.
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
            },
            // A Go pointer: zero was set on purpose.
            "revisionHistoryLimit": 0,
        },
        "status": {},
    });
    assert_eq!(decoded, expected);
    assert_round_trips::<k8s_openapi::api::apps::v1::Deployment>(&decoded);
}

#[test]
fn explicit_zero_replicas_and_false_pointers_are_kept() {
    let deployment = apps::v1::Deployment {
        metadata: Some(object_meta("idle", "default", BTreeMap::new())),
        spec: Some(apps::v1::DeploymentSpec {
            replicas: Some(0),
            template: Some(core::v1::PodTemplateSpec {
                metadata: None,
                spec: Some(core::v1::PodSpec {
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(0),
                    host_pid: Some(false),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let decoded = decode_object(&envelope("apps/v1", "Deployment", &deployment)).unwrap();
    assert_eq!(
        decoded["metadata"],
        json!({"name": "idle", "namespace": "default"})
    );
    assert_eq!(decoded["spec"]["replicas"], json!(0));
    assert_eq!(
        decoded["spec"]["template"]["spec"],
        json!({
            "enableServiceLinks": false,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
        })
    );
}

#[test]
fn service_ports_and_int_or_string() {
    let service = core::v1::Service {
        metadata: Some(object_meta("s1", "default", labels(&[("app", "s1")]))),
        spec: Some(core::v1::ServiceSpec {
            ports: vec![core::v1::ServicePort {
                name: s("80-8080"),
                protocol: s("TCP"),
                app_protocol: None,
                port: Some(80),
                target_port: Some(IntOrString {
                    r#type: Some(0),
                    int_val: Some(8080),
                    str_val: s(""),
                }),
                node_port: Some(0),
            }],
            selector: labels(&[("app", "s1")]),
            cluster_ip: s(""),
            r#type: s("ClusterIP"),
            session_affinity: s(""),
            publish_not_ready_addresses: Some(false),
            health_check_node_port: Some(0),
            ..Default::default()
        }),
        status: Some(core::v1::ServiceStatus {
            load_balancer: Some(core::v1::LoadBalancerStatus::default()),
            conditions: vec![],
        }),
    };
    let decoded = decode_object(&envelope("v1", "Service", &service)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s1", "namespace": "default", "labels": {"app": "s1"}},
            "spec": {
                "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                "selector": {"app": "s1"},
                "type": "ClusterIP",
            },
            "status": {"loadBalancer": {}},
        })
    );
    assert_round_trips::<k8s_openapi::api::core::v1::Service>(&decoded);
}

#[test]
fn config_map_keeps_empty_values_and_secret_data_is_base64() {
    let config = core::v1::ConfigMap {
        metadata: Some(object_meta("c", "default", BTreeMap::new())),
        immutable: None,
        data: labels(&[("a", "b"), ("empty", "")]),
        binary_data: BTreeMap::new(),
    };
    let decoded = decode_object(&envelope("v1", "ConfigMap", &config)).unwrap();
    assert_eq!(decoded["data"], json!({"a": "b", "empty": ""}));
    assert!(decoded.get("binaryData").is_none());
    assert_round_trips::<k8s_openapi::api::core::v1::ConfigMap>(&decoded);

    let secret = core::v1::Secret {
        metadata: Some(object_meta("s", "default", BTreeMap::new())),
        immutable: None,
        data: [("k".to_string(), vec![0u8, 1, 2, 255])].into(),
        string_data: BTreeMap::new(),
        r#type: s("Opaque"),
    };
    let decoded = decode_object(&envelope("v1", "Secret", &secret)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "data": {"k": "AAEC/w=="},
            "type": "Opaque",
        })
    );
    assert_round_trips::<k8s_openapi::api::core::v1::Secret>(&decoded);
}

#[test]
fn namespace_keeps_its_empty_spec_and_status() {
    let namespace = core::v1::Namespace {
        metadata: Some(object_meta("x", "", BTreeMap::new())),
        spec: Some(core::v1::NamespaceSpec::default()),
        status: Some(core::v1::NamespaceStatus {
            phase: s(""),
            conditions: vec![],
        }),
    };
    let decoded = decode_object(&envelope("v1", "Namespace", &namespace)).unwrap();
    assert_eq!(
        decoded,
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "x"},
            "spec": {},
            "status": {},
        })
    );
    assert_round_trips::<k8s_openapi::api::core::v1::Namespace>(&decoded);
}

#[test]
fn ingress_backends_and_path_types() {
    let ingress = networking::v1::Ingress {
        metadata: Some(object_meta("web", "default", BTreeMap::new())),
        spec: Some(networking::v1::IngressSpec {
            ingress_class_name: None,
            default_backend: None,
            tls: vec![],
            rules: vec![networking::v1::IngressRule {
                host: s("foo.example.com"),
                // Go embeds IngressRuleValue: its `http` is inline in JSON.
                ingress_rule_value: Some(networking::v1::IngressRuleValue {
                    http: Some(networking::v1::HttpIngressRuleValue {
                        paths: vec![networking::v1::HttpIngressPath {
                            path: s("/bar"),
                            path_type: s("Exact"),
                            backend: Some(networking::v1::IngressBackend {
                                service: Some(networking::v1::IngressServiceBackend {
                                    name: s("svc1"),
                                    port: Some(networking::v1::ServiceBackendPort {
                                        name: s(""),
                                        number: Some(80),
                                    }),
                                }),
                                resource: None,
                            }),
                        }],
                    }),
                }),
            }],
        }),
        status: Some(networking::v1::IngressStatus {
            load_balancer: Some(Default::default()),
        }),
    };
    let decoded = decode_object(&envelope("networking.k8s.io/v1", "Ingress", &ingress)).unwrap();
    assert_eq!(
        decoded["spec"],
        json!({
            "rules": [{
                "host": "foo.example.com",
                "http": {"paths": [{
                    "path": "/bar",
                    "pathType": "Exact",
                    "backend": {"service": {"name": "svc1", "port": {"number": 80}}},
                }]},
            }],
        })
    );
    assert_round_trips::<k8s_openapi::api::networking::v1::Ingress>(&decoded);
}

#[test]
fn times_and_micro_times() {
    let lease = coordination::v1::Lease {
        metadata: Some(meta::ObjectMeta {
            name: s("node-a"),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(coordination::v1::LeaseSpec {
            holder_identity: s("node-a"),
            lease_duration_seconds: Some(40),
            acquire_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_789),
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let decoded = decode_object(&envelope("coordination.k8s.io/v1", "Lease", &lease)).unwrap();
    assert_eq!(
        decoded["metadata"]["creationTimestamp"],
        json!("2023-11-14T22:13:20Z")
    );
    assert_eq!(
        decoded["spec"],
        json!({
            "holderIdentity": "node-a",
            "leaseDurationSeconds": 40,
            "acquireTime": "2023-11-14T22:13:20.123456Z",
            "leaseTransitions": 0,
        })
    );
    assert_round_trips::<k8s_openapi::api::coordination::v1::Lease>(&decoded);
}

#[test]
fn scale_and_binding_bodies_decode() {
    let scale = k8s_pb::api::autoscaling::v1::Scale {
        metadata: Some(object_meta("web", "default", BTreeMap::new())),
        spec: Some(k8s_pb::api::autoscaling::v1::ScaleSpec { replicas: Some(3) }),
        status: None,
    };
    let decoded = decode_object(&envelope("autoscaling/v1", "Scale", &scale)).unwrap();
    assert_eq!(decoded["spec"], json!({"replicas": 3}));

    let binding = core::v1::Binding {
        metadata: Some(object_meta("pod", "default", BTreeMap::new())),
        target: Some(core::v1::ObjectReference {
            kind: s("Node"),
            name: s("node-a"),
            ..Default::default()
        }),
    };
    let decoded = decode_object(&envelope("v1", "Binding", &binding)).unwrap();
    assert_eq!(decoded["target"], json!({"kind": "Node", "name": "node-a"}));
}

#[test]
fn bad_bodies_are_errors() {
    let namespace = core::v1::Namespace::default();
    assert_eq!(
        decode_object(b"{\"kind\":\"Namespace\"}"),
        Err(DecodeError::BadMagic)
    );
    assert_eq!(
        decode_object(&envelope("v1", "Widget", &namespace)),
        Err(DecodeError::UnknownKind {
            api_version: "v1".into(),
            kind: "Widget".into()
        })
    );
    assert_eq!(
        decode_object(&envelope("", "", &namespace)),
        Err(DecodeError::MissingKind)
    );
    let mut truncated = envelope(
        "v1",
        "Namespace",
        &core::v1::Namespace {
            metadata: Some(object_meta("x", "", BTreeMap::new())),
            ..Default::default()
        },
    );
    truncated.truncate(truncated.len() - 3);
    assert_eq!(decode_object(&truncated), Err(DecodeError::Truncated));

    // metadata.name sent as a varint instead of a string.
    let raw = [0x0a, 0x02, 0x08, 0x01];
    let mut body = b"k8s\0".to_vec();
    body.extend(
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: s("v1"),
                kind: s("Namespace"),
            }),
            raw: Some(raw.to_vec()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let err = decode_object(&body).unwrap_err();
    assert!(
        err.to_string().contains("ObjectMeta.name"),
        "the error names the field: {err}"
    );
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut body = b"k8s\0".to_vec();
        body.extend(&bytes);
        let _ = decode_object(&bytes);
        let _ = decode_object(&body);
    }

    #[test]
    fn random_objects_never_panic(
        kind in prop::sample::select(vec!["Deployment", "Pod", "Service", "Secret", "Ingress"]),
        raw in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let api_version = match kind {
            "Deployment" => "apps/v1",
            "Ingress" => "networking.k8s.io/v1",
            _ => "v1",
        };
        let mut body = b"k8s\0".to_vec();
        body.extend(Unknown {
            type_meta: Some(TypeMeta { api_version: s(api_version), kind: s(kind) }),
            raw: Some(raw),
            ..Default::default()
        }.encode_to_vec());
        if let Ok(value) = decode_object(&body) {
            prop_assert_eq!(&value["kind"], &json!(kind));
        }
    }

    #[test]
    fn mutated_real_objects_never_panic(flip in 0usize..4096, byte in any::<u8>()) {
        let deployment = apps::v1::Deployment {
            metadata: Some(object_meta("web", "default", labels(&[("app", "web")]))),
            spec: Some(apps::v1::DeploymentSpec { replicas: Some(2), ..Default::default() }),
            status: None,
        };
        let mut body = envelope("apps/v1", "Deployment", &deployment);
        let at = flip % body.len();
        body[at] = byte;
        let _ = decode_object(&body);
    }
}
