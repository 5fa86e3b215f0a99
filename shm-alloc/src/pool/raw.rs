//! The pool's algorithm over a region of memory, with no file and no lock: laying the
//! pool out, taking and returning chunks, the chunk state machine, and the sweep that
//! returns a departed holder's chunks. [`Pool`](super::Pool) runs it over a mapped
//! segment; the unit tests run it over the heap, under Miri too.
//!
//! # Layout of the region
//!
//! | offset                   | what                                                  |
//! |--------------------------|-------------------------------------------------------|
//! | 0                        | [`Config`]: size classes and participant count, 640 B |
//! | 640                      | loan cursors, one 128-byte line per class (16)        |
//! | 2688                     | participant table, 128 B per participant (`participants`) |
//! | next 128-byte boundary   | chunk headers of class 0, 1, ...: 16 B per chunk      |
//! | next 4096-byte boundary  | chunks of class 0, then of class 1, ... each class's  |
//! |                          | area page-aligned, each chunk a multiple of 128 B     |
//!
//! The creator writes [`Config`] and every chunk header before the segment's header is
//! published; after that, `Config` is never written again. An opener recomputes the
//! whole layout from the size classes and refuses a region whose offsets differ.
//!
//! # Chunk states
//!
//! Each chunk header holds its size class (written at creation) and an owner word,
//! `generation << 32 | holder << 8 | state`:
//!
//! | state       | holder                          | who moves it on, to what           |
//! |-------------|---------------------------------|------------------------------------|
//! | `FREE`      | [`NOBODY`]                      | a loaner: `LOANED`                 |
//! | `LOANED`    | the loaner                      | the loaner: `IN_FLIGHT` or `FREE`  |
//! | `IN_FLIGHT` | the receiver, or [`NOBODY`]     | a receiver: `HELD`                 |
//! | `HELD`      | the receiver                    | the receiver: `FREE`               |
//! | `SHARED`    | [`NOBODY`]                      | its publisher: `RETIRED`           |
//! | `RETIRED`   | [`NOBODY`]                      | whoever sees its last hazard go: `FREE` |
//!
//! and a sweep moves `LOANED`, `IN_FLIGHT` and `HELD` chunks of a departed holder to
//! `FREE`. A loaner moves its chunk `LOANED` to `SHARED` to publish it to many readers
//! at once (a broadcast ring); how readers hold a shared chunk, and who frees it, is in
//! [`crate::owner`]: never a sweep, which cannot know who reads it. Every move is a compare-and-swap on the whole word, so of two racing moves
//! (a receiver and a sweep) exactly one happens, and a chunk is freed once.
//! The generation grows by one at each loan; an offset carries it, so a receiver never
//! takes a chunk that was reclaimed and loaned again after the offset was sent.
//!
//! # Taking a free chunk
//!
//! The owner word is the only record of whether a chunk is free: a loan scans the class's
//! headers from a cursor (the chunk returned last, or else where the last loan stopped)
//! and takes the first `FREE` chunk by one compare-and-swap of its word; a return is one
//! compare-and-swap to `FREE`. Starting at the chunk returned last reuses the chunk most
//! likely to be in the caches, as a free list's last in, first out does. There is no free list, so no second word to keep in step
//! with the first: a process killed at any instruction of a loan or a return leaves each
//! chunk either free or recorded as someone's (which a sweep returns), never lost; and
//! there is no ABA problem to tag against. The cost: a loan from a class that is nearly
//! all loaned scans up to every header of the class (16 bytes each, four to a cache line);
//! in the common case the chunk at the cursor is free.
//!
//! # Memory ordering
//!
//! - `SYNC(chunk-free)`: a return's Release swap to `FREE` pairs with the next loaner's
//!   Acquire swap to `LOANED`: the chunk's last contents were written before it is reused.
//! - `SYNC(chunk-sent)`: the sender's Release swap to `IN_FLIGHT` pairs with the
//!   receiver's Acquire swap to `HELD`, so the receiver reads the payload as written even
//!   if the offset reached it by a path that does not synchronize (the rings do too).

use core::ptr::NonNull;

use shm_sync::CachePadded;
use shm_sync::atomic::{AtomicU32, AtomicU64, Ordering};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub(crate) use crate::owner::{
    FREE, HELD, IN_FLIGHT, LOANED, NOBODY, RETIRED, SHARED, generation_of, holder_of, owner,
    state_of,
};
use crate::participants::{ENTRY_LEN, Entry};
use shm_sync::Retries;

/// Chunks are aligned to, and sized in multiples of, this many bytes: the cache-line
/// pad of the workspace, so that two chunks never share a line (or a prefetched pair).
pub const CHUNK_ALIGN: u64 = 128;

