//! The ClusterIP allocator: virtual IPs for Services out of the service CIDR
//! (`10.3.240.0/20` by default), with Kubernetes' static band for requested
//! IPs and dynamic band for the rest.

use crate::banded::{BandedAllocator, BandedRange};
use crate::bitmap::static_band;
use crate::error::{Error, Result};
use crate::rebuild::RebuildIssue;
use crate::types::{Cidr, ClusterIp};

/// The most host bits a service CIDR may have (2^20 addresses), as
/// kube-apiserver enforces (`/12` for IPv4, `/108` for IPv6).
pub const MAX_SERVICE_HOST_BITS: u8 = 20;

/// Hands out Service IPs from a CIDR.
///
/// Usable addresses exclude the network address and, for IPv4, the broadcast
/// address. The lowest `min(max(16, n/16), 256)` usable addresses, where `n`
/// is the CIDR's address count (none if it is below 16, all of them if the
/// band would not fit), form the static band: dynamic allocation only
/// uses it once the upper band is full, so users asking for a specific IP
/// (the `kubernetes` service at [`first_address`](Self::first_address), DNS
/// at [`nth_address(10)`](Self::nth_address)) rarely collide with it.
pub type ClusterIpAllocator = BandedAllocator<Cidr>;

/// A service CIDR as a range of ClusterIPs: slot `i` is the address at
/// offset `i + 1` from the network address.
impl BandedRange for Cidr {
    type Value = ClusterIp;

    fn slot_count(&self) -> usize {
        let total = 1usize << self.host_bits();
        let reserved = if self.is_ipv4() { 2 } else { 1 };
        total.saturating_sub(reserved)
    }

    fn slot_of(&self, ip: ClusterIp) -> Option<usize> {
        let offset = self.offset_of(ip.0)?;
        let slot = usize::try_from(offset.checked_sub(1)?).ok()?;
        (slot < self.slot_count()).then_some(slot)
    }

    fn value_at(&self, slot: usize) -> ClusterIp {
        ClusterIp(self.addr_at(slot as u128 + 1))
    }

    fn not_in_range(&self) -> Error {
        Error::IpNotInRange { range: *self }
    }

    fn taken(&self) -> Error {
        Error::IpAllocated
    }

    fn full(&self) -> Error {
        Error::IpRangeFull
    }
}

impl ClusterIpAllocator {
    /// An empty allocator over `cidr`.
    pub fn new(cidr: Cidr) -> Result<Self> {
        if cidr.host_bits() > MAX_SERVICE_HOST_BITS {
            return Err(Error::RangeTooLarge {
                cidr,
                max_bits: MAX_SERVICE_HOST_BITS,
            });
        }
        if cidr.slot_count() == 0 {
            return Err(Error::RangeTooSmall { cidr });
        }
        // Like Kubernetes, the band is sized from the CIDR's address count
        // (4096 for a /20 gives 256) and can cover a tiny range whole.
        let total = 1usize << cidr.host_bits();
        Ok(Self::with_band(cidr, static_band(total, 16, 256)))
    }

    /// An allocator over `cidr` holding `used` (the IPs recorded on
    /// Services), plus what was wrong with the list: repeated IPs and IPs
    /// outside the usable range, which are skipped.
    pub fn from_used(
        cidr: Cidr,
        used: impl IntoIterator<Item = ClusterIp>,
    ) -> Result<(Self, Vec<RebuildIssue<ClusterIp>>)> {
        Ok(Self::new(cidr)?.rebuilt(used))
    }

    /// The service CIDR.
    pub fn cidr(&self) -> Cidr {
        self.range
    }

    /// The first usable address, `10.3.240.1`: the `kubernetes` service's.
    pub fn first_address(&self) -> ClusterIp {
        self.range.value_at(0)
    }

