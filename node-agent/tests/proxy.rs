//! The service dataplane on the real kernel, as root: a node namespace
//! with `cbr0`, an uplink to an "outside" namespace, two server pods and a
//! client pod; the `ip knit` table applied by the [`Proxier`] inside the
//! node namespace; connections from the client pod (and the outside) to a
//! ClusterIP and a NodePort; the incremental planner's partial syncs; the
//! node's own cluster DNS address left untracked.
//!
//! Every test makes its own namespaces with unique short names and a
//! guard removes them (and with them their nftables tables) even when the
//! test fails; nothing here touches the root namespace's ruleset. Without
//! root the tests print `SKIP: needs root` and pass, unless `CI=true`.

mod common;

use common::{cmd, have_root, tag};

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use knit_node_agent::netlink::Netlink;
use knit_node_agent::netns::{self, LinuxNetns, Netns};
use knit_node_agent::proxy::{self, LinuxFirewall, NodeInfo, Planner, Proxier, SyncKind};
use knit_node_agent::sandbox;
use serde_json::json;

const MTU: u32 = 1450;
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 241, 152);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 3);
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 9);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 4);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

fn run_file(ns: &str) -> PathBuf {
    Path::new(netns::RUN_DIR).join(ns)
}

/// A TCP server in a pod: answers every connection with its name and the
/// peer address it saw, until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, ip: Ipv4Addr, port: u16, name: &'static str) -> Result<Server> {
        let listener = netns::run_in(&run_file(ns), move || TcpListener::bind((ip, port)))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(format!("{name} {}", peer.ip()).as_bytes());
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP echo in a pod: answers every datagram with its name.
fn udp_server(ns: &str, ip: Ipv4Addr, port: u16, name: &'static str) -> Result<Server> {
    let sock = netns::run_in(&run_file(ns), move || UdpSocket::bind((ip, port)))??;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !flag.load(Ordering::Relaxed) {
            if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), peer);
            }
        }
    });
    Ok(Server {
        stop,
        thread: Some(thread),
    })
}

/// `count` TCP connections from namespace `ns` to `to`; each reply, or
/// the error kind of a failed connect.
fn connect_many(ns: &str, to: SocketAddr, count: usize) -> Result<Vec<Result<String, ErrorKind>>> {
    Ok(netns::run_in(&run_file(ns), move || {
        (0..count)
            .map(|_| {
                let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                    .map_err(|e| e.kind())?;
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .map_err(|e| e.kind())?;
                let mut reply = String::new();
                s.read_to_string(&mut reply).map_err(|e| e.kind())?;
                Ok(reply)
            })
            .collect()
    })?)
}

/// Names of the servers that answered; fails on any error.
fn answers(ns: &str, to: SocketAddr, count: usize) -> Result<Vec<String>> {
    connect_many(ns, to, count)?
        .into_iter()
        .map(|r| r.map_err(|kind| anyhow::anyhow!("connect to {to} from {ns}: {kind:?}")))
        .collect()
}

fn count(replies: &[String], name: &str) -> usize {
    replies
        .iter()
        .filter(|r| r.split(' ').next() == Some(name))
        .count()
}

/// Removes the namespaces when dropped, whatever happened.
struct Lab {
    names: Vec<String>,
    node: String,
    client: String,
    pod_a: String,
    pod_b: String,
    outside: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let netns = LinuxNetns::new();
        for name in self.names.iter().rev() {
            if let Err(err) = netns.delete(name) {
                eprintln!("cleanup of netns {name}: {err}");
            }
        }
    }
}

