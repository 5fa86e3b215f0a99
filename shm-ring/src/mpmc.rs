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
//! of corruption ([`Corruption::Slot`]), which is also how positions written by a
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
//! [`TryRecvError::Disconnected`]; all consumers gone means: sends fail with
//! `Disconnected`. A ring nobody of one side has attached to yet is not disconnected:
//! producers may fill it before the first consumer comes.
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
//!   finishes with its positions, then decrements the count of its side with `Release`;
//!   the other side loads the count with `Acquire` and then polls the ring once more,
//!   so it sees every message sent before the last producer left.
//! - Waking goes through two [`EventCount`]s (`not_empty`, `not_full`), as in
//!   [`spsc`](crate::spsc): one `SeqCst` fence and one load per notify when nobody
//!   sleeps, and every sleeper of that event woken otherwise.

use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use shm_sync::cell::UnsafeCell;
use shm_sync::{CachePadded, EventCount, WaitStrategy};

use crate::error::{
    Corruption, Error, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};
use crate::message::Message;
pub use crate::spsc::{LIVENESS_PERIOD, LIVENESS_POLLS, LIVENESS_PROBE_INTERVAL};
use crate::spsc::{PeerWatch, Refusal, block};

#[cfg(not(loom))]
use crate::spsc::OpenMode;
#[cfg(not(loom))]
use core::marker::PhantomData;
#[cfg(not(loom))]
use shm_alloc::{Expect, Kind, Location, RoleClaim, Segment, SegmentOptions, SegmentSpec};

/// The capacity of a ring whose builder was given none: 1024 slots.
pub const DEFAULT_CAPACITY: u64 = 1024;

/// The largest capacity, in slots: 2^32.
pub const MAX_CAPACITY: u64 = 1 << 32;

/// The participant limit of a ring whose builder was given none: 64 producers and
/// consumers together.
pub const DEFAULT_PARTICIPANTS: u32 = 64;

/// The largest participant limit: one role byte of the segment header per participant.
pub const MAX_PARTICIPANTS: u32 = 1024;

/// Under loom, which has no clock: how many empty (or full) polls pass between two
/// probes of the other side: enough that a model whose consumers park rarely probes
/// (each probe is a dozen more atomic operations to interleave), few enough that a
/// polling model reaches the crash handling at once.
#[cfg(loom)]
const LOOM_POLLS: u32 = 16;
#[cfg(not(loom))]
const LOOM_POLLS: u32 = LIVENESS_POLLS;

#[cfg(not(loom))]
const _: () = assert!(MAX_PARTICIPANTS == shm_alloc::MAX_ROLES);

/// Slot stamp states (the low two bits); the upper bits are the lap.
const EMPTY: u64 = 0; // free for the producer of this lap's position
const FULL: u64 = 1; // holds this lap's message
const SKIPPED: u64 = 2; // holds nothing for this lap: aborted, or its producer died
const STAMP_STATE: u64 = 0b11;

/// Participant session words: the low two bits say who holds the entry, the upper 30
/// count attaches (a generation).
///
/// | state | meaning | written by |
/// |---|---|---|
/// | `FREE` (0) | nobody holds the entry | creation; the holder when it leaves; whoever retires a dead holder |
/// | `PRODUCER` (1) | a producer holds it (alive while its lock is held) | the producer, at attach |
/// | `CONSUMER` (2) | a consumer holds it | the consumer, at attach |
/// | 3 | - | nobody: corruption |
const FREE: u32 = 0;
const PRODUCER: u32 = 1;
const CONSUMER: u32 = 2;
const SESSION_STATE: u32 = 0b11;
const GENERATION_ONE: u32 = 0b100;

/// `Census::seen` bits: a side has attached at least once.
const SEEN_PRODUCER: u32 = 1;
const SEEN_CONSUMER: u32 = 2;

/// The control block at the start of the ring's data region.
///
/// # Layout
///
/// | offset | size | field | written by |
/// |---|---|---|---|
/// | 0 | 128 | `tail: u64` | producers, every claim |
/// | 128 | 128 | `head: u64` | consumers, every claim |
/// | 256 | 128 | `census`: `limit`, `producers`, `consumers`, `seen` (`u32` each) | the creator (`limit`); participants at attach and leave |
/// | 384 | 128 | `counters`: `skipped`, `aborted`, `reclaimed` (`u64` each) | whoever skips, aborts or reclaims a slot |
/// | 512 | 128 | `not_empty: EventCount` | consumers when they park, producers when they find them parked |
/// | 640 | 128 | `not_full: EventCount` | producers when they park, consumers when they find them parked |
///
/// The participant table follows at offset 768: `limit` entries of 128 bytes. Then the
/// slots, at `768 + 128 * limit`: `capacity` times `size_of::<Slot<T>>()` bytes. All-zero
/// except `limit` is the initial state: empty, nobody attached.
#[repr(C)]
#[derive(Debug, Default)]
struct Control {
    tail: CachePadded<AtomicU64>,
    head: CachePadded<AtomicU64>,
    census: CachePadded<Census>,
    counters: CachePadded<Counters>,
    not_empty: CachePadded<EventCount>,
    not_full: CachePadded<EventCount>,
}

#[repr(C)]
#[derive(Debug, Default)]
struct Census {
    /// The participant limit, fixed by the creator before the segment is published.
    limit: AtomicU32,
    /// Attached producers, dead ones included until someone retires them.
    producers: AtomicU32,
    /// Attached consumers, likewise.
    consumers: AtomicU32,
    /// `SEEN_PRODUCER | SEEN_CONSUMER`: which sides have ever attached.
    seen: AtomicU32,
}

#[repr(C)]
#[derive(Debug, Default)]
struct Counters {
    skipped: AtomicU64,
    aborted: AtomicU64,
    reclaimed: AtomicU64,
}

/// One participant's entry: who holds it, and the position it is claiming.
#[repr(C)]
#[derive(Debug, Default)]
struct Entry {
    session: AtomicU32,
    _reserved: AtomicU32,
    /// `position + 1` of the position being claimed or held, 0 for none.
    claim: AtomicU64,
}

/// A slot: its stamp, then the message.
#[repr(C)]
struct Slot<T> {
    stamp: AtomicU64,
    value: UnsafeCell<T>,
}

/// The size of [`Control`]: where the participant table begins, in bytes.
const CONTROL_LEN: usize = 768;

/// The size of one participant entry, in bytes.
const ENTRY_LEN: usize = 128;

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<Control>() == CONTROL_LEN);
    assert!(core::mem::offset_of!(Control, head) == 128);
    assert!(core::mem::offset_of!(Control, census) == 256);
    assert!(core::mem::offset_of!(Control, counters) == 384);
    assert!(core::mem::offset_of!(Control, not_empty) == 512);
    assert!(core::mem::offset_of!(Control, not_full) == 640);
    assert!(size_of::<CachePadded<Entry>>() == ENTRY_LEN);
    assert!(core::mem::offset_of!(Entry, claim) == 8);
    assert!(size_of::<Slot<u8>>() == 16);
    assert!(core::mem::offset_of!(Slot<u64>, value) == 8);
};

/// The bytes a ring of `capacity` slots of `T` with `participants` entries needs after
/// the segment header.
///
/// # Errors
///
/// [`Error::InvalidCapacity`] unless `capacity` is a power of two in `1..=MAX_CAPACITY`;
/// [`Error::InvalidParticipants`] unless `participants` is in `1..=MAX_PARTICIPANTS`;
/// [`Error::UnsupportedAlignment`] if `T` is aligned to more than 128 bytes.
pub fn data_len<T: Message>(capacity: u64, participants: u32) -> Result<u64, Error> {
    if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
        return Err(Error::InvalidCapacity(capacity));
    }
    if participants == 0 || participants > MAX_PARTICIPANTS {
        return Err(Error::InvalidParticipants(participants));
    }
    if align_of::<T>() > shm_sync::CACHE_PAD {
        return Err(Error::UnsupportedAlignment(align_of::<T>()));
    }
    (size_of::<Slot<T>>() as u64)
        .checked_mul(capacity)
        .and_then(|slots| slots.checked_add(slots_offset(participants) as u64))
        .ok_or(Error::InvalidCapacity(capacity))
}

