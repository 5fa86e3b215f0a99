//! The publishing side of a broadcast ring.

use std::time::Instant;

use shm_sync::WaitStrategy;
use shm_sync::atomic::Ordering;

use super::layout::{PUBLISHER, PUBLISHER_ENTRY, SKIPPED, STAMP_STATE, SUBSCRIBER, WRITING};
use super::ring::Ring;
use super::{Publisher, Stats};
use crate::core::blocking::{Refusal, block};
use crate::core::liveness::PeerWatch;
use crate::error::{Corruption, Error, SendError, SendTimeoutError, TrySendError};
use crate::message::Message;

impl<T: Message> Publisher<T> {
    /// Takes the publisher's entry, settling a dead predecessor, and finds where to go on:
    /// after the last message published, past a slot a dead publisher left half-written
    /// (marked skipped, counted in [`Stats::skipped`]).
    pub(crate) fn attach(ring: Ring<T>, wait: WaitStrategy) -> Result<Self, Error> {
        let table = ring.table();
        let claimed = table
            .claim_in(
                PUBLISHER_ENTRY..PUBLISHER_ENTRY + 1,
                PUBLISHER,
                |index, session| ring.settle_dead(index, session).map_err(Error::Corrupted),
            )?
            .ok_or(Error::PublisherTaken)?;
        table.mark(&claimed);
        let tail = Self::recover(&ring).map_err(Error::Corrupted)?;
        Ok(Publisher {
            lock: Some(claimed.guard),
            session: claimed.session,
            tail,
            gate: if ring.blocks() { tail } else { u64::MAX },
            untether_after: None,
            blocked_since: None,
            ring,
            wait,
            watch: PeerWatch::default(),
        })
    }

    /// The position to publish next: the ring's tail, moved past the slot of a publisher
    /// that died between its stamps (or between its last stamp and its store of tail).
    fn recover(ring: &Ring<T>) -> Result<u64, Corruption> {
        let control = ring.control();
        // SYNC(tail): Acquire; the stamps below it are published.
        let mut tail = control.tail.load(Ordering::Acquire);
        let slot = ring.slot(tail);
        // Acquire: the latest stamp of the slot, which only a publisher holding the
        // entry (this one now) writes.
        let stamp = slot.stamp.load(Ordering::Acquire);
        let own = stamp >> 2 == tail.wrapping_add(1);
        if own && stamp & STAMP_STATE == WRITING {
            // SYNC(slot-published): Release; the skip carries no data.
            slot.stamp
                .store(Ring::<T>::stamp(tail, SKIPPED), Ordering::Release);
            // Relaxed: a statistic; only the publisher writes it.
            let skipped = control.counters.skipped.load(Ordering::Relaxed);
            control
                .counters
                .skipped
                .store(skipped + 1, Ordering::Relaxed);
        } else if !own
            && stamp != 0
            && stamp >> 2 != (tail.wrapping_add(1)).wrapping_sub(ring.capacity())
        {
            // The slot of tail holds neither tail's nor the previous lap's position.
            return Err(Corruption::Slot {
                position: tail,
                stamp,
            });
        }
        if own {
            tail = tail.wrapping_add(1);
            // SYNC(tail): Release.
            control.tail.store(tail, Ordering::Release);
            control.not_empty.notify();
        }
        Ok(tail)
    }

    /// Publishes `value` if the policy lets it now: always under `Lap`; under `Block`,
    /// once every gating subscriber has read the slot it overwrites.
    /// `written` runs once, when the message is in its slot (see [`Ring::write`]).
    #[inline(always)]
    fn step(
        &mut self,
        value: &T,
        probe: bool,
        written: &mut Option<impl FnOnce()>,
    ) -> Result<(), Refusal> {
        let position = self.tail;
        if position >= self.gate {
            self.regate(probe, 1)?;
        }
        self.ring.write(position, value, || {
            if let Some(written) = written.take() {
                written();
            }
        });
        self.tail = position.wrapping_add(1);
        let control = self.ring.control();
        // SYNC(tail): Release; pairs with the Acquire load of a subscriber that joins or
        // lags: every message below it is published.
        control.tail.store(self.tail, Ordering::Release);
        let notified = control.not_empty.notify();
        let activity = &self.ring.line(PUBLISHER_ENTRY).activity;
        if self.watch.woke(activity.woke(notified)) {
            // A subscriber killed while parked: settle it (a corrupt table is reported
            // by the next call that can).
            let _ = self.ring.reap(SUBSCRIBER, PUBLISHER_ENTRY);
        }
        Ok(())
    }

