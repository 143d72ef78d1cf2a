//! knit-programming-bench: how long an endpoint change written to the API
//! takes to be in force in the kernel of every node, against the API's
//! own write-to-watch delivery measured in the same run (see DESIGN.md,
//! "Performance: what we measure"). Root only.
//!
//! In a `knit lab` of `--nodes` nodes it starts one server pod, puts
//! `--services` other Services with ten endpoints each in place (so the
//! node tables are not trivial), and makes a Service `flip` without a
//! selector whose one EndpointSlice the bench writes itself. On every node
//! a thread in the node's network namespace connects to `flip`'s ClusterIP
//! every millisecond: refused while the slice lists no endpoint, accepted
//! once the node's table sends it to the server pod. The bench then flips
//! the slice `--flips` times between the server pod and nothing, and for
//! each flip and node takes the time from the write request to the first
//! connect that sees the new state. The anchor: a watch on EndpointSlices
//! in the bench, the time from the same write to its event.
//!
//! Run: `cargo build --release -p knit-cli -p knit-e2e && target/release/knit-programming-bench`.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use hyper::Method;
use knit_e2e::HttpClient;
use knit_e2e::lab::{Lab, is_root};
use knit_e2e::stats::{micros, summary};
use knit_node_agent::netns;
use serde_json::{Value, json};

/// Endpoint change in the API → in force in every node's kernel.
#[derive(Debug, Clone, Parser)]
#[command(name = "knit-programming-bench", version, about)]
struct Args {
    /// Nodes of the lab.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Other Services (10 endpoints each) in place while measuring.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Flips of the measured slice (half on, half off).
    #[arg(long, default_value_t = 60)]
    flips: usize,
}

/// The server pod's program: accepts and closes connections as fast as
/// they come, with a deep backlog, so that the probers' connects never
/// wait on it.
const ACCEPTOR: &str = "import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8080))
s.listen(4096)
while True:
    s.accept()[0].close()
";

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
const SERVICES: &str = "/api/v1/namespaces/default/services";

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !is_root() {
        eprintln!("knit-programming-bench makes a lab: run it as root");
        return std::process::ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("knit-programming-bench: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("knit-programming-bench: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn slice(name: &str, service: &str, addresses: &[String]) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "knit-programming-bench"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    })
}

async fn create(api: &HttpClient, path: &str, body: &Value) -> anyhow::Result<Value> {
    let resp = api.post_json(path, body).await?;
    ensure!(
        resp.status.is_success(),
        "POST {path}: {} {}",
        resp.status,
        resp.body
    );
    Ok(resp.body)
}

