//! A ring's shared state read from outside, without attaching as a participant: what
//! `shm inspect` prints. Positions and counters are snapshots, each read with one load
//! (Acquire), stale as soon as they are read; liveness is each role's lock, probed.
//!
//! The control block and the participant table of every flavour sit at offsets that do
//! not depend on the message type, so a ring of any type is read without knowing it.

use shm_alloc::participants::Table;
use shm_alloc::pool::ClassStats;
use shm_alloc::{Expect, Kind, Location, Segment, SegmentOptions, Survey};
use shm_sync::atomic::Ordering;

pub use crate::core::activity::Counts;
use crate::error::{Corruption, Error};
use crate::{broadcast, mpmc, request_response, spsc};

/// What [`inspect`] read.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The file, its header, its state and the roles held (see `shm_alloc::Segment::survey`).
    pub survey: Survey,
    /// The flavour's positions, participants and counters.
    pub detail: Detail,
}

/// A flavour's positions, participants and counters. Serialized (feature `serde`) as the
/// variant's fields alone, untagged: the header's kind says which it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(untagged))]
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
        /// The producer's session: `absent`, `attached`, `dead` (attached, its lock
        /// free) or `closed`.
        producer: &'static str,
        /// The consumer's session, likewise.
        consumer: &'static str,
        /// The producer's counters, over every producer the ring has had; its messages
        /// are `tail`.
        producer_activity: Counts,
        /// The consumer's counters; its messages are `head`.
        consumer_activity: Counts,
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
        /// Every entry in use: each producer and consumer, alive or dead, with the
        /// counters of its session.
        participants: Vec<ParticipantView>,
    },
    /// A broadcast ring.
    Broadcast {
        /// The next position the publisher writes.
        tail: u64,
        /// Slots a publisher found half-written by a dead one.
        skipped: u64,
        /// The publisher's session: `absent` (none attached now), `attached` or `dead`.
        publisher: &'static str,
        /// The publisher's counters, over every publisher the ring has had; its
        /// messages are `tail`.
        publisher_activity: Counts,
        /// Every subscriber id that has ever attached (its line is not all zero).
        subscribers: Vec<SubscriberView>,
    },
    /// A request/response service.
    Service {
        /// Every worker and client entry in use, alive or dead.
        participants: Vec<CallerView>,
    },
    /// A pool.
    Pool {
        /// Every participant slot in use, alive or dead (its chunks not reclaimed yet).
        participants: Vec<ParticipantView>,
        /// Chunks by size class and state, smallest class first.
        classes: Vec<ClassStats>,
    },
    /// The counters of a bridge between a ring and the network.
    Bridge {
        /// The bridge's session: `attached` (it runs), or `dead` (none holds the counters
        /// now: killed, or ended).
        bridge: &'static str,
        /// `out` (ring to network), `in` (network to ring), or `none`.
        direction: &'static str,
        /// The key expression it publishes or subscribes to.
        key: String,
        /// Its counters, added up over every bridge that has held them.
        counts: crate::bridge::Counts,
    },
    /// A segment that is not ready: only its header's fields are known.
    Header,
}

/// A participant of a table, as its entry and lock say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ParticipantView {
    /// Its entry (and role lock) in the table.
    pub entry: u32,
    /// `producer` or `consumer` (MPMC), `user` (pool).
    pub role: &'static str,
    /// Whether its lock is held: a dead one holds its entry until someone settles it.
    pub alive: bool,
    /// Its counters this session (all zero for a pool user, which keeps none).
    pub activity: Counts,
}

/// One subscriber of a broadcast ring, as its line of the table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SubscriberView {
    /// Its id.
    pub id: u32,
    /// Whether its role lock is held now.
    pub alive: bool,
    /// `attached`, `dead` (its entry held, its lock free) or `left`.
    pub state: &'static str,
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
    /// Its counters over every session under its id; its messages are `received`.
    pub activity: Counts,
}

/// One worker or client of a request/response service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CallerView {
    /// Its entry (and role lock) in the table.
    pub entry: u32,
    /// `worker` or `client`.
    pub role: &'static str,
    /// Whether its lock is held.
    pub alive: bool,
    /// Calls made (a client) or requests taken (a worker).
    pub calls: u64,
    /// Responses received (a client) or sent (a worker).
    pub responses: u64,
    /// Responses dropped because the client had given up their call (a client's line).
    pub late: u64,
    /// A client's waits for a response and its parks; a worker's wake-ups of parked
    /// clients.
    pub activity: Counts,
}

