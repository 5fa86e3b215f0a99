//! The MPMC ring's control block, participant entries and slots, their state words, and
//! its segment layout.

pub(crate) use shm_alloc::participants::Entry;
use shm_sync::atomic::{AtomicU32, AtomicU64};
use shm_sync::cell::UnsafeCell;
use shm_sync::{CachePadded, EventCount};

use super::MAX_PARTICIPANTS;
use crate::core::activity::Activity;
use crate::core::check_shape;
use crate::core::members::Members;
use crate::core::region::offsets;
use crate::error::Error;
use crate::message::Message;

/// Slot stamp states (the low two bits); the upper bits are the lap.
pub(crate) const EMPTY: u64 = 0; // free for the producer of this lap's position
pub(crate) const FULL: u64 = 1; // holds this lap's message
pub(crate) const SKIPPED: u64 = 2; // holds nothing for this lap: aborted, or its producer died
pub(crate) const STAMP_STATE: u64 = 0b11;

/// Participant session words (the entries of `shm_alloc::participants`): the low two
/// bits say who holds the entry, the upper 30 count attaches (a generation). Each entry's
/// word is `position + 1` of the position its holder is claiming or holds, 0 for none.
///
/// | state | meaning | written by |
/// |---|---|---|
/// | `FREE` (0) | nobody holds the entry | creation; the holder when it leaves; whoever retires a dead holder |
/// | `PRODUCER` (1) | a producer holds it (alive while its lock is held) | the producer, at attach |
/// | `CONSUMER` (2) | a consumer holds it | the consumer, at attach |
/// | 3 | - | nobody: corruption |
pub(crate) const PRODUCER: u32 = 1;
pub(crate) const CONSUMER: u32 = 2;
pub(crate) const SESSION_STATE: u32 = shm_alloc::participants::STATE_MASK;

/// `Census::departed` bits: a participant of that side has left, or died and been
/// settled, at least once.
pub(crate) const DEPARTED_PRODUCER: u32 = 1;
pub(crate) const DEPARTED_CONSUMER: u32 = 2;

/// The control block at the start of the ring's data region.
///
/// # Layout
///
/// | offset | size | field | written by |
/// |---|---|---|---|
/// | 0 | 128 | `tail: u64` | producers, every claim |
/// | 128 | 128 | `head: u64` | consumers, every claim |
/// | 256 | 384 | `census`: `departed` (`u32`), reserved (`u32`), then the `producers` and `consumers` bitmaps (16 `u64` each: bit `k` set while entry `k` holds a participant of that side) | participants at attach and leave, and whoever settles a dead one |
/// | 640 | 128 | `counters`: `skipped`, `aborted`, `reclaimed` (`u64` each) | whoever skips, aborts or reclaims a slot |
/// | 768 | 128 | `not_empty: EventCount` | consumers when they park, producers when they find them parked |
/// | 896 | 128 | `not_full: EventCount` | producers when they park, consumers when they find them parked |
///
/// The participant table follows at offset 1024: `limit` lines of 128 bytes ([`Line`];
/// the limit is the segment header's `entries`, which its checksum covers). Then the slots, at
/// `1024 + 128 * limit`: `capacity` times `size_of::<Slot<T>>()` bytes. All-zero is the
/// initial state: empty, nobody attached.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) tail: CachePadded<AtomicU64>,
    pub(crate) head: CachePadded<AtomicU64>,
    pub(crate) census: CachePadded<Census>,
    pub(crate) counters: CachePadded<Counters>,
    pub(crate) not_empty: CachePadded<EventCount>,
    pub(crate) not_full: CachePadded<EventCount>,
}

#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Census {
    /// `DEPARTED_PRODUCER | DEPARTED_CONSUMER`: which sides have lost a participant
    /// (it left, or died and was settled) at least once; set before that participant's
    /// bit is cleared. A side is gone when its bit here is set and its bitmap is empty:
    /// a side that never lost anyone is never gone, however it is raced.
    pub(crate) departed: AtomicU32,
    _reserved: AtomicU32,
    /// Bit `k` of word `k / 64`: entry `k` holds a producer, alive or dead until someone
    /// settles it. Bits, not a count: setting or clearing one twice is harmless, so a
    /// participant killed between its entry's store and its bit's leaves nothing wrong.
    pub(crate) producers: Members,
    /// Likewise, consumers.
    pub(crate) consumers: Members,
}

#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) skipped: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
}

