//! The allocator ClusterIPs and NodePorts share: values of a range mapped
//! one-to-one onto slots, handed out by the two-band policy of
//! [`Banded`](crate::bitmap::Banded). What differs between them, the range
//! and its errors, is a [`BandedRange`].

use rand::Rng;

use crate::bitmap::Banded;
use crate::error::{Error, Result};
use crate::rebuild::RebuildIssue;

/// A range of values an allocator hands out, as slots `0..slot_count()`.
pub trait BandedRange: Copy {
    /// What is handed out: a [`ClusterIp`](crate::types::ClusterIp), a
    /// [`NodePort`](crate::types::NodePort).
    type Value: Copy;
    /// How many values the range holds.
    fn slot_count(&self) -> usize;
    /// The slot of `value`, if it is in the range.
    fn slot_of(&self, value: Self::Value) -> Option<usize>;
    /// The value of `slot` (`slot < slot_count()`).
    fn value_at(&self, slot: usize) -> Self::Value;
    /// The error for a value outside the range.
    fn not_in_range(&self) -> Error;
    /// The error for a value already allocated.
    fn taken(&self) -> Error;
    /// The error for a full range.
    fn full(&self) -> Error;
}

/// Hands out the values of a [`BandedRange`]: the lowest `band` form the
/// static band, kept for requests of a specific value; dynamic allocation
/// uses it only once the upper band is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandedAllocator<R> {
    pub(crate) range: R,
    slots: Banded,
}

impl<R: BandedRange> BandedAllocator<R> {
    pub(crate) fn with_band(range: R, band: usize) -> Self {
        let size = range.slot_count();
        Self {
            range,
            slots: Banded::new(size, band.min(size)),
        }
    }

    /// Takes every value of `used` (what a repair loop reads from the
    /// objects), reporting repeats and strays instead of failing.
    pub(crate) fn rebuilt(
        mut self,
        used: impl IntoIterator<Item = R::Value>,
    ) -> (Self, Vec<RebuildIssue<R::Value>>) {
        let taken = self.range.taken();
        let mut issues = Vec::new();
        for value in used {
            match self.allocate_specific(value) {
                Ok(()) => {}
                Err(err) if err == taken => issues.push(RebuildIssue::Duplicate(value)),
                Err(_) => issues.push(RebuildIssue::OutOfRange(value)),
            }
        }
        (self, issues)
    }

    /// How many values the range holds.
    pub fn size(&self) -> usize {
        self.slots.size()
    }

    /// How many of the lowest values form the static band.
    pub fn static_band_size(&self) -> usize {
        self.slots.band()
    }

    /// Allocates a free value: from the upper band if it has room (random
    /// start, then scan), else from the static band.
    pub fn allocate(&mut self, rng: &mut impl Rng) -> Result<R::Value> {
        let slot = self.slots.allocate(rng).ok_or_else(|| self.range.full())?;
        Ok(self.range.value_at(slot))
    }

    /// Allocates `value`, which may be any free value of the range.
    pub fn allocate_specific(&mut self, value: R::Value) -> Result<()> {
        let slot = self
            .range
            .slot_of(value)
            .ok_or_else(|| self.range.not_in_range())?;
        if self.slots.take(slot) {
            Ok(())
        } else {
            Err(self.range.taken())
        }
    }

    /// Frees `value`; returns whether it was allocated. Releasing a free or
    /// out-of-range value is a no-op, so repeated deletes are harmless.
    pub fn release(&mut self, value: R::Value) -> bool {
        self.range
            .slot_of(value)
            .is_some_and(|s| self.slots.release(s))
    }

    /// Whether `value` is allocated.
    pub fn is_allocated(&self, value: R::Value) -> bool {
        self.range
            .slot_of(value)
            .is_some_and(|s| self.slots.is_set(s))
    }

    /// Whether `value` lies in the static band.
    pub fn in_static_band(&self, value: R::Value) -> bool {
        self.range
            .slot_of(value)
            .is_some_and(|s| s < self.slots.band())
    }

    /// How many values are free.
    pub fn free_count(&self) -> usize {
        self.slots.free_count()
    }

    /// How many values are allocated.
    pub fn used_count(&self) -> usize {
        self.slots.used_count()
    }

    /// The allocated values, ascending; feed them to `from_used` to rebuild
    /// this allocator.
    pub fn used(&self) -> Vec<R::Value> {
        self.slots
            .iter_used()
            .map(|s| self.range.value_at(s))
            .collect()
    }
}
