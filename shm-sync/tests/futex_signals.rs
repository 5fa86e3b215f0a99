//! A futex wait interrupted by signals (a handler installed without `SA_RESTART`, so that
//! the kernel returns `EINTR`) goes back to sleep until its own deadline: it neither
//! returns early nor sleeps longer with each interruption.

use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shm_sync::atomic::{AtomicBool, AtomicU32, Ordering};
use shm_sync::futex::{self, WaitOutcome};

extern "C" fn ignore(_: libc::c_int) {}

/// Installs a no-op SIGUSR1 handler without `SA_RESTART`.
fn install_handler() {
    // SAFETY: a zeroed `sigaction` is a valid value to fill in; the handler is an
    // async-signal-safe no-op; SIGUSR1 is not used by the test harness.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
}

#[test]
fn a_wait_interrupted_by_signals_times_out_at_its_deadline() {
    const DEADLINE: Duration = Duration::from_millis(50);
    install_handler();
    let word = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (w, d) = (word.clone(), done.clone());
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        let outcome = futex::wait(&w, 0, Some(start + DEADLINE));
        let elapsed = start.elapsed();
        d.store(true, Ordering::Release);
        (outcome, elapsed)
    });
    let thread = waiter.as_pthread_t();
    // A signal every millisecond for up to 2 s, or until the wait ends.
    let mut signals = 0;
    let give_up = Instant::now() + Duration::from_secs(2);
    while !done.load(Ordering::Acquire) && Instant::now() < give_up {
        // SAFETY: the thread is alive until `done` is set, and joined only below.
        assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR1) }, 0);
        signals += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let (outcome, elapsed) = waiter.join().unwrap();
    assert_eq!(outcome, WaitOutcome::TimedOut, "after {signals} signals");
    assert!(
        elapsed >= DEADLINE,
        "returned after {elapsed:?}, before its deadline"
    );
    assert!(
        signals > 5,
        "only {signals} signals sent: nothing was interrupted"
    );
    // A wait that restarted its timeout at each signal would still be asleep when the
    // signals stop, 2 s later.
    assert!(
        elapsed < Duration::from_secs(1),
        "returned after {elapsed:?}: each interruption stretched the deadline"
    );
}
