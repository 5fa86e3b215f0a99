//! The call slot: where one call of a client waits for its response, and the protocol
//! that correlates a response with its call and drops one that comes too late.
//!
//! Each client owns [`CALLS_PER_CLIENT`] call slots. A slot's state word is
//! `generation << 32 | worker << 8 | state`; the generation grows by one at each call
//! made through the slot, and a request carries the slot and the generation it was
//! sent with, so a response can only ever land in the call it answers:
//!
//! | state | meaning | who moves it on, to what |
//! |---|---|---|
//! | `IDLE` | no call | the client: `WAITING` of the next generation, once it wrote the request into the slot |
//! | `WAITING` | sent, no worker took it yet | a worker: `TAKEN`; the client, giving up: `IDLE` |
//! | `TAKEN` | worker `w` reads the request in place and serves it | `w`: `WRITING`, or `DROPPED` if it drops the request unanswered; the client, giving up: `ABANDONED`; finding `w` dead: `IDLE` |
//! | `WRITING` | `w` writes the response into the slot | `w`: `RESPONDED`; the client, finding `w` dead: `IDLE` |
//! | `RESPONDED` | the response is in the slot | the client, once it has read it: `IDLE` |
//! | `ABANDONED` | given up while `w` served it: `w` may still read the request | `w`, instead of answering: `IDLE`; the client, finding `w` dead: `IDLE` |
//! | `DROPPED` | `w` dropped the request without an answer | the client: `IDLE` |
//!
//! Every move but the client's own `IDLE` to `WAITING` and `RESPONDED` or `DROPPED` to
//! `IDLE` (the slot is the client's alone in those states) is a compare-and-swap of the
//! whole word. So a worker whose call was given up (the deadline passed, the client
//! dropped its `Pending`, or the client died and a new one holds its slots) fails its
//! swap to `TAKEN` or to `WRITING`, writes nothing, and counts the response as late: it
//! is never delivered to a later call, which has another generation. The request stays
//! the worker's to read until it lets go of it (`WRITING`, `DROPPED`, or `IDLE` from
//! `ABANDONED`): a client never writes a new request over one a worker reads.
//!
//! # Memory ordering
//!
//! - `SYNC(call-request)`: the request travels through the request ring, which orders
//!   the client's store of `WAITING` before the worker's swap (the ring's Release and
//!   Acquire).
//! - `SYNC(call-response)`: the worker's Release store of `RESPONDED` pairs with the
//!   client's Acquire load: the response written before is visible.
//! - `SYNC(call-slot)`: the worker's Acquire swap to `WRITING` pairs with the client's
//!   Release store of `IDLE` after it read the slot's previous response: the client's
//!   reads come before the next write.

// Under loom, only the model uses the protocol (the service, its user, is not built).
#![cfg_attr(loom, allow(dead_code))]

use shm_sync::atomic::{AtomicU64, Ordering};

/// Call slots per client: how many calls one client may have in flight at once.
pub const CALLS_PER_CLIENT: usize = 16;

pub(crate) const IDLE: u64 = 0;
pub(crate) const WAITING: u64 = 1;
pub(crate) const TAKEN: u64 = 2;
pub(crate) const WRITING: u64 = 3;
pub(crate) const RESPONDED: u64 = 4;
pub(crate) const ABANDONED: u64 = 5;
pub(crate) const DROPPED: u64 = 6;

/// The worker of a word with none.
pub(crate) const NO_WORKER: u16 = u16::MAX;

#[inline]
pub(crate) const fn word(state: u64, worker: u16, generation: u32) -> u64 {
    ((generation as u64) << 32) | ((worker as u64) << 8) | state
}

#[inline]
pub(crate) const fn state_of(word: u64) -> u64 {
    word & 0xff
}

#[inline]
pub(crate) const fn worker_of(word: u64) -> u16 {
    (word >> 8) as u16
}

#[inline]
pub(crate) const fn generation_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// The client starts a call through its idle slot: `WAITING` of the next generation,
/// which it returns (the request must carry it). The slot is the client's alone.
pub(crate) fn start(slot: &AtomicU64) -> u32 {
    // Relaxed: the client's own word (IDLE is the client's state).
    let generation = generation_of(slot.load(Ordering::Relaxed)).wrapping_add(1);
    // Relaxed: SYNC(call-request): published by the request ring's Release.
    slot.store(word(WAITING, NO_WORKER, generation), Ordering::Relaxed);
    generation
}

