//! [`Netlink`] over rtnetlink, on a thread that lives in one network
//! namespace.
//!
//! A netlink socket talks to the namespace of the thread that opened it, so
//! each [`LinuxNetlink`] owns a dedicated `std::thread`: it enters the
//! namespace (`setns`), builds a current-thread tokio runtime, opens the
//! rtnetlink connection there and then serves requests sent over a
//! channel. No tokio worker ever changes namespace. The sysctl calls run on
//! the same thread because `/proc/sys/net` shows the calling thread's
//! namespace. Dropping the handle stops the thread and waits for it, so a
//! namespace deleted afterwards is not kept alive by it.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoPortData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkDummy, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::{Link, LinkChange, Netlink, Route, check_sysctl_key};
use crate::{Error, Result};

type Job = Box<dyn FnOnce(&Worker) + Send>;

/// The state that lives on the namespace's thread.
struct Worker {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

/// A [`Netlink`] handle inside one network namespace.
pub struct LinuxNetlink {
    name: String,
    run_dir: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LinuxNetlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxNetlink")
            .field("netns", &self.name)
            .finish()
    }
}

impl LinuxNetlink {
    /// A handle in the namespace the process itself is in (a node agent's
    /// own namespace). Named peers of veths are looked up in
    /// [`crate::netns::RUN_DIR`].
    pub fn current() -> Result<Self> {
        Self::start(
            "self".to_string(),
            None,
            PathBuf::from(crate::netns::RUN_DIR),
        )
    }

    /// A handle in the namespace held by `ns_file`; `name` is only for
    /// messages, `run_dir` is where veth peers' namespaces are found.
    pub fn open(name: &str, ns_file: &Path, run_dir: PathBuf) -> Result<Self> {
        Self::start(name.to_string(), Some(ns_file.to_path_buf()), run_dir)
    }

    fn start(name: String, ns_file: Option<PathBuf>, run_dir: PathBuf) -> Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<()>>(1);
        let thread_name = format!("netlink-{name}");
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let worker = match Worker::start(ns_file.as_deref()) {
                    Ok(worker) => {
                        let _ = ready_tx.send(Ok(()));
                        worker
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                while let Ok(job) = inbox.recv() {
                    job(&worker);
                }
            })
            .map_err(|source| Error::Io {
                op: "spawn the netlink thread for",
                path: PathBuf::from(&name),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(LinuxNetlink {
                name,
                run_dir,
                jobs: Some(jobs),
                thread: Some(thread),
            }),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(err)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::ThreadGone(name))
            }
        }
    }

    /// Runs `f` on the namespace's thread and waits for its answer.
    fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Worker) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |worker| {
            let _ = tx.send(f(worker));
        });
        let gone = || Error::ThreadGone(self.name.clone());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }

    /// Runs an async netlink exchange on the namespace's thread.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
    {
        self.call(move |w| w.runtime.block_on(f(w.handle.clone())))
    }
}

impl Drop for LinuxNetlink {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; waiting for it means
        // the thread has left the namespace when drop returns.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Worker {
    fn start(ns_file: Option<&Path>) -> Result<Self> {
        if let Some(file) = ns_file {
            crate::netns::enter(file)?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| Error::Io {
                op: "build a runtime for",
                path: PathBuf::from("netlink"),
                source,
            })?;
        // The socket is opened here, after setns, so it belongs to the
        // namespace; the connection task runs whenever the thread blocks on
        // a request.
        let handle = runtime.block_on(async {
            let (connection, handle, _messages) =
                rtnetlink::new_connection().map_err(|source| Error::Io {
                    op: "open",
                    path: PathBuf::from("netlink socket"),
                    source,
                })?;
            tokio::spawn(connection);
            Ok::<_, Error>(handle)
        })?;
        Ok(Worker { runtime, handle })
    }
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let op = op.into();
    move |source| Error::Netlink { op, source }
}

fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(msg) => Ok(msg),
        Err(err) if errno_of(&err) == Some(libc_enodev()) => Ok(None),
        Err(err) => Err(nl(format!("get link {name}"))(err)),
    }
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32> {
    get_link(handle, name)
        .await?
        .map(|msg| msg.header.index)
        .ok_or_else(|| Error::NoLink(name.to_string()))
}

const fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

