//! The owner word of a pool chunk, and the protocol by which many readers in many
//! processes read one chunk in place: hazard words.
//!
//! Every chunk header holds an owner word, `generation << 32 | holder << 8 | state`;
//! the pool's state machine is in the docs of `pool` (its `raw` module). This module
//! holds the word's encoding and the two states a chunk takes when it is read by many
//! at once, with no single holder:
//!
//! | state     | holder   | meaning                                                    |
//! |-----------|----------|------------------------------------------------------------|
//! | `SHARED`  | `NOBODY` | published to many readers; a reader may start to read it   |
//! | `RETIRED` | `NOBODY` | no reader may start to read it; those that did still may   |
//!
//! # Hazard words
//!
//! A reference count in the chunk cannot be reclaimed exactly when a reader dies: the
//! count does not say whose references it holds, and a reader killed between taking a
//! reference and recording it leaves a count nobody can correct. So each reader owns
//! hazard words instead (Michael, "Hazard Pointers: Safe Memory Reclamation for
//! Lock-Free Objects", IEEE TPDS 2004), in memory every process maps: a word holds the
//! offset of the chunk the reader reads, or 0. A reader that dies leaves its words
//! behind, and whoever takes its role (under its lock) clears them on its behalf and
//! frees what was held only by them: nothing is counted twice, nothing is lost.
//!
//! - **hold** ([`Pool::read_shared`](crate::Pool::read_shared)): store the chunk's offset in a free hazard word, a `SeqCst`
//!   fence, then load the owner word: `SHARED` of the expected generation means the
//!   chunk is safe to read until the word is cleared.
//! - **retire** ([`Pool::retire_shared`](crate::Pool::retire_shared)): the publisher moves the chunk `SHARED` to `RETIRED` (when
//!   the slot that named it is overwritten, or every live reader went past it), a
//!   `SeqCst` fence, then scans every hazard word: if none names the chunk, it frees it.
//! - **release** (dropping a [`SharedSample`](crate::SharedSample)): the reader clears its hazard word, a `SeqCst` fence, then
//!   loads the owner word: if `RETIRED` and no hazard word names the chunk, it frees it.
//!
//! Each pair (hold and retire, retire and release, release and release) is Dekker's: each
//! side writes its word, fences, and reads the other's, so at least one of the two sees
//! the other's write. Hence a hold that succeeds is seen by every later retirer's scan,
//! and the last hazard of a retired chunk to go is seen going by someone, who frees it.
//! The free is one compare-and-swap `RETIRED` to `FREE`: done once, whoever races.
//!
//! # Memory ordering
//!
//! - `SYNC(chunk-shared)`: the publisher's Release swap `LOANED` to `SHARED` pairs with
//!   the Acquire load of a hold: the payload written before is visible to the reader.
//! - `SYNC(hazard)`: the `SeqCst` fences of the pairs above (the Dekker pattern).
//! - `SYNC(chunk-free)` (as in the pool): a reader's Release clear of its hazard pairs
//!   with the Acquire load of the scan that finds it clear, whose Release swap to `FREE`
//!   pairs with the next loaner's Acquire swap: every read of the chunk comes before it
//!   is written again.

// Under loom, only the model uses the protocol (the pool, its other user, is not built).
#![cfg_attr(loom, allow(dead_code))]

use shm_sync::atomic::{AtomicU64, Ordering, fence};

/// The holder of a chunk that nobody holds.
pub(crate) const NOBODY: u16 = u16::MAX;

pub(crate) const FREE: u64 = 0; // free to loan
pub(crate) const LOANED: u64 = 1; // written by its loaner
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const IN_FLIGHT: u64 = 2; // sent, not yet received
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const HELD: u64 = 3; // received, read by its holder
pub(crate) const SHARED: u64 = 4; // published to many readers
pub(crate) const RETIRED: u64 = 5; // no new readers; freed when its hazards are gone

#[inline]
pub(crate) const fn owner(state: u64, holder: u16, generation: u32) -> u64 {
    ((generation as u64) << 32) | ((holder as u64) << 8) | state
}

