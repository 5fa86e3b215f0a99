//! Camera-sized frames (6 MiB) passed as pool loans from a producer to a consumer
//! process, with zero copies, a consumer killed and restarted midway, and every chunk
//! reclaimed.
//!
//! ```sh
//! cargo run --release --example frames
//! ```
//!
//! The producer (this process) creates a pool with one size class of 6 MiB chunks and
//! an SPSC ring of `ShmOffset`s, then starts this program again as the consumer. For
//! each frame it loans a chunk, writes the frame in place, and sends the chunk's 16-byte
//! offset through the ring. The consumer reads each frame in place, checks every word,
//! and drops the sample, which returns the chunk to the pool. It reports each frame on
//! its standard output.
//!
//! When the consumer has reported 20 frames, the producer kills it with `SIGKILL`.
//! At that point it usually holds a sample, and the ring is full of chunks in flight to
//! it. The producer returns those chunks to the pool with `Pool::reclaim_dead`, starts a
//! new consumer, and sends the remaining frames. The new consumer resumes the ring where
//! the dead one stopped: it gets the offsets left in the ring but refuses them as stale,
//! because their chunks were reclaimed (and may already carry newer frames). So it sees
//! only whole frames. At the end every chunk of the pool must be free again.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use shm_transport::alloc::{Error as AllocError, Pool, Segment, ShmOffset};
use shm_transport::ring::{OpenMode, RecvTimeoutError, loan, spsc};
use shm_transport::sync::affinity;

/// The size of one frame: a 1920x1080 RGB frame (6.2 MB) fits, with room to spare.
const FRAME_BYTES: usize = 6 << 20;
/// A frame as the words it is written and checked in, viewed in place in a chunk.
type Frame = [u64; FRAME_BYTES / 8];
/// Chunks in the pool. At most 4 are in the ring, 1 is held by the consumer and 1 is
/// being written by the producer, so 8 never run out.
const CHUNKS: u32 = 8;
/// Slots in the ring: how many frames can be in flight to the consumer.
const RING_SLOTS: u64 = 4;
/// Frames sent in total.
const FRAMES: u64 = 60;
/// The first consumer is killed once it has reported this many frames.
const KILL_AFTER: usize = 20;
/// What the consumer does with a frame besides checking it (inference, encoding),
/// stood in for by a sleep. It makes the producer run ahead of the consumer, so that
/// the ring is full when the consumer is killed.
const WORK: Duration = Duration::from_millis(3);
/// How long either side waits for the other before giving up with an error.
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("consumer") => {
            let pool = args
                .next()
                .context("usage: frames consumer POOL RING [CORE]")?;
            let ring = args
                .next()
                .context("usage: frames consumer POOL RING [CORE]")?;
            let core = args.next().map(|c| c.parse()).transpose()?;
            consumer(&pool, &ring, core)
        }
        _ => producer(),
    }
}

/// Writes frame `seq` in place: word 0 is the frame number, and word `i` is `seq ^ i`,
/// so that two different frames differ in every word.
fn fill(frame: &mut Frame, seq: u64) {
    for (i, word) in frame.iter_mut().enumerate() {
        *word = seq ^ i as u64;
    }
}

/// Checks a frame in place, word by word, and returns its number.
fn check(frame: &Frame) -> Result<u64> {
    let seq = frame[0];
    if let Some(i) = (1..frame.len()).find(|&i| frame[i] != seq ^ i as u64) {
        bail!("frame {seq} is torn: word {i} is {:#x}", frame[i]);
    }
    Ok(seq)
}

