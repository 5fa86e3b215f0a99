//! The MPMC ring with one producer and one consumer, against the SPSC ring and against
//! crossbeam's in-process `ArrayQueue` (also Vyukov's bounded MPMC queue), in one run:
//!
//! - `mpmc/throughput/<queue>`: a producer thread streams `u64`s to a consumer thread,
//!   one per call, through 4096 slots; every value is checked in order. Reported as
//!   messages per second.
//! - `mpmc/round-trip`: the main thread sends a `u64` through one queue, an echo thread
//!   sends it back through a second; time per round trip. Measured in interleaved rounds
//!   (every queue in every round) rather than by criterion, and printed with the median
//!   of the per-round ratios.
//!
//! The two threads are pinned to the recommended core pair (`shm_sync::affinity`). Our
//! rings live in segments under `/dev/shm`, as between processes; `ArrayQueue` lives on
//! the heap. All sides busy-poll with `try_*` calls.
//!
//! Run: `cargo bench --bench mpmc`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use shm_transport::alloc::{Location, Segment};
use shm_transport::ring::{OpenMode, mpmc, spsc};
use shm_transport::sync::affinity::{self, CorePair};
use shm_transport::sync::atomic::{AtomicU64, Ordering, spin_loop};
use shm_transport::sync::{CachePadded, WaitStrategy};

const CAPACITY: u64 = 4096;

/// The sentinel that stops an echo thread.
const STOP: u64 = u64::MAX;

/// The sending end of a queue under test (object-safe: one harness drives every
/// queue, each through the same dynamic call).
trait Tx: Send {
    fn try_push(&mut self, value: u64) -> bool;
}

/// The receiving end of a queue under test.
trait Rx: Send {
    fn try_pop(&mut self) -> Option<u64>;
}

impl Tx for spsc::Producer<u64> {
    fn try_push(&mut self, value: u64) -> bool {
        self.try_send(value).is_ok()
    }
}

impl Rx for spsc::Consumer<u64> {
    fn try_pop(&mut self) -> Option<u64> {
        self.try_recv().ok()
    }
}

impl Tx for mpmc::Producer<u64> {
    fn try_push(&mut self, value: u64) -> bool {
        self.try_send(value).is_ok()
    }
}

impl Rx for mpmc::Consumer<u64> {
    fn try_pop(&mut self) -> Option<u64> {
        self.try_recv().ok()
    }
}

impl Tx for Arc<ArrayQueue<u64>> {
    fn try_push(&mut self, value: u64) -> bool {
        self.push(value).is_ok()
    }
}

impl Rx for Arc<ArrayQueue<u64>> {
    fn try_pop(&mut self) -> Option<u64> {
        self.pop()
    }
}

fn push(tx: &mut dyn Tx, value: u64) {
    while !tx.try_push(value) {
        spin_loop();
    }
}

fn pop(rx: &mut dyn Rx) -> u64 {
    loop {
        if let Some(v) = rx.try_pop() {
            return v;
        }
        spin_loop();
    }
}

/// The queues compared, each a fresh (sender, receiver) pair on every call.
#[derive(Clone, Copy)]
enum Queue {
    Spsc,
    Mpmc,
    Crossbeam,
}

impl Queue {
    const ALL: [Queue; 3] = [Queue::Mpmc, Queue::Spsc, Queue::Crossbeam];

    fn label(self) -> &'static str {
        match self {
            Queue::Spsc => "spsc",
            Queue::Mpmc => "mpmc",
            Queue::Crossbeam => "crossbeam-ArrayQueue",
        }
    }

    /// A new queue; segment files are unlinked at once (the mappings stay).
    fn make(self, tag: &str) -> (Box<dyn Tx>, Box<dyn Rx>) {
        let name = format!("shm-bench-mpmc-{tag}-{}", std::process::id());
        let pair: (Box<dyn Tx>, Box<dyn Rx>) = match self {
            Queue::Spsc => {
                let b = spsc::Builder::<u64>::new(name.as_str())
                    .capacity(CAPACITY)
                    .mode(OpenMode::Create)
                    .wait_strategy(WaitStrategy::BusySpin);
                let tx = b.producer().unwrap();
                let rx = b.mode(OpenMode::Open).consumer().unwrap();
                (Box::new(tx), Box::new(rx))
            }
            Queue::Mpmc => {
                let b = mpmc::Builder::<u64>::new(name.as_str())
                    .capacity(CAPACITY)
                    .mode(OpenMode::Create)
                    .wait_strategy(WaitStrategy::BusySpin);
                let tx = b.producer().unwrap();
                let rx = b.mode(OpenMode::Open).consumer().unwrap();
                (Box::new(tx), Box::new(rx))
            }
            Queue::Crossbeam => {
                let q = Arc::new(ArrayQueue::new(CAPACITY as usize));
                return (Box::new(q.clone()), Box::new(q));
            }
        };
        Segment::remove(&Location::Name(name)).unwrap();
        pair
    }
}

fn pin(core: Option<usize>) {
    if let Some(core) = core {
        affinity::pin_current_thread(core).unwrap();
    }
}

