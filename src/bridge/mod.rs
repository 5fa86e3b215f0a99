//! Bridges between local rings and the network, through [Zenoh](https://zenoh.io)
//! (feature `zenoh`): the same messages on another host, without changing the producers
//! and consumers of one.
//!
//! - [`Out`]: a bridge consumer reads a local ring (SPSC, MPMC, broadcast or stream) and
//!   publishes on a Zenoh key expression, one sample per batch of the messages waiting
//!   (up to [`Options::batch`]).
//! - [`In`]: a Zenoh subscription written into a local ring by a bridge producer, which
//!   blocks while the ring is full or drops with a counter ([`OnFull`]).
//!
//! Each sample carries the message type's fingerprint and name and numbers its messages
//! (see [`wire`]); an inbound bridge refuses a sample of another type, counts it, and
//! says why ([`wire::Refusal`]). Delivery is reliable with congestion control `Block` by
//! default (a slow receiver slows the sender: nothing is dropped on the way), best
//! effort on request ([`Reliability`]). Zenoh closes a link whose receiver stalls for
//! more than a few seconds (its `wait_before_close` and lease); an SPSC ring's messages
//! then go out again when it opens again (below). The counters (forwarded, dropped,
//! refused, lost, repeated) live in a small segment that `shm inspect` reads
//! ([`shm_ring::bridge`]).
//!
//! # Across a restart
//!
//! An outbound bridge reads a ring only while a subscriber matches its key, so while the
//! far side is down the messages wait in the ring (and its producer is held back when it
//! fills).
//!
//! From an SPSC ring the bridge reads in place, numbers messages by ring position, and
//! releases a message only once an inbound bridge acknowledges that it is in its ring
//! (written, or dropped by `OnFull::Drop`). When a subscriber matches again (a restarted
//! inbound bridge, a link closed and opened again) and when the outbound bridge is
//! restarted, what is not acknowledged is published again; the inbound bridge, which
//! keeps its place in its counters segment, skips what it already wrote. So across a
//! SIGKILL of either bridge, or a broken link, no message of an SPSC ring is lost, and
//! none is written twice but one: an inbound bridge killed between writing a message and
//! recording it writes that one again after its restart. With several inbound bridges
//! on one key, the first to acknowledge releases.
//!
//! From MPMC, broadcast and stream rings, which a reader empties as it reads, the bridge
//! copies messages out and numbers them in a stream of its own, new at every start: a
//! killed bridge loses what it had read and Zenoh had not delivered, and nobody counts
//! it. Within a run, a gap (best effort) is counted as `lost` by the inbound bridge.
//!
//! # Example
//!
//! ```no_run
//! use shm_transport::sync::atomic::AtomicBool;
//! use shm_transport::bridge::{self, Network, Options};
//! use shm_transport::ring::spsc;
//!
//! let network = Network {
//!     listen: vec!["tcp/0.0.0.0:7447".into()],
//!     ..Network::default()
//! };
//! let session = network.open()?;
//! let ring = spsc::Builder::<u64>::new("quotes").consumer()?;
//! let counters = bridge::Counters::open("quotes.bridge-out", bridge::Direction::Out, "md/quotes")?;
//! let mut out = bridge::Out::new(&session, "md/quotes", ring, &Options::default(), counters)?;
//! out.run(&AtomicBool::new(false))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ends;
pub mod wire;

use std::sync::Arc;

use shm_sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use zenoh::Wait;
use zenoh::handlers::FifoChannelHandler;
use zenoh::matching::MatchingListener;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::Sample;

pub use ends::{Peeked, Pushed, Sink, Source};
pub use shm_ring::bridge::{Counters, Counts, Direction};
pub use zenoh;

use wire::{Identity, Refusal};

/// How long one wait of [`Out::run`] and [`In::run`] lasts before they look at their stop
/// flag again.
pub const POLL: Duration = Duration::from_millis(100);

