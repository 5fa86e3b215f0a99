//! The free list of one size class: a lock-free stack of chunk indices (Treiber's stack,
//! IBM RJ 5118, 1986) whose links are indices, not pointers, so that it works in a
//! mapping that sits at a different address in every process.
//!
//! # Layout
//!
//! The head is one `u64`, `tag << 32 | index`: `index` is the top chunk (`NIL` for an
//! empty list), `tag` counts every successful push and pop. Each chunk has a `u32` link,
//! the index of the chunk below it.
//!
//! # ABA
//!
//! A popper reads `head = A`, then `A.next = B`, then swaps `head` from `A` to `B`. If
//! meanwhile another thread popped `A`, popped `B` and pushed `A` back, `head` is `A`
//! again but `B` is taken: a swap on the index alone would put a taken chunk on top. The
//! tag makes that swap fail: the head is `A` again, but with a tag three higher. The
//! tag comes round only if others complete exactly 2^32 operations while one popper
//! stands between its load and its swap. The loom model `pop_pop_push_against_pop_pop`
//! is the case the tag exists for.
//!
//! # Memory ordering
//!
//! One release/acquire pair, `SYNC(free-push)`: a push publishes its link, and
//! everything its thread wrote into the chunk, with a Release swap of `head`; a pop
//! loads `head` with Acquire, so that it reads the link (and later the chunk) as the
//! pusher left them. A pop's own swap is a read-modify-write, so it carries earlier
//! pushes' release sequences along to later poppers.

use shm_sync::Retries;
use shm_sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The index that ends the list (and marks an empty one).
pub(crate) const NIL: u32 = u32::MAX;

/// The head of an empty list.
pub(crate) const EMPTY: u64 = NIL as u64;

/// A link that names no chunk of the class, or a head that kept changing for a whole
/// retry budget (`link` is then the last index it named): the shared memory is corrupt,
/// or another process keeps writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadLink(pub(crate) u32);

#[inline]
fn index_of(head: u64) -> u32 {
    head as u32
}

#[inline]
fn next_head(head: u64, index: u32) -> u64 {
    ((head >> 32).wrapping_add(1) << 32) | u64::from(index)
}

/// Takes the top chunk off the list, `None` if it is empty.
///
/// `link(i)` gives the link of chunk `i`, or `None` if `i` is out of range.
///
/// # Errors
///
/// [`BadLink`] if the head or a link names a chunk `link` does not know.
#[inline]
pub(crate) fn pop<'a>(
    head: &AtomicU64,
    link: impl Fn(u32) -> Option<&'a AtomicU32>,
) -> Result<Option<u32>, BadLink> {
    // SYNC(free-push): Acquire; pairs with the Release swap in `push`, so the link read
    // below is the one its pusher wrote.
    let mut current = head.load(Ordering::Acquire);
    let mut retries = Retries::new();
    loop {
        let index = index_of(current);
        if index == NIL {
            return Ok(None);
        }
        if !retries.again() {
            return Err(BadLink(index));
        }
        let next = link(index).ok_or(BadLink(index))?;
        // Relaxed: ordered after the Acquire of `current`; if the chunk was popped and
        // pushed back since, its link may have changed, but so has the tag, and the swap
        // below fails.
        let next = next.load(Ordering::Relaxed);
        // SYNC(free-push): Acquire on success, the chunk's contents come with it; Acquire
        // on failure, the new head's link is read next.
        match head.compare_exchange_weak(
            current,
            next_head(current, next),
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => return Ok(Some(index)),
            Err(found) => current = found,
        }
    }
}

