//! Output negotiation for reads: the `meta.k8s.io` `Table` kubectl asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...`), and
//! `PartialObjectMetadata[List]`. Parses the Accept header once per
//! request, then turns a list, an object or each watch event into what the
//! client chose; the rows themselves come from `knit_api::table`.
//!
//! As kube-apiserver does, every row carries all columns (the `-o wide`
//! ones included), its `object` is the object's metadata unless
//! `includeObject` says otherwise, and a watch sends the column
//! definitions with its first event only.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::response::{IntoResponse, Response};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use knit_api::registry::Resource;
use knit_api::table::{self, Column, Row, Timestamp};
use knit_api::{ApiError, Result};
use serde_json::{Map, Value, json};

use crate::request::Params;

/// The group of `Table` and `PartialObjectMetadata`.
const META_GROUP: &str = "meta.k8s.io";

/// What kind of read a request is: the shapes differ in which conversions
/// make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Single,
    List,
    Watch,
}

/// What the client asked the response to be converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Table,
    Partial,
    PartialList,
}

impl Target {
    fn kind(self) -> &'static str {
        match self {
            Target::Table => "Table",
            Target::Partial => "PartialObjectMetadata",
            Target::PartialList => "PartialObjectMetadataList",
        }
    }
}

/// What each Table row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    fn parse(params: &Params) -> Result<Include> {
        match params.get("includeObject") {
            None | Some("Metadata") => Ok(Include::Metadata),
            Some("None") => Ok(Include::None),
            Some("Object") => Ok(Include::Object),
            Some(other) => Err(ApiError::BadRequest(format!(
                "Unable to convert to Table as requested: includeObject: Unsupported value: \"{other}\": supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }
}

/// One clause of an Accept header.
#[derive(Debug, Default)]
struct Clause {
    media_type: String,
    params: Vec<(String, String)>,
    quality: f32,
}

impl Clause {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits an Accept header into clauses, best first (by `q`, then order).
fn parse_accept(header: &str) -> Vec<Clause> {
    let mut clauses: Vec<Clause> = header
        .split(',')
        .filter_map(|clause| {
            let mut parts = clause.split(';');
            let media_type = parts.next()?.trim().to_ascii_lowercase();
            if media_type.is_empty() {
                return None;
            }
            let mut parsed = Clause {
                media_type,
                quality: 1.0,
                ..Clause::default()
            };
            for part in parts {
                let Some((key, value)) = part.split_once('=') else {
                    continue;
                };
                let key = key.trim().to_ascii_lowercase();
                let value = value.trim().trim_matches('"').to_string();
                if key == "q" {
                    parsed.quality = value.parse().unwrap_or(0.0);
                } else {
                    parsed.params.push((key, value));
                }
            }
            Some(parsed)
        })
        .filter(|c| c.quality > 0.0)
        .collect();
    clauses.sort_by(|a, b| b.quality.total_cmp(&a.quality));
    clauses
}

/// A read's conversion, decided from its Accept header and parameters.
#[derive(Debug)]
pub struct Render {
    resource: &'static Resource,
    target: Target,
    /// `v1` or `v1beta1` of `meta.k8s.io`.
    version: &'static str,
    include: Include,
    now: Timestamp,
    /// Whether a watch has sent the column definitions yet.
    headers_sent: AtomicBool,
}

impl Render {
    /// Negotiates the output of a read of `resource`. `None` means the
    /// resource's own JSON, as without an Accept header; a request that
    /// only accepts conversions knit cannot make is a 406.
    pub fn negotiate(
        resource: &'static Resource,
        headers: &HeaderMap,
        params: &Params,
        shape: Shape,
    ) -> Result<Option<Render>> {
        let accept = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let clauses = parse_accept(&accept);
        if clauses.is_empty() {
            return Ok(None);
        }
        let mut chosen = None;
        for clause in &clauses {
            let Some(kind) = clause.param("as") else {
                // Without a conversion any media type gets JSON, as before.
                return Ok(None);
            };
            if let Some(found) = convertible(clause, kind) {
                chosen = Some(found);
                break;
            }
        }
        let Some((target, version)) = chosen else {
            return Err(ApiError::NotAcceptable(
                "only the following media types are accepted: application/json".into(),
            ));
        };
        let target = match (target, shape) {
            (Target::Partial, Shape::List) => {
                return Err(ApiError::NotAcceptable(
                    "you requested PartialObjectMetadata, but the requested object is a list"
                        .into(),
                ));
            }
            (Target::PartialList, Shape::Single) => {
                return Err(ApiError::NotAcceptable(
                    "you requested PartialObjectMetadataList, but the requested object is not a list"
                        .into(),
                ));
            }
            // A watch sends objects one by one.
            (Target::PartialList, Shape::Watch) => Target::Partial,
            (target, _) => target,
        };
        let include = if target == Target::Table {
            Include::parse(params)?
        } else {
            Include::Metadata
        };
        Ok(Some(Render {
            resource,
            target,
            version,
            include,
            now: Timestamp::now(),
            headers_sent: AtomicBool::new(false),
        }))
    }

    /// The Content-Type of the converted response.
    pub fn content_type(&self) -> String {
        format!(
            "application/json;as={};v={};g={META_GROUP}",
            self.target.kind(),
            self.version
        )
    }

    fn api_version(&self) -> String {
        format!("{META_GROUP}/{}", self.version)
    }

    /// Converts a list response (`{metadata, items}`).
    pub fn list(&self, list: &Value) -> Value {
        let items: Vec<&Value> = list["items"]
            .as_array()
            .map(|items| items.iter().collect())
            .unwrap_or_default();
        let metadata = list.get("metadata").cloned().unwrap_or_else(|| json!({}));
        match self.target {
            Target::Table => self.table(metadata, &items, true),
            Target::Partial | Target::PartialList => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": self.api_version(),
                "metadata": metadata,
                "items": items.iter().map(|o| self.partial(o)).collect::<Vec<_>>(),
            }),
        }
    }

    /// Converts one object (a GET).
    pub fn object(&self, object: &Value) -> Value {
        match self.target {
            Target::Table => self.table(resource_version_of(object), &[object], true),
            Target::Partial | Target::PartialList => self.partial(object),
        }
    }

    /// Converts the object of one watch event: a one-row Table (with the
    /// column definitions on the first event only), or its metadata.
    pub fn event_object(&self, object: &Value) -> Value {
        match self.target {
            Target::Table => {
                let first = !self.headers_sent.swap(true, Ordering::Relaxed);
                self.table(resource_version_of(object), &[object], first)
            }
            Target::Partial | Target::PartialList => self.partial(object),
        }
    }

    fn table(&self, metadata: Value, objects: &[&Value], with_columns: bool) -> Value {
        let printed = table::table_for(self.resource, objects.iter().copied(), self.now, true);
        let rows: Vec<Value> = printed
            .rows
            .iter()
            .zip(objects)
            .map(|(row, object)| self.row(row, object))
            .collect();
        let columns = if with_columns {
            Value::Array(printed.columns.iter().map(column_json).collect())
        } else {
            Value::Null
        };
        json!({
            "kind": "Table",
            "apiVersion": self.api_version(),
            "metadata": metadata,
            "columnDefinitions": columns,
            "rows": rows,
        })
    }

    fn row(&self, row: &Row, object: &Value) -> Value {
        let mut out = Map::new();
        out.insert("cells".into(), Value::Array(row.cells.clone()));
        if !row.conditions.is_empty() {
            let conditions = row
                .conditions
                .iter()
                .map(|c| {
                    json!({"type": c.kind, "status": c.status, "reason": c.reason, "message": c.message})
                })
                .collect();
            out.insert("conditions".into(), Value::Array(conditions));
        }
        match self.include {
            Include::None => {}
            Include::Metadata => {
                out.insert("object".into(), self.partial(object));
            }
            Include::Object => {
                out.insert("object".into(), object.clone());
            }
        }
        Value::Object(out)
    }

    fn partial(&self, object: &Value) -> Value {
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": self.api_version(),
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })
    }
}