/// The consumer process: receives frames until the producer closes the ring, checks each
/// in place, and reports `got N` (or `stale` for an offset whose chunk was reclaimed).
fn consumer(pool: &str, ring: &str, core: Option<usize>) -> Result<()> {
    if let Some(core) = core {
        affinity::pin_current_thread(core)?;
    }
    let pool = Pool::builder(pool).open()?;
    let ring = spsc::Builder::<ShmOffset>::new(ring)
        .mode(OpenMode::Open)
        .consumer()?;
    // Binds this process's pool participant to the ring, so that the chunks sent to it
    // are returned to the pool if this process dies before it drops them.
    let mut rx = loan::Receiver::new(ring, &pool);
    let mut out = std::io::stdout().lock();
    let mut last = None;
    loop {
        match rx.recv_deadline(&pool, Some(Instant::now() + TIMEOUT)) {
            Ok(sample) => {
                // A view of the chunk, not a copy: the bytes stay where the producer
                // wrote them.
                let frame = sample
                    .value::<Frame>()
                    .context("a sample shorter than a frame")?;
                let seq = check(frame)?;
                ensure!(
                    last.is_none_or(|last| seq > last),
                    "frame {seq} after frame {last:?}"
                );
                last = Some(seq);
                writeln!(out, "got {seq}")?;
                thread::sleep(WORK);
                // Dropping the sample returns the chunk to the pool.
                drop(sample);
            }
            // The chunk this offset names was reclaimed after a previous consumer died:
            // the offset is refused before a byte of the chunk is read.
            Err(loan::RecvError::Chunk(e)) if matches!(*e, AllocError::StaleOffset { .. }) => {
                writeln!(out, "stale")?;
            }
            // The producer closed the ring and every frame in it was received.
            Err(loan::RecvError::Ring(RecvTimeoutError::Disconnected)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a consumer process reports on its standard output.
enum Report {
    Got(u64),
    Stale,
}

/// A running consumer process, and what it has reported so far. Killed when dropped, so
/// that an error in the producer leaves no process behind.
struct Consumer {
    child: Child,
    reports: mpsc::Receiver<Report>,
    reader: Option<JoinHandle<()>>,
    /// The frames it received and checked, in order.
    frames: Vec<u64>,
    /// The offsets it refused as stale.
    stale: u64,
}

impl Consumer {
    fn spawn(names: &Names, core: Option<usize>) -> Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["consumer", &names.pool, &names.ring]);
        if let Some(core) = core {
            command.arg(core.to_string());
        }
        let mut child = command.stdout(Stdio::piped()).spawn()?;
        let stdout = child
            .stdout
            .take()
            .context("the consumer's stdout is piped")?;
        // A thread reads the reports, so that the producer never blocks on the pipe.
        let (tx, reports) = mpsc::channel();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let report = match line.strip_prefix("got ") {
                    Some(seq) => seq.parse().ok().map(Report::Got),
                    None => (line == "stale").then_some(Report::Stale),
                };
                if let Some(report) = report {
                    let _ = tx.send(report);
                }
            }
        });
        Ok(Consumer {
            child,
            reports,
            reader: Some(reader),
            frames: Vec::new(),
            stale: 0,
        })
    }

    /// Takes in the reports that arrived so far; returns how many frames it received.
    fn poll(&mut self) -> usize {
        for report in self.reports.try_iter() {
            match report {
                Report::Got(seq) => self.frames.push(seq),
                Report::Stale => self.stale += 1,
            }
        }
        self.frames.len()
    }

    /// Waits for the process to exit, and takes in all it reported.
    fn wait(&mut self) -> Result<std::process::ExitStatus> {
        let status = self.child.wait()?;
        // The pipe is closed once the process is gone: the reader ends.
        if let Some(reader) = self.reader.take() {
            reader
                .join()
                .map_err(|_| anyhow!("the report reader panicked"))?;
        }
        self.poll();
        Ok(status)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Nothing to do if it was waited for already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The segment names, unique to this run; the segments are removed when dropped.
struct Names {
    pool: String,
    ring: String,
}

impl Drop for Names {
    fn drop(&mut self) {
        // Removing a segment only unlinks its name; processes that still map it keep it.
        let _ = Segment::remove(&self.pool.as_str().into());
        let _ = Segment::remove(&self.ring.as_str().into());
    }
}

/// Waits until the consumer has bound its pool participant to the ring. Chunks sent
/// before that are in flight to no one in particular, and would not be reclaimed if
/// the consumer died.
fn wait_bound(
    tx: &mut loan::Sender<spsc::Producer<ShmOffset>>,
    pool: &Pool,
    consumer: &mut Consumer,
) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !tx.receiver_bound(pool) {
        if let Some(status) = consumer.child.try_wait()? {
            bail!(
                "consumer {} exited before it started: {status}",
                consumer.pid()
            );
        }
        ensure!(Instant::now() < deadline, "the consumer did not start");
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Loans a chunk, writes frame `seq` into it in place, and sends its offset.
fn send_frame(
    pool: &Pool,
    tx: &mut loan::Sender<spsc::Producer<ShmOffset>>,
    seq: u64,
) -> Result<()> {
    let mut chunk = pool.loan(FRAME_BYTES)?;
    fill(
        chunk
            .value_mut::<Frame>()
            .context("a chunk shorter than a frame")?,
        seq,
    );
    tx.send_deadline(chunk, Some(Instant::now() + TIMEOUT))
        .map_err(|e| anyhow!("frame {seq} not sent: {e}"))
}

/// The range of frame numbers `frames` holds, if they are consecutive.
fn consecutive(frames: &[u64]) -> Option<(u64, u64)> {
    let (&first, &last) = (frames.first()?, frames.last()?);
    frames
        .windows(2)
        .all(|w| w[1] == w[0] + 1)
        .then_some((first, last))
}

fn producer() -> Result<()> {
    let started = Instant::now();
    let name = format!("frames-{}", std::process::id());
    let names = Names {
        pool: format!("{name}-pool"),
        ring: format!("{name}-ring"),
    };
    // Pin the producer and the consumers to the recommended pair of cores (two that share
    // a cache, if any do). Where that fails, the scheduler places them.
    let (cores, consumer_core) = match affinity::recommend_pair() {
        Ok(pair) if affinity::pin_current_thread(pair.producer).is_ok() => {
            (pair.to_string(), Some(pair.consumer))
        }
        Ok(_) => ("not pinned (pinning refused)".to_owned(), None),
        Err(e) => (format!("not pinned ({e})"), None),
    };
    let pool = Pool::builder(names.pool.as_str())
        .class(FRAME_BYTES as u64, CHUNKS)
        .create()?;
    let mut tx = loan::Sender::new(
        spsc::Builder::<ShmOffset>::new(names.ring.as_str())
            .capacity(RING_SLOTS)
            .mode(OpenMode::Create)
            .producer()?,
    );
    println!(
        "{FRAMES} frames of {} MiB through a pool of {CHUNKS} chunks and a ring of \
         {RING_SLOTS} offsets; {cores}",
        FRAME_BYTES >> 20
    );

    // Until the first consumer has reported KILL_AFTER frames.
    let mut first = Consumer::spawn(&names, consumer_core)?;
    wait_bound(&mut tx, &pool, &mut first)?;
    let mut sent = 0;
    while first.poll() < KILL_AFTER {
        ensure!(sent < FRAMES, "the first consumer reported too few frames");
        send_frame(&pool, &mut tx, sent)?;
        sent += 1;
    }

    // Kill it while it works. Once it is dead nothing moves its chunks, and the
    // producer holds none between two frames: the pool's counts are what it left.
    first.child.kill()?;
    first.wait()?;
    let left = pool.stats().classes[0];
    let dead_owned = left.held + left.in_flight + left.loaned;
    let reclaimed = pool.reclaim_dead()?;
    println!(
        "killed consumer 1 (pid {}) after {} frames: chunks it held {}, in flight to it \
         {}; {} chunks reclaimed",
        first.pid(),
        first.frames.len(),
        left.held,
        left.in_flight,
        reclaimed.chunks
    );
    ensure!(
        reclaimed.chunks == dead_owned,
        "reclaimed {} chunks, the dead consumer had {dead_owned}",
        reclaimed.chunks
    );
    ensure!(
        pool.stats().all_free(),
        "chunks left out after the reclaim: {:?}",
        pool.stats()
    );

    // A new consumer takes the ring over where the dead one stopped.
    let mut second = Consumer::spawn(&names, consumer_core)?;
    wait_bound(&mut tx, &pool, &mut second)?;
    println!("started consumer 2 (pid {})", second.pid());
    while sent < FRAMES {
        send_frame(&pool, &mut tx, sent)?;
        sent += 1;
    }
    // Closing the ring tells the consumer that no frame follows those in the ring.
    drop(tx);
    let status = second.wait()?;
    ensure!(status.success(), "consumer 2 failed: {status}");

    // A participant that left cleanly returned its chunks itself: nothing to reclaim.
    let late = pool.reclaim_dead()?;
    let end = pool.stats();
    let free = end.classes[0];

    // Each consumer saw consecutive frames; the second one every frame sent after the
    // restart; those lost in between were in the dead consumer's hands.
    let (a_first, a_last) =
        consecutive(&first.frames).context("consumer 1: no frames, or out of order")?;
    let (b_first, b_last) =
        consecutive(&second.frames).context("consumer 2: no frames, or out of order")?;
    let lost = b_first.saturating_sub(a_last + 1);
    let received = (first.frames.len() + second.frames.len()) as u64;
    let mib = received * (FRAME_BYTES >> 20) as u64;
    println!(
        "consumer 1: frames {a_first}..={a_last} ({}), killed",
        first.frames.len()
    );
    println!(
        "consumer 2: {} stale offsets refused, frames {b_first}..={b_last} ({}), exited \
         cleanly",
        second.stale,
        second.frames.len()
    );
    println!("frames sent:           {sent}");
    println!("frames received:       {received}, {lost} lost with the killed consumer");
    println!("payload moved:         {mib} MiB, read in place");
    println!(
        "ring traffic:          {sent} offsets of {} bytes",
        size_of::<ShmOffset>()
    );
    println!(
        "chunks reclaimed:      {} from the killed consumer, {} at the end",
        reclaimed.chunks, late.chunks
    );
    println!(
        "pool at the end:       {} of {} chunks free",
        free.free, free.chunks
    );
    println!("elapsed:               {:.2?}", started.elapsed());

    ensure!(a_first == 0, "consumer 1 started at frame {a_first}");
    ensure!(b_last == FRAMES - 1, "consumer 2 ended at frame {b_last}");
    ensure!(b_first > a_last, "consumer 2 saw a frame consumer 1 saw");
    // Lost: the frames in flight to the dead consumer, and the one it held if it died
    // before reporting it.
    ensure!(
        (left.in_flight..=dead_owned).contains(&lost),
        "{lost} frames lost, {} were in flight to the dead consumer",
        left.in_flight
    );
    ensure!(
        second.stale <= left.in_flight,
        "{} stale offsets, only {} were in flight",
        second.stale,
        left.in_flight
    );
    ensure!(
        late.chunks == 0,
        "{} chunks reclaimed at the end",
        late.chunks
    );
    ensure!(
        end.all_free() && free.free == u64::from(CHUNKS),
        "chunks left out: {end:?}"
    );
    Ok(())
}