    /// Recomputes how far the publisher may go (`Block`): to a whole ring past the
    /// slowest gating subscriber. `Busy` while that leaves fewer than `room` slots past
    /// the tail; probes the
    /// subscribers' locks now and then (always when `probe`), so that a dead one stops
    /// gating.
    #[cold]
    fn regate(&mut self, probe: bool, room: u64) -> Result<(), Refusal> {
        self.gate = self.gate_now();
        if self.tail + room <= self.gate {
            self.blocked_since = None;
            return Ok(());
        }
        if self.watch.tick(probe) {
            self.ring.reap(SUBSCRIBER, PUBLISHER_ENTRY)?;
            self.gate = self.gate_now();
            if self.tail + room <= self.gate {
                self.blocked_since = None;
                return Ok(());
            }
        }
        if let Some(after) = self.untether_after {
            let now = Instant::now();
            let since = *self.blocked_since.get_or_insert(now);
            if now.duration_since(since) >= after {
                self.untether_laggards();
                self.gate = self.gate_now();
                if self.tail + room <= self.gate {
                    self.blocked_since = None;
                    return Ok(());
                }
            }
        }
        Err(Refusal::Busy)
    }

    /// Stops waiting for the gating subscribers that hold the publisher back (a whole
    /// ring behind): each is flagged untethered, then taken off the gating set.
    #[cold]
    fn untether_laggards(&self) {
        let control = self.ring.control();
        let holding = self.tail.saturating_sub(self.ring.capacity());
        // SYNC(gating): Acquire, as in `gate_now`.
        for index in control
            .gating
            .iter(self.ring.limit() + 1, Ordering::Acquire)
        {
            let line = self.ring.line(index);
            // SYNC(slot-released): Acquire, as in `gate_now`.
            if line.cursor.load(Ordering::Acquire) <= holding {
                // SYNC(untether): Release; the subscriber that sees its bit gone for this
                // reason sees the flag first.
                line.untethered.store(1, Ordering::Release);
                // SYNC(gating): Release.
                control.gating.clear(index, Ordering::Release);
            }
        }
    }

    /// How long a live subscriber may hold this publisher back (`Block`) before the
    /// publisher stops waiting for it: it is then flagged untethered (its next receive
    /// says [`Untethered`](super::TryRecvError::Untethered)) and may lag from then on, as
    /// under `Lap`. `None` (the default): wait for ever. No effect under `Lap`. The time
    /// is checked while the publisher is held back, at least every `LIVENESS_PERIOD`.
    pub fn set_untether_after(&mut self, after: Option<std::time::Duration>) {
        self.untether_after = after;
    }

    /// The first position the publisher may not write yet: the slowest gating
    /// subscriber's cursor (clamped to the last ring), plus the capacity.
    fn gate_now(&self) -> u64 {
        let control = self.ring.control();
        let tail = self.tail;
        let capacity = self.ring.capacity();
        // SYNC(join): the light side of an asymmetric fence pair (a compiler fence in a
        // registered process; `shm_sync::asymmetric`), paired with the heavy side a
        // joining subscriber issues: either the scan below sees its gating bit, or it
        // sees this tail (or a later one) and starts at or after it, beyond what this
        // scan lets the publisher overwrite. Light, because a streaming publisher scans
        // about once per message once the ring is full.
        shm_sync::asymmetric::light();
        let mut slowest = tail;
        // SYNC(gating): Acquire; pairs with the subscriber's Release (set at join, clear
        // at leave), so its cursor read below is at least the one it joined with.
        for index in control
            .gating
            .iter(self.ring.limit() + 1, Ordering::Acquire)
        {
            // SYNC(slot-released): Acquire; pairs with the subscriber's Release store of
            // its cursor: its reads of the slots below it are done.
            let cursor = self.ring.line(index).cursor.load(Ordering::Acquire);
            // A cursor ahead of the tail (a broken subscriber) holds nothing back; one
            // more than a ring behind (it rejoined after the ring went on) holds the
            // publisher until it catches up to the oldest message.
            let cursor = cursor.min(tail).max(tail.saturating_sub(capacity));
            slowest = slowest.min(cursor);
        }
        slowest + capacity
    }

