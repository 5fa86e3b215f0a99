#!/usr/bin/env bash
# Formatting, clippy with warnings as errors on every target and feature, and rustdoc
# warnings.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/common.sh

rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== rustfmt"
cargo fmt --all -- --check
# Clippy once, with every feature: the features only add code (`shm bench`'s optional
# transports, iceoryx2, gRPC and tokio, and the Zenoh bridge), so this lints every target
# of the default build too,
# and the default build itself is compiled by the tests. The features' tests run, so
# that they never rot.
echo "== clippy and tests with --all-features (iceoryx2, grpc, tokio, zenoh)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
cargo test --locked --all-features --lib --test bench_cli
# The bridge tests one at a time: each runs two bridge processes (one test crosses a
# million messages); side by side on two cores they would only wait for each other.
# Every test of the file must run: a feature left out compiles them all away.
MIN_PASSED=$(grep -c '^#\[test\]' tests/bridge.rs) \
    run_tests "bridge" cargo test --locked --all-features --test bridge -- --test-threads 1
echo "== rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --features zenoh
echo "== lint: ok"
