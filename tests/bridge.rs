//! `shm bridge` in real processes: a ring on side A bridged out through Zenoh and into a
//! ring on side B, two bridge processes in peer mode on explicit TCP endpoints, no
//! scouting. Messages are `[u8; 16]`: a sequence number and its checksum, so a message
//! lost, repeated, reordered or corrupted on the way is seen.
#![cfg(feature = "zenoh")]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use shm_testkit::ShmName;
use shm_transport::bridge::zenoh::Wait;
use shm_transport::bridge::{
    self, Counters, Direction, In, Network, Options, Out, Reliability, Step, wire,
};
use shm_transport::ring::inspect::{Detail, inspect};
use shm_transport::ring::{OpenMode, RecvTimeoutError, spsc};
use shm_transport::sync::atomic::{AtomicBool, Ordering};

const SHM: &str = env!("CARGO_BIN_EXE_shm");

/// A message: the sequence number, then its checksum, little endian.
type Checked = [u8; 16];

fn checksum(seq: u64) -> u64 {
    // SplitMix64's finaliser: every bit of the number changes about half the sum's.
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn message(seq: u64) -> Checked {
    let mut m = [0; 16];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..].copy_from_slice(&checksum(seq).to_le_bytes());
    m
}

/// The sequence number of a message whose checksum holds.
fn open(m: &Checked) -> u64 {
    let seq = u64::from_le_bytes(m[..8].try_into().unwrap());
    let sum = u64::from_le_bytes(m[8..].try_into().unwrap());
    assert_eq!(sum, checksum(seq), "message {seq} corrupted on the way");
    seq
}

/// A TCP port free on loopback now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bridge process, killed (if still running) when dropped.
struct Bridge(Child);

impl Bridge {
    /// `shm bridge WAY RING --key KEY EXTRA...`, optionally under `ip netns exec NS`.
    fn start(netns: Option<&str>, way: &str, ring: &ShmName, key: &str, extra: &[&str]) -> Self {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, SHM]);
                c
            }
            None => Command::new(SHM),
        };
        cmd.args(["bridge", way, ring.as_str(), "--key", key])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Bridge(cmd.spawn().expect("starting shm bridge"))
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Stops it with SIGTERM and returns what it printed, once it exits.
    fn stop(mut self) -> (String, String) {
        // SAFETY: a signal to a child of this process, which it has not reaped yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let status = self.0.wait().unwrap();
        let mut out = String::new();
        let mut err = String::new();
        self.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "bridge failed: {status}\n{out}\n{err}");
        (out, err)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bridge's counters, read from outside as `shm inspect` reads them; zero before the
/// bridge has made them.
fn counters(name: &ShmName) -> shm_transport::ring::bridge::Counts {
    match inspect(&name.as_str().into()).map(|i| i.detail) {
        Ok(Detail::Bridge { counts, .. }) => counts,
        Ok(other) => panic!("not a bridge's counters: {other:?}"),
        Err(_) => Default::default(),
    }
}

/// Messages waiting in an SPSC ring.
fn queued(ring: &ShmName) -> u64 {
    match inspect(&ring.as_str().into()).unwrap().detail {
        Detail::Spsc { queued, .. } => queued,
        other => panic!("not an SPSC ring: {other:?}"),
    }
}

/// Waits until `done` holds, for at most 120 s.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out: {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Two rings and the names of their bridges' counters.
struct Sides {
    a: ShmName,
    b: ShmName,
    out_counters: ShmName,
    in_counters: ShmName,
    key: String,
}

impl Sides {
    fn new(tag: &str) -> Self {
        let a = ShmName::new(&format!("{tag}-a"));
        let b = ShmName::new(&format!("{tag}-b"));
        Sides {
            out_counters: a.sibling(".bridge-out"),
            in_counters: b.sibling(".bridge-in"),
            key: format!("shm-test/{}", a.as_str()),
            a,
            b,
        }
    }

