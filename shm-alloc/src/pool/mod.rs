//! A cross-process pool allocator: chunks of fixed size classes in a segment, named by
//! offset, loaned by one process, written in place, sent through a ring as a
//! [`ShmOffset`] and read in place by another.
//!
//! # How it works
//!
//! A pool segment (kind [`Kind::Pool`]) holds size classes fixed at creation (say
//! 64 B x 65536, 4 KiB x 4096, 1 MiB x 64). Each class is an array of chunks, aligned to
//! [`CHUNK_ALIGN`] bytes and sized in multiples of it, with a header per chunk whose
//! owner word is the only record of the chunk's state: a loan scans the class's headers
//! from a cursor (the chunk returned last) and takes the first free chunk by one
//! compare-and-swap of its word, and a return is one compare-and-swap back to free. No free list, so no second
//! word to keep in step with the first across a crash, and no ABA problem.
//!
//! Each process that uses the pool is a participant: [`Pool`] claims participant slot
//! `k` by an OFD lock on role byte `k` of the segment, which the kernel drops when the
//! process dies. Every chunk header records the chunk's state and its holder:
//!
//! - [`Pool::loan`] takes a chunk of the smallest class that fits: a [`LoanedChunk`],
//!   held by this participant. Dropping it returns the chunk.
//! - [`LoanedChunk::into_offset_for`] marks it in flight to a receiving participant and
//!   yields the [`ShmOffset`] to send; [`LoanedChunk::into_offset`] to no one in
//!   particular (for a ring that many may read).
//! - [`Pool::receive`] turns an offset back into a [`Sample`] held by the receiver, after
//!   checking bounds, the chunk's state and its generation; dropping the sample returns
//!   the chunk.
//! - [`Pool::reclaim_dead`] (also run by [`Pool`]'s constructors) finds participants that
//!   died, takes their slot lock, and returns every chunk they held: loaned, received,
//!   or in flight to them (so also chunks left in a ring whose receiver died). A chunk
//!   moves to free by one compare-and-swap on its header, so it is returned once, even
//!   when a receiver and a reclaimer race for it.
//!
//! The algorithm and its state table are in the `raw` module's docs.
//!
//! # Limits
//!
//! - A loan takes the smallest class that fits and never falls back to a larger one: a
//!   burst of small loans cannot starve the large class. [`Error::PoolExhausted`] names
//!   the class.
//! - A chunk in flight to no one (`into_offset`) stays in flight when every reader of
//!   its ring died, until a reader receives it.
//! - A loan from a class that is nearly all loaned scans up to every header of the class
//!   (16 bytes each); with free chunks about, the one at the cursor is usually free.

mod raw;

use core::fmt;
use core::ops::Deref;
use core::ptr::NonNull;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::participants::{Entry, FREE as FREE_ENTRY, Holder, Locks, STATE_MASK, Settle, Table};
use crate::{Error, Expect, Kind, Location, RoleClaim, Segment, SegmentOptions, SegmentSpec};

/// The state of a pool user's participant entry.
const USER: u32 = 1;
use crate::owner::{self as protocol, Retired};
pub use raw::{CHUNK_ALIGN, MAX_CLASSES};
use raw::{ChunkId, HELD, LOANED, LoanFailure, NOBODY, RawPool, owner};
use shm_sync::atomic::AtomicU64;

/// The default size classes: 64 B x 65536, 4 KiB x 4096 and 1 MiB x 64 (64-byte
/// chunks take 128 bytes, [`CHUNK_ALIGN`]): 88 MiB of chunks in all.
pub const DEFAULT_CLASSES: [SizeClass; 3] = [
    SizeClass::new(64, 65536),
    SizeClass::new(4096, 4096),
    SizeClass::new(1 << 20, 64),
];

/// The default number of participant slots.
pub const DEFAULT_PARTICIPANTS: u32 = 64;

/// What the segment header says of every pool: chunks are [`CHUNK_ALIGN`]-sized slots,
/// the layout version of the region is in the fingerprint.
const POOL_TYPE_NAME: &str = "shm-alloc pool/v2";
const POOL_FINGERPRINT: u64 = 0x706f_6f6c_2f76_3032; // "pool/v02"

/// Size classes as laid out: `(chunk_size, chunks)`, sizes rounded, ascending.
type Classes = Vec<(u64, u64)>;

/// One size class: chunks of `chunk_size` bytes (rounded up to a multiple of
/// [`CHUNK_ALIGN`] when the pool is laid out), `chunks` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeClass {
    /// The largest payload a chunk of the class holds, in bytes.
    pub chunk_size: u64,
    /// How many chunks the class has.
    pub chunks: u32,
}

impl SizeClass {
    /// A class of `chunks` chunks of `chunk_size` bytes.
    #[must_use]
    pub const fn new(chunk_size: u64, chunks: u32) -> Self {
        SizeClass { chunk_size, chunks }
    }
}

/// A chunk's name, valid in every process that maps the pool: its byte offset from the
/// start of the pool's data region, the payload length, and the chunk's generation
/// (which loan of the chunk this is). 16 bytes, any bit pattern valid, so it travels
/// through a ring as a message.
///
/// An offset is a claim, not a reference: [`Pool::receive`] checks that it names the
/// start of a chunk, that the length fits the chunk, and that the chunk is in flight
/// with this generation, before any byte is read.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ShmOffset {
    offset: u64,
    len: u32,
    generation: u32,
}

