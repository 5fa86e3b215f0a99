//! The atomics every crate of the workspace uses, instead of `core::sync::atomic`.
//!
//! Each type is a `#[repr(transparent)]` wrapper: in a normal build around `core`'s
//! atomic (same size, alignment and bit validity, so it can sit in a mapped file), and
//! under `--cfg loom` around loom's, so the same source runs inside loom's model checker.
//! `clippy.toml` forbids `core`'s types and `fence` everywhere else (`disallowed-types`,
//! `disallowed-methods`), so no access escapes the models by accident.
//!
//! The module also routes [`fence`] and [`spin_loop`], which loom must see as well.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub use core::sync::atomic::Ordering;

#[cfg(not(loom))]
use core::sync::atomic as imp;
#[cfg(loom)]
use loom::sync::atomic as imp;

macro_rules! atomic_int {
    ($(#[$doc:meta])* $name:ident, $int:ty) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Debug, Default)]
        pub struct $name(imp::$name);

        impl $name {
            /// A new atomic holding `value`.
            #[cfg(not(loom))]
            #[inline]
            pub const fn new(value: $int) -> Self {
                Self(imp::$name::new(value))
            }

            /// A new atomic holding `value` (loom's atomics have no `const fn new`).
            #[cfg(loom)]
            pub fn new(value: $int) -> Self {
                Self(imp::$name::new(value))
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn load(&self, order: Ordering) -> $int {
                self.0.load(order)
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn store(&self, value: $int, order: Ordering) {
                self.0.store(value, order)
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn swap(&self, value: $int, order: Ordering) -> $int {
                self.0.swap(value, order)
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange(current, new, success, failure)
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn compare_exchange_weak(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange_weak(current, new, success, failure)
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn fetch_add(&self, value: $int, order: Ordering) -> $int {
                self.0.fetch_add(value, order)
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn fetch_sub(&self, value: $int, order: Ordering) -> $int {
                self.0.fetch_sub(value, order)
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn fetch_or(&self, value: $int, order: Ordering) -> $int {
                self.0.fetch_or(value, order)
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn fetch_and(&self, value: $int, order: Ordering) -> $int {
                self.0.fetch_and(value, order)
            }

            /// See `core::sync::atomic`.
            #[inline(always)]
            pub fn fetch_max(&self, value: $int, order: Ordering) -> $int {
                self.0.fetch_max(value, order)
            }
        }
    };
}

atomic_int!(
    /// An atomic `u8`, loom's under `cfg(loom)`.
    AtomicU8, u8
);
atomic_int!(
    /// An atomic `u32`, loom's under `cfg(loom)`: the futex word type.
    AtomicU32, u32
);
atomic_int!(
    /// An atomic `u64`, loom's under `cfg(loom)`: ring positions and sequences.
    AtomicU64, u64
);

/// A statistics counter in shared memory with one writer, in the manner of Aeron's
/// counters: `core`'s `AtomicU64` in every build, loom's included, since it orders
/// nothing and a model need not interleave it (its words would only multiply the
/// interleavings). The writer adds with a relaxed load and store, no read-modify-write
/// (one writer: nothing to lose); readers in any process load it relaxed and see a
/// recent value, never a torn one. 8 bytes, `#[repr(transparent)]`, zero initially.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct Counter(core::sync::atomic::AtomicU64);

impl Counter {
    /// Adds `n` (wrapping): for the counter's one writer.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        // Relaxed: a statistic; readers want a recent value, not an order.
        self.set(self.get().wrapping_add(n));
    }

    /// Stores `value`: for the counter's one writer.
    #[inline(always)]
    pub fn set(&self, value: u64) {
        // Relaxed: as in `add`.
        self.0.store(value, Ordering::Relaxed);
    }

    /// The value now.
    #[inline(always)]
    #[must_use]
    pub fn get(&self) -> u64 {
        // Relaxed: as in `add`.
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(not(loom))]
impl AtomicU32 {
    /// The `core` atomic inside, for the futex syscalls.
    #[inline(always)]
    pub(crate) fn as_core(&self) -> &core::sync::atomic::AtomicU32 {
        &self.0
    }
}

/// An atomic `bool`, loom's under `cfg(loom)`.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct AtomicBool(imp::AtomicBool);

impl AtomicBool {
    /// A new atomic holding `value`.
    #[cfg(not(loom))]
    #[inline]
    pub const fn new(value: bool) -> Self {
        Self(imp::AtomicBool::new(value))
    }

    /// A new atomic holding `value` (loom's atomics have no `const fn new`).
    #[cfg(loom)]
    pub fn new(value: bool) -> Self {
        Self(imp::AtomicBool::new(value))
    }

    /// See `core::sync::atomic`.
    #[inline(always)]
    pub fn load(&self, order: Ordering) -> bool {
        self.0.load(order)
    }

    /// See `core::sync::atomic`.
    #[inline(always)]
    pub fn store(&self, value: bool, order: Ordering) {
        self.0.store(value, order)
    }

    /// See `core::sync::atomic`.
    #[inline(always)]
    pub fn swap(&self, value: bool, order: Ordering) -> bool {
        self.0.swap(value, order)
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<AtomicU32>() == 4 && align_of::<AtomicU32>() == 4);
    assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);
    assert!(size_of::<AtomicU8>() == 1 && size_of::<AtomicBool>() == 1);
};

/// A memory fence (`core::sync::atomic::fence`, or loom's).
#[inline(always)]
pub fn fence(order: Ordering) {
    imp::fence(order)
}

/// Tells the CPU this is a busy-wait loop (`pause` on x86_64, `yield` on aarch64); under
/// loom, yields to the model's scheduler so that spinning threads let others progress.
#[inline(always)]
pub fn spin_loop() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
