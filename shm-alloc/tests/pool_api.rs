//! The pool's documented promises at its public API, one test each: what a handle that
//! leaves returns (and what it leaves alone), that any participant may receive a chunk
//! addressed to another, the refusals of the builder (participants full, other size
//! classes, classes that cannot be laid out) and of `receive` (a header of another class,
//! a stale generation), and the typed views of short payloads and over-aligned types.

use shm_sync::atomic::AtomicU64;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use shm_alloc::pool::{CHUNK_ALIGN, ClassStats, Pool, SizeClass};
use shm_alloc::{Error, Readers, Segment, ShmOffset};
use shm_testkit::ShmName;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A class's counts as `(free, loaned, in_flight, held)`.
fn counts(stats: ClassStats) -> (u64, u64, u64, u64) {
    (stats.free, stats.loaned, stats.in_flight, stats.held)
}

/// A type aligned to twice a chunk's alignment.
#[repr(C, align(256))]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
struct Aligned256([u8; 256]);

/// A type aligned to exactly a chunk's alignment.
#[repr(C, align(128))]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
struct Aligned128([u8; 128]);

/// `Pool`'s `Drop` returns every chunk still recorded as the leaving participant's: two
/// chunks in flight to it and never received, a loan leaked with `mem::forget`, and a
/// sample leaked likewise; and nothing else: the chunks another participant holds (a
/// loan, a chunk in flight to itself) and a chunk in flight to no one stay as they were.
/// The offsets of the returned chunks are then stale. Catches a drop that sweeps nothing
/// (the counts stay), or sweeps by the wrong holder or every holder (the other's chunks
/// would come back too).
#[test]
#[cfg_attr(miri, ignore)]
fn a_dropped_pool_returns_the_chunks_recorded_as_its_own_and_no_others() {
    let name = ShmName::new("pool-drop");
    let a = Pool::builder(name.as_str())
        .class(128, 8)
        .participants(2)
        .create()
        .unwrap();
    let b = Pool::builder(name.as_str()).open().unwrap();
    let to_b: Vec<ShmOffset> = (0..2)
        .map(|_| a.loan(8).unwrap().into_offset_for(b.participant()))
        .collect();
    core::mem::forget(b.loan(8).unwrap());
    let received = a.loan(8).unwrap().into_offset_for(b.participant());
    core::mem::forget(b.receive(received).unwrap());
    let to_anyone = a.loan(8).unwrap().into_offset();
    let to_a = a.loan(8).unwrap().into_offset_for(a.participant());
    let kept = a.loan(8).unwrap();
    assert_eq!(counts(a.stats().classes[0]), (1, 2, 4, 1));

    drop(b);

    assert_eq!(counts(a.stats().classes[0]), (5, 1, 2, 0));
    for offset in to_b {
        match a.receive(offset) {
            Err(Error::StaleOffset {
                offset: at,
                generation,
                ..
            }) => assert_eq!((at, generation), (offset.offset(), offset.generation())),
            other => panic!("expected StaleOffset for a returned chunk, got {other:?}"),
        }
    }
    drop((
        a.receive(to_anyone).unwrap(),
        a.receive(to_a).unwrap(),
        kept,
    ));
    assert!(a.stats().all_free(), "{:?}", a.stats());
}

/// `Pool::receive` takes a chunk in flight to another participant all the same: a third
/// participant receives a chunk addressed to the second, reads its bytes, and holds it;
/// the addressee's own receive is then refused as stale, and its leaving does not return
/// the chunk the third one holds. Catches a receive that refuses a chunk addressed to
/// someone else, and one that takes the chunk without recording the new holder (the
/// addressee's drop would then free a chunk still being read).
#[test]
#[cfg_attr(miri, ignore)]
fn receive_takes_a_chunk_in_flight_to_another_participant() {
    let name = ShmName::new("pool-other");
    let a = Pool::builder(name.as_str())
        .class(128, 2)
        .participants(3)
        .create()
        .unwrap();
    let b = Pool::builder(name.as_str()).open().unwrap();
    let c = Pool::builder(name.as_str()).open().unwrap();
    let mut chunk = a.loan(5).unwrap();
    chunk.as_mut_slice().copy_from_slice(b"hello");
    let offset = chunk.into_offset_for(b.participant());

    let sample = c.receive(offset).unwrap();
    assert_eq!(&*sample, b"hello");
    assert_eq!(sample.offset(), offset);
    match b.receive(offset) {
        Err(Error::StaleOffset {
            offset: at,
            generation,
            ..
        }) => assert_eq!((at, generation), (offset.offset(), offset.generation())),
        other => panic!("expected StaleOffset for a chunk received already, got {other:?}"),
    }
    drop(b);
    assert_eq!(counts(a.stats().classes[0]), (1, 0, 0, 1));
    drop(sample);
    assert!(a.stats().all_free(), "{:?}", a.stats());
}