impl ShmOffset {
    /// The chunk's byte offset from the start of the pool's data region.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The payload length, in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk's generation: how many times it had been loaned when this was sent.
    #[must_use]
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

/// Chunks of one size class by state, from [`Pool::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClassStats {
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// Chunks in the class.
    pub chunks: u64,
    /// Free to loan.
    pub free: u64,
    /// Loaned and being written ([`LoanedChunk`]).
    pub loaned: u64,
    /// Sent and not yet received ([`ShmOffset`] in a ring).
    pub in_flight: u64,
    /// Received and being read ([`Sample`]).
    pub held: u64,
    /// Published to many readers ([`LoanedChunk::into_shared`]).
    pub shared: u64,
    /// Retired from a fan-out, still read by someone ([`Pool::retire_shared`]).
    pub retired: u64,
    /// In no state of the protocol: headers a corrupt or hostile peer wrote. 0 unless
    /// so; such a chunk is never loaned, and `receive` refuses its offsets.
    pub unknown: u64,
}

/// Chunks by size class and state, from [`Pool::stats`]: a snapshot taken chunk by
/// chunk, so under concurrent use the counts may mix moments (but always add up to the
/// class's chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// One entry per size class, smallest first.
    pub classes: Vec<ClassStats>,
}

impl PoolStats {
    /// Whether every chunk of every class is free.
    #[must_use]
    pub fn all_free(&self) -> bool {
        self.classes.iter().all(|c| c.free == c.chunks)
    }
}

/// What [`Pool::reclaim_dead`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reclaimed {
    /// The participant slots found dead and cleared.
    pub participants: Vec<u32>,
    /// The chunks freed.
    pub chunks: u64,
}

/// How to create or open a pool; from [`Pool::builder`].
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    location: Location,
    classes: Vec<SizeClass>,
    participants: u32,
    options: SegmentOptions,
}

impl PoolBuilder {
    /// Adds a size class: `chunks` chunks that hold `chunk_size` bytes each. Replaces
    /// [`DEFAULT_CLASSES`] at the first call. Classes may be added in any order.
    #[must_use]
    pub fn class(mut self, chunk_size: u64, chunks: u32) -> Self {
        self.classes.push(SizeClass::new(chunk_size, chunks));
        self
    }

    /// How many participant slots a created pool has (default
    /// [`DEFAULT_PARTICIPANTS`], at most [`MAX_ROLES`](crate::MAX_ROLES)): how many
    /// [`Pool`] handles can exist at once, across all processes.
    #[must_use]
    pub fn participants(mut self, participants: u32) -> Self {
        self.participants = participants;
        self
    }

    /// Options of the segment file (mode, prefault, `mlock`, huge pages).
    #[must_use]
    pub fn segment_options(mut self, options: SegmentOptions) -> Self {
        self.options = options;
        self
    }

    fn classes(&self) -> Vec<(u64, u64)> {
        let mut classes: Vec<(u64, u64)> = if self.classes.is_empty() {
            DEFAULT_CLASSES.to_vec()
        } else {
            self.classes.clone()
        }
        .iter()
        .map(|c| {
            let size = c
                .chunk_size
                .max(1)
                .checked_next_multiple_of(CHUNK_ALIGN)
                .unwrap_or(u64::MAX);
            (size, u64::from(c.chunks))
        })
        .collect();
        classes.sort_unstable();
        classes
    }

    /// The segment spec and region configuration of a new pool, and its classes as laid
    /// out (`(chunk_size, chunks)`, sizes rounded, ascending).
    fn spec(&self) -> Result<(SegmentSpec, raw::Config, Classes), Error> {
        let classes = self.classes();
        let (config, data_len) =
            raw::layout(&classes, self.participants).map_err(|reason| Error::InvalidSpec {
                path: self.location.path(),
                reason,
            })?;
        let spec = SegmentSpec {
            kind: Kind::Pool,
            capacity: classes.iter().map(|c| c.1).sum(),
            slot_size: CHUNK_ALIGN,
            slot_align: CHUNK_ALIGN,
            type_fingerprint: POOL_FINGERPRINT,
            type_name: POOL_TYPE_NAME,
            data_len,
            entries: self.participants,
        };
        Ok((spec, config, classes))
    }

    fn expect() -> Expect {
        Expect {
            kind: Kind::Pool,
            capacity: None,
            slot_size: CHUNK_ALIGN,
            slot_align: CHUNK_ALIGN,
            type_fingerprint: POOL_FINGERPRINT,
            type_name: POOL_TYPE_NAME,
            entries: None,
        }
    }

    /// Creates the pool segment, with the size classes and participant slots set here,
    /// and joins it as a participant.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSpec`] for classes that cannot be laid out (none, more than
    /// [`MAX_CLASSES`], two of one size, a class of 0 chunks) or a participant count out
    /// of range; those of [`Segment::create`].
    pub fn create(self) -> Result<Pool, Error> {
        let (spec, config, _) = self.spec()?;
        let segment = Segment::create_with(&self.location, &spec, &self.options, |segment| {
            init(segment, &config);
        })?;
        Pool::join(segment)
    }

    /// Opens an existing pool, whatever its size classes, and joins it as a
    /// participant.
    ///
    /// # Errors
    ///
    /// Those of [`Segment::open`] (a file of another kind, truncated, or not a segment);
    /// [`Error::Corrupted`] if the pool's configuration does not lay out; then those of
    /// [`Pool`]'s join: [`Error::ParticipantsFull`], [`Error::Io`].
    pub fn open(self) -> Result<Pool, Error> {
        let segment = Segment::open(&self.location, &Self::expect(), &self.options)?;
        Pool::join(segment)
    }

