//! Per-kind defaulting: the fields kube-apiserver fills on create and update
//! (its `SetDefaults_X` functions and the strategies' `PrepareForCreate`),
//! so clients read back what they would read from Kubernetes.
//!
//! A default only fills a field the client left out; what it gave is kept.
//! Where Kubernetes' Go field is not a pointer, its zero value (`""`, `0`)
//! means "left out" too, as it does there. Address allocation (clusterIP,
//! nodePorts, ipFamilies) is not a default: the allocator owns it.

use serde_json::{Map, Value, json};

use crate::registry::Resource;

/// Fills the defaults kube-apiserver fills on create and update, so clients
/// read back what they'd read from Kubernetes.
pub fn apply_defaults(resource: &Resource, object: &mut Value) {
    match resource.kind {
        "Pod" => {
            pod_spec(object_field(object, "spec"));
            default_tolerations(object_field(object, "spec"));
        }
        "Service" => service(object_field(object, "spec")),
        "Deployment" => deployment(object_field(object, "spec")),
        "ReplicaSet" => replica_set(object_field(object, "spec")),
        "Namespace" => namespace(object),
        "Secret" => set_if_zero(object, "type", json!("Opaque")),
        "Endpoints" => {
            for_each(object, "subsets", |subset| {
                for_each(subset, "ports", |port| {
                    set_if_zero(port, "protocol", json!("TCP"))
                });
            });
        }
        "EndpointSlice" => {
            // Conditions stay unset: Kubernetes reads a missing `ready` as
            // ready without writing it.
            for_each(object, "ports", |port| {
                set_if_absent(port, "name", json!(""));
                set_if_absent(port, "protocol", json!("TCP"));
            });
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// JSON helpers.

fn is_absent(v: Option<&Value>) -> bool {
    v.is_none_or(Value::is_null)
}

/// Go's zero value of a non-pointer field: missing, `""` or `0`.
fn is_zero(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(_) => false,
    }
}

/// Sets `key` when it is missing or null (Go: a nil pointer).
fn set_if_absent(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut()
        && is_absent(map.get(key))
    {
        map.insert(key.to_string(), value);
    }
}

/// Sets `key` when it is missing, null, `""` or `0` (Go: a zero value).
fn set_if_zero(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut()
        && is_zero(map.get(key))
    {
        map.insert(key.to_string(), value);
    }
}

/// The object at `key`, created empty when missing or null. A non-object
/// (which the typed decode rules out) is returned as it is; the setters
/// leave non-objects alone.
fn object_field<'a>(object: &'a mut Value, key: &str) -> &'a mut Value {
    if object.is_null() {
        *object = Value::Object(Map::new());
    }
    match object {
        Value::Object(map) => {
            let slot = map.entry(key).or_insert(Value::Null);
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            slot
        }
        other => other,
    }
}

fn for_each(object: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(items) = object.get_mut(key).and_then(Value::as_array_mut) {
        items.iter_mut().for_each(&mut f);
    }
}

fn str_at<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get(key)?.as_str()
}

// ---------------------------------------------------------------------------
// Pods and pod templates.

fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_if_zero(spec, "restartPolicy", json!("Always"));
    set_if_zero(spec, "dnsPolicy", json!("ClusterFirst"));
    set_if_absent(spec, "terminationGracePeriodSeconds", json!(30));
    set_if_zero(spec, "schedulerName", json!("default-scheduler"));
    set_if_absent(spec, "securityContext", json!({}));
    set_if_absent(spec, "enableServiceLinks", json!(true));
    // Kubernetes' Priority admission fills these two.
    set_if_absent(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_if_absent(spec, "priority", json!(0));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for kind in ["containers", "initContainers"] {
        for_each(spec, kind, |c| container(c, host_network));
    }
}

/// Kubernetes' DefaultTolerationSeconds admission, for Pods only (not
/// templates): a pod without a toleration for the `not-ready` or
/// `unreachable` `NoExecute` taint (by key, or an empty key, with that
/// effect or none) gets one with `tolerationSeconds: 300`, so the taint
/// manager evicts it five minutes after its node is lost.
fn default_tolerations(spec: &mut Value) {
    const SECONDS: i64 = 300;
    if !spec.is_object() {
        return;
    }
    let covers = |key: &str| {
        spec.get("tolerations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|t| {
                let any_key = matches!(str_at(t, "key"), None | Some(""));
                let no_execute = matches!(str_at(t, "effect"), None | Some("" | "NoExecute"));
                (any_key || str_at(t, "key") == Some(key)) && no_execute
            })
    };
    let missing: Vec<&str> = [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]
    .into_iter()
    .filter(|key| !covers(key))
    .collect();
    if missing.is_empty() {
        return;
    }
    let tolerations = object_field(spec, "tolerations");
    if !tolerations.is_array() {
        *tolerations = json!([]);
    }
    if let Some(list) = tolerations.as_array_mut() {
        for key in missing {
            list.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": SECONDS}),
            );
        }
    }
}

