//! The NodePort allocator: ports opened on every node for Services of type
//! NodePort/LoadBalancer, out of `30000-32767` by default, with Kubernetes'
//! static band for requested ports and dynamic band for the rest.

use rand::Rng;

use crate::bitmap::{Banded, static_band};
use crate::error::{Error, Result};
use crate::rebuild::RebuildIssue;
use crate::types::{NodePort, PortRange};

/// Hands out node ports from a [`PortRange`].
///
/// The lowest `min(max(16, size/32), 128)` ports (none if the range holds
/// fewer than 16) form the static band, kept for Services that ask for a
/// specific port: dynamic allocation uses it only once the upper band is full.
/// For the default range that is `30000-30085`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePortAllocator {
    range: PortRange,
    // slot i is port range.first() + i
    slots: Banded,
}

impl NodePortAllocator {
    /// An empty allocator over `range`.
    pub fn new(range: PortRange) -> Self {
        let size = range.size();
        Self {
            range,
            slots: Banded::new(size, static_band(size, 32, 128)),
        }
    }

    /// An allocator over `range` holding `used` (the node ports recorded on
    /// Services), plus what was wrong with the list: repeated ports and
    /// ports outside the range, which are skipped.
    pub fn from_used(
        range: PortRange,
        used: impl IntoIterator<Item = NodePort>,
    ) -> (Self, Vec<RebuildIssue<NodePort>>) {
        let mut alloc = Self::new(range);
        let mut issues = Vec::new();
        for port in used {
            match alloc.allocate_specific(port) {
                Ok(()) => {}
                Err(Error::PortAllocated) => issues.push(RebuildIssue::Duplicate(port)),
                Err(_) => issues.push(RebuildIssue::OutOfRange(port)),
            }
        }
        (alloc, issues)
    }

    /// The port range served.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// How many ports the range holds.
    pub fn size(&self) -> usize {
        self.slots.size()
    }

    /// How many of the lowest ports form the static band.
    pub fn static_band_size(&self) -> usize {
        self.slots.band()
    }

    /// Allocates a free port: from the upper band if it has room (random
    /// start, then scan), else from the static band.
    pub fn allocate(&mut self, rng: &mut impl Rng) -> Result<NodePort> {
        let slot = self.slots.allocate(rng).ok_or(Error::PortRangeFull)?;
        Ok(self.port_of(slot))
    }

    /// Allocates `port`, which may be any free port of the range.
    pub fn allocate_specific(&mut self, port: NodePort) -> Result<()> {
        let slot = self
            .slot_of(port)
            .ok_or(Error::PortNotInRange { range: self.range })?;
        if self.slots.take(slot) {
            Ok(())
        } else {
            Err(Error::PortAllocated)
        }
    }

    /// Frees `port`; returns whether it was allocated. Releasing a free or
    /// out-of-range port is a no-op.
    pub fn release(&mut self, port: NodePort) -> bool {
        self.slot_of(port).is_some_and(|s| self.slots.release(s))
    }

    /// Whether `port` is allocated.
    pub fn is_allocated(&self, port: NodePort) -> bool {
        self.slot_of(port).is_some_and(|s| self.slots.is_set(s))
    }

    /// Whether `port` lies in the static band.
    pub fn in_static_band(&self, port: NodePort) -> bool {
        self.slot_of(port).is_some_and(|s| s < self.slots.band())
    }

    /// How many ports are free.
    pub fn free_count(&self) -> usize {
        self.slots.free_count()
    }

    /// How many ports are allocated.
    pub fn used_count(&self) -> usize {
        self.slots.used_count()
    }

    /// The allocated ports, ascending; feed them to
    /// [`from_used`](Self::from_used) to rebuild this allocator.
    pub fn used(&self) -> Vec<NodePort> {
        self.slots.iter_used().map(|s| self.port_of(s)).collect()
    }

    fn port_of(&self, slot: usize) -> NodePort {
        // slot < size, so first + slot <= last fits in u16
        NodePort(self.range.first() + slot as u16)
    }

    fn slot_of(&self, port: NodePort) -> Option<usize> {
        self.range
            .contains(port.0)
            .then(|| usize::from(port.0 - self.range.first()))
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
