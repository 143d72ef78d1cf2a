//! The generic path every resource shares: create, get, list, update,
//! patch and delete, with kube-apiserver's semantics (defaulting and
//! validation, optimistic concurrency, status kept apart from the rest,
//! finalizers, consistent paginated lists). One module per verb family;
//! what they share is here.

mod create;
mod delete;
mod list;
mod update;

use std::sync::Arc;

use knit_api::apply::{Writer, managed::check_manager_name};
use knit_api::registry::Resource;
use knit_api::{ApiError, Cause, Result, defaults, validation};
use serde_json::{Value, json};

use crate::AppState;
use crate::meta;
use crate::request::{Params, Target};
use crate::store::Object;

pub use create::create;
pub use delete::{DeleteOptions, delete, delete_collection};
pub use list::{Filter, key_of, list};
pub use update::{
    Mutation, apply, guaranteed_update, patch, pending_finalizers, prepare_update, replace,
};

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but `status` (for kinds with a status subresource).
    Main,
    /// Only `status`.
    Status,
}

/// Sets `apiVersion`/`kind` and checks the body names this resource and
/// decodes into its type; a mismatch or a wrong type is a 400.
pub(super) fn check_kind(resource: &Resource, object: &mut Value) -> Result<()> {
    let api_version = resource.api_version();
    if let Some(given) = object["apiVersion"].as_str().filter(|s| !s.is_empty())
        && given != api_version
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({given}) does not match the expected API version ({api_version})"
        )));
    }
    if let Some(given) = object["kind"].as_str().filter(|s| !s.is_empty())
        && given != resource.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({given}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(resource.kind);
    resource.check_shape(object).map_err(|e| {
        ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
            kind = resource.kind,
            version = resource.version
        ))
    })
}

/// Defaults then validates an object about to be stored.
pub(super) fn admit(resource: &Resource, object: &mut Value, old: Option<&Value>) -> Result<()> {
    if let Some(old) = old {
        crate::services::prepare_update(resource, old, object);
    }
    defaults::apply_defaults(resource, object);
    let causes = validation::validate(resource, object, old);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(resource, object, causes))
    }
}

pub(crate) fn invalid(resource: &Resource, object: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        group: resource.group.into(),
        kind: resource.kind.into(),
        name: meta::name(object).unwrap_or_default().into(),
        causes,
    }
}

/// GET of one object.
pub async fn get(state: &AppState, target: &Target) -> Result<Arc<Value>> {
    Ok(read(state, target).await?.value)
}

/// Reads the object a target names, 404 when absent.
pub async fn read(state: &AppState, target: &Target) -> Result<Object> {
    let name = target.name.as_deref().unwrap_or_default();
    state
        .store
        .get(&target.key())
        .await
        .map_err(|e| target.store_error(name, e))?
        .ok_or_else(|| target.not_found(name))
}

/// Who a write is recorded for in `managedFields`, and when.
#[derive(Debug, Clone)]
pub struct Manager {
    name: String,
    api_version: String,
    time: String,
    status_apart: bool,
}

impl Manager {
    /// The manager of a write to `resource`: `?fieldManager=` or the
    /// User-Agent's program. A name that is too long or not printable is a
    /// 422 on the request's options (`CreateOptions`, `PatchOptions`, ...).
    pub fn of(resource: &Resource, params: &Params, options: &str) -> Result<Manager> {
        let name = params.field_manager();
        if let Some(problem) = check_manager_name(&name) {
            return Err(options_invalid(options, "fieldManager", problem));
        }
        Ok(Manager {
            name,
            api_version: resource.api_version(),
            time: meta::now_rfc3339(),
            status_apart: resource.has_status(),
        })
    }

    /// The writer for a write to the object or one of its subresources.
    pub fn writer<'a>(&'a self, subresource: Option<&'a str>) -> Writer<'a> {
        Writer {
            manager: &self.name,
            api_version: &self.api_version,
            subresource,
            time: &self.time,
            status_apart: self.status_apart,
        }
    }
}

/// A 422 about the request's options rather than the object, e.g.
/// `PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value`.
pub(super) fn options_invalid(options: &str, field: &str, message: String) -> ApiError {
    ApiError::Invalid {
        group: "meta.k8s.io".into(),
        kind: options.into(),
        name: String::new(),
        causes: vec![Cause {
            reason: if message.starts_with("Required") {
                "FieldValueRequired"
            } else if message.starts_with("Forbidden") {
                "FieldValueForbidden"
            } else if message.starts_with("Too long") {
                "FieldValueTooLong"
            } else {
                "FieldValueInvalid"
            },
            field: field.into(),
            message,
        }],
    }
}
