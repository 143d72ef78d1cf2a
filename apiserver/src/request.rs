//! Turning an HTTP request into what the handlers work with: which resource
//! and object the path names, the query parameters, and the decoded body.

use std::collections::HashMap;

use axum::body::Body;
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use knit_api::openapi::{self, unknown_fields};
use knit_api::registry::{self, Resource};
use knit_api::{ApiError, Result};
use serde_json::Value;

use crate::store::{Key, StoreError};
use crate::warning;

/// The largest request body accepted, as kube-apiserver's limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What an API path names: a resource, and maybe a namespace, an object and
/// one of its subresources.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// Parses the segments after `/api/v1/` or `/apis/<group>/<version>/`.
    pub fn parse(group: &str, version: &str, rest: &[&str]) -> Result<Target> {
        let resolve = |plural: &str| {
            registry::lookup(group, version, plural).ok_or(ApiError::UnknownResource)
        };
        let (namespace, rest) = match rest {
            // `namespaces/<ns>/<plural>...` addresses objects in a namespace;
            // `namespaces/<name>/status|finalize` a namespace's subresource.
            ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
                (Some(ns.to_string()), [&[*plural][..], tail].concat())
            }
            _ => (None, rest.to_vec()),
        };
        let target = match rest.as_slice() {
            [plural] => Target {
                resource: resolve(plural)?,
                namespace,
                name: None,
                subresource: None,
            },
            [plural, name] => Target {
                resource: resolve(plural)?,
                namespace,
                name: Some(name.to_string()),
                subresource: None,
            },
            [plural, name, sub] => Target {
                resource: resolve(plural)?,
                namespace,
                name: Some(name.to_string()),
                subresource: Some(sub.to_string()),
            },
            _ => return Err(ApiError::UnknownResource),
        };
        let scoped_right = match (&target.namespace, &target.name) {
            (Some(_), _) => target.resource.namespaced,
            // A namespaced object must be addressed inside its namespace.
            (None, Some(_)) => !target.resource.namespaced,
            (None, None) => true,
        };
        let sub_known = target
            .subresource
            .as_deref()
            .is_none_or(|sub| target.resource.has_subresource(sub));
        if !scoped_right || !sub_known {
            return Err(ApiError::UnknownResource);
        }
        Ok(target)
    }

    /// The storage key of the named object.
    pub fn key(&self) -> Key {
        Key::new(
            self.resource.storage_name(),
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }

    /// The key of another object of the same resource and namespace.
    pub fn key_for(&self, name: &str) -> Key {
        Key::new(
            self.resource.storage_name(),
            self.namespace.clone().unwrap_or_default(),
            name,
        )
    }

    pub fn not_found(&self, name: &str) -> ApiError {
        ApiError::NotFound {
            group: self.resource.group.into(),
            resource: self.resource.plural.into(),
            name: name.into(),
        }
    }

    /// Maps a store failure on `name` to the API error a client expects.
    pub fn store_error(&self, name: &str, err: StoreError) -> ApiError {
        let group = self.resource.group.to_string();
        let resource = self.resource.plural.to_string();
        match err {
            StoreError::NotFound => self.not_found(name),
            StoreError::AlreadyExists => ApiError::AlreadyExists {
                group,
                resource,
                name: name.into(),
            },
            StoreError::Conflict(_) => self.conflict(name, CONFLICT_MODIFIED),
            StoreError::Compacted {
                requested,
                compacted,
            } => ApiError::Expired(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            StoreError::Backend(message) => ApiError::Internal(message),
        }
    }

    pub fn conflict(&self, name: &str, why: &str) -> ApiError {
        let qualified = if self.resource.group.is_empty() {
            self.resource.plural.to_string()
        } else {
            format!("{}.{}", self.resource.plural, self.resource.group)
        };
        ApiError::Conflict {
            group: self.resource.group.into(),
            resource: self.resource.plural.into(),
            name: name.into(),
            message: format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
        }
    }
}

/// The reason kube-apiserver gives for a stale `resourceVersion`.
pub const CONFLICT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// Query parameters, by name (the last one wins, as in Go's `Get`), and the
/// request's User-Agent (what names the field manager when the query does
/// not).
#[derive(Debug, Clone, Default)]
pub struct Params(HashMap<String, String>, Option<String>);

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        let pairs = query.map(|q| {
            form_urlencoded_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        });
        Params(pairs.unwrap_or_default(), None)
    }

    /// Remembers the request's User-Agent.
    pub fn with_user_agent(mut self, headers: &HeaderMap) -> Params {
        self.1 = headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self
    }

    /// The manager a write is recorded for in `managedFields`:
    /// `?fieldManager=`, else the program name of the User-Agent
    /// (`kubectl/v1.35.0 (linux/amd64) ...` gives `kubectl`), at most 128
    /// bytes, as kube-apiserver defaults it.
    pub fn field_manager(&self) -> String {
        if let Some(manager) = self.get("fieldManager") {
            return manager.to_string();
        }
        let agent = self.1.as_deref().unwrap_or_default();
        let program = agent.split('/').next().unwrap_or_default();
        let mut end = program.len().min(128);
        while !program.is_char_boundary(end) {
            end -= 1;
        }
        program[..end].to_string()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// A boolean parameter: `1`, `true` (any case) are true.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    /// An integer parameter; a malformed one is a 400.
    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "invalid value {v:?} for parameter {name}: not an integer"
                    ))
                })
            })
            .transpose()
    }

    /// Whether `dryRun=All` asks that nothing be stored.
    pub fn dry_run(&self) -> Result<bool> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!(
                "Invalid dry run value: {other:?}: supported values: \"All\""
            ))),
        }
    }

    /// How unknown and duplicate fields in the body are handled
    /// (`fieldValidation`); kube-apiserver's default is `Warn`.
    pub fn field_validation(&self) -> Result<FieldValidation> {
        match self.get("fieldValidation") {
            None | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"\", \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// What `?fieldValidation=` asks for unknown fields (dropped in every
/// mode, as the Go decoder drops them) and duplicate fields of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in a `Warning` header each.
    Warn,
    /// Fail the request with a 400 naming them all.
    Strict,
}

/// The field check of one write: the mode and the duplicate keys of its
/// body, found before the body is parsed into a `Value` (which keeps only
/// the last of them).
#[derive(Debug, Clone)]
pub struct FieldCheck {
    mode: FieldValidation,
    duplicates: Vec<String>,
}

impl FieldCheck {
    /// Reads the mode from `params` (a bad one is a 400) and, unless it is
    /// `Ignore`, the duplicate keys of a JSON or YAML `body`.
    pub fn new(params: &Params, body: &[u8], body_type: BodyType) -> Result<FieldCheck> {
        let mode = params.field_validation()?;
        let duplicates = match (mode, body_type) {
            (FieldValidation::Ignore, _) | (_, BodyType::JsonPatch) => Vec::new(),
            (_, BodyType::Yaml | BodyType::ApplyPatch) => {
                unknown_fields::duplicate_fields(serde_norway::Deserializer::from_slice(body))
            }
            _ => unknown_fields::duplicate_fields(&mut serde_json::Deserializer::from_slice(body)),
        };
        Ok(FieldCheck { mode, duplicates })
    }

    /// Drops the fields of `object` (an object of `resource`) its schema
    /// does not have and reports them with the body's duplicates: nothing,
    /// warnings, or (Strict) a 400 in kube's words, before anything is
    /// stored. Fields `previous` (the stored object a patch started from)
    /// already had are not the client's doing and are dropped silently.
    pub fn check(
        &self,
        resource: &Resource,
        object: &mut Value,
        previous: Option<&Value>,
    ) -> Result<()> {
        let Some(gv) = openapi::group_version(resource.group, resource.version) else {
            return Ok(());
        };
        let Some(schema) = gv.schema_name(resource.kind) else {
            return Ok(());
        };
        let mut unknown = unknown_fields::prune_unknown(&gv.schemas, schema, object);
        if let Some(previous) = previous.filter(|_| !unknown.is_empty()) {
            let old = unknown_fields::prune_unknown(&gv.schemas, schema, &mut previous.clone());
            unknown.retain(|path| !old.contains(path));
        }
        let problems: Vec<String> = self
            .duplicates
            .iter()
            .map(|path| format!("duplicate field {path:?}"))
            .chain(unknown.iter().map(|path| format!("unknown field {path:?}")))
            .collect();
        match self.mode {
            _ if problems.is_empty() => Ok(()),
            FieldValidation::Ignore => Ok(()),
            FieldValidation::Warn => {
                problems.into_iter().for_each(warning::add);
                Ok(())
            }
            FieldValidation::Strict => Err(ApiError::BadRequest(format!(
                "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
                problems.join(", "),
                kind = resource.kind,
                version = resource.version,
            ))),
        }
    }
}

fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Json,
    Yaml,
    MergePatch,
    JsonPatch,
    StrategicMergePatch,
    ApplyPatch,
    /// `application/vnd.kubernetes.protobuf`, what kubectl's typed clients
    /// send; decoded into the JSON form (answers stay JSON).
    Protobuf,
}

