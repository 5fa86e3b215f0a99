//! An event count: a condition variable for lock-free code that costs the notifier no
//! syscall while nobody sleeps.
//!
//! After Folly's `EventCount` (folly/experimental/EventCount.h) and the futex pattern of
//! Drepper's "Futexes Are Tricky": a waiter announces itself, re-checks its condition,
//! and only then sleeps on a sequence word; a notifier publishes its change, then looks
//! for announced waiters and, only if there are any, bumps the sequence and wakes them.
//! Unlike Folly's, [`EventCount::notify`] makes no read-modify-write when nobody waits:
//! one load, behind an [asymmetric] fence that is no instruction at
//! all in a process registered for global expedited membarriers; the waiter, about to
//! sleep anyway, pays for both sides with one `membarrier(2)` syscall.
//!
//! # Protocol
//!
//! Waiter (see [`WaitStrategy`](crate::WaitStrategy) for a ready-made loop):
//! 1. `let key = ec.prepare_wait();` (registers in `waiters`, then reads `seq`)
//! 2. re-check the condition; if it now holds, `ec.cancel_wait()` and stop;
//! 3. `ec.wait(key, deadline)`: sleeps unless `seq` moved since step 1.
//!
//! Notifier: make the condition true (e.g. store a ring's tail with `Release`), then
//! `ec.notify()`.
//!
//! # Memory ordering
//!
//! Two edges make a lost wake-up impossible.
//!
//! - **SYNC(announce)**, a store-buffering pair. The waiter writes `waiters` then reads
//!   the condition; the notifier writes the condition then reads `waiters`. Each side
//!   puts a fence between its write and its read: the notifier a
//!   [`light`](crate::asymmetric::light) one, the waiter a
//!   [`heavy`](crate::asymmetric::heavy) one, which together order as two `SeqCst` fences
//!   do (the argument is in [`asymmetric`]); whichever comes second
//!   reads what the other side wrote before its fence. So either the notifier sees
//!   `waiters > 0` (and will wake), or the waiter's re-check sees the condition (and does
//!   not sleep). Without the fences both reads may return old values and the waiter
//!   sleeps through the only notification: the loom models
//!   `lost_wakeup_without_the_light_fence` and `lost_wakeup_without_the_heavy_fence`
//!   show it for either fence, dropped from the real code. Loom checks the symmetric
//!   form (both fences `SeqCst`); the cross-process
//!   stress test `shm-sync/tests/asymmetric_stress.rs` runs the asymmetric one. A waiter
//!   whose membarrier cannot reach the notifiers ([`Heavy::Unreached`]) sleeps in slices
//!   of [`UNREACHED_SLICE`] and re-checks: late, never lost.
//! - **SYNC(seq)**, release/acquire on `seq`. The notifier bumps `seq` (`Release`) after
//!   publishing; the waiter reads `seq` (`Acquire`) after announcing. If the waiter's key
//!   already includes the bump, the publication happens-before its re-check, which then
//!   sees the condition. Otherwise the bump comes after the key in `seq`'s modification
//!   order, and the futex compares `seq` with the key atomically with the wake: the
//!   waiter either finds `seq` moved or is asleep when the wake comes.
//!
//! # Shared memory
//!
//! `#[repr(C)]`, two `u32` words, all-zero is the initial state: an `EventCount` can be
//! placed in a mapped file and used by several processes (the futex is the shared kind).
//! A process that dies between `prepare_wait` and the end of `wait` leaves `waiters`
//! counted: notifiers then make a `FUTEX_WAKE` syscall they could have skipped, on every
//! notification, a cost (about a syscall per message) but not an error. Two ways out:
//! where one known party is the only waiter, it resets the count when it attaches
//! ([`reset_waiters`](EventCount::reset_waiters)); where several wait, each marks a word
//! of its own while it is counted ([`prepare_wait_marked`](EventCount::prepare_wait_marked)),
//! and whoever settles a dead participant withdraws its count through that mark
//! ([`settle_dead_waiter`](EventCount::settle_dead_waiter)). A notifier learns that a
//! wake-up found nobody asleep ([`Notified::Idle`]), the sign that it may be paying for
//! a dead waiter. `seq` is 32 bits and wraps; a waiter that sleeps across exactly 2^32
//! notifications would miss one, which at one notification per 190 ns syscall takes over
//! 13 minutes of notifying while it never runs.

