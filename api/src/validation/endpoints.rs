//! Endpoints and EndpointSlices: addresses (and the special IPs they may
//! not be), ports, the slice's address type and its size limits.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

use crate::status::Cause;

use super::common::{immutable, port_number, protocol, report, too_many};
use super::format::{dns1123_label_problems, dns1123_subdomain_problems};
use super::path::{Path, int_of, list, set_str, str_of};
use super::{IP_MESSAGE, is_dns1123_label, qualified_name_problems};

pub(super) fn endpoints(object: &Value, errs: &mut Vec<Cause>) {
    let path = Path::new("subsets");
    for (i, subset) in list(object, "subsets").iter().enumerate() {
        let at = path.index(i);
        let addresses = list(subset, "addresses");
        let not_ready = list(subset, "notReadyAddresses");
        if addresses.is_empty() && not_ready.is_empty() {
            errs.push(Cause::required(
                &at,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for key in ["addresses", "notReadyAddresses"] {
            for (j, address) in list(subset, key).iter().enumerate() {
                endpoint_address(address, &at.child(key).index(j), errs);
            }
        }
        endpoint_ports(list(subset, "ports"), &at.child("ports"), errs);
    }
}

fn endpoint_address(address: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let ip = str_of(address, "ip").unwrap_or_default();
    let at = path.child("ip");
    match ip.parse::<IpAddr>() {
        Err(_) => errs.push(Cause::invalid(&at, &json!(ip), IP_MESSAGE)),
        Ok(parsed) => {
            if let Some(problem) = special_ip_problem(parsed, ip) {
                errs.push(Cause::invalid(&at, &json!(ip), problem));
            }
        }
    }
    if let Some(host) = set_str(address, "hostname") {
        report(
            errs,
            &path.child("hostname"),
            host,
            dns1123_label_problems(host),
        );
    }
    if let Some(node) = set_str(address, "nodeName") {
        report(
            errs,
            &path.child("nodeName"),
            node,
            dns1123_subdomain_problems(node),
        );
    }
}

/// Why an endpoint may not use this address: traffic to it would stay on
/// the node that forwards it.
fn special_ip_problem(ip: IpAddr, text: &str) -> Option<String> {
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        return Some(format!("may not be unspecified ({text})"));
    }
    if ip.is_loopback() {
        return Some("may not be in the loopback range (127.0.0.0/8, ::1/128)".into());
    }
    let (link_local, link_local_multicast) = match ip {
        IpAddr::V4(v4) => v4_link_local(v4),
        IpAddr::V6(v6) => v6_link_local(v6),
    };
    if link_local {
        return Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)".into());
    }
    if link_local_multicast {
        return Some(
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)".into(),
        );
    }
    None
}

fn v4_link_local(ip: Ipv4Addr) -> (bool, bool) {
    let [a, b, c, _] = ip.octets();
    (a == 169 && b == 254, a == 224 && b == 0 && c == 0)
}

fn v6_link_local(ip: Ipv6Addr) -> (bool, bool) {
    let first = ip.segments()[0];
    (first & 0xffc0 == 0xfe80, first & 0xff0f == 0xff02)
}

fn endpoint_ports(ports: &[Value], path: &Path, errs: &mut Vec<Cause>) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = path.index(i);
        let name_path = at.child("name");
        match set_str(port, "name") {
            None if ports.len() > 1 => errs.push(Cause::required(&name_path, "")),
            None => {}
            Some(name) => {
                report(errs, &name_path, name, dns1123_label_problems(name));
                if !names.insert(name) {
                    errs.push(Cause::duplicate(&name_path, &json!(name)));
                }
            }
        }
        match int_of(port, "port") {
            None => errs.push(Cause::required(at.child("port"), "")),
            Some(n) => port_number(n, &at.child("port"), errs),
        }
        protocol(port, &at, errs);
    }
}

const SLICE_MAX_ENDPOINTS: usize = 1000;
const SLICE_MAX_ADDRESSES: usize = 100;

pub(super) fn endpoint_slice(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let address_type = str_of(object, "addressType").unwrap_or_default();
    let type_path = Path::new("addressType");
    match address_type {
        "" => errs.push(Cause::required(&type_path, "")),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => errs.push(Cause::not_supported(
            &type_path,
            &json!(other),
            &["FQDN", "IPv4", "IPv6"],
        )),
    }
    let endpoints = list(object, "endpoints");
    if endpoints.len() > SLICE_MAX_ENDPOINTS {
        errs.push(too_many(
            &Path::new("endpoints"),
            endpoints.len(),
            SLICE_MAX_ENDPOINTS,
        ));
    } else {
        for (i, endpoint) in endpoints.iter().enumerate() {
            let at = Path::new("endpoints").index(i);
            slice_endpoint(endpoint, address_type, &at, errs);
        }
    }
    slice_ports(list(object, "ports"), &Path::new("ports"), errs);
    if let Some(old) = old {
        immutable(
            object.get("addressType"),
            old.get("addressType"),
            &type_path,
            errs,
        );
    }
}

