//! The message types a typed ring can carry, and their fingerprint.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A type that can travel through a typed ring between processes.
///
/// The zerocopy bounds are checked by the compiler, not promised by the user: any bit
/// pattern a peer leaves in a slot is a valid value (`FromBytes`), a value has no padding
/// or uninitialised byte to leak (`IntoBytes`), and no interior mutability
/// (`Immutable`). So a buggy or hostile peer yields wrong values, never undefined
/// behaviour. `T` must not be larger-aligned than 128 bytes.
///
/// `TYPE_NAME` names the type across processes; with the size and the alignment it
/// makes the [`FINGERPRINT`](Message::FINGERPRINT) written in a segment's header, so a
/// consumer of another type is refused at attach time. Change the name (for example
/// with a version suffix) when the meaning of the bytes changes.
///
/// # Defining one: `#[message]`
///
/// One line: [`#[message]`](crate::message) adds `#[repr(C)]`, derives the zerocopy
/// traits through the zerocopy this crate re-exports (no zerocopy line in your
/// `Cargo.toml`), and implements `Message` with the type's path as its name, or the
/// name given:
///
/// ```
/// #[shm_ring::message(name = "example::Quote/v1")]
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// struct Quote { instrument: u32, side: u32, price: i64, quantity: u64 }
///
/// use shm_ring::Message;
/// assert_eq!(Quote::TYPE_NAME, "example::Quote/v1");
/// let (mut tx, mut rx) = shm_ring::spsc::channel::<Quote>(8)?;
/// let quote = Quote { instrument: 7, side: 1, price: -3, quantity: 100 };
/// tx.send(quote).unwrap();
/// assert_eq!(rx.recv().unwrap(), quote);
/// # Ok::<(), shm_ring::Error>(())
/// ```
///
/// Without a name, the type's path (`module_path!()` and its name) is the name:
///
/// ```
/// mod feed {
///     #[shm_ring::message]
///     pub struct Tick { pub seq: u64 }
/// }
/// use shm_ring::Message;
/// assert!(feed::Tick::TYPE_NAME.ends_with("::feed::Tick"));
/// ```
///
/// Refused, each with a compile error that says why: a `bool` (a peer may write any
/// byte, and a `bool` other than 0 or 1 is undefined behaviour),
///
/// ```compile_fail
/// #[shm_ring::message]
/// struct Order { id: u64, buy: bool }
/// ```
///
/// a pointer or a reference (an address means nothing in another process),
///
/// ```compile_fail
/// #[shm_ring::message]
/// struct Order { id: u64, note: *const u8 }
/// ```
///
/// ```compile_fail
/// #[shm_ring::message]
/// struct Order { id: u64, note: &'static str }
/// ```
///
/// padding (a peer would read bytes nobody wrote; `E0080`: the size assertion fails),
///
/// ```compile_fail,E0080
/// #[shm_ring::message]
/// struct Order { side: u8, id: u64 }
/// ```
///
/// an enum (a peer may write a discriminant no variant has), heap memory, and a `char`:
///
/// ```compile_fail
/// #[shm_ring::message]
/// enum Side { Buy, Sell }
/// ```
///
/// ```compile_fail
/// #[shm_ring::message]
/// struct Order { id: u64, note: Box<u64> }
/// ```
///
/// ```compile_fail
/// #[shm_ring::message]
/// struct Order { id: u64, code: char }
/// ```
///
/// The same struct with explicit padding is accepted:
///
/// ```
/// #[shm_ring::message]
/// struct Order { side: u8, _pad: [u8; 7], id: u64 }
/// ```
///
/// # By hand
///
/// ```
/// use shm_ring::Message;
/// use shm_ring::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy)]
/// #[repr(C)]
/// struct Quote { instrument: u32, side: u32, price: i64, quantity: u64 }
///
/// impl Message for Quote {
///     const TYPE_NAME: &'static str = "example::Quote/v1";
/// }
/// assert_ne!(Quote::FINGERPRINT, u64::FINGERPRINT);
/// ```
pub trait Message: FromBytes + IntoBytes + Immutable + KnownLayout + Sized {
    /// A name for the type, stable across builds and processes (not `type_name`, which
    /// Rust does not keep stable).
    const TYPE_NAME: &'static str;

    /// FNV-1a (64-bit) over the name, the size and the alignment, in bytes.
    const FINGERPRINT: u64 = fingerprint(Self::TYPE_NAME, size_of::<Self>(), align_of::<Self>());
}

/// FNV-1a, 64-bit (Fowler, Noll, Vo), over `name`, then `size` and `align` as
/// little-endian `u64`s. Stable: it is written into segment headers.
pub const fn fingerprint(name: &str, size: usize, align: usize) -> u64 {
    let hash = fnv1a(FNV_OFFSET, name.as_bytes());
    let hash = fnv1a(hash, &(size as u64).to_le_bytes());
    fnv1a(hash, &(align as u64).to_le_bytes())
}

pub(crate) use shm_alloc::hash::{FNV_OFFSET, fnv1a};

macro_rules! primitive_messages {
    ($($t:ty),*) => {$(
        impl Message for $t {
            const TYPE_NAME: &'static str = stringify!($t);
        }
    )*};
}

primitive_messages!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

/// A pool chunk's name: 16 bytes, sent through a ring in place of the payload.
#[cfg(not(loom))]
impl Message for shm_alloc::ShmOffset {
    const TYPE_NAME: &'static str = "shm_alloc::ShmOffset/v1";
}

impl<T: Message, const N: usize> Message for [T; N] {
    const TYPE_NAME: &'static str = "array";
    /// The element's fingerprint, mixed with the length and the element's size.
    const FINGERPRINT: u64 = {
        let hash = fingerprint("array", size_of::<Self>(), align_of::<Self>());
        fnv1a(hash, &T::FINGERPRINT.to_le_bytes())
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_differ_by_name_size_and_length() {
        assert_ne!(u64::FINGERPRINT, i64::FINGERPRINT);
        assert_ne!(u64::FINGERPRINT, u32::FINGERPRINT);
        assert_ne!(<[u8; 8]>::FINGERPRINT, <[u8; 16]>::FINGERPRINT);
        assert_ne!(<[u8; 8]>::FINGERPRINT, <[i8; 8]>::FINGERPRINT);
        assert_ne!(<[u8; 8]>::FINGERPRINT, u64::FINGERPRINT);
    }

    /// The fingerprints every header of an existing segment carries: a change to the
    /// hash, its byte order or the fields it covers breaks attaching to those segments,
    /// so it must be a deliberate one (and bump the layout version).
    #[test]
    fn fingerprints_are_pinned() {
        assert_eq!(u64::FINGERPRINT, GOLDEN_U64);
        assert_eq!(<[u8; 64]>::FINGERPRINT, GOLDEN_ARRAY);
        assert_eq!(fingerprint("demo::Tick", 24, 8), GOLDEN_TICK);
    }

    const GOLDEN_U64: u64 = 0xaf4c_548b_cc96_4472;
    const GOLDEN_ARRAY: u64 = 0xd8b9_4601_63d3_04d7;
    const GOLDEN_TICK: u64 = 0x3731_9956_2829_c32f;

    #[test]
    fn fingerprint_is_fnv1a() {
        // FNV-1a of the empty input is the offset basis; of "a" a published test vector.
        let empty_tail = fingerprint("", 0, 0);
        assert_ne!(empty_tail, 0xcbf2_9ce4_8422_2325);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        hash = (hash ^ u64::from(b'a')).wrapping_mul(0x0000_0100_0000_01b3);
        assert_eq!(hash, 0xaf63_dc4c_8601_ec8c);
    }
}
