//! The server in-process on loopback: hand-built queries over UDP and
//! TCP, a publication seen by the next query, and forwarding to a fake
//! upstream with its cache.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::records::{PortRec, ServiceKind, ServiceRec};
use super::wire::{self, NOERROR, NXDOMAIN, TYPE_A, decode, query};
use super::*;

fn sources(ip: &str) -> Sources {
    let mut s = Sources::default();
    s.services.insert(
        ("default".into(), "service-test".into()),
        ServiceRec {
            kind: ServiceKind::ClusterIp(vec![ip.parse().unwrap()]),
            ports: vec![PortRec {
                name: "http".into(),
                port: 80,
                protocol: "TCP".into(),
            }],
            publish_not_ready: false,
        },
    );
    s
}

fn index(s: &Sources, serial: u32) -> Index {
    Index::build("cluster.local", Ipv4Addr::new(10, 3, 240, 10), s, serial)
}

/// A fake upstream: answers every A query with 192.0.2.1, TTL 60, and
/// counts what it was asked.
fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let q = wire::parse_query(&buf[..n]).unwrap();
            let mut out = Vec::new();
            let mut r = wire::Response::new(&mut out, &q, false, NOERROR);
            r.address(
                wire::Section::Answer,
                wire::QNAME_AT,
                60,
                Ipv4Addr::new(192, 0, 2, 1).into(),
            );
            r.finish(q.edns, 512);
            let _ = socket.send_to(&out, peer);
        }
    });
    (addr, asked)
}

fn udp_ask(server: SocketAddr, packet: &[u8]) -> wire::Decoded {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket.send_to(packet, server).unwrap();
    let mut buf = [0u8; 65_535];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer over UDP");
    decode(&buf[..n])
}

fn tcp_ask(server: SocketAddr, packet: &[u8]) -> wire::Decoded {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    // Two queries on one connection, answered in order.
    stream.write_all(&framed).unwrap();
    stream.write_all(&framed).unwrap();
    let mut last = None;
    for _ in 0..2 {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).unwrap();
        last = Some(decode(&answer));
    }
    last.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_udp_and_tcp_follows_publications_and_forwards_with_a_cache() {
    let published = Arc::new(Published::new(index(&sources("10.3.241.7"), 1)));
    let (upstream, asked) = fake_upstream();
    let sockets = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let udp_addr = sockets.udp.local_addr().unwrap();
    // The TCP listener got its own port.
    let tcp_addr = sockets.tcp.local_addr().unwrap();
    let server = Server::start(sockets, published.clone(), vec![upstream], 2).unwrap();

    let name = "service-test.default.svc.cluster.local";
    let q = query(11, name, TYPE_A, Some(1232));
    let d = tokio::task::spawn_blocking(move || udp_ask(udp_addr, &q))
        .await
        .unwrap();
    assert_eq!((d.id, d.rcode), (11, NOERROR));
    assert_eq!(d.answers[0].3, "10.3.241.7");
    assert_eq!(d.additional[0].3, "payload 1232");

    let q = query(12, name, TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || tcp_ask(tcp_addr, &q))
        .await
        .unwrap();
    assert_eq!((d.id, d.rcode), (12, NOERROR));
    assert_eq!(d.answers[0].3, "10.3.241.7");

    // A new index is what the very next query sees.
    published.publish(index(&sources("10.3.241.8"), 2));
    let q = query(13, name, TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || udp_ask(udp_addr, &q))
        .await
        .unwrap();
    assert_eq!(d.answers[0].3, "10.3.241.8");
    published.publish(index(&Sources::default(), 3));
    let q = query(14, name, TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || udp_ask(udp_addr, &q))
        .await
        .unwrap();
    assert_eq!(d.rcode, NXDOMAIN);

    // Other names go upstream once, then come from the cache with aged
    // TTLs, in the asker's spelling.
    let q = query(15, "example.org", TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || udp_ask(udp_addr, &q))
        .await
        .unwrap();
    assert_eq!((d.id, d.rcode), (15, NOERROR));
    assert_eq!(d.answers[0].3, "192.0.2.1");
    assert_eq!(d.answers[0].2, 60);
    let q = query(16, "Example.ORG", TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || tcp_ask(tcp_addr, &q))
        .await
        .unwrap();
    assert_eq!((d.id, d.rcode), (16, NOERROR));
    assert_eq!(d.answers[0].0, "Example.ORG");
    assert!(d.answers[0].2 <= 60);
    assert_eq!(asked.load(Ordering::SeqCst), 1, "cached after the first");

    // An ExternalName outside the zone: the CNAME, then upstream's
    // records for the target, over UDP and (cached) TCP.
    let mut s = sources("10.3.241.7");
    s.services.insert(
        ("default".into(), "web".into()),
        ServiceRec {
            kind: ServiceKind::ExternalName("www.example.com".into()),
            ports: vec![],
            publish_not_ready: false,
        },
    );
    published.publish(index(&s, 4));
    let web = "web.default.svc.cluster.local";
    let q = query(17, web, TYPE_A, Some(1232));
    let d = tokio::task::spawn_blocking(move || udp_ask(udp_addr, &q))
        .await
        .unwrap();
    assert_eq!((d.id, d.rcode), (17, NOERROR));
    let answers: Vec<(&str, u16, &str)> = d
        .answers
        .iter()
        .map(|(n, t, _, v)| (n.as_str(), *t, v.as_str()))
        .collect();
    assert_eq!(
        answers,
        [
            (web, wire::TYPE_CNAME, "www.example.com"),
            ("www.example.com", TYPE_A, "192.0.2.1")
        ]
    );
    assert_eq!(d.flags & 0x0400, 0, "not authoritative for the target");
    assert_eq!(d.additional[0].3, "payload 1232");
    let q = query(18, web, TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || tcp_ask(tcp_addr, &q))
        .await
        .unwrap();
    assert_eq!(d.answers.len(), 2, "{d:?}");
    assert_eq!(asked.load(Ordering::SeqCst), 2, "the target asked once");
    drop(server);
}

