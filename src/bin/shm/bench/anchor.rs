//! In-process anchors: rtrb's SPSC ring buffer and crossbeam's `ArrayQueue` (Vyukov's
//! bounded MPMC queue) between two threads of the timing process, pinned to the same two
//! cores as the cross-process transports. What the best in-process queues do on this
//! machine, measured in the same run: a ratio to them holds while the machine drifts.
//!
//! The echo side is a thread of the timing process (the echo process idles meanwhile on
//! its core); it counts what it echoed in each round and hands the count back at the
//! stop message, as the echo process does. Between its rounds it sleeps on a channel,
//! so that it never spins on the echo core while other transports run there.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use crossbeam_queue::ArrayQueue;
use shm_transport::sync::affinity;
use shm_transport::sync::atomic::{AtomicBool, Ordering, spin_loop};

use super::throughput::{Numbered, Tally};
use super::transport::{Patience, Pinger, STOP, seq_of, set_seq};

/// Slots of each latency queue (as the rings' latency capacity).
const LATENCY_CAPACITY: usize = 16;
/// Slots of each throughput queue (as the rings' throughput capacity).
const THROUGHPUT_CAPACITY: usize = 4096;
/// How long the timing side waits for the echo thread's count of a round.
const REPORT_PATIENCE: Duration = Duration::from_secs(10);

/// One in-process queue: its two ends and their non-blocking calls.
pub trait Queue<T: Send + 'static> {
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx);
    fn push(tx: &mut Self::Tx, value: T) -> Result<(), T>;
    fn pop(rx: &mut Self::Rx) -> Option<T>;
}

/// rtrb's wait-free SPSC ring buffer.
pub struct Rtrb;

impl<T: Send + 'static> Queue<T> for Rtrb {
    type Tx = rtrb::Producer<T>;
    type Rx = rtrb::Consumer<T>;
    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(capacity)
    }
    #[inline(always)]
    fn push(tx: &mut Self::Tx, value: T) -> Result<(), T> {
        tx.push(value).map_err(|rtrb::PushError::Full(v)| v)
    }
    #[inline(always)]
    fn pop(rx: &mut Self::Rx) -> Option<T> {
        rx.pop().ok()
    }
}

/// crossbeam's `ArrayQueue`.
pub struct Crossbeam;

impl<T: Send + 'static> Queue<T> for Crossbeam {
    type Tx = Arc<ArrayQueue<T>>;
    type Rx = Arc<ArrayQueue<T>>;
    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx) {
        let q = Arc::new(ArrayQueue::new(capacity));
        (q.clone(), q)
    }
    #[inline(always)]
    fn push(tx: &mut Self::Tx, value: T) -> Result<(), T> {
        tx.push(value)
    }
    #[inline(always)]
    fn pop(rx: &mut Self::Rx) -> Option<T> {
        rx.pop()
    }
}

fn pin(core: Option<usize>) -> Result<()> {
    if let Some(core) = core {
        affinity::pin_current_thread(core).context("pinning the anchor's echo thread")?;
    }
    Ok(())
}

/// The timing side of an anchor's ping-pong: the ping queue's producer, the pong
/// queue's consumer, and the echo thread.
pub struct AnchorPinger<Q: Queue<[u8; N]>, const N: usize> {
    tx: Q::Tx,
    rx: Q::Rx,
    message: [u8; N],
    echoed: mpsc::Receiver<Result<u64>>,
    /// Starts the echo thread's next round; dropped, it ends the thread.
    go: Option<mpsc::Sender<()>>,
    echo: Option<JoinHandle<()>>,
}

