//! `ip knit` over netfilter netlink, without the `nft` CLI: map and set
//! elements written in one batch (one kernel transaction), and the table
//! read back (its outline, and lookups of chosen elements).
//!
//! Why: at 10,000 services the table holds some 120,000 elements. `nft`
//! spends about a second parsing them for a full sync, and for every
//! `delete element` it first reads the whole set back from the kernel
//! (10+ ms at that size), on top of a fork and exec per sync. The kernel
//! itself takes a fraction of that. Chains, rules and set declarations
//! still go through `nft` (they are few, and nft compiles rules); only
//! elements, which are plain bytes, are encoded here.
//!
//! [`Codec`] turns an element as the planner writes it (nft syntax, e.g.
//! `10.3.240.5 . tcp . 80` → `goto cluster-tcp-2`) into the bytes the
//! kernel stores for the set's declared type; [`encode`] builds the
//! batch; a [`Conn`] (a socket in the node's namespace, kept open) hands
//! it to the kernel and reads every acknowledgement, and answers the
//! drift check's questions ([`Conn::outline`], [`Conn::has_elements`])
//! in milliseconds where `nft`'s listing takes seconds.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use super::{SetKind, Shape};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_GETGEN: u16 = 16;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFPROTO_IPV4: u8 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
/// Set flags: anonymous (a rule's inline set), filled by the datapath.
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_EVAL: u32 = 0x20;
/// The table comment's tag in nft's user data.
const UDATA_TABLE_COMMENT: u8 = 0;

/// Verdict codes (`include/uapi/linux/netfilter.h`, `nf_tables.h`).
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;

/// An attribute's length is a u16: the element list of one message must
/// stay under 64 KiB, so elements are spread over several messages (all
/// in the same batch).
const MAX_LIST_BYTES: usize = 60_000;

/// One field of a concatenated key or value; the kernel keeps each in a
/// 4-byte register, zero-padded after the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// `ipv4_addr`, `ip saddr`, `ip daddr`: network order.
    Ipv4,
    /// `inet_proto`, `meta l4proto`: one byte.
    Proto,
    /// `inet_service`, `tcp dport` and the like: network order u16.
    Port,
    /// `numgen random mod N` (an endpoint slot): a host-order u32, as the
    /// numgen expression writes its register.
    Slot,
}

impl Field {
    fn parse_type(word: &str) -> Option<Field> {
        let word = word.trim();
        Some(match word {
            "ipv4_addr" | "ip saddr" | "ip daddr" => Field::Ipv4,
            "inet_proto" | "meta l4proto" => Field::Proto,
            "inet_service" => Field::Port,
            _ if word.ends_with(" dport") || word.ends_with(" sport") => Field::Port,
            _ if word.starts_with("numgen ") => Field::Slot,
            _ => return None,
        })
    }

    fn put(self, text: &str, out: &mut Vec<u8>) -> Result<(), String> {
        let bad = || format!("{text:?} is not a valid {self:?} field");
        match self {
            Field::Ipv4 => {
                let ip: Ipv4Addr = text.parse().map_err(|_| bad())?;
                out.extend_from_slice(&ip.octets());
            }
            Field::Proto => {
                let proto: u8 = match text {
                    "tcp" => 6,
                    "udp" => 17,
                    "sctp" => 132,
                    number => number.parse().map_err(|_| bad())?,
                };
                out.extend_from_slice(&[proto, 0, 0, 0]);
            }
            Field::Port => {
                let port: u16 = text.parse().map_err(|_| bad())?;
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Field::Slot => {
                let slot: u32 = text.parse().map_err(|_| bad())?;
                out.extend_from_slice(&slot.to_ne_bytes());
            }
        }
        Ok(())
    }
}

/// What a map's elements carry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DataType {
    /// A plain set: nothing.
    None,
    /// `verdict`: `goto X`, `jump X`, `drop`, `accept`.
    Verdict,
    /// A (concatenated) value, e.g. `ip daddr . tcp dport`.
    Value(Vec<Field>),
}

