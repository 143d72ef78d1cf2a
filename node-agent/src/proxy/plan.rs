//! The planner: Services and EndpointSlices in, the `ip knit` table out.
//!
//! The table's fixed part (base chains, dispatch maps, reject and
//! masquerade chains) is always there; each service port adds map
//! elements and a handful of chains named after it:
//!
//! - `svc-<id>`: entry for ClusterIP traffic (masquerade from outside the
//!   cluster CIDR, then the internal traffic policy's endpoints);
//! - `ext-<id>`: entry for NodePort, externalIP and load balancer traffic
//!   (the external traffic policy);
//! - `cluster-<id>` / `local-<id>`: session affinity and the random choice
//!   among all / this node's ready endpoints;
//! - `ep-<id>/<ip>/<port>`: hairpin mark, affinity record, DNAT.
//!
//! HostPorts (`ports[].hostPort` of this node's pods) work as the CNI
//! portmap plugin's do: a `hostports` map keyed by `l4proto . dport` on
//! the node's own addresses sends to `hp-<ns>/<pod>/<proto>/<hostPort>`,
//! which DNATs to the pod.
//!
//! `<id>` is `namespace/name/protocol/port-name` (or `p<port>` for an
//! unnamed port), so an unchanged service keeps byte-identical chains and
//! a partial sync can skip it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Chain, MASQUERADE_MARK, NodeInfo, Ruleset, Set, SetKind, UdpPort};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

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

impl ServicePort {
    fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
    fn local_endpoints(&self) -> Vec<&Endpoint> {
        self.endpoints.iter().filter(|e| e.local).collect()
    }
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
    let ports = service_ports(node, services, slices);
    let mut rs = Ruleset::default();
    fixed(node, &mut rs);
    for sp in &ports {
        service_port(node, sp, &mut rs);
    }
    host_ports(node, pods, &mut rs);
    rs
}

/// The portmap part: node address + hostPort → pod address + containerPort.
fn host_ports(node: &NodeInfo, pods: &[Pod], rs: &mut Ruleset) {
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
            let key = format!("{proto} . {host_port}");
            let map = set_mut(rs, "hostports");
            if map.elements.contains_key(&key) {
                continue;
            }
            let chain_name = format!("hp-{ns}/{name}/{proto}/{host_port}");
            map.elements.insert(key, format!("goto {chain_name}"));
            let mut rules = Vec::new();
            if let Some(host_ip) = host_ip {
                rules.push(format!("ip daddr != {host_ip} return"));
            }
            rules.push(format!("ip saddr {ip} jump mark-for-masquerade"));
            rules.push(format!("meta l4proto {proto} dnat to {ip}:{target}"));
            chain(rs, &chain_name).rules = rules;
        }
    }
}

fn chain<'a>(rs: &'a mut Ruleset, name: &str) -> &'a mut Chain {
    rs.chains.entry(name.to_string()).or_default()
}

fn set_mut<'a>(rs: &'a mut Ruleset, name: &str) -> &'a mut Set {
    rs.sets.get_mut(name).expect("fixed sets exist")
}

/// The part of the table that does not depend on services.
fn fixed(node: &NodeInfo, rs: &mut Ruleset) {
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
    // Numeric priorities: nft 1.0.6 accepts the names (dstnat = -100,
    // srcnat = 100) only on some hooks. DNAT at dstnat; the checks just
    // after it, so that a packet still
    // carrying a ClusterIP was not taken by any service port, and the
    // reject happens before routing (no route to the service CIDR needed).
    rs.chains.insert(
        "nat-prerouting".into(),
        base("prerouting", "nat", "-100", &["jump services"]),
    );
    rs.chains.insert(
        "nat-output".into(),
        base("output", "nat", "-100", &["jump services"]),
    );
    rs.chains.insert(
        "nat-postrouting".into(),
        base("postrouting", "nat", "100", &["jump masquerading"]),
    );
    rs.chains.insert(
        "filter-prerouting".into(),
        base("prerouting", "filter", "-90", &checks),
    );
    rs.chains.insert(
        "filter-output".into(),
        base("output", "filter", "-90", &checks),
    );

    let not_loopback = "ip daddr != 127.0.0.0/8";
    chain(rs, "services").rules = vec![
        "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
        format!(
            "fib daddr type local {not_loopback} meta l4proto . th dport vmap @service-nodeports"
        ),
        format!("fib daddr type local {not_loopback} meta l4proto . th dport vmap @hostports"),
    ];
    chain(rs, "service-endpoints-check").rules = vec![
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
        format!(
            "fib daddr type local {not_loopback} meta l4proto . th dport vmap @no-endpoint-nodeports"
        ),
    ];
    chain(rs, "cluster-ips-check").rules = vec!["ip daddr @cluster-ips goto reject-chain".into()];
    chain(rs, "reject-chain").rules = vec![
        "meta l4proto tcp reject with tcp reset".into(),
        "reject".into(),
    ];
    chain(rs, "mark-for-masquerade").rules =
        vec![format!("meta mark set meta mark | {MASQUERADE_MARK:#x}")];
    chain(rs, "masquerading").rules = vec![
        format!(
            "meta mark & {MASQUERADE_MARK:#x} != 0 meta mark set meta mark & {:#x} masquerade fully-random",
            !MASQUERADE_MARK
        ),
        // Pods reaching beyond the pod network leave with the node's
        // address; traffic between pods keeps theirs.
        format!(
            "ip saddr {} ip daddr != {} masquerade",
            node.pod_cidr, node.cluster_cidr
        ),
    ];

    let map3 = "type ipv4_addr . inet_proto . inet_service : verdict;";
    let map2 = "type inet_proto . inet_service : verdict;";
    for (name, kind, spec) in [
        ("service-ips", SetKind::Map, map3),
        ("service-nodeports", SetKind::Map, map2),
        ("no-endpoint-services", SetKind::Map, map3),
        ("no-endpoint-nodeports", SetKind::Map, map2),
        ("hostports", SetKind::Map, map2),
        ("cluster-ips", SetKind::Set, "type ipv4_addr;"),
    ] {
        rs.sets.insert(
            name.into(),
            Set {
                kind,
                spec: spec.into(),
                dynamic: false,
                elements: BTreeMap::new(),
            },
        );
    }
}