/// Puts chunk `index`, whose link is `link`, on top of the list. The caller owns the
/// chunk (took it with [`pop`], or is building the list) and gives it up. Returns `false`
/// if the head kept changing for a whole retry budget (another process keeps writing it):
/// the chunk is then left off the list, a leak rather than a hang.
#[inline]
pub(crate) fn push(head: &AtomicU64, index: u32, link: &AtomicU32) -> bool {
    // Relaxed: only the expected value of the swap, which checks it.
    let mut current = head.load(Ordering::Relaxed);
    let mut retries = Retries::new();
    loop {
        if !retries.again() {
            return false;
        }
        // Relaxed: published by the Release swap below.
        link.store(index_of(current), Ordering::Relaxed);
        // SYNC(free-push): Release; pairs with the Acquire load and swap in `pop`.
        // Relaxed on failure: the found head is only the next expected value.
        match head.compare_exchange_weak(
            current,
            next_head(current, index),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(found) => current = found,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn list(n: u32) -> (AtomicU64, Vec<AtomicU32>) {
        let head = AtomicU64::new(EMPTY);
        let links: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(NIL)).collect();
        for i in (0..n).rev() {
            push(&head, i, &links[i as usize]);
        }
        (head, links)
    }

    #[test]
    fn pops_in_stack_order_then_reports_empty() {
        let (head, links) = list(3);
        let link = |i: u32| links.get(i as usize);
        assert_eq!(pop(&head, link), Ok(Some(0)));
        assert_eq!(pop(&head, link), Ok(Some(1)));
        push(&head, 0, &links[0]);
        assert_eq!(pop(&head, link), Ok(Some(0)));
        assert_eq!(pop(&head, link), Ok(Some(2)));
        assert_eq!(pop(&head, link), Ok(None));
    }

    #[test]
    fn every_operation_moves_the_tag() {
        let (head, links) = list(1);
        let before = head.load(Ordering::Relaxed) >> 32;
        assert_eq!(pop(&head, |i| links.get(i as usize)), Ok(Some(0)));
        push(&head, 0, &links[0]);
        assert_eq!(head.load(Ordering::Relaxed) >> 32, before + 2);
        assert_eq!(index_of(head.load(Ordering::Relaxed)), 0);
    }

    #[test]
    fn a_link_out_of_range_is_reported() {
        let (head, links) = list(2);
        links[0].store(7, Ordering::Relaxed);
        let link = |i: u32| links.get(i as usize);
        assert_eq!(pop(&head, link), Ok(Some(0)));
        assert_eq!(pop(&head, link), Err(BadLink(7)));
    }

    #[test]
    fn threads_never_hold_one_chunk_twice() {
        use shm_sync::atomic::AtomicBool;
        const CHUNKS: u32 = 8;
        const ROUNDS: usize = if cfg!(miri) { 50 } else { 20_000 };
        let (head, links) = list(CHUNKS);
        let held: Vec<AtomicBool> = (0..CHUNKS).map(|_| AtomicBool::new(false)).collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        let Some(i) = pop(&head, |i| links.get(i as usize)).unwrap() else {
                            continue;
                        };
                        // Relaxed: a check of the test, not part of the protocol.
                        let was = held[i as usize].swap(true, Ordering::Relaxed);
                        assert!(!was, "chunk {i} popped twice");
                        held[i as usize].store(false, Ordering::Relaxed);
                        push(&head, i, &links[i as usize]);
                    }
                });
            }
        });
        let mut seen = Vec::new();
        while let Some(i) = pop(&head, |i| links.get(i as usize)).unwrap() {
            seen.push(i);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..CHUNKS).collect::<Vec<_>>());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use shm_sync::cell::UnsafeCell;

    /// Three chunks, each with a payload word that only its holder writes: loom reports
    /// a data race if a pop does not happen after the push that gave the chunk back.
    struct Pool {
        head: AtomicU64,
        links: [AtomicU32; 3],
        payload: [UnsafeCell<u64>; 3],
        held: [AtomicU32; 3],
    }

    impl Pool {
        fn new() -> Self {
            let pool = Pool {
                head: AtomicU64::new(EMPTY),
                links: [
                    AtomicU32::new(NIL),
                    AtomicU32::new(NIL),
                    AtomicU32::new(NIL),
                ],
                payload: [UnsafeCell::new(0), UnsafeCell::new(0), UnsafeCell::new(0)],
                held: [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)],
            };
            for i in (0..3).rev() {
                push(&pool.head, i, &pool.links[i as usize]);
            }
            pool
        }

        fn take(&self, owner: u64) -> Option<u32> {
            let i = pop(&self.head, |i| self.links.get(i as usize)).unwrap()?;
            // Relaxed: a bookkeeping check of the model, not part of the protocol.
            let was = self.held[i as usize].swap(1, Ordering::Relaxed);
            assert_eq!(was, 0, "chunk {i} handed out twice");
            // SAFETY: the model's claim under test: the pop made this thread the only
            // holder of chunk `i`; loom checks it.
            self.payload[i as usize].with_mut(|p| unsafe { *p = owner });
            Some(i)
        }

        fn give_back(&self, i: u32) {
            // Relaxed: bookkeeping of the model, see `take`.
            self.held[i as usize].store(0, Ordering::Relaxed);
            push(&self.head, i, &self.links[i as usize]);
        }

        /// Pops until empty, at most one more than the chunks (a cycle is a failure).
        fn drain(&self) -> Vec<u32> {
            let mut all = Vec::new();
            while let Some(i) = pop(&self.head, |i| self.links.get(i as usize)).unwrap() {
                all.push(i);
                if all.len() > self.links.len() {
                    break;
                }
            }
            all.sort_unstable();
            all
        }
    }

    /// The ABA case: one thread pops twice while the other pops `A`, pops `B` and pushes
    /// `A` back. Without the tag, the first thread's second pop hands out `B` while the
    /// other thread holds it. At the end every chunk is on the list exactly once.
    #[test]
    fn pop_pop_push_against_pop_pop() {
        loom::model(|| {
            let pool = Arc::new(Pool::new());
            let other = {
                let pool = Arc::clone(&pool);
                loom::thread::spawn(move || {
                    let a = pool.take(1);
                    let b = pool.take(1);
                    if let Some(a) = a {
                        pool.give_back(a);
                    }
                    b
                })
            };
            let mine = [pool.take(2), pool.take(2)];
            let kept = other.join().unwrap();
            for i in mine.into_iter().flatten().chain(kept) {
                pool.give_back(i);
            }
            assert_eq!(pool.drain(), vec![0, 1, 2]);
        });
    }

    /// Pushes racing pushes and pops: two threads each take a chunk and give it back
    /// while a third takes one.
    #[test]
    fn concurrent_push_and_pop() {
        loom::model(|| {
            let pool = Arc::new(Pool::new());
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let pool = Arc::clone(&pool);
                    loom::thread::spawn(move || {
                        if let Some(i) = pool.take(t) {
                            pool.give_back(i);
                        }
                    })
                })
                .collect();
            let mine = pool.take(9);
            for t in threads {
                t.join().unwrap();
            }
            if let Some(i) = mine {
                pool.give_back(i);
            }
            assert_eq!(pool.drain(), vec![0, 1, 2]);
        });
    }
}
