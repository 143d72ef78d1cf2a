//! The boundary between the agent's loop (which knows the API: pods bound
//! to the node, their sandboxes, their status) and the process runtime
//! (which knows processes: containers, restarts, probes, logs). The loop
//! holds a [`Containers`]; the runtime implements it; tests of the loop
//! may use a recording implementation.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Where and how a pod's containers run, as the agent prepared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRef {
    /// The pod's network namespace (`/run/netns/<name>`); `None` for
    /// `hostNetwork` pods, which run in the node's own namespace.
    pub netns_path: Option<PathBuf>,
    /// The pod's IP (the node's IP for `hostNetwork` pods).
    pub pod_ip: IpAddr,
    /// What the pod's `/etc/resolv.conf` says.
    pub resolv_conf: String,
    /// What the pod's `/etc/hosts` says.
    pub hosts: String,
}

/// A pod's containers as the runtime sees them now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodContainers {
    /// One per container of the spec, in the spec's order, with
    /// Kubernetes' states, exit codes, restart counts and readiness.
    pub statuses: Vec<ContainerStatus>,
    /// `Pending`, `Running`, `Succeeded` or `Failed`, by Kubernetes' rules
    /// for the pod's restart policy.
    pub phase: String,
    /// Every container is ready (running, and its readiness probe passes).
    pub ready: bool,
}

/// Something the kubelet would report as an Event about a pod: a probe
/// failing, a container killed or backing off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// The container it is about.
    pub container: String,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `Unhealthy`, `Killing`, `BackOff`, `Started` or `Failed`.
    pub reason: &'static str,
    /// The kubelet's wording.
    pub message: String,
    /// When it happened.
    pub at: k8s_openapi::jiff::Timestamp,
}

/// What a runtime failed to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeError(pub String);

/// The process runtime, as the agent's loop uses it. Every method is
/// idempotent and safe to call again after an agent restart.
pub trait Containers: Send + Sync + 'static {
    /// Brings the pod's containers in line with its spec: starts what is
    /// missing, restarts by the restart policy with back-off, runs probes.
    fn sync(
        &self,
        pod: &Pod,
        sandbox: &SandboxRef,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The pod's containers now, or `None` if the runtime has never run it.
    fn status(&self, pod_uid: &str) -> Option<PodContainers>;

    /// Takes the events queued for the pod since the last call, oldest
    /// first, for the agent to post as Events of the pod.
    fn take_events(&self, pod_uid: &str) -> Vec<RuntimeEvent>;

    /// Stops every container of the pod — SIGTERM, SIGKILL after `grace` —
    /// and forgets it (its logs go too).
    fn kill(
        &self,
        pod_uid: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The uids of every pod the runtime has state for, running or not, so
    /// that a restarted agent can remove what no longer has a pod.
    fn pods(&self) -> Vec<String>;

    /// A counter that moves whenever some pod's containers change (a start,
    /// an exit, a restart, a probe result), so the agent writes status.
    fn changes(&self) -> tokio::sync::watch::Receiver<u64>;

    /// The log file of a container (`previous`: of its last terminated
    /// run), for the agent's `/containerLogs` endpoint.
    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<PathBuf>;
}
