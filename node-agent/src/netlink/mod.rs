//! The small netlink surface the node agent needs, as a trait.
//!
//! [`Netlink`] is one network namespace's view: its links, their
//! addresses, its IPv4 main routing table, and the namespace's sysctls
//! (which are not netlink, but like netlink they must be touched from a
//! thread inside the namespace, so they live on the same handle).
//! [`LinuxNetlink`] is the kernel; [`FakeKernel`] is an in-memory model
//! that records every change, so plans and appliers are tested without
//! root.
//!
//! The trait is synchronous: the Linux handle runs its own thread, and a
//! call blocks until that thread answers (tens of microseconds). Async
//! callers run appliers under `tokio::task::spawn_blocking`.

mod fake;
mod linux;

pub use fake::{FakeKernel, FakeNetlink, FakeNetns};
pub use linux::LinuxNetlink;

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use crate::Result;

/// The route protocol number knit stamps on the routes it adds, so that a
/// restarted agent can tell its routes from the kernel's and an admin's
/// (`ip route` shows it as `proto 107`; 107 is unassigned in iproute2's
/// `rt_protos`).
pub const PROTO_KNIT: u8 = 107;
/// The protocol of the routes the kernel adds for an address's subnet.
pub const PROTO_KERNEL: u8 = 2;

/// A link as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The interface index, unique within its namespace.
    pub index: u32,
    /// The interface name (at most 15 bytes).
    pub name: String,
    /// `IFLA_INFO_KIND`: `bridge`, `veth`, ...; `None` for devices without
    /// one, such as `lo`.
    pub kind: Option<String>,
    /// The MTU.
    pub mtu: u32,
    /// The Ethernet address, for links that have one.
    pub mac: Option<[u8; 6]>,
    /// Whether it is administratively up (`IFF_UP`).
    pub up: bool,
    /// The index of the bridge (or other controller) it is a port of.
    pub master: Option<u32>,
    /// `IFLA_LINK`: for a veth, the peer's index in the peer's namespace.
    pub peer_index: Option<u32>,
    /// For a bridge port, whether hairpin mode is on.
    pub hairpin: Option<bool>,
}

/// What [`Netlink::set_link`] changes; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkChange {
    /// Bring the link up or down.
    pub up: Option<bool>,
    /// Set the MTU.
    pub mtu: Option<u32>,
    /// Set the Ethernet address.
    pub mac: Option<[u8; 6]>,
    /// Attach to this bridge (`Some(Some(name))`) or detach
    /// (`Some(None)`).
    pub master: Option<Option<String>>,
}

/// An IPv4 route in the main table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The destination; `0.0.0.0/0` for the default route.
    pub dst: Ipv4Net,
    /// The next hop, if it is not on-link.
    pub via: Option<Ipv4Addr>,
    /// The output device.
    pub dev: Option<String>,
    /// The route protocol ([`PROTO_KNIT`] for knit's own).
    pub proto: u8,
}

impl Route {
    /// Whether two routes lead the same place the same way, whoever added
    /// them.
    pub fn same_path(&self, other: &Route) -> bool {
        self.dst == other.dst && self.via == other.via && self.dev == other.dev
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dst.prefix_len() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        write!(f, " proto {}", self.proto)
    }
}

/// One network namespace's links, addresses, routes and sysctls.
///
/// Every mutating call fails if the kernel refuses; callers that want
/// idempotence read first (the appliers in [`crate::sandbox`] do).
pub trait Netlink {
    /// All links.
    fn links(&self) -> Result<Vec<Link>>;
    /// One link by name, `None` if there is none.
    fn link(&self, name: &str) -> Result<Option<Link>>;
    /// Creates a bridge, down, with the kernel's defaults.
    fn add_bridge(&self, name: &str) -> Result<()>;
    /// Creates a dummy link, down: a device that only holds addresses
    /// (the cluster DNS address the agent answers on).
    fn add_dummy(&self, name: &str) -> Result<()>;
    /// Creates a veth pair: `name` here and `peer` inside the named
    /// network namespace `peer_netns`, both with `mtu`, both down. The peer
    /// is created directly in its namespace, so its name may clash with
    /// nothing here (every pod's end is `eth0`).
    fn add_veth(&self, name: &str, mtu: u32, peer: &str, peer_netns: &str) -> Result<()>;
    /// Deletes a link (for a veth, both ends).
    fn delete_link(&self, name: &str) -> Result<()>;
    /// Changes a link's state, MTU or bridge.
    fn set_link(&self, name: &str, change: &LinkChange) -> Result<()>;
    /// Sets hairpin mode on a bridge port, so that a pod can reach itself
    /// through a service address that lands back on its own port.
    fn set_hairpin(&self, name: &str, on: bool) -> Result<()>;
    /// The addresses on a link (IPv4 and IPv6).
    fn addresses(&self, name: &str) -> Result<Vec<IpNet>>;
    /// Adds an address to a link.
    fn add_address(&self, name: &str, addr: IpNet) -> Result<()>;
    /// Removes an address from a link.
    fn delete_address(&self, name: &str, addr: IpNet) -> Result<()>;
    /// The IPv4 unicast routes of the main table.
    fn routes(&self) -> Result<Vec<Route>>;
    /// Adds a route (scope link when it has no next hop).
    fn add_route(&self, route: &Route) -> Result<()>;
    /// Deletes a route.
    fn delete_route(&self, route: &Route) -> Result<()>;
    /// Reads `/proc/sys/<key>` as this namespace sees it, trimmed; `None`
    /// when the key does not exist (e.g. `net/bridge/...` without the
    /// `br_netfilter` module).
    fn sysctl(&self, key: &str) -> Result<Option<String>>;
    /// Writes `/proc/sys/<key>` in this namespace.
    fn set_sysctl(&self, key: &str, value: &str) -> Result<()>;
}

/// The IPv4 addresses among `addrs`.
pub fn ipv4_addresses(addrs: &[IpNet]) -> Vec<Ipv4Net> {
    addrs
        .iter()
        .filter_map(|a| match a {
            IpNet::V4(v4) => Some(*v4),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// Refuses sysctl keys that could escape `/proc/sys`.
pub(crate) fn check_sysctl_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::InvalidName {
            name: key.to_string(),
            reason: "not a sysctl key under /proc/sys",
        })
    }
}
