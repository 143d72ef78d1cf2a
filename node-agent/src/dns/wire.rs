//! The DNS wire format (RFC 1035, EDNS0 from RFC 6891), only as much as a
//! server needs: reading a query's header, question and OPT record,
//! writing answers into a reused buffer, cutting a UDP answer that does
//! not fit (TC), and walking a forwarded response's records to age their
//! TTLs. Nothing here allocates except the output buffer's growth.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Record types the server knows.
pub const TYPE_A: u16 = 1;
/// `NS`.
pub const TYPE_NS: u16 = 2;
/// `CNAME`.
pub const TYPE_CNAME: u16 = 5;
/// `SOA`.
pub const TYPE_SOA: u16 = 6;
/// `PTR`.
pub const TYPE_PTR: u16 = 12;
/// `TXT`.
pub const TYPE_TXT: u16 = 16;
/// `AAAA`.
pub const TYPE_AAAA: u16 = 28;
/// `SRV`.
pub const TYPE_SRV: u16 = 33;
/// `OPT`, the EDNS0 pseudo-record.
pub const TYPE_OPT: u16 = 41;
/// `ANY` (`*`).
pub const TYPE_ANY: u16 = 255;
/// The Internet class.
pub const CLASS_IN: u16 = 1;

/// Response codes.
pub const NOERROR: u8 = 0;
/// The query could not be read.
pub const FORMERR: u8 = 1;
/// The server failed (no upstream answered).
pub const SERVFAIL: u8 = 2;
/// The name does not exist.
pub const NXDOMAIN: u8 = 3;
/// The opcode is not supported.
pub const NOTIMP: u8 = 4;
/// The server will not answer this.
pub const REFUSED: u8 = 5;

/// The largest answer without EDNS, and the least a client may announce.
pub const MIN_UDP: usize = 512;
/// The UDP payload size we announce, the DNS flag day 2020 value that
/// avoids IP fragmentation.
pub const OUR_UDP: u16 = 1232;
/// The header's length.
pub const HEADER: usize = 12;

/// The EDNS0 options of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// The requestor's UDP payload size.
    pub payload: u16,
    /// The EDNS version (only 0 exists).
    pub version: u8,
    /// The DNSSEC OK bit, echoed back.
    pub dnssec_ok: bool,
}

/// A query as read from the wire; borrows the packet.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The whole packet.
    pub packet: &'a [u8],
    /// The transaction id.
    pub id: u16,
    /// The header's flag word (opcode, RD, ...).
    pub flags: u16,
    /// Where the question ends (after QCLASS).
    pub question_end: usize,
    /// The question name, in wire form, as the client spelled it.
    pub qname: &'a [u8],
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// The OPT record, if the query has one.
    pub edns: Option<Edns>,
}

impl Query<'_> {
    /// The opcode (0 is QUERY).
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    /// Whether recursion was desired.
    pub fn rd(&self) -> bool {
        self.flags & 0x0100 != 0
    }

    /// The most a UDP answer may hold for this query.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => usize::from(e.payload).max(MIN_UDP),
            None => MIN_UDP,
        }
    }
}

/// Why a packet is not a query we can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Too short for a header, or a response: dropped silently.
    Drop,
    /// A header we can answer with FORMERR (id and flags known).
    FormErr {
        /// The transaction id.
        id: u16,
        /// The flag word.
        flags: u16,
    },
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Reads a query: one question, no compression in it, and an optional OPT
/// record among the additional records.
pub fn parse_query(p: &[u8]) -> Result<Query<'_>, Malformed> {
    if p.len() < HEADER {
        return Err(Malformed::Drop);
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let flags = u16::from_be_bytes([p[2], p[3]]);
    if flags & 0x8000 != 0 {
        // A response sent to a server: never answer it (reflection loops).
        return Err(Malformed::Drop);
    }
    let bad = Malformed::FormErr { id, flags };
    let qd = u16::from_be_bytes([p[4], p[5]]);
    let an = u16::from_be_bytes([p[6], p[7]]);
    let ns = u16::from_be_bytes([p[8], p[9]]);
    let ar = u16::from_be_bytes([p[10], p[11]]);
    if qd != 1 {
        return Err(bad);
    }
    let mut at = HEADER;
    loop {
        let len = *p.get(at).ok_or(bad)? as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return Err(bad);
        }
        at += 1 + len;
    }
    if at - HEADER > 255 {
        return Err(bad);
    }
    let qname = &p[HEADER..at];
    let qtype = be16(p, at).ok_or(bad)?;
    let qclass = be16(p, at + 2).ok_or(bad)?;
    let question_end = at + 4;
    let mut edns = None;
    if ar > 0 {
        let mut at = question_end;
        for _ in 0..(u32::from(an) + u32::from(ns)) {
            at = skip_record(p, at).ok_or(bad)?;
        }
        for _ in 0..ar {
            let name_end = skip_name(p, at).ok_or(bad)?;
            let rtype = be16(p, name_end).ok_or(bad)?;
            if rtype == TYPE_OPT {
                let payload = be16(p, name_end + 2).ok_or(bad)?;
                let version = *p.get(name_end + 5).ok_or(bad)?;
                let do_word = be16(p, name_end + 6).ok_or(bad)?;
                if edns.is_some() {
                    return Err(bad);
                }
                edns = Some(Edns {
                    payload,
                    version,
                    dnssec_ok: do_word & 0x8000 != 0,
                });
            }
            at = skip_record(p, at).ok_or(bad)?;
        }
    }
    Ok(Query {
        packet: p,
        id,
        flags,
        question_end,
        qname,
        qtype,
        qclass,
        edns,
    })
}

