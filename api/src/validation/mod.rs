//! Per-kind validation, as kube-apiserver's `ValidateX` functions do it: every
//! problem of an object, each with its field path (`spec.ports[0].port`) and
//! a message worded as Kubernetes words it, so kubectl users read what they
//! would read from a real cluster.
//!
//! Objects arrive as JSON after the typed decode, so types are right but any
//! field may be missing. Fields that `defaults::apply_defaults` fills
//! (protocols, policies, strategy types) are only checked when present, so
//! validation gives the same answer before and after defaulting.
//!
//! This module owns the entry points and the messages several kinds share;
//! field paths and JSON access live in `path`, shared causes in `common`,
//! name formats in `format`, and each kind's rules in a module of its own.

mod common;
mod config;
mod endpoints;
mod format;
mod ingress;
mod meta;
mod node;
mod path;
mod pod;
mod service;
#[cfg(test)]
mod test_support;
mod workload;

use serde_json::Value;

pub use crate::registry::NameRule;
use crate::registry::Resource;
use crate::status::Cause;

use config::{config_map, secret};
use endpoints::{endpoint_slice, endpoints};
use format::{
    dns1123_label_problems, dns1123_subdomain_problems, matches_label, matches_qualified,
    matches_subdomain, max_len, path_segment_problems, qualified_regex_error, regex_error,
};
use ingress::ingress;
use meta::{object_meta, object_meta_update};
use node::node;
use pod::pod;
use service::service;
use workload::workload;

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const NON_NEGATIVE: &str = "must be greater than or equal to 0";
const IMMUTABLE: &str = "field is immutable";
const IP_MESSAGE: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

/// Validates an object for create (`old = None`) or update (`old` = the
/// stored object). Returns every problem found, each with its field path;
/// empty when the object is valid.
///
/// The caller fills `metadata.name` (from `generateName`) and
/// `metadata.namespace` (from the URL) first, and on update carries over
/// what a client may omit (`metadata.uid`, `spec.clusterIP`), as
/// kube-apiserver does before it validates.
pub fn validate(resource: &Resource, object: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut errs = Vec::new();
    object_meta(resource, object, &mut errs);
    if let Some(old) = old {
        object_meta_update(object, old, &mut errs);
    }
    match resource.kind {
        "Pod" => pod(object, old, &mut errs),
        "Service" => service(object, old, &mut errs),
        "Endpoints" => endpoints(object, &mut errs),
        "EndpointSlice" => endpoint_slice(object, old, &mut errs),
        "Deployment" => workload(object, old, true, &mut errs),
        "ReplicaSet" => workload(object, old, false, &mut errs),
        "Ingress" => ingress(object, &mut errs),
        "ConfigMap" => config_map(object, old, &mut errs),
        "Secret" => secret(object, old, &mut errs),
        "Node" => node(object, old, &mut errs),
        // Namespace, Event, Lease, IngressClass: metadata only.
        _ => {}
    }
    errs
}

/// The problems of `name` under a naming rule, as messages
/// (`must be no more than 63 characters`); empty when the name is valid.
pub fn name_problems(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => dns1123_subdomain_problems(name),
        NameRule::Label => dns1123_label_problems(name),
        NameRule::PathSegment => path_segment_problems(name),
    }
}

/// Whether `s` is an RFC 1123 label: lowercase alphanumerics and `-`,
/// starting and ending alphanumeric, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= LABEL_MAX && matches_label(s)
}

/// Whether `s` is an RFC 1123 subdomain: labels joined by `.`, at most 253
/// characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= SUBDOMAIN_MAX && matches_subdomain(s)
}

/// The problems of a qualified name (`example.com/MyName`), the form of
/// label and annotation keys.
pub fn qualified_name_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let name = match s.split('/').collect::<Vec<_>>()[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_string());
            } else {
                let problems = dns1123_subdomain_problems(prefix);
                out.extend(problems.into_iter().map(|p| format!("prefix part {p}")));
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                qualified_regex_error()
            )];
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_MAX {
        out.push(format!("name part {}", max_len(LABEL_MAX)));
    }
    if !matches_qualified(name) {
        out.push(format!("name part {}", qualified_regex_error()));
    }
    out
}

