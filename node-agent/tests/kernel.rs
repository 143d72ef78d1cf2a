//! The appliers against the real kernel, as root: a node namespace with
//! `cbr0` and two pod sandboxes, checked through our netlink code and
//! through `ip`, with pings and a TCP connection between the pods.
//!
//! Every test makes its own namespaces with unique short names and a
//! guard removes them even when the test fails; nothing here touches the
//! root namespace's links, routes, nftables or sysctls. Without root the
//! tests print `SKIP: needs root` and pass, unless `CI=true`.

mod common;

use common::{have_root, ip, tag};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ipnet::Ipv4Net;
use knit_node_agent::netlink::{LinuxNetlink, Netlink, ipv4_addresses};
use knit_node_agent::netns::{self, LinuxNetns, Netns};
use knit_node_agent::sandbox::{self, SandboxPlan};

const UID_A: &str = "0a0a0a0a-0000-4000-8000-00000000000a";
const UID_B: &str = "0b0b0b0b-0000-4000-8000-00000000000b";
const MTU: u32 = 1450;

/// Removes the namespaces it names when dropped, whatever happened; the
/// node namespace takes its bridge and host veths with it, and with them
/// the pods' ends.
struct Cleanup {
    names: Vec<String>,
}

impl Cleanup {
    fn new() -> Self {
        Cleanup { names: Vec::new() }
    }
    fn add(&mut self, name: &str) {
        self.names.push(name.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let netns = LinuxNetns::new();
        for name in self.names.iter().rev() {
            if let Err(err) = netns.delete(name) {
                eprintln!("cleanup of netns {name}: {err}");
            }
        }
    }
}

/// One ICMP echo from inside `ns` to `to`, answered within a second.
fn ping(ns: &str, to: Ipv4Addr) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W1", &to.to_string()])
        .output()
        .context("run ping (iputils-ping)")?;
    ensure!(
        out.status.success(),
        "ping {to} from {ns} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// What `ip` shows of a namespace's links, IPv4 addresses and routes, to
/// compare before and after a re-apply (without `-d`, whose bridge timers
/// move, and without IPv6, whose link-local addresses leave the tentative
/// state on their own).
fn ip_state(ns: &str) -> Result<String> {
    Ok([
        ip(&["-n", ns, "-o", "link", "show"])?,
        ip(&["-n", ns, "-o", "-4", "addr", "show"])?,
        ip(&["-n", ns, "-4", "route", "show", "table", "all"])?,
    ]
    .join("\n"))
}

fn cidr() -> Ipv4Net {
    "10.0.1.0/24".parse().unwrap()
}

/// A node namespace with the node network applied.
fn node(netns: &LinuxNetns, cleanup: &mut Cleanup, name: &str) -> Result<LinuxNetlink> {
    cleanup.add(name);
    assert!(netns.create(name)?);
    let node = netns.open(name)?;
    let plan = sandbox::node_network(cidr(), MTU)?;
    let changes = sandbox::apply_node(&node, &plan)?;
    ensure!(
        changes.iter().any(|c| c == "add bridge cbr0"),
        "{changes:?}"
    );
    Ok(node)
}

fn pod_plan(prefix: &str, uid: &str, ip: &str, cleanup: &mut Cleanup) -> Result<SandboxPlan> {
    let plan = sandbox::pod_sandbox(prefix, uid, ip.parse()?, cidr(), MTU)?;
    cleanup.add(&plan.names.netns);
    Ok(plan)
}

/// What our netlink code and `ip` both must see of an applied sandbox.
fn check_sandbox(
    netns: &LinuxNetns,
    node: &LinuxNetlink,
    node_ns: &str,
    plan: &SandboxPlan,
) -> Result<()> {
    let pod = netns.open(&plan.names.netns)?;
    let eth0 = pod.link("eth0")?.context("eth0 in the pod")?;
    ensure!(
        eth0.kind.as_deref() == Some("veth") && eth0.up && eth0.mtu == MTU,
        "{eth0:?}"
    );
    // The MAC follows the IP, so a reused address keeps its neighbours'
    // ARP entries right.
    let [a, b, c, d] = plan.pod_address.addr().octets();
    ensure!(
        eth0.mac == Some([0x0a, 0x58, a, b, c, d]),
        "eth0's MAC {:?}",
        eth0.mac
    );
    ensure!(pod.link("lo")?.context("lo")?.up, "lo is down");
    let addrs = ipv4_addresses(&pod.addresses("eth0")?);
    ensure!(addrs == vec![plan.pod_address], "eth0 addresses {addrs:?}");
    let routes = pod.routes()?;
    ensure!(
        routes.iter().any(|r| r.same_path(&plan.routes[0])),
        "no default route in {routes:?}"
    );
    let bridge = node.link("cbr0")?.context("cbr0")?;
    let host = node.link(&plan.names.host_veth)?.context("host veth")?;
    ensure!(
        host.master == Some(bridge.index),
        "{host:?} not on {bridge:?}"
    );
    ensure!(
        host.hairpin == Some(true) && host.up && host.mtu == MTU,
        "{host:?}"
    );
    ensure!(
        host.peer_index == Some(eth0.index) && eth0.peer_index == Some(host.index),
        "{host:?} and {eth0:?} are not a pair"
    );

    let ns = plan.names.netns.as_str();
    let addr = ip(&["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"])?;
    ensure!(
        addr.contains(&format!("inet {} ", plan.pod_address)),
        "{addr}"
    );
    let default = ip(&["-n", ns, "route", "show", "default"])?;
    ensure!(
        default.contains("default via 10.0.1.1 dev eth0 proto 107"),
        "{default}"
    );
    let lo = ip(&["-n", ns, "link", "show", "lo"])?;
    ensure!(lo.contains(",UP"), "{lo}");
    let port = ip(&["-n", node_ns, "-d", "link", "show", &plan.names.host_veth])?;
    for want in ["master cbr0", "hairpin on", &format!("mtu {MTU}")] {
        ensure!(port.contains(want), "{want:?} missing in {port}");
    }
    Ok(())
}

/// A TCP connection from pod `from` to `to:port`, served inside pod
/// `server`: sockets keep the namespace of the thread that made them, so
/// the listener made by `netns::run_in` is served from this thread.
fn tcp_between(server: &str, from: &str, to: Ipv4Addr) -> Result<()> {
    let run = |ns: &str| Path::new(netns::RUN_DIR).join(ns);
    let listener = netns::run_in(&run(server), move || TcpListener::bind((to, 0)))??;
    let port = listener.local_addr()?.port();
    let client = std::thread::spawn({
        let file = run(from);
        move || -> Result<String> {
            let mut stream = netns::run_in(&file, move || {
                TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_secs(2))
            })??;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"hello")?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok(reply)
        }
    });
    listener.set_nonblocking(false)?;
    let (mut conn, peer) = listener.accept()?;
    let mut got = [0u8; 5];
    conn.read_exact(&mut got)?;
    conn.write_all(format!("seen {}", peer.ip()).as_bytes())?;
    drop(conn);
    let reply = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))??;
    ensure!(&got == b"hello", "server got {got:?}");
    // The server saw the pod's own address: no NAT between pods.
    ensure!(reply.starts_with("seen 10.0.1."), "reply {reply}");
    Ok(())
}

