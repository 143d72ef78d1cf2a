//! knit-endpoints-bench: how long a pod's readiness change takes to reach
//! the EndpointSlices at scale, and what the controllers cost to hold that
//! scale (see DESIGN.md, "Performance: what we measure").
//!
//! It starts `knit server --no-controllers` on loopback, fills it with
//! `--services` Services of `--endpoints` ready pods each (a named target
//! port, as the article's Service has), then starts `knit controllers` as
//! its own process and waits until every Service's slice lists all its pods
//! as ready. Then it flips one random pod's readiness at a time, `--flips`
//! times, and times two things from the moment the status write is sent:
//!
//! - **anchor**: a watch on Pods sees the pod change — the API's own
//!   write-to-watch delivery, the least any controller can add to;
//! - **measured**: a watch on EndpointSlices sees the slice say so — what a
//!   node agent would wait for.
//!
//! It prints p50/p99/max of both, their ratio, and the controllers'
//! process memory (resident now and at its peak). Every bound is a flag.
//!
//! Run: `cargo build --release -p knit-cli -p knit-e2e && target/release/knit-endpoints-bench`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use hyper::{Method, StatusCode};
use knit_e2e::stats::{Memory, cpu_seconds, memory, micros, percentile};
use knit_e2e::{HttpClient, JsonLines, KnitServer, knit_bin};
use rand::Rng;
use serde_json::json;
use tokio::sync::mpsc;

const NAMESPACE: &str = "default";
const MERGE_PATCH: &str = "application/merge-patch+json";

/// Readiness-to-EndpointSlice latency at scale, against the API's own
/// watch delivery measured in the same run.
#[derive(Debug, Clone, Parser)]
#[command(name = "knit-endpoints-bench", version, about)]
struct Args {
    /// Services in the store.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Ready pods behind each Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Readiness flips measured, one at a time.
    #[arg(long, default_value_t = 300)]
    flips: usize,
    /// Concurrent connections that fill the store.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Which controllers `knit controllers` runs (its `--controllers`).
    #[arg(long, default_value = "*")]
    controllers: String,
    /// Seconds the controllers get to write every Service's endpoints.
    #[arg(long, default_value_t = 900)]
    sync_timeout: u64,
    /// Where the server's temporary data directory goes.
    #[arg(long, env = "KNIT_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// Keep the data directory (and logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = tokio::select! {
        res = run(args) => res,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; processes stopped and temp dir removed")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knit-endpoints-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.services > 0 && args.endpoints > 0,
        "--services and --endpoints must be at least 1"
    );
    let knit = knit_bin();
    println!("knit-endpoints-bench: knit = {}", knit.display());
    if !knit.components().any(|c| c.as_os_str() == "release") {
        println!("  warning: not a release build; build with `cargo build --release -p knit-cli`");
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("knit-endpoints-bench-")
        .disable_cleanup(args.keep)
        .tempdir_in(&base)?;
    println!(
        "knit-endpoints-bench: {} services x {} pods, {} flips, {} cores, data in {}",
        args.services,
        args.endpoints,
        args.flips,
        std::thread::available_parallelism().map_or(0, usize::from),
        dir.path().display()
    );
    // 10,000 ClusterIPs do not fit the article's /20.
    let server = KnitServer::start_with_args(
        dir.path(),
        &["--no-controllers", "--service-cidr", "10.96.0.0/12"],
    )
    .await?;
    let client = server.client();

    let started = Instant::now();
    fill(&client, &args).await?;
    println!(
        "filled the store in {:.1} s ({} objects, {} status writes)",
        started.elapsed().as_secs_f64(),
        args.services + args.services * args.endpoints,
        args.services * args.endpoints
    );

    let (slice_tx, mut slices) = mpsc::unbounded_channel();
    let from = current_revision(&client).await?;
    let watch = open_watch(&client, "/apis/discovery.k8s.io/v1/endpointslices", &from).await?;
    tokio::spawn(read_slices(watch, slice_tx));

    let controllers = Controllers::start(&knit, dir.path(), &args.controllers)?;
    let synced = wait_for_sync(&mut slices, &args, &controllers).await?;
    let after_sync = memory(controllers.pid());
    println!(
        "controllers ({}) wrote every service's endpoints in {:.1} s; memory {:.0} MiB (peak {:.0} MiB), cpu {:.1} s",
        args.controllers,
        synced.as_secs_f64(),
        after_sync.resident,
        after_sync.peak,
        cpu_seconds(controllers.pid())
    );

    let (pod_tx, mut pods) = mpsc::unbounded_channel();
    let from = current_revision(&client).await?;
    let watch = open_watch(
        &client,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
        &from,
    )
    .await?;
    tokio::spawn(read_pods(watch, pod_tx));

    let flips = flip(&client, &args, &mut pods, &mut slices).await?;
    let at_end = memory(controllers.pid());
    report(&args, &flips, after_sync, at_end);
    controllers.stop();
    if let Err(e) = server.stop().await {
        println!("warning: knit server did not stop cleanly: {e}");
    }
    Ok(())
}

