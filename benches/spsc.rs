//! SPSC ring throughput, on this machine, in one run:
//!
//! - `spsc/pair`: `try_send` then `try_recv` of a `u64` in one thread (no sharing: the
//!   cost of the instructions, with no fence instruction once the process registered its
//!   membarrier);
//! - `spsc/stream/{single,batch64}`: a producer thread and a consumer thread, pinned to
//!   the recommended core pair, streaming `u64`s one way through a ring of 4096 slots in a
//!   segment under `/dev/shm`, one message per call or 64 per `send_slice`/`recv_into`.
//!   Reported as messages per second.
//!
//! Run: `cargo bench --bench spsc`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shm_transport::alloc::{Location, Segment};
use shm_transport::ring::spsc::{Builder, channel};
use shm_transport::ring::{TryRecvError, TrySendError};
use shm_transport::sync::affinity;
use shm_transport::sync::atomic::{AtomicU64, Ordering, spin_loop};
use shm_transport::sync::{CachePadded, WaitStrategy};

const CAPACITY: u64 = 4096;
const BATCH: usize = 64;

fn pair(c: &mut Criterion) {
    let (mut tx, mut rx) = channel::<u64>(CAPACITY).unwrap();
    // Sanity before timing.
    tx.try_send(1).unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    let mut g = c.benchmark_group("spsc");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pair", |b| {
        b.iter(|| {
            tx.try_send(black_box(7)).unwrap();
            black_box(rx.try_recv().unwrap())
        })
    });
    g.finish();
}

fn stream(c: &mut Criterion) {
    let cores = affinity::recommend_pair().ok();
    let mut g = c.benchmark_group("spsc/stream");
    g.measurement_time(Duration::from_secs(5));
    for batch in [1usize, BATCH] {
        let name = format!("shm-bench-spsc-{}-{batch}", std::process::id());
        let builder = Builder::<u64>::new(name.as_str())
            .capacity(CAPACITY)
            .wait_strategy(WaitStrategy::BusySpin);
        let mut tx = builder.producer().unwrap();
        let mut rx = builder.consumer().unwrap();
        let received = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let counter = received.clone();
        let consumer_core = cores.as_ref().map(|p| p.consumer);
        let consumer = std::thread::spawn(move || {
            if let Some(core) = consumer_core {
                affinity::pin_current_thread(core).unwrap();
            }
            let mut buf = [0u64; BATCH];
            let mut count = 0u64;
            let mut expected = 0u64;
            loop {
                let got = if batch == 1 {
                    rx.try_recv().map(|v| {
                        buf[0] = v;
                        1
                    })
                } else {
                    rx.recv_into(&mut buf)
                };
                match got {
                    Ok(n) => {
                        for &v in &buf[..n] {
                            assert_eq!(v, expected, "lost or reordered");
                            expected += 1;
                        }
                        count += n as u64;
                        // Relaxed: a progress count read once per measurement.
                        counter.store(count, Ordering::Relaxed);
                    }
                    Err(TryRecvError::Empty) => spin_loop(),
                    Err(TryRecvError::Disconnected) => return,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        if let Some(pair) = &cores {
            affinity::pin_current_thread(pair.producer).unwrap();
        }
        let mut next = 0u64;
        let label = if batch == 1 { "single" } else { "batch64" };
        g.throughput(Throughput::Elements(1));
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut chunk = [0u64; BATCH];
                let start = Instant::now();
                let target = next + iters;
                while next < target {
                    if batch == 1 {
                        match tx.try_send(next) {
                            Ok(()) => next += 1,
                            Err(TrySendError::Full(_)) => spin_loop(),
                            Err(e) => panic!("{e}"),
                        }
                    } else {
                        let want = ((target - next) as usize).min(BATCH);
                        for (i, slot) in chunk[..want].iter_mut().enumerate() {
                            *slot = next + i as u64;
                        }
                        match tx.send_slice(&chunk[..want]) {
                            Ok(n) => next += n as u64,
                            Err(TrySendError::Full(())) => spin_loop(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                // Acquire not needed: the count is only compared.
                while received.load(Ordering::Relaxed) < target {
                    spin_loop();
                }
                start.elapsed()
            })
        });
        drop(tx);
        consumer.join().unwrap();
        let _ = Segment::remove(&Location::Name(name));
    }
    g.finish();
}

criterion_group!(benches, pair, stream);
criterion_main!(benches);
