//! The pod printer: READY, the STATUS kubectl users know (`Running`,
//! `Init:1/2`, `CrashLoopBackOff`, `Completed`, `Terminating`), RESTARTS
//! with the time of the last restart, and the wide IP/NODE columns.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, Context, NAME, Row, RowCondition, typed};

pub(super) const COLUMNS: &[Column] = &[
    NAME,
    Column::new("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    Column::new("Status", "string", "The aggregate status of the containers in this pod."),
    Column::new(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    Column::new("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.").wide(),
    Column::new("Node", "string", "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName.").wide(),
    Column::new("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.").wide(),
    Column::new("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\"").wide(),
];

const SUCCEEDED: RowCondition = RowCondition {
    kind: "Completed",
    status: "True",
    reason: "Succeeded",
    message: "The pod has completed successfully.",
};

const FAILED: RowCondition = RowCondition {
    kind: "Completed",
    status: "True",
    reason: "Failed",
    message: "The pod failed.",
};

/// What the container statuses add up to.
#[derive(Default)]
struct Tally {
    ready: usize,
    restarts: i64,
    last_restart: Option<Timestamp>,
}

impl Tally {
    fn count_restarts(&mut self, status: &ContainerStatus) {
        self.restarts += i64::from(status.restart_count);
        let finished = last_finished(status);
        if finished > self.last_restart {
            self.last_restart = finished;
        }
    }
}

fn last_finished(status: &ContainerStatus) -> Option<Timestamp> {
    status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0)
}

fn condition_true(conditions: &[PodCondition], kind: &str) -> bool {
    conditions
        .iter()
        .find(|c| c.type_ == kind)
        .is_some_and(|c| c.status == "True")
}

/// `Signal:9` / `ExitCode:1` for a container that ended without a reason.
fn exit_text(state: &ContainerState) -> Option<String> {
    let terminated = state.terminated.as_ref()?;
    Some(match terminated.signal {
        Some(signal) if signal != 0 => format!("Signal:{signal}"),
        _ => format!("ExitCode:{}", terminated.exit_code),
    })
}

pub(super) fn row(object: &Value, context: &Context) -> Option<Row> {
    let pod: Pod = typed(object)?;
    let spec = pod.spec.unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let mut row = Row::default();
    let phase = status.phase.clone().unwrap_or_default();
    match phase.as_str() {
        "Succeeded" => row.conditions.push(SUCCEEDED),
        "Failed" => row.conditions.push(FAILED),
        _ => {}
    }
    let (ready, total, mut reason, tally) = aggregate(&spec, &status, &phase);

    let deleting = pod.metadata.deletion_timestamp.is_some();
    if deleting && status.reason.as_deref() == Some("NodeLost") {
        reason = "Unknown".into();
    } else if deleting && !matches!(phase.as_str(), "Succeeded" | "Failed") {
        reason = "Terminating".into();
    }

    let restarts = match tally.last_restart {
        Some(at) if tally.restarts != 0 => {
            format!(
                "{} ({} ago)",
                tally.restarts,
                super::since(Some(at), context.now)
            )
        }
        _ => tally.restarts.to_string(),
    };

    let pod_ip = status
        .pod_ips
        .as_ref()
        .and_then(|ips| ips.first())
        .map(|ip| ip.ip.clone())
        .or(status.pod_ip.clone())
        .unwrap_or_default();
    let gates = spec.readiness_gates.as_deref().unwrap_or_default();
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = status.conditions.as_deref().unwrap_or_default();
        let passing = gates
            .iter()
            .filter(|g| condition_true(conditions, &g.condition_type))
            .count();
        format!("{passing}/{}", gates.len())
    };
    row.cells = vec![
        Value::from(pod.metadata.name.unwrap_or_default()),
        Value::from(format!("{ready}/{total}")),
        Value::from(reason),
        Value::from(restarts),
        context.age(object),
        Value::from(super::or_none(pod_ip)),
        Value::from(super::or_none(spec.node_name.unwrap_or_default())),
        Value::from(super::or_none(
            status.nominated_node_name.unwrap_or_default(),
        )),
        Value::from(readiness_gates),
    ];
    Some(row)
}

