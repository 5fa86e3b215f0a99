//! No lost wake-up with the asymmetric fence, across real processes: two processes play
//! ping-pong through a mapped file, each notifying with `EventCount::notify` (a compiler
//! fence once the process registered its membarrier) and each waiting for the other's
//! move with a random mix of polling and parking (`prepare_wait`: a real membarrier).
//!
//! A lost wake-up is a waiter asleep while its condition holds and nobody wakes it: here
//! it sleeps until its deadline (5 s) and then finds the move made, which fails the
//! test. The test also counts how often each side slept and how often the re-check after
//! announcing found the move (the race the fences close), and requires both.
//!
//! `SHM_STRESS_ROUNDS` sets the rounds (default 100,000; each has two waits). The mixed
//! test runs the child with `SHM_MEMBARRIER=off` (real fences) against a light parent.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use shm_sync::atomic::{AtomicU64, Ordering, spin_loop};
use shm_sync::futex::WaitOutcome;
use shm_sync::{CachePadded, EventCount, asymmetric};
use shm_testkit::{Reap, SharedPage, TempPath, wait_child};

const CHILD_ENV: &str = "SHM_STRESS_CHILD";
/// Set for a child that refuses itself `membarrier(2)` with a seccomp filter before its
/// first fence: `offered` when the kernel offers global expedited membarriers (then the
/// child's heavy fence must answer `Unreached`), `absent` otherwise.
const SECCOMP_ENV: &str = "SHM_STRESS_NO_MEMBARRIER";
const ROUNDS_ENV: &str = "SHM_STRESS_ROUNDS";
/// Far longer than any scheduling delay: a waiter still asleep this long after the move
/// was made lost its wake-up.
const LOST: Duration = Duration::from_secs(5);

/// The page both processes map.
#[repr(C)]
struct Page {
    /// The parent's move: the round it started.
    ping: CachePadded<AtomicU64>,
    /// The child's move: the round it answered.
    pong: CachePadded<AtomicU64>,
    /// Notified after each ping; the child waits here.
    ping_event: CachePadded<EventCount>,
    /// Notified after each pong; the parent waits here.
    pong_event: CachePadded<EventCount>,
    /// The child's counts: sleeps, re-checks that found the move, and whether its fences
    /// were light (1) or real (2).
    child_slept: CachePadded<AtomicU64>,
    child_caught: CachePadded<AtomicU64>,
    child_light: CachePadded<AtomicU64>,
}

