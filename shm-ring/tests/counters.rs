//! The activity counters count what the handles did, as `inspect` reads them from
//! outside without attaching: stalls (a send that found the ring full, a blocking
//! receive that found it empty), parks (sleeps on the futex) and wake-ups (a
//! `FUTEX_WAKE` made for a parked peer), on real segments and real futexes.
//!
//! A side is known to sleep when its thread sleeps in the kernel's futex wait (its
//! `wchan`), not after a pause. A blocked side in a segment wakes every
//! `LIVENESS_PERIOD` (10 ms) to probe its peers and parks again; a wake-up sent in that
//! gap of microseconds finds nobody announced and makes no syscall, so each test does
//! three rounds and wants at least one wake-up, and never more than the rounds.

use std::sync::mpsc;
use std::time::Duration;

use shm_ring::inspect::{Counts, Detail, inspect};
use shm_ring::{OpenMode, broadcast, mpmc, spsc};
use shm_sync::WaitStrategy;
use shm_testkit::{ShmName, sleeps_on_futex, thread_id, wait_for};

const ROUNDS: u64 = 3;
const LIMIT: Duration = Duration::from_secs(20);

/// Waits until thread `tid` of this process sleeps on a futex.
fn until_parked(tid: u32, what: &str) {
    wait_for(LIMIT, what, || {
        sleeps_on_futex(std::process::id(), tid).then_some(())
    });
}

/// Runs `blocked` on a thread of its own, which sends its thread id on the channel
/// given and then makes [`ROUNDS`] blocking calls; makes `unblock` once per round after
/// that thread parked; joins it and returns what it returned (its handle, kept attached
/// so that its entry is still in use when inspected).
fn rounds<R: Send + 'static>(
    blocked: impl FnOnce(mpsc::Sender<u32>) -> R + Send + 'static,
    mut unblock: impl FnMut(u64),
) -> R {
    let (tid_tx, tid_rx) = mpsc::channel();
    let side = std::thread::spawn(move || blocked(tid_tx));
    let tid = tid_rx.recv().unwrap();
    for round in 0..ROUNDS {
        until_parked(tid, "the blocked side, parked");
        unblock(round);
    }
    side.join().unwrap()
}

/// The counts of a side that blocked [`ROUNDS`] times and of the side that woke it.
fn assert_blocked_and_woken(blocked: Counts, waker: Counts, what: &str) {
    assert_eq!(blocked.stalls, ROUNDS, "{what}: one stall per blocked call");
    assert!(
        blocked.parks >= ROUNDS,
        "{what}: parked each round: {blocked:?}"
    );
    assert!(
        (1..=ROUNDS).contains(&waker.wakeups),
        "{what}: the waker's wake-ups: {waker:?}"
    );
    assert_eq!(
        blocked.wakeups, 0,
        "{what}: nobody slept for the blocked side"
    );
}

fn spsc_detail(name: &ShmName) -> (Counts, Counts) {
    match inspect(&name.as_str().into()).unwrap().detail {
        Detail::Spsc {
            producer_activity,
            consumer_activity,
            ..
        } => (producer_activity, consumer_activity),
        other => panic!("not an SPSC ring: {other:?}"),
    }
}

#[test]
fn spsc_a_parked_consumer_and_a_parked_producer_are_counted() {
    let name = ShmName::new("counters-spsc");
    let ring = spsc::Builder::<u64>::new(name.as_str())
        .capacity(1)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Park);
    let mut tx = ring.clone().producer().unwrap();
    let mut rx = ring.mode(OpenMode::Open).consumer().unwrap();
    rounds(
        move |tid| {
            tid.send(thread_id()).unwrap();
            for round in 0..ROUNDS {
                assert_eq!(rx.recv(), Ok(round));
            }
        },
        |round| tx.send(round).unwrap(),
    );
    let (producer, consumer) = spsc_detail(&name);
    assert_blocked_and_woken(consumer, producer, "a parked consumer");
    assert_eq!((producer.messages, consumer.messages), (ROUNDS, ROUNDS));
    assert_eq!(producer.stalls, 0);

    // The producer parks on a full ring of one slot; the consumer frees it.
    let name2 = ShmName::new("counters-spsc-full");
    let ring = spsc::Builder::<u64>::new(name2.as_str())
        .capacity(1)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Park);
    let mut tx = ring.clone().producer().unwrap();
    let mut rx = ring.mode(OpenMode::Open).consumer().unwrap();
    tx.send(0).unwrap();
    rounds(
        move |tid| {
            tid.send(thread_id()).unwrap();
            for round in 1..=ROUNDS {
                tx.send(round).unwrap();
            }
        },
        |round| assert_eq!(rx.try_recv(), Ok(round)),
    );
    let (producer, consumer) = spsc_detail(&name2);
    assert_blocked_and_woken(producer, consumer, "a parked producer");
    assert_eq!((producer.messages, consumer.messages), (ROUNDS + 1, ROUNDS));
}

