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
//! arithmetic); a violation is [`Corruption::Positions`], never an out-of-bounds access.
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
//! - Waking goes through two [`EventCount`]s (`not_empty`, `not_full`), whose `notify` is
//!   one `SeqCst` fence and one load when nobody sleeps; see `shm_sync::event_count`.
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
//!   [`TryRecvError::Disconnected`];
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

#[cfg(not(loom))]
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use std::time::{Duration, Instant};

use shm_sync::atomic::{AtomicU32, AtomicU64, Ordering};
use shm_sync::cell::UnsafeCell;
use shm_sync::{CachePadded, EventCount, TimedOut, WaitStrategy};

use crate::error::{
    Corruption, Error, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};
use crate::message::Message;

#[cfg(not(loom))]
use shm_alloc::{Expect, Kind, Location, RoleClaim, Segment, SegmentOptions, SegmentSpec};

/// The capacity of a ring whose builder was given none: 1024 slots.
pub const DEFAULT_CAPACITY: u64 = 1024;

/// The largest capacity, in slots: 2^32 (positions are `u64`, slot indexes fit a `u32`).
pub const MAX_CAPACITY: u64 = 1 << 32;

/// How many consecutive empty (consumer) or full (producer) polls pass between two reads
/// of the clock, to see whether a probe of the peer's liveness lock is due
/// ([`LIVENESS_PROBE_INTERVAL`]). A clock read costs about 25 ns (vDSO), a poll of an
/// empty ring 5-100 ns: one read per 1024 polls is noise.
pub const LIVENESS_POLLS: u32 = 1024;

/// The least time between two probes of the peer's liveness lock while polling. A probe
/// is a syscall (`F_OFD_GETLK`, about 0.5-1 us on a KVM guest) during which a message
/// that arrives waits; once a millisecond keeps that under 0.1% of a polling loop, and
/// sees a death within about a millisecond.
pub const LIVENESS_PROBE_INTERVAL: Duration = Duration::from_millis(1);

/// How often a blocked `send`/`recv` probes the peer's liveness lock while it waits: a
/// parked side cannot count polls, so it wakes this often. 10 ms bounds how late a death
/// is seen, and costs a sleeping thread 100 wake-ups a second.
pub const LIVENESS_PERIOD: Duration = Duration::from_millis(10);

/// The role byte of the producer in a ring segment.
pub const PRODUCER_ROLE: u32 = 0;
/// The role byte of the consumer in a ring segment.
pub const CONSUMER_ROLE: u32 = 1;

/// Session word states (the low two bits); the upper 30 bits count attaches.
///
/// | state | written by | when |
/// |---|---|---|
/// | `ABSENT` (0) | nobody | the side never attached (the all-zero initial state) |
/// | `ATTACHED` (1) | the side itself | at attach, generation + 1 |
/// | `CLOSED` (2) | the side itself | in `Drop`, after its last position store |
/// | 3 | nobody | corruption |
const ABSENT: u32 = 0;
const ATTACHED: u32 = 1;
const CLOSED: u32 = 2;
const STATE_MASK: u32 = 0b11;
const GENERATION_ONE: u32 = 0b100;

/// The control block at the start of a ring's data region.
///
/// # Layout
///
/// | offset | size | field | written by |
/// |---|---|---|---|
/// | 0 | 128 | `tail: u64` | producer, every publish |
/// | 128 | 128 | `head: u64` | consumer, every release |
/// | 256 | 128 | `producer_session: u32`, `consumer_session: u32` | each side at attach and close |
/// | 384 | 128 | `not_empty: EventCount` | consumer when it parks, producer when it finds it parked |
/// | 512 | 128 | `not_full: EventCount` | producer when it parks, consumer when it finds it parked |
///
/// The slots follow at offset 640 (a multiple of 128), `capacity` times `size_of::<T>()`
/// bytes. All-zero is the initial state: empty, nobody attached.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Control {
    tail: CachePadded<AtomicU64>,
    head: CachePadded<AtomicU64>,
    session: CachePadded<Session>,
    not_empty: CachePadded<EventCount>,
    not_full: CachePadded<EventCount>,
}

#[repr(C)]
#[derive(Debug, Default)]
struct Session {
    producer: AtomicU32,
    consumer: AtomicU32,
    /// The consumer's pool participant plus one (0: none), for loans sent through a ring
    /// of [`ShmOffset`](shm_alloc::ShmOffset)s: see [`Consumer::bind_pool`].
    consumer_participant: AtomicU32,
}

/// The size of [`Control`]: where the slots begin, in bytes.
pub(crate) const CONTROL_LEN: usize = 640;

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<Control>() == CONTROL_LEN);
    assert!(core::mem::offset_of!(Control, head) == 128);
    assert!(core::mem::offset_of!(Control, session) == 256);
    assert!(core::mem::offset_of!(Control, not_empty) == 384);
    assert!(core::mem::offset_of!(Control, not_full) == 512);
};

/// The bytes a ring of `capacity` slots of `T` needs after the segment header.
///
/// # Errors
///
/// [`Error::InvalidCapacity`] unless `capacity` is a power of two in `1..=MAX_CAPACITY`,
/// [`Error::UnsupportedAlignment`] if `T` is aligned to more than 128 bytes.
pub fn data_len<T: Message>(capacity: u64) -> Result<u64, Error> {
    if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
        return Err(Error::InvalidCapacity(capacity));
    }
    if align_of::<T>() > shm_sync::CACHE_PAD {
        return Err(Error::UnsupportedAlignment(align_of::<T>()));
    }
    (size_of::<T>() as u64)
        .checked_mul(capacity)
        .and_then(|slots| slots.checked_add(CONTROL_LEN as u64))
        .ok_or(Error::InvalidCapacity(capacity))
}

/// Which of the two sides a handle is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Producer,
    Consumer,
}

/// What keeps a ring's memory alive, and tells whether the peer lives.
enum Backing<T> {
    /// A mapped segment, and this side's role claim (the peer's liveness is its lock).
    #[cfg(not(loom))]
    Segment { segment: Segment, _role: RoleClaim },
    /// A ring on the heap, shared by the two handles of one process.
    Heap { _ring: std::sync::Arc<HeapRing<T>> },
}

/// A ring on the heap: the in-process form, and what loom and miri run.
struct HeapRing<T> {
    control: Control,
    slots: Box<[UnsafeCell<T>]>,
}