/// Where the slots begin in the data region, in bytes (a multiple of 128).
fn slots_offset(participants: u32) -> usize {
    CONTROL_LEN + ENTRY_LEN * participants as usize
}

/// Which side a participant is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Producer,
    Consumer,
}

impl Side {
    fn session_state(self) -> u32 {
        match self {
            Side::Producer => PRODUCER,
            Side::Consumer => CONSUMER,
        }
    }

    fn seen_bit(self) -> u32 {
        match self {
            Side::Producer => SEEN_PRODUCER,
            Side::Consumer => SEEN_CONSUMER,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Producer => Side::Consumer,
            Side::Consumer => Side::Producer,
        }
    }
}

/// What keeps a ring's memory alive.
enum Backing<T> {
    /// A mapped segment; the participant locks are its role locks.
    #[cfg(not(loom))]
    Segment(Arc<Segment>),
    /// A ring on the heap; the participant locks are flags in it.
    Heap(Arc<HeapRing<T>>),
}

impl<T> Clone for Backing<T> {
    fn clone(&self) -> Self {
        match self {
            #[cfg(not(loom))]
            Backing::Segment(s) => Backing::Segment(s.clone()),
            Backing::Heap(h) => Backing::Heap(h.clone()),
        }
    }
}

/// A ring on the heap: the in-process form, and what loom and miri run. `locks` stands
/// in for the OFD locks of a segment: a participant holds its flag while attached.
struct HeapRing<T> {
    control: Control,
    entries: Box<[CachePadded<Entry>]>,
    locks: Box<[AtomicBool]>,
    slots: Box<[Slot<T>]>,
}

/// A participant's hold on its entry: released when dropped, or when its process dies.
enum Lock<T> {
    #[cfg(not(loom))]
    Role(#[allow(dead_code)] RoleClaim),
    Heap {
        ring: Arc<HeapRing<T>>,
        index: usize,
    },
}

impl<T> Drop for Lock<T> {
    fn drop(&mut self) {
        #[cfg_attr(loom, allow(irrefutable_let_patterns))]
        if let Lock::Heap { ring, index } = self {
            // SYNC(lock): Release; pairs with the Acquire of a prober's `try_lock`, which
            // then sees every store this participant made.
            ring.locks[*index].store(false, Ordering::Release);
        }
    }
}

/// Whether a dead participant's claim could be settled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Settled {
    Yes,
    /// A live participant names the same position: look again later.
    NotYet,
}

/// One participant's view of a ring.
struct Ring<T> {
    control: NonNull<Control>,
    entries: NonNull<CachePadded<Entry>>,
    slots: NonNull<Slot<T>>,
    capacity: u64,
    /// `log2(capacity)`: `position >> shift` is the lap.
    shift: u32,
    limit: u32,
    backing: Backing<T>,
}

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Ring {
            control: self.control,
            entries: self.entries,
            slots: self.slots,
            capacity: self.capacity,
            shift: self.shift,
            limit: self.limit,
            backing: self.backing.clone(),
        }
    }
}

impl<T: Message> Ring<T> {
    fn heap(capacity: u64, participants: u32) -> Result<Self, Error> {
        data_len::<T>(capacity, participants)?;
        let heap = Arc::new(HeapRing {
            control: Control::default(),
            entries: (0..participants).map(|_| CachePadded::default()).collect(),
            locks: (0..participants).map(|_| AtomicBool::new(false)).collect(),
            slots: (0..capacity)
                .map(|_| Slot {
                    stamp: AtomicU64::new(0),
                    value: UnsafeCell::new(T::new_zeroed()),
                })
                .collect(),
        });
        // Relaxed: the Arc is not shared yet.
        heap.control
            .census
            .limit
            .store(participants, Ordering::Relaxed);
        Ok(Ring {
            control: NonNull::from(&heap.control),
            // `as_ptr` of the whole slices: the pointers may reach every element.
            entries: NonNull::new(heap.entries.as_ptr().cast_mut()).expect("a Box is never null"),
            slots: NonNull::new(heap.slots.as_ptr().cast_mut()).expect("a Box is never null"),
            capacity,
            shift: capacity.trailing_zeros(),
            limit: participants,
            backing: Backing::Heap(heap),
        })
    }

    #[cfg(not(loom))]
    fn attach_segment(builder: &Builder<T>) -> Result<Self, Error> {
        let capacity = builder.capacity.unwrap_or(DEFAULT_CAPACITY);
        let participants = builder.participants.unwrap_or(DEFAULT_PARTICIPANTS);
        let spec = SegmentSpec {
            kind: Kind::Mpmc,
            capacity,
            slot_size: size_of::<Slot<T>>() as u64,
            slot_align: align_of::<Slot<T>>() as u64,
            type_fingerprint: T::FINGERPRINT,
            type_name: T::TYPE_NAME,
            data_len: data_len::<T>(capacity, participants)?,
        };
        let expect = Expect {
            capacity: builder.capacity,
            ..Expect::from(&spec)
        };
        let init = |segment: &Segment| {
            let control = segment.data().cast::<Control>();
            // SAFETY: the data region is at least CONTROL_LEN bytes (`spec.data_len`),
            // page-aligned, and all-zero: a valid `Control`, accessed atomically.
            let control = unsafe { control.as_ref() };
            // Relaxed: published by the segment's READY store (Release).
            control.census.limit.store(participants, Ordering::Relaxed);
        };
        let segment = match builder.mode {
            OpenMode::Create => {
                Segment::create_with(&builder.location, &spec, &builder.options, init)?
            }
            OpenMode::Open => Segment::open(&builder.location, &expect, &builder.options)?,
            OpenMode::OpenOrCreate => {
                Segment::open_or_create_with(
                    &builder.location,
                    &spec,
                    &expect,
                    &builder.options,
                    init,
                )?
                .0
            }
        };
        let capacity = segment.header().capacity;
        let region = segment.data_len() as u64;
        let layout = Error::Corrupted(Corruption::Layout {
            capacity,
            data_len: region,
        });
        if (region as usize) < CONTROL_LEN {
            return Err(layout);
        }
        let control = segment.data().cast::<Control>();
        // SAFETY: the data region is at least CONTROL_LEN bytes (checked above) and
        // page-aligned; any bytes are a valid `Control` (atomics only).
        let limit = unsafe { control.as_ref() }
            .census
            .limit
            .load(Ordering::Acquire);
        if limit == 0 || limit > MAX_PARTICIPANTS {
            return Err(Error::Corrupted(Corruption::State {
                word: "the participant limit",
                found: limit,
            }));
        }
        match builder.participants {
            Some(expected) if expected != limit => {
                return Err(Error::ParticipantsMismatch {
                    expected,
                    found: limit,
                });
            }
            _ => {}
        }
        match data_len::<T>(capacity, limit) {
            Ok(needed) if needed <= region => {}
            _ => return Err(layout),
        }
        let base = segment.data();
        // SAFETY: both offsets are inside the data region (its length was checked
        // against `data_len` above); both are multiples of 128 >= the alignment of
        // `CachePadded<Entry>` and `Slot<T>`, and the region is page-aligned.
        let (entries, slots) = unsafe {
            (
                base.add(CONTROL_LEN).cast::<CachePadded<Entry>>(),
                base.add(slots_offset(limit)).cast::<Slot<T>>(),
            )
        };
        Ok(Ring {
            control,
            entries,
            slots,
            capacity,
            shift: capacity.trailing_zeros(),
            limit,
            backing: Backing::Segment(Arc::new(segment)),
        })
    }

    #[inline(always)]
    fn control(&self) -> &Control {
        // SAFETY: `control` points into memory `backing` keeps alive as long as `self`;
        // any bytes are a valid `Control` (atomics only), accessed only atomically.
        unsafe { self.control.as_ref() }
    }

