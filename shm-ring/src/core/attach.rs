//! How a ring's segment is created, opened and checked: one [`Layout`] trait that each
//! flavour implements (its identity, its capacity rule, what its creator writes, how
//! many participant entries an opened segment has), and one [`attach`] that drives
//! `shm_alloc::Segment` with it, in the [`OpenMode`] asked for, with the segment's one
//! retry policy for racing creators
//! ([`Segment::open_or_create_with`](shm_alloc::Segment::open_or_create_with)).

use shm_alloc::{Expect, Kind, Location, Segment, SegmentOptions, SegmentSpec};
use shm_sync::WaitStrategy;

use super::region::{Region, offsets};
use crate::error::{Corruption, Error};
use crate::message::Message;

/// How a builder gets its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Create the segment; fail if it exists.
    Create,
    /// Open an existing segment; fail if there is none.
    Open,
    /// Open the segment, or create it if there is none: either side may start first.
    #[default]
    OpenOrCreate,
}

/// What a segment holds, as its header records it: the kind, and the message type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Identity {
    pub(crate) kind: Kind,
    /// The message type's fingerprint; 0 for untyped kinds.
    pub(crate) type_fingerprint: u64,
    pub(crate) type_name: &'static str,
}

impl Identity {
    /// A segment of `kind` carrying messages of type `T`.
    pub(crate) fn of<T: Message>(kind: Kind) -> Self {
        Identity {
            kind,
            type_fingerprint: T::FINGERPRINT,
            type_name: T::TYPE_NAME,
        }
    }
}

/// What every flavour's builder holds: where the ring is, its capacity, how handles wait,
/// how the segment is mapped, and whether to create or open it.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) location: Location,
    /// Used when creating, checked when opening; `None`: `default_capacity` when
    /// creating, any when opening.
    pub(crate) capacity: Option<u64>,
    pub(crate) default_capacity: u64,
    pub(crate) wait: WaitStrategy,
    pub(crate) options: SegmentOptions,
    pub(crate) mode: OpenMode,
}

impl Settings {
    /// Defaults for the ring at `location`.
    pub(crate) fn new(location: Location, default_capacity: u64) -> Self {
        Settings {
            location,
            capacity: None,
            default_capacity,
            wait: WaitStrategy::default(),
            options: SegmentOptions::default(),
            mode: OpenMode::default(),
        }
    }
}

/// Generates a builder's setters of the [`Settings`] in its field `settings`, with their
/// docs, once for every flavour.
macro_rules! settings_setters {
    ($unit:literal) => {
        #[doc = concat!("The capacity in ", $unit, " (a power of two): used when creating, and")]
        /// checked when opening. Unset: the flavour's `DEFAULT_CAPACITY` when creating,
        /// any when opening.
        pub fn capacity(mut self, capacity: u64) -> Self {
            self.settings.capacity = Some(capacity);
            self
        }

        /// The wait strategy of the handles' blocking calls.
        pub fn wait_strategy(mut self, wait: shm_sync::WaitStrategy) -> Self {
            self.settings.wait = wait;
            self
        }

        /// Segment options: permissions, prefault, mlock, huge pages.
        pub fn segment_options(mut self, options: shm_alloc::SegmentOptions) -> Self {
            self.settings.options = options;
            self
        }

        /// Whether to create, open, or either (the default).
        pub fn mode(mut self, mode: $crate::OpenMode) -> Self {
            self.settings.mode = mode;
            self
        }
    };
}
pub(crate) use settings_setters;

/// A flavour's layout of its segment: the types of its region, and its rules.
pub(crate) trait Layout {
    /// The control block at the start of the data region.
    type Control;
    /// A participant entry (`()` for a flavour without a participant table).
    type Entry;
    /// A slot.
    type Slot;

    /// The kind and message type the header records.
    fn identity(&self) -> Identity;

    /// Checks a capacity against the flavour's rules.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCapacity`], [`Error::UnsupportedAlignment`].
    fn check_capacity(&self, capacity: u64) -> Result<(), Error>;

