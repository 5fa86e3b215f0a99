//! The pool against a model, on a real mapped file: random sequences of loans, sends,
//! receives and releases across size classes, checked after every step for overlap,
//! alignment, the counts of every state, and at the end for a full pool.

use proptest::prelude::*;
use shm_alloc::pool::{CHUNK_ALIGN, Pool};
use shm_alloc::{Error, LoanedChunk, Location, Sample, Segment};

/// Size classes of the pool under test: (bytes per chunk, chunks).
const CLASSES: [(u64, u32); 3] = [(128, 6), (512, 4), (4096, 3)];

#[derive(Debug, Clone)]
enum Op {
    /// Loan `len` bytes from the writer.
    Loan(usize),
    /// Drop loan `pick % loans` unsent.
    DropLoan(usize),
    /// Send loan `pick % loans` to the reader, which receives it.
    SendAndReceive(usize),
    /// Send loan `pick % loans` into flight, to be received later.
    Send(usize),
    /// Receive in-flight chunk `pick % in_flight`.
    Receive(usize),
    /// Drop sample `pick % samples`.
    DropSample(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..=5000).prop_map(Op::Loan),
        1 => any::<usize>().prop_map(Op::DropLoan),
        2 => any::<usize>().prop_map(Op::SendAndReceive),
        1 => any::<usize>().prop_map(Op::Send),
        1 => any::<usize>().prop_map(Op::Receive),
        2 => any::<usize>().prop_map(Op::DropSample),
    ]
}

/// The class a loan of `len` bytes takes, in the model.
fn class_of(len: usize) -> Option<usize> {
    CLASSES.iter().position(|&(size, _)| size as usize >= len)
}

/// A chunk a handle holds: where it starts and how many bytes it spans.
fn span(ptr: *const u8, class: usize) -> (usize, usize) {
    (ptr as usize, CLASSES[class].0 as usize)
}