/// One side's view of a ring: the control block, the slots and the capacity.
struct Ring<T> {
    control: NonNull<Control>,
    slots: NonNull<UnsafeCell<T>>,
    capacity: u64,
    side: Side,
    /// Set once this side stored ATTACHED: only then does `Drop` store CLOSED.
    attached: bool,
    backing: Backing<T>,
}

impl<T: Message> Ring<T> {
    fn heap_pair(capacity: u64) -> Result<(Self, Self), Error> {
        data_len::<T>(capacity)?;
        let slots: Box<[UnsafeCell<T>]> = (0..capacity)
            .map(|_| UnsafeCell::new(T::new_zeroed()))
            .collect();
        let heap = std::sync::Arc::new(HeapRing {
            control: Control::default(),
            slots,
        });
        let control = NonNull::from(&heap.control);
        // `as_ptr` of the whole slice: the pointer may reach every slot.
        let slots = NonNull::new(heap.slots.as_ptr().cast_mut()).expect("a Box is never null");
        let ring = |side| Ring {
            control,
            slots,
            capacity,
            side,
            attached: false,
            backing: Backing::Heap {
                _ring: heap.clone(),
            },
        };
        Ok((ring(Side::Producer), ring(Side::Consumer)))
    }

    #[cfg(not(loom))]
    fn attach_segment(builder: &Builder<T>, side: Side) -> Result<Self, Error> {
        let capacity = builder.capacity.unwrap_or(builder.default_capacity);
        // A byte stream is untyped: its slots are bytes, its frames carry their own
        // lengths.
        let (type_fingerprint, type_name) = match builder.kind {
            Kind::Stream => (0, "bytes"),
            _ => (T::FINGERPRINT, T::TYPE_NAME),
        };
        let spec = SegmentSpec {
            kind: builder.kind,
            capacity,
            slot_size: size_of::<T>() as u64,
            slot_align: align_of::<T>() as u64,
            type_fingerprint,
            type_name,
            data_len: data_len::<T>(capacity)?,
        };
        let expect = Expect {
            capacity: builder.capacity,
            ..Expect::from(&spec)
        };
        let segment = match builder.mode {
            OpenMode::Create => Segment::create(&builder.location, &spec, &builder.options)?,
            OpenMode::Open => Segment::open(&builder.location, &expect, &builder.options)?,
            OpenMode::OpenOrCreate => {
                open_or_create(&builder.location, &spec, &expect, &builder.options)?
            }
        };
        let capacity = segment.header().capacity;
        let needed = data_len::<T>(capacity).map_err(|_| {
            Error::Corrupted(Corruption::Layout {
                capacity,
                data_len: segment.data_len() as u64,
            })
        })?;
        if (segment.data_len() as u64) < needed {
            return Err(Error::Corrupted(Corruption::Layout {
                capacity,
                data_len: segment.data_len() as u64,
            }));
        }
        let role = segment.claim_role(match side {
            Side::Producer => PRODUCER_ROLE,
            Side::Consumer => CONSUMER_ROLE,
        })?;
        let base = segment.data();
        let control = base.cast::<Control>();
        // SAFETY: the data region is at least CONTROL_LEN + capacity * size_of::<T>() bytes
        // (checked above), so the slot array at offset CONTROL_LEN is in bounds; the
        // region is page-aligned and CONTROL_LEN is a multiple of 128 >= align_of::<T>().
        let slots = unsafe { base.add(CONTROL_LEN) }.cast::<UnsafeCell<T>>();
        Ok(Ring {
            control,
            slots,
            capacity,
            side,
            attached: false,
            backing: Backing::Segment {
                segment,
                _role: role,
            },
        })
    }

    #[inline(always)]
    fn control(&self) -> &Control {
        // SAFETY: `control` points into memory owned by `backing` (the mapping or the
        // heap ring), which lives as long as `self`; all-zero or peer-written bytes are a
        // valid `Control` (atomics only), and every access to it is atomic.
        unsafe { self.control.as_ref() }
    }

    /// The slot of `position`.
    #[inline(always)]
    fn slot(&self, position: u64) -> &UnsafeCell<T> {
        let index = (position & (self.capacity - 1)) as usize;
        // SAFETY: `index < capacity`, and `slots` points to `capacity` slots inside the
        // memory `backing` keeps alive as long as `self`.
        unsafe { self.slots.add(index).as_ref() }
    }

    /// Checks a pair of positions read from shared memory.
    #[inline(always)]
    fn check(&self, head: u64, tail: u64) -> Result<u64, Corruption> {
        let used = tail.wrapping_sub(head);
        if used <= self.capacity {
            Ok(used)
        } else {
            Err(Corruption::Positions {
                head,
                tail,
                capacity: self.capacity,
            })
        }
    }

    fn own_session(&self) -> &AtomicU32 {
        match self.side {
            Side::Producer => &self.control().session.producer,
            Side::Consumer => &self.control().session.consumer,
        }
    }

    fn peer_session(&self) -> &AtomicU32 {
        match self.side {
            Side::Producer => &self.control().session.consumer,
            Side::Consumer => &self.control().session.producer,
        }
    }

    /// Marks this side attached, one generation on, and clears the waiter count of the
    /// event this side waits on: only the holder of this role ever waits there, so a
    /// non-zero count was left by a predecessor that died while parked, and would make
    /// every notify of the peer a needless `FUTEX_WAKE`.
    fn attach(&mut self) -> Result<(), Corruption> {
        let word = self.own_session();
        // Relaxed: only this side writes its word, and it holds the role.
        let old = word.load(Ordering::Relaxed);
        if old & STATE_MASK == STATE_MASK {
            return Err(Corruption::State {
                word: self.own_word_name(),
                found: old,
            });
        }
        let generation = (old & !STATE_MASK).wrapping_add(GENERATION_ONE);
        // SYNC(session): Release; the peer's Acquire load sees the positions as of attach.
        word.store(generation | ATTACHED, Ordering::Release);
        self.attached = true;
        let own_event = match self.side {
            Side::Producer => &self.control().not_full,
            Side::Consumer => &self.control().not_empty,
        };
        own_event.reset_waiters();
        Ok(())
    }

