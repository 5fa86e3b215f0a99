//! The transports `shm bench` compares, each as two halves: a [`Pinger`] in the timing
//! process and an [`Echoer`] in the echo process.
//!
//! Every message carries a sequence number in its first 8 bytes (little endian). The
//! echo side sends each message back unchanged and stops after echoing [`STOP`]; the
//! timing side checks that every reply carries the number it sent, so a lost, repeated
//! or corrupted message ends the run with an error instead of a wrong figure.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::ValueEnum;
use memmap2::MmapMut;
use serde::Serialize;
use shm_transport::alloc::ShmOffset;
use shm_transport::alloc::pool::Pool;
use shm_transport::ring::spsc::{Builder, Consumer, OpenMode, Producer};
use shm_transport::ring::{TryRecvError, broadcast, loan, request_response, stream};
use shm_transport::sync::WaitStrategy;
use shm_transport::sync::atomic::{AtomicBool, AtomicU64, Ordering, spin_loop};

use super::clock::Clock;

/// The sequence number that ends an echo loop.
pub const STOP: u64 = u64::MAX;

/// The sequence number of connection probes (iceoryx2); timed messages start at 1.
#[cfg(feature = "iceoryx2")]
pub const HELLO: u64 = 0;

/// How long a busy-polling side waits for a reply before it declares the peer lost.
const PATIENCE: Duration = Duration::from_secs(10);

/// Slots of each latency ring: a ping-pong never has more than one message in flight.
const LATENCY_CAPACITY: u64 = 16;

/// Payload sizes a typed `shm-spsc` ring is built for (`[u8; N]` messages).
pub const SPSC_SIZES: [usize; 14] = [
    8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
];

/// A way to move a message from one process to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// The physical limit of each size, in a shared mapping: the sender writes the
    /// payload and then an 8-byte sequence word right after it; the receiver spins on the
    /// sequence word (`pause` between loads) and reads the payload's first 8 bytes, as
    /// the transports' receivers do; the same back.
    Limit,
    /// `shm_ring::spsc`, both sides busy-polling, in place like iceoryx2 below: the
    /// sender writes the payload into a `reserve`d slot, the receiver reads the sequence
    /// number through `try_recv_ref`, polled as iceoryx2's benchmark polls `receive`.
    ShmSpsc,
    /// `shm_ring::spsc`, both sides in `send`/`recv` (copies) with `WaitStrategy::Park`:
    /// every message is a futex wake-up.
    ShmSpscPark,
    /// `shm_ring::broadcast` out (`Overflow::Lap`), an SPSC ring back, both sides
    /// busy-polling: the timing side publishes a copy of the payload, the echoing
    /// subscriber copies it out (a broadcast read is a validated copy) and replies in
    /// place. [`BROADCAST_OTHERS`] more subscribers are attached in the timing process
    /// and drain the ring once a millisecond: on a two-core machine a third busy
    /// thread would share a core with the timed pair.
    ShmBroadcast,
    /// `shm_ring::request_response`, both sides busy-polling: each round trip is one
    /// call. The client writes the payload in place into its call slot and sends a
    /// ticket through the request ring; the worker reads the sequence number in place,
    /// writes the response in place into the same slot and wakes the client (one load:
    /// it polls); the client reads the sequence number in place.
    ShmRpc,
    /// `shm_ring::stream`, variable-size frames of any size, both sides busy-polling and
    /// in place: the sender copies the payload into a `claim`ed frame, the receiver reads
    /// the sequence number from the frame in the ring.
    ShmStream,
    /// `shm_alloc::pool` loans, both sides busy-polling: the sender loans a chunk of the
    /// payload size from a pool segment, writes the sequence number into it in place
    /// and sends its 16-byte offset through an SPSC ring; the receiver reads the
    /// sequence number in place and drops the sample (the chunk goes back to the pool).
    /// No payload byte is copied, so the cost does not grow with the size.
    ShmLoan,
    /// `shm-spsc-park`'s timing side; the echo side waits in a `WaitSet` (`Park`) over
    /// the ping ring alone, then receives and answers: a wake-up through `futex_waitv`.
    #[value(name = "shm-waitset-1")]
    #[serde(rename = "shm-waitset-1")]
    ShmWaitset1,
    /// As `shm-waitset-1`, the set holding 63 more rings (idle, of this process) after
    /// the ping ring: the cost of announcing on 64 event counts and of a 64-word
    /// `futex_waitv`.
    #[value(name = "shm-waitset-64")]
    #[serde(rename = "shm-waitset-64")]
    ShmWaitset64,
    /// `shm-spsc`'s timing side (busy-polling); the echo side is a tokio task on a
    /// current-thread runtime awaiting `Async` rings (`recv().await`,
    /// `send(v).await`; default spin, then the reactor).
    #[cfg(feature = "tokio")]
    ShmAsync,
    /// As `shm-async`, on a multi-thread runtime.
    #[cfg(feature = "tokio")]
    ShmAsyncMt,
    /// As `shm-async`, with no spin: every message wakes the task through the reactor
    /// thread (its `futex_waitv`, then the waker).
    #[cfg(feature = "tokio")]
    ShmAsyncPark,
    /// `uds`'s timing side (blocking reads); the echo side is a tokio task on a
    /// current-thread runtime reading and writing a tokio `UnixStream`.
    #[cfg(feature = "tokio")]
    TokioUds,
    /// As `tokio-uds`, on a multi-thread runtime.
    #[cfg(feature = "tokio")]
    TokioUdsMt,
    /// A Unix domain stream socket, blocking reads.
    Uds,
    /// Two pipes (named FIFOs), blocking reads.
    Pipe,
    /// TCP on 127.0.0.1 with `TCP_NODELAY`, blocking reads.
    Tcp,
    /// An in-process anchor: rtrb's SPSC ring buffer between two threads of one process
    /// on the same two cores, busy-polling `push`/`pop` (copies).
    Rtrb,
    /// An in-process anchor: crossbeam's `ArrayQueue` (Vyukov's bounded MPMC queue)
    /// between two threads of one process on the same two cores, busy-polling.
    ArrayQueue,
    /// iceoryx2 publish-subscribe (`ipc::Service`), set up as in its own benchmark: two
    /// services, history 0, subscriber buffer 1, busy-polling `receive`. The sender
    /// copies the payload into a loaned sample; the receiver reads the sequence number in
    /// place.
    #[cfg(feature = "iceoryx2")]
    Iceoryx2,
    /// gRPC unary calls (tonic, HTTP/2 over a Unix socket): a round trip is one call,
    /// answered with its request. The payload travels as a protobuf `bytes` field.
    #[cfg(feature = "grpc")]
    Grpc,
    /// iceoryx2 request-response (`ipc::Service`): a client and a server of one
    /// service, byte slices of the payload size loaned and written in place,
    /// busy-polling: a round trip is one request and its response.
    #[cfg(feature = "iceoryx2")]
    Iceoryx2Rpc,
    /// Zenoh publish-subscribe (peer mode, TCP on 127.0.0.1, no scouting): the payload
    /// published on one key and back on another; both sides wait in `recv`.
    #[cfg(feature = "zenoh")]
    Zenoh,
    /// `shm_transport::bridge` over the same Zenoh link: each side sends into a ring that
    /// an outbound bridge publishes, and reads a ring that an inbound bridge writes (four
    /// bridge threads); both sides wait in `recv`. Against `zenoh`: what the bridge adds.
    #[cfg(feature = "zenoh")]
    ShmBridge,
}

