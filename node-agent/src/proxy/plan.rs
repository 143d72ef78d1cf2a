//! The planner: Services and EndpointSlices in, the `ip knit` table out,
//! one service at a time.
//!
//! The shape is chosen for what `nft` costs at 10,000 services: every
//! chain in the table is read back by the `nft` CLI before it applies any
//! rule or element command, and every anonymous set costs the kernel a
//! scan of the table's sets. So a plain service port owns no chain and no
//! set, only map elements:
//!
//! - `service-ips` (`daddr . l4proto . dport`, ClusterIPs, externalIPs,
//!   load balancer IPs) and `service-nodeports` (`l4proto . dport` on the
//!   node's own addresses) send the first packet of a connection to a
//!   *pick chain* shared by every service with the same protocol, number
//!   of endpoints and path: `cluster-<proto>-N`, `external-<proto>-N`,
//!   `external-local-<proto>-N`, `nodeport-<proto>-N`,
//!   `nodeport-local-<proto>-N`;
//! - the pick chain marks for masquerade as the path requires and DNATs
//!   with `numgen random mod N` looked up, together with the packet's own
//!   `daddr . dport` (or `dport` for NodePorts), in the
//!   `endpoints-<proto>` (`nodeport-endpoints-<proto>`) map: slot `i` of
//!   a service address is its `i`-th ready endpoint.
//!
//! An endpoint change is therefore a handful of element commands (the
//! slots, and the dispatch element when N changes) and never reads or
//! writes a chain of another service. A pick chain comes with those of
//! the eight counts below it, and once planned stays for the planner's
//! life even when no service uses it, so that counts that come and go
//! need no chain commands at all. Hairpin traffic (a pod reaching
//! itself through a service) is masqueraded in postrouting by the
//! `hairpin` set, an `addr . addr` pair per endpoint in the node's pod
//! CIDR.
//!
//! Services with `sessionAffinity: ClientIP` keep kube-proxy's shape,
//! which needs per-endpoint state: entry chains `aff-cluster-<id>` /
//! `aff-ext-<id>`, a chain `ep-<id>/<ip>/<port>` and a dynamic set
//! `aff-<id>/<ip>/<port>` (clients seen, with the timeout) per endpoint.
//!
//! HostPorts (`ports[].hostPort` of this node's pods) work as the CNI
//! portmap plugin's do: a `hostports` map keyed by `l4proto . dport` on
//! the node's own addresses sends to `hp-<ns>/<pod>/<proto>/<hostPort>`,
//! which DNATs to the pod.
//!
//! The cluster DNS address (`NodeInfo::local_dns`) is answered on every
//! node by the agent itself, so it is left out of every map and its port
//! 53 traffic is `notrack`ed in raw-priority chains (as NodeLocal
//! DNSCache does), with no conntrack entry to race on.
//!
//! [`Planner`] keeps each service's part ("fragment") and the composed
//! [`Ruleset`]; a change replans one service and records what it touched,
//! so that neither planning nor the transaction grows with the table.
//! `<id>` is `namespace/name/protocol/port-name` (or `p<port>` for an
//! unnamed port).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Chain, MASQUERADE_MARK, NodeInfo, Ruleset, Set, SetKind, Touched, UdpPort};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;
/// The owner of the table's fixed part; sorts before every other owner.
const FIXED: &str = "";
/// Below this many touched elements the list is always kept.
const TOUCHED_ELEMENTS_FLOOR: usize = 1024;
/// The owner of the HostPort part.
const HOSTPORTS: &str = "hostports";
/// How many smaller counts come with a new pick chain.
const LOWER_PICK_CHAINS: usize = 8;

/// One ready endpoint of a service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    ip: Ipv4Addr,
    port: u16,
    local: bool,
}

/// A service port, parsed once from the API objects.
#[derive(Clone, Debug)]
struct ServicePort {
    /// `namespace/name/protocol/port-name`.
    id: String,
    /// `tcp`, `udp` or `sctp`.
    proto: &'static str,
    port: u16,
    node_port: Option<u16>,
    cluster_ips: Vec<Ipv4Addr>,
    /// externalIPs and load balancer ingress IPs.
    external_ips: Vec<Ipv4Addr>,
    external_local: bool,
    internal_local: bool,
    /// Client-IP affinity timeout in seconds.
    affinity: Option<u32>,
    endpoints: BTreeSet<Endpoint>,
}

/// The `healthCheckNodePort` of an `externalTrafficPolicy: Local`
/// service, with what it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// Ready endpoints of the service on this node (distinct addresses).
    pub local_endpoints: usize,
}

/// What one owner (the fixed part, a service, the HostPorts) puts into
/// the table.
#[derive(Clone, Debug, Default, PartialEq)]
struct Fragment {
    chains: BTreeMap<String, Chain>,
    /// Declarations; elements of owned sets are never planned.
    sets: BTreeMap<String, Set>,
    /// `(set, key) → value`.
    elements: BTreeMap<(String, String), String>,
    udp: BTreeMap<String, UdpPort>,
    health: Option<(u16, HealthCheck)>,
}

impl Fragment {
    fn element(&mut self, set: &str, key: String, value: impl Into<String>) {
        self.elements
            .entry((set.to_string(), key))
            .or_insert_with(|| value.into());
    }
}