    /// Creates the pool, or opens it if it exists. When opening, the size classes set
    /// here (or the defaults) must be the pool's.
    ///
    /// # Errors
    ///
    /// Those of [`create`](Self::create) and [`open`](Self::open), and
    /// [`Error::Mismatch`] (field `"size classes"`) if an existing pool has other
    /// classes.
    pub fn open_or_create(self) -> Result<Pool, Error> {
        let (spec, config, wanted) = self.spec()?;
        let (segment, _created) = Segment::open_or_create_with(
            &self.location,
            &spec,
            &Self::expect(),
            &self.options,
            |segment| init(segment, &config),
        )?;
        let pool = Pool::join(segment)?;
        let found: Vec<(u64, u64)> = pool
            .raw
            .classes()
            .iter()
            .map(|c| (c.chunk_size, c.chunks))
            .collect();
        if wanted != found {
            return Err(Error::Mismatch {
                path: pool.segment.path().to_path_buf(),
                field: "size classes",
                expected: describe_classes(&wanted),
                found: describe_classes(&found),
            });
        }
        Ok(pool)
    }
}

fn describe_classes(classes: &[(u64, u64)]) -> String {
    classes
        .iter()
        .map(|(size, chunks)| format!("{size} B x {chunks}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The creator's initialisation, before the segment header is published.
fn init(segment: &Segment, config: &raw::Config) {
    // SAFETY: (1) the data region is `data_len` bytes, page-aligned, and lives as long
    // as `segment`; the `RawPool` is dropped at once. (2) `data_len` is at least the
    // layout's length: the spec asked for it. (3) The header is not published yet, so no
    // one else maps the region.
    let _ = unsafe { RawPool::init(segment.data(), segment.data_len() as u64, config) };
}

/// A participant's handle on a pool segment: loans chunks, receives offsets, and
/// returns the chunks of dead participants.
///
/// `Pool` is `Send` and `Sync`: loans and receives from many threads at once are fine;
/// all of them count as this one participant.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), shm_alloc::Error> {
/// use shm_alloc::pool::Pool;
/// # let dir = std::env::temp_dir().join(format!("pool-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let location = shm_alloc::Location::Path(dir.join("frames"));
/// let writer = Pool::builder(location.clone()).class(1 << 20, 4).create()?;
/// let reader = Pool::builder(location.clone()).open()?;
///
/// let mut frame = writer.loan(1000)?;
/// frame.as_mut_slice().fill(7);
/// let offset = frame.into_offset_for(reader.participant());
/// // ... the 16-byte `offset` crosses to the reader through a ring ...
/// let sample = reader.receive(offset)?;
/// assert!(sample.iter().all(|&b| b == 7));
/// drop(sample);
/// assert!(reader.stats().all_free());
/// # drop((writer, reader)); shm_alloc::Segment::remove(&location)?;
/// # Ok(()) }
/// ```
pub struct Pool {
    raw: RawPool,
    participant: u32,
    /// The session word of this participant's entry.
    session: u32,
    claim: Option<RoleClaim>,
    segment: Segment,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("path", &self.segment.path())
            .field("participant", &self.participant)
            .field("classes", &self.raw.classes().len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A builder for the pool at `location`: [`DEFAULT_CLASSES`] and
    /// [`DEFAULT_PARTICIPANTS`] unless set, default [`SegmentOptions`].
    #[must_use]
    pub fn builder(location: impl Into<Location>) -> PoolBuilder {
        PoolBuilder {
            location: location.into(),
            classes: Vec::new(),
            participants: DEFAULT_PARTICIPANTS,
            options: SegmentOptions::default(),
        }
    }

    /// The pool region of `segment`, checked against its header.
    ///
    /// # Safety
    ///
    /// The returned `RawPool` must not outlive `segment`.
    unsafe fn raw(segment: &Segment) -> Result<RawPool, Error> {
        // SAFETY: (1) the data region is valid and page-aligned for `data_len` bytes while
        // `segment` lives, which the caller's returned pool does not outlive. (2) Others
        // follow this module.
        let raw = unsafe { RawPool::attach(segment.data(), segment.data_len() as u64) }.map_err(
            |what| Error::Corrupted {
                path: segment.path().to_path_buf(),
                what: format!("pool configuration: {what}"),
            },
        )?;
        // The configuration in the data region against the header, where the checksum
        // covers the participant count and the chunk total.
        let header = segment.header();
        let chunks: u64 = raw.classes().iter().map(|c| c.chunks).sum();
        if raw.participants() != header.entries || chunks != header.capacity {
            return Err(Error::Corrupted {
                path: segment.path().to_path_buf(),
                what: format!(
                    "pool configuration: {} participants and {chunks} chunks, the header \
                     records {} and {}",
                    raw.participants(),
                    header.entries,
                    header.capacity
                ),
            });
        }
        Ok(raw)
    }

    /// Validates the pool region and claims a free participant slot: the first whose
    /// lock is free. Returns what a previous holder of the slot left (it died, or left
    /// chunks in flight to it), then reclaims the other dead participants.
    fn join(segment: Segment) -> Result<Pool, Error> {
        // SAFETY: the `RawPool` lives inside `Pool` next to `segment` (dropped first:
        // `raw` is declared before `segment`).
        let raw = unsafe { Self::raw(&segment) }?;
        let table = Table::new(raw.entries(), &segment);
        // A holder found in the entry died: the sweep below returns what it left.
        let claimed = table.claim(USER, |_, _| Ok::<_, Error>(Settle::Done))?;
        let Some(claimed) = claimed else {
            return Err(Error::ParticipantsFull {
                path: segment.path().to_path_buf(),
                participants: raw.participants(),
            });
        };
        let participant = claimed.index;
        // Ours now: whatever the slot's holder before us left is returned (loaned or
        // held by a dead holder, or in flight to this slot after its holder left).
        raw.sweep(|holder| u32::from(holder) == participant);
        table.mark(&claimed);
        let session = claimed.session;
        let pool = Pool {
            raw,
            participant,
            session,
            claim: Some(claimed.guard),
            segment,
        };
        pool.reclaim_dead()?;
        Ok(pool)
    }

    /// This handle's participant slot: the number a sender passes to
    /// [`LoanedChunk::into_offset_for`] to address chunks to this handle.
    #[must_use]
    pub fn participant(&self) -> u32 {
        self.participant
    }

    /// Announces that this participant receives the chunks sent on `channel` (a ring's
    /// id, 0 for none), so that a sender that looks the channel up
    /// ([`channel_receiver`](Self::channel_receiver)) marks its chunks in flight to this
    /// participant, and [`reclaim_dead`](Self::reclaim_dead) returns them if this
    /// process dies before receiving them. One channel per participant; binding another
    /// replaces it. Cleared when the participant leaves or is reclaimed.
    pub fn bind_channel(&self, channel: u64) {
        // An address hint; the chunk's own Release marking and the ring's publish order
        // the payload.
        self.entry().set_word(channel);
    }

    /// The participant in use that is bound to `channel` ([`bind_channel`](Self::bind_channel)),
    /// if any: a scan of the participant table, one load or two per entry.
    #[must_use]
    pub fn channel_receiver(&self, channel: u64) -> Option<u32> {
        (channel != 0)
            .then(|| (0..self.raw.participants()).find(|&p| self.is_bound(p, channel)))
            .flatten()
    }

    /// Whether `participant` is in use and bound to `channel`: two loads, to check a
    /// receiver found by [`channel_receiver`](Self::channel_receiver) before each send.
    #[must_use]
    pub fn is_bound(&self, participant: u32, channel: u64) -> bool {
        // A hint, as in `bind_channel`: a stale answer addresses a chunk to a
        // participant whose reclaim returns it.
        self.raw
            .entries()
            .get(participant as usize)
            .is_some_and(|entry| {
                entry.word() == channel && entry.session() & STATE_MASK != FREE_ENTRY
            })
    }

    /// This participant's entry of the table.
    fn entry(&self) -> &Entry {
        &self.raw.entries()[self.participant as usize]
    }

    /// The segment the pool lives in.
    #[must_use]
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// The size classes, smallest first (chunk sizes rounded up to [`CHUNK_ALIGN`]).
    #[must_use]
    pub fn classes(&self) -> Vec<SizeClass> {
        self.raw
            .classes()
            .iter()
            .map(|c| SizeClass::new(c.chunk_size, c.chunks as u32))
            .collect()
    }

    /// The largest loan the pool can make, in bytes.
    #[must_use]
    pub fn max_loan(&self) -> usize {
        self.raw
            .classes()
            .last()
            .map_or(0, |c| c.chunk_size as usize)
    }

    /// Loans a chunk of `len` bytes from the smallest size class that holds it. Its
    /// bytes are whatever the previous holder left (never uninitialised memory in Rust's
    /// sense: a mapped file's bytes). Lock-free: the first free chunk from the class's
    /// cursor, taken by one compare-and-swap of its header's owner word (one pass over
    /// the class at most); no system call.
    ///
    /// # Errors
    ///
    /// - [`Error::PoolExhausted`] if the fitting class has no free chunk (never waits).
    /// - [`Error::LoanTooLarge`] if no class holds `len` bytes.
    pub fn loan(&self, len: usize) -> Result<LoanedChunk<'_>, Error> {
        let len32 = u32::try_from(len).map_err(|_| Error::LoanTooLarge {
            len: len as u64,
            max: self.max_loan() as u64,
        })?;
        match self.raw.loan(u64::from(len32), self.holder()) {
            Ok((id, generation)) => Ok(LoanedChunk {
                pool: self,
                id,
                generation,
                len: len32,
                data: self.raw.chunk(id),
            }),
            Err(LoanFailure::TooLarge { max }) => Err(Error::LoanTooLarge {
                len: len as u64,
                max,
            }),
            Err(LoanFailure::Exhausted { chunk_size }) => Err(Error::PoolExhausted {
                chunk_size,
                len: len as u64,
            }),
        }
    }

    /// Loans a chunk for one `T` (`size_of::<T>()` bytes), for
    /// [`LoanedChunk::value_mut`] and [`Sample::value`].
    ///
    /// # Errors
    ///
    /// As [`loan`](Self::loan); [`Error::LoanTooLarge`] also if `T` is aligned to more
    /// than [`CHUNK_ALIGN`] bytes.
    pub fn loan_for<T>(&self) -> Result<LoanedChunk<'_>, Error> {
        if align_of::<T>() as u64 > CHUNK_ALIGN {
            return Err(Error::LoanTooLarge {
                len: align_of::<T>() as u64,
                max: CHUNK_ALIGN,
            });
        }
        self.loan(size_of::<T>())
    }

    /// Takes the chunk `offset` names, in flight, as a [`Sample`] held by this
    /// participant. Checks, before reading anything: that the offset is the start of a
    /// chunk, that the length fits the chunk, and that the chunk is in flight with the
    /// offset's generation (so a reclaimed or already received chunk is refused). One
    /// compare-and-swap; no system call.
    ///
    /// A chunk in flight to another participant ([`LoanedChunk::into_offset_for`]) is
    /// taken all the same: the addressee is only who gets it back if the chunk is never
    /// received.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidOffset`] if the offset names no chunk, or its length does not
    ///   fit the chunk (a corrupt or foreign offset).
    /// - [`Error::StaleOffset`] if the chunk is not in flight with that generation:
    ///   received already, or reclaimed after its receiver was found dead.
    /// - [`Error::Corrupted`] if the chunk's header records another size class.
    pub fn receive(&self, offset: ShmOffset) -> Result<Sample<'_>, Error> {
        let id = self.check(offset)?;
        self.raw
            .receive(id, offset.generation, self.holder())
            .map_err(|word| self.stale(offset, word))?;
        Ok(Sample {
            chunk: Reading::new(self, id, offset),
        })
    }

    /// The chunk `offset` names, after checking that it is the start of a chunk whose
    /// header records its class, and that the length fits the chunk.
    fn check(&self, offset: ShmOffset) -> Result<ChunkId, Error> {
        let id = self
            .raw
            .locate(offset.offset)
            .map_err(|reason| Error::InvalidOffset {
                offset: offset.offset,
                len: u64::from(offset.len),
                reason,
            })?;
        if !self.raw.header_matches(id) {
            return Err(Error::Corrupted {
                path: self.segment.path().to_path_buf(),
                what: format!(
                    "the header of the chunk at offset {} records another size class",
                    offset.offset
                ),
            });
        }
        let chunk_size = self.raw.classes()[id.class].chunk_size;
        if u64::from(offset.len) > chunk_size {
            return Err(Error::InvalidOffset {
                offset: offset.offset,
                len: u64::from(offset.len),
                reason: "its length is larger than its chunk",
            });
        }
        Ok(id)
    }

    fn stale(&self, offset: ShmOffset, word: u64) -> Error {
        Error::StaleOffset {
            offset: offset.offset,
            generation: offset.generation,
            found: raw::describe(word),
        }
    }

    /// Starts reading the shared chunk `offset` names ([`LoanedChunk::into_shared`]) in
    /// place, under `reader`'s hazard word: stores the offset in the word, then checks
    /// that the chunk is still shared in the offset's generation (the hazard-word
    /// protocol of [`owner`](crate::owner)). The chunk is then read in place until the
    /// [`SharedSample`] drops, which clears the word and frees the chunk if it was
    /// retired meanwhile and no other reader holds it. No system call; a `SeqCst` fence.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive): [`Error::InvalidOffset`], [`Error::Corrupted`], and
    /// [`Error::StaleOffset`] if the chunk is no longer shared in that generation
    /// (retired: its publisher overwrote the slot that named it, or every live reader
    /// had gone past it). The hazard word is clear again after an error.
    pub fn read_shared<R: Readers>(
        &self,
        offset: ShmOffset,
        reader: R,
    ) -> Result<SharedSample<'_, R>, Error> {
        let id = self.check(offset)?;
        let word = &self.raw.header(id).owner;
        if !protocol::hold(reader.hazard(), offset.offset, word, offset.generation) {
            let found = self
                .raw
                .header(id)
                .owner
                .load(shm_sync::atomic::Ordering::Relaxed);
            protocol::release(reader.hazard(), offset.offset, word, |n| reader.holds(n));
            return Err(self.stale(offset, found));
        }
        Ok(SharedSample {
            chunk: Reading::new(self, id, offset),
            reader,
        })
    }

    /// Retires the shared chunk `offset` names: no reader can start to read it from now
    /// on ([`read_shared`](Self::read_shared) refuses it), and it is freed as soon as
    /// no hazard word names it: now, if `holds(offset)` (whether any reader's hazard
    /// word names the chunk, loading each with Acquire: [`named_by`](crate::owner::named_by))
    /// says none does, or else by the last reader to release it. `true` if this call
    /// retired it; `false` if it was not shared in that generation (retired already, by
    /// this or another retirer: retiring twice is harmless).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOffset`] and [`Error::Corrupted`] as [`receive`](Self::receive):
    /// a corrupt offset, which retires nothing.
    pub fn retire_shared(
        &self,
        offset: ShmOffset,
        holds: impl Fn(u64) -> bool,
    ) -> Result<bool, Error> {
        let id = self.check(offset)?;
        let word = &self.raw.header(id).owner;
        Ok(protocol::retire(offset.offset, word, offset.generation, holds) != Retired::NotShared)
    }

    /// Clears a dead reader's hazard word on its behalf (the caller holds the dead
    /// reader's role, so that nobody else writes the word meanwhile), and frees the
    /// chunk it named if that chunk is retired and no other hazard word names it
    /// (`holds`, as in [`retire_shared`](Self::retire_shared)). `true` if a chunk was
    /// freed. A word that names no chunk (a corrupt one) is cleared all the same.
    pub fn clear_hazard(&self, hazard: &AtomicU64, holds: impl Fn(u64) -> bool) -> bool {
        // Relaxed: the word's writer is gone (its role is the caller's), and the value
        // is checked below.
        let name = hazard.load(shm_sync::atomic::Ordering::Relaxed);
        if name == 0 {
            return false;
        }
        match self.raw.locate(name) {
            Ok(id) => protocol::release(hazard, name, &self.raw.header(id).owner, holds),
            Err(_) => {
                // Relaxed: a corrupt word, which protects nothing.
                hazard.store(0, shm_sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// Finds the participants that died (their slot is marked in use, but nobody holds
    /// its lock), takes each one's lock, returns every chunk it held (loaned, held as a
    /// sample, or in flight to it), and frees its slot. Then returns every chunk still
    /// recorded as a free slot's: a sender that looked its receiver up before the
    /// receiver died marks a chunk in flight to it after the receiver's slot was freed
    /// (each such slot is swept under its lock, so no newcomer holds it meanwhile). Each
    /// chunk is returned exactly once, even if other processes reclaim at the same time
    /// or a receiver races for the chunk. Runs when a [`Pool`] joins; call it again when
    /// a peer is known to have died (a ring reports `Disconnected`), or periodically.
    ///
    /// Costs one `fcntl` per slot in use, for each that died one pass over every chunk
    /// header, one more pass, and two `fcntl`s per free slot that chunks name.
    ///
    /// # Errors
    ///
    /// None at present (the `Result` leaves room for failures to come): a lock probe
    /// that fails counts its participant as alive, no evidence of death.
    pub fn reclaim_dead(&self) -> Result<Reclaimed, Error> {
        let mut chunks = 0;
        let table = Table::new(self.raw.entries(), &self.segment);
        let participants = table.reap(
            Some(self.participant),
            |_| Ok::<_, Error>(true),
            |participant, _| {
                chunks += self.raw.sweep(|holder| u32::from(holder) == participant);
                Ok(Settle::Done)
            },
        )?;
        let mut seen = Vec::new();
        chunks += self.raw.sweep(|holder| self.orphaned(holder, &mut seen));
        Ok(Reclaimed {
            participants,
            chunks,
        })
    }

    /// Whether `holder` names a free participant slot other than this one's, whose lock
    /// is then held in `seen` until the sweep that asks ends (so that no newcomer claims
    /// the slot while its chunks are returned). `seen` keeps each answer, so a slot costs
    /// its lock syscalls once per sweep.
    fn orphaned(&self, holder: u16, seen: &mut Vec<(u16, Option<RoleClaim>)>) -> bool {
        if let Some((_, lock)) = seen.iter().find(|(h, _)| *h == holder) {
            return lock.is_some();
        }
        let free = |holder: u16| {
            self.raw
                .entries()
                .get(usize::from(holder))
                .is_some_and(|entry| entry.session() & STATE_MASK == FREE_ENTRY)
        };
        // Free, locked by this call, and still free under the lock (a claimer marks its
        // slot while it holds the lock). A failed lock call is no evidence: left alone.
        let lock = (holder != self.holder() && free(holder))
            .then(|| self.segment.try_lock(u32::from(holder)).ok().flatten())
            .flatten()
            .filter(|_| free(holder));
        let orphaned = lock.is_some();
        seen.push((holder, lock));
        orphaned
    }

    /// Chunks by size class and state.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        Self::class_stats(&self.raw)
    }

    fn class_stats(raw: &RawPool) -> PoolStats {
        PoolStats {
            classes: (0..raw.classes().len())
                .map(|class| {
                    let record = raw.classes()[class];
                    let counts = raw.counts(class);
                    ClassStats {
                        chunk_size: record.chunk_size,
                        chunks: record.chunks,
                        free: counts.free,
                        loaned: counts.loaned,
                        in_flight: counts.in_flight,
                        held: counts.held,
                        shared: counts.shared,
                        retired: counts.retired,
                        unknown: counts.unknown,
                    }
                })
                .collect(),
        }
    }

    /// The participants and chunks of the pool in `segment`, read without joining it:
    /// what `shm inspect` shows. Each participant slot in use, alive (its lock held) or
    /// dead (not reclaimed yet), and the classes as [`stats`](Self::stats) gives them.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] if the pool's configuration does not lay out or disagrees
    /// with the header.
    pub fn inspect(segment: &Segment) -> Result<(Vec<Holder>, PoolStats), Error> {
        // SAFETY: `raw` is dropped at the end of this call, before `segment`.
        let raw = unsafe { Self::raw(segment) }?;
        let holders = Table::new(raw.entries(), segment).holders();
        Ok((holders, Self::class_stats(&raw)))
    }

    /// The offset naming chunk `id` with a `len`-byte payload in its `generation`.
    fn name(&self, id: ChunkId, len: u32, generation: u32) -> ShmOffset {
        ShmOffset {
            offset: self.raw.offset_of(id),
            len,
            generation,
        }
    }

    fn holder(&self) -> u16 {
        // At most `MAX_ROLES` (1024) participants: fits, and is never `NOBODY`.
        self.participant as u16
    }
}

impl Drop for Pool {
    /// Leaves the pool: returns every chunk still recorded as this participant's (in
    /// flight to it and never received, or leaked with `mem::forget`), marks the slot
    /// unused, and releases its lock.
    fn drop(&mut self) {
        let me = self.holder();
        self.raw.sweep(|holder| holder == me);
        // The slot is clean, and marked free before its lock goes.
        Table::new(self.raw.entries(), &self.segment).free(self.participant, self.session);
        drop(self.claim.take());
    }
}

/// A chunk loaned from a [`Pool`], held by this participant: write the payload in place
/// through [`as_mut_slice`](Self::as_mut_slice) or [`value_mut`](Self::value_mut), then
/// turn it into a [`ShmOffset`] to send. Dropped unsent, it goes back to the pool.
#[must_use = "a loaned chunk is returned to the pool when dropped; send it with into_offset"]
pub struct LoanedChunk<'p> {
    pool: &'p Pool,
    id: ChunkId,
    generation: u32,
    len: u32,
    data: NonNull<u8>,
}

// SAFETY: the chunk is this handle's alone (the pool's state machine gives it one
// holder), and `Pool` is `Sync`; moving the handle to another thread moves that access.
unsafe impl Send for LoanedChunk<'_> {}
// SAFETY: `&LoanedChunk` only reads the chunk (`as_slice`), which no one else writes.
unsafe impl Sync for LoanedChunk<'_> {}

impl fmt::Debug for LoanedChunk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoanedChunk")
            .field("offset", &self.offset())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<'p> LoanedChunk<'p> {
    /// The pool the chunk was loaned from.
    #[must_use]
    pub fn pool(&self) -> &'p Pool {
        self.pool
    }

    /// The payload length asked for, in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the payload length is 0.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk's size, in bytes: the payload may grow up to it with
    /// [`set_len`](Self::set_len).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.pool.raw.classes()[self.id.class].chunk_size as usize
    }

    /// Sets the payload length, in bytes (a frame shorter than first loaned, say).
    ///
    /// # Panics
    ///
    /// If `len` exceeds [`capacity`](Self::capacity).
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "payload length {len} exceeds the chunk's {} bytes",
            self.capacity()
        );
        self.len = len as u32;
    }

    /// The payload, to write in place.
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the chunk is `capacity >= len` bytes inside the mapping, which lives as
        // long as `'p`; this participant is its only holder (state LOANED), and `&mut self`
        // makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.data.as_ptr(), self.len()) }
    }

    /// The payload as written so far.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`; `&self` excludes `&mut` access meanwhile.
        unsafe { core::slice::from_raw_parts(self.data.as_ptr(), self.len()) }
    }

    /// The payload as a `T`, to write in place: `None` if the payload is shorter than
    /// `T` ([`Pool::loan_for`] gives one that fits). Chunks are aligned to
    /// [`CHUNK_ALIGN`], so any `T` aligned to at most that fits.
    #[must_use]
    pub fn value_mut<T: FromBytes + IntoBytes + KnownLayout>(&mut self) -> Option<&mut T> {
        T::mut_from_prefix(self.as_mut_slice()).ok().map(|(v, _)| v)
    }

    /// The name this chunk will have once sent (for logging; send with
    /// [`into_offset`](Self::into_offset)).
    #[must_use]
    pub fn offset(&self) -> ShmOffset {
        self.pool.name(self.id, self.len, self.generation)
    }

    /// Marks the chunk in flight to participant `receiver` (its
    /// [`Pool::participant`]) and returns its offset, to send through a ring. If the
    /// receiver dies before receiving it, [`Pool::reclaim_dead`] returns the chunk; if
    /// the receiver leaves cleanly, it does so itself.
    ///
    /// Send the offset: an offset dropped unsent is returned only when `receiver` leaves
    /// or dies. (To take back an offset a ring refused, [`Pool::receive`] it and drop
    /// the sample.)
    #[must_use = "the chunk is in flight: send the offset, or receive it back"]
    pub fn into_offset_for(self, receiver: u32) -> ShmOffset {
        let to = u16::try_from(receiver)
            .ok()
            .filter(|&r| u32::from(r) < self.pool.raw.participants())
            .unwrap_or(NOBODY);
        self.send(to)
    }

    /// Marks the chunk in flight to whoever receives it (for a ring many read) and
    /// returns its offset. Unlike [`into_offset_for`](Self::into_offset_for), a chunk
    /// that no one ever receives is never reclaimed.
    #[must_use = "the chunk is in flight: send the offset, or receive it back"]
    pub fn into_offset(self) -> ShmOffset {
        self.send(NOBODY)
    }

    /// Marks the chunk shared and returns its offset: read in place by any number of
    /// readers at once ([`Pool::read_shared`]), each under its own hazard word, until
    /// its publisher retires it ([`Pool::retire_shared`]); then freed by whoever sees
    /// the last reader go. A shared chunk is never returned by a sweep
    /// ([`Pool::reclaim_dead`]): whoever publishes it must retire it (a broadcast ring's
    /// publisher does, when it overwrites the slot that names it).
    ///
    /// Write the offset where readers find it before calling this, so that a process
    /// killed between the two leaves a named chunk, never a shared chunk nobody names.
    #[must_use = "the chunk is shared: publish the offset, or retire it"]
    pub fn into_shared(self) -> ShmOffset {
        let offset = self.offset();
        let this = core::mem::ManuallyDrop::new(self);
        // Fails only if a corrupt peer rewrote our chunk's header; the offset then fails
        // every reader's check.
        let _ = protocol::share(
            &this.pool.raw.header(this.id).owner,
            this.pool.holder(),
            this.generation,
        );
        offset
    }

    fn send(self, to: u16) -> ShmOffset {
        let offset = self.offset();
        let this = core::mem::ManuallyDrop::new(self);
        // Fails only if a corrupt peer rewrote our chunk's header; the offset then fails
        // the receiver's state check, and the chunk is not ours to return.
        let _ = this
            .pool
            .raw
            .send(this.id, this.pool.holder(), this.generation, to);
        offset
    }
}

