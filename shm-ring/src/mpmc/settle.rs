//! Crash settlement: retiring the entry of a participant that died, and finishing the
//! position it had claimed, exactly once (under the dead one's lock).
//!
//! A producer that died between claiming `p` and publishing it leaves `p`'s slot
//! `EMPTY`: it is marked `SKIPPED` ([`Stats::skipped`](super::Stats::skipped)). A
//! consumer that died holding `p` leaves it `FULL`: it is released to the next lap
//! ([`Stats::reclaimed`](super::Stats::reclaimed)). When a live participant names the
//! same position (one that lost the CAS for it and has not moved on yet), the dead one is
//! left for the next probe rather than guessed at.

use shm_sync::atomic::Ordering;

use super::layout::{CONSUMER, EMPTY, FULL, PRODUCER, SESSION_STATE, SKIPPED, Side};
use super::ring::Ring;
use crate::error::Corruption;

/// What a participant's session word may hold, for [`Corruption::State`].
const PARTICIPANT_STATES: &str = "state 0 (free), 1 (producer) or 2 (consumer) in its low two bits";

/// Whether a dead participant's claim could be settled: `NotYet` when a live
/// participant names the same position (look again later).
pub(crate) use shm_alloc::participants::Settle as Settled;

impl<T> Ring<T> {
    /// Whether a live participant of `side`, other than `except`, names `position` in
    /// its entry.
    pub(crate) fn claimed_by_live(&self, position: u64, side: Side, except: u32) -> bool {
        (0..self.limit()).filter(|&j| j != except).any(|j| {
            let entry = self.entry(j);
            entry.session() & SESSION_STATE == side.session_state()
                // Ordered after the caller's Acquire load of tail or head (SYNC(claim)).
                && entry.word() == position.wrapping_add(1)
                && self.region.is_locked(j)
        })
    }

    /// Settles a claim of `position` by the dead producer `dead`: if the position was
    /// claimed and is still unpublished, and no live producer names it, skips it.
    pub(crate) fn settle_write(&self, position: u64, dead: u32) -> Settled {
        let control = self.control();
        let slot = self.slot(position);
        let empty = self.stamp(position, EMPTY);
        // Acquire: see the current lap of the slot.
        if slot.stamp.load(Ordering::Acquire) != empty {
            return Settled::Done; // published, skipped, or long gone
        }
        // SYNC(claim): Acquire; the claims of whoever took positions below tail are
        // visible after this.
        let tail = control.tail.load(Ordering::Acquire);
        if tail.wrapping_sub(position) as i64 <= 0 {
            // Never claimed: the dead producer lost its CAS or died before it.
            return Settled::Done;
        }
        if self.claimed_by_live(position, Side::Producer, dead) {
            return Settled::NotYet;
        }
        // Release: as a publish (SYNC(slot-published)); the skip carries no data. Failure
        // Relaxed: someone else published or skipped the slot, nothing to read.
        if slot
            .stamp
            .compare_exchange(
                empty,
                self.stamp(position, SKIPPED),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            // Relaxed: a statistic.
            control.counters.skipped.fetch_add(1, Ordering::Relaxed);
            control.not_empty.notify();
        }
        Settled::Done
    }

    /// Settles a claim of `position` by the dead consumer `dead`: if a consumer claimed
    /// it and never released it, and no live consumer names it, releases it.
    pub(crate) fn settle_read(&self, position: u64, dead: u32) -> Settled {
        let control = self.control();
        let slot = self.slot(position);
        // Acquire: see the current lap of the slot.
        let stamp = slot.stamp.load(Ordering::Acquire);
        let full = self.stamp(position, FULL);
        if stamp != full && stamp != self.stamp(position, SKIPPED) {
            return Settled::Done; // released, or never published
        }
        // SYNC(claim): Acquire, as in `settle_write`.
        let head = control.head.load(Ordering::Acquire);
        if head.wrapping_sub(position) as i64 <= 0 {
            return Settled::Done; // not claimed: a live consumer will take it
        }
        if self.claimed_by_live(position, Side::Consumer, dead) {
            return Settled::NotYet;
        }
        // Release: as a consumer's release (SYNC(slot-released)). Failure Relaxed: the
        // slot moved on, nothing to read.
        if slot
            .stamp
            .compare_exchange(
                stamp,
                self.stamp(position.wrapping_add(self.capacity()), EMPTY),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            if stamp == full {
                // Relaxed: a statistic.
                control.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
            }
            control.not_full.notify();
        }
        Settled::Done
    }

    /// Settles what the dead participant `index` left (the caller holds its lock): its
    /// claim, and its place in its side's count. The table frees or reuses the entry
    /// after.
    pub(crate) fn settle_dead(&self, index: u32, session: u32) -> Result<Settled, Corruption> {
        let side = self.side_of(session)?;
        // Killed while parked, it is still counted as a waiter: every notify would make
        // a `FUTEX_WAKE` syscall for it. Its mark says so (once: the mark is cleared).
        self.wait_event(side)
            .settle_dead_waiter(self.entry(index).parked());
        // The claim the dead holder stored last: its lock's release, which this caller
        // acquired, came after it.
        let claim = self.entry(index).word();
        if claim != 0 {
            let position = claim.wrapping_sub(1);
            let settled = match side {
                Side::Producer => self.settle_write(position, index),
                Side::Consumer => self.settle_read(position, index),
            };
            if settled == Settled::NotYet {
                return Ok(Settled::NotYet);
            }
        }
        self.depart(side, index);
        Ok(Settled::Done)
    }

    /// The side a session word says its holder is on.
    fn side_of(&self, session: u32) -> Result<Side, Corruption> {
        match session & SESSION_STATE {
            PRODUCER => Ok(Side::Producer),
            CONSUMER => Ok(Side::Consumer),
            _ => Err(Corruption::State {
                word: "a participant's session word",
                found: session,
                expected: PARTICIPANT_STATES,
            }),
        }
    }

    /// Takes entry `index`, a participant of `side` whose positions are all finished, off
    /// the bitmap, then frees it. Killed in between, it is settled as a dead participant
    /// (whose bit is then cleared again, harmlessly).
    pub(crate) fn leave(&self, index: u32, session: u32, side: Side) {
        self.depart(side, index);
        self.table().free(index, session);
    }

    /// Takes entry `index` of `side` off the bitmap, and wakes sleepers of both sides:
    /// they may be waiting for it to finish.
    fn depart(&self, side: Side, index: u32) {
        self.delist(side, index);
        let control = self.control();
        control.not_empty.notify();
        control.not_full.notify();
    }

    /// Retires every dead participant of `side`, other than `own`. Costs one lock probe
    /// (a syscall in a segment) per attached participant of that side.
    #[cold]
    pub(crate) fn reap(&self, side: Side, own: u32) -> Result<(), Corruption> {
        // The other side's entries are not wanted; an entry of neither side is corrupt.
        let wanted = |session: u32| self.side_of(session).map(|of| of == side);
        self.table().reap(Some(own), wanted, |index, session| {
            self.settle_dead(index, session)
        })?;
        Ok(())
    }
}
