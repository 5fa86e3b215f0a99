//! The stream ring against a model, `VecDeque<Vec<u8>>`: random sends (sizes from 0 to
//! the largest allowed, and past it) and receives, checked after every step; and a frame
//! forced across the end of the buffer at every possible offset.

use std::collections::VecDeque;

use proptest::prelude::*;
use shm_ring::TryRecvError;
use shm_ring::stream::{SendError, channel};

const CAPACITY: u64 = 256;
const MAX: usize = CAPACITY as usize / 2 - 8;

#[derive(Debug, Clone)]
enum Op {
    Send(usize, u8),
    Recv,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop_oneof![Just(0usize), Just(MAX), Just(MAX + 1), 0..=MAX], any::<u8>())
            .prop_map(|(len, fill)| Op::Send(len, fill)),
        2 => Just(Op::Recv),
    ]
}

/// The bytes a frame of `len` occupies: an 8-byte header, padded to 8.
fn record(len: usize) -> usize {
    (8 + len).next_multiple_of(8)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn behaves_like_a_queue_of_byte_vectors(ops in prop::collection::vec(op(), 1..200)) {
        let (mut tx, mut rx) = channel(CAPACITY).unwrap();
        // Each frame with the bytes it took: its record, and the padding before it.
        let mut model: VecDeque<(Vec<u8>, usize)> = VecDeque::new();
        let (mut tail, mut head) = (0usize, 0usize);
        for op in ops {
            match op {
                Op::Send(len, fill) => {
                    let payload: Vec<u8> =
                        (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                    let result = tx.try_send(&payload);
                    if len > MAX {
                        prop_assert_eq!(result, Err(SendError::TooLarge { len, max: MAX }));
                        continue;
                    }
                    let contiguous = CAPACITY as usize - tail % CAPACITY as usize;
                    let need = if record(len) <= contiguous {
                        record(len)
                    } else {
                        contiguous + record(len)
                    };
                    if need <= CAPACITY as usize - (tail - head) {
                        prop_assert_eq!(result, Ok(()));
                        tail += need;
                        model.push_back((payload, need));
                    } else {
                        prop_assert_eq!(result, Err(SendError::Full));
                    }
                }
                Op::Recv => match (rx.try_recv(), model.pop_front()) {
                    (Ok(frame), Some((expected, need))) => {
                        prop_assert_eq!(&*frame, &expected[..]);
                        head += need;
                    }
                    (Err(TryRecvError::Empty), None) => {}
                    (got, expected) => prop_assert!(
                        false,
                        "got {:?}, expected {:?}",
                        got.map(|f| f.to_vec()),
                        expected
                    ),
                },
            }
        }
        // Everything left comes out in order.
        while let Some((expected, _)) = model.pop_front() {
            prop_assert_eq!(&*rx.try_recv().unwrap(), &expected[..]);
        }
        prop_assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }
}

#[test]
fn a_frame_wraps_correctly_at_every_offset() {
    // For every 8-byte offset of the buffer, and every length whose record does not fit
    // before the end: move the positions there with a filler, then send and receive.
    for offset in (0..CAPACITY as usize).step_by(8) {
        for len in [0, 1, 7, 8, 9, 50, MAX] {
            let (mut tx, mut rx) = channel(CAPACITY).unwrap();
            if offset != 0 {
                // One filler frame of `offset` bytes, or two if it is too large for one.
                let mut left = offset;
                while left > 0 {
                    let chunk = left.min(record(MAX));
                    tx.try_send(&vec![0xee; chunk - 8]).unwrap();
                    drop(rx.try_recv().unwrap());
                    left -= chunk;
                }
            }
            let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            tx.try_send(&payload).unwrap();
            assert_eq!(
                &*rx.try_recv().unwrap(),
                &payload[..],
                "offset {offset}, len {len}"
            );
            // The positions after a padded frame are where the next one goes.
            tx.try_send(b"after").unwrap();
            assert_eq!(&*rx.try_recv().unwrap(), b"after");
            assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        }
    }
}
