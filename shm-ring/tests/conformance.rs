//! The behaviour the three rings share, checked once for every flavour (`spsc`, `mpmc`,
//! `stream`) on every backing (the heap, a segment).
//!
//! Each check is a generic function over [`Flavour`], which adapts a ring to `u64`
//! messages and to the crate's own error types (the stream ring carries each message as
//! an 8-byte frame, in a record of 16 bytes). `conformance!` instantiates the checks as
//! tests named `<flavour>_<backing>::<check>`, e.g. `spsc_heap::smoke` or
//! `mpmc_segment::restart`. Checks that need a file or a process (death, restart,
//! corruption) exist only for segments: a heap ring has no peer that can die, nothing to
//! reattach to and no file to damage.
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_CONFORMANCE_FLAVOUR`, `_PART`, `_END`, `_NAME`,
//! `_COUNT`). A child says `holding <n>` once it has done its part, then closes or
//! waits to be killed.
//!
//! Nothing here waits without a deadline: a blocking call has [`LONG`] (reached only when
//! a check fails), and a call on a damaged ring runs under a watchdog ([`within`]), so a
//! hang is a failure, not a stuck run.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::reattach;
use shm_alloc::Segment;
use shm_ring::inspect::{Detail, inspect};
use shm_ring::{
    Corruption, Error, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError, mpmc, spsc, stream,
};
use shm_sync::WaitStrategy;
use shm_testkit::{
    Reap, ShmName, hold_until_killed, holding, say_holding, sleeps_on_futex, thread_id, wait_child,
    wait_for,
};

/// The deadline of calls that must not wait: reached only when a check fails.
const LONG: Duration = Duration::from_secs(5);

/// The deadline of calls that must time out.
const SHORT: Duration = Duration::from_millis(20);

/// The capacity, in messages, of most rings below (the stream ring's smallest).
const CAP: u64 = 4;

/// The participant limit of MPMC segments: fixed, so that the slots' offset is known.
const PARTICIPANTS: u32 = 4;

/// Where a ring's data region begins in its file: after the segment header.
const DATA: u64 = Segment::HEADER_LEN as u64;

/// Offsets in the data region (the `# Layout` tables of `spsc::Control` and
/// `mpmc::Control`): every flavour keeps the producers' position (`tail: u64`) at 0 and
/// the consumers' (`head: u64`) at 128.
const TAIL: u64 = 0;
const HEAD: u64 = 128;

/// SPSC and stream: the producer's session word (`u32`), and the first slot (a stream
/// ring's first record).
const SPSC_PRODUCER_SESSION: u64 = 256;
const SPSC_SLOTS: u64 = 896;

/// MPMC: the slots, after the control block and the participant table; each slot is its
/// stamp (`u64`, `lap << 2 | state`) then the message.
const MPMC_SLOTS: u64 = 1024 + 128 * PARTICIPANTS as u64;
const MPMC_SLOT_LEN: u64 = 16;
const MPMC_FULL: u64 = 1;

/// A stream record carrying one message: an 8-byte header, then the `u64`.
const RECORD: u64 = 16;

/// What a consumer that attaches after the death of one that held a message in place
/// receives first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldMessage {
    /// The held message: it was never released (SPSC, stream).
    DeliveredAgain,
    /// The next one: the held message went with the dead consumer, and the slot is
    /// reclaimed (MPMC, counted in `Stats::reclaimed`).
    Reclaimed,
}

/// A ring flavour, adapted to `u64` messages and to the crate's error types.
trait Flavour: 'static {
    /// The flavour's name, as children are told it.
    const NAME: &'static str;
    /// See [`HeldMessage`].
    const AFTER_READER_CRASH: HeldMessage;

    type Tx: Send + 'static;
    type Rx: Send + 'static;
    /// A reservation to write in place.
    type Slot<'a>: InPlace;
    /// A message read in place.
    type Guard<'a>: Peek;

    /// A ring of `capacity` messages on the heap.
    fn heap(capacity: u64) -> Result<(Self::Tx, Self::Rx), Error>;
    /// Attaches a producer to the segment ring `name` of `capacity` messages.
    fn producer(name: &str, capacity: u64) -> Result<Self::Tx, Error>;
    /// Attaches a consumer to the segment ring `name` of `capacity` messages.
    fn consumer(name: &str, capacity: u64) -> Result<Self::Rx, Error>;

    /// The capacity, in messages.
    fn capacity(tx: &Self::Tx) -> u64;
    fn set_wait_strategy(tx: &mut Self::Tx, rx: &mut Self::Rx, wait: WaitStrategy);

    fn try_send(tx: &mut Self::Tx, value: u64) -> Result<(), TrySendError<u64>>;
    fn send(tx: &mut Self::Tx, value: u64) -> Result<(), SendError<u64>>;
    fn send_timeout(
        tx: &mut Self::Tx,
        value: u64,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<u64>>;
    fn reserve(tx: &mut Self::Tx) -> Result<Self::Slot<'_>, TrySendError<()>>;
    fn try_recv(rx: &mut Self::Rx) -> Result<u64, TryRecvError>;
    fn recv(rx: &mut Self::Rx) -> Result<u64, RecvError>;
    fn recv_timeout(rx: &mut Self::Rx, timeout: Duration) -> Result<u64, RecvTimeoutError>;
    fn try_recv_ref(rx: &mut Self::Rx) -> Result<Self::Guard<'_>, TryRecvError>;

    /// The error a ring of `capacity` messages off the rules gets: `InvalidCapacity`
    /// with the value, unless a flavour has a minimum of its own.
    fn capacity_refused(capacity: u64) -> Error {
        Error::InvalidCapacity(capacity)
    }

    /// The ring's statistics, for a flavour that keeps them (MPMC).
    fn stats(_tx: &Self::Tx) -> Option<mpmc::Stats> {
        None
    }

    /// Whether the producer closed cleanly rather than died, for a flavour that tells
    /// (stream).
    fn producer_closed(_rx: &Self::Rx) -> Option<bool> {
        None
    }

    /// Damages the segment ring through its `file`, other than in its positions, so
    /// that the consumer's next receive must fail; returns the corruption it must
    /// report. Called with one message sent and received, and the ring empty.
    fn damage(tx: &mut Self::Tx, file: &File) -> Corruption;
}

/// A reservation, written in place.
trait InPlace {
    fn write(&mut self, value: u64);
    fn commit(self);
}

/// A message read in place.
trait Peek {
    fn value(&self) -> u64;
}

