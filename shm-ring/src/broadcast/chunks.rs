//! Zero-copy fan-out: pool chunks published through a broadcast ring and read in place
//! by every subscriber at once.
//!
//! A [`ChunkPublisher`] loans a chunk from a [`Pool`], writes it in place, and publishes
//! its 16-byte [`ShmOffset`] through a broadcast ring of offsets; the chunk is then
//! *shared* ([`LoanedChunk::into_shared`]). Each [`ChunkSubscriber`] reads the offset
//! and holds the chunk under one of its hazard words ([`Pool::read_shared`]): a
//! [`ChunkSample`] derefs to the payload in place, with no copy, however many
//! subscribers read it. The protocol and its proof are in [`shm_alloc::owner`].
//!
//! # Who frees a chunk
//!
//! - The publisher retires a chunk when it overwrites the slot that named it (a lap
//!   later), and [`ChunkPublisher::reclaim`] retires every chunk that every live
//!   subscriber has gone past. A retired chunk is freed at once if no hazard word names
//!   it, or else by the last subscriber to drop its sample.
//! - A subscriber that dies holding samples leaves its hazard words set. Whoever next
//!   holds its role clears them on its behalf and frees what only they held: a
//!   subscriber that attaches under its id ([`ChunkSubscriber::new`]), or
//!   [`ChunkPublisher::reclaim`], which takes the role's lock to do so. Each chunk is
//!   freed once: the free is one compare-and-swap of its owner word.
//! - A chunk the publisher loaned but had not yet shared when it died is returned by the
//!   pool's own sweep ([`Pool::reclaim_dead`]); one it shared while its message was
//!   being written is in a slot marked skipped, retired when the next publisher
//!   overwrites that slot.
//!
//! A subscriber never reads a chunk that was freed or loaned again: its hold checks the
//! chunk's generation after its hazard word is visible. A message whose chunk was
//! retired before the subscriber read it (it lagged a lap, or joined at the oldest
//! message after the others had read it, or was thought dead while the others went on)
//! is lost and counted: [`Lagged`](super::TryRecvError::Lagged).
//!
//! # Sizing the pool
//!
//! At most `capacity` chunks are named by the ring, and each subscriber holds at most
//! [`MAX_HELD`] more: a class of `capacity + MAX_HELD * subscribers + 1` chunks never
//! runs out (under `Block`, chunks also wait for the slowest subscriber's reads; under
//! `Lap`, a loan that finds the class empty first retires what every live subscriber
//! has read).
//!
//! # Examples
//!
//! ```
//! use shm_alloc::Pool;
//! use shm_ring::broadcast::{self, ChunkPublisher, ChunkSubscriber};
//! # let name = format!("doc-fanout-{}", std::process::id());
//! let pool = Pool::builder(format!("{name}-pool").as_str()).class(4096, 32).create()?;
//! let (publisher, subscriber) = broadcast::channel(8, broadcast::Overflow::Lap)?;
//! let other = publisher.subscribe()?;
//! let mut publisher = ChunkPublisher::new(publisher, &pool);
//! let first = ChunkSubscriber::new(subscriber, &pool);
//! let second = ChunkSubscriber::new(other, &pool);
//!
//! let mut chunk = publisher.loan(5)?;
//! chunk.as_mut_slice().copy_from_slice(b"quote");
//! publisher.try_send(chunk).map_err(|e| e.to_string())?;
//! // Both read the one chunk in place.
//! let (a, b) = (first.try_recv()?, second.try_recv()?);
//! assert_eq!((&*a, &*b), (&b"quote"[..], &b"quote"[..]));
//! assert_eq!(a.as_ptr(), b.as_ptr());
//! # drop(a); drop(b); drop(first); drop(second); drop(publisher); drop(pool);
//! # shm_alloc::Segment::remove(&format!("{name}-pool").as_str().into())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::cell::{Cell, RefCell};
use std::time::Instant;

use shm_alloc::owner::named_by;
use shm_alloc::{LoanedChunk, Pool, Readers, SharedSample, ShmOffset};
use shm_sync::atomic::{AtomicU64, Ordering};

