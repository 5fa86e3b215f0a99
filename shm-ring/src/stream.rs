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
//! positions counted in bytes): the producer writes a record, then publishes it by
//! advancing `tail` with `Release`; the consumer reads `tail` with `Acquire`, then the
//! header and the payload, and releases by advancing `head`. The header needs no atomic
//! access: the position store orders it. Blocking, deadlines, peers that close or die,
//! restarts and position checks are those of `spsc`; a header that claims more bytes than
//! were published, or that would cross the end of the buffer, is
//! [`Corruption::Frame`].
//!
//! The largest payload is `capacity / 2 - 8` bytes: a record of at most half the buffer
//! fits, padding included, whenever the ring is empty, wherever the positions are.

use std::time::{Duration, Instant};

use shm_alloc::{Kind, Location, SegmentOptions};
use shm_sync::WaitStrategy;

use crate::error::{Corruption, Error, RecvError, RecvTimeoutError, TryRecvError};
use crate::spsc::{self, OpenMode, Refusal, block};

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

fn refused(refusal: Refusal) -> SendError {
    match refusal {
        Refusal::Full => SendError::Full,
        Refusal::Disconnected => SendError::Disconnected,
        Refusal::Corrupted(c) => SendError::Corrupted(c),
    }
}

fn checked_capacity(capacity: u64) -> Result<u64, Error> {
    if capacity < MIN_CAPACITY || !capacity.is_power_of_two() || capacity > spsc::MAX_CAPACITY {
        return Err(Error::InvalidCapacity(capacity));
    }
    Ok(capacity)
}

/// Creates a stream ring of `capacity` bytes on the heap, for two threads of one process.
///
/// # Errors
///
/// [`Error::InvalidCapacity`] unless `capacity` is a power of two in
/// `MIN_CAPACITY..=2^32`.
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

/// Where a claimed record goes.
#[derive(Clone, Copy, Debug)]
struct Place {
    /// The record's header in the buffer; the payload follows it.
    at: *mut u8,
    /// Payload length.
    len: u64,
    /// Bytes to publish: the record, and the padding before it if it wrapped.
    publish: u64,
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
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.inner.set_wait_strategy(wait);
    }

    /// Finds room for a record of `len` payload bytes, contiguous, padding the end of the
    /// buffer first if needed; writes the padding header (published with the record).
    fn place(&mut self, len: usize, probe: bool) -> Result<Place, SendError> {
        let max = self.max_message_len();
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        let record = record_len(len as u64);
        let position = self.inner.position();
        let (at, contiguous) = self.inner.bytes_at(position);
        let publish = if record <= contiguous {
            record
        } else {
            contiguous + record
        };
        let mut free = self.inner.claim(probe).map_err(refused)?;
        if free < publish {
            free = self.inner.load_free().map_err(SendError::Corrupted)?;
            if free < publish {
                return Err(SendError::Full);
            }
        }
        if record > contiguous {
            let header = header(contiguous - HEADER_LEN as u64, PADDING_TYPE);
            // SAFETY: `contiguous >= 8` bytes from `at` are free (`free >= publish >
            // contiguous`) and unpublished, so only this producer touches them.
            unsafe { at.copy_from_nonoverlapping(header.as_ptr(), HEADER_LEN) };
            let (start, _) = self.inner.bytes_at(position.wrapping_add(contiguous));
            return Ok(Place {
                at: start,
                len: len as u64,
                publish,
            });
        }
        Ok(Place {
            at,
            len: len as u64,
            publish,
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
        let place = self.place(len, false)?;
        Ok(Claim {
            producer: self,
            place,
            type_id: 0,
        })
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
        let place = self.place_blocking(len, deadline)?;
        Ok(Claim {
            producer: self,
            place,
            type_id: 0,
        })
    }

    fn place_blocking(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<Place, SendError> {
        let wait = self.inner.wait();
        let peer_may_die = self.inner.peer_may_die();
        let event: *const shm_sync::EventCount = self.inner.events().1;
        // SAFETY: the event count lives in the ring's memory, which `self` keeps alive
        // for the whole call.
        let event = unsafe { &*event };
        let placed = block(event, wait, peer_may_die, deadline, |probe| {
            match self.place(len, probe) {
                Err(SendError::Full) => None,
                other => Some(other),
            }
        });
        placed.unwrap_or(Err(SendError::Timeout))
    }

    /// Sends a copy of `payload` if there is room now.
    ///
    /// # Errors
    ///
    /// As [`claim`](Self::claim).
    pub fn try_send(&mut self, payload: &[u8]) -> Result<(), SendError> {
        let place = self.place(payload.len(), false)?;
        self.write(place, payload, 0);
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
        let place = self.place_blocking(payload.len(), deadline)?;
        self.write(place, payload, 0);
        Ok(())
    }

    fn write(&mut self, place: Place, payload: &[u8], type_id: u32) {
        let to = place.payload();
        // SAFETY: `payload.len() == place.len` bytes from `to` are free, unpublished and
        // in bounds (see `payload`); `payload` is another allocation.
        unsafe { to.copy_from_nonoverlapping(payload.as_ptr(), payload.len()) };
        self.commit(place, type_id);
    }

    /// Writes the record's header and publishes the record (and its padding).
    fn commit(&mut self, place: Place, type_id: u32) {
        let header = header(place.len, type_id);
        // SAFETY: the record's 8 header bytes are free, unpublished and in bounds.
        unsafe {
            place
                .at
                .copy_from_nonoverlapping(header.as_ptr(), HEADER_LEN)
        };
        self.inner.publish(place.publish);
    }
}

impl Place {
    /// The payload bytes, after the header.
    fn payload(self) -> *mut u8 {
        // SAFETY: the record lies within the buffer (`record_len <= contiguous` where
        // it starts), so its payload, after the 8-byte header, does too.
        unsafe { self.at.add(HEADER_LEN) }
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
    producer: &'a mut Producer,
    place: Place,
    type_id: u32,
}

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
        self.producer.commit(self.place, self.type_id);
    }

    /// Publishes only the first `len` bytes of the frame (for a read that filled less
    /// than it asked for); `len` 0 publishes an empty frame.
    ///
    /// # Panics
    ///
    /// If `len` is more than the claimed length.
    pub fn commit_prefix(self, len: usize) {
        let claimed = self.place.len;
        assert!(
            len as u64 <= claimed,
            "committing {len} of {claimed} claimed bytes"
        );
        let place = Place {
            len: len as u64,
            publish: self.place.publish - record_len(claimed) + record_len(len as u64),
            ..self.place
        };
        self.producer.commit(place, self.type_id);
    }
}

impl core::ops::Deref for Claim<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the payload's `len` bytes are in bounds, claimed and unpublished: only
        // this producer touches them while the claim (which borrows it) lives.
        unsafe { core::slice::from_raw_parts(self.place.payload(), self.place.len as usize) }
    }
}

