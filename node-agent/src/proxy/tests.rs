//! Plan and transaction tests: the article's `service-test` and the
//! policy cases as insta snapshots of the nft scripts, partial syncs as
//! exact transaction text, the drift check and conntrack cleanup against
//! the recording firewall.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::nfnl::Outline;
use super::plan::is_pick_chain;
use super::proxier::stale_udp;
use super::*;

/// `rs` without the pick chains no element points to: a planner keeps
/// those, a plan from scratch never has them.
fn in_use(rs: &Ruleset) -> Ruleset {
    let mut rs = rs.clone();
    let targets: std::collections::BTreeSet<String> = rs
        .sets
        .values()
        .flat_map(|s| s.elements.values())
        .filter_map(|v| v.strip_prefix("goto ").map(str::to_string))
        .collect();
    rs.chains
        .retain(|name, _| !is_pick_chain(name) || targets.contains(name));
    rs
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-1".into(),
        ips: vec!["10.100.0.3".parse().unwrap()],
        pod_cidr: "10.0.1.0/24".parse().unwrap(),
        cluster_cidr: "10.0.0.0/14".parse().unwrap(),
        local_dns: None,
    }
}

fn service(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap()
}

/// The article's service: 10.3.241.152:80 → pods on port 8080.
fn service_test(extra: serde_json::Value) -> Service {
    let mut spec = json!({
        "clusterIP": "10.3.241.152",
        "clusterIPs": ["10.3.241.152"],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        "selector": {"app": "service_test_pod"},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    service("service-test", spec)
}

/// A slice of `service` with `(ip, node, ready)` endpoints on `port`.
fn slice(
    service: &str,
    port_name: &str,
    proto: &str,
    port: u16,
    eps: &[(&str, &str, bool)],
) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, node, ready)| {
            json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{service}-abcde"),
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": proto}],
    }))
    .unwrap()
}

fn two_pods() -> EndpointSlice {
    slice(
        "service-test",
        "http",
        "TCP",
        8080,
        &[("10.0.1.2", "node-1", true), ("10.0.2.2", "node-2", true)],
    )
}

#[test]
fn the_articles_service_test() {
    let rs = desired(&node(), &[service_test(json!({}))], &[two_pods()]);
    insta::assert_snapshot!("service_test", render::full(&rs));
    // O(1) dispatch: the ClusterIP is one map element, not a rule, and
    // its endpoints are slots of one shared map: no chain of its own.
    assert_eq!(
        rs.sets["service-ips"].elements["10.3.241.152 . tcp . 80"],
        "goto cluster-tcp-2"
    );
    let slots = &rs.sets["endpoints-tcp"].elements;
    assert_eq!(slots["10.3.241.152 . 80 . 0"], "10.0.1.2 . 8080");
    assert_eq!(slots["10.3.241.152 . 80 . 1"], "10.0.2.2 . 8080");
    assert_eq!(
        rs.chains["cluster-tcp-2"].rules,
        [
            "ip saddr != 10.0.0.0/14 jump mark-for-masquerade",
            "meta l4proto tcp dnat to ip daddr . tcp dport . numgen random mod 2 map @endpoints-tcp"
        ]
    );
    assert!(!rs.chains.keys().any(|c| c.contains("service-test")));
    // Hairpin: the endpoint on this node may reach itself.
    assert_eq!(
        rs.sets["hairpin"].elements.keys().collect::<Vec<_>>(),
        ["10.0.1.2 . 10.0.1.2"]
    );
    assert_eq!(rs.chains["services"].rules.len(), 3);
}

#[test]
fn nodeport_with_cluster_policy_masquerades_and_uses_every_endpoint() {
    let svc = service_test(json!({
        "type": "NodePort",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 32213}],
        "externalIPs": ["192.168.50.10"],
    }));
    let rs = desired(&node(), &[svc], &[two_pods()]);
    insta::assert_snapshot!("nodeport_cluster", render::full(&rs));
    assert_eq!(
        rs.sets["service-nodeports"].elements["tcp . 32213"],
        "goto nodeport-tcp-2"
    );
    assert_eq!(
        rs.sets["service-ips"].elements["192.168.50.10 . tcp . 80"],
        "goto external-tcp-2"
    );
    assert_eq!(
        rs.chains["nodeport-tcp-2"].rules[0],
        "jump mark-for-masquerade"
    );
    assert_eq!(
        rs.chains["external-tcp-2"].rules[0],
        "jump mark-for-masquerade"
    );
    let np = &rs.sets["nodeport-endpoints-tcp"].elements;
    assert_eq!(np["32213 . 1"], "10.0.2.2 . 8080");
    let slots = &rs.sets["endpoints-tcp"].elements;
    assert_eq!(slots["192.168.50.10 . 80 . 0"], "10.0.1.2 . 8080");
}

