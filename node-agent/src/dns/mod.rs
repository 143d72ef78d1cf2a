//! Cluster DNS, answered by every node agent for its own pods.
//!
//! Instead of a DNS deployment behind a Service IP, each agent holds the
//! cluster DNS address itself: the `kube-dns` Service's ClusterIP
//! (`10.3.240.10`) goes on a link of its own, [`LINK`], in the node's network
//! namespace, and the agent serves port 53 (UDP and TCP) there, so a pod's
//! queries reach its own node with no DNAT and no conntrack entry on the
//! way (the service dataplane leaves that address alone).
//!
//! - [`wire`]: the DNS wire format, allocation-light.
//! - [`records`]: the pure core — Services and EndpointSlices reduced to
//!   records, an [`Index`] of the zone's names, and the
//!   answer to one question by the Kubernetes DNS specification.
//! - [`watch`]: the Service and EndpointSlice watches that rebuild and
//!   publish the index after each batch of changes.
//! - [`server`]: the UDP threads and the TCP listener answering from the
//!   published index.
//! - [`forward`]: other names, sent to the host's resolvers, with a cache.
//!
//! [`run`] puts them together for the agent.

pub mod forward;
pub mod records;
pub mod server;
pub mod watch;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use kube::Client;
use tokio::task::JoinSet;

use crate::agent::AgentConfig;
use crate::netlink::{LinkChange, LinuxNetlink, Netlink};
use crate::netns;
use records::{Index, Sources};
use server::{Published, Server, Sockets};

/// The link that holds the cluster DNS address on every node: a dummy,
/// or a bridge without ports where the kernel has no dummy driver.
pub const LINK: &str = "knit-dns";
/// The DNS port.
pub const PORT: u16 = 53;

/// Why the DNS server could not start (it tries again).
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The kernel refused (the link, the address, a namespace).
    #[error("{0}")]
    Os(#[from] crate::Error),
    /// A socket could not be bound or set up.
    #[error("sockets on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Makes [`LINK`] exist (a dummy, else a portless bridge), be up and hold
/// `addr/32`; the changes made.
pub fn ensure_link(nl: &impl Netlink, addr: Ipv4Addr) -> crate::Result<Vec<String>> {
    let mut changes = Vec::new();
    let link = match nl.link(LINK)? {
        Some(link) => link,
        None => {
            // A kernel built without the dummy driver (some microVM
            // kernels) still has bridges: one without ports holds an
            // address just as well.
            match nl.add_dummy(LINK) {
                Ok(()) => changes.push(format!("add dummy {LINK}")),
                Err(err) => {
                    nl.add_bridge(LINK).map_err(|_| err)?;
                    changes.push(format!("add bridge {LINK} (no dummy links here)"));
                }
            }
            nl.link(LINK)?
                .ok_or_else(|| crate::Error::NoLink(LINK.into()))?
        }
    };
    let want = IpNet::V4(Ipv4Net::new(addr, 32).expect("/32 is a valid prefix"));
    if !nl.addresses(LINK)?.contains(&want) {
        nl.add_address(LINK, want)?;
        changes.push(format!("add {want} to {LINK}"));
    }
    if !link.up {
        let up = LinkChange {
            up: Some(true),
            ..LinkChange::default()
        };
        nl.set_link(LINK, &up)?;
        changes.push(format!("set {LINK} up"));
    }
    Ok(changes)
}

/// Binds the server's sockets on `addr`, plus one for asking upstream, in
/// the calling thread's namespace (`netns` is left `None` for the caller
/// to fill in).
pub fn bind(addr: SocketAddr) -> Result<Sockets, DnsError> {
    let err = |source| DnsError::Bind { addr, source };
    let any = SocketAddr::new(
        match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        },
        0,
    );
    Ok(Sockets {
        udp: UdpSocket::bind(addr).map_err(err)?,
        tcp: TcpListener::bind(addr).map_err(err)?,
        upstream: UdpSocket::bind(any).map_err(err)?,
        netns: None,
    })
}

/// How many threads serve UDP: one per core, at least two, at most four.
pub fn udp_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4)
}

/// The agent's DNS server: follows the API, then holds the cluster DNS
/// address on [`LINK`] in the node's namespace and answers there. Runs
/// until dropped (which stops everything it started); failures to set up
/// are logged and retried, never fatal to the agent.
pub async fn run(client: Client, config: AgentConfig, node_nl: Arc<LinuxNetlink>) {
    let zone = config.dns.domain.clone();
    let ip = config.dns.nameserver;
    let published = Arc::new(Published::new(Index::build(
        &zone,
        ip,
        &Sources::default(),
        0,
    )));
    let (synced_tx, mut synced) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(watch::follow(
        client,
        zone.clone(),
        ip,
        published.clone(),
        synced_tx,
    ));
    // Answering before the first lists are in would deny names that exist.
    let _ = synced.wait_for(|s| *s).await;

    let resolv = std::fs::read_to_string(&config.host_resolv_conf).unwrap_or_default();
    let upstreams = forward::upstreams(&resolv, IpAddr::V4(ip));
    let _server = loop {
        match start(&config, &node_nl, published.clone(), upstreams.clone()).await {
            Ok(server) => break server,
            Err(err) => {
                tracing::warn!(error = %err, "DNS: starting; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    tracing::info!(node = %config.node_name, %ip, %zone, ?upstreams, "serving cluster DNS");
    while tasks.join_next().await.is_some() {}
    std::future::pending::<()>().await;
}

async fn start(
    config: &AgentConfig,
    node_nl: &Arc<LinuxNetlink>,
    published: Arc<Published>,
    upstreams: Vec<SocketAddr>,
) -> Result<Server, DnsError> {
    let ip = config.dns.nameserver;
    let nl = node_nl.clone();
    let changes = tokio::task::spawn_blocking(move || ensure_link(&*nl, ip))
        .await
        .map_err(|e| crate::Error::ThreadGone(e.to_string()))??;
    for change in changes {
        tracing::info!("DNS: {change}");
    }
    let addr = SocketAddr::from((ip, PORT));
    let sockets = match &config.node_netns {
        Some(file) => Sockets {
            netns: Some(file.clone()),
            ..netns::run_in(file, move || bind(addr))??
        },
        None => bind(addr)?,
    };
    Server::start(sockets, published, upstreams, udp_threads())
        .map_err(|source| DnsError::Bind { addr, source })
}

#[cfg(test)]
mod tests;