impl core::ops::DerefMut for Claim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the slice unique.
        unsafe { core::slice::from_raw_parts_mut(self.place.payload(), self.place.len as usize) }
    }
}

/// Where a received frame is.
#[derive(Clone, Copy, Debug)]
struct Found {
    /// The payload in the buffer.
    payload: *const u8,
    len: u64,
    type_id: u32,
    /// Bytes to release: the record.
    record: u64,
}

impl Consumer {
    /// The ring's size, in bytes.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    /// The wait strategy of the blocking calls.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.inner.set_wait_strategy(wait);
    }

    /// Finds the next frame, releasing padding on the way.
    fn find(&mut self, probe: bool) -> Result<Found, TryRecvError> {
        loop {
            let available = self.inner.available(probe)?;
            let position = self.inner.position();
            let (at, contiguous) = self.inner.bytes_at(position);
            let room = available.min(contiguous);
            let corrupt = |length| {
                TryRecvError::Corrupted(Corruption::Frame {
                    position,
                    length,
                    room,
                })
            };
            if position % ALIGN != 0 || room < HEADER_LEN as u64 {
                return Err(corrupt(0));
            }
            let mut header = [0u8; HEADER_LEN];
            // SAFETY: 8 published bytes from `at` (`room >= 8`), not released, so the
            // producer does not write them.
            unsafe { header.as_mut_ptr().copy_from_nonoverlapping(at, HEADER_LEN) };
            let len = u64::from(u32::from_ne_bytes(header[..4].try_into().unwrap()));
            let type_id = u32::from_ne_bytes(header[4..].try_into().unwrap());
            if type_id == PADDING_TYPE {
                if len + HEADER_LEN as u64 != contiguous || contiguous > available {
                    return Err(corrupt(len));
                }
                self.inner.release(contiguous);
                continue;
            }
            let record = record_len(len);
            if record > room {
                return Err(corrupt(len));
            }
            return Ok(Found {
                // SAFETY: the record (`record <= room` bytes from `at`) is in bounds.
                payload: unsafe { at.add(HEADER_LEN) },
                len,
                type_id,
                record,
            });
        }
    }

    fn frame(&mut self, found: Found) -> Frame<'_> {
        Frame {
            consumer: self,
            found,
        }
    }

    /// Receives the next frame in place, without blocking: the [`Frame`] derefs to its
    /// payload in the ring and releases it when dropped. If this process dies while
    /// holding it, a restarted consumer receives it again.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`]; [`TryRecvError::Disconnected`] when the ring is empty and
    /// the producer closed it or died; [`TryRecvError::Corrupted`].
    pub fn try_recv(&mut self) -> Result<Frame<'_>, TryRecvError> {
        let found = self.find(false)?;
        Ok(self.frame(found))
    }

    /// Receives the next frame in place, waiting with the wait strategy while the ring is
    /// empty.
    ///
    /// # Errors
    ///
    /// [`RecvError::Disconnected`] when the ring is empty and the producer is gone,
    /// [`RecvError::Corrupted`].
    pub fn recv(&mut self) -> Result<Frame<'_>, RecvError> {
        self.recv_deadline(None).map_err(|e| match e {
            RecvTimeoutError::Corrupted(c) => RecvError::Corrupted(c),
            RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout => RecvError::Disconnected,
        })
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
        let wait = self.inner.wait();
        let peer_may_die = self.inner.peer_may_die();
        let event: *const shm_sync::EventCount = self.inner.not_empty();
        // SAFETY: the event count lives in the ring's memory, which `self` keeps alive
        // for the whole call.
        let event = unsafe { &*event };
        let found = block(event, wait, peer_may_die, deadline, |probe| {
            match self.find(probe) {
                Err(TryRecvError::Empty) => None,
                other => Some(other),
            }
        });
        match found {
            Some(Ok(found)) => Ok(self.frame(found)),
            None | Some(Err(TryRecvError::Empty)) => Err(RecvTimeoutError::Timeout),
            Some(Err(TryRecvError::Disconnected)) => Err(RecvTimeoutError::Disconnected),
            Some(Err(TryRecvError::Corrupted(c))) => Err(RecvTimeoutError::Corrupted(c)),
        }
    }

    /// Whether the producer closed the ring cleanly (dropped its handle) rather than
    /// died: what tells a finished sender from a crashed one once `Disconnected` came.
    #[must_use]
    pub fn producer_closed(&self) -> bool {
        self.inner.peer_closed()
    }

    /// Whether a producer has attached to this ring at least once.
    #[must_use]
    pub fn producer_seen(&self) -> bool {
        self.inner.peer_seen()
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
    consumer: &'a mut Consumer,
    found: Found,
}

