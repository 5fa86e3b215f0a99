//! `shm bench --throughput`: one-way streams of 8-byte (`u64`) and 64-byte messages,
//! one at a time and in batches, through `shm-spsc` and, for comparison, a Unix socket,
//! the in-process anchors (rtrb and crossbeam's `ArrayQueue` between two threads on
//! the same cores, one message per call) and, with the `iceoryx2` feature, iceoryx2
//! publish-subscribe (one message per call); with the `zenoh` feature, Zenoh
//! publish-subscribe on loopback TCP and the same through `shm_transport::bridge`.
//!
//! Fan-out: `shm-broadcast` (`Overflow::Block`) and iceoryx2 publish-subscribe to 1 and
//! to 4 subscribers, all threads of the receiving process (pinned to its core, so the
//! subscribers take turns: they yield when they find nothing). The rate is every
//! message over the time from the first message received by any subscriber to the
//! stop message received by the slowest.
//!
//! The timing process sends for the round's time budget, then a stop message; the echo
//! process receives, checks that every message carries the next sequence number, and
//! reports how many messages it received and the time from the first to the stop.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use shm_transport::ring::Message;
use shm_transport::ring::broadcast;
use shm_transport::ring::spsc::{Builder, OpenMode};
use shm_transport::ring::{TryRecvError, TrySendError};
use shm_transport::sync::WaitStrategy;
use shm_transport::sync::atomic::{AtomicBool, Ordering, spin_loop};

use super::anchor;
use super::peer::Peer;
use super::transport::{self, STOP, Transport};

/// Slots of a throughput ring.
const CAPACITY: u64 = 4096;

/// One streaming case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub transport: Transport,
    /// 8 (a `u64`) or 64 (`[u64; 8]`).
    pub size: usize,
    /// Messages per call: 1, or a batch through `send_slice`/`recv_into` (shm-spsc) or one
    /// `write`/`read` of the whole batch (socket).
    pub batch: usize,
    /// Receivers that each get every message: 1 but for the fan-out cases.
    pub subscribers: usize,
}

/// The subscriber counts of the fan-out cases.
const FAN_OUT: [usize; 2] = [1, 4];

/// The cases, in the order they run in each round.
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // One message per call: the anchors, and Zenoh with and without the bridge.
    let one_by_one = [
        Transport::Rtrb,
        Transport::ArrayQueue,
        #[cfg(feature = "zenoh")]
        Transport::Zenoh,
        #[cfg(feature = "zenoh")]
        Transport::ShmBridge,
    ];
    for transport in one_by_one {
        for size in [8, 64] {
            cases.push(Case {
                transport,
                size,
                batch: 1,
                subscribers: 1,
            });
        }
    }
    let fan_out = [
        Transport::ShmBroadcast,
        #[cfg(feature = "iceoryx2")]
        Transport::Iceoryx2,
    ];
    for subscribers in FAN_OUT {
        for transport in fan_out {
            for size in [8, 64] {
                cases.push(Case {
                    transport,
                    size,
                    batch: 1,
                    subscribers,
                });
            }
        }
    }
    for transport in [Transport::ShmSpsc, Transport::Uds] {
        for size in [8, 64] {
            for batch in [1, 64] {
                cases.push(Case {
                    transport,
                    size,
                    batch,
                    subscribers: 1,
                });
            }
        }
    }
    cases
}

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub transport: &'static str,
    pub message_bytes: usize,
    pub batch: usize,
    pub subscribers: usize,
    /// Messages received in all rounds.
    pub messages: u64,
    /// Median over rounds, messages per second.
    pub messages_per_s: f64,
    /// `messages_per_s * message_bytes`.
    pub bytes_per_s: f64,
    /// Each round's rate, messages per second, in the order run.
    pub rounds: Vec<f64>,
}

impl Row {
    pub fn new(case: Case) -> Row {
        Row {
            transport: case.transport.name(),
            message_bytes: case.size,
            batch: case.batch,
            subscribers: case.subscribers,
            messages: 0,
            messages_per_s: 0.0,
            bytes_per_s: 0.0,
            rounds: Vec::new(),
        }
    }

    /// Adds one round and updates the medians.
    pub fn add(&mut self, messages: u64, ns: u64) {
        self.messages += messages;
        self.rounds.push(messages as f64 * 1e9 / ns.max(1) as f64);
        self.messages_per_s = super::report::median(&self.rounds);
        self.bytes_per_s = self.messages_per_s * self.message_bytes as f64;
    }
}

/// A fixed-size message with a sequence number.
pub trait Numbered: Copy + Send + 'static {
    fn numbered(seq: u64) -> Self;
    fn seq(&self) -> u64;
}

