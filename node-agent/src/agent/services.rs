//! The service dataplane's loop, kube-proxy's job on this node: watches
//! Services, EndpointSlices and the node's own pods (for HostPorts),
//! feeds them to a [`Planner`] and keeps the `ip knit` table in step with
//! a [`Proxier`], answers the `healthCheckNodePort`s of
//! `externalTrafficPolicy: Local` services, and keeps kube-proxy's sync
//! metrics.
//!
//! The planner and the proxier live on one dedicated thread (`nft` and
//! `conntrack` are forked from there, never from a tokio worker). The
//! watches send it changes over a channel; it applies them to the plan as
//! they come and syncs once a burst has been quiet for [`DEBOUNCE`] (at
//! most [`MAX_DELAY`] after its first change): a full sync at start, once
//! the first lists of Services and EndpointSlices are in, and after any
//! failure (retried every [`RETRY`]), partial ones otherwise, and a drift
//! check every [`CHECK_EVERY`].

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;

use super::AgentConfig;
use crate::netns;
use crate::proxy::{HealthCheck, LinuxFirewall, NodeInfo, Planner, Proxier, SyncKind};

/// Quiet time after a change before syncing, so a burst is one sync.
pub const DEBOUNCE: Duration = Duration::from_millis(5);
/// The longest a change waits for its burst to end.
pub const MAX_DELAY: Duration = Duration::from_millis(50);
/// How often the kernel's table is checked for drift.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How soon a failed sync is tried again (as a full one).
pub const RETRY: Duration = Duration::from_secs(1);
/// The EndpointSlice annotation the network programming latency counts
/// from: when the change that made the slice happened.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// kube-proxy's sync metrics, under kube-proxy's names.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    sync: Histogram,
    full: Histogram,
    partial: Histogram,
    programming: Histogram,
    failures: Family<Vec<(String, String)>, Counter>,
    last_sync: Gauge<f64, AtomicU64>,
    endpoint_changes: Counter,
    service_changes: Counter,
}

impl ProxyMetrics {
    /// Registers the metrics in `registry` (served on `/metrics`).
    pub fn register(registry: &mut Registry) -> Self {
        // 1 ms .. ~16 s, as kube-proxy's sync histograms span.
        let durations = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let metrics = ProxyMetrics {
            sync: durations(),
            full: durations(),
            partial: durations(),
            programming: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            failures: Family::default(),
            last_sync: Gauge::default(),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            metrics.sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            metrics.full.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            metrics.partial.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            metrics.programming.clone(),
        );
        // prometheus-client adds the `_total` of counters.
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            metrics.failures.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            metrics.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules EndpointSlice changes",
            metrics.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            metrics.service_changes.clone(),
        );
        metrics
    }

    fn failed(&self) {
        self.failures
            .get_or_create(&vec![("ip_family".into(), "IPv4".into())])
            .inc();
    }
}

/// The facts the planner needs about this node.
pub fn node_info(config: &AgentConfig, pod_cidr: Ipv4Net) -> NodeInfo {
    NodeInfo {
        name: config.node_name.clone(),
        ips: vec![config.node_ip],
        pod_cidr,
        cluster_cidr: config.cluster_cidr,
        // Every agent answers the cluster DNS address itself.
        local_dns: Some(config.dns.nameserver),
    }
}

/// One change for the sync thread.
enum Change {
    /// The whole list after a (re)list.
    Services(Vec<Service>),
    Service(Box<Service>),
    ServiceGone(String, String),
    Slices(Vec<EndpointSlice>),
    /// With its trigger time.
    Slice(Box<EndpointSlice>, Option<Timestamp>),
    SliceGone(String, String),
    Pods(Vec<Pod>),
}

