//! The agent's loop: what the kubelet does for the article's pod network.
//!
//! [`run`] registers the Node and keeps its Lease and status current,
//! waits for the node's `spec.podCIDR`, builds the node network (`cbr0`),
//! follows the other nodes for host-gw routes ([`crate::routes`]), runs
//! the service dataplane ([`services`]), serves container logs and
//! metrics ([`logs`]), and keeps the host in step with the pods
//! bound to the node: one worker per pod uid makes its sandbox, gives it
//! an IP ([`ips`]), hands it to the runtime ([`Containers`]) with its
//! `/etc/resolv.conf` and `/etc/hosts` ([`podfiles`]), and tears it all
//! down when the pod goes; one status writer turns what the runtime says
//! into pod status ([`status`]).
//!
//! Restarting is just another reconcile: the first full list of pods is
//! compared with the sandboxes on the host, the runtime's pods and the IP
//! book, and only what no longer has a pod is removed; the rest is
//! re-applied, which changes nothing on a host that already matches.

pub mod ips;
pub mod logs;
pub mod node;
pub mod podfiles;
pub mod services;
pub mod status;
pub mod tls;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::containers::{Containers, RuntimeError, RuntimeEvent, SandboxRef};
use crate::netlink::{LinuxNetlink, Netlink, ipv4_addresses};
use crate::netns::{self, LinuxNetns, Netns};
use crate::sandbox::{self, PlanError, SandboxNames};
use knit_controllers::events::{self, Note};

use ips::IpBook;
use podfiles::ClusterDns;

/// How the agent runs; parsed once from the command line.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// The node's address (its `InternalIP`), where the log endpoint
    /// listens.
    pub node_ip: Ipv4Addr,
    /// The log endpoint's port, published in the Node's daemonEndpoints.
    pub port: u16,
    /// Where the agent keeps its state (the pods' IPs).
    pub state_dir: PathBuf,
    /// The prefix of the pods' network namespace names.
    pub sandbox_prefix: String,
    /// The interface whose MTU the pod network takes; by default the one
    /// holding `node_ip`.
    pub uplink: Option<String>,
    /// The node's network namespace file when it is not the process's own
    /// (tests run several agents in one process); `None` for the
    /// process's namespace, which `knit agent --netns` enters at start.
    pub node_netns: Option<PathBuf>,
    /// The cluster DNS the pods' resolv.conf names.
    pub dns: ClusterDns,
    /// The host's resolv.conf, for `dnsPolicy: Default` pods.
    pub host_resolv_conf: PathBuf,
    /// The host's hosts file, for `hostNetwork` pods.
    pub host_hosts: PathBuf,
    /// How often the Lease is renewed.
    pub lease_renew: Duration,
    /// TLS for the log endpoint (the node's serving certificate, clients
    /// verified against the cluster CA); plain HTTP without.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The whole pod network (every node's podCIDR is inside it): pod
    /// traffic leaving it is masqueraded by the service dataplane.
    pub cluster_cidr: Ipv4Net,
}