#[test]
fn local_policies_use_only_this_nodes_endpoints() {
    let svc = service_test(json!({
        "type": "LoadBalancer",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 32213}],
        "externalTrafficPolicy": "Local",
        "internalTrafficPolicy": "Local",
    }));
    let mut svc = svc;
    svc.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.168.50.20"}]}}))
            .unwrap();
    let rs = desired(&node(), &[svc.clone()], &[two_pods()]);
    insta::assert_snapshot!("local_policies", render::full(&rs));
    let dispatch = &rs.sets["service-ips"].elements;
    assert_eq!(dispatch["10.3.241.152 . tcp . 80"], "goto cluster-tcp-1");
    assert_eq!(
        dispatch["192.168.50.20 . tcp . 80"],
        "goto external-local-tcp-1"
    );
    assert_eq!(
        rs.sets["service-nodeports"].elements["tcp . 32213"],
        "goto nodeport-local-tcp-1"
    );
    // Outside clients keep their address; only the node's own are
    // masqueraded (their replies must come back here).
    assert_eq!(
        rs.chains["nodeport-local-tcp-1"].rules[0],
        "fib saddr type local jump mark-for-masquerade"
    );
    // Only this node's endpoint, anywhere.
    let slots: Vec<&String> = rs.sets["endpoints-tcp"]
        .elements
        .values()
        .chain(rs.sets["nodeport-endpoints-tcp"].elements.values())
        .collect();
    assert_eq!(slots, vec!["10.0.1.2 . 8080"; 3]);

    // No local endpoint: external and internal traffic dropped, not sent
    // to another node.
    let remote_only = slice(
        "service-test",
        "http",
        "TCP",
        8080,
        &[("10.0.2.2", "node-2", true)],
    );
    let rs = desired(&node(), &[svc], &[remote_only]);
    let dispatch = &rs.sets["service-ips"].elements;
    assert_eq!(dispatch["10.3.241.152 . tcp . 80"], "drop");
    assert_eq!(dispatch["192.168.50.20 . tcp . 80"], "drop");
    assert_eq!(rs.sets["service-nodeports"].elements["tcp . 32213"], "drop");
    assert!(rs.sets["endpoints-tcp"].elements.is_empty());
}

#[test]
fn client_ip_affinity_records_clients_per_endpoint() {
    let svc = service_test(json!({
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
    }));
    let rs = desired(&node(), &[svc], &[two_pods()]);
    insta::assert_snapshot!("affinity", render::full(&rs));
    let set = &rs.sets["aff-default/service-test/tcp/http/10.0.1.2/8080"];
    assert!(set.dynamic && set.spec.contains("timeout 600s"));
    assert_eq!(
        rs.sets["service-ips"].elements["10.3.241.152 . tcp . 80"],
        "goto aff-cluster-default/service-test/tcp/http"
    );
    assert_eq!(
        rs.chains["ep-default/service-test/tcp/http/10.0.2.2/8080"].rules,
        [
            "update @aff-default/service-test/tcp/http/10.0.2.2/8080 { ip saddr }",
            "meta l4proto tcp dnat to 10.0.2.2:8080"
        ]
    );
}

#[test]
fn no_ready_endpoints_reject_at_once() {
    let not_ready = slice(
        "service-test",
        "http",
        "TCP",
        8080,
        &[("10.0.1.2", "node-1", false)],
    );
    let svc = service_test(json!({
        "type": "NodePort",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 32213}],
    }));
    let rs = desired(&node(), &[svc], &[not_ready]);
    insta::assert_snapshot!("no_endpoints", render::full(&rs));
    assert_eq!(
        rs.sets["no-endpoint-services"].elements["10.3.241.152 . tcp . 80"],
        "goto reject-chain"
    );
    assert_eq!(
        rs.sets["no-endpoint-nodeports"].elements["tcp . 32213"],
        "goto reject-chain"
    );
    assert!(rs.sets["service-ips"].elements.is_empty());
    // The ClusterIP stays in cluster-ips: its other ports are refused too.
    assert!(rs.sets["cluster-ips"].elements.contains_key("10.3.241.152"));
}

