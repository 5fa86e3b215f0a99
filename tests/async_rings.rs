//! `Async` rings under tokio, fed by real producer processes through real mapped files:
//! a million messages through `Stream`, `recv()` futures dropped at random points, a
//! task woken by the reactor thread asleep in `futex_waitv`, and a cancelled wait that
//! leaves no waiter announced.
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_ASYNC_CHILD=<part>`, `SHM_ASYNC_NAME`,
//! `SHM_ASYNC_COUNT`).

use std::future::Future;
use std::pin::pin;
use std::process::{Child, Stdio};
use std::task::Poll;
use std::time::{Duration, Instant};

use shm_testkit::{Reap, ShmName, wait_for};
use shm_transport::ring::{Async, OpenMode, RecvError, broadcast, spsc};
use tokio_stream::StreamExt;

fn spawn(part: &str, name: &ShmName, count: u64) -> Child {
    shm_testkit::child("child")
        .env("SHM_ASYNC_CHILD", part)
        .env("SHM_ASYNC_NAME", name.as_str())
        .env("SHM_ASYNC_COUNT", count.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// SplitMix64: the pauses of the bursty producer and the drop points of the consumer.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Not a test: the body of a child process, selected by `SHM_ASYNC_CHILD`: sends
/// `0..count` into the SPSC ring `SHM_ASYNC_NAME`, as fast as it can (`stream`) or in
/// bursts with pauses of up to 200 us (`bursts`), so that the consumer parks often.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    let Ok(part) = std::env::var("SHM_ASYNC_CHILD") else {
        return;
    };
    let name = std::env::var("SHM_ASYNC_NAME").unwrap();
    let count: u64 = std::env::var("SHM_ASYNC_COUNT").unwrap().parse().unwrap();
    let mut tx = spsc::Builder::<u64>::new(name.as_str())
        .mode(OpenMode::Open)
        .producer()
        .unwrap();
    for seq in 0..count {
        if part == "bursts" && mix(seq) % 64 == 0 {
            std::thread::sleep(Duration::from_micros(mix(seq) % 200));
        }
        tx.send(seq).expect("the consumer stays");
    }
}

/// The consumer of a new SPSC ring in a segment, created here.
fn consumer(name: &ShmName) -> spsc::Consumer<u64> {
    spsc::Builder::<u64>::new(name.as_str())
        .capacity(256)
        .mode(OpenMode::Create)
        .consumer()
        .unwrap()
}

/// A million messages from a producer process into a tokio task through `Stream`: all
/// of them, in order, and the stream ends when the producer leaves.
#[test]
fn a_million_messages_from_a_process_through_stream_in_order() {
    const COUNT: u64 = 1_000_000;
    let name = ShmName::new("async-1m");
    let mut rx = Async::new(consumer(&name));
    let mut child = Reap(spawn("stream", &name, COUNT));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let received = runtime.block_on(async move {
        tokio::spawn(async move {
            let mut next = 0;
            while let Some(got) = rx.next().await {
                assert_eq!(got, Ok(next), "message {next}");
                next += 1;
            }
            next
        })
        .await
        .unwrap()
    });
    assert_eq!(received, COUNT);
    assert!(child.0.wait().unwrap().success());
}

/// `recv()` futures dropped after a random number of polls (0 to 3), often while
/// registered with the reactor, against a producer process sending in bursts: every
/// message is received exactly once, in order.
#[test]
fn recv_futures_dropped_at_random_points_lose_and_repeat_nothing() {
    const COUNT: u64 = 100_000;
    let name = ShmName::new("async-drop");
    let mut rx = Async::with_spin(consumer(&name), Duration::ZERO);
    let mut child = Reap(spawn("bursts", &name, COUNT));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (received, dropped_pending) = runtime.block_on(async {
        let (mut next, mut dropped_pending, mut round) = (0u64, 0u64, 0u64);
        loop {
            round += 1;
            let polls = mix(round) % 4;
            let mut fut = pin!(rx.recv());
            let mut done = None;
            for _ in 0..polls {
                let poll = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
                if let Poll::Ready(got) = poll {
                    done = Some(got);
                    break;
                }
                tokio::task::yield_now().await;
            }
            match done {
                Some(Ok(v)) => {
                    assert_eq!(v, next, "lost or repeated a message");
                    next += 1;
                }
                Some(Err(RecvError::Disconnected)) => break,
                Some(Err(e)) => panic!("{e:?}"),
                // Dropped before it completed: after at least one Pending poll (a
                // registration), or never polled.
                None => dropped_pending += u64::from(polls > 0),
            }
        }
        (next, dropped_pending)
    });
    assert_eq!(received, COUNT);
    assert!(child.0.wait().unwrap().success());
    assert!(dropped_pending > 0, "no future was dropped while waiting");
}

/// The thread id of this process's reactor thread, once it exists.
fn reactor_thread() -> Option<u32> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
        let task = task.ok()?;
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        (comm.trim() == "shm-reactor").then(|| task.file_name().to_str()?.parse().ok())?
    })
}

/// A tokio task awaiting an empty ring, no spin: the reactor thread falls asleep in
/// `futex_waitv` (seen in `/proc`), a producer process sends one message, and the task
/// receives it. Then a `recv()` future dropped mid-wait leaves no waiter announced on
/// the ring's event count (a broadcast ring shows its count of parked subscribers).
#[test]
fn the_reactor_wakes_a_task_and_a_cancelled_wait_leaves_no_waiter() {
    let name = ShmName::new("async-wake");
    let mut rx = Async::with_spin(consumer(&name), Duration::ZERO);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (name2, started) = (name.as_str().to_owned(), Instant::now());
    let producer = std::thread::spawn(move || {
        // The task registered and the reactor sleeps on its futex words.
        wait_for(Duration::from_secs(10), "the reactor asleep", || {
            let tid = reactor_thread()?;
            shm_testkit::sleeps_on_futex(std::process::id(), tid).then_some(())
        });
        let mut tx = spsc::Builder::<u64>::new(name2.as_str())
            .mode(OpenMode::Open)
            .producer()
            .unwrap();
        tx.send(77).unwrap();
    });
    let got =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), rx.recv()).await });
    assert_eq!(got, Ok(Ok(77)), "the task was not woken");
    producer.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));

    let ring = ShmName::new("async-cancel");
    let publisher = broadcast::Builder::<u64>::new(ring.as_str())
        .publisher()
        .unwrap();
    let subscriber = broadcast::Builder::<u64>::new(ring.as_str())
        .subscriber()
        .unwrap();
    let mut sub = Async::with_spin(subscriber, Duration::ZERO);
    runtime.block_on(async {
        {
            let mut fut = pin!(sub.recv());
            let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "nothing was published");
            assert_eq!(publisher.stats().parked_subscribers, 1, "registered");
        }
        assert_eq!(publisher.stats().parked_subscribers, 0, "withdrawn on drop");
        let timed_out = tokio::time::timeout(Duration::from_millis(20), sub.recv()).await;
        assert!(timed_out.is_err(), "nothing was published");
    });
    assert_eq!(publisher.stats().parked_subscribers, 0);
}

/// Byte frames of every length between two tasks of one current-thread runtime, through
/// rings far smaller than what passes: the sender awaits room for each whole frame (more
/// than one free slot) without holding the thread, and the receiver gets every frame
/// whole and in order, on a stream ring and on a broadcast ring of frames (`Block`).
#[test]
fn frames_await_room_for_all_of_them_on_one_thread() {
    use shm_transport::ring::broadcast::frames::{Cell, FramePublisher, FrameSubscriber};
    use shm_transport::ring::stream;

    fn frame(i: usize, max: usize) -> Vec<u8> {
        vec![i as u8; (i * 37) % max]
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    const FRAMES: usize = 3000;

    let (tx, rx) = stream::channel(256).unwrap();
    let (mut tx, mut rx) = (Async::new(tx), Async::new(rx));
    let max = tx.get_ref().max_message_len();
    runtime.block_on(async {
        let send = async move {
            for i in 0..FRAMES {
                tx.send(&frame(i, max)).await.unwrap();
            }
        };
        let receive = async move {
            let mut buf = Vec::new();
            for i in 0..FRAMES {
                let len = rx.recv_into(&mut buf).await.unwrap();
                assert_eq!((len, &buf), (buf.len(), &frame(i, max)), "stream frame {i}");
            }
            assert_eq!(rx.recv_into(&mut buf).await, Err(RecvError::Disconnected));
        };
        tokio::join!(send, receive);
    });

    let (publisher, subscriber) =
        broadcast::channel_with::<Cell>(16, 1, broadcast::Overflow::Block).unwrap();
    let (mut tx, mut rx) = (
        Async::new(FramePublisher::new(publisher)),
        Async::new(FrameSubscriber::new(subscriber)),
    );
    let max = tx.get_ref().max_len();
    runtime.block_on(async {
        let send = async move {
            for i in 0..FRAMES {
                tx.send(&frame(i, max)).await.unwrap();
            }
        };
        let receive = async move {
            let mut buf = Vec::new();
            for i in 0..FRAMES {
                rx.recv_into(&mut buf).await.unwrap();
                assert_eq!(buf, frame(i, max), "broadcast frame {i}");
            }
        };
        tokio::join!(send, receive);
    });
}

/// A `Stream` polled to `Pending` (registered, one parked subscriber), then given a
/// message: the poll that returns it withdraws the registration, so the ring does not
/// keep paying a wake-up for a waiter that is no longer waiting.
#[test]
fn a_stream_item_withdraws_the_registration_of_the_poll_before() {
    use tokio_stream::Stream as _;
    let ring = ShmName::new("async-stream-withdraw");
    let mut publisher = broadcast::Builder::<u64>::new(ring.as_str())
        .publisher()
        .unwrap();
    let subscriber = broadcast::Builder::<u64>::new(ring.as_str())
        .subscriber()
        .unwrap();
    let mut sub = Async::with_spin(subscriber, Duration::ZERO);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let first =
            std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut sub).poll_next(cx)))
                .await;
        assert!(first.is_pending());
        assert_eq!(publisher.stats().parked_subscribers, 1, "registered");
        publisher.send(5).unwrap();
        assert_eq!(sub.next().await, Some(Ok(5)));
        assert_eq!(publisher.stats().parked_subscribers, 0, "withdrawn");
    });
}
