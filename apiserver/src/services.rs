//! Service admission: ClusterIPs and NodePorts are handed out while the
//! Service is written, as kube-apiserver does, so the answer to a create
//! already carries them.
//!
//! The allocators live in memory and are a projection of the stored
//! Services: they are rebuilt from the store when the server starts, and a
//! write takes what it needs in a [`Reservation`] that gives the values
//! back unless the write commits. So a failed write leaks nothing, and a
//! crash leaks nothing either — after a restart the rebuild sees only what
//! committed. Values a Service stops holding (an update that changes its
//! type, a delete) are freed only after that write commits, so no other
//! Service can take them while they are still recorded.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use knit_api::registry::Resource;
use knit_api::{ApiError, Cause, Result};
use knit_ipam::{Cidr, ClusterIp, ClusterIpAllocator, NodePort, NodePortAllocator, PortRange};
use serde_json::{Value, json};

use crate::AppState;
use crate::objects::{self, invalid};
use crate::request::{BodyType, Params, Target};

/// How often the repair loop compares the allocators with the Services.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(60);
/// How many repair passes in a row must find a value held by no Service
/// before it is freed: a write in flight holds values it has not stored yet.
pub const LEAK_CONFIRMATIONS: u32 = 3;

/// The allocators of one server and the ranges they serve.
#[derive(Debug)]
pub struct ServiceAllocator {
    inner: Mutex<Allocators>,
}

#[derive(Debug)]
struct Allocators {
    ips: ClusterIpAllocator,
    ports: NodePortAllocator,
}

/// What one Service holds: its ClusterIP and its node ports (the ports'
/// and the health check's).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub ips: Vec<IpAddr>,
    pub ports: Vec<u16>,
}

impl Held {
    /// What `service` records.
    pub fn of(service: &Value) -> Held {
        let spec = &service["spec"];
        let ips = cluster_ip(spec)
            .and_then(|ip| ip.parse().ok())
            .into_iter()
            .collect();
        let mut ports: Vec<u16> = spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| port_number(&p["nodePort"]))
            .collect();
        ports.extend(port_number(&spec["healthCheckNodePort"]));
        ports.dedup();
        Held { ips, ports }
    }
}

fn port_number(value: &Value) -> Option<u16> {
    value
        .as_u64()
        .filter(|n| *n > 0)
        .and_then(|n| u16::try_from(n).ok())
}

/// The ClusterIP a spec records, if it records a real one.
fn cluster_ip(spec: &Value) -> Option<&str> {
    let ip = spec["clusterIP"]
        .as_str()
        .or_else(|| spec["clusterIPs"][0].as_str())?;
    (!ip.is_empty() && ip != "None").then_some(ip)
}

fn service_type(spec: &Value) -> &str {
    spec["type"].as_str().unwrap_or("ClusterIP")
}

fn wants_cluster_ip(spec: &Value) -> bool {
    service_type(spec) != "ExternalName" && spec["clusterIP"].as_str() != Some("None")
}

fn wants_node_ports(spec: &Value) -> bool {
    match service_type(spec) {
        "NodePort" => true,
        "LoadBalancer" => spec["allocateLoadBalancerNodePorts"].as_bool() != Some(false),
        _ => false,
    }
}

fn wants_health_check_port(spec: &Value) -> bool {
    service_type(spec) == "LoadBalancer" && spec["externalTrafficPolicy"].as_str() == Some("Local")
}

/// Values one write took; given back when dropped unless committed.
#[must_use = "a reservation is released when dropped; commit it once the write is stored"]
#[derive(Debug)]
pub struct Reservation<'a> {
    owner: &'a ServiceAllocator,
    ips: Vec<ClusterIp>,
    ports: Vec<NodePort>,
}

impl Reservation<'_> {
    /// The write is stored: the values stay taken.
    pub fn commit(mut self) {
        self.ips.clear();
        self.ports.clear();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.ips.is_empty() && self.ports.is_empty() {
            return;
        }
        let mut inner = self.owner.lock();
        for ip in self.ips.drain(..) {
            inner.ips.release(ip);
        }
        for port in self.ports.drain(..) {
            inner.ports.release(port);
        }
    }
}