fn slice_endpoint(endpoint: &Value, address_type: &str, path: &Path, errs: &mut Vec<Cause>) {
    let addresses = list(endpoint, "addresses");
    let at = path.child("addresses");
    if addresses.is_empty() {
        errs.push(Cause::required(&at, "must contain at least 1 address"));
    } else if addresses.len() > SLICE_MAX_ADDRESSES {
        errs.push(too_many(&at, addresses.len(), SLICE_MAX_ADDRESSES));
    }
    for (i, address) in addresses.iter().enumerate() {
        let address = address.as_str().unwrap_or_default();
        if let Some(cause) = slice_address_problem(address, address_type, &at.index(i)) {
            errs.push(cause);
        }
    }
    if let Some(node) = set_str(endpoint, "nodeName") {
        report(
            errs,
            &path.child("nodeName"),
            node,
            dns1123_subdomain_problems(node),
        );
    }
    if let Some(host) = set_str(endpoint, "hostname") {
        report(
            errs,
            &path.child("hostname"),
            host,
            dns1123_label_problems(host),
        );
    }
}

fn slice_address_problem(address: &str, address_type: &str, path: &Path) -> Option<Cause> {
    let value = json!(address);
    let ip: Option<IpAddr> = match address_type {
        "IPv4" => address.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        "IPv6" => address.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        "FQDN" => return fqdn_problem(address, path),
        _ => return None,
    };
    let Some(ip) = ip else {
        let detail = format!("must be a valid {address_type} address");
        return Some(Cause::invalid(path, &value, detail));
    };
    special_ip_problem(ip, address).map(|detail| Cause::invalid(path, &value, detail))
}

