//! Per-kind validation, as kube-apiserver's `ValidateX` functions do it: every
//! problem of an object, each with its field path (`spec.ports[0].port`) and
//! a message worded as Kubernetes words it, so kubectl users read what they
//! would read from a real cluster.
//!
//! Objects arrive as JSON after the typed decode, so types are right but any
//! field may be missing. Fields that `defaults::apply_defaults` fills
//! (protocols, policies, strategy types) are only checked when present, so
//! validation gives the same answer before and after defaulting.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};

pub use crate::registry::NameRule;
use crate::registry::Resource;
use crate::status::Cause;

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const NON_NEGATIVE: &str = "must be greater than or equal to 0";
const IMMUTABLE: &str = "field is immutable";
const IP_MESSAGE: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const CIDR_MESSAGE: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;
const ANNOTATIONS_MAX: usize = 256 * 1024;
/// Kubernetes' limit on the data of one ConfigMap or Secret.
const DATA_MAX: usize = 1024 * 1024;

static NULL: Value = Value::Null;

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

// ---------------------------------------------------------------------------
// Field paths and JSON access.

/// A field path as kube-apiserver prints it: `spec.ports[0].port`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Path(String);

impl Path {
    fn new(root: &str) -> Self {
        Self(root.to_string())
    }

    /// `spec` → `spec.ports`.
    fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self::new(name)
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// `spec.ports` → `spec.ports[0]`.
    fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// `data` → `data[key]`.
    fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&Path> for String {
    fn from(path: &Path) -> Self {
        path.0.clone()
    }
}

impl From<Path> for String {
    fn from(path: Path) -> Self {
        path.0
    }
}

/// A present, non-null field.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// A string field that is present and not empty (Go reads `""` as unset).
fn set_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    str_of(v, key).filter(|s| !s.is_empty())
}

fn int_of(v: &Value, key: &str) -> Option<i64> {
    v.get(key)?.as_i64()
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn map_of<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key)?.as_object()
}

fn spec_of(object: &Value) -> &Value {
    object.get("spec").unwrap_or(&NULL)
}

// ---------------------------------------------------------------------------
// Causes shared by many kinds.

/// One `Invalid value` cause per problem.
fn report(errs: &mut Vec<Cause>, path: &Path, value: &str, problems: Vec<String>) {
    let value = json!(value);
    errs.extend(
        problems
            .into_iter()
            .map(|p| Cause::invalid(path, &value, p)),
    );
}

/// `Not found: "x"`, for a reference to something the object lacks.
fn not_found(path: &Path, value: &str) -> Cause {
    Cause {
        reason: "FieldValueNotFound",
        field: path.into(),
        message: format!("Not found: {}", json!(value)),
    }
}

fn too_long(path: &Path, max_bytes: usize) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        field: path.into(),
        message: format!("Too long: may not be more than {max_bytes} bytes"),
    }
}

fn too_many(path: &Path, count: usize, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooMany",
        field: path.into(),
        message: format!("Too many: {count}: must have at most {max} items"),
    }
}

/// A string field with a fixed set of values, checked when present.
fn one_of(v: &Value, key: &str, path: &Path, allowed: &[&str], errs: &mut Vec<Cause>) {
    if let Some(s) = str_of(v, key)
        && !allowed.contains(&s)
    {
        errs.push(Cause::not_supported(path.child(key), &json!(s), allowed));
    }
}

fn non_negative(v: &Value, key: &str, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(n) = int_of(v, key)
        && n < 0
    {
        errs.push(Cause::invalid(path.child(key), &json!(n), NON_NEGATIVE));
    }
}

fn port_number(n: i64, path: &Path, errs: &mut Vec<Cause>) {
    if !(1..=65535).contains(&n) {
        errs.push(Cause::invalid(path, &json!(n), PORT_RANGE));
    }
}

/// An int-or-string port: a number in 1..65535 or an IANA service name.
fn port_number_or_name(port: Option<&Value>, path: &Path, errs: &mut Vec<Cause>) {
    match port {
        None | Some(Value::Null) => errs.push(Cause::required(path, "")),
        Some(Value::String(name)) => report(errs, path, name, port_name_problems(name)),
        Some(v) => port_number(v.as_i64().unwrap_or(0), path, errs),
    }
}

fn protocol(port: &Value, path: &Path, errs: &mut Vec<Cause>) {
    one_of(port, "protocol", path, PROTOCOLS, errs);
}

