//! Whether a ring's peers live: when to probe their role locks, and what was found.
//!
//! A peer's death is seen by probing its OFD lock, a syscall (about 0.5-1 us), so a
//! polling side probes once every [`LIVENESS_POLLS`] empty (or full) polls and at least
//! [`LIVENESS_PROBE_INTERVAL`] apart, and a blocked one every [`LIVENESS_PERIOD`]. The
//! probe itself is the region's ([`Region::is_locked`](super::region::Region::is_locked)).

use std::time::{Duration, Instant};

use shm_sync::Notified;

/// How many consecutive empty (consumer) or full (producer) polls pass between two reads
/// of the clock, to see whether a probe of the peer's liveness lock is due
/// ([`LIVENESS_PROBE_INTERVAL`]). A clock read costs about 25 ns (vDSO), a poll of an
/// empty ring 5-100 ns: one read per 1024 polls is noise.
pub const LIVENESS_POLLS: u32 = 1024;

/// The least time between two probes of the peer's liveness lock while polling. A probe
/// is a syscall (`F_OFD_GETLK`, about 0.5-1 us on a KVM guest) during which a message
/// that arrives waits; once a millisecond keeps that under 0.1% of a polling loop, and
/// sees a death within about a millisecond.
pub const LIVENESS_PROBE_INTERVAL: Duration = Duration::from_millis(1);

/// How often a blocked `send`/`recv` probes the peer's liveness lock while it waits: a
/// parked side cannot count polls, so it wakes this often. 10 ms bounds how late a death
/// is seen, and costs a sleeping thread 100 wake-ups a second.
pub const LIVENESS_PERIOD: Duration = Duration::from_millis(10);

/// Idle wake-ups (a `FUTEX_WAKE` that woke nobody) after which a handle probes its peers:
/// a waiter killed while parked stays counted, and makes every notify a syscall until
/// someone settles it. A live waiter between its announcement and its sleep also makes a
/// wake-up idle, now and then; 64 of them since the last probe cost one.
pub(crate) const IDLE_WAKES_BEFORE_PROBE: u32 = 64;

/// The polls between two probes. Under loom, which has no clock, the count alone
/// decides: 16 is enough that a model whose side parks rarely probes (each probe is a
/// dozen more atomic operations to interleave), few enough that a polling model reaches
/// the crash handling at once.
const POLLS: u32 = if cfg!(loom) { 16 } else { LIVENESS_POLLS };

/// The peer-watching state of a handle: how many polls since the last probe, when that
/// was, and the peer's session word when it was last found dead.
#[derive(Debug, Default)]
pub(crate) struct PeerWatch {
    /// Consecutive empty/full polls since the last liveness probe.
    polls: u32,
    /// When the peer's lock was last probed.
    last_probe: Option<Instant>,
    /// The peer's session word when it was found dead: gone until the word changes.
    pub(crate) dead_word: Option<u32>,
    /// Wake-ups this handle made that found nobody asleep, since its last probe for them.
    idle_wakes: u32,
}

impl PeerWatch {
    /// Counts one empty (or full) poll and says whether to probe the peer's liveness now:
    /// when `probe` asks for it, or once [`LIVENESS_POLLS`] polls have passed and
    /// [`LIVENESS_PROBE_INTERVAL`] since the last probe (one clock read per that many
    /// polls; under loom the count alone). Records the probe.
    pub(crate) fn tick(&mut self, probe: bool) -> bool {
        self.polls += 1;
        if !probe && self.polls < POLLS {
            return false;
        }
        self.polls = 0;
        if cfg!(loom) {
            return true;
        }
        self.due_at(probe, Instant::now())
    }

    /// Whether a probe is due at `now`, once the polls are counted: when `probe` asks
    /// for it, or [`LIVENESS_PROBE_INTERVAL`] after the last. Records the probe.
    fn due_at(&mut self, probe: bool, now: Instant) -> bool {
        if !probe
            && self
                .last_probe
                .is_some_and(|t| now.duration_since(t) < LIVENESS_PROBE_INTERVAL)
        {
            return false;
        }
        self.last_probe = Some(now);
        true
    }

    /// Takes note of what a wake-up this handle made did, and says whether to probe the
    /// peers now: after [`IDLE_WAKES_BEFORE_PROBE`] wake-ups that woke nobody (a parked
    /// peer that died is settled by the probe, and stops costing a syscall per notify).
    #[inline]
    pub(crate) fn woke(&mut self, notified: Notified) -> bool {
        if notified != Notified::Idle {
            return false;
        }
        self.idle_wakes += 1;
        if self.idle_wakes < IDLE_WAKES_BEFORE_PROBE {
            return false;
        }
        self.idle_wakes = 0;
        true
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::{Duration, Instant};

    use shm_sync::Notified;

    use super::{IDLE_WAKES_BEFORE_PROBE, LIVENESS_POLLS, LIVENESS_PROBE_INTERVAL, PeerWatch};

    /// A handle that never probed probes at its `LIVENESS_POLLS`-th poll, and at once
    /// when asked; the count starts again after each probe.
    #[test]
    fn a_probe_comes_after_liveness_polls_or_when_asked() {
        let mut watch = PeerWatch::default();
        for round in 0..2 {
            for poll in 1..LIVENESS_POLLS {
                assert!(!watch.tick(false), "round {round}, poll {poll}");
            }
            // As if never probed (the interval is the next test's).
            watch.last_probe = None;
            assert!(watch.tick(false), "round {round}, poll {LIVENESS_POLLS}");
        }
        assert!(watch.tick(true), "asked for");
        assert!(watch.tick(true), "asked for, again at once");
        assert!(!watch.tick(false), "the count starts again after a probe");
    }

    /// Between two probes while polling pass at least `LIVENESS_PROBE_INTERVAL`: a due
    /// probe sooner is passed over (and the polls counted again), one at the interval
    /// or later is made; one asked for is made at any time.
    #[test]
    fn probes_while_polling_are_at_least_the_interval_apart() {
        let start = Instant::now();
        let mut watch = PeerWatch::default();
        assert!(watch.due_at(false, start), "never probed before");
        let soon = start + LIVENESS_PROBE_INTERVAL - Duration::from_nanos(1);
        assert!(!watch.due_at(false, soon));
        assert!(!watch.due_at(false, start), "the clock read the same");
        assert_eq!(
            watch.last_probe,
            Some(start),
            "a probe passed over is not one"
        );
        assert!(watch.due_at(false, start + LIVENESS_PROBE_INTERVAL));
        assert!(watch.due_at(true, start + LIVENESS_PROBE_INTERVAL));
        assert!(!watch.due_at(false, soon + LIVENESS_PROBE_INTERVAL));
        assert!(watch.due_at(false, start + 3 * LIVENESS_PROBE_INTERVAL));
    }

    /// Every `IDLE_WAKES_BEFORE_PROBE`-th wake-up that woke nobody calls for a probe;
    /// a wake-up that woke someone, or that found nobody announced, is not counted.
    #[test]
    fn idle_wake_ups_call_for_a_probe_every_so_many() {
        let mut watch = PeerWatch::default();
        for round in 0..2 {
            for idle in 1..IDLE_WAKES_BEFORE_PROBE {
                assert!(!watch.woke(Notified::Idle), "round {round}, idle {idle}");
                assert!(!watch.woke(Notified::Woke));
                assert!(!watch.woke(Notified::Quiet));
            }
            assert!(watch.woke(Notified::Idle), "round {round}");
        }
    }
}