fn fqdn_problem(name: &str, path: &Path) -> Option<Cause> {
    if name.is_empty() {
        return Some(Cause::required(path, ""));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let problems = dns1123_subdomain_problems(name);
    if !problems.is_empty() {
        return Some(Cause::invalid(path, &json!(name), problems.join(",")));
    }
    if !name.contains('.') {
        return Some(Cause::invalid(
            path,
            &json!(name),
            "should be a domain with at least two segments separated by dots",
        ));
    }
    let bad = name.split('.').find(|label| !is_dns1123_label(label))?;
    Some(Cause::invalid(
        path,
        &json!(bad),
        dns1123_label_problems(bad).join(","),
    ))
}

fn slice_ports(ports: &[Value], path: &Path, errs: &mut Vec<Cause>) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = path.index(i);
        // An unnamed port is the port named "" (the default), and counts.
        let name = str_of(port, "name").unwrap_or_default();
        if !name.is_empty() {
            report(errs, &at.child("name"), name, dns1123_label_problems(name));
        }
        if !names.insert(name) {
            errs.push(Cause::duplicate(at.child("name"), &json!(name)));
        }
        if let Some(n) = int_of(port, "port").filter(|n| !(0..=65535).contains(n)) {
            errs.push(Cause::invalid(
                at.child("port"),
                &json!(n),
                "must be between 0 and 65535, inclusive",
            ));
        }
        protocol(port, &at, errs);
        if let Some(app) = str_of(port, "appProtocol") {
            report(
                errs,
                &at.child("appProtocol"),
                app,
                qualified_name_problems(app),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{check, check_update, fields, meta, with};

    #[test]
    fn special_addresses_are_named() {
        let problem = |s: &str| special_ip_problem(s.parse().unwrap(), s);
        assert_eq!(problem("10.0.1.5"), None);
        assert_eq!(
            problem("0.0.0.0").unwrap(),
            "may not be unspecified (0.0.0.0)"
        );
        assert!(problem("127.0.0.2").unwrap().contains("loopback"));
        assert!(problem("::ffff:127.0.0.1").unwrap().contains("loopback"));
        assert!(problem("169.254.1.1").unwrap().contains("link-local range"));
        assert!(problem("fe80::1").unwrap().contains("link-local range"));
        assert!(
            problem("224.0.0.5")
                .unwrap()
                .contains("link-local multicast")
        );
        assert!(problem("ff02::1").unwrap().contains("link-local multicast"));
    }

    #[test]
    fn endpoints_are_checked() {
        let good = json!({"metadata": meta("web"), "subsets": [{
            "addresses": [{"ip": "10.0.1.5", "nodeName": "n1"}],
            "notReadyAddresses": [{"ip": "fd00::5"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]
        }]});
        assert_eq!(check("", "Endpoints", &good), vec![]);
        let bad = json!({"metadata": meta("web"), "subsets": [
            {"addresses": [{"ip": "127.0.0.1"}, {"ip": "ten"}, {"ip": "0.0.0.0"}],
             "ports": [{"port": 0}, {"name": "a", "protocol": "HTTP"}, {"name": "a", "port": 1}]},
            {"ports": [{"port": 80}]}
        ]});
        let errs = check("", "Endpoints", &bad);
        assert_eq!(
            fields(&errs),
            vec![
                ("subsets[0].addresses[0].ip", "FieldValueInvalid"),
                ("subsets[0].addresses[1].ip", "FieldValueInvalid"),
                ("subsets[0].addresses[2].ip", "FieldValueInvalid"),
                ("subsets[0].ports[0].name", "FieldValueRequired"),
                ("subsets[0].ports[0].port", "FieldValueInvalid"),
                ("subsets[0].ports[1].port", "FieldValueRequired"),
                ("subsets[0].ports[1].protocol", "FieldValueNotSupported"),
                ("subsets[0].ports[2].name", "FieldValueDuplicate"),
                ("subsets[1]", "FieldValueRequired"),
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"
        );
        assert_eq!(
            errs[2].message,
            "Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)"
        );
    }

    #[test]
    fn endpoint_slices_are_checked() {
        let good = json!({"metadata": meta("web-abc"), "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.1.5"], "conditions": {"ready": true}, "nodeName": "n1"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
        assert_eq!(check("discovery.k8s.io", "EndpointSlice", &good), vec![]);
        let bad = json!({"metadata": meta("web-abc"), "addressType": "IPv4",
            "endpoints": [{"addresses": ["fd00::1"]}, {"addresses": []}, {"addresses": ["169.254.0.1"]}],
            "ports": [{"port": 70000, "protocol": "TCP"}, {"port": 80, "protocol": "ICMP"}]});
        let errs = check("discovery.k8s.io", "EndpointSlice", &bad);
        assert_eq!(
            fields(&errs),
            vec![
                ("endpoints[0].addresses[0]", "FieldValueInvalid"),
                ("endpoints[1].addresses", "FieldValueRequired"),
                ("endpoints[2].addresses[0]", "FieldValueInvalid"),
                ("ports[0].port", "FieldValueInvalid"),
                ("ports[1].name", "FieldValueDuplicate"),
                ("ports[1].protocol", "FieldValueNotSupported"),
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"fd00::1\": must be a valid IPv4 address"
        );
        assert_eq!(
            errs[3].message,
            "Invalid value: 70000: must be between 0 and 65535, inclusive"
        );
    }

    #[test]
    fn endpoint_slices_have_an_address_type_and_bounded_sizes() {
        let slice = json!({"metadata": meta("web-abc"), "endpoints": []});
        let errs = check("discovery.k8s.io", "EndpointSlice", &slice);
        assert_eq!(fields(&errs), vec![("addressType", "FieldValueRequired")]);
        let errs = check(
            "discovery.k8s.io",
            "EndpointSlice",
            &with(slice.clone(), "/addressType", json!("IP")),
        );
        assert_eq!(
            fields(&errs),
            vec![("addressType", "FieldValueNotSupported")]
        );
        let many: Vec<String> = (0..101)
            .map(|i| format!("10.0.{}.{}", i / 200, i % 200 + 1))
            .collect();
        let object = with(slice.clone(), "/addressType", json!("IPv4"));
        let object = with(object, "/endpoints", json!([{"addresses": many}]));
        let errs = check("discovery.k8s.io", "EndpointSlice", &object);
        assert_eq!(
            fields(&errs),
            vec![("endpoints[0].addresses", "FieldValueTooMany")]
        );
        assert_eq!(
            errs[0].message,
            "Too many: 101: must have at most 100 items"
        );
        let endpoints: Vec<Value> = (0..1001)
            .map(|_| json!({"addresses": ["10.0.1.5"]}))
            .collect();
        let object = with(
            with(slice, "/addressType", json!("IPv4")),
            "/endpoints",
            json!(endpoints),
        );
        let errs = check("discovery.k8s.io", "EndpointSlice", &object);
        assert_eq!(fields(&errs), vec![("endpoints", "FieldValueTooMany")]);
    }

    #[test]
    fn fqdn_endpoint_slices_hold_domain_names() {
        let slice = json!({"metadata": meta("ext"), "addressType": "FQDN",
            "endpoints": [{"addresses": ["db.example.com."]}, {"addresses": ["db"]}, {"addresses": ["DB.example"]}]});
        let errs = check("discovery.k8s.io", "EndpointSlice", &slice);
        assert_eq!(
            fields(&errs),
            vec![
                ("endpoints[1].addresses[0]", "FieldValueInvalid"),
                ("endpoints[2].addresses[0]", "FieldValueInvalid")
            ]
        );
        assert!(
            errs[0]
                .message
                .ends_with("should be a domain with at least two segments separated by dots")
        );
    }

    #[test]
    fn endpoint_slice_address_type_is_immutable() {
        let old = json!({"metadata": meta("s"), "addressType": "IPv4", "endpoints": []});
        let new = with(old.clone(), "/addressType", json!("IPv6"));
        let errs = check_update("discovery.k8s.io", "EndpointSlice", &new, &old);
        assert_eq!(fields(&errs), vec![("addressType", "FieldValueInvalid")]);
        assert_eq!(
            errs[0].message,
            "Invalid value: \"IPv6\": field is immutable"
        );
    }
}