/// Who plans one element. Nearly always a single owner, which then costs
/// no map of its own (a full table holds some 120,000 elements); the
/// value that counts is the first owner's by name.
#[derive(Debug)]
enum ElementOwners {
    One(Arc<str>),
    Many(BTreeSet<Arc<str>>),
}

impl ElementOwners {
    fn add(&mut self, owner: &Arc<str>) {
        match self {
            ElementOwners::One(one) if one == owner => {}
            ElementOwners::One(one) => {
                *self = ElementOwners::Many(BTreeSet::from([one.clone(), owner.clone()]));
            }
            ElementOwners::Many(all) => {
                all.insert(owner.clone());
            }
        }
    }

    fn remove(&mut self, owner: &str) {
        match self {
            ElementOwners::One(one) if **one == *owner => {
                *self = ElementOwners::Many(BTreeSet::new());
            }
            ElementOwners::One(_) => {}
            ElementOwners::Many(all) => {
                all.remove(owner);
                if all.len() == 1 {
                    let one = all.pop_first().expect("one owner");
                    *self = ElementOwners::One(one);
                }
            }
        }
    }

    /// The owner whose value counts; `None` when nobody plans it.
    fn first(&self) -> Option<Arc<str>> {
        match self {
            ElementOwners::One(one) => Some(one.clone()),
            ElementOwners::Many(all) => all.first().cloned(),
        }
    }
}

/// The table, kept up to date one service at a time. Feed it the API's
/// objects as they change; read [`Planner::ruleset`] and
/// [`Planner::take_touched`] to sync (see
/// [`Proxier::sync_planned`](super::Proxier::sync_planned)).
#[derive(Debug)]
pub struct Planner {
    node: NodeInfo,
    /// Services by `ns/name`.
    services: HashMap<String, Service>,
    /// EndpointSlices by `ns/slice-name`, with the `ns/service` they
    /// belong to.
    slices: HashMap<String, (String, EndpointSlice)>,
    /// `ns/service` → its slices' keys.
    by_service: HashMap<String, BTreeSet<String>>,
    fragments: HashMap<String, Fragment>,
    chain_owners: HashMap<String, BTreeMap<String, Chain>>,
    set_owners: HashMap<String, BTreeMap<String, Set>>,
    element_owners: HashMap<(String, String), ElementOwners>,
    rs: Ruleset,
    touched: Touched,
}

impl Planner {
    /// A planner holding the fixed part of `node`'s table and no service.
    pub fn new(node: NodeInfo) -> Self {
        let mut planner = Planner {
            node,
            services: HashMap::new(),
            slices: HashMap::new(),
            by_service: HashMap::new(),
            fragments: HashMap::new(),
            chain_owners: HashMap::new(),
            set_owners: HashMap::new(),
            element_owners: HashMap::new(),
            rs: Ruleset::default(),
            touched: Touched::default(),
        };
        let fixed = fixed(&planner.node);
        planner.install(FIXED, fixed);
        planner
    }

    /// The node it plans for.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Plans for another node description (a new podCIDR, say): the
    /// fixed part and every service are planned again.
    pub fn set_node(&mut self, node: NodeInfo) {
        if node == self.node {
            return;
        }
        self.node = node;
        let fixed = fixed(&self.node);
        self.install(FIXED, fixed);
        let keys: Vec<String> = self.services.keys().cloned().collect();
        for key in keys {
            self.refresh(&key);
        }
        // Pick chains no service uses follow the node too.
        let idle: Vec<String> = self
            .rs
            .chains
            .keys()
            .filter(|name| is_pick_chain(name) && !self.chain_owners.contains_key(*name))
            .cloned()
            .collect();
        for name in idle {
            if let Some((path, proto, n)) = Path::of_pick_chain(&name) {
                let chain = path.pick_chain(&self.node, proto, n);
                if self.rs.chains.get(&name) != Some(&chain) {
                    self.rs.chains.insert(name.clone(), chain);
                    self.touched.chains.insert(name);
                }
            }
        }
    }

    /// The whole table as planned now.
    pub fn ruleset(&self) -> &Ruleset {
        &self.rs
    }

    /// What changed in [`Planner::ruleset`] since the last call.
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    /// The health check servers the node must run: port → what to answer.
    pub fn health_checks(&self) -> BTreeMap<u16, HealthCheck> {
        let mut out = BTreeMap::new();
        let mut owners: Vec<&String> = self.fragments.keys().collect();
        owners.sort();
        for owner in owners {
            if let Some((port, check)) = &self.fragments[owner].health {
                out.entry(*port).or_insert_with(|| check.clone());
            }
        }
        out
    }

    /// A Service was added or changed.
    pub fn apply_service(&mut self, service: &Service) {
        let key = object_key(
            service.metadata.namespace.as_deref(),
            &service.metadata.name,
        );
        self.services.insert(key.clone(), service.clone());
        self.refresh(&key);
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = format!("{namespace}/{name}");
        if self.services.remove(&key).is_some() {
            self.refresh(&key);
        }
    }

