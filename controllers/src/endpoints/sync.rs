//! The endpoints controller's loop: one task owns the [`Index`] and what
//! the API is known to hold, fed by three watches (Services, Endpoints and
//! the slices this controller manages) and by the changes of the process's
//! shared pod cache ([`crate::pods`]). A change marks the Services it
//! concerns; each marked Service is planned against what is known to be
//! written — no GET or LIST per change — and only what differs is written,
//! by up to [`CONCURRENT_SYNCS`] writers at once, one at a time per Service.
//!
//! Every write records the resourceVersion it produced and the signature
//! of what it meant to write, so the watch event of the controller's own
//! write is recognised, while a change by anyone else (an edit, a delete)
//! marks the Service again. A restarted watch re-lists and forgets what the
//! list no longer holds, so the loop is level-triggered throughout.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::desired::{endpoints_signature, slice_signature};
use super::index::Index;
use super::{MANAGED_BY_LABEL, MANAGER, SERVICE_NAME_LABEL, TRIGGER_TIME};
use crate::cache::key_of;
use crate::pods::{Change, PodSummary, Pods};
use crate::queue::Key;
use crate::unless_gone;

/// Services written at once (Kubernetes' `--concurrent-service-endpoint-syncs`
/// default is 5; knit's store batches concurrent commits, so a few more
/// pay off).
pub const CONCURRENT_SYNCS: usize = 8;
/// How long a failed sync waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What the API is known to hold for one object the controller writes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    resource_version: String,
    /// The signature of the object as the API returned it.
    signature: u64,
    /// The signature the controller meant to write, when this version is
    /// its own write (the API may normalise what it stores).
    written: Option<u64>,
    /// Owned by a Service as its controller (Endpoints only; slices are
    /// watched by the controller's own `managed-by` label).
    ours: bool,
}

impl Seen {
    fn says(&self, signature: u64) -> bool {
        self.signature == signature || self.written == Some(signature)
    }

    fn observed(object_rv: Option<String>, signature: u64, ours: bool) -> Seen {
        Seen {
            resource_version: object_rv.unwrap_or_default(),
            signature,
            written: None,
            ours,
        }
    }

    /// Whether a watch event at `resource_version` is older than or the
    /// same as what is recorded (knit's resourceVersions are integers;
    /// anything else is compared for equality only).
    fn covers(&self, resource_version: &str) -> bool {
        match (
            self.resource_version.parse::<u64>(),
            resource_version.parse::<u64>(),
        ) {
            (Ok(seen), Ok(event)) => event <= seen,
            _ => self.resource_version == resource_version,
        }
    }
}

/// One write of a sync.
#[derive(Debug)]
enum Op {
    ApplyEndpoints(Box<Endpoints>, u64),
    DeleteEndpoints,
    ApplySlice(Box<EndpointSlice>, u64),
    DeleteSlice(String),
}

/// What a finished write left in the API.
#[derive(Debug)]
enum Outcome {
    Endpoints(Option<Seen>),
    Slice(String, Option<Seen>),
}

/// A finished sync: what its writes did, and the error that stopped it.
struct Done {
    key: Key,
    outcomes: Vec<Outcome>,
    error: Option<kube::Error>,
}

/// Which watches have listed everything at least once.
#[derive(Debug, Default)]
struct Synced {
    services: bool,
    pods: bool,
    endpoints: bool,
    slices: bool,
}

/// Keys seen since a watch (re)started listing, to forget the rest when
/// the list is done.
#[derive(Debug, Default)]
struct Relisting {
    services: Option<HashSet<Key>>,
    endpoints: Option<HashSet<Key>>,
    slices: Option<HashSet<(Key, String)>>,
}

/// An Endpoints object as the watch reports it.
struct ObservedEndpoints {
    key: Key,
    seen: Seen,
}

/// A managed slice as the watch reports it, under its Service's key.
struct ObservedSlice {
    service: Key,
    name: String,
    seen: Seen,
}

