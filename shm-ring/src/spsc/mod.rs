//! A typed single-producer single-consumer ring, in a shared-memory segment or on the heap.
//!
//! Wait-free for both sides: every operation is a bounded number of loads and stores.
//! One [`Producer`] and one [`Consumer`], in the same process or in two, exchange values of
//! a [`Message`] type through `capacity` slots (a power of two).
//!
//! # Algorithm
//!
//! The bounded SPSC queue of Lamport, with the refinements of Erik Rigtorp's `SPSCQueue`
//! (<https://github.com/rigtorp/SPSCQueue>): the producer owns `tail`, the consumer owns
//! `head`, each on its own 128-byte block, and each handle keeps a private copy of the
//! other side's position and reloads it only when that copy says the ring is full
//! (producer) or empty (consumer), so in steady streaming the two cores rarely touch each
//! other's line.
//!
//! Positions are `u64` counters that only grow (2^64 messages never wrap in practice, but
//! the arithmetic wraps anyway, so that no value a peer writes can overflow);
//! the slot of position `p` is `p & (capacity - 1)`. Every position read from shared
//! memory is checked against `head <= tail <= head + capacity` (with wrapping
//! arithmetic); a violation is [`Corruption::Positions`](crate::Corruption::Positions), never an out-of-bounds access.
//!
//! # Memory ordering
//!
//! - **SYNC(slot-published)**: the producer writes a slot, then stores `tail` with
//!   `Release`; the consumer loads `tail` with `Acquire`, then reads the slot.
//! - **SYNC(slot-released)**: the consumer reads a slot, then stores `head` with `Release`;
//!   the producer loads `head` with `Acquire`, then overwrites the slot.
//! - **SYNC(session)**: a handle stores its session word (attached / closed) with
//!   `Release` after its last position store; the peer loads it with `Acquire` and then
//!   re-reads the position, so it sees every message sent before a clean close.
//! - Waking goes through two [`EventCount`](shm_sync::EventCount)s (`not_empty`, `not_full`), whose `notify` is
//!   one load when nobody sleeps, behind an asymmetric fence that is no instruction in a
//!   registered process; see `shm_sync::event_count`.
//!
//! # Peers, roles and restarts
//!
//! In a segment, the producer and the consumer each claim a role by an OFD lock
//! (`shm_alloc::Segment::claim_role`), so a second producer or consumer gets
//! `RoleTaken`, and "is my peer alive?" is a lock probe that survives pid reuse. Each
//! side's session word says absent (never attached), attached, or closed (dropped
//! cleanly), with a generation that grows at every attach:
//!
//! - after the producer drops or dies, the consumer receives every message left, then
//!   [`TryRecvError::Disconnected`](crate::TryRecvError::Disconnected);
//! - after the consumer drops or dies, the producer's sends fail with `Disconnected`
//!   (after a clean drop at once; after a death when the ring is full, or at the next
//!   liveness probe);
//! - a consumer that died and is restarted attaches again and continues at `head`, the
//!   first message it had not released: a message read in place and not yet released is
//!   delivered again, nothing is lost. A restarted producer continues at `tail`.
//!
//! A peer's death is seen by probing its lock, a syscall (about 0.5 us), so a polling
//! side probes once every [`LIVENESS_POLLS`] empty (or full) polls, and a blocked one
//! every [`LIVENESS_PERIOD`].
//!
//! # Chunks
//!
//! [`Producer::write_chunk`] and [`Consumer::read_chunk`] give runs of slots in place, as
//! at most two slices (rtrb's chunk API), published or released by one position store:
//! what `send_slice`/`recv_into` and the [`stream`](crate::stream) ring are built on.
//!
//! # Modules
//!
//! `layout` (the control block and session words), `ring` (one side's shared view:
//! sessions and peers), `producer`, `consumer`, `builder`; the region, liveness probes,
//! blocking and attach are the crate's `core`.

#[cfg(not(loom))]
mod builder;
mod consumer;
pub(crate) mod layout;
mod producer;
mod ring;
#[cfg(test)]
mod tests;

use shm_sync::WaitStrategy;
use shm_sync::cell::UnsafeCell;

#[cfg(not(loom))]
pub use crate::core::attach::OpenMode;
use crate::core::check_shape;
pub use crate::core::liveness::{LIVENESS_PERIOD, LIVENESS_POLLS, LIVENESS_PROBE_INTERVAL};
use crate::core::region::Region;
pub use crate::core::{DEFAULT_CAPACITY, MAX_CAPACITY};
use crate::error::Error;
use crate::message::Message;
#[cfg(not(loom))]
pub use builder::Builder;
pub use consumer::{Consumer, ReadChunk, RecvGuard};
pub use layout::{CONSUMER_ROLE, PRODUCER_ROLE, data_len};
use layout::{Control, Slot};
pub use producer::{Producer, SendSlot, WriteChunk};
use ring::{Ring, Side};

/// Creates an SPSC ring of `capacity` slots on the heap, for two threads of one process.
///
/// The same algorithm as a segment ring, without a file; what loom and miri check.
///
/// # Errors
///
/// [`Error::InvalidCapacity`] unless `capacity` is a power of two in `1..=2^32`;
/// [`Error::UnsupportedAlignment`] if `T` is aligned to more than 128 bytes.
///
/// # Examples
///
/// ```
/// let (mut tx, mut rx) = shm_ring::spsc::channel::<u64>(4)?;
/// tx.try_send(7).unwrap();
/// assert_eq!(rx.try_recv(), Ok(7));
/// # Ok::<(), shm_ring::Error>(())
/// ```
pub fn channel<T: Message>(capacity: u64) -> Result<(Producer<T>, Consumer<T>), Error> {
    check_shape::<T>(capacity)?;
    let slots: Box<[Slot<T>]> = (0..capacity)
        .map(|_| UnsafeCell::new(T::new_zeroed()))
        .collect();
    let region = Region::heap(Control::default(), Box::new([]), slots, 2);
    let wait = WaitStrategy::default();
    Ok((
        Producer::attach(Ring::new(region.clone(), Side::Producer, wait)?)?,
        Consumer::attach(Ring::new(region, Side::Consumer, wait)?)?,
    ))
}
