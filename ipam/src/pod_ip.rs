//! Pod IPs inside one node's slice: the node bridge (`cbr0`) holds the
//! slice's first address (`10.0.1.1`), pods get the rest from `.2` upwards,
//! never the network or (IPv4) broadcast address.

use std::net::IpAddr;

use crate::bitmap::Bitmap;
use crate::error::{Error, Result};
use crate::rebuild::RebuildIssue;
use crate::types::PodCidr;

/// Only the first 2^16 addresses of a slice are used for pods, so an IPv6
/// `/64` slice costs an 8 KiB bitmap rather than an impossible one.
pub const MAX_POD_HOST_BITS: u8 = 16;

/// Hands out pod IPs in a node's [`PodCidr`], lowest free first, so the first
/// pod on node `10.0.1.0/24` gets `10.0.1.2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIpAllocator {
    cidr: PodCidr,
    // slot i is the address at offset i + 2 (after network and bridge)
    slots: Bitmap,
}

impl PodIpAllocator {
    /// An empty allocator over `cidr`; fails if it leaves no address for a
    /// pod (IPv4 `/31` and longer, IPv6 `/127` and longer).
    pub fn new(cidr: PodCidr) -> Result<Self> {
        let c = cidr.0;
        let bits = c.host_bits().min(MAX_POD_HOST_BITS);
        let window = 1usize << bits;
        // the broadcast address only falls inside the window if the whole
        // slice does
        let broadcast = usize::from(c.is_ipv4() && bits == c.host_bits());
        let size = window.saturating_sub(2 + broadcast);
        if size == 0 {
            return Err(Error::RangeTooSmall { cidr: c });
        }
        Ok(Self {
            cidr,
            slots: Bitmap::new(size),
        })
    }

    /// An allocator over `cidr` holding `used` (the IPs of the pods already
    /// on the node), plus what was wrong with the list: repeated IPs, the
    /// bridge address, and addresses outside the usable range, all skipped.
    pub fn from_used(
        cidr: PodCidr,
        used: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(Self, Vec<RebuildIssue<IpAddr>>)> {
        let mut alloc = Self::new(cidr)?;
        let mut issues = Vec::new();
        for ip in used {
            match alloc.occupy(ip) {
                Ok(true) => {}
                Ok(false) => issues.push(RebuildIssue::Duplicate(ip)),
                Err(Error::IpReserved { .. }) => issues.push(RebuildIssue::Reserved(ip)),
                Err(_) => issues.push(RebuildIssue::OutOfRange(ip)),
            }
        }
        Ok((alloc, issues))
    }

    /// The node's slice.
    pub fn cidr(&self) -> PodCidr {
        self.cidr
    }

    /// The bridge's address, the slice's first (`10.0.1.1`).
    pub fn bridge_address(&self) -> IpAddr {
        self.cidr.0.addr_at(1)
    }

    /// How many addresses pods can get.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Allocates the lowest free pod address.
    pub fn allocate(&mut self) -> Result<IpAddr> {
        let slot = self
            .slots
            .first_clear_in(0, self.size())
            .ok_or(Error::IpRangeFull)?;
        self.slots.set(slot);
        Ok(self.ip_of(slot))
    }

    /// Records `ip` (held by a pod found on the node) as in use; returns
    /// whether it was free before, so occupying twice is harmless.
    pub fn occupy(&mut self, ip: IpAddr) -> Result<bool> {
        if ip == self.bridge_address() {
            return Err(Error::IpReserved { ip });
        }
        let slot = self
            .slot_of(ip)
            .ok_or(Error::IpNotInRange { range: self.cidr.0 })?;
        Ok(self.slots.set(slot))
    }

    /// Frees `ip`; returns whether it was allocated.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        self.slot_of(ip).is_some_and(|s| self.slots.clear(s))
    }

