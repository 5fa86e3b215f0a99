//! `shm bench` run for real, with tiny counts: two processes, every transport, JSON out.

use std::process::Command;

use serde_json::Value;

fn shm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shm"))
}

fn run_json(args: &[&str]) -> Value {
    let output = shm()
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "shm bench {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("shm bench --json prints JSON")
}

/// The transports this build of `shm bench` has, the physical limit first.
fn transports() -> Vec<&'static str> {
    let mut names = vec![
        "limit",
        "shm-spsc",
        "shm-spsc-park",
        "shm-broadcast",
        "shm-rpc",
        "shm-stream",
        "shm-loan",
        "uds",
        "pipe",
        "tcp",
        "rtrb",
        "array-queue",
    ];
    if cfg!(feature = "iceoryx2") {
        names.push("iceoryx2");
        names.push("iceoryx2-rpc");
    }
    if cfg!(feature = "grpc") {
        names.push("grpc");
    }
    if cfg!(feature = "zenoh") {
        names.push("zenoh");
        names.push("shm-bridge");
    }
    names
}

#[test]
fn latency_json_has_every_transport_and_size_with_ordered_percentiles() {
    let report = run_json(&[
        "--round-trips",
        "400",
        "--rounds",
        "2",
        "--time-limit",
        "4",
        "--sizes",
        "8,64",
    ]);
    assert!(!report["machine"]["cpu_model"].as_str().unwrap().is_empty());
    assert!(report["machine"]["clock"]["read_ns"].as_f64().unwrap() > 0.0);
    assert_eq!(report["interrupted"], Value::Bool(false));
    let rows = report["latency"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * transports().len(), "{rows:#?}");
    for size in [8, 64] {
        for transport in transports() {
            let row = rows
                .iter()
                .find(|r| r["transport"] == transport && r["size"] == size)
                .unwrap_or_else(|| panic!("no row for {transport} with {size} bytes"));
            let trips = row["round_trips"].as_u64().unwrap();
            assert!(trips > 0, "{transport} {size}: no round trips");
            let p = &row["one_way_ns"];
            let order = ["p50", "p90", "p99", "p99_9", "p99_99", "max"].map(|k| {
                p[k].as_f64()
                    .unwrap_or_else(|| panic!("{k} missing in {p}"))
            });
            assert!(order[0] > 0.0, "{transport} {size}: p50 {p}");
            assert!(
                order.windows(2).all(|w| w[0] <= w[1]),
                "{transport} {size}: percentiles out of order: {p}"
            );
            let rounds = row["rounds"].as_array().unwrap();
            // The probe runs before every other transport's round.
            let expected = if transport == "limit" {
                2 * (transports().len() - 1)
            } else {
                2
            };
            assert_eq!(rounds.len(), expected, "{transport} {size}: {rounds:?}");
            for round in rounds {
                assert!(round["probe_p50_ns"].as_f64().unwrap() > 0.0);
                assert!(round["ratio"].as_f64().unwrap() > 0.0);
            }
            let batched = row["batched_ns"].as_f64().unwrap();
            assert!(batched > 0.0, "{transport} {size}: batched {batched}");
            for key in ["p50_vs_limit", "batched_vs_limit"] {
                let ratio = row[key].as_f64().unwrap();
                if transport == "limit" {
                    assert_eq!(ratio, 1.0, "{key}");
                } else {
                    assert!(ratio > 0.0, "{transport} {size}: {key} {ratio}");
                }
            }
        }
    }
}

