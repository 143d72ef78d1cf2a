//! The parsed-once values at the crate's boundary: [`Cidr`], [`PodCidr`],
//! [`ClusterIp`], [`NodePort`] and [`PortRange`], plus the address/offset
//! arithmetic the allocators share.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::{Error, Result};

/// An IPv4 or IPv6 network. Host bits are cleared on construction, as Go's
/// `net.ParseCIDR` (and so Kubernetes) does, so `10.3.240.7/20` is
/// `10.3.240.0/20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(IpNet);

impl Cidr {
    /// The network of `addr` with `prefix_len` leading bits.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self> {
        IpNet::new(addr, prefix_len)
            .map(|n| Self(n.trunc()))
            .map_err(|_| Error::InvalidCidr(format!("{addr}/{prefix_len}")))
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> IpAddr {
        self.0.network()
    }

    /// The number of leading network bits.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// 32 for IPv4, 128 for IPv6.
    pub fn max_prefix_len(&self) -> u8 {
        self.0.max_prefix_len()
    }

    /// The number of host bits (`max_prefix_len - prefix_len`).
    pub fn host_bits(&self) -> u8 {
        self.max_prefix_len() - self.prefix_len()
    }

    /// Whether this is an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.0, IpNet::V4(_))
    }

    /// Whether `ip` lies inside this network (same family, any address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }

    /// Whether the two networks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.0.contains(&other.0) || other.0.contains(&self.0)
    }

    /// The `n`th address of the network counting the network address as 0,
    /// or `None` past its end.
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        (n <= self.last_offset()).then(|| self.addr_at(n))
    }

    /// The wrapped [`IpNet`].
    pub fn as_ipnet(&self) -> IpNet {
        self.0
    }

    /// The network address as an integer.
    pub(crate) fn base(&self) -> u128 {
        to_u128(self.network())
    }

    /// The offset of the last address (`2^host_bits - 1`).
    pub(crate) fn last_offset(&self) -> u128 {
        match self.host_bits() {
            128 => u128::MAX,
            bits => (1u128 << bits) - 1,
        }
    }

    /// The address at `offset` from the network address; `offset` must not
    /// exceed [`Self::last_offset`].
    pub(crate) fn addr_at(&self, offset: u128) -> IpAddr {
        from_u128(self.base() + offset, self.is_ipv4())
    }

    /// The offset of `ip` from the network address, if `ip` is inside.
    pub(crate) fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        self.contains(ip).then(|| to_u128(ip) - self.base())
    }
}

impl FromStr for Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.trim()
            .parse::<IpNet>()
            .map(|n| Self(n.trunc()))
            .map_err(|_| Error::InvalidCidr(s.to_owned()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<IpNet> for Cidr {
    fn from(net: IpNet) -> Self {
        Self(net.trunc())
    }
}

impl From<Cidr> for IpNet {
    fn from(cidr: Cidr) -> Self {
        cidr.0
    }
}

/// A node's slice of the cluster CIDR (`Node.spec.podCIDR`), e.g. `10.0.1.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodCidr(pub Cidr);

impl PodCidr {
    /// The slice as a plain [`Cidr`].
    pub fn cidr(&self) -> Cidr {
        self.0
    }
}

impl FromStr for PodCidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.parse().map(Self)
    }
}

impl fmt::Display for PodCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A Service's virtual IP (`spec.clusterIP`), e.g. `10.3.240.10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterIp(pub IpAddr);

impl FromStr for ClusterIp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.trim()
            .parse()
            .map(Self)
            .map_err(|_| Error::InvalidIp(s.to_owned()))
    }
}

impl fmt::Display for ClusterIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<IpAddr> for ClusterIp {
    fn from(ip: IpAddr) -> Self {
        Self(ip)
    }
}

/// A Service's node port (`spec.ports[].nodePort`), e.g. `30080`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePort(pub u16);

