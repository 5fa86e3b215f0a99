//! The SPSC ring's chunk calls at their edges, as their docs promise: more than the
//! capacity, nothing at all, and a chunk dropped without commit.

use std::time::{Duration, Instant};

use shm_ring::spsc;
use shm_ring::{RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

/// A deadline no edge case may wait for: each returns at once.
const FAR: Duration = Duration::from_secs(60);

#[test]
fn a_write_chunk_larger_than_the_ring_is_full_at_once() {
    let (mut tx, mut rx) = spsc::channel::<u64>(4).unwrap();
    assert!(matches!(tx.write_chunk(5), Err(TrySendError::Full(()))));
    let asked = Instant::now();
    assert!(matches!(
        tx.write_chunk_deadline(5, Some(asked + FAR)),
        Err(SendTimeoutError::Timeout(()))
    ));
    assert!(
        asked.elapsed() < FAR / 2,
        "waited for a chunk that can never fit"
    );
    // The whole ring is a chunk that fits, with or without a deadline.
    let chunk = tx.write_chunk(4).unwrap();
    assert_eq!(chunk.len(), 4);
    drop(chunk);
    let chunk = tx.write_chunk_deadline(4, Some(asked + FAR)).unwrap();
    assert_eq!(chunk.len(), 4);
    drop(chunk);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn a_read_chunk_of_nothing_is_empty_at_once() {
    let (mut tx, mut rx) = spsc::channel::<u64>(4).unwrap();
    tx.try_send(1).unwrap();
    assert_eq!(rx.read_chunk(0).err(), Some(TryRecvError::Empty));
    let asked = Instant::now();
    assert_eq!(
        rx.read_chunk_deadline(0, Some(asked + FAR)).err(),
        Some(RecvTimeoutError::Timeout)
    );
    assert!(asked.elapsed() < FAR / 2, "waited for a chunk of nothing");
    // The message is still there.
    assert_eq!(rx.try_recv(), Ok(1));
}

#[test]
fn a_read_chunk_dropped_without_commit_releases_nothing() {
    let (mut tx, mut rx) = spsc::channel::<u64>(4).unwrap();
    assert_eq!(tx.send_slice(&[1, 2, 3, 4]), Ok(4));
    let chunk = rx.read_chunk(3).unwrap();
    assert_eq!(chunk.as_slices(), (&[1, 2, 3][..], &[][..]));
    drop(chunk);
    // Nothing was released: the ring is still full, and the messages come again.
    assert!(matches!(tx.try_send(5), Err(TrySendError::Full(5))));
    let chunk = rx.read_chunk(8).unwrap();
    assert_eq!(chunk.len(), 4);
    chunk.commit(1);
    assert_eq!(tx.try_send(5), Ok(()));
    let mut rest = [0; 4];
    assert_eq!(rx.recv_into(&mut rest), Ok(4));
    assert_eq!(rest, [2, 3, 4, 5]);
}

#[test]
fn a_write_chunk_dropped_without_commit_publishes_nothing() {
    let (mut tx, mut rx) = spsc::channel::<u64>(4).unwrap();
    let mut chunk = tx.write_chunk(2).unwrap();
    let (first, second) = chunk.as_mut_slices();
    assert_eq!(first.len() + second.len(), 2);
    first.fill(9);
    drop(chunk);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    // The slots are free again, and what is sent next is what arrives.
    assert_eq!(tx.send_slice(&[1, 2, 3, 4]), Ok(4));
    let mut got = [0; 4];
    assert_eq!(rx.recv_into(&mut got), Ok(4));
    assert_eq!(got, [1, 2, 3, 4]);
}

/// A chunk is never empty, and says how many messages it holds.
#[test]
fn a_chunk_has_its_length_and_is_never_empty() {
    let (mut tx, mut rx) = spsc::channel::<u64>(4).unwrap();
    let chunk = tx.write_chunk(3).unwrap();
    assert_eq!((chunk.len(), chunk.is_empty()), (3, false));
    chunk.commit_all();
    let chunk = rx.read_chunk(8).unwrap();
    assert_eq!((chunk.len(), chunk.is_empty()), (3, false));
    chunk.commit_all();
}

/// Every handle of the SPSC ring shows, in its `Debug` form, where it is: its
/// position, its length for a chunk, and the capacity and wait strategy for a side.
#[test]
fn handles_show_their_position_in_debug() {
    let (mut tx, mut rx) = spsc::channel::<u64>(4).unwrap();
    tx.set_wait_strategy(shm_sync::WaitStrategy::Park);
    assert_eq!(tx.send_slice(&[1, 2, 3]), Ok(3));
    assert_eq!(rx.try_recv(), Ok(1));
    assert_eq!(
        format!("{tx:?}"),
        "Producer { capacity: 4, tail: 3, wait: Park, .. }"
    );
    assert_eq!(
        format!("{rx:?}"),
        "Consumer { capacity: 4, head: 1, wait: SpinThenPark { spin: 30µs }, .. }"
    );
    let slot = tx.reserve().unwrap();
    assert_eq!(format!("{slot:?}"), "SendSlot { position: 3, .. }");
    drop(slot);
    let chunk = tx.write_chunk(2).unwrap();
    assert_eq!(
        format!("{chunk:?}"),
        "WriteChunk { position: 3, len: 2, .. }"
    );
    drop(chunk);
    let guard = rx.try_recv_ref().unwrap();
    assert_eq!(format!("{guard:?}"), "RecvGuard { position: 1, .. }");
    drop(guard); // releases message 2
    let chunk = rx.read_chunk(4).unwrap();
    assert_eq!(
        format!("{chunk:?}"),
        "ReadChunk { position: 2, len: 1, .. }"
    );
}

/// `data_len` is the bytes a ring needs after the segment header: the 896-byte control
/// block, then the slots; a capacity off the rules is refused with its value.
#[test]
fn data_len_is_the_control_block_and_the_slots() {
    assert_eq!(spsc::data_len::<u64>(4).unwrap(), 896 + 4 * 8);
    assert_eq!(spsc::data_len::<[u8; 100]>(1024).unwrap(), 896 + 1024 * 100);
    for capacity in [0, 3, spsc::MAX_CAPACITY * 2] {
        assert!(
            matches!(spsc::data_len::<u64>(capacity), Err(shm_ring::Error::InvalidCapacity(c)) if c == capacity),
            "{capacity}"
        );
    }
}

/// A chunk of nothing is taken at once even from a full ring: empty, with empty slices,
/// publishing nothing.
#[test]
fn a_write_chunk_of_nothing_is_empty_even_on_a_full_ring() {
    let (mut tx, mut rx) = spsc::channel::<u64>(4).unwrap();
    assert_eq!(tx.send_slice(&[1, 2, 3, 4]), Ok(4));
    let mut chunk = tx.write_chunk(0).unwrap();
    assert!(chunk.is_empty());
    assert_eq!(chunk.as_mut_slices(), (&mut [][..], &mut [][..]));
    chunk.commit_all();
    let chunk = tx
        .write_chunk_deadline(0, Some(Instant::now() + FAR))
        .unwrap();
    assert!(chunk.is_empty());
    drop(chunk);
    let mut all = [0; 5];
    assert_eq!(rx.recv_into(&mut all), Ok(4));
    assert_eq!(all[..4], [1, 2, 3, 4]);
}

/// A write chunk reads back what was written into it before its commit, across the
/// end of the buffer too.
#[test]
fn a_write_chunk_reads_back_what_was_written() {
    let (mut tx, mut rx) = spsc::channel::<u64>(4).unwrap();
    assert_eq!(tx.send_slice(&[1, 2, 3]), Ok(3));
    let mut three = [0; 3];
    assert_eq!(rx.recv_into(&mut three), Ok(3));
    // Position 3: one slot before the end of the buffer, three after its start.
    let mut chunk = tx.write_chunk(4).unwrap();
    let (first, second) = chunk.as_mut_slices();
    first.copy_from_slice(&[10]);
    second.copy_from_slice(&[11, 12, 13]);
    assert_eq!(chunk.as_slices(), (&[10][..], &[11, 12, 13][..]));
    chunk.commit_all();
    let mut four = [0; 4];
    assert_eq!(rx.recv_into(&mut four), Ok(4));
    assert_eq!(four, [10, 11, 12, 13]);
}
