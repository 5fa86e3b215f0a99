//! Loans through any ring: pool chunks written in place, sent as their 16-byte
//! [`ShmOffset`], and read in place on the other side.
//!
//! A composition of a [`Pool`] and a ring of `ShmOffset`s; the ring's layout knows
//! nothing of pools. A [`Receiver`] binds its pool participant to the ring's id
//! ([`Pool::bind_channel`]); a [`Sender`] looks that participant up and marks each chunk
//! in flight to it ([`LoanedChunk::into_offset_for`]) once a slot is claimed, so that if
//! the receiver dies before taking the chunk, [`Pool::reclaim_dead`] in any process
//! returns it exactly once (and a restarted receiver that finds its offset in the ring
//! gets [`StaleOffset`](shm_alloc::Error::StaleOffset) for it, never another's bytes).
//! Through an MPMC ring, whose message goes to any of its consumers, chunks are in
//! flight to no one in particular ([`LoanedChunk::into_offset`]).
//!
//! The cost does not depend on the payload's size: a loan is one compare-and-swap on a
//! free chunk's header, a send is the ring's send of 16 bytes plus one swap on the chunk's
//! header, a receive the ring's receive plus one compare-and-swap.
//!
//! # Examples
//!
//! ```
//! use shm_alloc::Pool;
//! use shm_ring::{loan, spsc};
//! # let name = format!("doc-loan-{}", std::process::id());
//! let pool = Pool::builder(format!("{name}-pool").as_str()).class(4096, 8).create()?;
//! let (tx, rx) = spsc::channel(4)?;
//! let mut tx = loan::Sender::new(tx);
//! let mut rx = loan::Receiver::new(rx, &pool);
//! let mut chunk = pool.loan(5)?;
//! chunk.as_mut_slice().copy_from_slice(b"hello");
//! tx.try_send(chunk).map_err(|e| e.to_string())?;
//! let sample = rx.try_recv(&pool)?;
//! assert_eq!(&*sample, b"hello");
//! # drop(sample);
//! # drop(pool);
//! # shm_alloc::Segment::remove(&format!("{name}-pool").as_str().into())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;
use std::time::Instant;

use shm_alloc::{LoanedChunk, Pool, Sample, ShmOffset};

use crate::error::{RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};
use crate::{mpmc, spsc};

mod sealed {
    use std::time::Instant;

    use shm_alloc::ShmOffset;

    use crate::error::{RecvTimeoutError, SendTimeoutError, TryRecvError};

    /// A producer of offsets: claims a slot (`deadline` `None`: without waiting,
    /// `Some(d)`: until `d`), then writes the offset `offset()` gives into it and
    /// publishes it. `offset` is called only once the slot is claimed.
    pub trait Carrier {
        /// Whether exactly one consumer receives what this ring carries.
        const ONE_RECEIVER: bool;
        fn ring_id(&self) -> u64;
        fn put(
            &mut self,
            deadline: Option<Option<Instant>>,
            offset: &mut dyn FnMut() -> ShmOffset,
        ) -> Result<(), SendTimeoutError<()>>;
    }

    /// A consumer of offsets.
    pub trait Source {
        fn ring_id(&self) -> u64;
        fn take(&mut self) -> Result<ShmOffset, TryRecvError>;
        fn take_deadline(
            &mut self,
            deadline: Option<Instant>,
        ) -> Result<ShmOffset, RecvTimeoutError>;
    }
}

/// A ring producer that can carry loans: `spsc::Producer<ShmOffset>` or
/// `mpmc::Producer<ShmOffset>`.
pub trait Carrier: sealed::Carrier {}

/// A ring consumer that can receive loans: `spsc::Consumer<ShmOffset>` or
/// `mpmc::Consumer<ShmOffset>`.
pub trait Source: sealed::Source {}

