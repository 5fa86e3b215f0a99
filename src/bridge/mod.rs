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
//! effort on request ([`Reliability`]). The counters (forwarded, dropped, refused, lost)
//! live in a small segment that `shm inspect` reads ([`shm_ring::bridge`]).
//!
//! # Across a restart
//!
//! An outbound bridge waits until a subscriber matches its key before it reads the ring,
//! so while the far side is down the messages stay in the ring (and its producer is held
//! back when it fills). From an SPSC ring it reads in place and releases a batch only
//! once it is handed to Zenoh, numbering messages by their ring position: a bridge
//! killed after publishing a batch and before releasing it publishes it again when
//! restarted, and the inbound bridge, which keeps the last position it delivered in its
//! counters segment, drops the repeats. What is not guaranteed: batches handed to Zenoh
//! but not yet on the wire when a bridge is killed are gone (Zenoh pub/sub has no
//! acknowledgement); the inbound bridge counts them as `lost`, the gap in the positions.
//! From MPMC, broadcast and stream rings the bridge copies messages out (they are
//! released when read) and numbers them in a stream of its own: a kill loses what it had
//! read and not yet published, and the numbering starts again.
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

use shm_sync::atomic::{AtomicBool, Ordering};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use zenoh::Wait;
use zenoh::handlers::FifoChannelHandler;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A peer: listens on its endpoints and connects to others'.
    #[default]
    Peer,
    /// A client of the routers it connects to.
    Client,
}

/// Where a bridge's Zenoh session listens and connects.
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// Peer or client.
    pub mode: Mode,
    /// Endpoints to listen on (`tcp/0.0.0.0:7447`).
    pub listen: Vec<String>,
    /// Endpoints to connect to (`tcp/10.0.0.2:7447`).
    pub connect: Vec<String>,
    /// Whether to find peers by multicast scouting. Off unless asked for: a bridge
    /// connects to the endpoints it is given and nothing else.
    pub multicast_scouting: bool,
    /// A Zenoh configuration file (JSON5) to start from; the fields above that are set
    /// override it. With a file, multicast scouting is as the file says unless
    /// `multicast_scouting` asks for it.
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
            Mode::Peer => "\"peer\"",
            Mode::Client => "\"client\"",
        };
        if self.config_file.is_none() || self.mode != Mode::Peer {
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

/// An outbound bridge: a local ring's messages published on a Zenoh key expression.
#[derive(Debug)]
pub struct Out<S: Source> {
    source: S,
    publisher: Publisher<'static>,
    counters: Counters,
    identity: Identity,
    stream: u64,
    /// The sequence number of the next message, for a source without positions.
    next: u64,
    batch: usize,
    attachment: Vec<u8>,
}

impl<S: Source> Out<S> {
    /// Declares a publisher on `key` in `session` for the messages of `source`.
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
        Ok(Out {
            identity: source.identity(),
            stream: source.stream().unwrap_or_else(fresh_stream),
            source,
            publisher,
            counters,
            next: 0,
            batch: options.batch.max(1),
            attachment: Vec::new(),
        })
    }

    /// Publishes one batch of the messages waiting (waiting up to `timeout` for the
    /// first); returns how many. Reads nothing while no subscriber matches the key.
    ///
    /// # Errors
    ///
    /// [`Error::Zenoh`] if the publication fails; [`Error::Corrupted`] for a corrupt ring.
    pub fn step(&mut self, timeout: Duration) -> Result<u32, Error> {
        if !self.publisher.matching_status().wait()?.matching() {
            std::thread::sleep(timeout.min(Duration::from_millis(10)));
            return Ok(0);
        }
        let mut payload = Vec::new();
        let peeked = self.source.peek(&mut payload, self.batch, timeout)?;
        if peeked.lost > 0 {
            self.counters.lost(peeked.lost);
        }
        if peeked.count == 0 {
            return Ok(0);
        }
        let first = peeked.position.unwrap_or(self.next);
        wire::encode(
            &mut self.attachment,
            &self.identity,
            self.stream,
            first,
            peeked.count,
        );
        self.publisher
            .put(payload)
            .attachment(self.attachment.clone())
            .wait()?;
        self.source.release(peeked.count)?;
        self.next = first.wrapping_add(u64::from(peeked.count));
        self.counters.forwarded(u64::from(peeked.count));
        Ok(peeked.count)
    }

    /// Forwards until `stop` is set (looked at every [`POLL`]).
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
    /// [`OnFull::Drop`], or nobody consumes it), `repeated` (delivered before, skipped).
    Delivered {
        /// Written into the ring.
        written: u32,
        /// Dropped and counted.
        dropped: u32,
        /// Already delivered: skipped.
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
    subscriber: Subscriber<FifoChannelHandler<Sample>>,
    counters: Counters,
    identity: Identity,
    on_full: OnFull,
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
            subscriber,
            counters,
            on_full: options.on_full,
        })
    }

    /// Takes one sample (waiting up to `timeout`) and writes its messages into the ring,
    /// skipping those already delivered and counting those missing before it.
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
        // Where this sample stands against what was delivered from its stream.
        let (stream, next) = self.counters.resume_point();
        let mut repeated = 0;
        if stream == header.stream {
            let ahead = header.first.wrapping_sub(next) as i64;
            if ahead < 0 {
                repeated = ahead.unsigned_abs().min(u64::from(header.count)) as u32;
            } else if ahead > 0 {
                self.counters.lost(ahead as u64);
            }
        }
        let (mut written, mut dropped) = (0u32, 0u32);
        let mut position = header.first.wrapping_add(u64::from(repeated));
        let mut stopped = false;
        for message in &messages[repeated as usize..] {
            let pushed = match self.on_full {
                OnFull::Drop => self.sink.push(message, None)?,
                OnFull::Block => loop {
                    match self.sink.push(message, Some(POLL))? {
                        Pushed::Full if !stop.load(Ordering::Relaxed) => continue,
                        other => break other,
                    }
                },
            };
            match pushed {
                Pushed::Written => written += 1,
                Pushed::Gone => dropped += 1,
                Pushed::Full if self.on_full == OnFull::Drop => dropped += 1,
                Pushed::Full => {
                    stopped = true;
                    break;
                }
            }
            position = position.wrapping_add(1);
            // A kill between two messages leaves the place of the next: none delivered
            // twice after a restart.
            self.counters.set_resume_point(header.stream, position);
        }
        self.counters.forwarded(u64::from(written));
        if dropped > 0 {
            self.counters.dropped(u64::from(dropped));
        }
        if stopped {
            return Ok(Step::Stopped);
        }
        Ok(Step::Delivered {
            written,
            dropped,
            repeated,
        })
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
