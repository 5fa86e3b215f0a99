//! One participant table for every structure in a segment whose users come and go:
//! MPMC ring handles, pool users, and later broadcast subscribers and request/response
//! clients.
//!
//! Entry `k` is held by whoever holds lock `k` (in a segment, the OFD lock on role byte
//! `k` of the file, which the kernel drops when its holder dies however it dies; on the
//! heap, a flag). The protocol:
//!
//! - **claim** ([`Table::claim`]): take the first entry whose lock is free. If the entry
//!   says it is in use, its holder died: settle what it left (the structure's callback,
//!   run under the lock, so exactly once), then mark the entry with this holder's state
//!   and the next generation.
//! - **probe** ([`Table::reap`]): for each entry in use whose lock is free, take the lock,
//!   read the entry again (a newcomer may have replaced the dead holder and left since),
//!   settle it through the callback, and free it.
//! - **free** ([`Table::free`]): a holder that leaves clears its word and marks the
//!   entry free, then drops its lock.
//!
//! The callback may answer [`Settle::NotYet`] (MPMC: a live participant names the same
//! position as the dead one): the entry stays as it is, for a later probe.
//!
//! # Entry
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | `session` | `generation << 2 \| state`: state [`FREE`] (0), or the holder's (1 to 3, the structure's meaning) |
//! | 4 | 4 | `parked` | 1 while the holder is counted as a waiter of the structure's event count (see `shm_sync::EventCount::prepare_wait_marked`), else 0 |
//! | 8 | 8 | `word` | the holder's: the position an MPMC handle is claiming, the ring a pool user receives from |
//! | 16 | 112 | padding | to a 128-byte block: two holders never share a line |
//!
//! # Memory ordering
//!
//! - **SYNC(entry)**: a claimer writes `word`, then stores `session` with `Release`; a
//!   prober loads `session` with `Acquire`, then reads `word`.
//! - The lock orders the rest: a dead holder's last stores happen before its lock is
//!   released (a process's exit, or the heap flag's Release), and the prober or claimer
//!   that takes the lock then sees them.

use shm_sync::CachePadded;
use shm_sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The session state of a free entry.
pub const FREE: u32 = 0;
/// The mask of the state in a session word; the upper 30 bits count claims.
pub const STATE_MASK: u32 = 0b11;
const GENERATION_ONE: u32 = 0b100;

/// One entry of a participant table: 128 bytes.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Entry {
    session: AtomicU32,
    parked: AtomicU32,
    word: AtomicU64,
}

/// The size of a padded entry, in bytes.
pub const ENTRY_LEN: usize = 128;

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<CachePadded<Entry>>() == ENTRY_LEN);
    assert!(core::mem::offset_of!(Entry, word) == 8);
};

impl Entry {
    /// The session word: `generation << 2 | state`.
    pub fn session(&self) -> u32 {
        // SYNC(entry): Acquire; pairs with the Release store of a claim or a free, so the
        // word read next is the holder's.
        self.session.load(Ordering::Acquire)
    }

    /// The holder's word.
    pub fn word(&self) -> u64 {
        // Relaxed: ordered after the Acquire load of the session (SYNC(entry)), or
        // written by this holder.
        self.word.load(Ordering::Relaxed)
    }

    /// Marks the entry free, generation 0, word 0: for a creator laying the table out
    /// (nobody else maps it yet).
    pub fn reset(&self) {
        // Relaxed: published with the region (the segment's READY store).
        self.session.store(FREE, Ordering::Relaxed);
        self.parked.store(0, Ordering::Relaxed);
        self.word.store(0, Ordering::Relaxed);
    }

    /// The holder's parking mark: 1 while it is counted as a waiter of the structure's
    /// event count, so that whoever settles it after its death withdraws that count
    /// (`shm_sync::EventCount::settle_dead_waiter`).
    pub fn parked(&self) -> &AtomicU32 {
        &self.parked
    }

    /// Sets the holder's word (the holder only).
    pub fn set_word(&self, word: u64) {
        // Relaxed: the holder's own; published by its next Release (a session store, or
        // the structure's own release, as an MPMC claim's CAS).
        self.word.store(word, Ordering::Relaxed);
    }
}

