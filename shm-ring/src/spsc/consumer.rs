//! The receiving half of an SPSC ring: single values, batches, chunks and guards read
//! in place.

use core::ops::Deref;
use std::time::Instant;

use shm_sync::WaitStrategy;
use shm_sync::atomic::Ordering;

use super::layout::{ABSENT, CLOSED};
use super::ring::{PeerState, Ring};
use crate::core::blocking::{Refusal, block};
use crate::core::liveness::PeerWatch;
use crate::error::{Error, RecvTimeoutError, TryRecvError};
use crate::message::Message;

/// The receiving half of an SPSC ring.
///
/// `Send` but not `Sync`: one thread at a time receives. Created by
/// [`channel`](super::channel) (in one process) or by
/// [`Builder::consumer`](super::Builder::consumer) (in a segment).
pub struct Consumer<T: Message> {
    ring: Ring<T>,
    cur: Cursor,
}

/// What the consumer's calls change: its position, its copy of the producer's, and
/// what it knows of the producer's liveness.
#[derive(Debug)]
struct Cursor {
    /// The next position to read (only the consumer writes `head`).
    head: u64,
    /// The last `tail` loaded from shared memory (Rigtorp's cached index).
    tail_cache: u64,
    watch: PeerWatch,
}

// SAFETY: as for `Producer`, with `head` and published slots.
unsafe impl<T: Message + Send> Send for Consumer<T> {}

impl Cursor {
    /// Finds at least one published message; returns how many there are.
    #[inline]
    fn available<T>(&mut self, ring: &Ring<T>, probe: bool) -> Result<u64, Refusal> {
        if self.tail_cache != self.head {
            return Ok(self.tail_cache.wrapping_sub(self.head));
        }
        let available = self.load_tail(ring)?;
        if available != 0 {
            return Ok(available);
        }
        self.empty(ring, probe)
    }

    /// Reloads `tail` and returns how many messages are published.
    #[inline]
    fn load_tail<T>(&mut self, ring: &Ring<T>) -> Result<u64, Refusal> {
        // SYNC(slot-published): Acquire; pairs with the producer's Release store of tail:
        // its slot writes before it are visible.
        let tail = ring.control().tail.load(Ordering::Acquire);
        let used = ring.check(self.head, tail)?;
        self.tail_cache = tail;
        Ok(used)
    }

    /// The ring looked empty: is the producer gone?
    #[cold]
    fn empty<T>(&mut self, ring: &Ring<T>, probe: bool) -> Result<u64, Refusal> {
        match ring.peer_state(&mut self.watch, probe)? {
            PeerState::Present => Err(Refusal::Busy),
            // Gone after its last tail store (SYNC(session)): re-read it.
            PeerState::Gone => match self.load_tail(ring)? {
                0 => Err(Refusal::Disconnected),
                available => Ok(available),
            },
        }
    }

    /// Marks `n` read messages free for the producer and wakes it if it sleeps.
    #[inline]
    fn release<T>(&mut self, ring: &Ring<T>, n: u64) {
        self.head = self.head.wrapping_add(n);
        // SYNC(slot-released): Release; pairs with the producer's Acquire load of head.
        ring.control().head.store(self.head, Ordering::Release);
        ring.activity().woke(ring.control().not_full.notify());
    }

    /// Reads the message `offset` places after `head`.
    #[inline(always)]
    fn read<T: Message>(&self, ring: &Ring<T>, offset: u64) -> T {
        // SAFETY: the slot at head + offset is published (offset < available) and not yet
        // released, so the producer does not write it; any bytes are a valid `T`.
        ring.region
            .slot(self.head.wrapping_add(offset))
            .with(|p| unsafe { p.read() })
    }
}