fn to_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        peer_index: None,
        hairpin: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(mac) => link.mac = <[u8; 6]>::try_from(mac.as_slice()).ok(),
            LinkAttribute::Controller(index) if *index != 0 => link.master = Some(*index),
            LinkAttribute::Link(index) if *index != 0 => link.peer_index = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            for p in port {
                                if let InfoBridgePort::HairpinMode(on) = p {
                                    link.hairpin = Some(*on);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn address_of(msg: &AddressMessage) -> Option<IpNet> {
    // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL is the
    // interface's own address when present, so prefer it.
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    IpNet::new(local.or(address)?, msg.header.prefix_len).ok()
}

async fn addresses_of(handle: &Handle, index: u32) -> Result<Vec<(IpNet, AddressMessage)>> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| address_of(&m).map(|a| (a, m)))
        .collect())
}

/// The main table's IPv4 unicast routes, with the messages to delete them.
async fn routes_of(handle: &Handle) -> Result<Vec<(Route, RouteMessage)>> {
    let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let msgs: Vec<RouteMessage> = handle
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list routes"))?;
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list links"))?;
    let name_of = |index: u32| {
        links
            .iter()
            .find(|l| l.header.index == index)
            .map(|l| to_link(l).name)
    };
    let mut out = Vec::new();
    for msg in msgs {
        if msg.header.address_family != AddressFamily::Inet || msg.header.kind != RouteType::Unicast
        {
            continue;
        }
        let mut table = u32::from(msg.header.table);
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut via = None;
        let mut dev = None;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
                RouteAttribute::Oif(index) => dev = name_of(*index),
                _ => {}
            }
        }
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            continue;
        }
        let Ok(dst) = Ipv4Net::new(dst, msg.header.destination_prefix_length) else {
            continue;
        };
        let route = Route {
            dst,
            via,
            dev,
            proto: u8::from(msg.header.protocol),
        };
        out.push((route, msg));
    }
    Ok(out)
}

impl Netlink for LinuxNetlink {
    fn links(&self) -> Result<Vec<Link>> {
        self.run(|h| async move {
            let msgs: Vec<LinkMessage> = h
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(nl("list links"))?;
            Ok(msgs.iter().map(to_link).collect())
        })
    }

    fn link(&self, name: &str) -> Result<Option<Link>> {
        let name = name.to_string();
        self.run(|h| async move { Ok(get_link(&h, &name).await?.as_ref().map(to_link)) })
    }

    fn add_bridge(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.run(|h| async move {
            let msg = LinkBridge::new(&name).build();
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(nl(format!("add bridge {name}")))
        })
    }

    fn add_dummy(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.run(|h| async move {
            let msg = LinkDummy::new(&name).build();
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(nl(format!("add dummy {name}")))
        })
    }

