//! `UnsafeCell` for data shared between threads or processes, loom's under `cfg(loom)`.
//!
//! The closure API of loom's `UnsafeCell` (as in tokio's `loom` shim), so one source
//! serves both builds and loom checks every slot access of a model for races.
#![allow(clippy::disallowed_types)]

/// A `core::cell::UnsafeCell<T>` (`#[repr(transparent)]`: same layout as `T`, so an
/// array of them can be laid over a mapped slot array), or loom's under `cfg(loom)`.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct UnsafeCell<T>(Inner<T>);

#[cfg(not(loom))]
type Inner<T> = core::cell::UnsafeCell<T>;
#[cfg(loom)]
type Inner<T> = loom::cell::UnsafeCell<T>;

impl<T> UnsafeCell<T> {
    /// A new cell holding `value`.
    #[cfg(not(loom))]
    #[inline]
    pub const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// A new cell holding `value`.
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self(loom::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a pointer for reading the value. Under loom, the access is checked
    /// against concurrent writes.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(not(loom))]
        return f(self.0.get());
        #[cfg(loom)]
        return self.0.with(f);
    }

    /// Calls `f` with a pointer for writing the value. Under loom, the access is checked
    /// against any concurrent access.
    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        return f(self.0.get());
        #[cfg(loom)]
        return self.0.with_mut(f);
    }
}