/// The most size classes a pool can have.
pub const MAX_CLASSES: usize = 16;

const CONFIG_LEN: usize = 640;
const CURSORS_AT: usize = CONFIG_LEN;
const PARTICIPANTS_AT: usize = CURSORS_AT + MAX_CLASSES * 128;
const PAGE: u64 = 4096;

/// One size class as the creator recorded it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub(crate) struct ClassRecord {
    /// Bytes per chunk, a multiple of [`CHUNK_ALIGN`].
    pub(crate) chunk_size: u64,
    /// Chunks in the class.
    pub(crate) chunks: u64,
    /// Offset of the class's first chunk header in the region.
    pub(crate) headers_at: u64,
    /// Offset of the class's first chunk in the region.
    pub(crate) chunks_at: u64,
}

/// The fixed parameters at the start of the region.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub(crate) struct Config {
    pub(crate) class_count: u32,
    pub(crate) participants: u32,
    pub(crate) reserved: [u8; 120],
    pub(crate) classes: [ClassRecord; MAX_CLASSES],
}

const _: () = assert!(size_of::<Config>() == CONFIG_LEN);
const _: () = assert!(PARTICIPANTS_AT == 2688);

/// The header of one chunk.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct ChunkHeader {
    /// `generation << 32 | holder << 8 | state`; see the module docs.
    pub(crate) owner: AtomicU64,
    /// Zero: the free-list link of earlier versions.
    _reserved: AtomicU32,
    /// The chunk's size class, written at creation and never changed: a receiver checks
    /// that the header it found belongs to the class its offset points into.
    pub(crate) class: AtomicU32,
}

const _: () = assert!(size_of::<ChunkHeader>() == 16);

/// Words for an owner word, for error messages.
pub(crate) fn describe(word: u64) -> String {
    let state = match state_of(word) {
        FREE => "free",
        LOANED => "loaned",
        IN_FLIGHT => "in flight",
        HELD => "held",
        SHARED => "shared",
        RETIRED => "retired",
        _ => "in no known state",
    };
    match holder_of(word) {
        NOBODY => format!("{state}, generation {}", generation_of(word)),
        holder => format!(
            "{state} by participant {holder}, generation {}",
            generation_of(word)
        ),
    }
}

/// Rounds `n` up to a multiple of `to` (a power of two), `None` on overflow.
fn round_up(n: u64, to: u64) -> Option<u64> {
    Some(n.checked_add(to - 1)? & !(to - 1))
}

/// Lays out a pool of `classes` (`(chunk_size, chunks)`, sizes already multiples of
/// [`CHUNK_ALIGN`], ascending) for `participants`: the [`Config`] to write and the
/// region's length in bytes.
pub(crate) fn layout(classes: &[(u64, u64)], participants: u32) -> Result<(Config, u64), String> {
    if classes.is_empty() || classes.len() > MAX_CLASSES {
        return Err(format!(
            "expected 1 to {MAX_CLASSES} size classes, found {}",
            classes.len()
        ));
    }
    if participants == 0 || participants > crate::MAX_ROLES {
        return Err(format!(
            "expected 1 to {} participants, found {participants}",
            crate::MAX_ROLES
        ));
    }
    let overflow = || "the pool does not fit in 2^63 bytes".to_string();
    let mut config = Config {
        class_count: classes.len() as u32,
        participants,
        reserved: [0; 120],
        classes: [ClassRecord {
            chunk_size: 0,
            chunks: 0,
            headers_at: 0,
            chunks_at: 0,
        }; MAX_CLASSES],
    };
    let mut at = PARTICIPANTS_AT as u64 + ENTRY_LEN as u64 * u64::from(participants);
    for (i, &(chunk_size, chunks)) in classes.iter().enumerate() {
        if chunk_size == 0 || chunk_size % CHUNK_ALIGN != 0 {
            return Err(format!(
                "class {i}: expected a chunk size that is a non-zero multiple of {CHUNK_ALIGN}, \
                 found {chunk_size}"
            ));
        }
        if i > 0 && chunk_size <= classes[i - 1].0 {
            return Err(format!(
                "class {i}: expected chunk sizes in ascending order, found {chunk_size} after {}",
                classes[i - 1].0
            ));
        }
        if chunks == 0 || chunks > u64::from(u32::MAX) {
            return Err(format!(
                "class {i}: expected 1 to {} chunks, found {chunks}",
                u32::MAX
            ));
        }
        at = round_up(at, CHUNK_ALIGN).ok_or_else(overflow)?;
        config.classes[i] = ClassRecord {
            chunk_size,
            chunks,
            headers_at: at,
            chunks_at: 0,
        };
        at = at.checked_add(chunks * 16).ok_or_else(overflow)?;
    }
    for record in config.classes.iter_mut().take(classes.len()) {
        at = round_up(at, PAGE).ok_or_else(overflow)?;
        record.chunks_at = at;
        at = record
            .chunk_size
            .checked_mul(record.chunks)
            .and_then(|len| at.checked_add(len))
            .filter(|&end| end <= i64::MAX as u64)
            .ok_or_else(overflow)?;
    }
    Ok((config, at))
}

