//! A participant of an MPMC ring: taking an entry of the table, watching the other
//! side's liveness, finishing what a forgotten reservation or guard left, and leaving.

use shm_sync::atomic::Ordering;
use shm_sync::{Notified, WaitStrategy};

use super::Stats;
use super::layout::{SKIPPED, Side};
use super::ring::Ring;
use crate::core::liveness::PeerWatch;
use crate::core::region::RoleLock;
use crate::error::{Corruption, Error};

/// A participant's own state: its entry of the table, the lock that holds it, and what
/// its calls change. The ring it belongs to is passed to each call.
pub(crate) struct Member {
    pub(crate) side: Side,
    pub(crate) index: u32,
    /// The session word this participant stored at attach.
    session: u32,
    /// `None` only after a simulated crash (tests).
    pub(crate) lock: Option<RoleLock>,
    /// A position claimed and not yet finished: a reservation or guard still out, or
    /// forgotten with `mem::forget`.
    pub(crate) pending: Option<u64>,
    pub(crate) wait: WaitStrategy,
    /// When the other side's locks were last probed, the polls since, and the idle
    /// wake-ups this participant made.
    watch: PeerWatch,
    /// Messages sent or received in this session (stored in the entry's activity line).
    messages: u64,
}

impl Member {
    /// Takes the first free entry of the table, retiring a dead holder found in it.
    pub(crate) fn attach<T>(ring: &Ring<T>, side: Side, wait: WaitStrategy) -> Result<Self, Error> {
        ring.check_positions().map_err(Error::Corrupted)?;
        let table = ring.table();
        let claimed = table.claim(side.session_state(), |index, session| {
            ring.settle_dead(index, session).map_err(Error::Corrupted)
        })?;
        let Some(claimed) = claimed else {
            return Err(Error::ParticipantsFull {
                limit: ring.limit(),
            });
        };
        table.mark(&claimed);
        // A new session's counts: whatever a previous holder left is not this one's.
        ring.activity(claimed.index).reset();
        // On the bitmap once the entry says so: killed in between, it is settled as a
        // dead participant, whose bit is cleared whether or not it was set.
        ring.enlist(side, claimed.index);
        Ok(Member {
            side,
            index: claimed.index,
            session: claimed.session,
            lock: Some(claimed.guard),
            pending: None,
            wait,
            watch: PeerWatch::default(),
            messages: 0,
        })
    }

    /// Counts an empty (or full) poll; probes the other side's locks when `probe`, or
    /// after [`LIVENESS_POLLS`] polls once [`LIVENESS_PROBE_INTERVAL`] has passed.
    #[cold]
    pub(crate) fn watch<T>(&mut self, ring: &Ring<T>, probe: bool) -> Result<(), Corruption> {
        if self.probe_due(probe) {
            self.probe(ring)?;
        }
        Ok(())
    }

    /// Counts an empty (or full) poll, as [`watch`](Self::watch), and says whether a
    /// probe is due now, without making it: the caller makes it with [`probe`](Self::probe),
    /// after the checks that a plain poll skips.
    #[inline]
    pub(crate) fn probe_due(&mut self, probe: bool) -> bool {
        self.watch.tick(probe)
    }

    /// Probes the other side's locks, settling its dead participants.
    #[cold]
    pub(crate) fn probe<T>(&self, ring: &Ring<T>) -> Result<(), Corruption> {
        ring.reap(self.side.other(), self.index)
    }

    /// Counts one message sent or received, whose slot's finish notified as
    /// `notified`; takes note of what that wake-up did, and after
    /// `IDLE_WAKES_BEFORE_PROBE` that woke nobody, probes the other side (whose dead
    /// parked waiters it settles). A corrupt table found by the probe is left for the
    /// next call that can report it.
    #[inline]
    pub(crate) fn finished<T>(&mut self, ring: &Ring<T>, notified: Notified) {
        self.messages = self.messages.wrapping_add(1);
        let activity = ring.activity(self.index);
        activity.set_messages(self.messages);
        if self.watch.woke(activity.woke(notified)) {
            let _ = self.watch(ring, true);
        }
    }

    /// Finishes a position left pending by a forgotten reservation (as aborted) or guard
    /// (released).
    #[cold]
    pub(crate) fn finish_pending<T>(&mut self, ring: &Ring<T>) {
        if let Some(position) = self.pending.take() {
            if self.side == Side::Producer {
                // Relaxed: a statistic.
                ring.control()
                    .counters
                    .aborted
                    .fetch_add(1, Ordering::Relaxed);
            }
            ring.finish(self.side, position, SKIPPED);
        }
    }

    pub(crate) fn stats<T>(ring: &Ring<T>) -> Stats {
        let control = ring.control();
        // Relaxed: a snapshot of statistics.
        Stats {
            producers: ring.count(Side::Producer),
            consumers: ring.count(Side::Consumer),
            skipped: control.counters.skipped.load(Ordering::Relaxed),
            aborted: control.counters.aborted.load(Ordering::Relaxed),
            reclaimed: control.counters.reclaimed.load(Ordering::Relaxed),
            parked_consumers: ring.wait_event(Side::Consumer).waiters(),
            parked_producers: ring.wait_event(Side::Producer).waiters(),
        }
    }

    /// Ends the session cleanly: settles what is pending, frees the entry, and then
    /// (dropping the lock) the role.
    pub(crate) fn leave<T>(&mut self, ring: &Ring<T>) {
        if self.lock.is_none() {
            return;
        }
        self.finish_pending(ring);
        ring.leave(self.index, self.session, self.side);
        self.lock = None;
    }
}