/// Runs the dataplane of the node with pod CIDR `pod_cidr` until dropped
/// (the sync thread ends when the watches do).
pub async fn run(client: Client, config: AgentConfig, pod_cidr: Ipv4Net, metrics: ProxyMetrics) {
    let (tx, rx) = mpsc::channel();
    let (health_tx, health_rx) = tokio::sync::watch::channel(BTreeMap::new());
    let healthy = Arc::new(AtomicBool::new(false));
    let node = node_info(&config, pod_cidr);
    let fw = match &config.node_netns {
        Some(file) => LinuxFirewall::in_netns(file),
        None => LinuxFirewall::current(),
    };
    let flag = healthy.clone();
    let spawned = std::thread::Builder::new()
        .name("proxy-sync".into())
        .spawn(move || sync_loop(node, fw, rx, health_tx, flag, metrics));
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start the service proxy's thread");
        return;
    }
    let mut tasks = JoinSet::new();
    tasks.spawn(watch_services(client.clone(), tx.clone()));
    tasks.spawn(watch_slices(client.clone(), tx.clone()));
    tasks.spawn(watch_pods(client, config.node_name.clone(), tx));
    tasks.spawn(serve_health_checks(
        config.node_netns.clone(),
        health_rx,
        healthy,
    ));
    while tasks.join_next().await.is_some() {}
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

async fn watch_services(client: Client, tx: mpsc::Sender<Change>) {
    let api: Api<Service> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<Vec<Service>> = None;
    while let Some(event) = events.next().await {
        let change = match event {
            Ok(watcher::Event::Init) => {
                listing = Some(Vec::new());
                continue;
            }
            Ok(watcher::Event::InitApply(s)) => {
                listing.get_or_insert_with(Vec::new).push(s);
                continue;
            }
            Ok(watcher::Event::InitDone) => Change::Services(listing.take().unwrap_or_default()),
            Ok(watcher::Event::Apply(s)) => Change::Service(Box::new(s)),
            Ok(watcher::Event::Delete(s)) => {
                let (ns, name) = key_of(&s.metadata);
                Change::ServiceGone(ns, name)
            }
            Err(err) => {
                tracing::warn!(error = %err, "service watch");
                continue;
            }
        };
        if tx.send(change).is_err() {
            return;
        }
    }
}

async fn watch_slices(client: Client, tx: mpsc::Sender<Change>) {
    let api: Api<EndpointSlice> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<Vec<EndpointSlice>> = None;
    while let Some(event) = events.next().await {
        let change = match event {
            Ok(watcher::Event::Init) => {
                listing = Some(Vec::new());
                continue;
            }
            Ok(watcher::Event::InitApply(s)) => {
                listing.get_or_insert_with(Vec::new).push(s);
                continue;
            }
            Ok(watcher::Event::InitDone) => Change::Slices(listing.take().unwrap_or_default()),
            Ok(watcher::Event::Apply(s)) => {
                let trigger = s
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
                    .and_then(|t| t.parse::<Timestamp>().ok());
                Change::Slice(Box::new(s), trigger)
            }
            Ok(watcher::Event::Delete(s)) => {
                let (ns, name) = key_of(&s.metadata);
                Change::SliceGone(ns, name)
            }
            Err(err) => {
                tracing::warn!(error = %err, "endpointslice watch");
                continue;
            }
        };
        if tx.send(change).is_err() {
            return;
        }
    }
}

/// The node's own pods, for their HostPorts: the whole list on every
/// change (a node holds about a hundred).
async fn watch_pods(client: Client, node: String, tx: mpsc::Sender<Change>) {
    let api: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={node}");
    let mut events = watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut pods: HashMap<(String, String), Pod> = HashMap::new();
    let mut listing: Option<HashMap<(String, String), Pod>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                listing = Some(HashMap::new());
                continue;
            }
            Ok(watcher::Event::InitApply(p)) => {
                listing
                    .get_or_insert_with(HashMap::new)
                    .insert(key_of(&p.metadata), p);
                continue;
            }
            Ok(watcher::Event::InitDone) => pods = listing.take().unwrap_or_default(),
            Ok(watcher::Event::Apply(p)) => {
                let has_host_ports = |p: &Pod| {
                    p.spec.iter().flat_map(|s| &s.containers).any(|c| {
                        c.ports
                            .iter()
                            .flatten()
                            .any(|port| port.host_port.is_some())
                    })
                };
                let key = key_of(&p.metadata);
                // Pods without HostPorts, before and after, change nothing.
                if !has_host_ports(&p) && !pods.get(&key).is_some_and(has_host_ports) {
                    pods.insert(key, p);
                    continue;
                }
                pods.insert(key, p);
            }
            Ok(watcher::Event::Delete(p)) => {
                pods.remove(&key_of(&p.metadata));
            }
            Err(err) => {
                tracing::warn!(error = %err, "pod watch (host ports)");
                continue;
            }
        }
        if tx
            .send(Change::Pods(pods.values().cloned().collect()))
            .is_err()
        {
            return;
        }
    }
}