impl Drop for LoanedChunk<'_> {
    fn drop(&mut self) {
        let from = owner(LOANED, self.pool.holder(), self.generation);
        let _ = self.pool.raw.release(self.id, from);
    }
}

/// A received chunk, held by this participant and read in place; returned to the pool
/// when dropped. Derefs to the payload bytes; [`value`](Self::value) reads it as a `T`.
pub struct Sample<'p> {
    chunk: Reading<'p>,
}

/// A chunk being read in place, by a [`Sample`] or a [`SharedSample`]: where it is, and
/// which loan of it.
struct Reading<'p> {
    pool: &'p Pool,
    id: ChunkId,
    generation: u32,
    len: u32,
    data: NonNull<u8>,
}

impl<'p> Reading<'p> {
    fn new(pool: &'p Pool, id: ChunkId, offset: ShmOffset) -> Self {
        Reading {
            pool,
            id,
            generation: offset.generation,
            len: offset.len,
            data: pool.raw.chunk(id),
        }
    }

    fn offset(&self) -> ShmOffset {
        self.pool.name(self.id, self.len, self.generation)
    }

    /// The payload.
    ///
    /// # Safety
    ///
    /// Nobody writes the chunk while the returned slice lives: its holder owns it
    /// (`HELD`), or a hazard word names it.
    unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: the chunk is at least `len` bytes (checked by `Pool::check`) inside the
        // mapping, which lives as long as `'p`; nobody writes it (the caller's contract).
        unsafe { core::slice::from_raw_parts(self.data.as_ptr(), self.len as usize) }
    }

    fn value<T: FromBytes + KnownLayout + Immutable>(bytes: &[u8]) -> Option<&T> {
        T::ref_from_prefix(bytes).ok().map(|(v, _)| v)
    }
}