/// The pool over a region: a copy of its validated [`Config`] and the region's base.
#[derive(Debug)]
pub(crate) struct RawPool {
    base: NonNull<u8>,
    len: u64,
    classes: Vec<ClassRecord>,
    participants: u32,
}

// SAFETY: `RawPool` only reads and writes the region through atomics (owner words, links,
// heads, participant table) and hands chunk memory to one holder at a time by the state
// machine; the region outlives it by the contract of `init`/`attach`.
unsafe impl Send for RawPool {}
// SAFETY: as for `Send`: every shared access goes through atomics.
unsafe impl Sync for RawPool {}

/// A chunk named by class and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkId {
    pub(crate) class: usize,
    pub(crate) index: u32,
}

/// Why a loan failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoanFailure {
    /// No class has chunks this large.
    TooLarge { max: u64 },
    /// The best-fitting class is empty.
    Exhausted { chunk_size: u64 },
}

/// What one class holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ClassCounts {
    pub(crate) free: u64,
    pub(crate) loaned: u64,
    pub(crate) in_flight: u64,
    pub(crate) held: u64,
    pub(crate) shared: u64,
    pub(crate) retired: u64,
    pub(crate) unknown: u64,
}

impl RawPool {
    /// Writes a new pool into the region at `base` and returns it.
    ///
    /// # Safety
    ///
    /// 1. `base` is valid for reads and writes of `len` bytes, aligned to 4096, for as
    ///    long as the returned `RawPool` and every pointer it hands out live.
    /// 2. `len` is at least the length [`layout`] gave for `config`.
    /// 3. Nobody else accesses the region until this returns.
    pub(crate) unsafe fn init(base: NonNull<u8>, len: u64, config: &Config) -> RawPool {
        // SAFETY: (1) and (3): the region is ours alone, valid and aligned for `Config`
        // (640 bytes at offset 0 of a 4096-aligned region of at least that length).
        unsafe { base.cast::<Config>().write(*config) };
        let pool = RawPool {
            base,
            len,
            classes: config.classes[..config.class_count as usize].to_vec(),
            participants: config.participants,
        };
        for class in 0..pool.classes.len() {
            // Relaxed: published, with the whole region, by the segment header.
            pool.cursor(class).store(0, Ordering::Relaxed);
            let chunks = pool.classes[class].chunks as u32;
            for index in 0..chunks {
                let header = pool.header(ChunkId { class, index });
                // Relaxed: as above.
                header
                    .owner
                    .store(owner(FREE, NOBODY, 0), Ordering::Relaxed);
                // Relaxed: as above.
                header.class.store(class as u32, Ordering::Relaxed);
            }
        }
        for entry in pool.entries() {
            entry.reset();
        }
        pool
    }

    /// The pool already in the region at `base`, after checking its [`Config`] against
    /// the layout its size classes give.
    ///
    /// # Errors
    ///
    /// A description of what is wrong with the region.
    ///
    /// # Safety
    ///
    /// 1. `base` is valid for reads and writes of `len` bytes, aligned to 4096, for as
    ///    long as the returned `RawPool` and every pointer it hands out live.
    /// 2. Others access the region only by this module's rules.
    pub(crate) unsafe fn attach(base: NonNull<u8>, len: u64) -> Result<RawPool, String> {
        if len < CONFIG_LEN as u64 {
            return Err(format!(
                "the pool region is {len} bytes, shorter than its {CONFIG_LEN}-byte configuration"
            ));
        }
        // SAFETY: (1): the region is valid and aligned for `Config`, which is `FromBytes`
        // (any bytes are a value). Written once by the creator before it published the
        // segment; a volatile copy, as a buggy peer could write it while we read.
        let config = unsafe { base.cast::<Config>().read_volatile() };
        if config.class_count == 0 || config.class_count as usize > MAX_CLASSES {
            return Err(format!(
                "size class count is {}, expected 1 to {MAX_CLASSES}",
                config.class_count
            ));
        }
        let recorded = &config.classes[..config.class_count as usize];
        let sizes: Vec<(u64, u64)> = recorded.iter().map(|c| (c.chunk_size, c.chunks)).collect();
        let (expected, needed) = layout(&sizes, config.participants)?;
        if expected.classes != config.classes {
            return Err("size class offsets differ from the layout of its sizes".into());
        }
        if needed > len {
            return Err(format!(
                "its size classes need {needed} bytes, the region has {len}"
            ));
        }
        Ok(RawPool {
            base,
            len,
            classes: recorded.to_vec(),
            participants: config.participants,
        })
    }

