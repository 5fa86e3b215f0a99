//! How a call waits, and one vocabulary for why it could not go on.
//!
//! Every flavour's non-blocking step returns `Result<R, Refusal>`: `Busy` (full for a
//! sender, empty for a receiver), `Disconnected` or `Corrupted`. The public errors follow
//! mechanically: a `try_` call maps `Busy` to `Full`/`Empty`, a blocking call runs the
//! step in [`block`] and maps `Busy` (only returned once the deadline passed) to
//! `Timeout`, and a call without deadline cannot time out. Values a send did not deliver
//! come back in the error.

use std::time::Instant;

use shm_sync::atomic::AtomicU32;
use shm_sync::{EventCount, TimedOut, WaitStrategy};

use super::activity::Activity;
use super::liveness::LIVENESS_PERIOD;
use crate::error::{
    Corruption, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};

/// Why a step could not go on: the value-less form of every operation's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Full (sending) or empty (receiving): try again later.
    Busy,
    /// The other side is gone: closed or dead.
    Disconnected,
    /// The ring's shared state is inconsistent.
    Corrupted(Corruption),
}

impl From<Corruption> for Refusal {
    fn from(c: Corruption) -> Self {
        Refusal::Corrupted(c)
    }
}

impl Refusal {
    /// The error of a non-blocking send, with the value back.
    pub(crate) fn try_send<T>(self, value: T) -> TrySendError<T> {
        match self {
            Self::Busy => TrySendError::Full(value),
            Self::Disconnected => TrySendError::Disconnected(value),
            Self::Corrupted(c) => TrySendError::Corrupted(value, c),
        }
    }

    /// The error of a send with a deadline: `Busy` after [`block`] means it passed.
    pub(crate) fn send_timeout<T>(self, value: T) -> SendTimeoutError<T> {
        match self {
            Self::Busy => SendTimeoutError::Timeout(value),
            Self::Disconnected => SendTimeoutError::Disconnected(value),
            Self::Corrupted(c) => SendTimeoutError::Corrupted(value, c),
        }
    }

    /// The error of a non-blocking receive.
    pub(crate) fn try_recv(self) -> TryRecvError {
        match self {
            Self::Busy => TryRecvError::Empty,
            Self::Disconnected => TryRecvError::Disconnected,
            Self::Corrupted(c) => TryRecvError::Corrupted(c),
        }
    }

    /// The error of a receive with a deadline: `Busy` after [`block`] means it passed.
    pub(crate) fn recv_timeout(self) -> RecvTimeoutError {
        match self {
            Self::Busy => RecvTimeoutError::Timeout,
            Self::Disconnected => RecvTimeoutError::Disconnected,
            Self::Corrupted(c) => RecvTimeoutError::Corrupted(c),
        }
    }
}

impl<T> From<SendTimeoutError<T>> for SendError<T> {
    /// The error of a send without deadline, from the same send with deadline `None`
    /// (which never times out).
    fn from(e: SendTimeoutError<T>) -> Self {
        match e {
            SendTimeoutError::Disconnected(v) | SendTimeoutError::Timeout(v) => {
                SendError::Disconnected(v)
            }
            SendTimeoutError::Corrupted(v, c) => SendError::Corrupted(v, c),
        }
    }
}

impl From<RecvTimeoutError> for RecvError {
    /// The error of a receive without deadline, from the same receive with deadline
    /// `None` (which never times out).
    fn from(e: RecvTimeoutError) -> Self {
        match e {
            RecvTimeoutError::Corrupted(c) => RecvError::Corrupted(c),
            RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout => RecvError::Disconnected,
        }
    }
}

/// Runs `step` until it is not [`Refusal::Busy`], waiting on `event` with `wait` in
/// between, or until `deadline` (`None`: never) passes, which returns `Busy`. A waiter
/// that others settle if it dies parked (a participant of a table) gives its entry's
/// parking `mark` (see `EventCount::prepare_wait_marked`).
///
/// `step(probe)`: `probe` asks it to probe its peers' liveness now. A side whose peers
/// can die without closing (`peers_may_die`: the ring is in a segment) waits in slices of
/// [`LIVENESS_PERIOD`] and steps with `probe = true` after each slice, so that a dead
/// peer is seen within a slice even while parked.
///
/// Counts on the waiter's `activity` one stall when the first step is refused, and each
/// park.
pub(crate) fn block<R>(
    event: &EventCount,
    mark: Option<&AtomicU32>,
    activity: &Activity,
    wait: WaitStrategy,
    peers_may_die: bool,
    deadline: Option<Instant>,
    mut step: impl FnMut(bool) -> Result<R, Refusal>,
) -> Result<R, Refusal> {
    let mut probe = false;
    let mut first = true;
    loop {
        match step(probe) {
            Err(Refusal::Busy) => {}
            done => return done,
        }
        if first {
            activity.stalled();
            first = false;
        }
        let waited = wait.wait_for_marked(
            event,
            mark,
            slice_deadline(deadline, peers_may_die),
            || activity.parked(),
            || match step(false) {
                Err(Refusal::Busy) => None,
                done => Some(done),
            },
        );
        match waited {
            Ok(done) => return done,
            // `wait_for` stepped once more at the deadline and found nothing.
            Err(TimedOut) if deadline.is_some_and(|d| Instant::now() >= d) => {
                return Err(Refusal::Busy);
            }
            // A liveness slice ended: probe the peers' locks now.
            Err(TimedOut) => probe = true,
        }
    }
}

