//! Subresources with their own shape: `scale` (an `autoscaling/v1` Scale
//! view of a workload's replicas), pods' `binding` (how a scheduler places
//! a pod) and `eviction` (how `kubectl drain` removes one), and namespaces'
//! `finalize`. `status` goes through the generic update path in `objects`.

use std::sync::Arc;

use knit_api::selector::LabelSelector;
use knit_api::status::success_status;
use knit_api::{ApiError, Cause, Result};
use serde_json::{Value, json};

use crate::AppState;
use crate::meta::bump_generation;
use crate::objects::{self, DeleteOptions, guaranteed_update};
use crate::request::{BodyType, Params, Target, decode_object};

/// The Scale view of a Deployment or ReplicaSet.
fn scale_of(object: &Value) -> Value {
    let selector = LabelSelector::from_label_selector(&object["spec"]["selector"])
        .map(|s| s.to_string())
        .unwrap_or_default();
    let metadata = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": object["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

pub async fn get_scale(state: &AppState, target: &Target) -> Result<Value> {
    Ok(scale_of(&*objects::get(state, target).await?))
}

/// PUT or PATCH of `scale`: the new Scale's `spec.replicas` becomes the
/// workload's.
pub async fn update_scale(
    state: &AppState,
    target: &Target,
    params: &Params,
    body: &[u8],
    body_type: BodyType,
) -> Result<Value> {
    let request = match body_type {
        BodyType::Json | BodyType::Yaml | BodyType::Protobuf => decode_object(body, body_type)?,
        BodyType::MergePatch | BodyType::StrategicMergePatch => {
            decode_object(body, BodyType::Json)?
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                accepted: "application/json, application/merge-patch+json".into(),
            });
        }
    };
    let is_patch = matches!(
        body_type,
        BodyType::MergePatch | BodyType::StrategicMergePatch
    );
    let pinned = match request["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !is_patch => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
        ),
        _ => None,
    };
    let manager = objects::Manager::of(target.resource, params, "UpdateOptions")?;
    let updated = guaranteed_update(state, target, pinned, params.dry_run()?, &|current| {
        let mut scale = scale_of(current);
        if is_patch {
            json_patch::merge(&mut scale, &request);
        } else {
            scale = request.clone();
            // ScaleSpec.replicas is a Go non-pointer with omitempty: a
            // Scale without it (as protobuf and Go's JSON write zero) asks
            // for 0.
            if scale["spec"]["replicas"].is_null() && scale.is_object() {
                scale["spec"]["replicas"] = json!(0);
            }
        }
        let replicas = &scale["spec"]["replicas"];
        let Some(count) = replicas.as_i64().filter(|n| *n >= 0) else {
            return Err(ApiError::Invalid {
                group: "autoscaling".into(),
                kind: "Scale".into(),
                name: target.name.clone().unwrap_or_default(),
                causes: vec![Cause::invalid(
                    "spec.replicas",
                    replicas,
                    "must be greater than or equal to 0",
                )],
            });
        };
        if current["spec"]["replicas"].as_i64() == Some(count) {
            return Ok(None);
        }
        let mut updated = current.clone();
        updated["spec"]["replicas"] = json!(count);
        bump_generation(target.resource, current, &mut updated);
        let writer = manager.writer(Some("scale"));
        knit_api::apply::record_update(target.resource.kind, Some(current), &mut updated, &writer);
        Ok(Some(updated))
    })
    .await?;
    Ok(scale_of(&updated))
}

/// POST of a pod's `binding`: assigns the pod to a node, once.
pub async fn bind(
    state: &AppState,
    target: &Target,
    params: &Params,
    body: &[u8],
    body_type: BodyType,
) -> Result<Value> {
    let binding = decode_object(body, body_type)?;
    let node = binding["target"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pod_name = target.name.clone().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::Invalid {
            group: String::new(),
            kind: "Binding".into(),
            name: pod_name,
            causes: vec![Cause::required("target.name", "")],
        });
    }
    guaranteed_update(state, target, None, params.dry_run()?, &|current| {
        match current["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            Some(assigned) => Err(target.conflict(
                &pod_name,
                &format!("pod {pod_name} is already assigned to node \"{assigned}\""),
            )),
            None => {
                let mut bound = current.clone();
                bound["spec"]["nodeName"] = json!(node);
                set_condition(&mut bound, "PodScheduled", "True");
                Ok(Some(bound))
            }
        }
    })
    .await?;
    Ok(success_status(json!({})))
}

/// POST of a pod's `eviction`: a `policy/v1` (or `v1beta1`) Eviction that
/// deletes the pod with the Eviction's `deleteOptions` (preconditions,
/// dry run), answering 201 with a Success Status as kube-apiserver does.
/// knit has no PodDisruptionBudgets, so an eviction is never refused with
/// kube's 429; a missing pod is a 404 like any delete's.
pub async fn evict(
    state: &AppState,
    target: &Target,
    params: &Params,
    body: &[u8],
    body_type: BodyType,
) -> Result<Value> {
    let eviction = decode_object(body, body_type)?;
    let pod_name = target.name.clone().unwrap_or_default();
    if let Some(kind) = eviction["kind"].as_str()
        && kind != "Eviction"
    {
        return Err(ApiError::BadRequest(format!(
            "expected an Eviction, got a {kind}"
        )));
    }
    if let Some(named) = eviction["metadata"]["name"].as_str()
        && !named.is_empty()
        && named != pod_name
    {
        return Err(ApiError::BadRequest(
            "name in URL does not match name in Eviction object".into(),
        ));
    }
    let options = match &eviction["deleteOptions"] {
        Value::Null => DeleteOptions::parse(params, b"")?,
        given => DeleteOptions::parse(
            params,
            &serde_json::to_vec(given).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        )?,
    };
    let pod = Target {
        subresource: None,
        ..target.clone()
    };
    objects::delete(state, &pod, &options).await?;
    Ok(eviction_status())
}

/// What a successful eviction answers: kube-apiserver's create handler
/// fills the Status' `code` with the 201 it sends.
fn eviction_status() -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    })
}

/// Sets a pod condition, keeping the others.
fn set_condition(pod: &mut Value, kind: &str, status: &str) {
    let now = crate::meta::now_rfc3339();
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let conditions = &mut pod["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("conditions is an array");
    list.retain(|c| c["type"] != kind);
    list.push(
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now}),
    );
}

/// PUT of a namespace's `finalize`: replaces `spec.finalizers` only.
pub async fn finalize(
    state: &AppState,
    target: &Target,
    params: &Params,
    body: &[u8],
    body_type: BodyType,
) -> Result<Arc<Value>> {
    let request = decode_object(body, body_type)?;
    let wanted = request["spec"]["finalizers"].clone();
    guaranteed_update(state, target, None, params.dry_run()?, &|current| {
        if current["spec"]["finalizers"] == wanted {
            return Ok(None);
        }
        let mut updated = current.clone();
        updated["spec"]["finalizers"] = if wanted.is_null() {
            json!([])
        } else {
            wanted.clone()
        };
        Ok(Some(updated))
    })
    .await
}
