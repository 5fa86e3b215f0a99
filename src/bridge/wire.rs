//! What a bridge puts on the network: one Zenoh sample per batch of messages, its
//! payload the messages' bytes, its attachment a header that names the message type and
//! numbers the messages.
//!
//! # Attachment (little endian)
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | `magic` | `0x424d_4853` (`"SHMB"`): a bridge's sample |
//! | 4 | 2 | `version` | 1 |
//! | 6 | 2 | `name_len` | bytes of the type name that follows the header |
//! | 8 | 8 | `fingerprint` | the message type's [`Message::FINGERPRINT`], or [`FRAMES`] |
//! | 16 | 8 | `stream` | the stream the sequence numbers count in (never 0) |
//! | 24 | 8 | `first` | the sequence number of the first message |
//! | 32 | 4 | `count` | messages in the payload |
//! | 36 | 4 | reserved | 0 |
//! | 40 | `name_len` | `name` | the message type's name, UTF-8 |
//!
//! # Payload
//!
//! A typed ring's batch: `count` messages of the type's size, back to back. A stream
//! ring's: `count` frames, each a `u32` length (little endian) and that many bytes.

use shm_ring::Message;

/// The magic number that starts every attachment: `"SHMB"` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SHMB");
/// The attachment format's version.
pub const VERSION: u16 = 1;
/// The size of the fixed part of an attachment, in bytes.
pub const HEADER_LEN: usize = 40;
/// The fingerprint of a stream ring's frames (any bytes, framed by length).
pub const FRAMES: u64 = shm_ring::fingerprint("shm_ring::stream frames", 0, 1);
/// The type name of a stream ring's frames.
pub const FRAMES_NAME: &str = "shm_ring::stream frames";

/// What a bridge's samples carry: a message type, or a stream ring's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The type's fingerprint ([`FRAMES`] for frames).
    pub fingerprint: u64,
    /// The type's name ([`FRAMES_NAME`] for frames).
    pub name: &'static str,
    /// The size of one message in bytes; `None` for frames, framed by length.
    pub size: Option<usize>,
}

impl Identity {
    /// The identity of messages of type `T`.
    #[must_use]
    pub fn of<T: Message>() -> Self {
        Identity {
            fingerprint: T::FINGERPRINT,
            name: T::TYPE_NAME,
            size: Some(size_of::<T>()),
        }
    }

    /// The identity of a stream ring's frames.
    #[must_use]
    pub fn frames() -> Self {
        Identity {
            fingerprint: FRAMES,
            name: FRAMES_NAME,
            size: None,
        }
    }
}

/// The header of a sample, as read from its attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The message type's fingerprint.
    pub fingerprint: u64,
    /// The stream the sequence numbers count in.
    pub stream: u64,
    /// The sequence number of the first message.
    pub first: u64,
    /// Messages in the payload.
    pub count: u32,
    /// The message type's name (invalid UTF-8 replaced).
    pub name: String,
}

/// Writes the attachment of a batch into `out` (cleared first).
pub fn encode(out: &mut Vec<u8>, identity: &Identity, stream: u64, first: u64, count: u32) {
    let name = identity.name.as_bytes();
    let name = &name[..name.len().min(u16::MAX as usize)];
    out.clear();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&identity.fingerprint.to_le_bytes());
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(name);
}

/// The payload of an acknowledgement: `stream` and `next` (little endian), the place an
/// inbound bridge has reached (everything of `stream` before `next` is in its ring).
#[must_use]
pub fn encode_ack(stream: u64, next: u64) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&stream.to_le_bytes());
    out[8..].copy_from_slice(&next.to_le_bytes());
    out
}

/// Reads an acknowledgement; `None` unless it is 16 bytes.
#[must_use]
pub fn decode_ack(bytes: &[u8]) -> Option<(u64, u64)> {
    let bytes: &[u8; 16] = bytes.try_into().ok()?;
    let (stream, next) = bytes.split_at(8);
    Some((
        u64::from_le_bytes(stream.try_into().ok()?),
        u64::from_le_bytes(next.try_into().ok()?),
    ))
}

