//! The node CIDR allocator: splits the cluster CIDR (`10.0.0.0/14`) into
//! per-node slices (`/24`) for `Node.spec.podCIDR`, never handing out a slice
//! that overlaps the service CIDR.

use crate::bitmap::Bitmap;
use crate::error::{Error, Result};
use crate::rebuild::RebuildIssue;
use crate::types::{Cidr, PodCidr};

/// The most slices a cluster CIDR may be split into is 2^16, as
/// kube-controller-manager enforces (node mask at most 16 bits longer than
/// the cluster CIDR's).
pub const MAX_SLICE_BITS: u8 = 16;

/// How to split the cluster CIDR. [`Default`] is the article's: cluster
/// `10.0.0.0/14`, node mask `/24`, service CIDR `10.3.240.0/20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCidrConfig {
    /// The cluster CIDR to split.
    pub cluster: Cidr,
    /// The prefix length of each node's slice.
    pub node_mask: u8,
    /// The service CIDR; slices overlapping it are never handed out. One of
    /// the other family is ignored.
    pub service: Option<Cidr>,
}

impl Default for NodeCidrConfig {
    fn default() -> Self {
        Self {
            cluster: crate::DEFAULT_CLUSTER_CIDR.parse().expect("valid default"),
            node_mask: crate::DEFAULT_NODE_MASK,
            service: Some(crate::DEFAULT_SERVICE_CIDR.parse().expect("valid default")),
        }
    }
}

/// Hands out node slices of the cluster CIDR, lowest free first but the
/// first slice last, so the first nodes get `10.0.1.0/24`, `10.0.2.0/24`, …
/// as in the article (and the slice holding the cluster CIDR's own network
/// address is used only when nothing else is left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCidrAllocator {
    config: NodeCidrConfig,
    // slice i is the i-th /node_mask network of the cluster CIDR; `taken`
    // holds both allocated and reserved (service-overlapping) slices.
    taken: Bitmap,
    reserved: Bitmap,
}

impl NodeCidrAllocator {
    /// An empty allocator. Fails when the node mask is shorter than the
    /// cluster prefix, longer than the address, or would make more than 2^16
    /// slices.
    pub fn new(config: NodeCidrConfig) -> Result<Self> {
        let NodeCidrConfig {
            cluster, node_mask, ..
        } = config;
        if node_mask < cluster.prefix_len()
            || node_mask > cluster.max_prefix_len()
            || node_mask - cluster.prefix_len() > MAX_SLICE_BITS
        {
            return Err(Error::InvalidNodeMask {
                mask: node_mask,
                cluster,
            });
        }
        let count = 1usize << (node_mask - cluster.prefix_len());
        let mut alloc = Self {
            config,
            taken: Bitmap::new(count),
            reserved: Bitmap::new(count),
        };
        if let Some(svc) = config.service.filter(|s| s.overlaps(&cluster)) {
            // The overlap is the smaller of the two networks.
            let (lo, hi) = if svc.prefix_len() >= cluster.prefix_len() {
                (svc.base(), svc.base() + svc.last_offset())
            } else {
                (cluster.base(), cluster.base() + cluster.last_offset())
            };
            for i in alloc.index_at(lo)..=alloc.index_at(hi) {
                alloc.reserved.set(i);
                alloc.taken.set(i);
            }
        }
        Ok(alloc)
    }

    /// An allocator holding `used` (the `podCIDR`s recorded on Nodes), plus
    /// what was wrong with the list: repeated slices, CIDRs that are not
    /// slices of the cluster CIDR, and slices overlapping the service CIDR,
    /// all of which are skipped.
    pub fn from_used(
        config: NodeCidrConfig,
        used: impl IntoIterator<Item = PodCidr>,
    ) -> Result<(Self, Vec<RebuildIssue<PodCidr>>)> {
        let mut alloc = Self::new(config)?;
        let mut issues = Vec::new();
        for cidr in used {
            match alloc.occupy(cidr) {
                Ok(true) => {}
                Ok(false) => issues.push(RebuildIssue::Duplicate(cidr)),
                Err(Error::OverlapsServiceCidr { .. }) => issues.push(RebuildIssue::Reserved(cidr)),
                Err(_) => issues.push(RebuildIssue::OutOfRange(cidr)),
            }
        }
        Ok((alloc, issues))
    }

    /// The configuration this allocator splits by.
    pub fn config(&self) -> &NodeCidrConfig {
        &self.config
    }

