//! One participant's activity counters, in the manner of Aeron's counters: each written
//! by its owner only, with plain relaxed stores (a load and a store, no
//! read-modify-write), on a cache line the owner already writes; read by anyone, from any
//! process, without attaching (`shm inspect`, `shm watch`).
//!
//! Only slow paths count (a full ring, a park, a wake-up), but for the per-participant
//! message count of a flavour whose positions cannot give it (MPMC): one store of a
//! count the handle keeps itself. The words are statistics, never synchronisation:
//! `shm_sync::atomic::Counter`, which the loom models do not interleave.

use shm_sync::Notified;
use shm_sync::atomic::Counter;

use super::blocking::Refusal;

/// One participant's counters: 32 bytes, `#[repr(C)]`, all-zero initially.
///
/// | offset | size | field | counts |
/// |---|---|---|---|
/// | 0 | 8 | `messages` | messages sent or received, where the flavour keeps it per participant (MPMC) |
/// | 8 | 8 | `stalls` | a sender's sends that found the ring full (a refused `try_` call; a blocking call that waited, once per call); a receiver's blocking receives that found it empty and waited (a `try_recv` on an empty ring is a poll, not counted) |
/// | 16 | 8 | `parks` | sleeps on the futex |
/// | 24 | 8 | `wakeups` | `FUTEX_WAKE` syscalls made for a parked peer |
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Activity {
    messages: Counter,
    stalls: Counter,
    parks: Counter,
    wakeups: Counter,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Activity>() == 32);

/// What one participant's activity counters held (see [`inspect`](crate::inspect)): a
/// snapshot, each word read once, so the four may mix moments. Each is written by its
/// participant alone, on its slow paths (a stall, a park, a wake-up), but for
/// `messages`, which MPMC handles store with each message; counts wrap at 2^64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(loom, allow(dead_code))]
pub struct Counts {
    /// Messages sent or received (the flavour's rows say which).
    pub messages: u64,
    /// Sends that found the ring full; blocking receives that found it empty and waited.
    pub stalls: u64,
    /// Sleeps on the futex.
    pub parks: u64,
    /// `FUTEX_WAKE` syscalls made for a parked peer.
    pub wakeups: u64,
}

impl Activity {
    /// Counts a stall.
    #[cold]
    pub(crate) fn stalled(&self) {
        self.stalls.add(1);
    }

    /// Counts a stall if `refusal` says the ring was full; returns it.
    #[inline]
    pub(crate) fn refused(&self, refusal: Refusal) -> Refusal {
        if refusal == Refusal::Busy {
            self.stalled();
        }
        refusal
    }

    /// Counts a park.
    #[cold]
    pub(crate) fn parked(&self) {
        self.parks.add(1);
    }

    /// Counts a wake-up syscall if `notified` says one was made; returns it.
    #[inline(always)]
    pub(crate) fn woke(&self, notified: Notified) -> Notified {
        if notified != Notified::Quiet {
            self.wakeups.add(1);
        }
        notified
    }

    /// Stores the owner's message count (kept by the handle: one store, no load).
    #[inline(always)]
    pub(crate) fn set_messages(&self, messages: u64) {
        self.messages.set(messages);
    }

    /// Zeroes every counter: for a participant that claims an entry another held.
    pub(crate) fn reset(&self) {
        for word in [&self.messages, &self.stalls, &self.parks, &self.wakeups] {
            word.set(0);
        }
    }

    /// A snapshot.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn counts(&self) -> Counts {
        // Each word read once: not a consistent set.
        Counts {
            messages: self.messages.get(),
            stalls: self.stalls.get(),
            parks: self.parks.get(),
            wakeups: self.wakeups.get(),
        }
    }
}
