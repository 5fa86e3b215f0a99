//! A ring of variable-size frames, one producer and one consumer, in a shared-memory
//! segment (kind `stream`) or on the heap.
//!
//! # Frames
//!
//! After agrona's `OneToOneRingBuffer` (Aeron): every record starts with an 8-byte header,
//! `length: u32` (payload bytes) then `type_id: u32`, in the machine's byte order; the
//! payload follows; records start at multiples of 8 bytes. A record never wraps: when the
//! next one does not fit before the end of the buffer, a padding record (type
//! [`PADDING_TYPE`]) fills the rest, and the record starts again at offset 0. So every
//! payload is one contiguous slice, read and written in place.
//!
//! The frames travel through the byte ring of [`spsc`] (`u8` slots,
//! positions counted in bytes), by its public chunk API only: the producer takes a
//! [`WriteChunk`](spsc::WriteChunk) of the record's bytes (and of the padding before it),
//! writes it, and commits it, which advances `tail` with `Release`; the consumer takes a
//! [`ReadChunk`](spsc::ReadChunk) of what is published, reads the header and the payload
//! in place, and commits the record, which advances `head`. The header needs no atomic
//! access: the position store orders it. Blocking, deadlines, peers that close or die,
//! restarts and position checks are those of `spsc`; a header that claims more bytes than
//! were published, or that would cross the end of the buffer, is
//! [`Corruption::Frame`].
//!
//! The largest payload is `capacity / 2 - 8` bytes: a record of at most half the buffer
//! fits, padding included, whenever the ring is empty, wherever the positions are.

use core::ptr::NonNull;
use std::time::{Duration, Instant};

use shm_alloc::{Kind, Location};

use crate::core::attach::{Identity, Settings, settings_setters};
use crate::error::{Corruption, Error, RecvError, RecvTimeoutError, TryRecvError};
use crate::spsc;

/// The capacity of a ring whose builder was given none: 1 MiB.
pub const DEFAULT_CAPACITY: u64 = 1 << 20;

/// The smallest capacity, in bytes.
pub const MIN_CAPACITY: u64 = 64;

/// The type id of a padding record; any other `u32` is the sender's to use.
pub const PADDING_TYPE: u32 = u32::MAX;

/// The size of a record header, in bytes.
pub const HEADER_LEN: usize = 8;

/// Records start at multiples of this many bytes.
const ALIGN: u64 = 8;

/// The bytes a record of `len` payload bytes occupies.
fn record_len(len: u64) -> u64 {
    (HEADER_LEN as u64 + len).next_multiple_of(ALIGN)
}

/// Why a frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The payload is longer than the ring can ever hold at once.
    #[error("a message of {len} bytes is larger than the ring's limit of {max} bytes")]
    TooLarge {
        /// The payload's length, in bytes.
        len: usize,
        /// The largest payload this ring carries, in bytes.
        max: usize,
    },
    /// Not enough contiguous free space now (non-blocking calls only).
    #[error("ring is full")]
    Full,
    /// The deadline passed before there was space.
    #[error("timed out waiting for space in the ring")]
    Timeout,
    /// The consumer closed the ring or died.
    #[error("sending on a ring with no consumer left")]
    Disconnected,
    /// The ring's shared state is inconsistent.
    #[error("corrupted ring: {0}")]
    Corrupted(Corruption),
}

impl From<crate::TrySendError<()>> for SendError {
    fn from(e: crate::TrySendError<()>) -> Self {
        match e {
            crate::TrySendError::Full(()) => SendError::Full,
            crate::TrySendError::Disconnected(()) => SendError::Disconnected,
            crate::TrySendError::Corrupted((), c) => SendError::Corrupted(c),
        }
    }
}

impl From<crate::SendTimeoutError<()>> for SendError {
    fn from(e: crate::SendTimeoutError<()>) -> Self {
        match e {
            crate::SendTimeoutError::Timeout(()) => SendError::Timeout,
            crate::SendTimeoutError::Disconnected(()) => SendError::Disconnected,
            crate::SendTimeoutError::Corrupted((), c) => SendError::Corrupted(c),
        }
    }
}

/// The identity of a stream segment: kind `stream`, untyped bytes.
const IDENTITY: Identity = Identity {
    kind: Kind::Stream,
    type_fingerprint: 0,
    type_name: "bytes",
};

/// Checks the stream ring's own minimum; the SPSC ring below checks the rest (a power of
/// two up to [`spsc::MAX_CAPACITY`]) with the same error.
fn checked_capacity(capacity: u64) -> Result<u64, Error> {
    if capacity < MIN_CAPACITY {
        return Err(Error::CapacityTooSmall {
            found: capacity,
            min: MIN_CAPACITY,
        });
    }
    Ok(capacity)
}

