//! The answers, from an index filled directly.

use super::*;
use crate::dns::wire::{SERVFAIL, decode, parse_query, query};

const ZONE: &str = "cluster.local";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn port(name: &str, port: u16, protocol: &str) -> PortRec {
    PortRec {
        name: name.into(),
        port,
        protocol: protocol.into(),
    }
}

fn endpoint(addr: &str, hostname: Option<&str>, ready: bool) -> EndpointRec {
    EndpointRec {
        addresses: vec![ip(addr)],
        hostname: hostname.map(str::to_string),
        ready,
    }
}

/// The article's service-test, a headless `db` with two ready endpoints
/// (one named) and one not ready, a headless `empty` with only an unready
/// endpoint, an ExternalName `search` and `kubernetes`.
fn sources() -> Sources {
    let mut s = Sources::default();
    let k = |ns: &str, name: &str| (ns.to_string(), name.to_string());
    s.services.insert(
        k("default", "service-test"),
        ServiceRec {
            kind: ServiceKind::ClusterIp(vec![ip("10.3.241.7")]),
            ports: vec![port("http", 80, "TCP"), port("", 81, "TCP")],
            publish_not_ready: false,
        },
    );
    s.services.insert(
        k("default", "kubernetes"),
        ServiceRec {
            kind: ServiceKind::ClusterIp(vec![ip("10.3.240.1")]),
            ports: vec![port("https", 443, "TCP")],
            publish_not_ready: false,
        },
    );
    s.services.insert(
        k("shop", "db"),
        ServiceRec {
            kind: ServiceKind::Headless,
            ports: vec![port("pg", 5432, "TCP")],
            publish_not_ready: false,
        },
    );
    s.services.insert(
        k("shop", "empty"),
        ServiceRec {
            kind: ServiceKind::Headless,
            ports: vec![],
            publish_not_ready: false,
        },
    );
    s.services.insert(
        k("shop", "search"),
        ServiceRec {
            kind: ServiceKind::ExternalName("db.shop.svc.cluster.local".into()),
            ports: vec![],
            publish_not_ready: false,
        },
    );
    s.slices.insert(
        k("shop", "db-abc"),
        SliceRec {
            service: "db".into(),
            endpoints: vec![
                endpoint("10.0.1.5", Some("db-0"), true),
                endpoint("10.0.2.6", None, true),
                endpoint("10.0.2.9", Some("db-9"), false),
            ],
            ports: vec![port("pg", 5432, "TCP")],
        },
    );
    s.slices.insert(
        k("shop", "empty-x"),
        SliceRec {
            service: "empty".into(),
            endpoints: vec![endpoint("10.0.2.7", None, false)],
            ports: vec![],
        },
    );
    s.slices.insert(
        k("default", "service-test-1"),
        SliceRec {
            service: "service-test".into(),
            endpoints: vec![endpoint("10.0.1.2", None, true)],
            ports: vec![port("http", 8080, "TCP")],
        },
    );
    s
}

fn index() -> Index {
    Index::build(ZONE, Ipv4Addr::new(10, 3, 240, 10), &sources(), 42)
}

/// Asks `index` and decodes the answer; `None` when it would forward.
fn ask_with(
    index: &Index,
    name: &str,
    qtype: u16,
    payload: Option<u16>,
    limit: usize,
) -> Option<wire::Decoded> {
    let packet = query(0x1234, name, qtype, payload);
    let q = parse_query(&packet).unwrap();
    let mut key = Vec::new();
    wire::name_key(q.qname, &mut key);
    let mut out = Vec::new();
    match index.answer(&q, &key, &mut out, limit) {
        Outcome::Answered | Outcome::Chase(_) => {
            let d = decode(&out);
            assert_eq!(d.id, 0x1234);
            Some(d)
        }
        Outcome::Forward => None,
    }
}

fn ask(name: &str, qtype: u16) -> wire::Decoded {
    ask_with(&index(), name, qtype, None, 512).unwrap_or_else(|| panic!("{name} forwarded"))
}