/// A typed ring (`spsc`, `mpmc`) as a [`Flavour`]: its handles, the methods that forward
/// to the handles' own of the same name, and then `$own`, what differs.
macro_rules! typed_flavour {
    ($flavour:ident = $ring:ident { $($own:tt)* }) => {
        struct $flavour;

        impl Flavour for $flavour {
            type Tx = $ring::Producer<u64>;
            type Rx = $ring::Consumer<u64>;
            type Slot<'a> = $ring::SendSlot<'a, u64>;
            type Guard<'a> = $ring::RecvGuard<'a, u64>;

            fn heap(capacity: u64) -> Result<(Self::Tx, Self::Rx), Error> {
                $ring::channel(capacity)
            }

            fn capacity(tx: &Self::Tx) -> u64 {
                tx.capacity()
            }

            fn set_wait_strategy(tx: &mut Self::Tx, rx: &mut Self::Rx, wait: WaitStrategy) {
                tx.set_wait_strategy(wait);
                rx.set_wait_strategy(wait);
            }

            fn try_send(tx: &mut Self::Tx, value: u64) -> Result<(), TrySendError<u64>> {
                tx.try_send(value)
            }

            fn send(tx: &mut Self::Tx, value: u64) -> Result<(), SendError<u64>> {
                tx.send(value)
            }

            fn send_timeout(
                tx: &mut Self::Tx,
                value: u64,
                timeout: Duration,
            ) -> Result<(), SendTimeoutError<u64>> {
                tx.send_timeout(value, timeout)
            }

            fn reserve(tx: &mut Self::Tx) -> Result<Self::Slot<'_>, TrySendError<()>> {
                tx.reserve()
            }

            fn try_recv(rx: &mut Self::Rx) -> Result<u64, TryRecvError> {
                rx.try_recv()
            }

            fn recv(rx: &mut Self::Rx) -> Result<u64, RecvError> {
                rx.recv()
            }

            fn recv_timeout(rx: &mut Self::Rx, timeout: Duration) -> Result<u64, RecvTimeoutError> {
                rx.recv_timeout(timeout)
            }

            fn try_recv_ref(rx: &mut Self::Rx) -> Result<Self::Guard<'_>, TryRecvError> {
                rx.try_recv_ref()
            }

            $($own)*
        }

        impl InPlace for $ring::SendSlot<'_, u64> {
            fn write(&mut self, value: u64) {
                **self = value;
            }

            fn commit(self) {
                $ring::SendSlot::commit(self);
            }
        }

        impl Peek for $ring::RecvGuard<'_, u64> {
            fn value(&self) -> u64 {
                **self
            }
        }
    };
}

typed_flavour!(Spsc = spsc {
    const NAME: &'static str = "spsc";
    const AFTER_READER_CRASH: HeldMessage = HeldMessage::DeliveredAgain;

    fn producer(name: &str, capacity: u64) -> Result<Self::Tx, Error> {
        spsc::Builder::new(name).capacity(capacity).producer()
    }

    fn consumer(name: &str, capacity: u64) -> Result<Self::Rx, Error> {
        spsc::Builder::new(name).capacity(capacity).consumer()
    }

    /// The producer's session word in state 3, which no peer writes.
    fn damage(_tx: &mut Self::Tx, file: &File) -> Corruption {
        poke(file, SPSC_PRODUCER_SESSION, &7u32.to_ne_bytes());
        Corruption::State {
            word: "the producer's session word",
            found: 7,
            expected: "state 0 (absent), 1 (attached) or 2 (closed) in its low two bits",
        }
    }
});

typed_flavour!(Mpmc = mpmc {
    const NAME: &'static str = "mpmc";
    const AFTER_READER_CRASH: HeldMessage = HeldMessage::Reclaimed;

    fn producer(name: &str, capacity: u64) -> Result<Self::Tx, Error> {
        mpmc::Builder::new(name)
            .capacity(capacity)
            .participants(PARTICIPANTS)
            .producer()
    }

    fn consumer(name: &str, capacity: u64) -> Result<Self::Rx, Error> {
        mpmc::Builder::new(name)
            .capacity(capacity)
            .participants(PARTICIPANTS)
            .consumer()
    }

    fn stats(tx: &Self::Tx) -> Option<mpmc::Stats> {
        Some(tx.stats())
    }

    /// The stamp of the slot at `head` (position 1) says `FULL` 40 laps ahead.
    fn damage(_tx: &mut Self::Tx, file: &File) -> Corruption {
        let stamp = (40 << 2) | MPMC_FULL;
        poke(file, MPMC_SLOTS + MPMC_SLOT_LEN, &stamp.to_ne_bytes());
        Corruption::Slot { position: 1, stamp }
    }
});

struct Stream;

/// A stream send error as the typed rings give it, with the value back.
fn stream_refused<T>(error: stream::SendError, value: T) -> TrySendError<T> {
    match error {
        stream::SendError::Full => TrySendError::Full(value),
        stream::SendError::Disconnected => TrySendError::Disconnected(value),
        stream::SendError::Corrupted(c) => TrySendError::Corrupted(value, c),
        other => panic!("{other} from a non-blocking send of 8 bytes"),
    }
}

/// The payload of an 8-byte frame.
fn frame_value(frame: &[u8]) -> u64 {
    u64::from_ne_bytes(frame.try_into().expect("every frame carries 8 bytes"))
}

impl Flavour for Stream {
    const NAME: &'static str = "stream";
    const AFTER_READER_CRASH: HeldMessage = HeldMessage::DeliveredAgain;

    type Tx = stream::Producer;
    type Rx = stream::Consumer;
    type Slot<'a> = stream::Claim<'a>;
    type Guard<'a> = stream::Frame<'a>;

    fn heap(capacity: u64) -> Result<(Self::Tx, Self::Rx), Error> {
        stream::channel(capacity * RECORD)
    }

    fn producer(name: &str, capacity: u64) -> Result<Self::Tx, Error> {
        stream::Builder::new(name)
            .capacity(capacity * RECORD)
            .producer()
    }

    fn consumer(name: &str, capacity: u64) -> Result<Self::Rx, Error> {
        stream::Builder::new(name)
            .capacity(capacity * RECORD)
            .consumer()
    }

    fn capacity(tx: &Self::Tx) -> u64 {
        tx.capacity() / RECORD
    }

    /// In bytes: below `MIN_CAPACITY` too small, otherwise a power of two or invalid.
    fn capacity_refused(capacity: u64) -> Error {
        let bytes = capacity * RECORD;
        if bytes < stream::MIN_CAPACITY {
            Error::CapacityTooSmall {
                found: bytes,
                min: stream::MIN_CAPACITY,
            }
        } else {
            Error::InvalidCapacity(bytes)
        }
    }

