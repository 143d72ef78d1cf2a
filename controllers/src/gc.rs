//! The garbage collector: carries out deletion propagation over owner
//! references, as kube-controller-manager's garbage collector does.
//!
//! - **Background**: an object all of whose owners are gone (or are being
//!   deleted in the foreground) is deleted.
//! - **Orphan**: an owner being deleted with the `orphan` finalizer has its
//!   uid removed from every dependent's `ownerReferences` (a strategic merge
//!   patch that deletes only that entry, so other owners stay), then loses
//!   the finalizer and goes.
//! - **Foreground**: the dependents of an owner being deleted with
//!   `foregroundDeletion` are deleted (themselves in the foreground when
//!   they have dependents of their own); the owner loses the finalizer once
//!   no dependent whose reference has `blockOwnerDeletion: true` remains.
//!
//! The pure core is [`Graph`] (every cached object of the kinds knit
//! serves, indexed by uid and by owner), [`owner_work`] (what an owner being
//! deleted needs) and [`decide`] (what happens to a dependent given the
//! state of each owner). [`run`] reflects every kind, and on any watch event
//! (or every few seconds) rebuilds the graph and reconciles the objects it
//! says need work. Everything is decided from the current state, so a
//! restart halfway through an orphaning or a foreground deletion simply
//! finishes it. An owner the caches say is gone is confirmed with a GET
//! before anything is deleted, and deletes carry the uid and
//! resourceVersion the decision was made on, so an object changed meanwhile
//! (adopted again, say) is looked at afresh instead.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::cache;
use crate::queue::Key;

/// How long a failed pass waits before the graph is looked at again.
const RETRY: Duration = Duration::from_secs(1);
/// How often the graph is looked at without any event.
const RESYNC: Duration = Duration::from_secs(5);
/// Who the collector's patches are recorded for.
const FIELD_MANAGER: &str = "garbage-collector";

/// The finalizer of an owner deleted with `propagationPolicy: Orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer of an owner deleted with `propagationPolicy: Foreground`.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// A kind the collector watches, looks owners up in and writes to.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        namespaced,
    }
}

/// Every kind knit serves.
pub const KINDS: [Kind; 14] = [
    kind("", "v1", "Namespace", "namespaces", false),
    kind("", "v1", "Node", "nodes", false),
    kind("", "v1", "Pod", "pods", true),
    kind("", "v1", "Service", "services", true),
    kind("", "v1", "Endpoints", "endpoints", true),
    kind("", "v1", "Event", "events", true),
    kind("", "v1", "ConfigMap", "configmaps", true),
    kind("", "v1", "Secret", "secrets", true),
    kind("apps", "v1", "Deployment", "deployments", true),
    kind("apps", "v1", "ReplicaSet", "replicasets", true),
    kind(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    kind("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    kind(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        false,
    ),
    kind("coordination.k8s.io", "v1", "Lease", "leases", true),
];

/// The kinds [`run`] caches through [`Context`]'s typed stores; the others
/// are cached as dynamic objects.
const TYPED: [&str; 7] = [
    "Deployment",
    "ReplicaSet",
    "Service",
    "Pod",
    "Node",
    "Endpoints",
    "EndpointSlice",
];

impl Kind {
    /// The kind an owner reference names, if knit serves it (the version
    /// is not compared: every version of a kind is the same object).
    pub fn of(owner: &OwnerReference) -> Option<&'static Kind> {
        let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        KINDS
            .iter()
            .find(|k| k.group == group && k.kind == owner.kind)
    }

    fn named(kind: &str) -> &'static Kind {
        KINDS
            .iter()
            .find(|k| k.kind == kind)
            .expect("a kind knit serves")
    }

    fn api_resource(&self) -> ApiResource {
        let api_version = if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version,
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    fn api(&self, client: &Client, namespace: &str) -> Api<DynamicObject> {
        let resource = self.api_resource();
        if self.namespaced {
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        }
    }
}

/// What the collector knows of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: &'static Kind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: Option<String>,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

