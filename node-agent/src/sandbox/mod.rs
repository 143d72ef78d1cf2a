//! Pod sandboxes and the node network they hang off, as plans.
//!
//! This is the functional core: [`node_network`] turns a node's pod CIDR
//! and its uplink MTU into a [`NodePlan`] (the `cbr0` bridge holding the
//! CIDR's first address, IP forwarding), and [`pod_sandbox`] turns a pod
//! into a [`SandboxPlan`] (its network namespace, a veth pair with the host
//! end on `cbr0` and `eth0` inside, the pod's address, `lo`, the default
//! route via the bridge) — the article's pause container. Plans are plain
//! data; [`apply`] makes the kernel match them.

pub mod apply;

pub use apply::{apply_node, apply_sandbox, remove_sandbox};

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::netlink::{PROTO_KNIT, Route};

/// The node's pod bridge, named as in the article.
pub const BRIDGE: &str = "cbr0";
/// The pod's end of its veth pair.
pub const POD_INTERFACE: &str = "eth0";
/// The prefix of host-side veth names; the rest is a hash of the pod uid.
pub const HOST_VETH_PREFIX: &str = "knv";
/// The longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME: usize = 15;

/// A plan that cannot be made from its inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The node CIDR is not a network address or has no room for pods.
    #[error("node CIDR {cidr}: {reason}")]
    NodeCidr {
        /// The CIDR given.
        cidr: Ipv4Net,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The pod IP is not a pod address of the node CIDR.
    #[error("pod IP {ip} is not a pod address in {cidr}: {reason}")]
    PodIp {
        /// The pod IP.
        ip: Ipv4Addr,
        /// The node CIDR.
        cidr: Ipv4Net,
        /// Why not.
        reason: &'static str,
    },
    /// The MTU is outside what IPv4 links accept.
    #[error("MTU {0} is outside 68..=65535")]
    Mtu(u32),
    /// The pod uid or the namespace prefix cannot make a namespace name.
    #[error("pod uid {uid:?} with prefix {prefix:?}: {reason}")]
    Name {
        /// The uid.
        uid: String,
        /// The namespace prefix.
        prefix: String,
        /// Why not.
        reason: &'static str,
    },
}

/// A sysctl the node needs in its own namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// The key under `/proc/sys`, e.g. `net/ipv4/ip_forward`.
    pub key: String,
    /// The value to write.
    pub value: String,
    /// Whether a missing key is an error; optional keys belong to modules
    /// that may not be loaded (`br_netfilter`), and loading modules is the
    /// host's business, not the agent's.
    pub required: bool,
}

/// The node's side of the pod network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// The node's pod CIDR.
    pub cidr: Ipv4Net,
    /// The bridge's name ([`BRIDGE`]).
    pub bridge: String,
    /// The bridge's address: the CIDR's first address with its prefix, so
    /// the kernel routes the whole CIDR to the bridge.
    pub bridge_address: Ipv4Net,
    /// The bridge's Ethernet address, set explicitly: a bridge left to
    /// itself takes the lowest address of its ports, so removing one pod
    /// would change the gateway's MAC under every other pod's ARP cache.
    /// `0a:58` (locally administered) followed by the bridge's IPv4
    /// address, so it is the same after every restart.
    pub bridge_mac: [u8; 6],
    /// The MTU of the bridge and every veth: the uplink's, since pod
    /// traffic to other nodes leaves through it unencapsulated (host-gw).
    pub mtu: u32,
    /// Sysctls of the node's namespace.
    pub sysctls: Vec<Sysctl>,
}

/// The names a sandbox is known by on the host; derived from the pod uid
/// alone, so that a restarted agent finds them again and a new pod with a
/// reused name never inherits an old pod's sandbox.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SandboxNames {
    /// The pod's uid.
    pub uid: String,
    /// The network namespace's name in `/run/netns`: prefix + uid.
    pub netns: String,
    /// The host end of the veth pair: [`HOST_VETH_PREFIX`] + 12 hex digits
    /// of a hash of the uid (15 bytes).
    pub host_veth: String,
}

impl SandboxNames {
    /// The names of pod `uid`'s sandbox, its namespace named
    /// `netns_prefix` + `uid`. The prefix tells one node's sandboxes from
    /// another's when several nodes share a host (a lab).
    pub fn new(netns_prefix: &str, uid: &str) -> Result<Self, PlanError> {
        let err = |reason| PlanError::Name {
            uid: uid.to_string(),
            prefix: netns_prefix.to_string(),
            reason,
        };
        if uid.is_empty() || uid.len() > 64 {
            return Err(err("a uid has 1 to 64 characters"));
        }
        if !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(err("a uid has only letters, digits and '-'"));
        }
        if netns_prefix.contains('/') || netns_prefix.contains('\0') {
            return Err(err("the prefix contains '/' or NUL"));
        }
        let netns = format!("{netns_prefix}{uid}");
        if netns.len() > 255 {
            return Err(err("the namespace name is longer than 255 bytes"));
        }
        let host_veth = format!("{HOST_VETH_PREFIX}{:012x}", fnv1a64(uid.as_bytes()) >> 16);
        debug_assert!(host_veth.len() <= MAX_IFNAME);
        Ok(SandboxNames {
            uid: uid.to_string(),
            netns,
            host_veth,
        })
    }

    /// The uid of a sandbox namespace named `netns` with `netns_prefix`, or
    /// `None` if the name is not one of this prefix's sandboxes.
    pub fn uid_of<'a>(netns_prefix: &str, netns: &'a str) -> Option<&'a str> {
        let uid = netns.strip_prefix(netns_prefix)?;
        SandboxNames::new(netns_prefix, uid).ok().map(|_| uid)
    }
}

