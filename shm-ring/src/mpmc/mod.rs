//! A typed multi-producer multi-consumer ring, in a shared-memory segment or on the heap.
//!
//! Any number of [`Producer`]s and [`Consumer`]s, in any number of processes, up to the
//! ring's participant limit, exchange values of a [`Message`] type through `capacity`
//! slots (a power of two). Each message is received by exactly one consumer, and the
//! messages of one producer are received in the order it sent them. Lock-free: a claim is
//! retried when another participant took the same position first, so some participant
//! always makes progress, but no single one is guaranteed to.
//!
//! # Algorithm
//!
//! Dmitry Vyukov's bounded MPMC queue
//! (<https://www.1024cores.net/home/lock-free-algorithms/queues/bounded-mpmc-queue>), with
//! the per-slot "turn" encoding of Erik Rigtorp's `MPMCQueue`
//! (<https://github.com/rigtorp/MPMCQueue>) so that the all-zero file is the initial
//! state. Producers claim positions by CAS on `tail`, consumers by CAS on `head`; both
//! are `u64` counters that only grow, and the slot of position `p` is
//! `p & (capacity - 1)`. Every slot carries a stamp, `lap << 2 | state`, where
//! `lap = p / capacity`:
//!
//! | state | the slot of position `p` (lap `k`) | stored by |
//! |---|---|---|
//! | `EMPTY` (0) | is free for the producer of `p` | creation (lap 0); the consumer of `p - capacity` when done |
//! | `FULL` (1) | holds the message of `p` | the producer of `p`, after writing it |
//! | `SKIPPED` (2) | holds no message for `p` | the producer of `p` that aborted a reservation, or a participant that found that producer dead |
//! | 3 | - | nobody: corruption |
//!
//! A producer at `tail = t` waits for `EMPTY(lap t)`, claims `t` by CAS, writes, and
//! stores `FULL`. A consumer at `head = p` waits for `FULL` or `SKIPPED` of `lap p`,
//! claims `p` by CAS, reads, and stores `EMPTY(lap p + 1)`: the slot is the next lap's.
//! Any other stamp is either a stale position (the stamp is ahead: reload it) or proof
//! of corruption ([`Corruption::Slot`](crate::Corruption::Slot)), which is also how positions written by a
//! broken peer are caught: never a hang, never an out-of-bounds access. Positions are
//! assumed below 2^62 (146 years at a billion messages a second).
//!
//! # Participants and crashes
//!
//! Each handle holds one entry of the segment's participant table, claimed by an OFD
//! lock on the role byte of the same number (`shm_alloc::Segment::claim_role`), so the
//! kernel says whether its holder lives, whatever happened to its pid. Before its CAS
//! on `tail` or `head`, a participant writes the position it is claiming into its
//! entry. So when a position stays claimed and unfinished, the other side can find who
//! holds it:
//!
//! - A producer that dies between claiming `p` and publishing it would stop every
//!   consumer at `p`. A consumer that keeps finding `p` unpublished probes the
//!   producers' locks (every [`LIVENESS_PROBE_INTERVAL`] while polling, every
//!   [`LIVENESS_PERIOD`] while blocked); when the only claimers of `p` are dead, it
//!   marks the slot `SKIPPED`, counts it in [`Stats::skipped`], and moves on. No
//!   consumer ever reads the half-written bytes.
//! - A consumer that dies holding a read slot (between its claim and its release, for
//!   instance with a [`RecvGuard`] alive) would stop the producers a lap later. A
//!   producer that finds the ring full probes the consumers' locks, frees the slot,
//!   and counts it in [`Stats::reclaimed`]: that message was delivered to the dead
//!   consumer and is not delivered again.
//!
//! A dead participant's entry is retired under its lock (taken by the prober, or by a
//! newcomer attaching in that entry), so exactly one process resolves it. If a live
//! participant also names the same position (a producer that lost the CAS for it and
//! has not yet moved on), the dead one is left for the next probe rather than guessed
//! at.
//!
//! All producers gone (dropped or dead) means: consumers receive what is left, then
//! [`TryRecvError::Disconnected`](crate::TryRecvError::Disconnected); all consumers gone means: sends fail with
//! `Disconnected`. A ring nobody of one side has attached to yet is not disconnected:
//! producers may fill it before the first consumer comes.
//!
//! A handle that attaches checks the positions first (`head <= tail <= head + capacity`,
//! true at every instant of every run), on a snapshot: `head` read between two reads of
//! `tail` that agree, so a ring with messages passing is never taken for a corrupt one;
//! positions apart are [`Corrupted`](crate::Error::Corrupted).
//!
//! # Memory ordering
//!
//! - **SYNC(slot-published)**: the producer writes a slot, then stores its `FULL` stamp
//!   with `Release`; a consumer loads the stamp with `Acquire`, then reads the slot.
//! - **SYNC(slot-released)**: the consumer reads a slot, then stores the next lap's
//!   `EMPTY` stamp with `Release`; a producer loads it with `Acquire`, then writes.
//! - **SYNC(claim)**: a participant stores its claim in its entry (`Relaxed`), then
//!   CASes `tail`/`head` with `Release`; a prober loads `tail`/`head` with `Acquire`
//!   (the CASes form one release sequence), then the entries, so it sees the claim of
//!   whoever took the position it looks at.
//! - **SYNC(positions)**: `tail` and `head` are loaded with `Acquire`, so that the stamp
//!   read next is at least as new as the claims before them; this is what makes a stamp
//!   "behind" its position a proof of corruption rather than a stale read.
//! - **SYNC(census)**: a participant that leaves (or the prober that retires a dead one)
//!   finishes with its positions, then clears its entry's bit in its side's membership
//!   bitmap with `Release`; the other side loads the bitmap with `Acquire` and then polls
//!   the ring once more, so it sees every message sent before the last producer left.
//!   Bits rather than a count: a participant killed between its entry's store and its
//!   bit's (at attach or leave) is settled like any dead one, and clearing a bit twice,
//!   or one never set, changes nothing, so no side is left "attached" for ever. Before
//!   clearing its bit, a departure sets its side's `departed` mark (`Release`); a poll
//!   loads that mark (`Acquire`) before the bitmap, and calls a side gone only if the
//!   mark is set and the bitmap empty. A side that has lost nobody is never gone, so a
//!   poll racing the first participant's attach (entry stored, bit not yet set) does not
//!   read "disconnected".
//! - Waking goes through two `EventCount`s (`not_empty`, `not_full`), as in
//!   [`spsc`](crate::spsc): one load per notify when nobody sleeps (behind an
//!   asymmetric fence, no instruction in a registered process), and every sleeper of
//!   that event woken otherwise.

