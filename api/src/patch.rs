//! Strategic merge patch (`application/strategic-merge-patch+json`) for the
//! built-in kinds knit serves, with the semantics of
//! `k8s.io/apimachinery/pkg/util/strategicpatch`.
//!
//! This module owns the merge algorithm and the table of list patch
//! strategies (`patchStrategy` / `patchMergeKey` struct tags of the Go types).
//! The table is a small [`Schema`] walk rather than per-kind OpenAPI data: a
//! field's strategy depends on the type it sits in (a container's `ports`
//! merge by `containerPort`, a Service's by `port`), so each schema tells for
//! every field its list strategy and the schema of its children. Fields the
//! table does not know merge maps recursively and replace lists, which is
//! what the Go code does for lists without a `patchStrategy` tag.
//!
//! It is pure: it turns a stored object and a patch into a new object and
//! knows nothing of storage, admission or validation.
//!
//! Server-side apply (`crate::apply`) walks objects with the same table
//! through [`SchemaNode`]: a `patchMergeKey` list is an associative list
//! there (keyed by the Go types' `listMapKeys`, which some lists extend, e.g.
//! container ports by `containerPort` and `protocol`), a merged primitive
//! list is a set and every other list is atomic, as kube-openapi's schema
//! conversion decides for the built-in types.

use serde_json::{Map, Value};

/// A patch that cannot be applied, with a message close to the one
/// kube-apiserver gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch is malformed: not an object, a bad directive, a missing
    /// merge key, a `$retainKeys` list that omits a patched field, ...
    #[error("{0}")]
    Invalid(String),
}

/// The result of applying a patch.
pub type Result<T, E = PatchError> = std::result::Result<T, E>;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `original` for an object of `kind`
/// (e.g. `"Pod"`, `"Deployment"`, `"Service"`). Kinds without list merge
/// strategies beyond `metadata` (ConfigMap, Secret, Endpoints, ...) are
/// accepted too: their lists are replaced wholesale.
///
/// The directives `$patch` (`merge`, `replace`, `delete`), `$retainKeys`,
/// `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>` are
/// honoured and never appear in the result.
pub fn strategic_merge(kind: &str, original: &Value, patch: &Value) -> Result<Value> {
    let Value::Object(patch) = patch else {
        return Err(invalid(format!(
            "strategic merge patch must be a JSON object, got {patch}"
        )));
    };
    let base = match original {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(invalid(format!(
                "cannot patch a non-object document: {other}"
            )));
        }
    };
    let schema = Schema::Root(Kind::of(kind));
    // A top-level `$patch: delete` leaves an empty object, as in Go.
    Ok(Value::Object(
        merge_map(base, patch, schema)?.unwrap_or_default(),
    ))
}

fn invalid(message: String) -> PatchError {
    PatchError::Invalid(message)
}

/// The families of top-level kinds whose `spec`/`status` have list
/// strategies; everything else only has [`Schema::ObjectMeta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pod,
    /// Kinds whose `spec.template` is a PodTemplateSpec and whose status has
    /// `conditions` merged by `type`.
    Workload,
    CronJob,
    PodTemplate,
    Service,
    Node,
    Namespace,
    Other,
}

impl Kind {
    fn of(kind: &str) -> Self {
        match kind {
            "Pod" => Self::Pod,
            "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "DaemonSet"
            | "Job"
            | "ReplicationController" => Self::Workload,
            "CronJob" => Self::CronJob,
            "PodTemplate" => Self::PodTemplate,
            "Service" => Self::Service,
            "Node" => Self::Node,
            "Namespace" => Self::Namespace,
            _ => Self::Other,
        }
    }
}