fn data(records: &[(String, u16, u32, String)]) -> Vec<&str> {
    records.iter().map(|r| r.3.as_str()).collect()
}

#[test]
fn a_cluster_ip_service_answers_its_ip_with_ttl_5_case_blind() {
    let d = ask("Service-Test.DEFAULT.svc.Cluster.Local", TYPE_A);
    assert_eq!(d.rcode, NOERROR);
    assert_ne!(d.flags & 0x0400, 0, "authoritative");
    assert_eq!(
        d.answers,
        vec![(
            "Service-Test.DEFAULT.svc.Cluster.Local".to_string(),
            TYPE_A,
            5,
            "10.3.241.7".to_string()
        )]
    );
    let d = ask("kubernetes.default.svc.cluster.local", TYPE_A);
    assert_eq!(data(&d.answers), ["10.3.240.1"]);
}

#[test]
fn nodata_and_nxdomain_are_told_apart() {
    // The name exists, it has no IPv6 address: NODATA with the SOA.
    let d = ask("service-test.default.svc.cluster.local", TYPE_AAAA);
    assert_eq!(d.rcode, NOERROR);
    assert!(d.answers.is_empty());
    assert_eq!(d.authority.len(), 1);
    assert_eq!(d.authority[0].1, TYPE_SOA);
    assert_eq!(d.authority[0].0, "cluster.local");
    // Parents of names exist: NODATA.
    for name in [
        "default.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ] {
        let d = ask(name, TYPE_A);
        assert_eq!((d.rcode, d.answers.len()), (NOERROR, 0), "{name}");
    }
    // Names that do not exist: NXDOMAIN with the SOA.
    for name in [
        "nope.default.svc.cluster.local",
        "service-test.other.svc.cluster.local",
        "google.com.default.svc.cluster.local",
        "x.cluster.local",
    ] {
        let d = ask(name, TYPE_A);
        assert_eq!(d.rcode, NXDOMAIN, "{name}");
        assert_eq!(d.authority[0].1, TYPE_SOA, "{name}");
    }
}

#[test]
fn headless_services_answer_ready_endpoints_or_nxdomain() {
    let d = ask("db.shop.svc.cluster.local", TYPE_A);
    assert_eq!(data(&d.answers), ["10.0.1.5", "10.0.2.6"]);
    assert_eq!(
        data(&ask("db-0.db.shop.svc.cluster.local", TYPE_A).answers),
        ["10.0.1.5"]
    );
    assert_eq!(
        data(&ask("10-0-2-6.db.shop.svc.cluster.local", TYPE_A).answers),
        ["10.0.2.6"]
    );
    // Not ready: not published.
    assert_eq!(
        ask("db-9.db.shop.svc.cluster.local", TYPE_A).rcode,
        NXDOMAIN
    );
    assert_eq!(ask("empty.shop.svc.cluster.local", TYPE_A).rcode, NXDOMAIN);
    // ... unless the Service says so.
    let mut s = sources();
    s.services
        .get_mut(&("shop".to_string(), "empty".to_string()))
        .unwrap()
        .publish_not_ready = true;
    let index = Index::build(ZONE, Ipv4Addr::new(10, 3, 240, 10), &s, 1);
    let d = ask_with(&index, "empty.shop.svc.cluster.local", TYPE_A, None, 512).unwrap();
    assert_eq!(data(&d.answers), ["10.0.2.7"]);
}

