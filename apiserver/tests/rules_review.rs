//! SelfSubjectRulesReview (`kubectl auth can-i --list`) against the
//! authorizer it describes: every rule listed for an identity is allowed
//! by `authorize`, every request the list does not cover is denied (or,
//! for the rules that hang on other objects, decided by those objects),
//! and the endpoint answers JSON and protobuf bodies behind the real
//! security middleware, as the asking (or impersonated) identity.

mod common;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use knit_apiserver::auth::Identity;
use knit_apiserver::auth::authz::{
    Attributes, DISCOVERY_URLS, Decision, NODE_RULES, ResourceRule, RuleList, authorize, rules_for,
};
use serde_json::{Value, json};

const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "impersonate",
];

/// (group, resource, subresource) of every row of the node table, and
/// some nobody but the admin may touch.
fn resources() -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = NODE_RULES
        .iter()
        .flat_map(|rule| {
            rule.resources.iter().map(|r| {
                (
                    rule.group.to_owned(),
                    (*r).to_owned(),
                    rule.subresource.to_owned(),
                )
            })
        })
        .collect();
    for (group, resource, sub) in [
        ("", "services", "status"),
        ("", "pods", "log"),
        ("", "pods", "eviction"),
        ("", "users", ""),
        ("", "serviceaccounts", ""),
        ("apps", "deployments", ""),
        ("coordination.k8s.io", "leases", "status"),
        ("authorization.k8s.io", "selfsubjectaccessreviews", ""),
        ("authorization.k8s.io", "selfsubjectrulesreviews", ""),
        ("authorization.k8s.io", "subjectaccessreviews", ""),
    ] {
        out.push((group.into(), resource.into(), sub.into()));
    }
    out.sort();
    out.dedup();
    out
}

/// Every request worth asking about: each verb on each resource, in each
/// namespace, naming each object the store holds (or none, for the verbs
/// that name none on the wire).
fn requests() -> Vec<Attributes> {
    let mut out = Vec::new();
    for (group, resource, subresource) in resources() {
        for verb in VERBS {
            let names: &[&str] = match *verb {
                "list" | "watch" | "deletecollection" => &[""],
                "create" => &["", "n1", "n2"],
                _ => &["n1", "n2", "mine", "theirs", "used", "unused"],
            };
            for namespace in ["", "default", "kube-node-lease"] {
                for name in names {
                    out.push(Attributes {
                        verb: (*verb).to_owned(),
                        resource_request: true,
                        group: group.clone(),
                        resource: resource.clone(),
                        subresource: subresource.clone(),
                        namespace: namespace.to_owned(),
                        name: (*name).to_owned(),
                        path: String::new(),
                    });
                }
            }
        }
    }
    out
}

/// Whether an RBAC resource rule covers a request. A create names its
/// object in the body, where knit's admission holds it to the rule's
/// names, so a name-less create counts as covered by a named rule.
fn rbac_covers(rule: &ResourceRule, a: &Attributes) -> bool {
    let has = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
    has(&rule.verbs, &a.verb)
        && has(&rule.api_groups, &a.group)
        && has(&rule.resources, &a.full_resource())
        && (rule.resource_names.is_empty()
            || rule.resource_names.contains(&a.name)
            || (a.verb == "create" && a.name.is_empty()))
}

fn listed(list: &RuleList, a: &Attributes) -> bool {
    list.resource_rules.iter().any(|rule| rbac_covers(rule, a))
}

/// Whether a request falls under a node rule that depends on other
/// objects (pods bound to the node and what they use).
fn needs_relationship(a: &Attributes) -> bool {
    NODE_RULES.iter().any(|rule| {
        rule.only.needs_relationship()
            && rule.group == a.group
            && rule.resources.contains(&a.resource.as_str())
            && rule.subresource == a.subresource
            && rule.verbs.contains(&a.verb.as_str())
    })
}

fn non_resource(verb: &str, path: &str) -> Attributes {
    Attributes {
        verb: verb.to_owned(),
        path: path.to_owned(),
        ..Attributes::default()
    }
}

fn node(name: &str) -> Identity {
    Identity::new(
        format!("system:node:{name}"),
        vec!["system:nodes".into(), "system:authenticated".into()],
    )
}

async fn pod(api: &common::TestApi, name: &str, on: &str, secret: &str, configmap: &str) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": on, "containers": [{"name": "c", "image": "busybox",
            "env": [{"name": "S", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}],
            "envFrom": [{"configMapRef": {"name": configmap}}]}]}});
    let reply = api.post_json("/api/v1/namespaces/default/pods", &pod).await;
    assert_eq!(reply.code, 201, "{}", reply.text);
}