    fn set_wait_strategy(tx: &mut Self::Tx, rx: &mut Self::Rx, wait: WaitStrategy) {
        tx.set_wait_strategy(wait);
        rx.set_wait_strategy(wait);
    }

    fn try_send(tx: &mut Self::Tx, value: u64) -> Result<(), TrySendError<u64>> {
        tx.try_send(&value.to_ne_bytes())
            .map_err(|e| stream_refused(e, value))
    }

    fn send(tx: &mut Self::Tx, value: u64) -> Result<(), SendError<u64>> {
        tx.send(&value.to_ne_bytes()).map_err(|e| match e {
            stream::SendError::Disconnected => SendError::Disconnected(value),
            stream::SendError::Corrupted(c) => SendError::Corrupted(value, c),
            other => panic!("{other} from a blocking send of 8 bytes"),
        })
    }

    fn send_timeout(
        tx: &mut Self::Tx,
        value: u64,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<u64>> {
        tx.send_timeout(&value.to_ne_bytes(), timeout)
            .map_err(|e| match e {
                stream::SendError::Timeout => SendTimeoutError::Timeout(value),
                stream::SendError::Disconnected => SendTimeoutError::Disconnected(value),
                stream::SendError::Corrupted(c) => SendTimeoutError::Corrupted(value, c),
                other => panic!("{other} from a blocking send of 8 bytes"),
            })
    }

    fn reserve(tx: &mut Self::Tx) -> Result<Self::Slot<'_>, TrySendError<()>> {
        tx.claim(8).map_err(|e| stream_refused(e, ()))
    }

    fn try_recv(rx: &mut Self::Rx) -> Result<u64, TryRecvError> {
        rx.try_recv().map(|frame| frame_value(&frame))
    }

    fn recv(rx: &mut Self::Rx) -> Result<u64, RecvError> {
        rx.recv().map(|frame| frame_value(&frame))
    }

    fn recv_timeout(rx: &mut Self::Rx, timeout: Duration) -> Result<u64, RecvTimeoutError> {
        rx.recv_timeout(timeout).map(|frame| frame_value(&frame))
    }

    fn try_recv_ref(rx: &mut Self::Rx) -> Result<Self::Guard<'_>, TryRecvError> {
        rx.try_recv()
    }

    fn producer_closed(rx: &Self::Rx) -> Option<bool> {
        Some(rx.producer_closed())
    }

    /// A new frame (the second record, at byte 16) whose header claims 40 bytes, more
    /// than were published.
    fn damage(tx: &mut Self::Tx, file: &File) -> Corruption {
        Self::try_send(tx, 1).unwrap();
        poke(file, SPSC_SLOTS + RECORD, &40u32.to_ne_bytes());
        Corruption::Frame {
            position: RECORD,
            length: 40,
            room: RECORD,
        }
    }
}

impl InPlace for stream::Claim<'_> {
    fn write(&mut self, value: u64) {
        self.copy_from_slice(&value.to_ne_bytes());
    }

    fn commit(self) {
        stream::Claim::commit(self);
    }
}

impl Peek for stream::Frame<'_> {
    fn value(&self) -> u64 {
        frame_value(self)
    }
}

/// Where a ring lives.
#[derive(Debug, Clone, Copy)]
enum Backing {
    Heap,
    Segment,
}

/// A producer and a consumer of a new ring of `capacity` messages, and the segment's
/// name (removed when dropped), if it has one.
fn pair<F: Flavour>(backing: Backing, tag: &str, capacity: u64) -> (F::Tx, F::Rx, Option<ShmName>) {
    match backing {
        Backing::Heap => {
            let (tx, rx) = F::heap(capacity).unwrap();
            (tx, rx, None)
        }
        Backing::Segment => {
            let (name, tx, rx) = segment::<F>(tag, capacity);
            (tx, rx, Some(name))
        }
    }
}

/// A new segment ring of `capacity` messages, with a producer and a consumer attached.
fn segment<F: Flavour>(tag: &str, capacity: u64) -> (ShmName, F::Tx, F::Rx) {
    let name = ShmName::new(&format!("{}-{tag}", F::NAME));
    let tx = F::producer(name.as_str(), capacity).unwrap();
    let rx = F::consumer(name.as_str(), capacity).unwrap();
    (name, tx, rx)
}

/// The segment's file, opened for writing.
fn file(name: &ShmName) -> File {
    OpenOptions::new().write(true).open(name.path()).unwrap()
}

/// Writes `bytes` at `offset` of the data region.
fn poke(file: &File, offset: u64, bytes: &[u8]) {
    file.write_all_at(bytes, DATA + offset).unwrap();
}

/// Runs `op` on `handle` in a thread of its own and returns both, failing the test if
/// `op` takes longer than `limit`: what a damaged ring does must be an error, never a
/// hang. (A hung thread is left behind; the test has failed by then.)
fn within<H: Send + 'static, R: Send + 'static>(
    limit: Duration,
    what: &str,
    mut handle: H,
    op: impl FnOnce(&mut H) -> R + Send + 'static,
) -> (H, R) {
    let (done, outcome) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let result = op(&mut handle);
        let _ = done.send((handle, result));
    });
    match outcome.recv_timeout(limit) {
        Ok(answer) => answer,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer within {limit:?}")
        }
        // `op` panicked: fail with its panic.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().expect_err("the worker ended unanswered"))
        }
    }
}

/// Receives `values` in order, without waiting.
#[track_caller]
fn drain<F: Flavour>(rx: &mut F::Rx, values: std::ops::Range<u64>) {
    for v in values {
        assert_eq!(F::try_recv(rx), Ok(v), "lost, duplicated or reordered");
    }
}

// ---------------------------------------------------------------------------------------
// Both backings.

/// Sends and receives in order; an empty ring says `Empty`.
fn smoke<F: Flavour>(backing: Backing) {
    let (mut tx, mut rx, _name) = pair::<F>(backing, "smoke", CAP);
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
    F::try_send(&mut tx, 1).unwrap();
    F::try_send(&mut tx, u64::MAX).unwrap();
    assert_eq!(F::try_recv(&mut rx), Ok(1));
    assert_eq!(F::recv_timeout(&mut rx, LONG), Ok(u64::MAX));
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
}

/// Capacities that are not a power of two, or are too small or too large, are refused,
/// and a segment refused so leaves no file.
fn invalid_capacity_is_refused<F: Flavour>(backing: Backing) {
    for capacity in [0, 3, 6, 1 << 33] {
        let expected = format!("{:?}", F::capacity_refused(capacity));
        match backing {
            Backing::Heap => {
                assert_eq!(
                    format!("{:?}", F::heap(capacity).err()),
                    format!("Some({expected})")
                );
            }
            Backing::Segment => {
                let name = ShmName::new(&format!("{}-invalid", F::NAME));
                assert_eq!(
                    format!("{:?}", F::producer(name.as_str(), capacity).err()),
                    format!("Some({expected})")
                );
                assert!(!name.path().exists(), "a refused ring left its file");
            }
        }
    }
}