#[test]
fn headless_external_name_and_ipv6_get_nothing() {
    let headless = service(
        "headless",
        json!({"clusterIP": "None", "ports": [{"port": 80}]}),
    );
    let external = service(
        "ext",
        json!({"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]}),
    );
    let v6 = service(
        "v6",
        json!({"clusterIP": "fd00::1", "ports": [{"port": 80}]}),
    );
    let rs = desired(&node(), &[headless, external, v6], &[]);
    assert_eq!(rs, desired(&node(), &[], &[]));
}

fn dns(eps: &[(&str, &str, bool)]) -> (Service, EndpointSlice) {
    let svc = service(
        "dns",
        json!({"clusterIP": "10.3.240.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
    );
    (svc, slice("dns", "dns", "UDP", 53, eps))
}

#[test]
fn a_partial_sync_touches_only_the_changed_service() {
    let (dns_svc, dns_one) = dns(&[("10.0.1.5", "node-1", true)]);
    let before = desired(
        &node(),
        &[service_test(json!({})), dns_svc.clone()],
        &[two_pods(), dns_one],
    );
    // One pod of service-test leaves; dns stays as it was.
    let one_pod = slice(
        "service-test",
        "http",
        "TCP",
        8080,
        &[("10.0.1.2", "node-1", true)],
    );
    let (_, dns_one) = dns(&[("10.0.1.5", "node-1", true)]);
    let after = desired(
        &node(),
        &[service_test(json!({})), dns_svc],
        &[one_pod, dns_one],
    );
    let txn = render::partial(&before, &after).unwrap();
    // The slot that went and the dispatch element, now pointing at the
    // one-endpoint chain (planned with the two-endpoint one); the
    // two-endpoint chain is no longer used by a plan from scratch. dns is
    // not touched. No existing chain changes, so the elements go over
    // netlink, before the removal of the chain nothing points to.
    assert!(
        matches!(txn, render::Transaction::Elements { .. }),
        "{txn:?}"
    );
    assert_eq!(
        txn.to_script(),
        "delete element ip knit endpoints-tcp { 10.3.241.152 . 80 . 1 }\n\
         delete element ip knit service-ips { 10.3.241.152 . tcp . 80 }\n\
         add element ip knit service-ips { 10.3.241.152 . tcp . 80 : goto cluster-tcp-1 }\n\
         flush chain ip knit cluster-tcp-2\n\
         delete chain ip knit cluster-tcp-2\n"
    );
    assert!(render::partial(&after, &after).unwrap().is_empty());

    // The service goes away entirely: its element goes first, its chains
    // are emptied, then deleted.
    let (dns_svc, dns_one) = dns(&[("10.0.1.5", "node-1", true)]);
    let gone = desired(&node(), &[dns_svc], &[dns_one]);
    let script = render::partial(&after, &gone).unwrap().to_script();
    insta::assert_snapshot!("partial_remove_service", script);
    assert!(script.contains("delete element ip knit cluster-ips { 10.3.241.152 }"));
    let delete_element = script.find("delete element ip knit service-ips").unwrap();
    let flush = script.find("flush chain ip knit cluster-tcp-1").unwrap();
    let delete = script.find("delete chain ip knit cluster-tcp-1").unwrap();
    assert!(delete_element < flush && flush < delete, "{script}");

    // And comes back with two endpoints: the pick chain declared and
    // filled before the element that names it.
    let (dns_svc, dns_one) = dns(&[("10.0.1.5", "node-1", true)]);
    let two = desired(
        &node(),
        &[service_test(json!({})), dns_svc],
        &[two_pods(), dns_one],
    );
    let script = render::partial(&gone, &two).unwrap().to_script();
    let declare = script.find("add chain ip knit cluster-tcp-2\n").unwrap();
    let rule = script.find("add rule ip knit cluster-tcp-2 ").unwrap();
    let element = script.find("add element ip knit service-ips").unwrap();
    assert!(declare < rule && rule < element, "{script}");
}

#[test]
fn the_proxier_syncs_fully_then_partially_and_fully_after_a_failure() {
    let fw = RecordingFirewall::default();
    let mut proxier = Proxier::new(fw.clone());
    let one = desired(&node(), &[service_test(json!({}))], &[two_pods()]);
    assert_eq!(proxier.sync(one.clone()).unwrap().kind, SyncKind::Full);
    assert_eq!(proxier.sync(one.clone()).unwrap().kind, SyncKind::Unchanged);
    let single = slice(
        "service-test",
        "http",
        "TCP",
        8080,
        &[("10.0.1.2", "node-1", true)],
    );
    let two = desired(&node(), &[service_test(json!({}))], &[single]);
    let report = proxier.sync(two.clone()).unwrap();
    assert_eq!(report.kind, SyncKind::Partial);
    {
        let rec = fw.record.lock().unwrap();
        // No table yet: nft declares it, the elements go over netlink.
        assert!(rec.scripts[0].starts_with("add table ip knit\ndelete table ip knit\n"));
        assert!(
            !rec.scripts[0].contains("add element"),
            "{}",
            rec.scripts[0]
        );
        assert!(
            rec.batches[0].contains(
                "add element ip knit service-ips { 10.3.241.152 . tcp . 80 : goto cluster-tcp-2 }"
            ),
            "{}",
            rec.batches[0]
        );
        // The partial sync: elements, then the two-endpoint chain (a
        // whole-world plan does not keep it) deleted; the table itself is
        // left alone.
        assert_eq!(rec.scripts.len(), 2);
        assert_eq!(rec.batches.len(), 2);
        assert_eq!(
            rec.scripts[1],
            "flush chain ip knit cluster-tcp-2\ndelete chain ip knit cluster-tcp-2\n"
        );
        assert!(rec.scripts[1..].iter().all(|s| !s.contains("table")));
    }
    fw.record.lock().unwrap().fail_next_apply = Some("boom".into());
    assert!(proxier.sync(one.clone()).is_err());
    // After a failure the table exists, so it is replaced in one script.
    assert_eq!(proxier.sync(one.clone()).unwrap().kind, SyncKind::Full);
    let last = fw.record.lock().unwrap().scripts.last().unwrap().clone();
    assert_eq!(last, render::full(&one));
}

#[test]
fn the_drift_check_compares_chains_rules_and_elements() {
    let rs = desired(&node(), &[service_test(json!({}))], &[two_pods()]);
    let fw = RecordingFirewall::default();
    let mut proxier = Proxier::new(fw.clone());
    proxier.sync(rs.clone()).unwrap();
    let whole = Outline {
        comment: render::comment(&rs),
        shape: rs.shape(),
    };
    let set_outline = |outline: Option<Outline>| fw.record.lock().unwrap().outline = outline;
    let counts = || {
        let rec = fw.record.lock().unwrap();
        (rec.scripts.len(), rec.batches.len())
    };

    // A table of the planned shape is left alone.
    set_outline(Some(whole.clone()));
    assert!(!proxier.check().unwrap());
    assert_eq!(counts(), (1, 1));

    // A flushed table (chains, no rules) is rebuilt by one script.
    let mut flushed = whole.clone();
    flushed.shape.chains.values_mut().for_each(|n| *n = 0);
    set_outline(Some(flushed));
    assert!(proxier.check().unwrap());
    assert_eq!(counts(), (2, 1));
    let script = fw.record.lock().unwrap().scripts[1].clone();
    assert_eq!(script, render::full(&rs));

    // A map emptied by hand: the structure stands, so one batch empties
    // and refills every map and set.
    set_outline(Some(whole.clone()));
    fw.record
        .lock()
        .unwrap()
        .emptied
        .insert("service-ips".into());
    assert!(proxier.check().unwrap());
    fw.record.lock().unwrap().emptied.clear();
    assert_eq!(counts(), (2, 2));
    let batch = fw.record.lock().unwrap().batches[1].clone();
    assert!(
        batch.starts_with("flush set ip knit cluster-ips\n"),
        "{batch}"
    );
    assert!(
        batch.contains(
            "add element ip knit service-ips { 10.3.241.152 . tcp . 80 : goto cluster-tcp-2 }"
        ),
        "{batch}"
    );

    // A deleted table is declared again and filled.
    set_outline(None);
    assert!(proxier.check().unwrap());
    assert_eq!(counts(), (3, 3));
    let script = fw.record.lock().unwrap().scripts[2].clone();
    assert!(
        script.starts_with("add table ip knit\ndelete table"),
        "{script}"
    );
    assert!(!script.contains("add element"), "{script}");
}

#[test]
fn the_table_comment_changes_with_the_structure_not_the_elements() {
    let two = desired(&node(), &[service_test(json!({}))], &[two_pods()]);
    let moved = desired(
        &node(),
        &[service_test(json!({}))],
        &[slice(
            "service-test",
            "http",
            "TCP",
            8080,
            &[("10.0.2.2", "node-2", true), ("10.0.3.2", "node-3", true)],
        )],
    );
    let affinity = desired(
        &node(),
        &[service_test(json!({"sessionAffinity": "ClientIP"}))],
        &[two_pods()],
    );
    // Other endpoints, same chains: the same structure.
    assert_ne!(two.sets["endpoints-tcp"], moved.sets["endpoints-tcp"]);
    assert_eq!(render::comment(&two), render::comment(&moved));
    assert_ne!(render::comment(&two), render::comment(&affinity));
    assert!(render::full(&two).contains(&format!("comment \"{}\"", render::comment(&two))));
}

#[test]
fn udp_endpoints_that_leave_lose_their_conntrack_entries() {
    let (svc, one) = dns(&[("10.0.1.5", "node-1", true), ("10.0.1.6", "node-1", true)]);
    let a = desired(&node(), std::slice::from_ref(&svc), &[one]);
    let (_, fewer) = dns(&[("10.0.1.6", "node-1", true)]);
    let b = desired(&node(), std::slice::from_ref(&svc), &[fewer]);
    let (_, none) = dns(&[]);
    let c = desired(&node(), std::slice::from_ref(&svc), &[none]);

    let line = |v: Vec<Vec<String>>| v.into_iter().map(|a| a.join(" ")).collect::<Vec<_>>();
    assert_eq!(
        line(stale_udp(&a.udp, &b.udp)),
        ["-D -p udp --orig-dst 10.3.240.10 --orig-port-dst 53 --reply-src 10.0.1.5"]
    );
    // N → 0.
    assert_eq!(
        line(stale_udp(&b.udp, &c.udp)),
        ["-D -p udp --orig-dst 10.3.240.10 --orig-port-dst 53 --reply-src 10.0.1.6"]
    );
    // 0 → N: flows made while nothing answered go.
    assert_eq!(
        line(stale_udp(&c.udp, &b.udp)),
        ["-D -p udp --orig-dst 10.3.240.10 --orig-port-dst 53"]
    );
    assert!(stale_udp(&a.udp, &a.udp).is_empty());

    // The proxier runs them after the rules are in, not on its first sync.
    let fw = RecordingFirewall::default();
    let mut proxier = Proxier::new(fw.clone());
    assert!(proxier.sync(a).unwrap().conntrack.is_empty());
    let report = proxier.sync(b).unwrap();
    assert_eq!(report.conntrack.len(), 1);
    assert_eq!(fw.record.lock().unwrap().conntrack, report.conntrack);
}

fn pod(
    name: &str,
    node: &str,
    ip: &str,
    ports: serde_json::Value,
) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip},
    }))
    .unwrap()
}

