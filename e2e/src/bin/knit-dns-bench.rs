//! knit-dns-bench: queries per second for cluster names from one node
//! agent's DNS server, against NSD — an authoritative server from Debian —
//! serving the same records on the same machine in the same run (see
//! DESIGN.md, "Performance: what we measure").
//!
//! It fills the agent's records index with `--services` ClusterIP Services
//! and `--headless` headless Services of `--endpoints` ready endpoints
//! each, starts the agent's DNS server (the same [`Server`] the agent
//! runs, with its UDP threads) on a loopback port, writes the same names
//! as a zone file for NSD (`--nsd-threads` server processes) on another
//! port, and drives each in turn with `dnsperf` for `--seconds` over one
//! query list (A queries of every Service name, headless names included,
//! in random order). It prints both rates and their ratio, and checks the
//! issue's targets: at least 67,338 QPS (twice CoreDNS's published 33,669
//! for cluster names on 2 vCPUs) and at least half of NSD's rate.
//!
//! Needs `dnsperf` and `nsd` (Debian: `apt-get install dnsperf nsd`; the
//! packaged nsd service need not run). Run:
//! `cargo build --release -p knit-e2e --bin knit-dns-bench && target/release/knit-dns-bench`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use knit_node_agent::dns::records::{
    EndpointRec, Index, PortRec, ServiceKind, ServiceRec, SliceRec, Sources,
};
use knit_node_agent::dns::server::{Published, Server};
use knit_node_agent::dns::{bind, udp_threads};
use rand::seq::SliceRandom;

/// CoreDNS's published rate for cluster names on a 2-vCPU node.
const COREDNS_QPS: f64 = 33_669.0;

