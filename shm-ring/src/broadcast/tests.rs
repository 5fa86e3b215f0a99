#[cfg(not(loom))]
mod heap {
    use std::time::Duration;

    use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

    use super::super::*;
    use crate::Message;

    const N: u64 = if cfg!(miri) { 200 } else { 100_000 };

    /// A message whose every word says its position, and a checksum: a torn copy (words
    /// of two positions) or a wrong position fails [`Tick::check`].
    #[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Tick {
        words: [u64; 7],
        check: u64,
    }

    impl Message for Tick {
        const TYPE_NAME: &'static str = "shm_ring::broadcast::tests::Tick";
    }

    impl Tick {
        fn new(position: u64) -> Self {
            let words = [position; 7];
            Tick {
                words,
                check: words.iter().fold(0x9e37_79b9, |h, w| h.rotate_left(5) ^ w),
            }
        }

        /// The position the message says, if it is whole.
        fn check(&self) -> u64 {
            assert_eq!(*self, Tick::new(self.words[0]), "a torn or corrupt message");
            self.words[0]
        }
    }

    #[test]
    fn every_subscriber_receives_every_message_in_order() {
        let (mut tx, mut a) = channel::<u64>(8, Overflow::Lap).unwrap();
        let mut b = tx.subscribe().unwrap();
        assert_eq!(a.try_recv(), Err(TryRecvError::Empty));
        for i in 0..5 {
            tx.try_send(i).unwrap();
        }
        for rx in [&mut a, &mut b] {
            for i in 0..5 {
                assert_eq!(rx.try_recv(), Ok(i));
            }
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        }
        assert_eq!(tx.stats().subscribers, 2);
        assert_eq!(tx.published(), 5);
        assert_eq!(a.stats().received, 5);
    }

    #[test]
    fn a_lapped_subscriber_is_told_exactly_how_many_it_lost() {
        let (mut tx, mut rx) = channel::<u64>(4, Overflow::Lap).unwrap();
        for i in 0..10 {
            tx.try_send(i).unwrap();
        }
        // Positions 0..6 are overwritten; 6..10 are still in the ring.
        assert_eq!(rx.try_recv(), Err(TryRecvError::Lagged { missed: 6 }));
        assert_eq!(rx.position(), 6);
        for i in 6..10 {
            assert_eq!(rx.try_recv(), Ok(i));
        }
        let stats = rx.stats();
        assert_eq!((stats.received, stats.lagged, stats.missed), (4, 1, 6));
        assert_eq!(stats.received + stats.missed, tx.published());
    }

    #[test]
    fn a_subscriber_that_joins_at_the_oldest_gets_what_is_still_in_the_ring() {
        let (mut tx, _rx) = channel::<u64>(4, Overflow::Lap).unwrap();
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        let ring = tx.ring.clone();
        let mut oldest =
            Subscriber::attach(ring.clone(), None, Start::Oldest, WaitStrategy::default()).unwrap();
        let mut newest =
            Subscriber::attach(ring, None, Start::Newest, WaitStrategy::default()).unwrap();
        for i in 3..9 {
            tx.try_send(i).unwrap();
        }
        // Joined at 0, lapped before its first receive: starts at the oldest, no lag.
        assert_eq!(oldest.try_recv(), Ok(5));
        assert_eq!(oldest.stats().missed, 0);
        // Joined at 3, lapped: 3 and 4 are lost.
        assert_eq!(newest.try_recv(), Err(TryRecvError::Lagged { missed: 2 }));
        assert_eq!(newest.try_recv(), Ok(5));
    }

    #[test]
    fn block_waits_for_the_slowest_subscriber_and_no_longer_for_one_that_left() {
        let (mut tx, mut fast) = channel::<u64>(4, Overflow::Block).unwrap();
        let slow = tx.subscribe().unwrap();
        for i in 0..4 {
            tx.try_send(i).unwrap();
        }
        assert!(matches!(tx.try_send(4), Err(crate::TrySendError::Full(4))));
        for i in 0..4 {
            assert_eq!(fast.try_recv(), Ok(i));
        }
        assert!(
            matches!(tx.try_send(4), Err(crate::TrySendError::Full(4))),
            "the slow one gates"
        );
        assert!(matches!(
            tx.send_timeout(4, Duration::from_millis(1)),
            Err(crate::SendTimeoutError::Timeout(4))
        ));
        drop(slow);
        tx.try_send(4).unwrap();
        assert_eq!(fast.try_recv(), Ok(4));
    }

    /// `Block` with an untether time: a subscriber that holds the publisher back longer
    /// is told `Untethered` once, then lags like a `Lap` subscriber; the one that keeps
    /// up still gates.
    #[test]
    fn a_subscriber_that_holds_the_publisher_back_too_long_is_untethered() {
        let (mut tx, mut slow) = channel::<u64>(4, Overflow::Block).unwrap();
        let mut fast = tx.subscribe().unwrap();
        tx.set_untether_after(Some(Duration::from_millis(20)));
        for i in 0..4 {
            tx.try_send(i).unwrap();
        }
        for i in 0..4 {
            assert_eq!(fast.try_recv(), Ok(i));
        }
        assert!(
            matches!(tx.try_send(4), Err(crate::TrySendError::Full(4))),
            "held back"
        );
        std::thread::sleep(Duration::from_millis(25));
        tx.try_send(4).unwrap();
        assert!(slow.stats().untethered && !fast.stats().untethered);
        for i in 5..8 {
            tx.try_send(i).unwrap();
        }
        let full = tx.try_send(8);
        assert!(
            matches!(full, Err(crate::TrySendError::Full(8))),
            "fast still gates"
        );
        assert_eq!(fast.try_recv(), Ok(4));
        assert_eq!(slow.try_recv(), Err(TryRecvError::Untethered));
        assert_eq!(slow.try_recv(), Err(TryRecvError::Lagged { missed: 4 }));
        assert_eq!(slow.try_recv(), Ok(4));
        // A new session in the entry gates again.
        drop(slow);
        assert!(!tx.subscribe().unwrap().stats().untethered);
    }

    #[test]
    fn a_dead_subscriber_stops_gating_at_the_next_probe() {
        let (mut tx, rx) = channel::<u64>(2, Overflow::Block).unwrap();
        for i in 0..2 {
            tx.try_send(i).unwrap();
        }
        rx.simulate_crash();
        assert_eq!(tx.stats().subscribers, 1, "dead, not retired yet");
        // The probe comes after LIVENESS_POLLS full polls and LIVENESS_PROBE_INTERVAL.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tx.try_send(2).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the dead subscriber still gates"
            );
        }
        assert_eq!(tx.stats().subscribers, 0);
    }

    #[test]
    fn subscribers_drain_then_disconnect_when_the_publisher_leaves() {
        let (mut tx, mut rx) = channel::<u64>(4, Overflow::Lap).unwrap();
        tx.try_send(1).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    }

    #[test]
    fn a_slot_a_dead_publisher_left_half_written_is_skipped_and_counted() {
        let (mut tx, mut rx) = channel::<u64>(4, Overflow::Lap).unwrap();
        let ring = tx.ring.clone();
        tx.try_send(1).unwrap();
        tx.simulate_crash_mid_write();
        assert_eq!(rx.try_recv(), Ok(1));
        // On the heap nothing wakes a parked subscriber for a crash (a real one is a
        // drop): poll until a liveness probe finds the writer dead.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let last = loop {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => assert!(std::time::Instant::now() < deadline),
                other => break other,
            }
        };
        assert_eq!(last, Err(TryRecvError::Disconnected));
        assert_eq!(rx.stats().skipped, 1);
        assert_eq!(rx.position(), 2);
        // A publisher that attaches after marks it skipped, and goes on after it.
        let mut late =
            Subscriber::attach(ring.clone(), None, Start::Oldest, WaitStrategy::default()).unwrap();
        let mut tx = Publisher::attach(ring, WaitStrategy::default()).unwrap();
        assert_eq!(tx.stats().skipped, 1);
        assert_eq!(tx.published(), 2);
        tx.try_send(2).unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(late.try_recv(), Ok(1));
        assert_eq!(late.try_recv(), Ok(2), "passes over the skipped slot");
        assert_eq!(late.stats().skipped, 1);
    }

    /// Stamps no run of the protocol leaves are `Corrupted` for every receive, never a
    /// hang or a message: a stamp of a position past the tail, a stamp with no state,
    /// and a slot holding the position of another slot.
    #[test]
    fn impossible_shared_words_are_corrupted() {
        use shm_sync::atomic::Ordering;

        let stamp = |position: u64, state: u64| ((position + 1) << 2) | state;
        let cases: [(&str, u64); 3] = [
            ("a position past the tail", stamp(4 + 8, 2)),
            ("no state", stamp(0, 0)),
            ("another slot's position", stamp(5, 2)),
        ];
        for (what, bad) in cases {
            let (mut tx, mut rx) = channel::<u64>(4, Overflow::Lap).unwrap();
            tx.try_send(1).unwrap();
            rx.ring.slot(0).stamp.store(bad, Ordering::Relaxed);
            assert!(
                matches!(rx.try_recv(), Err(TryRecvError::Corrupted(_))),
                "{what}"
            );
            assert!(
                matches!(
                    rx.recv_timeout(Duration::from_millis(10)),
                    Err(RecvTimeoutError::Corrupted(_))
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn a_second_publisher_is_refused() {
        let (tx, _rx) = channel::<u64>(4, Overflow::Lap).unwrap();
        let second = Publisher::attach(tx.ring.clone(), WaitStrategy::default());
        assert!(matches!(second, Err(Error::PublisherTaken)));
    }

    #[test]
    fn the_subscriber_limit_is_enforced() {
        let (tx, _rx) = channel_with::<u64>(4, 2, Overflow::Lap).unwrap();
        let _second = tx.subscribe().unwrap();
        assert!(matches!(
            tx.subscribe(),
            Err(Error::ParticipantsFull { limit: 2 })
        ));
        assert!(matches!(
            channel_with::<u64>(4, 0, Overflow::Lap),
            Err(Error::InvalidParticipants(0))
        ));
    }

    /// Threads: a publisher laps two subscribers that copy 64-byte messages while it
    /// overwrites them; no torn message is ever returned, positions only grow, and each
    /// subscriber's received + missed is every message published.
    #[test]
    fn lapped_subscribers_never_return_a_torn_message() {
        let (mut tx, a) = channel::<Tick>(16, Overflow::Lap).unwrap();
        let b = tx.subscribe().unwrap();
        let readers: Vec<_> = [a, b]
            .into_iter()
            .map(|mut rx| {
                std::thread::spawn(move || {
                    let (mut received, mut missed, mut next) = (0u64, 0u64, 0u64);
                    loop {
                        match rx.try_recv() {
                            Ok(tick) => {
                                let position = tick.check();
                                assert_eq!(position, next, "out of order");
                                next = position + 1;
                                received += 1;
                            }
                            Err(TryRecvError::Lagged { missed: m }) => {
                                missed += m;
                                next += m;
                            }
                            Err(TryRecvError::Empty) => shm_sync::atomic::spin_loop(),
                            Err(TryRecvError::Disconnected) => return (received, missed),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for i in 0..N {
            tx.try_send(Tick::new(i)).unwrap();
        }
        drop(tx);
        for reader in readers {
            let (received, missed) = reader.join().unwrap();
            assert_eq!(received + missed, N);
        }
    }

    /// Threads, `Block`: every subscriber receives every message, in order, with no lag.
    #[test]
    fn block_delivers_everything_to_every_subscriber() {
        let (mut tx, a) = channel::<Tick>(8, Overflow::Block).unwrap();
        let b = tx.subscribe().unwrap();
        let readers: Vec<_> = [a, b]
            .into_iter()
            .map(|mut rx| {
                std::thread::spawn(move || {
                    let mut next = 0;
                    loop {
                        match rx.recv() {
                            Ok(tick) => {
                                assert_eq!(tick.check(), next);
                                next += 1;
                            }
                            Err(RecvError::Disconnected) => return next,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for i in 0..N {
            tx.send(Tick::new(i)).unwrap();
        }
        drop(tx);
        for reader in readers {
            assert_eq!(reader.join().unwrap(), N);
        }
    }
}

#[cfg(loom)]
mod loom_tests {
    use super::super::*;

    /// What a subscriber saw: the positions it received (each message is
    /// `[position + 1; 2]`, checked whole and of its position), the messages it lost, and
    /// the position it reads next.
    #[derive(Default, Debug)]
    struct Seen {
        got: Vec<u64>,
        missed: u64,
        next: u64,
    }

    impl Seen {
        fn starting_at(next: u64) -> Self {
            Seen {
                next,
                ..Seen::default()
            }
        }

        /// One receive; false if there was nothing.
        fn poll(&mut self, rx: &mut Subscriber<[u64; 2]>) -> bool {
            match rx.try_recv() {
                Ok([a, b]) => {
                    assert_eq!(a, b, "a torn message");
                    assert_eq!(a, self.next + 1, "not the message of its position");
                    self.got.push(a - 1);
                    self.next += 1;
                    true
                }
                Err(TryRecvError::Lagged { missed }) => {
                    self.missed += missed;
                    self.next += missed;
                    true
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => false,
                Err(e) => panic!("{e}"),
            }
        }

        /// Receives until the subscriber is at `end`, yielding to the model while there
        /// is nothing.
        fn until(&mut self, rx: &mut Subscriber<[u64; 2]>, end: u64) {
            while self.next < end {
                if !self.poll(rx) {
                    loom::thread::yield_now();
                }
            }
        }
    }

    /// Sends `[i + 1; 2]` for `i` in `0..n`, yielding to the model while the ring is full.
    fn publish(tx: &mut Publisher<[u64; 2]>, n: u64) {
        for i in 1..=n {
            let mut value = [i, i];
            while let Err(e) = tx.try_send(value) {
                assert!(matches!(e, crate::TrySendError::Full(_)), "{e}");
                value = e.into_inner();
                loom::thread::yield_now();
            }
        }
    }

    /// The seqlock slot: a publisher laps two subscribers through one slot (two messages
    /// of two words each) while each tries once to copy one: every message a subscriber
    /// returns is whole and the one of its position, and in the end received + missed is
    /// every message.
    fn seqlock_model() {
        loom::model(|| {
            let (mut tx, mut a) = channel_with::<[u64; 2]>(1, 2, Overflow::Lap).unwrap();
            let mut b = tx.subscribe().unwrap();
            tx.try_send([1, 1]).unwrap();
            let publisher = loom::thread::spawn(move || tx.try_send([2, 2]).unwrap());
            let other = loom::thread::spawn(move || {
                let mut seen = Seen::default();
                seen.poll(&mut b);
                (b, seen)
            });
            let mut seen_a = Seen::default();
            seen_a.poll(&mut a);
            publisher.join().unwrap();
            let (mut b, mut seen_b) = other.join().unwrap();
            for (rx, seen) in [(&mut a, &mut seen_a), (&mut b, &mut seen_b)] {
                seen.until(rx, 2);
                assert_eq!(seen.got.len() as u64 + seen.missed, 2);
            }
        });
    }

    #[test]
    fn seqlock_slot() {
        seqlock_model();
    }

    /// The negative control: without the subscriber's second load of the stamp, loom
    /// finds a torn or overwritten message returned as the one of its position.
    #[test]
    fn torn_read_without_the_recheck() {
        super::super::subscriber::faults::drop_recheck(true);
        let message = shm_sync::asymmetric::faults::failure_of(seqlock_model);
        super::super::subscriber::faults::drop_recheck(false);
        assert!(
            message.contains("torn") || message.contains("not the message"),
            "unexpected failure: {message}"
        );
    }

    /// Gating: a publisher sends three messages through one slot under `Block` while a
    /// subscriber receives: it waits for the subscriber each time, so the subscriber
    /// receives all three, in order, and never lags.
    #[test]
    fn gating() {
        loom::model(|| {
            let (mut tx, mut rx) = channel_with::<[u64; 2]>(1, 1, Overflow::Block).unwrap();
            let publisher = loom::thread::spawn(move || publish(&mut tx, 3));
            let mut seen = Seen::default();
            seen.until(&mut rx, 3);
            publisher.join().unwrap();
            assert_eq!((seen.got, seen.missed), (vec![0, 1, 2], 0));
        });
    }

    /// Joining under `Block` while the publisher runs: a subscriber that joins at the
    /// newest message (while the publisher fills the one slot and tries the next) is
    /// never overwritten before it reads (the join's fence pairs with the scan's): it
    /// never lags, and in the end receives every message from where it joined.
    #[test]
    fn joining_under_block() {
        loom::model(|| {
            let (mut tx, mut first) = channel_with::<[u64; 2]>(1, 2, Overflow::Block).unwrap();
            let ring = tx.ring.clone();
            let joiner = loom::thread::spawn(move || {
                let wait = shm_sync::WaitStrategy::default();
                let mut rx = Subscriber::attach(ring, None, Start::Newest, wait).unwrap();
                let mut seen = Seen::starting_at(rx.position());
                seen.poll(&mut rx);
                (rx, seen)
            });
            let publisher = loom::thread::spawn(move || {
                tx.try_send([1, 1]).unwrap();
                let second = tx.try_send([2, 2]).map_err(|e| e.into_inner());
                (tx, second)
            });
            let (mut tx, second) = publisher.join().unwrap();
            let (mut rx, mut seen) = joiner.join().unwrap();
            let mut seen_first = Seen::default();
            if let Err(value) = second {
                // Full: the first subscriber (or the joiner) has not read the one slot.
                seen_first.poll(&mut first);
                seen.poll(&mut rx);
                tx.try_send(value).unwrap();
            }
            drop(tx);
            seen_first.until(&mut first, 2);
            seen.until(&mut rx, 2);
            assert_eq!(seen.missed, 0, "a joiner under Block lagged");
            assert_eq!(seen_first.got, [0, 1]);
        });
    }
}