impl Frame<'_> {
    /// The type id its sender gave it (0 unless set).
    #[must_use]
    pub fn type_id(&self) -> u32 {
        self.found.type_id
    }
}

impl core::ops::Deref for Frame<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the payload's `len` bytes are published, within the buffer (checked in
        // `find`), and not released until this frame drops, so the producer does not
        // write them while the slice (bounded by `&self`) lives.
        unsafe { core::slice::from_raw_parts(self.found.payload, self.found.len as usize) }
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        self.consumer.inner.release(self.found.record);
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
    inner: spsc::Builder<u8>,
    capacity: Option<u64>,
    created_capacity: u64,
}

impl Builder {
    /// A builder for the ring at `location` (a name under `/dev/shm`, or a path).
    pub fn new(location: impl Into<Location>) -> Self {
        Self {
            inner: spsc::Builder::new(location).kind(Kind::Stream),
            capacity: None,
            created_capacity: DEFAULT_CAPACITY,
        }
    }

    /// The size in bytes (a power of two, at least [`MIN_CAPACITY`]): used when
    /// creating, and checked when opening. Unset: [`DEFAULT_CAPACITY`] when creating,
    /// any when opening.
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The wait strategy of the handle's blocking calls.
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Self {
        self.inner = self.inner.wait_strategy(wait);
        self
    }

    /// Segment options: permissions, prefault, mlock, huge pages.
    pub fn segment_options(mut self, options: SegmentOptions) -> Self {
        self.inner = self.inner.segment_options(options);
        self
    }

    /// Whether to create, open, or either (the default).
    pub fn mode(mut self, mode: OpenMode) -> Self {
        self.inner = self.inner.mode(mode);
        self
    }

    /// The size in bytes if this call creates the ring, while an opener accepts any
    /// (unlike [`capacity`](Self::capacity), which an opener checks).
    pub fn capacity_if_created(mut self, capacity: u64) -> Self {
        self.created_capacity = capacity;
        self
    }

    fn spsc(&self) -> Result<spsc::Builder<u8>, Error> {
        Ok(match self.capacity {
            Some(capacity) => self.inner.clone().capacity(checked_capacity(capacity)?),
            None => self
                .inner
                .clone()
                .capacity_if_created(checked_capacity(self.created_capacity)?),
        })
    }

    /// Attaches as the producer.
    ///
    /// # Errors
    ///
    /// As `spsc::Builder::producer`; [`Error::InvalidCapacity`]; a segment of another
    /// kind is a `Mismatch`.
    pub fn producer(&self) -> Result<Producer, Error> {
        let inner = self.spsc()?.producer()?;
        checked_capacity(inner.capacity())?;
        Ok(Producer { inner })
    }

    /// Attaches as the consumer; it starts at the first frame no consumer released.
    ///
    /// # Errors
    ///
    /// As [`producer`](Self::producer).
    pub fn consumer(&self) -> Result<Consumer, Error> {
        let inner = self.spsc()?.consumer()?;
        checked_capacity(inner.capacity())?;
        Ok(Consumer { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for capacity in [0, 32, 100, 1 << 33] {
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

    #[test]
    fn a_header_past_what_was_published_is_corruption() {
        let (mut tx, mut rx) = channel(64).unwrap();
        tx.try_send(&[1; 8]).unwrap();
        // Rewrite the published header to claim 40 payload bytes.
        let (at, _) = tx.inner.bytes_at(0);
        // SAFETY: test only; the consumer is not reading concurrently.
        unsafe { at.copy_from_nonoverlapping(header(40, 0).as_ptr(), HEADER_LEN) };
        assert_eq!(
            rx.try_recv().map(|f| f.len()),
            Err(TryRecvError::Corrupted(Corruption::Frame {
                position: 0,
                length: 40,
                room: 16
            }))
        );
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
