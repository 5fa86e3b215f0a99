//! Opening or creating an SPSC ring segment.

use core::marker::PhantomData;

use shm_alloc::{Kind, Location};

use super::layout::SpscLayout;
use super::ring::{Ring, Side};
use super::{Consumer, DEFAULT_CAPACITY, Producer};
use crate::core::attach::{Identity, Settings, attach, settings_setters};
use crate::error::Error;
use crate::message::Message;

/// Opens or creates an SPSC ring segment and attaches one side to it.
///
/// # Examples
///
/// ```
/// use shm_ring::spsc::Builder;
/// # let name = format!("doc-spsc-{}", std::process::id());
/// let mut tx = Builder::<u64>::new(name.as_str()).capacity(64).producer()?;
/// let mut rx = Builder::<u64>::new(name.as_str()).consumer()?;
/// tx.try_send(1).unwrap();
/// assert_eq!(rx.try_recv(), Ok(1));
/// # shm_alloc::Segment::remove(&name.as_str().into())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder<T: Message> {
    settings: Settings,
    /// The kind and type the header records: `spsc` and `T`, unless a flavour built on
    /// this ring's chunks set its own.
    identity: Identity,
    /// The smallest capacity accepted: 1, unless a flavour built on this ring needs more.
    min_capacity: u64,
    _message: PhantomData<fn() -> T>,
}

impl<T: Message> Builder<T> {
    /// A builder for the ring at `location` (a name under `/dev/shm`, or a path).
    pub fn new(location: impl Into<Location>) -> Self {
        Self::with_identity(
            Settings::new(location.into(), DEFAULT_CAPACITY),
            Identity::of::<T>(Kind::Spsc),
            1,
        )
    }

    /// A builder of a ring of `T` slots recorded under `identity` (another kind, built
    /// on this ring's chunks), of at least `min_capacity` slots.
    pub(crate) fn with_identity(settings: Settings, identity: Identity, min_capacity: u64) -> Self {
        Self {
            settings,
            identity,
            min_capacity,
            _message: PhantomData,
        }
    }

    settings_setters!("slots");

    /// Attaches as the producer.
    ///
    /// # Errors
    ///
    /// [`Error::Segment`] for a missing, existing, foreign, mismatched or corrupt segment,
    /// or with `RoleTaken` when another producer is attached; [`Error::Corrupted`] for
    /// inconsistent positions; [`Error::InvalidCapacity`].
    pub fn producer(&self) -> Result<Producer<T>, Error> {
        Producer::attach(self.side(Side::Producer)?)
    }

    /// Attaches as the consumer; it starts at the first message no consumer released.
    ///
    /// # Errors
    ///
    /// As [`producer`](Self::producer).
    pub fn consumer(&self) -> Result<Consumer<T>, Error> {
        Consumer::attach(self.side(Side::Consumer)?)
    }

    fn side(&self, side: Side) -> Result<Ring<T>, Error> {
        let layout = SpscLayout::<T> {
            identity: self.identity,
            min_capacity: self.min_capacity,
            _message: PhantomData,
        };
        Ring::new(attach(&self.settings, &layout)?, side, self.settings.wait)
    }
}