/// The `field is immutable` check: only a value the update gives is
/// compared, since the caller carries over what a client omits.
fn immutable(new: Option<&Value>, old: Option<&Value>, path: &Path, errs: &mut Vec<Cause>) {
    if let Some(new) = new.filter(|v| !v.is_null())
        && Some(new) != old
    {
        errs.push(Cause::invalid(path, new, IMMUTABLE));
    }
}

/// A map of label keys to label values (labels, selectors).
fn label_map(labels: Option<&Map<String, Value>>, path: &Path, errs: &mut Vec<Cause>) {
    for (key, value) in labels.into_iter().flatten() {
        report(errs, path, key, qualified_name_problems(key));
        let value = value.as_str().unwrap_or_default();
        report(errs, path, value, label_value_problems(value));
    }
}

fn annotations(annotations: Option<&Map<String, Value>>, path: &Path, errs: &mut Vec<Cause>) {
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        report(
            errs,
            path,
            key,
            qualified_name_problems(&key.to_lowercase()),
        );
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > ANNOTATIONS_MAX {
        errs.push(too_long(path, ANNOTATIONS_MAX));
    }
}

// ---------------------------------------------------------------------------
// Object metadata.

fn object_meta(resource: &Resource, object: &Value, errs: &mut Vec<Cause>) {
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

fn object_meta_update(object: &Value, old: &Value, errs: &mut Vec<Cause>) {
    let new = object.get("metadata").unwrap_or(&NULL);
    let old = old.get("metadata").unwrap_or(&NULL);
    let path = Path::new("metadata");
    for key in ["name", "namespace", "uid", "creationTimestamp"] {
        immutable(new.get(key), old.get(key), &path.child(key), errs);
    }
}

// ---------------------------------------------------------------------------
// Pods and pod templates.

fn pod(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let spec = spec_of(object);
    let path = Path::new("spec");
    pod_spec(spec, &path, errs);
    if let Some(old) = old {
        pod_update(spec, spec_of(old), &path, errs);
    }
}

fn pod_spec(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
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

// ---------------------------------------------------------------------------
// Deployments and ReplicaSets.

fn workload(object: &Value, old: Option<&Value>, deployment: bool, errs: &mut Vec<Cause>) {
    let spec = spec_of(object);
    let path = Path::new("spec");
    non_negative(spec, "replicas", &path, errs);
    non_negative(spec, "minReadySeconds", &path, errs);
    let selector = get(spec, "selector");
    let matchable = workload_selector(selector, &path.child("selector"), errs);
    let template = get(spec, "template");
    pod_template(template, selector, matchable, &path.child("template"), errs);
    if deployment {
        deployment_strategy(spec, &path, errs);
        non_negative(spec, "revisionHistoryLimit", &path, errs);
        progress_deadline(spec, &path, errs);
    }
    if let Some(old) = old {
        immutable(
            selector,
            get(spec_of(old), "selector"),
            &path.child("selector"),
            errs,
        );
    }
}

/// Checks the selector and tells whether it can be matched against the
/// template's labels.
fn workload_selector(selector: Option<&Value>, path: &Path, errs: &mut Vec<Cause>) -> bool {
    let Some(selector) = selector else {
        errs.push(Cause::required(path, ""));
        // A missing selector selects nothing, so the template check still runs.
        return true;
    };
    let before = errs.len();
    label_selector(selector, path, errs);
    let clauses = map_of(selector, "matchLabels").map_or(0, Map::len)
        + list(selector, "matchExpressions").len();
    if clauses == 0 {
        errs.push(Cause::invalid(
            path,
            selector,
            "empty selector is invalid for deployment",
        ));
    }
    errs.len() == before
}

fn label_selector(selector: &Value, path: &Path, errs: &mut Vec<Cause>) {
    label_map(
        map_of(selector, "matchLabels"),
        &path.child("matchLabels"),
        errs,
    );
    for (i, expr) in list(selector, "matchExpressions").iter().enumerate() {
        selector_requirement(expr, &path.child("matchExpressions").index(i), errs);
    }
}

fn selector_requirement(expr: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let values = list(expr, "values");
    match str_of(expr, "operator").unwrap_or_default() {
        "In" | "NotIn" if values.is_empty() => errs.push(Cause::required(
            path.child("values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(Cause::forbidden(
            path.child("values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
        other => errs.push(Cause::invalid(
            path.child("operator"),
            &json!(other),
            "not a valid selector operator",
        )),
    }
    let key = str_of(expr, "key").unwrap_or_default();
    report(errs, &path.child("key"), key, qualified_name_problems(key));
    for (i, value) in values.iter().enumerate() {
        let value = value.as_str().unwrap_or_default();
        report(
            errs,
            &path.child("values").index(i),
            value,
            label_value_problems(value),
        );
    }
}

/// Whether a (valid) label selector selects an object with `labels`; a
/// missing selector selects nothing, an empty one everything.
fn selector_matches(selector: Option<&Value>, labels: &Map<String, Value>) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let labels_ok = map_of(selector, "matchLabels")
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && list(selector, "matchExpressions")
            .iter()
            .all(|expr| requirement_matches(expr, labels))
}

fn requirement_matches(expr: &Value, labels: &Map<String, Value>) -> bool {
    let value = str_of(expr, "key").and_then(|k| labels.get(k));
    let listed = value.is_some_and(|v| list(expr, "values").contains(v));
    match str_of(expr, "operator") {
        Some("In") => listed,
        Some("NotIn") => !listed,
        Some("Exists") => value.is_some(),
        Some("DoesNotExist") => value.is_none(),
        _ => false,
    }
}

/// A workload's pod template; its labels must be selected by the
/// workload's selector when that is `matchable` (valid or missing).
fn pod_template(
    template: Option<&Value>,
    selector: Option<&Value>,
    matchable: bool,
    path: &Path,
    errs: &mut Vec<Cause>,
) {
    let Some(template) = template else {
        errs.push(Cause::required(path, ""));
        return;
    };
    let meta = template.get("metadata").unwrap_or(&NULL);
    let labels_path = path.child("metadata").child("labels");
    let empty = Map::new();
    let labels = map_of(meta, "labels").unwrap_or(&empty);
    let everything = selector.is_some_and(|s| {
        map_of(s, "matchLabels").is_none_or(Map::is_empty) && list(s, "matchExpressions").is_empty()
    });
    if matchable && !everything && !selector_matches(selector, labels) {
        errs.push(Cause::invalid(
            &labels_path,
            &Value::Object(labels.clone()),
            "`selector` does not match template `labels`",
        ));
    }
    label_map(Some(labels), &labels_path, errs);
    annotations(
        map_of(meta, "annotations"),
        &path.child("metadata").child("annotations"),
        errs,
    );
    let spec = template.get("spec").unwrap_or(&NULL);
    let spec_path = path.child("spec");
    pod_spec(spec, &spec_path, errs);
    one_of(spec, "restartPolicy", &spec_path, &["Always"], errs);
    if get(spec, "activeDeadlineSeconds").is_some() {
        errs.push(Cause::forbidden(
            spec_path.child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
}

fn deployment_strategy(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let Some(strategy) = get(spec, "strategy") else {
        return;
    };
    let path = path.child("strategy");
    let rolling = get(strategy, "rollingUpdate");
    match set_str(strategy, "type") {
        Some("Recreate") if rolling.is_some() => errs.push(Cause::forbidden(
            path.child("rollingUpdate"),
            "may not be specified when strategy `type` is 'Recreate'",
        )),
        Some("RollingUpdate") | None => {
            if let Some(rolling) = rolling {
                rolling_update(rolling, &path.child("rollingUpdate"), errs);
            }
        }
        Some("Recreate") => {}
        Some(other) => errs.push(Cause::not_supported(
            path.child("type"),
            &json!(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

fn rolling_update(rolling: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let unavailable = get(rolling, "maxUnavailable");
    let surge = get(rolling, "maxSurge");
    let unavailable_path = path.child("maxUnavailable");
    int_or_percent(unavailable, &unavailable_path, errs);
    int_or_percent(surge, &path.child("maxSurge"), errs);
    // Unset values default to 25%.
    let amount = |v: Option<&Value>| v.map_or(25, int_or_percent_amount);
    if let Some(value) = unavailable
        && amount(unavailable) == 0
        && amount(surge) == 0
    {
        errs.push(Cause::invalid(
            &unavailable_path,
            value,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    if let Some(value @ Value::String(_)) = unavailable
        && int_or_percent_amount(value) > 100
    {
        errs.push(Cause::invalid(
            &unavailable_path,
            value,
            "must not be greater than 100%",
        ));
    }
}

fn int_or_percent(value: Option<&Value>, path: &Path, errs: &mut Vec<Cause>) {
    match value {
        Some(Value::String(s)) if !is_percent(s) => errs.push(Cause::invalid(
            path,
            &json!(s),
            regex_error(
                "a valid percent string must be a numeric string followed by an ending '%'",
                "[0-9]+%",
                &["1%", "93%"],
            ),
        )),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
            errs.push(Cause::invalid(path, &json!(n), NON_NEGATIVE));
        }
        _ => {}
    }
}

fn is_percent(s: &str) -> bool {
    s.strip_suffix('%')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The number of an int-or-percent (`25` of `"25%"`); unreadable is 0.
fn int_or_percent_amount(value: &Value) -> i64 {
    match value {
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        other => other.as_i64().unwrap_or(0),
    }
}

fn progress_deadline(spec: &Value, path: &Path, errs: &mut Vec<Cause>) {
    non_negative(spec, "progressDeadlineSeconds", path, errs);
    let min_ready = int_of(spec, "minReadySeconds").unwrap_or(0);
    if let Some(deadline) = int_of(spec, "progressDeadlineSeconds")
        && deadline <= min_ready
    {
        errs.push(Cause::invalid(
            path.child("progressDeadlineSeconds"),
            &json!(deadline),
            "must be greater than minReadySeconds",
        ));
    }
}

// ---------------------------------------------------------------------------
// Services.

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn service(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
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

// ---------------------------------------------------------------------------
// Endpoints and EndpointSlices.

fn endpoints(object: &Value, errs: &mut Vec<Cause>) {
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

fn endpoint_slice(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
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

// ---------------------------------------------------------------------------
// Ingress.

fn ingress(object: &Value, errs: &mut Vec<Cause>) {
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

// ---------------------------------------------------------------------------
// ConfigMaps, Secrets and Nodes.

fn config_map(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let data = map_of(object, "data");
    let binary = map_of(object, "binaryData");
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        let at = Path::new("data").key(key);
        report(errs, &at, key, config_key_problems(key));
        if binary.is_some_and(|b| b.contains_key(key)) {
            let detail = "duplicate of key present in binaryData";
            errs.push(Cause::invalid(&at, &json!(key), detail));
        }
        total += value.as_str().map_or(0, str::len);
    }
    for (key, value) in binary.into_iter().flatten() {
        report(
            errs,
            &Path::new("binaryData").key(key),
            key,
            config_key_problems(key),
        );
        total += decoded_len(value);
    }
    if total > DATA_MAX {
        errs.push(too_long(&Path::new("data"), DATA_MAX));
    }
    if let Some(old) = old {
        immutable_data(object, old, &["data", "binaryData"], errs);
    }
}

fn secret(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
    let data = map_of(object, "data");
    let string_data = map_of(object, "stringData");
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        report(
            errs,
            &Path::new("data").key(key),
            key,
            config_key_problems(key),
        );
        total += decoded_len(value);
    }
    for (key, value) in string_data.into_iter().flatten() {
        report(
            errs,
            &Path::new("stringData").key(key),
            key,
            config_key_problems(key),
        );
        total += value.as_str().map_or(0, str::len);
    }
    if total > DATA_MAX {
        errs.push(too_long(&Path::new("data"), DATA_MAX));
    }
    if str_of(object, "type") == Some("kubernetes.io/tls") {
        let has = |key: &str| {
            [data, string_data]
                .into_iter()
                .flatten()
                .any(|m| m.contains_key(key))
        };
        for key in ["tls.crt", "tls.key"] {
            if !has(key) {
                errs.push(Cause::required(Path::new("data").key(key), ""));
            }
        }
    }
    if let Some(old) = old {
        immutable(
            object.get("type"),
            old.get("type"),
            &Path::new("type"),
            errs,
        );
        immutable_data(object, old, &["data", "stringData"], errs);
    }
}

/// Once `immutable: true` is stored, neither the data nor the flag change.
fn immutable_data(object: &Value, old: &Value, fields: &[&str], errs: &mut Vec<Cause>) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    let detail = "field is immutable when `immutable` is set";
    if object.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(Cause::forbidden(Path::new("immutable"), detail));
    }
    for field in fields {
        if get(object, field) != get(old, field) {
            errs.push(Cause::forbidden(Path::new(field), detail));
        }
    }
}

/// The decoded size of a base64 value, without decoding it.
fn decoded_len(value: &Value) -> usize {
    let text = value.as_str().unwrap_or_default();
    let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
    (text.len() / 4 * 3).saturating_sub(padding)
}

fn node(object: &Value, old: Option<&Value>, errs: &mut Vec<Cause>) {
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

// ---------------------------------------------------------------------------
// Name and string formats, with kube-apiserver's messages.

const LABEL_REGEX: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const SUBDOMAIN_REGEX: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// Kubernetes' `RegexError`: the message, examples and the pattern.
fn regex_error(message: &str, regex: &str, examples: &[&str]) -> String {
    let mut out = format!("{message} (");
    if !examples.is_empty() {
        out.push_str("e.g. ");
        for (i, example) in examples.iter().enumerate() {
            if i > 0 {
                out.push_str(" or ");
            }
            out.push_str(&format!("'{example}', "));
        }
    }
    out.push_str(&format!("regex used for validation is '{regex}')"));
    out
}

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn qualified_regex_error() -> String {
    regex_error(
        "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]",
        &["MyName", "my.name", "123-abc"],
    )
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn starts_and_ends(s: &str, f: fn(char) -> bool) -> bool {
    s.chars().next().is_some_and(f) && s.chars().next_back().is_some_and(f)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_label(s: &str) -> bool {
    s.chars().all(|c| is_lower_alnum(c) || c == '-') && starts_and_ends(s, is_lower_alnum)
}

/// Labels joined by dots.
fn matches_subdomain(s: &str) -> bool {
    s.split('.').all(matches_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && starts_and_ends(s, |c| c.is_ascii_alphanumeric())
}

fn dns1123_label_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > LABEL_MAX {
        out.push(max_len(LABEL_MAX));
    }
    if !matches_label(s) {
        if matches_subdomain(s) {
            out.push("must not contain dots".to_string());
        } else {
            out.push(regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                LABEL_REGEX,
                &["my-name", "123-abc"],
            ));
        }
    }
    out
}

fn dns1123_subdomain_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        out.push(max_len(SUBDOMAIN_MAX));
    }
    if !matches_subdomain(s) {
        out.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            SUBDOMAIN_REGEX,
            &["example.com"],
        ));
    }
    out
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`: an RFC 1123 label that starts with a letter.
fn dns1035_label_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > LABEL_MAX {
        out.push(max_len(LABEL_MAX));
    }
    if !(matches_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())) {
        out.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            "[a-z]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "abc-123"],
        ));
    }
    out
}

fn wildcard_subdomain_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        out.push(max_len(SUBDOMAIN_MAX));
    }
    if !s.strip_prefix("*.").is_some_and(matches_subdomain) {
        out.push(regex_error(
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character",
            &format!("\\*\\.{SUBDOMAIN_REGEX}"),
            &["*.example.com"],
        ));
    }
    out
}

fn path_segment_problems(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .into_iter()
        .filter(|bad| s.contains(bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// An IANA service name (`http`, `metrics-2`), the form of named ports.
fn port_name_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push(max_len(15));
    }
    if s.is_empty() || !s.chars().all(|c| is_lower_alnum(c) || c == '-') {
        out.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen".to_string());
    }
    out
}

/// `[-._a-zA-Z][-._a-zA-Z0-9]*`
fn env_var_name_problems(s: &str) -> Vec<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    let ok = s.chars().all(allowed) && s.chars().next().is_some_and(|c| !c.is_ascii_digit());
    if ok {
        return Vec::new();
    }
    vec![regex_error(
        "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
        "[-._a-zA-Z][-._a-zA-Z0-9]*",
        &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
    )]
}

/// Keys of ConfigMap and Secret data: they become file names in volumes.
fn config_key_problems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        out.push(max_len(SUBDOMAIN_MAX));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if s.is_empty() || !s.chars().all(allowed) {
        out.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." || s == ".." {
        out.push(format!("must not be '{s}'"));
    } else if s.starts_with("..") {
        out.push("must not start with '..'".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::by_kind;

    fn check(group: &str, kind: &str, object: &Value) -> Vec<Cause> {
        validate(by_kind(group, kind).unwrap(), object, None)
    }

    fn check_update(group: &str, kind: &str, object: &Value, old: &Value) -> Vec<Cause> {
        validate(by_kind(group, kind).unwrap(), object, Some(old))
    }

    /// (field, reason) of each cause, the part tests pin exactly.
    fn fields(causes: &[Cause]) -> Vec<(&str, &str)> {
        causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason))
            .collect()
    }

    fn has(causes: &[Cause], field: &str, reason: &str) -> bool {
        causes
            .iter()
            .any(|c| c.field == field && c.reason == reason)
    }

    /// Sets the value at a JSON pointer, creating objects on the way.
    fn with(mut object: Value, pointer: &str, value: Value) -> Value {
        let mut at = &mut object;
        for part in pointer.trim_start_matches('/').split('/') {
            at = match at {
                Value::Array(items) => {
                    let i = part.parse::<usize>().unwrap();
                    if i == items.len() {
                        items.push(Value::Null);
                    }
                    &mut items[i]
                }
                other => other
                    .as_object_mut()
                    .unwrap()
                    .entry(part)
                    .or_insert(Value::Null),
            };
        }
        *at = value;
        object
    }

    fn meta(name: &str) -> Value {
        json!({"name": name, "namespace": "default"})
    }

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

    fn service() -> Value {
        json!({
            "metadata": meta("web"),
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        })
    }

    fn deployment() -> Value {
        json!({
            "metadata": meta("web"),
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}
                }
            }
        })
    }

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

    // --- formats -----------------------------------------------------------

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
    fn port_names_are_iana_service_names() {
        assert!(port_name_problems("http").is_empty());
        assert!(port_name_problems("metrics-2").is_empty());
        assert_eq!(
            port_name_problems("8080"),
            vec!["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            port_name_problems("a--b"),
            vec!["must contain consecutive hyphens".replace("must", "must not")]
        );
        assert_eq!(
            port_name_problems("-ab"),
            vec!["must not begin or end with a hyphen"]
        );
        assert_eq!(
            port_name_problems("Http"),
            vec!["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"]
        );
        assert_eq!(
            port_name_problems("a-very-long-port-name"),
            vec!["must be no more than 15 characters"]
        );
    }

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
    fn paths_print_as_kubernetes_prints_them() {
        let path = Path::new("spec").child("ports").index(0).child("port");
        assert_eq!(path.to_string(), "spec.ports[0].port");
        assert_eq!(Path::new("data").key("a.b").to_string(), "data[a.b]");
        assert_eq!(Path::new("").child("x").to_string(), "x");
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

    // --- metadata ----------------------------------------------------------

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

    // --- pods --------------------------------------------------------------

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

    // --- services ----------------------------------------------------------

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

    // --- endpoints ---------------------------------------------------------

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

    // --- workloads ---------------------------------------------------------

    #[test]
    fn a_good_deployment_is_valid() {
        assert_eq!(check("apps", "Deployment", &deployment()), vec![]);
        let expressions = json!({"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["web", "api"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "tier", "operator": "Exists"},
            {"key": "env", "operator": "NotIn", "values": ["prod"]}
        ]});
        assert_eq!(
            check(
                "apps",
                "Deployment",
                &with(deployment(), "/spec/selector", expressions)
            ),
            vec![]
        );
    }

    #[test]
    fn deployments_need_a_selector_matching_the_template() {
        let mut object = deployment();
        object["spec"].as_object_mut().unwrap().remove("selector");
        let errs = check("apps", "Deployment", &object);
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.selector", "FieldValueRequired"),
                ("spec.template.metadata.labels", "FieldValueInvalid")
            ]
        );
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/selector", json!({})),
        );
        assert_eq!(fields(&errs), vec![("spec.selector", "FieldValueInvalid")]);
        assert_eq!(
            errs[0].message,
            "Invalid value: {}: empty selector is invalid for deployment"
        );
        let other = json!({"matchLabels": {"app": "api"}});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/selector", other),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.template.metadata.labels", "FieldValueInvalid")]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: {\"app\":\"web\",\"tier\":\"front\"}: `selector` does not match template `labels`"
        );
        let not_in = json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/selector", not_in),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.template.metadata.labels", "FieldValueInvalid")]
        );
    }

    #[test]
    fn selector_expressions_are_checked() {
        let selector = json!({"matchExpressions": [
            {"key": "app", "operator": "Like", "values": ["web"]},
            {"key": "tier", "operator": "In"},
            {"key": "x", "operator": "Exists", "values": ["y"]},
            {"key": "bad key", "operator": "In", "values": ["-v"]}
        ]});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/selector", selector),
        );
        assert_eq!(
            fields(&errs),
            vec![
                (
                    "spec.selector.matchExpressions[0].operator",
                    "FieldValueInvalid"
                ),
                (
                    "spec.selector.matchExpressions[1].values",
                    "FieldValueRequired"
                ),
                (
                    "spec.selector.matchExpressions[2].values",
                    "FieldValueForbidden"
                ),
                ("spec.selector.matchExpressions[3].key", "FieldValueInvalid"),
                (
                    "spec.selector.matchExpressions[3].values[0]",
                    "FieldValueInvalid"
                ),
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"Like\": not a valid selector operator"
        );
    }

    #[test]
    fn deployment_templates_are_pod_specs() {
        let object = with(
            deployment(),
            "/spec/template/spec/containers/0/image",
            json!(""),
        );
        let object = with(object, "/spec/template/spec/restartPolicy", json!("Never"));
        let object = with(object, "/spec/replicas", json!(-1));
        let errs = check("apps", "Deployment", &object);
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.replicas", "FieldValueInvalid"),
                (
                    "spec.template.spec.containers[0].image",
                    "FieldValueRequired"
                ),
                ("spec.template.spec.restartPolicy", "FieldValueNotSupported"),
            ]
        );
        assert_eq!(
            errs[2].message,
            "Unsupported value: \"Never\": supported values: \"Always\""
        );
        let mut object = deployment();
        object["spec"].as_object_mut().unwrap().remove("template");
        let errs = check("apps", "Deployment", &object);
        assert_eq!(fields(&errs), vec![("spec.template", "FieldValueRequired")]);
    }

    #[test]
    fn deployment_strategies_are_checked() {
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/strategy", json!({"type": "BlueGreen"})),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.strategy.type", "FieldValueNotSupported")]
        );
        let recreate = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/strategy", recreate),
        );
        assert_eq!(
            fields(&errs),
            vec![("spec.strategy.rollingUpdate", "FieldValueForbidden")]
        );
        let zero = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/strategy", zero),
        );
        assert_eq!(
            fields(&errs),
            vec![(
                "spec.strategy.rollingUpdate.maxUnavailable",
                "FieldValueInvalid"
            )]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"
        );
        let bad = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "lots", "maxUnavailable": "120%"}});
        let errs = check(
            "apps",
            "Deployment",
            &with(deployment(), "/spec/strategy", bad),
        );
        assert_eq!(
            fields(&errs),
            vec![
                ("spec.strategy.rollingUpdate.maxSurge", "FieldValueInvalid"),
                (
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "FieldValueInvalid"
                ),
            ]
        );
        assert!(
            errs[0].message.contains(
                "a valid percent string must be a numeric string followed by an ending '%'"
            )
        );
        assert_eq!(
            errs[1].message,
            "Invalid value: \"120%\": must not be greater than 100%"
        );
        let good =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
        assert!(
            check(
                "apps",
                "Deployment",
                &with(deployment(), "/spec/strategy", good)
            )
            .is_empty()
        );
    }

    #[test]
    fn deployment_progress_deadline_exceeds_min_ready() {
        let object = with(deployment(), "/spec/minReadySeconds", json!(30));
        let object = with(object, "/spec/progressDeadlineSeconds", json!(30));
        let errs = check("apps", "Deployment", &object);
        assert_eq!(
            fields(&errs),
            vec![("spec.progressDeadlineSeconds", "FieldValueInvalid")]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: 30: must be greater than minReadySeconds"
        );
    }

    #[test]
    fn workload_selectors_are_immutable() {
        let old = deployment();
        let new = with(
            deployment(),
            "/spec/selector/matchLabels/tier",
            json!("front"),
        );
        let errs = check_update("apps", "Deployment", &new, &old);
        assert_eq!(fields(&errs), vec![("spec.selector", "FieldValueInvalid")]);
        assert!(errs[0].message.ends_with(": field is immutable"));
        assert!(
            check_update(
                "apps",
                "Deployment",
                &with(old.clone(), "/spec/replicas", json!(5)),
                &old
            )
            .is_empty()
        );
        let errs = check_update("apps", "ReplicaSet", &new, &old);
        assert_eq!(fields(&errs), vec![("spec.selector", "FieldValueInvalid")]);
    }

    #[test]
    fn replica_sets_are_checked_like_deployments() {
        assert_eq!(check("apps", "ReplicaSet", &deployment()), vec![]);
        // No strategy on a ReplicaSet: the field is not looked at.
        let object = with(deployment(), "/spec/strategy", json!({"type": "BlueGreen"}));
        assert_eq!(check("apps", "ReplicaSet", &object), vec![]);
        let object = with(deployment(), "/spec/template/metadata/labels", json!({}));
        let errs = check("apps", "ReplicaSet", &object);
        assert_eq!(
            fields(&errs),
            vec![("spec.template.metadata.labels", "FieldValueInvalid")]
        );
    }

    // --- ingress -----------------------------------------------------------

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

    // --- configmaps, secrets, nodes and metadata-only kinds ----------------

    #[test]
    fn config_map_keys_are_file_names() {
        let good = json!({"metadata": meta("cfg"), "data": {"app.conf": "x", "KEY_1": "y"}, "binaryData": {"blob.bin": "AAEC"}});
        assert_eq!(check("", "ConfigMap", &good), vec![]);
        let bad = json!({"metadata": meta("cfg"), "data": {"a b": "x", "..hidden": "y", "dup": "z"}, "binaryData": {"dup": "AAEC"}});
        let errs = check("", "ConfigMap", &bad);
        assert_eq!(
            fields(&errs),
            vec![
                ("data[..hidden]", "FieldValueInvalid"),
                ("data[a b]", "FieldValueInvalid"),
                ("data[dup]", "FieldValueInvalid"),
            ]
        );
        assert_eq!(
            errs[0].message,
            "Invalid value: \"..hidden\": must not start with '..'"
        );
        assert!(
            errs[1]
                .message
                .contains("a valid config key must consist of alphanumeric characters")
        );
        assert_eq!(
            errs[2].message,
            "Invalid value: \"dup\": duplicate of key present in binaryData"
        );
    }

    #[test]
    fn immutable_config_maps_keep_their_data() {
        let old = json!({"metadata": meta("cfg"), "immutable": true, "data": {"a": "1"}});
        assert!(
            check_update(
                "",
                "ConfigMap",
                &with(old.clone(), "/metadata/labels", json!({"x": "y"})),
                &old
            )
            .is_empty()
        );
        let new = with(old.clone(), "/data/a", json!("2"));
        let new = with(new, "/immutable", json!(false));
        let errs = check_update("", "ConfigMap", &new, &old);
        assert_eq!(
            fields(&errs),
            vec![
                ("immutable", "FieldValueForbidden"),
                ("data", "FieldValueForbidden")
            ]
        );
        assert_eq!(
            errs[1].message,
            "Forbidden: field is immutable when `immutable` is set"
        );
    }

    #[test]
    fn secrets_are_checked() {
        let good = json!({"metadata": meta("s"), "type": "Opaque", "data": {"password": "cGFzcw=="}, "stringData": {"user": "me"}});
        assert_eq!(check("", "Secret", &good), vec![]);
        let bad = json!({"metadata": meta("s"), "data": {"a/b": "eA=="}, "stringData": {"": "x"}});
        let errs = check("", "Secret", &bad);
        assert_eq!(
            fields(&errs),
            vec![
                ("data[a/b]", "FieldValueInvalid"),
                ("stringData[]", "FieldValueInvalid")
            ]
        );
        let tls = json!({"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        let errs = check("", "Secret", &tls);
        assert_eq!(fields(&errs), vec![("data[tls.key]", "FieldValueRequired")]);
        let huge = json!({"metadata": meta("s"), "stringData": {"big": "x".repeat(DATA_MAX + 1)}});
        assert_eq!(
            fields(&check("", "Secret", &huge)),
            vec![("data", "FieldValueTooLong")]
        );
    }

    #[test]
    fn secret_type_is_immutable() {
        let old = json!({"metadata": meta("s"), "type": "Opaque"});
        let errs = check_update(
            "",
            "Secret",
            &with(old.clone(), "/type", json!("kubernetes.io/basic-auth")),
            &old,
        );
        assert_eq!(fields(&errs), vec![("type", "FieldValueInvalid")]);
        assert_eq!(
            errs[0].message,
            "Invalid value: \"kubernetes.io/basic-auth\": field is immutable"
        );
        assert!(
            check_update(
                "",
                "Secret",
                &with(old.clone(), "/data", json!({"a": "eA=="})),
                &old
            )
            .is_empty()
        );
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
}