    /// How many slices the cluster CIDR splits into (reserved ones included).
    pub fn slice_count(&self) -> usize {
        self.taken.len()
    }

    /// How many slices overlap the service CIDR and are never handed out.
    pub fn reserved_count(&self) -> usize {
        self.reserved.count_ones()
    }

    /// Allocates the lowest free slice, the first slice only when it is the
    /// last one free.
    pub fn allocate(&mut self) -> Result<PodCidr> {
        let count = self.slice_count();
        let i = self
            .taken
            .first_clear_in(1.min(count), count)
            .or_else(|| self.taken.first_clear_in(0, 1.min(count)))
            .ok_or(Error::CidrNotAvailable {
                cluster: self.config.cluster,
            })?;
        self.taken.set(i);
        Ok(self.slice_at(i))
    }

    /// Records `cidr` (already on a Node) as in use; returns whether it was
    /// free before, so occupying twice is harmless.
    pub fn occupy(&mut self, cidr: PodCidr) -> Result<bool> {
        let i = self.check(cidr)?;
        Ok(self.taken.set(i))
    }

    /// Frees `cidr`; returns whether it was allocated.
    pub fn release(&mut self, cidr: PodCidr) -> Result<bool> {
        let i = self.check(cidr)?;
        Ok(self.taken.clear(i))
    }

    /// Whether `cidr` is an allocated slice.
    pub fn is_allocated(&self, cidr: PodCidr) -> bool {
        self.index_of(cidr)
            .is_some_and(|i| self.taken.get(i) && !self.reserved.get(i))
    }

    /// How many slices can still be allocated.
    pub fn free_count(&self) -> usize {
        self.slice_count() - self.taken.count_ones()
    }

    /// How many slices are allocated.
    pub fn used_count(&self) -> usize {
        self.taken.count_ones() - self.reserved.count_ones()
    }

    /// The allocated slices, ascending; feed them to
    /// [`from_used`](Self::from_used) to rebuild this allocator.
    pub fn used(&self) -> Vec<PodCidr> {
        self.taken
            .iter_ones()
            .filter(|&i| !self.reserved.get(i))
            .map(|i| self.slice_at(i))
            .collect()
    }

    /// The slice index of `cidr`, or why it can never be allocated.
    fn check(&self, cidr: PodCidr) -> Result<usize> {
        let i = self.index_of(cidr).ok_or(Error::NotASlice {
            cidr: cidr.0,
            mask: self.config.node_mask,
            cluster: self.config.cluster,
        })?;
        if self.reserved.get(i) {
            return Err(Error::OverlapsServiceCidr {
                cidr: cidr.0,
                service: self
                    .config
                    .service
                    .expect("reserved slices imply a service CIDR"),
            });
        }
        Ok(i)
    }

    fn slice_bits(&self) -> u32 {
        u32::from(self.config.cluster.max_prefix_len() - self.config.node_mask)
    }

    fn index_at(&self, addr: u128) -> usize {
        let offset = addr - self.config.cluster.base();
        // at most 2^16 slices, so the index fits
        offset.checked_shr(self.slice_bits()).unwrap_or(0) as usize
    }

    fn index_of(&self, cidr: PodCidr) -> Option<usize> {
        let c = cidr.0;
        (c.prefix_len() == self.config.node_mask && self.config.cluster.contains(c.network()))
            .then(|| self.index_at(c.base()))
    }

