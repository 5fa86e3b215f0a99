//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Errors of `shm-alloc`: creating, opening and validating segments, claiming roles, and
/// loaning and receiving pool chunks.
///
/// Every variant that concerns a file names its path, and every validation failure says
/// what was expected and what was found, so that the message alone tells an operator
/// which file to look at and why it was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the segment file failed. The operating system's reason is the
    /// error's `source()` (printed by `{:#}` in anyhow, or by walking the chain), not
    /// repeated in its message.
    #[error("{op} failed on {}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operation that failed, such as `"open"` or `"ftruncate"`.
        op: &'static str,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// [`Segment::create`](crate::Segment::create) found a file at the path already.
    #[error(
        "cannot create segment {}: a file already exists there (open it, or remove it first)",
        path.display()
    )]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The segment file does not exist.
    #[error("segment {} not found", path.display())]
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// The path names a symbolic link; segments are never opened through one.
    #[error(
        "refusing to open segment {}: expected a regular file, found a symbolic link",
        path.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The path names something other than a regular file.
    #[error(
        "refusing to open segment {}: expected a regular file, found a {file_type}",
        path.display()
    )]
    NotARegularFile {
        /// The file.
        path: PathBuf,
        /// What it is: `"directory"`, `"FIFO"`, `"socket"`, `"character device"`,
        /// `"block device"` or `"unknown file type"`.
        file_type: &'static str,
    },
    /// The file belongs to another user, and the options did not allow that.
    #[error(
        "refusing to open segment {}: expected it to be owned by uid {expected} (this process's \
         effective uid), found uid {owner}; set `allow_foreign_owner` to accept it",
        path.display()
    )]
    ForeignOwner {
        /// The file.
        path: PathBuf,
        /// The uid that owns it.
        owner: u32,
        /// This process's effective uid.
        expected: u32,
    },
    /// The file is shorter than its header says (or than the header page itself).
    #[error("segment {} is truncated: expected {expected} bytes, found {found}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The length it should have, in bytes.
        expected: u64,
        /// Its length, in bytes.
        found: u64,
    },
    /// The creator did not publish the header within the open timeout: it is still
    /// initialising, or it died while doing so (then remove the file).
    #[error(
        "segment {} was not initialized after waiting {waited:?}: its creator is slow or died \
         while creating it (if so, remove the file)",
        path.display()
    )]
    NotInitialized {
        /// The file.
        path: PathBuf,
        /// How long the opener waited.
        waited: Duration,
    },
    /// The file does not start with the segment magic: it is not a segment.
    #[error(
        "{} is not a segment: expected magic \"{}\", found \"{}\"",
        path.display(),
        crate::header::MAGIC.escape_ascii(),
        found.escape_ascii()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first 8 bytes found.
        found: [u8; 8],
    },
    /// The segment was written by a newer version of this crate, with a layout this one
    /// does not know.
    #[error(
        "segment {} has layout version {found}, newer than the supported version {supported}: \
         upgrade this program",
        path.display()
    )]
    VersionTooNew {
        /// The file.
        path: PathBuf,
        /// The version in the header.
        found: u32,
        /// The version this crate writes and reads.
        supported: u32,
    },
    /// The segment was written with an older layout that this crate no longer reads.
    #[error(
        "segment {} has layout version {found}, expected version {expected}: recreate it",
        path.display()
    )]
    VersionMismatch {
        /// The file.
        path: PathBuf,
        /// The version in the header.
        found: u32,
        /// The version this crate writes and reads.
        expected: u32,
    },
    /// A header field holds a value no creator writes.
    #[error("segment {} is corrupted: {what}", path.display())]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// Which field, what it holds and what was expected.
        what: String,
    },
    /// A header field differs from what the opener expects (another kind of queue,
    /// another capacity, another message type...).
    #[error(
        "segment {} does not match: {field} expected {expected}, found {found}",
        path.display()
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The header field: `"kind"`, `"capacity"`, `"slot_size"`, `"slot_align"` or
        /// `"type_fingerprint"`.
        field: &'static str,
        /// The value the opener expects.
        expected: String,
        /// The value in the header.
        found: String,
    },
    /// Huge pages were asked for and cannot be had.
    #[error("huge pages unavailable for segment {}: {reason}", path.display())]
    HugePagesUnavailable {
        /// The file.
        path: PathBuf,
        /// Why, and what to do about it.
        reason: String,
    },
    /// Locking the mapping into memory (`mlock`) failed, usually because of
    /// `RLIMIT_MEMLOCK`.
    #[error(
        "mlock of {len} bytes of segment {} failed: {source}; RLIMIT_MEMLOCK is {limit} (raise it \
         with `ulimit -l`, systemd's LimitMEMLOCK=, or grant CAP_IPC_LOCK)",
        path.display()
    )]
    MlockFailed {
        /// The file.
        path: PathBuf,
        /// How many bytes were to be locked.
        len: u64,
        /// This process's soft `RLIMIT_MEMLOCK`, in words (`"65536 bytes"`, `"unlimited"`).
        limit: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The spec given to [`Segment::create`](crate::Segment::create) cannot be laid out.
    #[error("invalid spec for segment {}: {reason}", path.display())]
    InvalidSpec {
        /// The file that was to be created.
        path: PathBuf,
        /// What is wrong with the spec.
        reason: String,
    },
    /// Another holder (in this process or another) has the role.
    #[error(
        "role {role} of segment {} is taken: expected it free, found it held by a live open file \
         description",
        path.display()
    )]
    RoleTaken {
        /// The file.
        path: PathBuf,
        /// The role.
        role: u32,
    },
    /// The role number is out of range.
    #[error("invalid role {role}: expected a role below {max}", max = crate::MAX_ROLES)]
    InvalidRole {
        /// The role asked for.
        role: u32,
    },
    /// A segment name was empty, contained `/` or NUL, or was `.` or `..`.
    #[error(
        "invalid segment name {name:?}: expected a non-empty name without '/' or NUL, not \".\" \
         or \"..\" (to use a path, pass a `Location::Path`)"
    )]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// A pool has no free chunk in the size class that fits the loan. Never waited for:
    /// free a chunk, or size the pool for the peak.
    #[error(
        "pool exhausted: expected a free chunk of the {chunk_size}-byte class for a loan of \
         {len} bytes, found none"
    )]
    PoolExhausted {
        /// The size class that was empty, in bytes per chunk.
        chunk_size: u64,
        /// The loan asked for, in bytes.
        len: u64,
    },
    /// A loan is larger than the pool's largest size class.
    #[error("loan of {len} bytes is too large: expected at most {max} bytes, the largest chunk")]
    LoanTooLarge {
        /// The loan asked for, in bytes (or the alignment asked for, for a type aligned
        /// to more than a chunk).
        len: u64,
        /// The largest chunk (or the chunk alignment), in bytes.
        max: u64,
    },
    /// A `ShmOffset` names no chunk of the pool: corrupt, or from another pool.
    #[error("invalid pool offset {offset} (length {len}): {reason}")]
    InvalidOffset {
        /// The offset, in bytes from the pool's data region.
        offset: u64,
        /// The payload length it carries, in bytes.
        len: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `ShmOffset` names a chunk that is not in flight with its generation: received
    /// already, or reclaimed (and perhaps loaned again) after its receiver was found dead.
    #[error(
        "stale pool offset {offset}: expected the chunk in flight with generation \
         {generation}, found it {found}"
    )]
    StaleOffset {
        /// The offset, in bytes from the pool's data region.
        offset: u64,
        /// The generation it carries.
        generation: u32,
        /// The chunk's state, holder and generation.
        found: String,
    },
    /// Every participant slot of a pool is held by a live participant.
    #[error(
        "pool {} is full: expected a free participant slot, found all {participants} held",
        path.display()
    )]
    ParticipantsFull {
        /// The pool segment.
        path: PathBuf,
        /// Its participant slots.
        participants: u32,
    },
}

const _: () = {
    const fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Error>();
};