    pub(crate) fn classes(&self) -> &[ClassRecord] {
        &self.classes
    }

    pub(crate) fn participants(&self) -> u32 {
        self.participants
    }

    /// A reference to the `T` at byte `at` of the region.
    fn at<T>(&self, at: u64) -> &T {
        debug_assert!(at + size_of::<T>() as u64 <= self.len);
        debug_assert!(at % align_of::<T>() as u64 == 0);
        // SAFETY: every caller passes an offset from the validated layout, inside the
        // region and aligned for `T` (checked above in debug builds); the region lives as
        // long as `self` (contract of `init`/`attach`), and `T` is an atomic type or made
        // of atomics, valid for any bits and shared by design.
        unsafe { self.base.add(at as usize).cast::<T>().as_ref() }
    }

    /// Where the next loan of `class` starts looking: a hint, any value works.
    fn cursor(&self, class: usize) -> &AtomicU64 {
        self.at::<CachePadded<AtomicU64>>((CURSORS_AT + class * 128) as u64)
    }

    /// The participant table: one entry per participant slot, free (state 0) or held
    /// (see [`Pool`](super::Pool)), whose word is the channel the holder receives from.
    pub(crate) fn entries(&self) -> &[CachePadded<Entry>] {
        debug_assert!(
            PARTICIPANTS_AT as u64 + ENTRY_LEN as u64 * u64::from(self.participants) <= self.len
        );
        // SAFETY: the table of `participants` 128-byte entries lies inside the region at
        // PARTICIPANTS_AT (the layout checked at attach), aligned to 128; an entry is
        // atomics only, valid for any bytes, and shared references to atomics are what
        // every process uses.
        unsafe {
            core::slice::from_raw_parts(
                self.base
                    .add(PARTICIPANTS_AT)
                    .cast::<CachePadded<Entry>>()
                    .as_ptr(),
                self.participants as usize,
            )
        }
    }

    pub(crate) fn header(&self, id: ChunkId) -> &ChunkHeader {
        let class = &self.classes[id.class];
        debug_assert!(u64::from(id.index) < class.chunks);
        self.at::<ChunkHeader>(class.headers_at + 16 * u64::from(id.index))
    }

    /// The first byte of chunk `id`: aligned to [`CHUNK_ALIGN`], valid for its class's
    /// chunk size.
    pub(crate) fn chunk(&self, id: ChunkId) -> NonNull<u8> {
        let at = self.offset_of(id);
        debug_assert!(at + self.classes[id.class].chunk_size <= self.len);
        // SAFETY: `at` is inside the region by the validated layout.
        unsafe { self.base.add(at as usize) }
    }

    /// The byte offset of chunk `id` in the region.
    pub(crate) fn offset_of(&self, id: ChunkId) -> u64 {
        let class = &self.classes[id.class];
        class.chunks_at + class.chunk_size * u64::from(id.index)
    }

