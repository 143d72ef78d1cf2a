//! The bit-per-slot bookkeeping every allocator here stands on: a plain
//! [`Bitmap`] and the [`Banded`] two-band allocation policy Kubernetes uses for
//! ClusterIPs and NodePorts (a low static band kept for requested values, an
//! upper band for dynamic allocation).

use rand::Rng;

/// A fixed-length set of slots `0..len`, one bit each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    len: usize,
    ones: usize,
}

impl Bitmap {
    pub(crate) fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
            ones: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn count_ones(&self) -> usize {
        self.ones
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Sets slot `i`; returns whether it was clear before.
    pub(crate) fn set(&mut self, i: usize) -> bool {
        assert!(i < self.len, "bit {i} out of {}", self.len);
        let was_clear = !self.get(i);
        self.words[i / 64] |= 1 << (i % 64);
        self.ones += usize::from(was_clear);
        was_clear
    }

    /// Clears slot `i`; returns whether it was set before.
    pub(crate) fn clear(&mut self, i: usize) -> bool {
        let was_set = self.get(i);
        if was_set {
            self.words[i / 64] &= !(1 << (i % 64));
            self.ones -= 1;
        }
        was_set
    }

    /// The lowest clear slot in `lo..hi`.
    pub(crate) fn first_clear_in(&self, lo: usize, hi: usize) -> Option<usize> {
        let hi = hi.min(self.len);
        let mut i = lo;
        while i < hi {
            let free = !self.words[i / 64] >> (i % 64);
            if free != 0 {
                let found = i + free.trailing_zeros() as usize;
                return (found < hi).then_some(found);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// The first clear slot in `lo..hi` at or after `start`, wrapping round to
    /// `lo`.
    pub(crate) fn next_clear_wrapping(&self, lo: usize, hi: usize, start: usize) -> Option<usize> {
        self.first_clear_in(start, hi)
            .or_else(|| self.first_clear_in(lo, start))
    }

    /// The set slots in ascending order.
    pub(crate) fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let b = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    w * 64 + b
                })
            })
        })
    }
}

/// Kubernetes' static-band size for a range of `size` addresses or ports:
/// `min(max(16, size / step), max)`, and none for ranges smaller than 16.
/// Callers clamp the result to the usable slot count.
pub(crate) fn static_band(size: usize, step: usize, max: usize) -> usize {
    const MIN: usize = 16;
    if size < MIN {
        0
    } else {
        (size / step).clamp(MIN, max)
    }
}

/// Slots `0..band` form the static band, `band..size` the dynamic one.
/// Dynamic allocation starts at a random slot of the upper band and scans
/// (wrapping) for a free one; only when the upper band is full does it do the
/// same in the static band. Specific requests may take any free slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Banded {
    bits: Bitmap,
    band: usize,
    static_used: usize,
}

impl Banded {
    pub(crate) fn new(size: usize, band: usize) -> Self {
        debug_assert!(band <= size);
        Self {
            bits: Bitmap::new(size),
            band,
            static_used: 0,
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.bits.len()
    }

    pub(crate) fn band(&self) -> usize {
        self.band
    }

    pub(crate) fn used_count(&self) -> usize {
        self.bits.count_ones()
    }

    pub(crate) fn free_count(&self) -> usize {
        self.size() - self.used_count()
    }

    pub(crate) fn is_set(&self, i: usize) -> bool {
        self.bits.get(i)
    }

    /// Picks a free slot by the two-band policy and takes it.
    pub(crate) fn allocate(&mut self, rng: &mut impl Rng) -> Option<usize> {
        let (size, band) = (self.size(), self.band);
        let upper_used = self.used_count() - self.static_used;
        let slot = if upper_used < size - band {
            let start = rng.random_range(band..size);
            self.bits.next_clear_wrapping(band, size, start)
        } else if self.static_used < band {
            let start = rng.random_range(0..band);
            self.bits.next_clear_wrapping(0, band, start)
        } else {
            None
        }?;
        self.take(slot);
        Some(slot)
    }

    /// Takes slot `i`; returns whether it was free.
    pub(crate) fn take(&mut self, i: usize) -> bool {
        let fresh = self.bits.set(i);
        if fresh && i < self.band {
            self.static_used += 1;
        }
        fresh
    }

    /// Frees slot `i`; returns whether it was taken.
    pub(crate) fn release(&mut self, i: usize) -> bool {
        let was = self.bits.clear(i);
        if was && i < self.band {
            self.static_used -= 1;
        }
        was
    }

    pub(crate) fn iter_used(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter_ones()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn bitmap_set_clear_scan() {
        let mut b = Bitmap::new(130);
        assert_eq!(b.first_clear_in(0, 130), Some(0));
        for i in 0..129 {
            assert!(b.set(i));
        }
        assert!(!b.set(5));
        assert_eq!(b.count_ones(), 129);
        assert_eq!(b.first_clear_in(0, 130), Some(129));
        assert_eq!(b.first_clear_in(0, 129), None);
        assert!(b.clear(64));
        assert!(!b.clear(64));
        assert!(!b.clear(1000));
        assert_eq!(b.next_clear_wrapping(0, 129, 100), Some(64));
        assert_eq!(b.next_clear_wrapping(0, 130, 100), Some(129));
        assert_eq!(b.iter_ones().count(), 128);
        assert!(b.iter_ones().all(|i| i != 64));
    }

    #[test]
    fn band_formula_matches_kubernetes() {
        assert_eq!(static_band(4096, 16, 256), 256);
        assert_eq!(static_band(4094, 16, 256), 255);
        assert_eq!(static_band(256, 16, 256), 16);
        assert_eq!(static_band(14, 16, 256), 0);
        assert_eq!(static_band(16, 16, 256), 16);
        assert_eq!(static_band(2768, 32, 128), 86);
        assert_eq!(static_band(65536, 16, 256), 256);
    }

    #[test]
    fn banded_fills_upper_then_static() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Banded::new(40, 16);
        for _ in 0..24 {
            let s = b.allocate(&mut rng).unwrap();
            assert!(s >= 16);
        }
        for _ in 0..16 {
            let s = b.allocate(&mut rng).unwrap();
            assert!(s < 16);
        }
        assert_eq!(b.allocate(&mut rng), None);
        assert!(b.release(3));
        assert_eq!(b.allocate(&mut rng), Some(3));
    }
}