#[tokio::test]
async fn what_is_listed_is_what_is_allowed() {
    let api = common::start().await;
    // n1's pod uses the secret and configmap "used"; n2's uses "unused".
    pod(&api, "mine", "n1", "used", "used").await;
    pod(&api, "theirs", "n2", "unused", "unused").await;

    // No two node rows speak of the same request.
    for (i, a) in NODE_RULES.iter().enumerate() {
        for b in &NODE_RULES[i + 1..] {
            let overlap = a.group == b.group
                && a.subresource == b.subresource
                && a.resources.iter().any(|r| b.resources.contains(r))
                && a.verbs.iter().any(|v| b.verbs.contains(v));
            assert!(!overlap, "{a:?} and {b:?} overlap");
        }
    }

    let identities = [
        Identity::new("root", vec!["system:masters".into()]),
        Identity::new("system:kube-controller-manager", vec![]),
        Identity::new("alice", vec!["system:authenticated".into()]),
        node("n1"),
    ];
    let requests = requests();
    for who in &identities {
        for namespace in ["", "default", "kube-node-lease"] {
            let list = rules_for(who, namespace);
            let mut relationships = 0;
            for a in requests.iter().filter(|a| a.namespace == namespace) {
                let decision = authorize(&api.state, who, a).await;
                let what = format!("{} {:?} in {namespace:?}", who.user, a);
                if listed(&list, a) {
                    assert_eq!(decision, Decision::Allow, "listed but denied: {what}");
                } else if who.node_name().is_some() && needs_relationship(a) {
                    relationships += 1;
                    // Decided by the objects, which live in "default":
                    // n1 may touch its own pod (and one that is gone, to
                    // get the handler's 404), not n2's, and read what its
                    // pod uses, nothing else.
                    let expected = match (a.resource.as_str(), namespace) {
                        ("pods", "default") => Some(a.name != "theirs"),
                        ("pods", _) => None,
                        (_, "default") => Some(a.name == "used"),
                        _ => Some(false),
                    };
                    if let Some(expected) = expected {
                        assert_eq!(decision == Decision::Allow, expected, "{what}");
                    }
                } else {
                    assert_ne!(decision, Decision::Allow, "allowed but not listed: {what}");
                }
            }
            assert_eq!(
                list.incomplete,
                relationships > 0,
                "{}: incomplete exactly when rules hang on objects",
                who.user
            );
            assert_eq!(list.incomplete, !list.evaluation_error.is_empty());

            // Every listed rule, expanded into its requests, is allowed.
            for rule in &list.resource_rules {
                let concrete = |items: &[String], instead: &str| {
                    items
                        .iter()
                        .map(|s| {
                            if s == "*" {
                                instead.to_owned()
                            } else {
                                s.clone()
                            }
                        })
                        .collect::<Vec<_>>()
                };
                let names = if rule.resource_names.is_empty() {
                    vec!["x".to_owned()]
                } else {
                    rule.resource_names.clone()
                };
                for verb in concrete(&rule.verbs, "get") {
                    for group in concrete(&rule.api_groups, "apps") {
                        for resource in concrete(&rule.resources, "deployments") {
                            let (resource, subresource) =
                                resource.split_once('/').unwrap_or((&resource, ""));
                            for name in &names {
                                let a = Attributes {
                                    verb: verb.clone(),
                                    resource_request: true,
                                    group: group.clone(),
                                    resource: resource.to_owned(),
                                    subresource: subresource.to_owned(),
                                    namespace: namespace.to_owned(),
                                    name: name.clone(),
                                    path: String::new(),
                                };
                                assert_eq!(
                                    authorize(&api.state, who, &a).await,
                                    Decision::Allow,
                                    "{} {rule:?}: {a:?}",
                                    who.user
                                );
                            }
                        }
                    }
                }
            }

            // Paths: the listed ones are allowed, others are not.
            let paths = [
                "/api",
                "/api/v1",
                "/apis/apps/v1",
                "/version",
                "/openapi/v3",
                "/healthz",
                "/metrics",
                "/openapi",
                "/logs/x",
                "/",
            ];
            for path in paths {
                for verb in ["get", "post", "delete"] {
                    let covered = list.non_resource_rules.iter().any(|rule| {
                        rule.verbs.iter().any(|v| v == "*" || v == verb)
                            && rule.non_resource_urls.iter().any(|url| {
                                match url.strip_suffix('*') {
                                    Some(prefix) => path.starts_with(prefix),
                                    None => url == path,
                                }
                            })
                    });
                    let decision = authorize(&api.state, who, &non_resource(verb, path)).await;
                    assert_eq!(
                        decision == Decision::Allow,
                        covered,
                        "{} {verb} {path}",
                        who.user
                    );
                }
            }
        }
    }

    // The node's rules name it where they are restricted to it.
    let list = rules_for(&node("n1"), "kube-node-lease");
    let named = |resource: &str| {
        list.resource_rules
            .iter()
            .find(|r| r.resources.iter().any(|x| x == resource) && !r.resource_names.is_empty())
            .map(|r| r.resource_names.clone())
    };
    assert_eq!(named("nodes"), Some(vec!["n1".to_owned()]));
    assert_eq!(named("leases"), Some(vec!["n1".to_owned()]));
    assert_eq!(
        rules_for(&node("n1"), "default")
            .resource_rules
            .iter()
            .filter(|r| r.resources.iter().any(|x| x == "leases"))
            .count(),
        0,
        "a node's lease rule holds only in kube-node-lease"
    );
    assert!(DISCOVERY_URLS.contains(&"/apis/*"));
}