    /// Makes the set of Services exactly `services` (after a relist).
    pub fn reset_services(&mut self, services: &[Service]) {
        let fresh: BTreeSet<String> = services
            .iter()
            .map(|s| object_key(s.metadata.namespace.as_deref(), &s.metadata.name))
            .collect();
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|k| !fresh.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.services.remove(&key);
            self.refresh(&key);
        }
        for service in services {
            self.apply_service(service);
        }
    }

    /// An EndpointSlice was added or changed.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        let key = object_key(Some(ns), &slice.metadata.name);
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .map(|s| format!("{ns}/{s}"));
        let before = self.forget_slice(&key);
        if let Some(service) = service {
            self.by_service
                .entry(service.clone())
                .or_default()
                .insert(key.clone());
            self.slices.insert(key, (service.clone(), slice.clone()));
            if let Some(before) = before
                && before != service
            {
                self.refresh(&before);
            }
            self.refresh(&service);
        } else if let Some(before) = before {
            self.refresh(&before);
        }
    }

    /// An EndpointSlice was deleted.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        if let Some(service) = self.forget_slice(&format!("{namespace}/{name}")) {
            self.refresh(&service);
        }
    }

    /// Makes the set of EndpointSlices exactly `slices` (after a relist).
    pub fn reset_slices(&mut self, slices: &[EndpointSlice]) {
        let fresh: BTreeSet<String> = slices
            .iter()
            .map(|s| object_key(s.metadata.namespace.as_deref(), &s.metadata.name))
            .collect();
        let gone: Vec<String> = self
            .slices
            .keys()
            .filter(|k| !fresh.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(service) = self.forget_slice(&key) {
                self.refresh(&service);
            }
        }
        for slice in slices {
            if self
                .slices
                .get(&object_key(
                    slice.metadata.namespace.as_deref(),
                    &slice.metadata.name,
                ))
                .is_some_and(|(_, s)| s == slice)
            {
                continue;
            }
            self.apply_slice(slice);
        }
    }

    /// The pods whose HostPorts this node serves (others are skipped, see
    /// [`desired_with_pods`]); replaces the previous list.
    pub fn set_pods(&mut self, pods: &[Pod]) {
        let fragment = host_ports(&self.node, pods);
        self.install(HOSTPORTS, fragment);
    }

    /// Drops a slice from the indexes; the service it belonged to.
    fn forget_slice(&mut self, key: &str) -> Option<String> {
        let (service, _) = self.slices.remove(key)?;
        if let Some(keys) = self.by_service.get_mut(&service) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_service.remove(&service);
            }
        }
        Some(service)
    }

    /// Plans the service `ns/name` again from what is known of it.
    fn refresh(&mut self, key: &str) {
        let fragment = match self.services.get(key) {
            Some(service) => {
                let slices: Vec<&EndpointSlice> = self
                    .by_service
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.slices.get(k).map(|(_, s)| s))
                    .collect();
                let owner = format!("svc:{key}");
                service_fragment(&self.node, service, &slices, self.fragments.get(&owner))
            }
            None => Fragment::default(),
        };
        self.install(&format!("svc:{key}"), fragment);
    }

    /// Replaces what `owner` puts into the table by `new`, keeping the
    /// composed ruleset and the touched record current.
    fn install(&mut self, owner: &str, new: Fragment) {
        let old = self.fragments.remove(owner).unwrap_or_default();
        if old == new {
            if new != Fragment::default() {
                self.fragments.insert(owner.to_string(), new);
            }
            return;
        }
        // Chains.
        let mut new_chains = Vec::new();
        let names: BTreeSet<&String> = old.chains.keys().chain(new.chains.keys()).collect();
        for name in names {
            let (was, is) = (old.chains.get(name), new.chains.get(name));
            if was == is {
                continue;
            }
            let owners = self.chain_owners.entry(name.clone()).or_default();
            match is {
                Some(chain) => owners.insert(owner.to_string(), chain.clone()),
                None => owners.remove(owner),
            };
            let effective = owners.values().next().cloned();
            if owners.is_empty() {
                self.chain_owners.remove(name);
            }
            // A pick chain stays when its last service moves on: unused,
            // it costs the kernel nothing, while deleting it and adding
            // it back when an endpoint count returns costs `nft` a read
            // of the whole table each time.
            let effective = effective.or_else(|| {
                is_pick_chain(name)
                    .then(|| self.rs.chains.get(name).cloned())
                    .flatten()
            });
            if self.rs.chains.get(name) != effective.as_ref() {
                match effective {
                    Some(chain) => {
                        if self.rs.chains.insert(name.clone(), chain).is_none() {
                            new_chains.push(name.clone());
                        }
                    }
                    None => {
                        self.rs.chains.remove(name);
                    }
                }
                self.touched.chains.insert(name.clone());
            }
        }
        // A new pick chain comes with the smaller counts of its kind just
        // below it: a service that loses an endpoint or a few then needs
        // no chain that is not there yet (a chain is written by `nft`,
        // which first reads the whole table back), only elements.
        for name in new_chains {
            let Some((path, proto, n)) = Path::of_pick_chain(&name) else {
                continue;
            };
            for k in n.saturating_sub(LOWER_PICK_CHAINS).max(1)..n {
                let lower = path.chain(proto, k);
                if !self.rs.chains.contains_key(&lower) {
                    let chain = path.pick_chain(&self.node, proto, k);
                    self.rs.chains.insert(lower.clone(), chain);
                    self.touched.chains.insert(lower);
                }
            }
        }
        // Set declarations.
        let names: BTreeSet<&String> = old.sets.keys().chain(new.sets.keys()).collect();
        for name in names {
            let (was, is) = (old.sets.get(name), new.sets.get(name));
            if was == is {
                continue;
            }
            let owners = self.set_owners.entry(name.clone()).or_default();
            match is {
                Some(set) => owners.insert(owner.to_string(), set.clone()),
                None => owners.remove(owner),
            };
            let effective = owners.values().next().cloned();
            if owners.is_empty() {
                self.set_owners.remove(name);
            }
            match (effective, self.rs.sets.get_mut(name)) {
                (None, Some(_)) => {
                    self.rs.sets.remove(name);
                    self.touched.sets.insert(name.clone());
                }
                (Some(decl), Some(current)) => {
                    if (current.kind, &current.spec, current.dynamic)
                        != (decl.kind, &decl.spec, decl.dynamic)
                    {
                        current.kind = decl.kind;
                        current.spec = decl.spec;
                        current.dynamic = decl.dynamic;
                        self.touched.sets.insert(name.clone());
                    }
                }
                (Some(decl), None) => {
                    self.rs.sets.insert(name.clone(), decl);
                    self.touched.sets.insert(name.clone());
                }
                (None, None) => {}
            }
        }
        // Elements. The owner record holds names only: each owner's value
        // is in its fragment (the one being installed is `new`).
        let me: Arc<str> = Arc::from(owner);
        let keys: BTreeSet<&(String, String)> =
            old.elements.keys().chain(new.elements.keys()).collect();
        for key in keys {
            let (was, is) = (old.elements.get(key), new.elements.get(key));
            if was == is {
                continue;
            }
            let first = match self.element_owners.get_mut(key) {
                None => {
                    if is.is_some() {
                        self.element_owners
                            .insert(key.clone(), ElementOwners::One(me.clone()));
                    }
                    is.map(|_| me.clone())
                }
                Some(owners) => {
                    if is.is_some() {
                        owners.add(&me);
                    } else {
                        owners.remove(owner);
                    }
                    let first = owners.first();
                    if first.is_none() {
                        self.element_owners.remove(key);
                    }
                    first
                }
            };
            let effective = first.and_then(|first| {
                if *first == *owner {
                    is
                } else {
                    self.fragments
                        .get(&*first)
                        .and_then(|f| f.elements.get(key))
                }
            });
            let Some(set) = self.rs.sets.get_mut(&key.0) else {
                continue;
            };
            if set.elements.get(&key.1) != effective {
                match effective {
                    Some(value) => set.elements.insert(key.1.clone(), value.clone()),
                    None => set.elements.remove(&key.1),
                };
                if !self.touched.elements_all {
                    self.touched.elements.insert(key.clone());
                    self.cap_touched();
                }
            }
        }
        // UDP ports: ids are unique to their service.
        let ids: BTreeSet<&String> = old.udp.keys().chain(new.udp.keys()).collect();
        for id in ids {
            let (was, is) = (old.udp.get(id), new.udp.get(id));
            if was == is {
                continue;
            }
            match is {
                Some(port) => self.rs.udp.insert(id.clone(), port.clone()),
                None => self.rs.udp.remove(id),
            };
            self.touched.udp.insert(id.clone());
        }
        if new != Fragment::default() {
            self.fragments.insert(owner.to_string(), new);
        }
    }
}

