//! `shm send NAME` and `shm recv NAME`: a stream ring in place of a pipe between two
//! programs started separately, in either order.
//!
//! The first of the two to start creates the ring, the second attaches. `send` frames
//! its standard input (by lines, or in blocks read straight into the ring) and closes
//! the ring cleanly at end of input; `recv` writes every frame to its standard output
//! and exits 0 once the sender has closed and everything is written, or fails with a
//! message if the sender died. `recv` removes the ring's name when it is done.

use std::io::{self, BufRead, Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use shm_transport::alloc::{Location, Segment};
use shm_transport::ring::stream::{Builder, SendError};
use shm_transport::ring::{OpenMode, RecvTimeoutError, TryRecvError};
use shm_transport::sync::WaitStrategy;

/// Arguments of `shm send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The ring's name under /dev/shm (or a path with a `/`).
    name: String,
    #[command(flatten)]
    ring: RingArgs,
    /// One frame per line, the newline included (otherwise fixed-size blocks).
    #[arg(long, conflicts_with = "block_size")]
    lines: bool,
    /// Frames of this many bytes (the last may be shorter).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..))]
    block_size: u32,
}

/// Arguments of `shm recv`.
#[derive(Debug, Args)]
pub struct RecvArgs {
    /// The ring's name under /dev/shm (or a path with a `/`).
    name: String,
    #[command(flatten)]
    ring: RingArgs,
    /// Seconds to wait for a sender to attach before giving up.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

/// What both sides may set; the creator's values win.
#[derive(Debug, Args)]
struct RingArgs {
    /// The ring's size in bytes if this side creates it: a power of two, at least 64.
    #[arg(long, default_value_t = 1 << 22)]
    capacity: u64,
    /// Park on a futex when there is nothing to do, instead of spinning first.
    #[arg(long)]
    park: bool,
}

impl RingArgs {
    fn builder(&self, name: &str) -> Builder {
        let wait = if self.park {
            WaitStrategy::Park
        } else {
            WaitStrategy::default()
        };
        Builder::new(location(name))
            .mode(OpenMode::OpenOrCreate)
            .capacity_if_created(self.capacity)
            .wait_strategy(wait)
    }
}

/// Where a name given on the command line is: a path if it has a `/`, else a name
/// under /dev/shm.
pub(crate) fn location(name: &str) -> Location {
    if name.contains('/') {
        Location::Path(name.into())
    } else {
        Location::Name(name.to_string())
    }
}

fn sent(result: Result<(), SendError>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(SendError::Disconnected) => bail!("the receiver is gone"),
        Err(e) => Err(e.into()),
    }
}

/// The error of attaching as `side` (`"sender"` or `"receiver"`): the library's, or, when
/// the side's role is held, who holds it.
fn attach_error(e: shm_transport::ring::Error, name: &str, side: &str) -> anyhow::Error {
    if let shm_transport::ring::Error::Segment(shm_transport::alloc::Error::RoleTaken {
        role,
        ..
    }) = &e
    {
        let pids = Segment::role_holders(&location(name), *role).unwrap_or_default();
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        return match pids.as_slice() {
            [] => anyhow::anyhow!("another {side} is attached to {name}"),
            [pid] => anyhow::anyhow!("another {side} is attached to {name} (pid {pid})"),
            _ => anyhow::anyhow!(
                "another {side} is attached to {name} (pids {})",
                pids.join(", ")
            ),
        };
    }
    anyhow::Error::new(e).context(format!("attaching to {name} as the {side}"))
}

/// `shm send`: standard input into the ring.
pub fn send(args: SendArgs) -> Result<()> {
    let location = location(&args.name);
    let existed = location.checked_path().is_ok_and(|p| p.exists());
    let mut tx = args
        .ring
        .builder(&args.name)
        .producer()
        .map_err(|e| attach_error(e, &args.name, "sender"))?;
    let stdin = io::stdin();
    let mut input = stdin.lock();
    if args.lines {
        let mut line = Vec::new();
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            sent(tx.send(&line))?;
        }
    }
    let block = args.block_size as usize;
    let max = tx.max_message_len();
    if block > max {
        if !existed {
            // Made by this call for nothing: leave no file behind.
            drop(tx);
            let _ = Segment::remove(&location);
        }
        bail!(
            "blocks of {block} bytes do not fit this ring: at most {max} (--block-size, or a larger --capacity)"
        );
    }
    loop {
        // Read straight into the ring: claim a block, fill it, publish what was read.
        let mut claim = match tx.claim_deadline(block, None) {
            Ok(claim) => claim,
            Err(e) => return sent(Err(e)),
        };
        let mut filled = 0;
        while filled < block {
            match input.read(&mut claim[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading standard input"),
            }
        }
        if filled == 0 {
            return Ok(()); // end of input; the claim is dropped unpublished
        }
        claim.commit_prefix(filled);
        if filled < block {
            return Ok(()); // a short block is the last
        }
    }
}

/// `shm recv`: the ring onto standard output.
pub fn recv(args: RecvArgs) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout >= 0.0) {
        bail!(
            "--timeout must be a number of seconds, found {}",
            args.timeout
        );
    }
    let location = location(&args.name);
    let mut rx = args
        .ring
        .builder(&args.name)
        .consumer()
        .map_err(|e| attach_error(e, &args.name, "receiver"))?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let patience = Duration::from_secs_f64(args.timeout);
    let result = loop {
        // Poll first; flush what is buffered before waiting, as a pipe's reader would see.
        let polled = match rx.try_recv() {
            Ok(frame) => Some(out.write_all(&frame).map(|()| None)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Ok(Some(RecvTimeoutError::Disconnected))),
            Err(TryRecvError::Corrupted(c)) => Some(Ok(Some(RecvTimeoutError::Corrupted(c)))),
        };
        let outcome = match polled {
            Some(Ok(None)) => continue,
            Some(Ok(Some(end))) => end,
            Some(Err(e)) => return Err(e).context("writing standard output"),
            None => {
                out.flush().context("writing standard output")?;
                match rx.recv_timeout(patience) {
                    Ok(frame) => {
                        out.write_all(&frame).context("writing standard output")?;
                        continue;
                    }
                    Err(e) => e,
                }
            }
        };
        match outcome {
            RecvTimeoutError::Timeout if rx.producer_seen() => continue,
            RecvTimeoutError::Timeout => {
                break Err(anyhow::anyhow!(
                    "no sender attached to {} within {} s",
                    args.name,
                    args.timeout
                ));
            }
            RecvTimeoutError::Disconnected => break finished(&rx),
            RecvTimeoutError::Corrupted(c) => break Err(anyhow::anyhow!("corrupted ring: {c}")),
        }
    };
    out.flush().context("writing standard output")?;
    drop(rx);
    let _ = Segment::remove(&location);
    result
}

fn finished(rx: &shm_transport::ring::stream::Consumer) -> Result<()> {
    if rx.producer_closed() {
        Ok(())
    } else {
        bail!("the sender died before closing the stream; the output is incomplete")
    }
}