    /// The entry of participant `index` (`index < limit`).
    #[inline(always)]
    fn entry(&self, index: u32) -> &Entry {
        debug_assert!(index < self.limit);
        // SAFETY: `index < limit`, and the table of `limit` entries lies in memory
        // `backing` keeps alive; an entry is atomics only.
        unsafe { self.entries.add(index as usize).as_ref() }
    }

    /// The slot of `position`.
    #[inline(always)]
    fn slot(&self, position: u64) -> &Slot<T> {
        let index = (position & (self.capacity - 1)) as usize;
        // SAFETY: `index < capacity`, and `slots` points to `capacity` slots inside the
        // memory `backing` keeps alive as long as `self`.
        unsafe { self.slots.add(index).as_ref() }
    }

    /// The stamp of `position`'s slot in `state`.
    #[inline(always)]
    fn stamp(&self, position: u64, state: u64) -> u64 {
        ((position >> self.shift) << 2) | state
    }

    /// How many laps `stamp` is ahead of `position` (negative: behind).
    #[inline(always)]
    fn laps_ahead(&self, stamp: u64, position: u64) -> i64 {
        let lap = (position >> self.shift) & (u64::MAX >> 2);
        ((stamp >> 2) as i64).wrapping_sub(lap as i64)
    }

    fn count(&self, side: Side) -> &AtomicU32 {
        match side {
            Side::Producer => &self.control().census.producers,
            Side::Consumer => &self.control().census.consumers,
        }
    }

    /// Whether every participant of `side` is gone, after at least one attached.
    #[inline]
    fn side_gone(&self, side: Side) -> bool {
        let census = &self.control().census;
        // SYNC(census): Acquire; pairs with the Release decrement of the last one to
        // leave, so a poll after this sees everything it sent or released.
        self.count(side).load(Ordering::Acquire) == 0
            // Relaxed: set once per side, before that side's count first grows.
            && census.seen.load(Ordering::Relaxed) & side.seen_bit() != 0
    }

    /// Takes participant `index`'s lock if nobody holds it.
    fn try_lock(&self, index: u32) -> Result<Option<Lock<T>>, Error> {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment(segment) => match segment.claim_role(index) {
                Ok(claim) => Ok(Some(Lock::Role(claim))),
                Err(shm_alloc::Error::RoleTaken { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Backing::Heap(heap) => Ok((!heap.locks[index as usize]
                // SYNC(lock): Acquire; pairs with the Release of the previous holder's
                // unlock. Swapping `true` into a held lock changes nothing.
                .swap(true, Ordering::Acquire))
            .then(|| Lock::Heap {
                ring: heap.clone(),
                index: index as usize,
            })),
        }
    }

    /// Whether participant `index`'s lock is held: its holder lives. A failed probe
    /// counts as alive: it is no evidence of death.
    fn is_locked(&self, index: u32) -> bool {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment(segment) => segment.role_alive(index).unwrap_or(true),
            // Acquire: as in `try_lock`.
            Backing::Heap(heap) => heap.locks[index as usize].load(Ordering::Acquire),
        }
    }

    /// Whether a participant that can die without leaving may be here (another process).
    fn peers_may_die(&self) -> bool {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment(_) => true,
            Backing::Heap(_) => false,
        }
    }

