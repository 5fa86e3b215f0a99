//! 128-byte cache padding with one layout for every process.

use core::fmt;
use core::ops::{Deref, DerefMut};

/// Pads and aligns a value to 128 bytes, so that two `CachePadded` values never share a
/// cache line, nor a pair of lines fetched together.
///
/// Shared-memory transports put the producer's and the consumer's fields in separate
/// `CachePadded` blocks; when both sides write the same line, every write invalidates
/// the other core's copy ("false sharing") and each message costs extra coherence
/// round trips.
///
/// # Size and alignment
///
/// The alignment is 128 bytes on **every** architecture, and the size is the size of `T`
/// rounded up to a multiple of 128 bytes. Why 128 and not the 64-byte line of x86_64:
/// since Sandy Bridge, Intel's spatial prefetcher pulls lines in pairs (128-byte
/// blocks), and Apple M-series and many aarch64 cores have 128-byte lines; crossbeam's
/// `CachePadded` uses 128 on x86_64 and aarch64 for these reasons. Unlike crossbeam, the
/// value does not vary by architecture: a structure in a mapped file must have one
/// layout in every process that maps it, whatever it was compiled for.
///
/// # Layout
///
/// `#[repr(C, align(128))]` with `T` as its only field: a pointer to a `CachePadded<T>`
/// is a pointer to the `T` it holds, at offset 0. The trailing padding bytes are never
/// read or written through this type.
///
/// # Examples
///
/// ```
/// use shm_sync::CachePadded;
/// use shm_sync::atomic::AtomicU64;
///
/// #[repr(C)]
/// struct Positions {
///     head: CachePadded<AtomicU64>, // written by the consumer
///     tail: CachePadded<AtomicU64>, // written by the producer
/// }
/// assert_eq!(core::mem::size_of::<Positions>(), 256);
/// assert_eq!(core::mem::offset_of!(Positions, tail), 128);
/// ```
#[repr(C, align(128))]
#[derive(Default, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    not(loom),
    derive(zerocopy::FromBytes, zerocopy::KnownLayout, zerocopy::Immutable)
)]
pub struct CachePadded<T> {
    value: T,
}

/// The alignment and size unit of [`CachePadded`], in bytes.
pub const CACHE_PAD: usize = 128;

const _: () = {
    assert!(core::mem::align_of::<CachePadded<u8>>() == CACHE_PAD);
    assert!(core::mem::size_of::<CachePadded<u8>>() == CACHE_PAD);
    assert!(core::mem::size_of::<CachePadded<u64>>() == CACHE_PAD);
    assert!(core::mem::size_of::<CachePadded<[u8; 129]>>() == 2 * CACHE_PAD);
    assert!(core::mem::offset_of!(CachePadded<u64>, value) == 0);
};

impl<T> CachePadded<T> {
    /// Pads and aligns `value` to 128 bytes.
    #[inline]
    pub const fn new(value: T) -> Self {
        Self { value }
    }

    /// Returns the inner value.
    #[inline]
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for CachePadded<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> From<T> for CachePadded<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: fmt::Debug> fmt::Debug for CachePadded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachePadded")
            .field("value", &self.value)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_128_bytes_apart() {
        let pair = [CachePadded::new(1u64), CachePadded::new(2u64)];
        let a = &*pair[0] as *const u64 as usize;
        let b = &*pair[1] as *const u64 as usize;
        assert_eq!(b - a, CACHE_PAD);
        assert_eq!(a % CACHE_PAD, 0);
        assert_eq!(*pair[1], 2);
    }

    #[test]
    fn deref_mut_and_into_inner() {
        let mut p = CachePadded::new(vec![1, 2]);
        p.push(3);
        assert_eq!(p.into_inner(), vec![1, 2, 3]);
    }
}