/// Worker `worker` takes the call of `generation` it dequeued. `false`: the call was
/// given up meanwhile (or the request is stale or forged): serve nothing, count it late.
pub(crate) fn take(slot: &AtomicU64, generation: u32, worker: u16) -> bool {
    // Relaxed both ways: nothing is read or published by this move (the response's
    // ordering is WRITING's and RESPONDED's).
    slot.compare_exchange(
        word(WAITING, NO_WORKER, generation),
        word(TAKEN, worker, generation),
        Ordering::Relaxed,
        Ordering::Relaxed,
    )
    .is_ok()
}

/// Worker `worker` is done with the request of the call it took: it starts writing its
/// response into the slot (`answer`), or drops the request unanswered. `false`: the
/// call was given up meanwhile (a late response, to drop and count; the slot is given
/// back to the client); nothing may be written.
pub(crate) fn let_go(slot: &AtomicU64, generation: u32, worker: u16, answer: bool) -> bool {
    let to = if answer {
        word(WRITING, worker, generation)
    } else {
        word(DROPPED, NO_WORKER, generation)
    };
    // SYNC(call-slot): AcqRel: Acquire, the client's reads of the slot's last response
    // are done before this worker writes; Release, this worker's reads of the request
    // come before the client writes the next. Failure Relaxed: read below.
    if slot
        .compare_exchange(
            word(TAKEN, worker, generation),
            to,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
    {
        return true;
    }
    // Given up while this worker read the request: the slot goes back to the client.
    // SYNC(call-slot): Release, as above. Failure Relaxed: not this worker's any more.
    let _ = slot.compare_exchange(
        word(ABANDONED, worker, generation),
        word(IDLE, NO_WORKER, generation),
        Ordering::Release,
        Ordering::Relaxed,
    );
    false
}

/// The worker publishes the response it wrote (after [`begin_response`]).
pub(crate) fn end_response(slot: &AtomicU64, generation: u32) {
    // SYNC(call-response): Release; pairs with the client's Acquire load in `poll`.
    slot.store(word(RESPONDED, NO_WORKER, generation), Ordering::Release);
}

/// What the client finds in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Poll {
    /// The response of its call is in the slot.
    Responded,
    /// No worker has taken the call yet.
    Waiting,
    /// The worker dropped the request without an answer.
    Dropped,
    /// The slot is idle in this generation: the call was given up, and its worker let
    /// go of it.
    Idle,
    /// Worker `w` is serving it (taken, or writing the response).
    Serving(u16),
    /// The word is not one of this call's: corruption (only the client and the workers
    /// of its calls write it).
    Foreign(u64),
}

/// What the client's call of `generation` has come to.
pub(crate) fn poll(slot: &AtomicU64, generation: u32) -> Poll {
    // SYNC(call-response): Acquire; pairs with `end_response`.
    let found = slot.load(Ordering::Acquire);
    if generation_of(found) != generation {
        return Poll::Foreign(found);
    }
    match state_of(found) {
        RESPONDED => Poll::Responded,
        DROPPED => Poll::Dropped,
        WAITING => Poll::Waiting,
        TAKEN | WRITING | ABANDONED => Poll::Serving(worker_of(found)),
        IDLE => Poll::Idle,
        _ => Poll::Foreign(found),
    }
}

/// The client is done with the response it read (or the `DROPPED` it found): the slot
/// is idle again.
pub(crate) fn finish(slot: &AtomicU64, generation: u32) {
    // SYNC(call-slot): Release; the reads of the response come before the next write.
    slot.store(word(IDLE, NO_WORKER, generation), Ordering::Release);
}

/// What giving up a call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// The slot is idle again: any response that comes now is dropped as late.
    Idle,
    /// The response came first: it is in the slot (to deliver, or drop).
    Responded,
    /// The worker dropped the request: the slot is the client's (to [`finish`]).
    Dropped,
    /// Worker `w` still reads the request (`ABANDONED` now) or writes the response: the
    /// slot stays its until it lets go, or is found dead ([`abandon`]).
    Held(u16),
    /// The word is not one of this call's.
    Foreign(u64),
}