    /// The chunk that starts at byte `offset` of the region.
    pub(crate) fn locate(&self, offset: u64) -> Result<ChunkId, &'static str> {
        for (class, record) in self.classes.iter().enumerate() {
            let Some(rel) = offset.checked_sub(record.chunks_at) else {
                continue;
            };
            if rel >= record.chunk_size * record.chunks {
                continue;
            }
            if rel % record.chunk_size != 0 {
                return Err("it points inside a chunk, not at its start");
            }
            return Ok(ChunkId {
                class,
                index: (rel / record.chunk_size) as u32,
            });
        }
        Err("it is outside every size class's chunks")
    }

    /// The smallest class whose chunks hold `len` bytes.
    pub(crate) fn class_for(&self, len: u64) -> Option<usize> {
        self.classes.iter().position(|c| c.chunk_size >= len)
    }

    /// Takes a chunk of the smallest class that fits `len` bytes and records `holder` as
    /// its loaner. Returns the chunk and its new generation.
    pub(crate) fn loan(&self, len: u64, holder: u16) -> Result<(ChunkId, u32), LoanFailure> {
        let Some(class) = self.class_for(len) else {
            return Err(LoanFailure::TooLarge {
                max: self.classes.last().map_or(0, |c| c.chunk_size),
            });
        };
        let record = &self.classes[class];
        let chunks = record.chunks;
        let cursor = self.cursor(class);
        // Relaxed: a hint; the swap on the owner word decides. Any value works: one past
        // the class starts at 0.
        let mut index = cursor.load(Ordering::Relaxed);
        if index >= chunks {
            index = 0;
        }
        // One pass over the class at most: bounded whatever others write meanwhile.
        for _ in 0..chunks {
            let id = ChunkId {
                class,
                index: index as u32,
            };
            let header = self.header(id);
            // Relaxed: the swap below decides, and acquires.
            let word = header.owner.load(Ordering::Relaxed);
            if state_of(word) == FREE {
                let generation = generation_of(word).wrapping_add(1);
                // SYNC(chunk-free): Acquire; pairs with the Release swap to FREE of the
                // chunk's last holder: its writes come before ours. Failure Relaxed:
                // someone else took it, nothing to read.
                if header
                    .owner
                    .compare_exchange(
                        word,
                        owner(LOANED, holder, generation),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    // Relaxed: a hint.
                    cursor.store(index + 1, Ordering::Relaxed);
                    return Ok((id, generation));
                }
            }
            index += 1;
            if index == chunks {
                index = 0;
            }
        }
        Err(LoanFailure::Exhausted {
            chunk_size: record.chunk_size,
        })
    }

    /// Moves chunk `id` from `from` (an exact owner word) to `FREE`. `false` if the word
    /// was no longer `from` (someone else moved it).
    pub(crate) fn release(&self, id: ChunkId, from: u64) -> bool {
        // SYNC(chunk-free): Release; pairs with the next loaner's Acquire swap: this
        // holder's accesses to the chunk come before its reuse. Failure Relaxed: another
        // party owns the move, and we touch nothing.
        let freed = self
            .header(id)
            .owner
            .compare_exchange(
                from,
                owner(FREE, NOBODY, generation_of(from)),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok();
        if freed {
            // The next loan of the class starts here: the chunk just used is the one
            // most likely still in the caches (as a free list's last in, first out).
            // Relaxed: a hint.
            self.cursor(id.class)
                .store(u64::from(id.index), Ordering::Relaxed);
        }
        freed
    }

    /// Marks loaned chunk `id` in flight to `receiver` ([`NOBODY`] for any).
    pub(crate) fn send(&self, id: ChunkId, holder: u16, generation: u32, receiver: u16) -> bool {
        // SYNC(chunk-sent): Release; pairs with the Acquire swap in `receive`, so the
        // payload written before is visible to the receiver. Relaxed on failure: the
        // chunk was taken from us (only a corrupt peer does that), nothing to read.
        self.header(id)
            .owner
            .compare_exchange(
                owner(LOANED, holder, generation),
                owner(IN_FLIGHT, receiver, generation),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Whether chunk `id`'s header records the class `id` names (a corrupt region
    /// otherwise).
    pub(crate) fn header_matches(&self, id: ChunkId) -> bool {
        // Relaxed: written once before the region was published.
        self.header(id).class.load(Ordering::Relaxed) as usize == id.class
    }

    /// Takes in-flight chunk `id` of `generation` for `holder`. On failure, the owner
    /// word found.
    pub(crate) fn receive(&self, id: ChunkId, generation: u32, holder: u16) -> Result<(), u64> {
        let header = self.header(id);
        // Relaxed: only the expected value of the swap below, which re-reads it.
        let mut word = header.owner.load(Ordering::Relaxed);
        let mut retries = Retries::new();
        loop {
            // A word that keeps changing for a whole budget: another process writes it.
            if state_of(word) != IN_FLIGHT || generation_of(word) != generation || !retries.again()
            {
                return Err(word);
            }
            // SYNC(chunk-sent): Acquire; pairs with the Release swap in `send`. Relaxed
            // on failure: the found word is checked again before any use.
            match header.owner.compare_exchange(
                word,
                owner(HELD, holder, generation),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(found) => word = found,
            }
        }
    }

    /// Returns every loaned, in-flight or held chunk whose holder `departed` says has
    /// left: each moves to `FREE` by one swap and is pushed once. Returns how many.
    pub(crate) fn sweep(&self, mut departed: impl FnMut(u16) -> bool) -> u64 {
        let mut returned = 0;
        for (class, record) in self.classes.iter().enumerate() {
            for index in 0..record.chunks as u32 {
                let id = ChunkId { class, index };
                // Relaxed: the swap in `release` decides; the chunk's contents are dead.
                let word = self.header(id).owner.load(Ordering::Relaxed);
                let state = state_of(word);
                let holder = holder_of(word);
                if matches!(state, LOANED | IN_FLIGHT | HELD)
                    && holder != NOBODY
                    && departed(holder)
                    && self.release(id, word)
                {
                    returned += 1;
                }
            }
        }
        returned
    }

    /// Counts the chunks of `class` by state. A snapshot taken chunk by chunk: under
    /// concurrent loans the counts may add up to states that never coexisted.
    pub(crate) fn counts(&self, class: usize) -> ClassCounts {
        let mut counts = ClassCounts::default();
        for index in 0..self.classes[class].chunks as u32 {
            // Relaxed: a statistic.
            let word = self
                .header(ChunkId { class, index })
                .owner
                .load(Ordering::Relaxed);
            match state_of(word) {
                FREE => counts.free += 1,
                LOANED => counts.loaned += 1,
                IN_FLIGHT => counts.in_flight += 1,
                HELD => counts.held += 1,
                SHARED => counts.shared += 1,
                RETIRED => counts.retired += 1,
                _ => counts.unknown += 1,
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap region aligned to a page, for the pool without a file (and under Miri).
    struct Region {
        ptr: NonNull<u8>,
        layout: std::alloc::Layout,
    }

    impl Region {
        fn new(len: u64) -> Region {
            let layout = std::alloc::Layout::from_size_align(len as usize, 4096).unwrap();
            // SAFETY: `layout` has a non-zero size (every pool is at least 4 KiB).
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            Region {
                ptr: NonNull::new(ptr).unwrap(),
                layout,
            }
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }

    fn pool(classes: &[(u64, u64)]) -> (Region, RawPool) {
        let (config, len) = layout(classes, 4).unwrap();
        let region = Region::new(len);
        // SAFETY: the region is `len` bytes, page-aligned, ours alone, and outlives the
        // pool (the caller keeps both and drops the pool first).
        let pool = unsafe { RawPool::init(region.ptr, len, &config) };
        (region, pool)
    }

    #[test]
    fn layout_aligns_every_chunk_and_orders_classes() {
        let (config, len) = layout(&[(128, 3), (4096, 2), (1 << 20, 1)], 8).unwrap();
        let classes = &config.classes[..3];
        for c in classes {
            assert_eq!(c.headers_at % CHUNK_ALIGN, 0);
            assert_eq!(c.chunks_at % PAGE, 0);
        }
        assert!(classes[0].chunks_at >= classes[2].headers_at + 16);
        assert!(classes[1].chunks_at >= classes[0].chunks_at + 3 * 128);
        assert_eq!(len, classes[2].chunks_at + (1 << 20));
    }

    #[test]
    fn layout_refuses_bad_classes() {
        assert!(layout(&[], 1).unwrap_err().contains("size classes"));
        assert!(
            layout(&[(100, 1)], 1)
                .unwrap_err()
                .contains("multiple of 128")
        );
        assert!(
            layout(&[(256, 1), (128, 1)], 1)
                .unwrap_err()
                .contains("ascending")
        );
        assert!(layout(&[(128, 0)], 1).unwrap_err().contains("chunks"));
        assert!(layout(&[(128, 1)], 0).unwrap_err().contains("participants"));
        assert!(layout(&[(1 << 62, 4)], 1).unwrap_err().contains("2^63"));
    }

    /// The limits are inclusive: `MAX_CLASSES` classes, `MAX_ROLES` participants and
    /// `u32::MAX` chunks a class lay out (only the layout: nothing of that size is
    /// mapped); one more of each is refused.
    #[test]
    fn layout_takes_each_limit_and_refuses_one_more() {
        let classes: Vec<(u64, u64)> = (1..=MAX_CLASSES as u64).map(|i| (i * 128, 1)).collect();
        assert!(layout(&classes, 1).is_ok());
        let one_more: Vec<(u64, u64)> =
            (1..=MAX_CLASSES as u64 + 1).map(|i| (i * 128, 1)).collect();
        assert!(
            layout(&one_more, 1)
                .unwrap_err()
                .contains(&format!("expected 1 to {MAX_CLASSES} size classes"))
        );
        assert!(layout(&[(128, 1)], crate::MAX_ROLES).is_ok());
        assert!(
            layout(&[(128, 1)], crate::MAX_ROLES + 1)
                .unwrap_err()
                .contains("participants")
        );
        let most = u64::from(u32::MAX);
        let (config, len) = layout(&[(128, most)], 1).unwrap();
        assert_eq!(len, config.classes[0].chunks_at + 128 * most);
        for chunks in [most + 1, most + 2, u64::MAX] {
            assert!(
                layout(&[(128, chunks)], 1)
                    .unwrap_err()
                    .contains("expected 1 to 4294967295 chunks"),
                "{chunks} chunks"
            );
        }
    }

    /// Each chunk has a 16-byte header, the headers of a class follow each other, and a
    /// class's headers start at the 128-byte boundary after the last class's: nine
    /// chunks' headers (144 bytes) take two 128-byte blocks.
    #[test]
    fn each_class_has_sixteen_header_bytes_per_chunk() {
        let (config, _) = layout(&[(128, 9), (256, 1), (384, 8)], 1).unwrap();
        let first = PARTICIPANTS_AT as u64 + ENTRY_LEN as u64;
        let at: Vec<u64> = config.classes[..3].iter().map(|c| c.headers_at).collect();
        assert_eq!(at, [first, first + 256, first + 384]);
        assert_eq!(config.classes[0].chunks_at, PAGE);
    }

    /// Every state an owner word can hold, in words, with its holder and generation (as
    /// `StaleOffset` reports what it found).
    #[test]
    fn an_owner_word_is_described_by_state_holder_and_generation() {
        let described = [
            (owner(FREE, NOBODY, 7), "free, generation 7"),
            (owner(LOANED, 3, 1), "loaned by participant 3, generation 1"),
            (owner(IN_FLIGHT, NOBODY, 2), "in flight, generation 2"),
            (
                owner(IN_FLIGHT, 0, 2),
                "in flight by participant 0, generation 2",
            ),
            (owner(HELD, 1, 9), "held by participant 1, generation 9"),
            (owner(SHARED, NOBODY, 4), "shared, generation 4"),
            (owner(RETIRED, NOBODY, 5), "retired, generation 5"),
            (owner(7, NOBODY, 6), "in no known state, generation 6"),
        ];
        for (word, words) in described {
            assert_eq!(describe(word), words, "{word:#x}");
        }
    }

    /// A header in no state of the protocol (a corrupt or hostile write) is counted as
    /// unknown, once; the other chunks by their state.
    #[test]
    fn counts_sort_chunks_by_state_and_count_unknown_states() {
        let (_region, pool) = pool(&[(128, 4)]);
        pool.loan(1, 0).unwrap();
        let (sent, generation) = pool.loan(1, 0).unwrap();
        assert!(pool.send(sent, 0, generation, NOBODY));
        let (forged, _) = pool.loan(1, 0).unwrap();
        pool.header(forged)
            .owner
            .store(owner(6, 0, 1), Ordering::Relaxed);
        let counts = pool.counts(0);
        assert_eq!(
            (counts.free, counts.loaned, counts.in_flight, counts.unknown),
            (1, 1, 1, 1),
            "{counts:?}"
        );
    }

    #[test]
    fn loans_pick_the_smallest_fitting_class_until_it_is_exhausted() {
        let (_region, pool) = pool(&[(128, 2), (256, 1)]);
        let (a, _) = pool.loan(1, 0).unwrap();
        let (b, _) = pool.loan(128, 0).unwrap();
        assert_eq!((a.class, b.class), (0, 0));
        assert_ne!(a.index, b.index);
        assert_eq!(
            pool.loan(100, 0),
            Err(LoanFailure::Exhausted { chunk_size: 128 })
        );
        assert_eq!(pool.loan(129, 0).unwrap().0.class, 1);
        assert_eq!(pool.loan(257, 0), Err(LoanFailure::TooLarge { max: 256 }));
    }

    #[test]
    fn a_chunk_goes_loaned_in_flight_held_free() {
        let (_region, pool) = pool(&[(128, 1)]);
        let (id, generation) = pool.loan(8, 1).unwrap();
        assert_eq!(generation, 1);
        assert_eq!(pool.counts(0).loaned, 1);
        assert!(pool.send(id, 1, generation, 2));
        assert_eq!(pool.counts(0).in_flight, 1);
        // A stale generation is refused, and so is a second receive.
        assert!(pool.receive(id, generation + 1, 2).is_err());
        assert_eq!(pool.receive(id, generation, 2), Ok(()));
        assert!(pool.receive(id, generation, 3).is_err());
        assert_eq!(pool.counts(0).held, 1);
        assert!(pool.release(id, owner(HELD, 2, generation)));
        assert_eq!(pool.counts(0).free, 1);
        let (again, second) = pool.loan(8, 1).unwrap();
        assert_eq!((again, second), (id, 2));
    }

    #[test]
    fn sweep_returns_a_departed_holders_chunks_once() {
        let (_region, pool) = pool(&[(128, 4)]);
        let (loaned, _) = pool.loan(1, 1).unwrap();
        let (held, g) = pool.loan(1, 0).unwrap();
        assert!(pool.send(held, 0, g, 1));
        assert_eq!(pool.receive(held, g, 1), Ok(()));
        let (to_one, g) = pool.loan(1, 0).unwrap();
        assert!(pool.send(to_one, 0, g, 1));
        let (to_anyone, g) = pool.loan(1, 0).unwrap();
        assert!(pool.send(to_anyone, 0, g, NOBODY));
        assert_eq!(pool.sweep(|h| h == 1), 3);
        assert_eq!(pool.sweep(|h| h == 1), 0);
        let counts = pool.counts(0);
        assert_eq!((counts.free, counts.in_flight), (3, 1));
        let mut seen = vec![];
        while let Ok((id, _)) = pool.loan(1, 0) {
            seen.push(id.index);
        }
        seen.sort_unstable();
        assert_eq!(seen, {
            let mut v = vec![loaned.index, held.index, to_one.index];
            v.sort_unstable();
            v
        });
    }

    #[test]
    fn headers_record_their_class() {
        let (_region, pool) = pool(&[(128, 2), (256, 2)]);
        for class in 0..2 {
            for index in 0..2 {
                assert!(pool.header_matches(ChunkId { class, index }));
            }
        }
        pool.header(ChunkId { class: 1, index: 0 })
            .class
            .store(0, Ordering::Relaxed);
        assert!(!pool.header_matches(ChunkId { class: 1, index: 0 }));
    }

    #[test]
    fn locate_accepts_chunk_starts_only() {
        let (_region, pool) = pool(&[(128, 2), (256, 2)]);
        let (id, _) = pool.loan(200, 0).unwrap();
        let at = pool.offset_of(id);
        assert_eq!(pool.locate(at), Ok(id));
        assert!(pool.locate(at + 1).is_err());
        assert!(pool.locate(0).is_err());
        assert!(pool.locate(u64::MAX).is_err());
    }

    #[test]
    fn attach_refuses_a_config_that_does_not_match_its_layout() {
        let (region, pool) = pool(&[(128, 2)]);
        let len = pool.len;
        drop(pool);
        // SAFETY: the region is valid for `len` bytes, page-aligned, and outlives the
        // pools made here.
        assert!(unsafe { RawPool::attach(region.ptr, len) }.is_ok());
        // SAFETY: as above; nobody else uses the region.
        unsafe { region.ptr.cast::<Config>().as_mut().classes[0].chunks_at += 128 };
        // SAFETY: as above.
        let err = unsafe { RawPool::attach(region.ptr, len) }.unwrap_err();
        assert!(err.contains("offsets"), "{err}");
        // SAFETY: as above.
        let err = unsafe { RawPool::attach(region.ptr, 100) }.unwrap_err();
        assert!(err.contains("shorter"), "{err}");
    }

    /// Chunks in flight to a departed participant (2), while two processes sweep its
    /// chunks at the same time and a live one (3) receives what it can, all in
    /// threads: each chunk ends either freed by exactly one sweep or held by the
    /// receiver, never both, never twice (each move is one swap of the whole owner word).
    #[test]
    fn racing_sweeps_and_a_receiver_move_each_chunk_once() {
        const CHUNKS: u64 = if cfg!(miri) { 8 } else { 256 };
        let rounds = if cfg!(miri) { 2 } else { 200 };
        // Rounds in which both the sweeps and the receiver moved chunks: the race ran.
        let mut contested = 0;
        for _ in 0..rounds {
            let (_region, pool) = pool(&[(128, CHUNKS)]);
            let mut sent = Vec::new();
            for _ in 0..CHUNKS {
                let (id, generation) = pool.loan(8, 1).unwrap();
                assert!(pool.send(id, 1, generation, 2));
                sent.push((id, generation));
            }
            let start = std::sync::Barrier::new(3);
            let (swept, received) = std::thread::scope(|s| {
                let sweeps: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            pool.sweep(|holder| holder == 2)
                        })
                    })
                    .collect();
                let receiver = s.spawn(|| {
                    start.wait();
                    sent.iter()
                        .rev()
                        .filter(|&&(id, generation)| pool.receive(id, generation, 3).is_ok())
                        .count() as u64
                });
                let swept: u64 = sweeps.into_iter().map(|t| t.join().unwrap()).sum();
                (swept, receiver.join().unwrap())
            });
            assert_eq!(
                swept + received,
                CHUNKS,
                "swept {swept}, received {received}"
            );
            let counts = pool.counts(0);
            assert_eq!(
                (counts.free, counts.held, counts.in_flight, counts.loaned),
                (swept, received, 0, 0)
            );
            // Every free chunk can be loaned once more, and only once.
            let mut loaned = 0;
            while pool.loan(8, 4).is_ok() {
                loaned += 1;
            }
            assert_eq!(loaned, swept);
            contested += u32::from(swept > 0 && received > 0);
        }
        assert!(
            cfg!(miri) || contested > 0,
            "the sweeps and the receiver never overlapped"
        );
    }
}
