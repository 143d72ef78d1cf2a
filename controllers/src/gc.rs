//! The garbage collector: deletes Pods, ReplicaSets, Endpoints and
//! EndpointSlices whose every owner reference points to an owner that no
//! longer exists (background propagation, as kube-controller-manager's
//! garbage collector does once an owner is deleted).
//!
//! [`orphaned`] is the pure core: given a way to look an owner up (by
//! kind and name in the dependent's namespace, or cluster-wide for Nodes),
//! an object is garbage when it has owner references, all of a kind the
//! collector knows, and none of their owners exists with the referenced
//! uid. An owner of a kind it does not know keeps the object.
//!
//! [`run`] reflects the dependents and the owners (Deployments,
//! ReplicaSets, Services, Pods, Nodes); candidates come from the caches,
//! and every owner the cache says is gone is confirmed with a GET before
//! anything is deleted, so an owner briefly missing from a cache keeps its
//! dependents.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};

use crate::cache;
use crate::queue::{Key, Queue};

/// How long a failed collection waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How often every dependent is looked at again.
const RESYNC: Duration = Duration::from_secs(5);

/// The owner kinds the collector can look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    Deployment,
    ReplicaSet,
    Service,
    Pod,
    Node,
}

impl OwnerKind {
    /// The kind an owner reference names, if the collector knows it.
    pub fn of(owner: &OwnerReference) -> Option<Self> {
        let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        match (group, owner.kind.as_str()) {
            ("apps", "Deployment") => Some(Self::Deployment),
            ("apps", "ReplicaSet") => Some(Self::ReplicaSet),
            ("", "Service") => Some(Self::Service),
            ("", "Pod") => Some(Self::Pod),
            ("", "Node") => Some(Self::Node),
            _ => None,
        }
    }
}

/// Whether an object with `owners` is garbage, given `owner_uid(kind,
/// name)`: the uid of that owner now, `None` when it does not exist.
pub fn orphaned(
    owners: &[OwnerReference],
    mut owner_uid: impl FnMut(OwnerKind, &str) -> Option<String>,
) -> bool {
    if owners.is_empty() {
        return false;
    }
    owners.iter().all(|owner| match OwnerKind::of(owner) {
        Some(kind) => owner_uid(kind, &owner.name).as_deref() != Some(owner.uid.as_str()),
        None => false,
    })
}

/// The dependent kinds the collector deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dependent {
    Pod,
    ReplicaSet,
    Endpoints,
    EndpointSlice,
}

impl Dependent {
    const ALL: [Self; 4] = [
        Self::Pod,
        Self::ReplicaSet,
        Self::Endpoints,
        Self::EndpointSlice,
    ];

    fn tag(self) -> &'static str {
        match self {
            Self::Pod => "pods",
            Self::ReplicaSet => "replicasets",
            Self::Endpoints => "endpoints",
            Self::EndpointSlice => "endpointslices",
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.tag() == tag)
    }
}

/// Why a collection failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
}

/// What the collector shares.
pub struct Context {
    pub client: Client,
    pub deployments: Store<Deployment>,
    pub replicasets: Store<ReplicaSet>,
    pub services: Store<Service>,
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub endpoints: Store<Endpoints>,
    pub slices: Store<EndpointSlice>,
}

fn cached_uid<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<String>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let key = match namespace {
        Some(ns) => ObjectRef::new(name).within(ns),
        None => ObjectRef::new(name),
    };
    store.get(&key).and_then(|o| o.meta().uid.clone())
}

async fn live_uid<K>(api: Api<K>, name: &str) -> Result<Option<String>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api.get_opt(name).await?.and_then(|o| o.meta().uid.clone()))
}

impl Context {
    fn cached_owner(&self, namespace: &str, kind: OwnerKind, name: &str) -> Option<String> {
        let ns = Some(namespace);
        match kind {
            OwnerKind::Deployment => cached_uid(&self.deployments, ns, name),
            OwnerKind::ReplicaSet => cached_uid(&self.replicasets, ns, name),
            OwnerKind::Service => cached_uid(&self.services, ns, name),
            OwnerKind::Pod => cached_uid(&self.pods, ns, name),
            OwnerKind::Node => cached_uid(&self.nodes, None, name),
        }
    }