// SAFETY: the sample only reads a chunk that its sender no longer writes (it sent it);
// `Pool` is `Sync`. Moving or sharing the handle across threads moves or shares reads.
unsafe impl Send for Sample<'_> {}
// SAFETY: as for `Send`: shared access is read-only.
unsafe impl Sync for Sample<'_> {}

impl fmt::Debug for Sample<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sample")
            .field("offset", &self.offset())
            .finish()
    }
}

impl Sample<'_> {
    /// The payload as a `T`, read in place: `None` if the payload is shorter than `T`.
    #[must_use]
    pub fn value<T: FromBytes + KnownLayout + Immutable>(&self) -> Option<&T> {
        Reading::value(self)
    }

    /// The offset this sample was received as.
    #[must_use]
    pub fn offset(&self) -> ShmOffset {
        self.chunk.offset()
    }
}

impl Deref for Sample<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: its sender gave the chunk up when it sent it, and this participant
        // holds it (state HELD) until the sample drops.
        unsafe { self.chunk.bytes() }
    }
}

impl Drop for Sample<'_> {
    fn drop(&mut self) {
        let chunk = &self.chunk;
        let from = owner(HELD, chunk.pool.holder(), chunk.generation);
        let _ = chunk.pool.raw.release(chunk.id, from);
    }
}

