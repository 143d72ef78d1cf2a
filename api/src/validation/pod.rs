//! Pods and pod templates: containers and init containers (ports, env,
//! volume mounts, probes), volumes, host ports, DNS policy and config, and
//! the few fields a pod update may change.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use crate::status::Cause;

use super::IP_MESSAGE;
use super::common::{
    non_negative, not_found, one_of, port_number, port_number_or_name, protocol, report,
};
use super::format::{
    dns1123_label_problems, dns1123_subdomain_problems, env_var_name_problems, port_name_problems,
};
use super::path::{NULL, Path, get, int_of, list, set_str, spec_of, str_of};

pub(super) fn pod(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let spec = spec_of(object);
    let path = Path::new("spec");
    pod_spec(spec, &path, errs);
    if let Some(old) = old {
        pod_update(spec, spec_of(old), &path, errs);
    }
}

pub(super) fn pod_spec(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let volumes = volumes(spec, &path.child("volumes"), errs);
    let containers = list(spec, "containers");
    if containers.is_empty() {
        errs.push(Cause::required(path.child("containers"), ""));
    }
    // Container names are unique across regular and init containers.
    let mut names = HashSet::new();
    for (kind, init) in [("containers", false), ("initContainers", true)] {
        for (i, c) in list(spec, kind).iter().enumerate() {
            let at = path.child(kind).index(i);
            container(c, &at, init, &mut names, &volumes, errs);
        }
    }
    host_ports(spec, path, errs);
    one_of(
        spec,
        "restartPolicy",
        path,
        &["Always", "OnFailure", "Never"],
        errs,
    );
    pod_dns(spec, path, errs);
    non_negative(spec, "terminationGracePeriodSeconds", path, errs);
    if let Some(n) = int_of(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&n)
    {
        errs.push(Cause::invalid(
            path.child("activeDeadlineSeconds"),
            &json!(n),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
}

/// Checks volume names and returns them, for the mounts to refer to.
fn volumes<'a>(spec: &'a Value, path: &Path, errs: &mut Vec<Cause>) -> HashSet<&'a str> {
    let mut names = HashSet::new();
    for (i, volume) in list(spec, "volumes").iter().enumerate() {
        let at = path.index(i).child("name");
        match set_str(volume, "name") {
            None => errs.push(Cause::required(&at, "")),
            Some(name) => {
                report(errs, &at, name, dns1123_label_problems(name));
                if !names.insert(name) {
                    errs.push(Cause::duplicate(&at, &json!(name)));
                }
            }
        }
    }
    names
}

fn container<'a>(
    c: &'a Value,
    path: &Path,
    init: bool,
    names: &mut HashSet<&'a str>,
    volumes: &HashSet<&str>,
    errs: &mut Vec<Cause>,
) {
    let name_path = path.child("name");
    match set_str(c, "name") {
        None => errs.push(Cause::required(&name_path, "")),
        Some(name) => {
            report(errs, &name_path, name, dns1123_label_problems(name));
            if !names.insert(name) {
                errs.push(Cause::duplicate(&name_path, &json!(name)));
            }
        }
    }
    if set_str(c, "image").is_none() {
        errs.push(Cause::required(path.child("image"), ""));
    }
    container_ports(c, &path.child("ports"), errs);
    env(c, &path.child("env"), errs);
    volume_mounts(c, &path.child("volumeMounts"), volumes, errs);
    probes(c, path, init, errs);
}

fn container_ports(c: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let mut names = HashSet::new();
    for (i, port) in list(c, "ports").iter().enumerate() {
        let at = path.index(i);
        if let Some(name) = set_str(port, "name") {
            let problems = port_name_problems(name);
            if !problems.is_empty() {
                report(errs, &at.child("name"), name, problems);
            } else if !names.insert(name) {
                errs.push(Cause::duplicate(at.child("name"), &json!(name)));
            }
        }
        match int_of(port, "containerPort") {
            None | Some(0) => errs.push(Cause::required(at.child("containerPort"), "")),
            Some(n) => port_number(n, &at.child("containerPort"), errs),
        }
        if let Some(n) = int_of(port, "hostPort").filter(|n| *n != 0) {
            port_number(n, &at.child("hostPort"), errs);
        }
        protocol(port, &at, errs);
    }
}