    fn ring<T: shm_transport::ring::Message>(name: &ShmName) -> spsc::Builder<T> {
        spsc::Builder::<T>::new(name.as_str())
            .capacity(4096)
            .mode(OpenMode::OpenOrCreate)
    }
}

/// Sends `count` checked messages into ring A from a thread, or fewer if `stop` is set
/// first; the thread returns how many it sent. While the ring's consumer (the bridge) is
/// dead, a send fails with `Disconnected` and the message is sent again until a
/// restarted bridge attaches.
fn produce(a: &ShmName, count: u64, stop: Option<Arc<AtomicBool>>) -> thread::JoinHandle<u64> {
    let mut tx = Sides::ring::<Checked>(a).producer().unwrap();
    // Relaxed: a flag, looked at between sends.
    let stopped = move || stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
    thread::spawn(move || {
        let mut seq = 0;
        while seq < count && !stopped() {
            let mut m = message(seq);
            loop {
                match tx.send_timeout(m, Duration::from_millis(100)) {
                    Ok(()) => break,
                    Err(shm_transport::ring::SendTimeoutError::Timeout(back)) if stopped() => {
                        let _ = back;
                        return seq;
                    }
                    Err(
                        shm_transport::ring::SendTimeoutError::Timeout(back)
                        | shm_transport::ring::SendTimeoutError::Disconnected(back),
                    ) => {
                        m = back;
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("message {seq}: {e}"),
                }
            }
            seq += 1;
        }
        seq
    })
}

/// Receives from ring B until `last` arrives; returns every sequence number in order.
/// While the ring's producer (the inbound bridge) is dead, waits for a restarted one.
fn consume(rx: &mut spsc::Consumer<Checked>, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut since = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => {
                let seq = open(&m);
                seen.push(seq);
                if seq == last {
                    return seen;
                }
                since = Instant::now();
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                assert!(
                    since.elapsed() < Duration::from_secs(60),
                    "nothing for 60 s after {:?}",
                    seen.last()
                );
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("ring B: {e}"),
        }
    }
}

/// One million checked messages from a producer on side A reach a consumer on side B
/// through two bridge processes, all of them, in order; each bridge's counters say so.
#[test]
fn a_million_messages_cross_two_bridges_in_order() {
    crossing(None, "127.0.0.1", 1_000_000);
}

/// The same across two network namespaces joined by a veth pair, the closest thing to
/// two hosts here: made by the test, which needs root and `ip` (iproute2); without root
/// it fails unless `SHM_TESTS_WITHOUT_ROOT` asks to skip it, and says so.
#[test]
fn messages_cross_a_veth_pair_between_two_namespaces() {
    let Some(pair) = Namespaces::make() else {
        return;
    };
    crossing(Some(&pair), "10.201.0.2", 100_000);
}

fn crossing(netns: Option<&Namespaces>, b_address: &str, count: u64) {
    let sides = Sides::new("bridge-cross");
    let mut rx = Sides::ring::<Checked>(&sides.b).consumer().unwrap();
    let producer = produce(&sides.a, count, None);
    let endpoint = format!("tcp/{b_address}:{}", free_port());
    let (ns_a, ns_b) = match netns {
        Some(n) => (Some(n.a.as_str()), Some(n.b.as_str())),
        None => (None, None),
    };
    let inbound = Bridge::start(ns_b, "in", &sides.b, &sides.key, &["--listen", &endpoint]);
    let outbound = Bridge::start(ns_a, "out", &sides.a, &sides.key, &["--connect", &endpoint]);
    let seen = consume(&mut rx, count - 1);
    producer.join().unwrap();
    assert_eq!(seen.len() as u64, count, "every message, none twice");
    assert!(
        seen.iter().enumerate().all(|(i, &s)| s == i as u64),
        "in order"
    );
    // The counters move after the messages: the inbound bridge's once a sample is
    // written, the outbound bridge's once Zenoh has it.
    until("both bridges' counters", || {
        counters(&sides.out_counters).forwarded == count
            && counters(&sides.in_counters).forwarded == count
    });
    let sent = counters(&sides.out_counters);
    let got = counters(&sides.in_counters);
    assert_eq!((sent.forwarded, sent.lost), (count, 0), "{sent:?}");
    assert_eq!(
        (got.forwarded, got.dropped, got.refused, got.lost),
        (count, 0, 0, 0),
        "{got:?}"
    );
    assert!(sent.samples < count, "batched: {} samples", sent.samples);
    let (out, _) = outbound.stop();
    assert!(out.contains(&format!("forwarded {count}")), "{out}");
    inbound.stop();
}

