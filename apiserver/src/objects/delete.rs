//! Deletes: preconditions, finalizers (an object stays, marked, until they
//! are gone), deletion propagation (`propagationPolicy` and the deprecated
//! `orphanDependents`, carried out by the garbage collector through the
//! `orphan` and `foregroundDeletion` finalizers), and collection deletes.

use knit_api::registry::Resource;
use knit_api::status::success_status;
use knit_api::{ApiError, Cause, Result};
use serde_json::{Value, json};

use super::list::list;
use super::read;
use super::update::{pending_finalizers, remove};
use crate::AppState;
use crate::meta::{self, finalizers, is_deleting, metadata_mut};
use crate::request::{Params, Target};
use crate::store::{Object, Preconditions, StoreError};

/// The finalizer that has the garbage collector remove the object from its
/// dependents' owner references before the object goes.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that keeps the object until the garbage collector has
/// deleted every dependent that blocks its owner's deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// How a delete treats the object's dependents (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents lose their reference to the object and stay.
    Orphan,
    /// The object goes at once; the garbage collector deletes the
    /// dependents afterwards.
    Background,
    /// The object stays until its blocking dependents are deleted.
    Foreground,
}

impl Propagation {
    const NAMES: [(&'static str, Propagation); 3] = [
        ("Foreground", Propagation::Foreground),
        ("Background", Propagation::Background),
        ("Orphan", Propagation::Orphan),
    ];

    fn parse(name: &str) -> Option<Propagation> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
    }
}

/// DeleteOptions from the body and the query.
#[derive(Debug, Default)]
pub struct DeleteOptions {
    pub preconditions: Preconditions,
    pub dry_run: bool,
    /// `propagationPolicy`, when given.
    pub propagation: Option<Propagation>,
    /// The deprecated `orphanDependents`, when given.
    pub orphan_dependents: Option<bool>,
}

impl DeleteOptions {
    /// Reads the options; what the body sets wins over the query. A policy
    /// kube-apiserver does not know, or both `propagationPolicy` and
    /// `orphanDependents`, is a 422 on `DeleteOptions`; a value of the
    /// wrong type a 400.
    pub fn parse(params: &Params, body: &[u8]) -> Result<DeleteOptions> {
        let mut options = DeleteOptions {
            dry_run: params.dry_run()?,
            ..Default::default()
        };
        let mut policy = params.get("propagationPolicy").map(str::to_string);
        options.orphan_dependents = match params.get("orphanDependents") {
            None => None,
            Some(v) if v == "1" || v.eq_ignore_ascii_case("true") => Some(true),
            Some(v) if v == "0" || v.eq_ignore_ascii_case("false") => Some(false),
            Some(v) => {
                return Err(ApiError::BadRequest(format!(
                    "invalid value {v:?} for parameter orphanDependents: not a boolean"
                )));
            }
        };
        if !body.iter().all(u8::is_ascii_whitespace) {
            let body: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?;
            let pre = &body["preconditions"];
            options.preconditions.uid = pre["uid"].as_str().map(str::to_string);
            options.preconditions.rev = match pre["resourceVersion"].as_str() {
                Some(rv) => Some(rv.parse().map_err(|_| {
                    ApiError::BadRequest(format!("invalid resourceVersion precondition {rv:?}"))
                })?),
                None => None,
            };
            if let Some(list) = body["dryRun"].as_array() {
                options.dry_run |= list.iter().any(|v| v == "All");
            }
            match &body["propagationPolicy"] {
                Value::Null => {}
                Value::String(p) => policy = Some(p.clone()),
                other => return Err(wrong_type("propagationPolicy", "string", other)),
            }
            match &body["orphanDependents"] {
                Value::Null => {}
                Value::Bool(b) => options.orphan_dependents = Some(*b),
                other => return Err(wrong_type("orphanDependents", "bool", other)),
            }
        }
        let mut causes = Vec::new();
        if let Some(policy) = &policy {
            if options.orphan_dependents.is_some() {
                causes.push(Cause::invalid(
                    "propagationPolicy",
                    &json!(policy),
                    "orphanDependents and deletionPropagation cannot be both set",
                ));
            }
            options.propagation = Propagation::parse(policy);
            if options.propagation.is_none() {
                let mut supported: Vec<&str> = Propagation::NAMES.iter().map(|(n, _)| *n).collect();
                supported.push("nil");
                causes.push(Cause::not_supported(
                    "propagationPolicy",
                    &json!(policy),
                    &supported,
                ));
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::Invalid {
                group: "meta.k8s.io".into(),
                kind: "DeleteOptions".into(),
                name: String::new(),
                causes,
            });
        }
        Ok(options)
    }

    /// The policy the options ask for explicitly, `orphanDependents` first
    /// (`false` meaning "not orphaned", i.e. background).
    fn explicit_policy(&self) -> Option<Propagation> {
        match self.orphan_dependents {
            Some(true) => Some(Propagation::Orphan),
            Some(false) => Some(Propagation::Background),
            None => self.propagation,
        }
    }
}

fn wrong_type(field: &str, want: &str, got: &Value) -> ApiError {
    ApiError::BadRequest(format!(
        "invalid DeleteOptions: json: cannot unmarshal {} into Go struct field DeleteOptions.{field} of type {want}",
        match got {
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            _ => "object",
        }
    ))
}