/// The Go type a JSON object corresponds to, as far as patch strategies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// A type with no list strategies: maps merge, lists are replaced.
    Unknown,
    /// A struct replaced as a whole by server-side apply (`+structType=atomic`,
    /// e.g. `metav1.LabelSelector`); strategic merge patch merges it like
    /// [`Schema::Unknown`].
    Atomic,
    Root(Kind),
    ObjectMeta,
    PodTemplateSpec,
    PodSpec,
    /// Container and EphemeralContainer.
    Container,
    PodStatus,
    /// DeploymentSpec, ReplicaSetSpec, StatefulSetSpec, DaemonSetSpec,
    /// JobSpec, ReplicationControllerSpec: only `template` matters.
    WorkloadSpec,
    CronJobSpec,
    JobTemplateSpec,
    /// A status whose only strategic list is `conditions` keyed by `type`
    /// (workloads, Service, Namespace).
    ConditionsStatus,
    ServiceSpec,
    NodeSpec,
    NodeStatus,
}

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// No `patchStrategy`: the patch's list replaces the original.
    Replace,
    /// `patchStrategy:"merge"` with a `patchMergeKey`: the first key is the
    /// merge key of strategic merge patch, all of them together the
    /// `listMapKeys` that identify an element for server-side apply.
    MergeKey(&'static [&'static str]),
    /// `patchStrategy:"merge"` on a list of primitives: a set union.
    MergePrimitive,
}

/// What the schema says about one field: its list strategy (when it is a
/// list) and the schema of its value or of its elements.
#[derive(Debug, Clone, Copy)]
struct Field {
    list: ListStrategy,
    schema: Schema,
}

impl Schema {
    fn field(self, name: &str) -> Field {
        use ListStrategy::{MergeKey, MergePrimitive, Replace};
        use Schema::*;
        let (list, schema) = match (self, name) {
            (Root(_), "metadata") => (Replace, ObjectMeta),
            (Root(Kind::Pod), "spec") => (Replace, PodSpec),
            (Root(Kind::Pod), "status") => (Replace, PodStatus),
            (Root(Kind::Workload), "spec") => (Replace, WorkloadSpec),
            (Root(Kind::CronJob), "spec") => (Replace, CronJobSpec),
            (Root(Kind::PodTemplate), "template") => (Replace, PodTemplateSpec),
            (Root(Kind::Service), "spec") => (Replace, ServiceSpec),
            (Root(Kind::Node), "spec") => (Replace, NodeSpec),
            (Root(Kind::Node), "status") => (Replace, NodeStatus),
            (Root(Kind::Workload | Kind::Service | Kind::Namespace), "status") => {
                (Replace, ConditionsStatus)
            }

            (ObjectMeta, "finalizers") => (MergePrimitive, Unknown),
            (ObjectMeta, "ownerReferences") => (MergeKey(&["uid"]), Unknown),

            (PodTemplateSpec | JobTemplateSpec, "metadata") => (Replace, ObjectMeta),
            (PodTemplateSpec, "spec") => (Replace, PodSpec),
            (JobTemplateSpec, "spec") => (Replace, WorkloadSpec),
            (WorkloadSpec, "template") => (Replace, PodTemplateSpec),
            // A LabelSelector (a ReplicationController's plain map is
            // treated alike).
            (WorkloadSpec, "selector") => (Replace, Atomic),
            (CronJobSpec, "jobTemplate") => (Replace, JobTemplateSpec),

            (PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
                (MergeKey(&["name"]), Container)
            }
            (PodSpec, "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims") => {
                (MergeKey(&["name"]), Unknown)
            }
            (PodSpec, "hostAliases") => (MergeKey(&["ip"]), Unknown),
            (PodSpec, "topologySpreadConstraints") => {
                (MergeKey(&["topologyKey", "whenUnsatisfiable"]), Unknown)
            }

            (Container, "ports") => (MergeKey(&["containerPort", "protocol"]), Unknown),
            (Container, "env") => (MergeKey(&["name"]), Unknown),
            (Container, "volumeMounts") => (MergeKey(&["mountPath"]), Unknown),
            (Container, "volumeDevices") => (MergeKey(&["devicePath"]), Unknown),

            (PodStatus, "conditions") => (MergeKey(&["type"]), Unknown),
            (PodStatus, "podIPs" | "hostIPs") => (MergeKey(&["ip"]), Unknown),

            (ConditionsStatus, "conditions") => (MergeKey(&["type"]), Unknown),

            (ServiceSpec, "ports") => (MergeKey(&["port", "protocol"]), Unknown),

            (NodeSpec, "podCIDRs") => (MergePrimitive, Unknown),
            (NodeStatus, "conditions" | "addresses") => (MergeKey(&["type"]), Unknown),

            _ => (Replace, Unknown),
        };
        Field { list, schema }
    }
}