/// The problems of a label value: empty, or a qualified name part of at
/// most 63 characters.
pub fn label_value_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > LABEL_MAX {
        out.push(max_len(LABEL_MAX));
    }
    if !s.is_empty() && !matches_qualified(s) {
        out.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::test_support::{check, fields, meta};

    #[test]
    fn dns_names_follow_rfc_1123() {
        assert!(is_dns1123_label("my-name"));
        assert!(is_dns1123_label("123-abc"));
        assert!(!is_dns1123_label("My-Name"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a."));
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("example.com"));
        assert!(!is_dns1123_subdomain("example..com"));
        assert!(!is_dns1123_subdomain(".example.com"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert_eq!(
            name_problems(NameRule::Subdomain, "Example.com"),
            vec![
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        assert_eq!(
            name_problems(NameRule::Label, "a.b"),
            vec!["must not contain dots"]
        );
        assert_eq!(
            name_problems(NameRule::Label, "A"),
            vec![
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(
            name_problems(NameRule::Label, &"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn path_segment_names_only_exclude_separators() {
        assert!(name_problems(NameRule::PathSegment, "web.17a2f3:Pulled").is_empty());
        assert_eq!(
            name_problems(NameRule::PathSegment, ".."),
            vec!["may not be '..'"]
        );
        assert_eq!(
            name_problems(NameRule::PathSegment, "a/b%"),
            vec!["may not contain '/'", "may not contain '%'"]
        );
    }

    #[test]
    fn qualified_names_take_an_optional_subdomain_prefix() {
        assert!(qualified_name_problems("app").is_empty());
        assert!(qualified_name_problems("app.kubernetes.io/Name_1").is_empty());
        assert_eq!(
            qualified_name_problems("/app"),
            vec!["prefix part must be non-empty"]
        );
        let bad_prefix = qualified_name_problems("Example.com/app");
        assert_eq!(bad_prefix.len(), 1);
        assert!(bad_prefix[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
        let empty = qualified_name_problems("example.com/");
        assert_eq!(empty[0], "name part must be non-empty");
        assert!(empty[1].starts_with("name part must consist of alphanumeric characters"));
        assert!(qualified_name_problems("a/b/c")[0].starts_with("a qualified name must consist"));
        assert_eq!(
            qualified_name_problems(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
        assert!(qualified_name_problems("-app")[0].ends_with(
            "(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        ));
    }

    #[test]
    fn label_values_may_be_empty() {
        assert!(label_value_problems("").is_empty());
        assert!(label_value_problems("v1.2_beta-3").is_empty());
        assert!(label_value_problems("-v")[0].starts_with("a valid label must be an empty string"));
        assert_eq!(
            label_value_problems(&"v".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn metadata_only_kinds_check_only_metadata() {
        assert!(
            check(
                "",
                "Namespace",
                &json!({"metadata": {"name": "team-a"}, "spec": {"finalizers": ["kubernetes"]}})
            )
            .is_empty()
        );
        assert!(
            check(
                "coordination.k8s.io",
                "Lease",
                &json!({"metadata": meta("node-n1"), "spec": {"holderIdentity": "n1"}})
            )
            .is_empty()
        );
        assert!(
            check(
                "networking.k8s.io",
                "IngressClass",
                &json!({"metadata": {"name": "knit"}, "spec": {"controller": "knit.dev/ingress"}})
            )
            .is_empty()
        );
        assert!(
            check(
                "",
                "Event",
                &json!({"metadata": meta("web.1"), "reason": "Pulled"})
            )
            .is_empty()
        );
        let errs = check("", "Namespace", &json!({"metadata": {"name": "Team"}}));
        assert_eq!(fields(&errs), vec![("metadata.name", "FieldValueInvalid")]);
        let errs = check(
            "coordination.k8s.io",
            "Lease",
            &json!({"metadata": meta("a/b")}),
        );
        assert_eq!(fields(&errs), vec![("metadata.name", "FieldValueInvalid")]);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn generated_labels_are_labels(s in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?") {
                prop_assert!(is_dns1123_label(&s));
                prop_assert!(is_dns1123_subdomain(&s));
                prop_assert!(name_problems(NameRule::Label, &s).is_empty());
            }

            #[test]
            fn predicates_agree_with_messages(s in "[-a-zA-Z0-9._/]{0,70}") {
                prop_assert_eq!(is_dns1123_label(&s), name_problems(NameRule::Label, &s).is_empty());
                prop_assert_eq!(
                    is_dns1123_subdomain(&s),
                    name_problems(NameRule::Subdomain, &s).is_empty()
                );
            }

            #[test]
            fn label_values_are_qualified_name_parts(s in "[-a-zA-Z0-9._]{1,63}") {
                prop_assert_eq!(
                    label_value_problems(&s).is_empty(),
                    qualified_name_problems(&s).is_empty()
                );
            }
        }
    }
}
