//! The article's second and third parts on the real kernel, through `knit
//! lab` and the real kubectl v1.35: a Service's ClusterIP caught by every
//! node's nftables table and spread over the ready pods, refused at once
//! with no endpoint, NodePorts from a host outside the cluster with both
//! external traffic policies, session affinity, hairpin, a UDP service
//! whose endpoint goes away, readiness taking a pod out of rotation on
//! every node, and traffic that survives an agent's restart and a table
//! deleted by hand.
//!
//! The clients are `tests/scripts/svc_client.py`, run with `ip netns exec`
//! inside a pod's network namespace (its traffic leaves through the pod's
//! `eth0`, exactly as a container's would) or in the lab's external host.
//! Root only, as `tests/article_pods.rs`: without root (or kubectl outside
//! CI) the tests print `SKIP` and pass. Each test has its own lab.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use knit_e2e::lab::{
    Lab, LabKubectl, condition_true, for_lab, lab_with_kubectl, pod_name, run_within, str_of, text,
};
use serde_json::{Value, json};

const DEPLOYMENT: &str = include_str!("manifests/service-test-deployment-python3.yaml");
const SERVICE: &str = include_str!("manifests/service-test-service.yaml");
const ECHO: &str = include_str!("manifests/echo.yaml");
const CLIENT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/svc_client.py");

/// How long pods may take to come up in a fresh lab.
const POD_LIMIT: Duration = Duration::from_secs(30);
/// How long a change in the API may take to reach every node's table in
/// these tests (the issue's target is 100 ms; this leaves room for a busy
/// machine without hiding a missing sync).
const PROGRAMMING_LIMIT: Duration = Duration::from_secs(5);

/// The network namespace of `pod`'s sandbox: `<node netns>.<uid>`.
fn sandbox_of(lab: &Lab, nodes: usize, pod: &Value) -> String {
    let node = str_of(&pod["spec"]["nodeName"], "nodeName");
    let i = (1..=nodes)
        .find(|&i| lab.node_name(i) == node)
        .unwrap_or_else(|| panic!("pod {} is on {node}, not a lab node", pod_name(pod)));
    let uid = str_of(&pod["metadata"]["uid"], "uid");
    format!("{}.{uid}", lab.node_netns(i))
}

/// The client script in `netns` with `args`, as a command.
fn client_command(netns: &str, args: &Value) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "python3", CLIENT_SCRIPT])
        .arg(args.to_string());
    cmd
}

/// The JSON answer of a client run that must have succeeded.
fn answer(what: &str, out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", text(&out.stdout)))
}

/// Runs the client script in `netns` with `args`; its JSON answer.
fn client(netns: &str, args: &Value, limit: Duration) -> Value {
    let out = run_within(&mut client_command(netns, args), limit);
    answer(&format!("client {args} in {netns}"), &out)
}

/// Starts the client script in `netns` in the background (a loop).
fn client_in_background(netns: &str, args: &Value) -> Child {
    client_command(netns, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a client loop")
}

/// Waits (bounded) for a background client and reads its answer.
fn finish(child: Child, limit: Duration) -> Value {
    let start = Instant::now();
    let mut child = child;
    while child.try_wait().expect("waiting on the client").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the client loop ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("the client's output");
    answer("client loop", &out)
}

/// The pods with label `app=<app>`, once `count` of them are Running and
/// Ready with an IP.
fn ready_pods(lab: &Lab, kubectl: &LabKubectl, app: &str, count: usize) -> Vec<Value> {
    lab.wait_for(&format!("{count} {app} pods Ready"), POD_LIMIT, || {
        let pods: Vec<Value> = kubectl
            .pods()?
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let ready = pods
            .iter()
            .filter(|p| p["status"]["podIP"].is_string() && condition_true(p, "Ready"))
            .count();
        if pods.len() == count && ready == count {
            Ok(pods)
        } else {
            Err(format!("{} pods, {ready} ready", pods.len()))
        }
    })
}

/// The client pod of `echo.yaml`, once it runs; its sandbox.
fn client_sandbox(lab: &Lab, kubectl: &LabKubectl, nodes: usize) -> String {
    let pod = lab.wait_for("the client pod Running", POD_LIMIT, || {
        let pod = kubectl.get_json("pod", "client")?;
        if pod["status"]["phase"] == "Running" && pod["status"]["podIP"].is_string() {
            Ok(pod)
        } else {
            Err(format!("status {}", pod["status"]))
        }
    });
    sandbox_of(lab, nodes, &pod)
}

fn cluster_ip(kubectl: &LabKubectl, service: &str) -> String {
    let svc = kubectl
        .get_json("service", service)
        .unwrap_or_else(|e| panic!("service {service}: {e}"));
    str_of(&svc["spec"]["clusterIP"], "clusterIP").to_string()
}

/// The number of ready endpoints the service's EndpointSlices list.
fn ready_endpoints(kubectl: &LabKubectl, service: &str) -> Result<usize, String> {
    let out = kubectl.run(&[
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={service}"),
        "-o",
        "json",
    ]);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] != false)
        .count())
}

