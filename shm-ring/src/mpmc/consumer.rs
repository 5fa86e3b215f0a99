//! The receiving half of an MPMC ring.

use core::ops::Deref;
use std::time::Instant;

use shm_sync::Retries;
use shm_sync::atomic::Ordering;

use super::Consumer;
use super::layout::{EMPTY, FULL, SKIPPED, STAMP_STATE, Side};
use super::member::Member;
use super::ring::Ring;
use crate::core::blocking::{Refusal, block};
use crate::error::{Corruption, RecvTimeoutError, TryRecvError};
use crate::message::Message;

handle_common!(Consumer, Side::Consumer, "consumer");

impl<T: Message> Consumer<T> {
    /// Claims the next published position: returns it, and this consumer's entry names
    /// it. Passes over skipped slots, releasing them.
    #[inline(always)]
    fn claim(ring: &Ring<T>, me: &mut Member, probe: bool) -> Result<u64, Refusal> {
        if me.pending.is_some() {
            me.finish_pending(ring);
        }
        // SYNC(positions): Acquire.
        let mut head = ring.control().head.load(Ordering::Acquire);
        // Set once every producer was found gone: one more poll, then Disconnected.
        let mut last_poll = false;
        let mut retries = Retries::new();
        loop {
            let control = ring.control();
            let slot = ring.slot(head);
            // SYNC(slot-published): Acquire; pairs with the producer's Release store of
            // the stamp: its write of the message is visible after this.
            let stamp = slot.stamp.load(Ordering::Acquire);
            let full = ring.stamp(head, FULL);
            if stamp == full || stamp == ring.stamp(head, SKIPPED) {
                let entry = ring.entry(me.index);
                // SYNC(claim): Relaxed; published by the Release CAS below.
                entry.set_word(head.wrapping_add(1));
                match Ring::<T>::advance(&control.head, head) {
                    Ok(_) if stamp == full => return Ok(head),
                    Ok(_) => {
                        // Skipped: nothing to read. Release it and go on.
                        ring.finish(Side::Consumer, head, EMPTY);
                        head = head.wrapping_add(1);
                    }
                    Err(actual) => {
                        // Relaxed: a loser must not name a position it did not take.
                        entry.set_word(0);
                        head = actual;
                    }
                }
            } else {
                match Self::not_published(ring, me, head, stamp, probe, last_poll)? {
                    Next::Retry(fresh) => head = fresh,
                    Next::LastPoll => {
                        last_poll = true;
                        // SYNC(positions): Acquire.
                        head = ring.control().head.load(Ordering::Acquire);
                    }
                }
            }
            if !retries.again() {
                return Err(ring.spent(&ring.control().head).into());
            }
        }
    }

    /// The slot of `head` was not published: returns what to do next, or why there is
    /// nothing to receive.
    #[cold]
    fn not_published(
        ring: &Ring<T>,
        me: &mut Member,
        head: u64,
        stamp: u64,
        probe: bool,
        last_poll: bool,
    ) -> Result<Next, Refusal> {
        let due = me.probe_due(probe);
        if stamp == ring.stamp(head, EMPTY) && !due {
            // Nothing published at head yet, the common empty poll: answered without
            // reading the producers' tail, whose line the next claim would otherwise
            // have to take back from this core (a round trip half as long without it,
            // `cargo bench --bench mpmc`). Nothing is claimed, so nothing needs the
            // positions checked now: they are, with each liveness probe, below.
            return Self::nothing_yet(ring, last_poll);
        }
        let control = ring.control();
        let corrupt = |stamp| {
            Refusal::Corrupted(Corruption::Slot {
                position: head,
                stamp,
            })
        };
        if ring.laps_ahead(stamp, head) > 0 {
            // The slot is past `head`: someone consumed it, so head moved on.
            // SYNC(positions): Acquire.
            let fresh = control.head.load(Ordering::Acquire);
            return if fresh == head {
                Err(corrupt(stamp))
            } else {
                Ok(Next::Retry(fresh))
            };
        }
        // Not yet published. Read tail, then the stamp again, which is then at least as
        // new as the claim of `head` if tail is past it.
        // SYNC(positions): Acquire.
        let tail = control.tail.load(Ordering::Acquire);
        // Acquire: as in `claim`.
        let stamp = ring.slot(head).stamp.load(Ordering::Acquire);
        let ahead = ring.laps_ahead(stamp, head);
        let state = stamp & STAMP_STATE;
        if ahead == 0 && state == STAMP_STATE {
            return Err(corrupt(stamp)); // no state of the protocol
        }
        if ahead > 0 || (ahead == 0 && state != EMPTY) {
            return Ok(Next::Retry(head)); // published (or consumed) meanwhile
        }
        let claimed = tail.wrapping_sub(head) as i64;
        if claimed < 0 {
            return Err(Refusal::Corrupted(Corruption::Positions {
                head,
                tail,
                capacity: ring.capacity(),
            }));
        }
        // EMPTY of this lap: unclaimed, or claimed and being written. FULL or SKIPPED
        // of the previous lap: a consumer still holds it, so no producer claimed it.
        let valid =
            ahead == 0 || (ahead == -1 && state != EMPTY && state != STAMP_STATE && claimed == 0);
        if !valid {
            return Err(corrupt(stamp));
        }
        if due {
            me.probe(ring)?;
        }
        Self::nothing_yet(ring, last_poll)
    }

