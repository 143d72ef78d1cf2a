//! The agent's service dataplane for real, as root: an in-process API
//! server, one agent running in-process for a node namespace this test
//! makes, Services and EndpointSlices written by the test (no controllers
//! run here). The agent must program `ip knit` in the node namespace:
//! a ClusterIP reaches its endpoint, refuses when it has none, the
//! cluster DNS ClusterIP stays out of the maps, a Local-policy service's
//! healthCheckNodePort answers with its local endpoint count, and
//! `/metrics` shows the syncs and the network programming latency.
//!
//! Without root the test prints `SKIP: needs root` and passes, unless
//! `CI=true`.

mod common;

use common::{cmd, eventually, have_root, ip, tag};

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use knit_apiserver::store::sqlite::{History, SqliteStore};
use knit_apiserver::{ApiConfig, AppState, namespaces, router};
use knit_node_agent::agent::{self, AgentConfig};
use knit_node_agent::containers::{
    Containers, PodContainers, RuntimeError, RuntimeEvent, SandboxRef,
};
use knit_node_agent::netns::{self, LinuxNetns, Netns};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 7, 3);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 241, 152);

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

/// A runtime with no pods: this test is about services.
struct NoPods {
    changes: tokio::sync::watch::Sender<u64>,
}

impl Containers for NoPods {
    async fn sync(&self, _pod: &Pod, _sandbox: &SandboxRef) -> Result<(), RuntimeError> {
        Ok(())
    }
    fn status(&self, _pod_uid: &str) -> Option<PodContainers> {
        None
    }
    fn take_events(&self, _pod_uid: &str) -> Vec<RuntimeEvent> {
        Vec::new()
    }
    async fn kill(&self, _pod_uid: &str, _grace: Duration) -> Result<(), RuntimeError> {
        Ok(())
    }
    fn pods(&self) -> Vec<String> {
        Vec::new()
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
    fn log_file(&self, _ns: &str, _pod: &str, _c: &str, _previous: bool) -> Option<PathBuf> {
        None
    }
}

fn ns_file(ns: &str) -> PathBuf {
    Path::new(netns::RUN_DIR).join(ns)
}

/// One connection from namespace `ns` to `to`: the reply, or the error.
fn fetch(ns: &str, to: SocketAddr, request: &'static str) -> Result<Result<String, ErrorKind>> {
    Ok(netns::run_in(&ns_file(ns), move || {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_millis(500)).map_err(|e| e.kind())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.kind())?;
        s.write_all(request.as_bytes()).map_err(|e| e.kind())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| e.kind())?;
        Ok(reply)
    })?)
}

/// A TCP server in the node namespace answering every connection with
/// `hello`, until the flag drops.
fn serve(ns: &str, port: u16, stop: Arc<AtomicBool>) -> Result<()> {
    let listener = netns::run_in(&ns_file(ns), move || TcpListener::bind((NODE_IP, port)))??;
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.write_all(b"hello");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Ok(())
}

fn slice(name: &str, service: &str, ready: bool, node: &str) -> Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
            "annotations": {
                "endpoints.kubernetes.io/last-change-trigger-time": Timestamp::now().to_string(),
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_IP.to_string()], "nodeName": node,
                       "conditions": {"ready": ready}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))?)
}

async fn put_slice(client: &Client, slice: EndpointSlice) -> Result<()> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let name = slice.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(serde_json::to_value(&slice)?),
    )
    .await?;
    Ok(())
}

