//! One side's shared view of an SPSC ring: its region, its role, its session word, and
//! what it knows of its peer's.

use shm_sync::atomic::{AtomicU32, Ordering};
use shm_sync::{EventCount, WaitStrategy};

use super::layout::{
    ABSENT, ATTACHED, CLOSED, CONSUMER_ROLE, Control, GENERATION_ONE, PRODUCER_ROLE, STATE_MASK,
    Slot,
};
use crate::core::activity::Activity;
use crate::core::liveness::PeerWatch;
use crate::core::region::{Region, RoleLock};
use crate::error::{Corruption, Error};

/// What a session word may hold, for [`Corruption::State`].
const SESSION_STATES: &str = "state 0 (absent), 1 (attached) or 2 (closed) in its low two bits";

/// Which of the two sides a handle is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Side {
    Producer,
    Consumer,
}

impl Side {
    fn role(self) -> u32 {
        match self {
            Side::Producer => PRODUCER_ROLE,
            Side::Consumer => CONSUMER_ROLE,
        }
    }

    fn other(self) -> Side {
        match self {
            Side::Producer => Side::Consumer,
            Side::Consumer => Side::Producer,
        }
    }

    fn word_name(self) -> &'static str {
        match self {
            Side::Producer => "the producer's session word",
            Side::Consumer => "the consumer's session word",
        }
    }
}

/// How a peer's session looks from this side.
pub(crate) enum PeerState {
    /// Absent or attached: it may still send or receive.
    Present,
    /// Closed, or found dead: it is gone.
    Gone,
}

/// One side's view of an SPSC ring: shared by the handle's calls, never mutated by
/// them (the handle's cursor holds what changes).
pub(crate) struct Ring<T> {
    pub(crate) region: Region<Control, (), Slot<T>>,
    side: Side,
    /// How this side's blocking calls wait.
    pub(crate) wait: WaitStrategy,
    /// Set once this side stored ATTACHED: only then does `Drop` store CLOSED.
    attached: bool,
    _role: RoleLock,
}

impl<T> Ring<T> {
    /// Takes `side`'s role in `region`; the side is not attached until
    /// [`mark_attached`](Self::mark_attached).
    ///
    /// # Errors
    ///
    /// [`Error::Segment`] with `RoleTaken` if another handle holds the role.
    pub(crate) fn new(
        region: Region<Control, (), Slot<T>>,
        side: Side,
        wait: WaitStrategy,
    ) -> Result<Self, Error> {
        let role = region.claim_role(side.role())?;
        Ok(Ring {
            region,
            side,
            wait,
            attached: false,
            _role: role,
        })
    }

    #[inline(always)]
    pub(crate) fn control(&self) -> &Control {
        self.region.control()
    }

    #[inline(always)]
    pub(crate) fn capacity(&self) -> u64 {
        self.region.capacity()
    }

    /// Checks a pair of positions read from shared memory: `head <= tail <= head +
    /// capacity`, with wrapping arithmetic. Returns how many slots are used.
    #[inline(always)]
    pub(crate) fn check(&self, head: u64, tail: u64) -> Result<u64, Corruption> {
        let used = tail.wrapping_sub(head);
        if used <= self.capacity() {
            Ok(used)
        } else {
            Err(Corruption::Positions {
                head,
                tail,
                capacity: self.capacity(),
            })
        }
    }

    /// Where a run of `len <= capacity` slots from `position` lies: the first slot of
    /// the buffer, the run's start index, and how many of its slots come before the end
    /// of the buffer (the rest continue from index 0). For the chunk slices.
    #[cfg(not(loom))]
    pub(crate) fn run(&self, position: u64, len: usize) -> (*mut T, usize, usize) {
        let capacity = self.capacity() as usize;
        let index = (position & (self.capacity() - 1)) as usize;
        // A slot is `UnsafeCell<T>`, `repr(transparent)` over `T`.
        let base = self.region.slots().as_ptr().cast::<T>();
        (base, index, len.min(capacity - index))
    }

