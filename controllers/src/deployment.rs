//! The Deployment controller: for every Deployment, a ReplicaSet for its
//! current `spec.template` (named `<deployment>-<pod-template-hash>`),
//! rolled to by the Deployment's strategy, and the Deployment's status and
//! conditions from its ReplicaSets', as kube-controller-manager's
//! deployment controller does.
//!
//! The pure core: [`pod_template_hash`] (kube's: FNV-1a 32 of the template,
//! its decimal digits mapped into the alphabet `bcdfghjklmnpqrstvwxz2456789`),
//! [`resolve`] for `maxSurge`/`maxUnavailable` (surge rounds up,
//! unavailable down, both zero means one unavailable), [`rolling_step`] and
//! [`recreate_step`] for the next replica counts, and [`status`].
//!
//! [`run`] reflects Deployments and ReplicaSets; a ReplicaSet event queues
//! its owning Deployment. The ReplicaSets' own pods are the replicaset
//! controller's business; a deleted Deployment's ReplicaSets are the
//! garbage collector's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::cache::{self, key_of};
use crate::queue::{Key, Queue};
use crate::replicaset::controller_ref;
use crate::unless_gone;

/// The field manager of every write.
pub const MANAGER: &str = "deployment-controller.knit";

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

/// The label (and selector term) that tells a Deployment's ReplicaSets
/// apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The ReplicaSet annotation numbering a Deployment's templates.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Kubernetes' alphabet for generated strings: no vowels, no look-alikes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// How long a failed reconcile waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A stable short name for `template`: the FNV-1a 32 hash of its JSON,
/// its decimal digits mapped into [`ALPHABET`] (as kube's
/// `rand.SafeEncodeString`).
pub fn pod_template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// An int-or-percent of `total`: a percentage rounds up or down as asked.
pub fn resolve(
    value: Option<&IntOrString>,
    default_percent: i32,
    total: i32,
    round_up: bool,
) -> i32 {
    let percent = match value {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i32>().ok())
            .unwrap_or(default_percent),
        None => default_percent,
    };
    let scaled = i64::from(total) * i64::from(percent.max(0));
    let value = if round_up {
        (scaled + 99) / 100
    } else {
        scaled / 100
    };
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// `(maxSurge, maxUnavailable)` of a Deployment's rolling update, resolved
/// against `spec.replicas`.
pub fn surge_and_unavailable(deployment: &Deployment) -> (i32, i32) {
    let replicas = desired_replicas(deployment);
    let rolling = deployment
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(
        rolling.and_then(|r| r.max_surge.as_ref()),
        25,
        replicas,
        true,
    );
    let unavailable = resolve(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        25,
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn desired_replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

fn recreate(deployment: &Deployment) -> bool {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// A ReplicaSet's size: what it asks for and how many of its pods are
/// available (and live at all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    pub replicas: i32,
    pub available: i32,
    pub live: i32,
}

/// The next `spec.replicas` of the new ReplicaSet and of the old ones
/// (oldest first) in a rolling update: first the new one grows within
/// `replicas + surge` pods in all; once it cannot, the old ones shrink,
/// their unavailable pods first, keeping `replicas - unavailable`
/// available.
pub fn rolling_step(
    replicas: i32,
    surge: i32,
    unavailable: i32,
    new: Size,
    old: &[Size],
) -> (i32, Vec<i32>) {
    let mut olds: Vec<i32> = old.iter().map(|s| s.replicas).collect();
    let old_total: i32 = olds.iter().sum();
    if new.replicas > replicas {
        return (replicas, olds);
    }
    if new.replicas < replicas {
        let max_total = replicas + surge;
        let current = new.replicas + old_total;
        if current < max_total {
            let up = (max_total - current).min(replicas - new.replicas);
            return (new.replicas + up, olds);
        }
    }
    if old_total == 0 {
        return (new.replicas, olds);
    }
    let min_available = replicas - unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let max_scaled_down = new.replicas + old_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return (new.replicas, olds);
    }
    // Unhealthy pods of old ReplicaSets go first: they serve nothing.
    let mut cleaned = 0;
    for (count, size) in olds.iter_mut().zip(old) {
        let unhealthy = (*count - size.available).max(0);
        let down = unhealthy.min(max_scaled_down - cleaned);
        *count -= down;
        cleaned += down;
    }
    let available: i32 = new.available + old.iter().map(|s| s.available).sum::<i32>();
    let mut room = available - min_available;
    for count in &mut olds {
        if room <= 0 {
            break;
        }
        let down = (*count).min(room);
        *count -= down;
        room -= down;
    }
    (new.replicas, olds)
}

/// The next replica counts with the Recreate strategy: the old
/// ReplicaSets go to zero, and the new one grows once their pods are gone.
pub fn recreate_step(replicas: i32, old: &[Size]) -> (i32, Vec<i32>) {
    let gone = old.iter().all(|s| s.replicas == 0 && s.live == 0);
    let target = if gone { replicas } else { 0 };
    (target, vec![0; old.len()])
}

/// The ReplicaSet a Deployment wants for its current template.
pub fn new_replicaset(deployment: &Deployment, hash: &str, revision: u64) -> ReplicaSet {
    let spec = deployment.spec.clone().unwrap_or_default();
    let mut template = spec.template;
    let meta = template.metadata.get_or_insert_default();
    meta.labels
        .get_or_insert_default()
        .insert(HASH_LABEL.into(), hash.into());
    let labels = meta.labels.clone();
    let mut selector = spec.selector;
    selector
        .match_labels
        .get_or_insert_default()
        .insert(HASH_LABEL.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", deployment.name_any())),
            namespace: deployment.namespace(),
            labels,
            annotations: Some(BTreeMap::from([(REVISION.into(), revision.to_string())])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: deployment.name_any(),
                uid: deployment.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            selector,
            template: Some(template),
            min_ready_seconds: spec.min_ready_seconds,
        }),
        status: None,
    }
}

