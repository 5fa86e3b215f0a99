//! The segment header: the first 4096 bytes of every segment file, and its validation.
//!
//! # Layout
//!
//! All integers are in the machine's byte order (segments never leave the machine that
//! made them); offsets and sizes are in bytes.
//!
//! | offset | size | field              | contents                                                    |
//! |-------:|-----:|--------------------|-------------------------------------------------------------|
//! |      0 |    8 | `magic`            | `b"SHMTRNS\0"`                                              |
//! |      8 |    4 | `layout_version`   | `u32`, [`LAYOUT_VERSION`] (3)                               |
//! |     12 |    4 | `kind`             | `u32`, a [`Kind`] value                                     |
//! |     16 |    4 | `state`            | atomic `u32`: 0 while initialising, `READY` once published  |
//! |     20 |    4 | `entries`          | `u32`: participant table entries of the data region, 0 if none |
//! |     24 |    8 | `capacity`         | `u64`: slots, bytes or chunks, meaning per kind             |
//! |     32 |    8 | `slot_size`        | `u64`, bytes                                                |
//! |     40 |    8 | `slot_align`       | `u64`, bytes                                                |
//! |     48 |    8 | `type_fingerprint` | `u64`, 0 for untyped kinds                                  |
//! |     56 |    8 | `data_len`         | `u64`, bytes of data after the header page; a multiple of 4096 |
//! |     64 |    8 | `creator_pid`      | `u64`                                                       |
//! |     72 |    8 | `created_unix_ns`  | `u64`, nanoseconds since the Unix epoch                     |
//! |     80 |   64 | `type_name`        | UTF-8, NUL-padded, for error messages only                  |
//! |    144 |    8 | `checksum`         | `u64`: FNV-1a of bytes 0..144, the state word taken as 0    |
//! |    152 | 1896 | reserved           | zero                                                        |
//! |   2048 | 1024 | role lock bytes    | never written: byte `2048 + r` is locked by the holder of role `r` |
//! |   3072 | 1024 | reserved           | zero                                                        |
//! |   4096 |  ... | data region        | `data_len` bytes, zero at creation                          |
//!
//! # State word
//!
//! | value        | meaning                                   | who writes it                     |
//! |--------------|-------------------------------------------|-----------------------------------|
//! | 0            | initialising (what `ftruncate` leaves)    | nobody: the file starts zeroed    |
//! | `READY`      | every other field is written and final    | the creator, once, with Release   |
//! | anything else| corrupted                                 | nobody                            |
//!
//! No field changes after `READY`. The checksum covers every other field of the first 144
//! bytes, so that a near-right word written into a header (a participant count of 2
//! where the data region was laid out for 1) is refused, not laid over the wrong bytes.

use std::path::Path;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::error::Error;
use crate::hash::{FNV_OFFSET, fnv1a};
use crate::segment::{Expect, MAX_ROLES, SegmentSpec};

/// The first eight bytes of every segment file.
pub(crate) const MAGIC: [u8; 8] = *b"SHMTRNS\0";

/// The header layout this crate writes, and the only one it reads.
pub const LAYOUT_VERSION: u32 = 3;

/// `state`: the creator is still writing the header (all-zero, as a new file starts).
pub(crate) const STATE_INIT: u32 = 0;

/// `state`: the header is complete and final. The ASCII bytes `RDY!`, so that a stray
/// zero or small integer is never taken for it.
pub(crate) const STATE_READY: u32 = u32::from_le_bytes(*b"RDY!");

/// Length of the header page, in bytes; the data region starts at this offset.
pub(crate) const HEADER_LEN: usize = 4096;

/// Offset of the byte locked for role 0; role `r` locks byte `ROLE_LOCK_BASE + r`.
pub(crate) const ROLE_LOCK_BASE: u64 = 2048;

/// Bytes of `type_name` kept in the header.
pub(crate) const TYPE_NAME_LEN: usize = 64;

/// Offset of the state word.
pub(crate) const STATE_OFFSET: usize = core::mem::offset_of!(RawHeader, state);

/// One past the state word.
pub(crate) const STATE_END: usize = STATE_OFFSET + 4;

/// Bytes of the header the checksum covers: every field before it.
pub(crate) const CHECKED_LEN: usize = 144;