/// The locks of a table: lock `k` guards entry `k`.
pub trait Locks {
    /// A lock held; released when dropped.
    type Guard;
    /// Why a lock could not be asked for.
    type Error;

    /// Takes lock `index` if nobody holds it.
    ///
    /// # Errors
    ///
    /// When the lock cannot be asked for (out of file descriptors, say): no evidence
    /// either way.
    fn try_lock(&self, index: u32) -> Result<Option<Self::Guard>, Self::Error>;

    /// Whether lock `index` is held: its holder lives. A probe that fails answers true
    /// (no evidence of death).
    fn is_locked(&self, index: u32) -> bool;
}

/// What a structure's settle callback did with a dead holder's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Settled: the entry can be freed or reused.
    Done,
    /// Not settled yet (another live participant is involved): leave it for later.
    NotYet,
}

/// An entry in use, as [`Table::holders`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The entry's index (and lock's).
    pub index: u32,
    /// The holder's state (1 to 3: the structure's meaning).
    pub state: u32,
    /// Whether its lock is held: a holder that died leaves its entry in use and its
    /// lock free until someone settles it.
    pub alive: bool,
}

/// An entry claimed by [`Table::claim`].
#[derive(Debug)]
pub struct Claimed<G> {
    /// The entry's index (and lock's).
    pub index: u32,
    /// The session word stored: the holder's state and this claim's generation.
    pub session: u32,
    /// The lock: hold it as long as the entry.
    pub guard: G,
}

/// A padded [`Entry`] is an entry of a table; a structure whose entries hold more of
/// their holder's state (a broadcast subscriber's cursor and counters) puts an `Entry`
/// first in a line of its own and implements `AsRef<Entry>` for that line.
impl AsRef<Entry> for CachePadded<Entry> {
    fn as_ref(&self) -> &Entry {
        self
    }
}

/// A participant table: `entries` guarded by `locks`. `E` is a table line: a padded
/// [`Entry`], or a structure's own line that holds one.
#[derive(Debug)]
pub struct Table<'a, L, E = CachePadded<Entry>> {
    entries: &'a [E],
    locks: &'a L,
}

impl<'a, L: Locks, E: AsRef<Entry>> Table<'a, L, E> {
    /// The table of `entries`, entry `k` guarded by lock `k`.
    pub fn new(entries: &'a [E], locks: &'a L) -> Self {
        Table { entries, locks }
    }

    /// How many entries the table has.
    #[must_use]
    pub fn len(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Whether the table has no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `index`.
    ///
    /// # Panics
    ///
    /// If `index` is out of range.
    #[must_use]
    pub fn entry(&self, index: u32) -> &'a Entry {
        self.entries[index as usize].as_ref()
    }

    /// Claims the first entry whose lock is free, for a holder in `state` (1 to 3).
    /// A previous holder's session found there is passed to `settle(index, session)`
    /// under the lock (it died: a holder that left freed its entry); an entry it answers
    /// [`Settle::NotYet`] for is passed over. Returns `None` when every entry is held.
    ///
    /// The entry is not marked yet: the caller does what must precede its being seen
    /// (counts), then calls [`mark`](Self::mark).
    ///
    /// # Errors
    ///
    /// The lock's error, or the callback's.
    ///
    /// # Panics
    ///
    /// If `state` is [`FREE`] or does not fit [`STATE_MASK`].
    pub fn claim<X: From<L::Error>>(
        &self,
        state: u32,
        settle: impl FnMut(u32, u32) -> Result<Settle, X>,
    ) -> Result<Option<Claimed<L::Guard>>, X> {
        self.claim_in(0..self.len(), state, settle)
    }