    /// How many participant entries a creator lays out.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParticipants`].
    fn entries(&self) -> Result<u32, Error> {
        Ok(0)
    }

    /// Writes what a creator records in the control block besides the all-zero state (a
    /// broadcast ring's overflow policy), before the segment is published: an opener
    /// never sees it unwritten.
    fn init(&self, _control: &Self::Control) {}

    /// Checks the participant entries an opened segment's header records (covered by
    /// its checksum) against this flavour's range and what this opener requires.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupted`] for a count out of range, or a mismatch error.
    fn opened_entries(&self, recorded: u32) -> Result<u32, Error> {
        match recorded {
            0 => Ok(0),
            found => Err(Error::Corrupted(Corruption::State {
                word: "the header's participant entries",
                found,
                expected: "0 (this kind has no participant table)",
            })),
        }
    }
}

/// The region of a layout's types.
pub(crate) type LayoutRegion<L> =
    Region<<L as Layout>::Control, <L as Layout>::Entry, <L as Layout>::Slot>;

/// Creates, opens, or opens-or-creates the segment `settings` names, checks it against
/// `layout`, and lays a region over it.
///
/// # Errors
///
/// [`Error::Segment`] for a missing, existing, foreign, mismatched or corrupt segment;
/// [`Error::Corrupted`] with [`Corruption::Layout`] when the header's capacity and participant
/// entries do not fit the data region; the layout's own errors (entries out of range, or
/// not what this opener requires).
pub(crate) fn attach<L: Layout>(settings: &Settings, layout: &L) -> Result<LayoutRegion<L>, Error> {
    let capacity = settings.capacity.unwrap_or(settings.default_capacity);
    layout.check_capacity(capacity)?;
    let entries = layout.entries()?;
    let created = offsets::<L::Control, L::Entry, L::Slot>(entries, capacity)
        .ok_or(Error::InvalidCapacity(capacity))?;
    let identity = layout.identity();
    let spec = SegmentSpec {
        kind: identity.kind,
        capacity,
        slot_size: size_of::<L::Slot>() as u64,
        slot_align: align_of::<L::Slot>() as u64,
        type_fingerprint: identity.type_fingerprint,
        type_name: identity.type_name,
        data_len: created.len,
        entries,
    };
    // The layout checks the entries (`opened_entries`), with errors of its own.
    let expect = Expect {
        capacity: settings.capacity,
        entries: None,
        ..Expect::from(&spec)
    };
    let (location, options) = (&settings.location, &settings.options);
    let init = |segment: &Segment| {
        // SAFETY: the data region starts with the control block (`offsets`), is at least
        // `created.len` bytes long and page-aligned; any bytes are a valid control block
        // (atomics), which only the creator maps yet.
        layout.init(unsafe { segment.data().cast::<L::Control>().as_ref() });
    };
    let segment = match settings.mode {
        OpenMode::Create => Segment::create_with(location, &spec, options, init)?,
        OpenMode::Open => Segment::open(location, &expect, options)?,
        OpenMode::OpenOrCreate => {
            Segment::open_or_create_with(location, &spec, &expect, options, init)?.0
        }
    };
    let capacity = segment.header().capacity;
    let region = segment.data_len() as u64;
    let layout_error = Error::Corrupted(Corruption::Layout {
        capacity,
        data_len: region,
    });
    // The layout's length (checked below) covers the control block: no check of its own.
    if layout.check_capacity(capacity).is_err() {
        return Err(layout_error);
    }
    let entries = layout.opened_entries(segment.header().entries)?;
    match offsets::<L::Control, L::Entry, L::Slot>(entries, capacity) {
        Some(offsets) if offsets.len <= region => {}
        _ => return Err(layout_error),
    }
    // SAFETY: (1) `capacity` passed the flavour's check (a power of two) and the region
    // holds the whole layout (checked above); (2) each flavour's control, entry and slot
    // types are atomics and `FromBytes` messages, aligned to at most 128.
    Ok(unsafe { Region::in_segment(segment, entries, capacity) })
}