    fn own_word_name(&self) -> &'static str {
        match self.side {
            Side::Producer => "the producer's session word",
            Side::Consumer => "the consumer's session word",
        }
    }

    fn peer_word_name(&self) -> &'static str {
        match self.side {
            Side::Producer => "the consumer's session word",
            Side::Consumer => "the producer's session word",
        }
    }

    /// Is the peer's role lock held? Heap rings have no lock: their peer closes in `Drop`.
    fn peer_alive(&self) -> bool {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment { segment, .. } => segment
                .role_alive(match self.side {
                    Side::Producer => CONSUMER_ROLE,
                    Side::Consumer => PRODUCER_ROLE,
                })
                // A failed probe is not evidence of death.
                .unwrap_or(true),
            Backing::Heap { .. } => true,
        }
    }

    /// Whether the peer can die without closing (a process of its own).
    fn peer_may_die(&self) -> bool {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment { .. } => true,
            Backing::Heap { .. } => false,
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: as in `control()`: `backing` is still alive here.
        let control = unsafe { self.control.as_ref() };
        let (word, peer_event) = match self.side {
            Side::Producer => (&control.session.producer, &control.not_empty),
            Side::Consumer => (&control.session.consumer, &control.not_full),
        };
        // Relaxed: only this side writes its word.
        let old = word.load(Ordering::Relaxed);
        if self.attached && old & STATE_MASK == ATTACHED {
            // SYNC(session): Release; after this side's last position store, so a peer
            // that sees CLOSED and re-reads the position sees every message.
            word.store((old & !STATE_MASK) | CLOSED, Ordering::Release);
        }
        // Wake a peer parked on this side's events, so it sees the close.
        peer_event.notify();
    }
}

/// How a peer's session looks from this side.
enum PeerState {
    /// Absent or attached: it may still send or receive.
    Present,
    /// Closed, or found dead: it is gone.
    Gone,
}

/// The peer-watching state of a handle (also of an MPMC participant, which watches
/// every participant of the other side).
#[derive(Debug, Default)]
pub(crate) struct PeerWatch {
    /// Consecutive empty/full polls since the last liveness probe.
    polls: u32,
    /// The peer's session word when it was last found dead: gone until the word changes.
    dead_word: Option<u32>,
    /// When the peer's lock was last probed.
    last_probe: Option<Instant>,
}

impl PeerWatch {
    /// Counts one empty (or full) poll and says whether to probe the peer's liveness now:
    /// when `probe` asks for it, or once `every` polls have passed and
    /// [`LIVENESS_PROBE_INTERVAL`] since the last probe (one clock read per `every`
    /// polls; under loom, which has no clock, the count alone). Records the probe.
    pub(crate) fn tick(&mut self, probe: bool, every: u32) -> bool {
        self.polls += 1;
        if !probe && self.polls < every {
            return false;
        }
        self.polls = 0;
        if cfg!(loom) {
            return true;
        }
        let now = Instant::now();
        if !probe
            && self
                .last_probe
                .is_some_and(|t| now.duration_since(t) < LIVENESS_PROBE_INTERVAL)
        {
            return false;
        }
        self.last_probe = Some(now);
        true
    }
}

impl<T: Message> Ring<T> {
    /// Reads the peer's session; probes its lock when `probe`, or every
    /// [`LIVENESS_POLLS`] calls.
    fn peer_state(&self, watch: &mut PeerWatch, probe: bool) -> Result<PeerState, Corruption> {
        // SYNC(session): Acquire; pairs with the peer's Release store of its word, so a
        // re-read of its position afterwards sees its last store.
        let word = self.peer_session().load(Ordering::Acquire);
        match word & STATE_MASK {
            ABSENT => Ok(PeerState::Present),
            CLOSED => Ok(PeerState::Gone),
            ATTACHED => {
                if watch.dead_word == Some(word) {
                    return Ok(PeerState::Gone);
                }
                if !self.peer_may_die() {
                    return Ok(PeerState::Present);
                }
                if watch.tick(probe, LIVENESS_POLLS) && !self.peer_alive() {
                    watch.dead_word = Some(word);
                    return Ok(PeerState::Gone);
                }
                Ok(PeerState::Present)
            }
            _ => Err(Corruption::State {
                word: self.peer_word_name(),
                found: word,
            }),
        }
    }
}

/// The sending half of an SPSC ring.
///
/// `Send` but not `Sync`: one thread at a time sends. Created by [`channel`] (in one
/// process) or by [`Builder::producer`] (in a segment).
pub struct Producer<T: Message> {
    ring: Ring<T>,
    /// This side's position: the next position to write (only the producer writes `tail`).
    tail: u64,
    /// The last `head` loaded from shared memory (Rigtorp's cached index).
    head_cache: u64,
    wait: WaitStrategy,
    watch: PeerWatch,
}

/// The receiving half of an SPSC ring.
///
/// `Send` but not `Sync`: one thread at a time receives. Created by [`channel`] (in one
/// process) or by [`Builder::consumer`] (in a segment).
pub struct Consumer<T: Message> {
    ring: Ring<T>,
    /// This side's position: the next position to read (only the consumer writes `head`).
    head: u64,
    /// The last `tail` loaded from shared memory (Rigtorp's cached index).
    tail_cache: u64,
    wait: WaitStrategy,
    watch: PeerWatch,
}

// SAFETY: a Producer is the only handle that writes `tail` and unreleased slots, wherever
// it moves; its raw pointers point into memory its `backing` owns (a mapping or an Arc),
// which is valid from any thread. Messages are plain bytes (`Message: FromBytes`).
unsafe impl<T: Message + Send> Send for Producer<T> {}
// SAFETY: as for Producer, with `head` and published slots.
unsafe impl<T: Message + Send> Send for Consumer<T> {}

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
    let (p, c) = Ring::heap_pair(capacity)?;
    Ok((
        Producer::attach(p, WaitStrategy::default())?,
        Consumer::attach(c, WaitStrategy::default())?,
    ))
}

/// Why a producer could not claim a slot (the value-less form of the send errors).
#[derive(Clone, Copy)]
pub(crate) enum Refusal {
    Full,
    Disconnected,
    Corrupted(Corruption),
}

impl Refusal {
    pub(crate) fn try_send<T>(self, value: T) -> TrySendError<T> {
        match self {
            Self::Full => TrySendError::Full(value),
            Self::Disconnected => TrySendError::Disconnected(value),
            Self::Corrupted(c) => TrySendError::Corrupted(value, c),
        }
    }

    /// The blocking form: `Full` after the wait means the deadline passed.
    pub(crate) fn send_timeout<T>(self, value: T) -> SendTimeoutError<T> {
        match self {
            Self::Full => SendTimeoutError::Timeout(value),
            Self::Disconnected => SendTimeoutError::Disconnected(value),
            Self::Corrupted(c) => SendTimeoutError::Corrupted(value, c),
        }
    }
}

