//! One participant's shared view of a broadcast ring: its region, the stamps of its
//! slots, the table, and settling a dead participant.

use shm_alloc::participants::{Settle, Table};
use shm_sync::atomic::{Ordering, fence};

use super::Overflow;
use super::layout::{
    Control, Line, PUBLISHED, PUBLISHER, PUBLISHER_ENTRY, SESSION_STATE, SKIPPED, STAMP_STATE,
    SUBSCRIBER, Slot, WRITING,
};
use crate::core::region::Region;
use crate::error::Corruption;
use crate::message::Message;

/// What a table line's session word may hold, for [`Corruption::State`].
const SESSION_STATES: &str =
    "state 0 (free), 1 (publisher, entry 0 only) or 2 (subscriber) in its low two bits";

/// The region of a broadcast ring and its policy. Shared by every handle of a process
/// (cloning shares the memory).
pub(crate) struct Ring<T> {
    pub(crate) region: Region<Control, Line, Slot<T>>,
    pub(crate) overflow: Overflow,
}

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Ring {
            region: self.region.clone(),
            overflow: self.overflow,
        }
    }
}

impl<T: Message> Ring<T> {
    pub(crate) fn new(region: Region<Control, Line, Slot<T>>, overflow: Overflow) -> Self {
        Ring { region, overflow }
    }

    #[inline(always)]
    pub(crate) fn control(&self) -> &Control {
        self.region.control()
    }

    /// The participant table, guarded by the region's role locks.
    pub(crate) fn table(&self) -> Table<'_, Region<Control, Line, Slot<T>>, Line> {
        Table::new(self.region.entries(), &self.region)
    }

    /// Line `index` of the table (0: the publisher's, `k + 1`: subscriber `k`'s).
    #[inline(always)]
    pub(crate) fn line(&self, index: u32) -> &Line {
        self.region.entry(index)
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

    /// The subscriber limit: the table's lines but the publisher's.
    #[inline(always)]
    pub(crate) fn limit(&self) -> u32 {
        self.region.entry_count() - 1
    }

    /// Whether the publisher waits for its gating subscribers.
    #[inline(always)]
    pub(crate) fn blocks(&self) -> bool {
        self.overflow == Overflow::Block
    }

    /// The stamp of `position`'s slot in `state`.
    #[inline(always)]
    pub(crate) fn stamp(position: u64, state: u64) -> u64 {
        (position.wrapping_add(1) << 2) | state
    }

    /// Publishes `value` at `position`: the seqlock writer (Boehm 2012). `written` runs
    /// after the message is in the slot and before the stamp publishes it (a pool chunk
    /// the message names is shared there: [`chunks`](super::chunks)).
    #[inline(always)]
    pub(crate) fn write(&self, position: u64, value: &T, written: impl FnOnce()) {
        let slot = self.slot(position);
        // SYNC(tail): Release, so that a subscriber that sees this stamp sees the tail
        // of the message before (`holds <= tail` in its lag check). SYNC(seqlock): then
        // the Release fence below: a subscriber whose relaxed copy reads any byte written
        // after the fence synchronises with it through its Acquire fence, and then sees
        // this stamp (or a later one) when it loads the stamp again.
        slot.stamp
            .store(Self::stamp(position, WRITING), Ordering::Release);
        fence(Ordering::Release);
        slot.payload.store(value);
        written();
        // SYNC(slot-published): Release; pairs with a subscriber's Acquire load of the
        // stamp: the bytes written before are visible to it.
        slot.stamp
            .store(Self::stamp(position, PUBLISHED), Ordering::Release);
    }

    /// The message the slot of `position` holds for `position`, with its stamp's state:
    /// `PUBLISHED`, or `SKIPPED` (the whole message a publisher that died wrote before
    /// its last stamp, if it got that far). Read as a subscriber reads: the copy is kept
    /// only if the stamp is unchanged after it. `None` when the slot holds another
    /// position's message, or this one's half-written.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn written(&self, position: u64) -> Option<(u64, T)> {
        let slot = self.slot(position);
        // SYNC(slot-published): Acquire; the bytes written before the stamp are visible.
        let stamp = slot.stamp.load(Ordering::Acquire);
        let state = stamp & STAMP_STATE;
        if stamp >> 2 != position.wrapping_add(1) || !(state == PUBLISHED || state == SKIPPED) {
            return None;
        }
        let value = slot.payload.load();
        // SYNC(seqlock): Acquire, as in a subscriber's receive.
        fence(Ordering::Acquire);
        // Relaxed: ordered after the copy by the fence.
        (slot.stamp.load(Ordering::Relaxed) == stamp).then_some((state, value))
    }

    /// How many subscribers hold an entry (dead ones not yet retired included).
    pub(crate) fn subscribers(&self) -> u32 {
        self.region.entries()[1..]
            .iter()
            .filter(|line| line.entry.session() & SESSION_STATE == SUBSCRIBER)
            .count() as u32
    }

    /// Settles what the dead holder of entry `index` left (the caller holds its lock):
    /// its count as a waiter, and a subscriber's place among the gating ones. The table
    /// frees or reuses the entry after.
    pub(crate) fn settle_dead(&self, index: u32, session: u32) -> Result<Settle, Corruption> {
        let control = self.control();
        let parked = self.line(index).entry.parked();
        match (index, session & SESSION_STATE) {
            (PUBLISHER_ENTRY, PUBLISHER) => {
                // Killed while parked (waiting for room), it is still counted as a
                // waiter: every subscriber's notify would make a syscall for it.
                control.not_full.settle_dead_waiter(parked);
            }
            (index, SUBSCRIBER) if index != PUBLISHER_ENTRY => {
                control.not_empty.settle_dead_waiter(parked);
                self.ungate(index);
            }
            _ => {
                return Err(Corruption::State {
                    word: "a broadcast participant's session word",
                    found: session,
                    expected: SESSION_STATES,
                });
            }
        }
        Ok(Settle::Done)
    }

    /// Takes subscriber entry `index` off the gating set (it leaves or died), and wakes a
    /// publisher that may be waiting for it. Clearing a clear bit is harmless.
    pub(crate) fn ungate(&self, index: u32) {
        let control = self.control();
        // SYNC(gating): Release; after the subscriber's last read.
        control.gating.clear(index, Ordering::Release);
        control.not_full.notify();
    }

    /// Retires every dead holder of an entry in `state` (the publisher's, or the
    /// subscribers'), other than `own`. Costs one lock probe (a syscall in a segment) per
    /// entry held in that state.
    #[cold]
    pub(crate) fn reap(&self, state: u32, own: u32) -> Result<(), Corruption> {
        let wanted = |session: u32| match session & SESSION_STATE {
            s if s == state => Ok(true),
            PUBLISHER | SUBSCRIBER => Ok(false),
            _ => Err(Corruption::State {
                word: "a broadcast participant's session word",
                found: session,
                expected: SESSION_STATES,
            }),
        };
        self.table().reap(Some(own), wanted, |index, session| {
            self.settle_dead(index, session)
        })?;
        Ok(())
    }
}
