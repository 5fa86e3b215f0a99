//! A typed broadcast ring: one publisher, many subscribers that each receive every
//! message, in a shared-memory segment or on the heap.
//!
//! One [`Publisher`] writes values of a [`Message`] type into `capacity` slots (a power of
//! two); up to a subscriber limit fixed at creation, [`Subscriber`]s in any processes
//! each read every message, in order, at their own pace. Subscribers never write to the
//! slots: each keeps its position (its cursor) in a line of its own, so a slow or
//! crashed subscriber never stalls the others. What happens when the slowest is a whole
//! ring behind is the ring's [`Overflow`] policy, fixed at creation:
//!
//! - [`Overflow::Lap`] (the default, for market data): the publisher never waits. A
//!   subscriber that falls a whole ring behind gets `Lagged { missed }` with the exact
//!   number of messages it lost, and goes on at the oldest message still in the ring.
//! - [`Overflow::Block`] (back-pressure, the LMAX Disruptor's gating): the publisher
//!   waits for the slowest live subscriber; a subscriber that dies stops gating at the
//!   publisher's next liveness probe. With an untether time
//!   ([`Publisher::set_untether_after`]), a live subscriber that holds the publisher back
//!   longer is dropped to lapped mode and told so (`Untethered`), as Aeron's untethered
//!   subscriptions are.
//!
//! # Algorithm
//!
//! A seqlock per slot (Boehm, "Can Seqlocks Get Along With Programming Language Memory
//! Models?", MSPC 2012), as in the broadcast queues of Aeron and of the LMAX Disruptor's
//! multicast: every slot carries a stamp `(position + 1) << 2 | state`. The publisher of
//! position `p` stores `WRITING(p)`, copies the message in, and stores `PUBLISHED(p)`;
//! then it stores the ring's `tail = p + 1`. A subscriber at `p` loads the stamp; if it
//! is `PUBLISHED(p)` it copies the message out, and keeps the copy only if the stamp is
//! unchanged after it. A stamp of a later position means the slot was overwritten: the
//! subscriber lagged. So a torn read is never returned as a message. The copies are
//! made with relaxed atomic loads and stores, word by word (no data race, RFC 3301's
//! byte-wise atomic memcpy), so the bytes a subscriber reads are only ever a message
//! the publisher wrote, or dropped.
//!
//! Messages are copied out, never lent in place: in place, the publisher could overwrite
//! a value while the subscriber's code reads it, and no check after the fact could take
//! back what that code did with torn bytes. Large payloads travel as pool chunks, which
//! stay put while read: [`chunks`] publishes a chunk's offset through the ring, and
//! every subscriber reads the one chunk in place under a hazard word of its own; the
//! chunk is freed exactly once, after its slot is overwritten and its last reader is
//! done, even if readers die holding it.
//!
//! Positions are `u64` counters that only grow, assumed below 2^62.
//!
//! # Gating (`Block`)
//!
//! The publisher may write position `t` once every gating subscriber's cursor is past
//! `t - capacity`. It keeps the bound it computed last (a scan of the gating
//! subscribers' cursors, read from a bitmap in the control block) and scans again only
//! when it reaches it. A joining subscriber sets its bit, then reads the tail after the
//! heavy side of an asymmetric fence pair (`shm_sync::asymmetric`: a membarrier), whose
//! light side (a compiler fence) the publisher issues before each scan: either the next
//! scan sees its bit, or the subscriber starts at or after every position the last scan
//! let the publisher overwrite. Joining is rare and may cost a syscall; a streaming
//! publisher whose ring is full scans about once per message, and pays nothing for it.
//!
//! # Participants and crashes
//!
//! The publisher holds entry 0 of the ring's participant table, subscriber `k` entry
//! `k + 1`, each claimed by an OFD lock on the role byte of the same number, so the
//! kernel says whether its holder lives.
//!
//! - A subscriber that dies stays in the gating set until the publisher, finding the
//!   ring full, probes the subscribers' locks (every `LIVENESS_PROBE_INTERVAL` while
//!   polling, every `LIVENESS_PERIOD` while blocked) and retires it.
//! - A publisher that dies while writing leaves a `WRITING` stamp: subscribers that find
//!   its lock free pass over the slot ([`SubscriberStats::skipped`]) and then see
//!   `Disconnected`. A publisher that attaches after marks that slot skipped
//!   ([`Stats::skipped`]) and goes on after it.
//! - A subscriber that attaches under the id of one that stopped (left or died) resumes
//!   where it stopped ([`Builder::subscriber_with_id`]); if the ring went a whole lap past
//!   it meanwhile, its first receive reports the loss as `Lagged`.
//!
//! # Memory ordering
//!
//! - **SYNC(slot-published)**: the publisher copies a message in, then stores its
//!   `PUBLISHED` stamp with `Release`; a subscriber loads the stamp with `Acquire`, then
//!   copies the message out.
//! - **SYNC(seqlock)**: the publisher stores `WRITING`, then a `Release` fence, then
//!   the bytes; the subscriber copies the bytes, then an `Acquire` fence, then loads the
//!   stamp again: if it read any byte of the next write, it sees that write's stamp.
//! - **SYNC(tail)**: the publisher stores `tail` with `Release` after each message, and
//!   each `WRITING` stamp with `Release` after the tail of the message before; a
//!   subscriber that joins or lags loads it with `Acquire`.
//! - **SYNC(slot-released)**: a subscriber stores its cursor with `Release` after it
//!   read the slot; the publisher's scan loads it with `Acquire` before overwriting.
//! - **SYNC(gating)** and **SYNC(join)**: see "Gating" above; the bit is set and cleared
//!   with `Release`, loaded with `Acquire`.
//! - **SYNC(untether)**: the publisher stores a subscriber's `untethered` flag with
//!   `Release` before it clears its gating bit; the subscriber loads it with `Acquire`
//!   in its slow path.
//! - Waking goes through two `EventCount`s, as in [`spsc`](crate::spsc): subscribers
//!   park on `not_empty`, which the publisher notifies after each message (one load when
//!   nobody sleeps); under `Block` the publisher parks on `not_full`, which subscribers
//!   notify after each message.
//!
//! # Modules
//!
//! `layout` (control block, table lines, slots, state words), `ring` (the shared view,
//! the seqlock writer, settling the dead), `publisher`, `subscriber`, `error`,
//! `builder`; the region, liveness probes, blocking and attach are the crate's `core`.