#[test]
fn throughput_json_counts_every_case() {
    let report = run_json(&["--throughput", "--rounds", "1", "--time-limit", "0.2"]);
    let rows = report["throughput"].as_array().unwrap();
    // rtrb and array-queue at 2 sizes, shm-broadcast fanning out to 1 and 4
    // subscribers at 2 sizes, shm-spsc and uds at 2 sizes x 2 batches, iceoryx2
    // fanning out as shm-broadcast with the feature, and zenoh and shm-bridge at 2 sizes
    // with theirs.
    let iceoryx2 = if cfg!(feature = "iceoryx2") { 4 } else { 0 };
    let zenoh = if cfg!(feature = "zenoh") { 4 } else { 0 };
    let cases = 16 + iceoryx2 + zenoh;
    assert_eq!(rows.len(), cases, "{rows:#?}");
    let fan_outs = rows.iter().filter(|r| r["subscribers"] == 4).count();
    assert_eq!(fan_outs, if cfg!(feature = "iceoryx2") { 4 } else { 2 });
    for row in rows {
        assert!(row["messages"].as_u64().unwrap() > 0, "{row}");
        let rate = row["messages_per_s"].as_f64().unwrap();
        let bytes = row["bytes_per_s"].as_f64().unwrap();
        let size = row["message_bytes"].as_f64().unwrap();
        assert!(rate > 0.0, "{row}");
        assert!((bytes - rate * size).abs() <= 1e-6 * bytes, "{row}");
    }
}

