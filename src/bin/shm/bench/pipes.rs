//! `shm bench --pipes`: bytes per second of `shm send NAME < FILE` + `shm recv NAME >
//! /dev/null` against the same bytes through a plain pipe (`relay < FILE | relay >
//! /dev/null`) and a Unix socket (a relay on each end), in interleaved rounds. The relays
//! are this binary (`bench-relay`), copying with the same 64 KiB buffer as `shm send`'s
//! blocks; every process is a separate program, as in a shell pipeline.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::report::median;

/// The copy buffer of the relays, and `shm send`'s default block.
const BUFFER: usize = 1 << 16;

const TRANSPORTS: [&str; 3] = ["shm send|recv", "pipe", "uds"];

/// Runs the comparison: `bytes` from a file on tmpfs, `rounds` interleaved rounds.
pub fn run(bytes: u64, rounds: usize) -> Result<()> {
    ensure!(
        bytes > 0 && rounds > 0,
        "--pipe-bytes and --rounds must be at least 1"
    );
    let id = format!("shm-bench-pipes-{}", std::process::id());
    let input = Path::new("/dev/shm").join(format!("{id}-input"));
    let _remove = RemoveOnDrop(input.clone());
    write_input(&input, bytes)?;
    let exe = std::env::current_exe()?;
    println!(
        "{bytes} bytes from a file on tmpfs to /dev/null, {rounds} interleaved rounds; GB/s = 10^9 bytes/s"
    );
    let mut rates = vec![Vec::new(); TRANSPORTS.len()];
    for round in 0..rounds {
        for (k, name) in TRANSPORTS.iter().enumerate() {
            let elapsed = match k {
                0 => shm(&exe, &input, &format!("{id}-ring-{round}"))?,
                1 => pipe(&exe, &input)?,
                _ => uds(
                    &exe,
                    &input,
                    &std::env::temp_dir().join(format!("{id}-{round}.sock")),
                )?,
            };
            let rate = bytes as f64 / elapsed.as_secs_f64() / 1e9;
            eprintln!("round {round}: {name:<14} {rate:6.2} GB/s");
            rates[k].push(rate);
        }
    }
    println!(
        "{:<14} {:>12} {:>12} {:>12}",
        "transport", "median GB/s", "min", "max"
    );
    for (k, name) in TRANSPORTS.iter().enumerate() {
        let r = &rates[k];
        println!(
            "{name:<14} {:>12.2} {:>12.2} {:>12.2}",
            median(r),
            r.iter().copied().fold(f64::INFINITY, f64::min),
            r.iter().copied().fold(0.0, f64::max)
        );
    }
    for (k, name) in TRANSPORTS.iter().enumerate().skip(1) {
        let ratios: Vec<f64> = rates[0].iter().zip(&rates[k]).map(|(a, b)| a / b).collect();
        println!(
            "shm send|recv / {name}: {:.2}x (median of per-round ratios)",
            median(&ratios)
        );
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_input(path: &Path, bytes: u64) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn finish(mut child: Child, what: &str) -> Result<()> {
    let status = child.wait()?;
    ensure!(status.success(), "{what} failed: {status}");
    Ok(())
}

fn shm(exe: &Path, input: &Path, name: &str) -> Result<Duration> {
    let start = Instant::now();
    let recv = Command::new(exe)
        .args(["recv", name, "--timeout", "10"])
        .stdout(Stdio::null())
        .spawn()?;
    let send = Command::new(exe)
        .args(["send", name])
        .stdin(File::open(input)?)
        .spawn()?;
    finish(send, "shm send")?;
    finish(recv, "shm recv")?;
    Ok(start.elapsed())
}

fn pipe(exe: &Path, input: &Path) -> Result<Duration> {
    let start = Instant::now();
    let mut writer = Command::new(exe)
        .arg("bench-relay")
        .stdin(File::open(input)?)
        .stdout(Stdio::piped())
        .spawn()?;
    let reader = Command::new(exe)
        .arg("bench-relay")
        .stdin(writer.stdout.take().context("relay stdout")?)
        .stdout(Stdio::null())
        .spawn()?;
    finish(writer, "pipe writer")?;
    finish(reader, "pipe reader")?;
    Ok(start.elapsed())
}

fn uds(exe: &Path, input: &Path, socket: &Path) -> Result<Duration> {
    let _remove = RemoveOnDrop(socket.to_path_buf());
    let start = Instant::now();
    let reader = Command::new(exe)
        .args(["bench-relay", "--accept"])
        .arg(socket)
        .stdout(Stdio::null())
        .spawn()?;
    let writer = Command::new(exe)
        .args(["bench-relay", "--connect"])
        .arg(socket)
        .stdin(File::open(input)?)
        .spawn()?;
    finish(writer, "socket writer")?;
    finish(reader, "socket reader")?;
    Ok(start.elapsed())
}

/// `shm bench-relay`: copies standard input to standard output, or to a Unix socket it
/// connects to (`--connect`), or from one it accepts on (`--accept`) to standard output.
pub fn relay(accept: Option<PathBuf>, connect: Option<PathBuf>) -> Result<()> {
    match (accept, connect) {
        (None, None) => copy(&mut io::stdin().lock(), &mut io::stdout().lock()),
        (Some(path), None) => {
            let listener = UnixListener::bind(&path)?;
            let (mut stream, _) = listener.accept()?;
            copy(&mut stream, &mut io::stdout().lock())
        }
        (None, Some(path)) => {
            let give_up = Instant::now() + Duration::from_secs(5);
            let mut stream = loop {
                match UnixStream::connect(&path) {
                    Ok(stream) => break stream,
                    Err(_) if Instant::now() < give_up => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => bail!("connecting to {}: {e}", path.display()),
                }
            };
            copy(&mut io::stdin().lock(), &mut stream)
        }
        (Some(_), Some(_)) => bail!("--accept and --connect exclude each other"),
    }
}

fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<()> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        to.write_all(&buf[..n])?;
    }
}