/// A line of the participant table, written by its holder (and by whoever settles it
/// dead): the table's [`Entry`], then the holder's activity counters.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 16 | `entry`: the participant table's (session, parking mark, word) |
/// | 16 | 32 | `activity`: messages sent or received in this session, stalls, parks, wake-ups (`core::activity`; zeroed at each claim) |
/// | 48 | 80 | padding |
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Line {
    pub(crate) entry: Entry,
    pub(crate) activity: Activity,
}

impl AsRef<Entry> for Line {
    fn as_ref(&self) -> &Entry {
        &self.entry
    }
}

/// A slot: its stamp, then the message.
#[repr(C)]
pub(crate) struct Slot<T> {
    pub(crate) stamp: AtomicU64,
    pub(crate) value: UnsafeCell<T>,
}

/// The size of [`Control`]: where the participant table begins, in bytes.
#[cfg(not(loom))]
const CONTROL_LEN: usize = 1024;

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<Control>() == CONTROL_LEN);
    assert!(core::mem::offset_of!(Control, head) == 128);
    assert!(core::mem::offset_of!(Control, census) == 256);
    assert!(core::mem::offset_of!(Control, counters) == 640);
    assert!(core::mem::offset_of!(Control, not_empty) == 768);
    assert!(core::mem::offset_of!(Control, not_full) == 896);
    assert!(size_of::<Line>() == 128);
    assert!(core::mem::offset_of!(Line, activity) == 16);
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
    check_shape::<T>(capacity)?;
    check_participants(participants)?;
    offsets::<Control, Line, Slot<T>>(participants, capacity)
        .map(|o| o.len)
        .ok_or(Error::InvalidCapacity(capacity))
}

/// `participants` if a ring may have that participant limit: 1 to [`MAX_PARTICIPANTS`].
///
/// # Errors
///
/// [`Error::InvalidParticipants`] otherwise.
fn check_participants(participants: u32) -> Result<u32, Error> {
    if participants == 0 || participants > MAX_PARTICIPANTS {
        return Err(Error::InvalidParticipants(participants));
    }
    Ok(participants)
}

/// Which side a participant is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Side {
    Producer,
    Consumer,
}

impl Side {
    pub(crate) fn session_state(self) -> u32 {
        match self {
            Side::Producer => PRODUCER,
            Side::Consumer => CONSUMER,
        }
    }

    pub(crate) fn departed_bit(self) -> u32 {
        match self {
            Side::Producer => DEPARTED_PRODUCER,
            Side::Consumer => DEPARTED_CONSUMER,
        }
    }

    pub(crate) fn other(self) -> Side {
        match self {
            Side::Producer => Side::Consumer,
            Side::Consumer => Side::Producer,
        }
    }
}

/// A slot of a ring on the heap, as creation leaves it: stamp 0 (empty, lap 0).
pub(crate) fn empty_slot<T: Message>() -> Slot<T> {
    Slot {
        stamp: AtomicU64::new(0),
        value: UnsafeCell::new(T::new_zeroed()),
    }
}

#[cfg(not(loom))]
pub(crate) use segment::MpmcLayout;

#[cfg(not(loom))]
mod segment {
    use core::marker::PhantomData;

    use shm_alloc::Kind;

    use super::{Control, Line, Slot, check_participants};
    use crate::core::attach::{Identity, Layout};
    use crate::core::check_shape;
    use crate::error::{Corruption, Error};
    use crate::message::Message;

    /// The layout of an MPMC ring segment: a control block, a participant table of
    /// `participants` entries (the creator's choice, recorded in the control block), and
    /// slots of `T`.
    pub(crate) struct MpmcLayout<T> {
        /// What a creator lays out.
        pub(crate) participants: u32,
        /// What an opener requires; `None`: any.
        pub(crate) expected: Option<u32>,
        pub(crate) _message: PhantomData<fn() -> T>,
    }

    impl<T: Message> Layout for MpmcLayout<T> {
        type Control = Control;
        type Entry = Line;
        type Slot = Slot<T>;

        fn identity(&self) -> Identity {
            Identity::of::<T>(Kind::Mpmc)
        }

        fn check_capacity(&self, capacity: u64) -> Result<(), Error> {
            check_shape::<T>(capacity)
        }

        fn entries(&self) -> Result<u32, Error> {
            check_participants(self.participants)
        }

        fn opened_entries(&self, limit: u32) -> Result<u32, Error> {
            // A limit that no creator could have written: the header is corrupt.
            check_participants(limit).map_err(|_| {
                Error::Corrupted(Corruption::State {
                    word: "the participant limit",
                    found: limit,
                    expected: "1 to 1024",
                })
            })?;
            match self.expected {
                Some(expected) if expected != limit => Err(Error::ParticipantsMismatch {
                    expected,
                    found: limit,
                }),
                _ => Ok(limit),
            }
        }
    }
}
