//! `shm bridge out|in RING --key KEY`: a local ring bridged to the network through Zenoh
//! (feature `zenoh`), until SIGINT or SIGTERM.
//!
//! The ring's header says its kind and message type: a stream ring's frames are bridged
//! as they are, a typed ring's messages if their type is one of the primitive types or
//! `[u8; N]` (N a power of two from 8 to 65536). A ring of a type of your own is bridged
//! by `shm_transport::bridge` in a program that names the type.

use shm_transport::sync::atomic::{AtomicBool, Ordering};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use shm_transport::alloc::{Kind, Location, Segment, SurveyState};
use shm_transport::bridge::zenoh::Wait;
use shm_transport::bridge::{
    self, Counters, Direction, In, Mode, Network, OnFull, Options, Out, Reliability, Sink, Source,
};
use shm_transport::ring::{Message, OpenMode, broadcast, mpmc, spsc, stream};

use super::pipe::location;

/// Arguments of `shm bridge`.
#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// `out`: publish the ring's messages on the key; `in`: write what arrives on the key
    /// into the ring.
    #[arg(value_enum)]
    direction: Way,
    /// The ring's name under /dev/shm (or a path with a `/`). Made by its producers or
    /// consumers: the bridge waits for it to appear.
    ring: String,
    /// The Zenoh key expression to publish on or subscribe to.
    #[arg(long)]
    key: String,
    /// Peer (connects to other peers directly) or client (of a router). Default: peer, or
    /// what --config says.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// An endpoint to listen on, as `tcp/0.0.0.0:7447` (repeat for more).
    #[arg(long)]
    listen: Vec<String>,
    /// An endpoint to connect to, as `tcp/10.0.0.2:7447` (repeat for more).
    #[arg(long)]
    connect: Vec<String>,
    /// A Zenoh configuration file (JSON5) to start from; the options above override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Find peers by multicast scouting (off unless asked for, or set in --config).
    #[arg(long)]
    multicast_scouting: bool,
    /// The most messages in one sample (out).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch: u32,
    /// Best effort (congestion control Drop) instead of reliable with Block (out).
    #[arg(long)]
    best_effort: bool,
    /// When the ring is full: wait for room, or drop the message and count it (in).
    #[arg(long, value_enum, default_value_t = Full::Block)]
    on_full: Full,
    /// Where the counters live, for `shm inspect` (default: RING.bridge-out or
    /// RING.bridge-in).
    #[arg(long)]
    counters: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Way {
    Out,
    In,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Peer,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Full {
    Block,
    Drop,
}

/// Set by SIGINT and SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

/// `shm bridge`.
pub fn run(args: BridgeArgs) -> Result<()> {
    ctrlc::set_handler(|| {
        // Relaxed: the flag carries no data, it only has to be seen.
        STOP.store(true, Ordering::Relaxed);
    })
    .context("installing the SIGINT and SIGTERM handler")?;
    let ring = location(&args.ring);
    let Some((kind, fingerprint, type_name)) = wait_for(&ring, &args.ring)? else {
        return Ok(()); // stopped while waiting
    };
    let network = Network {
        mode: args.mode.map(|mode| match mode {
            ModeArg::Peer => Mode::Peer,
            ModeArg::Client => Mode::Client,
        }),
        listen: args.listen.clone(),
        connect: args.connect.clone(),
        multicast_scouting: args.multicast_scouting,
        config_file: args.config.clone(),
    };
    let session = network.open().context("opening the Zenoh session")?;
    let (direction, suffix) = match args.direction {
        Way::Out => (Direction::Out, "out"),
        Way::In => (Direction::In, "in"),
    };
    let counters_name = args
        .counters
        .clone()
        .unwrap_or_else(|| format!("{}.bridge-{suffix}", args.ring));
    let counters = Counters::open(location(&counters_name), direction, &args.key)
        .with_context(|| format!("opening the counters {counters_name}"))?;
    let options = Options {
        batch: args.batch as usize,
        reliability: if args.best_effort {
            Reliability::BestEffort
        } else {
            Reliability::Reliable
        },
        on_full: match args.on_full {
            Full::Block => OnFull::Block,
            Full::Drop => OnFull::Drop,
        },
        ..Options::default()
    };
    let stream_ring = stream::Builder::new(ring.clone()).mode(OpenMode::Open);
    let end = End {
        ring,
        way: args.direction,
        session: &session,
        key: &args.key,
        options,
        counters,
    };
    let counts = match kind {
        Kind::Stream => match args.direction {
            Way::Out => end.outbound(stream_ring.consumer()?),
            Way::In => end.inbound(stream_ring.producer()?),
        },
        Kind::Spsc | Kind::Mpmc | Kind::Broadcast => {
            by_type!(fingerprint, end.typed(kind), type_name)
        }
        other => bail!(
            "{} is a {other} segment: a bridge forwards spsc, mpmc, broadcast and stream rings",
            args.ring
        ),
    }?;
    println!(
        "{}: forwarded {}, dropped {}, refused {}, lost {}, in {} samples",
        args.ring, counts.forwarded, counts.dropped, counts.refused, counts.lost, counts.samples
    );
    session
        .close()
        .wait()
        .map_err(|e| anyhow::anyhow!("closing the Zenoh session: {e}"))
}

/// Calls `$end.typed::<T>($kind)` for the message type whose fingerprint is `$fp`, among
/// the types `shm bridge` knows.
macro_rules! by_type {
    ($fp:expr, $end:ident.typed($kind:expr), $name:expr) => {
        by_type!(@ $fp, $end, $kind, $name; u8, u16, u32, u64, u128, i8, i16, i32, i64, i128,
            f32, f64, [u8; 8], [u8; 16], [u8; 32], [u8; 64], [u8; 128], [u8; 256], [u8; 512],
            [u8; 1024], [u8; 2048], [u8; 4096], [u8; 8192], [u8; 16384], [u8; 32768],
            [u8; 65536])
    };
    (@ $fp:expr, $end:ident, $kind:expr, $name:expr; $($t:ty),*) => {{
        let fp = $fp;
        $(
            if fp == <$t as Message>::FINGERPRINT {
                $end.typed::<$t>($kind)
            } else
        )* {
            Err(anyhow::anyhow!(
                "the ring carries `{}` (fingerprint {fp:#018x}), not a type `shm bridge` knows: \
                 the primitive types and [u8; N] for N a power of two from 8 to 65536; bridge \
                 it with shm_transport::bridge in a program that names the type",
                $name
            ))
        }
    }};
}
use by_type;

/// Waits for the ring to exist and be ready; returns its kind, type fingerprint and
/// type name, or `None` if stopped first.
fn wait_for(ring: &Location, name: &str) -> Result<Option<(Kind, u64, String)>> {
    let mut said = false;
    // Relaxed: a flag.
    while !STOP.load(Ordering::Relaxed) {
        match Segment::survey(ring) {
            Ok(survey) => match (survey.state, survey.info) {
                (SurveyState::Ready, Some(info)) => {
                    return Ok(Some((info.kind, info.type_fingerprint, info.type_name)));
                }
                (SurveyState::Corrupt(why), _) => bail!("{name} is corrupt: {why}"),
                (SurveyState::Stale, _) => bail!(
                    "{name} is stale: its creator died before it was ready (`shm clean` removes it)"
                ),
                _ => {}
            },
            Err(shm_transport::alloc::Error::NotFound { .. }) => {}
            Err(e) => return Err(e).with_context(|| format!("looking at {name}")),
        }
        if !said {
            eprintln!("shm bridge: waiting for {name} to be created");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(None)
}

/// One side of a bridge, before its ring is attached.
struct End<'a> {
    ring: Location,
    way: Way,
    session: &'a bridge::zenoh::Session,
    key: &'a str,
    options: Options,
    counters: Counters,
}

impl End<'_> {
    /// Attaches a typed ring of `kind` carrying `T`, and runs the bridge.
    fn typed<T: Message>(self, kind: Kind) -> Result<bridge::Counts> {
        let ring = self.ring.clone();
        match (kind, self.way) {
            (Kind::Spsc, Way::Out) => self.outbound(
                spsc::Builder::<T>::new(ring)
                    .mode(OpenMode::Open)
                    .consumer()?,
            ),
            (Kind::Spsc, Way::In) => self.inbound(
                spsc::Builder::<T>::new(ring)
                    .mode(OpenMode::Open)
                    .producer()?,
            ),
            (Kind::Mpmc, Way::Out) => self.outbound(
                mpmc::Builder::<T>::new(ring)
                    .mode(OpenMode::Open)
                    .consumer()?,
            ),
            (Kind::Mpmc, Way::In) => self.inbound(
                mpmc::Builder::<T>::new(ring)
                    .mode(OpenMode::Open)
                    .producer()?,
            ),
            (_, Way::Out) => self.outbound(
                broadcast::Builder::<T>::new(ring)
                    .mode(OpenMode::Open)
                    .subscriber()?,
            ),
            (_, Way::In) => self.inbound(
                broadcast::Builder::<T>::new(ring)
                    .mode(OpenMode::Open)
                    .publisher()?,
            ),
        }
    }

    /// Publishes `source` until stopped.
    fn outbound(self, source: impl Source) -> Result<bridge::Counts> {
        let mut out = Out::new(self.session, self.key, source, &self.options, self.counters)?;
        out.run(&STOP)?;
        Ok(out.counters().counts())
    }

    /// Writes into `sink` until stopped, saying once why each kind of sample is refused.
    fn inbound(self, sink: impl Sink) -> Result<bridge::Counts> {
        let mut bridge = In::new(self.session, self.key, sink, &self.options, self.counters)?;
        // Said once for each kind of refusal, whatever the network sends.
        let mut said = HashSet::new();
        bridge.run(&STOP, |why| {
            if said.insert(std::mem::discriminant(why)) {
                eprintln!("shm bridge: refused {why} (counted; said once for this kind)");
            }
        })?;
        Ok(bridge.counters().counts())
    }
}