    /// Publishes `value` without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] under [`Overflow::Block`](super::Overflow::Block) when the
    /// slowest gating subscriber has not read the message a whole ring back; never under
    /// `Lap`. [`TrySendError::Corrupted`] for a corrupt participant table. The value
    /// comes back in the error.
    #[inline]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        self.step(&value, false, &mut Some(|| {})).map_err(|r| {
            self.ring
                .line(PUBLISHER_ENTRY)
                .activity
                .refused(r)
                .try_send(value)
        })
    }

    /// Publishes `value`, waiting under `Block` with this publisher's wait strategy while
    /// the slowest gating subscriber is a whole ring behind (a dead subscriber stops
    /// gating within `LIVENESS_PERIOD`).
    ///
    /// # Errors
    ///
    /// [`SendError::Corrupted`] for a corrupt participant table; never `Disconnected`: a
    /// broadcast ring takes messages while no subscriber is attached, as publish-subscribe
    /// does. The value comes back in the error.
    pub fn send(&mut self, value: T) -> Result<(), SendError<T>> {
        Ok(self.send_deadline(value, None)?)
    }

    /// Publishes `value`, waiting at most `timeout` for the slowest gating subscriber.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] when the time passes with the ring full, otherwise
    /// as [`send`](Self::send).
    pub fn send_timeout(
        &mut self,
        value: T,
        timeout: std::time::Duration,
    ) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline(value, Instant::now().checked_add(timeout))
    }

    fn send_deadline(
        &mut self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        self.send_with(value, Some(deadline), || {})
    }

    /// Waits until the next `room` slots may be written (`Block`; at once under `Lap`):
    /// without waiting (`deadline` `None`), or until the deadline (`Some(None)`: for
    /// ever). `room` is at most the capacity.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn reserve(
        &mut self,
        room: u64,
        deadline: Option<Option<Instant>>,
    ) -> Result<(), Refusal> {
        if self.tail + room <= self.gate {
            return Ok(());
        }
        match (self.regate(false, room), deadline) {
            (Err(Refusal::Busy), Some(deadline)) => {
                self.wait_for_room(deadline, |publisher, probe| publisher.regate(probe, room))
            }
            (done, _) => done,
        }
    }

    /// Publishes `value` without waiting (`deadline` `None`) or waiting until the
    /// deadline (`Some(None)`: for ever); `written` runs once the message is in its slot,
    /// before the stamp publishes it.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn send_with(
        &mut self,
        value: T,
        deadline: Option<Option<Instant>>,
        written: impl FnOnce(),
    ) -> Result<(), SendTimeoutError<T>> {
        let mut written = Some(written);
        let refused = match self.step(&value, false, &mut written) {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        let Some(deadline) = deadline else {
            let activity = &self.ring.line(PUBLISHER_ENTRY).activity;
            return Err(match activity.refused(refused).try_send(value) {
                TrySendError::Full(v) => SendTimeoutError::Timeout(v),
                TrySendError::Disconnected(v) => SendTimeoutError::Disconnected(v),
                TrySendError::Corrupted(v, c) => SendTimeoutError::Corrupted(v, c),
            });
        };
        self.wait_for_room(deadline, |publisher, probe| {
            publisher.step(&value, probe, &mut written)
        })
        .map_err(|r| r.send_timeout(value))
    }

    /// Runs `step` until it is not `Busy`, parked on the ring's `not_full` event count
    /// with this publisher's wait strategy in between, until `deadline`.
    fn wait_for_room(
        &mut self,
        deadline: Option<Instant>,
        mut step: impl FnMut(&mut Self, bool) -> Result<(), Refusal>,
    ) -> Result<(), Refusal> {
        let ring = self.ring.clone();
        let mark = ring.line(PUBLISHER_ENTRY).entry.parked();
        // Slices: to probe for dead subscribers, and to see the untether time pass.
        let peers_may_die = ring.region.peers_may_die() || self.untether_after.is_some();
        block(
            &ring.control().not_full,
            Some(mark),
            &ring.line(PUBLISHER_ENTRY).activity,
            self.wait,
            peers_may_die,
            deadline,
            |probe| step(self, probe),
        )
    }

    /// How many messages were published: the position of the next.
    #[must_use]
    pub fn published(&self) -> u64 {
        self.tail
    }

    /// A snapshot of the ring's counts.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats::of(&self.ring)
    }

    /// The number of slots, a power of two.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// The most subscribers that can be attached at once.
    #[must_use]
    pub fn subscriber_limit(&self) -> u32 {
        self.ring.limit()
    }

    /// The wait strategy of the blocking calls.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Ends this handle as if its process had been killed after writing the `WRITING`
    /// stamp of the next position: the lock goes, the entry and the slot stay (tests of
    /// crash handling).
    #[cfg(test)]
    pub(crate) fn simulate_crash_mid_write(mut self) {
        let slot = self.ring.slot(self.tail);
        // Relaxed: a test's crash; the lock's release publishes it.
        slot.stamp
            .store(Ring::<T>::stamp(self.tail, WRITING), Ordering::Relaxed);
        self.lock = None;
    }
}

impl<T: Message> Drop for Publisher<T> {
    fn drop(&mut self) {
        if self.lock.is_some() {
            // Every message is published: the subscribers drain them, then find the
            // entry free (SYNC(entry): its Release store) and disconnect.
            self.ring.table().free(PUBLISHER_ENTRY, self.session);
            self.ring.control().not_empty.notify();
            self.lock = None;
        }
    }
}

impl<T: Message> Publisher<T> {
    /// Whether the next `room` slots may be written now (or a send would fail at once),
    /// without writing: `Waitable::ready` for `room` 1, and for a frame, its cells.
    pub(crate) fn ready_for(&mut self, room: u64, probe: bool) -> bool {
        self.tail + room <= self.gate || !matches!(self.regate(probe, room), Err(Refusal::Busy))
    }
}

crate::wait_set::waitable!(
    [T: Message + 'static] Publisher<T>,
    ready: |this, probe| this.ready_for(1, probe),
    event: |this| shm_sync::Waiting {
        event: &this.ring.control().not_full,
        mark: Some(this.ring.line(PUBLISHER_ENTRY).entry.parked()),
    },
    region: |this| this.ring.region,
    // As `wait_for_room`: the untether time passes while nothing is notified.
    peers_may_die: |this| this.ring.region.peers_may_die() || this.untether_after.is_some(),
);
