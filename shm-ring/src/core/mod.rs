//! What every ring flavour needs, once: the memory a ring lives in ([`region`]), whether
//! its peers live ([`liveness`]), how a call waits and how its refusals become each
//! operation's error ([`blocking`]), and how a segment is created, opened and checked
//! ([`attach`]). How far a loop over shared words may go round is `shm_sync::Retries`.
//!
//! A flavour (`spsc`, `mpmc`, ...) is its algorithm over a [`Region`](region::Region):
//! its control block, its participant entries and its slots, each a `#[repr(C)]` type of
//! its own, laid out by the region in the same way on the heap and in a segment.

pub(crate) mod activity;
#[cfg(not(loom))]
pub(crate) mod attach;
pub(crate) mod blocking;
pub(crate) mod liveness;
pub(crate) mod members;
pub(crate) mod region;

use crate::error::Error;
use crate::message::Message;

/// The capacity of a ring whose builder was given none: 1024 slots.
pub const DEFAULT_CAPACITY: u64 = 1024;

/// The largest capacity, in slots: 2^32 (positions are `u64`, slot indexes fit a `u32`).
pub const MAX_CAPACITY: u64 = 1 << 32;

/// The largest participant table (MPMC handles, broadcast subscribers): one role byte of
/// the segment header per participant.
pub const MAX_PARTICIPANTS: u32 = 1024;

#[cfg(not(loom))]
const _: () = assert!(MAX_PARTICIPANTS == shm_alloc::MAX_ROLES);

/// Checks a ring's capacity and its message type's alignment.
///
/// # Errors
///
/// [`Error::InvalidCapacity`] unless `capacity` is a power of two in `1..=MAX_CAPACITY`;
/// [`Error::UnsupportedAlignment`] if `T` is aligned to more than a 128-byte block.
pub(crate) fn check_shape<T: Message>(capacity: u64) -> Result<(), Error> {
    if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
        return Err(Error::InvalidCapacity(capacity));
    }
    if align_of::<T>() > shm_sync::CACHE_PAD {
        return Err(Error::UnsupportedAlignment(align_of::<T>()));
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

    use super::{MAX_CAPACITY, check_shape};
    use crate::error::Error;
    use crate::message::Message;

    #[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C, align(128))]
    struct Line([u8; 128]);

    impl Message for Line {
        const TYPE_NAME: &'static str = "core-tests::Line/v1";
    }

    #[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C, align(256))]
    struct Wide([u8; 256]);

    impl Message for Wide {
        const TYPE_NAME: &'static str = "core-tests::Wide/v1";
    }

    /// A message aligned to a whole 128-byte block is laid out; one aligned past it is
    /// refused with its alignment.
    #[test]
    fn alignment_up_to_a_128_byte_block() {
        assert!(check_shape::<Line>(4).is_ok());
        assert!(matches!(
            check_shape::<Wide>(4),
            Err(Error::UnsupportedAlignment(256))
        ));
    }

    /// Every power of two up to `MAX_CAPACITY` is a capacity, that one included; nothing
    /// above it, and no other number.
    #[test]
    fn capacities_are_powers_of_two_up_to_the_largest() {
        for capacity in [1, 2, 1024, MAX_CAPACITY / 2, MAX_CAPACITY] {
            assert!(check_shape::<u8>(capacity).is_ok(), "{capacity}");
        }
        for capacity in [
            0,
            3,
            1000,
            MAX_CAPACITY - 1,
            MAX_CAPACITY + 1,
            MAX_CAPACITY * 2,
        ] {
            assert!(
                matches!(check_shape::<u8>(capacity), Err(Error::InvalidCapacity(c)) if c == capacity),
                "{capacity}"
            );
        }
    }
}
