//! The memory a ring lives in: a control block `C`, a table of participant entries `E`
//! and `capacity` slots `S`, on the heap (one process: what loom and miri run) or in a
//! mapped segment (any number of processes), laid out the same way in both; and the role
//! locks that say whether a participant lives.
//!
//! This is the one place that knows the difference between the two backings, and the one
//! place that switches to loom: under `cfg(loom)` there are no segments.
//!
//! # Layout
//!
//! | offset | size | what |
//! |---|---|---|
//! | 0 | `size_of::<C>()` (a multiple of 128) | the control block |
//! | `size_of::<C>()` | `entries * size_of::<E>()` | the participant table |
//! | the next multiple of `align_of::<C>()` (128, or a page for a flavour whose slots some participants map read-only) | `capacity * size_of::<S>()` | the slots |
//!
//! In a segment, offsets count from the data region (after the 4096-byte header); role
//! `k` is the OFD lock on byte `k` of the segment file
//! ([`Segment::claim_role`](shm_alloc::Segment::claim_role)). On the heap, role `k` is a
//! flag in the region.

use core::ptr::NonNull;
use std::sync::Arc;

use shm_sync::CACHE_PAD;
use shm_sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

#[cfg(not(loom))]
use shm_alloc::{RoleClaim, Segment};

/// Where the parts of a region start, in bytes, and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Offsets {
    /// The participant table.
    pub(crate) entries: usize,
    /// The slot array.
    pub(crate) slots: usize,
    /// The whole region.
    pub(crate) len: u64,
}

/// The offsets of a region of `entries` entries and `capacity` slots; `None` if its
/// length overflows a `u64`.
pub(crate) fn offsets<C, E, S>(entries: u32, capacity: u64) -> Option<Offsets> {
    let entries_at = size_of::<C>();
    debug_assert!(
        entries_at % CACHE_PAD == 0,
        "a control block fills whole blocks"
    );
    let table = (size_of::<E>() as u64).checked_mul(u64::from(entries))?;
    // The control block's alignment says where the slots may start: a flavour that
    // protects its slots page by page aligns its control block to a page.
    let slots_at = (entries_at as u64)
        .checked_add(table)?
        .checked_next_multiple_of(align_of::<C>().max(CACHE_PAD) as u64)?;
    let len = (size_of::<S>() as u64)
        .checked_mul(capacity)?
        .checked_add(slots_at)?;
    Some(Offsets {
        entries: entries_at,
        slots: usize::try_from(slots_at).ok()?,
        len,
    })
}

/// What keeps a region's memory alive, and holds its role locks.
enum Backing<C, E, S> {
    /// A mapped segment; roles are OFD locks on its file.
    #[cfg(not(loom))]
    Segment(Arc<Segment>),
    /// Memory of this process; roles are flags.
    Heap(Arc<Heap<C, E, S>>),
}

impl<C, E, S> Clone for Backing<C, E, S> {
    fn clone(&self) -> Self {
        match self {
            #[cfg(not(loom))]
            Backing::Segment(s) => Backing::Segment(s.clone()),
            Backing::Heap(h) => Backing::Heap(h.clone()),
        }
    }
}

/// A region on the heap.
struct Heap<C, E, S> {
    control: C,
    entries: Box<[E]>,
    slots: Box<[S]>,
    /// Role `k` is held while `locks[k]` is set.
    locks: Arc<[AtomicBool]>,
}

/// A ring's memory, as one participant sees it. Cloning shares the memory.
pub(crate) struct Region<C, E, S> {
    control: NonNull<C>,
    entries: NonNull<E>,
    slots: NonNull<S>,
    entry_count: u32,
    capacity: u64,
    backing: Backing<C, E, S>,
}

impl<C, E, S> Clone for Region<C, E, S> {
    fn clone(&self) -> Self {
        Region {
            backing: self.backing.clone(),
            ..*self
        }
    }
}