#[inline]
pub(crate) const fn state_of(word: u64) -> u64 {
    word & 0xff
}

#[cfg_attr(loom, allow(dead_code))]
#[inline]
pub(crate) const fn holder_of(word: u64) -> u16 {
    (word >> 8) as u16
}

#[inline]
pub(crate) const fn generation_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// Marks the chunk of owner word `owner`, loaned by `holder` in `generation`, shared.
/// `false` if it was not so loaned (only a corrupt peer rewrites a loaned chunk's word).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn share(owner_word: &AtomicU64, holder: u16, generation: u32) -> bool {
    // SYNC(chunk-shared): Release; pairs with the Acquire load in `hold`. Failure
    // Relaxed: nothing was written.
    owner_word
        .compare_exchange(
            owner(LOANED, holder, generation),
            owner(SHARED, NOBODY, generation),
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// Puts `name` (a chunk's offset, never 0) in the reader's free hazard word `hazard`,
/// then checks that the chunk is still shared in `generation`. `true`: the chunk may be
/// read until [`release`]. `false`: it may not (retired, freed, loaned again); the
/// caller must still [`release`] the hazard word, which frees the chunk if this hold
/// was the last thing keeping it.
pub(crate) fn hold(hazard: &AtomicU64, name: u64, owner_word: &AtomicU64, generation: u32) -> bool {
    // Relaxed: ordered before the load below by the fence.
    hazard.store(name, Ordering::Relaxed);
    // SYNC(hazard): SeqCst; pairs with the fence in `retire`: either its scan sees this
    // hazard, or the load below sees its RETIRED.
    #[cfg(loom)]
    let fenced = !faults::hold_fence_dropped();
    #[cfg(not(loom))]
    let fenced = true;
    if fenced {
        fence(Ordering::SeqCst);
    }
    // SYNC(chunk-shared): Acquire; pairs with the Release swap in `share`.
    owner_word.load(Ordering::Acquire) == owner(SHARED, NOBODY, generation)
}

/// Clears hazard word `hazard` (which named the chunk of `owner_word`, at `name`), then
/// frees the chunk if it is retired and no hazard word names it (`held(name)`, which
/// must load every reader's hazard word with Acquire). `true` if this call freed it.
pub(crate) fn release(
    hazard: &AtomicU64,
    name: u64,
    owner_word: &AtomicU64,
    held: impl Fn(u64) -> bool,
) -> bool {
    // SYNC(chunk-free): Release; this reader's reads of the chunk come before the scan
    // that finds the word clear.
    hazard.store(0, Ordering::Release);
    // SYNC(hazard): SeqCst; pairs with the fence of `retire` and of other releases.
    fence(Ordering::SeqCst);
    free_if_unheld(name, owner_word, held)
}

/// What [`retire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retired {
    /// The chunk was not shared in that generation: retired or freed already.
    NotShared,
    /// Retired; a reader still holds it, and the last to release it frees it.
    Held,
    /// Retired and freed.
    Freed,
}

/// Retires the chunk at `name` shared in `generation`: no reader can hold it from now
/// on; frees it if no hazard word names it (`held`, as in [`release`]).
pub(crate) fn retire(
    name: u64,
    owner_word: &AtomicU64,
    generation: u32,
    held: impl Fn(u64) -> bool,
) -> Retired {
    // Relaxed: ordered before the scan by the fence below; failure Relaxed: not ours.
    if owner_word
        .compare_exchange(
            owner(SHARED, NOBODY, generation),
            owner(RETIRED, NOBODY, generation),
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return Retired::NotShared;
    }
    // SYNC(hazard): SeqCst; pairs with the fences of `hold` and `release`.
    fence(Ordering::SeqCst);
    if free_if_unheld(name, owner_word, held) {
        Retired::Freed
    } else {
        Retired::Held
    }
}