#[test]
fn host_ports_dnat_the_node_address_to_this_nodes_pods() {
    let pods = [
        pod(
            "web",
            "node-1",
            "10.0.1.2",
            json!([{"containerPort": 8080, "hostPort": 8081}]),
        ),
        pod(
            "dns",
            "node-1",
            "10.0.1.3",
            json!([{"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.100.0.3"}]),
        ),
        // Same port, other node: not ours.
        pod(
            "other",
            "node-2",
            "10.0.2.9",
            json!([{"containerPort": 80, "hostPort": 8082}]),
        ),
        // A second claim on 8081 loses to the first by name.
        pod(
            "zz",
            "node-1",
            "10.0.1.4",
            json!([{"containerPort": 9, "hostPort": 8081}]),
        ),
    ];
    let rs = desired_with_pods(&node(), &[], &[], &pods);
    let map = &rs.sets["hostports"].elements;
    assert_eq!(map.len(), 2, "{map:?}");
    assert_eq!(map["tcp . 8081"], "goto hp-default/web/tcp/8081");
    assert_eq!(
        rs.chains["hp-default/web/tcp/8081"].rules,
        [
            "ip saddr 10.0.1.2 jump mark-for-masquerade",
            "meta l4proto tcp dnat to 10.0.1.2:8080"
        ]
    );
    assert_eq!(
        rs.chains["hp-default/dns/udp/53"].rules[0],
        "ip daddr != 10.100.0.3 return"
    );
}

