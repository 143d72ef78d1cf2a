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
//! The pure core is [`Graph`] (what the collector knows of every object of
//! the kinds knit serves, indexed by uid, by key and by owner, kept change
//! by change), [`owner_work`] (what an owner being deleted needs) and
//! [`decide`] (what happens to a dependent given the state of each owner).
//! [`run`] watches every kind's metadata only (`PartialObjectMetadata`;
//! pods come from the shared [`crate::pods`] cache), and a change queues
//! just the objects it can concern — the object, its owners and its
//! dependents — which are reconciled one by one; every few seconds the
//! objects the graph says need work are queued again. An object without
//! owners, finalizers or a deletion in progress is kept as its uid alone:
//! it can only ever be someone's owner. Everything is decided from the current state, so a
//! restart halfway through an orphaning or a foreground deletion simply
//! finishes it. An owner the caches say is gone is confirmed with a GET
//! before anything is deleted, and deletes carry the uid and
//! resourceVersion the decision was made on, so an object changed meanwhile
//! (adopted again, say) is looked at afresh instead.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;

use crate::pods::{Change, PodSummary, Pods};
use crate::queue::{Key, Queue};

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

impl Kind {
    /// The kind an owner reference names, if knit serves it (the version
    /// is not compared: every version of a kind is the same object).
    pub fn of(owner: &OwnerReference) -> Option<&'static Kind> {
        let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        KINDS
            .iter()
            .find(|k| k.group == group && k.kind == owner.kind)
    }

    /// The kind called `kind`.
    pub fn named(kind: &str) -> &'static Kind {
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

    /// The item for a pod as the shared cache keeps it.
    pub fn of_pod(pod: &PodSummary) -> Item {
        Item {
            kind: Kind::named("Pod"),
            namespace: pod.namespace.to_string(),
            name: pod.name.to_string(),
            uid: pod.uid.to_string(),
            resource_version: Some(pod.resource_version.to_string()),
            owners: pod
                .owners
                .iter()
                .map(|o| OwnerReference {
                    api_version: o.api_version.to_string(),
                    kind: o.kind.to_string(),
                    name: o.name.to_string(),
                    uid: o.uid.to_string(),
                    controller: o.controller.then_some(true),
                    block_owner_deletion: o.block_owner_deletion.then_some(true),
                })
                .collect(),
            finalizers: pod.finalizers.iter().map(|f| f.to_string()).collect(),
            deleting: pod.deleting,
        }
    }

    /// Nothing but a possible owner: no owners, no finalizers, not being
    /// deleted.
    fn plain(&self) -> bool {
        self.owners.is_empty() && self.finalizers.is_empty() && !self.deleting
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

/// A uid in the canonical UUID form, as 128 bits.
fn uuid(uid: &str) -> Option<u128> {
    if uid.len() != 36 {
        return None;
    }
    let hex: String = uid.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32)
        .then(|| u128::from_str_radix(&hex, 16).ok())
        .flatten()
}

/// Every known object, indexed by uid, by key and by the owners its
/// references name; plain objects (see [`Item::plain`]) by uid alone.
#[derive(Debug, Default)]
pub struct Graph {
    items: HashMap<String, Item>,
    plain: HashMap<u128, &'static Kind>,
    by_key: HashMap<Key, String>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    pub fn new(items: impl IntoIterator<Item = Item>) -> Graph {
        let mut graph = Graph::default();
        for item in items {
            graph.upsert(item);
        }
        graph
    }

    /// The object at `key`.
    pub fn get(&self, key: &Key) -> Option<&Item> {
        self.items.get(self.by_key.get(key)?)
    }

    /// How many objects are known.
    pub fn len(&self) -> usize {
        self.items.len() + self.plain.len()
    }

