//! Shared memory itself: named, mapped segments, and a cross-process pool allocator that
//! names its chunks by offset.
//!
//! Built on [`shm_sync`]; the segment and the allocator follow the workspace's
//! `DESIGN.md` ("Segment header and attach protocol", "Zero-copy large payloads").
