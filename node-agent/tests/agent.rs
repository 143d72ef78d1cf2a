//! The agent's loop for real, as root: an in-process API server, the agent
//! running in-process inside node namespaces this test makes, and a
//! recording runtime. A bound pod gets a sandbox and an address from the
//! node's CIDR, status from the runtime, keeps its address across an
//! agent restart, and leaves nothing when deleted; two nodes reach each
//! other's pods through host-gw routes.
//!
//! Every name starts with a short tag unique to the test, and a guard
//! removes every namespace with that tag (the pods' too) even when the
//! test fails. Without root the tests print `SKIP: needs root` and pass,
//! unless `CI=true`.

mod common;

use common::{eventually, have_root, ip, tag};

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Node, Pod};
use knit_apiserver::store::sqlite::{History, SqliteStore};
use knit_apiserver::{ApiConfig, AppState, namespaces, router};
use knit_node_agent::agent::{self, AgentConfig};
use knit_node_agent::containers::{
    Containers, PodContainers, RuntimeError, RuntimeEvent, SandboxRef,
};
use knit_node_agent::netns::{self, LinuxNetns, Netns};
use knit_node_agent::sandbox::SandboxNames;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// Removes every namespace whose name starts with the tag.
struct Cleanup {
    tag: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let netns = LinuxNetns::new();
        for name in netns.list().unwrap_or_default() {
            if name.starts_with(&self.tag)
                && let Err(err) = netns.delete(&name)
            {
                eprintln!("cleanup of netns {name}: {err}");
            }
        }
    }
}