impl ServiceAllocator {
    /// Empty allocators over the service CIDR and the node port range.
    pub fn new(service_cidr: Cidr, node_ports: PortRange) -> knit_ipam::Result<Self> {
        Ok(ServiceAllocator {
            inner: Mutex::new(Allocators {
                ips: ClusterIpAllocator::new(service_cidr)?,
                ports: NodePortAllocator::new(node_ports),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Allocators> {
        // The allocators stay consistent even if a holder panicked: every
        // change is a single bitmap operation.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The service CIDR.
    pub fn service_cidr(&self) -> Cidr {
        self.lock().ips.cidr()
    }

    /// Replaces the state with what `services` record. Returns what was
    /// wrong with them (two Services claiming one value, values outside
    /// the ranges), for the caller to report.
    pub fn rebuild<'a>(&self, services: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
        let mut inner = self.lock();
        let mut ips = Vec::new();
        let mut ports = Vec::new();
        for service in services {
            let held = Held::of(service);
            ips.extend(held.ips.into_iter().map(ClusterIp));
            ports.extend(held.ports.into_iter().map(NodePort));
        }
        let cidr = inner.ips.cidr();
        let range = inner.ports.range();
        let (new_ips, ip_issues) =
            ClusterIpAllocator::from_used(cidr, ips).expect("the CIDR was accepted before");
        let (new_ports, port_issues) = NodePortAllocator::from_used(range, ports);
        inner.ips = new_ips;
        inner.ports = new_ports;
        let mut issues: Vec<String> = ip_issues
            .iter()
            .map(|i| format!("ClusterIP {i:?}"))
            .collect();
        issues.extend(port_issues.iter().map(|i| format!("NodePort {i:?}")));
        issues
    }

    /// Every value taken now.
    fn taken(&self) -> Held {
        let inner = self.lock();
        Held {
            ips: inner.ips.used().into_iter().map(|ip| ip.0).collect(),
            ports: inner.ports.used().into_iter().map(|p| p.0).collect(),
        }
    }

    /// Whether `ip` is taken.
    pub fn ip_taken(&self, ip: IpAddr) -> bool {
        self.lock().ips.is_allocated(ClusterIp(ip))
    }

    /// Whether `port` is taken.
    pub fn port_taken(&self, port: u16) -> bool {
        self.lock().ports.is_allocated(NodePort(port))
    }

    /// Admission of a Service write (after [`prepare_update`] and
    /// validation): takes what `service` needs beyond what `old` held.
    /// Kinds other than Service pass through.
    pub fn admit(
        &self,
        resource: &Resource,
        old: Option<&Value>,
        service: &mut Value,
    ) -> Result<Option<Reservation<'_>>> {
        if resource.kind != "Service" || !resource.group.is_empty() {
            return Ok(None);
        }
        let held = old.map(Held::of).unwrap_or_default();
        let mut reservation = Reservation {
            owner: self,
            ips: Vec::new(),
            ports: Vec::new(),
        };
        let mut causes = Vec::new();
        let mut inner = self.lock();
        let spec = &mut service["spec"];
        if wants_cluster_ip(spec) {
            take_cluster_ip(&mut inner, &held, spec, &mut reservation, &mut causes)?;
        }
        if wants_node_ports(spec) {
            take_node_ports(&mut inner, &held, spec, &mut reservation, &mut causes)?;
        }
        if wants_health_check_port(spec) {
            let requested = port_number(&spec["healthCheckNodePort"]);
            match take_port(&mut inner, &held, requested, &mut reservation) {
                Ok(port) => spec["healthCheckNodePort"] = json!(port),
                Err(PortError::Invalid(detail)) => causes.push(Cause::invalid(
                    "spec.healthCheckNodePort",
                    &json!(requested),
                    detail,
                )),
                Err(PortError::Full) => return Err(port_range_full()),
            }
        }
        drop(inner);
        if !causes.is_empty() {
            return Err(invalid(resource, service, causes));
        }
        Ok(Some(reservation))
    }

    /// After a write of a Service committed: frees what `old` held that
    /// `new` (absent after a delete) no longer does.
    pub fn release_unused(&self, resource: &Resource, old: &Value, new: Option<&Value>) {
        if resource.kind != "Service" || !resource.group.is_empty() {
            return;
        }
        let was = Held::of(old);
        let now = new.map(Held::of).unwrap_or_default();
        let mut inner = self.lock();
        for ip in was.ips.into_iter().filter(|ip| !now.ips.contains(ip)) {
            inner.ips.release(ClusterIp(ip));
        }
        for port in was.ports.into_iter().filter(|p| !now.ports.contains(p)) {
            inner.ports.release(NodePort(port));
        }
    }
}

/// What kube-apiserver's service strategy does to an update before it is
/// validated: allocated values the client left out are kept (a PUT without
/// `clusterIP` or `nodePort` does not ask for new ones), and fields the new
/// type has no use for are dropped when the client did not change them (a
/// patch to `type: ClusterIP` need not clear the node ports by hand).
pub fn prepare_update(resource: &Resource, old: &Value, new: &mut Value) {
    if resource.kind != "Service" || !resource.group.is_empty() || !new["spec"].is_object() {
        return;
    }
    carry_over(&old["spec"], &mut new["spec"]);
}

fn externally_accessible(spec: &Value) -> bool {
    matches!(service_type(spec), "NodePort" | "LoadBalancer")
        || spec["externalIPs"]
            .as_array()
            .is_some_and(|ips| !ips.is_empty())
}

fn carry_over(old: &Value, new: &mut Value) {
    // Fields only some types use, dropped when left as they were.
    let drop_if_unchanged = |new: &mut Value, field: &str, used: bool| {
        if !used && !new[field].is_null() && new[field] == old[field] {
            new.as_object_mut().map(|s| s.remove(field));
        }
    };
    let accessible = externally_accessible(new);
    drop_if_unchanged(new, "externalTrafficPolicy", accessible);
    let load_balancer = service_type(new) == "LoadBalancer";
    drop_if_unchanged(new, "allocateLoadBalancerNodePorts", load_balancer);
    drop_if_unchanged(new, "loadBalancerClass", load_balancer);

    if wants_cluster_ip(new) && cluster_ip(new).is_none() {
        if let Some(ip) = cluster_ip(old) {
            new["clusterIP"] = json!(ip);
            new["clusterIPs"] = old["clusterIPs"].clone();
            if new["clusterIPs"].is_null() {
                new["clusterIPs"] = json!([ip]);
            }
        }
    } else if !wants_cluster_ip(new)
        && new["clusterIP"].as_str() != Some("None")
        && cluster_ip(new) == cluster_ip(old)
        && let Some(spec) = new.as_object_mut()
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    let old_ports = old["ports"].as_array().cloned().unwrap_or_default();
    let wants_ports = wants_node_ports(new);
    for port in new["ports"].as_array_mut().into_iter().flatten() {
        let matching = old_ports
            .iter()
            .find(|o| o["port"] == port["port"] && protocol(o) == protocol(port));
        let old_node_port = matching.and_then(|o| port_number(&o["nodePort"]));
        let given = port_number(&port["nodePort"]);
        if wants_ports && given.is_none() {
            if let Some(kept) = old_node_port {
                port["nodePort"] = json!(kept);
            }
        } else if !wants_ports && given.is_some() && given == old_node_port {
            port.as_object_mut().map(|p| p.remove("nodePort"));
        }
    }
    let old_check = port_number(&old["healthCheckNodePort"]);
    let given_check = port_number(&new["healthCheckNodePort"]);
    if wants_health_check_port(new) && given_check.is_none() {
        if let Some(kept) = old_check {
            new["healthCheckNodePort"] = json!(kept);
        }
    } else if !wants_health_check_port(new) && given_check.is_some() && given_check == old_check {
        new.as_object_mut().map(|s| s.remove("healthCheckNodePort"));
    }
}

fn protocol(port: &Value) -> &str {
    port["protocol"].as_str().unwrap_or("TCP")
}

fn take_cluster_ip(
    inner: &mut Allocators,
    held: &Held,
    spec: &mut Value,
    reservation: &mut Reservation<'_>,
    causes: &mut Vec<Cause>,
) -> Result<()> {
    let ip = match cluster_ip(spec) {
        None => match inner.ips.allocate(&mut rand::rng()) {
            Ok(ip) => {
                reservation.ips.push(ip);
                ip.0
            }
            Err(_) => {
                return Err(ApiError::Internal(
                    "failed to allocate a serviceIP: range is full".into(),
                ));
            }
        },
        Some(text) => {
            // Validation has already checked the address's form.
            let Ok(ip) = text.parse::<IpAddr>() else {
                return Ok(());
            };
            if !held.ips.contains(&ip) {
                match inner.ips.allocate_specific(ClusterIp(ip)) {
                    Ok(()) => reservation.ips.push(ClusterIp(ip)),
                    Err(err) => {
                        causes.push(Cause::invalid(
                            "spec.clusterIPs",
                            &json!([text]),
                            format!("failed to allocate IP {ip}: {err}"),
                        ));
                        return Ok(());
                    }
                }
            }
            ip
        }
    };
    spec["clusterIP"] = json!(ip.to_string());
    spec["clusterIPs"] = json!([ip.to_string()]);
    Ok(())
}

enum PortError {
    Invalid(String),
    Full,
}

/// Takes `requested` (or any free port): a port `held` by the Service
/// before, or already taken by this write for another of its ports (the
/// same node port for TCP and UDP), is not taken twice.
fn take_port(
    inner: &mut Allocators,
    held: &Held,
    requested: Option<u16>,
    reservation: &mut Reservation<'_>,
) -> Result<u16, PortError> {
    match requested {
        Some(port) if held.ports.contains(&port) || reservation.ports.contains(&NodePort(port)) => {
            Ok(port)
        }
        Some(port) => match inner.ports.allocate_specific(NodePort(port)) {
            Ok(()) => {
                reservation.ports.push(NodePort(port));
                Ok(port)
            }
            Err(err) => Err(PortError::Invalid(err.to_string())),
        },
        None => match inner.ports.allocate(&mut rand::rng()) {
            Ok(port) => {
                reservation.ports.push(port);
                Ok(port.0)
            }
            Err(_) => Err(PortError::Full),
        },
    }
}

fn port_range_full() -> ApiError {
    ApiError::Internal("failed to allocate a nodePort: range is full".into())
}

fn take_node_ports(
    inner: &mut Allocators,
    held: &Held,
    spec: &mut Value,
    reservation: &mut Reservation<'_>,
    causes: &mut Vec<Cause>,
) -> Result<()> {
    let Some(ports) = spec["ports"].as_array_mut() else {
        return Ok(());
    };
    // Ports asked for by number first, so a dynamic pick never takes a
    // port another entry of the same Service names.
    let mut order: Vec<usize> = (0..ports.len()).collect();
    order.sort_by_key(|i| port_number(&ports[*i]["nodePort"]).is_none());
    for i in order {
        let requested = port_number(&ports[i]["nodePort"]);
        match take_port(inner, held, requested, reservation) {
            Ok(port) => ports[i]["nodePort"] = json!(port),
            Err(PortError::Invalid(detail)) => causes.push(Cause::invalid(
                format!("spec.ports[{i}].nodePort"),
                &json!(requested),
                detail,
            )),
            Err(PortError::Full) => return Err(port_range_full()),
        }
    }
    Ok(())
}

fn services_target(namespace: Option<&str>) -> Target {
    Target {
        resource: knit_api::registry::lookup("", "v1", "services").expect("services are served"),
        namespace: namespace.map(str::to_string),
        name: None,
        subresource: None,
    }
}

async fn stored_services(state: &AppState) -> Result<Vec<Value>> {
    let list = objects::list(state, &services_target(None), &Params::default()).await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// Fills the allocators from every stored Service (at start, before the
/// API serves writes) and logs what was wrong with them.
pub async fn rebuild_from_store(state: &AppState) -> Result<()> {
    let services = stored_services(state).await?;
    for issue in state.services.rebuild(&services) {
        tracing::warn!(%issue, "service allocation found on rebuild");
    }
    Ok(())
}

/// Creates the `kubernetes` Service in `default` at the service CIDR's
/// first address, its port 443 leading to the API's own port, and the
/// cluster DNS Service `kube-system/kube-dns` at its tenth.
pub async fn ensure_kubernetes_service(state: &AppState, api_port: u16) -> Result<()> {
    let allocator = ClusterIpAllocator::new(state.services.service_cidr())
        .expect("the CIDR was accepted before");
    let first = allocator.first_address();
    let body = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": first.0.to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}],
        },
    });
    ensure_service(state, "default", "kubernetes", body).await?;
    match allocator.nth_address(10) {
        Ok(dns) => ensure_kube_dns(state, dns).await,
        Err(err) => {
            tracing::warn!(error = %err, "no kube-dns Service: the service CIDR has no tenth address");
            Ok(())
        }
    }
}

/// Creates `kube-system/kube-dns` at `ip`: the address every node agent
/// answers DNS on for its own pods. It selects no pods (no endpoints: the
/// agents serve it), and carries the labels and port names clients look
/// for on a cluster's DNS Service.
async fn ensure_kube_dns(state: &AppState, ip: ClusterIp) -> Result<()> {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "KubeDNS",
            },
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip.0.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    });
    ensure_service(state, "kube-system", "kube-dns", body).await
}

