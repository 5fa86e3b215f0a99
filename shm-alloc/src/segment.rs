//! Segments: named, memory-mapped files with a validated header, and roles claimed by
//! file lock.
//!
//! A [`Segment`] is one file (by default under `/dev/shm`, but any path works: tmpfs,
//! hugetlbfs, a disk file) mapped `MAP_SHARED` in full: a 4096-byte header page (laid
//! out in [`header`](crate::header)'s `# Layout` table, and summarised on [`Segment`])
//! followed by a data region that the queue or pool built on top owns.
//!
//! # Attach protocol
//!
//! The creator makes the file with `O_CREAT | O_EXCL | O_NOFOLLOW`, sets its mode with
//! `fchmod` (so that the umask does not interfere), sizes it with `ftruncate` (which
//! leaves every byte zero, the state word included), maps it, writes every header field,
//! and stores `state = READY` last. An opener refuses symlinks, non-regular files and
//! (unless allowed) files of another owner, waits up to
//! [`SegmentOptions::open_timeout`] for the file to be sized and for `READY`, then checks
//! every field and fails with a typed [`Error`] that names the field, the expected and
//! the found value. If creation fails after the file exists, the creator removes it.
//!
//! # Memory ordering
//!
//! One release/acquire pair, `SYNC(header-ready)`: the creator's Release store of
//! `READY` in [`Segment::create`] pairs with the opener's Acquire load in `wait_ready`,
//! so an opener that sees `READY` sees every header field the creator wrote before it.
//! No header field is written after `READY`, so the opener's plain copy of the header
//! races with nothing. The state word itself is only ever accessed atomically: the
//! header copies in and out of the mapping skip its four bytes.
//!
//! # Roles and liveness
//!
//! Role `r` (for `r < `[`MAX_ROLES`]) is the one-byte range at offset `2048 + r` of the
//! file, locked with a Linux open-file-description lock (`fcntl(F_OFD_SETLK, F_WRLCK)`).
//! Each [`RoleClaim`] opens its own open file description, so two claims conflict
//! whether they are made in one process or in two. The kernel drops the lock when the
//! last descriptor of that description is closed: when the claim is dropped, and when
//! the holding process exits **however it exits** (`SIGKILL`, abort, panic, OOM kill).
//! [`Segment::role_alive`] asks the kernel whether anyone holds the lock; unlike a pid
//! stored in the file, the answer cannot be fooled by pid reuse.
//!
//! # Limits
//!
//! - Only the last path component is checked for being a symlink (`O_NOFOLLOW`);
//!   directories on the way are trusted.
//! - A peer that shrinks the file while it is mapped makes accesses past the new end
//!   raise `SIGBUS`: mapped files cannot be protected from that. Only processes of the
//!   owner (mode 0600 by default) can do it.
//! - Under `--cfg loom`, the atomics are loom's, which cannot live in a mapping: the
//!   crate compiles, but creating or opening a segment panics. Loom models run their
//!   algorithms over heap memory instead.

use core::ptr::{self, NonNull};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};
use shm_sync::atomic::{AtomicU32, Ordering};
use zerocopy::{FromZeros, IntoBytes};

use crate::error::Error;
use crate::header::{
    HEADER_LEN, ROLE_LOCK_BASE, RawHeader, STATE_END, STATE_INIT, STATE_OFFSET, STATE_READY,
};
pub use crate::header::{HeaderInfo, Kind, LAYOUT_VERSION, UnknownKind};

/// Number of roles a segment offers: roles are `0..MAX_ROLES`.
pub const MAX_ROLES: u32 = 1024;

/// Where [`Location::Name`]s live: POSIX shared memory's tmpfs.
const SHM_DIR: &str = "/dev/shm";

/// `statfs.f_type` of a hugetlbfs mount (`HUGETLBFS_MAGIC` in `linux/magic.h`).
const HUGETLBFS_MAGIC: u32 = 0x9584_58f6;

/// Sleep between two looks at a file that a racing creator is still initialising.
const OPEN_POLL: Duration = Duration::from_millis(1);

/// How many times [`Segment::open_or_create`] tries again when the file it found
/// vanished before it could be opened (its creator failed and removed it, or someone
/// removed it).
const OPEN_OR_CREATE_ATTEMPTS: u32 = 8;

#[cfg(not(loom))]
const _: () = {
    // The state word is read in place as an `AtomicU32`: it must have `u32`'s layout.
    assert!(core::mem::size_of::<AtomicU32>() == 4);
    assert!(core::mem::align_of::<AtomicU32>() == 4);
};

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Segment>();
    send_sync::<RoleClaim>();
};

/// Where a segment file is.
///
/// # Examples
///
/// ```
/// use shm_alloc::Location;
/// use std::path::Path;
///
/// assert_eq!(Location::from("feed").path(), Path::new("/dev/shm/feed"));
/// assert_eq!(Location::from(Path::new("/tmp/feed")).path(), Path::new("/tmp/feed"));
/// assert!(Location::from("a/b").checked_path().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A name under `/dev/shm`: `Name("feed")` is `/dev/shm/feed`. A name must be
    /// non-empty, contain no `/` or NUL, and not be `.` or `..`.
    Name(String),
    /// Any path: tmpfs, hugetlbfs, or a disk file.
    Path(PathBuf),
}

impl Location {
    /// The file's path, without validating a name (see [`checked_path`](Self::checked_path);
    /// [`Segment`]'s functions validate).
    #[must_use]
    pub fn path(&self) -> PathBuf {
        match self {
            Location::Name(name) => Path::new(SHM_DIR).join(name),
            Location::Path(path) => path.clone(),
        }
    }

    /// The file's path, after checking that a name is a single path component.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an empty name, a name containing `/` or NUL, and the
    /// names `.` and `..`.
    pub fn checked_path(&self) -> Result<PathBuf, Error> {
        if let Location::Name(name) = self {
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                return Err(Error::InvalidName { name: name.clone() });
            }
        }
        Ok(self.path())
    }
}

impl core::fmt::Display for Location {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.path().display().fmt(f)
    }
}

impl From<&str> for Location {
    /// A [`Location::Name`] under `/dev/shm`.
    fn from(name: &str) -> Self {
        Location::Name(name.to_owned())
    }
}

impl From<String> for Location {
    /// A [`Location::Name`] under `/dev/shm`.
    fn from(name: String) -> Self {
        Location::Name(name)
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Location::Path(path.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Location::Path(path)
    }
}

/// What a creator writes into a new segment's header, and how large it makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpec {
    /// What the segment holds.
    pub kind: Kind,
    /// Slots, bytes or chunks, meaning per kind.
    pub capacity: u64,
    /// Size of one slot, in bytes.
    pub slot_size: u64,
    /// Alignment of a slot, in bytes.
    pub slot_align: u64,
    /// Fingerprint of the message type, 0 for untyped kinds.
    pub type_fingerprint: u64,
    /// The message type's name, for error messages only; the first 64 bytes (cut at a
    /// character boundary) are stored.
    pub type_name: &'static str,
    /// Bytes of the data region after the header page; rounded up so that the file is
    /// a whole number of pages (of huge pages on hugetlbfs).
    pub data_len: u64,
    /// Participant table entries the data region lays out (0 for a kind without one):
    /// recorded in the header, where the checksum covers it.
    pub entries: u32,
}