struct Controller {
    client: Client,
    /// The process's shared pod cache.
    pods: Pods,
    index: Index,
    /// Every pod of the first full list has been indexed.
    indexed: bool,
    endpoints: HashMap<Key, Seen>,
    slices: HashMap<Key, BTreeMap<String, Seen>>,
    synced: Synced,
    relisting: Relisting,
    marked: VecDeque<Key>,
    marked_set: HashSet<Key>,
    /// The earliest change each marked Service reflects.
    triggers: HashMap<Key, jiff::Timestamp>,
    in_flight: HashSet<Key>,
    permits: Arc<Semaphore>,
    done: mpsc::UnboundedSender<Done>,
    retry: mpsc::UnboundedSender<Key>,
}

/// Runs the controller on its own pod cache until dropped.
pub async fn run(client: Client) {
    crate::pods::standalone(client.clone(), |pods| run_with(client, pods)).await;
}

/// Runs the controller until dropped, reading pods from the process's
/// shared cache.
pub async fn run_with(client: Client, pods: Pods) {
    let mut changes = pods.subscribe();
    // Only the spec and the identity are read: managedFields, annotations
    // (kubectl's last-applied copy) and status would cost kilobytes per
    // Service.
    let services = watch::<Service, _>(client.clone(), watcher::Config::default(), |mut s| {
        s.metadata.managed_fields = None;
        s.metadata.annotations = None;
        s.status = None;
        s
    });
    let endpoints = watch::<Endpoints, _>(client.clone(), watcher::Config::default(), |e| {
        let ours = e
            .owner_references()
            .iter()
            .any(|o| o.kind == "Service" && o.controller == Some(true));
        ObservedEndpoints {
            key: key_of(&e),
            seen: Seen::observed(e.resource_version(), endpoints_signature(&e), ours),
        }
    });
    let slice_config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let slices = watch::<EndpointSlice, _>(client.clone(), slice_config, |s| ObservedSlice {
        service: (
            s.namespace().unwrap_or_default(),
            s.labels()
                .get(SERVICE_NAME_LABEL)
                .cloned()
                .unwrap_or_default(),
        ),
        name: s.name_any(),
        seen: Seen::observed(s.resource_version(), slice_signature(&s), true),
    });
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel();
    let pods_listed = {
        let pods = pods.clone();
        async move { pods.wait_until_ready().await }
    };
    let mut controller = Controller {
        client,
        pods,
        index: Index::default(),
        indexed: false,
        endpoints: HashMap::new(),
        slices: HashMap::new(),
        synced: Synced::default(),
        relisting: Relisting::default(),
        marked: VecDeque::new(),
        marked_set: HashSet::new(),
        triggers: HashMap::new(),
        in_flight: HashSet::new(),
        permits: Arc::new(Semaphore::new(CONCURRENT_SYNCS)),
        done: done_tx,
        retry: retry_tx,
    };
    let mut services = std::pin::pin!(services);
    let mut pods_listed = std::pin::pin!(pods_listed);
    let mut endpoints = std::pin::pin!(endpoints);
    let mut slices = std::pin::pin!(slices);
    loop {
        // Pod changes wait until both the Services and the pods have been
        // listed and indexed, so that each pod finds the Services selecting
        // it through the index instead of every Service scanning every pod.
        tokio::select! {
            Some(event) = services.next() => controller.on_service(event),
            () = &mut pods_listed, if !controller.synced.pods => {
                controller.synced.pods = true;
                controller.became_synced();
            }
            Some(change) = changes.recv(), if controller.indexed => controller.on_pod(change),
            Some(event) = endpoints.next() => controller.on_endpoints(event),
            Some(event) = slices.next() => controller.on_slice(event),
            Some(done) = done_rx.recv() => controller.on_done(done),
            Some(key) = retry_rx.recv() => controller.mark(key, None),
            else => return,
        }
        controller.dispatch();
    }
}

/// Whether readiness moved between two versions of a pod.
fn readiness_changed(before: &PodSummary, after: &PodSummary) -> bool {
    before.ready() != after.ready() || before.ready_transition != after.ready_transition
}

