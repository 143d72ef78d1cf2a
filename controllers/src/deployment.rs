//! The Deployment controller: for every Deployment, a ReplicaSet for its
//! current `spec.template` (named `<deployment>-<pod-template-hash>`),
//! rolled to by the Deployment's strategy, and the Deployment's status and
//! conditions from its ReplicaSets', as kube-controller-manager's
//! deployment controller does.
//!
//! The pure core:
//! - [`pod_template_hash`] (kube's: FNV-1a 32 of the template, its decimal
//!   digits mapped into the alphabet `bcdfghjklmnpqrstvwxz2456789`) and
//!   [`find_new`], which picks the ReplicaSet whose template equals the
//!   Deployment's (ignoring the hash label), so a template rolled back to
//!   (`kubectl rollout undo`) reuses its old ReplicaSet;
//! - [`resolve`] for `maxSurge`/`maxUnavailable` (surge rounds up,
//!   unavailable down, both zero means one unavailable), [`rolling_step`]
//!   and [`recreate_step`] for the next replica counts of a rollout;
//! - [`scale_targets`]: a Deployment resized mid-rollout (a ReplicaSet's
//!   `desired-replicas` annotation differs from `spec.replicas`, see
//!   [`is_scaling_event`]) spreads the change over its active ReplicaSets
//!   in proportion to their sizes, by their `max-replicas` annotations;
//! - [`new_rs_annotations`]: the revision (the highest old one plus one), the
//!   `revision-history` of a ReplicaSet rolled back to, and the
//!   Deployment's own annotations copied over (`kubernetes.io/change-cause`
//!   is what `kubectl rollout history` prints);
//! - [`status`], [`rollout_status`] (the `Progressing` condition:
//!   `NewReplicaSetCreated`, `ReplicaSetUpdated` on progress,
//!   `NewReplicaSetAvailable` once complete, `ProgressDeadlineExceeded`
//!   after `progressDeadlineSeconds` without progress), [`paused_conditions`]
//!   (`DeploymentPaused`/`DeploymentResumed`), [`requeue_stuck`] (when to
//!   look again for a deadline) and [`cleanup`] (old ReplicaSets at zero
//!   beyond `revisionHistoryLimit`, oldest revision first).
//!
//! A paused Deployment, and one being resized, only scales (kube's `sync`):
//! no new ReplicaSet, no rollout step; otherwise the strategy takes one step.
//!
//! [`run`] reflects Deployments and ReplicaSets; a ReplicaSet event queues
//! its owning Deployment. The ReplicaSets' own pods (and when they count as
//! available, `minReadySeconds`) are the replicaset controller's business;
//! a deleted Deployment's ReplicaSets are the garbage collector's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::SignedDuration;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
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
/// The ReplicaSet (and Deployment) annotation numbering a Deployment's
/// templates.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The earlier revisions of a ReplicaSet that was rolled back to,
/// comma-separated, oldest first.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last sized the ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when it last sized the
/// ReplicaSet: the base of proportional scaling.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations never copied to its ReplicaSets (kube's list).
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
/// kube keeps `revision-history` within this many characters, dropping the
/// oldest entries.
const MAX_HISTORY_CHARS: usize = 2000;
/// `spec.revisionHistoryLimit` when unset.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// `spec.progressDeadlineSeconds` when unset.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;

/// `Progressing` reasons, as kube words them (kubectl matches on
/// [`TIMED_OUT`]).
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

/// Kubernetes' alphabet for generated strings: no vowels, no look-alikes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// How long a failed reconcile waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long past a progress deadline a stuck Deployment is looked at: the
/// deadline counts whole seconds and is passed strictly after it.
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

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

/// kube's `MaxSurge`: none for Recreate.
pub fn max_surge(deployment: &Deployment) -> i32 {
    if recreate(deployment) {
        0
    } else {
        surge_and_unavailable(deployment).0
    }
}

/// kube's `MaxUnavailable`: none for Recreate or zero replicas, and never
/// more than the replicas.
pub fn max_unavailable(deployment: &Deployment) -> i32 {
    let replicas = desired_replicas(deployment);
    if recreate(deployment) || replicas == 0 {
        0
    } else {
        surge_and_unavailable(deployment).1.min(replicas)
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

fn paused(deployment: &Deployment) -> bool {
    deployment.spec.as_ref().and_then(|s| s.paused) == Some(true)
}

/// The progress deadline, `None` when there is none (kube's "no deadline"
/// is `MaxInt32`).
fn progress_deadline(deployment: &Deployment) -> Option<i32> {
    match deployment
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
    {
        None => Some(DEFAULT_PROGRESS_DEADLINE_SECONDS),
        Some(i32::MAX) => None,
        Some(seconds) => Some(seconds),
    }
}

fn revision_history_limit(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
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

/// `template` without the hash label, for comparing a ReplicaSet's
/// template with its Deployment's (an empty label map counts as none, as
/// kube's semantic equality has it).
fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    if let Some(meta) = template.metadata.as_mut() {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(HASH_LABEL);
        }
        if meta.labels.as_ref().is_some_and(BTreeMap::is_empty) {
            meta.labels = None;
        }
        if meta.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
            meta.annotations = None;
        }
    }
    template
}

/// Whether two templates are the same but for the hash label.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// Which of `owned` is the Deployment's new ReplicaSet: the oldest whose
/// template equals the Deployment's but for the hash label (so a template
/// rolled back to finds its old ReplicaSet), else the one carrying the
/// template's hash.
pub fn find_new(deployment: &Deployment, owned: &[Arc<ReplicaSet>]) -> Option<usize> {
    let template = deployment.spec.clone().unwrap_or_default().template;
    let created = |rs: &ReplicaSet| {
        (
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            rs.name_any(),
        )
    };
    owned
        .iter()
        .enumerate()
        .filter(|(_, rs)| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignoring_hash(t, &template))
        })
        .min_by_key(|(_, rs)| created(rs))
        .map(|(i, _)| i)
        .or_else(|| {
            let hash = pod_template_hash(&template);
            owned
                .iter()
                .position(|rs| rs.labels().get(HASH_LABEL) == Some(&hash))
        })
}

