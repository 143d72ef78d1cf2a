//! The service dataplane (issue 6): what kube-proxy's nftables mode does,
//! as one table `ip knit` in the node's network namespace.
//!
//! - [`Planner`] (in `plan`) is the functional core: node facts, Services
//!   and EndpointSlices in, a [`Ruleset`] (chains, sets and maps as plain
//!   data) out, kept one service at a time with a record of what each
//!   change [`Touched`]; [`desired`] plans a whole world at once. Dispatch
//!   is O(1): one verdict map keyed by `daddr . l4proto . dport` for
//!   ClusterIPs, externalIPs and load balancer IPs, one keyed by
//!   `l4proto . dport` for NodePorts on the node's own addresses; chains
//!   shared by every service with the same number of endpoints pick one
//!   with `numgen random` from a map of endpoint slots, so a service is
//!   map elements, not chains (see `plan` for why).
//! - [`render`] turns a change of ruleset into a transaction: a partial
//!   one holding only the chains, sets and map elements that differ from
//!   what was applied before (found from the touched record without
//!   walking the table), or a full one. Elements, nearly all of a large
//!   table, go over netfilter netlink ([`nfnl`]), one batch per sync;
//!   chains, rules and set declarations go through `nft -f`. A change
//!   that rewrites an existing chain, and a full sync over an existing
//!   table, are one `nft` script instead, so that packets never see a
//!   half-made change.
//! - [`Firewall`] is the OS boundary (`nft`, element batches,
//!   `conntrack`), with [`LinuxFirewall`] working inside a network
//!   namespace and [`RecordingFirewall`] for tests.
//! - [`Proxier`] keeps the last applied ruleset, chooses full or partial
//!   syncs, checks the kernel's table for drift, and deletes the UDP
//!   conntrack entries that would keep sending datagrams to endpoints that
//!   went away.
//!
//! Nothing here watches the API; the agent's loop (`agent::services`)
//! feeds a [`Planner`] from its watches and calls
//! [`Proxier::sync_planned`] (on a blocking thread, since it forks `nft`
//! and enters the node's namespace)
//! after each burst of changes, and [`Proxier::check`] now and then.

mod firewall;
pub mod nfnl;
mod plan;
mod proxier;
pub mod render;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use firewall::{Firewall, LinuxFirewall, Recorded, RecordingFirewall};
pub use plan::{HealthCheck, Planner, SERVICE_NAME_LABEL, desired, desired_with_pods};
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
    /// The cluster DNS address when this node answers it itself (on a
    /// local interface): that ClusterIP is left out of the maps and its
    /// port 53 traffic is not tracked.
    pub local_dns: Option<Ipv4Addr>,
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
    /// What the kernel's table must look like, elements aside, if nobody
    /// touched it: every chain with its rule count, every named set.
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
                .map(|(name, set)| (name.clone(), set.dynamic))
                .collect(),
        }
    }
}

/// What a change of plan touched: the names whose planned state may
/// differ from what the kernel holds. A partial sync looks only at these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Chains added, changed or removed.
    pub chains: BTreeSet<String>,
    /// Sets and maps declared or removed.
    pub sets: BTreeSet<String>,
    /// `(set, key)` of elements added, changed or removed.
    pub elements: BTreeSet<(String, String)>,
    /// More elements changed than are worth listing (a first plan, a
    /// relist): `elements` is left empty and the next sync rewrites the
    /// whole table. At 10,000 services the list alone is 120,000 pairs of
    /// strings that a full sync would only throw away.
    pub elements_all: bool,
    /// UDP service port ids whose endpoints or addresses changed.
    pub udp: BTreeSet<String>,
}

impl Touched {
    /// Everything that differs between two whole rulesets (the slow way,
    /// for callers that plan whole worlds).
    pub fn between(old: &Ruleset, new: &Ruleset) -> Touched {
        let mut t = Touched::default();
        for name in old.chains.keys().chain(new.chains.keys()) {
            if old.chains.get(name) != new.chains.get(name) {
                t.chains.insert(name.clone());
            }
        }
        for name in old.sets.keys().chain(new.sets.keys()) {
            let (a, b) = (old.sets.get(name), new.sets.get(name));
            let decl = |s: &Set| (s.kind, s.spec.clone(), s.dynamic);
            if a.map(decl) != b.map(decl) {
                t.sets.insert(name.clone());
            }
            let empty = BTreeMap::new();
            let ea = a.map_or(&empty, |s| &s.elements);
            let eb = b.map_or(&empty, |s| &s.elements);
            for key in ea.keys().chain(eb.keys()) {
                if ea.get(key) != eb.get(key) {
                    t.elements.insert((name.clone(), key.clone()));
                }
            }
        }
        for id in old.udp.keys().chain(new.udp.keys()) {
            if old.udp.get(id) != new.udp.get(id) {
                t.udp.insert(id.clone());
            }
        }
        t
    }

    /// Adds what `other` touched.
    pub fn merge(&mut self, other: Touched) {
        self.chains.extend(other.chains);
        self.sets.extend(other.sets);
        self.elements_all |= other.elements_all;
        if self.elements_all {
            self.elements.clear();
        } else {
            self.elements.extend(other.elements);
        }
        self.udp.extend(other.udp);
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
            && self.sets.is_empty()
            && self.elements.is_empty()
            && !self.elements_all
            && self.udp.is_empty()
    }
}

/// The structure of a table, elements aside: what the drift check and a
/// full sync compare (reading 100,000 elements back costs the kernel
/// seconds, so elements are only sampled).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Chain name → number of rules.
    pub chains: BTreeMap<String, usize>,
    /// Set or map name → whether the datapath fills it (session
    /// affinity) rather than the agent.
    pub sets: BTreeMap<String, bool>,
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
    /// An element could not be encoded for netlink (a planner bug).
    #[error("cannot encode elements: {0}")]
    Elements(String),
    /// The kernel refused an element batch, or the socket failed.
    #[error(transparent)]
    Netlink(#[from] nfnl::SendError),
}

/// Result with the proxy's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