fn service_name(i: usize) -> String {
    format!("bench-{i}")
}

fn pod_name(i: usize, j: usize) -> String {
    format!("bench-{i}-{j}")
}

fn pod_ip(i: usize, j: usize, endpoints: usize) -> Ipv4Addr {
    // 10.0.1.0 upwards, one address per pod.
    let n = u32::try_from(i * endpoints + j).expect("fewer than 2^32 pods");
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 1, 0)) + n)
}

fn ready_status(ip: Ipv4Addr, ready: bool) -> Bytes {
    let condition = if ready { "True" } else { "False" };
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "conditions": [{"type": "Ready", "status": condition, "lastTransitionTime": now}],
    }});
    Bytes::from(patch.to_string())
}

/// Creates the Services, then the pods with their ready status, over
/// `--writers` connections.
async fn fill(client: &HttpClient, args: &Args) -> anyhow::Result<()> {
    let endpoints = args.endpoints;
    each(
        client,
        args.writers,
        args.services,
        move |client, i| async move {
            let service = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service_name(i)},
                "spec": {"selector": {"app": service_name(i)},
                         "ports": [{"port": 80, "targetPort": "http"}]},
            });
            expect(
                client
                    .post_json(
                        &format!("/api/v1/namespaces/{NAMESPACE}/services"),
                        &service,
                    )
                    .await?
                    .status,
                StatusCode::CREATED,
                "creating a service",
            )
        },
    )
    .await?;
    each(
        client,
        args.writers,
        args.services * endpoints,
        move |client, k| async move {
            let (i, j) = (k / endpoints, k % endpoints);
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name(i, j), "labels": {"app": service_name(i)}},
                "spec": {"nodeName": format!("node-{j}"),
                         "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                         "ports": [{"name": "http", "containerPort": 8080}]}]},
            });
            let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
            expect(
                client.post_json(&path, &pod).await?.status,
                StatusCode::CREATED,
                "creating a pod",
            )?;
            let (status, _) = client
                .send_typed(
                    Method::PATCH,
                    &format!("{path}/{}/status", pod_name(i, j)),
                    MERGE_PATCH,
                    ready_status(pod_ip(i, j, endpoints), true),
                )
                .await?;
            expect(status, StatusCode::OK, "writing a pod's status")
        },
    )
    .await
}

fn expect(got: StatusCode, want: StatusCode, what: &str) -> anyhow::Result<()> {
    ensure!(got == want, "{what}: HTTP {got}");
    Ok(())
}

