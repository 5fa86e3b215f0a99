//! Zero-copy fan-out: pool chunks through a broadcast ring, read in place by every
//! subscriber, in one process and between real processes, with a `SIGKILL`.
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_FANOUT_CHILD=<part>`, `SHM_FANOUT_RING`,
//! `SHM_FANOUT_POOL`, `SHM_FANOUT_ID`, `SHM_FANOUT_COUNT`).

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use shm_alloc::{Pool, ShmOffset};
use shm_ring::OpenMode;
use shm_ring::broadcast::{
    self, Builder, ChunkPublisher, ChunkSample, ChunkSubscriber, Overflow, RecvTimeoutError, Start,
    TryRecvError,
    chunks::{MAX_HELD, Reclaimed},
};
use shm_ring::loan::RecvError;
use shm_sync::WaitStrategy;
use shm_testkit::{Reap, ShmName, hold_until_killed, holding, say_holding, wait_child, wait_for};

/// SplitMix64's finaliser: differs for every number.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const PAGE: usize = 4096;

/// Marks every 4 KiB page of `payload` with `seq` and a checksum of it and the page.
fn mark(payload: &mut [u8], seq: u64) {
    for (page, bytes) in payload.chunks_mut(PAGE).enumerate() {
        bytes[..8].copy_from_slice(&seq.to_le_bytes());
        bytes[8..16].copy_from_slice(&mix(seq ^ page as u64).to_le_bytes());
    }
}

/// The number every page of `payload` is marked with; panics on a page marked otherwise
/// (a chunk written while it was read, or another chunk).
fn verify(payload: &[u8]) -> u64 {
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let seq = word(payload, 0);
    for (page, bytes) in payload.chunks(PAGE).enumerate() {
        assert_eq!(word(bytes, 0), seq, "page {page} of message {seq}");
        assert_eq!(
            word(bytes, 8),
            mix(seq ^ page as u64),
            "page {page} of {seq}"
        );
    }
    seq
}

fn pool(name: &ShmName, chunk_size: u64, chunks: u32) -> Pool {
    Pool::builder(name.as_str())
        .class(chunk_size, chunks)
        .create()
        .unwrap()
}

fn publish(publisher: &mut ChunkPublisher<'_>, seq: u64, len: usize) {
    let mut chunk = publisher.loan(len).unwrap();
    mark(chunk.as_mut_slice(), seq);
    publisher.try_send(chunk).unwrap();
}

/// Three subscribers read each chunk in place, the same bytes at the same address; once
/// every message is read and the publisher reclaims, every chunk is free again.
#[test]
fn every_subscriber_reads_the_one_chunk_in_place() {
    let name = ShmName::new("fanout-inplace");
    let pool = pool(&name, 8192, 16);
    let (publisher, first) = broadcast::channel::<ShmOffset>(4, Overflow::Lap).unwrap();
    let subscribers: Vec<ChunkSubscriber<'_>> =
        [Ok(first), publisher.subscribe(), publisher.subscribe()]
            .into_iter()
            .map(|s| ChunkSubscriber::new(s.unwrap(), &pool))
            .collect();
    let mut publisher = ChunkPublisher::new(publisher, &pool);
    for seq in 0..100 {
        publish(&mut publisher, seq, 8192);
        let samples: Vec<ChunkSample<'_>> =
            subscribers.iter().map(|s| s.try_recv().unwrap()).collect();
        for sample in &samples {
            assert_eq!(verify(sample), seq);
            assert_eq!(sample.as_ptr(), samples[0].as_ptr(), "one chunk, in place");
        }
    }
    let stats = &pool.stats().classes[0];
    assert_eq!(stats.shared, 4, "the ring names its last four chunks");
    assert_eq!(stats.free, 12);
    let reclaimed = publisher.reclaim();
    assert_eq!((reclaimed.retired, reclaimed.hazards), (4, 0));
    assert!(pool.stats().all_free(), "{:?}", pool.stats());
    drop(subscribers);
}

/// A chunk retired while a subscriber holds it (its slot overwritten a lap later) stays
/// intact until that subscriber drops its sample, which frees it; a subscriber that had
/// not read it is told it lagged, and never reads the chunk loaned again in its place.
#[test]
fn a_retired_chunk_lives_until_its_last_reader_drops_it() {
    let name = ShmName::new("fanout-retired");
    let pool = pool(&name, 4096, 8);
    let (publisher, holder) = broadcast::channel::<ShmOffset>(2, Overflow::Lap).unwrap();
    let late = ChunkSubscriber::new(publisher.subscribe().unwrap(), &pool);
    let holder = ChunkSubscriber::new(holder, &pool);
    let mut publisher = ChunkPublisher::new(publisher, &pool);
    publish(&mut publisher, 0, 4096);
    let held = holder.try_recv().unwrap();
    for seq in 1..=4 {
        publish(&mut publisher, seq, 4096);
    }
    let stats = pool.stats().classes[0];
    assert_eq!((stats.retired, stats.shared), (1, 2), "{stats:?}");
    // Four loans after it, in a pool of eight: the held chunk was not loaned again.
    assert_eq!(verify(&held), 0);
    drop(held);
    let stats = pool.stats().classes[0];
    assert_eq!((stats.retired, stats.free), (0, 6), "{stats:?}");
    assert!(matches!(
        late.try_recv(),
        Err(RecvError::Ring(TryRecvError::Lagged { missed: 3 }))
    ));
    assert_eq!(verify(&late.try_recv().unwrap()), 3);
    assert_eq!(verify(&late.try_recv().unwrap()), 4);
    assert!(matches!(
        late.try_recv(),
        Err(RecvError::Ring(TryRecvError::Empty))
    ));
}

/// A subscriber holds at most `MAX_HELD` samples: the next receive says so and takes
/// nothing; once one is dropped, it receives the next message.
#[test]
fn a_subscriber_holds_at_most_max_held_samples() {
    let name = ShmName::new("fanout-held");
    let pool = pool(&name, 128, 32);
    let (publisher, subscriber) = broadcast::channel::<ShmOffset>(16, Overflow::Lap).unwrap();
    let subscriber = ChunkSubscriber::new(subscriber, &pool);
    let mut publisher = ChunkPublisher::new(publisher, &pool);
    for seq in 0..=MAX_HELD as u64 {
        publish(&mut publisher, seq, 128);
    }
    let mut held: Vec<_> = (0..MAX_HELD)
        .map(|_| subscriber.try_recv().unwrap())
        .collect();
    assert_eq!(subscriber.held(), MAX_HELD);
    assert!(matches!(
        subscriber.try_recv(),
        Err(RecvError::TooManySamples { limit: MAX_HELD })
    ));
    held.remove(3);
    assert_eq!(verify(&subscriber.try_recv().unwrap()), MAX_HELD as u64);
    drop(held);
    assert_eq!(subscriber.held(), 0);
}

/// A pool with no more chunks than the ring has slots: a loan that finds the class empty
/// retires what every subscriber has read and goes on; a subscriber that joins at the
/// oldest message afterwards finds those messages lost, never their reused chunks.
#[test]
fn a_loan_from_an_empty_class_reclaims_what_every_subscriber_read() {
    let name = ShmName::new("fanout-exhausted");
    let pool = pool(&name, 4096, 4);
    let (publisher, reader) = broadcast::channel::<ShmOffset>(4, Overflow::Lap).unwrap();
    let reader = ChunkSubscriber::new(reader, &pool);
    let mut publisher = ChunkPublisher::new(publisher, &pool);
    for seq in 0..4 {
        publish(&mut publisher, seq, 4096);
        assert_eq!(verify(&reader.try_recv().unwrap()), seq);
    }
    assert_eq!(pool.stats().classes[0].free, 0);
    publish(&mut publisher, 4, 4096);
    assert_eq!(verify(&reader.try_recv().unwrap()), 4);
}

fn spawn(part: &str, ring: &ShmName, pool: &ShmName, id: u32, count: u64) -> Reap {
    Reap(
        shm_testkit::child("child")
            .env("SHM_FANOUT_CHILD", part)
            .env("SHM_FANOUT_RING", ring.as_str())
            .env("SHM_FANOUT_POOL", pool.as_str())
            .env("SHM_FANOUT_ID", id.to_string())
            .env("SHM_FANOUT_COUNT", count.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Not a test: the body of a child process, selected by `SHM_FANOUT_CHILD`.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    let Ok(part) = std::env::var("SHM_FANOUT_CHILD") else {
        return;
    };
    let var = |v: &str| std::env::var(v).unwrap();
    let ring = var("SHM_FANOUT_RING");
    let id: u32 = var("SHM_FANOUT_ID").parse().unwrap();
    let count: u64 = var("SHM_FANOUT_COUNT").parse().unwrap();
    let pool = Pool::builder(var("SHM_FANOUT_POOL").as_str())
        .open()
        .unwrap();
    let subscriber = Builder::<ShmOffset>::new(ring.as_str())
        .mode(OpenMode::Open)
        .wait_strategy(WaitStrategy::Yield)
        .subscriber_with_id(id)
        .unwrap();
    let subscriber = ChunkSubscriber::new(subscriber, &pool);
    // Each sample is checked when received and again when dropped, some messages later:
    // a chunk freed or written while held fails the second check.
    let keep = if part == "hold-and-die" { MAX_HELD } else { 2 };
    let mut window: VecDeque<(u64, ChunkSample<'_>)> = VecDeque::new();
    let mut next = 0;
    loop {
        if window.len() == keep {
            let (seq, old) = window.pop_front().unwrap();
            assert_eq!(verify(&old), seq, "subscriber {id}: a held chunk changed");
        }
        match subscriber.recv_deadline(None) {
            Ok(sample) => {
                assert_eq!(verify(&sample), next, "subscriber {id}: out of order");
                next += 1;
                window.push_back((next - 1, sample));
                if part == "hold-and-die" && next == count {
                    say_holding(subscriber.held() as u64);
                    hold_until_killed();
                }
            }
            Err(RecvError::Ring(RecvTimeoutError::Disconnected)) => break,
            Err(e) => panic!("subscriber {id} at {next}: {e}"),
        }
    }
    for (seq, sample) in &window {
        assert_eq!(verify(sample), *seq);
    }
    assert_eq!(next, count, "subscriber {id}: messages received");
    assert_eq!(subscriber.stats().missed, 0);
}

/// The fan-out of 1 MiB chunks to four subscriber processes under `Block`: each reads
/// every chunk in place, in order, and holds some while more arrive (each checked again
/// when dropped). One is killed holding `MAX_HELD` samples; the publisher goes on, and
/// the others lose nothing. Once all is read, a publisher's reclaim clears the killed
/// one's hazard words and retires what the ring still names: the pool is full again.
#[test]
fn four_processes_read_1_mib_chunks_in_place_and_a_killed_ones_samples_are_reclaimed() {
    const CAPACITY: u64 = 8;
    const COUNT: u64 = 300;
    const STOP_AT: u64 = 100;
    const SUBSCRIBERS: u32 = 4;
    let ring = ShmName::new("fanout-procs");
    let pool_name = ShmName::new("fanout-procs-pool");
    let chunks = CAPACITY as u32 + SUBSCRIBERS * MAX_HELD as u32 + 1;
    let pool = pool(&pool_name, 1 << 20, chunks);
    let builder = Builder::<ShmOffset>::new(ring.as_str())
        .capacity(CAPACITY)
        .subscribers(SUBSCRIBERS)
        .overflow(Overflow::Block)
        .mode(OpenMode::Create)
        .wait_strategy(WaitStrategy::Yield);
    let mut publisher = ChunkPublisher::new(builder.publisher().unwrap(), &pool);
    let mut readers: Vec<Reap> = (0..SUBSCRIBERS - 1)
        .map(|id| spawn("read", &ring, &pool_name, id, COUNT))
        .collect();
    let mut doomed = spawn("hold-and-die", &ring, &pool_name, SUBSCRIBERS - 1, STOP_AT);
    wait_for(Duration::from_secs(30), "four subscribers attached", || {
        (publisher.publisher().stats().subscribers == SUBSCRIBERS).then_some(())
    });
    let killer = std::thread::spawn(move || {
        let held = holding(doomed.0.stdout.as_mut().unwrap());
        doomed.kill();
        held
    });
    for seq in 0..COUNT {
        let mut chunk = publisher.loan(1 << 20).unwrap();
        mark(chunk.as_mut_slice(), seq);
        publisher.send(chunk).unwrap();
    }
    assert_eq!(killer.join().unwrap(), MAX_HELD as u64);
    // The killed subscriber's samples: long retired (their slots overwritten), held only
    // by its hazard words, which the reclaim clears under its lock, freeing each.
    let reclaimed = publisher.reclaim();
    assert_eq!(
        (reclaimed.hazards, reclaimed.freed),
        (MAX_HELD as u64, MAX_HELD as u64),
        "{reclaimed:?}"
    );
    drop(publisher);
    for reader in &mut readers {
        wait_child(&mut reader.0, Duration::from_secs(60));
    }
    let mut publisher = ChunkPublisher::new(
        Builder::<ShmOffset>::new(ring.as_str())
            .mode(OpenMode::Open)
            .publisher()
            .unwrap(),
        &pool,
    );
    // What the ring still names, now read by every live subscriber (there are none):
    // retired by this reclaim, or by the first publisher's as it left.
    let reclaimed = publisher.reclaim();
    assert_eq!(reclaimed.hazards, 0, "{reclaimed:?}");
    assert!(reclaimed.retired <= CAPACITY, "{reclaimed:?}");
    let stats = pool.stats();
    assert!(stats.all_free(), "{stats:?}");
    // Every chunk is loaned once more, and only once: none was freed twice.
    let all: Vec<_> = (0..chunks).map(|_| pool.loan(1 << 20).unwrap()).collect();
    assert!(pool.loan(1 << 20).is_err());
    drop(all);
    assert_eq!(publisher.reclaim(), Reclaimed::default());
    // A subscriber that joins at the oldest message now finds each message's chunk
    // retired: each is lost, counted, never read.
    let late = ChunkSubscriber::new(
        Builder::<ShmOffset>::new(ring.as_str())
            .start(Start::Oldest)
            .subscriber()
            .unwrap(),
        &pool,
    );
    for _ in 0..CAPACITY {
        assert!(matches!(
            late.try_recv(),
            Err(RecvError::Ring(TryRecvError::Lagged { missed: 1 }))
        ));
    }
    assert!(matches!(
        late.try_recv(),
        Err(RecvError::Ring(TryRecvError::Empty))
    ));
    assert_eq!(late.stats().missed, CAPACITY);
}