/// Why a bridge stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Zenoh refused a configuration, a session, a declaration or a publication.
    #[error("zenoh: {0}")]
    Zenoh(zenoh::Error),
    /// The local ring could not be attached.
    #[error(transparent)]
    Ring(#[from] shm_ring::Error),
    /// The local ring's shared state is inconsistent.
    #[error("corrupted ring: {0}")]
    Corrupted(shm_ring::Corruption),
    /// Messages peeked could not be released (the ring changed under the bridge).
    #[error("releasing published messages: {0}")]
    Released(String),
    /// A message of another size than the ring's type (a split payload always has the
    /// right size: a bug if seen).
    #[error("a message of {found} bytes for a ring of {expected}-byte messages")]
    Size {
        /// The ring's message size, in bytes.
        expected: usize,
        /// The message's, in bytes.
        found: usize,
    },
}

impl From<zenoh::Error> for Error {
    fn from(e: zenoh::Error) -> Self {
        Error::Zenoh(e)
    }
}

/// Whether this Zenoh session is a peer (connects to other peers directly) or a client
/// (of a router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A peer: listens on its endpoints and connects to others'.
    Peer,
    /// A client of the routers it connects to.
    Client,
}

/// Where a bridge's Zenoh session listens and connects.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// Peer or client; `None`: peer, or what the configuration file says.
    pub mode: Option<Mode>,
    /// Endpoints to listen on (`tcp/0.0.0.0:7447`).
    pub listen: Vec<String>,
    /// Endpoints to connect to (`tcp/10.0.0.2:7447`).
    pub connect: Vec<String>,
    /// Whether to find peers by multicast scouting. Off unless asked for: a bridge
    /// connects to the endpoints it is given, and to the peers those tell it of (Zenoh's
    /// gossip, on by default; a configuration file can turn it off).
    pub multicast_scouting: bool,
    /// A Zenoh configuration file (JSON5) to start from; the fields above that are set
    /// (a mode, endpoints) override it. With a file, multicast scouting is as the file
    /// says unless `multicast_scouting` asks for it.
    pub config_file: Option<PathBuf>,
}

impl Network {
    /// The Zenoh configuration these settings make.
    ///
    /// # Errors
    ///
    /// [`Error::Zenoh`] for a configuration file that cannot be read or parsed, or an
    /// endpoint Zenoh does not accept.
    pub fn config(&self) -> Result<zenoh::Config, Error> {
        let mut config = match &self.config_file {
            Some(path) => zenoh::Config::from_file(path)?,
            None => zenoh::Config::default(),
        };
        let mode = match self.mode {
            Some(Mode::Client) => Some("\"client\""),
            Some(Mode::Peer) => Some("\"peer\""),
            None if self.config_file.is_none() => Some("\"peer\""),
            None => None,
        };
        if let Some(mode) = mode {
            config.insert_json5("mode", mode)?;
        }
        let list = |endpoints: &[String]| {
            let quoted: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
            format!("[{}]", quoted.join(","))
        };
        if !self.listen.is_empty() {
            config.insert_json5("listen/endpoints", &list(&self.listen))?;
        }
        if !self.connect.is_empty() {
            config.insert_json5("connect/endpoints", &list(&self.connect))?;
        }
        if self.config_file.is_none() || self.multicast_scouting {
            let on = if self.multicast_scouting {
                "true"
            } else {
                "false"
            };
            config.insert_json5("scouting/multicast/enabled", on)?;
        }
        Ok(config)
    }

    /// Opens a Zenoh session with [`config`](Self::config).
    ///
    /// # Errors
    ///
    /// As [`config`](Self::config); [`Error::Zenoh`] if the session cannot open (an
    /// endpoint to listen on that is taken, say).
    pub fn open(&self) -> Result<zenoh::Session, Error> {
        Ok(zenoh::open(self.config()?).wait()?)
    }
}

/// Zenoh's delivery guarantee for a bridge's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reliability {
    /// Reliable links, congestion control `Block`: a sample waits for room in Zenoh's
    /// queues rather than be dropped, so a slow receiver slows the sender down.
    #[default]
    Reliable,
    /// Best effort, congestion control `Drop`: a sample Zenoh has no room for is
    /// dropped; the inbound bridge counts what went missing as `lost`.
    BestEffort,
}