impl<T: Message> Producer<T> {
    fn attach(mut ring: Ring<T>, wait: WaitStrategy) -> Result<Self, Error> {
        let control = ring.control();
        // Acquire: a previous producer of this segment (now dead or closed) published up
        // to here; this one continues after it.
        let tail = control.tail.load(Ordering::Acquire);
        // SYNC(slot-released): Acquire; pairs with the consumer's Release store of head.
        let head = control.head.load(Ordering::Acquire);
        ring.check(head, tail).map_err(Error::Corrupted)?;
        ring.attach().map_err(Error::Corrupted)?;
        Ok(Self {
            ring,
            tail,
            head_cache: head,
            wait,
            watch: PeerWatch::default(),
        })
    }

    /// The number of slots, a power of two.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.ring.capacity
    }

    /// The wait strategy of the blocking calls ([`WaitStrategy::default`] unless set).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Finds at least one free slot; returns how many are free.
    #[inline]
    pub(crate) fn claim(&mut self, probe: bool) -> Result<u64, Refusal> {
        let capacity = self.ring.capacity;
        // Relaxed: the session line is written only at attach and close, and a close is
        // acted on at the next call; the Acquire load in `peer_state` orders the rest.
        let peer = self.ring.peer_session().load(Ordering::Relaxed);
        let state = peer & STATE_MASK;
        if state != ATTACHED && state != ABSENT || probe || self.watch.dead_word.is_some() {
            if let PeerState::Gone = self
                .ring
                .peer_state(&mut self.watch, probe)
                .map_err(Refusal::Corrupted)?
            {
                return Err(Refusal::Disconnected);
            }
        }
        let mut free = capacity - self.tail.wrapping_sub(self.head_cache);
        if free == 0 {
            free = self.load_free().map_err(Refusal::Corrupted)?;
            if free == 0 {
                return match self.ring.peer_state(&mut self.watch, false) {
                    Ok(PeerState::Gone) => Err(Refusal::Disconnected),
                    Ok(PeerState::Present) => Err(Refusal::Full),
                    Err(c) => Err(Refusal::Corrupted(c)),
                };
            }
        }
        Ok(free)
    }

    /// Reloads `head` and returns how many slots are free.
    #[inline]
    pub(crate) fn load_free(&mut self) -> Result<u64, Corruption> {
        // SYNC(slot-released): Acquire; pairs with the consumer's Release store of head:
        // its reads of the slots before `head` are done.
        let head = self.ring.control().head.load(Ordering::Acquire);
        let used = self.ring.check(head, self.tail)?;
        self.head_cache = head;
        Ok(self.ring.capacity - used)
    }

    /// Makes `n` written slots visible to the consumer and wakes it if it sleeps.
    #[inline]
    pub(crate) fn publish(&mut self, n: u64) {
        self.tail = self.tail.wrapping_add(n);
        // SYNC(slot-published): Release; pairs with the consumer's Acquire load of tail.
        self.ring.control().tail.store(self.tail, Ordering::Release);
        self.ring.control().not_empty.notify();
    }

    #[inline(always)]
    fn write(&mut self, offset: u64, value: T) {
        // SAFETY: the slot at tail + offset is free (offset < free slots found by
        // `claim`): the consumer released it and will not read it before it is published.
        self.ring
            .slot(self.tail.wrapping_add(offset))
            .with_mut(|p| unsafe { p.write(value) });
    }

    /// Sends `value` if a slot is free, without blocking.
    ///
    /// Costs, when the consumer busy-polls: a slot write, a `Release` store, a `SeqCst`
    /// fence and a load (no syscall). When the consumer is parked, one `FUTEX_WAKE`.
    ///
    /// # Errors
    ///
    /// The value comes back in [`TrySendError::Full`] (no free slot),
    /// [`TrySendError::Disconnected`] (the consumer closed the ring, or died: seen when
    /// the ring is full or at the next liveness probe), or [`TrySendError::Corrupted`].
    #[inline]
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        match self.claim(false) {
            Ok(_) => {
                self.write(0, value);
                self.publish(1);
                Ok(())
            }
            Err(refusal) => Err(refusal.try_send(value)),
        }
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
        let cached = self.ring.capacity - self.tail.wrapping_sub(self.head_cache);
        if (cached as usize) < values.len() {
            // The cached head may be stale: one load can make the batch larger, and
            // `claim` then works from the fresh copy.
            self.load_free()
                .map_err(|c| TrySendError::Corrupted((), c))?;
        }
        let free = self.claim(false).map_err(|r| r.try_send(()))?;
        let n = values.len().min(free as usize);
        for (i, value) in values[..n].iter().enumerate() {
            self.write(i as u64, *value);
        }
        self.publish(n as u64);
        Ok(n)
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
        self.claim(false).map_err(|r| r.try_send(()))?;
        Ok(SendSlot { producer: self })
    }

    /// Sends `value`, waiting with this producer's [`WaitStrategy`] while the ring is
    /// full.
    ///
    /// # Errors
    ///
    /// [`SendError::Disconnected`] when the consumer is gone (closed, or dead: seen within
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
        match self.claim_until(deadline) {
            Ok(()) => {
                self.write(0, value);
                self.publish(1);
                Ok(())
            }
            Err(refusal) => Err(refusal.send_timeout(value)),
        }
    }

    /// Claims the next slot, waiting with this producer's [`WaitStrategy`] until
    /// `deadline` (`None`: forever) while the ring is full. `Err(Refusal::Full)` means
    /// the deadline passed.
    fn claim_until(&mut self, deadline: Option<Instant>) -> Result<(), Refusal> {
        let wait = self.wait;
        let peer_may_die = self.ring.peer_may_die();
        let event: *const EventCount = &*self.ring.control().not_full;
        // SAFETY: the event count lives in the ring's memory, which `self` keeps alive
        // for the whole call.
        let event = unsafe { &*event };
        let claimed = block(event, wait, peer_may_die, deadline, |probe| {
            match self.claim(probe) {
                Err(Refusal::Full) => None,
                other => Some(other),
            }
        });
        match claimed {
            Some(Ok(_)) => Ok(()),
            None => Err(Refusal::Full),
            Some(Err(refusal)) => Err(refusal),
        }
    }
}