/// What an opener requires of a segment's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Required kind.
    pub kind: Kind,
    /// Required capacity, or `None` to accept any.
    pub capacity: Option<u64>,
    /// Required slot size, in bytes.
    pub slot_size: u64,
    /// Required slot alignment, in bytes.
    pub slot_align: u64,
    /// Required type fingerprint.
    pub type_fingerprint: u64,
    /// The expected type's name, for error messages only.
    pub type_name: &'static str,
    /// Required participant table entries, or `None` to accept any.
    pub entries: Option<u32>,
}

impl From<&SegmentSpec> for Expect {
    /// Expects exactly what `spec` would create, capacity and entries included.
    fn from(spec: &SegmentSpec) -> Self {
        Expect {
            kind: spec.kind,
            capacity: Some(spec.capacity),
            slot_size: spec.slot_size,
            slot_align: spec.slot_align,
            type_fingerprint: spec.type_fingerprint,
            type_name: spec.type_name,
            entries: Some(spec.entries),
        }
    }
}

/// How to create or open a segment. `Default` gives mode 0600, own files only, no
/// prefault, no `mlock`, no huge pages, and a 1 s open timeout.
///
/// # Examples
///
/// ```
/// use shm_alloc::SegmentOptions;
/// use std::time::Duration;
///
/// let opts = SegmentOptions::default()
///     .prefault(true)
///     .open_timeout(Duration::from_millis(100));
/// assert_eq!(opts.mode, 0o600);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentOptions {
    /// Permission bits of a created file (only `0o777` is kept), applied exactly with
    /// `fchmod`, whatever the umask.
    pub mode: u32,
    /// Accept opening a file owned by another user than this process's effective uid.
    pub allow_foreign_owner: bool,
    /// Fault every page in when mapping (`MAP_POPULATE`), so that the first accesses do
    /// not take page faults.
    pub prefault: bool,
    /// Lock the whole mapping in memory (`mlock`), so that it is never swapped out.
    /// Needs `RLIMIT_MEMLOCK` at least as large as the file, or `CAP_IPC_LOCK`.
    pub mlock: bool,
    /// Require the file to be on hugetlbfs (then it is sized in huge pages).
    pub huge_pages: bool,
    /// How long an opener waits for a racing creator to size the file and publish its
    /// header.
    pub open_timeout: Duration,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            mode: 0o600,
            allow_foreign_owner: false,
            prefault: false,
            mlock: false,
            huge_pages: false,
            open_timeout: Duration::from_secs(1),
        }
    }
}

impl SegmentOptions {
    /// Sets [`mode`](Self::mode).
    #[must_use]
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`allow_foreign_owner`](Self::allow_foreign_owner).
    #[must_use]
    pub fn allow_foreign_owner(mut self, allow: bool) -> Self {
        self.allow_foreign_owner = allow;
        self
    }

    /// Sets [`prefault`](Self::prefault).
    #[must_use]
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Sets [`mlock`](Self::mlock).
    #[must_use]
    pub fn mlock(mut self, mlock: bool) -> Self {
        self.mlock = mlock;
        self
    }

    /// Sets [`huge_pages`](Self::huge_pages).
    #[must_use]
    pub fn huge_pages(mut self, huge_pages: bool) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Sets [`open_timeout`](Self::open_timeout).
    #[must_use]
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }
}

/// A segment file, mapped in full, with a validated header.
///
/// The mapping lives as long as the `Segment`: pointers from [`data`](Self::data) are
/// valid until it is dropped. Several processes (and several `Segment`s in one process)
/// may map the same file; what they do in the data region is the business of the
/// structure built on top, which must use atomics for anything shared.
///
/// # Layout
///
/// | bytes           | contents                                                    |
/// |-----------------|-------------------------------------------------------------|
/// | `0..144`        | header fields: magic, version, kind, state, geometry, type  |
/// | `144..2048`     | reserved, zero                                              |
/// | `2048..3072`    | one lock byte per role (locked, never written)              |
/// | `3072..4096`    | reserved, zero                                              |
/// | `4096..`        | data region, [`data_len`](Self::data_len) bytes             |
///
/// # Examples
///
/// ```
/// use shm_alloc::{Expect, Kind, Location, Segment, SegmentOptions, SegmentSpec};
///
/// let loc = Location::from(std::env::temp_dir().join(format!("doc-seg-{}", std::process::id())));
/// let spec = SegmentSpec {
///     kind: Kind::Stream,
///     capacity: 4096,
///     slot_size: 1,
///     slot_align: 1,
///     type_fingerprint: 0,
///     type_name: "bytes",
///     data_len: 4096,
///     entries: 0,
/// };
/// let opts = SegmentOptions::default();
/// let creator = Segment::create(&loc, &spec, &opts)?;
/// let opener = Segment::open(&loc, &Expect::from(&spec), &opts)?;
/// // SAFETY: the data region is at least 4096 bytes, and no one else uses it here.
/// unsafe { creator.data().as_ptr().write(7) };
/// // SAFETY: as above; both mappings show the same file.
/// assert_eq!(unsafe { opener.data().as_ptr().read() }, 7);
/// Segment::remove(&loc)?;
/// # Ok::<(), shm_alloc::Error>(())
/// ```
pub struct Segment {
    map: MmapRaw,
    /// The segment's own open file description: used to map, to reopen for claims, and
    /// to probe role locks. It never takes a lock itself.
    file: File,
    path: PathBuf,
    info: HeaderInfo,
}

