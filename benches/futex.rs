//! Costs of the wake-up path, on this machine, in one run:
//!
//! - `notify/no_waiter`: `EventCount::notify` with nobody waiting (two loads behind a
//!   compiler fence, once the process registered its membarrier);
//! - `notify/raw_futex_wake`: a `FUTEX_WAKE` syscall on a word nobody waits on, which is
//!   what a notifier without an event count would pay for every message;
//! - `pingpong/{park,busy_spin}`: a round trip between two processes pinned to two cores,
//!   through a file mapped by both: one side bumps a word and notifies, the other waits
//!   for it with `WaitStrategy::Park` (a futex sleep and wake-up each way) or
//!   `WaitStrategy::BusySpin` (no syscall), and answers.
//!
//! Run: `cargo bench --bench futex`. The child process is this binary again, started
//! with `SHM_PINGPONG_CHILD` in its environment.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use memmap2::MmapMut;
use shm_sync::atomic::{AtomicU32, Ordering};
use shm_sync::{CachePadded, EventCount, WaitStrategy, affinity, futex};

const CHILD_ENV: &str = "SHM_PINGPONG_CHILD";
const STRATEGY_ENV: &str = "SHM_PINGPONG_STRATEGY";
/// The ball value that tells the child to exit.
const STOP: u32 = u32::MAX;

/// The mapped page both processes use.
#[repr(C)]
struct Table {
    /// Odd: the child's turn; even: the parent's turn.
    ball: CachePadded<AtomicU32>,
    to_child: CachePadded<EventCount>,
    to_parent: CachePadded<EventCount>,
}

fn map(file: &File) -> (MmapMut, &'static Table) {
    // SAFETY: the file is a private temporary file of this benchmark, shared only with
    // its own child; nothing truncates it while mapped.
    let mut map = unsafe { MmapMut::map_mut(file) }.expect("map the ping-pong file");
    let ptr = map.as_mut_ptr().cast::<Table>();
    // SAFETY: the mapping is page-aligned (Table needs 128) and at least 4096 bytes
    // (Table is 384); the file was zero-filled by `set_len`, and all-zero is a valid
    // Table (atomics and event counts at zero); every access after this is atomic. The
    // mapping lives as long as the returned `MmapMut`, which callers keep alive for as
    // long as they use the reference.
    let table = unsafe { &*ptr };
    (map, table)
}

fn strategy(name: &str) -> WaitStrategy {
    match name {
        "park" => WaitStrategy::Park,
        "busy_spin" => WaitStrategy::BusySpin,
        other => panic!("unknown strategy {other}"),
    }
}

fn child(path: &str) {
    let strategy = strategy(&std::env::var(STRATEGY_ENV).expect("strategy"));
    if let Some(core) = std::env::var("SHM_PINGPONG_CORE")
        .ok()
        .and_then(|c| c.parse().ok())
    {
        affinity::pin_current_thread(core).expect("pin child");
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let (_map, t) = map(&file);
    let mut last = 0;
    // Sleep until the first ball whatever the strategy: the children of every strategy
    // are started together, and only the one being measured may use the core.
    let mut wait = WaitStrategy::Park;
    loop {
        // Acquire: the parent's Release store of the ball is all there is to see.
        let ball = wait
            .wait_for(&t.to_child, None, || {
                let b = t.ball.load(Ordering::Acquire);
                (b != last && b % 2 == 1 || b == STOP).then_some(b)
            })
            .expect("no deadline");
        if ball == STOP {
            return;
        }
        wait = strategy;
        last = ball + 1;
        // Release: hands the turn back.
        t.ball.store(last, Ordering::Release);
        t.to_parent.notify();
    }
}

struct PingPong {
    child: Child,
    _map: MmapMut,
    table: &'static Table,
    ball: u32,
    strategy: WaitStrategy,
    path: std::path::PathBuf,
}

impl PingPong {
    fn start(name: &str, cores: Option<(usize, usize)>) -> Self {
        let path =
            std::env::temp_dir().join(format!("shm-bench-pingpong-{}-{name}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        file.set_len(4096).expect("size");
        let (map, table) = map(&file);
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.env(CHILD_ENV, &path).env(STRATEGY_ENV, name);
        if let Some((_, consumer)) = cores {
            cmd.env("SHM_PINGPONG_CORE", consumer.to_string());
        }
        let child = cmd.spawn().expect("spawn child");
        Self {
            child,
            _map: map,
            table,
            ball: 0,
            strategy: strategy(name),
            path,
        }
    }

    fn round_trips(&mut self, n: u64) -> Duration {
        let t = self.table;
        let start = Instant::now();
        for _ in 0..n {
            let serve = self.ball + 1;
            // Release: publishes the turn to the child.
            t.ball.store(serve, Ordering::Release);
            t.to_child.notify();
            let back = serve + 1;
            self.strategy
                .wait_for(
                    &t.to_parent,
                    Some(Instant::now() + Duration::from_secs(10)),
                    || {
                        // Acquire: pairs with the child's Release store.
                        (t.ball.load(Ordering::Acquire) == back).then_some(())
                    },
                )
                .expect("child answers within 10 s");
            self.ball = back;
        }
        start.elapsed()
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.table.ball.store(STOP, Ordering::Release);
        self.table.to_child.notify();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn notify(c: &mut Criterion) {
    let mut g = c.benchmark_group("notify");
    let ec = EventCount::new();
    g.bench_function("no_waiter", |b| b.iter(|| black_box(&ec).notify()));
    // A waiter that announced itself and died parked: before it is settled, every
    // notify is a `FUTEX_WAKE` that wakes nobody (what each MPMC publish paid for a
    // consumer killed while parked, until the settle of such waiters).
    let dead = EventCount::new();
    let mark = AtomicU32::new(0);
    let _dead_waiter = dead.prepare_wait_marked(&mark);
    g.bench_function("dead_waiter", |b| b.iter(|| black_box(&dead).notify()));
    assert!(dead.settle_dead_waiter(&mark), "the dead waiter was marked");
    g.bench_function("dead_waiter_settled", |b| {
        b.iter(|| black_box(&dead).notify())
    });
    let word = AtomicU32::new(0);
    g.bench_function("raw_futex_wake", |b| {
        b.iter(|| futex::wake(black_box(&word), 1))
    });
    g.finish();
}

fn pingpong(c: &mut Criterion) {
    let cores = affinity::recommend_pair()
        .ok()
        .map(|p| (p.producer, p.consumer));
    // Start every child before pinning this thread: a child inherits the affinity mask
    // of the thread that spawns it, and must be free to pin itself to the other core.
    let children: Vec<_> = ["park", "busy_spin"]
        .into_iter()
        .map(|name| (name, PingPong::start(name, cores)))
        .collect();
    if let Some((producer, _)) = cores {
        affinity::pin_current_thread(producer).expect("pin parent");
    }
    let mut g = c.benchmark_group("pingpong");
    g.measurement_time(Duration::from_secs(5));
    for (name, mut pp) in children {
        // Sanity before timing: the child answers.
        pp.round_trips(100);
        g.bench_function(name, |b| b.iter_custom(|n| pp.round_trips(n)));
        // Stops the child before the next one runs on its core.
        drop(pp);
    }
    g.finish();
}

criterion_group!(benches, notify, pingpong);

fn main() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
