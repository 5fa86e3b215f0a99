//! The errors of a broadcast subscriber's receives: those of the other rings, and
//! `Lagged`, in the shape of tokio's `broadcast` channel.

use crate::core::blocking::Refusal;
use crate::error::Corruption;

/// Why a [`Subscriber::try_recv`](super::Subscriber::try_recv) returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No message yet; the publisher may still send.
    #[error("no message yet")]
    Empty,
    /// The messages from the subscriber's position on were overwritten before it read
    /// them; it now stands at the oldest message still in the ring.
    #[error("subscriber lagged behind: {missed} messages were overwritten before it read them")]
    Lagged {
        /// How many messages this subscriber lost, exactly.
        missed: u64,
    },
    /// The publisher (`Block`) stopped waiting for this subscriber, which held it back
    /// longer than its untether time: from now on it may lag (`Lagged`) like a
    /// subscriber of a `Lap` ring. Said once; attach again to gate the publisher again.
    #[error("the publisher stopped waiting for this subscriber: it held it back too long")]
    Untethered,
    /// Every message is received and the publisher left or died.
    #[error("receiving on a broadcast ring with no publisher left")]
    Disconnected,
    /// The ring's shared state is inconsistent.
    #[error("corrupted ring: {0}")]
    Corrupted(Corruption),
}

/// Why a [`Subscriber::recv_timeout`](super::Subscriber::recv_timeout) returned no
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// The deadline passed with no message.
    #[error("timed out waiting for a message")]
    Timeout,
    /// As [`TryRecvError::Lagged`].
    #[error("subscriber lagged behind: {missed} messages were overwritten before it read them")]
    Lagged {
        /// How many messages this subscriber lost, exactly.
        missed: u64,
    },
    /// The publisher (`Block`) stopped waiting for this subscriber, which held it back
    /// longer than its untether time: from now on it may lag (`Lagged`) like a
    /// subscriber of a `Lap` ring. Said once; attach again to gate the publisher again.
    #[error("the publisher stopped waiting for this subscriber: it held it back too long")]
    Untethered,
    /// Every message is received and the publisher left or died.
    #[error("receiving on a broadcast ring with no publisher left")]
    Disconnected,
    /// The ring's shared state is inconsistent.
    #[error("corrupted ring: {0}")]
    Corrupted(Corruption),
}

/// Why a [`Subscriber::recv`](super::Subscriber::recv) returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// As [`TryRecvError::Lagged`].
    #[error("subscriber lagged behind: {missed} messages were overwritten before it read them")]
    Lagged {
        /// How many messages this subscriber lost, exactly.
        missed: u64,
    },
    /// The publisher (`Block`) stopped waiting for this subscriber, which held it back
    /// longer than its untether time: from now on it may lag (`Lagged`) like a
    /// subscriber of a `Lap` ring. Said once; attach again to gate the publisher again.
    #[error("the publisher stopped waiting for this subscriber: it held it back too long")]
    Untethered,
    /// Every message is received and the publisher left or died.
    #[error("receiving on a broadcast ring with no publisher left")]
    Disconnected,
    /// The ring's shared state is inconsistent.
    #[error("corrupted ring: {0}")]
    Corrupted(Corruption),
}

impl From<Refusal> for TryRecvError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Busy => TryRecvError::Empty,
            Refusal::Disconnected => TryRecvError::Disconnected,
            Refusal::Corrupted(c) => TryRecvError::Corrupted(c),
        }
    }
}

impl From<Refusal> for RecvTimeoutError {
    /// `Busy` after a blocking wait means the deadline passed.
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Busy => RecvTimeoutError::Timeout,
            Refusal::Disconnected => RecvTimeoutError::Disconnected,
            Refusal::Corrupted(c) => RecvTimeoutError::Corrupted(c),
        }
    }
}

impl From<RecvTimeoutError> for RecvError {
    /// The error of a receive without deadline, from the same receive with deadline
    /// `None` (which never times out).
    fn from(e: RecvTimeoutError) -> Self {
        match e {
            RecvTimeoutError::Lagged { missed } => RecvError::Lagged { missed },
            RecvTimeoutError::Untethered => RecvError::Untethered,
            RecvTimeoutError::Corrupted(c) => RecvError::Corrupted(c),
            RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout => RecvError::Disconnected,
        }
    }
}
