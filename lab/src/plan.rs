//! The functional core: a lab's name, node count, subnet and directory
//! become every name and address of the lab, as plain data.
//!
//! All of a lab's namespaces are named `knl-<name>.<what>`: the dot cannot
//! occur in a lab name, so the prefix `knl-<name>.` matches this lab's
//! namespaces (switch, nodes, external host, and the pod sandboxes its
//! agents make under each node's own `knl-<name>.n<i>.` prefix) and never
//! another lab's. The only link in the root namespace is `kl-<name>`, which
//! is why a lab name has at most [`MAX_NAME`] bytes (an interface name has
//! at most 15).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The longest lab name: `kl-` + name must fit an interface name.
pub const MAX_NAME: usize = 12;
/// The lab name when none is given.
pub const DEFAULT_NAME: &str = "knit";
/// The underlay when none is given: the article's `10.100.0.0/24`.
pub const DEFAULT_SUBNET: &str = "10.100.0.0/24";
/// Where labs keep their files unless `--dir` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/knit-lab";
/// The port the lab's API server listens on, on the host side's address.
pub const API_PORT: u16 = 6443;
/// The bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// The switch port that leads to the root namespace.
pub const HOST_PORT: &str = "host";
/// The uplink's name inside a node or the external namespace.
pub const UPLINK: &str = "eth0";
/// The MTU of every underlay link.
pub const MTU: u32 = 1500;
/// The external host's short name (`knit lab exec ext -- ...`).
pub const EXTERNAL: &str = "ext";

/// Checks a lab name: 1 to [`MAX_NAME`] bytes of `a-z`, `0-9` and `-`,
/// starting and ending with a letter or digit (node names are built from
/// it, and they are DNS labels).
pub fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > MAX_NAME {
        format!("a lab name has 1 to {MAX_NAME} characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "a lab name has only lowercase letters, digits and '-'".to_string()
    } else if name.starts_with('-') || name.ends_with('-') {
        "a lab name starts and ends with a letter or digit".to_string()
    } else {
        return Ok(());
    };
    Err(Error::Invalid {
        what: "lab name",
        value: name.to_string(),
        reason,
    })
}

/// The prefix of every namespace of lab `name`.
pub fn netns_prefix(name: &str) -> String {
    format!("knl-{name}.")
}

/// The lab's one link in the root namespace.
pub fn host_link(name: &str) -> String {
    format!("kl-{name}")
}

/// The lab's directory when `--dir` is not given.
pub fn default_dir(name: &str) -> PathBuf {
    Path::new(DEFAULT_ROOT).join(name)
}

/// A host on the underlay: a node or the external client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name (`<lab>-node-<i>`), or [`EXTERNAL`].
    pub name: String,
    /// Its network namespace in `/run/netns`.
    pub netns: String,
    /// Its port on the switch bridge (the switch end of its veth).
    pub port: String,
    /// Its address on [`UPLINK`], with the subnet's prefix.
    #[serde(with = "as_text")]
    pub address: Ipv4Net,
}

/// A node: a [`Member`] that runs an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Where it sits on the underlay.
    #[serde(flatten)]
    pub member: Member,
    /// The prefix of the pod sandboxes' namespaces its agent makes.
    pub sandbox_prefix: String,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// The agent's log.
    pub log: PathBuf,
}

/// Everything about a lab that follows from its flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPlan {
    /// The lab's name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The underlay subnet.
    #[serde(with = "as_text")]
    pub subnet: Ipv4Net,
    /// The root namespace's link to the switch.
    pub host_link: String,
    /// The address on it: the subnet's first.
    #[serde(with = "as_text")]
    pub host_address: Ipv4Net,
    /// The namespace holding the switch bridge.
    pub switch_netns: String,
    /// The nodes, in order.
    pub nodes: Vec<NodeSpec>,
    /// The external client.
    pub external: Member,
    /// Where the API server listens (`<host address>:6443`).
    pub api_listen: String,
    /// The API server's data directory.
    pub server_dir: PathBuf,
    /// The API server's log.
    pub server_log: PathBuf,
    /// The kubeconfig for the host's kubectl.
    pub kubeconfig: PathBuf,
    /// The server's join token, which the agents join with.
    pub join_token: PathBuf,
}

