//! Errors of the rings: attaching (`Error`), and each operation's own enum in the shape
//! of `std::sync::mpsc` and crossbeam-channel (the value comes back on failure).

use core::fmt;

/// What was wrong with a value read from shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// The positions break `head <= tail <= head + capacity`.
    Positions {
        /// The consumer's position as read.
        head: u64,
        /// The producer's position as read.
        tail: u64,
        /// The ring's capacity, in slots.
        capacity: u64,
    },
    /// The header's capacity does not fit the segment's data region.
    Layout {
        /// The capacity in the header, in slots.
        capacity: u64,
        /// The data region's length, in bytes.
        data_len: u64,
    },
    /// A frame header (stream ring) does not fit what was published.
    Frame {
        /// The position of the frame's header, in bytes.
        position: u64,
        /// The payload length the header gives, in bytes.
        length: u64,
        /// The bytes published from `position` on, or to the end of the buffer if fewer.
        room: u64,
    },
    /// A slot's stamp (MPMC) is not one its position allows.
    Slot {
        /// The position whose slot was read.
        position: u64,
        /// The stamp found.
        stamp: u64,
    },
    /// A state word holds a value no peer writes.
    State {
        /// Which word.
        word: &'static str,
        /// The value found.
        found: u32,
        /// The values the word may hold, in words.
        expected: &'static str,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Positions {
                head,
                tail,
                capacity,
            } => write!(
                f,
                "positions out of range: expected head <= tail <= head + {capacity}, found head {head} and tail {tail}"
            ),
            Self::Layout { capacity, data_len } => write!(
                f,
                "a capacity of {capacity} slots (expected a power of two) does not fit a data region of {data_len} bytes"
            ),
            Self::Frame {
                position,
                length,
                room,
            } => write!(
                f,
                "the frame at byte {position} claims {length} bytes of payload, but only {room} bytes are published there"
            ),
            Self::Slot { position, stamp } => write!(
                f,
                "the slot of position {position} holds stamp {stamp:#x}, which is not the previous, this or a later lap of that position"
            ),
            Self::State {
                word,
                found,
                expected,
            } => write!(f, "{word} holds {found}, expected {expected}"),
        }
    }
}

/// Errors of creating, opening and attaching to a ring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The segment could not be created, opened or validated, or the role is taken.
    #[cfg(not(loom))]
    #[error(transparent)]
    Segment(#[from] shm_alloc::Error),
    /// The ring's shared state is inconsistent.
    #[error("corrupted ring: {0}")]
    Corrupted(Corruption),
    /// The requested capacity is not a power of two between 1 and 2^32.
    #[error(
        "invalid capacity {0}: expected a power of two between 1 and 2^32 slots (bytes, for a \
         stream ring)"
    )]
    InvalidCapacity(u64),
    /// The requested capacity is below what the ring needs (a stream ring: 64 bytes).
    #[error(
        "invalid capacity {found}: expected at least {min} slots (bytes, for a stream ring), \
         a power of two"
    )]
    CapacityTooSmall {
        /// The capacity asked for.
        found: u64,
        /// The least the ring takes.
        min: u64,
    },
    /// The message type is aligned to more than a 128-byte block.
    #[error("message type aligned to {0} bytes: at most 128 is supported")]
    UnsupportedAlignment(usize),
    /// The requested participant limit (MPMC) is out of range.
    #[error("invalid participant limit {0}: expected 1 to {max}", max = crate::core::MAX_PARTICIPANTS)]
    InvalidParticipants(u32),
    /// The ring (MPMC) was created with another participant limit than the one required.
    #[error("participant limit mismatch: expected {expected}, found {found}")]
    ParticipantsMismatch {
        /// The limit required by the opener.
        expected: u32,
        /// The limit the ring was created with.
        found: u32,
    },
    /// Every participant slot of the ring (MPMC handles, broadcast subscribers) is held
    /// by a live participant.
    #[error("all {limit} participant slots of the ring are taken by live participants")]
    ParticipantsFull {
        /// The ring's participant limit.
        limit: u32,
    },
    /// A live publisher holds the broadcast ring's publisher role.
    #[error("the broadcast ring already has a live publisher")]
    PublisherTaken,
    /// A live subscriber holds the broadcast subscriber id asked for.
    #[error("broadcast subscriber id {id} is held by a live subscriber")]
    SubscriberTaken {
        /// The id asked for.
        id: u32,
    },
    /// The broadcast subscriber id asked for is not below the ring's limit.
    #[error(
        "invalid broadcast subscriber id {id}: expected an id below the ring's limit of {limit}"
    )]
    InvalidSubscriber {
        /// The id asked for.
        id: u32,
        /// The ring's subscriber limit.
        limit: u32,
    },
    /// The broadcast ring was created with another overflow policy than the one required.
    #[error("overflow policy mismatch: expected {expected:?}, found {found:?}")]
    OverflowMismatch {
        /// The policy required by the opener.
        expected: crate::broadcast::Overflow,
        /// The policy the ring was created with.
        found: crate::broadcast::Overflow,
    },
}