/// Loans: pool chunks sent as offsets, received as samples in place.
#[cfg(not(loom))]
impl Producer<shm_alloc::ShmOffset> {
    /// Sends a chunk loaned from a [`Pool`](shm_alloc::Pool) as its 16-byte offset: marks
    /// it in flight to the consumer's pool participant (announced by
    /// [`Consumer::bind_pool`]; to no one in particular if the consumer never bound one),
    /// then publishes the offset. If the consumer dies before receiving it,
    /// [`Pool::reclaim_dead`](shm_alloc::Pool::reclaim_dead) returns the chunk.
    ///
    /// The chunk is marked only once a slot is claimed, so a refusal hands it back
    /// untouched. The cost does not depend on the payload's size.
    ///
    /// # Errors
    ///
    /// The chunk comes back in [`TrySendError::Full`], [`TrySendError::Disconnected`] or
    /// [`TrySendError::Corrupted`], as for [`try_send`](Self::try_send).
    pub fn try_send_loan<'p>(
        &mut self,
        chunk: shm_alloc::LoanedChunk<'p>,
    ) -> Result<(), TrySendError<shm_alloc::LoanedChunk<'p>>> {
        match self.claim(false) {
            Ok(_) => {
                self.send_claimed_loan(chunk);
                Ok(())
            }
            Err(refusal) => Err(refusal.try_send(chunk)),
        }
    }

    /// [`try_send_loan`](Self::try_send_loan), waiting with this producer's
    /// [`WaitStrategy`] until `deadline` (`None`: forever) while the ring is full.
    ///
    /// # Errors
    ///
    /// The chunk comes back in [`SendTimeoutError::Timeout`],
    /// [`SendTimeoutError::Disconnected`] or [`SendTimeoutError::Corrupted`], as for
    /// [`send_deadline`](Self::send_deadline).
    pub fn send_loan_deadline<'p>(
        &mut self,
        chunk: shm_alloc::LoanedChunk<'p>,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<shm_alloc::LoanedChunk<'p>>> {
        match self.claim_until(deadline) {
            Ok(()) => {
                self.send_claimed_loan(chunk);
                Ok(())
            }
            Err(refusal) => Err(refusal.send_timeout(chunk)),
        }
    }

    /// Whether the consumer attached now has bound a pool participant
    /// ([`Consumer::bind_pool`]): chunks sent from now on are reclaimed if it dies. A
    /// snapshot: the consumer may leave and a new, unbound one attach right after.
    #[must_use]
    pub fn consumer_bound(&self) -> bool {
        // Relaxed: see `send_claimed_loan`.
        self.ring
            .control()
            .session
            .consumer_participant
            .load(Ordering::Relaxed)
            != 0
    }

    /// Marks `chunk` in flight and publishes its offset in the slot `claim` gave.
    fn send_claimed_loan(&mut self, chunk: shm_alloc::LoanedChunk<'_>) {
        // Relaxed: a number only (which participant gets the chunk back if the consumer
        // dies); the chunk's own Release marking and the tail store publish the payload.
        let bound = self
            .ring
            .control()
            .session
            .consumer_participant
            .load(Ordering::Relaxed);
        let offset = match bound.checked_sub(1) {
            Some(participant) => chunk.into_offset_for(participant),
            None => chunk.into_offset(),
        };
        self.write(0, offset);
        self.publish(1);
    }
}

#[cfg(not(loom))]
impl Consumer<shm_alloc::ShmOffset> {
    /// Announces `pool`'s participant to the producer: chunks it sends from now on with
    /// [`Producer::try_send_loan`] are in flight to that participant, so that if this
    /// process dies before receiving them, [`Pool::reclaim_dead`](shm_alloc::Pool::reclaim_dead)
    /// in any process returns them. Receive with [`Pool::receive`](shm_alloc::Pool::receive)
    /// on the offsets this consumer takes. Each newly attached consumer starts unbound.
    pub fn bind_pool(&mut self, pool: &shm_alloc::Pool) {
        // Relaxed: see `send_claimed_loan`.
        self.ring
            .control()
            .session
            .consumer_participant
            .store(pool.participant() + 1, Ordering::Relaxed);
    }
}

#[cfg(not(loom))]
impl Ring<u8> {
    /// The byte at `position`, and how many bytes follow it contiguously before the end
    /// of the buffer (itself included). From the base pointer, not from one slot's
    /// reference: the caller reaches the following bytes too (`UnsafeCell<u8>` has the
    /// layout of `u8`).
    fn bytes_at(&self, position: u64) -> (*mut u8, u64) {
        let index = position & (self.capacity - 1);
        // SAFETY: `index < capacity`: inside the slot array `backing` keeps alive.
        let at = unsafe { self.slots.as_ptr().add(index as usize) }.cast::<u8>();
        (at, self.capacity - index)
    }
}

#[cfg(not(loom))]
impl Producer<u8> {
    /// The position of the next byte to write.
    pub(crate) fn position(&self) -> u64 {
        self.tail
    }

    /// The byte at `position`, and how many bytes follow it contiguously before the end
    /// of the buffer (itself included).
    pub(crate) fn bytes_at(&self, position: u64) -> (*mut u8, u64) {
        self.ring.bytes_at(position)
    }

    /// The ring's event counts: `(not_empty, not_full)`.
    pub(crate) fn events(&self) -> (&EventCount, &EventCount) {
        let control = self.ring.control();
        (&control.not_empty, &control.not_full)
    }

    pub(crate) fn wait(&self) -> WaitStrategy {
        self.wait
    }

    pub(crate) fn peer_may_die(&self) -> bool {
        self.ring.peer_may_die()
    }
}

#[cfg(not(loom))]
impl Consumer<u8> {
    /// The position of the next byte to read.
    pub(crate) fn position(&self) -> u64 {
        self.head
    }

    /// As [`Producer::bytes_at`], for reading.
    pub(crate) fn bytes_at(&self, position: u64) -> (*const u8, u64) {
        let (at, contiguous) = self.ring.bytes_at(position);
        (at.cast_const(), contiguous)
    }

    /// Whether the producer's session word says it closed cleanly.
    pub(crate) fn peer_closed(&self) -> bool {
        // Acquire: SYNC(session).
        self.ring.peer_session().load(Ordering::Acquire) & STATE_MASK == CLOSED
    }

    /// Whether a producer ever attached (its session word left ABSENT).
    pub(crate) fn peer_seen(&self) -> bool {
        // Acquire: SYNC(session).
        self.ring.peer_session().load(Ordering::Acquire) != ABSENT
    }