/// The offset after the (possibly compressed) name at `at`.
pub fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *p.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => {
                p.get(at + 1)?;
                return Some(at + 2);
            }
            l if l <= 63 => at += 1 + l as usize,
            _ => return None,
        }
    }
}

/// The offset after the resource record at `at`.
fn skip_record(p: &[u8], at: usize) -> Option<usize> {
    let at = skip_name(p, at)?;
    let rdlen = be16(p, at + 8)? as usize;
    let end = at + 10 + rdlen;
    (end <= p.len()).then_some(end)
}

/// The question name as a lookup key: labels lowercased (ASCII) and
/// joined by dots, no trailing dot; the root is empty. A dot inside a
/// label becomes a NUL so that it can never match a real name.
pub fn name_key(wire: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut at = 0;
    while let Some(&len) = wire.get(at) {
        if len == 0 {
            break;
        }
        if !out.is_empty() {
            out.push(b'.');
        }
        let label = &wire[at + 1..(at + 1 + len as usize).min(wire.len())];
        out.extend(label.iter().map(|&b| match b {
            b'.' => 0,
            b => b.to_ascii_lowercase(),
        }));
        at += 1 + len as usize;
    }
}

/// Builds a response in a reused buffer: header and question copied from
/// the query, then records in section order, counted as they go.
pub struct Response<'b> {
    buf: &'b mut Vec<u8>,
    question_len: usize,
    counts: [u16; 3],
    section: usize,
}

/// The sections after the question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// Answers.
    Answer = 0,
    /// Authority (the SOA of a negative answer).
    Authority = 1,
    /// Additional (SRV targets' addresses).
    Additional = 2,
}

/// The question name's offset, for compression pointers.
pub const QNAME_AT: u16 = HEADER as u16;

impl<'b> Response<'b> {
    /// Starts the response to `q`: id, opcode and RD copied, QR and RA
    /// set, AA as given, rcode, and the question as the client sent it.
    pub fn new(buf: &'b mut Vec<u8>, q: &Query<'_>, aa: bool, rcode: u8) -> Self {
        buf.clear();
        let flags = 0x8000 | (q.flags & 0x7900) | 0x0080 | if aa { 0x0400 } else { 0 };
        let flags = flags | u16::from(rcode & 0xf);
        buf.extend_from_slice(&q.id.to_be_bytes());
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(&q.packet[HEADER..q.question_end]);
        Response {
            question_len: q.question_end - HEADER,
            buf,
            counts: [0; 3],
            section: 0,
        }
    }

    /// The bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is written (never: the header is).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Sets TC: the answer is more than this transport carries.
    pub fn set_tc(&mut self) {
        self.buf[2] |= 0x02;
    }

    /// Sets the rcode.
    pub fn set_rcode(&mut self, rcode: u8) {
        self.buf[3] = (self.buf[3] & 0xf0) | (rcode & 0xf);
    }