/// The reader side of a fan-out channel, as [`Pool::read_shared`] needs it: this
/// reader's hazard word (which it alone writes), and a scan of every reader's.
///
/// A broadcast ring implements it over its subscribers' table lines; see
/// [`owner`](crate::owner) for the protocol.
pub trait Readers {
    /// This reader's hazard word, free (0) when passed to [`Pool::read_shared`]: it
    /// then holds the offset of the chunk read, until the sample drops.
    fn hazard(&self) -> &AtomicU64;

    /// Whether any reader's hazard word (this one's included) names the chunk at
    /// `offset`. Each word is loaded with Acquire ([`named_by`](crate::owner::named_by)).
    fn holds(&self, offset: u64) -> bool;
}

/// A shared chunk read in place under a hazard word ([`Pool::read_shared`]): derefs to
/// the payload bytes; dropping it clears the word, and frees the chunk if it was the
/// last reader of a retired chunk.
pub struct SharedSample<'p, R: Readers> {
    chunk: Reading<'p>,
    reader: R,
}

// SAFETY: the sample only reads a chunk that no one writes while its hazard word names
// it (the protocol of `owner`); `Pool` is `Sync`, and `R` is sent with it.
unsafe impl<R: Readers + Send> Send for SharedSample<'_, R> {}
// SAFETY: as for `Send`: shared access is read-only.
unsafe impl<R: Readers + Sync> Sync for SharedSample<'_, R> {}