/// The header page as plain data, used to build the header before copying it into the
/// mapping, and to hold a copy taken from a mapping for validation. The `state` word
/// is never copied either way: in the mapping it is accessed only atomically (see
/// `segment.rs`); in a copy it holds the value an atomic load returned.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
pub(crate) struct RawHeader {
    pub(crate) magic: [u8; 8],
    pub(crate) layout_version: u32,
    pub(crate) kind: u32,
    pub(crate) state: u32,
    pub(crate) entries: u32,
    pub(crate) capacity: u64,
    pub(crate) slot_size: u64,
    pub(crate) slot_align: u64,
    pub(crate) type_fingerprint: u64,
    pub(crate) data_len: u64,
    pub(crate) creator_pid: u64,
    pub(crate) created_unix_ns: u64,
    pub(crate) type_name: [u8; TYPE_NAME_LEN],
    pub(crate) checksum: u64,
    pub(crate) reserved0: [u8; 1896],
    pub(crate) role_locks: [u8; MAX_ROLES as usize],
    pub(crate) reserved1: [u8; 1024],
}

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<RawHeader>() == HEADER_LEN);
    assert!(align_of::<RawHeader>() == 8);
    assert!(offset_of!(RawHeader, magic) == 0);
    assert!(offset_of!(RawHeader, layout_version) == 8);
    assert!(offset_of!(RawHeader, kind) == 12);
    assert!(offset_of!(RawHeader, state) == 16);
    assert!(offset_of!(RawHeader, entries) == 20);
    assert!(offset_of!(RawHeader, capacity) == 24);
    assert!(offset_of!(RawHeader, slot_size) == 32);
    assert!(offset_of!(RawHeader, slot_align) == 40);
    assert!(offset_of!(RawHeader, type_fingerprint) == 48);
    assert!(offset_of!(RawHeader, data_len) == 56);
    assert!(offset_of!(RawHeader, creator_pid) == 64);
    assert!(offset_of!(RawHeader, created_unix_ns) == 72);
    assert!(offset_of!(RawHeader, type_name) == 80);
    assert!(offset_of!(RawHeader, checksum) == CHECKED_LEN);
    assert!(offset_of!(RawHeader, reserved0) == 152);
    assert!(offset_of!(RawHeader, role_locks) == ROLE_LOCK_BASE as usize);
    assert!(offset_of!(RawHeader, reserved1) == 3072);
    // The state word must be 4-aligned within the (page-aligned) mapping.
    assert!(STATE_OFFSET % 4 == 0);
};

impl RawHeader {
    /// The header a creator writes for `spec`, with `data_len` already rounded and
    /// `state` = initialising.
    pub(crate) fn new(
        spec: &SegmentSpec,
        data_len: u64,
        creator_pid: u64,
        created_unix_ns: u64,
    ) -> Self {
        let mut raw = Self::new_zeroed();
        raw.magic = MAGIC;
        raw.layout_version = LAYOUT_VERSION;
        raw.kind = spec.kind.as_u32();
        raw.state = STATE_INIT;
        raw.capacity = spec.capacity;
        raw.slot_size = spec.slot_size;
        raw.slot_align = spec.slot_align;
        raw.type_fingerprint = spec.type_fingerprint;
        raw.data_len = data_len;
        raw.creator_pid = creator_pid;
        raw.created_unix_ns = created_unix_ns;
        raw.type_name = encode_type_name(spec.type_name);
        raw.entries = spec.entries;
        raw.checksum = raw.sum();
        raw
    }

    /// The checksum of this header: FNV-1a over its first [`CHECKED_LEN`] bytes, the
    /// state word taken as 0 (it is the one field that changes, once, at `READY`).
    pub(crate) fn sum(&self) -> u64 {
        let bytes = &self.as_bytes()[..CHECKED_LEN];
        let hash = fnv1a(FNV_OFFSET, &bytes[..STATE_OFFSET]);
        let hash = fnv1a(hash, &[0; 4]);
        fnv1a(hash, &bytes[STATE_END..])
    }

