//! Services: type, ports and node ports, cluster IPs, external names,
//! session affinity, traffic policies and what an update may change.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::status::Cause;

use super::common::{label_map, one_of, port_number, port_number_or_name, protocol, report};
use super::format::{dns1123_label_problems, dns1123_subdomain_problems};
use super::path::{Path, get, int_of, list, map_of, set_str, spec_of, str_of};
use super::{IMMUTABLE, IP_MESSAGE, qualified_name_problems};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

pub(super) fn service(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let spec = spec_of(object);
    let path = Path::new("spec");
    one_of(spec, "type", &path, SERVICE_TYPES, errs);
    let kind = set_str(spec, "type").unwrap_or("ClusterIP");
    service_ports(spec, kind, &path, errs);
    service_cluster_ip(spec, kind, &path, errs);
    if kind == "ExternalName" {
        external_name(spec, &path, errs);
    }
    session_affinity(spec, &path, errs);
    traffic_policies(spec, kind, &path, errs);
    one_of(
        spec,
        "ipFamilyPolicy",
        &path,
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
        errs,
    );
    for (i, family) in list(spec, "ipFamilies").iter().enumerate() {
        if !matches!(family.as_str(), Some("IPv4" | "IPv6")) {
            let at = path.child("ipFamilies").index(i);
            errs.push(Cause::not_supported(at, family, &["IPv4", "IPv6"]));
        }
    }
    label_map(map_of(spec, "selector"), &path.child("selector"), errs);
    for (i, ip) in list(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or_default();
        if ip.parse::<IpAddr>().is_err() {
            errs.push(Cause::invalid(
                path.child("externalIPs").index(i),
                &json!(ip),
                IP_MESSAGE,
            ));
        }
    }
    if let Some(old) = old {
        service_update(spec, spec_of(old), &path, errs);
    }
}

fn service_ports(spec: &Value, kind: &str, path: &Path, errs: &mut Vec<Cause>) {
    let ports = list(spec, "ports");
    let headless = str_of(spec, "clusterIP") == Some("None");
    if ports.is_empty() && !headless && kind != "ExternalName" {
        errs.push(Cause::required(path.child("ports"), ""));
    }
    let mut names = HashSet::new();
    let mut pairs = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = path.child("ports").index(i);
        service_port(port, ports.len() > 1, &mut names, &at, errs);
        let protocol = set_str(port, "protocol").unwrap_or("TCP");
        let number = int_of(port, "port").unwrap_or(0);
        if !pairs.insert((protocol, number)) {
            let pair = json!({"port": number, "protocol": protocol});
            errs.push(Cause::duplicate(&at, &pair));
        }
        let node_port = int_of(port, "nodePort").unwrap_or(0);
        if node_port == 0 {
            continue;
        }
        if matches!(kind, "ClusterIP" | "ExternalName") {
            errs.push(Cause::forbidden(
                at.child("nodePort"),
                format!("may not be used when `type` is '{kind}'"),
            ));
        }
        if !node_ports.insert((protocol, node_port)) {
            errs.push(Cause::duplicate(at.child("nodePort"), &json!(node_port)));
        }
    }
}

fn service_port<'a>(
    port: &'a Value,
    require_name: bool,
    names: &mut HashSet<&'a str>,
    path: &Path,
    errs: &mut Vec<Cause>,
) {
    let name_path = path.child("name");
    match set_str(port, "name") {
        None if require_name => errs.push(Cause::required(&name_path, "")),
        None => {}
        Some(name) => {
            report(errs, &name_path, name, dns1123_label_problems(name));
            if !names.insert(name) {
                errs.push(Cause::duplicate(&name_path, &json!(name)));
            }
        }
    }
    port_number(int_of(port, "port").unwrap_or(0), &path.child("port"), errs);
    protocol(port, path, errs);
    if let Some(target) = get(port, "targetPort") {
        port_number_or_name(Some(target), &path.child("targetPort"), errs);
    }
    if let Some(n) = int_of(port, "nodePort").filter(|n| *n != 0) {
        port_number(n, &path.child("nodePort"), errs);
    }
    if let Some(app) = str_of(port, "appProtocol") {
        report(
            errs,
            &path.child("appProtocol"),
            app,
            qualified_name_problems(app),
        );
    }
}