/// `(desired-replicas, max-replicas)` for the Deployment's ReplicaSets.
pub fn replicas_annotations(deployment: &Deployment) -> (i32, i32) {
    let replicas = desired_replicas(deployment);
    (replicas, replicas + max_surge(deployment))
}

fn annotation_int(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.annotations().get(key).and_then(|v| v.parse().ok())
}

fn replicas_annotations_stale(rs: &ReplicaSet, deployment: &Deployment) -> bool {
    let (desired, max) = replicas_annotations(deployment);
    annotation_int(rs, DESIRED_REPLICAS) != Some(desired)
        || annotation_int(rs, MAX_REPLICAS) != Some(max)
}

/// `history` with `old` appended, the oldest entries dropped to stay within
/// [`MAX_HISTORY_CHARS`]; `None` when even that does not fit.
fn append_history(history: Option<&str>, old: &str) -> Option<String> {
    let Some(history) = history.filter(|h| !h.is_empty()) else {
        return Some(old.to_string());
    };
    let entries: Vec<&str> = history.split(',').collect();
    let mut total = history.len() + old.len() + 1;
    let mut start = 0;
    while total > MAX_HISTORY_CHARS && start < entries.len() {
        total -= entries[start].len() + 1;
        start += 1;
    }
    if total > MAX_HISTORY_CHARS {
        return None;
    }
    let mut kept = entries[start..].to_vec();
    kept.push(old);
    Some(kept.join(","))
}

/// The annotations the Deployment's new ReplicaSet should carry, from its
/// `current` ones: the Deployment's own copied over (but for
/// [`NOT_COPIED`]), the revision raised to `revision` when lower (a
/// ReplicaSet rolled back to keeps its earlier revision in
/// [`REVISION_HISTORY`]), and, for one not yet created, the replicas
/// annotations.
pub fn new_rs_annotations(
    deployment: &Deployment,
    current: &BTreeMap<String, String>,
    revision: u64,
    exists: bool,
) -> BTreeMap<String, String> {
    let mut annotations = current.clone();
    for (key, value) in deployment.annotations() {
        if !NOT_COPIED.contains(&key.as_str()) {
            annotations.insert(key.clone(), value.clone());
        }
    }
    let old = current.get(REVISION).filter(|r| !r.is_empty());
    let old_revision: u64 = old.and_then(|r| r.parse().ok()).unwrap_or(0);
    if old_revision < revision {
        annotations.insert(REVISION.into(), revision.to_string());
        if let Some(old) = old
            && let Some(history) =
                append_history(current.get(REVISION_HISTORY).map(String::as_str), old)
        {
            annotations.insert(REVISION_HISTORY.into(), history);
        }
    }
    if !exists {
        let (desired, max) = replicas_annotations(deployment);
        annotations.insert(DESIRED_REPLICAS.into(), desired.to_string());
        annotations.insert(MAX_REPLICAS.into(), max.to_string());
    }
    annotations
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
            annotations: Some(new_rs_annotations(
                deployment,
                &BTreeMap::new(),
                revision,
                false,
            )),
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
        replicas: spec_replicas(rs),
        available: status.and_then(|s| s.available_replicas).unwrap_or(0),
        live: status.map_or(0, |s| s.replicas),
    }
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn revision(rs: &ReplicaSet) -> u64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> (Option<jiff::Timestamp>, String) {
    (
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rs.name_any(),
    )
}

/// Whether the Deployment was resized since it last sized its active
/// ReplicaSets (their `desired-replicas` annotation says otherwise).
pub fn is_scaling_event(deployment: &Deployment, sets: &[&ReplicaSet]) -> bool {
    let replicas = desired_replicas(deployment);
    sets.iter()
        .filter(|rs| spec_replicas(rs) > 0)
        .filter_map(|rs| annotation_int(rs, DESIRED_REPLICAS))
        .any(|desired| desired != replicas)
}

