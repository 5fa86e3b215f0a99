//! The counters of a bridge between a local ring and the network (`shm_transport::bridge`,
//! feature `zenoh`), in a small segment of their own (kind `bridge`) where `shm inspect`
//! and `shm ls` read them without attaching: messages forwarded, dropped, refused and
//! lost, repeats skipped, samples, the direction and the key expression, and whether the
//! bridge lives.
//!
//! The bridge holds role 0 of the segment for as long as it runs, so a second bridge on
//! the same counters is refused, and a killed one shows as dead until it is restarted.
//! The counters add up over every bridge that has held them: a restarted bridge goes on
//! counting where the killed one stopped. An inbound bridge also keeps there the stream
//! it last delivered from and the sequence number it expects next, so that after a
//! restart it drops what it already delivered and counts what it missed.
//!
//! # Layout (data region)
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | `direction` | 0 none yet, 1 out (ring to network), 2 in (network to ring) |
//! | 8 | 8 | `forwarded` | messages forwarded (out: published; in: written into the ring) |
//! | 16 | 8 | `dropped` | messages dropped (in: the ring was full and the bridge drops, or its consumers were gone) |
//! | 24 | 8 | `refused` | samples refused: not from a bridge, another message type, or malformed |
//! | 32 | 8 | `lost` | messages missing from a stream's sequence (best effort, or a bridge restarted) |
//! | 40 | 8 | `samples` | network samples published or received |
//! | 48 | 8 | `stream` | in: the stream last delivered from |
//! | 56 | 8 | `next` | in: the sequence number expected next from it |
//! | 64 | 8 | `repeated` | in: messages skipped because they were delivered before (an outbound bridge publishing again what was not acknowledged) |
//! | 128 | 4 | `key_len` | bytes of the key expression, at most 248 |
//! | 136 | 248 | `key` | the key expression, UTF-8 |
//!
//! Counters are written by the bridge alone, and read as statistics (`Relaxed`).

use shm_alloc::{Kind, Location};
use shm_sync::CachePadded;
use shm_sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::core::attach::{Identity, Layout, OpenMode, Settings, attach};
use crate::core::region::{Region, RoleLock};
use crate::error::Error;
use crate::message::fingerprint;

/// The longest key expression the counters record, in bytes (a longer one is cut at a
/// character boundary).
pub const KEY_LEN: usize = 248;

/// The name of the counters layout in the header.
const TYPE_NAME: &str = "shm_ring::bridge::Counters/v1";

/// Which way a bridge forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a local ring to the network.
    Out,
    /// From the network into a local ring.
    In,
}

impl Direction {
    fn word(self) -> u32 {
        match self {
            Direction::Out => 1,
            Direction::In => 2,
        }
    }

    /// The name `shm inspect` shows: `out`, `in`, or `none` for a word of neither.
    #[must_use]
    pub fn name(word: u32) -> &'static str {
        match word {
            1 => "out",
            2 => "in",
            _ => "none",
        }
    }
}

/// A snapshot of a bridge's counters, in messages (samples for `samples`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Counts {
    /// Messages forwarded: published (out) or written into the ring (in).
    pub forwarded: u64,
    /// Messages dropped: the ring was full and the bridge drops, or nobody consumes it.
    pub dropped: u64,
    /// Samples refused: not from a bridge, of another message type, or malformed.
    pub refused: u64,
    /// Messages missing from a stream's sequence numbers (best effort, a restart).
    pub lost: u64,
    /// Network samples published, or received and accepted.
    pub samples: u64,
    /// Messages skipped because they were delivered before (in).
    pub repeated: u64,
}

/// The counters block: two lines.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) counts: CachePadded<Tallies>,
    pub(crate) key: CachePadded<Key>,
}

#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    pub(crate) direction: AtomicU32,
    _reserved: AtomicU32,
    pub(crate) forwarded: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) samples: AtomicU64,
    pub(crate) stream: AtomicU64,
    pub(crate) next: AtomicU64,
    pub(crate) repeated: AtomicU64,
}

#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Key {
    pub(crate) len: AtomicU32,
    _reserved: AtomicU32,
    pub(crate) bytes: [AtomicU64; KEY_LEN / 8],
}

