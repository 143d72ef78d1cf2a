//! The article's first part on the real kernel, through `knit lab` and the
//! real kubectl v1.35: pods with their own network namespaces on a
//! two-node pod network, reached across the host-gw routes; the containers
//! of a pod sharing localhost; readiness and liveness probes; an agent
//! killed with SIGKILL and restarted under running pods and a connection
//! in flight; a deleted pod taking its namespace, veth and IP with it; and
//! `knit lab down` leaving nothing (the checks of `tests/lab.rs`, reused).
//!
//! Root only: without root the tests print `SKIP: needs root` and pass,
//! except under `CI=true`; without `$KNIT_KUBECTL` they SKIP the same way.
//! Each test has its own lab (name and subnet from the test process's pid
//! and the test's number, see [`Lab::new`]), removed by a Drop guard, so
//! they run in parallel. Every wait is bounded and fails with `kubectl get
//! pods -o wide` and the agents' log tails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use knit_e2e::lab::{
    Lab, LabKubectl, condition_true, for_lab, ip, lab_with_kubectl, pod_name, str_of, text,
};
use serde_json::Value;

const DEPLOYMENT: &str = include_str!("manifests/service-test-deployment-python3.yaml");
const CLIENT: &str = include_str!("manifests/service-test-client-pinned.yaml");
const TWO_CONTAINERS: &str = include_str!("manifests/pod-two-containers.yaml");
const READINESS: &str = include_str!("manifests/pod-readiness-fails.yaml");
const LIVENESS: &str = include_str!("manifests/pod-liveness-fails.yaml");
const STREAM: &str = include_str!("manifests/pod-stream.yaml");

/// How long pods may take to come up in a fresh lab.
const POD_LIMIT: Duration = Duration::from_secs(30);

/// Pod `name` once `ready(pod)` holds, else `Err` with why not yet.
fn pod_where(
    kubectl: &LabKubectl,
    name: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let pod = kubectl.get_json("pod", name)?;
    if ready(&pod) {
        Ok(pod)
    } else {
        Err(format!("{name} not {what}: status {}", pod["status"]))
    }
}

fn running_with_ip(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && pod["status"]["podIP"].is_string()
}

/// The seconds since the epoch of an RFC 3339 time in a status.
fn epoch_seconds(v: &Value) -> i64 {
    let t: jiff::Timestamp = str_of(v, "a timestamp")
        .parse()
        .unwrap_or_else(|e| panic!("{v} is not a timestamp: {e}"));
    t.as_second()
}

/// The first container status's `restartCount`.
fn restarts(pod: &Value) -> u64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

/// The pids in every sandbox of the lab's nodes.
fn sandbox_pids(lab: &Lab, nodes: usize) -> Vec<u32> {
    (1..=nodes)
        .flat_map(|i| lab.sandboxes(i))
        .flat_map(|ns| lab.pids_in(&ns))
        .collect()
}

