//! Wait strategies: how a blocked producer or consumer waits for its condition.
//!
//! The choice trades latency against a core: a busy-spinning consumer on a pinned,
//! isolated core sees a message within a cache-line transfer (tens to hundreds of ns)
//! and makes no syscall, but burns its core; a parked one frees the core and pays a
//! futex wake-up (about 24 us on a KVM guest, whose idle vCPU is halted). The names are
//! those of the LMAX Disruptor's wait strategies and Aeron's idle strategies.

use core::fmt;
use std::time::{Duration, Instant};

use crate::atomic::{AtomicU32, spin_loop};
use crate::event_count::{EventCount, Waiting};
use crate::futex::WaitOutcome;

/// How many spin iterations pass between two reads of the clock while spinning: a read
/// of `Instant::now()` costs about 20-40 ns (vDSO), a `spin_loop` hint 10-140 cycles
/// depending on the CPU, so checking every 64 keeps the clock under a few percent of the
/// loop and the deadline overshoot under a few microseconds.
pub const SPINS_PER_CLOCK_READ: u32 = 64;

/// How a blocking call waits for its condition. All honour a deadline.
///
/// | strategy | latency when the event comes | CPU while waiting | syscalls |
/// |---|---|---|---|
/// | `BusySpin` | lowest | 100% of a core | none |
/// | `Yield` | low, if the core is not shared | 100%, but yields to others | `sched_yield` per poll |
/// | `SpinThenPark` | as `BusySpin` within `spin`, as `Park` after | 100% for `spin`, then none | wait + wake after `spin` |
/// | `Park` | a futex wake-up (tens of us) | none | wait + wake |
///
/// Only a parked waiter costs the notifier a syscall: notifiers check the
/// [`EventCount`]'s waiter count and skip `FUTEX_WAKE` while it is zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitStrategy {
    /// Poll in a loop with `core::hint::spin_loop` between polls. For pinned cores.
    BusySpin,
    /// Poll, and call `sched_yield` between polls.
    Yield,
    /// Busy-spin for `spin`, then park.
    SpinThenPark {
        /// How long to busy-spin before parking.
        spin: Duration,
    },
    /// Park on the futex at once after one failed poll.
    Park,
}

impl WaitStrategy {
    /// The spin budget of [`WaitStrategy::default`]: 30 us.
    ///
    /// Chosen by the ski-rental rule: spin about as long as a park costs, which keeps the
    /// waiter within twice the best of "always spin" and "always park" whatever the
    /// arrival time. Measured on the 2-vCPU KVM guest this was chosen on, in one run of
    /// `cargo bench --bench futex`: a two-process round trip with both sides parking took
    /// 56 us (28 us one way: the waker's `FUTEX_WAKE`, about 250 ns, plus the sleeper being
    /// scheduled on a halted vCPU), against 74 ns with both busy-spinning. 30 us is that
    /// one-way park cost, rounded up.
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(30);

    /// Waits until `poll` returns `Some`, and returns that value; or returns
    /// [`TimedOut`] once `deadline` (absolute, monotonic; `None`: never) has passed and
    /// one last poll still found nothing.
    ///
    /// `poll` must be cheap and must not block: it is called in a loop. `event` is the
    /// event count that whoever makes `poll` succeed notifies afterwards; it is used by
    /// the parking strategies (announce, re-poll, sleep) and ignored by the others.
    ///
    /// # Errors
    ///
    /// [`TimedOut`] when the deadline passes first.
    pub fn wait_for<R>(
        &self,
        event: &EventCount,
        deadline: Option<Instant>,
        poll: impl FnMut() -> Option<R>,
    ) -> Result<R, TimedOut> {
        self.wait_for_marked(event, None, deadline, || {}, poll)
    }