/// Creates the Service `namespace/name` from `body` unless it exists.
async fn ensure_service(state: &AppState, namespace: &str, name: &str, body: Value) -> Result<()> {
    let body = serde_json::to_vec(&body).expect("static JSON");
    let target = services_target(Some(namespace));
    // Admission would refuse the address the existing Service holds before
    // the store could say it exists, as kube-apiserver's would.
    let existing = Target {
        name: Some(name.into()),
        ..target.clone()
    };
    match objects::get(state, &existing).await {
        Ok(_) => return Ok(()),
        Err(ApiError::NotFound { .. }) => {}
        Err(err) => return Err(err),
    }
    match objects::create(state, &target, &Params::default(), &body, BodyType::Json).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Points the `kubernetes` Service at the API server itself: an Endpoints
/// object and an EndpointSlice holding `api`'s address. An API reachable
/// only on loopback or a wildcard has no address pods could use (and
/// Endpoints may not hold one), so then there are none, and the log says why.
pub async fn ensure_kubernetes_endpoints(
    state: &AppState,
    api: std::net::SocketAddr,
) -> Result<()> {
    let ip = api.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        tracing::info!(%api, "the kubernetes Service has no endpoints: the API listens on no address pods can reach");
        return Ok(());
    }
    let port = json!([{"name": "https", "port": api.port(), "protocol": "TCP"}]);
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": port}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": port,
    });
    upsert(state, ("", "v1", "endpoints"), endpoints, &["subsets"]).await?;
    upsert(
        state,
        ("discovery.k8s.io", "v1", "endpointslices"),
        slice,
        &["addressType", "endpoints", "ports"],
    )
    .await
}

