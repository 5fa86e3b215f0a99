//! Zero-copy loans between real processes: chunks of a pool segment written in place by
//! one process, sent as offsets through an SPSC ring in another mapped file, and read in
//! place by another process; and what a `SIGKILL` of the reader leaves behind.
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_LOAN_CHILD=<part>`, `SHM_LOAN_POOL`, `SHM_LOAN_RING`,
//! `SHM_LOAN_COUNT`). A child that holds chunks on purpose says so on its standard
//! output (`holding <n>`) and then sleeps until it is killed.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use shm_alloc::pool::Pool;
use shm_alloc::{Error as AllocError, ShmOffset};
use shm_ring::loan;
use shm_ring::spsc::Builder;
use shm_testkit::{Reap, ShmName, hold_until_killed, holding, say_holding, wait_child, wait_for};
use zerocopy::FromBytes;

const FRAME: usize = 1 << 20;
const FRAMES: u64 = 10_000;

/// Unique segment names for a pool and its ring, removed when dropped.
struct Names {
    pool: ShmName,
    ring: ShmName,
}

impl Names {
    fn new(tag: &str) -> Self {
        Self {
            pool: ShmName::new(&format!("loan-{tag}-pool")),
            ring: ShmName::new(&format!("loan-{tag}-ring")),
        }
    }
}

/// Fills a frame in place: word 0 the sequence number, word 1 the wrapping sum of the
/// rest, the rest a pattern that differs for every frame.
fn fill(frame: &mut [u8], seq: u64) {
    let words = <[u64]>::mut_from_bytes(frame).expect("chunks are aligned to 128 bytes");
    let mut sum = 0u64;
    let base = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for (i, word) in words.iter_mut().enumerate().skip(2) {
        *word = base ^ i as u64;
        sum = sum.wrapping_add(*word);
    }
    words[0] = seq;
    words[1] = sum;
}

/// Checks a frame in place; panics with what is wrong.
fn verify(frame: &[u8], seq: u64) {
    assert_eq!(frame.len(), FRAME, "frame {seq} has the wrong length");
    let words = <[u64]>::ref_from_bytes(frame).expect("chunks are aligned to 128 bytes");
    assert_eq!(words[0], seq, "frames out of order");
    let base = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    assert_eq!(
        words[2],
        base ^ 2,
        "frame {seq} starts with another frame's bytes"
    );
    assert_eq!(
        words[words.len() - 1],
        base ^ (words.len() as u64 - 1),
        "frame {seq} ends with another frame's bytes"
    );
    let sum = words[2..].iter().fold(0u64, |s, w| s.wrapping_add(*w));
    assert_eq!(words[1], sum, "frame {seq} is corrupted");
}

fn spawn(part: &str, names: &Names, count: u64) -> Child {
    shm_testkit::child("child")
        .env("SHM_LOAN_CHILD", part)
        .env("SHM_LOAN_POOL", names.pool.as_str())
        .env("SHM_LOAN_RING", names.ring.as_str())
        .env("SHM_LOAN_COUNT", count.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
#[ignore = "child process entry point, started by the other tests"]
fn child() {
    let env = |key: &str| std::env::var(key).expect("run by a parent test");
    let pool = Pool::builder(env("SHM_LOAN_POOL").as_str()).open().unwrap();
    let rx = Builder::<ShmOffset>::new(env("SHM_LOAN_RING").as_str())
        .consumer()
        .unwrap();
    let mut rx = loan::Receiver::new(rx, &pool);
    let count: u64 = env("SHM_LOAN_COUNT").parse().unwrap();
    match env("SHM_LOAN_CHILD").as_str() {
        "reader" => {
            for seq in 0..count {
                let sample = rx
                    .recv_deadline(&pool, Some(Instant::now() + Duration::from_secs(60)))
                    .expect("the producer sends every frame, each received once");
                verify(&sample, seq);
            }
        }
        "holder" => {
            // Receive `count` samples and keep them, and loan one chunk of its own.
            let mut held = Vec::new();
            for _ in 0..count {
                let deadline = Instant::now() + Duration::from_secs(60);
                held.push(rx.recv_deadline(&pool, Some(deadline)).unwrap());
            }
            let loaned = pool.loan(100).unwrap();
            say_holding(held.len() as u64 + 1);
            let _kept = (held, loaned);
            hold_until_killed();
        }
        other => panic!("unknown part {other}"),
    }
}

/// 10,000 frames of 1 MiB, each written in place by this process, sent as a 16-byte
/// offset through a ring of 4, verified in place by the child (sequence, pattern at
/// both ends, checksum of every word); at the end every chunk is free again.
#[test]
fn ten_thousand_1mib_frames_are_verified_in_place_and_the_pool_is_full_after() {
    let names = Names::new("frames");
    let pool = Pool::builder(names.pool.as_str())
        .class(FRAME as u64, 8)
        .participants(4)
        .create()
        .unwrap();
    let mut tx = loan::Sender::new(
        Builder::<ShmOffset>::new(names.ring.as_str())
            .capacity(4)
            .producer()
            .unwrap(),
    );
    let mut reader = Reap(spawn("reader", &names, FRAMES));
    let reader = &mut reader.0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for seq in 0..FRAMES {
        // At most 4 in the ring, 1 held by the reader and this one out: 8 never run out.
        let mut frame = pool
            .loan(FRAME)
            .expect("8 chunks cover the ring and the reader");
        fill(frame.as_mut_slice(), seq);
        tx.send_deadline(frame, Some(deadline))
            .unwrap_or_else(|e| panic!("frame {seq} not sent: {e}"));
    }
    wait_child(reader, Duration::from_secs(120));
    let stats = pool.stats();
    assert!(stats.all_free(), "chunks left out: {stats:?}");
    assert_eq!(stats.classes[0].chunks, 8);
}

/// The reader is killed while it holds 3 samples and 1 loan, with 2 more chunks in flight
/// to it in the ring. A participant that joins afterwards reclaims all 6, each once; the
/// offsets still in the ring are then refused as stale.
#[test]
fn killed_reader_holding_samples_gets_every_chunk_back_once() {
    let names = Names::new("kill");
    let pool = Pool::builder(names.pool.as_str())
        .class(4096, 8)
        .class(FRAME as u64, 6)
        .participants(4)
        .create()
        .unwrap();
    let mut tx = loan::Sender::new(
        Builder::<ShmOffset>::new(names.ring.as_str())
            .capacity(8)
            .producer()
            .unwrap(),
    );
    let mut holder = Reap(spawn("holder", &names, 3));
    // Wait for the child to bind its pool participant, then send 5: it takes 3.
    for seq in 0..5 {
        let mut frame = pool.loan(FRAME).unwrap();
        fill(frame.as_mut_slice(), seq);
        if seq == 0 {
            // Chunks sent before the child binds are in flight to no one; wait until the
            // ring's consumer has attached and bound (it binds before receiving).
            wait_for(Duration::from_secs(30), "the child's pool, bound", || {
                tx.receiver_bound(&pool).then_some(())
            });
        }
        tx.try_send(frame).unwrap();
    }
    assert_eq!(holding(holder.0.stdout.as_mut().unwrap()), 4);
    let before = pool.stats();
    let frames = before.classes[1];
    assert_eq!(
        (frames.held, frames.in_flight, before.classes[0].loaned),
        (3, 2, 1),
        "{before:?}"
    );

    holder.kill();

    // A newcomer joins: its join reclaims the dead participant.
    let newcomer = Pool::builder(names.pool.as_str()).open().unwrap();
    let after = pool.stats();
    assert!(after.all_free(), "chunks left out: {after:?}");
    // None twice: nothing is left to reclaim, and each class gives out each chunk once.
    assert_eq!(pool.reclaim_dead().unwrap().chunks, 0);
    for (class, stats) in after.classes.iter().enumerate() {
        let len = stats.chunk_size as usize;
        let mut loans = Vec::new();
        loop {
            match newcomer.loan(len) {
                Ok(chunk) => loans.push(chunk),
                Err(AllocError::PoolExhausted { chunk_size, .. }) => {
                    assert_eq!(chunk_size, stats.chunk_size);
                    break;
                }
                Err(e) => panic!("class {class}: {e}"),
            }
        }
        // Every chunk of the class, each once: as many loans as chunks, all different.
        assert_eq!(loans.len() as u64, stats.chunks, "class {class}");
        let mut offsets: Vec<u64> = loans.iter().map(|c| c.offset().offset()).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(
            offsets.len(),
            loans.len(),
            "class {class}: a chunk loaned twice"
        );
    }
    // The 2 offsets still in the ring name chunks that were reclaimed: refused.
    drop(tx);
    let mut rx = Builder::<ShmOffset>::new(names.ring.as_str())
        .consumer()
        .unwrap();
    for _ in 0..2 {
        let offset = rx.try_recv().unwrap();
        assert!(matches!(
            pool.receive(offset),
            Err(AllocError::StaleOffset { .. })
        ));
    }
}

/// The channel a `bound` child binds its pool participant to.
const BOUND_CHANNEL: u64 = 0x5eed;

#[test]
#[ignore = "child process entry point, started by the other tests"]
fn bound_child() {
    let pool = Pool::builder(std::env::var("SHM_LOAN_POOL").unwrap().as_str())
        .open()
        .unwrap();
    pool.bind_channel(BOUND_CHANNEL);
    say_holding(0);
    hold_until_killed();
}

/// A pool of 8 chunks of 4 KiB at `names.pool`, and a child process that has joined it
/// and bound its participant to `BOUND_CHANNEL`: the pool, the child, and the child's
/// participant as the pool's lookup finds it.
fn pool_with_a_bound_child(names: &Names) -> (Pool, Reap, u32) {
    let pool = Pool::builder(names.pool.as_str())
        .class(4096, 8)
        .participants(4)
        .create()
        .unwrap();
    let mut child = Reap(
        shm_testkit::child("bound_child")
            .env("SHM_LOAN_POOL", names.pool.as_str())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(holding(child.0.stdout.as_mut().unwrap()), 0);
    let receiver = pool
        .channel_receiver(BOUND_CHANNEL)
        .expect("the child bound its participant");
    (pool, child, receiver)
}

/// A killed participant's chunks, and only its, come back to the reclaim that finds it
/// dead: the two chunks in flight to it are freed and counted, and the survivor's own
/// loan, taken first (so the sweep meets it first), stays loaned. Catches a reclaim that
/// sweeps the wrong holder's chunks, or miscounts what it freed.
#[test]
fn reclaim_returns_a_killed_participants_chunks_and_counts_them() {
    let names = Names::new("count");
    let (pool, mut child, receiver) = pool_with_a_bound_child(&names);
    let kept = pool.loan(100).unwrap();
    let sent: Vec<ShmOffset> = (0..2)
        .map(|_| pool.loan(100).unwrap().into_offset_for(receiver))
        .collect();
    child.kill();

    let reclaimed = pool.reclaim_dead().unwrap();
    assert_eq!(
        (reclaimed.participants, reclaimed.chunks),
        (vec![receiver], 2)
    );
    let stats = pool.stats().classes[0];
    assert_eq!(
        (stats.free, stats.loaned, stats.in_flight),
        (7, 1, 0),
        "{stats:?}"
    );
    for offset in sent {
        assert!(matches!(
            pool.receive(offset),
            Err(AllocError::StaleOffset { .. })
        ));
    }
    drop(kept);
    assert!(pool.stats().all_free(), "{:?}", pool.stats());
}

/// A sender that looked its receiver up before the receiver died, and marks a chunk in
/// flight to it after a reclaim had already cleared the receiver's entry: the next
/// reclaim returns that chunk (the normal course of a crash, as a sender notices the
/// death only when the ring fills).
#[test]
fn a_chunk_sent_to_a_receiver_reclaimed_before_is_reclaimed_by_the_next_reclaim() {
    let names = Names::new("late");
    let (pool, mut child, receiver) = pool_with_a_bound_child(&names);
    child.kill();
    let first = pool.reclaim_dead().unwrap();
    assert_eq!((first.participants, first.chunks), (vec![receiver], 0));
    // Looked up before the death, marked after the reclaim.
    let offset = pool.loan(100).unwrap().into_offset_for(receiver);
    assert_eq!(pool.stats().classes[0].in_flight, 1);
    let second = pool.reclaim_dead().unwrap();
    assert_eq!(second.chunks, 1, "the orphan in flight to {receiver}");
    let stats = pool.stats();
    assert!(stats.all_free(), "chunks left out: {stats:?}");
    assert!(matches!(
        pool.receive(offset),
        Err(AllocError::StaleOffset { .. })
    ));
}