fn nft(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, "nft"];
    all.extend_from_slice(args);
    cmd("ip", &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_programs_services_into_the_node_namespace() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let t = tag("kas");
    let _cleanup = Cleanup { tag: t.clone() };
    let node_ns = format!("{t}-n1");
    ensure!(LinuxNetns::new().create(&node_ns)?, "{node_ns} existed");
    ip(&[
        "-n", &node_ns, "link", "add", "up0", "type", "veth", "peer", "name", "up0p",
    ])?;
    ip(&["-n", &node_ns, "link", "set", "up0p", "up"])?;
    ip(&[
        "-n",
        &node_ns,
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        "up0",
    ])?;
    ip(&["-n", &node_ns, "link", "set", "up0", "up"])?;
    ip(&["-n", &node_ns, "link", "set", "lo", "up"])?;
    // A route for the ClusterIP (any will do: DNAT happens on the way).
    ip(&["-n", &node_ns, "route", "add", "default", "dev", "up0"])?;

    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("knit.db"), History::default()).await?;
    let (state, _stop) = AppState::new(Arc::new(store), ApiConfig::default())?;
    namespaces::bootstrap(&state).await?;
    namespaces::spawn_tasks(&state);
    let client = Client::new(router(state), "default");

    let mut config = AgentConfig::new("node-1", NODE_IP);
    config.node_netns = Some(ns_file(&node_ns));
    config.state_dir = dir.path().join("state");
    config.sandbox_prefix = format!("{t}-");
    config.lease_renew = Duration::from_millis(500);
    config.host_resolv_conf = dir.path().join("no-resolv.conf");
    let runtime = Arc::new(NoPods {
        changes: tokio::sync::watch::channel(0).0,
    });
    let agent_task = {
        let (client, config) = (client.clone(), config.clone());
        tokio::spawn(async move {
            if let Err(err) = agent::run(client, config, runtime).await {
                panic!("agent stopped: {err}");
            }
        })
    };
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("the node to register", 10, || {
        let nodes = nodes.clone();
        async move { nodes.get_opt("node-1").await.ok().flatten() }
    })
    .await?;
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podCIDR": "10.0.1.0/24"}})),
        )
        .await?;

    // The endpoint: a server on the node's own address (a host-network
    // endpoint), so that no pod is needed.
    let stop = Arc::new(AtomicBool::new(false));
    serve(&node_ns, 8080, stop.clone())?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "service-test"},
        "spec": {"clusterIP": CLUSTER_IP.to_string(),
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))?;
    services.create(&PostParams::default(), &svc).await?;
    put_slice(
        &client,
        slice("service-test-1", "service-test", true, "node-1")?,
    )
    .await?;

    let to = SocketAddr::from((CLUSTER_IP, 80));
    eventually("the ClusterIP to answer", 15, || {
        let ns = node_ns.clone();
        async move { matches!(fetch(&ns, to, ""), Ok(Ok(ref r)) if r == "hello").then_some(()) }
    })
    .await?;

    // Not ready: refused at once, not a timeout.
    put_slice(
        &client,
        slice("service-test-1", "service-test", false, "node-1")?,
    )
    .await?;
    eventually("the ClusterIP to refuse", 5, || {
        let ns = node_ns.clone();
        async move {
            matches!(fetch(&ns, to, ""), Ok(Err(ErrorKind::ConnectionRefused))).then_some(())
        }
    })
    .await?;

    // The cluster DNS ClusterIP is the node's own business: not in the
    // maps, and not tracked.
    let kube_dns: Service = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "spec": {"clusterIP": "10.3.240.10",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))?;
    match Api::<Service>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &kube_dns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(err) => return Err(err.into()),
    }

    // A Local-policy LoadBalancer, which gets a health check port.
    let local: Service = serde_json::from_value(json!({
        "metadata": {"name": "local"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))?;
    let local = services.create(&PostParams::default(), &local).await?;
    let spec = local.spec.clone().unwrap_or_default();
    let Some(hc_port) = spec.health_check_node_port else {
        bail!("the API server allocated no healthCheckNodePort: {spec:?}");
    };
    let hc = SocketAddr::from((NODE_IP, u16::try_from(hc_port)?));
    let request = "GET /healthz HTTP/1.0\r\n\r\n";
    let unavailable = eventually("the health check to say 503", 15, || {
        let ns = node_ns.clone();
        async move {
            match fetch(&ns, hc, request) {
                Ok(Ok(r)) if r.starts_with("HTTP/1.0 503") || r.starts_with("HTTP/1.1 503") => {
                    Some(r)
                }
                _ => None,
            }
        }
    })
    .await?;
    ensure!(
        unavailable.contains("\"localEndpoints\":0"),
        "{unavailable}"
    );
    put_slice(&client, slice("local-1", "local", true, "node-1")?).await?;
    let ok = eventually("the health check to say 200", 10, || {
        let ns = node_ns.clone();
        async move {
            match fetch(&ns, hc, request) {
                Ok(Ok(r)) if r.contains(" 200 ") => Some(r),
                _ => None,
            }
        }
    })
    .await?;
    ensure!(ok.contains("\"localEndpoints\":1"), "{ok}");
    ensure!(ok.contains("\"name\":\"local\""), "{ok}");

    let dispatch = nft(&node_ns, &["list", "map", "ip", "knit", "service-ips"])?;
    ensure!(!dispatch.contains("10.3.240.10"), "{dispatch}");
    let raw = nft(&node_ns, &["list", "chain", "ip", "knit", "raw-prerouting"])?;
    ensure!(
        raw.contains("ip daddr 10.3.240.10 udp dport 53 notrack"),
        "{raw}"
    );

    // The metrics: one full sync, partial ones, programming latencies.
    let metrics = SocketAddr::from((NODE_IP, config.port));
    let text = eventually("the metrics", 10, || {
        let ns = node_ns.clone();
        async move {
            match fetch(&ns, metrics, "GET /metrics HTTP/1.0\r\n\r\n") {
                Ok(Ok(r)) if r.contains("kubeproxy_network_programming_duration_seconds_count") => {
                    Some(r)
                }
                _ => None,
            }
        }
    })
    .await?;
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    ensure!(
        value("kubeproxy_sync_full_proxy_rules_duration_seconds_count ") >= 1.0,
        "{text}"
    );
    ensure!(
        value("kubeproxy_sync_partial_proxy_rules_duration_seconds_count ") >= 2.0,
        "{text}"
    );
    ensure!(
        value("kubeproxy_network_programming_duration_seconds_count ") >= 2.0,
        "{text}"
    );
    ensure!(
        value("kubeproxy_sync_proxy_rules_last_timestamp_seconds ") > 0.0,
        "{text}"
    );

    stop.store(true, Ordering::Relaxed);
    agent_task.abort();
    Ok(())
}
