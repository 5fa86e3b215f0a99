//! The sending half of an SPSC ring: single values, batches, chunks and slots written
//! in place.

use core::ops::{Deref, DerefMut};
use std::time::Instant;

use shm_sync::WaitStrategy;
use shm_sync::atomic::Ordering;

use super::layout::{ABSENT, ATTACHED, STATE_MASK};
use super::ring::{PeerState, Ring};
use crate::core::blocking::{Refusal, block};
use crate::core::liveness::PeerWatch;
use crate::error::{Corruption, Error, SendTimeoutError, TrySendError};
use crate::message::Message;

/// The sending half of an SPSC ring.
///
/// `Send` but not `Sync`: one thread at a time sends. Created by
/// [`channel`](super::channel) (in one process) or by
/// [`Builder::producer`](super::Builder::producer) (in a segment).
pub struct Producer<T: Message> {
    ring: Ring<T>,
    cur: Cursor,
}

/// What the producer's calls change: its position, its copy of the consumer's, and
/// what it knows of the consumer's liveness.
#[derive(Debug)]
struct Cursor {
    /// The next position to write (only the producer writes `tail`).
    tail: u64,
    /// The last `head` loaded from shared memory (Rigtorp's cached index).
    head_cache: u64,
    watch: PeerWatch,
}

// SAFETY: a Producer is the only handle that writes `tail` and unreleased slots, wherever
// it moves; its region's pointers point into memory the region keeps alive (a mapping or
// an Arc), valid from any thread. Messages are plain bytes (`Message: FromBytes`).
unsafe impl<T: Message + Send> Send for Producer<T> {}

impl Cursor {
    /// Finds at least one free slot; returns how many are free. The fast path (the
    /// consumer attached or absent, the cached head says there is room) is a load and a
    /// subtraction, inlined; the rest is [`claim_slow`](Self::claim_slow).
    #[inline(always)]
    fn claim<T>(&mut self, ring: &Ring<T>, probe: bool) -> Result<u64, Refusal> {
        if !probe && self.room(ring) {
            return Ok(ring.capacity() - self.tail.wrapping_sub(self.head_cache));
        }
        self.claim_slow(ring, probe)
    }

    /// The fast path of [`claim`](Self::claim) without a probe, as one test: the
    /// consumer attached or absent, not seen dead, and the cached head leaves a slot.
    #[inline(always)]
    fn room<T>(&self, ring: &Ring<T>) -> bool {
        // Relaxed: the session line is written only at attach and close, and a close is
        // acted on at the next call; the Acquire load in `peer_state` orders the rest.
        let peer = ring.peer_session().load(Ordering::Relaxed) & STATE_MASK;
        let full = self.tail.wrapping_sub(self.head_cache) == ring.capacity();
        (peer == ATTACHED || peer == ABSENT) && self.watch.dead_word.is_none() && !full
    }

    /// [`claim`](Self::claim) when the consumer's session needs a look, a probe is asked
    /// for, or the cached head says the ring is full.
    #[cold]
    #[inline(never)]
    fn claim_slow<T>(&mut self, ring: &Ring<T>, probe: bool) -> Result<u64, Refusal> {
        // Relaxed: as in `claim`.
        let peer = ring.peer_session().load(Ordering::Relaxed) & STATE_MASK;
        if peer != ATTACHED && peer != ABSENT || probe || self.watch.dead_word.is_some() {
            if let PeerState::Gone = ring.peer_state(&mut self.watch, probe)? {
                return Err(Refusal::Disconnected);
            }
        }
        let mut free = ring.capacity() - self.tail.wrapping_sub(self.head_cache);
        if free == 0 {
            free = self.load_free(ring)?;
            if free == 0 {
                return match ring.peer_state(&mut self.watch, false)? {
                    PeerState::Gone => Err(Refusal::Disconnected),
                    PeerState::Present => Err(Refusal::Busy),
                };
            }
        }
        Ok(free)
    }

    /// Finds at least one free slot, and up to `n` if a fresh `head` gives them (one
    /// load, only when the cached copy says fewer); returns how many are free.
    #[inline]
    fn claim_up_to<T>(&mut self, ring: &Ring<T>, n: u64, probe: bool) -> Result<u64, Refusal> {
        let free = self.claim(ring, probe)?;
        if free >= n {
            return Ok(free);
        }
        // The cached head may be stale: one load may find more room.
        Ok(self.load_free(ring)?)
    }

    /// Finds `n` free slots (`n >= 1`); returns how many are free.
    #[inline]
    fn claim_n<T>(&mut self, ring: &Ring<T>, n: u64, probe: bool) -> Result<u64, Refusal> {
        match self.claim_up_to(ring, n, probe)? {
            free if free >= n => Ok(free),
            _ => Err(Refusal::Busy),
        }
    }