#[test]
fn namespaces_are_created_opened_and_deleted_idempotently() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let netns = LinuxNetns::new();
    let mut cleanup = Cleanup::new();
    let name = format!("{}-ns", tag("kt"));
    cleanup.add(&name);

    assert!(!netns.exists(&name)?);
    assert!(netns.create(&name)?);
    assert!(!netns.create(&name)?, "second create makes nothing");
    assert!(netns.exists(&name)?);
    assert!(netns.list()?.contains(&name));
    assert!(
        ip(&["netns", "list"])?
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name.as_str()))
    );
    {
        let nl = netns.open(&name)?;
        let links = nl.links()?;
        assert_eq!(
            links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["lo"]
        );
        // A fresh namespace does not forward, whatever the host does.
        assert_eq!(nl.sysctl("net/ipv4/ip_forward")?.as_deref(), Some("0"));
        assert_eq!(nl.sysctl("net/no/such/key")?, None);
    }
    assert!(netns.delete(&name)?);
    assert!(!netns.delete(&name)?, "second delete removes nothing");
    assert!(!netns.exists(&name)?);
    assert!(!Path::new(netns::RUN_DIR).join(&name).exists());
    assert!(matches!(
        netns.open(&name),
        Err(knit_node_agent::Error::NoNamespace(_))
    ));

    // The empty mount point left by a crash before the bind mount.
    std::fs::write(Path::new(netns::RUN_DIR).join(&name), b"")?;
    assert!(!netns.exists(&name)?);
    assert!(netns.create(&name)?);
    assert!(netns.exists(&name)?);
    ip(&["-n", &name, "link", "show", "lo"])?;
    Ok(())
}