    /// Whether `ip` is allocated to a pod.
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.slot_of(ip).is_some_and(|s| self.slots.get(s))
    }

    /// How many pod addresses are free.
    pub fn free_count(&self) -> usize {
        self.size() - self.slots.count_ones()
    }

    /// How many pod addresses are allocated.
    pub fn used_count(&self) -> usize {
        self.slots.count_ones()
    }

    /// The allocated addresses, ascending; feed them to
    /// [`from_used`](Self::from_used) to rebuild this allocator.
    pub fn used(&self) -> Vec<IpAddr> {
        self.slots.iter_ones().map(|s| self.ip_of(s)).collect()
    }

    fn ip_of(&self, slot: usize) -> IpAddr {
        self.cidr.0.addr_at(slot as u128 + 2)
    }

    fn slot_of(&self, ip: IpAddr) -> Option<usize> {
        let offset = self.cidr.0.offset_of(ip)?;
        let slot = usize::try_from(offset.checked_sub(2)?).ok()?;
        (slot < self.size()).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn alloc(cidr: &str) -> PodIpAllocator {
        PodIpAllocator::new(cidr.parse().unwrap()).unwrap()
    }

    #[test]
    fn article_addresses() {
        let mut a = alloc("10.0.1.0/24");
        assert_eq!(a.bridge_address(), ip("10.0.1.1"));
        assert_eq!(a.size(), 253);
        assert_eq!(a.allocate().unwrap(), ip("10.0.1.2"));
        assert_eq!(a.allocate().unwrap(), ip("10.0.1.3"));
        assert!(a.release(ip("10.0.1.2")));
        assert!(!a.release(ip("10.0.1.2")));
        assert_eq!(a.allocate().unwrap(), ip("10.0.1.2"));
        assert_eq!(a.allocate().unwrap(), ip("10.0.1.4"));
    }

    #[test]
    fn fills_up_without_network_bridge_or_broadcast() {
        let mut a = alloc("10.0.1.0/24");
        let mut got = Vec::new();
        while let Ok(p) = a.allocate() {
            got.push(p);
        }
        assert_eq!(got.len(), 253);
        assert_eq!(got.last(), Some(&ip("10.0.1.254")));
        assert_eq!(a.allocate().unwrap_err().to_string(), "range is full");
        assert_eq!(a.free_count(), 0);
    }

    #[test]
    fn occupy_errors() {
        let mut a = alloc("10.0.1.0/24");
        assert_eq!(a.occupy(ip("10.0.1.7")), Ok(true));
        assert_eq!(a.occupy(ip("10.0.1.7")), Ok(false));
        assert!(a.is_allocated(ip("10.0.1.7")));
        assert_eq!(
            a.occupy(ip("10.0.1.1")).unwrap_err().to_string(),
            "provided IP 10.0.1.1 is reserved for the node bridge"
        );
        for bad in ["10.0.1.0", "10.0.1.255", "10.0.2.9", "fd00::2"] {
            assert_eq!(
                a.occupy(ip(bad)).unwrap_err().to_string(),
                "provided IP is not in the valid range. The range of valid IPs is 10.0.1.0/24",
                "{bad}"
            );
        }
    }

    #[test]
    fn small_and_ipv6_slices() {
        assert_eq!(alloc("10.0.1.0/30").size(), 1);
        assert!(PodIpAllocator::new("10.0.1.0/31".parse().unwrap()).is_err());
        assert!(PodIpAllocator::new("fd00::/127".parse().unwrap()).is_err());
        let mut v6 = alloc("fd00:10:0:1::/64");
        assert_eq!(v6.size(), 65534);
        assert_eq!(v6.bridge_address(), ip("fd00:10:0:1::1"));
        assert_eq!(v6.allocate().unwrap(), ip("fd00:10:0:1::2"));
        assert_eq!(v6.occupy(ip("fd00:10:0:1::ffff")), Ok(true));
        assert!(v6.occupy(ip("fd00:10:0:1::1:0")).is_err());
        // an IPv4 slice wider than the window has no broadcast inside it
        assert_eq!(alloc("10.0.0.0/15").size(), 65534);
    }

    #[test]
    fn rebuild_reports_issues() {
        let used = ["10.0.1.3", "10.0.1.2", "10.0.1.3", "10.0.1.1", "10.0.1.255"].map(ip);
        let (mut a, issues) =
            PodIpAllocator::from_used("10.0.1.0/24".parse().unwrap(), used).unwrap();
        assert_eq!(a.used(), vec![ip("10.0.1.2"), ip("10.0.1.3")]);
        assert_eq!(
            issues,
            vec![
                RebuildIssue::Duplicate(ip("10.0.1.3")),
                RebuildIssue::Reserved(ip("10.0.1.1")),
                RebuildIssue::OutOfRange(ip("10.0.1.255")),
            ]
        );
        assert_eq!(a.allocate().unwrap(), ip("10.0.1.4"));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Occupy(u16),
        Release(usize),
    }

    proptest! {
        #[test]
        fn random_ops_keep_invariants(
            host_bits in 2u8..=9,
            v6 in any::<bool>(),
            ops in prop::collection::vec(prop_oneof![
                3 => Just(Op::Allocate),
                2 => any::<u16>().prop_map(Op::Occupy),
                1 => any::<usize>().prop_map(Op::Release),
            ], 0..400),
        ) {
            let cidr: PodCidr = if v6 {
                format!("fd00:10:0:1::/{}", 128 - host_bits)
            } else {
                format!("10.0.1.0/{}", 32 - host_bits)
            }.parse().unwrap();
            let mut a = PodIpAllocator::new(cidr).unwrap();
            let total = 1u128 << host_bits;
            let usable = |ip: IpAddr| {
                cidr.0.offset_of(ip).is_some_and(|o| o >= 2 && (v6 || o != total - 1))
            };
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => {
                        let lowest = (0..total)
                            .map(|o| cidr.0.addr_at(o))
                            .find(|&ip| usable(ip) && !model.contains(&ip));
                        match a.allocate() {
                            Ok(got) => {
                                prop_assert_eq!(Some(got), lowest, "not the lowest free");
                                prop_assert!(usable(got));
                                prop_assert!(model.insert(got), "duplicate {}", got);
                            }
                            Err(e) => {
                                prop_assert_eq!(lowest, None);
                                prop_assert_eq!(e, Error::IpRangeFull);
                            }
                        }
                    }
                    Op::Occupy(n) => {
                        let want = cidr.0.addr_at(u128::from(n) % total);
                        let res = a.occupy(want);
                        if usable(want) {
                            prop_assert_eq!(res, Ok(model.insert(want)));
                        } else {
                            prop_assert!(res.is_err());
                        }
                    }
                    Op::Release(i) => {
                        if let Some(&gone) = model.iter().nth(i % model.len().max(1)) {
                            prop_assert!(a.release(gone));
                            model.remove(&gone);
                        }
                    }
                }
                prop_assert_eq!(a.free_count(), a.size() - model.len());
            }
            let used = a.used();
            prop_assert_eq!(&used, &model.iter().copied().collect::<Vec<_>>());
            let (b, issues) = PodIpAllocator::from_used(cidr, used.clone()).unwrap();
            prop_assert!(issues.is_empty());
            prop_assert_eq!(b.used(), used);
        }
    }
}
