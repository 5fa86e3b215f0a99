//! The machine a run was measured on, as the report names it.

use std::fmt;

use serde::Serialize;
use shm_transport::sync::affinity::{self, CorePair};

use super::clock::ClockInfo;

/// CPU, kernel and the cores the two processes ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// Cores this process may run on.
    pub allowed_cores: Vec<usize>,
    /// `[ping side, echo side]`, or `None` when the run is unpinned.
    pub cores: Option<[usize; 2]>,
    /// The lowest cache level the two cores share (2 or 3), if known.
    pub shared_cache: Option<u8>,
    /// Whether the two cores are SMT siblings of one physical core.
    pub smt_siblings: bool,
    /// Why these cores (or why unpinned).
    pub placement: String,
    /// The clock that timed the round trips.
    pub clock: ClockInfo,
}

/// Where the two processes run.
#[derive(Debug, Clone)]
pub struct Placement {
    /// `[ping side, echo side]`, or `None`: unpinned.
    pub cores: Option<[usize; 2]>,
    pub shared_cache: Option<u8>,
    pub smt_siblings: bool,
    pub reason: String,
}

impl Placement {
    /// The pair asked for with `--cores`, or the recommended one; unpinned, with the
    /// reason, when fewer than two cores are allowed.
    pub fn choose(requested: Option<[usize; 2]>) -> anyhow::Result<Placement> {
        let allowed = affinity::allowed_cores()?;
        if let Some([a, b]) = requested {
            for core in [a, b] {
                anyhow::ensure!(
                    allowed.contains(&core),
                    "core {core} is not one this process may use (allowed: {allowed:?})"
                );
            }
            anyhow::ensure!(a != b, "--cores needs two different cores, got {a},{b}");
            let topology = affinity::Topology::read()?;
            return Ok(Placement {
                cores: Some([a, b]),
                shared_cache: topology.shared_cache_level(a, b),
                smt_siblings: topology.smt_siblings(a, b),
                reason: format!("cores {a} and {b} as asked"),
            });
        }
        if allowed.len() < 2 {
            return Ok(Placement {
                cores: None,
                shared_cache: None,
                smt_siblings: false,
                reason: format!(
                    "only one core is allowed ({allowed:?}): both processes run unpinned on it, \
                     so every round trip includes a context switch"
                ),
            });
        }
        let CorePair {
            producer,
            consumer,
            shared_cache,
            smt_siblings,
            reason,
        } = affinity::recommend_pair()?;
        Ok(Placement {
            cores: Some([producer, consumer]),
            shared_cache,
            smt_siblings,
            reason,
        })
    }
}

impl Machine {
    /// Reads the CPU model and kernel release.
    pub fn read(placement: &Placement, clock: ClockInfo) -> anyhow::Result<Machine> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown kernel".to_string());
        Ok(Machine {
            cpu_model,
            kernel,
            allowed_cores: affinity::allowed_cores()?,
            cores: placement.cores,
            shared_cache: placement.shared_cache,
            smt_siblings: placement.smt_siblings,
            placement: placement.reason.clone(),
            clock,
        })
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cpu:    {}", self.cpu_model)?;
        writeln!(f, "kernel: Linux {}", self.kernel)?;
        match self.cores {
            Some([a, b]) => {
                let cache = match self.shared_cache {
                    Some(level) => format!("share an L{level} cache"),
                    None => "share no known cache".to_string(),
                };
                let smt = if self.smt_siblings {
                    "SMT siblings"
                } else {
                    "not SMT siblings"
                };
                writeln!(
                    f,
                    "cores:  ping side on {a}, echo side on {b}: {cache}, {smt} ({})",
                    self.placement
                )?;
            }
            None => writeln!(f, "cores:  unpinned: {}", self.placement)?,
        }
        let other = match self.clock.other_read_ns {
            Some(ns) => format!(", the other clock {ns:.1} ns"),
            None => String::new(),
        };
        write!(
            f,
            "clock:  {} ({:.1} ns per read{other})",
            self.clock.source, self.clock.read_ns
        )
    }
}
