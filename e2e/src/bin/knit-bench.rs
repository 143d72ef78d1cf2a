//! knit-bench: knit's store-facing performance as ratios against etcd 3.4,
//! measured in the same run on the same machine (see DESIGN.md, "Performance:
//! what we measure").
//!
//! Both servers run on loopback with their default durability (they fsync
//! before they acknowledge), each in its own temporary directory on the same
//! disk, one after the other. The same load generator drives both:
//!
//! - **creates**: N concurrent clients, one keep-alive connection each, make
//!   creates with a value of the same size for a fixed time after a warm-up —
//!   etcd through its JSON gateway (`POST /v3/kv/put`), knit with
//!   `POST .../configmaps`. Throughput and request latency percentiles.
//! - **watch**: W watchers (knit's configmaps watch, etcd's `POST /v3/watch`)
//!   while a writer makes a fixed number of writes per second, each carrying
//!   its send time; every watcher records write-to-delivery latency.
//!
//! Run with `cargo build --release -p knit-cli && cargo run --release -p
//! knit-e2e --bin knit-bench`; every bound (time, counts) is a flag.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use clap::Parser;
use hyper::{Method, StatusCode};
use knit_e2e::server::{KnitServer, free_port, knit_bin};
use knit_e2e::stats::{cpu_seconds, micros, percentile};
use knit_e2e::{HttpClient, JsonLines};
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinSet;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
/// Digits of the send timestamp (microseconds since the run's epoch) at the
/// start of every watch-test value.
const STAMP_DIGITS: usize = 20;

/// Measures knit against etcd 3.4 (Debian's etcd-server) in the same run.
#[derive(Debug, Clone, Parser)]
#[command(name = "knit-bench", version, about)]
struct Args {
    /// Concurrent create clients (one keep-alive connection each).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of creates measured per server.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of creates before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Bytes in each value (ConfigMap data value / etcd value).
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Concurrent watchers in the watch test.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Writes per second during the watch test.
    #[arg(long, default_value_t = 1000)]
    watch_rate: u64,
    /// Seconds of writes during the watch test.
    #[arg(long, default_value_t = 10)]
    watch_duration: u64,
    /// Connections the watch-test writer spreads its writes over.
    #[arg(long, default_value_t = 32)]
    writer_connections: usize,
    /// Where the servers' temporary data directories go (same disk for both).
    #[arg(long, env = "KNIT_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// The etcd binary (Debian: `apt-get install -y etcd-server etcd-client`).
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Measure only one server (no ratios): `etcd` or `knit`.
    #[arg(long, value_parser = ["etcd", "knit"])]
    only: Option<String>,
    /// Keep the data directories (and server logs) instead of deleting them.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !args.etcd.is_file() {
        eprintln!(
            "knit-bench: no etcd at {}. The anchor is etcd 3.4 from Debian's etcd-server package:\n  \
             apt-get update && apt-get install -y etcd-server etcd-client\n\
             (or point --etcd at an etcd binary)",
            args.etcd.display()
        );
        return ExitCode::from(2);
    }
    let outcome = tokio::select! {
        res = run(args) => res,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; servers stopped and temp dirs removed")),
    };
    // `run` has been dropped by now, and with it every server guard and temp dir.
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knit-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let wants = |side: &str| args.only.as_deref().is_none_or(|o| o == side);
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let knit = if args.only.as_deref() == Some("etcd") {
        PathBuf::from("(not run)")
    } else {
        knit_bin()
    };
    let etcd_version = etcd_version(&args.etcd)?;
    println!("knit-bench: knit = {}", knit.display());
    if wants("knit") && !knit.components().any(|c| c.as_os_str() == "release") {
        println!(
            "  warning: this knit is not a release build; build with `cargo build --release -p knit-cli`"
        );
    }
    println!(
        "knit-bench: etcd = {} ({etcd_version})",
        args.etcd.display()
    );
    println!(
        "knit-bench: data under {}; {} cores; creates: {} clients, {} B values, {} s warm-up + {} s; \
         watch: {} watchers, {} writes/s for {} s",
        base.display(),
        std::thread::available_parallelism().map_or(0, usize::from),
        args.clients,
        args.value_size,
        args.warmup,
        args.duration,
        args.watchers,
        args.watch_rate,
        args.watch_duration
    );

    let mut etcd_results = Results::default();
    if wants("etcd") {
        let dir = temp_dir(&base, "knit-bench-etcd-", args.keep)?;
        let etcd = Etcd::start(&args.etcd, dir.path()).await?;
        println!("\n== etcd {etcd_version} on {} ==", etcd.url);
        let client = HttpClient::new(etcd.url.clone());
        let results = measure(Kind::Etcd, &client, etcd.pid(), &args).await?;
        etcd.stop().await;
        etcd_results = results;
    }
    let mut knit_results = Results::default();
    if wants("knit") {
        let dir = temp_dir(&base, "knit-bench-knit-", args.keep)?;
        let server = KnitServer::start(dir.path()).await?;
        println!("\n== knit on {} ==", server.base_url());
        let results = measure(Kind::Knit, &server.client(), server.pid(), &args).await?;
        if let Err(e) = server.stop().await {
            println!("  warning: knit did not stop cleanly: {e}");
        }
        knit_results = results;
    }
    print_summary(&etcd_version, &etcd_results, &knit_results, &args);
    Ok(())
}