/// With every participant slot held, `open` and `open_or_create` are refused with
/// `ParticipantsFull` naming the pool's file and its slot count; once a handle leaves,
/// its slot is taken again. Catches a join that hands out a slot twice (a second handle
/// on one slot) or never frees one.
#[test]
#[cfg_attr(miri, ignore)]
fn a_pool_with_every_participant_slot_held_refuses_another() {
    let name = ShmName::new("pool-full");
    let first = Pool::builder(name.as_str())
        .class(128, 1)
        .participants(2)
        .create()
        .unwrap();
    let second = Pool::builder(name.as_str()).open().unwrap();
    assert_ne!(first.participant(), second.participant());
    for refused in [
        Pool::builder(name.as_str()).open(),
        Pool::builder(name.as_str()).class(128, 1).open_or_create(),
    ] {
        match refused {
            Err(Error::ParticipantsFull { path, participants }) => {
                assert_eq!((path, participants), (name.path(), 2));
            }
            other => panic!("expected ParticipantsFull, got {other:?}"),
        }
    }
    drop(second);
    let third = Pool::builder(name.as_str()).open().unwrap();
    assert_ne!(third.participant(), first.participant());
}

/// `open_or_create` on an existing pool with other size classes is refused with
/// `Mismatch` on field `"size classes"`, saying both sets as laid out; the same classes
/// given in another order and unrounded are the pool's own and accepted, and so the
/// refused attempt gave its participant slot back (the pool has two). Catches a missing
/// comparison, one that compares the classes as given rather than as laid out, and a
/// refusal that keeps the slot it joined.
#[test]
#[cfg_attr(miri, ignore)]
fn open_or_create_refuses_other_size_classes() {
    let name = ShmName::new("pool-classes");
    let pool = Pool::builder(name.as_str())
        .class(128, 2)
        .class(4096, 1)
        .participants(2)
        .create()
        .unwrap();
    for (builder, wanted) in [
        (
            Pool::builder(name.as_str()).class(4096, 1).class(256, 2),
            "256 B x 2, 4096 B x 1",
        ),
        (
            Pool::builder(name.as_str()).class(128, 3).class(4096, 1),
            "128 B x 3, 4096 B x 1",
        ),
        (
            Pool::builder(name.as_str()),
            "128 B x 65536, 4096 B x 4096, 1048576 B x 64",
        ),
    ] {
        match builder.open_or_create() {
            Err(Error::Mismatch {
                path,
                field,
                expected,
                found,
            }) => assert_eq!(
                (path, field, expected.as_str(), found.as_str()),
                (name.path(), "size classes", wanted, "128 B x 2, 4096 B x 1")
            ),
            other => panic!("expected a size class Mismatch, got {other:?}"),
        }
    }
    let same = Pool::builder(name.as_str())
        .class(4096, 1)
        .class(100, 2)
        .open_or_create()
        .unwrap();
    assert_eq!(same.classes(), pool.classes());
}

/// `create` refuses, with `InvalidSpec` naming the file and saying what was found,
/// each case its docs list: more than `MAX_CLASSES` classes, two classes of one size
/// (after rounding up to `CHUNK_ALIGN`), a class of 0 chunks, and a participant count of
/// 0 or past `MAX_ROLES`; and no file is left behind. Catches a layout check that lets
/// any of them through (a class of 0 chunks divides by nothing, a duplicate size breaks
/// the class lookup).
#[test]
#[cfg_attr(miri, ignore)]
fn create_refuses_classes_and_participant_counts_that_cannot_be_laid_out() {
    let name = ShmName::new("pool-spec");
    let builder = || Pool::builder(name.as_str());
    let seventeen = (1..=17).fold(builder(), |b, i| b.class(128 * i, 1));
    for (refused, says) in [
        (seventeen, "expected 1 to 16 size classes, found 17"),
        (
            builder().class(128, 1).class(100, 1),
            "class 1: expected chunk sizes in ascending order, found 128 after 128",
        ),
        (
            builder().class(128, 1).class(256, 0),
            "class 1: expected 1 to 4294967295 chunks, found 0",
        ),
        (
            builder().class(128, 1).participants(0),
            "expected 1 to 1024 participants, found 0",
        ),
        (
            builder().class(128, 1).participants(1025),
            "expected 1 to 1024 participants, found 1025",
        ),
    ] {
        match refused.create() {
            Err(Error::InvalidSpec { path, reason }) => {
                assert_eq!(path, name.path());
                assert!(reason.contains(says), "{reason:?} should say {says:?}");
            }
            other => panic!("expected InvalidSpec ({says}), got {other:?}"),
        }
        assert!(!name.path().exists(), "a refused spec left its file");
    }
}

