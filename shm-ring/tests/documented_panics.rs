//! Every `# Panics` section of the rings' public API, held to its word (the call panics
//! with a message that says why, where the docs say it does), and the one shape of
//! message the rings refuse rather than lay out.

use shm_ring::{spsc, stream};

#[test]
#[should_panic(expected = "committing 2 of 1 taken messages")]
fn read_chunk_commit_past_its_length_panics() {
    let (mut tx, mut rx) = spsc::channel::<u64>(4).unwrap();
    tx.try_send(1).unwrap();
    let chunk = rx.read_chunk(4).unwrap();
    assert_eq!(chunk.len(), 1);
    chunk.commit(2);
}

#[test]
#[should_panic(expected = "committing 3 of 2 claimed slots")]
fn write_chunk_commit_past_its_length_panics() {
    let (mut tx, _rx) = spsc::channel::<u64>(4).unwrap();
    let chunk = tx.write_chunk(2).unwrap();
    assert_eq!(chunk.len(), 2);
    chunk.commit(3);
}

#[test]
#[should_panic(expected = "marks padding")]
fn a_frame_cannot_take_the_padding_type() {
    let (mut tx, _rx) = stream::channel(1 << 12).unwrap();
    let mut claim = tx.claim(8).unwrap();
    claim.set_type_id(stream::PADDING_TYPE);
}

#[test]
#[should_panic(expected = "committing 9 of 8 claimed bytes")]
fn commit_prefix_past_the_claim_panics() {
    let (mut tx, _rx) = stream::channel(1 << 12).unwrap();
    let claim = tx.claim(8).unwrap();
    claim.commit_prefix(9);
}

/// A message type aligned to more than a slot's 128 bytes is refused, not laid out
/// wrong: `UnsupportedAlignment`, on the heap and for a segment, by every typed flavour.
#[test]
#[cfg_attr(miri, ignore)]
fn a_message_aligned_past_128_bytes_is_refused() {
    use shm_ring::{Error, Message, mpmc};
    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

    #[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C, align(256))]
    struct Wide([u8; 256]);

    impl Message for Wide {
        const TYPE_NAME: &'static str = "shm-ring-tests::Wide/v1";
    }

    let refused = |e: Error| matches!(e, Error::UnsupportedAlignment(256));
    assert!(refused(spsc::channel::<Wide>(4).err().unwrap()));
    assert!(refused(mpmc::channel::<Wide>(4).err().unwrap()));
    let name = shm_testkit::ShmName::new("wide");
    let spsc = spsc::Builder::<Wide>::new(name.as_str())
        .capacity(4)
        .producer();
    assert!(refused(spsc.err().unwrap()));
    let mpmc = mpmc::Builder::<Wide>::new(name.as_str())
        .capacity(4)
        .producer();
    assert!(refused(mpmc.err().unwrap()));
    assert!(
        !std::path::Path::new(shm_testkit::SHM_DIR)
            .join(name.as_str())
            .exists()
    );
}