/// Creates a stream ring of `capacity` bytes on the heap, for two threads of one process.
///
/// # Errors
///
/// [`Error::CapacityTooSmall`] below [`MIN_CAPACITY`]; [`Error::InvalidCapacity`] unless
/// `capacity` is a power of two up to 2^32.
///
/// # Examples
///
/// ```
/// let (mut tx, mut rx) = shm_ring::stream::channel(4096)?;
/// tx.try_send(b"hello")?;
/// tx.try_send(b"")?;
/// assert_eq!(&*rx.try_recv()?, b"hello");
/// assert!(rx.try_recv()?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn channel(capacity: u64) -> Result<(Producer, Consumer), Error> {
    let (tx, rx) = spsc::channel::<u8>(checked_capacity(capacity)?)?;
    Ok((Producer { inner: tx }, Consumer { inner: rx }))
}

/// The sending half of a stream ring. `Send`, not `Sync`.
#[derive(Debug)]
pub struct Producer {
    inner: spsc::Producer<u8>,
}

/// The receiving half of a stream ring. `Send`, not `Sync`.
#[derive(Debug)]
pub struct Consumer {
    inner: spsc::Consumer<u8>,
}

impl Producer {
    /// The ring's size, in bytes.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    /// The largest payload this ring carries, in bytes: `capacity / 2 - 8`.
    #[must_use]
    pub fn max_message_len(&self) -> usize {
        (self.capacity() / 2) as usize - HEADER_LEN
    }

    /// The wait strategy of the blocking calls.
    pub fn set_wait_strategy(&mut self, wait: shm_sync::WaitStrategy) {
        self.inner.set_wait_strategy(wait);
    }

    /// The bytes a record of `len` payload bytes takes at the current position: the
    /// record, and the padding before it if it does not fit before the end of the
    /// buffer.
    fn footprint(&self, len: usize) -> usize {
        let record = record_len(len as u64) as usize;
        let index = (self.inner.position() & (self.capacity() - 1)) as usize;
        let contiguous = self.capacity() as usize - index;
        if record <= contiguous {
            record
        } else {
            contiguous + record
        }
    }

    /// Whether a frame of `len` payload bytes would be taken now (or refused at once),
    /// without sending: what an async send of it waits for.
    #[cfg(not(loom))]
    pub(crate) fn ready_for(&mut self, len: usize, probe: bool) -> bool {
        len > self.max_message_len() || {
            let bytes = self.footprint(len) as u64;
            self.inner.ready_for(bytes, probe)
        }
    }

