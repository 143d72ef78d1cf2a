//! Ingress: rules with hosts and HTTP paths, backends naming one service
//! port or a resource, and TLS entries.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::status::Cause;

use super::common::{port_number, report};
use super::format::{
    dns1035_label_problems, dns1123_subdomain_problems, port_name_problems,
    wildcard_subdomain_problems,
};
use super::path::{NULL, Path, get, int_of, list, set_str, spec_of, str_of};

pub(super) fn ingress(object: &Value, errs: &mut Vec<Cause>) {
    let spec = spec_of(object);
    let path = Path::new("spec");
    let rules = list(spec, "rules");
    let default_backend = get(spec, "defaultBackend");
    if rules.is_empty() && default_backend.is_none() {
        errs.push(Cause::invalid(
            &path,
            &NULL,
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(backend) = default_backend {
        ingress_backend(backend, &path.child("defaultBackend"), errs);
    }
    for (i, rule) in rules.iter().enumerate() {
        ingress_rule(rule, &path.child("rules").index(i), errs);
    }
    for (i, tls) in list(spec, "tls").iter().enumerate() {
        ingress_tls(tls, &path.child("tls").index(i), errs);
    }
    if let Some(class) = str_of(spec, "ingressClassName") {
        let at = path.child("ingressClassName");
        report(errs, &at, class, dns1123_subdomain_problems(class));
    }
}

fn ingress_rule(rule: &Value, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(host) = set_str(rule, "host") {
        let at = path.child("host");
        if host.parse::<IpAddr>().is_ok() {
            errs.push(Cause::invalid(
                &at,
                &json!(host),
                "must be a DNS name, not an IP address",
            ));
        }
        report(errs, &at, host, ingress_host_problems(host));
    }
    let Some(http) = get(rule, "http") else {
        return;
    };
    let paths = list(http, "paths");
    let at = path.child("http").child("paths");
    if paths.is_empty() {
        errs.push(Cause::required(&at, ""));
    }
    for (i, p) in paths.iter().enumerate() {
        ingress_path(p, &at.index(i), errs);
    }
}

/// Ingress and TLS hosts: a DNS subdomain, or one with a leading `*.`.
fn ingress_host_problems(host: &str) -> Vec<String> {
    if host.contains('*') {
        wildcard_subdomain_problems(host)
    } else {
        dns1123_subdomain_problems(host)
    }
}

fn ingress_path(p: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let at = path.child("path");
    let value = str_of(p, "path").unwrap_or_default();
    match str_of(p, "pathType") {
        None => {
            errs.push(Cause::required(
                path.child("pathType"),
                "pathType must be specified",
            ));
            return;
        }
        Some("Exact" | "Prefix") => {
            if !value.starts_with('/') {
                errs.push(Cause::invalid(
                    &at,
                    &json!(value),
                    "must be an absolute path",
                ));
            }
            for problem in http_path_problems(value) {
                errs.push(Cause::invalid(&at, &json!(value), problem));
            }
        }
        Some("ImplementationSpecific") => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(Cause::invalid(
                    &at,
                    &json!(value),
                    "must be an absolute path",
                ));
            }
        }
        Some(other) => errs.push(Cause::not_supported(
            path.child("pathType"),
            &json!(other),
            &["Exact", "ImplementationSpecific", "Prefix"],
        )),
    }
    let backend = p.get("backend").unwrap_or(&NULL);
    ingress_backend(backend, &path.child("backend"), errs);
}

/// Sequences proxies would normalize away, which makes the match ambiguous.
fn http_path_problems(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for seq in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(seq) {
            out.push(format!("must not contain '{seq}'"));
        }
    }
    for suffix in ["/..", "/."] {
        if path.ends_with(suffix) {
            out.push(format!("cannot end with '{suffix}'"));
        }
    }
    out
}

