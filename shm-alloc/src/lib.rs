//! Shared memory itself: named, mapped segments, and a cross-process pool allocator that
//! names its chunks by offset.
//!
//! Built on [`shm_sync`]; the segment and the allocator follow the workspace's
//! `DESIGN.md` ("Segment header and attach protocol", "Roles and liveness", "Zero-copy
//! large payloads").
//!
//! - [`Segment`]: a file (under `/dev/shm` for a [`Location::Name`], or any path) mapped
//!   in full: a 4096-byte header that the creator publishes last and every opener
//!   validates field by field, then a data region for the structure built on top.
//! - [`RoleClaim`]: a role of a segment (the producer, consumer `k`, process slot `k`),
//!   held through an open-file-description lock that the kernel drops when the holder
//!   dies, so that liveness checks ([`Segment::role_alive`]) are immune to pid reuse.
//! - [`participants`]: the participant table of a segment (MPMC handles, pool users):
//!   claim the first free entry by lock, settle a dead holder's entry exactly once, free.
//! - [`pool`]: size classes of chunks in a segment, loaned by one process, sent as a
//!   [`ShmOffset`] through a ring, read in place by another, and
//!   reclaimed when their holder dies.
//! - [`Error`]: every failure, naming the path, the field, and what was expected and
//!   found.
//!
//! Linux only: OFD locks, `/proc/self/fd`, `MAP_POPULATE` and hugetlbfs are Linux
//! interfaces.
#![warn(clippy::undocumented_unsafe_blocks, clippy::unnecessary_safety_comment)]

#[cfg(not(loom))]
mod error;
pub mod hash;
#[cfg(not(loom))]
pub mod header;
pub mod owner;
pub mod participants;
#[cfg(not(loom))]
pub mod pool;
#[cfg(not(loom))]
pub mod segment;

#[cfg(not(loom))]
pub use error::Error;
#[cfg(not(loom))]
pub use pool::{LoanedChunk, Pool, Readers, Sample, SharedSample, ShmOffset};
#[cfg(not(loom))]
pub use segment::{
    Expect, HeaderInfo, Kind, LAYOUT_VERSION, Location, MAX_ROLES, RoleClaim, Segment,
    SegmentOptions, SegmentSpec, Survey, SurveyState, UnknownKind,
};