impl Planner {
    /// Gives up listing touched elements once they are more than half the
    /// table: the next sync is then a full one, as cheap as a partial
    /// one of that size, and the list would be thrown away. Checked at
    /// powers of two, so the count of the table's elements stays off the
    /// per-element path.
    fn cap_touched(&mut self) {
        let n = self.touched.elements.len();
        if n < TOUCHED_ELEMENTS_FLOOR || !n.is_power_of_two() {
            return;
        }
        let total: usize = self.rs.sets.values().map(|s| s.elements.len()).sum();
        if n * 2 > total {
            self.touched.elements_all = true;
            self.touched.elements.clear();
        }
    }
}

fn object_key(namespace: Option<&str>, name: &Option<String>) -> String {
    format!(
        "{}/{}",
        namespace.unwrap_or("default"),
        name.as_deref().unwrap_or("")
    )
}

/// The desired `ip knit` table for `node`, given every Service and
/// EndpointSlice of the cluster. Services without an IPv4 ClusterIP
/// (headless, ExternalName) get no rules; IPv6 addresses and endpoints are
/// ignored until the `ip6` table exists.
pub fn desired(node: &NodeInfo, services: &[Service], slices: &[EndpointSlice]) -> Ruleset {
    desired_with_pods(node, services, slices, &[])
}

/// [`desired`] plus the HostPorts of `pods` that run on this node (pods
/// of other nodes, host-network pods and pods without an IPv4 address are
/// skipped; when two pods claim the same protocol and port, the first by
/// namespace/name wins).
pub fn desired_with_pods(
    node: &NodeInfo,
    services: &[Service],
    slices: &[EndpointSlice],
    pods: &[Pod],
) -> Ruleset {
    let mut planner = Planner::new(node.clone());
    for slice in slices {
        planner.apply_slice(slice);
    }
    for service in services {
        planner.apply_service(service);
    }
    planner.set_pods(pods);
    planner.rs
}