fn service_cluster_ip(spec: &Value, kind: &str, path: &Path, errs: &mut Vec<Cause>) {
    let ips = set_str(spec, "clusterIP")
        .map(|ip| (path.child("clusterIP"), ip))
        .into_iter()
        .chain(list(spec, "clusterIPs").iter().enumerate().map(|(i, ip)| {
            (
                path.child("clusterIPs").index(i),
                ip.as_str().unwrap_or_default(),
            )
        }));
    for (at, ip) in ips {
        if kind == "ExternalName" {
            errs.push(Cause::forbidden(
                &at,
                "may not be set for ExternalName services",
            ));
        } else if ip == "None" && matches!(kind, "NodePort" | "LoadBalancer") {
            errs.push(Cause::invalid(
                &at,
                &json!(ip),
                format!("may not be set to 'None' for {kind} services"),
            ));
        } else if ip != "None" && ip.parse::<IpAddr>().is_err() {
            errs.push(Cause::invalid(&at, &json!(ip), IP_MESSAGE));
        }
    }
}

fn external_name(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let at = path.child("externalName");
    let name = str_of(spec, "externalName").unwrap_or_default();
    // A trailing dot marks the CNAME as fully qualified.
    let cname = name.strip_suffix('.').unwrap_or(name);
    if cname.is_empty() {
        errs.push(Cause::required(&at, ""));
    } else {
        report(errs, &at, cname, dns1123_subdomain_problems(cname));
    }
}