/// Ready and total containers, the STATUS text and the restarts, from the
/// init containers first (a pod still initializing shows `Init:...`), then
/// the app containers, the last one listed with a reason winning.
fn aggregate(spec: &PodSpec, status: &PodStatus, phase: &str) -> (usize, usize, String, Tally) {
    let mut reason = status
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| phase.to_string());
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".into();
    }

    let init_specs = spec.init_containers.as_deref().unwrap_or_default();
    // Sidecars (init containers that restart always) count as containers.
    let sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    };
    let total = spec.containers.len()
        + init_specs
            .iter()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .count();

    let mut all = Tally::default();
    let mut sidecars = Tally::default();
    let mut initializing = false;
    for (i, container) in status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        all.count_restarts(container);
        let is_sidecar = sidecar(&container.name);
        if is_sidecar {
            sidecars.count_restarts(container);
        }
        let state = container.state.clone().unwrap_or_default();
        let terminated = state.terminated.as_ref();
        let waiting_reason = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty() && *r != "PodInitializing");
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if is_sidecar && container.started == Some(true) {
            if container.ready {
                sidecars.ready += 1;
            }
            continue;
        }
        reason = match (terminated, waiting_reason) {
            (Some(t), _) => match t.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => format!("Init:{}", exit_text(&state).unwrap_or_default()),
            },
            (None, Some(waiting)) => format!("Init:{waiting}"),
            (None, None) => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }

    let mut tally = all;
    tally.ready += sidecars.ready;
    if !initializing || condition_true(conditions, "Initialized") {
        tally = Tally {
            ready: sidecars.ready,
            restarts: sidecars.restarts,
            last_restart: sidecars.last_restart,
        };
        let mut running = false;
        for container in status
            .container_statuses
            .as_deref()
            .unwrap_or_default()
            .iter()
            .rev()
        {
            tally.count_restarts(container);
            let state = container.state.clone().unwrap_or_default();
            let waiting = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty());
            let terminated = state
                .terminated
                .as_ref()
                .and_then(|t| t.reason.clone())
                .filter(|r| !r.is_empty());
            if let Some(waiting) = waiting {
                reason = waiting;
            } else if let Some(terminated) = terminated {
                reason = terminated;
            } else if let Some(exit) = exit_text(&state) {
                reason = exit;
            } else if container.ready && state.running.is_some() {
                running = true;
                tally.ready += 1;
            }
        }
        // A pod whose sidecar or another container still runs has not
        // completed.
        if reason == "Completed" && running {
            reason = if condition_true(conditions, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    (tally.ready, total, reason, tally)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cells;
    use serde_json::{Value, json};

    /// One of the article's pods: two containers on 10.0.1.2, both up.
    fn running_pod() -> Value {
        json!({
            "metadata": {"name": "service-test-6cw2j", "namespace": "default", "creationTimestamp": "2024-05-01T11:55:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "python"}, {"name": "sidecar", "image": "busybox"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.0.1.2",
                "podIPs": [{"ip": "10.0.1.2"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 0, "image": "python", "imageID": "", "state": {"running": {"startedAt": "2024-05-01T11:55:05Z"}}},
                    {"name": "sidecar", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "", "state": {"running": {"startedAt": "2024-05-01T11:55:05Z"}}}
                ]
            }
        })
    }

    #[test]
    fn a_running_pod_reads_as_kubectl_shows_it() {
        assert_eq!(
            cells("Pod", &running_pod()),
            [
                "service-test-6cw2j",
                "2/2",
                "Running",
                "0",
                "5m",
                "10.0.1.2",
                "node-1",
                "<none>",
                "<none>"
            ]
        );
    }

    #[test]
    fn a_crashing_container_names_its_reason_and_last_restart() {
        let mut pod = running_pod();
        pod["status"]["containerStatuses"][0] = json!({
            "name": "app", "ready": false, "restartCount": 5, "image": "python", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:58:00Z"}}
        });
        let row = cells("Pod", &pod);
        assert_eq!(row[1], "1/2");
        assert_eq!(row[2], "CrashLoopBackOff");
        assert_eq!(row[3], "5 (2m ago)");
    }

    #[test]
    fn a_pending_pod_has_no_ip_or_node() {
        let pod = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:59:50Z"},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Pending"}
        });
        assert_eq!(
            cells("Pod", &pod),
            [
                "web", "0/1", "Pending", "0", "10s", "<none>", "<none>", "<none>", "<none>"
            ]
        );
    }

    #[test]
    fn init_containers_show_progress_and_failures() {
        let mut pod = json!({
            "metadata": {"name": "web"},
            "spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "image": "", "imageID": "", "state": {"terminated": {"exitCode": 0}}},
                {"name": "b", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"running": {}}}
            ]}
        });
        assert_eq!(cells("Pod", &pod)[2], "Init:1/2");
        pod["status"]["initContainerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 2}});
        assert_eq!(cells("Pod", &pod)[2], "Init:ExitCode:2");
        pod["status"]["initContainerStatuses"][1]["state"] =
            json!({"waiting": {"reason": "ImagePullBackOff"}});
        assert_eq!(cells("Pod", &pod)[2], "Init:ImagePullBackOff");
        assert_eq!(cells("Pod", &pod)[4], "<unknown>");
    }

    #[test]
    fn finished_and_deleted_pods() {
        let mut pod = json!({
            "metadata": {"name": "job"},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "app", "ready": false, "restartCount": 0, "image": "", "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]}
        });
        assert_eq!(cells("Pod", &pod)[2], "Completed");
        pod["status"]["containerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 137, "signal": 9}});
        assert_eq!(cells("Pod", &pod)[2], "Signal:9");

        let mut running = running_pod();
        running["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(cells("Pod", &running)[2], "Terminating");
    }

    #[test]
    fn readiness_gates_count_the_true_conditions() {
        let mut pod = running_pod();
        pod["spec"]["readinessGates"] =
            json!([{"conditionType": "lb/ready"}, {"conditionType": "x/ok"}]);
        pod["status"]["conditions"] =
            json!([{"type": "lb/ready", "status": "True"}, {"type": "x/ok", "status": "False"}]);
        assert_eq!(cells("Pod", &pod)[8], "1/2");
    }

    #[test]
    fn finished_pods_carry_the_completed_condition() {
        let pod = json!({"metadata": {"name": "j"}, "spec": {"containers": []}, "status": {"phase": "Failed"}});
        let row = super::super::row(
            "Pod",
            &pod,
            &super::super::Context {
                now: super::super::test_support::now(),
                wide: true,
            },
        );
        assert_eq!(row.conditions[0].reason, "Failed");
        assert_eq!(row.conditions[0].kind, "Completed");
    }
}