/// What an inbound bridge does with a message when its ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Wait for room (the network backs up to the sender, with `Reliable`).
    #[default]
    Block,
    /// Drop the message and count it.
    Drop,
}

/// How a bridge forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The most messages in one sample (outbound); at least 1. Default 64.
    pub batch: usize,
    /// Reliable (default) or best effort (outbound).
    pub reliability: Reliability,
    /// Block (default) or drop when the ring is full (inbound).
    pub on_full: OnFull,
    /// How many samples an inbound bridge's subscription holds before Zenoh waits
    /// (reliable) for the bridge to take them. Default 1024.
    pub queue: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch: 64,
            reliability: Reliability::Reliable,
            on_full: OnFull::Block,
            queue: 1024,
        }
    }
}

/// A stream number for a bridge that numbers messages itself: never 0, and another at
/// every start (the process id, the time and an address, hashed).
fn fresh_stream() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let hash = RandomState::new().hash_one((
        std::process::id(),
        std::time::SystemTime::now(),
        Instant::now(),
    ));
    hash.max(1)
}

/// The key an inbound bridge acknowledges a sample of `key` on: a verbatim chunk, which
/// no wildcard of a user's subscription matches.
fn ack_key(key: &str) -> String {
    format!("{key}/@shm-ack")
}

/// Stream numbers further apart than this are not the same stream's: a sample that far
/// ahead of or behind the place reached starts afresh rather than count or skip billions.
const WINDOW: u64 = 1 << 32;

/// How long an outbound bridge waits before it looks again at a ring whose every
/// message is published and not yet acknowledged.
const ACK_POLL: Duration = Duration::from_micros(20);

/// How long an outbound bridge waits for an acknowledgement before it publishes again
/// what is not acknowledged.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// The acknowledgements an outbound bridge of a position-numbered ring (SPSC) receives:
/// the highest position, in its own stream, that an inbound bridge has written.
#[derive(Debug)]
struct Acks {
    acked: Arc<AtomicU64>,
    _subscriber: Subscriber<()>,
}

/// An outbound bridge: a local ring's messages published on a Zenoh key expression.
///
/// From a position-numbered ring (SPSC) it reads in place and releases a message only
/// once an inbound bridge acknowledges it; when a subscriber appears again (a restarted
/// inbound bridge, a link closed and opened again), or after [`ACK_TIMEOUT`] without an
/// acknowledgement, it publishes again what is not acknowledged, and the inbound bridge
/// skips what it already wrote.
#[derive(Debug)]
pub struct Out<S: Source> {
    source: S,
    publisher: Publisher<'static>,
    counters: Counters,
    identity: Identity,
    stream: u64,
    /// The sequence number of the next message to publish.
    next: u64,
    batch: usize,
    acks: Option<Acks>,
    /// Whether a subscriber matches, kept by Zenoh's matching listener (so that a batch
    /// costs no query of the session's routes).
    matched: Arc<AtomicBool>,
    _listener: MatchingListener<()>,
    /// Whether a subscriber matched at the last step.
    matching: bool,
    /// When an acknowledgement last released something, or nothing was outstanding.
    progress: Instant,
}

