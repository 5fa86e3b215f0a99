//! CPU pinning, the allowed cores, the cache topology from sysfs, and a recommended
//! producer/consumer core pair.
//!
//! # Why a pair should share a cache but not be SMT siblings
//!
//! A ring's producer writes `tail` and its slots; the consumer writes `head`. Every push and
//! pop therefore moves a cache line from one core's L1 to the other's. When the two cores
//! share an L2 or L3 cache, that transfer is served by the shared cache; when they share
//! none (different sockets or chiplets), it crosses the interconnect and costs several
//! times more per message. So the pair should share the lowest cache level it can.
//!
//! Two SMT siblings (hyper-threads of one physical core) share even the L1, but they also
//! share that core's execution units: a consumer that busy-polls `tail` takes issue slots
//! from the producer, which slows down the side doing the real work. Siblings are
//! therefore the last choice, used only when no other pair exists.
//!
//! Isolated cores (`isolcpus=` on the kernel command line) take no ordinary tasks from the
//! scheduler, so a pinned busy-polling thread runs there undisturbed; a pair of them beats
//! any pair of shared cores. Core 0 takes most device interrupts on many systems, so among
//! equally good pairs the one without core 0 wins.
//!
//! # Sources
//!
//! Everything comes from the Linux sysfs CPU tree, documented in the kernel's
//! `Documentation/ABI/stable/sysfs-devices-system-cpu` and
//! `Documentation/ABI/testing/sysfs-devices-system-cpu`, and from `sched_getaffinity(2)` /
//! `sched_setaffinity(2)` through the [`core_affinity`] crate. Core ids everywhere in this
//! module are Linux logical CPU numbers, as used by `taskset` and the `processor` field of
//! `/proc/cpuinfo`.

use std::fmt;
use std::io;
use std::path::Path;

use crate::Error;

/// Largest CPU id (exclusive) a CPU list may name.
///
/// The kernel's `NR_CPUS` is at most 8192 (x86-64 `MAXSMP`); the bound is eight times that.
/// It keeps a corrupt range such as `0-18446744073709551615` from allocating without limit.
const MAX_CPUS: usize = 1 << 16;

/// The directory [`Topology::read`] reads.
const SYSFS_CPU_ROOT: &str = "/sys/devices/system/cpu";

/// Returns the cores the current thread may run on, sorted ascending.
///
/// This is the thread's affinity mask from `sched_getaffinity(2)` (through
/// [`core_affinity::get_core_ids`]). It is a property of the calling thread: a thread
/// pinned with [`pin_current_thread`] sees only its core, and threads it spawns afterwards
/// inherit that mask.
///
/// # Errors
///
/// [`Error::AffinityUnavailable`] if the mask cannot be read.
pub fn allowed_cores() -> Result<Vec<usize>, Error> {
    let ids = core_affinity::get_core_ids().ok_or(Error::AffinityUnavailable)?;
    let mut cores: Vec<usize> = ids.into_iter().map(|c| c.id).collect();
    cores.sort_unstable();
    cores.dedup();
    Ok(cores)
}

/// Pins the current thread to one core.
///
/// Replaces the calling thread's affinity mask with `{core}` through `sched_setaffinity(2)`
/// (via [`core_affinity::set_for_current`]). Only the calling thread is affected; threads it
/// spawns afterwards inherit the new mask. `core` is a Linux logical CPU number.
///
/// The core need not be in the current mask: a thread spawned by a pinned thread inherits
/// its mask, and may still pin itself to any core the process's cpuset permits (as
/// `taskset` can). The kernel decides.
///
/// # Errors
///
/// - [`Error::AffinityUnavailable`] if the current mask cannot be read after a failure.
/// - [`Error::PinFailed`] with the currently allowed cores if `core` is past the
///   `cpu_set_t` (1024 CPUs; checked before any system call), or if the kernel refuses
///   the new mask (an offline core, or one outside the cpuset).
pub fn pin_current_thread(core: usize) -> Result<(), Error> {
    // `core_affinity` indexes a fixed-size `cpu_set_t` with the id, so an id past its end
    // must never reach it.
    if core < CPU_SET_CAPACITY && core_affinity::set_for_current(core_affinity::CoreId { id: core })
    {
        return Ok(());
    }
    Err(Error::PinFailed {
        core,
        allowed: allowed_cores()?,
    })
}

/// The number of CPUs a `cpu_set_t` can name (glibc's and musl's `CPU_SETSIZE`).
const CPU_SET_CAPACITY: usize = 1024;