    /// Starts a record of `rtype` in `section` owned by the name at
    /// `owner` (a compression pointer), with TTL `ttl`; returns where its
    /// RDLENGTH is, for [`Self::end_record`].
    fn begin(&mut self, section: Section, owner: u16, rtype: u16, ttl: u32) -> usize {
        debug_assert!(section as usize >= self.section, "sections in order");
        self.section = section as usize;
        self.counts[section as usize] += 1;
        self.buf.extend_from_slice(&(0xc000 | owner).to_be_bytes());
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        at
    }

    fn end_record(&mut self, rdlen_at: usize) {
        let len = (self.buf.len() - rdlen_at - 2) as u16;
        self.buf[rdlen_at..rdlen_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// An A or AAAA record.
    pub fn address(&mut self, section: Section, owner: u16, ttl: u32, addr: IpAddr) {
        match addr {
            IpAddr::V4(v4) => {
                let at = self.begin(section, owner, TYPE_A, ttl);
                self.buf.extend_from_slice(&v4.octets());
                self.end_record(at);
            }
            IpAddr::V6(v6) => {
                let at = self.begin(section, owner, TYPE_AAAA, ttl);
                self.buf.extend_from_slice(&v6.octets());
                self.end_record(at);
            }
        }
    }

    /// A record whose data is one domain name (CNAME, PTR, NS); returns
    /// the offset of that name, for later pointers to it.
    pub fn name_record(
        &mut self,
        section: Section,
        owner: u16,
        rtype: u16,
        ttl: u32,
        name: &str,
    ) -> u16 {
        let at = self.begin(section, owner, rtype, ttl);
        let name_at = self.buf.len() as u16;
        write_name(self.buf, name);
        self.end_record(at);
        name_at
    }

    /// An SRV record; returns the offset of its target name.
    pub fn srv(&mut self, owner: u16, ttl: u32, srv: (u16, u16, u16), target: &str) -> u16 {
        let at = self.begin(Section::Answer, owner, TYPE_SRV, ttl);
        let (priority, weight, port) = srv;
        self.buf.extend_from_slice(&priority.to_be_bytes());
        self.buf.extend_from_slice(&weight.to_be_bytes());
        self.buf.extend_from_slice(&port.to_be_bytes());
        let name_at = self.buf.len() as u16;
        write_name(self.buf, target);
        self.end_record(at);
        name_at
    }

    /// A TXT record of one string.
    pub fn txt(&mut self, owner: u16, ttl: u32, text: &str) {
        let at = self.begin(Section::Answer, owner, TYPE_TXT, ttl);
        let bytes = &text.as_bytes()[..text.len().min(255)];
        self.buf.push(bytes.len() as u8);
        self.buf.extend_from_slice(bytes);
        self.end_record(at);
    }

    /// An SOA record owned by the name at `owner`.
    pub fn soa(&mut self, section: Section, owner: u16, soa: &Soa<'_>) {
        let at = self.begin(section, owner, TYPE_SOA, soa.ttl);
        write_name(self.buf, soa.mname);
        write_name(self.buf, soa.rname);
        for v in [soa.serial, 7200, 1800, 86400, soa.minimum] {
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
        self.end_record(at);
    }

    /// Ends the response: writes the counts and, for an EDNS query, our
    /// OPT record; if the whole does not fit in `limit` bytes, keeps only
    /// header and question (and OPT) and sets TC, as RFC 2181 asks
    /// rather than a partial RRset.
    pub fn finish(self, edns: Option<Edns>, limit: usize) {
        let opt_len = if edns.is_some() { 11 } else { 0 };
        let mut counts = self.counts;
        if self.buf.len() + opt_len > limit {
            self.buf.truncate(HEADER + self.question_len);
            counts = [0; 3];
            self.buf[2] |= 0x02;
        }
        self.buf[6..8].copy_from_slice(&counts[0].to_be_bytes());
        self.buf[8..10].copy_from_slice(&counts[1].to_be_bytes());
        let mut ar = counts[2];
        if let Some(e) = edns {
            ar += 1;
            // Root name, OPT, our payload size, extended rcode 0, version
            // 0, the DO bit echoed, no options.
            self.buf.push(0);
            self.buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
            self.buf.extend_from_slice(&OUR_UDP.to_be_bytes());
            self.buf.extend_from_slice(&[0, 0]);
            let flags: u16 = if e.dnssec_ok { 0x8000 } else { 0 };
            self.buf.extend_from_slice(&flags.to_be_bytes());
            self.buf.extend_from_slice(&[0, 0]);
        }
        self.buf[10..12].copy_from_slice(&ar.to_be_bytes());
    }
}

/// The zone's SOA, for negative answers.
#[derive(Clone, Copy, Debug)]
pub struct Soa<'a> {
    /// The primary server's name.
    pub mname: &'a str,
    /// The responsible mailbox, as a name.
    pub rname: &'a str,
    /// Changes when the records do.
    pub serial: u32,
    /// The record's TTL.
    pub ttl: u32,
    /// The negative-caching TTL.
    pub minimum: u32,
}

/// Writes a dotted name (no trailing dot needed) in wire form.
pub fn write_name(buf: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(63)];
        buf.push(label.len() as u8);
        buf.extend_from_slice(label);
    }
    buf.push(0);
}