pub fn body_type(headers: &HeaderMap) -> Result<BodyType> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Ok(match essence.as_str() {
        "application/json" | "" | "*/*" => BodyType::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => BodyType::Yaml,
        "application/merge-patch+json" => BodyType::MergePatch,
        "application/json-patch+json" => BodyType::JsonPatch,
        "application/strategic-merge-patch+json" => BodyType::StrategicMergePatch,
        "application/apply-patch+yaml" => BodyType::ApplyPatch,
        "application/vnd.kubernetes.protobuf" => BodyType::Protobuf,
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                accepted: "application/json, application/yaml, application/vnd.kubernetes.protobuf"
                    .into(),
            });
        }
    })
}

/// Reads the whole body, refusing one over the limit with a 413.
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes> {
    let too_large = ApiError::RequestEntityTooLarge {
        limit: MAX_BODY_BYTES,
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(too_large);
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large)
}

/// Decodes an object body (JSON, YAML or protobuf) into a JSON object;
/// anything that is not one is a 400 and nothing is stored.
pub fn decode_object(body: &[u8], kind: BodyType) -> Result<Value> {
    let value: Value = match kind {
        BodyType::Yaml | BodyType::ApplyPatch => serde_norway::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?,
        BodyType::Protobuf => knit_api::protobuf::decode_object(body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding protobuf body: {e}")))?,
        _ => serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body of the request must be a JSON or YAML object".into(),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_targets() {
        let t = Target::parse(
            "",
            "v1",
            &["namespaces", "default", "pods", "web", "status"],
        )
        .unwrap();
        assert_eq!(t.resource.kind, "Pod");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("status"));

        let ns = Target::parse("", "v1", &["namespaces", "kube-system", "status"]).unwrap();
        assert_eq!(ns.resource.kind, "Namespace");
        assert_eq!(ns.name.as_deref(), Some("kube-system"));

        let all = Target::parse("", "v1", &["pods"]).unwrap();
        assert!(all.namespace.is_none() && all.name.is_none());

        assert!(
            Target::parse("", "v1", &["pods", "web"]).is_err(),
            "namespaced object outside a namespace"
        );
        assert!(Target::parse("", "v1", &["namespaces", "default", "nodes"]).is_err());
        assert!(
            Target::parse("", "v1", &["namespaces", "default", "pods", "web", "scale"]).is_err()
        );
        assert!(Target::parse("", "v1", &["widgets"]).is_err());
    }

    #[test]
    fn query_parameters_are_decoded() {
        let p = Params::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&limit=5",
        ));
        assert_eq!(p.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(p.flag("watch"));
        assert_eq!(p.int("limit").unwrap(), Some(5));
        assert!(Params::parse(Some("limit=x")).int("limit").is_err());
    }
}
