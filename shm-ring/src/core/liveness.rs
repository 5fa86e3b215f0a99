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
/// wake-up idle, now and then; 64 in a row cost one probe.
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
        let now = Instant::now();
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