const NODE_TOKEN: &str = "node-n1-token";
const ADMIN_TOKEN: &str = "admin-token";

type Secured = common::SecuredApi;

async fn secured() -> Secured {
    common::secured(&format!(
        "{NODE_TOKEN},system:node:n1,1,\"system:nodes\"\n\
         {ADMIN_TOKEN},root,3,\"system:masters\"\n"
    ))
    .await
}

impl Secured {
    async fn review(
        &self,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
        impersonate: Option<(&str, &str)>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews")
            .header("content-type", content_type)
            .header("authorization", format!("Bearer {token}"));
        if let Some((user, group)) = impersonate {
            request = request
                .header("impersonate-user", user)
                .header("impersonate-group", group);
        }
        let request = request.body(Body::from(body)).expect("a request");
        self.send(request).await
    }
}

fn json_review(namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview", "spec": {"namespace": namespace}}))
    .expect("JSON")
}

/// The review as kubectl sends it: `k8s\0`, a runtime.Unknown with the
/// kind, and the message {1 metadata, 2 spec {1 namespace}}.
fn protobuf_review(namespace: &str) -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(tag << 3) | 2, u8::try_from(bytes.len()).expect("short")];
        out.extend_from_slice(bytes);
        out
    }
    let type_meta = [
        field(1, b"authorization.k8s.io/v1"),
        field(2, b"SelfSubjectRulesReview"),
    ]
    .concat();
    let review = [field(1, b""), field(2, &field(1, namespace.as_bytes()))].concat();
    [
        b"k8s\0".as_slice(),
        &field(1, &type_meta),
        &field(2, &review),
    ]
    .concat()
}

fn has_rule(status: &Value, resource: &str, verb: &str, name: Option<&str>) -> bool {
    let contains = |v: &Value, s: &str| {
        v.as_array()
            .is_some_and(|items| items.iter().any(|x| x == s))
    };
    status["resourceRules"]
        .as_array()
        .expect("resourceRules")
        .iter()
        .any(|rule| {
            contains(&rule["resources"], resource)
                && contains(&rule["verbs"], verb)
                && name.is_none_or(|n| contains(&rule["resourceNames"], n))
        })
}

#[tokio::test]
async fn the_review_answers_json_and_protobuf_as_the_asking_identity() {
    let secured = secured().await;
    const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

    let (code, answer) = secured
        .review(
            ADMIN_TOKEN,
            "application/json",
            json_review("default"),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["kind"], "SelfSubjectRulesReview");
    assert_eq!(answer["spec"]["namespace"], "default");
    assert_eq!(
        answer["status"]["resourceRules"],
        json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])
    );
    assert_eq!(
        answer["status"]["nonResourceRules"],
        json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}])
    );
    assert_eq!(answer["status"]["incomplete"], false);

    for (token, impersonate) in [
        (NODE_TOKEN, None),
        (ADMIN_TOKEN, Some(("system:node:n1", "system:nodes"))),
    ] {
        for (content_type, body) in [
            (PROTOBUF, protobuf_review("kube-node-lease")),
            ("application/json", json_review("kube-node-lease")),
        ] {
            let (code, answer) = secured.review(token, content_type, body, impersonate).await;
            assert_eq!(code, StatusCode::CREATED, "{answer}");
            let status = &answer["status"];
            assert_eq!(answer["spec"]["namespace"], "kube-node-lease");
            assert!(has_rule(status, "nodes", "patch", Some("n1")), "{status}");
            assert!(has_rule(status, "leases", "update", Some("n1")), "{status}");
            assert!(
                has_rule(status, "endpointslices", "watch", None),
                "{status}"
            );
            assert!(!has_rule(status, "services", "create", None), "{status}");
            assert!(!has_rule(status, "*", "get", None), "{status}");
            assert_eq!(status["incomplete"], true);
            assert!(
                status["evaluationError"]
                    .as_str()
                    .is_some_and(|e| e.contains("bound to it")),
                "{status}"
            );
            assert!(
                status["nonResourceRules"][0]["nonResourceURLs"]
                    .as_array()
                    .is_some_and(|urls| urls.iter().any(|u| u == "/version")),
                "{status}"
            );
        }
    }

    for (content_type, body) in [
        ("application/json", b"not json".to_vec()),
        (
            "application/json",
            br#"{"spec": {"namespace": 7}}"#.to_vec(),
        ),
        (PROTOBUF, b"k8s\0\x0a\xff".to_vec()),
        (PROTOBUF, protobuf_review("default")[..10].to_vec()),
    ] {
        let (code, answer) = secured.review(NODE_TOKEN, content_type, body, None).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["kind"], "Status");
        assert_eq!(answer["reason"], "BadRequest");
    }
}