fn temp_dir(base: &Path, prefix: &str, keep: bool) -> anyhow::Result<tempfile::TempDir> {
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir_in(base)
        .with_context(|| format!("creating a temp dir in {}", base.display()))?;
    if keep {
        println!("keeping {}", dir.path().display());
    }
    Ok(dir)
}

/// Which server a request is shaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Etcd,
    Knit,
}

impl Kind {
    /// The path and body of a create of `value` under the unique `name`.
    fn create(self, name: &str, value: &str) -> (&'static str, Bytes) {
        let body = match self {
            Kind::Etcd => json!({
                "key": B64.encode(name),
                "value": B64.encode(value),
            }),
            Kind::Knit => json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": { "name": name },
                "data": { "value": value },
            }),
        };
        let path = match self {
            Kind::Etcd => "/v3/kv/put",
            Kind::Knit => CONFIGMAPS,
        };
        (path, Bytes::from(body.to_string()))
    }

    /// The status of a successful create.
    fn created(self) -> StatusCode {
        match self {
            Kind::Etcd => StatusCode::OK,
            Kind::Knit => StatusCode::CREATED,
        }
    }
}

/// Everything measured against one server.
#[derive(Debug, Default)]
struct Results {
    creates: Creates,
    watch: Watch,
}

async fn measure(
    kind: Kind,
    client: &HttpClient,
    server_pid: u32,
    args: &Args,
) -> anyhow::Result<Results> {
    let cpu = CpuMark::now(server_pid);
    let creates = creates(kind, client, args).await?;
    println!(
        "  creates: {:.0}/s ({} in {:.1} s, {} errors), latency p50 {:.2} ms p99 {:.2} ms; {}",
        creates.per_sec(),
        creates.ok,
        creates.elapsed.as_secs_f64(),
        creates.errors,
        percentile(&creates.latencies_us, 50.0),
        percentile(&creates.latencies_us, 99.0),
        cpu.since()
    );
    let cpu = CpuMark::now(server_pid);
    let watch = watch(kind, client, args).await?;
    println!(
        "  watch: {} writes ({:.0}/s, write p50 {:.2} ms), {}/{} events delivered, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms; {}",
        watch.writes,
        watch.write_rate,
        percentile(&watch.write_latencies_us, 50.0),
        watch.delivered,
        watch.writes * args.watchers as u64,
        percentile(&watch.latencies_us, 50.0),
        percentile(&watch.latencies_us, 99.0),
        percentile(&watch.latencies_us, 100.0),
        cpu.since()
    );
    if let Some(e) = &watch.first_error {
        println!("  watch error: {e}");
    }
    if watch.write_rate < 0.9 * args.watch_rate as f64 {
        println!(
            "  note: the writer reached only {:.0} of {} writes/s: the server (or the machine) is saturated, \
             so these watch latencies include queueing",
            watch.write_rate, args.watch_rate
        );
    }
    Ok(Results { creates, watch })
}