impl core::fmt::Debug for Segment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Segment")
            .field("path", &self.path)
            .field("header", &self.info)
            .field("mapped_len", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// Length of the header page, in bytes: the data region starts at this offset.
    pub const HEADER_LEN: usize = HEADER_LEN;

    /// Creates a new segment file at `loc`, sized `HEADER_LEN + spec.data_len` rounded up
    /// to whole pages (huge pages on hugetlbfs), with `spec` written in its header and an
    /// all-zero data region.
    ///
    /// The file is created with `O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC` and given
    /// exactly `opts.mode` (`& 0o777`) with `fchmod`. If any later step fails, the file
    /// is removed again.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidName`] if `loc` is an invalid name.
    /// - [`Error::AlreadyExists`] if a file (or symlink) is at the path.
    /// - [`Error::InvalidSpec`] if `spec.data_len` is too large to map.
    /// - [`Error::HugePagesUnavailable`] if `opts.huge_pages` is set and the path is not
    ///   on hugetlbfs, or if no huge pages are free.
    /// - [`Error::MlockFailed`] if `opts.mlock` is set and `mlock` fails.
    /// - [`Error::Io`] if a system call fails (creating in a missing directory, no space).
    pub fn create(
        loc: &Location,
        spec: &SegmentSpec,
        opts: &SegmentOptions,
    ) -> Result<Segment, Error> {
        Self::create_at(loc.checked_path()?, spec, opts, |_| {})
    }

    /// Creates a new segment as [`create`](Self::create) does, and calls `init` on it
    /// before publishing its header: an opener waits until `init` has returned, so the
    /// data region can start in a state other than all-zero (a ring's fixed
    /// parameters, chunk headers). `init` writes through [`data`](Self::data); nothing
    /// else maps the data region yet, but other processes may already have the file
    /// open and be waiting, so shared fields are best written atomically.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create).
    pub fn create_with(
        loc: &Location,
        spec: &SegmentSpec,
        opts: &SegmentOptions,
        init: impl FnOnce(&Segment),
    ) -> Result<Segment, Error> {
        Self::create_at(loc.checked_path()?, spec, opts, init)
    }

    /// Opens an existing segment file at `loc` and checks its header against `expect`.
    ///
    /// Waits up to `opts.open_timeout`, in 1 ms sleeps, for a racing creator to size
    /// the file and publish its header. Then checks, in this order: magic, layout
    /// version, state word, kind, capacity (if expected), slot size, slot alignment,
    /// type fingerprint, and the file size against `data_len`. Never panics, whatever the
    /// file holds.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidName`] if `loc` is an invalid name.
    /// - [`Error::NotFound`] if there is no file.
    /// - [`Error::Symlink`] if the path is a symbolic link.
    /// - [`Error::NotARegularFile`] for a directory, FIFO, socket or device.
    /// - [`Error::ForeignOwner`] if another user owns the file and
    ///   `opts.allow_foreign_owner` is not set.
    /// - [`Error::HugePagesUnavailable`] if `opts.huge_pages` is set and the file is not
    ///   on hugetlbfs, or no huge pages are free.
    /// - [`Error::Truncated`] if the file is shorter than a header page, or than its
    ///   header says.
    /// - [`Error::NotInitialized`] if the header was not published in time.
    /// - [`Error::BadMagic`], [`Error::VersionTooNew`], [`Error::VersionMismatch`],
    ///   [`Error::Corrupted`] for a file that is not a segment of this layout.
    /// - [`Error::Mismatch`] naming the first field that differs from `expect`.
    /// - [`Error::MlockFailed`] if `opts.mlock` is set and `mlock` fails.
    /// - [`Error::Io`] if a system call fails (permission denied, for instance).
    pub fn open(loc: &Location, expect: &Expect, opts: &SegmentOptions) -> Result<Segment, Error> {
        Self::open_at(loc.checked_path()?, expect, opts)
    }

    /// Creates the segment, or opens it if it exists; `true` in the result means this
    /// call created it.
    ///
    /// Tries [`create`](Self::create) first; on [`Error::AlreadyExists`], opens with
    /// `Expect::from(spec)` (so the capacity must match too). If the file vanishes
    /// between the two (a racing creator failed and removed it), tries again, up to 8
    /// times. Any number of processes or threads may race here: exactly one creates.
    ///
    /// # Errors
    ///
    /// Those of [`create`](Self::create) other than `AlreadyExists`, and those of
    /// [`open`](Self::open); [`Error::NotFound`] if the file kept vanishing.
    pub fn open_or_create(
        loc: &Location,
        spec: &SegmentSpec,
        opts: &SegmentOptions,
    ) -> Result<(Segment, bool), Error> {
        Self::open_or_create_with(loc, spec, &Expect::from(spec), opts, |_| {})
    }

    /// [`open_or_create`](Self::open_or_create) with an opener's `expect` of its own (one
    /// that accepts any capacity, say) and an `init` run by the creator before it
    /// publishes the header, as in [`create_with`](Self::create_with).
    ///
    /// # Errors
    ///
    /// As [`open_or_create`](Self::open_or_create).
    pub fn open_or_create_with(
        loc: &Location,
        spec: &SegmentSpec,
        expect: &Expect,
        opts: &SegmentOptions,
        init: impl Fn(&Segment),
    ) -> Result<(Segment, bool), Error> {
        let path = loc.checked_path()?;
        let mut last = Error::NotFound { path: path.clone() };
        for _ in 0..OPEN_OR_CREATE_ATTEMPTS {
            match Self::create_at(path.clone(), spec, opts, &init) {
                Ok(segment) => return Ok((segment, true)),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            #[cfg(test)]
            tests::vanish_before_open(&path);
            match Self::open_at(path.clone(), expect, opts) {
                Ok(segment) => return Ok((segment, false)),
                Err(e @ Error::NotFound { .. }) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// What a tool sees of the file at `loc` without attaching to it: its header, whether
    /// it is ready, still being created, or stale (not ready, and its creator's
    /// creation lock free twice, 20 ms apart: the creator died before READY), and which
    /// roles are held now (probed by `F_OFD_GETLK`, never by pid). Roles probed: the
    /// header's participant entries, and at least 2 (an SPSC ring's producer and
    /// consumer). Maps nothing and writes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::BadMagic`] for a file that is not a segment (the first bytes decide, not
    /// the name), [`Error::NotFound`], [`Error::InvalidName`], [`Error::Io`]; a ready
    /// header that does not validate (a newer layout, a bad checksum, a wrong length)
    /// is `Ok` with [`SurveyState::Corrupt`] and its reason.
    pub fn survey(loc: &Location) -> Result<Survey, Error> {
        use std::os::unix::fs::FileExt;
        let path = loc.checked_path()?;
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotFound { path }),
            Err(source) => return Err(io_error(path, "open", source)),
        };
        let meta = file
            .metadata()
            .map_err(|source| io_error(path.clone(), "fstat", source))?;
        let len = meta.len();
        let mut raw = RawHeader::new_zeroed();
        let n = (len as usize).min(HEADER_LEN);
        file.read_exact_at(&mut raw.as_mut_bytes()[..n], 0)
            .map_err(|source| io_error(path.clone(), "pread", source))?;
        let creating = || {
            ofd_lock_byte(&file, libc::F_OFD_GETLK, libc::F_WRLCK, CREATION_LOCK)
                .is_ok_and(|l| i32::from(l.l_type) != libc::F_UNLCK)
        };
        let survey = |state, info: Option<HeaderInfo>, live_roles| Survey {
            path: path.clone(),
            len,
            owner_uid: meta.uid(),
            state,
            info,
            live_roles,
        };
        if n < 8 || raw.magic != crate::header::MAGIC {
            // No magic yet: ours only while a creator holds the creation lock (the
            // header is written right after the file is sized).
            if creating() {
                return Ok(survey(SurveyState::Initialising, None, Vec::new()));
            }
            let mut found = [0u8; 8];
            found[..n.min(8)].copy_from_slice(&raw.as_bytes()[..n.min(8)]);
            return Err(Error::BadMagic { path, found });
        }
        let (state, info) = if len < HEADER_LEN as u64 {
            (
                SurveyState::Corrupt(format!(
                    "truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header"
                )),
                None,
            )
        } else if raw.state == STATE_READY {
            match raw.validate_own(len, &path) {
                Ok(info) => (SurveyState::Ready, Some(info)),
                Err(e) => (SurveyState::Corrupt(e.to_string()), None),
            }
        } else if raw.state == STATE_INIT {
            let stale = !creating() && {
                std::thread::sleep(Duration::from_millis(20));
                // Acquire of a fresh read: the creator may have finished meanwhile.
                let mut state = [0u8; 4];
                let ready = file.read_exact_at(&mut state, STATE_OFFSET as u64).is_ok()
                    && u32::from_ne_bytes(state) == STATE_READY;
                !ready && !creating()
            };
            if stale {
                (SurveyState::Stale, None)
            } else {
                (SurveyState::Initialising, None)
            }
        } else {
            (
                SurveyState::Corrupt(format!("state word is {:#010x}", raw.state)),
                None,
            )
        };
        let roles = info.as_ref().map_or(0, |i| i.entries.max(2)).min(MAX_ROLES);
        let live_roles = (0..roles)
            .filter(|&role| {
                ofd_lock(&file, libc::F_OFD_GETLK, role)
                    .is_ok_and(|l| i32::from(l.l_type) != libc::F_UNLCK)
            })
            .collect();
        Ok(survey(state, info, live_roles))
    }

    /// The processes that hold role `role` of the segment at `loc` now: the pids whose
    /// open file descriptions of the file hold the OFD lock on the role's byte, read from
    /// `/proc/<pid>/fdinfo` as `lslocks` does (an OFD lock records no pid of its own).
    /// Processes of other users whose `/proc` entries this one may not read are not
    /// seen. For messages ("another sender is attached (pid 4242)") and tools, never
    /// for a decision: the lock probe is the truth.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an invalid name; [`Error::Io`] if the file cannot be
    /// read (`stat`).
    pub fn role_holders(loc: &Location, role: u32) -> Result<Vec<u32>, Error> {
        let path = loc.checked_path()?;
        let meta = fs::metadata(&path).map_err(|source| io_error(path.clone(), "stat", source))?;
        let (dev, ino) = (meta.dev(), meta.ino());
        let byte = ROLE_LOCK_BASE + u64::from(role);
        let mut pids = Vec::new();
        let Ok(procs) = fs::read_dir("/proc") else {
            return Ok(pids);
        };
        for process in procs.flatten() {
            let Some(pid) = process
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                // Follows the link to the open file: the same inode is the same file.
                let Ok(target) = fs::metadata(fd.path()) else {
                    continue;
                };
                if (target.dev(), target.ino()) != (dev, ino) {
                    continue;
                }
                let info = process.path().join("fdinfo").join(fd.file_name());
                let Ok(info) = fs::read_to_string(info) else {
                    continue;
                };
                if info.lines().any(|line| lock_covers(line, byte)) {
                    pids.push(pid);
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Removes (unlinks) the segment file. Processes that have it mapped keep their
    /// mapping; the memory is freed when the last one unmaps it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an invalid name, [`Error::NotFound`] if there is no
    /// file, [`Error::Io`] if `unlink` fails otherwise.
    pub fn remove(loc: &Location) -> Result<(), Error> {
        let path = loc.checked_path()?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound { path }),
            Err(source) => Err(Error::Io {
                path,
                op: "unlink",
                source,
            }),
        }
    }

    /// The segment file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the header, as validated when the segment was created or opened (no
    /// field changes afterwards).
    #[must_use]
    pub fn header(&self) -> HeaderInfo {
        self.info.clone()
    }

    /// The first byte of the data region, right after the header page: aligned to at
    /// least 4096 bytes (the mapping is page-aligned), all zero right after
    /// [`create`](Self::create), and valid for [`data_len`](Self::data_len) bytes while
    /// this `Segment` lives.
    ///
    /// Other processes may write the region at any time: access it through atomics, or
    /// through types for which any bit pattern is valid, by the rules of the structure
    /// built on top. If `data_len` is 0, the pointer is one past the mapping's end and
    /// must not be dereferenced.
    #[must_use]
    pub fn data(&self) -> NonNull<u8> {
        // SAFETY: the mapping is `HEADER_LEN + data_len` bytes long (checked at create and
        // open), so offset `HEADER_LEN` is inside it or one past its end, and `add` stays
        // within the one allocation.
        let data = unsafe { self.map.as_mut_ptr().add(HEADER_LEN) };
        // SAFETY: `mmap` never returns a null mapping, and `data` is an in-bounds offset
        // from it, so it is not null either.
        unsafe { NonNull::new_unchecked(data) }
    }

    /// Makes bytes `start..start + len` of the data region read-only in this mapping
    /// (`mprotect(PROT_READ)`): a write through it then faults (`SIGSEGV`) instead of
    /// changing what other processes read. Other mappings of the file, in this process
    /// or others, keep their access. Only whole pages inside the range are protected
    /// (huge pages on hugetlbfs, where a range smaller than one may protect nothing);
    /// returns how many bytes were.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSpec`] if the range reaches past the data region; [`Error::Io`]
    /// if `fstatfs` or `mprotect` fails.
    pub fn protect_read_only(&self, start: usize, len: usize) -> Result<usize, Error> {
        let end = start.checked_add(len).filter(|&end| end <= self.data_len());
        let Some(end) = end else {
            return Err(Error::InvalidSpec {
                path: self.path.clone(),
                reason: format!(
                    "bytes {start}..+{len} reach past the data region of {} bytes",
                    self.data_len()
                ),
            });
        };
        let fs = FsInfo::of(&self.file, &self.path)?;
        let granule = if fs.hugetlbfs {
            fs.huge_page_size(&self.path)?
        } else {
            page_size()
        } as usize;
        // Offsets from the mapping's start, which is page-aligned.
        let first = (HEADER_LEN + start).next_multiple_of(granule);
        let last = (HEADER_LEN + end) / granule * granule;
        if last <= first {
            return Ok(0);
        }
        // SAFETY: `first..last` lies inside the mapping (`end <= data_len`), starts on a
        // page boundary, and only loses write access: what is read through it stays
        // valid, and every writer of those bytes in this process goes through another
        // mapping (the caller's contract with its own structure).
        let protected = unsafe {
            rustix::mm::mprotect(
                self.map.as_mut_ptr().add(first).cast(),
                last - first,
                rustix::mm::MprotectFlags::READ,
            )
        };
        protected.map_err(|e| io_error(self.path.clone(), "mprotect", e.into()))?;
        Ok(last - first)
    }

    /// Length of the data region, in bytes: a multiple of 4096 (of the huge page size on
    /// hugetlbfs, minus the header page).
    #[must_use]
    pub fn data_len(&self) -> usize {
        // Checked at create and open to fit in `isize` with the header page.
        self.info.data_len as usize
    }

    /// Claims `role`: takes the OFD write lock on the role's byte, through a new open
    /// file description of the file. The role is held until the returned claim is
    /// dropped, or until this process dies, however it dies (the kernel releases the
    /// lock then).
    ///
    /// Two claims of one role conflict even within one process, even through one
    /// `Segment`.
    ///
    /// The lock belongs to the claim's open file description, which a `fork()` shares
    /// with the child (the descriptor is close-on-exec). So a role released while another
    /// thread of this process forks stays held until that child execs or exits, and
    /// without exec the child holds every role of its parent. A claim that can race with
    /// a fork should retry `RoleTaken` briefly.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRole`] if `role >= MAX_ROLES`; [`Error::RoleTaken`] if anyone holds
    /// the role; [`Error::Io`] if reopening the file through `/proc/self/fd` or `fcntl`
    /// fails.
    pub fn claim_role(&self, role: u32) -> Result<RoleClaim, Error> {
        check_role(role)?;
        let file = self.reopen()?;
        match ofd_lock(&file, libc::F_OFD_SETLK, role) {
            Ok(_) => Ok(RoleClaim {
                role,
                path: self.path.clone(),
                lock: file,
            }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                Err(Error::RoleTaken {
                    path: self.path.clone(),
                    role,
                })
            }
            Err(source) => Err(Error::Io {
                path: self.path.clone(),
                op: "fcntl(F_OFD_SETLK)",
                source,
            }),
        }
    }

    /// Whether anyone holds `role`: a [`RoleClaim`] alive in any process, this one
    /// included. Asks the kernel (`F_OFD_GETLK`) through this segment's own open file
    /// description, which never takes a lock, so every claim conflicts with the probe.
    ///
    /// Immune to pid reuse: a dead holder's lock is gone, whatever process now has its
    /// pid. The answer may be stale as soon as it is returned (a holder may exit, or
    /// someone may claim the role, right after). To take over a role, call
    /// [`claim_role`](Self::claim_role) itself, which tests and takes in one step.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRole`] if `role >= MAX_ROLES`; [`Error::Io`] if `fcntl` fails.
    pub fn role_alive(&self, role: u32) -> Result<bool, Error> {
        check_role(role)?;
        match ofd_lock(&self.file, libc::F_OFD_GETLK, role) {
            Ok(found) => Ok(i32::from(found.l_type) != libc::F_UNLCK),
            Err(source) => Err(Error::Io {
                path: self.path.clone(),
                op: "fcntl(F_OFD_GETLK)",
                source,
            }),
        }
    }

    fn create_at(
        path: PathBuf,
        spec: &SegmentSpec,
        opts: &SegmentOptions,
        init: impl FnOnce(&Segment),
    ) -> Result<Segment, Error> {
        let mode = opts.mode & 0o777;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists { path });
            }
            Err(source) => return Err(io_error(path, "create", source)),
        };
        let mut guard = RemoveOnFailure::new(path.clone(), &file);
        // The creation lock, held until READY: a file whose header is not ready while
        // nobody holds it was left by a creator that died ([`Segment::survey`]). Taken
        // microseconds after the file appears; a lock-free, unready file is looked at
        // twice before it is called stale.
        if let Err(source) = ofd_lock_byte(&file, libc::F_OFD_SETLK, libc::F_WRLCK, CREATION_LOCK) {
            return Err(io_error(path, "fcntl(F_OFD_SETLK)", source));
        }

        // The mode given to open() was cut by the umask; set it exactly.
        if let Err(source) = file.set_permissions(Permissions::from_mode(mode)) {
            return Err(io_error(path, "fchmod", source));
        }
        let fs = FsInfo::of(&file, &path)?;
        if opts.huge_pages && !fs.hugetlbfs {
            return Err(not_hugetlbfs(path));
        }
        let granule = if fs.hugetlbfs {
            fs.huge_page_size(&path)?
        } else {
            page_size()
        };
        let total = (HEADER_LEN as u64)
            .checked_add(spec.data_len)
            .and_then(|len| len.checked_next_multiple_of(granule))
            .filter(|&len| len <= isize::MAX as u64);
        let Some(total) = total else {
            return Err(Error::InvalidSpec {
                path,
                reason: format!(
                    "data_len is {} bytes: with the {HEADER_LEN}-byte header, rounded up to \
                     {granule}-byte pages, expected at most {} bytes",
                    spec.data_len,
                    isize::MAX
                ),
            });
        };
        if let Err(source) = file.set_len(total) {
            return Err(io_error(path, "ftruncate", source));
        }
        let map = map_file(&file, total as usize, opts, &path, fs.hugetlbfs)?;
        if opts.mlock {
            mlock(&map, &path)?;
        }

        let created_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        let mut raw = RawHeader::new(
            spec,
            total - HEADER_LEN as u64,
            u64::from(std::process::id()),
            created_unix_ns,
        );
        write_header(&map, &raw);
        // Self-check: what an opener will see must validate against the spec.
        raw.state = STATE_READY;
        let info = raw.validate(&Expect::from(spec), total, &path)?;
        let segment = Segment {
            map,
            file,
            path,
            info,
        };
        init(&segment);
        // SYNC(header-ready): Release; pairs with the Acquire load in `wait_ready`: an
        // opener that sees READY sees every header field written above, and what `init`
        // wrote.
        state_word(&segment.map).store(STATE_READY, Ordering::Release);
        // Released once READY (an unlock does not fail for a lock this description
        // holds; if it did, the lock would only go with the description).
        let _ = ofd_lock_byte(
            &segment.file,
            libc::F_OFD_SETLK,
            libc::F_UNLCK,
            CREATION_LOCK,
        );
        guard.disarm();
        Ok(segment)
    }

    fn open_at(path: PathBuf, expect: &Expect, opts: &SegmentOptions) -> Result<Segment, Error> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) => return Err(open_error(path, e)),
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(source) => return Err(io_error(path, "fstat", source)),
        };
        if !meta.file_type().is_file() {
            return Err(Error::NotARegularFile {
                path,
                file_type: describe(meta.file_type()),
            });
        }
        let euid = rustix::process::geteuid().as_raw();
        if meta.uid() != euid && !opts.allow_foreign_owner {
            return Err(Error::ForeignOwner {
                path,
                owner: meta.uid(),
                expected: euid,
            });
        }
        let fs = FsInfo::of(&file, &path)?;
        if opts.huge_pages && !fs.hugetlbfs {
            return Err(not_hugetlbfs(path));
        }

        // A racing creator has made the file but not yet sized it: wait. A size between
        // 0 and a header page is never a step of creation (ftruncate goes straight to
        // the full size), so it fails at once.
        let start = Instant::now();
        let deadline = start.checked_add(opts.open_timeout);
        let mut len = meta.len();
        while len < HEADER_LEN as u64 {
            if len != 0 {
                // Shorter than a header: a segment cut short, or not a segment at all
                // (its first bytes say which).
                if let Some(found) = foreign_magic(&file, len) {
                    return Err(Error::BadMagic { path, found });
                }
                return Err(Error::Truncated {
                    path,
                    expected: HEADER_LEN as u64,
                    found: len,
                });
            }
            pause_until(start, deadline, &path)?;
            len = match file.metadata() {
                Ok(meta) => meta.len(),
                Err(source) => return Err(io_error(path, "fstat", source)),
            };
        }
        if len > isize::MAX as u64 {
            return Err(Error::Corrupted {
                path,
                what: format!("file is {len} bytes, more than any mapping can hold"),
            });
        }
        let map = map_file(&file, len as usize, opts, &path, fs.hugetlbfs)?;
        let state = wait_ready(&map, start, deadline, &path)?;
        let info = read_header(&map, state).validate(expect, len, &path)?;
        if opts.mlock {
            mlock(&map, &path)?;
        }
        Ok(Segment {
            map,
            file,
            path,
            info,
        })
    }

    /// A new open file description of the segment file (not a `dup`, which would share
    /// this one's locks): reopens `/proc/self/fd/<fd>`, which reaches the same inode
    /// even if the path was removed or replaced since.
    fn reopen(&self) -> Result<File, Error> {
        let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(proc_path)
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                op: "reopen through /proc/self/fd",
                source,
            })
    }
}

