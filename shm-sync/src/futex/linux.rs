//! The Linux `futex(2)` syscalls, through rustix.

use core::num::NonZeroU32;
use std::time::Instant;

use rustix::io::Errno;
use rustix::thread::futex::{self, Flags, Timespec};
use rustix::time::{ClockId, clock_gettime};

use super::{WaitAnyError, WaitAnyOutcome, WaitOutcome};
use crate::atomic::{AtomicU32, Ordering};

/// `FUTEX_BITSET_MATCH_ANY`: with it, `FUTEX_WAIT_BITSET` is a plain wait that takes an
/// absolute timeout, and any `FUTEX_WAKE` wakes it.
const MATCH_ANY: NonZeroU32 = NonZeroU32::MAX;

/// The futex flags used for every call: empty.
///
/// Never `FUTEX_PRIVATE_FLAG`: a private futex is keyed by (address space, virtual
/// address), so a waker in another process, which maps the word at another address in
/// another address space, would never find the waiter. Std and parking_lot set the flag
/// because their futexes never leave one process; ours live in `MAP_SHARED` files.
const SHARED: Flags = Flags::empty();

pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
    let timeout = match deadline {
        None => None,
        Some(deadline) => match absolute_monotonic(deadline) {
            Some(ts) => Some(ts),
            None => {
                // Relaxed: an early exit that reports what the word holds now; callers
                // synchronise through their own acquire loads.
                return if word.load(Ordering::Relaxed) == expected {
                    WaitOutcome::TimedOut
                } else {
                    WaitOutcome::ValueChanged
                };
            }
        },
    };
    loop {
        match futex::wait_bitset(
            word.as_core(),
            SHARED,
            expected,
            timeout.as_ref(),
            MATCH_ANY,
        ) {
            Ok(()) => return WaitOutcome::Woken,
            Err(Errno::AGAIN) => return WaitOutcome::ValueChanged,
            Err(Errno::TIMEDOUT) => return WaitOutcome::TimedOut,
            // A signal handler ran; the deadline is absolute, so retrying keeps it.
            Err(Errno::INTR) => continue,
            // As std does: any other error is reported as a (spurious) wake-up.
            Err(_) => return WaitOutcome::Woken,
        }
    }
}

pub(super) fn wait_any(
    words: &[(&AtomicU32, u32)],
    deadline: Option<Instant>,
) -> Result<WaitAnyOutcome, WaitAnyError> {
    let timeout = match deadline {
        None => None,
        Some(deadline) => match absolute_monotonic(deadline) {
            Some(ts) => Some(ts),
            None => {
                // Relaxed: as in `wait`.
                let held = words
                    .iter()
                    .all(|(word, expected)| word.load(Ordering::Relaxed) == *expected);
                return Ok(if held {
                    WaitAnyOutcome::TimedOut
                } else {
                    WaitAnyOutcome::ValueChanged
                });
            }
        },
    };
    let mut waiters = [futex::Wait::new(); super::WAIT_ANY_MAX];
    for (waiter, (word, expected)) in waiters.iter_mut().zip(words) {
        waiter.val = u64::from(*expected);
        waiter.uaddr = futex::WaitPtr::new(word.as_core().as_ptr().cast());
        // Shared: never FUTEX2_PRIVATE, for the reason of `SHARED`.
        waiter.flags = futex::WaitFlags::SIZE_U32;
    }
    loop {
        match futex::waitv(
            &waiters[..words.len()],
            futex::WaitvFlags::empty(),
            timeout.as_ref(),
            ClockId::Monotonic,
        ) {
            Ok(index) => return Ok(WaitAnyOutcome::Woken(index)),
            Err(Errno::AGAIN) => return Ok(WaitAnyOutcome::ValueChanged),
            Err(Errno::TIMEDOUT) => return Ok(WaitAnyOutcome::TimedOut),
            Err(Errno::INTR) => continue,
            // ENOSYS: no such call; EPERM: a seccomp filter refuses it. Either way every
            // later call fails the same, and must not read as a wake-up each time.
            Err(Errno::NOSYS | Errno::PERM) => return Err(WaitAnyError::Unsupported),
            // As in `wait`: any other error is reported as a (spurious) wake-up.
            Err(_) => return Ok(WaitAnyOutcome::Woken(0)),
        }
    }
}

pub(super) fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word.as_core(), SHARED, n).unwrap_or(0)
}

/// Turns `deadline` into an absolute `CLOCK_MONOTONIC` time for the kernel, or `None` if
/// it has passed. Never earlier than `deadline`: the clock is read after `Instant::now()`,
/// so `now_ts >= now` and `now_ts + (deadline - now) >= deadline`. A deadline too far
/// away to represent is clamped to the largest `Timespec`, which never comes.
fn absolute_monotonic(deadline: Instant) -> Option<Timespec> {
    let remaining = deadline.checked_duration_since(Instant::now())?;
    if remaining.is_zero() {
        return None;
    }
    let now = clock_gettime(ClockId::Monotonic);
    let nanos = now.tv_nsec as u64 + u64::from(remaining.subsec_nanos());
    let secs = i64::try_from(remaining.as_secs())
        .ok()
        .and_then(|s| now.tv_sec.checked_add(s))
        .and_then(|s| s.checked_add((nanos / 1_000_000_000) as i64));
    Some(match secs {
        Some(tv_sec) => Timespec {
            tv_sec,
            tv_nsec: (nanos % 1_000_000_000) as _,
        },
        None => Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 999_999_999,
        },
    })
}
