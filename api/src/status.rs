//! Errors as Kubernetes reports them: every failure the API can return, and
//! its `kind: Status` body with the reason, HTTP code and field causes that
//! kubectl and the client libraries read.

use serde_json::{Value, json};

/// Why one field of an object is rejected (`details.causes[]` of a Status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldValueForbidden`, `FieldValueTooLong`.
    pub reason: &'static str,
    /// The field path, `spec.ports[0].port`.
    pub field: String,
    /// The human part, `Invalid value: 70000: must be between 1 and 65535, inclusive`.
    pub message: String,
}

impl Cause {
    /// A value that is present but wrong: `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {}", value, detail.as_ref()),
        }
    }

    /// A value that must be given and was not.
    pub fn required(field: impl Into<String>, detail: impl AsRef<str>) -> Self {
        let detail = detail.as_ref();
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: if detail.is_empty() {
                "Required value".to_string()
            } else {
                format!("Required value: {detail}")
            },
        }
    }

    /// A value outside a fixed set of choices.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                value,
                quoted.join(", ")
            ),
        }
    }

    /// A value that repeats one given earlier in the same list.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    /// A value that may not be set, or may not be changed.
    pub fn forbidden(field: impl Into<String>, detail: impl AsRef<str>) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {}", detail.as_ref()),
        }
    }

    /// `field: message`, as kube-apiserver joins them in a Status message.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// Every error the API returns, each mapping to one Status reason and code.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ApiError {
    #[error("{}", not_found_message(.group, .resource, .name))]
    NotFound {
        group: String,
        resource: String,
        name: String,
    },
    #[error("{}", already_exists_message(.group, .resource, .name))]
    AlreadyExists {
        group: String,
        resource: String,
        name: String,
    },
    #[error("{message}")]
    Conflict {
        group: String,
        resource: String,
        name: String,
        message: String,
    },
    #[error("{}", invalid_message(.kind, .name, .causes))]
    Invalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<Cause>,
    },
    /// A server-side apply that would change fields other managers own:
    /// a 409 whose causes name each field (`FieldManagerConflict`).
    #[error("{message}")]
    ApplyConflict { message: String, causes: Vec<Cause> },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Expired(String),
    #[error("the request entity is larger than the limit of {limit} bytes")]
    RequestEntityTooLarge { limit: usize },
    #[error(
        "the body of the request was in an unknown format - accepted media types include: {accepted}"
    )]
    UnsupportedMediaType { accepted: String },
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("the server could not find the requested resource")]
    UnknownResource,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// No representation the client accepts (`Accept`) can be produced.
    #[error("{0}")]
    NotAcceptable(String),
    #[error("Internal error occurred: {0}")]
    Internal(String),
}

/// `Result` with the API's error.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn not_found_message(group: &str, resource: &str, name: &str) -> String {
    format!("{} \"{}\" not found", qualified(group, resource), name)
}

fn already_exists_message(group: &str, resource: &str, name: &str) -> String {
    format!("{} \"{}\" already exists", qualified(group, resource), name)
}

fn invalid_message(kind: &str, name: &str, causes: &[Cause]) -> String {
    let parts: Vec<String> = causes.iter().map(Cause::summary).collect();
    match parts.len() {
        0 => format!("{kind} \"{name}\" is invalid"),
        1 => format!("{kind} \"{name}\" is invalid: {}", parts[0]),
        _ => format!("{kind} \"{name}\" is invalid: [{}]", parts.join(", ")),
    }
}

impl ApiError {
    /// The HTTP status code of this error.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::UnknownResource => 404,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Expired(_) => 410,
            ApiError::RequestEntityTooLarge { .. } => 413,
            ApiError::UnsupportedMediaType { .. } => 415,
            ApiError::MethodNotAllowed => 405,
            ApiError::Forbidden(_) => 403,
            ApiError::TooManyRequests(_) => 429,
            ApiError::NotAcceptable(_) => 406,
            ApiError::Internal(_) => 500,
        }
    }

    /// The Status `reason` of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::UnknownResource => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Expired(_) => "Expired",
            ApiError::RequestEntityTooLarge { .. } => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::TooManyRequests(_) => "TooManyRequests",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The full `kind: Status` body.
    pub fn to_status(&self) -> Value {
        let details = match self {
            ApiError::NotFound {
                group,
                resource,
                name,
            }
            | ApiError::AlreadyExists {
                group,
                resource,
                name,
            }
            | ApiError::Conflict {
                group,
                resource,
                name,
                ..
            } => Some(json!({"name": name, "group": group, "kind": resource})),
            ApiError::Invalid {
                group,
                kind,
                name,
                causes,
            } => Some(json!({
                "name": name,
                "group": group,
                "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason,
                    "message": c.message,
                    "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            // kube-apiserver names no object here, only the fields.
            ApiError::ApplyConflict { causes, .. } => Some(json!({
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason,
                    "message": c.message,
                    "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            _ => None,
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(mut details) = details {
            // Kubernetes omits an empty group.
            if details.get("group").is_some_and(|g| g == "") {
                details.as_object_mut().map(|d| d.remove("group"));
            }
            status["details"] = details;
        }
        status
    }
}

/// A `kind: Status` of success, as returned by some deletes.
pub fn success_status(details: Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_names_each_field() {
        let err = ApiError::Invalid {
            group: String::new(),
            kind: "Service".into(),
            name: "x".into(),
            causes: vec![Cause::invalid(
                "spec.ports[0].port",
                &json!(70000),
                "must be between 1 and 65535, inclusive",
            )],
        };
        let status = err.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(
            status["message"],
            "Service \"x\" is invalid: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            status["details"]["causes"][0]["field"],
            "spec.ports[0].port"
        );
        assert!(status["details"].get("group").is_none());
    }

    #[test]
    fn not_found_qualifies_grouped_resources() {
        let err = ApiError::NotFound {
            group: "apps".into(),
            resource: "deployments".into(),
            name: "web".into(),
        };
        assert_eq!(err.to_string(), "deployments.apps \"web\" not found");
        assert_eq!(err.to_status()["details"]["group"], "apps");
        assert_eq!(err.code(), 404);
    }
}