/// The patch metadata of one field of a Kubernetes type, as the OpenAPI
/// documents publish it (`x-kubernetes-patch-strategy` and
/// `x-kubernetes-patch-merge-key`): the same table the merge above uses, so
/// what clients compute and what the server applies cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPatchMeta {
    /// `merge`, `retainKeys` or `merge,retainKeys`.
    pub strategy: &'static str,
    /// The key list elements merge on; `None` for a set of primitives or a
    /// map-level strategy.
    pub merge_key: Option<&'static str>,
}

/// The patch metadata of `field` in the Kubernetes type named by its OpenAPI
/// definition (`io.k8s.api.core.v1.PodSpec`), or `None` when the field has
/// no strategy (maps merge, lists are replaced).
pub fn field_patch_meta(type_name: &str, field: &str) -> Option<FieldPatchMeta> {
    // `retainKeys` changes nothing in the merge itself (the client sends the
    // `$retainKeys` directive), but clients only send it when told to.
    let retain_keys = matches!(
        (type_name, field),
        ("io.k8s.api.apps.v1.DeploymentSpec", "strategy")
            | ("io.k8s.api.core.v1.PodSpec", "volumes")
    );
    let list = Schema::of_type(type_name).map(|schema| schema.field(field).list);
    let (strategy, merge_key) = match list {
        Some(ListStrategy::MergeKey(keys)) => ("merge", keys.first().copied()),
        Some(ListStrategy::MergePrimitive) => ("merge", None),
        _ if retain_keys => {
            return Some(FieldPatchMeta {
                strategy: "retainKeys",
                merge_key: None,
            });
        }
        _ => return None,
    };
    let strategy = if retain_keys {
        "merge,retainKeys"
    } else {
        strategy
    };
    Some(FieldPatchMeta {
        strategy,
        merge_key,
    })
}

impl Schema {
    /// The schema of a Go type by its OpenAPI definition name, for the types
    /// whose fields have list strategies.
    fn of_type(name: &str) -> Option<Schema> {
        Some(match name {
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" => Schema::ObjectMeta,
            "io.k8s.api.core.v1.PodSpec" => Schema::PodSpec,
            "io.k8s.api.core.v1.Container" | "io.k8s.api.core.v1.EphemeralContainer" => {
                Schema::Container
            }
            "io.k8s.api.core.v1.PodStatus" => Schema::PodStatus,
            "io.k8s.api.core.v1.ServiceSpec" => Schema::ServiceSpec,
            "io.k8s.api.core.v1.NodeSpec" => Schema::NodeSpec,
            "io.k8s.api.core.v1.NodeStatus" => Schema::NodeStatus,
            "io.k8s.api.apps.v1.DeploymentStatus"
            | "io.k8s.api.apps.v1.ReplicaSetStatus"
            | "io.k8s.api.apps.v1.StatefulSetStatus"
            | "io.k8s.api.apps.v1.DaemonSetStatus"
            | "io.k8s.api.batch.v1.JobStatus"
            | "io.k8s.api.core.v1.ReplicationControllerStatus"
            | "io.k8s.api.core.v1.ServiceStatus"
            | "io.k8s.api.core.v1.NamespaceStatus" => Schema::ConditionsStatus,
            _ => return None,
        })
    }
}

/// How server-side apply treats a list field, read off the same table as
/// strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole (`listType=atomic`, the default).
    Atomic,
    /// A set of primitives (`listType=set`, e.g. `metadata.finalizers`).
    Set,
    /// An associative list whose elements are maps identified by these keys
    /// (`listType=map` with its `listMapKeys`).
    Map(&'static [&'static str]),
}

/// A position in a kind's schema, for walking an object field by field
/// with the list strategies of the table above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaNode(Schema);

impl SchemaNode {
    /// The top of an object of `kind` (e.g. `"Deployment"`).
    pub fn root(kind: &str) -> Self {
        Self(Schema::Root(Kind::of(kind)))
    }

    /// The field `name` of the map at this position: its list type (when it
    /// holds a list) and the position of its value, or of its elements.
    pub fn field(self, name: &str) -> (ListType, SchemaNode) {
        let field = self.0.field(name);
        let list = match field.list {
            ListStrategy::Replace => ListType::Atomic,
            ListStrategy::MergePrimitive => ListType::Set,
            ListStrategy::MergeKey(keys) => ListType::Map(keys),
        };
        (list, SchemaNode(field.schema))
    }

