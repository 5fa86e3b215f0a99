//! `shm ls` and `shm clean` against real processes holding real segments: liveness by
//! lock probe, a stale creation told from a slow live one, and a clean that removes
//! exactly what dead processes left.
//!
//! Children are this test binary again, started on the ignored test `child` with their
//! part in the environment (`SHM_ADMIN_CHILD=<part>`, `SHM_ADMIN_NAME`).

use std::process::{Command, Stdio};

use serde_json::Value;
use shm_testkit::{Reap, ShmName, hold_until_killed, holding, say_holding};
use shm_transport::alloc::{Kind, Location, Segment, SegmentOptions, SegmentSpec};
use shm_transport::ring::{OpenMode, spsc};

fn shm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shm"))
}

/// The standard output of `shm ARGS...`, which must succeed.
fn shm_ok(args: &[&str]) -> Vec<u8> {
    let out = shm().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "shm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn spawn(part: &str, name: &ShmName) -> Reap {
    spawn_with(part, name, None)
}

/// [`spawn`], with a pool's name for the parts that use one (`SHM_ADMIN_POOL`), and the
/// child's stdin piped: a line on it tells a live part to go on.
fn spawn_with(part: &str, name: &ShmName, pool: Option<&ShmName>) -> Reap {
    let mut child = shm_testkit::child("child")
        .env("SHM_ADMIN_CHILD", part)
        .env("SHM_ADMIN_NAME", name.as_str())
        .env("SHM_ADMIN_POOL", pool.map_or("", ShmName::as_str))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    holding(child.stdout.as_mut().unwrap());
    Reap(child)
}

/// Tells a child spawned by [`spawn_with`] to go on, and waits for it to end: it must
/// succeed.
fn go_on(mut child: Reap) {
    use std::io::Write;
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "the child failed: {status}");
}

/// In a child: waits for the parent's line on stdin.
fn wait_for_go() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "go");
}

/// Not a test: the body of a child process, selected by `SHM_ADMIN_CHILD`. `creating`:
/// creates a segment and stays in its initialisation (before READY); `producer`:
/// attaches as the producer of an SPSC ring. Then says `holding 0` and waits to be
/// killed.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    let Ok(part) = std::env::var("SHM_ADMIN_CHILD") else {
        return;
    };
    let name = std::env::var("SHM_ADMIN_NAME").unwrap();
    match part.as_str() {
        "creating" => {
            let spec = SegmentSpec {
                kind: Kind::Spsc,
                capacity: 1,
                slot_size: 8,
                slot_align: 8,
                type_fingerprint: 1,
                type_name: "admin-test",
                data_len: 4096,
                entries: 0,
            };
            let _segment = Segment::create_with(
                &Location::from(name.as_str()),
                &spec,
                &SegmentOptions::default(),
                |_| {
                    say_holding(0);
                    hold_until_killed();
                },
            );
            unreachable!("held in the initialisation until killed");
        }
        "pool-holder" => {
            // Two chunks loaned and held, never returned: the process is killed.
            let pool = shm_transport::alloc::Pool::builder(name.as_str())
                .open()
                .unwrap();
            let _a = pool.loan(100).unwrap();
            let _b = pool.loan(100).unwrap();
            say_holding(0);
            hold_until_killed();
        }
        "producer" => {
            let _tx = spsc::Builder::<u64>::new(name.as_str())
                .mode(OpenMode::Open)
                .producer()
                .unwrap();
            say_holding(0);
            hold_until_killed();
        }
        "feed-producer" => {
            // Creates a ring of 16 slots, fills it, and finds it full once.
            let mut tx = spsc::Builder::<u64>::new(name.as_str())
                .capacity(FEED_SLOTS)
                .mode(OpenMode::Create)
                .producer()
                .unwrap();
            for v in 0..FEED_SLOTS {
                tx.try_send(v).unwrap();
            }
            assert!(tx.try_send(FEED_SLOTS).is_err(), "the ring is full");
            say_holding(FEED_SLOTS);
            hold_until_killed();
        }
        "feed-consumer" => {
            // Takes 10, then the other 6 once told to go on.
            let mut rx = spsc::Builder::<u64>::new(name.as_str())
                .mode(OpenMode::Open)
                .consumer()
                .unwrap();
            for v in 0..FEED_TAKEN {
                assert_eq!(rx.recv(), Ok(v));
            }
            say_holding(FEED_TAKEN);
            wait_for_go();
            for v in FEED_TAKEN..FEED_SLOTS {
                assert_eq!(rx.recv(), Ok(v));
            }
        }
        "pool-user" => {
            // One chunk loaned and held; told to go on, loans one more and returns both.
            let pool = shm_transport::alloc::Pool::builder(pool_name())
                .open()
                .unwrap();
            let held = pool.loan(100).unwrap();
            say_holding(1);
            wait_for_go();
            drop(pool.loan(100).unwrap());
            drop(held);
        }
        "doomed" => {
            // Two chunks loaned, and the producer of a ring of its own with 3 sent; killed.
            let pool = shm_transport::alloc::Pool::builder(pool_name())
                .open()
                .unwrap();
            let _a = pool.loan(100).unwrap();
            let _b = pool.loan(100).unwrap();
            let mut tx = spsc::Builder::<u64>::new(name.as_str())
                .mode(OpenMode::Create)
                .producer()
                .unwrap();
            for v in 0..3 {
                tx.send(v).unwrap();
            }
            say_holding(3);
            hold_until_killed();
        }
        other => panic!("unknown part {other}"),
    }
}

