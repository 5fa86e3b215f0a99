//! Loans through rings, at the public API of `shm_ring::loan`: a loan that a ring
//! refuses comes back to its caller as it went in, still loaned and not in flight; and an
//! MPMC ring of `ShmOffset` carries loans to any of its consumers, in flight to no one in
//! particular. Rings on the heap, pools in segment files.

use std::time::{Duration, Instant};

use shm_alloc::LoanedChunk;
use shm_alloc::ShmOffset;
use shm_alloc::pool::Pool;
use shm_ring::{SendTimeoutError, TryRecvError, TrySendError, loan, mpmc, spsc};
use shm_testkit::ShmName;

/// A class's counts as `(free, loaned, in_flight, held)`.
fn counts(pool: &Pool) -> (u64, u64, u64, u64) {
    let stats = pool.stats().classes[0];
    (stats.free, stats.loaned, stats.in_flight, stats.held)
}

/// A chunk handed back by a refused send: the one sent (same offset), bytes untouched.
fn handed_back(chunk: &LoanedChunk<'_>, offset: ShmOffset, bytes: &[u8]) {
    assert_eq!((chunk.offset(), chunk.as_slice()), (offset, bytes));
}

/// With an SPSC ring of 2 full, a third loan is refused by `try_send` (`Full`) and by
/// `send_deadline` with a deadline already past (`Timeout`): each time the very chunk
/// comes back, same offset and generation, its bytes as written, and the pool counts it
/// loaned, not in flight (the two in the ring are). Once the reader takes one, the chunk
/// is sent and received intact, under the offset it had all along. Catches a sender that
/// marks the chunk in flight before it has a slot (the refused chunk would be lost to
/// the pool, or the refusal would panic) or hands back another chunk.
#[test]
#[cfg_attr(miri, ignore)]
fn a_loan_a_full_ring_refuses_comes_back_still_loaned_and_is_sent_later() {
    let name = ShmName::new("loan-full");
    let writer = Pool::builder(name.as_str())
        .class(128, 4)
        .participants(2)
        .create()
        .unwrap();
    let reader = Pool::builder(name.as_str()).open().unwrap();
    let (tx, rx) = spsc::channel::<ShmOffset>(2).unwrap();
    let mut tx = loan::Sender::new(tx);
    let mut rx = loan::Receiver::new(rx, &reader);
    assert!(tx.receiver_bound(&writer));
    for seq in 0..2u8 {
        let mut chunk = writer.loan(16).unwrap();
        chunk.as_mut_slice().fill(seq);
        tx.try_send(chunk).unwrap();
    }
    let mut third = writer.loan(16).unwrap();
    third.as_mut_slice().copy_from_slice(b"the third loan!!");
    let named = third.offset();

    let third = match tx.try_send(third) {
        Err(TrySendError::Full(chunk)) => chunk,
        other => panic!("expected Full, got {other:?}"),
    };
    handed_back(&third, named, b"the third loan!!");
    assert_eq!(counts(&writer), (1, 1, 2, 0));
    let third = match tx.send_deadline(third, Some(Instant::now())) {
        Err(SendTimeoutError::Timeout(chunk)) => chunk,
        other => panic!("expected Timeout, got {other:?}"),
    };
    handed_back(&third, named, b"the third loan!!");
    assert_eq!(counts(&writer), (1, 1, 2, 0));

    let first = rx.try_recv(&reader).unwrap();
    assert_eq!(&*first, &[0; 16]);
    drop(first);
    tx.try_send(third).unwrap();
    assert_eq!(counts(&writer), (2, 0, 2, 0));
    let second = rx.try_recv(&reader).unwrap();
    assert_eq!(&*second, &[1; 16]);
    let third = rx.try_recv(&reader).unwrap();
    assert_eq!(&*third, b"the third loan!!");
    assert_eq!(third.offset(), named);
    drop((second, third));
    assert!(writer.stats().all_free(), "{:?}", writer.stats());
}

/// With the ring's consumer gone (its `Receiver` dropped), `try_send` and
/// `send_deadline` refuse a loan with `Disconnected`, and each time the chunk comes back
/// untouched, loaned and not in flight; dropping it then returns it to the pool. Catches
/// a sender that marks the chunk before the ring's refusal (dropping the chunk would
/// leave it in flight, lost).
#[test]
#[cfg_attr(miri, ignore)]
fn a_loan_a_disconnected_ring_refuses_comes_back_still_loaned() {
    let name = ShmName::new("loan-gone");
    let writer = Pool::builder(name.as_str())
        .class(128, 2)
        .participants(2)
        .create()
        .unwrap();
    let reader = Pool::builder(name.as_str()).open().unwrap();
    let (tx, rx) = spsc::channel::<ShmOffset>(2).unwrap();
    let mut tx = loan::Sender::new(tx);
    drop(loan::Receiver::new(rx, &reader));
    let mut chunk = writer.loan(5).unwrap();
    chunk.as_mut_slice().copy_from_slice(b"hello");
    let named = chunk.offset();

    let chunk = match tx.try_send(chunk) {
        Err(TrySendError::Disconnected(chunk)) => chunk,
        other => panic!("expected Disconnected, got {other:?}"),
    };
    handed_back(&chunk, named, b"hello");
    assert_eq!(counts(&writer), (1, 1, 0, 0));
    // Refused at once; the deadline only bounds a regression that would wait instead.
    let deadline = Instant::now() + Duration::from_secs(10);
    let chunk = match tx.send_deadline(chunk, Some(deadline)) {
        Err(SendTimeoutError::Disconnected(chunk)) => chunk,
        other => panic!("expected Disconnected, got {other:?}"),
    };
    handed_back(&chunk, named, b"hello");
    assert_eq!(counts(&writer), (1, 1, 0, 0));
    drop(chunk);
    assert!(writer.stats().all_free(), "{:?}", writer.stats());
}