impl<S: Source> Out<S> {
    /// Declares a publisher on `key` in `session` for the messages of `source` (and, for
    /// a position-numbered source, a subscription to the acknowledgements).
    ///
    /// # Errors
    ///
    /// [`Error::Zenoh`] for a key expression Zenoh refuses, or a session that is closed.
    pub fn new(
        session: &zenoh::Session,
        key: &str,
        source: S,
        options: &Options,
        counters: Counters,
    ) -> Result<Self, Error> {
        let (congestion, reliability) = match options.reliability {
            Reliability::Reliable => (CongestionControl::Block, zenoh::qos::Reliability::Reliable),
            Reliability::BestEffort => {
                (CongestionControl::Drop, zenoh::qos::Reliability::BestEffort)
            }
        };
        let publisher = session
            .declare_publisher(key.to_owned())
            .congestion_control(congestion)
            .reliability(reliability)
            .wait()?;
        let stream = source.stream().unwrap_or_else(fresh_stream);
        let acks = match source.position() {
            Some(_) => {
                let acked = Arc::new(AtomicU64::new(0));
                let seen = acked.clone();
                let subscriber = session
                    .declare_subscriber(ack_key(key))
                    .callback(move |sample| {
                        if let Some((of, next)) = wire::decode_ack(&sample.payload().to_bytes())
                            && of == stream
                        {
                            // Relaxed: a number; nothing is read through it.
                            seen.fetch_max(next, Ordering::Relaxed);
                        }
                    })
                    .wait()?;
                Some(Acks {
                    acked,
                    _subscriber: subscriber,
                })
            }
            None => None,
        };
        let matched = Arc::new(AtomicBool::new(false));
        let told = matched.clone();
        let listener = publisher
            .matching_listener()
            .callback(move |status| {
                // Relaxed: a flag; nothing is read through it.
                told.store(status.matching(), Ordering::Relaxed);
            })
            .wait()?;
        Ok(Out {
            identity: source.identity(),
            next: source.position().unwrap_or(0),
            stream,
            source,
            publisher,
            counters,
            batch: options.batch.clamp(1, u32::MAX as usize),
            acks,
            matched,
            _listener: listener,
            matching: false,
            progress: Instant::now(),
        })
    }

    /// Publishes one batch of the messages waiting (waiting up to `timeout` for the
    /// first); returns how many. Reads nothing while no subscriber matches the key; when
    /// one matches again, starts again from the oldest message not acknowledged.
    ///
    /// # Errors
    ///
    /// [`Error::Zenoh`] if the publication fails; [`Error::Corrupted`] for a corrupt ring.
    pub fn step(&mut self, timeout: Duration) -> Result<u32, Error> {
        if !self.subscribed()? {
            self.matching = false;
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return Ok(0);
        }
        let skip = match (&self.acks, self.source.position()) {
            (Some(acks), Some(mut head)) => {
                // Relaxed: a number; nothing is read through it.
                let acked = acks.acked.load(Ordering::Relaxed);
                let published = self.next.wrapping_sub(head);
                let done = acked.wrapping_sub(head);
                // An acknowledgement of what this bridge has not published (a stale or
                // forged one) releases nothing.
                let now = Instant::now();
                if done > 0 && done <= published {
                    self.source.release(done as u32)?;
                    head = head.wrapping_add(done);
                    self.progress = now;
                }
                if self.next == head {
                    self.progress = now;
                }
                // A subscriber again, or no acknowledgement for a while (a receiver that
                // went away and came back between two looks, an acknowledgement lost):
                // what is not acknowledged goes out again, and is skipped where it
                // arrived before.
                if !self.matching || now.duration_since(self.progress) > ACK_TIMEOUT {
                    self.next = head;
                    self.progress = now;
                }
                self.next.wrapping_sub(head) as u32
            }
            _ => 0,
        };
        self.matching = true;
        let mut payload = Vec::new();
        let wait = if skip > 0 {
            ACK_POLL.min(timeout)
        } else {
            timeout
        };
        let peeked = self.source.peek(&mut payload, skip, self.batch, wait)?;
        if peeked.lost > 0 {
            self.counters.lost(peeked.lost);
        }
        if peeked.count == 0 {
            return Ok(0);
        }
        let first = self.next;
        let count = u64::from(peeked.count);
        self.next = first.wrapping_add(count);
        let mut attachment = Vec::new();
        wire::encode(
            &mut attachment,
            &self.identity,
            self.stream,
            first,
            peeked.count,
        );
        let put = self.publisher.put(payload).attachment(attachment).wait();
        if let Err(e) = put {
            if self.acks.is_none() {
                // Read out of the ring and not published: gone, and counted.
                self.counters.lost(count);
            } else {
                // Still in the ring: published again from the oldest not acknowledged.
                self.matching = false;
            }
            return Err(e.into());
        }
        self.counters.forwarded(count);
        if self.acks.is_none() {
            self.source.release(peeked.count)?;
        }
        Ok(peeked.count)
    }