impl Item {
    /// The item for an object of `kind` with metadata `meta`.
    pub fn new(kind: &'static Kind, meta: &ObjectMeta) -> Item {
        Item {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }

    fn has(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    /// Being deleted in the foreground: waiting for its dependents.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.has(FOREGROUND_FINALIZER)
    }

    /// `(namespace, "<plural>/<name>")`, the key it is reconciled under.
    pub fn key(&self) -> Key {
        (
            self.namespace.clone(),
            format!("{}/{}", self.kind.plural, self.name),
        )
    }

    /// How a delete of this object propagates when nothing else decides:
    /// the propagation finalizer it already has, else background.
    fn own_policy(&self) -> PropagationPolicy {
        if self.has(ORPHAN_FINALIZER) {
            PropagationPolicy::Orphan
        } else if self.has(FOREGROUND_FINALIZER) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        }
    }
}

/// Every cached object, indexed by uid, by key and by the owners its
/// references name.
#[derive(Debug, Default)]
pub struct Graph {
    items: Vec<Item>,
    by_uid: HashMap<String, usize>,
    by_key: HashMap<Key, usize>,
    dependents: HashMap<String, Vec<usize>>,
}

impl Graph {
    pub fn new(items: impl IntoIterator<Item = Item>) -> Graph {
        let mut graph = Graph::default();
        for item in items {
            let at = graph.items.len();
            graph.by_uid.insert(item.uid.clone(), at);
            graph.by_key.insert(item.key(), at);
            for owner in &item.owners {
                graph
                    .dependents
                    .entry(owner.uid.clone())
                    .or_default()
                    .push(at);
            }
            graph.items.push(item);
        }
        graph
    }

    /// The object at `key`.
    pub fn get(&self, key: &Key) -> Option<&Item> {
        self.by_key.get(key).map(|at| &self.items[*at])
    }

    /// The objects whose owner references name `uid`, each with that
    /// reference.
    pub fn dependents<'a>(
        &'a self,
        uid: &str,
    ) -> impl Iterator<Item = (&'a Item, &'a OwnerReference)> + 'a {
        let uid = uid.to_string();
        self.dependents
            .get(&uid)
            .into_iter()
            .flatten()
            .filter_map(move |at| {
                let item = &self.items[*at];
                item.owners.iter().find(|o| o.uid == uid).map(|o| (item, o))
            })
    }

    /// The state of the owner `owner` of `item` as far as the caches know:
    /// `None` when it is not cached (it may still exist).
    fn cached_owner(&self, owner: &OwnerReference) -> Option<OwnerState> {
        if Kind::of(owner).is_none() {
            return Some(OwnerState::Unknown);
        }
        let found = &self.items[*self.by_uid.get(&owner.uid)?];
        Some(if found.deleting_dependents() {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        })
    }

    /// The keys of every object the caches say needs work: owners being
    /// deleted with a propagation finalizer, and dependents with an owner
    /// that is missing or being deleted in the foreground.
    pub fn candidates(&self) -> Vec<Key> {
        self.items
            .iter()
            .filter(|item| {
                if item.deleting {
                    return !matches!(owner_work(self, item), OwnerWork::Nothing);
                }
                if item.owners.is_empty() {
                    return false;
                }
                let states: Vec<_> = item
                    .owners
                    .iter()
                    .map(|o| (o, self.cached_owner(o).unwrap_or(OwnerState::Dangling)))
                    .collect();
                decide(item, &states, self.dependents(&item.uid).next().is_some()) != Decision::Keep
            })
            .map(Item::key)
            .collect()
    }
}

/// What an owner being deleted needs from the collector.
#[derive(Debug, PartialEq)]
pub enum OwnerWork<'a> {
    /// Remove its uid from these dependents, then its `orphan` finalizer.
    Orphan(Vec<&'a Item>),
    /// No blocking dependent is left: remove `foregroundDeletion`.
    ReleaseForeground,
    /// Blocking dependents remain; their own reconciles delete them.
    Wait,
    /// Nothing for the collector (no propagation finalizer).
    Nothing,
}

