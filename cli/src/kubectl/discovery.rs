//! Which resources the server has, and what a name on the command line
//! means: the plural (`pods`), singular (`pod`), short name (`po`), kind
//! (`Pod`, any case), each optionally qualified by `.group` or
//! `.version.group` (`deployments.apps`, `deploy.v1.apps`), as kubectl
//! resolves them. Discovery is asked for the aggregated form
//! (`apidiscovery.k8s.io/v2`, two requests in all); a server that answers
//! the legacy form is walked group by group instead.

use serde_json::Value;

use super::client::{Client, ClientError};

/// Accept header for aggregated discovery, with plain JSON as fallback.
pub const AGGREGATED_ACCEPT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";

/// One resource type the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResource {
    /// API group, empty for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Plural resource name, as in the URL.
    pub plural: String,
    /// Singular name (lower-case kind when the server sent none).
    pub singular: String,
    /// Kind of its objects.
    pub kind: String,
    /// Short names (`po`, `svc`).
    pub short_names: Vec<String>,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

impl ApiResource {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The collection or object URL path. `namespace` is ignored for
    /// cluster-scoped resources; `None` lists across all namespaces.
    pub fn path(&self, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut path = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        if self.namespaced
            && let Some(ns) = namespace
        {
            path.push_str("/namespaces/");
            path.push_str(ns);
        }
        path.push('/');
        path.push_str(&self.plural);
        if let Some(name) = name {
            path.push('/');
            path.push_str(name);
        }
        path
    }

    /// How kubectl names the type in messages: `service`, `deployment.apps`.
    pub fn display(&self) -> String {
        let kind = self.kind.to_lowercase();
        if self.group.is_empty() {
            kind
        } else {
            format!("{kind}.{}", self.group)
        }
    }
}

/// A name on the command line that matches no resource.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the server doesn't have a resource type \"{0}\"")]
    Unknown(String),
    #[error("the server doesn't serve kind \"{kind}\" in {api_version}")]
    UnknownKind { api_version: String, kind: String },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Every resource type the server serves, core group first.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// In discovery order (kubectl's priority: earlier wins ties).
    pub resources: Vec<ApiResource>,
}

impl Discovery {
    /// Asks the server: aggregated discovery of `/api` and `/apis`, or the
    /// legacy walk when the server answers the old form.
    pub async fn fetch(client: &Client) -> Result<Self, ClientError> {
        let mut discovery = Discovery::default();
        for root in ["/api", "/apis"] {
            let answer = client.get_json(root, AGGREGATED_ACCEPT).await?;
            if answer["kind"] == "APIGroupDiscoveryList" {
                discovery.add_aggregated(&answer);
                continue;
            }
            for (group, version) in legacy_versions(root, &answer) {
                let path = if group.is_empty() {
                    format!("/api/{version}")
                } else {
                    format!("/apis/{group}/{version}")
                };
                let list = client.get_json(&path, "application/json").await?;
                discovery.add_resource_list(&group, &version, &list);
            }
        }
        Ok(discovery)
    }

    /// Adds the resources of an `APIGroupDiscoveryList`, taking each
    /// group's first (preferred) version.
    pub fn add_aggregated(&mut self, list: &Value) {
        for group in list["items"].as_array().into_iter().flatten() {
            let group_name = group["metadata"]["name"].as_str().unwrap_or_default();
            let Some(version) = group["versions"].as_array().and_then(|v| v.first()) else {
                continue;
            };
            let version_name = version["version"].as_str().unwrap_or_default();
            for r in version["resources"].as_array().into_iter().flatten() {
                let Some(plural) = r["resource"].as_str() else {
                    continue;
                };
                let kind = r["responseKind"]["kind"].as_str().unwrap_or_default();
                self.resources.push(ApiResource {
                    group: group_name.to_string(),
                    version: version_name.to_string(),
                    plural: plural.to_string(),
                    singular: singular_or_kind(r["singularResource"].as_str(), kind),
                    kind: kind.to_string(),
                    short_names: strings(&r["shortNames"]),
                    namespaced: r["scope"] == "Namespaced",
                });
            }
        }
    }