fn ingress_backend(backend: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let empty = json!("");
    match (get(backend, "service"), get(backend, "resource")) {
        (Some(_), Some(_)) => errs.push(Cause::invalid(
            path,
            &empty,
            "cannot set both resource and service backends",
        )),
        (None, Some(resource)) => {
            let at = path.child("resource");
            if set_str(resource, "kind").is_none() {
                errs.push(Cause::required(at.child("kind"), "kind is required"));
            }
            if set_str(resource, "name").is_none() {
                errs.push(Cause::required(at.child("name"), "name is required"));
            }
        }
        (Some(service), None) => service_backend(service, path, errs),
        (None, None) => errs.push(Cause::invalid(
            path,
            &empty,
            "resource or service backend is required",
        )),
    }
}

fn service_backend(service: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let at = path.child("service");
    match set_str(service, "name") {
        None => errs.push(Cause::required(at.child("name"), "")),
        Some(name) => report(errs, &at.child("name"), name, dns1035_label_problems(name)),
    }
    let port = service.get("port").unwrap_or(&NULL);
    let name = set_str(port, "name");
    let number = int_of(port, "number").filter(|n| *n != 0);
    let port_path = at.child("port");
    match (name, number) {
        (Some(_), Some(_)) => errs.push(Cause::invalid(
            path,
            &json!(""),
            "cannot set both port name & port number",
        )),
        (Some(name), None) => report(
            errs,
            &port_path.child("name"),
            name,
            port_name_problems(name),
        ),
        (None, Some(n)) => port_number(n, &port_path.child("number"), errs),
        (None, None) => errs.push(Cause::required(path, "port name or number is required")),
    }
}