/// What `create` accepts that a reader might expect refused: chunk sizes that are not
/// multiples of `CHUNK_ALIGN` are rounded up to one, and classes given in any order are
/// sorted, smallest first; a loan takes the smallest class that fits. Catches a builder
/// that lays classes out as given.
#[test]
#[cfg_attr(miri, ignore)]
fn create_rounds_chunk_sizes_up_and_sorts_classes() {
    let name = ShmName::new("pool-round");
    let pool = Pool::builder(name.as_str())
        .class(4096, 1)
        .class(100, 2)
        .class(129, 1)
        .participants(1)
        .create()
        .unwrap();
    assert_eq!(
        pool.classes(),
        vec![
            SizeClass::new(128, 2),
            SizeClass::new(256, 1),
            SizeClass::new(4096, 1),
        ]
    );
    assert_eq!(pool.max_loan(), 4096);
    assert_eq!(pool.loan(100).unwrap().capacity(), 128);
    assert_eq!(pool.loan(129).unwrap().capacity(), 256);
}

/// `receive` refuses with `Corrupted` (naming the file and the chunk's offset) an
/// offset whose chunk header records another size class, forged by writing the header's
/// class word in the segment file; the refusal takes nothing, and once the word is
/// restored the same offset receives the chunk. Catches a receive that trusts the
/// header it finds without checking its class.
#[test]
#[cfg_attr(miri, ignore)]
fn receive_refuses_a_chunk_header_of_another_class_as_corrupted() {
    let name = ShmName::new("pool-corrupt");
    let pool = Pool::builder(name.as_str())
        .class(128, 2)
        .class(256, 1)
        .participants(2)
        .create()
        .unwrap();
    let offset = pool.loan(200).unwrap().into_offset();
    // The layout of the `raw` module's docs: the participant table at 2688, 128 bytes a
    // participant; class 0's two 16-byte headers at the next 128-byte boundary (2944);
    // class 1's at the next one (3072). Its chunk header: owner word, 4 reserved bytes,
    // class word.
    let header_at = Segment::HEADER_LEN as u64 + 3072;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.path())
        .unwrap();
    let mut header = [0u8; 16];
    file.read_exact_at(&mut header, header_at).unwrap();
    // In flight (2) to no one (0xffff), generation 1, class 1: the header we mean.
    let owner = u64::from_ne_bytes(header[..8].try_into().unwrap());
    let class = u32::from_ne_bytes(header[12..].try_into().unwrap());
    assert_eq!(
        (owner, class),
        (1 << 32 | 0xffff << 8 | 2, 1),
        "the pool's layout moved: update this test's header offset"
    );

    file.write_all_at(&0u32.to_ne_bytes(), header_at + 12)
        .unwrap();
    match pool.receive(offset) {
        Err(Error::Corrupted { path, what }) => assert_eq!(
            (path, what),
            (
                name.path(),
                format!(
                    "the header of the chunk at offset {} records another size class",
                    offset.offset()
                )
            )
        ),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert_eq!(counts(pool.stats().classes[1]), (0, 0, 1, 0));

    file.write_all_at(&1u32.to_ne_bytes(), header_at + 12)
        .unwrap();
    let sample = pool.receive(offset).unwrap();
    assert_eq!(sample.len(), 200);
    drop(sample);
    assert!(pool.stats().all_free(), "{:?}", pool.stats());
}