    /// Checks this header copy against `expect` and the file length, in the order the
    /// attach protocol fixes (magic, version, checksum, state, kind, capacity, slot size
    /// and alignment, type, participant entries, data length, file size), and returns
    /// the validated fields.
    ///
    /// Pure: any byte pattern gives `Ok` or a typed error, never a panic.
    pub(crate) fn validate(
        &self,
        expect: &Expect,
        file_len: u64,
        path: &Path,
    ) -> Result<HeaderInfo, Error> {
        let path_buf = || path.to_path_buf();
        if self.magic != MAGIC {
            return Err(Error::BadMagic {
                path: path_buf(),
                found: self.magic,
            });
        }
        if self.layout_version > LAYOUT_VERSION {
            return Err(Error::VersionTooNew {
                path: path_buf(),
                found: self.layout_version,
                supported: LAYOUT_VERSION,
            });
        }
        if self.layout_version != LAYOUT_VERSION {
            return Err(Error::VersionMismatch {
                path: path_buf(),
                found: self.layout_version,
                expected: LAYOUT_VERSION,
            });
        }
        let sum = self.sum();
        if self.checksum != sum {
            return Err(Error::Corrupted {
                path: path_buf(),
                what: format!(
                    "header checksum is {:#018x}, its fields sum to {sum:#018x}: a header \
                     field was written after creation",
                    self.checksum
                ),
            });
        }
        if self.state != STATE_READY {
            return Err(Error::Corrupted {
                path: path_buf(),
                what: format!(
                    "state word is {:#010x}, expected 0 (initialising) or {STATE_READY:#010x} (ready)",
                    self.state
                ),
            });
        }
        let mismatch = |field: &'static str, expected: String, found: String| Error::Mismatch {
            path: path_buf(),
            field,
            expected,
            found,
        };
        let kind = match Kind::try_from(self.kind) {
            Ok(kind) if kind == expect.kind => kind,
            Ok(kind) => {
                return Err(mismatch("kind", expect.kind.to_string(), kind.to_string()));
            }
            Err(UnknownKind(value)) => {
                return Err(mismatch(
                    "kind",
                    expect.kind.to_string(),
                    format!("unknown kind {value}"),
                ));
            }
        };
        if let Some(capacity) = expect.capacity {
            if self.capacity != capacity {
                return Err(mismatch(
                    "capacity",
                    capacity.to_string(),
                    self.capacity.to_string(),
                ));
            }
        }
        if self.slot_size != expect.slot_size {
            return Err(mismatch(
                "slot_size",
                format!("{} bytes", expect.slot_size),
                format!("{} bytes", self.slot_size),
            ));
        }
        if self.slot_align != expect.slot_align {
            return Err(mismatch(
                "slot_align",
                format!("{} bytes", expect.slot_align),
                format!("{} bytes", self.slot_align),
            ));
        }
        let type_name = decode_type_name(&self.type_name);
        if self.type_fingerprint != expect.type_fingerprint {
            return Err(mismatch(
                "type_fingerprint",
                format!(
                    "{:#018x} (type {})",
                    expect.type_fingerprint, expect.type_name
                ),
                format!("{:#018x} (type {type_name})", self.type_fingerprint),
            ));
        }
        if let Some(entries) = expect.entries {
            if self.entries != entries {
                return Err(mismatch(
                    "entries",
                    format!("{entries} participant entries"),
                    format!("{} participant entries", self.entries),
                ));
            }
        }
        if self.data_len % HEADER_LEN as u64 != 0 {
            return Err(Error::Corrupted {
                path: path_buf(),
                what: format!(
                    "data_len is {} bytes, expected a multiple of {HEADER_LEN}",
                    self.data_len
                ),
            });
        }
        let expected_len = match (HEADER_LEN as u64).checked_add(self.data_len) {
            Some(len) if len <= isize::MAX as u64 => len,
            _ => {
                return Err(Error::Corrupted {
                    path: path_buf(),
                    what: format!(
                        "data_len is {} bytes, more than any mapping can hold",
                        self.data_len
                    ),
                });
            }
        };
        if file_len < expected_len {
            return Err(Error::Truncated {
                path: path_buf(),
                expected: expected_len,
                found: file_len,
            });
        }
        if file_len > expected_len {
            return Err(Error::Corrupted {
                path: path_buf(),
                what: format!(
                    "file is {file_len} bytes, expected {expected_len} (the header page plus \
                     data_len {})",
                    self.data_len
                ),
            });
        }
        Ok(HeaderInfo {
            kind,
            layout_version: self.layout_version,
            capacity: self.capacity,
            slot_size: self.slot_size,
            slot_align: self.slot_align,
            type_fingerprint: self.type_fingerprint,
            type_name,
            creator_pid: self.creator_pid,
            created_unix_ns: self.created_unix_ns,
            data_len: self.data_len,
            entries: self.entries,
        })
    }
}

