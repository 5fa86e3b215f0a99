//! The echo process of `shm bench`, and the timing process's handle on it.
//!
//! The two talk over the echo process's standard input and output, one line each way
//! per command:
//!
//! | command                                   | does                                         | reply            |
//! |-------------------------------------------|----------------------------------------------|------------------|
//! | `open <transport> <size> <where>`         | attaches the echo side of a transport        | `ok`             |
//! | `echo <transport> <size>`                 | echoes until the stop message                | `ok <echoed>`    |
//! | `stream <transport> <size> <batch> <where> [<subscribers>]` | receives a one-way stream until its stop message, on `subscribers` threads that each get every message (default 1) | `ok <messages> <ns>` |
//! | `quit`                                    | exits                                        | none             |
//!
//! A failure is replied as `err <message>`. The echo process dies with its parent
//! (`PR_SET_PDEATHSIG`), and runs in its own process group so that a Ctrl-C at the
//! terminal reaches only the timing process, which then ends the round cleanly.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use shm_transport::sync::affinity;

use super::throughput;
use super::transport::{self, Echoer, Transport, by_spsc_size};

/// The timing process's handle on the echo process.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    input: BufWriter<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Peer {
    /// Starts `shm bench-peer` from this very binary, pinned to `core` if given.
    pub fn spawn(core: Option<usize>) -> Result<Peer> {
        let exe = std::env::current_exe().context("finding this program's path")?;
        let mut command = Command::new(exe);
        command.arg("bench-peer");
        if let Some(core) = core {
            command.arg("--core").arg(core.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting the echo process")?;
        let input = BufWriter::new(child.stdin.take().expect("stdin is piped"));
        let output = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(Peer {
            child,
            input,
            output,
        })
    }

    /// Sends one command line.
    pub fn send(&mut self, command: &str) -> Result<()> {
        writeln!(self.input, "{command}")
            .and_then(|()| self.input.flush())
            .context("writing to the echo process")
    }

    /// Reads the reply to the last command: the words after `ok`.
    pub fn reply(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .output
            .read_line(&mut line)
            .context("reading from the echo process")?;
        if n == 0 {
            let status = self.child.wait()?;
            bail!("the echo process exited ({status})");
        }
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("ok") {
            Ok(rest.trim().to_string())
        } else if let Some(message) = line.strip_prefix("err ") {
            bail!("echo process: {message}")
        } else {
            bail!("echo process: unexpected reply {line:?}")
        }
    }

    /// Sends a command and waits for its reply.
    pub fn call(&mut self, command: &str) -> Result<String> {
        self.send(command)?;
        self.reply()
    }

    /// Asks the echo process to exit and waits for it.
    pub fn quit(mut self) -> Result<()> {
        self.send("quit")?;
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "the echo process failed: {status}");
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // After `quit` this finds the child gone; on an error path it stops the echo
        // process instead of leaving it spinning.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The echo process: pins itself, then serves commands until `quit` or end of input.
pub fn serve(core: Option<usize>) -> Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("asking to die with the parent")?;
    if let Some(core) = core {
        affinity::pin_current_thread(core)?;
    }
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut echoers: HashMap<(Transport, usize), Box<dyn Echoer>> = HashMap::new();
    for line in stdin.lines() {
        let line = line?;
        let words: Vec<&str> = line.split(' ').collect();
        if words == ["quit"] {
            return Ok(());
        }
        let reply = command(&words, &mut echoers);
        match reply {
            Ok(reply) if reply.is_empty() => writeln!(stdout, "ok")?,
            Ok(reply) => writeln!(stdout, "ok {reply}")?,
            Err(e) => writeln!(stdout, "err {}", format!("{e:#}").replace('\n', " "))?,
        }
        stdout.flush()?;
    }
    Ok(())
}

fn command(
    words: &[&str],
    echoers: &mut HashMap<(Transport, usize), Box<dyn Echoer>>,
) -> Result<String> {
    let parse = |i: usize| -> Result<&str> {
        words
            .get(i)
            .copied()
            .ok_or_else(|| anyhow!("command {words:?} is missing argument {i}"))
    };
    match words.first().copied() {
        Some("open") => {
            let transport = Transport::from_name(parse(1)?)?;
            let size: usize = parse(2)?.parse()?;
            let at = parse(3)?;
            let echoer = open(transport, size, at)?;
            echoers.insert((transport, size), echoer);
            Ok(String::new())
        }
        Some("echo") => {
            let transport = Transport::from_name(parse(1)?)?;
            let size: usize = parse(2)?.parse()?;
            let echoer = echoers
                .get_mut(&(transport, size))
                .ok_or_else(|| anyhow!("{} {size} was never opened", transport.name()))?;
            Ok(echoer.echo()?.to_string())
        }
        Some("stream") => {
            let transport = Transport::from_name(parse(1)?)?;
            let size: usize = parse(2)?.parse()?;
            let batch: usize = parse(3)?.parse()?;
            let subscribers: usize = parse(5).map_or(Ok(1), str::parse)?;
            let (messages, ns) =
                throughput::receive(transport, size, batch, subscribers, parse(4)?)?;
            Ok(format!("{messages} {ns}"))
        }
        _ => bail!("unknown command {words:?}"),
    }
}

fn open(transport: Transport, size: usize, at: &str) -> Result<Box<dyn Echoer>> {
    Ok(match transport {
        Transport::Limit => Box::new(transport::Limit::open(Path::new(at), size)?),
        Transport::Rtrb | Transport::ArrayQueue => {
            bail!("{} runs inside the timing process", transport.name())
        }
        Transport::ShmSpsc => by_spsc_size!(size, spsc_echo(at, false))?,
        Transport::ShmSpscPark => by_spsc_size!(size, spsc_echo(at, true))?,
        Transport::ShmWaitset1 => by_spsc_size!(size, waitset_echo(at, 1))?,
        Transport::ShmWaitset64 => by_spsc_size!(size, waitset_echo(at, 64))?,
        #[cfg(feature = "tokio")]
        Transport::ShmAsync => by_spsc_size!(size, async_echo(at, false, true))?,
        #[cfg(feature = "tokio")]
        Transport::ShmAsyncMt => by_spsc_size!(size, async_echo(at, true, true))?,
        #[cfg(feature = "tokio")]
        Transport::ShmAsyncPark => by_spsc_size!(size, async_echo(at, false, false))?,
        #[cfg(feature = "tokio")]
        Transport::TokioUds => super::waiting::tokio_uds_echoer(at, size, false)?,
        #[cfg(feature = "tokio")]
        Transport::TokioUdsMt => super::waiting::tokio_uds_echoer(at, size, true)?,
        Transport::ShmBroadcast => by_spsc_size!(size, broadcast_echo(at))?,
        Transport::ShmRpc => by_spsc_size!(size, rpc_echo(at))?,
        Transport::ShmStream => transport::shm_stream_echoer(at, size)?,
        Transport::ShmLoan => Box::new(transport::shm_loan(at, size, false)?),
        Transport::Uds => {
            let stream = transport::uds_connect(at)?;
            Box::new(transport::StreamEchoer::new(
                stream.try_clone()?,
                stream,
                size,
            ))
        }
        Transport::Tcp => {
            let stream = transport::tcp_connect(at.parse()?)?;
            Box::new(transport::StreamEchoer::new(
                stream.try_clone()?,
                stream,
                size,
            ))
        }
        Transport::Pipe => {
            let (writer, reader) = transport::fifo_echo_ends(Path::new(at))?;
            Box::new(transport::StreamEchoer::new(writer, reader, size))
        }
        #[cfg(feature = "iceoryx2")]
        Transport::Iceoryx2 => Box::new(transport::iox::open(at, size, false)?),
        #[cfg(feature = "iceoryx2")]
        Transport::Iceoryx2Rpc => Box::new(transport::iox_rpc::server(at, size)?),
        #[cfg(feature = "grpc")]
        Transport::Grpc => super::grpc::echoer(Path::new(at))?,
        #[cfg(feature = "zenoh")]
        Transport::Zenoh => {
            let (base, port) = base_and_port(at)?;
            super::zenoh::raw_echoer(base, size, port)?
        }
        #[cfg(feature = "zenoh")]
        Transport::ShmBridge => {
            let (base, port) = base_and_port(at)?;
            by_spsc_size!(size, bridged_echo(base, port))?
        }
    })
}

/// `BASE@PORT`: the names and the port of a Zenoh row.
#[cfg(feature = "zenoh")]
fn base_and_port(at: &str) -> Result<(&str, u16)> {
    let (base, port) = at
        .rsplit_once('@')
        .ok_or_else(|| anyhow!("expected BASE@PORT, found {at}"))?;
    Ok((base, port.parse()?))
}

#[cfg(feature = "zenoh")]
fn bridged_echo<const N: usize>(base: &str, port: u16) -> Result<Box<dyn Echoer>> {
    super::zenoh::bridged_echoer::<N>(base, port)
}

fn broadcast_echo<const N: usize>(base: &str) -> Result<Box<dyn Echoer>> {
    transport::broadcast_echoer::<N>(base)
}

fn rpc_echo<const N: usize>(base: &str) -> Result<Box<dyn Echoer>> {
    transport::rpc_echoer::<N>(base)
}

fn waitset_echo<const N: usize>(base: &str, rings: usize) -> Result<Box<dyn Echoer>> {
    super::waiting::waitset_echoer::<N>(base, rings)
}

#[cfg(feature = "tokio")]
fn async_echo<const N: usize>(base: &str, multi: bool, spin: bool) -> Result<Box<dyn Echoer>> {
    let spin = if spin {
        shm_transport::ring::Async::<shm_transport::ring::spsc::Consumer<[u8; N]>>::DEFAULT_SPIN
    } else {
        std::time::Duration::ZERO
    };
    super::waiting::async_echoer::<N>(base, multi, spin)
}

fn spsc_echo<const N: usize>(base: &str, park: bool) -> Result<Box<dyn Echoer>> {
    transport::spsc_echoer::<N>(base, park)
}