use super::layout::{HAZARDS, SESSION_STATE, SUBSCRIBER};
use super::ring::Ring;
use super::subscriber::Delivery;
use super::{Publisher, RecvTimeoutError, Subscriber, SubscriberStats, TryRecvError};
use crate::error::{SendError, SendTimeoutError, TrySendError};
use crate::loan::RecvError;

/// How many samples one subscriber may hold at once: its hazard words.
pub const MAX_HELD: usize = HAZARDS;

/// Whether any subscriber's hazard word names the chunk at `offset` (the publisher's
/// line has none).
fn holds(ring: &Ring<ShmOffset>, offset: u64) -> bool {
    named_by(
        ring.region.entries()[1..]
            .iter()
            .flat_map(|line| line.hazards.iter()),
        offset,
    )
}

/// Publishes pool chunks through a broadcast ring of [`ShmOffset`]s, to be read in place
/// by every subscriber; retires each chunk when the ring no longer names it.
pub struct ChunkPublisher<'p> {
    publisher: Publisher<ShmOffset>,
    pool: &'p Pool,
}

impl core::fmt::Debug for ChunkPublisher<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChunkPublisher")
            .field("published", &self.publisher.published())
            .finish_non_exhaustive()
    }
}

/// What [`ChunkPublisher::reclaim`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reclaimed {
    /// Chunks still in the ring that every live subscriber had read, now retired.
    pub retired: u64,
    /// Hazard words of dead subscribers cleared.
    pub hazards: u64,
    /// Chunks freed by those clears (the retired ones are freed as they are retired,
    /// when nobody holds them).
    pub freed: u64,
}

impl<'p> ChunkPublisher<'p> {
    /// Publishes the chunks of `pool` through `publisher`'s ring. Its subscribers must
    /// read with the same pool (a [`ChunkSubscriber`] each).
    #[must_use]
    pub fn new(publisher: Publisher<ShmOffset>, pool: &'p Pool) -> Self {
        ChunkPublisher { publisher, pool }
    }