    /// Whether a map at this position is replaced as a whole by apply.
    pub fn is_atomic(self) -> bool {
        self.0 == Schema::Atomic
    }
}

fn is_directive(key: &str) -> bool {
    key == PATCH
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// Merges `patch` into `original`. `None` means the map is deleted
/// (`$patch: delete`).
fn merge_map(
    original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Schema,
) -> Result<Option<Map<String, Value>>> {
    let mut result = match patch.get(PATCH) {
        None => original,
        Some(Value::String(s)) if s == "merge" => original,
        Some(Value::String(s)) if s == "replace" => Map::new(),
        Some(Value::String(s)) if s == "delete" => return Ok(None),
        Some(other) => {
            return Err(invalid(format!(
                "Unknown patch type: {other} in map: {}",
                Value::Object(patch.clone())
            )));
        }
    };

    if let Some(keys) = patch.get(RETAIN_KEYS) {
        let keys = string_list(keys, RETAIN_KEYS)?;
        if let Some(missing) = patch
            .iter()
            .find(|(k, v)| !v.is_null() && !is_directive(k) && !keys.contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "$retainKeys does not contain the patched field {:?}",
                missing.0
            )));
        }
        result.retain(|k, _| keys.contains(&k.as_str()));
    }

    for (key, values) in patch {
        let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
            continue;
        };
        let Value::Array(remove) = values else {
            return Err(invalid(format!("{key} must be a list, got {values}")));
        };
        if let Some(Value::Array(list)) = result.get_mut(field) {
            list.retain(|v| !remove.contains(v));
        }
    }

    for (key, value) in patch {
        if is_directive(key) {
            continue;
        }
        let field = schema.field(key);
        match value {
            Value::Null => {
                result.remove(key);
            }
            Value::Object(child) => {
                let base = match result.get_mut(key) {
                    Some(Value::Object(existing)) => std::mem::take(existing),
                    _ => Map::new(),
                };
                match merge_map(base, child, field.schema)? {
                    Some(merged) => {
                        result.insert(key.clone(), Value::Object(merged));
                    }
                    None => {
                        result.remove(key);
                    }
                }
            }
            Value::Array(items) => {
                let base = match result.get_mut(key) {
                    Some(Value::Array(existing)) => std::mem::take(existing),
                    _ => Vec::new(),
                };
                let merged = merge_list(base, items, field)?;
                result.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                result.insert(key.clone(), scalar.clone());
            }
        }
    }

    for (key, order) in patch {
        let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(invalid(format!("{key} must be a list, got {order}")));
        };
        if let Some(Value::Array(list)) = result.get_mut(field) {
            reorder(list, order, schema.field(field).list)?;
        }
    }

    Ok(Some(result))
}

fn string_list<'a>(value: &'a Value, directive: &str) -> Result<Vec<&'a str>> {
    let Value::Array(items) = value else {
        return Err(invalid(format!("{directive} must be a list, got {value}")));
    };
    items
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| invalid(format!("{directive} must list strings, got {v}")))
        })
        .collect()
}

/// The `$patch` directive of a list element, if it is a map that has one.
fn element_directive(element: &Value) -> Option<&Value> {
    element.as_object().and_then(|m| m.get(PATCH))
}

