//! Who may do what. A request becomes [`Attributes`] the way
//! kube-apiserver's RequestInfo reads a path, and [`authorize`] answers:
//!
//! - `system:masters` (the admin) may do everything;
//! - the controllers' own user may do everything but impersonate;
//! - a node (`system:node:<name>` in `system:nodes`) gets what its agent
//!   needs and no more, as Kubernetes' Node authorizer and NodeRestriction
//!   admission give a kubelet: read nodes, pods, services, endpoints and
//!   slices; write its own Node and Lease, the status of pods bound to it,
//!   delete those pods, write events; read a secret or configmap only when
//!   a pod bound to it uses it;
//! - every authenticated user may read discovery and ask what it may do
//!   (SelfSubjectAccessReview);
//! - everything else is denied.

use serde_json::Value;

use super::Identity;
use crate::AppState;
use crate::objects;
use crate::request::{Params, Target};

/// The admin group.
pub const MASTERS: &str = "system:masters";
/// The group of node agents.
pub const NODES: &str = "system:nodes";
/// The prefix of a node agent's user name.
pub const NODE_PREFIX: &str = "system:node:";
/// The user the controllers run as.
pub const CONTROLLERS: &str = "system:kube-controller-manager";
/// The namespace node Leases live in.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What a request does, in the terms authorization speaks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for a path, the lower-case HTTP method.
    pub verb: String,
    /// False for a non-resource path (`/version`, `/openapi/v3`).
    pub resource_request: bool,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
}

impl Attributes {
    /// Reads method, path and query as kube-apiserver's RequestInfo does.
    pub fn from_request(method: &http::Method, path: &str, query: Option<&str>) -> Attributes {
        let mut attrs = Attributes {
            path: path.to_owned(),
            verb: method.as_str().to_ascii_lowercase(),
            ..Attributes::default()
        };
        let Some((group, Some(_version), mut parts)) = crate::split_path(path) else {
            return attrs;
        };
        if parts.is_empty() {
            return attrs;
        }
        attrs.resource_request = true;
        attrs.group = group.to_owned();
        if parts[0] == "namespaces" && parts.len() > 1 {
            attrs.namespace = parts[1].to_owned();
            // `namespaces/<ns>/status` and `/finalize` are the namespace's own
            // subresources; anything else after the name is a resource in it.
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts = parts[2..].to_vec();
            }
        }
        attrs.resource = parts[0].to_owned();
        attrs.name = parts.get(1).map(|s| (*s).to_owned()).unwrap_or_default();
        attrs.subresource = parts.get(2).map(|s| (*s).to_owned()).unwrap_or_default();
        let params = Params::parse(query);
        attrs.verb = match *method {
            http::Method::GET | http::Method::HEAD if attrs.name.is_empty() => {
                if params.flag("watch") {
                    "watch"
                } else {
                    "list"
                }
            }
            http::Method::GET | http::Method::HEAD => "get",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE if attrs.name.is_empty() => "deletecollection",
            http::Method::DELETE => "delete",
            _ => return attrs,
        }
        .to_owned();
        attrs
    }

    /// `pods` or `pods/status`.
    pub fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Kubernetes' wording of a refusal: `User "u" cannot get resource
    /// "secrets" in API group "" in the namespace "default"`.
    pub fn forbidden_message(&self, user: &str, reason: &str) -> String {
        let tail = if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        };
        if !self.resource_request {
            return format!(
                "forbidden: User {user:?} cannot {} path {:?}{tail}",
                self.verb, self.path
            );
        }
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        let what = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        let subject = if self.name.is_empty() {
            what
        } else {
            format!("{what} {:?}", self.name)
        };
        format!(
            "{subject} is forbidden: User {user:?} cannot {} resource {:?} in API group {:?} {scope}{tail}",
            self.verb,
            self.full_resource(),
            self.group
        )
    }
}

/// An answer: allowed, or denied with the authorizer's reason (empty when
/// nothing allowed it at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// Paths every authenticated user may read (Kubernetes' system:discovery
/// and system:public-info-viewer roles).
fn discovery_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    matches!(
        path,
        "/api" | "/apis" | "/version" | "/healthz" | "/livez" | "/readyz"
    ) || path.starts_with("/openapi/")
        || path == "/openapi/v3"
        || path.starts_with("/api/")
        || path.starts_with("/apis/")
}