/// Cluster-name QPS of the agent's DNS server against NSD's.
#[derive(Debug, Clone, Parser)]
#[command(name = "knit-dns-bench", version, about)]
struct Args {
    /// ClusterIP Services in the zone.
    #[arg(long, default_value_t = 1_000)]
    services: usize,
    /// Headless Services in the zone.
    #[arg(long, default_value_t = 100)]
    headless: usize,
    /// Ready endpoints behind each headless Service.
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// How long dnsperf drives each server, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// dnsperf's threads (`-T`); the clients (`-c`) are twice that.
    #[arg(long, default_value_t = 2)]
    dnsperf_threads: usize,
    /// dnsperf's queries in flight (`-q`).
    #[arg(long, default_value_t = 200)]
    outstanding: usize,
    /// UDP threads of the agent's server (0: as the agent picks).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// NSD's server processes (0: as many as the agent's UDP threads).
    #[arg(long, default_value_t = 0)]
    nsd_threads: usize,
    /// The cluster zone.
    #[arg(long, default_value = "cluster.local")]
    zone: String,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(err) => {
            eprintln!("knit-dns-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The zone's Services: `svc-<i>` in `ns-<i % 10>` at 10.3.(i/250+241).x,
/// and `hl-<i>` headless with endpoints 10.(i/250).x.y.
fn sources(args: &Args) -> Sources {
    let mut s = Sources::default();
    for i in 0..args.services {
        let ip = Ipv4Addr::new(10, 3, 241 + (i / 250) as u8, (i % 250 + 1) as u8);
        s.services.insert(
            (format!("ns-{}", i % 10), format!("svc-{i}")),
            ServiceRec {
                kind: ServiceKind::ClusterIp(vec![ip.into()]),
                ports: vec![PortRec {
                    name: "http".into(),
                    port: 80,
                    protocol: "TCP".into(),
                }],
                publish_not_ready: false,
            },
        );
    }
    for i in 0..args.headless {
        let ns = format!("ns-{}", i % 10);
        let name = format!("hl-{i}");
        s.services.insert(
            (ns.clone(), name.clone()),
            ServiceRec {
                kind: ServiceKind::Headless,
                ports: vec![],
                publish_not_ready: false,
            },
        );
        let endpoints = (0..args.endpoints)
            .map(|e| EndpointRec {
                addresses: vec![
                    Ipv4Addr::new(10, 1 + (i / 250) as u8, (i % 250) as u8, e as u8 + 2).into(),
                ],
                hostname: None,
                ready: true,
            })
            .collect();
        s.slices.insert(
            (ns, format!("{name}-1")),
            SliceRec {
                service: name,
                endpoints,
                ports: vec![],
            },
        );
    }
    s
}

/// The Service names and their A records: what NSD serves and dnsperf
/// asks.
fn a_records(s: &Sources, zone: &str) -> Vec<(String, Vec<Ipv4Addr>)> {
    let v4 = |a: &std::net::IpAddr| match a {
        std::net::IpAddr::V4(v4) => Some(*v4),
        std::net::IpAddr::V6(_) => None,
    };
    s.services
        .iter()
        .map(|((ns, name), svc)| {
            let addrs = match &svc.kind {
                ServiceKind::ClusterIp(ips) => ips.iter().filter_map(v4).collect(),
                _ => s
                    .slices
                    .iter()
                    .filter(|((sns, _), sl)| sns == ns && &sl.service == name)
                    .flat_map(|(_, sl)| sl.endpoints.iter().flat_map(|e| e.addresses.iter()))
                    .filter_map(v4)
                    .collect(),
            };
            (format!("{name}.{ns}.svc.{zone}"), addrs)
        })
        .collect()
}

fn run(args: Args) -> anyhow::Result<bool> {
    for tool in ["dnsperf", "nsd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !found {
            bail!("{tool} is missing: apt-get install dnsperf nsd");
        }
    }
    let threads = if args.threads == 0 {
        udp_threads()
    } else {
        args.threads
    };
    let nsd_threads = if args.nsd_threads == 0 {
        threads
    } else {
        args.nsd_threads
    };
    let dir = tempfile::tempdir()?;
    let sources = sources(&args);
    let records = a_records(&sources, &args.zone);

    // One query list for both: every name once, shuffled.
    let mut names: Vec<&str> = records.iter().map(|(n, _)| n.as_str()).collect();
    names.shuffle(&mut rand::rng());
    let mut list = String::new();
    for name in &names {
        writeln!(list, "{name} A")?;
    }
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, list)?;

    // The agent's server, in-process on loopback.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let index = Index::build(&args.zone, Ipv4Addr::new(10, 3, 240, 10), &sources, 1);
    let published = Arc::new(Published::new(index));
    let sockets = bind("127.0.0.1:0".parse()?)?;
    let ours = sockets.udp.local_addr()?;
    let server = {
        let _guard = runtime.enter();
        Server::start(sockets, published, vec![], threads)?
    };
    check_answers(ours, &records).context("the agent's server")?;

    // NSD with the same records.
    let nsd_port = free_udp_port()?;
    let nsd_addr: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, nsd_port));
    let mut nsd = start_nsd(dir.path(), &args.zone, &records, nsd_port, nsd_threads)?;
    let ready = wait_answering(nsd_addr, &records[0].0, Duration::from_secs(10));
    if let Err(err) = ready {
        let _ = nsd.kill();
        let log = std::fs::read_to_string(dir.path().join("nsd.log")).unwrap_or_default();
        bail!("nsd did not come up: {err:#}\n{log}");
    }
    let checked = check_answers(nsd_addr, &records).context("nsd");

    println!(
        "knit-dns-bench: {} names ({} ClusterIP, {} headless x {} endpoints), dnsperf {} s each, \
         -T {} -c {} -q {}; agent: {threads} UDP threads, NSD {} {nsd_threads} servers",
        records.len(),
        args.services,
        args.headless,
        args.endpoints,
        args.seconds,
        args.dnsperf_threads,
        args.dnsperf_threads * 2,
        args.outstanding,
        nsd_version(),
    );
    let result = checked.and_then(|()| {
        let agent = dnsperf(&args, ours, &queries).context("dnsperf against the agent")?;
        let nsd_qps = dnsperf(&args, nsd_addr, &queries).context("dnsperf against nsd")?;
        Ok((agent, nsd_qps))
    });
    let _ = nsd.kill();
    let _ = nsd.wait();
    drop(server);
    let (agent, nsd_qps) = result?;

    let ratio = agent.qps / nsd_qps.qps;
    println!(
        "agent DNS : {:>10.0} QPS  (lost {}, avg latency {:.3} ms)",
        agent.qps, agent.lost, agent.latency_ms
    );
    println!(
        "NSD       : {:>10.0} QPS  (lost {}, avg latency {:.3} ms)",
        nsd_qps.qps, nsd_qps.lost, nsd_qps.latency_ms
    );
    println!("agent / NSD      = {ratio:.2} (target >= 0.5)");
    println!(
        "agent / CoreDNS  = {:.2} (CoreDNS's published {COREDNS_QPS} QPS; target >= 2, i.e. {:.0} QPS)",
        agent.qps / COREDNS_QPS,
        2.0 * COREDNS_QPS
    );
    let met = ratio >= 0.5 && agent.qps >= 2.0 * COREDNS_QPS;
    println!("targets {}", if met { "met" } else { "NOT met" });
    Ok(met)
}

