//! Segments on real files: create/open round trips, the attach protocol's refusals,
//! permissions, and roles held by this process and by a child process.
//!
//! Every test does file I/O and maps memory, so none runs under Miri.
//!
//! Header offsets poked below (see the `# Layout` table in `shm_alloc::header`): magic 0,
//! layout_version 8, kind 12, state 16, data_len 56.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use shm_alloc::hash::{FNV_OFFSET, fnv1a};
use shm_alloc::{
    Error, Expect, Kind, LAYOUT_VERSION, Location, MAX_ROLES, Segment, SegmentOptions, SegmentSpec,
};
use shm_testkit::{Reap, ShmName, TempPath, hold_until_killed, wait_for};

const OFF_MAGIC: u64 = 0;
const OFF_VERSION: u64 = 8;
const OFF_KIND: u64 = 12;
const OFF_STATE: u64 = 16;
const OFF_DATA_LEN: u64 = 56;

/// Set in the child process of `role_is_released_when_its_holder_process_is_killed`: the
/// segment whose role 0 the child holds.
const CHILD_ENV: &str = "SHM_ALLOC_TEST_ROLE_CHILD_SEGMENT";

/// A temporary path as these tests use it: a segment location, and the text an error
/// shows for it.
trait SegmentPath {
    fn loc(&self) -> Location;
    fn shown(&self) -> String;
}

impl SegmentPath for TempPath {
    fn loc(&self) -> Location {
        Location::from(self.path())
    }

    fn shown(&self) -> String {
        self.path().display().to_string()
    }
}

fn spec() -> SegmentSpec {
    SegmentSpec {
        kind: Kind::Spsc,
        capacity: 64,
        slot_size: 16,
        slot_align: 8,
        type_fingerprint: 0x0123_4567_89ab_cdef,
        type_name: "tests::Msg",
        data_len: 64 * 16,
        entries: 0,
    }
}

fn expect() -> Expect {
    Expect::from(&spec())
}

fn opts() -> SegmentOptions {
    SegmentOptions::default()
}

fn quick() -> SegmentOptions {
    SegmentOptions::default().open_timeout(Duration::from_millis(50))
}

fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

/// The header checksum's offset, and the bytes it covers.
const OFF_CHECKSUM: u64 = 144;

/// Writes the checksum of the header's first 144 bytes as they now are (the state word
/// taken as 0): a header field changed as if its creator had written it, so that the
/// checks after the checksum's can be reached.
fn reseal(path: &Path) {
    let bytes = fs::read(path).unwrap();
    let mut covered = bytes[..OFF_CHECKSUM as usize].to_vec();
    covered[OFF_STATE as usize..OFF_STATE as usize + 4].fill(0);
    let sum = fnv1a(FNV_OFFSET, &covered);
    poke(path, OFF_CHECKSUM, &sum.to_ne_bytes());
}

/// [`poke`], then [`reseal`].
fn poke_sealed(path: &Path, offset: u64, bytes: &[u8]) {
    poke(path, offset, bytes);
    reseal(path);
}

fn created(tmp: &TempPath) -> Segment {
    Segment::create(&tmp.loc(), &spec(), &opts()).unwrap()
}