impl Numbered for u64 {
    fn numbered(seq: u64) -> Self {
        seq
    }
    fn seq(&self) -> u64 {
        *self
    }
}

impl Numbered for [u64; 8] {
    fn numbered(seq: u64) -> Self {
        [seq, 0, 0, 0, 0, 0, 0, 0]
    }
    fn seq(&self) -> u64 {
        self[0]
    }
}

/// Runs one round of `case` as the sending side, for `budget` or until `stop`; returns
/// (messages, ns) as the receiving side measured them.
pub fn send(
    peer: &mut Peer,
    case: Case,
    echo_core: Option<usize>,
    name: &str,
    budget: Duration,
    stop: &AtomicBool,
) -> Result<(u64, u64)> {
    let sent = match (case.transport, case.size) {
        (Transport::Rtrb, 8) => {
            return anchor::stream::<anchor::Rtrb, u64>(echo_core, budget, stop);
        }
        (Transport::Rtrb, 64) => {
            return anchor::stream::<anchor::Rtrb, [u64; 8]>(echo_core, budget, stop);
        }
        (Transport::ArrayQueue, 8) => {
            return anchor::stream::<anchor::Crossbeam, u64>(echo_core, budget, stop);
        }
        (Transport::ArrayQueue, 64) => {
            return anchor::stream::<anchor::Crossbeam, [u64; 8]>(echo_core, budget, stop);
        }
        #[cfg(feature = "zenoh")]
        (Transport::Zenoh | Transport::ShmBridge, 8) => {
            return super::zenoh::stream_send::<u64>(peer, case, name, budget, stop);
        }
        #[cfg(feature = "zenoh")]
        (Transport::Zenoh | Transport::ShmBridge, 64) => {
            return super::zenoh::stream_send::<[u64; 8]>(peer, case, name, budget, stop);
        }
        (Transport::ShmSpsc, 8) => spsc_send::<u64>(peer, case, name, budget, stop)?,
        (Transport::ShmSpsc, 64) => spsc_send::<[u64; 8]>(peer, case, name, budget, stop)?,
        (Transport::ShmBroadcast, 8) => broadcast_send::<u64>(peer, case, name, budget, stop)?,
        (Transport::ShmBroadcast, 64) => {
            broadcast_send::<[u64; 8]>(peer, case, name, budget, stop)?
        }
        (Transport::Uds, _) => uds_send(peer, case, name, budget, stop)?,
        #[cfg(feature = "iceoryx2")]
        (Transport::Iceoryx2, 8) => iox::send::<u64>(peer, case, name, budget, stop)?,
        #[cfg(feature = "iceoryx2")]
        (Transport::Iceoryx2, 64) => iox::send::<[u64; 8]>(peer, case, name, budget, stop)?,
        _ => bail!(
            "no throughput case for {} with {} bytes",
            case.transport.name(),
            case.size
        ),
    };
    received(peer, sent)
}

/// The receiver's reply to a round of `sent` messages: (messages, ns), checked against
/// `sent`.
pub(super) fn received(peer: &mut Peer, sent: u64) -> Result<(u64, u64)> {
    let reply = peer.reply()?;
    let mut words = reply.split(' ');
    let mut next = || -> Result<u64> {
        Ok(words
            .next()
            .ok_or_else(|| anyhow!("short reply {reply:?}"))?
            .parse()?)
    };
    let (received, ns) = (next()?, next()?);
    anyhow::ensure!(
        received == sent,
        "sent {sent} messages, the receiver counted {received}"
    );
    Ok((received, ns))
}

/// Whether to end the round: checked between batches.
pub(super) fn done(deadline: Instant, stop: &AtomicBool) -> bool {
    // Relaxed: a stop request needs no ordering, only to be seen eventually.
    stop.load(Ordering::Relaxed) || Instant::now() >= deadline
}

fn spsc_send<T: Numbered + Message>(
    peer: &mut Peer,
    case: Case,
    name: &str,
    budget: Duration,
    stop: &AtomicBool,
) -> Result<u64> {
    let mut tx = Builder::<T>::new(name)
        .capacity(CAPACITY)
        .wait_strategy(WaitStrategy::BusySpin)
        .mode(OpenMode::Create)
        .producer()?;
    peer.send(&format!(
        "stream shm-spsc {} {} {name}",
        case.size, case.batch
    ))?;
    let deadline = Instant::now() + budget;
    let mut seq = 1;
    if case.batch == 1 {
        seq = one_by_one(deadline, stop, |m| tx.try_send(m))?;
    } else {
        let mut batch = vec![T::numbered(0); case.batch];
        let mut polls = 0u32;
        while polls % 1024 != 0 || !done(deadline, stop) {
            polls = polls.wrapping_add(1);
            for (i, message) in batch.iter_mut().enumerate() {
                *message = T::numbered(seq + i as u64);
            }
            let mut offset = 0;
            while offset < batch.len() {
                match tx.send_slice(&batch[offset..]) {
                    Ok(n) => offset += n,
                    Err(TrySendError::Full(())) => spin_loop(),
                    Err(e) => bail!("{e}"),
                }
            }
            seq += batch.len() as u64;
        }
    }
    tx.send(T::numbered(STOP)).map_err(|e| anyhow!("{e}"))?;
    Ok(seq - 1)
}

