//! The broadcast ring's control block, table lines, slots and their state words, and its
//! segment layout.

use shm_alloc::participants::Entry;
use shm_sync::atomic::{AtomicU32, AtomicU64, Ordering};
use shm_sync::{CachePadded, EventCount};

use super::{MAX_SUBSCRIBERS, Overflow};
use crate::core::activity::Activity;
use crate::core::check_shape;
use crate::core::members::Members;
use crate::core::region::offsets;
use crate::error::Error;
use crate::message::Message;

/// Slot stamp states (the low two bits); the upper bits are `position + 1` of the
/// message the slot holds or is being written with, so that 0 is a slot never written.
///
/// | state | the slot of position `p`, stamp `(p + 1) << 2 \| state` | stored by |
/// |---|---|---|
/// | 0 | never written (the whole stamp is 0) | creation |
/// | `WRITING` (1) | the publisher is writing `p`'s message: its bytes are not to be trusted | the publisher, before it writes |
/// | `PUBLISHED` (2) | holds `p`'s message | the publisher, after it wrote it |
/// | `SKIPPED` (3) | holds nothing for `p`: its publisher died while writing it | a publisher that attaches after it |
pub(crate) const WRITING: u64 = 1;
pub(crate) const PUBLISHED: u64 = 2;
pub(crate) const SKIPPED: u64 = 3;
pub(crate) const STAMP_STATE: u64 = 0b11;

/// Session states of the table's entries (see `shm_alloc::participants`): entry 0 is the
/// publisher's, entry `k + 1` subscriber `k`'s.
///
/// | state | meaning | written by |
/// |---|---|---|
/// | `FREE` (0) | nobody holds the entry (generation 0: nobody ever did) | creation; the holder when it leaves; whoever retires a dead holder |
/// | `PUBLISHER` (1) | the publisher holds it (alive while its lock is held) | the publisher, at attach |
/// | `SUBSCRIBER` (2) | a subscriber holds it | the subscriber, at attach |
/// | 3 | - | nobody: corruption |
pub(crate) const PUBLISHER: u32 = 1;
pub(crate) const SUBSCRIBER: u32 = 2;
pub(crate) const SESSION_STATE: u32 = shm_alloc::participants::STATE_MASK;

/// The publisher's entry.
pub(crate) const PUBLISHER_ENTRY: u32 = 0;

/// `Config::overflow` values: the policy, fixed at creation.
pub(crate) const LAP: u32 = 1;
pub(crate) const BLOCK: u32 = 2;

impl Overflow {
    /// The word stored in the control block.
    pub(crate) fn word(self) -> u32 {
        match self {
            Overflow::Lap => LAP,
            Overflow::Block => BLOCK,
        }
    }

    /// The policy a stored word names; `None` for a word no creator writes.
    pub(crate) fn from_word(word: u32) -> Option<Self> {
        match word {
            LAP => Some(Overflow::Lap),
            BLOCK => Some(Overflow::Block),
            _ => None,
        }
    }
}

/// The control block at the start of the ring's data region.
///
/// # Layout
///
/// | offset | size | field | written by |
/// |---|---|---|---|
/// | 0 | 128 | `tail: u64`: the next position to publish | the publisher, every message |
/// | 128 | 128 | `config`: `overflow` (`u32`: 1 lap, 2 block), reserved | the creator, before the segment is published |
/// | 256 | 128 | `gating`: bit `k` set while entry `k` holds a subscriber the publisher waits for (block only) | subscribers at attach and leave, and whoever settles a dead one |
/// | 384 | 128 | `counters`: `skipped` (`u64`): slots a publisher found half-written by a dead one | the publisher |
/// | 512 | 128 | `not_empty: EventCount` | subscribers when they park, the publisher when it finds them parked |
/// | 640 | 128 | `not_full: EventCount` | the publisher when it parks (block), subscribers when they find it parked |
///
/// The block is aligned to a page (4096 bytes, the rest padding), and so are the
/// slots: a subscriber maps them read-only. The participant table follows at offset
/// 4096: `subscribers + 1` lines of 256 bytes ([`Line`]; the count is the segment
/// header's `entries`, which its checksum covers). Then the slots, at the next multiple
/// of 4096: `capacity` times `size_of::<Slot<T>>()` bytes. All-zero is the initial state
/// but for the policy: nothing published, nobody attached.
#[repr(C, align(4096))]
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) tail: CachePadded<AtomicU64>,
    pub(crate) config: CachePadded<Config>,
    pub(crate) gating: CachePadded<Members>,
    pub(crate) counters: CachePadded<Counters>,
    pub(crate) not_empty: CachePadded<EventCount>,
    pub(crate) not_full: CachePadded<EventCount>,
}

