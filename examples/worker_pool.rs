//! Jobs through an MPMC ring to a pool of worker processes, results back through another.
//!
//! ```sh
//! cargo run --release --example worker_pool            # 3 workers, 200,000 jobs
//! cargo run --release --example worker_pool -- 4 1000000
//! ```
//!
//! The dispatcher creates two MPMC rings, `jobs` and `results`, starts this program
//! again as each worker process, and sends numbered jobs. Each job goes to exactly one
//! worker (whichever claims it first); a worker computes its result and sends it back.
//! When the dispatcher has sent the last job it drops its producer: the workers drain
//! what is left, see the ring disconnected, and exit. At the end the dispatcher checks
//! that every job came back exactly once, with the right result, and prints how the
//! jobs spread over the workers.

use std::process::{Child, Command};
use std::time::Instant;

use shm_transport::ring::{OpenMode, RecvError, mpmc};

/// A job: a number to work on.
#[shm_transport::message(name = "examples::worker_pool::Job/v1")]
#[derive(Clone, Copy, Debug)]
struct Job {
    id: u64,
    input: u64,
}

/// A job's result, and who computed it.
#[shm_transport::message(name = "examples::worker_pool::Done/v1")]
#[derive(Clone, Copy, Debug)]
struct Done {
    id: u64,
    worker: u64,
    output: u64,
}

/// The work: a few rounds of SplitMix64 over the input, so that a job costs something.
fn work(input: u64) -> u64 {
    let mut z = input;
    for _ in 0..16 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return worker(&args[1], args[2].parse()?);
    }
    let workers: u64 = args.first().map_or(Ok(3), |a| a.parse())?;
    let jobs: u64 = args.get(1).map_or(Ok(200_000), |a| a.parse())?;
    dispatcher(workers, jobs)
}

/// The ring names of this run.
fn names(base: &str) -> (String, String) {
    (format!("{base}-jobs"), format!("{base}-results"))
}

/// A worker process: takes jobs until the dispatcher is gone and the ring is empty.
fn worker(base: &str, me: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (jobs, results) = names(base);
    let mut rx = mpmc::Builder::<Job>::new(jobs.as_str())
        .mode(OpenMode::Open)
        .consumer()?;
    let mut tx = mpmc::Builder::<Done>::new(results.as_str())
        .mode(OpenMode::Open)
        .producer()?;
    loop {
        match rx.recv() {
            Ok(job) => tx.send(Done {
                id: job.id,
                worker: me,
                output: work(job.input),
            })?,
            Err(RecvError::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What came back: which jobs, and how many from each worker.
struct Tally {
    seen: Vec<bool>,
    per_worker: Vec<u64>,
    received: u64,
}

impl Tally {
    /// Records one result; refuses a job never sent, one done twice, a wrong result.
    fn take(&mut self, done: Done) -> Result<(), String> {
        let slot = self
            .seen
            .get_mut(done.id as usize)
            .ok_or(format!("a result for job {} that was never sent", done.id))?;
        if std::mem::replace(slot, true) {
            return Err(format!("job {} came back twice", done.id));
        }
        if done.output != work(done.id * 7) {
            return Err(format!("job {} came back with a wrong result", done.id));
        }
        let worker = self
            .per_worker
            .get_mut(done.worker as usize)
            .ok_or(format!("a result from an unknown worker {}", done.worker))?;
        *worker += 1;
        self.received += 1;
        Ok(())
    }
}

fn dispatcher(workers: u64, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let base = format!("worker-pool-{}", std::process::id());
    let (jobs, results) = names(&base);
    // Created here, before any worker opens them; removed at the end.
    let mut tx = mpmc::Builder::<Job>::new(jobs.as_str())
        .capacity(1024)
        .mode(OpenMode::Create)
        .producer()?;
    let mut rx = mpmc::Builder::<Done>::new(results.as_str())
        .capacity(1024)
        .mode(OpenMode::Create)
        .consumer()?;
    let exe = std::env::current_exe()?;
    let mut children: Vec<Child> = (0..workers)
        .map(|w| {
            Command::new(&exe)
                .args(["worker", &base, &w.to_string()])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut tally = Tally {
        seen: vec![false; count as usize],
        per_worker: vec![0; workers as usize],
        received: 0,
    };
    // Send every job, taking results as they come so that neither ring stays full.
    for id in 0..count {
        let mut job = Job { id, input: id * 7 };
        loop {
            match tx.try_send(job) {
                Ok(()) => break,
                Err(e) if matches!(e, shm_transport::ring::TrySendError::Full(_)) => {
                    job = e.into_inner();
                    match rx.try_recv() {
                        Ok(done) => tally.take(done)?,
                        Err(_) => shm_transport::sync::atomic::spin_loop(),
                    }
                }
                Err(e) => return Err(e.to_string().into()),
            }
        }
    }
    drop(tx); // the workers drain the ring, then see it disconnected
    while tally.received < count {
        tally.take(rx.recv()?)?;
    }
    let elapsed = started.elapsed();
    for child in &mut children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
    }
    drop(rx);
    for name in [&jobs, &results] {
        shm_transport::alloc::Segment::remove(&name.as_str().into())?;
    }
    println!("jobs:            {count}, each done once, every result checked");
    for (w, n) in tally.per_worker.iter().enumerate() {
        println!(
            "worker {w}:        {n} jobs ({:.1}%)",
            100.0 * *n as f64 / count as f64
        );
    }
    println!(
        "elapsed:         {:.1?} ({:.0} jobs/s)",
        elapsed,
        count as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
