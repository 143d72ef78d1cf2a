//! Plan tests (snapshots of the plain data) and applier tests on the fake
//! kernel: what a fresh apply changes, that a second apply changes
//! nothing, and that crash leftovers are completed or rebuilt.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::*;
use crate::netlink::{FakeKernel, LinkChange, Netlink};
use crate::netns::Netns;

const UID_A: &str = "6f1c2e2a-6d2b-4d43-9c59-1f1de6a1a001";
const UID_B: &str = "0b7a3d54-1b2c-4e5f-8a9b-0c1d2e3f4a5b";

fn cidr(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn node_plan_for_the_articles_first_node() {
    let plan = node_network(cidr("10.0.1.0/24"), 1500).unwrap();
    insta::assert_debug_snapshot!(plan);
}

#[test]
fn sandbox_plan_for_the_first_pod() {
    let plan = pod_sandbox("knit-n1-", UID_A, ip("10.0.1.2"), cidr("10.0.1.0/24"), 1450).unwrap();
    insta::assert_debug_snapshot!(plan);
}

#[test]
fn bridge_address_keeps_the_cidr_prefix() {
    let plan = node_network(cidr("10.0.8.0/22"), 9000).unwrap();
    assert_eq!(plan.bridge_address, cidr("10.0.8.1/22"));
    assert_eq!(plan.mtu, 9000);
    let pod = pod_sandbox("p-", UID_A, ip("10.0.9.200"), cidr("10.0.8.0/22"), 9000).unwrap();
    assert_eq!(pod.pod_address.to_string(), "10.0.9.200/22");
    assert_eq!(pod.gateway, ip("10.0.8.1"));
}

#[test]
fn host_veth_names_are_stable_short_and_distinct() {
    let a = SandboxNames::new("knit-", UID_A).unwrap();
    let b = SandboxNames::new("knit-", UID_B).unwrap();
    // Fixed by the hash function, not by the build: a restarted agent of
    // any version must find the same names.
    assert_eq!(
        a.host_veth,
        SandboxNames::new("other-", UID_A).unwrap().host_veth
    );
    assert_eq!(
        a.host_veth,
        format!("knv{:012x}", fnv1a64(UID_A.as_bytes()) >> 16)
    );
    assert_eq!(
        fnv1a64(b"a"),
        0xaf63_dc4c_8601_ec8c,
        "FNV-1a 64 test vector"
    );
    assert!(a.host_veth.len() <= MAX_IFNAME && b.host_veth.len() <= MAX_IFNAME);
    assert_ne!(a.host_veth, b.host_veth);
    assert_eq!(a.netns, format!("knit-{UID_A}"));
    let many: std::collections::BTreeSet<String> = (0..2000)
        .map(|i| {
            SandboxNames::new("x", &format!("uid-{i}"))
                .unwrap()
                .host_veth
        })
        .collect();
    assert_eq!(many.len(), 2000);
}

#[test]
fn uid_of_recognises_only_its_own_prefix() {
    let names = SandboxNames::new("knit-n1-", UID_A).unwrap();
    assert_eq!(SandboxNames::uid_of("knit-n1-", &names.netns), Some(UID_A));
    assert_eq!(SandboxNames::uid_of("knit-n2-", &names.netns), None);
    assert_eq!(SandboxNames::uid_of("knit-n1-", "knit-n1-"), None);
    assert_eq!(SandboxNames::uid_of("knit-n1-", "knit-n1-a/b"), None);
}

#[test]
fn bad_inputs_are_refused() {
    let c = cidr("10.0.1.0/24");
    let reason = |r: Result<SandboxPlan, PlanError>| match r.unwrap_err() {
        PlanError::PodIp { reason, .. } => reason,
        other => panic!("unexpected {other}"),
    };
    assert_eq!(
        reason(pod_sandbox("k-", UID_A, ip("10.0.2.2"), c, 1500)),
        "outside the CIDR"
    );
    assert_eq!(
        reason(pod_sandbox("k-", UID_A, ip("10.0.1.0"), c, 1500)),
        "the network address"
    );
    assert_eq!(
        reason(pod_sandbox("k-", UID_A, ip("10.0.1.1"), c, 1500)),
        "the bridge's address"
    );
    assert_eq!(
        reason(pod_sandbox("k-", UID_A, ip("10.0.1.255"), c, 1500)),
        "the broadcast address"
    );
    assert!(matches!(
        node_network(cidr("10.0.1.5/24"), 1500),
        Err(PlanError::NodeCidr { .. })
    ));
    assert!(matches!(
        node_network(cidr("10.0.1.0/31"), 1500),
        Err(PlanError::NodeCidr { .. })
    ));
    assert_eq!(node_network(c, 67), Err(PlanError::Mtu(67)));
    assert!(matches!(
        pod_sandbox("k/", UID_A, ip("10.0.1.2"), c, 1500),
        Err(PlanError::Name { .. })
    ));
    assert!(matches!(
        pod_sandbox("k-", "a b", ip("10.0.1.2"), c, 1500),
        Err(PlanError::Name { .. })
    ));
    assert!(matches!(
        pod_sandbox("k-", "", ip("10.0.1.2"), c, 1500),
        Err(PlanError::Name { .. })
    ));
}

/// A fake host with a node namespace that has an uplink and
/// `bridge-nf-call-iptables` (as with br_netfilter loaded).
fn fake_host() -> (FakeKernel, crate::netlink::FakeNetlink) {
    let kernel = FakeKernel::new();
    kernel.add_namespace("node");
    kernel.add_plain_link("node", "eth0", Some("veth"), 1450);
    kernel.preset_sysctl("node", "net/bridge/bridge-nf-call-iptables", "0");
    let node = kernel.netlink("node");
    (kernel, node)
}

#[test]
fn node_apply_builds_the_bridge_once() {
    let (kernel, node) = fake_host();
    let plan = node_network(cidr("10.0.1.0/24"), 1450).unwrap();
    let changes = apply_node(&node, &plan).unwrap();
    assert!(!changes.is_empty());
    insta::assert_snapshot!(kernel.take_log().join("\n"), @r"
    node: add bridge cbr0
    node: set link cbr0 mtu 1450 address 0a:58:0a:00:01:01
    node: add address 10.0.1.1/24 dev cbr0
    node: set link cbr0 up
    node: sysctl net/ipv4/ip_forward=1
    node: sysctl net/bridge/bridge-nf-call-iptables=1
    ");
    assert_eq!(apply_node(&node, &plan).unwrap(), Vec::<String>::new());
    assert_eq!(kernel.take_log(), Vec::<String>::new());
}

#[test]
fn node_apply_moves_the_bridge_to_a_new_cidr_and_refuses_a_foreign_cbr0() {
    let (kernel, node) = fake_host();
    apply_node(&node, &node_network(cidr("10.0.1.0/24"), 1450).unwrap()).unwrap();
    kernel.take_log();
    apply_node(&node, &node_network(cidr("10.0.2.0/24"), 1450).unwrap()).unwrap();
    assert_eq!(
        kernel.take_log(),
        [
            "node: set link cbr0 address 0a:58:0a:00:02:01",
            "node: delete address 10.0.1.1/24 dev cbr0",
            "node: add address 10.0.2.1/24 dev cbr0"
        ]
    );

    let other = FakeKernel::new();
    other.add_namespace("node");
    other.add_plain_link("node", "cbr0", Some("dummy"), 1500);
    let err = apply_node(
        &other.netlink("node"),
        &node_network(cidr("10.0.1.0/24"), 1500).unwrap(),
    );
    assert!(matches!(err, Err(crate::Error::Conflict(_))), "{err:?}");
}

#[test]
fn node_apply_without_br_netfilter_skips_the_optional_sysctl() {
    let kernel = FakeKernel::new();
    kernel.add_namespace("node");
    let node = kernel.netlink("node");
    apply_node(&node, &node_network(cidr("10.0.1.0/24"), 1500).unwrap()).unwrap();
    let log = kernel.take_log();
    assert!(log.contains(&"node: sysctl net/ipv4/ip_forward=1".to_string()));
    assert!(!log.iter().any(|l| l.contains("bridge-nf-call")), "{log:?}");
}

#[test]
fn sandbox_apply_builds_everything_once_and_remove_leaves_nothing() {
    let (kernel, node) = fake_host();
    let netns = kernel.netns();
    let node_plan = node_network(cidr("10.0.1.0/24"), 1450).unwrap();
    apply_node(&node, &node_plan).unwrap();
    let plan = pod_sandbox(
        "knit-",
        UID_A,
        ip("10.0.1.2"),
        node_plan.cidr,
        node_plan.mtu,
    )
    .unwrap();
    let node_before = kernel.dump("node");
    kernel.take_log();

    apply_sandbox(&netns, &node, &plan).unwrap();
    let log = kernel.take_log().join("\n").replace(UID_A, "UID");
    let veth = &plan.names.host_veth;
    insta::assert_snapshot!(log.replace(veth.as_str(), "VETH"), @r"
    netns add knit-UID
    node: add veth VETH mtu 1450 peer eth0 in knit-UID
    node: set link VETH master cbr0
    node: set hairpin VETH on
    node: set link VETH up
    knit-UID: set link lo up
    knit-UID: set link eth0 address 0a:58:0a:00:01:02
    knit-UID: add address 10.0.1.2/24 dev eth0
    knit-UID: set link eth0 up
    knit-UID: add route default via 10.0.1.1 dev eth0 proto 107
    ");
    let pod_dump = kernel.dump(&plan.names.netns);
    insta::assert_snapshot!(pod_dump.replace(UID_A, "UID").replace(veth.as_str(), "VETH"), @r"
    link lo kind=- mtu=65536 up
    link eth0 kind=veth mtu=1450 up peer-netns=node 10.0.1.2/24
    route default via 10.0.1.1 dev eth0 proto 107
    route 10.0.1.0/24 dev eth0 proto 2
    sysctl net/ipv4/ip_forward=0
    ");

    assert_eq!(
        apply_sandbox(&netns, &node, &plan).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(kernel.take_log(), Vec::<String>::new());

    assert!(remove_sandbox(&netns, &node, &plan.names).unwrap());
    assert_eq!(kernel.dump("node"), node_before);
    assert!(!netns.exists(&plan.names.netns).unwrap());
    assert!(!remove_sandbox(&netns, &node, &plan.names).unwrap());
}

#[test]
fn sandbox_apply_completes_what_a_crash_left() {
    let (kernel, node) = fake_host();
    let netns = kernel.netns();
    let node_plan = node_network(cidr("10.0.1.0/24"), 1450).unwrap();
    apply_node(&node, &node_plan).unwrap();
    let plan = pod_sandbox("knit-", UID_A, ip("10.0.1.2"), node_plan.cidr, 1450).unwrap();
    let names = &plan.names;

    // Crashed after creating the namespace and the pair, before anything
    // else: the pair is kept and finished.
    netns.create(&names.netns).unwrap();
    node.add_veth(&names.host_veth, 1450, "eth0", &names.netns)
        .unwrap();
    kernel.take_log();
    let changes = apply_sandbox(&netns, &node, &plan).unwrap();
    assert!(!changes.iter().any(|c| c.contains("veth")), "{changes:?}");
    assert!(
        changes.iter().any(|c| c.contains("add route default")),
        "{changes:?}"
    );
    assert_eq!(
        apply_sandbox(&netns, &node, &plan).unwrap(),
        Vec::<String>::new()
    );

    // A wrong address and a stray route inside are replaced.
    let pod = netns.open(&names.netns).unwrap();
    pod.add_address("eth0", "10.0.1.77/24".parse().unwrap())
        .unwrap();
    pod.add_route(&Route {
        dst: cidr("10.9.0.0/16"),
        via: Some(ip("10.0.1.1")),
        dev: Some("eth0".into()),
        proto: PROTO_KNIT,
    })
    .unwrap();
    let changes = apply_sandbox(&netns, &node, &plan).unwrap();
    assert_eq!(
        changes,
        [
            "delete address 10.0.1.77/24 dev eth0",
            "delete route 10.9.0.0/16 via 10.0.1.1 dev eth0 proto 107"
        ]
    );

    // A host veth whose peer is gone (the pod namespace was deleted and
    // made anew by hand) and a stray eth0 inside: the pair is rebuilt.
    remove_sandbox(&netns, &node, names).unwrap();
    netns.create(&names.netns).unwrap();
    kernel.add_plain_link(&names.netns, "eth0", Some("dummy"), 1500);
    kernel.add_plain_link("node", &names.host_veth, Some("veth"), 1450);
    let changes = apply_sandbox(&netns, &node, &plan).unwrap();
    assert_eq!(changes[0], format!("delete stale link {}", names.host_veth));
    assert_eq!(
        changes[1],
        format!("delete stale link eth0 in {}", names.netns)
    );
    assert!(changes[2].starts_with("add veth"), "{changes:?}");
    assert_eq!(
        apply_sandbox(&netns, &node, &plan).unwrap(),
        Vec::<String>::new()
    );
    let host = node.link(&names.host_veth).unwrap().unwrap();
    assert_eq!(host.hairpin, Some(true));
    assert_eq!(host.master, node.link("cbr0").unwrap().map(|b| b.index));
}

#[test]
fn two_sandboxes_share_the_bridge() {
    let (kernel, node) = fake_host();
    let netns = kernel.netns();
    let node_plan = node_network(cidr("10.0.1.0/24"), 1450).unwrap();
    apply_node(&node, &node_plan).unwrap();
    let a = pod_sandbox("knit-", UID_A, ip("10.0.1.2"), node_plan.cidr, 1450).unwrap();
    let b = pod_sandbox("knit-", UID_B, ip("10.0.1.3"), node_plan.cidr, 1450).unwrap();
    apply_sandbox(&netns, &node, &a).unwrap();
    apply_sandbox(&netns, &node, &b).unwrap();
    let bridge = node.link("cbr0").unwrap().unwrap();
    let ports: Vec<String> = node
        .links()
        .unwrap()
        .into_iter()
        .filter(|l| l.master == Some(bridge.index))
        .map(|l| l.name)
        .collect();
    assert_eq!(ports.len(), 2);
    assert!(ports.contains(&a.names.host_veth) && ports.contains(&b.names.host_veth));
    // Taking the bridge down by hand is undone by the next node apply.
    node.set_link(
        "cbr0",
        &LinkChange {
            up: Some(false),
            ..LinkChange::default()
        },
    )
    .unwrap();
    assert_eq!(apply_node(&node, &node_plan).unwrap(), ["set link cbr0 up"]);
}
