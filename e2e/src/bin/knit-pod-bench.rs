//! knit-pod-bench: how fast pods start on one node, and what knit's
//! sandbox setup costs against the same steps done with `ip` (see
//! DESIGN.md, "Performance: what we measure"). Root only.
//!
//! 1. **Sandbox network setup alone**, in namespaces the bench makes: a
//!    node namespace with the node network (`cbr0` holding 10.0.1.1/24),
//!    then `--pods` sandboxes, each timed on its own:
//!    - knit: `sandbox::pod_sandbox` + `sandbox::apply_sandbox`, the node
//!      agent's own code (a netlink handle held in the node's namespace);
//!    - anchor: a shell script doing the same steps with iproute2 — `ip
//!      netns add`, a veth pair with the pod's end as `eth0` in the new
//!      namespace, the host end on `cbr0` with hairpin and up, `lo` up, the
//!      address, `eth0` up, the default route via the bridge — in a second
//!      node namespace set up the same way.
//!
//!    The two alternate sandbox by sandbox so both meet the same machine.
//!    It prints p50/p99 of each and script/knit.
//! 2. **End to end**: `knit lab up --nodes 1`, a watch on pods, then
//!    `--pods` pods (`sleep`) created back to back through the API; each
//!    pod's time from its create request to the first watch event that
//!    shows it `Running` with a `podIP` (scheduling, sandbox, IP, process
//!    start and status write). p50/p99/max, against the 1 s target and
//!    Kubernetes' pod-startup SLO (p99 ≤ 5 s).
//!
//! Everything it makes is removed at the end, also when it fails (Drop
//! guards: the namespaces by name, the lab with `knit lab down`).
//!
//! Run: `cargo build --release -p knit-cli -p knit-e2e && target/release/knit-pod-bench`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use hyper::Method;
use ipnet::Ipv4Net;
use knit_e2e::HttpClient;
use knit_e2e::lab::{Lab, is_root, text};
use knit_e2e::stats::{micros, summary};
use knit_node_agent::netns::{LinuxNetns, Netns};
use knit_node_agent::sandbox;
use serde_json::json;

/// Pod startup on one node and sandbox setup against iproute2.
#[derive(Debug, Clone, Parser)]
#[command(name = "knit-pod-bench", version, about)]
struct Args {
    /// Pods (and sandboxes) measured in each part.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Skip the end-to-end part (sandboxes only).
    #[arg(long)]
    no_lab: bool,
}

/// The node CIDR of the sandbox part (in the bench's own namespaces).
const CIDR: &str = "10.0.1.0/24";
const MTU: u32 = 1500;

/// The anchor: one sandbox with iproute2, the steps `apply_sandbox` takes.
/// `$1` node namespace, `$2` pod namespace, `$3` host veth, `$4` pod
/// address with prefix, `$5` gateway.
const SCRIPT: &str = r#"set -e
node=$1 pod=$2 veth=$3 addr=$4 gw=$5
ip netns add "$pod"
ip -n "$node" link add "$veth" mtu 1500 type veth peer name eth0 mtu 1500 netns "$pod"
ip -n "$node" link set "$veth" master cbr0
ip -n "$node" link set "$veth" type bridge_slave hairpin on
ip -n "$node" link set "$veth" up
ip -n "$pod" link set lo up
ip -n "$pod" addr add "$addr" dev eth0
ip -n "$pod" link set eth0 up
ip -n "$pod" route add default via "$gw" dev eth0 proto 107
"#;

/// Removes every namespace whose name starts with its prefix when dropped.
struct Namespaces {
    prefix: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let netns = LinuxNetns::new();
        if let Ok(names) = netns.list() {
            for name in names.iter().filter(|n| n.starts_with(&self.prefix)) {
                let _ = netns.delete(name);
            }
        }
    }
}