    /// Whether no object is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
                let item = self.items.get(at)?;
                item.owners.iter().find(|o| o.uid == uid).map(|o| (item, o))
            })
    }

    /// Records `item` (replacing what had its uid); returns the keys of
    /// the objects whose decision the change may alter: itself, the owners
    /// it names (before and after) and, when it appeared or its foreground
    /// deletion started or stopped, its dependents.
    pub fn upsert(&mut self, item: Item) -> Vec<Key> {
        let old = self.forget(&item.uid, item.kind);
        let mut touched = vec![item.key()];
        let changed_state = match &old {
            Some(Some(old)) => old.deleting_dependents() != item.deleting_dependents(),
            Some(None) => item.deleting_dependents(),
            None => true,
        };
        let old_owners = old.as_ref().and_then(Option::as_ref).map(|o| &o.owners);
        self.touch_owners(old_owners.into_iter().flatten(), &mut touched);
        self.touch_owners(item.owners.iter(), &mut touched);
        if changed_state {
            touched.extend(self.dependents(&item.uid).map(|(d, _)| d.key()));
        }
        match uuid(&item.uid).filter(|_| item.plain()) {
            Some(uuid) => {
                self.plain.insert(uuid, item.kind);
            }
            None => {
                for owner in &item.owners {
                    self.dependents
                        .entry(owner.uid.clone())
                        .or_default()
                        .insert(item.uid.clone());
                }
                self.by_key.insert(item.key(), item.uid.clone());
                self.items.insert(item.uid.clone(), item);
            }
        }
        touched
    }

    /// Forgets the object with `uid`; returns the keys of its owners and
    /// dependents, whose decisions may change.
    pub fn remove(&mut self, uid: &str, kind: &'static Kind) -> Vec<Key> {
        let Some(old) = self.forget(uid, kind) else {
            return Vec::new();
        };
        let mut touched = Vec::new();
        if let Some(old) = &old {
            self.touch_owners(old.owners.iter(), &mut touched);
        }
        touched.extend(self.dependents(uid).map(|(d, _)| d.key()));
        touched
    }

    /// The uids of every object of `kind`.
    fn uids_of(&self, kind: &'static Kind) -> Vec<String> {
        self.items
            .values()
            .filter(|i| i.kind == kind)
            .map(|i| i.uid.clone())
            .chain(
                self.plain
                    .iter()
                    .filter(|(_, k)| **k == kind)
                    .map(|(u, _)| {
                        let h = format!("{u:032x}");
                        format!(
                            "{}-{}-{}-{}-{}",
                            &h[..8],
                            &h[8..12],
                            &h[12..16],
                            &h[16..20],
                            &h[20..]
                        )
                    }),
            )
            .collect()
    }

    fn touch_owners<'a>(
        &self,
        owners: impl Iterator<Item = &'a OwnerReference>,
        touched: &mut Vec<Key>,
    ) {
        for owner in owners {
            if let Some(found) = self.items.get(&owner.uid) {
                touched.push(found.key());
            }
        }
    }

    /// Takes the object with `uid` out of every index: `Some(Some(item))`
    /// when it was kept whole, `Some(None)` when plain.
    fn forget(&mut self, uid: &str, kind: &'static Kind) -> Option<Option<Item>> {
        if let Some(item) = self.items.remove(uid) {
            self.by_key.remove(&item.key());
            for owner in &item.owners {
                if let Some(deps) = self.dependents.get_mut(&owner.uid) {
                    deps.remove(uid);
                    if deps.is_empty() {
                        self.dependents.remove(&owner.uid);
                    }
                }
            }
            return Some(Some(item));
        }
        let uuid = uuid(uid)?;
        match self.plain.get(&uuid) {
            Some(k) if *k == kind => {
                self.plain.remove(&uuid);
                Some(None)
            }
            _ => None,
        }
    }

    /// The state of the owner `owner` of `item` as far as the caches know:
    /// `None` when it is not cached (it may still exist).
    fn cached_owner(&self, owner: &OwnerReference) -> Option<OwnerState> {
        if Kind::of(owner).is_none() {
            return Some(OwnerState::Unknown);
        }
        if let Some(found) = self.items.get(&owner.uid) {
            return Some(if found.deleting_dependents() {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            });
        }
        self.plain
            .contains_key(&uuid(&owner.uid)?)
            .then_some(OwnerState::Solid)
    }

    /// Whether the object at `key` needs work by what the caches say.
    fn needs_work(&self, item: &Item) -> bool {
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
    }

    /// The keys of every object the caches say needs work: owners being
    /// deleted with a propagation finalizer, and dependents with an owner
    /// that is missing or being deleted in the foreground.
    pub fn candidates(&self) -> Vec<Key> {
        self.items
            .values()
            .filter(|item| self.needs_work(item))
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

/// What one watch reports, by the index of its kind in [`KINDS`].
enum Seen {
    Init(usize),
    Apply(usize, ObjectMeta),
    Delete(usize, ObjectMeta),
    InitDone(usize),
}

/// The metadata of every object of `KINDS[at]`, as [`Seen`] events.
fn watch_metadata(client: &Client, at: usize) -> impl futures::Stream<Item = Seen> + Send + use<> {
    // Metadata only (`as=PartialObjectMetadata`): the collector reads
    // nothing else, and the objects are not decoded whole.
    let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(
        client.clone(),
        &KINDS[at].api_resource(),
    );
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let seen = match event {
                Ok(watcher::Event::Init) => Some(Seen::Init(at)),
                Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                    Some(Seen::Apply(at, o.metadata))
                }
                Ok(watcher::Event::Delete(o)) => Some(Seen::Delete(at, o.metadata)),
                Ok(watcher::Event::InitDone) => Some(Seen::InitDone(at)),
                Err(err) => {
                    tracing::warn!(kind = KINDS[at].kind, error = %err, "garbage collector watch failed; retrying");
                    None
                }
            };
            futures::future::ready(seen)
        })
}