    /// [`claim`](Self::claim) among the entries `indexes` only: one entry (a role with
    /// a number of its own, as a broadcast ring's publisher or a subscriber that resumes
    /// under its id), or a range of them.
    ///
    /// # Errors
    ///
    /// As [`claim`](Self::claim).
    ///
    /// # Panics
    ///
    /// As [`claim`](Self::claim), and if `indexes` reaches past the table.
    pub fn claim_in<X: From<L::Error>>(
        &self,
        indexes: core::ops::Range<u32>,
        state: u32,
        mut settle: impl FnMut(u32, u32) -> Result<Settle, X>,
    ) -> Result<Option<Claimed<L::Guard>>, X> {
        assert!(state != FREE && state & !STATE_MASK == 0, "state {state}");
        assert!(indexes.end <= self.len(), "entries {indexes:?}");
        for index in indexes {
            let Some(guard) = self.locks.try_lock(index)? else {
                continue;
            };
            let entry = self.entry(index);
            let old = entry.session();
            if old & STATE_MASK != FREE {
                if settle(index, old)? == Settle::NotYet {
                    continue; // leave it to a later probe; try the next entry
                }
                // Settled: free it now, so that if this claimer dies before `mark`, the
                // dead predecessor is not settled a second time.
                self.free(index, old);
            }
            let session = (old & !STATE_MASK).wrapping_add(GENERATION_ONE) | state;
            return Ok(Some(Claimed {
                index,
                session,
                guard,
            }));
        }
        Ok(None)
    }

    /// Marks a claimed entry held: clears its word and stores its session.
    pub fn mark<G>(&self, claimed: &Claimed<G>) {
        let entry = self.entry(claimed.index);
        entry.set_word(0);
        // SYNC(entry): Release; a prober that sees this session sees the word cleared,
        // and what the claimer did before.
        entry.session.store(claimed.session, Ordering::Release);
    }

    /// Retires every dead holder other than `except`: each entry in use for which
    /// `wanted(session)` says yes and whose lock is free is taken under its lock, read
    /// again, passed to `settle(index, session)`, and freed unless the callback answers
    /// [`Settle::NotYet`]. Returns the indexes freed. Costs one lock probe (a syscall in
    /// a segment) per entry in use that is wanted.
    ///
    /// # Errors
    ///
    /// The callbacks' errors (a lock that cannot be asked for is passed over: no evidence
    /// of death).
    pub fn reap<X>(
        &self,
        except: Option<u32>,
        mut wanted: impl FnMut(u32) -> Result<bool, X>,
        mut settle: impl FnMut(u32, u32) -> Result<Settle, X>,
    ) -> Result<Vec<u32>, X> {
        let mut freed = Vec::new();
        for index in (0..self.len()).filter(|&i| Some(i) != except) {
            let session = self.entry(index).session();
            if session & STATE_MASK == FREE || !wanted(session)? || self.locks.is_locked(index) {
                continue;
            }
            let Ok(Some(_guard)) = self.locks.try_lock(index) else {
                continue;
            };
            // Under the lock: read the session again, a newcomer may have replaced the
            // dead holder and left since.
            let session = self.entry(index).session();
            if session & STATE_MASK == FREE {
                continue;
            }
            if settle(index, session)? == Settle::Done {
                self.free(index, session);
                freed.push(index);
            }
        }
        Ok(freed)
    }

    /// Every entry in use now, with its holder's state and whether its lock is held
    /// (alive) or not (dead, not settled yet): for observers (`shm ls`, `shm inspect`),
    /// who read without claiming anything. A snapshot: a holder may come or go as it is
    /// read.
    #[must_use]
    pub fn holders(&self) -> Vec<Holder> {
        (0..self.len())
            .filter_map(|index| {
                let session = self.entry(index).session();
                (session & STATE_MASK != FREE).then(|| Holder {
                    index,
                    state: session & STATE_MASK,
                    alive: self.locks.is_locked(index),
                })
            })
            .collect()
    }

    /// Frees entry `index`, held (or retired) with `session`: clears its word and marks
    /// it free, keeping the generation. The caller holds its lock, and drops it after.
    pub fn free(&self, index: u32, session: u32) {
        let entry = self.entry(index);
        entry.set_word(0);
        // SYNC(entry): Release; a later holder or prober sees the word cleared.
        entry
            .session
            .store((session & !STATE_MASK) | FREE, Ordering::Release);
    }
}

#[cfg(not(loom))]
impl Locks for crate::Segment {
    type Guard = crate::RoleClaim;
    type Error = crate::Error;