    /// Checks `tail` and `head` against each other: `head <= tail <= head + capacity`.
    fn check_positions(&self) -> Result<(), Corruption> {
        let control = self.control();
        // SYNC(positions): Acquire, tail first: then head >= tail - capacity.
        let tail = control.tail.load(Ordering::Acquire);
        let head = control.head.load(Ordering::Acquire);
        let used = tail.wrapping_sub(head) as i64;
        // A head past the tail read first is a tail that moved since: read it again.
        let tail = if used < 0 {
            control.tail.load(Ordering::Acquire)
        } else {
            tail
        };
        let used = tail.wrapping_sub(head) as i64;
        if used < 0 || used > self.capacity as i64 {
            return Err(Corruption::Positions {
                head,
                tail,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Marks `side`'s slot of `position` done: a producer publishes (`FULL`) or aborts
    /// (`SKIPPED`), a consumer releases it to the next lap. Wakes the other side.
    #[inline]
    fn finish(&self, side: Side, position: u64, state: u64) {
        let control = self.control();
        let slot = self.slot(position);
        match side {
            Side::Producer => {
                // SYNC(slot-published): Release; pairs with a consumer's Acquire load of
                // the stamp: the message written before is visible to it.
                slot.stamp
                    .store(self.stamp(position, state), Ordering::Release);
                control.not_empty.notify();
            }
            Side::Consumer => {
                // SYNC(slot-released): Release; pairs with a producer's Acquire load of
                // the stamp: this consumer's reads of the slot are done.
                slot.stamp.store(
                    self.stamp(position.wrapping_add(self.capacity), EMPTY),
                    Ordering::Release,
                );
                control.not_full.notify();
            }
        }
    }

    /// Whether a live participant of `side`, other than `except`, names `position` in
    /// its entry.
    fn claimed_by_live(&self, position: u64, side: Side, except: u32) -> bool {
        (0..self.limit).filter(|&j| j != except).any(|j| {
            let entry = self.entry(j);
            // Acquire: pairs with the Release store of the session at attach.
            entry.session.load(Ordering::Acquire) & SESSION_STATE == side.session_state()
                // Relaxed: ordered after the caller's Acquire load of tail or head
                // (SYNC(claim)).
                && entry.claim.load(Ordering::Relaxed) == position.wrapping_add(1)
                && self.is_locked(j)
        })
    }

    /// Settles a claim of `position` by the dead producer `dead`: if the position was
    /// claimed and is still unpublished, and no live producer names it, skips it.
    fn settle_write(&self, position: u64, dead: u32) -> Settled {
        let control = self.control();
        let slot = self.slot(position);
        let empty = self.stamp(position, EMPTY);
        // Acquire: see the current lap of the slot.
        if slot.stamp.load(Ordering::Acquire) != empty {
            return Settled::Yes; // published, skipped, or long gone
        }
        // SYNC(claim): Acquire; the claims of whoever took positions below tail are
        // visible after this.
        let tail = control.tail.load(Ordering::Acquire);
        if tail.wrapping_sub(position) as i64 <= 0 {
            // Never claimed: the dead producer lost its CAS or died before it.
            return Settled::Yes;
        }
        if self.claimed_by_live(position, Side::Producer, dead) {
            return Settled::NotYet;
        }
        // Release: as a publish (SYNC(slot-published)); the skip carries no data. Failure
        // Relaxed: someone else published or skipped the slot, nothing to read.
        if slot
            .stamp
            .compare_exchange(
                empty,
                self.stamp(position, SKIPPED),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            // Relaxed: a statistic.
            control.counters.skipped.fetch_add(1, Ordering::Relaxed);
            control.not_empty.notify();
        }
        Settled::Yes
    }

    /// Settles a claim of `position` by the dead consumer `dead`: if a consumer claimed
    /// it and never released it, and no live consumer names it, releases it.
    fn settle_read(&self, position: u64, dead: u32) -> Settled {
        let control = self.control();
        let slot = self.slot(position);
        // Acquire: see the current lap of the slot.
        let stamp = slot.stamp.load(Ordering::Acquire);
        let full = self.stamp(position, FULL);
        if stamp != full && stamp != self.stamp(position, SKIPPED) {
            return Settled::Yes; // released, or never published
        }
        // SYNC(claim): Acquire, as in `settle_write`.
        let head = control.head.load(Ordering::Acquire);
        if head.wrapping_sub(position) as i64 <= 0 {
            return Settled::Yes; // not claimed: a live consumer will take it
        }
        if self.claimed_by_live(position, Side::Consumer, dead) {
            return Settled::NotYet;
        }
        // Release: as a consumer's release (SYNC(slot-released)). Failure Relaxed: the
        // slot moved on, nothing to read.
        if slot
            .stamp
            .compare_exchange(
                stamp,
                self.stamp(position.wrapping_add(self.capacity), EMPTY),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            if stamp == full {
                // Relaxed: a statistic.
                control.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
            }
            control.not_full.notify();
        }
        Settled::Yes
    }

    /// Retires participant `index`, whose holder is dead (the caller holds its lock):
    /// settles its claim, frees the entry, and takes it off its side's count.
    fn retire(&self, index: u32, session: u32) -> Result<Settled, Corruption> {
        let entry = self.entry(index);
        let side = match session & SESSION_STATE {
            FREE => return Ok(Settled::Yes),
            PRODUCER => Side::Producer,
            CONSUMER => Side::Consumer,
            _ => {
                return Err(Corruption::State {
                    word: "a participant's session word",
                    found: session,
                });
            }
        };
        // Acquire: the claim the dead holder stored last (its lock's release, which
        // this caller acquired, came after it).
        let claim = entry.claim.load(Ordering::Acquire);
        if claim != 0 {
            let position = claim.wrapping_sub(1);
            let settled = match side {
                Side::Producer => self.settle_write(position, index),
                Side::Consumer => self.settle_read(position, index),
            };
            if settled == Settled::NotYet {
                return Ok(Settled::NotYet);
            }
        }
        self.leave(index, session, side);
        Ok(Settled::Yes)
    }

    /// Frees entry `index` of a participant of `side` whose positions are all finished,
    /// and takes it off the count.
    fn leave(&self, index: u32, session: u32, side: Side) {
        let entry = self.entry(index);
        // Relaxed: ordered before the session store below.
        entry.claim.store(0, Ordering::Relaxed);
        // Release: a later holder of the entry sees the claim cleared.
        entry
            .session
            .store((session & !SESSION_STATE) | FREE, Ordering::Release);
        let count = self.count(side);
        // SYNC(census): Release; after this participant's last publish or release.
        // Failure Relaxed: retried with the value read. Saturating: a corrupt zero
        // stays zero rather than wrapping to "four billion attached".
        let mut current = count.load(Ordering::Relaxed);
        while current != 0 {
            match count.compare_exchange_weak(
                current,
                current - 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let control = self.control();
        // Wake sleepers of both sides: they may be waiting for this one to finish.
        control.not_empty.notify();
        control.not_full.notify();
    }

    /// Retires every dead participant of `side`, other than `own`. Costs one lock probe
    /// (a syscall in a segment) per attached participant of that side.
    #[cold]
    fn reap(&self, side: Side, own: u32) -> Result<(), Corruption> {
        for index in (0..self.limit).filter(|&j| j != own) {
            // Acquire: pairs with the Release store at attach.
            let session = self.entry(index).session.load(Ordering::Acquire);
            match session & SESSION_STATE {
                state if state == side.session_state() => {}
                FREE | PRODUCER | CONSUMER => continue,
                _ => {
                    return Err(Corruption::State {
                        word: "a participant's session word",
                        found: session,
                    });
                }
            }
            if self.is_locked(index) {
                continue;
            }
            // An error taking the lock (out of file descriptors) is no evidence: skip.
            let Ok(Some(_lock)) = self.try_lock(index) else {
                continue;
            };
            // Under the lock: read the session again, a newcomer may have replaced the
            // dead holder and left since.
            let session = self.entry(index).session.load(Ordering::Acquire);
            self.retire(index, session)?;
        }
        Ok(())
    }
}

/// A participant: a ring, an entry of its table, and the lock that holds it.
struct Member<T> {
    ring: Ring<T>,
    side: Side,
    index: u32,
    /// The session word this participant stored at attach.
    session: u32,
    /// `None` only after a simulated crash (tests).
    lock: Option<Lock<T>>,
    /// A position claimed and not yet finished: a reservation or guard still out, or
    /// forgotten with `mem::forget`.
    pending: Option<u64>,
    wait: WaitStrategy,
    /// When the other side's locks were last probed, and the polls since.
    watch: PeerWatch,
}

impl<T: Message> Member<T> {
    /// Takes the first free entry of the table, retiring a dead holder found in it.
    fn attach(ring: Ring<T>, side: Side, wait: WaitStrategy) -> Result<Self, Error> {
        ring.check_positions().map_err(Error::Corrupted)?;
        for index in 0..ring.limit {
            let Some(lock) = ring.try_lock(index)? else {
                continue;
            };
            let entry = ring.entry(index);
            // Acquire: pairs with the Release stores of session words.
            let session = entry.session.load(Ordering::Acquire);
            if ring.retire(index, session).map_err(Error::Corrupted)? == Settled::NotYet {
                continue; // leave it to a later probe; try the next entry
            }
            let generation = (session & !SESSION_STATE).wrapping_add(GENERATION_ONE);
            let session = generation | side.session_state();
            // Relaxed: the session store below publishes these.
            entry.claim.store(0, Ordering::Relaxed);
            ring.count(side).fetch_add(1, Ordering::Relaxed);
            ring.control()
                .census
                .seen
                .fetch_or(side.seen_bit(), Ordering::Relaxed);
            // Release: a prober that sees this session sees the claim cleared.
            entry.session.store(session, Ordering::Release);
            return Ok(Member {
                ring,
                side,
                index,
                session,
                lock: Some(lock),
                pending: None,
                wait,
                watch: PeerWatch::default(),
            });
        }
        Err(Error::ParticipantsFull { limit: ring.limit })
    }

    /// Counts an empty (or full) poll; probes the other side's locks when `probe`, or
    /// after [`LIVENESS_POLLS`] polls once [`LIVENESS_PROBE_INTERVAL`] has passed.
    #[cold]
    fn watch(&mut self, probe: bool) -> Result<(), Corruption> {
        let every = if cfg!(loom) {
            LOOM_POLLS
        } else {
            LIVENESS_POLLS
        };
        if self.watch.tick(probe, every) {
            self.ring.reap(self.side.other(), self.index)?;
        }
        Ok(())
    }

    /// Finishes a position left pending by a forgotten reservation (as aborted) or guard
    /// (released).
    #[cold]
    fn finish_pending(&mut self) {
        if let Some(position) = self.pending.take() {
            if self.side == Side::Producer {
                // Relaxed: a statistic.
                self.ring
                    .control()
                    .counters
                    .aborted
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.ring.finish(self.side, position, SKIPPED);
        }
    }

    fn stats(&self) -> Stats {
        let control = self.ring.control();
        // Relaxed: a snapshot of statistics.
        Stats {
            producers: control.census.producers.load(Ordering::Relaxed),
            consumers: control.census.consumers.load(Ordering::Relaxed),
            skipped: control.counters.skipped.load(Ordering::Relaxed),
            aborted: control.counters.aborted.load(Ordering::Relaxed),
            reclaimed: control.counters.reclaimed.load(Ordering::Relaxed),
        }
    }

    /// Ends the session cleanly: settles what is pending, frees the entry, and then
    /// (dropping the lock) the role.
    fn leave(&mut self) {
        if self.lock.is_none() {
            return;
        }
        self.finish_pending();
        self.ring.leave(self.index, self.session, self.side);
        self.lock = None;
    }
}

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
}

/// The sending half of an MPMC ring: one of any number of producers.
///
/// `Send` but not `Sync`: one thread at a time sends through one handle; another thread
/// or process gets its own handle ([`try_clone`](Self::try_clone), or
/// [`Builder::producer`]).
pub struct Producer<T: Message> {
    m: Member<T>,
}

/// The receiving half of an MPMC ring: one of any number of consumers.
///
/// `Send` but not `Sync`, as [`Producer`].
pub struct Consumer<T: Message> {
    m: Member<T>,
}

// SAFETY: a Producer writes only the slots it claimed by CAS, and its own entry; its
// raw pointers point into memory its backing owns (a mapping or an Arc), valid from any
// thread. Messages are plain bytes (`Message: FromBytes`).
unsafe impl<T: Message + Send> Send for Producer<T> {}
// SAFETY: as for Producer, with the slots it claimed for reading.
unsafe impl<T: Message + Send> Send for Consumer<T> {}

/// The methods a [`Producer`] and a [`Consumer`] share.
macro_rules! handle_common {
    ($handle:ident, $side:expr, $what:literal) => {
        impl<T: Message> $handle<T> {
            #[doc = concat!("Attaches another ", $what, " to this ring, in a free participant entry.")]
            ///
            /// # Errors
            ///
            /// [`Error::ParticipantsFull`] when every entry is held by a live participant;
            /// [`Error::Segment`] if taking a role lock fails; [`Error::Corrupted`].
            pub fn try_clone(&self) -> Result<Self, Error> {
                Ok($handle {
                    m: Member::attach(self.m.ring.clone(), $side, self.m.wait)?,
                })
            }

            /// The number of slots, a power of two.
            #[must_use]
            pub fn capacity(&self) -> u64 {
                self.m.ring.capacity
            }

            /// The most producers and consumers that can be attached at once.
            #[must_use]
            pub fn participant_limit(&self) -> u32 {
                self.m.ring.limit
            }

            /// A snapshot of the ring's participants and crash statistics.
            #[must_use]
            pub fn stats(&self) -> Stats {
                self.m.stats()
            }

            /// The wait strategy of the blocking calls ([`WaitStrategy::default`] unless
            /// set).
            pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
                self.m.wait = wait;
            }
        }

        impl<T: Message> Drop for $handle<T> {
            fn drop(&mut self) {
                self.m.leave();
            }
        }

        impl<T: Message> core::fmt::Debug for $handle<T> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct(stringify!($handle))
                    .field("capacity", &self.m.ring.capacity)
                    .field("participant", &self.m.index)
                    .field("wait", &self.m.wait)
                    .finish_non_exhaustive()
            }
        }
    };
}

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
    let ring = Ring::heap(capacity, participants)?;
    let wait = WaitStrategy::default();
    let producer = Producer {
        m: Member::attach(ring.clone(), Side::Producer, wait)?,
    };
    let consumer = Consumer {
        m: Member::attach(ring, Side::Consumer, wait)?,
    };
    Ok((producer, consumer))
}

handle_common!(Producer, Side::Producer, "producer");

impl<T: Message> Producer<T> {
    /// Claims the next free position: returns it, and this producer's entry names it.
    #[inline]
    fn claim(&mut self, probe: bool) -> Result<u64, Refusal> {
        if self.m.pending.is_some() {
            self.m.finish_pending();
        }
        if self.m.ring.side_gone(Side::Consumer) {
            return Err(Refusal::Disconnected);
        }
        // SYNC(positions): Acquire.
        let mut tail = self.m.ring.control().tail.load(Ordering::Acquire);
        loop {
            let ring = &self.m.ring;
            let control = ring.control();
            let slot = ring.slot(tail);
            // SYNC(slot-released): Acquire; pairs with the Release of the consumer that
            // released the slot: its reads are done before this producer writes.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == ring.stamp(tail, EMPTY) {
                let entry = self.m.ring.entry(self.m.index);
                // SYNC(claim): Relaxed; published by the Release CAS below.
                entry.claim.store(tail.wrapping_add(1), Ordering::Relaxed);
                // SYNC(claim): Release on success. Failure Acquire: the position read is
                // used as a loaded tail (SYNC(positions)).
                match control.tail.compare_exchange_weak(
                    tail,
                    tail.wrapping_add(1),
                    Ordering::Release,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(tail),
                    Err(actual) => {
                        // Relaxed: a loser must not name a position it did not take.
                        entry.claim.store(0, Ordering::Relaxed);
                        tail = actual;
                        continue;
                    }
                }
            }
            tail = self.not_free(tail, stamp, probe)?;
        }
    }

    /// The slot of `tail` was not free: returns the tail to try next, or why not.
    #[cold]
    fn not_free(&mut self, tail: u64, stamp: u64, probe: bool) -> Result<u64, Refusal> {
        let ring = &self.m.ring;
        let control = ring.control();
        let corrupt = |stamp| {
            Refusal::Corrupted(Corruption::Slot {
                position: tail,
                stamp,
            })
        };
        let ahead = ring.laps_ahead(stamp, tail);
        if ahead > 0 || (ahead == 0 && stamp & STAMP_STATE != EMPTY) {
            // The slot is past `tail`: someone claimed it, so tail moved on.
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
            // Consumers passed this tail: it is stale.
            // SYNC(positions): Acquire.
            return Ok(control.tail.load(Ordering::Acquire));
        }
        if used > ring.capacity as i64 {
            return Err(Refusal::Corrupted(Corruption::Positions {
                head,
                tail,
                capacity: ring.capacity,
            }));
        }
        // Of the previous lap, only FULL and SKIPPED may be claimed by a consumer, and
        // EMPTY only while unclaimed.
        let state = stamp & STAMP_STATE;
        let claimed = used < ring.capacity as i64;
        if ahead != -1 || state == STAMP_STATE || (state == EMPTY && claimed) {
            return Err(corrupt(stamp));
        }
        if ring.side_gone(Side::Consumer) {
            return Err(Refusal::Disconnected);
        }
        self.m.watch(probe).map_err(Refusal::Corrupted)?;
        Err(Refusal::Full)
    }

    /// Writes `value` into the claimed slot of `position` and publishes it.
    #[inline(always)]
    fn write_and_publish(&mut self, position: u64, value: T) {
        // SAFETY: this producer claimed `position` (its CAS on tail succeeded) and has
        // not published it, so no consumer reads the slot and no other producer writes it.
        self.m
            .ring
            .slot(position)
            .value
            .with_mut(|p| unsafe { p.write(value) });
        self.m.ring.finish(Side::Producer, position, FULL);
    }

    /// Sends `value` if a slot is free, without blocking.
    ///
    /// Costs, when nobody else sends at the same moment and no consumer sleeps: a load
    /// of the consumer count, of `tail` and of the slot's stamp, a store to this
    /// producer's entry, a CAS on `tail`, the slot write, a `Release` store, and a `SeqCst`
    /// fence and a load (no syscall). With a parked consumer, one `FUTEX_WAKE`.
    ///
    /// # Errors
    ///
    /// The value comes back in [`TrySendError::Full`] (no free slot),
    /// [`TrySendError::Disconnected`] (every consumer that attached is gone), or
    /// [`TrySendError::Corrupted`].
    #[inline]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        match self.claim(false) {
            Ok(position) => {
                self.write_and_publish(position, value);
                Ok(())
            }
            Err(refusal) => Err(refusal.try_send(value)),
        }
    }

    /// Reserves the next slot for writing in place, without copying: the returned
    /// [`SendSlot`] derefs to the slot's `T` (holding whatever bytes were there: any bytes
    /// are a valid `T`); [`SendSlot::commit`] publishes it. Dropped without `commit`, the
    /// slot is published as skipped: consumers pass over it, and [`Stats::aborted`]
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
        let position = self.claim(false).map_err(|r| r.try_send(()))?;
        self.m.pending = Some(position);
        Ok(SendSlot {
            producer: self,
            position,
        })
    }

    /// Sends `value`, waiting with this producer's [`WaitStrategy`] while the ring is
    /// full.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] when every consumer is gone (dead ones are seen within
    /// [`LIVENESS_PERIOD`] while blocked), [`SendError::Corrupted`].
    pub fn send(&mut self, value: T) -> Result<(), SendError<T>> {
        self.send_deadline(value, None).map_err(|e| match e {
            SendTimeoutError::Disconnected(v) | SendTimeoutError::Timeout(v) => {
                SendError::Disconnected(v)
            }
            SendTimeoutError::Corrupted(v, c) => SendError::Corrupted(v, c),
        })
    }

    /// Sends `value`, waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    ///
    /// [`SendTimeoutError::Timeout`] when the time passes with the ring full, otherwise as
    /// [`send`](Self::send).
    pub fn send_timeout(&mut self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline(value, Instant::now().checked_add(timeout))
    }

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
        let wait = self.m.wait;
        let peers_may_die = self.m.ring.peers_may_die();
        let event: *const EventCount = &*self.m.ring.control().not_full;
        // SAFETY: the event count lives in the ring's memory, which `self` keeps alive
        // for the whole call.
        let event = unsafe { &*event };
        let claimed = block(event, wait, peers_may_die, deadline, |probe| {
            match self.claim(probe) {
                Err(Refusal::Full) => None,
                other => Some(other),
            }
        });
        match claimed {
            Some(Ok(position)) => {
                self.write_and_publish(position, value);
                Ok(())
            }
            None | Some(Err(Refusal::Full)) => Err(SendTimeoutError::Timeout(value)),
            Some(Err(Refusal::Disconnected)) => Err(SendTimeoutError::Disconnected(value)),
            Some(Err(Refusal::Corrupted(c))) => Err(SendTimeoutError::Corrupted(value, c)),
        }
    }

    /// Ends this producer as if its process had been killed at this point: the lock
    /// goes, the entry and any pending claim stay as they are (tests of crash handling).
    #[cfg(test)]
    fn simulate_crash(mut self) {
        self.m.lock = None;
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
        this.producer.m.pending = None;
        this.producer
            .m
            .ring
            .finish(Side::Producer, this.position, FULL);
    }

    /// The position this slot was claimed at.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl<T: Message> Drop for SendSlot<'_, T> {
    fn drop(&mut self) {
        self.producer.m.finish_pending();
    }
}

