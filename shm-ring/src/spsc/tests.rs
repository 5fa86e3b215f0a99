//! Unit tests of the SPSC ring that reach its internals, and its loom models.

#[cfg(not(loom))]
mod unit {
    use std::time::Duration;

    use shm_sync::WaitStrategy;
    use shm_sync::atomic::Ordering;

    use crate::spsc::*;
    use crate::{
        Corruption, Error, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
        TrySendError,
    };

    const COUNT: u64 = if cfg!(miri) { 200 } else { 100_000 };

    #[test]
    fn smoke() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn capacity_is_enforced_and_values_come_back() {
        let (mut tx, mut rx) = channel::<u32>(2).unwrap();
        assert_eq!(tx.capacity(), 2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        match tx.try_send(3) {
            Err(TrySendError::Full(v)) => assert_eq!(v, 3),
            other => panic!("expected Full(3), got {other:?}"),
        }
        assert_eq!(rx.try_recv(), Ok(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
    }

    #[test]
    fn invalid_capacities_are_refused() {
        for cap in [0, 3, 6, MAX_CAPACITY * 2] {
            assert!(matches!(channel::<u8>(cap), Err(Error::InvalidCapacity(c)) if c == cap));
        }
    }

    #[test]
    fn wraps_many_times_in_order() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        for i in 0..1000 {
            tx.try_send(i).unwrap();
            if i % 3 == 2 {
                tx.try_send(i + 1_000_000).unwrap();
                assert_eq!(rx.try_recv(), Ok(i));
                assert_eq!(rx.try_recv(), Ok(i + 1_000_000));
            } else {
                assert_eq!(rx.try_recv(), Ok(i));
            }
        }
    }

    #[test]
    fn batches_publish_what_fits() {
        let (mut tx, mut rx) = channel::<u16>(8).unwrap();
        assert_eq!(tx.send_slice(&[]), Ok(0));
        assert_eq!(tx.send_slice(&[1, 2, 3, 4, 5]), Ok(5));
        assert_eq!(tx.send_slice(&[6, 7, 8, 9, 10]), Ok(3));
        assert_eq!(tx.send_slice(&[11]), Err(TrySendError::Full(())));
        let mut buf = [0u16; 6];
        assert_eq!(rx.recv_into(&mut buf), Ok(6));
        assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
        assert_eq!(tx.send_slice(&[9, 10, 11, 12]), Ok(4)); // wraps
        let mut buf = [0u16; 16];
        assert_eq!(rx.recv_into(&mut buf), Ok(6));
        assert_eq!(&buf[..6], &[7, 8, 9, 10, 11, 12]);
        assert_eq!(rx.recv_into(&mut buf), Err(TryRecvError::Empty));
    }

    #[test]
    fn reserve_commit_and_abort() {
        let (mut tx, mut rx) = channel::<[u32; 4]>(2).unwrap();
        {
            let mut slot = tx.reserve().unwrap();
            *slot = [1, 2, 3, 4];
            // dropped without commit: nothing published
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        let mut slot = tx.reserve().unwrap();
        slot[0] = 9;
        slot.commit();
        assert_eq!(rx.try_recv().unwrap()[0], 9);
    }

    #[test]
    fn guard_releases_on_drop_only() {
        let (mut tx, mut rx) = channel::<u64>(1).unwrap();
        tx.try_send(5).unwrap();
        let guard = rx.try_recv_ref().unwrap();
        assert_eq!(*guard, 5);
        assert!(matches!(tx.try_send(6), Err(TrySendError::Full(6))));
        drop(guard);
        tx.try_send(6).unwrap();
        assert_eq!(rx.try_recv(), Ok(6));
    }

    #[test]
    fn producer_drop_drains_then_disconnects() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    }

    #[test]
    fn consumer_drop_disconnects_the_producer() {
        let (mut tx, rx) = channel::<u64>(4).unwrap();
        drop(rx);
        assert!(matches!(tx.try_send(1), Err(TrySendError::Disconnected(1))));
        assert!(matches!(tx.send(2), Err(SendError::Disconnected(2))));
    }

    #[test]
    fn corrupted_positions_are_reported() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        tx.control().tail.store(100, Ordering::Relaxed);
        assert_eq!(
            rx.try_recv(),
            Err(TryRecvError::Corrupted(Corruption::Positions {
                head: 0,
                tail: 100,
                capacity: 4
            }))
        );
        rx.control().head.store(u64::MAX, Ordering::Relaxed);
        tx.set_tail(4); // make the producer look full so it reloads head
        assert!(matches!(
            tx.try_send(1),
            Err(TrySendError::Corrupted(1, Corruption::Positions { .. }))
        ));
    }

    #[test]
    fn corrupted_session_word_is_reported() {
        let (tx, mut rx) = channel::<u64>(4).unwrap();
        tx.control().session.producer.store(7, Ordering::Relaxed);
        assert_eq!(
            rx.try_recv(),
            Err(TryRecvError::Corrupted(Corruption::State {
                word: "the producer's session word",
                found: 7,
                expected: "state 0 (absent), 1 (attached) or 2 (closed) in its low two bits",
            }))
        );
    }

    #[test]
    fn timeouts_return_the_value() {
        let (mut tx, mut rx) = channel::<u64>(1).unwrap();
        tx.set_wait_strategy(WaitStrategy::Yield);
        rx.set_wait_strategy(WaitStrategy::Yield);
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        );
        tx.try_send(1).unwrap();
        assert!(matches!(
            tx.send_timeout(2, Duration::from_millis(1)),
            Err(SendTimeoutError::Timeout(2))
        ));
    }