    /// Whether a subscriber matches: the listener's word, and while it says no, the
    /// session asked (the listener tells changes, not the state it starts from).
    fn subscribed(&self) -> Result<bool, Error> {
        // Relaxed: a flag; nothing is read through it.
        if self.matched.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let now = self.publisher.matching_status().wait()?.matching();
        // Relaxed: as above; a change the listener tells later overwrites it.
        self.matched.store(now, Ordering::Relaxed);
        Ok(now)
    }

    /// Forwards until `stop` is set (looked at between batches, every [`POLL`] at most
    /// while the ring is idle).
    ///
    /// # Errors
    ///
    /// As [`step`](Self::step).
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), Error> {
        // Relaxed: a flag, looked at again within a poll.
        while !stop.load(Ordering::Relaxed) {
            self.step(POLL)?;
        }
        Ok(())
    }

    /// The counters.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// What one [`In::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No sample came within the time.
    Idle,
    /// A sample's messages: `written` into the ring, `dropped` (ring full with
    /// [`OnFull::Drop`], or a frame larger than the ring), `repeated` (at or before the
    /// place this bridge had reached in the sample's stream: skipped).
    Delivered {
        /// Written into the ring.
        written: u32,
        /// Dropped and counted.
        dropped: u32,
        /// Skipped as repeats.
        repeated: u32,
    },
    /// A sample refused, and why (counted).
    Refused(Refusal),
    /// The stop flag was set while waiting for room in the ring (with
    /// [`OnFull::Block`]); the rest of the sample is not delivered.
    Stopped,
}

/// An inbound bridge: a Zenoh subscription's messages written into a local ring.
#[derive(Debug)]
pub struct In<K: Sink> {
    sink: K,
    session: zenoh::Session,
    subscriber: Subscriber<FifoChannelHandler<Sample>>,
    counters: Counters,
    identity: Identity,
    on_full: OnFull,
    /// The key of the last sample, and the acknowledgement key made of it.
    acks_to: (String, String),
}

impl<K: Sink> In<K> {
    /// Declares a subscriber on `key` in `session`, for `sink`.
    ///
    /// # Errors
    ///
    /// [`Error::Zenoh`] for a key expression Zenoh refuses, or a session that is closed.
    pub fn new(
        session: &zenoh::Session,
        key: &str,
        sink: K,
        options: &Options,
        counters: Counters,
    ) -> Result<Self, Error> {
        let subscriber = session
            .declare_subscriber(key.to_owned())
            .with(zenoh::handlers::FifoChannel::new(options.queue.max(1)))
            .wait()?;
        Ok(In {
            identity: sink.identity(),
            sink,
            session: session.clone(),
            subscriber,
            counters,
            on_full: options.on_full,
            acks_to: (String::new(), String::new()),
        })
    }

