//! shm-transport: a zero-copy shared-memory transport for low-latency systems on Linux.
//!
//! This facade re-exports the workspace's crates:
//!
//! - [`sync`] (`shm-sync`): cache padding, the shared futex, the event count, wait
//!   strategies and CPU pinning.
//! - [`alloc`] (`shm-alloc`): shared-memory segments and the cross-process allocator.
//! - [`ring`] (`shm-ring`): the lock-free rings.
//! - `bridge` (feature `zenoh`): rings bridged to other hosts through Zenoh.
//!
//! The `shm` command line tool lives in this package too.

pub use shm_alloc as alloc;
#[cfg(feature = "zenoh")]
pub mod bridge;
/// `#[message]` for users of this crate alone: as `shm_ring::message`, its expansion
/// naming `shm_transport::ring`.
pub use shm_derive::facade_message as message;
pub use shm_ring as ring;
pub use shm_sync as sync;

/// The quick starts of README.md, compiled and run as doc tests: every Rust block of
/// the README is one.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