macro_rules! value_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $msg:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub enum $name<T> {
            $($(#[$vdoc])* $variant(T),)*
            /// The ring's shared state is inconsistent; the value was not sent.
            Corrupted(T, Corruption),
        }

        impl<T> $name<T> {
            /// Returns the value that was not sent.
            pub fn into_inner(self) -> T {
                match self {
                    $(Self::$variant(v))|* | Self::Corrupted(v, _) => v,
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)*
                    Self::Corrupted(_, c) => write!(f, "Corrupted(.., {c:?})"),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(_) => f.write_str($msg),)*
                    Self::Corrupted(_, c) => write!(f, "corrupted ring: {c}"),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

value_error!(
    /// Why a `try_send` ([`spsc`](crate::spsc::Producer::try_send),
    /// [`mpmc`](crate::mpmc::Producer::try_send)) returned its value.
    TrySendError {
        /// The ring is full.
        Full => "ring is full",
        /// The consumer closed the ring or died.
        Disconnected => "sending on a ring with no consumer left",
    }
);

value_error!(
    /// Why a `send_timeout` ([`spsc`](crate::spsc::Producer::send_timeout),
    /// [`mpmc`](crate::mpmc::Producer::send_timeout)) returned its value.
    SendTimeoutError {
        /// The deadline passed while the ring was full.
        Timeout => "timed out waiting for space in the ring",
        /// The consumer closed the ring or died.
        Disconnected => "sending on a ring with no consumer left",
    }
);

value_error!(
    /// Why a `send` ([`spsc`](crate::spsc::Producer::send),
    /// [`mpmc`](crate::mpmc::Producer::send)) returned its value.
    SendError {
        /// The consumer closed the ring or died.
        Disconnected => "sending on a ring with no consumer left",
    }
);

/// Why a `try_recv` ([`spsc`](crate::spsc::Consumer::try_recv),
/// [`mpmc`](crate::mpmc::Consumer::try_recv)) returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// The ring is empty; the producer may still send.
    #[error("ring is empty")]
    Empty,
    /// The ring is empty and the producer closed it or died.
    #[error("receiving on an empty ring with no producer left")]
    Disconnected,
    /// The ring's shared state is inconsistent.
    #[error("corrupted ring: {0}")]
    Corrupted(Corruption),
}

/// Why a `recv_timeout` ([`spsc`](crate::spsc::Consumer::recv_timeout),
/// [`mpmc`](crate::mpmc::Consumer::recv_timeout)) returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// The deadline passed while the ring was empty.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The ring is empty and the producer closed it or died.
    #[error("receiving on an empty ring with no producer left")]
    Disconnected,
    /// The ring's shared state is inconsistent.
    #[error("corrupted ring: {0}")]
    Corrupted(Corruption),
}

/// Why a `recv` ([`spsc`](crate::spsc::Consumer::recv),
/// [`mpmc`](crate::mpmc::Consumer::recv)) returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The ring is empty and the producer closed it or died.
    #[error("receiving on an empty ring with no producer left")]
    Disconnected,
    /// The ring's shared state is inconsistent.
    #[error("corrupted ring: {0}")]
    Corrupted(Corruption),
}