    /// Takes the bytes of a record of `len` payload bytes, contiguous, and of the padding
    /// before it if it does not fit before the end of the buffer: `deadline` `None` does
    /// not wait, `Some(d)` waits until `d` (`Some(None)`: forever).
    fn place(
        &mut self,
        len: usize,
        deadline: Option<Option<Instant>>,
    ) -> Result<Claim<'_>, SendError> {
        let max = self.max_message_len();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        let record = record_len(len as u64) as usize;
        // Bytes before the end of the buffer: the record fits there, or they are padding.
        let footprint = self.footprint(len);
        let pad = footprint - record;
        let mut chunk = match deadline {
            None => self.inner.write_chunk(footprint)?,
            Some(deadline) => self.inner.write_chunk_deadline(footprint, deadline)?,
        };
        let (first, second) = chunk.as_mut_slices();
        // Without padding the record is at the start of the first slice; with it, the
        // padding fills the first slice and the record starts the second.
        let record = if pad == 0 { first } else { second };
        let record = NonNull::from(&mut record[..HEADER_LEN + len]).cast();
        Ok(Claim {
            chunk,
            record,
            pad,
            len,
            type_id: 0,
        })
    }

    /// Claims room for a frame of `len` payload bytes, to write in place: the returned
    /// [`Claim`] derefs to `&mut [u8]` of exactly `len` bytes (holding whatever was there
    /// before); [`Claim::commit`] publishes it. Dropped without `commit`, nothing is
    /// published.
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] (with the limit) for `len > max_message_len()`;
    /// [`SendError::Full`] without enough contiguous room now;
    /// [`SendError::Disconnected`]; [`SendError::Corrupted`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = shm_ring::stream::channel(4096)?;
    /// let mut claim = tx.claim(3)?;
    /// claim.copy_from_slice(b"abc");
    /// claim.commit();
    /// assert_eq!(&*rx.try_recv()?, b"abc");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>, SendError> {
        self.place(len, None)
    }

    /// [`claim`](Self::claim), waiting with the wait strategy until `deadline` (`None`:
    /// forever) while there is no room.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    pub fn claim_deadline(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<Claim<'_>, SendError> {
        self.place(len, Some(deadline))
    }

    /// Sends a copy of `payload` if there is room now.
    ///
    /// # Errors
    ///
    /// As [`claim`](Self::claim).
    pub fn try_send(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.claim(payload.len())?
            .publish(payload.len(), Some(payload));
        Ok(())
    }

    /// Sends a copy of `payload`, waiting with the wait strategy while there is no room.
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`], [`SendError::Disconnected`] (the consumer closed the
    /// ring, or died: seen within `spsc::LIVENESS_PERIOD` while blocked),
    /// [`SendError::Corrupted`].
    pub fn send(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_deadline(payload, None)
    }

    /// Sends a copy of `payload`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] when the time passes, otherwise as [`send`](Self::send).
    pub fn send_timeout(&mut self, payload: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_deadline(payload, Instant::now().checked_add(timeout))
    }

    /// Sends a copy of `payload`, waiting until `deadline` (`None`: forever) for room.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    pub fn send_deadline(
        &mut self,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(), SendError> {
        self.claim_deadline(payload.len(), deadline)?
            .publish(payload.len(), Some(payload));
        Ok(())
    }
}

fn header(len: u64, type_id: u32) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&(len as u32).to_ne_bytes());
    header[4..].copy_from_slice(&type_id.to_ne_bytes());
    header
}

/// Room for one frame, claimed by [`Producer::claim`]; derefs to its payload bytes.
/// [`commit`](Claim::commit) publishes it; dropping it publishes nothing.
#[must_use = "a claimed frame is published only by `commit`"]
#[derive(Debug)]
pub struct Claim<'a> {
    /// The padding (if any), then the record.
    chunk: spsc::WriteChunk<'a, u8>,
    /// The record's first byte (its header, then `len` payload bytes), inside `chunk`'s
    /// bytes (found once, by `place`).
    record: NonNull<u8>,
    /// Bytes of padding before the record: 0, or all the bytes to the buffer's end.
    pad: usize,
    len: usize,
    type_id: u32,
}

// SAFETY: a claim is its chunk (a `&mut Producer`, which is `Send`) and a pointer into
// the chunk's bytes, which only it touches until it publishes them: moving it to another
// thread, or sharing `&Claim` (which gives only `&[u8]`), is as safe as for the chunk.
unsafe impl Send for Claim<'_> {}
// SAFETY: as for `Send`: `&Claim` gives only shared reads.
unsafe impl Sync for Claim<'_> {}

impl Claim<'_> {
    /// Sets the frame's type id (0 unless set), for the receiver's
    /// [`Frame::type_id`].
    ///
    /// # Panics
    ///
    /// If `type_id` is [`PADDING_TYPE`], which marks padding.
    pub fn set_type_id(&mut self, type_id: u32) {
        assert_ne!(
            type_id, PADDING_TYPE,
            "the type id {PADDING_TYPE} marks padding"
        );
        self.type_id = type_id;
    }

    /// Publishes the frame.
    pub fn commit(self) {
        let len = self.len;
        self.publish(len, None);
    }

    /// Publishes only the first `len` bytes of the frame (for a read that filled less
    /// than it asked for); `len` 0 publishes an empty frame.
    ///
    /// # Panics
    ///
    /// If `len` is more than the claimed length.
    pub fn commit_prefix(self, len: usize) {
        let claimed = self.len;
        assert!(
            len <= claimed,
            "committing {len} of {claimed} claimed bytes"
        );
        self.publish(len, None);
    }

    /// The record: its header, then the claimed payload bytes.
    #[inline(always)]
    fn record_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the slice unique.
        unsafe { core::slice::from_raw_parts_mut(self.record.as_ptr(), HEADER_LEN + self.len) }
    }

    /// Writes the headers (the padding's, if any, and the record's for `len` payload
    /// bytes), copies `payload` (`len` bytes) into the record if given, and publishes
    /// both.
    #[inline(always)]
    fn publish(mut self, len: usize, payload: Option<&[u8]>) {
        let (pad, type_id) = (self.pad, self.type_id);
        let record = self.record_mut();
        record[..HEADER_LEN].copy_from_slice(&header(len as u64, type_id));
        if let Some(payload) = payload {
            record[HEADER_LEN..HEADER_LEN + len].copy_from_slice(payload);
        }
        if pad != 0 {
            // After the last use of `record`: the chunk's slices cover it too.
            let (padding, _) = self.chunk.as_mut_slices();
            let padding_header = header((pad - HEADER_LEN) as u64, PADDING_TYPE);
            padding[..HEADER_LEN].copy_from_slice(&padding_header);
        }
        self.chunk.commit(pad + record_len(len as u64) as usize);
    }
}

impl core::ops::Deref for Claim<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `record` and `HEADER_LEN + len` were taken from a slice of `chunk`'s
        // claimed bytes, which only this producer touches until the chunk commits (in
        // `publish`, which consumes the claim); `&self` bounds the slice by the claim's
        // life.
        let record =
            unsafe { core::slice::from_raw_parts(self.record.as_ptr(), HEADER_LEN + self.len) };
        &record[HEADER_LEN..]
    }
}

impl core::ops::DerefMut for Claim<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.record_mut()[HEADER_LEN..HEADER_LEN + len]
    }
}

/// Why no frame came out of what is published.
enum Unframed {
    /// Only a padding record was published (no producer of this crate does that): it is
    /// released, and the record after it comes later.
    LonePadding,
    Corrupt(Corruption),
}

impl From<Corruption> for Unframed {
    fn from(c: Corruption) -> Self {
        Unframed::Corrupt(c)
    }
}

/// The header at the start of `bytes` (at `position` in the ring): payload length and
/// type id.
#[inline(always)]
fn header_at(bytes: &[u8], position: u64) -> Result<(u64, u32), Corruption> {
    if position % ALIGN != 0 || bytes.len() < HEADER_LEN {
        return Err(corrupt_frame(position, 0, bytes.len() as u64));
    }
    let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let type_id = u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    Ok((u64::from(len), type_id))
}

/// The corruption of a header at `position` that claims `length` payload bytes where
/// `room` are published.
fn corrupt_frame(position: u64, length: u64, room: u64) -> Corruption {
    Corruption::Frame {
        position,
        length,
        room,
    }
}

/// The next frame in `chunk`, what is published from `position` in a buffer of
/// `capacity` bytes: at `position`, or (after a padding record, which fills the rest of
/// the buffer) at the start of the buffer. At most one padding record precedes a frame:
/// a second, at offset 0, would fill the whole buffer, which no producer writes.
#[inline(always)]
fn frame(
    chunk: spsc::ReadChunk<'_, u8>,
    position: u64,
    capacity: u64,
) -> Result<Frame<'_>, Unframed> {
    let contiguous = capacity - (position & (capacity - 1));
    let (first, second) = chunk.as_slices();
    let (len, type_id) = header_at(first, position)?;
    let (pad, len, type_id, bytes, at) = if type_id != PADDING_TYPE {
        (0, len, type_id, first, position)
    } else {
        if len + HEADER_LEN as u64 != contiguous || first.len() as u64 != contiguous {
            return Err(corrupt_frame(position, len, first.len() as u64).into());
        }
        let at = position.wrapping_add(contiguous);
        if second.is_empty() {
            chunk.commit(contiguous as usize);
            return Err(Unframed::LonePadding);
        }
        match header_at(second, at)? {
            (len, PADDING_TYPE) => return Err(corrupt_frame(at, len, second.len() as u64).into()),
            (len, type_id) => (contiguous as usize, len, type_id, second, at),
        }
    };
    let record = record_len(len);
    if record > bytes.len() as u64 {
        return Err(corrupt_frame(at, len, bytes.len() as u64).into());
    }
    let payload = &bytes[HEADER_LEN..HEADER_LEN + len as usize];
    Ok(Frame {
        payload: NonNull::from(payload).cast(),
        len: payload.len(),
        type_id,
        release: pad + record as usize,
        chunk: Some(chunk),
    })
}

impl Consumer {
    /// The ring's size, in bytes.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    /// The wait strategy of the blocking calls.
    pub fn set_wait_strategy(&mut self, wait: shm_sync::WaitStrategy) {
        self.inner.set_wait_strategy(wait);
    }

    /// Receives the next frame in place, without blocking: the [`Frame`] derefs to its
    /// payload in the ring and releases it when dropped. If this process dies while
    /// holding it, a restarted consumer receives it again.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`]; [`TryRecvError::Disconnected`] when the ring is empty and
    /// the producer closed it or died; [`TryRecvError::Corrupted`].
    #[inline]
    pub fn try_recv(&mut self) -> Result<Frame<'_>, TryRecvError> {
        let (position, capacity) = (self.inner.position(), self.capacity());
        // The polling loop's common case, an empty ring, straight from the ring.
        let available = self.inner.slots()?;
        let chunk = self.inner.read_chunk(available)?;
        frame(chunk, position, capacity).map_err(|e| match e {
            Unframed::LonePadding => TryRecvError::Empty,
            Unframed::Corrupt(c) => TryRecvError::Corrupted(c),
        })
    }

    /// Receives the next frame in place, waiting with the wait strategy while the ring is
    /// empty.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] when the ring is empty and the producer is gone,
    /// [`RecvError::Corrupted`].
    pub fn recv(&mut self) -> Result<Frame<'_>, RecvError> {
        Ok(self.recv_deadline(None)?)
    }

    /// Receives the next frame, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] when the time passes with the ring empty, otherwise
    /// as [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Frame<'_>, RecvTimeoutError> {
        self.recv_deadline(Instant::now().checked_add(timeout))
    }

    /// Receives the next frame, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Frame<'_>, RecvTimeoutError> {
        while self.release_lone_padding(deadline)? {}
        let (position, capacity) = (self.inner.position(), self.capacity());
        let chunk = self.inner.read_chunk_deadline(usize::MAX, deadline)?;
        frame(chunk, position, capacity).map_err(|e| match e {
            Unframed::LonePadding => RecvTimeoutError::Timeout,
            Unframed::Corrupt(c) => RecvTimeoutError::Corrupted(c),
        })
    }

    /// Waits until something is published, and releases a padding record published
    /// without the record after it (which no producer of this crate does; a peer that
    /// does must not make a blocking receive return early). Returns whether it released
    /// one.
    fn release_lone_padding(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<bool, RecvTimeoutError> {
        let capacity = self.capacity();
        let position = self.inner.position();
        let contiguous = capacity - (position & (capacity - 1));
        if contiguous >= capacity / 2 {
            return Ok(false); // no padding in the first half: `frame` needs no wait
        }
        let chunk = self.inner.read_chunk_deadline(usize::MAX, deadline)?;
        Ok(match frame(chunk, position, capacity) {
            // Released by `frame`.
            Err(Unframed::LonePadding) => true,
            // Left for the caller's own parse, unreleased (a frame's chunk releases
            // nothing unless it commits).
            Ok(found) => {
                core::mem::forget(found);
                false
            }
            Err(Unframed::Corrupt(_)) => false,
        })
    }

    /// Whether the producer closed the ring cleanly (dropped its handle) rather than
    /// died: what tells a finished sender from a crashed one once `Disconnected` came.
    #[must_use]
    pub fn producer_closed(&self) -> bool {
        self.inner.producer_closed()
    }

    /// Whether a producer has attached to this ring at least once.
    #[must_use]
    pub fn producer_seen(&self) -> bool {
        self.inner.producer_seen()
    }

    /// Receives the next frame into `buf` (cleared first), waiting while the ring is
    /// empty; returns the payload's length.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        let frame = self.recv()?;
        buf.clear();
        buf.extend_from_slice(&frame);
        Ok(frame.len())
    }
}