/// A claimed role of a segment: holds the OFD lock on the role's byte, through its own
/// open file description.
///
/// Dropping it closes that description, which releases the role. If the process dies
/// instead, however it dies, the kernel closes it and releases the role all the same.
#[derive(Debug)]
pub struct RoleClaim {
    role: u32,
    path: PathBuf,
    /// Holds the lock; closing it (on drop) releases it.
    #[expect(
        dead_code,
        reason = "never read: it is held so that its drop releases the role"
    )]
    lock: File,
}

impl RoleClaim {
    /// The role held.
    #[must_use]
    pub fn role(&self) -> u32 {
        self.role
    }

    /// The segment file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What `fstatfs` says about the file system holding a segment.
struct FsInfo {
    hugetlbfs: bool,
    block_size: u64,
}

impl FsInfo {
    fn of(file: &File, path: &Path) -> Result<FsInfo, Error> {
        let stat = rustix::fs::fstatfs(file).map_err(|errno| Error::Io {
            path: path.to_path_buf(),
            op: "fstatfs",
            source: errno.into(),
        })?;
        // `f_type` is a signed word of varying width; the magic fits in its low 32 bits.
        Ok(FsInfo {
            hugetlbfs: stat.f_type as u32 == HUGETLBFS_MAGIC,
            block_size: stat.f_bsize as u64,
        })
    }

