//! knit-service-bench: what the service dataplane costs at scale, each
//! figure against an anchor measured in the same run (see DESIGN.md,
//! "Performance: what we measure"). Root only.
//!
//! It builds, in namespaces of its own, two nodes the way the agent and
//! the lab do (`cbr0` on 10.0.1.1/24 and 10.0.2.1/24, the agent's sandbox
//! code for one pod on each, a veth underlay with host-gw routes): a
//! client pod at 10.0.1.2 and a server pod at 10.0.2.2 running
//! `iperf3 -s` and a TCP listener. It programs node 1's `ip knit` table
//! with the agent's own [`Planner`] and [`Proxier`]. Then:
//!
//! 1. **Syncs**: a full sync of `--services` services × 10 endpoints into
//!    a node without the table and over the table in place (an agent
//!    restart: its maps emptied and refilled in one batch), and
//!    one-endpoint changes with all of them in place (20, each planned
//!    incrementally and applied as one transaction).
//! 2. **Connection setup, O(1) dispatch**: TCP connects from the client
//!    pod to a service's ClusterIP with 10 services installed and with
//!    `--services` installed, in alternating rounds; the ratio of the two
//!    (target ≤ 1.1).
//! 3. **Throughput**: `iperf3` from the client pod to the server pod
//!    through the ClusterIP against straight to the pod IP, alternating;
//!    the ratio (target ≥ 0.95).
//!
//! Everything it makes is removed at the end, also when it fails.
//!
//! Run: `cargo build --release -p knit-e2e --bin knit-service-bench &&
//! target/release/knit-service-bench` (needs `iperf3`, `nft`,
//! `conntrack`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use knit_e2e::lab::{is_root, text};
use knit_e2e::stats::{micros, summary};
use knit_node_agent::netns::{self, LinuxNetns, Netns};
use knit_node_agent::proxy::{LinuxFirewall, NodeInfo, Planner, Proxier};
use knit_node_agent::sandbox;
use serde_json::{Value, json};

/// The allocator of the `knit` binary the agent runs in, so that the
/// planning measured here costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The service dataplane at scale, against its anchors.
#[derive(Debug, Clone, Parser)]
#[command(name = "knit-service-bench", version, about)]
struct Args {
    /// Services (10 endpoints each) of the large table.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// TCP connects per round of part 2 (four rounds).
    #[arg(long, default_value_t = 1_000)]
    connects: usize,
    /// Seconds per iperf3 run (three runs each way).
    #[arg(long, default_value_t = 3)]
    seconds: u32,
}

const MTU: u32 = 1500;
/// The measured service: ClusterIP and the ports it forwards.
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 240, 20);
const LISTEN_PORT: u16 = 8080;
const IPERF_PORT: u16 = 5201;

/// Removes every namespace whose name starts with its prefix, and kills
/// the bench's servers, when dropped.
struct Cleanup {
    prefix: String,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let netns = LinuxNetns::new();
        if let Ok(names) = netns.list() {
            for name in names.iter().filter(|n| n.starts_with(&self.prefix)) {
                let _ = netns.delete(name);
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !is_root() {
        eprintln!("knit-service-bench makes network namespaces: run it as root");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("knit-service-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Bulk service `i` (1-based; 0 is the measured one): a ClusterIP outside
/// the service CIDR (the dataplane does not care, and 10,000 do not fit
/// a /20) with ten endpoints that exist nowhere.
fn bulk_service(i: usize) -> anyhow::Result<(Service, EndpointSlice)> {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 4, 0, 0)) + i as u32);
    let endpoints: Vec<Value> = (0..10)
        .map(|e| {
            let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + (i * 10 + e) as u32);
            json!({"addresses": [addr.to_string()], "conditions": {"ready": true}, "nodeName": "bench"})
        })
        .collect();
    service_and_slice(&format!("bulk-{i}"), ip, 80, 8080, endpoints)
}

fn service_and_slice(
    name: &str,
    ip: Ipv4Addr,
    port: u16,
    target: u16,
    endpoints: Vec<Value>,
) -> anyhow::Result<(Service, EndpointSlice)> {
    let service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
                 "ports": [{"name": "p", "port": port, "protocol": "TCP"}]},
    }))?;
    let slice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "p", "port": target, "protocol": "TCP"}],
    }))?;
    Ok((service, slice))
}