fn rounds() -> u64 {
    std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// xorshift64*: the random mix of polling and parking, seeded per process.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[derive(Default)]
struct Counts {
    slept: u64,
    caught: u64,
}

/// Waits until `word` reaches `round`: polls a random number of times (none in a quarter
/// of the waits), then parks on `event`. Panics on a lost wake-up.
fn await_move(word: &AtomicU64, event: &EventCount, round: u64, rng: &mut Rng, n: &mut Counts) {
    let r = rng.next();
    let polls = if r & 3 == 0 { 0 } else { (r >> 2) % 256 };
    for _ in 0..polls {
        // Acquire: the other side's move (nothing else is read, but as a real consumer).
        if word.load(Ordering::Acquire) >= round {
            return;
        }
        spin_loop();
    }
    loop {
        let key = event.prepare_wait();
        // Acquire: as above.
        if word.load(Ordering::Acquire) >= round {
            event.cancel_wait();
            n.caught += 1;
            return;
        }
        let deadline = Instant::now() + LOST;
        let outcome = event.wait(key, Some(deadline));
        if outcome == WaitOutcome::Woken {
            n.slept += 1;
        }
        // Acquire: as above.
        let seen = word.load(Ordering::Acquire);
        if seen >= round {
            return;
        }
        assert!(
            outcome != WaitOutcome::TimedOut,
            "no move for {LOST:?} at round {round}: a wake-up was lost, or the other side died or hung (saw {seen})"
        );
    }
}

/// Makes a move, after a random short delay that shifts it against the waiter's
/// announcement.
fn make_move(word: &AtomicU64, event: &EventCount, round: u64, rng: &mut Rng) {
    for _ in 0..rng.next() % 64 {
        spin_loop();
    }
    // Release: the move, then the notification (the protocol's publication).
    word.store(round, Ordering::Release);
    event.notify();
}

#[test]
#[ignore = "child process entry point, started by the tests below"]
fn child() {
    let path = std::env::var(CHILD_ENV).expect("run by the parent test");
    if let Some(kernel) = std::env::var_os(SECCOMP_ENV) {
        refuse_membarrier();
        if kernel == "offered" {
            // Other processes may be registered: a heavy fence that cannot reach them
            // must say so, or its caller sleeps unbounded past a light notifier.
            assert_eq!(asymmetric::heavy(), asymmetric::Heavy::Unreached);
        }
    }
    let mapped = open_page(Path::new(&path));
    let page = mapped.get();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let mut n = Counts::default();
    for round in 1..=rounds() {
        await_move(&page.ping, &page.ping_event, round, &mut rng, &mut n);
        make_move(&page.pong, &page.pong_event, round, &mut rng);
    }
    // Relaxed: read by the parent after this process exited.
    page.child_slept.store(n.slept, Ordering::Relaxed);
    page.child_caught.store(n.caught, Ordering::Relaxed);
    let light = if asymmetric::is_light() { 1 } else { 2 };
    page.child_light.store(light, Ordering::Relaxed);
}

/// Plays `rounds()` rounds against a child started with `env`; returns both sides'
/// counts and whether the child's fences were light.
fn play(tag: &str, env: &[(&str, &str)]) -> (Counts, Counts, bool) {
    let tmp = TempPath::file(tag, 4096);
    let mapped = open_page(tmp.path());
    let page = mapped.get();
    let mut cmd = shm_testkit::child("child");
    cmd.env(CHILD_ENV, tmp.path()).stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Reap(cmd.spawn().unwrap());
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut n = Counts::default();
    let total = rounds();
    for round in 1..=total {
        make_move(&page.ping, &page.ping_event, round, &mut rng);
        await_move(&page.pong, &page.pong_event, round, &mut rng, &mut n);
    }
    wait_child(&mut child.0, Duration::from_secs(30));
    // Relaxed: the child exited; its stores are visible.
    let theirs = Counts {
        slept: page.child_slept.load(Ordering::Relaxed),
        caught: page.child_caught.load(Ordering::Relaxed),
    };
    let child_light = page.child_light.load(Ordering::Relaxed) == 1;
    eprintln!(
        "{tag}: {total} rounds; parent slept {} times, caught {} races; \
         child slept {} times, caught {} races; parent light {}, child light {child_light}",
        n.slept,
        n.caught,
        theirs.slept,
        theirs.caught,
        asymmetric::is_light()
    );
    (n, theirs, child_light)
}

fn membarrier_offered() -> bool {
    rustix::thread::membarrier_query().contains(rustix::thread::MembarrierQuery::GLOBAL_EXPEDITED)
}

#[test]
fn no_lost_wakeup_between_light_processes() {
    let (ours, theirs, child_light) = play("asym-light", &[]);
    // Both sides really parked, and both really caught the move in the re-check after
    // announcing (the window the fences close), or the test exercised nothing.
    for (side, n) in [("parent", &ours), ("child", &theirs)] {
        assert!(n.slept > 0, "the {side} never slept");
        assert!(
            n.caught > 0,
            "the {side} never caught a move in its re-check"
        );
    }
    if membarrier_offered() {
        assert!(asymmetric::is_light(), "the parent did not register");
        assert!(child_light, "the child did not register");
    }
}

#[test]
fn no_lost_wakeup_between_a_light_and_a_symmetric_process() {
    let (ours, theirs, child_light) = play("asym-mixed", &[(asymmetric::ENV, "off")]);
    assert!(!child_light, "the child registered though told not to");
    assert!(ours.slept > 0 && theirs.slept > 0, "a side never slept");
    if membarrier_offered() {
        assert!(asymmetric::is_light(), "the parent did not register");
    }
}

/// A process whose seccomp filter refuses `membarrier(2)` (`EPERM`), as a sandbox may:
/// it cannot register, so its light fences stay real, and its heavy fence reaches no one
/// and says so (`Heavy::Unreached`: it sleeps in short slices, checked in the child
/// before the rounds), though its query of the kernel is refused too. No wake-up may be
/// lost over the rounds.
#[test]
fn no_lost_wakeup_when_a_process_is_refused_membarrier() {
    let kernel = if membarrier_offered() {
        "offered"
    } else {
        "absent"
    };
    let (ours, theirs, child_light) = play("asym-seccomp", &[(SECCOMP_ENV, kernel)]);
    assert!(
        !child_light,
        "the child registered though membarrier is refused to it"
    );
    assert!(ours.slept > 0 && theirs.slept > 0, "a side never slept");
    if membarrier_offered() {
        assert!(asymmetric::is_light(), "the parent did not register");
    }
}

/// Installs a seccomp filter on this process that makes `membarrier(2)` fail with
/// `EPERM` and allows every other call (x86-64 and aarch64 system call numbers; the
/// architecture word is not checked: a test filter, for this process only).
fn refuse_membarrier() {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, EPERM, SECCOMP_RET_ALLOW,
        SECCOMP_RET_ERRNO, sock_filter, sock_fprog,
    };
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        // The system call number: offset 0 of `struct seccomp_data`.
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        sock_filter {
            code: (BPF_JMP | BPF_JEQ | BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_membarrier as u32,
        },
        stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM as u32),
        stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    ];
    let program = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain `prctl` calls; the program points to `filter`, alive for the call
    // (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const sock_fprog
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
    assert!(
        !rustix::thread::membarrier_query()
            .contains(rustix::thread::MembarrierQuery::GLOBAL_EXPEDITED),
        "membarrier still answers"
    );
}

/// The test's page in the file at `path`.
fn open_page(path: &Path) -> SharedPage<Page> {
    // SAFETY: `Page` is atomics only, all-zero is a valid `Page`, and both processes
    // touch the file through them alone.
    unsafe { SharedPage::open(path) }
}