/// Decides one request. Looks objects up in the store for the node rules.
pub async fn authorize(state: &AppState, who: &Identity, attrs: &Attributes) -> Decision {
    if who.in_group(MASTERS) {
        return Decision::Allow;
    }
    if attrs.verb == "impersonate" {
        return Decision::Deny(String::new());
    }
    if who.user == CONTROLLERS {
        return Decision::Allow;
    }
    if attrs.resource_request
        && attrs.group == "authorization.k8s.io"
        && matches!(
            attrs.resource.as_str(),
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
        )
        && attrs.verb == "create"
    {
        return Decision::Allow;
    }
    if !attrs.resource_request {
        // Discovery documents are GETs of a group or version, never objects.
        return if attrs.verb == "get" && discovery_path(&attrs.path) {
            Decision::Allow
        } else {
            Decision::Deny(String::new())
        };
    }
    if let Some(node) = who.node_name() {
        return node_rules(state, node, attrs).await;
    }
    Decision::Deny(String::new())
}

fn allow_if(ok: bool, reason: impl FnOnce() -> String) -> Decision {
    if ok {
        Decision::Allow
    } else {
        Decision::Deny(reason())
    }
}

/// The Node authorizer and NodeRestriction, for what knit's agent does.
async fn node_rules(state: &AppState, node: &str, a: &Attributes) -> Decision {
    let read = matches!(a.verb.as_str(), "get" | "list" | "watch");
    let no_relation = || format!("no relationship found between node '{node}' and this object");
    let verb = a.verb.as_str();
    match (
        a.group.as_str(),
        a.resource.as_str(),
        a.subresource.as_str(),
    ) {
        ("", "nodes", "") if read => Decision::Allow,
        ("", "nodes", "" | "status") if matches!(verb, "create" | "update" | "patch" | "get") => {
            // A create names its node in the body; `admit_node_create`
            // checks it before the request goes on.
            allow_if(
                a.name == node || (verb == "create" && a.name.is_empty()),
                || format!("node '{node}' cannot modify node '{}'", a.name),
            )
        }
        ("coordination.k8s.io", "leases", "")
            if matches!(verb, "get" | "create" | "update" | "patch") =>
        {
            allow_if(
                a.namespace == LEASE_NAMESPACE
                    && (a.name == node || (verb == "create" && a.name.is_empty())),
                || {
                    "can only access node lease with the same name as the requesting node"
                        .to_owned()
                },
            )
        }
        ("", "pods", "") if read => Decision::Allow,
        ("", "pods", "status") if matches!(verb, "get" | "update" | "patch") => {
            bound_pod(state, node, a).await
        }
        ("", "pods", "") if verb == "delete" => bound_pod(state, node, a).await,
        ("", "events", "") | ("events.k8s.io", "events", "")
            if matches!(verb, "create" | "update" | "patch") =>
        {
            Decision::Allow
        }
        ("", "services" | "endpoints" | "namespaces", "")
        | ("discovery.k8s.io", "endpointslices", "")
            if read =>
        {
            Decision::Allow
        }
        ("", "secrets" | "configmaps", "") if verb == "get" && !a.name.is_empty() => {
            let used = pods_of(state, node, &a.namespace)
                .await
                .iter()
                .any(|pod| pod_uses(pod, &a.resource, &a.name));
            allow_if(used, no_relation)
        }
        ("", "secrets" | "configmaps", "") => Decision::Deny(no_relation()),
        _ => Decision::Deny(String::new()),
    }
}

/// Allowed when the named pod is bound to `node` (and, when the request
/// names no pod, as RBAC's system:node role would: admission checks the
/// actual requests, which always name one).
async fn bound_pod(state: &AppState, node: &str, a: &Attributes) -> Decision {
    if a.name.is_empty() {
        return Decision::Allow;
    }
    let pod = Target::parse("", "v1", &["namespaces", &a.namespace, "pods", &a.name]);
    let bound = match pod {
        Ok(target) => match objects::get(state, &target).await {
            Ok(pod) => pod["spec"]["nodeName"].as_str() == Some(node),
            // A pod that is gone: the agent's delete or status write will
            // get its 404 from the handler, which says more than a 403.
            Err(_) => true,
        },
        Err(_) => false,
    };
    allow_if(bound, || {
        format!("node '{node}' can only update pods bound to it")
    })
}

