//! Helpers of the multi-process tests: children are the test binary itself, started on
//! an ignored test; these wait for them, reap them, and read what they say.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout};
use std::time::{Duration, Instant};

/// Waits for `child` to exit successfully within `limit`; kills it and fails otherwise.
pub fn wait_child(child: &mut Child, limit: Duration) {
    let give_up = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child failed: {status}");
            return;
        }
        if Instant::now() > give_up {
            let _ = child.kill();
            panic!("child still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills a child that is still running when dropped: no holder outlives a failed test.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the child's `holding <n>` line (after the test harness's own lines).
pub fn holding(stdout: &mut ChildStdout) -> u64 {
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        // The harness's `test child ... ` has no line end: the word may follow it.
        if let Some((_, n)) = line.split_once("holding ") {
            return n.trim().parse().unwrap();
        }
    }
    panic!("the child ended without holding anything");
}

/// Tells the parent what this child holds (flushed: the parent waits for it).
pub fn say_holding(n: u64) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "holding {n}").unwrap();
    out.flush().unwrap();
}