/// Why a sample was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The sample has no attachment, or not a bridge's: published by something else.
    #[error("a sample that is not a bridge's (no attachment, or not one of this format)")]
    Foreign,
    /// A bridge's sample of an attachment version this bridge does not read.
    #[error("a sample of attachment version {0}, this bridge reads version 1")]
    Version(u16),
    /// Messages of another type than the ring's.
    #[error(
        "a sample of `{found}` (fingerprint {found_fingerprint:#018x}), but the ring carries \
         `{expected}` (fingerprint {expected_fingerprint:#018x})"
    )]
    Mismatch {
        /// The ring's type name.
        expected: &'static str,
        /// The ring's type fingerprint.
        expected_fingerprint: u64,
        /// The sample's type name.
        found: String,
        /// The sample's type fingerprint.
        found_fingerprint: u64,
    },
    /// A bridge's attachment with a header no bridge writes: stream 0, or no message.
    #[error("a sample whose header no bridge writes: stream {stream}, {count} messages")]
    Header {
        /// The stream it names.
        stream: u64,
        /// The messages it announces.
        count: u32,
    },
    /// A payload whose length does not hold `count` messages (or frames) exactly.
    #[error("a sample of {count} messages in a payload of {len} bytes, which does not hold them")]
    Malformed {
        /// The messages the header announces.
        count: u32,
        /// The payload's length, in bytes.
        len: usize,
    },
}

/// Reads an attachment, and checks that it is a bridge's, carries `expected`, and
/// numbers at least one message in a stream other than 0.
///
/// # Errors
///
/// A [`Refusal`]: not a bridge's attachment, another version, another type, or a
/// header no bridge writes.
pub fn decode(attachment: Option<&[u8]>, expected: &Identity) -> Result<Header, Refusal> {
    let bytes = attachment.ok_or(Refusal::Foreign)?;
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if bytes.len() < HEADER_LEN || u32_at(0) != MAGIC {
        return Err(Refusal::Foreign);
    }
    let version = u16_at(4);
    if version != VERSION {
        return Err(Refusal::Version(version));
    }
    let name_len = usize::from(u16_at(6));
    let name = bytes
        .get(HEADER_LEN..HEADER_LEN + name_len)
        .ok_or(Refusal::Foreign)?;
    let header = Header {
        fingerprint: u64_at(8),
        stream: u64_at(16),
        first: u64_at(24),
        count: u32_at(32),
        name: String::from_utf8_lossy(name).into_owned(),
    };
    if header.fingerprint != expected.fingerprint || header.name != expected.name {
        return Err(Refusal::Mismatch {
            expected: expected.name,
            expected_fingerprint: expected.fingerprint,
            found: header.name,
            found_fingerprint: header.fingerprint,
        });
    }
    if header.stream == 0 || header.count == 0 {
        return Err(Refusal::Header {
            stream: header.stream,
            count: header.count,
        });
    }
    Ok(header)
}

