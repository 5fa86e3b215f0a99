//! The sending half of an MPMC ring.

use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use std::time::Instant;

use shm_sync::Retries;
use shm_sync::atomic::Ordering;

use super::Producer;
use super::layout::{EMPTY, FULL, SKIPPED, STAMP_STATE, Side};
use super::member::Member;
use super::ring::Ring;
use crate::core::blocking::{Refusal, block};
use crate::error::{Corruption, SendTimeoutError, TrySendError};
use crate::message::Message;

handle_common!(Producer, Side::Producer, "producer");

impl<T: Message> Producer<T> {
    /// Writes `value` into the claimed slot of `position` and publishes it.
    #[inline(always)]
    fn write_and_publish(&mut self, position: u64, value: T) {
        // SAFETY: this producer claimed `position` (its CAS on tail succeeded) and has
        // not published it, so no consumer reads the slot and no other producer writes it.
        self.ring
            .slot(position)
            .value
            .with_mut(|p| unsafe { p.write(value) });
        let notified = self.ring.finish(Side::Producer, position, FULL);
        self.me.finished(&self.ring, notified);
    }

    /// Sends `value` if a slot is free, without blocking.
    ///
    /// Costs, when nobody else sends at the same moment and no consumer sleeps: a load
    /// of the consumer count, of `tail` and of the slot's stamp, a store to this
    /// producer's entry, a CAS on `tail`, the slot write, a `Release` store, and the event
    /// count's load of its waiter count (no fence instruction in a process registered for
    /// `membarrier`, see `shm_sync::asymmetric`; no syscall). With a parked consumer, one
    /// `FUTEX_WAKE`.
    ///
    /// # Errors
    ///
    /// The value comes back in [`TrySendError::Full`] (no free slot),
    /// [`TrySendError::Disconnected`] (every consumer that attached is gone), or
    /// [`TrySendError::Corrupted`].
    #[inline(always)]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        match claim(&self.ring, &mut self.me, false) {
            Ok(position) => {
                self.write_and_publish(position, value);
                Ok(())
            }
            Err(refusal) => Err(self
                .ring
                .activity(self.me.index)
                .refused(refusal)
                .try_send(value)),
        }
    }

    /// Reserves the next slot for writing in place, without copying: the returned
    /// [`SendSlot`] derefs to the slot's `T` (holding whatever bytes were there: any bytes
    /// are a valid `T`); [`SendSlot::commit`] publishes it. Dropped without `commit`, the
    /// slot is published as skipped: consumers pass over it, and [`Stats::aborted`](super::Stats::aborted)
    /// counts it. Consumers behind this position wait until one or the other happens.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send), with `()` for the value.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = shm_ring::mpmc::channel::<[u64; 8]>(2)?;
    /// let mut slot = tx.reserve().unwrap();
    /// slot.fill(3);
    /// slot.commit();
    /// assert_eq!(rx.try_recv().unwrap(), [3; 8]);
    /// # Ok::<(), shm_ring::Error>(())
    /// ```
    pub fn reserve(&mut self) -> Result<SendSlot<'_, T>, TrySendError<()>> {
        let position = claim(&self.ring, &mut self.me, false)
            .map_err(|r| self.ring.activity(self.me.index).refused(r).try_send(()))?;
        self.me.pending = Some(position);
        Ok(SendSlot {
            producer: self,
            position,
        })
    }

    /// [`reserve`](Self::reserve), waiting with the wait strategy until `deadline`
    /// (`None`: forever) for a free slot.
    ///
    /// # Errors
    ///
    /// As [`send_deadline`](Self::send_deadline), with `()` for the value.
    pub fn reserve_deadline(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<SendSlot<'_, T>, SendTimeoutError<()>> {
        let position = self.claim_until(deadline).map_err(|r| r.send_timeout(()))?;
        self.me.pending = Some(position);
        Ok(SendSlot {
            producer: self,
            position,
        })
    }

    /// Claims a free position, waiting until `deadline` (`None`: forever).
    fn claim_until(&mut self, deadline: Option<Instant>) -> Result<u64, Refusal> {
        let (ring, me) = (&self.ring, &mut self.me);
        block(
            ring.wait_event(Side::Producer),
            Some(ring.entry(me.index).parked()),
            ring.activity(me.index),
            me.wait,
            ring.region.peers_may_die(),
            deadline,
            |probe| claim(ring, me, probe),
        )
    }

    /// The ring's id, the same in every process (see `loan`).
    #[cfg(not(loom))]
    pub(crate) fn ring_id(&self) -> u64 {
        self.ring.region.id()
    }

    crate::core::blocking::send_calls!("every consumer that attached is gone");

    /// Sends `value`, waiting until `deadline` (`None`: forever) for a free slot.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    pub fn send_deadline(
        &mut self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        match self.claim_until(deadline) {
            Ok(position) => {
                self.write_and_publish(position, value);
                Ok(())
            }
            Err(refusal) => Err(refusal.send_timeout(value)),
        }
    }
}

/// A slot reserved by [`Producer::reserve`], written in place and published by
/// [`commit`](SendSlot::commit). Dropped without `commit`, it is published as skipped.
#[must_use = "a reserved slot is published only by `commit`"]
pub struct SendSlot<'a, T: Message> {
    producer: &'a mut Producer<T>,
    position: u64,
}

impl<T: Message> SendSlot<'_, T> {
    /// Publishes the slot to the consumers.
    pub fn commit(self) {
        let mut this = ManuallyDrop::new(self);
        let position = this.position;
        let producer = &mut this.producer;
        producer.me.pending = None;
        let notified = producer.ring.finish(Side::Producer, position, FULL);
        producer.me.finished(&producer.ring, notified);
    }

    /// The position this slot was claimed at.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl<T: Message> Drop for SendSlot<'_, T> {
    fn drop(&mut self) {
        let Producer { ring, me } = &mut *self.producer;
        me.finish_pending(ring);
    }
}