/// How the elements of one declared set are encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codec {
    key: Vec<Field>,
    data: DataType,
}

impl Codec {
    /// The codec for a set declared as `spec` (the text between the
    /// braces: `type ipv4_addr . inet_proto . inet_service : verdict;` or
    /// `typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport;`);
    /// `None` for a declaration this module does not know how to encode
    /// (its elements then go through `nft`).
    pub fn for_set(kind: SetKind, spec: &str) -> Option<Codec> {
        // Interval sets store ranges as element pairs: not written here.
        if spec.contains("interval") {
            return None;
        }
        let decl = spec.split(';').next()?.trim();
        let decl = decl
            .strip_prefix("typeof ")
            .or_else(|| decl.strip_prefix("type "))?;
        let (key, data) = match (kind, decl.split_once(" : ")) {
            (SetKind::Map, Some((key, data))) => (key, Some(data)),
            (SetKind::Set, None) => (decl, None),
            _ => return None,
        };
        let fields = |text: &str| -> Option<Vec<Field>> {
            text.split(" . ").map(Field::parse_type).collect()
        };
        let data = match data.map(str::trim) {
            None => DataType::None,
            Some("verdict") => DataType::Verdict,
            Some(value) => DataType::Value(fields(value)?),
        };
        Some(Codec {
            key: fields(key)?,
            data,
        })
    }

    /// Appends one element as a `NFTA_LIST_ELEM` attribute: its key, and
    /// its data when `data` is given.
    fn put_element(&self, key: &str, data: Option<&str>, out: &mut Vec<u8>) -> Result<(), String> {
        let elem = start(out, NFTA_LIST_ELEM | NLA_F_NESTED);
        let k = start(out, NFTA_SET_ELEM_KEY | NLA_F_NESTED);
        let v = start(out, NFTA_DATA_VALUE);
        concat(&self.key, key, out)?;
        finish(out, v);
        finish(out, k);
        match (&self.data, data) {
            (DataType::None, _) | (_, None) => {}
            (DataType::Value(fields), Some(text)) => {
                let d = start(out, NFTA_SET_ELEM_DATA | NLA_F_NESTED);
                let v = start(out, NFTA_DATA_VALUE);
                concat(fields, text, out)?;
                finish(out, v);
                finish(out, d);
            }
            (DataType::Verdict, Some(text)) => {
                let (code, chain) = verdict(text)?;
                let d = start(out, NFTA_SET_ELEM_DATA | NLA_F_NESTED);
                let v = start(out, NFTA_DATA_VERDICT | NLA_F_NESTED);
                put_attr(out, NFTA_VERDICT_CODE, &code.to_be_bytes());
                if let Some(chain) = chain {
                    put_str(out, NFTA_VERDICT_CHAIN, chain);
                }
                finish(out, v);
                finish(out, d);
            }
        }
        finish(out, elem);
        Ok(())
    }
}

/// A verdict's code and, for `jump`/`goto`, its chain.
fn verdict(text: &str) -> Result<(i32, Option<&str>), String> {
    let text = text.trim();
    match text.split_once(' ') {
        Some(("goto", chain)) => Ok((NFT_GOTO, Some(chain))),
        Some(("jump", chain)) => Ok((NFT_JUMP, Some(chain))),
        None if text == "drop" => Ok((NF_DROP, None)),
        None if text == "accept" => Ok((NF_ACCEPT, None)),
        _ => Err(format!("{text:?} is not a verdict")),
    }
}

fn concat(fields: &[Field], text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut parts = text.split(" . ");
    for field in fields {
        let part = parts
            .next()
            .ok_or_else(|| format!("{text:?} does not have {} fields", fields.len()))?;
        field.put(part.trim(), out)?;
    }
    if parts.next().is_some() {
        return Err(format!("{text:?} does not have {} fields", fields.len()));
    }
    Ok(())
}