/// Create throughput and latency over the measured window.
#[derive(Debug, Default)]
struct Creates {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Creates {
    fn per_sec(&self) -> f64 {
        if self.elapsed.is_zero() {
            return f64::NAN; // not measured
        }
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// `args.clients` tasks, each on its own connection, create as fast as they
/// are acknowledged; only requests sent and answered inside the measured
/// window count.
async fn creates(kind: Kind, base: &HttpClient, args: &Args) -> anyhow::Result<Creates> {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let measure_to = measure_from + Duration::from_secs(args.duration);
    let value: Arc<str> = "v".repeat(args.value_size).into();
    let mut tasks = JoinSet::new();
    for c in 0..args.clients {
        let client = base.fresh();
        let value = Arc::clone(&value);
        tasks.spawn(async move {
            let mut out = Creates::default();
            for seq in 0u64.. {
                let sent = Instant::now();
                if sent >= measure_to {
                    break;
                }
                let (path, body) = kind.create(&format!("bench-c{c}-{seq}"), &value);
                let res = client.send_bytes(Method::POST, path, Some(body)).await;
                let done = Instant::now();
                if sent < measure_from || done > measure_to {
                    continue;
                }
                match res {
                    Ok((status, _)) if status == kind.created() => {
                        out.ok += 1;
                        out.latencies_us.push(micros(done - sent));
                    }
                    Ok((status, body)) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| {
                            format!("{status}: {}", String::from_utf8_lossy(&body))
                        });
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            out
        });
    }
    let mut total = Creates {
        elapsed: measure_to - measure_from,
        ..Creates::default()
    };
    while let Some(part) = tasks.join_next().await {
        let part = part?;
        total.ok += part.ok;
        total.errors += part.errors;
        total.latencies_us.extend(part.latencies_us);
        if total.first_error.is_none() {
            total.first_error = part.first_error;
        }
    }
    total.latencies_us.sort_unstable();
    if let Some(e) = &total.first_error {
        println!("  first create error: {e}");
    }
    ensure!(total.ok > 0, "no create succeeded");
    Ok(total)
}

/// Write-to-delivery latency as every watcher saw it.
#[derive(Debug)]
struct Watch {
    writes: u64,
    /// Writes per second actually sustained (NaN when not measured).
    write_rate: f64,
    write_latencies_us: Vec<u64>,
    delivered: u64,
    latencies_us: Vec<u64>,
    first_error: Option<String>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            writes: 0,
            write_rate: f64::NAN,
            write_latencies_us: Vec::new(),
            delivered: 0,
            latencies_us: Vec::new(),
            first_error: None,
        }
    }
}

/// One knit watch event, reduced to what the latency needs.
#[derive(Deserialize)]
struct KnitEvent {
    #[serde(rename = "type")]
    kind: String,
    object: KnitObject,
}

#[derive(Deserialize)]
struct KnitObject {
    #[serde(default)]
    data: Option<KnitData>,
}

#[derive(Deserialize)]
struct KnitData {
    #[serde(default)]
    value: Option<String>,
}

/// One message of etcd's gateway watch stream.
#[derive(Deserialize)]
struct EtcdMessage {
    #[serde(default)]
    result: Option<EtcdResult>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct EtcdResult {
    #[serde(default)]
    created: bool,
    #[serde(default)]
    events: Vec<EtcdEvent>,
}

#[derive(Deserialize)]
struct EtcdEvent {
    kv: EtcdKv,
}

#[derive(Deserialize)]
struct EtcdKv {
    #[serde(default)]
    value: Option<String>,
}

/// The send stamp at the start of a watch-test value.
fn stamp_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.get(..STAMP_DIGITS)?)
        .ok()?
        .parse()
        .ok()
}

/// Send stamps of the test writes in one line of a watch stream (none for a
/// line that carries no write, such as a bookmark).
fn stamps_in(kind: Kind, line: &[u8]) -> anyhow::Result<Vec<u64>> {
    match kind {
        Kind::Knit => {
            let event: KnitEvent = serde_json::from_slice(line)
                .with_context(|| format!("bad watch line {}", String::from_utf8_lossy(line)))?;
            match event.kind.as_str() {
                "ADDED" => Ok(event
                    .object
                    .data
                    .and_then(|d| d.value)
                    .and_then(|v| stamp_of(v.as_bytes()))
                    .into_iter()
                    .collect()),
                "ERROR" => bail!("watch ERROR event: {}", String::from_utf8_lossy(line)),
                _ => Ok(Vec::new()),
            }
        }
        Kind::Etcd => {
            let msg: EtcdMessage = serde_json::from_slice(line)
                .with_context(|| format!("bad watch line {}", String::from_utf8_lossy(line)))?;
            if let Some(e) = msg.error {
                bail!("etcd watch error: {e}");
            }
            let events = msg.result.map(|r| r.events).unwrap_or_default();
            Ok(events
                .iter()
                .filter_map(|e| B64.decode(e.kv.value.as_deref()?).ok())
                .filter_map(|v| stamp_of(&v))
                .collect())
        }
    }
}

/// Opens one watch and waits until it is established: for knit when the
/// response head arrives, for etcd when its "created" message does.
async fn open_watch(kind: Kind, client: &HttpClient) -> anyhow::Result<JsonLines> {
    match kind {
        Kind::Knit => {
            let list = client.get_json(&format!("{CONFIGMAPS}?limit=1")).await?;
            let rv = list.body["metadata"]["resourceVersion"]
                .as_str()
                .with_context(|| format!("list without resourceVersion: {}", list.body))?
                .to_owned();
            let path = format!("{CONFIGMAPS}?watch=1&resourceVersion={rv}");
            let (status, lines) = client.stream(Method::GET, &path, None).await?;
            ensure!(status == StatusCode::OK, "knit watch answered {status}");
            Ok(lines)
        }
        Kind::Etcd => {
            let body = json!({ "create_request": {
                // Every key starting "watch-" ('.' follows '-').
                "key": B64.encode("watch-"),
                "range_end": B64.encode("watch."),
            }});
            let (status, mut lines) = client
                .stream(
                    Method::POST,
                    "/v3/watch",
                    Some(Bytes::from(body.to_string())),
                )
                .await?;
            ensure!(status == StatusCode::OK, "etcd watch answered {status}");
            let first = lines
                .next_line()
                .await
                .context("etcd watch ended before it was created")??;
            let msg: EtcdMessage = serde_json::from_slice(&first)?;
            ensure!(
                msg.result.is_some_and(|r| r.created),
                "etcd watch did not start: {}",
                String::from_utf8_lossy(&first)
            );
            Ok(lines)
        }
    }
}

/// `args.watchers` watchers, then `args.watch_rate` writes/s for
/// `args.watch_duration` s; each watcher records now − send stamp for every
/// write it sees. Ends when every watcher has every write, or 10 s after the
/// last write.
async fn watch(kind: Kind, client: &HttpClient, args: &Args) -> anyhow::Result<Watch> {
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));

    let mut opening = JoinSet::new();
    for _ in 0..args.watchers {
        let client = client.fresh();
        opening.spawn(async move { open_watch(kind, &client).await });
    }
    let mut streams = Vec::with_capacity(args.watchers);
    let open_deadline = Instant::now() + Duration::from_secs(30);
    while let Some(res) = tokio::time::timeout_at(open_deadline.into(), opening.join_next())
        .await
        .context("watchers did not open within 30 s")?
    {
        streams.push(res?.context("opening a watch")?);
    }
    // Let the server finish registering the watchers before the first write.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut watchers = JoinSet::new();
    for mut lines in streams {
        let stop = Arc::clone(&stop);
        let delivered = Arc::clone(&delivered);
        watchers.spawn(async move {
            let mut latencies = Vec::new();
            let mut error = None;
            while !stop.load(Ordering::Relaxed) {
                let line = match tokio::time::timeout(Duration::from_millis(100), lines.next_line())
                    .await
                {
                    Err(_) => continue,
                    Ok(None) => {
                        error = Some("watch stream ended".to_owned());
                        break;
                    }
                    Ok(Some(Err(e))) => {
                        error = Some(e.to_string());
                        break;
                    }
                    Ok(Some(Ok(line))) => line,
                };
                let now = micros(epoch.elapsed());
                match stamps_in(kind, &line) {
                    Ok(stamps) => {
                        delivered.fetch_add(stamps.len() as u64, Ordering::Relaxed);
                        latencies.extend(stamps.into_iter().map(|s| now.saturating_sub(s)));
                    }
                    Err(e) => {
                        error = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            (latencies, error)
        });
    }

    let (writes, write_latencies_us, write_time) = write_paced(kind, client, args, epoch).await?;
    let expected = writes * args.watchers as u64;
    let grace = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < expected
        && Instant::now() < grace
        && !watchers.is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut out = Watch {
        writes,
        write_rate: writes as f64 / write_time.as_secs_f64(),
        write_latencies_us,
        ..Watch::default()
    };
    while let Some(res) = watchers.join_next().await {
        let (latencies, error) = res?;
        out.delivered += latencies.len() as u64;
        out.latencies_us.extend(latencies);
        if out.first_error.is_none() {
            out.first_error = error;
        }
    }
    out.latencies_us.sort_unstable();
    Ok(out)
}

/// Makes `watch_rate × watch_duration` writes at the given rate over
/// `writer_connections` connections, stopping at twice the planned time if the
/// server cannot keep up; returns how many succeeded, their
/// latencies (sorted) and how long the writing took.
async fn write_paced(
    kind: Kind,
    client: &HttpClient,
    args: &Args,
    epoch: Instant,
) -> anyhow::Result<(u64, Vec<u64>, Duration)> {
    let total = args.watch_rate * args.watch_duration;
    // A server that cannot keep the rate gets twice the time, then the
    // writes stop: the achieved rate is part of the result.
    let started = Instant::now();
    let cutoff = started + 2 * Duration::from_secs(args.watch_duration);
    let (tx, rx) = async_channel(64);
    let mut writers = JoinSet::new();
    let pad = args.value_size.max(STAMP_DIGITS) - STAMP_DIGITS;
    for _ in 0..args.writer_connections.max(1) {
        let client = client.fresh();
        let rx = Arc::clone(&rx);
        let pad = "x".repeat(pad);
        writers.spawn(async move {
            let mut ok = 0u64;
            let mut latencies = Vec::new();
            loop {
                let Some(seq) = rx.lock().await.recv().await else {
                    break;
                };
                if Instant::now() > cutoff {
                    continue; // past the bound: drain the queue unsent
                }
                let sent = epoch.elapsed();
                let value = format!("{:0width$}{pad}", micros(sent), width = STAMP_DIGITS);
                let (path, body) = kind.create(&format!("watch-{seq}"), &value);
                let res = client.send_bytes(Method::POST, path, Some(body)).await;
                match res {
                    Ok((status, _)) if status == kind.created() => {
                        ok += 1;
                        latencies.push(micros(epoch.elapsed() - sent));
                    }
                    Ok((status, body)) => {
                        bail!(
                            "watch-test write: {status}: {}",
                            String::from_utf8_lossy(&body)
                        )
                    }
                    Err(e) => bail!("watch-test write: {e}"),
                }
            }
            Ok((ok, latencies))
        });
    }
    let period = Duration::from_secs_f64(1.0 / args.watch_rate.max(1) as f64);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..total {
        ticks.tick().await;
        if Instant::now() > cutoff {
            println!("  note: writer stopped at the time bound after {seq} of {total} writes");
            break;
        }
        if tx.send(seq).await.is_err() {
            break; // every writer failed; the join below says why
        }
    }
    drop(tx);
    let mut ok = 0;
    let mut latencies = Vec::new();
    while let Some(res) = writers.join_next().await {
        let (n, l) = res??;
        ok += n;
        latencies.extend(l);
    }
    latencies.sort_unstable();
    Ok((ok, latencies, started.elapsed()))
}

/// A bounded multi-consumer queue: an mpsc receiver behind a mutex.
fn async_channel(
    cap: usize,
) -> (
    tokio::sync::mpsc::Sender<u64>,
    Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<u64>>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(cap);
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}

/// CPU seconds used by the server and by this process since `start`.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    server_pid: u32,
    server: f64,
    client: f64,
}

impl CpuMark {
    fn now(server_pid: u32) -> Self {
        CpuMark {
            server_pid,
            server: cpu_seconds(server_pid),
            client: cpu_seconds(std::process::id()),
        }
    }

    /// "server X s, client Y s" since this mark.
    fn since(&self) -> String {
        let now = CpuMark::now(self.server_pid);
        format!(
            "cpu: server {:.1} s, load generator {:.1} s",
            now.server - self.server,
            now.client - self.client
        )
    }
}

fn print_summary(etcd_version: &str, etcd: &Results, knit: &Results, args: &Args) {
    let rows: [(String, f64, f64, &str); 7] = [
        (
            format!("durable creates/s ({} clients)", args.clients),
            etcd.creates.per_sec(),
            knit.creates.per_sec(),
            "higher",
        ),
        (
            "create latency p50 (ms)".to_owned(),
            percentile(&etcd.creates.latencies_us, 50.0),
            percentile(&knit.creates.latencies_us, 50.0),
            "lower",
        ),
        (
            "create latency p99 (ms)".to_owned(),
            percentile(&etcd.creates.latencies_us, 99.0),
            percentile(&knit.creates.latencies_us, 99.0),
            "lower",
        ),
        (
            format!("watch latency p50 (ms, {} watchers)", args.watchers),
            percentile(&etcd.watch.latencies_us, 50.0),
            percentile(&knit.watch.latencies_us, 50.0),
            "lower",
        ),
        (
            "watch latency p99 (ms)".to_owned(),
            percentile(&etcd.watch.latencies_us, 99.0),
            percentile(&knit.watch.latencies_us, 99.0),
            "lower",
        ),
        (
            "watch-test write rate (/s)".to_owned(),
            etcd.watch.write_rate,
            knit.watch.write_rate,
            "higher",
        ),
        (
            "watch events delivered (%)".to_owned(),
            delivered_pct(&etcd.watch, args),
            delivered_pct(&knit.watch, args),
            "higher",
        ),
    ];
    println!("\n== summary: knit vs etcd {etcd_version}, same run, loopback ==");
    println!(
        "{:<38} {:>12} {:>12} {:>10}  better",
        "", "etcd", "knit", "knit/etcd"
    );
    for (name, e, k, better) in rows {
        println!(
            "{name:<38} {:>12} {:>12} {:>10}  {better}",
            cell(e),
            cell(k),
            cell(k / e)
        );
    }
}

/// A table cell: two decimals, or "-" for a figure that was not measured.
fn cell(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "-".to_owned()
    }
}

fn delivered_pct(w: &Watch, args: &Args) -> f64 {
    let expected = w.writes * args.watchers as u64;
    if expected == 0 {
        return f64::NAN;
    }
    100.0 * w.delivered as f64 / expected as f64
}

fn etcd_version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .unwrap_or("unknown version")
        .trim()
        .to_owned())
}

/// A single-member etcd on loopback ports in its own data directory, with
/// etcd's defaults otherwise. Dropping it kills the process.
struct Etcd {
    child: Option<Child>,
    url: String,
}

impl Etcd {
    async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Etcd> {
        let client_url = format!("http://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new(bin)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut etcd = Etcd {
            child: Some(child),
            url: client_url,
        };
        let client = HttpClient::new(etcd.url.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = etcd
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                etcd.child = None;
                bail!(
                    "etcd exited ({status}) before it was healthy; see {}",
                    dir.join("etcd.log").display()
                );
            }
            if let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(1), client.get_json("/health")).await
                && resp.body["health"] == "true"
            {
                return Ok(etcd);
            }
            ensure!(
                Instant::now() < deadline,
                "etcd not healthy after 30 s; see {}",
                dir.join("etcd.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
