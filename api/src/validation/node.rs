//! Nodes: pod CIDRs, one per IP family, assigned once and never changed.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::status::Cause;

use super::path::{Path, list, set_str, spec_of};

const CIDR_MESSAGE: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

pub(super) fn node(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let spec = spec_of(object);
    let path = Path::new("spec");
    if let Some(cidr) = set_str(spec, "podCIDR")
        && parse_cidr(cidr).is_none()
    {
        errs.push(Cause::invalid(
            path.child("podCIDR"),
            &json!(cidr),
            CIDR_MESSAGE,
        ));
    }
    let cidrs = list(spec, "podCIDRs");
    let mut families = Vec::new();
    for (i, cidr) in cidrs.iter().enumerate() {
        let cidr = cidr.as_str().unwrap_or_default();
        match parse_cidr(cidr) {
            None => errs.push(Cause::invalid(
                path.child("podCIDRs").index(i),
                &json!(cidr),
                CIDR_MESSAGE,
            )),
            Some((ip, _)) => families.push(ip.is_ipv4()),
        }
    }
    let dual_stack = families.len() == 2 && families[0] != families[1];
    if cidrs.len() > 1 && !dual_stack {
        errs.push(Cause::invalid(
            path.child("podCIDRs"),
            &json!(cidrs),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    if let Some(old) = old {
        node_update(spec, spec_of(old), &path, errs);
    }
}

/// A node's pod CIDRs may be assigned once, never changed.
fn node_update(spec: &Value, old: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let cidrs = |s: &Value| -> Vec<String> {
        let list: Vec<String> = list(s, "podCIDRs")
            .iter()
            .filter_map(|c| c.as_str().map(String::from))
            .collect();
        if list.is_empty() {
            set_str(s, "podCIDR")
                .map(String::from)
                .into_iter()
                .collect()
        } else {
            list
        }
    };
    let (new, old) = (cidrs(spec), cidrs(old));
    if !old.is_empty() && (new.len() < old.len() || new[..old.len()] != old[..]) {
        errs.push(Cause::forbidden(
            path.child("podCIDRs"),
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
}

/// `10.0.1.0/24` or `fd00::/64`: an address and a prefix length that fits it.
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = s.split_once('/')?;
    let canonical_digits = !bits.is_empty()
        && bits.len() <= 3
        && bits.bytes().all(|b| b.is_ascii_digit())
        && (bits == "0" || !bits.starts_with('0'));
    if !canonical_digits {
        return None;
    }
    let bits: u8 = bits.parse().ok()?;
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{check, check_update, fields, with};

    #[test]
    fn cidrs_need_an_address_and_a_fitting_prefix() {
        assert!(parse_cidr("10.0.1.0/24").is_some());
        assert!(parse_cidr("fd00::/64").is_some());
        assert!(parse_cidr("0.0.0.0/0").is_some());
        for bad in [
            "10.0.1.0",
            "10.0.1.0/33",
            "10.0.1/24",
            "10.0.1.0/+8",
            "10.0.1.0/024",
            "::/129",
            "/8",
            "10.0.0.0/",
        ] {
            assert!(parse_cidr(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn node_pod_cidrs_are_cidrs_assigned_once() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.1.0/24", "podCIDRs": ["10.0.1.0/24"]}});
        assert_eq!(check("", "Node", &node), vec![]);
        let errs = check(
            "",
            "Node",
            &with(node.clone(), "/spec/podCIDR", json!("10.0.1.0/33")),
        );
        assert_eq!(fields(&errs), vec![("spec.podCIDR", "FieldValueInvalid")]);
        assert_eq!(
            errs[0].message,
            "Invalid value: \"10.0.1.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
        );
        let two = with(
            node.clone(),
            "/spec/podCIDRs",
            json!(["10.0.1.0/24", "10.0.2.0/24"]),
        );
        let errs = check("", "Node", &two);
        assert_eq!(fields(&errs), vec![("spec.podCIDRs", "FieldValueInvalid")]);
        let dual = with(
            node.clone(),
            "/spec/podCIDRs",
            json!(["10.0.1.0/24", "fd00:1::/64"]),
        );
        assert!(check("", "Node", &dual).is_empty());
        let unassigned = json!({"metadata": {"name": "n1"}, "spec": {}});
        assert!(check_update("", "Node", &node, &unassigned).is_empty());
        let moved = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.2.0/24"}});
        let errs = check_update("", "Node", &moved, &node);
        assert_eq!(
            fields(&errs),
            vec![("spec.podCIDRs", "FieldValueForbidden")]
        );
        assert_eq!(
            errs[0].message,
            "Forbidden: node updates may not change podCIDR except from \"\" to valid"
        );
    }
}
