//! Waiting on many rings at once: a [`WaitSet`] blocks one thread until any of up to 128
//! handles of any flavour is ready: a consumer with a message, a producer with room, a
//! server with a request, a pending call with its response (see [`Waitable`] for the
//! list).
//!
//! # Protocol
//!
//! [`WaitSet::wait`] polls every handle's readiness (no syscall, no shared write when one
//! is ready), spins for its wait strategy's spin phase, then announces itself as a waiter
//! on every handle's event count, with one heavy fence for all of them, re-checks every
//! handle, and only then sleeps on all the event counts' futex words in one
//! `futex_waitv` (Linux 5.16): the event count protocol of `shm_sync::EventCount` over
//! several event counts ([`EventCount::prepare_wait_any`], whose loom model
//! `no_lost_wakeup_over_two_event_counts` shows that no wake-up is lost). A notifier of
//! any of them wakes it; it withdraws every announcement and polls again.
//!
//! The select loops of Go and crossbeam-channel's `Select` do the same over in-process
//! channels, registering a waker with each; here the "registration" is the waiter count
//! of each ring's event count in shared memory, so that producers in other processes
//! wake it.
//!
//! # Examples
//!
//! ```
//! use shm_ring::{spsc, WaitSet, Waitable};
//! use std::time::{Duration, Instant};
//!
//! let (mut tx_a, mut rx_a) = spsc::channel::<u64>(8)?;
//! let (mut tx_b, mut rx_b) = spsc::channel::<u64>(8)?;
//! tx_b.send(7).unwrap();
//! let mut set = WaitSet::new();
//! let deadline = Instant::now() + Duration::from_secs(1);
//! let ready = set.wait(&mut [&mut rx_a as &mut dyn Waitable, &mut rx_b], Some(deadline))?;
//! assert_eq!(ready, [1]);
//! assert_eq!(rx_b.try_recv(), Ok(7));
//! # drop(tx_a);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Instant;

use shm_sync::atomic::spin_loop;
use shm_sync::event_count::WaitKey;
use shm_sync::futex::{WAIT_ANY_MAX, WaitAnyError, WaitAnyOutcome};
use shm_sync::wait::SPINS_PER_CLOCK_READ;
use shm_sync::{EventCount, WaitStrategy, Waiting};

use crate::core::blocking::slice_deadline;

/// A handle a [`WaitSet`] (or an async task, see [`Async`](crate::Async)) can wait on: every
/// consumer and producer of every flavour, a request/response server, a client (for
/// room to send), and a pending call (for its response).
///
/// Sealed: implemented by this crate's handles only.
pub trait Waitable: sealed::Sealed {
    /// Whether this handle's next non-blocking call (`try_recv`, `try_send`, ...) would
    /// not be refused as empty or full: a message is there (a consumer), a slot is free
    /// (a producer), or the call would fail at once (the peer is gone, the ring is
    /// corrupt). Makes no syscall unless `probe`, which asks to probe the peers'
    /// liveness locks now (a waiter does it every
    /// [`LIVENESS_PERIOD`](crate::spsc::LIVENESS_PERIOD) while it waits, so that a dead peer
    /// is seen).
    ///
    /// A hint where a ring has several consumers (or producers): another one may take
    /// the message (or the slot) first, and the call then finds the ring empty (full).
    /// For a stream producer, "ready" is some room, maybe less than a large frame needs.
    fn ready(&mut self, probe: bool) -> bool;

    /// The event count that whoever makes this handle ready notifies afterwards, and
    /// this handle's parking mark on it, if it has one (a participant that others settle
    /// when it dies parked).
    fn wake_event(&self) -> Waiting<'_>;

    /// Whether a waiter must wake every [`LIVENESS_PERIOD`](crate::spsc::LIVENESS_PERIOD)
    /// to probe: the handle's peers can die without leaving (its ring is in a segment),
    /// or time itself changes its readiness (a `Block` publisher that untethers a
    /// subscriber after a while).
    fn peers_may_die(&self) -> bool;
}

pub(crate) mod sealed {
    /// What keeps a handle's shared memory mapped while a reactor thread reads its event
    /// count's futex word: a clone of the handle's region, never used otherwise.
    pub struct KeepAlive(#[allow(dead_code)] pub(crate) Box<dyn Send + Sync>);

    impl core::fmt::Debug for KeepAlive {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("KeepAlive")
        }
    }

    /// Seals [`Waitable`](super::Waitable), and gives the reactor the region to keep.
    pub trait Sealed {
        /// A keep-alive of the memory [`wake_event`](super::Waitable::wake_event) lives in.
        fn keep_alive(&self) -> KeepAlive;
    }
}

impl<W: Waitable + ?Sized> sealed::Sealed for &mut W {
    fn keep_alive(&self) -> sealed::KeepAlive {
        (**self).keep_alive()
    }
}

impl<W: Waitable + ?Sized> Waitable for &mut W {
    fn ready(&mut self, probe: bool) -> bool {
        (**self).ready(probe)
    }