/// Part 1: knit's `apply_sandbox` against the iproute2 script.
fn sandboxes(pods: usize) -> anyhow::Result<(f64, f64, f64, f64)> {
    ensure!(pods <= 250, "--pods: at most 250 sandboxes fit a /24");
    let prefix = format!("kpb{}.", std::process::id());
    let _cleanup = Namespaces {
        prefix: prefix.clone(),
    };
    let netns = LinuxNetns::new();
    let cidr: Ipv4Net = CIDR.parse()?;
    let node_plan = sandbox::node_network(cidr, MTU)?;
    let knit_node = format!("{prefix}knit");
    let script_node = format!("{prefix}ip");
    netns.create(&knit_node)?;
    netns.create(&script_node)?;
    let knit_nl = netns.open(&knit_node)?;
    sandbox::apply_node(&knit_nl, &node_plan)?;
    let script_nl = netns.open(&script_node)?;
    sandbox::apply_node(&script_nl, &node_plan)?;
    let gateway = Ipv4Addr::from(u32::from(cidr.network()) + 1);

    let (mut knit_us, mut script_us) = (Vec::new(), Vec::new());
    for i in 0..pods {
        let ip = Ipv4Addr::from(u32::from(cidr.network()) + 2 + i as u32);
        let uid = format!("00000000-0000-4000-8000-{i:012}");

        let start = Instant::now();
        let plan = sandbox::pod_sandbox(&format!("{prefix}k."), &uid, ip, cidr, MTU)?;
        sandbox::apply_sandbox(&netns, &knit_nl, &plan)?;
        knit_us.push(micros(start.elapsed()));

        let pod_ns = format!("{prefix}s.{uid}");
        let addr = format!("{ip}/{}", cidr.prefix_len());
        let start = Instant::now();
        let out = Command::new("sh")
            .args(["-c", SCRIPT, "sandbox"])
            .args([
                &script_node,
                &pod_ns,
                &plan.names.host_veth,
                &addr,
                &gateway.to_string(),
            ])
            .stdin(Stdio::null())
            .output()
            .context("running the iproute2 script")?;
        script_us.push(micros(start.elapsed()));
        ensure!(
            out.status.success(),
            "the iproute2 script failed for {pod_ns}: {}",
            text(&out.stderr)
        );
    }
    // Both did the same work: every pod answers on its address.
    for (node, what) in [(&knit_node, "knit"), (&script_node, "ip")] {
        let last = Ipv4Addr::from(u32::from(cidr.network()) + 1 + pods as u32);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                node,
                "ping",
                "-c1",
                "-W1",
                &last.to_string(),
            ])
            .output()?;
        ensure!(
            out.status.success(),
            "{what}'s last sandbox {last} does not answer: {}",
            text(&out.stdout)
        );
    }
    println!("sandbox network setup, {pods} sandboxes on one node, one at a time:");
    let (k50, k99) = summary("knit (apply_sandbox)", knit_us, 2);
    let (s50, s99) = summary("iproute2 script (same steps)", script_us, 2);
    Ok((k50, k99, s50, s99))
}

/// Part 2: pod creation to Running with an IP, through a one-node lab.
async fn end_to_end(pods: usize) -> anyhow::Result<(f64, f64)> {
    // Lab numbers 90+ keep clear of the tests' labs.
    let lab = Lab::new(90);
    let up = lab.up(1, &[]);
    ensure!(
        up.status.success(),
        "knit lab up failed:\n{}",
        text(&up.stderr)
    );
    let api = HttpClient::from_kubeconfig(&lab.dir().join("kubeconfig"))?;
    let list = api.get_json("/api/v1/namespaces/default/pods").await?;
    let rv = list.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let (status, mut lines) = api
        .stream(
            Method::GET,
            &format!("/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"),
            None,
        )
        .await?;
    ensure!(status.is_success(), "watch: {status}");

    // Each pod's stages as the watch shows them: 0 scheduled (nodeName),
    // 1 an IP in its status, 2 Running with an IP (the measured end).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, usize, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(event)) = lines.next_json().await {
            let at = Instant::now();
            let pod = &event["object"];
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let has_ip = pod["status"]["podIP"].is_string();
            let stages = [
                pod["spec"]["nodeName"].is_string(),
                has_ip,
                has_ip && pod["status"]["phase"] == "Running",
            ];
            for (stage, reached) in stages.into_iter().enumerate() {
                if reached && tx.send((name.to_string(), stage, at)).is_err() {
                    return;
                }
            }
        }
    });

    let mut created = HashMap::new();
    let burst = Instant::now();
    for i in 0..pods {
        let name = format!("bench-{i}");
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "busybox",
                                "command": ["sleep", "3600"]}]
            }
        });
        let start = Instant::now();
        let body = Bytes::from(serde_json::to_vec(&pod)?);
        let (status, bytes) = api
            .send_bytes(Method::POST, "/api/v1/namespaces/default/pods", Some(body))
            .await?;
        ensure!(
            status.is_success(),
            "create {name}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        created.insert(name, start);
    }
    let burst = burst.elapsed();

    let mut stages: [HashMap<String, u64>; 3] = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while stages[2].len() < pods {
        let Ok(Some((name, stage, at))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            bail!(
                "only {} of {pods} pods Running with an IP after 120 s:\n{}",
                stages[2].len(),
                lab.diagnostics()
            );
        };
        if let Some(start) = created.get(&name) {
            stages[stage]
                .entry(name)
                .or_insert_with(|| micros(at.duration_since(*start)));
        }
    }
    watcher.abort();
    println!(
        "end to end, {pods} pods created back to back on one node (the creates took {:.0} ms):",
        burst.as_secs_f64() * 1000.0
    );
    let [scheduled, addressed, running] = stages;
    summary("create -> scheduled", scheduled.into_values().collect(), 2);
    summary(
        "create -> podIP in status",
        addressed.into_values().collect(),
        2,
    );
    Ok(summary(
        "create -> Running with podIP",
        running.into_values().collect(),
        2,
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !is_root() {
        eprintln!("knit-pod-bench makes network namespaces: run it as root");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("knit-pod-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let (k50, k99, s50, s99) = sandboxes(args.pods)?;
    println!(
        "  script/knit: p50 {:.1}x, p99 {:.1}x (target: knit at least 5x faster)",
        s50 / k50,
        s99 / k99
    );
    if args.no_lab {
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let (e50, e99) = rt.block_on(end_to_end(args.pods))?;
    println!(
        "  p50 {e50:.0} ms, p99 {e99:.0} ms (target: p99 under 1000 ms; Kubernetes' SLO: p99 <= 5000 ms)"
    );
    Ok(())
}