/// A role held: released when dropped, or by the kernel when the process dies.
pub(crate) enum RoleLock {
    /// An OFD lock on the role's byte of a segment file.
    #[cfg(not(loom))]
    Claim(#[allow(dead_code)] RoleClaim),
    /// A flag of a heap region.
    Heap {
        locks: Arc<[AtomicBool]>,
        role: usize,
    },
}

impl Drop for RoleLock {
    fn drop(&mut self) {
        #[cfg_attr(loom, allow(irrefutable_let_patterns))]
        if let RoleLock::Heap { locks, role } = self {
            // SYNC(lock): Release; pairs with the Acquire of a prober's `try_lock` or
            // `is_locked`, which then sees every store the holder made.
            locks[*role].store(false, Ordering::Release);
        }
    }
}

impl<C, E, S> Region<C, E, S> {
    /// A region on the heap with `roles` role locks, all free.
    pub(crate) fn heap(control: C, entries: Box<[E]>, slots: Box<[S]>, roles: u32) -> Self {
        debug_assert!(slots.len().is_power_of_two());
        let heap = Arc::new(Heap {
            control,
            entries,
            slots,
            locks: (0..roles).map(|_| AtomicBool::new(false)).collect(),
        });
        Region {
            control: NonNull::from(&heap.control),
            // `as_ptr` of the whole slices: the pointers may reach every element.
            entries: NonNull::new(heap.entries.as_ptr().cast_mut()).expect("never null"),
            slots: NonNull::new(heap.slots.as_ptr().cast_mut()).expect("never null"),
            entry_count: heap.entries.len() as u32,
            capacity: heap.slots.len() as u64,
            backing: Backing::Heap(heap),
        }
    }

    /// The region laid over `segment`'s data region.
    ///
    /// # Safety
    ///
    /// 1. `capacity` is a power of two, and the data region is at least
    ///    `offsets::<C, E, S>(entries, capacity).len` bytes long.
    /// 2. Any bytes are a valid `C`, `E` and `S` (atomics, `UnsafeCell`s of `FromBytes`
    ///    types, plain integers), and `align_of` each is at most 128.
    #[cfg(not(loom))]
    pub(crate) unsafe fn in_segment(segment: Segment, entries: u32, capacity: u64) -> Self {
        let offsets = offsets::<C, E, S>(entries, capacity).expect("checked by the caller");
        let base = segment.data();
        debug_assert!(offsets.len <= segment.data_len() as u64);
        // SAFETY: both offsets are inside the data region (caller's point 1) and
        // multiples of 128 from its page-aligned start, so aligned for `E` and `S`
        // (point 2).
        let (entries_at, slots_at) = unsafe {
            (
                base.add(offsets.entries).cast::<E>(),
                base.add(offsets.slots).cast::<S>(),
            )
        };
        Region {
            control: base.cast::<C>(),
            entries: entries_at,
            slots: slots_at,
            entry_count: entries,
            capacity,
            backing: Backing::Segment(Arc::new(segment)),
        }
    }

    /// The control block.
    #[inline(always)]
    pub(crate) fn control(&self) -> &C {
        // SAFETY: `control` points into memory `backing` keeps alive as long as `self`;
        // any bytes are a valid `C` (`in_segment`'s contract), and the flavours access
        // its shared fields only atomically.
        unsafe { self.control.as_ref() }
    }

    /// Participant entry `index` (`index < entry_count`).
    #[inline(always)]
    pub(crate) fn entry(&self, index: u32) -> &E {
        debug_assert!(index < self.entry_count, "entry {index} out of range");
        // SAFETY: `index < entry_count`: inside the table, which lies in memory
        // `backing` keeps alive; any bytes are a valid `E`.
        unsafe { self.entries.add(index as usize).as_ref() }
    }

    /// The participant table: every entry.
    pub(crate) fn entries(&self) -> &[E] {
        // SAFETY: `entries` points to `entry_count` entries inside the memory `backing`
        // keeps alive as long as `self`; any bytes are a valid `E` (atomics only), and
        // shared references to them are how every participant uses them.
        unsafe { core::slice::from_raw_parts(self.entries.as_ptr(), self.entry_count as usize) }
    }

    /// How many participant entries the table has.
    #[inline(always)]
    pub(crate) fn entry_count(&self) -> u32 {
        self.entry_count
    }

