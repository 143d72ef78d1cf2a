//! Lists: selectors, and `limit`/`continue` pages that all read the
//! revision of the first page.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use knit_api::registry::{self, Resource};
use knit_api::selector::{FieldSelector, LabelSelector};
use knit_api::{ApiError, Result};
use serde_json::{Value, json};

use crate::AppState;
use crate::request::{Params, Target};
use crate::store::{ListQuery, StoreError};

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