#[test]
fn two_pods_on_a_bridge_reach_each_other_and_leave_nothing_behind() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let root_forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
    let netns = LinuxNetns::new();
    let mut cleanup = Cleanup::new();
    let t = tag("kt");
    let node_ns = format!("{t}-node");
    let node = node(&netns, &mut cleanup, &node_ns)?;

    // The node network, seen by us and by ip.
    let bridge = node.link("cbr0")?.context("cbr0")?;
    assert_eq!(bridge.kind.as_deref(), Some("bridge"));
    assert!(bridge.up);
    assert_eq!(bridge.mtu, MTU);
    assert_eq!(bridge.mac, Some([0x0a, 0x58, 10, 0, 1, 1]));
    assert_eq!(
        ipv4_addresses(&node.addresses("cbr0")?),
        vec!["10.0.1.1/24".parse::<Ipv4Net>()?]
    );
    assert_eq!(node.sysctl("net/ipv4/ip_forward")?.as_deref(), Some("1"));
    let forwarding = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node_ns,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "1");
    let link = ip(&["-n", &node_ns, "-d", "link", "show", "cbr0"])?;
    assert!(
        link.contains(&format!("mtu {MTU}")) && link.contains("bridge"),
        "{link}"
    );
    let addr = ip(&["-n", &node_ns, "-o", "-4", "addr", "show", "dev", "cbr0"])?;
    assert!(addr.contains("inet 10.0.1.1/24 "), "{addr}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?,
        root_forwarding,
        "the root namespace's forwarding must not change"
    );

    // Two sandboxes.
    let prefix = format!("{t}-");
    let a = pod_plan(&prefix, UID_A, "10.0.1.2", &mut cleanup)?;
    let b = pod_plan(&prefix, UID_B, "10.0.1.3", &mut cleanup)?;
    for plan in [&a, &b] {
        let changes = sandbox::apply_sandbox(&netns, &node, plan)?;
        assert!(
            changes.iter().any(|c| c.starts_with("add veth")),
            "{changes:?}"
        );
        check_sandbox(&netns, &node, &node_ns, plan)?;
    }
    let (ns_a, ns_b) = (a.names.netns.as_str(), b.names.netns.as_str());
    ping(ns_a, "10.0.1.3".parse()?)?;
    ping(ns_b, "10.0.1.2".parse()?)?;
    ping(ns_a, "10.0.1.1".parse()?)?;
    ping(ns_b, "10.0.1.1".parse()?)?;
    tcp_between(ns_a, ns_b, "10.0.1.2".parse()?)?;

    // Re-applying changes nothing, in our account and in the kernel's.
    let before: Vec<String> = [&node_ns, &a.names.netns, &b.names.netns]
        .iter()
        .map(|ns| ip_state(ns))
        .collect::<Result<_>>()?;
    let plan = sandbox::node_network(cidr(), MTU)?;
    assert_eq!(sandbox::apply_node(&node, &plan)?, Vec::<String>::new());
    for plan in [&a, &b] {
        assert_eq!(
            sandbox::apply_sandbox(&netns, &node, plan)?,
            Vec::<String>::new()
        );
    }
    let after: Vec<String> = [&node_ns, &a.names.netns, &b.names.netns]
        .iter()
        .map(|ns| ip_state(ns))
        .collect::<Result<_>>()?;
    assert_eq!(before, after);

    // Removing one pod leaves the other working; removing both leaves the
    // node as the node plan made it.
    assert!(sandbox::remove_sandbox(&netns, &node, &a.names)?);
    assert_eq!(
        node.link("cbr0")?.context("cbr0")?.mac,
        bridge.mac,
        "the gateway's MAC must not move when a port goes"
    );
    assert!(!netns.exists(ns_a)?);
    assert!(node.link(&a.names.host_veth)?.is_none());
    assert!(!ip(&["netns", "list"])?.contains(ns_a));
    ping(ns_b, "10.0.1.1".parse()?)?;
    assert!(
        !sandbox::remove_sandbox(&netns, &node, &a.names)?,
        "second removal"
    );
    assert!(sandbox::remove_sandbox(&netns, &node, &b.names)?);
    let mut left: Vec<String> = node.links()?.into_iter().map(|l| l.name).collect();
    left.sort();
    assert_eq!(left, ["cbr0", "lo"]);
    let ours: Vec<String> = netns
        .list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(ours, std::slice::from_ref(&node_ns));
    // The root namespace never saw our links.
    let root_links = ip(&["-o", "link", "show"])?;
    assert!(!root_links.contains(&a.names.host_veth) && !root_links.contains(&b.names.host_veth));
    Ok(())
}

