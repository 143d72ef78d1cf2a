//! The pods every controller reads, from one watch per process: each Pod
//! kept as a [`PodSummary`] — exactly the fields the endpoints and
//! ReplicaSet controllers, the scheduler, node lifecycle and the garbage
//! collector read, in exact allocations — indexed by node and by controller
//! owner, with every change sent to each subscriber.
//!
//! A typed `Pod` costs about five kilobytes in memory (k8s-openapi's
//! structs hold every field inline); a summary a few hundred bytes, which
//! is what lets the controllers hold a hundred thousand pods. Only a pod
//! the scheduler still has to place keeps its whole spec (`pending`), and
//! only until it is bound.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};

use crate::queue::Key;

/// A pod's labels sorted by key, each string in one exact allocation (a
/// `BTreeMap` spends a whole node on a pod's two or three labels).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Labels(Box<[(Box<str>, Box<str>)]>);

impl Labels {
    /// The value of `key`, if the pod has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        let i = self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
        Some(&self.0[i].1)
    }

    /// Every `(key, value)`, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

impl<K: Into<Box<str>>, V: Into<Box<str>>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut pairs: Vec<(Box<str>, Box<str>)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        Labels(pairs.into_boxed_slice())
    }
}

/// A container port with a name, which a Service's `targetPort` may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: Box<str>,
    pub port: i32,
    pub protocol: Box<str>,
}

/// One owner reference of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub api_version: Box<str>,
    pub kind: Box<str>,
    pub name: Box<str>,
    pub uid: Box<str>,
    pub controller: bool,
    pub block_owner_deletion: bool,
}

/// A container port bound on its node: `(hostPort, protocol, hostIP)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub port: i32,
    pub protocol: Box<str>,
    pub ip: Box<str>,
}

/// What the controllers keep of one Pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSummary {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub uid: Box<str>,
    pub resource_version: Box<str>,
    pub labels: Labels,
    pub owners: Box<[Owner]>,
    pub finalizers: Box<[Box<str>]>,
    /// `spec.nodeName`, when bound.
    pub node: Option<Box<str>>,
    pub created: Option<Timestamp>,
    /// `Some(lastTransitionTime)` while the `Ready` condition is `True`.
    pub ready_since: Option<Option<Timestamp>>,
    /// `Ready` or `ContainersReady` is anything but `False`: what node
    /// lifecycle turns to `False` when the node is lost.
    pub says_ready: bool,
    /// `deletionTimestamp` is set.
    pub deleting: bool,
    /// `Succeeded` or `Failed`.
    pub finished: bool,
    pub host_ports: Box<[HostPort]>,
    /// `status.podIP`, when it has one.
    pub ip: Option<Box<str>>,
    /// When the `Ready` condition last changed, whatever it says now: the
    /// trigger time of the endpoint change it causes.
    pub ready_transition: Option<Timestamp>,
    /// `spec.hostname` and `spec.subdomain`, for headless Services' names.
    pub hostname: Option<Box<str>>,
    pub subdomain: Option<Box<str>>,
    /// Container ports that have a name, which a Service's `targetPort`
    /// may name.
    pub named_ports: Box<[NamedPort]>,
    /// The whole pod (managedFields dropped) while the scheduler has to
    /// place it: unbound, not being deleted, not finished.
    pub pending: Option<Arc<Pod>>,
}

/// Every container port of `pod` with a host port.
pub fn host_ports(pod: &Pod) -> Box<[HostPort]> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(HostPort {
                port: p.host_port.filter(|&h| h > 0)?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").into(),
                ip: p.host_ip.as_deref().unwrap_or_default().into(),
            })
        })
        .collect()
}

fn boxed(s: Option<&str>) -> Option<Box<str>> {
    s.filter(|s| !s.is_empty()).map(Box::from)
}