#[test]
fn srv_for_named_ports_with_targets_addresses() {
    let d = ask(
        "_http._tcp.service-test.default.svc.cluster.local",
        TYPE_SRV,
    );
    assert_eq!(
        data(&d.answers),
        ["0 100 80 service-test.default.svc.cluster.local"]
    );
    assert_eq!(data(&d.additional), ["10.3.241.7"]);
    assert_eq!(d.additional[0].0, "service-test.default.svc.cluster.local");
    let d = ask("_pg._tcp.db.shop.svc.cluster.local", TYPE_SRV);
    assert_eq!(
        data(&d.answers),
        [
            "0 50 5432 10-0-2-6.db.shop.svc.cluster.local",
            "0 50 5432 db-0.db.shop.svc.cluster.local"
        ]
    );
    assert_eq!(data(&d.additional), ["10.0.2.6", "10.0.1.5"]);
    // `_tcp` below a service exists; a wrong protocol does not.
    assert_eq!(
        ask("_tcp.service-test.default.svc.cluster.local", TYPE_SRV).rcode,
        NOERROR
    );
    assert_eq!(
        ask(
            "_http._udp.service-test.default.svc.cluster.local",
            TYPE_SRV
        )
        .rcode,
        NXDOMAIN
    );
}

#[test]
fn ptr_for_cluster_ips_and_endpoints() {
    let d = ask("7.241.3.10.in-addr.arpa", TYPE_PTR);
    assert_eq!(data(&d.answers), ["service-test.default.svc.cluster.local"]);
    let d = ask("5.1.0.10.in-addr.arpa", TYPE_PTR);
    assert_eq!(data(&d.answers), ["db-0.db.shop.svc.cluster.local"]);
    let d = ask("2.1.0.10.in-addr.arpa", TYPE_PTR);
    assert_eq!(
        data(&d.answers),
        ["10-0-1-2.service-test.default.svc.cluster.local"]
    );
    // Addresses we know nothing of, and other names, go upstream.
    assert!(ask_with(&index(), "9.9.9.10.in-addr.arpa", TYPE_PTR, None, 512).is_none());
    assert!(ask_with(&index(), "example.org", TYPE_A, None, 512).is_none());
}

#[test]
fn external_names_are_cnames_followed_inside_the_zone() {
    let d = ask("search.shop.svc.cluster.local", TYPE_A);
    assert_eq!(d.answers[0].1, TYPE_CNAME);
    assert_eq!(d.answers[0].3, "db.shop.svc.cluster.local");
    assert_eq!(data(&d.answers[1..]), ["10.0.1.5", "10.0.2.6"]);
    assert_eq!(d.answers[1].0, "db.shop.svc.cluster.local");
    let d = ask("search.shop.svc.cluster.local", TYPE_CNAME);
    assert_eq!(data(&d.answers), ["db.shop.svc.cluster.local"]);

    // Outside the zone: the CNAME, and the target is for upstream.
    let mut s = sources();
    s.services.insert(
        ("shop".into(), "web".into()),
        ServiceRec {
            kind: ServiceKind::ExternalName("www.example.com".into()),
            ports: vec![],
            publish_not_ready: false,
        },
    );
    let index = Index::build(ZONE, Ipv4Addr::new(10, 3, 240, 10), &s, 1);
    let packet = query(3, "web.shop.svc.cluster.local", TYPE_A, None);
    let q = parse_query(&packet).unwrap();
    let mut key = Vec::new();
    wire::name_key(q.qname, &mut key);
    let mut out = Vec::new();
    assert_eq!(
        index.answer(&q, &key, &mut out, 512),
        Outcome::Chase("www.example.com".into())
    );
    assert_eq!(data(&decode(&out).answers), ["www.example.com"]);
    let d = ask_with(&index, "web.shop.svc.cluster.local", TYPE_TXT, None, 512).unwrap();
    assert_eq!(
        data(&d.answers),
        ["www.example.com"],
        "other types: the CNAME alone"
    );
}

#[test]
fn pod_names_version_and_apex() {
    let d = ask("10-0-1-2.default.pod.cluster.local", TYPE_A);
    assert_eq!(data(&d.answers), ["10.0.1.2"]);
    assert_eq!(
        ask("10-0-1.default.pod.cluster.local", TYPE_A).rcode,
        NXDOMAIN
    );
    let d = ask("10-0-1-2.default.pod.cluster.local", TYPE_AAAA);
    assert_eq!((d.rcode, d.answers.len()), (NOERROR, 0));
    assert_eq!(
        data(&ask("dns-version.cluster.local", TYPE_TXT).answers),
        ["1.1.0"]
    );
    let d = ask("cluster.local", TYPE_SOA);
    assert_eq!(data(&d.answers), ["ns.dns.cluster.local"]);
    assert_eq!(
        data(&ask("cluster.local", TYPE_NS).answers),
        ["ns.dns.cluster.local"]
    );
    assert_eq!(
        data(&ask("ns.dns.cluster.local", TYPE_A).answers),
        ["10.3.240.10"]
    );
}

