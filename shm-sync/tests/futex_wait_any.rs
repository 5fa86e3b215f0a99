//! `futex::wait_any` (`futex_waitv`) on words in a file mapped `MAP_SHARED`: woken
//! through the one word that changes, with its index; a word that differs before the
//! wait; the deadline; the count limits.

use std::time::{Duration, Instant};

use shm_sync::CachePadded;
use shm_sync::atomic::{AtomicU32, Ordering};
use shm_sync::futex::{self, WAIT_ANY_MAX, WaitAnyError, WaitAnyOutcome};
use shm_testkit::{SharedPage, TempPath, sleeps_on_futex, thread_id, wait_for};

/// Three futex words on lines of their own.
#[repr(C)]
struct Words([CachePadded<AtomicU32>; 3]);

fn page(tmp: &TempPath) -> SharedPage<Words> {
    // SAFETY: `Words` is atomics only, all-zero is valid, and the test touches the file
    // through them alone.
    unsafe { SharedPage::open(tmp.path()) }
}

/// A thread sleeps in `wait_any` on three words (seen asleep on a futex in `/proc`);
/// the third is changed and woken: the wait returns woken through index 2.
#[test]
fn woken_through_the_word_that_changed() {
    let tmp = TempPath::file("wait-any", 4096);
    let mapped = page(&tmp);
    let words = &mapped.get().0;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            tid_tx.send(thread_id()).unwrap();
            let list = [(&*words[0], 0), (&*words[1], 0), (&*words[2], 0)];
            futex::wait_any(&list, Some(Instant::now() + Duration::from_secs(30)))
        });
        let tid = tid_rx.recv().unwrap();
        wait_for(
            Duration::from_secs(10),
            "the waiter asleep on its futexes",
            || sleeps_on_futex(std::process::id(), tid).then_some(()),
        );
        words[2].store(1, Ordering::Release);
        assert_eq!(
            futex::wake(&words[2], 1),
            1,
            "one sleeper on the third word"
        );
        assert_eq!(waiter.join().unwrap(), Ok(WaitAnyOutcome::Woken(2)));
    });
}

/// A word that already differs: nothing sleeps.
#[test]
fn a_word_that_differs_sleeps_nothing() {
    let tmp = TempPath::file("wait-any-changed", 4096);
    let mapped = page(&tmp);
    let words = &mapped.get().0;
    words[1].store(5, Ordering::Relaxed);
    let list = [(&*words[0], 0), (&*words[1], 0)];
    assert_eq!(
        futex::wait_any(&list, None),
        Ok(WaitAnyOutcome::ValueChanged)
    );
}

/// Nothing wakes the words: `TimedOut`, never before the deadline; a deadline in the
/// past returns at once.
#[test]
fn the_deadline_is_kept() {
    let tmp = TempPath::file("wait-any-deadline", 4096);
    let mapped = page(&tmp);
    let words = &mapped.get().0;
    let list = [(&*words[0], 0), (&*words[1], 0), (&*words[2], 0)];
    let deadline = Instant::now() + Duration::from_millis(20);
    assert_eq!(
        futex::wait_any(&list, Some(deadline)),
        Ok(WaitAnyOutcome::TimedOut)
    );
    assert!(Instant::now() >= deadline);
    let past = Instant::now() - Duration::from_millis(1);
    assert_eq!(
        futex::wait_any(&list, Some(past)),
        Ok(WaitAnyOutcome::TimedOut)
    );
}

/// No word, or more than the kernel takes, is an error that says the limits.
#[test]
fn counts_outside_1_to_128_are_refused() {
    assert_eq!(futex::wait_any(&[], None), Err(WaitAnyError::Count(0)));
    let word = AtomicU32::new(0);
    let list = vec![(&word, 0); WAIT_ANY_MAX + 1];
    let refused = futex::wait_any(&list, None).unwrap_err();
    assert_eq!(refused, WaitAnyError::Count(129));
    assert!(refused.to_string().contains("1 to 128"), "{refused}");
    // The most the kernel takes: the word differs, so nothing sleeps.
    let full = vec![(&word, 1); WAIT_ANY_MAX];
    assert_eq!(
        futex::wait_any(&full, None),
        Ok(WaitAnyOutcome::ValueChanged)
    );
}