    /// The ring's `not_empty` event count.
    pub(crate) fn not_empty(&self) -> &EventCount {
        &self.ring.control().not_empty
    }

    pub(crate) fn wait(&self) -> WaitStrategy {
        self.wait
    }

    pub(crate) fn peer_may_die(&self) -> bool {
        self.ring.peer_may_die()
    }
}

/// The blocking loop of `send` and `recv`: polls, then waits on `event` with `wait` until
/// `poll` returns `Some` or `deadline` (`None`: never) passes, which gives `None`.
///
/// A side whose peer can die without closing waits in slices of [`LIVENESS_PERIOD`], and
/// polls with `probe = true` after each slice so that its peer's lock is probed.
pub(crate) fn block<R>(
    event: &EventCount,
    wait: WaitStrategy,
    peer_may_die: bool,
    deadline: Option<Instant>,
    mut poll: impl FnMut(bool) -> Option<R>,
) -> Option<R> {
    let mut probe = false;
    loop {
        if let Some(ready) = poll(probe) {
            return Some(ready);
        }
        match wait.wait_for(event, slice_deadline(deadline, peer_may_die), || {
            poll(false)
        }) {
            Ok(ready) => return Some(ready),
            // `wait_for` polled once more at the deadline and found nothing.
            Err(TimedOut) if deadline.is_some_and(|d| Instant::now() >= d) => return None,
            // A liveness slice ended: probe the peer's lock now.
            Err(TimedOut) => probe = true,
        }
    }
}

/// The deadline of one wait: the caller's, or sooner when the peer can die unseen, so
/// that a blocked side probes its peer every [`LIVENESS_PERIOD`].
fn slice_deadline(deadline: Option<Instant>, peer_may_die: bool) -> Option<Instant> {
    if !peer_may_die {
        return deadline;
    }
    let slice = Instant::now().checked_add(LIVENESS_PERIOD);
    match (deadline, slice) {
        (Some(d), Some(s)) => Some(d.min(s)),
        (d, s) => d.or(s),
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
        self.producer.publish(1);
    }
}

impl<T: Message> Deref for SendSlot<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        let slot = self.producer.ring.slot(self.producer.tail);
        // SAFETY: the slot is free (claimed) and unpublished, so only this producer may
        // touch it until `commit`; the borrow of `self` bounds the reference. Any bytes
        // are a valid `T` (`FromBytes`).
        slot.with(|p| unsafe { &*p })
    }
}

impl<T: Message> DerefMut for SendSlot<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        let slot = self.producer.ring.slot(self.producer.tail);
        // SAFETY: as in `deref`, and the `&mut self` borrow makes the reference unique.
        slot.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: Message> Consumer<T> {
    fn attach(mut ring: Ring<T>, wait: WaitStrategy) -> Result<Self, Error> {
        let control = ring.control();
        // Acquire: a previous consumer of this segment (now dead or closed) released up
        // to here; this one continues at the first message it had not released.
        let head = control.head.load(Ordering::Acquire);
        // SYNC(slot-published): Acquire; pairs with the producer's Release store of tail.
        let tail = control.tail.load(Ordering::Acquire);
        ring.check(head, tail).map_err(Error::Corrupted)?;
        ring.attach().map_err(Error::Corrupted)?;
        // Relaxed: a hint for the producer's loans; a predecessor's participant is not
        // this consumer's (it binds its own with `bind_pool`).
        let bound = &ring.control().session.consumer_participant;
        bound.store(0, Ordering::Relaxed);
        Ok(Self {
            ring,
            head,
            tail_cache: tail,
            wait,
            watch: PeerWatch::default(),
        })
    }

    /// The number of slots, a power of two.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.ring.capacity
    }

    /// The wait strategy of the blocking calls ([`WaitStrategy::default`] unless set).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Finds at least one published message; returns how many there are.
    #[inline]
    pub(crate) fn available(&mut self, probe: bool) -> Result<u64, TryRecvError> {
        if self.tail_cache != self.head {
            return Ok(self.tail_cache.wrapping_sub(self.head));
        }
        let available = self.load_tail()?;
        if available != 0 {
            return Ok(available);
        }
        self.empty(probe)
    }

    /// Reloads `tail` and returns how many messages are published.
    #[inline]
    pub(crate) fn load_tail(&mut self) -> Result<u64, TryRecvError> {
        // SYNC(slot-published): Acquire; pairs with the producer's Release store of tail:
        // its slot writes before it are visible.
        let tail = self.ring.control().tail.load(Ordering::Acquire);
        let used = self
            .ring
            .check(self.head, tail)
            .map_err(TryRecvError::Corrupted)?;
        self.tail_cache = tail;
        Ok(used)
    }

    /// The ring looked empty: is the producer gone?
    #[cold]
    fn empty(&mut self, probe: bool) -> Result<u64, TryRecvError> {
        match self
            .ring
            .peer_state(&mut self.watch, probe)
            .map_err(TryRecvError::Corrupted)?
        {
            PeerState::Present => Err(TryRecvError::Empty),
            PeerState::Gone => {
                // Gone after its last tail store (SYNC(session)): re-read it.
                match self.load_tail()? {
                    0 => Err(TryRecvError::Disconnected),
                    available => Ok(available),
                }
            }
        }
    }

    /// Marks `n` read messages free for the producer and wakes it if it sleeps.
    #[inline]
    pub(crate) fn release(&mut self, n: u64) {
        self.head = self.head.wrapping_add(n);
        // SYNC(slot-released): Release; pairs with the producer's Acquire load of head.
        self.ring.control().head.store(self.head, Ordering::Release);
        self.ring.control().not_full.notify();
    }

    #[inline(always)]
    fn read(&self, offset: u64) -> T {
        // SAFETY: the slot at head + offset is published (offset < available) and not yet
        // released, so the producer does not write it; any bytes are a valid `T`.
        self.ring
            .slot(self.head.wrapping_add(offset))
            .with(|p| unsafe { p.read() })
    }

    /// Receives the next message if there is one, without blocking.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`]; [`TryRecvError::Disconnected`] when the ring is empty and
    /// the producer closed it or died (every message sent before is received first);
    /// [`TryRecvError::Corrupted`].
    #[inline]
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.available(false)?;
        let value = self.read(0);
        self.release(1);
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
        let cached = self.tail_cache.wrapping_sub(self.head);
        if (cached as usize) < buf.len() {
            // The cached tail may be stale: one load can make the batch larger, and
            // `available` then works from the fresh copy.
            self.load_tail()?;
        }
        let available = self.available(false)?;
        let n = buf.len().min(available as usize);
        for (i, out) in buf[..n].iter_mut().enumerate() {
            *out = self.read(i as u64);
        }
        self.release(n as u64);
        Ok(n)
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
        self.available(false)?;
        Ok(RecvGuard { consumer: self })
    }

    /// Receives the next message, waiting with this consumer's [`WaitStrategy`] while the
    /// ring is empty.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] when the ring is empty and the producer is gone
    /// (closed, or dead: seen within [`LIVENESS_PERIOD`] while blocked),
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
        self.wait_available(deadline)?;
        let value = self.read(0);
        self.release(1);
        Ok(value)
    }

    /// Waits until a message is published, the producer is gone, or `deadline`.
    fn wait_available(&mut self, deadline: Option<Instant>) -> Result<u64, RecvTimeoutError> {
        let wait = self.wait;
        let peer_may_die = self.ring.peer_may_die();
        let event: *const EventCount = &*self.ring.control().not_empty;
        // SAFETY: the event count lives in the ring's memory, which `self` keeps alive
        // for the whole call.
        let event = unsafe { &*event };
        let available = block(event, wait, peer_may_die, deadline, |probe| {
            match self.available(probe) {
                Err(TryRecvError::Empty) => None,
                other => Some(other),
            }
        });
        match available {
            Some(Ok(n)) => Ok(n),
            None | Some(Err(TryRecvError::Empty)) => Err(RecvTimeoutError::Timeout),
            Some(Err(TryRecvError::Disconnected)) => Err(RecvTimeoutError::Disconnected),
            Some(Err(TryRecvError::Corrupted(c))) => Err(RecvTimeoutError::Corrupted(c)),
        }
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
        let slot = self.consumer.ring.slot(self.consumer.head);
        // SAFETY: the slot is published and not released until this guard drops, so the
        // producer does not write it while the reference (bounded by `&self`) lives. Any
        // bytes are a valid `T`.
        slot.with(|p| unsafe { &*p })
    }
}