fn broadcast_send<T: Numbered + Message>(
    peer: &mut Peer,
    case: Case,
    name: &str,
    budget: Duration,
    stop: &AtomicBool,
) -> Result<u64> {
    let mut tx = broadcast::Builder::<T>::new(name)
        .capacity(CAPACITY)
        .subscribers(case.subscribers as u32)
        .overflow(broadcast::Overflow::Block)
        .wait_strategy(WaitStrategy::BusySpin)
        .mode(OpenMode::Create)
        .publisher()?;
    peer.send(&format!(
        "stream shm-broadcast {} {} {name} {}",
        case.size, case.batch, case.subscribers
    ))?;
    // Every subscriber attached before the first message, as each must see them all.
    let give_up = Instant::now() + Duration::from_secs(10);
    while tx.stats().subscribers < case.subscribers as u32 {
        if Instant::now() > give_up {
            bail!(
                "shm-broadcast: {} subscribers not attached within 10 s",
                case.subscribers
            );
        }
        std::thread::yield_now();
    }
    let deadline = Instant::now() + budget;
    let seq = one_by_one(deadline, stop, |m| tx.try_send(m))?;
    tx.send(T::numbered(STOP)).map_err(|e| anyhow!("{e}"))?;
    Ok(seq - 1)
}

/// Sends numbered messages from 1 through `try_send` in a busy loop (as the anchors
/// `push`), retrying a full ring, until the deadline or `stop`; returns the next number.
fn one_by_one<T: Numbered>(
    deadline: Instant,
    stop: &AtomicBool,
    mut try_send: impl FnMut(T) -> Result<(), TrySendError<T>>,
) -> Result<u64> {
    let mut seq = 1;
    while !done(deadline, stop) {
        for _ in 0..1024 {
            let mut message = T::numbered(seq);
            loop {
                match try_send(message) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => message = back,
                    Err(e) => bail!("{e}"),
                }
                spin_loop();
            }
            seq += 1;
        }
    }
    Ok(seq)
}

fn uds_send(
    peer: &mut Peer,
    case: Case,
    name: &str,
    budget: Duration,
    stop: &AtomicBool,
) -> Result<u64> {
    let listener = transport::uds_listen(name)?;
    peer.send(&format!("stream uds {} {} {name}", case.size, case.batch))?;
    let (mut stream, _) = listener.accept()?;
    let deadline = Instant::now() + budget;
    let mut buf = vec![0u8; case.size * case.batch];
    let mut seq = 1;
    let fill = |buf: &mut [u8], seq: u64, step: u64| {
        for (i, message) in buf.chunks_exact_mut(case.size).enumerate() {
            message[..8].copy_from_slice(&(seq + step * i as u64).to_le_bytes());
        }
    };
    let mut writes = 0u32;
    while writes % 256 != 0 || !done(deadline, stop) {
        writes = writes.wrapping_add(1);
        fill(&mut buf, seq, 1);
        stream.write_all(&buf)?;
        seq += case.batch as u64;
    }
    // A whole batch of stop messages, so that a receiver reading whole batches gets one.
    fill(&mut buf, STOP, 0);
    stream.write_all(&buf)?;
    Ok(seq - 1)
}