async fn run(args: &Args) -> anyhow::Result<()> {
    // Lab numbers 90+ keep clear of the tests' labs.
    let lab = Lab::new(92);
    let up = lab.up(args.nodes, &[]);
    ensure!(
        up.status.success(),
        "knit lab up failed:\n{}",
        knit_e2e::lab::text(&up.stderr)
    );
    let api = HttpClient::from_kubeconfig(&lab.dir().join("kubeconfig"))?;

    // The server pod, on the last node.
    let last = lab.node_name(args.nodes);
    create(
        &api,
        "/api/v1/namespaces/default/pods",
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "server"},
            "spec": {"nodeName": last, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "python:3",
                                     "command": ["python3", "-c", ACCEPTOR]}]},
        }),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let server_ip = loop {
        let pod = api
            .get_json("/api/v1/namespaces/default/pods/server")
            .await?;
        if pod.body["status"]["phase"] == "Running"
            && let Some(ip) = pod.body["status"]["podIP"].as_str()
        {
            break ip.to_string();
        }
        ensure!(Instant::now() < deadline, "the server pod did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The other Services, ten endpoints each (addresses that exist
    // nowhere: only the tables' size matters), 16 writes in flight.
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.services {
        if tasks.len() >= 16
            && let Some(done) = tasks.join_next().await
        {
            done??;
        }
        let api = api.clone();
        tasks.spawn(async move {
            let name = format!("bulk-{i}");
            create(&api, SERVICES, &service(&name)).await?;
            let addresses: Vec<String> = (0..10)
                .map(|e| {
                    let n = i * 10 + e;
                    format!("10.1.{}.{}", n / 250 % 250, n % 250 + 1)
                })
                .collect();
            create(
                &api,
                SLICES,
                &slice(&format!("{name}-1"), &name, &addresses),
            )
            .await?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    println!(
        "{} Services x 10 endpoints written in {:.1} s",
        args.services,
        start.elapsed().as_secs_f64()
    );

    // The measured Service, with an empty slice.
    let flip = create(&api, SERVICES, &service("flip")).await?;
    let cluster_ip = flip["spec"]["clusterIP"]
        .as_str()
        .context("flip has no clusterIP")?
        .to_string();
    let mut written = create(&api, SLICES, &slice("flip-1", "flip", &[])).await?;

    // The anchor: a watch on EndpointSlices from here on.
    let rv = written["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let (status, mut lines) = api
        .stream(
            Method::GET,
            &format!("{SLICES}?watch=1&resourceVersion={rv}&fieldSelector=metadata.name=flip-1"),
            None,
        )
        .await?;
    ensure!(status.is_success(), "watch: {status}");
    let (watch_tx, watch_rx) = mpsc::channel::<(String, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(event)) = lines.next_json().await {
            let rv = event["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if watch_tx.send((rv, Instant::now())).is_err() {
                return;
            }
        }
    });

    // A prober per node: (node, when, accepted?) at every change it sees.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (seen_tx, seen_rx) = mpsc::channel::<(usize, Instant, bool)>();
    let target = SocketAddr::new(cluster_ip.parse()?, 80);
    let mut probers = Vec::new();
    for node in 1..=args.nodes {
        let ns = Path::new(netns::RUN_DIR).join(lab.node_netns(node));
        let (stop, seen) = (stop.clone(), seen_tx.clone());
        let limit = Instant::now() + Duration::from_secs(600);
        probers.push(std::thread::spawn(move || {
            netns::run_in(&ns, move || {
                let mut last = None;
                while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
                    let ok =
                        TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok();
                    if last != Some(ok) {
                        last = Some(ok);
                        let _ = seen.send((node, Instant::now(), ok));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        }));
    }
    drop(seen_tx);
    // Every node refuses before the first flip.
    wait_for_state(&seen_rx, args.nodes, false, started)?;

    let mut in_kernel = Vec::new();
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let mut in_watch = Vec::new();
    for flip in 0..args.flips {
        let on = flip % 2 == 0;
        let addresses = if on { vec![server_ip.clone()] } else { vec![] };
        let mut body = slice("flip-1", "flip", &addresses);
        body["metadata"]["resourceVersion"] = written["metadata"]["resourceVersion"].clone();
        let body = Bytes::from(serde_json::to_vec(&body)?);
        let sent = Instant::now();
        let (status, bytes) = api
            .send_bytes(Method::PUT, &format!("{SLICES}/flip-1"), Some(body))
            .await?;
        ensure!(status.is_success(), "PUT flip-1: {status}");
        written = serde_json::from_slice(&bytes)?;
        let rv = written["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for at in wait_for_state(&seen_rx, args.nodes, on, sent)? {
            let took = micros(at.duration_since(sent));
            in_kernel.push(took);
            if on {
                added.push(took)
            } else {
                removed.push(took)
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (got, at) = watch_rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .context("the watch did not deliver the write")?;
            if got == rv {
                in_watch.push(micros(at.duration_since(sent)));
                break;
            }
        }
        // Let the dust settle (and the conntrack entries of the refused
        // connects age) before the next flip.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for prober in probers {
        let _ = prober.join();
    }
    watcher.abort();

    println!(
        "endpoint change written -> in force on every node ({} nodes, {} flips, {} other Services):",
        args.nodes, args.flips, args.services
    );
    let (w50, w99) = summary("API watch delivers it (anchor)", in_watch, 2);
    summary("  endpoint added (accepted)", added, 2);
    summary("  endpoint removed (refused)", removed, 2);
    let (k50, k99) = summary("node kernel applies it", in_kernel, 2);
    println!(
        "  kernel/anchor: p50 {:.1}x, p99 {:.1}x; p99 {k99:.1} ms (target: under 100 ms)",
        k50 / w50,
        k99 / w99
    );
    drop(lab);
    Ok(())
}

/// Waits until every node reported `accepted` after `since`; the time
/// each did.
fn wait_for_state(
    seen: &mpsc::Receiver<(usize, Instant, bool)>,
    nodes: usize,
    accepted: bool,
    since: Instant,
) -> anyhow::Result<Vec<Instant>> {
    let mut at: Vec<Option<Instant>> = vec![None; nodes];
    let deadline = Instant::now() + Duration::from_secs(10);
    while at.iter().any(Option::is_none) {
        let Ok((node, when, ok)) =
            seen.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            bail!(
                "not every node {} within 10 s",
                if accepted { "accepted" } else { "refused" }
            );
        };
        if when >= since {
            at[node - 1] = (ok == accepted).then_some(when);
        }
    }
    Ok(at.into_iter().flatten().collect())
}
