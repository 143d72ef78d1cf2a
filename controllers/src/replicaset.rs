//! The ReplicaSet controller: keeps `spec.replicas` (default 1) live pods
//! matching `spec.selector` owned by every ReplicaSet, as
//! kube-controller-manager's replicaset controller does.
//!
//! [`plan`] is the pure core: which matching orphans to adopt, how many pods
//! to create from `spec.template` (named `<rs>-` plus the five characters
//! the API server appends to `generateName`), and which surplus pods to
//! delete (unscheduled first, then not ready, then the newest). Pods being
//! deleted or finished (Succeeded/Failed) do not count. [`status`] computes
//! the status written through the status subresource: a pod is available
//! once its `Ready` condition has been `True` for `spec.minReadySeconds`
//! (counted from the condition's `lastTransitionTime`, as kube's
//! `IsPodAvailable`), and [`next_available`] says when the next ready pod
//! turns available, so the ReplicaSet is looked at again at that moment.
//!
//! [`run`] reflects ReplicaSets and reads pods from the shared
//! [`crate::pods`] cache; a pod change queues its owner (or, for an orphan,
//! every ReplicaSet of its namespace that selects it), and a reconcile
//! looks only at the pods its ReplicaSet controls (through the cache's
//! owner index) and the orphans of its namespace.
//! Creations and deletions not yet seen in the pod cache are remembered
//! ("expectations", as client-go's), so a stale cache never makes the
//! controller create or delete twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::cache::{self, key_of};
use crate::pods::{Change, PodSummary, Pods};
use crate::queue::{Key, Queue};
use crate::unless_gone;

/// The field manager of every write.
pub const MANAGER: &str = "replicaset-controller.knit";

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        ..PatchParams::default()
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    }
}

/// How long a failed reconcile waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long creations/deletions may go unseen in the cache before the
/// controller stops waiting for them.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often every ReplicaSet is looked at again.
const RESYNC: Duration = Duration::from_secs(30);
/// How long after a pod's availability moment it is looked at: it turns
/// available strictly after that moment.
const AVAILABLE_MARGIN: Duration = Duration::from_millis(100);

/// Whether `selector` picks an object with `labels`: every matchLabels
/// pair and every matchExpression holds. An empty selector picks nothing
/// (a ReplicaSet must have one).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selects_with(selector, |k| labels.get(k).map(String::as_str))
}