/// The portmap part: node address + hostPort → pod address + containerPort.
fn host_ports(node: &NodeInfo, pods: &[Pod]) -> Fragment {
    let mut out = Fragment::default();
    let mut mine: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            let spec = p.spec.as_ref();
            spec.and_then(|s| s.node_name.as_deref()) == Some(node.name.as_str())
                && !spec.and_then(|s| s.host_network).unwrap_or(false)
        })
        .collect();
    mine.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    for pod in mine {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let containers = pod.spec.iter().flat_map(|s| &s.containers);
        for port in containers.flat_map(|c| c.ports.iter().flatten()) {
            let (Some(proto), Some(host_port), Some(target)) = (
                proto_name(port.protocol.as_deref()),
                port.host_port.and_then(port_u16),
                port_u16(port.container_port),
            ) else {
                continue;
            };
            let host_ip = port
                .host_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                .filter(|ip| !ip.is_unspecified());
            let key = ("hostports".to_string(), format!("{proto} . {host_port}"));
            if out.elements.contains_key(&key) {
                continue;
            }
            let chain_name = format!("hp-{ns}/{name}/{proto}/{host_port}");
            out.elements.insert(key, format!("goto {chain_name}"));
            let mut rules = Vec::new();
            if let Some(host_ip) = host_ip {
                rules.push(format!("ip daddr != {host_ip} return"));
            }
            rules.push(format!("ip saddr {ip} jump mark-for-masquerade"));
            rules.push(format!("meta l4proto {proto} dnat to {ip}:{target}"));
            out.chains.insert(chain_name, Chain { base: None, rules });
        }
    }
    out
}

/// The part of the table that does not depend on services.
fn fixed(node: &NodeInfo) -> Fragment {
    let mut out = Fragment::default();
    let base = |hook: &str, kind: &str, priority: &str, rules: &[&str]| Chain {
        base: Some(format!(
            "type {kind} hook {hook} priority {priority}; policy accept;"
        )),
        rules: rules.iter().map(|r| r.to_string()).collect(),
    };
    let checks = [
        "ct state new jump service-endpoints-check",
        "ct state new jump cluster-ips-check",
    ];
    let chains = &mut out.chains;
    // Numeric priorities: nft 1.0.6 accepts the names (dstnat = -100,
    // srcnat = 100) only on some hooks. DNAT at dstnat; the checks just
    // after it, so that a packet still carrying a ClusterIP was not taken
    // by any service port, and the reject happens before routing (no
    // route to the service CIDR needed).
    chains.insert(
        "nat-prerouting".into(),
        base("prerouting", "nat", "-100", &["jump services"]),
    );
    chains.insert(
        "nat-output".into(),
        base("output", "nat", "-100", &["jump services"]),
    );
    chains.insert(
        "nat-postrouting".into(),
        base("postrouting", "nat", "100", &["jump masquerading"]),
    );
    chains.insert(
        "filter-prerouting".into(),
        base("prerouting", "filter", "-90", &checks),
    );
    chains.insert(
        "filter-output".into(),
        base("output", "filter", "-90", &checks),
    );
    if let Some(dns) = node.local_dns {
        // The node answers the cluster DNS address itself: no conntrack
        // entry for its queries, so none can go stale or race (the
        // NodeLocal DNSCache arrangement). Raw priority: before conntrack.
        let to_dns = [
            format!("ip daddr {dns} udp dport 53 notrack"),
            format!("ip daddr {dns} tcp dport 53 notrack"),
        ];
        let mut output = to_dns.to_vec();
        output.push(format!("ip saddr {dns} udp sport 53 notrack"));
        output.push(format!("ip saddr {dns} tcp sport 53 notrack"));
        let raw = |hook: &str, rules: Vec<String>| Chain {
            base: Some(format!(
                "type filter hook {hook} priority -300; policy accept;"
            )),
            rules,
        };
        chains.insert("raw-prerouting".into(), raw("prerouting", to_dns.to_vec()));
        chains.insert("raw-output".into(), raw("output", output));
    }

    let not_loopback = "ip daddr != 127.0.0.0/8";
    let rules = |rules: Vec<String>| Chain { base: None, rules };
    chains.insert(
        "services".into(),
        rules(vec![
            "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
            format!(
                "fib daddr type local {not_loopback} meta l4proto . th dport vmap @service-nodeports"
            ),
            format!("fib daddr type local {not_loopback} meta l4proto . th dport vmap @hostports"),
        ]),
    );
    chains.insert(
        "service-endpoints-check".into(),
        rules(vec![
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
            format!(
                "fib daddr type local {not_loopback} meta l4proto . th dport vmap @no-endpoint-nodeports"
            ),
        ]),
    );
    chains.insert(
        "cluster-ips-check".into(),
        rules(vec!["ip daddr @cluster-ips goto reject-chain".into()]),
    );
    chains.insert(
        "reject-chain".into(),
        rules(vec![
            "meta l4proto tcp reject with tcp reset".into(),
            "reject".into(),
        ]),
    );
    chains.insert(
        "mark-for-masquerade".into(),
        rules(vec![format!(
            "meta mark set meta mark | {MASQUERADE_MARK:#x}"
        )]),
    );
    chains.insert(
        "masquerading".into(),
        rules(vec![
            format!(
                "meta mark & {MASQUERADE_MARK:#x} != 0 meta mark set meta mark & {:#x} masquerade fully-random",
                !MASQUERADE_MARK
            ),
            // A pod reaching itself through a service: without a new
            // source the reply would never leave the pod.
            "ct status dnat ip saddr . ip daddr @hairpin masquerade".into(),
            // Pods reaching beyond the pod network leave with the node's
            // address; traffic between pods keeps theirs.
            format!(
                "ip saddr {} ip daddr != {} masquerade",
                node.pod_cidr, node.cluster_cidr
            ),
        ]),
    );

    let map3 = "type ipv4_addr . inet_proto . inet_service : verdict;";
    let map2 = "type inet_proto . inet_service : verdict;";
    for (name, kind, spec) in [
        ("service-ips", SetKind::Map, map3),
        ("service-nodeports", SetKind::Map, map2),
        ("no-endpoint-services", SetKind::Map, map3),
        ("no-endpoint-nodeports", SetKind::Map, map2),
        ("hostports", SetKind::Map, map2),
        ("cluster-ips", SetKind::Set, "type ipv4_addr;"),
        ("hairpin", SetKind::Set, "type ipv4_addr . ipv4_addr;"),
    ] {
        out.sets.insert(
            name.into(),
            Set {
                kind,
                spec: spec.into(),
                dynamic: false,
                elements: BTreeMap::new(),
            },
        );
    }
    // The endpoint slots, one map per protocol: nft 1.0.6 cannot use a
    // map whose data is `th dport` once it reads it back from the kernel
    // ("conflicting protocols"), so each names its own protocol.
    for proto in ["tcp", "udp", "sctp"] {
        for (name, key) in [
            (
                format!("endpoints-{proto}"),
                format!("ip daddr . {proto} dport"),
            ),
            (
                format!("nodeport-endpoints-{proto}"),
                format!("{proto} dport"),
            ),
        ] {
            out.sets.insert(
                name,
                Set {
                    kind: SetKind::Map,
                    spec: format!("typeof {key} . numgen random mod 1 : ip daddr . {proto} dport;"),
                    dynamic: false,
                    elements: BTreeMap::new(),
                },
            );
        }
    }
    out
}

