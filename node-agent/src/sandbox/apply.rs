//! The imperative shell: make a namespace's links, addresses and routes
//! match a [`NodePlan`] or a [`SandboxPlan`].
//!
//! Every applier reads before it writes and changes only what differs, so
//! applying a plan twice changes nothing the second time, and a sandbox
//! half-built by a crashed agent (a namespace without a veth, a veth
//! without its address or route, a stray `eth0`) is completed or rebuilt.
//! Each returns the changes it made, one line each, for logs and tests.

use ipnet::IpNet;

use super::{NodePlan, SandboxNames, SandboxPlan};
use crate::netlink::{Link, LinkChange, Netlink, PROTO_KERNEL, PROTO_KNIT, Route, ipv4_addresses};
use crate::netns::Netns;
use crate::{Error, Result};

/// The changes an applier made, in order; empty when the kernel already
/// matched the plan.
pub type Changes = Vec<String>;

/// Makes the node's namespace (`node`) hold the plan's bridge with its
/// address, MTU and state, and its sysctls.
pub fn apply_node(node: &impl Netlink, plan: &NodePlan) -> Result<Changes> {
    let mut changes = Changes::new();
    let bridge = match node.link(&plan.bridge)? {
        Some(link) if link.kind.as_deref() == Some("bridge") => link,
        Some(link) => {
            return Err(Error::Conflict(format!(
                "{} exists and is a {}, not a bridge",
                plan.bridge,
                link.kind.as_deref().unwrap_or("plain device")
            )));
        }
        None => {
            node.add_bridge(&plan.bridge)?;
            changes.push(format!("add bridge {}", plan.bridge));
            node.link(&plan.bridge)?
                .ok_or_else(|| Error::NoLink(plan.bridge.clone()))?
        }
    };
    ensure_link(
        node,
        &bridge,
        plan.mtu,
        None,
        Some(plan.bridge_mac),
        &mut changes,
    )?;
    ensure_only_address(node, &plan.bridge, plan.bridge_address.into(), &mut changes)?;
    ensure_up(node, &bridge, &mut changes)?;
    for sysctl in &plan.sysctls {
        match node.sysctl(&sysctl.key)? {
            Some(value) if value == sysctl.value => {}
            Some(_) => {
                node.set_sysctl(&sysctl.key, &sysctl.value)?;
                changes.push(format!("sysctl {}={}", sysctl.key, sysctl.value));
            }
            None if sysctl.required => {
                return Err(Error::Conflict(format!(
                    "sysctl {} does not exist in the node's namespace",
                    sysctl.key
                )));
            }
            None => {}
        }
    }
    Ok(changes)
}

/// Makes the pod's sandbox match `plan`: its namespace exists (created
/// through `netns`), a veth pair joins it to the bridge in `node`, and the
/// pod's side has its address, `lo` up and its routes. The node network
/// must have been applied first.
pub fn apply_sandbox<N: Netns>(
    netns: &N,
    node: &impl Netlink,
    plan: &SandboxPlan,
) -> Result<Changes> {
    let mut changes = Changes::new();
    let names = &plan.names;
    if netns.create(&names.netns)? {
        changes.push(format!("netns add {}", names.netns));
    }
    let pod = netns.open(&names.netns)?;

    // The pair: both ends must exist and name each other; anything else is
    // the leftover of a crash (or of a reused name) and is rebuilt.
    let host = node.link(&names.host_veth)?;
    let inner = pod.link(&plan.pod_interface)?;
    let paired = match (&host, &inner) {
        (Some(h), Some(i)) => {
            h.kind.as_deref() == Some("veth")
                && i.kind.as_deref() == Some("veth")
                && h.peer_index == Some(i.index)
                && i.peer_index == Some(h.index)
        }
        _ => false,
    };
    if !paired {
        if host.is_some() {
            node.delete_link(&names.host_veth)?;
            changes.push(format!("delete stale link {}", names.host_veth));
        }
        // Deleting the host end may have taken a stale eth0 with it.
        if pod.link(&plan.pod_interface)?.is_some() {
            pod.delete_link(&plan.pod_interface)?;
            changes.push(format!(
                "delete stale link {} in {}",
                plan.pod_interface, names.netns
            ));
        }
        node.add_veth(
            &names.host_veth,
            plan.mtu,
            &plan.pod_interface,
            &names.netns,
        )?;
        changes.push(format!(
            "add veth {} peer {} in {}",
            names.host_veth, plan.pod_interface, names.netns
        ));
    }

    // The host end: on the bridge, hairpin, up.
    let host = node
        .link(&names.host_veth)?
        .ok_or_else(|| Error::NoLink(names.host_veth.clone()))?;
    let bridge = node
        .link(&plan.bridge)?
        .ok_or_else(|| Error::NoLink(plan.bridge.clone()))?;
    ensure_link(
        node,
        &host,
        plan.mtu,
        Some((&plan.bridge, bridge.index)),
        None,
        &mut changes,
    )?;
    let host = node
        .link(&names.host_veth)?
        .ok_or_else(|| Error::NoLink(names.host_veth.clone()))?;
    if host.hairpin != Some(plan.hairpin) {
        node.set_hairpin(&names.host_veth, plan.hairpin)?;
        changes.push(format!("set hairpin {} {}", names.host_veth, plan.hairpin));
    }
    ensure_up(node, &host, &mut changes)?;

    // The pod's side: lo up, eth0 with its address, up, then the routes
    // (a gateway is only accepted once it is reachable on an up link).
    let lo = pod.link("lo")?.ok_or_else(|| Error::NoLink("lo".into()))?;
    ensure_up(&pod, &lo, &mut changes)?;
    let inner = pod
        .link(&plan.pod_interface)?
        .ok_or_else(|| Error::NoLink(plan.pod_interface.clone()))?;
    ensure_link(
        &pod,
        &inner,
        plan.mtu,
        None,
        Some(plan.pod_mac),
        &mut changes,
    )?;
    ensure_only_address(
        &pod,
        &plan.pod_interface,
        plan.pod_address.into(),
        &mut changes,
    )?;
    ensure_up(&pod, &inner, &mut changes)?;
    ensure_routes(&pod, &plan.routes, &mut changes)?;
    Ok(changes)
}