/// An outbound bridge killed with SIGKILL and restarted: while it is dead the producer's
/// ring holds what was not acknowledged; once it is back, it publishes that again and
/// goes on. Side B receives every message, in order, none twice: the inbound bridge
/// skips what it wrote before, and nothing is lost.
#[test]
fn a_killed_outbound_bridge_restarts_and_loses_nothing() {
    let sides = Sides::new("bridge-kill-out");
    let mut rx = Sides::ring::<Checked>(&sides.b).consumer().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(&sides.a, u64::MAX, Some(stop.clone()));
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let _inbound = Bridge::start(None, "in", &sides.b, &sides.key, &["--listen", &endpoint]);
    let connect = ["--connect", endpoint.as_str()];
    let mut outbound = Bridge::start(None, "out", &sides.a, &sides.key, &connect);
    let mut seen = consume(&mut rx, 50_000);
    // Side B stops reading: ring B fills, Zenoh backs up (reliable, Block), bridge A
    // waits in its publication, and ring A fills behind it.
    until("ring A full behind a stalled link", || {
        queued(&sides.a) == 4096
    });
    outbound.kill();
    // What the dead bridge did not have acknowledged stays in ring A: nobody takes it.
    let held = queued(&sides.a);
    thread::sleep(Duration::from_millis(100));
    assert!(held > 0 && queued(&sides.a) >= held, "ring A held {held}");
    let outbound = Bridge::start(None, "out", &sides.a, &sides.key, &connect);
    // Relaxed: a flag.
    stop.store(true, Ordering::Relaxed);
    let count = producer.join().unwrap();
    seen.extend(consume(&mut rx, count - 1));
    assert_eq!(
        seen,
        (0..count).collect::<Vec<_>>(),
        "every message once, in order"
    );
    let got = counters(&sides.in_counters);
    assert_eq!(got.lost, 0, "{got:?}");
    eprintln!(
        "outbound bridge killed with {held} messages in ring A: {count} sent, all received; \
         {} published again and skipped",
        got.repeated
    );
    outbound.stop();
}

/// An inbound bridge killed with SIGKILL and restarted: what it had taken from the
/// network and not written is published again by the outbound bridge, which had not
/// released it. Side B receives every message in order; at most one twice (the one the
/// dead bridge may have written and not yet recorded).
#[test]
fn a_killed_inbound_bridge_restarts_and_loses_nothing() {
    let sides = Sides::new("bridge-kill-in");
    let mut rx = Sides::ring::<Checked>(&sides.b).consumer().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(&sides.a, u64::MAX, Some(stop.clone()));
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let listen = ["--listen", endpoint.as_str()];
    let mut inbound = Bridge::start(None, "in", &sides.b, &sides.key, &listen);
    let outbound = Bridge::start(None, "out", &sides.a, &sides.key, &["--connect", &endpoint]);
    let mut seen = consume(&mut rx, 30_000);
    inbound.kill();
    thread::sleep(Duration::from_millis(200));
    let inbound = Bridge::start(None, "in", &sides.b, &sides.key, &listen);
    // Relaxed: a flag.
    stop.store(true, Ordering::Relaxed);
    let count = producer.join().unwrap();
    seen.extend(consume(&mut rx, count - 1));
    let twice = seen.windows(2).filter(|w| w[0] == w[1]).count();
    assert!(twice <= 1, "{twice} messages written twice");
    seen.dedup();
    assert_eq!(
        seen,
        (0..count).collect::<Vec<_>>(),
        "every message, in order"
    );
    assert_eq!(counters(&sides.in_counters).lost, 0);
    eprintln!("inbound bridge killed after 30,000: {count} sent, all received, {twice} twice");
    outbound.stop();
    inbound.stop();
}