    /// Adds the resources of a legacy `APIResourceList` (subresources such
    /// as `pods/log` skipped).
    pub fn add_resource_list(&mut self, group: &str, version: &str, list: &Value) {
        for r in list["resources"].as_array().into_iter().flatten() {
            let Some(plural) = r["name"].as_str().filter(|n| !n.contains('/')) else {
                continue;
            };
            let kind = r["kind"].as_str().unwrap_or_default();
            self.resources.push(ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                plural: plural.to_string(),
                singular: singular_or_kind(r["singularName"].as_str(), kind),
                kind: kind.to_string(),
                short_names: strings(&r["shortNames"]),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
            });
        }
    }

    /// What a command-line resource name means.
    pub fn resolve(&self, arg: &str) -> Result<&ApiResource, DiscoveryError> {
        let lower = arg.to_lowercase();
        // Try the whole word first, then `name.group`, `name.version.group`.
        let mut splits = vec![(lower.as_str(), None, None)];
        if let Some((name, rest)) = lower.split_once('.') {
            splits.push((name, None, Some(rest)));
            if let Some((version, group)) = rest.split_once('.') {
                splits.push((name, Some(version), Some(group)));
            }
        }
        for (name, version, group) in splits {
            let in_scope = |r: &&ApiResource| {
                group.is_none_or(|g| r.group == g) && version.is_none_or(|v| r.version == v)
            };
            let candidates = || self.resources.iter().filter(in_scope);
            // Resource names before kinds, as kubectl's RESTMapper does.
            let by_name = candidates().find(|r| {
                r.plural == name || r.singular == name || r.short_names.iter().any(|s| s == name)
            });
            if let Some(found) =
                by_name.or_else(|| candidates().find(|r| r.kind.to_lowercase() == name))
            {
                return Ok(found);
            }
        }
        Err(DiscoveryError::Unknown(arg.to_string()))
    }

    /// The resource for an object's `apiVersion` and `kind`.
    pub fn for_kind(&self, api_version: &str, kind: &str) -> Result<&ApiResource, DiscoveryError> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind && r.version == version)
            .or_else(|| {
                self.resources
                    .iter()
                    .find(|r| r.group == group && r.kind == kind)
            })
            .ok_or_else(|| DiscoveryError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })
    }
}