/// A header-only answer (FORMERR, NOTIMP, SERVFAIL, ...) to a packet whose
/// id and flags are known; echoes the question when it is readable.
pub fn error_response(buf: &mut Vec<u8>, id: u16, flags: u16, rcode: u8) {
    buf.clear();
    let flags = 0x8000 | (flags & 0x7900) | 0x0080 | u16::from(rcode & 0xf);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&flags.to_be_bytes());
    buf.extend_from_slice(&[0; 8]);
}

/// Subtracts `elapsed` seconds from the TTL of every record of a response
/// (not the OPT's, which holds flags) and reports the smallest TTL seen
/// before that, or `None` if the packet cannot be walked.
pub fn age_ttls(p: &mut [u8], elapsed: u32) -> Option<u32> {
    if p.len() < HEADER {
        return None;
    }
    let qd = u16::from_be_bytes([p[4], p[5]]);
    let records: u32 = [6, 8, 10]
        .iter()
        .map(|&i| u32::from(u16::from_be_bytes([p[i], p[i + 1]])))
        .sum();
    let mut at = HEADER;
    for _ in 0..qd {
        at = skip_name(p, at)? + 4;
    }
    let mut least: Option<u32> = None;
    for _ in 0..records {
        let name_end = skip_name(p, at)?;
        let rtype = be16(p, name_end)?;
        let ttl_at = name_end + 4;
        let next = skip_record(p, at)?;
        if rtype != TYPE_OPT {
            let ttl = u32::from_be_bytes(p.get(ttl_at..ttl_at + 4)?.try_into().ok()?);
            least = Some(least.map_or(ttl, |l| l.min(ttl)));
            p[ttl_at..ttl_at + 4].copy_from_slice(&ttl.saturating_sub(elapsed).to_be_bytes());
        }
        at = next;
    }
    Some(least.unwrap_or(0))
}

/// The `in-addr.arpa` / `ip6.arpa` name of an address (lowercase, no
/// trailing dot), the key of its PTR records.
pub fn reverse_name(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0xf, byte >> 4] {
                    out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    out.push('.');
                }
            }
            out.push_str("ip6.arpa");
            out
        }
    }
}

/// An IPv4 address from a pod name's first label, `10-0-1-2`.
pub fn dashed_v4(label: &[u8]) -> Option<Ipv4Addr> {
    let text = std::str::from_utf8(label).ok()?;
    let mut parts = text.split('-');
    let mut octets = [0u8; 4];
    for o in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// An address written with dashes, as endpoint names without a hostname
/// are (`10-0-1-2`; IPv6 `fd00--1`).
pub fn dashed(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// An IPv6 address from a dashed label, as [`dashed`] writes it.
pub fn dashed_v6(label: &[u8]) -> Option<Ipv6Addr> {
    let text = std::str::from_utf8(label).ok()?;
    text.replace('-', ":").parse().ok()
}

/// A query for `name` of `qtype` with RD set, with an OPT announcing
/// `payload` if given (DO set when `dnssec_ok`).
pub fn build_query(
    id: u16,
    name: &str,
    qtype: u16,
    payload: Option<u16>,
    dnssec_ok: bool,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(name.len() + 30);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0x0100u16.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(payload.is_some())]);
    write_name(&mut p, name);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(size) = payload {
        p.push(0);
        p.extend_from_slice(&TYPE_OPT.to_be_bytes());
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    p
}

/// What tests send: [`build_query`] with DO set.
#[cfg(test)]
pub(crate) fn query(id: u16, name: &str, qtype: u16, payload: Option<u16>) -> Vec<u8> {
    build_query(id, name, qtype, payload, true)
}

/// Writes the name at `at` of `p` uncompressed into `out`; the offset
/// after the name where it starts (not where pointers lead).
fn expand_name(p: &[u8], mut at: usize, out: &mut Vec<u8>) -> Option<usize> {
    let mut end = None;
    let mut hops = 0;
    let start = out.len();
    loop {
        let len = *p.get(at)?;
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(at + 2);
            hops += 1;
            if hops > 32 {
                return None;
            }
            at = (usize::from(len & 0x3f) << 8) | usize::from(*p.get(at + 1)?);
            continue;
        }
        if len > 63 {
            return None;
        }
        out.extend_from_slice(p.get(at..at + 1 + len as usize)?);
        if out.len() - start > 255 {
            return None;
        }
        if len == 0 {
            return Some(end.unwrap_or(at + 1));
        }
        at += 1 + len as usize;
    }
}