fn throughput(c: &mut Criterion, cores: Option<&CorePair>) {
    let mut g = c.benchmark_group("mpmc/throughput");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    for queue in Queue::ALL {
        let (mut tx, mut rx) = queue.make("tp");
        // Sanity before timing.
        push(&mut *tx, 0);
        assert_eq!(pop(&mut *rx), 0);
        let received = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let counter = received.clone();
        let consumer_core = cores.map(|p| p.consumer);
        let consumer = std::thread::spawn(move || {
            pin(consumer_core);
            let mut expected = 1u64;
            loop {
                let v = pop(&mut *rx);
                if v == STOP {
                    return;
                }
                assert_eq!(v, expected, "lost or reordered");
                expected += 1;
                // Relaxed: a progress count; the producer spins on it only to stop the clock.
                counter.store(expected - 1, Ordering::Relaxed);
            }
        });
        pin(cores.map(|p| p.producer));
        let mut next = 1u64;
        g.bench_function(BenchmarkId::from_parameter(queue.label()), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    push(&mut *tx, next);
                    next += 1;
                }
                // Relaxed: see above.
                while received.load(Ordering::Relaxed) != next - 1 {
                    spin_loop();
                }
                start.elapsed()
            })
        });
        push(&mut *tx, STOP);
        consumer.join().unwrap();
    }
    g.finish();
}

/// Round trips per queue per round, and rounds, of the interleaved round-trip
/// measurement.
const ROUND_TRIPS: usize = 20_000;
const ROUNDS: usize = 15;

/// The value that moves the echo thread on to the next queue.
const SWITCH: u64 = u64::MAX - 1;

/// Round trips through each queue in turn, `ROUNDS` times, so that every queue sees the
/// same host conditions (this VM moves its vCPUs between near and far cores every few
/// seconds; criterion's one-benchmark-after-another order would compare different
/// machines). One echo thread serves every queue, in the same order as the main thread.
/// Prints each queue's median round trip and the median of the per-round ratios.
fn round_trip(cores: Option<&CorePair>) {
    let mut pings = Vec::new();
    let mut pongs = Vec::new();
    let mut ends = Vec::new();
    for queue in Queue::ALL {
        let (ping, ping_rx) = queue.make("ping");
        let (pong, pong_rx) = queue.make("pong");
        pings.push(ping);
        pongs.push(pong_rx);
        ends.push((ping_rx, pong));
    }
    let echo_core = cores.map(|p| p.consumer);
    let echo = std::thread::spawn(move || {
        pin(echo_core);
        let mut k = 0;
        loop {
            let (ping_rx, pong) = &mut ends[k];
            let v = pop(&mut **ping_rx);
            push(&mut **pong, v);
            match v {
                STOP => return,
                SWITCH => k = (k + 1) % Queue::ALL.len(),
                _ => {}
            }
        }
    });
    pin(cores.map(|p| p.producer));
    // times[queue][round]: nanoseconds per round trip.
    let mut times = vec![Vec::new(); Queue::ALL.len()];
    let mut seq = 0u64;
    for round in 0..=ROUNDS {
        for (k, per_round) in times.iter_mut().enumerate() {
            let (ping, pong_rx) = (&mut *pings[k], &mut *pongs[k]);
            let start = Instant::now();
            for _ in 0..ROUND_TRIPS {
                push(ping, seq);
                assert_eq!(pop(pong_rx), seq, "lost or reordered");
                seq += 1;
            }
            let ns = start.elapsed().as_nanos() as f64 / ROUND_TRIPS as f64;
            if round > 0 {
                per_round.push(ns); // round 0 warms up
            }
            push(ping, SWITCH);
            assert_eq!(pop(pong_rx), SWITCH);
        }
    }
    push(&mut *pings[0], STOP);
    assert_eq!(pop(&mut *pongs[0]), STOP);
    echo.join().unwrap();

    println!("mpmc/round-trip: {ROUNDS} interleaved rounds of {ROUND_TRIPS} round trips per queue");
    for (k, queue) in Queue::ALL.iter().enumerate() {
        println!(
            "  {:<22} median {:>7.1} ns per round trip (rounds from {:.1} to {:.1})",
            queue.label(),
            median(&times[k]),
            times[k].iter().copied().fold(f64::INFINITY, f64::min),
            times[k].iter().copied().fold(0.0, f64::max),
        );
    }
    for (k, queue) in Queue::ALL.iter().enumerate().skip(1) {
        let ratios: Vec<f64> = times[0].iter().zip(&times[k]).map(|(m, o)| m / o).collect();
        println!(
            "  mpmc / {:<15} median of per-round ratios {:.2}",
            queue.label(),
            median(&ratios)
        );
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn benches(c: &mut Criterion) {
    let cores = affinity::recommend_pair().ok();
    if let Some(pair) = &cores {
        eprintln!(
            "pinned: producer core {}, consumer core {} ({})",
            pair.producer, pair.consumer, pair.reason
        );
    }
    throughput(c, cores.as_ref());
    round_trip(cores.as_ref());
}

criterion_group!(mpmc_benches, benches);
criterion_main!(mpmc_benches);
