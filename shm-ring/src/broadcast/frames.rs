//! Variable-size frames through a broadcast ring: every subscriber receives every frame
//! whole, in order, or is told exactly how many frames it lost.
//!
//! A frame travels as consecutive [`Cell`]s of a broadcast ring of cells: each cell
//! carries the frame's number, its length, the offset of the cell's piece in the frame,
//! and up to [`CELL_BYTES`] bytes of it (a cell and its stamp fill one 128-byte slot).
//! The cells are the ring's messages, so everything the ring guarantees holds for each
//! (a torn cell is never returned; `Lap` and `Block`; subscribers resumed under their
//! id; a publisher that dies mid-write leaves a skipped slot), and a
//! [`FrameSubscriber`] puts the pieces back together:
//!
//! - A frame is returned only when all its cells arrived in order; a frame whose cells
//!   were overwritten before they were read (`Lap`), or cut short by a publisher that
//!   died, is lost. Frame numbers make the count of lost frames exact, as Aeron's
//!   broadcast receiver's lapped count is not: after a lag the subscriber skips to the
//!   next frame's first cell and reports `Lagged { missed }` with the frames between.
//! - Under `Block` a publisher waits for room for the whole frame before it writes its
//!   first cell, so a frame is never left half-published by a deadline or by `Full`.
//!
//! The largest frame is half the ring: `capacity / 2` cells, [`FramePublisher::max_len`]
//! bytes; a subscriber can always hold a whole frame's cells while the publisher writes
//! the next.
//!
//! Each cell is copied in and out whole (120 bytes): a frame of `n` bytes costs
//! `ceil(n / 104)` publishes and receives. For a fixed-size message, a typed ring is
//! cheaper; for large payloads, send pool chunks ([`chunks`](super::chunks)), which
//! are never copied.
//!
//! # Examples
//!
//! ```
//! use shm_ring::broadcast::{self, frames::{Cell, FramePublisher, FrameSubscriber}};
//!
//! let (publisher, subscriber) = broadcast::channel::<Cell>(64, broadcast::Overflow::Lap)?;
//! let mut publisher = FramePublisher::new(publisher);
//! let mut subscriber = FrameSubscriber::new(subscriber);
//! publisher.try_send(b"a short quote")?;
//! publisher.try_send(&[7u8; 1000])?;
//! assert_eq!(subscriber.try_recv()?, b"a short quote");
//! assert_eq!(subscriber.try_recv()?, &[7u8; 1000][..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Instant;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout::PUBLISHED;
use super::ring::Ring;
use super::subscriber::Delivery;
use super::{Publisher, RecvError, RecvTimeoutError, Subscriber, TryRecvError};
use crate::core::blocking::Refusal;
use crate::error::Corruption;
use crate::message::Message;

/// Frame bytes per cell.
pub const CELL_BYTES: usize = 104;

/// One piece of a frame: the message type of a frame ring (create it as a broadcast
/// ring of `Cell`s). 120 bytes: a 16-byte header, then the piece.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Cell {
    /// The frame's number: 0 for the first frame the ring carried, then one more for each.
    frame: u64,
    /// The frame's length, in bytes.
    len: u32,
    /// Where this cell's piece starts in the frame, in bytes: a multiple of
    /// [`CELL_BYTES`], 0 for the frame's first cell.
    offset: u32,
    /// The piece: the frame's bytes from `offset`, at most [`CELL_BYTES`].
    bytes: [u8; CELL_BYTES],
}

impl Message for Cell {
    const TYPE_NAME: &'static str = "shm-ring broadcast frame cell/v1";
}

const _: () = assert!(size_of::<Cell>() == 120);

/// Why a [`FramePublisher`] did not publish a frame: the stream ring's error, as a
/// frame is refused for the same reasons (`TooLarge`, `Full`, `Timeout`, `Corrupted`;
/// never `Disconnected`: a broadcast ring takes frames while no subscriber is attached).
pub use crate::stream::SendError;

/// Publishes frames of any length up to [`max_len`](Self::max_len) through a broadcast
/// ring of [`Cell`]s.
#[derive(Debug)]
pub struct FramePublisher {
    publisher: Publisher<Cell>,
    /// The number of the next frame.
    frame: u64,
}