/// The collector's state: the graph, the keys waiting and the re-lists
/// in progress.
struct Collector {
    graph: Graph,
    queue: Queue,
    /// uids seen by each kind's re-list in progress.
    relisting: HashMap<usize, HashSet<String>>,
    /// Kinds whose first list is in.
    listed: HashSet<usize>,
    pods_listed: bool,
}

impl Collector {
    fn synced(&self) -> bool {
        self.pods_listed && self.listed.len() == KINDS.len() - 1
    }

    fn touched(&self, keys: Vec<Key>) {
        if self.synced() {
            for key in keys {
                self.queue.add(key);
            }
        }
    }

    fn on_seen(&mut self, seen: Seen) {
        match seen {
            Seen::Init(at) => {
                self.relisting.insert(at, HashSet::new());
            }
            Seen::Apply(at, meta) => {
                let item = Item::new(&KINDS[at], &meta);
                if let Some(uids) = self.relisting.get_mut(&at) {
                    uids.insert(item.uid.clone());
                }
                let keys = self.graph.upsert(item);
                self.touched(keys);
            }
            Seen::Delete(at, meta) => {
                let keys = self
                    .graph
                    .remove(meta.uid.as_deref().unwrap_or_default(), &KINDS[at]);
                self.touched(keys);
            }
            Seen::InitDone(at) => {
                let listed = self.relisting.remove(&at).unwrap_or_default();
                for uid in self.graph.uids_of(&KINDS[at]) {
                    if !listed.contains(&uid) {
                        let keys = self.graph.remove(&uid, &KINDS[at]);
                        self.touched(keys);
                    }
                }
                let was = self.synced();
                self.listed.insert(at);
                self.became_synced(was);
            }
        }
    }

    fn on_pod(&mut self, change: Change) {
        let keys = match (&change.before, &change.after) {
            (_, Some(pod)) => self.graph.upsert(Item::of_pod(pod)),
            (Some(pod), None) => self.graph.remove(&pod.uid, Kind::named("Pod")),
            (None, None) => Vec::new(),
        };
        self.touched(keys);
    }

