//! The answer logic, pure: Services and EndpointSlices in (as small
//! records), an [`Index`] of every name of the cluster zone out, and
//! [`Index::answer`] writing the response to one question, following the
//! Kubernetes DNS specification (schema 1.1.0):
//!
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of the ClusterIP; for a headless
//!   Service its ready endpoints' addresses (NXDOMAIN when none is ready,
//!   as kube-dns and CoreDNS answer and the specification now says);
//!   CNAME to `spec.externalName` for an ExternalName Service;
//! - `<host>.<svc>.<ns>.svc.<zone>` for each ready endpoint, `<host>`
//!   being its `hostname` or its address with dashes (`10-0-1-2`);
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV for named ports, aimed at
//!   the Service name (ClusterIP) or at each endpoint's name (headless),
//!   with the targets' addresses as additional records;
//! - PTR for ClusterIPs and endpoint addresses;
//! - `a-b-c-d.<ns>.pod.<zone>` A, synthesized from the name;
//! - `dns-version.<zone>` TXT `1.1.0`; the apex's SOA and NS.
//!
//! Names are matched case-insensitively; every TTL is 5 s. A name that
//! exists only as the parent of others (`<ns>.svc.<zone>`) exists: its
//! other types are NODATA (NOERROR, empty, the SOA in authority), while a
//! name under the zone that does not exist is NXDOMAIN. Names outside the
//! zone, and reverse names we hold nothing for, go to the upstream
//! resolvers ([`Outcome::Forward`]), as do the targets of ExternalNames
//! outside the zone ([`Outcome::Chase`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::wire::{
    self, CLASS_IN, NOERROR, NXDOMAIN, QNAME_AT, Query, REFUSED, Response, Section, Soa, TYPE_A,
    TYPE_AAAA, TYPE_ANY, TYPE_CNAME, TYPE_NS, TYPE_PTR, TYPE_SOA, TYPE_SRV, TYPE_TXT,
};

/// The TTL of every answer, the specification's recommended 5 s.
pub const TTL: u32 = 5;
/// The version of the Kubernetes DNS schema implemented.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// What a Service means to DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// A virtual IP (one per family).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the endpoints' addresses.
    Headless,
    /// An alias for another name.
    ExternalName(String),
}

/// A port, of a Service or an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRec {
    /// The port's name; unnamed ports have no SRV record.
    pub name: String,
    /// The port number (the Service's port, or the endpoints' port).
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// A Service, as DNS needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRec {
    /// Its kind.
    pub kind: ServiceKind,
    /// Its ports.
    pub ports: Vec<PortRec>,
    /// `spec.publishNotReadyAddresses`: endpoints count even when not ready.
    pub publish_not_ready: bool,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRec {
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Its hostname, set for pods whose `subdomain` names the Service.
    pub hostname: Option<String>,
    /// `conditions.ready` (absent means ready).
    pub ready: bool,
}

/// An EndpointSlice, as DNS needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceRec {
    /// The Service it belongs to (`kubernetes.io/service-name`).
    pub service: String,
    /// Its endpoints.
    pub endpoints: Vec<EndpointRec>,
    /// Its ports.
    pub ports: Vec<PortRec>,
}

/// Everything the answers come from, keyed by (namespace, name).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// Services.
    pub services: BTreeMap<(String, String), ServiceRec>,
    /// EndpointSlices, by their own name.
    pub slices: BTreeMap<(String, String), SliceRec>,
}

/// The (namespace, name) of an object.
pub fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A Service as DNS sees it; `None` for one that has nothing to say yet
/// (no spec).
pub fn service_rec(svc: &Service) -> Option<ServiceRec> {
    let spec = svc.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.clone().unwrap_or_default();
        ServiceKind::ExternalName(target.trim_end_matches('.').to_ascii_lowercase())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let ips: Vec<IpAddr> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().filter_map(|i| i.parse().ok()).collect(),
            _ => spec
                .cluster_ip
                .iter()
                .filter_map(|i| i.parse().ok())
                .collect(),
        };
        ServiceKind::ClusterIp(ips)
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| PortRec {
            name: p.name.clone().unwrap_or_default(),
            port: u16::try_from(p.port).unwrap_or(0),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        })
        .collect();
    Some(ServiceRec {
        kind,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    })
}

