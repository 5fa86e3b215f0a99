//! A ring's shared state read from outside, without attaching as a participant: what
//! `shm inspect` prints. Positions and counters are snapshots, each read with one load
//! (Acquire), stale as soon as they are read; liveness is each role's lock, probed.
//!
//! The control block and the participant table of every flavour sit at offsets that do
//! not depend on the message type, so a ring of any type is read without knowing it.

use shm_alloc::{Expect, Kind, Location, Segment, SegmentOptions, Survey};
use shm_sync::atomic::Ordering;

use crate::error::{Corruption, Error};
use crate::{broadcast, mpmc, spsc};

/// What [`inspect`] read.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The file, its header, its state and the roles held (see `shm_alloc::Segment::survey`).
    pub survey: Survey,
    /// The flavour's positions and counters.
    pub detail: Detail,
}

/// A flavour's positions and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detail {
    /// An SPSC ring, or a stream ring (positions in bytes).
    Spsc {
        /// The next position the producer writes.
        tail: u64,
        /// The next position the consumer reads.
        head: u64,
        /// Messages (bytes) published and not yet released: `tail - head`.
        queued: u64,
        /// The producer's session: `absent`, `attached` or `closed`.
        producer: &'static str,
        /// The consumer's session.
        consumer: &'static str,
    },
    /// An MPMC ring.
    Mpmc {
        /// The next position producers claim.
        tail: u64,
        /// The next position consumers claim.
        head: u64,
        /// Claimed by producers and not yet by consumers: `tail - head`.
        queued: u64,
        /// Entries holding a producer, alive or dead until settled.
        producers: u32,
        /// Entries holding a consumer.
        consumers: u32,
        /// Slots passed over (their producer died mid-message, or aborted).
        skipped: u64,
        /// Reservations dropped without commit.
        aborted: u64,
        /// Slots freed after their consumer died holding them.
        reclaimed: u64,
    },
    /// A broadcast ring.
    Broadcast {
        /// The next position the publisher writes.
        tail: u64,
        /// Slots a publisher found half-written by a dead one.
        skipped: u64,
        /// Every subscriber id that has ever attached (its line is not all zero).
        subscribers: Vec<SubscriberView>,
    },
    /// A kind without positions to show here (a pool, a request/response service), or a
    /// segment that is not ready.
    Header,
}

/// One subscriber of a broadcast ring, as its line of the table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberView {
    /// Its id.
    pub id: u32,
    /// Whether its role lock is held now.
    pub alive: bool,
    /// The next position it reads.
    pub position: u64,
    /// Messages published that it has not read: `tail - position`.
    pub lag: u64,
    /// Messages received.
    pub received: u64,
    /// Times it fell a whole ring behind.
    pub lagged: u64,
    /// Messages lost to those lags.
    pub missed: u64,
}