    fn add_veth(&self, name: &str, mtu: u32, peer: &str, peer_netns: &str) -> Result<()> {
        crate::netns::check_name(peer_netns)?;
        let peer_file = self.run_dir.join(peer_netns);
        let (name, peer, peer_netns) = (name.to_string(), peer.to_string(), peer_netns.to_string());
        self.call(move |w| {
            // Open the peer's namespace on this thread: the fd only has to
            // live until the kernel has read IFLA_NET_NS_FD.
            let ns = fs::File::open(&peer_file).map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => Error::NoNamespace(peer_netns.clone()),
                _ => Error::Io {
                    op: "open",
                    path: peer_file.clone(),
                    source,
                },
            })?;
            let peer_msg = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new()
                .name(peer.clone())
                .mtu(mtu)
                .setns_by_fd(ns.as_raw_fd())
                .build();
            let msg = LinkVeth::new(&name, &peer)
                .mtu(mtu)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
                .build();
            let handle = w.handle.clone();
            let result = w.runtime.block_on(async move {
                handle.link().add(msg).execute().await.map_err(nl(format!(
                    "add veth {name} peer {peer} in netns {peer_netns}"
                )))
            });
            drop(ns);
            result
        })
    }

    fn delete_link(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.run(|h| async move {
            let index = index_of(&h, &name).await?;
            h.link()
                .del(index)
                .execute()
                .await
                .map_err(nl(format!("delete link {name}")))
        })
    }

    fn set_link(&self, name: &str, change: &LinkChange) -> Result<()> {
        let name = name.to_string();
        let change = change.clone();
        self.run(|h| async move {
            let index = index_of(&h, &name).await?;
            let mut msg = LinkUnspec::new_with_index(index);
            if let Some(mtu) = change.mtu {
                msg = msg.mtu(mtu);
            }
            if let Some(mac) = change.mac {
                msg = msg.address(mac.to_vec());
            }
            match &change.master {
                Some(Some(bridge)) => msg = msg.controller(index_of(&h, bridge).await?),
                Some(None) => msg = msg.nocontroller(),
                None => {}
            }
            match change.up {
                Some(true) => msg = msg.up(),
                Some(false) => msg = msg.down(),
                None => {}
            }
            h.link()
                .set(msg.build())
                .execute()
                .await
                .map_err(nl(format!("set link {name} {change:?}")))
        })
    }

    fn set_hairpin(&self, name: &str, on: bool) -> Result<()> {
        let name = name.to_string();
        self.run(move |h| async move {
            let index = index_of(&h, &name).await?;
            let msg = LinkBridgePort::new(index).hairpin(on).build();
            h.link()
                .set_port(msg)
                .execute()
                .await
                .map_err(nl(format!("set hairpin {on} on {name}")))
        })
    }

    fn addresses(&self, name: &str) -> Result<Vec<IpNet>> {
        let name = name.to_string();
        self.run(|h| async move {
            let index = index_of(&h, &name).await?;
            Ok(addresses_of(&h, index)
                .await?
                .into_iter()
                .map(|(a, _)| a)
                .collect())
        })
    }

    fn add_address(&self, name: &str, addr: IpNet) -> Result<()> {
        let name = name.to_string();
        self.run(move |h| async move {
            let index = index_of(&h, &name).await?;
            h.address()
                .add(index, addr.addr(), addr.prefix_len())
                .execute()
                .await
                .map_err(nl(format!("add address {addr} to {name}")))
        })
    }

    fn delete_address(&self, name: &str, addr: IpNet) -> Result<()> {
        let name = name.to_string();
        self.run(move |h| async move {
            let index = index_of(&h, &name).await?;
            let found = addresses_of(&h, index)
                .await?
                .into_iter()
                .find(|(a, _)| *a == addr)
                .map(|(_, msg)| msg);
            match found {
                Some(msg) => h
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl(format!("delete address {addr} from {name}"))),
                None => Ok(()),
            }
        })
    }

    fn routes(&self) -> Result<Vec<Route>> {
        self.run(|h| async move { Ok(routes_of(&h).await?.into_iter().map(|(r, _)| r).collect()) })
    }

    fn add_route(&self, route: &Route) -> Result<()> {
        let route = route.clone();
        self.run(|h| async move {
            let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(route.dst.addr(), route.dst.prefix_len())
                .protocol(RouteProtocol::from(route.proto));
            if let Some(via) = route.via {
                builder = builder.gateway(via);
            } else {
                builder = builder.scope(RouteScope::Link);
            }
            if let Some(dev) = &route.dev {
                builder = builder.output_interface(index_of(&h, dev).await?);
            }
            h.route()
                .add(builder.build())
                .execute()
                .await
                .map_err(nl(format!("add route {route}")))
        })
    }

    fn delete_route(&self, route: &Route) -> Result<()> {
        let route = route.clone();
        self.run(|h| async move {
            let found = routes_of(&h)
                .await?
                .into_iter()
                .find(|(r, _)| *r == route)
                .map(|(_, msg)| msg);
            match found {
                Some(msg) => h
                    .route()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl(format!("delete route {route}"))),
                None => Ok(()),
            }
        })
    }

    fn sysctl(&self, key: &str) -> Result<Option<String>> {
        check_sysctl_key(key)?;
        let path = Path::new("/proc/sys").join(key);
        self.call(move |_| match fs::read_to_string(&path) {
            Ok(value) => Ok(Some(value.trim().to_string())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                op: "read",
                path,
                source,
            }),
        })
    }

    fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        check_sysctl_key(key)?;
        let path = Path::new("/proc/sys").join(key);
        let value = value.to_string();
        self.call(move |_| {
            fs::write(&path, value.as_bytes()).map_err(|source| Error::Io {
                op: "write",
                path,
                source,
            })
        })
    }
}
