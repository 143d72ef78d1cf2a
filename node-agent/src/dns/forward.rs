//! Names outside the cluster: forwarded to the node's upstream resolvers
//! (the host's resolv.conf) over one UDP socket, with a cache that keeps
//! each answer for its smallest TTL (capped) and ages the TTLs it hands
//! out. One task owns the socket, the outstanding queries and the cache,
//! so none of it needs a lock; the serving threads send it requests. An
//! answer too large for UDP, asked for by a TCP client, is asked again
//! over TCP from the node's namespace.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// For an ExternalName outside the zone: what to ask upstream instead
    /// and the answer to complete.
    pub chase: Option<Chase>,
}

/// An ExternalName answer waiting for its target's records.
#[derive(Debug)]
pub struct Chase {
    /// The name to ask upstream (same type as the client's question).
    pub target: Box<str>,
    /// The finished answer holding the CNAME.
    pub answer: Vec<u8>,
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
    /// The client's query as it came.
    client: Vec<u8>,
    reply: ReplyTo,
    key: Vec<u8>,
    /// What went upstream, under our id.
    query: Vec<u8>,
    /// The CNAME answer to complete, for a chase.
    chase: Option<Vec<u8>>,
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

/// Runs the forwarder until every request sender is gone; TCP
/// connections to upstream are opened in `netns` (the node's namespace
/// file; `None` for the process's own).
pub async fn run(
    upstream: UdpSocket,
    servers: Vec<SocketAddr>,
    netns: Option<PathBuf>,
    mut rx: mpsc::Receiver<Request>,
) {
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
                // What to ask upstream: the client's query, or the
                // ExternalName's target with the client's type.
                let (ask, chase) = match request.chase {
                    None => (request.packet.clone(), None),
                    Some(c) => {
                        let ask = wire::build_query(0, &c.target, q.qtype, Some(wire::OUR_UDP), false);
                        (ask, Some(c.answer))
                    }
                };
                let Ok(asked) = wire::parse_query(&ask) else { continue };
                let key = cache_key(&asked);
                if let Some(hit) = cache.get(&key) {
                    let age = hit.stored.elapsed().as_secs() as u32;
                    if age < hit.ttl {
                        let mut packet = hit.packet.clone();
                        wire::age_ttls(&mut packet, age);
                        let answer = complete(&request.packet, chase.as_deref(), packet);
                        deliver(request.reply, answer, &request.packet);
                        continue;
                    }
                    cache.remove(&key);
                }
                if servers.is_empty() {
                    let answer = chase.unwrap_or_else(|| servfail(&request.packet));
                    deliver(request.reply, answer, &request.packet);
                    continue;
                }
                let mut query = ask;
                // A fresh id that no outstanding query holds.
                let id = loop {
                    next_id = next_id.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    let id = (next_id >> 48) as u16;
                    if !pending.contains_key(&id) {
                        break id;
                    }
                };
                query[..2].copy_from_slice(&id.to_be_bytes());
                let sent = sent_at(upstream.send_to(&query, servers[0]).await);
                pending.insert(id, Pending {
                    client: request.packet,
                    reply: request.reply,
                    key,
                    query,
                    chase,
                    server: 0,
                    sent,
                });
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
                let rcode = packet[3] & 0xf;
                let truncated = packet[2] & 0x02 != 0;
                if (rcode == NOERROR || rcode == NXDOMAIN) && !truncated {
                    let mut copy = packet.to_vec();
                    if let Some(ttl) = wire::age_ttls(&mut copy, 0).filter(|&t| t > 0) {
                        if cache.len() >= CACHE_SIZE {
                            cache.retain(|_, c| c.stored.elapsed().as_secs() < u64::from(c.ttl));
                            if cache.len() >= CACHE_SIZE {
                                cache.clear();
                            }
                        }
                        cache.insert(p.key, Cached { packet: copy, stored: Instant::now(), ttl: ttl.min(MAX_TTL) });
                    }
                }
                if truncated && p.chase.is_none() && matches!(p.reply, ReplyTo::Tcp(_)) {
                    // The TCP client can take it all: ask again over TCP.
                    let (netns, truncated) = (netns.clone(), packet.to_vec());
                    tokio::spawn(async move {
                        let answer = match ask_tcp(netns, from, &p.query).await {
                            Ok(answer) => answer,
                            Err(err) => {
                                tracing::debug!(upstream = %from, error = %err, "DNS: TCP to upstream");
                                truncated
                            }
                        };
                        let answer = complete(&p.client, None, answer);
                        deliver(p.reply, answer, &p.client);
                    });
                    continue;
                }
                let answer = complete(&p.client, p.chase.as_deref(), packet.to_vec());
                deliver(p.reply, answer, &p.client);
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
                        p.sent = sent_at(upstream.send_to(&p.query, servers[p.server]).await);
                    } else {
                        let p = pending.remove(&id).expect("listed above");
                        // A chase that found nothing still has its CNAME.
                        let answer = p.chase.unwrap_or_else(|| servfail(&p.client));
                        deliver(p.reply, answer, &p.client);
                    }
                }
            }
        }
    }
}

