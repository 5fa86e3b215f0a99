//! `shm bench`: cross-process latency (and throughput) of shm-transport's rings against
//! the physical limit and the transports users run today, side by side, in one run.
//!
//! # Method
//!
//! The timing process starts a second process of this binary (the echo process), pins
//! the two to a core pair, and opens every transport and payload size once. It then runs
//! `--rounds` rounds; in each round, every transport and size in turn runs a short
//! ping-pong of up to `round_trips / rounds` round trips (or `time_limit / rounds`; half
//! timed one by one for the percentiles, half in batches for a finer typical figure),
//! right after a probe of the physical limit of the same size between the same two cores
//! (see [`transport::Limit`]: the payload and a sequence word after it, both ways). A
//! virtual machine's vCPUs move between near and far physical cores every few seconds,
//! and every busy-poll latency moves 3-5x with them; comparing each round with its own
//! probe, and taking the median of these per-round ratios, keeps the comparison valid
//! while the machine drifts. Every round's probe and p50 are kept in the JSON, so the
//! drift can be seen.
//!
//! One-way latency is half a round trip. Round trips are timed with the TSC or
//! `Instant`, whichever is cheaper here (see [`clock`]); each sample includes one clock
//! read.

mod anchor;
mod clock;
#[cfg(feature = "grpc")]
mod grpc;
mod machine;
pub mod peer;
pub mod pipes;
mod report;
mod throughput;
pub mod transport;
mod waiting;
#[cfg(feature = "zenoh")]
mod zenoh;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use shm_transport::alloc::{Location, Segment};
use shm_transport::sync::affinity;
use shm_transport::sync::atomic::{AtomicBool, Ordering};

use clock::Clock;
use machine::{Machine, Placement};
use peer::Peer;
use report::{Config, Report, Row};
use transport::{Limit, Pinger, SPSC_SIZES, StreamPinger, Transport, by_spsc_size};

/// Round trips of each warm-up, per transport and size.
const WARMUP_ROUND_TRIPS: usize = 10_000;
/// The longest a warm-up lasts, per transport and size.
const WARMUP_BUDGET: Duration = Duration::from_millis(100);
/// Round trips of the limit probe before each round (fewer if a round has fewer).
const PROBE_ROUND_TRIPS: usize = 10_000;
/// Round trips timed together in the batched half of every round: at a 10 ns clock step
/// and 100 ns round trips, a batch's one-way mean resolves 0.3 ns.
const BATCH: usize = 16;

/// Set by Ctrl-C: the current round ends early and the report covers what was measured.
static STOP: AtomicBool = AtomicBool::new(false);

/// Options of `shm bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Round trips per transport and payload size, spread over the rounds.
    #[arg(long, default_value_t = 2_000_000)]
    pub round_trips: u64,
    /// Rounds: every transport and size runs in this many short rounds, interleaved,
    /// each right after a probe of the limit of the same size.
    #[arg(long, default_value_t = 20)]
    pub rounds: u32,
    /// Seconds per transport and payload size at most: slow transports stop here
    /// before their round trips are done.
    #[arg(long, default_value_t = 2.0)]
    pub time_limit: f64,
    /// Payload sizes, bytes (at least 8; shm-spsc takes powers of two up to 65536).
    #[arg(long, value_delimiter = ',', default_values_t = [8, 64, 256, 1024, 4096])]
    pub sizes: Vec<usize>,
    /// Transports to compare (default: all this build has); the limit probe always
    /// runs.
    #[arg(long, value_delimiter = ',')]
    pub transports: Vec<Transport>,
    /// The two cores, timing side first, e.g. `--cores 0,1` (default: the pair
    /// `shm topology` recommends).
    #[arg(long, value_delimiter = ',', num_args = 1..=2)]
    pub cores: Option<Vec<usize>>,
    /// Print the report as JSON on standard output instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also draw each transport's latency by percentile into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Measure one-way throughput (messages/s, bytes/s) instead of latency.
    #[arg(long)]
    pub throughput: bool,
    /// Measure bytes/s of `shm send | shm recv` against a plain pipe and a Unix socket,
    /// between separate processes, instead of latency.
    #[arg(long, conflicts_with = "throughput")]
    pub pipes: bool,
    /// Bytes per transfer of `--pipes`.
    #[arg(long, default_value_t = 1 << 30)]
    pub pipe_bytes: u64,
    /// Interleaved rounds of `--pipes`.
    #[arg(long, default_value_t = 5)]
    pub pipe_rounds: usize,
}

