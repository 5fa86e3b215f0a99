//! The clock that times round trips: the TSC or `Instant`, whichever one read costs less.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Reads taken to price one clock read.
const COST_READS: u32 = 1_000_000;

/// How long the TSC is compared with `Instant` to find its rate.
const CALIBRATION: Duration = Duration::from_millis(200);

/// A monotonic tick source and its rate.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// `rdtsc`, with `ns_per_tick` found against `Instant`.
    Tsc { ns_per_tick: f64 },
    /// `Instant::now()` (the vDSO's `clock_gettime(CLOCK_MONOTONIC)`); one tick is 1 ns.
    Instant { origin: Instant },
}

/// What the report says about the clock.
#[derive(Debug, Clone, Serialize)]
pub struct ClockInfo {
    /// `"tsc"` or `"instant"`.
    pub source: &'static str,
    /// One read of the chosen clock, ns (mean of 1,000,000 back-to-back reads).
    pub read_ns: f64,
    /// One read of the clock not chosen, ns, when there was a choice.
    pub other_read_ns: Option<f64>,
}

impl Clock {
    /// Prices both clocks and picks the cheaper one. The TSC is a candidate only on
    /// x86_64 with an invariant TSC (`constant_tsc` and `nonstop_tsc` in `/proc/cpuinfo`).
    pub fn choose() -> (Clock, ClockInfo) {
        let instant = Clock::Instant {
            origin: Instant::now(),
        };
        let instant_ns = instant.read_cost();
        let Some(tsc) = Clock::tsc() else {
            let info = ClockInfo {
                source: "instant",
                read_ns: instant_ns,
                other_read_ns: None,
            };
            return (instant, info);
        };
        let tsc_ns = tsc.read_cost();
        if tsc_ns < instant_ns {
            let info = ClockInfo {
                source: "tsc",
                read_ns: tsc_ns,
                other_read_ns: Some(instant_ns),
            };
            (tsc, info)
        } else {
            let info = ClockInfo {
                source: "instant",
                read_ns: instant_ns,
                other_read_ns: Some(tsc_ns),
            };
            (instant, info)
        }
    }

    /// The TSC, calibrated, if it is invariant here.
    fn tsc() -> Option<Clock> {
        if !cfg!(target_arch = "x86_64") {
            return None;
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
        let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
        if !has("constant_tsc") || !has("nonstop_tsc") {
            return None;
        }
        let (t0, c0) = (Instant::now(), rdtsc());
        while t0.elapsed() < CALIBRATION {}
        let (t1, c1) = (Instant::now(), rdtsc());
        let ticks = c1.checked_sub(c0).filter(|&t| t > 0)?;
        Some(Clock::Tsc {
            ns_per_tick: (t1 - t0).as_nanos() as f64 / ticks as f64,
        })
    }

    /// Reads the clock, in ticks.
    #[inline(always)]
    pub fn now(&self) -> u64 {
        match self {
            Clock::Tsc { .. } => rdtsc(),
            Clock::Instant { origin } => origin.elapsed().as_nanos() as u64,
        }
    }

    /// Converts a tick count to ns.
    pub fn ticks_to_ns(self, ticks: u64) -> u64 {
        match self {
            Clock::Tsc { ns_per_tick } => (ticks as f64 * ns_per_tick).round() as u64,
            Clock::Instant { .. } => ticks,
        }
    }

    /// The mean cost of one read, ns.
    fn read_cost(&self) -> f64 {
        let start = Instant::now();
        let mut sink = 0u64;
        for _ in 0..COST_READS {
            sink = sink.wrapping_add(self.now());
        }
        std::hint::black_box(sink);
        start.elapsed().as_nanos() as f64 / f64::from(COST_READS)
    }
}

/// The time-stamp counter.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rdtsc() -> u64 {
    #[allow(unused_unsafe)]
    // SAFETY: `rdtsc` reads a counter and has no preconditions; every x86_64 CPU has it.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// Never called: `Clock::tsc` offers the TSC on x86_64 only.
#[cfg(not(target_arch = "x86_64"))]
fn rdtsc() -> u64 {
    0
}
