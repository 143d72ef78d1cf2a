//! Serving: the published [`Index`], the per-packet handler, the UDP
//! threads and the TCP listener.
//!
//! UDP is served by a few plain threads blocked in `recv_from` on one
//! socket (the kernel wakes one per datagram), each answering cluster
//! names from its own reference to the current index — refreshed only
//! when the publication counter moves, so the hot path takes no lock and
//! allocates nothing. Names to forward go to the forwarder task. TCP (for
//! truncated answers and clients that prefer it) runs on tokio, one task
//! per connection, queries answered in order.

use std::net::{TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::forward::{self, Chase, ReplyTo, Request};
use super::records::{Index, Outcome};
use super::wire::{self, FORMERR, Malformed, NOTIMP};

/// The index the servers answer from, swapped whole when the API moves.
#[derive(Debug)]
pub struct Published {
    generation: AtomicU64,
    index: RwLock<Arc<Index>>,
}

impl Published {
    /// Starts with `index`.
    pub fn new(index: Index) -> Self {
        Published {
            generation: AtomicU64::new(0),
            index: RwLock::new(Arc::new(index)),
        }
    }

    /// Makes `index` the one answered from, for every server thread's next
    /// query.
    pub fn publish(&self, index: Index) {
        *self.index.write().expect("index") = Arc::new(index);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current index.
    pub fn current(&self) -> Arc<Index> {
        self.index.read().expect("index").clone()
    }

    /// How many times an index was published.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// What became of one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// The response is in the output buffer.
    Reply,
    /// To the upstream resolvers.
    Forward,
    /// The output buffer holds a CNAME answer whose target (outside the
    /// zone) upstream resolves; see [`Outcome::Chase`].
    Chase(Box<str>),
    /// Nothing to answer (not a query).
    Drop,
}

/// Answers packets from the published index; one per serving thread or
/// connection, holding its reusable buffers.
#[derive(Debug)]
pub struct Handler {
    published: Arc<Published>,
    index: Arc<Index>,
    generation: u64,
    key: Vec<u8>,
}

impl Handler {
    /// A handler of `published`.
    pub fn new(published: Arc<Published>) -> Self {
        let generation = published.generation();
        Handler {
            index: published.current(),
            published,
            generation,
            key: Vec::with_capacity(256),
        }
    }

    /// Answers `packet` into `out`, within `limit` bytes for UDP (`None`
    /// for TCP).
    pub fn handle(&mut self, packet: &[u8], out: &mut Vec<u8>, udp: bool) -> Handled {
        let generation = self.published.generation();
        if generation != self.generation {
            self.index = self.published.current();
            self.generation = generation;
        }
        let q = match wire::parse_query(packet) {
            Ok(q) => q,
            Err(Malformed::Drop) => return Handled::Drop,
            Err(Malformed::FormErr { id, flags }) => {
                wire::error_response(out, id, flags, FORMERR);
                return Handled::Reply;
            }
        };
        if q.opcode() != 0 {
            wire::error_response(out, q.id, q.flags, NOTIMP);
            return Handled::Reply;
        }
        if q.edns.is_some_and(|e| e.version > 0) {
            // BADVERS: extended rcode 1 in our OPT, header rcode 0.
            wire::error_response(out, q.id, q.flags, 0);
            out[10..12].copy_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&[0, 0, 41]);
            out.extend_from_slice(&wire::OUR_UDP.to_be_bytes());
            out.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
            return Handled::Reply;
        }
        wire::name_key(q.qname, &mut self.key);
        let limit = if udp { q.udp_limit() } else { 65_535 };
        match self.index.answer(&q, &self.key, out, limit) {
            Outcome::Answered => Handled::Reply,
            Outcome::Forward => Handled::Forward,
            Outcome::Chase(target) => Handled::Chase(target),
        }
    }
}

/// The sockets one DNS server answers on, bound by the caller (in the
/// node's namespace, on the cluster DNS address).
#[derive(Debug)]
pub struct Sockets {
    /// Port 53/UDP.
    pub udp: StdUdpSocket,
    /// Port 53/TCP.
    pub tcp: StdTcpListener,
    /// An unconnected UDP socket for asking upstream resolvers.
    pub upstream: StdUdpSocket,
    /// The namespace the sockets were made in (a file), where TCP
    /// connections to upstream are opened too; `None` for the process's.
    pub netns: Option<std::path::PathBuf>,
}

/// A running server; dropping it stops the UDP threads (within their
/// read timeout) and aborts the TCP and forwarding tasks.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    _tasks: JoinSet<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How long a UDP thread blocks before it looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(250);
/// How long a TCP connection may sit idle.
const TCP_IDLE: Duration = Duration::from_secs(10);

impl Server {
    /// Serves `published` on `sockets` with `udp_threads` UDP threads,
    /// forwarding other names to `upstreams`. Must run inside a tokio
    /// runtime.
    pub fn start(
        sockets: Sockets,
        published: Arc<Published>,
        upstreams: Vec<std::net::SocketAddr>,
        udp_threads: usize,
    ) -> std::io::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let (fwd_tx, fwd_rx) = mpsc::channel::<Request>(forward::QUEUE);

        sockets.upstream.set_nonblocking(true)?;
        let upstream = tokio::net::UdpSocket::from_std(sockets.upstream)?;
        tasks.spawn(forward::run(upstream, upstreams, sockets.netns, fwd_rx));

        sockets.tcp.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(sockets.tcp)?;
        tasks.spawn(serve_tcp(listener, published.clone(), fwd_tx.clone()));

        sockets.udp.set_read_timeout(Some(STOP_POLL))?;
        let udp = Arc::new(sockets.udp);
        for i in 0..udp_threads.max(1) {
            let (udp, published, fwd, stop) =
                (udp.clone(), published.clone(), fwd_tx.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || serve_udp(&udp, published, &fwd, &stop))?;
        }
        Ok(Server {
            stop,
            _tasks: tasks,
        })
    }
}