impl FramePublisher {
    /// Publishes frames through `publisher`'s ring, numbered on from the last frame the
    /// ring holds (a publisher that attaches after another goes on with its numbers).
    #[must_use]
    pub fn new(publisher: Publisher<Cell>) -> Self {
        let ring = &publisher.ring;
        let tail = publisher.tail;
        // The newest published cell: its frame is the last one numbered.
        let frame = (tail.saturating_sub(ring.capacity())..tail)
            .rev()
            .find_map(|position| published(ring, position))
            .map(|cell| cell.frame.wrapping_add(1))
            .unwrap_or(0);
        FramePublisher { publisher, frame }
    }

    /// The longest frame this ring carries, in bytes: half its cells' pieces.
    #[must_use]
    pub fn max_len(&self) -> usize {
        max_len(self.publisher.capacity())
    }

    /// Publishes `frame` if the ring has room for all of it now (always under `Lap`).
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`]; [`SendError::Full`] under `Block` while the slowest
    /// subscriber leaves no room for the whole frame (nothing is published);
    /// [`SendError::Corrupted`].
    pub fn try_send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.put(frame, None)
    }

    /// Publishes `frame`, waiting under `Block` until the ring has room for all of it.
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`], [`SendError::Corrupted`].
    pub fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.put(frame, Some(None))
    }

    /// Publishes `frame`, waiting under `Block` at most until `deadline` for room for
    /// all of it.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] (nothing is published), otherwise as [`send`](Self::send).
    pub fn send_deadline(&mut self, frame: &[u8], deadline: Instant) -> Result<(), SendError> {
        self.put(frame, Some(Some(deadline)))
    }

    fn put(&mut self, frame: &[u8], deadline: Option<Option<Instant>>) -> Result<(), SendError> {
        let max = self.max_len();
        if frame.len() > max {
            return Err(SendError::TooLarge {
                len: frame.len(),
                max,
            });
        }
        let cells = cells(frame.len());
        self.publisher
            .reserve(cells as u64, deadline)
            .map_err(|refused| match refused {
                Refusal::Busy if deadline.is_none() => SendError::Full,
                Refusal::Busy | Refusal::Disconnected => SendError::Timeout,
                Refusal::Corrupted(c) => SendError::Corrupted(c),
            })?;
        for index in 0..cells {
            let offset = index * CELL_BYTES;
            let piece = &frame[offset..frame.len().min(offset + CELL_BYTES)];
            let mut cell = Cell {
                frame: self.frame,
                // At most half the ring's pieces: below 2^32 for any capacity up to
                // `MAX_CAPACITY`.
                len: frame.len() as u32,
                offset: offset as u32,
                bytes: [0; CELL_BYTES],
            };
            cell.bytes[..piece.len()].copy_from_slice(piece);
            // The room is reserved: the publish does not wait, and is refused only for
            // a corrupt table.
            self.publisher.try_send(cell).map_err(|e| match e {
                crate::error::TrySendError::Corrupted(_, c) => SendError::Corrupted(c),
                _ => SendError::Full,
            })?;
        }
        self.frame = self.frame.wrapping_add(1);
        Ok(())
    }

    /// Whether a frame of `len` bytes would be published now (or refused at once),
    /// without publishing: what an async send of it waits for.
    #[cfg(not(loom))]
    pub(crate) fn ready_for(&mut self, len: usize, probe: bool) -> bool {
        len > self.max_len() || self.publisher.ready_for(cells(len) as u64, probe)
    }

    /// The ring's publisher of cells underneath: its stats count cells.
    #[must_use]
    pub fn publisher(&self) -> &Publisher<Cell> {
        &self.publisher
    }

    /// How many frames were published through the ring: the number of the next.
    #[must_use]
    pub fn published(&self) -> u64 {
        self.frame
    }
}

/// The cell published at `position`, if the slot still holds it.
fn published(ring: &Ring<Cell>, position: u64) -> Option<Cell> {
    ring.written(position)
        .and_then(|(state, cell)| (state == PUBLISHED).then_some(cell))
}

/// The cells a frame of `len` bytes takes (an empty frame takes one).
fn cells(len: usize) -> usize {
    len.div_ceil(CELL_BYTES).max(1)
}

fn max_len(capacity: u64) -> usize {
    (capacity / 2).max(1) as usize * CELL_BYTES
}

