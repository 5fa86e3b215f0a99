//! One participant's shared view of an MPMC ring: its region, the stamps of its slots,
//! the census of each side, and finishing a slot.

use shm_sync::atomic::{AtomicU64, Ordering};
use shm_sync::{EventCount, Notified, Retries};

use super::layout::{Control, EMPTY, Entry, Line, Side, Slot};
use shm_alloc::participants::Table;

use crate::core::activity::Activity;
use crate::core::members::Members;
use crate::core::region::Region;
use crate::error::Corruption;

/// The region of an MPMC ring, and the shift that turns a position into its lap. Shared
/// by every handle of a process (cloning shares the memory).
pub(crate) struct Ring<T> {
    pub(crate) region: Region<Control, Line, Slot<T>>,
    /// `log2(capacity)`: `position >> shift` is the lap.
    shift: u32,
}

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Ring {
            region: self.region.clone(),
            shift: self.shift,
        }
    }
}

impl<T> Ring<T> {
    pub(crate) fn new(region: Region<Control, Line, Slot<T>>) -> Self {
        let shift = region.capacity().trailing_zeros();
        Ring { region, shift }
    }

    #[inline(always)]
    pub(crate) fn control(&self) -> &Control {
        self.region.control()
    }

    /// The participant table, guarded by the region's role locks.
    pub(crate) fn table(&self) -> Table<'_, Region<Control, Line, Slot<T>>, Line> {
        Table::new(self.region.entries(), &self.region)
    }

    /// The entry of participant `index` (`index < limit`).
    #[inline(always)]
    pub(crate) fn entry(&self, index: u32) -> &Entry {
        &self.region.entry(index).entry
    }

    /// The activity counters of participant `index` (`index < limit`).
    #[inline(always)]
    pub(crate) fn activity(&self, index: u32) -> &Activity {
        &self.region.entry(index).activity
    }

    /// The slot of `position`.
    #[inline(always)]
    pub(crate) fn slot(&self, position: u64) -> &Slot<T> {
        self.region.slot(position)
    }

    /// The number of slots, a power of two.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> u64 {
        self.region.capacity()
    }

    /// The participant limit: the entries of the table.
    #[inline(always)]
    pub(crate) fn limit(&self) -> u32 {
        self.region.entry_count()
    }

    /// The stamp of `position`'s slot in `state`.
    #[inline(always)]
    pub(crate) fn stamp(&self, position: u64, state: u64) -> u64 {
        ((position >> self.shift) << 2) | state
    }

    /// How many laps `stamp` is ahead of `position` (negative: behind).
    #[inline(always)]
    pub(crate) fn laps_ahead(&self, stamp: u64, position: u64) -> i64 {
        let lap = (position >> self.shift) & (u64::MAX >> 2);
        ((stamp >> 2) as i64).wrapping_sub(lap as i64)
    }

    /// `side`'s membership bitmap.
    fn members(&self, side: Side) -> &Members {
        let census = &self.control().census;
        match side {
            Side::Producer => &census.producers,
            Side::Consumer => &census.consumers,
        }
    }

    /// Marks entry `index` as holding a participant of `side` (at attach, once the entry
    /// says so).
    pub(crate) fn enlist(&self, side: Side, index: u32) {
        // Relaxed: a joiner has nothing to publish; whoever reads the bitmap next reads
        // its entry, published by its Release store.
        self.members(side).set(index, Ordering::Relaxed);
    }

    /// Takes entry `index` off `side`'s bitmap: a participant whose positions are all
    /// finished (it leaves, or was settled after its death). First marks the side as
    /// having lost a participant, which [`side_gone`](Self::side_gone) asks before the
    /// bitmap. Clearing a clear bit is harmless.
    pub(crate) fn delist(&self, side: Side, index: u32) {
        let census = &self.control().census;
        // SYNC(census): Release; the mark is set before the bit is cleared.
        census
            .departed
            .fetch_or(side.departed_bit(), Ordering::Release);
        // SYNC(census): Release; after this participant's last publish or release.
        self.members(side).clear(index, Ordering::Release);
    }

    /// How many participants of `side` the bitmap holds.
    pub(crate) fn count(&self, side: Side) -> u32 {
        self.members(side).count(self.limit())
    }

    /// Whether every participant of `side` is gone: one of them left (or died and was
    /// settled), and none is on the bitmap now. A side whose first participant is still
    /// attaching is not gone: only a departure marks it, so a poll racing the first
    /// attach never reads "gone".
    #[inline]
    pub(crate) fn side_gone(&self, side: Side) -> bool {
        let first = &self.members(side).0[0];
        // SYNC(census): Acquire; pairs with the Release clear of the last one to leave,
        // so a poll after this sees everything it sent or released. The first word
        // alone answers while one of the first 64 entries is that side's.
        first.load(Ordering::Acquire) == 0 && self.all_gone(side)
    }

    /// [`side_gone`](Self::side_gone) past the first word of the bitmap: the departure
    /// mark, then every word.
    #[cold]
    fn all_gone(&self, side: Side) -> bool {
        // SYNC(census): Acquire; pairs with the Release mark of `delist`. Read before the
        // words: a side that has lost nobody is not gone, whatever they say.
        let departed = self.control().census.departed.load(Ordering::Acquire);
        // SYNC(census): Acquire, as in `side_gone`.
        departed & side.departed_bit() != 0
            && self
                .members(side)
                .words(self.limit())
                .iter()
                .all(|w| w.load(Ordering::Acquire) == 0)
    }

    /// The verdict of a claim that spent its [`Retries`](shm_sync::Retries):
    /// the stamp at a fresh read of `position` (the ring's head or tail), as `Corrupted`.
    /// No run of the protocol makes a claim go round that often.
    #[cold]
    /// A claim's compare-and-swap of `position` (`tail` or `head`) from `current` to the
    /// next: `Ok` when this participant took `current`, `Err` with the position found
    /// otherwise (another moved first; the weak form may also fail spuriously).
    #[inline(always)]
    pub(crate) fn advance(position: &AtomicU64, current: u64) -> Result<u64, u64> {
        #[cfg(all(test, not(loom)))]
        if faults::cas_lost() {
            // SYNC(positions): Acquire, as the failure ordering below.
            return Err(position.load(Ordering::Acquire));
        }
        // SYNC(claim): Release on success: the claimer's entry word, stored before,
        // is seen by whoever sees the position taken. Failure Acquire: the position read
        // is used as a loaded position (SYNC(positions)).
        position.compare_exchange_weak(
            current,
            current.wrapping_add(1),
            Ordering::Release,
            Ordering::Acquire,
        )
    }

    pub(crate) fn spent(&self, position: &AtomicU64) -> Corruption {
        // Relaxed: a report; nothing is read through it.
        let position = position.load(Ordering::Relaxed);
        Corruption::Slot {
            position,
            // Relaxed: as above.
            stamp: self.slot(position).stamp.load(Ordering::Relaxed),
        }
    }

    /// Checks `tail` and `head` against each other: `head <= tail <= head + capacity`,
    /// which holds at every instant of every run of the protocol. Checked on a snapshot:
    /// `head` read between two reads of `tail` that agree (tail only grows, so it held
    /// that value while head was read); under traffic that moves tail every time, the
    /// check gives up after its [`Retries`] without a verdict, and the claims report a
    /// corrupt ring later. Two loads, or a few under traffic.
    pub(crate) fn check_positions(&self) -> Result<(), Corruption> {
        let control = self.control();
        let mut retries = Retries::new();
        // SYNC(positions): Acquire, each: the head load stays between the two tail loads.
        let mut tail = control.tail.load(Ordering::Acquire);
        loop {
            let head = control.head.load(Ordering::Acquire);
            let again = control.tail.load(Ordering::Acquire);
            if again == tail {
                let used = tail.wrapping_sub(head) as i64;
                if used < 0 || used > self.capacity() as i64 {
                    return Err(Corruption::Positions {
                        head,
                        tail,
                        capacity: self.capacity(),
                    });
                }
                return Ok(());
            }
            if !retries.again() {
                return Ok(());
            }
            tail = again;
        }
    }

    /// Whether a claim of `side` would not find the ring empty (a consumer) or full (a
    /// producer), without claiming: what `Waitable::ready` says. Counts a poll for the
    /// liveness probe of `me`, and makes the probe when due (or `probe`), since a
    /// settled dead participant's claim may be what makes the ring ready. A corrupt
    /// table found by the probe reads as ready: the call reports it.
    pub(crate) fn ready(&self, side: Side, me: &mut super::member::Member, probe: bool) -> bool {
        if me.probe_due(probe) && me.probe(self).is_err() {
            return true;
        }
        if self.side_gone(side.other()) {
            return true;
        }
        let control = self.control();
        let position = match side {
            // SYNC(positions): Acquire.
            Side::Consumer => control.head.load(Ordering::Acquire),
            // SYNC(positions): Acquire.
            Side::Producer => control.tail.load(Ordering::Acquire),
        };
        // Acquire: as in each side's claim (SYNC(slot-published), SYNC(slot-released)).
        let stamp = self.slot(position).stamp.load(Ordering::Acquire);
        // The lap before still holds the slot (unconsumed, or a consumer reads it):
        // full for a producer, and for a consumer nothing of this lap yet.
        let behind = self.laps_ahead(stamp, position) == -1;
        match side {
            Side::Consumer => !(behind || stamp == self.stamp(position, EMPTY)),
            Side::Producer => !behind,
        }
    }

    /// The event count `side` parks on: producers wait for room (`not_full`), consumers
    /// for messages (`not_empty`).
    pub(crate) fn wait_event(&self, side: Side) -> &EventCount {
        match side {
            Side::Producer => &self.control().not_full,
            Side::Consumer => &self.control().not_empty,
        }
    }

    /// Marks `side`'s slot of `position` done: a producer publishes (`FULL`) or aborts
    /// (`SKIPPED`), a consumer releases it to the next lap. Wakes the other side, and
    /// returns what the wake-up did.
    #[inline]
    pub(crate) fn finish(&self, side: Side, position: u64, state: u64) -> Notified {
        let control = self.control();
        let slot = self.slot(position);
        match side {
            Side::Producer => {
                // SYNC(slot-published): Release; pairs with a consumer's Acquire load of
                // the stamp: the message written before is visible to it.
                slot.stamp
                    .store(self.stamp(position, state), Ordering::Release);
                control.not_empty.notify()
            }
            Side::Consumer => {
                // SYNC(slot-released): Release; pairs with a producer's Acquire load of
                // the stamp: this consumer's reads of the slot are done.
                slot.stamp.store(
                    self.stamp(position.wrapping_add(self.capacity()), EMPTY),
                    Ordering::Release,
                );
                control.not_full.notify()
            }
        }
    }
}

/// Fault injection for the unit tests: every claim's compare-and-swap of this thread
/// loses (as if another participant always moved first), so that a test sees the
/// claim's bound on its rounds (`shm_sync::Retries`) end it.
#[cfg(all(test, not(loom)))]
pub(crate) mod faults {
    use std::cell::Cell;

    std::thread_local! {
        static CAS_LOST: Cell<bool> = const { Cell::new(false) };
        static LOST: Cell<u32> = const { Cell::new(0) };
    }

    /// Makes every claim of this thread lose its compare-and-swap (`true`), or not;
    /// returns how many were lost since the last call.
    pub(crate) fn lose_every_cas(lost: bool) -> u32 {
        CAS_LOST.with(|l| l.set(lost));
        LOST.with(|n| n.replace(0))
    }

    pub(super) fn cas_lost() -> bool {
        let lost = CAS_LOST.with(Cell::get);
        if lost {
            LOST.with(|n| n.set(n.get() + 1));
        }
        lost
    }
}