/// Splits a payload of `count` messages of `identity` into the messages' bytes.
///
/// # Errors
///
/// [`Refusal::Malformed`] if the payload does not hold exactly `count` messages.
pub fn split<'a>(
    payload: &'a [u8],
    count: u32,
    identity: &Identity,
) -> Result<Vec<&'a [u8]>, Refusal> {
    let malformed = Refusal::Malformed {
        count,
        len: payload.len(),
    };
    match identity.size {
        Some(size) => {
            if size == 0
                || payload.len() != size.checked_mul(count as usize).ok_or(malformed.clone())?
            {
                return Err(malformed);
            }
            Ok(payload.chunks_exact(size).collect())
        }
        None => {
            let mut frames = Vec::with_capacity(count.min(4096) as usize);
            let mut rest = payload;
            while !rest.is_empty() {
                let (len, tail) = rest.split_at_checked(4).ok_or(malformed.clone())?;
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                let (frame, tail) = tail.split_at_checked(len).ok_or(malformed.clone())?;
                frames.push(frame);
                if frames.len() > count as usize {
                    return Err(malformed);
                }
                rest = tail;
            }
            if frames.len() != count as usize {
                return Err(malformed);
            }
            Ok(frames)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attachment reads back as written; another type, another version, a short or
    /// foreign attachment are each refused with their reason.
    #[test]
    fn attachments_round_trip_and_refuse_what_they_must() {
        let id = Identity::of::<u64>();
        let mut out = Vec::new();
        encode(&mut out, &id, 9, 1000, 3);
        let header = decode(Some(&out), &id).unwrap();
        assert_eq!(
            header,
            Header {
                fingerprint: u64::FINGERPRINT,
                stream: 9,
                first: 1000,
                count: 3,
                name: "u64".into()
            }
        );
        let other = Identity::of::<i64>();
        assert!(matches!(
            decode(Some(&out), &other),
            Err(Refusal::Mismatch { expected: "i64", ref found, .. }) if found == "u64"
        ));
        assert_eq!(decode(None, &id), Err(Refusal::Foreign));
        assert_eq!(
            decode(Some(&out[..HEADER_LEN - 1]), &id),
            Err(Refusal::Foreign)
        );
        assert_eq!(
            decode(Some(&out[..HEADER_LEN + 1]), &id),
            Err(Refusal::Foreign)
        );
        let mut foreign = out.clone();
        foreign[0] ^= 1;
        assert_eq!(decode(Some(&foreign), &id), Err(Refusal::Foreign));
        let mut v2 = out.clone();
        v2[4] = 2;
        assert_eq!(decode(Some(&v2), &id), Err(Refusal::Version(2)));
        for (stream, count) in [(0, 3), (9, 0)] {
            encode(&mut out, &id, stream, 1000, count);
            assert_eq!(
                decode(Some(&out), &id),
                Err(Refusal::Header { stream, count })
            );
        }
        let text = Refusal::Mismatch {
            expected: "a",
            expected_fingerprint: 1,
            found: "b".into(),
            found_fingerprint: 2,
        }
        .to_string();
        assert!(text.contains("`b`") && text.contains("`a`"), "{text}");
    }

    /// An acknowledgement reads back as written; any other length is none.
    #[test]
    fn acknowledgements_round_trip() {
        let ack = encode_ack(7, u64::MAX - 1);
        assert_eq!(decode_ack(&ack), Some((7, u64::MAX - 1)));
        assert_eq!(decode_ack(&ack[..15]), None);
        assert_eq!(decode_ack(&[0; 17]), None);
    }

    /// Payloads split into exactly `count` messages or frames, and anything else is
    /// malformed.
    #[test]
    fn payloads_split_exactly() {
        let id = Identity::of::<u32>();
        let bytes: Vec<u8> = (0u8..12).collect();
        assert_eq!(split(&bytes, 3, &id).unwrap().len(), 3);
        assert!(matches!(
            split(&bytes, 2, &id),
            Err(Refusal::Malformed { count: 2, len: 12 })
        ));
        assert!(split(&bytes[..11], 3, &id).is_err());
        assert!(split(&bytes, u32::MAX, &id).is_err());

        let frames = Identity::frames();
        let mut payload = Vec::new();
        for frame in [&b"ab"[..], b"", b"cde"] {
            payload.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            payload.extend_from_slice(frame);
        }
        assert_eq!(
            split(&payload, 3, &frames).unwrap(),
            [&b"ab"[..], b"", b"cde"]
        );
        assert!(split(&payload, 2, &frames).is_err());
        assert!(split(&payload[..payload.len() - 1], 3, &frames).is_err());
        assert!(split(&payload[..2], 1, &frames).is_err());
    }
}