/// Receives whole frames from a broadcast ring of [`Cell`]s, in order.
#[derive(Debug)]
pub struct FrameSubscriber {
    subscriber: Subscriber<Cell>,
    /// The frame being put together, or the whole frame last received.
    buffer: Vec<u8>,
    /// The number and length of the frame being put together.
    assembling: Option<(u64, u32)>,
    /// The number of the next frame; `None` before the first.
    next: Option<u64>,
    /// Frames cut short since the last report (their cells lost or skipped).
    cut: u64,
    /// A whole frame is in `buffer`, found by the receive that reported a loss.
    ready: bool,
    received: u64,
    missed: u64,
}

impl FrameSubscriber {
    /// Receives the frames of `subscriber`'s ring, from the first frame that starts at
    /// or after its position (one it joins in the middle of is skipped, unreported).
    /// Frames lost after that are counted: the number of the next frame is that of the
    /// cell before the position, plus one (or 0 at position 0).
    #[must_use]
    pub fn new(subscriber: Subscriber<Cell>) -> Self {
        let position = subscriber.position();
        let next = match position.checked_sub(1) {
            None => Some(0),
            // A cell overwritten meanwhile tells nothing: the first frame read sets the
            // count going.
            Some(before) => {
                published(subscriber.ring(), before).map(|cell| cell.frame.wrapping_add(1))
            }
        };
        FrameSubscriber {
            subscriber,
            buffer: Vec::new(),
            assembling: None,
            next,
            cut: 0,
            ready: false,
            received: 0,
            missed: 0,
        }
    }

    /// Receives the next whole frame, if all its cells are published, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] (a frame's first cells may be taken meanwhile; the call
    /// after goes on with the rest); [`TryRecvError::Lagged`] with the exact number of
    /// frames lost (overwritten, or cut short by a publisher that died), after which the
    /// next call returns the frame that follows them; [`TryRecvError::Untethered`],
    /// [`TryRecvError::Disconnected`]; [`TryRecvError::Corrupted`] for a cell whose
    /// header no publisher writes.
    pub fn try_recv(&mut self) -> Result<&[u8], TryRecvError> {
        match self.receive(None) {
            Ok(()) => Ok(&self.buffer),
            Err(RecvTimeoutError::Timeout) => Err(TryRecvError::Empty),
            Err(RecvTimeoutError::Lagged { missed }) => Err(TryRecvError::Lagged { missed }),
            Err(RecvTimeoutError::Untethered) => Err(TryRecvError::Untethered),
            Err(RecvTimeoutError::Disconnected) => Err(TryRecvError::Disconnected),
            Err(RecvTimeoutError::Corrupted(c)) => Err(TryRecvError::Corrupted(c)),
        }
    }