/// The Table conversion `as=<kind>;g=...;v=...` names, if knit makes it
/// for this media type.
fn convertible(clause: &Clause, kind: &str) -> Option<(Target, &'static str)> {
    let json = matches!(
        clause.media_type.as_str(),
        "application/json" | "*/*" | "application/*"
    );
    let target = match kind {
        "Table" => Target::Table,
        "PartialObjectMetadata" => Target::Partial,
        "PartialObjectMetadataList" => Target::PartialList,
        _ => return None,
    };
    let version = match clause.param("v") {
        Some("v1") => "v1",
        Some("v1beta1") => "v1beta1",
        _ => return None,
    };
    (json && clause.param("g") == Some(META_GROUP)).then_some((target, version))
}

fn resource_version_of(object: &Value) -> Value {
    match object["metadata"]["resourceVersion"].as_str() {
        Some(rv) => json!({"resourceVersion": rv}),
        None => json!({}),
    }
}

fn column_json(column: &Column) -> Value {
    json!({
        "name": column.name,
        "type": column.kind,
        "format": column.format,
        "description": column.description,
        "priority": column.priority,
    })
}

/// The response of a read: converted when `render` says so.
pub fn respond(
    render: Option<&Render>,
    body: &Value,
    convert: impl Fn(&Render, &Value) -> Value,
) -> Response {
    let (content_type, body) = match render {
        Some(render) => (render.content_type(), convert(render, body)),
        None => ("application/json".to_string(), body.clone()),
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, content_type)],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use knit_api::registry;

    fn negotiate(accept: &str, shape: Shape, query: Option<&str>) -> Result<Option<Render>> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, accept.parse().unwrap());
        let pods = registry::lookup("", "v1", "pods").unwrap();
        Render::negotiate(pods, &headers, &Params::parse(query), shape)
    }

    const KUBECTL: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn kubectls_accept_header_gets_a_v1_table() {
        let render = negotiate(KUBECTL, Shape::List, None).unwrap().unwrap();
        assert_eq!(render.target, Target::Table);
        assert_eq!(
            render.content_type(),
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        );
        assert_eq!(render.include, Include::Metadata);
    }

    #[test]
    fn plain_and_missing_accepts_get_the_object() {
        assert!(
            negotiate("application/json", Shape::List, None)
                .unwrap()
                .is_none()
        );
        assert!(negotiate("*/*", Shape::Single, None).unwrap().is_none());
        // A clause knit cannot convert to falls through to the next one.
        let render = negotiate(
            "application/json;as=Table;v=v2;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            Shape::List,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(render.version, "v1beta1");
        // Preference by quality.
        let render = negotiate(
            "application/json;q=0.5,application/json;as=Table;v=v1;g=meta.k8s.io",
            Shape::List,
            None,
        )
        .unwrap();
        assert!(render.is_some());
    }

    #[test]
    fn only_unservable_conversions_is_not_acceptable() {
        let err = negotiate(
            "application/json;as=Table;v=v1;g=example.com",
            Shape::List,
            None,
        )
        .unwrap_err();
        assert_eq!(err.code(), 406);
        assert_eq!(err.reason(), "NotAcceptable");
        let err = negotiate(
            "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
            Shape::List,
            None,
        )
        .unwrap_err();
        assert_eq!(err.code(), 406);
    }

    #[test]
    fn include_object_is_checked() {
        let render = negotiate(KUBECTL, Shape::List, Some("includeObject=Object"))
            .unwrap()
            .unwrap();
        assert_eq!(render.include, Include::Object);
        let err = negotiate(KUBECTL, Shape::List, Some("includeObject=All")).unwrap_err();
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn watch_events_send_columns_once() {
        let render = negotiate(KUBECTL, Shape::Watch, None).unwrap().unwrap();
        let pod =
            json!({"metadata": {"name": "a", "resourceVersion": "7"}, "spec": {"containers": []}});
        let first = render.event_object(&pod);
        let second = render.event_object(&pod);
        assert!(
            first["columnDefinitions"]
                .as_array()
                .is_some_and(|c| c.len() == 9)
        );
        assert!(second["columnDefinitions"].is_null());
        assert_eq!(second["rows"][0]["cells"][0], "a");
        assert_eq!(second["metadata"]["resourceVersion"], "7");
        assert_eq!(second["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