/// Many laps of the ring in bursts of 1 to `CAP` messages, so that every lap boundary
/// falls at every offset: order kept, nothing lost or repeated.
fn wrap<F: Flavour>(backing: Backing) {
    let (mut tx, mut rx, _name) = pair::<F>(backing, "wrap", CAP);
    let (mut sent, mut received) = (0u64, 0u64);
    // Under miri, whose every step is slow, a tenth: still 125 laps, every boundary
    // at every offset.
    let rounds = if cfg!(miri) { 200 } else { 2_000 };
    for round in 0..rounds {
        let burst = 1 + round % CAP;
        for _ in 0..burst {
            // Both halves of the word move, so that a stale slot is seen.
            F::try_send(&mut tx, sent << 32 | sent).unwrap();
            sent += 1;
        }
        for _ in 0..burst {
            assert_eq!(F::try_recv(&mut rx), Ok(received << 32 | received));
            received += 1;
        }
    }
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
}

/// `CAP` messages fit and one more is refused with its value; a receive makes room for
/// exactly one; the ring drains in order to `Empty`.
fn full_then_empty<F: Flavour>(backing: Backing) {
    let (mut tx, mut rx, _name) = pair::<F>(backing, "full", CAP);
    assert_eq!(F::capacity(&tx), CAP);
    for v in 0..CAP {
        F::try_send(&mut tx, v).unwrap();
    }
    assert_eq!(F::try_send(&mut tx, 40), Err(TrySendError::Full(40)));
    assert!(matches!(F::reserve(&mut tx), Err(TrySendError::Full(()))));
    drain::<F>(&mut rx, 0..1);
    F::try_send(&mut tx, CAP).unwrap();
    assert_eq!(F::try_send(&mut tx, 41), Err(TrySendError::Full(41)));
    drain::<F>(&mut rx, 1..CAP + 1);
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
}

/// `recv_timeout` on an empty ring and `send_timeout` on a full one wait their time, then
/// say `Timeout` (the value back, intact); nothing is lost or added.
fn timeouts_return_the_value<F: Flavour>(backing: Backing) {
    let (mut tx, mut rx, _name) = pair::<F>(backing, "timeouts", CAP);
    let start = Instant::now();
    assert_eq!(
        F::recv_timeout(&mut rx, SHORT),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(start.elapsed() >= SHORT, "returned before its time");
    for v in 0..CAP {
        F::try_send(&mut tx, v).unwrap();
    }
    let start = Instant::now();
    let value = 0x0123_4567_89ab_cdef;
    assert_eq!(
        F::send_timeout(&mut tx, value, SHORT),
        Err(SendTimeoutError::Timeout(value))
    );
    assert!(start.elapsed() >= SHORT, "returned before its time");
    drain::<F>(&mut rx, 0..CAP);
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
}

/// After the producer is dropped, the consumer receives what is left, then
/// `Disconnected` (at once, also from the blocking call); the stream ring says the
/// producer closed.
fn producer_dropped_drains_then_disconnects<F: Flavour>(backing: Backing) {
    let (mut tx, mut rx, _name) = pair::<F>(backing, "pdrop", CAP);
    F::try_send(&mut tx, 1).unwrap();
    F::try_send(&mut tx, 2).unwrap();
    assert_ne!(F::producer_closed(&rx), Some(true), "closed while attached");
    drop(tx);
    assert_eq!(F::try_recv(&mut rx), Ok(1));
    assert_eq!(F::recv_timeout(&mut rx, LONG), Ok(2));
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Disconnected));
    let start = Instant::now();
    assert_eq!(
        F::recv_timeout(&mut rx, LONG),
        Err(RecvTimeoutError::Disconnected)
    );
    assert!(start.elapsed() < LONG / 2, "waited for a closed producer");
    let (rx, received) = within(LONG, "recv", rx, F::recv);
    assert_eq!(received, Err(RecvError::Disconnected));
    assert_ne!(
        F::producer_closed(&rx),
        Some(false),
        "a close taken for a death"
    );
}

/// After the consumer is dropped, sends fail with `Disconnected` and the value (at once,
/// also from the blocking call).
fn consumer_dropped_disconnects_the_producer<F: Flavour>(backing: Backing) {
    let (mut tx, rx, _name) = pair::<F>(backing, "cdrop", CAP);
    F::try_send(&mut tx, 1).unwrap();
    drop(rx);
    assert_eq!(F::try_send(&mut tx, 2), Err(TrySendError::Disconnected(2)));
    let start = Instant::now();
    assert_eq!(
        F::send_timeout(&mut tx, 3, LONG),
        Err(SendTimeoutError::Disconnected(3))
    );
    assert!(start.elapsed() < LONG / 2, "waited for a closed consumer");
    let (mut tx, sent) = within(LONG, "send", tx, |tx| F::send(tx, 4));
    assert_eq!(sent, Err(SendError::Disconnected(4)));
    assert!(matches!(
        F::reserve(&mut tx),
        Err(TrySendError::Disconnected(()))
    ));
}

/// A reservation dropped without `commit` delivers nothing (MPMC: its slot is skipped
/// and counted as aborted) and costs no capacity; a committed one delivers what was
/// written in place.
fn reserve_commit_and_abort<F: Flavour>(backing: Backing) {
    let (mut tx, mut rx, _name) = pair::<F>(backing, "reserve", CAP);
    {
        let mut slot = F::reserve(&mut tx).unwrap();
        slot.write(99);
    }
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
    let mut slot = F::reserve(&mut tx).unwrap();
    slot.write(7);
    slot.commit();
    assert_eq!(F::try_recv(&mut rx), Ok(7));
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
    if let Some(stats) = F::stats(&tx) {
        assert_eq!(stats.aborted, 1, "{stats:?}");
    }
    for v in 0..CAP {
        F::try_send(&mut tx, v).unwrap();
    }
    assert_eq!(F::try_send(&mut tx, 40), Err(TrySendError::Full(40)));
    drain::<F>(&mut rx, 0..CAP);
}

