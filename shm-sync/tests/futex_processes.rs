//! The futex across real processes: a child maps the same file and sleeps on a word in
//! it; the parent changes the word and wakes it. And the deadline of `wait`.
//!
//! The child is this test binary again, started on the ignored test `child` with the
//! file's path in `SHM_FUTEX_CHILD`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use shm_sync::CachePadded;
use shm_sync::atomic::{AtomicU32, Ordering};
use shm_sync::futex::{self, WaitOutcome};
use shm_testkit::{Reap, SharedPage, TempPath, sleeps_on_futex, wait_for};

const CHILD_ENV: &str = "SHM_FUTEX_CHILD";

/// The page both processes map.
#[repr(C)]
struct Page {
    /// The futex word.
    word: CachePadded<AtomicU32>,
    /// The thread id of the child's waiting thread, set just before it waits (0: not yet).
    waiter: CachePadded<AtomicU32>,
    /// The value of `word` the child read after waking, plus one (0: not yet).
    seen: CachePadded<AtomicU32>,
    /// The child's `WaitOutcome`: 1 woken, 2 value changed, 3 timed out (0: not yet).
    outcome: CachePadded<AtomicU32>,
}

/// A new zero-filled page-long file, removed when the returned guard drops.
fn temp_file(tag: &str) -> TempPath {
    TempPath::file(tag, 4096)
}

#[test]
#[ignore = "child process entry point, started by `child_parked_on_futex_is_woken_by_parent`"]
fn child() {
    let path = std::env::var(CHILD_ENV).expect("run by the parent test");
    let mapped = open_page(Path::new(&path));
    let page = mapped.get();
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    page.waiter.store(
        u32::try_from(tid).expect("thread ids are positive"),
        Ordering::Release,
    );
    let outcome = futex::wait(
        &page.word,
        0,
        Some(Instant::now() + Duration::from_secs(30)),
    );
    let seen = page.word.load(Ordering::Acquire);
    page.seen.store(seen + 1, Ordering::Release);
    let code = match outcome {
        WaitOutcome::Woken => 1,
        WaitOutcome::ValueChanged => 2,
        WaitOutcome::TimedOut => 3,
    };
    page.outcome.store(code, Ordering::Release);
}

#[test]
fn child_parked_on_futex_is_woken_by_parent() {
    let tmp = temp_file("futex-wake");
    let mapped = open_page(tmp.path());
    let page = mapped.get();
    let mut child = Reap(
        shm_testkit::child("child")
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Wait until the child sleeps in FUTEX_WAIT on the word (it cannot have changed:
    // only this process writes it).
    wait_for(
        Duration::from_secs(20),
        "the child, parked on the futex",
        || {
            let tid = page.waiter.load(Ordering::Acquire);
            (tid != 0 && sleeps_on_futex(child.0.id(), tid)).then_some(())
        },
    );
    assert_eq!(
        page.outcome.load(Ordering::Acquire),
        0,
        "child returned before the wake"
    );

    page.word.store(42, Ordering::Release);
    let woken = futex::wake(&page.word, 1);
    let status = child.0.wait().unwrap();

    assert!(status.success(), "child failed: {status}");
    assert_eq!(woken, 1, "the wake found no sleeper in the other process");
    assert_eq!(
        page.outcome.load(Ordering::Acquire),
        1,
        "child was not woken (1)"
    );
    assert_eq!(
        page.seen.load(Ordering::Acquire),
        43,
        "child did not see the new value 42"
    );
}

#[test]
fn wait_with_20ms_deadline_times_out_no_earlier() {
    let word = AtomicU32::new(5);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(20);
    let outcome = futex::wait(&word, 5, Some(deadline));
    let end = Instant::now();
    assert_eq!(outcome, WaitOutcome::TimedOut);
    assert!(
        end >= deadline,
        "returned {:?} before the deadline",
        deadline - end
    );
}

#[test]
fn wait_on_a_changed_value_returns_at_once() {
    let word = AtomicU32::new(5);
    assert_eq!(futex::wait(&word, 6, None), WaitOutcome::ValueChanged);
    assert_eq!(
        futex::wait(&word, 6, Some(Instant::now())),
        WaitOutcome::ValueChanged
    );
    assert_eq!(
        futex::wait(&word, 5, Some(Instant::now())),
        WaitOutcome::TimedOut
    );
}

#[test]
fn wake_with_no_sleeper_wakes_none() {
    let word = AtomicU32::new(0);
    assert_eq!(futex::wake(&word, 1), 0);
    assert_eq!(futex::wake_all(&word), 0);
}

/// The test's page in the file at `path`.
fn open_page(path: &Path) -> SharedPage<Page> {
    // SAFETY: `Page` is atomics only, all-zero is a valid `Page`, and both processes
    // touch the file through them alone.
    unsafe { SharedPage::open(path) }
}