/// One ReplicaSet's share of `to_add` more (or, negative, fewer) replicas,
/// `added` of them already handed out: its size scaled from the
/// Deployment's size when it was last sized (its `max-replicas`
/// annotation, else the Deployment's live replicas) to the new one, never
/// beyond what is left to hand out.
fn proportion(rs: &ReplicaSet, deployment: &Deployment, to_add: i32, added: i32) -> i32 {
    let current = spec_replicas(rs);
    if current == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let replicas = desired_replicas(deployment);
    let fraction = if replicas == 0 {
        -current
    } else {
        let max = replicas + max_surge(deployment);
        let before = annotation_int(rs, MAX_REPLICAS).unwrap_or_else(|| {
            deployment
                .status
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(0)
        });
        if before <= 0 {
            0
        } else {
            let scaled = (f64::from(current) * f64::from(max) / f64::from(before)).round();
            // Bounded by i32 sizes: the cast cannot truncate meaningfully.
            #[allow(clippy::cast_possible_truncation)]
            let scaled = scaled as i32;
            scaled - current
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// What kube's `scale` does to a Deployment's ReplicaSets when it is
/// paused or resized: `(name, spec.replicas)` to write, each with the
/// current replicas annotations.
///
/// - With at most one active ReplicaSet, that one (or the newest) takes
///   every replica.
/// - A saturated new ReplicaSet (all replicas asked for and available)
///   leaves the old ones nothing.
/// - Otherwise, in a rolling update, `replicas + maxSurge` minus what the
///   active ReplicaSets ask for is spread over them in proportion to their
///   sizes, the largest first (newer first when growing, older first when
///   shrinking), leftovers to the first.
pub fn scale_targets(
    deployment: &Deployment,
    new: Option<&ReplicaSet>,
    old: &[&ReplicaSet],
) -> Vec<(String, i32)> {
    let replicas = desired_replicas(deployment);
    let mut newest_first: Vec<&ReplicaSet> = old.to_vec();
    newest_first.sort_by_key(|rs| std::cmp::Reverse(created(rs)));
    let mut active: Vec<&ReplicaSet> = newest_first
        .iter()
        .copied()
        .chain(new)
        .filter(|rs| spec_replicas(rs) > 0)
        .collect();
    match active.len() {
        0 => {
            return new
                .or(newest_first.first().copied())
                .map(|rs| vec![(rs.name_any(), replicas)])
                .unwrap_or_default();
        }
        1 => return vec![(active[0].name_any(), replicas)],
        _ => {}
    }
    if let Some(new) = new {
        let saturated = spec_replicas(new) == replicas
            && annotation_int(new, DESIRED_REPLICAS) == Some(replicas)
            && size(new).available == replicas;
        if saturated {
            return active
                .iter()
                .filter(|rs| rs.name_any() != new.name_any())
                .map(|rs| (rs.name_any(), 0))
                .collect();
        }
    }
    if recreate(deployment) {
        return Vec::new();
    }
    let total: i32 = active.iter().map(|rs| spec_replicas(rs)).sum();
    let allowed = if replicas > 0 {
        replicas + max_surge(deployment)
    } else {
        0
    };
    let to_add = allowed - total;
    match to_add.cmp(&0) {
        std::cmp::Ordering::Greater => active.sort_by(|a, b| {
            spec_replicas(b)
                .cmp(&spec_replicas(a))
                .then_with(|| created(b).cmp(&created(a)))
        }),
        std::cmp::Ordering::Less => active.sort_by(|a, b| {
            spec_replicas(b)
                .cmp(&spec_replicas(a))
                .then_with(|| created(a).cmp(&created(b)))
        }),
        std::cmp::Ordering::Equal => {}
    }
    let mut added = 0;
    let mut targets: Vec<(String, i32)> = active
        .iter()
        .map(|rs| {
            let share = proportion(rs, deployment, to_add, added);
            added += share;
            (rs.name_any(), spec_replicas(rs) + share)
        })
        .collect();
    if to_add != 0
        && let Some(first) = targets.first_mut()
    {
        first.1 = (first.1 + to_add - added).max(0);
    }
    targets
}

/// Old ReplicaSets to delete beyond `revisionHistoryLimit`: the lowest
/// revisions first, and only those at zero, settled and not already going.
pub fn cleanup(deployment: &Deployment, old: &[&ReplicaSet]) -> Vec<String> {
    let mut alive: Vec<&ReplicaSet> = old
        .iter()
        .copied()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let limit = usize::try_from(revision_history_limit(deployment)).unwrap_or(0);
    let Some(excess) = alive.len().checked_sub(limit).filter(|n| *n > 0) else {
        return Vec::new();
    };
    alive.sort_by_key(|rs| (revision(rs), created(rs)));
    alive[..excess]
        .iter()
        .filter(|rs| {
            let status = rs.status.clone().unwrap_or_default();
            status.replicas == 0
                && spec_replicas(rs) == 0
                && rs.metadata.generation <= status.observed_generation
        })
        .map(|rs| rs.name_any())
        .collect()
}

/// A condition as kube's `NewDeploymentCondition` makes it: both times now.
fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &Time,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(now.clone()),
        last_update_time: Some(now.clone()),
    }
}

fn get_condition<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// kube's `SetDeploymentCondition`: nothing changes when status and reason
/// are the same; the transition time is kept when only the reason changes.
fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(Some(status), &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition
                .last_transition_time
                .clone_from(&current.last_transition_time);
        }
    }
    remove_condition(status, &condition.type_);
    status.conditions.get_or_insert_default().push(condition);
}

/// The Deployment's status from its ReplicaSets (the new one, if any, among
/// `all`) with its `Available` condition; other conditions are kept.
pub fn status(
    deployment: &Deployment,
    new: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    now: &Time,
) -> DeploymentStatus {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let of = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let available = sum(&|rs| of(rs).available_replicas.unwrap_or(0));
    let asked = sum(&|rs| spec_replicas(rs));
    let before = deployment.status.as_ref();
    let mut status = DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(sum(&|rs| of(rs).replicas)),
        updated_replicas: Some(new.map_or(0, |rs| of(rs).replicas)),
        ready_replicas: Some(sum(&|rs| of(rs).ready_replicas.unwrap_or(0))),
        available_replicas: Some(available),
        unavailable_replicas: Some((asked - available).max(0)),
        conditions: before.and_then(|s| s.conditions.clone()),
        collision_count: before.and_then(|s| s.collision_count),
        terminating_replicas: None,
    };
    let condition = if available >= desired_replicas(deployment) - max_unavailable(deployment) {
        new_condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        new_condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut status, condition);
    status
}

/// Whether every replica is updated and available and nothing old is left
/// (kube's `DeploymentComplete`).
pub fn complete(deployment: &Deployment, status: &DeploymentStatus) -> bool {
    let replicas = desired_replicas(deployment);
    status.updated_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == replicas
        && status.observed_generation >= deployment.metadata.generation
}