/// A watch of every `K`, each object turned into `T` as it arrives (so
/// the typed object is dropped at once), resuming with back-off on errors,
/// which are logged.
fn watch<K, T>(
    client: Client,
    config: watcher::Config,
    project: impl Fn(K) -> T + Send + 'static,
) -> impl Stream<Item = watcher::Event<T>> + Send
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    T: Send + 'static,
{
    watcher(Api::<K>::all(client), config)
        .default_backoff()
        .filter_map(move |event| {
            let event = match event {
                Ok(event) => Some(match event {
                    watcher::Event::Apply(k) => watcher::Event::Apply(project(k)),
                    watcher::Event::Delete(k) => watcher::Event::Delete(project(k)),
                    watcher::Event::InitApply(k) => watcher::Event::InitApply(project(k)),
                    watcher::Event::Init => watcher::Event::Init,
                    watcher::Event::InitDone => watcher::Event::InitDone,
                }),
                Err(err) => {
                    tracing::warn!(kind = K::kind(&()).as_ref(), error = %err, "endpoints controller watch failed; retrying");
                    None
                }
            };
            futures::future::ready(event)
        })
}

impl Controller {
    /// Marks the Service at `key` for a sync; `trigger` is when the change
    /// that marks it happened (now, when `None`).
    fn mark(&mut self, key: Key, trigger: Option<jiff::Timestamp>) {
        let trigger = trigger.unwrap_or_else(jiff::Timestamp::now);
        self.triggers
            .entry(key.clone())
            .and_modify(|t| *t = (*t).min(trigger))
            .or_insert(trigger);
        if self.marked_set.insert(key.clone()) {
            self.marked.push_back(key);
        }
    }

    fn synced(&self) -> bool {
        let s = &self.synced;
        s.services && s.pods && s.endpoints && s.slices
    }

    fn on_service(&mut self, event: watcher::Event<Service>) {
        match event {
            watcher::Event::Init => self.relisting.services = Some(HashSet::new()),
            watcher::Event::InitApply(service) | watcher::Event::Apply(service) => {
                let key = {
                    let pods = self.pods.read();
                    self.index.apply_service(service, &pods)
                };
                if let Some(seen) = &mut self.relisting.services {
                    seen.insert(key.clone());
                }
                self.mark(key, None);
            }
            watcher::Event::Delete(service) => {
                let key = key_of(&service);
                self.index.delete_service(&key);
                self.mark(key, None);
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.services.take().unwrap_or_default();
                for key in self.index.service_keys() {
                    if !listed.contains(&key) {
                        self.index.delete_service(&key);
                        self.mark(key, None);
                    }
                }
                self.synced.services = true;
                self.became_synced();
            }
        }
    }

    fn on_pod(&mut self, change: Change) {
        let (before, after) = (change.before.as_deref(), change.after.as_deref());
        // Kubernetes reports a readiness change as triggered when the
        // pod's Ready condition changed; anything else, when it is seen.
        let trigger = match (before, after) {
            (Some(b), Some(a)) if !readiness_changed(b, a) => None,
            (_, Some(a)) => a.ready_transition,
            (_, None) => None,
        };
        for service in self.index.apply_pod(before, after) {
            self.mark(service, trigger);
        }
    }