/// [`selects`] over labels read through `label` (a pod summary's sorted
/// labels, say).
pub fn selects_with<'a>(selector: &LabelSelector, label: impl Fn(&str) -> Option<&'a str>) -> bool {
    let pairs = selector.match_labels.iter().flatten();
    let expressions = selector.match_expressions.iter().flatten();
    if pairs.clone().next().is_none() && expressions.clone().next().is_none() {
        return false;
    }
    pairs.into_iter().all(|(k, v)| label(k) == Some(v.as_str()))
        && expressions.into_iter().all(|e| {
            let values = e.values.as_deref().unwrap_or(&[]);
            let value = label(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
                "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether the pod counts toward a ReplicaSet: not being deleted, not
/// finished.
pub fn active(pod: &PodSummary) -> bool {
    pod.active()
}

/// Whether the pod's `Ready` condition is `True`.
pub fn ready(pod: &PodSummary) -> bool {
    pod.ready()
}

/// `Some(lastTransitionTime)` when the pod's `Ready` condition is `True`
/// (the inner `None` when it carries no transition time).
fn ready_since(pod: &PodSummary) -> Option<Option<Timestamp>> {
    pod.ready_since
}

/// Whether the pod is available at `now`: ready, and ready for longer
/// than `min_ready_seconds` by its `Ready` condition's transition time.
/// As kube's, a pod whose condition has no transition time is available
/// only when no minimum is asked for.
pub fn available(pod: &PodSummary, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => {
            since.is_some_and(|t| t + SignedDuration::from_secs(i64::from(min_ready_seconds)) < now)
        }
    }
}

fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// How long until the first of `rs`'s ready but not yet available pods
/// turns available, if any will: the moment to look at it again.
pub fn next_available(
    rs: &ReplicaSet,
    pods: &[Arc<PodSummary>],
    now: Timestamp,
) -> Option<Duration> {
    let min_ready = min_ready_seconds(rs);
    if min_ready <= 0 {
        return None;
    }
    let (owned, _) = mine(rs, pods);
    owned
        .iter()
        .filter(|p| !available(p, min_ready, now))
        .filter_map(|p| ready_since(p).flatten())
        .map(|since| since + SignedDuration::from_secs(i64::from(min_ready)))
        .min()
        .map(|at| {
            // Available strictly after `at`: a moment past it.
            let wait = at.duration_since(now).max(SignedDuration::ZERO);
            Duration::try_from(wait).unwrap_or_default() + AVAILABLE_MARGIN
        })
}

fn scheduled(pod: &PodSummary) -> bool {
    pod.node.is_some()
}

/// The controller owner reference of an object, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The replicas a ReplicaSet asks for (default 1).
pub fn wanted(rs: &ReplicaSet) -> usize {
    let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    usize::try_from(replicas).unwrap_or(0)
}

/// What the controller should do for one ReplicaSet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Orphan pods to take ownership of.
    pub adopt: Vec<String>,
    /// Pods to create.
    pub create: usize,
    /// Pods to delete, in order.
    pub delete: Vec<String>,
}

/// The live pods a ReplicaSet owns, or would adopt, among `pods`.
fn mine<'a>(
    rs: &ReplicaSet,
    pods: &'a [Arc<PodSummary>],
) -> (Vec<&'a PodSummary>, Vec<&'a PodSummary>) {
    let uid = rs.metadata.uid.as_deref();
    let namespace = rs.namespace().unwrap_or_default();
    let selector = rs.spec.as_ref().map(|s| &s.selector);
    let mut owned = Vec::new();
    let mut orphans = Vec::new();
    for pod in pods {
        if *pod.namespace != *namespace || !active(pod) {
            continue;
        }
        match pod.controller() {
            Some(owner) if Some(&*owner.uid) == uid => owned.push(&**pod),
            Some(_) => {}
            None => {
                if selector.is_some_and(|s| selects_with(s, |k| pod.labels.get(k))) {
                    orphans.push(&**pod);
                }
            }
        }
    }
    (owned, orphans)
}

/// Surplus order: unscheduled first, then not ready, then the newest, then
/// by name.
fn delete_order(a: &PodSummary, b: &PodSummary) -> std::cmp::Ordering {
    let rank = |p: &PodSummary| (scheduled(p), ready(p));
    rank(a)
        .cmp(&rank(b))
        .then_with(|| b.created.cmp(&a.created))
        .then_with(|| a.name.cmp(&b.name))
}

/// What to do so that `rs` has [`wanted`] live pods, given the cached pods.
/// A ReplicaSet being deleted is left to the garbage collector, as
/// Kubernetes' controller does: it neither adopts, creates nor deletes.
pub fn plan(rs: &ReplicaSet, pods: &[Arc<PodSummary>]) -> Plan {
    if rs.metadata.deletion_timestamp.is_some() {
        return Plan::default();
    }
    let (owned, orphans) = mine(rs, pods);
    let mut counted: Vec<&PodSummary> = owned;
    let mut adopt = Vec::new();
    for orphan in orphans {
        adopt.push(orphan.name.to_string());
        counted.push(orphan);
    }
    let want = wanted(rs);
    let mut plan = Plan {
        adopt,
        ..Plan::default()
    };
    if counted.len() < want {
        plan.create = want - counted.len();
    } else if counted.len() > want {
        counted.sort_by(|a, b| delete_order(a, b));
        plan.delete = counted[..counted.len() - want]
            .iter()
            .map(|p| p.name.to_string())
            .collect();
    }
    plan
}

/// The status of `rs` at `now` given the cached pods (those it owns).
pub fn status(rs: &ReplicaSet, pods: &[Arc<PodSummary>], now: Timestamp) -> ReplicaSetStatus {
    let (owned, _) = mine(rs, pods);
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&PodSummary) -> bool| {
        i32::try_from(owned.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let min_ready = min_ready_seconds(rs);
    ReplicaSetStatus {
        replicas: count(&|_| true),
        ready_replicas: Some(count(&|p| ready(p))),
        available_replicas: Some(count(&|p| available(p, min_ready, now))),
        fully_labeled_replicas: Some(count(&|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.labels.get(k) == Some(v.as_str()))
        })),
        observed_generation: rs.metadata.generation,
        conditions: None,
        terminating_replicas: None,
    }
}

