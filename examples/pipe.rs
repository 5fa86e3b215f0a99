//! The stream ring as a faster pipe, from the library: the same bytes to a child process
//! through a stream ring and through an OS pipe, each checked at the other end.
//!
//! ```sh
//! cargo run --release --example pipe              # 128 MiB in 64 KiB frames
//! cargo run --release --example pipe -- 1024      # MiB
//! ```
//!
//! The writer sends frames of up to 64 KiB (`stream::Producer::claim`: the bytes are
//! written straight into the ring, and `commit` publishes the frame); the reader process
//! reads each frame in place (`stream::Consumer::recv`), folds it into a checksum and
//! releases it. Then the same bytes go through a pipe to the child's standard input.
//! Both children print their byte count and checksum, which the parent checks against
//! its own; the rates are from one run, side by side.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shm_transport::ring::{OpenMode, RecvError, stream};

/// Bytes per frame, and per pipe write.
const FRAME: usize = 64 * 1024;

/// FNV-1a over every 64th eight-byte word of a buffer and its length, continuing from
/// `hash`: cheap next to moving the bytes, and it still notices a lost, repeated,
/// reordered or cut frame (every word of a frame carries the frame's number).
fn fold(mut hash: u64, bytes: &[u8]) -> u64 {
    hash = (hash ^ bytes.len() as u64).wrapping_mul(0x100_0000_01b3);
    for word in bytes.chunks(8).step_by(64) {
        let mut w = [0u8; 8];
        w[..word.len()].copy_from_slice(word);
        hash = (hash ^ u64::from_le_bytes(w)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// The bytes of frame `n`: a pattern that differs from frame to frame.
fn fill(buf: &mut [u8], n: u64) {
    for (i, word) in buf.chunks_mut(8).enumerate() {
        let v = (n << 20 ^ i as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ring-reader") => return ring_reader(&args[1]),
        Some("pipe-reader") => return pipe_reader(),
        _ => {}
    }
    let mib: u64 = args.first().map_or(Ok(128), |a| a.parse())?;
    let frames = mib * 1024 * 1024 / FRAME as u64;
    let exe = std::env::current_exe()?;
    let mut frame = vec![0u8; FRAME];
    let mut expected = 0xcbf2_9ce4_8422_2325u64;
    for n in 0..frames {
        fill(&mut frame, n);
        expected = fold(expected, &frame);
    }
    let total = frames * FRAME as u64;

    // Through a stream ring of 4 MiB.
    let name = format!("pipe-example-{}", std::process::id());
    let mut tx = stream::Builder::new(name.as_str())
        .capacity(4 << 20)
        .mode(OpenMode::Create)
        .producer()?;
    let child = Command::new(&exe)
        .args(["ring-reader", &name])
        .stdout(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    for n in 0..frames {
        // Waits (spin, then park) while the reader has not released room for the frame.
        let mut claim = tx.claim_deadline(FRAME, None)?;
        fill(&mut claim, n);
        claim.commit();
    }
    drop(tx);
    let ring = check(child, total, expected, started)?;
    shm_transport::alloc::Segment::remove(&name.as_str().into())?;

    // Through a pipe, the same frames.
    let mut child = Command::new(&exe)
        .arg("pipe-reader")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let started = Instant::now();
    for n in 0..frames {
        fill(&mut frame, n);
        stdin.write_all(&frame)?;
    }
    drop(stdin);
    let pipe = check(child, total, expected, started)?;

    let rate = |d: Duration| total as f64 / d.as_secs_f64() / (1 << 30) as f64;
    println!("bytes:        {total} ({mib} MiB in {frames} frames of 64 KiB), checksums match");
    println!("stream ring:  {:.1?}, {:.2} GiB/s", ring, rate(ring));
    println!("pipe:         {:.1?}, {:.2} GiB/s", pipe, rate(pipe));
    println!(
        "ring / pipe:  {:.1}x the rate",
        pipe.as_secs_f64() / ring.as_secs_f64()
    );
    Ok(())
}

/// Waits for a reader, checks what it says it read, and returns the time since `started`.
fn check(
    mut child: std::process::Child,
    total: u64,
    expected: u64,
    started: Instant,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut said = String::new();
    child
        .stdout
        .take()
        .ok_or("no stdout")?
        .read_to_string(&mut said)?;
    let elapsed = started.elapsed();
    if !child.wait()?.success() {
        return Err("a reader failed".into());
    }
    let want = format!("{total} {expected:x}");
    if said.trim() != want {
        return Err(format!("the reader got `{}`, expected `{want}`", said.trim()).into());
    }
    Ok(elapsed)
}

/// Reads frames in place until the writer is gone; prints bytes and checksum.
fn ring_reader(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut rx = stream::Builder::new(name).mode(OpenMode::Open).consumer()?;
    let (mut bytes, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
    loop {
        match rx.recv() {
            Ok(frame) => {
                bytes += frame.len() as u64;
                hash = fold(hash, &frame);
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("{bytes} {hash:x}");
    Ok(())
}

/// Reads standard input to its end, 64 KiB at a time; prints bytes and checksum.
fn pipe_reader() -> Result<(), Box<dyn std::error::Error>> {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; FRAME];
    let (mut bytes, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
    loop {
        // Whole frames, so that the fold sees the same 8-byte words as the writer's.
        let mut filled = 0;
        while filled < FRAME {
            match stdin.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        bytes += filled as u64;
        hash = fold(hash, &buf[..filled]);
        if filled < FRAME {
            break;
        }
    }
    println!("{bytes} {hash:x}");
    Ok(())
}