    fn on_endpoints(&mut self, event: watcher::Event<ObservedEndpoints>) {
        match event {
            watcher::Event::Init => self.relisting.endpoints = Some(HashSet::new()),
            watcher::Event::InitApply(observed) | watcher::Event::Apply(observed) => {
                if let Some(seen) = &mut self.relisting.endpoints {
                    seen.insert(observed.key.clone());
                }
                let known = self.endpoints.get(&observed.key);
                if !known.is_some_and(|k| k.covers(&observed.seen.resource_version)) {
                    self.endpoints.insert(observed.key.clone(), observed.seen);
                    self.mark(observed.key, None);
                }
            }
            watcher::Event::Delete(observed) => {
                self.endpoints.remove(&observed.key);
                self.mark(observed.key, None);
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.endpoints.take().unwrap_or_default();
                let gone: Vec<Key> = self
                    .endpoints
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.endpoints.remove(&key);
                    self.mark(key, None);
                }
                self.synced.endpoints = true;
                self.became_synced();
            }
        }
    }

    fn on_slice(&mut self, event: watcher::Event<ObservedSlice>) {
        match event {
            watcher::Event::Init => self.relisting.slices = Some(HashSet::new()),
            watcher::Event::InitApply(observed) | watcher::Event::Apply(observed) => {
                if let Some(seen) = &mut self.relisting.slices {
                    seen.insert((observed.service.clone(), observed.name.clone()));
                }
                let slices = self.slices.entry(observed.service.clone()).or_default();
                let known = slices.get(&observed.name);
                if !known.is_some_and(|k| k.covers(&observed.seen.resource_version)) {
                    slices.insert(observed.name, observed.seen);
                    self.mark(observed.service, None);
                }
            }
            watcher::Event::Delete(observed) => {
                if let Some(slices) = self.slices.get_mut(&observed.service) {
                    slices.remove(&observed.name);
                }
                self.mark(observed.service, None);
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.slices.take().unwrap_or_default();
                let mut touched = Vec::new();
                for (service, slices) in &mut self.slices {
                    slices.retain(|name, _| {
                        let keep = listed.contains(&(service.clone(), name.clone()));
                        if !keep {
                            touched.push(service.clone());
                        }
                        keep
                    });
                }
                self.slices.retain(|_, slices| !slices.is_empty());
                for service in touched {
                    self.mark(service, None);
                }
                self.synced.slices = true;
                self.became_synced();
            }
        }
    }

    /// Once every watch has listed, every Service and every object the
    /// controller may have written gets a look: the level-triggered start.
    fn became_synced(&mut self) {
        if !self.synced() {
            return;
        }
        if !self.indexed {
            // Every pod once, now that every Service is known; the changes
            // queued meanwhile follow, and replaying them is harmless.
            let pods = self.pods.read();
            for pod in pods.all() {
                self.index.apply_pod(None, Some(pod));
            }
            drop(pods);
            self.indexed = true;
        }
        let keys: HashSet<Key> = self
            .index
            .service_keys()
            .into_iter()
            .chain(self.endpoints.keys().cloned())
            .chain(self.slices.keys().cloned())
            .collect();
        for key in keys {
            self.mark(key, None);
        }
    }

    fn on_done(&mut self, done: Done) {
        self.in_flight.remove(&done.key);
        for outcome in done.outcomes {
            match outcome {
                Outcome::Endpoints(Some(seen)) => {
                    self.endpoints.insert(done.key.clone(), seen);
                }
                Outcome::Endpoints(None) => {
                    self.endpoints.remove(&done.key);
                }
                Outcome::Slice(name, Some(seen)) => {
                    self.slices
                        .entry(done.key.clone())
                        .or_default()
                        .insert(name, seen);
                }
                Outcome::Slice(name, None) => {
                    if let Some(slices) = self.slices.get_mut(&done.key) {
                        slices.remove(&name);
                    }
                }
            }
        }
        if let Some(err) = done.error {
            tracing::warn!(namespace = %done.key.0, service = %done.key.1, error = %err, "endpoints sync failed; retrying");
            let retry = self.retry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY).await;
                let _ = retry.send(done.key);
            });
        }
    }

    /// Starts syncs for marked Services while writers are free.
    fn dispatch(&mut self) {
        if !self.synced() {
            return;
        }
        let mut busy = Vec::new();
        while let Some(key) = self.marked.pop_front() {
            if self.in_flight.contains(&key) {
                // Synced again once the running sync is done.
                busy.push(key);
                continue;
            }
            let ops = self.plan(&key);
            self.marked_set.remove(&key);
            let trigger = self.triggers.remove(&key);
            if ops.is_empty() {
                continue;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                // Every writer is busy: plan it again when one is free.
                self.marked.push_front(key.clone());
                self.marked_set.insert(key.clone());
                if let Some(trigger) = trigger {
                    self.triggers.insert(key, trigger);
                }
                break;
            };
            let trigger = trigger.unwrap_or_else(jiff::Timestamp::now);
            self.in_flight.insert(key.clone());
            tokio::spawn(write(
                self.client.clone(),
                key,
                ops,
                trigger,
                permit,
                self.done.clone(),
            ));
        }
        self.marked.extend(busy);
    }

    /// The writes that make the API hold what should exist for `key`.
    fn plan(&self, key: &Key) -> Vec<Op> {
        let mut ops = Vec::new();
        let seen_slices = self.slices.get(key);
        let desired = {
            let pods = self.pods.read();
            self.index.desired(key, &pods)
        };
        match desired {
            Some(want) => {
                let signature = endpoints_signature(&want.endpoints);
                if !self.endpoints.get(key).is_some_and(|s| s.says(signature)) {
                    ops.push(Op::ApplyEndpoints(Box::new(want.endpoints), signature));
                }
                let mut wanted = HashSet::new();
                for slice in want.slices {
                    let name = slice.name_any();
                    let signature = slice_signature(&slice);
                    let seen = seen_slices.and_then(|s| s.get(&name));
                    if !seen.is_some_and(|s| s.says(signature)) {
                        ops.push(Op::ApplySlice(Box::new(slice), signature));
                    }
                    wanted.insert(name);
                }
                for name in seen_slices.into_iter().flat_map(BTreeMap::keys) {
                    if !wanted.contains(name) {
                        ops.push(Op::DeleteSlice(name.clone()));
                    }
                }
            }
            // Gone, or no longer selecting: remove what the controller made
            // (Endpoints written by hand for a selector-less Service stay).
            None => {
                if self.endpoints.get(key).is_some_and(|s| s.ours) {
                    ops.push(Op::DeleteEndpoints);
                }
                for name in seen_slices.into_iter().flat_map(BTreeMap::keys) {
                    ops.push(Op::DeleteSlice(name.clone()));
                }
            }
        }
        ops
    }
}