/// Whether `name` is a pick chain, as [`Path::chain`] names them.
pub(crate) fn is_pick_chain(name: &str) -> bool {
    Path::of_pick_chain(name).is_some()
}

/// How a dispatch element reaches its endpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// ClusterIP: masquerade clients from outside the cluster CIDR.
    Cluster,
    /// externalIP / load balancer IP, `externalTrafficPolicy: Cluster`.
    External,
    /// externalIP / load balancer IP, `Local`: only node-local clients
    /// are masqueraded (so their replies come back).
    ExternalLocal,
    /// NodePort, `Cluster`.
    NodePort,
    /// NodePort, `Local`.
    NodePortLocal,
}

impl Path {
    const ALL: [Path; 5] = [
        Path::Cluster,
        Path::External,
        Path::ExternalLocal,
        Path::NodePort,
        Path::NodePortLocal,
    ];

    fn kind(self) -> &'static str {
        match self {
            Path::Cluster => "cluster",
            Path::External => "external",
            Path::ExternalLocal => "external-local",
            Path::NodePort => "nodeport",
            Path::NodePortLocal => "nodeport-local",
        }
    }

    fn chain(self, proto: &str, n: usize) -> String {
        format!("{}-{proto}-{n}", self.kind())
    }

    /// The path, protocol and endpoint count a pick chain's name says.
    fn of_pick_chain(name: &str) -> Option<(Path, &'static str, usize)> {
        let (head, n) = name.rsplit_once('-')?;
        let n = n.parse().ok()?;
        let (kind, proto) = head.rsplit_once('-')?;
        let proto = ["tcp", "udp", "sctp"].into_iter().find(|p| *p == proto)?;
        let path = Path::ALL.into_iter().find(|p| p.kind() == kind)?;
        Some((path, proto, n))
    }

    fn mark_rule(self, node: &NodeInfo) -> String {
        match self {
            Path::Cluster => format!("ip saddr != {} jump mark-for-masquerade", node.cluster_cidr),
            Path::External | Path::NodePort => "jump mark-for-masquerade".into(),
            Path::ExternalLocal | Path::NodePortLocal => {
                "fib saddr type local jump mark-for-masquerade".into()
            }
        }
    }

    fn is_node_port(self) -> bool {
        matches!(self, Path::NodePort | Path::NodePortLocal)
    }

    /// The map of endpoint slots this path reads.
    fn slots(self, proto: &str) -> String {
        if self.is_node_port() {
            format!("nodeport-endpoints-{proto}")
        } else {
            format!("endpoints-{proto}")
        }
    }

    /// The shared chain that picks among `n` endpoints.
    fn pick_chain(self, node: &NodeInfo, proto: &str, n: usize) -> Chain {
        let key = if self.is_node_port() {
            format!("{proto} dport")
        } else {
            format!("ip daddr . {proto} dport")
        };
        Chain {
            base: None,
            rules: vec![
                self.mark_rule(node),
                format!(
                    "meta l4proto {proto} dnat to {key} . numgen random mod {n} map @{}",
                    self.slots(proto)
                ),
            ],
        }
    }
}

/// The part of the table one Service owns; `prev` is what it owned
/// before, whose endpoint slots are kept where they can be.
fn service_fragment(
    node: &NodeInfo,
    service: &Service,
    slices: &[&EndpointSlice],
    prev: Option<&Fragment>,
) -> Fragment {
    let mut out = Fragment::default();
    for sp in service_ports(node, service, slices) {
        service_port(node, &sp, prev, &mut out);
    }
    if let Some(check) = health_check(node, service, slices) {
        out.health = Some(check);
    }
    out
}