    /// [`claim_role`](crate::Segment::claim_role), with `RoleTaken` as `None`.
    fn try_lock(&self, index: u32) -> Result<Option<crate::RoleClaim>, crate::Error> {
        match self.claim_role(index) {
            Ok(claim) => Ok(Some(claim)),
            Err(crate::Error::RoleTaken { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`role_alive`](crate::Segment::role_alive); a failed probe counts as alive.
    fn is_locked(&self, index: u32) -> bool {
        self.role_alive(index).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shm_sync::CachePadded;
    use shm_sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Locks as flags, as a heap ring has them.
    struct Flags(Arc<[AtomicBool]>);

    /// A flag held; cleared when dropped.
    struct Held(Arc<[AtomicBool]>, usize);

    impl Drop for Held {
        fn drop(&mut self) {
            // Release: a later taker sees what the holder did (the test's SYNC(lock)).
            self.0[self.1].store(false, Ordering::Release);
        }
    }

    impl Locks for Flags {
        type Guard = Held;
        type Error = ();

        fn try_lock(&self, index: u32) -> Result<Option<Held>, ()> {
            // Acquire: pairs with `Held::drop`.
            let taken = self.0[index as usize].swap(true, Ordering::Acquire);
            Ok((!taken).then(|| Held(self.0.clone(), index as usize)))
        }

        fn is_locked(&self, index: u32) -> bool {
            // Acquire: as in `try_lock`.
            self.0[index as usize].load(Ordering::Acquire)
        }
    }

    /// Claims an entry for `state`, settling whatever dead holder is found.
    fn claim_settling(t: &Table<'_, Flags>, state: u32) -> Result<Option<Claimed<Held>>, ()> {
        t.claim(state, |_, _| Ok(Settle::Done))
    }

    fn table(n: usize) -> (Arc<[CachePadded<Entry>]>, Flags) {
        let entries = (0..n).map(|_| CachePadded::default()).collect();
        let locks = Flags((0..n).map(|_| AtomicBool::new(false)).collect());
        (entries, locks)
    }

    /// A probe settles exactly the dead holders it is asked about: not a free entry
    /// (whatever its lock), not a live holder (its lock held), not one `wanted` turns
    /// down; and it frees what it settled, keeping the generation.
    #[cfg(not(loom))]
    #[test]
    fn reap_settles_only_dead_wanted_holders() {
        let (entries, locks) = table(4);
        let t = Table::new(&entries, &locks);
        // Entries 0 and 1 in state 1, entry 2 in state 2.
        let mut claimed: Vec<_> = [1, 1, 2]
            .into_iter()
            .map(|state| {
                let c = claim_settling(&t, state).unwrap().unwrap();
                t.mark(&c);
                c
            })
            .collect();
        // Entry 0 stays alive; 1 and 2 die; 3 was never taken (free, lock free). The
        // probe wants state 1 only.
        let dead_two = claimed.pop().unwrap();
        let dead_one = claimed.pop().unwrap();
        let (one, two) = (dead_one.session, dead_two.session);
        drop((dead_one, dead_two));
        let mut settled = Vec::new();
        let freed = t
            .reap(
                None,
                |session| Ok::<_, ()>(session & STATE_MASK == 1),
                |index, session| {
                    settled.push((index, session));
                    Ok(Settle::Done)
                },
            )
            .unwrap();
        assert_eq!(settled, [(1, one)], "only the dead holder that is wanted");
        assert_eq!(freed, [1]);
        assert_eq!(
            t.entry(1).session(),
            one & !STATE_MASK,
            "free, same generation"
        );
        assert_eq!(t.entry(2).session(), two, "turned down: left as it was");
        assert_eq!(t.entry(3).session(), FREE);
        // A probe that wants every holder: the dead one left, never the free entry.
        settled.clear();
        let freed = t
            .reap(
                None,
                |_| Ok::<_, ()>(true),
                |index, session| {
                    settled.push((index, session));
                    Ok(Settle::Done)
                },
            )
            .unwrap();
        assert_eq!((settled, freed), (vec![(2, two)], vec![2]));
    }

    /// The session read before the lock may be stale: a newcomer may have replaced the
    /// dead holder and left since. Read again under the lock, an entry found free is
    /// left alone.
    #[cfg(not(loom))]
    #[test]
    fn reap_reads_the_session_again_under_the_lock() {
        let (entries, locks) = table(1);
        let t = Table::new(&entries, &locks);
        let dead = claim_settling(&t, 1).unwrap().unwrap();
        t.mark(&dead);
        let session = dead.session;
        drop(dead);
        let mut settled = 0;
        let freed = t
            .reap(
                None,
                // Between the first read and the lock, the entry is freed (here, by the
                // question itself).
                |_| {
                    t.free(0, session);
                    Ok::<_, ()>(true)
                },
                |_, _| {
                    settled += 1;
                    Ok(Settle::Done)
                },
            )
            .unwrap();
        assert_eq!((settled, freed), (0, vec![]));
    }

    #[cfg(not(loom))]
    #[test]
    fn entries_reset_and_keep_their_parking_mark() {
        let (entries, locks) = table(2);
        let t = Table::new(&entries, &locks);
        assert!(!t.is_empty());
        assert!(Table::new(&entries[..0], &locks).is_empty());
        let c = claim_settling(&t, 2).unwrap().unwrap();
        t.mark(&c);
        let entry = t.entry(c.index);
        entry.set_word(9);
        entry.parked().store(1, Ordering::Relaxed);
        assert_eq!(entry.parked().load(Ordering::Relaxed), 1);
        entry.reset();
        assert_eq!((entry.session(), entry.word()), (FREE, 0));
        assert_eq!(entry.parked().load(Ordering::Relaxed), 0);
    }

    #[cfg(not(loom))]
    #[test]
    #[should_panic(expected = "state 0")]
    fn claiming_for_the_free_state_panics() {
        let (entries, locks) = table(1);
        let _ = claim_settling(&Table::new(&entries, &locks), FREE);
    }

    #[cfg(not(loom))]
    #[test]
    #[should_panic(expected = "state 4")]
    fn claiming_for_a_state_past_the_mask_panics() {
        let (entries, locks) = table(1);
        let _ = claim_settling(&Table::new(&entries, &locks), STATE_MASK + 1);
    }

    #[cfg(not(loom))]
    #[test]
    #[should_panic(expected = "entries 1..3")]
    fn claiming_past_the_table_panics() {
        let (entries, locks) = table(2);
        let _ = Table::new(&entries, &locks).claim_in(1..3, 1, |_, _| Ok::<_, ()>(Settle::Done));
    }

    #[cfg(not(loom))]
    #[test]
    fn claim_in_takes_only_the_entries_given() {
        let (entries, locks) = table(3);
        let t = Table::new(&entries, &locks);
        let settle = |_, _| Ok::<_, ()>(Settle::Done);
        let one = t
            .claim_in(1..2, 1, settle)
            .unwrap()
            .expect("entry 1 is free");
        assert_eq!(one.index, 1, "entry 0 is free, but not asked for");
        t.mark(&one);
        assert!(
            t.claim_in(1..2, 1, settle).unwrap().is_none(),
            "entry 1 is held"
        );
        let two = t
            .claim_in(1..3, 1, settle)
            .unwrap()
            .expect("entry 2 is free");
        assert_eq!(two.index, 2);
    }

    #[cfg(not(loom))]
    #[test]
    #[should_panic(expected = "index out of bounds")]
    fn an_entry_past_the_table_panics() {
        let (entries, locks) = table(2);
        let _ = Table::new(&entries, &locks).entry(2);
    }

    #[cfg(not(loom))]
    #[test]
    fn claim_settles_a_dead_holder_once_and_reap_frees_it() {
        let (entries, locks) = table(2);
        let t = Table::new(&entries, &locks);
        let a = claim_settling(&t, 1).unwrap().unwrap();
        t.mark(&a);
        t.entry(a.index).set_word(42);
        let b = claim_settling(&t, 2).unwrap().unwrap();
        t.mark(&b);
        assert_eq!((a.index, b.index), (0, 1));
        assert!(claim_settling(&t, 1).unwrap().is_none());
        // `a` dies (its lock goes, its entry stays): a probe settles it once, frees it.
        let session = a.session;
        drop(a);
        let mut settled = Vec::new();
        let freed = t
            .reap(
                Some(1),
                |_| Ok::<_, ()>(true),
                |i, s| {
                    settled.push((i, s, t.entry(i).word()));
                    Ok(Settle::Done)
                },
            )
            .unwrap();
        assert_eq!((freed, settled), (vec![0], vec![(0, session, 42)]));
        assert_eq!(t.entry(0).session() & STATE_MASK, FREE);
        assert!(
            t.reap(None, |_| Ok::<_, ()>(true), |_, _| Ok(Settle::Done))
                .unwrap()
                .is_empty()
        );
        // The next claim of entry 0 is a new generation.
        let c = claim_settling(&t, 3).unwrap().unwrap();
        assert_eq!((c.index, c.session), (0, (session & !STATE_MASK) + 4 + 3));
    }

    #[cfg(not(loom))]
    #[test]
    fn not_yet_leaves_the_entry_for_later() {
        let (entries, locks) = table(1);
        let t = Table::new(&entries, &locks);
        let a = claim_settling(&t, 1).unwrap().unwrap();
        t.mark(&a);
        drop(a);
        let freed = t
            .reap(None, |_| Ok::<_, ()>(true), |_, _| Ok(Settle::NotYet))
            .unwrap();
        assert!(freed.is_empty());
        assert!(
            t.claim(1, |_, _| Ok::<_, ()>(Settle::NotYet))
                .unwrap()
                .is_none()
        );
        assert_eq!(t.entry(0).session() & STATE_MASK, 1);
    }

    /// A newcomer that settles a dead holder and dies before marking the entry leaves it
    /// free: the dead holder is not settled again by the next claimer or prober.
    #[cfg(not(loom))]
    #[test]
    fn a_settled_predecessor_is_settled_once_even_if_the_claimer_dies() {
        let (entries, locks) = table(1);
        let t = Table::new(&entries, &locks);
        let dead = claim_settling(&t, 1).unwrap().unwrap();
        t.mark(&dead);
        drop(dead);
        let mut settled = 0;
        let mut count = |_: u32, _: u32| {
            settled += 1;
            Ok::<_, ()>(Settle::Done)
        };
        let newcomer = t.claim(2, &mut count).unwrap().unwrap();
        drop(newcomer); // dies before `mark`
        assert!(
            t.reap(None, |_| Ok::<_, ()>(true), &mut count)
                .unwrap()
                .is_empty()
        );
        let next = t.claim(2, &mut count).unwrap().unwrap();
        t.mark(&next);
        assert_eq!(settled, 1);
    }

    /// A prober and a newcomer race to retire the same dead holder: it is settled
    /// exactly once, whoever wins, and the newcomer that gets the entry marks it.
    #[cfg(loom)]
    #[test]
    fn prober_and_newcomer_settle_a_dead_holder_once() {
        use shm_sync::atomic::AtomicU32;

        loom::model(|| {
            let (entries, locks) = table(1);
            {
                let t = Table::new(&entries, &locks);
                let dead = claim_settling(&t, 1).unwrap().unwrap();
                t.mark(&dead);
            } // its lock goes: the holder died
            let shared = Arc::new((entries, locks, AtomicU32::new(0)));
            let s = shared.clone();
            let newcomer = loom::thread::spawn(move || {
                let t = Table::new(&s.0, &s.1);
                t.claim(2, |_, _| {
                    s.2.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, ()>(Settle::Done)
                })
                .unwrap()
                .inspect(|c| t.mark(c))
            });
            let t = Table::new(&shared.0, &shared.1);
            t.reap(
                None,
                |_| Ok::<_, ()>(true),
                |_, _| {
                    shared.2.fetch_add(1, Ordering::Relaxed);
                    Ok(Settle::Done)
                },
            )
            .unwrap();
            let claimed = newcomer.join().unwrap();
            assert_eq!(shared.2.load(Ordering::Relaxed), 1, "settled once");
            let state = t.entry(0).session() & STATE_MASK;
            match claimed {
                Some(_) => assert_eq!(state, 2),
                None => assert_eq!(state, FREE),
            }
        });
    }

    /// Two newcomers race for one free entry: exactly one gets it.
    #[cfg(loom)]
    #[test]
    fn one_entry_one_claimer() {
        loom::model(|| {
            let shared = Arc::new(table(1));
            let s = shared.clone();
            let other = loom::thread::spawn(move || {
                let t = Table::new(&s.0, &s.1);
                claim_settling(&t, 1).unwrap().inspect(|c| t.mark(c))
            });
            let t = Table::new(&shared.0, &shared.1);
            let mine = claim_settling(&t, 2).unwrap();
            if let Some(c) = &mine {
                t.mark(c);
            }
            let theirs = other.join().unwrap();
            assert!(mine.is_some() != theirs.is_some(), "exactly one claim");
        });
    }
}
