#!/usr/bin/env bash
# The loom models of the concurrent protocols (event count, SPSC ring, MPMC ring, the
# participant table). They live in the libraries under `cfg(all(test, loom))`.
#
# LOOM_MAX_PREEMPTIONS=3 explores every interleaving with up to three preemptions: the
# lost wake-up that the event count's fences prevent needs two, and three still runs in
# seconds. Release mode: loom runs each model thousands of times.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/common.sh

export RUSTFLAGS="--cfg loom -C debug-assertions"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export LOOM_MAX_BRANCHES="${LOOM_MAX_BRANCHES:-10000}"
# Every loom model in the sources must run: a cfg mistake that compiles them out leaves
# only the few plain tests that also build under loom, fewer than the models.
MIN_PASSED=$(grep -rho 'loom::model(' shm-sync/src shm-alloc/src shm-ring/src | wc -l)
export MIN_PASSED
run_tests "loom" cargo test --locked --release --lib --target-dir target/loom -p shm-sync -p shm-alloc -p shm-ring