    async fn live_owner(
        &self,
        namespace: &str,
        kind: OwnerKind,
        name: &str,
    ) -> Result<Option<String>, Error> {
        let c = self.client.clone();
        match kind {
            OwnerKind::Deployment => {
                live_uid(Api::<Deployment>::namespaced(c, namespace), name).await
            }
            OwnerKind::ReplicaSet => {
                live_uid(Api::<ReplicaSet>::namespaced(c, namespace), name).await
            }
            OwnerKind::Service => live_uid(Api::<Service>::namespaced(c, namespace), name).await,
            OwnerKind::Pod => live_uid(Api::<Pod>::namespaced(c, namespace), name).await,
            OwnerKind::Node => live_uid(Api::<Node>::all(c), name).await,
        }
    }

    /// The cached dependent at `key`: its owner references and uid.
    fn dependent(
        &self,
        kind: Dependent,
        namespace: &str,
        name: &str,
    ) -> Option<(Vec<OwnerReference>, Option<String>)> {
        fn parts<K: Resource>(o: &K) -> (Vec<OwnerReference>, Option<String>) {
            (
                o.meta().owner_references.clone().unwrap_or_default(),
                o.meta().uid.clone(),
            )
        }
        match kind {
            Dependent::Pod => self
                .pods
                .get(&ObjectRef::new(name).within(namespace))
                .map(|o| parts(&*o)),
            Dependent::ReplicaSet => self
                .replicasets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|o| parts(&*o)),
            Dependent::Endpoints => self
                .endpoints
                .get(&ObjectRef::new(name).within(namespace))
                .map(|o| parts(&*o)),
            Dependent::EndpointSlice => self
                .slices
                .get(&ObjectRef::new(name).within(namespace))
                .map(|o| parts(&*o)),
        }
    }

    /// Every cached dependent the caches say is garbage, as queue keys.
    fn candidates(&self) -> Vec<Key> {
        let mut keys = Vec::new();
        let mut consider =
            |kind: Dependent, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                let namespace = meta.namespace.clone().unwrap_or_default();
                let owners = meta.owner_references.as_deref().unwrap_or(&[]);
                if orphaned(owners, |k, n| self.cached_owner(&namespace, k, n)) {
                    let name = meta.name.clone().unwrap_or_default();
                    keys.push((namespace, format!("{}/{name}", kind.tag())));
                }
            };
        for o in self.pods.state() {
            consider(Dependent::Pod, &o.metadata);
        }
        for o in self.replicasets.state() {
            consider(Dependent::ReplicaSet, &o.metadata);
        }
        for o in self.endpoints.state() {
            consider(Dependent::Endpoints, &o.metadata);
        }
        for o in self.slices.state() {
            consider(Dependent::EndpointSlice, &o.metadata);
        }
        keys
    }
}

