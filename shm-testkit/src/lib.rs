//! Helpers of the workspace's multi-process tests, written once (dev-only, std only).
//!
//! A test that needs another process starts its own test binary again on one ignored
//! test ([`child`]), tells it its part through environment variables, and keeps it in a
//! [`Reap`] so that no child outlives a failed test. A child that holds something on
//! purpose (a slot, a role, a sample) says so on its standard output ([`say_holding`],
//! read by [`holding`]) and waits to be killed ([`hold_until_killed`]). Segment names
//! ([`ShmName`]) and temporary paths ([`TempPath`]) are unique per process and per call,
//! and removed on drop, so tests run in parallel and leave nothing behind.
//!
//! This crate depends on no other crate of the workspace, so that every crate can use it
//! in its tests; it removes segments with `std::fs`, not through `shm-alloc`.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Where named segments live: `Location::Name(name)` of `shm-alloc` is this directory
/// joined with the name.
pub const SHM_DIR: &str = "/dev/shm";

/// How long a child in [`hold_until_killed`] waits before it gives up: the parent is
/// expected to kill it long before.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(60);

/// The command that runs the current test binary again on the single ignored test
/// `test_name` (its full path inside the binary, e.g. `child` or `spsc_segment::child`):
/// `--exact NAME --ignored --nocapture --test-threads=1`.
///
/// The caller adds the child's environment and standard streams; by default they are
/// inherited.
///
/// # Panics
///
/// If the path of the current executable cannot be read.
#[must_use]
pub fn child(test_name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary's own path"));
    cmd.args([
        "--exact",
        test_name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// `{tag}-{pid}-{n}`, with `n` counting the calls in this process.
fn unique(tag: &str) -> String {
    #[expect(
        clippy::disallowed_types,
        reason = "a counter of test names, outside every loom model; this crate depends on no workspace crate, shm-sync included"
    )]
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Relaxed: a unique number, no ordering needed.
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{}-{n}", std::process::id())
}

/// A segment name unique to this process and call, `shm-test-{tag}-{pid}-{n}`; the file
/// `/dev/shm/<name>` is removed when the guard drops (and, if left by an earlier
/// process of the same pid, when it is made).
///
/// Pass [`as_str`](Self::as_str) to a builder: `Builder::new(name.as_str())`.
#[derive(Debug)]
pub struct ShmName {
    name: String,
}

impl ShmName {
    /// A fresh name for `tag` (a word that says which test made it).
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let name = Self {
            name: unique(&format!("shm-test-{tag}")),
        };
        let _ = std::fs::remove_file(name.path());
        name
    }

    /// A name next to this one, `<name><suffix>` (a segment that a builder makes next
    /// to the one it is given), removed when the guard drops.
    #[must_use]
    pub fn sibling(&self, suffix: &str) -> Self {
        let name = Self {
            name: format!("{}{suffix}", self.name),
        };
        let _ = std::fs::remove_file(name.path());
        name
    }

    /// The name, as segment builders take it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The segment's file: `/dev/shm/<name>`.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        Path::new(SHM_DIR).join(&self.name)
    }
}

impl fmt::Display for ShmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// A path in the temporary directory unique to this process and call,
/// `shm-test-{tag}-{pid}-{n}`, where nothing is yet; whatever the test puts there (a
/// file, a symlink, a FIFO or an empty directory) is removed when the guard drops.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
}

impl TempPath {
    /// A fresh path for `tag` (a word that says which test made it).
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(&format!("shm-test-{tag}")));
        let _ = std::fs::remove_file(&path);
        Self { path }
    }

    /// A fresh path for `tag` holding a new zero-filled file of `len` bytes.
    ///
    /// # Panics
    ///
    /// If the file cannot be made.
    #[must_use]
    pub fn file(tag: &str, len: u64) -> Self {
        let tmp = Self::new(tag);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(tmp.path())
            .expect("a new temporary file");
        file.set_len(len).expect("sizing the temporary file");
        tmp
    }

    /// The path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A `P` laid over the start of a file mapped read-write and shared (see
/// [`map_shared`]): the page several processes of a test share.
#[derive(Debug)]
pub struct SharedPage<P> {
    map: memmap2::MmapMut,
    _page: core::marker::PhantomData<P>,
}

impl<P> SharedPage<P> {
    /// Maps the file at `path` and views its start as a `P`.
    ///
    /// # Safety
    ///
    /// Every byte pattern the test's processes leave in the file (all-zero at first) is
    /// a valid `P`, and they share it only through atomics.
    ///
    /// # Panics
    ///
    /// If the file cannot be mapped, or is shorter than a `P`.
    #[must_use]
    pub unsafe fn open(path: &Path) -> Self {
        let map = map_shared(path);
        assert!(
            map.len() >= size_of::<P>(),
            "the file is shorter than the page"
        );
        assert!(align_of::<P>() <= 4096, "a mapping is only page-aligned");
        Self {
            map,
            _page: core::marker::PhantomData,
        }
    }

