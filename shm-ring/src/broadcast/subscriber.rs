//! The receiving side of a broadcast ring.

use std::time::Instant;

use shm_alloc::participants::FREE;
use shm_sync::atomic::{Ordering, fence};
use shm_sync::{Retries, WaitStrategy};

use super::error::{RecvError, RecvTimeoutError, TryRecvError};
use super::layout::{
    PUBLISHED, PUBLISHER, PUBLISHER_ENTRY, SESSION_STATE, SKIPPED, STAMP_STATE, SUBSCRIBER, WRITING,
};
use super::ring::Ring;
use super::{Start, Subscriber, SubscriberStats};
use crate::core::blocking::{Refusal, block};
use crate::core::liveness::PeerWatch;
use crate::error::{Corruption, Error};
use crate::message::Message;

/// What a receive step found.
pub(crate) enum Delivery<T> {
    /// The next message.
    Message(T),
    /// This many messages were overwritten before this subscriber read them.
    Lagged(u64),
    /// The publisher stopped waiting for this subscriber.
    Untethered,
}

/// What to do after a poll that found no message at the cursor.
enum Next {
    /// Poll again: the cursor moved, or the slot changed.
    Again,
    /// The publisher is gone: poll once more, then disconnect.
    LastPoll,
    /// The cursor jumped over this many lost messages.
    Lagged(u64),
    /// The publisher untethered this subscriber (said once).
    Untethered,
}

/// A subscriber's counts, mirrored in its table line for other processes to read.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) received: u64,
    pub(crate) lagged: u64,
    pub(crate) missed: u64,
    pub(crate) skipped: u64,
}

impl<T: Message> Subscriber<T> {
    /// Takes subscriber entry `id + 1` (or the first free one), settling a dead holder
    /// found there, and joins at the position `start` says, or (given an `id` whose
    /// entry was held before) where that subscriber stopped.
    pub(crate) fn attach(
        ring: Ring<T>,
        id: Option<u32>,
        start: Start,
        wait: WaitStrategy,
    ) -> Result<Self, Error> {
        let limit = ring.limit();
        let range = match id {
            Some(id) if id < limit => id + 1..id + 2,
            Some(id) => return Err(Error::InvalidSubscriber { id, limit }),
            None => 1..limit + 1,
        };
        let table = ring.table();
        let claimed = table.claim_in(range, SUBSCRIBER, |index, session| {
            ring.settle_dead(index, session).map_err(Error::Corrupted)
        })?;
        let claimed = claimed.ok_or(match id {
            Some(id) => Error::SubscriberTaken { id },
            None => Error::ParticipantsFull { limit },
        })?;
        let index = claimed.index;
        // The claim's generation is past 1: someone held this id before.
        let resume = id.is_some() && claimed.session >> 2 > 1;
        table.mark(&claimed);
        let line = ring.line(index);
        let control = ring.control();
        let capacity = ring.capacity();
        // SYNC(tail): Acquire; the messages below it are published.
        let tail = control.tail.load(Ordering::Acquire);
        let (mut cursor, counts, mut settled) = if resume {
            // Relaxed: the previous holder's, ordered by its lock, which this claim took.
            let cursor = line.cursor.load(Ordering::Relaxed);
            if cursor > tail {
                return Err(Error::Corrupted(Corruption::Positions {
                    head: cursor,
                    tail,
                    capacity,
                }));
            }
            // Relaxed: as the cursor.
            let counts = Counts {
                received: line.received.load(Ordering::Relaxed),
                lagged: line.lagged.load(Ordering::Relaxed),
                missed: line.missed.load(Ordering::Relaxed),
                skipped: line.skipped.load(Ordering::Relaxed),
            };
            (cursor, counts, true)
        } else {
            match start {
                Start::Newest => (tail, Counts::default(), true),
                Start::Oldest => (tail.saturating_sub(capacity), Counts::default(), false),
            }
        };
        // Relaxed: published by the gating bit's Release below, and read by nobody under
        // `Lap` but a later holder of the entry (ordered by the lock).
        line.cursor.store(cursor, Ordering::Relaxed);
        // A new session gates the publisher again. Relaxed: published as the cursor.
        line.untethered.store(0, Ordering::Relaxed);
        if ring.blocks() {
            // SYNC(gating): Release; a publisher that sees the bit sees the cursor.
            control.gating.set(index, Ordering::Release);
            // SYNC(join): the heavy side of an asymmetric fence pair (a membarrier), paired
            // with the light one the publisher issues before each scan: either its next
            // scan sees the bit, or the tail loaded below is at least the one its last
            // scan let it run a whole ring past. A membarrier that cannot reach the
            // publisher's process leaves no such pairing: the messages overwritten while
            // this subscriber joins then count as before its start (as `Start::Oldest`).
            if shm_sync::asymmetric::heavy() == shm_sync::asymmetric::Heavy::Unreached {
                settled = false;
            }
            if start == Start::Newest && !resume {
                // SYNC(tail): Acquire.
                cursor = control.tail.load(Ordering::Acquire);
                // SYNC(slot-released): Release, as after a read.
                line.cursor.store(cursor, Ordering::Release);
            }
        }
        let subscriber = Subscriber {
            lock: Some(claimed.guard),
            index,
            session: claimed.session,
            cursor,
            settled,
            told_untethered: false,
            counts,
            wait,
            watch: PeerWatch::default(),
            ring,
        };
        subscriber.publish_counts();
        Ok(subscriber)
    }