impl<T: Message> Deref for SendSlot<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        let slot = self.producer.ring.slot(self.position);
        // SAFETY: the slot is claimed by this producer and unpublished, so only it may
        // touch the slot until `commit` or drop; the borrow of `self` bounds the
        // reference. Any bytes are a valid `T` (`FromBytes`).
        slot.value.with(|p| unsafe { &*p })
    }
}

impl<T: Message> DerefMut for SendSlot<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        let slot = self.producer.ring.slot(self.position);
        // SAFETY: as in `deref`, and the `&mut self` borrow makes the reference unique.
        slot.value.with_mut(|p| unsafe { &mut *p })
    }
}

/// Claims the next free position: returns it, and this producer's entry names it.
#[inline(always)]
fn claim<T>(ring: &Ring<T>, me: &mut Member, probe: bool) -> Result<u64, Refusal> {
    if me.pending.is_some() {
        me.finish_pending(ring);
    }
    if ring.side_gone(Side::Consumer) {
        return Err(Refusal::Disconnected);
    }
    // SYNC(positions): Acquire.
    let mut tail = ring.control().tail.load(Ordering::Acquire);
    let mut retries = Retries::new();
    loop {
        let control = ring.control();
        let slot = ring.slot(tail);
        // SYNC(slot-released): Acquire; pairs with the Release of the consumer that
        // released the slot: its reads are done before this producer writes.
        let stamp = slot.stamp.load(Ordering::Acquire);
        if stamp == ring.stamp(tail, EMPTY) {
            let entry = ring.entry(me.index);
            // SYNC(claim): Relaxed; published by the Release CAS below.
            entry.set_word(tail.wrapping_add(1));
            match Ring::<T>::advance(&control.tail, tail) {
                Ok(_) => return Ok(tail),
                Err(actual) => {
                    // Relaxed: a loser must not name a position it did not take.
                    entry.set_word(0);
                    tail = actual;
                }
            }
        } else {
            tail = not_free(ring, me, tail, stamp, probe)?;
        }
        if !retries.again() {
            return Err(ring.spent(&ring.control().tail).into());
        }
    }
}

/// The slot of `tail` was not free: returns the tail to try next, or why not.
#[cold]
fn not_free<T>(
    ring: &Ring<T>,
    me: &mut Member,
    tail: u64,
    stamp: u64,
    probe: bool,
) -> Result<u64, Refusal> {
    let due = me.probe_due(probe);
    let previous = tail.wrapping_sub(ring.capacity());
    if (stamp == ring.stamp(previous, FULL) || stamp == ring.stamp(previous, SKIPPED)) && !due {
        // The message of the lap before is not consumed yet, the common full poll:
        // answered without reading the consumers' head, whose line their next claim
        // would otherwise have to take back from this core (as a consumer's empty
        // poll leaves the producers' tail alone). Nothing is claimed, so the positions
        // are checked with each liveness probe, below; `claim` asked whether the
        // consumers are gone.
        return Err(Refusal::Busy);
    }
    let control = ring.control();
    let corrupt = |stamp| {
        Refusal::Corrupted(Corruption::Slot {
            position: tail,
            stamp,
        })
    };
    let ahead = ring.laps_ahead(stamp, tail);
    if ahead >= 0 {
        // The slot is past `tail` (of its lap it is not EMPTY: `claim` took that): someone
        // claimed it, so tail moved on.
        // SYNC(positions): Acquire.
        let fresh = control.tail.load(Ordering::Acquire);
        return if fresh == tail {
            Err(corrupt(stamp))
        } else {
            Ok(fresh)
        };
    }
    // Behind: the slot still holds position tail - capacity. Read head, then the
    // stamp again, which is then at least as new as the claim of that position.
    // SYNC(positions): Acquire.
    let head = control.head.load(Ordering::Acquire);
    // Acquire: as in `claim`.
    let stamp = ring.slot(tail).stamp.load(Ordering::Acquire);
    let ahead = ring.laps_ahead(stamp, tail);
    if ahead >= 0 {
        return Ok(tail); // freed (or claimed) meanwhile: try again
    }
    let used = tail.wrapping_sub(head) as i64;
    if used < 0 {
        // Consumers passed this tail: it is stale, unless it has not moved, which no
        // run of the protocol allows (head never passes the tail it was read after).
        // SYNC(positions): Acquire.
        let fresh = control.tail.load(Ordering::Acquire);
        return if fresh == tail {
            Err(Refusal::Corrupted(Corruption::Positions {
                head,
                tail,
                capacity: ring.capacity(),
            }))
        } else {
            Ok(fresh)
        };
    }
    if used > ring.capacity() as i64 {
        return Err(Refusal::Corrupted(Corruption::Positions {
            head,
            tail,
            capacity: ring.capacity(),
        }));
    }
    // Of the previous lap, only FULL and SKIPPED may be claimed by a consumer, and
    // EMPTY only while unclaimed.
    let state = stamp & STAMP_STATE;
    let claimed = used < ring.capacity() as i64;
    if ahead != -1 || state == STAMP_STATE || (state == EMPTY && claimed) {
        return Err(corrupt(stamp));
    }
    // The probe first: a dead last consumer it settles is gone in this very poll.
    if due {
        me.probe(ring).map_err(Refusal::Corrupted)?;
    }
    if ring.side_gone(Side::Consumer) {
        return Err(Refusal::Disconnected);
    }
    Err(Refusal::Busy)
}

impl<T: Message> core::fmt::Debug for SendSlot<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendSlot")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}