/// The receiving side of one round (in the echo process); returns (messages, ns from
/// the first message to the stop message).
pub fn receive(
    transport: Transport,
    size: usize,
    batch: usize,
    subscribers: usize,
    at: &str,
) -> Result<(u64, u64)> {
    match (transport, size) {
        #[cfg(feature = "zenoh")]
        (Transport::Zenoh | Transport::ShmBridge, 8) => {
            super::zenoh::stream_receive::<u64>(transport == Transport::ShmBridge, at)
        }
        #[cfg(feature = "zenoh")]
        (Transport::Zenoh | Transport::ShmBridge, 64) => {
            super::zenoh::stream_receive::<[u64; 8]>(transport == Transport::ShmBridge, at)
        }
        (Transport::ShmSpsc, 8) => spsc_receive::<u64>(batch, at),
        (Transport::ShmSpsc, 64) => spsc_receive::<[u64; 8]>(batch, at),
        (Transport::ShmBroadcast, 8) => fan_in(subscribers, |k| broadcast_receive::<u64>(k, at)),
        (Transport::ShmBroadcast, 64) => {
            fan_in(subscribers, |k| broadcast_receive::<[u64; 8]>(k, at))
        }
        (Transport::Uds, _) => uds_receive(size, batch, at),
        #[cfg(feature = "iceoryx2")]
        (Transport::Iceoryx2, 8) => fan_in(subscribers, |_| iox::receive::<u64>(subscribers, at)),
        #[cfg(feature = "iceoryx2")]
        (Transport::Iceoryx2, 64) => {
            fan_in(subscribers, |_| iox::receive::<[u64; 8]>(subscribers, at))
        }
        _ => bail!(
            "no throughput case for {} with {size} bytes",
            transport.name()
        ),
    }
}

/// Runs `subscribers` receivers on threads of this process (`receive(k)` for receiver
/// `k`) and merges their tallies: the fewest messages any received, and the time from
/// the first message any received to the stop message the last received.
fn fan_in(
    subscribers: usize,
    receive: impl Fn(usize) -> Result<Tally> + Sync,
) -> Result<(u64, u64)> {
    let tallies = std::thread::scope(|s| {
        let threads: Vec<_> = (0..subscribers)
            .map(|k| {
                let receive = &receive;
                s.spawn(move || receive(k))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow!("a subscriber thread panicked"))?
            })
            .collect::<Result<Vec<Tally>>>()
    })?;
    let messages = tallies.iter().map(|t| t.expected - 1).min().unwrap_or(0);
    let first = tallies.iter().filter_map(|t| t.start).min();
    let last = tallies.iter().filter_map(|t| t.end).max();
    let ns = match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first).as_nanos() as u64,
        _ => 0,
    };
    Ok((messages, ns))
}

/// Checks sequence numbers and times the stream.
pub(super) struct Tally {
    expected: u64,
    start: Option<Instant>,
    end: Option<Instant>,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            expected: 1,
            start: None,
            end: None,
        }
    }

    /// Counts one message; `Ok(true)` at the stop message.
    #[inline]
    pub(super) fn count(&mut self, seq: u64) -> Result<bool> {
        #[cfg(debug_assertions)]
        let seq = super::transport::faults::altered(seq);
        if seq == STOP {
            self.end = Some(Instant::now());
            return Ok(true);
        }
        if seq != self.expected {
            bail!(
                "message lost or corrupted: expected sequence number {}, got {seq}",
                self.expected
            );
        }
        if self.expected == 1 {
            self.start = Some(Instant::now());
        }
        self.expected += 1;
        Ok(false)
    }

    pub(super) fn result(&self) -> (u64, u64) {
        let ns = self.start.map_or(0, |s| s.elapsed().as_nanos() as u64);
        (self.expected - 1, ns)
    }
}

fn spsc_receive<T: Numbered + Message>(batch: usize, name: &str) -> Result<(u64, u64)> {
    let mut rx = Builder::<T>::new(name)
        .capacity(CAPACITY)
        .wait_strategy(WaitStrategy::BusySpin)
        .mode(OpenMode::Open)
        .consumer()?;
    let mut tally = Tally::new();
    if batch == 1 {
        // `try_recv` in a busy loop, as the anchors `pop`.
        loop {
            match rx.try_recv() {
                Ok(message) => {
                    if tally.count(message.seq())? {
                        return Ok(tally.result());
                    }
                }
                Err(TryRecvError::Empty) => spin_loop(),
                Err(e) => bail!("{e}"),
            }
        }
    }
    let mut buf = vec![T::numbered(0); batch];
    loop {
        match rx.recv_into(&mut buf) {
            Ok(n) => {
                for message in &buf[..n] {
                    if tally.count(message.seq())? {
                        return Ok(tally.result());
                    }
                }
            }
            Err(TryRecvError::Empty) => spin_loop(),
            Err(e) => bail!("{e}"),
        }
    }
}

/// Subscriber `k` of a fan-out case: `try_recv` polled, yielding its core to the other
/// subscribers when it finds nothing.
fn broadcast_receive<T: Numbered + Message>(k: usize, name: &str) -> Result<Tally> {
    // From the oldest message: the publisher starts once every subscriber holds its
    // entry, which may be before this one reads where the ring is.
    let mut rx = broadcast::Builder::<T>::new(name)
        .mode(OpenMode::Open)
        .start(broadcast::Start::Oldest)
        .subscriber_with_id(k as u32)?;
    let mut tally = Tally::new();
    loop {
        match rx.try_recv() {
            Ok(message) => {
                if tally.count(message.seq())? {
                    return Ok(tally);
                }
            }
            Err(broadcast::TryRecvError::Empty) => std::thread::yield_now(),
            Err(e) => bail!("{e}"),
        }
    }
}