macro_rules! carrier {
    ($flavour:ident, $one:expr) => {
        impl sealed::Carrier for $flavour::Producer<ShmOffset> {
            const ONE_RECEIVER: bool = $one;

            fn ring_id(&self) -> u64 {
                $flavour::Producer::ring_id(self)
            }

            fn put(
                &mut self,
                deadline: Option<Option<Instant>>,
                offset: &mut dyn FnMut() -> ShmOffset,
            ) -> Result<(), SendTimeoutError<()>> {
                let mut slot = match deadline {
                    None => self.reserve().map_err(|e| match e {
                        TrySendError::Full(()) => SendTimeoutError::Timeout(()),
                        TrySendError::Disconnected(()) => SendTimeoutError::Disconnected(()),
                        TrySendError::Corrupted((), c) => SendTimeoutError::Corrupted((), c),
                    })?,
                    Some(deadline) => self.reserve_deadline(deadline)?,
                };
                *slot = offset();
                slot.commit();
                Ok(())
            }
        }

        impl Carrier for $flavour::Producer<ShmOffset> {}

        impl sealed::Source for $flavour::Consumer<ShmOffset> {
            fn ring_id(&self) -> u64 {
                $flavour::Consumer::ring_id(self)
            }

            #[inline(always)]
            fn take(&mut self) -> Result<ShmOffset, TryRecvError> {
                self.try_recv()
            }

            fn take_deadline(
                &mut self,
                deadline: Option<Instant>,
            ) -> Result<ShmOffset, RecvTimeoutError> {
                self.recv_deadline(deadline)
            }
        }

        impl Source for $flavour::Consumer<ShmOffset> {}
    };
}

carrier!(spsc, true);
carrier!(mpmc, false);

/// Sends pool chunks through a ring: loan a chunk ([`Pool::loan`]), write it in place,
/// then [`try_send`](Self::try_send) or [`send_deadline`](Self::send_deadline) it. The
/// chunk knows its pool; the sender holds only the ring.
pub struct Sender<P: Carrier> {
    ring: P,
    /// The ring's id (a hash of its segment's path and creation), computed once.
    ring_id: u64,
    /// The receiver's participant, as last looked up.
    receiver: Option<u32>,
}

impl<P: Carrier> Sender<P> {
    /// Sends chunks through `ring`.
    pub fn new(ring: P) -> Self {
        Sender {
            ring_id: ring.ring_id(),
            ring,
            receiver: None,
        }
    }

    /// Whether a receiver has bound its participant of `pool` to the ring
    /// ([`Receiver::new`]): chunks sent from now on are reclaimed if it dies. A
    /// snapshot.
    pub fn receiver_bound(&mut self, pool: &Pool) -> bool {
        self.receiver(pool).is_some()
    }

    /// The receiver's participant: the cached one while it still holds the binding, or
    /// a fresh lookup.
    fn receiver(&mut self, pool: &Pool) -> Option<u32> {
        let ring = self.ring_id;
        match self.receiver {
            Some(p) if pool.is_bound(p, ring) => Some(p),
            _ => {
                self.receiver = pool.channel_receiver(ring);
                self.receiver
            }
        }
    }

    fn put<'p>(
        &mut self,
        chunk: LoanedChunk<'p>,
        deadline: Option<Option<Instant>>,
    ) -> Result<(), (LoanedChunk<'p>, SendTimeoutError<()>)> {
        let receiver = if P::ONE_RECEIVER {
            self.receiver(chunk.pool())
        } else {
            None
        };
        let mut chunk = Some(chunk);
        let mut offset = || {
            let chunk = chunk.take().expect("a slot takes one offset");
            match receiver {
                Some(participant) => chunk.into_offset_for(participant),
                None => chunk.into_offset(),
            }
        };
        let sent = self.ring.put(deadline, &mut offset);
        sent.map_err(|e| (chunk.take().expect("not sent: still here"), e))
    }

    /// Sends `chunk` if the ring has a free slot now: marks it in flight (to the bound
    /// receiver, for an SPSC ring) once the slot is claimed, then publishes its offset.
    ///
    /// # Errors
    ///
    /// The chunk comes back untouched in [`TrySendError::Full`],
    /// [`TrySendError::Disconnected`] or [`TrySendError::Corrupted`].
    pub fn try_send<'p>(
        &mut self,
        chunk: LoanedChunk<'p>,
    ) -> Result<(), TrySendError<LoanedChunk<'p>>> {
        self.put(chunk, None).map_err(|(chunk, e)| match e {
            SendTimeoutError::Timeout(()) => TrySendError::Full(chunk),
            SendTimeoutError::Disconnected(()) => TrySendError::Disconnected(chunk),
            SendTimeoutError::Corrupted((), c) => TrySendError::Corrupted(chunk, c),
        })
    }

    /// [`try_send`](Self::try_send), waiting with the ring's wait strategy until
    /// `deadline` (`None`: forever) for a free slot.
    ///
    /// # Errors
    ///
    /// The chunk comes back untouched in [`SendTimeoutError::Timeout`],
    /// [`SendTimeoutError::Disconnected`] or [`SendTimeoutError::Corrupted`].
    pub fn send_deadline<'p>(
        &mut self,
        chunk: LoanedChunk<'p>,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<LoanedChunk<'p>>> {
        self.put(chunk, Some(deadline))
            .map_err(|(chunk, e)| match e {
                SendTimeoutError::Timeout(()) => SendTimeoutError::Timeout(chunk),
                SendTimeoutError::Disconnected(()) => SendTimeoutError::Disconnected(chunk),
                SendTimeoutError::Corrupted((), c) => SendTimeoutError::Corrupted(chunk, c),
            })
    }

    /// The ring.
    pub fn ring(&mut self) -> &mut P {
        &mut self.ring
    }
}