/// Parses a CPU list in the sysfs format, such as `0-3,8,10-11`.
///
/// Items are separated by commas; each is a CPU number or an inclusive range `a-b` with
/// `a <= b`. Whitespace around the whole text (such as sysfs's trailing newline) is
/// ignored, and an empty or all-whitespace text is the empty list. The result is sorted
/// ascending and free of duplicates.
///
/// Returns `None` for malformed input: empty items (`0,,1`, a trailing comma), reversed
/// ranges (`3-1`), anything other than ASCII digits, `-` and `,` (including signs and inner
/// spaces), and CPU numbers of 65536 or more, which no kernel produces.
///
/// Pure: no I/O, no panics.
#[must_use]
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    let mut ranges = Vec::new();
    for item in text.split(',') {
        let range = match item.split_once('-') {
            Some((start, end)) => (parse_cpu_number(start)?, parse_cpu_number(end)?),
            None => {
                let cpu = parse_cpu_number(item)?;
                (cpu, cpu)
            }
        };
        if range.0 > range.1 {
            return None;
        }
        ranges.push(range);
    }
    // Merge before expanding, so that repeated ranges cost nothing and the output is
    // bounded by `MAX_CPUS` entries whatever the length of the text.
    ranges.sort_unstable();
    let mut cpus = Vec::new();
    let mut next = 0; // The lowest CPU not yet emitted.
    for (start, end) in ranges {
        cpus.extend(start.max(next)..=end);
        next = next.max(end + 1);
    }
    Some(cpus)
}

/// Parses one CPU number of a CPU list: ASCII digits only, below [`MAX_CPUS`].
fn parse_cpu_number(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&cpu| cpu < MAX_CPUS)
}

/// What sysfs says about one CPU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct CpuInfo {
    /// `topology/thread_siblings_list`: this CPU and its SMT siblings, sorted.
    siblings: Vec<usize>,
    /// The CPUs sharing this CPU's unified or data L2, sorted; empty if unknown.
    l2: Vec<usize>,
    /// The CPUs sharing this CPU's unified or data L3, sorted; empty if unknown.
    l3: Vec<usize>,
}

/// The CPU topology that matters for placing a producer and a consumer: SMT siblings,
/// shared L2 and L3 caches, and isolated cores, as read from sysfs.
///
/// A snapshot: CPU hotplug after [`read`](Self::read) is not reflected. Core ids are Linux
/// logical CPU numbers; cache levels are `2` for L2 and `3` for L3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The CPUs described, sorted ascending.
    cores: Vec<usize>,
    /// `info[i]` describes `cores[i]`.
    info: Vec<CpuInfo>,
    /// The isolated CPUs, sorted ascending.
    isolated: Vec<usize>,
}

impl Topology {
    /// Reads the topology of this machine from `/sys/devices/system/cpu`.
    ///
    /// Same as [`from_sysfs`](Self::from_sysfs) on that directory; see there for the files
    /// read.
    ///
    /// # Errors
    ///
    /// As [`from_sysfs`](Self::from_sysfs).
    pub fn read() -> Result<Self, Error> {
        Self::from_sysfs(Path::new(SYSFS_CPU_ROOT))
    }