/// A message read in place keeps its slot until the guard drops: a full ring stays full
/// while the guard lives, and has room again after.
fn guard_releases_on_drop_only<F: Flavour>(backing: Backing) {
    let (mut tx, mut rx, _name) = pair::<F>(backing, "guard", CAP);
    for v in 0..CAP {
        F::try_send(&mut tx, v).unwrap();
    }
    let guard = F::try_recv_ref(&mut rx).unwrap();
    assert_eq!(guard.value(), 0);
    assert_eq!(F::try_send(&mut tx, CAP), Err(TrySendError::Full(CAP)));
    assert_eq!(guard.value(), 0, "the slot was overwritten under the guard");
    drop(guard);
    F::try_send(&mut tx, CAP).unwrap();
    drain::<F>(&mut rx, 1..CAP + 1);
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
}

/// A producer thread and a consumer thread with the blocking calls, with each wait
/// strategy that gives the core up (`BusySpin` needs a core per thread: with every test
/// of this file in parallel on two cores it takes seconds): every message once, in
/// order, then `Disconnected`.
fn two_threads<F: Flavour>(backing: Backing) {
    const COUNT: u64 = if cfg!(miri) { 100 } else { 10_000 };
    // Under miri, whose futex sleeps and spins are slow: the one that yields.
    let waits: &[WaitStrategy] = if cfg!(miri) {
        &[WaitStrategy::Yield]
    } else {
        &[
            WaitStrategy::Yield,
            WaitStrategy::Park,
            WaitStrategy::default(),
        ]
    };
    for &wait in waits {
        let (mut tx, mut rx, _name) = pair::<F>(backing, "threads", CAP);
        F::set_wait_strategy(&mut tx, &mut rx, wait);
        let producer = std::thread::spawn(move || {
            for v in 0..COUNT {
                F::send_timeout(&mut tx, v, LONG).unwrap();
            }
        });
        for v in 0..COUNT {
            assert_eq!(F::recv_timeout(&mut rx, LONG), Ok(v), "{wait:?}");
        }
        producer.join().unwrap();
        assert_eq!(
            F::recv_timeout(&mut rx, LONG),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}

/// A consumer asleep in the kernel's futex wait (seen there through `/proc`, so it
/// really parked) in a `recv` without deadline is woken by one send, and a producer
/// asleep in a `send` on a full ring by one receive. On the heap nothing else wakes a
/// sleeper (a segment's blocked side also wakes every liveness period), so there a lost
/// wake-up leaves the call asleep, and the check fails after `LONG`.
fn parked_sides_are_woken<F: Flavour>(backing: Backing) {
    /// Runs `op` on `handle` in a thread of its own, once that thread is seen asleep on
    /// a futex runs `wake`, and returns what `op` returned within `LONG`.
    fn parked<H: Send + 'static, R: Send + 'static>(
        what: &str,
        mut handle: H,
        op: impl FnOnce(&mut H) -> R + Send + 'static,
        wake: impl FnOnce(),
    ) -> (H, R) {
        let (tid_tx, tid) = std::sync::mpsc::channel();
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tid_tx.send(thread_id()).unwrap();
            let result = op(&mut handle);
            let _ = done.send((handle, result));
        });
        let tid = tid.recv().unwrap();
        wait_for(LONG, &format!("{what} asleep on its futex"), || {
            sleeps_on_futex(std::process::id(), tid).then_some(())
        });
        wake();
        outcome
            .recv_timeout(LONG)
            .unwrap_or_else(|_| panic!("{what} was not woken"))
    }

    let (mut tx, mut rx, _name) = pair::<F>(backing, "woken", CAP);
    F::set_wait_strategy(&mut tx, &mut rx, WaitStrategy::Park);
    let tx = std::sync::Arc::new(std::sync::Mutex::new(tx));
    let sender = tx.clone();
    let (rx, received) = parked("the consumer", rx, F::recv, move || {
        F::try_send(&mut sender.lock().unwrap(), 7).unwrap();
    });
    assert_eq!(received, Ok(7));

    let mut tx = std::sync::Arc::into_inner(tx)
        .unwrap()
        .into_inner()
        .unwrap();
    let mut filled = 0;
    while F::try_send(&mut tx, 100 + filled).is_ok() {
        filled += 1;
    }
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let receiver = rx.clone();
    let (_tx, sent) = parked(
        "the producer",
        tx,
        |tx| F::send(tx, 999),
        move || {
            assert_eq!(F::try_recv(&mut receiver.lock().unwrap()), Ok(100));
        },
    );
    assert_eq!(sent, Ok(()));
    let mut rx = std::sync::Arc::into_inner(rx)
        .unwrap()
        .into_inner()
        .unwrap();
    drain::<F>(&mut rx, 101..100 + filled);
    assert_eq!(F::try_recv(&mut rx), Ok(999));
}

// ---------------------------------------------------------------------------------------
// Segments only: restarts, damage, and peers in other processes.

/// A consumer dropped and attached again continues at the first message it had not
/// released; so does a producer, after the last one it published.
fn restart<F: Flavour>() {
    let (name, mut tx, mut rx) = segment::<F>("restart", 8);
    for v in 0..6 {
        F::try_send(&mut tx, v).unwrap();
    }
    drain::<F>(&mut rx, 0..2);
    drop(F::try_recv_ref(&mut rx).unwrap()); // 2, read in place and released
    drop(rx);
    let mut rx = reattach(|| F::consumer(name.as_str(), 8)).unwrap();
    drain::<F>(&mut rx, 3..6);
    drop(tx);
    let mut tx = reattach(|| F::producer(name.as_str(), 8)).unwrap();
    F::try_send(&mut tx, 6).unwrap();
    drain::<F>(&mut rx, 6..7);
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
}

/// The producer's position set behind the consumer's, in the file: the consumer's
/// receives (blocking too) report `Positions` (a polling MPMC consumer checks the
/// positions with its liveness probe, so a loop of `try_recv` within about a
/// millisecond, until then `Empty`), and a new consumer is refused; so is one after the
/// producer's position is set far past the consumer's.
fn corrupted_positions_are_errors<F: Flavour>() {
    let (name, mut tx, rx) = segment::<F>("positions", CAP);
    F::try_send(&mut tx, 0).unwrap();
    let (rx, received) = within(LONG, "try_recv", rx, F::try_recv);
    assert_eq!(received, Ok(0));
    poke(&file(&name), TAIL, &0u64.to_ne_bytes());
    let positions =
        |e: &Corruption| matches!(e, Corruption::Positions { head, tail: 0, .. } if *head > 0);
    let (rx, received) = within(LONG, "try_recv", rx, |rx| {
        loop {
            match F::try_recv(rx) {
                Err(TryRecvError::Empty) => shm_sync::atomic::spin_loop(),
                other => break other,
            }
        }
    });
    assert!(
        matches!(received, Err(TryRecvError::Corrupted(ref c)) if positions(c)),
        "{received:?}"
    );
    let (rx, received) = within(LONG, "recv_timeout", rx, |rx| F::recv_timeout(rx, LONG));
    assert!(
        matches!(received, Err(RecvTimeoutError::Corrupted(ref c)) if positions(c)),
        "{received:?}"
    );
    drop(rx);
    let again = reattach(|| F::consumer(name.as_str(), CAP)).map(drop);
    assert!(
        matches!(again, Err(Error::Corrupted(ref c)) if positions(c)),
        "{again:?}"
    );
    // A producer's position far past the consumer's.
    poke(&file(&name), TAIL, &(1u64 << 40).to_ne_bytes());
    let again = reattach(|| F::consumer(name.as_str(), CAP)).map(drop);
    assert!(
        matches!(
            again,
            Err(Error::Corrupted(Corruption::Positions { tail, .. })) if tail == 1 << 40
        ),
        "{again:?}"
    );
}

