//! Wait and wake on a 32-bit word that may live in a `MAP_SHARED` mapping.
//!
//! This is the kernel's `futex(2)` in its **shared** form: the kernel keys a waiter by the
//! physical page and offset of the word, so a process that maps the same file at any
//! address wakes it. It mirrors the trio of Rust's std (`sys/sync/futex/unix.rs`) with
//! two differences: the private flag is never set (see [`wait`]), and the outcome of a
//! wait says why it returned.
//!
//! Under `--cfg loom` the same functions are a model built on loom's mutex and condition
//! variable, which keeps the one property the protocols above rely on: the comparison of
//! the word in [`wait`] and the enqueueing of the waiter are atomic with respect to
//! [`wake`], so a wake that follows a change of the word is never missed. A lost wake-up
//! in a model then shows as a deadlock, which loom reports.

use std::time::Instant;

use crate::atomic::AtomicU32;

#[cfg(not(loom))]
mod linux;
#[cfg(not(loom))]
use linux as imp;

#[cfg(loom)]
mod model;
#[cfg(loom)]
use model as imp;

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitOutcome {
    /// The thread slept and was woken by a [`wake`], or spuriously (the kernel allows
    /// spurious wake-ups, and an unexpected error of the syscall is reported as one, as
    /// std does). Callers re-check their condition.
    Woken,
    /// The word did not hold `expected` when the wait began: nothing slept.
    ValueChanged,
    /// The deadline passed first. Never returned before the deadline.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken by [`wake`] or until `deadline`.
///
/// The comparison and the sleep are one atomic step with respect to [`wake`] on the same
/// word: if another thread or process changes the word and then calls [`wake`], this
/// call either sees the new value (and returns [`WaitOutcome::ValueChanged`]) or is
/// woken. `word` may live in a file mapped `MAP_SHARED` by several processes.
///
/// `deadline` is an absolute point on the monotonic clock (`std::time::Instant` is
/// `CLOCK_MONOTONIC` on Linux); `None` waits forever. It is passed to the kernel as an
/// absolute `CLOCK_MONOTONIC` time through `FUTEX_WAIT_BITSET`, so an interrupted and
/// restarted wait (`EINTR` is retried here) does not stretch it. A deadline already in
/// the past returns at once: [`WaitOutcome::ValueChanged`] if the word differs, else
/// [`WaitOutcome::TimedOut`].
///
/// Costs one syscall (about 190 ns on a KVM guest) when the word differs, and the time
/// to be scheduled again (tens of microseconds) after a sleep.
///
/// Errors are folded into the outcome: this function does not fail and does not panic.
///
/// # Examples
///
/// ```
/// use shm_sync::atomic::AtomicU32;
/// use shm_sync::futex::{wait, WaitOutcome};
/// use std::time::{Duration, Instant};
///
/// let word = AtomicU32::new(7);
/// assert_eq!(wait(&word, 8, None), WaitOutcome::ValueChanged);
/// let deadline = Instant::now() + Duration::from_millis(1);
/// assert_eq!(wait(&word, 7, Some(deadline)), WaitOutcome::TimedOut);
/// assert!(Instant::now() >= deadline);
/// ```
#[inline]
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
    imp::wait(word, expected, deadline)
}

/// Wakes at most `n` threads (of any process) sleeping in [`wait`] on `word`; returns
/// how many were woken.
///
/// Costs one syscall whether or not anyone sleeps; [`EventCount`](crate::EventCount)
/// exists to skip it when nobody does. An error of the syscall (impossible for a valid
/// reference) counts as zero woken.
#[inline]
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    imp::wake(word, n)
}

/// Wakes every thread sleeping in [`wait`] on `word`; returns how many were woken.
#[inline]
pub fn wake_all(word: &AtomicU32) -> usize {
    imp::wake(word, i32::MAX as u32)
}

/// The most words [`wait_any`] waits on at once: the kernel's `FUTEX_WAITV_MAX`.
pub const WAIT_ANY_MAX: usize = 128;

/// Why [`wait_any`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitAnyOutcome {
    /// Woken through the word at this index of the list (or spuriously, reported as
    /// index 0 by an error of the syscall that is no evidence of anything): callers
    /// re-check their conditions.
    Woken(usize),
    /// One of the words did not hold its expected value when the wait began: nothing
    /// slept. (The kernel does not say which.)
    ValueChanged,
    /// The deadline passed first. Never returned before the deadline.
    TimedOut,
}

/// Why [`wait_any`] could not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WaitAnyError {
    /// The kernel has no `futex_waitv` (Linux 5.16 added it).
    #[error("this kernel has no futex_waitv (it needs Linux 5.16 or later)")]
    Unsupported,
    /// No word, or more than [`WAIT_ANY_MAX`].
    #[error("expected 1 to {WAIT_ANY_MAX} futex words, found {0}")]
    Count(usize),
}

/// Sleeps while every `(word, expected)` pair holds (`*word == expected`), until one of
/// the words is woken by [`wake`] or until `deadline`: the kernel's `futex_waitv(2)`
/// (Linux 5.16), the shared form, so the words may live in files mapped by several
/// processes. As with [`wait`], the comparison of all the words and the sleep are one
/// atomic step with respect to [`wake`] on any of them: a wake that follows a change
/// of one of the words is never missed.
///
/// `deadline` is absolute on the monotonic clock (`None`: forever); `EINTR` is retried
/// with the same deadline. One syscall.
///
/// # Errors
///
/// [`WaitAnyError::Count`] for an empty list or more than [`WAIT_ANY_MAX`] words;
/// [`WaitAnyError::Unsupported`] on a kernel older than 5.16.
///
/// # Examples
///
/// ```
/// use shm_sync::atomic::AtomicU32;
/// use shm_sync::futex::{wait_any, WaitAnyOutcome};
/// use std::time::{Duration, Instant};
///
/// let (a, b) = (AtomicU32::new(1), AtomicU32::new(2));
/// assert_eq!(wait_any(&[(&a, 1), (&b, 3)], None), Ok(WaitAnyOutcome::ValueChanged));
/// let deadline = Instant::now() + Duration::from_millis(1);
/// assert_eq!(wait_any(&[(&a, 1), (&b, 2)], Some(deadline)), Ok(WaitAnyOutcome::TimedOut));
/// ```
pub fn wait_any(
    words: &[(&AtomicU32, u32)],
    deadline: Option<Instant>,
) -> Result<WaitAnyOutcome, WaitAnyError> {
    if words.is_empty() || words.len() > WAIT_ANY_MAX {
        return Err(WaitAnyError::Count(words.len()));
    }
    imp::wait_any(words, deadline)
}
