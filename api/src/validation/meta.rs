//! Object metadata: the name by the kind's naming rule, the namespace,
//! labels and annotations, and the identity fields an update may not change.

use serde_json::Value;

use crate::registry::Resource;
use crate::status::Cause;

use super::common::{annotations, immutable, label_map, report};
use super::format::{dns1035_label_problems, dns1123_label_problems};
use super::name_problems;
use super::path::{NULL, Path, map_of, set_str};

pub(super) fn object_meta(resource: &Resource, object: &Value, errs: &mut Vec<Cause>) {
    let meta = object.get("metadata").unwrap_or(&NULL);
    let path = Path::new("metadata");
    match set_str(meta, "name") {
        None => errs.push(Cause::required(
            path.child("name"),
            "name or generateName is required",
        )),
        Some(name) => report(
            errs,
            &path.child("name"),
            name,
            object_name_problems(resource, name),
        ),
    }
    let namespace = set_str(meta, "namespace");
    match (resource.namespaced, namespace) {
        (true, None) => errs.push(Cause::required(path.child("namespace"), "")),
        (true, Some(ns)) => report(
            errs,
            &path.child("namespace"),
            ns,
            dns1123_label_problems(ns),
        ),
        (false, Some(_)) => errs.push(Cause::forbidden(
            path.child("namespace"),
            "not allowed on this type",
        )),
        (false, None) => {}
    }
    label_map(map_of(meta, "labels"), &path.child("labels"), errs);
    annotations(
        map_of(meta, "annotations"),
        &path.child("annotations"),
        errs,
    );
}

/// Services are named by RFC 1035 labels (they become DNS names that must
/// start with a letter); every other kind by its registry rule.
fn object_name_problems(resource: &Resource, name: &str) -> Vec<String> {
    if resource.kind == "Service" {
        dns1035_label_problems(name)
    } else {
        name_problems(resource.name_rule, name)
    }
}

pub(super) fn object_meta_update(object: &Value, old: &Value, errs: &mut Vec<Cause>) {
    let new = object.get("metadata").unwrap_or(&NULL);
    let old = old.get("metadata").unwrap_or(&NULL);
    let path = Path::new("metadata");
    for key in ["name", "namespace", "uid", "creationTimestamp"] {
        immutable(new.get(key), old.get(key), &path.child(key), errs);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::validation::test_support::{check, check_update, fields, meta, service, with};

    #[test]
    fn metadata_needs_a_name_and_a_namespace() {
        let errs = check("", "ConfigMap", &json!({"metadata": {}}));
        assert_eq!(
            fields(&errs),
            vec![
                ("metadata.name", "FieldValueRequired"),
                ("metadata.namespace", "FieldValueRequired")
            ]
        );
        assert_eq!(
            errs[0].message,
            "Required value: name or generateName is required"
        );
        assert_eq!(fields(&check("", "ConfigMap", &json!({}))).len(), 2);
    }

    #[test]
    fn metadata_names_follow_the_kinds_rule() {
        let errs = check("", "ConfigMap", &json!({"metadata": meta("Bad_Name")}));
        assert_eq!(fields(&errs), vec![("metadata.name", "FieldValueInvalid")]);
        assert!(
            errs[0]
                .message
                .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain")
        );
        // Services are RFC 1035 labels: no leading digit.
        assert!(check("", "ConfigMap", &json!({"metadata": meta("1web")})).is_empty());
        let errs = check(
            "",
            "Service",
            &with(service(), "/metadata/name", json!("1web")),
        );
        assert_eq!(fields(&errs), vec![("metadata.name", "FieldValueInvalid")]);
        assert!(errs[0].message.contains("a DNS-1035 label must consist of"));
        let errs = check("", "Namespace", &json!({"metadata": {"name": "a.b"}}));
        assert_eq!(
            errs[0].message,
            "Invalid value: \"a.b\": must not contain dots"
        );
        assert!(check("", "Event", &json!({"metadata": meta("web.17a2f3")})).is_empty());
    }

    #[test]
    fn metadata_namespace_is_a_label_and_only_for_namespaced_kinds() {
        let errs = check(
            "",
            "ConfigMap",
            &json!({"metadata": {"name": "a", "namespace": "Prod"}}),
        );
        assert_eq!(
            fields(&errs),
            vec![("metadata.namespace", "FieldValueInvalid")]
        );
        let errs = check(
            "",
            "Node",
            &json!({"metadata": {"name": "n1", "namespace": "default"}}),
        );
        assert_eq!(
            fields(&errs),
            vec![("metadata.namespace", "FieldValueForbidden")]
        );
        assert_eq!(errs[0].message, "Forbidden: not allowed on this type");
        assert!(check("", "Node", &json!({"metadata": {"name": "n1"}})).is_empty());
    }

    #[test]
    fn metadata_labels_and_annotations_are_checked() {
        let object = json!({"metadata": {
            "name": "a", "namespace": "default",
            "labels": {"app": "web", "bad key": "v", "tier": "-front"},
            "annotations": {"example.com/Note": "anything goes here: {}", "a/b/c": "x"}
        }});
        let errs = check("", "ConfigMap", &object);
        assert_eq!(
            fields(&errs),
            vec![
                ("metadata.labels", "FieldValueInvalid"),
                ("metadata.labels", "FieldValueInvalid"),
                ("metadata.annotations", "FieldValueInvalid"),
            ]
        );
        assert!(
            errs[0]
                .message
                .starts_with("Invalid value: \"bad key\": name part must consist")
        );
        assert!(
            errs[1]
                .message
                .starts_with("Invalid value: \"-front\": a valid label")
        );
        assert!(
            errs[2]
                .message
                .starts_with("Invalid value: \"a/b/c\": a qualified name")
        );
    }

    #[test]
    fn annotations_are_limited_to_256_kib_in_total() {
        let big = "x".repeat(200 * 1024);
        let object = json!({"metadata": {
            "name": "a", "namespace": "default",
            "annotations": {"one": big, "two": big}
        }});
        let errs = check("", "ConfigMap", &object);
        assert_eq!(
            fields(&errs),
            vec![("metadata.annotations", "FieldValueTooLong")]
        );
        assert_eq!(
            errs[0].message,
            "Too long: may not be more than 262144 bytes"
        );
    }

    #[test]
    fn metadata_identity_is_immutable() {
        let old = json!({"metadata": {
            "name": "a", "namespace": "default", "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z"
        }});
        // Omitted system fields are carried over by the caller.
        let same = json!({"metadata": {"name": "a", "namespace": "default"}});
        assert!(check_update("", "ConfigMap", &same, &old).is_empty());
        let changed = json!({"metadata": {
            "name": "a", "namespace": "default", "uid": "u2", "creationTimestamp": "2025-01-01T00:00:00Z"
        }});
        let errs = check_update("", "ConfigMap", &changed, &old);
        assert_eq!(
            fields(&errs),
            vec![
                ("metadata.uid", "FieldValueInvalid"),
                ("metadata.creationTimestamp", "FieldValueInvalid")
            ]
        );
        assert_eq!(errs[0].message, "Invalid value: \"u2\": field is immutable");
    }
}
