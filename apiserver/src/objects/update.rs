//! Updates: PUT and PATCH of an object or its status, and the retry loop
//! every read-modify-write of the server goes through.

use std::sync::Arc;

use http::StatusCode;
use knit_api::apply::{self as knit_apply, record_update};
use knit_api::patch::strategic_merge;
use knit_api::registry::Resource;
use knit_api::{ApiError, Cause, Result};
use serde_json::Value;

use super::create::create_object;
use super::{Manager, Part, admit, check_kind, invalid, options_invalid, read};
use crate::AppState;
use crate::meta::{self, finalizers, is_deleting, metadata_mut};
use crate::request::{BodyType, CONFLICT_MODIFIED, FieldCheck, Params, Target, decode_object};
use crate::store::{Preconditions, StoreError};

/// What an update does to the current object: returns the object to store,
/// or `None` when nothing changes.
pub type Mutation<'a> = dyn Fn(&Value) -> Result<Option<Value>> + Send + Sync + 'a;

/// Applies `mutate` to the current object and stores the result, retrying on
/// a concurrent write unless the caller pinned a `resourceVersion` (then a
/// stale one is a 409). An object being deleted whose last finalizer goes
/// is removed instead. Returns the object as stored (or as deleted).
pub async fn guaranteed_update(
    state: &AppState,
    target: &Target,
    pinned_rv: Option<u64>,
    dry_run: bool,
    mutate: &Mutation<'_>,
) -> Result<Arc<Value>> {
    let name = target.name.clone().unwrap_or_default();
    loop {
        let current = read(state, target).await?;
        if pinned_rv.is_some_and(|rv| rv != current.rev) {
            return Err(target.conflict(&name, CONFLICT_MODIFIED));
        }
        let Some(mut updated) = mutate(&current.value)? else {
            return Ok(current.value);
        };
        // The last finalizer of an object being deleted is gone: the object
        // is deleted instead of stored (as kube-apiserver does), so that no
        // object is ever left marked with nothing to remove it, even when
        // the request is cut short.
        if is_deleting(&updated) && pending_finalizers(target.resource, &updated).is_empty() {
            if dry_run {
                return Ok(Arc::new(updated));
            }
            match remove(state, target, current.rev).await {
                Err(ApiError::Conflict { .. }) if pinned_rv.is_none() => continue,
                result => return result.map(|_| Arc::new(updated)),
            }
        }
        let reservation =
            state
                .services
                .admit(target.resource, Some(&current.value), &mut updated)?;
        if dry_run {
            return Ok(Arc::new(updated));
        }
        let pre = Preconditions {
            rev: Some(current.rev),
            uid: None,
        };
        match state.store.update(target.key(), updated, pre).await {
            Ok(stored) => {
                if let Some(reservation) = reservation {
                    reservation.commit();
                }
                let services = &state.services;
                services.release_unused(target.resource, &current.value, Some(&stored.value));
                return Ok(stored.value);
            }
            Err(StoreError::Conflict(_)) if pinned_rv.is_none() => continue,
            Err(err) => return Err(target.store_error(&name, err)),
        }
    }
}

/// Deletes an object known to be at `rev`; a concurrent change is retried
/// by the caller's next reconcile, so it is reported, not hidden.
pub(super) async fn remove(state: &AppState, target: &Target, rev: u64) -> Result<Arc<Value>> {
    let name = target.name.clone().unwrap_or_default();
    let pre = Preconditions {
        rev: Some(rev),
        uid: None,
    };
    match state.store.delete(target.key(), pre).await {
        Ok(deleted) => {
            let services = &state.services;
            services.release_unused(target.resource, &deleted.value, None);
            Ok(deleted.value)
        }
        Err(err) => Err(target.store_error(&name, err)),
    }
}

/// Finalizers that hold an object: `metadata.finalizers`, and for a
/// namespace also `spec.finalizers` (its content must go first).
pub fn pending_finalizers(resource: &Resource, object: &Value) -> Vec<String> {
    let mut pending = finalizers(object);
    if resource.kind == "Namespace"
        && let Some(spec) = object["spec"]["finalizers"].as_array()
    {
        pending.extend(spec.iter().filter_map(|f| f.as_str().map(str::to_string)));
    }
    pending
}

