//! Names outside the cluster: forwarded to the node's upstream resolvers
//! (the host's resolv.conf) over one UDP socket, with a cache that keeps
//! each answer for its smallest TTL (capped) and ages the TTLs it hands
//! out. One task owns the socket, the outstanding queries and the cache,
//! so none of it needs a lock; the serving threads send it requests.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, HEADER, NOERROR, NXDOMAIN, SERVFAIL};

/// How long one upstream gets before the next is tried.
const UPSTREAM_WAIT: Duration = Duration::from_millis(1500);
/// The longest an answer is cached, as CoreDNS's cache caps it.
const MAX_TTL: u32 = 3600;
/// How many answers the cache holds at most.
const CACHE_SIZE: usize = 10_000;
/// How many queries may wait for the forwarder.
pub const QUEUE: usize = 4096;

/// Where a forwarded answer goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// A UDP client, answered on the socket its query came in on.
    Udp {
        /// The serving socket.
        socket: Arc<StdUdpSocket>,
        /// The client.
        peer: SocketAddr,
    },
    /// A TCP connection's task, waiting.
    Tcp(oneshot::Sender<Vec<u8>>),
}

/// A query to forward.
#[derive(Debug)]
pub struct Request {
    /// The client's query, as it came.
    pub packet: Vec<u8>,
    /// Where the answer goes.
    pub reply: ReplyTo,
}

/// The upstream resolvers named by a resolv.conf, on port 53, leaving out
/// `ourselves` (the cluster DNS address: asking it would loop).
pub fn upstreams(resolv_conf: &str, ourselves: IpAddr) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next()?;
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let addr: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            (addr != ourselves && !addr.is_unspecified()).then(|| SocketAddr::new(addr, 53))
        })
        .collect()
}

struct Pending {
    client_id: u16,
    reply: ReplyTo,
    key: Vec<u8>,
    query: Vec<u8>,
    server: usize,
    sent: Instant,
}

struct Cached {
    packet: Vec<u8>,
    stored: Instant,
    ttl: u32,
}

/// The cache key: the lowercased name, type, class and DO bit.
fn cache_key(q: &wire::Query<'_>) -> Vec<u8> {
    let mut key = Vec::with_capacity(q.qname.len() + 5);
    wire::name_key(q.qname, &mut key);
    key.extend_from_slice(&q.qtype.to_be_bytes());
    key.extend_from_slice(&q.qclass.to_be_bytes());
    key.push(u8::from(q.edns.is_some_and(|e| e.dnssec_ok)));
    key
}