/// `count` GETs of `url` from `netns`, repeated until a round has no
/// error (the dataplane may lag the API a little); that round's answer.
fn clean_round(lab: &Lab, what: &str, netns: &str, url: &str, count: u32) -> Value {
    lab.wait_for(what, PROGRAMMING_LIMIT, || {
        let r = client(
            netns,
            &json!({"do": "http", "url": url, "count": count}),
            Duration::from_secs(60),
        );
        if r["errors"] == json!([]) {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    })
}

/// The first word of each answer ("<pod> <client address>") counted.
fn answered_by(bodies: &Value) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for (body, count) in bodies.as_object().into_iter().flatten() {
        let pod = body.split_whitespace().next().unwrap_or_default();
        *by.entry(pod.to_string()).or_default() += count.as_u64().unwrap_or(0);
    }
    by
}

/// The article's service: a ClusterIP in the service CIDR whose
/// endpoints `kubectl describe` lists as in the article, 200 requests from
/// a pod spread over both pods, hairpin from a server pod to its own
/// service, connections refused at once when the deployment is scaled to
/// zero, and traffic back within a second of the pods being ready again.
#[test]
fn article_service_spreads_refuses_and_recovers() {
    let Some((lab, kubectl)) = lab_with_kubectl(40, 2) else {
        return;
    };
    kubectl.apply(DEPLOYMENT);
    kubectl.apply(SERVICE);
    let servers = ready_pods(&lab, &kubectl, "service_test_pod", 2);
    let ip = cluster_ip(&kubectl, "service-test");
    let parsed: std::net::Ipv4Addr = ip.parse().expect("an IPv4 ClusterIP");
    let service_cidr: ipnet::Ipv4Net = "10.3.240.0/20".parse().expect("the service CIDR");
    assert!(service_cidr.contains(&parsed), "ClusterIP {ip}");

    let describe = lab.wait_for("describe shows both endpoints", POD_LIMIT, || {
        let out = kubectl.ok(&["describe", "service", "service-test"]);
        if out
            .lines()
            .any(|l| l.starts_with("Endpoints:") && l.ends_with("10.0.1.2:8080,10.0.2.2:8080"))
        {
            Ok(out)
        } else {
            Err(out)
        }
    });
    assert!(
        describe
            .lines()
            .any(|l| l.starts_with("IP:") && l.ends_with(&format!(" {ip}"))),
        "{describe}"
    );

    // 200 requests from a pod on node 1 to the ClusterIP.
    let client_ns = sandbox_of(&lab, 2, &servers[0]);
    let url = format!("http://{ip}/");
    let result = client(
        &client_ns,
        &json!({"do": "http", "url": url, "count": 200}),
        Duration::from_secs(60),
    );
    assert_eq!(result["errors"], json!([]), "{result}");
    let mut by_pod = BTreeMap::new();
    for (body, count) in result["bodies"].as_object().expect("bodies") {
        by_pod.insert(body.clone(), count.as_u64().unwrap_or(0));
    }
    assert_eq!(by_pod.len(), 2, "answers: {by_pod:?}");
    for pod in &servers {
        let body = format!("<p>Hello from {}</p>", pod_name(pod));
        let n = by_pod.get(&body).copied().unwrap_or(0);
        assert!((70..=130).contains(&n), "{body}: {n} of 200 ({by_pod:?})");
    }

    // Hairpin: a server pod reaching its own service lands on itself too.
    let own = format!("<p>Hello from {}</p>", pod_name(&servers[0]));
    let result = client(
        &client_ns,
        &json!({"do": "http", "url": url, "count": 30}),
        Duration::from_secs(30),
    );
    assert_eq!(result["errors"], json!([]), "{result}");
    assert!(
        result["bodies"][&own].as_u64().unwrap_or(0) > 0,
        "30 requests from {} to its service never reached itself: {result}",
        pod_name(&servers[0])
    );

    // A long-lived client pod, since scaling to zero takes the servers.
    kubectl.apply(&for_lab(ECHO_CLIENT_ONLY, &lab));
    let client_ns = client_sandbox(&lab, &kubectl, 2);
    kubectl.ok(&["scale", "deployment", "service-test", "--replicas=0"]);
    lab.wait_for("no ready endpoints", POD_LIMIT, || {
        match ready_endpoints(&kubectl, "service-test")? {
            0 => Ok(()),
            n => Err(format!("{n} ready endpoints")),
        }
    });
    let refused = lab.wait_for("connections refused", PROGRAMMING_LIMIT, || {
        let r = client(
            &client_ns,
            &json!({"do": "connect", "host": ip, "port": 80}),
            Duration::from_secs(10),
        );
        if r["result"] == "refused" {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    });
    assert!(
        refused["ms"].as_f64().unwrap_or(f64::MAX) < 500.0,
        "a refusal must come at once, not after a timeout: {refused}"
    );
    // Not a silent black hole on another port of the IP either.
    let other = client(
        &client_ns,
        &json!({"do": "connect", "host": ip, "port": 81}),
        Duration::from_secs(10),
    );
    assert_eq!(other["result"], "refused", "an unused port: {other}");

    kubectl.ok(&["scale", "deployment", "service-test", "--replicas=2"]);
    ready_pods(&lab, &kubectl, "service_test_pod", 2);
    let back = client(
        &client_ns,
        &json!({"do": "until_http", "url": url, "limit": 5}),
        Duration::from_secs(20),
    );
    assert_eq!(back["ok"], true, "no traffic after scaling back: {back}");
    assert!(
        back["ms"].as_f64().unwrap_or(f64::MAX) < 1000.0,
        "traffic must flow within a second of the pods being Ready: {back}"
    );
}

/// Only the client pod of `echo.yaml`.
const ECHO_CLIENT_ONLY: &str = "apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 0
  nodeSelector:
    kubernetes.io/hostname: knit-node-1
  containers:
  - name: client
    image: python:3
    command: [\"sleep\", \"3600\"]
";

/// NodePorts from the lab's external host: every node's address answers
/// and any pod may answer (policy Cluster, the client's address
/// masqueraded); with `externalTrafficPolicy: Local` a node sends to its
/// own pod only and the pod sees the external client's own address. Then
/// readiness: a pod whose probe fails leaves the rotation on every node,
/// and clients on both nodes see no error once it has.
#[test]
fn node_ports_policies_and_readiness() {
    let Some((lab, kubectl)) = lab_with_kubectl(41, 2) else {
        return;
    };
    kubectl.apply(&for_lab(ECHO, &lab));
    let pods = ready_pods(&lab, &kubectl, "echo", 2);
    let svc = kubectl.get_json("service", "echo").expect("service echo");
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a nodePort");
    assert!((30000..=32767).contains(&node_port), "{svc}");
    let external = lab.status()["external"].clone();
    let external_ns = str_of(&external["netns"], "external netns").to_string();
    let external_ip = str_of(&external["ip"], "external ip").to_string();

    // Cluster: both nodes answer, from both pods between them, never with
    // the external address (masqueraded so replies come back this way).
    let mut seen = BTreeMap::new();
    for node in 1..=2u8 {
        let url = format!("http://{}:{node_port}/", lab.addr(node + 1));
        let r = clean_round(&lab, "the NodePort answers", &external_ns, &url, 20);
        for body in r["bodies"].as_object().expect("bodies").keys() {
            assert!(
                !body.ends_with(&format!(" {external_ip}")),
                "policy Cluster kept the client's address: {body}"
            );
        }
        for (pod, n) in answered_by(&r["bodies"]) {
            *seen.entry(pod).or_insert(0) += n;
        }
    }
    assert_eq!(seen.len(), 2, "answers through the NodePorts: {seen:?}");

    // Local: each node's own pod, and the client's own address.
    kubectl.ok(&[
        "patch",
        "service",
        "echo",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    for pod in &pods {
        let node = str_of(&pod["spec"]["nodeName"], "nodeName");
        let i = (1..=2).find(|&i| lab.node_name(i) == node).expect("a node");
        let url = format!("http://{}:{node_port}/", lab.addr(i as u8 + 1));
        let expected = format!("{} {external_ip}", pod_name(pod));
        lab.wait_for(
            "policy Local keeps the client's address",
            PROGRAMMING_LIMIT,
            || {
                let r = client(
                    &external_ns,
                    &json!({"do": "http", "url": url, "count": 10}),
                    Duration::from_secs(30),
                );
                if r["bodies"] == json!({ expected.clone(): 10 }) {
                    Ok(())
                } else {
                    Err(r.to_string())
                }
            },
        );
    }

    // Readiness: the pod on node 2 starts failing its probe.
    let node2 = lab.node_name(2);
    let failing = pods
        .iter()
        .find(|p| p["spec"]["nodeName"] == node2.as_str())
        .expect("a pod on node 2");
    let staying = pods
        .iter()
        .find(|p| p["spec"]["nodeName"] != node2.as_str())
        .expect("a pod on node 1");
    let failing_ns = sandbox_of(&lab, 2, failing);
    let pid = *lab
        .pids_in(&failing_ns)
        .iter()
        .next()
        .expect("a process in the failing pod");
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("the pod's directory");
    std::fs::write(cwd.join("not-ready"), "").expect("marking the pod not ready");
    lab.wait_for("the pod not Ready", POD_LIMIT, || {
        let pod = kubectl.get_json("pod", pod_name(failing))?;
        if condition_true(&pod, "Ready") {
            Err("still Ready".into())
        } else {
            Ok(())
        }
    });
    lab.wait_for("one ready endpoint", POD_LIMIT, || {
        match ready_endpoints(&kubectl, "echo")? {
            1 => Ok(()),
            n => Err(format!("{n} ready endpoints")),
        }
    });
    let ip = cluster_ip(&kubectl, "echo");
    let url = format!("http://{ip}/");
    for pod in [staying, failing] {
        let ns = sandbox_of(&lab, 2, pod);
        // Programming may lag the API a little: wait for the first clean
        // round, then a second round must be clean too.
        let only_staying = |r: &Value| {
            r["errors"] == json!([])
                && answered_by(&r["bodies"]).keys().collect::<Vec<_>>()
                    == vec![&pod_name(staying).to_string()]
        };
        lab.wait_for("the unready pod out of rotation", PROGRAMMING_LIMIT, || {
            let r = client(
                &ns,
                &json!({"do": "http", "url": url, "count": 20}),
                Duration::from_secs(30),
            );
            if only_staying(&r) {
                Ok(())
            } else {
                Err(r.to_string())
            }
        });
        let r = client(
            &ns,
            &json!({"do": "http", "url": url, "count": 50}),
            Duration::from_secs(30),
        );
        assert!(only_staying(&r), "from {}: {r}", pod_name(pod));
    }
}

/// Session affinity pins a client to one pod; a UDP flow whose endpoint
/// is deleted moves to a live one (its conntrack entry is cleared); a
/// client loop runs through a SIGKILLed and restarted agent without a
/// failed request and a connection opened before the kill still works
/// after the restart; a table deleted by hand is repaired by the agent.
#[test]
fn affinity_udp_and_agent_faults() {
    let Some((lab, kubectl)) = lab_with_kubectl(42, 2) else {
        return;
    };
    kubectl.apply(&for_lab(ECHO, &lab));
    let pods = ready_pods(&lab, &kubectl, "echo", 2);
    let client_ns = client_sandbox(&lab, &kubectl, 2);

    // Affinity: every request from the client lands on the same pod.
    let sticky = format!("http://{}/", cluster_ip(&kubectl, "echo-sticky"));
    let r = clean_round(&lab, "the sticky service answers", &client_ns, &sticky, 30);
    let by = answered_by(&r["bodies"]);
    assert_eq!(by.len(), 1, "ClientIP affinity spread the client: {by:?}");

    // UDP: one socket keeps sending; the pod answering it is deleted.
    let udp_ip = cluster_ip(&kubectl, "echo-udp");
    let first = client(
        &client_ns,
        &json!({"do": "udp", "host": udp_ip, "port": 53, "seconds": 1, "every": 0.2}),
        Duration::from_secs(10),
    );
    let answering = first["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o[1] == "ok")
        .map(|o| o[2].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("the UDP service did not answer: {first}"));
    assert!(
        pods.iter().any(|p| pod_name(p) == answering),
        "{answering} is not an echo pod"
    );
    let udp_loop = client_in_background(
        &client_ns,
        &json!({"do": "udp", "host": udp_ip, "port": 53, "seconds": 12, "every": 0.2}),
    );
    std::thread::sleep(Duration::from_millis(1000));
    kubectl.ok(&["delete", "pod", &answering, "--wait=false"]);
    let r = finish(udp_loop, Duration::from_secs(30));
    let outcomes = r["outcomes"].as_array().expect("outcomes").clone();
    let last = outcomes.last().expect("some outcomes");
    assert_eq!(last[1], "ok", "the UDP flow did not recover: {r}");
    assert_ne!(
        last[2].as_str(),
        Some(answering.as_str()),
        "still answered by the deleted pod: {r}"
    );

    // An agent SIGKILLed and restarted under a client loop: no request
    // fails (the table stays in the kernel and the new agent's first sync
    // replaces it in one transaction).
    let url = format!("http://{}/", cluster_ip(&kubectl, "echo"));
    ready_pods(&lab, &kubectl, "echo", 2);
    clean_round(&lab, "the service answers", &client_ns, &url, 5);
    let running = client_in_background(
        &client_ns,
        &json!({"do": "loop", "url": url, "seconds": 6, "every": 0.05}),
    );
    let echo_ip = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let held = client_in_background(
        &client_ns,
        &json!({"do": "hold", "host": echo_ip, "port": 80, "seconds": 5}),
    );
    std::thread::sleep(Duration::from_millis(500));
    let args = lab.kill_agent(1);
    std::thread::sleep(Duration::from_millis(1000));
    lab.start_agent(1, &args);
    let r = finish(running, Duration::from_secs(30));
    let failed: Vec<&Value> = r["outcomes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o[1] != "ok")
        .collect();
    assert!(
        failed.is_empty(),
        "requests failed across the agent restart: {failed:?}"
    );
    // A connection established before the kill still carries a request
    // after the restart (its conntrack entry and DNAT outlive the agent).
    let r = finish(held, Duration::from_secs(30));
    assert!(
        r["status"].as_str().is_some_and(|s| s.ends_with("200 OK")),
        "the connection held across the restart: {r}"
    );

    // The table deleted by hand: the agent puts it back.
    let node1 = lab.node_netns(1);
    let out = run_within(
        Command::new("ip").args([
            "netns", "exec", &node1, "nft", "delete", "table", "ip", "knit",
        ]),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "nft delete table: {}",
        text(&out.stderr)
    );
    let back = client(
        &client_ns,
        &json!({"do": "until_http", "url": url, "limit": 20}),
        Duration::from_secs(40),
    );
    assert_eq!(back["ok"], true, "the table was not repaired: {back}");
    let r = client(
        &client_ns,
        &json!({"do": "http", "url": url, "count": 20}),
        Duration::from_secs(30),
    );
    assert_eq!(r["errors"], json!([]), "after the repair: {r}");
}