/// Builds the object an update of `part` stores, from the current object
/// and what the client sent; `None` when nothing would change.
pub fn prepare_update(
    resource: &Resource,
    current: &Value,
    mut incoming: Value,
    part: Part,
    url_name: &str,
) -> Result<Option<Value>> {
    check_kind(resource, &mut incoming)?;
    match meta::name(&incoming) {
        Some(name) if name != url_name => {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({name}) does not match the name on the URL ({url_name})"
            )));
        }
        _ => {}
    }
    let mut updated = match part {
        Part::Status => {
            // A status write changes status only.
            let mut updated = current.clone();
            updated["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
            if updated["status"].is_null() {
                updated.as_object_mut().map(|o| o.remove("status"));
            }
            updated
        }
        Part::Main => {
            if resource.has_status() {
                match current.get("status") {
                    Some(status) => incoming["status"] = status.clone(),
                    None => {
                        incoming.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            // Fields the server owns are kept as they are.
            let old_meta = current["metadata"].clone();
            let metadata = metadata_mut(&mut incoming);
            for owned in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(owned) {
                    Some(value) => metadata.insert(owned.into(), value.clone()),
                    None => metadata.remove(owned),
                };
            }
            incoming
        }
    };
    if part == Part::Main {
        let mut causes = Vec::new();
        if is_deleting(current) {
            let old = finalizers(current);
            if finalizers(&updated).iter().any(|f| !old.contains(f)) {
                causes.push(Cause::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if !causes.is_empty() {
            return Err(invalid(resource, &updated, causes));
        }
    }
    admit(resource, &mut updated, Some(current))?;
    if meta::spec_changed(&updated, current) {
        meta::bump_generation(resource, current, &mut updated);
    }
    // The client may or may not echo the resourceVersion; the store sets
    // the new one anyway, so compare (and keep) the current one.
    metadata_mut(&mut updated).insert(
        "resourceVersion".into(),
        current["metadata"]["resourceVersion"].clone(),
    );
    Ok((&updated != current).then_some(updated))
}

fn pinned_rv(object: &Value) -> Result<Option<u64>> {
    meta::resource_version(object)
        .map(|rv| {
            rv.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("invalid resourceVersion {rv:?}: not an integer"))
            })
        })
        .transpose()
}

/// PUT of an object or its status.
pub async fn replace(
    state: &AppState,
    target: &Target,
    params: &Params,
    body: &[u8],
    body_type: BodyType,
    part: Part,
) -> Result<Arc<Value>> {
    let mut incoming = decode_object(body, body_type)?;
    FieldCheck::new(params, body, body_type)?.check(target.resource, &mut incoming, None)?;
    let pinned = pinned_rv(&incoming)?;
    let url_name = target.name.clone().unwrap_or_default();
    let resource = target.resource;
    let manager = Manager::of(resource, params, "UpdateOptions")?;
    guaranteed_update(state, target, pinned, params.dry_run()?, &|current| {
        let updated = prepare_update(resource, current, incoming.clone(), part, &url_name)?;
        Ok(recorded(resource, current, updated, &manager, part))
    })
    .await
}

/// PATCH of an object or its status, with a JSON merge patch, a strategic
/// merge patch (lists merged by their Kubernetes merge keys) or a JSON patch.
pub async fn patch(
    state: &AppState,
    target: &Target,
    params: &Params,
    body: &[u8],
    body_type: BodyType,
    part: Part,
) -> Result<Arc<Value>> {
    enum Patch {
        Merge(Value),
        Strategic(Value),
        Json(json_patch::Patch),
    }
    let patch = match body_type {
        BodyType::MergePatch => Patch::Merge(decode_object(body, BodyType::Json)?),
        BodyType::StrategicMergePatch => Patch::Strategic(decode_object(body, BodyType::Json)?),
        BodyType::JsonPatch => Patch::Json(
            serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("error decoding JSON patch: {e}")))?,
        ),
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                accepted: "application/merge-patch+json, application/json-patch+json, \
                           application/strategic-merge-patch+json"
                    .into(),
            });
        }
    };
    let pinned = match &patch {
        Patch::Merge(value) | Patch::Strategic(value) => pinned_rv(value)?,
        Patch::Json(_) => None,
    };
    if params.get("force").is_some() {
        return Err(options_invalid(
            "PatchOptions",
            "force",
            "Forbidden: may not be specified for non-apply patch".into(),
        ));
    }
    let manager = Manager::of(target.resource, params, "PatchOptions")?;
    let url_name = target.name.clone().unwrap_or_default();
    let resource = target.resource;
    let fields = FieldCheck::new(params, body, body_type)?;
    guaranteed_update(state, target, pinned, params.dry_run()?, &|current| {
        let mut patched = current.clone();
        match &patch {
            Patch::Merge(merge) => json_patch::merge(&mut patched, merge),
            Patch::Strategic(strategic) => {
                patched = strategic_merge(resource.kind, current, strategic)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            }
            Patch::Json(ops) => {
                json_patch::patch(&mut patched, ops).map_err(|e| ApiError::Invalid {
                    group: resource.group.into(),
                    kind: resource.kind.into(),
                    name: url_name.clone(),
                    causes: vec![Cause::invalid("", &Value::Null, e.to_string())],
                })?
            }
        }
        if !patched.is_object() {
            return Err(ApiError::BadRequest(
                "the patch does not result in an object".into(),
            ));
        }
        fields.check(resource, &mut patched, Some(current))?;
        let updated = prepare_update(resource, current, patched, part, &url_name)?;
        Ok(recorded(resource, current, updated, &manager, part))
    })
    .await
}