fn singular_or_kind(singular: Option<&str>, kind: &str) -> String {
    singular
        .filter(|s| !s.is_empty())
        .map_or_else(|| kind.to_lowercase(), str::to_string)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The (group, preferred version) pairs of a legacy `/api` (`APIVersions`)
/// or `/apis` (`APIGroupList`) answer.
fn legacy_versions(root: &str, answer: &Value) -> Vec<(String, String)> {
    if root == "/api" {
        return strings(&answer["versions"])
            .into_iter()
            .take(1)
            .map(|v| (String::new(), v))
            .collect();
    }
    answer["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| {
            let name = g["name"].as_str()?;
            let version = g["preferredVersion"]["version"]
                .as_str()
                .or_else(|| g["versions"][0]["version"].as_str())?;
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What knit (and kube-apiserver) answer for aggregated `/api` + `/apis`.
    fn fixture() -> Discovery {
        let core = json!({"kind": "APIGroupDiscoveryList", "items": [{
            "metadata": {"name": ""},
            "versions": [{"version": "v1", "resources": [
                {"resource": "pods", "singularResource": "pod", "shortNames": ["po"],
                 "scope": "Namespaced", "responseKind": {"group": "", "version": "v1", "kind": "Pod"}},
                {"resource": "services", "singularResource": "service", "shortNames": ["svc"],
                 "scope": "Namespaced", "responseKind": {"group": "", "version": "v1", "kind": "Service"}},
                {"resource": "events", "singularResource": "event", "shortNames": ["ev"],
                 "scope": "Namespaced", "responseKind": {"group": "", "version": "v1", "kind": "Event"}},
                {"resource": "nodes", "singularResource": "node", "shortNames": ["no"],
                 "scope": "Cluster", "responseKind": {"group": "", "version": "v1", "kind": "Node"}}
            ]}]
        }]});
        let groups = json!({"kind": "APIGroupDiscoveryList", "items": [
            {"metadata": {"name": "apps"}, "versions": [{"version": "v1", "resources": [
                {"resource": "deployments", "singularResource": "deployment", "shortNames": ["deploy"],
                 "scope": "Namespaced", "responseKind": {"group": "apps", "version": "v1", "kind": "Deployment"}}
            ]}]},
            {"metadata": {"name": "events.k8s.io"}, "versions": [{"version": "v1", "resources": [
                {"resource": "events", "singularResource": "event", "shortNames": ["ev"],
                 "scope": "Namespaced", "responseKind": {"group": "events.k8s.io", "version": "v1", "kind": "Event"}}
            ]}]}
        ]});
        let mut d = Discovery::default();
        d.add_aggregated(&core);
        d.add_aggregated(&groups);
        d
    }

    fn resolved(d: &Discovery, arg: &str) -> (String, String) {
        let r = d.resolve(arg).unwrap();
        (r.group.clone(), r.plural.clone())
    }

    #[test]
    fn plural_singular_short_and_kind_resolve() {
        let d = fixture();
        for arg in ["pods", "pod", "po", "Pod", "POD", "PODS"] {
            assert_eq!(resolved(&d, arg), ("".into(), "pods".into()), "{arg}");
        }
        for arg in [
            "deploy",
            "deployment",
            "Deployment",
            "deployments.apps",
            "deploy.apps",
            "deployment.v1.apps",
            "Deployment.apps",
        ] {
            assert_eq!(
                resolved(&d, arg),
                ("apps".into(), "deployments".into()),
                "{arg}"
            );
        }
        assert_eq!(resolved(&d, "svc"), ("".into(), "services".into()));
    }

    #[test]
    fn the_core_group_wins_ties_and_groups_disambiguate() {
        let d = fixture();
        assert_eq!(resolved(&d, "events"), ("".into(), "events".into()));
        assert_eq!(resolved(&d, "ev"), ("".into(), "events".into()));
        assert_eq!(
            resolved(&d, "events.events.k8s.io"),
            ("events.k8s.io".into(), "events".into())
        );
    }

    #[test]
    fn unknown_names_say_so() {
        let d = fixture();
        let err = d.resolve("gadgets").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the server doesn't have a resource type \"gadgets\""
        );
        assert!(d.resolve("pods.apps").is_err());
    }

    #[test]
    fn paths_and_names() {
        let d = fixture();
        let deploy = d.for_kind("apps/v1", "Deployment").unwrap();
        assert_eq!(
            deploy.path(Some("ns1"), Some("web")),
            "/apis/apps/v1/namespaces/ns1/deployments/web"
        );
        assert_eq!(deploy.path(None, None), "/apis/apps/v1/deployments");
        assert_eq!(deploy.display(), "deployment.apps");
        let node = d.for_kind("v1", "Node").unwrap();
        assert_eq!(node.path(Some("ignored"), Some("n1")), "/api/v1/nodes/n1");
        assert_eq!(node.display(), "node");
        assert!(d.for_kind("v1", "Deployment").is_err());
    }

    #[test]
    fn legacy_discovery_is_understood() {
        let mut d = Discovery::default();
        let versions = legacy_versions("/api", &json!({"kind": "APIVersions", "versions": ["v1"]}));
        assert_eq!(versions, vec![("".to_string(), "v1".to_string())]);
        let groups = legacy_versions(
            "/apis",
            &json!({"kind": "APIGroupList", "groups": [{"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}),
        );
        assert_eq!(groups, vec![("apps".to_string(), "v1".to_string())]);
        d.add_resource_list(
            "",
            "v1",
            &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "Pod", "shortNames": ["po"]},
                {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod"}
            ]}),
        );
        assert_eq!(d.resources.len(), 1);
        assert_eq!(d.resolve("po").unwrap().singular, "pod");
    }
}