impl<T: Message> Deref for SendSlot<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        let slot = self.producer.m.ring.slot(self.position);
        // SAFETY: the slot is claimed by this producer and unpublished, so only it may
        // touch the slot until `commit` or drop; the borrow of `self` bounds the
        // reference. Any bytes are a valid `T` (`FromBytes`).
        slot.value.with(|p| unsafe { &*p })
    }
}

impl<T: Message> DerefMut for SendSlot<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        let slot = self.producer.m.ring.slot(self.position);
        // SAFETY: as in `deref`, and the `&mut self` borrow makes the reference unique.
        slot.value.with_mut(|p| unsafe { &mut *p })
    }
}

handle_common!(Consumer, Side::Consumer, "consumer");

impl<T: Message> Consumer<T> {
    /// Claims the next published position: returns it, and this consumer's entry names
    /// it. Passes over skipped slots, releasing them.
    #[inline]
    fn claim(&mut self, probe: bool) -> Result<u64, TryRecvError> {
        if self.m.pending.is_some() {
            self.m.finish_pending();
        }
        // SYNC(positions): Acquire.
        let mut head = self.m.ring.control().head.load(Ordering::Acquire);
        // Set once every producer was found gone: one more poll, then Disconnected.
        let mut last_poll = false;
        loop {
            let ring = &self.m.ring;
            let control = ring.control();
            let slot = ring.slot(head);
            // SYNC(slot-published): Acquire; pairs with the producer's Release store of
            // the stamp: its write of the message is visible after this.
            let stamp = slot.stamp.load(Ordering::Acquire);
            let full = ring.stamp(head, FULL);
            if stamp == full || stamp == ring.stamp(head, SKIPPED) {
                let entry = ring.entry(self.m.index);
                // SYNC(claim): Relaxed; published by the Release CAS below.
                entry.claim.store(head.wrapping_add(1), Ordering::Relaxed);
                // SYNC(claim): Release on success. Failure Acquire: the position read is
                // used as a loaded head (SYNC(positions)).
                match control.head.compare_exchange_weak(
                    head,
                    head.wrapping_add(1),
                    Ordering::Release,
                    Ordering::Acquire,
                ) {
                    Ok(_) if stamp == full => return Ok(head),
                    Ok(_) => {
                        // Skipped: nothing to read. Release it and go on.
                        ring.finish(Side::Consumer, head, EMPTY);
                        head = head.wrapping_add(1);
                    }
                    Err(actual) => {
                        // Relaxed: a loser must not name a position it did not take.
                        entry.claim.store(0, Ordering::Relaxed);
                        head = actual;
                    }
                }
                continue;
            }
            match self.not_published(head, stamp, probe, last_poll)? {
                Next::Retry(fresh) => head = fresh,
                Next::LastPoll => {
                    last_poll = true;
                    // SYNC(positions): Acquire.
                    head = self.m.ring.control().head.load(Ordering::Acquire);
                }
            }
        }
    }