impl<T: Message> Consumer<T> {
    /// Attaches `ring`'s consumer: it continues at `head`, the first message a previous
    /// consumer of the segment (dead or closed) had not released.
    pub(crate) fn attach(mut ring: Ring<T>) -> Result<Self, Error> {
        let control = ring.control();
        // Acquire: a previous consumer released up to here.
        let head = control.head.load(Ordering::Acquire);
        // SYNC(slot-published): Acquire; pairs with the producer's Release store of tail.
        let tail = control.tail.load(Ordering::Acquire);
        ring.check(head, tail).map_err(Error::Corrupted)?;
        ring.mark_attached().map_err(Error::Corrupted)?;
        Ok(Self {
            ring,
            cur: Cursor {
                head,
                tail_cache: tail,
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

    /// The position of the next message to receive: messages released through this ring
    /// so far (by every consumer it has had), wrapping at 2^64. Its slot is `position &
    /// (capacity - 1)`.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.cur.head
    }

    /// A number naming this ring, the same in every process that maps it, for as long as
    /// the segment lives (a ring removed and created again at the same path gets another),
    /// and never 0: what a pool's receiver binds to (see `loan`), and what a bridge numbers
    /// the ring's positions in.
    #[cfg(not(loom))]
    #[must_use]
    pub fn ring_id(&self) -> u64 {
        self.ring.region.id()
    }

    /// Whether the producer closed the ring cleanly (dropped its handle) rather than
    /// died: what tells a finished sender from a crashed one once `Disconnected` came.
    #[must_use]
    pub fn producer_closed(&self) -> bool {
        self.ring.peer_session_state() == CLOSED
    }

    /// Whether a producer has attached to this ring at least once.
    #[must_use]
    pub fn producer_seen(&self) -> bool {
        // SYNC(session): Acquire.
        self.ring.peer_session().load(Ordering::Acquire) != ABSENT
    }

    /// Receives the next message if there is one, without blocking.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`]; [`TryRecvError::Disconnected`] when the ring is empty and
    /// the producer closed it or died (every message sent before is received first);
    /// [`TryRecvError::Corrupted`].
    #[inline(always)]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.cur
            .available(&self.ring, false)
            .map_err(Refusal::try_recv)?;
        let value = self.cur.read(&self.ring, 0);
        self.cur.release(&self.ring, 1);
        Ok(value)
    }

    /// Receives up to `buf.len()` messages at once into `buf` and releases them with one
    /// position store; returns how many. `Ok(0)` only for an empty `buf`.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), when not one message is there.
    pub fn recv_into(&mut self, buf: &mut [T]) -> Result<usize, TryRecvError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let chunk = self.read_chunk(buf.len())?;
        let n = chunk.len();
        for (i, out) in buf[..n].iter_mut().enumerate() {
            *out = chunk.read(i);
        }
        chunk.commit_all();
        Ok(n)
    }

    /// How many published messages there are to read: the cached count if it is not 0,
    /// otherwise a fresh load of `tail` (rtrb's `slots`). A lower bound: more may be
    /// published right after.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), when there is none (`Empty`, `Disconnected`) or
    /// the positions are corrupt.
    #[inline]
    pub fn slots(&mut self) -> Result<usize, TryRecvError> {
        self.cur
            .available(&self.ring, false)
            .map(|n| n as usize)
            .map_err(Refusal::try_recv)
    }

    /// Takes up to `max` published messages (at least one) to read in place (rtrb's
    /// `read_chunk`, but taking what there is): [`ReadChunk::as_slices`] gives them as at
    /// most two slices, [`ReadChunk::commit`] releases the first `k` of them at once.
    /// Dropped without commit, it releases nothing.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), when not one message is there (or `max` is 0:
    /// `Empty`).
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = shm_ring::spsc::channel::<u32>(4)?;
    /// tx.send_slice(&[1, 2, 3]).unwrap();
    /// let chunk = rx.read_chunk(8).unwrap();
    /// assert_eq!(chunk.as_slices(), (&[1, 2, 3][..], &[][..]));
    /// chunk.commit(1);
    /// assert_eq!(rx.try_recv(), Ok(2));
    /// # Ok::<(), shm_ring::Error>(())
    /// ```
    #[inline]
    pub fn read_chunk(&mut self, max: usize) -> Result<ReadChunk<'_, T>, TryRecvError> {
        let cached = self.cur.tail_cache.wrapping_sub(self.cur.head);
        if cached as usize >= max && max != 0 {
            // What the cached tail says is enough (and was checked when loaded).
            return Ok(self.chunk(max, cached));
        }
        if max == 0 {
            return Err(TryRecvError::Empty);
        }
        // The cached tail may be stale: one load can make the chunk larger.
        self.cur.load_tail(&self.ring).map_err(Refusal::try_recv)?;
        let available = self
            .cur
            .available(&self.ring, false)
            .map_err(Refusal::try_recv)?;
        Ok(self.chunk(max, available))
    }

    /// [`read_chunk`](Self::read_chunk), waiting with the wait strategy until `deadline`
    /// (`None`: forever) for a message.
    ///
    /// # Errors
    ///
    /// As [`recv_deadline`](Self::recv_deadline); `max` 0 is [`RecvTimeoutError::Timeout`]
    /// at once (a chunk of nothing never comes), as `write_chunk_deadline` past the capacity.
    pub fn read_chunk_deadline(
        &mut self,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<ReadChunk<'_, T>, RecvTimeoutError> {
        let available = if max == 0 {
            Err(Refusal::Busy)
        } else {
            self.wait_available(deadline)
        };
        let available = available.map_err(Refusal::recv_timeout)?;
        Ok(self.chunk(max, available))
    }

