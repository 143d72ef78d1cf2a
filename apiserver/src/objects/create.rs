//! Create: server-owned metadata, `generateName`, namespace admission.

use std::sync::Arc;

use http::StatusCode;
use knit_api::apply::record_update;
use knit_api::registry::Resource;
use knit_api::{ApiError, Result};
use rand::Rng;
use serde_json::{Value, json};

use super::{Manager, admit, check_kind};
use crate::AppState;
use crate::meta::{self, is_deleting, metadata_mut};
use crate::namespaces::Phase;
use crate::request::{BodyType, FieldCheck, Params, Target, decode_object};
use crate::store::{Key, StoreError};

/// The suffix Kubernetes appends to `generateName`.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Fails unless the namespace exists and is not being deleted.
async fn check_namespace(
    state: &AppState,
    resource: &Resource,
    namespace: &str,
    name: &str,
) -> Result<()> {
    let phase = match state.namespaces.lookup(namespace) {
        Some(phase) => Some(phase),
        // Not cached (yet): ask the store.
        None => state
            .store
            .get(&Key::new("namespaces", "", namespace))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map(|ns| {
                if is_deleting(&ns.value) {
                    Phase::Terminating
                } else {
                    Phase::Active
                }
            }),
    };
    match phase {
        None => Err(ApiError::NotFound {
            group: String::new(),
            resource: "namespaces".into(),
            name: namespace.into(),
        }),
        Some(Phase::Terminating) => Err(ApiError::Forbidden(format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
            resource.plural
        ))),
        Some(Phase::Active) => Ok(()),
    }
}

/// POST to a collection.
pub async fn create(
    state: &AppState,
    target: &Target,
    params: &Params,
    body: &[u8],
    body_type: BodyType,
) -> Result<(StatusCode, Arc<Value>)> {
    let mut object = decode_object(body, body_type)?;
    FieldCheck::new(params, body, body_type)?.check(target.resource, &mut object, None)?;
    let manager = Manager::of(target.resource, params, "CreateOptions")?;
    create_object(state, target, params, object, Some(&manager)).await
}

/// Creates a decoded object; with a `manager`, records its fields as that
/// manager's `Update` (an apply that creates has recorded its own).
pub(super) async fn create_object(
    state: &AppState,
    target: &Target,
    params: &Params,
    mut object: Value,
    manager: Option<&Manager>,
) -> Result<(StatusCode, Arc<Value>)> {
    let resource = target.resource;
    check_kind(resource, &mut object)?;
    let url_ns = target.namespace.clone().unwrap_or_default();
    {
        let metadata = metadata_mut(&mut object);
        match metadata.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != url_ns && resource.namespaced => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            _ => {}
        }
        if resource.namespaced {
            metadata.insert("namespace".into(), json!(url_ns));
        } else {
            metadata.remove("namespace");
        }
        for server_owned in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            metadata.remove(server_owned);
        }
        if resource.tracks_generation() {
            metadata.insert("generation".into(), json!(1));
        } else {
            metadata.remove("generation");
        }
        // From the thread's generator, not a getrandom call per object.
        let uid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        metadata.insert("uid".into(), json!(uid.to_string()));
        metadata.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
    }
    if resource.resets_status_on_create {
        object.as_object_mut().map(|o| o.remove("status"));
        knit_api::defaults::initial_status(resource, &mut object);
    }
    let generate_name = object["metadata"]["generateName"]
        .as_str()
        .map(str::to_string);
    let needs_name = meta::name(&object).is_none();
    if needs_name && let Some(prefix) = &generate_name {
        object["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    admit(resource, &mut object, None)?;
    if let Some(manager) = manager {
        record_update(resource.kind, None, &mut object, &manager.writer(None));
    }
    let name = meta::name(&object).unwrap_or_default().to_string();
    if resource.namespaced {
        check_namespace(state, resource, &url_ns, &name).await?;
    }
    // Taken before the write and given back if it fails (or is a dry run).
    let reservation = state.services.admit(resource, None, &mut object)?;
    if params.dry_run()? {
        return Ok((StatusCode::CREATED, Arc::new(object)));
    }
    // A generated name that collides is retried with fresh suffixes.
    let mut attempts = if needs_name && generate_name.is_some() {
        3
    } else {
        1
    };
    loop {
        let name = meta::name(&object).unwrap_or_default().to_string();
        // Kept for another try only when one may follow.
        let value = if attempts > 1 {
            object.clone()
        } else {
            std::mem::take(&mut object)
        };
        match state.store.create(target.key_for(&name), value).await {
            Ok(stored) => {
                if let Some(reservation) = reservation {
                    reservation.commit();
                }
                return Ok((StatusCode::CREATED, stored.value));
            }
            Err(StoreError::AlreadyExists) if attempts > 1 => {
                attempts -= 1;
                let prefix = generate_name.as_deref().unwrap_or_default();
                object["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
            }
            Err(err) => return Err(target.store_error(&name, err)),
        }
    }
}
