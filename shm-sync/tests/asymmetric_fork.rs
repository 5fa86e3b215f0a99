//! A process registered for global expedited membarriers forks: the child's address
//! space is not registered (registration is per address space), so its light fences
//! must be real until it registers again at its first one. The only test of this
//! binary, so that no other test thread runs while it forks.

use rustix::thread::{MembarrierQuery, membarrier_query};
use shm_sync::asymmetric::{is_light, light};

/// Exit codes of the forked child.
const FORGOT: i32 = 0;
const STILL_LIGHT: i32 = 2;
const NOT_AGAIN: i32 = 3;

#[test]
fn a_forked_child_forgets_the_registration_and_registers_again() {
    let offered = membarrier_query().contains(MembarrierQuery::GLOBAL_EXPEDITED);
    light();
    assert_eq!(
        is_light(),
        offered,
        "the parent registered at its first light fence"
    );
    // SAFETY: the child only loads atomics, makes the registration's system calls and
    // `_exit`s; this binary's other threads (the harness's main thread, joining this
    // one) hold no lock the child needs.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = if is_light() {
            STILL_LIGHT
        } else {
            light();
            if is_light() == offered {
                FORGOT
            } else {
                NOT_AGAIN
            }
        };
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `pid` is this process's child; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status),
        "the child did not exit: {status:#x}"
    );
    match libc::WEXITSTATUS(status) {
        FORGOT => {}
        STILL_LIGHT => panic!("the forked child believed itself registered"),
        NOT_AGAIN => panic!("the forked child did not register again"),
        other => panic!("the forked child exited with {other}"),
    }
    assert_eq!(is_light(), offered, "the parent is still registered");
}