    /// The number of slots, a power of two.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The slot of `position`: `position & (capacity - 1)`.
    #[inline(always)]
    pub(crate) fn slot(&self, position: u64) -> &S {
        let index = (position & (self.capacity - 1)) as usize;
        // SAFETY: `index < capacity`, and `slots` points to `capacity` slots inside the
        // memory `backing` keeps alive as long as `self`.
        unsafe { self.slots.add(index).as_ref() }
    }

    /// The first slot; `capacity` slots follow it contiguously, valid while `self` lives.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn slots(&self) -> NonNull<S> {
        self.slots
    }

    /// Makes the slots read-only in this process's mapping of the segment, for a
    /// participant that only reads them (whole pages; see
    /// [`Segment::protect_read_only`](shm_alloc::Segment::protect_read_only)). Every
    /// handle that shares this region loses write access to them. Nothing on the heap.
    ///
    /// # Errors
    ///
    /// [`Error::Segment`] if `mprotect` fails.
    #[cfg(not(loom))]
    pub(crate) fn protect_slots(&self) -> Result<(), Error> {
        #[cfg_attr(loom, allow(irrefutable_let_patterns))]
        if let Backing::Segment(segment) = &self.backing {
            let offsets =
                offsets::<C, E, S>(self.entry_count, self.capacity).expect("checked at attach");
            let len = (self.capacity as usize) * size_of::<S>();
            segment.protect_read_only(offsets.slots, len)?;
        }
        Ok(())
    }

    /// Takes role `role`'s lock if nobody holds it.
    ///
    /// # Errors
    ///
    /// [`Error::Segment`] if the lock cannot be asked for (no file descriptor left).
    pub(crate) fn try_lock(&self, role: u32) -> Result<Option<RoleLock>, Error> {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment(segment) => match segment.claim_role(role) {
                Ok(claim) => Ok(Some(RoleLock::Claim(claim))),
                Err(shm_alloc::Error::RoleTaken { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Backing::Heap(heap) => {
                let role = role as usize;
                // SYNC(lock): Acquire; pairs with the Release of the previous holder's
                // unlock. Swapping `true` into a held lock changes nothing.
                let taken = heap.locks[role].swap(true, Ordering::Acquire);
                Ok((!taken).then(|| RoleLock::Heap {
                    locks: heap.locks.clone(),
                    role,
                }))
            }
        }
    }

    /// Takes role `role`'s lock.
    ///
    /// # Errors
    ///
    /// In a segment, [`Error::Segment`] with `RoleTaken` if anyone holds it (or `Io` if
    /// it cannot be asked for); on the heap, [`Error::ParticipantsFull`] if it is held.
    pub(crate) fn claim_role(&self, role: u32) -> Result<RoleLock, Error> {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment(segment) => Ok(RoleLock::Claim(segment.claim_role(role)?)),
            Backing::Heap(_) => self
                .try_lock(role)?
                .ok_or(Error::ParticipantsFull { limit: 1 }),
        }
    }

    /// Whether role `role`'s lock is held: its holder lives. A failed probe counts as
    /// alive: it is no evidence of death.
    pub(crate) fn is_locked(&self, role: u32) -> bool {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment(segment) => segment.role_alive(role).unwrap_or(true),
            // SYNC(lock): Acquire, as in `try_lock`.
            Backing::Heap(heap) => heap.locks[role as usize].load(Ordering::Acquire),
        }
    }

    /// Something that keeps this region's memory mapped (or allocated) until dropped,
    /// for a reactor thread that reads its event counts' futex words.
    pub(crate) fn keep_alive(&self) -> crate::wait_set::sealed::KeepAlive
    where
        C: 'static,
        E: 'static,
        S: 'static,
    {
        /// The backing, only held.
        struct Kept<C, E, S>(#[allow(dead_code)] Backing<C, E, S>);
        // SAFETY: a `Kept` is never read through: it is held, then dropped, which drops
        // an `Arc` of a segment (an unmap and a close, fine from any thread) or of heap
        // memory made of atomics and plain-bytes slots (no drop glue of consequence).
        unsafe impl<C, E, S> Send for Kept<C, E, S> {}
        // SAFETY: as above: no access through a shared reference at all.
        unsafe impl<C, E, S> Sync for Kept<C, E, S> {}
        crate::wait_set::sealed::KeepAlive(Box::new(Kept(self.backing.clone())))
    }

    /// Whether a participant can die without leaving (another process may attach):
    /// true in a segment. On the heap every handle leaves through `Drop`.
    pub(crate) fn peers_may_die(&self) -> bool {
        match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment(_) => true,
            Backing::Heap(_) => false,
        }
    }