/// Node (cbr0 10.0.1.1/24, uplink 10.100.0.3/24 to the outside namespace
/// 10.100.0.9, default route there), pods A and B, a client pod.
fn lab() -> Result<Lab> {
    let t = tag("kp");
    let netns = LinuxNetns::new();
    let cidr: Ipv4Net = "10.0.1.0/24".parse()?;
    let mut lab = Lab {
        names: Vec::new(),
        node: format!("{t}-node"),
        client: String::new(),
        pod_a: String::new(),
        pod_b: String::new(),
        outside: format!("{t}-out"),
    };
    for ns in [lab.node.clone(), lab.outside.clone()] {
        lab.names.push(ns.clone());
        netns.create(&ns)?;
    }
    let node = netns.open(&lab.node)?;
    sandbox::apply_node(&node, &sandbox::node_network(cidr, MTU)?)?;
    // br_netfilter: replies bridged on cbr0 between two pods must pass the
    // ip hooks to be un-DNATed. New namespaces start with it on; say so
    // if this kernel differs, and turn it on in the node namespace only.
    let key = "net/bridge/bridge-nf-call-iptables";
    match node.sysctl(key)? {
        Some(v) if v == "1" => {}
        Some(_) => node.set_sysctl(key, "1")?,
        None => bail!("no br_netfilter here: /proc/sys/{key} is missing"),
    }
    for (i, uid) in [
        "0a0a0a0a-0000-4000-8000-00000000000a",
        "0b0b0b0b-0000-4000-8000-00000000000b",
        "0c0c0c0c-0000-4000-8000-00000000000c",
    ]
    .iter()
    .enumerate()
    {
        let ip = [POD_A, POD_B, CLIENT][i];
        let plan = sandbox::pod_sandbox(&format!("{t}-"), uid, ip, cidr, MTU)?;
        lab.names.push(plan.names.netns.clone());
        sandbox::apply_sandbox(&netns, &node, &plan)?;
        match i {
            0 => lab.pod_a = plan.names.netns.clone(),
            1 => lab.pod_b = plan.names.netns.clone(),
            _ => lab.client = plan.names.netns.clone(),
        }
    }
    let up = format!("{t}u");
    cmd(
        "ip",
        &[
            "-n",
            &lab.node,
            "link",
            "add",
            &up,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.outside,
        ],
    )?;
    cmd(
        "ip",
        &[
            "-n",
            &lab.node,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            &up,
        ],
    )?;
    cmd("ip", &["-n", &lab.node, "link", "set", &up, "up"])?;
    cmd(
        "ip",
        &[
            "-n",
            &lab.node,
            "route",
            "add",
            "default",
            "via",
            &OUTSIDE_IP.to_string(),
        ],
    )?;
    cmd(
        "ip",
        &[
            "-n",
            &lab.outside,
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/24"),
            "dev",
            "eth0",
        ],
    )?;
    cmd("ip", &["-n", &lab.outside, "link", "set", "eth0", "up"])?;
    cmd("ip", &["-n", &lab.outside, "link", "set", "lo", "up"])?;
    Ok(lab)
}

/// A [`lab`] whose pods a and b serve their names on TCP 8080.
fn serving_lab() -> Result<(Lab, [Server; 2])> {
    let lab = lab()?;
    let a = Server::start(&lab.pod_a, POD_A, 8080, "a")?;
    let b = Server::start(&lab.pod_b, POD_B, 8080, "b")?;
    Ok((lab, [a, b]))
}

fn node_info() -> NodeInfo {
    NodeInfo {
        name: "node-1".into(),
        ips: vec![NODE_IP],
        pod_cidr: "10.0.1.0/24".parse().unwrap(),
        cluster_cidr: "10.0.0.0/14".parse().unwrap(),
        local_dns: None,
    }
}

/// The article's service, with `extra` merged into its spec.
fn service_test(extra: serde_json::Value) -> Service {
    let mut spec = json!({
        "clusterIP": CLUSTER_IP.to_string(),
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": "service-test", "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(service: &str, proto: &str, port: u16, ips: &[Ipv4Addr]) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "nodeName": "node-1", "conditions": {"ready": true}}))
        .collect();
    let port_name = if proto == "UDP" { "dns" } else { "http" };
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-x"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": proto}],
    }))
    .unwrap()
}

fn svc_addr() -> SocketAddr {
    SocketAddr::from((CLUSTER_IP, 80))
}

