//! Request/response between threads and between real processes, through real mapped
//! files, with real futexes and real `SIGKILL`s.
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_RR_CHILD=<part>`, `SHM_RR_NAME`, `SHM_RR_COUNT`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use shm_alloc::{Pool, ShmOffset};
use shm_ring::request_response::{Builder, CALLS_PER_CLIENT, CallError};
use shm_ring::{Message, OpenMode};
use shm_sync::WaitStrategy;
use shm_testkit::{Reap, ShmName, hold_until_killed, holding, say_holding, wait_child};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A request: who sent it, its number, and a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Order {
    client: u64,
    id: u64,
    payload: [u64; 6],
}

impl Message for Order {
    const TYPE_NAME: &'static str = "shm-ring-tests::rr::Order/v1";
}

/// A response: the request's number and a checksum of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Ack {
    client: u64,
    id: u64,
    check: u64,
    worker: u64,
}

impl Message for Ack {
    const TYPE_NAME: &'static str = "shm-ring-tests::rr::Ack/v1";
}

/// SplitMix64's finaliser.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn order(client: u64, id: u64) -> Order {
    let mut payload = [0; 6];
    for (i, word) in payload.iter_mut().enumerate() {
        *word = mix(client << 40 ^ id << 3 ^ i as u64);
    }
    Order {
        client,
        id,
        payload,
    }
}

fn checksum(o: &Order) -> u64 {
    o.payload.iter().fold(o.id, |acc, &w| mix(acc ^ w))
}

/// The answer a worker gives.
fn ack(o: &Order, worker: u32) -> Ack {
    Ack {
        client: o.client,
        id: o.id,
        check: checksum(o),
        worker: u64::from(worker),
    }
}

/// Panics unless `a` answers `o`.
fn verify(o: &Order, a: &Ack) {
    assert_eq!(
        (a.client, a.id, a.check),
        (o.client, o.id, checksum(o)),
        "{a:?} for {o:?}"
    );
}

fn service(name: &ShmName) -> Builder<Order, Ack> {
    Builder::new(name.as_str())
}

/// A service's name, and its request ring's: both removed when the test ends.
struct Names(ShmName, #[allow(dead_code)] ShmName);

fn names(tag: &str) -> Names {
    let name = ShmName::new(tag);
    let requests = name.sibling(".requests");
    Names(name, requests)
}

/// `OpenMode::Create`: the first server creates the service and its request ring, a
/// client opens them, and a second creator is refused as the segment exists.
#[test]
fn a_creating_server_creates_both_segments() {
    use shm_ring::OpenMode;
    let names = names("rr-create");
    let mut server = service(&names.0)
        .mode(OpenMode::Create)
        .server()
        .expect("create the service and its request ring");
    let client = service(&names.0).mode(OpenMode::Open).client().unwrap();
    let pending = client.send(&order(0, 1)).unwrap();
    let request = server.try_recv().unwrap();
    let answer = ack(&request, 0);
    assert!(request.respond(&answer));
    verify(&order(0, 1), &pending.wait(None).unwrap());
    assert!(matches!(
        service(&names.0).mode(OpenMode::Create).server(),
        Err(shm_ring::Error::Segment(_))
    ));
}

/// Sixteen calls in flight through one client, answered by a worker thread in the order
/// they were sent, waited for in reverse: each gets its own response.
#[test]
fn calls_in_flight_each_get_their_own_response() {
    let names = names("rr-inflight");
    let builder = service(&names.0).workers(1).clients(2);
    let mut server = builder.server().unwrap();
    let client = builder.client().unwrap();
    let pending: Vec<_> = (0..CALLS_PER_CLIENT as u64)
        .map(|id| client.send(&order(0, id)).unwrap())
        .collect();
    assert!(matches!(
        client.send(&order(0, 99)),
        Err(CallError::TooManyCalls {
            limit: CALLS_PER_CLIENT
        })
    ));
    for _ in 0..CALLS_PER_CLIENT {
        let request = server.try_recv().unwrap();
        let answer = ack(&request, 0);
        assert!(request.respond(&answer));
    }
    for (id, call) in pending.into_iter().enumerate().rev() {
        verify(&order(0, id as u64), &call.wait(None).unwrap());
    }
    let stats = client.stats();
    assert_eq!((stats.calls, stats.responses, stats.late), (16, 16, 0));
    assert_eq!(server.served(), (16, 16));
}

/// A response that comes after its call's deadline is dropped and counted, and the next
/// call through the same slot gets its own response, not the late one.
#[test]
fn a_late_response_is_never_delivered_to_a_later_call() {
    let names = names("rr-late");
    let builder = service(&names.0).workers(1).clients(1);
    let mut server = builder.server().unwrap();
    let client = builder.client().unwrap();
    // Every slot once, so that the next call reuses the slot of the late one.
    for id in 0..CALLS_PER_CLIENT as u64 - 1 {
        let call = client.send(&order(0, id)).unwrap();
        let request = server.try_recv().unwrap();
        let answer = ack(&request, 0);
        request.respond(&answer);
        verify(&order(0, id), &call.wait(None).unwrap());
    }
    let slow = client.send(&order(0, 100)).unwrap();
    let taken = server.try_recv().unwrap();
    let deadline = Instant::now() + Duration::from_millis(20);
    assert_eq!(slow.wait(Some(deadline)), Err(CallError::Timeout));
    assert!(Instant::now() >= deadline);
    // The worker answers after the deadline: refused, counted.
    let late = ack(&taken, 0);
    assert!(!taken.respond(&late));
    assert_eq!(client.stats().late, 1);
    for id in 101..101 + CALLS_PER_CLIENT as u64 {
        let call = client.send(&order(0, id)).unwrap();
        let request = server.try_recv().unwrap();
        let answer = ack(&request, 0);
        assert!(request.respond(&answer));
        verify(&order(0, id), &call.wait(None).unwrap());
    }
    let stats = client.stats();
    assert_eq!((stats.late, stats.responses), (1, 31));
}

/// A call given up before any worker took it is passed over by the workers (counted
/// late), and a worker that takes a request and drops it unanswered fails its call with
/// `Dropped`.
#[test]
fn given_up_and_dropped_calls() {
    let names = names("rr-dropped");
    let builder = service(&names.0).workers(1).clients(1);
    let mut server = builder.server().unwrap();
    let client = builder.client().unwrap();
    drop(client.send(&order(0, 1)).unwrap());
    let call = client.send(&order(0, 2)).unwrap();
    let request = server.try_recv().unwrap();
    assert_eq!(request.id, 2, "the given-up call is passed over");
    assert_eq!(client.stats().late, 1);
    drop(request);
    assert_eq!(call.wait(None), Err(CallError::Dropped));
    assert!(matches!(
        server.try_recv(),
        Err(shm_ring::TryRecvError::Empty)
    ));
}

/// A full request ring: `send` is `Full` and the call is not made; the blocking send
/// waits until its deadline.
#[test]
fn a_full_request_queue_is_full() {
    let names = names("rr-full");
    let builder = service(&names.0).workers(1).clients(1).capacity(2);
    let _server = builder.server().unwrap();
    let client = builder.client().unwrap();
    let _a = client.send(&order(0, 1)).unwrap();
    let _b = client.send(&order(0, 2)).unwrap();
    assert!(matches!(client.send(&order(0, 3)), Err(CallError::Full)));
    let deadline = Instant::now() + Duration::from_millis(10);
    assert!(matches!(
        client.send_deadline(Some(deadline), |r| *r = order(0, 3)),
        Err(CallError::Timeout)
    ));
    assert_eq!(client.stats().calls, 2);
}

/// The worker serving a call dies (its lock goes): the waiting call fails with
/// `ServerGone` within the liveness period; with no worker at all, a call that no one
/// took fails so too. A worker that attaches afterwards serves the next call of the same
/// client.
#[test]
fn calls_fail_with_server_gone_and_a_new_server_serves_the_next() {
    let names = names("rr-gone");
    let builder = service(&names.0).workers(1).clients(1);
    let mut server = builder.server().unwrap();
    let client = builder.client().unwrap();
    let served = client.send(&order(0, 1)).unwrap();
    let queued = client.send(&order(0, 2)).unwrap();
    std::mem::forget(server.try_recv().unwrap());
    server.simulate_crash();
    let start = Instant::now();
    assert_eq!(served.wait(None), Err(CallError::ServerGone));
    assert_eq!(queued.wait(None), Err(CallError::ServerGone));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let mut server = builder.server().unwrap();
    let call = client.send(&order(0, 3)).unwrap();
    // The ticket of call 2 is still queued: passed over as late.
    let request = server.try_recv().unwrap();
    assert_eq!(request.id, 3);
    let answer = ack(&request, 0);
    request.respond(&answer);
    verify(&order(0, 3), &call.wait(None).unwrap());
}

fn spawn(part: &str, name: &ShmName, client: u64, count: u64) -> Reap {
    Reap(
        shm_testkit::child("child")
            .env("SHM_RR_CHILD", part)
            .env("SHM_RR_NAME", name.as_str())
            .env("SHM_RR_CLIENT", client.to_string())
            .env("SHM_RR_COUNT", count.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Not a test: the body of a child process, selected by `SHM_RR_CHILD`.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    let Ok(part) = std::env::var("SHM_RR_CHILD") else {
        return;
    };
    let var = |v: &str| std::env::var(v).unwrap();
    let name = var("SHM_RR_NAME");
    let me: u64 = var("SHM_RR_CLIENT").parse().unwrap();
    let count: u64 = var("SHM_RR_COUNT").parse().unwrap();
    // Several processes on as few as two cores: yield rather than spin.
    let builder = Builder::<Order, Ack>::new(name.as_str())
        .mode(OpenMode::Open)
        .wait_strategy(WaitStrategy::Yield);
    match part.as_str() {
        "calls" => {
            // `count` calls, four in flight at a time, each checked against its request.
            let client = builder.client().unwrap();
            let mut id = 0;
            while id < count {
                let batch = (count - id).min(4);
                let pending: Vec<_> = (id..id + batch)
                    .map(|i| {
                        (
                            i,
                            client.send_deadline(None, |r| *r = order(me, i)).unwrap(),
                        )
                    })
                    .collect();
                for (i, call) in pending {
                    verify(&order(me, i), &call.wait(None).unwrap());
                }
                id += batch;
            }
            let stats = client.stats();
            assert_eq!(
                (stats.calls, stats.responses, stats.late),
                (count, count, 0)
            );
        }
        "hold-calls" => {
            // Sends every call it may have in flight, says so, and waits to be killed.
            let client = builder.client().unwrap();
            let pending: Vec<_> = (0..CALLS_PER_CLIENT as u64)
                .map(|i| client.send(&order(me, i)).unwrap())
                .collect();
            say_holding(pending.len() as u64);
            hold_until_killed();
        }
        "take-and-hold" => {
            // A worker that takes one request, says so, and never answers.
            let mut server = builder.server().unwrap();
            let request = server.recv_deadline(None).unwrap();
            say_holding(request.id);
            hold_until_killed();
        }
        "loan-calls" => loan_calls(&name, &var("SHM_RR_POOL"), count, false),
        "loan-calls-and-die" => loan_calls(&name, &var("SHM_RR_POOL"), count, true),
        "serve" => {
            // A worker that answers `count` requests.
            let mut server = builder.server().unwrap();
            for _ in 0..count {
                let request = server.recv_deadline(None).unwrap();
                let answer = ack(&request, request.worker());
                request.respond(&answer);
            }
        }
        other => panic!("unknown part {other}"),
    }
}

/// Four client processes make 100,000 calls each (four in flight at a time) against two
/// worker threads: every response carries its request's client, number and payload
/// checksum, and the workers served every call once.
#[test]
fn four_client_processes_and_two_workers_agree_on_every_call() {
    const CLIENTS: u64 = 4;
    const COUNT: u64 = 100_000;
    let names = names("rr-procs");
    let builder = service(&names.0)
        .workers(2)
        .clients(CLIENTS as u32)
        .capacity(256)
        .wait_strategy(WaitStrategy::Yield);
    let stop = shm_sync::atomic::AtomicBool::new(false);
    let served = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let mut server = builder.server().unwrap();
                let stop = &stop;
                s.spawn(move || {
                    while !stop.load(shm_sync::atomic::Ordering::Relaxed) {
                        let deadline = Instant::now() + Duration::from_millis(20);
                        match server.recv_deadline(Some(deadline)) {
                            Ok(request) => {
                                let answer = ack(&request, request.worker());
                                assert!(request.respond(&answer));
                            }
                            Err(shm_ring::RecvTimeoutError::Timeout) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    server.served()
                })
            })
            .collect();
        let mut children: Vec<Reap> = (0..CLIENTS)
            .map(|c| spawn("calls", &names.0, c, COUNT))
            .collect();
        for child in &mut children {
            wait_child(&mut child.0, Duration::from_secs(300));
        }
        stop.store(true, shm_sync::atomic::Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    let taken: u64 = served.iter().map(|s| s.0).sum();
    let answered: u64 = served.iter().map(|s| s.1).sum();
    assert_eq!((taken, answered), (CLIENTS * COUNT, CLIENTS * COUNT));
    eprintln!("served per worker: {served:?}");
}

/// The server process SIGKILLed while it holds a call: that call and the one queued
/// behind it fail with `ServerGone` (none hangs); a server started again answers the
/// client's next call, through the same client handle.
#[test]
fn a_killed_server_fails_calls_in_flight_and_a_restarted_one_serves() {
    let names = names("rr-kill-server");
    let builder = service(&names.0)
        .workers(1)
        .clients(1)
        .wait_strategy(WaitStrategy::Yield);
    let client = builder.client().unwrap();
    let held = client.send(&order(0, 1)).unwrap();
    let queued = client.send(&order(0, 2)).unwrap();
    let mut server = spawn("take-and-hold", &names.0, 0, 0);
    assert_eq!(holding(server.0.stdout.as_mut().unwrap()), 1);
    server.kill();
    let start = Instant::now();
    assert_eq!(held.wait(None), Err(CallError::ServerGone));
    assert_eq!(queued.wait(None), Err(CallError::ServerGone));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let mut restarted = spawn("serve", &names.0, 0, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    verify(
        &order(0, 3),
        &client.call(&order(0, 3), Some(deadline)).unwrap(),
    );
    wait_child(&mut restarted.0, Duration::from_secs(30));
    // The ticket of call 2 reached the restarted server first: passed over as late.
    assert_eq!(client.stats().late, 1);
}

/// A client process SIGKILLed with every call in flight, one of them taken by the
/// server: the server answers it into the dead client's slot and goes on; a new client
/// attaches in the dead one's entry (the only one), gets every call slot back as the
/// dead one's queued requests are passed over or answered, and all its calls are
/// answered with its own responses.
#[test]
fn a_killed_clients_entry_and_slots_come_back() {
    let names = names("rr-kill-client");
    let builder = service(&names.0)
        .workers(1)
        .clients(1)
        .wait_strategy(WaitStrategy::Yield);
    let mut server = builder.server().unwrap();
    let mut doomed = spawn("hold-calls", &names.0, 7, 0);
    assert_eq!(
        holding(doomed.0.stdout.as_mut().unwrap()),
        CALLS_PER_CLIENT as u64
    );
    let held = server.try_recv().unwrap();
    assert_eq!(held.client, 7);
    doomed.kill();
    // Answered into the dead client's slot: nobody reads it, nothing breaks.
    let answer = ack(&held, 0);
    assert!(held.respond(&answer));
    let client = builder
        .client()
        .expect("the dead client's entry is free again");
    for id in 0..CALLS_PER_CLIENT as u64 {
        let call = client.send(&order(1, id)).unwrap();
        let request = loop {
            let request = server.try_recv().unwrap();
            if request.client == 1 {
                break request;
            }
            // A request of the dead client: answered into its old slot, or refused late.
            let answer = ack(&request, 0);
            request.respond(&answer);
        };
        let answer = ack(&request, 0);
        assert!(request.respond(&answer));
        verify(&order(1, id), &call.wait(None).unwrap());
    }
}

/// A request whose payload is a pool loan: the chunk's offset, and the client's pool
/// participant, to which the worker addresses the chunk of its response.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct LoanOrder {
    payload: ShmOffset,
    participant: u32,
    _pad: u32,
    id: u64,
}

impl Message for LoanOrder {
    const TYPE_NAME: &'static str = "shm-ring-tests::rr::LoanOrder/v1";
}

/// A response whose payload is a pool loan.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct LoanAck {
    payload: ShmOffset,
    id: u64,
    check: u64,
}

impl Message for LoanAck {
    const TYPE_NAME: &'static str = "shm-ring-tests::rr::LoanAck/v1";
}

/// The bytes of request `id`'s loaned payload (64 KiB).
fn fill(bytes: &mut [u8], id: u64) {
    for (i, word) in bytes.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&mix(id ^ (i as u64) << 20).to_le_bytes());
    }
}

fn sum(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(8).fold(0, |acc, w| {
        mix(acc ^ u64::from_le_bytes(w.try_into().unwrap()))
    })
}

const LOAN: usize = 64 << 10;

/// A client process of the loan service: `count` calls, each with a 64 KiB loaned
/// request checked by the worker and a 64 KiB loaned response checked here; with `die`,
/// it then sends one more call, holds its last response's chunk, and waits to be killed.
fn loan_calls(name: &str, pool: &str, count: u64, die: bool) {
    let pool = Pool::builder(pool).open().unwrap();
    let client = Builder::<LoanOrder, LoanAck>::new(name)
        .mode(OpenMode::Open)
        .wait_strategy(WaitStrategy::Yield)
        .client()
        .unwrap();
    let call = |id: u64| {
        let mut chunk = pool.loan(LOAN).unwrap();
        fill(chunk.as_mut_slice(), id);
        let order = LoanOrder {
            payload: chunk.into_offset(),
            participant: pool.participant(),
            _pad: 0,
            id,
        };
        client.send(&order).unwrap()
    };
    let mut held = None;
    for id in 0..count {
        let ack = call(id).wait(None).unwrap();
        assert_eq!(ack.id, id);
        let response = pool.receive(ack.payload).unwrap();
        assert_eq!(sum(&response), ack.check, "response {id}");
        held = Some(response);
    }
    if die {
        let _in_flight = call(count);
        say_holding(u64::from(held.is_some()));
        hold_until_killed();
    }
}

/// Large payloads as pool loans both ways: two client processes make calls whose
/// requests and responses are 64 KiB chunks, read in place and checked on the other
/// side; one is SIGKILLed holding a response chunk with a call in flight. The worker
/// goes on; once its last request is answered, the pool's reclaim returns what the dead
/// client held or was sent, and every chunk of the pool is free again.
#[test]
fn loans_travel_both_ways_and_a_killed_clients_chunks_come_back() {
    const COUNT: u64 = 200;
    let names = names("rr-loans");
    let pool_name = ShmName::new("rr-loans-pool");
    let pool = Pool::builder(pool_name.as_str())
        .class(LOAN as u64, 32)
        .participants(8)
        .create()
        .unwrap();
    let builder = Builder::<LoanOrder, LoanAck>::new(names.0.as_str())
        .workers(1)
        .clients(2)
        .wait_strategy(WaitStrategy::Yield);
    let mut server = builder.server().unwrap();
    let spawn_loans = |part: &str| {
        Reap(
            shm_testkit::child("child")
                .env("SHM_RR_CHILD", part)
                .env("SHM_RR_NAME", names.0.as_str())
                .env("SHM_RR_POOL", pool_name.as_str())
                .env("SHM_RR_CLIENT", "0")
                .env("SHM_RR_COUNT", COUNT.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let mut live = spawn_loans("loan-calls");
    let mut doomed = spawn_loans("loan-calls-and-die");
    let killer = std::thread::spawn(move || {
        holding(doomed.0.stdout.as_mut().unwrap());
        doomed.kill();
    });
    // Serves both until the live client is done and the doomed one is dead, then what
    // is left in the queue (the dead one's last call, if no worker took it yet).
    let mut answered = 0;
    let mut live_done = false;
    let mut serve = |deadline: Instant| match server.recv_deadline(Some(deadline)) {
        Ok(request) => {
            let sample = pool.receive(request.payload).unwrap();
            let check = sum(&sample);
            drop(sample);
            let mut chunk = pool.loan(LOAN).unwrap();
            fill(chunk.as_mut_slice(), check);
            let ack = LoanAck {
                check: sum(chunk.as_slice()),
                payload: chunk.into_offset_for(request.participant),
                id: request.id,
            };
            request.respond(&ack);
            answered += 1;
            true
        }
        Err(shm_ring::RecvTimeoutError::Timeout) => false,
        Err(e) => panic!("{e}"),
    };
    while !(live_done && killer.is_finished()) {
        serve(Instant::now() + Duration::from_millis(20));
        if !live_done {
            if let Some(status) = live.0.try_wait().unwrap() {
                assert!(status.success(), "the live client failed: {status}");
                live_done = true;
            }
        }
    }
    while serve(Instant::now() + Duration::from_millis(100)) {}
    killer.join().unwrap();
    assert!(answered >= 2 * COUNT, "answered {answered}");
    let reclaimed = pool.reclaim_dead().unwrap();
    assert!(reclaimed.chunks >= 1, "{reclaimed:?}");
    let stats = pool.stats();
    assert!(stats.all_free(), "{stats:?}");
}
