//! A membership bitmap in shared memory: bit `k` set while participant entry `k` belongs
//! to a set (an MPMC ring's producers or consumers, a broadcast ring's gating
//! subscribers). Bits rather than a count: setting or clearing one twice is harmless, so
//! a participant killed between its entry's store and its bit's leaves nothing wrong.

use shm_sync::atomic::{AtomicU64, Ordering};

use super::MAX_PARTICIPANTS;

/// Words of a bitmap: one bit per possible participant entry.
pub(crate) const MEMBER_WORDS: usize = (MAX_PARTICIPANTS as usize).div_ceil(64);

/// One bit per participant entry: 128 bytes.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Members(pub(crate) [AtomicU64; MEMBER_WORDS]);

#[cfg(not(loom))]
const _: () = assert!(size_of::<Members>() == 128);

impl Members {
    /// The words that entries `0..entries` use.
    #[inline(always)]
    pub(crate) fn words(&self, entries: u32) -> &[AtomicU64] {
        &self.0[..(entries as usize).div_ceil(64)]
    }

    /// Sets bit `index` with `order` (the caller's SYNC).
    #[inline]
    pub(crate) fn set(&self, index: u32, order: Ordering) {
        self.0[index as usize / 64].fetch_or(1 << (index % 64), order);
    }

    /// Clears bit `index` with `order` (the caller's SYNC).
    #[inline]
    pub(crate) fn clear(&self, index: u32, order: Ordering) {
        self.0[index as usize / 64].fetch_and(!(1 << (index % 64)), order);
    }

    /// How many bits of entries `0..entries` are set.
    pub(crate) fn count(&self, entries: u32) -> u32 {
        // Relaxed: a statistic.
        self.words(entries)
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum()
    }

    /// The set bits of entries `0..entries`, each word loaded with `order` (the
    /// caller's SYNC). A bit past `entries` (in the last word, set by a broken peer) is
    /// passed over: the caller indexes its table with what this returns.
    pub(crate) fn iter(&self, entries: u32, order: Ordering) -> impl Iterator<Item = u32> + '_ {
        self.words(entries)
            .iter()
            .enumerate()
            .flat_map(move |(w, word)| {
                let mut bits = word.load(order);
                core::iter::from_fn(move || {
                    if bits == 0 {
                        return None;
                    }
                    let bit = bits.trailing_zeros();
                    bits &= bits - 1;
                    Some(w as u32 * 64 + bit)
                })
            })
            .filter(move |&index| index < entries)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn iter_yields_the_set_bits_below_the_entries_only() {
        let members = Members::default();
        for index in [0, 5, 63, 64, 70] {
            members.set(index, Ordering::Relaxed);
        }
        let set: Vec<u32> = members.iter(70, Ordering::Relaxed).collect();
        assert_eq!(set, [0, 5, 63, 64], "70 is past a table of 70 entries");
        assert_eq!(members.count(70), 5, "count reads whole words");
        members.clear(5, Ordering::Relaxed);
        assert_eq!(
            members.iter(64, Ordering::Relaxed).collect::<Vec<_>>(),
            [0, 63]
        );
    }
}