//! # Modules
//!
//! `layout` (the control block, entries, slots and their state words), `ring` (the
//! shared view: stamps, census, finishing a slot), `member` (a participant's entry and
//! cursor), `settle` (retiring dead participants), `producer`, `consumer`, `builder`; the
//! region, liveness probes, blocking and attach are the crate's `core`.

/// The methods a [`Producer`] and a [`Consumer`] share.
macro_rules! handle_common {
    ($handle:ident, $side:expr, $what:literal) => {
        $crate::wait_set::waitable!(
            [T: Message + 'static] $handle<T>,
            ready: |this, probe| this.ring.ready($side, &mut this.me, probe),
            event: |this| shm_sync::Waiting {
                event: this.ring.wait_event($side),
                mark: Some(this.ring.entry(this.me.index).parked()),
            },
            region: |this| this.ring.region,
        );

        impl<T: Message> $handle<T> {
            #[doc = concat!("Attaches another ", $what, " to this ring, in a free participant entry.")]
            ///
            /// # Errors
            ///
            /// [`Error::ParticipantsFull`](crate::Error::ParticipantsFull) when every entry is held by a live participant;
            /// [`Error::Segment`](crate::Error::Segment) if taking a role lock fails;
            /// [`Error::Corrupted`](crate::Error::Corrupted).
            pub fn try_clone(&self) -> Result<Self, $crate::Error> {
                let ring = self.ring.clone();
                let me = Member::attach(&ring, $side, self.me.wait)?;
                Ok($handle { ring, me })
            }

            /// The number of slots, a power of two.
            #[must_use]
            pub fn capacity(&self) -> u64 {
                self.ring.capacity()
            }

            /// Ends this handle as if its process had been killed at this point: the
            /// lock goes, the entry and any pending claim stay as they are (tests of
            /// crash handling).
            #[cfg(test)]
            pub(crate) fn simulate_crash(mut self) {
                self.me.lock = None;
            }

            /// The most producers and consumers that can be attached at once.
            #[must_use]
            pub fn participant_limit(&self) -> u32 {
                self.ring.limit()
            }

            /// A snapshot of the ring's participants and crash statistics.
            #[must_use]
            pub fn stats(&self) -> $crate::mpmc::Stats {
                Member::stats(&self.ring)
            }

            /// The wait strategy of the blocking calls ([`WaitStrategy::default`](shm_sync::WaitStrategy::default) unless
            /// set).
            pub fn set_wait_strategy(&mut self, wait: shm_sync::WaitStrategy) {
                self.me.wait = wait;
            }
        }

        impl<T: Message> Drop for $handle<T> {
            fn drop(&mut self) {
                self.me.leave(&self.ring);
            }
        }

        impl<T: Message> core::fmt::Debug for $handle<T> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct(stringify!($handle))
                    .field("capacity", &self.ring.capacity())
                    .field("participant", &self.me.index)
                    .field("wait", &self.me.wait)
                    .finish_non_exhaustive()
            }
        }
    };
}

#[cfg(not(loom))]
mod builder;
mod consumer;
pub(crate) mod layout;
mod member;
mod producer;
mod ring;
mod settle;
#[cfg(test)]
mod tests;

use shm_sync::WaitStrategy;