    /// Reads the topology from a directory laid out like `/sys/devices/system/cpu`.
    ///
    /// Files read, relative to `root`:
    ///
    /// - `online`: the CPUs described. If it does not exist, every `cpuN` subdirectory is
    ///   taken instead.
    /// - `isolated`: the isolated CPUs (may be empty; a missing file, as on kernels before
    ///   4.2, means none).
    /// - `cpuN/topology/thread_siblings_list`: the SMT siblings of CPU `N`. Required.
    /// - `cpuN/cache/indexK/{level,type,shared_cpu_list}`: for each cache of CPU `N` whose
    ///   `type` is `Unified` or `Data` and whose `level` is 2 or 3, the CPUs sharing it.
    ///   Instruction caches and other levels are skipped. A missing `cpuN/cache` directory
    ///   (some virtual machines have none) means no cache information for that CPU; an
    ///   `indexK` directory that exists must hold all three files.
    ///
    /// # Errors
    ///
    /// - [`Error::Topology`] naming the file (or directory) that is missing or unreadable,
    ///   or whose cache `level` is not a number.
    /// - [`Error::CpuList`] naming the file whose CPU list does not parse (see
    ///   [`parse_cpu_list`]).
    pub fn from_sysfs(root: &Path) -> Result<Self, Error> {
        let cores = match read_optional_list(&root.join("online"))? {
            Some(cores) => cores,
            None => cpu_dirs(root)?,
        };
        let isolated = read_optional_list(&root.join("isolated"))?.unwrap_or_default();
        let info = cores
            .iter()
            .map(|&cpu| read_cpu(&root.join(format!("cpu{cpu}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cores,
            info,
            isolated,
        })
    }

    /// Returns the CPUs this topology describes, sorted ascending.
    #[must_use]
    pub fn cores(&self) -> &[usize] {
        &self.cores
    }

    /// Returns whether `a` and `b` are distinct SMT siblings (hardware threads of one
    /// physical core).
    ///
    /// `false` when `a == b` or when either core is not in [`cores`](Self::cores).
    #[must_use]
    pub fn smt_siblings(&self, a: usize, b: usize) -> bool {
        a != b && self.shares(a, b, |info| &info.siblings)
    }

    /// Returns the lowest cache level shared by the distinct cores `a` and `b`: `Some(2)`
    /// for an L2, `Some(3)` for an L3 only.
    ///
    /// `None` when `a == b`, when either core is not in [`cores`](Self::cores), when sysfs
    /// reported no cache for them, or when they share no L2 or L3. L1 sharing is not
    /// reported; it implies SMT siblings, see [`smt_siblings`](Self::smt_siblings).
    #[must_use]
    pub fn shared_cache_level(&self, a: usize, b: usize) -> Option<u8> {
        if a == b {
            None
        } else if self.shares(a, b, |info| &info.l2) {
            Some(2)
        } else if self.shares(a, b, |info| &info.l3) {
            Some(3)
        } else {
            None
        }
    }

    /// Returns whether `core` is isolated from the scheduler (listed in sysfs `isolated`,
    /// set by the `isolcpus=` boot parameter).
    #[must_use]
    pub fn is_isolated(&self, core: usize) -> bool {
        self.isolated.binary_search(&core).is_ok()
    }

    /// Picks the best producer/consumer pair among `allowed` cores.
    ///
    /// Preference, in order:
    ///
    /// 1. If at least two allowed cores are isolated, only pairs of isolated cores are
    ///    considered.
    /// 2. Among those, not SMT siblings and sharing an L2, then not siblings and sharing
    ///    an L3, then not siblings and sharing no cache sysfs reports, and SMT siblings
    ///    last.
    /// 3. Among equally good pairs, one without core 0 (which takes most interrupts), then
    ///    the lowest core ids.
    ///
    /// The lower core of the pair is the producer. Allowed cores this topology does not
    /// describe are treated as sharing nothing with anyone. Duplicates in `allowed` are
    /// ignored. Takes time quadratic in `allowed.len()`.
    ///
    /// # Errors
    ///
    /// [`Error::NotEnoughCores`] with the sorted, deduplicated `allowed` cores if there are
    /// fewer than two.
    pub fn recommend_pair(&self, allowed: &[usize]) -> Result<CorePair, Error> {
        let mut allowed = allowed.to_vec();
        allowed.sort_unstable();
        allowed.dedup();
        if allowed.len() < 2 {
            return Err(Error::NotEnoughCores { allowed });
        }
        let isolated: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|&core| self.is_isolated(core))
            .collect();
        let candidates = if isolated.len() >= 2 {
            &isolated
        } else {
            &allowed
        };

        // Keys order pairs by quality, then pairs without core 0 first (`a == 0` is false),
        // then lowest ids; `a < b` throughout.
        let best = candidates
            .iter()
            .enumerate()
            .flat_map(|(i, &a)| {
                candidates[i + 1..]
                    .iter()
                    .map(move |&b| (self.quality(a, b), a == 0, a, b))
            })
            .min();
        let Some((quality, _, producer, consumer)) = best else {
            // Unreachable: `candidates` has at least two cores, so there is a pair.
            return Err(Error::NotEnoughCores { allowed });
        };

        let pool = if isolated.len() >= 2 {
            "isolated allowed"
        } else {
            "allowed"
        };
        let relation = match quality {
            Quality::SharedL2 => "share an L2 cache and are not SMT siblings",
            Quality::SharedL3 => "share an L3 cache and are not SMT siblings",
            Quality::NoSharedCache => {
                "are not SMT siblings but share no L2 or L3 cache that sysfs reports"
            }
            Quality::Siblings => &format!(
                "are SMT siblings, chosen because no two {pool} cores are on different \
                 physical cores"
            ),
        };
        let isolation = if isolated.len() >= 2 {
            "both are isolated".to_owned()
        } else if self.isolated.is_empty() {
            "no isolated cores".to_owned()
        } else if let [only] = isolated[..] {
            format!("core {only} is the only allowed isolated core")
        } else {
            "no isolated core is allowed".to_owned()
        };
        Ok(CorePair {
            producer,
            consumer,
            shared_cache: self.shared_cache_level(producer, consumer),
            smt_siblings: self.smt_siblings(producer, consumer),
            reason: format!("cores {producer} and {consumer} {relation}; {isolation}"),
        })
    }

    /// Ranks the pair `(a, b)`; lower is better.
    fn quality(&self, a: usize, b: usize) -> Quality {
        if self.smt_siblings(a, b) {
            Quality::Siblings
        } else {
            match self.shared_cache_level(a, b) {
                Some(2) => Quality::SharedL2,
                Some(_) => Quality::SharedL3,
                None => Quality::NoSharedCache,
            }
        }
    }

    /// Returns whether `b` is in `a`'s set or `a` in `b`'s, for the set `field` selects.
    ///
    /// Checking both directions tolerates asymmetric sysfs content.
    fn shares(&self, a: usize, b: usize, field: impl Fn(&CpuInfo) -> &Vec<usize>) -> bool {
        let lists = |x: usize, y: usize| {
            self.info_of(x)
                .is_some_and(|info| field(info).binary_search(&y).is_ok())
        };
        lists(a, b) || lists(b, a)
    }

    /// Returns what sysfs said about `core`, if it was read.
    fn info_of(&self, core: usize) -> Option<&CpuInfo> {
        self.cores
            .binary_search(&core)
            .ok()
            .and_then(|i| self.info.get(i))
    }
}

/// How good a producer/consumer pair is; the derived order puts the best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Quality {
    /// Not SMT siblings, share an L2.
    SharedL2,
    /// Not SMT siblings, share an L3 but no L2.
    SharedL3,
    /// Not SMT siblings, no shared L2 or L3 known.
    NoSharedCache,
    /// SMT siblings.
    Siblings,
}