/// A sample of another message type is refused, counted, and said why, and nothing of it
/// reaches the ring.
#[test]
fn a_sample_of_another_type_is_refused() {
    let sides = Sides::new("bridge-type");
    let mut rx = Sides::ring::<u64>(&sides.b).consumer().unwrap();
    let producer = produce(&sides.a, 10, None);
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let inbound = Bridge::start(None, "in", &sides.b, &sides.key, &["--listen", &endpoint]);
    let outbound = Bridge::start(None, "out", &sides.a, &sides.key, &["--connect", &endpoint]);
    producer.join().unwrap();
    until("a refusal", || counters(&sides.in_counters).refused > 0);
    outbound.stop();
    let (_, err) = inbound.stop();
    assert!(err.contains("refused a sample of `array`"), "{err}");
    assert!(err.contains("the ring carries `u64`"), "{err}");
    let got = counters(&sides.in_counters);
    assert_eq!((got.forwarded, got.refused > 0), (0, true), "{got:?}");
    // Nothing was written, and the bridge, its producer, has closed the ring.
    assert_eq!(
        rx.try_recv(),
        Err(shm_transport::ring::TryRecvError::Disconnected)
    );
}

/// With `--on-full drop`, an inbound bridge whose ring is full drops messages and counts
/// them: what is in the ring and what was dropped add up to what was sent.
#[test]
fn a_full_ring_drops_and_counts_with_on_full_drop() {
    let count = 20_000;
    let sides = Sides::new("bridge-drop");
    // A small ring B nobody reads until the end.
    let mut rx = spsc::Builder::<Checked>::new(sides.b.as_str())
        .capacity(64)
        .mode(OpenMode::Create)
        .consumer()
        .unwrap();
    let producer = produce(&sides.a, count, None);
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let extra = ["--listen", endpoint.as_str(), "--on-full", "drop"];
    let inbound = Bridge::start(None, "in", &sides.b, &sides.key, &extra);
    let outbound = Bridge::start(None, "out", &sides.a, &sides.key, &["--connect", &endpoint]);
    producer.join().unwrap();
    until("every message forwarded or dropped", || {
        let c = counters(&sides.in_counters);
        c.forwarded + c.dropped == count
    });
    let got = counters(&sides.in_counters);
    assert_eq!(got.forwarded, 64, "the ring's capacity: {got:?}");
    assert_eq!(got.dropped, count - 64);
    let mut seen = Vec::new();
    while let Ok(m) = rx.try_recv() {
        seen.push(open(&m));
    }
    assert_eq!(seen, (0..64).collect::<Vec<_>>());
    outbound.stop();
    inbound.stop();
}

/// Two network namespaces joined by a veth pair (10.201.0.1 in `a`, 10.201.0.2 in
/// `b`), removed when dropped.
struct Namespaces {
    a: String,
    b: String,
}

