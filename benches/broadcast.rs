//! Fan-out: one publisher, N subscribers that each must see every message, through the
//! broadcast ring against what users hand-wire today, one SPSC ring per subscriber that
//! the publisher writes each message into, in one run:
//!
//! - `broadcast/fan-out/<N>`: the publisher streams `u64`s (`Overflow::Block`: none is
//!   lost) to N subscriber threads; the time until the slowest has seen every message,
//!   per message. Measured in interleaved rounds (both ways in every round, since this
//!   VM moves its vCPUs between near and far cores every few seconds) and printed with
//!   the median of the per-round ratios.
//! - With the `iceoryx2` feature, the same fan-out through iceoryx2 publish-subscribe
//!   (`ipc::Service`, one subscriber node per thread, a subscriber buffer of 4096 that
//!   never overflows, a publisher that retries until delivered: its `Block`), in the
//!   same rounds.
//! - `broadcast/publish`: criterion's time per `try_send` under `Overflow::Lap` with 4
//!   subscribers attached that never read: what the feed handler pays per message,
//!   whatever its subscribers do.
//!
//! The publisher and the first subscriber are pinned to the recommended core pair
//! (`shm_sync::affinity`); on a two-core machine the other subscribers share those cores
//! and yield when they find nothing. Every ring lives in a segment under `/dev/shm`, as
//! between processes. Every subscriber checks that each value is the next.
//!
//! Run: `cargo bench --bench broadcast`.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shm_transport::alloc::{Location, Segment};
use shm_transport::ring::{OpenMode, broadcast, spsc};
use shm_transport::sync::WaitStrategy;
use shm_transport::sync::affinity::{self, CorePair};
use shm_transport::sync::atomic::spin_loop;

/// Slots of every ring.
const CAPACITY: u64 = 4096;

/// Messages per round and way.
const MESSAGES: u64 = 200_000;

/// Interleaved rounds (the first warms up and is not counted).
const ROUNDS: usize = 9;

/// Subscriber counts compared.
const FAN_OUT: [u32; 3] = [1, 2, 4];

fn pin(core: Option<usize>) {
    if let Some(core) = core {
        affinity::pin_current_thread(core).unwrap();
    }
}

/// A name for a segment of this run, unlinked once every side attached.
fn name(tag: &str) -> String {
    format!("shm-bench-bcast-{tag}-{}", std::process::id())
}

/// Receives until `MESSAGES` values came, each the next; yields when there is none (the
/// subscriber may share a core with the publisher).
fn drain(mut recv: impl FnMut() -> Option<u64>) {
    let mut expected = 0;
    let mut idle = 0u32;
    while expected < MESSAGES {
        match recv() {
            Some(v) => {
                assert_eq!(v, expected, "lost or reordered");
                expected += 1;
                idle = 0;
            }
            None => {
                idle += 1;
                if idle > 64 {
                    std::thread::yield_now();
                } else {
                    spin_loop();
                }
            }
        }
    }
}

/// Starts subscriber `k`'s thread (the first pinned to the consumer core): it waits at
/// `start`, then drains `recv`.
fn subscriber_thread(
    k: u32,
    cores: Option<&CorePair>,
    start: &Arc<Barrier>,
    recv: impl FnMut() -> Option<u64> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let start = start.clone();
    let core = if k == 0 {
        cores.map(|p| p.consumer)
    } else {
        None
    };
    std::thread::spawn(move || {
        pin(core);
        start.wait();
        drain(recv);
    })
}

/// One round through a broadcast ring to `n` subscribers: nanoseconds per message until
/// the slowest saw all.
fn broadcast_round(n: u32, cores: Option<&CorePair>) -> f64 {
    let ring_name = name("fan");
    let ring = broadcast::Builder::<u64>::new(ring_name.as_str())
        .capacity(CAPACITY)
        .subscribers(n)
        .overflow(broadcast::Overflow::Block)
        .mode(OpenMode::Create);
    let mut tx = ring.publisher().unwrap();
    let ring = ring.mode(OpenMode::Open);
    let start = Arc::new(Barrier::new(n as usize + 1));
    let subscribers: Vec<_> = (0..n)
        .map(|k| {
            let mut rx = ring.subscriber().unwrap();
            subscriber_thread(k, cores, &start, move || rx.try_recv().ok())
        })
        .collect();
    Segment::remove(&Location::Name(ring_name)).unwrap();
    start.wait();
    let t0 = Instant::now();
    for v in 0..MESSAGES {
        while tx.try_send(v).is_err() {
            std::thread::yield_now();
        }
    }
    for s in subscribers {
        s.join().unwrap();
    }
    t0.elapsed().as_nanos() as f64 / MESSAGES as f64
}

/// The same through `n` SPSC rings, the publisher writing each message into each.
fn spsc_round(n: u32, cores: Option<&CorePair>) -> f64 {
    let start = Arc::new(Barrier::new(n as usize + 1));
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for k in 0..n {
        let ring_name = name(&format!("spsc{k}"));
        let ring = spsc::Builder::<u64>::new(ring_name.as_str())
            .capacity(CAPACITY)
            .wait_strategy(WaitStrategy::BusySpin)
            .mode(OpenMode::Create);
        producers.push(ring.producer().unwrap());
        let mut rx = ring.mode(OpenMode::Open).consumer().unwrap();
        Segment::remove(&Location::Name(ring_name)).unwrap();
        consumers.push(subscriber_thread(k, cores, &start, move || {
            rx.try_recv().ok()
        }));
    }
    start.wait();
    let t0 = Instant::now();
    for v in 0..MESSAGES {
        for tx in &mut producers {
            while tx.try_send(v).is_err() {
                std::thread::yield_now();
            }
        }
    }
    for c in consumers {
        c.join().unwrap();
    }
    t0.elapsed().as_nanos() as f64 / MESSAGES as f64
}

