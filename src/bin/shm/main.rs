//! `shm`: the command line tool of shm-transport.

mod admin;
mod bench;
#[cfg(feature = "zenoh")]
mod bridge;
mod pipe;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shm_transport::sync::affinity::{self, Topology};

/// Zero-copy shared-memory transport: tools.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the cores this process may use, which share a cache or are SMT siblings, and
    /// the producer/consumer core pair shm-transport recommends.
    Topology,
    /// Measure cross-process latency (or, with --throughput, throughput) of shm-transport
    /// against the physical limit and the transports users run today, side by side.
    Bench(bench::BenchArgs),
    /// Send standard input through a stream ring, as into a pipe: `producer | shm send NAME`.
    /// Creates the ring if `shm recv` has not yet; closes it cleanly at end of input.
    Send(pipe::SendArgs),
    /// Write what arrives through a stream ring to standard output, as from a pipe:
    /// `shm recv NAME | consumer`. Exits 0 when the sender has closed, non-zero if it died.
    Recv(pipe::RecvArgs),
    /// List the segments of a directory (default /dev/shm), recognised by their magic:
    /// kind, message type, capacity, size, creator, state (ready, initialising, or
    /// stale: its creator died before it was ready) and the roles held now.
    Ls(admin::LsArgs),
    /// Remove segments whose every role is free and stale creations, reclaim the chunks
    /// of dead pool participants; never a segment with a live participant, a file that
    /// is not a segment, or another user's file. Says what it did and why for each.
    Clean(admin::CleanArgs),
    /// Show one segment: its header and live roles, and its ring's positions, queued
    /// messages, counters and, for a broadcast ring, each subscriber's position, lag and
    /// liveness; read from outside, without attaching.
    Inspect(admin::InspectArgs),
    /// Watch rings live: each one's rates per second (sent, received, published, each
    /// subscriber's) and backlog, refreshed in place on a terminal, one line per ring and
    /// interval when the output is not a terminal.
    Watch(admin::WatchArgs),
    /// Bridge a ring to the network through Zenoh: `out` publishes its messages on a key
    /// expression, `in` writes what arrives on one into it (feature `zenoh`).
    #[cfg(feature = "zenoh")]
    Bridge(bridge::BridgeArgs),
    /// A relay of `shm bench --pipes` (started by it; not for direct use).
    #[command(hide = true)]
    BenchRelay {
        /// Accept one connection on this Unix socket and copy it to standard output.
        #[arg(long)]
        accept: Option<std::path::PathBuf>,
        /// Connect to this Unix socket and copy standard input to it.
        #[arg(long)]
        connect: Option<std::path::PathBuf>,
    },
    /// The echo process of `shm bench` (started by it; not for direct use).
    #[command(hide = true)]
    BenchPeer {
        /// The core to pin this process to.
        #[arg(long)]
        core: Option<usize>,
    },
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`shm ls | head`), as other command line tools do,
    // rather than panic on the next print.
    // SAFETY: setting a signal's disposition to its default, before any other thread
    // exists, is async-signal-safe and affects only this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Topology => topology().map_err(anyhow::Error::from),
        Command::Bench(args) => bench::run(args),
        Command::Send(args) => pipe::send(args),
        Command::Recv(args) => pipe::recv(args),
        Command::Ls(args) => admin::ls(args),
        Command::Clean(args) => admin::clean(args),
        Command::Inspect(args) => admin::inspect(args),
        Command::Watch(args) => admin::watch(args),
        #[cfg(feature = "zenoh")]
        Command::Bridge(args) => bridge::run(args),
        Command::BenchPeer { core } => bench::peer::serve(core),
        Command::BenchRelay { accept, connect } => bench::pipes::relay(accept, connect),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn topology() -> Result<(), shm_transport::sync::Error> {
    let allowed = affinity::allowed_cores()?;
    let topo = Topology::read()?;
    println!("allowed cores: {allowed:?}");
    for &a in &allowed {
        for &b in allowed.iter().filter(|&&b| b > a) {
            let cache = match topo.shared_cache_level(a, b) {
                Some(level) => format!("share L{level}"),
                None => "share no cache".to_string(),
            };
            let smt = if topo.smt_siblings(a, b) {
                ", SMT siblings"
            } else {
                ""
            };
            println!("cores {a} and {b}: {cache}{smt}");
        }
    }
    match affinity::recommend_pair() {
        Ok(pair) => println!("recommended: {pair}"),
        Err(e) => println!("no recommended pair: {e}"),
    }
    Ok(())
}