/// Loans through an MPMC ring of `ShmOffset` ("any typed ring of `ShmOffset`"), with
/// two consumers, each bound to its own pool participant: three rounds fill the ring of
/// 4 (the fifth loan is refused `Full` and comes back loaned), then the two consumers
/// take turns; every value arrives once, in order, and every chunk goes back. Then two
/// more are sent and both bound receivers leave: the chunks stay in flight (through an
/// MPMC ring they are in flight to no one, not to a bound receiver), and a newcomer
/// receives them. Catches a loan layer that addresses MPMC chunks to the bound receiver
/// (its leaving would return chunks still in the ring), and lost or doubled chunks.
#[test]
#[cfg_attr(miri, ignore)]
fn loans_cross_an_mpmc_ring_to_any_consumer_each_once() {
    let name = ShmName::new("loan-mpmc");
    let writer = Pool::builder(name.as_str())
        .class(128, 8)
        .participants(4)
        .create()
        .unwrap();
    let reader_a = Pool::builder(name.as_str()).open().unwrap();
    let reader_b = Pool::builder(name.as_str()).open().unwrap();
    let (tx, rx) = mpmc::channel::<ShmOffset>(4).unwrap();
    let rx_b = rx.try_clone().unwrap();
    let mut tx = loan::Sender::new(tx);
    let mut rx_a = loan::Receiver::new(rx, &reader_a);
    let mut rx_b = loan::Receiver::new(rx_b, &reader_b);

    let mut seen = Vec::new();
    let mut next = 0u64;
    for _round in 0..3 {
        loop {
            let mut chunk = writer.loan(8).unwrap();
            *chunk.value_mut::<u64>().unwrap() = next;
            match tx.try_send(chunk) {
                Ok(()) => next += 1,
                Err(TrySendError::Full(mut chunk)) => {
                    assert_eq!(chunk.value_mut::<u64>().copied(), Some(next));
                    assert_eq!(counts(&writer), (3, 1, 4, 0));
                    drop(chunk);
                    break;
                }
                Err(other) => panic!("expected Full, got {other:?}"),
            }
        }
        assert_eq!(counts(&writer), (4, 0, 4, 0));
        let mut samples = Vec::new();
        for turn in 0..4 {
            let sample = if turn % 2 == 0 {
                rx_a.try_recv(&reader_a)
            } else {
                rx_b.try_recv(&reader_b)
            }
            .unwrap();
            seen.push(*sample.value::<u64>().unwrap());
            samples.push(sample);
        }
        assert!(matches!(
            rx_a.try_recv(&reader_a),
            Err(loan::RecvError::Ring(TryRecvError::Empty))
        ));
        assert_eq!(counts(&writer), (4, 0, 0, 4));
        drop(samples);
        assert!(writer.stats().all_free(), "{:?}", writer.stats());
    }
    assert_eq!(seen, (0..12).collect::<Vec<u64>>());

    for value in [100u64, 101] {
        let mut chunk = writer.loan(8).unwrap();
        *chunk.value_mut::<u64>().unwrap() = value;
        tx.try_send(chunk).unwrap();
    }
    drop((reader_a, reader_b));
    assert_eq!(counts(&writer), (6, 0, 2, 0));
    let newcomer = Pool::builder(name.as_str()).open().unwrap();
    let first = rx_b.try_recv(&newcomer).unwrap();
    let second = rx_a.try_recv(&newcomer).unwrap();
    assert_eq!(
        (first.value::<u64>(), second.value::<u64>()),
        (Some(&100), Some(&101))
    );
    drop((first, second));
    assert!(writer.stats().all_free(), "{:?}", writer.stats());
}

/// A sender finds its ring's receiver in the pool once the receiver binds (here the
/// third participant slot), and loses it when the receiver leaves, though it had it
/// cached; its `Debug` form shows the receiver it knows. Catches a sender that trusts a
/// cached receiver without checking it still holds the binding (chunks would go in
/// flight to a slot that left, or to whoever takes the slot next).
#[test]
#[cfg_attr(miri, ignore)]
fn a_sender_sees_its_receiver_bind_and_leave() {
    let name = ShmName::new("loan-bound");
    let writer = Pool::builder(name.as_str())
        .class(128, 2)
        .participants(3)
        .create()
        .unwrap();
    let _other = Pool::builder(name.as_str()).open().unwrap();
    let (tx, rx) = spsc::channel::<ShmOffset>(2).unwrap();
    let mut tx = loan::Sender::new(tx);
    assert!(!tx.receiver_bound(&writer));
    assert_eq!(format!("{tx:?}"), "Sender { receiver: None, .. }");

    let reader = Pool::builder(name.as_str()).open().unwrap();
    assert_eq!(reader.participant(), 2);
    let rx = loan::Receiver::new(rx, &reader);
    assert!(tx.receiver_bound(&writer));
    assert_eq!(format!("{tx:?}"), "Sender { receiver: Some(2), .. }");
    assert_eq!(format!("{rx:?}"), "Receiver { .. }");

    drop(reader);
    assert!(!tx.receiver_bound(&writer));
    assert_eq!(format!("{tx:?}"), "Sender { receiver: None, .. }");
}