#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Config {
    /// [`LAP`] or [`BLOCK`].
    pub(crate) overflow: AtomicU32,
    _reserved: AtomicU32,
}

#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) skipped: AtomicU64,
}

/// A line of the participant table: the table's [`Entry`], then what a subscriber keeps
/// across its sessions under the same id (the table never touches it): where it stopped,
/// and its counters. Each written by its holder only (but `untethered`, which the
/// publisher sets), on its own 128-byte line.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 16 | `entry`: the participant table's (session, parking mark, word) |
/// | 16 | 8 | `cursor`: the next position the subscriber reads |
/// | 24 | 8 | `received`: messages received |
/// | 32 | 8 | `lagged`: times it fell a whole ring behind |
/// | 40 | 8 | `missed`: messages lost to those lags |
/// | 48 | 8 | `skipped`: slots passed over that a dead publisher left half-written |
/// | 56 | 8 | `untethered`: 1 once the publisher stopped waiting for this subscriber (written by the publisher; cleared at attach) |
/// | 64 | 64 | `hazards`: 8 hazard words, each the offset of a pool chunk the subscriber reads in place, or 0 (`shm_alloc::owner`; [`chunks`](super::chunks)) |
/// | 128 | 32 | `activity`: stalls, parks, wake-ups (`core::activity`; the publisher's on line 0; the message count stays 0: `received` and the tail are it) |
/// | 160 | 96 | padding: a line is 256 bytes |
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Line {
    pub(crate) entry: Entry,
    pub(crate) cursor: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) lagged: AtomicU64,
    pub(crate) missed: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) untethered: AtomicU64,
    pub(crate) hazards: [AtomicU64; HAZARDS],
    pub(crate) activity: Activity,
}

/// Hazard words per subscriber: how many pool chunks one subscriber may read in place
/// at once.
pub(crate) const HAZARDS: usize = 8;

impl AsRef<Entry> for Line {
    fn as_ref(&self) -> &Entry {
        &self.entry
    }
}

/// A slot: its stamp, then the message, copied in and out word by word with relaxed
/// atomic accesses ([`Payload`]).
#[repr(C)]
pub(crate) struct Slot<T> {
    pub(crate) stamp: AtomicU64,
    pub(crate) payload: Payload<T>,
}

/// The size of [`Control`]: where the participant table begins, in bytes (a page).
#[cfg(not(loom))]
const CONTROL_LEN: usize = 4096;

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<Control>() == CONTROL_LEN);
    assert!(core::mem::offset_of!(Control, config) == 128);
    assert!(core::mem::offset_of!(Control, gating) == 256);
    assert!(core::mem::offset_of!(Control, counters) == 384);
    assert!(core::mem::offset_of!(Control, not_empty) == 512);
    assert!(core::mem::offset_of!(Control, not_full) == 640);
    assert!(size_of::<Line>() == 256);
    assert!(core::mem::offset_of!(Line, activity) == 128);
    assert!(core::mem::offset_of!(Line, cursor) == 16);
    assert!(core::mem::offset_of!(Line, skipped) == 48);
    assert!(core::mem::offset_of!(Line, untethered) == 56);
    assert!(core::mem::offset_of!(Line, hazards) == 64);
    assert!(size_of::<Slot<u8>>() == 16);
    assert!(core::mem::offset_of!(Slot<u64>, payload) == 8);
    assert!(core::mem::offset_of!(Slot<u128>, payload) % 8 == 0);
};