fn check(
    writer: &Pool,
    loans: &[(LoanedChunk<'_>, usize)],
    in_flight: &[(shm_alloc::ShmOffset, usize)],
    samples: &[(Sample<'_>, usize)],
) {
    let mut spans: Vec<(usize, usize)> = loans
        .iter()
        .map(|(c, class)| span(c.as_slice().as_ptr(), *class))
        .chain(samples.iter().map(|(s, class)| span(s.as_ptr(), *class)))
        .collect();
    for &(start, _) in &spans {
        assert_eq!(
            start % CHUNK_ALIGN as usize,
            0,
            "chunk at {start:#x} misaligned"
        );
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(
            pair[0].0 + pair[0].1 <= pair[1].0,
            "chunks overlap: {pair:?}"
        );
    }
    let stats = writer.stats();
    for (class, s) in stats.classes.iter().enumerate() {
        let loaned = loans.iter().filter(|(_, c)| *c == class).count() as u64;
        let flying = in_flight.iter().filter(|(_, c)| *c == class).count() as u64;
        let held = samples.iter().filter(|(_, c)| *c == class).count() as u64;
        assert_eq!(
            (s.loaned, s.in_flight, s.held, s.free),
            (loaned, flying, held, s.chunks - loaned - flying - held),
            "class {class}"
        );
    }
}

fn run(ops: Vec<Op>, name: &str) {
    let location = Location::Name(name.to_string());
    let _ = Segment::remove(&location);
    let mut builder = Pool::builder(location.clone()).participants(2);
    for (size, chunks) in CLASSES {
        builder = builder.class(size, chunks);
    }
    let writer = builder.create().unwrap();
    let reader = Pool::builder(location.clone()).open().unwrap();
    {
        let mut loans: Vec<(LoanedChunk<'_>, usize)> = Vec::new();
        let mut in_flight: Vec<(shm_alloc::ShmOffset, usize)> = Vec::new();
        let mut samples: Vec<(Sample<'_>, usize)> = Vec::new();
        for op in ops {
            match op {
                Op::Loan(len) => {
                    let result = writer.loan(len);
                    match class_of(len) {
                        None => assert!(matches!(result, Err(Error::LoanTooLarge { .. }))),
                        Some(class) => {
                            let taken = loans.iter().filter(|(_, c)| *c == class).count()
                                + in_flight.iter().filter(|(_, c)| *c == class).count()
                                + samples.iter().filter(|(_, c)| *c == class).count();
                            if taken == CLASSES[class].1 as usize {
                                match result {
                                    Err(Error::PoolExhausted { chunk_size, .. }) => {
                                        assert_eq!(chunk_size, CLASSES[class].0);
                                    }
                                    other => panic!("expected exhaustion, got {other:?}"),
                                }
                            } else {
                                let mut chunk = result.unwrap();
                                assert_eq!(chunk.len(), len);
                                assert_eq!(chunk.capacity() as u64, CLASSES[class].0);
                                chunk.as_mut_slice().fill(len as u8);
                                loans.push((chunk, class));
                            }
                        }
                    }
                }
                Op::DropLoan(pick) if !loans.is_empty() => {
                    drop(loans.swap_remove(pick % loans.len()));
                }
                Op::SendAndReceive(pick) if !loans.is_empty() => {
                    let (chunk, class) = loans.swap_remove(pick % loans.len());
                    let len = chunk.len();
                    let sample = reader
                        .receive(chunk.into_offset_for(reader.participant()))
                        .unwrap();
                    assert_eq!(sample.len(), len);
                    assert!(sample.iter().all(|&b| b == len as u8), "payload changed");
                    samples.push((sample, class));
                }
                Op::Send(pick) if !loans.is_empty() => {
                    let (chunk, class) = loans.swap_remove(pick % loans.len());
                    in_flight.push((chunk.into_offset(), class));
                }
                Op::Receive(pick) if !in_flight.is_empty() => {
                    let (offset, class) = in_flight.swap_remove(pick % in_flight.len());
                    let sample = reader.receive(offset).unwrap();
                    // A second receive of the same offset is refused.
                    assert!(matches!(
                        reader.receive(offset),
                        Err(Error::StaleOffset { .. })
                    ));
                    samples.push((sample, class));
                }
                Op::DropSample(pick) if !samples.is_empty() => {
                    samples.swap_remove(pick % samples.len());
                }
                _ => {}
            }
            check(&writer, &loans, &in_flight, &samples);
        }
        for (offset, class) in in_flight.drain(..) {
            samples.push((reader.receive(offset).unwrap(), class));
        }
    }
    assert!(writer.stats().all_free(), "{:?}", writer.stats());
    drop((writer, reader));
    Segment::remove(&location).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pool_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops, &format!("shm-pool-model-{}", std::process::id()));
    }
}

/// An offset whose length is larger than its chunk (what would let a sample reach into
/// the next chunk) is refused by `receive` with `InvalidOffset`, and the chunk stays in
/// flight for the true offset; so is an offset into the middle of a chunk.
#[test]
#[cfg_attr(miri, ignore)]
fn receive_refuses_a_length_past_its_chunk_and_a_middle_of_a_chunk() {
    use zerocopy::{FromBytes, IntoBytes};

    let name = format!("test-pool-len-{}", std::process::id());
    let location = Location::Name(name.clone());
    let pool = Pool::builder(name.as_str())
        .class(128, 2)
        .class(4096, 2)
        .participants(2)
        .create()
        .unwrap();
    let offset = pool.loan(100).unwrap().into_offset();
    // `ShmOffset` is offset (u64), len (u32), generation (u32): forge the length.
    let mut bytes = offset.as_bytes().to_vec();
    bytes[8..12].copy_from_slice(&129u32.to_ne_bytes());
    let too_long = shm_alloc::ShmOffset::read_from_bytes(&bytes).unwrap();
    assert!(matches!(
        pool.receive(too_long),
        Err(Error::InvalidOffset { len: 129, .. })
    ));
    bytes[..8].copy_from_slice(&(offset.offset() + 64).to_ne_bytes());
    bytes[8..12].copy_from_slice(&8u32.to_ne_bytes());
    let inside = shm_alloc::ShmOffset::read_from_bytes(&bytes).unwrap();
    assert!(matches!(
        pool.receive(inside),
        Err(Error::InvalidOffset { .. })
    ));
    // Neither took the chunk: the true offset still receives it, once.
    let sample = pool.receive(offset).unwrap();
    assert_eq!(sample.len(), 100);
    drop(sample);
    assert!(pool.stats().all_free());
    drop(pool);
    Segment::remove(&location).unwrap();
}

/// `LoanedChunk::set_len` past the chunk's capacity panics, as its docs say.
#[test]
#[cfg_attr(miri, ignore)]
#[should_panic(expected = "payload length 129 exceeds the chunk's 128 bytes")]
fn a_payload_longer_than_its_chunk_panics() {
    let name = shm_testkit::ShmName::new("pool-set-len");
    let pool = Pool::builder(name.as_str())
        .class(128, 1)
        .participants(1)
        .create()
        .unwrap();
    let mut chunk = pool.loan(8).unwrap();
    chunk.set_len(128);
    chunk.set_len(129);
}