/// Runs `shm bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    if args.pipes {
        return pipes::run(args.pipe_bytes, args.pipe_rounds);
    }
    ensure!(args.round_trips > 0, "--round-trips must be at least 1");
    ensure!(
        args.time_limit.is_finite() && args.time_limit > 0.0,
        "--time-limit must be a positive number of seconds"
    );
    let mut transports = if args.transports.is_empty() {
        Transport::defaults()
    } else {
        args.transports.clone()
    };
    transports.retain(|&t| t != Transport::Limit);
    transports.dedup();
    let mut sizes = args.sizes.clone();
    sizes.dedup();
    ensure!(!sizes.is_empty(), "--sizes is empty");
    for &size in &sizes {
        ensure!(
            (8..=1 << 20).contains(&size),
            "payload size {size} is outside 8..=1048576 bytes (a message carries an 8-byte \
             sequence number)"
        );
        let fixed = transports.iter().any(|t| t.fixed_sizes());
        ensure!(
            !fixed || SPSC_SIZES.contains(&size),
            "shm-spsc, rtrb and array-queue carry fixed-size messages of {SPSC_SIZES:?} bytes, \
             not {size}"
        );
    }
    let requested = match args.cores.as_deref() {
        None => None,
        Some(&[a, b]) => Some([a, b]),
        Some(other) => bail!("--cores takes two cores, got {other:?}"),
    };

    ctrlc::set_handler(|| {
        // Relaxed: the flag carries no data, it only has to be seen.
        STOP.store(true, Ordering::Relaxed);
    })
    .context("installing the Ctrl-C handler")?;

    let placement = Placement::choose(requested)?;
    if placement.cores.is_none() {
        eprintln!("shm bench: {}", placement.reason);
    }
    // The echo process is started before this one pins itself, so that it does not
    // inherit this core; it pins itself to its own.
    let echo_core = placement.cores.map(|[_, echo]| echo);
    let mut peer = Peer::spawn(echo_core)?;
    if let Some([ping, _]) = placement.cores {
        affinity::pin_current_thread(ping)?;
    }
    let (clock, clock_info) = Clock::choose();
    let machine = Machine::read(&placement, clock_info)?;
    let run_id = format!("shm-bench-{}", std::process::id());
    let progress = Progress::new();
    let mut cleanup = Cleanup::default();

    let mut report = Report {
        machine,
        config: Config {
            round_trips: args.round_trips,
            rounds: args.rounds,
            time_limit_s: args.time_limit,
            sizes: sizes.clone(),
            transports: transports.iter().map(|t| t.name()).collect(),
        },
        interrupted: false,
        batch: BATCH,
        latency: Vec::new(),
        throughput: Vec::new(),
    };
    let budget = Duration::from_secs_f64(args.time_limit / f64::from(args.rounds));
    if args.throughput {
        // The cases come grouped by transport.
        report.config.transports = throughput::cases()
            .iter()
            .map(|c| c.transport.name())
            .collect();
        report.config.transports.dedup();
        report.config.sizes = vec![8, 64];
        report.throughput = run_throughput(
            &mut peer,
            echo_core,
            args.rounds,
            budget,
            &run_id,
            &mut cleanup,
            &progress,
        )?;
    } else {
        let per_round = args.round_trips.div_ceil(u64::from(args.rounds)) as usize;
        let plan = Plan {
            transports: &transports,
            echo_core,
            sizes: &sizes,
            rounds: args.rounds,
            per_round,
            budget,
        };
        report.latency = run_latency(&mut peer, &clock, &plan, &run_id, &mut cleanup, &progress)?;
    }
    progress.finish();
    report.interrupted = STOP.load(Ordering::Relaxed);
    peer.quit()?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.plot {
        report.plot(path)?;
        if !args.json {
            println!("plot: {}", path.display());
        }
    }
    Ok(())
}

/// What a latency run measures.
struct Plan<'a> {
    transports: &'a [Transport],
    /// The echo side's core, for the in-process anchors' echo threads.
    echo_core: Option<usize>,
    sizes: &'a [usize],
    rounds: u32,
    per_round: usize,
    budget: Duration,
}

/// One transport and size: its timing side, its next sequence number, its results.
struct Series {
    transport: Transport,
    size: usize,
    pinger: Box<dyn Pinger>,
    next_seq: u64,
    row: Row,
}