impl fmt::Display for NodePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u16> for NodePort {
    fn from(port: u16) -> Self {
        Self(port)
    }
}

/// An inclusive range of ports, written `30000-32767` (a single `30000` is a
/// range of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// Kubernetes' default NodePort range, `30000-32767`.
    pub const DEFAULT: PortRange = PortRange {
        first: 30000,
        last: 32767,
    };

    /// The ports `first..=last`; fails when `first > last`.
    pub fn new(first: u16, last: u16) -> Result<Self> {
        if first > last {
            return Err(Error::InvalidPortRange(format!("{first}-{last}")));
        }
        Ok(Self { first, last })
    }

    /// The lowest port.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The highest port.
    pub fn last(&self) -> u16 {
        self.last
    }

    /// How many ports the range holds.
    pub fn size(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Whether `port` lies inside the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for PortRange {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidPortRange(s.to_owned());
        let parse = |p: &str| p.trim().parse::<u16>().map_err(|_| bad());
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let p = parse(s)?;
                (p, p)
            }
        };
        Self::new(first, last).map_err(|_| bad())
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub(crate) fn from_u128(v: u128, ipv4: bool) -> IpAddr {
    if ipv4 {
        // Callers only pass offsets inside an IPv4 network, so this fits.
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_clears_host_bits() {
        let c: Cidr = "10.3.240.7/20".parse().unwrap();
        assert_eq!(c.to_string(), "10.3.240.0/20");
        assert_eq!(c.host_bits(), 12);
        assert!(c.is_ipv4());
        assert!(c.contains("10.3.255.255".parse().unwrap()));
        assert!(!c.contains("10.4.0.0".parse().unwrap()));
        assert_eq!(c.nth(10), Some("10.3.240.10".parse().unwrap()));
        assert_eq!(c.nth(4096), None);
        assert_eq!(c.offset_of("10.3.241.0".parse().unwrap()), Some(256));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert_eq!(
            "nope".parse::<Cidr>().unwrap_err().to_string(),
            "invalid CIDR address: nope"
        );
        let v6: Cidr = "fd00::/108".parse().unwrap();
        assert_eq!(v6.nth(1), Some("fd00::1".parse().unwrap()));
        let all: Cidr = "::/0".parse().unwrap();
        assert_eq!(all.last_offset(), u128::MAX);
    }

    #[test]
    fn overlaps_is_symmetric_and_family_aware() {
        let cluster: Cidr = "10.0.0.0/14".parse().unwrap();
        let svc: Cidr = "10.3.240.0/20".parse().unwrap();
        assert!(cluster.overlaps(&svc) && svc.overlaps(&cluster));
        let other: Cidr = "10.4.0.0/16".parse().unwrap();
        assert!(!cluster.overlaps(&other));
        let v6: Cidr = "::/0".parse().unwrap();
        assert!(!cluster.overlaps(&v6));
    }

    #[test]
    fn port_range_parses_and_prints() {
        let r: PortRange = "30000-32767".parse().unwrap();
        assert_eq!(r, PortRange::default());
        assert_eq!(r.size(), 2768);
        assert_eq!(r.to_string(), "30000-32767");
        assert_eq!("8080".parse::<PortRange>().unwrap().size(), 1);
        assert!("32767-30000".parse::<PortRange>().is_err());
        assert!("a-b".parse::<PortRange>().is_err());
        assert!("0-65536".parse::<PortRange>().is_err());
    }

    #[test]
    fn boundary_newtypes_parse_and_print() {
        let ip: ClusterIp = "10.3.240.10".parse().unwrap();
        assert_eq!(ip.to_string(), "10.3.240.10");
        assert!("10.3.240".parse::<ClusterIp>().is_err());
        let pc: PodCidr = "10.0.1.0/24".parse().unwrap();
        assert_eq!(pc.to_string(), "10.0.1.0/24");
        assert_eq!(NodePort(30080).to_string(), "30080");
    }
}