/// The consumer's position set far past the producer's, in the file, while the ring is
/// full: the producer's sends (blocking too) report the corruption with their value (a
/// polling MPMC producer checks the positions with its liveness probe, so a loop of
/// `try_send` within about a millisecond, until then `Full`).
fn corrupted_consumer_position_stops_the_producer<F: Flavour>() {
    let (name, tx, _rx) = segment::<F>("head", CAP);
    let (tx, _) = within(LONG, "filling the ring", tx, |tx| {
        for v in 0..CAP {
            F::try_send(tx, v).unwrap();
        }
    });
    poke(&file(&name), HEAD, &(1u64 << 40).to_ne_bytes());
    let (tx, sent) = within(LONG, "try_send", tx, |tx| {
        loop {
            match F::try_send(tx, 50) {
                Err(TrySendError::Full(_)) => shm_sync::atomic::spin_loop(),
                other => break other,
            }
        }
    });
    assert!(
        matches!(sent, Err(TrySendError::Corrupted(50, _))),
        "{sent:?}"
    );
    let (_tx, sent) = within(LONG, "send_timeout", tx, |tx| F::send_timeout(tx, 51, LONG));
    assert!(
        matches!(sent, Err(SendTimeoutError::Corrupted(51, _))),
        "{sent:?}"
    );
}

/// Damage to the ring's state other than positions (SPSC: a session word; MPMC: a slot
/// stamp; stream: a frame header) is reported by the consumer's receives, blocking too,
/// at once.
fn corrupted_state_is_an_error<F: Flavour>() {
    let (name, mut tx, mut rx) = segment::<F>("state", CAP);
    F::try_send(&mut tx, 0).unwrap();
    drain::<F>(&mut rx, 0..1);
    let expected = F::damage(&mut tx, &file(&name));
    let (rx, received) = within(LONG, "try_recv", rx, F::try_recv);
    assert_eq!(received, Err(TryRecvError::Corrupted(expected)));
    let (_rx, received) = within(LONG, "recv_timeout", rx, |rx| F::recv_timeout(rx, LONG));
    assert_eq!(received, Err(RecvTimeoutError::Corrupted(expected)));
}

/// How a child ends once it has done its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Drops its handle and exits.
    Close,
    /// Waits to be killed (`SIGKILL`: no destructor runs).
    Die,
    /// (Consumer) holds the next message in place, says its value, and waits to be killed.
    DieHoldingGuard,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Close => "close",
            End::Die => "die",
            End::DieHoldingGuard => "die-holding-guard",
        }
    }
}