/// The first [`TYPE_NAME_LEN`] bytes of `name`, cut at a character boundary, NUL-padded.
pub(crate) fn encode_type_name(name: &str) -> [u8; TYPE_NAME_LEN] {
    let mut end = name.len().min(TYPE_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = [0u8; TYPE_NAME_LEN];
    out[..end].copy_from_slice(&name.as_bytes()[..end]);
    out
}

/// The bytes of `raw` up to the first NUL, as UTF-8 with invalid sequences replaced.
pub(crate) fn decode_type_name(raw: &[u8; TYPE_NAME_LEN]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// What a segment holds: the header's `kind` field.
///
/// The numeric values are part of the file format and never change.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A typed ring with one producer and one consumer.
    Spsc = 1,
    /// A typed ring with many producers and many consumers.
    Mpmc = 2,
    /// A ring of variable-size frames, one producer and one consumer.
    Stream = 3,
    /// A pool of chunks named by offset.
    Pool = 4,
    /// A typed ring with one publisher and many subscribers that each see every message.
    Broadcast = 5,
    /// The call slots of a request/response service: its clients' requests and
    /// responses, read and written in place.
    Service = 6,
    /// The counters of a bridge between a ring and the network (messages forwarded,
    /// dropped, refused, lost), kept where `shm inspect` reads them.
    Bridge = 7,
}

impl Kind {
    /// The value stored in the header.
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The lower-case name used in messages: `"spsc"`, `"mpmc"`, `"stream"`, `"pool"`,
    /// `"broadcast"`, `"service"` or `"bridge"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Spsc => "spsc",
            Kind::Mpmc => "mpmc",
            Kind::Stream => "stream",
            Kind::Pool => "pool",
            Kind::Broadcast => "broadcast",
            Kind::Service => "service",
            Kind::Bridge => "bridge",
        }
    }
}

impl core::fmt::Display for Kind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Kind> for u32 {
    fn from(kind: Kind) -> u32 {
        kind.as_u32()
    }
}

/// A `u32` that is no [`Kind`]'s value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown segment kind {0}: expected 1 (spsc), 2 (mpmc), 3 (stream), 4 (pool), \
     5 (broadcast), 6 (service) or 7 (bridge)"
)]
pub struct UnknownKind(pub u32);

impl RawHeader {
    /// Validates the header as [`validate`](Self::validate) does, against what the
    /// header itself says (any kind, type, capacity and entries): for a tool that lists
    /// segments of every kind without attaching.
    pub(crate) fn validate_own(&self, file_len: u64, path: &Path) -> Result<HeaderInfo, Error> {
        let kind = Kind::try_from(self.kind).map_err(|UnknownKind(value)| Error::Corrupted {
            path: path.to_path_buf(),
            what: format!("unknown kind {value}"),
        })?;
        let own = Expect {
            kind,
            capacity: None,
            slot_size: self.slot_size,
            slot_align: self.slot_align,
            type_fingerprint: self.type_fingerprint,
            type_name: "its own",
            entries: None,
        };
        self.validate(&own, file_len, path)
    }
}

impl TryFrom<u32> for Kind {
    type Error = UnknownKind;

    fn try_from(value: u32) -> Result<Self, UnknownKind> {
        match value {
            1 => Ok(Kind::Spsc),
            2 => Ok(Kind::Mpmc),
            3 => Ok(Kind::Stream),
            4 => Ok(Kind::Pool),
            5 => Ok(Kind::Broadcast),
            6 => Ok(Kind::Service),
            7 => Ok(Kind::Bridge),
            other => Err(UnknownKind(other)),
        }
    }
}