/// What `owner`, being deleted, needs.
pub fn owner_work<'a>(graph: &'a Graph, owner: &Item) -> OwnerWork<'a> {
    if !owner.deleting {
        return OwnerWork::Nothing;
    }
    if owner.has(ORPHAN_FINALIZER) {
        return OwnerWork::Orphan(graph.dependents(&owner.uid).map(|(d, _)| d).collect());
    }
    if owner.has(FOREGROUND_FINALIZER) {
        let blocking = graph
            .dependents(&owner.uid)
            .any(|(_, reference)| reference.block_owner_deletion == Some(true));
        return if blocking {
            OwnerWork::Wait
        } else {
            OwnerWork::ReleaseForeground
        };
    }
    OwnerWork::Nothing
}

/// The state of one owner of a dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// It exists and is not waiting for its dependents.
    Solid,
    /// It no longer exists (or a namesake with another uid does).
    Dangling,
    /// It is being deleted in the foreground.
    Waiting,
    /// Of a kind the collector cannot look up: it keeps the dependent.
    Unknown,
}

/// What happens to a dependent.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Keep,
    /// It has a solid owner: only the references to these (gone or
    /// waiting) owners are removed, so that a waiting owner can go.
    DropOwners(Vec<String>),
    /// Nothing owns it any more: it is deleted with this propagation.
    Delete(PropagationPolicy),
}

/// What happens to `item`, not itself being deleted, given the state of
/// each of its owners and whether it has dependents of its own. As in
/// kube: with a solid owner it stays (minus references to gone or waiting
/// owners); else it is deleted, in the foreground when an owner waits for
/// it and it has dependents itself (so the wait covers them too), else as
/// its own finalizers say.
pub fn decide(
    item: &Item,
    owners: &[(&OwnerReference, OwnerState)],
    has_dependents: bool,
) -> Decision {
    if item.deleting || owners.is_empty() || owners.iter().any(|(_, s)| *s == OwnerState::Unknown) {
        return Decision::Keep;
    }
    let with = |state: OwnerState| {
        owners
            .iter()
            .filter(move |(_, s)| *s == state)
            .map(|(o, _)| o.uid.clone())
    };
    if with(OwnerState::Solid).next().is_some() {
        let gone: Vec<String> = with(OwnerState::Dangling)
            .chain(with(OwnerState::Waiting))
            .collect();
        return if gone.is_empty() {
            Decision::Keep
        } else {
            Decision::DropOwners(gone)
        };
    }
    if with(OwnerState::Waiting).next().is_some() && has_dependents {
        return Decision::Delete(PropagationPolicy::Foreground);
    }
    Decision::Delete(item.own_policy())
}

/// Why a reconcile failed; the graph is looked at again shortly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
}

/// The typed caches the collector reads (the kinds workloads use most);
/// [`run`] caches the other kinds knit serves beside them.
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

impl Context {
    /// Items for every object in the typed caches.
    fn items(&self) -> Vec<Item> {
        fn of<K: Resource + Clone + 'static>(store: &Store<K>, kind: &str, items: &mut Vec<Item>)
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            let kind = Kind::named(kind);
            items.extend(store.state().iter().map(|o| Item::new(kind, o.meta())));
        }
        let mut items = Vec::new();
        of(&self.deployments, "Deployment", &mut items);
        of(&self.replicasets, "ReplicaSet", &mut items);
        of(&self.services, "Service", &mut items);
        of(&self.pods, "Pod", &mut items);
        of(&self.nodes, "Node", &mut items);
        of(&self.endpoints, "Endpoints", &mut items);
        of(&self.slices, "EndpointSlice", &mut items);
        items
    }
}

/// Reconciles the object at `key` (`(namespace, "<plural>/<name>")`)
/// against a graph of the typed caches alone.
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<(), Error> {
    reconcile_in(&Graph::new(ctx.items()), key, &ctx.client).await
}