pub use crate::core::liveness::{LIVENESS_PERIOD, LIVENESS_POLLS, LIVENESS_PROBE_INTERVAL};
use crate::core::region::Region;
pub use crate::core::{DEFAULT_CAPACITY, MAX_CAPACITY, MAX_PARTICIPANTS};
use crate::error::Error;
use crate::message::Message;
#[cfg(not(loom))]
pub use builder::Builder;
pub use consumer::RecvGuard;
pub use layout::data_len;
use layout::{Control, Side, empty_slot};
use member::Member;
pub use producer::SendSlot;
use ring::Ring;

/// The participant limit of a ring whose builder was given none: 64 producers and
/// consumers together.
pub const DEFAULT_PARTICIPANTS: u32 = 64;

/// A snapshot of a ring's participants and of the slots its crash handling settled.
///
/// The counts include dead participants not yet retired (a probe or an attach retires
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Producers attached.
    pub producers: u32,
    /// Consumers attached.
    pub consumers: u32,
    /// Slots skipped because the producer that claimed them died before publishing:
    /// positions that carried no message.
    pub skipped: u64,
    /// Slots skipped because a producer dropped a [`SendSlot`] without committing it.
    pub aborted: u64,
    /// Slots freed because the consumer that claimed them died before releasing them:
    /// messages delivered to that consumer and not delivered again.
    pub reclaimed: u64,
    /// Consumers announced as parked, waiting for a message (a consumer killed while
    /// parked counts until a probe settles it).
    pub parked_consumers: u32,
    /// Producers announced as parked, waiting for room (likewise).
    pub parked_producers: u32,
}

/// The sending half of an MPMC ring: one of any number of producers.
///
/// `Send` but not `Sync`: one thread at a time sends through one handle; another thread
/// or process gets its own handle ([`try_clone`](Self::try_clone), or
/// [`Builder::producer`]).
pub struct Producer<T: Message> {
    ring: Ring<T>,
    me: Member,
}

/// The receiving half of an MPMC ring: one of any number of consumers.
///
/// `Send` but not `Sync`, as [`Producer`].
pub struct Consumer<T: Message> {
    ring: Ring<T>,
    me: Member,
}

// SAFETY: a Producer writes only the slots it claimed by CAS, and its own entry; its
// raw pointers point into memory its backing owns (a mapping or an Arc), valid from any
// thread. Messages are plain bytes (`Message: FromBytes`).
unsafe impl<T: Message + Send> Send for Producer<T> {}
// SAFETY: as for Producer, with the slots it claimed for reading.
unsafe impl<T: Message + Send> Send for Consumer<T> {}

/// Creates an MPMC ring of `capacity` slots on the heap, with room for
/// [`DEFAULT_PARTICIPANTS`] handles, and one producer and one consumer; more come from
/// [`Producer::try_clone`] and [`Consumer::try_clone`].
///
/// # Errors
///
/// [`Error::InvalidCapacity`] unless `capacity` is a power of two in `1..=2^32`;
/// [`Error::UnsupportedAlignment`] if `T` is aligned to more than 128 bytes.
///
/// # Examples
///
/// ```
/// let (mut tx, mut rx) = shm_ring::mpmc::channel::<u64>(4)?;
/// let mut tx2 = tx.try_clone()?;
/// tx.try_send(1).unwrap();
/// tx2.try_send(2).unwrap();
/// assert_eq!(rx.try_recv(), Ok(1));
/// assert_eq!(rx.try_recv(), Ok(2));
/// # Ok::<(), shm_ring::Error>(())
/// ```
pub fn channel<T: Message>(capacity: u64) -> Result<(Producer<T>, Consumer<T>), Error> {
    channel_with(capacity, DEFAULT_PARTICIPANTS)
}

/// [`channel`] with a participant limit of its own: at most `participants` handles,
/// producers and consumers together, at once.
///
/// # Errors
///
/// As [`channel`]; [`Error::InvalidParticipants`] unless `participants` is in
/// `2..=MAX_PARTICIPANTS` (the first producer and consumer need two).
pub fn channel_with<T: Message>(
    capacity: u64,
    participants: u32,
) -> Result<(Producer<T>, Consumer<T>), Error> {
    if participants < 2 {
        return Err(Error::InvalidParticipants(participants));
    }
    let ring = heap_ring(capacity, participants)?;
    let wait = WaitStrategy::default();
    let producer = Producer {
        me: Member::attach(&ring, Side::Producer, wait)?,
        ring: ring.clone(),
    };
    let consumer = Consumer {
        me: Member::attach(&ring, Side::Consumer, wait)?,
        ring,
    };
    Ok((producer, consumer))
}

/// An empty ring on the heap, nobody attached: what [`channel_with`] attaches its first
/// producer and consumer to.
fn heap_ring<T: Message>(capacity: u64, participants: u32) -> Result<Ring<T>, Error> {
    data_len::<T>(capacity, participants)?;
    let control = Control::default();
    let entries = (0..participants).map(|_| layout::Line::default()).collect();
    let slots = (0..capacity).map(|_| empty_slot::<T>()).collect();
    Ok(Ring::new(Region::heap(
        control,
        entries,
        slots,
        participants,
    )))
}