    /// The slot of `head` was not published: returns what to do next, or why there is
    /// nothing to receive.
    #[cold]
    fn not_published(
        &mut self,
        head: u64,
        stamp: u64,
        probe: bool,
        last_poll: bool,
    ) -> Result<Next, TryRecvError> {
        let ring = &self.m.ring;
        let control = ring.control();
        let corrupt = |stamp| {
            TryRecvError::Corrupted(Corruption::Slot {
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
        if ahead > 0 || (ahead == 0 && state != EMPTY) {
            return Ok(Next::Retry(head)); // published (or consumed) meanwhile
        }
        let claimed = tail.wrapping_sub(head) as i64;
        if claimed < 0 {
            return Err(TryRecvError::Corrupted(Corruption::Positions {
                head,
                tail,
                capacity: ring.capacity,
            }));
        }
        // EMPTY of this lap: unclaimed, or claimed and being written. FULL or SKIPPED
        // of the previous lap: a consumer still holds it, so no producer claimed it.
        let valid =
            ahead == 0 || (ahead == -1 && state != EMPTY && state != STAMP_STATE && claimed == 0);
        if !valid {
            return Err(corrupt(stamp));
        }
        if ring.side_gone(Side::Producer) {
            // Every producer finished before leaving (SYNC(census)): poll once more.
            return if last_poll {
                Err(TryRecvError::Disconnected)
            } else {
                Ok(Next::LastPoll)
            };
        }
        self.m.watch(probe).map_err(TryRecvError::Corrupted)?;
        Err(TryRecvError::Empty)
    }

    /// Reads the claimed slot of `position`, and releases it.
    #[inline(always)]
    fn read_and_release(&mut self, position: u64) -> T {
        // SAFETY: this consumer claimed `position` (its CAS on head succeeded) after its
        // stamp said FULL, and has not released it, so no producer writes the slot; any
        // bytes are a valid `T`.
        let value = self
            .m
            .ring
            .slot(position)
            .value
            .with(|p| unsafe { p.read() });
        self.m.ring.finish(Side::Consumer, position, EMPTY);
        value
    }

    /// Receives the next message if there is one, without blocking.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`]; [`TryRecvError::Disconnected`] when the ring is empty and
    /// every producer that attached is gone (every message sent before is received
    /// first); [`TryRecvError::Corrupted`].
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let position = self.claim(false)?;
        Ok(self.read_and_release(position))
    }

    /// Receives the next message in place, without copying: the returned [`RecvGuard`]
    /// derefs to the `T` in its slot, and releases the slot when dropped. If this process
    /// dies while holding the guard, a producer that needs the slot frees it and counts
    /// it in [`Stats::reclaimed`]; the message is not delivered again.
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
        let position = self.claim(false)?;
        self.m.pending = Some(position);
        Ok(RecvGuard {
            consumer: self,
            position,
        })
    }

    /// Receives the next message, waiting with this consumer's [`WaitStrategy`] while the
    /// ring is empty.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] when the ring is empty and every producer is gone
    /// (dead ones are seen within [`LIVENESS_PERIOD`] while blocked),
    /// [`RecvError::Corrupted`].
    pub fn recv(&mut self) -> Result<T, RecvError> {
        self.recv_deadline(None).map_err(|e| match e {
            RecvTimeoutError::Corrupted(c) => RecvError::Corrupted(c),
            RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout => RecvError::Disconnected,
        })
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] when the time passes with the ring empty, otherwise
    /// as [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(Instant::now().checked_add(timeout))
    }