#[test]
fn sandboxes_left_half_built_by_a_crash_are_completed() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let netns = LinuxNetns::new();
    let mut cleanup = Cleanup::new();
    let t = tag("kt");
    let node_ns = format!("{t}-node");
    let node = node(&netns, &mut cleanup, &node_ns)?;
    let prefix = format!("{t}-");
    let a = pod_plan(&prefix, UID_A, "10.0.1.2", &mut cleanup)?;
    let b = pod_plan(&prefix, UID_B, "10.0.1.3", &mut cleanup)?;
    sandbox::apply_sandbox(&netns, &node, &b)?;
    let ns_a = a.names.netns.as_str();

    // The namespace and a bare veth pair, as a crash after `add veth` leaves
    // them: the pair is kept and configured.
    netns.create(ns_a)?;
    ip(&[
        "-n",
        &node_ns,
        "link",
        "add",
        &a.names.host_veth,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns_a,
    ])?;
    let changes = sandbox::apply_sandbox(&netns, &node, &a)?;
    assert!(!changes.iter().any(|c| c.contains("veth")), "{changes:?}");
    assert!(
        changes.iter().any(|c| c.starts_with("add route default")),
        "{changes:?}"
    );
    check_sandbox(&netns, &node, &node_ns, &a)?;
    ping(ns_a, "10.0.1.3".parse()?)?;

    // A host veth whose peer is not in the pod, and a stray eth0 inside:
    // both replaced by a proper pair.
    sandbox::remove_sandbox(&netns, &node, &a.names)?;
    netns.create(ns_a)?;
    ip(&[
        "-n",
        &node_ns,
        "link",
        "add",
        &a.names.host_veth,
        "type",
        "veth",
        "peer",
        "name",
        "stray0",
    ])?;
    ip(&[
        "-n", ns_a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])?;
    let changes = sandbox::apply_sandbox(&netns, &node, &a)?;
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("delete stale link eth0")),
        "{changes:?}"
    );
    assert!(
        node.link("stray0")?.is_none(),
        "the stale pair went as a whole"
    );
    check_sandbox(&netns, &node, &node_ns, &a)?;
    ping(ns_a, "10.0.1.3".parse()?)?;

    // An extra address and route added by hand are taken away.
    ip(&["-n", ns_a, "addr", "add", "10.0.1.99/24", "dev", "eth0"])?;
    ip(&[
        "-n",
        ns_a,
        "route",
        "add",
        "10.9.0.0/16",
        "via",
        "10.0.1.1",
        "proto",
        "107",
    ])?;
    let changes = sandbox::apply_sandbox(&netns, &node, &a)?;
    assert_eq!(changes.len(), 2, "{changes:?}");
    check_sandbox(&netns, &node, &node_ns, &a)?;
    assert!(!ip(&["-n", ns_a, "route", "show"])?.contains("10.9.0.0/16"));

    // Only the mount-point file of a namespace: made into a sandbox.
    sandbox::remove_sandbox(&netns, &node, &a.names)?;
    std::fs::write(Path::new(netns::RUN_DIR).join(ns_a), b"")?;
    sandbox::apply_sandbox(&netns, &node, &a)?;
    check_sandbox(&netns, &node, &node_ns, &a)?;
    ping(ns_a, "10.0.1.3".parse()?)?;
    bail_if_leftovers(&netns, &node, &[&a, &b])
}

/// Removes the sandboxes and fails if anything of them is still there.
fn bail_if_leftovers(
    netns: &LinuxNetns,
    node: &LinuxNetlink,
    plans: &[&SandboxPlan],
) -> Result<()> {
    for plan in plans {
        sandbox::remove_sandbox(netns, node, &plan.names)?;
        if netns.exists(&plan.names.netns)? || node.link(&plan.names.host_veth)?.is_some() {
            bail!("sandbox {} left something behind", plan.names.netns);
        }
    }
    Ok(())
}