/// Runs the forwarder until every request sender is gone.
pub async fn run(upstream: UdpSocket, servers: Vec<SocketAddr>, mut rx: mpsc::Receiver<Request>) {
    let mut pending: HashMap<u16, Pending> = HashMap::new();
    let mut cache: HashMap<Vec<u8>, Cached> = HashMap::new();
    let mut next_id = seed();
    let mut buf = vec![0u8; 65_535];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            request = rx.recv() => {
                let Some(request) = request else { return };
                let Ok(q) = wire::parse_query(&request.packet) else { continue };
                let key = cache_key(&q);
                if let Some(hit) = cache.get(&key) {
                    let age = hit.stored.elapsed().as_secs() as u32;
                    if age < hit.ttl {
                        let mut packet = hit.packet.clone();
                        packet[..2].copy_from_slice(&q.id.to_be_bytes());
                        // The client's own spelling of the name.
                        packet[HEADER..q.question_end]
                            .copy_from_slice(&request.packet[HEADER..q.question_end]);
                        wire::age_ttls(&mut packet, age);
                        deliver(request.reply, packet, &request.packet);
                        continue;
                    }
                    cache.remove(&key);
                }
                if servers.is_empty() {
                    deliver(request.reply, servfail(&request.packet), &request.packet);
                    continue;
                }
                let client_id = q.id;
                let mut query = request.packet;
                // A fresh id that no outstanding query holds.
                let id = loop {
                    next_id = next_id.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    let id = (next_id >> 48) as u16;
                    if !pending.contains_key(&id) {
                        break id;
                    }
                };
                query[..2].copy_from_slice(&id.to_be_bytes());
                let _ = upstream.send_to(&query, servers[0]).await;
                pending.insert(id, Pending { client_id, reply: request.reply, key, query, server: 0, sent: Instant::now() });
            }
            got = upstream.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                let packet = &buf[..n];
                if n < HEADER || !servers.contains(&from) {
                    continue;
                }
                let id = u16::from_be_bytes([packet[0], packet[1]]);
                let Some(p) = pending.get(&id) else { continue };
                // The answer must be to the question asked.
                let Ok(asked) = wire::parse_query(&p.query) else { continue };
                let qlen = asked.question_end - HEADER;
                let same = packet.len() >= HEADER + qlen
                    && packet[4..6] == [0, 1]
                    && packet[HEADER..HEADER + qlen].eq_ignore_ascii_case(&p.query[HEADER..HEADER + qlen]);
                if !same {
                    continue;
                }
                let p = pending.remove(&id).expect("looked up above");
                let mut answer = packet.to_vec();
                answer[..2].copy_from_slice(&p.client_id.to_be_bytes());
                let rcode = answer[3] & 0xf;
                let truncated = answer[2] & 0x02 != 0;
                if (rcode == NOERROR || rcode == NXDOMAIN) && !truncated {
                    let mut copy = answer.clone();
                    if let Some(ttl) = wire::age_ttls(&mut copy, 0).filter(|&t| t > 0) {
                        if cache.len() >= CACHE_SIZE {
                            cache.retain(|_, c| c.stored.elapsed().as_secs() < u64::from(c.ttl));
                            if cache.len() >= CACHE_SIZE {
                                cache.clear();
                            }
                        }
                        cache.insert(p.key, Cached { packet: answer.clone(), stored: Instant::now(), ttl: ttl.min(MAX_TTL) });
                    }
                }
                let mut original = p.query;
                original[..2].copy_from_slice(&p.client_id.to_be_bytes());
                deliver(p.reply, answer, &original);
            }
            _ = tick.tick() => {
                let late: Vec<u16> = pending
                    .iter()
                    .filter(|(_, p)| p.sent.elapsed() >= UPSTREAM_WAIT)
                    .map(|(id, _)| *id)
                    .collect();
                for id in late {
                    let p = pending.get_mut(&id).expect("listed above");
                    if p.server + 1 < servers.len() {
                        p.server += 1;
                        p.sent = Instant::now();
                        let _ = upstream.send_to(&p.query, servers[p.server]).await;
                    } else {
                        let p = pending.remove(&id).expect("listed above");
                        let mut original = p.query;
                        original[..2].copy_from_slice(&p.client_id.to_be_bytes());
                        deliver(p.reply, servfail(&original), &original);
                    }
                }
            }
        }
    }
}

/// A start for the id sequence that differs between runs.
fn seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

/// SERVFAIL to `query`, its question echoed.
fn servfail(query: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match wire::parse_query(query) {
        Ok(q) => wire::Response::new(&mut out, &q, false, SERVFAIL).finish(q.edns, 65_535),
        Err(_) if query.len() >= 4 => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            let flags = u16::from_be_bytes([query[2], query[3]]);
            wire::error_response(&mut out, id, flags, SERVFAIL);
        }
        Err(_) => {}
    }
    out
}

/// Sends `answer` where it goes; a UDP answer larger than the client
/// takes is cut to its question with TC set, so the client asks again
/// over TCP.
fn deliver(reply: ReplyTo, answer: Vec<u8>, query: &[u8]) {
    match reply {
        ReplyTo::Udp { socket, peer } => {
            let limit = wire::parse_query(query).map_or(wire::MIN_UDP, |q| q.udp_limit());
            if answer.len() > limit {
                let Ok(q) = wire::parse_query(query) else {
                    return;
                };
                let mut cut = Vec::new();
                let mut r = wire::Response::new(&mut cut, &q, false, answer[3] & 0xf);
                r.set_tc();
                r.finish(q.edns, limit);
                let _ = socket.send_to(&cut, peer);
            } else {
                let _ = socket.send_to(&answer, peer);
            }
        }
        ReplyTo::Tcp(tx) => {
            let _ = tx.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_skip_ourselves() {
        let conf = "# x\nnameserver 192.0.2.53\nnameserver 10.3.240.10\nsearch a\n\
                    nameserver fe80::1%eth0 ; link-local\nnameserver bogus\n";
        let ours: IpAddr = "10.3.240.10".parse().unwrap();
        assert_eq!(
            upstreams(conf, ours),
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
