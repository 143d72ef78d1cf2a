//! The imperative shell for the underlay: makes the kernel hold a
//! [`LabPlan`]'s namespaces and links, and removes them again.
//!
//! The switch is a bridge inside the lab's own switch namespace, so the
//! root namespace gets exactly one link: the host end of a veth pair whose
//! other end is a port of that bridge, holding the subnet's first address
//! (and, from the kernel, the connected route). Every node and the
//! external client hang on the bridge by a veth pair too, created from the
//! switch namespace with the far end (`eth0`) made directly inside the
//! member's namespace.
//!
//! Nothing here turns on forwarding or NAT anywhere, and the members get
//! no default route: their only routes are the underlay subnet (from the
//! kernel) and, on nodes, the service CIDR on-link through `eth0` (so that
//! a node-local connection to a ClusterIP finds a route and meets the
//! agent's DNAT rules). A packet for any other address fails with "network
//! unreachable" inside the lab, whatever the host's own forwarding
//! settings are.
//!
//! All calls block (netlink threads); async callers use `spawn_blocking`.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use knit_node_agent::netlink::{LinkChange, LinuxNetlink, Netlink, Route, ipv4_addresses};
use knit_node_agent::netns::{LinuxNetns, Netns};

use crate::plan::{BRIDGE, HOST_PORT, LabPlan, MTU, Member, UPLINK, netns_prefix};
use crate::{Error, Result};

/// `RTPROT_STATIC`: the lab's routes are an admin's, not the agent's
/// (whose routes carry `PROTO_KNIT` and may be swept as stale by it).
const PROTO_STATIC: u8 = 4;

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Refuses to build `plan` if its namespaces or host link exist, or if its
/// subnet is already in use in the root namespace (another lab, a docker
/// bridge, the host's own network).
pub fn check_free(plan: &LabPlan) -> Result<()> {
    let netns = LinuxNetns::new();
    let prefix = netns_prefix(&plan.name);
    if let Some(found) = netns.list()?.into_iter().find(|n| n.starts_with(&prefix)) {
        return Err(Error::Exists(format!(
            "lab {:?} has leftovers (network namespace {found}); run `knit lab down --name {}` first",
            plan.name, plan.name
        )));
    }
    let root = LinuxNetlink::current()?;
    for link in root.links()? {
        if link.name == plan.host_link {
            return Err(Error::Exists(format!(
                "lab {:?} has leftovers (link {}); run `knit lab down --name {}` first",
                plan.name, link.name, plan.name
            )));
        }
        for addr in ipv4_addresses(&root.addresses(&link.name)?) {
            if overlaps(addr.trunc(), plan.subnet) {
                return Err(Error::Exists(format!(
                    "subnet {} overlaps {addr} on link {} of this host; choose another --subnet",
                    plan.subnet, link.name
                )));
            }
        }
    }
    for route in root.routes()? {
        if route.dst.prefix_len() > 0 && overlaps(route.dst, plan.subnet) {
            return Err(Error::Exists(format!(
                "subnet {} overlaps the host's route {route}; choose another --subnet",
                plan.subnet
            )));
        }
    }
    Ok(())
}

fn up() -> LinkChange {
    LinkChange {
        up: Some(true),
        ..LinkChange::default()
    }
}

fn port_of(bridge: &str) -> LinkChange {
    LinkChange {
        up: Some(true),
        master: Some(Some(bridge.to_string())),
        ..LinkChange::default()
    }
}

/// Builds the underlay of `plan`; `progress` hears of each piece. Assumes
/// [`check_free`] passed; a failure leaves what was made for `down`.
pub fn apply(plan: &LabPlan, progress: &mut dyn FnMut(String)) -> Result<()> {
    let netns = LinuxNetns::new();
    netns.create(&plan.switch_netns)?;
    let switch = netns.open(&plan.switch_netns)?;
    switch.set_link("lo", &up())?;
    switch.add_bridge(BRIDGE)?;
    switch.set_link(BRIDGE, &up())?;

    let root = LinuxNetlink::current()?;
    root.add_veth(&plan.host_link, MTU, HOST_PORT, &plan.switch_netns)?;
    switch.set_link(HOST_PORT, &port_of(BRIDGE))?;
    root.add_address(&plan.host_link, plan.host_address.into())?;
    root.set_link(&plan.host_link, &up())?;
    progress(format!(
        "switch {} up, host side {} on {}",
        plan.switch_netns, plan.host_address, plan.host_link
    ));

    let service_cidr: Ipv4Net = knit_ipam::DEFAULT_SERVICE_CIDR
        .parse()
        .expect("the default service CIDR is IPv4");
    for node in &plan.nodes {
        attach(&netns, &switch, &node.member, Some(service_cidr))?;
        progress(format!(
            "node {} in {} at {}",
            node.member.name,
            node.member.netns,
            node.member.address.addr()
        ));
    }
    attach(&netns, &switch, &plan.external, None)?;
    progress(format!(
        "external host in {} at {}",
        plan.external.netns,
        plan.external.address.addr()
    ));
    Ok(())
}

/// Makes `member`'s namespace and plugs it into the switch.
fn attach(
    netns: &LinuxNetns,
    switch: &LinuxNetlink,
    member: &Member,
    service_cidr: Option<Ipv4Net>,
) -> Result<()> {
    netns.create(&member.netns)?;
    switch.add_veth(&member.port, MTU, UPLINK, &member.netns)?;
    switch.set_link(&member.port, &port_of(BRIDGE))?;
    let inside = netns.open(&member.netns)?;
    inside.set_link("lo", &up())?;
    inside.add_address(UPLINK, member.address.into())?;
    inside.set_link(UPLINK, &up())?;
    if let Some(dst) = service_cidr {
        inside.add_route(&Route {
            dst,
            via: None::<Ipv4Addr>,
            dev: Some(UPLINK.to_string()),
            proto: PROTO_STATIC,
        })?;
    }
    Ok(())
}

/// What [`remove`] found and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// The root namespace's link, if it was there.
    pub links: Vec<String>,
    /// The namespaces, the agents' sandboxes included.
    pub namespaces: Vec<String>,
}

/// The names of lab `name`'s namespaces that exist now (sandboxes too).
pub fn lab_namespaces(name: &str) -> Result<Vec<String>> {
    let prefix = netns_prefix(name);
    Ok(LinuxNetns::new()
        .list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect())
}

/// Removes lab `name`'s host link and every namespace with its prefix.
/// Processes inside must be gone first, or they keep their namespace
/// alive (invisible, but not freed) until they exit.
pub fn remove(name: &str, host_link: &str) -> Result<Removed> {
    let mut removed = Removed::default();
    let root = LinuxNetlink::current()?;
    if root.link(host_link)?.is_some() {
        match root.delete_link(host_link) {
            Ok(()) => removed.links.push(host_link.to_string()),
            // Gone meanwhile: its switch namespace went first.
            Err(err) if root.link(host_link)?.is_none() => drop(err),
            Err(err) => return Err(err.into()),
        }
    }
    let netns = LinuxNetns::new();
    for ns in lab_namespaces(name)? {
        if netns.delete(&ns)? {
            removed.namespaces.push(ns);
        }
    }
    Ok(removed)
}