/// Creates `object` in `default`, or makes the existing one's `fields` equal
/// to the object's (an API that moved to another address).
async fn upsert(
    state: &AppState,
    (group, version, plural): (&str, &str, &str),
    object: Value,
    fields: &[&str],
) -> Result<()> {
    let resource = knit_api::registry::lookup(group, version, plural).expect("a served resource");
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let collection = Target {
        resource,
        namespace: Some("default".into()),
        name: None,
        subresource: None,
    };
    let body = serde_json::to_vec(&object).expect("JSON values serialize");
    match objects::create(
        state,
        &collection,
        &Params::default(),
        &body,
        BodyType::Json,
    )
    .await
    {
        Err(ApiError::AlreadyExists { .. }) => {}
        other => return other.map(|_| ()),
    }
    let target = Target {
        name: Some(name),
        ..collection
    };
    objects::guaranteed_update(state, &target, None, false, &|current| {
        let mut updated = current.clone();
        for field in fields {
            updated[*field] = object[*field].clone();
        }
        Ok((updated != *current).then_some(updated))
    })
    .await
    .map(|_| ())
}

/// Values taken but held by no Service, with how many passes in a row found them.
#[derive(Debug, Default)]
pub struct Suspects {
    ips: HashMap<IpAddr, u32>,
    ports: HashMap<u16, u32>,
}