fn size(rs: &ReplicaSet) -> Size {
    let status = rs.status.as_ref();
    Size {
        replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        available: status.and_then(|s| s.available_replicas).unwrap_or(0),
        live: status.map_or(0, |s| s.replicas),
    }
}

fn revision(rs: &ReplicaSet) -> u64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    before: Option<&DeploymentStatus>,
    now: &Time,
) -> DeploymentCondition {
    let status = if status { "True" } else { "False" };
    let previous = before
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == type_);
    let same = previous.filter(|c| c.status == status && c.reason.as_deref() == Some(reason));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: previous
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .or_else(|| Some(now.clone())),
        last_update_time: same
            .and_then(|c| c.last_update_time.clone())
            .or_else(|| Some(now.clone())),
    }
}

/// The Deployment's status from its new ReplicaSet and all of its
/// ReplicaSets (the new one among them).
pub fn status(
    deployment: &Deployment,
    new: &ReplicaSet,
    all: &[&ReplicaSet],
    now: &Time,
) -> DeploymentStatus {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let of = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let replicas = sum(&|rs| of(rs).replicas);
    let ready = sum(&|rs| of(rs).ready_replicas.unwrap_or(0));
    let available = sum(&|rs| of(rs).available_replicas.unwrap_or(0));
    let updated = of(new).replicas;
    let wanted = desired_replicas(deployment);
    let (_, max_unavailable) = surge_and_unavailable(deployment);
    let before = deployment.status.as_ref();
    let min_ok = available >= wanted - max_unavailable;
    let available_condition = if min_ok {
        (
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let complete = updated == wanted && replicas == wanted && available == wanted;
    let new_name = new.name_any();
    let progressing = if complete {
        (
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else {
        (
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((wanted - available).max(0)),
        conditions: Some(vec![
            condition(
                "Available",
                min_ok,
                available_condition.0,
                available_condition.1.into(),
                before,
                now,
            ),
            condition(
                "Progressing",
                true,
                progressing.0,
                progressing.1,
                before,
                now,
            ),
        ]),
        collision_count: before.and_then(|s| s.collision_count),
        terminating_replicas: None,
    }
}

/// Why a reconcile failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
}

/// What the controller shares.
pub struct Context {
    pub client: Client,
    pub deployments: Store<Deployment>,
    pub replicasets: Store<ReplicaSet>,
}

async fn scale(api: &Api<ReplicaSet>, rs: &mut Arc<ReplicaSet>, to: i32) -> Result<(), Error> {
    if size(rs).replicas == to {
        return Ok(());
    }
    let patch = json!({"spec": {"replicas": to}});
    let scaled = api
        .patch(&rs.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(replicaset = %rs.name_any(), replicas = to, "scaled");
    *rs = Arc::new(scaled);
    Ok(())
}

/// Makes the Deployment at `key` have its ReplicaSet, rolled to, and its
/// status.
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<(), Error> {
    let (namespace, name) = key;
    let Some(deployment) = ctx.deployments.get(&ObjectRef::new(name).within(namespace)) else {
        return Ok(());
    };
    if deployment.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let uid = deployment.metadata.uid.clone().unwrap_or_default();
    let mut owned: Vec<Arc<ReplicaSet>> = ctx
        .replicasets
        .state()
        .into_iter()
        .filter(|rs| {
            rs.namespace().as_deref() == Some(namespace.as_str())
                && controller_ref(&rs.metadata).is_some_and(|o| o.uid == uid)
        })
        .collect();
    owned.sort_by_key(|rs| {
        (
            revision(rs),
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    });
    let template = deployment.spec.clone().unwrap_or_default().template;
    let hash = pod_template_hash(&template);
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    let position = owned
        .iter()
        .position(|rs| rs.labels().get(HASH_LABEL) == Some(&hash));
    let mut new = match position {
        Some(i) => owned.remove(i),
        None => {
            let next = owned.iter().map(|rs| revision(rs)).max().unwrap_or(0) + 1;
            let wanted = new_replicaset(&deployment, &hash, next);
            match api.create(&post_params(), &wanted).await {
                Ok(created) => {
                    tracing::info!(deployment = %format!("{namespace}/{name}"), replicaset = %created.name_any(), "created replicaset");
                    Arc::new(created)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Arc::new(api.get(&wanted.name_any()).await?)
                }
                Err(err) => return Err(err.into()),
            }
        }
    };
    let mut old = owned;
    // A template rolled back to is the newest revision again.
    let newest_old = old.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    if revision(&new) <= newest_old {
        let patch = json!({"metadata": {"annotations": {REVISION: (newest_old + 1).to_string()}}});
        new = Arc::new(
            api.patch(&new.name_any(), &patch_params(), &Patch::Merge(&patch))
                .await?,
        );
    }
    let replicas = desired_replicas(&deployment);
    let old_sizes: Vec<Size> = old.iter().map(|rs| size(rs)).collect();
    let (new_target, old_targets) = if recreate(&deployment) {
        recreate_step(replicas, &old_sizes)
    } else {
        let (surge, unavailable) = surge_and_unavailable(&deployment);
        rolling_step(replicas, surge, unavailable, size(&new), &old_sizes)
    };
    for (rs, to) in old.iter_mut().zip(old_targets) {
        scale(&api, rs, to).await?;
    }
    scale(&api, &mut new, new_target).await?;

    let mut all: Vec<&ReplicaSet> = old.iter().map(|rs| &**rs).collect();
    all.push(&new);
    let now = Time(
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    );
    let want = status(&deployment, &new, &all, &now);
    if deployment.status.as_ref() != Some(&want) {
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
        let patch = Patch::Merge(json!({"status": want}));
        unless_gone(
            deployments
                .patch_status(name, &patch_params(), &patch)
                .await,
        )?;
    }
    Ok(())
}

/// Runs the controller until dropped.
pub async fn run(client: Client) {
    let queue = Queue::default();
    let (deployments, deployment_events) = cache::reflect::<Deployment>(&client);
    let (replicasets, rs_events) = cache::reflect::<ReplicaSet>(&client);
    let deployment_queue = queue.clone();
    let feed_deployments = deployment_events.for_each(move |event| {
        if let Ok(deployment) = event {
            deployment_queue.add(key_of(&deployment));
        }
        futures::future::ready(())
    });
    let rs_queue = queue.clone();
    let feed_rs = rs_events.for_each(move |event| {
        if let Ok(rs) = event
            && let Some(owner) = controller_ref(&rs.metadata)
            && owner.kind == "Deployment"
        {
            rs_queue.add((rs.namespace().unwrap_or_default(), owner.name.clone()));
        }
        futures::future::ready(())
    });
    let ctx = Context {
        client,
        deployments: deployments.clone(),
        replicasets: replicasets.clone(),
    };
    let work = async {
        let _ = deployments.wait_until_ready().await;
        let _ = replicasets.wait_until_ready().await;
        loop {
            let key = queue.next().await;
            if let Err(err) = reconcile(&key, &ctx).await {
                tracing::warn!(deployment = %format!("{}/{}", key.0, key.1), error = %err, "reconcile failed; retrying");
                queue.add_after(key, RETRY);
            }
        }
    };
    tokio::select! {
        () = feed_deployments => {}
        () = feed_rs => {}
        () = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 2},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": strategy,
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}},
            },
        }))
        .unwrap()
    }

    fn template(d: &Deployment) -> PodTemplateSpec {
        d.spec.clone().unwrap().template
    }

    #[test]
    fn the_template_hash_is_stable_short_and_in_kubes_alphabet() {
        let a = deployment(2, "nginx:1", json!({}));
        let hash = pod_template_hash(&template(&a));
        assert_eq!(hash, pod_template_hash(&template(&a.clone())));
        assert!((1..=10).contains(&hash.len()), "{hash}");
        assert!(hash.bytes().all(|b| ALPHABET.contains(&b)), "{hash}");
        // Replicas are not in the template; the image is.
        assert_eq!(
            hash,
            pod_template_hash(&template(&deployment(5, "nginx:1", json!({}))))
        );
        assert_ne!(
            hash,
            pod_template_hash(&template(&deployment(2, "nginx:2", json!({}))))
        );
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(resolve(Some(&pct("25%")), 25, 10, true), 3);
        assert_eq!(resolve(Some(&pct("25%")), 25, 10, false), 2);
        assert_eq!(resolve(None, 25, 1, true), 1);
        assert_eq!(resolve(None, 25, 1, false), 0);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), 25, 10, false), 2);
        // Defaults, and both zero meaning one unavailable.
        assert_eq!(
            surge_and_unavailable(&deployment(4, "n", json!({}))),
            (1, 1)
        );
        let zero = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        assert_eq!(surge_and_unavailable(&deployment(4, "n", zero)), (0, 1));
    }

    fn sz(replicas: i32, available: i32) -> Size {
        Size {
            replicas,
            available,
            live: replicas,
        }
    }

    #[test]
    fn a_rolling_update_surges_then_scales_old_down_keeping_availability() {
        // 4 replicas, surge 1, unavailable 1: the new one grows to 1 first.
        assert_eq!(rolling_step(4, 1, 1, sz(0, 0), &[sz(4, 4)]), (1, vec![4]));
        // At 5 pods the new one cannot grow; 4 available, 3 needed: one old goes.
        assert_eq!(rolling_step(4, 1, 1, sz(1, 0), &[sz(4, 4)]), (1, vec![3]));
        // Once the new pod is available, room again.
        assert_eq!(rolling_step(4, 1, 1, sz(1, 1), &[sz(3, 3)]), (2, vec![3]));
        assert_eq!(rolling_step(4, 1, 1, sz(2, 1), &[sz(3, 3)]), (2, vec![2]));
        // Done: nothing old left, the new one at size.
        assert_eq!(rolling_step(4, 1, 1, sz(4, 4), &[sz(0, 0)]), (4, vec![0]));
        // Unavailable old pods go first, beyond the availability budget.
        assert_eq!(rolling_step(2, 0, 1, sz(0, 0), &[sz(2, 0)]), (0, vec![1]));
        // Plain scaling without old ReplicaSets.
        assert_eq!(rolling_step(3, 1, 0, sz(2, 2), &[]), (3, vec![]));
        assert_eq!(rolling_step(1, 1, 0, sz(3, 3), &[]), (1, vec![]));
    }

    #[test]
    fn recreate_empties_the_old_ones_before_the_new_one_grows() {
        assert_eq!(recreate_step(3, &[sz(3, 3)]), (0, vec![0]));
        let draining = Size {
            replicas: 0,
            available: 0,
            live: 1,
        };
        assert_eq!(recreate_step(3, &[draining]), (0, vec![0]));
        assert_eq!(recreate_step(3, &[sz(0, 0)]), (3, vec![0]));
    }

    #[test]
    fn the_new_replicaset_carries_the_hash_and_the_owner() {
        let d = deployment(2, "nginx", json!({}));
        let rs = new_replicaset(&d, "abc", 3);
        assert_eq!(rs.name_any(), "web-abc");
        assert_eq!(rs.labels().get(HASH_LABEL).map(String::as_str), Some("abc"));
        assert_eq!(
            rs.annotations().get(REVISION).map(String::as_str),
            Some("3")
        );
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .unwrap()
                .get(HASH_LABEL)
                .map(String::as_str),
            Some("abc")
        );
        let labels = spec
            .template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get(HASH_LABEL).map(String::as_str), Some("abc"));
        let owner = controller_ref(&rs.metadata).unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "d-uid")
        );
    }

    #[test]
    fn status_reads_complete_only_when_every_replica_is_updated_and_available() {
        let d = deployment(2, "nginx", json!({}));
        let rs = |name: &str, replicas: i32, available: i32| -> ReplicaSet {
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available}}))
            .unwrap()
        };
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let (new, old) = (rs("web-new", 1, 1), rs("web-old", 2, 2));
        let rolling = status(&d, &new, &[&old, &new], &now);
        assert_eq!(rolling.replicas, Some(3));
        assert_eq!(rolling.updated_replicas, Some(1));
        assert_eq!(rolling.available_replicas, Some(3));
        assert_eq!(rolling.observed_generation, Some(2));
        let reason = |s: &DeploymentStatus, t: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .reason
                .clone()
                .unwrap()
        };
        assert_eq!(reason(&rolling, "Progressing"), "ReplicaSetUpdated");
        assert_eq!(reason(&rolling, "Available"), "MinimumReplicasAvailable");
        let new = rs("web-new", 2, 2);
        let done = status(&d, &new, &[&rs("web-old", 0, 0), &new], &now);
        assert_eq!(reason(&done, "Progressing"), "NewReplicaSetAvailable");
        assert_eq!(done.unavailable_replicas, Some(0));
        let none = rs("web-new", 2, 0);
        let down = status(&d, &none, &[&none], &now);
        assert_eq!(reason(&down, "Available"), "MinimumReplicasUnavailable");
        assert_eq!(down.unavailable_replicas, Some(2));
    }
}