/// The deadline of one wait: the caller's, or sooner when a peer can die unseen, so that
/// a blocked side probes its peers every [`LIVENESS_PERIOD`].
pub(crate) fn slice_deadline(deadline: Option<Instant>, peers_may_die: bool) -> Option<Instant> {
    if !peers_may_die {
        return deadline;
    }
    earliest(deadline, Instant::now().checked_add(LIVENESS_PERIOD))
}

/// The earlier of two optional deadlines (`None`: never).
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Generates a producer's `send` and `send_timeout` from its `send_deadline`, once for
/// every flavour. `$gone` says when its consumers count as gone.
macro_rules! send_calls {
    ($gone:literal) => {
        /// Sends `value`, waiting with this producer's wait strategy while the ring is
        /// full.
        ///
        /// # Errors
        ///
        #[doc = concat!("[`SendError::Disconnected`](crate::SendError::Disconnected) when ", $gone)]
        /// (closed, or dead: seen within `LIVENESS_PERIOD` while blocked);
        /// [`SendError::Corrupted`](crate::SendError::Corrupted). The value comes back in
        /// the error.
        pub fn send(&mut self, value: T) -> Result<(), $crate::SendError<T>> {
            Ok(self.send_deadline(value, None)?)
        }

        /// Sends `value`, waiting at most `timeout` for a free slot.
        ///
        /// # Errors
        ///
        /// [`SendTimeoutError::Timeout`](crate::SendTimeoutError::Timeout) when the time
        /// passes with the ring full, otherwise as [`send`](Self::send).
        pub fn send_timeout(
            &mut self,
            value: T,
            timeout: std::time::Duration,
        ) -> Result<(), $crate::SendTimeoutError<T>> {
            self.send_deadline(value, std::time::Instant::now().checked_add(timeout))
        }
    };
}
pub(crate) use send_calls;

/// Generates a consumer's `recv` and `recv_timeout` from its `recv_deadline`, once for
/// every flavour. `$gone` says when its producers count as gone.
macro_rules! recv_calls {
    ($gone:literal) => {
        /// Receives the next message, waiting with this consumer's wait strategy while
        /// the ring is empty.
        ///
        /// # Errors
        ///
        #[doc = concat!("[`RecvError::Disconnected`](crate::RecvError::Disconnected) when the ring is empty and ", $gone)]
        /// (closed, or dead: seen within `LIVENESS_PERIOD` while blocked);
        /// [`RecvError::Corrupted`](crate::RecvError::Corrupted).
        pub fn recv(&mut self) -> Result<T, $crate::RecvError> {
            Ok(self.recv_deadline(None)?)
        }

        /// Receives the next message, waiting at most `timeout`.
        ///
        /// # Errors
        ///
        /// [`RecvTimeoutError::Timeout`](crate::RecvTimeoutError::Timeout) when the time
        /// passes with the ring empty, otherwise as [`recv`](Self::recv).
        pub fn recv_timeout(
            &mut self,
            timeout: std::time::Duration,
        ) -> Result<T, $crate::RecvTimeoutError> {
            self.recv_deadline(std::time::Instant::now().checked_add(timeout))
        }
    };
}
pub(crate) use recv_calls;

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::{Duration, Instant};

    use super::{LIVENESS_PERIOD, earliest, slice_deadline};

    /// A side whose peers can die waits at most one `LIVENESS_PERIOD` at a time (so it
    /// probes them that often), and never past its caller's deadline; one whose peers
    /// cannot die waits for the caller's deadline alone.
    #[test]
    fn a_slice_ends_one_liveness_period_after_it_begins_or_at_the_deadline() {
        let before = Instant::now();
        let slice = slice_deadline(None, true).expect("a slice has an end");
        let after = Instant::now();
        assert!(before + LIVENESS_PERIOD <= slice && slice <= after + LIVENESS_PERIOD);

        let soon = Instant::now() + LIVENESS_PERIOD / 2;
        assert_eq!(slice_deadline(Some(soon), true), Some(soon));
        let late = Instant::now() + 100 * LIVENESS_PERIOD;
        let slice = slice_deadline(Some(late), true).unwrap();
        assert!(slice < late && slice <= Instant::now() + LIVENESS_PERIOD);

        assert_eq!(slice_deadline(None, false), None);
        assert_eq!(slice_deadline(Some(late), false), Some(late));
    }

    #[test]
    fn the_earliest_of_two_deadlines_none_being_never() {
        let a = Instant::now();
        let b = a + Duration::from_millis(1);
        assert_eq!(earliest(Some(a), Some(b)), Some(a));
        assert_eq!(earliest(Some(b), Some(a)), Some(a));
        assert_eq!(earliest(Some(b), None), Some(b));
        assert_eq!(earliest(None, Some(b)), Some(b));
        assert_eq!(earliest(None, None), None);
    }
}