/// Host ports are unique per (hostIP, protocol, port) across the pod's
/// containers, and equal the container port when the pod uses the host's
/// network.
fn host_ports(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    let mut seen = HashSet::new();
    for (i, c) in list(spec, "containers").iter().enumerate() {
        for (j, port) in list(c, "ports").iter().enumerate() {
            let at = path.child("containers").index(i).child("ports").index(j);
            let host_port = int_of(port, "hostPort").unwrap_or(0);
            if host_port == 0 {
                continue;
            }
            if host_network && Some(host_port) != int_of(port, "containerPort") {
                errs.push(Cause::invalid(
                    at.child("hostPort"),
                    &json!(host_port),
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
            let key = format!(
                "{}/{}/{host_port}",
                str_of(port, "hostIP").unwrap_or_default(),
                set_str(port, "protocol").unwrap_or("TCP"),
            );
            if !seen.insert(key.clone()) {
                errs.push(Cause::duplicate(at.child("hostPort"), &json!(key)));
            }
        }
    }
}

fn env(c: &Value, path: &Path, errs: &mut Vec<Cause>) {
    for (i, var) in list(c, "env").iter().enumerate() {
        let at = path.index(i).child("name");
        match set_str(var, "name") {
            None => errs.push(Cause::required(&at, "")),
            Some(name) => report(errs, &at, name, env_var_name_problems(name)),
        }
    }
}

fn volume_mounts(c: &Value, path: &Path, volumes: &HashSet<&str>, errs: &mut Vec<Cause>) {
    for (i, mount) in list(c, "volumeMounts").iter().enumerate() {
        let at = path.index(i);
        match set_str(mount, "name") {
            None => errs.push(Cause::required(at.child("name"), "")),
            Some(name) if !volumes.contains(name) => errs.push(not_found(&at.child("name"), name)),
            Some(_) => {}
        }
        if set_str(mount, "mountPath").is_none() {
            errs.push(Cause::required(at.child("mountPath"), ""));
        }
    }
}

fn probes(c: &Value, path: &Path, init: bool, errs: &mut Vec<Cause>) {
    let sidecar = str_of(c, "restartPolicy") == Some("Always");
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = get(c, key) else { continue };
        if init && !sidecar {
            errs.push(Cause::forbidden(
                path.child(key),
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        probe(p, &path.child(key), key != "readinessProbe", errs);
    }
}

fn probe(p: &Value, path: &Path, success_must_be_one: bool, errs: &mut Vec<Cause>) {
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        non_negative(p, key, path, errs);
    }
    // 0 is "unset" and defaults to 1.
    if success_must_be_one && let Some(n) = int_of(p, "successThreshold").filter(|n| *n > 1) {
        errs.push(Cause::invalid(
            path.child("successThreshold"),
            &json!(n),
            "must be 1",
        ));
    }
    if let Some(n) = int_of(p, "terminationGracePeriodSeconds").filter(|n| *n <= 0) {
        errs.push(Cause::invalid(
            path.child("terminationGracePeriodSeconds"),
            &json!(n),
            "must be greater than 0",
        ));
    }
    probe_handler(p, path, errs);
}

fn probe_handler(p: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let handlers: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .filter(|k| get(p, k).is_some())
        .collect();
    match handlers[..] {
        [] => errs.push(Cause::required(path, "must specify a handler type")),
        [_] => {}
        [_, second, ..] => errs.push(Cause::forbidden(
            path.child(second),
            "may not specify more than 1 handler type",
        )),
    }
    if let Some(http) = get(p, "httpGet") {
        let at = path.child("httpGet");
        port_number_or_name(http.get("port"), &at.child("port"), errs);
        one_of(http, "scheme", &at, &["HTTP", "HTTPS"], errs);
    }
    if let Some(tcp) = get(p, "tcpSocket") {
        port_number_or_name(
            tcp.get("port"),
            &path.child("tcpSocket").child("port"),
            errs,
        );
    }
    if let Some(grpc) = get(p, "grpc") {
        let port = int_of(grpc, "port").unwrap_or(0);
        port_number(port, &path.child("grpc").child("port"), errs);
    }
}

fn pod_dns(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let policies = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
    one_of(spec, "dnsPolicy", path, &policies, errs);
    let config = get(spec, "dnsConfig");
    let at = path.child("dnsConfig");
    if str_of(spec, "dnsPolicy") == Some("None") {
        match config {
            None => errs.push(Cause::required(
                &at,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            )),
            Some(c) if list(c, "nameservers").is_empty() => errs.push(Cause::required(
                at.child("nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )),
            Some(_) => {}
        }
    }
    if let Some(config) = config {
        dns_config(config, &at, errs);
    }
}

fn dns_config(config: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let nameservers = list(config, "nameservers");
    if nameservers.len() > 3 {
        errs.push(Cause::invalid(
            path.child("nameservers"),
            &json!(nameservers),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        let ns = ns.as_str().unwrap_or_default();
        if ns.parse::<IpAddr>().is_err() {
            errs.push(Cause::invalid(
                path.child("nameservers").index(i),
                &json!(ns),
                IP_MESSAGE,
            ));
        }
    }
    let searches = list(config, "searches");
    if searches.len() > 32 {
        errs.push(Cause::invalid(
            path.child("searches"),
            &json!(searches),
            "must not have more than 32 search paths",
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        let search = search.as_str().unwrap_or_default();
        // A trailing dot marks a fully qualified name.
        let domain = search.strip_suffix('.').unwrap_or(search);
        let at = path.child("searches").index(i);
        report(errs, &at, search, dns1123_subdomain_problems(domain));
    }
}

/// The fields a pod update may change: images, the deadline, added
/// tolerations, a first `nodeName`, and a grace period fixed from negative
/// to 1. Everything else of the spec must stay as stored.
const POD_UPDATABLE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn pod_update(spec: &Value, old: &Value, path: &Path, errs: &mut Vec<Cause>) {
    for kind in ["containers", "initContainers"] {
        if list(spec, kind).len() != list(old, kind).len() {
            errs.push(Cause::forbidden(
                path.child(kind),
                "pod updates may not add or remove containers",
            ));
            return;
        }
    }
    active_deadline_update(spec, old, path, errs);
    let munged = munge_pod_spec(spec, old);
    if munged != *old {
        let changed = changed_keys(&munged, old);
        errs.push(Cause::forbidden(
            path,
            format!("{POD_UPDATABLE}\n  changed: {}", changed.join(", ")),
        ));
    }
}

fn active_deadline_update(spec: &Value, old: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let at = path.child("activeDeadlineSeconds");
    match (
        int_of(spec, "activeDeadlineSeconds"),
        int_of(old, "activeDeadlineSeconds"),
    ) {
        (None, Some(_)) => errs.push(Cause::invalid(
            &at,
            &NULL,
            "must not update from a positive integer to nil value",
        )),
        (Some(new), Some(old)) if new > old => errs.push(Cause::invalid(
            &at,
            &json!(new),
            "must be less than or equal to previous value",
        )),
        _ => {}
    }
}

/// The new spec with every field a pod update may change set back to the
/// stored value, so what remains different is a forbidden change.
fn munge_pod_spec(spec: &Value, old: &Value) -> Value {
    let mut munged = spec.clone();
    let Some(m) = munged.as_object_mut() else {
        return munged;
    };
    for kind in ["containers", "initContainers"] {
        let old_images = list(old, kind).iter().map(|c| c.get("image"));
        if let Some(containers) = m.get_mut(kind).and_then(Value::as_array_mut) {
            for (c, image) in containers.iter_mut().zip(old_images) {
                restore(c, "image", image);
            }
        }
    }
    restore(
        &mut munged,
        "activeDeadlineSeconds",
        old.get("activeDeadlineSeconds"),
    );
    let old_tolerations = list(old, "tolerations");
    if old_tolerations
        .iter()
        .all(|t| list(spec, "tolerations").contains(t))
    {
        restore(&mut munged, "tolerations", old.get("tolerations"));
    }
    if set_str(old, "nodeName").is_none() {
        restore(&mut munged, "nodeName", old.get("nodeName"));
    }
    let grace = "terminationGracePeriodSeconds";
    if int_of(old, grace).is_some_and(|g| g < 0) && int_of(spec, grace) == Some(1) {
        restore(&mut munged, grace, old.get(grace));
    }
    munged
}

/// Sets `key` of `v` to `old`, or removes it when the old object lacked it.
fn restore(v: &mut Value, key: &str, old: Option<&Value>) {
    let Some(map) = v.as_object_mut() else { return };
    match old {
        Some(old) => {
            map.insert(key.to_string(), old.clone());
        }
        None => {
            map.remove(key);
        }
    }
}

/// `spec.dnsPolicy`-style names of the top-level fields that differ.
fn changed_keys(new: &Value, old: &Value) -> Vec<String> {
    let empty = Map::new();
    let new = new.as_object().unwrap_or(&empty);
    let old = old.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = new.keys().chain(old.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| new.get(*k) != old.get(*k))
        .map(|k| format!("spec.{k}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::test_support::{check, check_update, fields, has, with};

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "web",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 5},
                "env": [{"name": "MY_ENV.NAME", "value": "x"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "volumes": [{"name": "data", "emptyDir": {}}]}
        })
    }

    #[test]
    fn a_good_pod_is_valid() {
        assert_eq!(check("", "Pod", &pod()), vec![]);
    }

    #[test]
    fn pods_need_containers_with_names_and_images() {
        let errs = check("", "Pod", &with(pod(), "/spec/containers", json!([])));
        assert_eq!(
            fields(&errs),
            vec![("spec.containers", "FieldValueRequired")]
        );
        let two = json!([{"name": "web", "image": "a"}, {"name": "web"}, {"image": "b"}]);
        let errs = check("", "Pod", &with(pod(), "/spec/containers", two));
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.containers[1].name", "FieldValueDuplicate"),
                ("spec.containers[1].image", "FieldValueRequired"),
                ("spec.containers[2].name", "FieldValueRequired"),
            ]
        );
        assert_eq!(errs[0].message, "Duplicate value: \"web\"");
        let init = json!([{"name": "web", "image": "busybox"}]);
        let errs = check("", "Pod", &with(pod(), "/spec/initContainers", init));
        assert_eq!(
            fields(&errs),
            vec![("spec.initContainers[0].name", "FieldValueDuplicate")]
        );
        let errs = check(
            "",
            "Pod",
            &with(pod(), "/spec/containers/0/name", json!("Web")),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.containers[0].name", "FieldValueInvalid")]
        );
    }

    #[test]
    fn container_ports_are_checked() {
        let ports = json!([
            {"containerPort": 70000},
            {"containerPort": 80, "hostPort": -1, "protocol": "HTTP"},
            {"name": "http_1", "containerPort": 81},
            {"name": "web", "containerPort": 82},
            {"name": "web", "containerPort": 83},
            {"name": "other"}
        ]);
        let errs = check("", "Pod", &with(pod(), "/spec/containers/0/ports", ports));
        assert_eq!(
            fields(&errs),
            vec![
                (
                    "spec.containers[0].ports[0].containerPort",
                    "FieldValueInvalid"
                ),
                ("spec.containers[0].ports[1].hostPort", "FieldValueInvalid"),
                (
                    "spec.containers[0].ports[1].protocol",
                    "FieldValueNotSupported"
                ),
                ("spec.containers[0].ports[2].name", "FieldValueInvalid"),
                ("spec.containers[0].ports[4].name", "FieldValueDuplicate"),
                (
                    "spec.containers[0].ports[5].containerPort",
                    "FieldValueRequired"
                ),
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            errs[2].message,
            "Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
    }

    #[test]
    fn host_ports_are_unique_and_match_on_the_host_network() {
        let containers = json!([
            {"name": "a", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]},
            {"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080, "protocol": "TCP"},
                                                  {"containerPort": 81, "hostPort": 8080, "protocol": "UDP"}]}
        ]);
        let errs = check(
            "",
            "Pod",
            &with(pod(), "/spec/containers", containers.clone()),
        );
        assert_eq!(
            fields(&errs),
            vec![(
                "spec.containers[1].ports[0].hostPort",
                "FieldValueDuplicate"
            )]
        );
        assert_eq!(errs[0].message, "Duplicate value: \"/TCP/8080\"");
        let host = with(
            with(pod(), "/spec/containers", containers),
            "/spec/hostNetwork",
            json!(true),
        );
        let errs = check("", "Pod", &host);
        assert!(has(
            &errs,
            "spec.containers[0].ports[0].hostPort",
            "FieldValueInvalid"
        ));
        assert!(
            errs[0]
                .message
                .ends_with("must match `containerPort` when `hostNetwork` is true")
        );
    }

    #[test]
    fn pod_policies_are_from_fixed_sets() {
        let object = with(
            with(pod(), "/spec/restartPolicy", json!("Sometimes")),
            "/spec/dnsPolicy",
            json!("Google"),
        );
        let errs = check("", "Pod", &object);
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.restartPolicy", "FieldValueNotSupported"),
                ("spec.dnsPolicy", "FieldValueNotSupported")
            ]
        );
        assert_eq!(
            errs[0].message,
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
    }

    #[test]
    fn dns_policy_none_needs_a_dns_config() {
        let none = with(pod(), "/spec/dnsPolicy", json!("None"));
        let errs = check("", "Pod", &none);
        assert_eq!(
            fields(&errs),
            vec![("spec.dnsConfig", "FieldValueRequired")]
        );
        assert_eq!(
            errs[0].message,
            "Required value: must provide `dnsConfig` when `dnsPolicy` is None"
        );
        let errs = check(
            "",
            "Pod",
            &with(
                none.clone(),
                "/spec/dnsConfig",
                json!({"searches": ["a.b."]}),
            ),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.dnsConfig.nameservers", "FieldValueRequired")]
        );
        let config = json!({"nameservers": ["10.3.240.10", "dns"], "searches": ["Bad_"]});
        let errs = check("", "Pod", &with(none.clone(), "/spec/dnsConfig", config));
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.dnsConfig.nameservers[1]", "FieldValueInvalid"),
                ("spec.dnsConfig.searches[0]", "FieldValueInvalid")
            ]
        );
        let good = json!({"nameservers": ["10.3.240.10"], "searches": ["svc.cluster.local"]});
        assert!(check("", "Pod", &with(none, "/spec/dnsConfig", good)).is_empty());
    }

    #[test]
    fn env_var_names_are_checked() {
        let env = json!([{"name": "1BAD"}, {"name": ""}, {"name": "ok-name.1"}]);
        let errs = check("", "Pod", &with(pod(), "/spec/containers/0/env", env));
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.containers[0].env[0].name", "FieldValueInvalid"),
                ("spec.containers[0].env[1].name", "FieldValueRequired")
            ]
        );
        assert!(
            errs[0]
                .message
                .contains("a valid environment variable name must consist of")
        );
    }

    #[test]
    fn probes_are_checked() {
        let c = "/spec/containers/0";
        let object = with(
            pod(),
            &format!("{c}/livenessProbe"),
            json!({
                "tcpSocket": {"port": "x--y"}, "periodSeconds": -1, "successThreshold": 2
            }),
        );
        let object = with(
            object,
            &format!("{c}/readinessProbe"),
            json!({"httpGet": {"port": 0, "scheme": "FTP"}}),
        );
        let object = with(
            object,
            &format!("{c}/startupProbe"),
            json!({"periodSeconds": 1}),
        );
        let errs = check("", "Pod", &object);
        assert_eq!(
            fields(&errs),
            vec![
                (
                    "spec.containers[0].livenessProbe.periodSeconds",
                    "FieldValueInvalid"
                ),
                (
                    "spec.containers[0].livenessProbe.successThreshold",
                    "FieldValueInvalid"
                ),
                (
                    "spec.containers[0].livenessProbe.tcpSocket.port",
                    "FieldValueInvalid"
                ),
                (
                    "spec.containers[0].readinessProbe.httpGet.port",
                    "FieldValueInvalid"
                ),
                (
                    "spec.containers[0].readinessProbe.httpGet.scheme",
                    "FieldValueNotSupported"
                ),
                ("spec.containers[0].startupProbe", "FieldValueRequired"),
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(errs[1].message, "Invalid value: 2: must be 1");
        assert_eq!(
            errs[2].message,
            "Invalid value: \"x--y\": must not contain consecutive hyphens"
        );
        assert_eq!(
            errs[5].message,
            "Required value: must specify a handler type"
        );
        let two = json!({"exec": {"command": ["true"]}, "grpc": {"port": 9000}});
        let errs = check("", "Pod", &with(pod(), &format!("{c}/livenessProbe"), two));
        assert_eq!(
            fields(&errs),
            vec![(
                "spec.containers[0].livenessProbe.grpc",
                "FieldValueForbidden"
            )]
        );
    }

    #[test]
    fn init_containers_are_checked_like_containers() {
        let init = json!([{"name": "setup", "image": "busybox", "ports": [{"containerPort": 0}],
                           "readinessProbe": {"exec": {"command": ["true"]}}}]);
        let errs = check("", "Pod", &with(pod(), "/spec/initContainers", init));
        assert_eq!(
            fields(&errs),
            vec![
                (
                    "spec.initContainers[0].ports[0].containerPort",
                    "FieldValueRequired"
                ),
                (
                    "spec.initContainers[0].readinessProbe",
                    "FieldValueForbidden"
                ),
            ]
        );
    }

    #[test]
    fn volume_mounts_refer_to_volumes() {
        let mounts = json!([{"name": "cache", "mountPath": "/cache"}, {"name": "data"}]);
        let errs = check(
            "",
            "Pod",
            &with(pod(), "/spec/containers/0/volumeMounts", mounts),
        );
        assert_eq!(
            fields(&errs),
            vec![
                (
                    "spec.containers[0].volumeMounts[0].name",
                    "FieldValueNotFound"
                ),
                (
                    "spec.containers[0].volumeMounts[1].mountPath",
                    "FieldValueRequired"
                ),
            ]
        );
        assert_eq!(errs[0].message, "Not found: \"cache\"");
        let volumes = json!([{"name": "data"}, {"name": "data"}]);
        let errs = check("", "Pod", &with(pod(), "/spec/volumes", volumes));
        assert_eq!(
            fields(&errs),
            vec![("spec.volumes[1].name", "FieldValueDuplicate")]
        );
    }

    #[test]
    fn pod_durations_are_checked() {
        let object = with(pod(), "/spec/terminationGracePeriodSeconds", json!(-1));
        let object = with(object, "/spec/activeDeadlineSeconds", json!(0));
        let errs = check("", "Pod", &object);
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.terminationGracePeriodSeconds", "FieldValueInvalid"),
                ("spec.activeDeadlineSeconds", "FieldValueInvalid")
            ]
        );
        assert_eq!(
            errs[1].message,
            "Invalid value: 0: must be between 1 and 2147483647, inclusive"
        );
    }

    #[test]
    fn pod_updates_may_change_images_tolerations_and_a_first_node() {
        let old = with(
            pod(),
            "/spec/tolerations",
            json!([{"key": "a", "operator": "Exists"}]),
        );
        let new = with(old.clone(), "/spec/containers/0/image", json!("nginx:1.28"));
        let new = with(
            new,
            "/spec/tolerations/1",
            json!({"key": "b", "operator": "Exists"}),
        );
        let new = with(new, "/spec/nodeName", json!("n1"));
        let new = with(new, "/spec/activeDeadlineSeconds", json!(60));
        assert_eq!(check_update("", "Pod", &new, &old), vec![]);
        // Once bound, the node stays.
        let moved = with(new.clone(), "/spec/nodeName", json!("n2"));
        let errs = check_update("", "Pod", &moved, &new);
        assert_eq!(fields(&errs), vec![("spec", "FieldValueForbidden")]);
        assert!(errs[0].message.starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
        ));
        assert!(errs[0].message.ends_with("changed: spec.nodeName"));
    }

    #[test]
    fn pod_updates_may_not_change_the_rest_of_the_spec() {
        let old = with(
            pod(),
            "/spec/tolerations",
            json!([{"key": "a", "operator": "Exists"}]),
        );
        let new = with(old.clone(), "/spec/restartPolicy", json!("Never"));
        let new = with(new, "/spec/tolerations", json!([]));
        let errs = check_update("", "Pod", &new, &old);
        assert_eq!(fields(&errs), vec![("spec", "FieldValueForbidden")]);
        assert!(
            errs[0]
                .message
                .ends_with("changed: spec.restartPolicy, spec.tolerations")
        );
        let more = with(
            old.clone(),
            "/spec/containers/1",
            json!({"name": "b", "image": "x"}),
        );
        let errs = check_update("", "Pod", &more, &old);
        assert_eq!(
            fields(&errs),
            vec![("spec.containers", "FieldValueForbidden")]
        );
        let old = with(pod(), "/spec/activeDeadlineSeconds", json!(60));
        let longer = with(old.clone(), "/spec/activeDeadlineSeconds", json!(120));
        let errs = check_update("", "Pod", &longer, &old);
        assert_eq!(
            fields(&errs),
            vec![("spec.activeDeadlineSeconds", "FieldValueInvalid")]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: 120: must be less than or equal to previous value"
        );
    }
}
