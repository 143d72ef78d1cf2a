//! The `paths` of a group/version document: for each resource its
//! collection and item paths (and subresources) with the operations knit
//! serves, each tagged with `x-kubernetes-action` and
//! `x-kubernetes-group-version-kind` and listing its query parameters.
//! kubectl reads two things here: whether a kind's PATCH operations take
//! `fieldValidation` (then it leaves field validation to the server) and
//! whether they accept strategic merge patches (then `kubectl apply`
//! computes one from the schemas).

use serde_json::{Map, Value, json};

use super::GroupVersion;
use super::schemas::{gvk, reference};
use crate::registry::Resource;

const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

fn query(name: &str, kind: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": kind, "uniqueItems": true},
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

fn pretty() -> Value {
    query(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    )
}

/// The options of a delete: how long the object gets, and what happens to
/// its dependents.
fn deletion_params() -> [Value; 2] {
    [
        query(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted.",
        ),
        query(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed.",
        ),
    ]
}

fn dry_run() -> Value {
    query(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. \
         Valid values are: - All: all dry run stages will be processed",
    )
}

fn field_manager() -> Value {
    query(
        "fieldManager",
        "string",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
    )
}

fn field_validation() -> Value {
    query(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request \
         containing unknown or duplicate fields. Valid values are: - Ignore: drops unknown \
         fields silently. - Warn: sends a warning for each unknown or duplicate field; this \
         is the default. - Strict: fails the request on any unknown or duplicate field.",
    )
}

/// The parameters every write takes.
fn write_params() -> Vec<Value> {
    vec![pretty(), dry_run(), field_manager(), field_validation()]
}

fn list_params() -> Vec<Value> {
    vec![
        pretty(),
        query(
            "allowWatchBookmarks",
            "boolean",
            "requests watch events with type BOOKMARK.",
        ),
        query(
            "continue",
            "string",
            "The continue option should be set when retrieving more results from the server.",
        ),
        query(
            "fieldSelector",
            "string",
            "A selector to restrict the list of returned objects by their fields.",
        ),
        query(
            "labelSelector",
            "string",
            "A selector to restrict the list of returned objects by their labels.",
        ),
        query(
            "limit",
            "integer",
            "limit is a maximum number of responses to return for a list call.",
        ),
        query(
            "resourceVersion",
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
        ),
        query(
            "resourceVersionMatch",
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
        ),
        query(
            "timeoutSeconds",
            "integer",
            "Timeout for the list/watch call.",
        ),
        query(
            "watch",
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
        ),
    ]
}

fn content(types: &[&str], schema: &Value) -> Value {
    let map: Map<String, Value> = types
        .iter()
        .map(|t| ((*t).to_string(), json!({"schema": schema})))
        .collect();
    Value::Object(map)
}

const READ_TYPES: &[&str] = &["application/json", "application/yaml"];
const WRITE_TYPES: &[&str] = &["*/*"];
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

fn responses(codes: &[(&str, &str)], schema: &Value) -> Value {
    let mut out = Map::new();
    for (code, description) in codes {
        out.insert(
            (*code).to_string(),
            json!({"description": description, "content": content(READ_TYPES, schema)}),
        );
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

/// What one operation is about.
struct Op<'a> {
    action: &'a str,
    id: String,
    description: String,
    gvk: &'a Value,
    params: Vec<Value>,
    body: Option<(&'a [&'a str], Value)>,
    responses: Value,
}

impl Op<'_> {
    fn into_value(self) -> Value {
        let mut op = json!({
            "tags": [],
            "description": self.description,
            "operationId": self.id,
            "parameters": self.params,
            "responses": self.responses,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": self.gvk,
        });
        if let Some((types, schema)) = self.body {
            op["requestBody"] = json!({"content": content(types, &schema), "required": true});
        }
        op
    }
}