/// The client gives up its call of `generation` (its deadline passed, or its `Pending`
/// was dropped): a worker that has not begun its response can no longer.
pub(crate) fn give_up(slot: &AtomicU64, generation: u32) -> GiveUp {
    // SYNC(call-response): Acquire; a RESPONDED found is read next (the swap below
    // decides the other moves).
    let mut found = slot.load(Ordering::Acquire);
    // Bounded: a worker moves the word on at most twice (TAKEN, then WRITING or
    // DROPPED) before the client alone may.
    for _ in 0..3 {
        if generation_of(found) != generation {
            return GiveUp::Foreign(found);
        }
        let to = match state_of(found) {
            WAITING => word(IDLE, NO_WORKER, generation),
            TAKEN => word(ABANDONED, worker_of(found), generation),
            WRITING | ABANDONED => return GiveUp::Held(worker_of(found)),
            RESPONDED => return GiveUp::Responded,
            DROPPED => return GiveUp::Dropped,
            _ => return GiveUp::Foreign(found),
        };
        // SYNC(call-slot): Release, as `finish`. Failure Acquire: a RESPONDED found is
        // read next.
        match slot.compare_exchange(found, to, Ordering::Release, Ordering::Acquire) {
            Ok(_) if state_of(to) == IDLE => return GiveUp::Idle,
            Ok(_) => return GiveUp::Held(worker_of(found)),
            Err(now) => found = now,
        }
    }
    GiveUp::Foreign(found)
}