/// Receives pool chunks from a ring as [`Sample`]s read in place; dropping a sample
/// returns its chunk.
pub struct Receiver<C: Source> {
    ring: C,
}

impl<C: Source> Receiver<C> {
    /// Receives chunks from `ring`, and binds this process's participant of `pool` to the
    /// ring ([`Pool::bind_channel`]) so that chunks sent to it from now on are returned
    /// if this process dies before taking them. Pass the same pool to the receives.
    pub fn new(ring: C, pool: &Pool) -> Self {
        pool.bind_channel(ring.ring_id());
        Receiver { ring }
    }

    /// Receives the next chunk of `pool` if there is one, without blocking.
    ///
    /// # Errors
    ///
    /// [`RecvError::Ring`] with the ring's error; [`RecvError::Chunk`] with
    /// [`Pool::receive`]'s (a stale offset: its chunk was reclaimed).
    #[inline]
    pub fn try_recv<'p>(&mut self, pool: &'p Pool) -> Result<Sample<'p>, RecvError<TryRecvError>> {
        let offset = self.ring.take().map_err(RecvError::Ring)?;
        pool.receive(offset)
            .map_err(|e| RecvError::Chunk(Box::new(e)))
    }

    /// Receives the next chunk of `pool`, waiting with the ring's wait strategy until
    /// `deadline` (`None`: forever).
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), with the ring's [`RecvTimeoutError`].
    pub fn recv_deadline<'p>(
        &mut self,
        pool: &'p Pool,
        deadline: Option<Instant>,
    ) -> Result<Sample<'p>, RecvError<RecvTimeoutError>> {
        let offset = self.ring.take_deadline(deadline).map_err(RecvError::Ring)?;
        pool.receive(offset)
            .map_err(|e| RecvError::Chunk(Box::new(e)))
    }

    /// The ring.
    pub fn ring(&mut self) -> &mut C {
        &mut self.ring
    }
}

/// Why a [`Receiver`] returned no sample.
#[derive(Debug, thiserror::Error)]
pub enum RecvError<E> {
    /// The ring had no offset: empty, disconnected, timed out or corrupted.
    #[error(transparent)]
    Ring(E),
    /// The offset named no chunk in flight: stale (reclaimed) or corrupt. Boxed: it is
    /// rare, and keeps the error of every empty poll small.
    #[error(transparent)]
    Chunk(Box<shm_alloc::Error>),
    /// A broadcast [`ChunkSubscriber`](crate::broadcast::ChunkSubscriber) already holds
    /// `limit` samples (one per hazard word): drop one first.
    #[error("this subscriber already holds {limit} samples in place; drop one first")]
    TooManySamples {
        /// The most samples a subscriber holds at once.
        limit: usize,
    },
}

impl<P: Carrier> fmt::Debug for Sender<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("receiver", &self.receiver)
            .finish_non_exhaustive()
    }
}

impl<C: Source> fmt::Debug for Receiver<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}