/// An EndpointSlice as DNS sees it; `None` without a Service label or for
/// FQDN slices.
pub fn slice_rec(slice: &EndpointSlice) -> Option<SliceRec> {
    if slice.address_type == "FQDN" {
        return None;
    }
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?
        .clone();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| EndpointRec {
            addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            hostname: e.hostname.clone().filter(|h| !h.is_empty()),
            ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .map(|p| PortRec {
            name: p.name.clone().unwrap_or_default(),
            port: p.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        })
        .collect();
    Some(SliceRec {
        service,
        endpoints,
        ports,
    })
}

/// FNV-1a: names are short and the keys come from the API, so a fast
/// hash beats SipHash's flooding resistance here.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// One SRV record's data.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Srv {
    port: u16,
    weight: u16,
    target: Box<str>,
}

/// Everything one name holds; all empty for a name that exists only as
/// a parent of others.
#[derive(Clone, Debug, Default)]
struct Entry {
    addrs: Vec<IpAddr>,
    srv: Vec<Srv>,
    ptr: Vec<Box<str>>,
    cname: Option<Box<str>>,
    txt: Option<Box<str>>,
}

/// What to do with a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The response is in the buffer.
    Answered,
    /// Not ours: ask the upstream resolvers.
    Forward,
    /// An ExternalName whose target lies outside the zone: the buffer
    /// holds the answer with the CNAME; the target's records of the same
    /// type, from upstream, belong after it (as CoreDNS adds them, since
    /// stub resolvers do not follow a CNAME themselves).
    Chase(Box<str>),
}

/// Every name of the cluster zone (and the reverse names of the cluster's
/// addresses), ready for lookups.
#[derive(Debug)]
pub struct Index {
    zone: String,
    dot_zone: Vec<u8>,
    zone_labels: usize,
    names: FnvMap<Box<[u8]>, Entry>,
    mname: String,
    rname: String,
    serial: u32,
    /// `.pod.<zone>`.
    pod_suffix: Vec<u8>,
}