/// The article's first part: the Deployment lands one pod per node with
/// the article's addresses, a client pod on node 1 fetches both directly
/// (one across the host-gw route), `kubectl logs` shows each pod's
/// greeting; then `knit lab down` leaves nothing, the pods' processes
/// included.
#[test]
fn article_deployment_pods_reach_each_other_across_nodes() {
    let Some((lab, kubectl)) = lab_with_kubectl(20, 2) else {
        return;
    };
    kubectl.apply(DEPLOYMENT);
    let servers = lab.wait_for("two service-test pods Running and Ready", POD_LIMIT, || {
        let pods: Vec<Value> = kubectl
            .pods()?
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "service_test_pod")
            .collect();
        let ready = pods
            .iter()
            .filter(|p| running_with_ip(p) && condition_true(p, "Ready"))
            .count();
        if pods.len() == 2 && ready == 2 {
            Ok(pods)
        } else {
            Err(format!("{} pods, {ready} ready", pods.len()))
        }
    });

    // One pod per node, each with the first pod address of its node's
    // CIDR: 10.0.1.2 on node 1, 10.0.2.2 on node 2.
    let mut by_node = BTreeMap::new();
    for pod in &servers {
        let node = str_of(&pod["spec"]["nodeName"], "nodeName").to_string();
        let node_obj = kubectl
            .get_json("node", &node)
            .unwrap_or_else(|e| panic!("node {node}: {e}"));
        let cidr = str_of(&node_obj["spec"]["podCIDR"], "podCIDR").to_string();
        let pod_ip = str_of(&pod["status"]["podIP"], "podIP").to_string();
        let expected_ip = format!("{}.2", cidr.trim_end_matches(".0/24"));
        assert_eq!(
            pod_ip,
            expected_ip,
            "pod {} on {node} ({cidr})\n{}",
            pod_name(pod),
            lab.diagnostics()
        );
        assert_eq!(
            pod["status"]["hostIP"],
            node_obj["status"]["addresses"][0]["address"]
        );
        let previous = by_node.insert(node.clone(), (pod_name(pod).to_string(), pod_ip));
        assert!(
            previous.is_none(),
            "two pods on {node}\n{}",
            lab.diagnostics()
        );
    }
    let (node1, node2) = (lab.node_name(1), lab.node_name(2));
    assert_eq!(by_node[&node1].1, "10.0.1.2", "{by_node:?}");
    assert_eq!(by_node[&node2].1, "10.0.2.2", "{by_node:?}");

    // Node 1 reaches node 2's CIDR through a host-gw route via node 2's
    // underlay address (knit's routes carry protocol 107).
    let route = ip(&["-n", &lab.node_netns(1), "route", "show", "10.0.2.0/24"]);
    assert!(
        route.contains(&format!("via {} ", lab.addr(3))) && route.contains("proto 107"),
        "node 1's route to node 2's pods: {route:?}"
    );

    kubectl.apply(&for_lab(CLIENT, &lab));
    let client = lab.wait_for("the client pod Succeeded", POD_LIMIT, || {
        let pod = kubectl.get_json("pod", "service-test-client")?;
        match pod["status"]["phase"].as_str() {
            Some("Succeeded") => Ok(pod),
            Some("Failed") => panic!(
                "the client failed:\n{}\n{}",
                text(&kubectl.run(&["logs", "service-test-client"]).stdout),
                lab.diagnostics()
            ),
            phase => Err(format!("phase {phase:?}")),
        }
    });
    assert_eq!(client["spec"]["nodeName"], node1.as_str());
    assert_eq!(client["status"]["podIP"], "10.0.1.3");
    let logs = kubectl.ok(&["logs", "service-test-client"]);
    for (pod, pod_ip) in by_node.values() {
        let line = format!("{pod_ip}: <p>Hello from {pod}</p>");
        assert!(
            logs.lines().any(|l| l == line),
            "the client's log lacks {line:?}:\n{logs}"
        );
    }

    // down removes everything, the server pods' processes with it.
    let pids = sandbox_pids(&lab, 2);
    assert!(pids.len() >= 2, "processes in the sandboxes: {pids:?}");
    let mut all = lab.recorded_pids(&lab.dir());
    all.extend(pids);
    lab.down();
    lab.assert_gone(&lab.dir(), &all);
}