/// The owner reference a ReplicaSet's pods carry.
pub fn owner_ref(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.name_any(),
        uid: rs.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pod for `rs`, from its template.
pub fn new_pod(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone());
    let template_meta = template
        .as_ref()
        .and_then(|t| t.metadata.clone())
        .unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            owner_references: Some(vec![owner_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.and_then(|t| t.spec),
        status: None,
    }
}

/// Why a reconcile failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
}

/// Creations and deletions a ReplicaSet made that the cache has not shown
/// yet.
#[derive(Debug, Default)]
pub struct Expectations {
    /// Pod names created.
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Option<Instant>,
}

/// What the controller shares.
pub struct Context {
    pub client: Client,
    pub replicasets: Store<ReplicaSet>,
    pub pods: Pods,
    pub expectations: Mutex<HashMap<Key, Expectations>>,
}

impl Context {
    /// Whether the cache shows everything `key` did last time (or it has
    /// waited long enough).
    fn satisfied(&self, key: &Key) -> bool {
        let mut all = self.expectations.lock().unwrap_or_else(|e| e.into_inner());
        let Some(expect) = all.get(key) else {
            return true;
        };
        let namespace = &key.0;
        let done = {
            let pods = self.pods.read();
            expect
                .created
                .iter()
                .all(|n| pods.get(namespace, n).is_some())
                && expect
                    .deleted
                    .iter()
                    .all(|n| pods.get(namespace, n).is_none_or(|p| p.deleting))
        };
        let expired = expect
            .since
            .is_none_or(|s| s.elapsed() > EXPECTATION_TIMEOUT);
        if done || expired {
            all.remove(key);
            return true;
        }
        false
    }

    /// The pods `rs` controls and the orphans of its namespace: all it
    /// may own or adopt.
    fn candidates(&self, rs: &ReplicaSet) -> Vec<Arc<PodSummary>> {
        let pods = self.pods.read();
        let uid = rs.metadata.uid.as_deref().unwrap_or_default();
        let namespace = rs.namespace().unwrap_or_default();
        pods.controlled_by(uid)
            .chain(
                pods.in_namespace(&namespace)
                    .filter(|p| p.controller().is_none()),
            )
            .cloned()
            .collect()
    }
}

/// The owner references of `pod` as the API holds them.
fn owner_references(pod: &PodSummary) -> Vec<OwnerReference> {
    pod.owners
        .iter()
        .map(|o| OwnerReference {
            api_version: o.api_version.to_string(),
            kind: o.kind.to_string(),
            name: o.name.to_string(),
            uid: o.uid.to_string(),
            controller: o.controller.then_some(true),
            block_owner_deletion: o.block_owner_deletion.then_some(true),
        })
        .collect()
}

