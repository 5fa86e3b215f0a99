//! `zenoh` and `shm-bridge`: round trips over one Zenoh link, TCP on 127.0.0.1 (the timing
//! process listens, the echo process connects, peer mode, no scouting), so that the two
//! rows give what `shm_transport::bridge` adds to Zenoh itself.
//!
//! - `zenoh`: the timing side publishes the payload on `BASE/ping` and waits on its
//!   subscription to `BASE/pong`, where the echo side publishes it back.
//! - `shm-bridge`: the same link with a bridge at each end: the timing side sends into a
//!   ring that an outbound bridge publishes on `BASE/ping`; in the echo process an
//!   inbound bridge writes it into a ring, the echo side reads it and sends it back
//!   through a ring bridged out on `BASE/pong`, and an inbound bridge in the timing
//!   process writes it into the ring the timing side reads. Four bridge threads, each
//!   with its ring, as a pipeline split over two hosts would run them.
//!
//! `shm bench --throughput` streams through both, one message per call (the bridge
//! batches what is waiting in its ring; Zenoh batches small puts on the link).
//!
//! Every side waits in `recv` (Zenoh's channel, and the rings' default wait strategy):
//! a Zenoh session runs threads of its own, which a busy-polling side on the same core
//! would starve.

use shm_transport::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use shm_transport::alloc::{Location, Segment};
use shm_transport::bridge::zenoh::handlers::FifoChannelHandler;
use shm_transport::bridge::zenoh::pubsub::{Publisher, Subscriber};
use shm_transport::bridge::zenoh::qos::CongestionControl;
use shm_transport::bridge::zenoh::sample::Sample;
use shm_transport::bridge::zenoh::{Session, Wait};
use shm_transport::bridge::{self, Counters, Direction, Network, Options};
use shm_transport::ring::spsc::{Builder, Consumer, Producer};
use shm_transport::ring::{Message, OpenMode, SendTimeoutError};

use super::peer::Peer;
use super::throughput::{Case, Numbered, Tally, done, received};
use super::transport::{Echoer, Pinger, STOP, Transport, seq_of, set_seq};

/// How long a side waits for the other to be seen, or for a reply.
const PATIENCE: Duration = Duration::from_secs(10);

/// Slots of each bridged ring.
const CAPACITY: u64 = 16;

/// The Zenoh session of one side: listening on `port` (timing side) or connecting to it.
fn session(port: u16, listen: bool) -> Result<Session> {
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let network = Network {
        listen: if listen {
            vec![endpoint.clone()]
        } else {
            Vec::new()
        },
        connect: if listen { Vec::new() } else { vec![endpoint] },
        ..Network::default()
    };
    Ok(network.open()?)
}

