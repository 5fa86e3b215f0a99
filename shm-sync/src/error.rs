//! The crate's error type.

use std::path::PathBuf;

/// Errors of `shm-sync`: reading the CPU topology and pinning threads.
///
/// Futex waits do not fail through this type: a timed-out or interrupted wait is a
/// [`WaitOutcome`](crate::futex::WaitOutcome), not an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sysfs file that describes the CPU topology could not be read.
    #[error("cannot read CPU topology file {path}: {source}")]
    Topology {
        /// The file that was read.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A sysfs CPU list (such as `0-3,8`) did not parse.
    #[error(
        "malformed CPU list {text:?} in {path}: expected comma-separated numbers or ranges like `0-3,8`"
    )]
    CpuList {
        /// The file that held the list.
        path: PathBuf,
        /// The text found there.
        text: String,
    },
    /// The affinity mask of this thread could not be read.
    #[error("cannot read the CPU affinity mask of this thread")]
    AffinityUnavailable,
    /// Pinning to a core failed: the core is not in this thread's allowed set, or does not exist.
    #[error("cannot pin the current thread to core {core}: allowed cores are {allowed:?}")]
    PinFailed {
        /// The requested core.
        core: usize,
        /// The cores this thread may run on.
        allowed: Vec<usize>,
    },
    /// A producer/consumer pair needs two allowed cores, and this thread has fewer.
    #[error("a core pair needs two allowed cores, found {allowed:?}")]
    NotEnoughCores {
        /// The cores this thread may run on.
        allowed: Vec<usize>,
    },
}