    /// Receives the message at the cursor, or finds out why there is none. `accept`
    /// sees each message read whole before it is delivered: `false` refuses it (the pool
    /// chunk it names is gone: [`chunks`](super::chunks)), and the message is then
    /// passed over as lost if it is still in its slot.
    #[inline(always)]
    fn step(
        &mut self,
        probe: bool,
        accept: &mut impl FnMut(&T) -> bool,
    ) -> Result<Delivery<T>, Refusal> {
        let mut last_poll = false;
        let mut retries = Retries::new();
        loop {
            let position = self.cursor;
            let slot = self.ring.slot(position);
            // SYNC(slot-published): Acquire; pairs with the publisher's Release store of
            // the stamp: the bytes it wrote before are visible.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == Ring::<T>::stamp(position, PUBLISHED) {
                let value = slot.payload.load();
                // SYNC(seqlock): Acquire; pairs with the publisher's Release fence after
                // a later WRITING stamp: if the copy read any byte written after it, the
                // load of the stamp below sees that stamp.
                fence(Ordering::Acquire);
                #[cfg(loom)]
                let unchecked = faults::recheck_dropped();
                #[cfg(not(loom))]
                let unchecked = false;
                // Relaxed: ordered after the copy by the fence.
                if unchecked || slot.stamp.load(Ordering::Relaxed) == stamp {
                    if accept(&value) {
                        self.delivered();
                        return Ok(Delivery::Message(value));
                    }
                    // Acquire: as the first load. Still there: the message's chunk was
                    // retired under it (the subscriber had not joined, or was thought
                    // dead, when every live one was past it). Else it was overwritten,
                    // and the next poll lags.
                    if slot.stamp.load(Ordering::Acquire) == stamp {
                        return Ok(self.gone());
                    }
                    continue;
                }
                // Overwritten while copied: what was copied is dropped.
            }
            match self.not_published(probe, last_poll)? {
                Next::Again => {}
                Next::LastPoll => last_poll = true,
                Next::Lagged(missed) => return Ok(Delivery::Lagged(missed)),
                Next::Untethered => return Ok(Delivery::Untethered),
            }
            if !retries.again() {
                // Relaxed: a report.
                let stamp = self.ring.slot(self.cursor).stamp.load(Ordering::Relaxed);
                return Err(Refusal::Corrupted(Corruption::Slot {
                    position: self.cursor,
                    stamp,
                }));
            }
        }
    }

    /// Whether a receive would not find the ring empty, without receiving: what
    /// `Waitable::ready` says. Ready when the slot at the cursor holds this position's
    /// message (or a skip, or a stamp no protocol state has: the call reports it), a
    /// later lap's (the call reports the loss), or the untether notice waits; otherwise
    /// when the publisher is gone (probed when `probe`, or when due). A half-written
    /// slot of a dead publisher is passed over here, as the call would.
    pub(crate) fn ready(&mut self, probe: bool) -> bool {
        let position = self.cursor;
        // Acquire: as in `step`.
        let stamp = self.ring.slot(position).stamp.load(Ordering::Acquire);
        let writing = stamp == Ring::<T>::stamp(position, WRITING);
        if stamp >> 2 == position.wrapping_add(1) && !writing {
            return true;
        }
        // SYNC(untether): Acquire; as in `not_published`.
        if !self.told_untethered && self.line().untethered.load(Ordering::Acquire) != 0 {
            return true;
        }
        let holds = (stamp >> 2).wrapping_sub(1);
        let capacity = self.ring.capacity();
        let previous = if position < capacity {
            stamp == 0
        } else {
            stamp != 0 && holds == position - capacity
        };
        if !(writing || previous) {
            return true; // a later lap, or corrupt
        }
        !matches!(self.nothing_yet(probe, false, writing), Err(Refusal::Busy))
    }

    /// The slot at the cursor holds no message to read: says what to do next, or why
    /// there is nothing to receive.
    #[cold]
    fn not_published(&mut self, probe: bool, last_poll: bool) -> Result<Next, Refusal> {
        // SYNC(untether): Acquire; pairs with the publisher's Release store of the flag.
        if !self.told_untethered && self.line().untethered.load(Ordering::Acquire) != 0 {
            self.told_untethered = true;
            return Ok(Next::Untethered);
        }
        let position = self.cursor;
        let capacity = self.ring.capacity();
        // Acquire: as in `step`.
        let stamp = self.ring.slot(position).stamp.load(Ordering::Acquire);
        let corrupt = Refusal::Corrupted(Corruption::Slot { position, stamp });
        let holds = (stamp >> 2).wrapping_sub(1);
        if stamp >> 2 == position.wrapping_add(1) {
            return match stamp & STAMP_STATE {
                PUBLISHED => Ok(Next::Again),
                SKIPPED => {
                    self.skip();
                    Ok(Next::Again)
                }
                WRITING => self.nothing_yet(probe, last_poll, true),
                _ => Err(corrupt),
            };
        }
        if stamp != 0 && holds > position {
            // A later lap overwrote it (a later position in the same slot).
            if (holds ^ position) & (capacity - 1) != 0 {
                return Err(corrupt);
            }
            return self.lag(holds);
        }
        // Not written for this position yet: the slot holds the previous lap's message,
        // or nothing in the first lap.
        let previous = if position < capacity {
            stamp == 0
        } else {
            stamp != 0 && holds == position - capacity
        };
        if !previous {
            return Err(corrupt);
        }
        self.nothing_yet(probe, last_poll, false)
    }

    /// Nothing to read at the cursor yet (`writing`: the publisher is writing it): `Busy`
    /// while the publisher lives; a slot its dead writer left half-written is passed
    /// over (counted); `Disconnected` after a last poll once the publisher is gone.
    #[inline]
    fn nothing_yet(
        &mut self,
        probe: bool,
        last_poll: bool,
        writing: bool,
    ) -> Result<Next, Refusal> {
        let due = self.watch.tick(probe);
        let session = self.ring.line(PUBLISHER_ENTRY).entry.session();
        let state = session & SESSION_STATE;
        if state != PUBLISHER && state != FREE {
            return Err(Refusal::Corrupted(Corruption::State {
                word: "the broadcast publisher's session word",
                found: session,
                expected: "state 0 (free) or 1 (publisher) in its low two bits",
            }));
        }
        // Free after a first publisher: it left (or died and was retired).
        let left = state == FREE && session != 0;
        if writing {
            if (due || left) && self.writer_dead() {
                self.skip();
                return Ok(Next::Again);
            }
            return Err(Refusal::Busy);
        }
        let dead = state == PUBLISHER && due && !self.ring.region.is_locked(PUBLISHER_ENTRY);
        if dead {
            // Settles its count as a parked waiter; the entry is then free.
            self.ring.reap(PUBLISHER, self.index)?;
        }
        if !(left || dead) {
            return Err(Refusal::Busy);
        }
        // Everything published before it left is visible now (SYNC(entry)): poll once
        // more.
        if last_poll {
            Err(Refusal::Disconnected)
        } else {
            Ok(Next::LastPoll)
        }
    }

    /// Whether the `WRITING` stamp at the cursor was left by a publisher that died: its
    /// lock is free, and the stamp is still there after the probe (a live publisher
    /// holds the lock while it writes; one that leaves finishes its message first; one
    /// that attaches after marks the slot skipped, never `WRITING` again).
    #[cold]
    fn writer_dead(&self) -> bool {
        if self.ring.region.is_locked(PUBLISHER_ENTRY) {
            return false;
        }
        let position = self.cursor;
        // Acquire: after the probe.
        let stamp = self.ring.slot(position).stamp.load(Ordering::Acquire);
        if stamp != Ring::<T>::stamp(position, WRITING) {
            return false;
        }
        // Retire it: its parking count settled, its entry free (a corrupt table is
        // reported by the next poll).
        let _ = self.ring.reap(PUBLISHER, self.index);
        true
    }

    /// The slot at the cursor holds position `holds`, a whole lap or more later: jumps
    /// to the oldest message still in the ring, and reports what was lost (unless this
    /// subscriber joined at the oldest message and has received nothing yet: then the
    /// oldest is wherever it is now).
    #[cold]
    fn lag(&mut self, holds: u64) -> Result<Next, Refusal> {
        let position = self.cursor;
        // SYNC(tail): Acquire; the publisher stores a stamp only after the tail of the
        // message before (Release), so `holds <= tail`.
        let tail = self.ring.control().tail.load(Ordering::Acquire);
        if holds > tail {
            return Err(Refusal::Corrupted(Corruption::Positions {
                head: holds,
                tail,
                capacity: self.ring.capacity(),
            }));
        }
        let oldest = tail.saturating_sub(self.ring.capacity());
        let next = oldest.max(position.wrapping_add(1));
        let missed = next - position;
        self.cursor = next;
        // SYNC(slot-released): Release.
        self.line().cursor.store(next, Ordering::Release);
        if !self.settled {
            return Ok(Next::Again);
        }
        self.counts.lagged += 1;
        self.counts.missed += missed;
        self.publish_counts();
        Ok(Next::Lagged(missed))
    }

    /// This subscriber's line of the table.
    #[inline(always)]
    fn line(&self) -> &super::layout::Line {
        self.ring.line(self.index)
    }

    /// Moves the cursor past the message just read.
    #[inline(always)]
    fn delivered(&mut self) {
        self.cursor = self.cursor.wrapping_add(1);
        self.counts.received += 1;
        self.settled = true;
        let line = self.ring.line(self.index);
        // SYNC(slot-released): Release; pairs with the publisher's Acquire load of the
        // cursor when it scans (`Block`): this read is done before it overwrites.
        line.cursor.store(self.cursor, Ordering::Release);
        // Relaxed: a counter, written by its owner only.
        line.received.store(self.counts.received, Ordering::Relaxed);
        if self.ring.blocks() {
            self.wake_publisher();
        }
    }

    /// Wakes a publisher parked waiting for room (`Block`).
    #[inline(always)]
    fn wake_publisher(&mut self) {
        let notified = self.ring.control().not_full.notify();
        if self.watch.woke(self.line().activity.woke(notified)) {
            // A publisher killed while parked: settle it.
            let _ = self.ring.reap(PUBLISHER, self.index);
        }
    }

    /// Passes over the message at the cursor, whose pool chunk is gone: one lost.
    #[cold]
    fn gone(&mut self) -> Delivery<T> {
        self.cursor = self.cursor.wrapping_add(1);
        self.counts.lagged += 1;
        self.counts.missed += 1;
        // SYNC(slot-released): Release.
        self.line().cursor.store(self.cursor, Ordering::Release);
        self.publish_counts();
        if self.ring.blocks() {
            self.wake_publisher();
        }
        Delivery::Lagged(1)
    }

    /// Passes over the slot at the cursor: skipped, or left half-written by a dead
    /// publisher.
    #[cold]
    fn skip(&mut self) {
        self.cursor = self.cursor.wrapping_add(1);
        self.counts.skipped += 1;
        // SYNC(slot-released): Release.
        self.line().cursor.store(self.cursor, Ordering::Release);
        self.publish_counts();
        if self.ring.blocks() {
            self.wake_publisher();
        }
    }

    /// Mirrors the counts in the line.
    fn publish_counts(&self) {
        let line = self.line();
        // Relaxed: counters, written by their owner only.
        line.received.store(self.counts.received, Ordering::Relaxed);
        line.lagged.store(self.counts.lagged, Ordering::Relaxed);
        line.missed.store(self.counts.missed, Ordering::Relaxed);
        line.skipped.store(self.counts.skipped, Ordering::Relaxed);
    }

    /// Receives the next message if there is one, without blocking.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`]; [`TryRecvError::Lagged`] when the messages from the
    /// cursor on were overwritten (`Lap`, or a subscriber that rejoined after the ring
    /// went a lap past it): the cursor is then at the oldest message still in the ring,
    /// which the next call receives; [`TryRecvError::Disconnected`] when every message is
    /// received and the publisher is gone (left, or dead); [`TryRecvError::Corrupted`].
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match self.step(false, &mut |_| true) {
            Ok(Delivery::Message(value)) => Ok(value),
            Ok(Delivery::Lagged(missed)) => Err(TryRecvError::Lagged { missed }),
            Ok(Delivery::Untethered) => Err(TryRecvError::Untethered),
            Err(refusal) => Err(refusal.into()),
        }
    }

    /// Receives the next message, waiting with this subscriber's wait strategy while
    /// there is none.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] as [`try_recv`](Self::try_recv);
    /// [`RecvError::Disconnected`] when every message is received and the publisher is
    /// gone (a dead one is seen within `LIVENESS_PERIOD`); [`RecvError::Corrupted`].
    pub fn recv(&mut self) -> Result<T, RecvError> {
        Ok(self.recv_deadline(None)?)
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] when the time passes with no message, otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: std::time::Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(Instant::now().checked_add(timeout))
    }

    fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        match self.receive(Some(deadline), &mut |_| true) {
            Ok(Delivery::Message(value)) => Ok(value),
            Ok(Delivery::Lagged(missed)) => Err(RecvTimeoutError::Lagged { missed }),
            Ok(Delivery::Untethered) => Err(RecvTimeoutError::Untethered),
            Err(refusal) => Err(refusal.into()),
        }
    }

    /// Receives the next message (`accept` as in `step`): without waiting (`deadline`
    /// `None`), or waiting with the wait strategy until the deadline (`Some(None)`: for
    /// ever).
    #[inline]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn receive(
        &mut self,
        deadline: Option<Option<Instant>>,
        accept: &mut impl FnMut(&T) -> bool,
    ) -> Result<Delivery<T>, Refusal> {
        match (self.step(false, accept), deadline) {
            (Err(Refusal::Busy), Some(deadline)) => {
                let ring = self.ring.clone();
                let mark = ring.line(self.index).entry.parked();
                block(
                    &ring.control().not_empty,
                    Some(mark),
                    &ring.line(self.index).activity,
                    self.wait,
                    ring.region.peers_may_die(),
                    deadline,
                    |probe| self.step(probe, accept),
                )
            }
            (done, _) => done,
        }
    }

    /// The ring this subscriber reads.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn ring(&self) -> &Ring<T> {
        &self.ring
    }

    /// This subscriber's id: `0..subscriber_limit`. Attaching again under this id
    /// ([`Builder::subscriber_with_id`](super::Builder::subscriber_with_id)) resumes
    /// where this one stops.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.index - 1
    }

    /// The position of the next message this subscriber reads.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// This subscriber's counts.
    #[must_use]
    pub fn stats(&self) -> SubscriberStats {
        SubscriberStats {
            id: self.id(),
            position: self.cursor,
            received: self.counts.received,
            lagged: self.counts.lagged,
            missed: self.counts.missed,
            skipped: self.counts.skipped,
            // Relaxed: a snapshot.
            untethered: self.line().untethered.load(Ordering::Relaxed) != 0,
        }
    }

    /// The ring's counts.
    #[must_use]
    pub fn ring_stats(&self) -> super::Stats {
        super::Stats::of(&self.ring)
    }

    /// The number of slots, a power of two.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// The wait strategy of the blocking calls.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Ends this handle as if its process had been killed: the lock goes, the entry and
    /// its gating bit stay (tests of crash handling).
    #[cfg(test)]
    pub(crate) fn simulate_crash(mut self) {
        self.lock = None;
    }
}

