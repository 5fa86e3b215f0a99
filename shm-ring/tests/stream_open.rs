//! Opening a stream ring: the capacity an opener asks for with `capacity` is checked,
//! the one given with `capacity_if_created` is only the creator's.

use shm_ring::{Error, stream};
use shm_testkit::ShmName;

#[test]
#[cfg_attr(miri, ignore)]
fn capacity_if_created_opens_a_ring_of_any_capacity_and_capacity_checks_it() {
    let name = ShmName::new("stream-open");
    let mut tx = stream::Builder::new(name.as_str())
        .capacity_if_created(1 << 16)
        .producer()
        .unwrap();
    assert_eq!(tx.capacity(), 1 << 16, "the creator's capacity_if_created");
    let mut rx = stream::Builder::new(name.as_str())
        .capacity_if_created(1 << 20)
        .consumer()
        .unwrap();
    assert_eq!(rx.capacity(), 1 << 16, "the opener took the ring as it is");
    tx.try_send(b"frame").unwrap();
    assert_eq!(&*rx.try_recv().unwrap(), b"frame");
    drop(rx);
    let checked = stream::Builder::new(name.as_str())
        .capacity(1 << 20)
        .consumer();
    assert!(
        matches!(
            checked,
            Err(Error::Segment(shm_alloc::Error::Mismatch {
                field: "capacity",
                ..
            }))
        ),
        "an opener's capacity is checked: {checked:?}"
    );
}