/// A recommended pair of cores for a producer thread and a consumer thread.
///
/// Made by [`recommend_pair`] or [`Topology::recommend_pair`]. Core ids are Linux logical
/// CPU numbers; pin each thread with [`pin_current_thread`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorePair {
    /// The core for the producer thread.
    pub producer: usize,
    /// The core for the consumer thread.
    pub consumer: usize,
    /// The lowest cache level the two cores share, `2` or `3`, or `None` if none is known.
    pub shared_cache: Option<u8>,
    /// Whether the two cores are SMT siblings of one physical core.
    pub smt_siblings: bool,
    /// One sentence saying why this pair was chosen, e.g. `"cores 0 and 1 share an L3
    /// cache and are not SMT siblings; no isolated cores"`.
    pub reason: String,
}

impl fmt::Display for CorePair {
    /// Writes `producer core X, consumer core Y (<reason>)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "producer core {}, consumer core {} ({})",
            self.producer, self.consumer, self.reason
        )
    }
}

/// Recommends a producer/consumer core pair for the current thread on this machine.
///
/// Reads the allowed cores with [`allowed_cores`] and the topology with
/// [`Topology::read`], then applies [`Topology::recommend_pair`]; see there for the
/// preference order.
///
/// # Errors
///
/// - [`Error::AffinityUnavailable`] if the affinity mask cannot be read.
/// - [`Error::NotEnoughCores`] if fewer than two cores are allowed.
/// - [`Error::Topology`] or [`Error::CpuList`] if sysfs cannot be read or parsed.
pub fn recommend_pair() -> Result<CorePair, Error> {
    let allowed = allowed_cores()?;
    if allowed.len() < 2 {
        // Decided before touching sysfs: no topology could help.
        return Err(Error::NotEnoughCores { allowed });
    }
    Topology::read()?.recommend_pair(&allowed)
}

/// Reads a whole file, mapping failure to [`Error::Topology`].
fn read_file(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Topology {
        path: path.to_owned(),
        source,
    })
}

/// Reads and parses a CPU list file.
fn read_list(path: &Path) -> Result<Vec<usize>, Error> {
    let text = read_file(path)?;
    parse_cpu_list(&text).ok_or_else(|| Error::CpuList {
        path: path.to_owned(),
        text,
    })
}