#[test]
fn mpmc_a_parked_consumer_is_counted_on_its_own_entry() {
    let name = ShmName::new("counters-mpmc");
    let ring = mpmc::Builder::<u64>::new(name.as_str())
        .capacity(2)
        .participants(4)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Park);
    let mut tx = ring.clone().producer().unwrap();
    let mut rx = ring.clone().mode(OpenMode::Open).consumer().unwrap();
    // A second consumer that does nothing: its entry counts nothing.
    let _idle = ring.mode(OpenMode::Open).consumer().unwrap();
    let _rx = rounds(
        move |tid| {
            tid.send(thread_id()).unwrap();
            for round in 0..ROUNDS {
                assert_eq!(rx.recv(), Ok(round));
            }
            rx
        },
        |round| tx.send(round).unwrap(),
    );
    let Detail::Mpmc { participants, .. } = inspect(&name.as_str().into()).unwrap().detail else {
        panic!("not an MPMC ring");
    };
    let of = |entry: u32| {
        participants
            .iter()
            .find(|p| p.entry == entry)
            .unwrap_or_else(|| panic!("entry {entry} in {participants:?}"))
    };
    assert_eq!(
        (of(0).role, of(1).role, of(2).role),
        ("producer", "consumer", "consumer")
    );
    assert_blocked_and_woken(of(1).activity, of(0).activity, "a parked MPMC consumer");
    assert_eq!(
        (of(0).activity.messages, of(1).activity.messages),
        (ROUNDS, ROUNDS)
    );
    assert_eq!(of(2).activity, Counts::default(), "the idle consumer");
}

#[test]
fn broadcast_a_parked_subscriber_is_counted_on_its_line() {
    let name = ShmName::new("counters-bcast");
    let ring = broadcast::Builder::<u64>::new(name.as_str())
        .capacity(4)
        .subscribers(2)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Park);
    let mut publisher = ring.clone().publisher().unwrap();
    let mut subscriber = ring.mode(OpenMode::Open).subscriber().unwrap();
    let _subscriber = rounds(
        move |tid| {
            tid.send(thread_id()).unwrap();
            for round in 0..ROUNDS {
                assert_eq!(subscriber.recv(), Ok(round));
            }
            subscriber
        },
        |round| publisher.send(round).unwrap(),
    );
    let Detail::Broadcast {
        publisher_activity,
        subscribers,
        ..
    } = inspect(&name.as_str().into()).unwrap().detail
    else {
        panic!("not a broadcast ring");
    };
    assert_eq!(subscribers.len(), 1);
    assert_eq!(
        (subscribers[0].state, subscribers[0].alive),
        ("attached", true)
    );
    assert_blocked_and_woken(
        subscribers[0].activity,
        publisher_activity,
        "a parked subscriber",
    );
    assert_eq!(
        (
            publisher_activity.messages,
            subscribers[0].activity.messages
        ),
        (ROUNDS, ROUNDS)
    );
}

/// A service's lines, read from outside: the worker's requests taken and responses
/// sent, the client's calls and responses, and a response that came after its call was
/// given up counted late on the client's line (and not received).
#[test]
fn service_lines_count_calls_responses_and_late_ones() {
    use shm_ring::request_response::Builder;
    let name = ShmName::new("counters-rr");
    let service = Builder::<u64, u64>::new(name.as_str())
        .workers(1)
        .clients(2);
    let mut server = service.server().unwrap();
    let client = service.client().unwrap();
    let answered = client.send(&20).unwrap();
    let request = server.try_recv().unwrap();
    let doubled = *request * 2;
    request.respond(&doubled);
    assert_eq!(answered.wait(None), Ok(40));
    // Taken by the worker, then given up before it answers: the response is dropped,
    // counted late.
    let given_up = client.send(&1).unwrap();
    let request = server.try_recv().unwrap();
    assert!(given_up.wait(Some(std::time::Instant::now())).is_err());
    request.respond(&2);
    let Detail::Service { participants } = inspect(&name.as_str().into()).unwrap().detail else {
        panic!("not a service");
    };
    let line = |role: &str| *participants.iter().find(|p| p.role == role).unwrap();
    let (worker, caller) = (line("worker"), line("client"));
    assert!(worker.alive && caller.alive);
    assert_eq!((worker.calls, worker.responses), (2, 1), "{worker:?}");
    assert_eq!(
        (caller.calls, caller.responses, caller.late),
        (2, 1, 1),
        "{caller:?}"
    );
    drop((server, client));
    shm_alloc::Segment::remove(&format!("{}.requests", name.as_str()).as_str().into()).unwrap();
}