    fn session(&self, side: Side) -> &AtomicU32 {
        match side {
            Side::Producer => &self.control().session.producer,
            Side::Consumer => &self.control().session.consumer,
        }
    }

    /// The peer's session word.
    #[inline(always)]
    pub(crate) fn peer_session(&self) -> &AtomicU32 {
        self.session(self.side.other())
    }

    /// This side's activity counters.
    #[inline(always)]
    pub(crate) fn activity(&self) -> &Activity {
        match self.side {
            Side::Producer => &self.control().producer_activity,
            Side::Consumer => &self.control().consumer_activity,
        }
    }

    /// The event this side waits on: `not_full` for the producer, `not_empty` for the
    /// consumer.
    pub(crate) fn own_event(&self) -> &EventCount {
        match self.side {
            Side::Producer => &self.control().not_full,
            Side::Consumer => &self.control().not_empty,
        }
    }

    /// Marks this side attached, one generation on, and clears the waiter count of the
    /// event this side waits on: only the holder of this role ever waits there, so a
    /// non-zero count was left by a predecessor that died while parked, and would make
    /// every notify of the peer a needless `FUTEX_WAKE`.
    pub(crate) fn mark_attached(&mut self) -> Result<(), Corruption> {
        let word = self.session(self.side);
        // Relaxed: only this side writes its word, and it holds the role.
        let old = word.load(Ordering::Relaxed);
        if old & STATE_MASK == STATE_MASK {
            return Err(Corruption::State {
                word: self.side.word_name(),
                found: old,
                expected: SESSION_STATES,
            });
        }
        let generation = (old & !STATE_MASK).wrapping_add(GENERATION_ONE);
        // SYNC(session): Release; the peer's Acquire load sees the positions as of attach.
        word.store(generation | ATTACHED, Ordering::Release);
        self.attached = true;
        self.own_event().reset_waiters();
        Ok(())
    }

    /// Reads the peer's session; probes its lock when `probe`, or when `watch` says a
    /// probe is due.
    pub(crate) fn peer_state(
        &self,
        watch: &mut PeerWatch,
        probe: bool,
    ) -> Result<PeerState, Corruption> {
        // SYNC(session): Acquire; pairs with the peer's Release store of its word, so a
        // re-read of its position afterwards sees its last store.
        let word = self.peer_session().load(Ordering::Acquire);
        match word & STATE_MASK {
            ABSENT => Ok(PeerState::Present),
            CLOSED => Ok(PeerState::Gone),
            ATTACHED => {
                if watch.dead_word == Some(word) {
                    return Ok(PeerState::Gone);
                }
                if !self.region.peers_may_die() {
                    return Ok(PeerState::Present);
                }
                if watch.tick(probe) && !self.region.is_locked(self.side.other().role()) {
                    watch.dead_word = Some(word);
                    return Ok(PeerState::Gone);
                }
                Ok(PeerState::Present)
            }
            _ => Err(Corruption::State {
                word: self.side.other().word_name(),
                found: word,
                expected: SESSION_STATES,
            }),
        }
    }

    /// The peer's session state (the low two bits of its word).
    pub(crate) fn peer_session_state(&self) -> u32 {
        // SYNC(session): Acquire.
        self.peer_session().load(Ordering::Acquire) & STATE_MASK
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let word = self.session(self.side);
        // Relaxed: only this side writes its word.
        let old = word.load(Ordering::Relaxed);
        if self.attached && old & STATE_MASK == ATTACHED {
            // SYNC(session): Release; after this side's last position store, so a peer
            // that sees CLOSED and re-reads the position sees every message.
            word.store((old & !STATE_MASK) | CLOSED, Ordering::Release);
        }
        // Wake a peer parked on its event, so it sees the close.
        let peer_event = match self.side {
            Side::Producer => &self.control().not_empty,
            Side::Consumer => &self.control().not_full,
        };
        self.activity().woke(peer_event.notify());
    }
}