#[test]
fn the_planner_replans_one_service_and_matches_a_plan_from_scratch() {
    let (dns_svc, dns_one) = dns(&[("10.0.1.5", "node-1", true)]);
    let mut planner = Planner::new(node());
    planner.apply_service(&service_test(json!({})));
    planner.apply_service(&dns_svc);
    planner.apply_slice(&two_pods());
    planner.apply_slice(&dns_one);
    assert_eq!(
        planner.ruleset(),
        &desired(
            &node(),
            &[service_test(json!({})), dns_svc.clone()],
            &[two_pods(), dns_one.clone()]
        )
    );
    let _ = planner.take_touched();

    // One endpoint leaves: only service-test's elements are touched (the
    // one-endpoint chain came with the two-endpoint one, which stays),
    // and the touched-only transaction is the full diff's.
    let before = planner.ruleset().clone();
    let one_pod = slice(
        "service-test",
        "http",
        "TCP",
        8080,
        &[("10.0.1.2", "node-1", true)],
    );
    planner.apply_slice(&one_pod);
    let touched = planner.take_touched();
    assert!(touched.udp.is_empty(), "{touched:?}");
    assert!(touched.chains.is_empty(), "{touched:?}");
    assert!(planner.ruleset().chains.contains_key("cluster-tcp-2"));
    assert!(
        touched
            .elements
            .iter()
            .all(|(_, key)| key.starts_with("10.3.241.152 ")),
        "{touched:?}"
    );
    assert_eq!(
        render::partial_touched(&before, planner.ruleset(), &touched),
        render::partial(&before, planner.ruleset())
    );
    assert_eq!(
        in_use(planner.ruleset()),
        desired(
            &node(),
            &[service_test(json!({})), dns_svc.clone()],
            &[one_pod, dns_one.clone()]
        )
    );

    // Deleting the service and its slice leaves exactly dns's table (and
    // the idle pick chains).
    planner.delete_service("default", "service-test");
    planner.delete_slice("default", "service-test-abcde");
    assert_eq!(
        in_use(planner.ruleset()),
        desired(
            &node(),
            std::slice::from_ref(&dns_svc),
            std::slice::from_ref(&dns_one)
        )
    );
    // A relist that says the same changes nothing.
    let _ = planner.take_touched();
    planner.reset_services(&[dns_svc]);
    planner.reset_slices(&[dns_one]);
    assert!(planner.take_touched().is_empty());
}