    /// Reloads `head` and returns how many slots are free.
    #[inline]
    fn load_free<T>(&mut self, ring: &Ring<T>) -> Result<u64, Corruption> {
        // SYNC(slot-released): Acquire; pairs with the consumer's Release store of head:
        // its reads of the slots before `head` are done.
        let head = ring.control().head.load(Ordering::Acquire);
        let used = ring.check(head, self.tail)?;
        self.head_cache = head;
        Ok(ring.capacity() - used)
    }

    /// Makes `n` written slots visible to the consumer and wakes it if it sleeps.
    #[inline]
    fn publish<T>(&mut self, ring: &Ring<T>, n: u64) {
        self.tail = self.tail.wrapping_add(n);
        // SYNC(slot-published): Release; pairs with the consumer's Acquire load of tail.
        ring.control().tail.store(self.tail, Ordering::Release);
        ring.activity().woke(ring.control().not_empty.notify());
    }

    /// Writes `value` into the slot `offset` places after `tail`.
    #[inline(always)]
    fn write<T>(&self, ring: &Ring<T>, offset: u64, value: T) {
        // SAFETY: the slot at tail + offset is free (offset < free slots found by
        // `claim`): the consumer released it and will not read it before it is published.
        ring.region
            .slot(self.tail.wrapping_add(offset))
            .with_mut(|p| unsafe { p.write(value) });
    }
}

impl<T: Message> Producer<T> {
    /// Attaches `ring`'s producer: it continues at `tail`, after a previous producer of
    /// the segment (dead or closed).
    pub(crate) fn attach(mut ring: Ring<T>) -> Result<Self, Error> {
        let control = ring.control();
        // Acquire: a previous producer published up to here.
        let tail = control.tail.load(Ordering::Acquire);
        // SYNC(slot-released): Acquire; pairs with the consumer's Release store of head.
        let head = control.head.load(Ordering::Acquire);
        ring.check(head, tail).map_err(Error::Corrupted)?;
        ring.mark_attached().map_err(Error::Corrupted)?;
        Ok(Self {
            ring,
            cur: Cursor {
                tail,
                head_cache: head,
                watch: PeerWatch::default(),
            },
        })
    }