/// The containers of a pod share its network namespace: the sidecar
/// reaches the server at localhost:8080; both run as the pod's hostname.
#[test]
fn containers_of_a_pod_share_localhost() {
    let Some((lab, kubectl)) = lab_with_kubectl(21, 1) else {
        return;
    };
    kubectl.apply(TWO_CONTAINERS);
    let pod = lab.wait_for("two-containers Running and Ready", POD_LIMIT, || {
        pod_where(&kubectl, "two-containers", "Running and Ready", |p| {
            running_with_ip(p) && condition_true(p, "Ready")
        })
    });
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .expect("container statuses");
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    let logs = lab.wait_for("the sidecar's answer from localhost", POD_LIMIT, || {
        let out = kubectl.run(&["logs", "two-containers", "-c", "sidecar"]);
        let logs = text(&out.stdout);
        if logs.contains("sidecar got:") {
            Ok(logs)
        } else {
            Err(format!("{logs}{}", text(&out.stderr)))
        }
    });
    assert!(
        logs.lines()
            .any(|l| l == "sidecar got: served to the sidecar of two-containers"),
        "sidecar log: {logs}"
    );
    // Both containers are in the pod's sandbox, and only there.
    let sandboxes = lab.sandboxes(1);
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    let sandbox = sandboxes.first().expect("one sandbox");
    let inside = lab.pids_in(sandbox);
    assert!(inside.len() >= 2, "processes in {sandbox}: {inside:?}");
    let listening = ip(&["netns", "exec", sandbox, "ss", "-ltnH"]);
    assert!(
        listening.contains(":8080"),
        "nothing listens on 8080 in the sandbox: {listening}"
    );
    let node_listening = ip(&["netns", "exec", &lab.node_netns(1), "ss", "-ltnH"]);
    assert!(
        !node_listening.contains(":8080"),
        "the server listens in the node's namespace: {node_listening}"
    );
}