/// Makes the pods of the ReplicaSet at `key` match [`plan`] and writes its
/// status; `Some(delay)` when it should be looked at again then (a ready
/// pod turning available).
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<Option<Duration>, Error> {
    let (namespace, name) = key;
    let Some(rs) = ctx.replicasets.get(&ObjectRef::new(name).within(namespace)) else {
        ctx.expectations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        return Ok(None);
    };
    if !ctx.satisfied(key) {
        return Ok(None);
    }
    let pods = ctx.candidates(&rs);
    let plan = plan(&rs, &pods);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let mut view = pods;
    for orphan in &plan.adopt {
        let Some(pod) = ctx.pods.get(namespace, orphan) else {
            continue;
        };
        let mut owners = owner_references(&pod);
        owners.push(owner_ref(&rs));
        let patch = json!({"metadata": {
            "ownerReferences": owners,
            "resourceVersion": &*pod.resource_version,
        }});
        match pod_api
            .patch(orphan, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(adopted) => {
                view.retain(|p| *p.name != **orphan);
                view.push(Arc::new(PodSummary::from(&adopted)));
            }
            // Changed or gone meanwhile: the next event decides again.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    if plan.create > 0 || !plan.delete.is_empty() {
        let mut all = ctx.expectations.lock().unwrap_or_else(|e| e.into_inner());
        let expect = all.entry(key.clone()).or_default();
        expect.created.clear();
        expect.deleted = plan.delete.iter().cloned().collect();
        expect.since = Some(Instant::now());
    }
    for _ in 0..plan.create {
        let created = pod_api.create(&post_params(), &new_pod(&rs)).await?;
        tracing::info!(replicaset = %format!("{namespace}/{name}"), pod = %created.name_any(), "created pod");
        let mut all = ctx.expectations.lock().unwrap_or_else(|e| e.into_inner());
        let expect = all.entry(key.clone()).or_default();
        expect.created.insert(created.name_any());
    }
    for victim in &plan.delete {
        match pod_api.delete(victim, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(replicaset = %format!("{namespace}/{name}"), pod = %victim, "deleted pod");
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    let now = Timestamp::now();
    let want = status(&rs, &view, now);
    if rs.status.as_ref() != Some(&want) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
        let patch = Patch::Merge(json!({"status": want}));
        unless_gone(rs_api.patch_status(name, &patch_params(), &patch).await)?;
    }
    Ok(next_available(&rs, &view, now))
}

/// Queues the ReplicaSets a pod change concerns: the controller owner of
/// either side, or for an orphan every ReplicaSet of its namespace that
/// selects it.
fn queue_for(change: &Change, replicasets: &Store<ReplicaSet>, queue: &Queue) {
    for pod in change.sides() {
        match pod.controller() {
            Some(owner) if &*owner.kind == "ReplicaSet" => {
                queue.add((pod.namespace.to_string(), owner.name.to_string()));
            }
            Some(_) => {}
            None => {
                for rs in replicasets.state() {
                    if rs.namespace().as_deref() == Some(&*pod.namespace)
                        && rs
                            .spec
                            .as_ref()
                            .is_some_and(|s| selects_with(&s.selector, |k| pod.labels.get(k)))
                    {
                        queue.add(key_of(&*rs));
                    }
                }
            }
        }
    }
}

/// Runs the controller until dropped, with its own pod watch.
pub async fn run(client: Client) {
    crate::pods::standalone(client.clone(), |pods| run_with(client, pods)).await;
}

/// Runs the controller until dropped, reading pods from `pods`.
pub async fn run_with(client: Client, pods: Pods) {
    let queue = Queue::default();
    let (replicasets, rs_events) = cache::reflect::<ReplicaSet>(&client);

    let rs_queue = queue.clone();
    let feed_rs = rs_events.for_each(move |event| {
        if let Ok(rs) = event {
            rs_queue.add(key_of(&rs));
        }
        futures::future::ready(())
    });
    let mut changes = pods.subscribe();
    let feed_pods = {
        let queue = queue.clone();
        let replicasets = replicasets.clone();
        async move {
            while let Some(change) = changes.recv().await {
                queue_for(&change, &replicasets, &queue);
            }
        }
    };

    let ctx = Context {
        client,
        replicasets: replicasets.clone(),
        pods: pods.clone(),
        expectations: Mutex::default(),
    };
    let all = {
        let replicasets = replicasets.clone();
        let queue = queue.clone();
        move || {
            for rs in replicasets.state() {
                queue.add(key_of(&*rs));
            }
        }
    };
    let work = async {
        let _ = replicasets.wait_until_ready().await;
        pods.wait_until_ready().await;
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            let key = tokio::select! {
                key = queue.next() => key,
                _ = resync.tick() => { all(); continue; }
            };
            match reconcile(&key, &ctx).await {
                Ok(None) => {}
                Ok(Some(delay)) => queue.add_after(key, delay),
                Err(err) => {
                    tracing::warn!(replicaset = %format!("{}/{}", key.0, key.1), error = %err, "reconcile failed; retrying");
                    ctx.expectations
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    queue.add_after(key, RETRY);
                }
            }
        }
    };
    tokio::select! {
        () = feed_rs => {}
        () = feed_pods => {}
        () = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default", "uid": "rs-uid", "generation": 3},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
                "template": {"metadata": {"labels": {"app": "web", "v": "1"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
        }))
        .unwrap()
    }

    struct P {
        name: &'static str,
        owner: Option<&'static str>,
        node: bool,
        ready: bool,
        created: i64,
    }

    fn summary(pod: &Pod) -> Arc<PodSummary> {
        Arc::new(PodSummary::from(pod))
    }

    fn typed(p: P) -> Pod {
        let mut pod = json!({
            "metadata": {"name": p.name, "namespace": "default", "labels": {"app": "web", "v": "1"},
                "creationTimestamp": jiff::Timestamp::from_second(p.created).unwrap().to_string()},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            "status": {"conditions": [{"type": "Ready", "status": if p.ready { "True" } else { "False" }}]},
        });
        if let Some(uid) = p.owner {
            pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": "x", "uid": uid, "controller": true}]);
        }
        if p.node {
            pod["spec"]["nodeName"] = json!("node-1");
        }
        serde_json::from_value(pod).unwrap()
    }

    fn pod(p: P) -> Arc<PodSummary> {
        summary(&typed(p))
    }

    fn owned_pod(name: &'static str, node: bool, ready: bool, created: i64) -> Pod {
        typed(P {
            name,
            owner: Some("rs-uid"),
            node,
            ready,
            created,
        })
    }

    fn owned(name: &'static str, node: bool, ready: bool, created: i64) -> Arc<PodSummary> {
        summary(&owned_pod(name, node, ready, created))
    }

    #[test]
    fn a_deficit_is_created_and_matching_orphans_adopted() {
        let orphan = pod(P {
            name: "orphan",
            owner: None,
            node: true,
            ready: true,
            created: 1,
        });
        let others = pod(P {
            name: "someone-elses",
            owner: Some("other-uid"),
            node: true,
            ready: true,
            created: 1,
        });
        let mut finished = owned_pod("done", true, false, 1);
        finished.status.as_mut().unwrap().phase = Some("Failed".into());
        let pods = [
            owned("a", true, true, 1),
            orphan,
            others,
            summary(&finished),
        ];
        let plan = plan(&rs(4), &pods);
        assert_eq!(plan.adopt, vec!["orphan".to_string()]);
        assert_eq!(plan.create, 2);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn a_surplus_deletes_unscheduled_then_not_ready_then_newest() {
        let pods = [
            owned("old-ready", true, true, 10),
            owned("new-ready", true, true, 20),
            owned("not-ready", true, false, 5),
            owned("unscheduled", false, false, 1),
            owned("older-ready", true, true, 5),
        ];
        assert_eq!(
            plan(&rs(2), &pods).delete,
            vec!["unscheduled", "not-ready", "new-ready"]
        );
        assert_eq!(plan(&rs(5), &pods), Plan::default());
        assert_eq!(plan(&rs(0), &pods).delete.len(), 5);
    }

    #[test]
    fn a_replicaset_being_deleted_is_left_to_the_garbage_collector() {
        let mut deleting = rs(3);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let orphan = pod(P {
            name: "orphan",
            owner: None,
            node: true,
            ready: true,
            created: 1,
        });
        assert_eq!(plan(&deleting, &[orphan]), Plan::default());
        assert_eq!(
            plan(&rs(3), &[]).create,
            3,
            "the same ReplicaSet alive would create"
        );
    }

    #[test]
    fn selectors_honour_match_expressions() {
        let selector = rs(1).spec.unwrap().selector;
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selects(&selector, &labels(&[("app", "web")])));
        assert!(selects(
            &selector,
            &labels(&[("app", "web"), ("tier", "fe")])
        ));
        assert!(!selects(
            &selector,
            &labels(&[("app", "web"), ("tier", "db")])
        ));
        assert!(!selects(&selector, &labels(&[("app", "api")])));
        assert!(!selects(
            &LabelSelector::default(),
            &labels(&[("app", "web")])
        ));
    }

    #[test]
    fn status_counts_owned_live_pods() {
        let mut relabeled = owned_pod("relabeled", true, false, 1);
        relabeled.labels_mut().remove("v");
        let pods = [
            owned("a", true, true, 1),
            owned("b", true, false, 1),
            summary(&relabeled),
        ];
        let status = status(&rs(3), &pods, Timestamp::now());
        assert_eq!(status.replicas, 3);
        assert_eq!(status.ready_replicas, Some(1));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.fully_labeled_replicas, Some(2));
        assert_eq!(status.observed_generation, Some(3));
    }

    #[test]
    fn new_pods_come_from_the_template_with_a_controller_reference() {
        let pod = new_pod(&rs(1));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(pod.labels().get("v").map(String::as_str), Some("1"));
        let owner = controller_ref(&pod.metadata).unwrap();
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.uid.as_str(),
                owner.block_owner_deletion
            ),
            ("ReplicaSet", "rs-uid", Some(true))
        );
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx")
        );
    }

    fn ready_at(name: &'static str, since: Option<&str>) -> Arc<PodSummary> {
        let mut pod = owned_pod(name, true, true, 1);
        let condition = &mut pod.status.as_mut().unwrap().conditions.as_mut().unwrap()[0];
        condition.last_transition_time = since.map(|s| Time(s.parse().unwrap()));
        summary(&pod)
    }

    #[test]
    fn a_pod_is_available_only_after_min_ready_seconds_of_readiness() {
        let mut slow = rs(3);
        slow.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let pods = [
            ready_at("early", Some("2026-01-01T00:00:00Z")),
            ready_at("late", Some("2026-01-01T00:00:05Z")),
            ready_at("untimed", None),
            owned("not-ready", true, false, 1),
        ];
        let at = |s: &str| -> Timestamp { s.parse().unwrap() };
        // Exactly ten seconds is not yet "longer than ten seconds".
        let s = status(&slow, &pods, at("2026-01-01T00:00:10Z"));
        assert_eq!((s.ready_replicas, s.available_replicas), (Some(3), Some(0)));
        let s = status(&slow, &pods, at("2026-01-01T00:00:10.5Z"));
        assert_eq!(s.available_replicas, Some(1));
        let s = status(&slow, &pods, at("2026-01-01T00:01:00Z"));
        assert_eq!(s.available_replicas, Some(2), "no transition time: never");
        // Without a minimum, every ready pod is available at once.
        let s = status(&rs(3), &pods, at("2026-01-01T00:00:00Z"));
        assert_eq!(s.available_replicas, Some(3));

        // The next look is just past the first pending pod's moment.
        let wait = next_available(&slow, &pods, at("2026-01-01T00:00:04Z")).unwrap();
        assert_eq!(wait, Duration::from_secs(6) + AVAILABLE_MARGIN);
        let wait = next_available(&slow, &pods, at("2026-01-01T00:00:11Z")).unwrap();
        assert_eq!(wait, Duration::from_secs(4) + AVAILABLE_MARGIN);
        assert_eq!(
            next_available(&slow, &pods, at("2026-01-01T00:00:16Z")),
            None
        );
        assert_eq!(
            next_available(&rs(3), &pods, at("2026-01-01T00:00:00Z")),
            None
        );
    }
}
