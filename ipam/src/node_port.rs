//! The NodePort allocator: ports opened on every node for Services of type
//! NodePort/LoadBalancer, out of `30000-32767` by default, with Kubernetes'
//! static band for requested ports and dynamic band for the rest.

use crate::banded::{BandedAllocator, BandedRange};
use crate::bitmap::static_band;
use crate::error::Error;
use crate::rebuild::RebuildIssue;
use crate::types::{NodePort, PortRange};

/// Hands out node ports from a [`PortRange`].
///
/// The lowest `min(max(16, size/32), 128)` ports (none if the range holds
/// fewer than 16) form the static band, kept for Services that ask for a
/// specific port: dynamic allocation uses it only once the upper band is full.
/// For the default range that is `30000-30085`.
pub type NodePortAllocator = BandedAllocator<PortRange>;

/// A port range as slots: slot `i` is port `first() + i`.
impl BandedRange for PortRange {
    type Value = NodePort;

    fn slot_count(&self) -> usize {
        self.size()
    }

    fn slot_of(&self, port: NodePort) -> Option<usize> {
        self.contains(port.0)
            .then(|| usize::from(port.0 - self.first()))
    }

    fn value_at(&self, slot: usize) -> NodePort {
        // slot < size, so first + slot <= last fits in u16
        NodePort(self.first() + slot as u16)
    }

    fn not_in_range(&self) -> Error {
        Error::PortNotInRange { range: *self }
    }

    fn taken(&self) -> Error {
        Error::PortAllocated
    }

    fn full(&self) -> Error {
        Error::PortRangeFull
    }
}

impl NodePortAllocator {
    /// An empty allocator over `range`.
    pub fn new(range: PortRange) -> Self {
        Self::with_band(range, static_band(range.size(), 32, 128))
    }

    /// An allocator over `range` holding `used` (the node ports recorded on
    /// Services), plus what was wrong with the list: repeated ports and
    /// ports outside the range, which are skipped.
    pub fn from_used(
        range: PortRange,
        used: impl IntoIterator<Item = NodePort>,
    ) -> (Self, Vec<RebuildIssue<NodePort>>) {
        Self::new(range).rebuilt(used)
    }

    /// The port range served.
    pub fn range(&self) -> PortRange {
        self.range
    }
}

impl Default for NodePortAllocator {
    /// An empty allocator over `30000-32767`.
    fn default() -> Self {
        Self::new(PortRange::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::BTreeSet;

    #[test]
    fn default_range_and_band() {
        let a = NodePortAllocator::default();
        assert_eq!(a.range().to_string(), "30000-32767");
        assert_eq!(a.size(), 2768);
        assert_eq!(a.static_band_size(), 86);
        assert!(a.in_static_band(NodePort(30085)));
        assert!(!a.in_static_band(NodePort(30086)));
        assert!(!a.in_static_band(NodePort(29999)));
        let small = |f, l| NodePortAllocator::new(PortRange::new(f, l).unwrap());
        assert_eq!(small(30000, 30014).static_band_size(), 0);
        assert_eq!(small(30000, 30015).static_band_size(), 16);
        assert_eq!(small(1, 65535).static_band_size(), 128);
    }

    #[test]
    fn exact_error_strings() {
        let mut a = NodePortAllocator::default();
        a.allocate_specific(NodePort(30080)).unwrap();
        assert_eq!(
            a.allocate_specific(NodePort(30080))
                .unwrap_err()
                .to_string(),
            "provided port is already allocated"
        );
        for bad in [29999, 32768, 80] {
            assert_eq!(
                a.allocate_specific(NodePort(bad)).unwrap_err().to_string(),
                "provided port is not in the valid range. The range of valid ports is 30000-32767"
            );
        }
        let mut one = NodePortAllocator::new("31000".parse().unwrap());
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(one.allocate(&mut rng), Ok(NodePort(31000)));
        assert_eq!(
            one.allocate(&mut rng).unwrap_err().to_string(),
            "range is full"
        );
    }

    #[test]
    fn dynamic_avoids_static_band_until_upper_full() {
        let mut a = NodePortAllocator::default();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..(2768 - 86) {
            let p = a.allocate(&mut rng).unwrap();
            assert!(p.0 >= 30086, "{p}");
        }
        for _ in 0..86 {
            let p = a.allocate(&mut rng).unwrap();
            assert!(p.0 < 30086, "{p}");
        }
        assert_eq!(a.allocate(&mut rng), Err(Error::PortRangeFull));
        assert!(a.release(NodePort(31000)));
        assert_eq!(a.allocate(&mut rng), Ok(NodePort(31000)));
    }

    #[test]
    fn release_and_rebuild() {
        let mut a = NodePortAllocator::default();
        a.allocate_specific(NodePort(30001)).unwrap();
        assert!(a.is_allocated(NodePort(30001)));
        assert!(a.release(NodePort(30001)));
        assert!(!a.release(NodePort(30001)));
        assert!(!a.release(NodePort(1)));
        let (b, issues) = NodePortAllocator::from_used(
            PortRange::DEFAULT,
            [30080, 31000, 30080, 8080].map(NodePort),
        );
        assert_eq!(b.used(), vec![NodePort(30080), NodePort(31000)]);
        assert_eq!(
            issues,
            vec![
                RebuildIssue::Duplicate(NodePort(30080)),
                RebuildIssue::OutOfRange(NodePort(8080)),
            ]
        );
        assert_eq!(b.free_count(), 2766);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Specific(u16),
        Release(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                3 => Just(Op::Allocate),
                2 => any::<u16>().prop_map(Op::Specific),
                1 => any::<usize>().prop_map(Op::Release),
            ],
            0..400,
        )
    }

    proptest! {
        #[test]
        fn random_ops_keep_invariants(
            first in 30000u16..30100,
            len in 1u16..300,
            seed in any::<u64>(),
            ops in ops(),
        ) {
            let range = PortRange::new(first, first + len - 1).unwrap();
            let mut a = NodePortAllocator::new(range);
            let mut rng = StdRng::seed_from_u64(seed);
            let upper_size = a.size() - a.static_band_size();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => {
                        let upper_used = model.iter().filter(|&&p| !a.in_static_band(p)).count();
                        match a.allocate(&mut rng) {
                            Ok(got) => {
                                prop_assert!(model.insert(got), "duplicate {}", got);
                                prop_assert!(range.contains(got.0));
                                if upper_used < upper_size {
                                    prop_assert!(!a.in_static_band(got), "{} in static band", got);
                                }
                            }
                            Err(e) => {
                                prop_assert_eq!(e, Error::PortRangeFull);
                                prop_assert_eq!(model.len(), a.size());
                            }
                        }
                    }
                    Op::Specific(n) => {
                        // mostly near the range, sometimes just outside it
                        let want = NodePort(first.saturating_sub(2) + n % (len + 4));
                        let res = a.allocate_specific(want);
                        if !range.contains(want.0) {
                            prop_assert_eq!(res, Err(Error::PortNotInRange { range }));
                        } else if model.contains(&want) {
                            prop_assert_eq!(res, Err(Error::PortAllocated));
                        } else {
                            prop_assert_eq!(res, Ok(()));
                            model.insert(want);
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
            let (b, issues) = NodePortAllocator::from_used(range, used.clone());
            prop_assert!(issues.is_empty());
            prop_assert_eq!(b.used(), used);
        }
    }
}