/// The sync thread: applies changes to the plan, syncs after bursts,
/// checks for drift, publishes the health checks.
fn sync_loop(
    node: NodeInfo,
    fw: LinuxFirewall,
    rx: mpsc::Receiver<Change>,
    health: tokio::sync::watch::Sender<BTreeMap<u16, HealthCheck>>,
    healthy: Arc<AtomicBool>,
    metrics: ProxyMetrics,
) {
    let mut planner = Planner::new(node);
    let mut proxier = Proxier::new(fw);
    let (mut have_services, mut have_slices) = (false, false);
    // Trigger times of slice changes not yet in the kernel.
    let mut pending: Vec<Timestamp> = Vec::new();
    let mut burst: Option<(Instant, Instant)> = None;
    let mut retry_at: Option<Instant> = None;
    let mut next_check = Instant::now() + CHECK_EVERY;
    loop {
        let ready = have_services && have_slices;
        let sync_at = match (ready, retry_at, burst) {
            (false, _, _) => None,
            (true, Some(at), _) => Some(at),
            (true, None, Some((first, last))) => Some((last + DEBOUNCE).min(first + MAX_DELAY)),
            (true, None, None) => None,
        };
        let wake = sync_at.map_or(next_check, |at| at.min(next_check));
        let mut changes = Vec::new();
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(change) => {
                changes.push(change);
                changes.extend(rx.try_iter());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if !changes.is_empty() {
            let now = Instant::now();
            burst = Some(burst.map_or((now, now), |(first, _)| (first, now)));
        }
        for change in changes {
            match change {
                Change::Services(list) => {
                    planner.reset_services(&list);
                    have_services = true;
                }
                Change::Service(s) => {
                    metrics.service_changes.inc();
                    planner.apply_service(&s);
                }
                Change::ServiceGone(ns, name) => {
                    metrics.service_changes.inc();
                    planner.delete_service(&ns, &name);
                }
                Change::Slices(list) => {
                    planner.reset_slices(&list);
                    have_slices = true;
                }
                Change::Slice(s, trigger) => {
                    metrics.endpoint_changes.inc();
                    planner.apply_slice(&s);
                    pending.extend(trigger);
                }
                Change::SliceGone(ns, name) => {
                    metrics.endpoint_changes.inc();
                    planner.delete_slice(&ns, &name);
                }
                Change::Pods(pods) => planner.set_pods(&pods),
            }
        }

        let now = Instant::now();
        if sync_at.is_some_and(|at| at <= now) {
            sync_once(
                &mut planner,
                &mut proxier,
                &metrics,
                &mut pending,
                &health,
                &healthy,
                &mut retry_at,
            );
            burst = None;
        }
        if ready && Instant::now() >= next_check {
            next_check = Instant::now() + CHECK_EVERY;
            match proxier.check() {
                Ok(true) => tracing::warn!("the ip knit table had drifted; rebuilt it"),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "checking the ip knit table");
                    metrics.failed();
                    retry_at = Some(Instant::now() + RETRY);
                }
            }
        }
    }
}