    /// Receives the next message, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let wait = self.m.wait;
        let peers_may_die = self.m.ring.peers_may_die();
        let event: *const EventCount = &*self.m.ring.control().not_empty;
        // SAFETY: the event count lives in the ring's memory, which `self` keeps alive
        // for the whole call.
        let event = unsafe { &*event };
        let claimed = block(event, wait, peers_may_die, deadline, |probe| {
            match self.claim(probe) {
                Err(TryRecvError::Empty) => None,
                other => Some(other),
            }
        });
        match claimed {
            Some(Ok(position)) => Ok(self.read_and_release(position)),
            None | Some(Err(TryRecvError::Empty)) => Err(RecvTimeoutError::Timeout),
            Some(Err(TryRecvError::Disconnected)) => Err(RecvTimeoutError::Disconnected),
            Some(Err(TryRecvError::Corrupted(c))) => Err(RecvTimeoutError::Corrupted(c)),
        }
    }

    /// Ends this consumer as if its process had been killed at this point (tests).
    #[cfg(all(test, not(loom)))]
    fn simulate_crash(mut self) {
        self.m.lock = None;
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
        let slot = self.consumer.m.ring.slot(self.position);
        // SAFETY: the slot is claimed by this consumer and not released until this guard
        // drops, so no producer writes it while the reference (bounded by `&self`)
        // lives. Any bytes are a valid `T`.
        slot.value.with(|p| unsafe { &*p })
    }
}

impl<T: Message> Drop for RecvGuard<'_, T> {
    fn drop(&mut self) {
        self.consumer.m.pending = None;
        self.consumer
            .m
            .ring
            .finish(Side::Consumer, self.position, EMPTY);
    }
}

impl<T: Message> core::fmt::Debug for SendSlot<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendSlot")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl<T: Message> core::fmt::Debug for RecvGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvGuard")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// Opens or creates an MPMC ring segment and attaches a producer or a consumer to it.
///
/// # Examples
///
/// ```
/// use shm_ring::mpmc::Builder;
/// # let name = format!("doc-mpmc-{}", std::process::id());
/// let ring = Builder::<u64>::new(name.as_str()).capacity(64).participants(8);
/// let mut tx = ring.producer()?;
/// let mut rx1 = ring.consumer()?;
/// let mut rx2 = ring.consumer()?;
/// tx.try_send(1).unwrap();
/// tx.try_send(2).unwrap();
/// assert_eq!(rx2.try_recv(), Ok(1));
/// assert_eq!(rx1.try_recv(), Ok(2));
/// # shm_alloc::Segment::remove(&name.as_str().into())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(not(loom))]
#[derive(Debug, Clone)]
pub struct Builder<T: Message> {
    location: Location,
    capacity: Option<u64>,
    participants: Option<u32>,
    wait: WaitStrategy,
    options: SegmentOptions,
    mode: OpenMode,
    _message: PhantomData<fn() -> T>,
}

#[cfg(not(loom))]
impl<T: Message> Builder<T> {
    /// A builder for the ring at `location` (a name under `/dev/shm`, or a path).
    pub fn new(location: impl Into<Location>) -> Self {
        Self {
            location: location.into(),
            capacity: None,
            participants: None,
            wait: WaitStrategy::default(),
            options: SegmentOptions::default(),
            mode: OpenMode::default(),
            _message: PhantomData,
        }
    }

    /// The capacity in slots (a power of two): used when creating, and checked when
    /// opening. Unset: [`DEFAULT_CAPACITY`] when creating, any when opening.
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The participant limit, producers and consumers together (`1..=MAX_PARTICIPANTS`):
    /// used when creating, and checked when opening. Unset: [`DEFAULT_PARTICIPANTS`]
    /// when creating, any when opening.
    pub fn participants(mut self, participants: u32) -> Self {
        self.participants = Some(participants);
        self
    }

    /// The wait strategy of the handle's blocking calls.
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Segment options: permissions, prefault, mlock, huge pages.
    pub fn segment_options(mut self, options: SegmentOptions) -> Self {
        self.options = options;
        self
    }

    /// Whether to create, open, or either (the default).
    pub fn mode(mut self, mode: OpenMode) -> Self {
        self.mode = mode;
        self
    }

    /// Attaches a producer, in the first free participant entry (retiring a dead
    /// holder it finds there).
    ///
    /// # Errors
    ///
    /// [`Error::Segment`] for a missing, existing, foreign, mismatched or corrupt
    /// segment; [`Error::ParticipantsFull`] when every entry is held by a live
    /// participant; [`Error::ParticipantsMismatch`]; [`Error::Corrupted`] for an
    /// inconsistent ring; [`Error::InvalidCapacity`], [`Error::InvalidParticipants`].
    pub fn producer(&self) -> Result<Producer<T>, Error> {
        Ok(Producer {
            m: Member::attach(Ring::attach_segment(self)?, Side::Producer, self.wait)?,
        })
    }

    /// Attaches a consumer; it takes messages from the first one no consumer claimed.
    ///
    /// # Errors
    ///
    /// As [`producer`](Self::producer).
    pub fn consumer(&self) -> Result<Consumer<T>, Error> {
        Ok(Consumer {
            m: Member::attach(Ring::attach_segment(self)?, Side::Consumer, self.wait)?,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const COUNT: u64 = if cfg!(miri) { 200 } else { 100_000 };

    #[test]
    fn smoke() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn capacity_is_enforced_and_values_come_back() {
        let (mut tx, mut rx) = channel::<u32>(2).unwrap();
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        match tx.try_send(3) {
            Err(TrySendError::Full(v)) => assert_eq!(v, 3),
            other => panic!("expected Full(3), got {other:?}"),
        }
        assert_eq!(rx.try_recv(), Ok(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
    }

    #[test]
    fn invalid_parameters_are_refused() {
        for cap in [0, 3, 6, MAX_CAPACITY * 2] {
            assert!(matches!(channel::<u8>(cap), Err(Error::InvalidCapacity(c)) if c == cap));
        }
        for limit in [0, 1, MAX_PARTICIPANTS + 1] {
            assert!(matches!(
                channel_with::<u8>(4, limit),
                Err(Error::InvalidParticipants(l)) if l == limit
            ));
        }
    }

    #[test]
    fn wraps_many_times_in_order() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        for i in 0..1000 {
            tx.try_send(i).unwrap();
            tx.try_send(i + 1_000_000).unwrap();
            assert_eq!(rx.try_recv(), Ok(i));
            assert_eq!(rx.try_recv(), Ok(i + 1_000_000));
        }
    }

    #[test]
    fn participant_limit_is_enforced_and_entries_are_reused() {
        let (tx, rx) = channel_with::<u64>(4, 3).unwrap();
        let tx2 = tx.try_clone().unwrap();
        assert!(matches!(
            rx.try_clone(),
            Err(Error::ParticipantsFull { limit: 3 })
        ));
        assert_eq!(tx.stats().producers, 2);
        drop(tx2);
        assert_eq!(tx.stats().producers, 1);
        let rx2 = rx.try_clone().unwrap();
        assert_eq!(rx2.stats().consumers, 2);
    }

    #[test]
    fn reserve_commit_and_abort() {
        let (mut tx, mut rx) = channel::<[u32; 4]>(2).unwrap();
        {
            let mut slot = tx.reserve().unwrap();
            *slot = [1, 2, 3, 4];
            // dropped without commit: published as skipped
        }
        assert_eq!(tx.stats().aborted, 1);
        let mut slot = tx.reserve().unwrap();
        slot[0] = 9;
        slot.commit();
        assert_eq!(rx.try_recv().unwrap()[0], 9);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn forgotten_slot_and_guard_are_finished_by_the_next_call() {
        let (mut tx, mut rx) = channel::<u64>(2).unwrap();
        core::mem::forget(tx.reserve().unwrap()); // position 0
        tx.try_send(5).unwrap(); // aborts position 0 first, then sends at 1
        assert_eq!(tx.stats().aborted, 1);
        assert_eq!(rx.try_recv(), Ok(5)); // passes over the skipped slot
        tx.try_send(6).unwrap();
        core::mem::forget(rx.try_recv_ref().unwrap()); // takes 6, never released
        tx.try_send(7).unwrap();
        assert!(matches!(tx.try_send(8), Err(TrySendError::Full(8))));
        assert_eq!(rx.try_recv(), Ok(7)); // releases 6's slot first
        tx.try_send(8).unwrap();
        assert_eq!(rx.try_recv(), Ok(8));
    }

    #[test]
    fn guard_releases_on_drop_only() {
        let (mut tx, mut rx) = channel::<u64>(1).unwrap();
        tx.try_send(5).unwrap();
        let guard = rx.try_recv_ref().unwrap();
        assert_eq!(*guard, 5);
        assert!(matches!(tx.try_send(6), Err(TrySendError::Full(6))));
        drop(guard);
        tx.try_send(6).unwrap();
        assert_eq!(rx.try_recv(), Ok(6));
    }

    #[test]
    fn last_producer_gone_drains_then_disconnects() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        let mut tx2 = tx.try_clone().unwrap();
        tx.try_send(1).unwrap();
        tx2.try_send(2).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        tx2.try_send(3).unwrap();
        drop(tx2);
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    }

    #[test]
    fn last_consumer_gone_disconnects_producers() {
        let (mut tx, rx) = channel::<u64>(4).unwrap();
        let rx2 = rx.try_clone().unwrap();
        drop(rx);
        tx.try_send(1).unwrap();
        drop(rx2);
        assert!(matches!(tx.try_send(2), Err(TrySendError::Disconnected(2))));
        assert!(matches!(tx.send(3), Err(SendError::Disconnected(3))));
    }

    #[test]
    fn dead_producer_holding_a_slot_is_skipped() {
        let (mut tx, mut rx) = channel_with::<u64>(4, 4).unwrap();
        let mut dying = tx.try_clone().unwrap();
        tx.try_send(1).unwrap();
        core::mem::forget(dying.reserve().unwrap()); // claims position 1
        dying.simulate_crash();
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
        // Position 1 is claimed and never published; its claimer is found dead at a probe.
        rx.set_wait_strategy(WaitStrategy::Yield);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(3));
        let stats = rx.stats();
        assert_eq!((stats.skipped, stats.producers), (1, 1));
    }

    #[test]
    fn dead_consumer_holding_a_slot_is_reclaimed() {
        let (mut tx, mut rx) = channel_with::<u64>(2, 4).unwrap();
        let mut dying = rx.try_clone().unwrap();
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        core::mem::forget(dying.try_recv_ref().unwrap()); // holds message 1
        dying.simulate_crash();
        assert_eq!(rx.try_recv(), Ok(2));
        tx.set_wait_strategy(WaitStrategy::Yield);
        tx.send_timeout(3, Duration::from_secs(5)).unwrap();
        tx.send_timeout(4, Duration::from_secs(5)).unwrap();
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Ok(4));
        let stats = tx.stats();
        assert_eq!((stats.reclaimed, stats.consumers), (1, 1));
    }

    #[test]
    fn corrupted_stamp_and_positions_are_reported() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        // A stamp four laps ahead of a head nobody moved.
        rx.m.ring
            .slot(0)
            .stamp
            .store((4 << 2) | FULL, Ordering::Relaxed);
        assert_eq!(
            rx.try_recv(),
            Err(TryRecvError::Corrupted(Corruption::Slot {
                position: 0,
                stamp: (4 << 2) | FULL
            }))
        );
        rx.m.ring
            .slot(0)
            .stamp
            .store(STAMP_STATE, Ordering::Relaxed);
        assert!(matches!(
            tx.try_send(1),
            Err(TrySendError::Corrupted(1, Corruption::Slot { .. }))
        ));
        rx.m.ring.slot(0).stamp.store(0, Ordering::Relaxed);
        rx.m.ring.control().tail.store(100, Ordering::Relaxed);
        assert!(matches!(
            tx.try_clone(),
            Err(Error::Corrupted(Corruption::Positions { tail: 100, .. }))
        ));
    }

    #[test]
    fn timeouts_return_the_value() {
        let (mut tx, mut rx) = channel::<u64>(1).unwrap();
        tx.set_wait_strategy(WaitStrategy::Yield);
        rx.set_wait_strategy(WaitStrategy::Yield);
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        );
        tx.try_send(1).unwrap();
        assert!(matches!(
            tx.send_timeout(2, Duration::from_millis(1)),
            Err(SendTimeoutError::Timeout(2))
        ));
    }