/// Runs `task(client, k)` for every `k` in `0..count` over `writers`
/// concurrent workers; the first error stops it.
async fn each<F, Fut>(
    client: &HttpClient,
    writers: usize,
    count: usize,
    task: F,
) -> anyhow::Result<()>
where
    F: Fn(HttpClient, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::<anyhow::Result<()>>::new();
    for _ in 0..writers.max(1) {
        let (client, next, task) = (client.clone(), next.clone(), task.clone());
        workers.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= count {
                    return Ok(());
                }
                task(client.clone(), k).await?;
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    Ok(())
}

async fn current_revision(client: &HttpClient) -> anyhow::Result<String> {
    let list = client
        .get_json(&format!(
            "/api/v1/namespaces/{NAMESPACE}/configmaps?limit=1"
        ))
        .await?;
    list.body["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned)
        .context("a list without a resourceVersion")
}

async fn open_watch(client: &HttpClient, path: &str, from: &str) -> anyhow::Result<JsonLines> {
    let (status, lines) = client
        .stream(
            Method::GET,
            &format!("{path}?watch=true&resourceVersion={from}"),
            None,
        )
        .await?;
    ensure!(status == StatusCode::OK, "watching {path}: HTTP {status}");
    Ok(lines)
}

/// A slice as the watch delivered it: its Service and each pod's readiness.
struct SliceSeen {
    service: String,
    ready: HashMap<String, bool>,
    at: Instant,
}

/// A pod's readiness as the watch delivered it.
struct PodSeen {
    name: String,
    ready: bool,
    at: Instant,
}

async fn read_slices(mut watch: JsonLines, out: mpsc::UnboundedSender<SliceSeen>) {
    while let Some(Ok(event)) = watch.next_json().await {
        let at = Instant::now();
        let slice = &event["object"];
        let Some(service) = slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str()
        else {
            continue;
        };
        let ready = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e["targetRef"]["name"].as_str()?;
                Some((name.to_owned(), e["conditions"]["ready"] == json!(true)))
            })
            .collect();
        let seen = SliceSeen {
            service: service.to_owned(),
            ready,
            at,
        };
        if out.send(seen).is_err() {
            return;
        }
    }
}