fn uds_receive(size: usize, batch: usize, name: &str) -> Result<(u64, u64)> {
    let mut stream = transport::uds_connect(name)?;
    let mut buf = vec![0u8; size * batch];
    let mut tally = Tally::new();
    loop {
        stream.read_exact(&mut buf)?;
        for message in buf.chunks_exact(size) {
            let mut word = [0u8; 8];
            word.copy_from_slice(&message[..8]);
            if tally.count(u64::from_le_bytes(word))? {
                return Ok(tally.result());
            }
        }
    }
}

#[cfg(feature = "iceoryx2")]
mod iox {
    //! iceoryx2 publish-subscribe as a stream: a service whose subscriber buffer holds
    //! [`CAPACITY`] samples and never overflows, and whose publisher retries until a
    //! sample is delivered: a ring of that many slots whose full producer waits.
    //! `send_copy` in a busy loop, `receive` polled, as the other cases.

    use core::fmt::Debug;
    use std::time::{Duration, Instant};

    use anyhow::{Result, bail};
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::prelude::*;
    use shm_transport::sync::atomic::{AtomicBool, spin_loop};

    use super::super::peer::Peer;
    use super::super::transport::{STOP, iox::err};
    use super::{CAPACITY, Case, Numbered, Tally, done};

    /// The node, and the service named `name` carrying `T`, opened or created.
    fn service<T: Numbered + Debug + ZeroCopySend>(
        name: &str,
        subscribers: usize,
    ) -> Result<(Node<ipc::Service>, PortFactory<T>)> {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(err)?;
        let service = node
            .service_builder(&ServiceName::new(name).map_err(err)?)
            .publish_subscribe::<T>()
            .max_publishers(1)
            .max_subscribers(subscribers)
            .history_size(0)
            .subscriber_max_buffer_size(CAPACITY as usize)
            .enable_safe_overflow(false)
            .open_or_create()
            .map_err(err)?;
        Ok((node, service))
    }

    type PortFactory<T> =
        iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, T, ()>;

    pub(super) fn send<T: Numbered + Debug + ZeroCopySend>(
        peer: &mut Peer,
        case: Case,
        name: &str,
        budget: Duration,
        stop: &AtomicBool,
    ) -> Result<u64> {
        let (_node, service) = service::<T>(name, case.subscribers)?;
        let publisher: Publisher<ipc::Service, T, ()> = service
            .publisher_builder()
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(err)?;
        peer.send(&format!(
            "stream iceoryx2 {} {} {name} {}",
            case.size, case.batch, case.subscribers
        ))?;
        // A publisher delivers only to the subscribers it has connected to: a probe
        // (number 0, which subscribers pass over) goes again until it reaches them all.
        let give_up = Instant::now() + Duration::from_secs(10);
        while publisher.send_copy(T::numbered(0)).map_err(err)? < case.subscribers {
            if Instant::now() > give_up {
                bail!(
                    "iceoryx2: {} subscribers not connected within 10 s",
                    case.subscribers
                );
            }
            spin_loop();
        }
        let deadline = Instant::now() + budget;
        let mut seq = 1;
        while !done(deadline, stop) {
            for _ in 0..1024 {
                publisher.send_copy(T::numbered(seq)).map_err(err)?;
                seq += 1;
            }
        }
        publisher.send_copy(T::numbered(STOP)).map_err(err)?;
        Ok(seq - 1)
    }

    /// One of `subscribers` subscribers: `receive` polled, yielding when there is
    /// nothing if others share the core.
    pub(super) fn receive<T: Numbered + Debug + ZeroCopySend>(
        subscribers: usize,
        name: &str,
    ) -> Result<Tally> {
        let (_node, service) = service::<T>(name, subscribers)?;
        let subscriber: Subscriber<ipc::Service, T, ()> =
            service.subscriber_builder().create().map_err(err)?;
        let mut tally = Tally::new();
        loop {
            match subscriber.receive().map_err(err)? {
                Some(sample) if sample.payload().seq() == 0 => {}
                Some(sample) => {
                    if tally.count(sample.payload().seq())? {
                        return Ok(tally);
                    }
                }
                None if subscribers > 1 => std::thread::yield_now(),
                None => spin_loop(),
            }
        }
    }
}