    /// The huge page size of this hugetlbfs mount (its block size).
    fn huge_page_size(&self, path: &Path) -> Result<u64, Error> {
        if self.block_size != 0 && self.block_size % HEADER_LEN as u64 == 0 {
            Ok(self.block_size)
        } else {
            Err(Error::HugePagesUnavailable {
                path: path.to_path_buf(),
                reason: format!(
                    "the hugetlbfs mount reports a block size of {} bytes, expected a huge page \
                     size (a multiple of {HEADER_LEN})",
                    self.block_size
                ),
            })
        }
    }
}

/// Removes the file it was made for when dropped armed: no half-made segment is left
/// behind by a failed create. Checks device and inode first, so that a file someone put
/// at the path since is not removed.
struct RemoveOnFailure {
    path: PathBuf,
    id: Option<(u64, u64)>,
    armed: bool,
}

impl RemoveOnFailure {
    fn new(path: PathBuf, file: &File) -> Self {
        let id = file.metadata().ok().map(|m| (m.dev(), m.ino()));
        RemoveOnFailure {
            path,
            id,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for RemoveOnFailure {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let same = match (self.id, fs::symlink_metadata(&self.path)) {
            (Some(id), Ok(meta)) => (meta.dev(), meta.ino()) == id,
            (None, Ok(_)) => true,
            (_, Err(_)) => false,
        };
        if same {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn io_error(path: PathBuf, op: &'static str, source: io::Error) -> Error {
    Error::Io { path, op, source }
}

/// Turns a failed `open` into the error that says why: a missing file, a symlink
/// (`ELOOP` under `O_NOFOLLOW`), a directory (`EISDIR`), a socket (`ENXIO`), or else the
/// I/O error itself.
fn open_error(path: PathBuf, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::NotFound {
        return Error::NotFound { path };
    }
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => Error::Symlink { path },
        Ok(meta) if !meta.file_type().is_file() => Error::NotARegularFile {
            path,
            file_type: describe(meta.file_type()),
        },
        _ => io_error(path, "open", source),
    }
}

fn describe(file_type: fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else {
        "unknown file type"
    }
}

fn not_hugetlbfs(path: PathBuf) -> Error {
    let reason = format!(
        "{} is not on a hugetlbfs file system: pass a path under a hugetlbfs mount (for \
         example /dev/hugepages/<name>, after `mount -t hugetlbfs none /dev/hugepages`)",
        path.display()
    );
    Error::HugePagesUnavailable { path, reason }
}

/// The system page size, at least [`HEADER_LEN`].
fn page_size() -> u64 {
    // SAFETY: `sysconf` has no preconditions; it returns a constant of the running system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(0).max(HEADER_LEN as u64)
}

fn map_file(
    file: &File,
    len: usize,
    opts: &SegmentOptions,
    path: &Path,
    hugetlbfs: bool,
) -> Result<MmapRaw, Error> {
    let mut options = MmapOptions::new();
    options.len(len);
    if opts.prefault {
        options.populate();
    }
    options.map_raw(file).map_err(|source| {
        if hugetlbfs && source.raw_os_error() == Some(libc::ENOMEM) {
            Error::HugePagesUnavailable {
                path: path.to_path_buf(),
                reason: format!(
                    "no free huge pages for {len} bytes: check HugePages_Free in /proc/meminfo, \
                     and reserve more with `sysctl vm.nr_hugepages=<count>`"
                ),
            }
        } else {
            io_error(path.to_path_buf(), "mmap", source)
        }
    })
}

fn mlock(map: &MmapRaw, path: &Path) -> Result<(), Error> {
    map.lock().map_err(|source| {
        let limit = match rustix::process::getrlimit(rustix::process::Resource::Memlock).current {
            Some(bytes) => format!("{bytes} bytes"),
            None => "unlimited".to_owned(),
        };
        Error::MlockFailed {
            path: path.to_path_buf(),
            len: map.len() as u64,
            limit,
            source,
        }
    })
}

/// Sleeps one poll step (or until `deadline`, if sooner), or fails with
/// [`Error::NotInitialized`] if `deadline` has passed.
fn pause_until(start: Instant, deadline: Option<Instant>, path: &Path) -> Result<(), Error> {
    let now = Instant::now();
    let step = match deadline {
        Some(deadline) if now >= deadline => {
            return Err(Error::NotInitialized {
                path: path.to_path_buf(),
                waited: now.duration_since(start),
            });
        }
        Some(deadline) => OPEN_POLL.min(deadline - now),
        None => OPEN_POLL,
    };
    std::thread::sleep(step);
    Ok(())
}

/// Waits until the state word leaves "initialising", and returns what it holds then
/// (`READY`, or a corrupted value that validation reports).
fn wait_ready(
    map: &MmapRaw,
    start: Instant,
    deadline: Option<Instant>,
    path: &Path,
) -> Result<u32, Error> {
    let state = state_word(map);
    loop {
        // SYNC(header-ready): Acquire; pairs with the Release store in `create_at`: once
        // READY is seen, every header field the creator wrote is visible.
        let value = state.load(Ordering::Acquire);
        if value != STATE_INIT {
            return Ok(value);
        }
        pause_until(start, deadline, path)?;
    }
}

/// The header's state word, in place in the mapping.
fn state_word(map: &MmapRaw) -> &AtomicU32 {
    #[cfg(loom)]
    {
        let _ = map;
        panic!(
            "shm-alloc segments cannot be used under cfg(loom): loom's atomics cannot live in a mapping"
        );
    }
    #[cfg(not(loom))]
    // SAFETY: (1) the mapping is at least HEADER_LEN bytes (checked before mapping), so
    // bytes STATE_OFFSET..STATE_END are inside it; (2) the mapping is page-aligned and
    // STATE_OFFSET is a multiple of 4 (asserted in header.rs), and `AtomicU32` has size 4
    // and alignment 4 (asserted above), so the pointer is aligned; (3) any 4 bytes are a
    // valid `AtomicU32`, which has `u32`'s representation; (4) the mapping lives as long
    // as `map`, to which the returned borrow is tied; (5) this crate accesses these bytes
    // only through this atomic (the header copies skip them), so nothing non-atomic
    // races with it in this process.
    unsafe {
        &*map.as_ptr().add(STATE_OFFSET).cast::<AtomicU32>()
    }
}

/// Copies `raw` into the mapping's header page, except the state word.
fn write_header(map: &MmapRaw, raw: &RawHeader) {
    let src = raw.as_bytes().as_ptr();
    let dst = map.as_mut_ptr();
    // SAFETY: (1) `src` is valid for HEADER_LEN reads (a `RawHeader` is HEADER_LEN bytes,
    // asserted); `dst` is valid for HEADER_LEN writes (the read-write shared mapping is at
    // least that long); (2) the ranges do not overlap: a local value and a mapping; (3)
    // bytes need no alignment; (4) the copied ranges skip the state word, which is only
    // accessed atomically, and no one reads the other bytes before seeing READY (stored
    // after this, SYNC(header-ready)), so these plain writes race with no read.
    unsafe {
        ptr::copy_nonoverlapping(src, dst, STATE_OFFSET);
        ptr::copy_nonoverlapping(
            src.add(STATE_END),
            dst.add(STATE_END),
            HEADER_LEN - STATE_END,
        );
    }
}

/// A copy of the mapping's header page, with `state` (loaded atomically by the caller)
/// in place of the state word.
fn read_header(map: &MmapRaw, state: u32) -> RawHeader {
    let mut raw = RawHeader::new_zeroed();
    let src = map.as_ptr();
    let dst = raw.as_mut_bytes().as_mut_ptr();
    // SAFETY: (1) `src` is valid for HEADER_LEN reads (the mapping is at least that long);
    // `dst` for HEADER_LEN writes (a local `RawHeader`); (2) they do not overlap; (3)
    // bytes need no alignment, and any bytes are a valid `RawHeader` (`FromBytes`); (4)
    // the copied ranges skip the state word; the creator wrote the other bytes before
    // READY, which the caller has observed with Acquire (SYNC(header-ready)), and never
    // writes them again, so these plain reads race with no write.
    unsafe {
        ptr::copy_nonoverlapping(src, dst, STATE_OFFSET);
        ptr::copy_nonoverlapping(
            src.add(STATE_END),
            dst.add(STATE_END),
            HEADER_LEN - STATE_END,
        );
    }
    raw.state = state;
    raw
}

fn check_role(role: u32) -> Result<(), Error> {
    if role < MAX_ROLES {
        Ok(())
    } else {
        Err(Error::InvalidRole { role })
    }
}

/// `fcntl(cmd)` with a write lock on the byte of `role`: `F_OFD_SETLK` takes it (or fails
/// with `EAGAIN`/`EACCES` if held), `F_OFD_GETLK` returns what conflicts with it
/// (`l_type == F_UNLCK` if nothing does).
fn ofd_lock(file: &File, cmd: libc::c_int, role: u32) -> io::Result<libc::flock> {
    ofd_lock_byte(file, cmd, libc::F_WRLCK, ROLE_LOCK_BASE + u64::from(role))
}

/// `fcntl(cmd)` with a lock of type `kind` (`F_WRLCK`, or `F_UNLCK` to release) on byte
/// `byte` of the file.
fn ofd_lock_byte(
    file: &File,
    cmd: libc::c_int,
    kind: libc::c_int,
    byte: u64,
) -> io::Result<libc::flock> {
    // SAFETY: `flock` is a C struct of integers, for which all-zero bytes are a valid
    // value; zeroing also clears the padding fields some architectures add.
    let mut lock: libc::flock = unsafe { core::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte as libc::off_t;
    lock.l_len = 1;
    lock.l_pid = 0; // OFD locks require 0 here.
    // SAFETY: the descriptor is open for the whole call (borrowed from `file`), and
    // `&mut lock` is a valid, exclusive `struct flock` that `F_OFD_SETLK` reads and
    // `F_OFD_GETLK` overwrites.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut lock as *mut libc::flock) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(lock)
    }
}

/// The first bytes (up to 8, zero-padded) of a file of `len` bytes shorter than a header
/// when they are not the start of the segment magic: the file is not a segment.
/// `None` when they are, or cannot be read.
fn foreign_magic(file: &File, len: u64) -> Option<[u8; 8]> {
    use std::os::unix::fs::FileExt;
    let n = len.min(8) as usize;
    let mut found = [0u8; 8];
    file.read_exact_at(&mut found[..n], 0).ok()?;
    (found[..n] != crate::header::MAGIC[..n]).then_some(found)
}

/// The byte of the header page whose lock the creator holds from the file's creation
/// until READY (in the reserved zeros below the role lock bytes).
const CREATION_LOCK: u64 = ROLE_LOCK_BASE - 1;

/// What [`Segment::survey`] found.
#[derive(Debug, Clone)]
pub struct Survey {
    /// The file.
    pub path: PathBuf,
    /// Its length, in bytes.
    pub len: u64,
    /// Its owner.
    pub owner_uid: u32,
    /// Ready, initialising, stale or corrupt.
    pub state: SurveyState,
    /// The header, once ready and valid.
    pub info: Option<HeaderInfo>,
    /// The roles held now.
    pub live_roles: Vec<u32>,
}

/// The state of a segment file, as [`Segment::survey`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SurveyState {
    /// The header is published and valid.
    Ready,
    /// Its creator is writing the header (it holds the creation lock).
    Initialising,
    /// Not ready, and nobody holds the creation lock: its creator died before READY.
    Stale,
    /// The header does not validate: why.
    Corrupt(String),
}

/// Whether a `lock:` line of `/proc/<pid>/fdinfo/<fd>` is a write lock over `byte`:
/// `lock:\t1: OFDLCK ADVISORY  WRITE -1 00:1b:506712 2048 2048` (the range's first and
/// last byte, or `EOF`).
fn lock_covers(line: &str, byte: u64) -> bool {
    let Some(rest) = line.strip_prefix("lock:") else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if !fields.contains(&"WRITE") || fields.len() < 2 {
        return false;
    }
    let start = fields[fields.len() - 2].parse::<u64>();
    let end = match fields[fields.len() - 1] {
        "EOF" => Ok(u64::MAX),
        end => end.parse::<u64>(),
    };
    matches!((start, end), (Ok(start), Ok(end)) if start <= byte && byte <= end)
}

#[cfg(test)]
mod tests {
    use super::*;

    std::thread_local! {
        /// How many times `open_or_create_with` finds its file removed between its
        /// failed create and its open (fault injection, this thread only).
        static VANISH: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
    }

    /// The fault of `VANISH`: removes the file if asked to.
    pub(super) fn vanish_before_open(path: &Path) {
        if VANISH.with(|v| v.replace(v.get().saturating_sub(1))) > 0 {
            fs::remove_file(path).unwrap();
        }
    }

    /// A segment removed between `open_or_create`'s failed create and its open (its
    /// last user removed it) is created afresh: the call goes round again instead of
    /// failing with `NotFound`.
    #[test]
    #[cfg_attr(miri, ignore = "creates files")]
    fn open_or_create_goes_round_again_when_the_file_vanishes_before_its_open() {
        let path = std::env::temp_dir().join(format!("shm-vanish-{}", std::process::id()));
        let loc = Location::Path(path.clone());
        let spec = SegmentSpec {
            kind: Kind::Spsc,
            capacity: 4,
            slot_size: 8,
            slot_align: 8,
            type_fingerprint: 7,
            type_name: "vanish",
            data_len: 4096,
            entries: 0,
        };
        let expect = Expect::from(&spec);
        let opts = SegmentOptions::default();
        let first = Segment::create(&loc, &spec, &opts).unwrap();
        // SAFETY: the data region is 4096 bytes; only this thread touches it.
        unsafe { first.data().as_ptr().write(7) };
        VANISH.with(|v| v.set(1));
        let (second, created) =
            Segment::open_or_create_with(&loc, &spec, &expect, &opts, |_| {}).unwrap();
        assert_eq!(VANISH.with(core::cell::Cell::get), 0, "the fault fired");
        assert!(created, "made afresh after the file vanished");
        // SAFETY: as above, for the second segment's region.
        let fresh = unsafe { second.data().as_ptr().read() };
        assert_eq!(
            fresh, 0,
            "a new file, not the removed one still mapped by `first`"
        );
        assert!(path.exists());
        drop((first, second));
        Segment::remove(&loc).unwrap();
    }

    /// A hugetlbfs mount's block size is its huge page size: any multiple of the header
    /// page; 0, or a size that is not one, is refused as no huge pages.
    #[test]
    fn a_huge_page_size_is_a_nonzero_multiple_of_the_page() {
        let path = Path::new("/mnt/huge/x");
        let size = |block_size: u64| {
            FsInfo {
                hugetlbfs: true,
                block_size,
            }
            .huge_page_size(path)
        };
        assert_eq!(size(2 << 20).ok(), Some(2 << 20));
        assert_eq!(size(1 << 30).ok(), Some(1 << 30));
        assert_eq!(size(4096).ok(), Some(4096));
        for refused in [0, 1, 4095, 3 * 4096 + 1] {
            assert!(
                matches!(
                    size(refused),
                    Err(Error::HugePagesUnavailable { reason, .. })
                        if reason.contains(&format!("block size of {refused} bytes"))
                ),
                "{refused}"
            );
        }
    }

    /// A failed open says why by what is at the path: nothing (`NotFound`), a directory
    /// (`NotARegularFile`), or a regular file that could not be opened (the I/O error,
    /// never "not a regular file").
    #[test]
    #[cfg_attr(miri, ignore = "reads the file system")]
    fn a_failed_open_is_told_by_what_is_at_the_path() {
        let dir = std::env::temp_dir().join(format!("shm-open-error-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("regular");
        fs::write(&file, b"x").unwrap();
        let denied = || io::Error::from_raw_os_error(libc::EACCES);
        assert!(matches!(
            open_error(file.clone(), denied()),
            Error::Io { op: "open", .. }
        ));
        assert!(matches!(
            open_error(dir.clone(), denied()),
            Error::NotARegularFile {
                file_type: "directory",
                ..
            }
        ));
        assert!(matches!(
            open_error(
                dir.join("missing"),
                io::Error::from(io::ErrorKind::NotFound)
            ),
            Error::NotFound { .. }
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fdinfo_lock_lines_are_read_by_their_range_and_kind() {
        let line = |range: &str, kind: &str| {
            format!("lock:\t1: OFDLCK ADVISORY  {kind} -1 00:1b:506712 {range}")
        };
        assert!(lock_covers(&line("2048 2048", "WRITE"), 2048));
        assert!(!lock_covers(&line("2048 2048", "WRITE"), 2049));
        assert!(!lock_covers(&line("2049 2050", "WRITE"), 2048));
        assert!(lock_covers(&line("2040 EOF", "WRITE"), 9999));
        assert!(!lock_covers(&line("2048 2048", "READ"), 2048));
        assert!(!lock_covers("pos:\t0", 2048));
        assert!(!lock_covers("lock:\tWRITE", 0), "too few fields: no range");
        assert!(!lock_covers(
            "lock:\t1: OFDLCK ADVISORY WRITE -1 00:1b:1 x y",
            2048
        ));
    }

    #[test]
    fn names_map_under_dev_shm() {
        assert_eq!(Location::from("feed").path(), Path::new("/dev/shm/feed"));
        assert_eq!(
            Location::from(String::from("a.b-c"))
                .checked_path()
                .unwrap(),
            Path::new("/dev/shm/a.b-c")
        );
        assert_eq!(
            Location::from(Path::new("rel/x")).checked_path().unwrap(),
            Path::new("rel/x")
        );
        assert_eq!(
            Location::from(PathBuf::from("/tmp/x")).to_string(),
            "/tmp/x"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", ".", "..", "a/b", "/abs", "nul\0"] {
            match Location::from(name).checked_path() {
                Err(Error::InvalidName { name: found }) => assert_eq!(found, name),
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert!(Location::from("...").checked_path().is_ok());
    }

    #[test]
    fn options_default_and_builders() {
        let d = SegmentOptions::default();
        assert_eq!(d.mode, 0o600);
        assert!(!d.allow_foreign_owner && !d.prefault && !d.mlock && !d.huge_pages);
        assert_eq!(d.open_timeout, Duration::from_secs(1));
        let o = SegmentOptions::default()
            .mode(0o640)
            .allow_foreign_owner(true)
            .prefault(true)
            .mlock(true)
            .huge_pages(true)
            .open_timeout(Duration::ZERO);
        assert_eq!(o.mode, 0o640);
        assert!(o.allow_foreign_owner && o.prefault && o.mlock && o.huge_pages);
        assert_eq!(o.open_timeout, Duration::ZERO);
    }

    #[test]
    fn roles_are_range_checked() {
        assert!(check_role(0).is_ok());
        assert!(check_role(MAX_ROLES - 1).is_ok());
        assert!(matches!(
            check_role(MAX_ROLES),
            Err(Error::InvalidRole { role: MAX_ROLES })
        ));
    }

    #[test]
    fn expect_from_spec_requires_capacity() {
        let spec = SegmentSpec {
            kind: Kind::Pool,
            capacity: 3,
            slot_size: 64,
            slot_align: 64,
            type_fingerprint: 0,
            type_name: "",
            data_len: 0,
            entries: 0,
        };
        let expect = Expect::from(&spec);
        assert_eq!(expect.capacity, Some(3));
        assert_eq!(expect.kind, Kind::Pool);
        assert_eq!(expect.slot_align, 64);
    }
}