/// Whether `new` shows progress over the stored status: more updated,
/// ready or available replicas, or fewer old ones.
fn progressed(deployment: &Deployment, new: &DeploymentStatus) -> bool {
    let old = deployment.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

fn deadline_of(condition: &DeploymentCondition, seconds: i32) -> Option<jiff::Timestamp> {
    let from = condition.last_update_time.as_ref()?.0;
    Some(from + SignedDuration::from_secs(i64::from(seconds)))
}

fn timed_out(status: &DeploymentStatus, seconds: i32, now: &Time) -> bool {
    match get_condition(Some(status), "Progressing") {
        None => false,
        Some(c) if c.reason.as_deref() == Some(NEW_RS_AVAILABLE) => false,
        Some(c) if c.reason.as_deref() == Some(TIMED_OUT) => true,
        Some(c) => deadline_of(c, seconds).is_some_and(|at| at < now.0),
    }
}

/// The status during a rollout: [`status`] plus the `Progressing`
/// condition, as kube's `syncRolloutStatus` estimates progress.
pub fn rollout_status(
    deployment: &Deployment,
    new: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    now: &Time,
) -> DeploymentStatus {
    let mut status = status(deployment, new, all, now);
    let Some(deadline) = progress_deadline(deployment) else {
        remove_condition(&mut status, "Progressing");
        return status;
    };
    let current = get_condition(deployment.status.as_ref(), "Progressing");
    let finished = status.replicas == status.updated_replicas
        && current.is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    if finished {
        return status;
    }
    let named = |what: &str| match new {
        Some(rs) => format!("ReplicaSet \"{}\" {what}", rs.name_any()),
        None => format!("Deployment \"{}\" {what}", deployment.name_any()),
    };
    if complete(deployment, &status) {
        let message = named("has successfully progressed.");
        set_condition(
            &mut status,
            new_condition("Progressing", "True", NEW_RS_AVAILABLE, message, now),
        );
    } else if progressed(deployment, &status) {
        // Progress refreshes the update time even with the same reason:
        // that is what the deadline counts from.
        let mut condition = new_condition(
            "Progressing",
            "True",
            RS_UPDATED,
            named("is progressing."),
            now,
        );
        if let Some(current) = current {
            if current.status == "True" {
                condition
                    .last_transition_time
                    .clone_from(&current.last_transition_time);
            }
            remove_condition(&mut status, "Progressing");
        }
        set_condition(&mut status, condition);
    } else if timed_out(&status, deadline, now) {
        let message = named("has timed out progressing.");
        set_condition(
            &mut status,
            new_condition("Progressing", "False", TIMED_OUT, message, now),
        );
    }
    status
}

/// kube's `checkPausedConditions`: the stored status with `Progressing`
/// turned `Unknown`/`DeploymentPaused` on pause and
/// `Unknown`/`DeploymentResumed` on resume; `None` when nothing changes
/// (no deadline, already said, or a deadline already exceeded).
pub fn paused_conditions(deployment: &Deployment, now: &Time) -> Option<DeploymentStatus> {
    progress_deadline(deployment)?;
    let current = get_condition(deployment.status.as_ref(), "Progressing");
    let reason = current.and_then(|c| c.reason.as_deref());
    if reason == Some(TIMED_OUT) {
        return None;
    }
    let said = reason == Some(PAUSED);
    let condition = match (paused(deployment), said) {
        (true, false) => new_condition(
            "Progressing",
            "Unknown",
            PAUSED,
            "Deployment is paused".into(),
            now,
        ),
        (false, true) => new_condition(
            "Progressing",
            "Unknown",
            RESUMED,
            "Deployment is resumed".into(),
            now,
        ),
        _ => return None,
    };
    let mut status = deployment.status.clone().unwrap_or_default();
    set_condition(&mut status, condition);
    Some(status)
}

/// How long until a rollout that has not progressed is past its deadline
/// (kube's `requeueStuckDeployment`): `None` without a deadline, once
/// complete, or once the deadline is already reported.
pub fn requeue_stuck(
    deployment: &Deployment,
    status: &DeploymentStatus,
    now: &Time,
) -> Option<Duration> {
    let seconds = progress_deadline(deployment)?;
    let condition = get_condition(Some(status), "Progressing")?;
    if complete(deployment, status)
        || matches!(condition.reason.as_deref(), Some(TIMED_OUT | PAUSED))
    {
        return None;
    }
    let at = deadline_of(condition, seconds)?;
    let wait = at.duration_since(now.0).max(SignedDuration::ZERO);
    Some(Duration::try_from(wait).unwrap_or_default() + DEADLINE_MARGIN)
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

/// Sets `rs` to `to` replicas, with the Deployment's current replicas
/// annotations; when the size is right already, writes the annotations
/// only if `annotations_too`. Whether the size changed.
async fn scale(
    api: &Api<ReplicaSet>,
    rs: &mut Arc<ReplicaSet>,
    to: i32,
    deployment: &Deployment,
    annotations_too: bool,
) -> Result<bool, Error> {
    let resize = spec_replicas(rs) != to;
    let relabel = annotations_too && replicas_annotations_stale(rs, deployment);
    if !resize && !relabel {
        return Ok(false);
    }
    let (desired, max) = replicas_annotations(deployment);
    let patch = json!({
        "metadata": {"annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: max.to_string()}},
        "spec": {"replicas": to},
    });
    let scaled = api
        .patch(&rs.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    if resize {
        tracing::info!(replicaset = %rs.name_any(), from = spec_replicas(rs), replicas = to, "scaled");
    }
    *rs = Arc::new(scaled);
    Ok(resize)
}

fn now() -> Time {
    Time(
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
    )
}

/// Writes `want` as the Deployment's status unless it already is, against
/// the resourceVersion the controller last saw (a newer Deployment is
/// reconciled again when the cache shows it).
async fn write_status(
    api: &Api<Deployment>,
    deployment: &mut Deployment,
    want: DeploymentStatus,
) -> Result<(), Error> {
    if deployment.status.as_ref() == Some(&want) {
        return Ok(());
    }
    let patch = Patch::Merge(json!({
        "metadata": {"resourceVersion": deployment.resource_version()},
        "status": want,
    }));
    match api
        .patch_status(&deployment.name_any(), &patch_params(), &patch)
        .await
    {
        Ok(written) => {
            deployment.metadata.resource_version = written.metadata.resource_version;
            deployment.status = Some(want);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Makes the Deployment at `key` have its ReplicaSet, rolled to, and its
/// status; `Some(delay)` when it should be looked at again then (a
/// progress deadline).
pub async fn reconcile(key: &Key, ctx: &Context) -> Result<Option<Duration>, Error> {
    let (namespace, name) = key;
    let Some(cached) = ctx.deployments.get(&ObjectRef::new(name).within(namespace)) else {
        return Ok(None);
    };
    if cached.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let mut deployment = (*cached).clone();
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
    owned.sort_by_key(|rs| (revision(rs), created(rs)));
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let now = now();

    if let Some(status) = paused_conditions(&deployment, &now) {
        write_status(&deployments, &mut deployment, status).await?;
    }

    let mut new = find_new(&deployment, &owned).map(|i| owned.remove(i));
    let mut old = owned;
    let next_revision = old.iter().map(|rs| revision(rs)).max().unwrap_or(0) + 1;
    if let Some(rs) = new.as_mut() {
        sync_new(&api, rs, &deployment, next_revision).await?;
    }

    let mut sets: Vec<&ReplicaSet> = old.iter().map(|rs| &**rs).collect();
    sets.extend(new.as_deref());
    if paused(&deployment) || is_scaling_event(&deployment, &sets) {
        // kube's `sync`: scale only, no rollout step.
        let old_refs: Vec<&ReplicaSet> = old.iter().map(|rs| &**rs).collect();
        let targets = scale_targets(&deployment, new.as_deref(), &old_refs);
        for (target, to) in targets {
            for rs in old.iter_mut().chain(new.as_mut()) {
                if rs.name_any() == target {
                    scale(&api, rs, to, &deployment, true).await?;
                }
            }
        }
        if paused(&deployment) {
            delete_old(&api, &deployment, &old).await?;
        }
        set_revision(&deployments, &mut deployment, new.as_deref()).await?;
        let mut all: Vec<&ReplicaSet> = old.iter().map(|rs| &**rs).collect();
        all.extend(new.as_deref());
        let want = status(&deployment, new.as_deref(), &all, &now);
        write_status(&deployments, &mut deployment, want).await?;
        return Ok(None);
    }

    let mut new = match new {
        Some(rs) => rs,
        None => {
            let created = create_new(&api, &deployment, next_revision).await?;
            if progress_deadline(&deployment).is_some() {
                let mut status = deployment.status.clone().unwrap_or_default();
                let message = format!("Created new replica set \"{}\"", created.name_any());
                set_condition(
                    &mut status,
                    new_condition("Progressing", "True", NEW_RS_CREATED, message, &now),
                );
                write_status(&deployments, &mut deployment, status).await?;
            }
            created
        }
    };
    if progress_deadline(&deployment).is_some()
        && get_condition(deployment.status.as_ref(), "Progressing").is_none()
    {
        let mut status = deployment.status.clone().unwrap_or_default();
        let message = format!("Found new replica set \"{}\"", new.name_any());
        set_condition(
            &mut status,
            new_condition("Progressing", "True", FOUND_NEW_RS, message, &now),
        );
        write_status(&deployments, &mut deployment, status).await?;
    }
    set_revision(&deployments, &mut deployment, Some(&new)).await?;

    let replicas = desired_replicas(&deployment);
    let old_sizes: Vec<Size> = old.iter().map(|rs| size(rs)).collect();
    let (new_target, old_targets) = if recreate(&deployment) {
        recreate_step(replicas, &old_sizes)
    } else {
        let (surge, unavailable) = surge_and_unavailable(&deployment);
        rolling_step(replicas, surge, unavailable, size(&new), &old_sizes)
    };
    let mut scaled = false;
    for (rs, to) in old.iter_mut().zip(old_targets) {
        scaled |= scale(&api, rs, to, &deployment, false).await?;
    }
    scaled |= scale(&api, &mut new, new_target, &deployment, false).await?;
    if !scaled
        && deployment
            .status
            .as_ref()
            .is_some_and(|s| complete(&deployment, s))
    {
        delete_old(&api, &deployment, &old).await?;
    }

    let mut all: Vec<&ReplicaSet> = old.iter().map(|rs| &**rs).collect();
    all.push(&new);
    let want = rollout_status(&deployment, Some(&new), &all, &now);
    let requeue = requeue_stuck(&deployment, &want, &now);
    write_status(&deployments, &mut deployment, want).await?;
    Ok(requeue)
}

/// Brings an existing new ReplicaSet's annotations (revision, history,
/// the Deployment's own) and `minReadySeconds` up to date.
async fn sync_new(
    api: &Api<ReplicaSet>,
    rs: &mut Arc<ReplicaSet>,
    deployment: &Deployment,
    revision: u64,
) -> Result<(), Error> {
    let annotations = new_rs_annotations(deployment, rs.annotations(), revision, true);
    let min_ready = deployment.spec.as_ref().and_then(|s| s.min_ready_seconds);
    let current_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
    if &annotations == rs.annotations() && min_ready.unwrap_or(0) == current_min_ready.unwrap_or(0)
    {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"annotations": annotations},
        "spec": {"minReadySeconds": min_ready},
    });
    let synced = api
        .patch(&rs.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(replicaset = %rs.name_any(), revision = %revision, "synced the new replicaset");
    *rs = Arc::new(synced);
    Ok(())
}

/// Creates the ReplicaSet for the Deployment's template (or takes the one
/// already there by that name).
async fn create_new(
    api: &Api<ReplicaSet>,
    deployment: &Deployment,
    revision: u64,
) -> Result<Arc<ReplicaSet>, Error> {
    let hash = pod_template_hash(&deployment.spec.clone().unwrap_or_default().template);
    let wanted = new_replicaset(deployment, &hash, revision);
    match api.create(&post_params(), &wanted).await {
        Ok(created) => {
            tracing::info!(deployment = %deployment.name_any(), replicaset = %created.name_any(), "created replicaset");
            Ok(Arc::new(created))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Ok(Arc::new(api.get(&wanted.name_any()).await?))
        }
        Err(err) => Err(err.into()),
    }
}

/// Deletes the old ReplicaSets beyond the revision history limit.
async fn delete_old(
    api: &Api<ReplicaSet>,
    deployment: &Deployment,
    old: &[Arc<ReplicaSet>],
) -> Result<(), Error> {
    let refs: Vec<&ReplicaSet> = old.iter().map(|rs| &**rs).collect();
    for name in cleanup(deployment, &refs) {
        unless_gone(api.delete(&name, &DeleteParams::default()).await)?;
        tracing::info!(deployment = %deployment.name_any(), replicaset = %name, "deleted old replicaset");
    }
    Ok(())
}

/// The Deployment's own revision annotation follows its new ReplicaSet's.
async fn set_revision(
    api: &Api<Deployment>,
    deployment: &mut Deployment,
    new: Option<&ReplicaSet>,
) -> Result<(), Error> {
    let Some(revision) = new.and_then(|rs| rs.annotations().get(REVISION)) else {
        return Ok(());
    };
    if deployment.annotations().get(REVISION) == Some(revision) {
        return Ok(());
    }
    let patch = json!({"metadata": {
        "resourceVersion": deployment.resource_version(),
        "annotations": {REVISION: revision},
    }});
    match api
        .patch(
            &deployment.name_any(),
            &patch_params(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(written) => {
            deployment.metadata = written.metadata;
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
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
            match reconcile(&key, &ctx).await {
                Ok(None) => {}
                Ok(Some(delay)) => queue.add_after(key, delay),
                Err(err) => {
                    tracing::warn!(deployment = %format!("{}/{}", key.0, key.1), error = %err, "reconcile failed; retrying");
                    queue.add_after(key, RETRY);
                }
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

    /// A ReplicaSet of `d` with its `spec.replicas`, its live and available
    /// pods, created at second `created`, with `annotations`.
    fn replicaset(
        name: &str,
        d: &Deployment,
        replicas: i32,
        live: i32,
        available: i32,
        created: i64,
        annotations: serde_json::Value,
    ) -> ReplicaSet {
        let mut template = serde_json::to_value(template(d)).unwrap();
        template["metadata"]["labels"][HASH_LABEL] = json!(name);
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "generation": 1,
                "annotations": annotations,
                "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template},
            "status": {"replicas": live, "readyReplicas": available, "availableReplicas": available,
                "observedGeneration": 1},
        }))
        .unwrap()
    }

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).unwrap())
    }

    fn progressing(s: &DeploymentStatus) -> (String, String, Option<i64>) {
        let c = get_condition(Some(s), "Progressing").expect("a Progressing condition");
        (
            c.status.clone(),
            c.reason.clone().unwrap(),
            c.last_update_time.as_ref().map(|t| t.0.as_second()),
        )
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
        // Recreate neither surges nor counts unavailability.
        let recreate = deployment(4, "n", json!({"type": "Recreate"}));
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
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
    fn the_new_replicaset_carries_the_hash_the_owner_and_the_annotations() {
        let mut d = deployment(2, "nginx", json!({}));
        d.annotations_mut().extend([
            ("kubernetes.io/change-cause".to_string(), "v2".to_string()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
            (REVISION.to_string(), "1".to_string()),
        ]);
        let rs = new_replicaset(&d, "abc", 3);
        assert_eq!(rs.name_any(), "web-abc");
        assert_eq!(rs.labels().get(HASH_LABEL).map(String::as_str), Some("abc"));
        let annotations: Vec<(&str, &str)> = rs
            .annotations()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // 2 replicas, surge 25% rounded up: at most 3.
        assert_eq!(
            annotations,
            vec![
                (DESIRED_REPLICAS, "2"),
                (MAX_REPLICAS, "3"),
                (REVISION, "3"),
                ("kubernetes.io/change-cause", "v2"),
            ]
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
    fn a_template_rolled_back_to_finds_its_old_replicaset() {
        let v1 = deployment(2, "nginx:1", json!({}));
        let v2 = deployment(2, "nginx:2", json!({}));
        let owned = vec![
            Arc::new(replicaset("one", &v1, 0, 0, 0, 10, json!({REVISION: "1"}))),
            Arc::new(replicaset("two", &v2, 2, 2, 2, 20, json!({REVISION: "2"}))),
        ];
        assert_eq!(find_new(&v2, &owned), Some(1));
        // Back to v1 (what `kubectl rollout undo` patches in): the old one.
        assert_eq!(find_new(&v1, &owned), Some(0));
        assert_eq!(find_new(&deployment(2, "nginx:3", json!({})), &owned), None);
        // Its revision becomes the next one; the one it had is kept.
        let annotations = new_rs_annotations(&v1, owned[0].annotations(), 3, true);
        assert_eq!(annotations.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(
            annotations.get(REVISION_HISTORY).map(String::as_str),
            Some("1")
        );
        let again = new_rs_annotations(&v1, &annotations, 5, true);
        assert_eq!(again.get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
        // Already the newest: nothing changes.
        assert_eq!(new_rs_annotations(&v1, &again, 5, true), again);
        // The history stays within its character budget, oldest dropped.
        let long = vec!["1234567"; 250].join(",");
        let trimmed = append_history(Some(&long), "99").unwrap();
        assert!(trimmed.len() <= MAX_HISTORY_CHARS, "{}", trimmed.len());
        assert!(trimmed.ends_with(",1234567,99"));
    }

    #[test]
    fn resizing_mid_rollout_spreads_over_the_replicasets_by_size() {
        // The Kubernetes documentation's example: 10 replicas, maxSurge 3,
        // a rollout stuck with 8 old and 5 new, then scaled to 15.
        let strategy = json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
        let before = json!({DESIRED_REPLICAS: "10", MAX_REPLICAS: "13"});
        let d10 = deployment(10, "nginx:2", strategy.clone());
        let old = replicaset("old", &d10, 8, 8, 8, 10, before.clone());
        let new = replicaset("new", &d10, 5, 5, 0, 20, before.clone());
        let d15 = deployment(15, "nginx:2", strategy.clone());
        assert!(!is_scaling_event(&d10, &[&old, &new]));
        assert!(is_scaling_event(&d15, &[&old, &new]));
        let mut targets = scale_targets(&d15, Some(&new), &[&old]);
        targets.sort();
        assert_eq!(
            targets,
            vec![("new".to_string(), 7), ("old".to_string(), 11)]
        );
        // Back down to 5 (max 8): 8*8/13 and 5*8/13 round to 5 and 3.
        let d5 = deployment(5, "nginx:2", strategy.clone());
        let mut targets = scale_targets(&d5, Some(&new), &[&old]);
        targets.sort();
        assert_eq!(
            targets,
            vec![("new".to_string(), 3), ("old".to_string(), 5)]
        );
        // To zero: everything goes.
        let d0 = deployment(0, "nginx:2", strategy.clone());
        let mut targets = scale_targets(&d0, Some(&new), &[&old]);
        targets.sort();
        assert_eq!(
            targets,
            vec![("new".to_string(), 0), ("old".to_string(), 0)]
        );
        // Without annotations the Deployment's live replicas are the base.
        let mut d15_status = d15.clone();
        d15_status.status = Some(DeploymentStatus {
            replicas: Some(13),
            ..DeploymentStatus::default()
        });
        let bare_old = replicaset("old", &d10, 8, 8, 8, 10, json!({}));
        let bare_new = replicaset("new", &d10, 5, 5, 0, 20, json!({}));
        let mut targets = scale_targets(&d15_status, Some(&bare_new), &[&bare_old]);
        targets.sort();
        assert_eq!(
            targets,
            vec![("new".to_string(), 7), ("old".to_string(), 11)]
        );

        // One active ReplicaSet takes it all.
        let idle = replicaset("old", &d10, 0, 0, 0, 10, before.clone());
        assert_eq!(
            scale_targets(&d15, Some(&new), &[&idle]),
            vec![("new".to_string(), 15)]
        );
        // None active: the newest.
        let idle_new = replicaset("new", &d10, 0, 0, 0, 20, before.clone());
        assert_eq!(
            scale_targets(&d15, None, &[&idle, &idle_new]),
            vec![("new".to_string(), 15)]
        );
        // A saturated new ReplicaSet leaves the old ones nothing.
        let full = replicaset("new", &d15, 15, 15, 15, 20, json!({DESIRED_REPLICAS: "15"}));
        assert_eq!(
            scale_targets(&d15, Some(&full), &[&old]),
            vec![("old".to_string(), 0)]
        );
    }

    #[test]
    fn old_replicasets_beyond_the_history_limit_go_oldest_first_once_empty() {
        let mut d = deployment(2, "nginx", json!({}));
        d.spec.as_mut().unwrap().revision_history_limit = Some(2);
        let rs = |name: &str, revision: &str, replicas: i32| {
            replicaset(
                name,
                &d,
                replicas,
                replicas,
                replicas,
                1,
                json!({REVISION: revision}),
            )
        };
        let (r3, r1, r2, r4) = (
            rs("r3", "3", 0),
            rs("r1", "1", 0),
            rs("r2", "2", 0),
            rs("r4", "4", 0),
        );
        assert_eq!(cleanup(&d, &[&r3, &r1, &r2, &r4]), vec!["r1", "r2"]);
        assert!(cleanup(&d, &[&r3, &r4]).is_empty());
        // One still holding pods is skipped, not replaced by a newer one.
        let busy = rs("r1", "1", 1);
        assert_eq!(cleanup(&d, &[&r3, &busy, &r2, &r4]), vec!["r2"]);
        // The default keeps ten.
        let d10 = deployment(2, "nginx", json!({}));
        let many: Vec<ReplicaSet> = (1..=12)
            .map(|i| {
                replicaset(
                    &format!("r{i}"),
                    &d10,
                    0,
                    0,
                    0,
                    i,
                    json!({REVISION: i.to_string()}),
                )
            })
            .collect();
        let refs: Vec<&ReplicaSet> = many.iter().collect();
        assert_eq!(cleanup(&d10, &refs), vec!["r1", "r2"]);
    }

    #[test]
    fn status_counts_replicas_and_availability() {
        let d = deployment(2, "nginx", json!({}));
        let new = replicaset("web-new", &d, 1, 1, 1, 2, json!({}));
        let old = replicaset("web-old", &d, 2, 2, 2, 1, json!({}));
        let rolling = status(&d, Some(&new), &[&old, &new], &at(0));
        assert_eq!(rolling.replicas, Some(3));
        assert_eq!(rolling.updated_replicas, Some(1));
        assert_eq!(rolling.available_replicas, Some(3));
        assert_eq!(rolling.unavailable_replicas, Some(0));
        assert_eq!(rolling.observed_generation, Some(2));
        let available = get_condition(Some(&rolling), "Available").unwrap();
        assert_eq!(
            available.reason.as_deref(),
            Some("MinimumReplicasAvailable")
        );
        let none = replicaset("web-new", &d, 2, 2, 0, 2, json!({}));
        let down = status(&d, Some(&none), &[&none], &at(0));
        let available = get_condition(Some(&down), "Available").unwrap();
        assert_eq!(
            (available.status.as_str(), available.reason.as_deref()),
            ("False", Some("MinimumReplicasUnavailable"))
        );
        assert_eq!(down.unavailable_replicas, Some(2));
        // Paused before a new ReplicaSet exists: nothing is updated.
        let only_old = status(&d, None, &[&old], &at(0));
        assert_eq!(only_old.updated_replicas, Some(0));
    }

    #[test]
    fn progress_is_tracked_until_complete_or_past_the_deadline() {
        let mut d = deployment(2, "nginx", json!({}));
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(30);
        let created = new_condition(
            "Progressing",
            "True",
            NEW_RS_CREATED,
            "Created new replica set \"web-new\"".into(),
            &at(100),
        );
        d.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            updated_replicas: Some(0),
            ready_replicas: Some(2),
            available_replicas: Some(2),
            conditions: Some(vec![created]),
            ..DeploymentStatus::default()
        });
        let old = replicaset("web-old", &d, 2, 2, 2, 1, json!({}));
        let new = replicaset("web-new", &d, 1, 1, 0, 2, json!({}));
        // A new pod counts as progress, and refreshes the update time.
        let moved = rollout_status(&d, Some(&new), &[&old, &new], &at(110));
        assert_eq!(
            progressing(&moved),
            ("True".into(), RS_UPDATED.into(), Some(110))
        );
        let message = get_condition(Some(&moved), "Progressing")
            .unwrap()
            .message
            .clone();
        assert_eq!(
            message.as_deref(),
            Some("ReplicaSet \"web-new\" is progressing.")
        );

        // Nothing more happens: stuck, then past the deadline.
        let mut stuck = d.clone();
        stuck.status = Some(moved);
        let same = rollout_status(&stuck, Some(&new), &[&old, &new], &at(140));
        assert_eq!(progressing(&same).1, RS_UPDATED, "exactly at the deadline");
        assert_eq!(
            requeue_stuck(&stuck, &same, &at(125)),
            Some(Duration::from_secs(16))
        );
        let late = rollout_status(&stuck, Some(&new), &[&old, &new], &at(141));
        assert_eq!(
            progressing(&late),
            ("False".into(), TIMED_OUT.into(), Some(141))
        );
        let message = get_condition(Some(&late), "Progressing")
            .unwrap()
            .message
            .clone();
        assert_eq!(
            message.as_deref(),
            Some("ReplicaSet \"web-new\" has timed out progressing.")
        );
        assert_eq!(requeue_stuck(&stuck, &late, &at(141)), None);

        // Complete: NewReplicaSetAvailable, and it stays so.
        let done_new = replicaset("web-new", &d, 2, 2, 2, 2, json!({}));
        let done_old = replicaset("web-old", &d, 0, 0, 0, 1, json!({}));
        let mut timed_out = d.clone();
        timed_out.status = Some(late);
        let done = rollout_status(
            &timed_out,
            Some(&done_new),
            &[&done_old, &done_new],
            &at(150),
        );
        assert_eq!(
            progressing(&done),
            ("True".into(), NEW_RS_AVAILABLE.into(), Some(150))
        );
        assert_eq!(requeue_stuck(&timed_out, &done, &at(150)), None);
        let mut finished = d.clone();
        finished.status = Some(done.clone());
        let later = rollout_status(
            &finished,
            Some(&done_new),
            &[&done_old, &done_new],
            &at(900),
        );
        assert_eq!(later.conditions, done.conditions);

        // No deadline at all: no Progressing condition.
        let mut unbounded = d.clone();
        unbounded.spec.as_mut().unwrap().progress_deadline_seconds = Some(i32::MAX);
        let none = rollout_status(&unbounded, Some(&new), &[&old, &new], &at(110));
        assert!(get_condition(Some(&none), "Progressing").is_none());
    }

    #[test]
    fn pausing_and_resuming_say_so_in_progressing() {
        let mut d = deployment(2, "nginx", json!({}));
        assert!(paused_conditions(&d, &at(5)).is_none());
        d.spec.as_mut().unwrap().paused = Some(true);
        let paused = paused_conditions(&d, &at(5)).unwrap();
        let c = get_condition(Some(&paused), "Progressing").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("Unknown", Some(PAUSED), Some("Deployment is paused"))
        );
        d.status = Some(paused);
        assert!(paused_conditions(&d, &at(6)).is_none(), "said once");
        d.spec.as_mut().unwrap().paused = Some(false);
        let resumed = paused_conditions(&d, &at(7)).unwrap();
        let c = get_condition(Some(&resumed), "Progressing").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("Unknown", Some(RESUMED), Some("Deployment is resumed"))
        );
        // A deadline already exceeded is not overwritten by a pause.
        let mut failed = deployment(2, "nginx", json!({}));
        failed.spec.as_mut().unwrap().paused = Some(true);
        failed.status = Some(DeploymentStatus {
            conditions: Some(vec![new_condition(
                "Progressing",
                "False",
                TIMED_OUT,
                "x".into(),
                &at(1),
            )]),
            ..DeploymentStatus::default()
        });
        assert!(paused_conditions(&failed, &at(5)).is_none());
    }
}