impl Namespaces {
    /// Makes them; `None` when not root and skipping is asked for.
    fn make() -> Option<Self> {
        // Without root the test fails rather than pass unseen, unless skipping it is
        // asked for by name (as the other tests that need root).
        const WITHOUT_ROOT: &str = "SHM_TESTS_WITHOUT_ROOT";
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os(WITHOUT_ROOT).is_some(),
                "making network namespaces needs root; set {WITHOUT_ROOT}=1 to skip this test"
            );
            eprintln!("skipped ({WITHOUT_ROOT} is set): making network namespaces needs root");
            return None;
        }
        let id = std::process::id();
        let pair = Namespaces {
            a: format!("shm-test-a-{id}"),
            b: format!("shm-test-b-{id}"),
        };
        let (va, vb) = (format!("shmva{id}"), format!("shmvb{id}"));
        let steps: [&[&str]; 9] = [
            &["netns", "add", &pair.a],
            &["netns", "add", &pair.b],
            &["link", "add", &va, "type", "veth", "peer", "name", &vb],
            &["link", "set", &va, "netns", &pair.a],
            &["link", "set", &vb, "netns", &pair.b],
            &["-n", &pair.a, "addr", "add", "10.201.0.1/24", "dev", &va],
            &["-n", &pair.b, "addr", "add", "10.201.0.2/24", "dev", &vb],
            &["-n", &pair.a, "link", "set", &va, "up"],
            &["-n", &pair.b, "link", "set", &vb, "up"],
        ];
        for step in steps {
            match Command::new("ip").args(step).status() {
                Ok(s) if s.success() => {}
                Ok(s) => panic!("`ip {}` failed ({s})", step.join(" ")),
                Err(e) => panic!("no `ip` command (iproute2): {e}"),
            }
        }
        for ns in [&pair.a, &pair.b] {
            let _ = Command::new("ip")
                .args(["-n", ns, "link", "set", "lo", "up"])
                .status();
        }
        Some(pair)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Two Zenoh sessions of this process joined over loopback TCP, peer mode, no scouting.
fn sessions() -> (bridge::zenoh::Session, bridge::zenoh::Session) {
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let a = Network {
        listen: vec![endpoint.clone()],
        ..Network::default()
    }
    .open()
    .unwrap();
    let b = Network {
        connect: vec![endpoint],
        ..Network::default()
    }
    .open()
    .unwrap();
    (a, b)
}

/// An outbound bridge publishes reliable samples with congestion control `Block` by
/// default, best-effort ones with `Drop` when asked: as the samples that arrive say. Each
/// carries the attachment that names its type and numbers its messages by ring position.
#[test]
fn samples_carry_the_reliability_asked_for_and_their_attachment() {
    use bridge::zenoh::qos::{CongestionControl, Reliability as Zr};
    let cases = [
        (
            Reliability::Reliable,
            Zr::Reliable,
            CongestionControl::Block,
        ),
        (
            Reliability::BestEffort,
            Zr::BestEffort,
            CongestionControl::Drop,
        ),
    ];
    for (asked, reliability, congestion) in cases {
        let (a, b) = sessions();
        let ring = ShmName::new("bridge-qos");
        let key = format!("shm-test/{}", ring.as_str());
        let mut tx = Sides::ring::<Checked>(&ring).producer().unwrap();
        let rx = Sides::ring::<Checked>(&ring).consumer().unwrap();
        let stream = rx.ring_id();
        let subscriber = b.declare_subscriber(key.clone()).wait().unwrap();
        let options = Options {
            reliability: asked,
            ..Options::default()
        };
        let counters = Counters::heap(Direction::Out, &key);
        let mut out = Out::new(&a, &key, rx, &options, counters).unwrap();
        for seq in 0..3 {
            tx.send(message(seq)).unwrap();
        }
        // The first steps wait for the subscriber to be seen; then one batch of three.
        until("a batch published", || {
            out.step(Duration::from_millis(10)).unwrap() == 3
        });
        let sample = subscriber
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("the batch arrives");
        assert_eq!(sample.congestion_control(), congestion, "{asked:?}");
        assert_eq!(sample.reliability(), reliability, "{asked:?}");
        let attachment = sample.attachment().unwrap().to_bytes();
        let header = wire::decode(Some(&attachment), &wire::Identity::of::<Checked>()).unwrap();
        assert_eq!((header.stream, header.first, header.count), (stream, 0, 3));
        let payload = sample.payload().to_bytes();
        let sent: Vec<u8> = (0..3).flat_map(message).collect();
        assert_eq!(&payload[..], &sent[..]);
        assert_eq!(out.counters().counts().forwarded, 3);
    }
}