    /// Nothing is published at head: `Disconnected` after a last poll once every
    /// producer is gone, else `Busy`.
    #[inline]
    fn nothing_yet(ring: &Ring<T>, last_poll: bool) -> Result<Next, Refusal> {
        if ring.side_gone(Side::Producer) {
            // Every producer finished before leaving (SYNC(census)): poll once more.
            return if last_poll {
                Err(Refusal::Disconnected)
            } else {
                Ok(Next::LastPoll)
            };
        }
        Err(Refusal::Busy)
    }

    /// Reads the claimed slot of `position`, and releases it.
    #[inline(always)]
    fn read_and_release(&mut self, position: u64) -> T {
        // SAFETY: this consumer claimed `position` (its CAS on head succeeded) after its
        // stamp said FULL, and has not released it, so no producer writes the slot; any
        // bytes are a valid `T`.
        let value = self.ring.slot(position).value.with(|p| unsafe { p.read() });
        let notified = self.ring.finish(Side::Consumer, position, EMPTY);
        self.me.finished(&self.ring, notified);
        value
    }

    /// The ring's id, the same in every process (see `loan`).
    #[cfg(not(loom))]
    pub(crate) fn ring_id(&self) -> u64 {
        self.ring.region.id()
    }

    /// Receives the next message if there is one, without blocking.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`]; [`TryRecvError::Disconnected`] when the ring is empty and
    /// every producer that attached is gone (every message sent before is received
    /// first); [`TryRecvError::Corrupted`].
    #[inline(always)]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let position = Self::claim(&self.ring, &mut self.me, false).map_err(Refusal::try_recv)?;
        Ok(self.read_and_release(position))
    }

    /// Receives the next message in place, without copying: the returned [`RecvGuard`]
    /// derefs to the `T` in its slot, and releases the slot when dropped. If this process
    /// dies while holding the guard, a producer that needs the slot frees it and counts
    /// it in [`Stats::reclaimed`](super::Stats::reclaimed); the message is not delivered again.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = shm_ring::mpmc::channel::<[u8; 64]>(2)?;
    /// tx.try_send([9; 64]).unwrap();
    /// let msg = rx.try_recv_ref().unwrap();
    /// assert_eq!(msg[63], 9);
    /// drop(msg); // releases the slot
    /// # Ok::<(), shm_ring::Error>(())
    /// ```
    pub fn try_recv_ref(&mut self) -> Result<RecvGuard<'_, T>, TryRecvError> {
        let position = Self::claim(&self.ring, &mut self.me, false).map_err(Refusal::try_recv)?;
        self.me.pending = Some(position);
        Ok(RecvGuard {
            consumer: self,
            position,
        })
    }

    crate::core::blocking::recv_calls!("every producer that attached is gone");

    /// Receives the next message, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let (ring, me) = (&self.ring, &mut self.me);
        let position = block(
            ring.wait_event(Side::Consumer),
            Some(ring.entry(me.index).parked()),
            ring.activity(me.index),
            me.wait,
            ring.region.peers_may_die(),
            deadline,
            |probe| Self::claim(ring, me, probe),
        )
        .map_err(Refusal::recv_timeout)?;
        Ok(self.read_and_release(position))
    }
}

/// What a consumer does after finding its slot unpublished.
enum Next {
    /// Try again at this head.
    Retry(u64),
    /// Every producer is gone: one last poll from a fresh head.
    LastPoll,
}

/// A message received in place by [`Consumer::try_recv_ref`]; derefs to the `T` in its
/// slot and releases the slot when dropped.
#[must_use = "dropping the guard releases the message at once"]
pub struct RecvGuard<'a, T: Message> {
    consumer: &'a mut Consumer<T>,
    position: u64,
}

impl<T: Message> RecvGuard<'_, T> {
    /// The position this message was claimed at.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl<T: Message> Deref for RecvGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        let slot = self.consumer.ring.slot(self.position);
        // SAFETY: the slot is claimed by this consumer and not released until this guard
        // drops, so no producer writes it while the reference (bounded by `&self`)
        // lives. Any bytes are a valid `T`.
        slot.value.with(|p| unsafe { &*p })
    }
}

impl<T: Message> Drop for RecvGuard<'_, T> {
    fn drop(&mut self) {
        let consumer = &mut self.consumer;
        consumer.me.pending = None;
        let notified = consumer.ring.finish(Side::Consumer, self.position, EMPTY);
        consumer.me.finished(&consumer.ring, notified);
    }
}

impl<T: Message> core::fmt::Debug for RecvGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvGuard")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}