    /// Receives the next whole frame, waiting with the subscriber's wait strategy.
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv), but never `Empty`.
    pub fn recv(&mut self) -> Result<&[u8], RecvError> {
        self.receive(Some(None)).map_err(RecvError::from)?;
        Ok(&self.buffer)
    }

    /// Receives the next whole frame, waiting at most until `deadline`.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`], otherwise as [`try_recv`](Self::try_recv).
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<&[u8], RecvTimeoutError> {
        self.receive(Some(Some(deadline)))?;
        Ok(&self.buffer)
    }

    /// Puts the next frame together in `buffer`.
    fn receive(&mut self, deadline: Option<Option<Instant>>) -> Result<(), RecvTimeoutError> {
        if self.ready {
            self.ready = false;
            self.received += 1;
            return Ok(());
        }
        loop {
            let cell = match self.subscriber.receive(deadline, &mut |_| true) {
                Ok(Delivery::Message(cell)) => cell,
                // Cells lost: the frame being put together with them. How many frames,
                // the next first cell's number says.
                Ok(Delivery::Lagged(_)) => {
                    self.cut_short();
                    continue;
                }
                Ok(Delivery::Untethered) => return Err(RecvTimeoutError::Untethered),
                Err(Refusal::Disconnected) => {
                    // A frame its publisher did not finish is lost.
                    self.cut_short();
                    if self.cut > 0 {
                        return Err(self.report(false));
                    }
                    return Err(RecvTimeoutError::Disconnected);
                }
                Err(refusal) => return Err(refusal.into()),
            };
            let position = self.subscriber.position().wrapping_sub(1);
            let max = max_len(self.subscriber.capacity());
            let (len, offset) = (cell.len as usize, cell.offset as usize);
            if len > max || offset % CELL_BYTES != 0 || (offset > 0 && offset >= len) {
                return Err(RecvTimeoutError::Corrupted(Corruption::Frame {
                    position,
                    length: cell.len.into(),
                    room: max as u64,
                }));
            }
            let piece = &cell.bytes[..(len - offset).min(CELL_BYTES)];
            if offset == 0 {
                self.cut_short();
                if let Some(next) = self.next {
                    if cell.frame < next {
                        return Err(RecvTimeoutError::Corrupted(Corruption::Frame {
                            position,
                            length: cell.len.into(),
                            room: max as u64,
                        }));
                    }
                    self.cut += cell.frame - next;
                }
                self.next = Some(cell.frame.wrapping_add(1));
                self.assembling = Some((cell.frame, cell.len));
                self.buffer.clear();
                self.buffer.extend_from_slice(piece);
            } else if self.assembling == Some((cell.frame, cell.len)) && offset == self.buffer.len()
            {
                self.buffer.extend_from_slice(piece);
            } else {
                // A piece of a frame whose start this subscriber never read (it joined,
                // or lost cells, in the middle of it): passed over.
                self.cut_short();
                continue;
            }
            let whole = self.buffer.len() == len;
            if whole {
                self.assembling = None;
            }
            if self.cut > 0 {
                return Err(self.report(whole));
            }
            if whole {
                self.received += 1;
                return Ok(());
            }
        }
    }

    /// Counts the frame being put together, if any, as cut short.
    fn cut_short(&mut self) {
        if self.assembling.take().is_some() {
            self.cut += 1;
        }
    }

    /// Reports the frames cut short, and keeps a whole frame found meanwhile (`ready`)
    /// for the next call.
    fn report(&mut self, ready: bool) -> RecvTimeoutError {
        let missed = core::mem::take(&mut self.cut);
        self.missed += missed;
        self.ready = ready;
        RecvTimeoutError::Lagged { missed }
    }

    /// Frames received whole.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Frames lost (reported in `Lagged`).
    #[must_use]
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The ring's subscriber of cells underneath: its stats count cells.
    #[must_use]
    pub fn subscriber(&self) -> &Subscriber<Cell> {
        &self.subscriber
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::{Overflow, channel};

    /// A frame of `len` bytes, different for every length and number.
    fn frame(seq: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                (i as u64)
                    .wrapping_mul(31)
                    .wrapping_add(seq * 7 + len as u64) as u8
            })
            .collect()
    }

    #[test]
    fn frames_of_every_length_arrive_whole_and_in_order() {
        let (publisher, first) = channel::<Cell>(16, Overflow::Lap).unwrap();
        let second = publisher.subscribe().unwrap();
        let mut publisher = FramePublisher::new(publisher);
        assert_eq!(publisher.max_len(), 8 * CELL_BYTES);
        let lengths = [0, 1, 103, 104, 105, 207, 208, 209, 500, 832];
        let mut subscribers = [FrameSubscriber::new(first), FrameSubscriber::new(second)];
        for (seq, &len) in lengths.iter().enumerate() {
            publisher.try_send(&frame(seq as u64, len)).unwrap();
            for s in &mut subscribers {
                assert_eq!(s.try_recv().unwrap(), frame(seq as u64, len));
            }
        }
        assert_eq!(publisher.published(), lengths.len() as u64);
        for s in &mut subscribers {
            assert_eq!(s.try_recv(), Err(TryRecvError::Empty));
            assert_eq!((s.received(), s.missed()), (lengths.len() as u64, 0));
        }
    }

    #[test]
    fn a_frame_longer_than_half_the_ring_is_refused() {
        let (publisher, _subscriber) = channel::<Cell>(16, Overflow::Lap).unwrap();
        let mut publisher = FramePublisher::new(publisher);
        assert_eq!(
            publisher.try_send(&[0; 833]),
            Err(SendError::TooLarge { len: 833, max: 832 })
        );
        assert_eq!(publisher.publisher().published(), 0, "no cell published");
    }

    /// 20 frames of 3 cells through 16 cells: the subscriber that read nothing is told
    /// it lost frames 0 to 14 (the ring still holds the last cell of 14, passed over),
    /// then receives 15 to 19 whole.
    #[test]
    fn a_lapped_subscriber_is_told_exactly_how_many_frames_it_lost() {
        let (publisher, subscriber) = channel::<Cell>(16, Overflow::Lap).unwrap();
        let mut publisher = FramePublisher::new(publisher);
        let mut subscriber = FrameSubscriber::new(subscriber);
        for seq in 0..20 {
            publisher.try_send(&frame(seq, 300)).unwrap();
        }
        assert_eq!(
            subscriber.try_recv(),
            Err(TryRecvError::Lagged { missed: 15 })
        );
        for seq in 15..20 {
            assert_eq!(subscriber.try_recv().unwrap(), frame(seq, 300));
        }
        assert_eq!(subscriber.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(subscriber.received() + subscriber.missed(), 20);
    }

    /// Under `Block` a frame is published whole or not at all: `Full` while the slowest
    /// subscriber leaves no room for all its cells, though there is room for some.
    #[test]
    fn block_publishes_a_frame_only_when_all_of_it_fits() {
        let (publisher, subscriber) = channel::<Cell>(16, Overflow::Block).unwrap();
        let mut publisher = FramePublisher::new(publisher);
        let mut subscriber = FrameSubscriber::new(subscriber);
        publisher.try_send(&frame(0, 700)).unwrap();
        publisher.try_send(&frame(1, 700)).unwrap();
        assert_eq!(publisher.try_send(&frame(2, 300)), Err(SendError::Full));
        assert_eq!(
            publisher.send_deadline(&frame(2, 300), Instant::now()),
            Err(SendError::Timeout)
        );
        assert_eq!(publisher.publisher().published(), 14, "no cell of frame 2");
        publisher.try_send(&frame(2, 200)).unwrap();
        assert_eq!(subscriber.try_recv().unwrap(), frame(0, 700));
        publisher.try_send(&frame(3, 300)).unwrap();
        for (seq, len) in [(1, 700), (2, 200), (3, 300)] {
            assert_eq!(subscriber.try_recv().unwrap(), frame(seq, len));
        }
    }

    /// A cell whose header no publisher writes (a length past the largest frame, a piece
    /// offset that is not a multiple of the piece size, or a frame number that goes
    /// back) is `Corrupted`.
    #[test]
    fn impossible_cells_are_corrupted() {
        let cell = |frame, len, offset| Cell {
            frame,
            len,
            offset,
            bytes: [0; CELL_BYTES],
        };
        for bad in [
            vec![cell(0, 833, 0)],
            vec![cell(0, 300, 0), cell(0, 300, 50)],
            vec![
                cell(0, 300, 0),
                cell(0, 300, 104),
                cell(0, 300, 208),
                cell(0, 10, 0),
            ],
        ] {
            let (mut publisher, subscriber) = channel::<Cell>(16, Overflow::Lap).unwrap();
            let mut subscriber = FrameSubscriber::new(subscriber);
            for c in bad {
                publisher.try_send(c).unwrap();
            }
            let mut result = subscriber.try_recv().map(<[u8]>::to_vec);
            if result.is_ok() {
                result = subscriber.try_recv().map(<[u8]>::to_vec);
            }
            assert!(
                matches!(
                    result,
                    Err(TryRecvError::Corrupted(Corruption::Frame { .. }))
                ),
                "{result:?}"
            );
        }
    }

    /// The publisher gone with a frame half-published (its last cells never written):
    /// that frame counts as lost, then `Disconnected`.
    #[test]
    fn a_frame_its_publisher_left_unfinished_is_lost() {
        let (mut publisher, subscriber) = channel::<Cell>(16, Overflow::Lap).unwrap();
        let mut subscriber = FrameSubscriber::new(subscriber);
        publisher
            .try_send(Cell {
                frame: 0,
                len: 300,
                offset: 0,
                bytes: [1; CELL_BYTES],
            })
            .unwrap();
        drop(publisher);
        assert_eq!(
            subscriber.try_recv(),
            Err(TryRecvError::Lagged { missed: 1 })
        );
        assert_eq!(subscriber.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(subscriber.missed(), 1);
    }
}

crate::wait_set::waitable_as!([] FramePublisher, publisher);

crate::wait_set::waitable!(
    [] FrameSubscriber,
    ready: |this, probe| this.ready || this.subscriber.ready(probe),
    event: |this| crate::Waitable::wake_event(&this.subscriber),
    region: |this| this.subscriber.ring().region,
);