#[test]
fn a_cluster_ip_spreads_over_ready_endpoints_and_refuses_without_any() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let (lab, _servers) = serving_lab()?;
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(run_file(&lab.node)));
    let svc = [service_test(json!({}))];

    let both = proxy::desired(
        &node_info(),
        &svc,
        &[slice("service-test", "TCP", 8080, &[POD_A, POD_B])],
    );
    assert_eq!(proxier.sync(both)?.kind, SyncKind::Full);
    let replies = answers(&lab.client, svc_addr(), 100)?;
    let (a, b) = (count(&replies, "a"), count(&replies, "b"));
    assert!(
        (35..=65).contains(&a) && (35..=65).contains(&b),
        "a={a} b={b}"
    );
    // Pod to pod through the service: no SNAT, the server sees the client.
    assert!(
        replies.iter().all(|r| r.ends_with(&format!(" {CLIENT}"))),
        "{replies:?}"
    );
    // An intact table passes the drift check.
    assert!(
        !proxier.check()?,
        "the drift check saw drift in a fresh table"
    );

    // A port the service does not serve is refused, not left hanging.
    let started = Instant::now();
    let other = connect_many(&lab.client, SocketAddr::from((CLUSTER_IP, 81)), 1)?;
    assert_eq!(other, [Err(ErrorKind::ConnectionRefused)]);
    assert!(started.elapsed() < Duration::from_secs(1));

    // One endpoint leaves: a partial sync, and only A answers.
    let one = proxy::desired(
        &node_info(),
        &svc,
        &[slice("service-test", "TCP", 8080, &[POD_A])],
    );
    assert_eq!(proxier.sync(one)?.kind, SyncKind::Partial);
    let replies = answers(&lab.client, svc_addr(), 20)?;
    assert_eq!(count(&replies, "a"), 20, "{replies:?}");

    // Hairpin: A reaches itself through the service, masqueraded to the
    // gateway's address so that the reply comes back through the node.
    let replies = answers(&lab.pod_a, svc_addr(), 3)?;
    assert_eq!(replies, vec![format!("a {GATEWAY}"); 3]);

    // No endpoint: refused at once (TCP reset), never a timeout.
    let none = proxy::desired(
        &node_info(),
        &svc,
        &[slice("service-test", "TCP", 8080, &[])],
    );
    assert_eq!(proxier.sync(none)?.kind, SyncKind::Partial);
    let started = Instant::now();
    let refused = connect_many(&lab.client, svc_addr(), 5)?;
    assert_eq!(refused, vec![Err(ErrorKind::ConnectionRefused); 5]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Back to two.
    let both = proxy::desired(
        &node_info(),
        &svc,
        &[slice("service-test", "TCP", 8080, &[POD_A, POD_B])],
    );
    assert_eq!(proxier.sync(both)?.kind, SyncKind::Partial);
    let replies = answers(&lab.client, svc_addr(), 40)?;
    assert!(
        count(&replies, "a") > 0 && count(&replies, "b") > 0,
        "{replies:?}"
    );
    assert!(
        !proxier.check()?,
        "partial syncs left a table the drift check rejects"
    );
    Ok(())
}

#[test]
fn node_ports_answer_on_the_node_address_with_both_traffic_policies() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let (lab, _servers) = serving_lab()?;
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(run_file(&lab.node)));
    let node_port = SocketAddr::from((NODE_IP, 30080));
    let ports = json!([{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]);
    let slices = [slice("service-test", "TCP", 8080, &[POD_A, POD_B])];

    let cluster = [service_test(json!({"type": "NodePort", "ports": ports}))];
    proxier.sync(proxy::desired(&node_info(), &cluster, &slices))?;
    // From outside: masqueraded (externalTrafficPolicy: Cluster).
    let replies = answers(&lab.outside, node_port, 20)?;
    assert!(
        replies.iter().all(|r| r.ends_with(&format!(" {GATEWAY}"))),
        "{replies:?}"
    );
    assert!(
        count(&replies, "a") > 0 && count(&replies, "b") > 0,
        "{replies:?}"
    );
    // From a pod, and from the node itself.
    answers(&lab.client, node_port, 5)?;
    answers(&lab.node, node_port, 5)?;

    // externalTrafficPolicy: Local keeps the client's address.
    let local = [service_test(
        json!({"type": "NodePort", "ports": ports, "externalTrafficPolicy": "Local"}),
    )];
    assert_eq!(
        proxier
            .sync(proxy::desired(&node_info(), &local, &slices))?
            .kind,
        SyncKind::Partial
    );
    let replies = answers(&lab.outside, node_port, 10)?;
    assert!(
        replies
            .iter()
            .all(|r| r.ends_with(&format!(" {OUTSIDE_IP}"))),
        "{replies:?}"
    );

    // A HostPort on the same node address: straight to pod B.
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "hp", "namespace": "default"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 8080, "hostPort": 8081}]}]},
        "status": {"phase": "Running", "podIP": POD_B.to_string()},
    }))?;
    proxier.sync(proxy::desired_with_pods(
        &node_info(),
        &local,
        &slices,
        &[pod],
    ))?;
    let replies = answers(&lab.outside, SocketAddr::from((NODE_IP, 8081)), 5)?;
    assert_eq!(replies, vec![format!("b {OUTSIDE_IP}"); 5]);

    // No endpoints: the NodePort refuses at once too.
    let empty = [slice("service-test", "TCP", 8080, &[])];
    proxier.sync(proxy::desired(&node_info(), &local, &empty))?;
    let refused = connect_many(&lab.outside, node_port, 2)?;
    assert_eq!(refused, vec![Err(ErrorKind::ConnectionRefused); 2]);
    Ok(())
}

