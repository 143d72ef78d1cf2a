//! Discovery: which API groups, versions and resources knit serves, in the
//! legacy form (`APIVersions`, `APIGroupList`, `APIResourceList`) and the
//! aggregated one (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`) that
//! kubectl asks for first, so that one request per root learns everything.

use http::HeaderMap;
use http::header::ACCEPT;
use knit_api::registry::{self, Resource};
use serde_json::{Value, json};

/// The media type of aggregated discovery, as requested and as answered.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Verbs of a resource's main endpoint.
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

fn group_json(group: &str) -> Value {
    let versions: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn api_groups() -> Value {
    let groups: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, _)| g)
        .fold(Vec::new(), |mut seen: Vec<&str>, g| {
            if !seen.contains(&g) {
                seen.push(g);
            }
            seen
        })
        .into_iter()
        .map(group_json)
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, if knit serves the group.
pub fn api_group(group: &str) -> Option<Value> {
    let mut value = group_json(group);
    if value["versions"].as_array().is_none_or(Vec::is_empty) {
        return None;
    }
    value["kind"] = json!("APIGroup");
    value["apiVersion"] = json!("v1");
    Some(value)
}

/// What a subresource returns and which verbs it takes:
/// `(kind, group and version when they differ from the parent's, verbs)`.
fn subresource_shape<'a>(
    resource: &'a Resource,
    sub: &str,
) -> (&'a str, Option<(&'a str, &'a str)>, &'static [&'static str]) {
    match sub {
        "scale" => (
            "Scale",
            Some(("autoscaling", "v1")),
            &["get", "patch", "update"],
        ),
        "binding" => ("Binding", None, &["create"]),
        "eviction" => ("Eviction", Some(("policy", "v1")), &["create"]),
        "finalize" => (resource.kind, None, &["update"]),
        _ => (resource.kind, None, &["get", "patch", "update"]),
    }
}

fn resource_entries(resource: &Resource) -> Vec<Value> {
    let mut main = json!({
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": VERBS,
    });
    if !resource.short_names.is_empty() {
        main["shortNames"] = json!(resource.short_names);
    }
    if !resource.categories.is_empty() {
        main["categories"] = json!(resource.categories);
    }
    let mut entries = vec![main];
    for sub in resource.subresources {
        let (kind, group_version, verbs) = subresource_shape(resource, sub);
        let mut entry = json!({
            "name": format!("{}/{}", resource.plural, sub),
            "singularName": "",
            "namespaced": resource.namespaced,
            "kind": kind,
            "verbs": verbs,
        });
        if let Some((group, version)) = group_version {
            entry["group"] = json!(group);
            entry["version"] = json!(version);
        }
        entries.push(entry);
    }
    entries
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = registry::all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(resource_entries)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// Whether the request's `Accept` asks for aggregated discovery before any
/// form knit would answer in the legacy way. Entries are taken in order, as
/// clients list their preference first.
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for entry in accept {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        match (media, param("as")) {
            ("application/json", Some("APIGroupDiscoveryList"))
                if param("g") == Some("apidiscovery.k8s.io") && param("v") == Some("v2") =>
            {
                return true;
            }
            ("application/json" | "application/*" | "*/*", None) => return false,
            _ => {}
        }
    }
    false
}

/// The aggregated document of `/api` (`core == true`) or `/apis`.
pub fn aggregated(core: bool) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (group, _) in registry::group_versions() {
        if group.is_empty() == core && !groups.contains(&group) {
            groups.push(group);
        }
    }
    let items: Vec<Value> = groups.into_iter().map(aggregated_group).collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(_, version)| {
            let resources: Vec<Value> = registry::all()
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(aggregated_resource)
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({"metadata": metadata, "versions": versions})
}

fn aggregated_resource(resource: &Resource) -> Value {
    let kind = |kind: &str, group_version: Option<(&str, &str)>| {
        let (group, version) = group_version.unwrap_or((resource.group, resource.version));
        json!({"group": group, "version": version, "kind": kind})
    };
    let subresources: Vec<Value> = resource
        .subresources
        .iter()
        .map(|sub| {
            let (sub_kind, group_version, verbs) = subresource_shape(resource, sub);
            json!({
                "subresource": sub,
                "responseKind": kind(sub_kind, group_version),
                "verbs": verbs,
            })
        })
        .collect();
    let mut entry = json!({
        "resource": resource.plural,
        "responseKind": kind(resource.kind, None),
        "scope": if resource.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": resource.singular,
        "verbs": VERBS,
    });
    if !resource.short_names.is_empty() {
        entry["shortNames"] = json!(resource.short_names);
    }
    if !resource.categories.is_empty() {
        entry["categories"] = json!(resource.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn kubectl_accept_header_picks_aggregated() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                       application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,\
                       application/json";
        assert!(wants_aggregated(&accept(kubectl)));
    }

    #[test]
    fn plain_or_older_accept_headers_get_the_legacy_form() {
        assert!(!wants_aggregated(&HeaderMap::new()));
        assert!(!wants_aggregated(&accept("application/json")));
        assert!(!wants_aggregated(&accept(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        )));
        assert!(!wants_aggregated(&accept(
            "application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        )));
    }

    #[test]
    fn core_group_lists_pods_with_their_subresources() {
        let doc = aggregated(true);
        let items = doc["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert!(items[0]["metadata"].get("name").is_none());
        let resources = items[0]["versions"][0]["resources"].as_array().unwrap();
        let pods = resources.iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["singularResource"], "pod");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(
            pods["responseKind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        let subs: Vec<&str> = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        assert!(
            subs.contains(&"status") && subs.contains(&"binding"),
            "{subs:?}"
        );
        let nodes = resources.iter().find(|r| r["resource"] == "nodes").unwrap();
        assert_eq!(nodes["scope"], "Cluster");
    }

    #[test]
    fn groups_list_deployments_with_scale_from_autoscaling() {
        let doc = aggregated(false);
        let apps = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deployments = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deployments["shortNames"], json!(["deploy"]));
        let scale = deployments["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert!(
            doc["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["metadata"]["name"] != "")
        );
    }
}
