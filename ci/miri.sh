#!/usr/bin/env bash
# Miri runs the tests that need no mmap and no syscall (the rest are marked
# `#[cfg_attr(miri, ignore)]`): layout, parsing, and the algorithms over heap memory.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/common.sh

rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || true
rustup component add --toolchain nightly miri rust-src
cargo +nightly miri setup

export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
# Every test that exists natively must run under miri or be ignored there by name
# (`cfg_attr(miri, ignore = ...)`, visible in the source): MIN_SEEN counts them.
MIN_SEEN=$(count_tests -p shm-sync -p shm-alloc -p shm-ring --lib --) \
    run_tests "miri" cargo +nightly miri test --locked --target-dir target/miri \
    -p shm-sync -p shm-alloc -p shm-ring --lib
# The SPSC ring over a heap region against its model (same code as the mapped ring).
MIN_SEEN=$(count_tests -p shm-ring --test spsc_model --) \
    run_tests "miri-ring-model" cargo +nightly miri test --locked --target-dir target/miri \
    -p shm-ring --test spsc_model
# The conformance suite's heap rings: the same checks as in segments, over the heap
# region (segments need mmap and files, which miri does not run).
MIN_SEEN=$(count_tests -p shm-ring --test conformance -- _heap::) \
    run_tests "miri-conformance" cargo +nightly miri test --locked --target-dir target/miri \
    -p shm-ring --test conformance -- _heap::