/// An offset whose generation is not the chunk's is refused with `StaleOffset` carrying
/// that offset and generation: the offset of the chunk's previous loan, once the chunk
/// is loaned and in flight again, and a forged one a generation ahead. Neither takes the
/// chunk: the true offset receives it after. Catches a receive that checks the state
/// but not the generation (the old offset would read the new loan's bytes).
#[test]
#[cfg_attr(miri, ignore)]
fn receive_refuses_an_offset_of_another_generation() {
    let name = ShmName::new("pool-stale");
    let pool = Pool::builder(name.as_str())
        .class(128, 1)
        .participants(1)
        .create()
        .unwrap();
    let me = pool.participant();
    let first = pool.loan(8).unwrap().into_offset_for(me);
    drop(pool.receive(first).unwrap());
    let second = pool.loan(8).unwrap().into_offset_for(me);
    assert_eq!(
        (second.offset(), second.generation()),
        (first.offset(), first.generation() + 1)
    );
    let ahead = ahead(second, 1);
    assert_eq!(ahead.generation(), second.generation() + 1);

    for stale in [first, ahead] {
        match pool.receive(stale) {
            Err(Error::StaleOffset {
                offset,
                generation,
                found,
            }) => {
                assert_eq!((offset, generation), (stale.offset(), stale.generation()));
                let now = format!("generation {}", second.generation());
                assert!(
                    found.starts_with("in flight") && found.ends_with(&now),
                    "{found:?}"
                );
            }
            other => panic!("expected StaleOffset, got {other:?}"),
        }
    }
    assert_eq!(counts(pool.stats().classes[0]), (0, 0, 1, 0));
    drop(pool.receive(second).unwrap());
    assert!(pool.stats().all_free(), "{:?}", pool.stats());
}

/// `LoanedChunk::value_mut::<u64>()` and `Sample::value::<u64>()` give `None` for a
/// 7-byte payload, in a 128-byte chunk; an 8-byte payload gives the `u64` written in
/// place. Catches a view sized by the chunk's capacity rather than the payload's length.
#[test]
#[cfg_attr(miri, ignore)]
fn a_payload_shorter_than_its_type_has_no_value() {
    let name = ShmName::new("pool-value");
    let pool = Pool::builder(name.as_str())
        .class(128, 2)
        .participants(1)
        .create()
        .unwrap();
    let me = pool.participant();
    let mut short = pool.loan(7).unwrap();
    assert!(short.value_mut::<u64>().is_none());
    short.as_mut_slice().fill(0xab);
    let mut long = pool.loan(8).unwrap();
    *long.value_mut::<u64>().unwrap() = 0x0123_4567_89ab_cdef;

    let short = pool.receive(short.into_offset_for(me)).unwrap();
    let long = pool.receive(long.into_offset_for(me)).unwrap();
    assert_eq!(&*short, &[0xab; 7]);
    assert_eq!(short.value::<u64>(), None);
    assert_eq!(long.value::<u64>(), Some(&0x0123_4567_89ab_cdef));
}

/// `Pool::loan_for::<T>()` refuses a `T` aligned to 256 bytes, more than `CHUNK_ALIGN`,
/// with `LoanTooLarge { len: 256, max: CHUNK_ALIGN }` and takes no chunk, though a class
/// holds its 256 bytes (a plain loan of as many bytes succeeds); a `T` aligned to exactly
/// `CHUNK_ALIGN` is loaned, its value in place. Catches a missing alignment check (the
/// 4096-byte class would hand out the loan) and an off-by-one one (`>=`).
#[test]
#[cfg_attr(miri, ignore)]
fn loan_for_refuses_a_type_aligned_past_a_chunk() {
    let name = ShmName::new("pool-align");
    let pool = Pool::builder(name.as_str())
        .class(128, 1)
        .class(4096, 1)
        .participants(1)
        .create()
        .unwrap();
    match pool.loan_for::<Aligned256>() {
        Err(Error::LoanTooLarge { len, max }) => assert_eq!((len, max), (256, CHUNK_ALIGN)),
        other => panic!("expected LoanTooLarge, got {other:?}"),
    }
    assert!(pool.stats().all_free(), "{:?}", pool.stats());
    assert_eq!(pool.loan(size_of::<Aligned256>()).unwrap().capacity(), 4096);

    let mut chunk = pool.loan_for::<Aligned128>().unwrap();
    assert_eq!((chunk.len(), chunk.capacity()), (128, 128));
    chunk.value_mut::<Aligned128>().unwrap().0[127] = 9;
    let sample = pool.receive(chunk.into_offset()).unwrap();
    assert_eq!(sample.value::<Aligned128>().unwrap().0[127], 9);
}

