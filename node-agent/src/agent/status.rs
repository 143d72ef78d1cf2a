//! A pod's status as the agent writes it, computed from the pod, what the
//! runtime says of its containers and the addresses the agent gave it.
//! Pure: the clock comes in as an argument. Fields the agent does not own
//! (the scheduler's `PodScheduled`, `nominatedNodeName`, `qosClass`, ...)
//! are carried over, and a condition keeps its `lastTransitionTime` while
//! its status stays, so a status computed twice from the same facts is
//! equal and the agent writes nothing.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::containers::PodContainers;

/// What the agent knows of one pod besides the pod itself.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The runtime's view, `None` before it first ran the pod.
    pub runtime: Option<&'a PodContainers>,
    /// The pod's address, once its sandbox is up (the node's for
    /// `hostNetwork` pods).
    pub pod_ip: Option<IpAddr>,
    /// The node's address.
    pub host_ip: IpAddr,
    /// Now.
    pub now: Time,
}

/// The pod's new status.
pub fn pod_status(pod: &Pod, facts: &Facts<'_>) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let phase = facts
        .runtime
        .map(|r| r.phase.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "Pending".into());
    let terminal = phase == "Succeeded" || phase == "Failed";
    status.phase = Some(phase);
    status.host_ip = Some(facts.host_ip.to_string());
    status.host_ips = Some(vec![HostIP {
        ip: facts.host_ip.to_string(),
    }]);
    if let Some(ip) = facts.pod_ip {
        status.pod_ip = Some(ip.to_string());
        status.pod_ips = Some(vec![PodIP { ip: ip.to_string() }]);
    }
    if status.start_time.is_none() {
        status.start_time = Some(facts.now.clone());
    }
    status.container_statuses = Some(match facts.runtime {
        Some(r) => r.statuses.clone(),
        None => creating(pod),
    });

    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let ready = facts.runtime.is_some_and(|r| r.ready) && !terminal;
    let (reason, message) = if ready {
        (None, None)
    } else if terminal {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let sandbox = facts.pod_ip.is_some();
    let ours = [
        ("PodReadyToStartContainers", sandbox, None, None),
        ("Initialized", true, None, None),
        ("Ready", ready, reason, message.clone()),
        ("ContainersReady", ready, reason, message),
    ];
    let mut conditions: Vec<PodCondition> = Vec::new();
    for (kind, on, reason, message) in ours.clone() {
        let status_text = if on { "True" } else { "False" };
        let before = old.conditions.iter().flatten().find(|c| c.type_ == kind);
        let since = match before {
            Some(c) if c.status == status_text => c.last_transition_time.clone(),
            _ => Some(facts.now.clone()),
        };
        conditions.push(PodCondition {
            type_: kind.to_string(),
            status: status_text.to_string(),
            reason: reason.map(str::to_string),
            message,
            last_transition_time: since,
            last_probe_time: None,
            observed_generation: before.and_then(|c| c.observed_generation),
        });
    }
    // The scheduler's PodScheduled and anything else others own stay.
    let owned = |t: &str| ours.iter().any(|(k, ..)| *k == t);
    for c in old.conditions.iter().flatten() {
        if !owned(&c.type_) {
            conditions.push(c.clone());
        }
    }
    if !conditions.iter().any(|c| c.type_ == "PodScheduled") {
        conditions.push(PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(facts.now.clone()),
            ..PodCondition::default()
        });
    }
    status.conditions = Some(conditions);
    status
}

/// Whether writing `new` would change the pod's status.
pub fn differs(pod: &Pod, new: &PodStatus) -> bool {
    let old = serde_json::to_value(pod.status.clone().unwrap_or_default()).ok();
    old != serde_json::to_value(new).ok()
}

/// Every container of the spec waiting to be created, before the runtime
/// has run any.
fn creating(pod: &Pod) -> Vec<ContainerStatus> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready: false,
            restart_count: 0,
            started: Some(false),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "a", "image": "busybox"}, {"name": "b", "image": "nginx"}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort", "conditions": [
                {"type": "PodScheduled", "status": "True",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap()
    }

    fn at(s: &str) -> Time {
        Time(s.parse::<Timestamp>().unwrap())
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    fn running(ready: bool) -> PodContainers {
        let statuses = ["a", "b"]
            .iter()
            .map(|n| ContainerStatus {
                name: n.to_string(),
                ready: ready || *n == "a",
                ..ContainerStatus::default()
            })
            .collect();
        PodContainers {
            statuses,
            phase: "Running".into(),
            ready,
        }
    }

    #[test]
    fn before_the_runtime_the_pod_is_pending_and_creating() {
        let facts = Facts {
            runtime: None,
            pod_ip: None,
            host_ip: "10.100.0.2".parse().unwrap(),
            now: at("2026-02-01T00:00:00Z"),
        };
        let s = pod_status(&pod(), &facts);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(s.host_ip.as_deref(), Some("10.100.0.2"));
        assert_eq!(s.pod_ip, None);
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"), "kept");
        let cs = s.container_statuses.as_ref().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(
            cs[1]
                .state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(cs[1].image, "nginx");
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "False");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "PodScheduled").last_transition_time,
            Some(at("2026-01-01T00:00:00Z")),
            "the scheduler's condition is kept as it was"
        );
    }

    #[test]
    fn readiness_follows_the_runtime_and_times_move_only_on_change() {
        let t1 = at("2026-02-01T00:00:00Z");
        let t2 = at("2026-02-01T00:01:00Z");
        let rt = running(false);
        let facts = Facts {
            runtime: Some(&rt),
            pod_ip: Some("10.0.1.2".parse().unwrap()),
            host_ip: "10.100.0.2".parse().unwrap(),
            now: t1.clone(),
        };
        let mut p = pod();
        let s = pod_status(&p, &facts);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.1.2"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.0.1.2");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "True");
        assert!(differs(&p, &s));
        p.status = Some(s.clone());

        // Same facts later: nothing to write.
        let later = Facts {
            now: t2.clone(),
            ..facts.clone()
        };
        let again = pod_status(&p, &later);
        assert!(!differs(&p, &again), "{again:?}");

        // Ready: the Ready conditions move, the others keep their time.
        let rt = running(true);
        let ready = Facts {
            runtime: Some(&rt),
            ..later
        };
        let s = pod_status(&p, &ready);
        assert!(differs(&p, &s));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(t2.clone()));
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(
            cond(&s, "Initialized").last_transition_time,
            Some(t1.clone())
        );
        assert_eq!(s.start_time, Some(t1));
    }

    #[test]
    fn a_finished_pod_is_not_ready() {
        let rt = PodContainers {
            phase: "Succeeded".into(),
            ready: false,
            statuses: vec![],
        };
        let facts = Facts {
            runtime: Some(&rt),
            pod_ip: Some("10.0.1.2".parse().unwrap()),
            host_ip: "10.100.0.2".parse().unwrap(),
            now: at("2026-02-01T00:00:00Z"),
        };
        let s = pod_status(&pod(), &facts);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
    }
}
