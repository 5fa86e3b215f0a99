//! Unit tests of the MPMC ring that reach its internals, and its loom models.

#[cfg(not(loom))]
mod unit {
    use std::time::Duration;

    use shm_sync::WaitStrategy;
    use shm_sync::atomic::Ordering;

    use crate::mpmc::layout::{EMPTY, FULL, SKIPPED, STAMP_STATE};
    use crate::mpmc::*;
    use crate::{Corruption, Error, RecvError, SendError, TryRecvError, TrySendError};

    const COUNT: u64 = if cfg!(miri) { 200 } else { 100_000 };

    /// A claim whose compare-and-swap always loses (as against a peer that rewrites the
    /// position without pause) goes round exactly `RETRY_LIMIT` times, then returns
    /// `Corrupted` with the value back: it never spins forever. The fault is injected
    /// into the real claim (`ring::faults`); the ring is intact afterwards.
    #[test]
    #[cfg_attr(miri, ignore = "65536 rounds of a claim")]
    fn a_claim_that_always_loses_its_cas_ends_corrupted_after_the_retry_limit() {
        use crate::mpmc::ring::faults::lose_every_cas;
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        tx.try_send(1).unwrap();
        lose_every_cas(true);
        assert!(matches!(tx.try_send(2), Err(TrySendError::Corrupted(2, _))));
        assert_eq!(
            lose_every_cas(true),
            shm_sync::RETRY_LIMIT,
            "a producer's rounds"
        );
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Corrupted(_))));
        assert_eq!(
            lose_every_cas(false),
            shm_sync::RETRY_LIMIT,
            "a consumer's rounds"
        );
        assert_eq!(rx.try_recv(), Ok(1));
        tx.try_send(2).unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[test]
    fn invalid_parameters_are_refused() {
        for cap in [0, 3, 6, MAX_CAPACITY * 2] {
            assert!(matches!(channel::<u8>(cap), Err(Error::InvalidCapacity(c)) if c == cap));
        }
        for limit in [0, 1, MAX_PARTICIPANTS + 1] {
            assert!(matches!(
                channel_with::<u8>(4, limit),
                Err(Error::InvalidParticipants(l)) if l == limit
            ));
        }
    }

    #[test]
    fn participant_limit_is_enforced_and_entries_are_reused() {
        let (tx, rx) = channel_with::<u64>(4, 3).unwrap();
        let tx2 = tx.try_clone().unwrap();
        assert!(matches!(
            rx.try_clone(),
            Err(Error::ParticipantsFull { limit: 3 })
        ));
        assert_eq!(tx.stats().producers, 2);
        drop(tx2);
        assert_eq!(tx.stats().producers, 1);
        let rx2 = rx.try_clone().unwrap();
        assert_eq!(rx2.stats().consumers, 2);
    }

    #[test]
    fn forgotten_slot_and_guard_are_finished_by_the_next_call() {
        let (mut tx, mut rx) = channel::<u64>(2).unwrap();
        core::mem::forget(tx.reserve().unwrap()); // position 0
        tx.try_send(5).unwrap(); // aborts position 0 first, then sends at 1
        assert_eq!(tx.stats().aborted, 1);
        assert_eq!(rx.try_recv(), Ok(5)); // passes over the skipped slot
        tx.try_send(6).unwrap();
        core::mem::forget(rx.try_recv_ref().unwrap()); // takes 6, never released
        tx.try_send(7).unwrap();
        assert!(matches!(tx.try_send(8), Err(TrySendError::Full(8))));
        assert_eq!(rx.try_recv(), Ok(7)); // releases 6's slot first
        tx.try_send(8).unwrap();
        assert_eq!(rx.try_recv(), Ok(8));
    }

    #[test]
    fn last_producer_gone_drains_then_disconnects() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        let mut tx2 = tx.try_clone().unwrap();
        tx.try_send(1).unwrap();
        tx2.try_send(2).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(1));
        tx2.try_send(3).unwrap();
        drop(tx2);
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    }

    #[test]
    fn last_consumer_gone_disconnects_producers() {
        let (mut tx, rx) = channel::<u64>(4).unwrap();
        let rx2 = rx.try_clone().unwrap();
        drop(rx);
        tx.try_send(1).unwrap();
        drop(rx2);
        assert!(matches!(tx.try_send(2), Err(TrySendError::Disconnected(2))));
        assert!(matches!(tx.send(3), Err(SendError::Disconnected(3))));
    }

    #[test]
    fn dead_producer_holding_a_slot_is_skipped() {
        let (mut tx, mut rx) = channel_with::<u64>(4, 4).unwrap();
        let mut dying = tx.try_clone().unwrap();
        tx.try_send(1).unwrap();
        core::mem::forget(dying.reserve().unwrap()); // claims position 1
        dying.simulate_crash();
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
        // Position 1 is claimed and never published; its claimer is found dead at a probe.
        rx.set_wait_strategy(WaitStrategy::Yield);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(3));
        let stats = rx.stats();
        assert_eq!((stats.skipped, stats.producers), (1, 1));
    }

    /// The last producer killed at each point of attaching and leaving: whatever its
    /// entry and its membership bit say then, the consumer is told the producers are gone
    /// (once a probe settles it), never left waiting for ever.
    #[test]
    fn a_producer_killed_anywhere_in_attach_or_leave_is_reported_gone() {
        use crate::mpmc::layout::Side;

        // (entry in use, bit set): killed between its entry's store and its bit's at
        // attach (bit clear), attached (set), between its bit's clear and its entry's
        // free at leave (clear).
        for bit_set in [false, true] {
            let (tx, mut rx) = channel_with::<u64>(4, 3).unwrap();
            let dying = tx.try_clone().unwrap();
            drop(tx);
            if !bit_set {
                dying.ring.delist(Side::Producer, dying.me.index);
            }
            dying.simulate_crash();
            rx.set_wait_strategy(WaitStrategy::Yield);
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(5)),
                Err(crate::RecvTimeoutError::Disconnected),
                "bit set: {bit_set}"
            );
            assert_eq!(rx.stats().producers, 0);
        }
    }

    /// The last consumer killed at each point of attaching and leaving, as the producer
    /// above: the producer is told the consumers are gone, with its value back.
    #[test]
    fn a_consumer_killed_anywhere_in_attach_or_leave_is_reported_gone() {
        use crate::mpmc::layout::Side;

        for bit_set in [false, true] {
            let (mut tx, rx) = channel_with::<u64>(4, 3).unwrap();
            let dying = rx.try_clone().unwrap();
            drop(rx);
            if !bit_set {
                dying.ring.delist(Side::Consumer, dying.me.index);
            }
            dying.simulate_crash();
            tx.set_wait_strategy(WaitStrategy::Yield);
            for v in 0..4 {
                // Room for four: sends succeed until the ring is full, or fail once the
                // dead consumer is settled; never wait for ever.
                match tx.send_timeout(v, Duration::from_secs(5)) {
                    Ok(()) => {}
                    Err(e) => {
                        assert_eq!(
                            e,
                            crate::SendTimeoutError::Disconnected(v),
                            "bit set: {bit_set}"
                        );
                        break;
                    }
                }
            }
            assert_eq!(
                tx.send_timeout(9, Duration::from_secs(5)),
                Err(crate::SendTimeoutError::Disconnected(9)),
                "bit set: {bit_set}"
            );
            assert_eq!(tx.stats().consumers, 0);
        }
    }

    /// A dead producer's claim is left alone while a live producer names the same
    /// position in its entry (it lost the CAS for it and has not moved on yet): the
    /// settlement answers `NotYet` and skips nothing; once the live one moves on, the
    /// next settlement skips the slot, once.
    #[test]
    fn a_dead_claim_named_by_a_live_producer_waits_for_it() {
        use shm_alloc::participants::Settle;

        let (tx, mut rx) = channel_with::<u64>(4, 3).unwrap();
        let mut dying = tx.try_clone().unwrap();
        let slot = dying.reserve().unwrap();
        let position = slot.position();
        core::mem::forget(slot);
        let dead = dying.me.index;
        dying.simulate_crash();
        let live = tx.ring.entry(tx.me.index);
        live.set_word(position + 1);
        assert_eq!(tx.ring.settle_write(position, dead), Settle::NotYet);
        assert_eq!(tx.stats().skipped, 0);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        live.set_word(0);
        assert_eq!(tx.ring.settle_write(position, dead), Settle::Done);
        assert_eq!(tx.ring.settle_write(position, dead), Settle::Done);
        assert_eq!(tx.stats().skipped, 1);
    }

    /// A consumer that died after claiming a skipped slot (its producer aborted it) and
    /// before releasing it: settling its claim releases the slot for the producers' next
    /// lap, and counts nothing reclaimed, since no message was in it. Catches a settler
    /// that leaves a skipped slot claimed (the producers would find it full forever).
    #[test]
    fn a_dead_consumers_claim_of_a_skipped_slot_is_released() {
        use shm_alloc::participants::Settle;

        let (mut tx, rx) = channel_with::<u64>(2, 3).unwrap();
        drop(tx.reserve().unwrap());
        assert_eq!(tx.ring.slot(0).stamp.load(Ordering::Relaxed), SKIPPED);
        // The dying consumer's claim of position 0, as `claim` makes it: its entry
        // names the position, and head has moved past it.
        let dying = rx.try_clone().unwrap();
        let dead = dying.me.index;
        rx.ring.entry(dead).set_word(1);
        rx.ring.control().head.store(1, Ordering::Relaxed);
        dying.simulate_crash();
        assert_eq!(rx.ring.settle_read(0, dead), Settle::Done);
        assert_eq!(
            rx.ring.slot(0).stamp.load(Ordering::Relaxed),
            rx.ring.stamp(2, EMPTY)
        );
        assert_eq!(rx.stats().reclaimed, 0);
    }

    #[test]
    fn corrupted_stamp_and_positions_are_reported() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        // A stamp four laps ahead of a head nobody moved.
        rx.ring
            .slot(0)
            .stamp
            .store((4 << 2) | FULL, Ordering::Relaxed);
        assert_eq!(
            rx.try_recv(),
            Err(TryRecvError::Corrupted(Corruption::Slot {
                position: 0,
                stamp: (4 << 2) | FULL
            }))
        );
        rx.ring.slot(0).stamp.store(STAMP_STATE, Ordering::Relaxed);
        assert!(matches!(
            tx.try_send(1),
            Err(TrySendError::Corrupted(1, Corruption::Slot { .. }))
        ));
        rx.ring.slot(0).stamp.store(0, Ordering::Relaxed);
        rx.ring.control().tail.store(100, Ordering::Relaxed);
        assert!(matches!(
            tx.try_clone(),
            Err(Error::Corrupted(Corruption::Positions { tail: 100, .. }))
        ));
    }

    /// Runs `call` on a thread and returns its result, or panics if it has not returned
    /// within 5 s (the call is left running: a hang, reported as such).
    fn within<R: Send + 'static>(what: &str, call: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(call()));
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{what} did not return: a hang"))
    }

    /// A consumer whose slot at `head` holds state 3 (no state of the protocol) of the
    /// current lap: every receive says `Corrupted`, none loops.
    #[test]
    fn a_stamp_in_no_state_of_the_protocol_is_corrupted_for_every_receive() {
        let (_tx, rx) = channel_with::<u64>(4, 2).unwrap();
        rx.ring.slot(0).stamp.store(STAMP_STATE, Ordering::Relaxed);
        let corrupted = Corruption::Slot {
            position: 0,
            stamp: STAMP_STATE,
        };
        let mut rx = within("try_recv", move || {
            let mut rx = rx;
            assert_eq!(rx.try_recv(), Err(TryRecvError::Corrupted(corrupted)));
            rx
        });
        rx = within("try_recv_ref", move || {
            assert!(matches!(rx.try_recv_ref(), Err(TryRecvError::Corrupted(c)) if c == corrupted));
            rx
        });
        within("recv_timeout", move || {
            assert_eq!(
                rx.recv_timeout(Duration::from_millis(100)),
                Err(crate::RecvTimeoutError::Corrupted(corrupted))
            );
        });
    }

    /// The check a newcomer makes of the positions as it attaches never reports a ring
    /// corrupt while messages pass through it: a producer and a consumer thread move
    /// `COUNT` messages through one slot (head and tail each move every message) while
    /// this thread checks the positions again and again; each check is `Ok`. A check
    /// made on two loads that are not a snapshot (tail, then head after a message went
    /// through) would see head past tail. Then positions forged apart are reported.
    #[test]
    fn positions_are_checked_on_a_snapshot_while_messages_pass() {
        let (mut tx, mut rx) = channel::<u64>(1).unwrap();
        let ring = tx.try_clone().unwrap();
        let producer = std::thread::spawn(move || (0..COUNT).for_each(|v| tx.send(v).unwrap()));
        let consumer = std::thread::spawn(move || {
            (0..COUNT).for_each(|v| assert_eq!(rx.recv(), Ok(v)));
            rx
        });
        let mut checks = 0u64;
        while !producer.is_finished() {
            assert_eq!(ring.ring.check_positions(), Ok(()), "after {checks} checks");
            checks += 1;
        }
        producer.join().unwrap();
        let _rx = consumer.join().unwrap();
        ring.ring.control().head.store(5, Ordering::Relaxed);
        assert_eq!(
            ring.ring.check_positions(),
            Err(Corruption::Positions {
                head: 5,
                tail: COUNT,
                capacity: 1
            })
        );
    }

    /// A producer of a fresh ring whose `head` is past `tail`: every send says
    /// `Corrupted`, none loops.
    #[test]
    fn head_past_tail_is_corrupted_for_every_send() {
        for (head, tail) in [(1001, 1000), (0, u64::MAX)] {
            let (tx, _rx) = channel::<u64>(4).unwrap();
            tx.ring.control().tail.store(tail, Ordering::Relaxed);
            tx.ring.control().head.store(head, Ordering::Relaxed);
            let positions = Corruption::Positions {
                head,
                tail,
                capacity: 4,
            };
            let tx = within("try_send", move || {
                let mut tx = tx;
                assert!(matches!(
                    tx.try_send(1),
                    Err(TrySendError::Corrupted(1, Corruption::Positions { .. }))
                ));
                tx
            });
            within("send_timeout", move || {
                let mut tx = tx;
                assert_eq!(
                    tx.send_timeout(1, Duration::from_millis(100)),
                    Err(crate::SendTimeoutError::Corrupted(1, positions))
                );
            });
        }
    }

    /// A reserved slot dropped without `commit` is published as skipped when it drops,
    /// not at its producer's next call: a message another producer sends after it is
    /// received at once, the slot passed over. Catches a drop that leaves the skip to
    /// the next claim (the consumers would wait behind the slot until then). The slot's
    /// `Debug` form shows its position.
    #[test]
    fn a_dropped_send_slot_is_skipped_when_it_drops() {
        let (mut tx, mut rx) = channel::<u64>(4).unwrap();
        let mut other = tx.try_clone().unwrap();
        let slot = tx.reserve().unwrap();
        assert_eq!(format!("{slot:?}"), "SendSlot { position: 0, .. }");
        drop(slot);
        other.try_send(7).unwrap();
        assert_eq!(rx.try_recv(), Ok(7));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    /// Polls with `poll` until it answers something other than `idle` (`Empty`, `Full`),
    /// at most `LIVENESS_POLLS + 1` times: how many polls answered `idle`, and the
    /// answer that ended them (`None`: every poll was idle, across one liveness probe).
    fn idle_polls<E: PartialEq>(
        mut poll: impl FnMut() -> Result<(), E>,
        idle: &E,
    ) -> (u32, Option<Result<(), E>>) {
        for polls in 0..=LIVENESS_POLLS {
            match poll() {
                Err(e) if e == *idle => {}
                other => return (polls, Some(other)),
            }
        }
        (LIVENESS_POLLS + 1, None)
    }

    /// A stamp of `lap` in `state`, for a ring of capacity 4 (`lap << 2 | state`).
    const fn stamp(lap: u64, state: u64) -> u64 {
        (lap << 2) | state
    }

    /// Every stamp a consumer can find at `head` (8: lap 2 of a ring of 4) that is not
    /// its message, with `tail` as written beside it: the states the protocol has
    /// (nothing yet; the slot's previous message still held by the consumer that
    /// claimed it; a producer writing) stay `Empty`, across a liveness probe; the
    /// others are `Corrupted` at once, except positions that contradict each other
    /// under an empty slot, which the common empty poll does not read and the next
    /// liveness probe reports (after `LIVENESS_POLLS - 1` empty polls). Hostile words
    /// of no state of the protocol, written by hand: no run of the ring makes them.
    #[test]
    fn every_stamp_at_head_is_either_a_state_of_the_protocol_or_corrupted() {
        const HEAD: u64 = 8;
        let slot = |s| {
            Some(Err(TryRecvError::Corrupted(Corruption::Slot {
                position: HEAD,
                stamp: s,
            })))
        };
        let positions = |tail| {
            Some(Err(TryRecvError::Corrupted(Corruption::Positions {
                head: HEAD,
                tail,
                capacity: 4,
            })))
        };
        let probed = LIVENESS_POLLS - 1;
        let cases = [
            // (stamp, tail, empty polls, then)
            (stamp(2, EMPTY), HEAD, LIVENESS_POLLS + 1, None), // nothing sent
            (stamp(2, EMPTY), HEAD + 1, LIVENESS_POLLS + 1, None), // being written
            (stamp(1, FULL), HEAD, LIVENESS_POLLS + 1, None),  // previous lap held
            (stamp(1, SKIPPED), HEAD, LIVENESS_POLLS + 1, None), // previous lap held
            (stamp(3, EMPTY), HEAD, 0, slot(stamp(3, EMPTY))), // a lap ahead
            (stamp(3, FULL), HEAD, 0, slot(stamp(3, FULL))),
            (stamp(2, STAMP_STATE), HEAD, 0, slot(stamp(2, STAMP_STATE))),
            (stamp(1, EMPTY), HEAD, 0, slot(stamp(1, EMPTY))), // released, not reused
            (stamp(1, STAMP_STATE), HEAD, 0, slot(stamp(1, STAMP_STATE))),
            (stamp(1, FULL), HEAD + 1, 0, slot(stamp(1, FULL))), // held, yet claimed
            (stamp(0, FULL), HEAD, 0, slot(stamp(0, FULL))),     // two laps behind
            (stamp(1, FULL), HEAD - 1, 0, positions(HEAD - 1)),  // head past tail
            (stamp(2, EMPTY), HEAD - 1, probed, positions(HEAD - 1)),
        ];
        for (at_head, tail, empty, then) in cases {
            let (_tx, mut rx) = channel::<u64>(4).unwrap();
            let control = rx.ring.control();
            control.head.store(HEAD, Ordering::Relaxed);
            control.tail.store(tail, Ordering::Relaxed);
            rx.ring.slot(HEAD).stamp.store(at_head, Ordering::Relaxed);
            let outcome = idle_polls(|| rx.try_recv().map(drop), &TryRecvError::Empty);
            assert_eq!(
                outcome,
                (empty, then),
                "stamp {at_head:#x} at head {HEAD}, tail {tail}"
            );
        }
    }

    /// Every stamp a producer can find at `tail` (8: lap 2 of a ring of 4) that is not
    /// free, with `head` as written beside it: the states the protocol has (the
    /// previous lap's message not yet consumed, or claimed and held by a consumer, or
    /// its position claimed by a producer still writing it) stay `Full`, across a
    /// liveness probe; the others are `Corrupted` at once, except positions that
    /// contradict each other under a slot of the previous lap, which the common full
    /// poll does not read and the next liveness probe reports.
    #[test]
    fn every_stamp_at_tail_is_either_a_state_of_the_protocol_or_corrupted() {
        const TAIL: u64 = 8;
        let slot = |s| {
            Some(Err(TrySendError::Corrupted(
                7,
                Corruption::Slot {
                    position: TAIL,
                    stamp: s,
                },
            )))
        };
        let positions = |head| {
            Some(Err(TrySendError::Corrupted(
                7,
                Corruption::Positions {
                    head,
                    tail: TAIL,
                    capacity: 4,
                },
            )))
        };
        let probed = LIVENESS_POLLS - 1;
        let cases = [
            // (stamp, head, full polls, then)
            (stamp(1, FULL), TAIL - 4, LIVENESS_POLLS + 1, None), // not consumed
            (stamp(1, SKIPPED), TAIL - 4, LIVENESS_POLLS + 1, None),
            (stamp(1, FULL), TAIL, LIVENESS_POLLS + 1, None), // claimed, held
            (stamp(1, SKIPPED), TAIL - 1, LIVENESS_POLLS + 1, None),
            (stamp(1, EMPTY), TAIL - 4, LIVENESS_POLLS + 1, None), // being written
            (stamp(3, EMPTY), TAIL, 0, slot(stamp(3, EMPTY))),     // a lap ahead
            (stamp(2, FULL), TAIL, 0, slot(stamp(2, FULL))),       // claimed, tail stuck
            (stamp(2, SKIPPED), TAIL, 0, slot(stamp(2, SKIPPED))),
            (stamp(2, STAMP_STATE), TAIL, 0, slot(stamp(2, STAMP_STATE))),
            (stamp(1, EMPTY), TAIL, 0, slot(stamp(1, EMPTY))), // unwritten, yet consumed
            (stamp(1, EMPTY), TAIL - 3, 0, slot(stamp(1, EMPTY))),
            (
                stamp(1, STAMP_STATE),
                TAIL - 4,
                0,
                slot(stamp(1, STAMP_STATE)),
            ),
            (stamp(0, FULL), TAIL - 4, 0, slot(stamp(0, FULL))), // two laps behind
            (stamp(1, EMPTY), TAIL - 5, 0, positions(TAIL - 5)), // more than a ring
            (stamp(1, EMPTY), TAIL + 1, 0, positions(TAIL + 1)), // head past tail
            (stamp(1, FULL), TAIL - 5, probed, positions(TAIL - 5)),
            (stamp(1, SKIPPED), TAIL - 5, probed, positions(TAIL - 5)),
            (stamp(1, FULL), TAIL + 1, probed, positions(TAIL + 1)),
        ];
        for (at_tail, head, full, then) in cases {
            let (mut tx, _rx) = channel::<u64>(4).unwrap();
            let control = tx.ring.control();
            control.head.store(head, Ordering::Relaxed);
            control.tail.store(TAIL, Ordering::Relaxed);
            tx.ring.slot(TAIL).stamp.store(at_tail, Ordering::Relaxed);
            let outcome = idle_polls(|| tx.try_send(7).map(drop), &TrySendError::Full(7));
            assert_eq!(
                outcome,
                (full, then),
                "stamp {at_tail:#x} at tail {TAIL}, head {head}"
            );
        }
    }

    /// Two producers and two consumers on threads: every message once, each producer's
    /// messages in order.
    fn many(wait: WaitStrategy, capacity: u64) {
        let (tx, rx) = channel::<u64>(capacity).unwrap();
        let producers: Vec<_> = (0..2u64)
            .map(|id| {
                let mut tx = tx.try_clone().unwrap();
                tx.set_wait_strategy(wait);
                std::thread::spawn(move || {
                    for i in 0..COUNT {
                        tx.send(id << 32 | i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let mut rx = rx.try_clone().unwrap();
                rx.set_wait_strategy(wait);
                std::thread::spawn(move || {
                    let mut next = [0u64; 2];
                    let mut got = Vec::new();
                    while let Ok(v) = rx.recv() {
                        let (id, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                        assert!(i >= next[id], "producer {id}: {i} after {}", next[id]);
                        next[id] = i + 1;
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        drop(rx);
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        let expected: Vec<u64> = (0..2u64)
            .flat_map(|id| (0..COUNT).map(move |i| id << 32 | i))
            .collect();
        assert_eq!(all.len(), expected.len());
        assert!(all == expected, "messages lost or duplicated");
    }

    #[test]
    fn two_by_two_threads_busy_spin() {
        many(WaitStrategy::BusySpin, 4);
    }

    #[test]
    fn two_by_two_threads_yield_large_capacity() {
        many(WaitStrategy::Yield, 1024);
    }

    #[test]
    #[cfg_attr(miri, ignore = "futex sleeps make miri slow")]
    fn two_by_two_threads_park() {
        many(WaitStrategy::Park, 2);
    }
}

#[cfg(loom)]
mod loom_tests {
    use crate::TryRecvError;
    use crate::mpmc::*;

    /// Two producers send one value each while two consumers try to receive one each;
    /// then the main thread receives the rest. Each value is received exactly once, no
    /// slot is raced on (loom's UnsafeCell), no interleaving makes a stamp look corrupt,
    /// and no claim is left unfinished once everyone is done.
    #[test]
    fn two_producers_two_consumers() {
        loom::model(|| {
            let (mut tx1, mut rx1) = channel_with::<u64>(2, 4).unwrap();
            let mut tx2 = tx1.try_clone().unwrap();
            let mut rx2 = rx1.try_clone().unwrap();
            let p1 = loom::thread::spawn(move || tx1.try_send(1).unwrap());
            let p2 = loom::thread::spawn(move || tx2.try_send(2).unwrap());
            let c2 = loom::thread::spawn(move || try_one(&mut rx2));
            let mut got: Vec<u64> = try_one(&mut rx1).into_iter().collect();
            p1.join().unwrap();
            p2.join().unwrap();
            got.extend(c2.join().unwrap());
            got.extend(drain(&mut rx1));
            got.sort_unstable();
            assert_eq!(got, [1, 2]);
        });
    }

    /// The first consumer attaches while the producer polls the ring, filling it: no
    /// poll reads the consumers gone. (A ring that marked a side at attach, before its
    /// bit, and read the bitmap before the mark, let a poll between the two read
    /// `Disconnected`.)
    #[test]
    fn a_poll_racing_the_first_attach_is_not_disconnected() {
        use super::super::heap_ring;
        use super::super::layout::Side;
        use super::super::member::Member;

        loom::model(|| {
            let ring = heap_ring::<u64>(2, 2).unwrap();
            let wait = shm_sync::WaitStrategy::default();
            let mut tx = Producer {
                me: Member::attach(&ring, Side::Producer, wait).unwrap(),
                ring: ring.clone(),
            };
            let consumer = loom::thread::spawn(move || Consumer {
                me: Member::attach(&ring, Side::Consumer, wait).unwrap(),
                ring,
            });
            for v in 0..3 {
                match tx.try_send(v) {
                    Ok(()) | Err(crate::TrySendError::Full(_)) => {}
                    Err(e) => panic!("send {v}: {e}"),
                }
            }
            let mut rx = consumer.join().unwrap();
            assert_eq!(rx.try_recv(), Ok(0));
        });
    }

    /// One attempt to receive: a value, or nothing if the ring looked empty.
    fn try_one(rx: &mut Consumer<u64>) -> Option<u64> {
        match rx.try_recv() {
            Ok(v) => Some(v),
            Err(TryRecvError::Empty) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// A producer claims a slot and dies before publishing it; the other producer sends
    /// after it. The consumer receives the second value, and the dead claim is counted
    /// as skipped exactly once.
    #[test]
    fn dead_claimer_is_skipped() {
        loom::model(|| {
            let (mut tx, mut rx) = channel_with::<u64>(2, 3).unwrap();
            let mut dying = tx.try_clone().unwrap();
            let p1 = loom::thread::spawn(move || {
                core::mem::forget(dying.reserve().unwrap());
                dying.simulate_crash();
            });
            let p2 = loom::thread::spawn(move || {
                tx.try_send(2).unwrap();
            });
            p1.join().unwrap();
            p2.join().unwrap();
            let skipped = rx.stats().skipped;
            assert_eq!(skipped, 0, "nobody probed yet");
            let got = drain(&mut rx);
            assert_eq!(got, [2]);
            assert_eq!(rx.stats().skipped, 1);
        });
    }

    /// A producer sends three values through two slots while a consumer receives them:
    /// the ring fills (the producer's full polls) and laps (each slot reused with the
    /// next lap's stamp), and the consumer's empty polls meet the producer's claims.
    /// Every value arrives once and in order, in every interleaving.
    #[test]
    fn filling_and_lapping() {
        loom::model(|| {
            let (mut tx, mut rx) = channel_with::<u64>(2, 2).unwrap();
            let producer = loom::thread::spawn(move || (0..3).for_each(|v| send(&mut tx, v)));
            let got = receive(&mut rx, 3);
            producer.join().unwrap();
            assert_eq!(got, [0, 1, 2]);
        });
    }

    /// A consumer parks (`WaitStrategy::Park`) in `recv` on the empty ring while the
    /// producer sends one value: the consumer always wakes with it (loom reports a
    /// deadlock if a wake-up is lost between the ring and its event count).
    #[test]
    fn a_parked_consumer_is_woken() {
        loom::model(|| {
            let (mut tx, mut rx) = channel_with::<u64>(2, 2).unwrap();
            rx.set_wait_strategy(shm_sync::WaitStrategy::Park);
            let producer = loom::thread::spawn(move || tx.try_send(7).unwrap());
            assert_eq!(rx.recv(), Ok(7));
            producer.join().unwrap();
        });
    }

    /// A consumer takes a value in place and dies holding it, while the producer needs
    /// its slot for a third value and another consumer receives: the producer's liveness
    /// probe releases the dead consumer's slot, once (`reclaimed` 1), and the live
    /// consumer gets the other values, in order.
    #[test]
    fn a_dead_consumers_slot_is_reclaimed() {
        loom::model(|| {
            let (mut tx, mut rx) = channel_with::<u64>(2, 3).unwrap();
            let mut dying = rx.try_clone().unwrap();
            tx.try_send(0).unwrap();
            tx.try_send(1).unwrap();
            let consumer = loom::thread::spawn(move || {
                core::mem::forget(dying.try_recv_ref().unwrap());
                dying.simulate_crash();
            });
            consumer.join().unwrap();
            let producer = loom::thread::spawn(move || send(&mut tx, 2));
            let got = receive(&mut rx, 2);
            producer.join().unwrap();
            assert_eq!(got, [1, 2]);
            assert_eq!(rx.stats().reclaimed, 1);
        });
    }

    /// A consumer dies holding a value in place; then a newcomer attaches (its attach
    /// settles a dead holder it finds in an entry) while the producer, whose ring is
    /// full, probes the consumers (its probe settles the dead one too). Whoever takes
    /// the dead entry's lock first settles it, and only once: `reclaimed` is 1 and the
    /// producer's third value gets the slot.
    #[test]
    fn a_prober_and_a_newcomer_settle_a_dead_consumer_once() {
        loom::model(|| {
            let (mut tx, rx) = channel_with::<u64>(2, 4).unwrap();
            let mut dying = rx.try_clone().unwrap();
            tx.try_send(0).unwrap();
            tx.try_send(1).unwrap();
            core::mem::forget(dying.try_recv_ref().unwrap());
            dying.simulate_crash();
            let newcomer = loom::thread::spawn(move || {
                let joined = rx.try_clone().unwrap();
                (rx, joined)
            });
            send(&mut tx, 2);
            let (mut rx, _joined) = newcomer.join().unwrap();
            assert_eq!(rx.stats().reclaimed, 1);
            assert_eq!(rx.try_recv(), Ok(1));
            assert_eq!(rx.try_recv(), Ok(2));
        });
    }

    /// Sends `value`, polling (and yielding to the model) while the ring is full.
    fn send(tx: &mut Producer<u64>, mut value: u64) {
        loop {
            match tx.try_send(value) {
                Ok(()) => return,
                Err(crate::TrySendError::Full(back)) => {
                    value = back;
                    loom::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Receives `n` values, polling (and yielding to the model) while the ring is empty.
    fn receive(rx: &mut Consumer<u64>, n: usize) -> Vec<u64> {
        let mut got = Vec::new();
        while got.len() < n {
            match rx.try_recv() {
                Ok(v) => got.push(v),
                Err(TryRecvError::Empty) => loom::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    /// Receives until the ring is empty and every producer gone, polling: for a model
    /// whose producers have all finished.
    fn drain(rx: &mut Consumer<u64>) -> Vec<u64> {
        let mut got = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(v) => got.push(v),
                Err(TryRecvError::Empty) => loom::thread::yield_now(),
                Err(TryRecvError::Disconnected) => return got,
                Err(e) => panic!("{e}"),
            }
        }
    }
}