impl<R: Readers> fmt::Debug for SharedSample<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSample")
            .field("offset", &self.offset())
            .finish_non_exhaustive()
    }
}

impl<R: Readers> SharedSample<'_, R> {
    /// The payload as a `T`, read in place: `None` if the payload is shorter than `T`.
    #[must_use]
    pub fn value<T: FromBytes + KnownLayout + Immutable>(&self) -> Option<&T> {
        Reading::value(self)
    }

    /// The offset this sample was read at.
    #[must_use]
    pub fn offset(&self) -> ShmOffset {
        self.chunk.offset()
    }

    /// The reader whose hazard word holds the chunk.
    #[must_use]
    pub fn reader(&self) -> &R {
        &self.reader
    }
}

impl<R: Readers> Deref for SharedSample<'_, R> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: its publisher wrote the chunk before sharing it, and nobody writes it
        // while this reader's hazard word names it (it cannot be freed, so not loaned
        // again) until the sample drops.
        unsafe { self.chunk.bytes() }
    }
}

impl<R: Readers> Drop for SharedSample<'_, R> {
    fn drop(&mut self) {
        let (chunk, reader) = (&self.chunk, &self.reader);
        let raw = &chunk.pool.raw;
        let word = &raw.header(chunk.id).owner;
        protocol::release(reader.hazard(), raw.offset_of(chunk.id), word, |n| {
            reader.holds(n)
        });
    }
}