    /// Loans a chunk of `len` bytes ([`Pool::loan`]); if the fitting class is empty,
    /// first [`reclaim`](Self::reclaim)s, then tries once more.
    ///
    /// # Errors
    ///
    /// Those of [`Pool::loan`].
    pub fn loan(&mut self, len: usize) -> Result<LoanedChunk<'p>, shm_alloc::Error> {
        match self.pool.loan(len) {
            Err(shm_alloc::Error::PoolExhausted { .. }) => {
                self.reclaim();
                self.pool.loan(len)
            }
            loaned => loaned,
        }
    }

    /// Publishes `chunk` if the ring takes it now (always under `Lap`): its offset is
    /// written into the slot, the chunk is shared, then the slot is published; the
    /// chunk the slot named a lap before is retired.
    ///
    /// # Errors
    ///
    /// The chunk comes back untouched in [`TrySendError::Full`] (`Block`, the slowest
    /// subscriber a ring behind) or [`TrySendError::Corrupted`].
    ///
    /// # Panics
    ///
    /// If `chunk` was loaned from another pool than this publisher's.
    pub fn try_send(
        &mut self,
        chunk: LoanedChunk<'p>,
    ) -> Result<(), TrySendError<LoanedChunk<'p>>> {
        self.put(chunk, None).map_err(|e| match e {
            SendTimeoutError::Timeout(c) | SendTimeoutError::Disconnected(c) => {
                TrySendError::Full(c)
            }
            SendTimeoutError::Corrupted(c, why) => TrySendError::Corrupted(c, why),
        })
    }

    /// Publishes `chunk`, waiting under `Block` as
    /// [`Publisher::send`](super::Publisher::send) does.
    ///
    /// # Errors
    ///
    /// [`SendError::Corrupted`], with the chunk.
    ///
    /// # Panics
    ///
    /// As [`try_send`](Self::try_send).
    pub fn send(&mut self, chunk: LoanedChunk<'p>) -> Result<(), SendError<LoanedChunk<'p>>> {
        Ok(self.put(chunk, Some(None))?)
    }

    /// Publishes `chunk`, waiting at most until `deadline` under `Block`.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] or [`SendTimeoutError::Corrupted`], with the chunk.
    ///
    /// # Panics
    ///
    /// As [`try_send`](Self::try_send).
    pub fn send_deadline(
        &mut self,
        chunk: LoanedChunk<'p>,
        deadline: Instant,
    ) -> Result<(), SendTimeoutError<LoanedChunk<'p>>> {
        self.put(chunk, Some(Some(deadline)))
    }

    fn put(
        &mut self,
        chunk: LoanedChunk<'p>,
        deadline: Option<Option<Instant>>,
    ) -> Result<(), SendTimeoutError<LoanedChunk<'p>>> {
        assert!(
            core::ptr::eq(chunk.pool(), self.pool)
                || chunk.pool().segment().path() == self.pool.segment().path(),
            "a chunk of another pool than the publisher's"
        );
        // What the slot about to be written named a lap before.
        let overwritten = (self.publisher.tail)
            .checked_sub(self.publisher.ring.capacity())
            .and_then(|previous| self.named(previous));
        let offset = chunk.offset();
        let mut chunk = Some(chunk);
        let sent = self.publisher.send_with(offset, deadline, || {
            // Written into its slot: shared now, published by the stamp that follows.
            let _ = chunk.take().map(LoanedChunk::into_shared);
        });
        let mut back = || chunk.take().expect("not written: still here");
        match sent {
            Ok(()) => {
                if let Some(old) = overwritten {
                    // A corrupt offset in the slot names no chunk: nothing to retire.
                    let ring = &self.publisher.ring;
                    let _ = self.pool.retire_shared(old, |n| holds(ring, n));
                }
                Ok(())
            }
            Err(SendTimeoutError::Timeout(_)) => Err(SendTimeoutError::Timeout(back())),
            Err(SendTimeoutError::Disconnected(_)) => Err(SendTimeoutError::Disconnected(back())),
            Err(SendTimeoutError::Corrupted(_, why)) => {
                Err(SendTimeoutError::Corrupted(back(), why))
            }
        }
    }

    /// The offset the slot of `position` names for `position` (published, or left by a
    /// publisher that died before its last stamp). Only this publisher writes slots.
    fn named(&self, position: u64) -> Option<ShmOffset> {
        self.publisher
            .ring
            .written(position)
            .map(|(_, offset)| offset)
    }

    /// Frees what the ring no longer needs: clears the hazard words of dead subscribers
    /// (taking each one's lock, so that nobody attaches under its id meanwhile), freeing
    /// the chunks only they held; then retires every chunk in the ring that every live
    /// subscriber has gone past, freeing those nobody holds. Runs when a loan finds its
    /// class empty, and when the publisher drops; call it when a subscriber is known to
    /// have died.
    ///
    /// A subscriber that attaches later at the oldest message, or that was dead and
    /// comes back under its id, finds the messages of the chunks retired here lost
    /// ([`Lagged`](super::TryRecvError::Lagged)).
    ///
    /// Costs a lock probe (a system call) per subscriber entry with hazard words set or
    /// held, and a scan of the hazard words per chunk retired.
    pub fn reclaim(&mut self) -> Reclaimed {
        let ring = &self.publisher.ring;
        let mut done = Reclaimed::default();
        for index in 1..=ring.limit() {
            let line = ring.line(index);
            // Relaxed: a hint; the words are read again under the lock.
            if line.hazards.iter().all(|h| h.load(Ordering::Relaxed) == 0) {
                continue;
            }
            // Free: its holder is dead (or left): its words are ours to clear. A failed
            // lock call is no evidence of death.
            let Ok(Some(_lock)) = ring.region.try_lock(index) else {
                continue;
            };
            for hazard in &line.hazards {
                // Relaxed: under the role's lock, nobody else writes the word.
                if hazard.load(Ordering::Relaxed) != 0 {
                    done.hazards += 1;
                    done.freed += u64::from(self.pool.clear_hazard(hazard, |n| holds(ring, n)));
                }
            }
        }
        // The slowest live subscriber: every chunk below its cursor is read by all.
        let tail = self.publisher.tail;
        let mut slowest = tail;
        for index in 1..=ring.limit() {
            let line = ring.line(index);
            if line.entry.session() & SESSION_STATE == SUBSCRIBER && ring.region.is_locked(index) {
                // SYNC(slot-released): Acquire; its reads below the cursor are done.
                slowest = slowest.min(line.cursor.load(Ordering::Acquire));
            }
        }
        for position in tail.saturating_sub(ring.capacity())..slowest {
            if let Some(offset) = self.named(position) {
                if matches!(
                    self.pool.retire_shared(offset, |n| holds(ring, n)),
                    Ok(true)
                ) {
                    done.retired += 1;
                }
            }
        }
        done
    }

    /// The publisher of offsets underneath.
    #[must_use]
    pub fn publisher(&self) -> &Publisher<ShmOffset> {
        &self.publisher
    }

    /// The pool the chunks are loaned from.
    #[must_use]
    pub fn pool(&self) -> &'p Pool {
        self.pool
    }
}