#[test]
fn client_ip_affinity_pins_a_client_to_one_endpoint() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let (lab, _servers) = serving_lab()?;
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(run_file(&lab.node)));
    let svc = [service_test(json!({"sessionAffinity": "ClientIP"}))];
    let slices = [slice("service-test", "TCP", 8080, &[POD_A, POD_B])];
    proxier.sync(proxy::desired(&node_info(), &svc, &slices))?;
    let replies = answers(&lab.client, svc_addr(), 30)?;
    let first = replies[0].split(' ').next().unwrap().to_string();
    assert_eq!(count(&replies, &first), 30, "{replies:?}");
    // The node namespace sees the affinity entry for the client.
    let sets = cmd(
        "ip",
        &[
            "netns", "exec", &lab.node, "nft", "list", "sets", "table", "ip", "knit",
        ],
    )?;
    assert!(sets.contains(&CLIENT.to_string()), "{sets}");
    Ok(())
}

#[test]
fn the_drift_check_repairs_a_flushed_or_deleted_table() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let lab = lab()?;
    let _a = Server::start(&lab.pod_a, POD_A, 8080, "a")?;
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(run_file(&lab.node)));
    let svc = [service_test(json!({}))];
    proxier.sync(proxy::desired(
        &node_info(),
        &svc,
        &[slice("service-test", "TCP", 8080, &[POD_A])],
    ))?;
    answers(&lab.client, svc_addr(), 3)?;
    assert!(!proxier.check()?);

    for damage in [
        &["flush", "table", "ip", "knit"][..],
        &["delete", "table", "ip", "knit"],
        &["flush", "map", "ip", "knit", "service-ips"],
    ] {
        let mut args = vec!["netns", "exec", lab.node.as_str(), "nft"];
        args.extend_from_slice(damage);
        cmd("ip", &args)?;
        // Broken now: nothing catches the service IP.
        let broken = connect_many(&lab.client, svc_addr(), 1)?;
        assert!(broken[0].is_err(), "{damage:?}: {broken:?}");
        assert!(proxier.check()?, "{damage:?} went unnoticed");
        answers(&lab.client, svc_addr(), 3).with_context(|| format!("after {damage:?}"))?;
        assert!(!proxier.check()?);
    }
    Ok(())
}

#[test]
fn udp_flows_follow_an_endpoint_change() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let lab = lab()?;
    let _a = udp_server(&lab.pod_a, POD_A, 5353, "a")?;
    let _b = udp_server(&lab.pod_b, POD_B, 5353, "b")?;
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(run_file(&lab.node)));
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"clusterIP": "10.3.240.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))?;
    let svc = [svc];
    let to = SocketAddr::from((Ipv4Addr::new(10, 3, 240, 10), 53));
    // One client socket, one source port: one conntrack flow throughout.
    let sock = netns::run_in(&run_file(&lab.client), || UdpSocket::bind((CLIENT, 0)))??;
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    let ask = |sock: &UdpSocket| -> Result<String> {
        let mut buf = [0u8; 16];
        // A few tries: UDP, and the first datagram after a change.
        for _ in 0..5 {
            sock.send_to(b"q", to)?;
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        bail!("no UDP answer from {to}")
    };

    proxier.sync(proxy::desired(
        &node_info(),
        &svc,
        &[slice("dns", "UDP", 5353, &[POD_A])],
    ))?;
    assert_eq!(ask(&sock)?, "a");
    let report = proxier.sync(proxy::desired(
        &node_info(),
        &svc,
        &[slice("dns", "UDP", 5353, &[POD_B])],
    ))?;
    assert_eq!(report.conntrack.len(), 1, "{report:?}");
    assert!(report.conntrack_errors.is_empty(), "{report:?}");
    // Without the conntrack cleanup the flow would stay on A for minutes.
    assert_eq!(ask(&sock)?, "b");

    // N → 0 → N.
    proxier.sync(proxy::desired(
        &node_info(),
        &svc,
        &[slice("dns", "UDP", 5353, &[])],
    ))?;
    assert!(ask(&sock).is_err());
    proxier.sync(proxy::desired(
        &node_info(),
        &svc,
        &[slice("dns", "UDP", 5353, &[POD_A])],
    ))?;
    assert_eq!(ask(&sock)?, "a");
    Ok(())
}