use std::time::{Duration, Instant};

use crate::asymmetric::{self, Heavy};
use crate::atomic::{AtomicU32, Ordering};
use crate::futex::{self, WaitAnyError, WaitAnyOutcome, WaitOutcome};
use crate::retry::Retries;

/// A condition variable for lock-free code, usable across processes. See the
/// [module docs](self) for the protocol and its memory ordering.
///
/// # Layout
///
/// `#[repr(C)]`: `seq: u32` at offset 0 (the futex word), `waiters: u32` at offset 4;
/// 8 bytes, 4-byte aligned, zero-initialised. Pad it with
/// [`CachePadded`](crate::CachePadded) so that notifiers' loads of `waiters` do not
/// share a line with fields written on every message.
///
/// # Examples
///
/// ```
/// use shm_sync::EventCount;
/// use shm_sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
///
/// let ec = Arc::new(EventCount::new());
/// let flag = Arc::new(AtomicBool::new(false));
/// let (ec2, flag2) = (ec.clone(), flag.clone());
/// let waiter = std::thread::spawn(move || {
///     loop {
///         if flag2.load(Ordering::Acquire) { break; }
///         let key = ec2.prepare_wait();
///         if flag2.load(Ordering::Acquire) { ec2.cancel_wait(); break; }
///         ec2.wait(key, None);
///     }
/// });
/// flag.store(true, Ordering::Release);
/// ec.notify();
/// waiter.join().unwrap();
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct EventCount {
    /// The futex word: bumped by a notifier that found waiters.
    seq: AtomicU32,
    /// How many waiters are between `prepare_wait` and the end of `wait`/`cancel_wait`.
    waiters: AtomicU32,
}

#[cfg(not(loom))]
const _: () = {
    assert!(core::mem::size_of::<EventCount>() == 8);
    assert!(core::mem::align_of::<EventCount>() == 4);
    assert!(core::mem::offset_of!(EventCount, seq) == 0);
    assert!(core::mem::offset_of!(EventCount, waiters) == 4);
};

/// What a [`notify`](EventCount::notify) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    /// Nobody was announced: no syscall.
    Quiet,
    /// Waiters were announced and a `FUTEX_WAKE` woke at least one.
    Woke,
    /// Waiters were announced, but the `FUTEX_WAKE` woke nobody: they were between their
    /// announcement and their sleep, or are dead and still counted.
    Idle,
}

/// How long a waiter whose heavy fence could not reach the notifiers
/// ([`Heavy::Unreached`]) sleeps at most before it re-checks its condition: 1 ms.
pub const UNREACHED_SLICE: Duration = Duration::from_millis(1);

/// One event count of a wait on several at once
/// ([`EventCount::prepare_wait_any`]): the event count, and the waiter's mark on it
/// when the waiter may die while counted (see
/// [`prepare_wait_marked`](EventCount::prepare_wait_marked)).
#[derive(Debug, Clone, Copy)]
pub struct Waiting<'a> {
    /// The event count waited on.
    pub event: &'a EventCount,
    /// The waiter's own word that says it is counted, or `None`.
    pub mark: Option<&'a AtomicU32>,
}

impl Waiting<'_> {
    /// [`EventCount::prepare_wait_marked`] with the mark, or
    /// [`EventCount::prepare_wait`] without one.
    #[inline]
    pub fn prepare(&self) -> WaitKey {
        match self.mark {
            Some(mark) => self.event.prepare_wait_marked(mark),
            None => self.event.prepare_wait(),
        }
    }

    /// [`EventCount::cancel_wait_marked`] with the mark, or
    /// [`EventCount::cancel_wait`] without one.
    #[inline]
    pub fn cancel(&self) {
        match self.mark {
            Some(mark) => self.event.cancel_wait_marked(mark),
            None => self.event.cancel_wait(),
        }
    }

    /// [`EventCount::wait_marked`] with the mark, or [`EventCount::wait`] without one.
    pub fn wait(&self, key: WaitKey, deadline: Option<Instant>) -> WaitOutcome {
        match self.mark {
            Some(mark) => self.event.wait_marked(key, deadline, mark),
            None => self.event.wait(key, deadline),
        }
    }
}