/// The healthCheckNodePort of a Local-policy NodePort / LoadBalancer.
fn health_check(
    node: &NodeInfo,
    service: &Service,
    slices: &[&EndpointSlice],
) -> Option<(u16, HealthCheck)> {
    let spec = service.spec.as_ref()?;
    if spec.external_traffic_policy.as_deref() != Some("Local")
        || !matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
    {
        return None;
    }
    let port = spec.health_check_node_port.and_then(port_u16)?;
    let mut local = BTreeSet::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if ready && ep.node_name.as_deref() == Some(node.name.as_str()) {
                local.extend(ep.addresses.first().cloned());
            }
        }
    }
    Some((
        port,
        HealthCheck {
            namespace: service
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: service.metadata.name.clone().unwrap_or_default(),
            local_endpoints: local.len(),
        },
    ))
}

/// The order of `eps` in the slots `slot_key . i` of map `slots`: as in
/// `prev` where possible, an endpoint that left replaced by the last one
/// (swap-remove) and new ones appended, so that one endpoint more or less
/// rewrites at most two slots instead of shifting all that follow.
fn slot_order<'a>(
    prev: Option<&Fragment>,
    slots: &str,
    slot_key: &str,
    eps: &[&'a Endpoint],
) -> Vec<&'a Endpoint> {
    let value = |ep: &Endpoint| format!("{} . {}", ep.ip, ep.port);
    let mut old = Vec::new();
    if let Some(prev) = prev {
        while let Some(v) = prev
            .elements
            .get(&(slots.to_string(), format!("{slot_key} . {}", old.len())))
        {
            old.push(v.clone());
        }
    }
    if old.is_empty() {
        return eps.to_vec();
    }
    let by_value: HashMap<String, &'a Endpoint> = eps.iter().map(|e| (value(e), *e)).collect();
    let mut order: Vec<Option<&'a Endpoint>> =
        old.iter().map(|v| by_value.get(v).copied()).collect();
    loop {
        while matches!(order.last(), Some(None)) {
            order.pop();
        }
        let Some(hole) = order.iter().position(Option::is_none) else {
            break;
        };
        let last = order.pop().flatten();
        order[hole] = last;
    }
    let mut out: Vec<&'a Endpoint> = order.into_iter().flatten().collect();
    let placed: BTreeSet<&Endpoint> = out.iter().copied().collect();
    out.extend(eps.iter().copied().filter(|e| !placed.contains(e)));
    out
}

/// The map elements (and, with affinity, chains and sets) of one service
/// port.
fn service_port(node: &NodeInfo, sp: &ServicePort, prev: Option<&Fragment>, out: &mut Fragment) {
    let (id, proto, port) = (&sp.id, sp.proto, sp.port);
    for ip in &sp.cluster_ips {
        out.element("cluster-ips", ip.to_string(), "");
    }
    if sp.proto == "udp" {
        out.udp.insert(
            id.clone(),
            UdpPort {
                ips: sp
                    .cluster_ips
                    .iter()
                    .chain(&sp.external_ips)
                    .copied()
                    .collect(),
                port,
                node_port: sp.node_port,
                endpoints: sp.endpoints.iter().map(|e| e.ip).collect(),
            },
        );
    }

    if sp.endpoints.is_empty() {
        // Refused at once instead of a black hole.
        for ip in sp.cluster_ips.iter().chain(&sp.external_ips) {
            out.element(
                "no-endpoint-services",
                format!("{ip} . {proto} . {port}"),
                "goto reject-chain",
            );
        }
        if let Some(np) = sp.node_port {
            out.element(
                "no-endpoint-nodeports",
                format!("{proto} . {np}"),
                "goto reject-chain",
            );
        }
        return;
    }

    // Only this node's pods can loop back through cbr0; host-network
    // endpoints reaching themselves stay on the node.
    for ep in &sp.endpoints {
        if node.pod_cidr.contains(&ep.ip) {
            out.element("hairpin", format!("{} . {}", ep.ip, ep.ip), "");
        }
    }
    let all: Vec<&Endpoint> = sp.endpoints.iter().collect();
    let locals: Vec<&Endpoint> = sp.endpoints.iter().filter(|e| e.local).collect();
    let internal = if sp.internal_local { &locals } else { &all };
    let external = if sp.external_local { &locals } else { &all };
    let (ext_path, np_path) = if sp.external_local {
        (Path::ExternalLocal, Path::NodePortLocal)
    } else {
        (Path::External, Path::NodePort)
    };

    // Each address of the service, with the path it takes.
    let mut entries: Vec<(Option<Ipv4Addr>, Path, &Vec<&Endpoint>)> = Vec::new();
    for ip in &sp.cluster_ips {
        entries.push((Some(*ip), Path::Cluster, internal));
    }
    for ip in &sp.external_ips {
        entries.push((Some(*ip), ext_path, external));
    }
    if sp.node_port.is_some() {
        entries.push((None, np_path, external));
    }
    for (ip, path, eps) in entries {
        let np = sp.node_port.unwrap_or_default();
        let (map, key, slot_key) = match ip {
            Some(ip) => (
                "service-ips",
                format!("{ip} . {proto} . {port}"),
                format!("{ip} . {port}"),
            ),
            None => (
                "service-nodeports",
                format!("{proto} . {np}"),
                np.to_string(),
            ),
        };
        if eps.is_empty() {
            // A Local policy with no endpoint here: dropped, never sent
            // to another node.
            out.element(map, key, "drop");
            continue;
        }
        if let Some(timeout) = sp.affinity {
            let entry = affinity_chains(node, sp, path, eps, timeout, out);
            out.element(map, key, format!("goto {entry}"));
            continue;
        }
        let n = eps.len();
        let chain = path.chain(proto, n);
        out.chains
            .entry(chain.clone())
            .or_insert_with(|| path.pick_chain(node, proto, n));
        out.element(map, key, format!("goto {chain}"));
        let slots = path.slots(proto);
        for (i, ep) in slot_order(prev, &slots, &slot_key, eps).iter().enumerate() {
            out.element(
                &slots,
                format!("{slot_key} . {i}"),
                format!("{} . {}", ep.ip, ep.port),
            );
        }
    }
}