/// Does what the object at `key` needs: for an owner being deleted, the
/// orphaning or the release of its foreground finalizer; for a dependent,
/// the owners confirmed with a GET, then a delete or the removal of
/// references to gone owners.
pub async fn reconcile_in(graph: &Graph, key: &Key, client: &Client) -> Result<(), Error> {
    let Some(item) = graph.get(key) else {
        return Ok(());
    };
    if item.deleting {
        match owner_work(graph, item) {
            OwnerWork::Orphan(dependents) => {
                for dependent in dependents {
                    drop_owners(client, dependent, std::slice::from_ref(&item.uid)).await?;
                }
                remove_finalizer(client, item, ORPHAN_FINALIZER).await?;
            }
            OwnerWork::ReleaseForeground => {
                remove_finalizer(client, item, FOREGROUND_FINALIZER).await?;
            }
            OwnerWork::Wait | OwnerWork::Nothing => {}
        }
        return Ok(());
    }
    let mut owners = Vec::new();
    for owner in &item.owners {
        let state = match graph.cached_owner(owner) {
            Some(state) => state,
            None => live_owner(client, item, owner).await?,
        };
        owners.push((owner, state));
    }
    let has_dependents = graph.dependents(&item.uid).next().is_some();
    match decide(item, &owners, has_dependents) {
        Decision::Keep => Ok(()),
        Decision::DropOwners(uids) => drop_owners(client, item, &uids).await,
        Decision::Delete(policy) => delete(client, item, policy).await,
    }
}

/// The state of an owner missing from the caches, from a GET.
async fn live_owner(
    client: &Client,
    item: &Item,
    owner: &OwnerReference,
) -> Result<OwnerState, Error> {
    let Some(kind) = Kind::of(owner) else {
        return Ok(OwnerState::Unknown);
    };
    // A cluster-scoped object cannot be owned by a namespaced one; kube
    // treats such a reference as unresolvable.
    if kind.namespaced && item.namespace.is_empty() {
        return Ok(OwnerState::Dangling);
    }
    let found = kind
        .api(client, &item.namespace)
        .get_opt(&owner.name)
        .await?;
    Ok(match found {
        Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
            if Item::new(kind, &o.metadata).deleting_dependents() {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            }
        }
        _ => OwnerState::Dangling,
    })
}

/// Whether a write happened; an object already gone needs none, so that
/// is no failure either.
fn written<T>(result: Result<T, kube::Error>) -> Result<bool, Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Removes the references to `uids` from `item`'s owner references,
/// leaving every other owner, with kube's strategic merge patch (a
/// `$patch: delete` per uid).
async fn drop_owners(client: &Client, item: &Item, uids: &[String]) -> Result<(), Error> {
    let deletes: Vec<_> = uids
        .iter()
        .map(|uid| json!({"$patch": "delete", "uid": uid}))
        .collect();
    let patch = json!({"metadata": {"ownerReferences": deletes, "uid": item.uid}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let api = item.kind.api(client, &item.namespace);
    let result = api
        .patch(&item.name, &params, &Patch::Strategic(&patch))
        .await;
    if written(result)? {
        tracing::info!(object = %format!("{}/{}", item.namespace, item.key().1), owners = ?uids, "owner references removed");
    }
    Ok(())
}

/// Removes `finalizer` from `item`, pinned to the resourceVersion it was
/// decided on (a change meanwhile is a conflict, retried).
async fn remove_finalizer(client: &Client, item: &Item, finalizer: &str) -> Result<(), Error> {
    let rest: Vec<&String> = item.finalizers.iter().filter(|f| *f != finalizer).collect();
    let patch = json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": item.resource_version,
    }});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let api = item.kind.api(client, &item.namespace);
    if written(api.patch(&item.name, &params, &Patch::Merge(&patch)).await)? {
        tracing::info!(object = %format!("{}/{}", item.namespace, item.key().1), finalizer, "finalizer removed");
    }
    Ok(())
}

