//! The SPSC ring between real processes, through real mapped files, with real futexes
//! and real `SIGKILL`s.
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_SPSC_CHILD=<part>`, `SHM_SPSC_NAME`, `SHM_SPSC_COUNT`,
//! `SHM_SPSC_WAIT`, `SHM_SPSC_CAPACITY`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::reseal;
use shm_alloc::Segment;
use shm_ring::spsc::{Builder, Consumer, Producer};
use shm_ring::{Message, RecvError, SendError, TryRecvError};
use shm_sync::WaitStrategy;
use shm_testkit::{ShmName, TempPath, wait_child, wait_for};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A sequence-numbered message with a checksum of its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Numbered {
    seq: u64,
    check: u64,
}

impl Message for Numbered {
    const TYPE_NAME: &'static str = "shm-ring-tests::Numbered/v1";
}

/// SplitMix64's finaliser: a checksum that differs for every sequence number.
fn checksum(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn numbered(seq: u64) -> Numbered {
    Numbered {
        seq,
        check: checksum(seq),
    }
}

/// Panics unless `msg` is message number `expected`, intact.
fn verify(msg: Numbered, expected: u64) {
    assert_eq!(msg.seq, expected, "lost, duplicated or reordered message");
    assert_eq!(
        msg.check,
        checksum(msg.seq),
        "corrupted message {}",
        msg.seq
    );
}

fn strategy(name: &str) -> WaitStrategy {
    match name {
        "spin" => WaitStrategy::BusySpin,
        "park" => WaitStrategy::Park,
        "default" => WaitStrategy::default(),
        other => panic!("unknown wait strategy {other}"),
    }
}

/// The builder of the ring named `name`.
fn ring(name: &ShmName, capacity: u64, wait: WaitStrategy) -> Builder<Numbered> {
    Builder::new(name.as_str())
        .capacity(capacity)
        .wait_strategy(wait)
}

/// The command that starts `part` as a child process.
fn command(part: &str, name: &ShmName, count: u64, capacity: u64, wait: &str) -> Command {
    let mut cmd = shm_testkit::child("child");
    cmd.env("SHM_SPSC_CHILD", part)
        .env("SHM_SPSC_NAME", name.as_str())
        .env("SHM_SPSC_COUNT", count.to_string())
        .env("SHM_SPSC_CAPACITY", capacity.to_string())
        .env("SHM_SPSC_WAIT", wait)
        .stdout(Stdio::null());
    cmd
}

fn spawn(part: &str, name: &ShmName, count: u64, capacity: u64, wait: &str) -> Child {
    command(part, name, count, capacity, wait).spawn().unwrap()
}

fn produce(tx: &mut Producer<Numbered>, count: u64, burst: u64) {
    for seq in 0..count {
        tx.send(numbered(seq)).expect("consumer stays attached");
        if burst != 0 && seq % burst == burst - 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Receives `0..count` in order, then expects `Disconnected`.
fn consume(rx: &mut Consumer<Numbered>, count: u64) {
    for seq in 0..count {
        verify(rx.recv().expect("producer sends everything"), seq);
    }
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
#[ignore = "child process entry point, started by the tests of this file"]
fn child() {
    let part = std::env::var("SHM_SPSC_CHILD").expect("run by a parent test");
    let name = std::env::var("SHM_SPSC_NAME").unwrap();
    let count: u64 = std::env::var("SHM_SPSC_COUNT").unwrap().parse().unwrap();
    let capacity: u64 = std::env::var("SHM_SPSC_CAPACITY").unwrap().parse().unwrap();
    let wait = strategy(&std::env::var("SHM_SPSC_WAIT").unwrap());
    let builder = Builder::<Numbered>::new(name.as_str())
        .capacity(capacity)
        .wait_strategy(wait);
    match part.as_str() {
        "producer" => produce(&mut builder.producer().unwrap(), count, 0),
        "bursty-producer" => produce(&mut builder.producer().unwrap(), count, 10_000),
        "consumer" => consume(&mut builder.consumer().unwrap(), count),
        "endless-producer" => {
            let mut tx = builder.producer().unwrap();
            let mut seq = 0;
            loop {
                tx.send(numbered(seq)).unwrap();
                seq += 1;
            }
        }
        // Receives in place and records, before releasing each message, how many it has
        // processed, in a progress file: the parent kills it at some point.
        "recording-consumer" => {
            // Records each message's sequence + 1 (8 bytes, one `pwrite`, never torn or
            // truncated by a kill) while it still holds the message, before releasing it.
            use std::os::unix::fs::FileExt;
            let progress = std::fs::OpenOptions::new()
                .write(true)
                .open(std::env::var("SHM_SPSC_PROGRESS").unwrap())
                .unwrap();
            let mut rx = builder.consumer().unwrap();
            let mut seq = 0;
            loop {
                match rx.try_recv_ref() {
                    Ok(msg) => {
                        verify(*msg, seq);
                        seq += 1;
                        progress.write_all_at(&seq.to_ne_bytes(), 0).unwrap();
                    }
                    Err(TryRecvError::Empty) => shm_sync::atomic::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // A producer that tolerates its consumer's death: it waits for a new one.
        "patient-producer" => {
            let mut tx = builder.producer().unwrap();
            for seq in 0..count {
                let mut msg = numbered(seq);
                loop {
                    match tx.send(msg) {
                        Ok(()) => break,
                        Err(SendError::Disconnected(back)) => {
                            msg = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        other => panic!("unknown part {other}"),
    }
}

/// Child producer -> parent consumer, and parent producer -> child consumer.
fn both_directions(count: u64, capacity: u64, wait: &str, bursty: bool) {
    let name = ShmName::new("fwd");
    // The parent attaches first: it creates the ring.
    let mut rx = ring(&name, capacity, strategy(wait)).consumer().unwrap();
    assert_eq!(
        shm_testkit::segment_creator(name.as_str()),
        Some(u64::from(std::process::id()))
    );
    let part = if bursty {
        "bursty-producer"
    } else {
        "producer"
    };
    let mut child = spawn(part, &name, count, capacity, "spin");
    consume(&mut rx, count);
    wait_child(&mut child, Duration::from_secs(120));

    let name = ShmName::new("rev");
    // The child attaches first here: it creates the ring, and the parent opens it.
    let mut child = spawn("consumer", &name, count, capacity, wait);
    wait_for(Duration::from_secs(10), "the child's ring", || {
        (shm_testkit::segment_creator(name.as_str()) == Some(u64::from(child.id()))).then_some(())
    });
    let mut tx = ring(&name, capacity, WaitStrategy::BusySpin)
        .producer()
        .unwrap();
    if wait == "park" {
        // The receiver named parking does park: on the empty ring, before anything comes.
        wait_for(
            Duration::from_secs(10),
            "the child consumer, parked",
            || (parked_consumers(&name) == 1).then_some(()),
        );
    }
    produce(&mut tx, count, if bursty { 10_000 } else { 0 });
    drop(tx);
    wait_child(&mut child, Duration::from_secs(120));
}

const MANY: u64 = 10_000_000;
const PARKED: u64 = 1_000_000;

#[test]
fn ten_million_busy_polling_tiny_capacity() {
    both_directions(MANY, 2, "spin", false);
}

#[test]
fn ten_million_busy_polling_large_capacity() {
    both_directions(MANY, 1 << 16, "spin", false);
}

#[test]
fn one_million_parking_receiver_tiny_capacity() {
    both_directions(PARKED, 2, "park", true);
}

#[test]
fn one_million_parking_receiver_large_capacity() {
    both_directions(PARKED, 1 << 16, "park", true);
}

#[test]
fn killed_producer_is_drained_then_disconnected() {
    let name = ShmName::new("killp");
    let mut rx = ring(&name, 1024, WaitStrategy::Park).consumer().unwrap();
    let mut child = spawn("endless-producer", &name, 0, 1024, "spin");
    let mut seq = 0;
    while seq < 100_000 {
        verify(rx.recv().unwrap(), seq);
        seq += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    loop {
        match rx.recv() {
            Ok(msg) => {
                verify(msg, seq);
                seq += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let drained = killed.elapsed();
    // Bounded: a parked consumer probes its peer every LIVENESS_PERIOD (10 ms).
    assert!(
        drained < Duration::from_secs(2),
        "took {drained:?} to see the death"
    );
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

#[test]
fn killed_consumer_restarts_without_loss() {
    const COUNT: u64 = 1_000_000;
    let name = ShmName::new("killc");
    let progress = TempPath::new("killc-progress");
    std::fs::write(progress.path(), 0u64.to_ne_bytes()).unwrap();
    let mut producer = spawn("patient-producer", &name, COUNT, 64, "spin");
    let mut first = command("recording-consumer", &name, COUNT, 64, "spin")
        .env("SHM_SPSC_PROGRESS", progress.path())
        .spawn()
        .unwrap();
    let read_progress = || -> u64 {
        let bytes = std::fs::read(progress.path()).unwrap();
        u64::from_ne_bytes(bytes[..8].try_into().unwrap())
    };
    wait_for(
        Duration::from_secs(60),
        "progress of the first consumer",
        || (read_progress() >= 200_000).then_some(()),
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let recorded = read_progress();

    // The restarted consumer (this process) continues at the first unreleased message.
    let mut rx = ring(&name, 64, WaitStrategy::BusySpin).consumer().unwrap();
    let msg = rx.recv().unwrap();
    // The first consumer recorded each message before releasing it: it had released
    // `recorded` messages, or `recorded - 1` if it died holding the last one recorded
    // (which it then receives again, once: the documented bound).
    assert!(
        msg.seq + 1 == recorded || msg.seq == recorded,
        "restart at {} after {recorded} recorded",
        msg.seq
    );
    let mut seq = msg.seq;
    verify(msg, seq);
    seq += 1;
    consume_from(&mut rx, seq, COUNT);
    wait_child(&mut producer, Duration::from_secs(60));
}

fn consume_from(rx: &mut Consumer<Numbered>, from: u64, to: u64) {
    for seq in from..to {
        verify(rx.recv().expect("producer sends everything"), seq);
    }
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
fn a_second_producer_or_consumer_is_refused() {
    let name = ShmName::new("roles");
    let builder = ring(&name, 8, WaitStrategy::BusySpin);
    let _tx = builder.producer().unwrap();
    let _rx = builder.consumer().unwrap();
    for result in [builder.producer().map(drop), builder.consumer().map(drop)] {
        match result {
            Err(shm_ring::Error::Segment(shm_alloc::Error::RoleTaken { .. })) => {}
            other => panic!("expected RoleTaken, got {other:?}"),
        }
    }
}

#[test]
fn a_consumer_of_another_message_type_is_refused() {
    let name = ShmName::new("types");
    let _tx = ring(&name, 8, WaitStrategy::BusySpin).producer().unwrap();
    // Same size and alignment as `Numbered`, another type.
    let other = Builder::<[u64; 2]>::new(name.as_str()).consumer();
    match other {
        Err(shm_ring::Error::Segment(shm_alloc::Error::Mismatch { field, .. })) => {
            assert_eq!(field, "type_fingerprint");
        }
        other => panic!("expected a fingerprint mismatch, got {other:?}"),
    }
}

#[test]
fn corrupted_positions_in_the_file_are_reported() {
    use std::os::unix::fs::FileExt;
    let name = ShmName::new("corrupt");
    let mut tx = ring(&name, 8, WaitStrategy::BusySpin).producer().unwrap();
    let mut rx = ring(&name, 8, WaitStrategy::BusySpin).consumer().unwrap();
    tx.try_send(numbered(0)).unwrap();
    verify(rx.try_recv().unwrap(), 0);
    // Another process scribbles a tail far past head + capacity (the producer's
    // position is the first u64 of the data region, after the 4096-byte header).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(name.path())
        .unwrap();
    file.write_at(&(1u64 << 40).to_ne_bytes(), Segment::HEADER_LEN as u64)
        .unwrap();
    match rx.try_recv() {
        Err(TryRecvError::Corrupted(shm_ring::Corruption::Positions {
            head,
            tail,
            capacity,
        })) => {
            assert_eq!((head, tail, capacity), (1, 1 << 40, 8));
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // A consumer attaching to it is refused too.
    drop(rx);
    // The role is free once no process holds the lock's file description. A child that
    // another test's thread forks right now shares it until it execs: retry meanwhile.
    let again = common::reattach(|| ring(&name, 8, WaitStrategy::BusySpin).consumer());
    assert!(
        matches!(again, Err(shm_ring::Error::Corrupted(_))),
        "expected Corrupted, got {again:?}"
    );
}

/// The waiter count of ring `name`'s not-empty event count, read from its file: the
/// control block's `not_empty` at 384, its waiter word after its sequence word. 1 while
/// the consumer is parked (or about to be), which no public call of the SPSC ring shows.
fn parked_consumers(name: &ShmName) -> u32 {
    use std::os::unix::fs::FileExt;
    const NOT_EMPTY_WAITERS: u64 = 384 + 4;
    let path = std::path::Path::new(shm_testkit::SHM_DIR).join(name.as_str());
    let mut word = [0; 4];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut word, Segment::HEADER_LEN as u64 + NOT_EMPTY_WAITERS)
        .unwrap();
    u32::from_ne_bytes(word)
}

/// A consumer killed while parked in `recv` stays counted as a waiter of the ring's
/// not-empty event count, so that every send would make a futex syscall; the next
/// consumer to attach, the only party that ever waits there, clears the count.
#[test]
fn a_new_consumer_clears_the_count_of_one_killed_while_parked() {
    let name = ShmName::new("dead-parked");
    let mut tx = ring(&name, 4, WaitStrategy::BusySpin).producer().unwrap();
    let waiters = || parked_consumers(&name);
    assert_eq!(waiters(), 0);
    let mut parked = shm_testkit::Reap(spawn("consumer", &name, 1, 4, "park"));
    wait_for(
        Duration::from_secs(10),
        "the child consumer, parked",
        || (waiters() == 1).then_some(()),
    );
    parked.kill();
    assert_eq!(waiters(), 1, "a waiter killed while parked stays counted");
    let mut rx = ring(&name, 4, WaitStrategy::BusySpin).consumer().unwrap();
    assert_eq!(
        waiters(),
        0,
        "the new consumer cleared the dead one's count"
    );
    tx.try_send(numbered(0)).unwrap();
    verify(rx.try_recv().unwrap(), 0);
}

/// A header that its checksum covers but whose ring does not fit it is refused at
/// attach, never laid out: participant entries recorded for a ring that has no table
/// (header offset 20), and a capacity (offset 24) whose slots overrun the data region.
/// The opener gives no capacity, so the header's is the one taken.
#[test]
fn a_sealed_header_that_does_not_fit_the_ring_is_refused() {
    use std::os::unix::fs::FileExt;
    let name = ShmName::new("unfit");
    drop(ring(&name, 8, WaitStrategy::BusySpin).producer().unwrap());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .unwrap();
    let open = || {
        Builder::<Numbered>::new(name.as_str())
            .mode(shm_ring::OpenMode::Open)
            .consumer()
    };

    for entries in [1u32, 3] {
        file.write_all_at(&entries.to_ne_bytes(), 20).unwrap();
        reseal(&file);
        match open() {
            Err(shm_ring::Error::Corrupted(shm_ring::Corruption::State {
                word, found, ..
            })) => {
                assert_eq!((word, found), ("the header's participant entries", entries));
            }
            other => panic!("expected a corrupt entry count, got {other:?}"),
        }
    }
    file.write_all_at(&0u32.to_ne_bytes(), 20).unwrap();

    // The data region is one page: the control block (896 bytes) and 8 slots of 16
    // bytes, rounded up. 128 slots still fit it; 256 do not.
    file.write_all_at(&128u64.to_ne_bytes(), 24).unwrap();
    reseal(&file);
    assert_eq!(open().map(|rx| rx.capacity()).ok(), Some(128));
    file.write_all_at(&256u64.to_ne_bytes(), 24).unwrap();
    reseal(&file);
    match open() {
        Err(shm_ring::Error::Corrupted(shm_ring::Corruption::Layout { capacity, data_len })) => {
            assert_eq!((capacity, data_len), (256, 4096))
        }
        other => panic!("expected a layout that does not fit, got {other:?}"),
    }
}

/// A stream ring (the SPSC ring of bytes) whose sealed header records a capacity below
/// the stream's minimum is refused at attach, as a layout that does not fit.
#[test]
fn a_sealed_stream_header_below_the_minimum_is_refused() {
    use std::os::unix::fs::FileExt;
    let name = ShmName::new("unfit-stream");
    let min = shm_ring::stream::MIN_CAPACITY;
    drop(
        shm_ring::stream::Builder::new(name.as_str())
            .capacity(min)
            .producer()
            .unwrap(),
    );
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .unwrap();
    file.write_all_at(&(min / 2).to_ne_bytes(), 24).unwrap();
    reseal(&file);
    match shm_ring::stream::Builder::new(name.as_str())
        .mode(shm_ring::OpenMode::Open)
        .consumer()
    {
        Err(shm_ring::Error::Corrupted(shm_ring::Corruption::Layout { capacity, data_len })) => {
            assert_eq!((capacity, data_len), (min / 2, 4096))
        }
        other => panic!("expected a layout that does not fit, got {other:?}"),
    }
}

/// An attach refused after the role was taken (here: the positions are corrupt) writes
/// nothing into the ring: the dead producer it would have replaced still reads as dead,
/// not as closed, to the consumer.
#[test]
fn a_refused_attach_leaves_a_dead_peer_dead() {
    use std::os::unix::fs::FileExt;
    let name = ShmName::new("refused-attach");
    let rx = ring(&name, 8, WaitStrategy::BusySpin).consumer().unwrap();
    let mut child = spawn("endless-producer", &name, 0, 8, "spin");
    let session = Segment::HEADER_LEN as u64 + 256;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .unwrap();
    let word = || {
        let mut word = [0u8; 4];
        file.read_exact_at(&mut word, session).unwrap();
        u32::from_ne_bytes(word) & 3
    };
    wait_for(
        Duration::from_secs(10),
        "the child producer attached",
        || (word() == 1).then_some(()),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    file.write_all_at(&(1u64 << 40).to_ne_bytes(), Segment::HEADER_LEN as u64)
        .unwrap();
    let refused = common::reattach(|| ring(&name, 8, WaitStrategy::BusySpin).producer());
    assert!(
        matches!(refused, Err(shm_ring::Error::Corrupted(_))),
        "{refused:?}"
    );
    assert_eq!(word(), 1, "the dead producer's session is still attached");
    assert!(!rx.producer_closed(), "a death, not a close");
}