    /// Two producers and two consumers on threads: every message once, each producer's
    /// messages in order.
    fn many(wait: WaitStrategy, capacity: u64) {
        let (tx, rx) = channel::<u64>(capacity).unwrap();
        let producers: Vec<_> = (0..2u64)
            .map(|id| {
                let mut tx = tx.try_clone().unwrap();
                tx.set_wait_strategy(wait);
                std::thread::spawn(move || {
                    for i in 0..COUNT {
                        tx.send(id << 32 | i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let mut rx = rx.try_clone().unwrap();
                rx.set_wait_strategy(wait);
                std::thread::spawn(move || {
                    let mut next = [0u64; 2];
                    let mut got = Vec::new();
                    while let Ok(v) = rx.recv() {
                        let (id, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                        assert!(i >= next[id], "producer {id}: {i} after {}", next[id]);
                        next[id] = i + 1;
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        drop(rx);
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        let expected: Vec<u64> = (0..2u64)
            .flat_map(|id| (0..COUNT).map(move |i| id << 32 | i))
            .collect();
        assert_eq!(all.len(), expected.len());
        assert!(all == expected, "messages lost or duplicated");
    }

    #[test]
    fn two_by_two_threads_busy_spin() {
        many(WaitStrategy::BusySpin, 4);
    }

    #[test]
    fn two_by_two_threads_yield_large_capacity() {
        many(WaitStrategy::Yield, 1024);
    }

    #[test]
    #[cfg_attr(miri, ignore = "futex sleeps make miri slow")]
    fn two_by_two_threads_park() {
        many(WaitStrategy::Park, 2);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// Two producers send one value each while two consumers try to receive one each;
    /// then the main thread receives the rest. Each value is received exactly once, no
    /// slot is raced on (loom's UnsafeCell), no interleaving makes a stamp look corrupt,
    /// and no claim is left unfinished once everyone is done.
    #[test]
    fn two_producers_two_consumers() {
        loom::model(|| {
            let (mut tx1, mut rx1) = channel_with::<u64>(2, 4).unwrap();
            let mut tx2 = tx1.try_clone().unwrap();
            let mut rx2 = rx1.try_clone().unwrap();
            let p1 = loom::thread::spawn(move || tx1.try_send(1).unwrap());
            let p2 = loom::thread::spawn(move || tx2.try_send(2).unwrap());
            let c2 = loom::thread::spawn(move || try_one(&mut rx2));
            let mut got: Vec<u64> = try_one(&mut rx1).into_iter().collect();
            p1.join().unwrap();
            p2.join().unwrap();
            got.extend(c2.join().unwrap());
            got.extend(drain(&mut rx1));
            got.sort_unstable();
            assert_eq!(got, [1, 2]);
        });
    }

    /// One attempt to receive: a value, or nothing if the ring looked empty.
    fn try_one(rx: &mut Consumer<u64>) -> Option<u64> {
        match rx.try_recv() {
            Ok(v) => Some(v),
            Err(TryRecvError::Empty) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// A producer claims a slot and dies before publishing it; the other producer sends
    /// after it. The consumer receives the second value, and the dead claim is counted
    /// as skipped exactly once.
    #[test]
    fn dead_claimer_is_skipped() {
        loom::model(|| {
            let (mut tx, mut rx) = channel_with::<u64>(2, 3).unwrap();
            let mut dying = tx.try_clone().unwrap();
            let p1 = loom::thread::spawn(move || {
                core::mem::forget(dying.reserve().unwrap());
                dying.simulate_crash();
            });
            let p2 = loom::thread::spawn(move || {
                tx.try_send(2).unwrap();
            });
            p1.join().unwrap();
            p2.join().unwrap();
            let skipped = rx.stats().skipped;
            assert_eq!(skipped, 0, "nobody probed yet");
            let got = drain(&mut rx);
            assert_eq!(got, [2]);
            assert_eq!(rx.stats().skipped, 1);
        });
    }

    /// Receives until the ring is empty and every producer gone, polling: for a model
    /// whose producers have all finished.
    fn drain(rx: &mut Consumer<u64>) -> Vec<u64> {
        let mut got = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(v) => got.push(v),
                Err(TryRecvError::Empty) => loom::thread::yield_now(),
                Err(TryRecvError::Disconnected) => return got,
                Err(e) => panic!("{e}"),
            }
        }
    }
}