/// A frame received in place; derefs to its payload and releases it when dropped.
#[must_use = "dropping the frame releases it at once"]
#[derive(Debug)]
pub struct Frame<'a> {
    /// The padding (if any) and the record; `None` once released.
    chunk: Option<spsc::ReadChunk<'a, u8>>,
    /// The payload's first byte, inside `chunk`'s bytes (found once, by `frame`).
    payload: NonNull<u8>,
    len: usize,
    type_id: u32,
    /// Bytes to release: the padding and the record.
    release: usize,
}

// SAFETY: a frame is its chunk (a `&mut Consumer`, which is `Send`) and a pointer into
// the chunk's bytes, which only it reads until it releases them: moving it to another
// thread, or sharing `&Frame` (which gives only `&[u8]`), is as safe as for the chunk.
unsafe impl Send for Frame<'_> {}
// SAFETY: as for `Send`: `&Frame` gives only shared reads of bytes no one writes.
unsafe impl Sync for Frame<'_> {}

impl Frame<'_> {
    /// The type id its sender gave it (0 unless set).
    #[must_use]
    pub fn type_id(&self) -> u32 {
        self.type_id
    }
}

impl core::ops::Deref for Frame<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `payload` and `len` were taken from a slice of `chunk`'s bytes, which
        // stay published and unreleased (so the producer does not write them) until the
        // chunk commits in `drop`; `&self` bounds the returned slice by the frame's life.
        unsafe { core::slice::from_raw_parts(self.payload.as_ptr(), self.len) }
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        if let Some(chunk) = self.chunk.take() {
            chunk.commit(self.release);
        }
    }
}