impl<T: Message> Drop for RecvGuard<'_, T> {
    fn drop(&mut self) {
        self.consumer.release(1);
    }
}

impl<T: Message> core::fmt::Debug for SendSlot<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendSlot")
            .field("position", &self.producer.tail)
            .finish_non_exhaustive()
    }
}

impl<T: Message> core::fmt::Debug for RecvGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvGuard")
            .field("position", &self.consumer.head)
            .finish_non_exhaustive()
    }
}

impl<T: Message> core::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.ring.capacity)
            .field("tail", &self.tail)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl<T: Message> core::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.ring.capacity)
            .field("head", &self.head)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// How a [`Builder`] gets its segment.
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Create the segment; fail if it exists.
    Create,
    /// Open an existing segment; fail if there is none.
    Open,
    /// Open the segment, or create it if there is none: either side may start first.
    #[default]
    OpenOrCreate,
}

/// Opens or creates an SPSC ring segment and attaches one side to it.
///
/// # Examples
///
/// ```
/// use shm_ring::spsc::Builder;
/// # let name = format!("doc-spsc-{}", std::process::id());
/// let mut tx = Builder::<u64>::new(name.as_str()).capacity(64).producer()?;
/// let mut rx = Builder::<u64>::new(name.as_str()).consumer()?;
/// tx.try_send(1).unwrap();
/// assert_eq!(rx.try_recv(), Ok(1));
/// # shm_alloc::Segment::remove(&name.as_str().into())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(not(loom))]
#[derive(Debug, Clone)]
pub struct Builder<T: Message> {
    location: Location,
    capacity: Option<u64>,
    wait: WaitStrategy,
    options: SegmentOptions,
    mode: OpenMode,
    /// `Spsc`, or `Stream` for the byte ring `stream` builds on this one.
    kind: Kind,
    /// The capacity a creator uses when none was given.
    default_capacity: u64,
    _message: PhantomData<fn() -> T>,
}

#[cfg(not(loom))]
impl<T: Message> Builder<T> {
    /// A builder for the ring at `location` (a name under `/dev/shm`, or a path).
    pub fn new(location: impl Into<Location>) -> Self {
        Self {
            location: location.into(),
            capacity: None,
            wait: WaitStrategy::default(),
            options: SegmentOptions::default(),
            mode: OpenMode::default(),
            kind: Kind::Spsc,
            default_capacity: DEFAULT_CAPACITY,
            _message: PhantomData,
        }
    }

    /// The capacity a creator uses when none is set (any is accepted when opening).
    pub(crate) fn capacity_if_created(mut self, capacity: u64) -> Self {
        self.default_capacity = capacity;
        self
    }

    /// The segment kind written and expected: the stream ring's is `Stream`.
    pub(crate) fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// The capacity in slots (a power of two): used when creating, and checked when
    /// opening. Unset: [`DEFAULT_CAPACITY`] when creating, any when opening.
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
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

    /// Attaches as the producer.
    ///
    /// # Errors
    ///
    /// [`Error::Segment`] for a missing, existing, foreign, mismatched or corrupt segment,
    /// or with `RoleTaken` when another producer is attached; [`Error::Corrupted`] for
    /// inconsistent positions; [`Error::InvalidCapacity`].
    pub fn producer(&self) -> Result<Producer<T>, Error> {
        Producer::attach(Ring::attach_segment(self, Side::Producer)?, self.wait)
    }

    /// Attaches as the consumer; it starts at the first message no consumer released.
    ///
    /// # Errors
    ///
    /// As [`producer`](Self::producer).
    pub fn consumer(&self) -> Result<Consumer<T>, Error> {
        Consumer::attach(Ring::attach_segment(self, Side::Consumer)?, self.wait)
    }
}