/// The measured services: the listener and iperf3 on the server pod.
fn measured(server: Ipv4Addr) -> anyhow::Result<Vec<(Service, EndpointSlice)>> {
    let endpoint = || {
        vec![
            json!({"addresses": [server.to_string()], "conditions": {"ready": true},
                    "nodeName": "bench"}),
        ]
    };
    Ok(vec![
        service_and_slice("conn", SERVICE_IP, 80, LISTEN_PORT, endpoint())?,
        service_and_slice("iperf", SERVICE_IP, IPERF_PORT, IPERF_PORT, endpoint())?,
    ])
}

fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(args.services >= 10, "--services: at least 10");
    let prefix = format!("ksb{}.", std::process::id() % 100_000);
    let mut cleanup = Cleanup {
        prefix: prefix.clone(),
        children: Vec::new(),
    };
    let netns = LinuxNetns::new();
    // Two nodes as the lab builds them, joined by a veth underlay with a
    // host-gw route each way: the client pod on node 1, the server pod on
    // node 2, so both paths cross the same two nodes and differ only by
    // the service's DNAT.
    let nodes: Vec<(String, Ipv4Net, Ipv4Addr)> = vec![
        (
            format!("{prefix}n1"),
            "10.0.1.0/24".parse()?,
            Ipv4Addr::new(10, 100, 0, 2),
        ),
        (
            format!("{prefix}n2"),
            "10.0.2.0/24".parse()?,
            Ipv4Addr::new(10, 100, 0, 3),
        ),
    ];
    let mut handles = Vec::new();
    for (name, cidr, _) in &nodes {
        netns.create(name)?;
        let nl = netns.open(name)?;
        sandbox::apply_node(&nl, &sandbox::node_network(*cidr, MTU)?)?;
        handles.push(nl);
    }
    underlay(&nodes)?;
    let pod = |node: usize| -> anyhow::Result<(Ipv4Addr, PathBuf)> {
        let cidr = nodes[node].1;
        let ip = Ipv4Addr::from(u32::from(cidr.network()) + 2);
        let uid = format!("00000000-0000-4000-8000-{node:012}");
        let plan = sandbox::pod_sandbox(&format!("{prefix}p."), &uid, ip, cidr, MTU)?;
        sandbox::apply_sandbox(&netns, &handles[node], &plan)?;
        Ok((ip, netns.path(&plan.names.netns)?))
    };
    let (_, client_ns) = pod(0)?;
    let (server_ip, server_ns) = pod(1)?;
    let node_ns = nodes[0].0.clone();
    let cidr = nodes[0].1;

    // The server pod: a listener that accepts and closes (a thread in its
    // namespace), and iperf3.
    let listener = netns::run_in(&server_ns, move || {
        TcpListener::bind(SocketAddr::from((server_ip, LISTEN_PORT)))
    })??;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    cleanup.children.push(
        Command::new("ip")
            .args(["netns", "exec"])
            .arg(netns_name(&server_ns))
            .args(["iperf3", "-s", "-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (is iperf3 installed?)")?,
    );

    let node = NodeInfo {
        name: "bench".into(),
        ips: vec![],
        pod_cidr: cidr,
        cluster_cidr: "10.0.0.0/14".parse()?,
        local_dns: None,
    };
    let mut planner = Planner::new(node);
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(netns.path(&node_ns)?));
    for (service, slice) in measured(server_ip)? {
        planner.apply_slice(&slice);
        planner.apply_service(&service);
    }
    let small: Vec<(Service, EndpointSlice)> =
        (1..10).map(bulk_service).collect::<Result<_, _>>()?;
    let large: Vec<(Service, EndpointSlice)> = (10..args.services)
        .map(bulk_service)
        .collect::<Result<_, _>>()?;
    for (service, slice) in &small {
        planner.apply_slice(slice);
        planner.apply_service(service);
    }
    proxier.sync_planned(&mut planner)?;
    wait_until_connects(&client_ns)?;

    // Part 1: full syncs of the large table, then one-endpoint changes.
    let start = Instant::now();
    for (service, slice) in &large {
        planner.apply_slice(slice);
        planner.apply_service(service);
    }
    let plan = start.elapsed();
    // a) Into a node without the table (a first start, or after someone
    //    deleted it): nft declares it, the elements go over netlink.
    nft_in(&node_ns, &["delete", "table", "ip", "knit"])?;
    let mut fresh = Proxier::new(LinuxFirewall::in_netns(netns.path(&node_ns)?));
    let report = fresh.sync_planned(&mut planner)?;
    let full = start.elapsed();
    println!(
        "syncs, {} services x 10 endpoints:\n  full sync, no table before: {:.1} ms (planning {:.1} ms, writing {:.1} ms: {} KiB of nft, {} elements over netlink) (target: under 1000 ms)",
        args.services,
        full.as_secs_f64() * 1000.0,
        plan.as_secs_f64() * 1000.0,
        report.elapsed.as_secs_f64() * 1000.0,
        report.script_bytes / 1024,
        report.elements,
    );
    // b) Over the table in place, of the same structure (an agent
    //    restart): one netlink batch empties and refills every map.
    let mut restarted = Proxier::new(LinuxFirewall::in_netns(netns.path(&node_ns)?));
    let report = restarted.sync_planned(&mut planner)?;
    proxier = restarted;
    println!(
        "  full sync over the table in place (a restart): {:.1} ms (planning {:.1} ms, writing {:.1} ms: {} KiB of nft, {} elements over netlink)",
        (plan + report.elapsed).as_secs_f64() * 1000.0,
        plan.as_secs_f64() * 1000.0,
        report.elapsed.as_secs_f64() * 1000.0,
        report.script_bytes / 1024,
        report.elements,
    );
    // The drift check after someone else committed in the namespace (so
    // that it must read the table back: its outline and a sample of
    // every map's elements).
    nft_in(&node_ns, &["add", "table", "ip", "bench-other"])?;
    let checking = Instant::now();
    ensure!(!proxier.check()?, "the drift check found drift");
    println!(
        "  drift check reading the table back: {:.1} ms",
        checking.elapsed().as_secs_f64() * 1000.0
    );
    let mut changes = Vec::new();
    let slice = &large[large.len() / 2].1;
    for round in 0..10 {
        let mut less = slice.clone();
        less.endpoints.remove(round % 10);
        for next in [&less, slice] {
            let start = Instant::now();
            planner.apply_slice(next);
            proxier.sync_planned(&mut planner)?;
            changes.push(micros(start.elapsed()));
        }
    }
    let (c50, c99) = summary("one-endpoint change (plan + write)", changes, 3);
    println!("  one-endpoint change p50 {c50:.2} ms, p99 {c99:.2} ms (target: under 20 ms)");

    // Part 2: connection setup with 10 services and with the large table.
    println!(
        "connection setup to a ClusterIP, {} connects a round:",
        args.connects
    );
    let (mut with_small, mut with_large) = (Vec::new(), Vec::new());
    for round in 0..4 {
        let is_large = round % 2 == 0;
        if !is_large {
            for (service, slice) in &large {
                let (ns, name) = key(service);
                planner.delete_service(ns, name);
                let (ns, name) = key_slice(slice);
                planner.delete_slice(ns, name);
            }
        } else if round > 0 {
            for (service, slice) in &large {
                planner.apply_slice(slice);
                planner.apply_service(service);
            }
        }
        proxier.sync_planned(&mut planner)?;
        wait_until_connects(&client_ns)?;
        let times = connect_times(&client_ns, args.connects).with_context(|| {
            format!(
                "round {} ({} table)",
                round + 1,
                if is_large { "large" } else { "small" }
            )
        })?;
        if is_large {
            with_large.extend(times);
        } else {
            with_small.extend(times);
        }
    }
    let (s50, s99) = summary("10 services installed", with_small, 3);
    let (l50, l99) = summary(
        &format!("{} services installed", args.services),
        with_large,
        3,
    );
    println!(
        "  large/small: p50 {:.2}x, p99 {:.2}x (target: at most 1.1x, O(1) dispatch)",
        l50 / s50,
        l99 / s99
    );

    // Part 3: throughput, ClusterIP against the pod IP (large table in).
    for (service, slice) in &large {
        planner.apply_slice(slice);
        planner.apply_service(service);
    }
    proxier.sync_planned(&mut planner)?;
    println!(
        "TCP throughput from the client pod (iperf3, {} s a run):",
        args.seconds
    );
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        direct.push(iperf(&client_ns, server_ip, args.seconds)?);
        through.push(iperf(&client_ns, SERVICE_IP, args.seconds)?);
    }
    let (d, t) = (median(direct), median(through));
    println!(
        "  to the pod IP {:.2} Gbit/s, through the ClusterIP {:.2} Gbit/s: ratio {:.3} (target: at least 0.95)",
        d / 1e9,
        t / 1e9,
        t / d
    );
    drop(cleanup);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn key(service: &Service) -> (&str, &str) {
    (
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn key_slice(slice: &EndpointSlice) -> (&str, &str) {
    (
        slice.metadata.namespace.as_deref().unwrap_or_default(),
        slice.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// A veth pair between the two nodes' namespaces (`eth0` in each, on
/// 10.100.0.0/24) and the host-gw route to each other's pod CIDR.
fn underlay(nodes: &[(String, Ipv4Net, Ipv4Addr)]) -> anyhow::Result<()> {
    let [(n1, cidr1, ip1), (n2, cidr2, ip2)] = nodes else {
        bail!("two nodes");
    };
    let script = format!(
        "set -e
ip -n {n1} link add eth0 mtu {MTU} type veth peer name eth0 mtu {MTU} netns {n2}
ip -n {n1} addr add {ip1}/24 dev eth0
ip -n {n2} addr add {ip2}/24 dev eth0
ip -n {n1} link set eth0 up
ip -n {n2} link set eth0 up
ip -n {n1} route add {cidr2} via {ip2}
ip -n {n2} route add {cidr1} via {ip1}
"
    );
    let out = Command::new("sh").args(["-c", &script]).output()?;
    ensure!(out.status.success(), "the underlay: {}", text(&out.stderr));
    Ok(())
}

/// Runs `nft args` in the namespace named `ns`.
fn nft_in(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        text(&out.stderr)
    );
    Ok(())
}

/// The name `ip netns exec` wants for a namespace file under /run/netns.
fn netns_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Waits (at most 5 s) until the service answers from the client pod.
fn wait_until_connects(client_ns: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ok = netns::run_in(client_ns, || {
            TcpStream::connect_timeout(
                &SocketAddr::from((SERVICE_IP, 80)),
                Duration::from_millis(500),
            )
            .is_ok()
        })?;
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the service does not answer from the client pod");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` TCP connects from the client pod to the service, each timed on its
/// own (a new connection, so a new conntrack entry and a DNAT lookup).
/// A lost SYN shows as a retransmission a second later in the tail; a
/// connect that fails fails the bench.
fn connect_times(client_ns: &Path, n: usize) -> anyhow::Result<Vec<u64>> {
    netns::run_in(client_ns, move || -> anyhow::Result<Vec<u64>> {
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let start = Instant::now();
            let stream = TcpStream::connect_timeout(
                &SocketAddr::from((SERVICE_IP, 80)),
                Duration::from_secs(5),
            )
            .with_context(|| format!("connect {} of {n} to the service", i + 1))?;
            times.push(micros(start.elapsed()));
            drop(stream);
        }
        Ok(times)
    })?
}

/// One `iperf3` run from the client pod to `to`; received bits/s.
fn iperf(client_ns: &Path, to: Ipv4Addr, seconds: u32) -> anyhow::Result<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec"])
        .arg(netns_name(client_ns))
        .args(["iperf3", "-J", "-c", &to.to_string(), "-p"])
        .arg(IPERF_PORT.to_string())
        .args(["-t", &seconds.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running iperf3")?;
    ensure!(
        out.status.success(),
        "iperf3 to {to} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).context("iperf3's JSON")?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3's JSON has no end.sum_received.bits_per_second")
}
