//! The resource registry: every kind knit serves, with what the generic
//! storage path needs to know about it (group/version, scope, subresources,
//! selectable fields, names for discovery) and its typed shape check.

use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::{apps, coordination, core, discovery, networking};

/// How the name of an object of this kind is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253.
    Subdomain,
    /// DNS-1123 label: lowercase alphanumerics and `-`, at most 63.
    Label,
    /// Anything usable as a URL path segment (events).
    PathSegment,
}

/// One resource (a `plural` under a group/version) and how knit serves it.
#[derive(Debug)]
pub struct Resource {
    /// API group, `""` for core.
    pub group: &'static str,
    pub version: &'static str,
    /// The URL name, `pods`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served besides the object: `status`, `scale`, `binding`.
    pub subresources: &'static [&'static str],
    /// Field selector paths beyond `metadata.name` and `metadata.namespace`.
    pub selectable_fields: &'static [&'static str],
    pub name_rule: NameRule,
    /// Whether a create starts from an empty status (the server, not the
    /// client, owns status), as kube-apiserver's strategies do.
    pub resets_status_on_create: bool,
    /// Decodes the object into its typed form: catches wrong types
    /// (`port: "eighty"`) as kube-apiserver's decoder does.
    check_shape: fn(&Value) -> Result<(), String>,
}

/// The typed decode, with the path of the field at fault in the message
/// (`spec.ports[0].port: invalid type: string "eighty", expected i32`), as
/// kube-apiserver's decoder names the Go field.
fn shape<T: DeserializeOwned>(value: &Value) -> Result<(), String> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(|_| ())
        .map_err(|e| match e.path().to_string().as_str() {
            "." | "" => e.inner().to_string(),
            path => format!("{path}: {}", e.inner()),
        })
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The storage key of this resource: `pods`, `deployments.apps`.
    pub fn storage_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Whether `metadata.generation` counts changes to the desired state:
    /// kube-apiserver's strategies keep it for these kinds only.
    pub fn tracks_generation(&self) -> bool {
        matches!(
            self.kind,
            "Pod" | "Deployment" | "ReplicaSet" | "Ingress" | "EndpointSlice"
        )
    }

    /// Whether the object has a status the main resource must not change.
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }

    /// Whether `field` may be used in a field selector for this resource.
    pub fn field_selectable(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.selectable_fields.contains(&field)
    }

    /// Decode `value` into the kind's typed struct; the error says which
    /// field has the wrong type.
    pub fn check_shape(&self, value: &Value) -> Result<(), String> {
        (self.check_shape)(value)
    }
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["status", "finalize"],
        selectable_fields: &["status.phase"],
        name_rule: NameRule::Label,
        resets_status_on_create: true,
        check_shape: shape::<core::v1::Namespace>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status"],
        selectable_fields: &["spec.unschedulable"],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: false,
        check_shape: shape::<core::v1::Node>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        subresources: &["status", "binding", "eviction"],
        selectable_fields: POD_FIELDS,
        name_rule: NameRule::Subdomain,
        resets_status_on_create: true,
        check_shape: shape::<core::v1::Pod>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        subresources: &["status"],
        selectable_fields: &["spec.clusterIP", "spec.type"],
        name_rule: NameRule::Label,
        resets_status_on_create: true,
        check_shape: shape::<core::v1::Service>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
        selectable_fields: &[],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: false,
        check_shape: shape::<core::v1::Endpoints>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        selectable_fields: EVENT_FIELDS,
        name_rule: NameRule::PathSegment,
        resets_status_on_create: false,
        check_shape: shape::<core::v1::Event>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        selectable_fields: &[],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: false,
        check_shape: shape::<core::v1::ConfigMap>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        selectable_fields: &["type"],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: false,
        check_shape: shape::<core::v1::Secret>,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &["status", "scale"],
        selectable_fields: &[],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: true,
        check_shape: shape::<apps::v1::Deployment>,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        subresources: &["status", "scale"],
        selectable_fields: &[],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: true,
        check_shape: shape::<apps::v1::ReplicaSet>,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        selectable_fields: &["addressType"],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: false,
        check_shape: shape::<discovery::v1::EndpointSlice>,
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        singular: "ingress",
        kind: "Ingress",
        namespaced: true,
        short_names: &["ing"],
        categories: &[],
        subresources: &["status"],
        selectable_fields: &[],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: true,
        check_shape: shape::<networking::v1::Ingress>,
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingressclasses",
        singular: "ingressclass",
        kind: "IngressClass",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        selectable_fields: &[],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: false,
        check_shape: shape::<networking::v1::IngressClass>,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        selectable_fields: &[],
        name_rule: NameRule::Subdomain,
        resets_status_on_create: false,
        check_shape: shape::<coordination::v1::Lease>,
    },
];

/// Every resource knit serves.
pub fn all() -> &'static [Resource] {
    RESOURCES
}

/// The resource served at `/api[s]/<group>/<version>/<plural>`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of a kind in a group (for `apiVersion`/`kind` in a body).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The group/versions served, in the order discovery lists them.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Reads a field selector path (`spec.nodeName`) out of an object as the
/// string kube-apiserver compares: missing fields read as `""`, booleans and
/// numbers as their text.
pub fn field_value(object: &Value, path: &str) -> String {
    let mut at = object;
    for part in path.split('.') {
        match at.get(part) {
            Some(next) => at = next,
            None => return String::new(),
        }
    }
    match at {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // `source` on events is an object; Kubernetes selects on its component.
        Value::Object(map) => map
            .get("component")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        Value::Array(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_finds_grouped_and_core_resources() {
        assert_eq!(lookup("", "v1", "pods").unwrap().kind, "Pod");
        assert_eq!(
            lookup("apps", "v1", "deployments").unwrap().storage_name(),
            "deployments.apps"
        );
        assert!(lookup("apps", "v1", "pods").is_none());
        assert_eq!(
            by_kind("networking.k8s.io", "Ingress").unwrap().plural,
            "ingresses"
        );
    }

    #[test]
    fn shape_check_reports_wrong_types() {
        let svc = lookup("", "v1", "services").unwrap();
        let bad = json!({"spec": {"ports": [{"port": "eighty"}]}});
        assert!(svc.check_shape(&bad).is_err());
        let good = json!({"spec": {"ports": [{"port": 80}]}});
        assert!(svc.check_shape(&good).is_ok());
    }

    #[test]
    fn field_values_read_as_kubernetes_compares_them() {
        let pod = json!({"spec": {"nodeName": "n1", "hostNetwork": true}, "status": {}});
        assert_eq!(field_value(&pod, "spec.nodeName"), "n1");
        assert_eq!(field_value(&pod, "spec.hostNetwork"), "true");
        assert_eq!(field_value(&pod, "status.phase"), "");
    }
}