#[test]
fn planner_syncs_touch_only_what_changed_and_leave_a_table_the_drift_check_accepts() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let (lab, _servers) = serving_lab()?;
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(run_file(&lab.node)));
    let mut planner = Planner::new(node_info());
    planner.apply_service(&service_test(json!({})));
    planner.apply_slice(&slice("service-test", "TCP", 8080, &[POD_A, POD_B]));
    assert_eq!(proxier.sync_planned(&mut planner)?.kind, SyncKind::Full);
    let replies = answers(&lab.client, svc_addr(), 40)?;
    assert!(
        count(&replies, "a") > 0 && count(&replies, "b") > 0,
        "{replies:?}"
    );

    // A, then nothing, then B, then both again: each a partial sync of a
    // few elements, each followed by the traffic it promises.
    for (eps, expect) in [
        (&[POD_A][..], Some("a")),
        (&[], None),
        (&[POD_B], Some("b")),
    ] {
        planner.apply_slice(&slice("service-test", "TCP", 8080, eps));
        let report = proxier.sync_planned(&mut planner)?;
        assert_eq!(report.kind, SyncKind::Partial);
        match expect {
            Some(name) => {
                let replies = answers(&lab.client, svc_addr(), 10)?;
                assert_eq!(count(&replies, name), 10, "{replies:?}");
            }
            None => {
                let refused = connect_many(&lab.client, svc_addr(), 2)?;
                assert_eq!(refused, vec![Err(ErrorKind::ConnectionRefused); 2]);
            }
        }
    }
    planner.apply_slice(&slice("service-test", "TCP", 8080, &[POD_A, POD_B]));
    assert_eq!(proxier.sync_planned(&mut planner)?.kind, SyncKind::Partial);
    // The kernel's table has exactly the planned shape (the check lists
    // it: force that by committing something unrelated first).
    cmd(
        "ip",
        &[
            "netns", "exec", &lab.node, "nft", "add", "table", "ip", "other",
        ],
    )?;
    assert!(!proxier.check()?, "partial syncs left a drifted table");
    let replies = answers(&lab.client, svc_addr(), 40)?;
    assert!(
        count(&replies, "a") > 0 && count(&replies, "b") > 0,
        "{replies:?}"
    );
    Ok(())
}

#[test]
fn the_local_cluster_dns_address_is_not_tracked() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let lab = lab()?;
    let dns = Ipv4Addr::new(10, 3, 240, 10);
    let other = Ipv4Addr::new(10, 3, 240, 11);
    for addr in [dns, other] {
        cmd(
            "ip",
            &[
                "-n",
                &lab.node,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "lo",
            ],
        )?;
    }
    // The node answers both itself, as the agent's DNS server does.
    let _dns = udp_server(&lab.node, dns, 53, "dns")?;
    let _other = udp_server(&lab.node, other, 53, "other")?;
    let mut node = node_info();
    node.local_dns = Some(dns);
    let kube_dns: Service = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system"},
        "spec": {"clusterIP": dns.to_string(), "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))?;
    // kube-dns has no endpoints: were it planned, it would be refused.
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(run_file(&lab.node)));
    proxier.sync(proxy::desired(&node, &[kube_dns], &[]))?;

    let ask = |to: Ipv4Addr| -> Result<String> {
        let sock = netns::run_in(&run_file(&lab.client), || UdpSocket::bind((CLIENT, 0)))??;
        sock.set_read_timeout(Some(Duration::from_millis(300)))?;
        let mut buf = [0u8; 16];
        for _ in 0..5 {
            sock.send_to(b"q", (to, 53))?;
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        bail!("no UDP answer from {to}")
    };
    assert_eq!(ask(dns)?, "dns");
    assert_eq!(ask(other)?, "other");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.node, "conntrack", "-L", "-p", "udp"])
        .output()?;
    let flows = String::from_utf8_lossy(&out.stdout);
    // The control: the other address is tracked as usual.
    assert!(flows.contains(&format!("dst={other}")), "{flows}");
    assert!(!flows.contains(&format!("dst={dns}")), "{flows}");
    Ok(())
}

