//! Lock-free rings in shared-memory segments.
//!
//! - [`spsc`]: typed, one producer and one consumer, in one process or two.
//! - [`mpmc`]: typed, any number of producers and consumers in any number of processes,
//!   each message received once; a participant that dies mid-message is passed over.
//! - [`broadcast`]: typed, one publisher and many subscribers in any processes, each
//!   receiving every message; the publisher laps slow subscribers (who are told how many
//!   messages they lost) or waits for them, as chosen at creation.
//! - [`stream`]: variable-size byte frames, one producer and one consumer, each frame
//!   contiguous in place (Aeron's record layout), over the SPSC ring's chunk API.
//! - [`loan`]: pool chunks through any of the typed rings, written and read in place.
//! - [`wait_set`]: one thread waiting on up to 128 handles of any flavour at once
//!   ([`WaitSet`]), in one `futex_waitv`.
//! - [`reactor`]: any handle awaited from any executor ([`Async`]: `recv().await`,
//!   `send(v).await`, a `Stream`), woken by one reactor thread per process.
//!
//! Every flavour is its algorithm over the crate's `core`: the region a ring lives in
//! (heap or segment), liveness probes, one blocking loop, and one attach protocol.
//!
//! Messages are [`Message`] types: plain bytes checked by zerocopy, so a peer can never
//! cause undefined behaviour by what it writes into a slot. Rings live in
//! `shm_alloc::Segment`s (a mapped file with a validated header and OFD-locked roles);
//! blocking calls wait with a `shm_sync::WaitStrategy` and wake sleepers through
//! `shm_sync::EventCount`s, so a busy-polling peer costs no syscall.
#![warn(clippy::undocumented_unsafe_blocks, clippy::unnecessary_safety_comment)]

#[cfg(not(loom))]
pub mod bridge;
pub mod broadcast;
mod core;
mod error;
#[cfg(not(loom))]
pub mod inspect;
#[cfg(not(loom))]
pub mod loan;
mod message;
pub mod mpmc;
#[cfg(not(loom))]
pub mod reactor;
#[cfg(not(loom))]
pub mod request_response;
/// The call-slot protocol alone, for its loom model.
#[cfg(loom)]
#[path = "request_response/calls.rs"]
mod request_response_calls;
pub mod spsc;
#[cfg(not(loom))]
pub mod stream;
pub mod wait_set;

#[cfg(not(loom))]
pub use crate::core::attach::OpenMode;
pub use error::{
    Corruption, Error, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};
pub use message::{Message, fingerprint};
#[cfg(not(loom))]
pub use reactor::{Async, AsyncRecv, AsyncSend};
pub use shm_derive::message;
pub use wait_set::{WaitSet, WaitSetError, Waitable};
/// The zerocopy this crate's message types are checked with, for `#[message]`'s
/// expansion and for code that names its traits: no zerocopy line of your own needed.
pub use zerocopy;
