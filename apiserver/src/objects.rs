//! The generic path every resource shares: create, get, list, update,
//! patch and delete, with kube-apiserver's semantics (defaulting and
//! validation, optimistic concurrency, status kept apart from the rest,
//! finalizers, consistent paginated lists).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use knit_api::registry::{self, Resource};
use knit_api::selector::{FieldSelector, LabelSelector};
use knit_api::status::success_status;
use knit_api::{ApiError, Cause, Result, defaults, validation};
use rand::Rng;
use serde_json::{Value, json};

use crate::AppState;
use crate::meta::{self, finalizers, is_deleting, metadata_mut};
use crate::namespaces::Phase;
use crate::request::{BodyType, CONFLICT_MODIFIED, Params, Target, decode_object};
use crate::store::{Key, ListQuery, Object, Preconditions, StoreError};

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
fn check_kind(resource: &Resource, object: &mut Value) -> Result<()> {
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
fn admit(resource: &Resource, object: &mut Value, old: Option<&Value>) -> Result<()> {
    defaults::apply_defaults(resource, object);
    let causes = validation::validate(resource, object, old);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(resource, object, causes))
    }
}

fn invalid(resource: &Resource, object: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        group: resource.group.into(),
        kind: resource.kind.into(),
        name: meta::name(object).unwrap_or_default().into(),
        causes,
    }
}

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
    let resource = target.resource;
    let mut object = decode_object(body, body_type)?;
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
    }
    let generate_name = object["metadata"]["generateName"]
        .as_str()
        .map(str::to_string);
    let needs_name = meta::name(&object).is_none();
    if needs_name && let Some(prefix) = &generate_name {
        object["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    admit(resource, &mut object, None)?;
    let name = meta::name(&object).unwrap_or_default().to_string();
    if resource.namespaced {
        check_namespace(state, resource, &url_ns, &name).await?;
    }
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
            Ok(stored) => return Ok((StatusCode::CREATED, stored.value)),
            Err(StoreError::AlreadyExists) if attempts > 1 => {
                attempts -= 1;
                let prefix = generate_name.as_deref().unwrap_or_default();
                object["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
            }
            Err(err) => return Err(target.store_error(&name, err)),
        }
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

/// A `continue` token: where the next page starts and at which revision.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
}

fn encode_continue(token: &ContinueToken) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<ContinueToken> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::BadRequest(format!("continue key is not valid: {token:?}")))
}

/// Label and field selectors of a list or watch, checked once.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn parse(resource: &Resource, params: &Params) -> Result<Filter> {
        let labels = LabelSelector::parse(params.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldSelector::parse(params.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let Some(field) = fields.fields().find(|f| !resource.field_selectable(f)) {
            return Err(ApiError::BadRequest(format!(
                "field label not supported: {field}"
            )));
        }
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object)
            && self
                .fields
                .matches(|field| registry::field_value(object, field))
    }
}

/// GET of a collection (without `watch`).
pub async fn list(state: &AppState, target: &Target, params: &Params) -> Result<Value> {
    let resource = target.resource;
    let filter = Filter::parse(resource, params)?;
    let limit = params.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let (mut at_rev, mut after) = (None, None);
    if let Some(token) = params.get("continue") {
        let token = decode_continue(token)?;
        at_rev = Some(token.rv);
        after = Some((token.ns, token.name));
    } else if params.get("resourceVersionMatch") == Some("Exact") {
        at_rev = params.int("resourceVersion")?.map(|rv| rv as u64);
    }
    let mut items: Vec<Arc<Value>> = Vec::new();
    let mut rev = None;
    let mut next = None;
    loop {
        let query = ListQuery {
            resource: resource.storage_name(),
            namespace: target.namespace.clone(),
            after: after.clone(),
            at_rev: at_rev.or(rev),
            limit,
        };
        let page = state.store.list(query).await.map_err(|err| match err {
            StoreError::Compacted { .. } if params.get("continue").is_some() => ApiError::Expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter."
                    .into(),
            ),
            err => target.store_error("", err),
        })?;
        rev = Some(page.rev);
        let scanned = page.objects.len();
        for (i, object) in page.objects.into_iter().enumerate() {
            after = Some(key_of(&object));
            if filter.matches(&object) {
                items.push(object);
            }
            let full = limit.is_some_and(|l| items.len() >= l);
            if full && (i + 1 < scanned || page.more) {
                next = after.clone();
                break;
            }
        }
        let full = limit.is_some_and(|l| items.len() >= l);
        if next.is_some() || full || !page.more {
            break;
        }
    }
    let rev = rev.unwrap_or_else(|| state.store.current_rev());
    let mut list_meta = json!({"resourceVersion": rev.to_string()});
    if let Some((ns, name)) = next {
        list_meta["continue"] = json!(encode_continue(&ContinueToken { rv: rev, ns, name }));
    }
    Ok(json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": list_meta,
        "items": items,
    }))
}