/// One repair pass: values held by no stored Service for
/// [`LEAK_CONFIRMATIONS`] passes in a row are freed; values two Services
/// claim are reported. Returns how many values were freed.
pub async fn repair_once(state: &AppState, suspects: &mut Suspects) -> Result<usize> {
    // Read what is taken before the Services: a value taken after this
    // read cannot be a suspect of this pass.
    let taken = state.services.taken();
    let services = stored_services(state).await?;
    let mut held = Held::default();
    let mut claims: HashMap<String, Vec<String>> = HashMap::new();
    for service in &services {
        let name = format!(
            "{}/{}",
            service["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default(),
            service["metadata"]["name"].as_str().unwrap_or_default()
        );
        let one = Held::of(service);
        for ip in &one.ips {
            claims
                .entry(format!("ClusterIP {ip}"))
                .or_default()
                .push(name.clone());
        }
        for port in &one.ports {
            claims
                .entry(format!("NodePort {port}"))
                .or_default()
                .push(name.clone());
        }
        held.ips.extend(one.ips);
        held.ports.extend(one.ports);
    }
    for (value, owners) in claims {
        let mut owners = owners;
        owners.dedup();
        if owners.len() > 1 {
            tracing::warn!(%value, ?owners, "one value is recorded on several Services");
        }
    }
    let mut freed = 0;
    let mut inner = state.services.lock();
    let ips = taken.ips.into_iter().filter(|ip| !held.ips.contains(ip));
    let ips: HashSet<IpAddr> = ips.collect();
    suspects.ips.retain(|ip, _| ips.contains(ip));
    for ip in ips {
        let seen = suspects.ips.entry(ip).or_default();
        *seen += 1;
        if *seen >= LEAK_CONFIRMATIONS {
            tracing::warn!(%ip, "freeing a ClusterIP no Service holds");
            inner.ips.release(ClusterIp(ip));
            suspects.ips.remove(&ip);
            freed += 1;
        }
    }
    let ports: HashSet<u16> = taken
        .ports
        .into_iter()
        .filter(|p| !held.ports.contains(p))
        .collect();
    suspects.ports.retain(|port, _| ports.contains(port));
    for port in ports {
        let seen = suspects.ports.entry(port).or_default();
        *seen += 1;
        if *seen >= LEAK_CONFIRMATIONS {
            tracing::warn!(port, "freeing a NodePort no Service holds");
            inner.ports.release(NodePort(port));
            suspects.ports.remove(&port);
            freed += 1;
        }
    }
    Ok(freed)
}

/// Repairs the allocators every [`REPAIR_INTERVAL`] until shutdown.
pub async fn run_repair(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    let mut suspects = Suspects::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPAIR_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(err) = repair_once(&state, &mut suspects).await {
            tracing::warn!(error = %err, "service allocation repair failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knit_api::registry;

    fn services() -> &'static Resource {
        registry::lookup("", "v1", "services").unwrap()
    }

    fn allocator() -> ServiceAllocator {
        ServiceAllocator::new("10.3.240.0/20".parse().unwrap(), PortRange::DEFAULT).unwrap()
    }

    fn service(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"}, "spec": spec})
    }

    /// An update's admission as the write path runs it.
    fn admit(a: &ServiceAllocator, old: Option<&Value>, mut svc: Value) -> Result<Value> {
        if let Some(old) = old {
            prepare_update(services(), old, &mut svc);
        }
        a.admit(services(), old, &mut svc)?.unwrap().commit();
        Ok(svc)
    }

    #[test]
    fn a_cluster_ip_service_gets_an_address_from_the_upper_band() {
        let a = allocator();
        let svc = admit(&a, None, service(json!({"ports": [{"port": 80}]}))).unwrap();
        let ip: IpAddr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip.to_string()]));
        let cidr = a.service_cidr();
        assert!(cidr.contains(ip));
        // 10.3.240.0/20: the static band is the first 256 addresses.
        assert!(ip > "10.3.241.0".parse::<IpAddr>().unwrap(), "{ip}");
        assert!(svc["spec"]["ports"][0].get("nodePort").is_none());
        assert!(a.ip_taken(ip));
    }

    #[test]
    fn a_requested_ip_is_taken_once_and_a_second_request_is_invalid() {
        let a = allocator();
        let want = json!({"clusterIP": "10.3.240.20", "ports": [{"port": 80}]});
        admit(&a, None, service(want.clone())).unwrap();
        let err = admit(&a, None, service(want)).unwrap_err();
        let status = err.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["details"]["causes"][0]["field"], "spec.clusterIPs");
        let message = status["message"].as_str().unwrap();
        assert!(
            message.contains("provided IP is already allocated"),
            "{message}"
        );
    }

    #[test]
    fn an_ip_outside_the_range_is_invalid_and_names_the_range() {
        let a = allocator();
        let err = admit(
            &a,
            None,
            service(json!({"clusterIP": "10.9.0.1", "ports": [{"port": 80}]})),
        )
        .unwrap_err();
        let message = err.to_status()["message"].as_str().unwrap().to_string();
        assert!(message.contains("10.3.240.0/20"), "{message}");
    }

    #[test]
    fn node_ports_one_per_port_and_tcp_udp_may_share_one() {
        let a = allocator();
        let svc = admit(
            &a,
            None,
            service(json!({"type": "NodePort", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053},
                {"name": "http", "port": 80}]})),
        )
        .unwrap();
        let ports: Vec<u64> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["nodePort"].as_u64().unwrap())
            .collect();
        assert_eq!(ports[..2], [30053, 30053]);
        assert!((30000..=32767).contains(&ports[2]) && ports[2] != 30053);
        let err = admit(
            &a,
            None,
            service(json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": 30053}]})),
        )
        .unwrap_err();
        let status = err.to_status();
        assert_eq!(
            status["details"]["causes"][0]["field"],
            "spec.ports[0].nodePort"
        );
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("provided port is already allocated")
        );
    }

    #[test]
    fn a_failed_write_gives_everything_back() {
        let a = allocator();
        let mut svc = service(
            json!({"type": "NodePort", "clusterIP": "10.3.240.30", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let reservation = a.admit(services(), None, &mut svc).unwrap().unwrap();
        assert!(a.port_taken(30080));
        drop(reservation);
        assert!(!a.port_taken(30080));
        assert!(!a.ip_taken("10.3.240.30".parse().unwrap()));
    }

    #[test]
    fn headless_and_external_name_take_nothing() {
        let a = allocator();
        let headless = admit(
            &a,
            None,
            service(json!({"clusterIP": "None", "ports": [{"port": 80}]})),
        )
        .unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
        let external = admit(
            &a,
            None,
            service(json!({"type": "ExternalName", "externalName": "db.example.com"})),
        )
        .unwrap();
        assert!(external["spec"].get("clusterIP").is_none());
        assert_eq!(a.rebuild([]), Vec::<String>::new());
    }

    #[test]
    fn an_update_keeps_what_the_client_left_out_and_frees_what_the_type_drops() {
        let a = allocator();
        let old = admit(
            &a,
            None,
            service(json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .unwrap();
        let ip = old["spec"]["clusterIP"].clone();
        let node_port = old["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;

        // A PUT without clusterIP and nodePort keeps both.
        let kept = admit(
            &a,
            Some(&old),
            service(json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .unwrap();
        assert_eq!(kept["spec"]["clusterIP"], ip);
        assert_eq!(kept["spec"]["ports"][0]["nodePort"], node_port);

        // Back to ClusterIP: the node port goes, once the write commits.
        let plain = admit(&a, Some(&kept), service(json!({"type": "ClusterIP", "clusterIP": ip, "ports": [{"port": 80, "nodePort": node_port}]}))).unwrap();
        assert!(plain["spec"]["ports"][0].get("nodePort").is_none());
        assert!(a.port_taken(node_port));
        a.release_unused(services(), &kept, Some(&plain));
        assert!(!a.port_taken(node_port));

        // A delete frees the address.
        a.release_unused(services(), &plain, None);
        assert!(!a.ip_taken(ip.as_str().unwrap().parse().unwrap()));
    }

    #[test]
    fn rebuild_from_services_equals_the_state_before_and_reports_duplicates() {
        let a = allocator();
        let one = admit(
            &a,
            None,
            service(json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .unwrap();
        let two = admit(&a, None, service(json!({"ports": [{"port": 80}]}))).unwrap();
        let fresh = allocator();
        assert!(fresh.rebuild([&one, &two]).is_empty());
        for svc in [&one, &two] {
            let held = Held::of(svc);
            assert!(held.ips.iter().all(|ip| fresh.ip_taken(*ip)));
            assert!(held.ports.iter().all(|p| fresh.port_taken(*p)));
        }
        let issues = fresh.rebuild([&one, &one]);
        assert_eq!(issues.len(), 2, "{issues:?}");
    }
}