#[test]
fn edns_and_truncation() {
    let mut s = Sources::default();
    let slice = SliceRec {
        service: "big".into(),
        endpoints: (0..60)
            .map(|i| endpoint(&format!("10.0.3.{i}"), None, true))
            .collect(),
        ports: vec![],
    };
    s.services.insert(
        ("default".into(), "big".into()),
        ServiceRec {
            kind: ServiceKind::Headless,
            ports: vec![],
            publish_not_ready: false,
        },
    );
    s.slices.insert(("default".into(), "big-1".into()), slice);
    let index = Index::build(ZONE, Ipv4Addr::new(10, 3, 240, 10), &s, 1);
    // 60 A records are 960 bytes: too many for 512, fine for 1232.
    let d = ask_with(&index, "big.default.svc.cluster.local", TYPE_A, None, 512).unwrap();
    assert_ne!(d.flags & 0x0200, 0, "TC");
    assert!(d.answers.is_empty());
    let d = ask_with(
        &index,
        "big.default.svc.cluster.local",
        TYPE_A,
        Some(1232),
        1232,
    )
    .unwrap();
    assert_eq!(d.flags & 0x0200, 0);
    assert_eq!(d.answers.len(), 60);
    assert_eq!(data(&d.additional), ["payload 1232"]);
}

#[test]
fn other_classes_in_the_zone_are_refused() {
    let mut packet = query(1, "service-test.default.svc.cluster.local", TYPE_A, None);
    let at = packet.len() - 2;
    packet[at..].copy_from_slice(&3u16.to_be_bytes());
    let q = parse_query(&packet).unwrap();
    let mut key = Vec::new();
    wire::name_key(q.qname, &mut key);
    let mut out = Vec::new();
    assert_eq!(index().answer(&q, &key, &mut out, 512), Outcome::Answered);
    assert_eq!(decode(&out).rcode, REFUSED);
    assert_ne!(SERVFAIL, REFUSED);
}

#[test]
fn api_objects_reduce_to_records() {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "a", "namespace": "b"},
        "spec": {"clusterIP": "None", "ports": [{"name": "x", "port": 53, "protocol": "UDP"}],
                 "publishNotReadyAddresses": true},
    }))
    .unwrap();
    let rec = service_rec(&svc).unwrap();
    assert_eq!(rec.kind, ServiceKind::Headless);
    assert!(rec.publish_not_ready);
    assert_eq!(rec.ports, vec![port("x", 53, "UDP")]);
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "a", "namespace": "b"},
        "spec": {"type": "ExternalName", "externalName": "Example.COM."},
    }))
    .unwrap();
    assert_eq!(
        service_rec(&svc).unwrap().kind,
        ServiceKind::ExternalName("example.com".into())
    );
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "a-1", "namespace": "b",
                     "labels": {"kubernetes.io/service-name": "a"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.1.2"], "hostname": "h"},
                      {"addresses": ["10.0.1.3"], "conditions": {"ready": false}}],
        "ports": [{"name": "x", "port": 8053, "protocol": "UDP"}],
    }))
    .unwrap();
    let rec = slice_rec(&slice).unwrap();
    assert_eq!(rec.service, "a");
    assert_eq!(
        rec.endpoints,
        vec![
            endpoint("10.0.1.2", Some("h"), true),
            endpoint("10.0.1.3", None, false)
        ]
    );
    assert_eq!(rec.ports, vec![port("x", 8053, "UDP")]);
}