    fn stream(wait: WaitStrategy, capacity: u64) {
        let (mut tx, mut rx) = channel::<u64>(capacity).unwrap();
        tx.set_wait_strategy(wait);
        rx.set_wait_strategy(wait);
        let producer = std::thread::spawn(move || {
            for i in 0..COUNT {
                tx.send(i).unwrap();
            }
        });
        for i in 0..COUNT {
            assert_eq!(rx.recv(), Ok(i));
        }
        producer.join().unwrap();
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    }

    #[test]
    fn two_threads_busy_spin() {
        stream(WaitStrategy::BusySpin, 2);
    }

    #[test]
    fn two_threads_yield_large_capacity() {
        stream(WaitStrategy::Yield, 1024);
    }

    #[test]
    #[cfg_attr(miri, ignore = "futex sleeps make miri slow")]
    fn two_threads_park() {
        stream(WaitStrategy::Park, 2);
    }
}

#[cfg(loom)]
mod loom_tests {
    use shm_sync::WaitStrategy;

    use crate::spsc::*;
    use crate::{RecvError, TryRecvError};

    /// The producer sends three values through two slots, the consumer receives them;
    /// both park when they must wait. Checks order, no loss, no duplicate, no race on a
    /// slot (loom's UnsafeCell), and no lost wake-up (a deadlock would be reported).
    #[test]
    fn spsc_with_parking() {
        loom::model(|| {
            let (mut tx, mut rx) = channel::<u64>(2).unwrap();
            tx.set_wait_strategy(WaitStrategy::Park);
            rx.set_wait_strategy(WaitStrategy::Park);
            let producer = loom::thread::spawn(move || {
                for i in 1..=3 {
                    tx.send(i).unwrap();
                }
            });
            for i in 1..=3 {
                assert_eq!(rx.recv(), Ok(i));
            }
            assert_eq!(rx.recv(), Err(RecvError::Disconnected));
            producer.join().unwrap();
        });
    }

    /// Batches and in-place access under the same model.
    #[test]
    fn spsc_batches_and_guards() {
        loom::model(|| {
            let (mut tx, mut rx) = channel::<u64>(2).unwrap();
            rx.set_wait_strategy(WaitStrategy::Park);
            let producer = loom::thread::spawn(move || {
                let mut sent = 0;
                while sent < 3 {
                    let values = [1, 2, 3];
                    if let Ok(n) = tx.send_slice(&values[sent..]) {
                        sent += n;
                    } else {
                        loom::thread::yield_now();
                    }
                }
            });
            let mut next = 1;
            while next <= 3 {
                match rx.try_recv_ref() {
                    Ok(guard) => {
                        assert_eq!(*guard, next);
                        next += 1;
                    }
                    Err(TryRecvError::Empty) => loom::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            producer.join().unwrap();
        });
    }
}
