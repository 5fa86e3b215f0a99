//! `shm send` / `shm recv` end to end: real processes of the real binary, a real stream
//! ring under /dev/shm, bytes checked by SHA-256.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shm_testkit::{ShmName, wait_child, wait_for};

fn shm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shm"))
}

/// xorshift64*: a fast, seeded byte source.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Feeds `input` chunks to the sender's stdin while hashing them, reads the receiver's
/// stdout while hashing it; returns both digests and the byte counts.
fn pipe_through(
    sender: &mut Child,
    receiver: &mut Child,
    mut input: impl FnMut() -> Option<Vec<u8>> + Send + 'static,
) -> ((Vec<u8>, u64), (Vec<u8>, u64)) {
    let mut stdin = sender.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = input() {
            hash.update(&chunk);
            n += chunk.len() as u64;
            stdin.write_all(&chunk).unwrap();
        }
        (hash.finalize().to_vec(), n)
    });
    let mut stdout = receiver.stdout.take().unwrap();
    let mut hash = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let got = stdout.read(&mut buf).unwrap();
        if got == 0 {
            break;
        }
        hash.update(&buf[..got]);
        n += got as u64;
    }
    (writer.join().unwrap(), (hash.finalize().to_vec(), n))
}

/// Waits until the ring `name` exists, created by `child`: the side meant to start
/// first did.
fn created_by(name: &ShmName, child: &std::process::Child) {
    wait_for(Duration::from_secs(10), "the first side's ring", || {
        shm_testkit::segment_creator(name.as_str()).map(|pid| {
            assert_eq!(pid, u64::from(child.id()), "created by another process");
        })
    });
}