fn ping(ns: &str, to: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W1", to])
        .output()
        .context("run ping")?;
    ensure!(
        out.status.success(),
        "ping {to} from {ns}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// An API server in-process on a temporary SQLite file.
struct Cluster {
    client: Client,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn api_server() -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("knit.db"), History::default()).await?;
    let (state, stop) = AppState::new(Arc::new(store), ApiConfig::default())?;
    namespaces::bootstrap(&state).await?;
    namespaces::spawn_tasks(&state);
    Ok(Cluster {
        client: Client::new(router(state), "default"),
        _stop: stop,
        _dir: dir,
    })
}

/// A runtime that records what the agent asks and reports what the test
/// tells it.
#[derive(Default)]
struct FakeRuntime {
    state: Mutex<FakeState>,
    changes: tokio::sync::watch::Sender<u64>,
    logs: PathBuf,
}

#[derive(Default)]
struct FakeState {
    synced: HashMap<String, SandboxRef>,
    syncs: usize,
    pods: HashMap<String, PodContainers>,
    killed: Vec<String>,
    events: HashMap<String, Vec<RuntimeEvent>>,
}

impl FakeRuntime {
    fn new(logs: PathBuf) -> Self {
        FakeRuntime {
            logs,
            ..Self::default()
        }
    }

    fn sandbox(&self, uid: &str) -> Option<SandboxRef> {
        self.state.lock().unwrap().synced.get(uid).cloned()
    }

    fn killed(&self) -> Vec<String> {
        self.state.lock().unwrap().killed.clone()
    }

    /// Queues an event about the pod, as a failing probe would.
    fn report(&self, uid: &str, event: RuntimeEvent) {
        let mut state = self.state.lock().unwrap();
        state.events.entry(uid.into()).or_default().push(event);
        drop(state);
        self.changes.send_modify(|n| *n += 1);
    }

    fn set_ready(&self, uid: &str, ready: bool) {
        let mut state = self.state.lock().unwrap();
        let pod = state.pods.get_mut(uid).expect("a synced pod");
        pod.ready = ready;
        for s in &mut pod.statuses {
            s.ready = ready;
        }
        drop(state);
        self.changes.send_modify(|n| *n += 1);
    }
}

impl Containers for FakeRuntime {
    async fn sync(&self, pod: &Pod, sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut state = self.state.lock().unwrap();
        state.syncs += 1;
        state.synced.insert(uid.clone(), sandbox.clone());
        let fresh = !state.pods.contains_key(&uid);
        state.pods.entry(uid).or_insert_with(|| PodContainers {
            statuses: pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    started: Some(true),
                    ..ContainerStatus::default()
                })
                .collect(),
            phase: "Running".into(),
            ready: false,
        });
        drop(state);
        if fresh {
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    fn status(&self, pod_uid: &str) -> Option<PodContainers> {
        self.state.lock().unwrap().pods.get(pod_uid).cloned()
    }

    fn take_events(&self, pod_uid: &str) -> Vec<RuntimeEvent> {
        let mut state = self.state.lock().unwrap();
        state.events.remove(pod_uid).unwrap_or_default()
    }

    async fn kill(&self, pod_uid: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().unwrap();
        state.killed.push(pod_uid.to_string());
        state.pods.remove(pod_uid);
        state.synced.remove(pod_uid);
        Ok(())
    }

    fn pods(&self) -> Vec<String> {
        self.state.lock().unwrap().pods.keys().cloned().collect()
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn log_file(&self, _ns: &str, pod: &str, container: &str, previous: bool) -> Option<PathBuf> {
        let path = self.logs.join(format!("{pod}-{container}.log"));
        (!previous && path.exists()).then_some(path)
    }
}

/// A node namespace `ns` whose uplink `up0` holds `ip`/24: a veth whose
/// peer stays inside (the `dummy` module may be missing), or one to bridge
/// `br0` in `switch`.
fn node_namespace(ns: &str, ip: &str, switch: Option<&str>) -> Result<()> {
    ensure!(LinuxNetns::new().create(ns)?, "{ns} existed");
    match switch {
        None => {
            ip_(&[
                "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "up0p",
            ])?;
            ip_(&["-n", ns, "link", "set", "up0p", "up"])?;
        }
        Some(sw) => {
            let port = format!("{ns}p");
            ip_(&[
                "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", &port, "netns", sw,
            ])?;
            ip_(&["-n", sw, "link", "set", &port, "master", "br0", "up"])?;
        }
    }
    ip_(&["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "up0"])?;
    ip_(&["-n", ns, "link", "set", "up0", "up"])?;
    ip_(&["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

fn ip_(args: &[&str]) -> Result<()> {
    ip(args).map(|_| ())
}

fn config(prefix: &str, node: &str, node_ip: &str, ns: &str, state: &Path) -> AgentConfig {
    let mut config = AgentConfig::new(node, node_ip.parse().unwrap());
    config.node_netns = Some(Path::new(netns::RUN_DIR).join(ns));
    config.state_dir = state.to_path_buf();
    config.sandbox_prefix = prefix.to_string();
    config.lease_renew = Duration::from_millis(500);
    config.host_resolv_conf = state.join("no-resolv.conf");
    config
}

fn start(
    client: &Client,
    config: AgentConfig,
    rt: &Arc<FakeRuntime>,
) -> tokio::task::JoinHandle<()> {
    let (client, rt) = (client.clone(), rt.clone());
    tokio::spawn(async move {
        if let Err(err) = agent::run(client, config, rt).await {
            panic!("agent stopped: {err}");
        }
    })
}

/// Gives node `name` its pod CIDR, as the node IPAM controller would,
/// once the agent has registered it.
async fn assign_cidr(client: &Client, name: &str, cidr: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("the node to register", 10, || {
        let nodes = nodes.clone();
        async move { nodes.get_opt(name).await.ok().flatten() }
    })
    .await?;
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podCIDR": cidr}})),
        )
        .await?;
    Ok(())
}

fn condition(node: &Node, kind: &str) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn make_pod(client: &Client, name: &str, node: &str) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }))?;
    Ok(pods.create(&PostParams::default(), &pod).await?)
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap()
}

/// Waits for the runtime to be handed pod `uid`'s sandbox.
async fn synced(rt: &Arc<FakeRuntime>, uid: &str) -> Result<SandboxRef> {
    eventually("the runtime to get the pod", 15, || async {
        rt.sandbox(uid)
    })
    .await
}

/// The index of the pod's `eth0`, to see that a restart rebuilt nothing.
fn eth0_index(ns: &str) -> Result<String> {
    let out = ip(&["-n", ns, "-o", "link", "show", "eth0"])?;
    Ok(out.split(':').next().unwrap_or_default().to_string())
}

/// A raw HTTP GET from inside the node's namespace.
fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Result<String> {
    let file = Path::new(netns::RUN_DIR).join(ns);
    let path = path.to_string();
    netns::run_in(&file, move || -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    })?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_gets_a_sandbox_and_status_keeps_its_ip_across_restarts_and_leaves_nothing()
-> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let t = tag("ka");
    let _cleanup = Cleanup { tag: t.clone() };
    let node_ns = format!("{t}n");
    node_namespace(&node_ns, "10.100.9.2", None)?;
    let cluster = api_server().await?;
    let client = cluster.client.clone();
    let state = tempfile::tempdir()?;
    let rt = Arc::new(FakeRuntime::new(state.path().to_path_buf()));
    let node_name = format!("{t}-node");
    let cfg = config(
        &format!("{t}-"),
        &node_name,
        "10.100.9.2",
        &node_ns,
        state.path(),
    );
    let agent = start(&client, cfg.clone(), &rt);

    // Registration: the Node with its address, endpoint and NotReady until
    // the network is up; the Lease.
    let nodes: Api<Node> = Api::all(client.clone());
    assign_cidr(&client, &node_name, "10.0.1.0/24").await?;
    let node = eventually("the node to be Ready", 15, || {
        let nodes = nodes.clone();
        let name = node_name.clone();
        async move {
            let node = nodes.get_opt(&name).await.ok().flatten()?;
            (condition(&node, "Ready")? == ("True".into(), "KubeletReady".into())).then_some(node)
        }
    })
    .await?;
    let status = node.status.clone().unwrap();
    let addrs = status.addresses.unwrap();
    assert!(
        addrs
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "10.100.9.2")
    );
    assert_eq!(
        status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port,
        10250
    );
    assert!(status.capacity.unwrap().contains_key("pods"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = leases.get(&node_name).await?;
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(node_name.as_str())
    );
    let bridge = ip(&["-n", &node_ns, "-o", "-4", "addr", "show", "dev", "cbr0"])?;
    assert!(bridge.contains("inet 10.0.1.1/24"), "{bridge}");

    // A pod: a sandbox at 10.0.1.2, handed to the runtime with its files.
    let p1 = make_pod(&client, "p1", &node_name).await?;
    let sb = synced(&rt, &uid(&p1)).await?;
    assert_eq!(sb.pod_ip, IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2)));
    let sandbox_ns = format!("{t}-{}", uid(&p1));
    assert_eq!(
        sb.netns_path,
        Some(Path::new(netns::RUN_DIR).join(&sandbox_ns))
    );
    assert!(
        sb.resolv_conf
            .starts_with("nameserver 10.3.240.10\nsearch default.svc.cluster.local "),
        "{}",
        sb.resolv_conf
    );
    assert!(sb.hosts.contains("10.0.1.2\tp1\n"), "{}", sb.hosts);
    let addr = ip(&["-n", &sandbox_ns, "-o", "-4", "addr", "show", "dev", "eth0"])?;
    assert!(addr.contains("inet 10.0.1.2/24"), "{addr}");
    ping(&sandbox_ns, "10.0.1.1")?;

    // Status: the address, then Ready when the runtime says so.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ready_of = |p: &Pod| {
        p.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
    };
    let p = eventually("status with the pod IP", 10, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("p1").await.ok()?;
            (p.status.as_ref()?.pod_ip.as_deref() == Some("10.0.1.2")).then_some(p)
        }
    })
    .await?;
    let s = p.status.clone().unwrap();
    assert_eq!(s.host_ip.as_deref(), Some("10.100.9.2"));
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.pod_ips.unwrap()[0].ip, "10.0.1.2");
    assert_eq!(ready_of(&p).as_deref(), Some("False"));
    rt.set_ready(&uid(&p1), true);
    eventually("Ready=True", 10, || {
        let pods = pods.clone();
        async move { (ready_of(&pods.get("p1").await.ok()?).as_deref() == Some("True")).then_some(()) }
    })
    .await?;

    // What the runtime reports becomes an Event of the pod, as the
    // kubelet's; a repeat is counted on the same Event.
    let unhealthy = RuntimeEvent {
        container: "c".into(),
        type_: "Warning",
        reason: "Unhealthy",
        message: "Readiness probe failed: HTTP probe failed with statuscode: 503".into(),
        at: k8s_openapi::jiff::Timestamp::now(),
    };
    rt.report(&uid(&p1), unhealthy.clone());
    rt.report(&uid(&p1), unhealthy);
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let event = eventually("an Unhealthy event counted twice", 10, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("Unhealthy") && e.count == Some(2))
        }
    })
    .await?;
    assert_eq!(event.involved_object.name.as_deref(), Some("p1"));
    assert_eq!(
        event.involved_object.field_path.as_deref(),
        Some("spec.containers{c}")
    );

    // The log endpoint in the node's namespace.
    std::fs::write(
        state.path().join("p1-c.log"),
        "2026-02-01T00:00:00Z stdout F first\n2026-02-01T00:00:01Z stdout F Hello from p1\n",
    )?;
    let endpoint = SocketAddr::from(([10, 100, 9, 2], 10250));
    let health = http_get(&node_ns, endpoint, "/healthz")?;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
        "{health}"
    );
    let logs = http_get(
        &node_ns,
        endpoint,
        "/containerLogs/default/p1/c?tailLines=1",
    )?;
    assert!(
        logs.starts_with("HTTP/1.1 200") && logs.ends_with("\r\n\r\nHello from p1\n"),
        "{logs}"
    );
    let missing = http_get(&node_ns, endpoint, "/containerLogs/default/p1/nope")?;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // A second pod, then the agent dies; p2 is deleted while it is down.
    let p2 = make_pod(&client, "p2", &node_name).await?;
    assert_eq!(synced(&rt, &uid(&p2)).await?.pod_ip.to_string(), "10.0.1.3");
    let p2_ns = format!("{t}-{}", uid(&p2));
    let p2_veth = SandboxNames::new(&format!("{t}-"), &uid(&p2))?.host_veth;
    let before = eth0_index(&sandbox_ns)?;
    agent.abort();
    let _ = agent.await;
    pods.delete("p2", &DeleteParams::default()).await?;

    // The restarted agent keeps p1 as it was and removes what p2 left.
    let syncs = rt.state.lock().unwrap().syncs;
    let agent = start(&client, cfg.clone(), &rt);
    eventually("p1 synced again", 15, || async {
        (rt.state.lock().unwrap().syncs > syncs).then_some(())
    })
    .await?;
    assert_eq!(
        rt.sandbox(&uid(&p1)).unwrap().pod_ip.to_string(),
        "10.0.1.2"
    );
    eventually("p2's sandbox removed", 15, || async {
        (!LinuxNetns::new().exists(&p2_ns).ok()?).then_some(())
    })
    .await?;
    assert!(rt.killed().contains(&uid(&p2)));
    assert_eq!(
        eth0_index(&sandbox_ns)?,
        before,
        "p1's sandbox was not rebuilt"
    );
    assert!(!ip(&["-n", &node_ns, "-o", "link", "show"])?.contains(&p2_veth));
    ping(&sandbox_ns, "10.0.1.1")?;
    // p2's address is free again.
    let p3 = make_pod(&client, "p3", &node_name).await?;
    assert_eq!(synced(&rt, &uid(&p3)).await?.pod_ip.to_string(), "10.0.1.3");

    // Deleting p1 removes its namespace, veth and address.
    let p1_veth = SandboxNames::new(&format!("{t}-"), &uid(&p1))?.host_veth;
    pods.delete("p1", &DeleteParams::default()).await?;
    eventually("p1's sandbox removed", 15, || async {
        (!LinuxNetns::new().exists(&sandbox_ns).ok()?).then_some(())
    })
    .await?;
    assert!(rt.killed().contains(&uid(&p1)));
    eventually("p1's veth and IP gone", 5, || async {
        let links = ip(&["-n", &node_ns, "-o", "link", "show"]).ok()?;
        let ip_file = state.path().join("pod-ips").join(uid(&p1));
        (!links.contains(&p1_veth) && !ip_file.exists()).then_some(())
    })
    .await?;
    let p4 = make_pod(&client, "p4", &node_name).await?;
    assert_eq!(synced(&rt, &uid(&p4)).await?.pod_ip.to_string(), "10.0.1.2");

    // A pod the API keeps while terminating (a finalizer holds it): the
    // agent stops it and removes its sandbox on the deletionTimestamp.
    let p4_ns = format!("{t}-{}", uid(&p4));
    pods.patch(
        "p4",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
    )
    .await?;
    pods.delete("p4", &DeleteParams::default()).await?;
    assert!(pods.get("p4").await?.metadata.deletion_timestamp.is_some());
    eventually("p4's sandbox removed while terminating", 15, || async {
        (!LinuxNetns::new().exists(&p4_ns).ok()?).then_some(())
    })
    .await?;
    assert!(rt.killed().contains(&uid(&p4)));
    pods.patch(
        "p4",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    eventually("p4 gone from the API", 10, || {
        let pods = pods.clone();
        async move { pods.get_opt("p4").await.ok()?.is_none().then_some(()) }
    })
    .await?;
    agent.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_two_nodes_reach_each_other_through_host_gw_routes() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let t = tag("ka");
    let _cleanup = Cleanup { tag: t.clone() };
    let switch = format!("{t}s");
    ensure!(LinuxNetns::new().create(&switch)?);
    ip_(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
    ip_(&["-n", &switch, "link", "set", "br0", "up"])?;
    let (ns_a, ns_b) = (format!("{t}a"), format!("{t}b"));
    node_namespace(&ns_a, "10.100.9.2", Some(&switch))?;
    node_namespace(&ns_b, "10.100.9.3", Some(&switch))?;
    ping(&ns_a, "10.100.9.3")?;

    let cluster = api_server().await?;
    let client = cluster.client.clone();
    let (state_a, state_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let rt_a = Arc::new(FakeRuntime::new(state_a.path().to_path_buf()));
    let rt_b = Arc::new(FakeRuntime::new(state_b.path().to_path_buf()));
    // Two nodes on one host: each its own sandbox prefix, or each would
    // take the other's sandboxes for its own stale ones.
    let (a, b) = (format!("{t}-a"), format!("{t}-b"));
    let (prefix_a, prefix_b) = (format!("{t}a-"), format!("{t}b-"));
    let agent_a = start(
        &client,
        config(&prefix_a, &a, "10.100.9.2", &ns_a, state_a.path()),
        &rt_a,
    );
    let agent_b = start(
        &client,
        config(&prefix_b, &b, "10.100.9.3", &ns_b, state_b.path()),
        &rt_b,
    );
    assign_cidr(&client, &a, "10.0.1.0/24").await?;
    assign_cidr(&client, &b, "10.0.2.0/24").await?;

    let pa = make_pod(&client, "pa", &a).await?;
    let pb = make_pod(&client, "pb", &b).await?;
    assert_eq!(
        synced(&rt_a, &uid(&pa)).await?.pod_ip.to_string(),
        "10.0.1.2"
    );
    assert_eq!(
        synced(&rt_b, &uid(&pb)).await?.pod_ip.to_string(),
        "10.0.2.2"
    );
    let route = eventually("host-gw routes on both nodes", 15, || async {
        let ra = ip(&["-n", &ns_a, "route", "show", "10.0.2.0/24"]).ok()?;
        let rb = ip(&["-n", &ns_b, "route", "show", "10.0.1.0/24"]).ok()?;
        (ra.contains("via 10.100.9.3") && rb.contains("via 10.100.9.2")).then_some(ra)
    })
    .await?;
    assert!(route.contains("proto 107"), "{route}");
    let (pod_a_ns, pod_b_ns) = (
        format!("{prefix_a}{}", uid(&pa)),
        format!("{prefix_b}{}", uid(&pb)),
    );
    ping(&pod_a_ns, "10.0.2.2")?;
    ping(&pod_b_ns, "10.0.1.2")?;

    // A node that goes takes its route with it.
    let nodes: Api<Node> = Api::all(client.clone());
    agent_b.abort();
    let _ = agent_b.await;
    nodes.delete(&b, &DeleteParams::default()).await?;
    eventually("the route to the deleted node removed", 15, || async {
        ip(&["-n", &ns_a, "route", "show", "10.0.2.0/24"])
            .ok()?
            .trim()
            .is_empty()
            .then_some(())
    })
    .await?;
    agent_a.abort();
    Ok(())
}