#[cfg(not(loom))]
mod builder;
#[cfg(not(loom))]
pub mod chunks;
mod error;
#[cfg(not(loom))]
pub mod frames;
pub(crate) mod layout;
mod publisher;
mod ring;
mod subscriber;
#[cfg(test)]
mod tests;

use shm_sync::WaitStrategy;
use shm_sync::atomic::Ordering;

use crate::core::liveness::PeerWatch;
pub use crate::core::liveness::{LIVENESS_PERIOD, LIVENESS_POLLS, LIVENESS_PROBE_INTERVAL};
use crate::core::region::{Region, RoleLock};
pub use crate::core::{DEFAULT_CAPACITY, MAX_CAPACITY};
use crate::error::Error;
use crate::message::Message;
#[cfg(not(loom))]
pub use builder::Builder;
#[cfg(not(loom))]
pub use chunks::{ChunkPublisher, ChunkSample, ChunkSubscriber};
pub use error::{RecvError, RecvTimeoutError, TryRecvError};
pub use layout::data_len;
use layout::{Control, Line, empty_slot};
use ring::Ring;
use subscriber::Counts;

/// The subscriber limit of a ring whose builder was given none.
pub const DEFAULT_SUBSCRIBERS: u32 = 64;

/// The largest subscriber limit: one participant entry (and role byte) each, and one
/// for the publisher.
pub const MAX_SUBSCRIBERS: u32 = crate::core::MAX_PARTICIPANTS - 1;

/// What the publisher does when the slowest subscriber is a whole ring behind: fixed
/// when the ring is created, recorded in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Never wait: overwrite the oldest message; a subscriber that had not read it gets
    /// `Lagged { missed }`.
    #[default]
    Lap,
    /// Wait for the slowest live subscriber (back-pressure).
    Block,
}

/// Where a new subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// At the next message published: it receives what is published after it joined.
    #[default]
    Newest,
    /// At the oldest message still in the ring when it first receives (losses before
    /// its first message are not reported as lag: the oldest is wherever it is then).
    Oldest,
}

/// A snapshot of a ring's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages published: the position of the next.
    pub published: u64,
    /// Subscribers attached (dead ones not yet retired included).
    pub subscribers: u32,
    /// Slots a publisher found half-written by a dead predecessor, and marked skipped.
    pub skipped: u64,
    /// Subscribers announced as parked, waiting for a message.
    pub parked_subscribers: u32,
}

impl Stats {
    fn of<T: Message>(ring: &Ring<T>) -> Self {
        let control = ring.control();
        Stats {
            // Relaxed: a snapshot.
            published: control.tail.load(Ordering::Relaxed),
            subscribers: ring.subscribers(),
            // Relaxed: a snapshot.
            skipped: control.counters.skipped.load(Ordering::Relaxed),
            parked_subscribers: control.not_empty.waiters(),
        }
    }
}

/// A subscriber's counts: kept across its sessions under the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriberStats {
    /// The subscriber's id.
    pub id: u32,
    /// The position of the next message it reads.
    pub position: u64,
    /// Messages received.
    pub received: u64,
    /// Times it fell a whole ring behind (each a `Lagged` error).
    pub lagged: u64,
    /// Messages lost to those lags: `received + missed + skipped` is the span of
    /// positions it went through.
    pub missed: u64,
    /// Slots passed over that held no message (a dead publisher's half-written slot).
    pub skipped: u64,
    /// Whether the publisher stopped waiting for it (`Block` with an untether time).
    pub untethered: bool,
}

