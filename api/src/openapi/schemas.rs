//! The `components.schemas` of a group/version: the k8s-openapi types'
//! JSON schemas (OpenAPI 3.0 flavour, named as Kubernetes names them), the
//! `<Kind>List` schemas k8s-openapi has no type for, and the Kubernetes
//! extensions clients read: `x-kubernetes-group-version-kind` on kinds,
//! patch strategies and list types on keyed lists.

use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery, networking};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::{GroupVersion, SCHEMA_REF_PREFIX};
use crate::patch::field_patch_meta;
use crate::registry;

/// Registers the schema of kind `T` and returns its definition name.
fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// Registers the type of a served kind; `None` for a kind without one
/// (every registry kind has one; the test checks it).
fn add_kind(generator: &mut SchemaGenerator, group: &str, kind: &str) -> Option<String> {
    Some(match (group, kind) {
        ("", "Namespace") => add::<core::v1::Namespace>(generator),
        ("", "Node") => add::<core::v1::Node>(generator),
        ("", "Pod") => add::<core::v1::Pod>(generator),
        ("", "Service") => add::<core::v1::Service>(generator),
        ("", "Endpoints") => add::<core::v1::Endpoints>(generator),
        ("", "Event") => add::<core::v1::Event>(generator),
        ("", "ConfigMap") => add::<core::v1::ConfigMap>(generator),
        ("", "Secret") => add::<core::v1::Secret>(generator),
        ("apps", "Deployment") => add::<apps::v1::Deployment>(generator),
        ("apps", "ReplicaSet") => add::<apps::v1::ReplicaSet>(generator),
        ("discovery.k8s.io", "EndpointSlice") => add::<discovery::v1::EndpointSlice>(generator),
        ("networking.k8s.io", "Ingress") => add::<networking::v1::Ingress>(generator),
        ("networking.k8s.io", "IngressClass") => add::<networking::v1::IngressClass>(generator),
        ("coordination.k8s.io", "Lease") => add::<coordination::v1::Lease>(generator),
        _ => return None,
    })
}

/// The group/version/kind extension value of a kind.
pub(super) fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

/// `$ref` to a definition.
pub(super) fn reference(name: &str) -> Value {
    json!({"$ref": format!("{SCHEMA_REF_PREFIX}{name}")})
}

/// Builds the schemas of one group/version.
pub(super) fn build(group: &'static str, version: &'static str) -> GroupVersion {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let mut kinds = Vec::new();
    for resource in registry::all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        if let Some(name) = add_kind(&mut generator, group, resource.kind) {
            kinds.push((resource, name));
        }
    }
    // What the operations take and return besides the kinds.
    let status = add::<meta::Status>(&mut generator);
    let delete_options = add::<meta::DeleteOptions>(&mut generator);
    add::<meta::Patch>(&mut generator);
    let mut extra_kinds = Vec::new();
    if kinds.iter().any(|(r, _)| r.has_subresource("scale")) {
        let name = add::<autoscaling::v1::Scale>(&mut generator);
        extra_kinds.push((gvk("autoscaling", "v1", "Scale"), name));
    }
    if kinds.iter().any(|(r, _)| r.has_subresource("binding")) {
        let name = add::<core::v1::Binding>(&mut generator);
        extra_kinds.push((gvk("", "v1", "Binding"), name));
    }
    let mut schemas = generator.take_definitions(true);

    for (resource, name) in &kinds {
        let list_name = format!("{name}List");
        schemas.insert(list_name, list_schema(resource.kind, name));
        set_gvk(&mut schemas, name, gvk(group, version, resource.kind));
        set_gvk(
            &mut schemas,
            &format!("{name}List"),
            gvk(group, version, &resource.list_kind()),
        );
    }
    set_gvk(&mut schemas, &status, gvk("", "v1", "Status"));
    set_gvk(
        &mut schemas,
        &delete_options,
        gvk("", "v1", "DeleteOptions"),
    );
    for (gvk, name) in extra_kinds {
        set_gvk(&mut schemas, &name, gvk);
    }
    for (name, schema) in schemas.iter_mut() {
        annotate_lists(name, schema);
    }
    GroupVersion {
        group,
        version,
        kinds,
        schemas,
    }
}

/// Marks a top-level kind's schema with its group/version/kind. k8s-openapi
/// lists `metadata` as required there (its field is not an `Option`), which
/// Kubernetes does not: a body may leave it out and `kubectl explain` would
/// say otherwise.
fn set_gvk(schemas: &mut Map<String, Value>, name: &str, gvk: Value) {
    if let Some(Value::Object(schema)) = schemas.get_mut(name) {
        schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|field| field != "metadata");
            if required.is_empty() {
                schema.remove("required");
            }
        }
    }
}

/// The `<Kind>List` schema (k8s-openapi's `List<T>` is generic and has no
/// schema of its own).
fn list_schema(kind: &str, item: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": reference(item),
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata.",
                "allOf": [reference("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")],
            },
        },
    })
}

/// Puts the patch strategy, merge key and list type of each property of the
/// definition `name` that has one.
fn annotate_lists(name: &str, schema: &mut Value) {
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    for (field, property) in properties.iter_mut() {
        let Some(meta) = field_patch_meta(name, field) else {
            continue;
        };
        let Value::Object(property) = property else {
            continue;
        };
        property.insert("x-kubernetes-patch-strategy".into(), json!(meta.strategy));
        let is_list = property.get("type").and_then(Value::as_str) == Some("array");
        match meta.merge_key {
            Some(key) => {
                property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                if is_list {
                    // Ports are told apart by port and protocol together.
                    let keys = match key {
                        "containerPort" | "port" => json!([key, "protocol"]),
                        _ => json!([key]),
                    };
                    property.insert("x-kubernetes-list-type".into(), json!("map"));
                    property.insert("x-kubernetes-list-map-keys".into(), keys);
                }
            }
            None if is_list => {
                property.insert("x-kubernetes-list-type".into(), json!("set"));
            }
            None => {}
        }
    }
}