/// `ShmOffset` with its generation moved `by` ahead (its fields are offset u64, len u32,
/// generation u32): an offset no chunk has, whose refusal reports what it found.
fn ahead(offset: ShmOffset, by: u32) -> ShmOffset {
    let mut bytes = offset.as_bytes().to_vec();
    bytes[12..].copy_from_slice(&(offset.generation() + by).to_ne_bytes());
    ShmOffset::read_from_bytes(&bytes).unwrap()
}

/// What `receive` found, from its `StaleOffset`.
fn found(pool: &Pool, offset: ShmOffset) -> String {
    match pool.receive(offset) {
        Err(Error::StaleOffset { found, .. }) => found,
        other => panic!("expected StaleOffset, got {other:?}"),
    }
}

/// A loan and its offset give the payload length asked for, empty at 0 bytes, and the
/// chunk's generation; a chunk loaned and not yet sent is not free. Catches accessors
/// that answer a constant.
#[test]
#[cfg_attr(miri, ignore)]
fn loans_and_offsets_carry_their_length_and_generation() {
    let name = ShmName::new("pool-lengths");
    let pool = Pool::builder(name.as_str())
        .class(128, 2)
        .participants(1)
        .create()
        .unwrap();
    let empty = pool.loan(0).unwrap();
    let five = pool.loan(5).unwrap();
    assert_eq!((empty.len(), empty.is_empty()), (0, true));
    assert_eq!((five.len(), five.is_empty()), (5, false));
    assert!(!pool.stats().all_free(), "{:?}", pool.stats());
    let (empty, five) = (empty.into_offset(), five.into_offset());
    assert_eq!(
        (empty.len(), empty.is_empty(), empty.generation()),
        (0, true, 1)
    );
    assert_eq!(
        (five.len(), five.is_empty(), five.generation()),
        (5, false, 1)
    );
    assert_eq!(pool.receive(five).unwrap().len(), 5);
    assert!(pool.receive(empty).unwrap().is_empty());
}

/// The `Debug` forms name what an operator needs: the pool's file, participant slot and
/// class count; a loan's offset and capacity; a sample's offset.
#[test]
#[cfg_attr(miri, ignore)]
fn handles_show_their_pool_and_chunk_in_debug() {
    let name = ShmName::new("pool-debug");
    let pool = Pool::builder(name.as_str())
        .class(128, 2)
        .class(256, 1)
        .participants(1)
        .create()
        .unwrap();
    assert_eq!(
        format!("{pool:?}"),
        format!(
            "Pool {{ path: {:?}, participant: 0, classes: 2, .. }}",
            name.path()
        )
    );
    let chunk = pool.loan(5).unwrap();
    let offset = chunk.offset();
    assert_eq!(
        format!("{chunk:?}"),
        format!("LoanedChunk {{ offset: {offset:?}, capacity: 128 }}")
    );
    let sample = pool.receive(chunk.into_offset()).unwrap();
    assert_eq!(
        format!("{sample:?}"),
        format!("Sample {{ offset: {offset:?} }}")
    );
}

/// `channel_receiver` finds the participant bound to a channel, whichever slot it holds
/// (here slot 0), and nobody for channel 0, for a channel nobody bound, for a channel
/// whose participant left, or for a free slot whose entry names the channel (forged in
/// the segment file: a slot's word counts only while the slot is in use).
#[test]
#[cfg_attr(miri, ignore)]
fn channel_receiver_finds_only_a_participant_in_use_bound_to_the_channel() {
    let name = ShmName::new("pool-channel");
    let a = Pool::builder(name.as_str())
        .class(128, 1)
        .participants(3)
        .create()
        .unwrap();
    let b = Pool::builder(name.as_str()).open().unwrap();
    assert_eq!((a.participant(), b.participant()), (0, 1));
    assert_eq!(a.channel_receiver(0x55), None);
    a.bind_channel(0x55);
    b.bind_channel(0x77);
    assert_eq!(b.channel_receiver(0x55), Some(0));
    assert_eq!(a.channel_receiver(0x77), Some(1));
    assert_eq!(a.channel_receiver(0), None);
    drop(b);
    assert_eq!(a.channel_receiver(0x77), None);

    // The participant table at 2688 in the data region, 128 bytes an entry; an entry's
    // word at byte 8. Slot 2 was never taken.
    let word_at = Segment::HEADER_LEN as u64 + 2688 + 2 * 128 + 8;
    let file = OpenOptions::new().write(true).open(name.path()).unwrap();
    file.write_all_at(&0x99u64.to_ne_bytes(), word_at).unwrap();
    assert!(!a.is_bound(2, 0x99));
    assert_eq!(a.channel_receiver(0x99), None);
}

