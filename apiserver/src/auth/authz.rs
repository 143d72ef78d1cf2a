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
//!   (SelfSubjectAccessReview, SelfSubjectRulesReview);
//! - everything else is denied.
//!
//! The node rules and what everyone may do are tables ([`NODE_RULES`],
//! [`DISCOVERY_URLS`]) that both [`authorize`] and [`rules_for`] (the
//! answer to `kubectl auth can-i --list`) read, so what is listed and what
//! is decided cannot drift apart.

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

/// The paths every authenticated user may GET (Kubernetes'
/// system:discovery and system:public-info-viewer roles), as RBAC writes
/// non-resource URLs: exact, or a prefix ending in `*`. A trailing `/` on
/// the request path is ignored.
pub const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi/*",
    "/readyz",
    "/version",
];

/// What every authenticated user may do with resources: ask what it may
/// do (Kubernetes' system:basic-user role).
const EVERYONE: &[Rule] = &[Rule::new(
    "authorization.k8s.io",
    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    "",
    &["create"],
    Only::Any,
)];

/// The verbs the controllers may use: every verb knit's API serves; only
/// `impersonate` is kept from them.
const CONTROLLER_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// Which objects a [`Rule`] covers beyond its group, resource and verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// Every object.
    Any,
    /// The node's own Node (a create names it in the body, which
    /// `admit_node_create` checks).
    OwnNode,
    /// The node's own Lease in `kube-node-lease`.
    OwnLease,
    /// Pods bound to the node: known only by looking the pod up.
    BoundPod,
    /// Secrets and configmaps a pod bound to the node uses: known only by
    /// looking its pods up.
    UsedByPod,
}

impl Only {
    /// Whether the rule depends on other objects, so that a list of rules
    /// cannot say which objects it covers.
    pub fn needs_relationship(self) -> bool {
        matches!(self, Only::BoundPod | Only::UsedByPod)
    }
}

/// One row of a rule table: `verbs` on `resources` (with `subresource`) in
/// `group`, for the objects `only` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub subresource: &'static str,
    pub verbs: &'static [&'static str],
    pub only: Only,
}

impl Rule {
    const fn new(
        group: &'static str,
        resources: &'static [&'static str],
        subresource: &'static str,
        verbs: &'static [&'static str],
        only: Only,
    ) -> Rule {
        Rule {
            group,
            resources,
            subresource,
            verbs,
            only,
        }
    }

    /// Whether the rule speaks of this request's verb and resource (its
    /// `only` still has to agree).
    fn covers(&self, a: &Attributes) -> bool {
        a.resource_request
            && a.group == self.group
            && self.resources.contains(&a.resource.as_str())
            && a.subresource == self.subresource
            && self.verbs.contains(&a.verb.as_str())
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch"];

/// What a node may do: the Node authorizer and NodeRestriction, for what
/// knit's agent does. The one source of both [`authorize`]'s decisions for
/// nodes and the rules a SelfSubjectRulesReview lists; no two rows cover
/// the same group, resource, subresource and verb.
#[rustfmt::skip]
pub const NODE_RULES: &[Rule] = &[
    Rule::new("",                    &["nodes"],          "",       READ,                                 Only::Any),
    Rule::new("",                    &["nodes"],          "",       WRITE,                                Only::OwnNode),
    Rule::new("",                    &["nodes"],          "status", &["get", "create", "update", "patch"], Only::OwnNode),
    Rule::new("coordination.k8s.io", &["leases"],         "",       &["get", "create", "update", "patch"], Only::OwnLease),
    Rule::new("",                    &["pods"],           "",       READ,                                 Only::Any),
    Rule::new("",                    &["pods"],           "status", &["get", "update", "patch"],          Only::BoundPod),
    Rule::new("",                    &["pods"],           "",       &["delete"],                          Only::BoundPod),
    Rule::new("",                    &["events"],         "",       WRITE,                                Only::Any),
    Rule::new("events.k8s.io",       &["events"],         "",       WRITE,                                Only::Any),
    Rule::new("",                    &["services", "endpoints", "namespaces"], "", READ,                  Only::Any),
    Rule::new("discovery.k8s.io",    &["endpointslices"], "",       READ,                                 Only::Any),
    Rule::new("",                    &["secrets", "configmaps"], "", &["get"],                            Only::UsedByPod),
];

/// Whether an RBAC non-resource URL (exact, or a prefix ending in `*`)
/// matches `path`.
fn url_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == pattern,
    }
}

/// Whether every authenticated user may GET `path`.
fn discovery_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    DISCOVERY_URLS.iter().any(|url| url_matches(url, path))
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
    // The review endpoints answer whatever follows the resource in the
    // path the same way, so a subresource there changes nothing.
    let review = Attributes {
        subresource: String::new(),
        ..attrs.clone()
    };
    if EVERYONE.iter().any(|rule| rule.covers(&review)) {
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

/// A node's request, decided by the row of [`NODE_RULES`] that covers it.
async fn node_rules(state: &AppState, node: &str, a: &Attributes) -> Decision {
    let no_relation = || format!("no relationship found between node '{node}' and this object");
    let Some(rule) = NODE_RULES.iter().find(|rule| rule.covers(a)) else {
        // Kubernetes' Node authorizer speaks up for every secret and
        // configmap request it refuses; RBAC is silent about the rest.
        return if a.group.is_empty()
            && a.subresource.is_empty()
            && matches!(a.resource.as_str(), "secrets" | "configmaps")
        {
            Decision::Deny(no_relation())
        } else {
            Decision::Deny(String::new())
        };
    };
    // A create names its object in the body, which `admit_node_create`
    // checks before the request goes on.
    let own = |name: &str| a.name == name || (a.verb == "create" && a.name.is_empty());
    match rule.only {
        Only::Any => Decision::Allow,
        Only::OwnNode => allow_if(own(node), || {
            format!("node '{node}' cannot modify node '{}'", a.name)
        }),
        Only::OwnLease => allow_if(a.namespace == LEASE_NAMESPACE && own(node), || {
            "can only access node lease with the same name as the requesting node".to_owned()
        }),
        Only::BoundPod => bound_pod(state, node, a).await,
        Only::UsedByPod => {
            let used = !a.name.is_empty()
                && pods_of(state, node, &a.namespace)
                    .await
                    .iter()
                    .any(|pod| pod_uses(pod, &a.resource, &a.name));
            allow_if(used, no_relation)
        }
    }
}

/// An RBAC resource rule, as a SelfSubjectRulesReview lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

/// An RBAC non-resource rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NonResourceRule {
    pub verbs: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

/// What an identity may do in a namespace: a SelfSubjectRulesReview's
/// status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleList {
    pub resource_rules: Vec<ResourceRule>,
    pub non_resource_rules: Vec<NonResourceRule>,
    /// True when some of what the identity may do depends on other
    /// objects and so is not in the lists.
    pub incomplete: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub evaluation_error: String,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl ResourceRule {
    fn everything(verbs: &[&str]) -> ResourceRule {
        ResourceRule {
            verbs: strings(verbs),
            api_groups: strings(&["*"]),
            resources: strings(&["*"]),
            resource_names: Vec::new(),
        }
    }

    fn of(rule: &Rule, names: &[&str]) -> ResourceRule {
        let resources = rule
            .resources
            .iter()
            .map(|r| {
                if rule.subresource.is_empty() {
                    (*r).to_owned()
                } else {
                    format!("{r}/{}", rule.subresource)
                }
            })
            .collect();
        ResourceRule {
            verbs: strings(rule.verbs),
            api_groups: strings(&[rule.group]),
            resources,
            resource_names: strings(names),
        }
    }
}

/// The rules `who` has in `namespace` (empty: the rules that hold in every
/// namespace), read from the same tables [`authorize`] decides by. Rules
/// that hold only for objects related to a node (its pods' status, the
/// secrets its pods use) cannot be written as RBAC rules; they are left
/// out and the list is marked incomplete, as Kubernetes' Node authorizer
/// does.
pub fn rules_for(who: &Identity, namespace: &str) -> RuleList {
    let all_paths = || {
        vec![NonResourceRule {
            verbs: strings(&["*"]),
            non_resource_urls: strings(&["*"]),
        }]
    };
    let mut list = RuleList {
        resource_rules: Vec::new(),
        non_resource_rules: Vec::new(),
        incomplete: false,
        evaluation_error: String::new(),
    };
    if who.in_group(MASTERS) {
        list.resource_rules.push(ResourceRule::everything(&["*"]));
        list.non_resource_rules = all_paths();
        return list;
    }
    if who.user == CONTROLLERS {
        list.resource_rules
            .push(ResourceRule::everything(CONTROLLER_VERBS));
        list.non_resource_rules = all_paths();
        return list;
    }
    list.resource_rules = EVERYONE.iter().map(|r| ResourceRule::of(r, &[])).collect();
    list.non_resource_rules.push(NonResourceRule {
        verbs: strings(&["get"]),
        non_resource_urls: strings(DISCOVERY_URLS),
    });
    let Some(node) = who.node_name() else {
        return list;
    };
    for rule in NODE_RULES {
        match rule.only {
            Only::Any => list.resource_rules.push(ResourceRule::of(rule, &[])),
            Only::OwnNode => list.resource_rules.push(ResourceRule::of(rule, &[node])),
            Only::OwnLease if namespace == LEASE_NAMESPACE => {
                list.resource_rules.push(ResourceRule::of(rule, &[node]));
            }
            Only::OwnLease => {}
            Only::BoundPod | Only::UsedByPod => list.incomplete = true,
        }
    }
    if list.incomplete {
        list.evaluation_error = format!(
            "node '{node}' may also get, update and patch the status of pods bound to it, \
             delete them, and get the secrets and configmaps they use; those rules depend \
             on the objects and are not listed"
        );
    }
    list
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