impl Detail {
    /// How many participants are alive and how many dead (holding their entry, their
    /// lock free: not settled yet), by the entries and locks read.
    #[must_use]
    pub fn liveness(&self) -> (u32, u32) {
        let tally = |alive: &mut Vec<bool>| {
            let live = alive.iter().filter(|a| **a).count() as u32;
            (live, alive.len() as u32 - live)
        };
        let mut seen: Vec<bool> = Vec::new();
        match self {
            Detail::Spsc {
                producer, consumer, ..
            } => {
                for side in [producer, consumer] {
                    match *side {
                        "attached" => seen.push(true),
                        "dead" => seen.push(false),
                        _ => {}
                    }
                }
            }
            Detail::Mpmc { participants, .. } | Detail::Pool { participants, .. } => {
                seen.extend(participants.iter().map(|p| p.alive));
            }
            Detail::Broadcast {
                publisher,
                subscribers,
                ..
            } => {
                match *publisher {
                    "attached" => seen.push(true),
                    "dead" => seen.push(false),
                    _ => {}
                }
                seen.extend(
                    subscribers
                        .iter()
                        .filter(|s| s.state != "left")
                        .map(|s| s.alive),
                );
            }
            Detail::Service { participants } => {
                seen.extend(participants.iter().map(|p| p.alive));
            }
            Detail::Bridge { bridge, .. } => seen.push(*bridge == "attached"),
            Detail::Header => {}
        }
        tally(&mut seen)
    }
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
    let live = |role: u32| survey.live_roles.contains(&role);
    let detail = match info.kind {
        Kind::Spsc | Kind::Stream => {
            table_at::<spsc::layout::Control, ()>(&segment, 0)?;
            // SAFETY: the data region starts with the control block (the region's
            // layout), is long enough (checked) and page-aligned; any bytes are a valid
            // control block (atomics), read only through atomic loads.
            let control = unsafe { segment.data().cast::<spsc::layout::Control>().as_ref() };
            // Acquire: snapshots, each as a peer would read it.
            let tail = control.tail.load(Ordering::Acquire);
            let head = control.head.load(Ordering::Acquire);
            let session = |word: u32, role: u32| match word & spsc::layout::STATE_MASK {
                spsc::layout::ABSENT => "absent",
                spsc::layout::ATTACHED if live(role) => "attached",
                spsc::layout::ATTACHED => "dead",
                spsc::layout::CLOSED => "closed",
                _ => "corrupt",
            };
            Detail::Spsc {
                tail,
                head,
                queued: tail.wrapping_sub(head),
                // Acquire: as above.
                producer: session(
                    control.session.producer.load(Ordering::Acquire),
                    spsc::layout::PRODUCER_ROLE,
                ),
                consumer: session(
                    control.session.consumer.load(Ordering::Acquire),
                    spsc::layout::CONSUMER_ROLE,
                ),
                producer_activity: Counts {
                    messages: tail,
                    ..control.producer_activity.counts()
                },
                consumer_activity: Counts {
                    messages: head,
                    ..control.consumer_activity.counts()
                },
            }
        }
        Kind::Mpmc => {
            let limit = info.entries;
            let lines = table_at::<mpmc::layout::Control, mpmc::layout::Line>(&segment, limit)?;
            // SAFETY: as for the SPSC control block.
            let control = unsafe { segment.data().cast::<mpmc::layout::Control>().as_ref() };
            // Acquire: snapshots.
            let tail = control.tail.load(Ordering::Acquire);
            let head = control.head.load(Ordering::Acquire);
            // Relaxed: statistics.
            let counter = |c: &shm_sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            let participants = Table::new(lines, &segment)
                .holders()
                .into_iter()
                .map(|h| ParticipantView {
                    entry: h.index,
                    role: match h.state {
                        mpmc::layout::PRODUCER => "producer",
                        mpmc::layout::CONSUMER => "consumer",
                        _ => "corrupt",
                    },
                    alive: h.alive,
                    activity: lines[h.index as usize].activity.counts(),
                })
                .collect();
            Detail::Mpmc {
                tail,
                head,
                queued: tail.wrapping_sub(head),
                producers: control.census.producers.count(limit),
                consumers: control.census.consumers.count(limit),
                skipped: counter(&control.counters.skipped),
                aborted: counter(&control.counters.aborted),
                reclaimed: counter(&control.counters.reclaimed),
                participants,
            }
        }
        Kind::Broadcast => {
            let lines = table_at::<broadcast::layout::Control, broadcast::layout::Line>(
                &segment,
                info.entries,
            )?;
            // SAFETY: as for the SPSC control block.
            let control = unsafe { segment.data().cast::<broadcast::layout::Control>().as_ref() };
            // Acquire: a snapshot.
            let tail = control.tail.load(Ordering::Acquire);
            let state = |line: &broadcast::layout::Line, index: u32| match line.entry.session()
                & broadcast::layout::SESSION_STATE
            {
                shm_alloc::participants::FREE => "left",
                _ if live(index) => "attached",
                _ => "dead",
            };
            let publisher_line = &lines[broadcast::layout::PUBLISHER_ENTRY as usize];
            let subscribers = lines
                .iter()
                .enumerate()
                .skip(1 + broadcast::layout::PUBLISHER_ENTRY as usize)
                .filter_map(|(index, line)| {
                    // Relaxed: statistics of one line.
                    let load = |w: &shm_sync::atomic::AtomicU64| w.load(Ordering::Relaxed);
                    let seen = line.entry.session() != 0 || load(&line.cursor) != 0;
                    seen.then(|| {
                        let position = load(&line.cursor);
                        let received = load(&line.received);
                        SubscriberView {
                            id: index as u32 - 1,
                            alive: live(index as u32),
                            state: state(line, index as u32),
                            position,
                            lag: tail.saturating_sub(position),
                            received,
                            lagged: load(&line.lagged),
                            missed: load(&line.missed),
                            activity: Counts {
                                messages: received,
                                ..line.activity.counts()
                            },
                        }
                    })
                })
                .collect();
            Detail::Broadcast {
                tail,
                // Relaxed: a statistic.
                skipped: control.counters.skipped.load(Ordering::Relaxed),
                publisher: match state(publisher_line, broadcast::layout::PUBLISHER_ENTRY) {
                    "left" => "absent",
                    other => other,
                },
                publisher_activity: Counts {
                    messages: tail,
                    ..publisher_line.activity.counts()
                },
                subscribers,
            }
        }
        Kind::Service => {
            use request_response::layout::{Control, Line, WORKER};
            let lines = table_at::<Control, Line>(&segment, info.entries)?;
            let participants = Table::new(lines, &segment)
                .holders()
                .into_iter()
                .map(|h| {
                    let line = &lines[h.index as usize];
                    // Relaxed: statistics of one line.
                    let load = |w: &shm_sync::atomic::AtomicU64| w.load(Ordering::Relaxed);
                    CallerView {
                        entry: h.index,
                        role: if h.state == WORKER {
                            "worker"
                        } else {
                            "client"
                        },
                        alive: h.alive,
                        calls: load(&line.calls),
                        responses: load(&line.responses),
                        late: load(&line.late),
                        activity: line.activity.counts(),
                    }
                })
                .collect();
            Detail::Service { participants }
        }
        Kind::Bridge => {
            table_at::<crate::bridge::Control, ()>(&segment, 0)?;
            // SAFETY: as for the SPSC control block.
            let control = unsafe { segment.data().cast::<crate::bridge::Control>().as_ref() };
            Detail::Bridge {
                bridge: if live(0) { "attached" } else { "dead" },
                direction: crate::bridge::Direction::name(control.direction()),
                key: control.key(),
                counts: control.counts(),
            }
        }
        Kind::Pool => {
            let (holders, stats) = shm_alloc::Pool::inspect(&segment)?;
            Detail::Pool {
                participants: holders
                    .into_iter()
                    .map(|h| ParticipantView {
                        entry: h.index,
                        role: "user",
                        alive: h.alive,
                        activity: Counts::default(),
                    })
                    .collect(),
                classes: stats.classes,
            }
        }
    };
    Ok(Inspection { survey, detail })
}

/// The participant table of a region whose control block is `C` and whose table holds
/// `entries` lines of `E`, in `segment`'s data region.
///
/// # Errors
///
/// [`Error::Corrupted`] if the data region is shorter than the control block and table
/// (a header that lies).
fn table_at<C, E>(segment: &Segment, entries: u32) -> Result<&[E], Error> {
    let control_len = size_of::<C>();
    let needed = (entries as usize)
        .checked_mul(size_of::<E>())
        .and_then(|t| t.checked_add(control_len));
    if needed.is_none_or(|n| segment.data_len() < n) {
        return Err(Error::Corrupted(Corruption::State {
            word: "the header's data length",
            found: segment.data_len() as u32,
            expected: "at least the kind's control block and table",
        }));
    }
    // SAFETY: the table of `entries` lines follows the control block (the region's
    // layout, `core::region::offsets`), inside the data region (checked) and aligned to
    // 128 bytes (the control block fills whole blocks of a page-aligned region); any
    // bytes are valid lines (atomics), read only through atomic loads, for as long as
    // `segment` maps them.
    Ok(unsafe {
        core::slice::from_raw_parts(
            segment.data().add(control_len).cast::<E>().as_ptr(),
            entries as usize,
        )
    })
}