/// The map elements and chains of one service port.
fn service_port(node: &NodeInfo, sp: &ServicePort, rs: &mut Ruleset) {
    let (id, proto, port) = (&sp.id, sp.proto, sp.port);
    for ip in &sp.cluster_ips {
        set_mut(rs, "cluster-ips")
            .elements
            .insert(ip.to_string(), String::new());
    }
    if sp.proto == "udp" {
        rs.udp.insert(
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
        let reject = "goto reject-chain".to_string();
        for ip in sp.cluster_ips.iter().chain(&sp.external_ips) {
            set_mut(rs, "no-endpoint-services")
                .elements
                .insert(format!("{ip} . {proto} . {port}"), reject.clone());
        }
        if let Some(np) = sp.node_port {
            set_mut(rs, "no-endpoint-nodeports")
                .elements
                .insert(format!("{proto} . {np}"), reject.clone());
        }
        return;
    }

    let svc = format!("svc-{id}");
    let ext = format!("ext-{id}");
    let cluster = format!("cluster-{id}");
    let local = format!("local-{id}");
    let locals = sp.local_endpoints();
    let mut used: BTreeSet<&Endpoint> = BTreeSet::new();
    let mut need_cluster = false;
    let mut need_local = false;

    // ClusterIP entry.
    for ip in &sp.cluster_ips {
        set_mut(rs, "service-ips")
            .elements
            .insert(format!("{ip} . {proto} . {port}"), format!("goto {svc}"));
    }
    let mut rules = vec![format!(
        "ip saddr != {} jump mark-for-masquerade",
        node.cluster_cidr
    )];
    if sp.internal_local {
        if locals.is_empty() {
            rules.push("drop".into());
        } else {
            rules.push(format!("goto {local}"));
            need_local = true;
        }
    } else {
        rules.push(format!("goto {cluster}"));
        need_cluster = true;
    }
    chain(rs, &svc).rules = rules;

    // NodePort / externalIP / load balancer entry.
    if sp.has_external() {
        for ip in &sp.external_ips {
            set_mut(rs, "service-ips")
                .elements
                .insert(format!("{ip} . {proto} . {port}"), format!("goto {ext}"));
        }
        if let Some(np) = sp.node_port {
            set_mut(rs, "service-nodeports")
                .elements
                .insert(format!("{proto} . {np}"), format!("goto {ext}"));
        }
        let rules = if sp.external_local {
            // Pods and the node itself are internal clients: they take the
            // ClusterIP path; outside clients keep their address and reach
            // only this node's endpoints.
            let mut rules = vec![
                format!("ip saddr {} goto {svc}", node.cluster_cidr),
                "fib saddr type local jump mark-for-masquerade".into(),
                format!("fib saddr type local goto {svc}"),
            ];
            if locals.is_empty() {
                rules.push("drop".into());
            } else {
                rules.push(format!("goto {local}"));
                need_local = true;
            }
            rules
        } else {
            need_cluster = true;
            vec!["jump mark-for-masquerade".into(), format!("goto {cluster}")]
        };
        chain(rs, &ext).rules = rules;
    }

    let all: Vec<&Endpoint> = sp.endpoints.iter().collect();
    for (name, needed, eps) in [
        (&cluster, need_cluster, &all),
        (&local, need_local, &locals),
    ] {
        if !needed {
            continue;
        }
        let mut rules = Vec::new();
        if sp.affinity.is_some() {
            for ep in eps.iter() {
                rules.push(format!(
                    "ip saddr @{} goto {}",
                    affinity_set(id, ep),
                    endpoint_chain(id, ep)
                ));
            }
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
        chain(rs, name).rules = rules;
        used.extend(eps.iter().copied());
    }

    for ep in used {
        let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", ep.ip)];
        if let Some(timeout) = sp.affinity {
            let set = affinity_set(id, ep);
            rules.push(format!("update @{set} {{ ip saddr }}"));
            rs.sets.insert(
                set,
                Set {
                    kind: SetKind::Set,
                    spec: format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;"),
                    dynamic: true,
                    elements: BTreeMap::new(),
                },
            );
        }
        rules.push(format!(
            "meta l4proto {proto} dnat to {}:{}",
            ep.ip, ep.port
        ));
        chain(rs, &endpoint_chain(id, ep)).rules = rules;
    }
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

/// Every IPv4 service port with its ready endpoints, in a stable order.
fn service_ports(
    node: &NodeInfo,
    services: &[Service],
    slices: &[EndpointSlice],
) -> Vec<ServicePort> {
    // (namespace, service) → the slices that belong to it.
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        by_service
            .entry((ns, svc.as_str()))
            .or_default()
            .push(slice);
    }

    let mut out = Vec::new();
    for service in services {
        let (Some(name), Some(spec)) = (service.metadata.name.as_deref(), service.spec.as_ref())
        else {
            continue;
        };
        let ns = service.metadata.namespace.as_deref().unwrap_or("default");
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
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
            continue;
        }
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
        let svc_slices = by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);

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
            for slice in svc_slices {
                // The slice's port of the same name and protocol says
                // where the endpoints listen (the resolved targetPort).
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
                external_local: external
                    && spec.external_traffic_policy.as_deref() == Some("Local"),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                affinity,
                endpoints,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