/// Reads the ring at `loc` without attaching: its header and roles, and the positions
/// and counters of its flavour.
///
/// # Errors
///
/// [`Error::Segment`] for a file that is not a segment, missing, unreadable, or whose
/// header does not validate; [`Error::Corrupted`] if its data region is shorter than
/// its kind's control block (a header that lies).
pub fn inspect(loc: &Location) -> Result<Inspection, Error> {
    let survey = Segment::survey(loc)?;
    let Some(info) = survey.info.clone() else {
        return Ok(Inspection {
            survey,
            detail: Detail::Header,
        });
    };
    let expect = Expect {
        kind: info.kind,
        capacity: None,
        slot_size: info.slot_size,
        slot_align: info.slot_align,
        type_fingerprint: info.type_fingerprint,
        type_name: "the type its header names",
        entries: None,
    };
    let segment = Segment::open(loc, &expect, &SegmentOptions::default())?;
    let fits = |len: usize| {
        if segment.data_len() < len {
            Err(Error::Corrupted(Corruption::State {
                word: "the header's data length",
                found: segment.data_len() as u32,
                expected: "at least the kind's control block and table",
            }))
        } else {
            Ok(())
        }
    };
    let detail = match info.kind {
        Kind::Spsc | Kind::Stream => {
            fits(size_of::<spsc::layout::Control>())?;
            // SAFETY: the data region starts with the control block (the region's
            // layout), is long enough (checked) and page-aligned; any bytes are a valid
            // control block (atomics), read only through atomic loads.
            let control = unsafe { segment.data().cast::<spsc::layout::Control>().as_ref() };
            // Acquire: snapshots, each as a peer would read it.
            let tail = control.tail.load(Ordering::Acquire);
            let head = control.head.load(Ordering::Acquire);
            let session = |word: u32| match word & spsc::layout::STATE_MASK {
                spsc::layout::ABSENT => "absent",
                spsc::layout::ATTACHED => "attached",
                spsc::layout::CLOSED => "closed",
                _ => "corrupt",
            };
            Detail::Spsc {
                tail,
                head,
                queued: tail.wrapping_sub(head),
                // Acquire: as above.
                producer: session(control.session.producer.load(Ordering::Acquire)),
                consumer: session(control.session.consumer.load(Ordering::Acquire)),
            }
        }
        Kind::Mpmc => {
            fits(size_of::<mpmc::layout::Control>())?;
            // SAFETY: as for the SPSC control block.
            let control = unsafe { segment.data().cast::<mpmc::layout::Control>().as_ref() };
            // Acquire: snapshots.
            let tail = control.tail.load(Ordering::Acquire);
            let head = control.head.load(Ordering::Acquire);
            let limit = info.entries;
            // Relaxed: statistics.
            let counter = |c: &shm_sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            Detail::Mpmc {
                tail,
                head,
                queued: tail.wrapping_sub(head),
                producers: control.census.producers.count(limit),
                consumers: control.census.consumers.count(limit),
                skipped: counter(&control.counters.skipped),
                aborted: counter(&control.counters.aborted),
                reclaimed: counter(&control.counters.reclaimed),
            }
        }
        Kind::Broadcast => {
            let lines = info.entries as usize;
            let control_len = size_of::<broadcast::layout::Control>();
            fits(control_len + lines * size_of::<broadcast::layout::Line>())?;
            // SAFETY: as for the SPSC control block.
            let control = unsafe { segment.data().cast::<broadcast::layout::Control>().as_ref() };
            // SAFETY: the table of `entries` lines follows the control block (the
            // region's layout), inside the data region (checked), 128-byte aligned; any
            // bytes are valid lines (atomics), read only through atomic loads.
            let table = unsafe {
                core::slice::from_raw_parts(
                    segment
                        .data()
                        .add(control_len)
                        .cast::<broadcast::layout::Line>()
                        .as_ptr(),
                    lines,
                )
            };
            // Acquire: a snapshot.
            let tail = control.tail.load(Ordering::Acquire);
            let subscribers = table
                .iter()
                .enumerate()
                .skip(1 + broadcast::layout::PUBLISHER_ENTRY as usize)
                .filter_map(|(index, line)| {
                    // Relaxed: statistics of one line.
                    let load = |w: &shm_sync::atomic::AtomicU64| w.load(Ordering::Relaxed);
                    let seen = line.entry.session() != 0 || load(&line.cursor) != 0;
                    seen.then(|| {
                        let position = load(&line.cursor);
                        SubscriberView {
                            id: index as u32 - 1,
                            alive: survey.live_roles.contains(&(index as u32)),
                            position,
                            lag: tail.saturating_sub(position),
                            received: load(&line.received),
                            lagged: load(&line.lagged),
                            missed: load(&line.missed),
                        }
                    })
                })
                .collect();
            Detail::Broadcast {
                tail,
                // Relaxed: a statistic.
                skipped: control.counters.skipped.load(Ordering::Relaxed),
                subscribers,
            }
        }
        _ => Detail::Header,
    };
    Ok(Inspection { survey, detail })
}
