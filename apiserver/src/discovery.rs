//! Discovery: which API groups, versions and resources knit serves, in the
//! legacy (`APIVersions`, `APIGroupList`, `APIResourceList`) form.

use knit_api::registry::{self, Resource};
use serde_json::{Value, json};

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
        let (kind, group, version, verbs): (&str, Option<&str>, Option<&str>, &[&str]) = match *sub
        {
            "scale" => (
                "Scale",
                Some("autoscaling"),
                Some("v1"),
                &["get", "patch", "update"],
            ),
            "binding" => ("Binding", None, None, &["create"]),
            "finalize" => (resource.kind, None, None, &["update"]),
            _ => (resource.kind, None, None, &["get", "patch", "update"]),
        };
        let mut entry = json!({
            "name": format!("{}/{}", resource.plural, sub),
            "singularName": "",
            "namespaced": resource.namespaced,
            "kind": kind,
            "verbs": verbs,
        });
        if let (Some(group), Some(version)) = (group, version) {
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