#[track_caller]
fn assert_names_path(err: &Error, tmp: &TempPath) {
    let text = err.to_string();
    assert!(
        text.contains(&tmp.shown()),
        "{text:?} does not name {}",
        tmp.shown()
    );
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
#[cfg_attr(miri, ignore)]
fn create_then_open_round_trips_every_header_field() {
    let tmp = TempPath::new("round-trip");
    let before = now_ns();
    let creator = created(&tmp);
    let after = now_ns();
    let opener = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap();

    let h = opener.header();
    assert_eq!(h, creator.header());
    assert_eq!(h.kind, Kind::Spsc);
    assert_eq!(h.layout_version, LAYOUT_VERSION);
    assert_eq!(h.capacity, 64);
    assert_eq!(h.slot_size, 16);
    assert_eq!(h.slot_align, 8);
    assert_eq!(h.type_fingerprint, 0x0123_4567_89ab_cdef);
    assert_eq!(h.type_name, "tests::Msg");
    assert_eq!(h.creator_pid, u64::from(std::process::id()));
    assert!((before..=after).contains(&h.created_unix_ns));
    // 1024 bytes asked for, rounded up to whole pages.
    assert!(
        h.data_len >= 1024 && h.data_len % 4096 == 0,
        "{}",
        h.data_len
    );
    assert_eq!(opener.data_len() as u64, h.data_len);
    assert_eq!(opener.path(), tmp.path());

    let file_len = fs::metadata(tmp.path()).unwrap().len();
    assert_eq!(file_len, Segment::HEADER_LEN as u64 + h.data_len);
    let mut magic = [0u8; 8];
    File::open(tmp.path())
        .unwrap()
        .read_exact_at(&mut magic, 0)
        .unwrap();
    assert_eq!(&magic, b"SHMTRNS\0");

    let (a, b) = (creator.data(), opener.data());
    assert_eq!(a.as_ptr() as usize % 4096, 0);
    assert_eq!(b.as_ptr() as usize % 4096, 0);
    let len = creator.data_len();
    // SAFETY: both point to `len` bytes of mapped data region, alive while the segments
    // are; only this thread touches them, and u8 has no invalid values.
    unsafe {
        let a = core::slice::from_raw_parts_mut(a.as_ptr(), len);
        assert!(
            a.iter().all(|&x| x == 0),
            "data region not zero after create"
        );
        for (i, x) in a.iter_mut().enumerate() {
            *x = i as u8 ^ 0x5a;
        }
        let b = core::slice::from_raw_parts(b.as_ptr(), len);
        assert!(b.iter().enumerate().all(|(i, &x)| x == i as u8 ^ 0x5a));
    }
    assert!(format!("{creator:?}").contains("Segment"));
}

#[test]
#[cfg_attr(miri, ignore)]
fn data_len_is_rounded_to_whole_pages() {
    for (asked, at_least) in [(0u64, 0u64), (1, 4096), (4096, 4096), (4097, 8192)] {
        let tmp = TempPath::new(&format!("round-{asked}"));
        let spec = SegmentSpec {
            data_len: asked,
            entries: 0,
            ..spec()
        };
        let seg = Segment::create(&tmp.loc(), &spec, &opts()).unwrap();
        let got = seg.header().data_len;
        assert!(
            got >= at_least && got % 4096 == 0 && got < at_least + 65536,
            "{asked}: {got}"
        );
        if asked == 0 {
            assert_eq!(got, 0, "no data asked for, on 4 KiB pages");
        }
        let file_len = fs::metadata(tmp.path()).unwrap().len();
        assert_eq!(file_len, 4096 + got);
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn open_or_create_race_has_one_creator_and_one_shared_region() {
    for round in 0..20 {
        let tmp = TempPath::new(&format!("race-{round}"));
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (loc, barrier) = (tmp.loc(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    Segment::open_or_create(&loc, &spec(), &opts()).unwrap()
                })
            })
            .collect();
        let mut segs: Vec<(Segment, bool)> =
            racers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            segs.iter().filter(|(_, created)| *created).count(),
            1,
            "round {round}: exactly one racer creates"
        );
        let (b, _) = segs.pop().unwrap();
        let (a, _) = segs.pop().unwrap();
        assert_eq!(a.header(), b.header());
        let value = 0xfeed_0000_0000_0000u64 + round;
        // SAFETY: the data region is at least 8 bytes and page-aligned, so 8-aligned; the
        // two threads that used these segments have ended, so these accesses are ordered.
        unsafe {
            a.data().cast::<u64>().as_ptr().write(value);
            assert_eq!(b.data().cast::<u64>().as_ptr().read(), value);
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn open_or_create_opens_an_existing_segment() {
    let tmp = TempPath::new("ooc-existing");
    let (_first, created) = Segment::open_or_create(&tmp.loc(), &spec(), &opts()).unwrap();
    assert!(created);
    let (_second, created) = Segment::open_or_create(&tmp.loc(), &spec(), &opts()).unwrap();
    assert!(!created);
    let other = SegmentSpec {
        capacity: 128,
        ..spec()
    };
    let err = Segment::open_or_create(&tmp.loc(), &other, &opts()).unwrap_err();
    assert!(
        matches!(&err, Error::Mismatch { field: "capacity", expected, found, .. }
            if expected == "128" && found == "64"),
        "{err}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn mode_is_exact_whatever_the_umask() {
    use rustix::fs::Mode;
    // The umask is process-wide; other tests creating files meanwhile only get other
    // modes on their own scratch files, which they do not check.
    let saved = rustix::process::umask(Mode::empty());
    let lax = TempPath::new("mode-lax");
    let lax_seg = Segment::create(&lax.loc(), &spec(), &opts());
    let custom = TempPath::new("mode-custom");
    let custom_seg = Segment::create(&custom.loc(), &spec(), &opts().mode(0o640));
    rustix::process::umask(Mode::from_raw_mode(0o077));
    let strict = TempPath::new("mode-strict");
    let strict_seg = Segment::create(&strict.loc(), &spec(), &opts().mode(0o644));
    rustix::process::umask(saved);

    let (_a, _b, _c) = (lax_seg.unwrap(), custom_seg.unwrap(), strict_seg.unwrap());
    let mode = |t: &TempPath| fs::metadata(t.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&lax), 0o600, "default mode under umask 000");
    assert_eq!(mode(&custom), 0o640, "0640 under umask 000");
    assert_eq!(mode(&strict), 0o644, "0644 under umask 077");
    assert_eq!(
        fs::metadata(lax.path()).unwrap().uid(),
        rustix::process::geteuid().as_raw()
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn create_over_an_existing_file_is_already_exists() {
    let tmp = TempPath::new("exists");
    fs::write(tmp.path(), b"precious").unwrap();
    let err = Segment::create(&tmp.loc(), &spec(), &opts()).unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { path } if path == tmp.path()),
        "{err}"
    );
    assert_names_path(&err, &tmp);
    assert_eq!(
        fs::read(tmp.path()).unwrap(),
        b"precious",
        "existing file untouched"
    );

    let again = TempPath::new("exists-again");
    let _first = created(&again);
    assert!(matches!(
        Segment::create(&again.loc(), &spec(), &opts()),
        Err(Error::AlreadyExists { .. })
    ));
}

#[test]
#[cfg_attr(miri, ignore)]
fn create_refuses_a_symlink_at_the_path() {
    let target = TempPath::new("create-link-target");
    let link = TempPath::new("create-link");
    std::os::unix::fs::symlink(target.path(), link.path()).unwrap();
    let err = Segment::create(&link.loc(), &spec(), &opts()).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(!target.path().exists(), "nothing created through the link");
}

#[test]
#[cfg_attr(miri, ignore)]
fn open_of_a_missing_file_is_not_found() {
    let tmp = TempPath::new("missing");
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { path } if path == tmp.path()),
        "{err}"
    );
    assert_names_path(&err, &tmp);
}

#[test]
#[cfg_attr(miri, ignore)]
fn remove_then_open_is_not_found() {
    let tmp = TempPath::new("remove");
    let seg = created(&tmp);
    Segment::remove(&tmp.loc()).unwrap();
    assert!(matches!(
        Segment::open(&tmp.loc(), &expect(), &opts()),
        Err(Error::NotFound { .. })
    ));
    let err = Segment::remove(&tmp.loc()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_names_path(&err, &tmp);
    // The mapping outlives the name.
    // SAFETY: the data region is at least one byte, mapped while `seg` lives.
    unsafe { seg.data().as_ptr().write(1) };
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_file_shorter_than_the_header_page_is_truncated() {
    let tmp = TempPath::new("short");
    // A segment cut short: it starts with the magic.
    let mut bytes = [0u8; 100];
    bytes[..8].copy_from_slice(b"SHMTRNS\0");
    fs::write(tmp.path(), bytes).unwrap();
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Truncated {
                expected: 4096,
                found: 100,
                ..
            }
        ),
        "{err}"
    );
    assert_names_path(&err, &tmp);
}

/// A file shorter than a header that does not start with the magic (zeros, text) is not
/// a segment: said so, not "truncated".
#[test]
#[cfg_attr(miri, ignore)]
fn a_short_file_without_the_magic_is_not_a_segment() {
    for bytes in [&[0u8; 100][..], b"hello", b"SHMX"] {
        let tmp = TempPath::new("short-foreign");
        fs::write(tmp.path(), bytes).unwrap();
        let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
        assert!(matches!(err, Error::BadMagic { .. }), "{err}");
        assert_names_path(&err, &tmp);
    }
    // A short file that starts like the magic is a segment cut short.
    let tmp = TempPath::new("short-prefix");
    fs::write(tmp.path(), b"SHMTR").unwrap();
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(matches!(err, Error::Truncated { found: 5, .. }), "{err}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_file_shorter_than_its_header_says_is_truncated() {
    let tmp = TempPath::new("short-data");
    let data_len = created(&tmp).header().data_len;
    OpenOptions::new()
        .write(true)
        .open(tmp.path())
        .unwrap()
        .set_len(4096)
        .unwrap();
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    match err {
        Error::Truncated {
            expected, found, ..
        } => {
            assert_eq!((expected, found), (4096 + data_len, 4096));
        }
        other => panic!("{other}"),
    }

    let tmp = TempPath::new("long-data-len");
    let data_len = created(&tmp).header().data_len;
    poke_sealed(tmp.path(), OFF_DATA_LEN, &(data_len + 4096).to_ne_bytes());
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    match err {
        Error::Truncated {
            expected, found, ..
        } => {
            assert_eq!((expected, found), (8192 + data_len, 4096 + data_len));
        }
        other => panic!("{other}"),
    }
    poke_sealed(tmp.path(), OFF_DATA_LEN, &12345u64.to_ne_bytes());
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupted { what, .. } if what.contains("data_len")),
        "{err}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn an_empty_file_never_sized_is_not_initialized() {
    let tmp = TempPath::new("empty");
    File::create(tmp.path()).unwrap();
    let start = Instant::now();
    let err = Segment::open(&tmp.loc(), &expect(), &quick()).unwrap_err();
    assert!(matches!(err, Error::NotInitialized { .. }), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(50));
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_header_never_published_is_not_initialized_after_the_timeout() {
    let tmp = TempPath::new("never-ready");
    drop(created(&tmp));
    poke(tmp.path(), OFF_STATE, &0u32.to_ne_bytes());
    let start = Instant::now();
    let err = Segment::open(&tmp.loc(), &expect(), &quick()).unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        Error::NotInitialized { waited, .. } => {
            assert!(*waited >= Duration::from_millis(50), "{waited:?}");
        }
        other => panic!("{other}"),
    }
    assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(900),
        "waited {elapsed:?}, not about 50 ms"
    );
    assert_names_path(&err, &tmp);
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_late_creator_is_waited_for() {
    let tmp = TempPath::new("late");
    drop(created(&tmp));
    poke(tmp.path(), OFF_STATE, &0u32.to_ne_bytes());
    // The opener runs in a thread of its own; the creator publishes only once that
    // thread is seen sleeping between two looks at the state word: the open did wait.
    let loc = tmp.loc();
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let opener = std::thread::spawn(move || {
        tid_tx.send(shm_testkit::thread_id()).unwrap();
        Segment::open(&loc, &expect(), &opts())
    });
    let tid = tid.recv().unwrap();
    wait_for(Duration::from_secs(10), "the opener, waiting", || {
        shm_testkit::sleeps_in(std::process::id(), tid, "nanosleep").then_some(())
    });
    poke(tmp.path(), OFF_STATE, b"RDY!");
    let seg = opener.join().unwrap().unwrap();
    assert_eq!(seg.header().capacity, 64);
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_garbage_state_word_is_corrupted() {
    let tmp = TempPath::new("bad-state");
    drop(created(&tmp));
    poke(tmp.path(), OFF_STATE, &7u32.to_ne_bytes());
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupted { what, .. } if what.contains("state")),
        "{err}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn wrong_magic_is_bad_magic() {
    let tmp = TempPath::new("magic");
    drop(created(&tmp));
    poke(tmp.path(), OFF_MAGIC, b"NOTASEG!");
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(err, Error::BadMagic { found, .. } if &found == b"NOTASEG!"),
        "{err}"
    );
    assert_names_path(&err, &tmp);
    assert!(err.to_string().contains("SHMTRNS"), "{err}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_newer_layout_version_is_too_new() {
    let tmp = TempPath::new("version");
    drop(created(&tmp));
    poke(tmp.path(), OFF_VERSION, &(LAYOUT_VERSION + 1).to_ne_bytes());
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(err, Error::VersionTooNew { found, supported, .. }
            if found == LAYOUT_VERSION + 1 && supported == LAYOUT_VERSION),
        "{err}"
    );
    poke(tmp.path(), OFF_VERSION, &0u32.to_ne_bytes());
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(err, Error::VersionMismatch { found: 0, .. }),
        "{err}"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn each_field_mismatch_is_named() {
    let tmp = TempPath::new("mismatch");
    let _seg = created(&tmp);
    let open = |e: Expect| Segment::open(&tmp.loc(), &e, &opts()).unwrap_err();
    let field_of = |err: &Error| match err {
        Error::Mismatch { field, .. } => *field,
        other => panic!("expected a mismatch, got {other}"),
    };

    let err = open(Expect {
        type_fingerprint: 0xbad,
        type_name: "tests::Other",
        ..expect()
    });
    assert_eq!(field_of(&err), "type_fingerprint");
    let text = err.to_string();
    assert!(
        text.contains("tests::Other") && text.contains("tests::Msg"),
        "{text}"
    );
    assert_names_path(&err, &tmp);

    let err = open(Expect {
        slot_size: 32,
        ..expect()
    });
    assert_eq!(field_of(&err), "slot_size");
    assert!(err.to_string().contains("32 bytes"), "{err}");

    let err = open(Expect {
        slot_align: 16,
        ..expect()
    });
    assert_eq!(field_of(&err), "slot_align");

    let err = open(Expect {
        kind: Kind::Mpmc,
        ..expect()
    });
    assert_eq!(field_of(&err), "kind");
    match &err {
        Error::Mismatch {
            expected, found, ..
        } => assert_eq!((expected.as_str(), found.as_str()), ("mpmc", "spsc")),
        _ => unreachable!(),
    }

    let err = open(Expect {
        capacity: Some(65),
        ..expect()
    });
    assert_eq!(field_of(&err), "capacity");

    // Any capacity accepted.
    Segment::open(
        &tmp.loc(),
        &Expect {
            capacity: None,
            ..expect()
        },
        &opts(),
    )
    .unwrap();

    // An unknown kind number in the file.
    poke_sealed(tmp.path(), OFF_KIND, &99u32.to_ne_bytes());
    let err = open(expect());
    assert!(err.to_string().contains("unknown kind 99"), "{err}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_symlink_is_refused() {
    let target = TempPath::new("link-target");
    let _seg = created(&target);
    let link = TempPath::new("link");
    std::os::unix::fs::symlink(target.path(), link.path()).unwrap();
    let err = Segment::open(&link.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(&err, Error::Symlink { path } if path == link.path()),
        "{err}"
    );
    assert_names_path(&err, &link);
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_directory_is_not_a_regular_file() {
    let tmp = TempPath::new("dir");
    fs::create_dir(tmp.path()).unwrap();
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotARegularFile {
                file_type: "directory",
                ..
            }
        ),
        "{err}"
    );
    assert_names_path(&err, &tmp);
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_fifo_is_not_a_regular_file() {
    let tmp = TempPath::new("fifo");
    let c_path = std::ffi::CString::new(tmp.shown()).unwrap();
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotARegularFile {
                file_type: "FIFO",
                ..
            }
        ),
        "{err}"
    );
    assert_names_path(&err, &tmp);
}