fn container(c: &mut Value, host_network: bool) {
    if is_zero(c.get("imagePullPolicy")) {
        let policy = pull_policy(str_at(c, "image").unwrap_or_default());
        set_if_zero(c, "imagePullPolicy", json!(policy));
    }
    set_if_zero(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_if_zero(c, "terminationMessagePolicy", json!("File"));
    set_if_absent(c, "resources", json!({}));
    for_each(c, "ports", |port| {
        set_if_zero(port, "protocol", json!("TCP"));
        // On the host's network the container port is the host port.
        if host_network && is_zero(port.get("hostPort")) {
            let container_port = port.get("containerPort").cloned().unwrap_or(json!(0));
            set_if_zero(port, "hostPort", container_port);
        }
    });
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(key).filter(|p| p.is_object()) {
            probe(p);
        }
    }
    if let Some(lifecycle) = c.get_mut("lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(http) = lifecycle.get_mut(key).and_then(|h| h.get_mut("httpGet")) {
                http_get(http);
            }
        }
    }
}

/// `Always` for a `latest` or untagged image (it may change under the same
/// name), `IfNotPresent` for a fixed tag or a digest.
fn pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    // A tag follows the last ':' of the last path part; an earlier ':' is
    // a registry port (`host:5000/app`).
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, tag)| tag);
    match tag {
        Some("latest") => "Always",
        None if !digest => "Always",
        _ => "IfNotPresent",
    }
}

fn probe(p: &mut Value) {
    set_if_zero(p, "timeoutSeconds", json!(1));
    set_if_zero(p, "periodSeconds", json!(10));
    set_if_zero(p, "successThreshold", json!(1));
    set_if_zero(p, "failureThreshold", json!(3));
    if let Some(http) = p.get_mut("httpGet") {
        http_get(http);
    }
}

fn http_get(http: &mut Value) {
    set_if_zero(http, "path", json!("/"));
    set_if_zero(http, "scheme", json!("HTTP"));
}

fn template_spec(spec: &mut Value) {
    if let Some(pod) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        pod_spec(pod);
    }
}

// ---------------------------------------------------------------------------
// Workloads.

fn deployment(spec: &mut Value) {
    set_if_absent(spec, "replicas", json!(1));
    let strategy = object_field(spec, "strategy");
    set_if_zero(strategy, "type", json!("RollingUpdate"));
    if str_at(strategy, "type") == Some("RollingUpdate") {
        let rolling = object_field(strategy, "rollingUpdate");
        set_if_absent(rolling, "maxUnavailable", json!("25%"));
        set_if_absent(rolling, "maxSurge", json!("25%"));
    }
    set_if_absent(spec, "revisionHistoryLimit", json!(10));
    set_if_absent(spec, "progressDeadlineSeconds", json!(600));
    template_spec(spec);
}

fn replica_set(spec: &mut Value) {
    set_if_absent(spec, "replicas", json!(1));
    template_spec(spec);
}

// ---------------------------------------------------------------------------
// Services.

/// Kubernetes' default ClientIP affinity timeout: three hours.
const CLIENT_IP_TIMEOUT: i64 = 10800;