impl Drop for ChunkPublisher<'_> {
    /// Reclaims what every live subscriber has read; what is still to read stays shared
    /// until the next publisher of the ring overwrites or reclaims it.
    fn drop(&mut self) {
        self.reclaim();
    }
}

/// Reads the pool chunks a [`ChunkPublisher`] publishes, in place: up to [`MAX_HELD`]
/// samples at once, each under one of this subscriber's hazard words.
///
/// The receives take `&self`, so that samples can be held while more are received;
/// the handle is `Send` but not `Sync` (the hazard words are its own).
pub struct ChunkSubscriber<'p> {
    subscriber: RefCell<Subscriber<ShmOffset>>,
    ring: Ring<ShmOffset>,
    index: u32,
    pool: &'p Pool,
    /// Bit `k` set while hazard word `k` is free.
    free: Cell<u8>,
}

impl core::fmt::Debug for ChunkSubscriber<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChunkSubscriber")
            .field("id", &(self.index - 1))
            .field("held", &(MAX_HELD as u32 - self.free.get().count_ones()))
            .finish_non_exhaustive()
    }
}

/// A chunk read in place by a [`ChunkSubscriber`]: derefs to the payload bytes; dropping
/// it clears its hazard word (and frees the chunk if it was retired and this was its
/// last reader).
pub type ChunkSample<'s> = SharedSample<'s, Hazard<'s>>;

/// One hazard word of a [`ChunkSubscriber`], lent to a [`ChunkSample`] while it lives.
pub struct Hazard<'s> {
    ring: &'s Ring<ShmOffset>,
    index: u32,
    word: usize,
    free: &'s Cell<u8>,
}

impl core::fmt::Debug for Hazard<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hazard")
            .field("subscriber", &(self.index - 1))
            .field("word", &self.word)
            .finish()
    }
}

impl Readers for Hazard<'_> {
    fn hazard(&self) -> &AtomicU64 {
        &self.ring.line(self.index).hazards[self.word]
    }

    fn holds(&self, offset: u64) -> bool {
        holds(self.ring, offset)
    }
}

impl Drop for Hazard<'_> {
    fn drop(&mut self) {
        self.free.set(self.free.get() | 1 << self.word);
    }
}

impl<'p> ChunkSubscriber<'p> {
    /// Reads the chunks of `pool` published through `subscriber`'s ring. Clears the
    /// hazard words a dead previous holder of this subscriber's id left, freeing the
    /// chunks only they held.
    #[must_use]
    pub fn new(subscriber: Subscriber<ShmOffset>, pool: &'p Pool) -> Self {
        let ring = subscriber.ring().clone();
        let index = subscriber.index;
        for hazard in &ring.line(index).hazards {
            pool.clear_hazard(hazard, |n| holds(&ring, n));
        }
        ChunkSubscriber {
            subscriber: RefCell::new(subscriber),
            ring,
            index,
            pool,
            free: Cell::new(u8::MAX),
        }
    }