impl AgentConfig {
    /// A configuration with the defaults for everything but the node.
    pub fn new(node_name: &str, node_ip: Ipv4Addr) -> Self {
        AgentConfig {
            node_name: node_name.to_string(),
            node_ip,
            port: 10250,
            state_dir: PathBuf::from("/var/lib/knit-agent").join(node_name),
            sandbox_prefix: "knit-".into(),
            uplink: None,
            node_netns: None,
            dns: ClusterDns::default(),
            host_resolv_conf: "/etc/resolv.conf".into(),
            host_hosts: "/etc/hosts".into(),
            lease_renew: Duration::from_secs(4),
            tls: None,
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 14).expect("a /14"),
        }
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The API server refused or could not be reached.
    #[error("API: {0}")]
    Api(#[from] kube::Error),
    /// The kernel refused.
    #[error("{0}")]
    Os(#[from] crate::Error),
    /// A plan could not be made.
    #[error("{0}")]
    Plan(#[from] PlanError),
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    /// A file of the agent's state.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Something else that stops a pod's setup.
    #[error("{0}")]
    Other(String),
}

type Result<T, E = AgentError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// The node network, once it is built.
#[derive(Clone, Copy, Debug)]
struct NodeNet {
    cidr: Ipv4Net,
    mtu: u32,
}

/// What every task of one agent shares.
struct Shared<C> {
    client: Client,
    config: AgentConfig,
    containers: Arc<C>,
    netns: LinuxNetns,
    node_nl: Arc<LinuxNetlink>,
    net: NodeNet,
    ips: Mutex<IpBook>,
    host_resolv: String,
    host_hosts: String,
    /// The pods bound to the node, by uid, as the watch last saw them.
    pods: Mutex<HashMap<String, Pod>>,
    /// The last seen version of pods that left the API, for their grace
    /// period and hostNetwork flag.
    gone: Mutex<HashMap<String, Pod>>,
    /// The address of every pod whose sandbox is up.
    ready: Mutex<HashMap<String, IpAddr>>,
    /// Wakes the status writer.
    status_kick: Notify,
    /// Sandbox setups in progress at once: see [`SANDBOX_SETUPS_AT_ONCE`].
    sandbox_setups: tokio::sync::Semaphore,
}

/// How many pod sandboxes are set up at the same time. A sandbox is a
/// dozen netlink round trips, each taking the kernel's rtnl lock; a few at
/// once overlap one's waits with another's work, but a hundred at once (a
/// burst of new pods) queue on that lock and on the node's one netlink
/// thread, and each then takes several times its lone cost. Measured with
/// `knit-pod-bench`: see e2e/README.md.
const SANDBOX_SETUPS_AT_ONCE: usize = 4;

/// Runs the agent until it fails for good; dropping the future stops every
/// task it started (and leaves the host as it is: pods keep running).
pub async fn run<C: Containers>(
    client: Client,
    config: AgentConfig,
    containers: Arc<C>,
) -> Result<()> {
    let mut tasks = JoinSet::new();
    let name = config.node_name.clone();

    let ns_file = config.node_netns.clone();
    let node_nl = Arc::new(
        tokio::task::spawn_blocking(move || match &ns_file {
            Some(file) => LinuxNetlink::open("node", file, PathBuf::from(netns::RUN_DIR)),
            None => LinuxNetlink::current(),
        })
        .await
        .map_err(|e| AgentError::Other(e.to_string()))??,
    );

    // The log endpoint, bound inside the node's namespace.
    let addr = SocketAddr::from((config.node_ip, config.port));
    let std_listener = match &config.node_netns {
        Some(file) => netns::run_in(file, move || std::net::TcpListener::bind(addr))?,
        None => std::net::TcpListener::bind(addr),
    }
    .map_err(io(format!("listening on {addr}")))?;
    std_listener.set_nonblocking(true).map_err(io("listener"))?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(io("listener"))?;
    let mut registry = prometheus_client::registry::Registry::default();
    let proxy_metrics = services::ProxyMetrics::register(&mut registry);
    let app = logs::router(containers.clone(), Arc::new(registry));
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    match config.tls.clone() {
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls).map_err(io("listener"))?;
            tasks.spawn(async move {
                if let Err(err) = axum::serve(listener, app).await {
                    tracing::error!(error = %err, "log endpoint stopped");
                }
            });
        }
        None => {
            tasks.spawn(async move {
                if let Err(err) = axum::serve(listener, app).await {
                    tracing::error!(error = %err, "log endpoint stopped");
                }
            });
        }
    }
    tracing::info!(node = %name, %addr, scheme, "serving /containerLogs and /healthz");
    // Cluster DNS for the node's pods, on the kube-dns address.
    tasks.spawn(crate::dns::run(
        client.clone(),
        config.clone(),
        node_nl.clone(),
    ));

    // Registration, Lease and node status.
    let node = retry("registering the node", || node::register(&client, &name)).await;
    let node_uid = node.metadata.uid.clone();
    tasks.spawn(node::keep_lease(
        client.clone(),
        name.clone(),
        node_uid,
        config.lease_renew,
    ));
    let (net_tx, net_rx) =
        tokio::sync::watch::channel(Err::<(), String>("waiting for the node's podCIDR".into()));
    tasks.spawn(keep_node_status(client.clone(), config.clone(), net_rx));

    // The node network, once the node IPAM controller gave us a CIDR.
    let cidr = wait_for_cidr(&client, &name).await;
    tracing::info!(node = %name, %cidr, "pod CIDR assigned");
    let net = loop {
        match build_node_network(&node_nl, &config, cidr).await {
            Ok(net) => break net,
            Err(err) => {
                tracing::warn!(node = %name, error = %err, "building the node network");
                let _ = net_tx.send(Err(format!("node network: {err}")));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let _ = net_tx.send(Ok(()));
    tasks.spawn(crate::routes::follow(
        client.clone(),
        name.clone(),
        node_nl.clone(),
        Duration::from_secs(30),
    ));
    // The service dataplane (ip knit), kube-proxy's job.
    tasks.spawn(services::run(
        client.clone(),
        config.clone(),
        cidr,
        proxy_metrics,
    ));

    let ips = IpBook::load(&config.state_dir.join("pod-ips"))
        .map_err(io(format!("state dir {}", config.state_dir.display())))?;
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let shared = Arc::new(Shared {
        host_resolv: read(&config.host_resolv_conf),
        host_hosts: read(&config.host_hosts),
        client,
        config,
        containers,
        netns: LinuxNetns::new(),
        node_nl,
        net,
        ips: Mutex::new(ips),
        pods: Mutex::new(HashMap::new()),
        gone: Mutex::new(HashMap::new()),
        ready: Mutex::new(HashMap::new()),
        status_kick: Notify::new(),
        sandbox_setups: tokio::sync::Semaphore::new(SANDBOX_SETUPS_AT_ONCE),
    });
    recover_ips(&shared).await;
    tasks.spawn(write_statuses(shared.clone()));
    follow_pods(shared).await;
    Ok(())
}

/// Calls `f` until it succeeds, once a second, logging failures.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    loop {
        match f().await {
            Ok(value) => return value,
            Err(err) => {
                tracing::warn!(error = %err, "{what}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Polls the Node until it has a pod CIDR.
async fn wait_for_cidr(client: &Client, name: &str) -> Ipv4Net {
    let api: Api<Node> = Api::all(client.clone());
    loop {
        match api.get_opt(name).await {
            Ok(Some(node)) => {
                if let Some(cidr) = crate::routes::pod_cidr(&node) {
                    return cidr;
                }
            }
            Ok(None) => {
                // Deleted under us: register again, as the kubelet does.
                let _ = node::register(client, name).await;
            }
            Err(err) => tracing::warn!(error = %err, "reading the node"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Builds `cbr0` for `cidr` at the uplink's MTU.
async fn build_node_network(
    nl: &Arc<LinuxNetlink>,
    config: &AgentConfig,
    cidr: Ipv4Net,
) -> Result<NodeNet> {
    let nl = nl.clone();
    let uplink = config.uplink.clone();
    let node_ip = config.node_ip;
    tokio::task::spawn_blocking(move || -> Result<NodeNet> {
        let mtu = uplink_mtu(&*nl, uplink.as_deref(), node_ip)?;
        let plan = sandbox::node_network(cidr, mtu)?;
        for change in sandbox::apply_node(&*nl, &plan)? {
            tracing::info!("node network: {change}");
        }
        Ok(NodeNet { cidr, mtu })
    })
    .await
    .map_err(|e| AgentError::Other(e.to_string()))?
}

/// The MTU of the named uplink, or of the link holding `node_ip`.
fn uplink_mtu(nl: &impl Netlink, uplink: Option<&str>, node_ip: Ipv4Addr) -> Result<u32> {
    if let Some(name) = uplink {
        return nl
            .link(name)?
            .map(|l| l.mtu)
            .ok_or_else(|| AgentError::Other(format!("uplink {name} does not exist")));
    }
    for link in nl.links()? {
        let addrs = nl.addresses(&link.name)?;
        if ipv4_addresses(&addrs).iter().any(|a| a.addr() == node_ip) {
            return Ok(link.mtu);
        }
    }
    Err(AgentError::Other(format!(
        "no interface holds the node IP {node_ip} (give --uplink)"
    )))
}

/// Keeps the Node's status current: written when it says something new
/// (network ready, a condition another controller changed back) and at
/// least every minute as a heartbeat.
async fn keep_node_status(
    client: Client,
    config: AgentConfig,
    mut net: tokio::sync::watch::Receiver<Result<(), String>>,
) {
    let api: Api<Node> = Api::all(client.clone());
    let host = node::HostFacts::read();
    let mut last_write: Option<Timestamp> = None;
    loop {
        let now = Timestamp::now();
        match api.get_opt(&config.node_name).await {
            Ok(Some(current)) => {
                let ready = net.borrow().clone();
                let new = node::node_status(
                    &config.node_name,
                    config.node_ip,
                    config.port,
                    &host,
                    ready,
                    current.status.as_ref(),
                    &Time(now),
                );
                let stale = last_write.is_none_or(|t| now.duration_since(t).as_secs() >= 60);
                if node::status_moved(current.status.as_ref(), &new) || stale {
                    match node::write_status(&client, &config.node_name, &new).await {
                        Ok(_) => last_write = Some(now),
                        Err(err) => tracing::warn!(error = %err, "writing node status"),
                    }
                }
            }
            Ok(None) => {
                if let Err(err) = node::register(&client, &config.node_name).await {
                    tracing::warn!(error = %err, "registering the node");
                }
                continue;
            }
            Err(err) => tracing::warn!(error = %err, "reading the node"),
        }
        tokio::select! {
            _ = net.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Gives back to each sandbox on the host the address its `eth0` holds,
/// for pods the IP book does not know (a state dir lost, or a crash
/// between making the sandbox and recording its address).
async fn recover_ips<C: Containers>(shared: &Arc<Shared<C>>) {
    let s = shared.clone();
    let done = tokio::task::spawn_blocking(move || {
        let names = s.netns.list().unwrap_or_default();
        for name in names {
            let Some(uid) = sandbox_uid(&s.config.sandbox_prefix, &name) else {
                continue;
            };
            if s.ips.lock().expect("ips").get(uid).is_some() {
                continue;
            }
            let Ok(nl) = s.netns.open(&name) else {
                continue;
            };
            let addrs = nl.addresses(sandbox::POD_INTERFACE).unwrap_or_default();
            if let Some(addr) = ipv4_addresses(&addrs).first()
                && s.net.cidr.contains(&addr.addr())
            {
                let mut book = s.ips.lock().expect("ips");
                match book.claim(uid, addr.addr()) {
                    Ok(true) => {
                        tracing::info!(uid, ip = %addr.addr(), "address recovered from the sandbox")
                    }
                    Ok(false) => {}
                    Err(err) => tracing::warn!(uid, error = %err, "recording a recovered address"),
                }
            }
        }
    })
    .await;
    if let Err(err) = done {
        tracing::warn!(error = %err, "recovering pod addresses");
    }
}

/// Every uid the host has something of: sandboxes, runtime state, IPs.
fn local_uids<C: Containers>(shared: &Shared<C>) -> BTreeSet<String> {
    let mut uids: BTreeSet<String> = shared.containers.pods().into_iter().collect();
    uids.extend(shared.ips.lock().expect("ips").uids());
    for name in shared.netns.list().unwrap_or_default() {
        if let Some(uid) = sandbox_uid(&shared.config.sandbox_prefix, &name) {
            uids.insert(uid.to_string());
        }
    }
    uids
}

/// The pod uid of one of our sandboxes. Only names whose rest is a UUID
/// count: with prefixes `knit-` and `knit-n1-` on one host, `knit-` must
/// not take `knit-n1-<uid>` for a sandbox of a pod `n1-<uid>`.
fn sandbox_uid<'a>(prefix: &str, netns: &'a str) -> Option<&'a str> {
    let uid = SandboxNames::uid_of(prefix, netns)?;
    let groups: Vec<&str> = uid.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
    let hex = groups
        .iter()
        .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    (shape && hex).then_some(uid)
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Watches the node's pods and runs one worker per pod uid.
async fn follow_pods<C: Containers>(shared: Arc<Shared<C>>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let mut events = watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, Arc<Notify>> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut listing: Option<HashMap<String, Pod>> = None;
    let mut synced = false;
    loop {
        let touched: Vec<String> = tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                    // An event that came while it was finishing.
                    if shared.pods.lock().expect("pods").contains_key(&uid) {
                        vec![uid]
                    } else {
                        continue;
                    }
                } else {
                    continue;
                }
            }
            event = events.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(watcher::Event::Init) => {
                        listing = Some(HashMap::new());
                        continue;
                    }
                    Ok(watcher::Event::InitApply(pod)) => {
                        if let Some(l) = listing.as_mut() {
                            l.insert(uid_of(&pod), pod);
                        }
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        let fresh = listing.take().unwrap_or_default();
                        let mut pods = shared.pods.lock().expect("pods");
                        let mut gone = shared.gone.lock().expect("gone");
                        for (uid, pod) in pods.drain() {
                            if !fresh.contains_key(&uid) {
                                gone.insert(uid, pod);
                            }
                        }
                        *pods = fresh;
                        drop((pods, gone));
                        let mut touched: BTreeSet<String> =
                            shared.pods.lock().expect("pods").keys().cloned().collect();
                        if !synced {
                            // First sight after a start: whatever the host
                            // holds for pods that no longer exist goes.
                            synced = true;
                            touched.extend(local_uids(&shared));
                        }
                        touched.extend(shared.gone.lock().expect("gone").keys().cloned());
                        touched.into_iter().collect()
                    }
                    Ok(watcher::Event::Apply(pod)) => {
                        let uid = uid_of(&pod);
                        shared.pods.lock().expect("pods").insert(uid.clone(), pod);
                        shared.status_kick.notify_one();
                        vec![uid]
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        let uid = uid_of(&pod);
                        shared.pods.lock().expect("pods").remove(&uid);
                        shared.gone.lock().expect("gone").insert(uid.clone(), pod);
                        vec![uid]
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "pod watch");
                        continue;
                    }
                }
            }
        };
        if !synced {
            continue;
        }
        for uid in touched {
            if uid.is_empty() {
                continue;
            }
            match workers.get(&uid) {
                Some(notify) => notify.notify_one(),
                None => {
                    let notify = Arc::new(Notify::new());
                    workers.insert(uid.clone(), notify.clone());
                    tasks.spawn(pod_worker(shared.clone(), uid, notify));
                }
            }
        }
    }
}

/// Keeps one pod's sandbox and containers in step until the pod is gone
/// and everything of it removed; returns its uid.
async fn pod_worker<C: Containers>(
    shared: Arc<Shared<C>>,
    uid: String,
    notify: Arc<Notify>,
) -> String {
    let mut backoff = Duration::from_millis(500);
    loop {
        let pod = shared.pods.lock().expect("pods").get(&uid).cloned();
        let outcome = match &pod {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                setup(&shared, pod).await.map(|()| false)
            }
            Some(pod) => teardown(&shared, &uid, Some(pod), true)
                .await
                .map(|()| true),
            None => {
                let last = shared.gone.lock().expect("gone").get(&uid).cloned();
                teardown(&shared, &uid, last.as_ref(), false)
                    .await
                    .map(|()| true)
            }
        };
        let wait = match outcome {
            Ok(true) => {
                shared.gone.lock().expect("gone").remove(&uid);
                return uid;
            }
            Ok(false) => {
                backoff = Duration::from_millis(500);
                Duration::from_secs(30)
            }
            Err(err) => {
                tracing::warn!(%uid, error = %err, "pod sync failed; retrying in {backoff:?}");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The pod's sandbox (unless hostNetwork), then its containers.
async fn setup<C: Containers>(shared: &Arc<Shared<C>>, pod: &Pod) -> Result<()> {
    let uid = uid_of(pod);
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let (netns_path, ip) = if host_network {
        (None, IpAddr::V4(shared.config.node_ip))
    } else {
        let NodeNet { cidr, mtu } = shared.net;
        let ip = shared
            .ips
            .lock()
            .expect("ips")
            .assign(&uid, cidr)
            .map_err(io("recording a pod IP"))?
            .ok_or_else(|| AgentError::Other(format!("no free address left in {cidr}")))?;
        let plan = sandbox::pod_sandbox(&shared.config.sandbox_prefix, &uid, ip, cidr, mtu)?;
        let path = shared.netns.path(&plan.names.netns)?;
        let s = shared.clone();
        let _turn = shared.sandbox_setups.acquire().await;
        let changes = tokio::task::spawn_blocking(move || {
            sandbox::apply_sandbox(&s.netns, &*s.node_nl, &plan)
        })
        .await
        .map_err(|e| AgentError::Other(e.to_string()))??;
        if !changes.is_empty() {
            tracing::info!(%uid, %ip, changes = changes.len(), "sandbox ready");
        }
        (Some(path), IpAddr::V4(ip))
    };
    let first = shared
        .ready
        .lock()
        .expect("ready")
        .insert(uid.clone(), ip)
        .is_none();
    if first {
        shared.status_kick.notify_one();
    }
    let sandbox = SandboxRef {
        netns_path,
        pod_ip: ip,
        resolv_conf: podfiles::resolv_conf(pod, &shared.config.dns, &shared.host_resolv),
        hosts: podfiles::hosts(pod, ip, &shared.config.dns, &shared.host_hosts),
    };
    shared.containers.sync(pod, &sandbox).await?;
    shared.status_kick.notify_one();
    Ok(())
}

/// Stops the pod's containers, removes its sandbox and address, and — for
/// a pod the API still shows as terminating — removes it from the API.
async fn teardown<C: Containers>(
    shared: &Arc<Shared<C>>,
    uid: &str,
    pod: Option<&Pod>,
    finalize: bool,
) -> Result<()> {
    let grace = pod
        .and_then(|p| {
            p.metadata.deletion_grace_period_seconds.or_else(|| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
        })
        .unwrap_or(0)
        .max(0);
    shared
        .containers
        .kill(uid, Duration::from_secs(grace as u64))
        .await?;
    if let Ok(names) = SandboxNames::new(&shared.config.sandbox_prefix, uid) {
        let s = shared.clone();
        let removed = tokio::task::spawn_blocking(move || {
            sandbox::remove_sandbox(&s.netns, &*s.node_nl, &names)
        })
        .await
        .map_err(|e| AgentError::Other(e.to_string()))??;
        if removed {
            tracing::info!(%uid, "sandbox removed");
        }
    }
    shared
        .ips
        .lock()
        .expect("ips")
        .release(uid)
        .map_err(io("releasing a pod IP"))?;
    shared.ready.lock().expect("ready").remove(uid);
    if finalize && let Some(pod) = pod {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(shared.client.clone(), ns);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Writes pod status whenever the runtime reports a change, a sandbox
/// comes up or a pod changes, in batches, skipping pods whose status would
/// not change.
async fn write_statuses<C: Containers>(shared: Arc<Shared<C>>) {
    let mut changes = shared.containers.changes();
    let mut runtime_open = true;
    let mut written: HashMap<String, serde_json::Value> = HashMap::new();
    loop {
        tokio::select! {
            r = changes.changed(), if runtime_open => runtime_open = r.is_ok(),
            () = shared.status_kick.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        // Gather what else moves in the same instant into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let pods: Vec<Pod> = shared
            .pods
            .lock()
            .expect("pods")
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        let now = Time(Timestamp::now());
        // Pods side by side: one after the other, each pod's events and
        // status patch wait for every earlier pod's round trips, and a
        // hundred pods starting at once see their status a second late.
        let writes: Vec<_> = pods
            .iter()
            .map(|pod| {
                let last = written.get(&uid_of(pod)).cloned();
                write_status(&shared, pod, last, now.clone())
            })
            .collect();
        let outcomes: Vec<(String, Written)> = futures::stream::iter(writes)
            .buffer_unordered(STATUS_WRITES_IN_FLIGHT)
            .collect()
            .await;
        for (uid, outcome) in outcomes {
            match outcome {
                Written::Same => {}
                Written::Forget => {
                    written.remove(&uid);
                }
                Written::Wrote(value) => {
                    written.insert(uid, value);
                }
            }
        }
        written.retain(|uid, _| pods.iter().any(|p| uid_of(p) == *uid));
    }
}

/// How many pods' status writes (with their events) are in flight at once.
const STATUS_WRITES_IN_FLIGHT: usize = 16;

/// What one pod's pass of [`write_statuses`] means for its record of the
/// last status written.
enum Written {
    /// Nothing to note: not written, or written and not taken.
    Same,
    /// The API shows the status already: no record needed.
    Forget,
    /// Written; the status without its condition times.
    Wrote(serde_json::Value),
}

/// Writes the pod's status unless the API shows it already or `last` (the
/// last status written, without times) is it, then posts the pod's queued
/// runtime events.
async fn write_status<C: Containers>(
    shared: &Shared<C>,
    pod: &Pod,
    last: Option<serde_json::Value>,
    now: Time,
) -> (String, Written) {
    let uid = uid_of(pod);
    let written = write_pod_status(shared, pod, &uid, last, now).await;
    // After the status, which is what pods and endpoints wait for; the
    // events only tell what happened.
    post_events(shared, pod, shared.containers.take_events(&uid)).await;
    (uid, written)
}

/// [`write_status`]'s first half: the status patch, if one is needed.
async fn write_pod_status<C: Containers>(
    shared: &Shared<C>,
    pod: &Pod,
    uid: &str,
    last: Option<serde_json::Value>,
    now: Time,
) -> Written {
    let pod_ip = shared.ready.lock().expect("ready").get(uid).copied();
    let has_ip = pod.status.as_ref().is_some_and(|s| s.pod_ip.is_some());
    if pod_ip.is_none() && has_ip {
        // A restarted agent re-checking the sandbox: the status
        // written before still holds; no flapping meanwhile.
        return Written::Same;
    }
    let runtime = shared.containers.status(uid);
    let facts = status::Facts {
        runtime: runtime.as_ref(),
        pod_ip,
        host_ip: IpAddr::V4(shared.config.node_ip),
        now,
    };
    let new = status::pod_status(pod, &facts);
    if !status::differs(pod, &new) {
        return Written::Forget;
    }
    let value = serde_json::to_value(&new).unwrap_or_default();
    if last == Some(without_times(&value)) {
        return Written::Same;
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), ns);
    let patch = Patch::Merge(json!({"metadata": {"uid": uid}, "status": value}));
    match api
        .patch_status(name, &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => return Written::Wrote(without_times(&value)),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(err) => {
            tracing::warn!(pod = %name, error = %err, "writing pod status");
            shared.status_kick.notify_one();
        }
    }
    Written::Same
}

/// Posts what the runtime reported about `pod` as Events of the pod, as
/// the kubelet does (`Unhealthy`, `Killing`, `BackOff`, ...), through the
/// same recorder as the controllers, so repeats aggregate into one Event.
async fn post_events<C: Containers>(shared: &Shared<C>, pod: &Pod, events: Vec<RuntimeEvent>) {
    for event in events {
        let involved = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            field_path: Some(format!("spec.containers{{{}}}", event.container)),
            ..ObjectReference::default()
        };
        let note = Note {
            type_: event.type_,
            reason: event.reason,
            message: event.message,
            component: "kubelet",
        };
        if let Err(err) = events::record(&shared.client, involved, &note).await {
            tracing::warn!(pod = ?pod.metadata.name, reason = note.reason, error = %err, "posting an event");
        }
    }
}

/// A status with its condition times blanked, so that the same facts
/// recomputed before the watch shows our last write are not written twice.
fn without_times(status: &serde_json::Value) -> serde_json::Value {
    let mut status = status.clone();
    if let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conditions {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastTransitionTime");
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuid_named_sandboxes_of_our_prefix_are_ours() {
        let uid = "0a0a0a0a-0000-4000-8000-00000000000a";
        assert_eq!(sandbox_uid("knit-", &format!("knit-{uid}")), Some(uid));
        assert_eq!(sandbox_uid("knit-", &format!("knit-n1-{uid}")), None);
        assert_eq!(
            sandbox_uid("knit-n1-", &format!("knit-n1-{uid}")),
            Some(uid)
        );
        assert_eq!(sandbox_uid("knit-", "knit-lab"), None);
        assert_eq!(sandbox_uid("knit-", uid), None);
    }
}
