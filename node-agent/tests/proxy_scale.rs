//! A measurement, not a timed test (`#[ignore]`, run by hand as root):
//! a full sync of N services × 10 endpoints into a fresh namespace, then a
//! partial sync of a one-endpoint change with all of them in place, and a
//! drift check. `KNIT_PROXY_SERVICES` sets N (10,000 by default).
//!
//! `cargo test -p knit-node-agent --release --test proxy_scale -- --ignored --nocapture`

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use knit_node_agent::netns::{self, LinuxNetns, Netns};
use knit_node_agent::proxy::{self, LinuxFirewall, NodeInfo, Proxier, SyncKind};
use serde_json::json;

struct Gone(String);
impl Drop for Gone {
    fn drop(&mut self) {
        let _ = LinuxNetns::new().delete(&self.0);
    }
}

fn world(n: usize, skip: Option<usize>) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        // Any ClusterIP does for the dataplane; 10.4.0.0/14 holds 262,144.
        let ip = format!("10.{}.{}.{}", 4 + i / 65_536, i / 256 % 256, i % 256);
        services.push(
            serde_json::from_value(json!({
                "metadata": {"name": format!("s{i}"), "namespace": "default"},
                "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
            }))
            .unwrap(),
        );
        let eps: Vec<_> = (0..10)
            .filter(|e| skip != Some(i) || *e != 0)
            .map(|e| json!({"addresses": [format!("10.1.{}.{}", i / 25 % 256, (i % 25) * 10 + e)], "nodeName": "n"}))
            .collect();
        slices.push(
            serde_json::from_value(json!({
                "metadata": {"name": format!("s{i}-x"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": format!("s{i}")}},
                "addressType": "IPv4",
                "endpoints": eps,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }))
            .unwrap(),
        );
    }
    (services, slices)
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
        name: "n".into(),
        ips: vec![],
        pod_cidr: "10.0.1.0/24".parse()?,
        cluster_cidr: "10.0.0.0/14".parse()?,
    };
    let mut proxier = Proxier::new(LinuxFirewall::in_netns(
        Path::new(netns::RUN_DIR).join(&name),
    ));

    let (services, slices) = world(n, None);
    let t = Instant::now();
    let rs = proxy::desired(&node, &services, &slices);
    let plan = t.elapsed();
    let report = proxier.sync(rs)?;
    assert_eq!(report.kind, SyncKind::Full);
    println!(
        "{n} services x 10 endpoints: plan {plan:?}, full sync {:?} ({} bytes of nft)",
        report.elapsed, report.script_bytes
    );

    let (services, slices) = world(n, Some(n / 2));
    let t = Instant::now();
    let rs = proxy::desired(&node, &services, &slices);
    let plan = t.elapsed();
    let report = proxier.sync(rs)?;
    assert_eq!(report.kind, SyncKind::Partial);
    println!(
        "one endpoint removed: plan {plan:?}, partial sync {:?} ({} bytes)",
        report.elapsed, report.script_bytes
    );

    let t = Instant::now();
    assert!(!proxier.check()?);
    println!("drift check (nft -j list table): {:?}", t.elapsed());
    Ok(())
}