/// A slot's message bytes. A subscriber may read them while the publisher overwrites
/// them (it then finds the stamp changed and drops what it read), so both sides copy
/// them with relaxed atomic accesses, 8 bytes at a time and the last `size % 8` bytes
/// one by one: a race, never a data race. This is the seqlock reader of Boehm, "Can
/// Seqlocks Get Along With Programming Language Memory Models?" (MSPC 2012), and the
/// byte-wise atomic memcpy of Rust RFC 3301.
#[cfg(not(loom))]
#[repr(transparent)]
pub(crate) struct Payload<T>(shm_sync::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T: Message> Payload<T> {
    /// A zeroed payload.
    pub(crate) fn new() -> Self {
        Payload(shm_sync::cell::UnsafeCell::new(T::new_zeroed()))
    }

    /// Copies `value` in.
    #[inline(always)]
    pub(crate) fn store(&self, value: &T) {
        let src = value.as_bytes();
        let words = src.len() / 8;
        self.0.with_mut(|dst| {
            let dst = dst.cast::<u8>();
            for i in 0..words {
                // SAFETY: `i * 8 + 8 <= src.len()`: inside `value`'s bytes; unaligned
                // reads are allowed by `read_unaligned`.
                let word = unsafe { src.as_ptr().add(i * 8).cast::<u64>().read_unaligned() };
                // SAFETY: `dst + 8i` lies inside the payload's `size_of::<T>()` bytes and
                // is 8-aligned (the payload sits at a multiple of 8 in a slot aligned to
                // at least 8); its bytes are only ever accessed atomically while shared.
                let atom = unsafe { &*dst.add(i * 8).cast::<shm_sync::atomic::AtomicU64>() };
                // SYNC(seqlock): Relaxed; ordered after the WRITING stamp by the
                // publisher's Release fence.
                atom.store(word, Ordering::Relaxed);
            }
            for (i, &byte) in src.iter().enumerate().skip(words * 8) {
                // SAFETY: inside the payload, as above; a byte is always aligned.
                let atom = unsafe { &*dst.add(i).cast::<shm_sync::atomic::AtomicU8>() };
                // SYNC(seqlock): Relaxed, as above.
                atom.store(byte, Ordering::Relaxed);
            }
        });
    }

    /// Copies the bytes out; the caller validates them against the stamp.
    #[inline(always)]
    pub(crate) fn load(&self) -> T {
        let mut value = T::new_zeroed();
        let dst = value.as_mut_bytes();
        let words = dst.len() / 8;
        self.0.with(|src| {
            let src = src.cast::<u8>();
            for i in 0..words {
                // SAFETY: as in `store`.
                let atom = unsafe { &*src.add(i * 8).cast::<shm_sync::atomic::AtomicU64>() };
                // SYNC(seqlock): Relaxed; the subscriber's Acquire fence after the copy
                // orders these loads before its second load of the stamp.
                let word = atom.load(Ordering::Relaxed);
                // SAFETY: `i * 8 + 8 <= dst.len()`: inside `value`'s bytes, written
                // unaligned.
                unsafe {
                    dst.as_mut_ptr()
                        .add(i * 8)
                        .cast::<u64>()
                        .write_unaligned(word)
                };
            }
            for (i, byte) in dst.iter_mut().enumerate().skip(words * 8) {
                // SAFETY: as in `store`.
                let atom = unsafe { &*src.add(i).cast::<shm_sync::atomic::AtomicU8>() };
                // SYNC(seqlock): Relaxed, as above.
                *byte = atom.load(Ordering::Relaxed);
            }
        });
        value
    }
}

/// Under loom, a payload of at most 16 bytes as two loom atomics, copied in and out as
/// the real one is: relaxed, word by word, so that a model sees a torn read.
#[cfg(loom)]
pub(crate) struct Payload<T>([AtomicU64; 2], core::marker::PhantomData<T>);

#[cfg(loom)]
impl<T: Message> Payload<T> {
    pub(crate) fn new() -> Self {
        assert!(size_of::<T>() <= 16, "loom payloads are at most 16 bytes");
        Payload(Default::default(), core::marker::PhantomData)
    }

    pub(crate) fn store(&self, value: &T) {
        let mut bytes = [0u8; 16];
        bytes[..size_of::<T>()].copy_from_slice(value.as_bytes());
        for (i, word) in self.0.iter().enumerate() {
            let w = u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            // SYNC(seqlock): Relaxed, as the real payload.
            word.store(w, Ordering::Relaxed);
        }
    }

    pub(crate) fn load(&self) -> T {
        let mut bytes = [0u8; 16];
        for (i, word) in self.0.iter().enumerate() {
            // SYNC(seqlock): Relaxed, as the real payload.
            bytes[i * 8..i * 8 + 8].copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        T::read_from_bytes(&bytes[..size_of::<T>()]).expect("the size of T")
    }
}

/// A slot of a ring on the heap, as creation leaves it: stamp 0 (never written).
pub(crate) fn empty_slot<T: Message>() -> Slot<T> {
    Slot {
        stamp: AtomicU64::new(0),
        payload: Payload::new(),
    }
}

/// The bytes a broadcast ring of `capacity` slots of `T` for `subscribers` subscribers
/// needs after the segment header.
///
/// # Errors
///
/// [`Error::InvalidCapacity`] unless `capacity` is a power of two in `1..=MAX_CAPACITY`;
/// [`Error::InvalidParticipants`] unless `subscribers` is in `1..=MAX_SUBSCRIBERS`;
/// [`Error::UnsupportedAlignment`] if `T` is aligned to more than 128 bytes.
pub fn data_len<T: Message>(capacity: u64, subscribers: u32) -> Result<u64, Error> {
    check_shape::<T>(capacity)?;
    if subscribers == 0 || subscribers > MAX_SUBSCRIBERS {
        return Err(Error::InvalidParticipants(subscribers));
    }
    offsets::<Control, Line, Slot<T>>(subscribers + 1, capacity)
        .map(|o| o.len)
        .ok_or(Error::InvalidCapacity(capacity))
}

#[cfg(not(loom))]
pub(crate) use segment::BroadcastLayout;

#[cfg(not(loom))]
mod segment {
    use core::marker::PhantomData;

    use shm_alloc::Kind;
    use shm_sync::atomic::Ordering;

    use super::{Control, Line, Slot};
    use crate::broadcast::{MAX_SUBSCRIBERS, Overflow};
    use crate::core::attach::{Identity, Layout};
    use crate::core::check_shape;
    use crate::error::{Corruption, Error};
    use crate::message::Message;

    /// The layout of a broadcast ring segment: a control block, a table of the
    /// publisher's entry and `subscribers` subscriber lines, and slots of `T`.
    pub(crate) struct BroadcastLayout<T> {
        /// What a creator lays out.
        pub(crate) subscribers: u32,
        /// What an opener requires; `None`: any.
        pub(crate) expected: Option<u32>,
        /// What a creator records.
        pub(crate) overflow: Overflow,
        pub(crate) _message: PhantomData<fn() -> T>,
    }

    impl<T: Message> Layout for BroadcastLayout<T> {
        type Control = Control;
        type Entry = Line;
        type Slot = Slot<T>;

        fn identity(&self) -> Identity {
            Identity::of::<T>(Kind::Broadcast)
        }

        fn check_capacity(&self, capacity: u64) -> Result<(), Error> {
            check_shape::<T>(capacity)
        }

        fn entries(&self) -> Result<u32, Error> {
            if self.subscribers == 0 || self.subscribers > MAX_SUBSCRIBERS {
                return Err(Error::InvalidParticipants(self.subscribers));
            }
            Ok(self.subscribers + 1)
        }

        fn init(&self, control: &Control) {
            // Relaxed: published with the segment (its READY store).
            control
                .config
                .overflow
                .store(self.overflow.word(), Ordering::Relaxed);
        }

        fn opened_entries(&self, entries: u32) -> Result<u32, Error> {
            if !(2..=MAX_SUBSCRIBERS + 1).contains(&entries) {
                return Err(Error::Corrupted(Corruption::State {
                    word: "the participant entries of a broadcast ring",
                    found: entries,
                    expected: "2 to 1024 (the publisher and 1 to 1023 subscribers)",
                }));
            }
            match self.expected {
                Some(expected) if expected + 1 != entries => Err(Error::ParticipantsMismatch {
                    expected,
                    found: entries - 1,
                }),
                _ => Ok(entries),
            }
        }
    }
}
