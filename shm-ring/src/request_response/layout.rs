//! The service segment: its control block, table lines and call slots.

use core::marker::PhantomData;

use shm_alloc::Kind;
use shm_alloc::participants::Entry;
use shm_sync::EventCount;
use shm_sync::atomic::{AtomicU32, AtomicU64, Ordering};
use shm_sync::cell::UnsafeCell;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::calls::CALLS_PER_CLIENT;
use crate::core::activity::Activity;
use crate::core::attach::{Identity, Layout};
use crate::core::check_shape;
use crate::error::{Corruption, Error};
use crate::message::{Message, fingerprint};

/// Session states of the table's entries: entries `0..workers` are the server workers',
/// the rest the clients'.
pub(crate) const WORKER: u32 = 1;
pub(crate) const CLIENT: u32 = 2;

/// The control block: what the creator recorded, on a line of its own.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | `workers`: the worker limit |
/// | 4 | 4 | `clients`: the client limit |
///
/// Then the table (`workers + clients` lines of 128 bytes, [`Line`]), then the call
/// slots: [`CALLS_PER_CLIENT`] per client, client `c`'s from `c * CALLS_PER_CLIENT`,
/// their count rounded up to a power of two.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) workers: AtomicU32,
    pub(crate) clients: AtomicU32,
}

/// A line of the table: the [`Entry`], the event count its client parks on, and counts.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 16 | `entry` |
/// | 16 | 8 | `responded`: the event count a client waits on for its responses |
/// | 24 | 8 | `calls`: calls made (a client) or requests taken (a worker) |
/// | 32 | 8 | `responses`: responses received (a client) or sent (a worker) |
/// | 40 | 8 | `late`: responses dropped because their call was given up, counted by the worker that found it so (added to the client's line) |
/// | 48 | 32 | `activity`: a client's waits for a response and its parks, a worker's wake-ups of parked clients (`core::activity`; the message count stays 0: `calls` and `responses` are it) |
/// | 80 | 48 | padding |
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub(crate) struct Line {
    pub(crate) entry: Entry,
    pub(crate) responded: EventCount,
    pub(crate) calls: AtomicU64,
    pub(crate) responses: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) activity: Activity,
}

impl AsRef<Entry> for Line {
    fn as_ref(&self) -> &Entry {
        &self.entry
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<Line>() == 128);
    assert!(core::mem::offset_of!(Line, responded) == 16);
    assert!(core::mem::offset_of!(Line, late) == 40);
    assert!(core::mem::offset_of!(Line, activity) == 48);
};

/// A call slot: its state word ([`calls`](super::calls)), the request the client wrote
/// in place, and the response a worker writes in place. Each is written by one side at
/// a time, as the state word says.
#[repr(C)]
pub(crate) struct CallSlot<Req, Resp> {
    pub(crate) state: AtomicU64,
    pub(crate) request: UnsafeCell<Req>,
    pub(crate) response: UnsafeCell<Resp>,
}

/// What travels through the request ring: which call slot holds a request, and the
/// call's generation. 16 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub(crate) struct Ticket {
    /// The call slot: `client * CALLS_PER_CLIENT + k`.
    pub(crate) slot: u32,
    pub(crate) generation: u32,
    pub(crate) _reserved: u64,
}

impl Message for Ticket {
    const TYPE_NAME: &'static str = "shm-ring request ticket/v1";
}

/// The call slots a service of `clients` clients lays out: a power of two.
pub(crate) fn slots_for(clients: u32) -> u64 {
    (u64::from(clients) * CALLS_PER_CLIENT as u64).next_power_of_two()
}

/// The layout of a service segment.
pub(crate) struct ServiceLayout<Req, Resp> {
    /// What a creator lays out.
    pub(crate) workers: u32,
    pub(crate) clients: u32,
    /// What an opener requires; `None`: any.
    pub(crate) expected: Option<(u32, u32)>,
    pub(crate) _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req: Message, Resp: Message> ServiceLayout<Req, Resp> {
    /// The fingerprint of the pair of types: both names, sizes and alignments.
    pub(crate) const FINGERPRINT: u64 =
        Req::FINGERPRINT ^ Resp::FINGERPRINT.rotate_left(17) ^ fingerprint("service", 0, 0);
}

impl<Req: Message, Resp: Message> Layout for ServiceLayout<Req, Resp> {
    type Control = Control;
    type Entry = Line;
    type Slot = CallSlot<Req, Resp>;

    fn identity(&self) -> Identity {
        Identity {
            kind: Kind::Service,
            type_fingerprint: Self::FINGERPRINT,
            type_name: Req::TYPE_NAME,
        }
    }

    fn check_capacity(&self, capacity: u64) -> Result<(), Error> {
        check_shape::<Req>(capacity)?;
        check_shape::<Resp>(capacity)
    }

    fn entries(&self) -> Result<u32, Error> {
        let entries = self.workers.checked_add(self.clients);
        match entries {
            Some(n)
                if self.workers > 0 && self.clients > 0 && n <= crate::core::MAX_PARTICIPANTS =>
            {
                Ok(n)
            }
            _ => Err(Error::InvalidParticipants(entries.unwrap_or(u32::MAX))),
        }
    }

    fn init(&self, control: &Control) {
        // Relaxed: published with the segment (its READY store).
        control.workers.store(self.workers, Ordering::Relaxed);
        control.clients.store(self.clients, Ordering::Relaxed);
    }

    fn opened_entries(&self, entries: u32) -> Result<u32, Error> {
        if !(2..=crate::core::MAX_PARTICIPANTS).contains(&entries) {
            return Err(Error::Corrupted(Corruption::State {
                word: "the participant entries of a service",
                found: entries,
                expected: "2 to 1024 (workers and clients)",
            }));
        }
        match self.expected {
            Some((workers, clients)) if workers + clients != entries => {
                Err(Error::ParticipantsMismatch {
                    expected: workers + clients,
                    found: entries,
                })
            }
            _ => Ok(entries),
        }
    }
}
