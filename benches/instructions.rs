//! The per-message path in instructions: `PAIRS` times a send then a receive of one
//! message in one thread, for our rings and the in-process queues they are measured
//! against, to run under `valgrind --tool=callgrind`, which counts instructions exactly
//! whatever the noise of the machine. `benches/callgrind.sh` runs every case at two pair
//! counts and prints the difference per pair (setup cancels out).
//!
//! Run one case: `cargo bench --bench instructions -- CASE PAIRS`, where CASE is one of
//! `spsc-heap`, `spsc-shm`, `spsc-shm-64`, `rtrb`, `rtrb-64`, `mpmc-heap`, `mpmc-shm`,
//! `array-queue`. Without arguments (as under a plain `cargo bench`) it lists them.

use std::hint::black_box;

use crossbeam_queue::ArrayQueue;
use shm_transport::alloc::{Location, Segment};
use shm_transport::ring::spsc::OpenMode;
use shm_transport::ring::{mpmc, spsc};
use shm_transport::sync::WaitStrategy;

const CAPACITY: u64 = 4096;
const CASES: [&str; 8] = [
    "spsc-heap",
    "spsc-shm",
    "spsc-shm-64",
    "rtrb",
    "rtrb-64",
    "mpmc-heap",
    "mpmc-shm",
    "array-queue",
];

/// `pairs` times `send(i)` then `recv()`, checking each value (so that neither is
/// optimised away and a broken queue fails loudly).
macro_rules! pairs {
    ($pairs:expr, $make:expr, |$tx:ident, $v:ident| $send:expr, |$rx:ident| $recv:expr) => {{
        #[allow(unused_mut)]
        let (mut $tx, mut $rx) = $make;
        for i in 0..$pairs {
            let $v = black_box(i);
            $send;
            let got = $recv;
            assert_eq!(message_id(&got), i, "lost or reordered");
        }
    }};
}

fn message_id<M: AsId>(m: &M) -> u64 {
    m.id()
}

trait AsId {
    fn id(&self) -> u64;
}

impl AsId for u64 {
    fn id(&self) -> u64 {
        *self
    }
}

impl AsId for [u8; 64] {
    fn id(&self) -> u64 {
        u64::from_le_bytes(self[..8].try_into().unwrap())
    }
}

fn wide(i: u64) -> [u8; 64] {
    let mut m = [0u8; 64];
    m[..8].copy_from_slice(&i.to_le_bytes());
    m
}

/// A segment-backed ring of module `$kind` (`spsc` or `mpmc`) carrying `$T`, its file
/// unlinked at once (the mappings stay).
macro_rules! shm_pair {
    ($kind:ident, $T:ty) => {{
        let name = format!(
            "shm-instructions-{}-{}",
            stringify!($kind),
            std::process::id()
        );
        let b = $kind::Builder::<$T>::new(name.as_str())
            .capacity(CAPACITY)
            .mode(OpenMode::Create)
            .wait_strategy(WaitStrategy::BusySpin);
        let tx = b.producer().unwrap();
        let rx = b.mode(OpenMode::Open).consumer().unwrap();
        Segment::remove(&Location::Name(name)).unwrap();
        (tx, rx)
    }};
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(case), Some(pairs)) = (args.first(), args.get(1)) else {
        println!(
            "instructions: run under callgrind with CASE PAIRS (benches/callgrind.sh); cases: {}",
            CASES.join(" ")
        );
        return;
    };
    let pairs: u64 = pairs.parse().expect("PAIRS is a number");
    match case.as_str() {
        "spsc-heap" => pairs!(
            pairs,
            spsc::channel::<u64>(CAPACITY).unwrap(),
            |tx, v| tx.try_send(v).unwrap(),
            |rx| rx.try_recv().unwrap()
        ),
        "spsc-shm" => pairs!(
            pairs,
            shm_pair!(spsc, u64),
            |tx, v| tx.try_send(v).unwrap(),
            |rx| rx.try_recv().unwrap()
        ),
        "spsc-shm-64" => pairs!(
            pairs,
            shm_pair!(spsc, [u8; 64]),
            |tx, v| tx.try_send(wide(v)).unwrap(),
            |rx| rx.try_recv().unwrap()
        ),
        "rtrb" => pairs!(
            pairs,
            rtrb::RingBuffer::<u64>::new(CAPACITY as usize),
            |tx, v| tx.push(v).unwrap(),
            |rx| rx.pop().unwrap()
        ),
        "rtrb-64" => pairs!(
            pairs,
            rtrb::RingBuffer::<[u8; 64]>::new(CAPACITY as usize),
            |tx, v| tx.push(wide(v)).unwrap(),
            |rx| rx.pop().unwrap()
        ),
        "mpmc-heap" => pairs!(
            pairs,
            mpmc::channel::<u64>(CAPACITY).unwrap(),
            |tx, v| tx.try_send(v).unwrap(),
            |rx| rx.try_recv().unwrap()
        ),
        "mpmc-shm" => pairs!(
            pairs,
            shm_pair!(mpmc, u64),
            |tx, v| tx.try_send(v).unwrap(),
            |rx| rx.try_recv().unwrap()
        ),
        "array-queue" => pairs!(
            pairs,
            {
                let q = std::sync::Arc::new(ArrayQueue::<u64>::new(CAPACITY as usize));
                (q.clone(), q)
            },
            |tx, v| tx.push(v).unwrap(),
            |rx| rx.pop().unwrap()
        ),
        other => panic!("unknown case {other}; cases: {}", CASES.join(" ")),
    }
}