impl From<&Pod> for PodSummary {
    fn from(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
        let node = spec.and_then(|s| boxed(s.node_name.as_deref()));
        let deleting = meta.deletion_timestamp.is_some();
        let finished = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let host_ports = host_ports(pod);
        let ready_condition = conditions.iter().find(|c| c.type_ == "Ready");
        let named_ports = spec
            .into_iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: boxed(p.name.as_deref())?,
                    port: p.container_port,
                    protocol: p.protocol.as_deref().unwrap_or("TCP").into(),
                })
            })
            .collect();
        let pending = (node.is_none() && !deleting && !finished).then(|| {
            let mut pod = pod.clone();
            pod.metadata.managed_fields = None;
            Arc::new(pod)
        });
        PodSummary {
            namespace: meta.namespace.as_deref().unwrap_or_default().into(),
            name: meta.name.as_deref().unwrap_or_default().into(),
            uid: meta.uid.as_deref().unwrap_or_default().into(),
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            labels: pod.labels().iter().map(|(k, v)| (&**k, &**v)).collect(),
            owners: pod
                .owner_references()
                .iter()
                .map(|o| Owner {
                    api_version: o.api_version.as_str().into(),
                    kind: o.kind.as_str().into(),
                    name: o.name.as_str().into(),
                    uid: o.uid.as_str().into(),
                    controller: o.controller == Some(true),
                    block_owner_deletion: o.block_owner_deletion == Some(true),
                })
                .collect(),
            finalizers: pod.finalizers().iter().map(|f| f.as_str().into()).collect(),
            node,
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            ready_since: conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")
                .map(|c| c.last_transition_time.as_ref().map(|t| t.0)),
            says_ready: conditions.iter().any(|c| {
                (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status != "False"
            }),
            deleting,
            finished,
            host_ports,
            ip: status.and_then(|s| boxed(s.pod_ip.as_deref())),
            ready_transition: ready_condition
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            hostname: spec.and_then(|s| boxed(s.hostname.as_deref())),
            subdomain: spec.and_then(|s| boxed(s.subdomain.as_deref())),
            named_ports,
            pending,
        }
    }
}

impl PodSummary {
    /// `(namespace, name)`.
    pub fn key(&self) -> Key {
        (self.namespace.to_string(), self.name.to_string())
    }

    /// The controller owner reference, if any.
    pub fn controller(&self) -> Option<&Owner> {
        self.owners.iter().find(|o| o.controller)
    }

    /// Whether the pod counts toward its owner: not being deleted, not
    /// finished.
    pub fn active(&self) -> bool {
        !self.deleting && !self.finished
    }

    /// Whether the `Ready` condition is `True`.
    pub fn ready(&self) -> bool {
        self.ready_since.is_some()
    }

    /// The container port named `name` for `protocol`.
    pub fn named_port(&self, name: &str, protocol: &str) -> Option<i32> {
        self.named_ports
            .iter()
            .find(|p| &*p.name == name && &*p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// A change of one pod: what it was and what it is (`None`: absent).
#[derive(Debug, Clone)]
pub struct Change {
    pub before: Option<Arc<PodSummary>>,
    pub after: Option<Arc<PodSummary>>,
}

impl Change {
    /// Both sides that exist.
    pub fn sides(&self) -> impl Iterator<Item = &Arc<PodSummary>> {
        self.before.iter().chain(&self.after)
    }
}

/// `(namespace, name)` in exact allocations, as the indexes hold it.
type SmallKey = (Box<str>, Box<str>);

/// Every pod, and the indexes.
#[derive(Debug, Default)]
pub struct State {
    /// Pods by namespace, then name.
    pods: HashMap<Box<str>, HashMap<Box<str>, Arc<PodSummary>>>,
    by_node: HashMap<Box<str>, HashSet<SmallKey>>,
    by_controller: HashMap<Box<str>, HashSet<SmallKey>>,
}

impl State {
    /// The pod at `(namespace, name)`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<PodSummary>> {
        self.pods.get(namespace)?.get(name)
    }

    /// Every pod.
    pub fn all(&self) -> impl Iterator<Item = &Arc<PodSummary>> {
        self.pods.values().flat_map(HashMap::values)
    }

    /// Every pod of `namespace`.
    pub fn in_namespace<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a Arc<PodSummary>> + use<'a> {
        self.pods
            .get(namespace)
            .into_iter()
            .flat_map(HashMap::values)
    }

    /// The pods bound to `node`.
    pub fn on_node<'a>(
        &'a self,
        node: &str,
    ) -> impl Iterator<Item = &'a Arc<PodSummary>> + use<'a> {
        self.indexed(self.by_node.get(node))
    }

    /// The pods whose controller owner reference names `uid`.
    pub fn controlled_by<'a>(
        &'a self,
        uid: &str,
    ) -> impl Iterator<Item = &'a Arc<PodSummary>> + use<'a> {
        self.indexed(self.by_controller.get(uid))
    }

    /// How many pods are known.
    pub fn len(&self) -> usize {
        self.pods.values().map(HashMap::len).sum()
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    fn indexed<'a>(
        &'a self,
        keys: Option<&'a HashSet<SmallKey>>,
    ) -> impl Iterator<Item = &'a Arc<PodSummary>> + 'a {
        keys.into_iter()
            .flatten()
            .filter_map(|(ns, name)| self.get(ns, name))
    }

    /// Records `pod` (or forgets the pod at `key` when `None`); returns
    /// what it replaced.
    fn set(&mut self, key: SmallKey, pod: Option<Arc<PodSummary>>) -> Option<Arc<PodSummary>> {
        let before = match &pod {
            Some(pod) => self
                .pods
                .entry(key.0.clone())
                .or_default()
                .insert(key.1.clone(), pod.clone()),
            None => {
                let pods = self.pods.get_mut(&key.0)?;
                let before = pods.remove(&key.1);
                if pods.is_empty() {
                    self.pods.remove(&key.0);
                }
                before
            }
        };
        let node_of = |p: &Option<Arc<PodSummary>>| p.as_ref().and_then(|p| p.node.clone());
        let owner_of = |p: &Option<Arc<PodSummary>>| {
            p.as_ref().and_then(|p| Some(p.controller()?.uid.clone()))
        };
        reindex(&mut self.by_node, &key, node_of(&before), node_of(&pod));
        reindex(
            &mut self.by_controller,
            &key,
            owner_of(&before),
            owner_of(&pod),
        );
        before
    }
}