#[test]
fn the_proxier_syncs_only_what_the_planner_touched() {
    let fw = RecordingFirewall::default();
    let mut proxier = Proxier::new(fw.clone());
    let mut planner = Planner::new(node());
    planner.apply_service(&service_test(json!({})));
    planner.apply_slice(&two_pods());
    assert_eq!(
        proxier.sync_planned(&mut planner).unwrap().kind,
        SyncKind::Full
    );
    planner.apply_slice(&slice(
        "service-test",
        "http",
        "TCP",
        8080,
        &[("10.0.1.2", "node-1", true), ("10.0.2.2", "node-2", false)],
    ));
    let report = proxier.sync_planned(&mut planner).unwrap();
    assert_eq!(report.kind, SyncKind::Partial);
    assert_eq!(
        proxier.sync_planned(&mut planner).unwrap().kind,
        SyncKind::Unchanged
    );
    // The proxier's idea of the kernel follows: the drift check expects
    // the planner's table. The change was elements only: the
    // one-endpoint pick chain came with the two-endpoint one.
    let rec = fw.record.lock().unwrap();
    assert_eq!(rec.scripts.len(), 1);
    assert_eq!(rec.batches.len(), 2);
    assert!(
        rec.batches[1].contains("delete element ip knit endpoints-tcp { 10.3.241.152 . 80 . 1 }"),
        "{}",
        rec.batches[1]
    );
    assert!(
        !rec.batches[1].contains("cluster-ips"),
        "{}",
        rec.batches[1]
    );
    drop(rec);
    assert!(
        render::partial(planner.ruleset(), planner.ruleset())
            .unwrap()
            .is_empty()
    );
    proxier
        .sync(planner.ruleset().clone())
        .map(|r| {
            assert_eq!(r.kind, SyncKind::Unchanged);
        })
        .unwrap();
}

#[test]
fn the_cluster_dns_address_is_answered_locally_and_not_tracked() {
    let mut n = node();
    n.local_dns = Some("10.3.240.10".parse().unwrap());
    let (svc, eps) = dns(&[("10.0.1.5", "node-1", true)]);
    let rs = desired(
        &n,
        &[svc.clone(), service_test(json!({}))],
        &[eps.clone(), two_pods()],
    );
    assert!(
        !rs.sets
            .values()
            .flat_map(|s| s.elements.keys())
            .any(|k| k.contains("10.3.240.10")),
        "the DNS ClusterIP is in a map"
    );
    assert!(rs.udp.values().all(|p| p.ips.is_empty()));
    assert_eq!(
        rs.chains["raw-prerouting"].rules,
        [
            "ip daddr 10.3.240.10 udp dport 53 notrack",
            "ip daddr 10.3.240.10 tcp dport 53 notrack"
        ]
    );
    assert_eq!(rs.chains["raw-output"].rules.len(), 4);
    assert!(
        rs.chains["raw-output"]
            .base
            .as_deref()
            .unwrap()
            .contains("priority -300")
    );
    // Other services are untouched by it.
    assert_eq!(
        rs.sets["service-ips"].elements["10.3.241.152 . tcp . 80"],
        "goto cluster-tcp-2"
    );
    // Without a local DNS, the same service is dispatched as any other.
    let rs = desired(&node(), &[svc], &[eps]);
    assert_eq!(
        rs.sets["service-ips"].elements["10.3.240.10 . udp . 53"],
        "goto cluster-udp-1"
    );
    assert!(!rs.chains.contains_key("raw-prerouting"));
}

#[test]
fn local_policy_services_get_a_health_check_port_with_their_local_count() {
    let svc = service_test(json!({
        "type": "LoadBalancer",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 32213}],
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 31999,
    }));
    let mut planner = Planner::new(node());
    planner.apply_service(&svc);
    assert_eq!(planner.health_checks()[&31999].local_endpoints, 0);
    planner.apply_slice(&two_pods());
    let checks = planner.health_checks();
    assert_eq!(
        checks[&31999],
        HealthCheck {
            namespace: "default".into(),
            name: "service-test".into(),
            local_endpoints: 1,
        }
    );
    // Cluster policy: no health check.
    let mut cluster = svc.clone();
    cluster.spec.as_mut().unwrap().external_traffic_policy = Some("Cluster".into());
    planner.apply_service(&cluster);
    assert!(planner.health_checks().is_empty());
}

#[test]
fn an_endpoint_that_leaves_gives_its_slot_to_the_last_one() {
    let three = |ips: &[&str]| {
        let eps: Vec<(&str, &str, bool)> = ips.iter().map(|ip| (*ip, "node-1", true)).collect();
        slice("service-test", "http", "TCP", 8080, &eps)
    };
    let mut planner = Planner::new(node());
    planner.apply_service(&service_test(json!({})));
    planner.apply_slice(&three(&["10.0.1.2", "10.0.1.3", "10.0.1.4"]));
    let slots = |p: &Planner| -> Vec<String> {
        (0..)
            .map_while(|i| {
                p.ruleset().sets["endpoints-tcp"]
                    .elements
                    .get(&format!("10.3.241.152 . 80 . {i}"))
                    .cloned()
            })
            .collect()
    };
    assert_eq!(
        slots(&planner),
        ["10.0.1.2 . 8080", "10.0.1.3 . 8080", "10.0.1.4 . 8080"]
    );
    let _ = planner.take_touched();
    planner.apply_slice(&three(&["10.0.1.3", "10.0.1.4"]));
    assert_eq!(slots(&planner), ["10.0.1.4 . 8080", "10.0.1.3 . 8080"]);
    let touched = planner.take_touched();
    let slot_keys: Vec<&String> = touched
        .elements
        .iter()
        .filter(|(set, _)| set == "endpoints-tcp")
        .map(|(_, k)| k)
        .collect();
    assert_eq!(
        slot_keys,
        ["10.3.241.152 . 80 . 0", "10.3.241.152 . 80 . 2"]
    );
    // A newcomer takes the next slot.
    planner.apply_slice(&three(&["10.0.1.3", "10.0.1.4", "10.0.1.9"]));
    assert_eq!(
        slots(&planner),
        ["10.0.1.4 . 8080", "10.0.1.3 . 8080", "10.0.1.9 . 8080"]
    );
}