impl Transport {
    /// Every transport this build has, the physical limit first.
    pub fn all() -> Vec<Transport> {
        Transport::value_variants().to_vec()
    }

    /// The transports of a run without `--transports`: all but the ways of waiting
    /// (`shm-waitset-*`, `shm-async*`, `tokio-uds*`), which answer a question of their
    /// own and are run by name.
    pub fn defaults() -> Vec<Transport> {
        Self::all().into_iter().filter(|t| !t.waiting()).collect()
    }

    /// Whether it measures a way of waiting rather than a transport.
    pub fn waiting(self) -> bool {
        let name = self.name();
        name.starts_with("shm-waitset")
            || name.starts_with("shm-async")
            || name.starts_with("tokio-")
    }

    /// The name used on the command line, in tables and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Limit => "limit",
            Transport::ShmSpsc => "shm-spsc",
            Transport::ShmSpscPark => "shm-spsc-park",
            Transport::ShmBroadcast => "shm-broadcast",
            Transport::ShmRpc => "shm-rpc",
            Transport::ShmStream => "shm-stream",
            Transport::ShmLoan => "shm-loan",
            Transport::ShmWaitset1 => "shm-waitset-1",
            Transport::ShmWaitset64 => "shm-waitset-64",
            #[cfg(feature = "tokio")]
            Transport::ShmAsync => "shm-async",
            #[cfg(feature = "tokio")]
            Transport::ShmAsyncMt => "shm-async-mt",
            #[cfg(feature = "tokio")]
            Transport::ShmAsyncPark => "shm-async-park",
            #[cfg(feature = "tokio")]
            Transport::TokioUds => "tokio-uds",
            #[cfg(feature = "tokio")]
            Transport::TokioUdsMt => "tokio-uds-mt",
            Transport::Uds => "uds",
            Transport::Pipe => "pipe",
            Transport::Tcp => "tcp",
            Transport::Rtrb => "rtrb",
            Transport::ArrayQueue => "array-queue",
            #[cfg(feature = "iceoryx2")]
            Transport::Iceoryx2 => "iceoryx2",
            #[cfg(feature = "grpc")]
            Transport::Grpc => "grpc",
            #[cfg(feature = "iceoryx2")]
            Transport::Iceoryx2Rpc => "iceoryx2-rpc",
            #[cfg(feature = "zenoh")]
            Transport::Zenoh => "zenoh",
            #[cfg(feature = "zenoh")]
            Transport::ShmBridge => "shm-bridge",
        }
    }

    /// Whether it carries `[u8; N]` messages, for the sizes of [`SPSC_SIZES`] only.
    pub fn fixed_sizes(self) -> bool {
        matches!(
            self,
            Transport::ShmSpsc
                | Transport::ShmSpscPark
                | Transport::ShmWaitset1
                | Transport::ShmWaitset64
                | Transport::ShmBroadcast
                | Transport::ShmRpc
                | Transport::Rtrb
                | Transport::ArrayQueue
        ) || self.name().starts_with("shm-async")
            || self.name() == "shm-bridge"
    }

    /// Whether both sides are threads of the timing process (the in-process anchors).
    pub fn in_process(self) -> bool {
        matches!(self, Transport::Rtrb | Transport::ArrayQueue)
    }

    /// Parses [`name`](Self::name) (clap's parser of `--transports`).
    pub fn from_name(name: &str) -> Result<Transport> {
        <Transport as ValueEnum>::from_str(name, false).map_err(|e| anyhow!("transport: {e}"))
    }
}

/// The timing side of a transport.
pub trait Pinger {
    /// Sends one message whose first 8 bytes are `seq` and waits for its echo; returns
    /// the sequence number the echo carries.
    fn round_trip(&mut self, seq: u64) -> Result<u64>;

    /// Makes sure the echo side hears this side, before the first round trip of every
    /// round (the echo side is echoing). Only transports that drop messages sent before
    /// both ends are connected need it; they do it once.
    fn connect(&mut self) -> Result<()> {
        Ok(())
    }

    /// How many messages the echo side echoed before the last stop message, for
    /// transports echoed by a thread of this process (the echo process says it
    /// otherwise).
    fn echoed(&mut self) -> Result<u64> {
        bail!("this transport is echoed by the echo process")
    }

    /// Times up to `count` round trips with sequence numbers from `first_seq`, in
    /// batches of `batch` round trips (1: each round trip on its own), pushing each
    /// batch's duration in clock ticks to `samples`, until `count`, `budget` or `stop`;
    /// then ends the echo loop with [`STOP`]. Returns the next unused sequence number.
    ///
    /// A batch reads the clock once before and once after its round trips, so a clock
    /// that advances in coarse steps (10 ns on some guests) still gives a fine mean.
    ///
    /// # Errors
    ///
    /// A transport error, or a reply whose sequence number is not the one sent.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        clock: &Clock,
        first_seq: u64,
        count: usize,
        batch: usize,
        budget: Duration,
        stop: &AtomicBool,
        samples: &mut Vec<u64>,
    ) -> Result<u64> {
        let deadline = Instant::now() + budget;
        let batch = batch.max(1);
        let mut seq = first_seq;
        for i in 0..count / batch {
            // Relaxed: a stop request needs no ordering, only to be seen eventually.
            if (i * batch) % 64 < batch
                && (stop.load(Ordering::Relaxed) || Instant::now() >= deadline)
            {
                break;
            }
            let t0 = clock.now();
            for _ in 0..batch {
                let echoed = self.round_trip(seq)?;
                if echoed != seq {
                    bail!(
                        "message lost or corrupted: sent sequence number {seq}, echo carried \
                         {echoed}"
                    );
                }
                seq += 1;
            }
            let t1 = clock.now();
            samples.push(t1.wrapping_sub(t0));
        }
        let echoed = self.round_trip(STOP)?;
        if echoed != STOP {
            bail!("message lost or corrupted: sent the stop message, echo carried {echoed}");
        }
        Ok(seq)
    }
}