    /// The number of slots, a power of two.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// The wait strategy of the blocking calls ([`WaitStrategy::default`] unless set).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.ring.wait = wait;
    }

    /// The position of the next message to send: messages sent through this ring so far
    /// (by every producer it has had), wrapping at 2^64. Its slot is `position & (capacity
    /// - 1)`.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.cur.tail
    }

    /// Sends `value` if a slot is free, without blocking.
    ///
    /// Costs, when the consumer busy-polls: a slot write, a `Release` store and a load,
    /// with no fence instruction in a process registered for membarriers (see
    /// `shm_sync::asymmetric`) and no syscall. When the consumer is parked, one
    /// `FUTEX_WAKE`.
    ///
    /// # Errors
    ///
    /// The value comes back in [`TrySendError::Full`] (no free slot),
    /// [`TrySendError::Disconnected`] (the consumer closed the ring, or died: seen when
    /// the ring is full or at the next liveness probe), or [`TrySendError::Corrupted`].
    #[inline(always)]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        // The value never leaves this frame for the slow path, so that a large `T` can
        // go from registers to the slot.
        if !self.cur.room(&self.ring) {
            if let Err(refusal) = self.cur.claim_slow(&self.ring, false) {
                return Err(self.ring.activity().refused(refusal).try_send(value));
            }
        }
        self.cur.write(&self.ring, 0, value);
        self.cur.publish(&self.ring, 1);
        Ok(())
    }

    /// Sends as many values from the front of `values` as there are free slots, and
    /// publishes them at once (one position store and one notify for the batch); returns
    /// how many were sent. `Ok(0)` only for an empty `values`.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send), with `()` for the value, when not one slot is free.
    pub fn send_slice(&mut self, values: &[T]) -> Result<usize, TrySendError<()>>
    where
        T: Copy,
    {
        if values.is_empty() {
            return Ok(0);
        }
        let free = self
            .cur
            .claim_up_to(&self.ring, values.len() as u64, false)
            .map_err(|r| self.ring.activity().refused(r).try_send(()))?;
        let n = values.len().min(free as usize);
        let mut chunk = WriteChunk {
            producer: self,
            len: n,
        };
        for (i, value) in values[..n].iter().enumerate() {
            chunk.write(i, *value);
        }
        chunk.commit_all();
        Ok(n)
    }

    /// Claims `n` contiguous-in-order free slots to write in place (rtrb's
    /// `write_chunk`): [`WriteChunk::as_mut_slices`] gives them as at most two slices
    /// (the second when the chunk wraps the end of the buffer), holding whatever bytes
    /// were there; [`WriteChunk::commit`] publishes the first `k` of them at once.
    /// Dropped without commit, it publishes nothing.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when fewer than `n` slots are free (always for `n >
    /// capacity`), otherwise as [`try_send`](Self::try_send), with `()` for the value.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = shm_ring::spsc::channel::<u32>(4)?;
    /// let mut chunk = tx.write_chunk(3).unwrap();
    /// let (first, second) = chunk.as_mut_slices();
    /// assert_eq!(first.len() + second.len(), 3);
    /// first.copy_from_slice(&[1, 2, 3]);
    /// chunk.commit(2);
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// assert_eq!(rx.try_recv(), Ok(2));
    /// assert!(rx.try_recv().is_err());
    /// # Ok::<(), shm_ring::Error>(())
    /// ```
    #[inline]
    pub fn write_chunk(&mut self, n: usize) -> Result<WriteChunk<'_, T>, TrySendError<()>> {
        if n as u64 > self.capacity() {
            return Err(TrySendError::Full(()));
        }
        if n > 0 {
            self.cur
                .claim_n(&self.ring, n as u64, false)
                .map_err(|r| self.ring.activity().refused(r).try_send(()))?;
        }
        Ok(WriteChunk {
            producer: self,
            len: n,
        })
    }

    /// [`write_chunk`](Self::write_chunk), waiting with the wait strategy until
    /// `deadline` (`None`: forever) for `n` free slots.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] when the deadline passes first (at once for `n >
    /// capacity`), otherwise as [`send_deadline`](Self::send_deadline).
    pub fn write_chunk_deadline(
        &mut self,
        n: usize,
        deadline: Option<Instant>,
    ) -> Result<WriteChunk<'_, T>, SendTimeoutError<()>> {
        if n as u64 > self.capacity() {
            return Err(SendTimeoutError::Timeout(()));
        }
        if n > 0 {
            self.claim_until(n as u64, deadline)
                .map_err(|r| r.send_timeout(()))?;
        }
        Ok(WriteChunk {
            producer: self,
            len: n,
        })
    }

    /// Reserves the next slot for writing in place, without copying: the returned
    /// [`SendSlot`] derefs to the slot's `T` (holding whatever bytes were there: any bytes
    /// are a valid `T`); [`SendSlot::commit`] publishes it. Dropping the slot without
    /// committing publishes nothing.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send), with `()` for the value.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = shm_ring::spsc::channel::<[u64; 8]>(2)?;
    /// let mut slot = tx.reserve().unwrap();
    /// slot.fill(3);
    /// slot.commit();
    /// assert_eq!(rx.try_recv().unwrap(), [3; 8]);
    /// # Ok::<(), shm_ring::Error>(())
    /// ```
    pub fn reserve(&mut self) -> Result<SendSlot<'_, T>, TrySendError<()>> {
        self.cur
            .claim(&self.ring, false)
            .map_err(|r| self.ring.activity().refused(r).try_send(()))?;
        Ok(SendSlot { producer: self })
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
        self.claim_until(1, deadline)
            .map_err(|r| r.send_timeout(()))?;
        Ok(SendSlot { producer: self })
    }

    /// The ring's id, the same in every process (see `loan`).
    #[cfg(not(loom))]
    pub(crate) fn ring_id(&self) -> u64 {
        self.ring.region.id()
    }

    crate::core::blocking::send_calls!("the consumer is gone");

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
        match self.claim_until(1, deadline) {
            Ok(()) => {
                self.cur.write(&self.ring, 0, value);
                self.cur.publish(&self.ring, 1);
                Ok(())
            }
            Err(refusal) => Err(refusal.send_timeout(value)),
        }
    }

    /// Claims `n` slots, waiting with this producer's [`WaitStrategy`] until `deadline`
    /// (`None`: forever). `Err(Refusal::Busy)` means the deadline passed.
    fn claim_until(&mut self, n: u64, deadline: Option<Instant>) -> Result<(), Refusal> {
        let ring = &self.ring;
        let cur = &mut self.cur;
        block(
            &ring.control().not_full,
            None,
            ring.activity(),
            ring.wait,
            ring.region.peers_may_die(),
            deadline,
            |probe| cur.claim_n(ring, n, probe),
        )
        .map(|_| ())
    }
}

/// A slot reserved by [`Producer::reserve`], written in place and published by
/// [`commit`](SendSlot::commit). Dropped without `commit`, it publishes nothing.
#[must_use = "a reserved slot is published only by `commit`"]
pub struct SendSlot<'a, T: Message> {
    producer: &'a mut Producer<T>,
}

impl<T: Message> SendSlot<'_, T> {
    /// Publishes the slot to the consumer.
    pub fn commit(self) {
        let Producer { ring, cur } = self.producer;
        cur.publish(ring, 1);
    }
}