    /// The `n`th usable address counting from 1 (`nth_address(10)` is the
    /// cluster DNS address, `10.3.240.10`).
    pub fn nth_address(&self, n: usize) -> Result<ClusterIp> {
        if n == 0 || n > self.size() {
            return Err(self.range.not_in_range());
        }
        Ok(self.range.value_at(n - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    fn ip(s: &str) -> ClusterIp {
        s.parse().unwrap()
    }

    fn alloc(cidr: &str) -> ClusterIpAllocator {
        ClusterIpAllocator::new(cidr.parse().unwrap()).unwrap()
    }

    #[test]
    fn article_addresses() {
        let a = alloc("10.3.240.0/20");
        assert_eq!(a.size(), 4094);
        assert_eq!(a.first_address(), ip("10.3.240.1"));
        assert_eq!(a.nth_address(10).unwrap(), ip("10.3.240.10"));
        assert_eq!(a.nth_address(4094).unwrap(), ip("10.3.255.254"));
        assert!(a.nth_address(0).is_err());
        assert!(a.nth_address(4095).is_err());
    }

    #[test]
    fn static_band_arithmetic() {
        let cases = [
            ("10.3.240.0/20", 4094, 256),
            ("10.0.0.0/24", 254, 16),
            ("10.0.0.0/28", 14, 14),
            ("10.0.0.0/29", 6, 0),
            ("10.0.0.0/27", 30, 16),
            ("10.0.0.0/16", 65534, 256),
            ("fd00::/108", 1_048_575, 256),
            ("fd00::/120", 255, 16),
        ];
        for (cidr, size, band) in cases {
            let a = alloc(cidr);
            assert_eq!((a.size(), a.static_band_size()), (size, band), "{cidr}");
        }
        let a = alloc("10.3.240.0/20");
        assert!(a.in_static_band(ip("10.3.240.1")));
        assert!(a.in_static_band(ip("10.3.241.0")));
        assert!(!a.in_static_band(ip("10.3.241.1")));
    }

    #[test]
    fn exact_error_strings() {
        let mut a = alloc("10.3.240.0/20");
        a.allocate_specific(ip("10.3.240.10")).unwrap();
        assert_eq!(
            a.allocate_specific(ip("10.3.240.10"))
                .unwrap_err()
                .to_string(),
            "provided IP is already allocated"
        );
        let out = "provided IP is not in the valid range. The range of valid IPs is 10.3.240.0/20";
        for bad in ["10.4.0.1", "10.3.240.0", "10.3.255.255", "fd00::1"] {
            assert_eq!(
                a.allocate_specific(ip(bad)).unwrap_err().to_string(),
                out,
                "{bad}"
            );
        }
        let mut tiny = alloc("10.0.0.0/30");
        let mut rng = StdRng::seed_from_u64(1);
        tiny.allocate(&mut rng).unwrap();
        tiny.allocate(&mut rng).unwrap();
        assert_eq!(
            tiny.allocate(&mut rng).unwrap_err().to_string(),
            "range is full"
        );
    }

    #[test]
    fn rejects_unusable_cidrs() {
        for cidr in ["10.0.0.0/31", "10.0.0.1/32", "fd00::1/128"] {
            assert!(matches!(
                ClusterIpAllocator::new(cidr.parse().unwrap()),
                Err(Error::RangeTooSmall { .. })
            ));
        }
        for cidr in ["10.0.0.0/11", "fd00::/64"] {
            assert!(matches!(
                ClusterIpAllocator::new(cidr.parse().unwrap()),
                Err(Error::RangeTooLarge { max_bits: 20, .. })
            ));
        }
        // IPv6 has no broadcast: its last address is usable.
        let mut v6 = alloc("fd00::/126");
        assert_eq!(v6.size(), 3);
        v6.allocate_specific(ip("fd00::3")).unwrap();
    }

    #[test]
    fn dynamic_prefers_upper_band_then_static() {
        let mut a = alloc("10.0.0.0/24");
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..(254 - 16) {
            let got = a.allocate(&mut rng).unwrap();
            assert!(!a.in_static_band(got), "{got}");
        }
        for _ in 0..16 {
            let got = a.allocate(&mut rng).unwrap();
            assert!(a.in_static_band(got), "{got}");
        }
        assert_eq!(a.free_count(), 0);
        assert_eq!(a.allocate(&mut rng), Err(Error::IpRangeFull));
    }

    #[test]
    fn seeded_rng_is_reproducible() {
        let run = |seed| {
            let mut a = alloc("10.3.240.0/20");
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| a.allocate(&mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn release_and_is_allocated() {
        let mut a = alloc("10.3.240.0/20");
        let k = a.first_address();
        a.allocate_specific(k).unwrap();
        assert!(a.is_allocated(k));
        assert_eq!((a.used_count(), a.free_count()), (1, 4093));
        assert!(a.release(k));
        assert!(!a.release(k));
        assert!(!a.release(ip("192.168.0.1")));
        assert!(!a.is_allocated(k));
        assert_eq!(a.free_count(), 4094);
    }

    #[test]
    fn rebuild_reports_duplicates_and_out_of_range() {
        let used = [
            "10.3.240.1",
            "10.3.240.10",
            "10.3.240.10",
            "10.9.0.1",
            "10.3.255.255",
        ]
        .map(ip);
        let (a, issues) =
            ClusterIpAllocator::from_used("10.3.240.0/20".parse().unwrap(), used).unwrap();
        assert_eq!(a.used(), vec![ip("10.3.240.1"), ip("10.3.240.10")]);
        assert_eq!(
            issues,
            vec![
                RebuildIssue::Duplicate(ip("10.3.240.10")),
                RebuildIssue::OutOfRange(ip("10.9.0.1")),
                RebuildIssue::OutOfRange(ip("10.3.255.255")),
            ]
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Specific(u32),
        Release(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                3 => Just(Op::Allocate),
                2 => any::<u32>().prop_map(Op::Specific),
                1 => any::<usize>().prop_map(Op::Release),
            ],
            0..400,
        )
    }

    proptest! {
        #[test]
        fn random_ops_keep_invariants(
            host_bits in 2u8..=9,
            v6 in any::<bool>(),
            seed in any::<u64>(),
            ops in ops(),
        ) {
            let cidr: Cidr = if v6 {
                Cidr::new("fd00:10:96::".parse().unwrap(), 128 - host_bits).unwrap()
            } else {
                Cidr::new("10.3.240.0".parse().unwrap(), 32 - host_bits).unwrap()
            };
            let mut a = ClusterIpAllocator::new(cidr).unwrap();
            let mut rng = StdRng::seed_from_u64(seed);
            let total = 1u128 << host_bits;
            let usable = |ip: IpAddr| {
                let off = cidr.offset_of(ip);
                off.is_some_and(|o| o != 0 && (v6 || o != total - 1))
            };
            let upper_size = a.size() - a.static_band_size();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => {
                        let upper_used = model.iter().filter(|&&i| !a.in_static_band(i)).count();
                        match a.allocate(&mut rng) {
                            Ok(got) => {
                                prop_assert!(model.insert(got), "duplicate {}", got);
                                prop_assert!(usable(got.0), "{} not usable", got);
                                if upper_used < upper_size {
                                    prop_assert!(!a.in_static_band(got), "{} in static band", got);
                                }
                            }
                            Err(e) => {
                                prop_assert_eq!(e, Error::IpRangeFull);
                                prop_assert_eq!(model.len(), a.size());
                            }
                        }
                    }
                    Op::Specific(n) => {
                        let want = ClusterIp(cidr.addr_at(u128::from(n) % total));
                        let res = a.allocate_specific(want);
                        if !usable(want.0) {
                            prop_assert_eq!(res, Err(Error::IpNotInRange { range: cidr }));
                        } else if model.contains(&want) {
                            prop_assert_eq!(res, Err(Error::IpAllocated));
                        } else {
                            prop_assert_eq!(res, Ok(()));
                            model.insert(want);
                        }
                    }
                    Op::Release(i) => {
                        if let Some(&gone) = model.iter().nth(i % model.len().max(1)) {
                            prop_assert!(a.release(gone));
                            prop_assert!(!a.release(gone));
                            model.remove(&gone);
                        }
                    }
                }
                prop_assert_eq!(a.free_count(), a.size() - model.len());
            }
            let used = a.used();
            prop_assert_eq!(&used, &model.iter().copied().collect::<Vec<_>>());
            let (b, issues) = ClusterIpAllocator::from_used(cidr, used.clone()).unwrap();
            prop_assert!(issues.is_empty());
            prop_assert_eq!(b.used(), used);
            prop_assert_eq!(b.free_count(), a.free_count());
        }
    }
}