    fn wake_event(&self) -> Waiting<'_> {
        (**self).wake_event()
    }

    fn peers_may_die(&self) -> bool {
        (**self).peers_may_die()
    }
}

/// Why [`WaitSet::wait`] returned no ready handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WaitSetError {
    /// The deadline passed and no handle was ready at a last poll after it.
    #[error("the deadline passed with no handle ready")]
    Timeout,
    /// No handle, or more than [`WAIT_ANY_MAX`] (the kernel's `futex_waitv` limit).
    #[error("a wait set waits on 1 to {WAIT_ANY_MAX} handles, found {0}")]
    Count(usize),
    /// The kernel has no `futex_waitv` (Linux 5.16 added it): a wait set can only
    /// spin here (`WaitStrategy::BusySpin` or `Yield`).
    #[error(
        "this kernel has no futex_waitv (it needs Linux 5.16 or later): use a spinning wait strategy"
    )]
    Unsupported,
}

/// Blocks one thread until any of several handles is ready. See the [module
/// docs](self) for the protocol.
///
/// Holds no handle: each [`wait`](Self::wait) is given the handles to wait on (up to
/// [`WAIT_ANY_MAX`], any flavours, as `&mut [&mut dyn Waitable]` or a slice of one
/// type) and returns the indexes of the ready ones; the caller then makes their
/// non-blocking calls. Reuse one `WaitSet` to keep its buffers.
#[derive(Debug)]
pub struct WaitSet {
    wait: WaitStrategy,
    keys: Vec<WaitKey>,
    ready: Vec<usize>,
    sleeps: u64,
}

impl Default for WaitSet {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitSet {
    /// A wait set with the default wait strategy (spin 30 us, then sleep).
    #[must_use]
    pub fn new() -> Self {
        Self::with_wait_strategy(WaitStrategy::default())
    }

    /// A wait set that waits with `wait`: `BusySpin` and `Yield` poll every handle in a
    /// loop, `SpinThenPark` polls for its spin phase then sleeps, `Park` sleeps at once.
    #[must_use]
    pub fn with_wait_strategy(wait: WaitStrategy) -> Self {
        WaitSet {
            wait,
            keys: Vec::new(),
            ready: Vec::new(),
            sleeps: 0,
        }
    }

    /// How many times this wait set slept in `futex_waitv` (a syscall each).
    #[must_use]
    pub fn sleeps(&self) -> u64 {
        self.sleeps
    }

    /// Waits until at least one of `handles` is [ready](Waitable::ready), or until
    /// `deadline` (absolute, monotonic; `None`: forever); returns the indexes of the
    /// ready handles, in increasing order. Returns at once, with no syscall, when one is
    /// ready already.
    ///
    /// # Errors
    ///
    /// [`WaitSetError::Timeout`] when the deadline passes first (never earlier);
    /// [`WaitSetError::Count`] for no handle or more than [`WAIT_ANY_MAX`];
    /// [`WaitSetError::Unsupported`] when it must sleep on a kernel before 5.16.
    pub fn wait<W: Waitable>(
        &mut self,
        handles: &mut [W],
        deadline: Option<Instant>,
    ) -> Result<&[usize], WaitSetError> {
        if handles.is_empty() || handles.len() > WAIT_ANY_MAX {
            return Err(WaitSetError::Count(handles.len()));
        }
        if self.collect(handles, false) {
            return Ok(&self.ready);
        }
        let may_die = handles.iter().any(Waitable::peers_may_die);
        let spin_end = match self.wait {
            WaitStrategy::BusySpin | WaitStrategy::Yield => None,
            WaitStrategy::SpinThenPark { spin } => Some(Instant::now().checked_add(spin)),
            WaitStrategy::Park => Some(Some(Instant::now())),
        };
        match self.spin(handles, deadline, spin_end, may_die) {
            Some(true) => return Ok(&self.ready),
            Some(false) => return Err(WaitSetError::Timeout),
            None => {}
        }
        if self.park(handles, deadline, may_die)? {
            Ok(&self.ready)
        } else {
            Err(WaitSetError::Timeout)
        }
    }

    /// Polls every handle; records the ready ones and says whether there are any.
    fn collect<W: Waitable>(&mut self, handles: &mut [W], probe: bool) -> bool {
        self.ready.clear();
        for (i, h) in handles.iter_mut().enumerate() {
            if h.ready(probe) {
                self.ready.push(i);
            }
        }
        !self.ready.is_empty()
    }

    /// Polls in a loop (spinning, or yielding for `Yield`) until a handle is ready
    /// (`Some(true)`), the deadline passes (`Some(false)`, after a last poll) or the
    /// spin phase ends (`None`; `spin_end` `None`: never, `Some(None)`: too far to
    /// represent). Probes the peers every liveness period.
    fn spin<W: Waitable>(
        &mut self,
        handles: &mut [W],
        deadline: Option<Instant>,
        spin_end: Option<Option<Instant>>,
        may_die: bool,
    ) -> Option<bool> {
        let mut next_probe = slice_deadline(None, may_die);
        let mut spins = 0u32;
        if spin_end.is_some_and(|end| end.is_some_and(|e| Instant::now() >= e)) {
            return None;
        }
        loop {
            match self.wait {
                WaitStrategy::Yield => std::thread::yield_now(),
                _ => spin_loop(),
            }
            spins = spins.wrapping_add(1);
            let mut probe = false;
            if spins % SPINS_PER_CLOCK_READ == 0 {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Some(self.collect(handles, false));
                }
                if next_probe.is_some_and(|p| now >= p) {
                    probe = true;
                    next_probe = slice_deadline(None, may_die);
                }
                if spin_end.is_some_and(|end| end.is_some_and(|e| now >= e)) {
                    return None;
                }
            }
            if self.collect(handles, probe) {
                return Some(true);
            }
        }
    }

