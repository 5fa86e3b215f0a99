//! The errors of a broadcast subscriber's receives: those of the other rings, and
//! `Lagged`, in the shape of tokio's `broadcast` channel.

use crate::core::blocking::Refusal;
use crate::error::Corruption;

/// Generates a subscriber's receive error: its own first variants, then the variants
/// every receive shares (`Lagged`, `Untethered`, `Disconnected`, `Corrupted`).
macro_rules! recv_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $msg:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
        pub enum $name {
            $($(#[$vdoc])* #[error($msg)] $variant,)*
            /// The messages from the subscriber's position on were overwritten before it
            /// read them; it now stands at the oldest message still in the ring.
            #[error("subscriber lagged behind: {missed} messages were overwritten before it read them")]
            Lagged {
                /// How many messages this subscriber lost, exactly.
                missed: u64,
            },
            /// The publisher (`Block`) stopped waiting for this subscriber, which held it
            /// back longer than its untether time: from now on it may lag (`Lagged`) like
            /// a subscriber of a `Lap` ring. Said once; attach again to gate the publisher
            /// again.
            #[error("the publisher stopped waiting for this subscriber: it held it back too long")]
            Untethered,
            /// Every message is received and the publisher left or died.
            #[error("receiving on a broadcast ring with no publisher left")]
            Disconnected,
            /// The ring's shared state is inconsistent.
            #[error("corrupted ring: {0}")]
            Corrupted(Corruption),
        }
    };
}

recv_error!(
    /// Why a [`Subscriber::try_recv`](super::Subscriber::try_recv) returned no message.
    TryRecvError {
        /// No message yet; the publisher may still send.
        Empty => "no message yet",
    }
);

recv_error!(
    /// Why a [`Subscriber::recv_timeout`](super::Subscriber::recv_timeout) returned no
    /// message.
    RecvTimeoutError {
        /// The deadline passed with no message.
        Timeout => "timed out waiting for a message",
    }
);

recv_error!(
    /// Why a [`Subscriber::recv`](super::Subscriber::recv) returned no message.
    RecvError {}
);

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
