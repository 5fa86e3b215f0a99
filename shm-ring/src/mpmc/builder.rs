//! Opening or creating an MPMC ring segment.

use core::marker::PhantomData;

use shm_alloc::Location;

use super::layout::{MpmcLayout, Side};
use super::member::Member;
use super::ring::Ring;
use super::{Consumer, DEFAULT_CAPACITY, DEFAULT_PARTICIPANTS, Producer};
use crate::core::attach::{Settings, attach, settings_setters};
use crate::error::Error;
use crate::message::Message;

/// Opens or creates an MPMC ring segment and attaches a producer or a consumer to it.
///
/// # Examples
///
/// ```
/// use shm_ring::mpmc::Builder;
/// # let name = format!("doc-mpmc-{}", std::process::id());
/// let ring = Builder::<u64>::new(name.as_str()).capacity(64).participants(8);
/// let mut tx = ring.producer()?;
/// let mut rx1 = ring.consumer()?;
/// let mut rx2 = ring.consumer()?;
/// tx.try_send(1).unwrap();
/// tx.try_send(2).unwrap();
/// assert_eq!(rx2.try_recv(), Ok(1));
/// assert_eq!(rx1.try_recv(), Ok(2));
/// # shm_alloc::Segment::remove(&name.as_str().into())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder<T: Message> {
    settings: Settings,
    participants: Option<u32>,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Builder<T> {
    /// A builder for the ring at `location` (a name under `/dev/shm`, or a path).
    pub fn new(location: impl Into<Location>) -> Self {
        Self {
            settings: Settings::new(location.into(), DEFAULT_CAPACITY),
            participants: None,
            _message: PhantomData,
        }
    }

    settings_setters!("slots");

    /// The participant limit, producers and consumers together (`1..=MAX_PARTICIPANTS`):
    /// used when creating, and checked when opening. Unset: [`DEFAULT_PARTICIPANTS`]
    /// when creating, any when opening.
    pub fn participants(mut self, participants: u32) -> Self {
        self.participants = Some(participants);
        self
    }

    /// Attaches a producer, in the first free participant entry (retiring a dead
    /// holder it finds there).
    ///
    /// # Errors
    ///
    /// [`Error::Segment`] for a missing, existing, foreign, mismatched or corrupt
    /// segment; [`Error::ParticipantsFull`] when every entry is held by a live
    /// participant; [`Error::ParticipantsMismatch`]; [`Error::Corrupted`] for an
    /// inconsistent ring; [`Error::InvalidCapacity`], [`Error::InvalidParticipants`].
    pub fn producer(&self) -> Result<Producer<T>, Error> {
        let ring = self.attach()?;
        let me = Member::attach(&ring, Side::Producer, self.settings.wait)?;
        Ok(Producer { ring, me })
    }

    /// Attaches a consumer; it takes messages from the first one no consumer claimed.
    ///
    /// # Errors
    ///
    /// As [`producer`](Self::producer).
    pub fn consumer(&self) -> Result<Consumer<T>, Error> {
        let ring = self.attach()?;
        let me = Member::attach(&ring, Side::Consumer, self.settings.wait)?;
        Ok(Consumer { ring, me })
    }

    fn attach(&self) -> Result<Ring<T>, Error> {
        let layout = MpmcLayout::<T> {
            participants: self.participants.unwrap_or(DEFAULT_PARTICIPANTS),
            expected: self.participants,
            _message: PhantomData,
        };
        Ok(Ring::new(attach(&self.settings, &layout)?))
    }
}
