//! Plan and transaction tests: the article's `service-test` and the
//! policy cases as insta snapshots of the nft scripts, partial syncs as
//! exact transaction text, the drift check and conntrack cleanup against
//! the recording firewall.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::proxier::{shape_of_listing, stale_udp};
use super::*;

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-1".into(),
        ips: vec!["10.100.0.3".parse().unwrap()],
        pod_cidr: "10.0.1.0/24".parse().unwrap(),
        cluster_cidr: "10.0.0.0/14".parse().unwrap(),
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
    // O(1) dispatch: the ClusterIP is one map element, not a rule.
    assert_eq!(
        rs.sets["service-ips"].elements["10.3.241.152 . tcp . 80"],
        "goto svc-default/service-test/tcp/http"
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
        "goto ext-default/service-test/tcp/http"
    );
    assert_eq!(
        rs.chains["ext-default/service-test/tcp/http"].rules,
        [
            "jump mark-for-masquerade",
            "goto cluster-default/service-test/tcp/http"
        ]
    );
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
    let local = &rs.chains["local-default/service-test/tcp/http"].rules;
    assert_eq!(
        local,
        &["numgen random mod 1 vmap { 0 : goto ep-default/service-test/tcp/http/10.0.1.2/8080 }"]
    );
    assert!(
        !rs.chains
            .contains_key("cluster-default/service-test/tcp/http")
    );
    assert!(!rs.chains.keys().any(|c| c.contains("10.0.2.2")));

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
    assert_eq!(
        rs.chains["ext-default/service-test/tcp/http"]
            .rules
            .last()
            .unwrap(),
        "drop"
    );
    assert_eq!(
        rs.chains["svc-default/service-test/tcp/http"]
            .rules
            .last()
            .unwrap(),
        "drop"
    );
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
    let script = render::partial(&before, &after).unwrap();
    assert_eq!(
        script,
        "flush chain ip knit cluster-default/service-test/tcp/http\n\
         add rule ip knit cluster-default/service-test/tcp/http numgen random mod 1 vmap { 0 : goto ep-default/service-test/tcp/http/10.0.1.2/8080 }\n\
         flush chain ip knit ep-default/service-test/tcp/http/10.0.2.2/8080\n\
         delete chain ip knit ep-default/service-test/tcp/http/10.0.2.2/8080\n"
    );
    assert_eq!(render::partial(&after, &after).unwrap(), "");

    // The service goes away entirely: its element goes first, its chains
    // are emptied, then deleted.
    let (dns_svc, dns_one) = dns(&[("10.0.1.5", "node-1", true)]);
    let gone = desired(&node(), &[dns_svc], &[dns_one]);
    let script = render::partial(&after, &gone).unwrap();
    insta::assert_snapshot!("partial_remove_service", script);
    let delete_element = script.find("delete element ip knit service-ips").unwrap();
    let flush = script
        .find("flush chain ip knit svc-default/service-test")
        .unwrap();
    let delete = script
        .find("delete chain ip knit svc-default/service-test")
        .unwrap();
    assert!(delete_element < flush && flush < delete, "{script}");

    // And comes back: chains declared before the element that names them.
    let script = render::partial(&gone, &after).unwrap();
    let declare = script
        .find("add chain ip knit svc-default/service-test/tcp/http\n")
        .unwrap();
    let element = script.find("add element ip knit service-ips").unwrap();
    assert!(declare < element, "{script}");
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
        assert_eq!(rec.scripts.len(), 2);
        assert!(rec.scripts[0].starts_with("add table ip knit\ndelete table ip knit\n"));
        assert!(!rec.scripts[1].contains("table"), "{}", rec.scripts[1]);
    }
    fw.record.lock().unwrap().fail_next_apply = Some("boom".into());
    assert!(proxier.sync(one.clone()).is_err());
    assert_eq!(proxier.sync(one).unwrap().kind, SyncKind::Full);
}

#[test]
fn the_drift_check_compares_chains_rules_and_elements() {
    let rs = desired(&node(), &[service_test(json!({}))], &[two_pods()]);
    let fw = RecordingFirewall::default();
    let mut proxier = Proxier::new(fw.clone());
    proxier.sync(rs.clone()).unwrap();

    // A listing with the planned shape is left alone.
    let mut items = vec![
        json!({"metainfo": {"version": "1.0.6"}}),
        json!({"table": {"family": "ip", "name": "knit"}}),
    ];
    for (name, chain) in &rs.chains {
        items.push(json!({"chain": {"family": "ip", "table": "knit", "name": name}}));
        for _ in &chain.rules {
            items.push(
                json!({"rule": {"family": "ip", "table": "knit", "chain": name, "expr": []}}),
            );
        }
    }
    for (name, set) in &rs.sets {
        let elem: Vec<_> = set.elements.keys().map(|k| json!(k)).collect();
        let kind = if set.kind == SetKind::Map {
            "map"
        } else {
            "set"
        };
        items.push(json!({kind: {"family": "ip", "name": name, "table": "knit", "elem": elem}}));
    }
    let listing = json!({"nftables": items}).to_string();
    assert_eq!(shape_of_listing(&listing).unwrap(), rs.shape());
    fw.record.lock().unwrap().listing = Some(listing);
    assert!(!proxier.check().unwrap());
    assert_eq!(fw.record.lock().unwrap().scripts.len(), 1);

    // A flushed table (chains, no rules) is rebuilt with a full sync.
    let flushed: Vec<_> = items_without_rules(&rs);
    fw.record.lock().unwrap().listing = Some(json!({"nftables": flushed}).to_string());
    assert!(proxier.check().unwrap());
    // So is a deleted one.
    fw.record.lock().unwrap().listing = None;
    assert!(proxier.check().unwrap());
    let rec = fw.record.lock().unwrap();
    assert_eq!(rec.scripts.len(), 3);
    assert!(
        rec.scripts[1..]
            .iter()
            .all(|s| s.starts_with("add table ip knit\ndelete table"))
    );
}

fn items_without_rules(rs: &Ruleset) -> Vec<serde_json::Value> {
    rs.chains
        .keys()
        .map(|name| json!({"chain": {"family": "ip", "table": "knit", "name": name}}))
        .collect()
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