/// One pod's sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxPlan {
    /// Where it lives on the host.
    pub names: SandboxNames,
    /// The bridge the host end joins.
    pub bridge: String,
    /// The MTU of both ends.
    pub mtu: u32,
    /// Hairpin mode on the host end.
    pub hairpin: bool,
    /// The pod's interface ([`POD_INTERFACE`]).
    pub pod_interface: String,
    /// The pod's address, with the node CIDR's prefix.
    pub pod_address: Ipv4Net,
    /// The Ethernet address of the pod's interface, derived from its IP
    /// (as the bridge's is): a pod that gets the address of a pod just
    /// deleted also gets its MAC, so the neighbours' ARP caches (the
    /// node's, the other pods') stay right instead of pointing at a gone
    /// interface until they expire.
    pub pod_mac: [u8; 6],
    /// The bridge's address, the pod's default gateway.
    pub gateway: Ipv4Addr,
    /// The pod's routes besides the kernel's subnet route.
    pub routes: Vec<Route>,
}

/// The node network for a node whose pod CIDR is `node_cidr` and whose
/// uplink has MTU `uplink_mtu`.
pub fn node_network(node_cidr: Ipv4Net, uplink_mtu: u32) -> Result<NodePlan, PlanError> {
    check_cidr(node_cidr)?;
    check_mtu(uplink_mtu)?;
    let first = first_host(node_cidr);
    Ok(NodePlan {
        cidr: node_cidr,
        bridge: BRIDGE.to_string(),
        bridge_address: Ipv4Net::new(first, node_cidr.prefix_len()).expect("prefix from a CIDR"),
        bridge_mac: mac_for(first),
        mtu: uplink_mtu,
        sysctls: vec![
            Sysctl {
                key: "net/ipv4/ip_forward".into(),
                value: "1".into(),
                required: true,
            },
            // So that bridged pod-to-pod traffic meets the node's service
            // rules (a pod reaching a service backed by a pod on the same
            // bridge); present only with br_netfilter loaded.
            Sysctl {
                key: "net/bridge/bridge-nf-call-iptables".into(),
                value: "1".into(),
                required: false,
            },
        ],
    })
}

/// The sandbox of pod `uid` with address `pod_ip` on a node whose pod CIDR
/// is `node_cidr`, links at `mtu`; its namespace is named `netns_prefix` +
/// `uid`.
pub fn pod_sandbox(
    netns_prefix: &str,
    uid: &str,
    pod_ip: Ipv4Addr,
    node_cidr: Ipv4Net,
    mtu: u32,
) -> Result<SandboxPlan, PlanError> {
    check_cidr(node_cidr)?;
    check_mtu(mtu)?;
    let gateway = first_host(node_cidr);
    let bad = |reason| PlanError::PodIp {
        ip: pod_ip,
        cidr: node_cidr,
        reason,
    };
    if !node_cidr.contains(&pod_ip) {
        return Err(bad("outside the CIDR"));
    }
    if pod_ip == node_cidr.network() {
        return Err(bad("the network address"));
    }
    if pod_ip == node_cidr.broadcast() {
        return Err(bad("the broadcast address"));
    }
    if pod_ip == gateway {
        return Err(bad("the bridge's address"));
    }
    let names = SandboxNames::new(netns_prefix, uid)?;
    let default_route = Route {
        dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0 is valid"),
        via: Some(gateway),
        dev: Some(POD_INTERFACE.to_string()),
        proto: PROTO_KNIT,
    };
    Ok(SandboxPlan {
        names,
        bridge: BRIDGE.to_string(),
        mtu,
        hairpin: true,
        pod_interface: POD_INTERFACE.to_string(),
        pod_address: Ipv4Net::new(pod_ip, node_cidr.prefix_len()).expect("prefix from a CIDR"),
        pod_mac: mac_for(pod_ip),
        gateway,
        routes: vec![default_route],
    })
}

fn check_cidr(cidr: Ipv4Net) -> Result<(), PlanError> {
    let reason = if cidr.addr() != cidr.network() {
        "not a network address"
    } else if cidr.prefix_len() > 30 {
        "no room for a bridge and a pod (prefix longer than /30)"
    } else {
        return Ok(());
    };
    Err(PlanError::NodeCidr { cidr, reason })
}

fn check_mtu(mtu: u32) -> Result<(), PlanError> {
    if (68..=65535).contains(&mtu) {
        Ok(())
    } else {
        Err(PlanError::Mtu(mtu))
    }
}

/// `0a:58:` + the four octets of `ip`.
fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x0a, 0x58, a, b, c, d]
}

fn first_host(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

/// FNV-1a, 64 bits: interface names must come out the same from every
/// build of the agent, which std's hasher does not promise.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests;