/// Frees the chunk if it is retired and no hazard word names it. Called after a fence.
fn free_if_unheld(name: u64, owner_word: &AtomicU64, held: impl Fn(u64) -> bool) -> bool {
    // Relaxed: the swap below decides.
    let word = owner_word.load(Ordering::Relaxed);
    if state_of(word) != RETIRED || held(name) {
        return false;
    }
    // SYNC(chunk-free): Release; pairs with the next loaner's Acquire swap. Failure
    // Relaxed: another release or retire freed it first.
    owner_word
        .compare_exchange(
            word,
            owner(FREE, NOBODY, generation_of(word)),
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// Whether any of `hazards` names `name`: the scan a retire and a release make
/// ([`Readers::holds`](crate::Readers::holds)).
pub fn named_by<'a>(hazards: impl IntoIterator<Item = &'a AtomicU64>, name: u64) -> bool {
    // SYNC(chunk-free): Acquire; pairs with a release's clear of its word.
    hazards
        .into_iter()
        .any(|h| h.load(Ordering::Acquire) == name)
}

/// Fault injection for the loom models (built only under loom): drops the fence of
/// `hold`, so that the model shows it catches what that fence prevents.
#[cfg(loom)]
pub(crate) mod faults {
    use std::cell::Cell;

    std::thread_local! {
        static HOLD_FENCE_DROPPED: Cell<bool> = const { Cell::new(false) };
    }

    /// Drops the fence (`true`) or restores it (`false`), for the calling thread.
    pub(crate) fn drop_hold_fence(dropped: bool) {
        HOLD_FENCE_DROPPED.with(|d| d.set(dropped));
    }

    pub(super) fn hold_fence_dropped() -> bool {
        HOLD_FENCE_DROPPED.with(Cell::get)
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use loom::sync::Arc;
    use shm_sync::cell::UnsafeCell;

    const NAME: u64 = 4096;

    /// One shared chunk (generation 1), its payload, and two readers' hazard words.
    struct Chunk {
        owner: AtomicU64,
        payload: UnsafeCell<u64>,
        hazards: [AtomicU64; 2],
        freed: AtomicU64,
    }

    impl Chunk {
        fn new() -> Self {
            Chunk {
                owner: AtomicU64::new(owner(SHARED, NOBODY, 1)),
                payload: UnsafeCell::new(7),
                hazards: [AtomicU64::new(0), AtomicU64::new(0)],
                freed: AtomicU64::new(0),
            }
        }

        fn held(&self, name: u64) -> bool {
            named_by(&self.hazards, name)
        }

        /// Reader `r`: holds, reads the payload in place if the hold succeeded, releases.
        fn read(&self, r: usize) {
            if hold(&self.hazards[r], NAME, &self.owner, 1) {
                // SAFETY: loom checks that no write to the payload races this read.
                let value = self.payload.with(|p| unsafe { *p });
                assert_eq!(value, 7, "a held chunk was written");
            }
            if release(&self.hazards[r], NAME, &self.owner, |n| self.held(n)) {
                self.freed.fetch_add(1, Ordering::Relaxed);
            }
        }

        /// The publisher: retires the chunk, then loans it again if it is free and
        /// writes it (what reuse does), racing with the readers.
        fn retire_and_reuse(&self) {
            if retire(NAME, &self.owner, 1, |n| self.held(n)) == Retired::Freed {
                self.freed.fetch_add(1, Ordering::Relaxed);
            }
            if self
                .owner
                .compare_exchange(
                    owner(FREE, NOBODY, 1),
                    owner(LOANED, 0, 2),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                // SAFETY: loom checks that no read of a reader races this write.
                self.payload.with_mut(|p| unsafe { *p = 8 });
            }
        }
    }

    fn run(drop_fence: bool) {
        loom::model(move || {
            let chunk = Arc::new(Chunk::new());
            let readers: Vec<_> = (0..2)
                .map(|r| {
                    let chunk = chunk.clone();
                    loom::thread::spawn(move || {
                        faults::drop_hold_fence(drop_fence);
                        chunk.read(r);
                    })
                })
                .collect();
            chunk.retire_and_reuse();
            for r in readers {
                r.join().unwrap();
            }
            // Freed exactly once: by the retire or by the last release, never left
            // retired (a leak), never twice.
            assert_eq!(chunk.freed.load(Ordering::Relaxed), 1, "freed once");
            let state = state_of(chunk.owner.load(Ordering::Relaxed));
            assert!(state == FREE || state == LOANED, "state {state}");
        });
    }

    /// Two readers hold and release one shared chunk while the publisher retires it and
    /// reuses it at once if it is free: no read races the reuse, and the chunk is freed
    /// exactly once.
    #[test]
    fn hazards_free_a_shared_chunk_once_and_never_under_a_reader() {
        run(false);
    }

    /// The same with the fence of `hold` dropped: a reader sees the chunk shared while
    /// the publisher's scan misses its hazard, and reads under the reuse.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn hazards_without_the_hold_fence_let_a_reader_read_a_reused_chunk() {
        run(true);
    }
}

/// The protocol without loom: in order, and in threads (both run under Miri too).
#[cfg(all(test, not(loom)))]
mod plain_tests {
    use super::*;

    const NAME: u64 = 4096;

    fn held(hazards: &[AtomicU64], name: u64) -> bool {
        named_by(hazards, name)
    }

    /// A hold after the retire fails (and its release frees nothing another reader
    /// holds); the last reader's release frees the retired chunk, once.
    #[test]
    fn a_hold_after_retire_fails_and_the_last_release_frees() {
        let word = AtomicU64::new(owner(LOANED, 0, 1));
        let hazards = [AtomicU64::new(0), AtomicU64::new(0)];
        assert!(!hold(&hazards[0], NAME, &word, 1), "loaned: not yet shared");
        assert!(!release(&hazards[0], NAME, &word, |n| held(&hazards, n)));
        assert!(share(&word, 0, 1));
        assert!(!share(&word, 0, 1), "shared once");
        assert!(hold(&hazards[0], NAME, &word, 1));
        assert!(!hold(&hazards[1], NAME, &word, 2), "another generation");
        assert!(!release(&hazards[1], NAME, &word, |n| held(&hazards, n)));
        assert_eq!(retire(NAME, &word, 1, |n| held(&hazards, n)), Retired::Held);
        assert_eq!(
            retire(NAME, &word, 1, |n| held(&hazards, n)),
            Retired::NotShared,
            "retired once"
        );
        assert!(!hold(&hazards[1], NAME, &word, 1), "retired: no new reader");
        assert!(!release(&hazards[1], NAME, &word, |n| held(&hazards, n)));
        assert_eq!(state_of(word.load(Ordering::Relaxed)), RETIRED);
        assert!(release(&hazards[0], NAME, &word, |n| held(&hazards, n)));
        assert_eq!(word.load(Ordering::Relaxed), owner(FREE, NOBODY, 1));
        assert!(!release(&hazards[0], NAME, &word, |n| held(&hazards, n)));
    }

    /// Two reader threads hold and release the chunk over and over while a third
    /// retires it: each round, it is freed exactly once, by one of the three.
    #[test]
    fn racing_readers_and_a_retirer_free_the_chunk_once() {
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        for _ in 0..rounds {
            let word = AtomicU64::new(owner(SHARED, NOBODY, 1));
            let hazards = [AtomicU64::new(0), AtomicU64::new(0)];
            let start = std::sync::Barrier::new(3);
            let frees: u32 = std::thread::scope(|s| {
                let readers: Vec<_> = (0..2)
                    .map(|r| {
                        let (word, hazards, start) = (&word, &hazards, &start);
                        s.spawn(move || {
                            start.wait();
                            let mut freed = 0;
                            for _ in 0..4 {
                                hold(&hazards[r], NAME, word, 1);
                                freed += u32::from(release(&hazards[r], NAME, word, |n| {
                                    held(hazards, n)
                                }));
                            }
                            freed
                        })
                    })
                    .collect();
                start.wait();
                let retired = retire(NAME, &word, 1, |n| held(&hazards, n));
                assert_ne!(retired, Retired::NotShared);
                u32::from(retired == Retired::Freed)
                    + readers.into_iter().map(|r| r.join().unwrap()).sum::<u32>()
            });
            assert_eq!(frees, 1);
            assert_eq!(word.load(Ordering::Relaxed), owner(FREE, NOBODY, 1));
        }
    }
}