/// The element writes of one set, in the order the batch applies them:
/// flush (every element gone), then deletes, then adds. Borrowed from
/// the plan: a full sync writes 120,000 elements, which need no copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetWrites<'a> {
    /// The set's name in `ip knit`.
    pub set: &'a str,
    /// Remove every element first.
    pub flush: bool,
    /// Keys to delete (nft syntax).
    pub deletes: Vec<&'a str>,
    /// Key and data to add (nft syntax; data `""` for a set).
    pub adds: Vec<(&'a str, &'a str)>,
}

/// A built batch: the bytes to send and what each acknowledged message
/// does. Sequence numbers count from 1 here; [`Conn::send`] moves them
/// past every number it used before, so that a late answer to an earlier
/// request is never taken for one of these.
#[derive(Debug)]
pub struct Batch {
    bytes: Vec<u8>,
    /// Sequence number → what that message did, for error reports.
    messages: HashMap<u32, String>,
    begin_seq: u32,
    /// Sequence numbers used, the batch's begin and end included.
    count: u32,
}

impl Batch {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Encodes `writes` to the table `table` (`knit`, family ip) as one
/// batch: every set's flush and deletes come before any add, so a key
/// that changes its data is deleted and re-added in the same
/// transaction. `codecs` gives each set's encoding.
pub fn encode(
    table: &str,
    writes: &[SetWrites<'_>],
    codecs: &HashMap<String, Codec>,
) -> Result<Batch, String> {
    let mut b = Builder::default();
    b.begin();
    let codec = |set: &str| {
        codecs
            .get(set)
            .ok_or_else(|| format!("no encoding known for set {set}"))
    };
    for w in writes.iter().filter(|w| w.flush) {
        b.message(
            NFT_MSG_DELSETELEM,
            table,
            w.set,
            &[],
            &format!("flush {}", w.set),
        );
    }
    for w in writes.iter().filter(|w| !w.deletes.is_empty()) {
        let keys = w.deletes.iter().map(|k| (*k, None));
        b.elements(NFT_MSG_DELSETELEM, table, w.set, codec(w.set)?, keys)?;
    }
    for w in writes.iter().filter(|w| !w.adds.is_empty()) {
        let elements = w.adds.iter().map(|(k, v)| (*k, Some(*v)));
        b.elements(NFT_MSG_NEWSETELEM, table, w.set, codec(w.set)?, elements)?;
    }
    b.end();
    Ok(Batch {
        bytes: b.out,
        messages: b.messages,
        begin_seq: b.begin_seq,
        count: b.seq,
    })
}

#[derive(Default)]
struct Builder {
    out: Vec<u8>,
    seq: u32,
    begin_seq: u32,
    messages: HashMap<u32, String>,
}

impl Builder {
    /// Starts a message; returns where its length goes.
    fn header(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) -> usize {
        self.seq = self.seq.wrapping_add(1);
        let at = self.out.len();
        self.out.extend_from_slice(&0u32.to_ne_bytes()); // length, patched
        self.out.extend_from_slice(&kind.to_ne_bytes());
        self.out.extend_from_slice(&flags.to_ne_bytes());
        self.out.extend_from_slice(&self.seq.to_ne_bytes());
        self.out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        self.out.push(family);
        self.out.push(0); // NFNETLINK_V0
        self.out.extend_from_slice(&res_id.to_be_bytes());
        at
    }

    fn close(&mut self, at: usize) {
        let len = (self.out.len() - at) as u32;
        self.out[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn begin(&mut self) {
        let at = self.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.begin_seq = self.seq;
        self.close(at);
    }

    fn end(&mut self) {
        let at = self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.close(at);
    }

    /// One message on `set`; `elements` empty with `DELSETELEM` flushes.
    fn message(&mut self, msg: u16, table: &str, set: &str, elements: &[u8], what: &str) {
        let flags = NLM_F_REQUEST
            | NLM_F_ACK
            | if msg == NFT_MSG_NEWSETELEM {
                NLM_F_CREATE
            } else {
                0
            };
        let at = self.header((NFNL_SUBSYS_NFTABLES << 8) | msg, flags, NFPROTO_IPV4, 0);
        self.messages.insert(self.seq, what.to_string());
        put_str(&mut self.out, NFTA_SET_ELEM_LIST_TABLE, table);
        put_str(&mut self.out, NFTA_SET_ELEM_LIST_SET, set);
        if !elements.is_empty() {
            put_attr(
                &mut self.out,
                NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED,
                elements,
            );
        }
        self.close(at);
    }

    /// As many messages as the elements need.
    fn elements<'a>(
        &mut self,
        msg: u16,
        table: &str,
        set: &str,
        codec: &Codec,
        elements: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<(), String> {
        let verb = if msg == NFT_MSG_NEWSETELEM {
            "add"
        } else {
            "delete"
        };
        let mut chunk = Vec::with_capacity(MAX_LIST_BYTES + 1024);
        let mut count = 0;
        for (key, data) in elements {
            codec.put_element(key, data, &mut chunk)?;
            count += 1;
            // An element is well under 1 KiB: the list stays below the
            // 64 KiB an attribute can hold.
            if chunk.len() >= MAX_LIST_BYTES {
                let what = format!("{verb} {count} elements of {set}");
                self.message(msg, table, set, &chunk, &what);
                chunk.clear();
                count = 0;
            }
        }
        if !chunk.is_empty() {
            let what = format!("{verb} {count} elements of {set}");
            self.message(msg, table, set, &chunk, &what);
        }
        Ok(())
    }
}

/// Starts an attribute whose payload follows; [`finish`] sets its length.
fn start(out: &mut Vec<u8>, kind: u16) -> usize {
    let at = out.len();
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    at
}

/// Sets the length of the attribute started at `at` and pads it.
fn finish(out: &mut Vec<u8>, at: usize) {
    let len = out.len() - at;
    out[at..at + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    out.resize(at + len.next_multiple_of(4), 0);
}

fn put_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let at = start(out, kind);
    out.extend_from_slice(payload);
    finish(out, at);
}

fn put_str(out: &mut Vec<u8>, kind: u16, text: &str) {
    let at = start(out, kind);
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    finish(out, at);
}

/// Why the kernel refused a batch.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The socket failed.
    #[error("netfilter netlink: {0}")]
    Io(#[from] io::Error),
    /// The kernel rejected a message (the whole batch was rolled back).
    #[error("the kernel refused to {what}: {error}")]
    Refused {
        /// What the message did.
        what: String,
        /// The errno it answered.
        error: io::Error,
    },
}

/// A netfilter netlink socket of one network namespace (the one of the
/// thread that opened it; it stays there whichever thread uses it).
///
/// Kept open on purpose: closing a socket right after a transaction that
/// deleted anything waits for the kernel to finish freeing it (an RCU
/// grace period, 10-20 ms here), which would double the cost of a small
/// sync.
#[derive(Debug)]
pub struct Conn {
    socket: rtnetlink::sys::Socket,
    /// The last sequence number used.
    seq: u32,
}

impl Conn {
    /// Opens one in the calling thread's network namespace.
    pub fn open() -> io::Result<Conn> {
        use nix::sys::socket::{setsockopt, sockopt};
        use rtnetlink::sys::{Socket, protocols::NETLINK_NETFILTER};

        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.set_rx_buf_sz(1 << 20)?;
        // Errors echo only the header, not a 60 KB element list.
        socket.set_cap_ack(true)?;
        // Never wait forever on a kernel that does not answer.
        let timeout = nix::sys::time::TimeVal::new(10, 0);
        setsockopt(&socket.as_fd(), sockopt::ReceiveTimeout, &timeout).map_err(io::Error::from)?;
        Ok(Conn { socket, seq: 0 })
    }

    fn send_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        use rtnetlink::sys::SocketAddr;
        self.socket.send_to(bytes, &SocketAddr::new(0, 0), 0)?;
        Ok(())
    }

    /// Calls `each(kind, seq, message)` for every message received until
    /// it returns `true`.
    fn receive(&self, mut each: impl FnMut(u16, u32, &[u8]) -> bool) -> io::Result<()> {
        loop {
            let (reply, _) = self.socket.recv_from_full()?;
            let mut at = 0;
            while at + 16 <= reply.len() {
                let len = u32_at(&reply, at) as usize;
                if len < 16 || at + len > reply.len() {
                    break;
                }
                let kind = u16::from_ne_bytes([reply[at + 4], reply[at + 5]]);
                let seq = u32_at(&reply, at + 8);
                if each(kind, seq, &reply[at..at + len]) {
                    return Ok(());
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    /// Sends one request: message `msg` with `flags`, its attributes
    /// written by `fill`. Returns its sequence number.
    fn send_request(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<u32> {
        let mut b = Builder {
            seq: self.seq,
            ..Builder::default()
        };
        let at = b.header((NFNL_SUBSYS_NFTABLES << 8) | msg, flags, family, 0);
        fill(&mut b.out);
        b.close(at);
        self.seq = b.seq;
        self.send_bytes(&b.out)?;
        Ok(b.seq)
    }

    /// The one message that answers a request.
    fn request(
        &mut self,
        msg: u16,
        family: u8,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<Vec<u8>> {
        let want = self.send_request(msg, NLM_F_REQUEST, family, fill)?;
        let mut answer = Vec::new();
        self.receive(|_, seq, message| {
            if seq != want {
                return false;
            }
            answer = message.to_vec();
            true
        })?;
        Ok(answer)
    }

    /// Hands `batch` to nf_tables and waits for its verdict: `Ok` once
    /// every message is acknowledged (the transaction committed), the
    /// first refusal otherwise (the kernel then applied none of it).
    pub fn send(&mut self, mut batch: Batch) -> Result<(), SendError> {
        use nix::sys::socket::{setsockopt, sockopt};

        if batch.is_empty() {
            return Ok(());
        }
        // A batch is one transaction only if it arrives in one message;
        // the default send buffer (~200 KiB) is far smaller than a full
        // table.
        let sndbuf = batch.bytes.len().saturating_add(4096);
        setsockopt(&self.socket.as_fd(), sockopt::SndBufForce, &sndbuf).map_err(io::Error::from)?;
        let base = self.seq;
        let bytes = &mut batch.bytes;
        let mut at = 0;
        while at + 16 <= bytes.len() {
            let len = u32_at(bytes, at) as usize;
            let seq = u32_at(bytes, at + 8).wrapping_add(base);
            bytes[at + 8..at + 12].copy_from_slice(&seq.to_ne_bytes());
            at += len;
        }
        self.seq = base.wrapping_add(batch.count);
        self.send_bytes(&batch.bytes)?;

        let mut pending = batch.messages.len();
        let mut outcome: Option<SendError> = None;
        self.receive(|kind, seq, message| {
            if kind != NLMSG_ERROR || message.len() < 20 {
                return false;
            }
            let errno = -(u32_at(message, 16) as i32);
            // This batch's numbers, counted from 1 as `encode` made them.
            let local = seq.wrapping_sub(base);
            if local == 0 || local > batch.count {
                return false;
            }
            if local == batch.begin_seq {
                // The commit itself failed: no other answer follows.
                outcome = Some(SendError::Refused {
                    what: "commit the batch".into(),
                    error: io::Error::from_raw_os_error(errno),
                });
                return true;
            }
            let Some(what) = batch.messages.get(&local) else {
                return false;
            };
            pending -= 1;
            if errno != 0 && outcome.is_none() {
                outcome = Some(SendError::Refused {
                    what: what.clone(),
                    error: io::Error::from_raw_os_error(errno),
                });
            }
            pending == 0
        })?;
        match outcome {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// The namespace's `ip` table `name` in outline (its comment, chains,
    /// rule counts and named sets), read back without `nft`, whose
    /// listing of a 10,000-service table takes seconds: `None` when there
    /// is no such table.
    pub fn outline(&mut self, name: &str) -> io::Result<Option<Outline>> {
        let table = self.request(NFT_MSG_GETTABLE, NFPROTO_IPV4, |out| {
            put_str(out, NFTA_TABLE_NAME, name);
        })?;
        if u16::from_ne_bytes([table[4], table[5]]) == NLMSG_ERROR {
            return match -(u32_at(&table, 16) as i32) {
                ENOENT => Ok(None),
                errno => Err(io::Error::from_raw_os_error(errno)),
            };
        }
        let mut outline = Outline {
            comment: attr(&table, NFTA_TABLE_USERDATA)
                .and_then(comment_of)
                .unwrap_or_default(),
            ..Outline::default()
        };
        let ours = |message: &[u8], at: u16| attr(message, at).map(c_str) == Some(name);
        for message in self.dump(NFT_MSG_GETCHAIN)? {
            if ours(&message, NFTA_CHAIN_TABLE)
                && let Some(chain) = attr(&message, NFTA_CHAIN_NAME)
            {
                outline
                    .shape
                    .chains
                    .entry(c_str(chain).to_string())
                    .or_insert(0);
            }
        }
        for message in self.dump(NFT_MSG_GETRULE)? {
            if ours(&message, NFTA_RULE_TABLE)
                && let Some(chain) = attr(&message, NFTA_RULE_CHAIN)
            {
                *outline
                    .shape
                    .chains
                    .entry(c_str(chain).to_string())
                    .or_insert(0) += 1;
            }
        }
        for message in self.dump(NFT_MSG_GETSET)? {
            let (Some(set), true) = (
                attr(&message, NFTA_SET_NAME),
                ours(&message, NFTA_SET_TABLE),
            ) else {
                continue;
            };
            let flags = attr(&message, NFTA_SET_FLAGS)
                .and_then(|f| f.get(..4))
                .map_or(0, |f| u32::from_be_bytes([f[0], f[1], f[2], f[3]]));
            if flags & NFT_SET_ANONYMOUS == 0 {
                let filled_by_datapath = flags & NFT_SET_EVAL != 0;
                outline
                    .shape
                    .sets
                    .insert(c_str(set).to_string(), filled_by_datapath);
            }
        }
        Ok(Some(outline))
    }

    /// Whether the set `set` of the `ip` table `table` holds every one of
    /// `keys` (one request, answered by the kernel element by element;
    /// a dump of a 100,000-element set would take it seconds).
    pub fn has_elements(
        &mut self,
        table: &str,
        set: &str,
        codec: &Codec,
        keys: &[&str],
    ) -> io::Result<bool> {
        let mut list = Vec::new();
        for key in keys {
            codec
                .put_element(key, None, &mut list)
                .map_err(io::Error::other)?;
        }
        let want = self.send_request(
            NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_ACK,
            NFPROTO_IPV4,
            |out| {
                put_str(out, NFTA_SET_ELEM_LIST_TABLE, table);
                put_str(out, NFTA_SET_ELEM_LIST_SET, set);
                put_attr(out, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &list);
            },
        )?;
        let mut answer = Ok(false);
        self.receive(|kind, seq, message| {
            if seq != want || kind != NLMSG_ERROR {
                return false;
            }
            answer = match -(u32_at(message, 16) as i32) {
                0 => Ok(true),
                ENOENT => Ok(false),
                errno => Err(io::Error::from_raw_os_error(errno)),
            };
            true
        })?;
        answer
    }

    /// Every message of a dump of `msg` (ip family); an error ends it.
    fn dump(&mut self, msg: u16) -> io::Result<Vec<Vec<u8>>> {
        let want = self.send_request(msg, NLM_F_REQUEST | NLM_F_DUMP, NFPROTO_IPV4, |_| {})?;
        let mut messages = Vec::new();
        let mut failed = None;
        self.receive(|kind, seq, message| {
            if seq != want {
                return false;
            }
            match kind {
                NLMSG_DONE => true,
                NLMSG_ERROR => {
                    let errno = -(u32_at(message, 16) as i32);
                    if errno != 0 {
                        failed = Some(io::Error::from_raw_os_error(errno));
                    }
                    true
                }
                _ => {
                    messages.push(message.to_vec());
                    false
                }
            }
        })?;
        match failed {
            Some(err) => Err(err),
            None => Ok(messages),
        }
    }

    /// The namespace's ruleset generation (`NFT_MSG_GETGEN`, what `nft`
    /// itself asks first): one round trip instead of a listing.
    pub fn generation(&mut self) -> io::Result<Option<u32>> {
        let reply = self.request(NFT_MSG_GETGEN, 0, |_| {})?;
        let u16_at = |i: usize| {
            reply
                .get(i..i + 2)
                .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        };
        if reply.len() < 20 || u16_at(4) == Some(NLMSG_ERROR) {
            return Ok(None);
        }
        // Attributes after the 16-byte header and the 4-byte nfgenmsg.
        let mut at = 20;
        while let (Some(len), Some(kind)) = (u16_at(at), u16_at(at + 2)) {
            let len = usize::from(len);
            if len < 4 {
                break;
            }
            if kind & 0x3fff == NFTA_GEN_ID && len >= 8 {
                let v = &reply[at + 4..at + 8];
                return Ok(Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])));
            }
            at += len.next_multiple_of(4);
        }
        Ok(None)
    }
}

/// `ENOENT`: no such table.
const ENOENT: i32 = 2;

/// A table as the kernel holds it, in outline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outline {
    /// The table's comment (`""` without one).
    pub comment: String,
    /// Its chains with their rule counts, its named sets.
    pub shape: Shape,
}

/// The attributes after a netfilter message's headers (or inside a
/// nested attribute's payload), as (type without flags, payload).
fn attrs(mut payload: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if payload.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([payload[0], payload[1]]));
        let kind = u16::from_ne_bytes([payload[2], payload[3]]) & 0x3fff;
        if len < 4 || len > payload.len() {
            return None;
        }
        let value = &payload[4..len];
        payload = &payload[len.next_multiple_of(4).min(payload.len())..];
        Some((kind, value))
    })
}

/// Attribute `kind` of a whole netfilter message.
fn attr(message: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(message.get(20..)?)
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v)
}

/// A NUL-terminated string attribute.
fn c_str(value: &[u8]) -> &str {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    std::str::from_utf8(&value[..end]).unwrap_or("")
}

/// The comment in a table's user data (nft's type-length-value list).
fn comment_of(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + len)?;
        if kind == UDATA_TABLE_COMMENT {
            return Some(c_str(value).to_string());
        }
        rest = &rest[2 + len..];
    }
    None
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An element's data, encoded.
    #[derive(Debug, PartialEq, Eq)]
    enum Data {
        None,
        Value(Vec<u8>),
        Verdict(i32, Option<String>),
    }

    /// One element's key and data on their own, to compare with what
    /// `nft --debug=netlink` shows.
    impl Codec {
        fn key(&self, text: &str) -> Result<Vec<u8>, String> {
            let mut out = Vec::new();
            concat(&self.key, text, &mut out)?;
            Ok(out)
        }

        fn data(&self, text: &str) -> Result<Data, String> {
            match &self.data {
                DataType::None => Ok(Data::None),
                DataType::Value(fields) => {
                    let mut out = Vec::new();
                    concat(fields, text, &mut out)?;
                    Ok(Data::Value(out))
                }
                DataType::Verdict => {
                    let (code, chain) = verdict(text)?;
                    Ok(Data::Verdict(code, chain.map(str::to_string)))
                }
            }
        }
    }

    #[test]
    fn keys_are_padded_registers_in_the_kernels_byte_order() {
        let dispatch = Codec::for_set(
            SetKind::Map,
            "type ipv4_addr . inet_proto . inet_service : verdict;",
        )
        .unwrap();
        // What `nft --debug=netlink` shows for the same element.
        assert_eq!(
            dispatch.key("10.3.0.5 . tcp . 80").unwrap(),
            [10, 3, 0, 5, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        assert_eq!(
            dispatch.data("goto cluster-tcp-9").unwrap(),
            Data::Verdict(NFT_GOTO, Some("cluster-tcp-9".into()))
        );
        assert_eq!(dispatch.data("drop").unwrap(), Data::Verdict(NF_DROP, None));
        assert!(dispatch.data("goto").is_err());

        let slots = Codec::for_set(
            SetKind::Map,
            "typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport;",
        )
        .unwrap();
        let mut key = vec![10, 3, 0, 5, 0, 80, 0, 0];
        key.extend_from_slice(&3u32.to_ne_bytes());
        assert_eq!(slots.key("10.3.0.5 . 80 . 3").unwrap(), key);
        assert_eq!(
            slots.data("10.9.9.9 . 8080").unwrap(),
            Data::Value(vec![10, 9, 9, 9, 0x1f, 0x90, 0, 0])
        );
        assert!(slots.key("10.3.0.5 . 80").is_err());
        assert!(slots.key("10.3.0.500 . 80 . 1").is_err());

        let pairs = Codec::for_set(SetKind::Set, "type ipv4_addr . ipv4_addr;").unwrap();
        assert_eq!(pairs.data("").unwrap(), Data::None);
        assert_eq!(
            pairs.key("10.0.1.2 . 10.0.1.2").unwrap(),
            [10, 0, 1, 2, 10, 0, 1, 2]
        );
        // Not ours to encode: left to nft.
        assert!(Codec::for_set(SetKind::Set, "type ipv4_addr; flags interval;").is_none());
        assert!(Codec::for_set(SetKind::Map, "type ether_addr : verdict;").is_none());
    }

    #[test]
    fn long_lists_are_split_into_messages_of_one_batch() {
        let spec = "type ipv4_addr . inet_proto . inet_service : verdict;";
        let codecs = HashMap::from([(
            "service-ips".to_string(),
            Codec::for_set(SetKind::Map, spec).unwrap(),
        )]);
        let keys: Vec<String> = (0..5000)
            .map(|i| format!("10.3.{}.{} . tcp . 80", i / 256, i % 256))
            .collect();
        let writes = [SetWrites {
            set: "service-ips",
            flush: true,
            deletes: vec!["10.3.0.1 . tcp . 80"],
            adds: keys
                .iter()
                .map(|k| (k.as_str(), "goto cluster-tcp-1"))
                .collect(),
        }];
        let batch = encode("knit", &writes, &codecs).unwrap();
        // Flush, one delete, and the adds in more than one message.
        assert!(batch.messages.len() >= 4, "{:?}", batch.messages.len());
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < batch.bytes.len() {
            let len = u32_at(&batch.bytes, at) as usize;
            assert!(len <= MAX_LIST_BYTES + 1024, "message of {len} bytes");
            kinds.push(u16::from_ne_bytes([
                batch.bytes[at + 4],
                batch.bytes[at + 5],
            ]));
            at += len;
        }
        assert_eq!(at, batch.bytes.len());
        assert_eq!(kinds.first(), Some(&NFNL_MSG_BATCH_BEGIN));
        assert_eq!(kinds.last(), Some(&NFNL_MSG_BATCH_END));
        let del = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM;
        assert_eq!(kinds[1], del);
        assert_eq!(kinds[2], del);
        assert!(
            kinds[3..kinds.len() - 1]
                .iter()
                .all(|k| *k == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM)
        );
        let missing = encode(
            "knit",
            &[SetWrites {
                set: "other",
                adds: vec![("1.2.3.4", "")],
                ..SetWrites::default()
            }],
            &codecs,
        );
        assert!(missing.is_err());
    }
}
