//! Deletes: preconditions, finalizers (an object stays, marked, until they
//! are gone), and collection deletes.

use knit_api::registry::Resource;
use knit_api::status::success_status;
use knit_api::{ApiError, Result};
use serde_json::{Value, json};

use super::list::list;
use super::read;
use super::update::{pending_finalizers, remove};
use crate::AppState;
use crate::meta::{self, is_deleting, metadata_mut};
use crate::request::{Params, Target};
use crate::store::{Object, Preconditions, StoreError};

/// DeleteOptions from the body and the query.
#[derive(Debug, Default)]
pub struct DeleteOptions {
    pub preconditions: Preconditions,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(params: &Params, body: &[u8]) -> Result<DeleteOptions> {
        let mut options = DeleteOptions {
            dry_run: params.dry_run()?,
            ..Default::default()
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(options);
        }
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
        Ok(options)
    }
}

/// DELETE of one object. Objects with finalizers are marked with a
/// `deletionTimestamp` and stay until their finalizers are removed.
pub async fn delete(state: &AppState, target: &Target, options: &DeleteOptions) -> Result<Value> {
    let resource = target.resource;
    let name = target.name.clone().unwrap_or_default();
    loop {
        let current = read(state, target).await?;
        check_preconditions(target, &name, &options.preconditions, &current)?;
        if !pending_finalizers(resource, &current.value).is_empty() {
            if is_deleting(&current.value) {
                return Ok((*current.value).clone());
            }
            let mut marked = (*current.value).clone();
            let metadata = metadata_mut(&mut marked);
            metadata.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
            meta::bump_generation(resource, &current.value, &mut marked);
            if resource.kind == "Namespace" {
                marked["status"]["phase"] = json!("Terminating");
            }
            if options.dry_run {
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