fn service(spec: &mut Value) {
    set_if_zero(spec, "type", json!("ClusterIP"));
    set_if_zero(spec, "sessionAffinity", json!("None"));
    let kind = str_at(spec, "type").unwrap_or_default().to_string();
    if str_at(spec, "sessionAffinity") == Some("ClientIP") {
        let config = object_field(spec, "sessionAffinityConfig");
        let client_ip = object_field(config, "clientIP");
        set_if_absent(client_ip, "timeoutSeconds", json!(CLIENT_IP_TIMEOUT));
    }
    for_each(spec, "ports", service_port);
    if kind != "ExternalName" {
        set_if_absent(spec, "internalTrafficPolicy", json!("Cluster"));
        set_if_absent(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        set_if_zero(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        set_if_absent(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

fn service_port(port: &mut Value) {
    set_if_zero(port, "protocol", json!("TCP"));
    // An unset target (or 0, or "") is the service port itself.
    if is_zero(port.get("targetPort"))
        && let Some(number) = port.get("port").cloned()
    {
        set_if_zero(port, "targetPort", number);
    }
}

// ---------------------------------------------------------------------------
// Namespaces.

/// The label every namespace carries with its own name, so selectors can
/// pick namespaces by name.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn namespace(object: &mut Value) {
    if let Some(name) = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    {
        let labels = object_field(object_field(object, "metadata"), "labels");
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(NAME_LABEL.to_string(), json!(name));
        }
    }
    // A namespace without a phase is being created (the server resets its
    // status): it starts Active, held by the `kubernetes` finalizer until
    // its contents are gone. Later updates leave the finalizers alone, so
    // the namespace controller's removal of it sticks.
    let status = object_field(object, "status");
    if is_zero(status.get("phase")) {
        set_if_zero(status, "phase", json!("Active"));
        set_if_absent(
            object_field(object, "spec"),
            "finalizers",
            json!(["kubernetes"]),
        );
    }
}

/// The status a new object starts from, as the strategies'
/// `PrepareForCreate` set it: a Pod is `Pending` with its QoS class, before
/// any scheduler or node has seen it.
pub fn initial_status(resource: &Resource, object: &mut Value) {
    if resource.kind == "Pod" && resource.group.is_empty() {
        let qos = qos_class(&object["spec"]);
        object["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
}

/// Kubernetes' QoS class of a pod spec: `BestEffort` without any requests
/// or limits, `Guaranteed` when every container limits CPU and memory to
/// exactly what it requests, else `Burstable`.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|list| spec[*list].as_array())
        .flatten()
        .collect();
    let set = |resources: &Value, kind: &str| {
        resources[kind]
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k == "cpu" || k == "memory"))
    };
    if containers
        .iter()
        .all(|c| !set(&c["resources"], "requests") && !set(&c["resources"], "limits"))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let resources = &c["resources"];
        ["cpu", "memory"].iter().all(|name| {
            let limit = &resources["limits"][*name];
            let request = &resources["requests"][*name];
            // A request left out defaults to the limit.
            !limit.is_null() && (request.is_null() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::by_kind;
    use crate::validation::validate;

    fn defaulted(group: &str, kind: &str, mut object: Value) -> Value {
        apply_defaults(by_kind(group, kind).unwrap(), &mut object);
        object
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{
                "name": "web",
                "image": "nginx",
                "ports": [{"containerPort": 80}],
                "livenessProbe": {"httpGet": {"port": 80}},
                "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 3}
            }]}
        })
    }

    #[test]
    fn a_new_pod_is_pending_with_its_qos_class() {
        let resource = by_kind("", "Pod").unwrap();
        let mut best_effort = pod();
        initial_status(resource, &mut best_effort);
        assert_eq!(
            best_effort["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );

        let mut guaranteed = pod();
        guaranteed["spec"]["containers"][0]["resources"] =
            json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        initial_status(resource, &mut guaranteed);
        assert_eq!(guaranteed["status"]["qosClass"], "Guaranteed");

        let mut burstable = pod();
        burstable["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m"}});
        initial_status(resource, &mut burstable);
        assert_eq!(burstable["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn pod_specs_get_kubernetes_defaults() {
        let pod = defaulted("", "Pod", pod());
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(spec["priority"], 0);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 80, "protocol": "TCP"})
        );
        assert_eq!(
            c["livenessProbe"],
            json!({
                "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3
            })
        );
        assert_eq!(c["readinessProbe"]["periodSeconds"], 3);
        assert!(c["readinessProbe"].get("httpGet").is_none());
        assert_eq!(validate(by_kind("", "Pod").unwrap(), &pod, None), vec![]);
    }

    #[test]
    fn pods_tolerate_lost_nodes_for_five_minutes_unless_they_say_otherwise() {
        let default = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300});
        let plain = defaulted("", "Pod", pod());
        assert_eq!(
            plain["spec"]["tolerations"],
            json!([
                default("node.kubernetes.io/not-ready"),
                default("node.kubernetes.io/unreachable")
            ])
        );
        // A pod's own toleration for one key (any effect spelling that
        // covers NoExecute) keeps that one out; others are kept first.
        let mut own = pod();
        own["spec"]["tolerations"] = json!([
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 2},
        ]);
        let out = defaulted("", "Pod", own.clone());
        let mut wanted = own["spec"]["tolerations"].as_array().unwrap().clone();
        wanted.push(default("node.kubernetes.io/not-ready"));
        assert_eq!(out["spec"]["tolerations"], json!(wanted));
        // A NoSchedule toleration for the key does not cover NoExecute.
        let mut soft = pod();
        soft["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}]);
        let out = defaulted("", "Pod", soft);
        assert_eq!(out["spec"]["tolerations"].as_array().unwrap().len(), 3);
        // Tolerating everything covers both.
        let mut all = pod();
        all["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        assert_eq!(
            defaulted("", "Pod", all)["spec"]["tolerations"],
            json!([{"operator": "Exists"}])
        );
        // Templates are not admitted pods: no tolerations there.
        let rs = defaulted(
            "apps",
            "ReplicaSet",
            json!({"spec": {"template": {"spec": pod()["spec"].clone()}}}),
        );
        assert!(rs["spec"]["template"]["spec"].get("tolerations").is_none());
    }

    #[test]
    fn pod_values_given_are_kept() {
        let given = json!({
            "restartPolicy": "Never", "dnsPolicy": "Default", "terminationGracePeriodSeconds": 0,
            "schedulerName": "mine", "securityContext": {"runAsUser": 1000}, "enableServiceLinks": false,
            "priority": 7,
            "containers": [{"name": "a", "image": "x:latest", "imagePullPolicy": "Never",
                            "ports": [{"containerPort": 53, "protocol": "UDP"}],
                            "terminationMessagePolicy": "FallbackToLogsOnError"}]
        });
        let mut object = json!({"spec": given.clone()});
        apply_defaults(by_kind("", "Pod").unwrap(), &mut object);
        let spec = &object["spec"];
        for key in [
            "restartPolicy",
            "dnsPolicy",
            "terminationGracePeriodSeconds",
            "schedulerName",
            "securityContext",
            "enableServiceLinks",
            "priority",
        ] {
            assert_eq!(spec[key], given[key], "{key}");
        }
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Never");
        assert_eq!(c["ports"][0]["protocol"], "UDP");
        assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    }

    #[test]
    fn pull_policy_follows_the_image_tag() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy("registry.local:5000/app"), "Always");
        assert_eq!(pull_policy("registry.local:5000/app:v2"), "IfNotPresent");
        assert_eq!(pull_policy("nginx@sha256:abcd"), "IfNotPresent");
        assert_eq!(pull_policy("nginx:latest@sha256:abcd"), "Always");
    }

    #[test]
    fn host_network_pods_publish_container_ports() {
        let object = json!({"spec": {"hostNetwork": true, "containers": [{"name": "a", "image": "x:1",
            "ports": [{"containerPort": 53}, {"containerPort": 80, "hostPort": 80}]}]}});
        let pod = defaulted("", "Pod", object);
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["hostPort"], 53);
        assert_eq!(pod["spec"]["containers"][0]["ports"][1]["hostPort"], 80);
        let plain = defaulted("", "Pod", pod_with_port());
        assert!(
            plain["spec"]["containers"][0]["ports"][0]
                .get("hostPort")
                .is_none()
        );
    }

    fn pod_with_port() -> Value {
        json!({"spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 53}]}]}})
    }

    #[test]
    fn init_containers_and_lifecycle_hooks_are_defaulted() {
        let object = json!({"spec": {
            "containers": [{"name": "a", "image": "x:1",
                            "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": ""}}}}],
            "initContainers": [{"name": "b", "image": "busybox:1.36"}]
        }});
        let pod = defaulted("", "Pod", object);
        assert_eq!(
            pod["spec"]["containers"][0]["lifecycle"]["preStop"]["httpGet"],
            json!({"port": 80, "path": "/", "scheme": "HTTP"})
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["terminationMessagePolicy"],
            "File"
        );
    }

    #[test]
    fn services_get_kubernetes_defaults() {
        let object = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"name": "x", "port": 81, "targetPort": "http"}]}});
        let svc = defaulted("", "Service", object);
        let spec = &svc["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert!(spec.get("clusterIP").is_none());
        assert_eq!(
            spec["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(spec["ports"][1]["targetPort"], "http");
        // Validation needs names when there are two ports; everything else passes.
        let causes = validate(by_kind("", "Service").unwrap(), &svc, None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.ports[0].name");
    }

    #[test]
    fn external_services_get_traffic_policy_defaults() {
        let object = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "ports": [{"port": 443, "targetPort": 0, "protocol": "TCP"}]}});
        let svc = defaulted("", "Service", object);
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
        assert_eq!(svc["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 443);
        let node_port = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
        );
        assert_eq!(node_port["spec"]["externalTrafficPolicy"], "Cluster");
        assert!(
            node_port["spec"]
                .get("allocateLoadBalancerNodePorts")
                .is_none()
        );
        let external = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "a.b"}}),
        );
        assert!(external["spec"].get("internalTrafficPolicy").is_none());
        assert!(external["spec"].get("ipFamilyPolicy").is_none());
    }

    #[test]
    fn client_ip_affinity_gets_a_timeout() {
        let svc = defaulted(
            "",
            "Service",
            json!({"spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
        );
        assert_eq!(
            svc["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
        let given = json!({"spec": {"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}});
        let svc = defaulted("", "Service", given);
        assert_eq!(
            svc["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            60
        );
    }

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}
            }
        })
    }

    #[test]
    fn deployments_get_kubernetes_defaults() {
        let d = defaulted("apps", "Deployment", deployment());
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            validate(by_kind("apps", "Deployment").unwrap(), &d, None),
            vec![]
        );
    }

    #[test]
    fn deployment_values_given_are_kept() {
        let mut object = deployment();
        object["spec"]["replicas"] = json!(0);
        object["spec"]["strategy"] = json!({"type": "Recreate"});
        object["spec"]["revisionHistoryLimit"] = json!(0);
        let d = defaulted("apps", "Deployment", object);
        assert_eq!(d["spec"]["replicas"], 0);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(d["spec"]["revisionHistoryLimit"], 0);
        let mut object = deployment();
        object["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": 1}});
        let d = defaulted("apps", "Deployment", object);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}})
        );
    }

    #[test]
    fn replica_sets_get_replicas_and_pod_defaults() {
        let rs = defaulted("apps", "ReplicaSet", deployment());
        assert_eq!(rs["spec"]["replicas"], 1);
        assert!(rs["spec"].get("strategy").is_none());
        assert_eq!(rs["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    }

    #[test]
    fn new_namespaces_start_active_with_the_kubernetes_finalizer() {
        let ns = defaulted("", "Namespace", json!({"metadata": {"name": "team-a"}}));
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        // A terminating namespace whose finalizer was removed keeps it removed.
        let terminating = json!({"metadata": {"name": "team-a", "labels": {"x": "y"}},
            "spec": {}, "status": {"phase": "Terminating"}});
        let ns = defaulted("", "Namespace", terminating);
        assert!(ns["spec"].get("finalizers").is_none());
        assert_eq!(ns["status"]["phase"], "Terminating");
        assert_eq!(
            ns["metadata"]["labels"],
            json!({"x": "y", "kubernetes.io/metadata.name": "team-a"})
        );
    }

    #[test]
    fn secrets_default_to_opaque() {
        assert_eq!(defaulted("", "Secret", json!({}))["type"], "Opaque");
        let tls = defaulted("", "Secret", json!({"type": "kubernetes.io/tls"}));
        assert_eq!(tls["type"], "kubernetes.io/tls");
    }

    #[test]
    fn endpoint_ports_default_to_tcp() {
        let ep = defaulted(
            "",
            "Endpoints",
            json!({"subsets": [{"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]}),
        );
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(ep["subsets"][0]["ports"][1]["protocol"], "UDP");
        let slice = defaulted(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.1.5"]}],
                "ports": [{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]
            }),
        );
        assert_eq!(
            slice["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );
        assert_eq!(
            slice["ports"][1],
            json!({"name": "dns", "port": 53, "protocol": "UDP"})
        );
        assert!(slice["endpoints"][0].get("conditions").is_none());
    }

    #[test]
    fn kinds_without_defaults_are_untouched() {
        for (group, kind) in [
            ("", "ConfigMap"),
            ("networking.k8s.io", "Ingress"),
            ("", "Node"),
            ("", "Event"),
        ] {
            let object = json!({"metadata": {"name": "x"}, "data": {"a": "b"}});
            assert_eq!(defaulted(group, kind, object.clone()), object, "{kind}");
        }
    }

    #[test]
    fn defaulting_is_idempotent() {
        for (group, kind, object) in [("", "Pod", pod()), ("apps", "Deployment", deployment())] {
            let once = defaulted(group, kind, object);
            assert_eq!(defaulted(group, kind, once.clone()), once, "{kind}");
        }
    }
}