/// An inbound bridge follows each stream's sequence numbers: a gap is counted as lost,
/// messages delivered before are skipped, another stream starts afresh; samples that
/// are not a bridge's, of another type, or malformed are refused and counted; and the
/// place it reached survives it, in its counters, for the next bridge.
#[test]
fn an_inbound_bridge_counts_gaps_skips_repeats_and_refuses_the_rest() {
    let (a, b) = sessions();
    let ring = ShmName::new("bridge-seq");
    let counters_name = ring.sibling(".bridge-in");
    let key = format!("shm-test/{}", ring.as_str());
    let mut rx = Sides::ring::<Checked>(&ring).consumer().unwrap();
    let publisher = a
        .declare_publisher(key.clone())
        .congestion_control(bridge::zenoh::qos::CongestionControl::Block)
        .wait()
        .unwrap();
    let open_bridge = || {
        let counters = Counters::open(counters_name.as_str(), Direction::In, &key).unwrap();
        let sink = Sides::ring::<Checked>(&ring).producer().unwrap();
        In::new(&b, &key, sink, &Options::default(), counters).unwrap()
    };
    let mut inbound = open_bridge();
    let id = wire::Identity::of::<Checked>();
    let put = |stream: u64, first: u64, count: u32| {
        let mut attachment = Vec::new();
        wire::encode(&mut attachment, &id, stream, first, count);
        let payload: Vec<u8> = (first..first + u64::from(count))
            .flat_map(message)
            .collect();
        publisher
            .put(payload)
            .attachment(attachment)
            .wait()
            .unwrap();
    };
    let stop = AtomicBool::new(false);
    let step = |inbound: &mut In<spsc::Producer<Checked>>| {
        let start = Instant::now();
        loop {
            match inbound.step(Duration::from_millis(100), &stop).unwrap() {
                Step::Idle => assert!(start.elapsed() < Duration::from_secs(10), "no sample"),
                other => break other,
            }
        }
    };
    let delivered = |written, repeated| Step::Delivered {
        written,
        dropped: 0,
        repeated,
    };
    // The subscription is seen by the publisher before the first sample.
    until("the subscription seen", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    put(7, 0, 2);
    assert_eq!(step(&mut inbound), delivered(2, 0));
    put(7, 5, 1); // 2, 3 and 4 missing
    assert_eq!(step(&mut inbound), delivered(1, 0));
    put(7, 4, 3); // 4 counted lost and 5 delivered before: skipped; 6 new
    assert_eq!(step(&mut inbound), delivered(1, 2));
    put(9, 100, 1); // another stream: no gap to count
    assert_eq!(step(&mut inbound), delivered(1, 0));
    publisher.put(vec![0u8; 16]).wait().unwrap();
    assert_eq!(step(&mut inbound), Step::Refused(wire::Refusal::Foreign));
    let mut attachment = Vec::new();
    wire::encode(&mut attachment, &id, 9, 101, 2);
    publisher
        .put(vec![0u8; 17])
        .attachment(attachment)
        .wait()
        .unwrap();
    assert!(matches!(
        step(&mut inbound),
        Step::Refused(wire::Refusal::Malformed { count: 2, len: 17 })
    ));
    let seen: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok().map(|m| open(&m))).collect();
    assert_eq!(seen, [0, 1, 5, 6, 100]);
    let counts = inbound.counters().counts();
    assert_eq!(
        (
            counts.forwarded,
            counts.lost,
            counts.refused,
            counts.samples
        ),
        (5, 3, 2, 4)
    );
    // The next bridge on these counters goes on from stream 9, message 101.
    drop(inbound);
    until("the old subscription gone", || {
        !publisher.matching_status().wait().unwrap().matching()
    });
    let mut inbound = open_bridge();
    until("the new subscription seen", || {
        publisher.matching_status().wait().unwrap().matching()
    });
    put(9, 100, 3);
    assert_eq!(step(&mut inbound), delivered(2, 1));
    assert_eq!(rx.try_recv().map(|m| open(&m)), Ok(101));
}