    /// The page.
    #[must_use]
    pub fn get(&self) -> &P {
        // SAFETY: the mapping is page-aligned and at least a `P` long (checked in
        // `open`), its bytes are a valid `P` (the contract of `open`), and the reference
        // borrows `self`, so it cannot outlive the mapping.
        unsafe { &*self.map.as_ptr().cast::<P>() }
    }
}

/// Maps the whole file at `path` read-write and shared, as the processes of a test share
/// it.
///
/// # Panics
///
/// If the file cannot be opened or mapped.
#[must_use]
pub fn map_shared(path: &Path) -> memmap2::MmapMut {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("opening the shared file");
    // SAFETY: the file is the test's own temporary file, which nothing truncates while
    // it is mapped; the test accesses what both processes write only through atomics.
    unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mapping the shared file")
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if std::fs::remove_file(&self.path).is_err() {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// A child process, killed and reaped when dropped if it still runs: no child outlives
/// a failed test.
#[derive(Debug)]
pub struct Reap(pub Child);

impl Reap {
    /// Kills the child with `SIGKILL` (no destructor of it runs) and reaps it; returns
    /// its exit status.
    ///
    /// # Panics
    ///
    /// If the child cannot be signalled (it was reaped already) or waited for.
    pub fn kill(&mut self) -> ExitStatus {
        self.0.kill().expect("the child is not reaped yet");
        self.0.wait().expect("waiting for the killed child")
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit successfully within `limit`.
///
/// # Panics
///
/// If the child fails, or still runs after `limit` (it is killed first).
pub fn wait_child(child: &mut Child, limit: Duration) {
    let give_up = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child failed: {status}");
            return;
        }
        if Instant::now() > give_up {
            let _ = child.kill();
            panic!("child still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `poll` about every millisecond until it returns `Some`, and returns that: the
/// deadline form of "wait until something happens".
///
/// # Panics
///
/// If `limit` passes first, with `what` (the thing waited for) in the message; and if
/// `poll` panics.
pub fn wait_for<T>(limit: Duration, what: &str, mut poll: impl FnMut() -> Option<T>) -> T {
    let give_up = Instant::now() + limit;
    loop {
        if let Some(done) = poll() {
            return done;
        }
        assert!(Instant::now() < give_up, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reads the child's `holding <n>` line (after the test harness's own lines), and
/// returns `n`.
///
/// # Panics
///
/// If the child's output ends first, or `n` is not a number.
pub fn holding(stdout: &mut ChildStdout) -> u64 {
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // The harness's `test child ... ` has no line end: the word may follow it.
        if let Some((_, n)) = line.split_once("holding ") {
            return n.trim().parse().unwrap();
        }
    }
    panic!("the child ended without holding anything");
}

/// In a child: tells the parent what this child holds, `holding <n>` on its own line,
/// flushed (the parent waits for it).
///
/// # Panics
///
/// If standard output cannot be written.
pub fn say_holding(n: u64) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "holding {n}").unwrap();
    out.flush().unwrap();
}

/// In a child: sleeps until the parent kills it.
///
/// # Panics
///
/// After [`HOLD_AT_MOST`], in case the parent died or forgot it: the child fails rather
/// than hold for ever.
pub fn hold_until_killed() -> ! {
    std::thread::sleep(HOLD_AT_MOST);
    panic!("not killed within {HOLD_AT_MOST:?}");
}

/// The calling thread's id (its `/proc/<pid>/task/<tid>` name), read from
/// `/proc/thread-self`.
///
/// # Panics
///
/// If `/proc` is not mounted.
#[must_use]
pub fn thread_id() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc is mounted");
    let tid = link
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    tid.parse()
        .expect("/proc/thread-self ends in the thread id")
}

/// Whether thread `tid` of process `pid` sleeps in the kernel's futex wait now (its
/// `wchan` names a futex function): the proof that a waiter really parked, rather than
/// spun or yielded.
///
/// Ask about the one thread that waits: others of the same process may sleep on futexes
/// of their own (the test harness's main thread joins the test thread on one).
#[must_use]
pub fn sleeps_on_futex(pid: u32, tid: u32) -> bool {
    sleeps_in(pid, tid, "futex")
}

/// Whether thread `tid` of process `pid` sleeps in the kernel now in a function whose
/// name contains `what` (its `wchan`): `"futex"` for a futex wait, `"nanosleep"` for
/// `thread::sleep`. The proof that a thread reached a wait, rather than a guess by time.
#[must_use]
pub fn sleeps_in(pid: u32, tid: u32, what: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).is_ok_and(|w| w.contains(what))
}

/// Where a segment's header records its creator's process id: a `u64` at byte 64 (the
/// header layout of `shm_alloc::header`, fixed by its layout version).
pub const CREATOR_PID_AT: u64 = 64;

/// The process id recorded as the creator of segment `name` (under [`SHM_DIR`]), or
/// `None` while there is no such file or its header is not written yet: the proof of
/// which side created a ring that either side may create.
#[must_use]
pub fn segment_creator(name: &str) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(Path::new(SHM_DIR).join(name)).ok()?;
    let mut pid = [0; 8];
    file.read_exact_at(&mut pid, CREATOR_PID_AT).ok()?;
    Some(u64::from_ne_bytes(pid)).filter(|&pid| pid != 0)
}