/// A TCP port free on 127.0.0.1 now, for the timing side to listen on.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `publisher` has a matching subscriber.
fn matched(publisher: &Publisher<'_>, what: &str) -> Result<()> {
    let start = Instant::now();
    while !publisher
        .matching_status()
        .wait()
        .map_err(|e| anyhow!("{e}"))?
        .matching()
    {
        if start.elapsed() > PATIENCE {
            bail!("{what}: no subscriber after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// One end of the raw Zenoh row: a publisher on one key, a subscription to the other.
struct Raw {
    session: Session,
    publisher: Publisher<'static>,
    subscriber: Subscriber<FifoChannelHandler<Sample>>,
    message: Vec<u8>,
}

impl Raw {
    fn open(session: Session, base: &str, send: &str, receive: &str, size: usize) -> Result<Self> {
        let publisher = session
            .declare_publisher(format!("{base}/{send}"))
            .congestion_control(CongestionControl::Block)
            .wait()
            .map_err(|e| anyhow!("{e}"))?;
        let subscriber = session
            .declare_subscriber(format!("{base}/{receive}"))
            .wait()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Raw {
            session,
            publisher,
            subscriber,
            message: vec![0x5a; size],
        })
    }

    fn send(&mut self, seq: u64) -> Result<()> {
        set_seq(&mut self.message, seq);
        self.publisher
            .put(self.message.clone())
            .wait()
            .map_err(|e| anyhow!("{e}"))
    }

    fn receive(&mut self) -> Result<u64> {
        let sample = self
            .subscriber
            .recv_timeout(PATIENCE)
            .map_err(|e| anyhow!("{e}"))?
            .ok_or_else(|| anyhow!("zenoh: no message for {PATIENCE:?}"))?;
        Ok(seq_of(&sample.payload().to_bytes()))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.session.close().wait();
    }
}

impl Pinger for Raw {
    fn connect(&mut self) -> Result<()> {
        matched(&self.publisher, "zenoh ping")
    }

    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        self.send(seq)?;
        self.receive()
    }
}

impl Echoer for Raw {
    fn echo(&mut self) -> Result<u64> {
        let mut echoed = 0;
        loop {
            let seq = self.receive()?;
            self.send(seq)?;
            if seq == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

/// The timing side of `zenoh`, listening on `port` (the echo side connects).
pub fn raw_pinger(base: &str, size: usize, port: u16) -> Result<Box<dyn Pinger>> {
    Ok(Box::new(Raw::open(
        session(port, true)?,
        base,
        "ping",
        "pong",
        size,
    )?))
}

/// The echo side of `zenoh`: connects to `port`, and returns once its replies reach the
/// timing side's subscription.
pub fn raw_echoer(base: &str, size: usize, port: u16) -> Result<Box<dyn Echoer>> {
    let raw = Raw::open(session(port, false)?, base, "pong", "ping", size)?;
    matched(&raw.publisher, "zenoh pong")?;
    Ok(Box::new(raw))
}

/// The bridge threads of one side, each with its ring: stopped and joined by
/// `finish`, or when dropped.
#[derive(Default)]
struct Threads {
    stop: Arc<AtomicBool>,
    running: Vec<JoinHandle<Result<(), bridge::Error>>>,
}

impl Threads {
    /// Creates ring `name` of `capacity` messages, whose messages an outbound bridge
    /// thread publishes on `key`; returns its producer.
    fn outbound<T: Message + Send + 'static>(
        &mut self,
        session: &Session,
        name: &str,
        capacity: u64,
        key: &str,
    ) -> Result<Producer<T>> {
        let ring = |mode| Builder::<T>::new(name).capacity(capacity).mode(mode);
        let tx = ring(OpenMode::Create).producer()?;
        let source = ring(OpenMode::Open).consumer()?;
        let counters = Counters::heap(Direction::Out, key);
        let mut out = bridge::Out::new(session, key, source, &Options::default(), counters)?;
        self.spawn(move |stop| out.run(stop));
        Ok(tx)
    }

    /// Creates ring `name` of `capacity` messages, into which an inbound bridge thread
    /// writes what arrives on `key`; returns its consumer.
    fn inbound<T: Message + Send + 'static>(
        &mut self,
        session: &Session,
        name: &str,
        capacity: u64,
        key: &str,
    ) -> Result<Consumer<T>> {
        let ring = |mode| Builder::<T>::new(name).capacity(capacity).mode(mode);
        let rx = ring(OpenMode::Create).consumer()?;
        let sink = ring(OpenMode::Open).producer()?;
        let counters = Counters::heap(Direction::In, key);
        let mut inbound = bridge::In::new(session, key, sink, &Options::default(), counters)?;
        self.spawn(move |stop| inbound.run(stop, |_| {}));
        Ok(rx)
    }

    /// Runs `bridge` on a thread of its own until `finish`.
    fn spawn(
        &mut self,
        bridge: impl FnOnce(&AtomicBool) -> Result<(), bridge::Error> + Send + 'static,
    ) {
        let stop = self.stop.clone();
        self.running.push(std::thread::spawn(move || bridge(&stop)));
    }

    /// Stops the threads and waits for them.
    fn finish(&mut self) -> Result<()> {
        // Relaxed: a flag, looked at within a poll.
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.running.drain(..) {
            thread
                .join()
                .map_err(|_| anyhow!("a bridge thread panicked"))??;
        }
        Ok(())
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// One side of `shm-bridge`: a ring it sends into, bridged out, and a ring it reads,
/// bridged in.
struct Bridged<const N: usize> {
    session: Session,
    tx: Producer<[u8; N]>,
    rx: Consumer<[u8; N]>,
    message: [u8; N],
    threads: Threads,
}

impl<const N: usize> Bridged<N> {
    /// Rings `RING-out` (sent into, bridged out on `BASE/send`) and `RING-in` (bridged in
    /// from `BASE/receive`, read), and their bridge threads.
    fn open(session: Session, base: &str, ring: &str, send: &str, receive: &str) -> Result<Self> {
        let mut threads = Threads::default();
        let (out, into) = (format!("{ring}-out"), format!("{ring}-in"));
        let tx = threads.outbound(&session, &out, CAPACITY, &format!("{base}/{send}"))?;
        let rx = threads.inbound(&session, &into, CAPACITY, &format!("{base}/{receive}"))?;
        Ok(Bridged {
            session,
            tx,
            rx,
            message: [0x5a; N],
            threads,
        })
    }

    fn send(&mut self, seq: u64) -> Result<()> {
        set_seq(&mut self.message, seq);
        self.tx.send(self.message).map_err(|e| anyhow!("{e}"))
    }

    fn receive(&mut self) -> Result<u64> {
        let message = self.rx.recv_timeout(PATIENCE).map_err(|e| anyhow!("{e}"))?;
        Ok(seq_of(&message))
    }
}

impl<const N: usize> Drop for Bridged<N> {
    fn drop(&mut self) {
        let _ = self.threads.finish();
        let _ = self.session.close().wait();
    }
}

impl<const N: usize> Pinger for Bridged<N> {
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        self.send(seq)?;
        self.receive()
    }
}

impl<const N: usize> Echoer for Bridged<N> {
    fn echo(&mut self) -> Result<u64> {
        let mut echoed = 0;
        loop {
            let seq = self.receive()?;
            self.send(seq)?;
            if seq == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

/// The ring names of both sides of `shm-bridge` (`a`: timing, `b`: echo), for cleanup.
pub fn bridged_names(base: &str) -> [String; 4] {
    [
        format!("{base}-a-out"),
        format!("{base}-a-in"),
        format!("{base}-b-out"),
        format!("{base}-b-in"),
    ]
}

/// The timing side of `shm-bridge`, listening on `port`.
pub fn bridged_pinger<const N: usize>(base: &str, port: u16) -> Result<Box<dyn Pinger>> {
    let session = session(port, true)?;
    let ring = format!("{base}-a");
    Ok(Box::new(Bridged::<N>::open(
        session, base, &ring, "ping", "pong",
    )?))
}

/// The echo side of `shm-bridge`: connects to `port`.
pub fn bridged_echoer<const N: usize>(base: &str, port: u16) -> Result<Box<dyn Echoer>> {
    let session = session(port, false)?;
    let ring = format!("{base}-b");
    Ok(Box::new(Bridged::<N>::open(
        session, base, &ring, "pong", "ping",
    )?))
}

/// `shm bench --throughput` over Zenoh, the sending side of one round: `zenoh` puts one
/// message per call; `shm-bridge` sends one per call into a ring that an outbound bridge
/// thread publishes (batching what is waiting). Sends for `budget` (or until `stop`),
/// then the stop message; returns (messages, ns) as the receiver measured them.
pub fn stream_send<T: Numbered + Message>(
    peer: &mut Peer,
    case: Case,
    name: &str,
    budget: Duration,
    stop: &AtomicBool,
) -> Result<(u64, u64)> {
    let port = free_port()?;
    let session = session(port, true)?;
    let key = format!("{name}/stream");
    peer.send(&format!(
        "stream {} {} {} {name}@{port}",
        case.transport.name(),
        case.size,
        case.batch
    ))?;
    let mut sent = 0;
    if case.transport == Transport::ShmBridge {
        let mut threads = Threads::default();
        let ring = format!("{name}-out");
        let mut tx = threads.outbound::<T>(&session, &ring, STREAM_CAPACITY, &key)?;
        let _ = Segment::remove(&Location::Name(ring));
        let deadline = Instant::now() + budget;
        // Waits while the ring is full, and gives up if asked to stop meanwhile (a
        // receiver gone leaves the bridge waiting for a subscriber, the ring full).
        let mut send = |seq| loop {
            match tx.send_timeout(T::numbered(seq), PATIENCE / 100) {
                Ok(()) => return Ok(()),
                // Relaxed: a stop request needs no ordering, only to be seen.
                Err(SendTimeoutError::Timeout(_)) if !stop.load(Ordering::Relaxed) => {}
                Err(e) => return Err(anyhow!("shm-bridge: {e}")),
            }
        };
        while !done(deadline, stop) {
            for _ in 0..1024 {
                sent += 1;
                send(sent)?;
            }
        }
        send(STOP)?;
        let result = received(peer, sent);
        threads.finish()?;
        return result;
    }
    let publisher = session
        .declare_publisher(key)
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(|e| anyhow!("{e}"))?;
    matched(&publisher, "zenoh stream")?;
    let deadline = Instant::now() + budget;
    let put = |seq| {
        publisher
            .put(T::numbered(seq).as_bytes().to_vec())
            .wait()
            .map_err(|e| anyhow!("{e}"))
    };
    while !done(deadline, stop) {
        for _ in 0..1024 {
            sent += 1;
            put(sent)?;
        }
    }
    put(STOP)?;
    received(peer, sent)
}

/// Slots of the bridged throughput rings.
const STREAM_CAPACITY: u64 = 4096;

/// The receiving side of a throughput round over Zenoh (in the echo process), `at` being
/// `NAME@PORT`: a subscription read directly (`zenoh`), or a ring an inbound bridge
/// thread writes into (`shm-bridge`). Returns (messages, ns from the first to the stop).
pub fn stream_receive<T: Numbered + Message>(bridged: bool, at: &str) -> Result<(u64, u64)> {
    let (name, port) = at
        .rsplit_once('@')
        .ok_or_else(|| anyhow!("expected NAME@PORT, found {at}"))?;
    let session = session(port.parse()?, false)?;
    let key = format!("{name}/stream");
    let mut tally = Tally::new();
    if bridged {
        let mut threads = Threads::default();
        let ring = format!("{name}-in");
        let mut rx = threads.inbound::<T>(&session, &ring, STREAM_CAPACITY, &key)?;
        let _ = Segment::remove(&Location::Name(ring));
        let counted = loop {
            let message = rx.recv_timeout(PATIENCE).map_err(|e| anyhow!("{e}"))?;
            if tally.count(message.seq())? {
                break tally.result();
            }
        };
        threads.finish()?;
        return Ok(counted);
    }
    let subscriber = session
        .declare_subscriber(key)
        .wait()
        .map_err(|e| anyhow!("{e}"))?;
    loop {
        let sample = subscriber
            .recv_timeout(PATIENCE)
            .map_err(|e| anyhow!("{e}"))?
            .ok_or_else(|| anyhow!("zenoh: no message for {PATIENCE:?}"))?;
        let message = T::read_from_bytes(&sample.payload().to_bytes())
            .map_err(|_| anyhow!("zenoh: a message of the wrong size"))?;
        if tally.count(message.seq())? {
            return Ok(tally.result());
        }
    }
}
