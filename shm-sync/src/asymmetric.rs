//! Asymmetric fences across processes: a free [`light`] fence for the side that runs on
//! every message, paid for by a [`heavy`] fence (a `membarrier(2)` syscall) on the side
//! that runs rarely.
//!
//! After Folly's `asymmetric_thread_fence_light`/`_heavy` (folly/synchronization/
//! AsymmetricThreadFence.h), which pairs a compiler fence with
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` inside one process; ours must reach the
//! threads of other processes mapping the same file, so it uses the global form:
//!
//! - The first [`light`] of a process registers it with
//!   `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED` (once; a `SeqCst` fence meanwhile). From
//!   then on [`light`] is a compiler fence: no instruction.
//! - [`heavy`] is `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`: when it returns, every
//!   thread of every registered process that was running has executed a full memory
//!   barrier (by IPI), and every one that was not running will execute one before it runs
//!   again (a context switch is a full barrier). A `SeqCst` fence precedes it, for the
//!   processes that could not register and keep real fences.
//!
//! # Why a light/heavy pair is a store-buffering fence pair
//!
//! Thread L (light) writes `x` then reads `y`; thread H (heavy) writes `y` then reads `x`.
//! H's membarrier puts a full barrier into L's instruction stream at some point P, while
//! H waits. If P falls before L's read of `y`, that read comes after the barrier, which
//! came after H's write of `y` (H wrote before the syscall): L sees `y`. If P falls after
//! L's read, it also falls after L's write of `x`, which is therefore visible when the
//! membarrier returns, before H's read: H sees `x`. Either way one side sees the other's
//! write, exactly as with two `SeqCst` fences. The compiler fence keeps L's write and read
//! in program order, so P cannot fall "between them the wrong way round".
//!
//! # Registration and mixed processes
//!
//! A process becomes light only after its registration returned: a [`heavy`] issued from
//! then on reaches it. A process that cannot register (a kernel before 4.16 or without
//! `CONFIG_MEMBARRIER`, a seccomp filter that refuses the syscall) keeps the `SeqCst`
//! fence in [`light`], which pairs with the fence [`heavy`] also issues. A heavy side that
//! cannot issue the membarrier while the kernel offers it (its own seccomp filter) cannot
//! reach light processes: [`heavy`] returns [`Heavy::Unreached`], and the caller must not
//! sleep without a bound (see `EventCount::wait`). Registration is per address space and a
//! forked child starts unregistered, so a child forgets the parent's state (a
//! `pthread_atfork` handler) and registers again at its first [`light`].
//!
//! Under loom and miri both functions are a `SeqCst` fence: loom's models cover the
//! symmetric form, and miri runs no syscall. Under loom, a test can drop either fence
//! (the `faults` module, built only for loom), to show that its model catches what the
//! fence prevents.

use crate::atomic::{Ordering, fence};

/// The environment variable that keeps a process's [`light`] fences real: `off` (read
/// once, at the first [`light`]). For a process that must never take the interrupt a
/// global expedited membarrier sends to every core running a registered process, at the
/// price of a `SeqCst` fence per notification.
pub const ENV: &str = "SHM_MEMBARRIER";

/// What a [`heavy`] fence reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heavy {
    /// Every process's [`light`] fence pairs with this one.
    Reached,
    /// The membarrier failed while the kernel offers it: a process whose [`light`] is a
    /// compiler fence may not have been reached. Sleep only for short bounded slices.
    Unreached,
}

/// The light side: a compiler fence in a process registered for global expedited
/// membarriers, a `SeqCst` fence otherwise (and during the first call, which registers).
///
/// Pairs with [`heavy`] as two `SeqCst` fences would (see the [module docs](self)); two
/// light fences do not pair with each other.
#[inline(always)]
pub fn light() {
    light_then_load(|| 0);
}

/// A [`light`] fence followed by `load`, fused so that the common case (this process is
/// registered, and `load` reads 0) costs the load and one branch: returns what `load`
/// read after the fence.
///
/// For a notifier that reads a waiter count after its publication: in a registered
/// process `load` runs once behind a compiler fence; otherwise its first read is
/// discarded, and it runs again after a `SeqCst` fence (and the registration, on first
/// use).
#[inline(always)]
pub fn light_then_load(load: impl Fn() -> u32) -> u32 {
    #[cfg(not(any(loom, miri)))]
    return imp::light_then_load(load);
    #[cfg(any(loom, miri))]
    {
        #[cfg(loom)]
        let weak = faults::light_dropped();
        #[cfg(not(loom))]
        let weak = false;
        if !weak {
            fence(Ordering::SeqCst);
        }
        load()
    }
}

/// The heavy side: a `SeqCst` fence, then `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`
/// (one syscall, a few microseconds: it interrupts the cores that run registered
/// processes). For the side that is about to sleep anyway.
///
/// Returns [`Heavy::Unreached`] when the membarrier failed though the kernel offers it,
/// or failed and the kernel cannot be asked (a seccomp filter refuses the query too; see
/// the [module docs](self)).
#[inline]
pub fn heavy() -> Heavy {
    #[cfg(loom)]
    let weak = faults::heavy_dropped();
    #[cfg(not(loom))]
    let weak = false;
    if !weak {
        fence(Ordering::SeqCst);
    }
    #[cfg(not(any(loom, miri)))]
    return imp::heavy();
    #[cfg(any(loom, miri))]
    Heavy::Reached
}

/// Fault injection for loom models: drop the [`light`] or the [`heavy`] fence on the
/// calling thread (loom runs a model's threads on the thread that calls
/// `loom::model`), so that a negative control runs the real code with one fence
/// missing rather than a copy of it.
#[cfg(loom)]
pub mod faults {
    use std::cell::Cell;

    std::thread_local! {
        static LIGHT_DROPPED: Cell<bool> = const { Cell::new(false) };
        static HEAVY_DROPPED: Cell<bool> = const { Cell::new(false) };
    }

    /// Drops the [`light`](super::light) fence (`true`) or restores it (`false`).
    pub fn drop_light(dropped: bool) {
        LIGHT_DROPPED.with(|d| d.set(dropped));
    }

    /// Drops the [`heavy`](super::heavy) fence (`true`) or restores it (`false`).
    pub fn drop_heavy(dropped: bool) {
        HEAVY_DROPPED.with(|d| d.set(dropped));
    }

    pub(super) fn light_dropped() -> bool {
        LIGHT_DROPPED.with(Cell::get)
    }

    pub(super) fn heavy_dropped() -> bool {
        HEAVY_DROPPED.with(Cell::get)
    }

    /// Runs `model` (a loom model run with a fault switched on, in this crate or
    /// another) and returns the message it panicked with.
    ///
    /// # Panics
    ///
    /// If the model does not panic: loom found nothing wrong with the fault in place,
    /// so the model cannot see what the fault breaks.
    pub fn failure_of(model: impl FnOnce() + std::panic::UnwindSafe) -> String {
        match std::panic::catch_unwind(model) {
            Ok(()) => panic!("loom found nothing wrong with the fault in place"),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default(),
        }
    }
}

/// Whether this process's [`light`] fences are compiler fences now (it registered).
#[must_use]
pub fn is_light() -> bool {
    #[cfg(not(any(loom, miri)))]
    return imp::is_light();
    #[cfg(any(loom, miri))]
    false
}

#[cfg(not(any(loom, miri)))]
mod imp {
    use rustix::thread::{MembarrierCommand, MembarrierQuery, membarrier};

    use super::{ENV, Heavy};
    use crate::atomic::{AtomicU32, Ordering, fence};

    /// Registered: `light` is a compiler fence. Zero, so that `light_then_load` tests
    /// it together with the value loaded.
    const LIGHT: u32 = 0;
    /// Not tried yet (also in a forked child).
    const UNKNOWN: u32 = 1;
    /// Cannot register: `light` is a `SeqCst` fence.
    const SYMMETRIC: u32 = 2;

    /// This process's registration (32 bits wide, so that `light_then_load` ORs it into
    /// the loaded value in one instruction).
    static STATE: AtomicU32 = AtomicU32::new(UNKNOWN);

    #[inline(always)]
    pub(super) fn light_then_load(load: impl Fn() -> u32) -> u32 {
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        let value = load();
        // Acquire: the registration (a syscall that returned before the Release store of
        // LIGHT) is complete before this thread relies on it. SYNC(registered).
        if value | STATE.load(Ordering::Acquire) == 0 {
            return 0;
        }
        // Loaded again rather than kept: the fast path above then ORs into the register
        // it loaded, one instruction fewer per notify (callgrind: 61 against 63 per pair).
        if STATE.load(Ordering::Acquire) == LIGHT {
            return value;
        }
        light_slow();
        load()
    }

    #[cold]
    #[inline(never)]
    fn light_slow() {
        fence(Ordering::SeqCst);
        // Relaxed: only decides whether to try; racing registrations are idempotent.
        if STATE.load(Ordering::Relaxed) == UNKNOWN {
            register();
        }
    }

    /// Registers this process, once; the state says how it went.
    #[cold]
    fn register() {
        static ATFORK: std::sync::Once = std::sync::Once::new();
        ATFORK.call_once(|| {
            // SAFETY: `forget_in_child` is async-signal-safe (one atomic store), as a
            // handler run in the child of a fork must be.
            unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
        });
        let refused = std::env::var_os(ENV).is_some_and(|v| v == "off");
        let state = if !refused && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok() {
            LIGHT
        } else {
            SYMMETRIC
        };
        // SYNC(registered): Release; pairs with the Acquire load in `light_then_load`.
        STATE.store(state, Ordering::Release);
    }

    /// The `pthread_atfork` child handler: the child's address space is not registered.
    extern "C" fn forget_in_child() {
        // Relaxed: the child has one thread now.
        STATE.store(UNKNOWN, Ordering::Relaxed);
    }

    #[inline]
    pub(super) fn heavy() -> Heavy {
        if membarrier(MembarrierCommand::GlobalExpedited).is_ok() || !offered() {
            Heavy::Reached
        } else {
            Heavy::Unreached
        }
    }

    /// Whether the kernel may have registered a process for global expedited
    /// membarriers: true unless it answers the query without that command. A query that
    /// fails says nothing (a seccomp filter refuses every command of the call, the query
    /// included, while other processes may be registered), so it counts as offered.
    /// `rustix::thread::membarrier_query` reads such a failure as "nothing offered",
    /// hence the raw call.
    #[cold]
    fn offered() -> bool {
        // SAFETY: `membarrier(MEMBARRIER_CMD_QUERY, 0, 0)` takes no pointer.
        let mask = unsafe { libc::syscall(libc::SYS_membarrier, 0, 0, 0) };
        mask < 0 || mask as u32 & MembarrierQuery::GLOBAL_EXPEDITED.bits() != 0
    }

    pub(super) fn is_light() -> bool {
        // Relaxed: a snapshot.
        STATE.load(Ordering::Relaxed) == LIGHT
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// This kernel offers global expedited membarriers (4.16+): the first light fence
    /// registers the process, and a heavy fence reaches it.
    #[test]
    #[cfg_attr(miri, ignore = "membarrier is a syscall, which miri does not run")]
    fn registers_and_reaches() {
        let offered = rustix::thread::membarrier_query()
            .contains(rustix::thread::MembarrierQuery::GLOBAL_EXPEDITED);
        light();
        assert_eq!(is_light(), offered);
        assert_eq!(heavy(), Heavy::Reached);
    }
}
