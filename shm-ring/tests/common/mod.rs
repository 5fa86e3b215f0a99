//! Helpers shared by the process tests of this crate. Each test binary uses some.
#![allow(dead_code)]

/// Writes the segment header's checksum (offset 144) over its first 144 bytes as they
/// are, the state word (offset 16) taken as 0: as if its creator had written them.
pub fn reseal(file: &std::fs::File) {
    use std::os::unix::fs::FileExt;

    let mut header = [0u8; 144];
    file.read_exact_at(&mut header, 0).unwrap();
    header[16..20].fill(0);
    let sum = shm_alloc::hash::fnv1a(shm_alloc::hash::FNV_OFFSET, &header);
    file.write_all_at(&sum.to_ne_bytes(), 144).unwrap();
}

/// Attaches with `attach`, retrying while a role is taken: a child that another test's
/// thread forks holds this process's lock descriptions until it execs. Panics after 5 s.
pub fn reattach<H>(
    mut attach: impl FnMut() -> Result<H, shm_ring::Error>,
) -> Result<H, shm_ring::Error> {
    shm_testkit::wait_for(
        std::time::Duration::from_secs(5),
        "the role, free again",
        || match attach() {
            Err(shm_ring::Error::Segment(shm_alloc::Error::RoleTaken { .. })) => None,
            other => Some(other),
        },
    )
}