/// Networks in the state file as `10.100.0.2/24`.
mod as_text {
    use ipnet::Ipv4Net;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `--subnet`: an IPv4 network (host bits are dropped) with room
/// for at least the host side, one node and the external host.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net> {
    let invalid = |reason: &str| Error::Invalid {
        what: "subnet",
        value: s.to_string(),
        reason: reason.to_string(),
    };
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| invalid("not an IPv4 CIDR such as 10.100.0.0/24"))?;
    if net.prefix_len() > 29 {
        return Err(invalid("too small: at most /29"));
    }
    Ok(net.trunc())
}

/// The lab `name` with `nodes` nodes on `subnet`, its files under `dir`.
pub fn plan(name: &str, nodes: usize, subnet: Ipv4Net, dir: &Path) -> Result<LabPlan> {
    check_name(name)?;
    let subnet = subnet.trunc();
    let base = u32::from(subnet.network());
    let broadcast = u32::from(subnet.broadcast());
    // Usable hosts: network+1 ..= broadcast-1. The host side takes the
    // first, the external client the last, the nodes the ones between.
    let usable = broadcast - base - 1;
    let max_nodes = usable.saturating_sub(2) as usize;
    if nodes == 0 || nodes > max_nodes {
        return Err(Error::Invalid {
            what: "node count",
            value: nodes.to_string(),
            reason: format!("subnet {subnet} has room for 1 to {max_nodes} nodes"),
        });
    }
    let at = |offset: u32| {
        Ipv4Net::new(Ipv4Addr::from(base + offset), subnet.prefix_len()).expect("prefix of a net")
    };
    let prefix = netns_prefix(name);
    let nodes = (1..=nodes)
        .map(|i| {
            let node = format!("{name}-node-{i}");
            NodeSpec {
                member: Member {
                    netns: format!("{prefix}n{i}"),
                    port: format!("n{i}"),
                    address: at(1 + i as u32),
                    name: node.clone(),
                },
                sandbox_prefix: format!("{prefix}n{i}."),
                state_dir: dir.join(&node),
                log: dir.join("logs").join(format!("{node}.log")),
            }
        })
        .collect();
    let host_address = at(1);
    Ok(LabPlan {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        subnet,
        host_link: host_link(name),
        host_address,
        switch_netns: format!("{prefix}sw"),
        nodes,
        external: Member {
            name: EXTERNAL.to_string(),
            netns: format!("{prefix}{EXTERNAL}"),
            port: EXTERNAL.to_string(),
            address: at(broadcast - base - 1),
        },
        api_listen: format!("{}:{API_PORT}", host_address.addr()),
        server_dir: dir.join("server"),
        server_log: dir.join("logs").join("server.log"),
        kubeconfig: dir.join("kubeconfig"),
        join_token: dir.join("server").join("join-token"),
    })
}