/// What a waiter read of the sequence word in [`EventCount::prepare_wait`], and whether
/// its fence reached every notifier; pass it to [`EventCount::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a prepared wait must end in `wait` or `cancel_wait`"]
pub struct WaitKey {
    seq: u32,
    heavy: Heavy,
}

impl WaitKey {
    /// The deadline to sleep to: `deadline`, or at most [`UNREACHED_SLICE`] from now when
    /// the fence did not reach every notifier (a sleeper that does not use
    /// [`EventCount::wait`] must honour it, then re-check its condition).
    #[must_use]
    pub fn sleep_until(self, deadline: Option<Instant>) -> Option<Instant> {
        match self.heavy {
            Heavy::Reached => deadline,
            Heavy::Unreached => {
                let slice = Instant::now() + UNREACHED_SLICE;
                Some(deadline.map_or(slice, |d| d.min(slice)))
            }
        }
    }

    /// A sleep cut short by its slice reads as a (spurious) wake-up, never as a timeout.
    fn outcome(self, outcome: WaitOutcome, deadline: Option<Instant>) -> WaitOutcome {
        match outcome {
            WaitOutcome::TimedOut if deadline.is_none_or(|d| Instant::now() < d) => {
                WaitOutcome::Woken
            }
            other => other,
        }
    }
}