#[test]
fn a_size_the_typed_ring_cannot_carry_is_refused_with_the_sizes_it_can() {
    let output = shm()
        .args(["bench", "--sizes", "100", "--transports", "shm-spsc"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not 100"), "{stderr}");
    assert!(stderr.contains("4096"), "{stderr}");
}

#[test]
fn other_transports_take_any_size_from_8_bytes() {
    let report = run_json(&[
        "--round-trips",
        "50",
        "--rounds",
        "1",
        "--sizes",
        "100,1500",
        "--transports",
        "shm-stream,shm-loan,uds,pipe",
    ]);
    let rows = report["latency"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["limit", "shm-stream", "shm-loan", "uds", "pipe"].repeat(2),
        "every transport for 100 and then 1500 bytes"
    );
    assert!(rows.iter().all(|r| r["round_trips"].as_u64() > Some(0)));
    assert!(rows[..5].iter().all(|r| r["size"] == 100));
    assert!(rows[5..].iter().all(|r| r["size"] == 1500));
}

/// The ways of waiting are not in a default run; named, each gives a row whose every
/// sequence number came back (the run fails otherwise): the `WaitSet` over 1 and 64
/// rings, and, with the `tokio` feature, tokio tasks on `Async` rings and on a tokio
/// `UnixStream`.
#[test]
fn ways_of_waiting_run_by_name() {
    let mut named = vec!["shm-waitset-1", "shm-waitset-64"];
    if cfg!(feature = "tokio") {
        named.extend([
            "shm-async",
            "shm-async-mt",
            "shm-async-park",
            "tokio-uds",
            "tokio-uds-mt",
        ]);
    }
    let report = run_json(&[
        "--round-trips",
        "200",
        "--rounds",
        "1",
        "--sizes",
        "64",
        "--transports",
        &named.join(","),
    ]);
    let rows = report["latency"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    let mut expected = vec!["limit"];
    expected.extend(&named);
    assert_eq!(names, expected);
    assert!(rows.iter().all(|r| r["round_trips"].as_u64() > Some(0)));
    assert!(!transports().contains(&"shm-waitset-1"));
}

/// Loans carry a 1 MiB payload by its offset: the row is there, every sequence number
/// came back (the run fails otherwise), and the pool and rings are gone afterwards.
#[test]
fn loans_carry_1_mib_payloads() {
    let report = run_json(&[
        "--round-trips",
        "50",
        "--rounds",
        "1",
        "--sizes",
        "1048576",
        "--transports",
        "shm-loan,uds",
    ]);
    let rows = report["latency"].as_array().unwrap();
    let loan = rows
        .iter()
        .find(|r| r["transport"] == "shm-loan")
        .expect("a shm-loan row");
    assert_eq!(loan["size"], 1_048_576);
    // Half timed one by one, half in whole batches of 16.
    assert_eq!(loan["round_trips"], 25);
    assert_eq!(loan["batched_round_trips"], 16);
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("shm-loan-1048576"))
        .collect();
    assert!(leftovers.is_empty(), "left in /dev/shm: {leftovers:?}");
}

#[test]
fn pipes_compares_shm_send_recv_with_a_pipe_and_a_socket() {
    let out = shm()
        .args([
            "bench",
            "--pipes",
            "--pipe-bytes",
            "10000000",
            "--pipe-rounds",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in ["shm send|recv / pipe: ", "shm send|recv / uds: "] {
        let ratio: f64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("no `{line}` in {stdout}"))
            .split('x')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ratio > 0.0 && ratio.is_finite(), "{line}{ratio}");
    }
}

/// `--plot FILE.svg` writes the latency percentiles as an SVG: one panel per size, one
/// labelled line per transport.
#[test]
fn plot_writes_an_svg_with_a_line_per_transport() {
    let file = shm_testkit::TempPath::new("plot.svg");
    let path = file.path();
    let report = run_json(&[
        "--round-trips",
        "50",
        "--rounds",
        "1",
        "--sizes",
        "8,64",
        "--transports",
        "limit,shm-spsc",
        "--plot",
        path.to_str().unwrap(),
    ]);
    assert_eq!(report["latency"].as_array().unwrap().len(), 4);
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    for label in ["limit", "shm-spsc", "8-byte messages", "64-byte messages"] {
        assert!(svg.contains(label), "no {label:?} in the plot");
    }
}

/// With a single allowed core (`taskset -c 0`), the run says so and runs unpinned
/// rather than fail: no cores in the report, the reason in `placement`.
#[test]
fn a_single_allowed_core_runs_unpinned_and_says_so() {
    let output = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_shm"), "bench"])
        .args(["--round-trips", "50", "--rounds", "1", "--sizes", "8"])
        .args(["--transports", "limit,shm-spsc", "--json"])
        .output()
        .expect("taskset (util-linux) runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let machine = &report["machine"];
    assert_eq!(
        machine["allowed_cores"],
        serde_json::json!([0]),
        "{machine}"
    );
    assert!(machine["cores"].is_null(), "{machine}");
    let placement = machine["placement"].as_str().unwrap();
    assert!(
        placement.contains("only one core is allowed"),
        "{placement}"
    );
    assert!(placement.contains("unpinned"), "{placement}");
    assert_eq!(report["latency"].as_array().unwrap().len(), 2);
}

/// Ctrl-C (SIGINT) ends a long run early, once its echo process is up, and the report
/// of what was measured is still printed, marked `interrupted`, and the run succeeds.
#[test]
fn ctrl_c_ends_the_run_and_still_prints_the_report() {
    let child = shm()
        .args(["bench", "--rounds", "1000", "--round-trips", "100000000"])
        .args(["--sizes", "8", "--transports", "limit", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // The echo process started: the run is under way.
    while std::fs::read_to_string(&children)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < give_up,
            "no echo process within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["interrupted"], Value::Bool(true));
    assert_eq!(report["latency"].as_array().unwrap().len(), 1);
}

/// `--cores` takes the pair as README.md writes it (`0,1`) and as two values (`0 1`);
/// anything but two cores is refused with a message that says so.
#[test]
fn cores_are_given_as_a_pair() {
    for cores in [&["0,1"][..], &["0", "1"]] {
        let output = shm()
            .args(["bench", "--transports", "shm-spsc", "--sizes", "8"])
            .args(["--round-trips", "2000", "--rounds", "2", "--cores"])
            .args(cores)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "--cores {cores:?}: {stderr}");
    }
    for cores in ["0", "0,1,2"] {
        let output = shm()
            .args(["bench", "--transports", "shm-spsc", "--cores", cores])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("takes two cores"), "{stderr}");
    }
}

/// A corrupted message ends the run with an error naming its sequence number, in the
/// latency bench (the timing side checks every echo) and in the throughput bench (the
/// receiver checks every message): with a fault injected into the debug build's reader
/// of sequence numbers (`SHM_BENCH_FAULT_SEQ`), never a figure.
#[test]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the fault exists in debug builds of the tool only"
)]
fn a_corrupted_message_ends_the_run_with_an_error_naming_it() {
    for extra in [&[][..], &["--throughput"][..]] {
        let output = shm()
            .args(["bench", "--transports", "shm-spsc", "--sizes", "64"])
            .args(["--round-trips", "2000", "--rounds", "1"])
            .args(extra)
            .env("SHM_BENCH_FAULT_SEQ", "777")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?}: {stderr}");
        assert!(
            stderr.contains("message lost or corrupted") && stderr.contains("777"),
            "{extra:?}: {stderr}"
        );
    }
}