impl LabPlan {
    /// Every namespace of the lab (switch, nodes, external), in creation
    /// order; the agents' sandboxes share the prefix but are not listed.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut all = vec![self.switch_netns.as_str()];
        all.extend(self.nodes.iter().map(|n| n.member.netns.as_str()));
        all.push(&self.external.netns);
        all
    }

    /// The node or external host that `host` names: a node name, a node
    /// number from 1, a namespace name, or `ext`/`external`.
    pub fn member(&self, host: &str) -> Option<&Member> {
        if host == EXTERNAL || host == "external" || host == self.external.netns {
            return Some(&self.external);
        }
        if let Ok(i) = host.parse::<usize>() {
            return i
                .checked_sub(1)
                .and_then(|i| self.nodes.get(i))
                .map(|n| &n.member);
        }
        self.nodes
            .iter()
            .map(|n| &n.member)
            .find(|m| m.name == host || m.netns == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Ipv4Net {
        parse_subnet(s).unwrap()
    }

    #[test]
    fn the_default_lab_has_the_articles_addresses() {
        let p = plan("knit", 2, subnet(DEFAULT_SUBNET), Path::new("/l")).unwrap();
        assert_eq!(p.host_link, "kl-knit");
        assert_eq!(p.host_address.to_string(), "10.100.0.1/24");
        assert_eq!(p.api_listen, "10.100.0.1:6443");
        assert_eq!(p.switch_netns, "knl-knit.sw");
        let nodes: Vec<_> = p
            .nodes
            .iter()
            .map(|n| {
                (
                    n.member.name.as_str(),
                    n.member.netns.as_str(),
                    n.member.address.to_string(),
                )
            })
            .collect();
        assert_eq!(
            nodes,
            [
                ("knit-node-1", "knl-knit.n1", "10.100.0.2/24".to_string()),
                ("knit-node-2", "knl-knit.n2", "10.100.0.3/24".to_string()),
            ]
        );
        assert_eq!(p.nodes[0].sandbox_prefix, "knl-knit.n1.");
        assert_eq!(p.nodes[1].state_dir, Path::new("/l/knit-node-2"));
        assert_eq!(p.external.address.to_string(), "10.100.0.254/24");
        assert_eq!(p.external.netns, "knl-knit.ext");
        assert_eq!(
            p.namespaces(),
            ["knl-knit.sw", "knl-knit.n1", "knl-knit.n2", "knl-knit.ext"]
        );
    }

    #[test]
    fn host_bits_of_the_subnet_are_dropped_and_small_subnets_fit_exactly() {
        let net = subnet("10.7.3.9/29");
        assert_eq!(net.to_string(), "10.7.3.8/29");
        // .9 is the host side, .14 the external client, .10-.13 the nodes.
        let p = plan("a", 4, net, Path::new("/l")).unwrap();
        assert_eq!(p.host_address.to_string(), "10.7.3.9/29");
        assert_eq!(p.nodes[3].member.address.to_string(), "10.7.3.13/29");
        assert_eq!(p.external.address.to_string(), "10.7.3.14/29");
        assert!(plan("a", 5, net, Path::new("/l")).is_err());
    }

    #[test]
    fn every_interface_name_fits_and_prefixes_never_overlap() {
        let long = "a".repeat(MAX_NAME);
        assert_eq!(host_link(&long).len(), 15);
        check_name(&long).unwrap();
        for bad in ["", "A", "a_b", "-a", "a-", "a.b", &"a".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        // Lab "a" never sweeps lab "a-b"'s namespaces.
        assert!(!"knl-a-b.sw".starts_with(&netns_prefix("a")));
        // Node 1's sandboxes are not node 10's.
        let p = plan("a", 10, subnet(DEFAULT_SUBNET), Path::new("/l")).unwrap();
        assert!(
            !p.nodes[9]
                .member
                .netns
                .starts_with(&p.nodes[0].sandbox_prefix)
        );
    }

    #[test]
    fn members_are_found_by_name_number_or_namespace() {
        let p = plan("x", 2, subnet(DEFAULT_SUBNET), Path::new("/l")).unwrap();
        assert_eq!(p.member("2").unwrap().name, "x-node-2");
        assert_eq!(p.member("x-node-1").unwrap().netns, "knl-x.n1");
        assert_eq!(p.member("knl-x.n2").unwrap().name, "x-node-2");
        assert_eq!(p.member("ext").unwrap().netns, "knl-x.ext");
        assert!(p.member("0").is_none());
        assert!(p.member("3").is_none());
        assert!(p.member("y-node-1").is_none());
    }

    #[test]
    fn bad_counts_and_subnets_are_refused() {
        assert!(parse_subnet("10.0.0.0/30").is_err());
        assert!(parse_subnet("fd00::/64").is_err());
        assert!(parse_subnet("nonsense").is_err());
        assert!(plan("a", 0, subnet(DEFAULT_SUBNET), Path::new("/l")).is_err());
        assert!(plan("a", 253, subnet(DEFAULT_SUBNET), Path::new("/l")).is_err());
        assert!(plan("a", 252, subnet(DEFAULT_SUBNET), Path::new("/l")).is_ok());
    }
}