impl<T: Message> Drop for Subscriber<T> {
    fn drop(&mut self) {
        if self.lock.is_some() {
            if self.ring.blocks() {
                self.ring.ungate(self.index);
            }
            self.ring.table().free(self.index, self.session);
            self.lock = None;
        }
    }
}

/// Fault injection for the loom models (built only under loom): drops the subscriber's
/// second load of the stamp, so that the seqlock model shows it catches what that load
/// prevents.
#[cfg(loom)]
pub(crate) mod faults {
    use std::cell::Cell;

    std::thread_local! {
        static RECHECK_DROPPED: Cell<bool> = const { Cell::new(false) };
    }

    /// Drops the recheck (`true`) or restores it (`false`).
    pub(crate) fn drop_recheck(dropped: bool) {
        RECHECK_DROPPED.with(|d| d.set(dropped));
    }

    pub(super) fn recheck_dropped() -> bool {
        RECHECK_DROPPED.with(Cell::get)
    }
}

crate::wait_set::waitable!(
    [T: Message + 'static] Subscriber<T>,
    ready: |this, probe| Subscriber::ready(this, probe),
    event: |this| shm_sync::Waiting {
        event: &this.ring.control().not_empty,
        mark: Some(this.ring.line(this.index).entry.parked()),
    },
    region: |this| this.ring.region,
);