/// Reads a CPU list file that may be absent: `Ok(None)` if it does not exist.
fn read_optional_list(path: &Path) -> Result<Option<Vec<usize>>, Error> {
    match read_list(path) {
        Ok(list) => Ok(Some(list)),
        Err(Error::Topology { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Lists the CPUs that have a `cpuN` directory under `root`, sorted ascending.
fn cpu_dirs(root: &Path) -> Result<Vec<usize>, Error> {
    let dir_error = |source| Error::Topology {
        path: root.to_owned(),
        source,
    };
    let mut cores = Vec::new();
    for entry in std::fs::read_dir(root).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let name = entry.file_name();
        let Some(cpu) = name
            .to_str()
            .and_then(|name| name.strip_prefix("cpu"))
            .and_then(parse_cpu_number)
        else {
            continue; // `cpufreq`, `online` and the like.
        };
        if entry.path().is_dir() {
            cores.push(cpu);
        }
    }
    cores.sort_unstable();
    Ok(cores)
}

/// Reads one CPU's siblings and caches from its `cpuN` directory.
fn read_cpu(cpu_dir: &Path) -> Result<CpuInfo, Error> {
    let mut info = CpuInfo {
        siblings: read_list(&cpu_dir.join("topology").join("thread_siblings_list"))?,
        ..CpuInfo::default()
    };
    let cache_dir = cpu_dir.join("cache");
    let entries = match std::fs::read_dir(&cache_dir) {
        Ok(entries) => entries,
        // Some virtual machines expose no cache information at all.
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(info),
        Err(source) => {
            return Err(Error::Topology {
                path: cache_dir,
                source,
            });
        }
    };
    let mut index_dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Topology {
            path: cache_dir.clone(),
            source,
        })?;
        let is_index = entry
            .file_name()
            .to_str()
            .and_then(|name| name.strip_prefix("index"))
            .is_some_and(|k| parse_cpu_number(k).is_some());
        if is_index {
            index_dirs.push(entry.path());
        }
    }
    index_dirs.sort_unstable(); // Deterministic error reporting.
    for index_dir in index_dirs {
        let level_path = index_dir.join("level");
        let level_text = read_file(&level_path)?;
        let level: u8 = level_text.trim().parse().map_err(|_| Error::Topology {
            path: level_path.clone(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected a cache level number, found {level_text:?}"),
            ),
        })?;
        let kind = read_file(&index_dir.join("type"))?;
        let shared = read_list(&index_dir.join("shared_cpu_list"))?;
        if !matches!(kind.trim(), "Unified" | "Data") {
            continue;
        }
        let target = match level {
            2 => &mut info.l2,
            3 => &mut info.l3,
            _ => continue,
        };
        // Union, in case a level has several data or unified caches.
        target.extend(shared);
        target.sort_unstable();
        target.dedup();
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    // ---- parse_cpu_list: pure, run under Miri too ----

    #[test]
    fn parse_single_and_ranges() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("2-2"), Some(vec![2]));
    }

    #[test]
    fn parse_empty_and_newline() {
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
    }

    #[test]
    fn parse_sorts_and_dedups() {
        assert_eq!(
            parse_cpu_list("8,0-2,1,2-4,8"),
            Some(vec![0, 1, 2, 3, 4, 8])
        );
        assert_eq!(parse_cpu_list("0-3,0-3,0-3"), Some(vec![0, 1, 2, 3]));
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            "3-1", "a", "0-", "-1", "0,,1", "0,", ",0", "1-2-3", "0 ,1", "+1", "0x1", "1.5",
            "0-1\n2", "\u{663}",
        ] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_bounds_cpu_numbers() {
        assert_eq!(parse_cpu_list("65535"), Some(vec![65535]));
        assert_eq!(parse_cpu_list("65536"), None);
        assert_eq!(parse_cpu_list("0-18446744073709551615"), None);
        assert_eq!(parse_cpu_list("99999999999999999999999"), None);
        // Many copies of a wide range stay bounded.
        let copies = if cfg!(miri) { 10 } else { 1000 };
        let text = vec!["0-65535"; copies].join(",");
        assert_eq!(parse_cpu_list(&text).map(|v| v.len()), Some(MAX_CPUS));
    }

    // ---- recommend_pair on in-memory topologies: pure, run under Miri too ----

    /// One CPU of an in-memory topology: (id, siblings, L2 sharers, L3 sharers).
    type CpuSpec<'a> = (usize, &'a [usize], &'a [usize], &'a [usize]);

    /// Builds a topology from per-core specs.
    fn topo(cpus: &[CpuSpec<'_>], isolated: &[usize]) -> Topology {
        Topology {
            cores: cpus.iter().map(|c| c.0).collect(),
            info: cpus
                .iter()
                .map(|&(_, siblings, l2, l3)| CpuInfo {
                    siblings: siblings.to_vec(),
                    l2: l2.to_vec(),
                    l3: l3.to_vec(),
                })
                .collect(),
            isolated: isolated.to_vec(),
        }
    }

    #[test]
    fn pair_prefers_l2_over_l3_and_avoids_core_0() {
        // Cores 0-1, 2-3 and 4-5 share an L2 each; all share one L3; no SMT.
        let t = topo(
            &[
                (0, &[0], &[0, 1], &[0, 1, 2, 3, 4, 5]),
                (1, &[1], &[0, 1], &[0, 1, 2, 3, 4, 5]),
                (2, &[2], &[2, 3], &[0, 1, 2, 3, 4, 5]),
                (3, &[3], &[2, 3], &[0, 1, 2, 3, 4, 5]),
                (4, &[4], &[4, 5], &[0, 1, 2, 3, 4, 5]),
                (5, &[5], &[4, 5], &[0, 1, 2, 3, 4, 5]),
            ],
            &[],
        );
        let pair = t.recommend_pair(&[0, 1, 2, 3, 4, 5]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (2, 3));
        assert_eq!(pair.shared_cache, Some(2));
        assert!(!pair.smt_siblings);
        // With only core 0's L2 partner and an L3 partner allowed, L2 beats avoiding core 0.
        let pair = t.recommend_pair(&[0, 1, 2]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (0, 1));
        // Equal L3-only pairs: (2, 4) is preferred to (0, 2) and (0, 4).
        let pair = t.recommend_pair(&[0, 2, 4]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (2, 4));
        assert_eq!(pair.shared_cache, Some(3));
    }

    #[test]
    fn pair_prefers_shared_cache_over_none_and_siblings_last() {
        // Two sockets: 0,1 on one L3, 2,3 on another; 0 and 1 are SMT siblings.
        let t = topo(
            &[
                (0, &[0, 1], &[0, 1], &[0, 1]),
                (1, &[0, 1], &[0, 1], &[0, 1]),
                (2, &[2], &[2], &[2, 3]),
                (3, &[3], &[3], &[2, 3]),
            ],
            &[],
        );
        let pair = t.recommend_pair(&[0, 1, 2, 3]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (2, 3));
        assert_eq!(pair.shared_cache, Some(3));
        // 0,1 are siblings; cross-socket non-siblings win over them.
        let pair = t.recommend_pair(&[0, 1, 2]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (1, 2));
        assert_eq!(pair.shared_cache, None);
        assert!(!pair.smt_siblings);
        assert!(pair.reason.contains("share no L2 or L3"), "{}", pair.reason);
        // Only siblings left.
        let pair = t.recommend_pair(&[1, 0]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (0, 1));
        assert!(pair.smt_siblings);
        assert_eq!(pair.shared_cache, Some(2));
        assert!(pair.reason.contains("are SMT siblings"), "{}", pair.reason);
    }

    #[test]
    fn pair_of_unknown_cores_and_duplicates() {
        let t = topo(&[], &[]);
        let pair = t.recommend_pair(&[7, 3, 7, 5]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (3, 5));
        assert_eq!(pair.shared_cache, None);
        assert!(matches!(
            t.recommend_pair(&[4, 4]),
            Err(Error::NotEnoughCores { allowed }) if allowed == [4]
        ));
        assert!(matches!(
            t.recommend_pair(&[]),
            Err(Error::NotEnoughCores { allowed }) if allowed.is_empty()
        ));
    }

    #[test]
    fn pair_reason_mentions_isolation() {
        let cpu = |id| (id, &[][..], &[][..], &[0, 1, 2, 3][..]);
        let t = topo(&[cpu(0), cpu(1), cpu(2), cpu(3)], &[3]);
        let pair = t.recommend_pair(&[0, 1, 2, 3]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (1, 2));
        assert_eq!(
            pair.reason,
            "cores 1 and 2 share an L3 cache and are not SMT siblings; \
             core 3 is the only allowed isolated core"
        );
        let pair = t.recommend_pair(&[0, 1, 2]).unwrap();
        assert!(
            pair.reason.ends_with("; no isolated core is allowed"),
            "{}",
            pair.reason
        );
    }

    #[test]
    fn core_pair_display() {
        let pair = CorePair {
            producer: 2,
            consumer: 3,
            shared_cache: Some(3),
            smt_siblings: false,
            reason: "cores 2 and 3 share an L3 cache and are not SMT siblings; no isolated cores"
                .to_owned(),
        };
        assert_eq!(
            pair.to_string(),
            "producer core 2, consumer core 3 (cores 2 and 3 share an L3 cache and are not \
             SMT siblings; no isolated cores)"
        );
    }

    #[test]
    fn queries_on_distinct_and_unknown_cores() {
        let t = topo(
            &[
                (0, &[0, 1], &[0, 1], &[0, 1]),
                (1, &[0, 1], &[0, 1], &[0, 1]),
            ],
            &[1],
        );
        assert!(t.smt_siblings(0, 1) && t.smt_siblings(1, 0));
        assert!(!t.smt_siblings(0, 0));
        assert!(!t.smt_siblings(0, 9));
        assert_eq!(t.shared_cache_level(0, 1), Some(2));
        assert_eq!(t.shared_cache_level(1, 1), None);
        assert_eq!(t.shared_cache_level(9, 0), None);
        assert!(t.is_isolated(1) && !t.is_isolated(0) && !t.is_isolated(9));
        assert_eq!(t.cores(), [0, 1]);
    }

    // ---- Fake sysfs trees: file I/O, so not under Miri ----

    /// A temporary directory shaped like `/sys/devices/system/cpu`, removed on drop.
    struct FakeSysfs {
        root: PathBuf,
    }

    impl FakeSysfs {
        /// `name` must differ between tests; the process id and the time separate runs.
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let root = std::env::temp_dir().join(format!(
                "shm-sync-affinity-{}-{nanos}-{name}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            Self { root }
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        /// Adds `cpuN` with its siblings and `(level, type, shared)` caches.
        fn cpu(&self, n: usize, siblings: &str, caches: &[(u8, &str, &str)]) {
            self.write(&format!("cpu{n}/topology/thread_siblings_list"), siblings);
            for (k, (level, kind, shared)) in caches.iter().enumerate() {
                let dir = format!("cpu{n}/cache/index{k}");
                self.write(&format!("{dir}/level"), &format!("{level}\n"));
                self.write(&format!("{dir}/type"), &format!("{kind}\n"));
                self.write(&format!("{dir}/shared_cpu_list"), &format!("{shared}\n"));
            }
        }

        /// 4 CPUs as 2 SMT pairs (0,1 and 2,3), each pair with its own L1 and L2, all
        /// sharing one L3; CPU numbering as on a typical Intel desktop.
        fn smt_quad(name: &str, isolated: &str) -> Self {
            let fake = Self::new(name);
            fake.write("online", "0-3\n");
            fake.write("possible", "0-3\n");
            fake.write("isolated", isolated);
            for n in 0..4 {
                let pair = if n < 2 { "0-1" } else { "2-3" };
                fake.cpu(
                    n,
                    &format!("{pair}\n"),
                    &[
                        (1, "Data", pair),
                        (1, "Instruction", pair),
                        (2, "Unified", pair),
                        (3, "Unified", "0-3"),
                    ],
                );
            }
            fake
        }
    }

    impl Drop for FakeSysfs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // File I/O.
    fn fake_smt_pairs_sharing_l3() {
        let fake = FakeSysfs::smt_quad("smt", "\n");
        let t = Topology::from_sysfs(&fake.root).unwrap();
        assert_eq!(t.cores(), [0, 1, 2, 3]);
        assert!(t.smt_siblings(0, 1) && t.smt_siblings(2, 3));
        assert!(!t.smt_siblings(1, 2));
        assert_eq!(t.shared_cache_level(0, 1), Some(2));
        assert_eq!(t.shared_cache_level(1, 2), Some(3));
        assert!(!(0..4).any(|c| t.is_isolated(c)));
        let pair = t.recommend_pair(&[0, 1, 2, 3]).unwrap();
        assert_eq!(
            pair,
            CorePair {
                producer: 1,
                consumer: 2,
                shared_cache: Some(3),
                smt_siblings: false,
                reason: "cores 1 and 2 share an L3 cache and are not SMT siblings; \
                         no isolated cores"
                    .to_owned(),
            }
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)] // File I/O.
    fn fake_isolated_cores_win() {
        let fake = FakeSysfs::smt_quad("isolated", "2-3\n");
        let t = Topology::from_sysfs(&fake.root).unwrap();
        assert!(t.is_isolated(2) && t.is_isolated(3) && !t.is_isolated(1));
        // 2 and 3 are SMT siblings, but being isolated outranks that.
        let pair = t.recommend_pair(&[0, 1, 2, 3]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (2, 3));
        assert!(pair.smt_siblings);
        assert!(
            pair.reason.ends_with("; both are isolated"),
            "{}",
            pair.reason
        );
        // Without both isolated cores allowed, the ordinary ranking applies.
        let pair = t.recommend_pair(&[0, 1, 2]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (1, 2));
    }

    #[test]
    #[cfg_attr(miri, ignore)] // File I/O.
    fn fake_missing_siblings_list_is_an_error() {
        let fake = FakeSysfs::smt_quad("missing", "");
        let missing = fake.root.join("cpu2/topology/thread_siblings_list");
        std::fs::remove_file(&missing).unwrap();
        match Topology::from_sysfs(&fake.root) {
            Err(Error::Topology { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected Error::Topology, got {other:?}"),
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // File I/O.
    fn fake_malformed_list_is_an_error() {
        let fake = FakeSysfs::smt_quad("malformed", "");
        fake.write("cpu1/cache/index3/shared_cpu_list", "3-0\n");
        match Topology::from_sysfs(&fake.root) {
            Err(Error::CpuList { path, text }) => {
                assert_eq!(path, fake.root.join("cpu1/cache/index3/shared_cpu_list"));
                assert_eq!(text, "3-0\n");
            }
            other => panic!("expected Error::CpuList, got {other:?}"),
        }
        fake.write("cpu1/cache/index3/shared_cpu_list", "0-3\n");
        fake.write("isolated", "garbage");
        assert!(matches!(
            Topology::from_sysfs(&fake.root),
            Err(Error::CpuList { path, .. }) if path == fake.root.join("isolated")
        ));
        fake.write("isolated", "");
        fake.write("cpu0/cache/index2/level", "two\n");
        assert!(matches!(
            Topology::from_sysfs(&fake.root),
            Err(Error::Topology { path, source })
                if path == fake.root.join("cpu0/cache/index2/level")
                    && source.kind() == io::ErrorKind::InvalidData
        ));
    }

    #[test]
    #[cfg_attr(miri, ignore)] // File I/O.
    fn fake_one_allowed_core() {
        let fake = FakeSysfs::smt_quad("one", "");
        let t = Topology::from_sysfs(&fake.root).unwrap();
        assert!(matches!(
            t.recommend_pair(&[3]),
            Err(Error::NotEnoughCores { allowed }) if allowed == [3]
        ));
    }

    #[test]
    #[cfg_attr(miri, ignore)] // File I/O.
    fn fake_without_caches_online_or_isolated() {
        // A VM-like tree: no `online`, no `isolated`, no cache directories.
        let fake = FakeSysfs::new("bare");
        fake.cpu(0, "0\n", &[]);
        fake.cpu(1, "1\n", &[]);
        fake.cpu(10, "10\n", &[]);
        fake.write("cpufreq/policy0/x", "");
        fake.write("cpu5", "a file, not a CPU directory");
        let t = Topology::from_sysfs(&fake.root).unwrap();
        assert_eq!(t.cores(), [0, 1, 10]);
        assert_eq!(t.shared_cache_level(0, 1), None);
        let pair = t.recommend_pair(&[0, 1, 10]).unwrap();
        assert_eq!((pair.producer, pair.consumer), (1, 10));
        assert_eq!(
            pair.reason,
            "cores 1 and 10 are not SMT siblings but share no L2 or L3 cache that sysfs \
             reports; no isolated cores"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)] // File I/O.
    fn fake_missing_root_is_an_error() {
        let fake = FakeSysfs::new("gone");
        let root = fake.root.join("nonexistent");
        assert!(matches!(
            Topology::from_sysfs(&root),
            Err(Error::Topology { path, .. }) if path == root
        ));
    }

    // ---- This machine ----

    #[test]
    #[cfg_attr(miri, ignore)] // Reads sysfs and calls sched_{get,set}affinity.
    fn real_topology_covers_allowed_cores() {
        let allowed = allowed_cores().unwrap();
        assert!(!allowed.is_empty());
        assert!(allowed.is_sorted());
        let t = Topology::read().unwrap();
        for core in &allowed {
            assert!(t.cores().contains(core), "core {core} missing from {t:?}");
        }
        match recommend_pair() {
            Ok(pair) => {
                assert!(allowed.contains(&pair.producer) && allowed.contains(&pair.consumer));
                assert!(pair.producer < pair.consumer);
            }
            Err(Error::NotEnoughCores { allowed: found }) => {
                assert_eq!(found, allowed);
                assert_eq!(allowed.len(), 1);
            }
            Err(err) => panic!("recommend_pair: {err}"),
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Calls sched_{get,set}affinity.
    fn real_pinning_affects_only_the_pinned_thread_and_its_children() {
        let allowed = allowed_cores().unwrap();
        let first = allowed[0];
        // Pin a helper thread, so that the test harness's thread keeps its mask.
        let (in_pinned, in_child) = std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            let in_pinned = core_affinity::get_core_ids().unwrap();
            // Linux threads inherit their creator's mask.
            let in_child = std::thread::spawn(|| allowed_cores().unwrap())
                .join()
                .unwrap();
            (in_pinned, in_child)
        })
        .join()
        .unwrap();
        assert_eq!(in_pinned, [core_affinity::CoreId { id: first }]);
        assert_eq!(in_child, [first]);
        // A thread spawned by an unpinned thread is unaffected.
        let fresh = std::thread::spawn(|| allowed_cores().unwrap())
            .join()
            .unwrap();
        assert_eq!(fresh, allowed);
        assert_eq!(allowed_cores().unwrap(), allowed);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Calls sched_{get,set}affinity.
    fn a_thread_spawned_by_a_pinned_thread_can_pin_itself_elsewhere() {
        let allowed = allowed_cores().unwrap();
        let (Some(&first), Some(&last)) = (allowed.first(), allowed.last()) else {
            panic!("no allowed core");
        };
        std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            std::thread::spawn(move || {
                assert_eq!(
                    allowed_cores().unwrap(),
                    vec![first],
                    "inherits the pinned mask"
                );
                pin_current_thread(last).unwrap();
                assert_eq!(allowed_cores().unwrap(), vec![last]);
            })
            .join()
            .unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Calls sched_getaffinity.
    fn real_pinning_to_a_disallowed_core_fails() {
        let allowed = allowed_cores().unwrap();
        // Past the `cpu_set_t` (refused before any system call), and inside it but not
        // allowed (offline or outside the cpuset: refused by the kernel).
        let inside = (0..MAX_CPUS).rev().find(|c| !allowed.contains(c));
        for core in [MAX_CPUS, usize::MAX].into_iter().chain(inside) {
            match pin_current_thread(core) {
                Err(Error::PinFailed {
                    core: c,
                    allowed: a,
                }) => {
                    assert_eq!(c, core);
                    assert_eq!(a, allowed);
                }
                other => panic!("expected PinFailed, got {other:?}"),
            }
        }
        assert_eq!(allowed_cores().unwrap(), allowed);
    }
}