/// The slots of the must-show's feed ring, and how many its consumer takes at first.
const FEED_SLOTS: u64 = 16;
const FEED_TAKEN: u64 = 10;

/// In a child: the pool's name given by [`spawn_with`].
fn pool_name() -> String {
    std::env::var("SHM_ADMIN_POOL").unwrap()
}

/// `shm ls --json`'s object for `name`.
fn listed(name: &ShmName) -> Option<Value> {
    let all: Value = serde_json::from_slice(&shm_ok(&["ls", "--json"])).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .cloned()
}

/// `shm clean NAME...`'s output, one line per segment.
fn clean(args: &[&str]) -> String {
    let all: Vec<&str> = ["clean"].into_iter().chain(args.iter().copied()).collect();
    String::from_utf8(shm_ok(&all)).unwrap()
}

/// A creator stopped inside its initialisation is listed as initialising while it
/// lives (a slow creator is never taken for a dead one) and left by `shm clean`;
/// killed there, it is listed as stale, and `shm clean` removes the file.
#[test]
fn a_stale_creation_is_listed_and_cleaned_and_a_slow_one_is_not() {
    let name = ShmName::new("admin-stale");
    let mut creator = spawn("creating", &name);
    let seen = listed(&name).expect("the segment is listed");
    assert_eq!(seen["state"], "initialising", "{seen}");
    let out = clean(&[name.as_str()]);
    assert!(out.contains("left: being created"), "{out}");
    assert!(name.path().exists());
    creator.kill();
    let seen = listed(&name).expect("still listed");
    assert_eq!(seen["state"], "stale", "{seen}");
    let out = clean(&["--dry-run", name.as_str()]);
    assert!(out.contains("would remove: a stale creation"), "{out}");
    assert!(name.path().exists(), "--dry-run removed it");
    let out = clean(&[name.as_str()]);
    assert!(out.contains("removed: a stale creation"), "{out}");
    assert!(!name.path().exists());
}

/// A ring with a live producer (a process) and a live consumer (this one), and a ring
/// whose producer process was SIGKILLed and whose consumer left: `shm ls` shows each
/// role's liveness by its lock; `shm clean` removes only the dead one's ring, and the
/// live ring goes on working.
#[test]
fn ls_shows_liveness_and_clean_removes_only_what_the_dead_left() {
    let live = ShmName::new("admin-live");
    let dead = ShmName::new("admin-dead");
    let mut rx = spsc::Builder::<u64>::new(live.as_str())
        .mode(OpenMode::Create)
        .consumer()
        .unwrap();
    let _producer = spawn("producer", &live);
    {
        let _rx = spsc::Builder::<u64>::new(dead.as_str())
            .mode(OpenMode::Create)
            .consumer()
            .unwrap();
        let mut killed = spawn("producer", &dead);
        killed.kill();
    }
    let seen = listed(&live).expect("the live ring is listed");
    assert_eq!(seen["kind"], "spsc");
    assert_eq!(seen["state"], "ready");
    assert_eq!(seen["live_roles"], serde_json::json!([0, 1]), "{seen}");
    assert_eq!(seen["creator_pid"], u64::from(std::process::id()));
    let seen = listed(&dead).expect("the dead ring is listed");
    assert_eq!(seen["live_roles"], serde_json::json!([]), "{seen}");
    // A file that is not a segment is never listed nor touched.
    let foreign = ShmName::new("admin-foreign");
    std::fs::write(foreign.path(), vec![7u8; 8192]).unwrap();
    assert!(listed(&foreign).is_none());
    let out = clean(&[live.as_str(), dead.as_str(), foreign.as_str()]);
    assert!(
        out.contains(&format!(
            "{}: left: 2 live participants",
            live.path().display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{}: removed: no live participant",
            dead.path().display()
        )),
        "{out}"
    );
    assert!(out.contains("left: not a segment"), "{out}");
    assert!(live.path().exists() && foreign.path().exists());
    assert!(!dead.path().exists());
    // The live ring still works: its producer is attached, nothing was sent.
    assert_eq!(rx.try_recv(), Err(shm_transport::ring::TryRecvError::Empty));
    assert!(!rx.producer_closed());
}