/// The answer for the client: upstream's, under the client's id and in
/// its spelling of the name; for a chase, the CNAME answer with
/// upstream's records for the target after it (and upstream's NXDOMAIN).
fn complete(client: &[u8], chase: Option<&[u8]>, mut upstream: Vec<u8>) -> Vec<u8> {
    let Some(base) = chase else {
        if let Ok(q) = wire::parse_query(client)
            && upstream.len() >= q.question_end
        {
            upstream[..2].copy_from_slice(&q.id.to_be_bytes());
            upstream[HEADER..q.question_end].copy_from_slice(&client[HEADER..q.question_end]);
        }
        return upstream;
    };
    let Some((rcode, count, records)) = wire::answer_records(&upstream) else {
        return base.to_vec();
    };
    let mut out = base.to_vec();
    // Our CNAME answers carry no additional records but the OPT.
    let opt = u16::from_be_bytes([out[10], out[11]]) > 0;
    let at = if opt { out.len() - 11 } else { out.len() };
    out.splice(at..at, records);
    let an = u16::from_be_bytes([out[6], out[7]]) + count;
    out[6..8].copy_from_slice(&an.to_be_bytes());
    // Part of the answer is not ours to vouch for.
    out[2] &= !0x04;
    if rcode == NXDOMAIN {
        out[3] = (out[3] & 0xf0) | NXDOMAIN;
    }
    out
}

/// How long a TCP exchange with an upstream resolver may take.
const TCP_WAIT: Duration = Duration::from_secs(3);

/// Asks `server` over TCP, connecting from `netns`; the answer.
async fn ask_tcp(
    netns: Option<PathBuf>,
    server: SocketAddr,
    query: &[u8],
) -> std::io::Result<Vec<u8>> {
    let connect = move || std::net::TcpStream::connect_timeout(&server, TCP_WAIT);
    // The socket must be made inside the node's namespace: on a thread of
    // its own, never on a tokio worker.
    let stream = tokio::task::spawn_blocking(move || match &netns {
        Some(file) => crate::netns::run_in(file, connect).map_err(std::io::Error::other)?,
        None => connect(),
    })
    .await
    .map_err(std::io::Error::other)??;
    stream.set_nonblocking(true)?;
    let mut stream = tokio::net::TcpStream::from_std(stream)?;
    let exchange = async {
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(TCP_WAIT, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    if answer.len() < HEADER || answer[..2] != query[..2] {
        return Err(std::io::Error::other("not the answer to our query"));
    }
    Ok(answer)
}

/// When a query counts as sent: now, or — when the send failed (no
/// route to that resolver) — long enough ago that the next tick moves on
/// to the next resolver instead of waiting out its time.
fn sent_at(sent: std::io::Result<usize>) -> Instant {
    let now = Instant::now();
    match sent {
        Ok(_) => now,
        Err(_) => now.checked_sub(UPSTREAM_WAIT).unwrap_or(now),
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