impl Series {
    fn new(transport: Transport, size: usize, pinger: Box<dyn Pinger>) -> Series {
        Series {
            transport,
            size,
            pinger,
            next_seq: 1,
            row: Row::new(transport, size),
        }
    }
}

fn run_latency(
    peer: &mut Peer,
    clock: &Clock,
    plan: &Plan<'_>,
    run_id: &str,
    cleanup: &mut Cleanup,
    progress: &Progress,
) -> Result<Vec<Row>> {
    // One probe of the limit per size: its row is the size's first.
    let mut probes = Vec::new();
    for &size in plan.sizes {
        let path = PathBuf::from("/dev/shm").join(format!("{run_id}-limit-{size}"));
        cleanup.paths.push(path.clone());
        let limit = Limit::create(&path, size)?;
        peer.call(&format!("open limit {size} {}", path.display()))?;
        cleanup.remove_now();
        probes.push(Series::new(Transport::Limit, size, Box::new(limit)));
    }

    let mut series = Vec::new();
    for &size in plan.sizes {
        for &transport in plan.transports {
            progress.say(&format!(
                "opening {} with {size}-byte messages",
                transport.name()
            ));
            let pinger = open_pinger(peer, transport, size, plan.echo_core, run_id, cleanup)
                .with_context(|| {
                    format!("opening {} for {size}-byte messages", transport.name())
                })?;
            series.push(Series::new(transport, size, pinger));
        }
    }

    let mut samples = Vec::with_capacity(plan.per_round.max(WARMUP_ROUND_TRIPS));
    progress.say("warming up");
    for s in probes.iter_mut().chain(&mut series) {
        round(
            peer,
            s,
            clock,
            WARMUP_ROUND_TRIPS,
            1,
            WARMUP_BUDGET,
            &mut samples,
        )?;
    }

    let started = Instant::now();
    let probe_count = plan.per_round.min(PROBE_ROUND_TRIPS);
    'rounds: for r in 0..plan.rounds {
        progress.say(&format!(
            "round {}/{} ({:.0} s)",
            r + 1,
            plan.rounds,
            started.elapsed().as_secs_f64()
        ));
        for s in &mut series {
            // Relaxed: the flag carries no data.
            if STOP.load(Ordering::Relaxed) {
                break 'rounds;
            }
            let probe = probes
                .iter_mut()
                .find(|p| p.size == s.size)
                .expect("a probe for every planned size");
            // Half of the round timed per round trip (the histogram), half in batches
            // (the fine typical figure), each right after the probe timed the same way.
            let (count, budget) = (plan.per_round.div_ceil(2), plan.budget / 2);
            round(peer, probe, clock, probe_count, 1, budget, &mut samples)?;
            let probe_p50 = if samples.is_empty() {
                0.0
            } else {
                report::sorted_median(&samples)
            };
            probe.row.add(&samples, probe_p50)?;
            round(peer, s, clock, count, 1, budget, &mut samples)?;
            s.row.add(&samples, probe_p50)?;
            round(peer, probe, clock, probe_count, BATCH, budget, &mut samples)?;
            let probe_batched = report::batched_one_way(&samples, BATCH);
            probe.row.add_batched(&samples, BATCH, probe_batched);
            round(peer, s, clock, count, BATCH, budget, &mut samples)?;
            s.row.add_batched(&samples, BATCH, probe_batched);
        }
    }

    let mut rows = Vec::new();
    for (&size, probe) in plan.sizes.iter().zip(probes) {
        rows.push(probe.row);
        rows.extend(
            series
                .iter()
                .filter(|s| s.size == size)
                .map(|s| s.row.clone()),
        );
    }
    Ok(rows)
}

/// Runs one round of `series` (the echo process echoing, this one timing), advances its
/// sequence number, and leaves its round trips in `samples` (with `batch` > 1, the
/// durations of its batches of `batch` round trips), in ns, sorted.
fn round(
    peer: &mut Peer,
    series: &mut Series,
    clock: &Clock,
    count: usize,
    batch: usize,
    budget: Duration,
    samples: &mut Vec<u64>,
) -> Result<()> {
    let name = series.transport.name();
    let in_process = series.transport.in_process();
    samples.clear();
    if !in_process {
        peer.send(&format!("echo {name} {}", series.size))?;
    }
    series.pinger.connect()?;
    let first = series.next_seq;
    series.next_seq = series
        .pinger
        .run(clock, first, count, batch, budget, &STOP, samples)?;
    let echoed: u64 = if in_process {
        series.pinger.echoed()?
    } else {
        peer.reply()?.parse()?
    };
    let timed = series.next_seq - first;
    ensure!(
        echoed == timed,
        "{name}: {timed} round trips timed but {echoed} messages echoed"
    );
    for ticks in samples.iter_mut() {
        *ticks = clock.ticks_to_ns(*ticks);
    }
    samples.sort_unstable();
    Ok(())
}