/// kube-proxy's per-endpoint shape for a ClientIP-affinity service
/// port: a client seen recently goes back to its endpoint, a new one is
/// sent at random and recorded. Returns the entry chain for `path`.
fn affinity_chains(
    node: &NodeInfo,
    sp: &ServicePort,
    path: Path,
    eps: &[&Endpoint],
    timeout: u32,
    out: &mut Fragment,
) -> String {
    let id = &sp.id;
    let entry = if path == Path::Cluster {
        format!("aff-cluster-{id}")
    } else {
        format!("aff-ext-{id}")
    };
    if out.chains.contains_key(&entry) {
        return entry;
    }
    let mut rules = vec![path.mark_rule(node)];
    for ep in eps {
        rules.push(format!(
            "ip saddr @{} goto {}",
            affinity_set(id, ep),
            endpoint_chain(id, ep)
        ));
    }
    let choices: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, ep)| format!("{i} : goto {}", endpoint_chain(id, ep)))
        .collect();
    rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        eps.len(),
        choices.join(", ")
    ));
    out.chains
        .insert(entry.clone(), Chain { base: None, rules });
    for ep in eps {
        let set = affinity_set(id, ep);
        out.chains.insert(
            endpoint_chain(id, ep),
            Chain {
                base: None,
                rules: vec![
                    format!("update @{set} {{ ip saddr }}"),
                    format!("meta l4proto {} dnat to {}:{}", sp.proto, ep.ip, ep.port),
                ],
            },
        );
        out.sets.insert(
            set,
            Set {
                kind: SetKind::Set,
                spec: format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;"),
                dynamic: true,
                elements: BTreeMap::new(),
            },
        );
    }
    entry
}

fn endpoint_chain(id: &str, ep: &Endpoint) -> String {
    format!("ep-{id}/{}/{}", ep.ip, ep.port)
}

fn affinity_set(id: &str, ep: &Endpoint) -> String {
    format!("aff-{id}/{}/{}", ep.ip, ep.port)
}

fn proto_name(protocol: Option<&str>) -> Option<&'static str> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

fn port_u16(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// The IPv4 ports of one service with their ready endpoints, in a stable
/// order.
fn service_ports(
    node: &NodeInfo,
    service: &Service,
    slices: &[&EndpointSlice],
) -> Vec<ServicePort> {
    let mut out = Vec::new();
    let (Some(name), Some(spec)) = (service.metadata.name.as_deref(), service.spec.as_ref()) else {
        return out;
    };
    let ns = service.metadata.namespace.as_deref().unwrap_or("default");
    if spec.type_.as_deref() == Some("ExternalName") {
        return out;
    }
    let mut cluster_ips: Vec<Ipv4Addr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    cluster_ips.sort();
    cluster_ips.dedup();
    if cluster_ips.is_empty() {
        return out;
    }
    // The node answers this one itself.
    cluster_ips.retain(|ip| Some(*ip) != node.local_dns);
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .chain(
            service
                .status
                .iter()
                .filter_map(|s| s.load_balancer.as_ref())
                .flat_map(|lb| lb.ingress.iter().flatten())
                .filter_map(|i| i.ip.as_deref()?.parse().ok()),
        )
        .collect();
    external_ips.sort();
    external_ips.dedup();
    let node_ports_allowed = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });

    for port in spec.ports.iter().flatten() {
        let (Some(proto), Some(number)) =
            (proto_name(port.protocol.as_deref()), port_u16(port.port))
        else {
            continue;
        };
        let port_name = port.name.as_deref().unwrap_or("");
        let label = if port_name.is_empty() {
            format!("p{number}")
        } else {
            port_name.to_string()
        };
        let mut endpoints = BTreeSet::new();
        for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
            // The slice's port of the same name and protocol says where
            // the endpoints listen (the resolved targetPort).
            let Some(target) = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && proto_name(p.protocol.as_deref()) == Some(proto)
            }) else {
                continue;
            };
            let Some(target) = target.port.and_then(port_u16) else {
                continue;
            };
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                let Some(ip) = ep.addresses.first().and_then(|a| a.parse().ok()) else {
                    continue;
                };
                if ready {
                    endpoints.insert(Endpoint {
                        ip,
                        port: target,
                        local: ep.node_name.as_deref() == Some(node.name.as_str()),
                    });
                }
            }
        }
        let external = node_ports_allowed || !external_ips.is_empty();
        out.push(ServicePort {
            id: format!("{ns}/{name}/{proto}/{label}"),
            proto,
            port: number,
            node_port: port
                .node_port
                .and_then(port_u16)
                .filter(|_| node_ports_allowed),
            cluster_ips: cluster_ips.clone(),
            external_ips: external_ips.clone(),
            external_local: external && spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            affinity,
            endpoints,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