/// A socket, a character device and a directory are refused as what they are, by
/// `open` and by `create` alike, and nothing is created in their place.
#[test]
#[cfg_attr(miri, ignore)]
fn sockets_devices_and_directories_are_not_regular_files() {
    let socket = TempPath::new("socket");
    let _listener = std::os::unix::net::UnixListener::bind(socket.path()).unwrap();
    let dir = TempPath::new("dir");
    std::fs::create_dir(dir.path()).unwrap();
    let cases = [
        (Location::from(socket.path()), "socket"),
        (Location::from(Path::new("/dev/null")), "character device"),
        (Location::from(dir.path()), "directory"),
    ];
    for (loc, what) in cases {
        let err = Segment::open(&loc, &expect(), &opts()).unwrap_err();
        assert!(
            matches!(err, Error::NotARegularFile { file_type, .. } if file_type == what),
            "open {what}: {err}"
        );
        let err = Segment::open_or_create(&loc, &spec(), &opts()).unwrap_err();
        assert!(
            matches!(err, Error::NotARegularFile { file_type, .. } if file_type == what),
            "open_or_create {what}: {err}"
        );
    }
    assert!(
        std::fs::metadata(dir.path()).unwrap().is_dir(),
        "left as it was"
    );
    std::fs::remove_dir(dir.path()).unwrap();
}