fn session_affinity(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    one_of(spec, "sessionAffinity", path, &["ClientIP", "None"], errs);
    let config = get(spec, "sessionAffinityConfig");
    let at = path.child("sessionAffinityConfig");
    match set_str(spec, "sessionAffinity") {
        Some("ClientIP") => {
            let timeout = config
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| int_of(c, "timeoutSeconds"));
            if let Some(t) = timeout.filter(|t| !(1..=86400).contains(t)) {
                errs.push(Cause::invalid(
                    at.child("clientIP").child("timeoutSeconds"),
                    &json!(t),
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        _ => {
            if let Some(config) = config {
                errs.push(Cause::invalid(
                    &at,
                    config,
                    "must not be set when session affinity is None",
                ));
            }
        }
    }
}

fn traffic_policies(spec: &Value, kind: &str, path: &Path, errs: &mut Vec<Cause>) {
    let external = matches!(kind, "NodePort" | "LoadBalancer")
        || (kind == "ClusterIP" && !list(spec, "externalIPs").is_empty());
    if let Some(policy) = set_str(spec, "externalTrafficPolicy") {
        let at = path.child("externalTrafficPolicy");
        if !external {
            errs.push(Cause::invalid(
                at,
                &json!(policy),
                "may only be set for externally-accessible services",
            ));
        } else if !matches!(policy, "Cluster" | "Local") {
            errs.push(Cause::not_supported(
                at,
                &json!(policy),
                &["Cluster", "Local"],
            ));
        }
    }
    one_of(
        spec,
        "internalTrafficPolicy",
        path,
        &["Cluster", "Local"],
        errs,
    );
}

/// The cluster IP stays as allocated, except across a change to or from
/// ExternalName (which has none).
fn service_update(spec: &Value, old: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let external = |s: &Value| str_of(s, "type") == Some("ExternalName");
    if external(spec) || external(old) {
        return;
    }
    if let (Some(new), Some(was)) = (set_str(spec, "clusterIP"), set_str(old, "clusterIP"))
        && new != was
    {
        errs.push(Cause::invalid(
            path.child("clusterIP"),
            &json!(new),
            IMMUTABLE,
        ));
    }
    let new_ips = list(spec, "clusterIPs");
    for (i, (new, was)) in new_ips.iter().zip(list(old, "clusterIPs")).enumerate() {
        if new != was {
            let at = path.child("clusterIPs").index(i);
            errs.push(Cause::invalid(
                at,
                &json!(new_ips),
                "may not change once set",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{check, check_update, fields, meta, service, with};

    #[test]
    fn good_services_are_valid() {
        assert_eq!(check("", "Service", &service()), vec![]);
        let headless = json!({"metadata": meta("db"), "spec": {"clusterIP": "None", "selector": {"app": "db"}}});
        assert_eq!(check("", "Service", &headless), vec![]);
        let external = json!({"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "db.example.com."}});
        assert_eq!(check("", "Service", &external), vec![]);
        let node_port = json!({"metadata": meta("np"), "spec": {
            "type": "NodePort", "clusterIP": "10.3.240.5", "clusterIPs": ["10.3.240.5"],
            "externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                      {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053}]
        }});
        assert_eq!(check("", "Service", &node_port), vec![]);
    }

    #[test]
    fn services_need_ports_unless_headless_or_external() {
        let errs = check("", "Service", &with(service(), "/spec/ports", json!([])));
        assert_eq!(fields(&errs), vec![("spec.ports", "FieldValueRequired")]);
    }

    #[test]
    fn service_ports_are_checked() {
        let ports = json!([
            {"name": "http", "port": 70000, "protocol": "ICMP"},
            {"port": 81, "targetPort": "x--y"},
            {"name": "http", "port": 82, "targetPort": 0},
            {"name": "a", "port": 83, "nodePort": 30083},
            {"name": "b", "port": 83}
        ]);
        let errs = check("", "Service", &with(service(), "/spec/ports", ports));
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.ports[0].port", "FieldValueInvalid"),
                ("spec.ports[0].protocol", "FieldValueNotSupported"),
                ("spec.ports[1].name", "FieldValueRequired"),
                ("spec.ports[1].targetPort", "FieldValueInvalid"),
                ("spec.ports[2].name", "FieldValueDuplicate"),
                ("spec.ports[2].targetPort", "FieldValueInvalid"),
                ("spec.ports[3].nodePort", "FieldValueForbidden"),
                ("spec.ports[4]", "FieldValueDuplicate"),
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            errs[6].message,
            "Forbidden: may not be used when `type` is 'ClusterIP'"
        );
        assert_eq!(
            errs[7].message,
            "Duplicate value: {\"port\":83,\"protocol\":\"TCP\"}"
        );
    }

    #[test]
    fn node_ports_are_in_range_and_unique() {
        let object = with(service(), "/spec/type", json!("NodePort"));
        let ports = json!([{"name": "a", "port": 80, "nodePort": 70000},
                           {"name": "b", "port": 81, "nodePort": 30001},
                           {"name": "c", "port": 82, "nodePort": 30001}]);
        let errs = check("", "Service", &with(object, "/spec/ports", ports));
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.ports[0].nodePort", "FieldValueInvalid"),
                ("spec.ports[2].nodePort", "FieldValueDuplicate")
            ]
        );
    }

    #[test]
    fn external_name_services_need_a_dns_name() {
        let object = json!({"metadata": meta("ext"), "spec": {"type": "ExternalName"}});
        let errs = check("", "Service", &object);
        assert_eq!(
            fields(&errs),
            vec![("spec.externalName", "FieldValueRequired")]
        );
        let object = json!({"metadata": meta("ext"), "spec": {
            "type": "ExternalName", "externalName": "Bad_Name", "clusterIP": "10.3.240.9"}});
        let errs = check("", "Service", &object);
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.clusterIP", "FieldValueForbidden"),
                ("spec.externalName", "FieldValueInvalid")
            ]
        );
        let errs = check(
            "",
            "Service",
            &with(service(), "/spec/type", json!("Magic")),
        );
        assert_eq!(fields(&errs), vec![("spec.type", "FieldValueNotSupported")]);
        assert_eq!(
            errs[0].message,
            "Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        );
    }

    #[test]
    fn cluster_ips_are_none_or_addresses() {
        let errs = check(
            "",
            "Service",
            &with(service(), "/spec/clusterIP", json!("10.3.240.300")),
        );
        assert_eq!(fields(&errs), vec![("spec.clusterIP", "FieldValueInvalid")]);
        assert_eq!(
            errs[0].message,
            "Invalid value: \"10.3.240.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        );
        assert!(
            check(
                "",
                "Service",
                &with(service(), "/spec/clusterIP", json!("fd00::10"))
            )
            .is_empty()
        );
        let object = with(
            with(service(), "/spec/clusterIP", json!("None")),
            "/spec/type",
            json!("NodePort"),
        );
        let errs = check("", "Service", &object);
        assert_eq!(fields(&errs), vec![("spec.clusterIP", "FieldValueInvalid")]);
        assert!(
            errs[0]
                .message
                .ends_with("may not be set to 'None' for NodePort services")
        );
    }

    #[test]
    fn service_policies_are_checked() {
        let object = with(service(), "/spec/sessionAffinity", json!("ClientIP"));
        let object = with(
            object,
            "/spec/sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": 0}}),
        );
        let object = with(object, "/spec/externalTrafficPolicy", json!("Local"));
        let object = with(object, "/spec/internalTrafficPolicy", json!("Nearest"));
        let errs = check("", "Service", &object);
        assert_eq!(
            fields(&errs),
            vec![
                (
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    "FieldValueInvalid"
                ),
                ("spec.externalTrafficPolicy", "FieldValueInvalid"),
                ("spec.internalTrafficPolicy", "FieldValueNotSupported"),
            ]
        );
        assert_eq!(
            errs[1].message,
            "Invalid value: \"Local\": may only be set for externally-accessible services"
        );
        let errs = check(
            "",
            "Service",
            &with(service(), "/spec/sessionAffinity", json!("Sticky")),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.sessionAffinity", "FieldValueNotSupported")]
        );
        let lb = with(service(), "/spec/type", json!("LoadBalancer"));
        let errs = check(
            "",
            "Service",
            &with(lb, "/spec/externalTrafficPolicy", json!("Nearest")),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.externalTrafficPolicy", "FieldValueNotSupported")]
        );
    }

    #[test]
    fn service_selectors_are_labels() {
        let errs = check(
            "",
            "Service",
            &with(service(), "/spec/selector", json!({"app": "a b"})),
        );
        assert_eq!(fields(&errs), vec![("spec.selector", "FieldValueInvalid")]);
    }

    #[test]
    fn cluster_ips_stay_once_allocated() {
        let old = with(service(), "/spec/clusterIP", json!("10.3.240.5"));
        let errs = check_update(
            "",
            "Service",
            &with(service(), "/spec/clusterIP", json!("10.3.240.6")),
            &old,
        );
        assert_eq!(fields(&errs), vec![("spec.clusterIP", "FieldValueInvalid")]);
        assert_eq!(
            errs[0].message,
            "Invalid value: \"10.3.240.6\": field is immutable"
        );
        assert!(check_update("", "Service", &old, &old).is_empty());
        let external = json!({"metadata": meta("web"), "spec": {"type": "ExternalName", "externalName": "a.example.com"}});
        assert!(check_update("", "Service", &external, &old).is_empty());
        let old_ips = with(old.clone(), "/spec/clusterIPs", json!(["10.3.240.5"]));
        let new_ips = with(old_ips.clone(), "/spec/clusterIPs", json!(["10.3.240.7"]));
        let errs = check_update("", "Service", &new_ips, &old_ips);
        assert_eq!(
            fields(&errs),
            vec![("spec.clusterIPs[0]", "FieldValueInvalid")]
        );
    }
}