fn reindex(
    index: &mut HashMap<Box<str>, HashSet<SmallKey>>,
    key: &SmallKey,
    before: Option<Box<str>>,
    after: Option<Box<str>>,
) {
    if before == after {
        return;
    }
    if let Some(old) = before
        && let Some(keys) = index.get_mut(&old)
    {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(&old);
        }
    }
    if let Some(new) = after {
        index.entry(new).or_default().insert(key.clone());
    }
}

#[derive(Debug)]
struct Inner {
    state: RwLock<State>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Change>>>,
    ready: watch::Sender<bool>,
}

/// The shared pod cache: cheap to clone, filled by [`Pods::feed`].
#[derive(Debug, Clone)]
pub struct Pods {
    inner: Arc<Inner>,
}

impl Default for Pods {
    fn default() -> Self {
        Pods {
            inner: Arc::new(Inner {
                state: RwLock::default(),
                subscribers: Mutex::default(),
                ready: watch::Sender::new(false),
            }),
        }
    }
}

impl Pods {
    /// The current pods (a read lock: hold it briefly, never across an
    /// await).
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod at `(namespace, name)`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PodSummary>> {
        self.read().get(namespace, name).cloned()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// Waits until the first list is in.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Records `pod` (or removes the pod at `key`) and tells every
    /// subscriber, unless nothing changed.
    pub fn apply(&self, key: SmallKey, pod: Option<PodSummary>) {
        let after = pod.map(Arc::new);
        let before = {
            let mut state = self.inner.state.write().unwrap_or_else(|e| e.into_inner());
            if let (Some(old), Some(new)) = (state.get(&key.0, &key.1), &after)
                && **old == **new
            {
                return;
            }
            if after.is_none() && state.get(&key.0, &key.1).is_none() {
                return;
            }
            state.set(key, after.clone())
        };
        let change = Change { before, after };
        let mut subscribers = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.send(change.clone()).is_ok());
    }

    /// Watches every Pod into the cache until dropped, resuming with
    /// back-off on errors; a re-list forgets the pods it no longer holds.
    pub async fn feed(self, client: Client) {
        let mut listed: Option<HashSet<SmallKey>> = None;
        let events = watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(error = %err, "pod watch failed; retrying");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listed = Some(HashSet::new()),
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                    let summary = PodSummary::from(&pod);
                    let key = (summary.namespace.clone(), summary.name.clone());
                    if let Some(listed) = &mut listed {
                        listed.insert(key.clone());
                    }
                    self.apply(key, Some(summary));
                }
                watcher::Event::Delete(pod) => {
                    let key = (
                        pod.namespace().unwrap_or_default().into(),
                        pod.name_any().into(),
                    );
                    self.apply(key, None);
                }
                watcher::Event::InitDone => {
                    let listed = listed.take().unwrap_or_default();
                    let gone: Vec<SmallKey> = self
                        .read()
                        .all()
                        .map(|p| (p.namespace.clone(), p.name.clone()))
                        .filter(|k| !listed.contains(k))
                        .collect();
                    for key in gone {
                        self.apply(key, None);
                    }
                    self.inner.ready.send_replace(true);
                }
            }
        }
    }
}