/// Set to skip the tests that need root, when not run as root.
const WITHOUT_ROOT: &str = "SHM_TESTS_WITHOUT_ROOT";

#[test]
#[cfg_attr(miri, ignore)]
fn a_file_of_another_owner_is_refused_unless_allowed() {
    // Giving a file another owner needs root. Without root the test fails rather than
    // pass unseen, unless skipping it is asked for by name.
    if rustix::process::geteuid().as_raw() != 0 {
        assert!(
            std::env::var_os(WITHOUT_ROOT).is_some(),
            "this test gives a file another owner, which needs root; set {WITHOUT_ROOT}=1 to skip it"
        );
        eprintln!("skipped ({WITHOUT_ROOT} is set): changing a file's owner needs root");
        return;
    }
    let tmp = TempPath::new("foreign");
    drop(created(&tmp));
    std::os::unix::fs::chown(tmp.path(), Some(65534), None).unwrap();
    let err = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ForeignOwner {
                owner: 65534,
                expected: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_names_path(&err, &tmp);
    Segment::open(&tmp.loc(), &expect(), &opts().allow_foreign_owner(true)).unwrap();
}

#[test]
#[cfg_attr(miri, ignore)]
fn huge_pages_off_hugetlbfs_are_unavailable_and_leave_no_file() {
    let name = ShmName::new("huge");
    let loc = Location::from(name.as_str());
    assert_eq!(loc.path(), Path::new("/dev/shm").join(name.as_str()));
    let err = Segment::create(&loc, &spec(), &opts().huge_pages(true)).unwrap_err();
    match &err {
        Error::HugePagesUnavailable { path, reason } => {
            assert_eq!(path, &loc.path());
            assert!(reason.contains("hugetlbfs"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(
        !loc.path().exists(),
        "the failed create left its file behind"
    );

    // Opening an existing tmpfs segment with huge pages required fails the same way.
    let _seg = Segment::create(&loc, &spec(), &opts()).unwrap();
    let err = Segment::open(&loc, &expect(), &opts().huge_pages(true)).unwrap_err();
    assert!(matches!(err, Error::HugePagesUnavailable { .. }), "{err}");
    Segment::remove(&loc).unwrap();
}

#[test]
#[cfg_attr(miri, ignore)]
fn names_live_under_dev_shm() {
    let name = ShmName::new("named");
    let loc = Location::from(name.as_str());
    let seg = Segment::create(&loc, &spec(), &opts()).unwrap();
    assert_eq!(seg.path(), Path::new("/dev/shm").join(name.as_str()));
    assert!(Path::new("/dev/shm").join(name.as_str()).exists());
    Segment::open(&loc, &expect(), &opts()).unwrap();
    Segment::remove(&loc).unwrap();

    for bad in ["", "..", "a/b"] {
        let loc = Location::from(bad);
        assert!(matches!(
            Segment::create(&loc, &spec(), &opts()),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            Segment::open(&loc, &expect(), &opts()),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            Segment::remove(&loc),
            Err(Error::InvalidName { .. })
        ));
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn an_impossible_data_len_is_an_invalid_spec_and_leaves_no_file() {
    let tmp = TempPath::new("huge-spec");
    let spec = SegmentSpec {
        data_len: u64::MAX - 10,
        entries: 0,
        ..spec()
    };
    let err = Segment::create(&tmp.loc(), &spec, &opts()).unwrap_err();
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err}");
    assert_names_path(&err, &tmp);
    assert!(!tmp.path().exists());
}

#[test]
#[cfg_attr(miri, ignore)]
fn prefault_and_mlock_map_and_lock() {
    let tmp = TempPath::new("mlock");
    let spec = SegmentSpec {
        data_len: 16 * 1024,
        entries: 0,
        ..spec()
    };
    // Without either option, the data pages are not mapped in this process until
    // touched, and nothing is locked.
    let plain = TempPath::new("plain");
    let lazy = Segment::create(&plain.loc(), &spec, &opts()).unwrap();
    let size = mapping_kib(&lazy, "Size:");
    assert!(size >= 16, "the mapping covers the data: {size} KiB");
    assert!(mapping_kib(&lazy, "Rss:") < size, "mapped before any touch");
    assert_eq!(mapping_kib(&lazy, "Locked:"), 0);

    let opts = opts().prefault(true).mlock(true);
    let seg = Segment::create(&tmp.loc(), &spec, &opts).unwrap();
    let opener = Segment::open(&tmp.loc(), &Expect::from(&spec), &opts).unwrap();
    let size = mapping_kib(&seg, "Size:");
    for mapped in [&seg, &opener] {
        assert_eq!(
            mapping_kib(mapped, "Rss:"),
            size,
            "prefaulted: every page mapped"
        );
    }
    // `Locked:` is a proportional share: the two mappings of the same pages, both
    // locked, add up to the whole.
    assert_eq!(
        mapping_kib(&seg, "Locked:") + mapping_kib(&opener, "Locked:"),
        size,
        "locked: every page"
    );
    // SAFETY: the region is at least 16 KiB; only this thread touches it.
    unsafe {
        seg.data().as_ptr().add(16 * 1024 - 1).write(9);
        assert_eq!(opener.data().as_ptr().add(16 * 1024 - 1).read(), 9);
    }
}

/// A field (`Size:`, `Rss:`, `Locked:`) of the mapping that holds the segment's data
/// region, in KiB, from `/proc/self/smaps`.
fn mapping_kib(seg: &Segment, field: &str) -> u64 {
    let at = seg.data().as_ptr() as usize;
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((start, end)) = range.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            inside = (start..end).contains(&at);
        } else if inside && let Some(kib) = line.strip_prefix(field) {
            return kib.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    panic!("no {field} for the segment's mapping in /proc/self/smaps");
}

/// A segment's role locks are the participant table's locks: `is_locked` says whether
/// a role is held (by any handle, any process), `try_lock` takes a free one and answers
/// `None` for a held one, and dropping the guard frees it.
#[test]
#[cfg_attr(miri, ignore)]
fn a_segments_role_locks_serve_as_the_tables_locks() {
    use shm_alloc::participants::Locks;
    let tmp = TempPath::new("table-locks");
    let seg = created(&tmp);
    let other = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap();
    let held = seg.claim_role(0).unwrap();
    assert!(Locks::is_locked(&other, 0));
    assert!(!Locks::is_locked(&other, 1));
    assert!(Locks::try_lock(&other, 0).unwrap().is_none());
    let taken = Locks::try_lock(&other, 1).unwrap().expect("role 1 is free");
    assert!(Locks::is_locked(&seg, 1));
    drop((held, taken));
    assert!(!Locks::is_locked(&other, 0));
    assert!(!Locks::is_locked(&seg, 1));
}

#[test]
#[cfg_attr(miri, ignore)]
fn roles_conflict_within_one_process_and_drop_releases() {
    let tmp = TempPath::new("roles");
    let seg = created(&tmp);
    let other = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap();

    let zero = seg.claim_role(0).unwrap();
    assert_eq!(zero.role(), 0);
    assert_eq!(zero.path(), tmp.path());
    let err = seg.claim_role(0).unwrap_err();
    assert!(matches!(err, Error::RoleTaken { role: 0, .. }), "{err}");
    assert_names_path(&err, &tmp);
    assert!(matches!(
        other.claim_role(0),
        Err(Error::RoleTaken { role: 0, .. })
    ));

    let one = other.claim_role(1).unwrap();
    let last = seg.claim_role(MAX_ROLES - 1).unwrap();
    assert!(matches!(
        seg.claim_role(MAX_ROLES),
        Err(Error::InvalidRole { role }) if role == MAX_ROLES
    ));
    assert!(matches!(
        seg.role_alive(MAX_ROLES),
        Err(Error::InvalidRole { .. })
    ));

    drop(zero);
    let zero_again = seg.claim_role(0).unwrap();
    assert!(format!("{zero_again:?}").contains("RoleClaim"));
    drop((one, last));
    other.claim_role(1).unwrap();
}

#[test]
#[cfg_attr(miri, ignore)]
fn role_alive_while_held_and_not_after_drop() {
    let tmp = TempPath::new("alive");
    let seg = created(&tmp);
    let other = Segment::open(&tmp.loc(), &expect(), &opts()).unwrap();
    assert!(!seg.role_alive(3).unwrap());
    let claim = seg.claim_role(3).unwrap();
    assert!(
        seg.role_alive(3).unwrap(),
        "seen through the claiming segment"
    );
    assert!(other.role_alive(3).unwrap(), "seen through another segment");
    assert!(!seg.role_alive(2).unwrap() && !seg.role_alive(4).unwrap());
    drop(claim);
    assert!(!seg.role_alive(3).unwrap());
    assert!(!other.role_alive(3).unwrap());
}

#[test]
#[cfg_attr(miri, ignore)]
fn role_is_released_when_its_holder_process_is_killed() {
    let tmp = TempPath::new("cross-process");
    let seg = created(&tmp);
    let mut child = Reap(
        shm_testkit::child("child_holds_role_zero")
            .env(CHILD_ENV, tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    wait_for(
        Duration::from_secs(20),
        "role 0, claimed by the child",
        || {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("the child exited ({status}) without holding role 0");
            }
            seg.role_alive(0).unwrap().then_some(())
        },
    );
    assert!(matches!(
        seg.claim_role(0),
        Err(Error::RoleTaken { role: 0, .. })
    ));
    assert!(!seg.role_alive(1).unwrap());

    let status = child.kill(); // SIGKILL: no destructor runs in the child.
    assert!(!status.success());

    assert!(
        !seg.role_alive(0).unwrap(),
        "the kernel released the dead holder's lock"
    );
    let claim = seg.claim_role(0).unwrap();
    assert!(seg.role_alive(0).unwrap());
    drop(claim);
}

/// The child of `role_is_released_when_its_holder_process_is_killed`: opens the segment
/// named by `CHILD_ENV`, claims role 0, and sleeps until killed (at most a minute, in case
/// the parent died). Does nothing when run without the variable.
#[test]
#[ignore = "run as a child process by role_is_released_when_its_holder_process_is_killed"]
fn child_holds_role_zero() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let seg = Segment::open(&Location::Path(path.into()), &expect(), &opts()).unwrap();
    let _claim = seg.claim_role(0).unwrap();
    hold_until_killed();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    /// Damaged headers (random bytes overwritten, mostly among the fields) and files cut
    /// to random lengths open to `Ok` or to a typed validation error naming the path:
    /// never a panic, never an out-of-bounds read (which would be a SIGBUS).
    #[test]
    #[cfg_attr(miri, ignore)]
    fn open_never_panics_on_a_damaged_file(
        writes in proptest::collection::vec((prop_oneof![0..144u64, 0..4096u64], any::<u8>()), 0..12),
        cut in proptest::option::weighted(0.25, 0..12_288u64),
        sealed in any::<bool>(),
    ) {
        let tmp = TempPath::new("fuzz");
        drop(created(&tmp));
        for (offset, byte) in &writes {
            poke(tmp.path(), *offset, &[*byte]);
        }
        if sealed {
            // As if the creator had written these fields: the checks after the checksum.
            reseal(tmp.path());
        }
        if let Some(len) = cut {
            OpenOptions::new().write(true).open(tmp.path()).unwrap().set_len(len).unwrap();
        }
        let file_len = fs::metadata(tmp.path()).unwrap().len();
        let opts = SegmentOptions::default().open_timeout(Duration::ZERO);
        match Segment::open(&tmp.loc(), &expect(), &opts) {
            Ok(seg) => {
                prop_assert_eq!(4096 + seg.data_len() as u64, file_len);
                if let Some(last) = seg.data_len().checked_sub(1) {
                    // SAFETY: the data region is `data_len` bytes, validated against the
                    // file size; reading its last byte would raise SIGBUS if it were not.
                    let byte = unsafe { seg.data().as_ptr().add(last).read() };
                    prop_assert_eq!(byte, 0);
                }
            }
            Err(err) => {
                prop_assert!(
                    matches!(
                        err,
                        Error::BadMagic { .. }
                            | Error::VersionTooNew { .. }
                            | Error::VersionMismatch { .. }
                            | Error::Corrupted { .. }
                            | Error::Mismatch { .. }
                            | Error::Truncated { .. }
                            | Error::NotInitialized { .. }
                    ),
                    "unexpected error kind: {}",
                    err
                );
                prop_assert!(err.to_string().contains(&tmp.shown()), "{}", err);
            }
        }
    }
}

/// `protect_read_only` protects the whole pages inside the range and nothing else: a
/// range shorter than a page protects nothing, two pages in the middle of the region
/// are protected (and still read) while the pages around them stay writable, and a
/// range past the end is `InvalidSpec`.
#[test]
fn protect_read_only_takes_whole_pages_inside_the_data_region() {
    let tmp = TempPath::new("protect");
    let spec = SegmentSpec {
        data_len: 16384,
        ..spec()
    };
    let segment = Segment::create(&tmp.loc(), &spec, &opts()).unwrap();
    assert_eq!(segment.data_len(), 16384);
    assert_eq!(segment.protect_read_only(0, 100).unwrap(), 0);
    assert_eq!(
        segment.protect_read_only(100, 4096).unwrap(),
        0,
        "no whole page inside"
    );
    assert!(matches!(
        segment.protect_read_only(4096, 12289),
        Err(Error::InvalidSpec { .. })
    ));
    assert_eq!(segment.protect_read_only(4000, 8300).unwrap(), 8192);
    // The file's mappings in this process, as (mode, length in bytes).
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let path = tmp.path().to_str().unwrap();
    let mappings: Vec<(String, u64)> = maps
        .lines()
        .filter(|l| l.ends_with(path))
        .map(|l| {
            let mut words = l.split_whitespace();
            let (from, to) = words.next().unwrap().split_once('-').unwrap();
            let len = u64::from_str_radix(to, 16).unwrap() - u64::from_str_radix(from, 16).unwrap();
            (words.next().unwrap().to_string(), len)
        })
        .collect();
    let expected = [("rw-s", 8192), ("r--s", 8192), ("rw-s", 4096)];
    let expected: Vec<(String, u64)> = expected.iter().map(|&(m, l)| (m.to_string(), l)).collect();
    assert_eq!(
        mappings, expected,
        "the header and the first data page writable, the next two read-only, the last writable"
    );
    // SAFETY: inside the data region; a read-only page still reads.
    let first = unsafe { segment.data().as_ptr().add(4096).read_volatile() };
    assert_eq!(first, 0);
}

/// Role `r` locks byte `2048 + r` of the file and no other, as the header layout says
/// and as every process that probes it relies on: seen from outside by
/// `fcntl(F_OFD_GETLK)` through a file description of its own, which shares nothing
/// with the holder's formula.
#[test]
#[cfg_attr(miri, ignore)]
fn a_role_locks_its_own_byte_of_the_header_seen_from_outside() {
    use std::os::fd::AsRawFd;
    let tmp = TempPath::new("role-byte");
    let seg = created(&tmp);
    let held = seg.claim_role(5).unwrap();
    assert_eq!(held.role(), 5);
    let outside = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path())
        .unwrap();
    let locked = |byte: i64| {
        // SAFETY: `flock` is plain data; all-zero is a valid value, filled in below.
        let mut probe: libc::flock = unsafe { std::mem::zeroed() };
        probe.l_type = libc::F_WRLCK as libc::c_short;
        probe.l_whence = libc::SEEK_SET as libc::c_short;
        probe.l_start = byte;
        probe.l_len = 1;
        // SAFETY: a valid open file descriptor and a valid `flock` for the call to fill.
        let rc = unsafe { libc::fcntl(outside.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        probe.l_type != libc::F_UNLCK as libc::c_short
    };
    assert!(locked(2048 + 5), "the role's byte");
    assert!(!locked(2048 + 4) && !locked(2048 + 6), "its neighbours");
    assert!(
        !locked(5) && !locked(2048 - 5),
        "bytes the formula's mistakes would lock"
    );
    drop(held);
    assert!(!locked(2048 + 5), "released with the claim");
}

/// `remove` reports a missing file as `NotFound`, and any other failure (a directory at
/// the path) as the I/O error it is.
#[test]
#[cfg_attr(miri, ignore)]
fn remove_tells_a_missing_file_from_one_it_cannot_unlink() {
    let dir = std::env::temp_dir().join(format!("shm-remove-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = Segment::remove(&Location::from(dir.clone())).unwrap_err();
    assert!(
        matches!(&err, Error::Io { op: "unlink", path, .. } if *path == dir),
        "{err:?}"
    );
    std::fs::remove_dir(&dir).unwrap();
    assert!(matches!(
        Segment::remove(&Location::from(dir)),
        Err(Error::NotFound { .. })
    ));
}

/// A create that fails for a reason other than an existing file (its directory is
/// missing) says so, not `AlreadyExists`.
#[test]
#[cfg_attr(miri, ignore)]
fn a_create_in_a_missing_directory_is_not_already_exists() {
    let path = std::env::temp_dir()
        .join(format!("shm-no-such-dir-{}", std::process::id()))
        .join("seg");
    let err = Segment::create(&Location::from(path.clone()), &spec(), &opts()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { op: "create", path: p, source } if *p == path
            && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

/// Where the child of `a_failed_mlock_is_mlock_failed_with_the_length_and_the_limit`
/// creates its segment.
const MLOCK_CHILD_ENV: &str = "SHM_ALLOC_TEST_MLOCK_CHILD_SEGMENT";

/// A segment that cannot be locked in memory is `MlockFailed`, naming the length and
/// the process's limit, and leaves no file. A child process lowers its
/// `RLIMIT_MEMLOCK` to one page and, when it runs as root (whom no limit binds), first
/// gives up root for the `nobody` user, then creates a 1 MiB segment with `mlock`.
#[test]
#[cfg_attr(miri, ignore)]
fn a_failed_mlock_is_mlock_failed_with_the_length_and_the_limit() {
    let path = std::path::PathBuf::from(format!(
        "/dev/shm/shm-test-mlock-fails-{}",
        std::process::id()
    ));
    let out = shm_testkit::child("mlock_fails_in_a_child")
        .env(MLOCK_CHILD_ENV, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("mlock failed as expected"), "{stdout}");
    assert!(!path.exists(), "a failed create leaves no file");
}

/// The child of `a_failed_mlock_is_mlock_failed_with_the_length_and_the_limit`.
#[test]
#[ignore = "run as a child process by a_failed_mlock_is_mlock_failed_with_the_length_and_the_limit"]
fn mlock_fails_in_a_child() {
    let Some(path) = std::env::var_os(MLOCK_CHILD_ENV) else {
        return;
    };
    let page = libc::rlimit {
        rlim_cur: 4096,
        rlim_max: 4096,
    };
    // SAFETY: a valid `rlimit` for the call to read.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &page) }, 0);
    // SAFETY: plain system calls without pointers; the group first, while still root.
    unsafe {
        if libc::geteuid() == 0 {
            assert_eq!(
                libc::setgid(65534),
                0,
                "{}",
                std::io::Error::last_os_error()
            );
            assert_eq!(
                libc::setuid(65534),
                0,
                "{}",
                std::io::Error::last_os_error()
            );
        }
    }
    let spec = SegmentSpec {
        data_len: 1 << 20,
        entries: 0,
        ..spec()
    };
    let err = Segment::create(&Location::Path(path.into()), &spec, &opts().mlock(true))
        .expect_err("one page of locked memory cannot hold 1 MiB");
    match &err {
        Error::MlockFailed { len, limit, .. } => {
            assert!(*len >= 1 << 20, "{err}");
            assert_eq!(limit, "4096 bytes", "{err}");
        }
        other => panic!("expected MlockFailed, got {other:?}"),
    }
    println!("mlock failed as expected: {err}");
}

/// `Segment::survey` of the file at `tmp`.
fn surveyed(tmp: &TempPath) -> Result<shm_alloc::Survey, Error> {
    Segment::survey(&tmp.loc())
}

/// `survey` reads a ready segment's header and the roles held now (the header's entries,
/// at least 2), by lock probes: a role held by this process is live, the others not.
#[test]
#[cfg_attr(miri, ignore)]
fn survey_reads_a_ready_header_and_the_roles_held() {
    use shm_alloc::SurveyState;
    let tmp = TempPath::new("survey-ready");
    let seg = created(&tmp);
    let none = surveyed(&tmp).unwrap();
    assert_eq!(none.state, SurveyState::Ready);
    assert_eq!(none.info.as_ref().unwrap().type_name, "tests::Msg");
    assert_eq!(
        none.len,
        4096 + 4096,
        "the header page and one page of data"
    );
    assert_eq!(none.live_roles, Vec::<u32>::new());
    let held = seg.claim_role(1).unwrap();
    assert_eq!(
        surveyed(&tmp).unwrap().live_roles,
        [1],
        "entries 0 probe roles 0 and 1"
    );
    drop(held);
    // A table of 5 entries: all 5 probed, the last one included.
    let table = TempPath::new("survey-table");
    let spec5 = SegmentSpec {
        entries: 5,
        ..spec()
    };
    let seg5 = Segment::create(&table.loc(), &spec5, &opts()).unwrap();
    let (_a, _b) = (seg5.claim_role(0).unwrap(), seg5.claim_role(4).unwrap());
    assert_eq!(surveyed(&table).unwrap().live_roles, [0, 4]);
}

/// `survey` of what is not a ready segment: a missing file is `NotFound`; a directory
/// or a symbolic link (never followed) an I/O error; a file without the magic,
/// short or long, `BadMagic` with its first bytes; a file with the magic shorter than a
/// header, a ready header that does not validate, or a garbage state word, `Corrupt`
/// with the reason.
#[test]
#[cfg_attr(miri, ignore)]
fn survey_tells_what_is_not_a_ready_segment() {
    use shm_alloc::SurveyState;
    let missing = TempPath::new("survey-missing");
    assert!(matches!(surveyed(&missing), Err(Error::NotFound { .. })));

    let dir = TempPath::new("survey-dir");
    fs::create_dir(dir.path()).unwrap();
    let err = surveyed(&dir).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    fs::remove_dir(dir.path()).unwrap();

    let target = TempPath::new("survey-target");
    let _seg = created(&target);
    let link = TempPath::new("survey-link");
    std::os::unix::fs::symlink(target.path(), link.path()).unwrap();
    let err = surveyed(&link).unwrap_err();
    assert!(matches!(err, Error::Io { op: "open", .. }), "{err:?}");

    let short = TempPath::new("survey-short");
    fs::write(short.path(), b"abc").unwrap();
    assert!(matches!(
        surveyed(&short),
        Err(Error::BadMagic { found, .. }) if found == *b"abc\0\0\0\0\0"
    ));
    // Seven bytes of the magic are not a segment; all eight, and nothing more, are the
    // start of one cut short.
    let seven = TempPath::new("survey-seven");
    fs::write(seven.path(), b"SHMTRNS").unwrap();
    assert!(matches!(
        surveyed(&seven),
        Err(Error::BadMagic { found, .. }) if found == *b"SHMTRNS\0"
    ));
    let eight = TempPath::new("survey-eight");
    fs::write(eight.path(), b"SHMTRNS\0").unwrap();
    let state = surveyed(&eight).unwrap().state;
    assert!(
        matches!(&state, SurveyState::Corrupt(why) if why.contains("truncated: 8 bytes")),
        "{state:?}"
    );
    let foreign = TempPath::new("survey-foreign");
    fs::write(foreign.path(), vec![b'z'; 8192]).unwrap();
    assert!(matches!(
        surveyed(&foreign),
        Err(Error::BadMagic { found, .. }) if found == [b'z'; 8]
    ));

    let cut = TempPath::new("survey-cut");
    let _seg = created(&cut);
    OpenOptions::new()
        .write(true)
        .open(cut.path())
        .unwrap()
        .set_len(100)
        .unwrap();
    let state = surveyed(&cut).unwrap().state;
    assert!(
        matches!(&state, SurveyState::Corrupt(why) if why.contains("truncated: 100 bytes")),
        "{state:?}"
    );

    let unsealed = TempPath::new("survey-unsealed");
    let _seg = created(&unsealed);
    poke(unsealed.path(), OFF_KIND, &99u32.to_ne_bytes());
    let found = surveyed(&unsealed).unwrap();
    assert!(
        matches!(found.state, SurveyState::Corrupt(_)),
        "{:?}",
        found.state
    );
    assert!(found.info.is_none());

    let garbage = TempPath::new("survey-garbage");
    let _seg = created(&garbage);
    poke(garbage.path(), OFF_STATE, &0xdead_beef_u32.to_ne_bytes());
    let state = surveyed(&garbage).unwrap().state;
    assert!(
        matches!(&state, SurveyState::Corrupt(why) if why.contains("0xdeadbeef")),
        "{state:?}"
    );
}

/// A header not ready is `Initialising` while its creator holds the creation lock
/// (asked from inside the creator's own initialisation: the lock is the creator's open
/// file description's, so even this process's probe sees it), and `Stale` once nobody
/// does.
#[test]
#[cfg_attr(miri, ignore)]
fn survey_tells_a_creation_in_progress_from_a_stale_one() {
    use shm_alloc::SurveyState;
    let tmp = TempPath::new("survey-creating");
    let seen = std::cell::RefCell::new(None);
    let seg = Segment::create_with(&tmp.loc(), &spec(), &opts(), |creating| {
        *seen.borrow_mut() = Some(surveyed(&tmp).unwrap().state);
        // The creation lock has a byte of its own: the roles' bytes are free meanwhile.
        let roles = (creating.claim_role(0), creating.claim_role(1));
        assert!(roles.0.is_ok() && roles.1.is_ok(), "{roles:?}");
    })
    .unwrap();
    assert_eq!(seen.take(), Some(SurveyState::Initialising));
    assert_eq!(surveyed(&tmp).unwrap().state, SurveyState::Ready);
    // The same header back to "initialising", with no creator holding the lock.
    poke(tmp.path(), OFF_STATE, &0u32.to_ne_bytes());
    assert_eq!(surveyed(&tmp).unwrap().state, SurveyState::Stale);
    drop(seg);
}

/// `role_holders` names the processes whose locks hold a role (this one, by its pid),
/// and no one for a free role.
#[test]
#[cfg_attr(miri, ignore)]
fn role_holders_names_the_holding_process() {
    let tmp = TempPath::new("role-holders");
    let seg = created(&tmp);
    let _held = seg.claim_role(3).unwrap();
    let holders = |role| Segment::role_holders(&tmp.loc(), role).unwrap();
    assert_eq!(holders(3), [std::process::id()]);
    assert_eq!(holders(2), Vec::<u32>::new());
    assert_eq!(holders(4), Vec::<u32>::new());
}

/// Set in the child of `on_hugetlbfs_a_segment_is_whole_huge_pages`: the directory where
/// it mounts hugetlbfs, in a mount namespace of its own.
const HUGETLBFS_CHILD_ENV: &str = "SHM_ALLOC_TEST_HUGETLBFS_DIR";

/// How many huge pages the hugetlbfs test needs free at once.
const HUGE_PAGES: u64 = 2;

/// `/proc/sys/vm/nr_hugepages` raised by [`HUGE_PAGES`] for as long as it lives, then
/// set back: the kernel's pool of huge pages, which hugetlbfs files are made of.
struct ReservedHugePages {
    before: u64,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl ReservedHugePages {
    fn reserve() -> Self {
        let before: u64 = fs::read_to_string(NR_HUGEPAGES)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        fs::write(NR_HUGEPAGES, (before + HUGE_PAGES).to_string()).unwrap();
        let reserved = Self { before };
        let free = meminfo("HugePages_Free:");
        assert!(
            free >= HUGE_PAGES,
            "the kernel gave {free} free huge pages, {HUGE_PAGES} are needed (memory too \
             fragmented?); set {WITHOUT_ROOT}=1 to skip the tests that change the system"
        );
        reserved
    }
}

impl Drop for ReservedHugePages {
    fn drop(&mut self) {
        let _ = fs::write(NR_HUGEPAGES, self.before.to_string());
    }
}

/// A count of `/proc/meminfo`, by its label.
fn meminfo(label: &str) -> u64 {
    let info = fs::read_to_string("/proc/meminfo").unwrap();
    let line = info.lines().find(|l| l.starts_with(label)).unwrap();
    line[label.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// On hugetlbfs a segment is sized in whole huge pages, header page included: a child
/// in a mount namespace of its own mounts hugetlbfs (the mount goes with the child),
/// with two huge pages reserved for the time of the test, and creates and opens
/// segments there; one that needs a third page is `HugePagesUnavailable`. Needs root; without it the test fails rather than pass unseen, unless
/// skipping is asked for by name.
#[test]
#[cfg_attr(miri, ignore)]
fn on_hugetlbfs_a_segment_is_whole_huge_pages() {
    if rustix::process::geteuid().as_raw() != 0 {
        assert!(
            std::env::var_os(WITHOUT_ROOT).is_some(),
            "this test mounts hugetlbfs and reserves huge pages, which needs root; set \
             {WITHOUT_ROOT}=1 to skip it"
        );
        eprintln!("skipped ({WITHOUT_ROOT} is set): mounting hugetlbfs needs root");
        return;
    }
    let _pages = ReservedHugePages::reserve();
    let dir = TempPath::new("hugetlbfs");
    fs::create_dir(dir.path()).unwrap();
    let mut child = shm_testkit::child("hugetlbfs_child");
    child.env(HUGETLBFS_CHILD_ENV, dir.path());
    // SAFETY: `unshare` is async-signal-safe and touches no memory of the parent; it
    // runs in the forked child before it executes.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut child, || {
            if libc::unshare(libc::CLONE_NEWNS) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sized in huge pages"), "{stdout}");
    fs::remove_dir(dir.path()).unwrap();
}

/// The child of `on_hugetlbfs_a_segment_is_whole_huge_pages`, in its own mount
/// namespace.
#[test]
#[ignore = "run as a child process by on_hugetlbfs_a_segment_is_whole_huge_pages"]
fn hugetlbfs_child() {
    use std::ffi::CString;
    let Some(dir) = std::env::var_os(HUGETLBFS_CHILD_ENV) else {
        return;
    };
    let root = CString::new("/").unwrap();
    let target = CString::new(dir.as_encoded_bytes()).unwrap();
    let fstype = CString::new("hugetlbfs").unwrap();
    // SAFETY: NUL-terminated strings that outlive the calls; null pointers where the
    // calls take none. The mounts change this process's namespace only.
    unsafe {
        assert_eq!(
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            0,
            "making / private: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            ),
            0,
            "mounting hugetlbfs: {}",
            std::io::Error::last_os_error()
        );
    }
    let huge = meminfo("Hugepagesize:") * 1024;
    let header = Segment::HEADER_LEN as u64;
    let dir = Path::new(&dir);
    // The header and 1 KiB fill one huge page; the header and one huge page of data,
    // two. Each is created (huge pages required), opened, written and read back.
    for (data_len, pages) in [(1024, 1), (huge, 2)] {
        let loc = Location::from(dir.join(format!("seg-{pages}")).as_path());
        let spec = SegmentSpec {
            data_len,
            entries: 0,
            ..spec()
        };
        let opts = opts().huge_pages(true);
        let seg = Segment::create(&loc, &spec, &opts).unwrap();
        let len = fs::metadata(loc.path()).unwrap().len();
        assert_eq!(len, pages * huge, "the file of {data_len} data bytes");
        assert_eq!(seg.data_len() as u64, pages * huge - header);
        let opened = Segment::open(&loc, &Expect::from(&spec), &opts).unwrap();
        assert_eq!(opened.data_len(), seg.data_len());
        let last = seg.data_len() - 1;
        // SAFETY: both offsets are inside the data region of both mappings, which
        // this process alone uses; plain byte writes and reads.
        unsafe {
            seg.data().as_ptr().write(0xa5);
            seg.data().as_ptr().add(last).write(0x5a);
            assert_eq!(
                (
                    opened.data().as_ptr().read(),
                    opened.data().as_ptr().add(last).read()
                ),
                (0xa5, 0x5a),
                "the same pages through the second mapping"
            );
        }
        drop((seg, opened));
        Segment::remove(&loc).unwrap();
    }
    // Three huge pages where two are reserved: unavailable, with the sysctl to raise
    // named, and no file left.
    let loc = Location::from(dir.join("seg-3").as_path());
    let spec = SegmentSpec {
        data_len: 2 * huge,
        entries: 0,
        ..spec()
    };
    match Segment::create(&loc, &spec, &opts().huge_pages(true)) {
        Err(Error::HugePagesUnavailable { reason, .. }) => {
            assert!(reason.contains("vm.nr_hugepages"), "{reason}");
        }
        other => panic!("expected HugePagesUnavailable, got {other:?}"),
    }
    assert!(!loc.path().exists(), "a failed create leaves no file");
    println!("sized in huge pages of {huge} bytes");
}