    /// [`wait_for`](Self::wait_for) for a waiter that may die while parked: while it is
    /// counted as a waiter of `event`, `mark` (a word of its own in shared memory) is 1,
    /// so that whoever settles it after its death withdraws its count
    /// ([`EventCount::settle_dead_waiter`]). `None` marks nothing. `parked` is called
    /// before each sleep on the futex (to count parks; never on the spinning path).
    ///
    /// # Errors
    ///
    /// [`TimedOut`] when the deadline passes first.
    pub fn wait_for_marked<R>(
        &self,
        event: &EventCount,
        mark: Option<&AtomicU32>,
        deadline: Option<Instant>,
        mut parked: impl FnMut(),
        mut poll: impl FnMut() -> Option<R>,
    ) -> Result<R, TimedOut> {
        if let Some(value) = poll() {
            return Ok(value);
        }
        match *self {
            Self::BusySpin => {
                spin_until(deadline, None, &mut poll).unwrap_or_else(|| poll().ok_or(TimedOut))
            }
            Self::Yield => loop {
                yield_now();
                if let Some(value) = poll() {
                    return Ok(value);
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return poll().ok_or(TimedOut);
                }
            },
            Self::SpinThenPark { spin } => {
                let spin_end = Instant::now().checked_add(spin);
                match spin_until(deadline, spin_end, &mut poll) {
                    Some(result) => result,
                    None => park(event, mark, deadline, &mut parked, &mut poll),
                }
            }
            Self::Park => park(event, mark, deadline, &mut parked, &mut poll),
        }
    }
}

impl Default for WaitStrategy {
    /// `SpinThenPark` with [`WaitStrategy::DEFAULT_SPIN`].
    fn default() -> Self {
        Self::SpinThenPark {
            spin: Self::DEFAULT_SPIN,
        }
    }
}

impl fmt::Debug for WaitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BusySpin => f.write_str("BusySpin"),
            Self::Yield => f.write_str("Yield"),
            Self::SpinThenPark { spin } => write!(f, "SpinThenPark {{ spin: {spin:?} }}"),
            Self::Park => f.write_str("Park"),
        }
    }
}

/// A blocking call's deadline passed before its condition held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline passed before the condition held")
    }
}

impl std::error::Error for TimedOut {}

/// Spins until `poll` succeeds (`Some(Ok)`), `deadline` passes (`Some(Err)`, after a
/// last poll), or `spin_end` passes (`None`: the caller moves on to parking).
#[inline]
fn spin_until<R>(
    deadline: Option<Instant>,
    spin_end: Option<Instant>,
    poll: &mut impl FnMut() -> Option<R>,
) -> Option<Result<R, TimedOut>> {
    let check_clock = deadline.is_some() || spin_end.is_some();
    let mut spins = 0u32;
    loop {
        spin_loop();
        if let Some(value) = poll() {
            return Some(Ok(value));
        }
        spins = spins.wrapping_add(1);
        if check_clock && spins % SPINS_PER_CLOCK_READ == 0 {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Some(poll().ok_or(TimedOut));
            }
            if spin_end.is_some_and(|e| now >= e) {
                return None;
            }
        }
    }
}

/// The parking loop of the event-count protocol: announce (marking `mark`, if any),
/// re-poll, call `parked`, sleep.
#[cold]
fn park<R>(
    event: &EventCount,
    mark: Option<&AtomicU32>,
    deadline: Option<Instant>,
    parked: &mut impl FnMut(),
    poll: &mut impl FnMut() -> Option<R>,
) -> Result<R, TimedOut> {
    let waiting = Waiting { event, mark };
    loop {
        let key = waiting.prepare();
        if let Some(value) = poll() {
            waiting.cancel();
            return Ok(value);
        }
        parked();
        match waiting.wait(key, deadline) {
            WaitOutcome::TimedOut => return poll().ok_or(TimedOut),
            WaitOutcome::Woken | WaitOutcome::ValueChanged => {
                if let Some(value) = poll() {
                    return Ok(value);
                }
            }
        }
    }
}

fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const STRATEGIES: [WaitStrategy; 4] = [
        WaitStrategy::BusySpin,
        WaitStrategy::Yield,
        WaitStrategy::SpinThenPark {
            spin: Duration::from_micros(20),
        },
        WaitStrategy::Park,
    ];

    #[test]
    fn ready_at_once_returns_the_value() {
        let ec = EventCount::new();
        for s in STRATEGIES {
            assert_eq!(s.wait_for(&ec, None, || Some(42)), Ok(42), "{s:?}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "sleeps on a real futex and reads the clock")]
    fn every_strategy_times_out_no_earlier_than_its_deadline() {
        let ec = EventCount::new();
        for s in STRATEGIES {
            let start = Instant::now();
            let deadline = start + Duration::from_millis(5);
            assert_eq!(
                s.wait_for(&ec, Some(deadline), || None::<()>),
                Err(TimedOut),
                "{s:?}"
            );
            assert!(
                Instant::now() >= deadline,
                "{s:?} returned before its deadline"
            );
            assert_eq!(ec.waiters(), 0, "{s:?} left a waiter announced");
        }
    }

    /// `SpinThenPark` spins for its spin phase before it announces itself: a wait whose
    /// deadline comes inside the spin phase never parks (the waiter count, sampled by
    /// the waiting thread's poll itself, stays 0), and `Park` announces at once.
    #[test]
    #[cfg_attr(miri, ignore = "reads the clock in a loop")]
    fn spin_then_park_spins_before_it_parks() {
        let ec = EventCount::new();
        let spin = WaitStrategy::SpinThenPark {
            spin: Duration::from_secs(60),
        };
        let deadline = Instant::now() + Duration::from_millis(20);
        let mut announced = 0;
        let waited = spin.wait_for(&ec, Some(deadline), || {
            announced = announced.max(ec.waiters());
            None::<()>
        });
        assert_eq!(waited, Err(TimedOut));
        assert_eq!(announced, 0, "parked during its spin phase");
        let mut announced = 0;
        let deadline = Instant::now() + Duration::from_millis(20);
        let waited = WaitStrategy::Park.wait_for(&ec, Some(deadline), || {
            announced = announced.max(ec.waiters());
            None::<()>
        });
        assert_eq!(waited, Err(TimedOut));
        assert_eq!(announced, 1, "Park announces itself before its re-check");
    }

    #[test]
    fn strategies_and_timeouts_print_what_they_are() {
        let printed: Vec<String> = STRATEGIES.iter().map(|s| format!("{s:?}")).collect();
        assert_eq!(
            printed,
            ["BusySpin", "Yield", "SpinThenPark { spin: 20µs }", "Park"]
        );
        assert_eq!(
            TimedOut.to_string(),
            "deadline passed before the condition held"
        );
    }

    /// The value is published only once the waiter is in its wait: it has polled
    /// twice, and, for the strategies that park, sleeps on the futex (seen in `/proc`).
    #[test]
    #[cfg_attr(miri, ignore = "sleeps on a real futex and reads /proc")]
    fn every_strategy_sees_a_value_published_by_another_thread() {
        for s in STRATEGIES {
            let ec = Arc::new(EventCount::new());
            let value = Arc::new(AtomicU64::new(0));
            let polls = Arc::new(AtomicU64::new(0));
            let (ec2, value2, polls2) = (ec.clone(), value.clone(), polls.clone());
            let (tid_tx, tid) = std::sync::mpsc::channel();
            let waiter = std::thread::spawn(move || {
                tid_tx.send(shm_testkit::thread_id()).unwrap();
                s.wait_for(&ec2, None, || {
                    polls2.fetch_add(1, Ordering::Relaxed);
                    match value2.load(Ordering::Acquire) {
                        0 => None,
                        v => Some(v),
                    }
                })
            });
            let tid = tid.recv().unwrap();
            let parks = matches!(s, WaitStrategy::Park | WaitStrategy::SpinThenPark { .. });
            shm_testkit::wait_for(Duration::from_secs(10), "the waiter, waiting", || {
                // Relaxed: a progress count, read for the test's pacing only.
                let polled = polls.load(Ordering::Relaxed) >= 2;
                let asleep = !parks || shm_testkit::sleeps_on_futex(std::process::id(), tid);
                (polled && asleep).then_some(())
            });
            value.store(7, Ordering::Release);
            ec.notify();
            assert_eq!(waiter.join().unwrap(), Ok(7), "{s:?}");
        }
    }
}