/// Runs `controller` on a cache fed by its own watch: what a controller's
/// standalone `run` does ([`crate::run`] shares one cache among them).
pub(crate) async fn standalone<F>(client: Client, controller: impl FnOnce(Pods) -> F)
where
    F: Future<Output = ()>,
{
    let pods = Pods::default();
    tokio::select! {
        () = pods.clone().feed(client) => {}
        () = controller(pods) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn labels_are_sorted_and_found_by_key() {
        let labels: Labels = [("tier", "web"), ("app", "shop"), ("z", "")]
            .into_iter()
            .collect();
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["app", "tier", "z"]);
        assert_eq!(
            (labels.get("app"), labels.get("z"), labels.get("b")),
            (Some("shop"), Some(""), None)
        );
    }

    #[test]
    fn a_summary_keeps_what_endpoints_are_made_of() {
        let summary = PodSummary::from(&pod(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"},
            "spec": {"nodeName": "n1", "hostname": "web-1", "subdomain": "web",
                     "containers": [
                         {"name": "a", "ports": [{"name": "http", "containerPort": 8080},
                                                 {"containerPort": 9090}]},
                         {"name": "b", "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": "10.0.1.2",
                       "conditions": [{"type": "Ready", "status": "False",
                                       "lastTransitionTime": "2026-11-26T10:00:00Z"}]},
        })));
        assert_eq!(summary.ip.as_deref(), Some("10.0.1.2"));
        assert!(!summary.ready());
        assert_eq!(
            summary.ready_transition,
            Some("2026-11-26T10:00:00Z".parse().unwrap()),
            "the transition time is kept whichever way Ready went"
        );
        assert_eq!(summary.named_port("http", "TCP"), Some(8080));
        assert_eq!(summary.named_port("dns", "UDP"), Some(53));
        assert_eq!(summary.named_port("dns", "TCP"), None);
        assert_eq!(summary.named_ports.len(), 2, "the unnamed port is not kept");
        assert_eq!(
            (summary.hostname.as_deref(), summary.subdomain.as_deref()),
            (Some("web-1"), Some("web"))
        );
    }

    #[test]
    fn a_summary_keeps_what_the_controllers_read() {
        let summary = PodSummary::from(&pod(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                         "labels": {"app": "web"}, "finalizers": ["f"],
                         "annotations": {"big": "x".repeat(1000)},
                         "creationTimestamp": "2026-11-26T09:00:00Z",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": "web", "uid": "rs1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "a",
                "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 9090}]}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-26T10:00:00Z"}]},
        })));
        assert_eq!(summary.key(), ("shop".into(), "web-1".into()));
        assert_eq!((&*summary.uid, &*summary.resource_version), ("u1", "7"));
        assert_eq!(summary.labels.get("app"), Some("web"));
        assert_eq!(summary.controller().map(|o| &*o.uid), Some("rs1"));
        assert_eq!(summary.node.as_deref(), Some("n1"));
        assert_eq!(&*summary.finalizers, [Box::from("f")]);
        assert!(summary.ready() && summary.says_ready && summary.active());
        assert_eq!(
            summary.ready_since,
            Some(Some("2026-11-26T10:00:00Z".parse().unwrap()))
        );
        assert_eq!(summary.host_ports.len(), 1);
        assert_eq!(summary.host_ports[0].port, 8080);
        assert!(summary.pending.is_none(), "a bound pod keeps no spec");
    }

    #[test]
    fn an_unbound_pod_keeps_its_whole_spec_until_bound() {
        let summary = PodSummary::from(&pod(json!({
            "metadata": {"name": "p", "namespace": "default",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": [{"name": "c"}], "nodeSelector": {"disk": "ssd"}},
        })));
        let pending = summary.pending.clone().expect("pending");
        assert!(pending.metadata.managed_fields.is_none());
        assert!(pending.spec.as_ref().unwrap().node_selector.is_some());
        assert!(!summary.ready() && !summary.says_ready);
    }

    #[tokio::test]
    async fn changes_reach_subscribers_and_indexes_follow_them() {
        let pods = Pods::default();
        let mut changes = pods.subscribe();
        let on = |node: &str, owner: &str| {
            PodSummary::from(&pod(json!({
                "metadata": {"name": "p", "namespace": "default", "uid": "u",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "rs", "uid": owner, "controller": true}]},
                "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            })))
        };
        let key = || (Box::from("default"), Box::from("p"));
        pods.apply(key(), Some(on("n1", "a")));
        pods.apply(key(), Some(on("n1", "a")));
        pods.apply(key(), Some(on("n2", "b")));
        {
            let state = pods.read();
            assert_eq!(state.on_node("n1").count(), 0);
            assert_eq!(state.on_node("n2").count(), 1);
            assert_eq!(state.controlled_by("a").count(), 0);
            assert_eq!(state.controlled_by("b").count(), 1);
        }
        pods.apply(key(), None);
        pods.apply(key(), None);
        let first = changes.recv().await.unwrap();
        assert!(first.before.is_none() && first.after.is_some());
        let second = changes.recv().await.unwrap();
        assert_eq!(second.after.unwrap().node.as_deref(), Some("n2"));
        let third = changes.recv().await.unwrap();
        assert!(third.after.is_none(), "the same pod twice is one change");
        assert!(changes.try_recv().is_err(), "a second delete is none");
        assert!(pods.read().is_empty() && pods.read().by_node.is_empty());
    }
}