/// Creates the segment, or opens it if it exists (accepting any capacity when `expect`
/// leaves it open); retries when the file vanishes between the two.
#[cfg(not(loom))]
fn open_or_create(
    location: &Location,
    spec: &SegmentSpec,
    expect: &Expect,
    options: &SegmentOptions,
) -> Result<Segment, Error> {
    let mut attempts = 0;
    loop {
        match Segment::create(location, spec, options) {
            Err(shm_alloc::Error::AlreadyExists { .. }) => {}
            other => return Ok(other?),
        }
        match Segment::open(location, expect, options) {
            Err(shm_alloc::Error::NotFound { .. }) if attempts < 3 => attempts += 1,
            other => return Ok(other?),
        }
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
        assert_eq!(tx.capacity(), 2);
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
    fn invalid_capacities_are_refused() {
        for cap in [0, 3, 6, MAX_CAPACITY * 2] {
            assert!(matches!(channel::<u8>(cap), Err(Error::InvalidCapacity(c)) if c == cap));
        }
    }

    #[test]
    fn wraps_many_times_in_order() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        for i in 0..1000 {
            tx.try_send(i).unwrap();
            if i % 3 == 2 {
                tx.try_send(i + 1_000_000).unwrap();
                assert_eq!(rx.try_recv(), Ok(i));
                assert_eq!(rx.try_recv(), Ok(i + 1_000_000));
            } else {
                assert_eq!(rx.try_recv(), Ok(i));
            }
        }
    }

    #[test]
    fn batches_publish_what_fits() {
        let (mut tx, mut rx) = channel::<u16>(8).unwrap();
        assert_eq!(tx.send_slice(&[]), Ok(0));
        assert_eq!(tx.send_slice(&[1, 2, 3, 4, 5]), Ok(5));
        assert_eq!(tx.send_slice(&[6, 7, 8, 9, 10]), Ok(3));
        assert_eq!(tx.send_slice(&[11]), Err(TrySendError::Full(())));
        let mut buf = [0u16; 6];
        assert_eq!(rx.recv_into(&mut buf), Ok(6));
        assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
        assert_eq!(tx.send_slice(&[9, 10, 11, 12]), Ok(4)); // wraps
        let mut buf = [0u16; 16];
        assert_eq!(rx.recv_into(&mut buf), Ok(6));
        assert_eq!(&buf[..6], &[7, 8, 9, 10, 11, 12]);
        assert_eq!(rx.recv_into(&mut buf), Err(TryRecvError::Empty));
    }

    #[test]
    fn reserve_commit_and_abort() {
        let (mut tx, mut rx) = channel::<[u32; 4]>(2).unwrap();
        {
            let mut slot = tx.reserve().unwrap();
            *slot = [1, 2, 3, 4];
            // dropped without commit: nothing published
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        let mut slot = tx.reserve().unwrap();
        slot[0] = 9;
        slot.commit();
        assert_eq!(rx.try_recv().unwrap()[0], 9);
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
    fn producer_drop_drains_then_disconnects() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    }

    #[test]
    fn consumer_drop_disconnects_the_producer() {
        let (mut tx, rx) = channel::<u64>(4).unwrap();
        drop(rx);
        assert!(matches!(tx.try_send(1), Err(TrySendError::Disconnected(1))));
        assert!(matches!(tx.send(2), Err(SendError::Disconnected(2))));
    }

    #[test]
    fn corrupted_positions_are_reported() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        tx.ring.control().tail.store(100, Ordering::Relaxed);
        assert_eq!(
            rx.try_recv(),
            Err(TryRecvError::Corrupted(Corruption::Positions {
                head: 0,
                tail: 100,
                capacity: 4
            }))
        );
        rx.ring.control().head.store(u64::MAX, Ordering::Relaxed);
        tx.tail = 4; // make the producer look full so it reloads head
        assert!(matches!(
            tx.try_send(1),
            Err(TrySendError::Corrupted(1, Corruption::Positions { .. }))
        ));
    }

    #[test]
    fn corrupted_session_word_is_reported() {
        let (tx, mut rx) = channel::<u64>(4).unwrap();
        tx.ring
            .control()
            .session
            .producer
            .store(7, Ordering::Relaxed);
        assert_eq!(
            rx.try_recv(),
            Err(TryRecvError::Corrupted(Corruption::State {
                word: "the producer's session word",
                found: 7
            }))
        );
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

    fn stream(wait: WaitStrategy, capacity: u64) {
        let (mut tx, mut rx) = channel::<u64>(capacity).unwrap();
        tx.set_wait_strategy(wait);
        rx.set_wait_strategy(wait);
        let producer = std::thread::spawn(move || {
            for i in 0..COUNT {
                tx.send(i).unwrap();
            }
        });
        for i in 0..COUNT {
            assert_eq!(rx.recv(), Ok(i));
        }
        producer.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    }

    #[test]
    fn two_threads_busy_spin() {
        stream(WaitStrategy::BusySpin, 2);
    }

    #[test]
    fn two_threads_yield_large_capacity() {
        stream(WaitStrategy::Yield, 1024);
    }

    #[test]
    #[cfg_attr(miri, ignore = "futex sleeps make miri slow")]
    fn two_threads_park() {
        stream(WaitStrategy::Park, 2);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// The producer sends three values through two slots, the consumer receives them;
    /// both park when they must wait. Checks order, no loss, no duplicate, no race on a
    /// slot (loom's UnsafeCell), and no lost wake-up (a deadlock would be reported).
    #[test]
    fn spsc_with_parking() {
        loom::model(|| {
            let (mut tx, mut rx) = channel::<u64>(2).unwrap();
            tx.set_wait_strategy(WaitStrategy::Park);
            rx.set_wait_strategy(WaitStrategy::Park);
            let producer = loom::thread::spawn(move || {
                for i in 1..=3 {
                    tx.send(i).unwrap();
                }
            });
            for i in 1..=3 {
                assert_eq!(rx.recv(), Ok(i));
            }
            assert_eq!(rx.recv(), Err(RecvError::Disconnected));
            producer.join().unwrap();
        });
    }

    /// Batches and in-place access under the same model.
    #[test]
    fn spsc_batches_and_guards() {
        loom::model(|| {
            let (mut tx, mut rx) = channel::<u64>(2).unwrap();
            rx.set_wait_strategy(WaitStrategy::Park);
            let producer = loom::thread::spawn(move || {
                let mut sent = 0;
                while sent < 3 {
                    let values = [1, 2, 3];
                    if let Ok(n) = tx.send_slice(&values[sent..]) {
                        sent += n;
                    } else {
                        loom::thread::yield_now();
                    }
                }
            });
            let mut next = 1;
            while next <= 3 {
                match rx.try_recv_ref() {
                    Ok(guard) => {
                        assert_eq!(*guard, next);
                        next += 1;
                    }
                    Err(TryRecvError::Empty) => loom::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            producer.join().unwrap();
        });
    }
}