fn merge_list(original: Vec<Value>, patch: &[Value], field: Field) -> Result<Vec<Value>> {
    // `{"$patch": "replace"}` anywhere in the list replaces the whole list
    // with the other elements.
    if patch
        .iter()
        .any(|e| element_directive(e).and_then(Value::as_str) == Some("replace"))
    {
        let rest: Vec<Value> = patch
            .iter()
            .filter(|e| element_directive(e).is_none())
            .cloned()
            .collect();
        return fresh_list(&rest, field.schema);
    }
    match field.list {
        ListStrategy::Replace => fresh_list(patch, field.schema),
        ListStrategy::MergePrimitive => {
            let mut out = original;
            for item in patch {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::MergeKey(keys) => merge_keyed_list(original, patch, keys[0], field.schema),
    }
}

/// A list taken from the patch as is, with directives and nulls inside its
/// maps resolved against nothing.
fn fresh_list(items: &[Value], schema: Schema) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Object(map) => {
                if let Some(map) = merge_map(Map::new(), map, schema)? {
                    out.push(Value::Object(map));
                }
            }
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

fn merge_keyed_list(
    original: Vec<Value>,
    patch: &[Value],
    key: &str,
    schema: Schema,
) -> Result<Vec<Value>> {
    let mut out = original;
    let mut merges = Vec::with_capacity(patch.len());
    // Deletions go first, as in Go, so a patch can delete and re-add a key.
    for item in patch {
        let Value::Object(map) = item else {
            return Err(invalid(format!(
                "list element {item} is not a map, but its list merges on key {key:?}"
            )));
        };
        let Some(wanted) = map.get(key) else {
            return Err(invalid(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        match map.get(PATCH) {
            None => merges.push((wanted, map)),
            Some(Value::String(s)) if s == "delete" => {
                out.retain(|o| o.get(key) != Some(wanted));
            }
            Some(Value::String(s)) if s == "merge" => {
                return Err(invalid(
                    "merging lists cannot yet be specified in the patch".to_owned(),
                ));
            }
            Some(other) => {
                return Err(invalid(format!(
                    "Unknown patch type: {other} in map: {item}"
                )));
            }
        }
    }
    for (wanted, map) in merges {
        match out.iter().position(|o| o.get(key) == Some(wanted)) {
            Some(i) => {
                let base = match &mut out[i] {
                    Value::Object(existing) => std::mem::take(existing),
                    _ => Map::new(),
                };
                match merge_map(base, map, schema)? {
                    Some(merged) => out[i] = Value::Object(merged),
                    None => {
                        out.remove(i);
                    }
                }
            }
            None => {
                if let Some(merged) = merge_map(Map::new(), map, schema)? {
                    out.push(Value::Object(merged));
                }
            }
        }
    }
    Ok(out)
}

/// Applies `$setElementOrder`: the elements named in `order` are put in that
/// order, in the positions such elements occupy in `list`; elements the
/// order does not name (e.g. added by the server) keep their positions.
fn reorder(list: &mut [Value], order: &[Value], strategy: ListStrategy) -> Result<()> {
    let wanted: Vec<&Value> = match strategy {
        ListStrategy::Replace => return Ok(()),
        ListStrategy::MergePrimitive => order.iter().collect(),
        ListStrategy::MergeKey(keys) => order
            .iter()
            .map(|o| {
                o.get(keys[0]).ok_or_else(|| {
                    invalid(format!(
                        "map: {o} does not contain declared merge key: {}",
                        keys[0]
                    ))
                })
            })
            .collect::<Result<_>>()?,
    };
    let rank = |v: &Value| {
        let id = match strategy {
            ListStrategy::MergeKey(keys) => v.get(keys[0])?,
            _ => v,
        };
        wanted.iter().position(|w| *w == id)
    };
    let mut slots = Vec::new();
    let mut ranked = Vec::new();
    for (i, item) in list.iter().enumerate() {
        if let Some(r) = rank(item) {
            slots.push(i);
            ranked.push((r, item.clone()));
        }
    }
    ranked.sort_by_key(|(r, _)| *r);
    for (slot, (_, item)) in slots.into_iter().zip(ranked) {
        list[slot] = item;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: &str, original: Value, patch: Value) -> Value {
        strategic_merge(kind, &original, &patch).expect("patch applies")
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "x",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"a": "1"},
                "finalizers": ["f1", "f2"],
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "app:1",
                        "ports": [{"containerPort": 80, "name": "http"}],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    },
                    {"name": "sidecar", "image": "side:1"},
                ],
                "tolerations": [{"key": "k", "operator": "Exists"}],
            },
        })
    }

    #[test]
    fn patch_containers_merge_by_name_keep_order_and_append() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [
                {"name": "extra", "image": "extra:1"},
                {"name": "app", "image": "app:2"},
            ]}}),
        );
        let containers = &out["spec"]["containers"];
        assert_eq!(containers[0]["name"], "app");
        assert_eq!(containers[0]["image"], "app:2");
        // Unpatched fields of a matched element are kept.
        assert_eq!(containers[0]["env"][1]["value"], "2");
        assert_eq!(containers[1], json!({"name": "sidecar", "image": "side:1"}));
        assert_eq!(containers[2], json!({"name": "extra", "image": "extra:1"}));
        assert_eq!(containers.as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn patch_env_merges_by_name() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "app", "env": [
                {"name": "B", "value": "two"},
                {"name": "C", "value": "3"},
                {"name": "A", "$patch": "delete"},
            ]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "B", "value": "two"}, {"name": "C", "value": "3"}])
        );
    }

    #[test]
    fn patch_container_ports_merge_by_container_port() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "app", "ports": [
                {"containerPort": 80, "protocol": "TCP"},
                {"containerPort": 443},
            ]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([
                {"containerPort": 80, "name": "http", "protocol": "TCP"},
                {"containerPort": 443},
            ])
        );
    }

    #[test]
    fn patch_service_ports_merge_by_port() {
        let svc = json!({"spec": {
            "ports": [{"port": 80, "targetPort": 8080, "name": "http"}],
            "externalIPs": ["1.1.1.1"],
        }});
        let out = smp(
            "Service",
            svc,
            json!({"spec": {
                "ports": [{"port": 80, "targetPort": 9090}, {"port": 443, "name": "https"}],
                "externalIPs": ["2.2.2.2"],
            }}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"port": 80, "targetPort": 9090, "name": "http"},
                {"port": 443, "name": "https"},
            ])
        );
        assert_eq!(out["spec"]["externalIPs"], json!(["2.2.2.2"]));
    }

    #[test]
    fn patch_ports_key_depends_on_context() {
        // Under a Service, `spec.ports` is keyed by `port`; a Pod has no
        // `spec.ports`, so there the list is replaced.
        let original = json!({"spec": {"ports": [{"port": 1, "a": 1}]}});
        let patch = json!({"spec": {"ports": [{"port": 1, "b": 2}]}});
        assert_eq!(
            smp("Service", original.clone(), patch.clone())["spec"]["ports"],
            json!([{"port": 1, "a": 1, "b": 2}])
        );
        assert_eq!(
            smp("Pod", original, patch)["spec"]["ports"],
            json!([{"port": 1, "b": 2}])
        );
    }

    #[test]
    fn patch_delete_directive_removes_container() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}),
        );
        let names: Vec<&Value> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, vec![&json!("app")]);
    }

    #[test]
    fn patch_replace_directive_on_map() {
        let out = smp(
            "Pod",
            pod(),
            json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
        assert_eq!(out["metadata"]["annotations"], json!({"a": "1"}));
    }

    #[test]
    fn patch_delete_directive_on_map_removes_key() {
        let out = smp(
            "Pod",
            pod(),
            json!({"metadata": {"annotations": {"$patch": "delete"}}}),
        );
        assert!(out["metadata"].get("annotations").is_none());
    }

    #[test]
    fn patch_replace_directive_in_list() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "o"}])
        );
    }

    #[test]
    fn patch_null_deletes_label() {
        let out = smp(
            "Pod",
            pod(),
            json!({"metadata": {"labels": {"tier": null}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn patch_kubectl_label_and_annotate() {
        let out = smp("Pod", pod(), json!({"metadata": {"labels": {"a": "b"}}}));
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "tier": "front", "a": "b"})
        );
        let mut expected = pod();
        expected["metadata"]["labels"]["a"] = json!("b");
        assert_eq!(out, expected);

        let out = smp(
            "Pod",
            pod(),
            json!({"metadata": {"annotations": {"note": "hi", "a": null}}}),
        );
        assert_eq!(out["metadata"]["annotations"], json!({"note": "hi"}));
    }

    #[test]
    fn patch_finalizers_union_and_delete_from_primitive_list() {
        let out = smp(
            "Pod",
            pod(),
            json!({"metadata": {"finalizers": ["f2", "f3"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2", "f3"]));

        let out = smp(
            "ConfigMap",
            pod(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["f2"]));
    }

    #[test]
    fn patch_set_element_order_reorders_containers() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                "containers": [{"name": "app", "image": "app:3"}],
            }}),
        );
        assert_eq!(out["spec"]["containers"][0]["name"], "sidecar");
        assert_eq!(out["spec"]["containers"][1]["name"], "app");
        assert_eq!(out["spec"]["containers"][1]["image"], "app:3");
        assert!(out["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn patch_set_element_order_keeps_server_only_positions() {
        let original = json!({"metadata": {"finalizers": ["a", "s", "b"]}});
        let out = smp(
            "Secret",
            original,
            json!({"metadata": {"$setElementOrder/finalizers": ["b", "a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "s", "a"]));
    }

    #[test]
    fn patch_retain_keys_drops_unlisted_fields() {
        let deploy = json!({"spec": {"strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1},
        }}});
        let out = smp(
            "Deployment",
            deploy.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

        let err = strategic_merge(
            "Deployment",
            &deploy,
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
        );
        assert!(matches!(err, Err(PatchError::Invalid(_))));
    }

    #[test]
    fn patch_deployment_template_containers_merge() {
        let deploy = json!({"spec": {"replicas": 1, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}]},
                {"name": "log", "image": "log:1"},
            ]},
        }}});
        let out = smp(
            "Deployment",
            deploy,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:2", "ports": [{"containerPort": 8080}]},
            ]}}}}),
        );
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "web:2");
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 8080}])
        );
        assert_eq!(containers[1]["name"], "log");
        assert_eq!(out["spec"]["replicas"], 1);
    }

    #[test]
    fn patch_unknown_and_replace_lists_are_replaced() {
        let out = smp(
            "Pod",
            pod(),
            json!({"spec": {"tolerations": [{"key": "other", "operator": "Exists"}]}}),
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "other", "operator": "Exists"}])
        );

        let ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
        let out = smp(
            "Endpoints",
            ep,
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]}),
        );
        assert_eq!(out["subsets"], json!([{"addresses": [{"ip": "10.0.0.2"}]}]));
    }

    #[test]
    fn patch_status_conditions_merge_by_type() {
        let node = json!({"status": {
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "MemoryPressure", "status": "False"},
            ],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
        }});
        let out = smp(
            "Node",
            node,
            json!({"status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}],
            }}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([
                {"type": "Ready", "status": "True"},
                {"type": "MemoryPressure", "status": "False"},
            ])
        );
        assert_eq!(
            out["status"]["addresses"],
            json!([
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "Hostname", "address": "n1"},
            ])
        );

        let dep = json!({"status": {"conditions": [{"type": "Available", "status": "False"}]}});
        let out = smp(
            "Deployment",
            dep,
            json!({"status": {"conditions": [{"type": "Progressing", "status": "True"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn patch_node_pod_cidrs_union_and_taints_replace() {
        let node = json!({"spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "a"}]}});
        let out = smp(
            "Node",
            node,
            json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"], "taints": [{"key": "b"}]}}),
        );
        assert_eq!(out["spec"]["podCIDRs"], json!(["10.0.0.0/24", "fd00::/64"]));
        assert_eq!(out["spec"]["taints"], json!([{"key": "b"}]));
    }

    #[test]
    fn patch_new_values_drop_directives_and_nulls() {
        let out = smp(
            "Pod",
            json!({"metadata": {"name": "x"}}),
            json!({"spec": {"containers": [{"name": "a", "image": null, "env": [
                {"name": "E", "$patch": "delete"},
                {"name": "F", "value": "f"},
            ]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "env": [{"name": "F", "value": "f"}]}])
        );
        let out = smp(
            "Pod",
            json!({"metadata": {"name": "x"}}),
            json!({"metadata": {"labels": {"$patch": "replace", "a": "b", "c": null}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"a": "b"}));
    }

    #[test]
    fn patch_errors() {
        let original = pod();
        let bad = |p: Value| strategic_merge("Pod", &original, &p);
        assert!(bad(json!([1])).is_err());
        assert!(bad(json!({"spec": {"containers": [{"image": "no-name"}]}})).is_err());
        assert!(bad(json!({"spec": {"containers": ["app"]}})).is_err());
        assert!(bad(json!({"metadata": {"$patch": "explode"}})).is_err());
        assert!(bad(json!({"metadata": {"$retainKeys": "name"}})).is_err());
        // An element-level `$patch: merge` is rejected, as in Go.
        assert!(
            bad(json!({"spec": {"containers": [{"name": "app", "$patch": "merge"}]}})).is_err()
        );
    }

    #[test]
    fn patch_owner_references_merge_by_uid() {
        let original = json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "kind": "ReplicaSet", "controller": true},
        ]}});
        let out = smp(
            "Pod",
            original,
            json!({"metadata": {"ownerReferences": [
                {"uid": "u1", "controller": null},
                {"uid": "u2", "kind": "Job"},
            ]}}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "u1", "kind": "ReplicaSet"}, {"uid": "u2", "kind": "Job"}])
        );
    }

    #[test]
    fn field_patch_meta_publishes_the_merge_table() {
        let meta = |t: &str, f: &str| field_patch_meta(t, f);
        assert_eq!(
            meta("io.k8s.api.core.v1.PodSpec", "containers"),
            Some(FieldPatchMeta {
                strategy: "merge",
                merge_key: Some("name")
            })
        );
        assert_eq!(
            meta("io.k8s.api.core.v1.Container", "ports").and_then(|m| m.merge_key),
            Some("containerPort")
        );
        assert_eq!(
            meta("io.k8s.api.core.v1.ServiceSpec", "ports").and_then(|m| m.merge_key),
            Some("port")
        );
        assert_eq!(
            meta(
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
                "finalizers"
            ),
            Some(FieldPatchMeta {
                strategy: "merge",
                merge_key: None
            })
        );
        assert_eq!(
            meta("io.k8s.api.core.v1.PodSpec", "volumes").map(|m| m.strategy),
            Some("merge,retainKeys")
        );
        assert_eq!(
            meta("io.k8s.api.apps.v1.DeploymentSpec", "strategy").map(|m| m.strategy),
            Some("retainKeys")
        );
        assert_eq!(meta("io.k8s.api.core.v1.PodSpec", "tolerations"), None);
        assert_eq!(meta("io.k8s.api.core.v1.ConfigMap", "data"), None);
    }

    #[test]
    fn patch_top_level_delete_leaves_empty_object() {
        assert_eq!(
            smp("ConfigMap", pod(), json!({"$patch": "delete"})),
            json!({})
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn labels() -> impl Strategy<Value = Map<String, Value>> {
            prop::collection::btree_map("[a-c]{1,2}", "[a-z]{0,3}", 0..5)
                .prop_map(|m| m.into_iter().map(|(k, v)| (k, json!(v))).collect())
        }

        fn names() -> impl Strategy<Value = Vec<String>> {
            prop::collection::btree_set("[a-d]", 0..4).prop_map(|s| s.into_iter().collect())
        }

        proptest! {
            #[test]
            fn patch_empty_patch_is_identity(l in labels(), c in names()) {
                let containers: Vec<Value> =
                    c.iter().map(|n| json!({"name": n, "image": n})).collect();
                let original = json!({
                    "metadata": {"labels": l, "finalizers": c},
                    "spec": {"containers": containers},
                });
                prop_assert_eq!(smp("Pod", original.clone(), json!({})), original);
            }

            #[test]
            fn patch_applying_twice_equals_once(
                l in labels(),
                p in labels(),
                c in names(),
                pc in names(),
            ) {
                let containers: Vec<Value> =
                    c.iter().map(|n| json!({"name": n, "image": "old"})).collect();
                let patched: Vec<Value> =
                    pc.iter().map(|n| json!({"name": n, "image": "new"})).collect();
                let original = json!({
                    "metadata": {"labels": l, "finalizers": c},
                    "spec": {"containers": containers},
                });
                let patch = json!({
                    "metadata": {"labels": p, "finalizers": pc},
                    "spec": {"containers": patched},
                });
                let once = smp("Pod", original, patch.clone());
                let twice = smp("Pod", once.clone(), patch);
                prop_assert_eq!(&once, &twice);
                // Every patched container is present with the new image, and
                // the original containers are all kept.
                for n in &pc {
                    prop_assert!(once["spec"]["containers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["name"] == json!(n) && x["image"] == "new"));
                }
                for n in &c {
                    prop_assert!(once["metadata"]["finalizers"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(n)));
                }
            }
        }
    }
}