/// The echo side of a transport.
pub trait Echoer {
    /// Echoes every message until it has echoed [`STOP`]; returns how many it echoed
    /// before that.
    fn echo(&mut self) -> Result<u64>;
}

pub(super) fn seq_of(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    let seq = u64::from_le_bytes(word);
    #[cfg(debug_assertions)]
    let seq = faults::altered(seq);
    seq
}

/// Fault injection for the tests, in debug builds only (a release build, which is what
/// measures, has none): with `SHM_BENCH_FAULT_SEQ=N` in the environment, every read of
/// sequence number `N` reads another number, as a message corrupted on its way would
/// (in the latency bench's `seq_of`, and in the throughput receiver's check). The run
/// must then end with an error that names it.
#[cfg(debug_assertions)]
pub(super) mod faults {
    use std::sync::OnceLock;

    pub(in super::super) fn altered(seq: u64) -> u64 {
        static FAULT: OnceLock<Option<u64>> = OnceLock::new();
        let fault = FAULT.get_or_init(|| {
            std::env::var("SHM_BENCH_FAULT_SEQ")
                .ok()
                .and_then(|n| n.parse().ok())
        });
        if *fault == Some(seq) {
            seq.wrapping_add(1 << 40)
        } else {
            seq
        }
    }
}

pub(super) fn set_seq(bytes: &mut [u8], seq: u64) {
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
}

/// Counts busy-poll iterations and fails once a reply has taken longer than
/// [`PATIENCE`], so that a dead peer ends a busy-polling loop.
pub(super) struct Patience {
    spins: u32,
    since: Option<Instant>,
}

impl Patience {
    pub(super) fn new() -> Self {
        Patience {
            spins: 0,
            since: None,
        }
    }