fn ingress_tls(tls: &Value, path: &Path, errs: &mut Vec<Cause>) {
    for (i, host) in list(tls, "hosts").iter().enumerate() {
        let host = host.as_str().unwrap_or_default();
        let at = path.child("hosts").index(i);
        report(errs, &at, host, ingress_host_problems(host));
    }
    if let Some(secret) = set_str(tls, "secretName") {
        report(
            errs,
            &path.child("secretName"),
            secret,
            dns1123_subdomain_problems(secret),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::PORT_RANGE;
    use crate::validation::test_support::{check, fields, meta, with};

    fn ingress() -> Value {
        json!({
            "metadata": meta("web"),
            "spec": {
                "rules": [{"host": "example.com", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}}
                }]}}],
                "tls": [{"hosts": ["example.com"], "secretName": "web-tls"}]
            }
        })
    }

    #[test]
    fn a_good_ingress_is_valid() {
        assert_eq!(check("networking.k8s.io", "Ingress", &ingress()), vec![]);
        let wildcard = with(ingress(), "/spec/rules/0/host", json!("*.example.com"));
        let wildcard = with(wildcard, "/spec/tls/0/hosts/0", json!("*.example.com"));
        assert_eq!(check("networking.k8s.io", "Ingress", &wildcard), vec![]);
        let default_only = json!({"metadata": meta("web"), "spec": {
            "defaultBackend": {"service": {"name": "web", "port": {"name": "http"}}}}});
        assert_eq!(check("networking.k8s.io", "Ingress", &default_only), vec![]);
    }

    #[test]
    fn ingress_hosts_are_dns_names() {
        let errs = check(
            "networking.k8s.io",
            "Ingress",
            &with(ingress(), "/spec/rules/0/host", json!("Example.com")),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.rules[0].host", "FieldValueInvalid")]
        );
        let errs = check(
            "networking.k8s.io",
            "Ingress",
            &with(ingress(), "/spec/rules/0/host", json!("10.0.0.1")),
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address"
        );
        let errs = check(
            "networking.k8s.io",
            "Ingress",
            &with(ingress(), "/spec/rules/0/host", json!("a.*.com")),
        );
        assert!(
            errs[0]
                .message
                .contains("a wildcard DNS-1123 subdomain must start with '*.'")
        );
        let errs = check(
            "networking.k8s.io",
            "Ingress",
            &with(ingress(), "/spec/tls/0/hosts/0", json!("bad_host")),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.tls[0].hosts[0]", "FieldValueInvalid")]
        );
    }

    #[test]
    fn ingress_paths_are_checked() {
        let at = "/spec/rules/0/http/paths/0";
        let mut untyped = ingress();
        untyped
            .pointer_mut(at)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove("pathType");
        let errs = check("networking.k8s.io", "Ingress", &untyped);
        assert_eq!(
            fields(&errs),
            vec![("spec.rules[0].http.paths[0].pathType", "FieldValueRequired")]
        );
        assert_eq!(
            errs[0].message,
            "Required value: pathType must be specified"
        );
        let errs = check(
            "networking.k8s.io",
            "Ingress",
            &with(ingress(), &format!("{at}/path"), json!("api")),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.rules[0].http.paths[0].path", "FieldValueInvalid")]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"api\": must be an absolute path"
        );
        let errs = check(
            "networking.k8s.io",
            "Ingress",
            &with(ingress(), &format!("{at}/path"), json!("/a//b/..")),
        );
        assert_eq!(errs.len(), 2);
        assert!(errs[0].message.ends_with("must not contain '//'"));
        assert!(errs[1].message.ends_with("cannot end with '/..'"));
        let errs = check(
            "networking.k8s.io",
            "Ingress",
            &with(ingress(), &format!("{at}/pathType"), json!("Regex")),
        );
        assert_eq!(
            fields(&errs),
            vec![(
                "spec.rules[0].http.paths[0].pathType",
                "FieldValueNotSupported"
            )]
        );
        let specific = with(
            ingress(),
            &format!("{at}/pathType"),
            json!("ImplementationSpecific"),
        );
        assert!(
            check(
                "networking.k8s.io",
                "Ingress",
                &with(specific, &format!("{at}/path"), json!(""))
            )
            .is_empty()
        );
        let errs = check(
            "networking.k8s.io",
            "Ingress",
            &with(ingress(), "/spec/rules/0/http/paths", json!([])),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.rules[0].http.paths", "FieldValueRequired")]
        );
    }

    #[test]
    fn ingress_backends_name_one_service_port() {
        let backend = "/spec/rules/0/http/paths/0/backend";
        let cases = [
            (
                json!({}),
                "spec.rules[0].http.paths[0].backend",
                "resource or service backend is required",
            ),
            (
                json!({"service": {"name": "web", "port": {"number": 80}}, "resource": {"kind": "Bucket", "name": "b"}}),
                "spec.rules[0].http.paths[0].backend",
                "cannot set both resource and service backends",
            ),
            (
                json!({"service": {"name": "web", "port": {"number": 80, "name": "http"}}}),
                "spec.rules[0].http.paths[0].backend",
                "cannot set both port name & port number",
            ),
            (
                json!({"service": {"name": "web", "port": {}}}),
                "spec.rules[0].http.paths[0].backend",
                "port name or number is required",
            ),
            (
                json!({"service": {"name": "web", "port": {"number": 70000}}}),
                "spec.rules[0].http.paths[0].backend.service.port.number",
                PORT_RANGE,
            ),
            (
                json!({"service": {"name": "1web", "port": {"number": 80}}}),
                "spec.rules[0].http.paths[0].backend.service.name",
                "a DNS-1035 label",
            ),
        ];
        for (value, field, message) in cases {
            let errs = check(
                "networking.k8s.io",
                "Ingress",
                &with(ingress(), backend, value),
            );
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(errs[0].field, field);
            assert!(errs[0].message.contains(message), "{}", errs[0].message);
        }
        let errs = check(
            "networking.k8s.io",
            "Ingress",
            &json!({"metadata": meta("web"), "spec": {}}),
        );
        assert_eq!(fields(&errs), vec![("spec", "FieldValueInvalid")]);
        assert_eq!(
            errs[0].message,
            "Invalid value: null: either `defaultBackend` or `rules` must be specified"
        );
    }
}
