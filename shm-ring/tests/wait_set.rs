//! `WaitSet`: one thread waiting on rings of several flavours fed by producer processes,
//! through real mapped files and real futexes (`futex_waitv`).
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_WS_CHILD=<flavour>`, `SHM_WS_NAME`, `SHM_WS_ID`,
//! `SHM_WS_COUNT`).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use shm_ring::broadcast::{self, Overflow};
use shm_ring::{
    Message, OpenMode, TryRecvError, WaitSet, WaitSetError, Waitable, mpmc, spsc, stream,
};
use shm_sync::WaitStrategy;
use shm_testkit::{
    Reap, ShmName, hold_until_killed, holding, say_holding, sleeps_on_futex, thread_id, wait_for,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A message tagged with its producer and its number in that producer's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Tagged {
    producer: u64,
    seq: u64,
}

impl Message for Tagged {
    const TYPE_NAME: &'static str = "shm-ring-tests::wait_set::Tagged/v1";
}

/// The flavour of ring `i` of the eight: three SPSC, three MPMC, two broadcast.
fn flavour(i: u64) -> &'static str {
    match i {
        0..3 => "spsc",
        3..6 => "mpmc",
        _ => "broadcast",
    }
}

fn spawn(part: &str, name: &ShmName, id: u64, count: u64) -> Child {
    spawn_at(part, name.as_str(), id, count)
}

/// [`spawn`] for the ring at `name`.
fn spawn_at(part: &str, name: &str, id: u64, count: u64) -> Child {
    shm_testkit::child("child")
        .env("SHM_WS_CHILD", part)
        .env("SHM_WS_NAME", name)
        .env("SHM_WS_ID", id.to_string())
        .env("SHM_WS_COUNT", count.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Not a test: the body of a child process, selected by `SHM_WS_CHILD`. Sends `count`
/// messages `(id, 0..count)` into the ring, then leaves; `count` 0: attaches, says
/// `holding 0` and waits to be killed.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    let Ok(part) = std::env::var("SHM_WS_CHILD") else {
        return;
    };
    let name = std::env::var("SHM_WS_NAME").unwrap();
    let id: u64 = std::env::var("SHM_WS_ID").unwrap().parse().unwrap();
    let count: u64 = std::env::var("SHM_WS_COUNT").unwrap().parse().unwrap();
    // Nine processes on as few as two cores: yield rather than spin.
    let wait = WaitStrategy::Yield;
    let mut send: Box<dyn FnMut(Tagged)> = match part.as_str() {
        "spsc" => {
            let mut tx = spsc::Builder::<Tagged>::new(name.as_str())
                .mode(OpenMode::Open)
                .wait_strategy(wait)
                .producer()
                .unwrap();
            Box::new(move |m| tx.send(m).expect("the consumer stays"))
        }
        "mpmc" => {
            let mut tx = mpmc::Builder::<Tagged>::new(name.as_str())
                .mode(OpenMode::Open)
                .wait_strategy(wait)
                .producer()
                .unwrap();
            Box::new(move |m| tx.send(m).expect("the consumer stays"))
        }
        "broadcast" => {
            let mut tx = broadcast::Builder::<Tagged>::new(name.as_str())
                .mode(OpenMode::Open)
                .wait_strategy(wait)
                .publisher()
                .unwrap();
            Box::new(move |m| tx.send(m).expect("the subscriber stays"))
        }
        other => panic!("unknown part {other}"),
    };
    if count == 0 {
        say_holding(0);
        hold_until_killed();
    }
    for seq in 0..count {
        send(Tagged { producer: id, seq });
    }
}

/// The consumer side of ring `i`, created here (the producers open it).
enum Rx {
    Spsc(spsc::Consumer<Tagged>),
    Mpmc(mpmc::Consumer<Tagged>),
    Broadcast(broadcast::Subscriber<Tagged>),
}

impl Rx {
    fn create(i: u64, name: &ShmName) -> Rx {
        match flavour(i) {
            "spsc" => Rx::Spsc(
                spsc::Builder::new(name.as_str())
                    .capacity(64)
                    .mode(OpenMode::Create)
                    .consumer()
                    .unwrap(),
            ),
            "mpmc" => Rx::Mpmc(
                mpmc::Builder::new(name.as_str())
                    .capacity(64)
                    .mode(OpenMode::Create)
                    .consumer()
                    .unwrap(),
            ),
            _ => Rx::Broadcast(
                broadcast::Builder::new(name.as_str())
                    .capacity(64)
                    .overflow(Overflow::Block)
                    .mode(OpenMode::Create)
                    .subscriber()
                    .unwrap(),
            ),
        }
    }

    fn waitable(&mut self) -> &mut dyn Waitable {
        match self {
            Rx::Spsc(rx) => rx,
            Rx::Mpmc(rx) => rx,
            Rx::Broadcast(rx) => rx,
        }
    }

    /// The next message, `Ok(None)` when there is none now, `Err` once disconnected.
    fn try_recv(&mut self) -> Result<Option<Tagged>, ()> {
        let got = match self {
            Rx::Spsc(rx) => rx.try_recv(),
            Rx::Mpmc(rx) => rx.try_recv(),
            Rx::Broadcast(rx) => rx.try_recv().map_err(|e| match e {
                broadcast::TryRecvError::Empty => TryRecvError::Empty,
                broadcast::TryRecvError::Disconnected => TryRecvError::Disconnected,
                other => panic!("broadcast ring under Block: {other:?}"),
            }),
        };
        match got {
            Ok(m) => Ok(Some(m)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(()),
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// Eight rings (three SPSC, three MPMC, two broadcast) each fed by a producer process,
/// one thread waiting on all of them with a parking `WaitSet`: every message arrives
/// exactly once, in each producer's order, and every ring ends disconnected. The
/// producers are started only once the waiting thread is seen asleep on its futexes
/// (through `/proc`), so the wait set sleeps at least once whatever the machine's load.
#[test]
fn eight_rings_from_eight_producer_processes_each_message_once() {
    const RINGS: u64 = 8;
    const COUNT: u64 = 20_000;
    let names: Vec<ShmName> = (0..RINGS)
        .map(|i| ShmName::new(&format!("ws8-{i}")))
        .collect();
    let mut rxs: Vec<Rx> = (0..RINGS)
        .map(|i| Rx::create(i, &names[i as usize]))
        .collect();
    let waiter = thread_id();
    let starter = std::thread::spawn({
        let names: Vec<String> = names.iter().map(|n| n.as_str().to_string()).collect();
        move || {
            wait_for(Duration::from_secs(30), "the wait set asleep", || {
                sleeps_on_futex(std::process::id(), waiter).then_some(())
            });
            (0..RINGS)
                .map(|i| Reap(spawn_at(flavour(i), &names[i as usize], i, COUNT)))
                .collect::<Vec<Reap>>()
        }
    });
    let mut next = [0u64; RINGS as usize];
    let mut open = [true; RINGS as usize];
    let mut set = WaitSet::with_wait_strategy(WaitStrategy::Park);
    let limit = Instant::now() + Duration::from_secs(120);
    let mut ready = Vec::new();
    while open.iter().any(|&o| o) {
        let mut handles: Vec<&mut dyn Waitable> = rxs.iter_mut().map(Rx::waitable).collect();
        ready.clear();
        ready.extend_from_slice(set.wait(&mut handles, Some(limit)).expect("a ring ready"));
        for &i in &ready {
            loop {
                match rxs[i].try_recv() {
                    Ok(Some(m)) => {
                        assert_eq!((m.producer, m.seq), (i as u64, next[i]), "ring {i}");
                        next[i] += 1;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        open[i] = false;
                        break;
                    }
                }
            }
        }
    }
    assert_eq!(next, [COUNT; RINGS as usize]);
    for mut child in starter.join().unwrap() {
        assert!(child.0.wait().unwrap().success());
    }
    assert!(set.sleeps() > 0, "never parked, though started asleep");
}

/// Rings with live producers and nothing sent: `wait` times out, no earlier than its
/// deadline, having slept (in `futex_waitv`, not spun).
#[test]
fn nothing_arriving_times_out_no_earlier_than_the_deadline() {
    let names: Vec<ShmName> = (0..8).map(|i| ShmName::new(&format!("wsto-{i}"))).collect();
    let mut pairs: Vec<_> = names
        .iter()
        .map(|n| {
            let rx = spsc::Builder::<u64>::new(n.as_str()).consumer().unwrap();
            let tx = spsc::Builder::<u64>::new(n.as_str()).producer().unwrap();
            (tx, rx)
        })
        .collect();
    let mut set = WaitSet::new();
    for wait in [Duration::from_millis(1), Duration::from_millis(35)] {
        let mut rxs: Vec<_> = pairs.iter_mut().map(|(_, rx)| rx).collect();
        let deadline = Instant::now() + wait;
        assert_eq!(
            set.wait(&mut rxs, Some(deadline)),
            Err(WaitSetError::Timeout)
        );
        assert!(Instant::now() >= deadline, "returned before its deadline");
    }
    assert!(set.sleeps() > 0);
}

/// A wait set asleep (seen in `futex_waitv` through `/proc`) on eight rings is woken by
/// one message on the last; one that finds a ring ready returns it without sleeping.
#[test]
fn a_sleeping_wait_set_wakes_for_the_last_ring_and_ready_ones_cost_no_sleep() {
    let names: Vec<ShmName> = (0..8).map(|i| ShmName::new(&format!("wswk-{i}"))).collect();
    let (mut txs, mut rxs): (Vec<_>, Vec<_>) = names
        .iter()
        .map(|n| {
            let rx = spsc::Builder::<u64>::new(n.as_str()).consumer().unwrap();
            let tx = spsc::Builder::<u64>::new(n.as_str()).producer().unwrap();
            (tx, rx)
        })
        .unzip();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (ready, mut rxs, sleeps) = std::thread::scope(|s| {
        let waiter = s.spawn(move || {
            tid_tx.send(thread_id()).unwrap();
            let mut set = WaitSet::with_wait_strategy(WaitStrategy::Park);
            let deadline = Instant::now() + Duration::from_secs(60);
            let ready = set.wait(&mut rxs, Some(deadline)).unwrap().to_vec();
            (ready, rxs, set.sleeps())
        });
        let tid = tid_rx.recv().unwrap();
        wait_for(Duration::from_secs(10), "the wait set asleep", || {
            sleeps_on_futex(std::process::id(), tid).then_some(())
        });
        txs[7].send(42).unwrap();
        waiter.join().unwrap()
    });
    assert_eq!(ready, [7]);
    assert!(sleeps >= 1);
    assert_eq!(rxs[7].try_recv(), Ok(42));
    // Two ready at once: both returned, no sleep.
    txs[2].send(1).unwrap();
    txs[5].send(2).unwrap();
    let mut set = WaitSet::with_wait_strategy(WaitStrategy::Park);
    assert_eq!(set.wait(&mut rxs, None).unwrap(), [2, 5]);
    assert_eq!(set.sleeps(), 0);
}

/// A producer process killed with SIGKILL while the consumer's wait set sleeps: the wait
/// returns that ring as ready (within the liveness period), and its receive says
/// disconnected. Other flavours in the same set stay quiet.
#[test]
fn a_killed_producer_makes_its_ring_ready() {
    let spsc_name = ShmName::new("wskill-s");
    let mpmc_name = ShmName::new("wskill-m");
    let mut quiet = mpmc::Builder::<Tagged>::new(mpmc_name.as_str())
        .consumer()
        .unwrap();
    let _quiet_tx = mpmc::Builder::<Tagged>::new(mpmc_name.as_str())
        .producer()
        .unwrap();
    let mut rx = spsc::Builder::<Tagged>::new(spsc_name.as_str())
        .mode(OpenMode::Create)
        .consumer()
        .unwrap();
    let mut child = Reap(spawn("spsc", &spsc_name, 0, 0));
    holding(child.0.stdout.as_mut().unwrap());
    let mut set = WaitSet::with_wait_strategy(WaitStrategy::Park);
    let deadline = Instant::now() + Duration::from_millis(30);
    let mut handles: [&mut dyn Waitable; 2] = [&mut quiet, &mut rx];
    assert_eq!(
        set.wait(&mut handles, Some(deadline)),
        Err(WaitSetError::Timeout)
    );
    child.kill();
    let ready = set
        .wait(&mut handles, Some(Instant::now() + Duration::from_secs(10)))
        .unwrap()
        .to_vec();
    assert_eq!(ready, [1]);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

/// No handle, or more than `futex_waitv` takes: refused, not waited on.
#[test]
fn counts_outside_1_to_128_are_refused() {
    let mut set = WaitSet::new();
    let mut none: [&mut dyn Waitable; 0] = [];
    assert_eq!(set.wait(&mut none, None), Err(WaitSetError::Count(0)));
    let mut many: Vec<_> = (0..129).map(|_| spsc::channel::<u64>(1).unwrap()).collect();
    let mut rxs: Vec<_> = many.iter_mut().map(|(_, rx)| rx).collect();
    assert_eq!(set.wait(&mut rxs, None), Err(WaitSetError::Count(129)));
    assert_eq!(
        WaitSetError::Count(129).to_string(),
        "a wait set waits on 1 to 128 handles, found 129"
    );
}

/// Producers waiting for room, a stream consumer and a request/response server in one
/// set: each becomes ready when what it waits for happens.
#[test]
fn producers_streams_and_servers_wait_in_one_set() {
    let (mut tx, mut rx) = spsc::channel::<u64>(1).unwrap();
    tx.send(1).unwrap(); // full
    let (mut stx, mut srx) = stream::channel(256).unwrap();
    let name = ShmName::new("wsrr");
    let rr = shm_ring::request_response::Builder::<u64, u64>::new(name.as_str());
    let mut server = rr.server().unwrap();
    let client = rr.client().unwrap();
    let mut set = WaitSet::with_wait_strategy(WaitStrategy::Park);
    let soon = || Some(Instant::now() + Duration::from_millis(20));
    {
        let mut handles: [&mut dyn Waitable; 3] = [&mut tx, &mut srx, &mut server];
        assert_eq!(set.wait(&mut handles, soon()), Err(WaitSetError::Timeout));
    }
    assert_eq!(rx.try_recv(), Ok(1)); // room for the producer
    stx.send(b"frame").unwrap();
    let pending = client.send(&5).unwrap();
    {
        let mut handles: [&mut dyn Waitable; 3] = [&mut tx, &mut srx, &mut server];
        assert_eq!(set.wait(&mut handles, soon()).unwrap(), [0, 1, 2]);
    }
    assert_eq!(&*srx.try_recv().unwrap(), b"frame");
    let request = server.try_recv().unwrap();
    assert_eq!(*request, 5);
    // The pending call is ready once answered.
    let mut pending = pending;
    {
        let mut handles: [&mut dyn Waitable; 1] = [&mut pending];
        assert_eq!(set.wait(&mut handles, soon()), Err(WaitSetError::Timeout));
    }
    assert!(request.respond(&6));
    let mut handles: [&mut dyn Waitable; 1] = [&mut pending];
    assert_eq!(set.wait(&mut handles, soon()).unwrap(), [0]);
    assert_eq!(pending.try_recv(), Ok(Some(6)));
}

/// A pending call whose worker dies while serving it: the wait set's liveness probe finds
/// the dead worker and the call ready, and the call then says the server is gone (the
/// probe gave the call up; what it found is kept for the call's next look).
#[test]
fn a_pending_call_whose_worker_died_is_ready_and_says_server_gone() {
    let name = ShmName::new("wsdead");
    let rr = shm_ring::request_response::Builder::<u64, u64>::new(name.as_str());
    let mut server = rr.server().unwrap();
    let client = rr.client().unwrap();
    let mut pending = client.send(&1).unwrap();
    let request = server.try_recv().unwrap();
    std::mem::forget(request); // taken, never answered
    server.simulate_crash();
    let mut set = WaitSet::with_wait_strategy(WaitStrategy::Park);
    let mut handles: [&mut dyn Waitable; 1] = [&mut pending];
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(set.wait(&mut handles, Some(deadline)).unwrap(), [0]);
    assert_eq!(
        pending.try_recv(),
        Err(shm_ring::request_response::CallError::ServerGone)
    );
}

/// An MPMC producer is ready while the slot at its tail is free, and not while that slot
/// still holds the lap before; an MPMC consumer is not ready while the slot at its head
/// holds the lap before (a message another consumer holds in place) and is once a
/// message of this lap is there. Catches a readiness check that takes the lap before
/// for this one (a full ring would wake its producers, a held slot its consumers, each
/// to find nothing) or inverts the producer's answer.
#[test]
fn mpmc_readiness_follows_the_laps() {
    let (mut tx, mut rx) = mpmc::channel::<u64>(2).unwrap();
    let mut holder = rx.try_clone().unwrap();
    let mut set = WaitSet::with_wait_strategy(WaitStrategy::Park);
    let soon = || Some(Instant::now() + Duration::from_millis(20));
    let mut ready = |handle: &mut dyn Waitable| {
        let mut handles: [&mut dyn Waitable; 1] = [handle];
        match set.wait(&mut handles, soon()) {
            Ok(ready) => ready == [0],
            Err(WaitSetError::Timeout) => false,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(ready(&mut tx), "an empty ring has room");
    assert!(!ready(&mut rx), "an empty ring has nothing");
    tx.send(0).unwrap();
    let held = holder.try_recv_ref().unwrap();
    tx.send(1).unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    // Head and tail at 2; slot 0 holds position 0, read in place.
    assert!(!ready(&mut rx), "the slot at head holds the lap before");
    assert!(!ready(&mut tx), "the slot at tail holds the lap before");
    assert_eq!(*held, 0);
    drop(held);
    assert!(ready(&mut tx), "the slot at tail is free");
    tx.send(2).unwrap();
    assert!(ready(&mut rx), "the slot at head holds this lap's message");
    assert_eq!(rx.try_recv(), Ok(2));
}
