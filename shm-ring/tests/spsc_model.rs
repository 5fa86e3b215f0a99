//! The SPSC ring against a model (`VecDeque`): random sequences of every operation, in
//! one thread, compared step by step.

use std::collections::VecDeque;

use proptest::prelude::*;
use shm_ring::spsc::channel;
use shm_ring::{TryRecvError, TrySendError};

#[derive(Debug, Clone)]
enum Op {
    Send(u32),
    SendSlice(Vec<u32>),
    Reserve { value: u32, commit: bool },
    Recv,
    RecvInto(usize),
    RecvRef,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u32>().prop_map(Op::Send),
        proptest::collection::vec(any::<u32>(), 0..12).prop_map(Op::SendSlice),
        (any::<u32>(), any::<bool>()).prop_map(|(value, commit)| Op::Reserve { value, commit }),
        Just(Op::Recv),
        (0usize..12).prop_map(Op::RecvInto),
        Just(Op::RecvRef),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        // Miri's isolation has no file system for proptest's regression files.
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    #[test]
    fn ring_behaves_like_a_bounded_deque(
        capacity_log2 in 0u32..4,
        // Under miri, runs of 40 operations: each still wraps rings of up to 8 slots
        // several times, at a quarter of the interpreter's time.
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 40 } else { 200 }),
    ) {
        let capacity = 1u64 << capacity_log2;
        let (mut tx, mut rx) = channel::<u32>(capacity).unwrap();
        let mut model: VecDeque<u32> = VecDeque::new();
        let cap = capacity as usize;
        for op in ops {
            match op {
                Op::Send(v) => match tx.try_send(v) {
                    Ok(()) => { prop_assert!(model.len() < cap); model.push_back(v); }
                    Err(TrySendError::Full(back)) => {
                        prop_assert_eq!(model.len(), cap);
                        prop_assert_eq!(back, v);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::SendSlice(values) => match tx.send_slice(&values) {
                    Ok(n) => {
                        prop_assert_eq!(n, values.len().min(cap - model.len()));
                        prop_assert!(n > 0 || values.is_empty());
                        model.extend(&values[..n]);
                    }
                    Err(TrySendError::Full(())) => prop_assert_eq!(model.len(), cap),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::Reserve { value, commit } => match tx.reserve() {
                    Ok(mut slot) => {
                        prop_assert!(model.len() < cap);
                        *slot = value;
                        if commit {
                            slot.commit();
                            model.push_back(value);
                        }
                    }
                    Err(TrySendError::Full(())) => prop_assert_eq!(model.len(), cap),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::Recv => match rx.try_recv() {
                    Ok(v) => prop_assert_eq!(Some(v), model.pop_front()),
                    Err(TryRecvError::Empty) => prop_assert!(model.is_empty()),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::RecvInto(len) => {
                    let mut buf = vec![0u32; len];
                    match rx.recv_into(&mut buf) {
                        Ok(n) => {
                            prop_assert_eq!(n, len.min(model.len()));
                            let expected: Vec<u32> = model.drain(..n).collect();
                            prop_assert_eq!(&buf[..n], &expected[..]);
                        }
                        Err(TryRecvError::Empty) => prop_assert!(model.is_empty() && len > 0),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::RecvRef => match rx.try_recv_ref() {
                    Ok(guard) => prop_assert_eq!(Some(*guard), model.pop_front()),
                    Err(TryRecvError::Empty) => prop_assert!(model.is_empty()),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
            }
        }
        // Drain: what is left comes out in order.
        while let Some(expected) = model.pop_front() {
            prop_assert_eq!(rx.try_recv(), Ok(expected));
        }
        prop_assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        prop_assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }
}