#[test]
fn the_drift_check_lists_nothing_while_the_generation_stands_still() {
    let fw = RecordingFirewall::default();
    fw.record.lock().unwrap().generation = Some(41);
    let mut proxier = Proxier::new(fw.clone());
    proxier
        .sync(desired(&node(), &[service_test(json!({}))], &[two_pods()]))
        .unwrap();
    // The recorded table has no particular shape, and it is not read:
    // the generation is still the one our transaction made.
    assert!(!proxier.check().unwrap());
    // Someone else commits: now the table is read, is not the planned
    // one, and the proxier rebuilds it.
    fw.record.lock().unwrap().generation = Some(1000);
    assert!(proxier.check().unwrap());
    assert_eq!(fw.record.lock().unwrap().scripts.len(), 2);
    // Unknown generations always mean a reading.
    let fw = RecordingFirewall::default();
    let mut proxier = Proxier::new(fw.clone());
    proxier
        .sync(desired(&node(), &[service_test(json!({}))], &[two_pods()]))
        .unwrap();
    assert!(proxier.check().unwrap());
}

#[test]
fn an_element_two_services_plan_stays_until_both_are_gone() {
    // Both services send to 10.0.1.2, a pod of this node: one hairpin
    // pair, planned by each of them.
    let other = service(
        "other",
        json!({"clusterIP": "10.3.241.153", "ports": [{"name": "http", "port": 80}]}),
    );
    let other_slice = slice(
        "other",
        "http",
        "TCP",
        8080,
        &[("10.0.1.2", "node-1", true)],
    );
    let mut planner = Planner::new(node());
    planner.apply_service(&service_test(json!({})));
    planner.apply_slice(&two_pods());
    planner.apply_service(&other);
    planner.apply_slice(&other_slice);
    let hairpin = |p: &Planner| -> Vec<String> {
        p.ruleset().sets["hairpin"]
            .elements
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(hairpin(&planner), ["10.0.1.2 . 10.0.1.2"]);
    planner.take_touched();

    planner.delete_service("default", "service-test");
    assert_eq!(hairpin(&planner), ["10.0.1.2 . 10.0.1.2"]);
    let touched = planner.take_touched();
    assert!(
        !touched.elements.iter().any(|(set, _)| set == "hairpin"),
        "{touched:?}"
    );

    planner.delete_service("default", "other");
    assert!(hairpin(&planner).is_empty());
    let touched = planner.take_touched();
    assert!(
        touched
            .elements
            .contains(&("hairpin".to_string(), "10.0.1.2 . 10.0.1.2".to_string()))
    );
    // And back: the pair returns with its first service.
    planner.apply_service(&other);
    assert_eq!(hairpin(&planner), ["10.0.1.2 . 10.0.1.2"]);
    let fresh = desired(&node(), &[other], &[two_pods(), other_slice]);
    assert_eq!(in_use(planner.ruleset()), fresh);
}

#[test]
fn a_change_to_most_of_the_table_is_found_by_comparing_whole_tables() {
    let fw = RecordingFirewall::default();
    let mut proxier = Proxier::new(fw.clone());
    let mut planner = Planner::new(node());
    planner.apply_service(&service_test(json!({})));
    planner.apply_slice(&two_pods());
    assert_eq!(
        proxier.sync_planned(&mut planner).unwrap().kind,
        SyncKind::Full
    );
    // 600 services with two endpoints each: some 2,400 new elements in a
    // table that had a dozen.
    let many = |planner: &mut Planner| {
        for i in 0..600 {
            let name = format!("s{i}");
            planner.apply_service(&service(
                &name,
                json!({"clusterIP": format!("10.3.{}.{}", i / 250, i % 250 + 1),
                       "ports": [{"name": "http", "port": 80}]}),
            ));
            planner.apply_slice(&slice(
                &name,
                "http",
                "TCP",
                8080,
                &[("10.0.2.7", "node-2", true), ("10.0.3.7", "node-3", true)],
            ));
        }
    };
    let mut other = Planner::new(node());
    other.take_touched();
    many(&mut other);
    let touched = other.take_touched();
    assert!(touched.elements_all);
    assert!(touched.elements.is_empty());
    assert!(!touched.is_empty());

    // The proxier compares the applied table with the planned one
    // instead, and writes only the new elements.
    many(&mut planner);
    let report = proxier.sync_planned(&mut planner).unwrap();
    assert_eq!(report.kind, SyncKind::Partial);
    assert_eq!(report.elements, 600 * (1 + 1 + 2));
    let batch = fw.record.lock().unwrap().batches.last().unwrap().clone();
    assert!(
        batch.contains(
            "add element ip knit service-ips { 10.3.0.8 . tcp . 80 : goto cluster-tcp-2 }"
        ),
        "{batch}"
    );
    assert!(!batch.contains("delete"), "{batch}");

    // One endpoint more is listed again, and synced partially.
    planner.apply_slice(&slice(
        "s7",
        "http",
        "TCP",
        8080,
        &[
            ("10.0.2.7", "node-2", true),
            ("10.0.3.7", "node-3", true),
            ("10.0.4.7", "node-4", true),
        ],
    ));
    let report = proxier.sync_planned(&mut planner).unwrap();
    assert_eq!(report.kind, SyncKind::Partial);
    let batch = fw.record.lock().unwrap().batches.last().unwrap().clone();
    assert!(
        batch.contains("10.3.0.8 . 80 . 2 : 10.0.4.7 . 8080"),
        "{batch}"
    );
}

#[test]
fn pick_chains_come_with_smaller_counts_and_stay_idle_in_step_with_the_node() {
    let mut planner = Planner::new(node());
    planner.apply_service(&service_test(json!({})));
    planner.apply_slice(&two_pods());
    let chains = |p: &Planner| -> Vec<String> {
        p.ruleset()
            .chains
            .keys()
            .filter(|c| is_pick_chain(c))
            .cloned()
            .collect()
    };
    assert_eq!(chains(&planner), ["cluster-tcp-1", "cluster-tcp-2"]);
    // The service goes: its chains stay, unused.
    planner.delete_service("default", "service-test");
    let _ = planner.take_touched();
    assert_eq!(chains(&planner), ["cluster-tcp-1", "cluster-tcp-2"]);
    // A new cluster CIDR reaches the idle chains' masquerade rule too.
    let mut moved = node();
    moved.cluster_cidr = "10.8.0.0/14".parse().unwrap();
    planner.set_node(moved);
    let touched = planner.take_touched();
    for name in ["cluster-tcp-1", "cluster-tcp-2"] {
        assert!(touched.chains.contains(name), "{touched:?}");
        assert_eq!(
            planner.ruleset().chains[name].rules[0],
            "ip saddr != 10.8.0.0/14 jump mark-for-masquerade"
        );
    }
}

#[test]
fn a_change_that_rewrites_a_chain_is_one_nft_script() {
    // An affinity service's entry chain picks among its endpoints: losing
    // the local one rewrites that chain, drops the endpoint's chain and
    // set, and its hairpin pair, all in one script.
    let svc = service_test(json!({"sessionAffinity": "ClientIP"}));
    let before = desired(&node(), std::slice::from_ref(&svc), &[two_pods()]);
    let remote = slice(
        "service-test",
        "http",
        "TCP",
        8080,
        &[("10.0.2.2", "node-2", true)],
    );
    let after = desired(&node(), &[svc], &[remote]);
    let render::Transaction::Script(script) = render::partial(&before, &after).unwrap() else {
        panic!("not a script");
    };
    let delete_pair = script
        .find("delete element ip knit hairpin { 10.0.1.2 . 10.0.1.2 }\n")
        .unwrap_or_else(|| panic!("{script}"));
    let refill = script
        .find("flush chain ip knit aff-cluster-default/service-test/tcp/http\n")
        .unwrap_or_else(|| panic!("{script}"));
    let drop_set = script
        .find("delete set ip knit aff-default/service-test/tcp/http/10.0.1.2/8080\n")
        .unwrap_or_else(|| panic!("{script}"));
    assert!(delete_pair < refill && refill < drop_set, "{script}");
    // Every element command names its set.
    assert!(!script.contains("ip knit  "), "{script}");
}

#[test]
fn a_large_endpoint_count_brings_only_the_counts_just_below_it() {
    let eps: Vec<String> = (0..40).map(|i| format!("10.0.2.{}", i + 10)).collect();
    let eps: Vec<(&str, &str, bool)> = eps.iter().map(|ip| (ip.as_str(), "node-2", true)).collect();
    let mut planner = Planner::new(node());
    planner.apply_service(&service_test(json!({})));
    planner.apply_slice(&slice("service-test", "http", "TCP", 8080, &eps));
    let picks: Vec<String> = planner
        .ruleset()
        .chains
        .keys()
        .filter(|c| is_pick_chain(c))
        .cloned()
        .collect();
    // 40 and the eight counts below it, not 1 to 39.
    let expected: Vec<String> = (32..=40).map(|n| format!("cluster-tcp-{n}")).collect();
    assert_eq!(picks, expected);
}