/// The publishing side of a broadcast ring: there is one at a time.
///
/// `Send` but not `Sync`.
pub struct Publisher<T: Message> {
    ring: Ring<T>,
    /// `None` once left (or after a simulated crash, in tests).
    lock: Option<RoleLock>,
    session: u32,
    /// The next position to publish.
    tail: u64,
    /// `Block`: the first position not to write before scanning the gating subscribers
    /// again; `Lap`: `u64::MAX`.
    gate: u64,
    /// `Block`: how long a subscriber may hold the publisher back before it is
    /// untethered; `None`: for ever.
    untether_after: Option<std::time::Duration>,
    /// `Block`: since when the publisher has been held back, while it is.
    blocked_since: Option<std::time::Instant>,
    wait: WaitStrategy,
    watch: PeerWatch,
}

/// A receiving side of a broadcast ring: each subscriber receives every message.
///
/// `Send` but not `Sync`.
pub struct Subscriber<T: Message> {
    ring: Ring<T>,
    lock: Option<RoleLock>,
    /// Its entry of the table: its id + 1.
    index: u32,
    session: u32,
    /// The next position to read.
    cursor: u64,
    /// Whether a lag counts as lost messages: false only for a subscriber that joined at
    /// the oldest message and has received nothing yet.
    settled: bool,
    /// Whether it was told it is untethered.
    told_untethered: bool,
    counts: Counts,
    wait: WaitStrategy,
    watch: PeerWatch,
}

// SAFETY: a Publisher writes the slots and its own entry; its raw pointers point into
// memory its backing owns (a mapping or an Arc), valid from any thread. Messages are
// plain bytes (`Message: FromBytes`).
unsafe impl<T: Message + Send> Send for Publisher<T> {}
// SAFETY: a Subscriber writes only its own line; its pointers are as the Publisher's.
unsafe impl<T: Message + Send> Send for Subscriber<T> {}

/// Creates a broadcast ring of `capacity` slots on the heap, with room for
/// [`DEFAULT_SUBSCRIBERS`], its publisher and one subscriber; more subscribers come from
/// [`Publisher::subscribe`].
///
/// # Errors
///
/// [`Error::InvalidCapacity`] unless `capacity` is a power of two in `1..=2^32`;
/// [`Error::UnsupportedAlignment`] if `T` is aligned to more than 128 bytes.
///
/// # Examples
///
/// ```
/// use shm_ring::broadcast::{self, Overflow, TryRecvError};
///
/// let (mut tx, mut rx1) = broadcast::channel::<u64>(4, Overflow::Lap)?;
/// let mut rx2 = tx.subscribe()?;
/// tx.try_send(7).unwrap();
/// assert_eq!(rx1.try_recv(), Ok(7));
/// assert_eq!(rx2.try_recv(), Ok(7));
/// for i in 0..6 {
///     tx.try_send(i).unwrap(); // never waits: laps rx1 and rx2
/// }
/// assert_eq!(rx1.try_recv(), Err(TryRecvError::Lagged { missed: 2 }));
/// assert_eq!(rx1.try_recv(), Ok(2));
/// # Ok::<(), shm_ring::Error>(())
/// ```
pub fn channel<T: Message>(
    capacity: u64,
    overflow: Overflow,
) -> Result<(Publisher<T>, Subscriber<T>), Error> {
    channel_with(capacity, DEFAULT_SUBSCRIBERS, overflow)
}

/// [`channel`] with a subscriber limit of its own (`1..=MAX_SUBSCRIBERS`).
///
/// # Errors
///
/// As [`channel`]; [`Error::InvalidParticipants`] for a limit out of range.
pub fn channel_with<T: Message>(
    capacity: u64,
    subscribers: u32,
    overflow: Overflow,
) -> Result<(Publisher<T>, Subscriber<T>), Error> {
    data_len::<T>(capacity, subscribers)?;
    let control = Control::default();
    control
        .config
        .overflow
        // Relaxed: nobody else sees the region yet.
        .store(overflow.word(), Ordering::Relaxed);
    let entries = (0..=subscribers).map(|_| Line::default()).collect();
    let slots = (0..capacity).map(|_| empty_slot::<T>()).collect();
    let region = Region::heap(control, entries, slots, subscribers + 1);
    let ring = Ring::new(region, overflow);
    let wait = WaitStrategy::default();
    let publisher = Publisher::attach(ring.clone(), wait)?;
    let subscriber = Subscriber::attach(ring, None, Start::Newest, wait)?;
    Ok((publisher, subscriber))
}

impl<T: Message> Publisher<T> {
    /// Attaches a new subscriber in the first free entry, starting at the next message.
    ///
    /// # Errors
    ///
    /// [`Error::ParticipantsFull`] when every entry is held by a live subscriber;
    /// [`Error::Segment`] if taking a role lock fails; [`Error::Corrupted`].
    pub fn subscribe(&self) -> Result<Subscriber<T>, Error> {
        Subscriber::attach(self.ring.clone(), None, Start::Newest, self.wait)
    }
}

impl<T: Message> core::fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Publisher")
            .field("capacity", &self.ring.capacity())
            .field("overflow", &self.ring.overflow)
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

impl<T: Message> core::fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Subscriber")
            .field("id", &self.id())
            .field("capacity", &self.ring.capacity())
            .field("position", &self.cursor)
            .finish_non_exhaustive()
    }
}