impl<T: Message> Deref for SendSlot<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        let slot = self.producer.ring.region.slot(self.producer.cur.tail);
        // SAFETY: the slot is free (claimed) and unpublished, so only this producer may
        // touch it until `commit`; the borrow of `self` bounds the reference. Any bytes
        // are a valid `T` (`FromBytes`).
        slot.with(|p| unsafe { &*p })
    }
}

impl<T: Message> DerefMut for SendSlot<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        let slot = self.producer.ring.region.slot(self.producer.cur.tail);
        // SAFETY: as in `deref`, and the `&mut self` borrow makes the reference unique.
        slot.with_mut(|p| unsafe { &mut *p })
    }
}

/// Free slots claimed by [`Producer::write_chunk`], written in place and published by
/// [`commit`](WriteChunk::commit). Dropped without a commit, it publishes nothing.
#[must_use = "a chunk is published only by `commit`"]
pub struct WriteChunk<'a, T: Message> {
    producer: &'a mut Producer<T>,
    len: usize,
}

impl<T: Message> WriteChunk<'_, T> {
    /// The number of slots claimed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot was claimed (`write_chunk(0)`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The claimed slots in order: up to the end of the buffer, then (if the chunk wraps)
    /// from its start. They hold whatever bytes were there, a valid `T` each.
    #[cfg(not(loom))]
    pub fn as_mut_slices(&mut self) -> (&mut [T], &mut [T]) {
        let (base, index, first) = self.producer.ring.run(self.producer.cur.tail, self.len);
        // SAFETY: (1) the `len` slots from `tail` are free and unpublished: only this
        // producer touches them until the commit, and `&mut self` makes these slices
        // unique. (2) `index + first <= capacity` and `len - first <= index`, so the two
        // slices are inside the slot array (which the region keeps alive) and disjoint.
        // (3) A slot is `UnsafeCell<T>`, `repr(transparent)` over `T`; any bytes are a
        // valid `T`.
        unsafe {
            (
                core::slice::from_raw_parts_mut(base.add(index), first),
                core::slice::from_raw_parts_mut(base, self.len - first),
            )
        }
    }

    /// The claimed slots as [`as_mut_slices`](Self::as_mut_slices) gives them, to read
    /// back what was written.
    #[cfg(not(loom))]
    #[must_use]
    pub fn as_slices(&self) -> (&[T], &[T]) {
        let (base, index, first) = self.producer.ring.run(self.producer.cur.tail, self.len);
        // SAFETY: as in `as_mut_slices`; `&self` keeps writes out while the slices live.
        unsafe {
            (
                core::slice::from_raw_parts(base.add(index), first),
                core::slice::from_raw_parts(base, self.len - first),
            )
        }
    }

    /// Writes `value` into claimed slot `i` (`i < len`).
    #[inline(always)]
    fn write(&mut self, i: usize, value: T) {
        debug_assert!(i < self.len);
        self.producer
            .cur
            .write(&self.producer.ring, i as u64, value);
    }

    /// Publishes the first `n` claimed slots (one position store, one notify).
    ///
    /// # Panics
    ///
    /// If `n` is more than [`len`](Self::len).
    pub fn commit(self, n: usize) {
        assert!(
            n <= self.len,
            "committing {n} of {} claimed slots",
            self.len
        );
        if n > 0 {
            let Producer { ring, cur } = self.producer;
            cur.publish(ring, n as u64);
        }
    }

    /// Publishes every claimed slot.
    pub fn commit_all(self) {
        let n = self.len;
        self.commit(n);
    }
}

impl<T: Message> core::fmt::Debug for SendSlot<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendSlot")
            .field("position", &self.producer.cur.tail)
            .finish_non_exhaustive()
    }
}

impl<T: Message> core::fmt::Debug for WriteChunk<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WriteChunk")
            .field("position", &self.producer.cur.tail)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Message> core::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("tail", &self.cur.tail)
            .field("wait", &self.ring.wait)
            .finish_non_exhaustive()
    }
}

impl<T: Message> Producer<T> {
    /// Whether `n` slots are free (or a send would fail at once), without claiming them:
    /// `Waitable::ready` for `n` 1, and for a frame of the stream ring, its bytes.
    pub(crate) fn ready_for(&mut self, n: u64, probe: bool) -> bool {
        !matches!(self.cur.claim_n(&self.ring, n, probe), Err(Refusal::Busy))
    }
}

crate::wait_set::waitable!(
    [T: Message + 'static] Producer<T>,
    ready: |this, probe| this.ready_for(1, probe),
    event: |this| shm_sync::Waiting {
        event: &this.ring.control().not_full,
        mark: None,
    },
    region: |this| this.ring.region,
);