/// The answer section of a response, rewritten without compression so it
/// can be placed in another packet: its rcode, how many records, and
/// their bytes. Only the types an address lookup brings (A, AAAA, CNAME)
/// are kept.
pub fn answer_records(p: &[u8]) -> Option<(u8, u16, Vec<u8>)> {
    if p.len() < HEADER {
        return None;
    }
    let qd = be16(p, 4)?;
    let an = be16(p, 6)?;
    let mut at = HEADER;
    for _ in 0..qd {
        at = skip_name(p, at)? + 4;
    }
    let mut out = Vec::new();
    let mut kept = 0u16;
    for _ in 0..an {
        let mark = out.len();
        let name_end = expand_name(p, at, &mut out)?;
        let rtype = be16(p, name_end)?;
        let rdlen = usize::from(be16(p, name_end + 8)?);
        let rdata = name_end + 10;
        let next = rdata + rdlen;
        if next > p.len() {
            return None;
        }
        match rtype {
            TYPE_A | TYPE_AAAA => {
                out.extend_from_slice(&p[name_end..next]);
                kept += 1;
            }
            TYPE_CNAME => {
                out.extend_from_slice(&p[name_end..name_end + 8]);
                let len_at = out.len();
                out.extend_from_slice(&[0, 0]);
                expand_name(p, rdata, &mut out)?;
                let len = (out.len() - len_at - 2) as u16;
                out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
                kept += 1;
            }
            _ => out.truncate(mark),
        }
        at = next;
    }
    Some((p[3] & 0xf, kept, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_query_with_edns() {
        let p = query(7, "Web.Default.svc.cluster.local", TYPE_A, Some(4096));
        let q = parse_query(&p).unwrap();
        assert_eq!(
            (q.id, q.qtype, q.qclass, q.rd()),
            (7, TYPE_A, CLASS_IN, true)
        );
        assert_eq!(
            q.edns,
            Some(Edns {
                payload: 4096,
                version: 0,
                dnssec_ok: true
            })
        );
        let mut key = Vec::new();
        name_key(q.qname, &mut key);
        assert_eq!(key, b"web.default.svc.cluster.local");
        assert_eq!(q.udp_limit(), 4096);
    }

    #[test]
    fn refuses_what_is_not_one_question() {
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), Malformed::Drop);
        let mut p = query(9, "a", TYPE_A, None);
        p[5] = 2;
        assert!(matches!(
            parse_query(&p),
            Err(Malformed::FormErr { id: 9, .. })
        ));
        let mut p = query(9, "a", TYPE_A, None);
        p[2] |= 0x80;
        assert_eq!(parse_query(&p).unwrap_err(), Malformed::Drop);
        let p = query(9, "a", TYPE_A, None);
        assert!(matches!(
            parse_query(&p[..p.len() - 1]),
            Err(Malformed::FormErr { .. })
        ));
    }

    #[test]
    fn truncates_what_does_not_fit() {
        let p = query(1, "x.example", TYPE_A, None);
        let q = parse_query(&p).unwrap();
        let mut buf = Vec::new();
        let mut r = Response::new(&mut buf, &q, true, NOERROR);
        for i in 0..40u8 {
            r.address(
                Section::Answer,
                QNAME_AT,
                5,
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)),
            );
        }
        r.finish(None, 512);
        assert_eq!(buf.len(), p.len());
        assert_eq!(buf[2] & 0x02, 0x02, "TC");
        assert_eq!(&buf[6..12], &[0; 6]);
    }

    #[test]
    fn ages_every_ttl_but_the_opts() {
        let p = query(1, "x.example", TYPE_A, Some(1232));
        let q = parse_query(&p).unwrap();
        let mut buf = Vec::new();
        let mut r = Response::new(&mut buf, &q, false, NOERROR);
        r.address(
            Section::Answer,
            QNAME_AT,
            300,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        );
        r.address(
            Section::Answer,
            QNAME_AT,
            60,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        );
        r.finish(q.edns, 1232);
        assert_eq!(age_ttls(&mut buf, 10), Some(60));
        assert_eq!(age_ttls(&mut buf, 0), Some(50));
        let again = parse_query(&p).unwrap();
        assert!(again.edns.is_some());
    }

    #[test]
    fn dashed_addresses_both_ways() {
        assert_eq!(dashed_v4(b"10-0-1-2"), Some(Ipv4Addr::new(10, 0, 1, 2)));
        assert_eq!(dashed_v4(b"10-0-1"), None);
        assert_eq!(dashed_v4(b"10-0-1-2-3"), None);
        assert_eq!(dashed_v4(b"10-0-1-256"), None);
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(dashed(v6), "fd00--1");
        assert_eq!(dashed_v6(b"fd00--1"), Some("fd00::1".parse().unwrap()));
        assert_eq!(
            reverse_name(IpAddr::V4(Ipv4Addr::new(10, 3, 240, 10))),
            "10.240.3.10.in-addr.arpa"
        );
    }
}