    /// Announces on every handle's event count, re-checks, sleeps on all of them, and
    /// polls again, until a handle is ready (`true`) or the deadline passes (`false`).
    fn park<W: Waitable>(
        &mut self,
        handles: &mut [W],
        deadline: Option<Instant>,
        may_die: bool,
    ) -> Result<bool, WaitSetError> {
        loop {
            {
                let waits: Vec<Waiting<'_>> = handles.iter().map(|h| h.wake_event()).collect();
                EventCount::prepare_wait_any(&waits, &mut self.keys);
            }
            if self.collect(handles, false) {
                let waits: Vec<Waiting<'_>> = handles.iter().map(|h| h.wake_event()).collect();
                EventCount::cancel_wait_any(&waits);
                return Ok(true);
            }
            let outcome = {
                let waits: Vec<Waiting<'_>> = handles.iter().map(|h| h.wake_event()).collect();
                self.sleeps += 1;
                EventCount::wait_any(&waits, &self.keys, slice_deadline(deadline, may_die))
            };
            let probe = match outcome {
                Ok(WaitAnyOutcome::TimedOut) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(self.collect(handles, false));
                    }
                    // A liveness slice ended: probe the peers now.
                    true
                }
                Ok(WaitAnyOutcome::Woken(_) | WaitAnyOutcome::ValueChanged) => false,
                Err(WaitAnyError::Unsupported) => return Err(WaitSetError::Unsupported),
                Err(WaitAnyError::Count(n)) => return Err(WaitSetError::Count(n)),
            };
            if self.collect(handles, probe) {
                return Ok(true);
            }
        }
    }
}

/// Implements [`Waitable`] for a handle of this crate: `ready(this, probe)` says whether
/// it is ready, `event(this)` is its wake event, `region(this)` its region.
macro_rules! waitable {
    (
        [$($g:tt)*] $ty:ty,
        ready: |$s:ident, $probe:ident| $ready:expr,
        event: |$e:ident| $event:expr,
        region: |$r:ident| $region:expr $(,)?
    ) => {
        $crate::wait_set::waitable!(
            [$($g)*] $ty,
            ready: |$s, $probe| $ready,
            event: |$e| $event,
            region: |$r| $region,
            peers_may_die: |this| $crate::wait_set::waitable!(@region this, $r, $region)
                .peers_may_die(),
        );
    };
    (@region $this:ident, $r:ident, $region:expr) => {{
        let $r = $this;
        &$region
    }};
    (
        [$($g:tt)*] $ty:ty,
        ready: |$s:ident, $probe:ident| $ready:expr,
        event: |$e:ident| $event:expr,
        region: |$r:ident| $region:expr,
        peers_may_die: |$d:ident| $may_die:expr $(,)?
    ) => {
        impl<$($g)*> $crate::wait_set::sealed::Sealed for $ty {
            fn keep_alive(&self) -> $crate::wait_set::sealed::KeepAlive {
                let $r = self;
                $region.keep_alive()
            }
        }

        impl<$($g)*> $crate::Waitable for $ty {
            fn ready(&mut self, $probe: bool) -> bool {
                let $s = self;
                $ready
            }

            fn wake_event(&self) -> shm_sync::Waiting<'_> {
                let $e = self;
                $event
            }

            fn peers_may_die(&self) -> bool {
                let $d = self;
                $may_die
            }
        }
    };
}
pub(crate) use waitable;

/// Implements [`Waitable`] for a handle that waits as its field `$field` does.
#[cfg(not(loom))]
macro_rules! waitable_as {
    ([$($g:tt)*] $ty:ty, $field:ident) => {
        impl<$($g)*> $crate::wait_set::sealed::Sealed for $ty {
            fn keep_alive(&self) -> $crate::wait_set::sealed::KeepAlive {
                $crate::wait_set::sealed::Sealed::keep_alive(&self.$field)
            }
        }

        impl<$($g)*> $crate::Waitable for $ty {
            fn ready(&mut self, probe: bool) -> bool {
                $crate::Waitable::ready(&mut self.$field, probe)
            }

            fn wake_event(&self) -> shm_sync::Waiting<'_> {
                $crate::Waitable::wake_event(&self.$field)
            }

            fn peers_may_die(&self) -> bool {
                $crate::Waitable::peers_may_die(&self.$field)
            }
        }
    };
}
#[cfg(not(loom))]
pub(crate) use waitable_as;
