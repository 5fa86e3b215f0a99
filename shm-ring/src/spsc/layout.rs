//! The SPSC ring's control block and session words, and its segment layout.

use shm_sync::atomic::{AtomicU32, AtomicU64};
use shm_sync::cell::UnsafeCell;
use shm_sync::{CachePadded, EventCount};

use crate::core::activity::Activity;
use crate::core::check_shape;
use crate::core::region::offsets;
use crate::error::Error;
use crate::message::Message;

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
pub(crate) const ABSENT: u32 = 0;
pub(crate) const ATTACHED: u32 = 1;
pub(crate) const CLOSED: u32 = 2;
pub(crate) const STATE_MASK: u32 = 0b11;
pub(crate) const GENERATION_ONE: u32 = 0b100;

/// The control block at the start of a ring's region.
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
/// | 640 | 128 | `producer_activity`: stalls, parks, wake-ups (`core::activity`; its message count stays 0: `tail` is it) | the producer, on its slow paths |
/// | 768 | 128 | `consumer_activity`: likewise (`head` is its message count) | the consumer, on its slow paths |
///
/// The slots follow at offset 896 (a multiple of 128), `capacity` times `size_of::<T>()`
/// bytes; there is no participant table. All-zero is the initial state: empty, nobody
/// attached.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) tail: CachePadded<AtomicU64>,
    pub(crate) head: CachePadded<AtomicU64>,
    pub(crate) session: CachePadded<Session>,
    pub(crate) not_empty: CachePadded<EventCount>,
    pub(crate) not_full: CachePadded<EventCount>,
    pub(crate) producer_activity: CachePadded<Activity>,
    pub(crate) consumer_activity: CachePadded<Activity>,
}

/// The two sides' session words.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Session {
    pub(crate) producer: AtomicU32,
    pub(crate) consumer: AtomicU32,
}

/// The size of [`Control`]: where the slots begin, in bytes.
#[cfg(not(loom))]
const CONTROL_LEN: usize = 896;

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<Control>() == CONTROL_LEN);
    assert!(core::mem::offset_of!(Control, head) == 128);
    assert!(core::mem::offset_of!(Control, session) == 256);
    assert!(core::mem::offset_of!(Control, not_empty) == 384);
    assert!(core::mem::offset_of!(Control, not_full) == 512);
    assert!(core::mem::offset_of!(Control, producer_activity) == 640);
    assert!(core::mem::offset_of!(Control, consumer_activity) == 768);
};

/// A slot: the message, written and read in place.
pub(crate) type Slot<T> = UnsafeCell<T>;

/// The bytes a ring of `capacity` slots of `T` needs after the segment header.
///
/// # Errors
///
/// [`Error::InvalidCapacity`] unless `capacity` is a power of two in
/// `1..=MAX_CAPACITY`, [`Error::UnsupportedAlignment`] if `T` is aligned to more than 128
/// bytes.
pub fn data_len<T: Message>(capacity: u64) -> Result<u64, Error> {
    check_shape::<T>(capacity)?;
    offsets::<Control, (), Slot<T>>(0, capacity)
        .map(|o| o.len)
        .ok_or(Error::InvalidCapacity(capacity))
}

#[cfg(not(loom))]
pub(crate) use segment::SpscLayout;

#[cfg(not(loom))]
mod segment {
    use core::marker::PhantomData;

    use super::{Control, Slot};
    use crate::core::attach::{Identity, Layout};
    use crate::core::check_shape;
    use crate::error::Error;
    use crate::message::Message;

    /// The layout of an SPSC ring segment: a control block and slots of `T`, under the
    /// identity given (kind `spsc` and `T`, or another kind built on this ring).
    pub(crate) struct SpscLayout<T> {
        pub(crate) identity: Identity,
        /// The smallest capacity accepted (1, or more for a ring that needs room).
        pub(crate) min_capacity: u64,
        pub(crate) _message: PhantomData<fn() -> T>,
    }

    impl<T: Message> Layout for SpscLayout<T> {
        type Control = Control;
        type Entry = ();
        type Slot = Slot<T>;

        fn identity(&self) -> Identity {
            self.identity
        }

        fn check_capacity(&self, capacity: u64) -> Result<(), Error> {
            // A plain SPSC ring's minimum is 1, which `check_shape` enforces; a flavour
            // built on it with a larger one says so.
            if capacity < self.min_capacity && self.min_capacity > 1 {
                return Err(Error::CapacityTooSmall {
                    found: capacity,
                    min: self.min_capacity,
                });
            }
            check_shape::<T>(capacity)
        }
    }
}