/// Starts a child that attaches as `part` (`produce` or `consume`) to `name` and sends or
/// receives `0..count`, then ends as `end`; its standard output is piped.
fn spawn<F: Flavour>(part: &str, name: &ShmName, count: u64, end: End) -> Reap {
    Reap(
        shm_testkit::child("child")
            .env("SHM_CONFORMANCE_FLAVOUR", F::NAME)
            .env("SHM_CONFORMANCE_PART", part)
            .env("SHM_CONFORMANCE_END", end.as_str())
            .env("SHM_CONFORMANCE_NAME", name.as_str())
            .env("SHM_CONFORMANCE_COUNT", count.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// The capacity of the rings children attach to.
const CHILD_CAP: u64 = 8;

/// Not a test: the body of a child process, for the flavour named in the environment.
#[test]
#[ignore = "child process entry point, started by the segment tests of this file"]
fn child() {
    let Ok(flavour) = std::env::var("SHM_CONFORMANCE_FLAVOUR") else {
        return;
    };
    match flavour.as_str() {
        name if name == Spsc::NAME => child_part::<Spsc>(),
        name if name == Mpmc::NAME => child_part::<Mpmc>(),
        name if name == Stream::NAME => child_part::<Stream>(),
        other => panic!("unknown flavour {other}"),
    }
}

fn child_part<F: Flavour>() {
    let env = |key: &str| std::env::var(key).expect("run by a parent test");
    let name = env("SHM_CONFORMANCE_NAME");
    let count: u64 = env("SHM_CONFORMANCE_COUNT").parse().unwrap();
    let end = env("SHM_CONFORMANCE_END");
    match env("SHM_CONFORMANCE_PART").as_str() {
        "produce" => {
            let mut tx = F::producer(&name, CHILD_CAP).unwrap();
            for v in 0..count {
                F::send_timeout(&mut tx, v, LONG).unwrap();
            }
            say_holding(count);
            if end == End::Die.as_str() {
                hold_until_killed();
            }
        }
        "consume" => {
            let mut rx = F::consumer(&name, CHILD_CAP).unwrap();
            for v in 0..count {
                assert_eq!(F::recv_timeout(&mut rx, LONG), Ok(v));
            }
            if end == End::DieHoldingGuard.as_str() {
                let guard = F::try_recv_ref(&mut rx).expect("sent before this child started");
                say_holding(guard.value());
                hold_until_killed();
            }
            say_holding(count);
            if end == End::Die.as_str() {
                hold_until_killed();
            }
        }
        other => panic!("unknown part {other}"),
    }
}

/// A producer in another process sends 3 messages, then closes or is killed: the
/// consumer receives the 3, then `Disconnected` (a death is seen within a liveness
/// period, not at the deadline); the stream ring tells a close from a death.
fn producer_gone<F: Flavour>(end: End) {
    let name = ShmName::new(&format!("{}-producer-{}", F::NAME, end.as_str()));
    let mut rx = F::consumer(name.as_str(), CHILD_CAP).unwrap();
    let mut child = spawn::<F>("produce", &name, 3, end);
    assert_eq!(holding(child.0.stdout.as_mut().unwrap()), 3);
    match end {
        End::Close => wait_child(&mut child.0, LONG),
        _ => assert!(!child.kill().success()),
    }
    let gone = Instant::now();
    for v in 0..3 {
        assert_eq!(F::recv_timeout(&mut rx, LONG), Ok(v));
    }
    assert_eq!(
        F::recv_timeout(&mut rx, LONG),
        Err(RecvTimeoutError::Disconnected)
    );
    assert!(gone.elapsed() < LONG / 2, "took {:?}", gone.elapsed());
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Disconnected));
    if let Some(closed) = F::producer_closed(&rx) {
        assert_eq!(closed, end == End::Close, "close and death told apart");
    }
}

fn producer_closes<F: Flavour>() {
    producer_gone::<F>(End::Close);
}

fn producer_dies<F: Flavour>() {
    producer_gone::<F>(End::Die);
}

/// A consumer in another process receives 2 messages, then closes or is killed: the
/// producer's sends fail with `Disconnected` and their value; after a close at once,
/// after a death at the latest when the ring is full and the producer waits (a death is
/// seen within a liveness period, not at the deadline).
fn consumer_gone<F: Flavour>(end: End) {
    let name = ShmName::new(&format!("{}-consumer-{}", F::NAME, end.as_str()));
    let mut tx = F::producer(name.as_str(), CHILD_CAP).unwrap();
    for v in 0..2 {
        F::try_send(&mut tx, v).unwrap();
    }
    let mut child = spawn::<F>("consume", &name, 2, end);
    assert_eq!(holding(child.0.stdout.as_mut().unwrap()), 2);
    match end {
        End::Close => wait_child(&mut child.0, LONG),
        _ => assert!(!child.kill().success()),
    }
    let gone = Instant::now();
    let mut accepted = 0;
    let refused = loop {
        match F::send_timeout(&mut tx, 100 + accepted, LONG) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(
            accepted <= CHILD_CAP,
            "sends go on into a ring nobody reads"
        );
    };
    assert_eq!(refused, SendTimeoutError::Disconnected(100 + accepted));
    assert!(gone.elapsed() < LONG / 2, "took {:?}", gone.elapsed());
    if end == End::Close {
        assert_eq!(accepted, 0, "a closed consumer is seen at the next send");
    }
    assert_eq!(F::try_send(&mut tx, 7), Err(TrySendError::Disconnected(7)));
}

fn consumer_closes<F: Flavour>() {
    consumer_gone::<F>(End::Close);
}

fn consumer_dies<F: Flavour>() {
    consumer_gone::<F>(End::Die);
}

/// The parks counted on the lines of the segment ring `name`'s producers (`role`
/// `"producer"`) or consumers (`"consumer"`), as `inspect` reads them from outside.
fn parks(name: &ShmName, role: &str) -> u64 {
    match inspect(&name.as_str().into()).unwrap().detail {
        Detail::Spsc {
            producer_activity,
            consumer_activity,
            ..
        } => match role {
            "producer" => producer_activity.parks,
            _ => consumer_activity.parks,
        },
        Detail::Mpmc { participants, .. } => participants
            .iter()
            .filter(|p| p.role == role)
            .map(|p| p.activity.parks)
            .sum(),
        other => panic!("not a ring of one of these flavours: {other:?}"),
    }
}

/// Runs `block`, a blocking call on `handle` (the `role` side of the segment ring
/// `name`), on a thread until that thread sleeps on its futex; then kills `child`, the
/// peer, and returns what `block` returned, once it has. Asserts that the blocked side
/// saw the death at its first liveness probe after it: a blocked side sleeps in slices
/// of `LIVENESS_PERIOD` and probes after each, so after the kill it parks at most once
/// more (a slice begun after a probe that found the peer alive, just before the kill).
/// Counted, not timed: the death is seen within one period of waiting, however slowly
/// this machine runs the slices.
fn blocked_through_a_death<H: Send + 'static, R: Send + 'static>(
    name: &ShmName,
    role: &str,
    mut child: Reap,
    handle: H,
    block: impl FnOnce(&mut H) -> R + Send + 'static,
) -> R {
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let blocked = std::thread::spawn(move || {
        let mut handle = handle;
        tid_tx.send(thread_id()).unwrap();
        let returned = block(&mut handle);
        (handle, returned)
    });
    let tid = tid.recv().unwrap();
    wait_for(LONG, &format!("the {role} asleep on its futex"), || {
        sleeps_on_futex(std::process::id(), tid).then_some(())
    });
    assert!(!child.kill().success());
    let parks_at_death = parks(name, role);
    assert!(parks_at_death >= 1, "the {role} was seen asleep");
    // The handle stays attached until its parks are read: an MPMC participant's
    // counters go with its entry.
    let (_handle, returned) = blocked.join().unwrap();
    let parks = parks(name, role) - parks_at_death;
    assert!(
        parks <= 1,
        "the death was seen {parks} liveness slices late, not at the next probe"
    );
    returned
}

/// A consumer blocked on an empty ring, asleep on its futex, sees its producer's death
/// at its first liveness probe after it ([`blocked_through_a_death`]), and its receive
/// returns `Disconnected`.
fn a_blocked_consumer_sees_a_death_at_its_next_probe<F: Flavour>() {
    let name = ShmName::new(&format!("{}-blocked-death", F::NAME));
    let rx = F::consumer(name.as_str(), CHILD_CAP).unwrap();
    let mut child = spawn::<F>("produce", &name, 0, End::Die);
    assert_eq!(holding(child.0.stdout.as_mut().unwrap()), 0);
    let received =
        blocked_through_a_death(&name, "consumer", child, rx, |rx| F::recv_timeout(rx, LONG));
    assert_eq!(received, Err(RecvTimeoutError::Disconnected));
}

/// A consumer that polls an empty ring sees its producer's death at its first liveness
/// probe: after exactly `LIVENESS_POLLS` empty polls, as it has never probed before (a
/// probe later comes after that many polls and `LIVENESS_PROBE_INTERVAL`). Until then
/// the dead producer's ring reads as empty.
fn a_polling_consumer_sees_a_death_after_its_probe_polls<F: Flavour>() {
    let name = ShmName::new(&format!("{}-polled-death", F::NAME));
    let mut rx = F::consumer(name.as_str(), CHILD_CAP).unwrap();
    let mut child = spawn::<F>("produce", &name, 0, End::Die);
    assert_eq!(holding(child.0.stdout.as_mut().unwrap()), 0);
    assert!(!child.kill().success());
    let mut polls = 0;
    let seen = loop {
        polls += 1;
        match F::try_recv(&mut rx) {
            Err(TryRecvError::Empty) if polls < 2 * spsc::LIVENESS_POLLS => {}
            other => break other,
        }
    };
    assert_eq!(
        (seen, polls),
        (Err(TryRecvError::Disconnected), spsc::LIVENESS_POLLS)
    );
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Disconnected));
}