/// Deletes the dependent at `key` (`(namespace, "<resource>/<name>")`) if
/// its owners are gone, confirmed with a GET of each.
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<(), Error> {
    let (namespace, tagged) = key;
    let Some((kind, name)) = tagged
        .split_once('/')
        .and_then(|(tag, name)| Some((Dependent::from_tag(tag)?, name)))
    else {
        return Ok(());
    };
    let Some((owners, uid)) = ctx.dependent(kind, namespace, name) else {
        return Ok(());
    };
    if !orphaned(&owners, |k, n| ctx.cached_owner(namespace, k, n)) {
        return Ok(());
    }
    let mut live = Vec::new();
    for owner in &owners {
        let found = match OwnerKind::of(owner) {
            Some(k) => ctx.live_owner(namespace, k, &owner.name).await?,
            None => return Ok(()),
        };
        live.push(found);
    }
    let mut answers = live.into_iter();
    if !orphaned(&owners, |_, _| answers.next().flatten()) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    let c = ctx.client.clone();
    let result = match kind {
        Dependent::Pod => Api::<Pod>::namespaced(c, namespace)
            .delete(name, &params)
            .await
            .map(|_| ()),
        Dependent::ReplicaSet => Api::<ReplicaSet>::namespaced(c, namespace)
            .delete(name, &params)
            .await
            .map(|_| ()),
        Dependent::Endpoints => Api::<Endpoints>::namespaced(c, namespace)
            .delete(name, &params)
            .await
            .map(|_| ()),
        Dependent::EndpointSlice => Api::<EndpointSlice>::namespaced(c, namespace)
            .delete(name, &params)
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => {
            tracing::info!(object = %format!("{namespace}/{tagged}"), "garbage-collected");
            Ok(())
        }
        // Gone already, or replaced by a namesake.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// A cache of every `K`, and a stream that says only that something changed.
fn reflect<K>(client: &Client) -> (Store<K>, impl futures::Stream<Item = ()> + use<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, touched) = cache::reflect::<K>(client);
    let changes = touched.filter_map(|event| futures::future::ready(event.ok().map(|_| ())));
    (store, changes)
}

/// Runs the collector until dropped: any watch event (a deletion among
/// them) has the caches scanned for candidates.
pub async fn run(client: Client) {
    let queue = Queue::default();
    let (deployments, e1) = reflect::<Deployment>(&client);
    let (replicasets, e2) = reflect::<ReplicaSet>(&client);
    let (services, e3) = reflect::<Service>(&client);
    let (pods, e4) = reflect::<Pod>(&client);
    let (nodes, e5) = reflect::<Node>(&client);
    let (endpoints, e6) = reflect::<Endpoints>(&client);
    let (slices, e7) = reflect::<EndpointSlice>(&client);
    let events = futures::stream::select_all([
        e1.boxed(),
        e2.boxed(),
        e3.boxed(),
        e4.boxed(),
        e5.boxed(),
        e6.boxed(),
        e7.boxed(),
    ]);
    let ctx = Context {
        client,
        deployments,
        replicasets,
        services,
        pods,
        nodes,
        endpoints,
        slices,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let feed = events.for_each(move |()| {
        let _ = tx.try_send(());
        futures::future::ready(())
    });
    let work = async {
        let _ = ctx.deployments.wait_until_ready().await;
        let _ = ctx.replicasets.wait_until_ready().await;
        let _ = ctx.services.wait_until_ready().await;
        let _ = ctx.pods.wait_until_ready().await;
        let _ = ctx.nodes.wait_until_ready().await;
        let _ = ctx.endpoints.wait_until_ready().await;
        let _ = ctx.slices.wait_until_ready().await;
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                _ = rx.recv() => {}
                _ = resync.tick() => {}
            }
            for key in ctx.candidates() {
                queue.add(key);
            }
            while let Some(key) = queue.try_next() {
                if let Err(err) = reconcile(&key, &ctx).await {
                    tracing::warn!(object = %format!("{}/{}", key.0, key.1), error = %err, "collection failed; retrying");
                    queue.add_after(key, RETRY);
                }
            }
        }
    };
    tokio::select! {
        () = feed => {}
        () = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
        serde_json::from_value(
            json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid}),
        )
        .unwrap()
    }

    #[test]
    fn an_object_is_garbage_only_when_every_owner_is_gone() {
        let rs = owner("apps/v1", "ReplicaSet", "web-1", "u1");
        let svc = owner("v1", "Service", "web", "u2");
        let exists = |k: OwnerKind, n: &str| match (k, n) {
            (OwnerKind::Service, "web") => Some("u2".to_string()),
            _ => None,
        };
        assert!(orphaned(std::slice::from_ref(&rs), exists));
        assert!(!orphaned(&[rs.clone(), svc.clone()], exists));
        assert!(!orphaned(std::slice::from_ref(&svc), exists));
        assert!(!orphaned(&[], exists));
    }

    #[test]
    fn a_namesake_with_another_uid_is_not_the_owner() {
        let rs = owner("apps/v1", "ReplicaSet", "web-1", "old");
        assert!(orphaned(&[rs], |_, _| Some("new".to_string())));
    }

    #[test]
    fn owners_of_unknown_kinds_keep_their_dependents() {
        let job = owner("batch/v1", "Job", "j", "u");
        assert!(!orphaned(&[job], |_, _| None));
        // A core-group Deployment is not apps/v1's.
        let odd = owner("v1", "Deployment", "d", "u");
        assert_eq!(OwnerKind::of(&odd), None);
        assert_eq!(
            OwnerKind::of(&owner("apps/v1", "Deployment", "d", "u")),
            Some(OwnerKind::Deployment)
        );
    }
}