/// `reclaim_dead` returns a chunk in flight to a participant slot nobody holds, and
/// leaves this participant's own loan, taken after it (so the sweep asks about its
/// holder second), alone: one chunk, no participant. Catches a sweep that answers for one
/// holder what it found for another.
#[test]
#[cfg_attr(miri, ignore)]
fn reclaim_returns_a_chunk_in_flight_to_a_free_slot_and_nothing_else() {
    let name = ShmName::new("pool-orphan");
    let pool = Pool::builder(name.as_str())
        .class(128, 4)
        .participants(3)
        .create()
        .unwrap();
    let orphan = pool.loan(8).unwrap().into_offset_for(2);
    let kept = pool.loan(8).unwrap();
    assert_eq!(counts(pool.stats().classes[0]), (2, 1, 1, 0));
    let reclaimed = pool.reclaim_dead().unwrap();
    assert_eq!((reclaimed.participants, reclaimed.chunks), (vec![], 1));
    assert_eq!(counts(pool.stats().classes[0]), (3, 1, 0, 0));
    assert_eq!(found(&pool, orphan), "free, generation 1");
    drop(kept);
    assert!(pool.stats().all_free(), "{:?}", pool.stats());
}

/// A chunk sent to a participant number past the pool's slots is in flight to no one,
/// like `into_offset`'s; one sent to a slot of the pool is in flight to that slot. Seen
/// in what a refused offset reports.
#[test]
#[cfg_attr(miri, ignore)]
fn a_chunk_sent_past_the_participant_slots_is_in_flight_to_no_one() {
    let name = ShmName::new("pool-nobody");
    let pool = Pool::builder(name.as_str())
        .class(128, 2)
        .participants(2)
        .create()
        .unwrap();
    let to_none = pool.loan(8).unwrap().into_offset_for(2);
    let to_one = pool.loan(8).unwrap().into_offset_for(1);
    assert_eq!(found(&pool, ahead(to_none, 1)), "in flight, generation 1");
    assert_eq!(
        found(&pool, ahead(to_one, 1)),
        "in flight by participant 1, generation 1"
    );
}

/// One reader's hazard word, for `read_shared` without a ring.
struct OneReader<'a>(&'a AtomicU64);

impl Readers for OneReader<'_> {
    fn hazard(&self) -> &AtomicU64 {
        self.0
    }

    fn holds(&self, offset: u64) -> bool {
        shm_alloc::owner::named_by([self.0], offset)
    }
}

/// A shared chunk read under a hazard word: the sample gives the offset it was read at,
/// the payload as a `u32`, and its `Debug` form; once it drops and its publisher retires
/// the chunk, the chunk is free. Catches a shared sample's accessors answering a
/// constant.
#[test]
#[cfg_attr(miri, ignore)]
fn a_shared_sample_reads_its_chunk_in_place() {
    let name = ShmName::new("pool-shared");
    let pool = Pool::builder(name.as_str())
        .class(128, 1)
        .participants(1)
        .create()
        .unwrap();
    let mut chunk = pool.loan(4).unwrap();
    chunk.as_mut_slice().copy_from_slice(&7u32.to_ne_bytes());
    let offset = chunk.into_shared();
    let hazard = AtomicU64::new(0);
    let sample = pool.read_shared(offset, OneReader(&hazard)).unwrap();
    assert_eq!(sample.offset(), offset);
    assert_eq!(sample.value::<u32>(), Some(&7));
    assert_eq!(sample.value::<u64>(), None);
    assert_eq!(
        format!("{sample:?}"),
        format!("SharedSample {{ offset: {offset:?}, .. }}")
    );
    drop(sample);
    assert!(
        pool.retire_shared(offset, |o| OneReader(&hazard).holds(o))
            .unwrap()
    );
    assert!(pool.stats().all_free(), "{:?}", pool.stats());
}