    fn slice_at(&self, i: usize) -> PodCidr {
        let cluster = self.config.cluster;
        let offset = (i as u128).checked_shl(self.slice_bits()).unwrap_or(0);
        let net = cluster.addr_at(offset);
        PodCidr(Cidr::new(net, self.config.node_mask).expect("mask checked in new"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn pc(s: &str) -> PodCidr {
        s.parse().unwrap()
    }

    #[test]
    fn article_defaults() {
        let mut a = NodeCidrAllocator::new(NodeCidrConfig::default()).unwrap();
        assert_eq!(a.slice_count(), 1024);
        assert_eq!(a.reserved_count(), 16);
        assert_eq!(a.free_count(), 1008);
        // The article's nodes: 10.0.1.0/24, 10.0.2.0/24, ...
        assert_eq!(a.allocate().unwrap(), pc("10.0.1.0/24"));
        assert_eq!(a.allocate().unwrap(), pc("10.0.2.0/24"));
        assert_eq!(a.allocate().unwrap(), pc("10.0.3.0/24"));
        assert!(a.release(pc("10.0.2.0/24")).unwrap());
        assert_eq!(a.allocate().unwrap(), pc("10.0.2.0/24"));
    }

    #[test]
    fn the_first_slice_is_handed_out_last() {
        let mut a = NodeCidrAllocator::new(NodeCidrConfig {
            cluster: "10.8.0.0/22".parse().unwrap(),
            node_mask: 24,
            service: None,
        })
        .unwrap();
        let got: Vec<PodCidr> = (0..4).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(
            got,
            ["10.8.1.0/24", "10.8.2.0/24", "10.8.3.0/24", "10.8.0.0/24"].map(pc)
        );
        assert!(a.allocate().is_err());
        let mut one = NodeCidrAllocator::new(NodeCidrConfig {
            cluster: "10.9.0.0/24".parse().unwrap(),
            node_mask: 24,
            service: None,
        })
        .unwrap();
        assert_eq!(
            one.allocate().unwrap(),
            pc("10.9.0.0/24"),
            "a single slice is still used"
        );
    }

    #[test]
    fn never_hands_out_service_slices_and_exhausts() {
        let mut a = NodeCidrAllocator::new(NodeCidrConfig::default()).unwrap();
        let svc: Cidr = "10.3.240.0/20".parse().unwrap();
        let mut got = BTreeSet::new();
        while let Ok(c) = a.allocate() {
            assert!(!c.0.overlaps(&svc), "{c}");
            assert!(got.insert(c));
        }
        assert_eq!(got.len(), 1008);
        assert_eq!(got.last(), Some(&pc("10.3.239.0/24")));
        assert_eq!(
            a.allocate().unwrap_err().to_string(),
            "no remaining CIDRs in the cluster CIDR 10.0.0.0/14"
        );
        assert_eq!(a.used().len(), 1008);
    }

    #[test]
    fn occupy_checks_the_slice() {
        let mut a = NodeCidrAllocator::new(NodeCidrConfig::default()).unwrap();
        assert_eq!(a.occupy(pc("10.0.5.0/24")), Ok(true));
        assert_eq!(a.occupy(pc("10.0.5.0/24")), Ok(false));
        assert!(a.is_allocated(pc("10.0.5.0/24")));
        assert_eq!(
            a.occupy(pc("10.3.240.0/24")).unwrap_err().to_string(),
            "10.3.240.0/24 overlaps the service CIDR 10.3.240.0/20"
        );
        assert!(a.occupy(pc("10.3.255.0/24")).is_err());
        assert!(!a.is_allocated(pc("10.3.250.0/24")));
        assert!(a.release(pc("10.3.250.0/24")).is_err());
        assert_eq!(
            a.occupy(pc("10.4.0.0/24")).unwrap_err().to_string(),
            "10.4.0.0/24 is not a /24 slice of the cluster CIDR 10.0.0.0/14"
        );
        assert!(a.occupy(pc("10.0.1.0/25")).is_err());
        assert!(a.occupy(pc("fd00::/24")).is_err());
        // occupied slices are skipped by allocate (which starts at the
        // second slice: 1, 2, 3, 4, 6)
        for _ in 0..5 {
            a.allocate().unwrap();
        }
        assert_eq!(a.allocate().unwrap(), pc("10.0.7.0/24"));
    }

    #[test]
    fn service_cidr_larger_than_slices_or_outside() {
        let cfg = |cluster: &str, mask, svc: &str| NodeCidrConfig {
            cluster: cluster.parse().unwrap(),
            node_mask: mask,
            service: Some(svc.parse().unwrap()),
        };
        // /26 service inside one /24 slice reserves just that slice
        let a = NodeCidrAllocator::new(cfg("10.0.0.0/16", 24, "10.0.7.64/26")).unwrap();
        assert_eq!(a.reserved_count(), 1);
        // a service CIDR holding the whole cluster reserves everything
        let mut a = NodeCidrAllocator::new(cfg("10.0.0.0/16", 24, "10.0.0.0/8")).unwrap();
        assert_eq!(a.reserved_count(), 256);
        assert!(a.allocate().is_err());
        // disjoint or other-family service CIDRs reserve nothing
        let a = NodeCidrAllocator::new(cfg("10.0.0.0/16", 24, "10.96.0.0/12")).unwrap();
        assert_eq!(a.reserved_count(), 0);
        let a = NodeCidrAllocator::new(cfg("fd00::/48", 64, "10.0.0.0/8")).unwrap();
        assert_eq!((a.slice_count(), a.reserved_count()), (65536, 0));
    }

    #[test]
    fn rejects_bad_masks() {
        let cfg = |mask| NodeCidrConfig {
            node_mask: mask,
            ..NodeCidrConfig::default()
        };
        for mask in [13, 33, 31] {
            assert!(matches!(
                NodeCidrAllocator::new(cfg(mask)),
                Err(Error::InvalidNodeMask { .. })
            ));
        }
        assert_eq!(NodeCidrAllocator::new(cfg(14)).unwrap().slice_count(), 1);
        assert_eq!(
            NodeCidrAllocator::new(cfg(30)).unwrap().slice_count(),
            65536
        );
        let all = NodeCidrConfig {
            cluster: "::/0".parse().unwrap(),
            node_mask: 0,
            service: None,
        };
        let mut a = NodeCidrAllocator::new(all).unwrap();
        assert_eq!(a.allocate().unwrap(), pc("::/0"));
    }

    #[test]
    fn rebuild_reports_issues() {
        let used = [
            "10.0.1.0/24",
            "10.0.0.0/24",
            "10.0.1.0/24",
            "10.3.241.0/24",
            "192.168.0.0/24",
        ]
        .map(pc);
        let (mut a, issues) =
            NodeCidrAllocator::from_used(NodeCidrConfig::default(), used).unwrap();
        assert_eq!(a.used(), vec![pc("10.0.0.0/24"), pc("10.0.1.0/24")]);
        assert_eq!(
            issues,
            vec![
                RebuildIssue::Duplicate(pc("10.0.1.0/24")),
                RebuildIssue::Reserved(pc("10.3.241.0/24")),
                RebuildIssue::OutOfRange(pc("192.168.0.0/24")),
            ]
        );
        assert_eq!(a.allocate().unwrap(), pc("10.0.2.0/24"));
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
            slice_bits in 1u8..=8,
            svc_prefix in 20u8..=28,
            svc_slot in any::<u16>(),
            ops in prop::collection::vec(prop_oneof![
                3 => Just(Op::Allocate),
                2 => any::<u16>().prop_map(Op::Occupy),
                1 => any::<usize>().prop_map(Op::Release),
            ], 0..300),
        ) {
            let cluster: Cidr = "10.0.0.0/20".parse().unwrap();
            let node_mask = 20 + slice_bits;
            // a service CIDR somewhere in or around the cluster CIDR
            let svc_base = 0x0a00_0000u32 + (u32::from(svc_slot) << 8) % (1 << 13);
            let service = Cidr::new(std::net::Ipv4Addr::from(svc_base).into(), svc_prefix).unwrap();
            let config = NodeCidrConfig { cluster, node_mask, service: Some(service) };
            let mut a = NodeCidrAllocator::new(config).unwrap();
            let count = a.slice_count();
            let all: Vec<PodCidr> = (0..count).map(|i| a.slice_at(i)).collect();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => {
                        let free = |c: &&PodCidr| !c.0.overlaps(&service) && !model.contains(*c);
                        // The lowest free slice, the first slice last.
                        let lowest = all.iter().skip(1).find(free).or_else(|| all.first().filter(free));
                        match a.allocate() {
                            Ok(got) => {
                                prop_assert_eq!(Some(&got), lowest, "not the lowest free slice");
                                prop_assert!(!got.0.overlaps(&service));
                                prop_assert!(cluster.contains(got.0.network()));
                                prop_assert!(model.insert(got), "duplicate {}", got);
                            }
                            Err(e) => {
                                prop_assert_eq!(lowest, None);
                                prop_assert_eq!(e, Error::CidrNotAvailable { cluster });
                            }
                        }
                    }
                    Op::Occupy(n) => {
                        let want = all[usize::from(n) % count];
                        let res = a.occupy(want);
                        if want.0.overlaps(&service) {
                            prop_assert!(res.is_err());
                        } else {
                            prop_assert_eq!(res, Ok(model.insert(want)));
                        }
                    }
                    Op::Release(i) => {
                        if let Some(&gone) = model.iter().nth(i % model.len().max(1)) {
                            prop_assert_eq!(a.release(gone), Ok(true));
                            model.remove(&gone);
                        }
                    }
                }
                prop_assert_eq!(a.used_count(), model.len());
            }
            let used = a.used();
            prop_assert_eq!(&used, &model.iter().copied().collect::<Vec<_>>());
            let (b, issues) = NodeCidrAllocator::from_used(config, used.clone()).unwrap();
            prop_assert!(issues.is_empty());
            prop_assert_eq!(b.used(), used);
            prop_assert_eq!(b.free_count(), a.free_count());
        }
    }
}