async fn read_pods(mut watch: JsonLines, out: mpsc::UnboundedSender<PodSeen>) {
    while let Some(Ok(event)) = watch.next_json().await {
        let at = Instant::now();
        let pod = &event["object"];
        let Some(name) = pod["metadata"]["name"].as_str() else {
            continue;
        };
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if out
            .send(PodSeen {
                name: name.to_owned(),
                ready,
                at,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Waits until every Service's slices list all its pods as ready.
async fn wait_for_sync(
    slices: &mut mpsc::UnboundedReceiver<SliceSeen>,
    args: &Args,
    controllers: &Controllers,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.sync_timeout);
    let mut ready_per_service: HashMap<String, usize> = HashMap::new();
    let mut complete = 0;
    let mut last_report = Instant::now();
    while complete < args.services {
        let seen = match tokio::time::timeout_at(deadline.into(), slices.recv()).await {
            Ok(Some(seen)) => seen,
            Ok(None) => bail!("the slice watch ended"),
            Err(_) => bail!(
                "after {} s only {complete} of {} services had all their endpoints ready",
                args.sync_timeout,
                args.services
            ),
        };
        let ready = seen.ready.values().filter(|r| **r).count();
        let before = ready_per_service.insert(seen.service, ready).unwrap_or(0);
        match (before == args.endpoints, ready == args.endpoints) {
            (false, true) => complete += 1,
            (true, false) => complete -= 1,
            _ => {}
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            let mem = memory(controllers.pid());
            println!(
                "  ... {complete} of {} services synced after {:.0} s, controllers at {:.0} MiB",
                args.services,
                started.elapsed().as_secs_f64(),
                mem.resident
            );
            last_report = Instant::now();
        }
    }
    Ok(started.elapsed())
}

/// One measured flip: microseconds from the write to each watch.
struct Flip {
    pod_us: u64,
    slice_us: u64,
}

/// Flips one random pod's readiness at a time and times both watches.
async fn flip(
    client: &HttpClient,
    args: &Args,
    pods: &mut mpsc::UnboundedReceiver<PodSeen>,
    slices: &mut mpsc::UnboundedReceiver<SliceSeen>,
) -> anyhow::Result<Vec<Flip>> {
    const WAIT: Duration = Duration::from_secs(10);
    let mut ready: HashMap<(usize, usize), bool> = HashMap::new();
    let mut flips = Vec::with_capacity(args.flips);
    let mut rng = rand::rng();
    for _ in 0..args.flips {
        let (i, j) = (
            rng.random_range(0..args.services),
            rng.random_range(0..args.endpoints),
        );
        let now_ready = !ready.get(&(i, j)).copied().unwrap_or(true);
        let (service, pod) = (service_name(i), pod_name(i, j));
        let sent = Instant::now();
        let (status, body) = client
            .send_typed(
                Method::PATCH,
                &format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}/status"),
                MERGE_PATCH,
                ready_status(pod_ip(i, j, args.endpoints), now_ready),
            )
            .await?;
        ensure!(
            status == StatusCode::OK,
            "flipping {pod}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        ready.insert((i, j), now_ready);
        let pod_at = until(pods, WAIT, |p| p.name == pod && p.ready == now_ready)
            .await
            .with_context(|| format!("the pod watch never showed {pod} ready={now_ready}"))?
            .at;
        let slice_at = until(slices, WAIT, |s| {
            s.service == service && s.ready.get(&pod) == Some(&now_ready)
        })
        .await
        .with_context(|| {
            format!("no slice of {service} showed {pod} ready={now_ready} within {WAIT:?}")
        })?
        .at;
        flips.push(Flip {
            pod_us: micros(pod_at - sent),
            slice_us: micros(slice_at.saturating_duration_since(sent)),
        });
        // Let the controllers settle so that each flip is measured alone.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(flips)
}

/// The first item from `rx` within `wait` that satisfies `wanted`,
/// dropping the others.
async fn until<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    wait: Duration,
    wanted: impl Fn(&T) -> bool,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) if wanted(&item) => return Some(item),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

fn report(args: &Args, flips: &[Flip], after_sync: Memory, at_end: Memory) {
    let mut pod: Vec<u64> = flips.iter().map(|f| f.pod_us).collect();
    let mut slice: Vec<u64> = flips.iter().map(|f| f.slice_us).collect();
    pod.sort_unstable();
    slice.sort_unstable();
    let row = |name: &str, us: &[u64]| {
        println!(
            "  {name:<46} {:>8.2} {:>8.2} {:>8.2}",
            percentile(us, 50.0),
            percentile(us, 99.0),
            percentile(us, 100.0)
        );
    };
    println!(
        "\n== {} readiness flips, {} services x {} endpoints ==",
        flips.len(),
        args.services,
        args.endpoints
    );
    println!(
        "  {:<46} {:>8} {:>8} {:>8}",
        "milliseconds from the status write to", "p50", "p99", "max"
    );
    row("the pod on a pod watch (anchor)", &pod);
    row("the EndpointSlice on a slice watch", &slice);
    println!(
        "  ratio slice/anchor: p50 {:.1}x, p99 {:.1}x",
        percentile(&slice, 50.0) / percentile(&pod, 50.0),
        percentile(&slice, 99.0) / percentile(&pod, 99.0)
    );
    println!(
        "  controllers ({}) memory: {:.0} MiB after the initial sync, {:.0} MiB at the end, peak {:.0} MiB",
        args.controllers, after_sync.resident, at_end.resident, at_end.peak
    );
}

/// `knit controllers` as its own process, killed when dropped.
struct Controllers {
    child: Child,
}

impl Controllers {
    fn start(knit: &Path, data_dir: &Path, selection: &str) -> anyhow::Result<Controllers> {
        let log = std::fs::File::create(data_dir.join("knit-controllers.log"))?;
        let child = Command::new(knit)
            .arg("controllers")
            .arg("--kubeconfig")
            .arg(data_dir.join("admin.kubeconfig"))
            .arg("--controllers")
            .arg(selection)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} controllers", knit.display()))?;
        Ok(Controllers { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