/// Deletes `item` with `policy`, only if it is still the object (uid) and
/// state (resourceVersion) the decision was made on.
async fn delete(client: &Client, item: &Item, policy: PropagationPolicy) -> Result<(), Error> {
    let params = DeleteParams {
        propagation_policy: Some(policy.clone()),
        preconditions: Some(Preconditions {
            uid: Some(item.uid.clone()),
            resource_version: item.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    let api = item.kind.api(client, &item.namespace);
    if written(api.delete(&item.name, &params).await)? {
        tracing::info!(object = %format!("{}/{}", item.namespace, item.key().1), ?policy, "garbage-collected");
    }
    Ok(())
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

/// A cache of every object of `kind` as dynamic objects, and its changes.
fn reflect_dynamic(
    client: &Client,
    kind: &'static Kind,
) -> (
    Store<DynamicObject>,
    impl futures::Stream<Item = ()> + use<>,
) {
    let resource = kind.api_resource();
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let changes = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .filter_map(|event| futures::future::ready(event.ok().map(|_| ())));
    (store, changes)
}

/// Runs the collector until dropped: any watch event has the graph rebuilt
/// from the caches and every object needing work reconciled; a failure has
/// it looked at again after [`RETRY`].
pub async fn run(client: Client) {
    let (deployments, e1) = reflect::<Deployment>(&client);
    let (replicasets, e2) = reflect::<ReplicaSet>(&client);
    let (services, e3) = reflect::<Service>(&client);
    let (pods, e4) = reflect::<Pod>(&client);
    let (nodes, e5) = reflect::<Node>(&client);
    let (endpoints, e6) = reflect::<Endpoints>(&client);
    let (slices, e7) = reflect::<EndpointSlice>(&client);
    let mut streams = vec![
        e1.boxed(),
        e2.boxed(),
        e3.boxed(),
        e4.boxed(),
        e5.boxed(),
        e6.boxed(),
        e7.boxed(),
    ];
    let mut others = Vec::new();
    for kind in KINDS.iter().filter(|k| !TYPED.contains(&k.kind)) {
        let (store, changes) = reflect_dynamic(&client, kind);
        others.push((kind, store));
        streams.push(changes.boxed());
    }
    let events = futures::stream::select_all(streams);
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
        for (_, store) in &others {
            let _ = store.wait_until_ready().await;
        }
        let mut resync = tokio::time::interval(RESYNC);
        let mut retry = false;
        loop {
            let again = async {
                if retry {
                    tokio::time::sleep(RETRY).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = rx.recv() => {}
                _ = resync.tick() => {}
                () = again => {}
            }
            let mut items = ctx.items();
            for (kind, store) in &others {
                items.extend(store.state().iter().map(|o| Item::new(kind, &o.metadata)));
            }
            let graph = Graph::new(items);
            retry = false;
            for key in graph.candidates() {
                if let Err(err) = reconcile_in(&graph, &key, &ctx.client).await {
                    tracing::warn!(object = %format!("{}/{}", key.0, key.1), error = %err, "collection failed; retrying");
                    retry = true;
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

    fn owner(api_version: &str, kind: &str, uid: &str, block: bool) -> OwnerReference {
        serde_json::from_value(json!({"apiVersion": api_version, "kind": kind,
            "name": format!("n-{uid}"), "uid": uid, "blockOwnerDeletion": block}))
        .unwrap()
    }

    fn item(kind: &str, uid: &str, owners: Vec<OwnerReference>, finalizers: &[&str]) -> Item {
        let meta: ObjectMeta = serde_json::from_value(json!({
            "name": format!("n-{uid}"), "namespace": "default", "uid": uid,
            "resourceVersion": "7", "ownerReferences": owners,
            "finalizers": finalizers,
        }))
        .unwrap();
        Item::new(Kind::named(kind), &meta)
    }

    fn deleting(mut item: Item) -> Item {
        item.deleting = true;
        item
    }

    #[test]
    fn a_dependent_goes_only_when_no_owner_is_solid() {
        let rs = owner("apps/v1", "ReplicaSet", "rs", true);
        let svc = owner("v1", "Service", "svc", false);
        let pod = item("Pod", "p", vec![rs.clone(), svc.clone()], &[]);
        use OwnerState::*;
        assert_eq!(
            decide(&pod, &[(&rs, Solid), (&svc, Solid)], false),
            Decision::Keep
        );
        assert_eq!(
            decide(&pod, &[(&rs, Dangling), (&svc, Solid)], false),
            Decision::DropOwners(vec!["rs".into()]),
            "a gone owner's reference goes, the object stays"
        );
        assert_eq!(
            decide(&pod, &[(&rs, Waiting), (&svc, Solid)], false),
            Decision::DropOwners(vec!["rs".into()]),
            "a foreground owner is not kept waiting by a shared dependent"
        );
        assert_eq!(
            decide(&pod, &[(&rs, Dangling), (&svc, Dangling)], false),
            Decision::Delete(PropagationPolicy::Background)
        );
        assert_eq!(
            decide(&pod, &[(&rs, Dangling), (&svc, Unknown)], false),
            Decision::Keep,
            "an owner of a kind the collector cannot look up keeps it"
        );
        assert_eq!(
            decide(&item("Pod", "q", vec![], &[]), &[], false),
            Decision::Keep
        );
    }

    #[test]
    fn under_a_foreground_owner_a_dependent_with_dependents_goes_in_the_foreground() {
        let d = owner("apps/v1", "Deployment", "d", true);
        let rs = item("ReplicaSet", "rs", vec![d.clone()], &[]);
        assert_eq!(
            decide(&rs, &[(&d, OwnerState::Waiting)], true),
            Decision::Delete(PropagationPolicy::Foreground)
        );
        assert_eq!(
            decide(&rs, &[(&d, OwnerState::Waiting)], false),
            Decision::Delete(PropagationPolicy::Background)
        );
        // Its own orphan finalizer is honoured when it is collected.
        let keeping = item("ReplicaSet", "rs2", vec![d.clone()], &["orphan"]);
        assert_eq!(
            decide(&keeping, &[(&d, OwnerState::Dangling)], false),
            Decision::Delete(PropagationPolicy::Orphan)
        );
        // Already being deleted: a one-way trip, nothing more to do.
        assert_eq!(
            decide(&deleting(rs), &[(&d, OwnerState::Dangling)], true),
            Decision::Keep
        );
    }

    #[test]
    fn owners_being_deleted_get_their_propagation() {
        let d_ref = owner("apps/v1", "Deployment", "d", true);
        let other = owner("v1", "Service", "svc", false);
        let orphaning = deleting(item("Deployment", "d", vec![], &["orphan"]));
        let rs = item("ReplicaSet", "rs", vec![d_ref.clone(), other.clone()], &[]);
        let unrelated = item("ReplicaSet", "x", vec![other.clone()], &[]);
        let service = item("Service", "svc", vec![], &[]);
        let graph = Graph::new([orphaning.clone(), rs, unrelated, service]);
        match owner_work(&graph, &orphaning) {
            OwnerWork::Orphan(deps) => {
                assert_eq!(
                    deps.iter().map(|d| d.uid.as_str()).collect::<Vec<_>>(),
                    ["rs"]
                );
            }
            other => panic!("expected orphaning, got {other:?}"),
        }
        assert_eq!(graph.candidates(), vec![orphaning.key()]);

        let foreground = deleting(item("Deployment", "d", vec![], &["foregroundDeletion"]));
        let blocking = item("ReplicaSet", "rs", vec![d_ref.clone()], &[]);
        let graph = Graph::new([foreground.clone(), blocking.clone()]);
        assert_eq!(owner_work(&graph, &foreground), OwnerWork::Wait);
        let mut candidates = graph.candidates();
        candidates.sort();
        let mut want = vec![foreground.key(), blocking.key()];
        want.sort();
        assert_eq!(
            candidates, want,
            "the owner waits, its dependent is collected"
        );

        // A dependent that does not block is no reason to wait.
        let loose = owner("apps/v1", "Deployment", "d", false);
        let graph = Graph::new([
            foreground.clone(),
            item("ReplicaSet", "rs", vec![loose], &[]),
        ]);
        assert_eq!(
            owner_work(&graph, &foreground),
            OwnerWork::ReleaseForeground
        );
        let graph = Graph::new([foreground.clone()]);
        assert_eq!(
            owner_work(&graph, &foreground),
            OwnerWork::ReleaseForeground
        );

        // Deleting without a propagation finalizer is not the collector's.
        let plain = deleting(item("Deployment", "d", vec![], &["example.com/x"]));
        assert_eq!(
            owner_work(&Graph::new([plain.clone()]), &plain),
            OwnerWork::Nothing
        );
    }

    #[test]
    fn kinds_come_from_group_and_kind() {
        assert_eq!(
            Kind::of(&owner("apps/v1", "Deployment", "d", false)).map(|k| k.plural),
            Some("deployments")
        );
        // A core-group Deployment is not apps/v1's; a Job is not served.
        assert_eq!(Kind::of(&owner("v1", "Deployment", "d", false)), None);
        assert_eq!(Kind::of(&owner("batch/v1", "Job", "j", false)), None);
        for typed in TYPED {
            assert!(KINDS.iter().any(|k| k.kind == typed));
        }
    }
}
