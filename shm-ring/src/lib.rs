//! Lock-free rings in shared-memory segments: one producer and one consumer (`spsc`),
//! many of each (`mpmc`), and variable-size frames (`stream`).
//!
//! Built on [`shm_sync`] and `shm-alloc`'s segments.