/// Opens the timing side of `transport`, has the echo process open its side, and
/// removes every name the two used to find each other.
fn open_pinger(
    peer: &mut Peer,
    transport: Transport,
    size: usize,
    echo_core: Option<usize>,
    run_id: &str,
    cleanup: &mut Cleanup,
) -> Result<Box<dyn Pinger>> {
    let base = format!("{run_id}-{}-{size}", transport.name());
    let open = |at: &dyn std::fmt::Display| format!("open {} {size} {at}", transport.name());
    let pinger: Box<dyn Pinger> = match transport {
        Transport::Limit => bail!("the limit probes are opened on their own"),
        Transport::Rtrb => by_spsc_size!(size, rtrb_pinger(echo_core))?,
        Transport::ArrayQueue => by_spsc_size!(size, array_queue_pinger(echo_core))?,
        Transport::ShmSpsc
        | Transport::ShmSpscPark
        | Transport::ShmWaitset1
        | Transport::ShmWaitset64 => {
            let park = transport != Transport::ShmSpsc;
            cleanup.names.extend(transport::spsc_names(&base));
            let pinger = by_spsc_size!(size, spsc_pinger(&base, park))?;
            peer.call(&open(&base))?;
            pinger
        }
        Transport::ShmBroadcast => {
            cleanup.names.extend(transport::broadcast_names(&base));
            let pinger = by_spsc_size!(size, broadcast_pinger(&base))?;
            peer.call(&open(&base))?;
            pinger
        }
        Transport::ShmRpc => {
            cleanup.names.extend(transport::rpc_names(&base));
            let pinger = by_spsc_size!(size, rpc_pinger(&base))?;
            peer.call(&open(&base))?;
            pinger
        }
        Transport::ShmStream => {
            cleanup.names.extend(transport::spsc_names(&base));
            let pinger = transport::shm_stream_pinger(&base, size)?;
            peer.call(&open(&base))?;
            pinger
        }
        Transport::ShmLoan => {
            cleanup.names.extend(transport::loan_names(&base));
            let pinger = transport::shm_loan(&base, size, true)?;
            peer.call(&open(&base))?;
            Box::new(pinger)
        }
        #[cfg(feature = "tokio")]
        Transport::ShmAsync | Transport::ShmAsyncMt | Transport::ShmAsyncPark => {
            cleanup.names.extend(transport::spsc_names(&base));
            let pinger = by_spsc_size!(size, spsc_pinger(&base, false))?;
            peer.call(&open(&base))?;
            pinger
        }
        #[cfg(feature = "tokio")]
        Transport::TokioUds | Transport::TokioUdsMt => {
            let listener = transport::uds_listen(&base)?;
            peer.call(&open(&base))?;
            let (stream, _) = listener.accept()?;
            Box::new(StreamPinger::new(stream.try_clone()?, stream, size))
        }
        Transport::Uds => {
            let listener = transport::uds_listen(&base)?;
            peer.call(&open(&base))?;
            let (stream, _) = listener.accept()?;
            Box::new(StreamPinger::new(stream.try_clone()?, stream, size))
        }
        Transport::Tcp => {
            let listener = transport::tcp_listen()?;
            peer.call(&open(&listener.local_addr()?.port()))?;
            let (stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            Box::new(StreamPinger::new(stream.try_clone()?, stream, size))
        }
        Transport::Pipe => {
            let base = std::env::temp_dir().join(&base);
            for path in transport::fifo_paths(&base) {
                transport::make_fifo(&path)?;
                cleanup.paths.push(path);
            }
            peer.send(&open(&base.display()))?;
            let (writer, reader) = transport::fifo_ping_ends(&base)?;
            peer.reply()?;
            Box::new(StreamPinger::new(writer, reader, size))
        }
        #[cfg(feature = "iceoryx2")]
        Transport::Iceoryx2 => {
            let pinger = transport::iox::open(&base, size, true)?;
            peer.call(&open(&base))?;
            Box::new(pinger)
        }
        #[cfg(feature = "iceoryx2")]
        Transport::Iceoryx2Rpc => {
            let pinger = transport::iox_rpc::client(&base, size)?;
            peer.call(&open(&base))?;
            Box::new(pinger)
        }
        #[cfg(feature = "grpc")]
        Transport::Grpc => {
            // The echo process serves; this side connects once it listens.
            let path = std::env::temp_dir().join(&base);
            cleanup.paths.push(path.clone());
            peer.call(&open(&path.display()))?;
            grpc::pinger(&path, size)?
        }
        #[cfg(feature = "zenoh")]
        Transport::Zenoh => {
            let port = zenoh::free_port()?;
            let pinger = zenoh::raw_pinger(&base, size, port)?;
            peer.call(&open(&format!("{base}@{port}")))?;
            pinger
        }
        #[cfg(feature = "zenoh")]
        Transport::ShmBridge => {
            cleanup.names.extend(zenoh::bridged_names(&base));
            let port = zenoh::free_port()?;
            let pinger = by_spsc_size!(size, bridged_pinger(&base, port))?;
            peer.call(&open(&format!("{base}@{port}")))?;
            pinger
        }
    };
    cleanup.remove_now();
    Ok(pinger)
}

#[cfg(feature = "zenoh")]
fn bridged_pinger<const N: usize>(base: &str, port: u16) -> Result<Box<dyn Pinger>> {
    zenoh::bridged_pinger::<N>(base, port)
}

fn spsc_pinger<const N: usize>(base: &str, park: bool) -> Result<Box<dyn Pinger>> {
    transport::spsc_pinger::<N>(base, park)
}

fn broadcast_pinger<const N: usize>(base: &str) -> Result<Box<dyn Pinger>> {
    transport::broadcast_pinger::<N>(base)
}

fn rpc_pinger<const N: usize>(base: &str) -> Result<Box<dyn Pinger>> {
    transport::rpc_pinger::<N>(base)
}

fn rtrb_pinger<const N: usize>(echo_core: Option<usize>) -> Result<Box<dyn Pinger>> {
    anchor::pinger::<anchor::Rtrb, N>(echo_core)
}

fn array_queue_pinger<const N: usize>(echo_core: Option<usize>) -> Result<Box<dyn Pinger>> {
    anchor::pinger::<anchor::Crossbeam, N>(echo_core)
}

fn run_throughput(
    peer: &mut Peer,
    echo_core: Option<usize>,
    rounds: u32,
    budget: Duration,
    run_id: &str,
    cleanup: &mut Cleanup,
    progress: &Progress,
) -> Result<Vec<throughput::Row>> {
    let cases = throughput::cases();
    let mut rows: Vec<throughput::Row> = cases.iter().map(|&c| throughput::Row::new(c)).collect();
    'rounds: for r in 0..rounds {
        progress.say(&format!("throughput round {}/{rounds}", r + 1));
        for (case, row) in cases.iter().zip(&mut rows) {
            // Relaxed: the flag carries no data.
            if STOP.load(Ordering::Relaxed) {
                break 'rounds;
            }
            let name = format!(
                "{run_id}-stream-{}-{}-{}-{}-{r}",
                case.transport.name(),
                case.size,
                case.batch,
                case.subscribers
            );
            if matches!(case.transport, Transport::ShmSpsc | Transport::ShmBroadcast) {
                cleanup.names.push(name.clone());
            }
            let (messages, ns) = throughput::send(peer, *case, echo_core, &name, budget, &STOP)?;
            cleanup.remove_now();
            row.add(messages, ns);
        }
    }
    Ok(rows)
}

/// Names in `/dev/shm` and paths this run made, removed once both processes have them
/// open, or when the run fails.
#[derive(Debug, Default)]
struct Cleanup {
    names: Vec<String>,
    paths: Vec<PathBuf>,
}

impl Cleanup {
    fn remove_now(&mut self) {
        for name in self.names.drain(..) {
            // Already gone is fine: the point is that nothing is left behind.
            let _ = Segment::remove(&Location::Name(name));
        }
        for path in self.paths.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.remove_now();
    }
}

/// One line on standard error, rewritten in place, when standard error is a terminal.
struct Progress {
    shown: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn say(&self, what: &str) {
        if self.shown {
            eprint!("\r\x1b[2Kshm bench: {what}");
        }
    }

    fn finish(&self) {
        if self.shown {
            eprint!("\r\x1b[2K");
        }
    }
}
