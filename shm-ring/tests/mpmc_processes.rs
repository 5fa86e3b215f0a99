//! The MPMC ring between real processes, through real mapped files, with real futexes
//! and real `SIGKILL`s.
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_MPMC_CHILD=<part>`, `SHM_MPMC_NAME`, `SHM_MPMC_ID`,
//! `SHM_MPMC_COUNT`, `SHM_MPMC_OUT`). A child that holds a slot on purpose says so on
//! its standard output (`holding <position>`) and then sleeps until it is killed.

use std::process::{Child, Stdio};
use std::time::Duration;

mod common;

use common::reseal;
use shm_alloc::Segment;
use shm_ring::mpmc::Builder;
use shm_ring::{Error, Message, OpenMode, RecvTimeoutError, TryRecvError};
use shm_sync::WaitStrategy;
use shm_testkit::{
    Reap, ShmName, TempPath, hold_until_killed, holding, say_holding, wait_child, wait_for,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A message tagged with its producer and its number in that producer's sequence, with
/// a checksum of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Tagged {
    producer: u64,
    seq: u64,
    check: u64,
}

impl Message for Tagged {
    const TYPE_NAME: &'static str = "shm-ring-tests::Tagged/v1";
}

/// SplitMix64's finaliser over producer and number: differs for every message.
fn checksum(producer: u64, seq: u64) -> u64 {
    let mut z = (producer << 40 ^ seq).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn tagged(producer: u64, seq: u64) -> Tagged {
    Tagged {
        producer,
        seq,
        check: checksum(producer, seq),
    }
}

/// Panics unless `msg` is intact.
fn verify(msg: &Tagged) {
    assert_eq!(
        msg.check,
        checksum(msg.producer, msg.seq),
        "corrupted message {msg:?}"
    );
}

/// The producers of the 3 x 3 test, and how many messages each sends.
const PRODUCERS: u64 = 3;
const PER_PRODUCER: u64 = 1_000_000;

/// The builder of the ring named `name`.
fn ring(name: &ShmName) -> Builder<Tagged> {
    Builder::new(name.as_str())
}

/// Starts `part` as a child process, its standard output piped to the parent.
fn spawn(part: &str, name: &ShmName, id: u64, count: u64, out: &str) -> Child {
    shm_testkit::child("child")
        .env("SHM_MPMC_CHILD", part)
        .env("SHM_MPMC_NAME", name.as_str())
        .env("SHM_MPMC_ID", id.to_string())
        .env("SHM_MPMC_COUNT", count.to_string())
        .env("SHM_MPMC_OUT", out)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Not a test: the body of a child process, selected by `SHM_MPMC_CHILD`.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    let Ok(part) = std::env::var("SHM_MPMC_CHILD") else {
        return;
    };
    let name = std::env::var("SHM_MPMC_NAME").unwrap();
    let id: u64 = std::env::var("SHM_MPMC_ID").unwrap().parse().unwrap();
    let count: u64 = std::env::var("SHM_MPMC_COUNT").unwrap().parse().unwrap();
    let builder = Builder::<Tagged>::new(name.as_str()).mode(OpenMode::Open);
    match part.as_str() {
        "produce" => {
            // Seven processes on as few as two cores: yield rather than spin.
            let mut tx = builder
                .wait_strategy(WaitStrategy::Yield)
                .producer()
                .unwrap();
            for seq in 0..count {
                tx.send(tagged(id, seq)).expect("consumers stay attached");
            }
        }
        "consume" => {
            // Receives until every producer is gone; checks each producer's order and
            // writes a bitmap of what it received per producer for the parent.
            let mut rx = builder
                .wait_strategy(WaitStrategy::Yield)
                .consumer()
                .unwrap();
            let mut next = vec![0u64; PRODUCERS as usize];
            let mut seen = vec![0u8; (PRODUCERS * PER_PRODUCER).div_ceil(8) as usize];
            loop {
                let msg = match rx.recv() {
                    Ok(msg) => msg,
                    Err(shm_ring::RecvError::Disconnected) => break,
                    Err(e) => panic!("consumer {id}: {e}"),
                };
                verify(&msg);
                let p = msg.producer as usize;
                assert!(
                    msg.seq >= next[p],
                    "consumer {id}: producer {p}'s message {} after {}",
                    msg.seq,
                    next[p]
                );
                next[p] = msg.seq + 1;
                let bit = msg.producer * PER_PRODUCER + msg.seq;
                seen[(bit / 8) as usize] |= 1 << (bit % 8);
            }
            eprintln!("consumer {id}: {:?} messages from each producer", next);
            std::fs::write(std::env::var("SHM_MPMC_OUT").unwrap(), seen).unwrap();
        }
        "hold-slot" => {
            // Sends `count` messages, then claims a slot and never publishes it.
            let mut tx = builder.producer().unwrap();
            for seq in 0..count {
                tx.send(tagged(id, seq)).unwrap();
            }
            let slot = tx.reserve().unwrap();
            say_holding(slot.position());
            hold_until_killed();
        }
        "hold-sample" => {
            // Receives `count` messages, then holds the next one in place for ever.
            let mut rx = builder.consumer().unwrap();
            for _ in 0..count {
                verify(&rx.recv_timeout(Duration::from_secs(10)).unwrap());
            }
            let guard = loop {
                match rx.try_recv_ref() {
                    Ok(guard) => break guard,
                    Err(TryRecvError::Empty) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            };
            say_holding(guard.position());
            hold_until_killed();
        }
        "park" => {
            // Parks in a blocking receive on an empty ring, until killed.
            let mut rx = builder
                .wait_strategy(WaitStrategy::Park)
                .consumer()
                .unwrap();
            say_holding(0);
            let got = rx.recv();
            panic!("nothing is sent to the parked consumer, yet it received {got:?}");
        }
        "park-producer" => {
            // Fills the ring, then parks in a blocking send on the full ring, until killed.
            let mut tx = builder
                .wait_strategy(WaitStrategy::Park)
                .producer()
                .unwrap();
            for seq in 0..count {
                tx.try_send(tagged(id, seq)).unwrap();
            }
            say_holding(count);
            let sent = tx.send(tagged(id, count));
            panic!("nothing is received from the full ring, yet the send returned {sent:?}");
        }
        other => panic!("unknown part {other}"),
    }
}

/// The same with the sides swapped: a producer killed while parked on a full ring stays
/// counted as a waiter of `not_full`; the consumer whose releases' wake-ups go idle
/// probes the producers and settles it (`parked_producers` back to 0).
#[test]
fn a_producer_killed_while_parked_stops_costing_wake_ups() {
    const CAPACITY: u64 = 64;
    let name = ShmName::new("dead-parked-producer");
    let mut rx = ring(&name)
        .capacity(CAPACITY)
        .participants(4)
        .mode(OpenMode::Create)
        .consumer()
        .unwrap();
    let mut tx = ring(&name).producer().unwrap();
    let mut parked = Reap(spawn("park-producer", &name, 2, CAPACITY, ""));
    assert_eq!(holding(parked.0.stdout.as_mut().unwrap()), CAPACITY);
    wait_for(Duration::from_secs(10), "the child, parked", || {
        (rx.stats().parked_producers == 1).then_some(())
    });
    parked.kill();
    assert_eq!(
        rx.stats().parked_producers,
        1,
        "a dead waiter stays counted"
    );
    // Each release is an idle wake-up while the dead one counts; 64 make the consumer
    // probe. The live producer refills what is released.
    for seq in 0..200 {
        let got = rx.try_recv().unwrap();
        verify(&got);
        tx.try_send(tagged(1, seq)).unwrap();
    }
    let stats = rx.stats();
    assert_eq!(
        (stats.parked_producers, stats.producers),
        (0, 1),
        "the dead parked producer settled: {stats:?}"
    );
}

/// A consumer killed while parked stays counted as a waiter of `not_empty`, so that
/// every publish made a `FUTEX_WAKE` that woke nobody. The producer that sees its
/// wake-ups go idle probes the consumers, and the probe settles the dead one's count:
/// the publishes after that make no syscall (`parked_consumers` back to 0).
#[test]
fn a_consumer_killed_while_parked_stops_costing_wake_ups() {
    let name = ShmName::new("dead-parked");
    let mut tx = ring(&name)
        .capacity(64)
        .participants(4)
        .mode(OpenMode::Create)
        .producer()
        .unwrap();
    let mut rx = ring(&name).consumer().unwrap();
    let mut parked = Reap(spawn("park", &name, 0, 0, ""));
    assert_eq!(holding(parked.0.stdout.as_mut().unwrap()), 0);
    wait_for(Duration::from_secs(10), "the child, parked", || {
        (tx.stats().parked_consumers == 1).then_some(())
    });
    parked.kill();
    assert_eq!(
        tx.stats().parked_consumers,
        1,
        "a dead waiter stays counted"
    );
    // Each message: one publish (an idle wake-up while the dead one counts) and one
    // release by the live consumer. 64 idle wake-ups make the producer probe.
    for seq in 0..200 {
        tx.try_send(tagged(1, seq)).unwrap();
        assert_eq!(rx.try_recv().map(|m| m.seq), Ok(seq));
    }
    let stats = tx.stats();
    assert_eq!(
        (stats.parked_consumers, stats.consumers),
        (0, 1),
        "the dead parked consumer settled: {stats:?}"
    );
}

#[test]
fn three_producers_three_consumers_each_message_exactly_once() {
    let name = ShmName::new("3x3");
    // The parent's producer keeps the ring connected until every child has attached.
    let keeper = ring(&name)
        .capacity(1024)
        .participants(8)
        .mode(OpenMode::Create)
        .producer()
        .unwrap();
    let outs: Vec<TempPath> = (0..3)
        .map(|k| TempPath::new(&format!("3x3-consumer-{k}-bits")))
        .collect();
    let mut consumers: Vec<Child> = outs
        .iter()
        .enumerate()
        .map(|(k, out)| {
            let out = out.path().to_str().expect("a UTF-8 temporary directory");
            spawn("consume", &name, k as u64, 0, out)
        })
        .collect();
    let mut producers: Vec<Child> = (0..PRODUCERS)
        .map(|id| spawn("produce", &name, id, PER_PRODUCER, ""))
        .collect();
    for p in &mut producers {
        wait_child(p, Duration::from_secs(300));
    }
    drop(keeper);
    for c in &mut consumers {
        wait_child(c, Duration::from_secs(60));
    }
    let bitmaps: Vec<Vec<u8>> = outs
        .iter()
        .map(|out| std::fs::read(out.path()).unwrap())
        .collect();
    let mut received = 0u64;
    for byte in 0..bitmaps[0].len() {
        let mut union = 0u8;
        for bits in &bitmaps {
            assert_eq!(
                union & bits[byte],
                0,
                "a message received twice (byte {byte})"
            );
            union |= bits[byte];
        }
        received += u64::from(union.count_ones());
        assert_eq!(union, 0xff, "a message lost (byte {byte})");
    }
    assert_eq!(received, PRODUCERS * PER_PRODUCER);
}

#[test]
fn killed_producer_holding_a_slot_is_skipped_and_nothing_else_lost() {
    let name = ShmName::new("killp");
    let mut rx = ring(&name)
        .capacity(64)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Park)
        .consumer()
        .unwrap();
    let mut holder = Reap(spawn("hold-slot", &name, 0, 20, ""));
    let held = holding(holder.0.stdout.as_mut().unwrap());
    assert_eq!(held, 20);
    // A second producer sends behind the held position, and leaves.
    let mut sender = spawn("produce", &name, 1, 30, "");
    wait_child(&mut sender, Duration::from_secs(10));
    holder.kill();
    let mut next = [0u64; 2];
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(msg) => {
                verify(&msg);
                let p = msg.producer as usize;
                assert_eq!(msg.seq, next[p], "producer {p}: lost or reordered");
                next[p] += 1;
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("{e} after {next:?}"),
        }
    }
    assert_eq!(next, [20, 30], "every published message, once");
    let stats = rx.stats();
    assert_eq!(
        stats.skipped, 1,
        "the dead producer's slot, once: {stats:?}"
    );
    assert_eq!((stats.producers, stats.reclaimed), (0, 0));
}

#[test]
fn killed_consumer_holding_a_message_is_reclaimed() {
    let name = ShmName::new("killc");
    let ring = ring(&name)
        .capacity(16)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Park);
    let mut tx = ring.producer().unwrap();
    let ring = ring.mode(OpenMode::Open);
    let mut holder = Reap(spawn("hold-sample", &name, 0, 10, ""));
    for seq in 0..11 {
        tx.send(tagged(0, seq)).unwrap();
    }
    let held = holding(holder.0.stdout.as_mut().unwrap());
    assert_eq!(held, 10);
    let mut rx = ring.consumer().unwrap();
    holder.kill();
    // The held slot is needed again at position 26: the producer, blocked, must find
    // its holder dead and reclaim it.
    for seq in 11..100 {
        tx.send_timeout(tagged(0, seq), Duration::from_secs(10))
            .unwrap();
        let msg = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        verify(&msg);
        assert_eq!(msg.seq, seq, "message 10 went with the dead consumer");
    }
    let stats = tx.stats();
    assert_eq!(stats.reclaimed, 1, "{stats:?}");
    assert_eq!((stats.producers, stats.consumers, stats.skipped), (1, 1, 0));
}

#[test]
fn participant_table_full_until_a_holder_dies() {
    let name = ShmName::new("full");
    let ring = ring(&name)
        .participants(2)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Park);
    let mut tx = ring.producer().unwrap();
    let ring = ring.mode(OpenMode::Open);
    tx.send(tagged(0, 0)).unwrap();
    let mut holder = Reap(spawn("hold-sample", &name, 0, 0, ""));
    assert_eq!(holding(holder.0.stdout.as_mut().unwrap()), 0);
    assert!(matches!(
        ring.consumer(),
        Err(Error::ParticipantsFull { limit: 2 })
    ));
    holder.kill();
    // The newcomer takes the dead consumer's entry and settles its claim first.
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.stats().reclaimed, 1);
    assert_eq!(rx.stats().consumers, 1);
    tx.send(tagged(0, 1)).unwrap();
    assert_eq!(rx.try_recv().map(|m| m.seq), Ok(1));
}

#[test]
fn mismatched_rings_are_refused() {
    let name = ShmName::new("mismatch");
    let _tx = ring(&name)
        .capacity(8)
        .participants(4)
        .mode(OpenMode::Create)
        .producer()
        .unwrap();
    assert!(matches!(
        ring(&name).participants(5).consumer(),
        Err(Error::ParticipantsMismatch {
            expected: 5,
            found: 4
        })
    ));
    assert!(matches!(
        Builder::<u64>::new(name.as_str()).consumer(),
        Err(Error::Segment(shm_alloc::Error::Mismatch { .. }))
    ));
    assert!(matches!(
        shm_ring::spsc::Builder::<Tagged>::new(name.as_str()).consumer(),
        Err(shm_ring::Error::Segment(shm_alloc::Error::Mismatch { .. }))
    ));
}

#[test]
fn corrupted_limit_and_stamps_in_the_file_are_reported() {
    use std::os::unix::fs::FileExt;

    let name = ShmName::new("corrupt");
    let tx = ring(&name)
        .capacity(8)
        .participants(4)
        .mode(OpenMode::Create)
        .producer()
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .unwrap();
    let data = Segment::HEADER_LEN as u64;
    // The first slot's stamp (after the 1024-byte control block and 4 entries of 128
    // bytes): a lap far ahead of every position.
    let slot0 = data + 1024 + 4 * 128;
    file.write_all_at(&((40u64 << 2) | 1).to_ne_bytes(), slot0)
        .unwrap();
    let mut rx = ring(&name).consumer().unwrap();
    assert!(matches!(
        rx.try_recv(),
        Err(TryRecvError::Corrupted(shm_ring::Corruption::Slot {
            position: 0,
            ..
        }))
    ));
    drop((tx, rx));
    // The participant limit is the header's `entries` (offset 20), which its checksum
    // covers: a near-right limit (5 for a table of 4, which would lay the slots over
    // the wrong bytes) is refused at open, never laid out.
    let entries = 20;
    file.write_all_at(&5u32.to_ne_bytes(), entries).unwrap();
    assert!(matches!(
        ring(&name).consumer(),
        Err(Error::Segment(shm_alloc::Error::Corrupted { what, .. })) if what.contains("checksum")
    ));
    // Written as if by the creator (the checksum made right): out of range, refused.
    file.write_all_at(&5000u32.to_ne_bytes(), entries).unwrap();
    reseal(&file);
    assert!(matches!(
        ring(&name).consumer(),
        Err(Error::Corrupted(shm_ring::Corruption::State {
            found: 5000,
            ..
        }))
    ));
    // The limit as created, and the stamp of lap 0, empty: the ring works again.
    file.write_all_at(&4u32.to_ne_bytes(), entries).unwrap();
    reseal(&file);
    file.write_all_at(&0u64.to_ne_bytes(), slot0).unwrap();
    let mut tx = ring(&name).producer().unwrap();
    let mut rx = ring(&name).consumer().unwrap();
    let sent = Tagged {
        producer: 1,
        seq: 7,
        check: 8,
    };
    tx.try_send(sent).unwrap();
    assert_eq!(rx.try_recv().map(|m| m.seq), Ok(7));
}

/// The participant table holds 1 to `MAX_PARTICIPANTS` entries, both limits included:
/// at creation, at open, and in `data_len`; 0 and one more are refused with the count.
#[test]
fn participant_tables_of_one_to_the_largest() {
    use shm_ring::mpmc::{self, MAX_PARTICIPANTS};
    for n in [1, MAX_PARTICIPANTS] {
        assert!(mpmc::data_len::<u64>(4, n).is_ok(), "{n}");
        let name = ShmName::new("table-edges");
        let ring = Builder::<u64>::new(name.as_str())
            .capacity(4)
            .participants(n);
        let tx = ring.clone().mode(OpenMode::Create).producer().unwrap();
        let opened = Builder::<u64>::new(name.as_str())
            .mode(OpenMode::Open)
            .producer();
        match (n, opened) {
            (1, Err(Error::ParticipantsFull { limit: 1 })) => {}
            (1, other) => panic!("a table of one, already held: {other:?}"),
            (_, other) => assert!(other.is_ok(), "{other:?}"),
        }
        drop(tx);
    }
    for n in [0, MAX_PARTICIPANTS + 1] {
        assert!(matches!(
            mpmc::data_len::<u64>(4, n),
            Err(Error::InvalidParticipants(found)) if found == n
        ));
        let name = ShmName::new("table-off");
        let refused = Builder::<u64>::new(name.as_str())
            .capacity(4)
            .participants(n)
            .producer();
        assert!(
            matches!(refused, Err(Error::InvalidParticipants(found)) if found == n),
            "{refused:?}"
        );
    }
}

/// A message held in place shows its position in its `Debug` form.
#[test]
fn a_recv_guard_shows_its_position() {
    let (mut tx, mut rx) = shm_ring::mpmc::channel::<u64>(4).unwrap();
    tx.try_send(7).unwrap();
    tx.try_send(8).unwrap();
    assert_eq!(rx.try_recv(), Ok(7));
    let guard = rx.try_recv_ref().unwrap();
    assert_eq!(format!("{guard:?}"), "RecvGuard { position: 1, .. }");
}
