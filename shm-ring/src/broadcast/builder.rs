//! Opening or creating a broadcast ring segment.

use core::marker::PhantomData;

use shm_alloc::Location;
use shm_sync::atomic::Ordering;

use super::layout::BroadcastLayout;
use super::ring::Ring;
use super::{DEFAULT_CAPACITY, DEFAULT_SUBSCRIBERS, Overflow, Publisher, Start, Subscriber};
use crate::core::attach::{Settings, attach, settings_setters};
use crate::error::{Corruption, Error};
use crate::message::Message;

/// Opens or creates a broadcast ring segment and attaches the publisher or a subscriber
/// to it.
///
/// # Examples
///
/// ```
/// use shm_ring::broadcast::{Builder, Overflow};
/// # let name = format!("doc-broadcast-{}", std::process::id());
/// let ring = Builder::<u64>::new(name.as_str())
///     .capacity(64)
///     .subscribers(8)
///     .overflow(Overflow::Block);
/// let mut tx = ring.publisher()?;
/// let mut strategy_a = ring.subscriber()?;
/// let mut strategy_b = ring.subscriber()?;
/// tx.try_send(1).unwrap();
/// assert_eq!(strategy_a.try_recv(), Ok(1));
/// assert_eq!(strategy_b.try_recv(), Ok(1));
/// # shm_alloc::Segment::remove(&name.as_str().into())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder<T: Message> {
    settings: Settings,
    subscribers: Option<u32>,
    overflow: Option<Overflow>,
    start: Start,
    untether_after: Option<std::time::Duration>,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Builder<T> {
    /// A builder for the ring at `location` (a name under `/dev/shm`, or a path).
    pub fn new(location: impl Into<Location>) -> Self {
        Self {
            settings: Settings::new(location.into(), DEFAULT_CAPACITY),
            subscribers: None,
            overflow: None,
            start: Start::default(),
            untether_after: None,
            _message: PhantomData,
        }
    }

    settings_setters!("slots");

    /// The subscriber limit (`1..=MAX_SUBSCRIBERS`): used when creating, and checked when
    /// opening. Unset: [`DEFAULT_SUBSCRIBERS`] when creating, any when opening.
    pub fn subscribers(mut self, subscribers: u32) -> Self {
        self.subscribers = Some(subscribers);
        self
    }

    /// The overflow policy: used when creating, and checked when opening. Unset:
    /// [`Overflow::Lap`] when creating, any when opening.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }

    /// Where a new subscriber starts ([`Start::Newest`] unless set).
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// The publisher's untether time under `Block`
    /// ([`Publisher::set_untether_after`]): a live subscriber that holds it back longer
    /// is dropped to lapped mode. Unset: the publisher waits for ever.
    pub fn untether_after(mut self, after: std::time::Duration) -> Self {
        self.untether_after = Some(after);
        self
    }

    /// Attaches the publisher. One that attaches after a publisher died goes on after
    /// the last message that one published (a slot it left half-written is skipped).
    ///
    /// # Errors
    ///
    /// [`Error::PublisherTaken`] while another publisher lives; [`Error::Segment`] for a
    /// missing, existing, foreign, mismatched or corrupt segment;
    /// [`Error::ParticipantsMismatch`], [`Error::OverflowMismatch`];
    /// [`Error::Corrupted`] for an inconsistent ring; [`Error::InvalidCapacity`],
    /// [`Error::InvalidParticipants`].
    pub fn publisher(&self) -> Result<Publisher<T>, Error> {
        let mut publisher = Publisher::attach(self.attach()?, self.settings.wait)?;
        publisher.set_untether_after(self.untether_after);
        Ok(publisher)
    }

    /// Attaches a subscriber in the first free entry, starting where
    /// [`start`](Self::start) says. Its mapping of the slots is read-only: a write into a
    /// slot from its process faults (`SIGSEGV`) instead of corrupting what others read
    /// (whole pages; on hugetlbfs, whole huge pages).
    ///
    /// # Errors
    ///
    /// [`Error::ParticipantsFull`] when every entry is held by a live subscriber;
    /// otherwise as [`publisher`](Self::publisher).
    pub fn subscriber(&self) -> Result<Subscriber<T>, Error> {
        Subscriber::attach(self.read_only()?, None, self.start, self.settings.wait)
    }

    /// Attaches the subscriber of id `id` (`0..subscriber_limit`): it resumes where the
    /// last subscriber of that id stopped (left, or died), or starts where
    /// [`start`](Self::start) says if there was none. Messages overwritten since are
    /// reported by its first receive as `Lagged`.
    ///
    /// # Errors
    ///
    /// [`Error::SubscriberTaken`] while a live subscriber holds the id;
    /// [`Error::InvalidSubscriber`] for an id out of range; otherwise as
    /// [`publisher`](Self::publisher).
    pub fn subscriber_with_id(&self, id: u32) -> Result<Subscriber<T>, Error> {
        Subscriber::attach(self.read_only()?, Some(id), self.start, self.settings.wait)
    }

    /// A mapping of the ring whose slots are read-only: a subscriber's. A stray write
    /// into a slot (a bug of the subscriber's process) then faults in that process,
    /// instead of corrupting what the other subscribers read.
    fn read_only(&self) -> Result<Ring<T>, Error> {
        let ring = self.attach()?;
        ring.region.protect_slots()?;
        Ok(ring)
    }

    fn attach(&self) -> Result<Ring<T>, Error> {
        let layout = BroadcastLayout::<T> {
            subscribers: self.subscribers.unwrap_or(DEFAULT_SUBSCRIBERS),
            expected: self.subscribers,
            overflow: self.overflow.unwrap_or_default(),
            _message: PhantomData,
        };
        let region = attach(&self.settings, &layout)?;
        // Relaxed: written by the creator before the segment was published (READY).
        let word = region.control().config.overflow.load(Ordering::Relaxed);
        let found = Overflow::from_word(word).ok_or(Error::Corrupted(Corruption::State {
            word: "the broadcast ring's overflow policy",
            found: word,
            expected: "1 (lap) or 2 (block)",
        }))?;
        match self.overflow {
            Some(expected) if expected != found => Err(Error::OverflowMismatch { expected, found }),
            _ => Ok(Ring::new(region, found)),
        }
    }
}
