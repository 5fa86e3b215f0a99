//! A loom model of the futex: a global mutex stands for the kernel's hash-bucket lock,
//! a condition variable for its wait queue.

use std::time::Instant;

use loom::sync::{Condvar, Mutex};

use super::{WaitAnyError, WaitAnyOutcome, WaitOutcome};
use crate::atomic::{AtomicU32, Ordering};

loom::lazy_static! {
    /// The number of sleepers, under the "bucket lock", and their wait queue.
    static ref BUCKET: (Mutex<u32>, Condvar) = (Mutex::new(0), Condvar::new());
}

pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
    let (lock, queue) = &*BUCKET;
    let mut sleepers = lock.lock().unwrap();
    // Acquire: the kernel reads the word under the bucket lock after the waker's change;
    // the mutex orders the two, as the real bucket lock does.
    if word.load(Ordering::Acquire) != expected {
        return WaitOutcome::ValueChanged;
    }
    if deadline.is_some() {
        // Loom has no clock: a deadline may pass at any moment, so model the earliest.
        return WaitOutcome::TimedOut;
    }
    *sleepers += 1;
    let mut sleepers = queue.wait(sleepers).unwrap();
    *sleepers -= 1;
    WaitOutcome::Woken
}

pub(super) fn wake(_word: &AtomicU32, n: u32) -> usize {
    let (lock, queue) = &*BUCKET;
    let sleepers = lock.lock().unwrap();
    // All, even for n == 1: the model has one queue for every word, and waking a waiter
    // of another word must not use up this word's wake-up. Extra wake-ups are spurious
    // wake-ups, which the real futex allows too.
    queue.notify_all();
    (*sleepers).min(n) as usize
}

pub(super) fn wait_any(
    words: &[(&AtomicU32, u32)],
    deadline: Option<Instant>,
) -> Result<WaitAnyOutcome, WaitAnyError> {
    let (lock, queue) = &*BUCKET;
    let mut sleepers = lock.lock().unwrap();
    // Acquire: as in `wait`; every word is compared under the one bucket lock, as the
    // kernel compares them all before it queues the waiter on any.
    if words
        .iter()
        .any(|(word, expected)| word.load(Ordering::Acquire) != *expected)
    {
        return Ok(WaitAnyOutcome::ValueChanged);
    }
    if deadline.is_some() {
        // As in `wait`: the earliest a deadline may pass.
        return Ok(WaitAnyOutcome::TimedOut);
    }
    *sleepers += 1;
    let mut sleepers = queue.wait(sleepers).unwrap();
    *sleepers -= 1;
    // The model's queue is one for every word: which one woke it is unknown, and
    // callers re-check every condition anyway.
    Ok(WaitAnyOutcome::Woken(0))
}