/// `shm inspect --json` reads positions and counters that match what the handles did:
/// an SPSC ring of 4 slots with 4 sent, one send refused as full and 1 received; an
/// MPMC ring whose two producers sent 3 and 2 and whose consumer took 2, one of them
/// refused as full first; and a broadcast ring whose two subscribers read 3 and none
/// of 5.
#[test]
fn inspect_shows_positions_and_counters_that_match_what_was_done() {
    use shm_transport::ring::{broadcast, mpmc};
    let inspect = inspected;
    let name = ShmName::new("admin-insp-spsc");
    let ring = spsc::Builder::<u64>::new(name.as_str()).capacity(4);
    let mut tx = ring.clone().producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    for v in 0..4 {
        tx.send(v).unwrap();
    }
    assert!(tx.try_send(4).is_err(), "the ring is full");
    rx.recv().unwrap();
    let seen = inspect(&name);
    assert_eq!(seen["kind"], "spsc");
    let quiet = |messages: u64, stalls: u64| serde_json::json!({"messages": messages, "stalls": stalls, "parks": 0, "wakeups": 0});
    assert_eq!(
        seen["detail"],
        serde_json::json!({
            "tail": 4, "head": 1, "queued": 3, "producer": "attached", "consumer": "attached",
            "producer_activity": quiet(4, 1), "consumer_activity": quiet(1, 0),
        })
    );

    let name = ShmName::new("admin-insp-mpmc");
    let ring = mpmc::Builder::<u64>::new(name.as_str()).capacity(8);
    let (mut p1, mut p2, mut c) = (
        ring.producer().unwrap(),
        ring.producer().unwrap(),
        ring.consumer().unwrap(),
    );
    for v in 0..3 {
        p1.send(v).unwrap();
    }
    p2.send(9).unwrap();
    p2.send(10).unwrap();
    for v in 0..3 {
        p2.send(v).unwrap();
    }
    assert!(p1.try_send(0).is_err(), "the ring is full");
    c.recv().unwrap();
    c.recv().unwrap();
    let detail = &inspect(&name)["detail"];
    let participants: Vec<(u64, &str, bool, &Value)> = detail["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["entry"].as_u64().unwrap(),
                p["role"].as_str().unwrap(),
                p["alive"].as_bool().unwrap(),
                &p["activity"],
            )
        })
        .collect();
    assert_eq!(
        participants,
        [
            (0, "producer", true, &quiet(3, 1)),
            (1, "producer", true, &quiet(5, 0)),
            (2, "consumer", true, &quiet(2, 0)),
        ]
    );
    assert_eq!(
        (&detail["tail"], &detail["head"], &detail["queued"]),
        (&8.into(), &2.into(), &6.into())
    );
    assert_eq!(
        (&detail["producers"], &detail["consumers"]),
        (&2.into(), &1.into())
    );

    let name = ShmName::new("admin-insp-bcast");
    let ring = broadcast::Builder::<u64>::new(name.as_str()).subscribers(4);
    let mut publisher = ring.publisher().unwrap();
    let mut a = ring.subscriber().unwrap();
    let _b = ring.subscriber().unwrap();
    for v in 0..5 {
        publisher.send(v).unwrap();
    }
    for _ in 0..3 {
        a.recv().unwrap();
    }
    let seen = inspect(&name);
    let detail = &seen["detail"];
    assert_eq!(detail["tail"], 5);
    let subs = detail["subscribers"].as_array().unwrap();
    assert_eq!(subs.len(), 2, "{detail}");
    assert_eq!(
        (
            &subs[0]["id"],
            &subs[0]["alive"],
            &subs[0]["position"],
            &subs[0]["lag"],
            &subs[0]["received"]
        ),
        (&0.into(), &true.into(), &3.into(), &2.into(), &3.into())
    );
    assert_eq!(
        (
            &subs[1]["id"],
            &subs[1]["position"],
            &subs[1]["lag"],
            &subs[1]["received"]
        ),
        (&1.into(), &0.into(), &5.into(), &0.into())
    );
}