impl EventCount {
    /// A new event count with no waiters (the all-zero state).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// A new event count with no waiters (loom's atomics have no `const fn new`).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// Wakes waiters if there are any: call after making a waited-for condition true.
    ///
    /// Costs one load when nobody waits, behind a light fence (no instruction once the
    /// process registered, see [`asymmetric`]; a `SeqCst` fence in a
    /// process that cannot), no syscall and no write to shared memory; otherwise one
    /// increment and one `FUTEX_WAKE` syscall. Wakes every
    /// waiter: waiters of one event count may wait for different conditions (the
    /// producers and the consumers of a queue), and waking only one could wake the wrong
    /// one.
    ///
    /// Returns what it did: [`Notified::Idle`] again and again is the sign of a dead
    /// waiter still counted (see the module docs).
    #[inline(always)]
    pub fn notify(&self) -> Notified {
        // SYNC(announce): light fence; orders the caller's publication before the load of
        // `waiters`, pairs with the heavy fence in `prepare_wait`. Relaxed: the fence
        // provides the ordering this load needs.
        if asymmetric::light_then_load(|| self.waiters.load(Ordering::Relaxed)) != 0 {
            self.wake_waiters()
        } else {
            Notified::Quiet
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_waiters(&self) -> Notified {
        // SYNC(seq): Release; pairs with the Acquire load in `prepare_wait`.
        self.seq.fetch_add(1, Ordering::Release);
        match futex::wake_all(&self.seq) {
            0 => Notified::Idle,
            _ => Notified::Woke,
        }
    }

    /// Announces a waiter and returns the key to pass to [`wait`](Self::wait). The caller
    /// must re-check its condition after this call, then end the wait with exactly one of
    /// [`wait`](Self::wait) or [`cancel_wait`](Self::cancel_wait).
    #[inline]
    pub fn prepare_wait(&self) -> WaitKey {
        // Relaxed: ordered before the re-check by the fence below.
        self.waiters.fetch_add(1, Ordering::Relaxed);
        // SYNC(announce): heavy fence; orders the announcement before the caller's
        // re-check, pairs with the light fence in `notify`.
        let heavy = asymmetric::heavy();
        // SYNC(seq): Acquire; pairs with the Release bump in `wake_waiters`.
        let seq = self.seq.load(Ordering::Acquire);
        WaitKey { seq, heavy }
    }

    /// Withdraws a waiter announced by [`prepare_wait`](Self::prepare_wait) whose
    /// condition turned out to hold.
    #[inline]
    pub fn cancel_wait(&self) {
        // Relaxed: the count only decides whether notifiers make a syscall; a stale
        // non-zero count costs a needless wake, never a lost one.
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sleeps until a notification that came after [`prepare_wait`](Self::prepare_wait),
    /// or until `deadline` (absolute, monotonic; `None` waits forever), then withdraws the
    /// waiter.
    ///
    /// Returns how the futex wait ended; a [`WaitOutcome::Woken`] may be spurious, so the
    /// caller re-checks its condition either way. Returns at once with
    /// [`WaitOutcome::ValueChanged`] if a notification already came.
    pub fn wait(&self, key: WaitKey, deadline: Option<Instant>) -> WaitOutcome {
        let outcome = futex::wait(&self.seq, key.seq, key.sleep_until(deadline));
        self.cancel_wait();
        key.outcome(outcome, deadline)
    }

    /// [`prepare_wait`](Self::prepare_wait) for a waiter that may die while counted:
    /// sets `mark` (a word of the waiter's own, in shared memory) to 1 once it is
    /// counted. End the wait with [`cancel_wait_marked`](Self::cancel_wait_marked) or
    /// [`wait_marked`](Self::wait_marked) with the same mark.
    ///
    /// While `mark` is 1 the waiter is counted, so that
    /// [`settle_dead_waiter`](Self::settle_dead_waiter) never withdraws a count that is
    /// not there. A waiter
    /// that dies in the two stores between the count and the mark (or between clearing
    /// the mark and the withdrawal) stays counted, as an unmarked one does.
    #[inline]
    pub fn prepare_wait_marked(&self, mark: &AtomicU32) -> WaitKey {
        let key = self.prepare_wait();
        // Relaxed: read only by whoever settles this waiter once it died, after taking
        // the lock its death released (which orders everything before it).
        mark.store(1, Ordering::Relaxed);
        key
    }

    /// [`cancel_wait`](Self::cancel_wait) for a wait prepared with
    /// [`prepare_wait_marked`](Self::prepare_wait_marked): clears `mark`, then withdraws.
    #[inline]
    pub fn cancel_wait_marked(&self, mark: &AtomicU32) {
        // Relaxed: as in `prepare_wait_marked`.
        mark.store(0, Ordering::Relaxed);
        self.cancel_wait();
    }

    /// [`wait`](Self::wait) for a wait prepared with
    /// [`prepare_wait_marked`](Self::prepare_wait_marked): clears `mark`, then withdraws.
    pub fn wait_marked(
        &self,
        key: WaitKey,
        deadline: Option<Instant>,
        mark: &AtomicU32,
    ) -> WaitOutcome {
        let outcome = futex::wait(&self.seq, key.seq, key.sleep_until(deadline));
        self.cancel_wait_marked(mark);
        key.outcome(outcome, deadline)
    }

    /// Withdraws the count of a dead waiter whose `mark` says it was counted (and clears
    /// the mark); returns whether it did. For whoever settles a dead participant, once,
    /// under the lock the participant held (so the waiter cannot come back meanwhile).
    /// Never takes the count below zero, whatever a corrupt mark says.
    pub fn settle_dead_waiter(&self, mark: &AtomicU32) -> bool {
        // Relaxed: the settler's lock orders the dead waiter's stores before this.
        if mark.swap(0, Ordering::Relaxed) != 1 {
            return false;
        }
        // Relaxed: as in `cancel_wait`.
        let mut count = self.waiters.load(Ordering::Relaxed);
        // Bounded: other waiters come and go meanwhile, each a lost swap; a count left
        // too high after a whole budget costs wake-ups, never a lost one.
        let mut retries = Retries::new();
        while retries.again() {
            if count == 0 {
                return false;
            }
            // Relaxed, and Relaxed on failure: as above; retried with the value read.
            match self.waiters.compare_exchange_weak(
                count,
                count - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(found) => count = found,
            }
        }
        false
    }

    /// Forgets every announced waiter: sets the count to zero.
    ///
    /// For a protocol where one known party is the only one that ever waits here (the
    /// consumer of an SPSC ring on its not-empty event), to call when that party attaches
    /// after a predecessor died while announced: a dead waiter's count never drops, and
    /// would make every later `notify` a needless `FUTEX_WAKE` syscall. Called while
    /// another thread is between `prepare_wait` and the end of its wait, it makes
    /// notifiers skip that waiter, which then sleeps until its deadline.
    pub fn reset_waiters(&self) {
        // Relaxed: the caller is the only party that waits here, and it is not waiting.
        self.waiters.store(0, Ordering::Relaxed);
    }

    /// Announces one waiter on every event count of `waits` (setting each given mark to
    /// 1 once counted, as [`prepare_wait_marked`](Self::prepare_wait_marked) does),
    /// behind one heavy fence for all of them, and puts one key per event count, in
    /// order, into `keys` (cleared first). The caller must then re-check every condition
    /// and end the wait with exactly one of [`wait_any`](Self::wait_any) or
    /// [`cancel_wait_any`](Self::cancel_wait_any) with the same `waits`.
    ///
    /// The protocol of the [module docs](self) over several event counts: SYNC(announce)
    /// holds for each of them through the one fence, since every announcement is before
    /// it and every re-check after it; SYNC(seq) is per event count. One `membarrier`
    /// however many event counts, where one [`prepare_wait`](Self::prepare_wait) each
    /// would make one apiece.
    pub fn prepare_wait_any(waits: &[Waiting<'_>], keys: &mut Vec<WaitKey>) {
        keys.clear();
        for w in waits {
            // Relaxed: ordered before the re-checks by the fence below.
            w.event.waiters.fetch_add(1, Ordering::Relaxed);
            if let Some(mark) = w.mark {
                // Relaxed: as in `prepare_wait_marked`.
                mark.store(1, Ordering::Relaxed);
            }
        }
        // SYNC(announce): heavy fence; orders every announcement before the caller's
        // re-checks, pairs with the light fence in each event count's `notify`.
        let heavy = asymmetric::heavy();
        for w in waits {
            // SYNC(seq): Acquire; pairs with the Release bump in `wake_waiters`.
            let seq = w.event.seq.load(Ordering::Acquire);
            keys.push(WaitKey { seq, heavy });
        }
    }

    /// Withdraws the waiters announced by [`prepare_wait_any`](Self::prepare_wait_any)
    /// (clearing their marks) when a condition turned out to hold.
    pub fn cancel_wait_any(waits: &[Waiting<'_>]) {
        for w in waits {
            w.cancel();
        }
    }

    /// Sleeps until a notification of any of the event counts of `waits` that came
    /// after [`prepare_wait_any`](Self::prepare_wait_any) (`keys` are its keys), or
    /// until `deadline` (absolute, monotonic; `None`: forever), in one `futex_waitv`
    /// (see [`futex::wait_any`]); then withdraws every waiter, as
    /// [`cancel_wait_any`](Self::cancel_wait_any) does.
    ///
    /// Returns how the wait ended; a wake-up may be spurious and the index it names is a
    /// hint only, so the caller re-checks every condition. A sleep cut short by the
    /// [`UNREACHED_SLICE`] reads as [`WaitAnyOutcome::Woken`], never as a timeout.
    ///
    /// # Errors
    ///
    /// [`WaitAnyError::Count`] when `waits` is empty or longer than
    /// [`futex::WAIT_ANY_MAX`], [`WaitAnyError::Unsupported`] on a kernel before 5.16;
    /// the waiters are withdrawn either way.
    ///
    /// # Panics
    ///
    /// If `keys` is not as long as `waits`.
    pub fn wait_any(
        waits: &[Waiting<'_>],
        keys: &[WaitKey],
        deadline: Option<Instant>,
    ) -> Result<WaitAnyOutcome, WaitAnyError> {
        assert_eq!(waits.len(), keys.len(), "one key per event count");
        let words: Vec<(&AtomicU32, u32)> = waits
            .iter()
            .zip(keys)
            .map(|(w, key)| (&w.event.seq, key.seq))
            .collect();
        let sleep_until = match keys.first() {
            Some(key) => key.sleep_until(deadline),
            None => deadline,
        };
        let outcome = futex::wait_any(&words, sleep_until);
        Self::cancel_wait_any(waits);
        match outcome {
            Ok(WaitAnyOutcome::TimedOut) if deadline.is_none_or(|d| Instant::now() < d) => {
                Ok(WaitAnyOutcome::Woken(0))
            }
            other => other,
        }
    }

    /// The futex word of this event count and the value it holds while no notification
    /// came after `key` was taken: for a waiter that sleeps elsewhere (a reactor thread
    /// that sleeps in one [`futex::wait_any`] for many tasks). The word changes when
    /// such a notification comes; whoever sleeps on it is then woken.
    #[must_use]
    pub fn sleep_word(&self, key: WaitKey) -> (&AtomicU32, u32) {
        (&self.seq, key.seq)
    }

    /// How many waiters are announced now: a snapshot, stale as soon as it is read.
    #[must_use]
    pub fn waiters(&self) -> u32 {
        // Relaxed: an observation for statistics and tests only.
        self.waiters.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// The sequence word, which only a notification that found waiters moves.
    fn seq(ec: &EventCount) -> u32 {
        ec.seq.load(Ordering::Relaxed)
    }

    #[test]
    fn notify_without_waiters_is_quiet_and_moves_nothing() {
        let ec = EventCount::new();
        assert_eq!(ec.notify(), Notified::Quiet);
        assert_eq!(ec.notify(), Notified::Quiet);
        assert_eq!(seq(&ec), 0);
        assert_eq!(ec.waiters(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "makes futex syscalls")]
    fn a_counted_waiter_that_does_not_sleep_makes_notify_idle() {
        let ec = EventCount::new();
        let key = ec.prepare_wait();
        assert_eq!(ec.waiters(), 1);
        assert_eq!(ec.notify(), Notified::Idle);
        assert_eq!(seq(&ec), 1);
        // The notification came after the key: the wait returns at once.
        assert_eq!(ec.wait(key, None), WaitOutcome::ValueChanged);
        assert_eq!(ec.waiters(), 0);
        assert_eq!(ec.notify(), Notified::Quiet);
    }

    #[test]
    fn a_cancelled_wait_leaves_no_waiter() {
        let ec = EventCount::new();
        let _key = ec.prepare_wait();
        ec.cancel_wait();
        assert_eq!(ec.waiters(), 0);
        assert_eq!(ec.notify(), Notified::Quiet);
    }

    #[test]
    #[cfg_attr(miri, ignore = "makes futex syscalls")]
    fn a_wait_with_nobody_notifying_times_out() {
        let ec = EventCount::new();
        let key = ec.prepare_wait();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(ec.wait(key, Some(deadline)), WaitOutcome::TimedOut);
        assert!(Instant::now() >= deadline);
        assert_eq!(ec.waiters(), 0);
    }

    /// Two threads asleep on the futex (seen there through `/proc`), one notification:
    /// both wake, since waiters of one event count may wait for different conditions.
    #[test]
    #[cfg_attr(miri, ignore = "reads /proc, which miri's isolation hides")]
    fn notify_wakes_every_sleeper() {
        let ec = Arc::new(EventCount::new());
        let (tids, tid) = std::sync::mpsc::channel();
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let (ec, tids) = (ec.clone(), tids.clone());
                std::thread::spawn(move || {
                    let key = ec.prepare_wait();
                    tids.send(shm_testkit::thread_id()).unwrap();
                    ec.wait(key, Some(Instant::now() + Duration::from_secs(30)))
                })
            })
            .collect();
        for _ in 0..2 {
            let tid = tid.recv().unwrap();
            shm_testkit::wait_for(Duration::from_secs(10), "a sleeper on the futex", || {
                shm_testkit::sleeps_on_futex(std::process::id(), tid).then_some(())
            });
        }
        assert_eq!(ec.notify(), Notified::Woke);
        for sleeper in sleepers {
            assert_eq!(sleeper.join().unwrap(), WaitOutcome::Woken);
        }
        assert_eq!(ec.waiters(), 0);
    }

    /// A waiter whose heavy fence did not reach every notifier (`Heavy::Unreached`)
    /// sleeps at most one [`UNREACHED_SLICE`] at a time, and a sleep cut short by its
    /// slice reads as a wake-up (the caller re-checks), never as a timeout; its own
    /// deadline still times out.
    #[test]
    #[cfg_attr(miri, ignore = "makes futex syscalls")]
    fn an_unreached_waiter_sleeps_in_slices_that_read_as_wake_ups() {
        let ec = EventCount::new();
        let unreached = |ec: &EventCount| WaitKey {
            heavy: Heavy::Unreached,
            ..ec.prepare_wait()
        };
        // No deadline: back after a slice, as a wake-up.
        let start = Instant::now();
        assert_eq!(ec.wait(unreached(&ec), None), WaitOutcome::Woken);
        assert!(start.elapsed() >= UNREACHED_SLICE, "{:?}", start.elapsed());
        assert_eq!(ec.waiters(), 0);
        // A deadline far past the slice: the slice ends first, a wake-up.
        let far = Instant::now() + Duration::from_secs(60);
        let start = Instant::now();
        assert_eq!(ec.wait(unreached(&ec), Some(far)), WaitOutcome::Woken);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "slept to the deadline"
        );
        // A deadline inside the slice: it times out, no earlier than the deadline.
        let near = Instant::now() + UNREACHED_SLICE / 4;
        assert_eq!(ec.wait(unreached(&ec), Some(near)), WaitOutcome::TimedOut);
        assert!(Instant::now() >= near);
        assert_eq!(ec.waiters(), 0);
    }

    #[test]
    fn settling_a_dead_waiter_withdraws_a_marked_count_once() {
        let ec = EventCount::new();
        let mark = AtomicU32::new(0);
        let _key = ec.prepare_wait_marked(&mark);
        assert_eq!(mark.load(Ordering::Relaxed), 1);
        assert_eq!(ec.waiters(), 1);
        assert!(ec.settle_dead_waiter(&mark));
        assert_eq!((ec.waiters(), mark.load(Ordering::Relaxed)), (0, 0));
        // Once: the mark is cleared.
        assert!(!ec.settle_dead_waiter(&mark));
        assert_eq!(ec.waiters(), 0);
    }

    #[test]
    fn settling_never_takes_the_count_below_zero_nor_trusts_a_bad_mark() {
        let ec = EventCount::new();
        // A mark of 1 with nobody counted (a corrupt or stale mark): nothing to withdraw.
        let mark = AtomicU32::new(1);
        assert!(!ec.settle_dead_waiter(&mark));
        assert_eq!(ec.waiters(), 0);
        // A live waiter, and marks that do not say "counted": its count stays.
        let live = AtomicU32::new(0);
        let _key = ec.prepare_wait_marked(&live);
        for bad in [0, 2, 7, u32::MAX] {
            let mark = AtomicU32::new(bad);
            assert!(!ec.settle_dead_waiter(&mark), "mark {bad}");
            assert_eq!(mark.load(Ordering::Relaxed), 0, "mark {bad} cleared");
            assert_eq!(ec.waiters(), 1, "mark {bad}");
        }
        ec.cancel_wait_marked(&live);
        assert_eq!((ec.waiters(), live.load(Ordering::Relaxed)), (0, 0));
    }

    #[test]
    fn reset_forgets_every_waiter() {
        let ec = EventCount::new();
        let _a = ec.prepare_wait();
        let _b = ec.prepare_wait();
        assert_eq!(ec.waiters(), 2);
        ec.reset_waiters();
        assert_eq!(ec.waiters(), 0);
        assert_eq!(ec.notify(), Notified::Quiet);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::asymmetric;
    use crate::atomic::AtomicBool;
    use loom::sync::Arc;

    /// One waiter, one notifier, one flag: the waiter always ends (loom reports a
    /// deadlock if it sleeps through the notification).
    #[test]
    fn no_lost_wakeup() {
        loom::model(|| {
            let ec = Arc::new(EventCount::new());
            let flag = Arc::new(AtomicBool::new(false));
            let (ec2, flag2) = (ec.clone(), flag.clone());
            let notifier = loom::thread::spawn(move || {
                flag2.store(true, Ordering::Release);
                ec2.notify();
            });
            loop {
                if flag.load(Ordering::Acquire) {
                    break;
                }
                let key = ec.prepare_wait();
                if flag.load(Ordering::Acquire) {
                    ec.cancel_wait();
                    break;
                }
                ec.wait(key, None);
            }
            notifier.join().unwrap();
            assert_eq!(ec.waiters(), 0);
        });
    }

    /// Two waiters on one event count and two notifications: both end.
    #[test]
    fn two_waiters_two_notifications() {
        loom::model(|| {
            let ec = Arc::new(EventCount::new());
            let count = Arc::new(AtomicU32::new(0));
            let waiters: Vec<_> = (0..2)
                .map(|i| {
                    let (ec, count) = (ec.clone(), count.clone());
                    loom::thread::spawn(move || {
                        loop {
                            if count.load(Ordering::Acquire) > i {
                                break;
                            }
                            let key = ec.prepare_wait();
                            if count.load(Ordering::Acquire) > i {
                                ec.cancel_wait();
                                break;
                            }
                            ec.wait(key, None);
                        }
                    })
                })
                .collect();
            for _ in 0..2 {
                count.fetch_add(1, Ordering::Release);
                ec.notify();
            }
            for w in waiters {
                w.join().unwrap();
            }
        });
    }

    /// One waiter and one notifier of the real event count, with the notifier's light
    /// fence or the waiter's heavy one dropped (`asymmetric::faults`): loom must find
    /// the interleaving that loses the wake-up, which it reports as a deadlock. If it
    /// does not, the model can no longer see what the fences prevent, and
    /// `no_lost_wakeup` proves nothing.
    fn lost_wakeup_with_a_fence_dropped(set_dropped: fn(bool)) {
        set_dropped(true);
        let message = asymmetric::faults::failure_of(|| {
            loom::model(|| {
                let ec = Arc::new(EventCount::new());
                let flag = Arc::new(AtomicBool::new(false));
                let (ec2, flag2) = (ec.clone(), flag.clone());
                let notifier = loom::thread::spawn(move || {
                    flag2.store(true, Ordering::Release);
                    ec2.notify();
                });
                loop {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    let key = ec.prepare_wait();
                    if flag.load(Ordering::Acquire) {
                        ec.cancel_wait();
                        break;
                    }
                    ec.wait(key, None);
                }
                notifier.join().unwrap();
            });
        });
        set_dropped(false);
        assert!(
            message.contains("deadlock"),
            "unexpected failure: {message}"
        );
    }

    /// A waiter on two event counts at once (`prepare_wait_any`: two announcements, one
    /// fence, then `wait_any`) whose condition is made true by a notifier of the second
    /// one only: the waiter always ends.
    fn wait_on_two_notify_the_second() {
        let ecs = Arc::new([EventCount::new(), EventCount::new()]);
        let flags = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let (ecs2, flags2) = (ecs.clone(), flags.clone());
        let notifier = loom::thread::spawn(move || {
            flags2[1].store(true, Ordering::Release);
            ecs2[1].notify();
        });
        let mark = AtomicU32::new(0);
        let waits = [
            Waiting {
                event: &ecs[0],
                mark: None,
            },
            Waiting {
                event: &ecs[1],
                mark: Some(&mark),
            },
        ];
        let ready = || flags.iter().any(|f| f.load(Ordering::Acquire));
        let mut keys = Vec::new();
        loop {
            if ready() {
                break;
            }
            EventCount::prepare_wait_any(&waits, &mut keys);
            if ready() {
                EventCount::cancel_wait_any(&waits);
                break;
            }
            EventCount::wait_any(&waits, &keys, None).unwrap();
        }
        notifier.join().unwrap();
        assert_eq!((ecs[0].waiters(), ecs[1].waiters()), (0, 0));
        assert_eq!(mark.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn no_lost_wakeup_over_two_event_counts() {
        loom::model(wait_on_two_notify_the_second);
    }

    /// The same with the waiter's one heavy fence dropped: loom must find the lost
    /// wake-up, or `no_lost_wakeup_over_two_event_counts` proves nothing.
    #[test]
    fn lost_wakeup_over_two_event_counts_without_the_heavy_fence() {
        asymmetric::faults::drop_heavy(true);
        let message = asymmetric::faults::failure_of(|| loom::model(wait_on_two_notify_the_second));
        asymmetric::faults::drop_heavy(false);
        assert!(
            message.contains("deadlock"),
            "unexpected failure: {message}"
        );
    }

    #[test]
    fn lost_wakeup_without_the_light_fence() {
        lost_wakeup_with_a_fence_dropped(asymmetric::faults::drop_light);
    }

    #[test]
    fn lost_wakeup_without_the_heavy_fence() {
        lost_wakeup_with_a_fence_dropped(asymmetric::faults::drop_heavy);
    }
}