/// A producer blocked on a full ring, asleep on its futex, sees its consumer's death at
/// its first liveness probe after it ([`blocked_through_a_death`]), and its send returns
/// `Disconnected` with the value.
fn a_blocked_producer_sees_a_death_at_its_next_probe<F: Flavour>() {
    let name = ShmName::new(&format!("{}-blocked-consumer-death", F::NAME));
    let mut tx = F::producer(name.as_str(), CHILD_CAP).unwrap();
    for v in 0..CHILD_CAP {
        F::try_send(&mut tx, v).unwrap();
    }
    let mut child = spawn::<F>("consume", &name, 0, End::Die);
    assert_eq!(holding(child.0.stdout.as_mut().unwrap()), 0);
    let sent = blocked_through_a_death(&name, "producer", child, tx, |tx| {
        F::send_timeout(tx, 99, LONG)
    });
    assert_eq!(sent, Err(SendTimeoutError::Disconnected(99)));
}

/// A producer that polls a full ring sees its consumer's death after exactly
/// `LIVENESS_POLLS` full polls, as it has never probed before; each full poll counts
/// once.
fn a_polling_producer_sees_a_death_after_its_probe_polls<F: Flavour>() {
    let name = ShmName::new(&format!("{}-polled-consumer-death", F::NAME));
    let mut tx = F::producer(name.as_str(), CHILD_CAP).unwrap();
    for v in 0..CHILD_CAP {
        F::try_send(&mut tx, v).unwrap();
    }
    let mut child = spawn::<F>("consume", &name, 0, End::Die);
    assert_eq!(holding(child.0.stdout.as_mut().unwrap()), 0);
    assert!(!child.kill().success());
    let mut polls = 0;
    let seen = loop {
        polls += 1;
        match F::try_send(&mut tx, polls) {
            Err(TrySendError::Full(_)) if polls < 2 * u64::from(spsc::LIVENESS_POLLS) => {}
            other => break other,
        }
    };
    let limit = u64::from(spsc::LIVENESS_POLLS);
    assert_eq!(
        (seen, polls),
        (Err(TrySendError::Disconnected(limit)), limit)
    );
}

/// A consumer in another process receives 2 messages, then is killed while it holds the
/// third in place. A consumer attached afterwards receives the held message again (SPSC,
/// stream) or the one after it, the held one counted as reclaimed once the producer
/// needs its slot (MPMC); then everything else, in order, over more than a lap.
fn reader_crash_with_a_guard<F: Flavour>() {
    let name = ShmName::new(&format!("{}-reader-crash", F::NAME));
    let mut tx = F::producer(name.as_str(), CHILD_CAP).unwrap();
    for v in 0..5 {
        F::try_send(&mut tx, v).unwrap();
    }
    let mut child = spawn::<F>("consume", &name, 2, End::DieHoldingGuard);
    assert_eq!(holding(child.0.stdout.as_mut().unwrap()), 2);
    assert!(!child.kill().success());
    let mut rx = reattach(|| F::consumer(name.as_str(), CHILD_CAP)).unwrap();
    let first = match F::AFTER_READER_CRASH {
        HeldMessage::DeliveredAgain => 2,
        HeldMessage::Reclaimed => 3,
    };
    drain::<F>(&mut rx, first..5);
    for v in 5..5 + 2 * CHILD_CAP {
        F::send_timeout(&mut tx, v, LONG).unwrap();
        assert_eq!(F::recv_timeout(&mut rx, LONG), Ok(v));
    }
    assert_eq!(F::try_recv(&mut rx), Err(TryRecvError::Empty));
    if F::AFTER_READER_CRASH == HeldMessage::Reclaimed {
        let stats = F::stats(&tx).expect("a flavour that reclaims counts it");
        assert_eq!((stats.reclaimed, stats.consumers), (1, 1), "{stats:?}");
    }
}

// ---------------------------------------------------------------------------------------

/// `#[test]` wrappers calling `super::<check>::<flavour>(args)`, each with the
/// attributes written before its name.
macro_rules! tests {
    ($flavour:ty, $args:tt: $($(#[$attr:meta])* $check:ident),+ $(,)?) => {$(
        #[test]
        $(#[$attr])*
        fn $check() {
            super::$check::<$flavour> $args;
        }
    )+};
}

/// The checks of both backings.
macro_rules! on_both_backings {
    ($flavour:ty, $backing:expr) => {
        tests!($flavour, ($backing):
            smoke,
            invalid_capacity_is_refused,
            wrap,
            full_then_empty,
            timeouts_return_the_value,
            producer_dropped_drains_then_disconnects,
            consumer_dropped_disconnects_the_producer,
            reserve_commit_and_abort,
            guard_releases_on_drop_only,
            two_threads,
            #[cfg_attr(miri, ignore = "reads /proc, which miri's isolation hides")]
            parked_sides_are_woken,
        );
    };
}

/// Every check, for one flavour: `$heap::*` and `$segment::*`, the latter with the
/// `$extra` items (the checks instantiated per flavour).
macro_rules! conformance {
    ($flavour:ty => $heap:ident, $segment:ident { $($extra:tt)* }) => {
        mod $heap {
            use super::*;
            on_both_backings!($flavour, Backing::Heap);
        }

        mod $segment {
            use super::*;
            on_both_backings!($flavour, Backing::Segment);
            tests!($flavour, ():
                restart,
                corrupted_positions_are_errors,
                corrupted_state_is_an_error,
                producer_closes,
                producer_dies,
                consumer_closes,
                consumer_dies,
                a_blocked_consumer_sees_a_death_at_its_next_probe,
                a_polling_consumer_sees_a_death_after_its_probe_polls,
                a_blocked_producer_sees_a_death_at_its_next_probe,
                a_polling_producer_sees_a_death_after_its_probe_polls,
                reader_crash_with_a_guard,
            );
            $($extra)*
        }
    };
}

conformance!(Spsc => spsc_heap, spsc_segment {
    tests!(Spsc, (): corrupted_consumer_position_stops_the_producer);
});

conformance!(Mpmc => mpmc_heap, mpmc_segment {
    tests!(Mpmc, (): corrupted_consumer_position_stops_the_producer);
});

conformance!(Stream => stream_heap, stream_segment {
    tests!(Stream, (): corrupted_consumer_position_stops_the_producer);
});