    /// A number naming this ring, the same in every process that maps it and never 0:
    /// in a segment, a hash of its path, creator pid and creation time (a ring removed
    /// and created again at the same path gets another); on the heap, of this process's
    /// id and the region's address. What a pool's receiver binds to
    /// ([`Pool::bind_channel`](shm_alloc::Pool::bind_channel)).
    #[cfg(not(loom))]
    pub(crate) fn id(&self) -> u64 {
        use crate::message::{FNV_OFFSET, fnv1a as fnv};

        let hash = match &self.backing {
            #[cfg(not(loom))]
            Backing::Segment(segment) => {
                let header = segment.header();
                let hash = fnv(FNV_OFFSET, segment.path().as_os_str().as_encoded_bytes());
                let hash = fnv(hash, &header.creator_pid.to_le_bytes());
                fnv(hash, &header.created_unix_ns.to_le_bytes())
            }
            Backing::Heap(_) => {
                let hash = fnv(FNV_OFFSET, &u64::from(std::process::id()).to_le_bytes());
                fnv(hash, &(self.control.as_ptr() as usize as u64).to_le_bytes())
            }
        };
        hash.max(1)
    }
}

/// Role `k` of a region guards entry `k` of its participant table.
impl<C, E, S> shm_alloc::participants::Locks for Region<C, E, S> {
    type Guard = RoleLock;
    type Error = Error;

    fn try_lock(&self, index: u32) -> Result<Option<RoleLock>, Error> {
        Region::try_lock(self, index)
    }

    fn is_locked(&self, index: u32) -> bool {
        Region::is_locked(self, index)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{OpenMode, spsc};

    /// A ring's id (what a pool's receiver binds to) is the same for every handle of
    /// the ring, in every process, and differs between rings: two heap rings, two
    /// segments, and a segment removed and made again at the same path.
    #[test]
    #[cfg_attr(miri, ignore = "maps segments in /dev/shm")]
    fn a_ring_id_names_one_ring() {
        let (tx1, rx1) = spsc::channel::<u64>(4).unwrap();
        let (tx2, _rx2) = spsc::channel::<u64>(4).unwrap();
        assert_eq!(tx1.ring_id(), rx1.ring_id());
        assert_ne!(tx1.ring_id(), tx2.ring_id());

        let a = shm_testkit::ShmName::new("ring-id-a");
        let b = shm_testkit::ShmName::new("ring-id-b");
        let ring = |name: &shm_testkit::ShmName| {
            spsc::Builder::<u64>::new(name.as_str())
                .capacity(4)
                .mode(OpenMode::OpenOrCreate)
        };
        let tx_a = ring(&a).producer().unwrap();
        let rx_a = ring(&a).consumer().unwrap();
        let tx_b = ring(&b).producer().unwrap();
        assert_eq!(tx_a.ring_id(), rx_a.ring_id());
        let ids = [tx1.ring_id(), tx2.ring_id(), tx_a.ring_id(), tx_b.ring_id()];
        for (i, id) in ids.iter().enumerate() {
            assert_ne!(*id, 0, "never 0");
            assert!(!ids[i + 1..].contains(id), "{ids:?}");
        }
        let before = tx_a.ring_id();
        drop((tx_a, rx_a));
        shm_alloc::Segment::remove(&a.as_str().into()).unwrap();
        let again = ring(&a).producer().unwrap();
        assert_ne!(again.ring_id(), before, "made again at the same path");

        // An MPMC ring's handles, likewise.
        let (tx3, rx3) = crate::mpmc::channel::<u64>(4).unwrap();
        assert_eq!(tx3.ring_id(), rx3.ring_id());
        assert!(tx3.ring_id() > 1 && !ids.contains(&tx3.ring_id()));
    }
}