/// The (namespace, name) an object sorts by in lists.
pub fn key_of(object: &Value) -> (String, String) {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// What an update does to the current object: returns the object to store,
/// or `None` when nothing changes.
pub type Mutation<'a> = dyn Fn(&Value) -> Result<Option<Value>> + Send + Sync + 'a;

/// Applies `mutate` to the current object and stores the result, retrying on
/// a concurrent write unless the caller pinned a `resourceVersion` (then a
/// stale one is a 409). An object left deleting without finalizers is
/// removed. Returns the object as stored (or as deleted).
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
        let Some(updated) = mutate(&current.value)? else {
            return Ok(current.value);
        };
        if dry_run {
            return Ok(Arc::new(updated));
        }
        let pre = Preconditions {
            rev: Some(current.rev),
            uid: None,
        };
        match state.store.update(target.key(), updated, pre).await {
            Ok(stored) => {
                if is_deleting(&stored.value)
                    && pending_finalizers(target.resource, &stored.value).is_empty()
                {
                    return remove(state, target, stored.rev).await;
                }
                return Ok(stored.value);
            }
            Err(StoreError::Conflict(_)) if pinned_rv.is_none() => continue,
            Err(err) => return Err(target.store_error(&name, err)),
        }
    }
}

/// Deletes an object known to be at `rev`; a concurrent change is retried
/// by the caller's next reconcile, so it is reported, not hidden.
async fn remove(state: &AppState, target: &Target, rev: u64) -> Result<Arc<Value>> {
    let name = target.name.clone().unwrap_or_default();
    let pre = Preconditions {
        rev: Some(rev),
        uid: None,
    };
    match state.store.delete(target.key(), pre).await {
        Ok(deleted) => Ok(deleted.value),
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
    if meta::spec_of(&updated) != meta::spec_of(current) {
        meta::bump_generation(resource, current, &mut updated);
    }
    // Compare without the resourceVersion the client may or may not echo.
    let mut comparable = updated.clone();
    metadata_mut(&mut comparable).insert(
        "resourceVersion".into(),
        current["metadata"]["resourceVersion"].clone(),
    );
    if &comparable == current {
        return Ok(None);
    }
    Ok(Some(updated))
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
    let incoming = decode_object(body, body_type)?;
    let pinned = pinned_rv(&incoming)?;
    let url_name = target.name.clone().unwrap_or_default();
    let resource = target.resource;
    guaranteed_update(state, target, pinned, params.dry_run()?, &|current| {
        prepare_update(resource, current, incoming.clone(), part, &url_name)
    })
    .await
}

/// PATCH of an object or its status, with a JSON merge patch or a JSON patch.
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
        Json(json_patch::Patch),
    }
    let patch = match body_type {
        BodyType::MergePatch => Patch::Merge(decode_object(body, BodyType::Json)?),
        BodyType::JsonPatch => Patch::Json(
            serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("error decoding JSON patch: {e}")))?,
        ),
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                accepted: "application/merge-patch+json, application/json-patch+json".into(),
            });
        }
    };
    let pinned = match &patch {
        Patch::Merge(value) => pinned_rv(value)?,
        Patch::Json(_) => None,
    };
    let url_name = target.name.clone().unwrap_or_default();
    let resource = target.resource;
    guaranteed_update(state, target, pinned, params.dry_run()?, &|current| {
        let mut patched = current.clone();
        match &patch {
            Patch::Merge(merge) => json_patch::merge(&mut patched, merge),
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
        prepare_update(resource, current, patched, part, &url_name)
    })
    .await
}

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

/// What a completed delete answers: pods return the deleted object, the
/// other kinds a success Status, as kube-apiserver does.
fn deleted_response(resource: &Resource, deleted: &Value) -> Value {
    if resource.kind == "Pod" {
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
