//! The service dataplane (issue 6): what kube-proxy's nftables mode does,
//! as one table `ip knit` in the node's network namespace.
//!
//! - [`desired`] (in `plan`) is the functional core: node facts, Services
//!   and EndpointSlices in, a [`Ruleset`] (chains, sets and maps as plain
//!   data) out. Dispatch is O(1): one verdict map keyed by
//!   `daddr . l4proto . dport` for ClusterIPs, externalIPs and load
//!   balancer IPs, one keyed by `l4proto . dport` for NodePorts on the
//!   node's own addresses; per-service-port chains pick a ready endpoint
//!   with `numgen random`. Every name derives from the service's
//!   namespace, name, protocol and port name, so two plans can be diffed
//!   object by object.
//! - [`render`] turns a ruleset into one `nft -f` transaction: a full one
//!   (the table deleted and rebuilt atomically) or a partial one holding
//!   only the chains, sets and map elements that differ from what was
//!   applied before.
//! - [`Firewall`] is the OS boundary (`nft`, `conntrack`), with
//!   [`LinuxFirewall`] running the tools inside a network namespace and
//!   [`RecordingFirewall`] for tests.
//! - [`Proxier`] keeps the last applied ruleset, chooses full or partial
//!   syncs, checks the kernel's table for drift, and deletes the UDP
//!   conntrack entries that would keep sending datagrams to endpoints that
//!   went away.
//!
//! Nothing here watches the API; the agent's loop feeds [`desired`] from
//! its caches and calls [`Proxier::sync`] (on a blocking thread, since it
//! forks `nft`) after each change, and [`Proxier::check`] now and then.

mod firewall;
mod plan;
mod proxier;
pub mod render;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use firewall::{Firewall, LinuxFirewall, Recorded, RecordingFirewall};
pub use plan::{desired, desired_with_pods};
pub use proxier::{Proxier, SyncKind, SyncReport};

/// The nftables family and name of knit's table; nothing else in the
/// namespace's ruleset is ever touched.
pub const TABLE: &str = "ip knit";

/// The packet mark bit that asks `nat-postrouting` to masquerade
/// (kube-proxy's value, so the two never disagree on a node).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// What the planner needs to know about the node it programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The Node's name, to tell local endpoints (`nodeName`) apart.
    pub name: String,
    /// The node's own IPv4 addresses (HostPort, documentation).
    pub ips: Vec<Ipv4Addr>,
    /// This node's slice of the cluster CIDR (the pods on `cbr0`).
    pub pod_cidr: Ipv4Net,
    /// The whole pod network; traffic inside it is never masqueraded.
    pub cluster_cidr: Ipv4Net,
}

/// One chain of the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// For a base chain, its `type ... hook ... priority ...; policy ...;`
    /// spec; `None` for a regular chain reached by jump/goto/vmap.
    pub base: Option<String>,
    /// The rules, in nft syntax, in order.
    pub rules: Vec<String>,
}

/// One named set or map of the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    /// `map` or `set`.
    pub kind: SetKind,
    /// The declaration between the braces, e.g.
    /// `type ipv4_addr . inet_proto . inet_service : verdict;`.
    pub spec: String,
    /// Filled by the kernel (session affinity): elements are neither
    /// planned nor compared.
    pub dynamic: bool,
    /// Key → value (`""` for plain sets), in nft syntax.
    pub elements: BTreeMap<String, String>,
}

/// Whether a [`Set`] is a set or a map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetKind {
    /// A set of keys.
    #[default]
    Set,
    /// A map from keys to values (here always verdicts).
    Map,
}

/// A service port carried over UDP, with what the conntrack cleanup needs
/// to compare two plans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpPort {
    /// Every address the port is reached at (ClusterIPs, externalIPs,
    /// load balancer IPs).
    pub ips: Vec<Ipv4Addr>,
    /// The service port.
    pub port: u16,
    /// Its NodePort, if it has one.
    pub node_port: Option<u16>,
    /// The ready endpoints' addresses.
    pub endpoints: BTreeSet<Ipv4Addr>,
}

/// The whole table as data: what [`desired`] plans and [`render`] writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Named sets and maps by name.
    pub sets: BTreeMap<String, Set>,
    /// UDP service ports by their id (`ns/name/udp/port`), for conntrack.
    pub udp: BTreeMap<String, UdpPort>,
}

impl Ruleset {
    /// What a listing of the kernel's table must show if nobody touched
    /// it: every chain with its rule count and every planned set with its
    /// element count (sets filled by the kernel count as `None`).
    pub fn shape(&self) -> Shape {
        Shape {
            chains: self
                .chains
                .iter()
                .map(|(name, chain)| (name.clone(), chain.rules.len()))
                .collect(),
            sets: self
                .sets
                .iter()
                .map(|(name, set)| {
                    let count = (!set.dynamic).then_some(set.elements.len());
                    (name.clone(), count)
                })
                .collect(),
        }
    }
}

/// The countable outline of a table, compared by the drift check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Chain name → number of rules.
    pub chains: BTreeMap<String, usize>,
    /// Set or map name → number of elements (`None`: not compared).
    pub sets: BTreeMap<String, Option<usize>>,
}

/// What went wrong programming the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool could not be started.
    #[error("run {program}: {source}")]
    Spawn {
        /// `nft` or `conntrack`.
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line (without the script).
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Entering the node's network namespace failed.
    #[error(transparent)]
    Netns(#[from] crate::Error),
    /// `nft -j list` printed something we could not read.
    #[error("cannot read nft's listing: {0}")]
    Listing(String),
}

/// Result with the proxy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
