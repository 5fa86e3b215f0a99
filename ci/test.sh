#!/usr/bin/env bash
# The test suite: unit, integration (real processes, real mapped files, real futexes)
# and doc tests of every crate in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/common.sh

run_tests "tests" cargo test --workspace --locked

# Every example runs to its end with its small default (they check what they print).
for example in examples/*.rs; do
    name=$(basename "$example" .rs)
    echo "== example: $name"
    cargo run --locked --quiet --example "$name"
done