/// An update with the fields it changed recorded for `manager`; `None`
/// when nothing (managed fields included) changes.
fn recorded(
    resource: &Resource,
    current: &Value,
    updated: Option<Value>,
    manager: &Manager,
    part: Part,
) -> Option<Value> {
    let mut updated = updated?;
    let subresource = (part == Part::Status).then_some("status");
    record_update(
        resource.kind,
        Some(current),
        &mut updated,
        &manager.writer(subresource),
    );
    (&updated != current).then_some(updated)
}

/// PATCH with `application/apply-patch+yaml`: server-side apply of the
/// configuration in the body for `?fieldManager=`. Creates the object when
/// it does not exist (201), else merges it in; fields other managers own
/// that would change are a 409 unless `?force=true`.
pub async fn apply(
    state: &AppState,
    target: &Target,
    params: &Params,
    body: &[u8],
    part: Part,
) -> Result<(StatusCode, Arc<Value>)> {
    let resource = target.resource;
    if params.get("fieldManager").is_none() {
        return Err(options_invalid(
            "PatchOptions",
            "fieldManager",
            "Required value: is required for apply patch".into(),
        ));
    }
    let manager = Manager::of(resource, params, "PatchOptions")?;
    let force = params.flag("force");
    let mut config = decode_object(body, BodyType::ApplyPatch)?;
    FieldCheck::new(params, body, BodyType::ApplyPatch)?.check(resource, &mut config, None)?;
    // Only the names are checked here: a partial configuration is not a
    // whole object, the merged result is checked as any update.
    let api_version = resource.api_version();
    for (field, expected) in [
        ("apiVersion", api_version.as_str()),
        ("kind", resource.kind),
    ] {
        match config[field].as_str() {
            Some(given) if given == expected => {}
            Some(given) => {
                return Err(ApiError::BadRequest(format!(
                    "the {field} in the data ({given}) does not match the expected {field} ({expected})"
                )));
            }
            None => {
                return Err(ApiError::BadRequest(format!(
                    "{field} must be set in an apply configuration"
                )));
            }
        }
    }
    let url_name = target.name.clone().unwrap_or_default();
    match meta::name(&config) {
        Some(name) if name != url_name => {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({name}) does not match the name on the URL ({url_name})"
            )));
        }
        Some(_) => {}
        None => {
            metadata_mut(&mut config).insert("name".into(), Value::from(url_name.clone()));
        }
    }
    let pinned = pinned_rv(&config)?;
    let subresource = (part == Part::Status).then_some("status");
    let writer = manager.writer(subresource);
    loop {
        match read(state, target).await {
            Ok(_) => break,
            Err(ApiError::NotFound { .. }) if part == Part::Main => {
                let object = knit_apply::apply(resource.kind, None, &config, &writer, force)?;
                match create_object(state, target, params, object, None).await {
                    // Created meanwhile by someone else: merge into it.
                    Err(ApiError::AlreadyExists { .. }) => continue,
                    created => return created,
                }
            }
            Err(err) => return Err(err),
        }
    }
    let updated = guaranteed_update(state, target, pinned, params.dry_run()?, &|current| {
        let merged = knit_apply::apply(resource.kind, Some(current), &config, &writer, force)?;
        let fields = merged["metadata"].get("managedFields").cloned();
        let mut updated = prepare_update(resource, current, merged, part, &url_name)?
            .unwrap_or_else(|| current.clone());
        // A status apply stores only the status: its entries come along.
        let metadata = metadata_mut(&mut updated);
        match fields {
            Some(fields) => metadata.insert("managedFields".into(), fields),
            None => metadata.remove("managedFields"),
        };
        Ok(changed_beyond_times(current, &updated).then_some(updated))
    })
    .await?;
    Ok((StatusCode::OK, updated))
}

/// Whether an apply changed more than its managedFields timestamps: the
/// merge compares the configuration before defaulting, so a config that
/// leaves out a defaulted field (an Endpoints port's `protocol`) looks like
/// a change there and bumps its entry's time although the object stays the
/// same. Such an apply is a no-op, as in Kubernetes.
fn changed_beyond_times(current: &Value, updated: &Value) -> bool {
    let without_times = |object: &Value| {
        let mut object = object.clone();
        for entry in object["metadata"]["managedFields"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            entry.as_object_mut().map(|e| e.remove("time"));
        }
        object
    };
    updated != current && without_times(updated) != without_times(current)
}