fn serve_udp(
    socket: &Arc<StdUdpSocket>,
    published: Arc<Published>,
    fwd: &mpsc::Sender<Request>,
    stop: &AtomicBool,
) {
    let mut handler = Handler::new(published);
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "DNS: receiving");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        match handler.handle(&buf[..n], &mut out, true) {
            Handled::Reply => {
                let _ = socket.send_to(&out, peer);
            }
            handled @ (Handled::Forward | Handled::Chase(_)) => {
                let request = Request {
                    packet: buf[..n].to_vec(),
                    reply: ReplyTo::Udp {
                        socket: socket.clone(),
                        peer,
                    },
                    chase: chase_of(handled, &out),
                };
                // A full queue drops the query; the client asks again.
                let _ = fwd.try_send(request);
            }
            Handled::Drop => {}
        }
    }
}

/// What the forwarder needs to follow an ExternalName outside the zone.
fn chase_of(handled: Handled, answer: &[u8]) -> Option<Chase> {
    match handled {
        Handled::Chase(target) => Some(Chase {
            target,
            answer: answer.to_vec(),
        }),
        _ => None,
    }
}

async fn serve_tcp(
    listener: tokio::net::TcpListener,
    published: Arc<Published>,
    fwd: mpsc::Sender<Request>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(stream, Handler::new(published.clone()), fwd.clone()));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "DNS: accepting");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next() => {}
        }
    }
}

async fn serve_conn(
    mut stream: tokio::net::TcpStream,
    mut handler: Handler,
    fwd: mpsc::Sender<Request>,
) {
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut packet).await.is_err() {
            return;
        }
        let answer = match handler.handle(&packet, &mut out, false) {
            Handled::Reply => std::mem::take(&mut out),
            handled @ (Handled::Forward | Handled::Chase(_)) => {
                let (tx, rx) = oneshot::channel();
                let request = Request {
                    packet,
                    reply: ReplyTo::Tcp(tx),
                    chase: chase_of(handled, &out),
                };
                if fwd.send(request).await.is_err() {
                    return;
                }
                match tokio::time::timeout(Duration::from_secs(5), rx).await {
                    Ok(Ok(answer)) => answer,
                    _ => return,
                }
            }
            Handled::Drop => return,
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&(answer.len() as u16).to_be_bytes());
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
        out = answer;
    }
}
