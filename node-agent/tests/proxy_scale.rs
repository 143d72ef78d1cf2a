//! A measurement, not a timed test (`#[ignore]`, run by hand as root):
//! a full sync of N services × 10 endpoints into a fresh namespace, then,
//! with all of them in place, a one-endpoint change, a service added and
//! removed, and a drift check, each planned incrementally and applied as
//! one transaction (elements over netlink, chains through `nft`).
//! `KNIT_PROXY_SERVICES` sets N (10,000 by default).
//!
//! `cargo test -p knit-node-agent --release --test proxy_scale -- --ignored --nocapture`

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use knit_node_agent::netns::{self, LinuxNetns, Netns};
use knit_node_agent::proxy::{
    Firewall, LinuxFirewall, NodeInfo, Planner, Proxier, SyncKind, render,
};
use serde_json::json;

struct Gone(String);
impl Drop for Gone {
    fn drop(&mut self) {
        let _ = LinuxNetns::new().delete(&self.0);
    }
}

fn service(i: usize) -> Service {
    // Any ClusterIP does for the dataplane; 10.4.0.0/14 holds 262,144.
    let ip = format!("10.{}.{}.{}", 4 + i / 65_536, i / 256 % 256, i % 256);
    serde_json::from_value(json!({
        "metadata": {"name": format!("s{i}"), "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
    }))
    .unwrap()
}

/// Service `i`'s slice, without endpoint `skip` if given. Endpoint `e`
/// runs on node `n<e>`: one in ten is on the node under test, `n0`.
fn slice(i: usize, skip: Option<usize>) -> EndpointSlice {
    let eps: Vec<_> = (0..10)
        .filter(|e| skip != Some(*e))
        .map(|e| json!({"addresses": [format!("10.1.{}.{}", i / 25 % 256, (i % 25) * 10 + e)], "nodeName": format!("n{e}")}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("s{i}-x"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": format!("s{i}")}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement: run by hand as root"]
fn full_and_partial_sync_at_scale() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIP: needs root");
        return Ok(());
    }
    let n: usize = std::env::var("KNIT_PROXY_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let name = format!("kps{}", std::process::id() % 100_000);
    let _gone = Gone(name.clone());
    LinuxNetns::new().create(&name)?;
    let node = NodeInfo {
        name: "n0".into(),
        ips: vec![],
        pod_cidr: "10.0.1.0/24".parse()?,
        cluster_cidr: "10.0.0.0/14".parse()?,
        local_dns: None,
    };
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(
        Path::new(netns::RUN_DIR).join(&name),
    ));

    let services: Vec<Service> = (0..n).map(service).collect();
    // Service 0 has nine endpoints: at scale every count is in use, so
    // a service going from ten to nine reuses the pick chain.
    let slices: Vec<EndpointSlice> = (0..n).map(|i| slice(i, (i == 0).then_some(9))).collect();
    let t = Instant::now();
    let mut planner = Planner::new(node);
    // Slices first, as the agent's first sync has them: each service is
    // then planned once, with its endpoints.
    for s in &slices {
        planner.apply_slice(s);
    }
    for s in &services {
        planner.apply_service(s);
    }
    let plan = t.elapsed();
    let t = Instant::now();
    let script = render::full(planner.ruleset());
    let rendering = t.elapsed();
    drop(script);
    let report = proxier.sync_planned(&mut planner)?;
    assert_eq!(report.kind, SyncKind::Full);
    println!(
        "{n} services x 10 endpoints: plan {plan:?}, full sync {:?} ({} bytes of nft, {} elements over netlink; rendering it all as one nft script would take {rendering:?})",
        report.elapsed, report.script_bytes, report.elements
    );

    // One endpoint of one service leaves and comes back, a few times.
    let mut syncs = Vec::new();
    let mut plans = Vec::new();
    for round in 0..10 {
        let i = n / 2 + round;
        for skip in [Some(round % 10), None] {
            let changed = slice(i, skip);
            let t = Instant::now();
            planner.apply_slice(&changed);
            plans.push(t.elapsed());
            let report = proxier.sync_planned(&mut planner)?;
            assert_eq!(report.kind, SyncKind::Partial);
            syncs.push(report.elapsed);
            if round == 0 {
                println!(
                    "one endpoint {}: {} bytes of nft, {} elements, {:?}",
                    if skip.is_some() { "removed" } else { "back" },
                    report.script_bytes,
                    report.elements,
                    report.elapsed
                );
            }
        }
    }
    // What any `nft` run costs here, for scale: an empty transaction.
    let mut bare = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        proxier.firewall().apply("")?;
        bare.push(t.elapsed());
    }
    println!("an empty nft transaction: median {:?}", median(bare));
    println!(
        "one-endpoint change with {n} in place: plan median {:?}, partial sync median {:?}, max {:?} ({} syncs)",
        median(plans),
        median(syncs.clone()),
        syncs.iter().max().unwrap(),
        syncs.len()
    );

    // A service added beside them, then removed.
    let (new_service, new_slice) = (service(n), slice(n, None));
    let t = Instant::now();
    planner.apply_service(&new_service);
    planner.apply_slice(&new_slice);
    let report = proxier.sync_planned(&mut planner)?;
    assert_eq!(report.kind, SyncKind::Partial);
    println!("one service added: {:?} (plan included)", t.elapsed());
    let t = Instant::now();
    planner.delete_service("default", &format!("s{n}"));
    planner.delete_slice("default", &format!("s{n}-x"));
    proxier.sync_planned(&mut planner)?;
    println!("one service removed: {:?} (plan included)", t.elapsed());

    let t = Instant::now();
    assert!(!proxier.check()?);
    println!("drift check (nft -j list table): {:?}", t.elapsed());
    Ok(())
}