/// The value an iceoryx2 publisher sends until every subscriber is connected; the
/// subscribers pass over it.
#[cfg(feature = "iceoryx2")]
const PROBE: u64 = u64::MAX;

/// The same through iceoryx2 publish-subscribe to `n` subscribers.
#[cfg(feature = "iceoryx2")]
fn iceoryx2_round(n: u32, cores: Option<&CorePair>) -> f64 {
    use iceoryx2::prelude::*;

    fn open(name: &str, n: u32) -> (Node<ipc::Service>, IoxService) {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new().create::<ipc::Service>().unwrap();
        let service = node
            .service_builder(&ServiceName::new(name).unwrap())
            .publish_subscribe::<u64>()
            .max_publishers(1)
            .max_subscribers(n as usize)
            .history_size(0)
            .subscriber_max_buffer_size(CAPACITY as usize)
            .enable_safe_overflow(false)
            .open_or_create()
            .unwrap();
        (node, service)
    }
    type IoxService =
        iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, u64, ()>;

    let service_name = name("iox");
    let (_node, service) = open(&service_name, n);
    let publisher = service
        .publisher_builder()
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .unwrap();
    let ready = Arc::new(Barrier::new(n as usize + 1));
    let start = Arc::new(Barrier::new(n as usize + 1));
    let subscribers: Vec<_> = (0..n)
        .map(|k| {
            let (ready, start, service_name) = (ready.clone(), start.clone(), service_name.clone());
            let core = if k == 0 {
                cores.map(|p| p.consumer)
            } else {
                None
            };
            std::thread::spawn(move || {
                pin(core);
                let (_node, service) = open(&service_name, n);
                let subscriber = service.subscriber_builder().create().unwrap();
                ready.wait();
                start.wait();
                drain(|| {
                    loop {
                        match subscriber.receive().unwrap() {
                            Some(sample) if *sample.payload() == PROBE => continue,
                            Some(sample) => return Some(*sample.payload()),
                            None => return None,
                        }
                    }
                });
            })
        })
        .collect();
    ready.wait();
    // A publisher delivers only to the subscribers it has connected to.
    while publisher.send_copy(PROBE).unwrap() < n as usize {
        spin_loop();
    }
    start.wait();
    let t0 = Instant::now();
    for v in 0..MESSAGES {
        publisher.send_copy(v).unwrap();
    }
    for s in subscribers {
        s.join().unwrap();
    }
    t0.elapsed().as_nanos() as f64 / MESSAGES as f64
}

fn fan_out(cores: Option<&CorePair>) {
    pin(cores.map(|p| p.producer));
    println!(
        "broadcast/fan-out: {ROUNDS} interleaved rounds of {MESSAGES} messages, ns per message until the slowest subscriber saw all"
    );
    for n in FAN_OUT {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        #[cfg(feature = "iceoryx2")]
        let mut iox = Vec::new();
        for round in 0..=ROUNDS {
            let b = broadcast_round(n, cores);
            let s = spsc_round(n, cores);
            #[cfg(feature = "iceoryx2")]
            let i = iceoryx2_round(n, cores);
            if round > 0 {
                ours.push(b);
                theirs.push(s);
                #[cfg(feature = "iceoryx2")]
                iox.push(i);
            }
        }
        let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(b, s)| b / s).collect();
        println!(
            "  {n} subscriber(s): broadcast median {:>6.1} ns, {n} x spsc median {:>6.1} ns, broadcast / spsc median of per-round ratios {:.2}",
            median(&ours),
            median(&theirs),
            median(&ratios)
        );
        #[cfg(feature = "iceoryx2")]
        {
            let ratios: Vec<f64> = ours.iter().zip(&iox).map(|(b, i)| b / i).collect();
            println!(
                "  {n} subscriber(s): iceoryx2 median {:>6.1} ns, broadcast / iceoryx2 median of per-round ratios {:.2}",
                median(&iox),
                median(&ratios)
            );
        }
    }
}

fn publish(c: &mut Criterion, cores: Option<&CorePair>) {
    pin(cores.map(|p| p.producer));
    let ring_name = name("pub");
    let ring = broadcast::Builder::<u64>::new(ring_name.as_str())
        .capacity(CAPACITY)
        .subscribers(4)
        .overflow(broadcast::Overflow::Lap)
        .mode(OpenMode::Create);
    let mut tx = ring.publisher().unwrap();
    let mut idle: Vec<_> = (0..4)
        .map(|_| ring.clone().mode(OpenMode::Open).subscriber().unwrap())
        .collect();
    Segment::remove(&Location::Name(ring_name)).unwrap();
    // Sanity before timing: every subscriber gets the first message.
    tx.try_send(7).unwrap();
    for rx in &mut idle {
        assert_eq!(rx.try_recv(), Ok(7));
    }
    let mut g = c.benchmark_group("broadcast/publish");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    let mut v = 0u64;
    g.bench_function("lap, 4 idle subscribers", |b| {
        b.iter(|| {
            tx.try_send(v).unwrap();
            v += 1;
        })
    });
    g.finish();
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
            "pinned: publisher core {}, first subscriber core {} ({})",
            pair.producer, pair.consumer, pair.reason
        );
    }
    publish(c, cores.as_ref());
    fan_out(cores.as_ref());
}

criterion_group!(broadcast_benches, benches);
criterion_main!(broadcast_benches);