/// `shm watch` with its output not a terminal: one line per ring and refresh, stamped,
/// with each position's rate and total; a ring at rest shows 0/s and its backlog.
#[test]
fn watch_prints_a_line_per_ring_and_refresh_off_a_terminal() {
    let name = ShmName::new("admin-watch");
    let mut tx = spsc::Builder::<u64>::new(name.as_str()).producer().unwrap();
    let _rx = spsc::Builder::<u64>::new(name.as_str()).consumer().unwrap();
    for v in 0..10 {
        tx.send(v).unwrap();
    }
    let stdout = String::from_utf8(shm_ok(&[
        "watch",
        "--interval",
        "0.05",
        "--count",
        "3",
        name.as_str(),
    ]))
    .unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let ring = format!("{}: ready live roles [0, 1]", name.as_str());
    assert!(lines.iter().all(|l| l.contains(&ring)), "{stdout}");
    assert!(lines[0].contains("sent - (10)"), "{stdout}");
    assert!(
        lines[2].contains(
            "sent 0/s (10), received 0/s (0), stalls 0/s (0), parks 0/s (0), wakeups 0/s (0); \
             queued 10"
        ),
        "{stdout}"
    );
    // A missing ring is said, not fatal to the others.
    let missing = ShmName::new("admin-watch-missing");
    let out = shm()
        .args([
            "watch",
            "--count",
            "1",
            "--interval",
            "0.01",
            missing.as_str(),
            name.as_str(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(&ring), "{stdout}");
    assert!(
        stdout.contains("no such")
            || stdout.contains("not found")
            || stdout.contains("does not exist"),
        "{stdout}"
    );
}

/// A pool with a live participant (this process) and one SIGKILLed holding two loaned
/// chunks: `shm ls` shows one live role, `shm clean` leaves the pool (a participant
/// lives) and reclaims the dead one's chunks, and the live participant then sees every
/// chunk free and goes on loaning.
#[test]
fn clean_reclaims_a_dead_pool_participants_chunks_and_keeps_the_pool() {
    use shm_transport::alloc::Pool;
    let name = ShmName::new("admin-pool");
    let pool = Pool::builder(name.as_str())
        .class(4096, 8)
        .open_or_create()
        .unwrap();
    let mut holder = spawn("pool-holder", &name);
    assert_eq!(pool.stats().classes[0].loaned, 2);
    let seen = listed(&name).expect("the pool is listed");
    assert_eq!(seen["kind"], "pool");
    assert_eq!(seen["live_roles"].as_array().unwrap().len(), 2, "{seen}");
    holder.kill();
    assert_eq!(
        listed(&name).unwrap()["live_roles"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out = clean(&[name.as_str()]);
    assert!(
        out.contains("left: 1 live participant; the chunks of dead ones are reclaimed"),
        "{out}"
    );
    assert!(name.path().exists());
    let class = pool.stats().classes[0];
    assert_eq!((class.free, class.loaned), (8, 0), "{class:?}");
    drop(pool.loan(4096).unwrap());
}

/// `shm inspect --json NAME`'s object.
fn inspected(name: &ShmName) -> Value {
    let stdout = shm_ok(&["inspect", "--json", name.as_str()]);
    serde_json::from_slice(&stdout).unwrap()
}

/// The whole system seen and cleaned: a producer and a consumer process on a ring, a
/// pool user process, and one more process, SIGKILLed, that held two chunks of the pool
/// and was the only participant of a ring of its own. `shm ls` shows each participant
/// alive or dead; `shm inspect` shows the positions and counters of what each process
/// did and the pool's chunks by state; `shm clean` removes the dead process's ring and
/// reclaims its chunks, and nothing else; the live processes then finish their work.
#[test]
fn a_live_system_with_a_killed_process_is_seen_and_cleaned_exactly() {
    use shm_transport::alloc::Pool;
    let feed = ShmName::new("admin-all-feed");
    let orphan = ShmName::new("admin-all-orphan");
    let pool_name = ShmName::new("admin-all-pool");
    drop(
        Pool::builder(pool_name.as_str())
            .class(256, 8)
            .create()
            .unwrap(),
    );
    let _producer = spawn_with("feed-producer", &feed, None);
    let consumer = spawn_with("feed-consumer", &feed, None);
    let user = spawn_with("pool-user", &feed, Some(&pool_name));
    let mut doomed = spawn_with("doomed", &orphan, Some(&pool_name));
    doomed.kill();

    // shm ls: who is alive and who is dead, by their locks.
    let liveness = |name: &ShmName| {
        let seen = listed(name).expect("listed");
        assert_eq!(seen["state"], "ready", "{seen}");
        (seen["alive"].clone(), seen["dead"].clone())
    };
    assert_eq!(
        liveness(&feed),
        (2.into(), 0.into()),
        "producer and consumer"
    );
    assert_eq!(
        liveness(&pool_name),
        (1.into(), 1.into()),
        "the user, the killed"
    );
    assert_eq!(
        liveness(&orphan),
        (0.into(), 1.into()),
        "its killed producer"
    );

    // shm inspect: what each process did.
    let quiet = |messages: u64, stalls: u64| serde_json::json!({"messages": messages, "stalls": stalls, "parks": 0, "wakeups": 0});
    assert_eq!(
        inspected(&feed)["detail"],
        serde_json::json!({
            "tail": FEED_SLOTS, "head": FEED_TAKEN, "queued": FEED_SLOTS - FEED_TAKEN,
            "producer": "attached", "consumer": "attached",
            "producer_activity": quiet(FEED_SLOTS, 1),
            "consumer_activity": quiet(FEED_TAKEN, 0),
        })
    );
    let orphaned = &inspected(&orphan)["detail"];
    assert_eq!(
        (&orphaned["producer"], &orphaned["tail"], &orphaned["head"]),
        (&"dead".into(), &3.into(), &0.into())
    );
    let pool = &inspected(&pool_name)["detail"];
    let alive: Vec<&Value> = pool["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["alive"])
        .collect();
    assert_eq!(alive.len(), 2, "{pool}");
    assert!(
        alive.contains(&&true.into()) && alive.contains(&&false.into()),
        "{pool}"
    );
    let class = &pool["classes"][0];
    assert_eq!(
        (
            &class["chunk_size"],
            &class["chunks"],
            &class["free"],
            &class["loaned"]
        ),
        (&256.into(), &8.into(), &5.into(), &3.into()),
        "one chunk of the user, two of the killed: {pool}"
    );

    // shm clean: exactly the dead one's resources.
    let out = clean(&[feed.as_str(), orphan.as_str(), pool_name.as_str()]);
    let said = |name: &ShmName, what: &str| {
        assert!(
            out.contains(&format!("{}: {what}", name.path().display())),
            "{name:?}: {what}\n{out}"
        );
    };
    said(&feed, "left: 2 live participants");
    said(&orphan, "removed: no live participant");
    said(
        &pool_name,
        "left: 1 live participant; the chunks of dead ones are reclaimed (1 dead found",
    );
    assert!(feed.path().exists() && pool_name.path().exists());
    assert!(!orphan.path().exists());
    let pool = &inspected(&pool_name)["detail"];
    assert_eq!(pool["participants"].as_array().unwrap().len(), 1, "{pool}");
    assert_eq!(pool["participants"][0]["alive"], true, "{pool}");
    assert_eq!(
        (&pool["classes"][0]["free"], &pool["classes"][0]["loaned"]),
        (&7.into(), &1.into()),
        "the killed one's two chunks are back, the user's is not: {pool}"
    );
    assert_eq!(liveness(&pool_name), (1.into(), 0.into()));

    // The live ones go on: the consumer takes the rest, the pool user loans again.
    go_on(consumer);
    go_on(user);
    let fed = &inspected(&feed)["detail"];
    assert_eq!(
        (&fed["head"], &fed["consumer"]),
        (&FEED_SLOTS.into(), &"closed".into())
    );
}