/// A response read back into text, for tests: rcode, flags and each
/// section's records as `(owner, type, ttl, data)`.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub id: u16,
    pub flags: u16,
    pub rcode: u8,
    pub answers: Vec<(String, u16, u32, String)>,
    pub authority: Vec<(String, u16, u32, String)>,
    pub additional: Vec<(String, u16, u32, String)>,
}

#[cfg(test)]
fn read_name(p: &[u8], mut at: usize) -> String {
    let mut labels = Vec::new();
    let mut hops = 0;
    loop {
        let len = p[at];
        if len == 0 {
            break;
        }
        if len & 0xc0 == 0xc0 {
            at = (usize::from(len & 0x3f) << 8) | usize::from(p[at + 1]);
            hops += 1;
            assert!(hops < 20, "pointer loop");
            continue;
        }
        labels.push(String::from_utf8_lossy(&p[at + 1..at + 1 + len as usize]).into_owned());
        at += 1 + len as usize;
    }
    labels.join(".")
}

#[cfg(test)]
pub(crate) fn decode(p: &[u8]) -> Decoded {
    let n = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    let mut d = Decoded {
        id: n(0),
        flags: n(2),
        rcode: p[3] & 0xf,
        ..Decoded::default()
    };
    let mut at = HEADER;
    for _ in 0..n(4) {
        at = skip_name(p, at).unwrap() + 4;
    }
    for (section, count) in [(0, n(6)), (1, n(8)), (2, n(10))] {
        for _ in 0..count {
            let owner = read_name(p, at);
            let name_end = skip_name(p, at).unwrap();
            let rtype = n(name_end);
            let ttl = u32::from_be_bytes(p[name_end + 4..name_end + 8].try_into().unwrap());
            let rd = name_end + 10;
            let rdlen = n(name_end + 8) as usize;
            let data = match rtype {
                TYPE_A => Ipv4Addr::from(<[u8; 4]>::try_from(&p[rd..rd + 4]).unwrap()).to_string(),
                TYPE_AAAA => {
                    Ipv6Addr::from(<[u8; 16]>::try_from(&p[rd..rd + 16]).unwrap()).to_string()
                }
                TYPE_CNAME | TYPE_PTR | TYPE_NS => read_name(p, rd),
                TYPE_SRV => format!(
                    "{} {} {} {}",
                    n(rd),
                    n(rd + 2),
                    n(rd + 4),
                    read_name(p, rd + 6)
                ),
                TYPE_TXT => String::from_utf8_lossy(&p[rd + 1..rd + rdlen]).into_owned(),
                TYPE_SOA => read_name(p, rd),
                TYPE_OPT => format!("payload {}", n(name_end + 2)),
                _ => format!("{rdlen} bytes"),
            };
            let rec = (owner, rtype, ttl, data);
            match section {
                0 => d.answers.push(rec),
                1 => d.authority.push(rec),
                _ => d.additional.push(rec),
            }
            at = rd + rdlen;
        }
    }
    d
}