/// The client frees a slot whose worker `worker` died while it held the call (taken,
/// abandoned or writing): `true` if the slot is idle now. Only after the worker's lock
/// was found free: a live worker's slot is never taken from it.
pub(crate) fn abandon(slot: &AtomicU64, generation: u32, worker: u16) -> bool {
    for state in [TAKEN, ABANDONED, WRITING] {
        // SYNC(call-slot): Release, as `finish`; failure Relaxed: the other state, or
        // the response, is tried next.
        if slot
            .compare_exchange(
                word(state, worker, generation),
                word(IDLE, NO_WORKER, generation),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            return true;
        }
    }
    false
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use loom::sync::Arc;
    use shm_sync::cell::UnsafeCell;

    /// One call slot and its response cell; the request "ring" is the spawn of the worker
    /// thread, which carries the generation.
    struct Slot {
        state: AtomicU64,
        response: UnsafeCell<u64>,
        late: AtomicU64,
    }

    /// A worker serving the call of `generation` with `generation * 10`.
    fn serve(slot: &Slot, generation: u32) {
        if !take(&slot.state, generation, 0) || !let_go(&slot.state, generation, 0, true) {
            slot.late.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // SAFETY: the slot is WRITING: this worker's alone (loom checks it).
        slot.response
            .with_mut(|r| unsafe { *r = u64::from(generation) * 10 });
        end_response(&slot.state, generation);
    }

    /// The client makes a call, gives it up while the worker serves it, then makes a
    /// second call through the same slot, served by a second worker, and waits for it:
    /// the first call's response is either delivered to the first call or counted late,
    /// never read as the second's; no write races a read.
    #[test]
    fn a_response_lands_in_its_own_call_or_is_late() {
        loom::model(|| {
            let slot = Arc::new(Slot {
                state: AtomicU64::new(word(IDLE, NO_WORKER, 0)),
                response: UnsafeCell::new(0),
                late: AtomicU64::new(0),
            });
            let first = start(&slot.state);
            let s = slot.clone();
            let worker = loom::thread::spawn(move || serve(&s, first));
            let mut delivered = 0;
            match give_up(&slot.state, first) {
                GiveUp::Idle => {}
                GiveUp::Responded => {
                    // SAFETY: RESPONDED: the client's alone until `finish`.
                    let r = slot.response.with(|r| unsafe { *r });
                    assert_eq!(r, 10, "the first call's response");
                    delivered += 1;
                    finish(&slot.state, first);
                }
                GiveUp::Held(_) => {
                    // The worker lets go: wait for it (as a client does, bounded by the
                    // worker's liveness), then read and drop the response, or find the
                    // slot given back.
                    loop {
                        match poll(&slot.state, first) {
                            Poll::Responded => {
                                delivered += 1;
                                finish(&slot.state, first);
                                break;
                            }
                            Poll::Idle => break,
                            _ => loom::thread::yield_now(),
                        }
                    }
                }
                GiveUp::Dropped => panic!("the worker never drops"),
                GiveUp::Foreign(w) => panic!("foreign word {w:#x}"),
            }
            let second = start(&slot.state);
            assert_eq!(second, first + 1);
            let s = slot.clone();
            let other = loom::thread::spawn(move || serve(&s, second));
            while poll(&slot.state, second) != Poll::Responded {
                loom::thread::yield_now();
            }
            // SAFETY: RESPONDED: the client's alone.
            let r = slot.response.with(|r| unsafe { *r });
            assert_eq!(r, 20, "the second call gets its own response");
            finish(&slot.state, second);
            worker.join().unwrap();
            other.join().unwrap();
            assert_eq!(
                delivered + slot.late.load(Ordering::Relaxed),
                1,
                "the first response delivered or late, once"
            );
        });
    }
}

/// The state machine in order, every move (run under Miri too).
#[cfg(all(test, not(loom)))]
mod plain_tests {
    use super::*;

    #[test]
    fn a_call_goes_waiting_taken_writing_responded_idle() {
        let slot = AtomicU64::new(0);
        let g = start(&slot);
        assert_eq!(g, 1);
        assert_eq!(poll(&slot, g), Poll::Waiting);
        assert!(!take(&slot, g + 1, 3), "another generation");
        assert!(take(&slot, g, 3));
        assert!(!take(&slot, g, 4), "taken once");
        assert_eq!(poll(&slot, g), Poll::Serving(3));
        assert!(!let_go(&slot, g, 4, true), "not worker 4's");
        assert!(let_go(&slot, g, 3, true));
        assert_eq!(poll(&slot, g), Poll::Serving(3));
        end_response(&slot, g);
        assert_eq!(poll(&slot, g), Poll::Responded);
        finish(&slot, g);
        assert_eq!(poll(&slot, g), Poll::Idle);
        assert_eq!(start(&slot), 2);
        assert_eq!(poll(&slot, 1), Poll::Foreign(word(WAITING, NO_WORKER, 2)));
    }

    #[test]
    fn giving_up_in_every_state() {
        let slot = AtomicU64::new(0);
        let g = start(&slot);
        assert_eq!(give_up(&slot, g), GiveUp::Idle);
        assert!(!take(&slot, g, 0), "a given-up call is not taken");

        let g = start(&slot);
        assert!(take(&slot, g, 0));
        assert_eq!(give_up(&slot, g), GiveUp::Held(0));
        assert_eq!(poll(&slot, g), Poll::Serving(0));
        assert!(
            !let_go(&slot, g, 0, true),
            "abandoned: the response is late"
        );
        assert_eq!(
            poll(&slot, g),
            Poll::Idle,
            "and the slot is the client's again"
        );

        let g = start(&slot);
        assert!(take(&slot, g, 0) && let_go(&slot, g, 0, true));
        assert_eq!(give_up(&slot, g), GiveUp::Held(0), "writing: waits");
        end_response(&slot, g);
        assert_eq!(give_up(&slot, g), GiveUp::Responded);
        finish(&slot, g);

        let g = start(&slot);
        assert!(take(&slot, g, 0) && let_go(&slot, g, 0, false));
        assert_eq!(poll(&slot, g), Poll::Dropped);
        assert_eq!(give_up(&slot, g), GiveUp::Dropped);
        finish(&slot, g);
        assert_eq!(
            give_up(&slot, g + 1),
            GiveUp::Foreign(word(IDLE, NO_WORKER, g))
        );
    }

    #[test]
    fn a_dead_workers_call_is_abandoned_in_any_of_its_states() {
        let slot = AtomicU64::new(0);
        let g = start(&slot);
        assert!(!abandon(&slot, g, 0), "waiting: no worker holds it");
        assert!(take(&slot, g, 0));
        assert!(!abandon(&slot, g, 1), "not worker 1's");
        assert!(abandon(&slot, g, 0));
        assert_eq!(poll(&slot, g), Poll::Idle);
        let g = start(&slot);
        assert!(take(&slot, g, 0));
        assert_eq!(give_up(&slot, g), GiveUp::Held(0));
        assert!(abandon(&slot, g, 0), "abandoned");
        let g = start(&slot);
        assert!(take(&slot, g, 0) && let_go(&slot, g, 0, true));
        assert!(abandon(&slot, g, 0), "writing");
        assert_eq!(poll(&slot, g), Poll::Idle);
    }
}