    fn chunk(&mut self, max: usize, available: u64) -> ReadChunk<'_, T> {
        ReadChunk {
            len: max.min(available as usize),
            consumer: self,
        }
    }

    /// Receives the next message in place, without copying: the returned [`RecvGuard`]
    /// derefs to the `T` in its slot, and releases the slot to the producer when dropped.
    /// If this process dies while holding the guard, the message is not released: a
    /// restarted consumer receives it again.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = shm_ring::spsc::channel::<[u8; 64]>(2)?;
    /// tx.try_send([9; 64]).unwrap();
    /// let msg = rx.try_recv_ref().unwrap();
    /// assert_eq!(msg[63], 9);
    /// drop(msg); // releases the slot
    /// # Ok::<(), shm_ring::Error>(())
    /// ```
    pub fn try_recv_ref(&mut self) -> Result<RecvGuard<'_, T>, TryRecvError> {
        self.cur
            .available(&self.ring, false)
            .map_err(Refusal::try_recv)?;
        Ok(RecvGuard { consumer: self })
    }

    crate::core::blocking::recv_calls!("the producer is gone");

    /// Receives the next message, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        self.wait_available(deadline)
            .map_err(Refusal::recv_timeout)?;
        let value = self.cur.read(&self.ring, 0);
        self.cur.release(&self.ring, 1);
        Ok(value)
    }

    /// Waits until a message is published, the producer is gone, or `deadline`.
    fn wait_available(&mut self, deadline: Option<Instant>) -> Result<u64, Refusal> {
        let ring = &self.ring;
        let cur = &mut self.cur;
        block(
            &ring.control().not_empty,
            None,
            ring.activity(),
            ring.wait,
            ring.region.peers_may_die(),
            deadline,
            |probe| cur.available(ring, probe),
        )
    }
}

/// A message received in place by [`Consumer::try_recv_ref`]; derefs to the `T` in its
/// slot and releases the slot when dropped.
#[must_use = "dropping the guard releases the message at once"]
pub struct RecvGuard<'a, T: Message> {
    consumer: &'a mut Consumer<T>,
}

impl<T: Message> Deref for RecvGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        let slot = self.consumer.ring.region.slot(self.consumer.cur.head);
        // SAFETY: the slot is published and not released until this guard drops, so the
        // producer does not write it while the reference (bounded by `&self`) lives. Any
        // bytes are a valid `T`.
        slot.with(|p| unsafe { &*p })
    }
}

impl<T: Message> Drop for RecvGuard<'_, T> {
    fn drop(&mut self) {
        let Consumer { ring, cur } = &mut *self.consumer;
        cur.release(ring, 1);
    }
}

/// Published messages taken by [`Consumer::read_chunk`], read in place and released by
/// [`commit`](ReadChunk::commit). Dropped without a commit, it releases nothing.
#[must_use = "a chunk is released only by `commit`"]
pub struct ReadChunk<'a, T: Message> {
    consumer: &'a mut Consumer<T>,
    len: usize,
}

impl<T: Message> ReadChunk<'_, T> {
    /// The number of messages taken (at least one).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no message was taken (never, for a chunk `read_chunk` returned).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The messages in order: up to the end of the buffer, then (if the chunk wraps)
    /// from its start.
    #[cfg(not(loom))]
    #[must_use]
    pub fn as_slices(&self) -> (&[T], &[T]) {
        let (base, index, first) = self.consumer.ring.run(self.consumer.cur.head, self.len);
        // SAFETY: (1) the `len` messages from `head` are published and not released until
        // this chunk commits, so the producer does not write them while the slices
        // (bounded by `&self`) live. (2) Both slices lie inside the slot array, which the
        // region keeps alive. (3) A slot is `UnsafeCell<T>`, `repr(transparent)` over
        // `T`; any bytes are a valid `T`.
        unsafe {
            (
                core::slice::from_raw_parts(base.add(index), first),
                core::slice::from_raw_parts(base, self.len - first),
            )
        }
    }

    /// Reads message `i` of the chunk (`i < len`).
    #[inline(always)]
    fn read(&self, i: usize) -> T {
        debug_assert!(i < self.len);
        self.consumer.cur.read(&self.consumer.ring, i as u64)
    }

    /// Releases the first `n` messages to the producer (one position store, one notify).
    ///
    /// # Panics
    ///
    /// If `n` is more than [`len`](Self::len).
    pub fn commit(self, n: usize) {
        assert!(
            n <= self.len,
            "committing {n} of {} taken messages",
            self.len
        );
        if n > 0 {
            let Consumer { ring, cur } = self.consumer;
            cur.release(ring, n as u64);
        }
    }

    /// Releases every message of the chunk.
    pub fn commit_all(self) {
        let n = self.len;
        self.commit(n);
    }
}

impl<T: Message> core::fmt::Debug for RecvGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvGuard")
            .field("position", &self.consumer.cur.head)
            .finish_non_exhaustive()
    }
}

impl<T: Message> core::fmt::Debug for ReadChunk<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadChunk")
            .field("position", &self.consumer.cur.head)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Message> core::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("head", &self.cur.head)
            .field("wait", &self.ring.wait)
            .finish_non_exhaustive()
    }
}

crate::wait_set::waitable!(
    [T: Message + 'static] Consumer<T>,
    ready: |this, probe| !matches!(
        this.cur.available(&this.ring, probe),
        Err(Refusal::Busy)
    ),
    event: |this| shm_sync::Waiting {
        event: &this.ring.control().not_empty,
        mark: None,
    },
    region: |this| this.ring.region,
);