/// Carries out one Service's writes, all at once: the Endpoints object
/// and each slice are separate objects, as in Kubernetes, where two
/// controllers write them independently. Reports every outcome and the
/// first error.
async fn write(
    client: Client,
    key: Key,
    ops: Vec<Op>,
    trigger: jiff::Timestamp,
    _permit: OwnedSemaphorePermit,
    done: mpsc::UnboundedSender<Done>,
) {
    let trigger = trigger.to_string();
    let results = futures::future::join_all(
        ops.into_iter()
            .map(|op| write_one(&client, &key, op, &trigger)),
    )
    .await;
    let mut outcomes = Vec::new();
    let mut error = None;
    for result in results {
        match result {
            Ok(outcome) => outcomes.push(outcome),
            Err(err) => {
                error.get_or_insert(err);
            }
        }
    }
    let _ = done.send(Done {
        key,
        outcomes,
        error,
    });
}

async fn write_one(
    client: &Client,
    (namespace, name): &Key,
    op: Op,
    trigger: &str,
) -> Result<Outcome, kube::Error> {
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(MANAGER).force();
    let stored = |rv, signature, written| Seen {
        written: Some(written),
        ..Seen::observed(rv, signature, true)
    };
    match op {
        Op::ApplyEndpoints(mut object, signature) => {
            object
                .annotations_mut()
                .insert(TRIGGER_TIME.into(), trigger.into());
            let got = endpoints
                .patch(name, &params, &Patch::Apply(&*object))
                .await?;
            let seen = stored(got.resource_version(), endpoints_signature(&got), signature);
            Ok(Outcome::Endpoints(Some(seen)))
        }
        Op::DeleteEndpoints => {
            unless_gone(endpoints.delete(name, &DeleteParams::default()).await)?;
            Ok(Outcome::Endpoints(None))
        }
        Op::ApplySlice(mut object, signature) => {
            object
                .annotations_mut()
                .insert(TRIGGER_TIME.into(), trigger.into());
            let slice_name = object.name_any();
            let got = slices
                .patch(&slice_name, &params, &Patch::Apply(&*object))
                .await?;
            let seen = stored(got.resource_version(), slice_signature(&got), signature);
            Ok(Outcome::Slice(slice_name, Some(seen)))
        }
        Op::DeleteSlice(slice_name) => {
            unless_gone(slices.delete(&slice_name, &DeleteParams::default()).await)?;
            Ok(Outcome::Slice(slice_name, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seen_object_says_what_it_stores_or_what_was_written() {
        let mut seen = Seen::observed(Some("7".into()), 1, true);
        assert!(seen.says(1) && !seen.says(2));
        seen.written = Some(2);
        assert!(seen.says(2), "the API may store a normalised form");
    }

    #[test]
    fn older_watch_events_are_covered_by_a_newer_write() {
        let seen = Seen::observed(Some("12".into()), 1, true);
        assert!(seen.covers("12") && seen.covers("9"));
        assert!(!seen.covers("13"));
        let opaque = Seen::observed(Some("abc".into()), 1, true);
        assert!(opaque.covers("abc") && !opaque.covers("abd"));
    }
}