#[tokio::test]
async fn no_upstream_is_servfail() {
    let published = Arc::new(Published::new(index(&Sources::default(), 1)));
    let sockets = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = sockets.udp.local_addr().unwrap();
    let _server = Server::start(sockets, published, vec![], 1).unwrap();
    let q = query(5, "example.org", TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || udp_ask(addr, &q))
        .await
        .unwrap();
    assert_eq!((d.id, d.rcode), (5, wire::SERVFAIL));
}

#[test]
fn the_link_holds_the_address_once() {
    let kernel = crate::netlink::FakeKernel::new();
    kernel.add_namespace("node");
    let nl = kernel.netlink("node");
    let ip = Ipv4Addr::new(10, 3, 240, 10);
    let changes = ensure_link(&nl, ip).unwrap();
    assert_eq!(changes.len(), 3, "{changes:?}");
    let link = nl.link(LINK).unwrap().unwrap();
    assert!(link.up);
    assert_eq!(link.kind.as_deref(), Some("dummy"));
    assert_eq!(
        nl.addresses(LINK).unwrap(),
        vec!["10.3.240.10/32".parse::<IpNet>().unwrap()]
    );
    assert!(ensure_link(&nl, ip).unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_upstream_is_skipped_at_once() {
    let published = Arc::new(Published::new(index(&Sources::default(), 1)));
    let sockets = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = sockets.udp.local_addr().unwrap();
    let (upstream, asked) = fake_upstream();
    // Sending to the broadcast address without SO_BROADCAST fails at
    // once (EACCES), as a resolver without a route does.
    let dead: SocketAddr = "255.255.255.255:53".parse().unwrap();
    let _server = Server::start(sockets, published, vec![dead, upstream], 1).unwrap();
    let start = std::time::Instant::now();
    let q = query(6, "example.org", TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || udp_ask(addr, &q))
        .await
        .unwrap();
    assert_eq!((d.id, d.rcode), (6, NOERROR));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}: the dead resolver's full wait was not skipped",
        start.elapsed()
    );
}

/// An upstream whose answer (100 A records) is too large for UDP: over UDP
/// it sends TC, over TCP (same port) the whole answer.
fn big_upstream() -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = std::net::TcpListener::bind(addr).unwrap();
    let answer = |packet: &[u8], full: bool| {
        let q = wire::parse_query(packet).unwrap();
        let mut out = Vec::new();
        let mut r = wire::Response::new(&mut out, &q, false, NOERROR);
        if full {
            for i in 0..100u8 {
                let a = Ipv4Addr::new(192, 0, 2, i).into();
                r.address(wire::Section::Answer, wire::QNAME_AT, 60, a);
            }
        } else {
            r.set_tc();
        }
        r.finish(None, 65_535);
        out
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&answer(&buf[..n], false), peer);
        }
    });
    std::thread::spawn(move || {
        for mut conn in tcp.incoming().flatten() {
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).unwrap();
            let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut packet).unwrap();
            let out = answer(&packet, true);
            let mut framed = (out.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&out);
            conn.write_all(&framed).unwrap();
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_too_large_for_udp_come_over_tcp_from_upstream() {
    let published = Arc::new(Published::new(index(&Sources::default(), 1)));
    let sockets = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (udp_addr, tcp_addr) = (
        sockets.udp.local_addr().unwrap(),
        sockets.tcp.local_addr().unwrap(),
    );
    let _server = Server::start(sockets, published, vec![big_upstream()], 1).unwrap();
    let q = query(7, "big.example", TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || udp_ask(udp_addr, &q))
        .await
        .unwrap();
    assert_ne!(d.flags & 0x0200, 0, "TC over UDP");
    let q = query(8, "big.example", TYPE_A, None);
    let d = tokio::task::spawn_blocking(move || tcp_ask(tcp_addr, &q))
        .await
        .unwrap();
    assert_eq!((d.id, d.rcode, d.flags & 0x0200), (8, NOERROR, 0));
    assert_eq!(d.answers.len(), 100);
}