    #[inline]
    pub(super) fn spin(&mut self, what: &str) -> Result<()> {
        spin_loop();
        self.spins = self.spins.wrapping_add(1);
        if self.spins % (1 << 16) == 0 {
            let since = *self.since.get_or_insert_with(Instant::now);
            if since.elapsed() > PATIENCE {
                bail!("no {what} for {PATIENCE:?}: the other process is gone or stuck");
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The physical limit of each size: the payload, then a sequence word.

/// Two blocks in a shared mapping of a file under `/dev/shm` (the same kind of mapping
/// the rings live in), one per direction, each `size` payload bytes followed by an
/// 8-byte sequence word (at the next multiple of 8), and starting on its own 128-byte
/// boundary.
///
/// The least any transport does to move `size` bytes: the sender writes the payload and
/// then the sequence word (`Release`); the receiver spins on the sequence word
/// (`Acquire`, `pause` between loads) and then reads what the transports' receivers read,
/// the payload's first 8 bytes; the echo side answers with a payload of the same size.
pub struct Limit {
    map: MmapMut,
    size: usize,
    message: Vec<u8>,
}

impl Limit {
    /// Where the sequence word sits in a block: right after the payload, 8-aligned.
    fn word_at(size: usize) -> usize {
        size.next_multiple_of(8)
    }

    /// The bytes of one direction's block: the payload and the sequence word, rounded up
    /// to 128 bytes.
    fn block(size: usize) -> usize {
        (Self::word_at(size) + 8).next_multiple_of(128)
    }

    /// The length of the file for `size`-byte payloads.
    fn file_len(size: usize) -> u64 {
        (2 * Self::block(size)) as u64
    }

    /// Creates the file for `size`-byte payloads (it must not exist) and maps it.
    pub fn create(path: &Path, size: usize) -> Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_len(Self::file_len(size))
            .with_context(|| format!("sizing {}", path.display()))?;
        Self::map(&file, path, size)
    }

    /// Maps the file made by [`create`](Self::create) for the same `size`.
    pub fn open(path: &Path, size: usize) -> Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        anyhow::ensure!(
            file.metadata()?.len() == Self::file_len(size),
            "{} is not {} bytes long",
            path.display(),
            Self::file_len(size)
        );
        Self::map(&file, path, size)
    }

    fn map(file: &File, path: &Path, size: usize) -> Result<Self> {
        anyhow::ensure!(size >= 8, "the limit needs payloads of at least 8 bytes");
        // SAFETY: the file is this run's own, sized above. Its sequence words are only
        // accessed through atomics; a payload is written only by its direction's sender
        // before the Release store of the sequence word, and read by the receiver after
        // the Acquire load that saw it, while the sender waits for the answer.
        let map = unsafe { MmapMut::map_mut(file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        Ok(Limit {
            map,
            size,
            message: vec![0x5a; size],
        })
    }

    /// The start of direction `dir`'s block (0: ping, 1: pong).
    fn base(&self, dir: usize) -> *mut u8 {
        self.map
            .as_ptr()
            .cast_mut()
            .wrapping_add(dir * Self::block(self.size))
    }

    fn word(&self, dir: usize) -> &AtomicU64 {
        let ptr = self
            .base(dir)
            .wrapping_add(Self::word_at(self.size))
            .cast::<AtomicU64>();
        // SAFETY: the word lies inside the block, 8-aligned (the block starts on a
        // 128-byte boundary of a page-aligned mapping), and the mapping lives as long as
        // `self`.
        unsafe { &*ptr }
    }

    /// Writes the payload carrying `seq`, then the sequence word.
    #[inline]
    fn send(&mut self, dir: usize, seq: u64) {
        set_seq(&mut self.message, seq);
        // SAFETY: the block holds `size` payload bytes; the receiver reads them only
        // after seeing the sequence word stored below, and has finished reading the
        // previous payload before it answered (see `map`).
        unsafe { core::ptr::copy_nonoverlapping(self.message.as_ptr(), self.base(dir), self.size) };
        // SYNC(limit-seq): Release; pairs with the receiver's Acquire load.
        self.word(dir).store(seq, Ordering::Release);
    }

    /// Spins until direction `dir`'s sequence word differs from `last`, then reads the
    /// payload's sequence number; returns the word and the payload's number.
    #[inline]
    fn receive(&self, dir: usize, last: u64, what: &str) -> Result<(u64, u64)> {
        let mut patience = Patience::new();
        let word = loop {
            // SYNC(limit-seq): Acquire; pairs with the sender's Release store.
            let word = self.word(dir).load(Ordering::Acquire);
            if word != last {
                break word;
            }
            patience.spin(what)?;
        };
        let mut head = [0u8; 8];
        // SAFETY: the payload is at least 8 bytes and was written before the sequence
        // word this thread saw (SYNC(limit-seq)); the sender does not write it again
        // before this side answers.
        unsafe { core::ptr::copy_nonoverlapping(self.base(dir), head.as_mut_ptr(), 8) };
        Ok((word, u64::from_le_bytes(head)))
    }
}

impl Pinger for Limit {
    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        // Relaxed: only the echo side writes the pong word; this side only compares.
        let last = self.word(1).load(Ordering::Relaxed);
        self.send(0, seq);
        Ok(self.receive(1, last, "limit echo")?.1)
    }
}

impl Echoer for Limit {
    fn echo(&mut self) -> Result<u64> {
        // Relaxed: this side's own pong word, the last ping it answered: a ping word that
        // differs is a new ping (the timing side may have sent it before this loop began).
        let mut last = self.word(1).load(Ordering::Relaxed);
        let mut echoed = 0;
        loop {
            let (word, seq) = self.receive(0, last, "limit ping")?;
            last = word;
            self.send(1, seq);
            if seq == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// shm-spsc: two typed rings of `[u8; N]`.

/// Calls `$f::<N>($args)` for the `N` equal to `$size`, one of [`SPSC_SIZES`].
macro_rules! by_spsc_size {
    ($size:expr, $f:ident ( $($arg:expr),* )) => {
        match $size {
            8 => $f::<8>($($arg),*),
            16 => $f::<16>($($arg),*),
            32 => $f::<32>($($arg),*),
            64 => $f::<64>($($arg),*),
            128 => $f::<128>($($arg),*),
            256 => $f::<256>($($arg),*),
            512 => $f::<512>($($arg),*),
            1024 => $f::<1024>($($arg),*),
            2048 => $f::<2048>($($arg),*),
            4096 => $f::<4096>($($arg),*),
            8192 => $f::<8192>($($arg),*),
            16384 => $f::<16384>($($arg),*),
            32768 => $f::<32768>($($arg),*),
            65536 => $f::<65536>($($arg),*),
            other => bail!(
                "shm-spsc carries fixed-size messages of {:?} bytes, not {other}",
                $crate::bench::transport::SPSC_SIZES
            ),
        }
    };
}
pub(crate) use by_spsc_size;

/// The segment names of one pair of latency rings.
pub fn spsc_names(base: &str) -> [String; 2] {
    [format!("{base}-ping"), format!("{base}-pong")]
}

fn wait_strategy(park: bool) -> WaitStrategy {
    if park {
        WaitStrategy::Park
    } else {
        WaitStrategy::BusySpin
    }
}

/// The timing side of `shm-spsc`: producer of the ping ring, consumer of the pong ring.
pub struct SpscPinger<const N: usize> {
    tx: Producer<[u8; N]>,
    rx: Consumer<[u8; N]>,
    message: [u8; N],
    park: bool,
}

/// Creates both rings named after `base` and attaches the timing side.
pub fn spsc_pinger<const N: usize>(base: &str, park: bool) -> Result<Box<dyn Pinger>> {
    let [ping, pong] = spsc_names(base);
    let wait = wait_strategy(park);
    let tx = Builder::<[u8; N]>::new(ping.as_str())
        .capacity(LATENCY_CAPACITY)
        .wait_strategy(wait)
        .mode(OpenMode::Create)
        .producer()?;
    let rx = Builder::<[u8; N]>::new(pong.as_str())
        .capacity(LATENCY_CAPACITY)
        .wait_strategy(wait)
        .mode(OpenMode::Create)
        .consumer()?;
    Ok(Box::new(SpscPinger {
        tx,
        rx,
        message: [0x5a; N],
        park,
    }))
}

impl<const N: usize> Pinger for SpscPinger<N> {
    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        set_seq(&mut self.message, seq);
        if self.park {
            self.tx.send(self.message).map_err(|e| anyhow!("{e}"))?;
            let reply = self.rx.recv().map_err(|e| anyhow!("{e}"))?;
            return Ok(seq_of(&reply));
        }
        send_in_place(&mut self.tx, &self.message)?;
        await_in_place(&mut self.rx, "shm-spsc echo")
    }
}

/// Sends `message` through `tx` in place (`reserve`, copy, `commit`). For a ring that
/// holds at most one message in a ping-pong: never full.
#[inline]
fn send_in_place<const N: usize>(tx: &mut Producer<[u8; N]>, message: &[u8; N]) -> Result<()> {
    let mut slot = tx.reserve().map_err(|e| anyhow!("{e}"))?;
    *slot = *message;
    slot.commit();
    Ok(())
}

/// Busy-polls `rx` for the next message and returns its sequence number, read in place
/// (`try_recv_ref`); `what` names the message awaited, for the error when none comes.
#[inline]
fn await_in_place<const N: usize>(rx: &mut Consumer<[u8; N]>, what: &str) -> Result<u64> {
    let mut patience = Patience::new();
    loop {
        match rx.try_recv_ref() {
            Ok(message) => return Ok(seq_of(&*message)),
            Err(TryRecvError::Empty) => patience.spin(what)?,
            Err(e) => bail!("{e}"),
        }
    }
}

/// The echo side of `shm-spsc`: consumer of the ping ring, producer of the pong ring.
pub struct SpscEchoer<const N: usize> {
    rx: Consumer<[u8; N]>,
    tx: Producer<[u8; N]>,
    message: [u8; N],
    park: bool,
}

/// Opens both rings named after `base` from the echo side: the consumer of the ping
/// ring and the producer of the pong ring, waiting with `wait`.
#[allow(clippy::type_complexity)]
pub fn spsc_echo_rings<const N: usize>(
    base: &str,
    wait: WaitStrategy,
) -> Result<(Consumer<[u8; N]>, Producer<[u8; N]>)> {
    let [ping, pong] = spsc_names(base);
    let rx = Builder::<[u8; N]>::new(ping.as_str())
        .capacity(LATENCY_CAPACITY)
        .wait_strategy(wait)
        .mode(OpenMode::Open)
        .consumer()?;
    let tx = Builder::<[u8; N]>::new(pong.as_str())
        .capacity(LATENCY_CAPACITY)
        .wait_strategy(wait)
        .mode(OpenMode::Open)
        .producer()?;
    Ok((rx, tx))
}

/// Opens both rings named after `base` and attaches the echo side.
pub fn spsc_echoer<const N: usize>(base: &str, park: bool) -> Result<Box<dyn Echoer>> {
    let (rx, tx) = spsc_echo_rings::<N>(base, wait_strategy(park))?;
    Ok(Box::new(SpscEchoer {
        rx,
        tx,
        message: [0x5a; N],
        park,
    }))
}

impl<const N: usize> Echoer for SpscEchoer<N> {
    fn echo(&mut self) -> Result<u64> {
        let mut echoed = 0;
        loop {
            let seq = if self.park {
                let message = self.rx.recv().map_err(|e| anyhow!("{e}"))?;
                self.tx.send(message).map_err(|e| anyhow!("{e}"))?;
                seq_of(&message)
            } else {
                let seq = await_in_place(&mut self.rx, "shm-spsc ping")?;
                set_seq(&mut self.message, seq);
                send_in_place(&mut self.tx, &self.message)?;
                seq
            };
            if seq == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

/// The segment names of a `shm-rpc` service: the service, and its request ring.
pub fn rpc_names(base: &str) -> [String; 2] {
    let service = format!("{base}-rpc");
    let requests = format!("{service}.requests");
    [service, requests]
}

fn rpc_service<const N: usize>(base: &str) -> request_response::Builder<[u8; N], [u8; N]> {
    let [service, _] = rpc_names(base);
    request_response::Builder::new(service.as_str())
        .workers(1)
        .clients(1)
        .capacity(LATENCY_CAPACITY)
        .wait_strategy(WaitStrategy::BusySpin)
}

/// The timing side of `shm-rpc`: a client.
pub struct RpcPinger<const N: usize> {
    client: request_response::Client<[u8; N], [u8; N]>,
}

/// Creates the service named after `base` and attaches a client.
pub fn rpc_pinger<const N: usize>(base: &str) -> Result<Box<dyn Pinger>> {
    let client = rpc_service::<N>(base).mode(OpenMode::Create).client()?;
    Ok(Box::new(RpcPinger { client }))
}

impl<const N: usize> Pinger for RpcPinger<N> {
    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        let call = self
            .client
            .send_deadline(None, |request| {
                request.fill(0x5a);
                set_seq(request, seq);
            })
            .map_err(|e| anyhow!("{e}"))?;
        call.wait_with(None, |response| seq_of(response))
            .map_err(|e| anyhow!("{e}"))
    }
}

/// The echo side of `shm-rpc`: a server worker.
pub struct RpcEchoer<const N: usize> {
    server: request_response::Server<[u8; N], [u8; N]>,
}

/// Opens the service named after `base` and attaches a worker.
pub fn rpc_echoer<const N: usize>(base: &str) -> Result<Box<dyn Echoer>> {
    let server = rpc_service::<N>(base).mode(OpenMode::Open).server()?;
    Ok(Box::new(RpcEchoer { server }))
}

impl<const N: usize> Echoer for RpcEchoer<N> {
    fn echo(&mut self) -> Result<u64> {
        let mut echoed = 0;
        loop {
            let mut patience = Patience::new();
            let request = loop {
                match self.server.try_recv() {
                    Ok(request) => break request,
                    Err(TryRecvError::Empty) => patience.spin("shm-rpc request")?,
                    Err(e) => bail!("{e}"),
                }
            };
            let seq = seq_of(&*request);
            request.respond_with(|response| {
                response.fill(0x5a);
                set_seq(response, seq);
            });
            if seq == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

/// Subscribers of a `shm-broadcast` latency ring besides the echoing one.
pub const BROADCAST_OTHERS: u32 = 3;

/// The segment names of a `shm-broadcast` pair: the broadcast ring out, the SPSC ring
/// back.
pub fn broadcast_names(base: &str) -> [String; 2] {
    [format!("{base}-bcast"), format!("{base}-pong")]
}

/// The timing side of `shm-broadcast`: the publisher, the reply ring's consumer, and the
/// other subscribers' threads.
pub struct BroadcastPinger<const N: usize> {
    tx: broadcast::Publisher<[u8; N]>,
    rx: Consumer<[u8; N]>,
    message: [u8; N],
    others: Vec<std::thread::JoinHandle<Result<()>>>,
    stop: std::sync::Arc<AtomicBool>,
}

/// Creates both rings named after `base`, attaches the timing side and starts the other
/// subscribers.
pub fn broadcast_pinger<const N: usize>(base: &str) -> Result<Box<dyn Pinger>> {
    let [out, pong] = broadcast_names(base);
    let ring = broadcast::Builder::<[u8; N]>::new(out.as_str())
        .capacity(LATENCY_CAPACITY)
        .subscribers(BROADCAST_OTHERS + 1)
        .overflow(broadcast::Overflow::Lap)
        .mode(OpenMode::Create);
    let tx = ring.publisher()?;
    let ring = ring.mode(OpenMode::Open);
    let rx = Builder::<[u8; N]>::new(pong.as_str())
        .capacity(LATENCY_CAPACITY)
        .mode(OpenMode::Create)
        .consumer()?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let others = (0..BROADCAST_OTHERS)
        .map(|_| {
            let mut other = ring.subscriber()?;
            let stop = stop.clone();
            Ok(std::thread::spawn(move || -> Result<()> {
                // Relaxed: a stop request carries no data.
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    loop {
                        match other.try_recv() {
                            Ok(_) | Err(broadcast::TryRecvError::Lagged { .. }) => {}
                            Err(broadcast::TryRecvError::Empty) => break,
                            Err(e) => bail!("{e}"),
                        }
                    }
                }
                Ok(())
            }))
        })
        .collect::<Result<_>>()?;
    Ok(Box::new(BroadcastPinger {
        tx,
        rx,
        message: [0x5a; N],
        others,
        stop,
    }))
}

impl<const N: usize> Pinger for BroadcastPinger<N> {
    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        set_seq(&mut self.message, seq);
        // `Lap`: a publish never waits.
        self.tx.try_send(self.message).map_err(|e| anyhow!("{e}"))?;
        await_in_place(&mut self.rx, "shm-broadcast echo")
    }
}

impl<const N: usize> Drop for BroadcastPinger<N> {
    fn drop(&mut self) {
        // Relaxed: as above.
        self.stop.store(true, Ordering::Relaxed);
        for other in self.others.drain(..) {
            if let Ok(Err(e)) = other.join() {
                eprintln!("shm bench: a shm-broadcast subscriber failed: {e}");
            }
        }
    }
}

/// The echo side of `shm-broadcast`: a subscriber of the broadcast ring, the producer of
/// the reply ring.
pub struct BroadcastEchoer<const N: usize> {
    rx: broadcast::Subscriber<[u8; N]>,
    tx: Producer<[u8; N]>,
    message: [u8; N],
}

/// Opens both rings named after `base` and attaches the echo side.
pub fn broadcast_echoer<const N: usize>(base: &str) -> Result<Box<dyn Echoer>> {
    let [out, pong] = broadcast_names(base);
    let rx = broadcast::Builder::<[u8; N]>::new(out.as_str())
        .mode(OpenMode::Open)
        .subscriber()?;
    let tx = Builder::<[u8; N]>::new(pong.as_str())
        .mode(OpenMode::Open)
        .producer()?;
    Ok(Box::new(BroadcastEchoer {
        rx,
        tx,
        message: [0x5a; N],
    }))
}

impl<const N: usize> Echoer for BroadcastEchoer<N> {
    fn echo(&mut self) -> Result<u64> {
        let mut echoed = 0;
        loop {
            let mut patience = Patience::new();
            let seq = loop {
                match self.rx.try_recv() {
                    Ok(message) => break seq_of(&message),
                    Err(broadcast::TryRecvError::Empty) => patience.spin("shm-broadcast ping")?,
                    Err(e) => bail!("{e}"),
                }
            };
            set_seq(&mut self.message, seq);
            send_in_place(&mut self.tx, &self.message)?;
            if seq == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

/// The size of a `shm-stream` latency ring for `size`-byte messages: room for a few
/// frames, at least 64 KiB.
fn stream_capacity(size: usize) -> u64 {
    ((size as u64 + 8) * 4).next_power_of_two().max(1 << 16)
}

/// The timing side of `shm-stream`: producer of the ping ring, consumer of the pong ring.
pub struct ShmStreamPinger {
    tx: stream::Producer,
    rx: stream::Consumer,
    message: Vec<u8>,
}

/// Creates both stream rings named after `base` and attaches the timing side.
pub fn shm_stream_pinger(base: &str, size: usize) -> Result<Box<dyn Pinger>> {
    let [ping, pong] = spsc_names(base);
    let ring = |name: &str| {
        stream::Builder::new(name)
            .capacity(stream_capacity(size))
            .wait_strategy(WaitStrategy::BusySpin)
            .mode(OpenMode::Create)
    };
    Ok(Box::new(ShmStreamPinger {
        tx: ring(&ping).producer()?,
        rx: ring(&pong).consumer()?,
        message: vec![0x5a; size],
    }))
}

impl Pinger for ShmStreamPinger {
    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        set_seq(&mut self.message, seq);
        let mut claim = self.tx.claim(self.message.len())?;
        claim.copy_from_slice(&self.message);
        claim.commit();
        let mut patience = Patience::new();
        loop {
            match self.rx.try_recv() {
                Ok(reply) => return Ok(seq_of(&reply)),
                Err(TryRecvError::Empty) => patience.spin("shm-stream echo")?,
                Err(e) => bail!("{e}"),
            }
        }
    }
}

/// The echo side of `shm-stream`: consumer of the ping ring, producer of the pong ring.
pub struct ShmStreamEchoer {
    rx: stream::Consumer,
    tx: stream::Producer,
    message: Vec<u8>,
}

/// Opens both stream rings named after `base` and attaches the echo side.
pub fn shm_stream_echoer(base: &str, size: usize) -> Result<Box<dyn Echoer>> {
    let [ping, pong] = spsc_names(base);
    let ring = |name: &str| {
        stream::Builder::new(name)
            .capacity(stream_capacity(size))
            .wait_strategy(WaitStrategy::BusySpin)
            .mode(OpenMode::Open)
    };
    Ok(Box::new(ShmStreamEchoer {
        rx: ring(&ping).consumer()?,
        tx: ring(&pong).producer()?,
        message: vec![0x5a; size],
    }))
}

impl Echoer for ShmStreamEchoer {
    fn echo(&mut self) -> Result<u64> {
        let mut echoed = 0;
        loop {
            let mut patience = Patience::new();
            let seq = loop {
                match self.rx.try_recv() {
                    Ok(message) => break seq_of(&message),
                    Err(TryRecvError::Empty) => patience.spin("shm-stream ping")?,
                    Err(e) => bail!("{e}"),
                }
            };
            // The reply ring holds at most one frame in a ping-pong: never full.
            set_seq(&mut self.message, seq);
            let mut claim = self.tx.claim(self.message.len())?;
            claim.copy_from_slice(&self.message);
            claim.commit();
            if seq == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// shm-loan: pool chunks, their offsets through two SPSC rings.

/// The segment names of one `shm-loan` pair: the two offset rings, then the pool.
pub fn loan_names(base: &str) -> [String; 3] {
    let [ping, pong] = spsc_names(base);
    [ping, pong, format!("{base}-pool")]
}

/// Chunks of the `shm-loan` pool: each direction has at most one in flight and one
/// held, the rest is slack.
const LOAN_CHUNKS: u32 = 8;

/// One side of `shm-loan`: its pool handle, the ring it sends offsets on, and the ring
/// it receives them from (bound to its pool participant).
pub struct ShmLoan {
    pool: Pool,
    tx: loan::Sender<Producer<ShmOffset>>,
    rx: loan::Receiver<Consumer<ShmOffset>>,
    size: usize,
}

/// Creates (timing side) or opens (echo side) the pool and both rings named after
/// `base`, for `size`-byte payloads.
pub fn shm_loan(base: &str, size: usize, create: bool) -> Result<ShmLoan> {
    let [ping, pong, pool_name] = loan_names(base);
    let pool = if create {
        Pool::builder(pool_name.as_str())
            .class(size as u64, LOAN_CHUNKS)
            .participants(2)
            .create()?
    } else {
        Pool::builder(pool_name.as_str()).open()?
    };
    let mode = if create {
        OpenMode::Create
    } else {
        OpenMode::Open
    };
    let ring = |name: &str| {
        Builder::<ShmOffset>::new(name)
            .capacity(LATENCY_CAPACITY)
            .wait_strategy(WaitStrategy::BusySpin)
            .mode(mode)
    };
    let (tx, rx) = if create {
        (ring(&ping).producer()?, ring(&pong).consumer()?)
    } else {
        (ring(&pong).producer()?, ring(&ping).consumer()?)
    };
    let rx = loan::Receiver::new(rx, &pool);
    Ok(ShmLoan {
        pool,
        tx: loan::Sender::new(tx),
        rx,
        size,
    })
}

impl ShmLoan {
    /// Loans a chunk, writes `seq` into it in place, sends its offset.
    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        let mut chunk = self.pool.loan(self.size)?;
        set_seq(chunk.as_mut_slice(), seq);
        // The ring holds at most one offset in a ping-pong: never full.
        self.tx.try_send(chunk).map_err(|e| anyhow!("{e}"))
    }

    /// Waits for an offset, reads the sequence number in place, returns the chunk.
    #[inline]
    fn receive(&mut self, what: &str) -> Result<u64> {
        let mut patience = Patience::new();
        loop {
            match self.rx.try_recv(&self.pool) {
                Ok(sample) => return Ok(seq_of(&sample)),
                Err(loan::RecvError::Ring(TryRecvError::Empty)) => patience.spin(what)?,
                Err(e) => bail!("{e}"),
            }
        }
    }
}

impl Pinger for ShmLoan {
    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        self.send(seq)?;
        self.receive("shm-loan echo")
    }
}

impl Echoer for ShmLoan {
    fn echo(&mut self) -> Result<u64> {
        let mut echoed = 0;
        loop {
            let seq = self.receive("shm-loan ping")?;
            self.send(seq)?;
            if seq == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Byte streams: Unix socket, pipes, TCP.

/// A byte-stream transport: write the message, read exactly as many bytes back.
pub struct StreamPinger<W, R> {
    writer: W,
    reader: R,
    message: Vec<u8>,
    reply: Vec<u8>,
}

impl<W: Write, R: Read> StreamPinger<W, R> {
    pub fn new(writer: W, reader: R, size: usize) -> Self {
        StreamPinger {
            writer,
            reader,
            message: vec![0x5a; size],
            reply: vec![0; size],
        }
    }
}

impl<W: Write, R: Read> Pinger for StreamPinger<W, R> {
    #[inline]
    fn round_trip(&mut self, seq: u64) -> Result<u64> {
        set_seq(&mut self.message, seq);
        self.writer.write_all(&self.message)?;
        self.reader
            .read_exact(&mut self.reply)
            .context("reading the echo")?;
        Ok(seq_of(&self.reply))
    }
}

/// The echo side of a byte-stream transport.
pub struct StreamEchoer<W, R> {
    writer: W,
    reader: R,
    message: Vec<u8>,
}

impl<W: Write, R: Read> StreamEchoer<W, R> {
    pub fn new(writer: W, reader: R, size: usize) -> Self {
        StreamEchoer {
            writer,
            reader,
            message: vec![0; size],
        }
    }
}

impl<W: Write, R: Read> Echoer for StreamEchoer<W, R> {
    fn echo(&mut self) -> Result<u64> {
        let mut echoed = 0;
        loop {
            self.reader
                .read_exact(&mut self.message)
                .context("reading a ping")?;
            self.writer.write_all(&self.message)?;
            if seq_of(&self.message) == STOP {
                return Ok(echoed);
            }
            echoed += 1;
        }
    }
}

/// The abstract-namespace address of a run's Unix socket (nothing to clean up).
pub fn uds_address(name: &str) -> Result<SocketAddr> {
    Ok(SocketAddr::from_abstract_name(name.as_bytes())?)
}

/// Listens on the abstract Unix socket `name`.
pub fn uds_listen(name: &str) -> Result<UnixListener> {
    Ok(UnixListener::bind_addr(&uds_address(name)?)?)
}

/// Connects to the abstract Unix socket `name`.
pub fn uds_connect(name: &str) -> Result<UnixStream> {
    Ok(UnixStream::connect_addr(&uds_address(name)?)?)
}

/// Listens on an ephemeral TCP port of 127.0.0.1.
pub fn tcp_listen() -> Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0")?)
}

/// Connects to `port` on 127.0.0.1 with `TCP_NODELAY`.
pub fn tcp_connect(port: u16) -> Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The two FIFOs of a pipe transport: `[ping, pong]`.
pub fn fifo_paths(base: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut name = base.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [with("-ping.fifo"), with("-pong.fifo")]
}

/// Makes a FIFO with mode 0600.
pub fn make_fifo(path: &Path) -> Result<()> {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    mknodat(CWD, path, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0)
        .with_context(|| format!("making the FIFO {}", path.display()))
}

/// Opens the timing side's ends: ping for writing, then pong for reading. Each open
/// waits for the echo side's matching open, which [`fifo_echo_ends`] makes in the same
/// order, so neither side can wait for the other forever.
pub fn fifo_ping_ends(base: &Path) -> Result<(File, File)> {
    let [ping, pong] = fifo_paths(base);
    let writer = File::options().write(true).open(&ping)?;
    let reader = File::open(&pong)?;
    Ok((writer, reader))
}

/// Opens the echo side's ends: ping for reading, then pong for writing.
pub fn fifo_echo_ends(base: &Path) -> Result<(File, File)> {
    let [ping, pong] = fifo_paths(base);
    let reader = File::open(&ping)?;
    let writer = File::options().write(true).open(&pong)?;
    Ok((writer, reader))
}

// ---------------------------------------------------------------------------------------
// iceoryx2 publish-subscribe.

#[cfg(feature = "iceoryx2")]
pub mod iox {
    //! iceoryx2 publish-subscribe, set up as in iceoryx2's own publish-subscribe
    //! benchmark: a service each way, one publisher and one subscriber each, history 0,
    //! a subscriber buffer of 1 with safe overflow, and busy-polling `receive`.

    use std::time::{Duration, Instant};

    use anyhow::{Result, anyhow, bail};
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::prelude::*;

    use super::{Echoer, HELLO, Patience, Pinger, STOP, seq_of, set_seq};

    type Pub = Publisher<ipc::Service, [u8], ()>;
    type Sub = Subscriber<ipc::Service, [u8], ()>;

    /// One end: publishes on one service, subscribes to the other.
    pub struct Iox {
        // Kept alive for the ports.
        _node: Node<ipc::Service>,
        publisher: Pub,
        subscriber: Sub,
        message: Vec<u8>,
        connected: bool,
    }

    /// An iceoryx2 error as ours.
    pub(crate) fn err(e: impl core::fmt::Debug) -> anyhow::Error {
        anyhow!("iceoryx2: {e:?}")
    }

    /// Opens (or creates) the services `<base>-a2b` and `<base>-b2a`; the timing side
    /// (`timing = true`) publishes on a2b.
    pub fn open(base: &str, size: usize, timing: bool) -> Result<Iox> {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(err)?;
        let service = |suffix: &str| -> Result<_> {
            let name = ServiceName::new(&format!("{base}-{suffix}")).map_err(err)?;
            node.service_builder(&name)
                .publish_subscribe::<[u8]>()
                .max_publishers(1)
                .max_subscribers(1)
                .history_size(0)
                .subscriber_max_buffer_size(1)
                .enable_safe_overflow(true)
                .open_or_create()
                .map_err(err)
        };
        let (out, back) = if timing {
            (service("a2b")?, service("b2a")?)
        } else {
            (service("b2a")?, service("a2b")?)
        };
        let publisher = out
            .publisher_builder()
            .initial_max_slice_len(size)
            .create()
            .map_err(err)?;
        let subscriber = back.subscriber_builder().create().map_err(err)?;
        Ok(Iox {
            _node: node,
            publisher,
            subscriber,
            message: vec![0x5a; size],
            connected: false,
        })
    }

    impl Iox {
        fn send(&mut self, seq: u64) -> Result<()> {
            set_seq(&mut self.message, seq);
            let sample = self
                .publisher
                .loan_slice_uninit(self.message.len())
                .map_err(err)?;
            sample.write_from_slice(&self.message).send().map_err(err)?;
            Ok(())
        }

        fn try_receive(&mut self) -> Result<Option<u64>> {
            Ok(self
                .subscriber
                .receive()
                .map_err(err)?
                .map(|sample| seq_of(sample.payload())))
        }
    }

    impl Pinger for Iox {
        #[inline]
        fn round_trip(&mut self, seq: u64) -> Result<u64> {
            self.send(seq)?;
            let mut patience = Patience::new();
            loop {
                if let Some(echoed) = self.try_receive()? {
                    return Ok(echoed);
                }
                patience.spin("iceoryx2 echo")?;
            }
        }

        /// A publisher delivers only to subscribers it has connected to: send
        /// [`HELLO`] every millisecond until one comes back, then drain the extra echoes.
        fn connect(&mut self) -> Result<()> {
            if self.connected {
                return Ok(());
            }
            let give_up = Instant::now() + Duration::from_secs(10);
            'hello: loop {
                self.send(HELLO)?;
                let resend = Instant::now() + Duration::from_millis(1);
                while Instant::now() < resend {
                    if self.try_receive()? == Some(HELLO) {
                        break 'hello;
                    }
                }
                if Instant::now() > give_up {
                    bail!("iceoryx2: no echo of a hello within 10 s");
                }
            }
            let drain = Instant::now() + Duration::from_millis(20);
            while Instant::now() < drain {
                self.try_receive()?;
            }
            self.connected = true;
            Ok(())
        }
    }

    impl Echoer for Iox {
        fn echo(&mut self) -> Result<u64> {
            let mut echoed = 0;
            let mut patience = Patience::new();
            loop {
                let Some(seq) = self.try_receive()? else {
                    patience.spin("iceoryx2 ping")?;
                    continue;
                };
                patience = Patience::new();
                self.send(seq)?;
                if seq == STOP {
                    return Ok(echoed);
                }
                if seq != HELLO {
                    echoed += 1;
                }
            }
        }
    }
}

#[cfg(feature = "iceoryx2")]
pub mod iox_rpc {
    //! iceoryx2 request-response: a client and a server of one service carrying byte
    //! slices of the payload size, busy-polling; a round trip is one request and its
    //! response, each loaned, written and read in place.

    use std::time::{Duration, Instant};

    use anyhow::{Result, bail};
    use iceoryx2::port::client::Client;
    use iceoryx2::port::server::Server;
    use iceoryx2::prelude::*;

    use super::iox::err;
    use super::{Echoer, HELLO, Patience, Pinger, STOP, seq_of, set_seq};

    type Factory = iceoryx2::service::port_factory::request_response::PortFactory<
        ipc::Service,
        [u8],
        (),
        [u8],
        (),
    >;

    fn service(base: &str) -> Result<(Node<ipc::Service>, Factory)> {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(err)?;
        let name = ServiceName::new(&format!("{base}-rpc")).map_err(err)?;
        let service = node
            .service_builder(&name)
            .request_response::<[u8], [u8]>()
            .max_clients(1)
            .max_servers(1)
            .open_or_create()
            .map_err(err)?;
        Ok((node, service))
    }

    /// The timing side: a client.
    pub struct IoxClient {
        _node: Node<ipc::Service>,
        client: Client<ipc::Service, [u8], (), [u8], ()>,
        size: usize,
        connected: bool,
    }

    /// Opens (or creates) the service `<base>-rpc` and a client of it.
    pub fn client(base: &str, size: usize) -> Result<IoxClient> {
        let (node, service) = service(base)?;
        let client = service
            .client_builder()
            .initial_max_slice_len(size)
            .create()
            .map_err(err)?;
        Ok(IoxClient {
            _node: node,
            client,
            size,
            connected: false,
        })
    }

    impl IoxClient {
        /// Sends `seq` and waits for the response until `until` (`None`: with the
        /// patience of a round trip).
        fn call(&mut self, seq: u64, until: Option<Instant>) -> Result<Option<u64>> {
            let mut request = self.client.loan_slice(self.size).map_err(err)?;
            set_seq(request.payload_mut(), seq);
            let pending = request.send().map_err(err)?;
            let mut patience = Patience::new();
            loop {
                if let Some(response) = pending.receive().map_err(err)? {
                    return Ok(Some(seq_of(response.payload())));
                }
                match until {
                    Some(until) if Instant::now() > until => return Ok(None),
                    Some(_) => {}
                    None => patience.spin("iceoryx2 response")?,
                }
            }
        }
    }

    impl Pinger for IoxClient {
        #[inline]
        fn round_trip(&mut self, seq: u64) -> Result<u64> {
            Ok(self.call(seq, None)?.unwrap_or(u64::MAX))
        }

        /// A request reaches only the servers the client has connected to: send
        /// [`HELLO`] until one is answered.
        fn connect(&mut self) -> Result<()> {
            if self.connected {
                return Ok(());
            }
            let give_up = Instant::now() + Duration::from_secs(10);
            while self.call(HELLO, Some(Instant::now() + Duration::from_millis(1)))? != Some(HELLO)
            {
                if Instant::now() > give_up {
                    bail!("iceoryx2: no response to a hello within 10 s");
                }
            }
            self.connected = true;
            Ok(())
        }
    }

    /// The echo side: a server.
    pub struct IoxServer {
        _node: Node<ipc::Service>,
        server: Server<ipc::Service, [u8], (), [u8], ()>,
        size: usize,
    }

    /// Opens (or creates) the service `<base>-rpc` and a server of it.
    pub fn server(base: &str, size: usize) -> Result<IoxServer> {
        let (node, service) = service(base)?;
        let server = service
            .server_builder()
            .initial_max_slice_len(size)
            .create()
            .map_err(err)?;
        Ok(IoxServer {
            _node: node,
            server,
            size,
        })
    }

    impl Echoer for IoxServer {
        fn echo(&mut self) -> Result<u64> {
            let mut echoed = 0;
            let mut patience = Patience::new();
            loop {
                let Some(request) = self.server.receive().map_err(err)? else {
                    patience.spin("iceoryx2 request")?;
                    continue;
                };
                patience = Patience::new();
                let seq = seq_of(request.payload());
                let mut response = request.loan_slice(self.size).map_err(err)?;
                set_seq(response.payload_mut(), seq);
                response.send().map_err(err)?;
                if seq == STOP {
                    return Ok(echoed);
                }
                if seq != HELLO {
                    echoed += 1;
                }
            }
        }
    }
}