/// Builds both queues and starts the echo thread on `echo_core`.
pub fn pinger<Q: Queue<[u8; N]> + 'static, const N: usize>(
    echo_core: Option<usize>,
) -> Result<Box<dyn Pinger>> {
    let (tx, mut echo_rx) = Q::with_capacity(LATENCY_CAPACITY);
    let (mut echo_tx, rx) = Q::with_capacity(LATENCY_CAPACITY);
    let (counts, echoed) = mpsc::channel();
    let (go, rounds) = mpsc::channel::<()>();
    let echo = std::thread::Builder::new()
        .name("anchor-echo".into())
        .spawn(move || {
            let result = pin(echo_core).and_then(|()| {
                let mut count = 0u64;
                // Sleeps until a round starts; ends when the pinger is dropped.
                if rounds.recv().is_err() {
                    return Ok(());
                }
                loop {
                    let mut patience = Patience::new();
                    let mut message = loop {
                        if let Some(m) = Q::pop(&mut echo_rx) {
                            break m;
                        }
                        patience.spin("anchor ping")?;
                    };
                    let seq = seq_of(&message);
                    loop {
                        match Q::push(&mut echo_tx, message) {
                            Ok(()) => break,
                            Err(back) => message = back,
                        }
                        spin_loop();
                    }
                    if seq == STOP {
                        if counts.send(Ok(count)).is_err() || rounds.recv().is_err() {
                            return Ok(());
                        }
                        count = 0;
                    } else {
                        count += 1;
                    }
                }
            });
            if let Err(e) = result {
                let _ = counts.send(Err(e));
            }
        })
        .context("starting the anchor's echo thread")?;
    Ok(Box::new(AnchorPinger::<Q, N> {
        tx,
        rx,
        message: [0x5a; N],
        echoed,
        go: Some(go),
        echo: Some(echo),
    }))
}

impl<Q: Queue<[u8; N]>, const N: usize> Pinger for AnchorPinger<Q, N> {
    /// Wakes the echo thread for this round.
    fn connect(&mut self) -> Result<()> {
        self.go
            .as_ref()
            .and_then(|go| go.send(()).ok())
            .ok_or_else(|| anyhow!("the anchor's echo thread ended"))
    }

    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        set_seq(&mut self.message, seq);
        let mut message = self.message;
        let mut patience = Patience::new();
        while let Err(back) = Q::push(&mut self.tx, message) {
            message = back;
            patience.spin("room in the anchor's ping queue")?;
        }
        loop {
            if let Some(reply) = Q::pop(&mut self.rx) {
                return Ok(seq_of(&reply));
            }
            patience.spin("anchor echo")?;
        }
    }

    fn echoed(&mut self) -> Result<u64> {
        self.echoed
            .recv_timeout(REPORT_PATIENCE)
            .map_err(|_| anyhow!("the anchor's echo thread did not report"))?
    }
}

impl<Q: Queue<[u8; N]>, const N: usize> Drop for AnchorPinger<Q, N> {
    fn drop(&mut self) {
        drop(self.go.take());
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
    }
}

/// One round of a one-way stream through `Q`, one message per call, for `budget` or
/// until `stop`, the consumer a thread on `echo_core`; returns (messages, ns from the
/// first message to the stop message), as the consumer measured them.
pub fn stream<Q: Queue<T>, T: Numbered>(
    echo_core: Option<usize>,
    budget: Duration,
    stop: &AtomicBool,
) -> Result<(u64, u64)> {
    let (mut tx, mut rx) = Q::with_capacity(THROUGHPUT_CAPACITY);
    let consumer = std::thread::Builder::new()
        .name("anchor-consumer".into())
        .spawn(move || -> Result<(u64, u64)> {
            pin(echo_core)?;
            // Spins as `shm-spsc`'s receiver does; the sender always ends with the stop
            // message, unless this thread ended first.
            let mut tally = Tally::new();
            loop {
                let Some(message) = Q::pop(&mut rx) else {
                    spin_loop();
                    continue;
                };
                if tally.count(message.seq())? {
                    return Ok(tally.result());
                }
            }
        })
        .context("starting the anchor's consumer thread")?;
    // Pushes, spinning while the queue is full; false if the consumer ended meanwhile.
    let push = |tx: &mut Q::Tx, mut message: T| -> bool {
        let mut spins = 0u32;
        while let Err(back) = Q::push(tx, message) {
            message = back;
            spin_loop();
            spins = spins.wrapping_add(1);
            if spins % (1 << 16) == 0 && consumer.is_finished() {
                return false;
            }
        }
        true
    };
    let deadline = Instant::now() + budget;
    let mut seq = 1u64;
    // Relaxed: a stop request needs no ordering, only to be seen eventually.
    'send: while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        for _ in 0..1024 {
            if !push(&mut tx, T::numbered(seq)) {
                break 'send;
            }
            seq += 1;
        }
    }
    push(&mut tx, T::numbered(STOP));
    let (received, ns) = consumer
        .join()
        .map_err(|_| anyhow!("the anchor's consumer thread panicked"))??;
    anyhow::ensure!(
        received == seq - 1,
        "sent {} messages, the consumer counted {received}",
        seq - 1
    );
    Ok((received, ns))
}