/// Removes a pod's sandbox: the veth pair (from the node's side, which
/// takes the pod's end with it) and the namespace. Idempotent; `true` if
/// anything was there.
pub fn remove_sandbox<N: Netns>(
    netns: &N,
    node: &impl Netlink,
    names: &SandboxNames,
) -> Result<bool> {
    let mut removed = false;
    if let Some(link) = node.link(&names.host_veth)? {
        if link.kind.as_deref() != Some("veth") {
            return Err(Error::Conflict(format!(
                "{} is not a veth; leaving it alone",
                names.host_veth
            )));
        }
        node.delete_link(&names.host_veth)?;
        removed = true;
    }
    removed |= netns.delete(&names.netns)?;
    Ok(removed)
}

/// Sets the MTU, bridge and Ethernet address of `link` where they differ.
fn ensure_link(
    nl: &impl Netlink,
    link: &Link,
    mtu: u32,
    master: Option<(&str, u32)>,
    mac: Option<[u8; 6]>,
    changes: &mut Changes,
) -> Result<()> {
    let mut change = LinkChange::default();
    if link.mtu != mtu {
        change.mtu = Some(mtu);
    }
    if mac.is_some() && link.mac != mac {
        change.mac = mac;
    }
    if let Some((name, index)) = master
        && link.master != Some(index)
    {
        change.master = Some(Some(name.to_string()));
    }
    if change != LinkChange::default() {
        nl.set_link(&link.name, &change)?;
        changes.push(format!("set link {} {change:?}", link.name));
    }
    Ok(())
}

fn ensure_up(nl: &impl Netlink, link: &Link, changes: &mut Changes) -> Result<()> {
    if !link.up {
        let up = LinkChange {
            up: Some(true),
            ..LinkChange::default()
        };
        nl.set_link(&link.name, &up)?;
        changes.push(format!("set link {} up", link.name));
    }
    Ok(())
}

/// Makes `addr` the link's only IPv4 address (IPv6 link-local addresses
/// are the kernel's and stay).
fn ensure_only_address(
    nl: &impl Netlink,
    dev: &str,
    addr: IpNet,
    changes: &mut Changes,
) -> Result<()> {
    let present = nl.addresses(dev)?;
    for old in ipv4_addresses(&present) {
        if IpNet::V4(old) != addr {
            nl.delete_address(dev, old.into())?;
            changes.push(format!("delete address {old} dev {dev}"));
        }
    }
    if !present.contains(&addr) {
        nl.add_address(dev, addr)?;
        changes.push(format!("add address {addr} dev {dev}"));
    }
    Ok(())
}

/// Adds the wanted routes, replacing any other non-kernel route to the
/// same destination, and removes knit's routes that are no longer wanted.
fn ensure_routes(nl: &impl Netlink, wanted: &[Route], changes: &mut Changes) -> Result<()> {
    let present = nl.routes()?;
    for old in &present {
        let keep = old.proto == PROTO_KERNEL
            || wanted
                .iter()
                .any(|w| w.same_path(old) && w.proto == old.proto)
            || (old.proto != PROTO_KNIT && !wanted.iter().any(|w| w.dst == old.dst));
        if !keep {
            nl.delete_route(old)?;
            changes.push(format!("delete route {old}"));
        }
    }
    for route in wanted {
        if !present
            .iter()
            .any(|p| p.same_path(route) && p.proto == route.proto)
        {
            nl.add_route(route)?;
            changes.push(format!("add route {route}"));
        }
    }
    Ok(())
}