/// Starts `shm send --lines` on `name` before any receiver, and waits until it has
/// created the ring.
fn line_sender_first(name: &ShmName) -> Child {
    let sender = shm()
        .args(["send", "--lines", name.as_str()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    created_by(name, &sender);
    sender
}

/// How long `shm send` or `shm recv` may take to finish once its input has ended.
const EXIT_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn two_hundred_fifty_six_mib_of_random_bytes_arrive_intact() {
    let name = ShmName::new("pipe-random");
    // The receiver starts first and creates the ring; the sender attaches.
    let mut receiver = shm()
        .args(["recv", name.as_str()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    created_by(&name, &receiver);
    let mut sender = shm()
        .args(["send", name.as_str()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    const TOTAL: usize = 256 << 20;
    const CHUNK: usize = 1 << 20;
    let mut bytes = Bytes(0x9e37_79b9_7f4a_7c15);
    let mut sent = 0;
    let (input, output) = pipe_through(&mut sender, &mut receiver, move || {
        if sent == TOTAL {
            return None;
        }
        // Odd-sized chunks, so that blocks and reads never line up.
        let len = (CHUNK - 3).min(TOTAL - sent);
        let mut chunk = vec![0u8; len];
        bytes.fill(&mut chunk);
        sent += len;
        Some(chunk)
    });
    wait_child(&mut sender, EXIT_LIMIT);
    wait_child(&mut receiver, EXIT_LIMIT);
    assert_eq!(input.1, TOTAL as u64);
    assert_eq!(output.1, input.1, "byte count");
    assert_eq!(
        output.0, input.0,
        "SHA-256 of the output differs from the input's"
    );
}

#[test]
fn a_text_file_by_lines_arrives_intact_sender_first() {
    let name = ShmName::new("pipe-lines");
    // The sender starts first and creates the ring; the receiver comes later.
    let mut sender = line_sender_first(&name);
    let mut receiver = shm()
        .args(["recv", name.as_str()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = 0u64;
    let (input, output) = pipe_through(&mut sender, &mut receiver, move || {
        if line == 200_000 {
            return None;
        }
        // Lines of 0 to 150 characters, some empty, the last without a newline.
        let mut text = String::new();
        for _ in 0..1000 {
            let width = (line * 7919 % 151) as usize;
            text.extend(std::iter::repeat_n(
                char::from(b'a' + (line % 26) as u8),
                width,
            ));
            line += 1;
            if line < 200_000 {
                text.push('\n');
            }
        }
        Some(text.into_bytes())
    });
    wait_child(&mut sender, EXIT_LIMIT);
    wait_child(&mut receiver, EXIT_LIMIT);
    assert_eq!(output.1, input.1, "byte count");
    assert_eq!(
        output.0, input.0,
        "SHA-256 of the output differs from the input's"
    );
}

#[test]
fn a_receiver_without_sender_gives_up_after_its_timeout() {
    let name = ShmName::new("pipe-nobody");
    let start = Instant::now();
    let out = shm()
        .args(["recv", "--timeout", "0.3", name.as_str()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no sender attached") && stderr.contains(name.as_str()),
        "{stderr}"
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(!name.path().exists());
}

#[test]
fn a_sender_that_dies_makes_the_receiver_fail() {
    let name = ShmName::new("pipe-dies");
    let mut sender = shm()
        .args(["send", name.as_str()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = sender.stdin.take().unwrap();
    stdin.write_all(&[7u8; 100_000]).unwrap();
    let mut receiver = shm()
        .args(["recv", name.as_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The handshake, not a sleep: the one full block is through the receiver before the
    // sender dies (the rest of the 100,000 bytes never fill a block).
    let mut stdout = receiver.stdout.take().unwrap();
    let mut block = vec![0u8; 65536];
    stdout.read_exact(&mut block).unwrap();
    assert!(block.iter().all(|&b| b == 7));
    sender.kill().unwrap();
    sender.wait().unwrap();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let mut stderr = String::new();
    receiver
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = receiver.wait().unwrap();
    assert!(!status.success(), "a dead sender must not look finished");
    assert!(stderr.contains("the sender died"), "{stderr}");
    assert_eq!(rest.len(), 0, "only the one full block sent before dying");
    drop(stdin);
}

#[test]
fn a_block_larger_than_the_ring_is_refused_with_the_limit() {
    let name = ShmName::new("pipe-large");
    let out = shm()
        .args([
            "send",
            "--capacity",
            "4096",
            "--block-size",
            "4096",
            name.as_str(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at most 2040"), "{stderr}");
    // The ring it made for nothing is gone.
    assert!(
        !name.path().exists(),
        "left {} behind",
        name.path().display()
    );
}

/// `shm send` run once with a wrong argument each, as a new user would: each error says
/// what is wrong, in the option's own unit, once.
#[test]
fn errors_say_what_is_wrong_in_words_a_user_can_act_on() {
    let run = |args: &[&str]| {
        let out = shm()
            .arg("send")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Below the minimum: not called "not a power of two", and said in bytes.
    let name = ShmName::new("pipe-small");
    let err = run(&["--capacity", "16", name.as_str()]);
    assert!(err.contains("at least 64"), "{err}");
    assert!(err.contains("bytes"), "{err}");
    assert!(!name.path().exists());
    // A directory that does not exist: the system's reason, once.
    let err = run(&["/nonexistent-dir-of-shm-tests/ring"]);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // A short file that is not a segment: "not a segment", not "truncated".
    let foreign = ShmName::new("pipe-foreign");
    std::fs::write(foreign.path(), b"hello, not a ring").unwrap();
    let err = run(&[foreign.as_str()]);
    assert!(err.contains("is not a segment"), "{err}");
    assert!(!err.contains("truncated"), "{err}");
}

/// A second sender on a ring whose sender is attached is told so, with the first
/// sender's pid (found through its lock).
#[test]
fn a_second_sender_is_told_who_is_attached() {
    let name = ShmName::new("pipe-second");
    let mut first = line_sender_first(&name);
    let out = shm()
        .args(["send", name.as_str()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "another sender is attached to {} (pid {})",
        name.as_str(),
        first.id()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    drop(first.stdin.take());
    wait_child(&mut first, EXIT_LIMIT);
}

/// `shm send --lines` sends one frame per line, its newline included, and the last line
/// without one as it is: read back frame by frame through the library, not as bytes
/// (which blocks would match too).
#[test]
fn send_by_lines_makes_one_frame_per_line() {
    use shm_transport::ring::stream;
    let name = ShmName::new("pipe-frames");
    let mut sender = line_sender_first(&name);
    let lines: [&[u8]; 5] = [b"first\n", b"\n", b"a longer third line\n", b"\n", b"last"];
    let mut input = sender.stdin.take().unwrap();
    for line in lines {
        input.write_all(line).unwrap();
    }
    drop(input);
    let mut rx = stream::Builder::new(name.as_str()).consumer().unwrap();
    for line in lines {
        let frame = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(&*frame, line);
    }
    wait_child(&mut sender, EXIT_LIMIT);
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)),
        Err(shm_transport::ring::RecvTimeoutError::Disconnected)
    ));
}

/// `shm topology` prints the allowed cores, each pair's shared cache and SMT siblings,
/// and the recommended pair, as the library computes them.
#[test]
fn topology_prints_the_allowed_cores_and_the_recommended_pair() {
    use shm_transport::sync::affinity;
    let output = shm().arg("topology").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let allowed = affinity::allowed_cores().unwrap();
    assert!(
        text.contains(&format!("allowed cores: {allowed:?}")),
        "{text}"
    );
    // A line per pair of allowed cores: the cache they share, and whether they are SMT
    // siblings, as the library reads the topology.
    let topology = affinity::Topology::read().unwrap();
    for &a in &allowed {
        for &b in allowed.iter().filter(|&&b| b > a) {
            let cache = match topology.shared_cache_level(a, b) {
                Some(level) => format!("share L{level}"),
                None => "share no cache".to_string(),
            };
            let smt = if topology.smt_siblings(a, b) {
                ", SMT siblings"
            } else {
                ""
            };
            let line = format!("cores {a} and {b}: {cache}{smt}\n");
            assert!(text.contains(&line), "no {line:?} in {text}");
        }
    }
    match affinity::recommend_pair() {
        Ok(pair) => assert!(
            text.contains(&format!(
                "recommended: producer core {}, consumer core {}",
                pair.producer, pair.consumer
            )),
            "{text}"
        ),
        Err(_) => assert!(!text.contains("recommended: producer"), "{text}"),
    }
}