    /// Reads the next chunk in place, if one is published, without waiting.
    ///
    /// # Errors
    ///
    /// [`RecvError::Ring`] with the ring's [`TryRecvError`] (`Lagged` counts messages
    /// whose chunks were retired before they were read too);
    /// [`RecvError::TooManySamples`] while [`MAX_HELD`] samples live;
    /// [`RecvError::Chunk`] for an offset that names no chunk (a corrupt one, passed
    /// over).
    pub fn try_recv(&self) -> Result<ChunkSample<'_>, RecvError<TryRecvError>> {
        self.receive(None).map_err(|e| match e {
            RecvError::Ring(refused) => RecvError::Ring(match refused {
                RecvTimeoutError::Lagged { missed } => TryRecvError::Lagged { missed },
                RecvTimeoutError::Untethered => TryRecvError::Untethered,
                RecvTimeoutError::Disconnected => TryRecvError::Disconnected,
                RecvTimeoutError::Corrupted(c) => TryRecvError::Corrupted(c),
                RecvTimeoutError::Timeout => TryRecvError::Empty,
            }),
            RecvError::Chunk(e) => RecvError::Chunk(e),
            RecvError::TooManySamples { limit } => RecvError::TooManySamples { limit },
        })
    }

    /// Reads the next chunk in place, waiting with the subscriber's wait strategy until
    /// `deadline` (`None`: for ever).
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), with the ring's [`RecvTimeoutError`].
    pub fn recv_deadline(
        &self,
        deadline: Option<Instant>,
    ) -> Result<ChunkSample<'_>, RecvError<RecvTimeoutError>> {
        self.receive(Some(deadline))
    }

    fn receive(
        &self,
        deadline: Option<Option<Instant>>,
    ) -> Result<ChunkSample<'_>, RecvError<RecvTimeoutError>> {
        let free = self.free.get();
        if free == 0 {
            return Err(RecvError::TooManySamples { limit: MAX_HELD });
        }
        let word = free.trailing_zeros() as usize;
        let mut read = None;
        let delivery = self
            .subscriber
            .borrow_mut()
            .receive(deadline, &mut |offset| {
                self.free.set(self.free.get() & !(1 << word));
                let hazard = Hazard {
                    ring: &self.ring,
                    index: self.index,
                    word,
                    free: &self.free,
                };
                match self.pool.read_shared(*offset, hazard) {
                    // Retired before this subscriber held it: passed over, as lost.
                    Err(shm_alloc::Error::StaleOffset { .. }) => false,
                    result => {
                        read = Some(result);
                        true
                    }
                }
            });
        match delivery {
            Ok(Delivery::Message(_)) => match read {
                Some(Ok(sample)) => Ok(sample),
                Some(Err(e)) => Err(RecvError::Chunk(Box::new(e))),
                None => unreachable!("a delivered message was accepted"),
            },
            Ok(Delivery::Lagged(missed)) => {
                Err(RecvError::Ring(RecvTimeoutError::Lagged { missed }))
            }
            Ok(Delivery::Untethered) => Err(RecvError::Ring(RecvTimeoutError::Untethered)),
            Err(refusal) => Err(RecvError::Ring(refusal.into())),
        }
    }

    /// This subscriber's counts.
    #[must_use]
    pub fn stats(&self) -> SubscriberStats {
        self.subscriber.borrow().stats()
    }

    /// This subscriber's id ([`Subscriber::id`]).
    #[must_use]
    pub fn id(&self) -> u32 {
        self.index - 1
    }

    /// How many samples this subscriber holds now.
    #[must_use]
    pub fn held(&self) -> usize {
        MAX_HELD - self.free.get().count_ones() as usize
    }
}

crate::wait_set::waitable_as!(['p] ChunkPublisher<'p>, publisher);

crate::wait_set::waitable!(
    ['p] ChunkSubscriber<'p>,
    ready: |this, probe| this.subscriber.get_mut().ready(probe),
    event: |this| shm_sync::Waiting {
        event: &this.ring.control().not_empty,
        mark: Some(this.ring.line(this.index).entry.parked()),
    },
    region: |this| this.ring.region,
);