/// The pods bound to `node` in `namespace`.
async fn pods_of(state: &AppState, node: &str, namespace: &str) -> Vec<Value> {
    let Ok(target) = Target::parse("", "v1", &["namespaces", namespace, "pods"]) else {
        return Vec::new();
    };
    let query = format!("fieldSelector=spec.nodeName%3D{node}");
    let params = Params::parse(Some(&query));
    match objects::list(state, &target, &params).await {
        Ok(list) => list["items"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Whether a pod refers to the secret or configmap `name`: volumes,
/// projected sources, `env` and `envFrom` of every container, and image
/// pull secrets.
fn pod_uses(pod: &Value, resource: &str, name: &str) -> bool {
    let spec = &pod["spec"];
    let is = |v: &Value| v.as_str() == Some(name);
    let (volume_key, volume_name, ref_key, env_key) = if resource == "secrets" {
        ("secret", "secretName", "secretRef", "secretKeyRef")
    } else {
        ("configMap", "name", "configMapRef", "configMapKeyRef")
    };
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    for volume in list(&spec["volumes"]) {
        if is(&volume[volume_key][volume_name]) {
            return true;
        }
        for source in list(&volume["projected"]["sources"]) {
            if is(&source[volume_key]["name"]) {
                return true;
            }
        }
    }
    if resource == "secrets"
        && list(&spec["imagePullSecrets"])
            .iter()
            .any(|s| is(&s["name"]))
    {
        return true;
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|key| list(&spec[*key]))
        .collect::<Vec<_>>();
    containers.iter().any(|c| {
        list(&c["env"])
            .iter()
            .any(|e| is(&e["valueFrom"][env_key]["name"]))
            || list(&c["envFrom"]).iter().any(|e| is(&e[ref_key]["name"]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attributes_read_paths_as_kube_apiserver() {
        let a = Attributes::from_request(
            &http::Method::PATCH,
            "/api/v1/namespaces/default/pods/web/status",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.subresource.as_str()),
            ("patch", "pods", "status")
        );
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("default", "web"));
        let a = Attributes::from_request(&http::Method::GET, "/api/v1/pods", Some("watch=1"));
        assert_eq!((a.verb.as_str(), a.resource.as_str()), ("watch", "pods"));
        let a =
            Attributes::from_request(&http::Method::GET, "/api/v1/namespaces/kube-system", None);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.name.as_str()),
            ("get", "namespaces", "kube-system")
        );
        let a = Attributes::from_request(
            &http::Method::DELETE,
            "/apis/apps/v1/namespaces/x/deployments",
            None,
        );
        assert_eq!(
            (a.verb.as_str(), a.group.as_str()),
            ("deletecollection", "apps")
        );
        let a = Attributes::from_request(&http::Method::GET, "/openapi/v3", None);
        assert!(!a.resource_request);
    }

    #[test]
    fn forbidden_messages_read_like_kubernetes() {
        let a = Attributes::from_request(
            &http::Method::POST,
            "/api/v1/namespaces/default/services",
            None,
        );
        assert_eq!(
            a.forbidden_message("system:node:n1", ""),
            "services is forbidden: User \"system:node:n1\" cannot create resource \"services\" in API group \"\" in the namespace \"default\""
        );
        let a = Attributes::from_request(&http::Method::GET, "/apis/apps/v1/deployments", None);
        assert_eq!(
            a.forbidden_message("bob", ""),
            "deployments.apps is forbidden: User \"bob\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
    }

    #[test]
    fn pods_use_secrets_through_volumes_env_and_pull_secrets() {
        let pod = json!({"spec": {
            "volumes": [{"name": "v", "secret": {"secretName": "vol"}}],
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"name": "c",
                "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "cm"}}]}]
        }});
        for used in ["vol", "pull", "env"] {
            assert!(pod_uses(&pod, "secrets", used), "{used}");
        }
        assert!(!pod_uses(&pod, "secrets", "other"));
        assert!(pod_uses(&pod, "configmaps", "cm"));
        assert!(!pod_uses(&pod, "configmaps", "vol"));
    }
}
