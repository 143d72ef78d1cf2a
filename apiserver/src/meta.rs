//! Reading and writing the `metadata` of objects held as JSON.

use knit_api::registry::Resource;
use serde_json::{Map, Value};

/// Now, as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The object's `metadata`, created empty when missing or not an object.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn str_field<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object["metadata"][field].as_str().filter(|s| !s.is_empty())
}

pub fn name(object: &Value) -> Option<&str> {
    str_field(object, "name")
}

pub fn resource_version(object: &Value) -> Option<&str> {
    str_field(object, "resourceVersion")
}

pub fn is_deleting(object: &Value) -> bool {
    str_field(object, "deletionTimestamp").is_some()
}

/// `metadata.finalizers`, empty when absent.
pub fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether anything but `metadata` and `status` differs between two
/// objects: a change to the desired state, which bumps
/// `metadata.generation`. Compared in place, without copying either.
pub fn spec_changed(a: &Value, b: &Value) -> bool {
    let desired = |k: &String| !matches!(k.as_str(), "metadata" | "status" | "kind" | "apiVersion");
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a != b;
    };
    a.keys()
        .chain(b.keys())
        .filter(|k| desired(k))
        .any(|k| a.get(k) != b.get(k))
}

/// Counts one more change to the desired state of `updated` (from
/// `current`'s generation), for kinds that track it.
pub fn bump_generation(resource: &Resource, current: &Value, updated: &mut Value) {
    if resource.tracks_generation() {
        let next = current["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        metadata_mut(updated).insert("generation".into(), Value::from(next));
    }
}
