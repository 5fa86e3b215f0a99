//! Cross-process synchronisation primitives for shared-memory transports.
//!
//! Everything here knows nothing of rings; `shm-alloc` and `shm-ring` build on it.
//!
//! - [`CachePadded`]: one 128-byte padding for every structure placed in a mapping.
//! - [`futex`]: wait and wake on an [`atomic::AtomicU32`] that may live in a `MAP_SHARED`
//!   mapping (the shared, never the private, futex).
//! - [`EventCount`]: lets a notifier skip the `FUTEX_WAKE` syscall when nobody sleeps
//!   (after Folly's `EventCount`).
//! - [`asymmetric`]: a fence that costs the per-message side nothing, paid for by a
//!   `membarrier(2)` on the side about to sleep.
//! - [`WaitStrategy`]: busy-spin, yield, spin-then-park and park, all with deadlines.
//! - [`affinity`]: pinning, the allowed cores, the cache topology from sysfs, and a
//!   recommended producer/consumer core pair.
//! - [`atomic`] and [`cell`]: the atomics and `UnsafeCell` every crate of the workspace
//!   uses; loom's under `cfg(loom)`.
//!
//! Linux only: the futex and the sysfs topology are Linux interfaces.
#![warn(clippy::undocumented_unsafe_blocks, clippy::unnecessary_safety_comment)]

#[cfg(not(loom))]
pub mod affinity;
pub mod asymmetric;
pub mod atomic;
mod cache_padded;
pub mod cell;
mod error;
pub mod event_count;
pub mod futex;
mod retry;
pub mod wait;

pub use cache_padded::{CACHE_PAD, CachePadded};
pub use error::Error;
pub use event_count::{EventCount, Notified, Waiting};
pub use retry::{RETRY_LIMIT, Retries};
pub use wait::{TimedOut, WaitStrategy};
