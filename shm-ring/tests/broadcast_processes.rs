//! The broadcast ring between real processes, through real mapped files, with real
//! futexes and real `SIGKILL`s.
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_BCAST_CHILD=<part>`, `SHM_BCAST_NAME`, `SHM_BCAST_ID`,
//! `SHM_BCAST_COUNT`). Each child checks what it receives itself (order, checksum,
//! counts) and fails if anything is wrong; the parent checks that every child succeeds.

use std::process::Stdio;
use std::time::Duration;

use shm_ring::broadcast::frames::{Cell, FramePublisher, FrameSubscriber};
use shm_ring::broadcast::{Builder, Overflow, RecvError, Start};
use shm_ring::{Error, Message, OpenMode, TrySendError};
use shm_sync::WaitStrategy;
use shm_testkit::{
    Reap, ShmName, hold_until_killed, holding, say_holding, sleeps_on_futex, thread_id, wait_child,
    wait_for,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A message numbered by its position, with a checksum of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Tick {
    seq: u64,
    price: u64,
    check: u64,
}

impl Message for Tick {
    const TYPE_NAME: &'static str = "shm-ring-tests::broadcast::Tick/v1";
}

/// SplitMix64's finaliser: differs for every number.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn tick(seq: u64) -> Tick {
    let price = mix(seq);
    Tick {
        seq,
        price,
        check: mix(price ^ seq),
    }
}

/// Panics unless `t` is intact; returns its number.
fn verify(t: &Tick) -> u64 {
    assert_eq!(*t, tick(t.seq), "corrupted message {t:?}");
    t.seq
}

/// A large message (8 KiB), so that a publisher killed at a random time is most likely
/// killed while it copies one in.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Frame {
    seq: u64,
    words: [u64; 1023],
}

impl Message for Frame {
    const TYPE_NAME: &'static str = "shm-ring-tests::broadcast::Frame/v1";
}

fn frame(seq: u64) -> Frame {
    Frame {
        seq,
        words: [mix(seq); 1023],
    }
}

/// A frame of 8 to 607 bytes: its number, then bytes that depend on it and their place.
fn numbered_frame(seq: u64) -> Vec<u8> {
    let len = 8 + (mix(seq) % 600) as usize;
    let mut frame = seq.to_le_bytes().to_vec();
    frame.extend((8..len).map(|i| (mix(seq) >> (i % 8 * 8)) as u8 ^ i as u8));
    frame
}

/// Panics unless `frame` is whole; returns its number.
fn verify_frame(frame: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(frame[..8].try_into().unwrap());
    assert!(frame == numbered_frame(seq), "frame {seq} damaged");
    seq
}

fn ring<T: Message>(name: &ShmName) -> Builder<T> {
    Builder::new(name.as_str())
}

/// Starts `part` as a child process, its standard output piped to the parent.
fn spawn(part: &str, name: &ShmName, id: u32, count: u64) -> Reap {
    Reap(
        shm_testkit::child("child")
            .env("SHM_BCAST_CHILD", part)
            .env("SHM_BCAST_NAME", name.as_str())
            .env("SHM_BCAST_ID", id.to_string())
            .env("SHM_BCAST_COUNT", count.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Not a test: the body of a child process, selected by `SHM_BCAST_CHILD`.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    let Ok(part) = std::env::var("SHM_BCAST_CHILD") else {
        return;
    };
    let name = std::env::var("SHM_BCAST_NAME").unwrap();
    let id: u32 = std::env::var("SHM_BCAST_ID").unwrap().parse().unwrap();
    let count: u64 = std::env::var("SHM_BCAST_COUNT").unwrap().parse().unwrap();
    // Several processes on as few as two cores: yield rather than spin.
    let builder = Builder::<Tick>::new(name.as_str())
        .mode(OpenMode::Open)
        .wait_strategy(WaitStrategy::Yield);
    match part.as_str() {
        "every" => {
            // Receives every message, in order, then the publisher's leaving.
            let mut rx = builder.subscriber_with_id(id).unwrap();
            let mut next = 0;
            loop {
                match rx.recv() {
                    Ok(t) => {
                        assert_eq!(verify(&t), next, "subscriber {id}: out of order");
                        next += 1;
                    }
                    Err(RecvError::Disconnected) => break,
                    Err(e) => panic!("subscriber {id} at {next}: {e}"),
                }
            }
            assert_eq!(next, count, "subscriber {id}: messages received");
            assert_eq!(rx.stats().missed, 0);
        }
        "slow" => {
            // Receives slowly (a spin of about a microsecond per message) so that the
            // publisher laps it; every message it gets is intact and in order, and what
            // it received plus what it was told it missed is every message.
            let mut rx = builder.subscriber_with_id(id).unwrap();
            let (mut next, mut received, mut missed) = (0, 0u64, 0u64);
            loop {
                match rx.recv() {
                    Ok(t) => {
                        assert_eq!(verify(&t), next, "out of order");
                        next += 1;
                        received += 1;
                        let until = std::time::Instant::now() + Duration::from_micros(1);
                        while std::time::Instant::now() < until {
                            shm_sync::atomic::spin_loop();
                        }
                    }
                    Err(RecvError::Lagged { missed: m }) => {
                        missed += m;
                        next += m;
                    }
                    Err(RecvError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(
                received + missed,
                count,
                "received {received}, missed {missed}"
            );
            assert!(missed > 0, "the slow subscriber was never lapped");
            let stats = rx.stats();
            assert_eq!((stats.received, stats.missed), (received, missed));
            eprintln!(
                "slow subscriber: received {received}, missed {missed} in {} lags",
                stats.lagged
            );
        }
        "stop" => {
            // Receives `count` messages, says so, and waits to be killed.
            let mut rx = builder.subscriber_with_id(id).unwrap();
            for seq in 0..count {
                assert_eq!(verify(&rx.recv().unwrap()), seq);
            }
            say_holding(rx.position());
            hold_until_killed();
        }
        "scribble" => {
            // Attaches a subscriber, then writes into the first page of its mapping that
            // is read-only and shared: the slots. The write must fault.
            let rx = builder.subscriber().unwrap();
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let line = maps
                .lines()
                .find(|l| l.contains(name.as_str()) && l.split_whitespace().nth(1) == Some("r--s"))
                .unwrap_or_else(|| panic!("no read-only mapping of the ring:\n{maps}"));
            let start = usize::from_str_radix(line.split('-').next().unwrap(), 16).unwrap();
            say_holding(start as u64);
            // SAFETY: none, on purpose: a buggy subscriber's stray write. The page is
            // read-only, so the write faults before it changes anything.
            unsafe { std::ptr::write_volatile(start as *mut u64, 0xdead_beef) };
            drop(rx);
            panic!("the write into a slot did not fault");
        }
        "frames-slow" => {
            // Receives variable-size frames slowly (about a microsecond each) so that the
            // publisher laps it: every frame it gets is whole and in order, and frames
            // received plus frames reported lost is every frame.
            let rx = Builder::<Cell>::new(name.as_str())
                .mode(OpenMode::Open)
                .subscriber_with_id(id)
                .unwrap();
            let mut rx = FrameSubscriber::new(rx);
            let (mut next, mut lags) = (0, 0);
            loop {
                match rx.recv() {
                    Ok(frame) => {
                        assert_eq!(verify_frame(frame), next, "out of order");
                        next += 1;
                        let until = std::time::Instant::now() + Duration::from_micros(1);
                        while std::time::Instant::now() < until {
                            shm_sync::atomic::spin_loop();
                        }
                    }
                    Err(RecvError::Lagged { missed }) => {
                        next += missed;
                        lags += 1;
                    }
                    Err(RecvError::Disconnected) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(next, count, "every frame received or reported lost");
            assert_eq!(rx.received() + rx.missed(), count);
            assert!(rx.missed() > 0, "the slow subscriber was never lapped");
            eprintln!(
                "frames: received {}, missed {} in {lags} lags",
                rx.received(),
                rx.missed()
            );
        }
        "publish-frames" => {
            // Publishes large frames until killed.
            let mut tx = Builder::<Frame>::new(name.as_str())
                .mode(OpenMode::Open)
                .publisher()
                .unwrap();
            say_holding(0);
            for seq in 0.. {
                tx.send(frame(seq)).unwrap();
            }
        }
        other => panic!("unknown part {other}"),
    }
}

/// Variable-size frames under `Lap` with a subscriber process slowed on purpose: every
/// frame it receives is whole and in order, and received plus reported lost is every
/// frame published.
#[test]
fn lapped_frames_arrive_whole_or_are_counted_lost() {
    const COUNT: u64 = 100_000;
    let name = ShmName::new("bcast-frames");
    let builder = ring::<Cell>(&name)
        .capacity(1024)
        .subscribers(1)
        .overflow(Overflow::Lap)
        .mode(OpenMode::Create);
    let mut tx = FramePublisher::new(builder.publisher().unwrap());
    let mut slow = spawn("frames-slow", &name, 0, COUNT);
    wait_for(Duration::from_secs(30), "the subscriber attached", || {
        (tx.publisher().stats().subscribers == 1).then_some(())
    });
    for seq in 0..COUNT {
        tx.try_send(&numbered_frame(seq)).unwrap();
    }
    assert_eq!(tx.published(), COUNT);
    drop(tx);
    wait_child(&mut slow.0, Duration::from_secs(120));
}

/// One publisher and four subscriber processes under `Block`: every subscriber receives
/// every one of a million checksummed messages exactly once, in order.
#[test]
fn block_delivers_every_message_to_four_subscriber_processes() {
    const SUBSCRIBERS: u32 = 4;
    const COUNT: u64 = 1_000_000;
    let name = ShmName::new("bcast-block");
    let builder = ring::<Tick>(&name)
        .capacity(1024)
        .subscribers(SUBSCRIBERS)
        .overflow(Overflow::Block)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Yield);
    let mut tx = builder.publisher().unwrap();
    let mut children: Vec<Reap> = (0..SUBSCRIBERS)
        .map(|id| spawn("every", &name, id, COUNT))
        .collect();
    wait_for(Duration::from_secs(30), "four subscribers attached", || {
        (tx.stats().subscribers == SUBSCRIBERS).then_some(())
    });
    for seq in 0..COUNT {
        tx.send(tick(seq)).unwrap();
    }
    drop(tx);
    for child in &mut children {
        wait_child(&mut child.0, Duration::from_secs(120));
    }
}

/// `Lap` with a publisher that never waits (ten million messages) and a subscriber
/// slowed on purpose, next to one that keeps up as it can: no message ever fails its
/// checksum, and each subscriber's received + missed is every message published.
#[test]
fn lapped_subscribers_account_for_every_message() {
    const COUNT: u64 = 10_000_000;
    let name = ShmName::new("bcast-lap");
    let builder = ring::<Tick>(&name)
        .capacity(4096)
        .subscribers(2)
        .overflow(Overflow::Lap)
        .mode(OpenMode::Create);
    let mut tx = builder.publisher().unwrap();
    let mut slow = spawn("slow", &name, 0, COUNT);
    wait_for(Duration::from_secs(30), "the subscriber attached", || {
        (tx.stats().subscribers == 1).then_some(())
    });
    for seq in 0..COUNT {
        tx.try_send(tick(seq)).unwrap();
    }
    assert_eq!(tx.published(), COUNT);
    drop(tx);
    wait_child(&mut slow.0, Duration::from_secs(120));
}

/// `Block`: a subscriber killed while it holds the publisher back stops gating within
/// the liveness period, and the other subscriber loses nothing. Restarted under its id,
/// it resumes where it stopped: its first receive reports exactly the messages
/// overwritten since, then it receives the rest in order.
#[test]
fn a_killed_subscriber_stops_gating_and_resumes_under_its_id() {
    const CAPACITY: u64 = 1024;
    const COUNT: u64 = 100_000;
    const STOP_AT: u64 = 500;
    let name = ShmName::new("bcast-kill-sub");
    let builder = ring::<Tick>(&name)
        .capacity(CAPACITY)
        .subscribers(2)
        .overflow(Overflow::Block)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Yield);
    let mut tx = builder.publisher().unwrap();
    let mut every = spawn("every", &name, 0, COUNT);
    let mut stopper = spawn("stop", &name, 1, STOP_AT);
    wait_for(Duration::from_secs(30), "two subscribers attached", || {
        (tx.stats().subscribers == 2).then_some(())
    });
    let killer = std::thread::spawn(move || {
        let at = holding(stopper.0.stdout.as_mut().unwrap());
        stopper.kill();
        at
    });
    for seq in 0..COUNT {
        tx.send(tick(seq)).unwrap();
    }
    assert_eq!(killer.join().unwrap(), STOP_AT);
    drop(tx);
    wait_child(&mut every.0, Duration::from_secs(60));
    let mut rx = ring::<Tick>(&name).subscriber_with_id(1).unwrap();
    assert_eq!(rx.position(), STOP_AT, "resumes where it stopped");
    let oldest = COUNT - CAPACITY;
    assert_eq!(
        rx.recv(),
        Err(RecvError::Lagged {
            missed: oldest - STOP_AT
        })
    );
    for seq in oldest..COUNT {
        assert_eq!(verify(&rx.recv().unwrap()), seq);
    }
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

/// A publisher killed with `SIGKILL` while it copies a message in: its subscriber
/// receives every message before, passes over the half-written slot (counted), and sees
/// `Disconnected`; a publisher that attaches after marks the slot skipped and goes on
/// after it. Large messages make a kill mid-copy likely; the test kills until one lands
/// there.
#[test]
fn a_publisher_killed_mid_write_leaves_a_skipped_slot() {
    for attempt in 0..20 {
        let name = ShmName::new("bcast-kill-pub");
        let builder = ring::<Frame>(&name)
            .capacity(16)
            .subscribers(1)
            .overflow(Overflow::Lap)
            .start(Start::Newest)
            .mode(OpenMode::Create);
        let mut rx = builder.subscriber().unwrap();
        let mut publisher = spawn("publish-frames", &name, 0, 0);
        holding(publisher.0.stdout.as_mut().unwrap());
        wait_for(Duration::from_secs(10), "frames published", || {
            (rx.ring_stats().published > 100).then_some(())
        });
        publisher.kill();
        let (mut received, mut missed) = (0u64, 0u64);
        let mut next = 0;
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(f) => {
                    assert_eq!(f.seq, next, "out of order");
                    assert!(f.words.iter().all(|&w| w == mix(f.seq)), "a torn frame");
                    next += 1;
                    received += 1;
                }
                Err(shm_ring::broadcast::RecvTimeoutError::Lagged { missed: m }) => {
                    missed += m;
                    next += m;
                }
                Err(shm_ring::broadcast::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let published = rx.ring_stats().published;
        let skipped = rx.stats().skipped;
        assert!(skipped <= 1);
        assert_eq!(received + missed, published, "every message accounted for");
        if skipped == 0 {
            eprintln!("attempt {attempt}: killed between two messages, again");
            continue;
        }
        assert_eq!(rx.position(), published + 1, "past the half-written slot");
        let mut tx = ring::<Frame>(&name).publisher().unwrap();
        assert_eq!(tx.stats().skipped, 1, "the next publisher marks it skipped");
        assert_eq!(tx.published(), published + 1);
        tx.try_send(frame(published + 1)).unwrap();
        assert_eq!(rx.recv().unwrap().seq, published + 1);
        return;
    }
    panic!("no kill landed mid-write in 20 attempts");
}

/// Opening checks what creation recorded: another overflow policy is
/// `OverflowMismatch`, another subscriber limit `ParticipantsMismatch`; an id past the
/// limit is `InvalidSubscriber`, a held id `SubscriberTaken`, a second publisher
/// `PublisherTaken`. An opener that asks for no policy gets the recorded one.
#[test]
fn opens_are_checked_against_what_creation_recorded() {
    let name = ShmName::new("bcast-open");
    let mut tx = ring::<Tick>(&name)
        .capacity(2)
        .subscribers(2)
        .overflow(Overflow::Block)
        .mode(OpenMode::Create)
        .publisher()
        .unwrap();
    let open = ring::<Tick>(&name).mode(OpenMode::Open);
    assert!(matches!(
        open.clone().overflow(Overflow::Lap).subscriber(),
        Err(Error::OverflowMismatch {
            expected: Overflow::Lap,
            found: Overflow::Block
        })
    ));
    assert!(matches!(
        open.clone().subscribers(3).subscriber(),
        Err(Error::ParticipantsMismatch {
            expected: 3,
            found: 2
        })
    ));
    assert!(matches!(
        open.subscriber_with_id(2),
        Err(Error::InvalidSubscriber { id: 2, limit: 2 })
    ));
    let _held = open.subscriber_with_id(1).unwrap();
    assert!(matches!(
        open.subscriber_with_id(1),
        Err(Error::SubscriberTaken { id: 1 })
    ));
    assert!(matches!(open.publisher(), Err(Error::PublisherTaken)));
    // The subscriber opened without a policy gates the publisher: the ring is `Block`.
    tx.try_send(tick(0)).unwrap();
    tx.try_send(tick(1)).unwrap();
    assert!(matches!(tx.try_send(tick(2)), Err(TrySendError::Full(_))));
}

/// A subscriber parked in `recv` (seen asleep on its futex in `/proc`) is woken by the
/// next publish, in a segment.
#[test]
fn a_parked_subscriber_is_woken() {
    let name = ShmName::new("bcast-park");
    let builder = ring::<Tick>(&name)
        .capacity(16)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Park);
    let mut tx = builder.publisher().unwrap();
    let mut rx = builder.mode(OpenMode::Open).subscriber().unwrap();
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        tid_tx.send(thread_id()).unwrap();
        rx.recv()
    });
    let tid = tid.recv().unwrap();
    wait_for(
        Duration::from_secs(10),
        "the subscriber asleep on its futex",
        || sleeps_on_futex(std::process::id(), tid).then_some(()),
    );
    assert_eq!(tx.stats().parked_subscribers, 1);
    tx.try_send(tick(0)).unwrap();
    assert_eq!(receiver.join().unwrap(), Ok(tick(0)));
}

/// Isolation: a subscriber's mapping of the slots is read-only, so a stray write into a
/// slot from a subscriber process faults (`SIGSEGV`) there, and the publisher and the
/// other subscribers go on with intact messages.
#[test]
fn a_subscribers_write_into_a_slot_faults() {
    use std::os::unix::process::ExitStatusExt;

    let name = ShmName::new("bcast-scribble");
    let builder = ring::<Tick>(&name).capacity(1024).mode(OpenMode::Create);
    let mut tx = builder.publisher().unwrap();
    let mut rx = builder.clone().mode(OpenMode::Open).subscriber().unwrap();
    tx.try_send(tick(0)).unwrap();
    let mut scribbler = spawn("scribble", &name, 0, 0);
    holding(scribbler.0.stdout.as_mut().unwrap());
    let status = scribbler.0.wait().unwrap();
    assert_eq!(status.signal(), Some(SIGSEGV), "{status}");
    tx.try_send(tick(1)).unwrap();
    assert_eq!(rx.try_recv().map(|t| verify(&t)), Ok(0));
    assert_eq!(rx.try_recv().map(|t| verify(&t)), Ok(1));
}

/// `SIGSEGV`'s number on Linux (`signal(7)`).
const SIGSEGV: i32 = 11;