/// The set elements the agent writes over netlink read back, through
/// `nft`'s own decoding, exactly as the planner wrote them; a batch the
/// kernel refuses in part changes nothing; a flush empties a map.
#[test]
fn elements_written_over_netlink_read_back_as_planned() -> Result<()> {
    use knit_node_agent::proxy::Firewall;
    use knit_node_agent::proxy::nfnl::{Codec, SetWrites};
    use std::collections::HashMap;

    if !have_root() {
        return Ok(());
    }
    let lab = lab()?;
    let fw = LinuxFirewall::in_netns(run_file(&lab.node));
    let rs = proxy::desired(&node_info(), &[], &[]);
    assert!(fw.outline()?.is_none());
    // The fixed table, with an empty pick chain for the verdicts.
    fw.apply(&format!(
        "{}add chain ip knit cluster-tcp-2\n",
        proxy::render::full(&rs)
    ))?;
    assert!(fw.outline()?.is_some());
    let codecs: HashMap<String, Codec> = rs
        .sets
        .iter()
        .filter_map(|(name, set)| Some((name.clone(), Codec::for_set(set.kind, &set.spec)?)))
        .collect();
    let add = |set: &'static str, elements: &[(&'static str, &'static str)]| SetWrites {
        set,
        adds: elements.to_vec(),
        ..SetWrites::default()
    };
    let planned = [
        add(
            "service-ips",
            &[("10.3.241.152 . tcp . 80", "goto cluster-tcp-2")],
        ),
        add("service-nodeports", &[("udp . 30053", "drop")]),
        add(
            "endpoints-tcp",
            &[
                ("10.3.241.152 . 80 . 0", "10.0.1.2 . 8080"),
                ("10.3.241.152 . 80 . 1", "10.0.2.2 . 8080"),
            ],
        ),
        add("hairpin", &[("10.0.1.2 . 10.0.1.2", "")]),
        add("cluster-ips", &[("10.3.241.152", "")]),
    ];
    fw.write_elements(&planned, &codecs)?;
    let list = |set: &str| -> Result<String> {
        let kind = if rs.sets[set].kind == proxy::SetKind::Map {
            "map"
        } else {
            "set"
        };
        cmd(
            "ip",
            &[
                "netns", "exec", &lab.node, "nft", "list", kind, "ip", "knit", set,
            ],
        )
    };
    for w in &planned {
        let listing = list(w.set)?;
        for (key, value) in &w.adds {
            let shown = if value.is_empty() {
                key.to_string()
            } else {
                format!("{key} : {value}")
            };
            assert!(listing.contains(&shown), "{shown:?} not in {listing}");
        }
    }

    // A batch whose second set write points at a chain that does not
    // exist is refused whole: the first one's new element is not there.
    let bad = [
        add("cluster-ips", &[("10.3.241.153", "")]),
        add(
            "service-ips",
            &[("10.3.241.153 . tcp . 80", "goto no-such-chain")],
        ),
    ];
    let err = fw.write_elements(&bad, &codecs).unwrap_err();
    assert!(err.to_string().contains("service-ips"), "{err}");
    assert!(!list("cluster-ips")?.contains("10.3.241.153"));

    // A changed value is a delete and an add in one batch; a flush
    // empties the map.
    let change = [SetWrites {
        set: "endpoints-tcp",
        deletes: vec!["10.3.241.152 . 80 . 1"],
        adds: vec![("10.3.241.152 . 80 . 1", "10.0.3.2 . 8080")],
        ..SetWrites::default()
    }];
    fw.write_elements(&change, &codecs)?;
    let listing = list("endpoints-tcp")?;
    assert!(
        listing.contains("10.3.241.152 . 80 . 1 : 10.0.3.2 . 8080"),
        "{listing}"
    );
    assert!(!listing.contains("10.0.2.2"), "{listing}");
    let flush = [SetWrites {
        set: "endpoints-tcp",
        flush: true,
        ..SetWrites::default()
    }];
    fw.write_elements(&flush, &codecs)?;
    assert!(!list("endpoints-tcp")?.contains("10.3.241.152"));
    Ok(())
}