/// What dnsperf reported.
struct Perf {
    qps: f64,
    lost: u64,
    latency_ms: f64,
}

fn dnsperf(args: &Args, server: SocketAddr, queries: &Path) -> anyhow::Result<Perf> {
    let out = Command::new("dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .args(["-d", &queries.display().to_string()])
        .args(["-l", &args.seconds.to_string()])
        .args(["-T", &args.dnsperf_threads.to_string()])
        .args(["-c", &(args.dnsperf_threads * 2).to_string()])
        .args(["-q", &args.outstanding.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dnsperf failed:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |label: &str| -> Option<&str> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
    };
    let qps = field("Queries per second")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no rate in dnsperf's output:\n{text}"))?;
    let lost = field("Queries lost")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let latency_ms = field("Average Latency (s)")
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |s| s * 1000.0);
    let completed = text
        .lines()
        .find(|l| l.contains("Queries completed"))
        .unwrap_or_default();
    let noerror = text
        .lines()
        .find(|l| l.contains("Response codes"))
        .unwrap_or_default();
    if !noerror.contains("NOERROR") || noerror.contains("NXDOMAIN") {
        bail!("answers other than NOERROR: {noerror}\n{completed}");
    }
    Ok(Perf {
        qps,
        lost,
        latency_ms,
    })
}

fn free_udp_port() -> anyhow::Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

fn nsd_version() -> String {
    Command::new("nsd")
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .chain(String::from_utf8_lossy(&o.stdout).lines())
                .find(|l| l.starts_with("NSD version"))
                .map(|l| l.trim_start_matches("NSD version ").to_string())
        })
        .unwrap_or_default()
}

/// Writes the zone and a configuration of NSD's own under `dir` and
/// starts it in the foreground on `port`.
fn start_nsd(
    dir: &Path,
    zone: &str,
    records: &[(String, Vec<Ipv4Addr>)],
    port: u16,
    servers: usize,
) -> anyhow::Result<Child> {
    let mut text = format!(
        "$ORIGIN {zone}.\n$TTL 5\n@ IN SOA ns.dns.{zone}. hostmaster.{zone}. 1 7200 1800 86400 5\n\
         @ IN NS ns.dns.{zone}.\nns.dns IN A 10.3.240.10\n"
    );
    for (name, addrs) in records {
        for a in addrs {
            writeln!(text, "{name}. IN A {a}")?;
        }
    }
    std::fs::write(dir.join("zone"), text)?;
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  server-count: {servers}\n  \
         username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  \
         pidfile: \"{d}/nsd.pid\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
         xfrdir: \"{d}\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 1\n  reuseport: yes\n  \
         hide-version: yes\n  do-ip6: no\nremote-control:\n  control-enable: no\n\
         zone:\n  name: \"{zone}\"\n  zonefile: \"{d}/zone\"\n"
    );
    let conf_path = dir.join("nsd.conf");
    std::fs::write(&conf_path, conf)?;
    let check = Command::new("nsd-checkconf").arg(&conf_path).output();
    if let Ok(out) = check
        && !out.status.success()
    {
        bail!(
            "nsd-checkconf: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Command::new("nsd")
        .args(["-d", "-c"])
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nsd")
}

/// A query for `name` A, id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p
}

/// Asks `server` for `name` A; the answer's rcode and answer count.
fn ask(server: SocketAddr, name: &str, wait: Duration) -> anyhow::Result<(u8, u16)> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(wait))?;
    socket.send_to(&query(0x5eed, name), server)?;
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf)?;
    if n < 12 || buf[..2] != [0x5e, 0xed] {
        bail!("not an answer");
    }
    Ok((buf[3] & 0xf, u16::from_be_bytes([buf[6], buf[7]])))
}

fn wait_answering(server: SocketAddr, name: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        match ask(server, name, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(err) if start.elapsed() > limit => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Both servers must give every name its records before they are timed.
fn check_answers(server: SocketAddr, records: &[(String, Vec<Ipv4Addr>)]) -> anyhow::Result<()> {
    for (name, addrs) in records.iter().step_by((records.len() / 50).max(1)) {
        let (rcode, count) = ask(server, name, Duration::from_secs(2))?;
        if rcode != 0 || usize::from(count) != addrs.len() {
            bail!(
                "{name}: rcode {rcode}, {count} answers, want {}",
                addrs.len()
            );
        }
    }
    Ok(())
}