    fn pods_ready(&mut self) {
        let was = self.synced();
        self.pods_listed = true;
        self.became_synced(was);
    }

    /// Once every kind has listed, everything that needs work is queued.
    fn became_synced(&self, was: bool) {
        if !was && self.synced() {
            self.resync();
        }
    }

    fn resync(&self) {
        for key in self.graph.candidates() {
            self.queue.add(key);
        }
    }
}

/// Runs the collector until dropped, with its own pod watch.
pub async fn run(client: Client) {
    crate::pods::standalone(client.clone(), |pods| run_with(client, pods)).await;
}

/// Runs the collector until dropped, reading pods from `pods`: a change
/// queues the objects it concerns, each reconciled in turn against the
/// graph; a failure has the object looked at again after [`RETRY`].
pub async fn run_with(client: Client, pods: Pods) {
    let pod_kind = KINDS.iter().position(|k| k.kind == "Pod");
    let watches: Vec<_> = (0..KINDS.len())
        .filter(|at| Some(*at) != pod_kind)
        .map(|at| watch_metadata(&client, at).boxed())
        .collect();
    let mut seen = futures::stream::select_all(watches);
    let mut changes = pods.subscribe();
    let mut collector = Collector {
        graph: Graph::default(),
        queue: Queue::default(),
        relisting: HashMap::new(),
        listed: HashSet::new(),
        pods_listed: false,
    };
    let pods_ready = pods.wait_until_ready();
    let mut pods_ready = std::pin::pin!(pods_ready);
    let mut waiting_for_pods = true;
    let mut resync = tokio::time::interval(RESYNC);
    let queue = collector.queue.clone();
    loop {
        tokio::select! {
            biased;
            Some(event) = seen.next() => collector.on_seen(event),
            Some(change) = changes.recv() => collector.on_pod(change),
            () = &mut pods_ready, if waiting_for_pods => {
                waiting_for_pods = false;
                collector.pods_ready();
            }
            _ = resync.tick() => {
                if collector.synced() {
                    collector.resync();
                }
            }
            key = queue.next(), if collector.synced() => {
                if let Err(err) = reconcile_in(&collector.graph, &key, &client).await {
                    tracing::warn!(object = %format!("{}/{}", key.0, key.1), error = %err, "collection failed; retrying");
                    queue.add_after(key, RETRY);
                }
            }
        }
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
    }

    #[test]
    fn changes_touch_the_object_its_owners_and_its_dependents() {
        let uid = "0f8e6c1a-3b2d-4c5e-9f70-112233445566";
        let svc = owner("v1", "Service", uid, false);
        let service = item("Service", uid, vec![], &[]);
        let endpoints = item("Endpoints", "ep", vec![svc], &[]);
        let mut graph = Graph::new([endpoints.clone()]);
        assert_eq!(graph.candidates(), [endpoints.key()], "owner unknown");
        let touched = graph.upsert(service.clone());
        assert_eq!(touched, [service.key(), endpoints.key()]);
        assert!(graph.get(&service.key()).is_none(), "kept as its uid alone");
        assert_eq!(graph.len(), 2);
        assert!(graph.candidates().is_empty(), "the owner is solid");
        assert_eq!(graph.uids_of(Kind::named("Service")), [uid]);
        assert_eq!(graph.remove(uid, Kind::named("Service")), [endpoints.key()]);
        assert_eq!(graph.candidates(), [endpoints.key()]);
        let mut waiting = deleting(item("Service", uid, vec![], &[FOREGROUND_FINALIZER]));
        waiting.uid = uid.into();
        let touched = graph.upsert(waiting.clone());
        assert_eq!(touched, [waiting.key(), endpoints.key()]);
        assert_eq!(
            graph.remove("ep", Kind::named("Endpoints")),
            [waiting.key()]
        );
        assert_eq!(graph.candidates(), [waiting.key()], "free to release");
    }
}