    /// Takes one sample (waiting up to `timeout`) and writes its messages into the ring,
    /// skipping those at or before the place reached in its stream and counting those
    /// missing before it; then acknowledges the place reached to the sample's publisher.
    ///
    /// # Errors
    ///
    /// [`Error::Zenoh`] if the subscription is gone; [`Error::Corrupted`] for a corrupt
    /// ring.
    pub fn step(&mut self, timeout: Duration, stop: &AtomicBool) -> Result<Step, Error> {
        let Some(sample) = self.subscriber.recv_timeout(timeout)? else {
            return Ok(Step::Idle);
        };
        let attachment = sample.attachment().map(|a| a.to_bytes());
        let header = match wire::decode(attachment.as_deref(), &self.identity) {
            Ok(header) => header,
            Err(refusal) => return Ok(self.refuse(refusal)),
        };
        let payload = sample.payload().to_bytes();
        let messages = match wire::split(&payload, header.count, &self.identity) {
            Ok(messages) => messages,
            Err(refusal) => return Ok(self.refuse(refusal)),
        };
        // Where this sample stands against the place reached in its stream.
        let (stream, next) = self.counters.resume_point();
        let ahead = header.first.wrapping_sub(next) as i64;
        let mut repeated = 0;
        if stream == header.stream && ahead.unsigned_abs() <= WINDOW {
            if ahead < 0 {
                repeated = ahead.unsigned_abs().min(u64::from(header.count)) as u32;
            } else if ahead > 0 {
                self.counters.lost(ahead as u64);
            }
        }
        let mut position = header.first.wrapping_add(u64::from(repeated));
        // The gap is counted: a restart from here does not count it again.
        if repeated < header.count {
            self.counters.set_resume_point(header.stream, position);
        }
        let (mut written, mut dropped) = (0u32, 0u32);
        let mut stopped = false;
        for message in &messages[repeated as usize..] {
            match self.push(message, stop)? {
                Pushed::Written => written += 1,
                Pushed::Full | Pushed::Gone if self.on_full == OnFull::Block => {
                    stopped = true;
                    break;
                }
                Pushed::Full | Pushed::Gone | Pushed::Unfit => dropped += 1,
            }
            position = position.wrapping_add(1);
            // A kill between a write and this store delivers that one message again
            // after a restart; none is lost.
            self.counters.set_resume_point(header.stream, position);
        }
        self.counters.forwarded(u64::from(written));
        if dropped > 0 {
            self.counters.dropped(u64::from(dropped));
        }
        if repeated > 0 {
            self.counters.repeated(u64::from(repeated));
        }
        self.acknowledge(sample.key_expr().as_str(), header.stream, position)?;
        if stopped {
            return Ok(Step::Stopped);
        }
        Ok(Step::Delivered {
            written,
            dropped,
            repeated,
        })
    }

    /// Writes one message: with [`OnFull::Block`], waits while the ring is full or its
    /// consumers are away (a restarted consumer attaches again), until `stop`.
    fn push(&mut self, message: &[u8], stop: &AtomicBool) -> Result<Pushed, Error> {
        if self.on_full == OnFull::Drop {
            return self.sink.push(message, None);
        }
        loop {
            let pushed = self.sink.push(message, Some(POLL))?;
            // Relaxed: a flag, looked at again within a poll.
            if !matches!(pushed, Pushed::Full | Pushed::Gone) || stop.load(Ordering::Relaxed) {
                return Ok(pushed);
            }
            if pushed == Pushed::Gone {
                // Answered at once, not after a wait: pause before the next try.
                std::thread::sleep(POLL / 10);
            }
        }
    }

    /// Tells the publisher of `key` that everything of `stream` before `next` is in the
    /// ring (written, dropped, or written before), so that it releases it.
    fn acknowledge(&mut self, key: &str, stream: u64, next: u64) -> Result<(), Error> {
        if self.acks_to.0 != key {
            self.acks_to = (key.to_owned(), ack_key(key));
        }
        self.session
            .put(
                self.acks_to.1.clone(),
                wire::encode_ack(stream, next).to_vec(),
            )
            .congestion_control(CongestionControl::Block)
            .wait()?;
        Ok(())
    }

    fn refuse(&self, refusal: Refusal) -> Step {
        self.counters.refused();
        Step::Refused(refusal)
    }

    /// Delivers until `stop` is set (looked at every [`POLL`]), calling `refused` with
    /// each refusal (to say why, once or each time).
    ///
    /// # Errors
    ///
    /// As [`step`](Self::step).
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut refused: impl FnMut(&Refusal),
    ) -> Result<(), Error> {
        // Relaxed: a flag, looked at again within a poll.
        while !stop.load(Ordering::Relaxed) {
            if let Step::Refused(why) = self.step(POLL, stop)? {
                refused(&why);
            }
        }
        Ok(())
    }

    /// The counters.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}