impl Control {
    /// The counters now (each a `Relaxed` load: statistics).
    pub(crate) fn counts(&self) -> Counts {
        let c = &self.counts;
        // Relaxed: statistics, each read on its own.
        let load = |w: &AtomicU64| w.load(Ordering::Relaxed);
        Counts {
            forwarded: load(&c.forwarded),
            dropped: load(&c.dropped),
            refused: load(&c.refused),
            lost: load(&c.lost),
            samples: load(&c.samples),
            repeated: load(&c.repeated),
        }
    }

    /// The direction word (`Relaxed`: written once by the bridge).
    pub(crate) fn direction(&self) -> u32 {
        // Relaxed: written once by the bridge at start, read as a statistic.
        self.counts.direction.load(Ordering::Relaxed)
    }

    /// The key expression, its length clamped to [`KEY_LEN`] and invalid UTF-8 replaced:
    /// whatever another process wrote.
    pub(crate) fn key(&self) -> String {
        // Relaxed: written by the bridge at start, read as a statistic.
        let len = (self.key.len.load(Ordering::Relaxed) as usize).min(KEY_LEN);
        let bytes: Vec<u8> = self
            .key
            .bytes
            .iter()
            // Relaxed: as the length above.
            .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
            .take(len)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The counters segment's layout: a control block, no table, one unused slot.
struct CountersLayout;

impl Layout for CountersLayout {
    type Control = Control;
    type Entry = ();
    type Slot = u64;

    fn identity(&self) -> Identity {
        Identity {
            kind: Kind::Bridge,
            type_fingerprint: fingerprint(TYPE_NAME, size_of::<Control>(), align_of::<Control>()),
            type_name: TYPE_NAME,
        }
    }

    fn check_capacity(&self, capacity: u64) -> Result<(), Error> {
        if capacity == 1 {
            Ok(())
        } else {
            Err(Error::InvalidCapacity(capacity))
        }
    }
}

/// A running bridge's counters: in a segment (visible to `shm inspect`), or on the heap.
/// Written by this bridge only; the lock on role 0 is held as long as this lives.
pub struct Counters {
    region: Region<Control, (), u64>,
    _lock: RoleLock,
}

impl Counters {
    /// Opens the counters segment at `location` (creating it if there is none) for a
    /// bridge forwarding `direction` on `key`, and holds it: its role 0 says this bridge
    /// lives. Counts already there (a previous bridge's) go on from where they are.
    ///
    /// # Errors
    ///
    /// [`Error::Segment`]: a segment that is not a bridge's counters, corrupt, or held by
    /// another bridge that lives (`RoleTaken`).
    #[cfg(not(loom))]
    pub fn open(
        location: impl Into<Location>,
        direction: Direction,
        key: &str,
    ) -> Result<Self, Error> {
        let mut settings = Settings::new(location.into(), 1);
        settings.mode = OpenMode::OpenOrCreate;
        let region = attach(&settings, &CountersLayout)?;
        let lock = region.claim_role(0)?;
        let counters = Counters {
            region,
            _lock: lock,
        };
        counters.start(direction, key);
        Ok(counters)
    }

    /// Counters on the heap, seen by this process alone.
    #[must_use]
    pub fn heap(direction: Direction, key: &str) -> Self {
        let region = Region::heap(Control::default(), Box::new([]), Box::new([0u64]), 1);
        let lock = region
            .try_lock(0)
            .ok()
            .flatten()
            .expect("a new heap region's lock is free");
        let counters = Counters {
            region,
            _lock: lock,
        };
        counters.start(direction, key);
        counters
    }

    fn start(&self, direction: Direction, key: &str) {
        let control = self.region.control();
        let mut end = key.len().min(KEY_LEN);
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; KEY_LEN];
        bytes[..end].copy_from_slice(&key.as_bytes()[..end]);
        // Relaxed: statistics, read by observers as they come.
        for (word, chunk) in control.key.bytes.iter().zip(bytes.chunks_exact(8)) {
            let chunk: [u8; 8] = chunk.try_into().expect("8 bytes");
            word.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
        }
        // Relaxed: as above.
        control.key.len.store(end as u32, Ordering::Relaxed);
        // Relaxed: as above.
        control
            .counts
            .direction
            .store(direction.word(), Ordering::Relaxed);
    }

    fn tallies(&self) -> &Tallies {
        &self.region.control().counts
    }

    /// Adds `n` messages forwarded and one sample.
    pub fn forwarded(&self, n: u64) {
        let t = self.tallies();
        // Relaxed: statistics (one writer).
        t.forwarded.fetch_add(n, Ordering::Relaxed);
        // Relaxed: as above.
        t.samples.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` messages skipped as repeats.
    pub fn repeated(&self, n: u64) {
        // Relaxed: a statistic.
        self.tallies().repeated.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` messages dropped.
    pub fn dropped(&self, n: u64) {
        // Relaxed: a statistic.
        self.tallies().dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one sample refused.
    pub fn refused(&self) {
        // Relaxed: a statistic.
        self.tallies().refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` messages lost.
    pub fn lost(&self, n: u64) {
        // Relaxed: a statistic.
        self.tallies().lost.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.region.control().counts()
    }

    /// An inbound bridge's place: the stream it last delivered from, and the sequence
    /// number it expects next from it (`(0, 0)`: none yet).
    #[must_use]
    pub fn resume_point(&self) -> (u64, u64) {
        let t = self.tallies();
        // Relaxed: written by this bridge (or a dead predecessor, whose lock's release
        // ordered its stores before this one's claim).
        (
            t.stream.load(Ordering::Relaxed),
            t.next.load(Ordering::Relaxed),
        )
    }

    /// Records an inbound bridge's place: `next` expected from `stream`. `next` is
    /// stored first and `stream` only when it changes, so that a bridge killed between
    /// the two leaves the old stream with the new number, which a sample of the new
    /// stream does not match (it starts afresh), never a new stream with an old number.
    pub fn set_resume_point(&self, stream: u64, next: u64) {
        let t = self.tallies();
        // Relaxed: read back by this bridge, or a successor after this one's lock is
        // released (which orders these stores before the successor's loads).
        t.next.store(next, Ordering::Relaxed);
        // Relaxed: as above.
        if t.stream.load(Ordering::Relaxed) != stream {
            // Relaxed: as above.
            t.stream.store(stream, Ordering::Relaxed);
        }
    }
}

// SAFETY: the region's pointers point into memory it keeps alive (a mapping or an Arc),
// valid from any thread; the control block is atomics only, and the lock is a file or
// an Arc of atomics.
unsafe impl Send for Counters {}
// SAFETY: as for `Send`; every access through `&self` is an atomic load or store.
unsafe impl Sync for Counters {}

impl core::fmt::Debug for Counters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let control = self.region.control();
        f.debug_struct("Counters")
            .field("direction", &Direction::name(control.direction()))
            .field("key", &control.key())
            .field("counts", &control.counts())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Counts add up, a second bridge on held counters is refused, and a successor goes
    /// on from the counts and the resume point the first left.
    #[test]
    #[cfg_attr(miri, ignore = "maps segments in /dev/shm")]
    fn counters_persist_across_bridges_and_refuse_a_second() {
        let name = shm_testkit::ShmName::new("bridge-counters");
        let first = Counters::open(name.as_str(), Direction::In, "a/b").unwrap();
        first.forwarded(5);
        first.dropped(2);
        first.refused();
        first.lost(3);
        first.set_resume_point(7, 11);
        let err = Counters::open(name.as_str(), Direction::In, "a/b").unwrap_err();
        assert!(
            matches!(err, Error::Segment(shm_alloc::Error::RoleTaken { .. })),
            "{err}"
        );
        drop(first);
        let second = Counters::open(name.as_str(), Direction::In, "a/b").unwrap();
        assert_eq!(
            second.counts(),
            Counts {
                forwarded: 5,
                dropped: 2,
                refused: 1,
                lost: 3,
                samples: 1,
                repeated: 0,
            }
        );
        assert_eq!(second.resume_point(), (7, 11));
        assert_eq!(second.region.control().key(), "a/b");
        assert_eq!(Direction::name(second.region.control().direction()), "in");
    }

    /// A key longer than [`KEY_LEN`] is cut at a character boundary.
    #[test]
    fn a_long_key_is_cut_at_a_character() {
        let key = "é".repeat(KEY_LEN);
        let counters = Counters::heap(Direction::Out, &key);
        let kept = counters.region.control().key();
        assert_eq!(kept, "é".repeat(KEY_LEN / 2));
        assert_eq!(
            Direction::name(counters.region.control().direction()),
            "out"
        );
    }
}