/// `Core`, `Apps`, `Networking`: the group as operation ids spell it.
fn group_word(group: &str) -> String {
    let first = group.split('.').next().unwrap_or_default();
    if first.is_empty() {
        return "Core".into();
    }
    let mut chars = first.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// The paths of one group/version.
pub(super) fn paths(gv: &GroupVersion) -> Value {
    let mut out = Map::new();
    let prefix = if gv.group.is_empty() {
        format!("/api/{}", gv.version)
    } else {
        format!("/apis/{}/{}", gv.group, gv.version)
    };
    for (resource, schema_name) in &gv.kinds {
        resource_paths(&mut out, &prefix, gv, resource, schema_name);
    }
    Value::Object(out)
}

fn resource_paths(
    out: &mut Map<String, Value>,
    prefix: &str,
    gv: &GroupVersion,
    resource: &Resource,
    schema_name: &str,
) {
    let kind = resource.kind;
    let gvk = gvk(gv.group, gv.version, kind);
    let object = reference(schema_name);
    let list = reference(&format!("{schema_name}List"));
    let status = reference(STATUS);
    let id_tail = format!(
        "{}{}{}{kind}",
        group_word(gv.group),
        capitalized(gv.version),
        if resource.namespaced {
            "Namespaced"
        } else {
            ""
        },
    );
    let scope = if resource.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", resource.plural)
    } else {
        format!("{prefix}/{}", resource.plural)
    };
    let mut scope_params = Vec::new();
    if resource.namespaced {
        scope_params.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }

    // The collection.
    let mut delete_collection_params = list_params();
    delete_collection_params.push(dry_run());
    delete_collection_params.extend(deletion_params());
    let collection = json!({
        "parameters": scope_params,
        "get": Op {
            action: "list",
            id: format!("list{id_tail}"),
            description: format!("list or watch objects of kind {kind}"),
            gvk: &gvk,
            params: list_params(),
            body: None,
            responses: responses(&[("200", "OK")], &list),
        }.into_value(),
        "post": Op {
            action: "post",
            id: format!("create{id_tail}"),
            description: format!("create a {kind}"),
            gvk: &gvk,
            params: write_params(),
            body: Some((WRITE_TYPES, object.clone())),
            responses: responses(&[("200", "OK"), ("201", "Created"), ("202", "Accepted")], &object),
        }.into_value(),
        "delete": Op {
            action: "deletecollection",
            id: format!("deletecollection{id_tail}"),
            description: format!("delete collection of {kind}"),
            gvk: &gvk,
            params: delete_collection_params,
            body: Some((WRITE_TYPES, reference(DELETE_OPTIONS))),
            responses: responses(&[("200", "OK")], &status),
        }.into_value(),
    });
    out.insert(scope.clone(), collection);

    if resource.namespaced {
        let all = format!("{prefix}/{}", resource.plural);
        let id_all = format!(
            "list{}{}{kind}ForAllNamespaces",
            group_word(gv.group),
            capitalized(gv.version)
        );
        out.insert(
            all,
            json!({"get": Op {
                action: "list",
                id: id_all,
                description: format!("list or watch objects of kind {kind}"),
                gvk: &gvk,
                params: list_params(),
                body: None,
                responses: responses(&[("200", "OK")], &list),
            }.into_value()}),
        );
    }

    // The object.
    let mut item_params = vec![path_param("name", &format!("name of the {kind}"))];
    item_params.extend(scope_params.iter().cloned());
    let mut patch_params = write_params();
    patch_params.push(query(
        "force",
        "boolean",
        "Force is going to \"force\" Apply requests. It must be unset for non-apply patch requests.",
    ));
    let mut delete_params = vec![pretty(), dry_run()];
    delete_params.extend(deletion_params());
    let item = json!({
        "parameters": item_params,
        "get": Op {
            action: "get",
            id: format!("read{id_tail}"),
            description: format!("read the specified {kind}"),
            gvk: &gvk,
            params: vec![pretty()],
            body: None,
            responses: responses(&[("200", "OK")], &object),
        }.into_value(),
        "put": Op {
            action: "put",
            id: format!("replace{id_tail}"),
            description: format!("replace the specified {kind}"),
            gvk: &gvk,
            params: write_params(),
            body: Some((WRITE_TYPES, object.clone())),
            responses: responses(&[("200", "OK"), ("201", "Created")], &object),
        }.into_value(),
        "patch": Op {
            action: "patch",
            id: format!("patch{id_tail}"),
            description: format!("partially update the specified {kind}"),
            gvk: &gvk,
            params: patch_params.clone(),
            body: Some((PATCH_TYPES, reference(PATCH))),
            responses: responses(&[("200", "OK"), ("201", "Created")], &object),
        }.into_value(),
        "delete": Op {
            action: "delete",
            id: format!("delete{id_tail}"),
            description: format!("delete a {kind}"),
            gvk: &gvk,
            params: delete_params,
            body: Some((WRITE_TYPES, reference(DELETE_OPTIONS))),
            responses: responses(&[("200", "OK"), ("202", "Accepted")], &status),
        }.into_value(),
    });
    let item_path = format!("{scope}/{{name}}");
    out.insert(item_path.clone(), item);

    for sub in resource.subresources {
        let (sub_gvk, sub_schema) = match *sub {
            "status" => (gvk.clone(), object.clone()),
            "scale" => (
                super::schemas::gvk("autoscaling", "v1", "Scale"),
                reference("io.k8s.api.autoscaling.v1.Scale"),
            ),
            "binding" => (
                super::schemas::gvk("", "v1", "Binding"),
                reference("io.k8s.api.core.v1.Binding"),
            ),
            "finalize" => (gvk.clone(), object.clone()),
            _ => continue,
        };
        let sub_id = format!("{id_tail}{}", capitalized(sub));
        let mut ops = Map::new();
        ops.insert("parameters".into(), json!(item_params));
        let read = |verb: &str| Op {
            action: "get",
            id: format!("{verb}{sub_id}"),
            description: format!("read {sub} of the specified {kind}"),
            gvk: &sub_gvk,
            params: vec![pretty()],
            body: None,
            responses: responses(&[("200", "OK")], &sub_schema),
        };
        let replace = || Op {
            action: "put",
            id: format!("replace{sub_id}"),
            description: format!("replace {sub} of the specified {kind}"),
            gvk: &sub_gvk,
            params: write_params(),
            body: Some((WRITE_TYPES, sub_schema.clone())),
            responses: responses(&[("200", "OK"), ("201", "Created")], &sub_schema),
        };
        match *sub {
            "status" | "scale" => {
                ops.insert("get".into(), read("read").into_value());
                ops.insert("put".into(), replace().into_value());
                ops.insert(
                    "patch".into(),
                    Op {
                        action: "patch",
                        id: format!("patch{sub_id}"),
                        description: format!("partially update {sub} of the specified {kind}"),
                        gvk: &sub_gvk,
                        params: patch_params.clone(),
                        body: Some((PATCH_TYPES, reference(PATCH))),
                        responses: responses(&[("200", "OK"), ("201", "Created")], &sub_schema),
                    }
                    .into_value(),
                );
            }
            "binding" => {
                ops.insert(
                    "post".into(),
                    Op {
                        action: "post",
                        id: format!("create{sub_id}"),
                        description: format!("create binding of a {kind}"),
                        gvk: &sub_gvk,
                        params: write_params(),
                        body: Some((WRITE_TYPES, sub_schema.clone())),
                        responses: responses(
                            &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                            &sub_schema,
                        ),
                    }
                    .into_value(),
                );
            }
            _ => {
                ops.insert("put".into(), replace().into_value());
            }
        }
        out.insert(format!("{item_path}/{sub}"), Value::Object(ops));
    }
}