/// A readiness probe that starts failing turns the pod not-Ready within
/// its probe window and leaves the container running; a failing liveness
/// probe restarts its container and counts the restart; both are told as
/// `Unhealthy` events.
#[test]
fn failing_probes_unready_and_restart() {
    let Some((lab, kubectl)) = lab_with_kubectl(22, 1) else {
        return;
    };
    kubectl.apply(READINESS);
    kubectl.apply(LIVENESS);

    // Readiness: Ready first, then not Ready once /ready is gone (6 s
    // after the start), within periodSeconds × failureThreshold = 2 s and
    // a little for the status write (timestamps have whole seconds).
    lab.wait_for("readiness-fails Ready", POD_LIMIT, || {
        pod_where(&kubectl, "readiness-fails", "Ready", |p| {
            condition_true(p, "Ready")
        })
    });
    let unready = lab.wait_for(
        "readiness-fails not Ready after its probe fails",
        Duration::from_secs(20),
        || {
            pod_where(&kubectl, "readiness-fails", "not Ready", |p| {
                !condition_true(p, "Ready") && p["status"]["phase"] == "Running"
            })
        },
    );
    let container = &unready["status"]["containerStatuses"][0];
    assert_eq!(container["ready"], false, "{container}");
    assert_eq!(container["restartCount"], 0, "readiness must not restart");
    assert!(container["state"]["running"].is_object(), "{container}");
    let started = epoch_seconds(&container["state"]["running"]["startedAt"]);
    let ready_cond = unready["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .expect("a Ready condition");
    let turned = epoch_seconds(&ready_cond["lastTransitionTime"]);
    let after = turned - started;
    assert!(
        (5..=6 + 2 + 3).contains(&after),
        "not-Ready {after} s after the start; /ready went at 6 s, the probe window is 2 s: {ready_cond}"
    );

    // Liveness: the container is killed and started again.
    let restarted = lab.wait_for(
        "liveness-fails restarted by its liveness probe",
        Duration::from_secs(30),
        || {
            pod_where(&kubectl, "liveness-fails", "restarted", |p| {
                restarts(p) >= 1
            })
        },
    );
    let container = &restarted["status"]["containerStatuses"][0];
    let last = &container["lastState"]["terminated"];
    assert!(last.is_object(), "no lastState.terminated: {container}");
    let ran = epoch_seconds(&last["finishedAt"]) - epoch_seconds(&last["startedAt"]);
    assert!(
        (3..=3 + 1 + 2 + 3).contains(&ran),
        "the first run lasted {ran} s; /healthz went at 3 s, probes every 1 s, 2 failures: {last}"
    );

    let events = lab.wait_for(
        "Unhealthy events for both probes",
        Duration::from_secs(15),
        || {
            let out = kubectl.run(&["get", "events", "-o", "json"]);
            let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let messages: Vec<String> = list["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter(|e| e["reason"] == "Unhealthy")
                .map(|e| format!("{}: {}", e["involvedObject"]["name"], e["message"]))
                .collect();
            let has = |pod: &str, what: &str| {
                messages.iter().any(|m| m.contains(pod) && m.contains(what))
            };
            if has("readiness-fails", "Readiness probe failed")
                && has("liveness-fails", "Liveness probe failed")
            {
                Ok(messages)
            } else {
                Err(format!("{messages:?}"))
            }
        },
    );
    assert!(!events.is_empty());
}

/// What must not change when an agent restarts under running pods.
#[derive(Debug, PartialEq, Eq)]
struct HostView {
    sandboxes: BTreeSet<String>,
    veths: [BTreeSet<String>; 2],
    processes: BTreeMap<String, BTreeSet<u32>>,
    /// (name, uid, podIP, restartCount) per pod.
    pods: BTreeSet<(String, String, String, u64)>,
}

fn host_view(lab: &Lab, kubectl: &LabKubectl) -> HostView {
    let sandboxes: BTreeSet<String> = (1..=2).flat_map(|i| lab.sandboxes(i)).collect();
    let processes = sandboxes
        .iter()
        .map(|ns| (ns.clone(), lab.pids_in(ns)))
        .collect();
    let pods = kubectl
        .pods()
        .unwrap_or_else(|e| panic!("listing pods: {e}"))
        .iter()
        .map(|p| {
            (
                pod_name(p).to_string(),
                p["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["status"]["podIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                restarts(p),
            )
        })
        .collect();
    HostView {
        sandboxes,
        veths: [lab.veths(1), lab.veths(2)],
        processes,
        pods,
    }
}

/// The highest number the stream client has printed, or `Err` with its
/// log (a `LOST` line fails the test at once).
fn stream_progress(lab: &Lab, kubectl: &LabKubectl) -> Result<u64, String> {
    let out = kubectl.run(&["logs", "stream-client"]);
    let logs = text(&out.stdout);
    assert!(
        !logs.contains("LOST"),
        "the connection in flight was lost:\n{logs}\n{}",
        lab.diagnostics()
    );
    logs.lines()
        .filter_map(|l| l.strip_prefix("got ")?.parse::<u64>().ok())
        .max()
        .ok_or_else(|| format!("no progress yet: {logs}{}", text(&out.stderr)))
}

/// Waits until the stream has moved `lines` past `from`.
fn stream_past(lab: &Lab, kubectl: &LabKubectl, from: u64, lines: u64, when: &str) -> u64 {
    lab.wait_for(
        &format!("the stream moving {lines} lines past {from} {when}"),
        Duration::from_secs(15),
        || {
            let n = stream_progress(lab, kubectl)?;
            if n >= from + lines {
                Ok(n)
            } else {
                Err(format!("at {n}"))
            }
        },
    )
}

/// `kill -9` of node 2's agent under a server pod that streams to a client
/// on node 1, and a restart the way `knit lab up` starts it: pods keep
/// their IPs and processes, the connection in flight goes on without a
/// gap, no namespace, veth or process is added or lost. Then deleting the
/// server pod removes its namespace, veth and processes, and frees its IP
/// for the next pod.
#[test]
fn agent_restart_keeps_pods_and_connections_and_delete_cleans_up() {
    let Some((lab, kubectl)) = lab_with_kubectl(23, 2) else {
        return;
    };
    kubectl.apply(&for_lab(STREAM, &lab));
    let server = lab.wait_for("stream-server Running", POD_LIMIT, || {
        pod_where(&kubectl, "stream-server", "Running", running_with_ip)
    });
    assert_eq!(server["status"]["podIP"], "10.0.2.2");
    let start = stream_past(&lab, &kubectl, 0, 20, "after the start");
    let before = host_view(&lab, &kubectl);
    assert_eq!(before.sandboxes.len(), 2, "{before:?}");
    assert_eq!(before.veths[0].len(), 1, "{before:?}");
    assert_eq!(before.veths[1].len(), 1, "{before:?}");

    // Node 2's agent dies; its pod keeps serving meanwhile.
    let old_pid = lab.agent_pid(2).expect("node 2's agent");
    let args = lab.kill_agent(2);
    let during = stream_past(&lab, &kubectl, start, 20, "with node 2's agent dead");
    let new_pid = lab.start_agent(2, &args);
    assert_ne!(new_pid, old_pid);
    // The new agent serves its port again and the node is Ready.
    let node_port: SocketAddr = format!("{}:10250", lab.addr(3))
        .parse()
        .expect("a socket address");
    lab.wait_for(
        "the restarted agent serving :10250",
        Duration::from_secs(20),
        || {
            assert!(
                knit_e2e::lab::alive(new_pid),
                "the restarted agent exited:\n{}",
                lab.diagnostics()
            );
            TcpStream::connect_timeout(&node_port, Duration::from_millis(500))
                .map_err(|e| e.to_string())
        },
    );
    // Three more seconds of stream while the agent resynchronises.
    let after = stream_past(&lab, &kubectl, during, 60, "after the restart");
    lab.wait_for("node 2 Ready again", Duration::from_secs(20), || {
        let node = kubectl.get_json("node", &lab.node_name(2))?;
        if condition_true(&node, "Ready") {
            Ok(())
        } else {
            Err(format!("{}", node["status"]["conditions"]))
        }
    });
    let now = host_view(&lab, &kubectl);
    assert_eq!(
        now,
        before,
        "the host or the pods changed across the agent's restart\n{}",
        lab.diagnostics()
    );
    let server = kubectl
        .get_json("pod", "stream-server")
        .expect("stream-server");
    assert!(condition_true(&server, "Ready"), "{}", server["status"]);
    eprintln!(
        "stream: {start} before the kill, {during} with the agent dead, {after} after the restart"
    );

    // Deleting the server pod removes its sandbox; its IP is the next
    // pod's.
    let server_ns = lab
        .sandboxes(2)
        .into_iter()
        .next()
        .expect("node 2's sandbox");
    let server_pids = lab.pids_in(&server_ns);
    kubectl.ok(&["delete", "pod", "stream-server", "--timeout=30s"]);
    lab.wait_for(
        "the server's namespace and veth removed",
        Duration::from_secs(20),
        || {
            let (sandboxes, veths) = (lab.sandboxes(2), lab.veths(2));
            if sandboxes.is_empty() && veths.is_empty() {
                Ok(())
            } else {
                Err(format!("sandboxes {sandboxes:?}, veths {veths:?}"))
            }
        },
    );
    for pid in &server_pids {
        assert!(!knit_e2e::lab::alive(*pid), "server process {pid} left");
    }
    assert!(
        kubectl.get_json("pod", "stream-server").is_err(),
        "stream-server still in the API"
    );
    let addrs = ip(&["-n", &lab.node_netns(2), "-o", "-4", "addr", "show"]);
    assert!(
        !addrs.contains("10.0.2.2/"),
        "10.0.2.2 still on node 2: {addrs}"
    );
    let again = for_lab(STREAM, &lab)
        .split("\n---\n")
        .next()
        .expect("the server's document")
        .replace("name: stream-server", "name: stream-server-2");
    kubectl.apply(&again);
    let next = lab.wait_for("stream-server-2 Running", POD_LIMIT, || {
        pod_where(&kubectl, "stream-server-2", "Running", running_with_ip)
    });
    assert_eq!(
        next["status"]["podIP"], "10.0.2.2",
        "the deleted pod's IP was not freed"
    );
}