impl Index {
    /// The index of `sources` for `zone`; `nameserver` is the cluster DNS
    /// address (the apex's `ns.dns.<zone>`), `serial` the SOA serial.
    pub fn build(zone: &str, nameserver: Ipv4Addr, sources: &Sources, serial: u32) -> Index {
        let zone = zone.trim_matches('.').to_ascii_lowercase();
        let mut names: FnvMap<Box<[u8]>, Entry> = FnvMap::default();
        put(&mut names, &format!("dns-version.{zone}")).txt = Some(SCHEMA_VERSION.into());
        let mname = format!("ns.dns.{zone}");
        put(&mut names, &mname).addrs.push(IpAddr::V4(nameserver));
        put(&mut names, &format!("pod.{zone}"));
        put(&mut names, &format!("svc.{zone}"));

        let mut slices_of: HashMap<(&str, &str), Vec<&SliceRec>> = HashMap::new();
        for ((ns, _), slice) in &sources.slices {
            slices_of
                .entry((ns.as_str(), slice.service.as_str()))
                .or_default()
                .push(slice);
        }
        for ((ns, name), svc) in &sources.services {
            let fqdn = format!("{name}.{ns}.svc.{zone}");
            match &svc.kind {
                ServiceKind::ExternalName(target) => {
                    put(&mut names, &fqdn).cname = Some(target.as_str().into());
                    continue;
                }
                ServiceKind::ClusterIp(ips) => {
                    put(&mut names, &fqdn).addrs.extend(ips.iter().copied());
                    for ip in ips {
                        put(&mut names, &wire::reverse_name(*ip))
                            .ptr
                            .push(fqdn.as_str().into());
                    }
                    for port in svc.ports.iter().filter(|p| !p.name.is_empty()) {
                        put(&mut names, &srv_name(port, &fqdn)).srv.push(Srv {
                            port: port.port,
                            weight: 0,
                            target: fqdn.as_str().into(),
                        });
                    }
                }
                ServiceKind::Headless => {}
            }
            let headless = svc.kind == ServiceKind::Headless;
            let slices = slices_of
                .get(&(ns.as_str(), name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            for slice in slices {
                for ep in &slice.endpoints {
                    if !(ep.ready || svc.publish_not_ready) {
                        continue;
                    }
                    for &addr in &ep.addresses {
                        let host = match &ep.hostname {
                            Some(h) => h.clone(),
                            None => wire::dashed(addr),
                        };
                        let host_fqdn = format!("{host}.{fqdn}");
                        put(&mut names, &host_fqdn).addrs.push(addr);
                        put(&mut names, &wire::reverse_name(addr))
                            .ptr
                            .push(host_fqdn.as_str().into());
                        if headless {
                            put(&mut names, &fqdn).addrs.push(addr);
                            for port in slice.ports.iter().filter(|p| !p.name.is_empty()) {
                                put(&mut names, &srv_name(port, &fqdn)).srv.push(Srv {
                                    port: port.port,
                                    weight: 0,
                                    target: host_fqdn.as_str().into(),
                                });
                            }
                        }
                    }
                }
            }
        }

        // Parents exist as empty non-terminals: NODATA, not NXDOMAIN.
        let dot_zone = format!(".{zone}").into_bytes();
        let parents: Vec<Box<[u8]>> = names
            .keys()
            .filter(|k| k.ends_with(&dot_zone))
            .flat_map(|k| {
                let mut out = Vec::new();
                let mut rest: &[u8] = k;
                while let Some(dot) = rest.iter().position(|&b| b == b'.') {
                    rest = &rest[dot + 1..];
                    if rest.len() < zone.len() {
                        break;
                    }
                    out.push(rest.to_vec().into_boxed_slice());
                }
                out
            })
            .collect();
        for parent in parents {
            names.entry(parent).or_default();
        }
        names.entry(zone.as_bytes().into()).or_default();

        for entry in names.values_mut() {
            entry.addrs.sort();
            entry.addrs.dedup();
            entry.ptr.sort();
            entry.ptr.dedup();
            entry
                .srv
                .sort_by(|a, b| (&a.target, a.port).cmp(&(&b.target, b.port)));
            entry.srv.dedup();
            let weight = (100 / entry.srv.len().max(1)).max(1) as u16;
            for srv in &mut entry.srv {
                srv.weight = weight;
            }
        }
        Index {
            zone_labels: zone.split('.').count(),
            pod_suffix: format!(".pod.{zone}").into_bytes(),
            rname: format!("hostmaster.{zone}"),
            dot_zone,
            zone,
            names,
            mname,
            serial,
        }
    }

    /// The zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// How many names the index holds (parents included).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the index holds no name (never: the apex is one).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn in_zone(&self, key: &[u8]) -> bool {
        key == self.zone.as_bytes() || key.ends_with(&self.dot_zone)
    }

    /// Writes the whole response to `q` (whose lowercased name is `key`,
    /// see [`wire::name_key`]) into `buf`, cut to `limit` bytes (TC), or
    /// says to forward it.
    pub fn answer(&self, q: &Query<'_>, key: &[u8], buf: &mut Vec<u8>, limit: usize) -> Outcome {
        let reverse = key.ends_with(b".in-addr.arpa") || key.ends_with(b".ip6.arpa");
        let zone = self.in_zone(key);
        if !zone && !reverse {
            return Outcome::Forward;
        }
        if q.qclass != CLASS_IN && q.qclass != TYPE_ANY {
            if !zone {
                return Outcome::Forward;
            }
            Response::new(buf, q, false, REFUSED).finish(q.edns, limit);
            return Outcome::Answered;
        }
        let entry = self.names.get(key);
        if entry.is_none() && !zone {
            return Outcome::Forward;
        }
        let mut r = Response::new(buf, q, true, NOERROR);
        let apex = self.apex_at(q);
        let soa = Soa {
            mname: &self.mname,
            rname: &self.rname,
            serial: self.serial,
            ttl: TTL,
            minimum: TTL,
        };
        let chase = entry
            .and_then(|e| e.cname.as_deref())
            .filter(|t| matches!(q.qtype, TYPE_A | TYPE_AAAA) && !self.in_zone(t.as_bytes()));
        let found = match entry {
            Some(entry) => self.records(&mut r, entry, q.qtype, key == self.zone.as_bytes(), apex),
            None => match self.pod_address(key) {
                Some(addr) => {
                    let wanted = matches!(
                        (q.qtype, addr),
                        (TYPE_A | TYPE_ANY, IpAddr::V4(_)) | (TYPE_AAAA | TYPE_ANY, IpAddr::V6(_))
                    );
                    if wanted {
                        r.address(Section::Answer, QNAME_AT, TTL, addr);
                    }
                    wanted
                }
                None => {
                    r.set_rcode(NXDOMAIN);
                    false
                }
            },
        };
        if !found && zone {
            r.soa(Section::Authority, apex, &soa);
        }
        r.finish(q.edns, limit);
        match chase {
            Some(target) => Outcome::Chase(target.into()),
            None => Outcome::Answered,
        }
    }

    /// Writes the records of `entry` of type `qtype`; whether any was.
    fn records(
        &self,
        r: &mut Response<'_>,
        e: &Entry,
        qtype: u16,
        is_apex: bool,
        apex: u16,
    ) -> bool {
        let before = r.len();
        if let Some(target) = &e.cname {
            let at = r.name_record(Section::Answer, QNAME_AT, TYPE_CNAME, TTL, target);
            if qtype != TYPE_CNAME
                && let Some(t) = self.names.get(target.as_bytes())
            {
                // An alias inside the zone: its addresses too, as a
                // resolver would fetch them next.
                for &addr in &t.addrs {
                    if family_wanted(qtype, addr) {
                        r.address(Section::Answer, at, TTL, addr);
                    }
                }
            }
            return true;
        }
        for &addr in &e.addrs {
            if family_wanted(qtype, addr) {
                r.address(Section::Answer, QNAME_AT, TTL, addr);
            }
        }
        if matches!(qtype, TYPE_PTR | TYPE_ANY) {
            for name in &e.ptr {
                r.name_record(Section::Answer, QNAME_AT, TYPE_PTR, TTL, name);
            }
        }
        if matches!(qtype, TYPE_TXT | TYPE_ANY)
            && let Some(txt) = &e.txt
        {
            r.txt(QNAME_AT, TTL, txt);
        }
        if is_apex && matches!(qtype, TYPE_SOA | TYPE_ANY) {
            let soa = Soa {
                mname: &self.mname,
                rname: &self.rname,
                serial: self.serial,
                ttl: TTL,
                minimum: TTL,
            };
            r.soa(Section::Answer, apex, &soa);
        }
        if is_apex && matches!(qtype, TYPE_NS | TYPE_ANY) {
            r.name_record(Section::Answer, QNAME_AT, TYPE_NS, TTL, &self.mname);
        }
        if matches!(qtype, TYPE_SRV | TYPE_ANY) && !e.srv.is_empty() {
            let mut targets: Vec<(u16, &Entry)> = Vec::with_capacity(e.srv.len());
            for srv in &e.srv {
                let at = r.srv(QNAME_AT, TTL, (0, srv.weight, srv.port), &srv.target);
                if let Some(t) = self.names.get(srv.target.as_bytes()) {
                    targets.push((at, t));
                }
            }
            for (at, t) in targets {
                for &addr in &t.addrs {
                    r.address(Section::Additional, at, TTL, addr);
                }
            }
        }
        r.len() > before
    }

    /// The question name's offset of the zone's apex (a suffix of the
    /// question for names in the zone).
    fn apex_at(&self, q: &Query<'_>) -> u16 {
        let mut count = 0usize;
        let mut at = 0;
        while q.qname[at] != 0 {
            count += 1;
            at += 1 + q.qname[at] as usize;
        }
        let skip = count.saturating_sub(self.zone_labels);
        let mut at = 0;
        for _ in 0..skip {
            at += 1 + q.qname[at] as usize;
        }
        QNAME_AT + at as u16
    }

    /// The address of a pod name, `a-b-c-d.<ns>.pod.<zone>`.
    fn pod_address(&self, key: &[u8]) -> Option<IpAddr> {
        let rest = key.strip_suffix(self.pod_suffix.as_slice())?;
        let dot = rest.iter().position(|&b| b == b'.')?;
        let (label, ns) = (&rest[..dot], &rest[dot + 1..]);
        if ns.is_empty() || ns.contains(&b'.') {
            return None;
        }
        wire::dashed_v4(label)
            .map(IpAddr::V4)
            .or_else(|| wire::dashed_v6(label).map(IpAddr::V6))
    }
}

fn put<'m>(names: &'m mut FnvMap<Box<[u8]>, Entry>, name: &str) -> &'m mut Entry {
    names
        .entry(name.to_ascii_lowercase().into_bytes().into_boxed_slice())
        .or_default()
}

fn family_wanted(qtype: u16, addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(_) => matches!(qtype, TYPE_A | TYPE_ANY),
        IpAddr::V6(_) => matches!(qtype, TYPE_AAAA | TYPE_ANY),
    }
}

/// `_<port>._<proto>.<fqdn>`, lowercase.
fn srv_name(port: &PortRec, fqdn: &str) -> String {
    format!(
        "_{}._{}.{fqdn}",
        port.name.to_ascii_lowercase(),
        port.protocol.to_ascii_lowercase()
    )
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