fn sync_once(
    planner: &mut Planner,
    proxier: &mut Proxier<LinuxFirewall>,
    metrics: &ProxyMetrics,
    pending: &mut Vec<Timestamp>,
    health: &tokio::sync::watch::Sender<BTreeMap<u16, HealthCheck>>,
    healthy: &AtomicBool,
    retry_at: &mut Option<Instant>,
) {
    match proxier.sync_planned(planner) {
        Ok(report) => {
            let seconds = report.elapsed.as_secs_f64();
            metrics.sync.observe(seconds);
            match report.kind {
                SyncKind::Full => {
                    metrics.full.observe(seconds);
                    tracing::info!(elapsed = ?report.elapsed, nft_bytes = report.script_bytes, elements = report.elements, "full sync of ip knit");
                }
                SyncKind::Partial => metrics.partial.observe(seconds),
                SyncKind::Unchanged => {}
            }
            for err in &report.conntrack_errors {
                tracing::warn!(error = %err, "deleting stale UDP conntrack entries");
            }
            let now = Timestamp::now();
            for trigger in pending.drain(..) {
                if let Ok(span) = now.since(trigger) {
                    let secs = span.total(k8s_openapi::jiff::Unit::Second).unwrap_or(0.0);
                    if secs >= 0.0 {
                        metrics.programming.observe(secs);
                    }
                }
            }
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            metrics.last_sync.set(unix);
            healthy.store(true, Ordering::Relaxed);
            *retry_at = None;
            let checks = planner.health_checks();
            health.send_if_modified(|current| {
                let changed = *current != checks;
                if changed {
                    *current = checks;
                }
                changed
            });
        }
        Err(err) => {
            tracing::warn!(error = %err, "syncing ip knit; a full sync follows in {RETRY:?}");
            metrics.failed();
            healthy.store(false, Ordering::Relaxed);
            *retry_at = Some(Instant::now() + RETRY);
        }
    }
}

/// What one health check server answers, shared with its handler.
#[derive(Clone)]
struct HealthState {
    check: Arc<Mutex<HealthCheck>>,
    healthy: Arc<AtomicBool>,
}

/// One HTTP server per `healthCheckNodePort`, on every address of the
/// node, answering as kube-proxy does: 200 with the local endpoint count
/// when there are local endpoints (and the proxy is syncing), 503
/// otherwise.
async fn serve_health_checks(
    node_netns: Option<PathBuf>,
    mut wanted: tokio::sync::watch::Receiver<BTreeMap<u16, HealthCheck>>,
    healthy: Arc<AtomicBool>,
) {
    let mut servers: HashMap<u16, (tokio::task::JoinHandle<()>, Arc<Mutex<HealthCheck>>)> =
        HashMap::new();
    loop {
        let checks = wanted.borrow_and_update().clone();
        servers.retain(|port, (task, _)| {
            let keep = checks.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut failed = false;
        for (port, check) in checks {
            if let Some((_, state)) = servers.get(&port) {
                *state.lock().unwrap_or_else(|e| e.into_inner()) = check;
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let bound = match &node_netns {
                Some(file) => netns::run_in(file, move || std::net::TcpListener::bind(addr))
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|r| r),
                None => std::net::TcpListener::bind(addr),
            }
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            });
            let listener = match bound {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(port, error = %err, "health check port");
                    failed = true;
                    continue;
                }
            };
            let state = Arc::new(Mutex::new(check));
            let app = Router::new()
                .fallback(answer_health)
                .with_state(HealthState {
                    check: state.clone(),
                    healthy: healthy.clone(),
                });
            let task = tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, app).await {
                    tracing::warn!(port, error = %err, "health check server stopped");
                }
            });
            servers.insert(port, (task, state));
        }
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() {
                for (task, _) in servers.values() {
                    task.abort();
                }
                return;
            },
            () = tokio::time::sleep(Duration::from_secs(5)), if failed => {}
        }
    }
}

async fn answer_health(State(state): State<HealthState>) -> impl IntoResponse {
    let check = state
        .check
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let healthy = state.healthy.load(Ordering::Relaxed);
    let status = if check.local_endpoints > 0 && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "service": {"namespace": check.namespace, "name": check.name},
        "localEndpoints": check.local_endpoints,
        "serviceProxyHealthy": healthy,
    });
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (
                header::HeaderName::from_static("x-load-balancing-endpoint-weight"),
                check.local_endpoints.to_string(),
            ),
        ],
        body.to_string(),
    )
}
