//! Namespaces: the ones every cluster starts with, the cache that create
//! admission reads (kube-apiserver's NamespaceLifecycle plugin reads an
//! informer the same way), and the lifecycle that empties a deleted
//! namespace before it goes (kube-controller-manager's namespace
//! controller, run inside the apiserver).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use std::time::Duration;

use knit_api::registry::{self, Resource};
use knit_api::{ApiError, Result};
use serde_json::json;
use tokio::sync::Notify;

use crate::AppState;
use crate::meta::is_deleting;
use crate::objects::{self, DeleteOptions, guaranteed_update};
use crate::request::{BodyType, Params, Target};
use crate::store::{Change, ChangeKind, ListQuery};

/// Created on first start.
pub const INITIAL: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// May never be deleted, as in Kubernetes.
pub const UNDELETABLE: [&str; 3] = ["default", "kube-system", "kube-public"];

/// The finalizer in `spec.finalizers` that holds a namespace until it is empty.
const CONTENT_FINALIZER: &str = "kubernetes";

fn namespaces() -> &'static Resource {
    registry::lookup("", "v1", "namespaces").expect("namespaces are registered")
}

fn namespace_target(name: &str) -> Target {
    Target {
        resource: namespaces(),
        namespace: None,
        name: Some(name.to_string()),
        subresource: None,
    }
}

/// Whether a namespace takes new objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Active,
    Terminating,
}

/// The namespaces as last seen on the store's change feed, so that a
/// create need not read its namespace. A miss is not an answer: callers
/// read the store (the namespace may be newer than the cache). The
/// lifecycle waits on `changed` rather than reading the whole feed again.
#[derive(Debug, Default)]
pub struct NamespaceCache {
    phases: RwLock<HashMap<String, Phase>>,
    changed: Notify,
}

impl NamespaceCache {
    pub fn lookup(&self, name: &str) -> Option<Phase> {
        self.phases
            .read()
            .expect("namespace cache lock")
            .get(name)
            .copied()
    }

    fn replace(&self, namespaces: &[Arc<serde_json::Value>]) {
        let phases = namespaces
            .iter()
            .map(|ns| (name_of(ns).to_string(), phase_of(ns)))
            .collect();
        *self.phases.write().expect("namespace cache lock") = phases;
        self.changed.notify_one();
    }

    fn apply(&self, change: &Change) {
        let mut phases = self.phases.write().expect("namespace cache lock");
        let name = name_of(&change.object).to_string();
        match change.kind {
            ChangeKind::Deleted => phases.remove(&name),
            _ => phases.insert(name, phase_of(&change.object)),
        };
        self.changed.notify_one();
    }
}

fn name_of(ns: &serde_json::Value) -> &str {
    ns["metadata"]["name"].as_str().unwrap_or_default()
}

fn phase_of(ns: &serde_json::Value) -> Phase {
    if is_deleting(ns) {
        Phase::Terminating
    } else {
        Phase::Active
    }
}

/// Keeps `state.namespaces` in step with the store until shutdown; lists
/// again whenever it falls behind the change feed.
pub async fn run_cache(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    loop {
        let mut changes = state.store.subscribe();
        let listed = state
            .store
            .list(ListQuery {
                resource: "namespaces".into(),
                ..Default::default()
            })
            .await;
        let rev = match listed {
            Ok(page) => {
                state.namespaces.replace(&page.objects);
                page.rev
            }
            Err(err) => {
                tracing::warn!(error = %err, "listing namespaces failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                received = changes.recv() => match received {
                    Ok(change) if change.rev > rev && change.key.resource == "namespaces" => {
                        state.namespaces.apply(&change);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Starts the namespace tasks: the admission cache and the lifecycle.
pub fn spawn_tasks(state: &AppState) {
    tokio::spawn(run_cache(state.clone()));
    tokio::spawn(run_lifecycle(state.clone()));
}

/// Creates the initial namespaces that do not exist yet.
pub async fn bootstrap(state: &AppState) -> Result<()> {
    let collection = Target {
        name: None,
        ..namespace_target("")
    };
    for name in INITIAL {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let body = serde_json::to_vec(&body).expect("static JSON");
        match objects::create(
            state,
            &collection,
            &Params::default(),
            &body,
            BodyType::Json,
        )
        .await
        {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Empties and then removes deleted namespaces, until shutdown.
pub async fn run_lifecycle(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    loop {
        let busy = match finalize_terminating(&state).await {
            Ok(busy) => busy,
            Err(err) => {
                tracing::warn!(error = %err, "namespace cleanup failed; retrying");
                true
            }
        };
        let next_look = if busy {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(60)
        };
        tokio::select! {
            _ = tokio::time::sleep(next_look) => {}
            _ = state.namespaces.changed.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass over deleting namespaces; returns whether any is still there.
async fn finalize_terminating(state: &AppState) -> Result<bool> {
    let page = state
        .store
        .list(ListQuery {
            resource: "namespaces".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut busy = false;
    for ns in page.objects.iter().filter(|ns| is_deleting(ns)) {
        busy = true;
        let name = ns["metadata"]["name"].as_str().unwrap_or_default();
        if delete_content(state, name).await? == 0 {
            let target = namespace_target(name);
            guaranteed_update(state, &target, None, false, &|current| {
                let Some(list) = current["spec"]["finalizers"].as_array() else {
                    return Ok(None);
                };
                let mut updated = current.clone();
                updated["spec"]["finalizers"] = json!(
                    list.iter()
                        .filter(|f| *f != CONTENT_FINALIZER)
                        .collect::<Vec<_>>()
                );
                Ok(Some(updated))
            })
            .await
            .or_else(|err| match err {
                ApiError::NotFound { .. } => Ok(Default::default()),
                err => Err(err),
            })?;
        }
    }
    Ok(busy)
}

/// Deletes every object in a namespace; returns how many there were.
async fn delete_content(state: &AppState, namespace: &str) -> Result<usize> {
    let mut found = 0;
    for resource in registry::all().iter().filter(|r| r.namespaced) {
        let page = state
            .store
            .list(ListQuery {
                resource: resource.storage_name(),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        for object in &page.objects {
            found += 1;
            let target = Target {
                resource,
                namespace: Some(namespace.to_string()),
                name: object["metadata"]["name"].as_str().map(str::to_string),
                subresource: None,
            };
            match objects::delete(state, &target, &DeleteOptions::default()).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(found)
}