/// Opens or creates a stream ring segment (kind `stream`) and attaches one side.
///
/// # Examples
///
/// ```
/// use shm_ring::stream::Builder;
/// # let name = format!("doc-stream-{}", std::process::id());
/// let mut tx = Builder::new(name.as_str()).capacity(1 << 16).producer()?;
/// let mut rx = Builder::new(name.as_str()).consumer()?;
/// tx.send(b"frame")?;
/// assert_eq!(&*rx.recv()?, b"frame");
/// # shm_alloc::Segment::remove(&name.as_str().into())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    settings: Settings,
}

impl Builder {
    /// A builder for the ring at `location` (a name under `/dev/shm`, or a path).
    pub fn new(location: impl Into<Location>) -> Self {
        Self {
            settings: Settings::new(location.into(), DEFAULT_CAPACITY),
        }
    }

    settings_setters!("bytes (at least [`MIN_CAPACITY`])");

    /// The size in bytes if this call creates the ring, while an opener accepts any
    /// (unlike [`capacity`](Self::capacity), which an opener checks).
    pub fn capacity_if_created(mut self, capacity: u64) -> Self {
        self.settings.default_capacity = capacity;
        self
    }

    fn spsc(&self) -> spsc::Builder<u8> {
        spsc::Builder::with_identity(self.settings.clone(), IDENTITY, MIN_CAPACITY)
    }

