#!/usr/bin/env bash
# Formatting, clippy with warnings as errors on every target and feature, and rustdoc
# warnings.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== rustfmt"
cargo fmt --all -- --check
# Clippy once, with every feature: the features only add code (`shm bench`'s optional
# transports, iceoryx2 and gRPC), so this lints every target of the default build too,
# and the default build itself is compiled by the tests. The features' tests run, so
# that they never rot.
echo "== clippy and tests with --all-features (iceoryx2, grpc)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
cargo test --locked --all-features --test bench_cli
echo "== rustdoc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
echo "== lint: ok"