/// The finalizers an object carries after a delete with `options`, as
/// kube-apiserver decides them: an explicit policy wins, else a
/// propagation finalizer the object already has is kept (a second delete
/// without options changes nothing); `Background` carries neither. The
/// current list is returned unchanged when the set stays the same.
pub fn propagation_finalizers(current: &[String], options: &DeleteOptions) -> Vec<String> {
    let from_finalizers = || {
        current.iter().find_map(|f| match f.as_str() {
            ORPHAN_FINALIZER => Some(Propagation::Orphan),
            FOREGROUND_FINALIZER => Some(Propagation::Foreground),
            _ => None,
        })
    };
    let policy = options.explicit_policy().or_else(from_finalizers);
    let mut wanted: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN_FINALIZER && *f != FOREGROUND_FINALIZER)
        .cloned()
        .collect();
    match policy {
        Some(Propagation::Orphan) => wanted.push(ORPHAN_FINALIZER.into()),
        Some(Propagation::Foreground) => wanted.push(FOREGROUND_FINALIZER.into()),
        Some(Propagation::Background) | None => {}
    }
    let same = wanted.len() == current.len() && wanted.iter().all(|f| current.contains(f));
    if same { current.to_vec() } else { wanted }
}

/// DELETE of one object. The propagation policy may add the `orphan` or
/// `foregroundDeletion` finalizer (or, for an object already being
/// deleted, switch between them or drop them); an object left with
/// finalizers is marked with a `deletionTimestamp` and stays until they are
/// removed, one without is deleted at once.
pub async fn delete(state: &AppState, target: &Target, options: &DeleteOptions) -> Result<Value> {
    let resource = target.resource;
    let name = target.name.clone().unwrap_or_default();
    loop {
        let current = read(state, target).await?;
        check_preconditions(target, &name, &options.preconditions, &current)?;
        let mut marked = (*current.value).clone();
        let had = finalizers(&current.value);
        let wanted = propagation_finalizers(&had, options);
        if wanted != had {
            let metadata = metadata_mut(&mut marked);
            if wanted.is_empty() {
                metadata.remove("finalizers");
            } else {
                metadata.insert("finalizers".into(), json!(wanted));
            }
        }
        if !pending_finalizers(resource, &marked).is_empty() {
            if !is_deleting(&marked) {
                let metadata = metadata_mut(&mut marked);
                metadata.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
                metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
                meta::bump_generation(resource, &current.value, &mut marked);
                if resource.kind == "Namespace" {
                    marked["status"]["phase"] = json!("Terminating");
                }
            }
            // Already marked as asked, or only trying.
            if options.dry_run || marked == *current.value {
                return Ok(marked);
            }
            let pre = Preconditions {
                rev: Some(current.rev),
                uid: None,
            };
            match state.store.update(target.key(), marked, pre).await {
                Ok(stored) => return Ok((*stored.value).clone()),
                Err(StoreError::Conflict(_)) => continue,
                Err(err) => return Err(target.store_error(&name, err)),
            }
        }
        if options.dry_run {
            return Ok(deleted_response(resource, &current.value));
        }
        match remove(state, target, current.rev).await {
            Err(ApiError::Conflict { .. }) => continue,
            result => return result.map(|deleted| deleted_response(resource, &deleted)),
        }
    }
}

fn check_preconditions(
    target: &Target,
    name: &str,
    pre: &Preconditions,
    current: &Object,
) -> Result<()> {
    let uid = current.value["metadata"]["uid"]
        .as_str()
        .unwrap_or_default();
    if let Some(want) = &pre.uid
        && want != uid
    {
        return Err(target.conflict(
            name,
            &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
        ));
    }
    if let Some(want) = pre.rev
        && want != current.rev
    {
        return Err(target.conflict(
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                current.rev
            ),
        ));
    }
    Ok(())
}

/// What a completed delete answers: pods and services return the deleted
/// object (their storage sets `ReturnDeletedObject` in kube-apiserver, and
/// typed clients decode the answer as the kind), other kinds a success Status.
fn deleted_response(resource: &Resource, deleted: &Value) -> Value {
    if matches!(resource.kind, "Pod" | "Service") {
        return deleted.clone();
    }
    let mut details = json!({
        "name": deleted["metadata"]["name"],
        "kind": resource.plural,
        "uid": deleted["metadata"]["uid"],
    });
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    success_status(details)
}

/// DELETE of a collection: every object the selectors match, each as a
/// single delete would; answers with the list of what was deleted.
pub async fn delete_collection(
    state: &AppState,
    target: &Target,
    params: &Params,
    options: &DeleteOptions,
) -> Result<Value> {
    let listed = list(state, target, &without_paging(params)).await?;
    let mut deleted = Vec::new();
    for item in listed["items"].as_array().cloned().unwrap_or_default() {
        let one = Target {
            namespace: item["metadata"]["namespace"]
                .as_str()
                .map(str::to_string)
                .filter(|s| !s.is_empty()),
            name: item["metadata"]["name"].as_str().map(str::to_string),
            ..target.clone()
        };
        match delete(state, &one, options).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => deleted.push(item),
            Err(err) => return Err(err),
        }
    }
    Ok(json!({
        "kind": target.resource.list_kind(),
        "apiVersion": target.resource.api_version(),
        "metadata": {"resourceVersion": state.store.current_rev().to_string()},
        "items": deleted,
    }))
}

fn without_paging(params: &Params) -> Params {
    let mut params = params.clone();
    params.remove("limit");
    params.remove("continue");
    params
}