/// The outline the agent reads over netlink (chains, rule counts, sets,
/// element counts, the table's comment) is what `nft` itself lists; and
/// a new proxier over a table of the same structure (an agent restart)
/// refills its maps in one netlink batch, with no `nft` run, while
/// traffic keeps its answers.
#[test]
fn the_outline_read_over_netlink_matches_nfts_listing_and_a_restart_refills() -> Result<()> {
    use knit_node_agent::proxy::{Firewall, render};

    if !have_root() {
        return Ok(());
    }
    let (lab, _servers) = serving_lab()?;
    let fw = LinuxFirewall::in_netns(run_file(&lab.node));
    let mut proxier = Proxier::new(fw.clone());
    // An affinity service (a datapath-filled set, an anonymous map) and a
    // plain one.
    let affinity = service_test(json!({"sessionAffinity": "ClientIP"}));
    let mut plain = service_test(json!({"clusterIP": "10.3.241.153"}));
    plain.metadata.name = Some("plain".into());
    let slices = [
        slice("service-test", "TCP", 8080, &[POD_A, POD_B]),
        slice("plain", "TCP", 8080, &[POD_A]),
    ];
    let rs = proxy::desired(&node_info(), &[affinity, plain], &slices);
    proxier.sync(rs.clone())?;
    answers(&lab.client, svc_addr(), 3)?;

    let outline = fw.outline()?.context("no table")?;
    assert_eq!(outline.comment, render::comment(&rs));
    assert_eq!(outline.shape, rs.shape());
    // nft's own account of the same table.
    let listing: serde_json::Value = serde_json::from_str(&cmd(
        "ip",
        &[
            "netns", "exec", &lab.node, "nft", "-j", "list", "table", "ip", "knit",
        ],
    )?)?;
    let items = listing["nftables"]
        .as_array()
        .context("no nftables array")?;
    let mut rules = std::collections::BTreeMap::<String, usize>::new();
    let mut sets = std::collections::BTreeMap::<String, bool>::new();
    for item in items {
        if let Some(chain) = item["chain"]["name"].as_str() {
            rules.entry(chain.to_string()).or_insert(0);
        }
        if let Some(chain) = item["rule"]["chain"].as_str() {
            *rules.entry(chain.to_string()).or_insert(0) += 1;
        }
        for kind in ["set", "map"] {
            if let Some(name) = item[kind]["name"].as_str() {
                // nft 1.0.6's JSON leaves "dynamic" out of a set's flags;
                // the agent's only sets with a timeout are the affinity
                // sets the datapath fills.
                let dynamic = item[kind]["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == "dynamic" || f == "timeout"));
                sets.insert(name.to_string(), dynamic);
            }
        }
    }
    assert_eq!(outline.shape.chains, rules);
    assert_eq!(outline.shape.sets, sets);

    // Elements are looked for one by one: present, and after a map is
    // emptied by hand, missing.
    let codec = |set: &str| {
        proxy::nfnl::Codec::for_set(rs.sets[set].kind, &rs.sets[set].spec).context("no codec")
    };
    let keys: Vec<&str> = rs.sets["service-ips"]
        .elements
        .keys()
        .map(String::as_str)
        .collect();
    assert!(fw.has_elements("service-ips", &codec("service-ips")?, &keys)?);
    assert!(!fw.has_elements(
        "service-ips",
        &codec("service-ips")?,
        &["10.9.9.9 . tcp . 80"]
    )?);

    // A restarted agent: same structure, so one batch (no nft script)
    // empties and refills the maps, and the service still answers.
    let mut restarted = Proxier::new(fw.clone());
    let report = restarted.sync(rs.clone())?;
    assert_eq!(report.kind, SyncKind::Full);
    assert_eq!(report.script_bytes, 0, "{report:?}");
    assert!(report.elements > 0, "{report:?}");
    assert_eq!(fw.outline()?.context("no table")?.shape, rs.shape());
    answers(&lab.client, svc_addr(), 3)?;
    Ok(())
}
