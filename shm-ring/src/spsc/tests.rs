//! Unit tests of the SPSC ring that reach its internals, and its loom models.

#[cfg(not(loom))]
mod unit {
    use shm_sync::WaitStrategy;

    use crate::spsc::*;
    use crate::{RecvError, TryRecvError, TrySendError};

    const COUNT: u64 = if cfg!(miri) { 200 } else { 100_000 };

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