/// A validated copy of a segment's header, from [`Segment::header`](crate::Segment::header).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderInfo {
    /// What the segment holds.
    pub kind: Kind,
    /// The header layout version, [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// Slots, bytes or chunks, meaning per kind.
    pub capacity: u64,
    /// Size of one slot, in bytes.
    pub slot_size: u64,
    /// Alignment of a slot, in bytes.
    pub slot_align: u64,
    /// Fingerprint of the message type, 0 for untyped kinds.
    pub type_fingerprint: u64,
    /// The message type's name as the creator gave it, cut to 64 bytes; for messages
    /// only (types are matched by fingerprint).
    pub type_name: String,
    /// Process id of the creator, at creation time (it may have exited since, and the
    /// id may have been reused).
    pub creator_pid: u64,
    /// Creation time, in nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// Length of the data region after the header page, in bytes; a multiple of 4096.
    pub data_len: u64,
    /// Participant table entries the data region lays out (0 for a kind without one).
    pub entries: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SegmentSpec {
        SegmentSpec {
            kind: Kind::Mpmc,
            capacity: 8,
            slot_size: 24,
            slot_align: 8,
            type_fingerprint: 0x1234,
            type_name: "demo::Tick",
            data_len: 8 * 24,
            entries: 0,
        }
    }

    fn ready(spec: &SegmentSpec) -> RawHeader {
        let mut raw = RawHeader::new(spec, 4096, 42, 7);
        raw.state = STATE_READY;
        raw
    }

    const FILE_LEN: u64 = 8192;

    /// `raw` with its checksum made right again, for tests of the checks after it.
    fn resealed(raw: &RawHeader) -> RawHeader {
        let mut copy = RawHeader::read_from_bytes(raw.as_bytes()).unwrap();
        copy.checksum = copy.sum();
        copy
    }

    #[test]
    fn a_field_written_after_creation_fails_the_checksum() {
        let spec = SegmentSpec {
            entries: 1,
            ..spec()
        };
        let expect = Expect {
            entries: None,
            ..Expect::from(&spec)
        };
        let path = Path::new("/x");
        let mut raw = ready(&spec);
        assert!(raw.validate(&expect, FILE_LEN, path).is_ok());
        raw.entries = 2; // a near-right participant count: another layout
        let err = raw.validate(&expect, FILE_LEN, path).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupted { what, .. } if what.contains("checksum")),
            "{err}"
        );
        // Every byte of the checked fields is covered, the state word excepted.
        for at in (0..CHECKED_LEN).filter(|at| !(STATE_OFFSET..STATE_END).contains(at)) {
            let mut bytes = ready(&spec).as_bytes().to_vec();
            bytes[at] ^= 0x10;
            let raw = RawHeader::read_from_bytes(&bytes).unwrap();
            assert_ne!(raw.sum(), raw.checksum, "byte {at} is not covered");
        }
        raw.entries = 1;
        raw.state = STATE_INIT;
        assert_eq!(raw.sum(), raw.checksum, "the state word is not covered");
    }

    /// The checksum of `ready(&spec())`, layout version 3.
    const GOLDEN_CHECKSUM: u64 = 0xab84_29fd_18dd_502c;

    #[test]
    fn the_checksum_of_a_fixed_header_is_pinned() {
        // A change here breaks opening every existing segment: bump LAYOUT_VERSION.
        assert_eq!(ready(&spec()).checksum, GOLDEN_CHECKSUM);
    }

    #[test]
    fn valid_header_round_trips() {
        let spec = spec();
        let info = ready(&spec)
            .validate(&Expect::from(&spec), FILE_LEN, Path::new("/x"))
            .unwrap();
        assert_eq!(info.kind, Kind::Mpmc);
        assert_eq!(info.layout_version, LAYOUT_VERSION);
        assert_eq!(info.capacity, 8);
        assert_eq!(info.slot_size, 24);
        assert_eq!(info.slot_align, 8);
        assert_eq!(info.type_fingerprint, 0x1234);
        assert_eq!(info.type_name, "demo::Tick");
        assert_eq!(info.creator_pid, 42);
        assert_eq!(info.created_unix_ns, 7);
        assert_eq!(info.data_len, 4096);
    }

    #[test]
    fn checks_come_in_protocol_order() {
        let spec = spec();
        let expect = Expect::from(&spec);
        let path = Path::new("/x");
        let mut raw = ready(&spec);
        raw.capacity = 9;
        raw.kind = 77;
        raw.state = 5;
        raw.layout_version = LAYOUT_VERSION + 1;
        raw.magic[0] = b'X';
        let err = |raw: &RawHeader| resealed(raw).validate(&expect, FILE_LEN, path).unwrap_err();
        assert!(matches!(err(&raw), Error::BadMagic { found, .. } if found[0] == b'X'));
        raw.magic = MAGIC;
        assert!(matches!(
            err(&raw),
            Error::VersionTooNew {
                found,
                supported: LAYOUT_VERSION,
                ..
            } if found == LAYOUT_VERSION + 1
        ));
        raw.layout_version = 0;
        assert!(matches!(err(&raw), Error::VersionMismatch { found: 0, .. }));
        raw.layout_version = LAYOUT_VERSION;
        assert!(matches!(err(&raw), Error::Corrupted { what, .. } if what.contains("state")));
        raw.state = STATE_READY;
        assert!(matches!(
            err(&raw),
            Error::Mismatch { field: "kind", found, .. } if found == "unknown kind 77"
        ));
        raw.kind = Kind::Mpmc.as_u32();
        assert!(matches!(
            err(&raw),
            Error::Mismatch { field: "capacity", expected, found, .. } if expected == "8" && found == "9"
        ));
        let any_capacity = Expect {
            capacity: None,
            ..Expect::from(&spec)
        };
        assert!(
            resealed(&raw)
                .validate(&any_capacity, FILE_LEN, path)
                .is_ok()
        );
        let one_entry = Expect {
            entries: Some(1),
            ..any_capacity
        };
        assert!(matches!(
            resealed(&raw).validate(&one_entry, FILE_LEN, path),
            Err(Error::Mismatch {
                field: "entries",
                ..
            })
        ));
    }

    #[test]
    fn fingerprint_mismatch_names_both_types() {
        let spec = spec();
        let mut raw = ready(&spec);
        raw.type_fingerprint = 0x99;
        raw.type_name = encode_type_name("other::Quote");
        let err = resealed(&raw)
            .validate(&Expect::from(&spec), FILE_LEN, Path::new("/seg"))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("demo::Tick") && text.contains("other::Quote"),
            "{text}"
        );
        assert!(text.contains("/seg"), "{text}");
    }

    #[test]
    fn data_len_and_file_size_are_checked() {
        let spec = spec();
        let expect = Expect::from(&spec);
        let path = Path::new("/x");
        let mut raw = ready(&spec);
        assert!(matches!(
            raw.validate(&expect, 4096, path),
            Err(Error::Truncated {
                expected: 8192,
                found: 4096,
                ..
            })
        ));
        assert!(matches!(
            raw.validate(&expect, 12288, path),
            Err(Error::Corrupted { .. })
        ));
        raw.data_len = 100;
        assert!(matches!(
            resealed(&raw).validate(&expect, FILE_LEN, path),
            Err(Error::Corrupted { what, .. }) if what.contains("multiple")
        ));
        raw.data_len = u64::MAX - 4095;
        assert!(matches!(
            resealed(&raw).validate(&expect, FILE_LEN, path),
            Err(Error::Corrupted { what, .. }) if what.contains("more than any mapping")
        ));
        // The header page and data fit a u64, but not a mapping (`isize::MAX`): still
        // corrupt, never a truncated file waiting to grow.
        raw.data_len = 1 << 63;
        assert!(matches!(
            resealed(&raw).validate(&expect, u64::MAX, path),
            Err(Error::Corrupted { what, .. }) if what.contains("more than any mapping")
        ));
    }

    #[test]
    fn type_name_is_cut_at_a_char_boundary() {
        let long = "é".repeat(40); // 80 bytes, 2 per char
        let enc = encode_type_name(&long);
        assert_eq!(decode_type_name(&enc), "é".repeat(32));
        let odd = format!("a{}", "é".repeat(40)); // boundary at 65, cut back to 63
        assert_eq!(decode_type_name(&encode_type_name(&odd)).len(), 63);
        assert_eq!(decode_type_name(&[0xff; TYPE_NAME_LEN]).chars().count(), 64);
        assert_eq!(decode_type_name(&encode_type_name("")), "");
    }

    #[test]
    fn kind_conversions() {
        for kind in [
            Kind::Spsc,
            Kind::Mpmc,
            Kind::Stream,
            Kind::Pool,
            Kind::Broadcast,
            Kind::Service,
            Kind::Bridge,
        ] {
            assert_eq!(Kind::try_from(kind.as_u32()), Ok(kind));
            assert_eq!(u32::from(kind), kind as u32);
        }
        assert_eq!(Kind::Spsc.to_string(), "spsc");
        assert_eq!(Kind::Stream.to_string(), "stream");
        assert_eq!(Kind::try_from(0), Err(UnknownKind(0)));
        assert_eq!(Kind::Broadcast.to_string(), "broadcast");
        assert_eq!(Kind::Service.to_string(), "service");
        assert_eq!(Kind::Bridge.to_string(), "bridge");
        assert_eq!(Kind::try_from(8), Err(UnknownKind(8)));
        assert!(UnknownKind(8).to_string().contains("7 (bridge)"));
    }

    #[test]
    fn ready_is_not_a_small_number() {
        const { assert!(STATE_READY > 0xffff) };
        assert_eq!(&STATE_READY.to_le_bytes(), b"RDY!");
    }
}