    /// Attaches as the producer.
    ///
    /// # Errors
    ///
    /// As `spsc::Builder::producer`; [`Error::InvalidCapacity`]; a segment of another
    /// kind is a `Mismatch`.
    pub fn producer(&self) -> Result<Producer, Error> {
        Ok(Producer {
            inner: self.spsc().producer()?,
        })
    }

    /// Attaches as the consumer; it starts at the first frame no consumer released.
    ///
    /// # Errors
    ///
    /// As [`producer`](Self::producer).
    pub fn consumer(&self) -> Result<Consumer, Error> {
        Ok(Consumer {
            inner: self.spsc().consumer()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A capacity that is not a power of two, or past the largest, is `InvalidCapacity`
    /// with the value; one below 64 bytes is `CapacityTooSmall` with the minimum.
    #[test]
    fn capacities_off_the_rules_are_refused_with_the_value() {
        assert!(matches!(channel(96), Err(Error::InvalidCapacity(96))));
        let too_large = spsc::MAX_CAPACITY * 2;
        assert!(matches!(channel(too_large), Err(Error::InvalidCapacity(c)) if c == too_large));
        assert!(matches!(
            channel(32),
            Err(Error::CapacityTooSmall { found: 32, min: 64 })
        ));
        assert_eq!(channel(64).unwrap().0.capacity(), 64);
    }

    /// A claimed frame reads back what was written into it, at its own length.
    #[test]
    fn a_claim_reads_back_what_was_written() {
        let (mut tx, mut rx) = channel(256).unwrap();
        let mut claim = tx.claim(5).unwrap();
        claim.copy_from_slice(b"hello");
        assert_eq!(&*claim, b"hello");
        claim.commit();
        assert_eq!(&*rx.try_recv().unwrap(), b"hello");
    }

    /// A record header is read only at an aligned position with all its bytes there: a
    /// position a peer left unaligned, or a header cut short, is a corrupt frame.
    #[test]
    fn a_header_is_read_only_where_aligned_and_whole() {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&7u32.to_ne_bytes());
        bytes[4..8].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(header_at(&bytes, 8), Ok((7, 9)));
        assert!(matches!(
            header_at(&bytes, 3),
            Err(Corruption::Frame { position: 3, .. })
        ));
        assert!(matches!(
            header_at(&bytes[..4], 0),
            Err(Corruption::Frame { room: 4, .. })
        ));
    }

    /// A consumer tells a producer that never came from one that came: `producer_seen`
    /// is false until a producer attaches, and stays true after it leaves.
    #[test]
    #[cfg_attr(miri, ignore = "maps a segment")]
    fn a_consumer_sees_whether_a_producer_ever_came() {
        let name = shm_testkit::ShmName::new("stream-seen");
        let ring = Builder::new(name.as_str()).capacity(64);
        let rx = ring.consumer().unwrap();
        assert!(!rx.producer_seen());
        drop(ring.producer().unwrap());
        assert!(rx.producer_seen() && rx.producer_closed());
    }

    /// A ring created without a capacity has the documented default, 1 MiB.
    #[test]
    #[cfg_attr(miri, ignore = "maps a segment")]
    fn a_ring_created_without_a_capacity_has_one_mib() {
        let name = shm_testkit::ShmName::new("stream-default");
        let tx = Builder::new(name.as_str()).producer().unwrap();
        assert_eq!(tx.capacity(), 1 << 20);
    }

    /// Whether a frame would be taken now: yes while the ring has room for its record,
    /// no once it has not, and yes (refused at once, not waited for) for a frame larger
    /// than the ring carries; yes again once the consumer frees room.
    #[test]
    fn ready_for_says_whether_a_frame_would_be_taken_now() {
        let (mut tx, mut rx) = channel(64).unwrap();
        assert!(tx.ready_for(24, false));
        tx.try_send(&[1; 24]).unwrap();
        tx.try_send(&[2; 24]).unwrap();
        assert!(!tx.ready_for(24, false), "full");
        assert!(!tx.ready_for(1, false), "full for the smallest frame too");
        assert!(tx.ready_for(25, false), "too large: refused at once");
        drop(rx.try_recv().unwrap());
        assert!(tx.ready_for(24, false));
    }

    /// The stall and park counts of both sides of the stream ring `name`.
    fn activity(name: &shm_testkit::ShmName) -> [crate::inspect::Counts; 2] {
        let crate::inspect::Detail::Spsc {
            producer_activity,
            consumer_activity,
            ..
        } = crate::inspect::inspect(&name.as_str().into())
            .unwrap()
            .detail
        else {
            panic!("a stream ring reads as SPSC");
        };
        [producer_activity, consumer_activity]
    }

    /// The wait strategy set is the one a blocked call uses: a busy-spinning producer
    /// blocked on a full ring, and a busy-spinning consumer blocked on an empty one,
    /// never park, where the default strategy parks after 30 us.
    #[test]
    #[cfg_attr(miri, ignore = "maps a segment and sleeps")]
    fn busy_spinning_sides_never_park() {
        use shm_sync::WaitStrategy::BusySpin;
        // An observation window, far past the default strategy's spin phase; the blocked
        // call cannot complete before the other side acts after it.
        let window = std::time::Duration::from_millis(20);
        let name = shm_testkit::ShmName::new("stream-spin");
        let ring = Builder::new(name.as_str()).capacity(64);
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        tx.set_wait_strategy(BusySpin);
        rx.set_wait_strategy(BusySpin);
        tx.try_send(&[1; 24]).unwrap();
        tx.try_send(&[2; 24]).unwrap();
        let sender = std::thread::spawn(move || {
            tx.send(&[3; 24]).unwrap();
            tx
        });
        std::thread::sleep(window);
        drop(rx.try_recv().unwrap());
        let mut tx = sender.join().unwrap();
        let [producer, _] = activity(&name);
        assert_eq!(
            (producer.stalls, producer.parks),
            (1, 0),
            "the send waited, unparked"
        );
        for _ in 0..2 {
            drop(rx.try_recv().unwrap());
        }
        let receiver = std::thread::spawn(move || {
            assert_eq!(&*rx.recv().unwrap(), &[4; 24]);
            rx
        });
        std::thread::sleep(window);
        tx.try_send(&[4; 24]).unwrap();
        let _rx = receiver.join().unwrap();
        let [_, consumer] = activity(&name);
        assert_eq!(
            (consumer.stalls, consumer.parks),
            (1, 0),
            "the receive waited, unparked"
        );
    }

    #[test]
    fn too_large_says_the_limit_and_loses_nothing() {
        let (mut tx, mut rx) = channel(256).unwrap();
        assert_eq!(tx.max_message_len(), 120);
        tx.try_send(&[1; 120]).unwrap();
        assert_eq!(
            tx.try_send(&[0; 121]),
            Err(SendError::TooLarge { len: 121, max: 120 })
        );
        assert_eq!(
            tx.send(&[0; 1000]),
            Err(SendError::TooLarge {
                len: 1000,
                max: 120
            })
        );
        assert_eq!(&*rx.try_recv().unwrap(), &[1; 120][..]);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn invalid_capacities_are_refused() {
        for capacity in [0, 16, 32] {
            assert!(
                matches!(channel(capacity), Err(Error::CapacityTooSmall { found, min: 64 }) if found == capacity)
            );
        }
        for capacity in [100, 1 << 33] {
            assert!(matches!(channel(capacity), Err(Error::InvalidCapacity(c)) if c == capacity));
        }
    }

    #[test]
    fn a_frame_that_would_wrap_is_padded_and_stays_contiguous() {
        let (mut tx, mut rx) = channel(64).unwrap();
        tx.try_send(&[7; 20]).unwrap(); // record of 32 bytes at 0
        drop(rx.try_recv().unwrap());
        tx.try_send(&[8; 10]).unwrap(); // record of 24 bytes at 32; 8 bytes left
        // 24 more bytes do not fit in the last 8: padding, then the record at 0.
        assert_eq!(tx.try_send(&[9; 16]), Ok(()));
        assert_eq!(&*rx.try_recv().unwrap(), &[8; 10][..]);
        assert_eq!(&*rx.try_recv().unwrap(), &[9; 16][..]);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn claim_commit_abort_and_type_ids() {
        let (mut tx, mut rx) = channel(128).unwrap();
        {
            let mut claim = tx.claim(5).unwrap();
            claim.copy_from_slice(b"abort");
        }
        let mut claim = tx.claim(4).unwrap();
        claim.copy_from_slice(b"kept");
        claim.set_type_id(42);
        claim.commit();
        let frame = rx.try_recv().unwrap();
        assert_eq!((&*frame, frame.type_id()), (&b"kept"[..], 42));
        drop(frame);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn a_prefix_commit_publishes_what_was_filled() {
        let (mut tx, mut rx) = channel(128).unwrap();
        let mut claim = tx.claim(40).unwrap();
        claim[..3].copy_from_slice(b"abc");
        claim.commit_prefix(3);
        tx.try_send(b"next").unwrap();
        assert_eq!(&*rx.try_recv().unwrap(), b"abc");
        assert_eq!(&*rx.try_recv().unwrap(), b"next");
        assert!(!rx.producer_closed());
        drop(tx);
        assert!(rx.producer_closed());
    }

    #[test]
    fn full_then_room_again_and_disconnect_after_drain() {
        let (mut tx, mut rx) = channel(64).unwrap();
        tx.try_send(&[1; 24]).unwrap();
        tx.try_send(&[2; 24]).unwrap();
        assert_eq!(tx.try_send(&[3; 8]), Err(SendError::Full));
        let mut buf = Vec::new();
        assert_eq!(rx.recv_into(&mut buf), Ok(24));
        tx.try_send(&[3; 8]).unwrap();
        drop(tx);
        assert_eq!(rx.recv_into(&mut buf), Ok(24));
        assert_eq!(rx.recv_into(&mut buf), Ok(8));
        assert_eq!(buf, [3; 8]);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
    }

    /// A padding record published without its record (no producer of this crate does
    /// that) is released, and a blocking receive waits for the record instead of
    /// returning early.
    #[test]
    fn a_lone_padding_record_does_not_end_a_blocking_receive() {
        let (mut tx, mut rx) = channel(128).unwrap();
        for _ in 0..2 {
            tx.try_send(&[1; 40]).unwrap(); // records of 48 bytes: 32 left before the end
            drop(rx.try_recv().unwrap());
        }
        let mut chunk = tx.inner.write_chunk(32).unwrap();
        chunk.as_mut_slices().0[..HEADER_LEN].copy_from_slice(&header(24, PADDING_TYPE));
        chunk.commit_all();
        // The receiver blocks in a thread of its own; the record is sent once that
        // thread is seen asleep on its futex (not under miri, which hides `/proc`): the
        // padding did not end the receive.
        let (tid_tx, tid) = std::sync::mpsc::channel();
        let receiver = std::thread::spawn(move || {
            if !cfg!(miri) {
                tid_tx.send(shm_testkit::thread_id()).unwrap();
            }
            let frame = rx.recv_timeout(Duration::from_secs(10)).map(|f| f.to_vec());
            (rx, frame)
        });
        if !cfg!(miri) {
            let tid = tid.recv().unwrap();
            shm_testkit::wait_for(Duration::from_secs(10), "the receiver, parked", || {
                shm_testkit::sleeps_on_futex(std::process::id(), tid).then_some(())
            });
        }
        tx.send(b"late").unwrap();
        let (_rx, frame) = receiver.join().unwrap();
        assert_eq!(frame.unwrap(), b"late");
    }

    /// A padding record must fill the rest of the buffer, published whole: one that
    /// claims less, or one published in part, is a corrupt frame, never skipped over.
    #[test]
    fn a_padding_record_short_or_published_in_part_is_corrupt() {
        for (claimed, published) in [(8, 32), (24, 16)] {
            let (mut tx, mut rx) = channel(128).unwrap();
            for _ in 0..2 {
                tx.try_send(&[1; 40]).unwrap(); // records of 48 bytes: 32 left before the end
                drop(rx.try_recv().unwrap());
            }
            let mut chunk = tx.inner.write_chunk(published).unwrap();
            chunk.as_mut_slices().0[..HEADER_LEN].copy_from_slice(&header(claimed, PADDING_TYPE));
            chunk.commit_all();
            let expected = corrupt_frame(96, claimed, published as u64);
            assert_eq!(
                rx.try_recv().map(|f| f.to_vec()),
                Err(TryRecvError::Corrupted(expected)),
                "padding of {claimed} bytes, {published} published"
            );
        }
    }

    #[test]
    fn two_threads_stream_every_size() {
        let (mut tx, mut rx) = channel(1024).unwrap();
        let count: usize = if cfg!(miri) { 100 } else { 20_000 };
        let producer = std::thread::spawn(move || {
            for i in 0..count {
                let len = i % 500;
                let payload: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                tx.send(&payload).unwrap();
            }
        });
        for i in 0..count {
            let frame = rx.recv().unwrap();
            assert_eq!(frame.len(), i % 500);
            assert!(frame.iter().enumerate().all(|(j, &b)| b == (i + j) as u8));
        }
        producer.join().unwrap();
        assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
    }
}

crate::wait_set::waitable_as!([] Producer, inner);
crate::wait_set::waitable_as!([] Consumer, inner);
